//! Reading properties: the stored value if there is one, else the property's default rule
//! (§4.4/§4.5): inheritance through `template`, `netvm` and `guivm`, global defaults, values
//! derived from qid/dispid, features and the runtime state.

use super::defs::{Kind, PropDef, PropType};
use super::value::{parse_stored, Val};
use super::{table_of, Holder, ReadErr};
use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::model::features::{check_feature, Chain};
use crate::runtime::is_xen_uri;
use crate::store::DomId;

type R = Result<Val, ReadErr>;

/// Bound on template/netvm/guivm chains: a corrupt store with a loop reads as "no value"
/// instead of recursing forever (the reference would crash).
const MAX_DEPTH: u32 = 32;

/// The stored text of a property, if any (stateless ones are never read from the store).
pub fn stored<'c>(ctx: &'c Ctx<'_>, h: Holder, def: &PropDef) -> Result<Option<&'c str>, ApiError> {
    if def.kind == Kind::Stateless {
        return Ok(None);
    }
    Ok(match h {
        Holder::Global => ctx.doc().global_property(def.name),
        Holder::Vm(id) => ctx.doc().data(id)?.property(def.name),
    })
}

/// Whether the property is at its default (no stored value).
pub fn is_default(ctx: &Ctx<'_>, h: Holder, def: &PropDef) -> Result<bool, ApiError> {
    Ok(stored(ctx, h, def)?.is_none())
}

/// The effective value of `def` on `h`.
pub fn get(ctx: &Ctx<'_>, h: Holder, def: &PropDef) -> R {
    get_d(ctx, h, def, 0)
}

/// The value the property would have without a stored value.
pub fn default_of(ctx: &Ctx<'_>, h: Holder, def: &PropDef) -> R {
    match h {
        Holder::Global => global_default(ctx, def.name),
        Holder::Vm(id) => vm_default(ctx, id, def, 0),
    }
}

fn get_d(ctx: &Ctx<'_>, h: Holder, def: &PropDef, d: u32) -> R {
    if d > MAX_DEPTH {
        return Err(ReadErr::Unset);
    }
    if let Some(text) = stored(ctx, h, def)? {
        return Ok(stored_val(ctx, def, text));
    }
    match h {
        Holder::Global => global_default(ctx, def.name),
        Holder::Vm(id) => vm_default(ctx, id, def, d),
    }
}

/// Stored text as loaded (`_setter_label`): a label stored as `label-N`, by index or by name
/// shows by name; `admin.label.Remove`'s in-use check resolves it the same way.
fn stored_val(ctx: &Ctx<'_>, def: &PropDef, text: &str) -> Val {
    if def.ty == PropType::Label {
        if let Some(l) = crate::model::labels::resolve_vm_label(ctx.doc().labels(), text) {
            return Val::Text(l.name.clone());
        }
    }
    parse_stored(def.ty, text)
}

/// Reads property `name` of VM `id` (Unset if the class has no such property).
pub fn vm_prop(ctx: &Ctx<'_>, id: DomId, name: &str, d: u32) -> R {
    let table = table_of(ctx, Holder::Vm(id))?;
    let Some((_, def)) = super::defs::find(table, name) else {
        return Err(ReadErr::Unset);
    };
    get_d(ctx, Holder::Vm(id), def, d + 1)
}

/// A VM property as text (Python's `str()`: what QubesDB and libvirt are given); `None` when
/// it is None, empty or unreadable.
pub fn vm_text(ctx: &Ctx<'_>, id: DomId, name: &str) -> Option<String> {
    match vm_prop(ctx, id, name, 0) {
        Ok(Val::None) | Err(_) => None,
        Ok(v) => Some(v.py_str()).filter(|s| !s.is_empty()),
    }
}

/// A non-negative integer VM property; `None` when it is not one or unreadable.
pub fn vm_u64(ctx: &Ctx<'_>, id: DomId, name: &str) -> Option<u64> {
    match vm_prop(ctx, id, name, 0) {
        Ok(Val::Int(n)) => u64::try_from(n).ok(),
        _ => None,
    }
}

/// Reads a global property.
pub fn global_prop(ctx: &Ctx<'_>, name: &str) -> R {
    let Some((_, def)) = super::defs::find(super::defs::GLOBAL, name) else {
        return Err(ReadErr::Unset);
    };
    get_d(ctx, Holder::Global, def, 1)
}

/// A VM-valued read resolved to a domain (None for None or a dangling name).
pub fn vm_ref(ctx: &Ctx<'_>, v: &Val) -> Option<DomId> {
    v.vm().and_then(|n| ctx.doc().domain_by_name(n))
}

/// Whether the VM's class has property `name`.
pub fn has_prop(ctx: &Ctx<'_>, id: DomId, name: &str) -> bool {
    table_of(ctx, Holder::Vm(id)).is_ok_and(|t| super::defs::find(t, name).is_some())
}

/// A VM-valued property of qube `id` as a qube: `None` when its class has no such property,
/// it is None, or it names no qube.
pub fn vm_prop_ref(ctx: &Ctx<'_>, id: DomId, name: &str, d: u32) -> Option<DomId> {
    vm_prop(ctx, id, name, d).ok().and_then(|v| vm_ref(ctx, &v))
}

/// A VM-valued global property (its default included) as a qube.
pub fn global_vm(ctx: &Ctx<'_>, name: &str) -> Option<DomId> {
    global_prop(ctx, name).ok().and_then(|v| vm_ref(ctx, &v))
}

/// The VM's template, if its class has one and it is set.
pub fn template_of(ctx: &Ctx<'_>, id: DomId, d: u32) -> Option<DomId> {
    vm_prop_ref(ctx, id, "template", d)
}

/// The VM's effective netvm, if any.
pub fn netvm_of(ctx: &Ctx<'_>, id: DomId, d: u32) -> Option<DomId> {
    vm_prop_ref(ctx, id, "netvm", d)
}

/// A feature of one VM.
pub fn feature<'c>(ctx: &'c Ctx<'_>, id: DomId, name: &str) -> Option<&'c str> {
    ctx.doc().data(id).ok().and_then(|dd| dd.feature(name))
}

/// `features.check_with_template` (an unreadable domain counts as not having the feature).
pub fn feature_with_template(ctx: &Ctx<'_>, id: DomId, name: &str) -> Option<String> {
    check_feature(ctx, id, name, Chain::Template, false)
        .ok()
        .flatten()
}

/// `features.check_with_netvm` (an unreadable domain counts as not having the feature).
pub fn feature_with_netvm(ctx: &Ctx<'_>, id: DomId, name: &str) -> Option<String> {
    check_feature(ctx, id, name, Chain::Netvm, false)
        .ok()
        .flatten()
}

fn bool_prop(ctx: &Ctx<'_>, id: DomId, name: &str, d: u32) -> Result<bool, ReadErr> {
    Ok(vm_prop(ctx, id, name, d)?.truthy())
}

/// Whether the VM is running, per the hypervisor (dom0 and RemoteVMs always are).
pub fn is_running(ctx: &Ctx<'_>, id: DomId) -> Result<bool, ApiError> {
    match ctx.doc().class(id) {
        "AdminVM" | "RemoteVM" => return Ok(true),
        _ => {}
    }
    let Some(uuid) = ctx.doc().uuid(id) else {
        return Ok(false);
    };
    let rt = ctx.runtime()?;
    Ok(rt.by_uuid(uuid).is_some_and(|r| r.active))
}

/// `is_networked`: provides network, or has a netvm.
fn is_networked(ctx: &Ctx<'_>, id: DomId, d: u32) -> Result<bool, ReadErr> {
    Ok(bool_prop(ctx, id, "provides_network", d)? || netvm_of(ctx, id, d).is_some())
}

/// `vmid_to_ipv4`: keeps low ids unchanged, avoids .0 and .255 otherwise.
pub fn vmid_to_ipv4(prefix: &str, vmid: i64) -> String {
    if vmid < 255 {
        return format!("{prefix}.{}.{}", (vmid >> 8) & 0xff, vmid & 0xff);
    }
    let v = vmid - 1;
    format!("{prefix}.{}.{}", v / 254, v % 254 + 1)
}

/// The id the addresses derive from: dispid for DispVMs, else qid.
fn addr_id(ctx: &Ctx<'_>, id: DomId, d: u32) -> Result<(bool, i64), ReadErr> {
    let disp = ctx.doc().class(id) == "DispVM";
    let v = vm_prop(ctx, id, if disp { "dispid" } else { "qid" }, d)?;
    match v {
        Val::Int(i) => Ok((disp, i)),
        _ => Err(ReadErr::Unset),
    }
}

/// `_default_with_template`: the template's value, else `fallback`.
fn from_template(ctx: &Ctx<'_>, id: DomId, name: &str, d: u32, fallback: impl FnOnce() -> R) -> R {
    match template_of(ctx, id, d) {
        Some(t) => match vm_prop(ctx, t, name, d) {
            Err(ReadErr::Unset) => fallback(),
            r => r,
        },
        None => fallback(),
    }
}

fn text(s: &str) -> R {
    Ok(Val::Text(s.to_string()))
}

fn label_name(ctx: &Ctx<'_>, id: DomId, d: u32) -> Result<String, ReadErr> {
    match vm_prop(ctx, id, "label", d)? {
        Val::Text(s) => Ok(s),
        _ => Err(ReadErr::Unset),
    }
}

fn is_hvm(ctx: &Ctx<'_>, id: DomId, d: u32) -> bool {
    matches!(vm_prop(ctx, id, "virt_mode", d), Ok(Val::Text(m)) if m == "hvm")
}

/// `_default_maxmem`: 0 unless memory balancing is possible (Xen only).
fn default_maxmem(ctx: &Ctx<'_>, id: DomId, d: u32) -> R {
    if !is_xen_uri(&ctx.config.libvirt_uri) {
        return Ok(Val::Int(0));
    }
    if is_hvm(ctx, id, d) {
        let mut chain = vec![id];
        let mut cur = template_of(ctx, id, d);
        while let Some(t) = cur {
            if chain.len() > MAX_DEPTH as usize || chain.contains(&t) {
                break;
            }
            chain.push(t);
            cur = template_of(ctx, t, d);
        }
        let supported = chain.iter().any(|vm| {
            ctx.doc().data(*vm).is_ok_and(|dd| {
                dd.features()
                    .iter()
                    .any(|(k, _)| k.starts_with("supported-service."))
            })
        });
        let truthy = |f: &str| feature_with_template(ctx, id, f).is_some_and(|v| !v.is_empty());
        if !truthy("qrexec") || (supported && !truthy("supported-service.meminfo-writer")) {
            return Ok(Val::Int(0));
        }
    }
    let base = if feature(ctx, id, "os") == Some("Linux") {
        match vm_prop(ctx, id, "memory", d)? {
            Val::Int(m) => m.saturating_mul(10),
            _ => 4000,
        }
    } else {
        4000
    };
    let half = i64::try_from(ctx.runtime()?.host.memory_mib / 2).unwrap_or(i64::MAX);
    let own = base.min(half);
    from_template(ctx, id, "maxmem", d, || Ok(Val::Int(own)))
}

/// dom0's maxmem: its libvirt domain's memory (4096 when unknown, as on the Xen command line).
fn admin_maxmem(ctx: &Ctx<'_>, id: DomId) -> R {
    let uuid = ctx
        .doc()
        .uuid(id)
        .unwrap_or("00000000-0000-0000-0000-000000000000");
    let rt = ctx.runtime()?;
    let kib = rt.by_uuid(uuid).map(|r| {
        if is_xen_uri(&ctx.config.libvirt_uri) {
            r.max_mem_kib
        } else {
            r.mem_kib
        }
    });
    Ok(Val::Int(match kib {
        Some(k) if k > 0 => i64::try_from(k / 1024).unwrap_or(4096),
        _ => 4096,
    }))
}

/// Directory holding `<kernel>/`: the linux-kernel pool's dir, else `<base>/vm-kernels`.
fn kernels_dir(ctx: &Ctx<'_>) -> std::path::PathBuf {
    let pool = ctx
        .doc()
        .pools()
        .iter()
        .find(|p| p.driver == "linux-kernel");
    let dir = pool.and_then(|p| {
        p.attrs
            .iter()
            .find(|(k, _)| k == "dir_path")
            .map(|(_, v)| v)
    });
    match dir {
        Some(d) => std::path::PathBuf::from(d),
        None => ctx.config.base_dir.join("vm-kernels"),
    }
}

/// `_default_kernelopts` (PCI devices are not modelled: treated as none assigned).
fn default_kernelopts(ctx: &Ctx<'_>, id: DomId, d: u32) -> R {
    let kernel = vm_prop(ctx, id, "kernel", d)?;
    if !kernel.truthy() {
        return text("");
    }
    if let Some(t) = template_of(ctx, id, d) {
        match vm_prop(ctx, t, "kernelopts", d) {
            Err(ReadErr::Unset) => {}
            r => return r,
        }
    }
    let path = kernels_dir(ctx)
        .join(kernel.reply_str())
        .join("default-kernelopts-nopci.txt");
    match std::fs::read_to_string(path) {
        Ok(s) => text(s.trim()),
        Err(_) => text("swiotlb=2048"),
    }
}

/// `_default_bootmode`.
fn default_bootmode(ctx: &Ctx<'_>, id: DomId, d: u32) -> R {
    let has_opts = |vm: DomId, mode: &str| {
        feature_with_template(ctx, vm, &format!("boot-mode.kernelopts.{mode}")).is_some()
    };
    if let Some(active) = feature(ctx, id, "boot-mode.active") {
        if active == "default" {
            return text("default");
        }
        if has_opts(id, active) {
            return text(active);
        }
    }
    let mut subject = id;
    for _ in 0..MAX_DEPTH {
        let Some(t) = template_of(ctx, subject, d) else {
            break;
        };
        if has_prop(ctx, t, "appvm_default_bootmode") {
            if let Ok(Val::Text(mode)) = vm_prop(ctx, t, "appvm_default_bootmode", d) {
                if mode == "default" {
                    return text("default");
                }
                if has_opts(subject, &mode) {
                    return Ok(Val::Text(mode));
                }
            }
        }
        subject = t;
    }
    text("default")
}

/// `icon`: from class, label, the `servicevm` feature and template_for_dispvms.
fn icon(ctx: &Ctx<'_>, id: DomId, d: u32) -> R {
    let class = ctx.doc().class(id);
    if class == "AdminVM" {
        return text("adminvm-black");
    }
    let label = label_name(ctx, id, d)?;
    if class == "AppVM" && bool_prop(ctx, id, "template_for_dispvms", d)? {
        return Ok(Val::Text(format!("templatevm-{label}")));
    }
    let prefix = match class {
        "TemplateVM" => "templatevm",
        _ if feature(ctx, id, "servicevm").is_some_and(|v| !v.is_empty()) => "servicevm",
        "DispVM" => "dispvm",
        "StandaloneVM" => "standalonevm",
        "RemoteVM" => "remotevm",
        _ => "appvm",
    };
    Ok(Val::Text(format!("{prefix}-{label}")))
}

fn vm_default(ctx: &Ctx<'_>, id: DomId, def: &PropDef, d: u32) -> R {
    let class = ctx.doc().class(id);
    let admin = class == "AdminVM";
    let name = def.name;
    match name {
        "name" if admin => text("dom0"),
        "qid" if admin => Ok(Val::Int(0)),
        "uuid" if admin => text("00000000-0000-0000-0000-000000000000"),
        "maxmem" if admin => admin_maxmem(ctx, id),
        "keyboard_layout" if admin => text("us++"),
        "updateable" if admin => Ok(Val::Bool(true)),
        "klass" => text(class),
        "icon" => icon(ctx, id, d),
        "include_in_backups" => match class {
            "RemoteVM" => Ok(Val::Bool(false)),
            "DispVM" => Ok(Val::Bool(!bool_prop(ctx, id, "auto_cleanup", d)?)),
            _ => Ok(Val::Bool(true)),
        },
        "devices_denied" => text(""),
        "autostart"
        | "debug"
        | "installed_by_rpm"
        | "provides_network"
        | "template_for_dispvms"
        | "auto_cleanup" => Ok(Val::Bool(false)),
        "updateable" => Ok(Val::Bool(!has_prop(ctx, id, "template"))),
        "backup_timestamp" | "stubdom_mem" | "relayvm" | "transport_rpc" | "remote_name" => {
            Ok(Val::None)
        }
        "mac" => text("00:16:3e:5e:6c:00"),
        "default_user" => from_template(ctx, id, name, d, || text("user")),
        "memory" => from_template(ctx, id, name, d, || Ok(Val::Int(400))),
        "vcpus" => from_template(ctx, id, name, d, || Ok(Val::Int(2))),
        "kernel" => from_template(ctx, id, name, d, || global_prop(ctx, "default_kernel")),
        "qrexec_timeout" => from_template(ctx, id, name, d, || {
            global_prop(ctx, "default_qrexec_timeout")
        }),
        "shutdown_timeout" => from_template(ctx, id, name, d, || {
            global_prop(ctx, "default_shutdown_timeout")
        }),
        "management_dispvm" => from_template(ctx, id, name, d, || global_prop(ctx, name)),
        "virt_mode" => from_template(ctx, id, name, d, || text("pvh")),
        "maxmem" => default_maxmem(ctx, id, d),
        "kernelopts" => default_kernelopts(ctx, id, d),
        "bootmode" => default_bootmode(ctx, id, d),
        "appvm_default_bootmode" => {
            text(feature(ctx, id, "boot-mode.appvm-default").unwrap_or("default"))
        }
        "keyboard_layout" => {
            let guivm = vm_prop_ref(ctx, id, "guivm", d);
            match guivm {
                Some(g) => match vm_prop(ctx, g, "keyboard_layout", d) {
                    Err(ReadErr::Unset) => text("us++"),
                    r => r,
                },
                None => text("us++"),
            }
        }
        "guivm" => global_prop(ctx, "default_guivm"),
        "audiovm" => global_prop(ctx, "default_audiovm"),
        "default_dispvm" if class == "DispVM" => vm_prop(ctx, id, "template", d),
        "default_dispvm" => global_prop(ctx, "default_dispvm"),
        "netvm" if class == "TemplateVM" => Ok(Val::None),
        "netvm" => global_prop(ctx, "default_netvm"),
        "ip" => {
            if !is_networked(ctx, id, d)? {
                return Ok(Val::None);
            }
            let (disp, n) = addr_id(ctx, id, d)?;
            Ok(Val::Text(vmid_to_ipv4(
                if disp { "10.138" } else { "10.137" },
                n,
            )))
        }
        "ip6" => {
            if !is_networked(ctx, id, d)?
                || feature_with_netvm(ctx, id, "ipv6").is_none_or(|v| v.is_empty())
            {
                return Ok(Val::None);
            }
            let (disp, n) = addr_id(ctx, id, d)?;
            let s = format!(
                "fd09:24ef:4179:0000::{}:{n:x}",
                if disp { "a8a" } else { "a89" }
            );
            Ok(Val::Text(super::value::py_ipv6(&s).unwrap_or(s)))
        }
        "dns" => {
            if netvm_of(ctx, id, d).is_some() || bool_prop(ctx, id, "provides_network", d)? {
                text("10.139.1.1 10.139.1.2")
            } else {
                Ok(Val::None)
            }
        }
        "gateway" => {
            if bool_prop(ctx, id, "provides_network", d)? {
                vm_prop(ctx, id, "visible_ip", d)
            } else {
                Ok(Val::None)
            }
        }
        "gateway6" => {
            let ipv6 = feature_with_netvm(ctx, id, "ipv6").is_some_and(|v| !v.is_empty());
            if ipv6 && bool_prop(ctx, id, "provides_network", d)? {
                vm_prop(ctx, id, "visible_ip6", d)
            } else {
                Ok(Val::None)
            }
        }
        "visible_ip" => match feature_with_template(ctx, id, "net.fake-ip") {
            Some(v) if !v.is_empty() => Ok(Val::Text(v)),
            _ => vm_prop(ctx, id, "ip", d),
        },
        "visible_ip6" => vm_prop(ctx, id, "ip6", d),
        "visible_gateway" => match feature_with_template(ctx, id, "net.fake-gateway") {
            Some(v) if !v.is_empty() => Ok(Val::Text(v)),
            _ => match netvm_of(ctx, id, d) {
                Some(n) => vm_prop(ctx, n, "gateway", d),
                None => Ok(Val::None),
            },
        },
        "visible_gateway6" => {
            if feature_with_netvm(ctx, id, "ipv6").is_none_or(|v| v.is_empty()) {
                return Ok(Val::None);
            }
            match netvm_of(ctx, id, d) {
                Some(n) => vm_prop(ctx, n, "gateway6", d),
                None => Ok(Val::None),
            }
        }
        "visible_netmask" => match feature_with_template(ctx, id, "net.fake-netmask") {
            Some(v) if !v.is_empty() => Ok(Val::Text(v)),
            _ => match netvm_of(ctx, id, d) {
                Some(n) if is_networked(ctx, n, d)? => text("255.255.255.255"),
                _ => Ok(Val::None),
            },
        },
        "xid" => {
            let uuid = ctx.doc().uuid(id).unwrap_or_default();
            let rt = ctx.runtime()?;
            Ok(Val::Int(
                rt.by_uuid(uuid).filter(|r| r.active).map_or(-1, |r| r.id),
            ))
        }
        // Read from xenstore by the reference; not available here: unreadable when running.
        "start_time" => {
            if is_running(ctx, id)? {
                Err(ReadErr::Unset)
            } else {
                Ok(Val::None)
            }
        }
        "stubdom_xid" => Ok(Val::Int(-1)),
        "stubdom_uuid" => text(""),
        "is_preload" => {
            let Some(t) = template_of(ctx, id, d) else {
                return Err(ReadErr::Unset);
            };
            let me = ctx.doc().name(id);
            let listed = feature(ctx, t, "preload-dispvm")
                .is_some_and(|v| !v.is_empty() && v.split(' ').any(|n| n == me));
            Ok(Val::Bool(listed))
        }
        // label, template, dispid, name, qid, uuid: no default.
        _ => Err(ReadErr::Unset),
    }
}

fn global_default(ctx: &Ctx<'_>, name: &str) -> R {
    match name {
        "check_updates_vm" => Ok(Val::Bool(true)),
        "default_audiovm" | "default_guivm" => match ctx.doc().domain_by_name("dom0") {
            Some(_) => Ok(Val::Vm("dom0".to_string())),
            None => Err(ReadErr::Unset),
        },
        "clockvm" | "default_dispvm" | "default_netvm" | "management_dispvm" | "updatevm" => {
            Ok(Val::None)
        }
        "default_qrexec_timeout" | "default_shutdown_timeout" => Ok(Val::Int(60)),
        "stats_interval" => Ok(Val::Int(3)),
        "maxmem" => {
            let mib = ctx.runtime()?.host.memory_mib;
            Ok(Val::Int(i64::try_from(mib).unwrap_or(i64::MAX)))
        }
        "no_cpus" => Ok(Val::Int(i64::from(ctx.runtime()?.host.cpus))),
        "default_pool" => default_pool(ctx),
        "default_pool_kernel"
        | "default_pool_private"
        | "default_pool_root"
        | "default_pool_volatile" => global_prop(ctx, "default_pool"),
        // default_kernel, default_template: no default.
        _ => Err(ReadErr::Unset),
    }
}

/// `_default_pool`: a pool named `default`, else a file pool whose dir is the base dir. (The
/// reference also probes LVM thin pools of the root filesystem; not done here.)
fn default_pool(ctx: &Ctx<'_>) -> R {
    let pools = ctx.doc().pools();
    if pools.iter().any(|p| p.name == "default") {
        return text("default");
    }
    let base = ctx.config.base_dir.to_string_lossy();
    let found = pools.iter().find(|p| {
        matches!(p.driver.as_str(), "file" | "file-reflink")
            && p.attrs.iter().any(|(k, v)| {
                k == "dir_path" && v.trim_end_matches('/') == base.trim_end_matches('/')
            })
    });
    match found {
        Some(p) => Ok(Val::Text(p.name.clone())),
        None => Err(ReadErr::Unset),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ipv4_from_ids() {
        assert_eq!(vmid_to_ipv4("10.137", 6), "10.137.0.6");
        assert_eq!(vmid_to_ipv4("10.137", 254), "10.137.0.254");
        assert_eq!(vmid_to_ipv4("10.137", 255), "10.137.1.1");
        assert_eq!(vmid_to_ipv4("10.138", 9401), "10.138.37.3");
    }

    #[test]
    fn ipv6_canonical() {
        assert_eq!(
            super::super::value::py_ipv6("fd09:24ef:4179:0000::a89:6").as_deref(),
            Some("fd09:24ef:4179::a89:6")
        );
    }
}
