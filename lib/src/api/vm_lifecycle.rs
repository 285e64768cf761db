//! admin.vm.Pause, admin.vm.Unpause, admin.vm.Kill (`core.md` §3.11) through libvirt. These
//! calls run on a read-only view of qubes.xml (they do not save it) under the qube's operation
//! lock, so a long libvirt operation never holds the qubes.xml lock. (Start, Shutdown, Suspend
//! and Resume: the rest of the lifecycle issue.)

use crate::error::{ApiError, ExcType};
use crate::model::context::Ctx;
use crate::model::lifecycle::{
    is_active, is_paused, live_domain, lock_qube, op_error, stop_processing,
};
use crate::model::power_state::vm_uuid;
use crate::runtime::Op;
use crate::wire::python::repr;

/// dom0 and RemoteVMs have no pause/unpause (the reference fails without a reply).
fn refuse_non_qubesvm(ctx: &Ctx<'_>, what: &str) -> Result<(), ApiError> {
    let class = ctx.doc().class(ctx.dest);
    if matches!(class, "AdminVM" | "RemoteVM") {
        return Err(ApiError::no_reply_in_reference(format!(
            "{class} {} cannot be {what}",
            ctx.dest_name()
        )));
    }
    Ok(())
}

/// `admin.vm.Pause`: `domain-pre-paused`, then libvirt suspends the qube (`domain-paused`
/// comes from libvirt's event).
pub fn pause(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    refuse_non_qubesvm(ctx, "paused")?;
    let (id, name) = (ctx.dest, ctx.dest_name().to_string());
    let _lock = lock_qube(ctx, id)?;
    if !is_active(live_domain(ctx, id)?.as_ref()) {
        return Err(ApiError::new(
            ExcType::QubesVMNotRunningError,
            format!(
                "Domain not running (either powered off or paused): {}",
                repr(&name)
            ),
        ));
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
    refuse_non_qubesvm(ctx, "unpaused")?;
    let (id, name) = (ctx.dest, ctx.dest_name().to_string());
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
        return Err(ApiError::new(
            ExcType::QubesVMNotStartedError,
            format!("Domain is powered off: {}", repr(&name)),
        ));
    }
    let uuid = vm_uuid(ctx, id)?;
    ctx.hypervisor()
        .op(&uuid, Op::Destroy)
        .map_err(|e| op_error(e, &name, true))?;
    stop_processing(ctx, id)?;
    Ok(Vec::new())
}
