//! The reference's load-time migrations (`core.md` §6 "Migrations on load", §12 item 38): what
//! qubesd 4.4 changes in memory when it loads a qubes.xml written by an older release (R4.0,
//! R4.1), a restored backup or a hand edit. As in the reference, loading never writes: every
//! call answers from the migrated view, and the first write saves the whole migrated form
//! (the sections a migration touched are re-serialised; the rest is spliced as always).
//!
//! A current file must not pay for this: [`prepare`] first looks at what the index already
//! parsed (labels, pools, global properties), then trusts a marker naming the exact version
//! of qubes.xml found current before (`<run_dir>/qubes-admin/qubes.xml.current`: device,
//! inode, size, modification time), and only otherwise scans the bytes for the old forms.
//! Migrations fire no events (the reference loads with events disabled).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::error::ApiError;
use crate::model::context::{Call, Ctx, DocRef};
use crate::model::props::{defaults, defs, setters, value::Val};
use crate::model::volumes;
use crate::runtime::Hypervisor;
use crate::storage::volume::volume_config_xml;
use crate::store::{Document, DomId, FileStamp, Pool};
use crate::Config;

/// Byte forms that only older files (or hand edits) contain, searched for in the domains.
const OLD_FORMS: &[&[u8]] = &[
    b"ref=\"label-",
    b"ref='label-",
    b"service.meminfo-writer",
    b"name=\"hvm\"",
    b"name=\"dispvm_allowed\"",
    b"<device ",
];

/// Where the "this version is current" marker lives.
fn marker(config: &Config) -> PathBuf {
    config.run_dir.join("qubes-admin").join("qubes.xml.current")
}

fn stamp_text(s: &FileStamp) -> String {
    format!(
        "{} {} {} {} {}\n",
        s.dev, s.ino, s.size, s.mtime_ns, s.ctime_ns
    )
}

/// Records that the qubes.xml version `stamp` needs no migration (best effort: a cache; a
/// lost or stale marker only costs a scan).
pub fn mark_current(config: &Config, stamp: &FileStamp) {
    let path = marker(config);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = path.with_extension(format!("current.{}", std::process::id()));
    let written =
        std::fs::write(&tmp, stamp_text(stamp)).and_then(|_| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Brings a freshly loaded document (the version `stamp`) to the reference's migrated view,
/// in memory. Refuses a file whose domains share a qid (the reference's load fails).
pub fn prepare(
    config: &Config,
    hv: &dyn Hypervisor,
    doc: &mut Document,
    stamp: &FileStamp,
) -> Result<(), ApiError> {
    if !top_level_current(doc) {
        return migrate(config, hv, doc, stamp);
    }
    let known = std::fs::read_to_string(marker(config)).ok();
    if known.as_deref() == Some(stamp_text(stamp).as_str()) {
        return Ok(());
    }
    if domains_current(doc)? {
        mark_current(config, stamp);
        return Ok(());
    }
    migrate(config, hv, doc, stamp)
}

fn migrate(
    config: &Config,
    hv: &dyn Hypervisor,
    doc: &mut Document,
    stamp: &FileStamp,
) -> Result<(), ApiError> {
    check_unique_qids(doc)?;
    let Some(dom0) = doc.domain_by_name("dom0") else {
        return Ok(());
    };
    let call = Call {
        method: "qubes.xml load",
        src: dom0,
        dest: dom0,
        arg: String::new(),
        payload: Vec::new(),
    };
    let mut ctx = Ctx::new(config, call, DocRef::Write(doc), hv);
    let r = apply(&mut ctx);
    let outcome = ctx.finish();
    // Loading fires nothing: the events the shared setters queued are dropped, and nothing
    // done here needs undoing (no file was touched).
    drop(outcome.events);
    r?;
    if !doc.is_modified() {
        mark_current(config, stamp);
    }
    Ok(())
}

/// Labels, pools and global properties (already parsed by the index): nothing old.
fn top_level_current(doc: &Document) -> bool {
    doc.labels().iter().all(|l| !is_old_gray(&l.name, &l.color))
        && doc.pools().iter().all(|p| migrated_pool(p).is_none())
        && doc.global_property("default_fw_netvm").is_none()
}

/// The domains hold none of the old forms, qids are unique, and every qube that shows a
/// GUI/audio qube carries its extension tag (a qube without either is checked in full).
fn domains_current(doc: &Document) -> Result<bool, ApiError> {
    let mut qids = HashSet::new();
    for id in doc.domains() {
        if doc.qid(id).is_some_and(|q| !qids.insert(q)) {
            return Ok(false);
        }
        if OLD_FORMS.iter().any(|n| doc.may_contain(id, n)) {
            return Ok(false);
        }
        if is_qubesvm(doc.class(id))
            && !(doc.may_contain(id, b"name=\"guivm-") && doc.may_contain(id, b"name=\"audiovm-"))
        {
            return Ok(false);
        }
        if doc.class(id) == "StandaloneVM" && !doc.may_contain(id, b"<volume-config") {
            return Ok(false);
        }
    }
    Ok(true)
}

fn is_qubesvm(class: &str) -> bool {
    matches!(class, "AppVM" | "TemplateVM" | "StandaloneVM" | "DispVM")
}

fn is_old_gray(name: &str, color: &str) -> bool {
    name == "gray" && color.eq_ignore_ascii_case("0x555753")
}

/// Two domains with one qid: the reference's load fails (and qubesd does not start); we
/// answer every call with this error until the file is fixed.
fn check_unique_qids(doc: &Document) -> Result<(), ApiError> {
    let mut seen: HashMap<u32, DomId> = HashMap::new();
    for id in doc.domains() {
        let Some(q) = doc.qid(id) else { continue };
        if let Some(first) = seen.insert(q, id) {
            return Err(ApiError::qubes(format!(
                "qubes.xml is inconsistent: qubes '{}' and '{}' both have qid {q}; fix the file \
                 (qubesd refuses to load it too)",
                doc.name(first),
                doc.name(id)
            )));
        }
    }
    Ok(())
}

/// The attributes a pool is saved with (its driver's `config`, in order), where they differ
/// from the stored ones: missing `revisions_to_keep`/`ephemeral_volatile` get their defaults,
/// `setup_check` is not saved. Unknown drivers are left alone.
fn migrated_pool(p: &Pool) -> Option<Vec<(String, String)>> {
    let keys: &[&str] = match p.driver.as_str() {
        "file" | "file-reflink" => &[
            "name",
            "dir_path",
            "driver",
            "revisions_to_keep",
            "ephemeral_volatile",
        ],
        "lvm_thin" => &[
            "name",
            "volume_group",
            "thin_pool",
            "driver",
            "revisions_to_keep",
            "ephemeral_volatile",
        ],
        "zfs" => &[
            "name",
            "container",
            "driver",
            "revisions_to_keep",
            "ephemeral_volatile",
            "snap_on_start_forensics",
        ],
        "linux-kernel" => &["name", "dir_path", "driver"],
        _ => return None,
    };
    let get = |k: &str| p.attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let attrs: Vec<(String, String)> = keys
        .iter()
        .filter_map(|k| {
            let v = get(k).or_else(|| match *k {
                "revisions_to_keep" => Some("1".to_string()),
                "ephemeral_volatile" | "snap_on_start_forensics" => Some("False".to_string()),
                _ => None,
            })?;
            Some((k.to_string(), v))
        })
        .collect();
    (attrs != p.attrs).then_some(attrs)
}

/// Every migration, in the reference's load order: labels and pools, domains (renamed and
/// migrated properties, label references, devices, volume config), global properties, then
/// what the extensions do at `domain-load` (features, tags) and the netvm loop check.
fn apply(ctx: &mut Ctx<'_>) -> Result<(), ApiError> {
    let doc = ctx.doc_mut()?;
    for l in doc.labels().to_vec() {
        if is_old_gray(&l.name, &l.color) {
            doc.add_label(crate::store::Label {
                color: "0x555555".to_string(),
                ..l
            });
        }
    }
    for p in doc.pools().to_vec() {
        if let Some(attrs) = migrated_pool(&p) {
            doc.set_pool(Pool { attrs, ..p });
        }
    }
    let ids = ctx.doc().domains();
    for &id in &ids {
        migrate_properties(ctx, id)?;
        migrate_devices(ctx, id)?;
        if ctx.doc().class(id) == "StandaloneVM" && !has_volume_config(ctx, id)? {
            let pools = volumes::pools(ctx);
            let vols = volumes::new_volume_config(ctx, &pools, id, &Default::default())?;
            ctx.doc_mut()?
                .data_mut(id)?
                .set_raw_elements("volume-config", vec![volume_config_xml(&vols)]);
        }
    }
    migrate_global(ctx)?;
    for &id in &ids {
        meminfo_writer(ctx, id)?;
        if is_qubesvm(ctx.doc().class(id)) {
            let guivm = vm_of(ctx, id, "guivm");
            let audiovm = vm_of(ctx, id, "audiovm");
            if !tag_is(ctx, id, "guivm-", guivm.as_deref())? {
                setters::retag_guivm(ctx, id, guivm.as_deref())?;
            }
            if !tag_is(ctx, id, "audiovm-", audiovm.as_deref())? {
                setters::retag_audiovm(ctx, id, audiovm.as_deref())?;
            }
        }
    }
    break_netvm_loops(ctx, &ids)
}

fn vm_of(ctx: &Ctx<'_>, id: DomId, prop: &str) -> Option<String> {
    match defaults::vm_prop(ctx, id, prop, 0) {
        Ok(Val::Vm(n)) => Some(n),
        _ => None,
    }
}

/// Whether the qube's tags with `prefix` are exactly `<prefix><want>` (or none for None).
fn tag_is(ctx: &Ctx<'_>, id: DomId, prefix: &str, want: Option<&str>) -> Result<bool, ApiError> {
    let have: Vec<String> = ctx
        .doc()
        .data(id)?
        .tags()
        .into_iter()
        .filter_map(|t| t.strip_prefix(prefix).map(str::to_string))
        .collect();
    Ok(match want {
        Some(w) => have == [w],
        None => have.is_empty(),
    })
}

fn has_volume_config(ctx: &Ctx<'_>, id: DomId) -> Result<bool, ApiError> {
    Ok(ctx
        .doc()
        .data(id)?
        .raw_elements()
        .iter()
        .any(|(n, _)| *n == "volume-config"))
}

fn set_prop(ctx: &mut Ctx<'_>, id: DomId, name: &str, value: &str) -> Result<(), ApiError> {
    let table = defs::table(ctx.doc().class(id));
    let rank = |n: &str| table.map_or(usize::MAX, |t| defs::rank(t, n));
    ctx.doc_mut()?
        .data_mut(id)?
        .set_property(name, value, &rank);
    Ok(())
}

/// `hvm` → `virt_mode`, `dispvm_allowed` → `template_for_dispvms`, `label-N` → the label's
/// name.
fn migrate_properties(ctx: &mut Ctx<'_>, id: DomId) -> Result<(), ApiError> {
    if !(ctx.doc().may_contain(id, b"hvm")
        || ctx.doc().may_contain(id, b"dispvm_allowed")
        || ctx.doc().may_contain(id, b"label-"))
    {
        return Ok(());
    }
    let data = ctx.doc().data(id)?;
    let hvm = data.property("hvm").map(str::to_string);
    let allowed = data.property("dispvm_allowed").map(str::to_string);
    let label = data.property("label").map(str::to_string);
    if let Some(h) = hvm {
        ctx.doc_mut()?.data_mut(id)?.reset_property("hvm");
        let mode = if crate::model::props::value::py_bool(&h).unwrap_or(false) {
            "hvm"
        } else {
            "pv"
        };
        set_prop(ctx, id, "virt_mode", mode)?;
    }
    if let Some(a) = allowed {
        ctx.doc_mut()?
            .data_mut(id)?
            .reset_property("dispvm_allowed");
        set_prop(ctx, id, "template_for_dispvms", &a)?;
    }
    if let Some(index) = label
        .as_deref()
        .and_then(|l| l.strip_prefix("label-"))
        .and_then(|n| n.parse::<u32>().ok())
    {
        let name = ctx
            .doc()
            .labels()
            .iter()
            .find(|l| l.index == index)
            .map(|l| l.name.clone());
        if let Some(name) = name {
            set_prop(ctx, id, "label", &name)?;
        }
    }
    Ok(())
}

/// Device assignments in the pre-4.3 form gain `mode` (`required="no"` → `auto-attach`,
/// otherwise `required`) and `identity="*"`; dom0's empty `<devices class="usb"/>` is dropped.
fn migrate_devices(ctx: &mut Ctx<'_>, id: DomId) -> Result<(), ApiError> {
    if !ctx.doc().may_contain(id, b"<devices") {
        return Ok(());
    }
    let is_admin = ctx.doc().is_admin(id);
    let old: Vec<Vec<u8>> = ctx
        .doc()
        .data(id)?
        .raw_elements()
        .into_iter()
        .filter(|(n, _)| *n == "devices")
        .map(|(_, raw)| raw.to_vec())
        .collect();
    let mut new = Vec::new();
    for raw in &old {
        let text = String::from_utf8_lossy(raw);
        if is_admin && !text.contains("<device ") && text.contains("class=\"usb\"") {
            continue;
        }
        new.push(add_modes(&text).into_bytes());
    }
    if new != old {
        ctx.doc_mut()?
            .data_mut(id)?
            .set_raw_elements("devices", new);
    }
    Ok(())
}

/// Rewrites each `<device …>` start tag without `mode=`.
fn add_modes(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(at) = rest.find("<device ") {
        let (before, tag_on) = rest.split_at(at);
        out.push_str(before);
        let Some(end) = tag_on.find('>') else {
            out.push_str(tag_on);
            return out;
        };
        let (tag, after) = tag_on.split_at(end);
        rest = after;
        if tag.contains(" mode=") {
            out.push_str(tag);
            continue;
        }
        let (tag, self_closing) = match tag.strip_suffix('/') {
            Some(t) => (t, true),
            None => (tag, false),
        };
        let mode = if tag.contains("required=\"no\"") || tag.contains("required='no'") {
            "auto-attach"
        } else {
            "required"
        };
        let tag = drop_attr(tag, "required");
        out.push_str(tag.trim_end());
        out.push_str(&format!(" mode=\"{mode}\" identity=\"*\""));
        if self_closing {
            out.push('/');
        }
    }
    out.push_str(rest);
    out
}

fn drop_attr(tag: &str, name: &str) -> String {
    for q in ['"', '\''] {
        let open = format!(" {name}={q}");
        if let Some(s) = tag.find(&open) {
            if let Some(len) = tag.get(s + open.len()..).and_then(|r| r.find(q)) {
                let end = s + open.len() + len + 1;
                return format!(
                    "{}{}",
                    tag.get(..s).unwrap_or(""),
                    tag.get(end..).unwrap_or("")
                );
            }
        }
    }
    tag.to_string()
}

/// `default_fw_netvm` is dropped; where it differed from `default_netvm`, each qube that
/// provides network and had the default netvm gets it explicitly. `default_dispvm` and
/// `management_dispvm` naming a qube that is not a disposable template are blanked.
fn migrate_global(ctx: &mut Ctx<'_>) -> Result<(), ApiError> {
    if let Some(fw) = ctx
        .doc()
        .global_property("default_fw_netvm")
        .map(str::to_string)
    {
        let net = ctx
            .doc()
            .global_property("default_netvm")
            .map(str::to_string);
        let exists = |n: &str| n.is_empty() || ctx.doc().domain_by_name(n).is_some();
        if exists(&fw) && net.as_deref().is_none_or(exists) && net.as_deref() != Some(fw.as_str()) {
            for id in ctx.doc().domains() {
                let provides = matches!(
                    defaults::vm_prop(ctx, id, "provides_network", 0),
                    Ok(Val::Bool(true))
                );
                if provides
                    && defs::table(ctx.doc().class(id))
                        .is_some_and(|t| defs::find(t, "netvm").is_some())
                    && ctx.doc().data(id)?.property("netvm").is_none()
                {
                    set_prop(ctx, id, "netvm", &fw)?;
                }
            }
        }
        ctx.doc_mut()?.reset_global_property("default_fw_netvm");
    }
    for prop in ["default_dispvm", "management_dispvm"] {
        let Some(name) = ctx.doc().global_property(prop).map(str::to_string) else {
            continue;
        };
        let Some(target) = ctx.doc().domain_by_name(&name) else {
            continue;
        };
        let template = matches!(
            defaults::vm_prop(ctx, target, "template_for_dispvms", 0),
            Ok(Val::Bool(true))
        );
        if !template {
            let rank = |n: &str| defs::rank(defs::GLOBAL, n);
            ctx.doc_mut()?.set_global_property(prop, "", &rank);
        }
    }
    Ok(())
}

/// The services extension: `service.meminfo-writer` becomes `maxmem` (off → `maxmem=0`; on is
/// the default) and is removed.
fn meminfo_writer(ctx: &mut Ctx<'_>, id: DomId) -> Result<(), ApiError> {
    if !ctx.doc().may_contain(id, b"service.meminfo-writer") {
        return Ok(());
    }
    let Some(v) = ctx
        .doc()
        .data(id)?
        .feature("service.meminfo-writer")
        .map(str::to_string)
    else {
        return Ok(());
    };
    if v.is_empty() {
        set_prop(ctx, id, "maxmem", "0")?;
    }
    ctx.doc_mut()?
        .data_mut(id)?
        .remove_feature("service.meminfo-writer");
    Ok(())
}

/// A stored `netvm` chain that comes back to its qube: the reference's setter refuses the
/// value while loading (domains in file order), which leaves the qube without a netvm.
fn break_netvm_loops(ctx: &mut Ctx<'_>, ids: &[DomId]) -> Result<(), ApiError> {
    let mut applied: HashMap<String, String> = HashMap::new();
    for &id in ids {
        if !ctx.doc().may_contain(id, b"name=\"netvm\"") {
            continue;
        }
        let Some(net) = ctx.doc().data(id)?.property("netvm").map(str::to_string) else {
            continue;
        };
        if net.is_empty() {
            continue;
        }
        let name = ctx.doc().name(id).to_string();
        let mut cur = Some(net.clone());
        let mut looped = false;
        let mut steps = 0;
        while let Some(c) = cur {
            if c == name {
                looped = true;
                break;
            }
            steps += 1;
            if steps > ids.len() {
                break;
            }
            cur = applied.get(&c).cloned();
        }
        if looped {
            set_prop(ctx, id, "netvm", "")?;
        } else {
            applied.insert(name, net);
        }
    }
    Ok(())
}
