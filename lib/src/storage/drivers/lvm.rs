//! `lvm_thin`: one thin LV per volume state in a thin pool (the installer's default pool), driven
//! through the LVM command-line tools with the reference's command lines (spec storage §B.6):
//!
//! | LV (`V = <vg>/vm-<qube>-<volume>`) | meaning |
//! |---|---|
//! | `V` | the committed state |
//! | `V-snap` | the running copy (origin and snapshot volumes) |
//! | `V-import` | an import in progress |
//! | `V-<unix time>-back` | a revision (id `<unix time>-back`) |
//!
//! What exists is read from one `lvs` call per process (`LC_ALL=C.UTF-8`, sizes in bytes);
//! commands run as `sudo --non-interactive` when not root. Tests put stand-ins for the tools
//! first in `PATH`.

use std::cell::RefCell;
use std::process::Command;
use std::rc::Rc;

use crate::storage::{iso_utc, Driver, StorageError, VolumeConfig};

/// The reference's `lvs` call: every LV with its pool, size, usage, attributes and origin.
pub const LVS: &[&str] = &[
    "lvs",
    "--noheadings",
    "-o",
    "vg_name,pool_lv,name,lv_size,data_percent,lv_attr,origin,lv_metadata_size,metadata_percent",
    "--units",
    "b",
    "--separator",
    ";",
];

/// One line of [`LVS`] output.
#[derive(Debug, Clone, PartialEq)]
pub struct LvInfo {
    /// `<vg>/<lv>`.
    pub vid: String,
    pub pool_lv: String,
    pub size: u64,
    pub usage: u64,
    pub attr: String,
    pub origin: String,
    pub metadata_size: Option<u64>,
    pub metadata_usage: Option<u64>,
}

/// Parses [`LVS`] output as the reference does: lines without a VG, name, size or data
/// percentage (LVs that are not thin, inactive thin LVs) are left out.
pub fn parse_lvs(out: &str) -> Vec<LvInfo> {
    let mut lvs = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.trim().splitn(9, ';').collect();
        let &[vg, pool_lv, name, size, data_pct, attr, origin, meta_size, meta_pct] = f.as_slice()
        else {
            continue;
        };
        if [vg, name, size, data_pct].contains(&"") {
            continue;
        }
        let Some(size) = size.strip_suffix('B').and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let pct = |p: &str| p.parse::<f64>().unwrap_or(0.0);
        let meta = meta_size
            .strip_suffix('B')
            .and_then(|s| s.parse::<u64>().ok());
        lvs.push(LvInfo {
            vid: format!("{vg}/{name}"),
            pool_lv: pool_lv.to_string(),
            size,
            usage: (size as f64 / 100.0 * pct(data_pct)) as u64,
            attr: attr.to_string(),
            origin: origin.to_string(),
            metadata_size: meta,
            metadata_usage: meta.map(|m| (m as f64 / 100.0 * pct(meta_pct)) as u64),
        });
    }
    lvs
}

/// Runs one LVM tool: stdout, or a [`StorageError::Pool`] with its stderr (`%` doubled, as the
/// reference's client formats messages with `%`).
fn run(argv: &[String]) -> Result<String, StorageError> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| StorageError::Pool("empty LVM command".into()))?;
    let mut cmd = if nix::unistd::geteuid().is_root() {
        Command::new(prog)
    } else {
        let mut c = Command::new("sudo");
        c.args(["--non-interactive", "--"]).arg(prog);
        c
    };
    let out = cmd
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .map_err(|e| StorageError::Pool(format!("{prog}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('%', "%%");
        return Err(StorageError::Pool(err));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// `/dev/mapper/<vg>-<lv>` with every `-` of the names doubled.
fn mapper_path(vid: &str) -> String {
    let (vg, lv) = vid.split_once('/').unwrap_or(("", vid));
    format!(
        "/dev/mapper/{}-{}",
        vg.replace('-', "--"),
        lv.replace('-', "--")
    )
}

pub struct ThinPool {
    vg: String,
    thin_pool: String,
    /// What `lvs` said, until a command of ours changes the LVs.
    cache: RefCell<Option<Result<Rc<Vec<LvInfo>>, String>>>,
}

impl ThinPool {
    pub fn new(vg: &str, thin_pool: &str) -> ThinPool {
        ThinPool {
            vg: vg.to_string(),
            thin_pool: thin_pool.to_string(),
            cache: RefCell::new(None),
        }
    }

    /// `<vg>/<thin pool>`: what `lvcreate --thin` creates in.
    fn pool_id(&self) -> String {
        format!("{}/{}", self.vg, self.thin_pool)
    }

    /// The LVs, read once and again after each change.
    fn lvs(&self) -> Result<Rc<Vec<LvInfo>>, StorageError> {
        let mut cache = self.cache.borrow_mut();
        let r = cache.get_or_insert_with(|| {
            run(&strings(LVS))
                .map(|o| Rc::new(parse_lvs(&o)))
                .map_err(|e| e.to_string())
        });
        r.clone().map_err(StorageError::Pool)
    }

    fn lv(&self, vid: &str) -> Option<LvInfo> {
        self.lvs().ok()?.iter().find(|l| l.vid == vid).cloned()
    }

    /// Runs an LVM command that changes the LVs; the next read asks `lvs` again.
    fn change(&self, argv: &[&str]) -> Result<(), StorageError> {
        *self.cache.borrow_mut() = None;
        run(&strings(argv)).map(|_| ())
    }

    /// The LV holding the current state: the volume's own, else its newest revision.
    fn current(&self, vid: &str) -> String {
        if self.lv(vid).is_some() {
            return vid.to_string();
        }
        match self.revisions_of(vid).last() {
            Some((id, _)) => format!("{vid}-{id}"),
            None => vid.to_string(),
        }
    }

    /// Revisions in id (time) order.
    fn revisions_of(&self, vid: &str) -> Vec<(String, String)> {
        let prefix = format!("{vid}-");
        let lvs = self.lvs().unwrap_or_default();
        let mut revs: Vec<(i64, String)> = lvs
            .iter()
            .filter_map(|l| l.vid.strip_prefix(&prefix))
            .filter_map(|rest| {
                let secs = rest.strip_suffix("-back")?;
                let n = secs.parse::<i64>().ok()?;
                Some((n, rest.to_string()))
            })
            .collect();
        revs.sort();
        revs.into_iter().map(|(n, id)| (id, iso_utc(n))).collect()
    }

    fn lvremove(&self, vid: &str) -> Result<(), StorageError> {
        self.change(&["lvremove", "--force", "--", vid])
    }
}

impl Driver for ThinPool {
    fn vid(&self, vm: &str, _class: &str, volume: &str) -> String {
        format!("{}/vm-{vm}-{volume}", self.vg)
    }

    /// An origin volume gets a new thin LV of its size (or a clone of its source); snapshot
    /// and volatile volumes get theirs at start.
    fn create(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        if !vol.save_on_stop {
            return Ok(());
        }
        let lv = vol.vid.split_once('/').map_or(vol.vid.as_str(), |(_, l)| l);
        let argv = match &vol.source {
            Some(src) => strings(&[
                "lvcreate",
                "--setactivationskip=n",
                "--activate=y",
                "--snapshot",
                "--type=thin",
                &format!("--name={}", vol.vid),
                "--",
                src,
            ]),
            None => strings(&[
                "lvcreate",
                "--thin",
                "--setactivationskip=n",
                "--activate=y",
                &format!("--name={lv}"),
                &format!("--virtualsize={}B", vol.size),
                "--",
                &self.pool_id(),
            ]),
        };
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.change(&argv)
    }

    /// Removes the running copy, an import in progress, every revision, then the volume.
    fn remove(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        let mut doomed: Vec<String> = Vec::new();
        for suffix in ["-snap", "-import"] {
            let v = format!("{}{suffix}", vol.vid);
            if self.lv(&v).is_some() {
                doomed.push(v);
            }
        }
        for (id, _) in self.revisions_of(&vol.vid) {
            doomed.push(format!("{}-{id}", vol.vid));
        }
        if self.lv(&vol.vid).is_some() {
            doomed.push(vol.vid.clone());
        }
        for v in doomed {
            self.lvremove(&v)?;
        }
        Ok(())
    }

    /// Origin and snapshot volumes need their LV (a snapshot: its source's).
    fn verify(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        if vol.is_volatile() {
            return Ok(());
        }
        self.lvs()?;
        let vid = vol.source.clone().unwrap_or_else(|| self.current(&vol.vid));
        match self.lv(&vid) {
            Some(_) => Ok(()),
            None => Err(StorageError::Pool(format!("volume {vid} missing"))),
        }
    }

    /// Origin and snapshot volumes: a fresh `-snap` clone of the current state (of the source,
    /// for a snapshot); a dirty origin is only activated. Volatile: removed and made anew.
    fn start(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        let snap = format!("{}-snap", vol.vid);
        if vol.is_volatile() {
            let _ = self.lvremove(&vol.vid);
            let lv = vol.vid.split_once('/').map_or(vol.vid.as_str(), |(_, l)| l);
            return self.change(&[
                "lvcreate",
                "--thin",
                "--setactivationskip=n",
                "--activate=y",
                &format!("--name={lv}"),
                &format!("--virtualsize={}B", vol.size),
                "--",
                &self.pool_id(),
            ]);
        }
        if vol.save_on_stop && self.lv(&snap).is_some() {
            return self.change(&["lvchange", "--activate=y", "--", &snap]);
        }
        // A stale running copy from an unclean stop goes first (an error: there was none).
        let _ = self.lvremove(&snap);
        let origin = match &vol.source {
            Some(src) => self.current(src),
            None => self.current(&vol.vid),
        };
        self.change(&[
            "lvcreate",
            "--setactivationskip=n",
            "--activate=y",
            "--snapshot",
            "--type=thin",
            &format!("--name={snap}"),
            "--",
            &origin,
        ])
    }

    /// Origin: commit (the current LV becomes revision `-<now>-back`, `-snap` takes the base
    /// name, revisions beyond `revisions_to_keep` go). Snapshot: `-snap` removed. Volatile: the
    /// LV removed.
    fn stop(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        let snap = format!("{}-snap", vol.vid);
        if !vol.save_on_stop {
            let doomed = if vol.snap_on_start { &snap } else { &vol.vid };
            return self.lvremove(doomed);
        }
        if self.lv(&snap).is_none() {
            return Ok(());
        }
        if self.current(&vol.vid) == vol.vid {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.change(&[
                "lvrename",
                "--",
                &vol.vid,
                &format!("{}-{now}-back", vol.vid),
            ])?;
        }
        self.change(&["lvrename", "--", &snap, &vol.vid])?;
        self.change(&["lvchange", "--activate=y", "--", &vol.vid])?;
        let revs = self.revisions_of(&vol.vid);
        let keep = usize::try_from(vol.revisions_to_keep.max(0)).unwrap_or(0);
        for (id, _) in revs.iter().take(revs.len().saturating_sub(keep)) {
            let _ = self.lvremove(&format!("{}-{id}", vol.vid));
        }
        Ok(())
    }

    fn size(&self, vol: &VolumeConfig) -> Result<u64, StorageError> {
        self.lvs()?;
        let snap = format!("{}-snap", vol.vid);
        Ok(self
            .lv(&snap)
            .filter(|_| vol.save_on_stop)
            .or_else(|| self.lv(&vol.vid))
            .map_or(vol.size, |l| l.size))
    }

    fn usage(&self, vol: &VolumeConfig) -> Result<u64, StorageError> {
        self.lvs()?;
        Ok(self.lv(&vol.vid).map_or(0, |l| l.usage))
    }

    fn path(&self, vol: &VolumeConfig) -> Result<String, StorageError> {
        self.lvs()?;
        Ok(mapper_path(&self.current(&vol.vid)))
    }

    fn revisions(&self, vol: &VolumeConfig) -> Result<Vec<(String, String)>, StorageError> {
        self.lvs()?;
        Ok(self.revisions_of(&vol.vid))
    }

    /// A running snapshot is outdated when it was cloned from an LV that is no longer its
    /// source's current one.
    fn is_outdated(&self, vol: &VolumeConfig) -> bool {
        let (true, Some(src)) = (vol.snap_on_start, &vol.source) else {
            return false;
        };
        let Some(snap) = self.lv(&format!("{}-snap", vol.vid)) else {
            return false;
        };
        let current = self.current(src);
        let current_lv = current.split_once('/').map_or(current.as_str(), |(_, l)| l);
        snap.origin != current_lv
    }

    /// `data_size`, `data_usage`, `metadata_size`, `metadata_usage` of the thin pool (0 when
    /// `lvs` does not list it).
    fn usage_details(&self) -> Vec<(&'static str, u64)> {
        let pool = self.lv(&self.pool_id());
        let pool = pool.as_ref();
        vec![
            ("data_size", pool.map_or(0, |p| p.size)),
            ("data_usage", pool.map_or(0, |p| p.usage)),
            (
                "metadata_size",
                pool.and_then(|p| p.metadata_size).unwrap_or(0),
            ),
            (
                "metadata_usage",
                pool.and_then(|p| p.metadata_usage).unwrap_or(0),
            ),
        ]
    }

    /// Every LV of the thin pool but running copies, imports and revisions, in `lvs` order
    /// (including LVs Qubes does not manage, as the reference lists them).
    fn list_volumes(&self) -> Option<Vec<String>> {
        let prefix = format!("{}/", self.vg);
        let mut out: Vec<String> = Vec::new();
        for l in self.lvs().ok()?.iter() {
            if !l.vid.starts_with(&prefix)
                || l.pool_lv != self.thin_pool
                || ["-snap", "-import", "-back"]
                    .iter()
                    .any(|s| l.vid.ends_with(s))
                || out.contains(&l.vid)
            {
                continue;
            }
            out.push(l.vid.clone());
        }
        Some(out)
    }

    fn dir_path(&self) -> Option<&std::path::Path> {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Output as `lvs` prints it with the reference's options (leading spaces included).
    const OUT: &str = "  qubes_dom0;;root;21474836480B;;-wi-ao----;;;\n  \
qubes_dom0;;vm-pool;107374182400B;12.50;twi-aotz--;;109051904B;5.00\n  \
qubes_dom0;vm-pool;vm-work-private;2147483648B;10.00;Vwi-a-tz--;;;\n  \
qubes_dom0;vm-pool;vm-work-private-1700000000-back;2147483648B;9.00;Vwi---tz--;;;\n  \
qubes_dom0;vm-pool;vm-work-private-snap;2147483648B;11.00;Vwi-aotz--;vm-work-private;;\n";

    #[test]
    fn parses_lvs_as_the_reference() {
        let lvs = parse_lvs(OUT);
        assert_eq!(lvs.len(), 4, "the non-thin root LV has no data%: left out");
        assert_eq!(lvs[0].vid, "qubes_dom0/vm-pool");
        assert_eq!(lvs[0].usage, 13421772800);
        assert_eq!(lvs[0].metadata_size, Some(109051904));
        assert_eq!(lvs[0].metadata_usage, Some(5452595));
        assert_eq!(lvs[1].usage, 214748364);
        assert_eq!(lvs[3].origin, "vm-work-private");
        assert_eq!(lvs[2].metadata_size, None);
    }

    #[test]
    fn mapper_paths() {
        assert_eq!(
            mapper_path("qubes_dom0/vm-work-private"),
            "/dev/mapper/qubes_dom0-vm--work--private"
        );
    }
}
