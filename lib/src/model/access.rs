//! What a caller other than dom0 may see, decided by the qrexec policy as qubesd's filters
//! decide it (`qrexec-and-policy.md` §3.4): the policy loaded per call (so it is never stale),
//! the system as the policy daemon sees it (`internal.GetSystemInfo`'s fields), and one
//! evaluation per qube. dom0 is never filtered.

use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::model::power_state::{always_running, vm_power_state};
use crate::model::props::{defaults, value::Val};
use crate::policy::{self, DomainInfo, Request, Rule, SystemInfo};
use crate::store::DomId;
use crate::wire::python::json_str;

/// Where the policy is read: `<run_dir>/policy.d` (qrexec 4.3's runtime directory, when it
/// exists), then `QUBES_POLICY_DIR`; `!compat-4.0` reads `QUBES_POLICY_COMPAT_DIR`.
pub fn sources(config: &crate::Config) -> policy::Sources {
    let runtime = config.run_dir.join("policy.d");
    let mut dirs = Vec::new();
    if runtime.is_dir() {
        dirs.push(runtime);
    }
    dirs.push(config.policy_dir.clone());
    policy::Sources {
        dirs,
        compat_dir: config.policy_compat_dir.clone(),
    }
}

/// The policy, or a clear error where the reference drops the connection (a policy that does
/// not load denies everything).
pub fn load_rules(ctx: &Ctx<'_>) -> Result<Vec<Rule>, ApiError> {
    policy::load(&sources(ctx.config)).map_err(|e| {
        ApiError::new(
            crate::error::ExcType::PermissionDenied,
            format!("the qrexec policy could not be loaded, so nothing is shown: {e}"),
        )
    })
}

/// Every qube as the policy sees it.
pub fn domains(ctx: &Ctx<'_>) -> Result<Vec<DomainInfo>, ApiError> {
    let doc = ctx.doc();
    let mut out = Vec::new();
    for id in doc.domains() {
        let data = doc.data(id)?;
        let default_dispvm = match defaults::vm_prop(ctx, id, "default_dispvm", 0) {
            Ok(Val::Vm(n)) => Some(n),
            _ => None,
        };
        out.push(DomainInfo {
            name: doc.name(id).to_string(),
            uuid: doc.uuid(id).unwrap_or_default().to_string(),
            class: doc.class(id).to_string(),
            tags: data.tags().into_iter().map(str::to_string).collect(),
            template_for_dispvms: defaults::vm_prop(ctx, id, "template_for_dispvms", 0)
                .is_ok_and(|v| v.truthy()),
            default_dispvm,
            internal: data.feature("internal").is_some_and(|v| !v.is_empty()),
        });
    }
    Ok(out)
}

/// `internal.GetSystemInfo`'s reply: every qube as the qrexec policy daemon sees it, in
/// qubes.xml's order, each with the reference's keys in its order, as Python's `json.dumps`
/// writes them. A VM-valued property that does not apply to the class (or is empty) is `null`.
pub fn system_info_json(ctx: &Ctx<'_>) -> Result<String, ApiError> {
    let doc = ctx.doc();
    let vm_name = |id: DomId, prop: &str| match defaults::vm_prop(ctx, id, prop, 0) {
        Ok(Val::Vm(n)) => json_str(&n),
        _ => "null".to_string(),
    };
    let text = |id: DomId, prop: &str| match defaults::vm_text(ctx, id, prop) {
        Some(t) => json_str(&t),
        None => "null".to_string(),
    };
    let mut entries = Vec::new();
    for (id, info) in doc.domains().into_iter().zip(domains(ctx)?) {
        let live = if always_running(&info.class) {
            None
        } else {
            ctx.runtime()?.by_uuid(&info.uuid).cloned()
        };
        let mut tags = info.tags.clone();
        tags.sort();
        let tags: Vec<String> = tags.iter().map(|t| json_str(t)).collect();
        entries.push(format!(
            "{}: {{\"tags\": [{}], \"type\": {}, \"template_for_dispvms\": {}, \
             \"default_dispvm\": {}, \"power_state\": {}, \"uuid\": {}, \"icon\": {}, \
             \"label\": {}, \"guivm\": {}, \"relayvm\": {}, \"transport_rpc\": {}, \
             \"internal\": {}}}",
            json_str(&info.name),
            tags.join(", "),
            json_str(&info.class),
            info.template_for_dispvms,
            info.default_dispvm
                .as_deref()
                .map_or_else(|| "null".to_string(), json_str),
            json_str(vm_power_state(ctx, id, live.as_ref())?.as_str()),
            json_str(&info.uuid.to_ascii_lowercase()),
            text(id, "icon"),
            text(id, "label"),
            vm_name(id, "guivm"),
            vm_name(id, "relayvm"),
            text(id, "transport_rpc"),
            info.internal,
        ));
    }
    Ok(format!("{{\"domains\": {{{}}}}}", entries.join(", ")))
}

/// The `admin.Events` filter for the caller (who must not be dom0).
pub fn event_filter(ctx: &Ctx<'_>) -> Result<policy::EventFilter, ApiError> {
    Ok(policy::EventFilter {
        rules: load_rules(ctx)?,
        domains: domains(ctx)?,
        source: ctx.doc().name(ctx.src).to_string(),
    })
}

/// The policy's verdict on `req` with this call's view of the system (`domains`, from
/// [`domains`]): the power state is asked of the hypervisor only if a rule needs it.
pub fn evaluate(
    ctx: &Ctx<'_>,
    rules: &[Rule],
    domains: &[DomainInfo],
    req: &Request,
) -> policy::Verdict {
    let running = |name: &str| {
        ctx.doc()
            .domain_by_name(name)
            .is_some_and(|id| defaults::is_running(ctx, id).unwrap_or(false))
    };
    let sys = SystemInfo {
        domains,
        is_running: &running,
    };
    policy::evaluate(rules, req, &sys)
}

/// Which of `candidates` the caller may see through `service` (`admin.vm.List`): those for
/// which the policy's verdict on (service, `+`, caller, qube) is an allow.
pub fn visible(
    ctx: &Ctx<'_>,
    service: &str,
    candidates: Vec<DomId>,
) -> Result<Vec<DomId>, ApiError> {
    if ctx.src_is_admin() {
        return Ok(candidates);
    }
    let rules = load_rules(ctx)?;
    let domains = domains(ctx)?;
    let source = ctx.doc().name(ctx.src).to_string();
    Ok(candidates
        .into_iter()
        .filter(|id| {
            let req = Request {
                service: service.to_string(),
                argument: "+".to_string(),
                source: source.clone(),
                target: ctx.doc().name(*id).to_string(),
            };
            evaluate(ctx, &rules, &domains, &req).is_allow()
        })
        .collect())
}
