//! Issue 9: events without a daemon. With the helper running on a sandbox (the `gen10` fixture,
//! libvirt's test driver): the latency from a mutating call's reply to each `admin.Events`
//! subscriber's receipt of its event, with 1 and with 10 subscribers (one process each, as
//! qrexec runs them), the helper's resident memory and its CPU time while idle, and a
//! subscriber's resident memory. Writes its section of BENCHMARKS.md.
//!
//!   cargo build --release && cargo bench -p qubes-admin-services --bench events
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FIXTURE: &str = include_str!("../../tests/fixtures/gen10/qubes.xml");
const CAPTURE_BASE: &str = "/work/oracle-run/gen10/varlib";
const ROUNDS: usize = 200;

/// When each subscriber saw the event of round `n` (`value=v<n>`).
type Seen = Arc<Mutex<Vec<Option<Instant>>>>;

struct Subscriber {
    child: Child,
    seen: Seen,
}

fn env_for(dir: &Path) -> Vec<(String, String)> {
    vec![
        (
            "QUBES_XML_PATH".into(),
            dir.join("qubes.xml").display().to_string(),
        ),
        ("QUBES_BASE_DIR".into(), dir.display().to_string()),
        (
            "QUBES_RUN_DIR".into(),
            dir.join("run").display().to_string(),
        ),
        (
            "QUBES_POLICY_DIR".into(),
            dir.join("policy.d").display().to_string(),
        ),
        ("QUBES_LIBVIRT_URI".into(), uri().into()),
    ]
}

fn subscribe(bin: &Path, dir: &Path) -> Subscriber {
    let mut child = Command::new(bin)
        .env_clear()
        .envs(env_for(dir))
        .env("QREXEC_SERVICE_FULL_NAME", "admin.Events")
        .env("QREXEC_REMOTE_DOMAIN", "dom0")
        .env("QREXEC_REQUESTED_TARGET_TYPE", "name")
        .env("QREXEC_REQUESTED_TARGET", "dom0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn admin.Events");
    let mut out = child.stdout.take().unwrap();
    let seen: Seen = Arc::new(Mutex::new(vec![None; ROUNDS]));
    let mine = Arc::clone(&seen);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let mut ready = Some(ready_tx);
        let mut scanned = 0;
        let needle = b"domain-feature-set:bench\0feature\0bench\0value\0v";
        while let Ok(k) = out.read(&mut chunk) {
            if k == 0 {
                return;
            }
            let now = Instant::now();
            buf.extend_from_slice(&chunk[..k]);
            if let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
            while let Some(at) = find(&buf[scanned..], needle) {
                let start = scanned + at + needle.len();
                let Some(end) = buf[start..].iter().position(|&b| b == 0) else {
                    break;
                };
                let n: usize = std::str::from_utf8(&buf[start..start + end])
                    .unwrap()
                    .parse()
                    .unwrap();
                if let Some(slot) = mine.lock().unwrap().get_mut(n) {
                    slot.get_or_insert(now);
                }
                scanned = start + end;
            }
        }
    });
    // Subscribed once `connection-established` is out.
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("admin.Events did not start");
    Subscriber { child, seen }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One call; the instant its whole reply was read.
fn call(bin: &Path, dir: &Path, req: &[u8]) -> Instant {
    let mut child = Command::new(bin)
        .env_clear()
        .envs(env_for(dir))
        .arg("--socket-request")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn qubes-admin-call");
    child.stdin.take().unwrap().write_all(req).unwrap();
    let mut reply = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut reply)
        .unwrap();
    let done = Instant::now();
    child.wait().unwrap();
    assert_eq!(reply, b"0\0", "{}", String::from_utf8_lossy(&reply));
    done
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The libvirt the helper talks to: a private libvirtd with the test driver (as on a dom0, the
/// driver then runs in the daemon, and the daemon maps the same libraries) where libvirtd is
/// installed, else the in-process test driver. Set once in `main`.
static URI: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn uri() -> &'static str {
    URI.get().map_or("test:///default", String::as_str)
}

/// Memory of a process (KiB, `/proc/PID/smaps_rollup`): resident; proportional (each shared
/// page divided by the number of processes mapping it); unique (pages only it maps: what it
/// costs the machine); anonymous (its own heap and stacks).
#[derive(Clone, Copy)]
struct Mem {
    rss: u64,
    pss: u64,
    uss: u64,
    anon: u64,
}

fn mem(pid: u32) -> Mem {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss: field("Rss:"),
        pss: field("Pss:"),
        uss: field("Private_Clean:") + field("Private_Dirty:"),
        anon: field("Anonymous:"),
    }
}

/// utime + stime of a process, clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Latencies (ms) of every subscriber in every round, measured from the call's reply: negative
/// when the event arrived before the caller had read its reply (events are logged before the
/// reply is written).
fn run(bin: &Path, dir: &Path, subs: &[Subscriber]) -> Vec<f64> {
    let mut replies = Vec::new();
    for n in 0..ROUNDS {
        let mut req = b"admin.vm.feature.Set+bench dom0 name vm0001\0".to_vec();
        req.extend_from_slice(format!("v{n}").as_bytes());
        replies.push(call(bin, dir, &req));
        std::thread::sleep(Duration::from_millis(3));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lat = Vec::new();
    for s in subs {
        loop {
            let seen = s.seen.lock().unwrap().clone();
            if seen.iter().all(Option::is_some) || Instant::now() > deadline {
                for (n, t) in seen.iter().enumerate() {
                    let t = t.expect("a subscriber missed an event");
                    let ms = match t.checked_duration_since(replies[n]) {
                        Some(after) => after.as_secs_f64() * 1000.0,
                        None => -(replies[n].duration_since(t).as_secs_f64() * 1000.0),
                    };
                    lat.push(ms);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    lat.sort_by(f64::total_cmp);
    lat
}

/// Start/pause/unpause/kill cycles before the helper's last RSS reading.
const LIFECYCLE_ROUNDS: usize = 30;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/release/qubes-admin-call");
    let eventd = root.join("target/release/qubes-admin-eventd");
    assert!(
        bin.exists() && eventd.exists(),
        "build first: cargo build --release"
    );
    let libvirtd = Command::new(root.join("tests/support/libvirtd.sh"))
        .arg("start")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(u) = &libvirtd {
        let _ = URI.set(u.clone());
    }
    let work =
        std::env::temp_dir().join(format!("qubes-admin-bench-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("run")).unwrap();
    std::fs::create_dir_all(work.join("policy.d")).unwrap();
    std::fs::write(
        work.join("qubes.xml"),
        FIXTURE.replace(CAPTURE_BASE, &work.display().to_string()),
    )
    .unwrap();
    let mut helper = Command::new(&eventd)
        .env_clear()
        .envs(env_for(&work))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qubes-admin-eventd");
    let sock = work.join("run/qubes-admin/eventd.sock");
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "helper did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let helper_start = mem(helper.id());
    let ticks_before = cpu_ticks(helper.id());
    std::thread::sleep(Duration::from_secs(5));
    let idle_ticks = cpu_ticks(helper.id()) - ticks_before;

    let mut results = Vec::new();
    for count in [1usize, 10] {
        let subs: Vec<Subscriber> = (0..count).map(|_| subscribe(&bin, &work)).collect();
        let lat = run(&bin, &work, &subs);
        let sub_rss = rss_kib(subs[0].child.id());
        results.push((count, lat, sub_rss));
        for mut s in subs {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
    let helper_end = mem(helper.id());
    // Then the helper's heavier work: a qube started, paused, unpaused and killed
    // LIFECYCLE_ROUNDS times through it (domain XML defined, libvirt's lifecycle events, stop
    // processing).
    for req in [
        &b"admin.vm.Create.TemplateVM+ dom0 name dom0\0name=bench-tpl label=black"[..],
        b"admin.vm.Create.AppVM+bench-tpl dom0 name dom0\0name=bench-run label=red",
        b"admin.vm.property.Set+netvm dom0 name bench-run\0",
    ] {
        call(&bin, &work, req);
    }
    std::fs::create_dir_all(work.join("vm-kernels/6.6.0-test")).unwrap();
    std::fs::write(work.join("vm-kernels/6.6.0-test/vmlinuz"), b"").unwrap();
    for _ in 0..LIFECYCLE_ROUNDS {
        for op in ["Start", "Pause", "Unpause", "Kill"] {
            call(
                &bin,
                &work,
                format!("admin.vm.{op}+ dom0 name bench-run\0").as_bytes(),
            );
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let helper_lifecycle = mem(helper.id());
    let _ = helper.kill();
    let _ = helper.wait();
    if let Some(dir) = libvirtd.as_deref().and_then(|u| u.split("socket=").nth(1)) {
        let dir = dir.trim_end_matches("/run/libvirt/libvirt-sock");
        let _ = Command::new(root.join("tests/support/libvirtd.sh"))
            .args(["stop", dir])
            .output();
    }
    let _ = std::fs::remove_dir_all(&work);

    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = format!(
        "<!-- bench:events -->\n## Events (issue 9)\n\nProduced by `cargo build --release && cargo bench -p \
         qubes-admin-services --bench events` on {cpus} CPUs, {date}. The `gen10` fixture, the helper running \
         (libvirt's test driver). Each round is one `admin.vm.feature.Set` (one exec of `qubes-admin-call \
         --socket-request`, then 3 ms of pause); each subscriber is one `admin.Events` process in exec-service mode \
         (as qrexec runs it) following the event log. Latency: from the moment the caller has read its whole reply \
         to the moment a subscriber's read returned the event's frame (negative: the event was read before the reply, \
         which the call writes after logging its events), over {ROUNDS} rounds × subscribers. Targets: p50 ≤ 5 ms; helper RSS ≤ 8 MiB, no CPU while idle.\n\n\
         | subscribers | p50 | p95 | max | received after the reply | one subscriber's RSS |\n|---|---|---|---|---|---|\n"
    );
    for (count, lat, sub_rss) in &results {
        let after = lat.iter().filter(|l| **l > 0.0).count();
        md.push_str(&format!(
            "| {count} | {:+.2} ms | {:+.2} ms | {:+.2} ms | {after} of {} | {:.1} MiB |\n",
            pct(lat, 0.5),
            pct(lat, 0.95),
            lat.last().copied().unwrap_or(0.0),
            lat.len(),
            *sub_rss as f64 / 1024.0
        ));
    }
    let mib = |k: u64| k as f64 / 1024.0;
    let row = |what: &str, m: Mem| {
        format!(
            "| {what} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |\n",
            mib(m.rss),
            mib(m.pss),
            mib(m.uss),
            mib(m.anon)
        )
    };
    let all = [helper_start, helper_end, helper_lifecycle];
    let peak = all.iter().map(|m| m.rss).max().unwrap_or(0);
    let peak_uss = all.iter().map(|m| m.uss).max().unwrap_or(0);
    let verdict = |k: u64| if k <= 8 * 1024 { "met" } else { "not met" };
    md.push_str(&format!(
        "\nThe helper (`qubes-admin-eventd`, links libvirt's 57 libraries), connected to {}; {idle_ticks} clock ticks \
         of CPU in 5 s idle:\n\n| when | RSS | PSS | USS (only its own pages) | of which anonymous |\n|---|---|---|---|---|\n{}{}{}\n\
         Once started it pages out its read-only file mappings and turns off fault-around on them \
         (`ffi::page_out_read_only_mappings`: libvirt's start-up alone faults in about 16 MiB of library pages). \
         That returns the pages only the helper maps (USS); pages of libraries that libvirtd maps too stay in its \
         RSS, though they cost the machine nothing beyond libvirtd's own mapping. The 8 MiB target is {} by the \
         RSS ({:.1} MiB at most) and {} by what the helper costs, its USS ({:.1} MiB at most).\n<!-- /bench:events -->\n",
        if libvirtd.is_some() {
            "a private libvirtd with the test driver, as on a dom0 where libvirtd runs"
        } else {
            "libvirt's in-process test driver (libvirtd is not installed)"
        },
        row("after start", helper_start),
        row("after the event rounds", helper_end),
        row(
            &format!("after {LIFECYCLE_ROUNDS} start/pause/unpause/kill cycles of a qube through it"),
            helper_lifecycle
        ),
        verdict(peak),
        mib(peak),
        verdict(peak_uss),
        mib(peak_uss),
    ));
    print!("{md}");
    let path = root.join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (
        old.find("<!-- bench:events -->"),
        old.find("<!-- /bench:events -->\n"),
    ) {
        (Some(a), Some(z)) => format!(
            "{}{md}{}",
            &old[..a],
            &old[z + "<!-- /bench:events -->\n".len()..]
        ),
        _ => format!("{old}\n{md}"),
    };
    std::fs::write(&path, new).expect("write BENCHMARKS.md");
    println!("wrote BENCHMARKS.md");
}
