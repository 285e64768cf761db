//! `qubes-admin-eventd`: the one long-lived helper (feature `libvirt`).
//!
//! * keeps one libvirt connection with lifecycle callbacks and an in-memory cache of every
//!   domain, refreshed fully on (re)connect and per domain on each lifecycle event;
//! * serves per-call processes on `<run_dir>/qubes-admin/eventd.sock` (mode 0660) with the line
//!   protocol of [`super::proto`]; `list` answers from the cache, `info` queries libvirt live;
//! * on connection loss marks the cache invalid (requests get `err`, never stale data) and
//!   reconnects with a backoff;
//! * one instance per run_dir (flock on `eventd.lock`); SIGTERM/SIGINT remove the socket and
//!   exit.
//!
//! [`run_once`] is the fallback per-call processes use when no helper runs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::{umask, Mode};

use super::client::{helper_dir, lock_path, op_err, proto_err, socket_path};
use super::libvirt::{quiet_errors, Conn, LibvirtError};
use super::proto::{self, Request, MAX_REQUEST_LINE};
use super::{
    DomainEvent, DomainEventKind, DomainRuntime, HostInfo, HvError, Hypervisor, Op, Runtime,
    STARTED_PREFIX,
};
use crate::ffi::libvirt::{deregister_lifecycle, register_lifecycle};

#[derive(Debug, thiserror::Error)]
pub enum EventdError {
    #[error("another qubes-admin-eventd is already running for {0} (lock {1} is held)")]
    AlreadyRunning(PathBuf, PathBuf),
    #[error("{what} '{path}': {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up signal handling: {0}")]
    Signals(nix::errno::Errno),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("libvirt event loop: {0}")]
    EventLoop(String),
}

/// How long a client may take to send its request / read the reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the manager checks the connection when no event arrives.
const POLL: Duration = Duration::from_millis(250);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long the start waits for the first libvirt refresh before it opens the socket anyway.
const FIRST_REFRESH_WAIT: Duration = Duration::from_secs(10);

/// Answers one request with a direct libvirt query: the reply text and whether it succeeded
/// (`qubes-admin-eventd --once`).
pub fn run_once(uri: &str, req: &Request) -> (String, bool) {
    quiet_errors();
    let result = Conn::open(uri).and_then(|conn| {
        let reply = match req {
            Request::List => conn.list().map(|rt| proto::encode_list(&rt)),
            Request::Info(u) => conn.info(u).map(|d| proto::encode_info(d.as_ref())),
            Request::Op(op, u) => conn.op(u, *op).map(|()| proto::encode_done()),
            Request::Define(xml) => conn.define(xml).map(|()| proto::encode_done()),
        };
        let closed = conn.close();
        let reply = reply?;
        closed?;
        Ok(reply)
    });
    match result {
        Ok(r) => (r, true),
        Err(e) => (proto::encode_error(&e.to_string()), false),
    }
}

/// The cache: valid only while the connection it was built from is alive.
#[derive(Debug)]
struct Cache {
    host: HostInfo,
    domains: BTreeMap<String, DomainRuntime>,
}

#[derive(Debug, Default)]
struct State {
    conn: Option<Arc<Conn>>,
    cache: Option<Cache>,
    /// Why there is no cache (shown to clients).
    down: String,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a thread died while holding it; the data is replaced
        // wholesale on the next refresh, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn answer(&self, req: &Request) -> String {
        match req {
            Request::List => {
                let st = self.lock();
                match (&st.cache, &st.conn) {
                    (Some(c), Some(conn)) if conn.is_alive() => proto::encode_list(&Runtime {
                        host: c.host,
                        domains: c.domains.values().cloned().collect(),
                    }),
                    _ => proto::encode_error(&unavailable(&st)),
                }
            }
            // Live calls on the helper's connection (never under the state lock: libvirt
            // may take a while).
            Request::Info(_) | Request::Op(..) | Request::Define(_) => {
                let conn = {
                    let st = self.lock();
                    match &st.conn {
                        Some(c) if st.cache.is_some() => Arc::clone(c),
                        _ => return proto::encode_error(&unavailable(&st)),
                    }
                };
                let reply = match req {
                    Request::Info(uuid) => conn.info(uuid).map(|d| proto::encode_info(d.as_ref())),
                    Request::Op(op, uuid) => conn.op(uuid, *op).map(|()| proto::encode_done()),
                    Request::Define(xml) => conn.define(xml).map(|()| proto::encode_done()),
                    Request::List => return proto::encode_error("internal error"),
                };
                reply.unwrap_or_else(|e| proto::encode_error(&e.to_string()))
            }
        }
    }
}

fn unavailable(st: &State) -> String {
    if st.down.is_empty() {
        "qubes-admin-eventd has no libvirt connection".to_string()
    } else {
        st.down.clone()
    }
}

/// One lifecycle event, tagged with the connection generation it came from.
struct Event {
    generation: u64,
    uuid: String,
    /// libvirt's `virDomainEventType`.
    kind: i32,
}

/// What the helper does with a [`DomainEvent`] (the library's reaction: stop processing, the
/// `domain-paused` event), given a runtime source that answers from the helper itself.
pub type Reactor = Arc<dyn Fn(Box<dyn Hypervisor>, &DomainEvent) + Send + Sync>;

/// A job the helper runs at start, whenever a file changes in `wake_dir`, and at the time (UNIX
/// seconds) it last returned: the firewall rules' expiry (the reference's in-process timer).
pub struct Timer {
    pub wake_dir: PathBuf,
    pub job: Box<dyn FnMut(Box<dyn Hypervisor>) -> Option<i64> + Send>,
}

/// Runs `timer` for ever: its job, then a wait for its time or a change in its directory.
fn run_timer(mut timer: Timer, shared: Arc<Shared>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::fd::AsFd;
    let _ = std::fs::create_dir_all(&timer.wake_dir);
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .and_then(|i| {
            i.add_watch(
                &timer.wake_dir,
                AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO,
            )?;
            Ok(i)
        })
        .map_err(|e| {
            eprintln!(
                "qubes-admin-eventd: cannot watch {} ({e}): timers are checked every minute",
                timer.wake_dir.display()
            )
        })
        .ok();
    loop {
        let next = (timer.job)(Box::new(InProcess(Arc::clone(&shared))));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        // A rule is expired once its time is in the past: wake a second after it.
        let wait_ms = next.map(|at| {
            at.saturating_sub(now)
                .saturating_add(1)
                .saturating_mul(1000)
        });
        match &inotify {
            Some(ino) => {
                let timeout = match wait_ms {
                    Some(ms) => PollTimeout::try_from(ms.clamp(0, i64::from(i32::MAX)))
                        .unwrap_or(PollTimeout::MAX),
                    None => PollTimeout::NONE,
                };
                let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, timeout);
                while ino.read_events().is_ok_and(|evs| !evs.is_empty()) {}
            }
            None => {
                let ms = wait_ms.unwrap_or(60_000).clamp(0, 60_000);
                std::thread::sleep(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
            }
        }
    }
}

/// The helper's own state and connection as a [`Hypervisor`], for its reactions: the same
/// answers a per-call process gets over the socket, without the socket.
struct InProcess(Arc<Shared>);

impl Hypervisor for InProcess {
    fn runtime(&self) -> Result<Runtime, HvError> {
        proto::decode_list(&self.0.answer(&Request::List)).map_err(proto_err)
    }

    fn domain(&self, uuid: &str) -> Result<Option<DomainRuntime>, HvError> {
        proto::decode_info(&self.0.answer(&Request::Info(uuid.to_ascii_lowercase())))
            .map_err(proto_err)
    }

    fn define(&self, xml: &str) -> Result<(), HvError> {
        proto::decode_done(&self.0.answer(&Request::Define(xml.to_string()))).map_err(op_err)
    }

    fn op(&self, uuid: &str, op: Op) -> Result<(), HvError> {
        let reply = self.0.answer(&Request::Op(op, uuid.to_ascii_lowercase()));
        proto::decode_done(&reply).map_err(op_err)
    }
}

/// The libvirt lifecycle events the library reacts to.
fn reaction(kind: i32) -> Option<DomainEventKind> {
    match u32::try_from(kind).ok()? {
        virt::sys::VIR_DOMAIN_EVENT_STOPPED => Some(DomainEventKind::Stopped),
        virt::sys::VIR_DOMAIN_EVENT_SUSPENDED => Some(DomainEventKind::Suspended),
        _ => None,
    }
}

/// Qubes marked started whose domain is not running (they stopped while the helper was down or
/// disconnected): each gets a `Stopped` reaction.
fn reconcile(run_dir: &Path, shared: &Shared, reactions: &mpsc::Sender<DomainEvent>) {
    let Ok(entries) = std::fs::read_dir(helper_dir(run_dir)) else {
        return;
    };
    let st = shared.lock();
    let Some(cache) = st.cache.as_ref() else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(uuid) = name.to_str().and_then(|n| n.strip_prefix(STARTED_PREFIX)) else {
            continue;
        };
        if !cache.domains.get(uuid).is_some_and(|d| d.active) {
            let _ = reactions.send(DomainEvent {
                uuid: uuid.to_string(),
                kind: DomainEventKind::Stopped,
            });
        }
    }
}

/// Invalidates the cache and forgets the connection; `why` is what clients are told.
fn set_down(shared: &Shared, why: String) {
    let mut st = shared.lock();
    st.cache = None;
    st.conn = None;
    st.down = why;
}

/// Closes a connection once nobody else uses it (a request may still hold a clone).
fn retire(conn: Arc<Conn>) {
    match Arc::try_unwrap(conn) {
        Ok(c) => {
            if let Err(e) = c.close() {
                eprintln!("qubes-admin-eventd: closing the old libvirt connection: {e}");
            }
        }
        // The last holder's drop closes it (without panicking).
        Err(arc) => drop(arc),
    }
}

/// Connects, refreshes and follows events until the connection is lost; forever (the signal
/// thread ends the process).
fn manage(
    uri: String,
    run_dir: PathBuf,
    shared: Arc<Shared>,
    ready: mpsc::Sender<()>,
    reactions: mpsc::Sender<DomainEvent>,
) {
    let (tx, rx) = mpsc::channel::<Event>();
    let mut generation: u64 = 0;
    let mut backoff = BACKOFF_MIN;
    let mut ready = Some(ready);
    loop {
        generation += 1;
        match connect_and_refresh(&uri, &shared, &tx, generation) {
            Ok((conn, cb)) => {
                eprintln!("qubes-admin-eventd: connected to {uri}");
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                backoff = BACKOFF_MIN;
                reconcile(&run_dir, &shared, &reactions);
                let why = follow(&conn, &shared, &rx, generation, &reactions);
                eprintln!("qubes-admin-eventd: {why}");
                // Drops the state's reference too, so that `retire` can close the connection.
                set_down(&shared, why);
                if let Ok(c) = conn.connect() {
                    // Fails when the connection is already dead; nothing to undo then.
                    let _ = deregister_lifecycle(c, cb);
                }
                retire(conn);
            }
            Err(e) => {
                set_down(&shared, format!("no libvirt connection: {e}"));
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                eprintln!(
                    "qubes-admin-eventd: {e}; retrying in {} ms",
                    backoff.as_millis()
                );
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn connect_and_refresh(
    uri: &str,
    shared: &Shared,
    tx: &mpsc::Sender<Event>,
    generation: u64,
) -> Result<(Arc<Conn>, crate::ffi::libvirt::CallbackId), LibvirtError> {
    let conn = Conn::open(uri)?;
    // Lets the client notice a dead daemon even when the socket stays open; unsupported by
    // some drivers, which is fine.
    let _ = conn.connect()?.set_keep_alive(5, 3);
    let sender = tx.clone();
    // Register before listing: an event that races with the listing is queued and re-queried.
    let cb = register_lifecycle(
        conn.connect()?,
        Box::new(move |uuid, event, _detail| {
            let _ = sender.send(Event {
                generation,
                uuid: uuid.to_ascii_lowercase(),
                kind: event,
            });
        }),
    )
    .map_err(|e| {
        LibvirtError::Call(format!("cannot register lifecycle events: {}", e.message()))
    })?;
    let rt = match conn.list() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = deregister_lifecycle(conn.connect()?, cb);
            let _ = conn.close();
            return Err(e);
        }
    };
    let conn = Arc::new(conn);
    let mut st = shared.lock();
    st.cache = Some(Cache {
        host: rt.host,
        domains: rt
            .domains
            .into_iter()
            .map(|d| (d.uuid.clone(), d))
            .collect(),
    });
    st.conn = Some(Arc::clone(&conn));
    st.down.clear();
    Ok((conn, cb))
}

/// Applies events until the connection dies; returns why it stopped.
fn follow(
    conn: &Conn,
    shared: &Shared,
    rx: &mpsc::Receiver<Event>,
    generation: u64,
    reactions: &mpsc::Sender<DomainEvent>,
) -> String {
    loop {
        match rx.recv_timeout(POLL) {
            Ok(ev) if ev.generation == generation => match conn.domain(&ev.uuid) {
                Ok(d) => {
                    {
                        let mut st = shared.lock();
                        if let Some(cache) = st.cache.as_mut() {
                            match d {
                                Some(d) => {
                                    cache.domains.insert(ev.uuid.clone(), d);
                                }
                                None => {
                                    cache.domains.remove(&ev.uuid);
                                }
                            }
                        }
                    }
                    // After the cache is current: the reaction reads state through it.
                    if let Some(kind) = reaction(ev.kind) {
                        let _ = reactions.send(DomainEvent {
                            uuid: ev.uuid,
                            kind,
                        });
                    }
                }
                // The cache can no longer be trusted: rebuild it from a fresh connection.
                Err(e) => {
                    return format!(
                        "lost track of domain {} ({e}); reconnecting to {}",
                        ev.uuid,
                        conn.uri()
                    )
                }
            },
            Ok(_) => {} // from an older connection
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return "event channel closed".to_string(),
        }
        if !conn.is_alive() {
            return format!(
                "lost the libvirt connection to {}; reconnecting",
                conn.uri()
            );
        }
    }
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> EventdError + 'a {
    move |source| EventdError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut buf = Vec::with_capacity(64);
    let mut byte = [0u8; 64];
    while !buf.contains(&b'\n') {
        let n = stream
            .read(&mut byte)
            .map_err(|e| format!("cannot read the request: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(byte.get(..n).unwrap_or_default());
        if buf.len() > MAX_REQUEST_LINE {
            return Err("request too long".to_string());
        }
    }
    let nl = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    let line = std::str::from_utf8(buf.get(..nl).unwrap_or_default())
        .map_err(|_| "request is not UTF-8".to_string())?;
    let req = Request::parse(line).map_err(|e| e.to_string())?;
    let Some(len) = proto::define_length(line) else {
        return Ok(req);
    };
    // `define`: the XML follows the line.
    let mut xml = buf.get(nl + 1..).unwrap_or_default().to_vec();
    if xml.len() > len {
        return Err("more data than the define line announced".to_string());
    }
    let mut rest = vec![0u8; len - xml.len()];
    stream
        .read_exact(&mut rest)
        .map_err(|e| format!("cannot read the domain XML: {e}"))?;
    xml.extend_from_slice(&rest);
    String::from_utf8(xml)
        .map(Request::Define)
        .map_err(|_| "the domain XML is not UTF-8".to_string())
}

fn handle(mut stream: UnixStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let reply = match read_request(&mut stream) {
        Ok(req) => shared.answer(&req),
        Err(e) => proto::encode_error(&e),
    };
    // The client may be gone; nothing to do about it.
    let _ = stream.write_all(reply.as_bytes());
}

/// Runs the helper for `config` until SIGTERM/SIGINT; `react` (if any) is called, on a thread
/// of its own and one event at a time, for each lifecycle change of a domain and for each qube
/// found stopped at (re)connection.
pub fn serve(
    config: &crate::Config,
    react: Option<Reactor>,
    timer: Option<Timer>,
) -> Result<(), EventdError> {
    quiet_errors();
    // Block the stop signals in every thread; one thread waits for them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().map_err(EventdError::Signals)?;

    let dir = helper_dir(&config.run_dir);
    std::fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
    let lock_file = lock_path(&config.run_dir);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_file)
        .map_err(io_err("cannot open", &lock_file))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(EventdError::AlreadyRunning(
                config.run_dir.clone(),
                lock_file,
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err("cannot lock", &lock_file)(e)),
    }

    // The default event implementation must exist before the first Connect::open.
    virt::event::event_register_default_impl()
        .map_err(|e| EventdError::EventLoop(e.message().to_string()))?;
    std::thread::Builder::new()
        .name("libvirt-events".into())
        .spawn(|| loop {
            if virt::event::event_run_default_impl().is_err() {
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .map_err(EventdError::Thread)?;

    let shared = Arc::new(Shared::default());
    let (ready_tx, ready_rx) = mpsc::channel();
    let (react_tx, react_rx) = mpsc::channel::<DomainEvent>();
    {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("reactions".into())
            .spawn(move || {
                for ev in react_rx {
                    if let Some(react) = &react {
                        react(Box::new(InProcess(Arc::clone(&shared))), &ev);
                    }
                }
            })
            .map_err(EventdError::Thread)?;
    }
    {
        let (uri, shared) = (config.libvirt_uri.clone(), Arc::clone(&shared));
        let run_dir = config.run_dir.clone();
        std::thread::Builder::new()
            .name("libvirt-manager".into())
            .spawn(move || manage(uri, run_dir, shared, ready_tx, react_tx))
            .map_err(EventdError::Thread)?;
    }
    // Open the socket once the first refresh is done (or failed): clients then never see a
    // "starting" helper.
    let _ = ready_rx.recv_timeout(FIRST_REFRESH_WAIT);
    if let Some(timer) = timer {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("timer".into())
            .spawn(move || run_timer(timer, shared))
            .map_err(EventdError::Thread)?;
    }

    let sock = socket_path(&config.run_dir);
    // We hold the lock, so any socket file left is stale.
    match std::fs::remove_file(&sock) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot remove the stale socket", &sock)(e)),
    }
    let old = umask(Mode::from_bits_truncate(0o117));
    let bound = UnixListener::bind(&sock);
    umask(old);
    let listener = bound.map_err(io_err("cannot listen on", &sock))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660))
        .map_err(io_err("cannot set the mode of", &sock))?;

    {
        let sock = sock.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Ok(sig) = signals.wait() {
                    let _ = std::fs::remove_file(&sock);
                    eprintln!("qubes-admin-eventd: {sig:?}, exiting");
                    // The lock is released and the libvirt connection dropped by the exit.
                    std::process::exit(0);
                }
            })
            .map_err(EventdError::Thread)?;
    }
    eprintln!("qubes-admin-eventd: serving on {}", sock.display());
    // Start-up is over: what it alone touched need not stay resident (ffi docs).
    crate::ffi::page_out_read_only_mappings();

    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("client".into())
            .spawn(move || handle(stream, &shared));
        if let Err(e) = spawned {
            eprintln!("qubes-admin-eventd: cannot start a client thread: {e}");
        }
    }
    drop(lock);
    Ok(())
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

    #[test]
    fn once_against_in_process_test_driver() {
        let (reply, ok) = run_once("test:///default", &Request::List);
        assert!(ok, "{reply}");
        let rt = proto::decode_list(&reply).unwrap();
        assert_eq!(
            rt.host,
            HostInfo {
                memory_mib: 3072,
                cpus: 16
            }
        );
        let test = rt.domains.iter().find(|d| d.name == "test").unwrap();
        assert!(test.active);
        assert_eq!(test.id, 1);
        assert_eq!(test.state, super::super::DomState::Running);
    }

    #[test]
    fn once_unknown_uuid_is_none() {
        let (reply, ok) = run_once(
            "test:///default",
            &Request::Info("00000000-0000-0000-0000-000000000001".into()),
        );
        assert!(ok, "{reply}");
        assert_eq!(proto::decode_info(&reply).unwrap(), None);
    }

    #[test]
    fn once_bad_uri_is_an_error_reply() {
        let (reply, ok) = run_once(
            "test+unix:///default?socket=/nonexistent/sock",
            &Request::List,
        );
        assert!(!ok);
        assert!(
            reply.starts_with("err cannot connect to libvirt"),
            "{reply}"
        );
    }

    #[test]
    fn answers_error_without_cache() {
        let shared = Shared::default();
        assert!(shared.answer(&Request::List).starts_with("err "));
        set_down(&shared, "libvirt is down".into());
        assert_eq!(shared.answer(&Request::List), "err libvirt is down\n");
    }
}
