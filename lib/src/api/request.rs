//! Parse, then execute: resolves a [`RawRequest`] against qubes.xml, running the reference's
//! generic checks in its order (source, destination, argument, method, then payload → argument
//! → destination class; `core.md` §2.3–2.4). The bytes were parsed by the wire layer.

use super::table::{self, DestRule, Endpoint, Method, Presence};
use crate::error::ApiError;
use crate::model::context::Call;
use crate::store::{Document, DomId};
use crate::wire::vm_ref::{ascii, parse_vm_ref, VmRef};
use crate::wire::{RawRequest, Target};

/// Looks a reference up in the document.
pub fn resolve(doc: &Document, r: &VmRef) -> Result<DomId, ApiError> {
    match r {
        VmRef::Name(n) => doc
            .domain_by_name(n)
            .ok_or_else(|| ApiError::vm_not_found(n)),
        VmRef::Uuid { uuid, text } => doc
            .domain_by_uuid(uuid)
            .ok_or_else(|| ApiError::vm_not_found(text)),
    }
}

fn resolve_target(doc: &Document, t: &Target) -> Result<DomId, ApiError> {
    match t {
        Target::Name(n) => resolve(doc, &parse_vm_ref(n)?),
        Target::Keyword(k) if k.as_slice() == b"adminvm" => doc
            .domain_by_name("dom0")
            .ok_or_else(|| ApiError::vm_not_found("dom0")),
        Target::Keyword(k) => Err(ApiError::protocol(format!(
            "unsupported target keyword '@{}'; only '@adminvm' is accepted",
            String::from_utf8_lossy(k)
        ))),
    }
}

/// A request whose source, destination, method and argument are resolved and checked.
pub struct Resolved {
    pub method: &'static Method,
    pub src: DomId,
    pub dest: DomId,
    pub arg: String,
}

impl Resolved {
    /// The call a handler sees.
    pub fn into_call(self, payload: Vec<u8>) -> Call {
        Call {
            method: self.method.name,
            src: self.src,
            dest: self.dest,
            arg: self.arg,
            payload,
        }
    }
}

/// Resolves and runs the generic checks, in the reference's order. Only the methods
/// `endpoint` serves exist.
pub fn resolve_request(
    doc: &Document,
    raw: &RawRequest,
    endpoint: Endpoint,
) -> Result<Resolved, ApiError> {
    let src = resolve(doc, &parse_vm_ref(&raw.src)?)?;
    let dest = resolve_target(doc, &raw.target)?;
    let arg = ascii(&raw.arg, "argument")?.to_string();
    let name = ascii(&raw.method, "method name")?;
    let method = table::find_on(endpoint, name)
        .ok_or_else(|| ApiError::protocol(format!("no such method: '{name}'")))?;
    check_generic(doc, method, dest, &arg, &raw.payload)?;
    Ok(Resolved {
        method,
        src,
        dest,
        arg,
    })
}

fn check_generic(
    doc: &Document,
    method: &Method,
    dest: DomId,
    arg: &str,
    payload: &[u8],
) -> Result<(), ApiError> {
    match method.payload {
        Presence::Required if payload.is_empty() => {
            return Err(ApiError::protocol("expected payload"))
        }
        Presence::Forbidden if !payload.is_empty() => {
            return Err(ApiError::protocol("unexpected payload"))
        }
        _ => {}
    }
    match method.arg {
        Presence::Required if arg.is_empty() => {
            return Err(ApiError::protocol("expected an argument"))
        }
        Presence::Forbidden if !arg.is_empty() => {
            return Err(ApiError::protocol("unexpected argument"))
        }
        _ => {}
    }
    let is_admin = doc.is_admin(dest);
    match method.dest {
        DestRule::AdminVm if !is_admin => {
            Err(ApiError::protocol("expected destination to be AdminVM"))
        }
        DestRule::NotAdminVm if is_admin => {
            Err(ApiError::protocol("expected destination to not be AdminVM"))
        }
        _ => Ok(()),
    }
}

/// The reference's `enforce(dest.name == "dom0")` and `enforce(not arg)` of the internal and
/// misc calls: `PermissionDenied`, where the Admin API's generic checks say `ProtocolError`.
pub fn enforce_dom0_without_arg(ctx: &crate::model::context::Ctx<'_>) -> Result<(), ApiError> {
    if !ctx.dest_is_admin() {
        return Err(ApiError::permission(format!(
            "{} is a call to dom0, not to {}",
            ctx.method,
            ctx.dest_name()
        )));
    }
    if !ctx.arg.is_empty() {
        return Err(ApiError::permission(format!(
            "{} takes no argument",
            ctx.method
        )));
    }
    Ok(())
}
