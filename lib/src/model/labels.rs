//! Labels as the property engine and `admin.label.*` share them: lookup by name or index, the
//! legacy `label-N` references, and Python's `repr(Label)` for messages.

use crate::error::{ApiError, ExcType};
use crate::store::Label;
use crate::wire::python;

/// `get_label`: by name, then a Python-`int()` digit string as index.
pub fn lookup<'l>(labels: &'l [Label], arg: &str) -> Result<&'l Label, ApiError> {
    labels
        .iter()
        .find(|l| l.name == arg)
        .or_else(|| python::int(arg, 10).and_then(|i| by_index(labels, i)))
        .ok_or_else(|| {
            ApiError::new(
                ExcType::QubesLabelNotFoundError,
                format!("Label does not exist: {arg}"),
            )
        })
}

fn by_index(labels: &[Label], index: i64) -> Option<&Label> {
    labels.iter().find(|l| i64::from(l.index) == index)
}

/// The label a stored VM `label` property value refers to: `label-N` (legacy, by index) or
/// whatever [`lookup`] accepts.
pub fn resolve_vm_label<'l>(labels: &'l [Label], value: &str) -> Option<&'l Label> {
    match value.strip_prefix("label-") {
        Some(n) => python::int(n, 10).and_then(|i| by_index(labels, i)),
        None => lookup(labels, value).ok(),
    }
}

/// Python `repr(Label)`: `Label(9, '0x00ffff', 'cyan')`.
pub fn label_repr(l: &Label) -> String {
    format!(
        "Label({}, {}, {})",
        l.index,
        python::repr(&l.color),
        python::repr(&l.name)
    )
}
