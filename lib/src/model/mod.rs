//! The model layer: what the API families share. Below the api layer (it never sees the
//! dispatch table), above the store and the runtime backends it reads.
//!
//! * [`context`]: the call context every handler and engine takes.
//! * [`props`]: the property engine (tables, defaults, setters, rendering).
//! * [`features`]: recursive feature lookups along the template/netvm chains.
//! * [`labels`]: label lookup and legacy `label-N` references.
//! * [`power_state`]: a qube's power state from its libvirt domain.
//! * [`notes_sanitize`]: the reference's notes sanitiser.

pub mod context;
pub mod features;
pub mod labels;
pub mod notes_sanitize;
pub mod power_state;
pub mod props;
