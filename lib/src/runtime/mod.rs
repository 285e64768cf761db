//! Runtime state (power state, memory, CPU time, host size) comes from the hypervisor, never from
//! qubes.xml. OWNER: hypervisor helper.
//!
//! Per-call processes do not link libvirt (it costs ~14 ms before `main`). They ask the one
//! long-lived helper, `qubes-admin-eventd`, over a unix socket ([`client::EventdClient`]); when
//! no helper runs they execute `qubes-admin-eventd --once` instead. The helper and the `--once`
//! mode are the only code that talks to libvirt ([`libvirt`], [`eventd`], feature `libvirt`).
//! See docs/runtime.md.

pub mod client;
pub mod dom0;
pub mod domain_xml;
pub mod proto;
pub mod xen_template;

#[cfg(feature = "libvirt")]
pub mod eventd;
#[cfg(feature = "libvirt")]
pub mod libvirt;

/// A lifecycle change libvirt reported for a domain while no call was looking: what the helper
/// hands to the library's reaction (`react_to_domain_event` at the crate root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEvent {
    /// Canonical (lower-case) UUID.
    pub uuid: String,
    pub kind: DomainEventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainEventKind {
    /// The domain stopped (shutdown from inside, crash, destroy by someone else).
    Stopped,
    /// The domain was paused.
    Suspended,
}

/// The file-name prefix of [`started_mark`]s (the helper's reconciliation lists them).
pub const STARTED_PREFIX: &str = "started-";

/// `<run_dir>/qubes-admin/started-<uuid>`: exists from a successful Start until the qube's stop
/// processing ran. Whoever stops the qube (Kill, Shutdown+wait, the helper for a qube that
/// stopped by itself) runs the stop processing once, under the qube's lock, if the mark is
/// there; the helper's reconciliation finds qubes that stopped while it was down.
pub fn started_mark(run_dir: &std::path::Path, uuid: &str) -> std::path::PathBuf {
    client::helper_dir(run_dir).join(format!("{STARTED_PREFIX}{}", uuid.to_ascii_lowercase()))
}

/// libvirt's `virDomainState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomState {
    NoState,
    Running,
    Blocked,
    Paused,
    Shutdown,
    Shutoff,
    Crashed,
    PmSuspended,
}

impl DomState {
    /// libvirt's numeric value (`VIR_DOMAIN_*`).
    pub fn code(self) -> u32 {
        match self {
            DomState::NoState => 0,
            DomState::Running => 1,
            DomState::Blocked => 2,
            DomState::Paused => 3,
            DomState::Shutdown => 4,
            DomState::Shutoff => 5,
            DomState::Crashed => 6,
            DomState::PmSuspended => 7,
        }
    }

    /// From libvirt's numeric value; `None` for values this build does not know.
    pub fn from_code(code: u32) -> Option<DomState> {
        Some(match code {
            0 => DomState::NoState,
            1 => DomState::Running,
            2 => DomState::Blocked,
            3 => DomState::Paused,
            4 => DomState::Shutdown,
            5 => DomState::Shutoff,
            6 => DomState::Crashed,
            7 => DomState::PmSuspended,
            _ => return None,
        })
    }
}

/// One libvirt domain.
///
/// From [`Hypervisor::domain`] every field is live. In [`Hypervisor::runtime`] (the helper's
/// cache) `name`, `uuid`, `id`, `state` and `active` are current up to the event latency window,
/// while the numeric fields (`mem_kib`, `max_mem_kib`, `vcpus`, `cpu_time_ns`) are a snapshot
/// from the domain's last lifecycle event: use [`Hypervisor::domain`] for live figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRuntime {
    pub name: String,
    /// Canonical lowercase UUID.
    pub uuid: String,
    /// libvirt domain ID (-1 when inactive).
    pub id: i64,
    pub state: DomState,
    pub active: bool,
    /// Current memory in KiB (memoryStats "actual", else info().memory).
    pub mem_kib: u64,
    pub max_mem_kib: u64,
    pub vcpus: u32,
    pub cpu_time_ns: u64,
}

/// Host size (global `maxmem` and `no_cpus` defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostInfo {
    pub memory_mib: u64,
    pub cpus: u32,
}

/// Everything one call needs to know about the running system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub host: HostInfo,
    pub domains: Vec<DomainRuntime>,
}

impl Runtime {
    pub fn by_uuid(&self, uuid: &str) -> Option<&DomainRuntime> {
        self.domains
            .iter()
            .find(|d| d.uuid.eq_ignore_ascii_case(uuid))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HvError {
    #[error("hypervisor unavailable: {0}")]
    Unavailable(String),
    /// The helper or the fallback answered something this build cannot read.
    #[error("hypervisor helper protocol error: {0}")]
    Protocol(String),
    /// libvirt refused an operation (its message).
    #[error("{0}")]
    Failed(String),
}

pub use proto::Op;

/// Source of runtime state, and the hypervisor's lifecycle operations.
pub trait Hypervisor {
    /// Host size and every libvirt domain (state as of the helper's cache).
    fn runtime(&self) -> Result<Runtime, HvError>;

    /// Live state of one domain (by canonical UUID); `None` when libvirt has no such domain.
    fn domain(&self, uuid: &str) -> Result<Option<DomainRuntime>, HvError> {
        Ok(self.runtime()?.by_uuid(uuid).cloned())
    }

    /// Defines (or redefines) a domain from its libvirt XML.
    fn define(&self, _xml: &str) -> Result<(), HvError> {
        Err(HvError::Unavailable(
            "this runtime source cannot define domains".to_string(),
        ))
    }

    /// Runs a lifecycle operation on the domain with this (canonical) UUID.
    fn op(&self, _uuid: &str, op: Op) -> Result<(), HvError> {
        Err(HvError::Unavailable(format!(
            "this runtime source cannot {} domains",
            op.word()
        )))
    }

    /// How long this source has waited on live libvirt requests so far (per-domain state,
    /// lifecycle operations, definitions): what a call spent in libvirt, as opposed to its
    /// own work (`QUBES_ADMIN_TIMING`).
    fn waited(&self) -> Waits {
        Waits::default()
    }
}

/// What a call waited on libvirt ([`Hypervisor::waited`]): in all, and its longest single
/// request (when it began, on the wall clock, and how long it took), so that a benchmark can
/// tell whether concurrent calls were inside libvirt at the same time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Waits {
    pub total: std::time::Duration,
    pub longest: Option<(std::time::SystemTime, std::time::Duration)>,
}

impl Waits {
    /// Counts one request that began at `began` and took `took`.
    pub fn add(&mut self, began: std::time::SystemTime, took: std::time::Duration) {
        self.total += took;
        if self.longest.is_none_or(|(_, d)| took > d) {
            self.longest = Some((began, took));
        }
    }
}

/// A fixed runtime (tests, offline tools): nothing running.
#[derive(Debug, Clone)]
pub struct Offline {
    pub host: HostInfo,
}

impl Hypervisor for Offline {
    fn runtime(&self) -> Result<Runtime, HvError> {
        Ok(Runtime {
            host: self.host,
            domains: Vec::new(),
        })
    }
}

/// A fixed runtime with domains (unit tests).
#[derive(Debug, Clone)]
pub struct Fixed {
    pub runtime: Runtime,
}

impl Hypervisor for Fixed {
    fn runtime(&self) -> Result<Runtime, HvError> {
        Ok(self.runtime.clone())
    }
}

/// A source that always fails (unit tests of the error paths).
#[derive(Debug, Clone)]
pub struct Unavailable {
    pub reason: String,
}

impl Hypervisor for Unavailable {
    fn runtime(&self) -> Result<Runtime, HvError> {
        Err(HvError::Unavailable(self.reason.clone()))
    }
}

/// The runtime source a per-call process uses for `config`: the helper's socket, falling back to
/// `qubes-admin-eventd --once`.
pub fn default_for(config: &crate::Config) -> Box<dyn Hypervisor> {
    Box::new(client::EventdClient::for_config(config))
}

/// Whether `uri` names the Xen driver (memory balancing, dom0 static-max).
pub fn is_xen_uri(uri: &str) -> bool {
    crate::config::is_xen_uri(uri)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;

    #[test]
    fn state_codes_round_trip() {
        for c in 0..8 {
            let s = DomState::from_code(c);
            assert_eq!(s.map(DomState::code), Some(c));
        }
        assert_eq!(DomState::from_code(8), None);
    }

    #[test]
    fn xen_uri() {
        assert!(is_xen_uri("xen:///"));
        assert!(is_xen_uri("xen+ssh://h/"));
        assert!(!is_xen_uri("test+unix:///default?socket=/x"));
    }
}
