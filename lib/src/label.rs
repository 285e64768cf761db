//! admin.label.*

use crate::context::Ctx;
use crate::error::{ApiError, ExcType};

pub fn list(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Err(ApiError::new(ExcType::QubesNotImplementedError, format!("{} is not implemented yet", ctx.method.name)))
}

pub fn get(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Err(ApiError::new(ExcType::QubesNotImplementedError, format!("{} is not implemented yet", ctx.method.name)))
}

pub fn index(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Err(ApiError::new(ExcType::QubesNotImplementedError, format!("{} is not implemented yet", ctx.method.name)))
}

pub fn create(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Err(ApiError::new(ExcType::QubesNotImplementedError, format!("{} is not implemented yet", ctx.method.name)))
}

pub fn remove(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Err(ApiError::new(ExcType::QubesNotImplementedError, format!("{} is not implemented yet", ctx.method.name)))
}
