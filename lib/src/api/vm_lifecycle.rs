//! admin.vm.Start, Pause, Unpause, Kill and Shutdown (`core.md` §3.11, §10) through libvirt. These
//! calls run on a read-only view of qubes.xml (they do not save it) under the qube's operation
//! lock, so a long libvirt operation never holds the qubes.xml lock. Start also uses the dom0
//! services (qmemman, QubesDB, qrexec: `runtime::dom0`). What a failing call fired is logged,
//! ending with its failure event (`domain-start-failed`, `domain-shutdown-failed`).

use crate::error::{ApiError, ExcType};
use crate::model::context::Ctx;
use crate::model::lifecycle::{
    is_active, is_paused, live_domain, lock_qube, not_running, op_error, powered_off,
    running_users, stop_processing,
};
use crate::model::power_state::{vm_power_state, vm_uuid, PowerState};
use crate::model::props::defaults;
use crate::model::qubesdb;
use crate::model::volumes;
use crate::runtime::dom0;
use crate::runtime::domain_xml::Flavour;
use crate::runtime::Op;
use crate::store::DomId;
use crate::wire::python::repr;

/// dom0 and RemoteVMs have no pause/unpause (the reference fails without a reply).
fn refuse_non_qubesvm(ctx: &Ctx<'_>, id: DomId, what: &str) -> Result<(), ApiError> {
    let class = ctx.doc().class(id);
    if matches!(class, "AdminVM" | "RemoteVM") {
        return Err(ApiError::no_reply_in_reference(format!(
            "{class} {} cannot be {what}",
            ctx.doc().name(id)
        )));
    }
    Ok(())
}

/// `admin.vm.Pause`: `domain-pre-paused`, then libvirt suspends the qube (`domain-paused`
/// comes from libvirt's event).
pub fn pause(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    refuse_non_qubesvm(ctx, ctx.dest, "paused")?;
    let (id, name) = (ctx.dest, ctx.dest_name().to_string());
    let _lock = lock_qube(ctx, id)?;
    if !is_active(live_domain(ctx, id)?.as_ref()) {
        return Err(not_running(&name));
    }
    ctx.emit(&name, "domain-pre-paused", &[]);
    let uuid = vm_uuid(ctx, id)?;
    ctx.hypervisor()
        .op(&uuid, Op::Pause)
        .map_err(|e| op_error(e, &name, false))?;
    Ok(Vec::new())
}

/// `admin.vm.Unpause`: only a paused qube; `domain-pre-unpaused`, resume, `domain-unpaused`.
pub fn unpause(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    unpause_qube(ctx, ctx.dest)
}

fn unpause_qube(ctx: &mut Ctx<'_>, id: DomId) -> Result<Vec<u8>, ApiError> {
    refuse_non_qubesvm(ctx, id, "unpaused")?;
    let name = ctx.doc().name(id).to_string();
    let _lock = lock_qube(ctx, id)?;
    if !is_paused(live_domain(ctx, id)?.as_ref()) {
        return Err(ApiError::new(
            ExcType::QubesVMNotPausedError,
            format!("Domain is not paused: {}", repr(&name)),
        ));
    }
    ctx.emit(&name, "domain-pre-unpaused", &[]);
    let uuid = vm_uuid(ctx, id)?;
    ctx.hypervisor()
        .op(&uuid, Op::Resume)
        .map_err(|e| op_error(e, &name, false))?;
    ctx.emit(&name, "domain-unpaused", &[]);
    Ok(Vec::new())
}

/// `admin.vm.Kill`: libvirt destroys the qube, and the reply waits until its stop has been
/// processed (volumes stopped, `domain-stopped`, `domain-shutdown`).
pub fn kill(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let class = ctx.doc().class(ctx.dest);
    match class {
        "AdminVM" => {
            return Err(ApiError::new(
                ExcType::QubesVMError,
                "Cannot kill Dom0 fake domain!",
            ))
        }
        "RemoteVM" => {
            return Err(ApiError::new(
                ExcType::QubesVMError,
                "Cannot kill a RemoteVM.",
            ))
        }
        _ => {}
    }
    let (id, name) = (ctx.dest, ctx.dest_name().to_string());
    let _lock = lock_qube(ctx, id)?;
    if !is_active(live_domain(ctx, id)?.as_ref()) {
        return Err(powered_off(&name));
    }
    let uuid = vm_uuid(ctx, id)?;
    ctx.hypervisor()
        .op(&uuid, Op::Destroy)
        .map_err(|e| op_error(e, &name, true))?;
    stop_processing(ctx, id)?;
    Ok(Vec::new())
}

/// `admin.vm.Shutdown[+force][+wait]`: refused while running qubes use this one as netvm, GuiVM
/// or AudioVM (unless `force`); a paused qube is destroyed (with `force`), any other asked to
/// shut down; with `wait` the reply waits (up to `shutdown_timeout`) for the stop and its
/// processing.
pub fn shutdown(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let (mut force, mut wait) = (false, false);
    if !ctx.arg.is_empty() {
        for part in ctx.arg.split('+') {
            match part {
                "force" => force = true,
                "wait" => wait = true,
                _ => return Err(ApiError::protocol("Argument must match: force, wait")),
            }
        }
    }
    refuse_non_qubesvm(ctx, ctx.dest, "shut down with force/wait")?;
    let (id, name) = (ctx.dest, ctx.dest_name().to_string());
    let _lock = lock_qube(ctx, id)?;
    let dom = live_domain(ctx, id)?;
    if !is_active(dom.as_ref()) {
        return Err(powered_off(&name));
    }
    // Any failure from here on (a veto included) fires `domain-shutdown-failed` first.
    shutdown_running(ctx, id, &name, dom.as_ref(), force, wait).inspect_err(|e| {
        ctx.emit(&name, "domain-shutdown-failed", &[("reason", &e.msg)]);
    })?;
    Ok(Vec::new())
}

fn names(ctx: &Ctx<'_>, ids: Vec<DomId>) -> Vec<String> {
    ids.into_iter()
        .map(|id| ctx.doc().name(id).to_string())
        .collect()
}

fn shutdown_running(
    ctx: &mut Ctx<'_>,
    id: DomId,
    name: &str,
    dom: Option<&crate::runtime::DomainRuntime>,
    force: bool,
    wait: bool,
) -> Result<(), ApiError> {
    let flag = if force { "True" } else { "False" };
    ctx.emit(name, "domain-pre-shutdown", &[("force", flag)]);
    if !force {
        let net = names(ctx, running_users(ctx, id, "netvm")?);
        if !net.is_empty() {
            return Err(ApiError::new(
                ExcType::QubesVMInUseError,
                format!(
                    "There are other VMs connected to this VM: {}",
                    net.join(", ")
                ),
            ));
        }
        for (prop, what) in [("guivm", "GuiVM"), ("audiovm", "AudioVM")] {
            let users = names(ctx, running_users(ctx, id, prop)?);
            if !users.is_empty() {
                return Err(ApiError::new(
                    ExcType::QubesVMError,
                    format!(
                        "There are running VMs using this VM as {what}: {}",
                        users.join(", ")
                    ),
                ));
            }
        }
    }
    let paused = is_paused(dom);
    if paused && !force {
        return Err(not_running(name));
    }
    let uuid = vm_uuid(ctx, id)?;
    let op = if paused { Op::Destroy } else { Op::Shutdown };
    ctx.hypervisor().op(&uuid, op).map_err(|e| match e {
        crate::runtime::HvError::Failed(m) => {
            ApiError::new(ExcType::QubesVMShutdownTimeoutError, m)
        }
        other => other.into(),
    })?;
    if wait {
        let timeout = defaults::vm_u64(ctx, id, "shutdown_timeout").unwrap_or(60);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
        while is_active(live_domain(ctx, id)?.as_ref()) {
            if std::time::Instant::now() >= deadline {
                return Err(ApiError::new(
                    ExcType::QubesVMShutdownTimeoutError,
                    format!("Domain shutdown timed out: {}", repr(name)),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        stop_processing(ctx, id)?;
    }
    Ok(())
}

/// `admin.vm.Start`: a no-op unless the qube is halted; otherwise its netvm chain first, then
/// the reference's sequence (§10.2): `domain-pre-start`, storage verified and started,
/// `domain-pre-spawn`, the domain defined and started paused, `domain-spawn`, resumed
/// (`domain-pre-unpaused`, `domain-unpaused`), `domain-start`. A failure after the storage
/// started stops it again (and destroys a spawned domain).
pub fn start(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let not_halted = |m: &str| Err(ApiError::new(ExcType::QubesVMNotHaltedError, m));
    match ctx.doc().class(ctx.dest) {
        "AdminVM" => return not_halted("Cannot start Dom0 fake domain!"),
        "RemoteVM" => return not_halted("Cannot start a RemoteVM."),
        _ => {}
    }
    let id = ctx.dest;
    start_qube(ctx, id, 0)?;
    Ok(Vec::new())
}

fn start_failed(msg: &str) -> ApiError {
    ApiError::qubes(format!(
        "Start failed: {msg}, see /var/log/libvirt/libxl/libxl-driver.log for details"
    ))
}

fn start_qube(ctx: &mut Ctx<'_>, id: DomId, depth: u32) -> Result<(), ApiError> {
    if depth > 16 {
        return Err(ApiError::qubes("the netvm chain is too long (a loop?)"));
    }
    let name = ctx.doc().name(id).to_string();
    let _lock = lock_qube(ctx, id)?;
    let dom = live_domain(ctx, id)?;
    if vm_power_state(ctx, id, dom.as_ref())? != PowerState::Halted {
        return Ok(());
    }
    if let Some(why) = ctx
        .doc()
        .data(id)?
        .feature("prohibit-start")
        .filter(|v| !v.is_empty())
    {
        let e = ApiError::qubes(format!("Qube start is prohibited. Rationale: {why}"));
        ctx.emit(&name, "domain-start-failed", &[("reason", &e.msg)]);
        return Err(e);
    }
    ctx.emit(
        &name,
        "domain-pre-start",
        &[("start_guid", "True"), ("mem_required", "None")],
    );
    let devices = crate::model::lifecycle::required_devices(ctx, id, std::path::Path::new("/sys"))?;
    if !devices.is_empty() && Flavour::for_uri(&ctx.config.libvirt_uri) != Some(Flavour::Xen) {
        // The sandbox's drivers cannot give a qube host devices: say so rather than start it
        // without what it requires.
        return Err(ApiError::qubes(format!(
            "{name} requires PCI or block devices, which only a Xen libvirt passes through \
             (this one is {})",
            ctx.config.libvirt_uri
        )));
    }
    let pools = volumes::pools(ctx);
    let vols = volumes::volumes_of(ctx, &pools, id)?;
    let dir = volumes::vm_dir(ctx, id);
    volumes::verify_storage(&dir, &pools, &vols)?;
    let netvm = defaults::netvm_of(ctx, id, 0).filter(|n| !ctx.doc().is_admin(*n));
    if let Some(net) = netvm {
        start_qube(ctx, net, depth + 1)?;
    }
    let storage = Storage {
        run_dir: ctx.config.run_dir.clone(),
        dir,
        pools,
        vols,
    };
    let mut spawned = false;
    if let Err(f) = spawn(ctx, id, &name, netvm, &storage, devices, &mut spawned) {
        if spawned {
            let _ = ctx.hypervisor().op(&vm_uuid(ctx, id)?, Op::Destroy);
        }
        if f.storage_started {
            volumes::stop_storage(&storage.run_dir, &storage.pools, &storage.vols);
        }
        ctx.emit(&name, "domain-start-failed", &[("reason", &f.reason)]);
        return Err(f.error);
    }
    Ok(())
}

/// A qube's storage, as a Start works with it.
struct Storage {
    run_dir: std::path::PathBuf,
    dir: std::path::PathBuf,
    pools: Vec<crate::storage::Pool>,
    vols: Vec<crate::storage::VolumeConfig>,
}

/// Why a Start failed once it was under way: the `reason` of `domain-start-failed` (a libvirt
/// failure's own message) and the error the caller gets.
struct StartFailure {
    reason: String,
    error: ApiError,
    storage_started: bool,
}

impl From<ApiError> for StartFailure {
    fn from(error: ApiError) -> Self {
        StartFailure {
            reason: error.msg.clone(),
            error,
            storage_started: true,
        }
    }
}

fn libvirt_failure(e: &crate::runtime::HvError) -> StartFailure {
    let reason = e.to_string();
    StartFailure {
        error: start_failed(&reason),
        reason,
        storage_started: true,
    }
}

/// The Xen domain XML, through the administrator's override (`xen-user.xml`, …) if there is
/// one, as the reference renders it.
fn xen_xml(
    ctx: &Ctx<'_>,
    id: DomId,
    spec: &crate::runtime::domain_xml::DomainSpec,
) -> Result<String, ApiError> {
    use crate::runtime::xen_template;
    let blocks = spec.xen_blocks();
    let dirs = &ctx.config.template_dirs;
    let Some((selected, _)) = xen_template::find_override(dirs, &spec.name) else {
        return Ok(blocks.assemble());
    };
    let vm = crate::model::lifecycle::template_vm(ctx, id)?;
    xen_template::render(&blocks, &selected, dirs, vm).map_err(|e| start_failed(&e.to_string()))
}

/// The part of a Start after which a failure fires `domain-start-failed` (§10.2): memory from
/// qmemman, the storage, the domain spawned paused, QubesDB, resumed, qrexec. `spawned` tells
/// the caller whether a domain exists to destroy.
fn spawn(
    ctx: &mut Ctx<'_>,
    id: DomId,
    name: &str,
    netvm: Option<DomId>,
    st: &Storage,
    mut devices: crate::model::lifecycle::RequiredDevices,
    spawned: &mut bool,
) -> Result<(), StartFailure> {
    let early = |e: ApiError| StartFailure {
        storage_started: false,
        ..StartFailure::from(e)
    };
    let Some(flavour) = Flavour::for_uri(&ctx.config.libvirt_uri) else {
        return Err(early(start_failed(&format!(
            "no domain XML for {} (xen, qemu and test URIs have one)",
            ctx.config.libvirt_uri
        ))));
    };
    let unattached = std::mem::take(&mut devices.unattached);
    let spec = crate::model::lifecycle::domain_spec(ctx, id, &st.dir, &st.pools, &st.vols, devices)
        .map_err(early)?;
    let xml = match flavour {
        // The administrator's overrides (xen-user.xml, …), as the reference renders them.
        Flavour::Xen => xen_xml(ctx, id, &spec).map_err(early)?,
        _ => spec.to_xml(flavour),
    };
    let services = ctx.dom0_services();
    let net_ops = match netvm {
        Some(_) => qubesdb::client_entries(ctx, id, None).map_err(early)?,
        None => Vec::new(),
    };
    let grant = services
        .request_memory(name, qubesdb::memory_required(ctx, id))
        .map_err(|e| early(e.into()))?;
    volumes::start_storage(&st.run_dir, &st.dir, &st.pools, &st.vols).map_err(early)?;
    let guid = [("start_guid", "True")];
    ctx.emit(name, "domain-pre-spawn", &guid);
    if let Some(net) = netvm {
        if is_active(live_domain(ctx, net)?.as_ref()) {
            let mut db = services
                .qubesdb(ctx.doc().name(net))
                .map_err(ApiError::from)?;
            qubesdb::apply(db.as_mut(), &net_ops)?;
        }
    }
    let uuid = vm_uuid(ctx, id)?;
    let hv = ctx.hypervisor();
    hv.define(&xml).map_err(|e| libvirt_failure(&e))?;
    hv.op(&uuid, Op::StartPaused)
        .map_err(|e| libvirt_failure(&e))?;
    *spawned = true;
    // qmemman balances again once the domain holds its memory.
    drop(grant);
    let xid = live_domain(ctx, id)?.map_or(-1, |d| d.id);
    services.allow_memory_reports(xid).map_err(ApiError::from)?;
    for prop in ["xid", "stubdom_xid", "start_time"] {
        ctx.emit(name, format!("property-reset:{prop}"), &[("name", prop)]);
    }
    ctx.emit(name, "domain-spawn", &guid);
    let mut db = services.start_qubesdb(xid, name).map_err(ApiError::from)?;
    let entries = qubesdb::qube_entries(ctx, id, &qubesdb::random_seed()?)?;
    qubesdb::apply(db.as_mut(), &entries)?;
    // A netvm that starts with clients running (it was restarted) gets their entries again.
    if defaults::vm_prop(ctx, id, "provides_network", 0).is_ok_and(|v| v.truthy()) {
        for client in running_users(ctx, id, "netvm")? {
            qubesdb::apply(db.as_mut(), &qubesdb::client_entries(ctx, client, None)?)?;
        }
    }
    ctx.emit(name, "domain-qdb-create", &[]);
    ctx.emit(name, "domain-pre-unpaused", &[]);
    ctx.hypervisor()
        .op(&uuid, Op::Resume)
        .map_err(|e| libvirt_failure(&e))?;
    ctx.emit(name, "domain-unpaused", &[]);
    let qrexec = dom0::QrexecStart {
        xid,
        name: name.to_string(),
        default_user: defaults::vm_text(ctx, id, "default_user").unwrap_or_default(),
        debug: defaults::vm_prop(ctx, id, "debug", 0).is_ok_and(|v| v.truthy()),
        wait_for_agent: defaults::feature_with_template(ctx, id, "qrexec")
            .is_some_and(|v| !v.is_empty()),
        timeout: defaults::vm_u64(ctx, id, "qrexec_timeout").unwrap_or(60),
    };
    services.start_qrexec(&qrexec).map_err(ApiError::from)?;
    crate::model::lifecycle::mark_started(ctx, id)?;
    ctx.emit(name, "domain-start", &guid);
    crate::model::lifecycle::report_unattached(name, &unattached);
    Ok(())
}

/// `admin.vm.Suspend` (socket only): PM suspend is not available through this build's libvirt
/// binding, so it takes the reference's fallback for drivers without it: `domain-pre-paused`
/// and a pause. (The reference first runs `qubes.SuspendPre` in the qube: no qrexec yet.)
pub fn suspend(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    suspend_qube(ctx, ctx.dest)
}

/// [`suspend`] of qube `id` (also `internal.SuspendPre`'s, for each running qube).
pub fn suspend_qube(ctx: &mut Ctx<'_>, id: DomId) -> Result<Vec<u8>, ApiError> {
    match ctx.doc().class(id) {
        "AdminVM" => {
            return Err(ApiError::new(
                ExcType::QubesVMError,
                "Cannot suspend Dom0 fake domain!",
            ))
        }
        "RemoteVM" => {
            return Err(ApiError::new(
                ExcType::QubesVMError,
                "Cannot suspend a RemoteVM.",
            ))
        }
        _ => {}
    }
    let name = ctx.doc().name(id).to_string();
    let _lock = lock_qube(ctx, id)?;
    if !is_active(live_domain(ctx, id)?.as_ref()) {
        return Err(not_running(&name));
    }
    ctx.emit(&name, "domain-pre-paused", &[]);
    let uuid = vm_uuid(ctx, id)?;
    ctx.hypervisor()
        .op(&uuid, Op::Pause)
        .map_err(|e| op_error(e, &name, false))?;
    Ok(Vec::new())
}

/// `admin.vm.Resume` (socket only): a PM-suspended qube is woken up (`domain-resumed`);
/// anything else is treated exactly as `admin.vm.Unpause`.
pub fn resume(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    resume_qube(ctx, ctx.dest)
}

/// [`resume`] of qube `id` (also `internal.SuspendPost`'s).
pub fn resume_qube(ctx: &mut Ctx<'_>, id: DomId) -> Result<Vec<u8>, ApiError> {
    refuse_non_qubesvm(ctx, id, "resumed")?;
    let name = ctx.doc().name(id).to_string();
    let suspended = live_domain(ctx, id)?
        .is_some_and(|d| d.active && d.state == crate::runtime::DomState::PmSuspended);
    if !suspended {
        return unpause_qube(ctx, id);
    }
    let _lock = lock_qube(ctx, id)?;
    let uuid = vm_uuid(ctx, id)?;
    ctx.hypervisor()
        .op(&uuid, Op::PmWakeup)
        .map_err(|e| op_error(e, &name, false))?;
    ctx.emit(&name, "domain-resumed", &[]);
    Ok(Vec::new())
}
