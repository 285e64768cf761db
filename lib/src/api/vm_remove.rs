//! admin.vm.Remove (`core.md` §3.5): the dependency checks in the reference's order, the
//! qube's removal from qubes.xml, then (after the commit, outside the qubes.xml lock) its
//! volumes and directory. As in the reference, errors while deleting files only get logged.

use crate::error::{ApiError, ExcType};
use crate::model::context::Ctx;
use crate::model::power_state::{vm_power_state, vm_uuid, PowerState};
use crate::model::props::defs::{self, PropType};
use crate::model::props::{defaults, value::Val};
use crate::model::volumes;
use crate::runtime::Op;
use crate::store::DomId;
use crate::wire::python::repr;

/// Global VM-valued properties: any of them pointing at a qube (its default included) blocks
/// its removal.
const GLOBAL_VM_PROPS: &[&str] = &[
    "default_netvm",
    "default_template",
    "clockvm",
    "updatevm",
    "default_dispvm",
    "management_dispvm",
    "default_guivm",
    "default_audiovm",
];

fn in_use(name: &str) -> ApiError {
    ApiError::new(
        ExcType::QubesVMInUseError,
        format!(
            "Domain is in use: {};  see 'journalctl -u qubesd -e' in dom0 for details",
            repr(name)
        ),
    )
}

/// Whether anything refers to qube `id`: a global VM-valued property (effective value), or a
/// VM-valued property another qube stores explicitly.
fn referenced(ctx: &Ctx<'_>, id: DomId) -> Result<bool, ApiError> {
    let doc = ctx.doc();
    let name = doc.name(id);
    if GLOBAL_VM_PROPS
        .iter()
        .any(|p| defaults::global_vm(ctx, p) == Some(id))
    {
        return Ok(true);
    }
    // Only qubes whose stored form holds the name as an element's text can refer to it: the
    // others are not parsed (this keeps Remove fast with a thousand qubes).
    let text = format!(">{}<", crate::store::xml::escape_text(name));
    for other in doc.domains() {
        if other == id || !doc.may_contain(other, text.as_bytes()) {
            continue;
        }
        let Some(table) = defs::table(doc.class(other)) else {
            continue;
        };
        for (prop, value) in doc.data(other)?.properties() {
            let is_vm =
                defs::find(table, prop).is_some_and(|(_, d)| matches!(d.ty, PropType::Vm(..)));
            if is_vm && value == name {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Port ids of the devices qube `id` provides to other qubes (`<device backend-domain=…>`
/// assignments in their `<devices>`).
fn provided_devices(ctx: &Ctx<'_>, id: DomId) -> Result<Vec<String>, ApiError> {
    use crate::store::xml::{self, Lexer, TokKind};
    let doc = ctx.doc();
    let name = doc.name(id);
    let mut ports = Vec::new();
    let attr = crate::store::xml::escape_attr(name);
    for other in doc.domains() {
        if other == id || !doc.may_contain(other, attr.as_bytes()) {
            continue;
        }
        for (elem, raw) in doc.data(other)?.raw_elements() {
            if elem != "devices" {
                continue;
            }
            let mut lx = Lexer::new(raw, 0);
            while let Ok(Some(tok)) = lx.next_tok() {
                if let TokKind::Start { name: n, attrs, .. } = tok.kind {
                    if n.of(raw) == b"device"
                        && xml::attr(raw, attrs, "backend-domain").as_deref() == Some(name)
                    {
                        ports.push(xml::attr(raw, attrs, "id").unwrap_or_default());
                    }
                }
            }
        }
    }
    Ok(ports)
}

pub fn remove(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let id = ctx.dest;
    let name = ctx.dest_name().to_string();
    if ctx.dest_is_admin() {
        return Err(ApiError::new(
            ExcType::QubesVMInUseError,
            format!("{} cannot be removed", repr(&name)),
        ));
    }
    if matches!(
        defaults::vm_prop(ctx, id, "installed_by_rpm", 0),
        Ok(Val::Bool(true))
    ) {
        return Err(ApiError::new(
            ExcType::QubesVMInUseError,
            format!("VM installed by package manager: {name}"),
        ));
    }
    let mut defined = None;
    if ctx.doc().class(id) != "RemoteVM" {
        let uuid = vm_uuid(ctx, id)?;
        let dom = ctx.runtime()?.by_uuid(&uuid).cloned();
        if vm_power_state(ctx, id, dom.as_ref())? != PowerState::Halted {
            return Err(ApiError::new(
                ExcType::QubesVMNotHaltedError,
                format!("Domain is not powered off: {}", repr(&name)),
            ));
        }
        defined = dom.map(|_| uuid);
    }
    ctx.emit("", "domain-pre-delete", &[("vm", &name)]);
    if referenced(ctx, id)? {
        return Err(in_use(&name));
    }
    let ports = provided_devices(ctx, id)?;
    if !ports.is_empty() {
        return Err(ApiError::new(
            ExcType::QubesVMInUseError,
            format!("VM has devices assigned to other VMs: {}", ports.join(", ")),
        ));
    }
    let pools = volumes::pools(ctx);
    let vols = volumes::volumes_of(ctx, &pools, id)?;
    let dir = volumes::has_storage(ctx.doc().class(id)).then(|| volumes::vm_dir(ctx, id));
    // The libvirt definition goes too (a new qube of this name gets a new UUID, and libvirt
    // refuses a second domain of one name). It is derived state, redefined at every Start, so
    // dropping it before the commit is harmless if the commit then fails.
    if let Some(uuid) = defined {
        ctx.hypervisor().op(&uuid, Op::Undefine)?;
    }
    ctx.doc_mut()?.remove_domain(id);
    ctx.emit("", "domain-delete", &[("vm", &name)]);
    ctx.after_commit(move || volumes::remove_from_disk(&pools, &vols, dir.as_deref()));
    Ok(Vec::new())
}
