//! What a Start hands to the dom0 services (`core.md` §10.2): the memory it asks qmemman for,
//! the QubesDB entries of the qube (`create_qdb_entries` and the extensions' `domain-qdb-create`
//! handlers) and those its netvm gets for it (mapped IPs, firewall rules, spec
//! `storage-devices-backup.md` §C.6). docs/dom0-services.md lists every entry.

use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::model::firewall;
use crate::model::props::{defaults, value::Val};
use crate::model::volumes;
use crate::runtime::dom0::QubesDb;
use crate::store::DomId;

/// One change to a QubesDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QdbOp {
    Write(String, String),
    /// A path ending in `/` removes the subtree.
    Rm(String),
}

fn w(path: impl Into<String>, value: impl Into<String>) -> QdbOp {
    QdbOp::Write(path.into(), value.into())
}

/// Applies `ops` in order.
pub fn apply(db: &mut dyn QubesDb, ops: &[QdbOp]) -> Result<(), ApiError> {
    for op in ops {
        match op {
            QdbOp::Write(p, v) => db.write(p, v)?,
            QdbOp::Rm(p) => db.rm(p)?,
        }
    }
    Ok(())
}

fn prop(ctx: &Ctx<'_>, id: DomId, name: &str) -> Val {
    defaults::vm_prop(ctx, id, name, 0).unwrap_or(Val::None)
}

fn int(ctx: &Ctx<'_>, id: DomId, name: &str) -> u64 {
    defaults::vm_u64(ctx, id, name).unwrap_or(0)
}

fn text(ctx: &Ctx<'_>, id: DomId, name: &str) -> Option<String> {
    defaults::vm_text(ctx, id, name)
}

/// The qube's DNS addresses (`dns`: primary, secondary).
pub fn dns(ctx: &Ctx<'_>, id: DomId) -> Vec<String> {
    text(ctx, id, "dns")
        .map(|d| d.split(' ').map(str::to_string).collect())
        .unwrap_or_default()
}

const MIB: u64 = 1024 * 1024;

/// The bytes a Start asks qmemman for: `memory` (plus, for HVM, the stub domain's: `stubdom_mem`,
/// else 128 MiB with a Linux stub domain or 28 MiB without, plus 16 MiB of video memory), plus
/// Xen's overhead of 4 MiB and 1.5 MiB per vCPU.
pub fn memory_required(ctx: &Ctx<'_>, id: DomId) -> u64 {
    let mut mib = int(ctx, id, "memory");
    if text(ctx, id, "virt_mode").as_deref() == Some("hvm") {
        let stubdom = match int(ctx, id, "stubdom_mem") {
            0 => match defaults::feature_with_template(ctx, id, "linux-stubdom") {
                Some(v) if v.is_empty() => 28,
                _ => 128,
            },
            n => n,
        };
        mib += stubdom + 16;
    }
    let vcpus = int(ctx, id, "vcpus").max(1);
    mib * MIB + 4 * MIB + vcpus * 3 * MIB / 2
}

/// The domain ID of a running qube (dom0: 0), from the hypervisor's listing.
fn xid_of(ctx: &Ctx<'_>, id: DomId) -> Result<Option<i64>, ApiError> {
    if ctx.doc().is_admin(id) {
        return Ok(Some(0));
    }
    let Some(uuid) = ctx.doc().uuid(id) else {
        return Ok(None);
    };
    let rt = ctx.runtime()?;
    Ok(rt.by_uuid(uuid).filter(|d| d.active).map(|d| d.id))
}

/// The entries of qube `id`'s own (fresh) QubesDB, in the order they are written. `seed` is
/// 64 random bytes (`/qubes-random-seed`, base64).
pub fn qube_entries(ctx: &Ctx<'_>, id: DomId, seed: &[u8]) -> Result<Vec<QdbOp>, ApiError> {
    let doc = ctx.doc();
    let name = doc.name(id);
    let class = doc.class(id);
    let yes = |b: bool| if b { "True" } else { "False" };
    let updateable = prop(ctx, id, "updateable").truthy();
    let mut ops = vec![
        w("/name", name),
        w("/type", class),
        w(
            "/default-user",
            text(ctx, id, "default_user").unwrap_or_default(),
        ),
        w("/qubes-vm-type", class),
        w("/qubes-vm-updateable", yes(updateable)),
        w(
            "/qubes-vm-persistence",
            if updateable { "full" } else { "rw-only" },
        ),
        w(
            "/qubes-debug-mode",
            if prop(ctx, id, "debug").truthy() {
                "1"
            } else {
                "0"
            },
        ),
        w(
            "/qubes-base-template",
            defaults::template_of(ctx, id, 0)
                .map(|t| doc.name(t).to_string())
                .unwrap_or_default(),
        ),
        w("/qubes-random-seed", base64(seed)),
    ];
    let dns = dns(ctx, id);
    if prop(ctx, id, "provides_network").truthy() {
        let gw = text(ctx, id, "gateway").unwrap_or_default();
        ops.push(w("/qubes-netvm-network", gw.clone()));
        ops.push(w("/qubes-netvm-gateway", gw));
        if let Some(gw6) = text(ctx, id, "gateway6") {
            ops.push(w("/qubes-netvm-gateway6", gw6));
        }
        // The reference's `netmask` (not an Admin API property): a constant.
        ops.push(w("/qubes-netvm-netmask", "255.255.255.255"));
        for (i, addr) in ["primary", "secondary"].iter().zip(&dns) {
            ops.push(w(format!("/qubes-netvm-{i}-dns"), addr.clone()));
        }
    }
    if defaults::netvm_of(ctx, id, 0).is_some() {
        ops.push(w("/qubes-mac", text(ctx, id, "mac").unwrap_or_default()));
        for (key, p) in [
            ("/qubes-ip", "visible_ip"),
            ("/qubes-netmask", "visible_netmask"),
            ("/qubes-gateway", "visible_gateway"),
        ] {
            ops.push(w(key, text(ctx, id, p).unwrap_or_default()));
        }
        for (i, addr) in ["primary", "secondary"].iter().zip(&dns) {
            ops.push(w(format!("/qubes-{i}-dns"), addr.clone()));
        }
        if let Some(ip6) = text(ctx, id, "visible_ip6") {
            ops.push(w("/qubes-ip6", ip6));
            ops.push(w(
                "/qubes-gateway6",
                text(ctx, id, "visible_gateway6").unwrap_or_default(),
            ));
        }
    }
    if let Some(tz) = timezone() {
        ops.push(w("/qubes-timezone", tz));
    }
    ops.push(w("/qubes-block-devices", ""));
    ops.push(w("/qubes-usb-devices", ""));
    // The extensions' `domain-qdb-create` handlers: services, GUI and audio qubes, keyboard.
    for (feature, value) in doc.data(id)?.features() {
        if let Some(service) = feature.strip_prefix("service.") {
            let on = if value.is_empty() { "0" } else { "1" };
            ops.push(w(format!("/qubes-service/{service}"), on));
        }
    }
    let balanced = if int(ctx, id, "maxmem") > 0 { "1" } else { "0" };
    ops.push(w("/qubes-service/meminfo-writer", balanced));
    for (p, key) in [
        ("guivm", "/qubes-gui-domain-xid"),
        ("audiovm", "/qubes-audio-domain-xid"),
    ] {
        if let Some(vm) = defaults::vm_prop_ref(ctx, id, p, 0).filter(|v| *v != id) {
            if let Some(xid) = xid_of(ctx, vm)? {
                ops.push(w(key, xid.to_string()));
            }
        }
    }
    if let Some(layout) = text(ctx, id, "keyboard_layout") {
        ops.push(w("/keyboard-layout", layout));
    }
    Ok(ops)
}

/// What the netvm's QubesDB holds for client `client`: its visible addresses
/// (`/mapped-ip/<ip>/…`) and its firewall rules, for its IPv4 and (if it has one) IPv6 address
/// (`storage-devices-backup.md` §C.6). Written when the client is about to be spawned, when its
/// firewall changes, and when the netvm itself starts with clients running. `rules`: the list
/// just set (it may hold rules that expired before they were saved, which still take their
/// index, as in the reference); `None`: the client's `firewall.xml`.
pub fn client_entries(
    ctx: &Ctx<'_>,
    client: DomId,
    rules: Option<&[firewall::Rule]>,
) -> Result<Vec<QdbOp>, ApiError> {
    let mut ops = Vec::new();
    let Some(ip) = text(ctx, client, "ip") else {
        return Ok(ops);
    };
    let base = format!("/mapped-ip/{ip}");
    for (p, key) in [
        ("visible_ip", "visible-ip"),
        ("visible_gateway", "visible-gateway"),
    ] {
        match text(ctx, client, p) {
            Some(v) => ops.push(w(format!("{base}/{key}"), v)),
            None => ops.push(QdbOp::Rm(format!("{base}/{key}"))),
        }
    }
    let loaded;
    let rules = match rules {
        Some(r) => r,
        None => {
            loaded = firewall::load(&volumes::vm_dir(ctx, client))?;
            &loaded
        }
    };
    let now = firewall::now();
    ops.extend(firewall::qdb_ops(rules, &ip, false, now));
    if let Some(ip6) = text(ctx, client, "ip6") {
        ops.extend(firewall::qdb_ops(rules, &ip6, true, now));
    }
    Ok(ops)
}

/// dom0's time zone, as the reference finds it: the target of the `/etc/localtime` link after
/// `zoneinfo/`.
fn timezone() -> Option<String> {
    let target = std::fs::read_link("/etc/localtime").ok()?;
    let target = target.to_string_lossy();
    let (_, tz) = target.split_once("zoneinfo/")?;
    Some(tz.to_string())
}

/// Standard base64 with padding (Python's `base64.b64encode`).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |i: u32| {
        char::from(
            A.get(usize::try_from(i & 63).unwrap_or(0))
                .copied()
                .unwrap_or(b'A'),
        )
    };
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

/// 64 bytes from the kernel's random source, for `/qubes-random-seed`.
pub fn random_seed() -> Result<Vec<u8>, ApiError> {
    let mut seed = vec![0u8; 64];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| ApiError::qubes(format!("/dev/urandom: {e}")))?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_as_python() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0x00]), "//79AA==");
        assert_eq!(base64(&[0u8; 64]).len(), 88);
    }
}
