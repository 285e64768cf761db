//! admin.vm.CurrentState, and the power-state rules (core.md §10.1) admin.vm.List shares.

use crate::context::Ctx;
use crate::error::ApiError;
use crate::hypervisor::{DomState, DomainRuntime};
use crate::store::DomId;
use crate::vm_feature::{check_feature, Chain};

/// A qube's power state, spelled as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    Halted,
    Transient,
    Running,
    Paused,
    Suspended,
    Halting,
    Dying,
    Crashed,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::Halted => "Halted",
            PowerState::Transient => "Transient",
            PowerState::Running => "Running",
            PowerState::Paused => "Paused",
            PowerState::Suspended => "Suspended",
            PowerState::Halting => "Halting",
            PowerState::Dying => "Dying",
            PowerState::Crashed => "Crashed",
        }
    }
}

/// Classes that are always `Running` and have no libvirt domain of their own.
pub fn always_running(class: &str) -> bool {
    matches!(class, "AdminVM" | "RemoteVM")
}

/// The state rules of §10.1 for a QubesVM, given its libvirt domain (if any). `qrexec_missing`
/// is asked only for an active, running domain: whether the VM expects qrexec (feature `qrexec`
/// along the template chain) and its qrexec daemon is not up yet.
pub fn power_state(
    dom: Option<&DomainRuntime>,
    qrexec_missing: impl FnOnce(&DomainRuntime) -> bool,
) -> PowerState {
    let Some(d) = dom else {
        return PowerState::Halted;
    };
    if !d.active {
        return PowerState::Halted;
    }
    match d.state {
        DomState::Paused => PowerState::Paused,
        DomState::Shutdown => PowerState::Halting,
        DomState::Shutoff => PowerState::Dying,
        DomState::Crashed => PowerState::Crashed,
        DomState::PmSuspended => PowerState::Suspended,
        DomState::Running | DomState::Blocked | DomState::NoState => {
            if qrexec_missing(d) {
                PowerState::Transient
            } else {
                PowerState::Running
            }
        }
    }
}

/// Whether a running QubesVM is still `Transient`: it expects qrexec (feature `qrexec` true
/// along its template chain) but `<run_dir>/qrexec.<name>` does not exist yet.
pub fn qrexec_missing(ctx: &Ctx<'_>, id: DomId, dom: &DomainRuntime) -> Result<bool, ApiError> {
    let expects =
        check_feature(ctx, id, "qrexec", Chain::Template, false)?.is_some_and(|v| !v.is_empty());
    if !expects {
        return Ok(false);
    }
    if dom.id < 0 {
        return Ok(true);
    }
    let flag = ctx
        .config
        .run_dir
        .join(format!("qrexec.{}", ctx.doc().name(id)));
    Ok(!flag.exists())
}

/// Power state of any qube given its libvirt domain (ignored for AdminVM/RemoteVM).
pub fn vm_power_state(
    ctx: &Ctx<'_>,
    id: DomId,
    dom: Option<&DomainRuntime>,
) -> Result<PowerState, ApiError> {
    if always_running(ctx.doc().class(id)) {
        return Ok(PowerState::Running);
    }
    let mut err = None;
    let st = power_state(dom, |d| {
        qrexec_missing(ctx, id, d).unwrap_or_else(|e| {
            err = Some(e);
            false
        })
    });
    match err {
        Some(e) => Err(e),
        None => Ok(st),
    }
}

/// The stored UUID of a qube, lowercase.
pub fn vm_uuid(ctx: &Ctx<'_>, id: DomId) -> Result<String, ApiError> {
    ctx.doc()
        .uuid(id)
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| {
            ApiError::qubes(format!(
                "qube '{}' has no uuid in qubes.xml",
                ctx.doc().name(id)
            ))
        })
}

/// The effective `maxmem` (MiB), through the property engine (stored value or default rule).
fn maxmem_mib(ctx: &Ctx<'_>, id: DomId) -> Result<u64, ApiError> {
    use crate::props::{defaults, value::Val, ReadErr};
    match defaults::vm_prop(ctx, id, "maxmem", 0) {
        Ok(Val::Int(n)) => Ok(u64::try_from(n).unwrap_or(0)),
        Ok(_) => Err(ApiError::qubes(format!(
            "maxmem of '{}' is not an integer",
            ctx.doc().name(id)
        ))),
        Err(ReadErr::Unset) => Err(ApiError::qubes(format!(
            "maxmem of '{}' has no value",
            ctx.doc().name(id)
        ))),
        Err(ReadErr::Api(e)) => Err(e),
    }
}

/// The reply text.
pub fn format_state(mem: u64, mem_static_max: u64, cputime: u64, st: PowerState) -> String {
    format!(
        "mem={mem} mem_static_max={mem_static_max} cputime={cputime} power_state={}",
        st.as_str()
    )
}

pub fn current_state(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let id = ctx.dest;
    let class = ctx.doc().class(id);
    if class == "RemoteVM" {
        return Ok(format_state(0, 0, 0, PowerState::Running).into_bytes());
    }
    let uuid = vm_uuid(ctx, id)?;
    let dom = ctx.hypervisor().domain(&uuid)?;
    if class == "AdminVM" {
        // dom0's libvirt domain is ID 0 on Xen. Drivers without one (test, QEMU: a sandbox)
        // make the host itself dom0: its memory, no CPU time of its own. (The reference fails
        // without a reply there, which breaks `qvm-ls` MEMORY.)
        let max = maxmem_mib(ctx, id)?.saturating_mul(1024);
        let (mem, cputime) = match dom.filter(|d| d.active) {
            Some(d) => (d.mem_kib, d.cpu_time_ns),
            None => (ctx.runtime()?.host.memory_mib.saturating_mul(1024), 0),
        };
        return Ok(format_state(mem, max, cputime, PowerState::Running).into_bytes());
    }
    let st = vm_power_state(ctx, id, dom.as_ref())?;
    let reply = match dom.filter(|d| d.active) {
        None => format_state(0, 0, 0, st),
        Some(d) => {
            let max = maxmem_mib(ctx, id)?.saturating_mul(1024);
            format_state(d.mem_kib, max, d.cpu_time_ns, st)
        }
    };
    Ok(reply.into_bytes())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use crate::hypervisor::{Fixed, HostInfo, Runtime};

    fn dom(state: DomState, active: bool) -> DomainRuntime {
        DomainRuntime {
            name: "vm".into(),
            uuid: "e4b06ce6-0741-47a8-bce4-2c8218072e8c".into(),
            id: if active { 3 } else { -1 },
            state,
            active,
            mem_kib: 512,
            max_mem_kib: 1024,
            vcpus: 2,
            cpu_time_ns: 100,
        }
    }

    #[test]
    fn state_rules() {
        use DomState::*;
        let no = |_: &DomainRuntime| false;
        let yes = |_: &DomainRuntime| true;
        assert_eq!(power_state(None, no), PowerState::Halted);
        assert_eq!(
            power_state(Some(&dom(Running, false)), yes),
            PowerState::Halted
        );
        assert_eq!(
            power_state(Some(&dom(Shutoff, false)), no),
            PowerState::Halted
        );
        assert_eq!(
            power_state(Some(&dom(Paused, true)), yes),
            PowerState::Paused
        );
        assert_eq!(
            power_state(Some(&dom(Shutdown, true)), yes),
            PowerState::Halting
        );
        assert_eq!(
            power_state(Some(&dom(Shutoff, true)), yes),
            PowerState::Dying
        );
        assert_eq!(
            power_state(Some(&dom(Crashed, true)), yes),
            PowerState::Crashed
        );
        assert_eq!(
            power_state(Some(&dom(PmSuspended, true)), yes),
            PowerState::Suspended
        );
        for s in [Running, Blocked, NoState] {
            assert_eq!(power_state(Some(&dom(s, true)), no), PowerState::Running);
            assert_eq!(power_state(Some(&dom(s, true)), yes), PowerState::Transient);
        }
    }

    #[test]
    fn qrexec_is_asked_only_when_running() {
        let mut asked = false;
        power_state(Some(&dom(DomState::Paused, true)), |_| {
            asked = true;
            true
        });
        assert!(!asked);
    }

    #[test]
    fn reply_format() {
        assert_eq!(
            format_state(0, 0, 0, PowerState::Halted),
            "mem=0 mem_static_max=0 cputime=0 power_state=Halted"
        );
        assert_eq!(
            format_state(512, 1024, 100, PowerState::Running),
            "mem=512 mem_static_max=1024 cputime=100 power_state=Running"
        );
    }

    #[test]
    fn always_running_classes() {
        assert!(always_running("AdminVM"));
        assert!(always_running("RemoteVM"));
        assert!(!always_running("AppVM"));
    }

    fn current(rt: Runtime, uri: &str, dest: &str) -> Vec<u8> {
        let run = tempfile::tempdir().unwrap();
        let config = crate::Config {
            xml_path: concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/gen10/qubes.xml"
            )
            .into(),
            run_dir: run.path().to_path_buf(),
            libvirt_uri: uri.into(),
            ..crate::Config::default()
        };
        let mut sys = crate::System::with_hypervisor(config, Box::new(Fixed { runtime: rt }));
        sys.call(&crate::wire::RawRequest {
            method: b"admin.vm.CurrentState".to_vec(),
            arg: Vec::new(),
            src: b"dom0".to_vec(),
            target: crate::wire::Target::Name(dest.as_bytes().to_vec()),
            payload: Vec::new(),
        })
    }

    #[test]
    fn current_state_end_to_end() {
        let mut d = dom(DomState::Paused, true);
        d.uuid = "9b810e76-6ec9-4286-a3ca-828dd5f4b3b2".into();
        let rt = Runtime {
            host: HostInfo {
                memory_mib: 3072,
                cpus: 16,
            },
            domains: vec![d],
        };
        let uri = "test+unix:///default?socket=/x";
        assert_eq!(
            current(rt.clone(), uri, "vm0001"),
            b"0\0mem=512 mem_static_max=0 cputime=100 power_state=Paused"
        );
        assert_eq!(
            current(rt.clone(), uri, "vm0002"),
            b"0\0mem=0 mem_static_max=0 cputime=0 power_state=Halted"
        );
        // No dom0 domain in libvirt (a sandbox): the host is dom0; maxmem default 4096 MiB.
        assert_eq!(
            current(rt, uri, "dom0"),
            b"0\0mem=3145728 mem_static_max=4194304 cputime=0 power_state=Running"
        );
    }
}
