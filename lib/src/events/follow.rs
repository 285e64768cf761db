//! Following the event log for one `admin.Events` subscriber: the process that serves the
//! connection sends `connection-established`, then every event appended after that moment
//! which the subscription wants, until the caller goes away. No daemon: inotify on the log's
//! directory wakes the follower; `poll` on its output notices a caller that hung up even while
//! no event comes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::log::{io, log_dir, log_path, parse_records, Event, EventLogError};

/// VM events the reference never forwards to subscribers (core.md §9.1).
fn never_forwarded(name: &str) -> bool {
    name == "domain-is-fully-usable"
        || [
            "admin-permission:",
            "device-get:",
            "device-list:",
            "device-list-attached:",
        ]
        .iter()
        .any(|p| name.starts_with(p))
}

/// What one subscription receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Everything (a subscription with dom0 as destination).
    All,
    /// The events fired on this qube (by name).
    Qube(String),
    /// Only `connection-established` (a caller that may see nothing).
    Nothing,
    /// What `base` covers, each event also allowed by the caller's qrexec policy (a caller
    /// other than dom0).
    Filtered {
        base: Box<Subscription>,
        filter: Box<crate::policy::EventFilter>,
    },
}

impl Subscription {
    pub fn wants(&self, ev: &Event) -> bool {
        if !ev.subject.is_empty() && never_forwarded(&ev.name) {
            return false;
        }
        match self {
            Subscription::Filtered { base, filter } => {
                let vm = ev
                    .kwargs
                    .iter()
                    .find(|(k, _)| k == "vm")
                    .map(|(_, v)| v.as_str());
                base.wants(ev) && filter.allows(&ev.subject, &ev.name, vm)
            }
            _ => self.covers(&ev.subject),
        }
    }

    /// Whether what happens to `subject` (a qube's name; empty: the system) is covered.
    pub fn covers(&self, subject: &str) -> bool {
        match self {
            Subscription::All => true,
            Subscription::Qube(name) => subject == name,
            Subscription::Nothing => false,
            Subscription::Filtered { base, .. } => base.covers(subject),
        }
    }
}

/// The frame every subscription starts with.
pub fn connection_established() -> Vec<u8> {
    Event::new("", "connection-established", Vec::new()).frame()
}

/// A write to the caller failed: `Ok` when it has gone away (the stream simply ends), the
/// error otherwise.
pub fn caller_gone(e: std::io::Error) -> std::io::Result<()> {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Ok(()),
        _ => Err(e),
    }
}

/// The log file as the follower reads it.
struct Tail {
    file: Option<File>,
    ino: u64,
    /// Byte offset of the next unread record.
    off: u64,
    /// Last sequence number seen; records up to it are never sent (again).
    seq: u64,
}

impl Tail {
    fn open(path: &Path) -> Result<(Option<File>, u64), EventLogError> {
        match File::open(path) {
            Ok(f) => {
                let ino = f.metadata().map_err(io(path))?.ino();
                Ok((Some(f), ino))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, 0)),
            Err(e) => Err(io(path)(e)),
        }
    }

    /// The complete records appended since the last call, as (seq, event).
    fn read_new(&mut self, path: &Path) -> Result<Vec<(u64, Event)>, EventLogError> {
        let mut out = Vec::new();
        loop {
            if let Some(f) = self.file.as_mut() {
                let mut buf = Vec::new();
                f.seek(SeekFrom::Start(self.off)).map_err(io(path))?;
                f.read_to_end(&mut buf).map_err(io(path))?;
                let (recs, resume) = match parse_records(&buf, self.off) {
                    Ok(r) => r,
                    // Not at a record boundary any more: the file was truncated or rewritten
                    // in place. Start over; the sequence numbers skip what was sent.
                    Err(_) if self.off > 0 => {
                        self.off = 0;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for (seq, frame, offset) in recs {
                    if seq <= self.seq {
                        continue;
                    }
                    self.seq = seq;
                    let ev = Event::from_frame(frame).ok_or_else(|| EventLogError::Corrupt {
                        offset,
                        reason: "malformed event frame".to_string(),
                    })?;
                    out.push((seq, ev));
                }
                self.off = resume;
            }
            // Replaced (rotation, a new boot's log) or created meanwhile: the old file is read
            // to its end above; go on with the new one from its start.
            let (file, ino) = Tail::open(path)?;
            match file {
                Some(f) if self.file.is_none() || ino != self.ino => {
                    self.file = Some(f);
                    self.ino = ino;
                    self.off = 0;
                }
                _ => return Ok(out),
            }
        }
    }
}

/// One subscription, ready to stream: the log's directory is watched and its current end (the
/// subscription's "now") found. Opening can fail (the caller gets an exception frame); the
/// stream then only ends.
pub struct Follower {
    inotify: Inotify,
    path: std::path::PathBuf,
    tail: Tail,
    sub: Subscription,
}

impl Follower {
    pub fn open(run_dir: &Path, sub: Subscription) -> Result<Follower, EventLogError> {
        let dir = log_dir(run_dir);
        let path = log_path(run_dir);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| io(&dir)(e.into()))?;
        // Watching the directory covers the log's appends (IN_MODIFY of an entry), its
        // creation and its replacement by rename.
        inotify
            .add_watch(
                &dir,
                AddWatchFlags::IN_MODIFY
                    | AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_DELETE,
            )
            .map_err(|e| io(&dir)(e.into()))?;
        // Start at the current end: only events appended after the subscription are sent.
        let (file, ino) = Tail::open(&path)?;
        let mut tail = Tail {
            file,
            ino,
            off: 0,
            seq: 0,
        };
        tail.read_new(&path)?;
        Ok(Follower {
            inotify,
            path,
            tail,
            sub,
        })
    }

    /// Serves the subscription on `out`: `connection-established`, then each wanted event
    /// appended from now on, as its wire frame. Returns `Ok` when the caller has gone away
    /// (its end of `out` is closed); an error when the log cannot be read or `out` fails
    /// otherwise.
    pub fn run<W: Write + AsFd>(mut self, out: &mut W) -> Result<(), EventLogError> {
        let gone = |e| caller_gone(e).map_err(io(Path::new("<output>")));
        if let Err(e) = out
            .write_all(&connection_established())
            .and_then(|()| out.flush())
        {
            return gone(e);
        }
        loop {
            let mut sent = false;
            for (_, ev) in self.tail.read_new(&self.path)? {
                if self.sub.wants(&ev) {
                    if let Err(e) = out.write_all(&ev.frame()) {
                        return gone(e);
                    }
                    sent = true;
                }
            }
            if sent {
                if let Err(e) = out.flush() {
                    return gone(e);
                }
            }
            if wait(&self.inotify, out.as_fd())? {
                return Ok(());
            }
        }
    }
}

/// Waits up to `timeout` for the caller to hang up (then `true`): the pause of a stream that
/// sends on its own schedule (`admin.vm.Stats`).
pub fn hung_up_within(out: BorrowedFd<'_>, timeout: std::time::Duration) -> std::io::Result<bool> {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(out, PollFlags::empty())];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(_) | Err(nix::Error::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(fds
        .first()
        .and_then(PollFd::revents)
        .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)))
}

/// Waits for a change in the log's directory or for the caller to hang up (then `true`).
fn wait(inotify: &Inotify, out: BorrowedFd<'_>) -> Result<bool, EventLogError> {
    let err = |e: nix::Error| io(Path::new("<poll>"))(e.into());
    let mut fds = [
        PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
        // No events asked: POLLERR/POLLHUP are reported regardless, when the reader of a pipe
        // or the peer of a socket is gone.
        PollFd::new(out, PollFlags::empty()),
    ];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) => {}
        Err(nix::Error::EINTR) => return Ok(false),
        Err(e) => return Err(err(e)),
    }
    let hung_up = fds
        .get(1)
        .and_then(PollFd::revents)
        .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP));
    if hung_up {
        return Ok(true);
    }
    // Drain the notifications; which ones came does not matter, the log is re-read.
    loop {
        match inotify.read_events() {
            Ok(evs) if !evs.is_empty() => continue,
            Ok(_) | Err(nix::Error::EAGAIN) => return Ok(false),
            Err(e) => return Err(err(e)),
        }
    }
}
