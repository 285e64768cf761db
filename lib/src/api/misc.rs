//! The misc socket's calls (`/run/qubesd.misc.sock`): what a qube reports about itself through
//! qrexec. Each acts on the *calling* qube, and what it reports is untrusted: sanitized here,
//! then applied as the reference's extensions apply their `features-request` event.
//!
//! Applied (the reference's core, services and supported-features extensions): `qrexec`,
//! `gui`, `gui-emulated`, `qubes-firewall`, `vmexec` (`1`/`0`; set only where the qube has no
//! value yet), `os`, `os-distribution`, `os-version`, `os-eol`, `os-distribution-like`
//! (replaced freely), and the `supported-service.*`, `supported-feature.*`, `supported-rpc.*`
//! sets (an advertised set replaces the previous one; an empty one is ignored). Template-based
//! qubes report nothing that sticks (their root comes from the template). Not applied yet: what
//! other packages' extensions take from the same event (Windows tools, GUI, app menus).

use super::request::enforce_dom0_without_arg;
use super::vm_feature::{remove_feature, set_feature};
use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::model::props::defaults;
use crate::model::volumes;
use crate::store::DomId;
use crate::wire::python::{repr, strip};

/// What a qube may put in a `/features-request/` value (the reference's safe set).
fn safe_value(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.,_= ".contains(&b))
}

fn refuse(ctx: &Ctx<'_>, what: String) -> ApiError {
    ApiError::permission(format!(
        "{} from {}: {what}",
        ctx.method,
        ctx.doc().name(ctx.src)
    ))
}

/// `qubes.FeaturesRequest`: the features the calling qube wrote under `/features-request/` in
/// its QubesDB.
pub fn features_request(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    enforce_dom0_without_arg(ctx)?;
    let mut db = ctx.dom0_services().qubesdb(ctx.doc().name(ctx.src))?;
    let mut untrusted = Vec::new();
    for path in db.list("/features-request/")? {
        let Some(value) = db.read(&path)? else {
            continue;
        };
        let key = path.strip_prefix("/features-request/").unwrap_or(&path);
        let value = String::from_utf8(value)
            .ok()
            .filter(|v| safe_value(v))
            .ok_or_else(|| refuse(ctx, format!("unsafe value of {}", repr(key))))?;
        if !crate::wire::names::is_valid_feature_name(key) {
            return Err(refuse(ctx, format!("invalid feature name {}", repr(key))));
        }
        untrusted.push((key.to_string(), value));
    }
    apply(ctx, ctx.src, &untrusted)?;
    Ok(Vec::new())
}

/// `qubes.NotifyTools`: the older form (Windows tools), five entries under `/qubes-tools/`,
/// letters and digits only.
pub fn notify_tools(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    enforce_dom0_without_arg(ctx)?;
    let mut db = ctx.dom0_services().qubesdb(ctx.doc().name(ctx.src))?;
    let mut untrusted = Vec::new();
    for key in ["qrexec", "gui", "gui-emulated", "default-user", "os"] {
        let Some(value) = db.read(&format!("/qubes-tools/{key}"))? else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        let value = String::from_utf8(value)
            .ok()
            .filter(|v| v.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or_else(|| refuse(ctx, format!("unsafe value of {}", repr(key))))?;
        untrusted.push((key.to_string(), value));
    }
    apply(ctx, ctx.src, &untrusted)?;
    Ok(Vec::new())
}

/// The `features-request` event and what the extensions make of it.
fn apply(ctx: &mut Ctx<'_>, id: DomId, untrusted: &[(String, String)]) -> Result<(), ApiError> {
    let name = ctx.doc().name(id).to_string();
    let dict: Vec<String> = untrusted
        .iter()
        .map(|(k, v)| format!("{}: {}", repr(k), repr(v)))
        .collect();
    let dict = format!("{{{}}}", dict.join(", "));
    ctx.emit(&name, "features-request", &[("untrusted_features", &dict)]);
    if defaults::vm_prop_ref(ctx, id, "template", 0).is_some() {
        eprintln!(
            "qubes-admin: ignoring {} from template-based qube {name}",
            ctx.method
        );
        return Ok(());
    }
    let get = |k: &str| {
        untrusted
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    let had_qrexec = feature_true(ctx, id, "qrexec")?;
    for f in ["qrexec", "gui", "gui-emulated", "qubes-firewall", "vmexec"] {
        let value = match get(f) {
            Some("1") => "1",
            Some("0") => "",
            _ => continue,
        };
        if ctx.doc().data(id)?.feature(f).is_none() {
            set_feature(ctx, id, f, value)?;
        }
    }
    for f in [
        "os",
        "os-distribution",
        "os-version",
        "os-eol",
        "os-distribution-like",
    ] {
        if let Some(v) = get(f) {
            set_feature(ctx, id, f, v)?;
        }
    }
    for prefix in ["supported-service.", "supported-feature.", "supported-rpc."] {
        let advertised: Vec<&str> = untrusted
            .iter()
            .filter(|(k, v)| k.starts_with(prefix) && v == "1")
            .map(|(k, _)| k.as_str())
            .collect();
        if advertised.is_empty() {
            continue;
        }
        let old: Vec<String> = ctx
            .doc()
            .data(id)?
            .features()
            .iter()
            .filter(|(k, v)| k.starts_with(prefix) && !v.is_empty())
            .map(|(k, _)| k.to_string())
            .collect();
        for f in &advertised {
            if !old.iter().any(|o| o == f) {
                set_feature(ctx, id, f, "1")?;
            }
        }
        for f in old.iter().filter(|o| !advertised.contains(&o.as_str())) {
            remove_feature(ctx, id, f)?;
        }
    }
    if !had_qrexec && feature_true(ctx, id, "qrexec")? {
        // The first time the qube says it has a qrexec agent: its setup can finish.
        ctx.emit(&name, "template-postinstall", &[]);
    }
    Ok(())
}

fn feature_true(ctx: &Ctx<'_>, id: DomId, f: &str) -> Result<bool, ApiError> {
    Ok(ctx
        .doc()
        .data(id)?
        .feature(f)
        .is_some_and(|v| !v.is_empty()))
}

/// `qubes.NotifyUpdates`: payload `<count>`, whether updates are available. An updateable qube
/// (template, standalone) is believed about itself; a template-based one only hints at its
/// nearest updateable template, and only when that template is not running (it then reports
/// for itself) and the hint is "yes" from a qube not started before the template's last change.
pub fn notify_updates(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let count = std::str::from_utf8(&ctx.payload)
        .ok()
        .map(strip)
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| refuse(ctx, "the payload is not a number of updates".to_string()))?;
    let available = if count.bytes().all(|b| b == b'0') {
        ""
    } else {
        "1"
    };
    let src = ctx.src;
    if defaults::vm_prop(ctx, src, "updateable", 0).is_ok_and(|v| v.truthy()) {
        set_feature(ctx, src, "updates-available", available)?;
        return Ok(Vec::new());
    }
    let mut template = defaults::vm_prop_ref(ctx, src, "template", 0);
    let mut seen = Vec::new();
    while let Some(t) = template.filter(|t| !seen.contains(t)) {
        if defaults::vm_prop(ctx, t, "updateable", 0).is_ok_and(|v| v.truthy()) {
            break;
        }
        seen.push(t);
        template = defaults::vm_prop_ref(ctx, t, "template", 0);
    }
    let Some(template) = template.filter(|t| !seen.contains(t)) else {
        return Ok(Vec::new());
    };
    if defaults::is_running(ctx, template)? || available.is_empty() {
        return Ok(Vec::new());
    }
    let pools = volumes::pools(ctx);
    for v in volumes::volumes_of(ctx, &pools, src)? {
        if volumes::find_pool(&pools, &v.pool)?
            .driver()
            .is_outdated(&v)
        {
            return Ok(Vec::new());
        }
    }
    set_feature(ctx, template, "updates-available", available)?;
    Ok(Vec::new())
}
