//! The dom0 services a started qube needs besides libvirt (`core.md` §10.2), behind one small
//! trait: qmemman (memory for the new domain), xenstore (the qube may report its memory),
//! `qubesdb-daemon` and the QubesDB entries, `qrexec-daemon`. [`Xen`] talks to the real
//! services of a Qubes dom0; [`Sandbox`] stands in where they do not exist (a QEMU or test
//! libvirt): memory is always there, no daemon runs, and the QubesDB entries a qube would get
//! are kept in a file, so developers and tests can read them. docs/dom0-services.md has the
//! protocols.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use crate::config::{Dom0Config, Dom0Kind as Kind};

/// What can go wrong with a dom0 service; the messages are the reference's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// qmemman could not make the memory free (the qube's name, quoted).
    #[error("Not enough memory to start domain {0}")]
    NoMemory(String),
    #[error("Failed to connect to qmemman: {0}")]
    Qmemman(std::io::Error),
    #[error("xenstore-chmod failed: {0}")]
    Xenstore(String),
    /// `qubesdb-daemon` could not be run or failed (the detail is not part of the message).
    #[error("Cannot execute qubesdb-daemon")]
    QubesDbDaemon(String),
    #[error("QubesDB of {name}: {detail}")]
    QubesDb { name: String, detail: String },
    /// qrexec-daemon's agent did not connect in time (its exit status 3).
    #[error("Cannot connect to qrexec agent for {seconds} seconds, see /var/log/xen/console/guest-{name}.log for details")]
    QrexecTimeout { name: String, seconds: u64 },
    /// Any other qrexec-daemon failure (its stderr).
    #[error("qrexec-daemon startup failed: {0}")]
    Qrexec(String),
}

/// qmemman holds memory balancing while a grant is open (the reference keeps its connection
/// until the domain exists); dropping it closes the connection.
pub struct MemoryGrant {
    _conn: Option<UnixStream>,
}

/// How `qrexec-daemon` is started for a qube.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrexecStart {
    pub xid: i64,
    pub name: String,
    pub default_user: String,
    /// Quiet (`-q`) unless the qube's `debug` is on.
    pub debug: bool,
    /// The qube's `qrexec` feature: without it the daemon starts in the background
    /// (`QREXEC_STARTUP_NOWAIT=1`) instead of waiting for the agent `timeout` seconds.
    pub wait_for_agent: bool,
    pub timeout: u64,
}

/// One qube's QubesDB: written at Start; read for what the qube reports about itself
/// (`qubes.FeaturesRequest`: those values are untrusted).
pub trait QubesDb {
    fn write(&mut self, path: &str, value: &str) -> Result<(), ServiceError>;
    /// Removes `path`; a path ending in `/` removes the whole subtree.
    fn rm(&mut self, path: &str) -> Result<(), ServiceError>;
    /// The value at `path`, `None` if there is no such entry.
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, ServiceError>;
    /// The paths of the entries under `prefix` (a prefix ending in `/`).
    fn list(&mut self, prefix: &str) -> Result<Vec<String>, ServiceError>;
}

/// The dom0 services of a Start, in the order it uses them.
pub trait Dom0Services {
    /// Asks qmemman to make `bytes` free for a new domain.
    fn request_memory(&self, name: &str, bytes: u64) -> Result<MemoryGrant, ServiceError>;
    /// Lets domain `xid` write its memory reports (`/local/domain/<xid>/memory`).
    fn allow_memory_reports(&self, xid: i64) -> Result<(), ServiceError>;
    /// Starts a fresh (empty) QubesDB for the qube and connects to it.
    fn start_qubesdb(&self, xid: i64, name: &str) -> Result<Box<dyn QubesDb>, ServiceError>;
    /// Connects to the QubesDB of a running qube (a netvm gets its clients' entries).
    fn qubesdb(&self, name: &str) -> Result<Box<dyn QubesDb>, ServiceError>;
    /// Starts `qrexec-daemon` and, unless told not to, waits for the qube's agent.
    fn start_qrexec(&self, req: &QrexecStart) -> Result<(), ServiceError>;
}

/// The implementation `config` asks for.
pub fn for_config(run_dir: &Path, config: &Dom0Config) -> Box<dyn Dom0Services> {
    match config.kind {
        Kind::Xen => Box::new(Xen {
            run_dir: run_dir.to_path_buf(),
            config: config.clone(),
        }),
        Kind::Sandbox => Box::new(Sandbox {
            dir: super::client::helper_dir(run_dir).join("qubesdb"),
        }),
    }
}

/// The real services of a Qubes dom0.
pub struct Xen {
    pub run_dir: PathBuf,
    pub config: Dom0Config,
}

/// How long a reply from qmemman or QubesDB may take (qmemman may first have to take memory
/// back from other qubes).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a daemon's first process to its exit (the daemons fork into the background once
/// ready). `Err`: it could not be run.
fn run(cmd: &mut Command) -> Result<std::process::Output, String> {
    cmd.stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", cmd.get_program().to_string_lossy()))
}

impl Dom0Services for Xen {
    fn request_memory(&self, name: &str, bytes: u64) -> Result<MemoryGrant, ServiceError> {
        let mut conn = UnixStream::connect(self.run_dir.join("qmemman.sock"))
            .map_err(ServiceError::Qmemman)?;
        conn.set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(ServiceError::Qmemman)?;
        conn.write_all(format!("{bytes}\n").as_bytes())
            .map_err(ServiceError::Qmemman)?;
        let mut reply = [0u8; 1024];
        let n = conn.read(&mut reply).map_err(ServiceError::Qmemman)?;
        if reply.get(..n).map(|r| r.trim_ascii()) == Some(b"OK".as_slice()) {
            Ok(MemoryGrant { _conn: Some(conn) })
        } else {
            Err(ServiceError::NoMemory(crate::wire::python::repr(name)))
        }
    }

    fn allow_memory_reports(&self, xid: i64) -> Result<(), ServiceError> {
        // Owner: the domain itself, no access for others (xenstore's `n<domid>`).
        let mut cmd = Command::new(&self.config.xenstore_chmod);
        cmd.arg(format!("/local/domain/{xid}/memory"))
            .arg(format!("n{xid}"));
        let out = run(&mut cmd).map_err(ServiceError::Xenstore)?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(ServiceError::Xenstore(err.trim().to_string()));
        }
        Ok(())
    }

    fn start_qubesdb(&self, xid: i64, name: &str) -> Result<Box<dyn QubesDb>, ServiceError> {
        let mut cmd = Command::new(&self.config.qubesdb_daemon);
        cmd.arg(xid.to_string()).arg(name);
        let out = run(&mut cmd).map_err(ServiceError::QubesDbDaemon)?;
        if !out.status.success() {
            return Err(ServiceError::QubesDbDaemon(out.status.to_string()));
        }
        self.qubesdb(name)
    }

    fn qubesdb(&self, name: &str) -> Result<Box<dyn QubesDb>, ServiceError> {
        let path = self.run_dir.join(format!("qubesdb.{name}.sock"));
        let db = QubesDbClient::connect(&path, name)?;
        Ok(Box::new(db))
    }

    fn start_qrexec(&self, req: &QrexecStart) -> Result<(), ServiceError> {
        let mut cmd = Command::new(&self.config.qrexec_daemon);
        if !req.debug {
            cmd.arg("-q");
        }
        cmd.arg(req.xid.to_string())
            .arg(&req.name)
            .arg(&req.default_user);
        if req.wait_for_agent {
            cmd.env("QREXEC_STARTUP_TIMEOUT", req.timeout.to_string());
        } else {
            cmd.env("QREXEC_STARTUP_NOWAIT", "1");
        }
        let out = run(&mut cmd).map_err(ServiceError::Qrexec)?;
        match out.status.code() {
            Some(0) => Ok(()),
            Some(3) => Err(ServiceError::QrexecTimeout {
                name: req.name.clone(),
                seconds: req.timeout,
            }),
            _ => Err(ServiceError::Qrexec(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )),
        }
    }
}

/// QubesDB's limits: a path fits 63 bytes (NUL-terminated in 64), a value 3072 bytes.
pub const QDB_MAX_PATH: usize = 64;
pub const QDB_MAX_DATA: usize = 3072;
/// Message types (`enum qdb_msg`).
pub const QDB_CMD_READ: u32 = 0;
pub const QDB_CMD_WRITE: u32 = 1;
pub const QDB_CMD_LIST: u32 = 3;
pub const QDB_CMD_RM: u32 = 4;
pub const QDB_RESP_OK: u32 = 7;
pub const QDB_RESP_ERROR_NOENT: u32 = 8;
pub const QDB_RESP_READ: u32 = 10;
/// One entry of a LIST reply; an empty path ends the list.
pub const QDB_RESP_LIST: u32 = 12;
/// `struct qdb_hdr`: type (u32), path (64 bytes, NUL-padded), data length (u32), host order.
pub const QDB_HDR_LEN: usize = 4 + QDB_MAX_PATH + 4;

/// Encodes a QubesDB request header (the data follows it).
pub fn qdb_header(ty: u32, path: &str, data_len: usize) -> Option<[u8; QDB_HDR_LEN]> {
    let len = u32::try_from(data_len)
        .ok()
        .filter(|_| data_len <= QDB_MAX_DATA)?;
    let p = path.as_bytes();
    if p.is_empty() || p.len() >= QDB_MAX_PATH || p.contains(&0) {
        return None;
    }
    let mut h = [0u8; QDB_HDR_LEN];
    h.get_mut(..4)?.copy_from_slice(&ty.to_ne_bytes());
    h.get_mut(4..4 + p.len())?.copy_from_slice(p);
    h.get_mut(4 + QDB_MAX_PATH..)?
        .copy_from_slice(&len.to_ne_bytes());
    Some(h)
}

/// Splits a header into (type, path, data length).
pub fn qdb_parse_header(h: &[u8; QDB_HDR_LEN]) -> (u32, String, u32) {
    let word = |r: std::ops::Range<usize>| {
        let mut b = [0u8; 4];
        if let Some(s) = h.get(r) {
            b.copy_from_slice(s);
        }
        u32::from_ne_bytes(b)
    };
    let path = h.get(4..4 + QDB_MAX_PATH).unwrap_or_default();
    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
    let path = String::from_utf8_lossy(path.get(..end).unwrap_or_default()).into_owned();
    (word(0..4), path, word(4 + QDB_MAX_PATH..QDB_HDR_LEN))
}

/// A client of one qube's `qubesdb-daemon` (dom0 side).
pub struct QubesDbClient {
    conn: UnixStream,
    name: String,
}

impl QubesDbClient {
    pub fn connect(path: &Path, name: &str) -> Result<Self, ServiceError> {
        let conn = UnixStream::connect(path).map_err(|e| ServiceError::QubesDb {
            name: name.to_string(),
            detail: format!("{}: {e}", path.display()),
        })?;
        let _ = conn.set_read_timeout(Some(REPLY_TIMEOUT));
        Ok(QubesDbClient {
            conn,
            name: name.to_string(),
        })
    }

    fn err(&self, detail: impl Into<String>) -> ServiceError {
        ServiceError::QubesDb {
            name: self.name.clone(),
            detail: detail.into(),
        }
    }

    fn send(&mut self, ty: u32, path: &str, data: &[u8]) -> Result<(), ServiceError> {
        let hdr = qdb_header(ty, path, data.len())
            .ok_or_else(|| self.err(format!("invalid entry {path:?} ({} bytes)", data.len())))?;
        let mut msg = hdr.to_vec();
        msg.extend_from_slice(data);
        self.conn
            .write_all(&msg)
            .map_err(|e| self.err(e.to_string()))
    }

    /// One reply message: (type, path, data). The daemon never sends more than
    /// `QDB_MAX_DATA` bytes; a longer length is a broken peer.
    fn receive(&mut self) -> Result<(u32, String, Vec<u8>), ServiceError> {
        let mut reply = [0u8; QDB_HDR_LEN];
        self.conn
            .read_exact(&mut reply)
            .map_err(|e| self.err(e.to_string()))?;
        let (rty, rpath, rlen) = qdb_parse_header(&reply);
        let len = usize::try_from(rlen).unwrap_or(usize::MAX);
        if len > QDB_MAX_DATA {
            return Err(self.err(format!("reply of {len} bytes (at most {QDB_MAX_DATA})")));
        }
        let mut data = vec![0u8; len];
        self.conn
            .read_exact(&mut data)
            .map_err(|e| self.err(e.to_string()))?;
        Ok((rty, rpath, data))
    }

    /// A WRITE or RM and its reply; `Ok(false)` for "no such entry".
    fn request(&mut self, ty: u32, path: &str, data: &[u8]) -> Result<bool, ServiceError> {
        self.send(ty, path, data)?;
        match self.receive()?.0 {
            QDB_RESP_OK => Ok(true),
            QDB_RESP_ERROR_NOENT => Ok(false),
            other => Err(self.err(format!("{path}: error reply (type {other})"))),
        }
    }
}

impl QubesDb for QubesDbClient {
    fn write(&mut self, path: &str, value: &str) -> Result<(), ServiceError> {
        self.request(QDB_CMD_WRITE, path, value.as_bytes())
            .map(|_| ())
    }

    fn rm(&mut self, path: &str) -> Result<(), ServiceError> {
        self.request(QDB_CMD_RM, path, &[]).map(|_| ())
    }

    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, ServiceError> {
        self.send(QDB_CMD_READ, path, &[])?;
        match self.receive()? {
            (QDB_RESP_READ, _, data) => Ok(Some(data)),
            (QDB_RESP_ERROR_NOENT, _, _) => Ok(None),
            (other, _, _) => Err(self.err(format!("{path}: error reply (type {other})"))),
        }
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<String>, ServiceError> {
        self.send(QDB_CMD_LIST, prefix, &[])?;
        let mut paths = Vec::new();
        loop {
            match self.receive()? {
                (QDB_RESP_LIST, p, _) if p.is_empty() => return Ok(paths),
                (QDB_RESP_LIST, p, _) => paths.push(p),
                (QDB_RESP_ERROR_NOENT, _, _) => return Ok(paths),
                (other, _, _) => {
                    return Err(self.err(format!("{prefix}: error reply (type {other})")))
                }
            }
        }
    }
}

/// Where no dom0 services exist: memory is always there, no daemon runs, and each qube's
/// QubesDB is a file `<run_dir>/qubes-admin/qubesdb/<name>` of `path=value` lines (sorted;
/// `\n` and `\\` escaped), started empty at each Start.
pub struct Sandbox {
    pub dir: PathBuf,
}

/// One sandbox QubesDB file: loaded on open, written back after each change.
pub struct SandboxDb {
    path: PathBuf,
    name: String,
    entries: std::collections::BTreeMap<String, String>,
}

/// The entries of a sandbox QubesDB file.
pub fn sandbox_entries(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), unescape(v)))
        .collect()
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

impl SandboxDb {
    fn open(dir: &Path, name: &str, fresh: bool) -> Result<Self, ServiceError> {
        let path = dir.join(name);
        let entries = if fresh {
            Default::default()
        } else {
            sandbox_entries(&std::fs::read_to_string(&path).unwrap_or_default())
        };
        let mut db = SandboxDb {
            path,
            name: name.to_string(),
            entries,
        };
        std::fs::create_dir_all(dir).map_err(|e| db.err(e))?;
        db.save()?;
        Ok(db)
    }

    fn err(&self, e: impl std::fmt::Display) -> ServiceError {
        ServiceError::QubesDb {
            name: self.name.clone(),
            detail: format!("{}: {e}", self.path.display()),
        }
    }

    fn save(&mut self) -> Result<(), ServiceError> {
        let mut text = String::new();
        for (k, v) in &self.entries {
            let v = v.replace('\\', "\\\\").replace('\n', "\\n");
            text.push_str(&format!("{k}={v}\n"));
        }
        std::fs::write(&self.path, text).map_err(|e| self.err(e))
    }
}

impl QubesDb for SandboxDb {
    fn write(&mut self, path: &str, value: &str) -> Result<(), ServiceError> {
        if qdb_header(QDB_CMD_WRITE, path, value.len()).is_none() {
            return Err(self.err(format!("invalid entry {path:?} ({} bytes)", value.len())));
        }
        self.entries.insert(path.to_string(), value.to_string());
        self.save()
    }

    fn rm(&mut self, path: &str) -> Result<(), ServiceError> {
        if path.ends_with('/') {
            self.entries.retain(|k, _| !k.starts_with(path));
        } else {
            self.entries.remove(path);
        }
        self.save()
    }

    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, ServiceError> {
        Ok(self.entries.get(path).map(|v| v.as_bytes().to_vec()))
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<String>, ServiceError> {
        Ok(self
            .entries
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

impl Dom0Services for Sandbox {
    fn request_memory(&self, _name: &str, _bytes: u64) -> Result<MemoryGrant, ServiceError> {
        Ok(MemoryGrant { _conn: None })
    }

    fn allow_memory_reports(&self, _xid: i64) -> Result<(), ServiceError> {
        Ok(())
    }

    fn start_qubesdb(&self, _xid: i64, name: &str) -> Result<Box<dyn QubesDb>, ServiceError> {
        Ok(Box::new(SandboxDb::open(&self.dir, name, true)?))
    }

    fn qubesdb(&self, name: &str) -> Result<Box<dyn QubesDb>, ServiceError> {
        Ok(Box::new(SandboxDb::open(&self.dir, name, false)?))
    }

    fn start_qrexec(&self, _req: &QrexecStart) -> Result<(), ServiceError> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = qdb_header(QDB_CMD_WRITE, "/name", 4).unwrap();
        assert_eq!(h.len(), 72);
        assert_eq!(&h[..4], &1u32.to_ne_bytes());
        assert_eq!(&h[4..9], b"/name");
        assert!(h[9..68].iter().all(|&b| b == 0));
        assert_eq!(&h[68..], &4u32.to_ne_bytes());
        assert_eq!(qdb_parse_header(&h), (1, "/name".to_string(), 4));
        // 63 bytes fit (NUL-terminated in 64), 64 do not; neither does too much data.
        assert!(qdb_header(1, &format!("/{}", "a".repeat(62)), 0).is_some());
        assert!(qdb_header(1, &format!("/{}", "a".repeat(63)), 0).is_none());
        assert!(qdb_header(1, "/x", QDB_MAX_DATA + 1).is_none());
        assert!(qdb_header(1, "", 0).is_none());
    }

    #[test]
    fn sandbox_db_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Sandbox {
            dir: tmp.path().join("qubesdb"),
        };
        let mut db = s.start_qubesdb(3, "work").unwrap();
        db.write("/name", "work").unwrap();
        db.write("/multi", "a\nb\\c").unwrap();
        db.write("/qubes-firewall/10.137.0.5/policy", "drop")
            .unwrap();
        db.write("/qubes-firewall/10.137.0.5/0000", "action=accept")
            .unwrap();
        db.write("/qubes-firewall/10.137.0.50", "").unwrap();
        db.rm("/qubes-firewall/10.137.0.5/").unwrap();
        drop(db);
        let text = std::fs::read_to_string(tmp.path().join("qubesdb/work")).unwrap();
        assert_eq!(
            text,
            "/multi=a\\nb\\\\c\n/name=work\n/qubes-firewall/10.137.0.50=\n"
        );
        assert_eq!(sandbox_entries(&text)["/multi"], "a\nb\\c");
        // Reopening keeps the entries; a new Start begins empty.
        let mut db = s.qubesdb("work").unwrap();
        db.rm("/name").unwrap();
        drop(db);
        let text = std::fs::read_to_string(tmp.path().join("qubesdb/work")).unwrap();
        assert_eq!(text, "/multi=a\\nb\\\\c\n/qubes-firewall/10.137.0.50=\n");
        drop(s.start_qubesdb(3, "work").unwrap());
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("qubesdb/work")).unwrap(),
            ""
        );
    }

    /// READ and LIST against a fake daemon speaking `qdb_hdr`: a value, a missing entry, and a
    /// list that ends at the empty path.
    #[test]
    fn client_reads_and_lists() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("qdb.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let reply = |c: &mut UnixStream, ty: u32, p: &str, data: &[u8]| {
                let mut h = [0u8; QDB_HDR_LEN];
                h[..4].copy_from_slice(&ty.to_ne_bytes());
                h[4..4 + p.len()].copy_from_slice(p.as_bytes());
                h[68..].copy_from_slice(&(data.len() as u32).to_ne_bytes());
                c.write_all(&h).unwrap();
                c.write_all(data).unwrap();
            };
            for _ in 0..3 {
                let mut h = [0u8; QDB_HDR_LEN];
                c.read_exact(&mut h).unwrap();
                let (ty, p, len) = qdb_parse_header(&h);
                assert_eq!(len, 0);
                got.push((ty, p.clone()));
                match (ty, p.as_str()) {
                    (QDB_CMD_READ, "/features-request/os") => {
                        reply(&mut c, QDB_RESP_READ, &p, b"Linux")
                    }
                    (QDB_CMD_READ, _) => reply(&mut c, QDB_RESP_ERROR_NOENT, &p, b""),
                    (QDB_CMD_LIST, _) => {
                        reply(&mut c, QDB_RESP_LIST, "/features-request/gui", b"");
                        reply(&mut c, QDB_RESP_LIST, "/features-request/os", b"");
                        reply(&mut c, QDB_RESP_LIST, "", b"");
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            got
        });
        let mut db = QubesDbClient::connect(&path, "work").unwrap();
        assert_eq!(
            db.list("/features-request/").unwrap(),
            ["/features-request/gui", "/features-request/os"]
        );
        assert_eq!(db.read("/features-request/os").unwrap().unwrap(), b"Linux");
        assert_eq!(db.read("/features-request/none").unwrap(), None);
        assert_eq!(
            server.join().unwrap(),
            [
                (QDB_CMD_LIST, "/features-request/".to_string()),
                (QDB_CMD_READ, "/features-request/os".to_string()),
                (QDB_CMD_READ, "/features-request/none".to_string()),
            ]
        );
    }
}
