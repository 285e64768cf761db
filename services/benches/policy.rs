//! Policy benchmark (issue 10): the default Admin API policy tree (`policy/`, as it is installed
//! into `/etc/qubes/policy.d`, plus one administrator's file) loaded and evaluated in process,
//! and what the policy filter adds to one exec of `admin.vm.List` from a management qube that
//! may see every qube (each of the 105 qubes of the `gen100` fixture is one evaluation).
//! Writes its section of `BENCHMARKS.md`.
//!
//! Run: `cargo build --release && cargo bench -p qubes-admin-services --bench policy`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qubes_admin::policy::{self, DomainInfo, Request, Sources, SystemInfo};

const FIXTURE: &str = include_str!("../../tests/fixtures/gen100/qubes.xml");
const CAPTURE_BASE: &str = "/work/oracle-run/gen100/varlib";
/// What an administrator adds: a management qube that sees and manages the `managed` qubes,
/// and lists everything.
const ADMIN_POLICY: &str = "\
admin.vm.List * mgmt @adminvm allow target=dom0\n\
admin.vm.List * mgmt @anyvm allow target=dom0\n\
admin.vm.property.Get * mgmt @tag:managed allow target=dom0\n\
admin.vm.Start * mgmt @tag:managed allow target=dom0\n\
admin.vm.List * vm0003 @adminvm allow target=dom0\n\
admin.vm.List * vm0003 @anyvm allow target=dom0\n";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// 100 qubes besides dom0 and `mgmt`; every other one tagged `managed`.
fn system() -> Vec<DomainInfo> {
    let d = |name: String, class: &str, tags: Vec<String>| DomainInfo {
        uuid: format!("{:08x}-0000-4000-8000-000000000000", name.len()),
        name,
        class: class.into(),
        tags,
        template_for_dispvms: false,
        default_dispvm: Some("default-dvm".into()),
        internal: false,
    };
    let mut v = vec![
        d("dom0".into(), "AdminVM", vec![]),
        d("mgmt".into(), "AppVM", vec![]),
    ];
    for i in 0..100 {
        let tags = if i % 2 == 0 {
            vec!["managed".to_string()]
        } else {
            vec![]
        };
        v.push(d(format!("vm{i:04}"), "AppVM", tags));
    }
    v
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/release/qubes-admin-call");
    let eventd = root.join("target/release/qubes-admin-eventd");
    assert!(
        bin.exists() && eventd.exists(),
        "build first: cargo build --release"
    );
    let work =
        std::env::temp_dir().join(format!("qubes-admin-bench-policy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let policy_d = work.join("policy.d");
    copy_dir(&root.join("policy"), &policy_d);
    std::fs::remove_file(policy_d.join("README.md")).unwrap();
    std::fs::write(policy_d.join("30-admin-user.policy"), ADMIN_POLICY).unwrap();
    let files = std::fs::read_dir(&policy_d).unwrap().count()
        + std::fs::read_dir(policy_d.join("include")).unwrap().count()
        - 1;
    let sources = Sources {
        dirs: vec![policy_d.clone()],
        compat_dir: work.join("no-compat"),
    };

    // In process.
    let domains = system();
    let running = |_: &str| false;
    let sys = SystemInfo {
        domains: &domains,
        is_running: &running,
    };
    let rules = policy::load(&sources).expect("the default tree loads");
    let requests: Vec<Request> = [
        ("admin.vm.List", "+", "mgmt", "vm0042"),
        ("admin.vm.property.Get", "+netvm", "mgmt", "vm0042"),
        ("admin.vm.property.Get", "+netvm", "mgmt", "vm0043"),
        ("admin.vm.Start", "+", "mgmt", "vm0098"),
        ("admin.vm.Kill", "+", "mgmt", "vm0098"),
        ("admin.vm.feature.Set", "+gui", "vm0001", "dom0"),
    ]
    .iter()
    .map(|(s, a, src, t)| Request {
        service: (*s).into(),
        argument: (*a).into(),
        source: (*src).into(),
        target: (*t).into(),
    })
    .collect();
    let verdicts: Vec<bool> = requests
        .iter()
        .map(|r| policy::evaluate(&rules, r, &sys).is_allow())
        .collect();
    assert_eq!(verdicts, [true, true, false, true, false, false]);
    let iters = 2000;
    let mut load_t = Vec::with_capacity(iters);
    let mut eval_t = Vec::with_capacity(iters);
    let mut both_t = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        let rules = policy::load(&sources).unwrap();
        let loaded = t.elapsed();
        let req = &requests[i % requests.len()];
        let t2 = Instant::now();
        std::hint::black_box(policy::evaluate(&rules, req, &sys));
        let evaluated = t2.elapsed();
        load_t.push(loaded);
        eval_t.push(evaluated);
        both_t.push(loaded + evaluated);
    }

    // Per call: admin.vm.List from dom0 (no policy) and from a qube (the filter), interleaved.
    std::fs::create_dir_all(work.join("run")).unwrap();
    std::fs::write(
        work.join("qubes.xml"),
        FIXTURE.replace(CAPTURE_BASE, &work.display().to_string()),
    )
    .unwrap();
    let env = [
        ("QUBES_XML_PATH", work.join("qubes.xml")),
        ("QUBES_BASE_DIR", work.clone()),
        ("QUBES_RUN_DIR", work.join("run")),
        ("QUBES_POLICY_DIR", policy_d.clone()),
        ("QUBES_LIBVIRT_URI", PathBuf::from("test:///default")),
    ];
    let mut helper = Command::new(&eventd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = work.join("run/qubes-admin/eventd.sock");
    let t = Instant::now();
    while !sock.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let call = |req: &[u8]| -> (Duration, Vec<u8>) {
        let t = Instant::now();
        let mut child = Command::new(&bin)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--socket-request")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(req).unwrap();
        let out = child.wait_with_output().unwrap();
        (t.elapsed(), out.stdout)
    };
    let from_dom0 = b"admin.vm.List+ dom0 name dom0\0";
    let from_qube = b"admin.vm.List+ vm0003 name dom0\0";
    let (_, a) = call(from_dom0);
    let (_, b) = call(from_qube);
    assert!(a.starts_with(b"0\0") && a == b, "the qube sees every qube");
    let listed = a.iter().filter(|c| **c == b'\n').count();
    let rounds = 200;
    let (mut dom0_t, mut qube_t, mut diff_t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (d, _) = call(from_dom0);
        let (q, _) = call(from_qube);
        dom0_t.push(d);
        qube_t.push(q);
        diff_t.push(q.saturating_sub(d));
    }
    let _ = helper.kill();
    let _ = helper.wait();
    let _ = std::fs::remove_dir_all(&work);

    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let both = median(both_t);
    let md = format!(
        "<!-- bench:policy -->\n## qrexec policy (issue 10)\n\nProduced by `cargo build --release && cargo bench -p \
         qubes-admin-services --bench policy` on {cpus} CPUs, {date}. The default Admin API policy tree (`policy/`: \
         {files} files, {} rules once the includes are read) plus one administrator's file, for a system of 102 \
         qubes; medians of {iters} runs, each loading the tree and evaluating one of six requests. Target: load and \
         evaluation ≤ 1 ms (the reference's Python engine: about 19 ms).\n\n\
         | step | median |\n|---|---|\n| load the tree | {} |\n| evaluate one request | {} |\n| both (target ≤ 1 ms) | {} |\n\n\
         Per call ({rounds} interleaved rounds, one exec each, the helper running): `admin.vm.List` on the `gen100` \
         fixture ({listed} qubes listed) takes {} from dom0 (never filtered) and {} from a management qube whose \
         policy lets it see every qube (one load, one evaluation per qube): the filter adds {} (median of the \
         per-round differences).\n<!-- /bench:policy -->\n",
        rules.len(),
        us(median(load_t)),
        us(median(eval_t)),
        us(both),
        ms(median(dom0_t)),
        ms(median(qube_t)),
        ms(median(diff_t)),
    );
    print!("{md}");
    let path = root.join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (
        old.find("<!-- bench:policy -->"),
        old.find("<!-- /bench:policy -->\n"),
    ) {
        (Some(a), Some(z)) => format!(
            "{}{md}{}",
            &old[..a],
            &old[z + "<!-- /bench:policy -->\n".len()..]
        ),
        _ => format!("{old}\n{md}"),
    };
    std::fs::write(&path, new).unwrap();
    println!("wrote BENCHMARKS.md");
}
