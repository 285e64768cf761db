//! admin.vm.Start, Pause, Unpause, Kill and Shutdown (`core.md` §3.11, §10) through libvirt. These
//! calls run on a read-only view of qubes.xml (they do not save it) under the qube's operation
//! lock, so a long libvirt operation never holds the qubes.xml lock. (Suspend, Resume and the
//! dom0 services a started qube needs: the rest of the lifecycle issue.) A failed call logs no events (the reference also fires
//! `domain-shutdown-failed`; see the README's deviations).

use crate::error::{ApiError, ExcType};
use crate::model::context::Ctx;
use crate::model::lifecycle::{
    is_active, is_paused, live_domain, lock_qube, not_running, op_error, powered_off,
    stop_processing,
};
use crate::model::power_state::{vm_power_state, vm_uuid, PowerState};
use crate::model::props::{defaults, value::Val};
use crate::model::volumes;
use crate::runtime::domain_xml::Flavour;
use crate::runtime::Op;
use crate::store::DomId;
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
        return Err(powered_off(&name));
    }
    let uuid = vm_uuid(ctx, id)?;
    ctx.hypervisor()
        .op(&uuid, Op::Destroy)
        .map_err(|e| op_error(e, &name, true))?;
    stop_processing(ctx, id)?;
    Ok(Vec::new())
}

/// The qubes (in qubes.xml order) that are running and use `id` through `prop`.
fn running_users(ctx: &Ctx<'_>, id: DomId, prop: &str) -> Result<Vec<String>, ApiError> {
    let rt = ctx.runtime()?;
    let doc = ctx.doc();
    let mut users = Vec::new();
    for other in doc.domains() {
        if other == id {
            continue;
        }
        let uses = defaults::vm_prop_ref(ctx, other, prop, 0) == Some(id);
        let running = doc
            .uuid(other)
            .and_then(|u| rt.by_uuid(u))
            .is_some_and(|d| d.active);
        if uses && running {
            users.push(doc.name(other).to_string());
        }
    }
    Ok(users)
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
    refuse_non_qubesvm(ctx, "shut down with force/wait")?;
    let (id, name) = (ctx.dest, ctx.dest_name().to_string());
    let _lock = lock_qube(ctx, id)?;
    let dom = live_domain(ctx, id)?;
    if !is_active(dom.as_ref()) {
        return Err(powered_off(&name));
    }
    let flag = if force { "True" } else { "False" };
    ctx.emit(&name, "domain-pre-shutdown", &[("force", flag)]);
    if !force {
        let net = running_users(ctx, id, "netvm")?;
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
            let users = running_users(ctx, id, prop)?;
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
    let paused = is_paused(dom.as_ref());
    if paused && !force {
        return Err(not_running(&name));
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
        let timeout = match defaults::vm_prop(ctx, id, "shutdown_timeout", 0) {
            Ok(Val::Int(n)) => u64::try_from(n).unwrap_or(0),
            _ => 60,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
        while is_active(live_domain(ctx, id)?.as_ref()) {
            if std::time::Instant::now() >= deadline {
                return Err(ApiError::new(
                    ExcType::QubesVMShutdownTimeoutError,
                    format!("Domain shutdown timed out: {}", repr(&name)),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        stop_processing(ctx, id)?;
    }
    Ok(Vec::new())
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
        return Err(ApiError::qubes(format!(
            "Qube start is prohibited. Rationale: {why}"
        )));
    }
    let guid = [("start_guid", "True")];
    ctx.emit(
        &name,
        "domain-pre-start",
        &[("start_guid", "True"), ("mem_required", "None")],
    );
    let pools = volumes::pools(ctx);
    let vols = volumes::volumes_of(ctx, &pools, id)?;
    let dir = volumes::vm_dir(ctx, id);
    volumes::verify_storage(&dir, &pools, &vols)?;
    if let Some(net) = defaults::netvm_of(ctx, id, 0).filter(|n| !ctx.doc().is_admin(*n)) {
        start_qube(ctx, net, depth + 1)?;
    }
    let flavour = match Flavour::for_uri(&ctx.config.libvirt_uri) {
        Some(Flavour::Xen) | None => {
            return Err(start_failed(&format!(
                "the domain XML for {} is not built yet (test and qemu URIs are)",
                ctx.config.libvirt_uri
            )))
        }
        Some(f) => f,
    };
    let spec = crate::model::lifecycle::domain_spec(ctx, id, &dir, &pools, &vols)?;
    let xml = spec.to_xml(flavour).unwrap_or_default();
    let run_dir = ctx.config.run_dir.clone();
    volumes::start_storage(&run_dir, &dir, &pools, &vols)?;
    ctx.emit(&name, "domain-pre-spawn", &guid);
    let uuid = vm_uuid(ctx, id)?;
    let hv = ctx.hypervisor();
    let spawned = hv.define(&xml).and_then(|()| hv.op(&uuid, Op::StartPaused));
    if let Err(e) = spawned {
        volumes::stop_storage(&run_dir, &pools, &vols);
        return Err(start_failed(&e.to_string()));
    }
    for prop in ["xid", "stubdom_xid", "start_time"] {
        ctx.emit(&name, format!("property-reset:{prop}"), &[("name", prop)]);
    }
    ctx.emit(&name, "domain-spawn", &guid);
    ctx.emit(&name, "domain-pre-unpaused", &[]);
    if let Err(e) = ctx.hypervisor().op(&uuid, Op::Resume) {
        let _ = ctx.hypervisor().op(&uuid, Op::Destroy);
        volumes::stop_storage(&run_dir, &pools, &vols);
        return Err(start_failed(&e.to_string()));
    }
    ctx.emit(&name, "domain-unpaused", &[]);
    crate::model::lifecycle::mark_started(ctx, id)?;
    ctx.emit(&name, "domain-start", &guid);
    Ok(())
}

/// `admin.vm.Suspend` (socket only): PM suspend is not available through this build's libvirt
/// binding, so it takes the reference's fallback for drivers without it: `domain-pre-paused`
/// and a pause. (The reference first runs `qubes.SuspendPre` in the qube: no qrexec yet.)
pub fn suspend(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    match ctx.doc().class(ctx.dest) {
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

/// `admin.vm.Resume` (socket only): a PM-suspended qube is woken up (`domain-resumed`);
/// anything else is treated exactly as `admin.vm.Unpause`.
pub fn resume(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    refuse_non_qubesvm(ctx, "resumed")?;
    let (id, name) = (ctx.dest, ctx.dest_name().to_string());
    let suspended = live_domain(ctx, id)?
        .is_some_and(|d| d.active && d.state == crate::runtime::DomState::PmSuspended);
    if !suspended {
        return unpause(ctx);
    }
    let _lock = lock_qube(ctx, id)?;
    let uuid = vm_uuid(ctx, id)?;
    ctx.hypervisor()
        .op(&uuid, Op::PmWakeup)
        .map_err(|e| op_error(e, &name, false))?;
    ctx.emit(&name, "domain-resumed", &[]);
    Ok(Vec::new())
}
