//! The power-state rules (`core.md` §10.1): a qube's state from its libvirt domain, shared by
//! `admin.vm.List`, `admin.vm.CurrentState` and the lifecycle calls.

use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::model::features::{check_feature, Chain};
use crate::runtime::{DomState, DomainRuntime};
use crate::store::DomId;

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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
pub(crate) mod tests {
    use super::*;

    /// A libvirt domain in `state` (also used by `api::vm_state`'s tests).
    pub(crate) fn dom(state: DomState, active: bool) -> DomainRuntime {
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
    fn always_running_classes() {
        assert!(always_running("AdminVM"));
        assert!(always_running("RemoteVM"));
        assert!(!always_running("AppVM"));
    }
}
