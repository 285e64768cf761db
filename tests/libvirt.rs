//! admin.vm.List / admin.vm.CurrentState against a private libvirtd (test driver), through the
//! helper's socket and through the `--once` fallback. Skips (with a message) when libvirtd or
//! virsh is not installed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CALL: &str = env!("CARGO_BIN_EXE_qubes-admin-call");
const EVENTD: &str = env!("CARGO_BIN_EXE_qubes-admin-eventd");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
        || Path::new("/usr/sbin").join(cmd).exists()
}

/// Everything the test started, stopped on drop (also on failure).
struct Env {
    lv_dir: PathBuf,
    uri: String,
    keeper: Option<Child>,
    helper: Option<Child>,
    tmp: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        for c in [self.helper.take(), self.keeper.take()]
            .into_iter()
            .flatten()
        {
            stop_child(c);
        }
        let _ = Command::new(repo().join("tests/support/libvirtd.sh"))
            .arg("stop")
            .arg(&self.lv_dir)
            .status();
    }
}

fn stop_child(mut c: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Env {
    /// Runs virsh; whether it succeeded.
    fn virsh_ok(&self, args: &[&str]) -> bool {
        Command::new("virsh")
            .arg("-q")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn virsh(&self, args: &[&str]) {
        let out = Command::new("virsh")
            .arg("-q")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "virsh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn run_dir(&self) -> PathBuf {
        self.tmp.path().join("run")
    }

    /// The events logged after sequence number `seen` (which moves on), as
    /// `subject|event|k=v,…`.
    fn events_after(&self, seen: &mut u64) -> Vec<String> {
        let evs = qubes_admin::events::read_after(&self.run_dir(), *seen).unwrap();
        if let Some((s, _)) = evs.last() {
            *seen = *s;
        }
        evs.iter()
            .map(|(_, e)| {
                let kw: Vec<String> = e.kwargs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{}|{}|{}", e.subject, e.name, kw.join(","))
            })
            .collect()
    }

    fn socket(&self) -> PathBuf {
        self.run_dir().join("qubes-admin/eventd.sock")
    }

    /// One call in socket framing; `eventd` overrides the fallback executable.
    /// The call binary with this system's environment contract and nothing else.
    fn command(&self) -> Command {
        let mut c = Command::new(CALL);
        c.env_clear()
            .env("QUBES_XML_PATH", self.tmp.path().join("qubes.xml"))
            .env("QUBES_BASE_DIR", self.tmp.path().join("varlib"))
            .env("QUBES_RUN_DIR", self.run_dir())
            .env("QUBES_LIBVIRT_URI", &self.uri)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        c
    }

    fn call(&self, method: &str, dest: &str, eventd: Option<&str>) -> Vec<u8> {
        let mut cmd = self.command();
        cmd.arg("--socket-request");
        if let Some(e) = eventd {
            cmd.env("QUBES_ADMIN_EVENTD", e);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            // `method` may carry its argument (`admin.vm.Shutdown+wait`).
            .write_all(
                if method.contains('+') {
                    format!("{method} dom0 name {dest}\0")
                } else {
                    format!("{method}+ dom0 name {dest}\0")
                }
                .as_bytes(),
            )
            .unwrap();
        child.wait_with_output().unwrap().stdout
    }

    fn list(&self, eventd: Option<&str>) -> String {
        String::from_utf8(self.call("admin.vm.List", "dom0", eventd)).unwrap()
    }

    /// Polls until the listing equals `want` (events reach the helper asynchronously), then
    /// asserts it.
    fn expect_list(&self, want: &str, eventd: Option<&str>) {
        let t = Instant::now();
        let mut got = self.list(eventd);
        while got != want && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
            got = self.list(eventd);
        }
        assert_eq!(got, want);
    }

    /// Waits until at least `n` events were logged after `seen` (which moves on); them.
    fn wait_events(&self, seen: &mut u64, n: usize) -> Vec<String> {
        let t = Instant::now();
        let mut got = Vec::new();
        while got.len() < n {
            got.extend(self.events_after(seen));
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{} of {n} events after 10 s: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        got
    }

    fn start_helper(&mut self) {
        let child = Command::new(EVENTD)
            .env("QUBES_XML_PATH", self.tmp.path().join("qubes.xml"))
            .env("QUBES_BASE_DIR", self.tmp.path().join("varlib"))
            .env("QUBES_RUN_DIR", self.run_dir())
            .env("QUBES_LIBVIRT_URI", &self.uri)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.helper = Some(child);
        let t = Instant::now();
        while !self.socket().exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the helper did not open its socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop_helper(&mut self) {
        if let Some(c) = self.helper.take() {
            stop_child(c);
        }
    }
}

const VM0000: &str = "e4b06ce6-0741-47a8-bce4-2c8218072e8c";

/// The fixture's listing with vm0000 in `state` (everything else is Halted).
fn listing(state: &str) -> String {
    let mut s = String::from(
        "0\0dom0 class=AdminVM state=Running uuid=00000000-0000-0000-0000-000000000000\n",
    );
    for (name, class, uuid) in [
        (
            "default-dvm",
            "AppVM",
            "35bf992d-c9e9-4616-a12e-7696a6cecc1b",
        ),
        (
            "fedora-41",
            "TemplateVM",
            "cd613e30-d8f1-4adf-91b7-584a2265b1f5",
        ),
        (
            "sys-firewall",
            "AppVM",
            "78e51061-7311-48a3-82ce-6f447ed4d57b",
        ),
        ("sys-net", "AppVM", "1e2feb89-414c-443c-9027-c4d1c386bbc4"),
        ("vm0000", "AppVM", VM0000),
        ("vm0001", "AppVM", "9b810e76-6ec9-4286-a3ca-828dd5f4b3b2"),
        ("vm0002", "AppVM", "b2221a58-008a-45a6-8464-7159c324c985"),
        ("vm0003", "AppVM", "cd447e35-b8b6-48fe-842e-3d437204e52d"),
        ("vm0004", "AppVM", "1a2b8f1f-f1fd-42a2-9755-d4c13a902931"),
        ("vm0005", "AppVM", "05b6e6e3-07d4-4edc-9143-1193e6c3f339"),
        ("vm0006", "AppVM", "025b413f-8a9a-421e-a648-a7dd06839eb9"),
        ("vm0007", "AppVM", "afbd67f9-6196-49cf-a198-8ad9f06c144a"),
        ("vm0008", "AppVM", "b9d179e0-6c0f-44f5-b813-0c4237730edf"),
        ("vm0009", "AppVM", "c381e88f-38c0-48fd-8712-b8bc076f3787"),
    ] {
        let st = if name == "vm0000" { state } else { "Halted" };
        s.push_str(&format!("{name} class={class} state={st} uuid={uuid}\n"));
    }
    s
}

fn domain_xml(name: &str, uuid: &str) -> String {
    format!(
        "<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>\
         <memory unit='KiB'>409600</memory><vcpu>2</vcpu><os><type>hvm</type></os></domain>"
    )
}

fn setup() -> Option<Env> {
    if !have("libvirtd") || !have("virsh") {
        eprintln!(
            "SKIPPED: libvirtd/virsh not installed (Debian: libvirt-daemon, libvirt-clients)"
        );
        return None;
    }
    let out = Command::new(repo().join("tests/support/libvirtd.sh"))
        .arg("start")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "libvirtd.sh start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uri = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let lv_dir = PathBuf::from(
        uri.split("socket=")
            .nth(1)
            .unwrap()
            .strip_suffix("/run/libvirt/libvirt-sock")
            .unwrap(),
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("run")).unwrap();
    // The fixture's pools rebased into the temp dir (Create and Kill touch files there).
    let xml = std::fs::read_to_string(repo().join("tests/fixtures/gen10/qubes.xml"))
        .unwrap()
        .replace(
            "/work/oracle-run/gen10/varlib",
            tmp.path().join("varlib").to_str().unwrap(),
        );
    std::fs::write(tmp.path().join("qubes.xml"), xml).unwrap();
    let mut env = Env {
        lv_dir,
        uri,
        keeper: None,
        helper: None,
        tmp,
    };

    // The daemon resets the test driver's state when its last client disconnects: keep one
    // connection (an event listener, which also shows when it is connected) for the whole test.
    let mut keeper = Command::new("virsh")
        .args(["-q", "-c", &env.uri, "event", "--all", "--loop"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = keeper.stdout.take().unwrap();
    env.keeper = Some(keeper);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let t = Instant::now();
    loop {
        // Until the keeper is connected, the daemon may reset the driver between two virsh
        // runs (the resume then finds the domain not paused): only the events count here.
        env.virsh_ok(&["suspend", "test"]);
        env.virsh_ok(&["resume", "test"]);
        if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the keeper connection never saw an event"
        );
    }
    // Start from no domains.
    env.virsh(&["destroy", "test"]);
    env.virsh(&["undefine", "test"]);
    Some(env)
}

#[test]
fn vm_list_and_current_state_follow_libvirt() {
    let Some(mut env) = setup() else { return };
    let dir = env.tmp.path().to_path_buf();
    for (name, uuid) in [
        ("vm0000", VM0000),
        ("vm0001", "9b810e76-6ec9-4286-a3ca-828dd5f4b3b2"),
    ] {
        let xml = dir.join(format!("{name}.xml"));
        std::fs::write(&xml, domain_xml(name, uuid)).unwrap();
        env.virsh(&["define", xml.to_str().unwrap()]);
    }
    // A libvirt domain that is no qube does not show up.
    let stray = dir.join("stray.xml");
    std::fs::write(
        &stray,
        domain_xml("stray", "11111111-2222-3333-4444-555555555555"),
    )
    .unwrap();
    env.virsh(&["define", stray.to_str().unwrap()]);
    env.virsh(&["start", "stray"]);

    // --- no helper: every call runs `qubes-admin-eventd --once` (found next to the binary).
    assert!(!env.socket().exists());
    env.expect_list(&listing("Halted"), None);
    env.virsh(&["start", "vm0000"]);
    // fedora-41 has feature qrexec=1 and there is no qrexec.vm0000 yet.
    env.expect_list(&listing("Transient"), None);
    std::fs::write(env.run_dir().join("qrexec.vm0000"), b"").unwrap();
    env.expect_list(&listing("Running"), None);
    env.virsh(&["suspend", "vm0000"]);
    env.expect_list(&listing("Paused"), None);
    let st = String::from_utf8(env.call("admin.vm.CurrentState", "vm0000", None)).unwrap();
    assert!(
        st.starts_with("0\0mem=409600 mem_static_max=0 cputime="),
        "{st:?}"
    );
    assert!(st.ends_with(" power_state=Paused"), "{st:?}");
    assert_eq!(
        env.call("admin.vm.CurrentState", "vm0001", None),
        b"0\0mem=0 mem_static_max=0 cputime=0 power_state=Halted"
    );
    // Just the named qube.
    assert_eq!(
        env.call("admin.vm.List", "vm0000", None),
        format!("0\0vm0000 class=AppVM state=Paused uuid={VM0000}\n").into_bytes()
    );

    // --- with the helper: answers come from its socket (the fallback is made unusable).
    env.start_helper();
    let no_fallback = Some("/nonexistent/qubes-admin-eventd");
    env.expect_list(&listing("Paused"), no_fallback);
    env.virsh(&["resume", "vm0000"]);
    env.expect_list(&listing("Running"), no_fallback);
    env.virsh(&["suspend", "vm0000"]);
    env.expect_list(&listing("Paused"), no_fallback);
    env.virsh(&["destroy", "vm0000"]);
    env.expect_list(&listing("Halted"), no_fallback);
    assert_eq!(
        env.call("admin.vm.CurrentState", "vm0000", no_fallback),
        b"0\0mem=0 mem_static_max=0 cputime=0 power_state=Halted"
    );
    env.virsh(&["start", "vm0000"]);
    env.expect_list(&listing("Running"), no_fallback);
    std::fs::remove_file(env.run_dir().join("qrexec.vm0000")).unwrap();
    env.expect_list(&listing("Transient"), no_fallback);
    let st = String::from_utf8(env.call("admin.vm.CurrentState", "vm0000", no_fallback)).unwrap();
    assert!(
        st.starts_with("0\0mem=409600 mem_static_max=0 cputime=")
            && st.ends_with(" power_state=Transient"),
        "{st:?}"
    );
    // dom0 has no libvirt domain on the test driver: the host is dom0 (its 3072 MiB node
    // memory; maxmem default 4096 MiB), so `qvm-ls` MEMORY still works in a sandbox.
    let dom0 = env.call("admin.vm.CurrentState", "dom0", no_fallback);
    assert_eq!(
        dom0,
        b"0\0mem=3145728 mem_static_max=4194304 cputime=0 power_state=Running",
        "{:?}",
        String::from_utf8_lossy(&dom0)
    );

    // A second helper for the same run_dir refuses to start.
    let second = Command::new(EVENTD)
        .env("QUBES_RUN_DIR", env.run_dir())
        .env("QUBES_LIBVIRT_URI", &env.uri)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    // SIGTERM removes the socket; calls fall back again and see the same state.
    env.stop_helper();
    assert!(!env.socket().exists());
    env.virsh(&["suspend", "vm0000"]);
    env.expect_list(&listing("Paused"), None);
    let no_helper = env.list(no_fallback);
    assert!(
        no_helper.starts_with("2\0QubesException\0\0hypervisor unavailable: cannot run"),
        "{no_helper:?}"
    );

    // libvirt down: an error from the helper (never stale data) and from the fallback.
    env.start_helper();
    env.expect_list(&listing("Paused"), no_fallback);
    let _ = Command::new(repo().join("tests/support/libvirtd.sh"))
        .arg("stop")
        .arg(&env.lv_dir)
        .status();
    let t = Instant::now();
    let mut got = env.list(no_fallback);
    while got.starts_with("0\0") && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        got = env.list(no_fallback);
    }
    assert!(
        got.starts_with("2\0QubesException\0\0hypervisor unavailable: "),
        "{got:?}"
    );
    env.stop_helper();
    let got = env.list(None);
    assert!(
        got.starts_with("2\0QubesException\0\0hypervisor unavailable: cannot connect to libvirt"),
        "{got:?}"
    );
}

/// The lifecycle operations per-call processes ask for (define, start paused, resume, pause,
/// destroy, undefine), through the helper's socket and through the `--once` fallback, checked
/// against libvirt's live state.
#[test]
fn lifecycle_operations_through_the_helper_and_the_fallback() {
    use qubes_admin::runtime::client::EventdClient;
    use qubes_admin::runtime::{DomState, HvError, Hypervisor, Op};
    let Some(mut env) = setup() else { return };
    let config = qubes_admin::Config {
        libvirt_uri: env.uri.clone(),
        run_dir: env.run_dir(),
        ..qubes_admin::Config::default()
    };
    let client = EventdClient::for_config(&config).with_eventd(PathBuf::from(EVENTD));
    let state = |c: &EventdClient| c.domain(VM0000).unwrap().map(|d| (d.active, d.state));
    for helper in [false, true] {
        if helper {
            env.start_helper();
        }
        client.define(&domain_xml("vm0000", VM0000)).unwrap();
        assert_eq!(
            state(&client),
            Some((false, DomState::Shutoff)),
            "helper={helper}"
        );
        client.op(VM0000, Op::StartPaused).unwrap();
        assert_eq!(state(&client), Some((true, DomState::Paused)));
        client.op(VM0000, Op::Resume).unwrap();
        assert_eq!(state(&client), Some((true, DomState::Running)));
        client.op(VM0000, Op::Pause).unwrap();
        assert_eq!(state(&client), Some((true, DomState::Paused)));
        client.op(VM0000, Op::Destroy).unwrap();
        assert_eq!(state(&client), Some((false, DomState::Shutoff)));
        // libvirt's refusal comes back as a failed operation, not as an unreachable hypervisor.
        match client.op(VM0000, Op::Resume) {
            Err(HvError::Failed(m)) => assert!(m.starts_with("libvirt: "), "{m}"),
            other => panic!("resume of a stopped domain: {other:?}"),
        }
        client.op(VM0000, Op::Undefine).unwrap();
        assert_eq!(state(&client), None);
        match client.op("00000000-0000-0000-0000-0000000000aa", Op::Destroy) {
            Err(HvError::Failed(m)) => assert_eq!(
                m,
                "libvirt: no domain with uuid 00000000-0000-0000-0000-0000000000aa"
            ),
            other => panic!("{other:?}"),
        }
    }
    env.stop_helper();
}

/// admin.vm.Pause, Unpause and Kill on a qube whose libvirt domain runs in the private
/// libvirtd: exact replies and refusals, libvirt's state after each call (through virsh), and
/// the events each call logs (Kill: after its stop processing).
#[test]
fn pause_unpause_kill() {
    let Some(mut env) = setup() else { return };
    env.start_helper();
    let xml = env.tmp.path().join("vm0000.xml");
    std::fs::write(&xml, domain_xml("vm0000", VM0000)).unwrap();
    env.virsh(&["define", xml.to_str().unwrap()]);
    env.virsh(&["start", "vm0000"]);
    let domstate = |env: &Env| {
        let out = Command::new("virsh")
            .args(["-q", "-c", &env.uri, "domstate", "vm0000"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let mut seen = 0;
    let mut events = || env.events_after(&mut seen);
    let call = |m: &str, dest: &str| String::from_utf8(env.call(m, dest, None)).unwrap();

    assert_eq!(
        call("admin.vm.Unpause", "vm0000"),
        "2\0QubesVMNotPausedError\0\0Domain is not paused: 'vm0000'\0"
    );
    assert_eq!(call("admin.vm.Pause", "vm0000"), "0\0");
    assert_eq!(domstate(&env), "paused");
    assert_eq!(call("admin.vm.Unpause", "vm0000"), "0\0");
    assert_eq!(domstate(&env), "running");
    assert_eq!(call("admin.vm.Kill", "vm0000"), "0\0");
    assert_eq!(domstate(&env), "shut off");
    assert_eq!(
        events(),
        [
            "vm0000|domain-pre-paused|",
            "vm0000|domain-pre-unpaused|",
            "vm0000|domain-unpaused|",
            "vm0000|property-reset:xid|name=xid",
            "vm0000|property-reset:stubdom_xid|name=stubdom_xid",
            "vm0000|property-reset:start_time|name=start_time",
            "vm0000|domain-stopped|",
            "vm0000|domain-shutdown|",
        ]
    );
    // Suspend (socket only): without PM suspend, the reference's fallback, a pause; Resume of
    // a paused (not PM-suspended) qube is an Unpause.
    env.virsh(&["start", "vm0000"]);
    assert_eq!(call("admin.vm.Suspend", "vm0000"), "0\0");
    assert_eq!(domstate(&env), "paused");
    assert_eq!(call("admin.vm.Resume", "vm0000"), "0\0");
    assert_eq!(domstate(&env), "running");
    assert_eq!(
        events(),
        [
            "vm0000|domain-pre-paused|",
            "vm0000|domain-pre-unpaused|",
            "vm0000|domain-unpaused|"
        ]
    );
    env.virsh(&["destroy", "vm0000"]);
    assert_eq!(
        call("admin.vm.Suspend", "dom0"),
        "2\0QubesVMError\0\0Cannot suspend Dom0 fake domain!\0"
    );
    assert_eq!(
        call("admin.vm.Resume", "vm0000"),
        "2\0QubesVMNotPausedError\0\0Domain is not paused: 'vm0000'\0"
    );
    assert_eq!(
        call("admin.vm.Suspend", "vm0000"),
        "2\0QubesVMNotRunningError\0\0Domain not running (either powered off or paused): 'vm0000'\0"
    );
    // Halted: the refusals, with no events.
    assert_eq!(
        call("admin.vm.Kill", "vm0000"),
        "2\0QubesVMNotStartedError\0\0Domain is powered off: 'vm0000'\0"
    );
    assert_eq!(
        call("admin.vm.Pause", "vm0000"),
        "2\0QubesVMNotRunningError\0\0Domain not running (either powered off or paused): 'vm0000'\0"
    );
    assert_eq!(
        call("admin.vm.Kill", "dom0"),
        "2\0QubesVMError\0\0Cannot kill Dom0 fake domain!\0"
    );
    assert!(call("admin.vm.Pause", "dom0")
        .starts_with("2\0QubesException\0\0AdminVM dom0 cannot be paused"));
    // A qube without a libvirt domain at all is halted too.
    assert_eq!(
        call("admin.vm.Kill", "vm0001"),
        "2\0QubesVMNotStartedError\0\0Domain is powered off: 'vm0001'\0"
    );
    assert!(events().is_empty());
    // Remove undefines the halted qube's libvirt domain.
    assert!(env.virsh_ok(&["dominfo", "vm0000"]));
    assert_eq!(call("admin.vm.Remove", "vm0000"), "0\0");
    assert!(
        !env.virsh_ok(&["dominfo", "vm0000"]),
        "still defined in libvirt"
    );
    env.stop_helper();
}

/// admin.vm.Shutdown: the argument rule, the refusals (powered off, in use as netvm, paused
/// without force), `wait` (the reply after the stop processing), `force` on a paused qube.
#[test]
fn shutdown() {
    let Some(mut env) = setup() else { return };
    env.start_helper();
    const FW: &str = "78e51061-7311-48a3-82ce-6f447ed4d57b";
    const VM0001: &str = "9b810e76-6ec9-4286-a3ca-828dd5f4b3b2";
    for (name, uuid) in [("sys-firewall", FW), ("vm0000", VM0000), ("vm0001", VM0001)] {
        let xml = env.tmp.path().join(format!("{name}.xml"));
        std::fs::write(&xml, domain_xml(name, uuid)).unwrap();
        env.virsh(&["define", xml.to_str().unwrap()]);
        env.virsh(&["start", name]);
    }
    let state = |env: &Env, name: &str| {
        let out = Command::new("virsh")
            .args(["-q", "-c", &env.uri, "domstate", name])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let mut seen = 0;
    let mut events = || env.events_after(&mut seen);
    let call = |m: &str, dest: &str| String::from_utf8(env.call(m, dest, None)).unwrap();

    assert_eq!(
        call("admin.vm.Shutdown+forcewait", "vm0000"),
        "2\0ProtocolError\0\0Argument must match: force, wait\0"
    );
    // vm0000 and vm0001 run with sys-firewall as their (default) netvm.
    assert_eq!(
        call("admin.vm.Shutdown", "sys-firewall"),
        "2\0QubesVMInUseError\0\0There are other VMs connected to this VM: vm0000, vm0001\0"
    );
    assert_eq!(state(&env, "sys-firewall"), "running");
    // A refusal after the pre-event fires `domain-shutdown-failed` with its reason.
    assert_eq!(
        events(),
        [
            "sys-firewall|domain-pre-shutdown|force=False",
            "sys-firewall|domain-shutdown-failed|reason=There are other VMs connected to this VM: vm0000, vm0001",
        ]
    );
    assert_eq!(call("admin.vm.Shutdown+wait", "vm0000"), "0\0");
    assert_eq!(state(&env, "vm0000"), "shut off");
    assert_eq!(
        events(),
        [
            "vm0000|domain-pre-shutdown|force=False",
            "vm0000|property-reset:xid|name=xid",
            "vm0000|property-reset:stubdom_xid|name=stubdom_xid",
            "vm0000|property-reset:start_time|name=start_time",
            "vm0000|domain-stopped|",
            "vm0000|domain-shutdown|",
        ]
    );
    assert_eq!(
        call("admin.vm.Shutdown", "vm0000"),
        "2\0QubesVMNotStartedError\0\0Domain is powered off: 'vm0000'\0"
    );
    env.virsh(&["suspend", "vm0001"]);
    assert_eq!(
        call("admin.vm.Shutdown", "vm0001"),
        "2\0QubesVMNotRunningError\0\0Domain not running (either powered off or paused): 'vm0001'\0"
    );
    assert_eq!(
        events(),
        [
            "vm0001|domain-pre-shutdown|force=False",
            "vm0001|domain-shutdown-failed|reason=Domain not running (either powered off or paused): 'vm0001'",
        ],
        "the powered-off refusal fires nothing"
    );
    assert_eq!(call("admin.vm.Shutdown+wait+force", "vm0001"), "0\0");
    assert_eq!(state(&env, "vm0001"), "shut off");
    assert_eq!(events()[0], "vm0001|domain-pre-shutdown|force=True");
    // With its users gone, the netvm shuts down without force.
    assert_eq!(call("admin.vm.Shutdown", "sys-firewall"), "0\0");
    assert_eq!(events(), ["sys-firewall|domain-pre-shutdown|force=False"]);
    env.stop_helper();
}

/// Kill of a disposable with auto_cleanup: the stop processing removes it (qubes.xml, its
/// directory) and logs its removal after the stop events.
#[test]
fn killed_disposable_is_cleaned_up() {
    let Some(mut env) = setup() else { return };
    env.start_helper();
    let made =
        String::from_utf8(env.call("admin.vm.CreateDisposable", "default-dvm", None)).unwrap();
    let name = made
        .strip_prefix("0\0")
        .unwrap_or_else(|| panic!("{made:?}"))
        .to_string();
    let xml_path = env.tmp.path().join("qubes.xml");
    let doc = qubes_admin::store::load(&xml_path).unwrap().0;
    let uuid = doc
        .uuid(doc.domain_by_name(&name).unwrap())
        .unwrap()
        .to_string();
    let dir = env.tmp.path().join("varlib/appvms").join(&name);
    assert!(dir.is_dir());
    let xml = env.tmp.path().join("disp.xml");
    std::fs::write(&xml, domain_xml(&name, &uuid)).unwrap();
    env.virsh(&["define", xml.to_str().unwrap()]);
    env.virsh(&["start", &name]);
    let before = qubes_admin::events::read_after(&env.run_dir(), 0)
        .unwrap()
        .len() as u64;
    assert_eq!(env.call("admin.vm.Kill", &name, None), b"0\0");
    let evs: Vec<String> = qubes_admin::events::read_after(&env.run_dir(), before)
        .unwrap()
        .iter()
        .map(|(_, e)| format!("{}|{}|{:?}", e.subject, e.name, e.kwargs))
        .collect();
    let vm = format!("[(\"vm\", \"{name}\")]");
    assert_eq!(
        evs,
        [
            format!("{name}|property-reset:xid|[(\"name\", \"xid\")]"),
            format!("{name}|property-reset:stubdom_xid|[(\"name\", \"stubdom_xid\")]"),
            format!("{name}|property-reset:start_time|[(\"name\", \"start_time\")]"),
            format!("{name}|domain-stopped|[]"),
            format!("|domain-pre-delete|{vm}"),
            format!("|domain-delete|{vm}"),
        ]
    );
    let doc = qubes_admin::store::load(&xml_path).unwrap().0;
    assert!(doc.domain_by_name(&name).is_none());
    assert!(!dir.exists());
    assert!(
        !env.virsh_ok(&["dominfo", &name]),
        "still defined in libvirt"
    );

    // One that stops by itself: the helper's stop processing removes it. (Started through
    // libvirt here; the mark is what our Start leaves, see runtime::started_mark.)
    let made =
        String::from_utf8(env.call("admin.vm.CreateDisposable", "default-dvm", None)).unwrap();
    let name = made.strip_prefix("0\0").unwrap().to_string();
    let doc = qubes_admin::store::load(&xml_path).unwrap().0;
    let uuid = doc
        .uuid(doc.domain_by_name(&name).unwrap())
        .unwrap()
        .to_string();
    let dir = env.tmp.path().join("varlib/appvms").join(&name);
    std::fs::write(&xml, domain_xml(&name, &uuid)).unwrap();
    env.virsh(&["define", xml.to_str().unwrap()]);
    env.virsh(&["start", &name]);
    std::fs::write(
        qubes_admin::runtime::started_mark(&env.run_dir(), &uuid),
        b"",
    )
    .unwrap();
    let mut seen = qubes_admin::events::append(&env.run_dir(), &[]).unwrap();
    env.virsh(&["destroy", &name]);
    let evs = env.wait_events(&mut seen, 6);
    assert_eq!(
        evs[3..],
        [
            format!("{name}|domain-stopped|"),
            format!("|domain-pre-delete|vm={name}"),
            format!("|domain-delete|vm={name}"),
        ]
    );
    let doc = qubes_admin::store::load(&xml_path).unwrap().0;
    assert!(doc.domain_by_name(&name).is_none());
    assert!(!dir.exists());
    assert!(!env.virsh_ok(&["dominfo", &name]));
    env.stop_helper();
}

/// admin.vm.Start against the private libvirtd (test driver): a refusal for missing images,
/// the whole sequence of events, the netvm chain started first, the volumes started, a no-op
/// Start of a running qube, and Kill undoing it all.
#[test]
fn start_with_its_netvm_chain() {
    let Some(mut env) = setup() else { return };
    env.start_helper();
    let run = |m: &str, dest: &str, payload: &[u8]| -> std::process::Output {
        let mut cmd = Command::new(CALL);
        cmd.arg("--socket-request")
            .env("QUBES_XML_PATH", env.tmp.path().join("qubes.xml"))
            .env("QUBES_BASE_DIR", env.tmp.path().join("varlib"))
            .env("QUBES_RUN_DIR", env.run_dir())
            .env("QUBES_LIBVIRT_URI", &env.uri)
            .env_remove("QREXEC_SERVICE_FULL_NAME");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut req = format!("{m} dom0 name {dest}\0").into_bytes();
        req.extend_from_slice(payload);
        child.stdin.take().unwrap().write_all(&req).unwrap();
        child.wait_with_output().unwrap()
    };
    let call = |m: &str, dest: &str, payload: &[u8]| -> String {
        String::from_utf8(run(m, dest, payload).stdout).unwrap()
    };
    let varlib = env.tmp.path().join("varlib");
    // A required PCI device that this machine does not have: refused right after
    // domain-pre-start, before the storage check and the netvm chain (§10.2).
    let xml_path = env.tmp.path().join("qubes.xml");
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let at = xml.find("appvms/vm0003/root").unwrap();
    let at = at + xml[at..].find("</volume-config>\n").unwrap() + "</volume-config>\n".len();
    let with_pci = format!(
        "{}      <devices class=\"pci\"><device backend-domain=\"dom0\" id=\"ff_1f.7\" \
         mode=\"required\" identity=\"*\"/></devices>\n{}",
        &xml[..at],
        &xml[at..]
    );
    std::fs::write(&xml_path, with_pci).unwrap();
    let mut seen = qubes_admin::events::append(&env.run_dir(), &[]).unwrap();
    assert_eq!(
        call("admin.vm.Start+", "vm0003", b""),
        "2\0QubesException\0\0Pci device dom0+ff_1f.7 not available\0"
    );
    // As for the storage check that follows it: no sys-firewall event (the netvm chain was not
    // started), no domain-start-failed.
    assert_eq!(
        env.events_after(&mut seen),
        ["vm0003|domain-pre-start|start_guid=True,mem_required=None"]
    );
    // A required block device of dom0: not available until dom0's QubesDB lists it; then the
    // test driver (like the QEMU one) cannot pass it through, and says so.
    let with_block = format!(
        "{}      <devices class=\"block\"><device backend-domain=\"dom0\" id=\"loop7\" \
         mode=\"required\" identity=\"*\"><option name=\"devtype\">cdrom</option>\
         </device></devices>\n{}",
        &xml[..at],
        &xml[at..]
    );
    std::fs::write(&xml_path, with_block).unwrap();
    assert_eq!(
        call("admin.vm.Start+", "vm0003", b""),
        "2\0QubesException\0\0Block device dom0+loop7 not available\0"
    );
    let dom0_db = env.run_dir().join("qubes-admin/qubesdb/dom0");
    std::fs::create_dir_all(dom0_db.parent().unwrap()).unwrap();
    std::fs::write(
        &dom0_db,
        "/qubes-block-devices/loop7/desc=/var/tmp/install.iso\n/qubes-block-devices/loop7/mode=r\n",
    )
    .unwrap();
    assert_eq!(
        call("admin.vm.Start+", "vm0003", b""),
        format!(
            "2\0QubesException\0\0vm0003 requires PCI or block devices, which only a Xen \
             libvirt passes through (this one is {})\0",
            env.uri
        )
    );
    std::fs::remove_file(&dom0_db).unwrap();
    std::fs::write(&xml_path, xml).unwrap();
    // The fixture's qubes have nothing on disk here: the storage check refuses (the qube's
    // directory first, then the images), nothing starts.
    let r = call("admin.vm.Start+", "vm0003", b"");
    assert_eq!(
        r,
        format!(
            "2\0QubesVMError\0\0VM directory does not exist: {}/appvms/vm0003\0",
            varlib.display()
        )
    );
    std::fs::create_dir_all(varlib.join("appvms/vm0003")).unwrap();
    let r = call("admin.vm.Start+", "vm0003", b"");
    assert_eq!(
        r,
        format!(
            "2\0StoragePoolException\0\0Missing image file: '{}/vm-templates/fedora-41/root.img'\0",
            varlib.display()
        )
    );
    // The default kernel, a template with images, a net qube and a qube behind it.
    let kernel = varlib.join("vm-kernels/6.6.0-test");
    std::fs::create_dir_all(&kernel).unwrap();
    std::fs::write(kernel.join("vmlinuz"), b"").unwrap();
    assert_eq!(
        call(
            "admin.vm.Create.TemplateVM+",
            "dom0",
            b"name=t1 label=black"
        ),
        "0\0"
    );
    assert_eq!(
        call("admin.vm.Create.AppVM+t1", "dom0", b"name=net1 label=red"),
        "0\0"
    );
    assert_eq!(call("admin.vm.property.Set+netvm", "net1", b""), "0\0");
    assert_eq!(
        call("admin.vm.property.Set+provides_network", "net1", b"True"),
        "0\0"
    );
    assert_eq!(
        call("admin.vm.Create.AppVM+t1", "dom0", b"name=a1 label=green"),
        "0\0"
    );
    assert_eq!(call("admin.vm.property.Set+netvm", "a1", b"net1"), "0\0");
    // Subscribers (admin.Events, exec-service mode) follow everything below as it happens.
    let mut sub_all = support::Subscriber::spawn(env.command(), "dom0", "dom0");
    let mut sub_a1 = support::Subscriber::spawn(env.command(), "dom0", "a1");
    let sub_from = qubes_admin::events::append(&env.run_dir(), &[]).unwrap();
    let mut seen = 0;
    env.events_after(&mut seen);
    assert_eq!(call("admin.vm.Start+", "a1", b""), "0\0");
    let evs = env.events_after(&mut seen);
    let seq = |vm: &str| -> Vec<String> {
        [
            "domain-pre-spawn|start_guid=True",
            "property-reset:xid|name=xid",
            "property-reset:stubdom_xid|name=stubdom_xid",
            "property-reset:start_time|name=start_time",
            "domain-spawn|start_guid=True",
            "domain-qdb-create|",
            "domain-pre-unpaused|",
            "domain-unpaused|",
            "domain-start|start_guid=True",
        ]
        .iter()
        .map(|e| format!("{vm}|{e}"))
        .collect()
    };
    let mut want = vec!["a1|domain-pre-start|start_guid=True,mem_required=None".to_string()];
    want.push("net1|domain-pre-start|start_guid=True,mem_required=None".to_string());
    want.extend(seq("net1"));
    want.extend(seq("a1"));
    assert_eq!(evs, want);
    let running = |name: &str| {
        let out = Command::new("virsh")
            .args(["-q", "-c", &env.uri, "domstate", name])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(running("a1"), "running");
    assert_eq!(running("net1"), "running");
    // The QubesDB entries each got (no QubesDB here: the sandbox keeps them in a file).
    let prop = |vm: &str, p: &str| {
        let r = call(&format!("admin.vm.property.Get+{p}"), vm, b"");
        r.rsplit_once(' ')
            .unwrap()
            .1
            .trim_end_matches('\0')
            .to_string()
    };
    let qdb = |vm: &str| {
        let path = env.run_dir().join("qubes-admin/qubesdb").join(vm);
        qubes_admin::runtime::dom0::sandbox_entries(&std::fs::read_to_string(path).unwrap())
    };
    let (ip, gw) = (prop("a1", "ip"), prop("net1", "gateway"));
    assert!(
        ip.starts_with("10.137.0.") && gw.starts_with("10.137.0."),
        "{ip} {gw}"
    );
    let mut a1_db = qdb("a1");
    let seed = a1_db.remove("/qubes-random-seed").unwrap();
    assert_eq!(seed.len(), 88, "64 bytes, base64: {seed}");
    let tz = a1_db.remove("/qubes-timezone");
    assert_eq!(
        tz,
        std::fs::read_link("/etc/localtime")
            .ok()
            .and_then(|t| Some(t.to_str()?.split_once("zoneinfo/")?.1.to_string()))
    );
    let want_a1: std::collections::BTreeMap<String, String> = [
        ("/name", "a1"),
        ("/type", "AppVM"),
        ("/default-user", "user"),
        ("/qubes-vm-type", "AppVM"),
        ("/qubes-vm-updateable", "False"),
        ("/qubes-vm-persistence", "rw-only"),
        ("/qubes-debug-mode", "0"),
        ("/qubes-base-template", "t1"),
        ("/qubes-mac", &prop("a1", "mac")),
        ("/qubes-ip", &ip),
        ("/qubes-netmask", "255.255.255.255"),
        ("/qubes-gateway", &gw),
        ("/qubes-primary-dns", "10.139.1.1"),
        ("/qubes-secondary-dns", "10.139.1.2"),
        ("/qubes-block-devices", ""),
        ("/qubes-usb-devices", ""),
        // No memory balancing without Xen: maxmem is 0.
        ("/qubes-service/meminfo-writer", "0"),
        ("/qubes-gui-domain-xid", "0"),
        ("/qubes-audio-domain-xid", "0"),
        ("/keyboard-layout", "us++"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(a1_db, want_a1);
    let net1_db = qdb("net1");
    for (k, v) in [
        ("/name", "net1"),
        ("/qubes-netvm-network", gw.as_str()),
        ("/qubes-netvm-gateway", &gw),
        ("/qubes-netvm-netmask", "255.255.255.255"),
        ("/qubes-netvm-primary-dns", "10.139.1.1"),
        ("/qubes-netvm-secondary-dns", "10.139.1.2"),
        (&format!("/mapped-ip/{ip}/visible-ip"), &ip),
        (&format!("/mapped-ip/{ip}/visible-gateway"), &gw),
        (&format!("/qubes-firewall/{ip}"), ""),
        (&format!("/qubes-firewall/{ip}/policy"), "drop"),
        (&format!("/qubes-firewall/{ip}/0000"), "action=accept"),
    ] {
        assert_eq!(net1_db.get(k).map(String::as_str), Some(v), "net1 {k}");
    }
    assert!(!net1_db.contains_key("/qubes-ip"), "net1 has no netvm");
    // admin.vm.firewall.*: the default list, a Set (saved, `firewall-changed`, at once in the
    // running netvm's QubesDB: indexes kept, expired rules left out), refusals that change
    // nothing, Reload.
    assert_eq!(
        call("admin.vm.firewall.Get+", "a1", b""),
        "0\0action=accept\n"
    );
    env.events_after(&mut seen);
    let rules = "action=accept dsthost=192.168.0.0/24 proto=tcp dstports=443\n\
                 action=drop proto=udp dstports=53 expire=1000 comment=gone\n\
                 action=accept specialtarget=dns\n\
                 action=drop dst6=fd00::1\n";
    assert_eq!(
        call("admin.vm.firewall.Set+", "a1", rules.as_bytes()),
        "0\0"
    );
    assert_eq!(env.events_after(&mut seen), ["a1|firewall-changed|"]);
    assert_eq!(
        call("admin.vm.firewall.Get+", "a1", b""),
        "0\0action=accept dst4=192.168.0.0/24 proto=tcp dstports=443-443\n\
         action=accept specialtarget=dns\naction=drop dst6=fd00::1/128\n"
    );
    let fw = varlib.join("appvms/a1/firewall.xml");
    let file = std::fs::read_to_string(&fw).unwrap();
    assert!(file.starts_with("<firewall version=\"2\">\n  <rules>\n    <rule>\n      <properties>\n        <property name=\"action\">accept</property>\n        <property name=\"dsthost\">192.168.0.0/24</property>\n        <property name=\"proto\">tcp</property>\n        <property name=\"dstports\">443</property>\n"), "{file}");
    assert!(!file.contains("gone"), "expired rules are not saved");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&fw).unwrap().permissions())
            & 0o777,
        0o664
    );
    let net1_db = qdb("net1");
    let fwdb: Vec<(&String, &String)> = net1_db
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("/qubes-firewall/{ip}")))
        .collect();
    let p = |s: &str| format!("/qubes-firewall/{ip}{s}");
    assert_eq!(
        fwdb,
        [
            (&p(""), &String::new()),
            (
                &p("/0000"),
                &"action=accept dst4=192.168.0.0/24 proto=tcp dstports=443-443".to_string()
            ),
            (&p("/0002"), &"action=accept specialtarget=dns".to_string()),
            (&p("/policy"), &"drop".to_string()),
        ]
    );
    // A rule that does not parse, a non-ASCII payload, an empty line: nothing changes.
    let before = std::fs::read(&fw).unwrap();
    assert_eq!(
        call(
            "admin.vm.firewall.Set+",
            "a1",
            b"action=accept\naction=maybe\n"
        ),
        "2\0QubesException\0\0Invalid action: maybe\0"
    );
    assert_eq!(
        call(
            "admin.vm.firewall.Set+",
            "a1",
            b"action=accept\n\naction=drop\n"
        ),
        "2\0QubesException\0\0not enough values to unpack (expected 2, got 1)\0"
    );
    assert_eq!(
        call(
            "admin.vm.firewall.Set+",
            "a1",
            "action=accept comment=caf\u{e9}".as_bytes()
        ),
        "2\0ProtocolError\0\0Rules contains non-ASCII characters\0"
    );
    assert_eq!(
        call("admin.vm.firewall.Get+", "dom0", b""),
        "2\0ProtocolError\0\0expected destination to not be AdminVM\0"
    );
    assert_eq!(std::fs::read(&fw).unwrap(), before);
    assert!(env.events_after(&mut seen).is_empty());
    assert_eq!(call("admin.vm.firewall.Reload+", "a1", b""), "0\0");
    assert_eq!(env.events_after(&mut seen), ["a1|firewall-changed|"]);
    // A rule that expires (the reference's timer, here the helper's): two seconds after Set it
    // is gone from firewall.xml and from the netvm's QubesDB, with `firewall-changed`.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let rules = format!("action=accept dsthost=10.0.0.1 expire={soon}\naction=drop proto=icmp\n");
    assert_eq!(
        call("admin.vm.firewall.Set+", "a1", rules.as_bytes()),
        "0\0"
    );
    assert_eq!(env.events_after(&mut seen), ["a1|firewall-changed|"]);
    let fw_db = || -> Vec<(String, String)> {
        qdb("net1")
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("/qubes-firewall/{ip}/0")))
            .collect()
    };
    assert_eq!(
        fw_db(),
        [
            (p("/0000"), "action=accept dst4=10.0.0.1/32".to_string()),
            (p("/0001"), "action=drop proto=icmp".to_string()),
        ]
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::fs::read_to_string(&fw).unwrap().contains("10.0.0.1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired rule is still in firewall.xml"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        call("admin.vm.firewall.Get+", "a1", b""),
        "0\0action=drop proto=icmp\n"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while env.events_after(&mut { seen }).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(env.events_after(&mut seen), ["a1|firewall-changed|"]);
    assert_eq!(
        fw_db(),
        [(p("/0000"), "action=drop proto=icmp".to_string())]
    );
    let a1 = varlib.join("appvms/a1");
    for f in [
        "private-dirty.img",
        "root-dirty.img",
        "root.img",
        "volatile-dirty.img",
    ] {
        assert!(a1.join(f).exists(), "{f}");
    }
    assert!(env
        .run_dir()
        .join("volume-running-varlibqubes:appvms-a1-root")
        .exists());
    let list = String::from_utf8(env.call("admin.vm.List", "a1", None)).unwrap();
    assert!(
        list.starts_with("0\0a1 class=AppVM state=Running uuid="),
        "{list}"
    );
    // A running qube: Start is a no-op.
    env.events_after(&mut seen);
    assert_eq!(call("admin.vm.Start+", "a1", b""), "0\0");
    assert!(env.events_after(&mut seen).is_empty());
    // Kill undoes the volumes' start: the private image is committed, the rest is gone.
    assert_eq!(call("admin.vm.Kill+", "a1", b""), "0\0");
    assert!(!a1.join("root-dirty.img").exists() && !a1.join("volatile-dirty.img").exists());
    assert!(!a1.join("private-dirty.img").exists() && a1.join("private.img").exists());
    assert!(!env
        .run_dir()
        .join("volume-running-varlibqubes:appvms-a1-root")
        .exists());
    // A qube paused and stopped behind our back (as by its guest, a crash, another tool): the
    // helper logs `domain-paused`, and runs the stop processing (events, private committed,
    // started mark gone). It has an auto-attach assignment, which the reference would attach
    // after the start and this implementation does not: the start says so on stderr.
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let at = xml.find("appvms/a1/volatile").unwrap();
    let at = at + xml[at..].find("</volume-config>\n").unwrap() + "</volume-config>\n".len();
    std::fs::write(
        &xml_path,
        format!(
            "{}      <devices class=\"block\"><device backend-domain=\"dom0\" id=\"sda\" \
             mode=\"auto-attach\" identity=\"*\"/></devices>\n{}",
            &xml[..at],
            &xml[at..]
        ),
    )
    .unwrap();
    let started = run("admin.vm.Start+", "a1", b"");
    assert_eq!(started.stdout, b"0\0");
    assert_eq!(
        String::from_utf8_lossy(&started.stderr),
        "qubes-admin: a1: block device dom0+sda (auto-attach) not attached: qubes-admin-rs \
         attaches only required devices at start\n"
    );
    env.events_after(&mut seen);
    let marks = |env: &Env| {
        std::fs::read_dir(env.run_dir().join("qubes-admin"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("started-"))
            .count()
    };
    assert_eq!(marks(&env), 2, "a1 and net1 are marked started");
    env.virsh(&["suspend", "a1"]);
    assert_eq!(env.wait_events(&mut seen, 1), ["a1|domain-paused|"]);
    env.virsh(&["resume", "a1"]);
    env.virsh(&["destroy", "a1"]);
    let stopped = |vm: &str| -> Vec<String> {
        [
            "property-reset:xid|name=xid",
            "property-reset:stubdom_xid|name=stubdom_xid",
            "property-reset:start_time|name=start_time",
            "domain-stopped|",
            "domain-shutdown|",
        ]
        .iter()
        .map(|e| format!("{vm}|{e}"))
        .collect()
    };
    assert_eq!(env.wait_events(&mut seen, 5), stopped("a1"));
    assert!(!a1.join("private-dirty.img").exists() && a1.join("private.img").exists());
    assert!(!a1.join("root-dirty.img").exists());
    assert_eq!(marks(&env), 1);
    // dom0 and prohibit-start.
    assert_eq!(
        call("admin.vm.Start+", "dom0", b""),
        "2\0QubesVMNotHaltedError\0\0Cannot start Dom0 fake domain!\0"
    );
    assert_eq!(
        call("admin.vm.feature.Set+prohibit-start", "a1", b"broken"),
        "0\0"
    );
    env.events_after(&mut seen);
    assert_eq!(
        call("admin.vm.Start+", "a1", b""),
        "2\0QubesException\0\0Qube start is prohibited. Rationale: broken\0"
    );
    assert_eq!(
        env.events_after(&mut seen),
        ["a1|domain-start-failed|reason=Qube start is prohibited. Rationale: broken"]
    );
    assert_eq!(
        call("admin.vm.feature.Remove+prohibit-start", "a1", b""),
        "0\0"
    );
    env.events_after(&mut seen);
    // Stopped while the helper was down: found when it starts again.
    env.stop_helper();
    env.virsh(&["destroy", "net1"]);
    env.start_helper();
    assert_eq!(env.wait_events(&mut seen, 5), stopped("net1"));
    assert_eq!(marks(&env), 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(env.events_after(&mut seen).is_empty(), "nothing twice");
    // The subscribers got exactly the logged frames: the start with its netvm chain, the no-op
    // start, the kill, the refusals (nothing), the helper's pause and stop processing.
    let logged: Vec<(String, Vec<u8>)> = qubes_admin::events::read_after(&env.run_dir(), sub_from)
        .unwrap()
        .into_iter()
        .map(|(_, e)| (e.subject.clone(), e.frame()))
        .collect();
    let want = |pick: &dyn Fn(&str) -> bool| -> Vec<Vec<u8>> {
        std::iter::once(support::CONN.to_vec())
            .chain(
                logged
                    .iter()
                    .filter(|(s, _)| pick(s))
                    .map(|(_, f)| f.clone()),
            )
            .collect()
    };
    let (all, a1) = (want(&|_| true), want(&|s| s == "a1"));
    assert!(
        a1.len() > 25 && all.len() > a1.len() + 10,
        "{} {}",
        a1.len(),
        all.len()
    );
    assert_eq!(sub_all.wait_for(all.len()), all);
    assert_eq!(sub_a1.wait_for(a1.len()), a1);
    env.stop_helper();
}

/// admin.vm.Stats (exec-service mode, as qrexec runs it): `connection-established`, then every
/// `stats_interval` seconds a `vm-stats` frame per running qube, with libvirt's figures; a
/// halted destination ends the stream with the reference's exception.
#[test]
fn stats_stream() {
    let Some(mut env) = setup() else { return };
    env.start_helper();
    let xml = env.tmp.path().join("vm0000.xml");
    std::fs::write(&xml, domain_xml("vm0000", VM0000)).unwrap();
    env.virsh(&["define", xml.to_str().unwrap()]);
    env.virsh(&["start", "vm0000"]);
    let mut set = env.command();
    set.arg("--socket-request");
    let out = support::run(
        set,
        b"admin.property.Set+stats_interval dom0 name dom0\x001",
    );
    assert_eq!(out.stdout, b"0\0");
    let cmd = || env.command();
    // The test driver's domain: 400 MiB, 2 vCPUs; its CPU time moves on by itself.
    let want = |f: &[u8]| {
        let s = String::from_utf8_lossy(f).replace('\0', "|");
        let (head, tail) = s.split_once("|cpu_time|").unwrap();
        assert_eq!(
            head,
            "1|vm0000|vm-stats|memory_kb|409600|memory_assigned_total|409600|\
             memory_assigned_usable|409600|memory_with_swap_used|409600"
        );
        let rest: Vec<&str> = tail.split('|').collect();
        assert!(rest[0].parse::<u64>().is_ok(), "{s}");
        assert_eq!(rest[1], "cpu_usage", "{s}");
        assert!(rest[2].parse::<u64>().is_ok(), "{s}");
        assert_eq!(rest[3..], ["online_vcpus", "2", "", ""], "{s}");
        rest[2].to_string()
    };
    let mut one = support::Subscriber::service(cmd(), "admin.vm.Stats", "dom0", "vm0000");
    let mut all = support::Subscriber::service(cmd(), "admin.vm.Stats", "dom0", "dom0");
    let t = std::time::Instant::now();
    let frames = one.wait_for(3);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "one sample per stats_interval"
    );
    assert_eq!(want(&frames[1]), "0", "no usage on the first sample");
    want(&frames[2]);
    // dest dom0: every running qube (here only vm0000; the test driver has no dom0 domain).
    let frames = all.wait_for(2);
    want(&frames[1]);
    // A halted destination: connection-established, then the exception.
    let mut halted = support::Subscriber::service(cmd(), "admin.vm.Stats", "dom0", "vm0001");
    assert_eq!(halted.wait_for(1), [support::CONN.to_vec()]);
    let t = std::time::Instant::now();
    while halted.child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut want_halted = support::CONN.to_vec();
    want_halted.extend_from_slice(
        b"2\0QubesVMNotRunningError\0\0Domain not running (either powered off or paused): 'vm0001'\0",
    );
    assert_eq!(halted.raw(), want_halted);
    drop(one);
    drop(all);
    env.virsh(&["destroy", "vm0000"]);
    env.stop_helper();
}

/// A fake qmemman: answers each request with `reply` and records, per connection, the request
/// and whether the client closed it.
fn fake_qmemman(
    path: &Path,
    reply: std::sync::Arc<std::sync::Mutex<&'static str>>,
) -> mpsc::Receiver<String> {
    use std::io::Read;
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while conn.read(&mut b).unwrap_or(0) == 1 {
                line.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            let r = *reply.lock().unwrap();
            conn.write_all(r.as_bytes()).unwrap();
            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            // The grant lasts until the client closes the connection.
            let _ = conn.read(&mut b);
            let _ = tx.send("closed".to_string());
        }
    });
    rx
}

/// A fake `qubesdb-daemon` socket: decodes each request (header, data), answers OK, and
/// sends `(type, path, value)` on.
fn fake_qubesdb(path: &Path) -> mpsc::Receiver<(u32, String, String)> {
    use qubes_admin::runtime::dom0::{qdb_header, qdb_parse_header, QDB_HDR_LEN, QDB_RESP_OK};
    use std::io::Read;
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut hdr = [0u8; QDB_HDR_LEN];
            while conn.read_exact(&mut hdr).is_ok() {
                let (ty, path, len) = qdb_parse_header(&hdr);
                let mut data = vec![0u8; len as usize];
                conn.read_exact(&mut data).unwrap();
                conn.write_all(&qdb_header(QDB_RESP_OK, &path, 0).unwrap())
                    .unwrap();
                let _ = tx.send((ty, path, String::from_utf8(data).unwrap()));
            }
        }
    });
    rx
}

/// A Start with the real dom0 services (`QUBES_DOM0_SERVICES=xen`) against fake servers and
/// daemons: the exact request to qmemman (held until the domain exists), xenstore's
/// permission, `qubesdb-daemon`'s arguments and every QubesDB request on its socket,
/// `qrexec-daemon`'s arguments and environment; then the failures: qmemman refusing (nothing
/// starts) and the qrexec agent not connecting in time (the domain destroyed, the storage
/// stopped), each with `domain-start-failed`.
#[test]
fn dom0_services_against_fake_servers() {
    let Some(mut env) = setup() else { return };
    env.start_helper();
    let tmp = env.tmp.path().to_path_buf();
    let varlib = tmp.join("varlib");
    let kernel = varlib.join("vm-kernels/6.6.0-test");
    std::fs::create_dir_all(&kernel).unwrap();
    std::fs::write(kernel.join("vmlinuz"), b"").unwrap();
    // The daemons: each records its arguments (and qrexec-daemon its start-up variables).
    let bin = tmp.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = |name: &str, extra: &str, tail: &str| {
        let p = bin.join(name);
        let log = tmp.join(format!("{name}.log"));
        let script = format!("#!/bin/sh\necho \"$*{extra}\" >> {}\n{tail}", log.display());
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    record("qubesdb-daemon", "", "");
    record("xenstore-chmod", "", "");
    let exit = tmp.join("qrexec.exit");
    record(
        "qrexec-daemon",
        " timeout=${QREXEC_STARTUP_TIMEOUT-unset} nowait=${QREXEC_STARTUP_NOWAIT-unset}",
        &format!("exit $(cat {} 2>/dev/null || echo 0)\n", exit.display()),
    );
    let log =
        |name: &str| std::fs::read_to_string(tmp.join(format!("{name}.log"))).unwrap_or_default();
    let reply = std::sync::Arc::new(std::sync::Mutex::new("OK\n"));
    let qmemman = fake_qmemman(&env.run_dir().join("qmemman.sock"), reply.clone());
    let qdb = fake_qubesdb(&env.run_dir().join("qubesdb.a1.sock"));
    let call = |m: &str, dest: &str, payload: &[u8]| -> String {
        let mut cmd = env.command();
        cmd.arg("--socket-request")
            .env("QUBES_DOM0_SERVICES", "xen")
            .env("QUBES_QUBESDB_DAEMON", bin.join("qubesdb-daemon"))
            .env("QUBES_QREXEC_DAEMON", bin.join("qrexec-daemon"))
            .env("QUBES_XENSTORE_CHMOD", bin.join("xenstore-chmod"));
        let mut req = format!("{m} dom0 name {dest}\0").into_bytes();
        req.extend_from_slice(payload);
        String::from_utf8(support::run(cmd, &req).stdout).unwrap()
    };
    for (m, dest, p) in [
        (
            "admin.vm.Create.TemplateVM+",
            "dom0",
            &b"name=t1 label=black"[..],
        ),
        ("admin.vm.Create.AppVM+t1", "dom0", b"name=a1 label=green"),
        ("admin.vm.property.Set+netvm", "a1", b""),
        ("admin.vm.feature.Set+service.crond", "a1", b"1"),
        ("admin.vm.feature.Set+service.cups", "a1", b""),
    ] {
        assert_eq!(call(m, dest, p), "0\0", "{m}");
    }
    let mut seen = 0;
    env.events_after(&mut seen);

    assert_eq!(call("admin.vm.Start+", "a1", b""), "0\0");
    let xid = {
        let out = Command::new("virsh")
            .args(["-q", "-c", &env.uri, "domid", "a1"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    // 400 MiB of memory, 4 MiB of Xen overhead, 1.5 MiB for each of the 2 vCPUs.
    assert_eq!(
        qmemman.recv_timeout(Duration::from_secs(5)).unwrap(),
        "426770432\n"
    );
    assert_eq!(
        qmemman.recv_timeout(Duration::from_secs(5)).unwrap(),
        "closed"
    );
    assert_eq!(
        log("xenstore-chmod"),
        format!("/local/domain/{xid}/memory n{xid}\n")
    );
    assert_eq!(log("qubesdb-daemon"), format!("{xid} a1\n"));
    assert_eq!(
        log("qrexec-daemon"),
        format!("-q {xid} a1 user timeout=unset nowait=1\n")
    );
    let got: Vec<(u32, String, String)> = qdb.try_iter().collect();
    let (seed, got): (Vec<_>, Vec<_>) = got
        .into_iter()
        .partition(|(_, p, _)| p == "/qubes-random-seed");
    assert_eq!(seed.len(), 1);
    assert_eq!(seed[0].2.len(), 88);
    let got: Vec<(u32, String, String)> = got
        .into_iter()
        .filter(|(_, p, _)| p != "/qubes-timezone")
        .collect();
    let want: Vec<(u32, String, String)> = [
        ("/name", "a1"),
        ("/type", "AppVM"),
        ("/default-user", "user"),
        ("/qubes-vm-type", "AppVM"),
        ("/qubes-vm-updateable", "False"),
        ("/qubes-vm-persistence", "rw-only"),
        ("/qubes-debug-mode", "0"),
        ("/qubes-base-template", "t1"),
        ("/qubes-block-devices", ""),
        ("/qubes-usb-devices", ""),
        ("/qubes-service/crond", "1"),
        ("/qubes-service/cups", "0"),
        ("/qubes-service/meminfo-writer", "0"),
        ("/qubes-gui-domain-xid", "0"),
        ("/qubes-audio-domain-xid", "0"),
        ("/keyboard-layout", "us++"),
    ]
    .iter()
    .map(|(p, v)| (1, p.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
    let evs = env.events_after(&mut seen);
    assert_eq!(
        evs.first().map(String::as_str),
        Some("a1|domain-pre-start|start_guid=True,mem_required=None")
    );
    assert_eq!(
        evs.last().map(String::as_str),
        Some("a1|domain-start|start_guid=True")
    );
    assert!(evs.contains(&"a1|domain-qdb-create|".to_string()));
    assert_eq!(call("admin.vm.Kill+", "a1", b""), "0\0");
    env.events_after(&mut seen);

    // qmemman cannot free the memory: nothing starts.
    *reply.lock().unwrap() = "FAIL\n";
    assert_eq!(
        call("admin.vm.Start+", "a1", b""),
        "2\0QubesMemoryError\0\0Not enough memory to start domain 'a1'\0"
    );
    assert_eq!(
        env.events_after(&mut seen),
        [
            "a1|domain-pre-start|start_guid=True,mem_required=None",
            "a1|domain-start-failed|reason=Not enough memory to start domain 'a1'",
        ]
    );
    assert!(!varlib.join("appvms/a1/root-dirty.img").exists());
    *reply.lock().unwrap() = "OK\n";

    // With the `qrexec` feature the daemon waits `qrexec_timeout` s for the agent; its exit
    // status 3 (no agent) fails the Start after the domain ran: destroyed, storage stopped.
    assert_eq!(call("admin.vm.feature.Set+qrexec", "a1", b"1"), "0\0");
    assert_eq!(
        call("admin.vm.property.Set+qrexec_timeout", "a1", b"7"),
        "0\0"
    );
    std::fs::write(&exit, "3").unwrap();
    std::fs::remove_file(tmp.join("qrexec-daemon.log")).unwrap();
    env.events_after(&mut seen);
    let why = "Cannot connect to qrexec agent for 7 seconds, see /var/log/xen/console/guest-a1.log for details";
    assert_eq!(
        call("admin.vm.Start+", "a1", b""),
        format!("2\0QubesVMError\0\0{why}\0")
    );
    assert!(
        log("qrexec-daemon").ends_with(" a1 user timeout=7 nowait=unset\n"),
        "{}",
        log("qrexec-daemon")
    );
    let evs = env.events_after(&mut seen);
    assert_eq!(
        evs.last().unwrap(),
        &format!("a1|domain-start-failed|reason={why}")
    );
    assert!(evs.contains(&"a1|domain-unpaused|".to_string()), "{evs:?}");
    assert!(!evs.iter().any(|e| e.contains("|domain-start|")), "{evs:?}");
    let state = Command::new("virsh")
        .args(["-q", "-c", &env.uri, "domstate", "a1"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "shut off");
    assert!(!varlib.join("appvms/a1/root-dirty.img").exists());
    assert!(!env
        .run_dir()
        .join("volume-running-varlibqubes:appvms-a1-root")
        .exists());
    // Any other failure: its stderr.
    std::fs::write(&exit, "1").unwrap();
    assert_eq!(
        call("admin.vm.Start+", "a1", b""),
        "2\0QubesVMError\0\0qrexec-daemon startup failed: \0"
    );
    env.stop_helper();
}
