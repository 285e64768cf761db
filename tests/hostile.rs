//! Hostile-input table (`tests/hostile/table.txt`, format at the top of that file and in
//! `docs/testing-hostile.md`): every row is one request an untrusted caller may send, through
//! the socket front end (`--socket-request`) or the qrexec exec-service front end, with the
//! exact reply it must produce. After every row that is not marked `= writes`, qubes.xml must
//! be byte-identical to before and the event log must have no new record.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use support::{check_exception_frame, escape, unescape, Sandbox};

const TABLE: &str = "hostile/table.txt";
const FIXTURE: &str = "golden-10";
const CAPTURE_BASE: &str = "/work/oracle-run/golden-ref/varlib";
/// The reference's request limit (header + payload).
const MAX_REQUEST: usize = 65536;
const MIN_ROWS: usize = 150;

#[derive(Debug, Clone)]
enum Front {
    /// `--socket-request`; stdin = header, NUL, payload.
    Socket(Vec<u8>),
    /// `--socket-request`; stdin exactly these bytes (plus any padding).
    Raw(Vec<u8>),
    /// Exec-service mode: service, source, target type (`None` = unset), target.
    Exec {
        service: Vec<u8>,
        src: Vec<u8>,
        ttype: Option<Vec<u8>>,
        target: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
struct Row {
    line: usize,
    category: String,
    front: Front,
    payload: Vec<u8>,
    pad: Option<usize>,
    /// `None` for `<?`.
    reply: Option<Vec<u8>>,
    no_reply: bool,
    deviation: bool,
    writes: bool,
}

impl Row {
    fn describe(&self) -> String {
        let what = match &self.front {
            Front::Socket(h) => format!("> {}", escape(h)),
            Front::Raw(b) => format!(">raw {}", escape(&b[..b.len().min(80)])),
            Front::Exec {
                service,
                src,
                ttype,
                target,
            } => format!(
                ">exec {} {} {} {}",
                escape(service),
                escape(src),
                ttype.as_deref().map_or("-".into(), escape),
                escape(target)
            ),
        };
        format!("{TABLE}:{} [{}] {what}", self.line, self.category)
    }

    /// The length the reference counts against its limit before padding.
    fn counted_len(&self) -> usize {
        match &self.front {
            Front::Socket(h) => h.len() + 1 + self.payload.len(),
            Front::Raw(b) => b.len() + self.payload.len(),
            Front::Exec {
                service,
                src,
                ttype,
                target,
            } => {
                let tt = ttype.as_deref().unwrap_or(b"name");
                service.len()
                    + 1
                    + src.len()
                    + 1
                    + tt.len()
                    + 1
                    + target.len()
                    + 1
                    + self.payload.len()
            }
        }
    }

    fn full_payload(&self) -> Vec<u8> {
        let mut p = self.payload.clone();
        if let Some(n) = self.pad {
            let have = self.counted_len();
            assert!(
                have <= n,
                "{}: |pad {n} is shorter than the row",
                self.describe()
            );
            p.resize(p.len() + (n - have), b'x');
        }
        p
    }
}

fn parse_table(text: &str) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut category = String::from("(none)");
    let (mut no_reply, mut deviation, mut writes) = (false, false, false);
    let un = |s: &str, line: usize| -> Vec<u8> {
        unescape(s).unwrap_or_else(|e| panic!("{TABLE}:{line}: {e}"))
    };
    for (i, l) in text.lines().enumerate() {
        let line = i + 1;
        if let Some(c) = l.strip_prefix("## ") {
            category = c.trim().to_string();
        } else if l.is_empty() || l.starts_with('#') {
        } else if l == "= no-reply in reference" {
            no_reply = true;
        } else if l.starts_with("= deviation:") {
            deviation = true;
        } else if l == "= writes" {
            writes = true;
        } else if l.starts_with('>') {
            let front = if let Some(h) = l.strip_prefix("> ") {
                Front::Socket(un(h, line))
            } else if let Some(b) = l.strip_prefix(">raw ") {
                Front::Raw(un(b, line))
            } else if l == ">raw" {
                Front::Raw(Vec::new())
            } else if let Some(e) = l.strip_prefix(">exec ") {
                let f: Vec<&str> = e.split(' ').collect();
                assert_eq!(f.len(), 4, "{TABLE}:{line}: >exec needs 4 fields");
                Front::Exec {
                    service: un(f[0], line),
                    src: un(f[1], line),
                    ttype: (f[2] != "-").then(|| un(f[2], line)),
                    target: un(f[3], line),
                }
            } else {
                panic!("{TABLE}:{line}: unknown request line");
            };
            rows.push(Row {
                line,
                category: category.clone(),
                front,
                payload: Vec::new(),
                pad: None,
                reply: None,
                no_reply,
                deviation,
                writes,
            });
            (no_reply, deviation, writes) = (false, false, false);
        } else if let Some(n) = l.strip_prefix("|pad ") {
            rows.last_mut().expect("|pad before a request").pad =
                Some(n.parse().unwrap_or_else(|e| panic!("{TABLE}:{line}: {e}")));
        } else if let Some(p) = l.strip_prefix("| ") {
            rows.last_mut().expect("| before a request").payload = un(p, line);
        } else if l == "<?" {
        } else if let Some(r) = l.strip_prefix("< ") {
            rows.last_mut().expect("< before a request").reply = Some(un(r, line));
        } else {
            panic!("{TABLE}:{line}: unknown line {l:?}");
        }
    }
    rows
}

fn run_row(sb: &Sandbox, row: &Row) -> std::process::Output {
    let payload = row.full_payload();
    match &row.front {
        Front::Socket(h) => {
            let mut stdin = h.clone();
            stdin.push(0);
            stdin.extend_from_slice(&payload);
            sb.socket_request(&stdin)
        }
        Front::Raw(b) => {
            let mut stdin = b.clone();
            stdin.extend_from_slice(&payload);
            sb.socket_request(&stdin)
        }
        Front::Exec {
            service,
            src,
            ttype,
            target,
        } => {
            let os = |b: &[u8]| OsStr::from_bytes(b).to_os_string();
            let mut c = sb.command();
            c.env("QREXEC_SERVICE_FULL_NAME", os(service))
                .env("QREXEC_REMOTE_DOMAIN", os(src));
            match ttype.as_deref() {
                Some(b"keyword") => {
                    c.env("QREXEC_REQUESTED_TARGET_TYPE", "keyword")
                        .env("QREXEC_REQUESTED_TARGET_KEYWORD", os(target));
                }
                Some(t) => {
                    c.env("QREXEC_REQUESTED_TARGET_TYPE", os(t))
                        .env("QREXEC_REQUESTED_TARGET", os(target));
                }
                None => {
                    c.env("QREXEC_REQUESTED_TARGET", os(target));
                }
            }
            if let Some(i) = service.iter().position(|&b| b == b'+') {
                let arg = &service[i + 1..];
                c.env("QREXEC_SERVICE_ARGUMENT", os(arg));
                if !arg.is_empty() {
                    c.arg(os(arg));
                }
            }
            support::run(c, &payload)
        }
    }
}

fn read_or_empty(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

#[test]
fn hostile_table() {
    let text = std::fs::read_to_string(support::tests_dir(TABLE)).unwrap();
    let rows = parse_table(&text);
    assert!(
        rows.len() >= MIN_ROWS,
        "{TABLE}: {} rows, at least {MIN_ROWS} expected",
        rows.len()
    );
    let sb = Sandbox::new_rebased(FIXTURE, CAPTURE_BASE);
    let events = sb.run_dir().join("qubes-admin/events.log");
    let mut failures = Vec::new();
    let mut per_category: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut socket, mut exec) = (0, 0);
    for row in &rows {
        *per_category.entry(row.category.as_str()).or_default() += 1;
        match row.front {
            Front::Exec { .. } => exec += 1,
            _ => socket += 1,
        }
        let xml_before = std::fs::read(sb.xml()).unwrap();
        let log_before = read_or_empty(&events);
        let out = run_row(&sb, row);
        let mut fail = |why: String| failures.push(format!("{}\n    {why}", row.describe()));
        if !out.status.success() {
            fail(format!(
                "exit status {:?} (stderr {:?})",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        match &row.reply {
            None => fail(format!(
                "no expected reply; ours: < {}",
                escape(&out.stdout)
            )),
            Some(want) if *want != out.stdout => fail(format!(
                "reply differs\n    want < {}\n    got  < {}",
                escape(want),
                escape(&out.stdout)
            )),
            Some(_) => {}
        }
        if !out.stdout.starts_with(b"0\0") && !out.stdout.starts_with(b"2\0") {
            fail(format!("not a reply frame: {}", escape(&out.stdout)));
        }
        if row.no_reply {
            // Where the reference is silent we must say what went wrong. (Elsewhere the exact
            // reply is the reference's, e.g. its empty-message `2\0QubesValueError\0\0\0`.)
            if let Err(e) = check_exception_frame(&out.stdout) {
                fail(format!(
                    "the reference drops this request: we must send a clear exception ({e})"
                ));
            }
        }
        if row.writes {
            sb.reset();
        } else {
            if std::fs::read(sb.xml()).unwrap() != xml_before {
                fail("qubes.xml changed".into());
                sb.reset();
            }
            if read_or_empty(&events) != log_before {
                fail("the event log got a new record".into());
                sb.reset();
            }
        }
    }
    eprintln!(
        "hostile table: {} rows ({socket} socket, {exec} exec-service; {} no-reply in the \
         reference, {} deviations, {} accepted writes)",
        rows.len(),
        rows.iter().filter(|r| r.no_reply).count(),
        rows.iter().filter(|r| r.deviation).count(),
        rows.iter().filter(|r| r.writes).count(),
    );
    for (c, n) in &per_category {
        eprintln!("  {c:<22} {n}");
    }
    assert!(socket > 0 && exec > 0, "both front ends must be covered");
    assert!(
        failures.is_empty(),
        "{} of {} hostile rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// The table's own invariants: the size boundary is exercised on both sides in both modes,
/// and every payload-forbidden method of the dispatch table has a row in each mode.
#[test]
fn table_covers_what_it_promises() {
    let text = std::fs::read_to_string(support::tests_dir(TABLE)).unwrap();
    let rows = parse_table(&text);
    for (exec, n) in [
        (false, MAX_REQUEST),
        (false, MAX_REQUEST + 1),
        (true, MAX_REQUEST),
        (true, MAX_REQUEST + 1),
    ] {
        assert!(
            rows.iter()
                .any(|r| r.pad == Some(n) && matches!(r.front, Front::Exec { .. }) == exec),
            "no {} row padded to {n} bytes",
            if exec { "exec-service" } else { "socket" }
        );
    }
    // Socket rows run on the admin socket, exec rows through qrexec: each method where it is
    // reachable (the internal socket's calls are covered by tests/sockets.rs).
    for m in qubes_admin::api::METHODS
        .iter()
        .filter(|m| m.payload == qubes_admin::api::Presence::Forbidden)
    {
        use qubes_admin::api::{find_on, Endpoint, Socket};
        for exec in [false, true] {
            let endpoint = if exec {
                Endpoint::Qrexec
            } else {
                Endpoint::Socket(Socket::Admin)
            };
            if find_on(endpoint, m.name).is_none() {
                continue;
            }
            let covered = rows.iter().any(|r| {
                r.category == "payload-forbidden"
                    && !r.payload.is_empty()
                    && match &r.front {
                        Front::Socket(h) => h.starts_with(format!("{}+", m.name).as_bytes()),
                        Front::Exec { service, .. } => {
                            service.starts_with(format!("{}+", m.name).as_bytes())
                        }
                        Front::Raw(_) => false,
                    }
                    && matches!(r.front, Front::Exec { .. }) == exec
            });
            assert!(
                covered,
                "{TABLE}: no payload-forbidden {} row for {}",
                if exec { "exec-service" } else { "socket" },
                m.name
            );
        }
    }
}
