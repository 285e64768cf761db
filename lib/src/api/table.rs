//! The dispatch table: one row per method. Dispatch, the `/etc/qubes-rpc` name list
//! ([`service_list`]), `docs/methods.md` ([`markdown`]) and the fuzz targets are generated from
//! [`METHODS`] (the policy files will be too).
//!
//! To add a method: add one row here and one handler in the module named after its family.

use super::property::{OfQubes, OfVm};
use super::{
    events, internal, label, misc, pool, property, vm_create, vm_feature, vm_firewall,
    vm_lifecycle, vm_list, vm_notes, vm_remove, vm_state, vm_stats, vm_tag, vm_volume, vmclass,
};
use crate::error::ApiError;
use crate::model::context::Ctx;

/// Which destinations a method accepts (checked after payload and argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestRule {
    /// Must be the AdminVM: `expected destination to be AdminVM`.
    AdminVm,
    /// Must not be the AdminVM: `expected destination to not be AdminVM`.
    NotAdminVm,
    Any,
}

/// Whether the argument (after `+`) or the payload must be present, absent, or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Required,
    Forbidden,
    Optional,
}

/// Policy scope: `include/admin-<scope>-<ro|rwx>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Local,
}

/// Read-only calls run without the qubes.xml lock; the others run in a write transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Execute,
    /// Read-only, and the reply is a stream (`admin.Events`, `admin.vm.Stats`): the handler accepts the
    /// subscription ([`Ctx::subscribe`]); the front end then serves it
    /// ([`crate::System::serve`]).
    Stream,
}

/// Which of qubesd's three sockets serves a method. Each socket is its own API: a method is
/// found only on its socket (the reference's `QubesAdminAPI`, `QubesInternalAPI`,
/// `QubesMiscAPI`), so nothing that can reach one socket reaches the others' calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// `/run/qubesd.sock`: the Admin API (`admin.*`).
    Admin,
    /// `/run/qubesd.internal.sock`: dom0 components only (`internal.*`; the qrexec policy
    /// daemon's `internal.GetSystemInfo`). Never a qrexec service.
    Internal,
    /// `/run/qubesd.misc.sock`: what qubes report about themselves (`qubes.FeaturesRequest`,
    /// `qubes.NotifyTools`, `qubes.NotifyUpdates`), called through qrexec.
    Misc,
}

impl Socket {
    pub const ALL: [Socket; 3] = [Socket::Admin, Socket::Internal, Socket::Misc];

    /// The socket's path on a dom0 (`/var/run` is a link to `/run`).
    pub fn path(self) -> &'static str {
        match self {
            Socket::Admin => "/run/qubesd.sock",
            Socket::Internal => "/run/qubesd.internal.sock",
            Socket::Misc => "/run/qubesd.misc.sock",
        }
    }

    /// The name `qubes-admin-call --socket-request[=NAME]` takes.
    pub fn name(self) -> &'static str {
        match self {
            Socket::Admin => "admin",
            Socket::Internal => "internal",
            Socket::Misc => "misc",
        }
    }

    pub fn from_name(name: &str) -> Option<Socket> {
        Socket::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Where a request arrived, which decides the methods it may name: one socket's, or (qrexec
/// exec-service mode, where the service name says which API it is) the admin and misc
/// sockets' methods; the internal ones are never reachable through qrexec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Socket(Socket),
    Qrexec,
}

/// A handler: typed context in, reply body out.
pub type Handler = fn(&mut Ctx<'_>) -> Result<Vec<u8>, ApiError>;

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    pub name: &'static str,
    pub dest: DestRule,
    pub arg: Presence,
    pub payload: Presence,
    pub scope: Scope,
    pub access: Access,
    /// Installed as a qrexec service in `/etc/qubes-rpc` (the reference leaves out
    /// `admin.vm.Suspend`/`Resume`).
    pub qrexec: bool,
    pub socket: Socket,
    pub handler: Handler,
}

impl Method {
    /// Whether the call runs in a write transaction (Execute calls act on the hypervisor and
    /// do not save qubes.xml: they run on a read-only view, without its lock).
    pub fn writes(&self) -> bool {
        self.access == Access::Write
    }
}

use Access::*;
use DestRule::*;
use Presence::*;
use Scope::*;

/// A row for a method that qrexec does not expose (no `/etc/qubes-rpc` entry; the reference
/// installs none for `Create*.AdminVM`/`RemoteVM`, `Suspend`, `Resume`).
const fn socket_only(m: Method) -> Method {
    Method { qrexec: false, ..m }
}

/// A row of the internal socket's API (never a qrexec service).
const fn internal(m: Method) -> Method {
    Method {
        qrexec: false,
        socket: Socket::Internal,
        ..m
    }
}

/// A row of the misc socket's API (a qrexec service that qubes call).
const fn misc(m: Method) -> Method {
    Method {
        socket: Socket::Misc,
        ..m
    }
}

const fn m(
    name: &'static str,
    dest: DestRule,
    arg: Presence,
    payload: Presence,
    scope: Scope,
    access: Access,
    handler: Handler,
) -> Method {
    Method {
        name,
        dest,
        arg,
        payload,
        scope,
        access,
        qrexec: true,
        socket: Socket::Admin,
        handler,
    }
}

/// Every implemented method. `*.List` calls take an optional argument: the Admin API document's
/// rule that a List given an object identifier returns just that entry.
#[rustfmt::skip]
pub static METHODS: &[Method] = &[
    m("admin.vmclass.List",                           AdminVm,    Optional,  Forbidden, Global, Read,  vmclass::list),
    m("admin.vm.List",                                Any,        Forbidden, Forbidden, Global, Read,  vm_list::list),
    m("admin.Events",                                 Any,        Forbidden, Forbidden, Global, Stream, events::subscribe),
    m("admin.vm.Stats",                               Any,        Forbidden, Forbidden, Global, Stream, vm_stats::subscribe),
    m("admin.vm.CurrentState",                        Any,        Forbidden, Forbidden, Local,  Read,  vm_state::current_state),
    m("admin.vm.Create.AppVM",                        AdminVm,    Optional,  Optional,  Global, Write, vm_create::create),
    m("admin.vm.Create.DispVM",                       AdminVm,    Optional,  Optional,  Global, Write, vm_create::create),
    m("admin.vm.Create.StandaloneVM",                 AdminVm,    Optional,  Optional,  Global, Write, vm_create::create),
    m("admin.vm.Create.TemplateVM",                   AdminVm,    Optional,  Optional,  Global, Write, vm_create::create),
    socket_only(m("admin.vm.Create.AdminVM",          AdminVm,    Optional,  Optional,  Global, Write, vm_create::create)),
    socket_only(m("admin.vm.Create.RemoteVM",         AdminVm,    Optional,  Optional,  Global, Write, vm_create::create)),
    m("admin.vm.CreateInPool.AppVM",                  AdminVm,    Optional,  Optional,  Global, Write, vm_create::create_in_pool),
    m("admin.vm.CreateInPool.DispVM",                 AdminVm,    Optional,  Optional,  Global, Write, vm_create::create_in_pool),
    m("admin.vm.CreateInPool.StandaloneVM",           AdminVm,    Optional,  Optional,  Global, Write, vm_create::create_in_pool),
    m("admin.vm.CreateInPool.TemplateVM",             AdminVm,    Optional,  Optional,  Global, Write, vm_create::create_in_pool),
    socket_only(m("admin.vm.CreateInPool.AdminVM",    AdminVm,    Optional,  Optional,  Global, Write, vm_create::create_in_pool)),
    socket_only(m("admin.vm.CreateInPool.RemoteVM",   AdminVm,    Optional,  Optional,  Global, Write, vm_create::create_in_pool)),
    m("admin.vm.CreateDisposable",                    Any,        Optional,  Optional,  Global, Write, vm_create::create_disposable),
    m("admin.vm.Remove",                              Any,        Forbidden, Forbidden, Global, Write, vm_remove::remove),
    m("admin.vm.Start",                               Any,        Forbidden, Forbidden, Local,  Execute, vm_lifecycle::start),
    m("admin.vm.Pause",                               Any,        Forbidden, Forbidden, Local,  Execute, vm_lifecycle::pause),
    m("admin.vm.Unpause",                             Any,        Forbidden, Forbidden, Local,  Execute, vm_lifecycle::unpause),
    m("admin.vm.Kill",                                Any,        Forbidden, Forbidden, Local,  Execute, vm_lifecycle::kill),
    socket_only(m("admin.vm.Suspend",                 Any,        Forbidden, Forbidden, Local,  Execute, vm_lifecycle::suspend)),
    socket_only(m("admin.vm.Resume",                  Any,        Forbidden, Forbidden, Local,  Execute, vm_lifecycle::resume)),
    m("admin.vm.Shutdown",                            Any,        Optional,  Forbidden, Local,  Execute, vm_lifecycle::shutdown),
    m("admin.pool.List",                              AdminVm,    Forbidden, Forbidden, Global, Read,  pool::list),
    m("admin.pool.ListDrivers",                       AdminVm,    Forbidden, Forbidden, Global, Read,  pool::list_drivers),
    m("admin.pool.Info",                              AdminVm,    Required,  Forbidden, Global, Read,  pool::info),
    m("admin.pool.UsageDetails",                      AdminVm,    Required,  Forbidden, Global, Read,  pool::usage_details),
    m("admin.pool.volume.List",                       AdminVm,    Required,  Forbidden, Global, Read,  pool::volume_list),
    m("admin.vm.volume.List",                         Any,        Forbidden, Forbidden, Local,  Read,  vm_volume::list),
    m("admin.vm.volume.Info",                         Any,        Required,  Forbidden, Local,  Read,  vm_volume::info),
    m("admin.vm.volume.ListSnapshots",                Any,        Required,  Forbidden, Local,  Read,  vm_volume::list_snapshots),
    m("admin.label.List",                             AdminVm,    Optional,  Forbidden, Global, Read,  label::list),
    m("admin.label.Get",                              AdminVm,    Required,  Forbidden, Global, Read,  label::get),
    m("admin.label.Index",                            AdminVm,    Required,  Forbidden, Global, Read,  label::index),
    m("admin.label.Create",                           AdminVm,    Required,  Required,  Global, Write, label::create),
    m("admin.label.Remove",                           AdminVm,    Required,  Forbidden, Global, Write, label::remove),
    m("admin.property.List",                          AdminVm,    Optional,  Forbidden, Global, Read,  property::list::<OfQubes>),
    m("admin.property.Get",                           AdminVm,    Required,  Forbidden, Global, Read,  property::get::<OfQubes>),
    m("admin.property.GetAll",                        AdminVm,    Forbidden, Forbidden, Global, Read,  property::get_all::<OfQubes>),
    m("admin.property.GetDefault",                    AdminVm,    Required,  Forbidden, Global, Read,  property::get_default::<OfQubes>),
    m("admin.property.Help",                          AdminVm,    Required,  Forbidden, Global, Read,  property::help::<OfQubes>),
    m("admin.property.HelpRst",                       AdminVm,    Required,  Forbidden, Global, Read,  property::help_rst::<OfQubes>),
    m("admin.property.Set",                           AdminVm,    Required,  Optional,  Global, Write, property::set::<OfQubes>),
    m("admin.property.Reset",                         AdminVm,    Required,  Forbidden, Global, Write, property::reset::<OfQubes>),
    m("admin.vm.property.List",                       Any,        Optional,  Forbidden, Local,  Read,  property::list::<OfVm>),
    m("admin.vm.property.Get",                        Any,        Required,  Forbidden, Local,  Read,  property::get::<OfVm>),
    m("admin.vm.property.GetAll",                     Any,        Forbidden, Forbidden, Local,  Read,  property::get_all::<OfVm>),
    m("admin.vm.property.GetDefault",                 Any,        Required,  Forbidden, Local,  Read,  property::get_default::<OfVm>),
    m("admin.vm.property.Help",                       Any,        Required,  Forbidden, Local,  Read,  property::help::<OfVm>),
    m("admin.vm.property.HelpRst",                    Any,        Required,  Forbidden, Local,  Read,  property::help_rst::<OfVm>),
    m("admin.vm.property.Set",                        Any,        Required,  Optional,  Local,  Write, property::set::<OfVm>),
    m("admin.vm.property.Reset",                      Any,        Required,  Forbidden, Local,  Write, property::reset::<OfVm>),
    m("admin.vm.feature.List",                        Any,        Optional,  Forbidden, Local,  Read,  vm_feature::list),
    m("admin.vm.feature.Get",                         Any,        Required,  Forbidden, Local,  Read,  vm_feature::get),
    m("admin.vm.feature.CheckWithTemplate",           Any,        Required,  Forbidden, Local,  Read,  vm_feature::check_with_template),
    m("admin.vm.feature.CheckWithNetvm",              Any,        Required,  Forbidden, Local,  Read,  vm_feature::check_with_netvm),
    m("admin.vm.feature.CheckWithAdminVM",            Any,        Required,  Forbidden, Local,  Read,  vm_feature::check_with_adminvm),
    m("admin.vm.feature.CheckWithTemplateAndAdminVM", Any,        Required,  Forbidden, Local,  Read,  vm_feature::check_with_template_and_adminvm),
    m("admin.vm.feature.Set",                         Any,        Required,  Optional,  Local,  Write, vm_feature::set),
    m("admin.vm.feature.Remove",                      Any,        Required,  Forbidden, Local,  Write, vm_feature::remove),
    m("admin.vm.tag.List",                            Any,        Optional,  Forbidden, Local,  Read,  vm_tag::list),
    m("admin.vm.tag.Get",                             Any,        Required,  Forbidden, Local,  Read,  vm_tag::get),
    m("admin.vm.tag.Set",                             Any,        Required,  Forbidden, Local,  Write, vm_tag::set),
    m("admin.vm.tag.Remove",                          Any,        Required,  Forbidden, Local,  Write, vm_tag::remove),
    m("admin.vm.notes.Get",                           NotAdminVm, Forbidden, Forbidden, Local,  Read,  vm_notes::get),
    m("admin.vm.notes.Set",                           NotAdminVm, Forbidden, Required,  Local,  Write, vm_notes::set),
    m("admin.vm.firewall.Get",                        NotAdminVm, Forbidden, Forbidden, Local,  Read,  vm_firewall::get),
    m("admin.vm.firewall.Set",                        NotAdminVm, Forbidden, Required,  Local,  Execute, vm_firewall::set),
    m("admin.vm.firewall.Reload",                     NotAdminVm, Forbidden, Forbidden, Local,  Execute, vm_firewall::reload),
    // Checked by the handlers, as the reference's `enforce` does (PermissionDenied).
    internal(m("internal.GetSystemInfo",              Any,        Optional,  Forbidden, Global, Read,  internal::get_system_info)),
    internal(m("internal.SuspendPre",                 Any,        Optional,  Forbidden, Global, Execute, internal::suspend_pre)),
    internal(m("internal.SuspendPost",                Any,        Optional,  Forbidden, Global, Execute, internal::suspend_post)),
    misc(m("qubes.FeaturesRequest",                   Any,        Optional,  Forbidden, Local,  Write, misc::features_request)),
    misc(m("qubes.NotifyTools",                       Any,        Optional,  Forbidden, Local,  Write, misc::notify_tools)),
    misc(m("qubes.NotifyUpdates",                     Any,        Optional,  Optional,  Local,  Write, misc::notify_updates)),
];

/// `docs/methods.md`: the table as Markdown (regenerate with `qubes-admin-call methods --markdown`).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Admin API methods served by qubes-admin-call\n\n\
         Generated from the dispatch table (`lib/src/api/table.rs`) by \
         `qubes-admin-call methods --markdown`; a unit test keeps it current.\n\n\
         | method | destination | argument | payload | scope | access | socket | qrexec service |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for m in METHODS {
        let dest = match m.dest {
            DestRule::AdminVm => "dom0 only",
            DestRule::NotAdminVm => "a qube, not dom0",
            DestRule::Any => "any",
        };
        let p = |x: Presence| match x {
            Presence::Required => "required",
            Presence::Forbidden => "none",
            Presence::Optional => "optional",
        };
        let scope = match m.scope {
            Scope::Global => "global",
            Scope::Local => "local",
        };
        let access = match m.access {
            Access::Read => "read-only",
            Access::Write => "read-write",
            Access::Execute => "execute",
            Access::Stream => "stream",
        };
        out.push_str(&format!(
            "| `{}` | {dest} | {} | {} | {scope} | {access} | {} | {} |\n",
            m.name,
            p(m.arg),
            p(m.payload),
            m.socket.name(),
            if m.qrexec { "yes" } else { "no" }
        ));
    }
    out
}

/// `qubes-rpc/services.list`: the qrexec service names, one per line
/// (regenerate with `qubes-admin-call methods`).
pub fn service_list() -> String {
    METHODS
        .iter()
        .filter(|m| m.qrexec)
        .map(|m| format!("{}\n", m.name))
        .collect()
}

/// `policy/90-admin-default.policy`: one `!include-service` line per method, sending it to
/// `include/admin-<scope>-<ro|rwx>` (rwx for calls that write or act, as the reference's
/// generator classes them; qubes.xml's AdminVM cannot be created, so its Create rows are left
/// out). Regenerate with `qubes-admin-call methods --policy > policy/90-admin-default.policy`.
pub fn admin_policy() -> String {
    let mut out = String::from(
        "## Admin API policy: which calls each include file grants (generated from the dispatch\n\
         ## table of qubes-admin-rs by `qubes-admin-call methods --policy`; do not edit).\n\
         ##\n\
         ## Grant a management qube calls by adding legacy-format lines to the include files,\n\
         ## for example in include/admin-local-rwx:\n\
         ##     mgmt @tag:managed allow target=dom0\n\
         ## Every allow or ask needs `target=dom0`: without it the call is routed to the target\n\
         ## qube itself, which does not serve it.\n\n",
    );
    for m in METHODS.iter().filter(|m| {
        m.socket == Socket::Admin
            && !(m.name.starts_with("admin.vm.Create") && m.name.ends_with(".AdminVM"))
    }) {
        let scope = match m.scope {
            Scope::Global => "global",
            Scope::Local => "local",
        };
        let class = match m.access {
            Access::Read | Access::Stream => "ro",
            Access::Write | Access::Execute => "rwx",
        };
        out.push_str(&format!(
            "!include-service {} * include/admin-{scope}-{class}\n",
            m.name
        ));
    }
    out
}

/// Looks an Admin API method (the admin socket's) up by its exact name.
pub fn find(name: &str) -> Option<&'static Method> {
    find_on(Endpoint::Socket(Socket::Admin), name)
}

/// Looks a method up by its exact name among those `endpoint` serves.
pub fn find_on(endpoint: Endpoint, name: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| {
        m.name == name
            && match endpoint {
                Endpoint::Socket(s) => m.socket == s,
                Endpoint::Qrexec => m.socket != Socket::Internal,
            }
    })
}

/// Every method the reference (qubes-core-admin 4.4.0) serves on its admin socket. A unit test
/// lists which of these are not implemented yet.
pub static REFERENCE_METHODS: &[&str] = &[
    "admin.vmclass.List",
    "admin.vm.List",
    "admin.vm.Create.AdminVM",
    "admin.vm.Create.AppVM",
    "admin.vm.Create.DispVM",
    "admin.vm.Create.RemoteVM",
    "admin.vm.Create.StandaloneVM",
    "admin.vm.Create.TemplateVM",
    "admin.vm.CreateInPool.AdminVM",
    "admin.vm.CreateInPool.AppVM",
    "admin.vm.CreateInPool.DispVM",
    "admin.vm.CreateInPool.RemoteVM",
    "admin.vm.CreateInPool.StandaloneVM",
    "admin.vm.CreateInPool.TemplateVM",
    "admin.vm.CreateDisposable",
    "admin.vm.Remove",
    "admin.label.List",
    "admin.label.Get",
    "admin.label.Index",
    "admin.label.Create",
    "admin.label.Remove",
    "admin.property.List",
    "admin.property.Get",
    "admin.property.GetAll",
    "admin.property.GetDefault",
    "admin.property.Help",
    "admin.property.Set",
    "admin.property.Reset",
    "admin.vm.property.List",
    "admin.vm.property.Get",
    "admin.vm.property.GetAll",
    "admin.vm.property.GetDefault",
    "admin.vm.property.Help",
    "admin.vm.property.Set",
    "admin.vm.property.Reset",
    "admin.vm.feature.List",
    "admin.vm.feature.Get",
    "admin.vm.feature.CheckWithTemplate",
    "admin.vm.feature.CheckWithNetvm",
    "admin.vm.feature.CheckWithAdminVM",
    "admin.vm.feature.CheckWithTemplateAndAdminVM",
    "admin.vm.feature.Remove",
    "admin.vm.feature.Set",
    "admin.vm.tag.List",
    "admin.vm.tag.Get",
    "admin.vm.tag.Set",
    "admin.vm.tag.Remove",
    "admin.vm.Start",
    "admin.vm.Shutdown",
    "admin.vm.Pause",
    "admin.vm.Unpause",
    "admin.vm.Suspend",
    "admin.vm.Resume",
    "admin.vm.Kill",
    "admin.Events",
    "admin.vm.Stats",
    "admin.vm.CurrentState",
    "admin.vm.notes.Get",
    "admin.vm.notes.Set",
    "admin.vm.Console",
    "admin.vm.volume.List",
    "admin.vm.volume.Info",
    "admin.vm.volume.ListSnapshots",
    "admin.vm.volume.Revert",
    "admin.vm.volume.CloneFrom",
    "admin.vm.volume.CloneTo",
    "admin.vm.volume.Resize",
    "admin.vm.volume.Clear",
    "admin.vm.volume.Import",
    "admin.vm.volume.ImportWithSize",
    "admin.vm.volume.Set.revisions_to_keep",
    "admin.vm.volume.Set.rw",
    "admin.vm.volume.Set.ephemeral",
    "admin.pool.List",
    "admin.pool.ListDrivers",
    "admin.pool.Info",
    "admin.pool.UsageDetails",
    "admin.pool.Add",
    "admin.pool.Remove",
    "admin.pool.Set.revisions_to_keep",
    "admin.pool.Set.ephemeral_volatile",
    "admin.pool.volume.List",
    "admin.deviceclass.List",
    "admin.vm.device.denied.List",
    "admin.vm.device.denied.Add",
    "admin.vm.device.denied.Remove",
    "admin.vm.firewall.Get",
    "admin.vm.firewall.Set",
    "admin.vm.firewall.Reload",
    "admin.backup.Execute",
    "admin.backup.Cancel",
    "admin.backup.Info",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate method rows");
    }

    /// Lists what is left to implement; update it when a family lands.
    #[test]
    fn not_yet_implemented() {
        let missing: Vec<&str> = REFERENCE_METHODS
            .iter()
            .copied()
            .filter(|n| find(n).is_none())
            .collect();
        let expected: Vec<&str> = REFERENCE_METHODS
            .iter()
            .copied()
            .filter(|n| {
                (n.starts_with("admin.vm.volume.")
                    && !matches!(
                        *n,
                        "admin.vm.volume.List"
                            | "admin.vm.volume.Info"
                            | "admin.vm.volume.ListSnapshots"
                    ))
                    || matches!(
                        *n,
                        "admin.pool.Add"
                            | "admin.pool.Remove"
                            | "admin.pool.Set.revisions_to_keep"
                            | "admin.pool.Set.ephemeral_volatile"
                    )
                    || n.starts_with("admin.vm.device")
                    || n.starts_with("admin.deviceclass.")
                    || n.starts_with("admin.backup.")
                    || *n == "admin.vm.Console"
            })
            .collect();
        assert_eq!(missing, expected);
    }
}

#[cfg(test)]
mod generated_files {
    use super::*;

    /// `policy/90-admin-default.policy` is generated from the table, and the whole `policy/`
    /// tree loads with the policy engine and grants what it says: nothing by default; with a
    /// user line in an include file, that qube's calls of the file's class (and, for rwx, of
    /// ro too); `GetAll` denied without a notification by `91-admin-default-deny.policy`.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn admin_policy_is_current_and_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy");
        assert_eq!(
            std::fs::read_to_string(dir.join("90-admin-default.policy")).unwrap(),
            admin_policy(),
            "policy/90-admin-default.policy is stale: run `qubes-admin-call methods --policy > policy/90-admin-default.policy`"
        );
        let tmp = tempfile::tempdir().unwrap();
        let pd = tmp.path().join("policy.d");
        std::fs::create_dir_all(pd.join("include")).unwrap();
        for f in ["90-admin-default.policy", "91-admin-default-deny.policy"] {
            std::fs::copy(dir.join(f), pd.join(f)).unwrap();
        }
        for f in [
            "admin-local-ro",
            "admin-local-rwx",
            "admin-global-ro",
            "admin-global-rwx",
        ] {
            std::fs::copy(dir.join("include").join(f), pd.join("include").join(f)).unwrap();
        }
        let src = crate::policy::Sources {
            dirs: vec![pd.clone()],
            compat_dir: tmp.path().join("compat"),
        };
        let domains = vec![
            crate::policy::DomainInfo {
                name: "dom0".into(),
                uuid: "00000000-0000-0000-0000-000000000000".into(),
                class: "AdminVM".into(),
                tags: vec![],
                template_for_dispvms: false,
                default_dispvm: None,
                internal: false,
            },
            crate::policy::DomainInfo {
                name: "mgmt".into(),
                uuid: "11111111-1111-1111-1111-111111111111".into(),
                class: "AppVM".into(),
                tags: vec![],
                template_for_dispvms: false,
                default_dispvm: None,
                internal: false,
            },
            crate::policy::DomainInfo {
                name: "work".into(),
                uuid: "22222222-2222-2222-2222-222222222222".into(),
                class: "AppVM".into(),
                tags: vec!["managed".into()],
                template_for_dispvms: false,
                default_dispvm: None,
                internal: false,
            },
        ];
        let sys = crate::policy::SystemInfo {
            domains: &domains,
            is_running: &|_| false,
        };
        let verdict = |rules: &[crate::policy::Rule], service: &str, target: &str| {
            let v = crate::policy::evaluate(
                rules,
                &crate::policy::Request {
                    service: service.into(),
                    argument: "+".into(),
                    source: "mgmt".into(),
                    target: target.into(),
                },
                &sys,
            );
            match v {
                crate::policy::Verdict::Allow { target, .. } => format!("allow {target}"),
                crate::policy::Verdict::Deny { notify, .. } => format!("deny notify={notify}"),
                crate::policy::Verdict::Ask { .. } => "ask".into(),
            }
        };
        let rules = crate::policy::load(&src).unwrap();
        assert_eq!(verdict(&rules, "admin.vm.List", "dom0"), "deny notify=true");
        assert_eq!(
            verdict(&rules, "admin.vm.Start", "work"),
            "deny notify=true"
        );
        assert_eq!(
            verdict(&rules, "admin.vm.property.GetAll", "work"),
            "deny notify=false"
        );
        let mut rwx = std::fs::read_to_string(pd.join("include/admin-local-rwx")).unwrap();
        rwx.push_str("mgmt @tag:managed allow,target=dom0\n");
        std::fs::write(pd.join("include/admin-local-rwx"), rwx).unwrap();
        let rules = crate::policy::load(&src).unwrap();
        assert_eq!(verdict(&rules, "admin.vm.Start", "work"), "allow dom0");
        assert_eq!(
            verdict(&rules, "admin.vm.firewall.Set", "work"),
            "allow dom0"
        );
        // ro includes rwx.
        assert_eq!(
            verdict(&rules, "admin.vm.property.Get", "work"),
            "allow dom0"
        );
        assert_eq!(
            verdict(&rules, "admin.vm.CurrentState", "work"),
            "allow dom0"
        );
        // Not the global calls, not other qubes.
        assert_eq!(verdict(&rules, "admin.vm.List", "dom0"), "deny notify=true");
        assert_eq!(
            verdict(&rules, "admin.vm.Start", "mgmt"),
            "deny notify=true"
        );
        assert!(admin_policy()
            .contains("!include-service admin.vm.Remove * include/admin-global-rwx\n"));
        assert!(
            admin_policy().contains("!include-service admin.Events * include/admin-global-ro\n")
        );
        assert!(!admin_policy().contains("Create.AdminVM"));
    }

    /// `qubes-rpc/services.list` is generated from the table: regenerate it with
    /// `qubes-admin-call methods > qubes-rpc/services.list`.
    #[test]
    fn qrexec_service_list_is_current() {
        let have = include_str!("../../../qubes-rpc/services.list");
        assert_eq!(
            have,
            service_list(),
            "qubes-rpc/services.list is stale: run `qubes-admin-call methods > qubes-rpc/services.list`"
        );
    }

    #[test]
    fn methods_doc_is_current() {
        assert_eq!(
            include_str!("../../../docs/methods.md"),
            markdown(),
            "docs/methods.md is stale: run `qubes-admin-call methods --markdown > docs/methods.md`"
        );
    }
}
