//! A sandbox dom0 under a local directory: an embedded default qubes.xml (written by the real
//! qubesd: dom0, a fedora-41 template, sys-net, sys-firewall, default-dvm, work, personal,
//! untrusted, vault) with the directory layout of `/var/lib/qubes`. No Xen needed: runtime
//! state comes from libvirt's test driver.

use std::io;
use std::path::Path;

use crate::Config;

const DEFAULT_XML: &str = include_str!("default-qubes.xml");
/// The kernel the embedded qubes.xml names as `default_kernel`.
pub const KERNEL: &str = "6.6.0-test";

/// Creates the sandbox in `dir` (which must not hold a qubes.xml yet) and returns its config.
pub fn init(dir: &Path) -> io::Result<Config> {
    let dir = std::path::absolute(dir)?;
    let xml = dir.join("qubes.xml");
    if xml.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", xml.display()),
        ));
    }
    let varlib = dir.join("varlib");
    for sub in ["appvms", "vm-templates"] {
        std::fs::create_dir_all(varlib.join(sub))?;
    }
    let kernel = varlib.join("vm-kernels").join(KERNEL);
    std::fs::create_dir_all(&kernel)?;
    for f in ["vmlinuz", "initramfs"] {
        std::fs::write(kernel.join(f), b"")?;
    }
    std::fs::create_dir_all(dir.join("run"))?;
    std::fs::create_dir_all(dir.join("etc/policy.d"))?;
    let text = DEFAULT_XML.replace("@VARLIB@", &varlib.to_string_lossy());
    std::fs::write(&xml, text)?;
    Ok(config_for(&dir))
}

/// The configuration of a sandbox in `dir` (libvirt: the test driver).
pub fn config_for(dir: &Path) -> Config {
    Config {
        xml_path: dir.join("qubes.xml"),
        base_dir: dir.join("varlib"),
        libvirt_uri: "test:///default".to_string(),
        run_dir: dir.join("run"),
        policy_dir: dir.join("etc/policy.d"),
        policy_compat_dir: dir.join("etc/qubes-rpc/policy"),
        template_dirs: vec![dir.join("etc/templates")],
        dom0: crate::config::Dom0Config::for_uri("test:///default"),
        ..Config::default()
    }
}

/// Shell `export` lines for the sandbox's environment contract (values single-quoted, so that a
/// sandbox path with spaces or quotes survives `source`).
pub fn env_lines(c: &Config) -> String {
    let vars = [
        ("QUBES_XML_PATH", c.xml_path.to_string_lossy()),
        ("QUBES_BASE_DIR", c.base_dir.to_string_lossy()),
        ("QUBES_LIBVIRT_URI", c.libvirt_uri.as_str().into()),
        ("QUBES_RUN_DIR", c.run_dir.to_string_lossy()),
        ("QUBES_POLICY_DIR", c.policy_dir.to_string_lossy()),
        (
            "QUBES_POLICY_COMPAT_DIR",
            c.policy_compat_dir.to_string_lossy(),
        ),
        (
            "QUBES_TEMPLATE_DIRS",
            std::env::join_paths(&c.template_dirs)
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
                .into(),
        ),
        // No qmemman, QubesDB or qrexec here, whatever the URI.
        ("QUBES_DOM0_SERVICES", "sandbox".into()),
    ];
    vars.iter()
        .map(|(k, v)| format!("export {k}='{}'\n", v.replace('\'', "'\\''")))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Regression: the paths were written unquoted, so `source env` of a sandbox under a
    /// directory with a space exported a truncated path (and ran the rest as a command).
    #[test]
    fn env_lines_survive_the_shell() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("my sand'box");
        let config = config_for(&odd);
        let script = format!(
            "{}printf '%s\\n' \"$QUBES_XML_PATH\" \"$QUBES_LIBVIRT_URI\"",
            env_lines(&config)
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{}\ntest:///default\n", config.xml_path.display())
        );
    }
}
