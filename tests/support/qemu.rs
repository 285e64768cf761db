//! A sandbox dom0 whose qubes are real QEMU guests, for `tests/qemu_boot.rs` and
//! `services/benches/qemu.rs`: the embedded qubes.xml (`qubes-admin-call sandbox`), a private
//! libvirtd with the QEMU session driver, and the guest kernel of `scripts/guest-kernel.sh` in
//! its linux-kernel pool. QEMU runs as the session daemon's user (uid 65534 when we are root),
//! so the sandbox belongs to that user and [`QemuDom0::command`] runs programs as it.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const NOBODY: u32 = 65534;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
        || Path::new("/usr/sbin").join(cmd).exists()
}

/// The sandbox; its libvirtd (and the guests it still runs) stop, and its files go, on drop.
pub struct QemuDom0 {
    /// The dom0 directory: `qubes.xml`, `varlib/`, `run/`.
    pub dir: PathBuf,
    pub uri: String,
    /// The guest kernel's version (the sandbox's `default_kernel` once set).
    pub kernel: String,
    libvirtd: PathBuf,
    lv_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for QemuDom0 {
    fn drop(&mut self) {
        let _ = Command::new(&self.libvirtd)
            .arg("stop")
            .arg(&self.lv_dir)
            .status();
    }
}

/// Sets the sandbox up (`repo`: the repository; `call`: the `qubes-admin-call` binary). `Err`
/// says why it cannot run here (a missing package, no guest kernel).
pub fn setup(repo: &Path, call: &str) -> Result<QemuDom0, String> {
    for (cmd, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("libvirtd", "libvirt-daemon"),
        ("virsh", "libvirt-clients"),
    ] {
        if !have(cmd) {
            return Err(format!("{cmd} not installed (Debian package {pkg})"));
        }
    }
    let kernels = repo.join("target/guest-kernel");
    let out = Command::new(repo.join("scripts/guest-kernel.sh"))
        .arg(&kernels)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "no guest kernel: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let kernel = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| e.to_string())?;
    let libvirtd = repo.join("tests/support/libvirtd.sh");
    let lv_dir = tmp.path().join("libvirtd");
    let out = Command::new(&libvirtd)
        .env("LIBVIRTD_DRIVER", "qemu")
        .arg("start")
        .arg(&lv_dir)
        .output()
        .map_err(|e| e.to_string())?;
    assert!(
        out.status.success(),
        "libvirtd.sh start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uri = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(uri.starts_with("qemu+unix:///session?socket="), "{uri}");
    let dir = tmp.path().join("dom0");
    let sb = QemuDom0 {
        dir: dir.clone(),
        uri: uri.clone(),
        kernel: kernel.clone(),
        libvirtd,
        lv_dir,
        _tmp: tmp,
    };
    let out = Command::new(call)
        .arg("sandbox")
        .arg(&dir)
        .arg(&uri)
        .output()
        .map_err(|e| e.to_string())?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kdir = dir.join("varlib/vm-kernels").join(&kernel);
    std::fs::create_dir_all(&kdir).map_err(|e| e.to_string())?;
    for f in ["vmlinuz", "initramfs"] {
        std::fs::copy(kernels.join(&kernel).join(f), kdir.join(f)).map_err(|e| e.to_string())?;
    }
    if is_root() {
        let st = Command::new("chown")
            .arg("-R")
            .arg(format!("{NOBODY}:{NOBODY}"))
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
        assert!(st.success());
    }
    Ok(sb)
}

impl QemuDom0 {
    /// `program` with the sandbox's environment contract (and PATH), as the sandbox's user.
    pub fn command(&self, program: &str) -> Command {
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
}
