//! Crash suite: writers that die inside the store transaction. Documented in
//! `docs/testing-crash.md`.
//!
//! * `failpoints_every_point_every_method` (cargo feature `failpoints`): every fail point of the
//!   store (`after-temp-write`, `after-fsync`, `before-rename`, `after-rename`,
//!   `during-event-append`, `torn-index`: the new version's index file cut in half) × five
//!   write methods; the call aborts there.
//! * `sigkill_random_moments`: writes killed with SIGKILL after a random delay (seeded RNG; the
//!   seed is printed, `CRASH_SEED` replays it; `CRASH_TRIALS` sets the number of trials, default
//!   100).
//!
//! After every crash: qubes.xml is byte-for-byte the old or the new version (the new one computed
//! by running the same call on an intact copy), the event log parses (no corrupt record, readers
//! see only complete records, sequence numbers 1..n gap-free) and is a byte prefix of the log of
//! the intact run, a leftover `qubes.xml~*` temp file holds (a prefix of) the new version; then a
//! read answers exactly as on the surviving version, the next write succeeds, removes every stale
//! temp file, truncates a torn event record, continues the sequence, and leaves exactly the bytes
//! the same write leaves on an intact copy of the surviving version (no lost update).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use qubes_admin::events;

const BIN: &str = env!("CARGO_BIN_EXE_qubes-admin-call");
const GEN10: &str = include_str!("fixtures/gen10/qubes.xml");
/// AppVMs in the generated store: a large file widens every phase of a write (parse, splice,
/// write, fsync), so random kills land in all of them.
const VMS: usize = 1000;
const DEFAULT_TRIALS: usize = 100;

/// The tests run one at a time: kill delays are calibrated on call durations, which a
/// concurrent test would distort.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Fixture, requests, process control

/// A qubes.xml with gen10's base system (dom0, fedora-41, sys-net, sys-firewall, default-dvm)
/// and `n` AppVMs `vm0000`.. shaped like its `vm0003` (as services/benches/percall.rs does).
fn generate(n: usize) -> String {
    let first_vm = GEN10.find("    <domain id=\"domain-5\"").unwrap();
    let head = &GEN10[..first_vm];
    let start = GEN10.find("<property name=\"name\">vm0003<").unwrap();
    let dstart = GEN10[..start].rfind("    <domain id=").unwrap();
    let dend = start + GEN10[start..].find("</domain>\n").unwrap() + "</domain>\n".len();
    let block = &GEN10[dstart..dend];
    let u = block.find("<property name=\"uuid\">").unwrap() + 22;
    let old_uuid = &block[u..u + 36];
    let labels = [
        "red", "orange", "yellow", "green", "gray", "blue", "purple", "black",
    ];
    let mut out = String::with_capacity(head.len() + n * block.len());
    out.push_str(head);
    for i in 0..n {
        let qid = 5 + i;
        out.push_str(
            &block
                .replace("vm0003", &format!("vm{i:04}"))
                .replace("id=\"domain-8\"", &format!("id=\"domain-{qid}\""))
                .replace(
                    "<property name=\"qid\">8<",
                    &format!("<property name=\"qid\">{qid}<"),
                )
                .replace(
                    old_uuid,
                    &format!("{:08x}-0000-4000-8000-{:012x}", i + 1, qid),
                )
                .replace(
                    "<property name=\"label\">green<",
                    &format!("<property name=\"label\">{}<", labels[i % 8]),
                ),
        );
    }
    out.push_str("  </domains>\n</qubes>\n");
    out
}

/// One request in socket framing, sent by dom0.
#[derive(Clone, Debug)]
struct Req {
    method_arg: String,
    dest: String,
    payload: String,
}

fn req(method_arg: &str, dest: &str, payload: &str) -> Req {
    Req {
        method_arg: method_arg.to_string(),
        dest: dest.to_string(),
        payload: payload.to_string(),
    }
}

impl Req {
    fn bytes(&self) -> Vec<u8> {
        format!(
            "{} dom0 name {}\0{}",
            self.method_arg, self.dest, self.payload
        )
        .into_bytes()
    }
}

/// A write under test and a read that shows its effect.
struct Method {
    name: &'static str,
    write: Req,
    read: Req,
}

fn methods() -> Vec<Method> {
    let r = req;
    vec![
        Method {
            name: "vm.property.Set",
            write: r("admin.vm.property.Set+memory", "vm0500", "1234"),
            read: r("admin.vm.property.Get+memory", "vm0500", ""),
        },
        Method {
            name: "vm.feature.Set",
            write: r(
                "admin.vm.feature.Set+crash-feature",
                "vm0700",
                "on with spaces",
            ),
            read: r("admin.vm.feature.List", "vm0700", ""),
        },
        Method {
            name: "vm.tag.Set",
            write: r("admin.vm.tag.Set+crash-tag", "vm0999", ""),
            read: r("admin.vm.tag.List", "vm0999", ""),
        },
        Method {
            name: "label.Create",
            write: r("admin.label.Create+crashlabel", "dom0", "0x123456"),
            read: r("admin.label.List", "dom0", ""),
        },
        Method {
            // Fires many events (clocksync feature moves between two qubes): a large batch.
            name: "property.Set",
            write: r("admin.property.Set+clockvm", "dom0", "vm0001"),
            read: r("admin.property.Get+clockvm", "dom0", ""),
        },
    ]
}

/// The write every recovery check runs after a crash.
fn next_write() -> Req {
    req("admin.vm.feature.Set+crash-next", "vm0002", "after")
}

fn xml_path(dir: &Path) -> PathBuf {
    dir.join("qubes.xml")
}
fn run_dir(dir: &Path) -> PathBuf {
    dir.join("run")
}
fn hint_path(dir: &Path) -> PathBuf {
    events::log_dir(&run_dir(dir)).join("events.lock")
}

fn spawn(dir: &Path, req: &Req, failpoint: Option<&str>) -> Child {
    let mut c = Command::new(BIN);
    c.arg("--socket-request")
        .current_dir(dir)
        .env_clear()
        .env("QUBES_XML_PATH", xml_path(dir))
        .env("QUBES_BASE_DIR", dir.join("base"))
        .env("QUBES_RUN_DIR", run_dir(dir))
        .env("QUBES_POLICY_DIR", dir.join("policy.d"))
        .env("QUBES_LIBVIRT_URI", "test:///default")
        .env("QUBES_LOCK_TIMEOUT_MS", "20000")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(fp) = failpoint {
        c.env("QUBES_ADMIN_FAILPOINT", fp);
    }
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    // Small request: fits the pipe buffer; a call killed early may never read it.
    let _ = child.stdin.take().unwrap().write_all(&req.bytes());
    child
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

/// A call that must succeed (exit 0); returns its reply.
fn call(dir: &Path, req: &Req) -> Vec<u8> {
    let out = finish(spawn(dir, req, None));
    assert!(
        out.status.success(),
        "{req:?}: {:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace('\0', "\\0")
}

// ---------------------------------------------------------------------------------------------
// States and reference runs

/// Everything a write touches: qubes.xml, the event log and its hint file, temp files.
#[derive(Clone, PartialEq, Eq)]
struct State {
    xml: Vec<u8>,
    log: Vec<u8>,
    hint: Vec<u8>,
    /// `qubes.xml~*` files (name, content).
    temps: Vec<(std::ffi::OsString, Vec<u8>)>,
}

fn install(dir: &Path, s: &State) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(dir.join("base")).unwrap();
    std::fs::create_dir_all(dir.join("policy.d")).unwrap();
    std::fs::create_dir_all(events::log_dir(&run_dir(dir))).unwrap();
    std::fs::write(xml_path(dir), &s.xml).unwrap();
    std::fs::write(events::log_path(&run_dir(dir)), &s.log).unwrap();
    std::fs::write(hint_path(dir), &s.hint).unwrap();
    for (name, b) in &s.temps {
        std::fs::write(dir.join(name), b).unwrap();
    }
}

fn capture(dir: &Path) -> State {
    let rd = |p: PathBuf| std::fs::read(p).unwrap_or_default();
    State {
        xml: std::fs::read(xml_path(dir)).unwrap(),
        log: rd(events::log_path(&run_dir(dir))),
        hint: rd(hint_path(dir)),
        temps: temp_files(dir)
            .into_iter()
            .map(|p| (p.file_name().unwrap().to_os_string(), rd(p)))
            .collect(),
    }
}

/// What one method does to the start state, computed on intact copies.
struct Refs {
    old: State,
    new: State,
    read_old: Vec<u8>,
    read_new: Vec<u8>,
    /// `next_write()` applied to `old` / to `new`.
    old_next: State,
    new_next: State,
    /// The frames of the events `next_write()` logs.
    next_frames: Vec<Vec<u8>>,
}

fn frames_after(log: &[u8], prefix_len: usize) -> Vec<Vec<u8>> {
    let (recs, end) = events::parse_records(&log[prefix_len..], 0).unwrap();
    assert_eq!(end as usize, log.len() - prefix_len);
    recs.into_iter().map(|(_, f, _)| f.to_vec()).collect()
}

fn reference(scratch: &Path, old: &State, m: &Method) -> Refs {
    install(scratch, old);
    let read_old = call(scratch, &m.read);
    let old_next = {
        assert_eq!(call(scratch, &next_write()), b"0\0");
        capture(scratch)
    };
    install(scratch, old);
    assert_eq!(
        call(scratch, &m.write),
        b"0\0",
        "{}: reference write",
        m.name
    );
    let new = capture(scratch);
    let read_new = call(scratch, &m.read);
    assert_eq!(call(scratch, &next_write()), b"0\0");
    let new_next = capture(scratch);
    assert_ne!(
        new.xml, old.xml,
        "{}: the write must change qubes.xml",
        m.name
    );
    assert_ne!(
        read_new, read_old,
        "{}: the read must show the write",
        m.name
    );
    assert!(new.log.starts_with(&old.log));
    let next_frames = frames_after(&old_next.log, old.log.len());
    assert!(!next_frames.is_empty());
    assert_eq!(frames_after(&new_next.log, new.log.len()), next_frames);
    Refs {
        old: old.clone(),
        new,
        read_old,
        read_new,
        old_next,
        new_next,
        next_frames,
    }
}

/// The start state of every trial: the generated store after one warm-up write (so the log has
/// records and a hint).
fn start_state(scratch: &Path) -> State {
    install(
        scratch,
        &State {
            xml: generate(VMS).into_bytes(),
            log: Vec::new(),
            hint: Vec::new(),
            temps: Vec::new(),
        },
    );
    let warm = req("admin.vm.property.Set+memory", "vm0001", "777");
    assert_eq!(call(scratch, &warm), b"0\0");
    capture(scratch)
}

// ---------------------------------------------------------------------------------------------
// Checks

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Events {
    /// None of the call's events are in the log.
    None,
    /// Some, possibly with a torn last record.
    Partial,
    All,
}

#[derive(Debug)]
struct Crashed {
    committed: bool,
    events: Events,
    temps: usize,
    torn_tail: bool,
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("qubes.xml~"))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn first_diff(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The state right after a crash (before any other call).
fn check_crashed(dir: &Path, r: &Refs, what: &str) -> Crashed {
    let xml = std::fs::read(xml_path(dir)).unwrap();
    let committed = if xml == r.old.xml {
        false
    } else if xml == r.new.xml {
        true
    } else {
        panic!(
            "{what}: qubes.xml ({} bytes) is neither the old ({} bytes, first difference at {}) \
             nor the new version ({} bytes, first difference at {})",
            xml.len(),
            r.old.xml.len(),
            first_diff(&xml, &r.old.xml),
            r.new.xml.len(),
            first_diff(&xml, &r.new.xml)
        )
    };
    assert!(
        qubes_admin::store::Document::parse(xml).is_ok(),
        "{what}: qubes.xml does not parse"
    );
    let temps = temp_files(dir);
    for t in &temps {
        let b = std::fs::read(t).unwrap();
        assert!(
            r.new.xml.starts_with(&b),
            "{what}: temp file {} ({} bytes) is not a prefix of the new version",
            t.display(),
            b.len()
        );
    }
    if committed {
        assert!(
            temps.is_empty(),
            "{what}: committed, yet temp files remain: {temps:?}"
        );
    }
    // Event log: the old log, plus (only if committed) a byte prefix of this call's events.
    let log = std::fs::read(events::log_path(&run_dir(dir))).unwrap_or_default();
    if committed {
        assert!(
            log.starts_with(&r.old.log) && r.new.log.starts_with(&log),
            "{what}: the event log is not the old log plus a prefix of the new events \
             (old {} / now {} / new {} bytes)",
            r.old.log.len(),
            log.len(),
            r.new.log.len()
        );
    } else {
        assert!(
            log == r.old.log,
            "{what}: not committed, but the event log changed ({} -> {} bytes)",
            r.old.log.len(),
            log.len()
        );
    }
    // (A call that logs no events has logged all of them.)
    let events = if log == r.new.log {
        Events::All
    } else if log == r.old.log {
        Events::None
    } else {
        Events::Partial
    };
    // Readers: no corrupt record, complete records only, gap-free.
    let (recs, end) = events::parse_records(&log, 0)
        .unwrap_or_else(|e| panic!("{what}: event log is corrupt: {e}"));
    let read =
        events::read_after(&run_dir(dir), 0).unwrap_or_else(|e| panic!("{what}: read_after: {e}"));
    assert_eq!(read.len(), recs.len());
    for (i, (seq, _)) in read.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "{what}: sequence gap at record {i}");
    }
    Crashed {
        committed,
        events,
        temps: temps.len(),
        torn_tail: (end as usize) < log.len(),
    }
}

fn encode(seq: u64, frame: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("#{seq} {}\n", frame.len()).as_bytes());
    out.extend_from_slice(frame);
    out.push(b'\n');
}

/// The next read and write after a crash.
fn check_recovery(dir: &Path, r: &Refs, c: &Crashed, m: &Method, what: &str) {
    let log_before = std::fs::read(events::log_path(&run_dir(dir))).unwrap_or_default();
    let read = call(dir, &m.read);
    let want = if c.committed {
        &r.read_new
    } else {
        &r.read_old
    };
    assert!(
        read == *want,
        "{what}: read after the crash: {} instead of {}",
        show(&read),
        show(want)
    );
    let reply = call(dir, &next_write());
    assert!(reply == b"0\0", "{what}: next write: {}", show(&reply));
    let xml = std::fs::read(xml_path(dir)).unwrap();
    let want = if c.committed {
        &r.new_next
    } else {
        &r.old_next
    };
    assert!(
        xml == want.xml,
        "{what}: after the next write qubes.xml differs from the intact run (committed={}, \
         first difference at {})",
        c.committed,
        first_diff(&xml, &want.xml)
    );
    let temps = temp_files(dir);
    assert!(
        temps.is_empty(),
        "{what}: stale temp files survive the next write: {temps:?}"
    );
    // The log: complete records before the crash, the torn tail gone, the next write's events
    // numbered on from the last complete record.
    let (recs, end) = events::parse_records(&log_before, 0).unwrap();
    let mut expected = log_before[..end as usize].to_vec();
    let mut seq = recs.len() as u64;
    for f in &r.next_frames {
        seq += 1;
        encode(seq, f, &mut expected);
    }
    let log = std::fs::read(events::log_path(&run_dir(dir))).unwrap();
    assert!(
        log == expected,
        "{what}: event log after the next write: {} bytes, expected {} (first difference at {})",
        log.len(),
        expected.len(),
        first_diff(&log, &expected)
    );
    let read = events::read_after(&run_dir(dir), 0).unwrap();
    for (i, (s, _)) in read.iter().enumerate() {
        assert_eq!(*s, i as u64 + 1, "{what}: sequence gap at record {i}");
    }
    assert_eq!(read.last().map(|x| x.0), Some(seq));
}

fn killed_by(out: &Output) -> Option<i32> {
    out.status.signal()
}

// ---------------------------------------------------------------------------------------------
// Fail points

#[cfg(feature = "failpoints")]
#[test]
fn failpoints_every_point_every_method() {
    let _serial = serial();
    const POINTS: [&str; 6] = [
        "after-temp-write",
        "after-fsync",
        "before-rename",
        "after-rename",
        "torn-index",
        "during-event-append",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("ref");
    let dir = tmp.path().join("trial");
    let old = start_state(&scratch);
    let mut cases = 0;
    for m in methods() {
        let r = reference(&scratch, &old, &m);
        let fires_events = r.new.log != r.old.log;
        for fp in POINTS {
            let what = format!("{} at {fp}", m.name);
            install(&dir, &r.old);
            let out = finish(spawn(&dir, &m.write, Some(fp)));
            let reached = fp != "during-event-append" || fires_events;
            if reached {
                assert_eq!(
                    killed_by(&out),
                    Some(nix::libc::SIGABRT),
                    "{what}: the fail point did not abort the call ({:?}, reply {}); was {BIN} \
                     rebuilt without the `failpoints` feature by another cargo command?",
                    out.status,
                    show(&out.stdout)
                );
                assert!(out.stdout.is_empty(), "{what}: replied before the commit");
            } else {
                // A call that logs no events never reaches the event append.
                assert!(out.status.success() && out.stdout == b"0\0", "{what}");
            }
            let c = check_crashed(&dir, &r, &what);
            match fp {
                "after-temp-write" | "after-fsync" | "before-rename" => {
                    assert!(!c.committed, "{what}: committed");
                    assert_eq!(c.temps, 1, "{what}: the temp file should be left behind");
                    let t = std::fs::read(&temp_files(&dir)[0]).unwrap();
                    assert!(
                        t == r.new.xml,
                        "{what}: temp file is not the whole new version"
                    );
                }
                "after-rename" => {
                    assert!(c.committed, "{what}: not committed");
                    let want = if fires_events {
                        Events::None
                    } else {
                        Events::All
                    };
                    assert_eq!(c.events, want, "{what}: events logged");
                }
                "torn-index" => {
                    // The index of the new version is written after its events, still under
                    // the lock; a torn one must be ignored by the next read.
                    assert!(c.committed, "{what}: not committed");
                    assert_eq!(c.events, Events::All, "{what}: events logged");
                }
                _ => {
                    assert!(c.committed, "{what}: not committed");
                    if fires_events {
                        assert_eq!(c.events, Events::Partial, "{what}");
                        assert!(c.torn_tail, "{what}: half a batch should leave a torn tail");
                    }
                }
            }
            check_recovery(&dir, &r, &c, &m, &what);
            cases += 1;
        }
    }
    assert_eq!(cases, POINTS.len() * methods().len());
    eprintln!("crash: {cases} fail-point cases passed");
}

/// qubes.xml truncated in place by another program while a call reads it through its mapping:
/// the call answers an exception frame (no silent crash) and changes nothing, for a read and
/// for a write.
#[cfg(feature = "failpoints")]
#[test]
fn truncated_under_the_mapping() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("ref");
    let dir = tmp.path().join("trial");
    let old = start_state(&scratch);
    let m = &methods()[0];
    for r in [&m.read, &m.write] {
        install(&dir, &old);
        let out = finish(spawn(&dir, r, Some("truncate-after-map")));
        assert!(out.status.success(), "{r:?}: {:?}", out.status);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "2\0QubesException\0\0qubes.xml was truncated in place by another program while \
             this call read it; the call was stopped (writers must replace the file by rename, \
             as qubesd and qubes-admin-rs do)\0",
            "{r:?}"
        );
        let now = capture(&dir);
        assert!(now.xml.is_empty(), "{r:?}: the truncated file was replaced");
        assert!(
            now.log == old.log && now.temps.is_empty(),
            "{r:?}: something was written"
        );
    }
}

/// A build without the feature must ignore `QUBES_ADMIN_FAILPOINT` entirely.
#[cfg(not(feature = "failpoints"))]
#[test]
fn failpoints_are_compiled_out() {
    let _serial = serial();
    eprintln!(
        "crash: fail-point cases skipped: build without the `failpoints` feature (run \
         `cargo test --release -p qubes-admin-services --features failpoints --test crash`)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("ref");
    let dir = tmp.path().join("trial");
    let old = start_state(&scratch);
    let m = &methods()[0];
    let r = reference(&scratch, &old, m);
    install(&dir, &old);
    let out = finish(spawn(&dir, &m.write, Some("before-rename")));
    assert!(out.status.success() && out.stdout == b"0\0");
    assert!(capture(&dir) == r.new);
}

// ---------------------------------------------------------------------------------------------
// SIGKILL at random moments

/// splitmix64: small, seedable, good enough to spread delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e}"))
    })
}

#[derive(Default, Debug)]
struct Tally {
    completed: usize,
    killed_before_commit: usize,
    killed_with_temp_file: usize,
    killed_after_commit_no_events: usize,
    killed_after_commit_partial_events: usize,
    killed_after_commit_all_events: usize,
    torn_tails: usize,
}

/// Kill windows (µs) per method: a little longer than the method's fastest of 5 runs (spawn to
/// exit), so kills land in every phase from exec to exit, and some after it.
fn calibrate(dir: &Path, methods: &[Method], refs: &[Refs]) -> Vec<u64> {
    let mut windows = Vec::new();
    for (m, r) in methods.iter().zip(refs) {
        let mut v = Vec::new();
        for _ in 0..5 {
            install(dir, &r.old);
            let t = Instant::now();
            assert_eq!(call(dir, &m.write), b"0\0");
            v.push(t.elapsed());
        }
        v.sort();
        let w = (v[0].as_micros() as u64) * 6 / 5 + 200;
        eprintln!(
            "crash: {} takes {:.2} ms (fastest of 5); kill delays 0..{:.2} ms",
            m.name,
            v[0].as_secs_f64() * 1e3,
            w as f64 / 1e3
        );
        windows.push(w);
    }
    windows
}

fn trials_and_seed() -> (usize, u64) {
    let trials = env_u64("CRASH_TRIALS").map_or(DEFAULT_TRIALS, |n| n as usize);
    let seed = env_u64("CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    (trials, seed)
}

#[test]
fn sigkill_random_moments() {
    let _serial = serial();
    let (trials, seed) = trials_and_seed();
    eprintln!("crash: {trials} SIGKILL trials, seed {seed} (replay: CRASH_SEED={seed})");
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("ref");
    let dir = tmp.path().join("trial");
    let old = start_state(&scratch);
    let methods = methods();
    let refs: Vec<Refs> = methods
        .iter()
        .map(|m| reference(&scratch, &old, m))
        .collect();
    let windows = calibrate(&dir, &methods, &refs);
    let mut rng = Rng(seed);
    let mut t = Tally::default();
    for trial in 0..trials {
        let k = rng.below(methods.len() as u64) as usize;
        let (m, r) = (&methods[k], &refs[k]);
        let delay = Duration::from_micros(rng.below(windows[k]));
        let what = format!(
            "trial {trial} (seed {seed}): {} killed after {:?}",
            m.name, delay
        );
        install(&dir, &r.old);
        let mut child = spawn(&dir, &m.write, None);
        std::thread::sleep(delay);
        let _ = child.kill();
        let out = finish(child);
        let c = check_crashed(&dir, r, &what);
        match killed_by(&out) {
            Some(sig) => {
                assert_eq!(sig, nix::libc::SIGKILL, "{what}: {:?}", out.status);
                match (c.committed, c.events) {
                    (false, _) => {
                        t.killed_before_commit += 1;
                        t.killed_with_temp_file += usize::from(c.temps > 0);
                    }
                    (true, Events::None) => t.killed_after_commit_no_events += 1,
                    (true, Events::Partial) => t.killed_after_commit_partial_events += 1,
                    (true, Events::All) => t.killed_after_commit_all_events += 1,
                }
            }
            None => {
                // Finished before the kill: the reply was sent, so it must all be there.
                assert!(
                    out.status.success() && out.stdout == b"0\0",
                    "{what}: {:?} {}",
                    out.status,
                    show(&out.stdout)
                );
                assert!(c.committed && c.events == Events::All, "{what}: {c:?}");
                t.completed += 1;
            }
        }
        t.torn_tails += usize::from(c.torn_tail);
        check_recovery(&dir, r, &c, m, &what);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "crash: {trials} trials in {:.1} s, zero corruptions: {t:#?}",
        elapsed.as_secs_f64()
    );
    let sum = t.completed
        + t.killed_before_commit
        + t.killed_after_commit_no_events
        + t.killed_after_commit_partial_events
        + t.killed_after_commit_all_events;
    assert_eq!(sum, trials);
    if trials >= 50 {
        // The delays must actually spread over the call: both sides of the commit are hit.
        assert!(
            t.killed_before_commit > 0,
            "no kill landed before the commit"
        );
        assert!(
            t.completed + t.killed_after_commit_all_events + t.killed_after_commit_no_events > 0,
            "no trial got past the commit"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// SIGKILL chain: crash after crash on one store, without resetting it

/// The write of chain step `step`: a fresh change each time.
fn chain_write(step: usize, kind: usize) -> Req {
    let vm = |k: usize| format!("vm{:04}", k % VMS);
    match kind {
        0 => req(
            "admin.vm.property.Set+memory",
            &vm(step),
            &(1000 + step).to_string(),
        ),
        1 => req(
            &format!("admin.vm.feature.Set+chain-{step}"),
            &vm(step * 7),
            "v",
        ),
        2 => req(&format!("admin.vm.tag.Set+chain-{step}"), "vm0999", ""),
        3 => req(
            &format!("admin.label.Create+chain{step}"),
            "dom0",
            &format!("0x{:06x}", 0x10_0000 + step),
        ),
        _ => req("admin.property.Set+clockvm", "dom0", &vm(step * 13)),
    }
}

fn complete_end(log: &[u8]) -> usize {
    events::parse_records(log, 0).unwrap().1 as usize
}

#[derive(Default, Debug)]
struct ChainTally {
    completed: usize,
    killed_before_commit: usize,
    killed_after_commit: usize,
    steps_starting_with_temp_files: usize,
    steps_starting_with_torn_tail: usize,
    most_temp_files: usize,
}

/// Each step starts from whatever the previous (killed) step left: stale temp files, a torn or
/// lagging event log. The step's write runs on an intact copy first (the reference), then on
/// the store, killed at a random moment; the store must then be exactly the step's old or new
/// version. One step in five is not killed: it must leave exactly the reference's bytes.
#[test]
fn sigkill_chain() {
    let _serial = serial();
    let (trials, seed) = trials_and_seed();
    let steps = env_u64("CRASH_CHAIN").map_or(trials / 2, |n| n as usize);
    let seed = seed ^ 0xc4a1_0000;
    eprintln!("crash: {steps} chained SIGKILL steps, seed {seed}");
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("ref");
    let dir = tmp.path().join("store");
    let old = start_state(&scratch);
    let methods = methods();
    let refs: Vec<Refs> = methods
        .iter()
        .map(|m| reference(&scratch, &old, m))
        .collect();
    let windows = calibrate(&dir, &methods, &refs);
    install(&dir, &old);
    let mut rng = Rng(seed);
    let mut t = ChainTally::default();
    for step in 0..=steps {
        let kind = rng.below(methods.len() as u64) as usize;
        let w = chain_write(step, kind);
        let kill = step < steps && rng.below(5) != 0;
        let delay = Duration::from_micros(rng.below(windows[kind]));
        let what = format!(
            "chain step {step} (seed {seed}): {} {}",
            w.method_arg,
            if kill {
                format!("killed after {delay:?}")
            } else {
                "not killed".to_string()
            }
        );
        let cur = capture(&dir);
        t.steps_starting_with_temp_files += usize::from(!cur.temps.is_empty());
        t.steps_starting_with_torn_tail += usize::from(complete_end(&cur.log) < cur.log.len());
        t.most_temp_files = t.most_temp_files.max(cur.temps.len());
        install(&scratch, &cur);
        let reply = call(&scratch, &w);
        assert!(reply == b"0\0", "{what}: reference: {}", show(&reply));
        let new = capture(&scratch);
        assert!(new.temps.is_empty(), "{what}: reference left temp files");
        assert_eq!(
            complete_end(&new.log),
            new.log.len(),
            "{what}: reference log"
        );

        let mut child = spawn(&dir, &w, None);
        if kill {
            std::thread::sleep(delay);
            let _ = child.kill();
        }
        let out = finish(child);
        let now = capture(&dir);
        let changed = new.xml != cur.xml;
        let committed = changed && now.xml == new.xml;
        assert!(
            now.xml == cur.xml || now.xml == new.xml,
            "{what}: qubes.xml is neither the old nor the new version (first differences at \
             {} / {})",
            first_diff(&now.xml, &cur.xml),
            first_diff(&now.xml, &new.xml)
        );
        if committed {
            assert!(now.temps.is_empty(), "{what}: committed, temp files remain");
        }
        for (name, b) in &now.temps {
            let stale = cur.temps.iter().any(|(n, c)| n == name && c == b);
            assert!(
                stale || new.xml.starts_with(b),
                "{what}: temp file {name:?} is neither a stale one nor a prefix of the new version"
            );
        }
        // The log: untouched, or the old complete records plus a prefix of the new events.
        assert!(
            now.log == cur.log || (new.log.starts_with(&now.log)),
            "{what}: event log is neither the old one nor a prefix of the new one"
        );
        let end = events::parse_records(&now.log, 0)
            .unwrap_or_else(|e| panic!("{what}: event log is corrupt: {e}"))
            .1 as usize;
        assert!(
            end >= complete_end(&cur.log),
            "{what}: complete records lost"
        );
        if changed && !committed {
            assert_eq!(
                &now.log[..end],
                &cur.log[..complete_end(&cur.log)],
                "{what}: events logged for a change that was not saved"
            );
        }
        let read = events::read_after(&run_dir(&dir), 0).unwrap();
        for (i, (s, _)) in read.iter().enumerate() {
            assert_eq!(*s, i as u64 + 1, "{what}: sequence gap at record {i}");
        }
        match killed_by(&out) {
            Some(sig) => {
                assert_eq!(sig, nix::libc::SIGKILL, "{what}");
                if committed {
                    t.killed_after_commit += 1;
                } else {
                    t.killed_before_commit += 1;
                }
            }
            None => {
                assert!(
                    out.status.success() && out.stdout == b"0\0",
                    "{what}: {:?} {}",
                    out.status,
                    show(&out.stdout)
                );
                assert!(
                    now.xml == new.xml && now.log == new.log && now.temps.is_empty(),
                    "{what}: a completed write left other bytes than on the intact copy"
                );
                t.completed += 1;
            }
        }
    }
    // The last step was not killed: the store is clean.
    let end = capture(&dir);
    assert!(end.temps.is_empty());
    assert_eq!(complete_end(&end.log), end.log.len());
    qubes_admin::store::Document::parse(end.xml).unwrap();
    eprintln!(
        "crash: {steps} chained steps in {:.1} s, zero corruptions: {t:#?}",
        started.elapsed().as_secs_f64()
    );
    if steps >= 50 {
        assert!(t.killed_before_commit > 0 && t.completed > 0);
    }
}
