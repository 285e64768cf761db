//! admin.vm.tag.*

use crate::context::Ctx;
use crate::error::{ApiError, ExcType};

pub fn list(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Err(ApiError::new(ExcType::QubesNotImplementedError, format!("{} is not implemented yet", ctx.method.name)))
}

pub fn get(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Err(ApiError::new(ExcType::QubesNotImplementedError, format!("{} is not implemented yet", ctx.method.name)))
}

pub fn set(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Err(ApiError::new(ExcType::QubesNotImplementedError, format!("{} is not implemented yet", ctx.method.name)))
}

pub fn remove(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Err(ApiError::new(ExcType::QubesNotImplementedError, format!("{} is not implemented yet", ctx.method.name)))
}
