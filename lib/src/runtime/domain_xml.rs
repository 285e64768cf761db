//! The libvirt domain XML of a qube, from one typed description and a flavour chosen by the
//! libvirt URI: `test` (libvirt's test driver: the sandbox and the tests), `qemu` (QEMU with
//! TCG, or KVM where `/dev/kvm` is usable) and `xen` (the elements and attributes of the
//! reference's `libvirt/xen.xml` template for PV, PVH and HVM; see docs/runtime.md for what
//! is covered).

use crate::store::xml::escape_text;

/// What a qube's domain is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    pub name: String,
    pub uuid: String,
    /// Initial memory, MiB.
    pub memory_mib: u64,
    /// Maximum memory, MiB (at least `memory_mib`).
    pub maxmem_mib: u64,
    pub vcpus: u64,
    /// Kernel, initramfs and command line, when the qube boots a dom0-provided kernel.
    pub kernel: Option<Kernel>,
    /// Block devices in attach order (`root`, `private`, `volatile`, kernel modules).
    pub disks: Vec<Disk>,
    /// The network interface, when the qube has a netvm.
    pub net: Option<Net>,
    pub virt_mode: VirtMode,
    /// What only an HVM's Xen domain uses.
    pub hvm: HvmOptions,
    /// Where QEMU copies the serial console (`virsh console` still works): the guest's boot
    /// messages, as Xen's `/var/log/xen/console/guest-<name>.log`.
    pub console_log: Option<String>,
    /// PCI devices passed through (Xen only: the sandbox has none to give).
    pub pci: Vec<PciDevice>,
    /// Block devices of required assignments (Xen only), after the volumes.
    pub block: Vec<BlockDevice>,
    /// PV with PCI devices: expose the host's memory map (`pci-e820-host`, default on).
    pub e820_host: bool,
}

/// A block device of a `required` assignment (storage-devices-backup.md §D.4, §D.8): a device
/// node in its backend qube (dom0 or a qube such as sys-usb).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// The backend qube's name.
    pub backend: String,
    /// `/dev/` and the port id with `_` → `/` (`sda1`, `loop12`, `dm-0`, `mapper_x` → `/dev/mapper/x`).
    pub node: String,
    /// The assignment's `frontend-dev` (`xvdX`/`sdX`); none: the next free `xvdi…` (a cdrom
    /// prefers `xvdd`).
    pub frontend: Option<String>,
    pub readonly: bool,
    /// `disk` or `cdrom`.
    pub devtype: String,
}

/// A host PCI device given to the qube (a `required` assignment from dom0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// PCI segment (domain), bus, slot (device) and function, from the port id
    /// (`[SSSS_]BB_DD.F`).
    pub segment: u16,
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
    /// The assignment's options `permissive` and `no-strict-reset` (set: non-empty).
    pub permissive: bool,
    pub no_strict_reset: bool,
}

/// One `[SSSS_]BB_DD.F` step of a PCI path: (segment, bus, slot, function).
fn pci_step(s: &str) -> Option<(u16, u8, u8, u8)> {
    let (rest, function) = s.rsplit_once('.')?;
    let mut parts = rest.split('_').rev();
    let slot = parts.next()?;
    let bus = parts.next()?;
    let segment = parts.next().unwrap_or("0");
    let hex = |t: &str, max: usize| t.len() <= max && t.bytes().all(|b| b.is_ascii_hexdigit());
    if parts.next().is_some()
        || !hex(segment, 4)
        || !hex(bus, 2)
        || !hex(slot, 2)
        || !hex(function, 1)
    {
        return None;
    }
    Some((
        u16::from_str_radix(segment, 16).ok()?,
        u8::from_str_radix(bus, 16).ok()?,
        u8::from_str_radix(slot, 16).ok().filter(|s| *s < 32)?,
        u8::from_str_radix(function, 16).ok().filter(|f| *f < 8)?,
    ))
}

impl PciDevice {
    /// From a port id, a PCI path relative to the root bus as qubes.xml stores it: `00_14.0`,
    /// `0001_00_02.0` (segment not 0000), or `00_1c.0-00_00.0` (a device behind a bridge, each
    /// later step's bus counted from the bridge's first bus below it). A bridged device's bus
    /// number exists only on the running machine: it is found in `sysfs` (`/sys`), as the
    /// reference finds it. None if the path is malformed or names no device of this machine.
    pub fn from_port(port: &str, sysfs: &std::path::Path) -> Option<PciDevice> {
        let mut steps = port.split('-');
        let (segment, mut bus, mut slot, mut function) = pci_step(steps.next()?)?;
        let mut dir = sysfs
            .join("devices")
            .join(format!("pci{segment:04x}:{bus:02x}"))
            .join(format!("{segment:04x}:{bus:02x}:{slot:02x}.{function:x}"));
        for step in steps {
            let (s, rel_bus, d, f) = pci_step(step)?;
            if s != 0 {
                return None;
            }
            // The bridge's directory holds the devices on the bus below it (`SSSS:BB:DD.F`):
            // that bus is the step's bus 00.
            let prefix = format!("{segment:04x}:");
            let below = std::fs::read_dir(&dir)
                .ok()?
                .filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    let b = name.strip_prefix(&prefix)?.get(..3)?.strip_suffix(':')?;
                    u8::from_str_radix(b, 16).ok()
                })
                .min()?;
            bus = below.checked_add(rel_bus)?;
            (slot, function) = (d, f);
            dir = dir.join(format!("{segment:04x}:{bus:02x}:{slot:02x}.{function:x}"));
        }
        // A required device that is not there refuses the start (§D.8).
        if !dir.is_dir() {
            return None;
        }
        Some(PciDevice {
            segment,
            bus,
            slot,
            function,
            permissive: false,
            no_strict_reset: false,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub vmlinuz: String,
    pub initrd: Option<String>,
    /// `kernelopts`.
    pub cmdline: String,
    /// What Xen guests get before `kernelopts` (the reference's `kernelopts_common`; empty
    /// with the feature `no-default-kernelopts`).
    pub common: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The volume's name (`root`, `private`, `volatile`, `kernel`, …): Xen's device name.
    pub name: String,
    pub path: String,
    pub readonly: bool,
    /// Xen's hotplug script for the backend (`block` for an image file, none for a device).
    pub script: Option<String>,
}

/// The interface to the netvm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub mac: String,
    pub ip: Option<String>,
    pub ip6: Option<String>,
    /// The netvm's name (Xen's backend domain).
    pub backend: String,
    /// For an HVM's stub domain: the netvm's gateway, the DNS addresses, the netmask.
    pub gateway: String,
    pub dns: Vec<String>,
    pub netmask: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtMode {
    Pv,
    Pvh,
    Hvm,
}

impl VirtMode {
    /// From the `virt_mode` property (`pvh` for anything unknown, the default).
    pub fn parse(s: &str) -> VirtMode {
        match s {
            "pv" => VirtMode::Pv,
            "hvm" => VirtMode::Hvm,
            _ => VirtMode::Pvh,
        }
    }
}

/// An HVM's stub domain, firmware, clock and video (features along the template chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HvmOptions {
    /// `linux-stubdom` (default on): the Linux stub domain, else the MiniOS one.
    pub linux_stubdom: bool,
    /// `stubdom_mem`, MiB.
    pub stubdom_mem_mib: Option<u64>,
    /// `video-model` (default `vga`).
    pub video_model: String,
    /// `timezone` (default `localtime`; digits: an offset in seconds from UTC).
    pub timezone: String,
    /// `uefi`: OVMF instead of SeaBIOS.
    pub uefi: bool,
}

impl Default for HvmOptions {
    fn default() -> Self {
        HvmOptions {
            linux_stubdom: true,
            stubdom_mem_mib: None,
            video_model: "vga".to_string(),
            timezone: "localtime".to_string(),
            uefi: false,
        }
    }
}

/// The libvirt driver family a URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Test,
    Qemu { kvm: bool },
    Xen,
}

impl Flavour {
    /// From the URI's scheme (`test`, `test+unix`, `qemu`, `qemu+ssh`, `xen`, …).
    pub fn for_uri(uri: &str) -> Option<Flavour> {
        let scheme = uri.split([':', '+']).next().unwrap_or("");
        match scheme {
            "test" => Some(Flavour::Test),
            "qemu" => Some(Flavour::Qemu {
                kvm: std::path::Path::new("/dev/kvm").exists(),
            }),
            "xen" => Some(Flavour::Xen),
            _ => None,
        }
    }
}

fn e(s: &str) -> String {
    escape_text(s).into_owned()
}

impl DomainSpec {
    /// The domain XML for `flavour`.
    pub fn to_xml(&self, flavour: Flavour) -> String {
        let ty = match flavour {
            Flavour::Test => "test",
            Flavour::Qemu { kvm: true } => "kvm",
            Flavour::Qemu { kvm: false } => "qemu",
            Flavour::Xen => return self.xen_xml(),
        };
        let mut x = format!(
            "<domain type='{ty}'>\n  <name>{}</name>\n  <uuid>{}</uuid>\n  \
             <memory unit='MiB'>{}</memory>\n  <currentMemory unit='MiB'>{}</currentMemory>\n  \
             <vcpu placement='static'>{}</vcpu>\n  <os>\n    \
             <type arch='x86_64' machine='pc'>hvm</type>\n",
            e(&self.name),
            e(&self.uuid),
            self.maxmem_mib.max(self.memory_mib),
            self.memory_mib,
            self.vcpus
        );
        if let (Some(k), Flavour::Qemu { .. }) = (&self.kernel, flavour) {
            x.push_str(&format!("    <kernel>{}</kernel>\n", e(&k.vmlinuz)));
            if let Some(i) = &k.initrd {
                x.push_str(&format!("    <initrd>{}</initrd>\n", e(i)));
            }
            x.push_str(&format!("    <cmdline>{}</cmdline>\n", e(&k.cmdline)));
        }
        x.push_str("  </os>\n");
        if let Flavour::Qemu { .. } = flavour {
            // ACPI: the power button is how libvirt's shutdown reaches the guest (and libvirt 9
            // would otherwise pass `-no-acpi`, which QEMU 9+ no longer accepts).
            x.push_str("  <features>\n    <acpi/>\n  </features>\n");
        }
        x.push_str(
            "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  \
             <on_crash>destroy</on_crash>\n",
        );
        if let Flavour::Qemu { .. } = flavour {
            x.push_str("  <devices>\n");
            for (i, d) in self.disks.iter().enumerate() {
                let dev = format!("vd{}", char::from(b'a' + u8::try_from(i % 26).unwrap_or(0)));
                x.push_str(&format!(
                    "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      \
                     <source file='{}'/>\n      <target dev='{dev}' bus='virtio'/>\n{}    </disk>\n",
                    a(&d.path),
                    if d.readonly { "      <readonly/>\n" } else { "" }
                ));
            }
            if let Some(net) = &self.net {
                x.push_str(&format!(
                    "    <interface type='user'>\n      <mac address='{}'/>\n      \
                     <model type='virtio'/>\n    </interface>\n",
                    a(&net.mac)
                ));
            }
            x.push_str("    <serial type='pty'>\n");
            if let Some(log) = &self.console_log {
                x.push_str(&format!("      <log file='{}' append='off'/>\n", a(log)));
            }
            x.push_str(
                "      <target port='0'/>\n    </serial>\n    \
                 <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n  \
                 </devices>\n",
            );
        }
        x.push_str("</domain>\n");
        x
    }

    /// The Xen domain: the reference template's elements and attributes, in its order.
    fn xen_xml(&self) -> String {
        self.xen_blocks().assemble()
    }

    /// The Xen domain XML, block by block ([`XenBlocks`]).
    pub fn xen_blocks(&self) -> XenBlocks {
        let hvm = self.virt_mode == VirtMode::Hvm;
        let basic = format!(
            "    <name>{}</name>\n    <uuid>{}</uuid>\n    \
             <memory unit=\"MiB\">{}</memory>\n    <currentMemory unit=\"MiB\">{}</currentMemory>\n    \
             <vcpu placement=\"static\">{}</vcpu>\n",
            e(&self.name),
            e(&self.uuid),
            self.maxmem_mib.max(self.memory_mib),
            self.memory_mib,
            self.vcpus
        );
        let mut cpu = String::new();
        if self.virt_mode != VirtMode::Pv {
            cpu.push_str(
                "    <cpu mode=\"host-passthrough\">\n        <!-- disable nested HVM -->\n        \
                 <feature name=\"vmx\" policy=\"disable\"/>\n        \
                 <feature name=\"svm\" policy=\"disable\"/>\n        \
                 <!-- let the guest know the TSC is safe to use (no migration) -->\n        \
                 <feature name=\"invtsc\" policy=\"require\"/>\n    </cpu>\n",
            );
        }
        let mut x = String::new();
        match self.virt_mode {
            VirtMode::Hvm => x.push_str(&format!(
                "        <type arch=\"x86_64\" machine=\"xenfv\">hvm</type>\n        \
                 <loader type=\"{}\">hvmloader</loader>\n        <boot dev=\"cdrom\"/>\n        \
                 <boot dev=\"hd\"/>\n",
                if self.hvm.uefi { "pflash" } else { "rom" }
            )),
            VirtMode::Pvh => {
                x.push_str("        <type arch=\"x86_64\" machine=\"xenpvh\">xenpvh</type>\n")
            }
            VirtMode::Pv => {
                x.push_str("        <type arch=\"x86_64\" machine=\"xenpv\">linux</type>\n")
            }
        }
        if let Some(k) = &self.kernel {
            if !hvm {
                x.push_str(&format!("        <kernel>{}</kernel>\n", e(&k.vmlinuz)));
                if let Some(i) = &k.initrd {
                    x.push_str(&format!("        <initrd>{}</initrd>\n", e(i)));
                }
            }
            x.push_str(&format!(
                "        <cmdline>{}{}</cmdline>\n",
                e(&k.common),
                e(&k.cmdline)
            ));
        }
        let os = std::mem::take(&mut x);
        if self.virt_mode != VirtMode::Pv {
            x.push_str("        <pae/>\n        <acpi/>\n        <apic/>\n        <viridian/>\n");
        }
        if self.virt_mode == VirtMode::Pv && !self.pci.is_empty() && self.e820_host {
            x.push_str("        <xen>\n            <e820_host state=\"on\"/>\n        </xen>\n");
        }
        let features = std::mem::take(&mut x);
        let clock = if hvm {
            let tz = self.hvm.timezone.to_ascii_lowercase();
            if tz == "localtime" {
                "    <clock offset=\"variable\" adjustment=\"0\" basis=\"localtime\"/>\n"
                    .to_string()
            } else if !tz.is_empty() && tz.bytes().all(|b| b.is_ascii_digit()) {
                format!("    <clock offset=\"variable\" adjustment=\"{tz}\" basis=\"UTC\"/>\n")
            } else {
                "    <clock offset=\"variable\" adjustment=\"0\" basis=\"UTC\"/>\n".to_string()
            }
        } else {
            "    <clock offset=\"utc\" adjustment=\"reset\">\n        \
             <timer name=\"tsc\" mode=\"native\"/>\n    </clock>\n"
                .to_string()
        };
        let on = "    <on_poweroff>destroy</on_poweroff>\n    <on_reboot>destroy</on_reboot>\n    \
                  <on_crash>destroy</on_crash>\n"
            .to_string();
        // root, private, volatile and kernel have fixed devices; any other volume takes the
        // next of xvde…xvdz; assigned block devices take their frontend-dev or the next free of
        // xvdi…xvdz.
        let mut used: Vec<String> = Vec::new();
        let mut extra = b'e';
        for d in &self.disks {
            let dev = match d.name.as_str() {
                "root" => "xvda".to_string(),
                "private" => "xvdb".to_string(),
                "volatile" => "xvdc".to_string(),
                "kernel" => "xvdd".to_string(),
                _ => {
                    let dev = format!("xvd{}", char::from(extra.min(b'z')));
                    extra = extra.saturating_add(1);
                    dev
                }
            };
            x.push_str(&format!(
                "        <disk type=\"block\" device=\"disk\">\n            <driver name=\"phy\"/>\n            \
                 <source dev=\"{}\"/>\n            <target dev=\"{dev}\"/>\n",
                a(&d.path)
            ));
            used.push(dev);
            if d.readonly {
                x.push_str("            <readonly/>\n");
            }
            if let Some(script) = &d.script {
                x.push_str(&format!("            <script path=\"{}\"/>\n", a(script)));
            }
            x.push_str("        </disk>\n");
        }
        let mut next = b'i';
        for b in &self.block {
            let dev = match &b.frontend {
                Some(f) => f.clone(),
                None if b.devtype == "cdrom" && !used.iter().any(|u| u == "xvdd") => {
                    "xvdd".to_string()
                }
                None => loop {
                    let dev = format!("xvd{}", char::from(next.min(b'z')));
                    if next > b'z' || !used.contains(&dev) {
                        break dev;
                    }
                    next += 1;
                },
            };
            x.push_str(&format!(
                "        <disk type=\"block\" device=\"{}\">\n            <driver name=\"phy\"/>\n            \
                 <source dev=\"{}\"/>\n            <target dev=\"{}\"/>\n",
                a(&b.devtype),
                a(&b.node),
                a(&dev)
            ));
            if b.readonly {
                x.push_str("            <readonly/>\n");
            }
            if b.backend != "dom0" {
                x.push_str(&format!(
                    "            <backenddomain name=\"{}\"/>\n",
                    a(&b.backend)
                ));
            }
            x.push_str("        </disk>\n");
            used.push(dev);
        }
        if let Some(n) = &self.net {
            x.push_str(&format!(
                "        <interface type=\"ethernet\">\n            <mac address=\"{}\"/>\n",
                a(&n.mac)
            ));
            if let Some(ip) = &n.ip {
                x.push_str(&format!("            <ip address=\"{}\"/>\n", a(ip)));
            }
            if let Some(ip6) = &n.ip6 {
                x.push_str(&format!(
                    "            <ip address=\"{}\" family=\"ipv6\"/>\n",
                    a(ip6)
                ));
            }
            x.push_str(&format!(
                "            <backenddomain name=\"{}\"/>\n            \
                 <script path=\"vif-route-qubes\"/>\n        </interface>\n",
                a(&n.backend)
            ));
        }
        for d in &self.pci {
            x.push_str("        <hostdev type=\"pci\" managed=\"yes\"");
            if d.permissive {
                x.push_str(" permissive=\"yes\"");
            }
            if d.no_strict_reset {
                x.push_str(" nostrictreset=\"yes\"");
            }
            x.push_str(">\n            <source>\n                <address");
            if d.segment != 0 {
                x.push_str(&format!(" domain=\"0x{:04x}\"", d.segment));
            }
            x.push_str(&format!(
                " bus=\"0x{:02x}\" slot=\"0x{:02x}\" function=\"0x{:x}\"/>\n            </source>\n        \
                 </hostdev>\n",
                d.bus, d.slot, d.function
            ));
        }
        if hvm {
            let o = &self.hvm;
            x.push_str(&format!(
                "        <emulator type=\"{}\"",
                if o.linux_stubdom {
                    "stubdom-linux"
                } else {
                    "stubdom"
                }
            ));
            if let Some(n) = &self.net {
                let ip = n.ip.as_deref().unwrap_or_default();
                let dns = |i: usize| n.dns.get(i).map(String::as_str).unwrap_or_default();
                let cmdline = if o.linux_stubdom {
                    format!(
                        "-qubes-net:client_ip={ip},dns_0={},dns_1={},gw={},netmask={}",
                        dns(0),
                        dns(1),
                        n.gateway,
                        n.netmask
                    )
                } else {
                    format!(
                        "-net lwip,client_ip={ip},server_ip={},dns={},gw={},netmask={}",
                        dns(1),
                        dns(0),
                        n.gateway,
                        n.netmask
                    )
                };
                x.push_str(&format!(" cmdline=\"{}\"", a(&cmdline)));
            }
            if let Some(mib) = o.stubdom_mem_mib {
                x.push_str(&format!(" memory=\"{}\"", mib * 1024));
            }
            x.push_str(&format!(
                "/>\n        <input type=\"tablet\" bus=\"usb\"/>\n        <video>\n            \
                 <model type=\"{}\"/>\n        </video>\n",
                a(&o.video_model)
            ));
            if o.linux_stubdom {
                x.push_str("        <graphics type=\"qubes\"/>\n");
            }
        }
        x.push_str(
            "        <console type=\"pty\">\n            <target type=\"xen\" port=\"0\"/>\n        \
             </console>\n",
        );
        XenBlocks {
            basic,
            cpu,
            os,
            features,
            clock,
            on,
            devices: x,
        }
    }
}

/// A Xen domain XML cut where the reference's `libvirt/xen.xml` template has its blocks, so
/// that a user template extending it (`xen-user.xml`, `xen/by-name/<qube>.xml`) replaces or
/// extends (`super()`) the same parts ([`super::xen_template`]). `os`, `features` and
/// `devices` are the insides of their elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenBlocks {
    pub basic: String,
    pub cpu: String,
    pub os: String,
    pub features: String,
    pub clock: String,
    pub on: String,
    pub devices: String,
}

impl XenBlocks {
    /// Each block by name, in document order.
    pub fn named(&self) -> [(&'static str, &str); 7] {
        [
            ("basic", &self.basic),
            ("cpu", &self.cpu),
            ("os", &self.os),
            ("features", &self.features),
            ("clock", &self.clock),
            ("on", &self.on),
            ("devices", &self.devices),
        ]
    }

    /// The document with `fill(name, text)` at each block: the blocks themselves, or (for
    /// the base template) a block tag around them.
    pub fn layout(&self, mut fill: impl FnMut(&str, &str) -> String) -> String {
        let mut x = String::from("<domain type=\"xen\">\n");
        for (name, text) in self.named() {
            let (open, close) = match name {
                "os" => ("    <os>\n", "    </os>\n"),
                "features" => ("    <features>\n", "    </features>\n"),
                "devices" => ("    <devices>\n", "    </devices>\n"),
                _ => ("", ""),
            };
            x.push_str(open);
            x.push_str(&fill(name, text));
            x.push_str(close);
        }
        x.push_str("</domain>\n");
        x
    }

    /// The domain XML without overrides.
    pub fn assemble(&self) -> String {
        self.layout(|_, text| text.to_string())
    }
}

fn a(s: &str) -> String {
    crate::store::xml::escape_attr(s).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> DomainSpec {
        DomainSpec {
            name: "work".into(),
            uuid: "e4b06ce6-0741-47a8-bce4-2c8218072e8c".into(),
            memory_mib: 400,
            maxmem_mib: 4000,
            vcpus: 2,
            kernel: Some(Kernel {
                vmlinuz: "/k/6.6/vmlinuz".into(),
                initrd: Some("/k/6.6/initramfs".into()),
                cmdline: "root=/dev/vda ro console=ttyS0".into(),
                common: "console=hvc0 ".into(),
            }),
            disks: vec![
                Disk {
                    name: "root".into(),
                    path: "/q/appvms/work/root-dirty.img".into(),
                    readonly: false,
                    script: Some("block".into()),
                },
                Disk {
                    name: "kernel".into(),
                    path: "/k/6.6/modules.img".into(),
                    readonly: true,
                    script: Some("block".into()),
                },
            ],
            net: Some(Net {
                mac: "00:16:3e:5e:6c:00".into(),
                ip: Some("10.137.0.5".into()),
                ip6: None,
                backend: "sys-firewall".into(),
                gateway: "10.137.0.2".into(),
                dns: vec!["10.139.1.1".into(), "10.139.1.2".into()],
                netmask: "255.255.255.255".into(),
            }),
            virt_mode: VirtMode::Pvh,
            hvm: HvmOptions::default(),
            console_log: Some("/run/q/console/guest-work.log".into()),
            pci: Vec::new(),
            block: Vec::new(),
            e820_host: true,
        }
    }

    #[test]
    fn pci_ports() {
        let bdf = |d: PciDevice| (d.segment, d.bus, d.slot, d.function);
        // As sysfs shows them: two root-bus devices, one in segment 1, a NIC behind root port
        // 00:1c.0 (bus 03 on this machine), and a device behind a second bridge on that bus
        // (bus 04 below it).
        let sys = tempfile::tempdir().unwrap();
        let devices = sys.path().join("devices");
        for d in [
            "pci0000:00/0000:00:14.0",
            "pci0001:3a/0001:3a:1f.7",
            "pci0000:00/0000:00:1c.0/0000:03:00.0",
            "pci0000:00/0000:00:1c.0/0000:03:00.1/0000:04:02.0",
        ] {
            std::fs::create_dir_all(devices.join(d)).unwrap();
        }
        let root = devices.join("pci0000:00/0000:00:1c.0");
        std::fs::write(root.join("0000:03:00.1/vendor"), "0x8086\n").unwrap();
        let p = |s: &str| PciDevice::from_port(s, sys.path()).map(bdf);
        assert_eq!(p("00_14.0"), Some((0, 0, 0x14, 0)));
        assert_eq!(p("0001_3a_1f.7"), Some((1, 0x3a, 0x1f, 7)));
        assert_eq!(p("00_1c.0-00_00.0"), Some((0, 3, 0, 0)));
        assert_eq!(p("00_1c.0-00_00.1-00_02.0"), Some((0, 4, 2, 0)));
        for bad in [
            "",
            "00_14",
            "0014.0",
            "00_20.0",
            "00_14.8",
            "x_00_14.0",
            "0_0_00_14.0",
            "000_14.0",
            "+0_14.0",
            "00_1c.0-",
            // Well-formed, but not on this machine.
            "00_14.1",
            "00_1c.0-00_01.0",
            "00_1c.0-01_00.0",
            "00_1d.0-00_00.0",
            "00_1c.0-00_00.0-00_00.0",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn flavours_from_uris() {
        assert_eq!(Flavour::for_uri("test:///default"), Some(Flavour::Test));
        assert_eq!(
            Flavour::for_uri("test+unix:///default?socket=/x"),
            Some(Flavour::Test)
        );
        assert!(matches!(
            Flavour::for_uri("qemu:///session"),
            Some(Flavour::Qemu { .. })
        ));
        assert_eq!(Flavour::for_uri("xen:///"), Some(Flavour::Xen));
        assert_eq!(Flavour::for_uri("lxc:///"), None);
    }

    #[test]
    fn test_flavour() {
        assert_eq!(
            spec().to_xml(Flavour::Test),
            "<domain type='test'>\n  <name>work</name>\n  <uuid>e4b06ce6-0741-47a8-bce4-2c8218072e8c</uuid>\n  \
<memory unit='MiB'>4000</memory>\n  <currentMemory unit='MiB'>400</currentMemory>\n  \
<vcpu placement='static'>2</vcpu>\n  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n  </os>\n  \
<on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  <on_crash>destroy</on_crash>\n</domain>\n"
        );
    }

    #[test]
    fn qemu_flavour() {
        let x = spec().to_xml(Flavour::Qemu { kvm: false });
        assert!(x.starts_with("<domain type='qemu'>"));
        assert!(x.contains("    <kernel>/k/6.6/vmlinuz</kernel>\n    <initrd>/k/6.6/initramfs</initrd>\n    <cmdline>root=/dev/vda ro console=ttyS0</cmdline>\n"));
        assert!(x.contains("<source file='/q/appvms/work/root-dirty.img'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>"));
        assert!(x.contains("<source file='/k/6.6/modules.img'/>\n      <target dev='vdb' bus='virtio'/>\n      <readonly/>\n    </disk>"));
        assert!(x.contains("<interface type='user'>\n      <mac address='00:16:3e:5e:6c:00'/>"));
        assert!(x.contains("</os>\n  <features>\n    <acpi/>\n  </features>\n  <on_poweroff>"));
        assert!(x.contains("<serial type='pty'>\n      <log file='/run/q/console/guest-work.log' append='off'/>\n      <target port='0'/>"));
        assert!(x.contains("<console type='pty'>\n      <target type='serial' port='0'/>"));
        assert!(spec()
            .to_xml(Flavour::Qemu { kvm: true })
            .starts_with("<domain type='kvm'>"));
    }

    /// The golden Xen domains: PVH (the default) with a netvm, PV without one, HVM with a
    /// Linux stub domain and with the MiniOS one.
    #[test]
    fn xen_flavour_golden() {
        let golden = |file: &str, s: &DomainSpec| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/golden/domain-xml")
                .join(file);
            let got = s.to_xml(Flavour::Xen);
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::write(&path, &got).unwrap();
            }
            assert_eq!(got, std::fs::read_to_string(&path).unwrap(), "{file}");
        };
        golden("pvh.xml", &spec());
        let mut pv = spec();
        pv.virt_mode = VirtMode::Pv;
        pv.net = None;
        golden("pv.xml", &pv);
        // sys-net's shape: PV with a network card and a USB controller passed through.
        let nic = PciDevice {
            segment: 0,
            bus: 0,
            slot: 0x19,
            function: 0,
            permissive: false,
            no_strict_reset: true,
        };
        let usb = PciDevice {
            segment: 1,
            bus: 0x3a,
            slot: 0,
            function: 3,
            permissive: true,
            no_strict_reset: false,
        };
        pv.pci = vec![nic, usb];
        // And block devices: a USB stick's partition from sys-usb read-only, a dom0 disk at a
        // chosen target, an ISO's loop device as a cdrom (xvdd is the kernel's here).
        pv.block = vec![
            BlockDevice {
                backend: "sys-usb".into(),
                node: "/dev/sda1".into(),
                frontend: None,
                readonly: true,
                devtype: "disk".into(),
            },
            BlockDevice {
                backend: "dom0".into(),
                node: "/dev/mapper/data".into(),
                frontend: Some("xvdp".into()),
                readonly: false,
                devtype: "disk".into(),
            },
            BlockDevice {
                backend: "dom0".into(),
                node: "/dev/loop7".into(),
                frontend: None,
                readonly: true,
                devtype: "cdrom".into(),
            },
        ];
        golden("pv-devices.xml", &pv);
        let mut hvm_dev = pv.clone();
        hvm_dev.virt_mode = VirtMode::Hvm;
        hvm_dev.kernel = None;
        golden("hvm-devices.xml", &hvm_dev);
        let mut hvm = spec();
        hvm.virt_mode = VirtMode::Hvm;
        hvm.kernel = None;
        hvm.disks.push(Disk {
            name: "data".into(),
            path: "/dev/qubes_dom0/vm-work-data".into(),
            readonly: false,
            script: None,
        });
        hvm.net.as_mut().unwrap().ip6 = Some("fd09:24ef:4179::a89:5".into());
        hvm.hvm.timezone = "3600".into();
        golden("hvm.xml", &hvm);
        hvm.hvm = HvmOptions {
            linux_stubdom: false,
            stubdom_mem_mib: Some(64),
            video_model: "cirrus".into(),
            timezone: "UTC".into(),
            uefi: true,
        };
        golden("hvm-minios.xml", &hvm);
    }
}
