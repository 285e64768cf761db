//! admin.property.* (the global `Qubes` object; dest must be dom0) and admin.vm.property.*
//! (the destination qube, dom0 included): the same eight calls on two holders. The table names
//! each handler with its holder, e.g. `property::get::<OfQubes>` / `property::get::<OfVm>`.
//! Every call that takes a property name checks its existence first (§3.8); the semantics are
//! the property engine's (`model::props`).

use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::model::props::{lookup, render, setters, Holder};

/// Which object a family's calls address.
pub trait HolderOf {
    fn holder(ctx: &Ctx<'_>) -> Holder;
}

/// `admin.property.*`: the global object.
pub struct OfQubes;
/// `admin.vm.property.*`: the destination qube.
pub struct OfVm;

impl HolderOf for OfQubes {
    fn holder(_ctx: &Ctx<'_>) -> Holder {
        Holder::Global
    }
}

impl HolderOf for OfVm {
    fn holder(ctx: &Ctx<'_>) -> Holder {
        Holder::Vm(ctx.dest)
    }
}

/// List; with an argument, just that property (or QubesNoSuchPropertyError).
pub fn list<H: HolderOf>(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let only = (!ctx.arg.is_empty()).then_some(ctx.arg.as_str());
    Ok(render::list(ctx, H::holder(ctx), only)?.into_bytes())
}

pub fn get<H: HolderOf>(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let h = H::holder(ctx);
    let def = lookup(ctx, h, &ctx.arg)?;
    Ok(render::get_line(ctx, h, def)?.into_bytes())
}

pub fn get_all<H: HolderOf>(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Ok(render::get_all(ctx, H::holder(ctx))?.into_bytes())
}

pub fn get_default<H: HolderOf>(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let h = H::holder(ctx);
    let def = lookup(ctx, h, &ctx.arg)?;
    Ok(render::get_default(ctx, h, def)?.into_bytes())
}

/// Help: docutils plain text, as the reference.
pub fn help<H: HolderOf>(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let def = lookup(ctx, H::holder(ctx), &ctx.arg)?;
    Ok(def.help.as_bytes().to_vec())
}

/// HelpRst: the docstring with its markup (the Admin API document lists it; the reference
/// lacks it).
pub fn help_rst<H: HolderOf>(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let def = lookup(ctx, H::holder(ctx), &ctx.arg)?;
    Ok(def.rst.as_bytes().to_vec())
}

pub fn set<H: HolderOf>(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let h = H::holder(ctx);
    let def = lookup(ctx, h, &ctx.arg)?;
    let payload = std::mem::take(&mut ctx.payload);
    setters::set(ctx, h, def, &payload)?;
    Ok(Vec::new())
}

pub fn reset<H: HolderOf>(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let h = H::holder(ctx);
    let def = lookup(ctx, h, &ctx.arg)?;
    setters::reset(ctx, h, def)?;
    Ok(Vec::new())
}
