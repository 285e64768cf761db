//! The api layer: the dispatch table and one module per API family. A request arrives parsed
//! by the wire layer; [`request`] resolves it against qubes.xml and runs the generic checks,
//! then the row's handler runs with a [`Ctx`](crate::model::context::Ctx).
//!
//! | module | methods |
//! |---|---|
//! | [`vmclass`] | `admin.vmclass.List` |
//! | [`vm_list`] | `admin.vm.List` |
//! | [`vm_create`] | `admin.vm.Create.*`, `admin.vm.CreateInPool.*`, `admin.vm.CreateDisposable` |
//! | [`vm_remove`] | `admin.vm.Remove` |
//! | [`vm_lifecycle`] | `admin.vm.Start`, `Shutdown`, `Kill`, `Pause`, `Unpause`, `Suspend`, `Resume` |
//! | [`events`] | `admin.Events` |
//! | [`vm_stats`] | `admin.vm.Stats` |
//! | [`vm_state`] | `admin.vm.CurrentState` |
//! | [`label`] | `admin.label.*` |
//! | [`property`] | `admin.property.*` and `admin.vm.property.*` (one set of handlers, two holders) |
//! | [`vm_feature`] | `admin.vm.feature.*` |
//! | [`vm_tag`] | `admin.vm.tag.*` |
//! | [`vm_notes`] | `admin.vm.notes.*` |
//! | [`vm_firewall`] | `admin.vm.firewall.*` |
//! | [`pool`] | `admin.pool.*`, `admin.pool.volume.List` |
//! | [`vm_volume`] | `admin.vm.volume.*` |
//! | [`internal`] | `internal.*` (the internal socket: `GetSystemInfo`, `SuspendPre`, `SuspendPost`) |
//! | [`misc`] | `qubes.FeaturesRequest`, `qubes.NotifyTools`, `qubes.NotifyUpdates` (the misc socket) |
//!
//! To add a method: one row in [`table::METHODS`] and one handler in its family's module.

pub mod request;
pub mod table;

pub mod events;
pub mod internal;
pub mod label;
pub mod misc;
pub mod pool;
pub mod property;
pub mod vm_create;
pub mod vm_feature;
pub mod vm_firewall;
pub mod vm_lifecycle;
pub mod vm_list;
pub mod vm_notes;
pub mod vm_remove;
pub mod vm_state;
pub mod vm_stats;
pub mod vm_tag;
pub mod vm_volume;
pub mod vmclass;

pub use table::{
    admin_policy, find, find_on, markdown, service_list, Access, DestRule, Endpoint, Handler,
    Method, Presence, Scope, Socket, METHODS, REFERENCE_METHODS,
};
