//! A qube's volumes: what its `<volume-config>` holds (the kernel volume following the `kernel`
//! property), the default configuration of a new qube (spec storage §B.3) resolved against
//! templates and pools, and the on-disk work of Create and Remove through the drivers.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::error::{ApiError, ExcType};
use crate::model::context::Ctx;
use crate::model::props::{defaults, value::Val};
use crate::storage::volume::{parse_volume_config, volume_config_xml};
use crate::storage::{Pool, VolumeConfig};
use crate::store::DomId;

/// `private_img_size`: 2 GiB.
pub const PRIVATE_SIZE: u64 = 2 << 30;
/// `root_img_size`: 10 GiB.
pub const ROOT_SIZE: u64 = 10 << 30;

/// The element name of a domain's volume configuration.
const VOLUME_CONFIG: &str = "volume-config";

/// Classes with storage (QubesVM subclasses).
pub fn has_storage(class: &str) -> bool {
    matches!(class, "AppVM" | "TemplateVM" | "StandaloneVM" | "DispVM")
}

/// Every pool of qubes.xml that loads, in file order.
pub fn pools(ctx: &Ctx<'_>) -> Vec<Pool> {
    Pool::open_all(ctx.doc().pools())
}

/// The pool called `name`: `QubesException "Unknown storage pool <name>"` otherwise.
pub fn find_pool<'p>(pools: &'p [Pool], name: &str) -> Result<&'p Pool, ApiError> {
    pools
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::qubes(format!("Unknown storage pool {name}")))
}

/// The qube's effective `kernel` (empty for none): the vid of its linux-kernel volume.
fn kernel_of(ctx: &Ctx<'_>, id: DomId) -> String {
    match defaults::vm_prop(ctx, id, "kernel", 0) {
        Ok(Val::Text(k)) => k,
        _ => String::new(),
    }
}

/// The volumes of qube `id` in `<volume-config>` order (none for dom0 and RemoteVMs).
pub fn volumes_of(ctx: &Ctx<'_>, pools: &[Pool], id: DomId) -> Result<Vec<VolumeConfig>, ApiError> {
    if !has_storage(ctx.doc().class(id)) {
        return Ok(Vec::new());
    }
    let data = ctx.doc().data(id)?;
    let mut vols = data
        .raw_elements()
        .into_iter()
        .find(|(n, _)| *n == VOLUME_CONFIG)
        .map(|(_, raw)| parse_volume_config(raw))
        .unwrap_or_default();
    for v in &mut vols {
        if pools
            .iter()
            .any(|p| p.name == v.pool && p.driver_name == "linux-kernel")
        {
            v.vid = kernel_of(ctx, id);
        }
    }
    Ok(vols)
}

/// The effective `ephemeral` of a volume (§B.2): its explicit value, else the pool's
/// `ephemeral_volatile` for writable volatile volumes, else False.
pub fn ephemeral(v: &VolumeConfig, pool: &Pool) -> bool {
    if pool.driver_name == "linux-kernel" {
        return false;
    }
    v.ephemeral
        .unwrap_or_else(|| v.is_volatile() && v.rw && pool.ephemeral_volatile())
}

/// `admin.pool.volume.List` for a pool that lists the qubes' volumes: the vids in the order
/// the reference loads them (qubes in file order, each qube's template first).
pub fn pool_vids(ctx: &Ctx<'_>, pools: &[Pool], pool: &str) -> Result<Vec<String>, ApiError> {
    fn visit(
        ctx: &Ctx<'_>,
        pools: &[Pool],
        pool: &str,
        id: DomId,
        seen: &mut HashSet<DomId>,
        out: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        if !seen.insert(id) {
            return Ok(());
        }
        if let Some(t) = defaults::template_of(ctx, id, 0) {
            visit(ctx, pools, pool, t, seen, out)?;
        }
        for v in volumes_of(ctx, pools, id)? {
            if v.pool == pool && !out.contains(&v.vid) {
                out.push(v.vid);
            }
        }
        Ok(())
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for id in ctx.doc().domains() {
        visit(ctx, pools, pool, id, &mut seen, &mut out)?;
    }
    Ok(out)
}

/// Where `CreateInPool` puts volumes: `pool=` (every writable, non-snapshot volume) or
/// `pool:<volume>=` (that volume).
#[derive(Debug, Default, Clone)]
pub struct PoolChoice {
    pub all: Option<String>,
    pub per_volume: Vec<(String, String)>,
}

/// The shape of one default volume: `(name, snap_on_start, save_on_stop, rw, size)`.
type Shape = (&'static str, bool, bool, bool, u64);

fn default_shapes(class: &str) -> &'static [Shape] {
    match class {
        "TemplateVM" | "StandaloneVM" => &[
            ("root", false, true, true, ROOT_SIZE),
            ("private", false, true, true, PRIVATE_SIZE),
            ("volatile", false, false, true, ROOT_SIZE),
            ("kernel", false, false, false, 0),
        ],
        "AppVM" => &[
            ("root", true, false, true, 0),
            ("private", false, true, true, PRIVATE_SIZE),
            ("volatile", false, false, true, ROOT_SIZE),
            ("kernel", false, false, false, 0),
        ],
        "DispVM" => &[
            ("root", true, false, true, 0),
            ("private", true, false, true, 0),
            ("volatile", false, false, true, ROOT_SIZE + PRIVATE_SIZE),
            ("kernel", false, false, false, 0),
        ],
        _ => &[],
    }
}

/// The origin a snapshot volume `name` of a qube based on `template` comes from: the
/// template's volume, followed through templates while that is itself a snapshot.
fn snapshot_origin(
    ctx: &Ctx<'_>,
    pools: &[Pool],
    template: DomId,
    name: &str,
) -> Result<VolumeConfig, ApiError> {
    let mut owner = template;
    for _ in 0..32 {
        let v = volumes_of(ctx, pools, owner)?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| {
                ApiError::qubes(format!(
                    "template {} has no '{name}' volume",
                    ctx.doc().name(owner)
                ))
            })?;
        if !v.snap_on_start {
            return Ok(v);
        }
        owner = defaults::template_of(ctx, owner, 0).ok_or_else(|| {
            ApiError::qubes(format!(
                "the source of volume '{name}' of {} cannot be found",
                ctx.doc().name(owner)
            ))
        })?;
    }
    Err(ApiError::qubes(format!("volume '{name}': template loop")))
}

/// `default_pool_<volume>` (through the property engine, so its default rule applies).
fn default_pool(ctx: &Ctx<'_>, volume: &str) -> Result<String, ApiError> {
    match defaults::global_prop(ctx, &format!("default_pool_{volume}")) {
        Ok(Val::Text(p)) | Ok(Val::Vm(p)) if !p.is_empty() => Ok(p),
        _ => Err(ApiError::qubes(format!(
            "no pool for volume '{volume}': default_pool_{volume} is not set"
        ))),
    }
}

/// The volume configuration of new qube `id` (already in the document, with its class and
/// template): the class defaults (§B.3), pools chosen by `choice` and the global
/// `default_pool_*`, snapshot volumes in their origin's pool with its size.
pub fn new_volume_config(
    ctx: &Ctx<'_>,
    pools: &[Pool],
    id: DomId,
    choice: &PoolChoice,
) -> Result<Vec<VolumeConfig>, ApiError> {
    let doc = ctx.doc();
    let (class, vm) = (doc.class(id), doc.name(id));
    let template = defaults::template_of(ctx, id, 0);
    // A disposable takes pool, rw and an explicit ephemeral from its template's volumes.
    let template_vols = match (class, template) {
        ("DispVM", Some(t)) => volumes_of(ctx, pools, t)?,
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for &(name, snap, save, rw, size) in default_shapes(class) {
        let inherited = template_vols.iter().find(|v| v.name == name);
        let rw = inherited.map_or(rw, |t| t.rw);
        let mut v = VolumeConfig {
            name: name.to_string(),
            pool: String::new(),
            vid: String::new(),
            revisions_to_keep: 1,
            rw,
            save_on_stop: save,
            snap_on_start: snap,
            ephemeral: inherited.and_then(|t| t.ephemeral),
            size,
            source: None,
        };
        if let Some((_, p)) = choice.per_volume.iter().find(|(n, _)| n == name) {
            if snap {
                return Err(ApiError::qubes(format!(
                    "Snapshot volume {name} must be in the same pool as its origin ({name} \
                     volume of template),cannot move to pool {p} "
                )));
            }
            v.pool = p.clone();
        }
        if snap {
            let t = template.ok_or_else(|| {
                ApiError::qubes(format!(
                    "{class} {vm} has no template for its {name} volume"
                ))
            })?;
            let origin = snapshot_origin(ctx, pools, t, name)?;
            let origin_pool = find_pool(pools, &origin.pool)?;
            v.size = origin_pool.driver().size(&origin)?;
            v.pool = origin.pool.clone();
            v.source = Some(origin.vid);
        } else if v.pool.is_empty() {
            v.pool = match (&choice.all, inherited) {
                (Some(p), _) if rw => p.clone(),
                (_, Some(t)) => t.pool.clone(),
                _ => default_pool(ctx, name)?,
            };
        }
        let pool = find_pool(pools, &v.pool)?;
        v.revisions_to_keep = pool.revisions_to_keep();
        v.vid = if pool.driver_name == "linux-kernel" {
            kernel_of(ctx, id)
        } else {
            pool.driver().vid(vm, class, name)
        };
        out.push(v);
    }
    Ok(out)
}

/// The qube's directory: `<base>/vm-templates/<name>` for TemplateVMs, `<base>/appvms/<name>`
/// for the other classes with storage.
pub fn vm_dir(ctx: &Ctx<'_>, id: DomId) -> PathBuf {
    let doc = ctx.doc();
    let sub = if doc.class(id) == "TemplateVM" {
        "vm-templates"
    } else {
        "appvms"
    };
    ctx.config.base_dir.join(sub).join(doc.name(id))
}

/// Creates qube `id` on disk: its directory (mode 0775) and every volume, and stores the
/// volume configuration. If the call then fails (here, later in the handler, or at commit),
/// everything made here is removed again.
pub fn create_on_disk(
    ctx: &mut Ctx<'_>,
    pools: Vec<Pool>,
    id: DomId,
    vols: Vec<VolumeConfig>,
) -> Result<(), ApiError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = vm_dir(ctx, id);
    // The outermost directory this call creates (`appvms/` itself on a fresh base dir).
    let first_new = dir
        .ancestors()
        .take_while(|a| !a.exists())
        .last()
        .map(PathBuf::from);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o775)
        .create(&dir)
        .map_err(|e| ApiError::qubes(format!("cannot create {}: {e}", dir.display())))?;
    ctx.doc_mut()?
        .data_mut(id)?
        .set_raw_elements(VOLUME_CONFIG, vec![volume_config_xml(&vols)]);
    let mut made = Vec::new();
    let mut result = Ok(());
    for v in &vols {
        let Some(pool) = pools.iter().find(|p| p.name == v.pool) else {
            result = Err(ApiError::qubes(format!("Unknown storage pool {}", v.pool)));
            break;
        };
        // Registered first: a driver that fails half-way cleans up after itself, but the
        // undo also covers what it made before the failure.
        made.push(v.clone());
        if let Err(e) = pool.driver().create(v) {
            result = Err(e.into());
            break;
        }
    }
    ctx.on_undo(move || {
        remove_volumes(&pools, &made);
        if let Some(d) = first_new {
            let _ = std::fs::remove_dir_all(&d);
        }
    });
    result
}

/// Deletes the volumes' images (errors are reported on stderr, as the reference logs them).
pub fn remove_volumes(pools: &[Pool], vols: &[VolumeConfig]) {
    for v in vols {
        let Some(pool) = pools.iter().find(|p| p.name == v.pool) else {
            continue;
        };
        if let Err(e) = pool.driver().remove(v) {
            eprintln!(
                "qubes-admin: removing volume {} of pool {}: {e}",
                v.vid, v.pool
            );
        }
    }
}

/// Deletes a removed qube's volumes and its directory; errors are reported on stderr only, as
/// the reference only logs them.
pub fn remove_from_disk(pools: &[Pool], vols: &[VolumeConfig], dir: Option<&std::path::Path>) {
    remove_volumes(pools, vols);
    if let Some(dir) = dir {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("qubes-admin: removing {}: {e}", dir.display()),
        }
    }
}

/// A new volume config must name a known pool: the check `CreateInPool` makes before anything
/// is created (`QubesException "Unknown storage pool <pool>"`).
pub fn check_pools_exist(pools: &[Pool], choice: &PoolChoice) -> Result<(), ApiError> {
    for p in choice
        .all
        .iter()
        .chain(choice.per_volume.iter().map(|(_, p)| p))
    {
        find_pool(pools, p)?;
    }
    Ok(())
}

/// `PermissionDenied "Argument not in '<vm> volumes'"` unless `name` is one of `vols`.
pub fn enforce_volume<'v>(
    vols: &'v [VolumeConfig],
    vm: &str,
    name: &str,
) -> Result<&'v VolumeConfig, ApiError> {
    vols.iter().find(|v| v.name == name).ok_or_else(|| {
        ApiError::new(
            ExcType::PermissionDenied,
            format!(
                "Argument not in {}",
                crate::wire::python::repr(&format!("{vm} volumes"))
            ),
        )
    })
}

fn pool_of<'p>(pools: &'p [Pool], v: &VolumeConfig) -> Result<&'p Pool, ApiError> {
    find_pool(pools, &v.pool)
}

/// `Storage.verify`: the qube's directory exists and every volume has what it needs.
pub fn verify_storage(
    dir: &std::path::Path,
    pools: &[Pool],
    vols: &[VolumeConfig],
) -> Result<(), ApiError> {
    if !dir.is_dir() {
        return Err(ApiError::new(
            ExcType::QubesVMError,
            format!("VM directory does not exist: {}", dir.display()),
        ));
    }
    for v in vols {
        pool_of(pools, v)?.driver().verify(v)?;
    }
    Ok(())
}

/// `Storage.start` (§B.5): the qube's directory must exist (`QubesVMError "VM directory does
/// not exist: <dir>"`), every volume must verify, then every volume starts and the running-state
/// files (`<run_dir>/volume-running-…`) are written. A volume that fails to start stops the
/// ones started before it.
pub fn start_storage(
    run_dir: &std::path::Path,
    dir: &std::path::Path,
    pools: &[Pool],
    vols: &[VolumeConfig],
) -> Result<(), ApiError> {
    verify_storage(dir, pools, vols)?;
    for (i, v) in vols.iter().enumerate() {
        if let Err(e) = pool_of(pools, v).and_then(|p| Ok(p.driver().start(v)?)) {
            let started = vols.get(..i).unwrap_or_default();
            stop_storage(run_dir, pools, started);
            return Err(e);
        }
    }
    std::fs::create_dir_all(run_dir)
        .map_err(|e| ApiError::qubes(format!("{}: {e}", run_dir.display())))?;
    for v in vols {
        let f = run_dir.join(crate::storage::running_state_file(&v.pool, &v.vid));
        std::fs::write(&f, b"").map_err(|e| ApiError::qubes(format!("{}: {e}", f.display())))?;
    }
    Ok(())
}

/// `Storage.stop`: stops every volume and removes the running-state files. Errors are reported
/// (stderr) and returned, but do not stop the others, as the reference only logs them.
pub fn stop_storage(
    run_dir: &std::path::Path,
    pools: &[Pool],
    vols: &[VolumeConfig],
) -> Vec<String> {
    let mut errors = Vec::new();
    for v in vols {
        let r = pool_of(pools, v).and_then(|p| Ok(p.driver().stop(v)?));
        if let Err(e) = r {
            eprintln!("qubes-admin: stopping volume {}: {}", v.vid, e.msg);
            errors.push(e.msg);
        }
        let _ =
            std::fs::remove_file(run_dir.join(crate::storage::running_state_file(&v.pool, &v.vid)));
    }
    errors
}
