//! `admin.Events`: the subscription. The stream itself is served by the front end
//! ([`crate::System::serve`], [`crate::events::follow`]) once this handler has accepted it.

use crate::error::ApiError;
use crate::events::Subscription;
use crate::model::access;
use crate::model::context::{Ctx, Stream};

/// dest dom0: every event; dest a qube: the events fired on it (core.md §9.1). A caller other
/// than dom0 gets of these only the events its qrexec policy allows, one by one
/// (`qrexec-and-policy.md` §3.2); a policy that does not load refuses the stream.
pub fn subscribe(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let sub = if ctx.src_is_admin() {
        subscription(ctx)
    } else {
        let base = if ctx.dest_is_admin() {
            Subscription::All
        } else {
            Subscription::Qube(ctx.dest_name().to_string())
        };
        Subscription::Filtered {
            base: Box::new(base),
            filter: Box::new(access::event_filter(ctx)?),
        }
    };
    ctx.subscribe(Stream::Events(sub));
    Ok(Vec::new())
}

/// Whose stats a `admin.vm.Stats` stream covers: dest dom0, every qube (only for dom0 as the
/// caller: the reference shows everything to anyone, we show nothing); dest a qube, that qube.
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
