//! The `lvm_thin` driver through the built binary. This machine's kernel has no device-mapper,
//! so the LVM tools are stand-ins (`tests/support/fake-lvm.py`, first in PATH) that log every
//! command line and answer in LVM's formats: the tests assert the exact commands run. A real
//! volume group on a loop device is used where `/dev/mapper/control` exists.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::path::Path;
use std::process::Command;

use support::lvm::{Lvm, CAPTURE_BASE, GIB, LVS};
use support::{frame_request, Sandbox};

#[test]
fn pool_calls_on_an_lvm_pool() {
    let Some(t) = Lvm::new() else { return };
    assert_eq!(
        t.call("admin.pool.Info+lvm", "dom0", b"", &[]),
        format!(
            "0\0driver=lvm_thin\nephemeral_volatile=False\nname=lvm\nrevisions_to_keep=2\nthin_pool=vm-pool\nvolume_group=qubes_dom0\nsize={}\nusage={}\n",
            100 * GIB,
            100 * GIB / 8
        )
    );
    assert_eq!(t.commands(), [LVS]);
    assert_eq!(
        t.call("admin.pool.UsageDetails+lvm", "dom0", b"", &[]),
        format!(
            "0\0data_size={}\ndata_usage={}\nmetadata_size=109051904\nmetadata_usage=5452595\n",
            100 * GIB,
            100 * GIB / 8
        )
    );
    // Every LV of the thin pool but running copies and revisions, in lvs order.
    assert_eq!(
        t.call("admin.pool.volume.List+lvm", "dom0", b"", &[]),
        "0\0qubes_dom0/unmanaged\nqubes_dom0/vm-old-private\n"
    );
    t.commands();
}

#[test]
fn create_info_remove_in_an_lvm_pool() {
    let Some(t) = Lvm::new() else { return };
    assert_eq!(
        t.call(
            "admin.vm.CreateInPool.StandaloneVM",
            "dom0",
            b"name=l1 label=red pool=lvm",
            &[]
        ),
        "0\0"
    );
    assert_eq!(
        t.commands(),
        [
            "lvcreate --thin --setactivationskip=n --activate=y --name=vm-l1-root --virtualsize=10737418240B -- qubes_dom0/vm-pool",
            "lvcreate --thin --setactivationskip=n --activate=y --name=vm-l1-private --virtualsize=2147483648B -- qubes_dom0/vm-pool",
        ]
    );
    let xml = std::fs::read_to_string(t.sb.xml()).unwrap();
    assert!(xml.contains("<volume name=\"private\" pool=\"lvm\" vid=\"qubes_dom0/vm-l1-private\" revisions_to_keep=\"2\" rw=\"True\" save_on_stop=\"True\" snap_on_start=\"False\" size=\"2147483648\"/>"), "{xml}");
    assert!(xml.contains("<volume name=\"volatile\" pool=\"lvm\" vid=\"qubes_dom0/vm-l1-volatile\" revisions_to_keep=\"2\""), "{xml}");
    assert!(t.sb.base_dir().join("appvms/l1").is_dir());
    assert_eq!(
        t.call("admin.vm.volume.Info+private", "l1", b"", &[]),
        "0\0pool=lvm\nvid=qubes_dom0/vm-l1-private\nsize=2147483648\nusage=0\nrw=True\nsource=\n\
         path=/dev/mapper/qubes_dom0-vm--l1--private\nsave_on_stop=True\nsnap_on_start=False\n\
         revisions_to_keep=2\nephemeral=False\nis_outdated=False\n"
    );
    assert_eq!(t.commands(), [LVS]);
    assert_eq!(t.call("admin.vm.Remove", "l1", b"", &[]), "0\0");
    assert_eq!(
        t.commands(),
        // lvs is asked again after every change, as the reference resets its cache.
        [
            LVS,
            "lvremove --force -- qubes_dom0/vm-l1-root",
            LVS,
            "lvremove --force -- qubes_dom0/vm-l1-private",
            LVS
        ]
    );
    assert!(!t.lv_names().iter().any(|n| n.contains("l1")));
    assert!(!t.sb.base_dir().join("appvms/l1").exists());
}

/// Revisions, a running copy and an outdated snapshot, read from lvs.
#[test]
fn volume_reads_of_an_lvm_qube() {
    let Some(t) = Lvm::new() else { return };
    // A qube whose private volume is the pre-existing `vm-old-private` family of LVs.
    let xml = std::fs::read_to_string(t.sb.xml()).unwrap().replacen(
        "<volume name=\"private\" pool=\"varlibqubes\" vid=\"appvms/vm0001/private\"",
        "<volume name=\"private\" pool=\"lvm\" vid=\"qubes_dom0/vm-old-private\"",
        1,
    );
    std::fs::write(t.sb.xml(), xml).unwrap();
    assert_eq!(
        t.call("admin.vm.volume.Info+private", "vm0001", b"", &[]),
        format!(
            "0\0pool=lvm\nvid=qubes_dom0/vm-old-private\nsize={}\nusage={}\nrw=True\nsource=\n\
             path=/dev/mapper/qubes_dom0-vm--old--private\nsave_on_stop=True\nsnap_on_start=False\n\
             revisions_to_keep=1\nephemeral=False\nis_outdated=False\n",
            2 * GIB,
            GIB
        )
    );
    assert_eq!(
        t.call("admin.vm.volume.ListSnapshots+private", "vm0001", b"", &[]),
        "0\x001600000000-back\n1700000000-back\n"
    );
}

/// A tool failing half-way: LVM's message (with `%` doubled for the client's formatting), and
/// the LVs the call made are removed again.
#[test]
fn a_failing_lvcreate_leaves_nothing() {
    let Some(t) = Lvm::new() else { return };
    let before = t.lv_names();
    let xml = std::fs::read(t.sb.xml()).unwrap();
    assert_eq!(
        t.call("admin.vm.CreateInPool.StandaloneVM", "dom0", b"name=l2 label=red pool=lvm", &[("FAKE_LVM_FAIL", "lvcreate")]),
        "2\0StoragePoolException\0\0Insufficient free space: thin pool qubes_dom0/vm-pool is 100%% full.\0"
    );
    assert_eq!(t.commands(), ["lvcreate --thin --setactivationskip=n --activate=y --name=vm-l2-root --virtualsize=10737418240B -- qubes_dom0/vm-pool", LVS]);
    assert_eq!(t.lv_names(), before);
    assert_eq!(std::fs::read(t.sb.xml()).unwrap(), xml);
    assert!(!t.sb.base_dir().join("appvms/l2").exists());
}

/// The same driver on real LVM: a volume group with a thin pool on a loop device.
#[test]
fn real_lvm_thin_pool() {
    if !Path::new("/dev/mapper/control").exists() {
        eprintln!(
            "SKIP: no device-mapper (/dev/mapper/control): a real thin pool cannot be built here"
        );
        return;
    }
    if !nix::unistd::geteuid().is_root()
        || Command::new("vgcreate").arg("--version").output().is_err()
    {
        eprintln!("SKIP: needs root and lvm2 (vgcreate)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("pv.img");
    std::fs::File::create(&img).unwrap().set_len(GIB).unwrap();
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!dev.is_empty(), "losetup failed");
    let vg = format!("qat{}", std::process::id());
    let ok = |args: &[&str]| {
        let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    ok(&["vgcreate", &vg, &dev]);
    ok(&[
        "lvcreate",
        "--type",
        "thin-pool",
        "-L",
        "512M",
        "-n",
        "pool",
        &vg,
    ]);
    let sb = Sandbox::new_rebased("golden-10", CAPTURE_BASE);
    let xml = std::fs::read_to_string(sb.xml()).unwrap().replacen(
        "  </pools>",
        &format!("    <pool name=\"lvm\" volume_group=\"{vg}\" thin_pool=\"pool\" driver=\"lvm_thin\"/>\n  </pools>"),
        1,
    );
    std::fs::write(sb.xml(), xml).unwrap();
    let out = sb.socket_request(&frame_request(
        "admin.vm.CreateInPool.StandaloneVM",
        "dom0",
        "dom0",
        b"name=r1 label=red pool=lvm",
    ));
    let created = out.stdout == b"0\0";
    let lvs = Command::new("lvs").arg(&vg).output().unwrap();
    let removed = sb.socket_request(&frame_request("admin.vm.Remove", "dom0", "r1", b""));
    let _ = Command::new("vgremove").args(["-f", &vg]).output();
    let _ = Command::new("losetup").args(["-d", &dev]).output();
    assert!(created, "{out:?}");
    let lvs = String::from_utf8_lossy(&lvs.stdout);
    assert!(
        lvs.contains("vm-r1-root") && lvs.contains("vm-r1-private"),
        "{lvs}"
    );
    assert_eq!(removed.stdout, b"0\0");
}
