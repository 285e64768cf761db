//! admin.vm.tag.* (`core.md` §3.10, §8).

use crate::error::{ApiError, ExcType};
use crate::model::context::Ctx;
use crate::model::tags::{self, CREATED_BY};
use crate::wire::names;

fn not_found(vm: &str, tag: &str) -> ApiError {
    ApiError::new(
        ExcType::QubesTagNotFoundError,
        format!("Tag not set for domain {vm}: {tag}"),
    )
}

/// `AdminExtension`: only dom0 may add or remove `created-by-*` tags.
fn check_protected(ctx: &Ctx<'_>) -> Result<(), ApiError> {
    if ctx.arg.starts_with(CREATED_BY) && !ctx.src_is_admin() {
        return Err(ApiError::permission(
            "changing this tag is prohibited by qubes.ext.admin.AdminExtension",
        ));
    }
    Ok(())
}

/// `admin.vm.tag.List`: sorted, each followed by `\n`; with an argument, just that tag.
pub fn list(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let data = ctx.doc().data(ctx.dest)?;
    if ctx.arg.is_empty() {
        let mut tags = data.tags();
        tags.sort_unstable();
        tags.dedup();
        return Ok(tags
            .iter()
            .flat_map(|t| format!("{t}\n").into_bytes())
            .collect());
    }
    names::validate_tag(&ctx.arg)?;
    if data.has_tag(&ctx.arg) {
        Ok(format!("{}\n", ctx.arg).into_bytes())
    } else {
        Err(not_found(ctx.dest_name(), &ctx.arg))
    }
}

/// `admin.vm.tag.Get`: `1` or `0`.
pub fn get(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    names::validate_tag(&ctx.arg)?;
    let has = ctx.doc().data(ctx.dest)?.has_tag(&ctx.arg);
    Ok(if has { b"1".to_vec() } else { b"0".to_vec() })
}

/// `admin.vm.tag.Set`: `domain-tag-add:<tag>` only if new. A new `created-by-<X>` also adds the
/// tags listed in X's feature `tag-created-vm-with`; their events come first.
pub fn set(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    names::validate_tag(&ctx.arg)?;
    check_protected(ctx)?;
    let (dest, tag) = (ctx.dest, ctx.arg.clone());
    tags::add(ctx, dest, &tag)?;
    Ok(Vec::new())
}

/// `admin.vm.tag.Remove`: `domain-tag-delete:<tag>`, or QubesTagNotFoundError.
pub fn remove(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    names::validate_tag(&ctx.arg)?;
    check_protected(ctx)?;
    let dest = ctx.dest;
    let vm = ctx.dest_name().to_string();
    let tag = ctx.arg.clone();
    if !ctx.doc_mut()?.data_mut(dest)?.remove_tag(&tag) {
        return Err(not_found(&vm, &tag));
    }
    ctx.emit(&vm, format!("domain-tag-delete:{tag}"), &[("tag", &tag)]);
    Ok(Vec::new())
}
