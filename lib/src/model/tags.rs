//! Tags as the families share them: a new `created-by-<X>` tag brings the tags listed in X's
//! feature `tag-created-vm-with` (`AdminExtension`), for `admin.vm.tag.Set` and every Create.

use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::store::{Document, DomId};

/// Prefix of the tags that record which qube created a qube (protected against non-dom0).
pub const CREATED_BY: &str = "created-by-";

/// Adds `tag` to qube `id` with what its handlers add, firing `domain-tag-add:<tag>` for each
/// new tag (handler-added tags first). An existing tag fires nothing.
pub fn add(ctx: &mut Ctx<'_>, id: DomId, tag: &str) -> Result<(), ApiError> {
    let vm = ctx.doc().name(id).to_string();
    let mut added = Vec::new();
    add_tag(ctx.doc_mut()?, id, tag, &mut added)?;
    for t in added {
        ctx.emit(&vm, format!("domain-tag-add:{t}"), &[("tag", &t)]);
    }
    Ok(())
}

/// Adds `tag` and what the `created-by-*` handler adds; `added` collects the new tags in the
/// order their events fire (handler-added tags before the tag that caused them).
fn add_tag(
    doc: &mut Document,
    id: DomId,
    tag: &str,
    added: &mut Vec<String>,
) -> Result<(), ApiError> {
    if !doc.data_mut(id)?.add_tag(tag) {
        return Ok(());
    }
    if let Some(creator) = tag.strip_prefix(CREATED_BY) {
        // The reference has no reply here (KeyError); we name the missing qube.
        let creator_id = doc
            .domain_by_name(creator)
            .ok_or_else(|| ApiError::vm_not_found(creator))?;
        let extra: Vec<String> = doc
            .data(creator_id)?
            .feature("tag-created-vm-with")
            .unwrap_or_default()
            .split(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        for t in extra {
            if !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(ApiError::no_reply_in_reference(format!(
                    "Invalid character in tag '{t}' (from feature tag-created-vm-with of {creator})"
                )));
            }
            add_tag(doc, id, &t, added)?;
        }
    }
    added.push(tag.to_string());
    Ok(())
}
