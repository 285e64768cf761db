//! Assignment and reset: the reference's setter, validation, storage, side effects on persisted
//! state (features, tags) and the events, in the order a dom0 `admin.Events` subscriber sees
//! them (instance handlers first for pre-events, last for post-events: derived events come
//! before the post event that caused them, §9.1).

use super::defaults::{
    self, feature, get, has_prop, is_default, is_running, netvm_of, template_of, vm_prop,
    vm_prop_ref, vm_ref,
};
use super::defs::{self, Kind, PropDef, PropType, VmReq};
use super::value::{py_repr, sanitize, Sanitized, Val};
use super::{class_of, holder_name, table_of, Holder, ReadErr};
use crate::error::{ApiError, ExcType};
use crate::model::context::Ctx;
use crate::store::DomId;

/// A read where "no value" is an answer, not an error (the reference's `oldvalue` is present
/// only when the old value is readable).
fn readable(r: Result<Val, ReadErr>) -> Result<Option<Val>, ApiError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ReadErr::Unset) => Ok(None),
        Err(ReadErr::Api(e)) => Err(e),
    }
}

fn subject(ctx: &Ctx<'_>, h: Holder) -> String {
    match h {
        Holder::Global => String::new(),
        Holder::Vm(id) => ctx.doc().name(id).to_string(),
    }
}

fn emit_prop(
    ctx: &mut Ctx<'_>,
    subj: &str,
    event: &str,
    name: &str,
    new: Option<&Val>,
    old: Option<&Val>,
) {
    let new_s = new.map(Val::py_str);
    let old_s = old.map(Val::py_str);
    let mut kw: Vec<(&str, &str)> = vec![("name", name)];
    if let Some(n) = &new_s {
        kw.push(("newvalue", n));
    }
    if let Some(o) = &old_s {
        kw.push(("oldvalue", o));
    }
    ctx.emit(subj, format!("{event}:{name}"), &kw);
}

fn emit_reset_only(ctx: &mut Ctx<'_>, subj: &str, name: &str) {
    emit_prop(ctx, subj, "property-reset", name, None, None);
}

/// `Features.__setitem__`: always fires both events, even for an unchanged value.
fn set_feature(ctx: &mut Ctx<'_>, id: DomId, name: &str, value: &str) -> Result<(), ApiError> {
    let subj = ctx.doc().name(id).to_string();
    let old = feature(ctx, id, name).map(str::to_string);
    let ev = |pre: bool| format!("domain-feature-{}set:{name}", if pre { "pre-" } else { "" });
    let mut kw: Vec<(&str, &str)> = vec![("feature", name), ("value", value)];
    if let Some(o) = &old {
        kw.push(("oldvalue", o));
    }
    ctx.emit(&subj, ev(true), &kw);
    ctx.doc_mut()?.data_mut(id)?.set_feature(name, value);
    ctx.emit(&subj, ev(false), &kw);
    Ok(())
}

fn del_feature(ctx: &mut Ctx<'_>, id: DomId, name: &str) -> Result<(), ApiError> {
    let subj = ctx.doc().name(id).to_string();
    ctx.emit(
        &subj,
        format!("domain-feature-pre-delete:{name}"),
        &[("feature", name)],
    );
    ctx.doc_mut()?.data_mut(id)?.remove_feature(name);
    ctx.emit(
        &subj,
        format!("domain-feature-delete:{name}"),
        &[("feature", name)],
    );
    Ok(())
}

fn add_tag(ctx: &mut Ctx<'_>, id: DomId, tag: &str) -> Result<(), ApiError> {
    if ctx.doc_mut()?.data_mut(id)?.add_tag(tag) {
        let subj = ctx.doc().name(id).to_string();
        ctx.emit(&subj, format!("domain-tag-add:{tag}"), &[("tag", tag)]);
    }
    Ok(())
}

fn remove_tag(ctx: &mut Ctx<'_>, id: DomId, tag: &str) -> Result<(), ApiError> {
    if ctx.doc_mut()?.data_mut(id)?.remove_tag(tag) {
        let subj = ctx.doc().name(id).to_string();
        ctx.emit(&subj, format!("domain-tag-delete:{tag}"), &[("tag", tag)]);
    }
    Ok(())
}

fn tags_with_prefix(ctx: &Ctx<'_>, id: DomId, prefix: &str) -> Result<Vec<String>, ApiError> {
    Ok(ctx
        .doc()
        .data(id)?
        .tags()
        .into_iter()
        .filter(|t| t.starts_with(prefix))
        .map(str::to_string)
        .collect())
}

/// GUI extension: exactly one `guivm-<name>` tag, kept if already right.
pub fn retag_guivm(ctx: &mut Ctx<'_>, id: DomId, new: Option<&str>) -> Result<(), ApiError> {
    let want = new.map(|n| format!("guivm-{n}"));
    let mut found = false;
    for t in tags_with_prefix(ctx, id, "guivm-")? {
        if want.as_deref() == Some(t.as_str()) {
            found = true;
        } else {
            remove_tag(ctx, id, &t)?;
        }
    }
    match want {
        Some(w) if !found => add_tag(ctx, id, &w),
        _ => Ok(()),
    }
}

/// Audio extension: drops every `audiovm-*` tag, then adds the current one.
pub fn retag_audiovm(ctx: &mut Ctx<'_>, id: DomId, new: Option<&str>) -> Result<(), ApiError> {
    for t in tags_with_prefix(ctx, id, "audiovm-")? {
        remove_tag(ctx, id, &t)?;
    }
    match new {
        Some(n) => add_tag(ctx, id, &format!("audiovm-{n}")),
        None => Ok(()),
    }
}

/// VMs whose effective netvm is `id`.
fn connected_vms(ctx: &Ctx<'_>, id: DomId) -> Vec<DomId> {
    ctx.doc()
        .domains()
        .into_iter()
        .filter(|vm| netvm_of(ctx, *vm, 0) == Some(id))
        .collect()
}

/// `get_vms_connected_to`: everything whose netvm chain reaches `id`.
fn connected_to(ctx: &Ctx<'_>, id: DomId) -> Vec<DomId> {
    let mut todo = vec![id];
    let mut seen: Vec<DomId> = Vec::new();
    while let Some(cur) = todo.pop() {
        for vm in connected_vms(ctx, cur) {
            if !seen.contains(&vm) {
                seen.push(vm);
                todo.push(vm);
            }
        }
    }
    seen
}

/// Whether the VM's property `name` reads as true (false when its class lacks it or it is
/// unreadable).
fn prop_truthy(ctx: &Ctx<'_>, id: DomId, name: &str) -> bool {
    vm_prop(ctx, id, name, 0).is_ok_and(|v| v.truthy())
}

fn prop_is_default(ctx: &Ctx<'_>, id: DomId, name: &str) -> bool {
    let Ok(t) = table_of(ctx, Holder::Vm(id)) else {
        return false;
    };
    defs::find(t, name).is_some_and(|(_, d)| is_default(ctx, Holder::Vm(id), d).unwrap_or(false))
}

/// VMs that have property `name` at its default.
fn vms_with_default(ctx: &Ctx<'_>, name: &str) -> Vec<DomId> {
    ctx.doc()
        .domains()
        .into_iter()
        .filter(|vm| has_prop(ctx, *vm, name) && prop_is_default(ctx, *vm, name))
        .collect()
}

fn pv_err(msg: impl Into<String>) -> ApiError {
    ApiError::property_value(msg)
}

fn positive(name: &str, v: i64, zero_ok: bool) -> Result<Val, ApiError> {
    if v < 0 || (v == 0 && !zero_ok) {
        let what = if zero_ok {
            "must be positive or zero"
        } else {
            "must be positive"
        };
        return Err(pv_err(format!("{name} {what}")));
    }
    Ok(Val::Int(v))
}

/// `qubes.app.validate_kernel`.
fn validate_kernel(ctx: &Ctx<'_>, kernel: &str) -> Result<(), ApiError> {
    if kernel.is_empty() {
        return Ok(());
    }
    let dir = ctx.config.base_dir.join("vm-kernels").join(kernel);
    if !dir.exists() {
        return Err(pv_err(format!("Kernel {} not installed", py_repr(kernel))));
    }
    if !dir.join("vmlinuz").exists() {
        return Err(pv_err(format!(
            "Kernel {} not properly installed: missing 'vmlinuz' file",
            py_repr(kernel)
        )));
    }
    Ok(())
}

/// `_setter_label`: `label-N` by index, else `get_label` (name, then index).
fn label_value(ctx: &Ctx<'_>, text: &str) -> Result<Val, ApiError> {
    let labels = ctx.doc().labels();
    let label = match text.strip_prefix("label-") {
        // The reference names the index alone (`Label does not exist: 99`); it crashes (no
        // reply) when the index is not a number, where we say not found.
        Some(n) => crate::model::labels::resolve_vm_label(labels, text).ok_or_else(|| {
            ApiError::new(
                ExcType::QubesLabelNotFoundError,
                format!("Label does not exist: {n}"),
            )
        })?,
        None => crate::model::labels::lookup(labels, text)?,
    };
    Ok(Val::Text(label.name.clone()))
}

fn disposable_template_check(
    ctx: &Ctx<'_>,
    h: Holder,
    name: &str,
    v: &Val,
) -> Result<(), ApiError> {
    let Some(target) = vm_ref(ctx, v) else {
        return Ok(());
    };
    let ok = prop_truthy(ctx, target, "template_for_dispvms");
    if ok {
        return Ok(());
    }
    let who = match h {
        Holder::Global => "system".to_string(),
        Holder::Vm(id) => format!("qube {}", py_repr(ctx.doc().name(id))),
    };
    Err(pv_err(format!(
        "Cannot set invalid property to {who}, {name} {} has template_for_dispvms set to False",
        py_repr(ctx.doc().name(target))
    )))
}

fn netvm_check(ctx: &Ctx<'_>, id: DomId, v: &Val) -> Result<(), ApiError> {
    let Some(target) = vm_ref(ctx, v) else {
        return Ok(());
    };
    if !prop_truthy(ctx, target, "provides_network") {
        return Err(ApiError::value(format!(
            "The {} qube does not provide network",
            ctx.doc().name(target)
        )));
    }
    if target == id || connected_to(ctx, id).contains(&target) {
        return Err(ApiError::value("Loops in network are unsupported"));
    }
    Ok(())
}

/// Pre-set checks of a VM's netvm (`on_property_pre_set_netvm`, runtime part only).
fn netvm_pre_set(ctx: &Ctx<'_>, id: DomId, new: &Val) -> Result<(), ApiError> {
    if let Some(t) = vm_ref(ctx, new) {
        if is_running(ctx, id)? && !is_running(ctx, t)? {
            return Err(ApiError::new(
                ExcType::QubesVMNotStartedError,
                format!(
                    "Cannot dynamically attach to stopped qube {}",
                    ctx.doc().name(t)
                ),
            ));
        }
    }
    Ok(())
}

fn not_halted_template(ctx: &Ctx<'_>, id: DomId) -> Result<(), ApiError> {
    if is_running(ctx, id)? {
        return Err(ApiError::new(
            ExcType::QubesVMNotHaltedError,
            "Cannot change template while qube is running",
        ));
    }
    Ok(())
}

/// `template_for_dispvms` pre-set/pre-reset: refuse turning it off while in use.
fn dvm_template_off_check(ctx: &Ctx<'_>, id: DomId, new: bool, old: bool) -> Result<(), ApiError> {
    if new || !old {
        return Ok(());
    }
    let me = ctx.doc().name(id);
    let is_me = |v: Result<Val, ReadErr>| {
        v.ok()
            .and_then(|v| v.vm().map(|n| n == me))
            .unwrap_or(false)
    };
    let in_use_err = |m: &str| ApiError::new(ExcType::QubesVMInUseError, m);
    if ["default_dispvm", "management_dispvm"]
        .iter()
        .any(|p| is_me(defaults::global_prop(ctx, p)))
    {
        return Err(in_use_err("Cannot change template_for_dispvms to False while it is in use by the system by any of these properties: default_dispvm, management_dispvm"));
    }
    for vm in ctx.doc().domains() {
        if vm == id {
            continue;
        }
        for p in ["default_dispvm", "management_dispvm", "template"] {
            if has_prop(ctx, vm, p) && !prop_is_default(ctx, vm, p) && is_me(vm_prop(ctx, vm, p, 0))
            {
                return Err(in_use_err("Cannot change template_for_dispvms to False while it is the disposable template of a qube by any of these properties: default_dispvm, management_dispvm, template"));
            }
        }
    }
    Ok(())
}

/// Resolves a sanitized VM name (§4.2 "VM-valued assignment").
fn resolve_vm(
    ctx: &Ctx<'_>,
    h: Holder,
    def: &PropDef,
    req: VmReq,
    allow_none: bool,
    name: &str,
) -> Result<Val, ApiError> {
    if name.is_empty() {
        if allow_none {
            return Ok(Val::None);
        }
        return Err(pv_err(format!(
            "Invalid value None for property {} of {}",
            py_repr(def.name),
            holder_name(ctx, h)
        )));
    }
    let Some(id) = ctx.doc().domain_by_name(name) else {
        return Err(pv_err(format!(
            "Can't set {} to non-existing qube {name}",
            def.name
        )));
    };
    let class = ctx.doc().class(id);
    let (ok, want) = match req {
        VmReq::Local => (class != "RemoteVM", "LocalVM"),
        VmReq::TemplateVM => (class == "TemplateVM", "TemplateVM"),
    };
    if !ok {
        return Err(pv_err(format!(
            "wrong VM class: domains[{}] is of type {class} and not {want}",
            py_repr(name)
        )));
    }
    Ok(Val::Vm(name.to_string()))
}

/// The class setter: validation and coercion of a sanitized value.
fn convert(ctx: &Ctx<'_>, h: Holder, def: &PropDef, s: Sanitized) -> Result<Val, ApiError> {
    let name = def.name;
    let vm_id = match h {
        Holder::Vm(id) => Some(id),
        Holder::Global => None,
    };
    if let (PropType::Vm(req, none), Sanitized::VmName(n)) = (def.ty, &s) {
        let v = resolve_vm(ctx, h, def, req, none, n)?;
        match (name, vm_id) {
            ("netvm", Some(id)) => netvm_check(ctx, id, &v)?,
            ("default_dispvm" | "management_dispvm", _) => {
                disposable_template_check(ctx, h, name, &v)?
            }
            ("template", Some(id)) if ctx.doc().class(id) == "DispVM" => {
                let t = vm_ref(ctx, &v);
                let ok = t.is_some_and(|t| prop_truthy(ctx, t, "template_for_dispvms"));
                if !ok {
                    return Err(pv_err(
                        "template for disposable must have template_for_dispvms=True",
                    ));
                }
            }
            ("default_netvm", None) => {
                if let Some(t) = vm_ref(ctx, &v) {
                    for vm in vms_with_default(ctx, "netvm") {
                        if vm == t || connected_to(ctx, vm).contains(&t) {
                            return Err(pv_err(format!(
                                "Network loop on {}",
                                py_repr(ctx.doc().name(vm))
                            )));
                        }
                    }
                }
            }
            _ => {}
        }
        return Ok(v);
    }
    let text = match &s {
        Sanitized::Text(t) => t.clone(),
        other => other.py_str(),
    };
    Ok(match (name, s) {
        ("label", _) => label_value(ctx, &text)?,
        ("kernel", _) => {
            if text.contains('/') {
                return Err(pv_err("Kernel name cannot contain '/'"));
            }
            Val::Text(text)
        }
        ("kernelopts", _) => {
            if text.len() > 512 {
                return Err(pv_err("Kernelopts value too long (512 chars max)"));
            }
            Val::Text(text)
        }
        ("default_user", _) => {
            const OK: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+,.";
            if !text.chars().all(|c| OK.contains(c)) {
                return Err(pv_err(format!(
                    "Username can contain only those characters: {OK}"
                )));
            }
            Val::Text(text)
        }
        ("devices_denied", _) => Val::Text(denied_list(&text)?),
        ("virt_mode", _) => {
            let m = text.to_ascii_lowercase();
            if !matches!(m.as_str(), "hvm" | "pv" | "pvh") {
                return Err(pv_err(
                    "Invalid virtualization mode, supported values: hvm, pv, pvh",
                ));
            }
            Val::Text(m)
        }
        ("keyboard_layout", _) => Val::Text(keyboard_layout(&text)?),
        ("mac", _) => {
            let m = text.to_ascii_lowercase();
            let ok = m.len() == 17
                && m.bytes().enumerate().all(|(i, b)| {
                    if i % 3 == 2 {
                        b == b':'
                    } else {
                        b.is_ascii_hexdigit()
                    }
                });
            if !ok {
                // The reference raises a plain ValueError here (no reply).
                return Err(ApiError::value("Invalid MAC address value"));
            }
            Val::Text(m)
        }
        (
            "default_pool"
            | "default_pool_kernel"
            | "default_pool_private"
            | "default_pool_root"
            | "default_pool_volatile",
            _,
        ) => {
            if !ctx.doc().pools().iter().any(|p| p.name == text) {
                return Err(pv_err("No such storage pool"));
            }
            Val::Text(text)
        }
        ("qid", Sanitized::Int(i)) => {
            if !(0..=10000).contains(&i) {
                // The reference raises a plain ValueError here (no reply).
                return Err(ApiError::value(
                    "qid value must be between 0 and qubes.config.max_qid",
                ));
            }
            Val::Int(i)
        }
        (
            "memory" | "vcpus" | "qrexec_timeout" | "shutdown_timeout" | "stubdom_mem",
            Sanitized::Int(i),
        ) if vm_id.is_some() => positive(name, i, false)?,
        ("maxmem", Sanitized::Int(i)) if vm_id.is_some() => positive(name, i, true)?,
        ("provides_network", Sanitized::Bool(b)) => {
            if let (false, Some(id)) = (b, vm_id) {
                if !connected_vms(ctx, id).is_empty() {
                    return Err(ApiError::value(
                        "The qube is still used by other qubes, change theirs 'netvm' first",
                    ));
                }
            }
            Val::Bool(b)
        }
        (_, Sanitized::Int(i)) => Val::Int(i),
        (_, Sanitized::Bool(b)) => Val::Bool(b),
        (_, _) => Val::Text(text),
    })
}

/// `_setter_denied_list`: 7-char interface codes, de-duplicated and sorted.
fn denied_list(text: &str) -> Result<String, ApiError> {
    if text.is_empty() {
        return Ok(String::new());
    }
    if !text.len().is_multiple_of(7) {
        return Err(ApiError::value(format!(
            "Invalid length of interfaces={} (is {}, expected multiple of 7)",
            py_repr(text),
            text.len()
        )));
    }
    let mut codes: Vec<&str> = (0..text.len() / 7)
        .filter_map(|i| text.get(i * 7..i * 7 + 7))
        .collect();
    codes.sort_unstable();
    codes.dedup();
    let ok = codes.iter().all(|c| {
        let b = c.as_bytes();
        b.first().is_some_and(|f| b"bump*".contains(f))
            && b.iter().skip(1).all(|x| b"0123456789abcdef*".contains(x))
    });
    if !ok {
        return Err(pv_err("Interface code list should be in the form chhhhhhchhhhhh...,where c is one of \"b\", \"u\", \"m\", \"p\", \"*\" and h is a hexdigit or \"*\"."));
    }
    Ok(codes.concat())
}

/// `_setter_kbd_layout`.
fn keyboard_layout(text: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = text.split('+').collect();
    let [layout, variant, options] = parts.as_slice() else {
        return Err(pv_err("invalid number of keyboard layout parameters"));
    };
    if layout.is_empty() || !layout.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(pv_err("Invalid keyboard layout provided"));
    }
    if !variant
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(pv_err("Invalid layout variant provided"));
    }
    if !options
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b','))
    {
        return Err(pv_err("Invalid layout options provided"));
    }
    Ok(text.to_string())
}

/// Refusals common to Set and Reset.
fn cannot_set(ctx: &Ctx<'_>, h: Holder, def: &PropDef) -> ApiError {
    pv_err(format!(
        "property {} on {} instance cannot be set",
        py_repr(def.name),
        class_of(ctx, h)
    ))
}

/// Write-once properties with a stored value: the reference raises a plain AttributeError (no
/// reply); we answer `QubesPropertyValueError` (the client's class for a refused value).
fn write_once_err(def: &PropDef) -> ApiError {
    pv_err(format!(
        "property {} is write-once and cannot be changed",
        py_repr(def.name)
    ))
}

fn store(ctx: &mut Ctx<'_>, h: Holder, def: &PropDef, v: &Val) -> Result<(), ApiError> {
    let table = table_of(ctx, h)?;
    let rank = |n: &str| defs::rank(table, n);
    let text = v.stored_text();
    match h {
        Holder::Global => ctx.doc_mut()?.set_global_property(def.name, &text, &rank),
        Holder::Vm(id) => ctx
            .doc_mut()?
            .data_mut(id)?
            .set_property(def.name, &text, &rank),
    }
    Ok(())
}

fn unstore(ctx: &mut Ctx<'_>, h: Holder, def: &PropDef) -> Result<(), ApiError> {
    match h {
        Holder::Global => {
            ctx.doc_mut()?.reset_global_property(def.name);
        }
        Holder::Vm(id) => {
            ctx.doc_mut()?.data_mut(id)?.reset_property(def.name);
        }
    }
    Ok(())
}

/// Properties whose TemplateVM value AppVMs inherit (`on_property_set_child`).
const TEMPLATE_CHILD_PROPS: &[&str] = &[
    "default_user",
    "kernel",
    "kernelopts",
    "vcpus",
    "memory",
    "maxmem",
    "qrexec_timeout",
    "shutdown_timeout",
    "management_dispvm",
];

fn appvms_of(ctx: &Ctx<'_>, id: DomId) -> Vec<DomId> {
    ctx.doc()
        .domains()
        .into_iter()
        .filter(|vm| template_of(ctx, *vm, 0) == Some(id))
        .collect()
}

/// admin.*.property.Set after the existence check.
pub fn set(
    ctx: &mut Ctx<'_>,
    h: Holder,
    def: &'static PropDef,
    payload: &[u8],
) -> Result<(), ApiError> {
    let s = sanitize(def.ty, payload)?;
    if matches!(def.kind, Kind::Stateless | Kind::Forbidden) {
        return Err(cannot_set(ctx, h, def));
    }
    if def.kind == Kind::WriteOnce && !is_default(ctx, h, def)? {
        return Err(write_once_err(def));
    }
    let old = readable(get(ctx, h, def))?;
    let new = convert(ctx, h, def, s)?;
    let subj = subject(ctx, h);
    let name = def.name;
    let changed = old.as_ref() != Some(&new);
    let old_or_none = old.clone().unwrap_or(Val::None);

    // Pre-set: the subscriber sees the event first, then the class handlers may veto.
    emit_prop(
        ctx,
        &subj,
        "property-pre-set",
        name,
        Some(&new),
        old.as_ref(),
    );
    match (h, name) {
        (Holder::Vm(id), "netvm") => netvm_pre_set(ctx, id, &new)?,
        (Holder::Vm(id), "template") => {
            not_halted_template(ctx, id)?;
        }
        (Holder::Vm(id), "template_for_dispvms") => {
            dvm_template_off_check(ctx, id, new.truthy(), old_or_none.truthy())?
        }
        (Holder::Vm(id), "maxmem") if changed && is_running(ctx, id)? => {
            return Err(ApiError::new(
                ExcType::QubesVMNotHaltedError,
                format!("Can't change maxmem of VM {}, because it isn't Halted and memory hotplug is forbidden", ctx.doc().name(id)),
            ));
        }
        (Holder::Vm(_), "kernel") | (Holder::Global, "default_kernel") => {
            validate_kernel(ctx, &new.reply_str())?
        }
        (Holder::Global, "clockvm") => {
            if let Some(t) = vm_ref(ctx, &new) {
                if feature(ctx, t, "service.clocksync").is_none() {
                    set_feature(ctx, t, "service.clocksync", "1")?;
                }
            }
        }
        (Holder::Global, "default_netvm") => {
            for vm in vms_with_default(ctx, "netvm") {
                let vs = ctx.doc().name(vm).to_string();
                emit_prop(
                    ctx,
                    &vs,
                    "property-pre-set",
                    "netvm",
                    Some(&new),
                    Some(&old_or_none),
                );
                netvm_pre_set(ctx, vm, &new)?;
            }
        }
        _ => {}
    }

    store(ctx, h, def, &new)?;

    // Post-set: class and extension handlers first, the subscriber's event last.
    match h {
        Holder::Vm(id) => post_set_vm(ctx, id, name, &new, &old_or_none, changed)?,
        Holder::Global => post_set_global(ctx, name, &new, &old_or_none, changed)?,
    }
    emit_prop(ctx, &subj, "property-set", name, Some(&new), old.as_ref());
    Ok(())
}

fn post_set_vm(
    ctx: &mut Ctx<'_>,
    id: DomId,
    name: &str,
    new: &Val,
    old: &Val,
    changed: bool,
) -> Result<(), ApiError> {
    let subj = ctx.doc().name(id).to_string();
    match name {
        // The AdminVM's icon is fixed (`adminvm-black`): nothing to reset.
        "label" | "template_for_dispvms" if ctx.doc().class(id) != "AdminVM" => {
            emit_reset_only(ctx, &subj, "icon")
        }
        "provides_network" => {
            servicevm_feature(ctx, id)?;
            if changed {
                emit_reset_only(ctx, &subj, "gateway");
                emit_reset_only(ctx, &subj, "gateway6");
            }
        }
        "guivm" => retag_guivm(ctx, id, new.vm())?,
        "audiovm" => retag_audiovm(ctx, id, new.vm())?,
        "ip" | "ip6" if changed => ip_changed(ctx, id, name == "ip6")?,
        "keyboard_layout" if changed => {
            for vm in ctx.doc().domains() {
                let uses = vm_prop_ref(ctx, vm, "guivm", 0) == Some(id);
                if uses && prop_is_default(ctx, vm, "keyboard_layout") {
                    let vs = ctx.doc().name(vm).to_string();
                    emit_prop(
                        ctx,
                        &vs,
                        "property-reset",
                        "keyboard_layout",
                        None,
                        Some(old),
                    );
                }
            }
        }
        "appvm_default_bootmode" if changed => bootmode_children(ctx, id),
        _ => {}
    }
    if ctx.doc().class(id) == "TemplateVM" && changed && TEMPLATE_CHILD_PROPS.contains(&name) {
        for vm in appvms_of(ctx, id) {
            if prop_is_default(ctx, vm, name) {
                let vs = ctx.doc().name(vm).to_string();
                emit_reset_only(ctx, &vs, name);
            }
        }
    }
    Ok(())
}

fn bootmode_children(ctx: &mut Ctx<'_>, id: DomId) {
    for vm in appvms_of(ctx, id) {
        if prop_is_default(ctx, vm, "bootmode") {
            let vs = ctx.doc().name(vm).to_string();
            emit_reset_only(ctx, &vs, "bootmode");
        }
    }
}

fn ip_changed(ctx: &mut Ctx<'_>, id: DomId, v6: bool) -> Result<(), ApiError> {
    let subj = ctx.doc().name(id).to_string();
    let sfx = if v6 { "6" } else { "" };
    if prop_truthy(ctx, id, "provides_network") {
        emit_reset_only(ctx, &subj, &format!("gateway{sfx}"));
    }
    emit_reset_only(ctx, &subj, &format!("visible_ip{sfx}"));
    for vm in connected_vms(ctx, id) {
        let vs = ctx.doc().name(vm).to_string();
        emit_reset_only(ctx, &vs, &format!("visible_gateway{sfx}"));
    }
    Ok(())
}

/// Core-features extension: feature `servicevm` follows provides_network.
fn servicevm_feature(ctx: &mut Ctx<'_>, id: DomId) -> Result<(), ApiError> {
    let subj = ctx.doc().name(id).to_string();
    if prop_truthy(ctx, id, "provides_network") {
        set_feature(ctx, id, "servicevm", "1")?;
        emit_reset_only(ctx, &subj, "icon");
    } else if feature(ctx, id, "servicevm").is_some() {
        del_feature(ctx, id, "servicevm")?;
        emit_reset_only(ctx, &subj, "icon");
    }
    Ok(())
}

fn post_set_global(
    ctx: &mut Ctx<'_>,
    name: &str,
    new: &Val,
    old: &Val,
    changed: bool,
) -> Result<(), ApiError> {
    match name {
        "clockvm" if changed => {
            if let Some(o) = vm_ref(ctx, old) {
                if feature(ctx, o, "service.clocksync").is_some_and(|v| !v.is_empty()) {
                    del_feature(ctx, o, "service.clocksync")?;
                }
            }
        }
        "default_netvm" => {
            for vm in vms_with_default(ctx, "netvm") {
                let vs = ctx.doc().name(vm).to_string();
                let now = vm_prop(ctx, vm, "netvm", 0).unwrap_or(Val::None);
                if &now != old {
                    emit_prop(ctx, &vs, "property-set", "netvm", Some(&now), Some(old));
                }
                emit_prop(ctx, &vs, "property-reset", "netvm", None, Some(old));
            }
        }
        "default_dispvm" => default_dispvm_children(ctx, old),
        "default_guivm" | "default_audiovm" => {
            let prop = if name == "default_guivm" {
                "guivm"
            } else {
                "audiovm"
            };
            for vm in vms_with_default(ctx, prop) {
                if prop == "guivm" {
                    retag_guivm(ctx, vm, new.vm())?;
                } else {
                    retag_audiovm(ctx, vm, new.vm())?;
                }
                let vs = ctx.doc().name(vm).to_string();
                emit_prop(ctx, &vs, "property-set", prop, Some(new), Some(old));
            }
        }
        _ => {}
    }
    Ok(())
}

fn default_dispvm_children(ctx: &mut Ctx<'_>, old: &Val) {
    for vm in vms_with_default(ctx, "default_dispvm") {
        let vs = ctx.doc().name(vm).to_string();
        emit_prop(
            ctx,
            &vs,
            "property-reset",
            "default_dispvm",
            None,
            Some(old),
        );
    }
}

/// admin.*.property.Reset after the existence check.
pub fn reset(ctx: &mut Ctx<'_>, h: Holder, def: &'static PropDef) -> Result<(), ApiError> {
    if def.kind == Kind::WriteOnce && !is_default(ctx, h, def)? {
        return Err(write_once_err(def));
    }
    let old = readable(get(ctx, h, def))?;
    let subj = subject(ctx, h);
    let name = def.name;
    let old_or_none = old.clone().unwrap_or(Val::None);

    emit_prop(ctx, &subj, "property-pre-reset", name, None, old.as_ref());
    if let Holder::Vm(id) = h {
        match name {
            "template" if ctx.doc().class(id) == "AppVM" => {
                let dflt = defaults::global_prop(ctx, "default_template")
                    .ok()
                    .and_then(|v| v.vm().map(str::to_string));
                return Err(ApiError::value(match dflt {
                    Some(t) => format!("Cannot unset template. You can set it to the current default ({t}) instead"),
                    None => "Cannot unset template".to_string(),
                }));
            }
            "template" => return Err(ApiError::value("Cannot unset template")),
            "template_for_dispvms" => dvm_template_off_check(ctx, id, false, old_or_none.truthy())?,
            "netvm" => {
                let new = readable(defaults::default_of(ctx, h, def))?.unwrap_or(Val::None);
                netvm_check(ctx, id, &new)?;
                if new != old_or_none {
                    emit_prop(
                        ctx,
                        &subj,
                        "property-pre-set",
                        "netvm",
                        Some(&new),
                        Some(&old_or_none),
                    );
                    netvm_pre_set(ctx, id, &new)?;
                }
            }
            _ => {}
        }
    }
    emit_prop(ctx, &subj, "property-pre-del", name, None, old.as_ref());
    if def.kind != Kind::Stateless {
        unstore(ctx, h, def)?;
    }
    let now = get(ctx, h, def).ok();
    match h {
        Holder::Vm(id) => match name {
            "netvm" => {
                let now = now.clone().unwrap_or(Val::None);
                if now != old_or_none {
                    emit_prop(
                        ctx,
                        &subj,
                        "property-set",
                        "netvm",
                        Some(&now),
                        Some(&old_or_none),
                    );
                }
            }
            "provides_network" => servicevm_feature(ctx, id)?,
            "guivm" => retag_guivm(ctx, id, now.as_ref().and_then(Val::vm))?,
            "audiovm" => retag_audiovm(ctx, id, now.as_ref().and_then(Val::vm))?,
            "ip" if old.is_some() && old != Some(Val::None) => ip_changed(ctx, id, false)?,
            "appvm_default_bootmode" => bootmode_children(ctx, id),
            _ => {}
        },
        Holder::Global => {
            if name == "default_dispvm" {
                default_dispvm_children(ctx, &old_or_none);
            }
        }
    }
    emit_prop(ctx, &subj, "property-reset", name, None, old.as_ref());
    emit_prop(ctx, &subj, "property-del", name, None, old.as_ref());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn denied_list_normalises() {
        assert_eq!(denied_list("u03****p0201**").unwrap(), "p0201**u03****");
        assert_eq!(denied_list("u03****u03****").unwrap(), "u03****");
        assert_eq!(denied_list("").unwrap(), "");
        assert_eq!(
            denied_list("u03").unwrap_err().msg,
            "Invalid length of interfaces='u03' (is 3, expected multiple of 7)"
        );
        assert_eq!(
            denied_list("x000000").unwrap_err().ty,
            ExcType::QubesPropertyValueError
        );
    }

    #[test]
    fn keyboard_layouts() {
        assert_eq!(keyboard_layout("us++").unwrap(), "us++");
        assert_eq!(
            keyboard_layout("de+nodeadkeys+grp:alt_shift_toggle").unwrap(),
            "de+nodeadkeys+grp:alt_shift_toggle"
        );
        assert_eq!(
            keyboard_layout("us+").unwrap_err().msg,
            "invalid number of keyboard layout parameters"
        );
        assert_eq!(
            keyboard_layout("+x+").unwrap_err().msg,
            "Invalid keyboard layout provided"
        );
        assert_eq!(
            keyboard_layout("us+a b+").unwrap_err().msg,
            "Invalid layout variant provided"
        );
        assert_eq!(
            keyboard_layout("us++a b").unwrap_err().msg,
            "Invalid layout options provided"
        );
    }

    #[test]
    fn int_ranges() {
        assert_eq!(
            positive("memory", 0, false).unwrap_err().msg,
            "memory must be positive"
        );
        assert_eq!(
            positive("maxmem", -1, true).unwrap_err().msg,
            "maxmem must be positive or zero"
        );
        assert_eq!(positive("maxmem", 0, true).unwrap(), Val::Int(0));
    }
}
