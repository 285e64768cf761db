//! Storage: pools and the volumes of qubes (spec `storage-devices-backup.md` §B). A pool is a
//! named instance of a driver, configured by one `<pool>` element of qubes.xml; a volume belongs
//! to one qube and one pool and is configured by the qube's `<volume-config>` ([`volume`]).
//!
//! The drivers ([`drivers`]) do the on-disk work behind one trait, [`Driver`]: `file-reflink`
//! (files; reflink copies where the filesystem can, sparse copies elsewhere), `lvm_thin` (thin
//! LVs through the LVM tools) and `linux-kernel` (the read-only kernels directory). This layer knows nothing of qubes beyond the configs it
//! is handed; which volumes a qube has is the model's business (`model::volumes`).

pub mod drivers;
pub mod volume;

use std::path::{Path, PathBuf};

pub use volume::VolumeConfig;

/// Why a storage operation failed. `Pool` is the reference's `StoragePoolException`; the others
/// carry the OS or tool error they came from.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Pool(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the '{driver}' driver cannot {what}")]
    Unsupported { driver: String, what: &'static str },
}

impl StorageError {
    /// An I/O error on `path`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
        move |source| StorageError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Every driver a dom0 has, in the reference's entry-point order (the order of
/// `admin.pool.ListDrivers`), with its parameters in signature order.
pub const DRIVERS: &[(&str, &[&str])] = &[
    (
        "file",
        &["revisions_to_keep", "dir_path", "ephemeral_volatile"],
    ),
    (
        "file-reflink",
        &[
            "revisions_to_keep",
            "dir_path",
            "setup_check",
            "ephemeral_volatile",
        ],
    ),
    ("linux-kernel", &["dir_path"]),
    (
        "lvm_thin",
        &[
            "revisions_to_keep",
            "volume_group",
            "thin_pool",
            "ephemeral_volatile",
        ],
    ),
    ("callback", &["conf_id"]),
    (
        "zfs",
        &[
            "revisions_to_keep",
            "container",
            "ephemeral_volatile",
            "snap_on_start_forensics",
        ],
    ),
];

/// A pool's `config` keys in dict order (what qubes.xml holds and `admin.pool.Info` lists), with
/// the default of each key that has one.
fn config_keys(driver: &str) -> &'static [(&'static str, Option<&'static str>)] {
    match driver {
        "file" | "file-reflink" => &[
            ("name", None),
            ("dir_path", None),
            ("driver", None),
            ("revisions_to_keep", Some("1")),
            ("ephemeral_volatile", Some("False")),
        ],
        "linux-kernel" => &[("name", None), ("dir_path", None), ("driver", None)],
        "lvm_thin" => &[
            ("name", None),
            ("volume_group", None),
            ("thin_pool", None),
            ("driver", None),
            ("revisions_to_keep", Some("1")),
            ("ephemeral_volatile", Some("False")),
        ],
        "callback" => &[("name", None), ("driver", None), ("conf_id", None)],
        "zfs" => &[
            ("name", None),
            ("container", None),
            ("driver", None),
            ("revisions_to_keep", Some("1")),
            ("ephemeral_volatile", Some("False")),
            ("snap_on_start_forensics", Some("False")),
        ],
        _ => &[],
    }
}

/// What a driver does with the volumes of its pool.
pub trait Driver {
    /// The vid of volume `volume` of qube `vm` of class `class` in this pool.
    fn vid(&self, vm: &str, class: &str, volume: &str) -> String;
    /// Makes the volume's images (a new qube). Leaves nothing behind on failure.
    fn create(&self, vol: &VolumeConfig) -> Result<(), StorageError>;
    /// Deletes every image of the volume.
    fn remove(&self, vol: &VolumeConfig) -> Result<(), StorageError>;
    /// Checks that what a start needs exists (`StoragePoolException "Missing image file: …"`).
    fn verify(&self, vol: &VolumeConfig) -> Result<(), StorageError>;
    /// Prepares the volume for its starting qube (§B.5): a fresh copy of a snapshot's source,
    /// the working copy of an origin, a new volatile image.
    fn start(&self, vol: &VolumeConfig) -> Result<(), StorageError>;
    /// After the qube stopped: commits an origin (the old state becomes a revision, revisions
    /// beyond `revisions_to_keep` go), discards snapshot and volatile images.
    fn stop(&self, vol: &VolumeConfig) -> Result<(), StorageError>;
    /// Size in bytes: the real image's, else the configured one.
    fn size(&self, vol: &VolumeConfig) -> Result<u64, StorageError>;
    /// Bytes in use on disk (0 if unknown).
    fn usage(&self, vol: &VolumeConfig) -> Result<u64, StorageError>;
    /// What the qube gets attached (empty if nothing).
    fn path(&self, vol: &VolumeConfig) -> Result<String, StorageError>;
    /// Revisions: `(id, YYYY-MM-DDTHH:MM:SS)` in id order.
    fn revisions(&self, vol: &VolumeConfig) -> Result<Vec<(String, String)>, StorageError>;
    /// Whether a snapshot volume predates its source's last commit (the source is in the same
    /// pool: `vol.source` is its vid).
    fn is_outdated(&self, vol: &VolumeConfig) -> bool;
    /// `usage_details` of the pool, in key order (empty when unknown).
    fn usage_details(&self) -> Vec<(&'static str, u64)>;
    /// The pool's own listing for `admin.pool.volume.List`; `None` when the pool lists the
    /// volumes of the qubes it holds, in the order they were loaded.
    fn list_volumes(&self) -> Option<Vec<String>>;
    /// The directory a filesystem pool lives in (for `included_in`).
    fn dir_path(&self) -> Option<&Path>;
    /// Size and usage of the pool, if known.
    fn size_usage(&self) -> (Option<u64>, Option<u64>) {
        let d = self.usage_details();
        let get = |k| d.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        (get("data_size"), get("data_usage"))
    }
}

/// One configured pool: its qubes.xml attributes and its driver.
pub struct Pool {
    pub name: String,
    pub driver_name: String,
    attrs: Vec<(String, String)>,
    driver: Box<dyn Driver>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("driver", &self.driver_name)
            .finish()
    }
}

impl Pool {
    /// Builds the pool a `<pool>` element describes. `Err` for a pool the reference would skip
    /// at load (unknown driver, missing required parameter).
    pub fn open(p: &crate::store::Pool) -> Result<Pool, StorageError> {
        let attr = |k: &str| {
            p.attrs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let dir = || {
            attr("dir_path")
                .map(PathBuf::from)
                .ok_or_else(|| StorageError::Pool(format!("pool '{}' has no dir_path", p.name)))
        };
        let driver: Box<dyn Driver> = match p.driver.as_str() {
            "file-reflink" => Box::new(drivers::reflink::Reflink::new(dir()?)),
            "linux-kernel" => Box::new(drivers::kernel::LinuxKernel::new(dir()?)),
            "lvm_thin" => {
                let need = |k: &str| {
                    attr(k)
                        .ok_or_else(|| StorageError::Pool(format!("pool '{}' has no {k}", p.name)))
                };
                Box::new(drivers::lvm::ThinPool::new(
                    need("volume_group")?,
                    need("thin_pool")?,
                ))
            }
            other => Box::new(drivers::Unsupported::new(other, attr("dir_path"))),
        };
        Ok(Pool {
            name: p.name.clone(),
            driver_name: p.driver.clone(),
            attrs: p.attrs.clone(),
            driver,
        })
    }

    /// Every pool of a document that loads, in qubes.xml order.
    pub fn open_all(pools: &[crate::store::Pool]) -> Vec<Pool> {
        pools.iter().filter_map(|p| Pool::open(p).ok()).collect()
    }

    pub fn driver(&self) -> &dyn Driver {
        self.driver.as_ref()
    }

    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `config` dict in its order: stored attributes, defaults for the missing ones.
    pub fn config(&self) -> Vec<(String, String)> {
        let keys = config_keys(&self.driver_name);
        if keys.is_empty() {
            return self.attrs.clone();
        }
        keys.iter()
            .filter_map(|(k, default)| {
                let v = match *k {
                    "name" => Some(self.name.as_str()),
                    "driver" => Some(self.driver_name.as_str()),
                    _ => self.attr(k).or(*default),
                };
                v.map(|v| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    /// The default `revisions_to_keep` of new volumes (linux-kernel: always 0).
    pub fn revisions_to_keep(&self) -> i64 {
        if self.driver_name == "linux-kernel" {
            return 0;
        }
        self.attr("revisions_to_keep")
            .and_then(|v| crate::wire::python::int(v, 10))
            .unwrap_or(1)
    }

    /// The default `ephemeral` of volatile volumes.
    pub fn ephemeral_volatile(&self) -> bool {
        self.attr("ephemeral_volatile")
            .is_some_and(volume::parse_bool)
    }
}

/// `included_in`: the first other filesystem pool (in qubes.xml order) whose directory contains
/// this pool's directory (paths resolved as `realpath` does).
pub fn included_in<'p>(pools: &'p [Pool], pool: &Pool) -> Option<&'p Pool> {
    let mine = realpath(pool.driver.dir_path()?);
    pools.iter().filter(|p| p.name != pool.name).find(|p| {
        p.driver
            .dir_path()
            .is_some_and(|d| mine.starts_with(realpath(d)))
    })
}

/// `os.path.realpath`: symlinks resolved where the path exists, normalised otherwise.
fn realpath(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                c => out.push(c),
            }
        }
        out
    })
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a unix time: revision timestamps.
pub fn iso_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The name of the file that marks a volume as in use by a running qube:
/// `volume-running-<pool>:<vid>` with every `-` doubled, then every `/` written `-`.
pub fn running_state_file(pool: &str, vid: &str) -> String {
    format!(
        "volume-running-{}",
        format!("{pool}:{vid}").replace('-', "--").replace('/', "-")
    )
}

/// `data_size`/`data_usage` of the filesystem holding `dir` (statvfs); empty if it is missing.
pub fn statvfs_usage(dir: &Path) -> Vec<(&'static str, u64)> {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let frsize = s.fragment_size();
            let blocks = s.blocks();
            let free = s.blocks_free();
            vec![
                ("data_size", frsize.saturating_mul(blocks)),
                (
                    "data_usage",
                    frsize.saturating_mul(blocks.saturating_sub(free)),
                ),
            ]
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn pool(name: &str, driver: &str, attrs: &[(&str, &str)]) -> crate::store::Pool {
        let mut a = vec![
            ("name".to_string(), name.to_string()),
            ("driver".to_string(), driver.to_string()),
        ];
        a.extend(attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        crate::store::Pool {
            name: name.into(),
            driver: driver.into(),
            attrs: a,
        }
    }

    #[test]
    fn config_has_the_reference_keys_and_defaults() {
        let p = Pool::open(&pool("varlibqubes", "file-reflink", &[("dir_path", "/x")])).unwrap();
        assert_eq!(
            p.config(),
            [
                ("name", "varlibqubes"),
                ("dir_path", "/x"),
                ("driver", "file-reflink"),
                ("revisions_to_keep", "1"),
                ("ephemeral_volatile", "False")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert!(!p.ephemeral_volatile());
        let k = Pool::open(&pool(
            "linux-kernel",
            "linux-kernel",
            &[("dir_path", "/x/k")],
        ))
        .unwrap();
        assert_eq!(k.revisions_to_keep(), 0);
        assert!(Pool::open(&pool("broken", "file-reflink", &[])).is_err());
    }

    #[test]
    fn state_files_and_dates() {
        assert_eq!(
            running_state_file("varlibqubes", "appvms/work/private"),
            "volume-running-varlibqubes:appvms-work-private"
        );
        assert_eq!(
            running_state_file("lvm", "qubes_dom0/vm-sys-net-root"),
            "volume-running-lvm:qubes_dom0-vm--sys--net--root"
        );
        assert_eq!(iso_utc(1_700_000_000), "2023-11-14T22:13:20");
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00");
    }

    #[test]
    fn included_in_finds_the_containing_directory() {
        let pools = Pool::open_all(&[
            pool(
                "varlibqubes",
                "file-reflink",
                &[("dir_path", "/nonexistent/q")],
            ),
            pool(
                "linux-kernel",
                "linux-kernel",
                &[("dir_path", "/nonexistent/q/vm-kernels")],
            ),
        ]);
        assert_eq!(included_in(&pools, &pools[1]).unwrap().name, "varlibqubes");
        assert!(included_in(&pools, &pools[0]).is_none());
    }
}
