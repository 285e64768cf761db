//! admin.vm.volume.* read calls (spec storage §B.9). dom0 has no volumes: List is empty and
//! every call that names a volume is refused (`Argument not in 'dom0 volumes'`).

use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::model::volumes::{self, enforce_volume, find_pool};
use crate::storage::volume::py_bool;

/// `admin.vm.volume.List`: volume names in `<volume-config>` order.
pub fn list(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let pools = volumes::pools(ctx);
    Ok(volumes::volumes_of(ctx, &pools, ctx.dest)?
        .iter()
        .map(|v| format!("{}\n", v.name))
        .collect::<String>()
        .into_bytes())
}

/// `admin.vm.volume.Info`: eleven `key=value` lines in the reference's order, then
/// `is_outdated`.
pub fn info(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let pools = volumes::pools(ctx);
    let vols = volumes::volumes_of(ctx, &pools, ctx.dest)?;
    let v = enforce_volume(&vols, ctx.dest_name(), &ctx.arg)?;
    let pool = find_pool(&pools, &v.pool)?;
    let d = pool.driver();
    let out = format!(
        "pool={}\nvid={}\nsize={}\nusage={}\nrw={}\nsource={}\npath={}\nsave_on_stop={}\n\
         snap_on_start={}\nrevisions_to_keep={}\nephemeral={}\nis_outdated={}\n",
        v.pool,
        v.vid,
        d.size(v)?,
        d.usage(v)?,
        py_bool(v.rw),
        v.source.as_deref().unwrap_or(""),
        d.path(v)?,
        py_bool(v.save_on_stop),
        py_bool(v.snap_on_start),
        v.revisions_to_keep,
        py_bool(volumes::ephemeral(v, pool)),
        py_bool(d.is_outdated(v)),
    );
    Ok(out.into_bytes())
}

/// `admin.vm.volume.ListSnapshots`: revision ids, oldest first (sorted by timestamp).
pub fn list_snapshots(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let pools = volumes::pools(ctx);
    let vols = volumes::volumes_of(ctx, &pools, ctx.dest)?;
    let v = enforce_volume(&vols, ctx.dest_name(), &ctx.arg)?;
    let mut revs = find_pool(&pools, &v.pool)?.driver().revisions(v)?;
    revs.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(revs
        .iter()
        .map(|(id, _)| format!("{id}\n"))
        .collect::<String>()
        .into_bytes())
}
