//! admin.pool.* read calls and admin.pool.volume.List (spec storage §B.7).

use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::model::volumes;
use crate::storage::{self, Pool, DRIVERS};

/// `enforce_arg(pools)`: the argument must name a pool that loads.
fn arg_pool<'p>(ctx: &Ctx<'_>, pools: &'p [Pool]) -> Result<&'p Pool, ApiError> {
    pools
        .iter()
        .find(|p| p.name == ctx.arg)
        .ok_or_else(|| ApiError::permission("Argument not in 'pools'"))
}

fn lines<K: AsRef<str>, V: std::fmt::Display>(items: impl IntoIterator<Item = (K, V)>) -> String {
    items
        .into_iter()
        .map(|(k, v)| format!("{}={v}\n", k.as_ref()))
        .collect()
}

/// `admin.pool.List`: pool names in qubes.xml order.
pub fn list(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Ok(volumes::pools(ctx)
        .iter()
        .map(|p| format!("{}\n", p.name))
        .collect::<String>()
        .into_bytes())
}

/// `admin.pool.ListDrivers`: each driver with its parameters, in entry-point order.
pub fn list_drivers(_ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    Ok(DRIVERS
        .iter()
        .map(|(d, params)| {
            let mut line = d.to_string();
            for p in *params {
                line.push(' ');
                line.push_str(p);
            }
            line.push('\n');
            line
        })
        .collect::<String>()
        .into_bytes())
}

/// `admin.pool.Info`: the config sorted by key, then `size`, `usage` and `included_in` when
/// known.
pub fn info(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let pools = volumes::pools(ctx);
    let pool = arg_pool(ctx, &pools)?;
    let mut config = pool.config();
    config.sort();
    let mut out = lines(config);
    let (size, usage) = pool.driver().size_usage();
    out.push_str(&lines(size.map(|s| ("size", s))));
    out.push_str(&lines(usage.map(|u| ("usage", u))));
    if let Some(p) = storage::included_in(&pools, pool) {
        out.push_str(&format!("included_in={}\n", p.name));
    }
    Ok(out.into_bytes())
}

/// `admin.pool.UsageDetails`: `usage_details` sorted by key.
pub fn usage_details(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let pools = volumes::pools(ctx);
    let pool = arg_pool(ctx, &pools)?;
    let mut details = pool.driver().usage_details();
    details.sort();
    Ok(lines(details).into_bytes())
}

/// `admin.pool.volume.List`: the pool's volumes by vid, in driver order.
pub fn volume_list(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let pools = volumes::pools(ctx);
    let pool = arg_pool(ctx, &pools)?;
    let vids = match pool.driver().list_volumes() {
        Some(v) => v,
        None => volumes::pool_vids(ctx, &pools, &pool.name)?,
    };
    Ok(vids
        .iter()
        .map(|v| format!("{v}\n"))
        .collect::<String>()
        .into_bytes())
}
