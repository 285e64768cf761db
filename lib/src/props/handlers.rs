//! The eight calls, shared by admin.property.* (global) and admin.vm.property.* (per VM).
//! Every call that takes a property name checks its existence first (§3.8).

use super::{lookup, render, setters, Holder};
use crate::context::Ctx;
use crate::error::ApiError;

/// List; with an argument, just that property (or QubesNoSuchPropertyError).
pub fn list(ctx: &Ctx<'_>, h: Holder) -> Result<Vec<u8>, ApiError> {
    let only = (!ctx.arg.is_empty()).then_some(ctx.arg.as_str());
    Ok(render::list(ctx, h, only)?.into_bytes())
}

pub fn get(ctx: &Ctx<'_>, h: Holder) -> Result<Vec<u8>, ApiError> {
    let def = lookup(ctx, h, &ctx.arg)?;
    Ok(render::get_line(ctx, h, def)?.into_bytes())
}

pub fn get_all(ctx: &Ctx<'_>, h: Holder) -> Result<Vec<u8>, ApiError> {
    Ok(render::get_all(ctx, h)?.into_bytes())
}

pub fn get_default(ctx: &Ctx<'_>, h: Holder) -> Result<Vec<u8>, ApiError> {
    let def = lookup(ctx, h, &ctx.arg)?;
    Ok(render::get_default(ctx, h, def)?.into_bytes())
}

/// Help (docutils plain text, as the reference) or HelpRst (the docstring with its markup).
pub fn help(ctx: &Ctx<'_>, h: Holder, rst: bool) -> Result<Vec<u8>, ApiError> {
    let def = lookup(ctx, h, &ctx.arg)?;
    Ok(if rst { def.rst } else { def.help }.as_bytes().to_vec())
}

pub fn set(ctx: &mut Ctx<'_>, h: Holder) -> Result<Vec<u8>, ApiError> {
    let def = lookup(ctx, h, &ctx.arg)?;
    let payload = std::mem::take(&mut ctx.payload);
    setters::set(ctx, h, def, &payload)?;
    Ok(Vec::new())
}

pub fn reset(ctx: &mut Ctx<'_>, h: Holder) -> Result<Vec<u8>, ApiError> {
    let def = lookup(ctx, h, &ctx.arg)?;
    setters::reset(ctx, h, def)?;
    Ok(Vec::new())
}
