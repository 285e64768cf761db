//! `file-reflink`: one image file per volume state under the pool directory (spec storage
//! §B.6), with the reference's names so that either implementation can take over a dom0:
//!
//! | file (`P = <dir_path>/<vid>`) | meaning |
//! |---|---|
//! | `P.img` | the last committed image (origin volumes) |
//! | `P-dirty.img` | the image a running qube writes to (the volume's `path`) |
//! | `P-precache.img` | a copy of `P.img` made ahead of the next start |
//! | `P-import.img` | an import in progress |
//! | `P.img.<N>@<YYYY-MM-DDTHH:MM:SS>Z` | revision `N` |
//! | `P….img…~<random>` | a write in progress (temp file, renamed into place) |
//!
//! Copies are reflinks (`FICLONE`) where the filesystem shares extents (btrfs, xfs), sparse
//! copies elsewhere: data ranges only (`SEEK_DATA`/`SEEK_HOLE`), holes stay holes.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

use crate::storage::{statvfs_usage, Driver, StorageError, VolumeConfig};

pub struct Reflink {
    dir: PathBuf,
}

/// `<appvms|vm-templates>/<vm>/<volume>`: TemplateVMs under `vm-templates`, all others under
/// `appvms`.
pub fn vid(vm: &str, class: &str, volume: &str) -> String {
    let prefix = if class == "TemplateVM" {
        "vm-templates"
    } else {
        "appvms"
    };
    format!("{prefix}/{vm}/{volume}")
}

/// How a copy was made (the tests check which path ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Reflink,
    Sparse,
}

impl Reflink {
    pub fn new(dir: PathBuf) -> Reflink {
        Reflink { dir }
    }

    fn base(&self, vol: &VolumeConfig) -> PathBuf {
        self.dir.join(&vol.vid)
    }

    fn with_suffix(&self, vol: &VolumeConfig, suffix: &str) -> PathBuf {
        let mut p = self.base(vol).into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    }

    pub fn clean(&self, vol: &VolumeConfig) -> PathBuf {
        self.with_suffix(vol, ".img")
    }
    pub fn dirty(&self, vol: &VolumeConfig) -> PathBuf {
        self.with_suffix(vol, "-dirty.img")
    }
    pub fn precache(&self, vol: &VolumeConfig) -> PathBuf {
        self.with_suffix(vol, "-precache.img")
    }
    fn import(&self, vol: &VolumeConfig) -> PathBuf {
        self.with_suffix(vol, "-import.img")
    }

    /// Every file of the volume in its directory: images, revisions and temp files
    /// (`P*.img*~*`).
    fn all_images(&self, vol: &VolumeConfig) -> Vec<PathBuf> {
        let base = self.base(vol);
        let (Some(dir), Some(stem)) = (base.parent(), base.file_name()) else {
            return Vec::new();
        };
        let stem = stem.to_string_lossy().into_owned();
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let fixed = [
            self.clean(vol),
            self.dirty(vol),
            self.precache(vol),
            self.import(vol),
        ];
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let temp = name
                    .strip_prefix(&stem)
                    .and_then(|rest| rest.find(".img").map(|i| rest.get(i..).unwrap_or("")))
                    .is_some_and(|rest| rest.contains('~'));
                fixed.contains(p) || temp || revision_of(&stem, &name).is_some()
            })
            .collect()
    }

    /// `P.img.<N>@<time>Z`.
    fn revision_path(&self, vol: &VolumeConfig, n: i64, ts: &str) -> PathBuf {
        self.with_suffix(vol, &format!(".img.{n}@{ts}Z"))
    }

    /// The clean image of the volume with vid `vid` in this pool (a snapshot's source).
    fn clean_of(&self, vid: &str) -> PathBuf {
        let mut p = self.dir.join(vid).into_os_string();
        p.push(".img");
        PathBuf::from(p)
    }

    fn is_dirty(&self, vol: &VolumeConfig) -> bool {
        vol.is_origin() && self.dirty(vol).exists()
    }

    /// Removes the revisions but the newest `keep` (all of them for `keep <= 0`).
    fn prune_revisions(&self, vol: &VolumeConfig, keep: i64) -> Result<(), StorageError> {
        let revs = self.revisions(vol)?;
        let keep = usize::try_from(keep.max(0)).unwrap_or(0);
        let drop = revs.len().saturating_sub(keep);
        for (id, ts) in revs.iter().take(drop) {
            let n = crate::wire::python::int(id, 10).unwrap_or(0);
            remove_if_exists(&self.revision_path(vol, n, ts))?;
        }
        Ok(())
    }

    /// Temp files and an interrupted import: what a start clears first.
    fn remove_leftovers(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        let import = self.import(vol);
        for p in self.all_images(vol) {
            let temp = p.to_string_lossy().contains('~');
            if temp || p == import {
                remove_if_exists(&p)?;
            }
        }
        Ok(())
    }

    /// Commit: the clean image becomes revision N+1 (unless no revisions are kept), revisions
    /// are pruned, the working copy becomes the clean image, and a new precache is made.
    fn commit(&self, vol: &VolumeConfig, from: &Path) -> Result<(), StorageError> {
        let clean = self.clean(vol);
        if vol.revisions_to_keep != 0 {
            if let Ok(m) = fs::metadata(&clean) {
                let next = self
                    .revisions(vol)?
                    .last()
                    .and_then(|(id, _)| crate::wire::python::int(id, 10))
                    .unwrap_or(0)
                    + 1;
                let ts = crate::storage::iso_utc(m.mtime());
                copy_file(&clean, &self.revision_path(vol, next, &ts), true)?;
            }
        }
        self.prune_revisions(vol, vol.revisions_to_keep)?;
        File::open(from)
            .and_then(|f| f.sync_all())
            .map_err(StorageError::io(from))?;
        rename_synced(from, &clean)?;
        copy_file(&clean, &self.precache(vol), true)?;
        Ok(())
    }

    fn remove_all_images(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        for p in self.all_images(vol) {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&p)(e)),
            }
        }
        Ok(())
    }
}

/// The revision id in file name `name` of a volume whose file stem is `stem`:
/// `<stem>.img.<N>@YYYY-MM-DDTHH:MM:SSZ` (the reference's glob `P.img.*?@????-??-??T??:??:??Z`).
fn revision_of<'n>(stem: &str, name: &'n str) -> Option<(&'n str, &'n str)> {
    let rest = name.strip_prefix(stem)?.strip_prefix(".img.")?;
    let (id, ts) = rest.rsplit_once('@')?;
    let ts = ts.strip_suffix('Z')?;
    let shape = ts.len() == 19
        && ts.bytes().enumerate().all(|(i, c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            _ => true,
        });
    (!id.is_empty() && shape).then_some((id, ts))
}

fn remove_if_exists(p: &Path) -> Result<(), StorageError> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(p)(e)),
    }
}

/// `rename`, then fsync of the directory.
fn rename_synced(from: &Path, to: &Path) -> Result<(), StorageError> {
    fs::rename(from, to).map_err(StorageError::io(to))?;
    let dir = to.parent().unwrap_or(Path::new("/"));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io(dir))
}

/// Replaces `link` with a hardlink to `target`, atomically (a temp name, then rename; not
/// fsynced: a snapshot's hardlink is made anew at every start).
fn hardlink(target: &Path, link: &Path) -> Result<(), StorageError> {
    let mut tmp = link.as_os_str().to_os_string();
    tmp.push(format!("~{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    if let Some(dir) = link.parent() {
        fs::create_dir_all(dir).map_err(StorageError::io(dir))?;
    }
    remove_if_exists(&tmp)?;
    fs::hard_link(target, &tmp).map_err(StorageError::io(link))?;
    // Remade at every start: no need to make it durable.
    fs::rename(&tmp, link).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StorageError::io(link)(e)
    })
}

/// A new sparse file of `size` bytes at `path` (mode 0600), written atomically and durably.
pub fn create_sparse(path: &Path, size: u64) -> Result<(), StorageError> {
    replace_file(path, 0o600, Sync::Durable, |f| f.set_len(size))
}

/// Whether a write must survive a crash. Images that are discarded at stop and made anew at
/// every start (a snapshot's or a volatile volume's working copy) need not be: skipping their
/// fsyncs saves milliseconds on every start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    Durable,
    Scratch,
}

/// Writes `path` through a temp file in the same directory (`<name>~<random>`): `fill`, fsync,
/// rename, fsync the directory. The temp file is removed on failure.
fn replace_file(
    path: &Path,
    mode: u32,
    sync: Sync,
    fill: impl FnOnce(&File) -> io::Result<()>,
) -> Result<(), StorageError> {
    let err = StorageError::io(path);
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(StorageError::io(dir))?;
    let mut prefix = path.file_name().unwrap_or_default().to_os_string();
    prefix.push("~");
    let (tmp, f) =
        crate::store::create_temp_file(dir, &prefix, mode).map_err(StorageError::io(dir))?;
    let r = (|| {
        fill(&f)?;
        if sync == Sync::Durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if sync == Sync::Durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r.map_err(err)
}

/// Copies `src` to `dst` (atomically, as [`replace_file`]): a reflink where the filesystem
/// can, else a sparse copy. With `copy_mtime`, `dst` gets `src`'s modification time (a precache
/// is recognised as current by size and mtime).
pub fn copy_file(src: &Path, dst: &Path, copy_mtime: bool) -> Result<CopyKind, StorageError> {
    copy_file_as(src, dst, copy_mtime, Sync::Durable)
}

fn copy_file_as(
    src: &Path,
    dst: &Path,
    copy_mtime: bool,
    sync: Sync,
) -> Result<CopyKind, StorageError> {
    let input = File::open(src).map_err(StorageError::io(src))?;
    let meta = input.metadata().map_err(StorageError::io(src))?;
    let mut kind = CopyKind::Reflink;
    replace_file(dst, 0o600, sync, |out| {
        if crate::ffi::ficlone(out, &input).is_err() {
            kind = CopyKind::Sparse;
            sparse_copy(&input, out, meta.len())?;
        }
        if copy_mtime {
            let mtime = meta.modified()?;
            out.set_times(fs::FileTimes::new().set_modified(mtime))?;
        }
        Ok(())
    })?;
    Ok(kind)
}

/// Copies the data ranges of `src` (holes stay holes) and sets the length to `len`.
fn sparse_copy(src: &File, dst: &File, len: u64) -> io::Result<()> {
    dst.set_len(len)?;
    let mut pos: i64 = 0;
    let end = i64::try_from(len).unwrap_or(i64::MAX);
    let mut buf = vec![0u8; 1 << 20];
    while pos < end {
        let data = match lseek(src.as_fd(), pos, Whence::SeekData) {
            Ok(o) => o,
            Err(Errno::ENXIO) => break,
            // No SEEK_DATA on this filesystem: everything from here is data.
            Err(Errno::EINVAL) => pos,
            Err(e) => return Err(e.into()),
        };
        let hole = match lseek(src.as_fd(), data, Whence::SeekHole) {
            Ok(o) => o,
            Err(Errno::EINVAL) => end,
            Err(e) => return Err(e.into()),
        };
        let mut off = u64::try_from(data).unwrap_or(0);
        let stop = u64::try_from(hole.min(end)).unwrap_or(0);
        while off < stop {
            let want = usize::try_from((stop - off).min(buf.len() as u64)).unwrap_or(0);
            let chunk = buf.get_mut(..want).unwrap_or_default();
            let n = src.read_at(chunk, off)?;
            if n == 0 {
                break;
            }
            dst.write_all_at(chunk.get(..n).unwrap_or_default(), off)?;
            off += n as u64;
        }
        pos = hole.max(data + 1);
    }
    Ok(())
}

fn size_of(p: &Path) -> Option<u64> {
    fs::metadata(p).ok().map(|m| m.len())
}

fn usage_of(p: &Path) -> Option<u64> {
    fs::metadata(p).ok().map(|m| m.blocks().saturating_mul(512))
}

impl Driver for Reflink {
    fn vid(&self, vm: &str, class: &str, volume: &str) -> String {
        vid(vm, class, volume)
    }

    /// Removes every image, then for an origin volume makes a sparse `P.img` of the configured
    /// size and its precache copy.
    fn create(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        self.remove_all_images(vol)?;
        if vol.is_origin() {
            let r = create_sparse(&self.clean(vol), vol.size)
                .and_then(|()| copy_file(&self.clean(vol), &self.precache(vol), true));
            if let Err(e) = r {
                let _ = self.remove_all_images(vol);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes every image, then the qube's directory in the pool if that is now empty.
    fn remove(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        self.remove_all_images(vol)?;
        if let Some(dir) = self.base(vol).parent() {
            let _ = fs::remove_dir(dir);
        }
        Ok(())
    }

    /// An origin needs its clean image, a snapshot its source's.
    fn verify(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        let need = if vol.snap_on_start {
            vol.source.as_deref().map(|s| self.clean_of(s))
        } else if vol.is_origin() {
            Some(self.clean(vol))
        } else {
            None
        };
        match need {
            Some(p) if !p.exists() && !self.is_dirty(vol) => Err(StorageError::Pool(format!(
                "Missing image file: {}",
                crate::wire::python::repr(&p.to_string_lossy())
            ))),
            _ => Ok(()),
        }
    }

    fn start(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        self.remove_leftovers(vol)?;
        let dirty = self.dirty(vol);
        if vol.is_origin() && vol.revisions_to_keep == -1 {
            // Snapshots disabled: the qube writes to the committed image itself.
            self.prune_revisions(vol, 0)?;
            remove_if_exists(&self.precache(vol))?;
            if !dirty.exists() {
                rename_synced(&self.clean(vol), &dirty)?;
            }
            return Ok(());
        }
        if self.is_dirty(vol) {
            // Not cleanly stopped: the working copy is used as it is.
            return Ok(());
        }
        if vol.snap_on_start {
            let source = vol
                .source
                .as_deref()
                .ok_or_else(|| StorageError::Pool(format!("{} has no source", vol.vid)))?;
            let clean = self.clean(vol);
            hardlink(&self.clean_of(source), &clean)?;
            copy_file_as(&clean, &dirty, false, Sync::Scratch)?;
        } else if vol.is_origin() {
            let (clean, precache) = (self.clean(vol), self.precache(vol));
            let current = match (fs::metadata(&precache), fs::metadata(&clean)) {
                (Ok(p), Ok(c)) => p.len() == c.len() && p.modified().ok() == c.modified().ok(),
                _ => false,
            };
            if current {
                rename_synced(&precache, &dirty)?;
            } else {
                remove_if_exists(&precache)?;
                copy_file(&clean, &dirty, false)?;
            }
        } else {
            replace_file(&dirty, 0o600, Sync::Scratch, |f| f.set_len(vol.size))?;
        }
        Ok(())
    }

    fn stop(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        let dirty = self.dirty(vol);
        if vol.is_origin() {
            if !dirty.exists() {
                return Ok(());
            }
            if vol.revisions_to_keep == -1 {
                return rename_synced(&dirty, &self.clean(vol));
            }
            return self.commit(vol, &dirty);
        }
        remove_if_exists(&dirty)?;
        remove_if_exists(&self.clean(vol))
    }

    fn size(&self, vol: &VolumeConfig) -> Result<u64, StorageError> {
        Ok(size_of(&self.dirty(vol))
            .or_else(|| size_of(&self.clean(vol)))
            .unwrap_or(vol.size))
    }

    fn usage(&self, vol: &VolumeConfig) -> Result<u64, StorageError> {
        Ok(usage_of(&self.dirty(vol))
            .or_else(|| usage_of(&self.clean(vol)))
            .unwrap_or(0))
    }

    /// Always the dirty image: what a running qube gets.
    fn path(&self, vol: &VolumeConfig) -> Result<String, StorageError> {
        Ok(self.dirty(vol).to_string_lossy().into_owned())
    }

    fn revisions(&self, vol: &VolumeConfig) -> Result<Vec<(String, String)>, StorageError> {
        let base = self.base(vol);
        let (Some(dir), Some(stem)) = (base.parent(), base.file_name()) else {
            return Ok(Vec::new());
        };
        let stem = stem.to_string_lossy();
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StorageError::io(dir)(e)),
        };
        let mut revs: Vec<(String, String)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                revision_of(&stem, &name).map(|(id, ts)| (id.to_string(), ts.to_string()))
            })
            .collect();
        revs.sort_by_key(|(id, _)| crate::wire::python::int(id, 10).unwrap_or(i64::MAX));
        Ok(revs)
    }

    /// A snapshot is outdated when its hardlink of the source's clean image (made at start) is
    /// no longer the source's current clean image.
    fn is_outdated(&self, vol: &VolumeConfig) -> bool {
        let (true, Some(src)) = (vol.snap_on_start, &vol.source) else {
            return false;
        };
        match (
            fs::metadata(self.clean_of(src)),
            fs::metadata(self.clean(vol)),
        ) {
            (Ok(a), Ok(b)) => a.ino() != b.ino(),
            _ => false,
        }
    }

    fn usage_details(&self) -> Vec<(&'static str, u64)> {
        statvfs_usage(&self.dir)
    }

    fn list_volumes(&self) -> Option<Vec<String>> {
        None
    }

    fn dir_path(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn vol(vid: &str, save: bool, snap: bool, size: u64) -> VolumeConfig {
        VolumeConfig {
            name: vid.rsplit('/').next().unwrap().into(),
            pool: "p".into(),
            vid: vid.into(),
            revisions_to_keep: 1,
            rw: true,
            save_on_stop: save,
            snap_on_start: snap,
            ephemeral: None,
            size,
            source: None,
        }
    }

    #[test]
    fn revision_names() {
        assert_eq!(
            revision_of("private", "private.img.7@2026-03-01T12:00:00Z"),
            Some(("7", "2026-03-01T12:00:00"))
        );
        assert_eq!(
            revision_of("private", "private.img.7@2026-03-01T12:00:00"),
            None
        );
        assert_eq!(
            revision_of("private", "private.img.@2026-03-01T12:00:00Z"),
            None
        );
        assert_eq!(
            revision_of("root", "private.img.7@2026-03-01T12:00:00Z"),
            None
        );
    }

    /// Create makes the origin's sparse image and precache; remove deletes every file of the
    /// volume (revisions and temp files too) and nothing of its neighbours.
    #[test]
    fn create_and_remove_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let r = Reflink::new(d.path().to_path_buf());
        let private = vol("appvms/work/private", true, false, 2 << 30);
        let volatile = vol("appvms/work/volatile", false, false, 10 << 30);
        r.create(&private).unwrap();
        r.create(&volatile).unwrap();
        let dir = d.path().join("appvms/work");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["private-precache.img", "private.img"]);
        let clean = fs::metadata(dir.join("private.img")).unwrap();
        assert_eq!(clean.len(), 2 << 30);
        assert_eq!(clean.mode() & 0o777, 0o600);
        assert!(clean.blocks() < 64, "not sparse: {} blocks", clean.blocks());
        let pre = fs::metadata(dir.join("private-precache.img")).unwrap();
        assert_eq!(pre.len(), clean.len());
        assert_eq!(pre.modified().unwrap(), clean.modified().unwrap());
        assert_eq!(r.size(&private).unwrap(), 2 << 30);
        assert_eq!(r.size(&volatile).unwrap(), 10 << 30);
        assert_eq!(
            r.path(&private).unwrap(),
            dir.join("private-dirty.img").to_str().unwrap()
        );

        for extra in [
            "private.img.3@2026-01-01T00:00:00Z",
            "private.img~abc",
            "private-dirty.img",
            "root.img",
        ] {
            fs::write(dir.join(extra), b"x").unwrap();
        }
        assert_eq!(
            r.revisions(&private).unwrap(),
            [("3".to_string(), "2026-01-01T00:00:00".to_string())]
        );
        r.remove(&private).unwrap();
        let left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["root.img"]);
        fs::remove_file(dir.join("root.img")).unwrap();
        r.remove(&volatile).unwrap();
        assert!(!dir.exists(), "the empty qube directory is pruned");
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// An origin through two start/stop cycles: the precache becomes the working copy, a stop
    /// commits it, the old state becomes a revision, revisions beyond revisions_to_keep go.
    #[test]
    fn origin_start_stop_commit_and_rotation() {
        let d = tempfile::tempdir().unwrap();
        let r = Reflink::new(d.path().to_path_buf());
        let v = vol("appvms/w/private", true, false, 1 << 20);
        let dir = d.path().join("appvms/w");
        r.create(&v).unwrap();
        r.verify(&v).unwrap();
        fs::write(dir.join("private.img~leftover"), b"").unwrap();
        r.start(&v).unwrap();
        assert_eq!(
            names(&dir),
            ["private-dirty.img", "private.img"],
            "precache used, leftovers gone"
        );
        assert!(r.is_dirty(&v));
        File::options()
            .write(true)
            .open(dir.join("private-dirty.img"))
            .unwrap()
            .write_all_at(b"one", 0)
            .unwrap();
        r.stop(&v).unwrap();
        let n = names(&dir);
        assert_eq!(n.len(), 3, "{n:?}");
        assert!(
            n[0] == "private-precache.img"
                && n[1] == "private.img"
                && n[2].starts_with("private.img.1@"),
            "{n:?}"
        );
        assert_eq!(&fs::read(dir.join("private.img")).unwrap()[..3], b"one");
        assert_eq!(
            fs::read(dir.join(&n[2])).unwrap(),
            vec![0u8; 1 << 20],
            "revision 1 is the old state"
        );
        // Second cycle: revision 2 is the "one" state; revision 1 is pruned (keep 1).
        r.start(&v).unwrap();
        File::options()
            .write(true)
            .open(dir.join("private-dirty.img"))
            .unwrap()
            .write_all_at(b"two", 0)
            .unwrap();
        r.stop(&v).unwrap();
        let revs = r.revisions(&v).unwrap();
        assert_eq!(revs.len(), 1);
        assert_eq!(revs[0].0, "2");
        let rev2 = r.revision_path(&v, 2, &revs[0].1);
        assert_eq!(&fs::read(rev2).unwrap()[..3], b"one");
        assert_eq!(&fs::read(dir.join("private.img")).unwrap()[..3], b"two");
        // revisions_to_keep 0: no revision at all.
        let v0 = VolumeConfig {
            revisions_to_keep: 0,
            ..v.clone()
        };
        r.start(&v0).unwrap();
        r.stop(&v0).unwrap();
        assert!(r.revisions(&v0).unwrap().is_empty());
    }

    /// A snapshot is a hardlink of its source's clean image plus a working copy; it becomes
    /// outdated when the source commits; a stop discards both. A volatile image is made anew.
    #[test]
    fn snapshot_and_volatile_cycle() {
        let d = tempfile::tempdir().unwrap();
        let r = Reflink::new(d.path().to_path_buf());
        let src = vol("vm-templates/t/root", true, false, 1 << 20);
        r.create(&src).unwrap();
        let snap = VolumeConfig {
            source: Some("vm-templates/t/root".into()),
            ..vol("appvms/a/root", false, true, 1 << 20)
        };
        assert!(r.verify(&snap).is_ok());
        r.start(&snap).unwrap();
        let dir = d.path().join("appvms/a");
        assert_eq!(names(&dir), ["root-dirty.img", "root.img"]);
        let ino = |p: PathBuf| fs::metadata(p).unwrap().ino();
        assert_eq!(ino(dir.join("root.img")), ino(r.clean(&src)));
        assert!(!r.is_outdated(&snap));
        r.start(&src).unwrap();
        r.stop(&src).unwrap();
        assert!(r.is_outdated(&snap), "the source committed a new state");
        r.stop(&snap).unwrap();
        assert!(names(&dir).is_empty());
        let volatile = vol("appvms/a/volatile", false, false, 8 << 20);
        r.start(&volatile).unwrap();
        assert_eq!(
            fs::metadata(dir.join("volatile-dirty.img")).unwrap().len(),
            8 << 20
        );
        r.stop(&volatile).unwrap();
        assert!(names(&dir).is_empty());
        // A snapshot whose source is missing does not verify.
        let orphan = VolumeConfig {
            source: Some("vm-templates/gone/root".into()),
            ..snap
        };
        let e = r.verify(&orphan).unwrap_err().to_string();
        assert!(
            e.starts_with("Missing image file: '") && e.contains("gone/root.img"),
            "{e}"
        );
    }

    /// revisions_to_keep -1: the qube writes to the committed image itself.
    #[test]
    fn snapshots_disabled() {
        let d = tempfile::tempdir().unwrap();
        let r = Reflink::new(d.path().to_path_buf());
        let v = VolumeConfig {
            revisions_to_keep: -1,
            ..vol("appvms/n/private", true, false, 1 << 20)
        };
        r.create(&v).unwrap();
        let dir = d.path().join("appvms/n");
        fs::write(dir.join("private.img.4@2026-01-01T00:00:00Z"), b"").unwrap();
        let clean_ino = fs::metadata(dir.join("private.img")).unwrap().ino();
        r.start(&v).unwrap();
        assert_eq!(names(&dir), ["private-dirty.img"]);
        assert_eq!(
            fs::metadata(dir.join("private-dirty.img")).unwrap().ino(),
            clean_ino
        );
        r.stop(&v).unwrap();
        assert_eq!(names(&dir), ["private.img"]);
        assert_eq!(
            fs::metadata(dir.join("private.img")).unwrap().ino(),
            clean_ino
        );
    }

    /// The sparse copy keeps data where it was and holes as holes.
    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src.img");
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"middle", 32 << 20).unwrap();
        drop(f);
        let dst = d.path().join("dst.img");
        let out = File::create(&dst).unwrap();
        sparse_copy(&File::open(&src).unwrap(), &out, 64 << 20).unwrap();
        let data = fs::read(&dst).unwrap();
        assert_eq!(data.len(), 64 << 20);
        assert_eq!(&data[..4], b"head");
        assert_eq!(&data[(32 << 20)..(32 << 20) + 6], b"middle");
        assert!(fs::metadata(&dst).unwrap().blocks() < 8192);
    }
}
