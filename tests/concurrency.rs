//! Many processes on one qubes.xml at once; every call is one exec of `qubes-admin-call
//! --socket-request`, as qrexec runs it. See `docs/testing-concurrency.md`.
//!
//! * [`eight_writers_lose_no_update`]: 8 writers × 200 property / feature / tag writes.
//! * [`mixed_workload`]: `CONC_PROCS` (default 8) processes issue mixed reads and writes across
//!   every implemented family for `CONC_SECONDS` (default 20) seconds, plus a Python writer that
//!   locks qubes.xml with `fcntl.lockf` and saves it the way qubesd does. Each writer owns its
//!   keys and keeps a model of them, so every reply, every event (exact kwargs, in the writer's
//!   issue order) and every final value can be predicted. Afterwards: no lost update, the event
//!   log is gap-free and consistent with real time, the file parses, no temp file is left.
//! * [`foreign_lock_holders_are_waited_for`]: a lock held in-process and by a Python
//!   `fcntl.lockf` holder: our writes wait for it (timestamps), past `QUBES_LOCK_TIMEOUT_MS`
//!   they fail with the clear busy exception and change nothing; readers never wait.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qubes_admin::events::{self, Event};
use support::{check_exception_frame, Sandbox};

const EVENTD: &str = env!("CARGO_BIN_EXE_qubes-admin-eventd");

/// The suites measure waits and throughput: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Seconds since the epoch (comparable with Python's `time.time()`).
fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A well-formed reply: `0\0<body without NUL>` or `2\0<Type>\0\0<message>\0`.
fn check_reply(b: &[u8]) -> Result<(), String> {
    match b.strip_prefix(b"0\0") {
        Some(body) if body.contains(&0) => Err("NUL inside an OK body".into()),
        Some(_) => Ok(()),
        None => check_exception_frame(b),
    }
}

fn show(b: &[u8]) -> String {
    support::escape(b)
}

/// One private system (gen10 fixture) and a way to call it.
struct Sys {
    sb: Sandbox,
}

impl Sys {
    fn new() -> Sys {
        Sys {
            sb: Sandbox::new("gen10"),
        }
    }

    /// One exec of `qubes-admin-call --socket-request` (killed after `support::CALL_TIMEOUT`).
    /// Panics unless the process exits 0 with a well-formed reply.
    fn call_t(&self, req: &[u8], lock_timeout_ms: u64) -> Vec<u8> {
        let mut c = self.sb.command();
        c.arg("--socket-request")
            .env("QUBES_LOCK_TIMEOUT_MS", lock_timeout_ms.to_string());
        let out = support::run(c, req);
        assert!(
            out.status.success(),
            "{} exited with {} (killed after {:?}?) for {}; stderr {}",
            support::bin(),
            out.status,
            support::CALL_TIMEOUT,
            show(req),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Err(e) = check_reply(&out.stdout) {
            panic!(
                "malformed reply ({e}) to {}: {}",
                show(req),
                show(&out.stdout)
            );
        }
        out.stdout
    }

    fn call(&self, req: &[u8]) -> Vec<u8> {
        self.call_t(req, 60_000)
    }

    fn req(method_arg: &str, dest: &str, payload: &str) -> Vec<u8> {
        support::frame_request(method_arg, "dom0", dest, payload.as_bytes())
    }

    fn ok(&self, method_arg: &str, dest: &str, payload: &str) -> String {
        let r = self.call(&Self::req(method_arg, dest, payload));
        match r.strip_prefix(b"0\0") {
            Some(body) => String::from_utf8(body.to_vec()).unwrap(),
            None => panic!("{method_arg} {dest}: {}", show(&r)),
        }
    }

    fn events(&self) -> Vec<(u64, Event)> {
        events::read_after(&self.sb.run_dir(), 0).unwrap()
    }

    /// Starts `qubes-admin-eventd` on the sandbox's run dir (runtime state for vm.List and
    /// CurrentState without the per-call `--once` fallback). `None` (with a note) if it does
    /// not come up: calls then use the fallback, which is slower but correct.
    fn start_helper(&self) -> Option<Helper> {
        let child = Command::new(EVENTD)
            .env_clear()
            .env("QUBES_RUN_DIR", self.sb.run_dir())
            .env("QUBES_LIBVIRT_URI", self.sb.libvirt_uri())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let helper = Helper(child);
        let sock = self.sb.run_dir().join("qubes-admin/eventd.sock");
        let t = Instant::now();
        while !sock.exists() {
            if t.elapsed() > Duration::from_secs(10) {
                eprintln!("note: qubes-admin-eventd did not open its socket; using the fallback");
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(helper)
    }

    /// Files next to qubes.xml that are not qubes.xml: our `qubes.xml~*` temp files, Python's
    /// `qubes.xml<random>` ones. Plus notes temp files under the base dir.
    fn leftovers(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.sb.dir.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("qubes.xml") && n != "qubes.xml"
            })
            .map(|e| e.path())
            .collect();
        for sub in ["appvms", "vm-templates"] {
            let Ok(rd) = std::fs::read_dir(self.sb.base_dir().join(sub)) else {
                continue;
            };
            for vm in rd.flatten() {
                for f in std::fs::read_dir(vm.path()).unwrap().flatten() {
                    if f.file_name() != "notes.txt" {
                        v.push(f.path());
                    }
                }
            }
        }
        v
    }
}

/// The helper process; killed when dropped.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ------------------------------------------------------------------------------------------
// 8 writers × 200 writes

const WRITERS: usize = 8;
const WRITES: usize = 200;

#[test]
fn eight_writers_lose_no_update() {
    let _g = serial();
    let sys = Arc::new(Sys::new());
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let sys = Arc::clone(&sys);
            std::thread::spawn(move || {
                let vm = format!("vm{:04}", w);
                for k in 0..WRITES {
                    let req = match k % 3 {
                        0 => format!("admin.vm.feature.Set+w{w}-f{k} dom0 name {vm}\0v{k}"),
                        1 => format!("admin.vm.tag.Set+w{w}-t{k} dom0 name vm0009\0"),
                        _ => format!("admin.vm.property.Set+memory dom0 name {vm}\0{}", 500 + k),
                    };
                    let reply = sys.call(req.as_bytes());
                    assert_eq!(reply, b"0\0", "writer {w} write {k}: {}", show(&reply));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Every feature and tag is there, every writer's last memory value stuck.
    for w in 0..WRITERS {
        let vm = format!("vm{:04}", w);
        let features = sys.ok("admin.vm.feature.List", &vm, "");
        let features: BTreeSet<&str> = features.lines().collect();
        for k in (0..WRITES).filter(|k| k % 3 == 0) {
            assert!(
                features.contains(format!("w{w}-f{k}").as_str()),
                "lost feature w{w}-f{k}"
            );
            let v = sys.ok(&format!("admin.vm.feature.Get+w{w}-f{k}"), &vm, "");
            assert_eq!(v, format!("v{k}"));
        }
        let last = (0..WRITES).filter(|k| k % 3 == 2).max().unwrap();
        let mem = sys.ok("admin.vm.property.Get+memory", &vm, "");
        assert_eq!(mem, format!("default=False type=int {}", 500 + last));
    }
    let tags = sys.ok("admin.vm.tag.List", "vm0009", "");
    let tags: BTreeSet<&str> = tags.lines().collect();
    for w in 0..WRITERS {
        for k in (0..WRITES).filter(|k| k % 3 == 1) {
            assert!(
                tags.contains(format!("w{w}-t{k}").as_str()),
                "lost tag w{w}-t{k}"
            );
        }
    }
    // No temp files left behind, the file still parses.
    let leftovers = sys.leftovers();
    assert!(leftovers.is_empty(), "stale temp files: {leftovers:?}");
    qubes_admin::store::Document::parse(std::fs::read(sys.sb.xml()).unwrap()).unwrap();
    // Event log: gap-free, strictly increasing sequence numbers.
    let events = sys.events();
    assert!(!events.is_empty());
    for (i, (seq, _)) in events.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "sequence gap at record {i}");
    }
    let tag_adds = events
        .iter()
        .filter(|(_, e)| e.name.starts_with("domain-tag-add:w"))
        .count();
    assert_eq!(
        tag_adds,
        WRITERS * (0..WRITES).filter(|k| k % 3 == 1).count()
    );
    // 2 events per feature and memory write, 1 per new tag.
    assert_eq!(events.len(), WRITERS * (67 * 2 + 67 + 66 * 2));
}

// ------------------------------------------------------------------------------------------
// The mixed workload

/// VMs whose properties, notes and some features/tags are owned by writers.
const OWNED_VMS: usize = 9;
/// The VM every writer also puts features and tags on (read-modify-write on one section).
const HOT_VM: &str = "vm0009";
const VM_PROPS: [&str; 4] = ["memory", "vcpus", "qrexec_timeout", "shutdown_timeout"];
const GLOBAL_PROPS: [&str; 2] = ["stats_interval", "check_updates_vm"];
const FEATURES_PER_WRITER: usize = 4;
/// A feature of [`HOT_VM`] every writer sets (see [`Writer::shared_write`]).
const SHARED: &str = "shared";
const TAGS_PER_WRITER: usize = 4;
const LABELS_PER_WRITER: usize = 3;

fn vm_name(i: usize) -> String {
    format!("vm{i:04}")
}

/// xorshift64*: deterministic per writer, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A property one writer owns (on a VM, or global when `vm` is `None`).
#[derive(Debug, Clone)]
struct PropSlot {
    vm: Option<String>,
    name: &'static str,
    ty: &'static str,
    cur: String,
    default: String,
    explicit: bool,
}

impl PropSlot {
    fn subject(&self) -> &str {
        self.vm.as_deref().unwrap_or("")
    }
    fn dest(&self) -> &str {
        self.vm.as_deref().unwrap_or("dom0")
    }
    fn prefix(&self) -> &'static str {
        if self.vm.is_some() {
            "admin.vm.property"
        } else {
            "admin.property"
        }
    }
    fn get_reply(&self) -> String {
        let d = if self.explicit { "False" } else { "True" };
        format!("default={d} type={} {}", self.ty, self.cur)
    }
    fn value_for(&self, n: u64) -> String {
        match self.name {
            "memory" => (300 + n % 3000).to_string(),
            "vcpus" => (1 + n % 8).to_string(),
            "check_updates_vm" => if n.is_multiple_of(2) { "False" } else { "True" }.to_string(),
            "stats_interval" => (1 + n % 600).to_string(),
            _ => (5 + n % 1000).to_string(),
        }
    }
}

fn kw(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[derive(Default, Clone)]
struct MethodStats {
    calls: u64,
    ok: u64,
    exceptions: u64,
    total: Duration,
    max: Duration,
}

/// One write that fired events: when it was issued and answered, and how many events.
#[derive(Clone, Copy)]
struct OpRec {
    start: Instant,
    end: Instant,
    events: usize,
}

/// A writer process's model of the keys it owns, and what it saw.
struct Writer {
    id: usize,
    rng: Rng,
    own_vm: String,
    props: Vec<PropSlot>,
    notes: Vec<(String, Option<String>)>,
    /// (vm, feature) → value.
    features: BTreeMap<(String, String), Option<String>>,
    /// (vm, tag) → present.
    tags: BTreeMap<(String, String), bool>,
    /// label → colour.
    labels: BTreeMap<String, Option<String>>,
    /// Every event this writer's successful calls must have logged, in issue order, with the
    /// index of the op (in `ops`) that fired it.
    expected: Vec<(usize, Event)>,
    ops: Vec<OpRec>,
    stats: HashMap<&'static str, MethodStats>,
    read_lat: Vec<Duration>,
    write_lat: Vec<Duration>,
    counter: u64,
}

impl Writer {
    fn new(id: usize) -> Writer {
        let own_vm = vm_name(id % OWNED_VMS);
        let mut features = BTreeMap::new();
        for j in 0..FEATURES_PER_WRITER {
            let vm = if j % 2 == 0 {
                HOT_VM.into()
            } else {
                own_vm.clone()
            };
            features.insert((vm, format!("cw{id}-f{j}")), None);
        }
        let mut tags = BTreeMap::new();
        for j in 0..TAGS_PER_WRITER {
            let vm = if j % 2 == 0 {
                HOT_VM.into()
            } else {
                own_vm.clone()
            };
            tags.insert((vm, format!("cw{id}-t{j}")), false);
        }
        let labels = (0..LABELS_PER_WRITER)
            .map(|j| (format!("cw{id}-l{j}"), None))
            .collect();
        Writer {
            id,
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) * 0x1234_5678_9abc)),
            own_vm,
            props: Vec::new(),
            notes: Vec::new(),
            features,
            tags,
            labels,
            expected: Vec::new(),
            ops: Vec::new(),
            stats: HashMap::new(),
            read_lat: Vec::new(),
            write_lat: Vec::new(),
            counter: 0,
        }
    }

    /// Runs one call, records its latency, checks it is well-formed (in `Sys::call_t`).
    fn call(
        &mut self,
        sys: &Sys,
        method: &'static str,
        arg: &str,
        dest: &str,
        payload: &str,
        write: bool,
    ) -> (Vec<u8>, Instant, Instant) {
        let req = Sys::req(&format!("{method}+{arg}"), dest, payload);
        let start = Instant::now();
        let reply = sys.call_t(&req, MIXED_LOCK_TIMEOUT_MS);
        let end = Instant::now();
        let d = end - start;
        let s = self.stats.entry(method).or_default();
        s.calls += 1;
        s.total += d;
        s.max = s.max.max(d);
        if reply.starts_with(b"0\0") {
            s.ok += 1;
        } else {
            s.exceptions += 1;
        }
        if write {
            self.write_lat.push(d);
        } else {
            self.read_lat.push(d);
        }
        assert!(
            !reply.starts_with(b"2\0QubesException\0\0qubes.xml is busy"),
            "writer {}: {method}+{arg} {dest} waited more than {MIXED_LOCK_TIMEOUT_MS} ms for \
             the lock (deadlock or starvation): {}",
            self.id,
            show(&reply)
        );
        (reply, start, end)
    }

    /// A write whose reply and events are predicted exactly.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        sys: &Sys,
        method: &'static str,
        arg: &str,
        dest: &str,
        payload: &str,
        want: &[u8],
        events: Vec<Event>,
    ) {
        let (reply, start, end) = self.call(sys, method, arg, dest, payload, true);
        assert_eq!(
            show(&reply),
            show(want),
            "writer {}: {method}+{arg} {dest} {payload:?}",
            self.id
        );
        if !events.is_empty() {
            let op = self.ops.len();
            self.ops.push(OpRec {
                start,
                end,
                events: events.len(),
            });
            self.expected.extend(events.into_iter().map(|e| (op, e)));
        }
    }

    fn read_expect(&mut self, sys: &Sys, method: &'static str, arg: &str, dest: &str, want: &[u8]) {
        let (reply, _, _) = self.call(sys, method, arg, dest, "", false);
        assert_eq!(
            show(&reply),
            show(want),
            "writer {}: {method}+{arg} {dest} does not read its own last write",
            self.id
        );
    }

    fn read_ok(&mut self, sys: &Sys, method: &'static str, arg: &str, dest: &str) -> String {
        let (reply, _, _) = self.call(sys, method, arg, dest, "", false);
        match reply.strip_prefix(b"0\0") {
            Some(b) => String::from_utf8(b.to_vec()).unwrap(),
            None => panic!(
                "writer {}: {method}+{arg} {dest}: {}",
                self.id,
                show(&reply)
            ),
        }
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.rng.below(v.len())]
    }

    fn step(&mut self, sys: &Sys) {
        self.counter += 1;
        if self.rng.below(100) < 45 {
            self.read_step(sys);
            return;
        }
        let mut kinds = vec![(0, 8), (1, 25), (2, 20), (3, 10)];
        if !self.props.is_empty() {
            kinds.push((4, 30));
        }
        if !self.notes.is_empty() {
            kinds.push((5, 10));
        }
        let total: usize = kinds.iter().map(|k| k.1).sum();
        let mut r = self.rng.below(total);
        let kind = kinds
            .iter()
            .find(|k| {
                if r < k.1 {
                    true
                } else {
                    r -= k.1;
                    false
                }
            })
            .unwrap()
            .0;
        match kind {
            0 => self.shared_write(sys),
            1 => self.feature_write(sys),
            2 => self.tag_write(sys),
            3 => self.label_write(sys),
            4 => self.prop_write(sys),
            _ => self.notes_write(sys),
        }
    }

    fn prop_write(&mut self, sys: &Sys) {
        let i = self.rng.below(self.props.len());
        let p = self.props[i].clone();
        let subj = p.subject();
        if self.rng.below(4) == 0 {
            let kws = kw(&[("name", p.name), ("oldvalue", &p.cur)]);
            let evs = ["pre-reset", "pre-del", "reset", "del"]
                .iter()
                .map(|e| Event::new(subj, format!("property-{e}:{}", p.name), kws.clone()))
                .collect();
            let m = if p.vm.is_some() {
                "admin.vm.property.Reset"
            } else {
                "admin.property.Reset"
            };
            self.write(sys, m, p.name, p.dest(), "", b"0\0", evs);
            let q = &mut self.props[i];
            q.cur = q.default.clone();
            q.explicit = false;
        } else {
            let v = p.value_for(self.counter);
            let kws = kw(&[("name", p.name), ("newvalue", &v), ("oldvalue", &p.cur)]);
            let evs = vec![
                Event::new(subj, format!("property-pre-set:{}", p.name), kws.clone()),
                Event::new(subj, format!("property-set:{}", p.name), kws),
            ];
            let m = if p.vm.is_some() {
                "admin.vm.property.Set"
            } else {
                "admin.property.Set"
            };
            self.write(sys, m, p.name, p.dest(), &v, b"0\0", evs);
            let q = &mut self.props[i];
            q.cur = v;
            q.explicit = true;
        }
    }

    /// Feature `shared` of the hot VM, written by every writer: its old value is not
    /// predictable, so the check is the chain in the log (each event's `oldvalue` is the value
    /// the previous one set: log order is commit order).
    fn shared_write(&mut self, sys: &Sys) {
        let v = format!("w{}-{}", self.id, self.counter);
        let kws = kw(&[("feature", SHARED), ("value", &v)]);
        let evs = vec![
            Event::new(
                HOT_VM,
                format!("domain-feature-pre-set:{SHARED}"),
                kws.clone(),
            ),
            Event::new(HOT_VM, format!("domain-feature-set:{SHARED}"), kws),
        ];
        self.write(sys, "admin.vm.feature.Set", SHARED, HOT_VM, &v, b"0\0", evs);
    }

    fn feature_write(&mut self, sys: &Sys) {
        let keys: Vec<_> = self.features.keys().cloned().collect();
        let (vm, name) = self.pick(&keys).clone();
        let cur = self.features[&(vm.clone(), name.clone())].clone();
        // Remove a present feature 1 in 3 times; an absent one (the error path) 1 in 10.
        let remove = match cur {
            Some(_) => self.rng.below(3) == 0,
            None => self.rng.below(10) == 0,
        };
        if remove {
            match cur {
                Some(_) => {
                    let kws = kw(&[("feature", &name)]);
                    let evs = vec![
                        Event::new(
                            &vm,
                            format!("domain-feature-pre-delete:{name}"),
                            kws.clone(),
                        ),
                        Event::new(&vm, format!("domain-feature-delete:{name}"), kws),
                    ];
                    self.write(sys, "admin.vm.feature.Remove", &name, &vm, "", b"0\0", evs);
                }
                None => {
                    let want = format!(
                        "2\0QubesFeatureNotFoundError\0\0Feature not set for domain {vm}: {name}\0"
                    );
                    let want = want.into_bytes();
                    self.write(
                        sys,
                        "admin.vm.feature.Remove",
                        &name,
                        &vm,
                        "",
                        &want,
                        vec![],
                    );
                }
            }
            self.features.insert((vm, name), None);
        } else {
            // Characters that need escaping in XML, and in attributes.
            let v = format!("v{} <&>\"' w{}", self.counter, self.id);
            let mut kws = kw(&[("feature", &name), ("value", &v)]);
            if let Some(o) = &cur {
                kws.push(("oldvalue".into(), o.clone()));
            }
            let evs = vec![
                Event::new(&vm, format!("domain-feature-pre-set:{name}"), kws.clone()),
                Event::new(&vm, format!("domain-feature-set:{name}"), kws),
            ];
            self.write(sys, "admin.vm.feature.Set", &name, &vm, &v, b"0\0", evs);
            self.features.insert((vm, name), Some(v));
        }
    }

    fn tag_write(&mut self, sys: &Sys) {
        let keys: Vec<_> = self.tags.keys().cloned().collect();
        let (vm, name) = self.pick(&keys).clone();
        let present = self.tags[&(vm.clone(), name.clone())];
        // Mostly toggle; sometimes repeat (Set of a present tag: no event; Remove of an absent
        // one: QubesTagNotFoundError).
        let set = if self.rng.below(5) == 0 {
            present
        } else {
            !present
        };
        let ev = |what: &str| {
            Event::new(
                &vm,
                format!("domain-tag-{what}:{name}"),
                kw(&[("tag", &name)]),
            )
        };
        if set {
            let evs = if present { vec![] } else { vec![ev("add")] };
            self.write(sys, "admin.vm.tag.Set", &name, &vm, "", b"0\0", evs);
        } else if present {
            self.write(
                sys,
                "admin.vm.tag.Remove",
                &name,
                &vm,
                "",
                b"0\0",
                vec![ev("delete")],
            );
        } else {
            let want = format!("2\0QubesTagNotFoundError\0\0Tag not set for domain {vm}: {name}\0");
            self.write(
                sys,
                "admin.vm.tag.Remove",
                &name,
                &vm,
                "",
                want.as_bytes(),
                vec![],
            );
        }
        self.tags.insert((vm, name), set);
    }

    fn label_write(&mut self, sys: &Sys) {
        let keys: Vec<_> = self.labels.keys().cloned().collect();
        let name = self.pick(&keys).clone();
        let cur = self.labels[&name].clone();
        let create = match cur {
            Some(_) => self.rng.below(6) == 0,
            None => self.rng.below(8) != 0,
        };
        if create {
            let color = format!("0x{:06x}", self.rng.next() & 0xff_ffff);
            match cur {
                None => {
                    self.write(
                        sys,
                        "admin.label.Create",
                        &name,
                        "dom0",
                        &color,
                        b"0\0",
                        vec![],
                    );
                    self.labels.insert(name, Some(color));
                }
                Some(_) => {
                    let want =
                        format!("2\0QubesLabelInUseError\0\0Label is still in use: '{name}'\0");
                    self.write(
                        sys,
                        "admin.label.Create",
                        &name,
                        "dom0",
                        &color,
                        want.as_bytes(),
                        vec![],
                    );
                }
            }
        } else {
            let want = match cur {
                Some(_) => b"0\0".to_vec(),
                None => format!("2\0QubesLabelNotFoundError\0\0Label does not exist: {name}\0")
                    .into_bytes(),
            };
            self.write(sys, "admin.label.Remove", &name, "dom0", "", &want, vec![]);
            self.labels.insert(name, None);
        }
    }

    fn notes_write(&mut self, sys: &Sys) {
        let i = self.rng.below(self.notes.len());
        let vm = self.notes[i].0.clone();
        let text = format!(
            "notes of {vm} by writer {} #{}\n<&> line two\n",
            self.id, self.counter
        );
        self.write(sys, "admin.vm.notes.Set", "", &vm, &text, b"0\0", vec![]);
        self.notes[i].1 = Some(text);
    }

    fn read_step(&mut self, sys: &Sys) {
        match self.rng.below(13) {
            0 => {
                let l = self.read_ok(sys, "admin.vm.List", "", "dom0");
                assert!(
                    l.starts_with("dom0 class=AdminVM state=Running ")
                        && l.contains(&format!("\n{HOT_VM} class=AppVM state=Halted ")),
                    "vm.List: {l:?}"
                );
            }
            1 => {
                let vm = vm_name(self.rng.below(OWNED_VMS + 1));
                let s = self.read_ok(sys, "admin.vm.CurrentState", "", &vm);
                assert!(
                    s.starts_with("mem=") && s.contains(" power_state=Halted"),
                    "CurrentState {vm}: {s:?}"
                );
            }
            2 if !self.props.is_empty() => {
                let p = self.pick(&self.props.clone()).clone();
                let want = format!("0\0{}", p.get_reply());
                let m = if p.vm.is_some() {
                    "admin.vm.property.Get"
                } else {
                    "admin.property.Get"
                };
                self.read_expect(sys, m, p.name, p.dest(), want.as_bytes());
            }
            2 | 3 => {
                let vm = vm_name(self.rng.below(OWNED_VMS + 1));
                let all = self.read_ok(sys, "admin.vm.property.GetAll", "", &vm);
                assert!(
                    all.contains(&format!("name default=True type=str {vm}\n"))
                        || all.contains(&format!(" {vm}\n")),
                    "GetAll {vm}: {all:?}"
                );
            }
            4 => {
                let g = self.read_ok(sys, "admin.property.Get", "stats_interval", "dom0");
                assert!(g.contains(" type=int "), "stats_interval: {g:?}");
                self.read_ok(sys, "admin.property.GetAll", "", "dom0");
            }
            5 | 6 => {
                // Own features on one VM: exactly the model's set, and one value.
                let vm = if self.rng.below(2) == 0 {
                    HOT_VM.to_string()
                } else {
                    self.own_vm.clone()
                };
                let list = self.read_ok(sys, "admin.vm.feature.List", "", &vm);
                let prefix = format!("cw{}-", self.id);
                let got: BTreeSet<&str> = list.lines().filter(|l| l.starts_with(&prefix)).collect();
                let want: BTreeSet<&str> = self
                    .features
                    .iter()
                    .filter(|((v, _), val)| *v == vm && val.is_some())
                    .map(|((_, n), _)| n.as_str())
                    .collect();
                assert_eq!(got, want, "writer {}: feature.List {vm}", self.id);
                let keys: Vec<_> = self.features.keys().cloned().collect();
                let (vm, name) = self.pick(&keys).clone();
                let want = match &self.features[&(vm.clone(), name.clone())] {
                    Some(v) => format!("0\0{v}"),
                    None => format!(
                        "2\0QubesFeatureNotFoundError\0\0Feature not set for domain {vm}: {name}\0"
                    ),
                };
                self.read_expect(sys, "admin.vm.feature.Get", &name, &vm, want.as_bytes());
            }
            7 | 8 => {
                let vm = if self.rng.below(2) == 0 {
                    HOT_VM.to_string()
                } else {
                    self.own_vm.clone()
                };
                let list = self.read_ok(sys, "admin.vm.tag.List", "", &vm);
                let prefix = format!("cw{}-", self.id);
                let got: BTreeSet<&str> = list.lines().filter(|l| l.starts_with(&prefix)).collect();
                let want: BTreeSet<&str> = self
                    .tags
                    .iter()
                    .filter(|((v, _), p)| *v == vm && **p)
                    .map(|((_, n), _)| n.as_str())
                    .collect();
                assert_eq!(got, want, "writer {}: tag.List {vm}", self.id);
                let keys: Vec<_> = self.tags.keys().cloned().collect();
                let (vm, name) = self.pick(&keys).clone();
                let want: &[u8] = if self.tags[&(vm.clone(), name.clone())] {
                    b"0\x001"
                } else {
                    b"0\x000"
                };
                self.read_expect(sys, "admin.vm.tag.Get", &name, &vm, want);
            }
            9 | 10 => {
                let list = self.read_ok(sys, "admin.label.List", "", "dom0");
                let prefix = format!("cw{}-", self.id);
                let got: BTreeSet<&str> = list.lines().filter(|l| l.starts_with(&prefix)).collect();
                let want: BTreeSet<&str> = self
                    .labels
                    .iter()
                    .filter(|(_, c)| c.is_some())
                    .map(|(n, _)| n.as_str())
                    .collect();
                assert_eq!(got, want, "writer {}: label.List", self.id);
                assert!(list.starts_with("red\n"), "label.List: {list:?}");
                let keys: Vec<_> = self.labels.keys().cloned().collect();
                let name = self.pick(&keys).clone();
                let want = match &self.labels[&name] {
                    Some(c) => format!("0\0{c}"),
                    None => format!("2\0QubesLabelNotFoundError\0\0Label does not exist: {name}\0"),
                };
                self.read_expect(sys, "admin.label.Get", &name, "dom0", want.as_bytes());
            }
            _ if !self.notes.is_empty() => {
                let (vm, text) = self.pick(&self.notes.clone()).clone();
                let want = format!("0\0{}", text.unwrap_or_default());
                self.read_expect(sys, "admin.vm.notes.Get", "", &vm, want.as_bytes());
            }
            _ => {
                let vm = vm_name(self.rng.below(OWNED_VMS + 1));
                self.read_ok(sys, "admin.vm.notes.Get", "", &vm);
            }
        }
    }
}

/// Longer than any honest wait in the mixed run, shorter than the per-call kill timeout: a
/// stuck lock shows up as the busy exception, not as a killed call.
const MIXED_LOCK_TIMEOUT_MS: u64 = 15_000;

/// `0\0default=True type=int 400` → (explicit, type, value).
fn parse_get(s: &str) -> (bool, String, String) {
    let rest = s
        .strip_prefix("default=")
        .unwrap_or_else(|| panic!("property.Get reply {s:?}"));
    let (def, rest) = rest.split_once(" type=").unwrap();
    let (ty, val) = rest.split_once(' ').unwrap();
    (def == "False", ty.to_string(), val.to_string())
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn python() -> Option<PathBuf> {
    for p in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(p)
            .args(["-c", "import fcntl, tempfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(PathBuf::from(p));
        }
    }
    None
}

/// A Python writer that locks qubes.xml like qubes-core-admin (`app.py`: `os.open` O_RDWR,
/// `fcntl.lockf(LOCK_EX)`, re-check that the locked inode is still the file at the path) and
/// saves like it (`NamedTemporaryFile(prefix=<path>)`, write, chmod 0660, rename over the
/// path, then close the locked descriptor). It reads through the locked descriptor: closing any
/// other descriptor of the file would drop a POSIX lock.
///
/// * `hold PATH SECONDS REWRITE`: lock, print `locked <time>`, sleep, if REWRITE replace
///   feature `py-marker`'s value `before` by `after` and save, print `release <time>`, unlock.
/// * `loop PATH SECONDS MAXHOLD`: for SECONDS, lock, check that feature `py-counter` still has
///   the value this process last wrote (else exit 3: someone lost our update), hold up to
///   MAXHOLD seconds, save it + 1, unlock, pause; print `n=<saves> maxwait=<s> totalwait=<s>`.
const PY_WRITER: &str = r#"
import fcntl, os, random, re, sys, tempfile, time

def lock(path):
    while True:
        fd = os.open(path, os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        a, b = os.fstat(fd), os.stat(path)
        if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
            return fd
        os.close(fd)

def read_fd(fd):
    chunks = []
    while True:
        c = os.read(fd, 1 << 20)
        if not c:
            return b"".join(chunks)
        chunks.append(c)

def save(path, data):
    fh = tempfile.NamedTemporaryFile(prefix=path, delete=False)
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())
    os.chmod(fh.name, 0o660)
    os.rename(fh.name, path)
    return fh

mode, path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
if mode == "hold":
    fd = lock(path)
    print("locked %.6f" % time.time(), flush=True)
    time.sleep(seconds)
    fh = None
    if sys.argv[4] == "1":
        data = read_fd(fd)
        old = b'<feature name="py-marker">before</feature>'
        if old not in data:
            print("py-marker not found", file=sys.stderr)
            sys.exit(3)
        fh = save(path, data.replace(old, b'<feature name="py-marker">after</feature>'))
    print("release %.6f" % time.time(), flush=True)
    os.close(fd)
    if fh:
        fh.close()
else:
    maxhold = float(sys.argv[4])
    pat = re.compile(rb'<feature name="py-counter">(\d+)</feature>')
    end = time.time() + seconds
    n, maxwait, totalwait = 0, 0.0, 0.0
    while time.time() < end:
        t0 = time.time()
        fd = lock(path)
        w = time.time() - t0
        maxwait, totalwait = max(maxwait, w), totalwait + w
        data = read_fd(fd)
        m = pat.search(data)
        if not m or int(m.group(1)) != n:
            print("lost update: expected py-counter %d, found %r" % (n, m and m.group(0)), file=sys.stderr)
            sys.exit(3)
        time.sleep(random.uniform(0, maxhold))
        fh = save(path, data[:m.start(1)] + str(n + 1).encode() + data[m.end(1):])
        os.close(fd)
        fh.close()
        n += 1
        time.sleep(random.uniform(0, 0.05))
    print("n=%d maxwait=%.3f totalwait=%.3f" % (n, maxwait, totalwait), flush=True)
"#;

fn py_script(sys: &Sys) -> PathBuf {
    let p = sys.sb.dir.path().join("lockf_writer.py");
    std::fs::write(&p, PY_WRITER).unwrap();
    p
}

#[test]
fn mixed_workload() {
    let _g = serial();
    let seconds = env_num("CONC_SECONDS", 20);
    let procs = usize::try_from(env_num("CONC_PROCS", 8)).unwrap().max(1);
    let sys = Arc::new(Sys::new());
    let helper = sys.start_helper();

    // Ownership: every key has exactly one writer. Property slots (VM × property, then the
    // global ones) and notes go round-robin.
    let mut writers: Vec<Writer> = (0..procs).map(Writer::new).collect();
    let mut owner: HashMap<(String, String), usize> = HashMap::new();
    let mut slot = 0usize;
    let mut slots: Vec<(Option<String>, &'static str)> = Vec::new();
    for name in VM_PROPS {
        for i in 0..OWNED_VMS {
            slots.push((Some(vm_name(i)), name));
        }
    }
    for name in GLOBAL_PROPS {
        slots.push((None, name));
    }
    for (vm, name) in slots {
        let w = slot % procs;
        slot += 1;
        let (prefix, dest) = match &vm {
            Some(v) => ("admin.vm.property", v.as_str()),
            None => ("admin.property", "dom0"),
        };
        let (explicit, ty, cur) = parse_get(&sys.ok(&format!("{prefix}.Get+{name}"), dest, ""));
        let default = sys.ok(&format!("{prefix}.GetDefault+{name}"), dest, "");
        let default = default
            .strip_prefix(&format!("type={ty} "))
            .unwrap_or_else(|| panic!("GetDefault {name}: {default:?}"))
            .to_string();
        let ty: &'static str = if ty == "int" { "int" } else { "bool" };
        owner.insert((vm.clone().unwrap_or_default(), name.to_string()), w);
        writers[w].props.push(PropSlot {
            vm,
            name,
            ty,
            cur,
            default,
            explicit,
        });
    }
    for i in 0..=OWNED_VMS {
        let vm = vm_name(i);
        let cur = sys.ok("admin.vm.notes.Get", &vm, "");
        writers[i % procs]
            .notes
            .push((vm, (!cur.is_empty()).then_some(cur)));
    }

    // The Python writer's counter, then the baseline of the log.
    sys.ok("admin.vm.feature.Set+py-counter", HOT_VM, "0");
    let base = sys.events().len();
    let py = python().map(|p| {
        let script = py_script(&sys);
        Command::new(p)
            .arg(script)
            .args([
                "loop",
                sys.sb.xml().to_str().unwrap(),
                &seconds.to_string(),
                "0.05",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    });
    if py.is_none() {
        eprintln!("note: no python3: the mixed run has no fcntl.lockf writer");
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let handles: Vec<_> = writers
        .into_iter()
        .map(|mut w| {
            let sys = Arc::clone(&sys);
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    w.step(&sys);
                }
                w
            })
        })
        .collect();
    let writers: Vec<Writer> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = started.elapsed();

    let py_result = py.map(|c| {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "python lockf writer failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    });

    // --- The event log: gap-free, and per writer exactly the predicted events in issue order.
    let events = sys.events();
    for (i, (seq, _)) in events.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "sequence gap at record {i}");
    }
    let mut per_writer: Vec<Vec<(u64, &Event)>> = vec![Vec::new(); procs];
    for (seq, e) in &events[base..] {
        let (_, key) = e
            .name
            .split_once(':')
            .unwrap_or_else(|| panic!("event {e:?}"));
        let w = if e.name.starts_with("property-") {
            owner.get(&(e.subject.clone(), key.to_string())).copied()
        } else if key == SHARED {
            let v = e.kwargs.iter().find(|(k, _)| k == "value").map(|(_, v)| v);
            v.and_then(|v| v.strip_prefix('w'))
                .and_then(|v| v.split_once('-'))
                .and_then(|(n, _)| n.parse::<usize>().ok())
                .filter(|w| *w < procs)
        } else {
            key.strip_prefix("cw")
                .and_then(|k| k.split_once('-'))
                .and_then(|(n, _)| n.parse::<usize>().ok())
                .filter(|w| *w < procs)
        };
        let w = w.unwrap_or_else(|| panic!("event #{seq} {e:?} was fired by no writer"));
        per_writer[w].push((*seq, e));
    }
    let mut op_seqs: Vec<(u64, u64, OpRec)> = Vec::new();
    for (w, got) in writers.iter().zip(&per_writer) {
        for (i, ((seq, e), (_, want))) in got.iter().zip(&w.expected).enumerate() {
            let mut e = (*e).clone();
            if e.name.ends_with(&format!(":{SHARED}")) {
                // Checked as a chain below.
                e.kwargs.retain(|(k, _)| k != "oldvalue");
            }
            assert_eq!(
                &e, want,
                "writer {}: event {i} of its calls (log #{seq}) differs",
                w.id
            );
        }
        assert_eq!(
            got.len(),
            w.expected.len(),
            "writer {}: {} events logged, {} expected",
            w.id,
            got.len(),
            w.expected.len()
        );
        let mut k = 0;
        for op in &w.ops {
            let seqs = &got[k..k + op.events];
            // One call's events are consecutive: appended in one write under the lock.
            for pair in seqs.windows(2) {
                assert_eq!(
                    pair[1].0,
                    pair[0].0 + 1,
                    "writer {}: a call's events interleaved",
                    w.id
                );
            }
            op_seqs.push((seqs[0].0, seqs[op.events - 1].0, *op));
            k += op.events;
        }
    }
    // The shared feature's events form one chain: pre-set and set of one call next to each
    // other, and each call's oldvalue is the previous call's value.
    let mut last: Option<String> = None;
    let mut shared_sets = 0;
    let shared: Vec<&(u64, Event)> = events[base..]
        .iter()
        .filter(|(_, e)| e.name.ends_with(&format!(":{SHARED}")))
        .collect();
    for pair in shared.chunks(2) {
        let [(s1, pre), (s2, set)] = pair else {
            panic!("odd number of events for feature {SHARED}");
        };
        assert!(
            pre.name.contains("pre-set") && set.name.contains("-set:") && s2 == &(s1 + 1),
            "feature {SHARED}: #{s1} {pre:?} / #{s2} {set:?}"
        );
        let val = |e: &Event, k: &str| {
            e.kwargs
                .iter()
                .find(|(kk, _)| kk == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(pre.kwargs, set.kwargs);
        assert_eq!(
            val(set, "oldvalue"),
            last,
            "feature {SHARED} at log #{s2}: the log's order is not the commit order \
             (or an update was lost)"
        );
        last = val(set, "value");
        shared_sets += 1;
    }

    // Log order is consistent with real time: a call answered before another was issued has
    // its events first.
    op_seqs.sort_by_key(|o| o.0);
    let mut latest_start: Option<(Instant, u64)> = None;
    for (first, _, op) in &op_seqs {
        if let Some((s, seq)) = latest_start {
            assert!(
                s <= op.end,
                "log #{first} was committed by a call answered before the call that logged \
                 #{seq} was issued"
            );
        }
        if latest_start.is_none_or(|(s, _)| op.start > s) {
            latest_start = Some((op.start, *first));
        }
    }

    // --- Final state: every writer's last value for each key, through calls and in the file.
    let doc = qubes_admin::store::Document::parse(std::fs::read(sys.sb.xml()).unwrap()).unwrap();
    let data = |vm: &str| doc.data(doc.domain_by_name(vm).unwrap()).unwrap();
    for w in &writers {
        for p in &w.props {
            let got = sys.ok(&format!("{}.Get+{}", p.prefix(), p.name), p.dest(), "");
            assert_eq!(got, p.get_reply(), "writer {}: lost update of {p:?}", w.id);
            let stored = match &p.vm {
                Some(vm) => data(vm).property(p.name).map(str::to_string),
                None => doc.global_property(p.name).map(str::to_string),
            };
            assert_eq!(
                stored,
                p.explicit.then(|| p.cur.clone()),
                "{p:?} in the file"
            );
        }
        for ((vm, name), v) in &w.features {
            assert_eq!(
                data(vm).feature(name),
                v.as_deref(),
                "writer {}: lost update of feature {name} of {vm}",
                w.id
            );
            if let Some(v) = v {
                assert_eq!(&sys.ok(&format!("admin.vm.feature.Get+{name}"), vm, ""), v);
            }
        }
        for ((vm, name), present) in &w.tags {
            assert_eq!(
                data(vm).has_tag(name),
                *present,
                "writer {}: lost update of tag {name} of {vm}",
                w.id
            );
        }
        for (name, color) in &w.labels {
            let stored = doc.labels().iter().find(|l| &l.name == name);
            assert_eq!(
                stored.map(|l| l.color.to_lowercase()),
                color.clone(),
                "writer {}: lost update of label {name}",
                w.id
            );
        }
        for (vm, text) in &w.notes {
            assert_eq!(
                sys.ok("admin.vm.notes.Get", vm, ""),
                text.clone().unwrap_or_default(),
                "writer {}: lost notes of {vm}",
                w.id
            );
        }
    }
    assert_eq!(
        data(HOT_VM).feature(SHARED).map(str::to_string),
        last,
        "feature {SHARED}: the last logged value is not the stored one"
    );
    if let Some(r) = &py_result {
        let n = r
            .strip_prefix("n=")
            .and_then(|r| r.split(' ').next())
            .unwrap();
        assert_eq!(
            data(HOT_VM).feature("py-counter"),
            Some(n),
            "the Python writer's last save was lost"
        );
    }
    let leftovers = sys.leftovers();
    assert!(leftovers.is_empty(), "stale temp files: {leftovers:?}");

    // --- Report.
    let mut stats: BTreeMap<&str, MethodStats> = BTreeMap::new();
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    for w in &writers {
        for (m, s) in &w.stats {
            let t = stats.entry(m).or_default();
            t.calls += s.calls;
            t.ok += s.ok;
            t.exceptions += s.exceptions;
            t.total += s.total;
            t.max = t.max.max(s.max);
        }
        reads.extend_from_slice(&w.read_lat);
        writes.extend_from_slice(&w.write_lat);
    }
    let calls: u64 = stats.values().map(|s| s.calls).sum();
    let exc: u64 = stats.values().map(|s| s.exceptions).sum();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut report = format!(
        "concurrency mixed_workload: {procs} procs, {:.1} s, helper {}: {calls} requests \
         ({:.0}/s), {} reads, {} writes, {} ok, {exc} exception replies (all predicted), \
         {} events (seq 1..{} gap-free), {shared_sets} sets of the shared key in one \
         oldvalue chain, 0 lost updates\n\
         latency ms: read p50 {:.1} p99 {:.1} max {:.1}; write p50 {:.1} p99 {:.1} max {:.1}\n",
        elapsed.as_secs_f64(),
        if helper.is_some() {
            "on"
        } else {
            "off (fallback)"
        },
        calls as f64 / elapsed.as_secs_f64(),
        reads.len(),
        writes.len(),
        calls - exc,
        events.len() - base,
        events.len(),
        ms(percentile(&mut reads, 0.5)),
        ms(percentile(&mut reads, 0.99)),
        ms(reads.last().copied().unwrap_or_default()),
        ms(percentile(&mut writes, 0.5)),
        ms(percentile(&mut writes, 0.99)),
        ms(writes.last().copied().unwrap_or_default()),
    );
    match &py_result {
        Some(r) => report.push_str(&format!("python lockf writer: {r} (s)\n")),
        None => report.push_str("python lockf writer: skipped (no python3)\n"),
    }
    for (m, s) in &stats {
        report.push_str(&format!(
            "  {m:<28} {:>6} calls {:>6} ok {:>5} exc  mean {:>6.1} ms  max {:>7.1} ms\n",
            s.calls,
            s.ok,
            s.exceptions,
            ms(s.total) / s.calls.max(1) as f64,
            ms(s.max)
        ));
    }
    eprint!("{report}");
    if let Some(p) = std::env::var_os("CONC_REPORT") {
        std::fs::write(p, &report).unwrap();
    }
    assert!(calls > 0 && !writes.is_empty());
}

// ------------------------------------------------------------------------------------------
// Foreign lock holders

/// Spawns the Python writer in `hold` mode and returns it with its `locked <time>` stamp.
fn py_hold(
    py: &Path,
    script: &Path,
    xml: &Path,
    secs: f64,
    rewrite: bool,
) -> (Child, f64, PyLines) {
    let mut c = Command::new(py)
        .arg(script)
        .args(["hold", xml.to_str().unwrap(), &secs.to_string()])
        .arg(if rewrite { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = PyLines::new(c.stdout.take().unwrap());
    let locked = lines.stamp("locked");
    (c, locked, lines)
}

/// The Python holder's stdout lines, read on a thread (so a stuck holder fails the test).
struct PyLines(std::sync::mpsc::Receiver<String>);

impl PyLines {
    fn new(out: std::process::ChildStdout) -> PyLines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        PyLines(rx)
    }
    fn stamp(&self, what: &str) -> f64 {
        let l = self
            .0
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("python holder: no '{what}' line: {e}"));
        l.strip_prefix(&format!("{what} "))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("python holder said {l:?}, expected '{what} <time>'"))
    }
}

#[test]
fn foreign_lock_holders_are_waited_for() {
    let _g = serial();
    let sys = Arc::new(Sys::new());
    sys.ok("admin.vm.feature.Set+py-marker", "vm0005", "before");
    let busy_prefix: &[u8] = b"2\0QubesException\0\0qubes.xml is busy";

    // 1. A lock held by another process of ours (here: this test, through the library).
    {
        let txn =
            qubes_admin::store::WriteTxn::begin(&sys.sb.xml(), Duration::from_secs(5)).unwrap();
        let before = std::fs::read(sys.sb.xml()).unwrap();
        let nev = sys.events().len();
        let t = Instant::now();
        let r = sys.call_t(&Sys::req("admin.vm.feature.Set+held", "vm0001", "x"), 200);
        let waited = t.elapsed();
        assert!(
            r.starts_with(busy_prefix),
            "expected busy, got {}",
            show(&r)
        );
        assert!(
            waited >= Duration::from_millis(200),
            "gave up after {waited:?}"
        );
        assert_eq!(
            std::fs::read(sys.sb.xml()).unwrap(),
            before,
            "a busy call changed qubes.xml"
        );
        assert_eq!(sys.events().len(), nev, "a busy call logged events");
        // Readers do not wait for writers.
        let t = Instant::now();
        sys.ok("admin.vm.feature.Get+py-marker", "vm0005", "");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a read waited for the lock"
        );
        // A write issued now completes once the lock is released.
        let sys2 = Arc::clone(&sys);
        let h = std::thread::spawn(move || {
            sys2.call_t(
                &Sys::req("admin.vm.feature.Set+held", "vm0001", "y"),
                10_000,
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        let released = Instant::now();
        drop(txn);
        let r = h.join().unwrap();
        assert_eq!(r, b"0\0");
        assert!(released.elapsed() < Duration::from_secs(5));
        assert_eq!(sys.ok("admin.vm.feature.Get+held", "vm0001", ""), "y");
    }

    // 2. A Python process holding fcntl.lockf, as qubesd and the core-admin tools do.
    let Some(py) = python() else {
        eprintln!("SKIPPED: the fcntl.lockf part needs python3 (not found)");
        return;
    };
    let script = py_script(&sys);
    let hold = 1.5;

    // 2a. Writes issued while Python holds the lock finish only after it released it, and
    //     see what it saved (no lost update in either direction).
    let (mut c, locked, lines) = py_hold(&py, &script, &sys.sb.xml(), hold, true);
    let writes = [
        ("admin.vm.feature.Set+rust-during", "vm0001", "1"),
        ("admin.vm.tag.Set+rust-during", "vm0002", ""),
        ("admin.vm.property.Set+memory", "vm0003", "777"),
    ];
    let hs: Vec<_> = writes
        .iter()
        .map(|&(m, d, p)| {
            let sys = Arc::clone(&sys);
            std::thread::spawn(move || {
                let start = wall();
                let r = sys.call_t(&Sys::req(m, d, p), 10_000);
                (start, wall(), r)
            })
        })
        .collect();
    let t = wall();
    sys.ok("admin.vm.property.Get+memory", "vm0003", "");
    let read_took = wall() - t;
    let release = lines.stamp("release");
    assert!(c.wait().unwrap().success());
    let mut lines_out = String::new();
    for (h, (m, d, _)) in hs.into_iter().zip(writes) {
        let (start, end, r) = h.join().unwrap();
        assert_eq!(r, b"0\0", "{m} {d}: {}", show(&r));
        assert!(
            start > locked && start < release,
            "{m} was not issued while Python held the lock ({locked} < {start} < {release})"
        );
        assert!(
            end > release,
            "{m} {d} completed at {end:.6}, before Python released the lock at {release:.6}"
        );
        lines_out.push_str(&format!(
            "  {m} {d}: issued +{:.3} s after Python locked, done +{:.3} s after it released\n",
            start - locked,
            end - release
        ));
    }
    assert!(
        read_took < hold / 2.0,
        "a read took {read_took:.3} s while Python held the lock: readers must not wait"
    );
    eprint!(
        "python lockf holder ({hold} s): read during the hold took {:.1} ms\n{lines_out}",
        read_took * 1000.0
    );
    assert_eq!(
        sys.ok("admin.vm.feature.Get+py-marker", "vm0005", ""),
        "after"
    );
    assert_eq!(
        sys.ok("admin.vm.feature.Get+rust-during", "vm0001", ""),
        "1"
    );
    assert_eq!(sys.ok("admin.vm.tag.Get+rust-during", "vm0002", ""), "1");
    assert_eq!(
        sys.ok("admin.vm.property.Get+memory", "vm0003", ""),
        "default=False type=int 777"
    );

    // 2b. Past QUBES_LOCK_TIMEOUT_MS: the clear busy exception, nothing changed, no event.
    let before = std::fs::read(sys.sb.xml()).unwrap();
    let nev = sys.events().len();
    let (mut c, _locked, lines) = py_hold(&py, &script, &sys.sb.xml(), hold, false);
    let t = Instant::now();
    let r = sys.call_t(&Sys::req("admin.vm.feature.Set+busy", "vm0001", "x"), 300);
    let waited = t.elapsed();
    let end = wall();
    let release = lines.stamp("release");
    assert!(c.wait().unwrap().success());
    assert!(
        r.starts_with(busy_prefix),
        "expected the busy exception, got {}",
        show(&r)
    );
    assert!(
        waited >= Duration::from_millis(300),
        "gave up after {waited:?}"
    );
    assert!(
        end < release,
        "the busy reply came after Python released the lock"
    );
    eprintln!(
        "busy with QUBES_LOCK_TIMEOUT_MS=300: after {:.0} ms: {}",
        waited.as_secs_f64() * 1000.0,
        show(&r)
    );
    assert_eq!(
        std::fs::read(sys.sb.xml()).unwrap(),
        before,
        "a busy call changed qubes.xml"
    );
    assert_eq!(sys.events().len(), nev, "a busy call logged events");
    // And once the lock is free, the same call succeeds.
    assert_eq!(
        sys.call_t(&Sys::req("admin.vm.feature.Set+busy", "vm0001", "x"), 300),
        b"0\0"
    );
    let leftovers = sys.leftovers();
    assert!(leftovers.is_empty(), "stale temp files: {leftovers:?}");
}

// ------------------------------------------------------------------------------------------
// A long-lived in-process reader (`System`) while other processes write

/// Regression test. `System` reuses its parsed qubes.xml while `(dev, ino, size, mtime)` are
/// unchanged. Writers replace the file by rename, which frees the old inode, and ext4 hands the
/// number out again at once: the file's versions alternate between two inodes. With
/// timestamps coarser than the time between two writes (kernels before multigrain timestamps
/// stamp files with a jiffy-resolution clock) a version written two commits later has the
/// same stamp as the cached one whenever its size is the same, and the reader kept answering
/// from the stale parse. Here the coarse clock is simulated by giving the new version the
/// cached one's mtime. Fixed by keeping the cached version's file open: its inode number
/// cannot be recycled while it is open, so a replaced file always has a different stamp.
#[test]
fn in_process_reader_sees_every_external_write() {
    use qubes_admin::wire::{RawRequest, Target};
    let _g = serial();
    let sys = Sys::new();
    let mut local = qubes_admin::System::open(qubes_admin::Config {
        xml_path: sys.sb.xml(),
        base_dir: sys.sb.base_dir(),
        libvirt_uri: sys.sb.libvirt_uri(),
        run_dir: sys.sb.run_dir(),
        policy_dir: sys.sb.policy_dir(),
        policy_compat_dir: sys.sb.policy_dir().join("compat"),
        lock_timeout: Duration::from_secs(10),
        dom0: qubes_admin::config::Dom0Config::for_uri(&sys.sb.libvirt_uri()),
        ..qubes_admin::Config::default()
    });
    let mut get = || {
        local.call(&RawRequest {
            method: b"admin.vm.property.Get".to_vec(),
            arg: b"memory".to_vec(),
            src: b"dom0".to_vec(),
            target: Target::Name(b"vm0001".to_vec()),
            payload: Vec::new(),
        })
    };
    let set = |v: u32| {
        let r = sys.call(&Sys::req(
            "admin.vm.property.Set+memory",
            "vm0001",
            &v.to_string(),
        ));
        assert_eq!(r, b"0\0");
    };
    set(2000);
    let mut same_stamp = 0;
    for i in 0..40 {
        let want = |v: u32| format!("0\0default=False type=int {v}").into_bytes();
        assert_eq!(show(&get()), show(&want(2000 + i)));
        let cached = qubes_admin::store::stamp(&sys.sb.xml()).unwrap();
        set(1000 + i);
        set(2000 + i + 1);
        // Same clock tick as the cached version.
        let mtime = UNIX_EPOCH + Duration::from_nanos(u64::try_from(cached.mtime_ns).unwrap());
        std::fs::File::options()
            .write(true)
            .open(sys.sb.xml())
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        if qubes_admin::store::stamp(&sys.sb.xml()).unwrap() == cached {
            same_stamp += 1;
        }
        assert_eq!(
            show(&get()),
            show(&want(2000 + i + 1)),
            "round {i}: the in-process reader answered from a stale parse (stamp recycled: {})",
            qubes_admin::store::stamp(&sys.sb.xml()).unwrap() == cached
        );
    }
    eprintln!("in-process reader: {same_stamp} of 40 new versions had the cached version's stamp");
}
