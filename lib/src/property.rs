//! admin.property.*: the global `Qubes` object's properties (dest must be dom0).

use crate::context::Ctx;
use crate::error::ApiError;
use crate::props::{self, Holder};

fn holder(_ctx: &Ctx<'_>) -> Holder {
    Holder::Global
}

pub fn list(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    props::handlers::list(ctx, holder(ctx))
}

pub fn get(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    props::handlers::get(ctx, holder(ctx))
}

pub fn get_all(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    props::handlers::get_all(ctx, holder(ctx))
}

pub fn get_default(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    props::handlers::get_default(ctx, holder(ctx))
}

pub fn help(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    props::handlers::help(ctx, holder(ctx), false)
}

/// The raw RST docstring (the Admin API document lists HelpRst; the reference lacks it).
pub fn help_rst(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    props::handlers::help(ctx, holder(ctx), true)
}

pub fn set(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let h = holder(ctx);
    props::handlers::set(ctx, h)
}

pub fn reset(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let h = holder(ctx);
    props::handlers::reset(ctx, h)
}
