//! admin.vm.firewall.Get, Set and Reload (`storage-devices-backup.md` §C.5): the rules live in
//! `<qube dir>/firewall.xml`, not in qubes.xml; a change reaches the netvm's QubesDB at once
//! when the qube and its netvm run (`firewall-changed`, §C.6).

use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::model::firewall;
use crate::model::lifecycle::{is_active, live_domain};
use crate::model::props::defaults;
use crate::model::{qubesdb, volumes};

/// `admin.vm.firewall.Get`: the API form of each rule that has not expired, one per line
/// (no file: `action=accept`).
pub fn get(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let rules = firewall::load(&volumes::vm_dir(ctx, ctx.dest))?;
    let now = firewall::now();
    let mut out = String::new();
    for r in rules.iter().filter(|r| !r.expired(now)) {
        out.push_str(&r.api_form());
        out.push('\n');
    }
    Ok(out.into_bytes())
}

/// `admin.vm.firewall.Set`: the whole list replaced by the payload's lines (every line must
/// parse, or nothing changes), saved, then `firewall-changed`.
pub fn set(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let text = std::str::from_utf8(&ctx.payload)
        .ok()
        .filter(|t| t.is_ascii())
        .ok_or_else(|| ApiError::protocol("Rules contains non-ASCII characters"))?;
    let rules = firewall::splitlines(text)
        .into_iter()
        .map(firewall::parse_api_line)
        .collect::<Result<Vec<_>, _>>()?;
    let now = firewall::now();
    firewall::save(&volumes::vm_dir(ctx, ctx.dest), &rules, now)?;
    changed(ctx, Some(&rules))?;
    if let Some(at) = firewall::next_expiry(&rules, now) {
        firewall::note_expiry(&ctx.config.run_dir, at);
    }
    Ok(Vec::new())
}

/// The reference's expiry timer, run by the helper for each qube: if a rule in the
/// destination's `firewall.xml` has expired, the file is saved again without it and
/// `firewall-changed` fires (the netvm's QubesDB then loses the rule). Returns when the next
/// rule of the list expires.
pub fn expire_due(ctx: &mut Ctx<'_>) -> Result<Option<i64>, ApiError> {
    let dir = volumes::vm_dir(ctx, ctx.dest);
    if !dir.join("firewall.xml").exists() {
        return Ok(None);
    }
    let rules = firewall::load(&dir)?;
    let now = firewall::now();
    if rules.iter().any(|r| r.expired(now)) {
        firewall::save(&dir, &rules, now)?;
        changed(ctx, None)?;
    }
    Ok(firewall::next_expiry(&rules, now))
}

/// `admin.vm.firewall.Reload`: `firewall-changed` (the netvm's QubesDB written again).
pub fn reload(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    changed(ctx, None)?;
    Ok(Vec::new())
}

/// `firewall-changed` on the destination, and its handler: if the qube runs and has a running
/// netvm (not dom0), the netvm's QubesDB gets the qube's rules (`rules`, or its file's).
fn changed(ctx: &mut Ctx<'_>, rules: Option<&[firewall::Rule]>) -> Result<(), ApiError> {
    let id = ctx.dest;
    let name = ctx.dest_name().to_string();
    ctx.emit(&name, "firewall-changed", &[]);
    let Some(netvm) = defaults::netvm_of(ctx, id, 0).filter(|n| !ctx.doc().is_admin(*n)) else {
        return Ok(());
    };
    if !is_active(live_domain(ctx, id)?.as_ref()) || !is_active(live_domain(ctx, netvm)?.as_ref()) {
        return Ok(());
    }
    let mut db = ctx.dom0_services().qubesdb(ctx.doc().name(netvm))?;
    qubesdb::apply(db.as_mut(), &qubesdb::client_entries(ctx, id, rules)?)
}
