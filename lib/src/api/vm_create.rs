//! admin.vm.Create.<Class>, admin.vm.CreateInPool.<Class> (`core.md` §3.3) and
//! admin.vm.CreateDisposable (§3.4): one short transaction each, with the disk work inside it
//! (undone if the call fails, so a failed Create leaves nothing behind).

use crate::error::{ApiError, ExcType};
use crate::model::context::Ctx;
use crate::model::labels;
use crate::model::new_qube::{self, NewQube};
use crate::model::props::{defaults, value::Val};
use crate::model::tags;
use crate::model::volumes::{self, PoolChoice};
use crate::store::DomId;
use crate::wire::names;

/// The classes of the `qubes.vm` entry points: one `Create.<Class>` and one
/// `CreateInPool.<Class>` method each.
pub const CLASSES: &[&str] = &[
    "AdminVM",
    "AppVM",
    "DispVM",
    "RemoteVM",
    "StandaloneVM",
    "TemplateVM",
];

/// The `<Class>` of `admin.vm.Create.<Class>` / `admin.vm.CreateInPool.<Class>`.
fn class_of(method: &str) -> &str {
    method.rsplit('.').next().unwrap_or("")
}

fn has_template(class: &str) -> bool {
    matches!(class, "AppVM" | "DispVM")
}

/// The Create payload, parsed and validated (steps 2–6 of §3.3).
struct Params {
    name: String,
    label: String,
    choice: PoolChoice,
}

fn parse_params(ctx: &Ctx<'_>, allow_pool: bool) -> Result<Params, ApiError> {
    let payload = std::str::from_utf8(&ctx.payload)
        .ok()
        .filter(|p| p.is_ascii())
        .ok_or_else(|| ApiError::protocol("Parameters contains non-ASCII characters"))?;
    let (mut name, mut label) = (None, None);
    let mut choice = PoolChoice::default();
    for piece in payload.split(' ') {
        let Some((key, value)) = piece.split_once('=') else {
            // The reference's tuple unpacking raises ValueError: no reply at all.
            return Err(ApiError::no_reply_in_reference(format!(
                "malformed parameter {}: expected key=value, separated by single spaces",
                crate::wire::python::repr(piece)
            )));
        };
        if (key == "name" && name.is_some()) || (key == "label" && label.is_some()) {
            return Err(ApiError::protocol("Options must be unique"));
        }
        match key {
            "name" => {
                names::validate_vm_name(value)?;
                name = Some(value.to_string());
            }
            "label" => {
                names::validate_label_name(value, true)?;
                // An unknown label is dropped: "Creation requested without key: label" below.
                label = labels::lookup(ctx.doc().labels(), value)
                    .ok()
                    .map(|l| l.name.clone());
            }
            _ if (key == "pool" || key.starts_with("pool:")) && !allow_pool => {
                return Err(ApiError::protocol(
                    "Pool option specified but 'allow_pool' is False",
                ));
            }
            "pool" => {
                if choice.all.is_some() {
                    return Err(ApiError::protocol("Option 'pool' must be unique"));
                }
                choice.all = Some(value.to_string());
            }
            _ if key.starts_with("pool:") => {
                let volume = key.get("pool:".len()..).unwrap_or("");
                if !matches!(volume, "root" | "private" | "volatile" | "kernel") {
                    return Err(ApiError::protocol(
                        "Volume must be one of: root, private, volatile, kernel",
                    ));
                }
                if choice.per_volume.iter().any(|(v, _)| v == volume) {
                    return Err(ApiError::protocol(format!(
                        "Option 'pool:{volume}' must be unique"
                    )));
                }
                choice
                    .per_volume
                    .push((volume.to_string(), value.to_string()));
            }
            _ => {
                return Err(ApiError::protocol(
                    "Options does not match: name, label, pool, pool:",
                ))
            }
        }
    }
    let name = name.ok_or_else(|| ApiError::protocol("Creation requested without key: name"))?;
    let label = label.ok_or_else(|| ApiError::protocol("Creation requested without key: label"))?;
    if choice.all.is_some() && !choice.per_volume.is_empty() {
        return Err(ApiError::protocol(
            "Conflicting options specified: 'pool=', 'pool:volume='",
        ));
    }
    Ok(Params {
        name,
        label,
        choice,
    })
}

/// Whether a qube may be the template of a disposable (`template_for_dispvms`, None = false).
fn is_dispvm_template(ctx: &Ctx<'_>, id: DomId) -> bool {
    matches!(
        defaults::vm_prop(ctx, id, "template_for_dispvms", 0),
        Ok(Val::Bool(true))
    )
}

fn dispvm_template_error(ctx: &Ctx<'_>, t: DomId) -> ApiError {
    ApiError::value(format!(
        "template for disposable ({}) needs to be an AppVM with template_for_dispvms=True",
        ctx.doc().name(t)
    ))
}

pub fn create(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    create_qube(ctx, false)
}

pub fn create_in_pool(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    create_qube(ctx, true)
}

/// §3.3, in the reference's order; the reply is empty.
fn create_qube(ctx: &mut Ctx<'_>, allow_pool: bool) -> Result<Vec<u8>, ApiError> {
    let class = class_of(ctx.method).to_string();
    // 1. The template argument (an unknown one is reported after the other checks).
    if !ctx.arg.is_empty() && !has_template(&class) {
        return Err(ApiError::protocol(format!(
            "{class} cannot be based on template"
        )));
    }
    let template_arg = (!ctx.arg.is_empty()).then(|| ctx.arg.clone());
    let template = template_arg
        .as_deref()
        .and_then(|t| ctx.doc().domain_by_name(t));
    // 2–6. The payload.
    let p = parse_params(ctx, allow_pool)?;
    // 8–10. Name, template, pools.
    if ctx.doc().domain_by_name(&p.name).is_some() {
        return Err(ApiError::new(
            ExcType::QubesVMAlreadyExistsError,
            format!("Qube already exists: {}", p.name),
        ));
    }
    if let (Some(arg), None) = (&template_arg, template) {
        return Err(ApiError::vm_not_found(arg));
    }
    let pools = volumes::pools(ctx);
    volumes::check_pools_exist(&pools, &p.choice)?;
    // 11. The object: the class's constructor checks.
    if class == "AdminVM" {
        return Err(ApiError::property_value(
            "property 'qid' on AdminVM instance cannot be set",
        ));
    }
    let template = if has_template(&class) {
        let t = template.or_else(|| {
            defaults::global_vm(
                ctx,
                if class == "DispVM" {
                    "default_dispvm"
                } else {
                    "default_template"
                },
            )
        });
        let t = t.ok_or_else(|| {
            ApiError::value("Template for the qube not specified, nor default template set.")
        })?;
        if class == "DispVM" && !is_dispvm_template(ctx, t) {
            return Err(dispvm_template_error(ctx, t));
        }
        if class == "AppVM" && ctx.doc().class(t) != "TemplateVM" {
            return Err(ApiError::property_value(format!(
                "wrong VM class: domains[{}] is of type {} and not TemplateVM",
                crate::wire::python::repr(ctx.doc().name(t)),
                ctx.doc().class(t)
            )));
        }
        Some(t)
    } else {
        None
    };
    let dispid = if class == "DispVM" {
        Some(new_qube::new_dispid(ctx)?)
    } else {
        None
    };
    let q = NewQube {
        class: class.clone(),
        name: p.name,
        label: Some(p.label),
        template,
        dispid,
        auto_cleanup: false,
    };
    // 12–14. Added (domain-add), tagged, created on disk.
    let id = new_qube::add(ctx, &q)?;
    if let (Some(t), "DispVM") = (template, class.as_str()) {
        new_qube::copy_from_template(ctx, id, t)?;
    }
    let creator = ctx.doc().name(ctx.src).to_string();
    tags::add(ctx, id, &format!("{}{creator}", tags::CREATED_BY))?;
    new_qube::create_on_disk(ctx, id, &p.choice)?;
    if let (Some(t), "DispVM") = (template, class.as_str()) {
        new_qube::copy_firewall(ctx, id, t)?;
    }
    Ok(Vec::new())
}

/// `admin.vm.CreateDisposable`: a new `disp<N>` from the destination (dom0: the caller's
/// `default_dispvm`), removed when it stops (`auto_cleanup`); replies its name, or
/// `uuid:<uuid>` when the payload is `uuid`.
pub fn create_disposable(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let template = if ctx.dest_is_admin() {
        defaults::vm_prop_ref(ctx, ctx.src, "default_dispvm", 0)
    } else {
        Some(ctx.dest)
    };
    if !matches!(ctx.arg.as_str(), "" | "preload") {
        return Err(ApiError::permission("Argument not in \"'', 'preload'\""));
    }
    let want_uuid = match ctx.payload.as_slice() {
        b"" => false,
        b"uuid" => true,
        _ => {
            return Err(ApiError::protocol(
                "Invalid payload, expected empty string or 'uuid'",
            ))
        }
    };
    if ctx.arg == "preload" {
        // Preloading needs something that keeps disposables warm between calls; the
        // reference's in-process machinery has no home here yet.
        return Err(ApiError::qubes(
            "preloading disposables is not supported by this implementation yet",
        ));
    }
    let Some(template) = template.filter(|&t| is_dispvm_template(ctx, t)) else {
        return Err(ApiError::qubes(
            "Refusing to create disposable out of app qube which has template_for_dispvms=False",
        ));
    };
    let dispid = new_qube::new_dispid(ctx)?;
    let q = NewQube {
        class: "DispVM".to_string(),
        name: format!("disp{dispid}"),
        // Copied from the template with its other stored properties.
        label: None,
        template: Some(template),
        dispid: Some(dispid),
        auto_cleanup: true,
    };
    let id = new_qube::add(ctx, &q)?;
    new_qube::copy_from_template(ctx, id, template)?;
    new_qube::create_on_disk(ctx, id, &PoolChoice::default())?;
    new_qube::copy_firewall(ctx, id, template)?;
    // The reference adds these after its save; here they are part of the same transaction.
    let creator = ctx.doc().name(ctx.src).to_string();
    tags::add(ctx, id, &format!("{}{creator}", tags::CREATED_BY))?;
    tags::add(ctx, id, &format!("disp-created-by-{creator}"))?;
    let reply = if want_uuid {
        format!("uuid:{}", ctx.doc().uuid(id).unwrap_or_default())
    } else {
        q.name
    };
    Ok(reply.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::find;

    /// Every class has both Create methods; qrexec exposes them only for the four classes
    /// the reference installs services for.
    #[test]
    fn a_create_method_per_class() {
        for c in CLASSES {
            for m in ["admin.vm.Create", "admin.vm.CreateInPool"] {
                let row = find(&format!("{m}.{c}")).map(|r| r.qrexec);
                assert_eq!(row, Some(!matches!(*c, "AdminVM" | "RemoteVM")), "{m}.{c}");
            }
        }
        assert_eq!(class_of("admin.vm.CreateInPool.TemplateVM"), "TemplateVM");
    }
}
