//! The per-call side: asks `qubes-admin-eventd` over its socket, and when no helper is running
//! runs `qubes-admin-eventd --once` and parses its output. Links no libvirt.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

use super::proto::{self, ProtoError, Request};
use super::{DomainRuntime, HvError, Hypervisor, Op, Runtime};

/// Environment variable naming the helper executable (default: `qubes-admin-eventd` next to the
/// running executable).
pub const EVENTD_ENV: &str = "QUBES_ADMIN_EVENTD";

/// `<run_dir>/qubes-admin`: the helper's socket and lock file.
pub fn helper_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("qubes-admin")
}

/// `<run_dir>/qubes-admin/eventd.sock`.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    helper_dir(run_dir).join("eventd.sock")
}

/// `<run_dir>/qubes-admin/eventd.lock` (one helper per run_dir).
pub fn lock_path(run_dir: &Path) -> PathBuf {
    helper_dir(run_dir).join("eventd.lock")
}

/// Why the socket could not be used; every case falls back to `--once`.
#[derive(Debug, thiserror::Error)]
enum SocketError {
    #[error("no helper is listening on {path}: {source}")]
    NotRunning { path: PathBuf, source: Errno },
    #[error("the helper on {path} failed: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runtime state from the helper (see the module doc).
#[derive(Debug, Clone)]
pub struct EventdClient {
    socket: PathBuf,
    run_dir: PathBuf,
    libvirt_uri: String,
    /// Explicit helper executable; `None`: `QUBES_ADMIN_EVENTD`, else next to current_exe.
    eventd: Option<PathBuf>,
    /// How long a connect may wait on a full backlog.
    pub connect_timeout: Duration,
    /// How long the helper (or the fallback) may take to answer.
    pub reply_timeout: Duration,
    /// Time spent in live requests: `info`, `define`, `op` ([`Hypervisor::waited`]).
    waited: std::cell::Cell<super::Waits>,
}

impl EventdClient {
    pub fn for_config(config: &crate::Config) -> EventdClient {
        EventdClient {
            socket: socket_path(&config.run_dir),
            run_dir: config.run_dir.clone(),
            libvirt_uri: config.libvirt_uri.clone(),
            eventd: None,
            connect_timeout: Duration::from_millis(100),
            reply_timeout: Duration::from_secs(10),
            waited: std::cell::Cell::default(),
        }
    }

    /// Uses `exe` for the fallback instead of looking it up.
    pub fn with_eventd(mut self, exe: PathBuf) -> EventdClient {
        self.eventd = Some(exe);
        self
    }

    fn ask(&self, req: &Request) -> Result<String, HvError> {
        match self.ask_socket(req) {
            Ok(reply) => Ok(reply),
            // An operation the helper may have run before its reply was lost is not run twice.
            Err(sock_err @ SocketError::Io { .. })
                if matches!(req, Request::Op(..) | Request::Define(_)) =>
            {
                Err(HvError::Unavailable(sock_err.to_string()))
            }
            // Either way the socket's failure is part of the story: keep it in the message.
            Err(sock_err) => self.ask_once(req).map_err(|e| match e {
                HvError::Unavailable(m) => HvError::Unavailable(format!("{m} (and {sock_err})")),
                HvError::Protocol(m) => HvError::Protocol(format!("{m} (and {sock_err})")),
                HvError::Failed(m) => HvError::Failed(m),
            }),
        }
    }

    fn connect(&self) -> Result<UnixStream, SocketError> {
        let not_running = |source| SocketError::NotRunning {
            path: self.socket.clone(),
            source,
        };
        let addr = UnixAddr::new(&self.socket).map_err(not_running)?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(not_running)?;
        let deadline = Instant::now() + self.connect_timeout;
        loop {
            match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
                Ok(()) => break,
                // A full backlog: the helper is busy; retry briefly.
                Err(Errno::EAGAIN) | Err(Errno::EINTR) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(not_running(e)),
            }
        }
        let stream = UnixStream::from(fd);
        let io = |source| SocketError::Io {
            path: self.socket.clone(),
            source,
        };
        stream.set_nonblocking(false).map_err(io)?;
        stream
            .set_read_timeout(Some(self.reply_timeout))
            .map_err(io)?;
        stream
            .set_write_timeout(Some(self.reply_timeout))
            .map_err(io)?;
        Ok(stream)
    }

    fn ask_socket(&self, req: &Request) -> Result<String, SocketError> {
        let mut stream = self.connect()?;
        let io = |source| SocketError::Io {
            path: self.socket.clone(),
            source,
        };
        stream.write_all(req.encode().as_bytes()).map_err(io)?;
        stream.shutdown(std::net::Shutdown::Write).map_err(io)?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).map_err(io)?;
        Ok(reply)
    }

    fn eventd_exe(&self) -> Result<PathBuf, HvError> {
        if let Some(p) = &self.eventd {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os(EVENTD_ENV).filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let exe = std::env::current_exe()
            .map_err(|e| HvError::Unavailable(format!("cannot locate qubes-admin-eventd: {e}")))?;
        let dir = exe.parent().ok_or_else(|| {
            HvError::Unavailable(format!(
                "cannot locate qubes-admin-eventd next to {}",
                exe.display()
            ))
        })?;
        Ok(dir.join("qubes-admin-eventd"))
    }

    /// Runs `qubes-admin-eventd --once <request>` and returns its stdout.
    fn ask_once(&self, req: &Request) -> Result<String, HvError> {
        let exe = self.eventd_exe()?;
        let mut cmd = Command::new(&exe);
        cmd.arg("--once");
        let mut input = None;
        match req {
            Request::List => cmd.arg("list"),
            Request::Info(u) => cmd.arg("info").arg(u),
            Request::Op(op, u) => cmd.arg("op").arg(op.word()).arg(u),
            Request::Define(xml) => {
                input = Some(xml.as_bytes());
                cmd.arg("define")
            }
        };
        let mut child = cmd
            .env("QUBES_LIBVIRT_URI", &self.libvirt_uri)
            .env("QUBES_RUN_DIR", &self.run_dir)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                HvError::Unavailable(format!("cannot run {} --once: {e}", exe.display()))
            })?;
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            // The XML is small (at most MAX_DEFINE): one write, then EOF.
            let _ = stdin.write_all(data);
        }
        let out = match child.stdout.take() {
            Some(mut stdout) => {
                read_with_deadline(&mut stdout, Instant::now() + self.reply_timeout)
            }
            None => Err(std::io::Error::other("no stdout pipe")),
        };
        if out.is_err() {
            // Timed out or broken pipe: do not leave the child running.
            let _ = child.kill();
        }
        let status = child.wait();
        let out =
            out.map_err(|e| HvError::Unavailable(format!("{} --once: {e}", exe.display())))?;
        let text = String::from_utf8(out).map_err(|_| {
            HvError::Protocol(format!("{} --once printed non-UTF-8 output", exe.display()))
        })?;
        match status {
            Ok(s) if s.success() => Ok(text),
            // A failing helper prints `err <message>`: pass that on.
            Ok(_) if text.starts_with("err ") => Ok(text),
            Ok(s) => Err(HvError::Unavailable(format!(
                "{} --once failed ({s})",
                exe.display()
            ))),
            Err(e) => Err(HvError::Unavailable(format!(
                "{} --once: {e}",
                exe.display()
            ))),
        }
    }
}

/// Reads `r` to EOF, failing with `TimedOut` at `deadline`.
fn read_with_deadline(r: &mut (impl Read + AsFd), deadline: Instant) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer in time",
            ));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
}

/// For operations, an `err` reply is libvirt refusing the operation, not an unreachable
/// hypervisor.
pub(super) fn op_err(e: ProtoError) -> HvError {
    match e {
        ProtoError::Remote(m) => HvError::Failed(m),
        other => HvError::Protocol(other.to_string()),
    }
}

pub(super) fn proto_err(e: ProtoError) -> HvError {
    match e {
        ProtoError::Remote(m) => HvError::Unavailable(m),
        other => HvError::Protocol(other.to_string()),
    }
}

impl EventdClient {
    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let (began, t) = (std::time::SystemTime::now(), std::time::Instant::now());
        let r = f();
        let mut w = self.waited.get();
        w.add(began, t.elapsed());
        self.waited.set(w);
        r
    }
}

impl Hypervisor for EventdClient {
    fn runtime(&self) -> Result<Runtime, HvError> {
        let reply = self.ask(&Request::List)?;
        proto::decode_list(&reply).map_err(proto_err)
    }

    fn define(&self, xml: &str) -> Result<(), HvError> {
        let reply = self.timed(|| self.ask(&Request::Define(xml.to_string())))?;
        proto::decode_done(&reply).map_err(op_err)
    }

    fn op(&self, uuid: &str, op: Op) -> Result<(), HvError> {
        let reply = self.timed(|| self.ask(&Request::Op(op, uuid.to_ascii_lowercase())))?;
        proto::decode_done(&reply).map_err(op_err)
    }

    fn waited(&self) -> super::Waits {
        self.waited.get()
    }

    fn domain(&self, uuid: &str) -> Result<Option<DomainRuntime>, HvError> {
        let uuid = uuid.to_ascii_lowercase();
        if !proto::is_uuid(&uuid) {
            return Err(HvError::Protocol(format!("not a UUID: {uuid:?}")));
        }
        let reply = self.timed(|| self.ask(&Request::Info(uuid)))?;
        proto::decode_info(&reply).map_err(proto_err)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn client(dir: &Path, eventd: PathBuf) -> EventdClient {
        let config = crate::Config {
            run_dir: dir.to_path_buf(),
            ..crate::Config::default()
        };
        EventdClient::for_config(&config).with_eventd(eventd)
    }

    fn script(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("fake-eventd");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn fallback_parses_once_output() {
        let d = tempfile::tempdir().unwrap();
        let exe = script(
            d.path(),
            r#"[ "$1 $2" = "--once list" ] || exit 3; printf 'ok\nhost 3072 16\nend\n'"#,
        );
        let rt = client(d.path(), exe).runtime().unwrap();
        assert_eq!(rt.host.memory_mib, 3072);
        assert!(rt.domains.is_empty());
    }

    #[test]
    fn fallback_error_is_passed_on() {
        let d = tempfile::tempdir().unwrap();
        let exe = script(
            d.path(),
            "printf 'err cannot connect to libvirt\\n'; exit 1",
        );
        let e = client(d.path(), exe).runtime().unwrap_err();
        assert!(
            matches!(&e, HvError::Unavailable(m) if m.contains("cannot connect to libvirt")),
            "{e}"
        );
    }

    #[test]
    fn missing_helper_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let e = client(d.path(), d.path().join("nope"))
            .runtime()
            .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("cannot run") && m.contains("no helper is listening"),
            "{m}"
        );
    }

    #[test]
    fn truncated_fallback_output_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        let exe = script(d.path(), "printf 'ok\\nhost 1 1\\n'");
        assert!(matches!(
            client(d.path(), exe).runtime(),
            Err(HvError::Protocol(_))
        ));
    }

    #[test]
    fn hung_fallback_times_out() {
        let d = tempfile::tempdir().unwrap();
        let exe = script(d.path(), "exec sleep 5");
        let mut c = client(d.path(), exe);
        c.reply_timeout = Duration::from_millis(200);
        let t = Instant::now();
        assert!(c.runtime().is_err());
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn socket_is_preferred() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(helper_dir(d.path())).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(socket_path(d.path())).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = String::new();
            s.read_to_string(&mut req).unwrap();
            assert_eq!(req, "info 00000000-0000-0000-0000-000000000000\n");
            s.write_all(b"ok\nend\n").unwrap();
        });
        let c = client(d.path(), d.path().join("nope"));
        assert_eq!(
            c.domain("00000000-0000-0000-0000-000000000000").unwrap(),
            None
        );
        server.join().unwrap();
    }
}
