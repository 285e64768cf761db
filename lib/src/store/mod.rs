//! The qubes.xml store: a lazily indexed document, OFD-locked write transactions and
//! crash-safe saves.
//!
//! The public signatures below are the contract the handlers use. How it reads, locks, writes
//! and sweeps: `docs/store.md`.

mod document;
mod domain;
mod file_index;
mod index;
pub mod lock;
mod section;
pub mod xml;

pub use document::{Document, DomId, Label, Pool, Source, DOM0_UUID};
pub use domain::DomainData;

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Qubes XML store '{0}' is missing; use qubes-create tool")]
    Missing(PathBuf),
    #[error("qubes.xml is busy: its lock was held by another process for more than {waited_ms} ms; try again")]
    Busy { waited_ms: u64 },
    #[error("cannot parse qubes.xml: {0}")]
    Parse(String),
    #[error("I/O error on '{path}': {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Identity of one version of qubes.xml (for caching a parsed document in-process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    /// The inode's change time: no program can set it, so a file replaced or rewritten with
    /// its size and modification time restored still gets a new stamp.
    pub ctime_ns: i128,
}

/// Stats `path` (no read).
pub fn stamp(path: &Path) -> Result<FileStamp, StoreError> {
    let md = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    Ok(stamp_of(&md))
}

fn stamp_of(md: &std::fs::Metadata) -> FileStamp {
    FileStamp {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
        ctime_ns: i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
    }
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StoreError::Missing(path.to_path_buf())
    } else {
        StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

fn read_all(path: &Path, mut f: &File, size_hint: u64) -> Result<Vec<u8>, StoreError> {
    let mut buf = Vec::with_capacity(usize::try_from(size_hint).unwrap_or(0).saturating_add(1));
    f.read_to_end(&mut buf).map_err(|e| io_err(path, e))?;
    Ok(buf)
}

/// Reads and indexes qubes.xml without taking a lock: writers replace the file by rename, so a
/// reader always sees one complete version.
pub fn load(path: &Path) -> Result<(Document, FileStamp), StoreError> {
    let (doc, stamp, _) = load_open(path)?;
    Ok((doc, stamp))
}

/// [`load`], also returning the file it read. A cache keyed by the [`FileStamp`] must keep this
/// file open: writers replace qubes.xml by rename, which frees the old inode, and filesystems
/// (ext4) hand its number out again at once, so a later version can have the same
/// (dev, ino, size) and, with coarse timestamps, the same mtime as a version no longer open.
pub fn load_open(path: &Path) -> Result<(Document, FileStamp, File), StoreError> {
    load_open_indexed(path, None)
}

/// Where qubes.xml's index file lives ([`load_open_indexed`]): next to the event log, in the
/// run directory only dom0 services write.
pub fn index_path(run_dir: &Path) -> PathBuf {
    crate::events::log_dir(run_dir).join("qubes.xml.index")
}

/// [`load_open`] with an index file (`file_index`): used when it describes this very version,
/// else the file is scanned and a fresh index written there (best effort).
pub fn load_open_indexed(
    path: &Path,
    index: Option<&Path>,
) -> Result<(Document, FileStamp, File), StoreError> {
    let f = File::open(path).map_err(|e| io_err(path, e))?;
    let md = f.metadata().map_err(|e| io_err(path, e))?;
    let stamp = stamp_of(&md);
    let src = read_source(path, &f, md.size())?;
    Ok((parse_indexed(src, &stamp, index)?, stamp, f))
}

/// Builds the document of version `stamp` from its index file if that is valid for it, else
/// by scanning (and then records the index).
fn parse_indexed(
    src: Source,
    stamp: &FileStamp,
    index: Option<&Path>,
) -> Result<Document, StoreError> {
    let Some(index) = index else {
        return Document::parse_source(src);
    };
    let decoded = std::fs::read(index)
        .ok()
        .and_then(|b| file_index::decode(&b, stamp, src.len()));
    let src = match decoded {
        Some(d) => match Document::from_decoded(src, d) {
            Ok(doc) => return Ok(doc),
            Err(src) => src,
        },
        None => src,
    };
    let doc = Document::parse_source(src)?;
    write_index(index, &doc, stamp);
    Ok(doc)
}

/// Records the index of `doc` (the version `stamp`, unmodified) at `path`: temp file and rename,
/// no fsync (a cache). Failures are ignored: the next reader scans.
fn write_index(path: &Path, doc: &Document, stamp: &FileStamp) {
    let Some(bytes) = file_index::encode(doc, stamp) else {
        return;
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = path.with_extension(format!("index.{}", std::process::id()));
    if std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The file's bytes: a per-call process maps it (no copy; only the pages it touches are
/// read; see `ffi::guard_sigbus` for why only there), anyone else reads it.
fn read_source(path: &Path, f: &File, size: u64) -> Result<Source, StoreError> {
    let mapped = match usize::try_from(size) {
        Ok(len) if crate::ffi::sigbus_guarded() => crate::ffi::Mapping::of(f, len),
        _ => None,
    };
    Ok(match mapped {
        Some(m) => {
            failpoint_truncate("truncate-after-map", path);
            Source::Mapped(m)
        }
        None => Source::Owned(read_all(path, f, size)?),
    })
}

/// Test hook: with the `failpoints` feature, aborts the process if `QUBES_ADMIN_FAILPOINT`
/// names this point (`after-temp-write`, `after-fsync`, `before-rename`, `after-rename`,
/// `during-event-append`; `torn-index` is [`failpoint_tear`]). Without the feature it compiles to nothing.
#[inline]
pub fn failpoint(name: &str) {
    #[cfg(feature = "failpoints")]
    {
        if std::env::var_os("QUBES_ADMIN_FAILPOINT").is_some_and(|v| v == name) {
            std::process::abort();
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Test hook: with the `failpoints` feature, truncates `path` in place (as a program that
/// rewrites qubes.xml in place would) if `QUBES_ADMIN_FAILPOINT` names this point.
#[inline]
fn failpoint_truncate(name: &str, path: &Path) {
    #[cfg(feature = "failpoints")]
    {
        if std::env::var_os("QUBES_ADMIN_FAILPOINT").is_some_and(|v| v == name) {
            let _ = OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(0));
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = (name, path);
}

/// Test hook: with the `failpoints` feature, cuts the file at `path` to half its length (a torn
/// write) and aborts if `QUBES_ADMIN_FAILPOINT` names this point.
#[inline]
fn failpoint_tear(name: &str, path: &Path) {
    #[cfg(feature = "failpoints")]
    {
        if std::env::var_os("QUBES_ADMIN_FAILPOINT").is_some_and(|v| v == name) {
            if let Ok(f) = OpenOptions::new().write(true).open(path) {
                let half = f.metadata().map(|m| m.len() / 2).unwrap_or(0);
                let _ = f.set_len(half);
            }
            std::process::abort();
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = (name, path);
}

/// A random hex suffix for temp files (from /dev/urandom, else pid/time/counter hashing).
fn random_suffix() -> String {
    random_bytes::<8>()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Random bytes from `/dev/urandom` (temp names, UUIDs, disposable ids); where that cannot be
/// read, a hash of the pid, a counter and the time (unpredictable enough for names, which
/// `O_EXCL` makes safe anyway).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let ok = File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        use std::hash::{BuildHasher, Hasher};
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        for chunk in b.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
                h.write_u128(t.as_nanos());
            }
            for (d, s) in chunk.iter_mut().zip(h.finish().to_le_bytes()) {
                *d = s;
            }
        }
    }
    b
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `qubes.xml~` for `.../qubes.xml`: the prefix of temp files.
fn temp_prefix(path: &Path) -> Option<std::ffi::OsString> {
    let mut p = path.file_name()?.to_os_string();
    p.push("~");
    Some(p)
}

/// Removes `qubes.xml~*` in the store's directory. Only call under the exclusive lock: then no
/// live writer owns one (a writer creates its temp file only while holding the lock).
/// Returns how many were removed.
pub fn sweep_stale_temps(path: &Path) -> usize {
    let Some(prefix) = temp_prefix(path) else {
        return 0;
    };
    let prefix = prefix.as_encoded_bytes();
    let Ok(rd) = std::fs::read_dir(dir_of(path)) else {
        return 0;
    };
    let mut n = 0;
    for ent in rd.flatten() {
        let name = ent.file_name();
        let nb = name.as_encoded_bytes();
        if nb.len() > prefix.len()
            && nb.starts_with(prefix)
            && std::fs::remove_file(ent.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Removes the index's temp files (`qubes.xml.index.<pid>`, written by `write_index`) whose process
/// no longer exists: left by a crash between write and rename. A live reader may be writing
/// one without the lock, hence the pid check rather than the lock. Returns how many were removed.
pub fn sweep_dead_index_temps(index: &Path) -> usize {
    let (Some(dir), Some(name)) = (index.parent(), index.file_name()) else {
        return 0;
    };
    let mut prefix = name.to_os_string();
    prefix.push(".");
    let prefix = prefix.as_encoded_bytes();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(pid) = name.as_encoded_bytes().strip_prefix(prefix) else {
            continue;
        };
        let is_pid = !pid.is_empty() && pid.iter().all(u8::is_ascii_digit);
        if is_pid
            && !Path::new("/proc").join(OsStr::from_bytes(pid)).exists()
            && std::fs::remove_file(ent.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// A write transaction: holds the OFD lock on qubes.xml (which also excludes Python tools using
/// `lockf`) from load to commit.
///
/// The lock is held until the transaction is **dropped**, not merely until [`WriteTxn::commit`]:
/// commit also locks the new file before renaming it into place, so writers that open
/// qubes.xml after the rename wait too, and the caller can append the commit's events to the
/// event log in commit order before releasing.
pub struct WriteTxn {
    path: PathBuf,
    /// The locked descriptor(s): the file loaded, then each file committed.
    locked: Vec<File>,
    doc: Document,
    /// The index file kept for each version (`file_index`), if any.
    index: Option<PathBuf>,
}

impl WriteTxn {
    /// Locks (waiting at most `timeout`, then [`StoreError::Busy`]), re-checks that the locked
    /// descriptor is still the file at `path`, sweeps stale temp files, then loads.
    pub fn begin(path: &Path, timeout: Duration) -> Result<WriteTxn, StoreError> {
        Self::begin_indexed(path, timeout, None)
    }

    /// [`WriteTxn::begin`], loading through the index file at `index` (and keeping it current
    /// at each commit).
    pub fn begin_indexed(
        path: &Path,
        timeout: Duration,
        index: Option<&Path>,
    ) -> Result<WriteTxn, StoreError> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(nix::libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| io_err(path, e))?;
            match lock::lock_exclusive_until(&f, started, deadline).map_err(|e| io_err(path, e))? {
                lock::Locked::Yes => {}
                lock::Locked::TimedOut(w) => {
                    return Err(StoreError::Busy {
                        waited_ms: u64::try_from(w.as_millis()).unwrap_or(u64::MAX),
                    })
                }
            }
            let md = f.metadata().map_err(|e| io_err(path, e))?;
            let now = match std::fs::metadata(path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(path, e)),
            };
            if (md.dev(), md.ino()) != (now.dev(), now.ino()) {
                // Replaced by another writer while we waited: lock the new file.
                continue;
            }
            sweep_stale_temps(path);
            if let Some(index) = index {
                sweep_dead_index_temps(index);
            }
            let src = read_source(path, &f, md.size())?;
            let doc = parse_indexed(src, &stamp_of(&md), index)?;
            return Ok(WriteTxn {
                path: path.to_path_buf(),
                locked: vec![f],
                doc,
                index: index.map(Path::to_path_buf),
            });
        }
    }
    pub fn doc(&self) -> &Document {
        &self.doc
    }
    /// The version locked last: the one loaded, or after a commit the one saved.
    pub fn stamp(&self) -> FileStamp {
        match self.locked.last().and_then(|f| f.metadata().ok()) {
            Some(md) => stamp_of(&md),
            None => FileStamp {
                dev: 0,
                ino: 0,
                size: 0,
                mtime_ns: 0,
                ctime_ns: 0,
            },
        }
    }
    pub fn doc_mut(&mut self) -> &mut Document {
        &mut self.doc
    }
    /// Writes the document if it was modified: temp file in the same directory, fsync, rename,
    /// fsync the directory. The lock stays held until the transaction is dropped, so the caller
    /// can append the events of this commit in commit order.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.commit_then(|| ())
    }

    /// [`WriteTxn::commit`], running `after_rename` as soon as the new version is in place (or
    /// at once when nothing was modified) and before the directory fsync: the caller appends
    /// the commit's events there, so a process killed right after the rename almost never
    /// leaves a saved change without its events. `after_rename` is not run when the write
    /// fails before the rename (nothing changed). A directory-fsync error after the rename is
    /// returned, although the change is visible.
    pub fn commit_then<T>(&mut self, after_rename: impl FnOnce() -> T) -> Result<T, StoreError> {
        if !self.doc.is_modified() {
            return Ok(after_rename());
        }
        let bytes = self.doc.to_bytes();
        // Index the new version before writing it: a serialisation this crate cannot read back
        // must fail the call (nothing changed), not become qubes.xml. It also becomes the
        // transaction's document (so a second commit is a no-op).
        let new_doc = Document::parse(bytes.clone()).map_err(|e| match e {
            StoreError::Parse(m) => StoreError::Parse(format!(
                "internal error: the new version would not read back, so it was not saved: {m}"
            )),
            e => e,
        })?;
        let path = self.path.clone();
        let dir = dir_of(&path);
        let prefix = temp_prefix(&path).ok_or_else(|| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
        })?;
        let gid = self
            .locked
            .last()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.gid());
        let (tmp_path, mut tmp) = create_temp(dir, &prefix)?;
        let result = (|| -> Result<(), StoreError> {
            let ioe = |e| StoreError::Io {
                path: tmp_path.clone(),
                source: e,
            };
            tmp.write_all(&bytes).map_err(ioe)?;
            failpoint("after-temp-write");
            tmp.set_permissions(std::fs::Permissions::from_mode(0o660))
                .map_err(ioe)?;
            if let Some(gid) = gid {
                // Keep the group (normally `qubes`); not permitted for every caller.
                let _ = std::os::unix::fs::fchown(&tmp, None, Some(gid));
            }
            tmp.sync_all().map_err(ioe)?;
            failpoint("after-fsync");
            // Lock the new file before it becomes qubes.xml, so writers that open it after the
            // rename wait for this transaction to end.
            if !lock::try_lock_exclusive(&tmp).map_err(ioe)? {
                return Err(ioe(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "new file is locked",
                )));
            }
            failpoint("before-rename");
            std::fs::rename(&tmp_path, &path).map_err(ioe)?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
        failpoint("after-rename");
        self.locked.push(tmp);
        let out = after_rename();
        if let Ok(d) = File::open(dir) {
            d.sync_all().map_err(|e| StoreError::Io {
                path: dir.to_path_buf(),
                // The caller sees an error for a change that is already visible: say so.
                source: std::io::Error::new(
                    e.kind(),
                    format!("the change was saved, but syncing its directory failed: {e}"),
                ),
            })?;
        }
        self.doc = new_doc;
        if let Some(index) = &self.index {
            // Still under the lock: no other writer can make it stale before it is in place.
            write_index(index, &self.doc, &self.stamp());
            failpoint_tear("torn-index", index);
        }
        Ok(out)
    }
}

fn create_temp(dir: &Path, prefix: &std::ffi::OsStr) -> Result<(PathBuf, File), StoreError> {
    create_temp_file(dir, prefix, 0o660).map_err(|e| StoreError::Io {
        path: dir.to_path_buf(),
        source: e,
    })
}

/// Creates a new file `<dir>/<prefix><random>` (`O_EXCL`, close-on-exec, `mode` before umask),
/// retrying on a name clash: the temp file of a crash-safe replace.
pub(crate) fn create_temp_file(
    dir: &Path,
    prefix: &std::ffi::OsStr,
    mode: u32,
) -> std::io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..16 {
        let mut name = prefix.to_os_string();
        name.push(random_suffix());
        let p = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_CLOEXEC)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("cannot create a temp file")))
}

/// Replaces `path` crash-safely with `data` (a file beside qubes.xml's: notes, firewall): temp
/// file in the same directory, fsync, rename, fsync the directory. Creates the directory (mode
/// 0775) if missing. The file gets `mode`, or keeps the mode of the file it replaces (a new one:
/// 0666 before umask).
pub fn write_file_atomically(path: &Path, data: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o775)
        .create(dir)?;
    let keep = std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push("~");
    let (tmp, mut f) = create_temp_file(dir, &prefix, 0o666)?;
    let result = (|| {
        if let Some(m) = mode.or(keep) {
            f.set_permissions(std::fs::Permissions::from_mode(m))?;
        }
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests;
