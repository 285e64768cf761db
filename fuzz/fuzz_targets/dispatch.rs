//! Fuzz target `dispatch`: every row of the dispatch table, through both front ends, against a
//! copy of `tests/fixtures/golden-10/qubes.xml`.
//!
//! Input: up to [`MAX_RECORDS`] request records separated by `0x1E`. A record is
//!
//! ```text
//! <method selector> <front end> [<method name> 0x1F] <arg> 0x1F <src> 0x1F <target type> 0x1F <dest> 0x1F <payload...>
//! ```
//!
//! * method selector: `b % (METHODS.len() + 1)`: a row of `qubes_admin::api::METHODS` (so
//!   every row is reachable), or `METHODS.len()`: the method name is the first field (unknown,
//!   non-ASCII, ... names);
//! * front end: `b % 4`: 0 the library API (`RawRequest` as is), 1 socket framing synthesized
//!   from the fields (`wire::parse_socket_request`), 2 the exec-service path
//!   (`wire::from_exec_env`; fields are cut at a NUL as an environment variable would be),
//!   3 the rest of the record is the raw socket buffer;
//! * target type: `name`, `keyword`, empty (exec: the variable is unset) or anything else.
//!
//! Checks: no panic; every reply is a well-formed frame (`0\0<body>` or
//! `2\0<Type>\0\0<message>\0`, one NUL-free UTF-8 message); a refused call and any read-only
//! call leave qubes.xml byte-identical; after a successful write qubes.xml still parses and
//! re-saves byte-identical; socket framing and the exec-service path agree (the same request, or
//! both refuse) on every request both can express.
//!
//! State: every input starts from the pristine fixture (reset when the previous input wrote),
//! so a crash reproduces from its input alone; within one input the records run in order and
//! each sees the state left by the previous ones.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use qubes_admin::api::METHODS;
use qubes_admin::runtime::{HostInfo, Offline};
use qubes_admin::store::Document;
use qubes_admin::wire::{self, RawRequest, Target};
use qubes_admin::{Config, System};

const MAX_RECORDS: usize = 8;
const REC: u8 = 0x1E;
const FIELD: u8 = 0x1F;
/// The base dir the fixture was captured with (see tests/golden.rs).
const CAPTURE_BASE: &str = "/work/oracle-run/golden-ref/varlib";
const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/golden-10/qubes.xml");

struct Env {
    root: PathBuf,
    config: Config,
    pristine: Vec<u8>,
    dirty: bool,
}

fn scratch_root() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("qubes-admin-fuzz-dispatch-{}", std::process::id()))
}

/// Removes scratch dirs of fuzzer processes that are gone (`-fork`/`-jobs` runs, killed runs).
fn sweep_dead_scratch_dirs(root: &Path) {
    let (Some(dir), Some(name)) = (root.parent(), root.file_name()) else {
        return;
    };
    let prefix = name.to_string_lossy();
    let prefix = prefix.trim_end_matches(|c: char| c.is_ascii_digit());
    for ent in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let n = ent.file_name().to_string_lossy().into_owned();
        if let Some(pid) = n.strip_prefix(prefix) {
            if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(ent.path());
            }
        }
    }
}

impl Env {
    fn new() -> Env {
        let root = scratch_root();
        sweep_dead_scratch_dirs(&root);
        let _ = std::fs::remove_dir_all(&root);
        let config = Config {
            xml_path: root.join("qubes.xml"),
            base_dir: root.join("varlib"),
            libvirt_uri: "test:///default".to_string(),
            run_dir: root.join("run"),
            policy_dir: root.join("policy.d"),
            policy_compat_dir: root.join("policy-compat"),
            template_dirs: vec![root.join("templates")],
            lock_timeout: Duration::from_millis(200),
            // Never the real qmemman/QubesDB/qrexec, whatever a fuzzed call asks for.
            dom0: qubes_admin::config::Dom0Config::for_uri("test:///default"),
        };
        let text = String::from_utf8(FIXTURE.to_vec()).unwrap();
        let pristine = text
            .replace(CAPTURE_BASE, &config.base_dir.to_string_lossy())
            .into_bytes();
        let mut env = Env {
            root,
            config,
            pristine,
            dirty: true,
        };
        env.reset();
        env
    }

    /// Back to the pristine fixture, empty run and base dirs.
    fn reset(&mut self) {
        if !self.dirty {
            return;
        }
        for d in [&self.config.run_dir, &self.config.base_dir] {
            let _ = std::fs::remove_dir_all(d);
        }
        std::fs::create_dir_all(&self.config.run_dir).unwrap();
        std::fs::create_dir_all(self.config.base_dir.join("appvms")).unwrap();
        std::fs::create_dir_all(self.config.base_dir.join("vm-templates")).unwrap();
        std::fs::create_dir_all(&self.config.policy_dir).unwrap();
        // A new inode (rename), as a real writer does: the store's cache key changes.
        let tmp = self.root.join("qubes.xml.fuzz-reset");
        std::fs::write(&tmp, &self.pristine).unwrap();
        std::fs::rename(&tmp, &self.config.xml_path).unwrap();
        self.dirty = false;
    }
}

static ENV: Mutex<Option<Env>> = Mutex::new(None);

/// `0\0<anything>` or `2\0<Type>\0\0<UTF-8 message>\0`.
fn check_frame(reply: &[u8], what: &dyn Fn() -> String) {
    if reply.starts_with(b"0\0") {
        return;
    }
    let Some(rest) = reply.strip_prefix(b"2\0") else {
        panic!("reply is neither 0\\0 nor 2\\0: {:?} for {}", reply, what());
    };
    let fields: Vec<&[u8]> = rest.split(|&c| c == 0).collect();
    assert!(
        fields.len() == 4 && fields[3].is_empty(),
        "exception frame does not have 3 NUL-terminated fields: {:?} for {}",
        String::from_utf8_lossy(reply),
        what()
    );
    let ty = fields[0];
    assert!(
        !ty.is_empty() && ty.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_'),
        "bad exception type {:?} for {}",
        String::from_utf8_lossy(ty),
        what()
    );
    assert!(fields[1].is_empty(), "non-empty traceback for {}", what());
    // The message may be empty: the reference itself sends `2\0QubesValueError\0\0\0` for
    // some refusals (tests/golden), and replies are the reference's bytes.
    assert!(
        std::str::from_utf8(fields[2]).is_ok(),
        "message not UTF-8 for {}",
        what()
    );
}

fn cut_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

struct Fields<'a> {
    method: Vec<u8>,
    arg: &'a [u8],
    src: &'a [u8],
    ttype: &'a [u8],
    dest: &'a [u8],
    payload: &'a [u8],
}

fn split_fields(rest: &[u8], custom_method: bool) -> Fields<'_> {
    let n = if custom_method { 6 } else { 5 };
    let mut it = rest.splitn(n, |&b| b == FIELD);
    let method = if custom_method {
        it.next().unwrap_or_default().to_vec()
    } else {
        Vec::new()
    };
    Fields {
        method,
        arg: it.next().unwrap_or_default(),
        src: it.next().unwrap_or_default(),
        ttype: it.next().unwrap_or_default(),
        dest: it.next().unwrap_or_default(),
        payload: it.next().unwrap_or_default(),
    }
}

fn socket_buf(f: &Fields<'_>) -> Vec<u8> {
    let mut b = f.method.clone();
    b.push(b'+');
    b.extend_from_slice(f.arg);
    for x in [f.src, f.ttype, f.dest] {
        b.push(b' ');
        b.extend_from_slice(x);
    }
    b.push(0);
    b.extend_from_slice(f.payload);
    b
}

fn service_name(f: &Fields<'_>) -> Vec<u8> {
    let mut s = cut_nul(&f.method).to_vec();
    s.push(b'+');
    s.extend_from_slice(cut_nul(f.arg));
    cut_nul(&s).to_vec()
}

fn exec_request(f: &Fields<'_>) -> Result<RawRequest, qubes_admin::ApiError> {
    let ttype = (!f.ttype.is_empty()).then(|| cut_nul(f.ttype));
    wire::from_exec_env(
        &service_name(f),
        cut_nul(f.src),
        ttype,
        Some(cut_nul(f.dest)),
        Some(cut_nul(f.dest)),
        f.payload.to_vec(),
    )
}

fn direct_request(f: &Fields<'_>) -> RawRequest {
    let target = match f.ttype {
        b"keyword" => Target::Keyword(f.dest.to_vec()),
        _ => Target::Name(f.dest.to_vec()),
    };
    RawRequest {
        method: f.method.clone(),
        arg: f.arg.to_vec(),
        src: f.src.to_vec(),
        target,
        payload: f.payload.to_vec(),
    }
}

/// The front ends must agree on a request that all of them can express: the same request, or
/// both refuse it (the size limit counts the same descriptor bytes in both).
fn check_front_ends_agree(f: &Fields<'_>) {
    let plain = |b: &[u8]| !b.iter().any(|&c| c == b' ' || c == 0);
    let expressible = plain(&f.method)
        && !f.method.contains(&b'+')
        && plain(f.arg)
        && plain(f.src)
        && plain(f.dest)
        && matches!(f.ttype, b"name" | b"keyword");
    if !expressible {
        return;
    }
    let sock = wire::parse_socket_request(&socket_buf(f));
    let exec = exec_request(f);
    assert_eq!(
        sock.as_ref().ok(),
        exec.as_ref().ok(),
        "socket framing and exec-service path disagree"
    );
    if let Ok(r) = sock {
        assert_eq!(
            r,
            direct_request(f),
            "socket framing disagrees with the fields"
        );
    }
}

fn run_record(env: &mut Env, sys: &mut System, rec: &[u8]) {
    let (Some(&sel), Some(&mode)) = (rec.first(), rec.get(1)) else {
        return;
    };
    let rest = &rec[2..];
    let idx = sel as usize % (METHODS.len() + 1);
    let custom = idx == METHODS.len();
    let mut f = split_fields(rest, custom);
    if !custom {
        f.method = METHODS[idx].name.as_bytes().to_vec();
    }
    check_front_ends_agree(&f);
    let request = match mode % 4 {
        0 => Ok(direct_request(&f)),
        1 => wire::parse_socket_request(&socket_buf(&f)),
        2 => exec_request(&f),
        _ => wire::parse_socket_request(rest),
    };
    let raw = match request {
        Ok(r) => r,
        Err(e) => {
            // What the binary sends for a framing error.
            let reply = wire::frame_exception(&e);
            check_frame(&reply, &|| format!("framing error {e:?}"));
            return;
        }
    };
    let before = std::fs::read(&env.config.xml_path).unwrap();
    let reply = sys.call(&raw);
    let what = || {
        format!(
            "{}+{} src={:?} target={:?} payload={:?}",
            String::from_utf8_lossy(&raw.method),
            String::from_utf8_lossy(&raw.arg),
            String::from_utf8_lossy(&raw.src),
            raw.target,
            String::from_utf8_lossy(&raw.payload)
        )
    };
    check_frame(&reply, &what);
    let after = std::fs::read(&env.config.xml_path).unwrap();
    let writes = std::str::from_utf8(&raw.method)
        .ok()
        .and_then(qubes_admin::api::find)
        .is_some_and(|m| m.writes());
    if reply.starts_with(b"2\0") || !writes {
        assert!(
            before == after,
            "qubes.xml changed by a refused or read-only call: {} -> {}",
            what(),
            String::from_utf8_lossy(&reply)
        );
    }
    if writes && reply.starts_with(b"0\0") {
        env.dirty = true;
        if before != after {
            let doc = Document::parse(after.clone())
                .unwrap_or_else(|e| panic!("qubes.xml written by {} does not parse: {e}", what()));
            assert!(
                doc.to_bytes() == after,
                "saved qubes.xml is not a fixed point"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut guard = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let env = guard.get_or_insert_with(Env::new);
    // Back to the pristine fixture if the previous input wrote (qubes.xml, notes, events).
    env.reset();
    let mut sys = System::with_hypervisor(
        env.config.clone(),
        Box::new(Offline {
            host: HostInfo {
                memory_mib: 3072,
                cpus: 16,
            },
        }),
    );
    for rec in data.split(|&b| b == REC).take(MAX_RECORDS) {
        run_record(env, &mut sys, rec);
    }
});
