//! The internal socket's calls (`/run/qubesd.internal.sock`; dom0 components only, never a
//! qrexec service): `internal.GetSystemInfo` for the qrexec policy daemon, which asks it on
//! every qrexec call in the system, and `internal.SuspendPre` / `internal.SuspendPost`, which
//! the host's suspend unit calls around a system sleep.

use super::request::enforce_dom0_without_arg;
use super::vm_lifecycle::{resume_qube, suspend_qube};
use crate::error::ApiError;
use crate::model::access;
use crate::model::context::Ctx;
use crate::model::lifecycle::{is_active, live_domain};
use crate::model::power_state::always_running;
use crate::runtime::{DomState, DomainRuntime};

/// The reference's `Paused` and `Suspended` power states.
fn paused_or_suspended(dom: Option<&DomainRuntime>) -> bool {
    dom.is_some_and(|d| d.active && matches!(d.state, DomState::Paused | DomState::PmSuspended))
}

/// Which qubes were already paused when the host went to sleep (the reference's file): they
/// stay paused after it wakes up.
const PREVIOUSLY_PAUSED: &str = "previously-paused.list";

/// `internal.GetSystemInfo`: `{"domains": {<name>: {…}}}` (see [`access::system_info_json`]).
pub fn get_system_info(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    enforce_dom0_without_arg(ctx)?;
    Ok(access::system_info_json(ctx)?.into_bytes())
}

/// `internal.SuspendPre`: remembers the qubes already paused, then suspends every other running
/// qube (`admin.vm.Suspend`'s way, with its events). A qube that fails to suspend does not stop
/// the others (the host goes to sleep regardless); the failure goes to the log.
///
/// Not done: the reference first runs `qubes.SuspendPreAll` in each qube with a qrexec agent,
/// which needs a dom0 qrexec client (a later issue).
pub fn suspend_pre(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    enforce_dom0_without_arg(ctx)?;
    let mut paused = Vec::new();
    let mut running = Vec::new();
    for id in ctx.doc().domains() {
        if always_running(ctx.doc().class(id)) {
            continue;
        }
        let live = live_domain(ctx, id)?;
        if paused_or_suspended(live.as_ref()) {
            paused.push(ctx.doc().name(id).to_string());
        } else if is_active(live.as_ref()) {
            running.push(id);
        }
    }
    let list = ctx.config.run_dir.join(PREVIOUSLY_PAUSED);
    crate::store::write_file_atomically(&list, paused.join("\n").as_bytes(), Some(0o644))
        .map_err(|e| ApiError::qubes(format!("cannot write {}: {e}", list.display())))?;
    for id in running {
        if let Err(e) = suspend_qube(ctx, id) {
            eprintln!(
                "qubes-admin: internal.SuspendPre: {}: {}: {}",
                ctx.doc().name(id),
                e.ty.as_str(),
                e.msg
            );
        }
    }
    Ok(Vec::new())
}

/// `internal.SuspendPost`: resumes every paused or suspended qube that was not paused before
/// the sleep ([`suspend_pre`]'s list; without it, every one).
pub fn suspend_post(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    enforce_dom0_without_arg(ctx)?;
    let list =
        std::fs::read_to_string(ctx.config.run_dir.join(PREVIOUSLY_PAUSED)).unwrap_or_default();
    let previously: Vec<&str> = list.split('\n').collect();
    for id in ctx.doc().domains() {
        let name = ctx.doc().name(id).to_string();
        if always_running(ctx.doc().class(id)) || previously.contains(&name.as_str()) {
            continue;
        }
        if !paused_or_suspended(live_domain(ctx, id)?.as_ref()) {
            continue;
        }
        if let Err(e) = resume_qube(ctx, id) {
            eprintln!(
                "qubes-admin: internal.SuspendPost: {name}: {}: {}",
                e.ty.as_str(),
                e.msg
            );
        }
    }
    Ok(Vec::new())
}
