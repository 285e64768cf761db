//! The property tables: one static list per class, in the reference's property order (load
//! stage, then name), with each property's declared type, kind, RST docstring and the plain-text
//! help the reference renders from it (the wire text of `*.property.Help`).

/// Which VM class a VM-valued property accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmReq {
    /// Any local qube (everything except RemoteVM; the AdminVM counts as local).
    Local,
    TemplateVM,
}

/// Declared type: decides payload sanitizing (§4.2), stored-value parsing and the reply type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropType {
    /// VM-valued; the flag says whether None (empty) is allowed.
    Vm(VmReq, bool),
    Int,
    Bool,
    Label,
    Str,
    Ipv4,
    Ipv6,
    Uuid,
    /// No declared type (pools, `default_kernel`, AdminVM `name`/`uuid`, most computed ones).
    Untyped,
}

impl PropType {
    /// The `type=` word of Get/GetAll/GetDefault replies.
    pub fn wire_name(self) -> &'static str {
        match self {
            PropType::Vm(..) => "vm",
            PropType::Int => "int",
            PropType::Bool => "bool",
            PropType::Label => "label",
            _ => "str",
        }
    }
}

/// How assignments are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    /// Computed, never stored; Set refused, Reset only fires events.
    Stateless,
    /// Stored or defaulted, but Set always refused.
    Forbidden,
    /// May be assigned only while no value is stored.
    WriteOnce,
}

/// One property of one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropDef {
    pub name: &'static str,
    pub stage: u8,
    pub ty: PropType,
    pub kind: Kind,
    /// The docstring with whitespace collapsed, RST markup kept (`HelpRst`).
    pub rst: &'static str,
    /// The docutils rendering the reference replies to `Help` with.
    pub help: &'static str,
}

/// Marker: the help text is the RST text itself (no markup to strip).
const SAME: &str = "\u{0}";

const fn p(
    name: &'static str,
    stage: u8,
    ty: PropType,
    kind: Kind,
    rst: &'static str,
    help: &'static str,
) -> PropDef {
    let help = if matches!(help.as_bytes(), [0]) {
        rst
    } else {
        help
    };
    PropDef {
        name,
        stage,
        ty,
        kind,
        rst,
        help,
    }
}

/// The property table of a class name (`Qubes` for the global object).
pub fn table(class: &str) -> Option<&'static [PropDef]> {
    Some(match class {
        "AdminVM" => ADMIN_VM,
        "AppVM" => APP_VM,
        "TemplateVM" => TEMPLATE_VM,
        "StandaloneVM" => STANDALONE_VM,
        "DispVM" => DISP_VM,
        "RemoteVM" => REMOTE_VM,
        "Qubes" => GLOBAL,
        _ => return None,
    })
}

/// Looks a property up by exact name; also returns its rank in the property order.
pub fn find(table: &'static [PropDef], name: &str) -> Option<(usize, &'static PropDef)> {
    table.iter().enumerate().find(|(_, d)| d.name == name)
}

/// Rank of a property name in a table (unknown names sort last), for ordering stored entries.
pub fn rank(table: &'static [PropDef], name: &str) -> usize {
    find(table, name).map_or(usize::MAX, |(i, _)| i)
}

use Kind::{Forbidden, Plain, Stateless, WriteOnce};
use PropType::{Bool, Int, Ipv4, Ipv6, Label, Str, Untyped, Uuid, Vm};

/// Rows that several classes share identically (most QubesVM properties), defined once.
#[rustfmt::skip]
mod shared {
    use super::*;

    pub const DEVICES_DENIED: PropDef = p("devices_denied", 2, Str, Plain, "List of device interface codes that are denied for this VM.", SAME);
    pub const INCLUDE_IN_BACKUPS: PropDef = p("include_in_backups", 2, Bool, Plain, "If this domain is to be included in default backup.", SAME);
    pub const KEYBOARD_LAYOUT: PropDef = p("keyboard_layout", 2, Str, Plain, "Keyboard layout for this VM", SAME);
    pub const KLASS: PropDef = p("klass", 2, Untyped, Stateless, "Domain class name", SAME);
    pub const LABEL: PropDef = p("label", 2, Label, Plain, "Colourful label assigned to VM. This is where the colour of the padlock is set.", SAME);
    pub const UPDATEABLE: PropDef = p("updateable", 2, Bool, Forbidden, "True if this machine may be updated on its own.", SAME);
    pub const DEFAULT_DISPVM: PropDef = p("default_dispvm", 4, Vm(VmReq::Local, true), Plain, "Default disposable template to be used for spawning disposable qubes for service calls.", SAME);
    pub const AUTOSTART: PropDef = p("autostart", 2, Bool, Plain, "Setting this to `True` means that VM should be autostarted on dom0 boot.", "Setting this to True means that VM should be autostarted on dom0 boot.");
    pub const BACKUP_TIMESTAMP: PropDef = p("backup_timestamp", 2, Int, Plain, "Time of last backup of the qube, in seconds since unix epoch", SAME);
    pub const DEBUG: PropDef = p("debug", 2, Bool, Plain, "Turns on debugging features.", SAME);
    pub const DEFAULT_USER: PropDef = p("default_user", 2, Str, Plain, "Default user to start applications as. TemplateBasedVMs use its template's value by default.", SAME);
    pub const DNS: PropDef = p("dns", 2, Untyped, Stateless, "DNS servers set up for this domain.", SAME);
    pub const GATEWAY: PropDef = p("gateway", 2, Untyped, Stateless, "Gateway for other domains that use this domain as netvm.", SAME);
    pub const GATEWAY6: PropDef = p("gateway6", 2, Untyped, Stateless, "Gateway (IPv6) for other domains that use this domain as netvm.", SAME);
    pub const INSTALLED_BY_RPM: PropDef = p("installed_by_rpm", 2, Bool, Plain, "If this domain's image was installed from package tracked by package manager.", SAME);
    pub const IP: PropDef = p("ip", 2, Ipv4, Plain, "IP address of this domain.", SAME);
    pub const IP6: PropDef = p("ip6", 2, Ipv6, Plain, "IPv6 address of this domain.", SAME);
    pub const KERNEL: PropDef = p("kernel", 2, Str, Plain, "Kernel used by this domain. TemplateBasedVMs use its template's value by default.", SAME);
    pub const MAC: PropDef = p("mac", 2, Str, Plain, "MAC address of the NIC emulated inside VM", SAME);
    pub const MAXMEM: PropDef = p("maxmem", 2, Int, Plain, "Maximum amount of memory available for this VM (for the purpose of the memory balancer). Set to 0 to disable memory balancing for this qube. TemplateBasedVMs use its template's value by default (unless memory balancing not supported for this qube).", SAME);
    pub const MEMORY: PropDef = p("memory", 2, Int, Plain, "Memory currently available for this VM. TemplateBasedVMs use its template's value by default.", SAME);
    pub const NAME: PropDef = p("name", 2, Str, WriteOnce, "User-specified name of the domain.", SAME);
    pub const PROVIDES_NETWORK: PropDef = p("provides_network", 2, Bool, Plain, "If this domain can act as network provider (formerly known as NetVM or ProxyVM)", SAME);
    pub const QID: PropDef = p("qid", 2, Int, WriteOnce, "Internal, persistent identificator of particular domain. Note this is different from Xen domid.", SAME);
    pub const QREXEC_TIMEOUT: PropDef = p("qrexec_timeout", 2, Int, Plain, "Time in seconds after which qrexec connection attempt is deemed failed. Operating system inside VM should be able to boot in this time.", SAME);
    pub const SHUTDOWN_TIMEOUT: PropDef = p("shutdown_timeout", 2, Int, Plain, "Time in seconds for shutdown of the VM, after which VM may be forcefully powered off. Operating system inside VM should be able to fully shutdown in this time.", SAME);
    pub const START_TIME: PropDef = p("start_time", 2, Untyped, Stateless, "Tell when machine was started. :rtype: float or None", SAME);
    pub const STUBDOM_MEM: PropDef = p("stubdom_mem", 2, Int, Plain, "Memory amount allocated for the stubdom", SAME);
    pub const STUBDOM_UUID: PropDef = p("stubdom_uuid", 2, Str, Stateless, "", SAME);
    pub const STUBDOM_XID: PropDef = p("stubdom_xid", 2, Int, Stateless, "", SAME);
    pub const TEMPLATE_FOR_DISPVMS: PropDef = p("template_for_dispvms", 2, Bool, Plain, "Should this VM be allowed to start as Disposable VM", SAME);
    pub const UUID: PropDef = p("uuid", 2, Uuid, WriteOnce, "UUID from libvirt.", SAME);
    pub const VCPUS: PropDef = p("vcpus", 2, Int, Plain, "Number of virtual CPUs for a qube. TemplateBasedVMs use its template's value by default.", SAME);
    pub const VIRT_MODE: PropDef = p("virt_mode", 2, Str, Plain, "Virtualisation mode: full virtualisation (\"HVM\"), or paravirtualisation (\"PV\"), or hybrid (\"PVH\"). TemplateBasedVMs use its template's value by default.", SAME);
    pub const VISIBLE_GATEWAY: PropDef = p("visible_gateway", 2, Untyped, Stateless, "Default gateway of this domain as seen by the domain.", SAME);
    pub const VISIBLE_GATEWAY6: PropDef = p("visible_gateway6", 2, Untyped, Stateless, "Default (IPv6) gateway of this domain as seen by the domain.", SAME);
    pub const VISIBLE_IP: PropDef = p("visible_ip", 2, Untyped, Stateless, "IP address of this domain as seen by the domain.", SAME);
    pub const VISIBLE_IP6: PropDef = p("visible_ip6", 2, Untyped, Stateless, "IPv6 address of this domain as seen by the domain.", SAME);
    pub const VISIBLE_NETMASK: PropDef = p("visible_netmask", 2, Untyped, Stateless, "Netmask as seen by the domain.", SAME);
    pub const XID: PropDef = p("xid", 2, Int, Stateless, "Xen ID. Or not Xen, but ID.", SAME);
    pub const AUDIOVM: PropDef = p("audiovm", 4, Vm(VmReq::Local, true), Plain, "VM used for Audio", SAME);
    pub const BOOTMODE: PropDef = p("bootmode", 4, Str, Plain, "Active boot mode for this domain", SAME);
    pub const GUIVM: PropDef = p("guivm", 4, Vm(VmReq::Local, true), Plain, "VM used for Gui", SAME);
    pub const KERNELOPTS: PropDef = p("kernelopts", 4, Str, Plain, "Kernel command line passed to domain. TemplateBasedVMs use its template's value by default.", SAME);
    pub const MANAGEMENT_DISPVM: PropDef = p("management_dispvm", 4, Vm(VmReq::Local, true), Plain, "Default disposable template to be used for spawning disposable qubes for managing this qube.", SAME);
    pub const NETVM: PropDef = p("netvm", 4, Vm(VmReq::Local, true), Plain, "VM that provides network connection to this domain. When `None`, machine is disconnected. When absent, domain uses default NetVM.", "VM that provides network connection to this domain. When None, machine is disconnected. When absent, domain uses default NetVM.");
    pub const ICON: PropDef = p("icon", 2, Str, Stateless, "freedesktop icon name, suitable for use in :py:meth:`PyQt4.QtGui.QIcon.fromTheme`", "freedesktop icon name, suitable for use in :py:meth:`PyQt4.QtGui.QIcon.fromTheme`\n\n<string>:1: (INFO/1) No role entry for \"py:meth\" in module \"docutils.parsers.rst.languages.en\".\nTrying \"py:meth\" as canonical role name.\n\n<string>:1: (ERROR/3) Unknown interpreted text role \"py:meth\".");
}
use shared::*;

/// `AdminVM` properties in property order (load stage, then name).
#[rustfmt::skip]
pub static ADMIN_VM: &[PropDef] = &[
    DEVICES_DENIED,
    p("icon", 2, Untyped, Stateless, "freedesktop icon name, suitable for use in :py:meth:`PyQt4.QtGui.QIcon.fromTheme`", "freedesktop icon name, suitable for use in :py:meth:`PyQt4.QtGui.QIcon.fromTheme`\n\n<string>:1: (INFO/1) No role entry for \"py:meth\" in module \"docutils.parsers.rst.languages.en\".\nTrying \"py:meth\" as canonical role name.\n\n<string>:1: (ERROR/3) Unknown interpreted text role \"py:meth\"."),
    INCLUDE_IN_BACKUPS,
    KEYBOARD_LAYOUT,
    KLASS,
    LABEL,
    p("maxmem", 2, Int, Forbidden, "Maximum amount of memory available for this VM", SAME),
    p("name", 2, Untyped, Forbidden, "", SAME),
    p("qid", 2, Int, Forbidden, "", SAME),
    UPDATEABLE,
    p("uuid", 2, Untyped, Forbidden, "", SAME),
    DEFAULT_DISPVM,
];

/// `AppVM` properties in property order (load stage, then name).
#[rustfmt::skip]
pub static APP_VM: &[PropDef] = &[
    AUTOSTART,
    BACKUP_TIMESTAMP,
    DEBUG,
    DEFAULT_USER,
    DEVICES_DENIED,
    DNS,
    GATEWAY,
    GATEWAY6,
    p("icon", 2, Untyped, Stateless, "", SAME),
    INCLUDE_IN_BACKUPS,
    INSTALLED_BY_RPM,
    IP,
    IP6,
    KERNEL,
    KEYBOARD_LAYOUT,
    KLASS,
    LABEL,
    MAC,
    MAXMEM,
    MEMORY,
    NAME,
    PROVIDES_NETWORK,
    QID,
    QREXEC_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    START_TIME,
    STUBDOM_MEM,
    STUBDOM_UUID,
    STUBDOM_XID,
    TEMPLATE_FOR_DISPVMS,
    UPDATEABLE,
    UUID,
    VCPUS,
    VIRT_MODE,
    VISIBLE_GATEWAY,
    VISIBLE_GATEWAY6,
    VISIBLE_IP,
    VISIBLE_IP6,
    VISIBLE_NETMASK,
    XID,
    AUDIOVM,
    BOOTMODE,
    DEFAULT_DISPVM,
    GUIVM,
    KERNELOPTS,
    MANAGEMENT_DISPVM,
    NETVM,
    p("template", 4, Vm(VmReq::TemplateVM, false), Plain, "Template, on which this AppVM is based.", SAME),
];

/// `TemplateVM` properties in property order (load stage, then name).
#[rustfmt::skip]
pub static TEMPLATE_VM: &[PropDef] = &[
    AUTOSTART,
    BACKUP_TIMESTAMP,
    DEBUG,
    DEFAULT_USER,
    DEVICES_DENIED,
    DNS,
    GATEWAY,
    GATEWAY6,
    ICON,
    INCLUDE_IN_BACKUPS,
    INSTALLED_BY_RPM,
    IP,
    IP6,
    KERNEL,
    KEYBOARD_LAYOUT,
    KLASS,
    LABEL,
    MAC,
    MAXMEM,
    MEMORY,
    NAME,
    PROVIDES_NETWORK,
    QID,
    QREXEC_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    START_TIME,
    STUBDOM_MEM,
    STUBDOM_UUID,
    STUBDOM_XID,
    UPDATEABLE,
    UUID,
    VCPUS,
    VIRT_MODE,
    VISIBLE_GATEWAY,
    VISIBLE_GATEWAY6,
    VISIBLE_IP,
    VISIBLE_IP6,
    VISIBLE_NETMASK,
    XID,
    p("appvm_default_bootmode", 4, Str, Plain, "Default active bootmode for AppVMs based on this template", SAME),
    AUDIOVM,
    BOOTMODE,
    DEFAULT_DISPVM,
    GUIVM,
    KERNELOPTS,
    MANAGEMENT_DISPVM,
    p("netvm", 4, Vm(VmReq::Local, true), Plain, "VM that provides network connection to this domain. When `None`, machine is disconnected.", "VM that provides network connection to this domain. When None, machine is disconnected."),
];

/// `StandaloneVM` properties in property order (load stage, then name).
#[rustfmt::skip]
pub static STANDALONE_VM: &[PropDef] = &[
    AUTOSTART,
    BACKUP_TIMESTAMP,
    DEBUG,
    DEFAULT_USER,
    DEVICES_DENIED,
    DNS,
    GATEWAY,
    GATEWAY6,
    ICON,
    INCLUDE_IN_BACKUPS,
    INSTALLED_BY_RPM,
    IP,
    IP6,
    KERNEL,
    KEYBOARD_LAYOUT,
    KLASS,
    LABEL,
    MAC,
    MAXMEM,
    MEMORY,
    NAME,
    PROVIDES_NETWORK,
    QID,
    QREXEC_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    START_TIME,
    STUBDOM_MEM,
    STUBDOM_UUID,
    STUBDOM_XID,
    TEMPLATE_FOR_DISPVMS,
    UPDATEABLE,
    UUID,
    VCPUS,
    VIRT_MODE,
    VISIBLE_GATEWAY,
    VISIBLE_GATEWAY6,
    VISIBLE_IP,
    VISIBLE_IP6,
    VISIBLE_NETMASK,
    XID,
    AUDIOVM,
    BOOTMODE,
    DEFAULT_DISPVM,
    GUIVM,
    KERNELOPTS,
    MANAGEMENT_DISPVM,
    NETVM,
];

/// `DispVM` properties in property order (load stage, then name).
#[rustfmt::skip]
pub static DISP_VM: &[PropDef] = &[
    p("auto_cleanup", 2, Bool, Plain, "automatically remove this qube upon shutdown", SAME),
    AUTOSTART,
    BACKUP_TIMESTAMP,
    DEBUG,
    DEFAULT_USER,
    DEVICES_DENIED,
    p("dispid", 2, Int, WriteOnce, "Internal, persistent identifier of particular disposable.", SAME),
    DNS,
    GATEWAY,
    GATEWAY6,
    ICON,
    INCLUDE_IN_BACKUPS,
    INSTALLED_BY_RPM,
    IP,
    IP6,
    p("is_preload", 2, Bool, Stateless, "Check if qube is a preloaded disposable. :rtype: bool", SAME),
    KERNEL,
    KEYBOARD_LAYOUT,
    KLASS,
    LABEL,
    MAC,
    MAXMEM,
    MEMORY,
    NAME,
    PROVIDES_NETWORK,
    QID,
    QREXEC_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    START_TIME,
    STUBDOM_MEM,
    STUBDOM_UUID,
    STUBDOM_XID,
    UPDATEABLE,
    UUID,
    VCPUS,
    VIRT_MODE,
    VISIBLE_GATEWAY,
    VISIBLE_GATEWAY6,
    VISIBLE_IP,
    VISIBLE_IP6,
    VISIBLE_NETMASK,
    XID,
    AUDIOVM,
    BOOTMODE,
    DEFAULT_DISPVM,
    GUIVM,
    KERNELOPTS,
    MANAGEMENT_DISPVM,
    NETVM,
    p("template", 4, Vm(VmReq::Local, false), Plain, "AppVM, on which this disposable is based.", SAME),
];

/// `RemoteVM` properties in property order (load stage, then name).
#[rustfmt::skip]
pub static REMOTE_VM: &[PropDef] = &[
    ICON,
    INCLUDE_IN_BACKUPS,
    KLASS,
    LABEL,
    NAME,
    QID,
    p("remote_name", 2, Str, Plain, "Name on the remote host.", SAME),
    p("transport_rpc", 2, Str, Plain, "Transport RPC used by the relay.", SAME),
    UUID,
    p("relayvm", 4, Vm(VmReq::Local, true), Plain, "Local qube used as relay.", SAME),
];

/// `Qubes` properties in property order (load stage, then name).
#[rustfmt::skip]
pub static GLOBAL: &[PropDef] = &[
    p("check_updates_vm", 3, Bool, Plain, "Check for updates inside qubes", SAME),
    p("clockvm", 3, Vm(VmReq::Local, true), Plain, "Which VM to use as NTP proxy for updating AdminVM", SAME),
    p("default_audiovm", 3, Vm(VmReq::Local, true), Plain, "Default AudioVM for VMs.", SAME),
    p("default_dispvm", 3, Vm(VmReq::Local, true), Plain, "Default disposable template to be used for spawning disposable qubes for service calls in this system.", SAME),
    p("default_guivm", 3, Vm(VmReq::Local, true), Plain, "Default GuiVM for VMs.", SAME),
    p("default_kernel", 3, Untyped, Plain, "Which kernel to use when not overriden in VM", SAME),
    p("default_netvm", 3, Vm(VmReq::Local, true), Plain, "Default NetVM for AppVMs. Initial state is `None`, which means that AppVMs are not connected to the Internet.", "Default NetVM for AppVMs. Initial state is None, which means that AppVMs are not connected to the Internet."),
    p("default_pool", 3, Untyped, Plain, "Default storage pool", SAME),
    p("default_pool_kernel", 3, Untyped, Plain, "Default storage pool for kernel volumes", SAME),
    p("default_pool_private", 3, Untyped, Plain, "Default storage pool for private volumes", SAME),
    p("default_pool_root", 3, Untyped, Plain, "Default storage pool for root volumes", SAME),
    p("default_pool_volatile", 3, Untyped, Plain, "Default storage pool for volatile volumes", SAME),
    p("default_qrexec_timeout", 3, Int, Plain, "Default time in seconds after which qrexec connection attempt is deemed failed", SAME),
    p("default_shutdown_timeout", 3, Int, Plain, "Default time in seconds for VM shutdown to complete", SAME),
    p("default_template", 3, Vm(VmReq::TemplateVM, true), Plain, "Default template for new AppVMs", SAME),
    p("management_dispvm", 3, Vm(VmReq::Local, true), Plain, "Default disposable template to be used for spawning disposable qubes for managing a qube in this system.", SAME),
    p("maxmem", 3, Int, Forbidden, "Maximum system memory.", SAME),
    p("no_cpus", 3, Int, Forbidden, "Quantity of CPUs", SAME),
    p("stats_interval", 3, Int, Plain, "Interval in seconds for VM stats reporting (memory, CPU usage)", SAME),
    p("updatevm", 3, Vm(VmReq::Local, true), Plain, "Which VM to use as `yum` proxy for updating AdminVM and TemplateVMs", "Which VM to use as yum proxy for updating AdminVM and TemplateVMs"),
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(t: &[PropDef]) -> String {
        t.iter().map(|d| d.name).collect::<Vec<_>>().join(" ")
    }

    /// Orders as listed by the reference's `admin.vm.property.List` (gen10 system).
    #[test]
    fn list_order_matches_reference() {
        assert_eq!(
            names(APP_VM),
            "autostart backup_timestamp debug default_user devices_denied dns gateway gateway6 icon \
             include_in_backups installed_by_rpm ip ip6 kernel keyboard_layout klass label mac maxmem \
             memory name provides_network qid qrexec_timeout shutdown_timeout start_time stubdom_mem \
             stubdom_uuid stubdom_xid template_for_dispvms updateable uuid vcpus virt_mode \
             visible_gateway visible_gateway6 visible_ip visible_ip6 visible_netmask xid audiovm \
             bootmode default_dispvm guivm kernelopts management_dispvm netvm template"
        );
        assert_eq!(
            names(ADMIN_VM),
            "devices_denied icon include_in_backups keyboard_layout klass label maxmem name qid \
             updateable uuid default_dispvm"
        );
        for t in [
            ADMIN_VM,
            APP_VM,
            TEMPLATE_VM,
            STANDALONE_VM,
            DISP_VM,
            REMOTE_VM,
            GLOBAL,
        ] {
            let mut sorted = t.to_vec();
            sorted.sort_by_key(|d| (d.stage, d.name));
            assert_eq!(sorted.as_slice(), t);
        }
        assert!(find(TEMPLATE_VM, "template").is_none());
        assert!(find(ADMIN_VM, "xid").is_none());
        assert_eq!(
            find(DISP_VM, "dispid").map(|(_, d)| d.kind),
            Some(Kind::WriteOnce)
        );
    }

    /// Help texts as the reference renders them (§4.6).
    #[test]
    fn help_texts() {
        let help = |t, n| find(t, n).map(|(_, d)| d.help);
        assert_eq!(
            help(APP_VM, "label"),
            Some("Colourful label assigned to VM. This is where the colour of the padlock is set.")
        );
        assert_eq!(help(APP_VM, "icon"), Some(""));
        assert_eq!(help(ADMIN_VM, "name"), Some(""));
        assert_eq!(
            help(APP_VM, "autostart"),
            Some("Setting this to True means that VM should be autostarted on dom0 boot.")
        );
        assert_eq!(
            find(APP_VM, "autostart").map(|(_, d)| d.rst),
            Some("Setting this to `True` means that VM should be autostarted on dom0 boot.")
        );
        assert_eq!(
            help(TEMPLATE_VM, "netvm"),
            Some("VM that provides network connection to this domain. When None, machine is disconnected.")
        );
        assert!(help(TEMPLATE_VM, "icon").is_some_and(
            |h| h.ends_with("<string>:1: (ERROR/3) Unknown interpreted text role \"py:meth\".")
        ));
        assert_eq!(
            help(GLOBAL, "clockvm"),
            Some("Which VM to use as NTP proxy for updating AdminVM")
        );
    }

    #[test]
    fn wire_types() {
        let ty = |t, n| find(t, n).map(|(_, d)| d.ty.wire_name());
        assert_eq!(ty(APP_VM, "netvm"), Some("vm"));
        assert_eq!(ty(APP_VM, "ip"), Some("str"));
        assert_eq!(ty(APP_VM, "uuid"), Some("str"));
        assert_eq!(ty(APP_VM, "label"), Some("label"));
        assert_eq!(ty(APP_VM, "xid"), Some("int"));
        assert_eq!(ty(APP_VM, "debug"), Some("bool"));
        assert_eq!(ty(GLOBAL, "default_pool"), Some("str"));
    }
}
