//! The model layer: what the API families share. Below the api layer (it never sees the
//! dispatch table), above the store and the runtime backends it reads.
//!
//! * [`access`]: what a caller other than dom0 may see, by the qrexec policy.
//! * [`context`]: the call context every handler and engine takes.
//! * [`props`]: the property engine (tables, defaults, setters, rendering).
//! * [`firewall`]: a qube's firewall rules (`firewall.xml`, their API and QubesDB forms).
//! * [`features`]: recursive feature lookups along the template/netvm chains.
//! * [`labels`]: label lookup and legacy `label-N` references.
//! * [`lifecycle`]: the per-qube operation lock, live state, stop processing.
//! * [`power_state`]: a qube's power state from its libvirt domain.
//! * [`qubesdb`]: what a Start gives the dom0 services (memory, QubesDB entries).
//! * [`new_qube`]: identity, qubes.xml entry and disk of a new qube.
//! * [`notes_sanitize`]: the reference's notes sanitiser.
//! * [`tags`]: tag additions with their handlers.
//! * [`volumes`]: a qube's volumes, the defaults of a new qube, Create and Remove on disk.

pub mod access;
pub mod context;
pub mod features;
pub mod firewall;
pub mod labels;
pub mod lifecycle;
pub mod migrate;
pub mod new_qube;
pub mod notes_sanitize;
pub mod power_state;
pub mod props;
pub mod qubesdb;
pub mod tags;
pub mod volumes;
