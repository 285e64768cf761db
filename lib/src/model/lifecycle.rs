//! What the lifecycle calls share (`core.md` §3.11, §10): the per-qube operation lock, the
//! live libvirt state of a qube, the started mark, and stop processing (§10.3), which `Kill`
//! and `Shutdown+wait` run when they see the qube stop and the event helper runs for qubes that
//! stop by themselves ([`on_domain_event`]).

use std::fs::File;

use crate::error::{ApiError, ExcType};
use crate::events::Event;
use crate::model::context::Ctx;
use crate::model::power_state::vm_uuid;
use crate::model::props::{defaults, value::Val};
use crate::model::volumes;
use crate::runtime::{started_mark, DomState, DomainEventKind, DomainRuntime, HvError};
use crate::store::DomId;
use crate::store::WriteTxn;
use crate::wire::python::repr;

/// The per-qube operation lock (`<run_dir>/qubes-admin/qube-<uuid>.lock`, `flock`): two
/// lifecycle calls on one qube run one after the other; calls on different qubes do not wait
/// for each other. Released when the guard is dropped (or the process exits).
pub struct QubeLock {
    _file: File,
}

pub fn lock_qube(ctx: &Ctx<'_>, id: DomId) -> Result<QubeLock, ApiError> {
    let uuid = vm_uuid(ctx, id)?;
    let dir = crate::events::log_dir(&ctx.config.run_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ApiError::qubes(format!("{}: {e}", dir.display())))?;
    let path = dir.join(format!("qube-{uuid}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ApiError::qubes(format!("{}: {e}", path.display())))?;
    file.lock()
        .map_err(|e| ApiError::qubes(format!("cannot lock {}: {e}", path.display())))?;
    Ok(QubeLock { _file: file })
}

/// Marks qube `id` started (its Start succeeded): see [`crate::runtime::started_mark`].
pub fn mark_started(ctx: &Ctx<'_>, id: DomId) -> Result<(), ApiError> {
    let path = started_mark(&ctx.config.run_dir, &vm_uuid(ctx, id)?);
    std::fs::write(&path, b"").map_err(|e| ApiError::qubes(format!("{}: {e}", path.display())))
}

/// What a lifecycle change that libvirt reported means for qube `id`, decided under its lock,
/// so that a call acting on the qube at the same moment (Kill, Shutdown+wait, Start, Pause)
/// finishes first and nothing is done twice. Only a qube marked started is concerned:
/// * stopped (and still not running): stop processing, with its events and, for an
///   auto-cleanup disposable, its removal;
/// * paused (and still paused): `domain-paused`.
pub fn on_domain_event(
    ctx: &mut Ctx<'_>,
    id: DomId,
    kind: DomainEventKind,
) -> Result<(), ApiError> {
    let _lock = lock_qube(ctx, id)?;
    if !started_mark(&ctx.config.run_dir, &vm_uuid(ctx, id)?).exists() {
        return Ok(());
    }
    let dom = live_domain(ctx, id)?;
    match kind {
        DomainEventKind::Stopped if !is_active(dom.as_ref()) => stop_processing(ctx, id),
        DomainEventKind::Suspended if is_paused(dom.as_ref()) => {
            let name = ctx.doc().name(id).to_string();
            ctx.emit(&name, "domain-paused", &[]);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The qube's libvirt domain as of now (`None`: not defined).
pub fn live_domain(ctx: &Ctx<'_>, id: DomId) -> Result<Option<DomainRuntime>, ApiError> {
    let uuid = vm_uuid(ctx, id)?;
    Ok(ctx.hypervisor().domain(&uuid)?)
}

/// The qubes (in qubes.xml order) that run, per the call's runtime listing, and use `id`
/// through `prop` (`netvm`, `guivm`, `audiovm`).
pub fn running_users(ctx: &Ctx<'_>, id: DomId, prop: &str) -> Result<Vec<DomId>, ApiError> {
    let rt = ctx.runtime()?;
    let doc = ctx.doc();
    Ok(doc
        .domains()
        .into_iter()
        .filter(|&other| {
            other != id
                && defaults::vm_prop_ref(ctx, other, prop, 0) == Some(id)
                && doc
                    .uuid(other)
                    .and_then(|u| rt.by_uuid(u))
                    .is_some_and(|d| d.active)
        })
        .collect())
}

/// `is_running()`: libvirt says active (also when paused or halting).
pub fn is_active(dom: Option<&DomainRuntime>) -> bool {
    dom.is_some_and(|d| d.active)
}

/// `is_paused()`: active and libvirt state PAUSED.
pub fn is_paused(dom: Option<&DomainRuntime>) -> bool {
    dom.is_some_and(|d| d.active && d.state == DomState::Paused)
}

/// `QubesVMNotStartedError "Domain is powered off: '<name>'"`.
pub fn powered_off(name: &str) -> ApiError {
    ApiError::new(
        ExcType::QubesVMNotStartedError,
        format!("Domain is powered off: {}", repr(name)),
    )
}

/// `QubesVMNotRunningError "Domain not running (either powered off or paused): '<name>'"`.
pub fn not_running(name: &str) -> ApiError {
    ApiError::new(
        ExcType::QubesVMNotRunningError,
        format!(
            "Domain not running (either powered off or paused): {}",
            repr(name)
        ),
    )
}

/// A libvirt refusal as the reference reports it: for Kill (`not_running`) the qube stopped
/// between the check and the destroy; otherwise libvirt's message.
pub fn op_error(e: HvError, name: &str, not_running: bool) -> ApiError {
    match e {
        HvError::Failed(_) if not_running => powered_off(name),
        HvError::Failed(m) => ApiError::new(ExcType::QubesVMError, m),
        other => other.into(),
    }
}

/// Stop processing (§10.3) for a qube libvirt reports stopped: its volumes stop (commit,
/// discard; errors only reported, as the reference logs them), the running-state marks go, and
/// the events follow in the order a subscriber sees them: the computed properties that reset
/// (`xid`, `stubdom_xid`, `start_time`), `domain-stopped`, `domain-shutdown`. A disposable
/// with `auto_cleanup` is removed instead of reaching `domain-shutdown` (its subscribers are
/// gone by then): `domain-pre-delete`, `domain-delete`, in a qubes.xml transaction of its own
/// once the call's events are logged.
pub fn stop_processing(ctx: &mut Ctx<'_>, id: DomId) -> Result<(), ApiError> {
    let pools = volumes::pools(ctx);
    let vols = volumes::volumes_of(ctx, &pools, id)?;
    volumes::stop_storage(&ctx.config.run_dir, &pools, &vols);
    let _ = std::fs::remove_file(started_mark(&ctx.config.run_dir, &vm_uuid(ctx, id)?));
    let name = ctx.doc().name(id).to_string();
    for prop in ["xid", "stubdom_xid", "start_time"] {
        ctx.emit(&name, format!("property-reset:{prop}"), &[("name", prop)]);
    }
    ctx.emit(&name, "domain-stopped", &[]);
    let auto_cleanup = ctx.doc().class(id) == "DispVM"
        && matches!(
            defaults::vm_prop(ctx, id, "auto_cleanup", 0),
            Ok(Val::Bool(true))
        );
    if !auto_cleanup {
        ctx.emit(&name, "domain-shutdown", &[]);
        return Ok(());
    }
    let config = ctx.config.clone();
    let uuid = vm_uuid(ctx, id)?;
    let dir = volumes::vm_dir(ctx, id);
    // Its libvirt definition goes with it (every disposable has a new name and UUID: none may
    // pile up in libvirt). A failure is reported, as the volumes' are.
    if let Err(e) = ctx.hypervisor().op(&uuid, crate::runtime::Op::Undefine) {
        eprintln!("qubes-admin: undefining disposable {uuid}: {e}");
    }
    ctx.after_commit(move || {
        if let Err(e) = remove_disposable(&config, &uuid, pools, vols, &dir) {
            eprintln!("qubes-admin: removing disposable {uuid}: {e}");
        }
    });
    Ok(())
}

/// The auto-cleanup of a stopped disposable: out of qubes.xml (with its events), then off the
/// disk. Nothing happens if it is gone already.
fn remove_disposable(
    config: &crate::Config,
    uuid: &str,
    pools: Vec<crate::storage::Pool>,
    vols: Vec<crate::storage::VolumeConfig>,
    dir: &std::path::Path,
) -> Result<(), ApiError> {
    let index = crate::store::index_path(&config.run_dir);
    let mut txn = WriteTxn::begin_indexed(&config.xml_path, config.lock_timeout, Some(&index))?;
    let Some(id) = txn.doc().domain_by_uuid(uuid) else {
        return Ok(());
    };
    let name = txn.doc().name(id).to_string();
    txn.doc_mut().remove_domain(id);
    let events = [
        Event::new(
            "",
            "domain-pre-delete",
            vec![("vm".to_string(), name.clone())],
        ),
        Event::new("", "domain-delete", vec![("vm".to_string(), name)]),
    ];
    let logged = txn.commit_then(|| crate::events::append(&config.run_dir, &events))?;
    drop(txn);
    volumes::remove_from_disk(&pools, &vols, Some(dir));
    logged?;
    Ok(())
}

/// The domain description of qube `id` from its properties and volumes: memory, maxmem (0:
/// the memory), vcpus, virt_mode, the dom0-provided kernel (if its files exist; Xen's command
/// line starts with the kernel's `default-kernelopts-common.txt`, or the reference's default
/// options), the volumes' block devices (the kernel's `modules.img` read-only, if present),
/// with a netvm the interface, the HVM options, and the console log in the qube's directory
/// `dir` (whoever runs the emulator can write there: it holds the images).
pub fn domain_spec(
    ctx: &Ctx<'_>,
    id: DomId,
    dir: &std::path::Path,
    pools: &[crate::storage::Pool],
    vols: &[crate::storage::VolumeConfig],
    devices: RequiredDevices,
) -> Result<crate::runtime::domain_xml::DomainSpec, ApiError> {
    use crate::runtime::domain_xml::{Disk, DomainSpec, HvmOptions, Kernel, Net, VirtMode};
    let int = |p: &str| defaults::vm_u64(ctx, id, p).unwrap_or(0);
    let text = |vm: DomId, p: &str| defaults::vm_text(ctx, vm, p);
    let feature = |f: &str| defaults::feature_with_template(ctx, id, f);
    let memory_mib = int("memory");
    let maxmem = int("maxmem");
    let mut kernel = None;
    let mut disks = Vec::new();
    for v in vols {
        let pool = volumes::find_pool(pools, &v.pool)?;
        if pool.driver_name == "linux-kernel" {
            let Some(dir) = pool.driver().dir_path().filter(|_| !v.vid.is_empty()) else {
                continue;
            };
            let kdir = dir.join(&v.vid);
            let vmlinuz = kdir.join("vmlinuz");
            if vmlinuz.exists() {
                let initrd = kdir.join("initramfs");
                let common = if feature("no-default-kernelopts").is_some_and(|v| !v.is_empty()) {
                    String::new()
                } else {
                    match std::fs::read_to_string(kdir.join("default-kernelopts-common.txt")) {
                        Ok(t) => format!("{} ", t.trim()),
                        Err(_) => DEFAULT_KERNELOPTS_COMMON.to_string(),
                    }
                };
                kernel = Some(Kernel {
                    vmlinuz: vmlinuz.to_string_lossy().into_owned(),
                    initrd: initrd
                        .exists()
                        .then(|| initrd.to_string_lossy().into_owned()),
                    cmdline: text(id, "kernelopts").unwrap_or_default(),
                    common,
                });
            }
            let modules = kdir.join("modules.img");
            if modules.exists() {
                disks.push(Disk {
                    name: v.name.clone(),
                    path: modules.to_string_lossy().into_owned(),
                    readonly: true,
                    script: Some("block".to_string()),
                });
            }
            continue;
        }
        let path = pool.driver().path(v)?;
        disks.push(Disk {
            name: v.name.clone(),
            // An image file needs Xen's `block` script (a loop device); a device does not.
            script: (!path.starts_with("/dev/")).then(|| "block".to_string()),
            path,
            readonly: !v.rw,
        });
    }
    let net = defaults::netvm_of(ctx, id, 0).map(|netvm| Net {
        mac: text(id, "mac").unwrap_or_default(),
        ip: text(id, "ip"),
        ip6: text(id, "ip6"),
        backend: ctx.doc().name(netvm).to_string(),
        gateway: text(netvm, "gateway").unwrap_or_default(),
        dns: crate::model::qubesdb::dns(ctx, id),
        netmask: text(id, "visible_netmask").unwrap_or_default(),
    });
    let hvm = HvmOptions {
        linux_stubdom: feature("linux-stubdom").is_none_or(|v| !v.is_empty()),
        stubdom_mem_mib: Some(int("stubdom_mem")).filter(|m| *m > 0),
        video_model: feature("video-model").unwrap_or_else(|| "vga".to_string()),
        timezone: feature("timezone").unwrap_or_else(|| "localtime".to_string()),
        uefi: feature("uefi").is_some_and(|v| !v.is_empty()),
    };
    Ok(DomainSpec {
        name: ctx.doc().name(id).to_string(),
        uuid: vm_uuid(ctx, id)?,
        memory_mib,
        maxmem_mib: if maxmem == 0 { memory_mib } else { maxmem },
        vcpus: int("vcpus").max(1),
        kernel,
        disks,
        net,
        virt_mode: VirtMode::parse(&text(id, "virt_mode").unwrap_or_default()),
        hvm,
        console_log: Some(dir.join("console.log").to_string_lossy().into_owned()),
        pci: devices.pci,
        block: devices.block,
        e820_host: feature("pci-e820-host").is_none_or(|v| !v.is_empty()),
    })
}

/// What a user override of the Xen domain XML gets as `vm` (`runtime::xen_template`): every
/// property that has a value, the qube's features (and, for `check_with_template`, those along
/// its template chain) and its tags.
pub fn template_vm(
    ctx: &Ctx<'_>,
    id: DomId,
) -> Result<crate::runtime::xen_template::TemplateVm, ApiError> {
    use crate::model::props::{table_of, Holder};
    use crate::runtime::xen_template::{TemplateVm, TplVal};
    let h = Holder::Vm(id);
    let mut properties = Vec::new();
    for def in table_of(ctx, h)? {
        // A property that cannot be read now (a live one libvirt does not answer) is left
        // out: as in the reference, only a template that uses it fails.
        let Ok(v) = defaults::get(ctx, h, def) else {
            continue;
        };
        properties.push((
            def.name.to_string(),
            match v {
                Val::None => TplVal::None,
                Val::Bool(b) => TplVal::Bool(b),
                Val::Int(i) => TplVal::Int(i),
                Val::Text(t) => TplVal::Text(t),
                Val::Vm(n) => TplVal::Vm(n),
            },
        ));
    }
    let data = ctx.doc().data(id)?;
    let features: std::collections::BTreeMap<String, String> = data
        .features()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut with_template = std::collections::BTreeMap::new();
    let mut vm = Some(id);
    for _ in 0..32 {
        let Some(at) = vm else { break };
        for (k, _) in ctx.doc().data(at)?.features() {
            if !with_template.contains_key(k) {
                if let Some(v) = defaults::feature_with_template(ctx, id, k) {
                    with_template.insert(k.to_string(), v);
                }
            }
        }
        vm = defaults::template_of(ctx, at, 0);
    }
    Ok(TemplateVm {
        properties,
        features,
        features_with_template: with_template,
        tags: data.tags().into_iter().map(str::to_string).collect(),
    })
}

/// The devices a qube's `required` assignments give it (storage-devices-backup.md §D.5, §D.8),
/// resolved before anything of the start happens: PCI devices of dom0 (the port, a PCI path, is
/// looked up in `sysfs`), block devices of a running backend that lists the port in its
/// QubesDB. A required device that does not resolve refuses the start with the reference's
/// message (`Pci device dom0+00_14.0 not available`), and so does a class this implementation
/// cannot attach (usb, mic): starting without a device the user marked required would be
/// silent.
pub fn required_devices(
    ctx: &Ctx<'_>,
    id: DomId,
    sysfs: &std::path::Path,
) -> Result<RequiredDevices, ApiError> {
    use crate::runtime::domain_xml::{BlockDevice, PciDevice};
    let mut out = RequiredDevices::default();
    let (required, later): (Vec<_>, Vec<_>) = assignments(ctx, id)?
        .into_iter()
        .partition(|a| a.mode == "required");
    out.unattached = later
        .iter()
        .map(|a| format!("{} device {}+{} ({})", a.class, a.backend, a.port, a.mode))
        .collect();
    for a in required {
        let mut class = a.class.clone();
        if let Some(first) = class.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        let unavailable = || {
            ApiError::qubes(format!(
                "{class} device {}+{} not available",
                a.backend, a.port
            ))
        };
        let on = |name: &str| {
            a.option(name)
                .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "yes" | "true" | "1"))
        };
        match a.class.as_str() {
            "pci" => {
                if a.backend != "dom0" {
                    return Err(unavailable());
                }
                let mut dev = PciDevice::from_port(&a.port, sysfs).ok_or_else(unavailable)?;
                dev.permissive = a.option("permissive").is_some_and(|v| !v.is_empty());
                dev.no_strict_reset = a.option("no-strict-reset").is_some_and(|v| !v.is_empty());
                out.pci.push(dev);
            }
            "block" => {
                let mode = block_mode(ctx, &a.backend, &a.port)?.ok_or_else(unavailable)?;
                out.block.push(BlockDevice {
                    backend: a.backend.clone(),
                    node: format!("/dev/{}", a.port.replace('_', "/")),
                    frontend: a.option("frontend-dev").map(str::to_string),
                    readonly: on("read-only") || mode == "r",
                    devtype: a.option("devtype").unwrap_or("disk").to_string(),
                });
            }
            _ => {
                return Err(ApiError::qubes(format!(
                    "{class} device {}+{} is required, but qubes-admin-rs cannot attach {} \
                     devices",
                    a.backend, a.port, a.class
                )))
            }
        }
    }
    Ok(out)
}

/// What [`required_devices`] resolved.
#[derive(Debug, Default)]
pub struct RequiredDevices {
    pub pci: Vec<crate::runtime::domain_xml::PciDevice>,
    pub block: Vec<crate::runtime::domain_xml::BlockDevice>,
    /// The assignments the reference attaches after the start (`auto-attach`, `ask-to-attach`;
    /// §D.8) and this implementation does not (`block device dom0+sda (auto-attach)`): the
    /// Start reports them ([`report_unattached`]) rather than leave the devices missing
    /// without a word.
    pub unattached: Vec<String>,
}

impl RequiredDevices {
    pub fn is_empty(&self) -> bool {
        self.pci.is_empty() && self.block.is_empty()
    }
}

/// A device assignment as qubes.xml stores it.
struct Assignment {
    class: String,
    /// `required`, `auto-attach` or `ask-to-attach` (a missing mode is `required`).
    mode: String,
    backend: String,
    port: String,
    options: Vec<(String, String)>,
}

impl Assignment {
    fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Says on the call's standard error (the journal) which assignments of qube `name` stay
/// unattached ([`RequiredDevices::unattached`]).
pub fn report_unattached(name: &str, unattached: &[String]) {
    for a in unattached {
        eprintln!(
            "qubes-admin: {name}: {a} not attached: qubes-admin-rs attaches only required \
             devices at start"
        );
    }
}

/// Every assignment of qube `id`, every class (`<devices class="pci"><device
/// backend-domain="dom0" id="00_14.0" mode="required" identity="…"><option
/// name="no-strict-reset">True</option>`).
fn assignments(ctx: &Ctx<'_>, id: DomId) -> Result<Vec<Assignment>, ApiError> {
    use crate::store::xml::{attr, decode, Lexer, TokKind};
    if !ctx.doc().may_contain(id, b"<devices") {
        return Ok(Vec::new());
    }
    let data = ctx.doc().data(id)?;
    let mut out = Vec::new();
    for (_, raw) in data
        .raw_elements()
        .into_iter()
        .filter(|(n, _)| *n == "devices")
    {
        let mut lx = Lexer::new(raw, 0);
        let mut class = String::new();
        let mut current: Option<Assignment> = None;
        // The option whose text is being read.
        let mut option: Option<String> = None;
        while let Ok(Some(tok)) = lx.next_tok() {
            match tok.kind {
                TokKind::Start { name, attrs, empty } => {
                    let get = |n: &str| attr(raw, attrs, n);
                    match name.of(raw) {
                        b"devices" => class = get("class").unwrap_or_default(),
                        b"device" => {
                            current = None;
                            let a = Assignment {
                                class: class.clone(),
                                mode: get("mode").unwrap_or_else(|| "required".to_string()),
                                backend: get("backend-domain").unwrap_or_default(),
                                port: get("id").unwrap_or_default(),
                                options: Vec::new(),
                            };
                            if empty {
                                out.push(a);
                            } else {
                                current = Some(a);
                            }
                        }
                        b"option" if current.is_some() => {
                            let name = get("name").unwrap_or_default();
                            if empty {
                                if let Some(a) = current.as_mut() {
                                    a.options.push((name, String::new()));
                                }
                            } else {
                                option = Some(name);
                            }
                        }
                        _ => {}
                    }
                }
                TokKind::Text => {
                    if let (Some(name), Some(a)) = (option.take(), current.as_mut()) {
                        a.options.push((name, decode(tok.span.of(raw))));
                    }
                }
                TokKind::End { name } => match name.of(raw) {
                    b"device" => out.extend(current.take()),
                    b"option" => {
                        if let (Some(name), Some(a)) = (option.take(), current.as_mut()) {
                            a.options.push((name, String::new()));
                        }
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The mode (`w`, `r`) a block device `port` has in its backend's QubesDB
/// (`/qubes-block-devices/<port>/`), `None` if the backend does not run or does not list it.
fn block_mode(ctx: &Ctx<'_>, backend: &str, port: &str) -> Result<Option<String>, ApiError> {
    let valid = (1..=12).contains(&port.len())
        && port
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    let Some(bid) = ctx.doc().domain_by_name(backend).filter(|_| valid) else {
        return Ok(None);
    };
    if !ctx.doc().is_admin(bid) && !is_active(live_domain(ctx, bid)?.as_ref()) {
        return Ok(None);
    }
    let mut db = ctx.dom0_services().qubesdb(backend)?;
    let base = format!("/qubes-block-devices/{port}/");
    if db.list(&base)?.is_empty() {
        return Ok(None);
    }
    let mode = db.read(&format!("{base}mode"))?;
    Ok(Some(match mode.as_deref() {
        Some(b"r") => "r".to_string(),
        _ => "w".to_string(),
    }))
}

/// The kernel options every Xen guest gets before its `kernelopts`, unless its kernel directory
/// says otherwise (`default-kernelopts-common.txt`).
pub const DEFAULT_KERNELOPTS_COMMON: &str = "root=/dev/mapper/dmroot ro nomodeset console=hvc0 rd_NO_PLYMOUTH rd.plymouth.disable=1 clocksource=tsc xen_scrub_pages=0 ";

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::model::context::{Call, DocRef};
    use crate::runtime::domain_xml::PciDevice;
    use crate::runtime::{HostInfo, Offline};
    use crate::store::Document;

    /// `f` on a Start of sys-net in the `gen10` fixture with `devices` spliced in after its
    /// volume config.
    fn on_sys_net<T>(devices: &str, f: impl FnOnce(&Ctx<'_>, DomId) -> T) -> T {
        let xml = include_str!("../../../tests/fixtures/gen10/qubes.xml");
        let at = xml.find("appvms/sys-net/volatile").unwrap();
        let end = at + xml[at..].find("</volume-config>\n").unwrap() + 16;
        let xml = format!("{}      {devices}\n{}", &xml[..end], &xml[end..]);
        let doc = Document::parse(xml.into_bytes()).unwrap();
        let config = crate::Config::default();
        let hv = Offline {
            host: HostInfo {
                memory_mib: 4096,
                cpus: 2,
            },
        };
        let id = doc.domain_by_name("sys-net").unwrap();
        let call = Call {
            method: "admin.vm.Start",
            src: doc.domain_by_name("dom0").unwrap(),
            dest: id,
            arg: String::new(),
            payload: Vec::new(),
        };
        let ctx = Ctx::new(&config, call, DocRef::Read(&doc), &hv);
        f(&ctx, id)
    }

    /// sys-net's required PCI devices, with `devices` as its assignments.
    fn pci_of(devices: &str) -> Result<Vec<PciDevice>, ApiError> {
        on_sys_net(devices, pci_in)
    }

    fn pci_in(ctx: &Ctx<'_>, id: DomId) -> Result<Vec<PciDevice>, ApiError> {
        let sys = tempfile::tempdir().unwrap();
        for d in [
            "pci0000:00/0000:00:1c.0/0000:03:00.0",
            "pci0000:00/0000:00:19.0",
            "pci0000:00/0000:00:14.0",
            "pci0001:3a/0001:3a:00.3",
        ] {
            std::fs::create_dir_all(sys.path().join("devices").join(d)).unwrap();
        }
        required_devices(ctx, id, sys.path()).map(|d| d.pci)
    }

    /// A user override sees the qube as the reference's `vm`: its properties with their
    /// defaults (numbers, booleans, qubes by name, None), its own features and those along the
    /// template chain, its tags.
    #[test]
    fn the_vm_a_template_override_sees() {
        use crate::runtime::xen_template::{find_override, render};
        let d = tempfile::tempdir().unwrap();
        let user = d.path().join("libvirt/xen-user.xml");
        std::fs::create_dir_all(user.parent().unwrap()).unwrap();
        std::fs::write(
            &user,
            "{% extends 'libvirt/xen.xml' %}{% block on %}{{ vm.name }} {{ vm.netvm }} \
             {{ vm.template }} {{ vm.template.name }} {{ vm.memory * 2 }} {{ vm.provides_network }} \
             {{ vm.features.get('service.clocksync') }} {{ vm.features.check_with_template('os') }} \
             {{ vm.features.get('os', 'own: none') }} {{ vm.tags|join(',') }} {{ vm.label }} \
             {{ vm.virt_mode }}\n{% endblock %}",
        )
        .unwrap();
        let dirs = vec![d.path().to_path_buf()];
        let (selected, file) = find_override(&dirs, "sys-net").unwrap();
        assert_eq!((selected.as_str(), file), ("libvirt/xen-user.xml", user));
        let blocks = crate::runtime::domain_xml::XenBlocks {
            basic: String::new(),
            cpu: String::new(),
            os: String::new(),
            features: String::new(),
            clock: String::new(),
            on: String::new(),
            devices: String::new(),
        };
        let vm = on_sys_net("", template_vm).unwrap();
        let got = render(&blocks, &selected, &dirs, vm).unwrap();
        assert_eq!(
            got.lines().nth(5).unwrap(),
            "sys-net None fedora-41 fedora-41 800 True 1 Linux own: none \
             audiovm-dom0,guivm-dom0,audiovm-skip red pvh"
        );
    }

    fn bdf(d: &PciDevice) -> (u16, u8, u8, u8, bool, bool) {
        (
            d.segment,
            d.bus,
            d.slot,
            d.function,
            d.permissive,
            d.no_strict_reset,
        )
    }

    #[test]
    fn pci_assignments_for_the_domain_xml() {
        // 4.4's form (§D.5); a segment; a NIC behind a bridge; a missing mode (required);
        // assignments that are not required (any class) are not passed through.
        let got = pci_of(
            "<devices class=\"pci\">\
             <device backend-domain=\"dom0\" id=\"00_19.0\" mode=\"required\" \
             identity=\"0x8086:0x15bb::p020000\">\
             <option name=\"no-strict-reset\">True</option></device>\
             <device backend-domain=\"dom0\" id=\"0001_3a_00.3\" mode=\"required\" identity=\"*\">\
             <option name=\"permissive\">True</option><option name=\"other\">x</option></device>\
             <device backend-domain=\"dom0\" id=\"00_1c.0-00_00.0\" identity=\"*\"/>\
             <device backend-domain=\"dom0\" id=\"00_1f.6\" mode=\"auto-attach\"/>\
             <device backend-domain=\"dom0\" id=\"00_14.0\" mode=\"required\">\
             <option name=\"permissive\"></option></device>\
             </devices><devices class=\"usb\">\
             <device backend-domain=\"sys-usb\" id=\"2-1\" mode=\"auto-attach\"/></devices>",
        )
        .unwrap();
        let got: Vec<_> = got.iter().map(bdf).collect();
        assert_eq!(
            got,
            [
                (0, 0, 0x19, 0, false, true),
                (1, 0x3a, 0, 3, true, false),
                (0, 3, 0, 0, false, false),
                (0, 0, 0x14, 0, false, false),
            ]
        );
        assert!(pci_of("<devices class=\"pci\"/>").unwrap().is_empty());
        // Refused: what is not a PCI path of this machine, a PCI device of another backend, a
        // required class this implementation cannot attach.
        let refused = |devices: &str| pci_of(devices).unwrap_err().to_string();
        assert_eq!(
            refused(
                "<devices class=\"pci\"><device backend-domain=\"sys-usb\" id=\"00_1f.5\" \
                 mode=\"required\"/></devices>"
            ),
            "QubesException: Pci device sys-usb+00_1f.5 not available"
        );
        assert_eq!(
            refused(
                "<devices class=\"usb\"><device backend-domain=\"sys-usb\" id=\"2-1\" \
                 mode=\"required\"/></devices>"
            ),
            "QubesException: Usb device sys-usb+2-1 is required, but qubes-admin-rs cannot \
             attach usb devices"
        );
        for port in ["bogus", "00_1d.0-00_00.0", "00_1f.3"] {
            let err = pci_of(&format!(
                "<devices class=\"pci\"><device backend-domain=\"dom0\" id=\"{port}\" \
                 mode=\"required\"/></devices>"
            ))
            .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("QubesException: Pci device dom0+{port} not available")
            );
        }
    }
}
