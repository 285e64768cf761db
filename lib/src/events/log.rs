//! The append-only event log in `QUBES_RUN_DIR` that `admin.Events` streams.
//! Format documented in `docs/event-log.md`.
//!
//! Files (in `<run_dir>/qubes-admin/`):
//! * `events.log`: records `#<seq> <len>\n<frame>\n`, where `<frame>` is exactly the wire frame
//!   of the event (`1\0<subject>\0<event>\0(k\0v\0)*\0`, [`Event::frame`]) and `<len>` its
//!   length in bytes. Sequence numbers start at 1 and grow by exactly 1 per record.
//! * `events.lock`: the writers' lock (std `File::lock`, i.e. `flock`). Its content is a hint
//!   `<seq> <offset> <check>\n` (the last sequence number and the end offset of the log after the
//!   last append) so that a writer does not have to read the whole log; the log itself is the
//!   truth and is rescanned whenever the hint does not fit.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// One event as the reference fires it: subject is the VM name, or empty for the app object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub subject: String,
    pub name: String,
    pub kwargs: Vec<(String, String)>,
}

impl Event {
    pub fn new(subject: &str, name: impl Into<String>, kwargs: Vec<(String, String)>) -> Self {
        Event {
            subject: subject.to_string(),
            name: name.into(),
            kwargs,
        }
    }
    /// The wire frame `1\0<subject>\0<event>\0(k\0v\0)*\0`.
    pub fn frame(&self) -> Vec<u8> {
        crate::wire::frame_event(&self.subject, &self.name, &self.kwargs)
    }

    /// Parses a wire frame back (inverse of [`Event::frame`]).
    pub fn from_frame(frame: &[u8]) -> Option<Event> {
        let body = frame.strip_prefix(b"1\0")?.strip_suffix(b"\0")?;
        // body = subject \0 name \0 (k \0 v \0)*  → split gives [subject, name, k, v, ..., ""]
        let mut parts: Vec<&[u8]> = body.split(|&b| b == 0).collect();
        if parts.pop() != Some(&[][..]) || parts.len() < 2 || !parts.len().is_multiple_of(2) {
            return None;
        }
        let s = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let mut it = parts.into_iter();
        let subject = s(it.next()?)?;
        let name = s(it.next()?)?;
        let mut kwargs = Vec::new();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            kwargs.push((s(k)?, s(v)?));
        }
        Some(Event {
            subject,
            name,
            kwargs,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("event log I/O error on '{path}': {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("event log is corrupt at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    /// An event that cannot be logged (a field contains NUL).
    #[error("event cannot be logged: {0}")]
    Invalid(String),
}

/// The directory holding the log: `<run_dir>/qubes-admin`.
pub fn log_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("qubes-admin")
}

/// The log file: `<run_dir>/qubes-admin/events.log` (what an `admin.Events` tail watches).
pub fn log_path(run_dir: &Path) -> PathBuf {
    log_dir(run_dir).join("events.log")
}

/// The previous log, after a rotation: `<run_dir>/qubes-admin/events.log.1`.
pub fn rotated_path(run_dir: &Path) -> PathBuf {
    log_dir(run_dir).join("events.log.1")
}

fn lock_path(run_dir: &Path) -> PathBuf {
    log_dir(run_dir).join("events.lock")
}

/// The size past which the log is rotated (`QUBES_EVENT_LOG_MAX_BYTES`, default 8 MiB): the
/// next append renames it to `events.log.1` (replacing the older one) and starts a new file
/// whose sequence numbers go on.
pub fn max_bytes() -> u64 {
    std::env::var("QUBES_EVENT_LOG_MAX_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(8 << 20)
}

/// Log files are for dom0 services only (the events name every qube and what changed).
const FILE_MODE: u32 = 0o640;

/// The last sequence number in a (rotated) log file; 0 if there is none.
fn last_seq_in(path: &Path) -> u64 {
    let Ok(buf) = std::fs::read(path) else {
        return 0;
    };
    let mut pos = 0usize;
    let mut seq = 0;
    while let Parsed::Record { seq: s, len, .. } = parse_record(buf.get(pos..).unwrap_or(&[])) {
        seq = s;
        pos += len;
    }
    seq
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> EventLogError + '_ {
    move |source| EventLogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Result of parsing one record at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A complete record: sequence number, frame, total record length.
    Record {
        seq: u64,
        frame: &'a [u8],
        len: usize,
    },
    /// The buffer ends inside a record (a writer is still writing, or a writer died: torn).
    Incomplete,
    /// Not a record.
    Bad(&'static str),
}

/// Parses the record at the start of `buf` (see the module docs for the format).
pub fn parse_record(buf: &[u8]) -> Parsed<'_> {
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    if buf.first() != Some(&b'#') {
        return Parsed::Bad("record does not start with '#'");
    }
    let Some(nl) = memchr::memchr(b'\n', buf.get(..buf.len().min(48)).unwrap_or(&[])) else {
        return if buf.len() < 48 {
            Parsed::Incomplete
        } else {
            Parsed::Bad("record header too long")
        };
    };
    let header = buf.get(1..nl).unwrap_or(&[]);
    let mut fields = header.splitn(2, |&b| b == b' ');
    let num = |b: Option<&[u8]>| -> Option<u64> {
        let b = b?;
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(b).ok()?.parse().ok()
    };
    let (Some(seq), Some(len)) = (num(fields.next()), num(fields.next())) else {
        return Parsed::Bad("malformed record header");
    };
    let Ok(len) = usize::try_from(len) else {
        return Parsed::Bad("record too long");
    };
    let start = nl + 1;
    let Some(end) = start.checked_add(len) else {
        return Parsed::Bad("record too long");
    };
    match buf.get(end) {
        None => Parsed::Incomplete,
        Some(b'\n') => match buf.get(start..end) {
            Some(frame) => Parsed::Record {
                seq,
                frame,
                len: end + 1,
            },
            None => Parsed::Incomplete,
        },
        Some(_) => Parsed::Bad("record trailer missing"),
    }
}

fn encode(seq: u64, frame: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("#{seq} {}\n", frame.len()).as_bytes());
    out.extend_from_slice(frame);
    out.push(b'\n');
}

/// `<seq:020> <offset:020> <check:016x>\n`: what [`write_hint`] writes.
const HINT_LEN: usize = 20 + 1 + 20 + 1 + 16 + 1;

fn hint_check(seq: u64, off: u64) -> u64 {
    (seq ^ off.rotate_left(17)) ^ 0x5155_4245_5345_5654
}

fn write_hint(lock: &File, seq: u64, off: u64) {
    let s = format!("{seq:020} {off:020} {:016x}\n", hint_check(seq, off));
    debug_assert_eq!(s.len(), HINT_LEN);
    // A lost hint only costs a rescan.
    let _ = lock.write_all_at(s.as_bytes(), 0);
}

fn read_hint(lock: &File) -> Option<(u64, u64)> {
    let mut b = [0u8; HINT_LEN];
    lock.read_exact_at(&mut b, 0).ok()?;
    let s = std::str::from_utf8(&b).ok()?;
    let mut f = s.trim_end().split(' ');
    let seq = f.next()?.parse().ok()?;
    let off = f.next()?.parse().ok()?;
    let chk = u64::from_str_radix(f.next()?, 16).ok()?;
    (chk == hint_check(seq, off)).then_some((seq, off))
}

/// Under the writers' lock: finds the last sequence number and the end of the last complete
/// record, truncating a torn or unparsable tail. Uses the hint when it fits.
fn recover(
    log: &mut File,
    log_p: &Path,
    lock: &File,
    rotated: &Path,
) -> Result<(u64, u64), EventLogError> {
    let size = log.metadata().map_err(io(log_p))?.len();
    // A hint at offset 0 is a fresh log after a rotation: its sequence number goes on.
    let (mut seq, mut off) = match read_hint(lock) {
        Some((s, o)) if o <= size => (s, o),
        _ => (0, 0),
    };
    loop {
        let mut tail = Vec::new();
        log.seek(SeekFrom::Start(off)).map_err(io(log_p))?;
        log.read_to_end(&mut tail).map_err(io(log_p))?;
        if off != 0 && off < size {
            // The hint must point at the record that follows it (a crash may have left the
            // hint one append behind); otherwise rescan from the start.
            if !matches!(parse_record(&tail), Parsed::Record { seq: s, .. } if s == seq + 1) {
                seq = 0;
                off = 0;
                continue;
            }
        }
        if off == 0 && !tail.is_empty() {
            // Rescanning from the start: the records say where the sequence is.
            seq = 0;
        }
        let mut pos = 0usize;
        while let Parsed::Record { seq: s, len, .. } = parse_record(tail.get(pos..).unwrap_or(&[]))
        {
            seq = s;
            pos += len;
        }
        if off == 0 && pos == 0 && seq == 0 {
            // An empty log and no hint: go on from the rotated log, if there is one.
            seq = last_seq_in(rotated);
        }
        let end = off + pos as u64;
        if end < size {
            // A torn (or unparsable) tail left by a writer that died: no live writer owns it,
            // since we hold the lock.
            log.set_len(end).map_err(io(log_p))?;
        }
        return Ok((seq, end));
    }
}

/// Appends `events` (one lock, one write) and returns the sequence number of the last one.
/// With no events, returns the current last sequence number.
/// The log is rotated past [`max_bytes`].
pub fn append(run_dir: &Path, events: &[Event]) -> Result<u64, EventLogError> {
    append_rotating_at(run_dir, events, max_bytes())
}

/// [`append`] with an explicit rotation size.
pub fn append_rotating_at(
    run_dir: &Path,
    events: &[Event],
    max: u64,
) -> Result<u64, EventLogError> {
    for e in events {
        let has_nul = e.subject.contains('\0')
            || e.name.contains('\0')
            || e.kwargs
                .iter()
                .any(|(k, v)| k.contains('\0') || v.contains('\0'));
        if has_nul {
            return Err(EventLogError::Invalid(format!(
                "NUL in event '{}'",
                e.name.replace('\0', "\\0")
            )));
        }
    }
    let dir = log_dir(run_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let lock_p = lock_path(run_dir);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&lock_p)
        .map_err(io(&lock_p))?;
    lock.lock().map_err(io(&lock_p))?;
    let log_p = log_path(run_dir);
    let rotated = rotated_path(run_dir);
    let open_log = |p: &Path| {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(p)
            .map_err(io(p))
    };
    let mut log = open_log(&log_p)?;
    let (mut seq, mut end) = recover(&mut log, &log_p, &lock, &rotated)?;
    if events.is_empty() {
        return Ok(seq);
    }
    let mut buf = Vec::with_capacity(events.len() * 96);
    for e in events {
        seq += 1;
        encode(seq, &e.frame(), &mut buf);
    }
    if end > 0 && end + buf.len() as u64 > max {
        // Rotate: followers finish the renamed file (they hold it open), then go on with the
        // new one; the hint carries the sequence number over.
        std::fs::rename(&log_p, &rotated).map_err(io(&log_p))?;
        write_hint(&lock, seq - events.len() as u64, 0);
        log = open_log(&log_p)?;
        end = 0;
    }
    #[cfg(feature = "failpoints")]
    if std::env::var_os("QUBES_ADMIN_FAILPOINT").is_some_and(|v| v == "during-event-append") {
        let half = buf.get(..buf.len() / 2).unwrap_or(&[]);
        let _ = log.write(half);
        crate::store::failpoint("during-event-append");
    }
    let n = log.write(&buf).map_err(io(&log_p))?;
    if n != buf.len() {
        let _ = log.set_len(end);
        return Err(EventLogError::Io {
            path: log_p,
            source: std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "short write to the event log",
            ),
        });
    }
    write_hint(&lock, seq, end + buf.len() as u64);
    Ok(seq)
}

/// Reads every complete record with sequence number > `after`, from the rotated log and the
/// current one. A torn or still-being-written trailing record is ignored. A missing log reads
/// as empty.
pub fn read_after(run_dir: &Path, after: u64) -> Result<Vec<(u64, Event)>, EventLogError> {
    let mut out: Vec<(u64, Event)> = Vec::new();
    for log_p in [rotated_path(run_dir), log_path(run_dir)] {
        let buf = match std::fs::read(&log_p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(EventLogError::Io {
                    path: log_p,
                    source: e,
                })
            }
        };
        let (recs, _) = parse_records(&buf, 0)?;
        for (seq, frame, off) in recs {
            if seq > after && out.last().is_none_or(|(last, _)| seq > *last) {
                let ev = Event::from_frame(frame).ok_or_else(|| EventLogError::Corrupt {
                    offset: off,
                    reason: "malformed event frame".to_string(),
                })?;
                out.push((seq, ev));
            }
        }
    }
    Ok(out)
}

/// One record as [`parse_records`] returns it: sequence number, frame, file offset.
pub type RawRecord<'a> = (u64, &'a [u8], u64);

/// Parses the complete records in `buf` (which starts at file offset `base`, at a record
/// boundary): `(seq, frame, offset)` each, plus the offset just after the last complete one
/// (where a tail reader resumes). Stops quietly at an incomplete trailing record; a malformed
/// record is [`EventLogError::Corrupt`].
pub fn parse_records(buf: &[u8], base: u64) -> Result<(Vec<RawRecord<'_>>, u64), EventLogError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        match parse_record(buf.get(pos..).unwrap_or(&[])) {
            Parsed::Record { seq, frame, len } => {
                out.push((seq, frame, base + pos as u64));
                pos += len;
            }
            Parsed::Incomplete => return Ok((out, base + pos as u64)),
            Parsed::Bad(reason) => {
                return Err(EventLogError::Corrupt {
                    offset: base + pos as u64,
                    reason: reason.to_string(),
                })
            }
        }
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

    fn ev(i: usize) -> Event {
        Event::new(
            "vm1",
            format!("property-set:p{i}"),
            vec![
                ("name".into(), format!("p{i}")),
                ("newvalue".into(), "a\nb\r\t \u{1F600}".into()),
                ("oldvalue".into(), String::new()),
            ],
        )
    }

    #[test]
    fn frame_round_trip() {
        for e in [
            ev(1),
            Event::new("", "connection-established", vec![]),
            Event::new("", "", vec![(String::new(), String::new())]),
        ] {
            assert_eq!(Event::from_frame(&e.frame()), Some(e));
        }
    }

    #[test]
    fn append_read_sequence() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_after(d.path(), 0).unwrap(), vec![]);
        assert_eq!(append(d.path(), &[ev(1)]).unwrap(), 1);
        assert_eq!(append(d.path(), &[ev(2), ev(3)]).unwrap(), 3);
        assert_eq!(append(d.path(), &[]).unwrap(), 3);
        let all = read_after(d.path(), 0).unwrap();
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(all[2].1, ev(3));
        assert_eq!(read_after(d.path(), 2).unwrap().len(), 1);
        assert!(append(d.path(), &[Event::new("a\0", "x", vec![])]).is_err());
    }

    #[test]
    fn rotation_keeps_the_sequence() {
        let d = tempfile::tempdir().unwrap();
        let lock = lock_path(d.path());
        for i in 1..=10u64 {
            assert_eq!(
                append_rotating_at(d.path(), &[ev(i as usize)], 100).unwrap(),
                i
            );
        }
        // Each record is ~40 bytes: the current file holds the last records, the rotated one
        // those before; together every sequence number, once, in order.
        let cur = std::fs::read(log_path(d.path())).unwrap();
        assert!(cur.len() <= 100, "{}", cur.len());
        assert!(rotated_path(d.path()).exists());
        let seqs: Vec<u64> = read_after(d.path(), 0)
            .unwrap()
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(*seqs.last().unwrap(), 10);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        // Without the hint (a lost lock file) and with an empty current log, the sequence
        // goes on from the rotated log.
        std::fs::remove_file(&lock).unwrap();
        std::fs::write(log_path(d.path()), b"").unwrap();
        let last_rotated = last_seq_in(&rotated_path(d.path()));
        assert_eq!(
            append_rotating_at(d.path(), &[ev(11)], 1 << 20).unwrap(),
            last_rotated + 1
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(log_path(d.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, FILE_MODE);
    }

    #[test]
    fn torn_tail_is_ignored_then_repaired() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), &[ev(1), ev(2)]).unwrap();
        let p = log_path(d.path());
        let good = std::fs::read(&p).unwrap();
        let mut torn = Vec::new();
        encode(3, &ev(3).frame(), &mut torn);
        for cut in [1, 5, torn.len() / 2, torn.len() - 1] {
            let mut b = good.clone();
            b.extend_from_slice(&torn[..cut]);
            std::fs::write(&p, &b).unwrap();
            // Reader: ignores the torn record.
            assert_eq!(read_after(d.path(), 0).unwrap().len(), 2);
            // Writer: truncates it, continues the sequence.
            assert_eq!(append(d.path(), &[ev(9)]).unwrap(), 3);
            let all = read_after(d.path(), 0).unwrap();
            assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
            assert_eq!(all[2].1, ev(9));
            std::fs::write(&p, &good).unwrap();
        }
    }

    /// Regression (crash suite): the hint is 59 bytes but was read as 62, so it never
    /// validated and every append rescanned the whole log from offset 0 (and the lagging-hint
    /// recovery path never ran).
    #[test]
    fn hint_round_trips_and_is_followed() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), &[ev(1), ev(2)]).unwrap();
        let lock = File::open(lock_path(d.path())).unwrap();
        let size = std::fs::metadata(log_path(d.path())).unwrap().len();
        assert_eq!(read_hint(&lock), Some((2, size)));
        // A hint one append behind (a writer died between its log write and its hint
        // update) is followed forward, not rescanned.
        let lagging = std::fs::read(lock_path(d.path())).unwrap();
        append(d.path(), &[ev(3)]).unwrap();
        std::fs::write(lock_path(d.path()), &lagging).unwrap();
        assert_eq!(append(d.path(), &[ev(4)]).unwrap(), 4);
        let size = std::fs::metadata(log_path(d.path())).unwrap().len();
        assert_eq!(read_hint(&lock), Some((4, size)));
        // Records before the hint are not read again: damage there (which a rescan would
        // truncate away with everything after it) does not stop the sequence.
        let mut b = std::fs::read(log_path(d.path())).unwrap();
        b[0] = b'X';
        std::fs::write(log_path(d.path()), &b).unwrap();
        assert_eq!(append(d.path(), &[ev(5)]).unwrap(), 5);
        assert!(std::fs::metadata(log_path(d.path())).unwrap().len() > size);
    }

    #[test]
    fn stale_or_bad_hint_rescans() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), &[ev(1), ev(2)]).unwrap();
        std::fs::write(lock_path(d.path()), b"garbage").unwrap();
        assert_eq!(append(d.path(), &[ev(3)]).unwrap(), 3);
        // A hint pointing before the last record (as after a crash between write and hint).
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .open(lock_path(d.path()))
            .unwrap();
        write_hint(&lock, 1, 0);
        assert_eq!(append(d.path(), &[ev(4)]).unwrap(), 4);
        write_hint(&lock, 77, 5);
        assert_eq!(append(d.path(), &[ev(5)]).unwrap(), 5);
        let seqs: Vec<u64> = read_after(d.path(), 0)
            .unwrap()
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn threads_keep_sequence_contiguous() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        append(&dir, &[ev(t * 1000 + i), ev(t * 1000 + i)]).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let seqs: Vec<u64> = read_after(&dir, 0).unwrap().iter().map(|r| r.0).collect();
        assert_eq!(seqs, (1..=400).collect::<Vec<u64>>());
    }

    /// Other processes: re-runs this test binary as writers (see `child_writer`).
    #[test]
    fn processes_keep_sequence_contiguous() {
        let d = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        // The test's path inside the crate, so that a move of this module cannot break it.
        let child = format!(
            "{}::child_writer",
            module_path!().split_once("::").unwrap().1
        );
        let kids: Vec<_> = (0..3)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args(["--exact", &child, "--nocapture", "--test-threads=1"])
                    .env("EVENTLOG_CHILD_DIR", d.path())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for i in 0..40 {
            append(d.path(), &[ev(i)]).unwrap();
        }
        for mut k in kids {
            assert!(k.wait().unwrap().success());
        }
        let seqs: Vec<u64> = read_after(d.path(), 0)
            .unwrap()
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(seqs, (1..=160).collect::<Vec<u64>>());
    }

    #[test]
    fn child_writer() {
        let Some(dir) = std::env::var_os("EVENTLOG_CHILD_DIR") else {
            return;
        };
        for i in 0..40 {
            append(Path::new(&dir), &[ev(i)]).unwrap();
        }
    }
}
