//! admin.vm.feature.* (`core.md` §3.9, §7).
//!
//! Set runs the reference's hooks in its order: the pre-set event, the pre-set validators
//! (`service.*`, `preload-dispvm-*`), the store, the post-set validators (`vm-config.*`,
//! `custom-persist.*`) and derived events (`property-reset:bootmode`, …), then the set event.

use crate::error::{ApiError, ExcType};
use crate::model::context::Ctx;
use crate::model::features::{check_feature, Chain};
use crate::model::props::defaults;
use crate::store::DomId;
use crate::wire::names;

/// Features nobody (dom0 included) may set or remove through the API.
pub const PROHIBITED_FEATURES: &[&str] = &[
    "deferred-netvm-original",
    "preload-dispvm",
    "preload-dispvm-completed",
    "preload-dispvm-in-progress",
];

/// An event to emit: subject, name, kwargs.
type Ev = (String, String, Vec<(String, String)>);

fn not_found(vm: &str, feature: &str) -> ApiError {
    ApiError::new(
        ExcType::QubesFeatureNotFoundError,
        format!("Feature not set for domain {vm}: {feature}"),
    )
}

fn check_prohibited(feature: &str) -> Result<(), ApiError> {
    if PROHIBITED_FEATURES.contains(&feature) {
        return Err(ApiError::permission(
            "changing this feature is prohibited by qubes.ext.admin.AdminExtension",
        ));
    }
    Ok(())
}

/// `admin.vm.feature.List`: names in insertion order; with an argument, just that name.
pub fn list(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let data = ctx.doc().data(ctx.dest)?;
    if ctx.arg.is_empty() {
        return Ok(data
            .features()
            .iter()
            .flat_map(|(n, _)| format!("{n}\n").into_bytes())
            .collect());
    }
    match data.feature(&ctx.arg) {
        Some(_) => Ok(format!("{}\n", ctx.arg).into_bytes()),
        None => Err(not_found(ctx.dest_name(), &ctx.arg)),
    }
}

/// `admin.vm.feature.Get`: the raw value.
pub fn get(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    lookup_reply(ctx, Chain::None, false)
}

/// `admin.vm.feature.CheckWithTemplate`.
pub fn check_with_template(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    lookup_reply(ctx, Chain::Template, false)
}

/// `admin.vm.feature.CheckWithNetvm`.
pub fn check_with_netvm(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    lookup_reply(ctx, Chain::Netvm, false)
}

/// `admin.vm.feature.CheckWithAdminVM`.
pub fn check_with_adminvm(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    lookup_reply(ctx, Chain::None, true)
}

/// `admin.vm.feature.CheckWithTemplateAndAdminVM`.
pub fn check_with_template_and_adminvm(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    lookup_reply(ctx, Chain::Template, true)
}

fn lookup_reply(ctx: &Ctx<'_>, chain: Chain, adminvm: bool) -> Result<Vec<u8>, ApiError> {
    match check_feature(ctx, ctx.dest, &ctx.arg, chain, adminvm)? {
        Some(v) => Ok(v.into_bytes()),
        None => Err(not_found(ctx.dest_name(), &ctx.arg)),
    }
}

/// `admin.vm.feature.Set`.
pub fn set(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let value = std::str::from_utf8(&ctx.payload)
        .ok()
        .filter(|s| s.is_ascii())
        .ok_or_else(|| ApiError::protocol("Feature value contains non-ASCII characters"))?
        .to_string();
    let name = ctx.arg.clone();
    if !names::is_valid_feature_name(&name) {
        return Err(ApiError::protocol(
            "feature name contains illegal characters",
        ));
    }
    if !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(ApiError::protocol(format!(
            "{name} value contains illegal characters"
        )));
    }
    check_prohibited(&name)?;
    set_feature(ctx, ctx.dest, &name, &value)?;
    Ok(Vec::new())
}

/// Stores feature `name` of qube `id` as the reference's `vm.features[name] = value` does
/// (whoever sets it: this API, or what a qube reports through `qubes.FeaturesRequest`): the
/// pre-set event and validators, the store, the post-set validators and derived events, the
/// set event. Names and values are already checked.
pub fn set_feature(ctx: &mut Ctx<'_>, id: DomId, name: &str, value: &str) -> Result<(), ApiError> {
    let vm = ctx.doc().name(id).to_string();
    let old = ctx.doc().data(id)?.feature(name).map(str::to_string);
    let kwargs = feature_kwargs(name, value, old.as_deref());
    let mut events: Vec<Ev> = vec![(
        vm.clone(),
        format!("domain-feature-pre-set:{name}"),
        kwargs.clone(),
    )];
    events.extend(pre_set_hooks(ctx, id, name, value, old.as_deref())?);
    ctx.doc_mut()?.data_mut(id)?.set_feature(name, value);
    post_set_checks(name, value)?;
    events.extend(post_set_events(ctx, id, name, value, old.as_deref())?);
    events.push((vm, format!("domain-feature-set:{name}"), kwargs));
    emit_all(ctx, events);
    Ok(())
}

/// Removes feature `name` of qube `id` with its events; `false` if it was not set.
pub fn remove_feature(ctx: &mut Ctx<'_>, id: DomId, name: &str) -> Result<bool, ApiError> {
    if !ctx.doc_mut()?.data_mut(id)?.remove_feature(name) {
        return Ok(false);
    }
    let vm = ctx.doc().name(id).to_string();
    ctx.emit(
        &vm,
        format!("domain-feature-pre-delete:{name}"),
        &[("feature", name)],
    );
    ctx.emit(
        &vm,
        format!("domain-feature-delete:{name}"),
        &[("feature", name)],
    );
    Ok(true)
}

/// `admin.vm.feature.Remove`.
pub fn remove(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let name = ctx.arg.clone();
    check_prohibited(&name)?;
    if !remove_feature(ctx, ctx.dest, &name)? {
        return Err(not_found(ctx.dest_name(), &name));
    }
    Ok(Vec::new())
}

fn emit_all(ctx: &mut Ctx<'_>, events: Vec<Ev>) {
    for (subject, name, kwargs) in events {
        let kw: Vec<(&str, &str)> = kwargs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ctx.emit(&subject, name, &kw);
    }
}

fn feature_kwargs(name: &str, value: &str, old: Option<&str>) -> Vec<(String, String)> {
    let mut kw = vec![
        ("feature".to_string(), name.to_string()),
        ("value".to_string(), value.to_string()),
    ];
    if let Some(o) = old {
        kw.push(("oldvalue".to_string(), o.to_string()));
    }
    kw
}

/// Classes with the disposable-template mixin (`preload-dispvm-*` handlers).
fn is_dvm_template_class(class: &str) -> bool {
    matches!(class, "AppVM" | "StandaloneVM")
}

/// Validators on `domain-feature-pre-set:<name>`; returns events they fire themselves.
fn pre_set_hooks(
    ctx: &Ctx<'_>,
    id: DomId,
    name: &str,
    value: &str,
    old: Option<&str>,
) -> Result<Vec<Ev>, ApiError> {
    let doc = ctx.doc();
    let class = doc.class(id);
    let mut events = Vec::new();
    if let Some(service) = name.strip_prefix("service.") {
        check_service_name(service)?;
    }
    let is_dvm_template = is_dvm_template_class(class);
    if name == "preload-dispvm-threshold" && class == "AdminVM" && !is_py_digit(or_zero(value)) {
        return Err(ApiError::value(
            "Invalid preload-dispvm-threshold value: not a digit",
        ));
    }
    if name == "preload-dispvm-delay"
        && (class == "AdminVM" || is_dvm_template)
        && Some(value) != old
        && !is_py_float(or_zero(value))
    {
        return Err(ApiError::value(
            "Invalid preload-dispvm-delay value: not an integer or float",
        ));
    }
    if name == "preload-dispvm-max" && is_dvm_template {
        check_preload_max(ctx, id, value)?;
    }
    if name == "preload-dispvm-max" && class == "AdminVM" && Some(value) != old {
        // Forwarded to the global default_dispvm as its own pre-set event.
        if let Some(target) = defaults::global_vm(ctx, "default_dispvm") {
            let kw = vec![
                ("feature".to_string(), name.to_string()),
                ("value".to_string(), value.to_string()),
                ("oldvalue".to_string(), old.unwrap_or("None").to_string()),
            ];
            events.push((
                doc.name(target).to_string(),
                format!("domain-feature-pre-set:{name}"),
                kw,
            ));
            if is_dvm_template_class(doc.class(target)) {
                check_preload_max(ctx, target, value)?;
            }
        }
    }
    Ok(events)
}

fn or_zero(v: &str) -> &str {
    if v.is_empty() {
        "0"
    } else {
        v
    }
}

/// `service.<x>`: the name must be usable as a QubesDB key.
fn check_service_name(service: &str) -> Result<(), ApiError> {
    if service.is_empty() {
        return Err(ApiError::value("Service name cannot be empty"));
    }
    if service.contains('/') {
        return Err(ApiError::value("Service name cannot contain a slash"));
    }
    if service == "." || service == ".." {
        return Err(ApiError::value("Service name cannot be \".\" or \"..\""));
    }
    if service.len() > 48 && !service.starts_with("app-dispvm.") {
        return Err(ApiError::value("Service name must not exceed 48 bytes"));
    }
    Ok(())
}

/// The disposable template's `preload-dispvm-max` validator.
fn check_preload_max(ctx: &Ctx<'_>, id: DomId, value: &str) -> Result<(), ApiError> {
    let truthy = |f: &str| -> Result<bool, ApiError> {
        Ok(check_feature(ctx, id, f, Chain::Template, false)?.is_some_and(|v| !v.is_empty()))
    };
    if !truthy("qrexec")? {
        return Err(ApiError::value("Qube does not support qrexec"));
    }
    let mut missing = Vec::new();
    for rpc in ["qubes.WaitForRunningSystem", "qubes.WaitForSession"] {
        if !truthy(&format!("supported-rpc.{rpc}"))? {
            missing.push(rpc);
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::value(format!(
            "Qube does not support the RPC(s) '{}'",
            missing.join(", ")
        )));
    }
    if !is_py_digit(or_zero(value)) {
        return Err(ApiError::value(
            "Invalid preload-dispvm-max value: not a digit",
        ));
    }
    Ok(())
}

/// Validators on `domain-feature-set:<name>` (after the value is stored).
fn post_set_checks(name: &str, value: &str) -> Result<(), ApiError> {
    if let Some(config) = name.strip_prefix("vm-config.") {
        if config.len() > 52 {
            return Err(ApiError::value("VM config name must not exceed 46 bytes"));
        }
        if !config
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
        {
            return Err(ApiError::value(if config.is_empty() {
                "Empty config name not allowed"
            } else {
                "Config name must start with an ASCII letter"
            }));
        }
    }
    if let Some(key) = name.strip_prefix("custom-persist.") {
        check_custom_persist(key, value)?;
    }
    Ok(())
}

/// `custom-persist.<key>`: key fits QubesDB (`/persist/` + key ≤ 63 bytes); value is an
/// absolute path or `file|dir:<user>:<group>:<octal mode>:<absolute path>`.
fn check_custom_persist(key: &str, value: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::value("custom-persist key cannot be empty"));
    }
    if key.len() > 54 {
        return Err(ApiError::value(format!(
            "custom-persist key is too long (max 54), ignoring: {key}"
        )));
    }
    if value.starts_with('/') {
        return Ok(());
    }
    let options: Vec<&str> = value.split(':').collect();
    if options.len() < 5 || !options.get(4).is_some_and(|p| p.starts_with('/')) {
        return Err(ApiError::value(format!("invalid value format: '{value}'")));
    }
    let kind = options.first().copied().unwrap_or_default();
    if kind != "file" && kind != "dir" {
        return Err(ApiError::value(format!(
            "invalid resource type option '{kind}' in value '{value}'"
        )));
    }
    let mode = options.get(3).copied().unwrap_or_default();
    if !crate::wire::python::int(mode, 8).is_some_and(|m| (0..=0o7777).contains(&m)) {
        return Err(ApiError::value(format!(
            "invalid mode option '{mode}' in value '{value}'"
        )));
    }
    Ok(())
}

/// Events fired by class handlers of `domain-feature-set:<name>` (before the set event).
fn post_set_events(
    ctx: &Ctx<'_>,
    id: DomId,
    name: &str,
    value: &str,
    old: Option<&str>,
) -> Result<Vec<Ev>, ApiError> {
    let doc = ctx.doc();
    let class = doc.class(id);
    let is_qubesvm = matches!(class, "AppVM" | "StandaloneVM" | "DispVM" | "TemplateVM");
    let mut events = Vec::new();
    if Some(value) == old || !is_qubesvm {
        return Ok(events);
    }
    let reset = |vm: &str, prop: &str| -> Ev {
        (
            vm.to_string(),
            format!("property-reset:{prop}"),
            vec![("name".to_string(), prop.to_string())],
        )
    };
    if name == "boot-mode.active" && doc.data(id)?.property("bootmode").is_none() {
        events.push(reset(doc.name(id), "bootmode"));
    }
    if name == "boot-mode.appvm-default"
        && class == "TemplateVM"
        && doc.data(id)?.property("appvm_default_bootmode").is_none()
    {
        events.push(reset(doc.name(id), "appvm_default_bootmode"));
        let mut appvms = Vec::new();
        for other in doc.domains() {
            if defaults::template_of(ctx, other, 0) == Some(id)
                && doc.data(other)?.property("bootmode").is_none()
            {
                appvms.push(doc.name(other).to_string());
            }
        }
        appvms.sort();
        events.extend(appvms.iter().map(|vm| reset(vm, "bootmode")));
    }
    Ok(events)
}

/// Python `str.isdigit()` on ASCII text.
fn is_py_digit(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Digits with single underscores between them (Python numeric literal rules).
fn digitpart(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_digit)
        && b.last().is_some_and(u8::is_ascii_digit)
        && b.iter().all(|c| c.is_ascii_digit() || *c == b'_')
        && !s.contains("__")
}

/// Whether Python's `float(s)` accepts the (ASCII) text.
fn is_py_float(s: &str) -> bool {
    let t = s.trim_matches(|c: char| {
        c.is_ascii_whitespace() || c == '\x0b' || ('\x1c'..='\x1f').contains(&c)
    });
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let lower = t.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return true;
    }
    let (mantissa, exp) = match lower.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (lower.as_str(), None),
    };
    if let Some(e) = exp {
        if !digitpart(e.strip_prefix(['+', '-']).unwrap_or(e)) {
            return false;
        }
    }
    match mantissa.split_once('.') {
        Some((i, f)) => {
            (i.is_empty() && digitpart(f)) || (digitpart(i) && (f.is_empty() || digitpart(f)))
        }
        None => digitpart(mantissa),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn python_number_syntax() {
        for ok in [
            "1_0.5e-1_0",
            "inf",
            " -Infinity ",
            "nan",
            "1.",
            ".5",
            "+.5e+5",
            "1_000.000_1",
            "0",
        ] {
            assert!(is_py_float(ok), "{ok}");
        }
        for bad in ["1e_3", "._5", "1_", "1__0", "e5", "1e", "0x10", "", "."] {
            assert!(!is_py_float(bad), "{bad}");
        }
        for bad in ["_7", "7_", " 0b1"] {
            assert_eq!(crate::wire::python::int(bad, 8), None, "{bad}");
        }
        assert!(is_py_digit("007") && !is_py_digit("") && !is_py_digit("-1"));
    }

    #[test]
    fn validators() {
        let e = |r: Result<(), ApiError>| r.unwrap_err().msg;
        assert_eq!(e(check_service_name("")), "Service name cannot be empty");
        assert_eq!(
            e(check_service_name("a/b")),
            "Service name cannot contain a slash"
        );
        assert_eq!(
            e(check_service_name("..")),
            "Service name cannot be \".\" or \"..\""
        );
        assert_eq!(
            e(check_service_name(&"x".repeat(49))),
            "Service name must not exceed 48 bytes"
        );
        assert!(check_service_name(&"x".repeat(48)).is_ok());
        assert!(check_service_name(&format!("app-dispvm.{}", "x".repeat(60))).is_ok());
        assert_eq!(
            e(post_set_checks("vm-config.", "")),
            "Empty config name not allowed"
        );
        assert_eq!(
            e(post_set_checks("vm-config.1a", "")),
            "Config name must start with an ASCII letter"
        );
        assert_eq!(
            e(post_set_checks(
                &format!("vm-config.{}", "a".repeat(53)),
                ""
            )),
            "VM config name must not exceed 46 bytes"
        );
        assert!(post_set_checks(&format!("vm-config.{}", "a".repeat(52)), "").is_ok());
        assert_eq!(
            e(post_set_checks("custom-persist.", "/x")),
            "custom-persist key cannot be empty"
        );
        assert_eq!(
            e(post_set_checks(
                &format!("custom-persist.{}", "k".repeat(55)),
                "/x"
            )),
            format!(
                "custom-persist key is too long (max 54), ignoring: {}",
                "k".repeat(55)
            )
        );
        assert!(post_set_checks("custom-persist.k", "/home/user").is_ok());
        assert!(post_set_checks("custom-persist.k", "dir:user:user:0755:/home/user/a:b").is_ok());
        assert_eq!(
            e(post_set_checks("custom-persist.k", "rel")),
            "invalid value format: 'rel'"
        );
        assert_eq!(
            e(post_set_checks("custom-persist.k", "pipe:u:g:0755:/x")),
            "invalid resource type option 'pipe' in value 'pipe:u:g:0755:/x'"
        );
        assert_eq!(
            e(post_set_checks("custom-persist.k", "file:u:g:17777:/x")),
            "invalid mode option '17777' in value 'file:u:g:17777:/x'"
        );
    }
}
