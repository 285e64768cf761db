//! Runtime state (power state, memory, CPU time, host size) comes from the hypervisor, never from
//! qubes.xml. OWNER: hypervisor helper.

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

/// One libvirt domain as seen now.
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
        self.domains.iter().find(|d| d.uuid.eq_ignore_ascii_case(uuid))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HvError {
    #[error("hypervisor unavailable: {0}")]
    Unavailable(String),
}

/// Source of runtime state.
pub trait Hypervisor {
    fn runtime(&self) -> Result<Runtime, HvError>;
}

/// A fixed runtime (tests, offline tools): nothing running.
#[derive(Debug, Clone)]
pub struct Offline {
    pub host: HostInfo,
}

impl Hypervisor for Offline {
    fn runtime(&self) -> Result<Runtime, HvError> {
        Ok(Runtime { host: self.host, domains: Vec::new() })
    }
}

/// The runtime source a per-call process uses for `config` (OWNER: hypervisor helper).
pub fn default_for(config: &crate::Config) -> Box<dyn Hypervisor> {
    let _ = config;
    Box::new(Offline { host: HostInfo { memory_mib: 0, cpus: 0 } })
}
