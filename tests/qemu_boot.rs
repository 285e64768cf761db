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

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CALL: &str = env!("CARGO_BIN_EXE_qubes-admin-call");
const EVENTD: &str = env!("CARGO_BIN_EXE_qubes-admin-eventd");
const NOBODY: u32 = 65534;

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

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
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

/// The private libvirtd, stopped on drop (also when an assertion fails).
struct Daemon(PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tests/support/libvirtd.sh"))
            .arg("stop")
            .arg(&self.0)
            .status();
    }
}

struct Env {
    dir: PathBuf,
    uri: String,
    _daemon: Daemon,
    _tmp: tempfile::TempDir,
}

impl Env {
    fn command(&self) -> Command {
        self.command_for(CALL)
    }

    /// `program` with the sandbox's environment, as the sandbox's user.
    fn command_for(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("QUBES_XML_PATH", self.dir.join("qubes.xml"))
            .env("QUBES_BASE_DIR", self.dir.join("varlib"))
            .env("QUBES_RUN_DIR", self.dir.join("run"))
            .env("QUBES_POLICY_DIR", self.dir.join("etc/policy.d"))
            .env("QUBES_LIBVIRT_URI", &self.uri)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        if is_root() {
            // (std clears the supplementary groups when root sets a uid)
            c.uid(NOBODY).gid(NOBODY);
        }
        c
    }

    /// One call in socket framing; the whole reply.
    fn call(&self, method: &str, dest: &str, payload: &str) -> String {
        let mut req = format!("{method} dom0 name {dest}\0").into_bytes();
        req.extend_from_slice(payload.as_bytes());
        let out = qubes_admin_test_run(self.command().arg("--socket-request"), &req);
        String::from_utf8(out).unwrap()
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

fn qubes_admin_test_run(c: &mut Command, stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap().stdout
}

fn chown_tree(p: &Path) {
    if !is_root() {
        return;
    }
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{NOBODY}:{NOBODY}"))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

fn setup() -> Option<Env> {
    for (cmd, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("libvirtd", "libvirt-daemon"),
        ("virsh", "libvirt-clients"),
    ] {
        if !have(cmd) {
            eprintln!("SKIPPED: {cmd} not installed (Debian package {pkg})");
            return None;
        }
    }
    let kernels = repo().join("target/guest-kernel");
    let out = Command::new(repo().join("scripts/guest-kernel.sh"))
        .arg(&kernels)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "SKIPPED: no guest kernel: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let version = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let lv_dir = tmp.path().join("libvirtd");
    let out = Command::new(repo().join("tests/support/libvirtd.sh"))
        .env("LIBVIRTD_DRIVER", "qemu")
        .arg("start")
        .arg(&lv_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "libvirtd.sh start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uri = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(uri.starts_with("qemu+unix:///session?socket="), "{uri}");
    let daemon = Daemon(lv_dir);

    let dir = tmp.path().join("dom0");
    let out = Command::new(CALL)
        .arg("sandbox")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kdir = dir.join("varlib/vm-kernels").join(&version);
    std::fs::create_dir_all(&kdir).unwrap();
    for f in ["vmlinuz", "initramfs"] {
        std::fs::copy(kernels.join(&version).join(f), kdir.join(f)).unwrap();
    }
    chown_tree(&dir);
    Some(Env {
        dir,
        uri,
        _daemon: daemon,
        _tmp: tmp,
    })
}

#[test]
fn a_real_qube_boots_pauses_shuts_down_and_is_killed() {
    let Some(env) = setup() else { return };
    let version = std::fs::read_dir(env.dir.join("varlib/vm-kernels"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .find(|v| v != qubes_admin::sandbox::KERNEL)
        .unwrap();
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
        env.command_for(EVENTD)
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
        frames += 9; // the Start's events
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
