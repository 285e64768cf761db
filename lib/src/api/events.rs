//! `admin.Events`: the subscription. The stream itself is served by the front end
//! ([`crate::System::serve`], [`crate::events::follow`]) once this handler has accepted it.

use crate::error::ApiError;
use crate::events::Subscription;
use crate::model::context::{Ctx, Stream};

/// dest dom0: every event; dest a qube: the events fired on it (core.md §9.1). A caller other
/// than dom0 gets, until the qrexec policy filter exists (the policy issue fills this hook),
/// only the events of a qube it names as destination: never the whole system's.
pub fn subscribe(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let sub = subscription(ctx);
    ctx.subscribe(Stream::Events(sub));
    Ok(Vec::new())
}

/// Whose events (or stats) a streaming call covers: see [`subscribe`].
pub fn subscription(ctx: &Ctx<'_>) -> Subscription {
    if ctx.dest_is_admin() {
        if ctx.src_is_admin() {
            Subscription::All
        } else {
            Subscription::Nothing
        }
    } else {
        Subscription::Qube(ctx.dest_name().to_string())
    }
}
