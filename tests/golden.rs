//! Golden-reply replay: every `tests/golden/*.golden` file is a request sequence captured from
//! the reference qubesd (format: `tests/golden/README.md`). Each file is replayed on a fresh copy
//! of `tests/fixtures/golden-10/`, one `qubes-admin-call --socket-request` per request; reply
//! bytes must match exactly and the event-log records appended by each request must equal the
//! `!` lines (the events the reference fired for it).
//!
//! All mismatches of all files are reported at once (escaped bytes), with pass/fail counts per
//! file and a summary of mismatch classes; the full report is also written to
//! `$CARGO_TARGET_TMPDIR/golden-report.txt`.
//!
//! Knobs: `GOLDEN_FILTER=<substring>` (only files whose name contains it),
//! `GOLDEN_MAX_SHOW=<n>` (mismatch details printed per file, default 40, 0 = all; the report
//! file always has all), `GOLDEN_JOBS=<n>` (files replayed in parallel, default 2).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use support::{check_exception_frame, escape, unescape, Sandbox};

const FIXTURE: &str = "golden-10";
/// The base dir the fixture was captured with (its pool `dir_path`s point into it); the sandbox
/// copy of qubes.xml has it replaced by the sandbox's `QUBES_BASE_DIR` (the reference's
/// qubes_base_dir was that same directory, which e.g. the `default_pool` default depends on).
const CAPTURE_BASE: &str = "/work/oracle-run/golden-ref/varlib";

/// One request of a golden file.
#[derive(Debug, Default)]
struct Entry {
    line: usize,
    /// Display form: the header (or `raw` bytes) escaped.
    title: String,
    method: String,
    stdin: Vec<u8>,
    reply: Vec<u8>,
    expect_prefix: Option<Vec<u8>>,
    deviation: Option<String>,
    events: Vec<Vec<u8>>,
}

fn parse_golden(path: &Path) -> Result<Vec<Entry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out: Vec<Entry> = Vec::new();
    let mut pending_dev: Option<String> = None;
    let mut have_payload = false;
    for (i, line) in text.lines().enumerate() {
        let ln = i + 1;
        let err = |m: &str| format!("{}:{ln}: {m}", path.display());
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            if let Some(d) = c.trim_start().strip_prefix("deviation:") {
                pending_dev = Some(d.trim().to_string());
            }
            continue;
        }
        let (tag, rest) = match line.split_once(' ') {
            Some((t, r)) => (t, r),
            None => (line, ""),
        };
        match tag {
            ">" | ">raw" => {
                let bytes = unescape(rest).map_err(|e| err(&e))?;
                let mut stdin = bytes.clone();
                if tag == ">" {
                    stdin.push(0);
                }
                let method = if tag == ">" {
                    let m = rest.split([' ', '+']).next().unwrap_or_default();
                    m.to_string()
                } else {
                    "(raw framing)".to_string()
                };
                out.push(Entry {
                    line: ln,
                    title: line.to_string(),
                    method,
                    stdin,
                    deviation: pending_dev.take(),
                    ..Entry::default()
                });
                have_payload = false;
            }
            "|" => {
                let e = out
                    .last_mut()
                    .ok_or_else(|| err("payload before request"))?;
                if have_payload || e.title.starts_with(">raw") {
                    return Err(err("second payload line / payload on a raw request"));
                }
                e.stdin.extend(unescape(rest).map_err(|x| err(&x))?);
                have_payload = true;
            }
            "<" => {
                let e = out.last_mut().ok_or_else(|| err("reply before request"))?;
                e.reply = unescape(rest).map_err(|x| err(&x))?;
            }
            "<~" => {
                let e = out.last_mut().ok_or_else(|| err("reply before request"))?;
                e.expect_prefix = Some(unescape(rest).map_err(|x| err(&x))?);
            }
            "!" => {
                let e = out.last_mut().ok_or_else(|| err("event before request"))?;
                e.events.push(unescape(rest).map_err(|x| err(&x))?);
            }
            _ => return Err(err("unknown line tag")),
        }
    }
    Ok(out)
}

/// Exception type of an exception frame.
fn exc_type(b: &[u8]) -> Option<String> {
    let rest = b.strip_prefix(b"2\0")?;
    let end = rest.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

fn reply_kind(b: &[u8]) -> String {
    if b.is_empty() {
        "nothing".into()
    } else if b.starts_with(b"0\0") {
        "OK".into()
    } else if let Some(t) = exc_type(b) {
        t
    } else {
        "garbage".into()
    }
}

/// The class of a reply mismatch (for the summary).
fn reply_class(expected: &[u8], got: &[u8]) -> String {
    match (reply_kind(expected).as_str(), reply_kind(got).as_str()) {
        (_, "nothing") => "no output (crash/panic?)".into(),
        ("OK", "OK") => "OK body differs".into(),
        ("OK", g) => format!("expected OK, got {g}"),
        (e, "OK") => format!("expected {e}, got OK"),
        (e, g) if e == g => format!("{e} message differs"),
        (e, g) => format!("expected {e}, got {g}"),
    }
}

fn first_diff(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

struct FileResult {
    name: String,
    total: usize,
    failed: usize,
    dev_checked: usize,
    dev_unchecked: usize,
    details: Vec<String>,
    classes: Vec<String>,
    note: Option<String>,
}

static LOG_BROKEN: AtomicBool = AtomicBool::new(false);

/// The records appended to the event log after `after`, as frames; Err if unreadable.
fn read_events(run_dir: &Path, after: &mut u64) -> Result<Vec<Vec<u8>>, String> {
    if LOG_BROKEN.load(Ordering::Relaxed) {
        return Err("event log unreadable (earlier panic in events::read_after)".into());
    }
    let last = *after;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        qubes_admin::events::read_after(run_dir, last)
    }));
    match r {
        Ok(Ok(recs)) => {
            if let Some((s, _)) = recs.last() {
                *after = *s;
            }
            Ok(recs.iter().map(|(_, e)| e.frame()).collect())
        }
        Ok(Err(e)) => Err(format!("events::read_after failed: {e}")),
        Err(_) => {
            LOG_BROKEN.store(true, Ordering::Relaxed);
            Err("events::read_after panicked".into())
        }
    }
}

/// For an exception whose message ends in a Python repr holding a memory address
/// (`... of <DispVM at 0x7f... name=...>`), the part before the repr.
fn python_repr_prefix(reply: &[u8]) -> Option<&[u8]> {
    if !reply.starts_with(b"2\0") {
        return None;
    }
    let at = reply.windows(5).position(|w| w == b" of <")?;
    let tail = &reply[at..];
    tail.windows(6)
        .any(|w| w == b" at 0x")
        .then(|| &reply[..at + 4])
}

fn replay(path: &Path) -> FileResult {
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let mut res = FileResult {
        name: name.clone(),
        total: 0,
        failed: 0,
        dev_checked: 0,
        dev_unchecked: 0,
        details: Vec::new(),
        classes: Vec::new(),
        note: None,
    };
    let entries = match parse_golden(path) {
        Ok(e) => e,
        Err(e) => {
            res.failed = 1;
            res.total = 1;
            res.details.push(format!("  PARSE ERROR {e}"));
            res.classes.push("golden file parse error".into());
            return res;
        }
    };
    let sb = Sandbox::new_rebased(FIXTURE, CAPTURE_BASE);
    let run_dir = sb.run_dir();
    let mut last_seq = 0u64;
    for e in &entries {
        res.total += 1;
        let out = sb.socket_request(&e.stdin);
        let got = out.stdout;
        let mut problems: Vec<String> = Vec::new();
        let mut classes: Vec<String> = Vec::new();

        // --- reply
        if e.deviation.is_some() {
            match &e.expect_prefix {
                Some(p) if got.starts_with(p) => res.dev_checked += 1,
                Some(p) => {
                    problems.push(format!(
                        "    deviation: expected reply starting with: {}\n    got:                                {}",
                        escape(p),
                        escape(&got)
                    ));
                    classes.push(format!("{}: deviation prefix not met", e.method));
                }
                None => res.dev_unchecked += 1,
            }
        } else if e.reply.is_empty() {
            if let Err(why) = check_exception_frame(&got) {
                problems.push(format!(
                    "    reference sent NO reply; we must send a well-formed exception frame \
                     2\\0<Type>\\0\\0<message>\\0 ({why})\n    got: {}",
                    escape(&got)
                ));
                classes.push(format!(
                    "{}: no-reply case without a proper exception frame",
                    e.method
                ));
            }
        } else if let Some(prefix) = python_repr_prefix(&e.reply) {
            // The reference's message embeds a Python object repr with a memory address
            // (`of <AppVM at 0x7f… name=…>`), which can never match; we name the qube instead.
            if !got.starts_with(prefix) || got.len() <= prefix.len() {
                problems.push(format!(
                    "    expected a reply starting with: {}\n    got: {}",
                    escape(prefix),
                    escape(&got)
                ));
                classes.push(format!("{}: message prefix differs", e.method));
            }
        } else if got != e.reply {
            let at = first_diff(&e.reply, &got);
            problems.push(format!(
                "    expected: {}\n    got:      {}\n    (first difference at byte {at}: expected ...{} | got ...{})",
                escape(&e.reply),
                escape(&got),
                escape(&e.reply[at.min(e.reply.len())..(at + 24).min(e.reply.len())]),
                escape(&got[at.min(got.len())..(at + 24).min(got.len())]),
            ));
            classes.push(format!("{}: {}", e.method, reply_class(&e.reply, &got)));
        }
        if !out.status.success() || (got.is_empty() && !out.stderr.is_empty()) {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(4).collect();
            problems.push(format!(
                "    exit status {:?}; stderr (last lines): {}",
                out.status.code(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            ));
        }

        // --- events
        // A failed call changes nothing and logs nothing (the reference still shows the
        // pre-events of a call that a validator then vetoes).
        let ref_failed = e.reply.is_empty() || e.reply.starts_with(b"2\0");
        let expected_events: &[Vec<u8>] = if ref_failed { &[] } else { &e.events };
        match read_events(&run_dir, &mut last_seq) {
            Ok(got_ev) => {
                if e.deviation.is_none() && got_ev != expected_events {
                    let mut s = String::from("    events differ (- expected, + ours):\n");
                    for x in expected_events {
                        let mark = if got_ev.contains(x) { ' ' } else { '-' };
                        let _ = writeln!(s, "     {mark} {}", escape(x));
                    }
                    for x in &got_ev {
                        if !expected_events.contains(x) {
                            let _ = writeln!(s, "     + {}", escape(x));
                        }
                    }
                    problems.push(s.trim_end().to_string());
                    let missing = expected_events
                        .iter()
                        .filter(|x| !got_ev.contains(x))
                        .count();
                    let extra = got_ev
                        .iter()
                        .filter(|x| !expected_events.contains(x))
                        .count();
                    let kind = if got_ev.is_empty() {
                        if e.reply.starts_with(b"2\0") || e.reply.is_empty() {
                            "events: pre-events of a failed call not logged".to_string()
                        } else {
                            "events: none logged".to_string()
                        }
                    } else if missing == 0 && extra == 0 {
                        "events: order differs".to_string()
                    } else if missing == 0 {
                        "events: unexpected extra".to_string()
                    } else if extra == 0 {
                        "events: some missing".to_string()
                    } else {
                        "events: differ".to_string()
                    };
                    classes.push(format!("{}: {kind}", e.method));
                }
            }
            Err(why) => {
                if res.note.is_none() {
                    res.note = Some(why.clone());
                }
                if e.deviation.is_none() && !expected_events.is_empty() {
                    problems.push(format!(
                        "    {} event(s) expected, but the event log could not be read ({why})",
                        expected_events.len()
                    ));
                    classes.push(format!("{}: events: log unreadable", e.method));
                }
            }
        }

        if !problems.is_empty() {
            res.failed += 1;
            let dev = e
                .deviation
                .as_ref()
                .map(|d| format!("  # deviation: {d}"))
                .unwrap_or_default();
            res.details.push(format!(
                "  {}:{}: {}{dev}\n{}",
                name,
                e.line,
                e.title,
                problems.join("\n")
            ));
            res.classes.extend(classes);
        }
    }
    res
}

fn golden_files() -> Vec<PathBuf> {
    let dir = support::tests_dir("golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "golden"))
        .collect();
    files.sort();
    files
}

#[test]
fn golden_replies() {
    let filter = std::env::var("GOLDEN_FILTER").unwrap_or_default();
    let max_show: usize = std::env::var("GOLDEN_MAX_SHOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let jobs: usize = std::env::var("GOLDEN_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let files: Vec<PathBuf> = golden_files()
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(&filter))
        .collect();
    assert!(
        !files.is_empty(),
        "no golden file matches GOLDEN_FILTER={filter:?}"
    );

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, FileResult)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(files.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(f) = files.get(i) else { break };
                let r = replay(f);
                results.lock().unwrap().push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);

    let mut full = String::new();
    let mut shown = String::new();
    let (mut total, mut failed, mut devc, mut devu) = (0, 0, 0, 0);
    let mut by_class: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut table = String::new();
    for (_, r) in &results {
        total += r.total;
        failed += r.failed;
        devc += r.dev_checked;
        devu += r.dev_unchecked;
        let _ = writeln!(
            table,
            "  {} {:<24} {:>4}/{:<4} passed{}{}",
            if r.failed == 0 { "PASS" } else { "FAIL" },
            r.name,
            r.total - r.failed,
            r.total,
            if r.dev_checked + r.dev_unchecked > 0 {
                format!(
                    "  (deviations: {} prefix-checked, {} unchecked)",
                    r.dev_checked, r.dev_unchecked
                )
            } else {
                String::new()
            },
            r.note
                .as_ref()
                .map(|n| format!("  [{n}]"))
                .unwrap_or_default(),
        );
        for c in &r.classes {
            *by_class.entry(c.clone()).or_default() += 1;
            let kind = c
                .split_once(": ")
                .map(|(_, k)| k.to_string())
                .unwrap_or_else(|| c.clone());
            *by_kind.entry(kind).or_default() += 1;
        }
        if !r.details.is_empty() {
            let _ = writeln!(
                full,
                "=== {} ({} of {} requests mismatched)",
                r.name, r.failed, r.total
            );
            let _ = writeln!(
                shown,
                "=== {} ({} of {} requests mismatched)",
                r.name, r.failed, r.total
            );
            for (k, d) in r.details.iter().enumerate() {
                let _ = writeln!(full, "{d}");
                if max_show == 0 || k < max_show {
                    let _ = writeln!(shown, "{d}");
                }
            }
            if max_show != 0 && r.details.len() > max_show {
                let _ = writeln!(
                    shown,
                    "  ... {} more (see the report file)",
                    r.details.len() - max_show
                );
            }
        }
    }
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "golden: {} files, {} requests, {} passed, {} failed",
        results.len(),
        total,
        total - failed,
        failed
    );
    let _ = writeln!(
        summary,
        "        deviations: {devc} prefix-checked, {devu} left for the lead (unchecked)"
    );
    summary.push_str(&table);
    if !by_kind.is_empty() {
        let mut v: Vec<_> = by_kind.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let _ = writeln!(summary, "mismatch kinds:");
        for (k, n) in v.iter().take(30) {
            let _ = writeln!(summary, "  {n:>5}  {k}");
        }
        let mut v: Vec<_> = by_class.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let _ = writeln!(
            summary,
            "mismatch classes (method: kind), top 40 of {}:",
            v.len()
        );
        for (k, n) in v.iter().take(40) {
            let _ = writeln!(summary, "  {n:>5}  {k}");
        }
    }
    let report = Path::new(env!("CARGO_TARGET_TMPDIR")).join("golden-report.txt");
    let _ = std::fs::write(&report, format!("{summary}\n{full}"));
    println!("{shown}\n{summary}full report: {}", report.display());
    assert!(
        failed == 0,
        "{failed} of {total} golden requests mismatched (summary above; full report: {})",
        report.display()
    );
}
