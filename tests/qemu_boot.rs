//! End to end on a real emulator: a sandbox dom0 (the embedded qubes.xml) on a private libvirtd
//! with the QEMU session driver, a real kernel (Debian's, `scripts/guest-kernel.sh`) in its
//! linux-kernel pool; a template and a qube created, started (a QEMU process that boots),
//! paused, unpaused, shut down by ACPI with `wait`, started again, killed, removed, each step
//! checked through our calls, through `virsh` and in the event log.
//!
//! Skips, saying why, without qemu-system-x86_64, libvirtd, virsh, or a guest kernel (the first
//! run downloads Debian's linux-image .deb into `target/guest-kernel`). QEMU runs as the session
//! daemon's user (uid 65534 when the test runs as root, without KVM: TCG), so the sandbox is
//! owned by that user and every call runs as it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::qemu::QemuDom0;

const CALL: &str = env!("CARGO_BIN_EXE_qubes-admin-call");
const EVENTD: &str = env!("CARGO_BIN_EXE_qubes-admin-eventd");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A child process killed when the test ends (also when an assertion fails), so that no
/// helper outlives it (holding the test's output pipes open).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Env {
    dom0: QemuDom0,
    dir: PathBuf,
    uri: String,
}

impl Env {
    fn command(&self) -> Command {
        self.dom0.command(CALL)
    }

    /// One call in socket framing; the whole reply.
    fn call(&self, method: &str, dest: &str, payload: &str) -> String {
        let mut req = format!("{method} dom0 name {dest}\0").into_bytes();
        req.extend_from_slice(payload.as_bytes());
        // No time limit (support::run has one): a Shutdown+wait of a guest on a loaded
        // machine may take long.
        let mut child = self
            .command()
            .arg("--socket-request")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &req).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    }

    fn ok(&self, method: &str, dest: &str, payload: &str) -> String {
        let r = self.call(method, dest, payload);
        let body = r
            .strip_prefix("0\0")
            .unwrap_or_else(|| panic!("{method} {dest}: {r:?}"));
        body.to_string()
    }

    fn domstate(&self, name: &str) -> String {
        let out = Command::new("virsh")
            .args(["-q", "-c", &self.uri, "domstate", name])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn power_state(&self, name: &str) -> String {
        let s = self.ok("admin.vm.CurrentState", name, "");
        s.split(' ')
            .find_map(|kv| kv.strip_prefix("power_state="))
            .unwrap()
            .to_string()
    }

    fn events_after(&self, seen: &mut u64, subject: &str) -> Vec<String> {
        let evs = qubes_admin::events::read_after(&self.dir.join("run"), *seen).unwrap();
        if let Some((s, _)) = evs.last() {
            *seen = *s;
        }
        evs.iter()
            .filter(|(_, e)| e.subject == subject)
            .map(|(_, e)| e.name.clone())
            .collect()
    }

    /// Waits until the guest's console log (in the qube's directory) shows `line`.
    fn wait_console(&self, qube: &str, line: &str) {
        let log = self
            .dir
            .join("varlib/appvms")
            .join(qube)
            .join("console.log");
        let t = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(line) {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "no {line:?} on {qube}'s console after 120 s; it shows:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn setup() -> Option<Env> {
    match support::qemu::setup(&repo(), CALL) {
        Ok(dom0) => Some(Env {
            dir: dom0.dir.clone(),
            uri: dom0.uri.clone(),
            dom0,
        }),
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

#[test]
fn a_real_qube_boots_pauses_shuts_down_and_is_killed() {
    let Some(env) = setup() else { return };
    let version = env.dom0.kernel.clone();
    env.ok("admin.property.Set+default_kernel", "dom0", &version);
    env.ok(
        "admin.vm.Create.TemplateVM",
        "dom0",
        "name=boot-tpl label=black",
    );
    env.ok(
        "admin.vm.Create.AppVM+boot-tpl",
        "dom0",
        "name=boot label=green",
    );
    env.ok("admin.vm.property.Set+netvm", "boot", "");
    env.ok("admin.vm.property.Set+memory", "boot", "256");
    env.ok("admin.vm.property.Set+kernelopts", "boot", "console=ttyS0");
    let mut seen = 0;
    env.events_after(&mut seen, "boot");

    // Start: a QEMU process that boots our kernel (TCG unless the daemon's user has KVM).
    assert_eq!(env.call("admin.vm.Start", "boot", ""), "0\0");
    assert_eq!(env.domstate("boot"), "running");
    assert_eq!(env.power_state("boot"), "Running");
    let l = env.ok("admin.vm.List", "boot", "");
    assert!(l.contains(" state=Running "), "{l}");
    env.wait_console("boot", "qubes-admin-rs guest up");
    assert_eq!(
        env.events_after(&mut seen, "boot"),
        [
            "domain-pre-start",
            "domain-pre-spawn",
            "property-reset:xid",
            "property-reset:stubdom_xid",
            "property-reset:start_time",
            "domain-spawn",
            "domain-qdb-create",
            "domain-pre-unpaused",
            "domain-unpaused",
            "domain-start"
        ]
    );
    let xml = Command::new("virsh")
        .args(["-c", &env.uri, "dumpxml", "boot"])
        .output()
        .unwrap();
    let xml = String::from_utf8(xml.stdout).unwrap();
    assert!(
        xml.contains(&format!("vm-kernels/{version}/vmlinuz</kernel>")),
        "{xml}"
    );
    assert!(xml.contains("<cmdline>console=ttyS0</cmdline>"), "{xml}");

    // Pause and unpause: the vCPUs stop and go on.
    assert_eq!(env.call("admin.vm.Pause", "boot", ""), "0\0");
    assert_eq!(env.domstate("boot"), "paused");
    assert_eq!(env.power_state("boot"), "Paused");
    assert_eq!(env.call("admin.vm.Unpause", "boot", ""), "0\0");
    assert_eq!(env.domstate("boot"), "running");
    assert_eq!(env.power_state("boot"), "Running");
    assert_eq!(
        env.events_after(&mut seen, "boot"),
        [
            "domain-pre-paused",
            "domain-pre-unpaused",
            "domain-unpaused"
        ]
    );

    // Shutdown+wait: the ACPI power button; the guest powers itself off; stop processing.
    assert_eq!(env.call("admin.vm.Shutdown+wait", "boot", ""), "0\0");
    env.wait_console("boot", "power button, powering off");
    assert_eq!(env.domstate("boot"), "shut off");
    assert_eq!(env.power_state("boot"), "Halted");
    assert_eq!(
        env.events_after(&mut seen, "boot"),
        [
            "domain-pre-shutdown",
            "property-reset:xid",
            "property-reset:stubdom_xid",
            "property-reset:start_time",
            "domain-stopped",
            "domain-shutdown"
        ]
    );

    // Start again, then Kill: the QEMU process goes at once.
    assert_eq!(env.call("admin.vm.Start", "boot", ""), "0\0");
    assert_eq!(env.domstate("boot"), "running");
    assert_eq!(env.call("admin.vm.Kill", "boot", ""), "0\0");
    assert_eq!(env.domstate("boot"), "shut off");
    assert_eq!(env.power_state("boot"), "Halted");
    assert!(env
        .ok("admin.vm.List", "boot", "")
        .contains(" state=Halted "));

    // With the helper running (as its service unit would): the qube stops by itself, once by
    // a shutdown from outside our API (libvirt's ACPI power button; the guest powers off) and
    // once by its QEMU process being killed. A subscriber sees the stop processing's events and
    // the private volume is committed each time.
    let _helper = KillOnDrop(
        env.dom0
            .command(EVENTD)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sock = env.dir.join("run/qubes-admin/eventd.sock");
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "no helper socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut sub = support::Subscriber::spawn(env.command(), "dom0", "boot");
    let stopped: Vec<Vec<u8>> = [
        &b"1\0boot\0property-reset:xid\0name\0xid\0\0"[..],
        b"1\0boot\0property-reset:stubdom_xid\0name\0stubdom_xid\0\0",
        b"1\0boot\0property-reset:start_time\0name\0start_time\0\0",
        b"1\0boot\0domain-stopped\0\0",
        b"1\0boot\0domain-shutdown\0\0",
    ]
    .iter()
    .map(|f| f.to_vec())
    .collect();
    let private = env.dir.join("varlib/appvms/boot");
    let mut frames = 1;
    for how in ["shutdown", "kill"] {
        assert_eq!(env.call("admin.vm.Start", "boot", ""), "0\0");
        frames += 10; // the Start's events
        env.wait_console("boot", "qubes-admin-rs guest up");
        assert!(private.join("private-dirty.img").exists());
        if how == "shutdown" {
            // Sent again while the guest has not reacted (a loaded machine may still be
            // between "up" and listening).
            let t = Instant::now();
            while env.domstate("boot") != "shut off" {
                assert!(
                    t.elapsed() < Duration::from_secs(120),
                    "boot ignores shutdown"
                );
                let _ = Command::new("virsh")
                    .args(["-q", "-c", &env.uri, "shutdown", "boot"])
                    .status();
                std::thread::sleep(Duration::from_secs(3));
            }
        } else {
            let st = Command::new("pkill")
                .args(["-KILL", "-f", "guest=boot,"])
                .status()
                .unwrap();
            assert!(st.success(), "no QEMU process for boot");
        }
        frames += stopped.len();
        let got = sub.wait_for_within(frames, Duration::from_secs(120));
        assert_eq!(got[frames - stopped.len()..], stopped[..], "after {how}");
        assert_eq!(env.domstate("boot"), "shut off");
        assert!(!private.join("private-dirty.img").exists(), "after {how}");
        assert!(private.join("private.img").exists());
    }
    drop(sub);

    env.ok("admin.vm.Remove", "boot", "");
    env.ok("admin.vm.Remove", "boot-tpl", "");
    assert!(!env.dir.join("varlib/appvms/boot").exists());
}
