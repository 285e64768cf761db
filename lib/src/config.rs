//! The environment contract: where the store, runtime files, libvirt and policy live.
//!
//! The variable names are fixed (tooling outside this repository sets them); the defaults are
//! those of a real Qubes dom0.

use std::path::PathBuf;
use std::time::Duration;

/// Paths and URIs one call works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `QUBES_XML_PATH`, default `/var/lib/qubes/qubes.xml`.
    pub xml_path: PathBuf,
    /// `QUBES_BASE_DIR`, default `/var/lib/qubes` (VM dirs `appvms/<name>`, `vm-templates/<name>`,
    /// kernels under `vm-kernels/`).
    pub base_dir: PathBuf,
    /// `QUBES_LIBVIRT_URI`, default `xen:///`.
    pub libvirt_uri: String,
    /// `QUBES_RUN_DIR`, default `/run/qubes`: event log, runtime snapshot, lock files.
    pub run_dir: PathBuf,
    /// `QUBES_POLICY_DIR`, default `/etc/qubes/policy.d`.
    pub policy_dir: PathBuf,
    /// `QUBES_POLICY_COMPAT_DIR`, default `/etc/qubes-rpc/policy`: what `!compat-4.0` reads.
    pub policy_compat_dir: PathBuf,
    /// Where the user overrides of the Xen domain XML live (`runtime::xen_template`):
    /// `QUBES_TEMPLATE_DIRS` (colon-separated), default `/etc/qubes/templates` then
    /// `/usr/share/qubes/templates`, the reference's search path.
    pub template_dirs: Vec<PathBuf>,
    /// How long a writer waits for the qubes.xml lock before answering "busy"
    /// (`QUBES_LOCK_TIMEOUT_MS`, default 10 s).
    pub lock_timeout: Duration,
    /// The dom0 services a started qube needs (qmemman, QubesDB, qrexec).
    pub dom0: Dom0Config,
}

/// Whether `uri` names libvirt's Xen driver (`xen:///`, `xen+ssh://…`).
pub fn is_xen_uri(uri: &str) -> bool {
    uri.starts_with("xen")
}

/// Which implementation of the dom0 services a Start uses (`QUBES_DOM0_SERVICES`: `xen` or
/// `sandbox`; by default `xen` for a Xen libvirt URI, `sandbox` otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dom0Kind {
    Xen,
    Sandbox,
}

/// Where the real dom0 services live. Their sockets are in the run directory, as on a dom0
/// (`/run/qubes/qmemman.sock`, `/run/qubes/qubesdb.<name>.sock`); the daemons' paths can be
/// changed (`QUBES_QUBESDB_DAEMON`, `QUBES_QREXEC_DAEMON`, `QUBES_XENSTORE_CHMOD`), for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dom0Config {
    pub kind: Dom0Kind,
    pub qubesdb_daemon: PathBuf,
    pub qrexec_daemon: PathBuf,
    pub xenstore_chmod: PathBuf,
}

impl Dom0Config {
    /// The defaults for a libvirt URI.
    pub fn for_uri(uri: &str) -> Self {
        Dom0Config {
            kind: if is_xen_uri(uri) {
                Dom0Kind::Xen
            } else {
                Dom0Kind::Sandbox
            },
            qubesdb_daemon: PathBuf::from("/usr/sbin/qubesdb-daemon"),
            qrexec_daemon: PathBuf::from("/usr/sbin/qrexec-daemon"),
            xenstore_chmod: PathBuf::from("/usr/bin/xenstore-chmod"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            xml_path: PathBuf::from("/var/lib/qubes/qubes.xml"),
            base_dir: PathBuf::from("/var/lib/qubes"),
            libvirt_uri: "xen:///".to_string(),
            run_dir: PathBuf::from("/run/qubes"),
            policy_dir: PathBuf::from("/etc/qubes/policy.d"),
            policy_compat_dir: PathBuf::from("/etc/qubes-rpc/policy"),
            template_dirs: vec![
                PathBuf::from("/etc/qubes/templates"),
                PathBuf::from("/usr/share/qubes/templates"),
            ],
            lock_timeout: Duration::from_secs(10),
            dom0: Dom0Config::for_uri("xen:///"),
        }
    }
}

impl Config {
    /// Reads the `QUBES_*` variables, falling back to the dom0 defaults.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var_os(k))
    }

    /// Same as [`Config::from_env`] with an explicit lookup (for tests and embedding).
    pub fn from_lookup(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Self {
        let mut c = Config::default();
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        if let Some(v) = nonempty("QUBES_XML_PATH") {
            c.xml_path = v.into();
        }
        if let Some(v) = nonempty("QUBES_BASE_DIR") {
            c.base_dir = v.into();
        }
        if let Some(v) = nonempty("QUBES_LIBVIRT_URI") {
            c.libvirt_uri = v.to_string_lossy().into_owned();
        }
        if let Some(v) = nonempty("QUBES_RUN_DIR") {
            c.run_dir = v.into();
        }
        if let Some(v) = nonempty("QUBES_POLICY_DIR") {
            c.policy_dir = v.into();
        }
        if let Some(v) = nonempty("QUBES_POLICY_COMPAT_DIR") {
            c.policy_compat_dir = v.into();
        }
        if let Some(v) = nonempty("QUBES_TEMPLATE_DIRS") {
            c.template_dirs = std::env::split_paths(&v).collect();
        }
        if let Some(ms) = nonempty("QUBES_LOCK_TIMEOUT_MS")
            .and_then(|v| v.to_str().and_then(|s| s.parse::<u64>().ok()))
        {
            c.lock_timeout = Duration::from_millis(ms);
        }
        c.dom0 = Dom0Config::for_uri(&c.libvirt_uri);
        match nonempty("QUBES_DOM0_SERVICES")
            .as_deref()
            .and_then(|v| v.to_str())
        {
            Some("xen") => c.dom0.kind = Dom0Kind::Xen,
            Some("sandbox") => c.dom0.kind = Dom0Kind::Sandbox,
            _ => {}
        }
        for (var, field) in [
            ("QUBES_QUBESDB_DAEMON", &mut c.dom0.qubesdb_daemon),
            ("QUBES_QREXEC_DAEMON", &mut c.dom0.qrexec_daemon),
            ("QUBES_XENSTORE_CHMOD", &mut c.dom0.xenstore_chmod),
        ] {
            if let Some(v) = nonempty(var) {
                *field = v.into();
            }
        }
        c
    }
}
