//! Property definitions and semantics shared by admin.property.* and admin.vm.property.*.
//!
//! * [`defs`]: the static per-class tables (order, type, kind, help texts).
//! * [`value`]: typed values, Set payload sanitizing (§4.2) and stored-text parsing.
//! * [`defaults`]: reading a property: stored value, else its default rule.
//! * [`setters`]: assignment and reset: validation, storage, side effects and events.
//! * [`render`]: the reply formats.

pub mod defaults;
pub mod defs;
pub mod handlers;
pub mod render;
pub mod setters;
pub mod value;

use crate::context::Ctx;
use crate::error::{ApiError, ExcType};
use crate::store::DomId;

/// The object whose properties a call addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// The global `Qubes` object.
    Global,
    Vm(DomId),
}

/// Why a property could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadErr {
    /// No stored value and no (working) default: the reference's AttributeError, rendered as an
    /// empty value with `default=True`.
    Unset,
    /// A real failure (store, hypervisor).
    Api(ApiError),
}

impl From<ApiError> for ReadErr {
    fn from(e: ApiError) -> Self {
        ReadErr::Api(e)
    }
}

impl From<crate::store::StoreError> for ReadErr {
    fn from(e: crate::store::StoreError) -> Self {
        ReadErr::Api(e.into())
    }
}

/// Class name of a holder (`Qubes` for the global object).
pub fn class_of<'c>(ctx: &'c Ctx<'_>, h: Holder) -> &'c str {
    match h {
        Holder::Global => "Qubes",
        Holder::Vm(id) => ctx.doc().class(id),
    }
}

/// Name used in messages: the VM name, or `Qubes`.
pub fn holder_name<'c>(ctx: &'c Ctx<'_>, h: Holder) -> &'c str {
    match h {
        Holder::Global => "Qubes",
        Holder::Vm(id) => ctx.doc().name(id),
    }
}

/// The property table of a holder.
pub fn table_of(ctx: &Ctx<'_>, h: Holder) -> Result<&'static [defs::PropDef], ApiError> {
    let class = class_of(ctx, h);
    defs::table(class).ok_or_else(|| ApiError::qubes(format!("unknown qube class '{class}'")))
}

/// Existence check every property call starts with:
/// `QubesNoSuchPropertyError "Invalid property '<p>' of <holder>"`.
pub fn lookup(ctx: &Ctx<'_>, h: Holder, name: &str) -> Result<&'static defs::PropDef, ApiError> {
    let table = table_of(ctx, h)?;
    defs::find(table, name).map(|(_, d)| d).ok_or_else(|| {
        ApiError::new(
            ExcType::QubesNoSuchPropertyError,
            format!(
                "Invalid property {} of {}",
                value::py_repr(name),
                holder_name(ctx, h)
            ),
        )
    })
}
