//! The qrexec policy, evaluated as qrexec's policy daemon and qubesd's filters evaluate it
//! (`qrexec-and-policy.md` §2): [`parse`] loads the files into rules; [`evaluate`] finds the
//! first rule that matches a request and resolves it into a verdict. Nothing here executes
//! anything: the verdict is what a caller (the result filters of `admin.vm.List` and
//! `admin.Events`, a local-qrexec tool) acts on. OWNER: policy.

pub mod parse;

use std::path::PathBuf;

pub use parse::{load, parse_text, Sources};

/// Why a policy could not be loaded: every call is then denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy syntax error in {file}:{line}: {msg}", file = .file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("failed to load policy: {path}: {msg}", path = .path.display())]
    Io { path: PathBuf, msg: String },
}

/// A token of the SOURCE or TARGET column, or of `target=` / `default_target=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// `*`
    Any,
    /// `@anyvm`: everything but dom0.
    AnyVm,
    /// `@adminvm`
    AdminVm,
    /// `@default`
    Default,
    /// `@dispvm`
    DispVm,
    /// `@dispvm:NAME`
    DispVmName(String),
    /// `@dispvm:@tag:T`
    DispVmTag(String),
    /// `@tag:T`
    Tag(String),
    /// `@type:CLASS`
    Type(String),
    /// A qube's name or `uuid:<uuid>`.
    Name(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Ask,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pub target: Option<Token>,
    pub default_target: Option<Token>,
    pub user: Option<String>,
    pub notify: Option<bool>,
    pub autostart: Option<bool>,
}

/// One rule, with where it was read (file, line; line 0 for the implicit ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `None`: `*`.
    pub service: Option<String>,
    /// `None`: `*`; else starting with `+`.
    pub argument: Option<String>,
    pub source: Token,
    pub target: Token,
    pub action: Action,
    pub params: Params,
    pub origin: (PathBuf, usize),
}

/// What the policy knows of one qube (`internal.GetSystemInfo`'s entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub name: String,
    pub uuid: String,
    /// The class: `AppVM`, `AdminVM`, …
    pub class: String,
    pub tags: Vec<String>,
    pub template_for_dispvms: bool,
    pub default_dispvm: Option<String>,
    /// The feature `internal`: never offered as a choice of an ask.
    pub internal: bool,
}

/// The system a request is evaluated against. Power state is asked only when an
/// `autostart=no` rule needs it.
pub struct SystemInfo<'a> {
    pub domains: &'a [DomainInfo],
    pub is_running: &'a dyn Fn(&str) -> bool,
}

const DOM0_UUID: &str = "00000000-0000-0000-0000-000000000000";

impl SystemInfo<'_> {
    /// The domain a name or `uuid:` alias names (dom0 also as `@adminvm`).
    pub fn find(&self, s: &str) -> Option<&DomainInfo> {
        if s == "@adminvm" {
            return self.domains.iter().find(|d| d.class == "AdminVM");
        }
        match s.strip_prefix("uuid:") {
            Some(u) => self.domains.iter().find(|d| d.uuid.eq_ignore_ascii_case(u)),
            None => self.domains.iter().find(|d| d.name == s),
        }
    }
}

fn is_dom0_form(s: &str) -> bool {
    s == "dom0" || s == "@adminvm" || s == format!("uuid:{DOM0_UUID}")
}

/// A request: who calls what on which target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub service: String,
    /// With its `+` (`+` alone: no argument).
    pub argument: String,
    pub source: String,
    /// As requested (empty: `@default`).
    pub target: String,
}

/// The outcome of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        /// The resolved target (`dom0` for the AdminVM, `@dispvm:<template>` for a new
        /// disposable).
        target: String,
        user: Option<String>,
        notify: bool,
        autostart: bool,
    },
    Ask {
        /// The choices, sorted.
        targets: Vec<String>,
        default_target: Option<String>,
        user: Option<String>,
        notify: bool,
        autostart: bool,
    },
    Deny {
        notify: bool,
        reason: String,
    },
}

impl Verdict {
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }
}

fn deny(reason: impl Into<String>) -> Verdict {
    Verdict::Deny {
        notify: true,
        reason: reason.into(),
    }
}

/// Normalises the requested target (§2.6 step 1): empty or naming no qube → `@default`; a
/// `@dispvm:X` must name a disposable template.
fn normalise_target(req: &Request, sys: &SystemInfo<'_>) -> Result<String, String> {
    let t = req.target.as_str();
    if t.is_empty() || t == "@default" {
        return Ok("@default".to_string());
    }
    if t == "@dispvm" {
        return Ok(t.to_string());
    }
    if let Some(name) = t.strip_prefix("@dispvm:") {
        return match sys.find(name) {
            Some(d) if d.template_for_dispvms => Ok(format!("@dispvm:{}", d.name)),
            _ => Err(format!("not a disposable template: {name}")),
        };
    }
    if is_dom0_form(t) {
        return Ok(t.to_string());
    }
    Ok(match sys.find(t) {
        Some(_) => t.to_string(),
        None => "@default".to_string(),
    })
}

/// The caller's default disposable template (if it is one).
fn default_dispvm<'s>(source: &str, sys: &'s SystemInfo<'_>) -> Option<&'s DomainInfo> {
    let name = sys.find(source)?.default_dispvm.as_deref()?;
    sys.find(name).filter(|d| d.template_for_dispvms)
}

/// The disposable template a `@dispvm`/`@dispvm:X` value stands for.
fn dispvm_template<'s>(
    value: &str,
    source: &str,
    sys: &'s SystemInfo<'_>,
) -> Option<&'s DomainInfo> {
    if value == "@dispvm" {
        return default_dispvm(source, sys);
    }
    let name = value.strip_prefix("@dispvm:")?;
    sys.find(name).filter(|d| d.template_for_dispvms)
}

/// Whether `tok` (SOURCE or TARGET column) matches the value `v` (a qube's name or alias, or,
/// as a target, a keyword). `source` is the caller (for `@dispvm`'s default).
fn matches(tok: &Token, v: &str, source: &str, sys: &SystemInfo<'_>) -> bool {
    let keyword = v.starts_with('@') && v != "@adminvm";
    match tok {
        Token::Any => true,
        Token::AnyVm => !is_dom0_form(v),
        Token::AdminVm => is_dom0_form(v),
        Token::Default => v == "@default",
        Token::DispVm => v == "@dispvm",
        Token::DispVmName(n) => {
            v.starts_with("@dispvm")
                && dispvm_template(v, source, sys).is_some_and(|d| d.name == *n)
        }
        Token::DispVmTag(t) => {
            v.starts_with("@dispvm")
                && dispvm_template(v, source, sys).is_some_and(|d| d.tags.contains(t))
        }
        Token::Tag(t) => {
            !keyword && v != "@adminvm" && sys.find(v).is_some_and(|d| d.tags.contains(t))
        }
        Token::Type(c) => !keyword && v != "@adminvm" && sys.find(v).is_some_and(|d| d.class == *c),
        Token::Name(n) => {
            if keyword {
                return false;
            }
            if is_dom0_form(n) || is_dom0_form(v) {
                return is_dom0_form(n) && is_dom0_form(v);
            }
            n == v || matches!((sys.find(n), sys.find(v)), (Some(a), Some(b)) if a.name == b.name)
        }
    }
}

fn rule_applies(r: &Rule, req: &Request) -> bool {
    r.service.as_deref().is_none_or(|s| s == req.service)
        && r.argument.as_deref().is_none_or(|a| a == req.argument)
}

/// Evaluates `req` against `rules` (§2.6): the first matching rule decides; none matching is a
/// deny.
pub fn evaluate(rules: &[Rule], req: &Request, sys: &SystemInfo<'_>) -> Verdict {
    let target = match normalise_target(req, sys) {
        Ok(t) => t,
        Err(why) => return deny(why),
    };
    let Some(rule) = rules.iter().find(|r| {
        rule_applies(r, req)
            && matches(&r.source, &req.source, &req.source, sys)
            && matches(&r.target, &target, &req.source, sys)
    }) else {
        return deny("no matching rule found");
    };
    let p = &rule.params;
    let notify = p.notify.unwrap_or(rule.action == Action::Deny);
    let autostart = p.autostart.unwrap_or(true);
    match rule.action {
        Action::Deny => Verdict::Deny {
            notify,
            reason: format!(
                "denied by policy {}:{}",
                rule.origin.0.display(),
                rule.origin.1
            ),
        },
        Action::Allow => {
            let requested = match &p.target {
                Some(t) => redirect(t, sys),
                None => target,
            };
            match resolve_allow(&requested, &req.source, autostart, sys) {
                Ok(target) => Verdict::Allow {
                    target,
                    user: p.user.clone(),
                    notify,
                    autostart,
                },
                Err(why) => deny(why),
            }
        }
        Action::Ask => ask(rules, req, rule, sys, notify, autostart),
    }
}

/// The value of a `target=`/`default_target=` token, re-checked as a requested target (a
/// qube that does not exist becomes `@default`).
fn redirect(t: &Token, sys: &SystemInfo<'_>) -> String {
    match t {
        Token::AdminVm => "dom0".to_string(),
        Token::DispVm => "@dispvm".to_string(),
        Token::DispVmName(n) => format!("@dispvm:{n}"),
        Token::Name(n) if is_dom0_form(n) => "dom0".to_string(),
        Token::Name(n) => match sys.find(n) {
            Some(d) => d.name.clone(),
            None => "@default".to_string(),
        },
        _ => "@default".to_string(),
    }
}

/// §2.6 step 3: the target an allow resolves to.
fn resolve_allow(
    target: &str,
    source: &str,
    autostart: bool,
    sys: &SystemInfo<'_>,
) -> Result<String, String> {
    let resolved = if target == "@default" {
        return Err("policy define 'allow' action without target".to_string());
    } else if target == "@dispvm" {
        match default_dispvm(source, sys) {
            Some(d) => format!("@dispvm:{}", d.name),
            None => return Err("no default disposable template".to_string()),
        }
    } else if let Some(name) = target.strip_prefix("@dispvm:") {
        match sys.find(name).filter(|d| d.template_for_dispvms) {
            Some(d) => format!("@dispvm:{}", d.name),
            None => return Err(format!("not a disposable template: {name}")),
        }
    } else if is_dom0_form(target) {
        "dom0".to_string()
    } else {
        match sys.find(target) {
            Some(d) => d.name.clone(),
            None => return Err(format!("no such qube: {target}")),
        }
    };
    if !autostart && resolved != "dom0" {
        let running = !resolved.starts_with("@dispvm") && (sys.is_running)(&resolved);
        if !running {
            return Err(format!("{resolved} is not running and autostart=no"));
        }
    }
    Ok(resolved)
}

/// §2.6 step 4: an ask's choices (the redirect, or what the rules for this service, argument
/// and source would allow), its default, and a deny when no choice is left.
fn ask(
    rules: &[Rule],
    req: &Request,
    rule: &Rule,
    sys: &SystemInfo<'_>,
    notify: bool,
    autostart: bool,
) -> Verdict {
    let mut out: Vec<String> = Vec::new();
    if let Some(t) = &rule.params.target {
        let t = redirect(t, sys);
        if t != "@default" {
            out.push(t);
        }
    } else {
        let candidates: Vec<String> = sys
            .domains
            .iter()
            .map(|d| d.name.clone())
            .chain(std::iter::once("@dispvm".to_string()))
            .chain(
                sys.domains
                    .iter()
                    .filter(|d| d.template_for_dispvms)
                    .map(|d| format!("@dispvm:{}", d.name)),
            )
            .collect();
        let mut set: Vec<String> = Vec::new();
        for r in rules
            .iter()
            .rev()
            .filter(|r| rule_applies(r, req) && matches(&r.source, &req.source, &req.source, sys))
        {
            for c in &candidates {
                if matches(&r.target, c, &req.source, sys) {
                    match r.action {
                        Action::Deny => set.retain(|x| x != c),
                        _ if !set.contains(c) => set.push(c.clone()),
                        _ => {}
                    }
                }
            }
        }
        // `@dispvm` stands for the caller's default; dom0's forms are `dom0`; the caller
        // itself and `internal` qubes are not offered.
        for t in set {
            let t = if t == "@dispvm" {
                match default_dispvm(&req.source, sys) {
                    Some(d) => format!("@dispvm:{}", d.name),
                    None => continue,
                }
            } else if is_dom0_form(&t) {
                "dom0".to_string()
            } else {
                t
            };
            let internal = sys
                .find(&t)
                .is_some_and(|d| d.internal && d.class != "AdminVM");
            if !internal && t != req.source && !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return deny("no target to ask for");
    }
    let default_target = rule
        .params
        .default_target
        .as_ref()
        .map(|t| redirect(t, sys))
        .filter(|t| out.contains(t));
    Verdict::Ask {
        targets: out,
        default_target,
        user: rule.params.user.clone(),
        notify,
        autostart,
    }
}

/// The per-event filter of `admin.Events` for a caller other than dom0 (§3.2): an event is
/// sent iff the policy allows (`admin.Events`, `+<event with : as _>`, caller, the event's
/// qube: its subject, else its `vm` argument, else `@adminvm`). The policy and the system are
/// those of the moment the stream began; a qube created later is not in that system, so its
/// events pass only rules that match `@default` (as `@anyvm` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    pub rules: Vec<Rule>,
    pub domains: Vec<DomainInfo>,
    /// The caller.
    pub source: String,
}

impl EventFilter {
    pub fn allows(&self, subject: &str, event: &str, vm: Option<&str>) -> bool {
        let dest = if subject.is_empty() {
            vm.unwrap_or("@adminvm")
        } else {
            subject
        };
        // No power state in a stream: an `autostart=no` rule counts the qube as halted.
        let sys = SystemInfo {
            domains: &self.domains,
            is_running: &|_| false,
        };
        let req = Request {
            service: "admin.Events".to_string(),
            argument: format!("+{}", event.replace(':', "_")),
            source: self.source.clone(),
            target: dest.to_string(),
        };
        evaluate(&self.rules, &req, &sys).is_allow()
    }
}

#[cfg(test)]
mod tests;
