//! Making a new qube: identity (qid, UUID, a disposable's dispid), its entry in qubes.xml, the
//! extension tags a new qube carries, what a disposable copies from its template, and its
//! creation on disk. Shared by `admin.vm.Create*` and `admin.vm.CreateDisposable`.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{ApiError, ExcType};
use crate::model::context::Ctx;
use crate::model::props::{defaults, defs, value::Val};
use crate::model::volumes::{self, PoolChoice};
use crate::store::{DomId, DomainData};

/// Highest qid and dispid the reference hands out.
const MAX_ID: u32 = 9999;
/// A dispid is not reused within this many seconds (the reference: 7 days, in memory).
const DISPID_QUARANTINE: u64 = 7 * 24 * 3600;

/// What a new qube is made of.
pub struct NewQube {
    pub class: String,
    pub name: String,
    /// Stored label (a disposable without one copies its template's).
    pub label: Option<String>,
    pub template: Option<DomId>,
    /// Disposables only: their dispid.
    pub dispid: Option<u32>,
    /// Disposables only: remove when it stops.
    pub auto_cleanup: bool,
}

/// The lowest qid in 1…9999 no qube uses.
pub fn new_qid(ctx: &Ctx<'_>) -> Result<u32, ApiError> {
    let doc = ctx.doc();
    let used: HashSet<u32> = doc.domains().iter().filter_map(|&d| doc.qid(d)).collect();
    (1..=MAX_ID)
        .find(|q| !used.contains(q))
        .ok_or_else(|| ApiError::qubes("No free qid: 9999 qubes exist"))
}

/// A random (version 4) UUID in canonical form.
pub fn new_uuid() -> String {
    let mut b: [u8; 16] = crate::store::random_bytes();
    if let Some(x) = b.get_mut(6) {
        *x = (*x & 0x0f) | 0x40;
    }
    if let Some(x) = b.get_mut(8) {
        *x = (*x & 0x3f) | 0x80;
    }
    let mut s = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// The record of recently used dispids: `<run_dir>/qubes-admin/dispids`, one `<dispid>
/// <unix time>` line each (it outlives the calls, as the reference's in-memory record outlives
/// its requests).
fn dispid_record(run_dir: &Path) -> std::path::PathBuf {
    crate::events::log_dir(run_dir).join("dispids")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The record's entries still in quarantine: `(dispid, unix time)`.
fn recent_dispids(record: &Path) -> Vec<(u32, u64)> {
    let cutoff = now().saturating_sub(DISPID_QUARANTINE);
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (d, t) = l.split_once(' ')?;
            Some((d.parse().ok()?, t.parse().ok()?))
        })
        .filter(|&(_, t)| t >= cutoff)
        .collect()
}

/// A random dispid in 0…9999 that no disposable has and none had in the last 7 days; it is
/// recorded once the call commits. Callers hold the qubes.xml lock, so two calls cannot pick
/// the same one.
pub fn new_dispid(ctx: &mut Ctx<'_>) -> Result<u32, ApiError> {
    let mut used: HashSet<u32> = recent_dispids(&dispid_record(&ctx.config.run_dir))
        .iter()
        .map(|(d, _)| *d)
        .collect();
    let doc = ctx.doc();
    for id in doc.domains() {
        if doc.class(id) == "DispVM" {
            if let Some(d) = doc
                .data(id)?
                .property("dispid")
                .and_then(|d| d.parse().ok())
            {
                used.insert(d);
            }
        }
    }
    if used.len() > MAX_ID as usize {
        return Err(ApiError::qubes(
            "No free dispid: all 10000 are in use or recently used",
        ));
    }
    let dispid = loop {
        let r = u32::from_le_bytes(crate::store::random_bytes()) % (MAX_ID + 1);
        if !used.contains(&r) {
            break r;
        }
    };
    let run_dir = ctx.config.run_dir.clone();
    ctx.after_commit(move || {
        let record = dispid_record(&run_dir);
        // Keep the file small: drop expired entries whenever one is added.
        let mut kept: String = recent_dispids(&record)
            .iter()
            .map(|(d, t)| format!("{d} {t}\n"))
            .collect();
        kept.push_str(&format!("{dispid} {}\n", now()));
        let r = std::fs::create_dir_all(crate::events::log_dir(&run_dir)).and_then(|()| {
            let tmp = record.with_extension("new");
            std::fs::File::create(&tmp)?.write_all(kept.as_bytes())?;
            std::fs::rename(&tmp, &record)
        });
        if let Err(e) = r {
            eprintln!("qubes-admin: recording dispid {dispid}: {e}");
        }
    });
    Ok(dispid)
}

/// Adds the qube to qubes.xml with its stored properties (label, name, qid, uuid, template,
/// dispid, auto_cleanup; in property order) and the extension tags a new qube carries
/// (`guivm-<guivm>`, `audiovm-<audiovm>`, added without events as the reference's init
/// handlers do), then fires `domain-add`.
pub fn add(ctx: &mut Ctx<'_>, q: &NewQube) -> Result<DomId, ApiError> {
    let table = defs::table(&q.class)
        .ok_or_else(|| ApiError::qubes(format!("no such VM class: '{}'", q.class)))?;
    let qid = new_qid(ctx)?;
    let template_name = q.template.map(|t| ctx.doc().name(t).to_string());
    let mut props: Vec<(&str, String)> = vec![
        ("name", q.name.clone()),
        ("qid", qid.to_string()),
        ("uuid", new_uuid()),
    ];
    if let Some(l) = &q.label {
        props.push(("label", l.clone()));
    }
    if let Some(t) = template_name {
        props.push(("template", t));
    }
    if let Some(d) = q.dispid {
        props.push(("dispid", d.to_string()));
    }
    if q.auto_cleanup {
        props.push(("auto_cleanup", "True".to_string()));
    }
    let mut data = DomainData::default();
    let rank = |n: &str| defs::rank(table, n);
    for (k, v) in &props {
        data.set_property(k, v, &rank);
    }
    // check_updates_vm=False: new qubes do not check for updates either.
    let no_update_checks = matches!(
        defaults::global_prop(ctx, "check_updates_vm"),
        Ok(Val::Bool(false))
    );
    if no_update_checks {
        data.set_feature("check-updates", "");
    }
    let id = ctx.doc_mut()?.add_domain(&q.class, data);
    for (prop, prefix) in [("guivm", "guivm-"), ("audiovm", "audiovm-")] {
        if let Ok(Val::Vm(vm)) = defaults::vm_prop(ctx, id, prop, 0) {
            ctx.doc_mut()?
                .data_mut(id)?
                .add_tag(&format!("{prefix}{vm}"));
        }
    }
    let name = q.name.clone();
    ctx.emit("", "domain-add", &[("vm", &name)]);
    Ok(id)
}

/// What a disposable copies from its template at creation: stored values of the properties it
/// shares with the template (where it has none of its own; identity and `template` excepted),
/// features except `preload-dispvm*`, and tags. (The firewall: [`copy_firewall`], once the
/// disposable's directory exists.)
pub fn copy_from_template(ctx: &mut Ctx<'_>, id: DomId, template: DomId) -> Result<(), ApiError> {
    const NOT_CLONED: &[&str] = &[
        "name",
        "qid",
        "uuid",
        "dispid",
        "template",
        "auto_cleanup",
        "backup_timestamp",
        "installed_by_rpm",
        "template_for_dispvms",
    ];
    let mine = defs::table("DispVM").unwrap_or_default();
    let src = ctx.doc().data(template)?;
    let props: Vec<(String, String)> = src
        .properties()
        .into_iter()
        .filter(|(k, _)| !NOT_CLONED.contains(k) && defs::find(mine, k).is_some())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let features: Vec<(String, String)> = src
        .features()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("preload-dispvm"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let tags: Vec<String> = src.tags().into_iter().map(str::to_string).collect();
    let data = ctx.doc_mut()?.data_mut(id)?;
    for (k, v) in props {
        if data.property(&k).is_none() {
            data.set_property(&k, &v, &|n| defs::rank(mine, n));
        }
    }
    for (k, v) in features {
        data.set_feature(&k, &v);
    }
    for t in tags {
        data.add_tag(&t);
    }
    Ok(())
}

/// Copies the template's `firewall.xml` (if it has one) into the new disposable's directory.
pub fn copy_firewall(ctx: &Ctx<'_>, id: DomId, template: DomId) -> Result<(), ApiError> {
    let src = volumes::vm_dir(ctx, template).join("firewall.xml");
    if !src.exists() {
        return Ok(());
    }
    let dst = volumes::vm_dir(ctx, id).join("firewall.xml");
    std::fs::copy(&src, &dst).map(|_| ()).map_err(|e| {
        ApiError::qubes(format!(
            "cannot copy the firewall of {}: {e}",
            src.display()
        ))
    })
}

/// Creates the new qube on disk (directory, volumes; undone if the call fails) and fires
/// `domain-create-on-disk`. Classes without storage (RemoteVM) cannot be created on disk: the
/// reference fails there without a reply (no `create_on_disk`), so we refuse clearly.
pub fn create_on_disk(ctx: &mut Ctx<'_>, id: DomId, choice: &PoolChoice) -> Result<(), ApiError> {
    let class = ctx.doc().class(id).to_string();
    if !volumes::has_storage(&class) {
        return Err(ApiError::new(
            ExcType::QubesException,
            format!("{class} qubes cannot be created through the Admin API (they have no storage)"),
        ));
    }
    let pools = volumes::pools(ctx);
    let vols = volumes::new_volume_config(ctx, &pools, id, choice)?;
    volumes::create_on_disk(ctx, pools, id, vols)?;
    let name = ctx.doc().name(id).to_string();
    ctx.emit(&name, "domain-create-on-disk", &[]);
    Ok(())
}
