//! admin.label.* (`core.md` §3.6, §5). Label create/remove emit no events.

use crate::error::{ApiError, ExcType};
use crate::model::context::Ctx;
use crate::model::labels::{label_repr, lookup, resolve_vm_label};
use crate::store::{Document, Label};
use crate::wire::names;
use crate::wire::python;

/// Indices up to this one are the default labels (`max_default_label`).
pub const MAX_DEFAULT_LABEL: u32 = 8;

/// `admin.label.List`: names in file order, each followed by `\n`; with an argument, just the
/// label it identifies.
pub fn list(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let doc = ctx.doc();
    if ctx.arg.is_empty() {
        return Ok(doc
            .labels()
            .iter()
            .flat_map(|l| format!("{}\n", l.name).into_bytes())
            .collect());
    }
    names::validate_label_name(&ctx.arg, false)?;
    let label = lookup(doc.labels(), &ctx.arg)?;
    Ok(format!("{}\n", label.name).into_bytes())
}

/// `admin.label.Get`: the colour text.
pub fn get(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    names::validate_label_name(&ctx.arg, false)?;
    Ok(lookup(ctx.doc().labels(), &ctx.arg)?
        .color
        .clone()
        .into_bytes())
}

/// `admin.label.Index`: the index in decimal.
pub fn index(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    names::validate_label_name(&ctx.arg, false)?;
    Ok(lookup(ctx.doc().labels(), &ctx.arg)?
        .index
        .to_string()
        .into_bytes())
}

/// `admin.label.Create`: stores the validated, stripped colour under index max(8, existing) + 1.
pub fn create(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    names::validate_label_name(&ctx.arg, true)?;
    let color = names::validate_label_color(&ctx.payload)?;
    let name = ctx.arg.clone();
    let doc = ctx.doc_mut()?;
    if lookup(doc.labels(), &name).is_ok() {
        return Err(ApiError::new(
            ExcType::QubesLabelInUseError,
            format!("Label is still in use: {}", python::repr(&name)),
        ));
    }
    let index = doc
        .labels()
        .iter()
        .map(|l| l.index)
        .fold(MAX_DEFAULT_LABEL, u32::max);
    let index = index
        .checked_add(1)
        .ok_or_else(|| ApiError::qubes("no free label index left"))?;
    doc.add_label(Label { index, color, name });
    Ok(Vec::new())
}

/// `admin.label.Remove`: only custom labels that no VM (dom0 included) uses.
pub fn remove(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    names::validate_label_name(&ctx.arg, false)?;
    let label = lookup(ctx.doc().labels(), &ctx.arg)?.clone();
    if label.index <= MAX_DEFAULT_LABEL {
        return Err(ApiError::protocol("Can only remove custom labels"));
    }
    if label_in_use(ctx.doc(), &label.name)? {
        return Err(ApiError::new(
            ExcType::QubesLabelInUseError,
            format!("Label is still in use: {}", label_repr(&label)),
        ));
    }
    ctx.doc_mut()?.remove_label(&label.name);
    Ok(Vec::new())
}

/// Whether any domain's stored label resolves to the label called `name`.
fn label_in_use(doc: &Document, name: &str) -> Result<bool, ApiError> {
    for id in doc.domains() {
        let data = doc.data(id)?;
        if let Some(value) = data.property("label") {
            if resolve_vm_label(doc.labels(), value).is_some_and(|l| l.name == name) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn labels() -> Vec<Label> {
        let l = |index, color: &str, name: &str| Label {
            index,
            color: color.into(),
            name: name.into(),
        };
        vec![
            l(1, "0xcc0000", "red"),
            l(3, "0xedd400", "yellow"),
            l(9, "0x00ffff", "cyan"),
        ]
    }

    #[test]
    fn lookup_by_name_then_index() {
        let ls = labels();
        assert_eq!(lookup(&ls, "yellow").unwrap().index, 3);
        assert_eq!(lookup(&ls, "3").unwrap().name, "yellow");
        assert_eq!(lookup(&ls, "0_3").unwrap().name, "yellow");
        assert_eq!(lookup(&ls, "09").unwrap().name, "cyan");
        let e = lookup(&ls, "label-3").unwrap_err();
        assert_eq!(e.ty, ExcType::QubesLabelNotFoundError);
        assert_eq!(e.msg, "Label does not exist: label-3");
        assert!(lookup(&ls, "-3").is_err());
        assert!(lookup(&ls, "3_").is_err());
        assert_eq!(resolve_vm_label(&ls, "label-9").unwrap().name, "cyan");
        assert_eq!(resolve_vm_label(&ls, "red").unwrap().index, 1);
        assert!(resolve_vm_label(&ls, "label-x").is_none());
    }

    #[test]
    fn reprs() {
        assert_eq!(label_repr(&labels()[2]), "Label(9, '0x00ffff', 'cyan')");
    }
}
