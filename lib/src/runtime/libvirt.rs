//! Direct libvirt queries (feature `libvirt`): used by the helper and its `--once` mode only.

use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::error::ErrorNumber;

use super::{DomState, DomainRuntime, HostInfo, Op, Runtime};
use crate::ffi::libvirt as ffi;

/// A libvirt failure, with libvirt's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LibvirtError {
    #[error("cannot connect to libvirt at '{uri}': {msg}")]
    Connect { uri: String, msg: String },
    #[error("libvirt: {0}")]
    Call(String),
    #[error("the libvirt connection is closed")]
    Closed,
}

fn call_err(e: virt::error::Error) -> LibvirtError {
    LibvirtError::Call(e.message().to_string())
}

fn is_no_domain(e: &virt::error::Error) -> bool {
    e.code().is(ErrorNumber::NoDomain)
}

const KVM_DOMAIN: &str = "<domain type='kvm'>";

/// Whether a capabilities document lists a KVM guest domain type.
fn offers_kvm(capabilities: &str) -> bool {
    capabilities.contains("<domain type='kvm'")
}

/// Silences libvirt's default error printer (errors are reported through results).
pub fn quiet_errors() {
    virt::error::clear_error_callback();
}

/// A connection that is closed without panicking (see [`ffi::close`]).
#[derive(Debug)]
pub struct Conn {
    inner: Option<Connect>,
    uri: String,
    /// Whether the driver offers KVM (asked once per connection: see [`Conn::define`]).
    kvm: std::sync::OnceLock<bool>,
}

impl Conn {
    pub fn open(uri: &str) -> Result<Conn, LibvirtError> {
        Connect::open(Some(uri))
            .map(|c| Conn {
                inner: Some(c),
                uri: uri.to_string(),
                kvm: std::sync::OnceLock::new(),
            })
            .map_err(|e| LibvirtError::Connect {
                uri: uri.to_string(),
                msg: e.message().to_string(),
            })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn connect(&self) -> Result<&Connect, LibvirtError> {
        self.inner.as_ref().ok_or(LibvirtError::Closed)
    }

    /// Whether libvirt still considers the connection usable (no RPC: a local check, which the
    /// event loop keeps current by watching the socket and the keepalive).
    pub fn is_alive(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|c| c.is_alive().unwrap_or(false))
    }

    /// Closes the connection, reporting libvirt's error.
    pub fn close(mut self) -> Result<(), LibvirtError> {
        match self.inner.take() {
            Some(c) => ffi::close(c).map_err(call_err),
            None => Ok(()),
        }
    }

    pub fn host(&self) -> Result<HostInfo, LibvirtError> {
        let ni = self.connect()?.node_info().map_err(call_err)?;
        Ok(HostInfo {
            memory_mib: ni.memory / 1024,
            cpus: ni.cpus,
        })
    }

    /// Every domain, with the numeric fields as of now (no memory stats: see [`Conn::info`]).
    pub fn list(&self) -> Result<Runtime, LibvirtError> {
        let host = self.host()?;
        let all = self.connect()?.list_all_domains(0).map_err(call_err)?;
        let mut domains = Vec::with_capacity(all.len());
        for d in &all {
            match snapshot(d) {
                Ok(r) => domains.push(r),
                // Undefined between the listing and the query: it is gone.
                Err(e) if is_no_domain(&e) => {}
                Err(e) => return Err(call_err(e)),
            }
        }
        domains.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        Ok(Runtime { host, domains })
    }

    /// One domain as of now; `None` when libvirt has no domain with this UUID.
    pub fn domain(&self, uuid: &str) -> Result<Option<DomainRuntime>, LibvirtError> {
        let conn = self.connect()?;
        let dom = match conn.lookup_domain_by_uuid_string(uuid) {
            Ok(d) => d,
            Err(e) if is_no_domain(&e) => return Ok(None),
            Err(e) => return Err(call_err(e)),
        };
        match snapshot(&dom) {
            Ok(r) => Ok(Some(r)),
            Err(e) if is_no_domain(&e) => Ok(None),
            Err(e) => Err(call_err(e)),
        }
    }

    /// Like [`Conn::domain`], with `mem_kib` from the balloon ("actual") when the driver
    /// reports it (the test driver does not).
    pub fn info(&self, uuid: &str) -> Result<Option<DomainRuntime>, LibvirtError> {
        let conn = self.connect()?;
        let dom = match conn.lookup_domain_by_uuid_string(uuid) {
            Ok(d) => d,
            Err(e) if is_no_domain(&e) => return Ok(None),
            Err(e) => return Err(call_err(e)),
        };
        let mut r = match snapshot(&dom) {
            Ok(r) => r,
            Err(e) if is_no_domain(&e) => return Ok(None),
            Err(e) => return Err(call_err(e)),
        };
        if r.active {
            // Memory statistics are optional (no balloon, some drivers): info().memory stays.
            if let Ok(stats) = dom.memory_stats(0) {
                if let Some(actual) = stats
                    .iter()
                    .find(|s| s.tag == virt::sys::VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON)
                {
                    r.mem_kib = actual.val;
                }
            }
        }
        Ok(Some(r))
    }
}

impl Conn {
    /// Defines (or redefines) a domain. A KVM domain becomes a TCG one (`type='qemu'`) when
    /// this connection's driver offers no KVM: the per-call process sees `/dev/kvm` but cannot
    /// know whether the emulator's user (a session daemon's, say) may use it; libvirt can.
    pub fn define(&self, xml: &str) -> Result<(), LibvirtError> {
        let conn = self.connect()?;
        let xml = match xml.strip_prefix(KVM_DOMAIN) {
            Some(rest) if !self.offers_kvm()? => format!("<domain type='qemu'>{rest}"),
            _ => xml.to_string(),
        };
        conn.define_domain_xml(&xml).map(|_| ()).map_err(call_err)
    }

    fn offers_kvm(&self) -> Result<bool, LibvirtError> {
        if let Some(k) = self.kvm.get() {
            return Ok(*k);
        }
        let k = offers_kvm(&self.connect()?.capabilities().map_err(call_err)?);
        Ok(*self.kvm.get_or_init(|| k))
    }

    /// Runs `op` on the domain with this UUID.
    pub fn op(&self, uuid: &str, op: Op) -> Result<(), LibvirtError> {
        let dom = match self.connect()?.lookup_domain_by_uuid_string(uuid) {
            Ok(d) => d,
            Err(e) if is_no_domain(&e) => {
                return Err(LibvirtError::Call(format!("no domain with uuid {uuid}")))
            }
            Err(e) => return Err(call_err(e)),
        };
        match op {
            // Drivers without paused starts (the test driver refuses the flag as an invalid
            // argument) start and pause at once: the same state, reached in two steps.
            Op::StartPaused => match dom.create_with_flags(virt::sys::VIR_DOMAIN_START_PAUSED) {
                Err(e) if e.code().is(ErrorNumber::InvalidArg) => {
                    dom.create().and_then(|_| dom.suspend())
                }
                r => r.map(|_| ()),
            },
            Op::Resume => dom.resume(),
            Op::Pause => dom.suspend(),
            Op::Shutdown => dom.shutdown(),
            Op::Destroy => dom.destroy(),
            Op::Undefine => dom.undefine(),
            Op::PmWakeup => dom.pm_wakeup(0),
        }
        .map_err(call_err)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(c) = self.inner.take() {
            // Nothing useful to do about a failed close while dropping.
            let _ = ffi::close(c);
        }
    }
}

fn dom_state(s: virt::domain::DomainStateEnum) -> DomState {
    match s.known() {
        Some(DomainState::NoState) | None => DomState::NoState,
        Some(DomainState::Running) => DomState::Running,
        Some(DomainState::Blocked) => DomState::Blocked,
        Some(DomainState::Paused) => DomState::Paused,
        Some(DomainState::Shutdown) => DomState::Shutdown,
        Some(DomainState::Shutoff) => DomState::Shutoff,
        Some(DomainState::Crashed) => DomState::Crashed,
        Some(DomainState::PMSuspended) => DomState::PmSuspended,
    }
}

/// Identity, state and `info()` figures of one domain (two RPCs: info, isActive).
fn snapshot(d: &Domain) -> Result<DomainRuntime, virt::error::Error> {
    let uuid = d.uuid_string()?.to_ascii_lowercase();
    let name = d.name()?;
    let info = d.info()?;
    let active = d.is_active()?;
    // The ID cached in the handle can be stale for a domain that stopped: trust isActive.
    let id = match d.id() {
        Some(id) if active => i64::from(id),
        _ => -1,
    };
    Ok(DomainRuntime {
        name,
        uuid,
        id,
        state: dom_state(info.state),
        active,
        mem_kib: info.memory,
        max_mem_kib: info.max_mem,
        vcpus: info.nr_virt_cpu,
        cpu_time_ns: info.cpu_time,
    })
}
