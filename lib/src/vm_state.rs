//! admin.vm.CurrentState

use crate::context::Ctx;
use crate::error::{ApiError, ExcType};

pub fn current_state(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Err(ApiError::new(ExcType::QubesNotImplementedError, format!("{} is not implemented yet", ctx.method.name)))
}
