//! Recursive feature lookups (`features.check_with_template`, `check_with_netvm`, …), shared
//! by `admin.vm.feature.CheckWith*`, the property engine's defaults and the power-state rules.

use std::collections::HashSet;

use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::model::props::defaults;
use crate::store::DomId;

/// Which VM-valued property a recursive feature lookup follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    None,
    /// The stored `template` (AppVM → TemplateVM, DispVM → AppVM → …).
    Template,
    /// The effective `netvm`, its default included (the property engine decides).
    Netvm,
}

/// The reference's `_recursive_check`: the first VM along `chain` that *has* the feature (even
/// with an empty value), then dom0 if `adminvm` (unless the start is dom0). A cycle in the
/// stored references ends the walk.
pub fn check_feature(
    ctx: &Ctx<'_>,
    start: DomId,
    feature: &str,
    chain: Chain,
    adminvm: bool,
) -> Result<Option<String>, ApiError> {
    let doc = ctx.doc();
    let mut seen = HashSet::new();
    let mut cur = Some(start);
    while let Some(id) = cur {
        if !seen.insert(id) {
            break;
        }
        if let Some(v) = doc.data(id)?.feature(feature) {
            return Ok(Some(v.to_string()));
        }
        cur = match chain {
            Chain::None => None,
            Chain::Template => defaults::template_of(ctx, id, 0),
            Chain::Netvm => defaults::netvm_of(ctx, id, 0),
        };
    }
    if adminvm {
        if let Some(dom0) = doc.domain_by_name("dom0").filter(|d| *d != start) {
            if let Some(v) = doc.data(dom0)?.feature(feature) {
                return Ok(Some(v.to_string()));
            }
        }
    }
    Ok(None)
}
