//! Shared helpers for the integration tests (`mod support;` in a test file).
//!
//! * [`Sandbox`]: a temp dir with a copy of a fixture's qubes.xml (and policy), a run dir and a
//!   base dir, plus the environment contract (`QUBES_*`) for `qubes-admin-call`.
//! * [`Sandbox::socket_request`] / [`Sandbox::exec_service`]: run the binary in either mode.
//! * [`escape`] / [`unescape`]: the byte escaping of the golden files (`\0`, `\n`, `\\`, `\xHH`).
//!
//! Nothing here depends on the oracle: fixtures are committed under `tests/fixtures/`.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod lvm;
pub mod qemu;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: cargo's build, or the one `QUBES_ADMIN_CALL_BIN` names
/// (`scripts/test.sh` runs the byte-exact suites again on the static build that gets installed,
/// `scripts/build-call.sh`).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("QUBES_ADMIN_CALL_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_qubes-admin-call").to_string())
    })
}

/// Per-call timeout (a hung call must fail the test, not hang it).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// `tests/fixtures/<name>` of the repository.
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// `tests/<rel>` of the repository.
pub fn tests_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests")
        .join(rel)
}

/// A private system: `DIR/qubes.xml`, `DIR/run/`, `DIR/base/`, `DIR/policy.d/`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    fixture: PathBuf,
}

impl Sandbox {
    /// A sandbox with the fixture `tests/fixtures/<name>` (its `qubes.xml`, and its `policy.d/`
    /// if any).
    pub fn new(fixture: &str) -> Sandbox {
        Self::from_dir(&fixture_dir(fixture))
    }

    pub fn from_dir(fixture: &Path) -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Sandbox {
            dir,
            fixture: fixture.to_path_buf(),
        };
        sb.reset();
        sb
    }

    /// Like [`Sandbox::new`], but every occurrence of `capture_base` (the base dir the fixture
    /// was captured with, e.g. its pool `dir_path`s) in qubes.xml is replaced by this
    /// sandbox's base dir, so that the pool/base-dir relation is the one the reference saw.
    pub fn new_rebased(fixture: &str, capture_base: &str) -> Sandbox {
        let sb = Self::new(fixture);
        sb.rebase(capture_base);
        sb
    }

    /// Rewrites `capture_base` to [`Sandbox::base_dir`] in the sandbox's qubes.xml.
    pub fn rebase(&self, capture_base: &str) {
        let text = std::fs::read_to_string(self.xml()).unwrap();
        let base = self.base_dir();
        std::fs::write(
            self.xml(),
            text.replace(capture_base, base.to_str().unwrap()),
        )
        .unwrap();
    }

    /// Back to the pristine fixture: qubes.xml copied again, run dir emptied.
    pub fn reset(&self) {
        let d = self.dir.path();
        std::fs::copy(self.fixture.join("qubes.xml"), self.xml())
            .unwrap_or_else(|e| panic!("copy fixture {}: {e}", self.fixture.display()));
        let _ = std::fs::remove_dir_all(self.run_dir());
        std::fs::create_dir_all(self.run_dir()).unwrap();
        std::fs::create_dir_all(self.base_dir()).unwrap();
        std::fs::create_dir_all(self.policy_dir()).unwrap();
        let node = self.fixture.join("libvirt-node.xml");
        if node.exists() {
            std::fs::copy(&node, self.libvirt_node()).unwrap();
        }
        if let Ok(rd) = std::fs::read_dir(self.fixture.join("policy.d")) {
            for e in rd.flatten() {
                std::fs::copy(e.path(), d.join("policy.d").join(e.file_name())).unwrap();
            }
        }
    }

    pub fn xml(&self) -> PathBuf {
        self.dir.path().join("qubes.xml")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn base_dir(&self) -> PathBuf {
        self.dir.path().join("base")
    }
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policy.d")
    }
    fn libvirt_node(&self) -> PathBuf {
        self.dir.path().join("libvirt-node.xml")
    }
    /// libvirt's in-process test driver: on the fixture's `libvirt-node.xml` if it has one (a
    /// private copy per connection, so each call sees the node as defined), else the built-in
    /// default node (3072 MiB, 16 CPUs, no Qubes VM running).
    pub fn libvirt_uri(&self) -> String {
        let node = self.libvirt_node();
        if node.exists() {
            format!("test://{}", node.display())
        } else {
            "test:///default".to_string()
        }
    }

    /// The binary with a clean environment holding only the `QUBES_*` contract (and PATH).
    pub fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.env_clear()
            .env("QUBES_XML_PATH", self.xml())
            .env("QUBES_BASE_DIR", self.base_dir())
            .env("QUBES_RUN_DIR", self.run_dir())
            .env("QUBES_POLICY_DIR", self.policy_dir())
            .env("QUBES_LIBVIRT_URI", self.libvirt_uri())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        c
    }

    /// `qubes-admin-call --socket-request` with `stdin` (header `\0` payload).
    pub fn socket_request(&self, stdin: &[u8]) -> Output {
        let mut c = self.command();
        c.arg("--socket-request");
        run(c, stdin)
    }

    /// Exec-service mode, as qrexec runs it. `target` = `@kw` for a keyword target.
    pub fn exec_service(&self, service: &str, src: &str, target: &str, stdin: &[u8]) -> Output {
        let mut c = self.command();
        c.env("QREXEC_SERVICE_FULL_NAME", service)
            .env("QREXEC_REMOTE_DOMAIN", src);
        if let Some(kw) = target.strip_prefix('@') {
            c.env("QREXEC_REQUESTED_TARGET_TYPE", "keyword")
                .env("QREXEC_REQUESTED_TARGET_KEYWORD", kw);
        } else {
            c.env("QREXEC_REQUESTED_TARGET_TYPE", "name")
                .env("QREXEC_REQUESTED_TARGET", target);
        }
        if let Some((_, arg)) = service.split_once('+') {
            c.env("QREXEC_SERVICE_ARGUMENT", arg);
            if !arg.is_empty() {
                c.arg(arg);
            }
        }
        run(c, stdin)
    }
}

/// Socket framing of one request: `<method>+<arg> <src> name <dest>\0<payload>`.
pub fn frame_request(method_arg: &str, src: &str, dest: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!("{method_arg} {src} name {dest}\0").into_bytes();
    v.extend_from_slice(payload);
    v
}

/// Runs `c` with `stdin`, collecting stdout/stderr, killing it after [`CALL_TIMEOUT`].
pub fn run(mut c: Command, stdin: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin()));
    {
        let mut si = child.stdin.take().unwrap();
        // The binary may exit without reading (e.g. on a too-long request): ignore EPIPE.
        let _ = si.write_all(stdin);
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let deadline = Instant::now() + CALL_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// The first frame of every `admin.Events` stream.
pub const CONN: &[u8] = b"1\0\0connection-established\0\0";

/// One `admin.Events` process and what it has written so far.
pub struct Subscriber {
    pub child: Child,
    pub out: Option<ChildStdout>,
    buf: Vec<u8>,
}

impl Subscriber {
    pub fn new(sb: &Sandbox, src: &str, dest: &str) -> Subscriber {
        Subscriber::spawn(sb.command(), src, dest)
    }

    /// `admin.Events` in exec-service mode (as qrexec runs it) from `c` (the binary with its
    /// environment).
    pub fn spawn(c: Command, src: &str, dest: &str) -> Subscriber {
        Subscriber::service(c, "admin.Events", src, dest)
    }

    /// A streaming `service` (`admin.Events`, `admin.vm.Stats`) in exec-service mode.
    pub fn service(mut c: Command, service: &str, src: &str, dest: &str) -> Subscriber {
        c.env("QREXEC_SERVICE_FULL_NAME", service)
            .env("QREXEC_REMOTE_DOMAIN", src)
            .env("QREXEC_REQUESTED_TARGET_TYPE", "name")
            .env("QREXEC_REQUESTED_TARGET", dest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let fl = nix::fcntl::fcntl(out.as_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(out.as_fd(), nix::fcntl::FcntlArg::F_SETFL(fl)).unwrap();
        let mut s = Subscriber {
            child,
            out: Some(out),
            buf: Vec::new(),
        };
        // Subscribed once the first frame is out: later events reach it.
        s.wait_for(1);
        assert_eq!(s.frames()[0], CONN);
        s
    }

    fn pump(&mut self) {
        let Some(out) = self.out.as_mut() else { return };
        let mut chunk = [0u8; 65536];
        loop {
            match out.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Every byte received so far.
    pub fn raw(&mut self) -> Vec<u8> {
        self.pump();
        self.buf.clone()
    }

    /// The frames received, split as a client does (a frame ends at an empty key).
    pub fn frames(&mut self) -> Vec<Vec<u8>> {
        self.pump();
        split_frames(&self.buf)
    }

    pub fn wait_for(&mut self, n: usize) -> Vec<Vec<u8>> {
        self.wait_for_within(n, Duration::from_secs(10))
    }

    /// [`Subscriber::wait_for`] with a deadline of its own (real guests on a loaded machine).
    pub fn wait_for_within(&mut self, n: usize, limit: Duration) -> Vec<Vec<u8>> {
        let t = Instant::now();
        loop {
            let f = self.frames();
            if f.len() >= n {
                return f;
            }
            assert!(
                t.elapsed() < limit,
                "{} of {n} frames after {limit:?}: {:?}",
                f.len(),
                f.iter().map(|x| show(x)).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace('\0', "|")
}

/// `1\0subject\0event\0(key\0value\0)*\0` frames, parsed the way qubesadmin parses them.
pub fn split_frames(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let field = |b: &[u8], at: usize| b[at..].iter().position(|&c| c == 0).map(|p| at + p + 1);
    loop {
        let start = b;
        let Some(mut at) = (|| {
            let at = field(b, 0)?; // "1"
            let at = field(b, at)?; // subject
            field(b, at) // event
        })() else {
            return out;
        };
        loop {
            let Some(k_end) = field(b, at) else {
                return out;
            };
            if k_end == at + 1 {
                at = k_end; // empty key: end of the frame
                break;
            }
            let Some(v_end) = field(b, k_end) else {
                return out;
            };
            at = v_end;
        }
        out.push(start[..at].to_vec());
        b = &b[at..];
    }
}

/// Escapes bytes for the golden files: `\0`, `\n`, `\\`, printable ASCII as is, else `\xHH`.
pub fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() + 8);
    for &c in b {
        match c {
            0 => s.push_str("\\0"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

/// Inverse of [`escape`]. (`\0` is always exactly one NUL: `\01` is NUL then `1`.)
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'0') => {
                out.push(0);
                i += 2;
            }
            Some(b'n') => {
                out.push(b'\n');
                i += 2;
            }
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = s
                    .get(i + 2..i + 4)
                    .ok_or_else(|| format!("short \\x escape at {i}"))?;
                let v =
                    u8::from_str_radix(hex, 16).map_err(|e| format!("bad \\x{hex} at {i}: {e}"))?;
                out.push(v);
                i += 4;
            }
            other => return Err(format!("bad escape {:?} at {i}", other.map(|&c| c as char))),
        }
    }
    Ok(out)
}

/// Whether `b` is a well-formed exception frame `2\0<Type>\0\0<non-empty message>\0`
/// (Type: an identifier; message: no NUL). Returns the reason when it is not.
pub fn check_exception_frame(b: &[u8]) -> Result<(), String> {
    let rest = b.strip_prefix(b"2\0").ok_or("does not start with 2\\0")?;
    let fields: Vec<&[u8]> = rest.split(|&c| c == 0).collect();
    // Type, traceback, message, then the empty tail after the final NUL.
    if fields.len() != 4 || !fields[3].is_empty() {
        return Err(format!(
            "expected 3 NUL-terminated fields after 2\\0, got {}",
            fields.len().saturating_sub(1)
        ));
    }
    let ty = fields[0];
    if ty.is_empty() || !ty.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_') {
        return Err("bad exception type name".into());
    }
    if !fields[1].is_empty() {
        return Err("non-empty traceback field".into());
    }
    if fields[2].is_empty() {
        return Err("empty message (never silence: say what went wrong)".into());
    }
    if std::str::from_utf8(fields[2]).is_err() {
        return Err("message is not UTF-8".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_roundtrip() {
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
        assert_eq!(escape(b"0\x001\n\\"), "0\\01\\n\\\\");
        assert_eq!(unescape("0\\017").unwrap(), b"0\x0017");
        assert!(check_exception_frame(b"2\0QubesValueError\0\0msg\0").is_ok());
        assert!(check_exception_frame(b"2\0QubesValueError\0\0\0").is_err());
        assert!(check_exception_frame(b"").is_err());
    }
}
