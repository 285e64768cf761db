//! The libvirt domain XML of a qube, from one typed description and a flavour chosen by the
//! libvirt URI: `test` (libvirt's test driver: the sandbox and the tests) and `qemu` (QEMU with
//! TCG, or KVM where `/dev/kvm` is usable). The Xen flavour (the reference's `xen.xml`
//! template, rendered byte for byte) is not built yet: a Start on `xen://` says so.

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
    /// The network interface's MAC, when the qube has a netvm.
    pub mac: Option<String>,
    /// Where QEMU copies the serial console (`virsh console` still works): the guest's boot
    /// messages, as Xen's `/var/log/xen/console/guest-<name>.log`.
    pub console_log: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub vmlinuz: String,
    pub initrd: Option<String>,
    pub cmdline: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: String,
    pub readonly: bool,
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
    /// The domain XML for `flavour` (`None` for Xen: not built yet).
    pub fn to_xml(&self, flavour: Flavour) -> Option<String> {
        let ty = match flavour {
            Flavour::Test => "test",
            Flavour::Qemu { kvm: true } => "kvm",
            Flavour::Qemu { kvm: false } => "qemu",
            Flavour::Xen => return None,
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
                    crate::store::xml::escape_attr(&d.path),
                    if d.readonly { "      <readonly/>\n" } else { "" }
                ));
            }
            if let Some(mac) = &self.mac {
                x.push_str(&format!(
                    "    <interface type='user'>\n      <mac address='{}'/>\n      \
                     <model type='virtio'/>\n    </interface>\n",
                    crate::store::xml::escape_attr(mac)
                ));
            }
            x.push_str("    <serial type='pty'>\n");
            if let Some(log) = &self.console_log {
                x.push_str(&format!(
                    "      <log file='{}' append='off'/>\n",
                    crate::store::xml::escape_attr(log)
                ));
            }
            x.push_str(
                "      <target port='0'/>\n    </serial>\n    \
                 <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n  \
                 </devices>\n",
            );
        }
        x.push_str("</domain>\n");
        Some(x)
    }
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
            }),
            disks: vec![
                Disk {
                    path: "/q/appvms/work/root-dirty.img".into(),
                    readonly: false,
                },
                Disk {
                    path: "/k/6.6/modules.img".into(),
                    readonly: true,
                },
            ],
            mac: Some("00:16:3e:5e:6c:00".into()),
            console_log: Some("/run/q/console/guest-work.log".into()),
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
        assert_eq!(spec().to_xml(Flavour::Xen), None);
    }

    #[test]
    fn test_flavour() {
        assert_eq!(
            spec().to_xml(Flavour::Test).unwrap(),
            "<domain type='test'>\n  <name>work</name>\n  <uuid>e4b06ce6-0741-47a8-bce4-2c8218072e8c</uuid>\n  \
<memory unit='MiB'>4000</memory>\n  <currentMemory unit='MiB'>400</currentMemory>\n  \
<vcpu placement='static'>2</vcpu>\n  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n  </os>\n  \
<on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  <on_crash>destroy</on_crash>\n</domain>\n"
        );
    }

    #[test]
    fn qemu_flavour() {
        let x = spec().to_xml(Flavour::Qemu { kvm: false }).unwrap();
        assert!(x.starts_with("<domain type='qemu'>"));
        assert!(x.contains("    <kernel>/k/6.6/vmlinuz</kernel>\n    <initrd>/k/6.6/initramfs</initrd>\n    <cmdline>root=/dev/vda ro console=ttyS0</cmdline>\n"));
        assert!(x.contains("<source file='/q/appvms/work/root-dirty.img'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>"));
        assert!(x.contains("<source file='/k/6.6/modules.img'/>\n      <target dev='vdb' bus='virtio'/>\n      <readonly/>\n    </disk>"));
        assert!(x.contains("<interface type='user'>\n      <mac address='00:16:3e:5e:6c:00'/>"));
        assert!(x.contains("</os>\n  <features>\n    <acpi/>\n  </features>\n  <on_poweroff>"));
        assert!(x.contains("<serial type='pty'>\n      <log file='/run/q/console/guest-work.log' append='off'/>\n      <target port='0'/>"));
        assert!(x.contains("<console type='pty'>\n      <target type='serial' port='0'/>"));
        assert!(Flavour::Qemu { kvm: true } != Flavour::Qemu { kvm: false });
        assert!(spec()
            .to_xml(Flavour::Qemu { kvm: true })
            .unwrap()
            .starts_with("<domain type='kvm'>"));
    }
}
