//! The lvm_thin volume lifecycle (start/stop) through the library, against the stand-in LVM
//! tools. A test binary of its own: it points this process's PATH at the stand-ins.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use support::lvm::{Lvm, GIB, LVS};

/// Start and stop of an origin and a snapshot volume: the command lines of the reference's
/// `_snapshot` and `_commit` (the commands that change LVs; when `lvs` is re-read is ours).
#[test]
fn lvm_volume_start_and_stop() {
    use qubes_admin::storage::{Pool, VolumeConfig};
    let Some(t) = Lvm::new() else { return };
    // The driver runs the tools through PATH: point this process at the stand-ins.
    std::env::set_var(
        "PATH",
        format!("{}:{}", t.bin.display(), std::env::var("PATH").unwrap()),
    );
    std::env::set_var("FAKE_LVM_STATE", t.sb.dir.path().join("lvm.json"));
    std::env::set_var("FAKE_LVM_LOG", t.log_path());
    let changes = || -> Vec<String> { t.commands().into_iter().filter(|c| c != LVS).collect() };
    let doc = qubes_admin::store::load(&t.sb.xml()).unwrap().0;
    let pools = Pool::open_all(doc.pools());
    let pool = pools.iter().find(|p| p.name == "lvm").unwrap();
    let private = VolumeConfig {
        name: "private".into(),
        pool: "lvm".into(),
        vid: "qubes_dom0/vm-old-private".into(),
        revisions_to_keep: 1,
        rw: true,
        save_on_stop: true,
        snap_on_start: false,
        ephemeral: None,
        size: 2 * GIB,
        source: None,
    };
    let d = pool.driver();
    // A leftover running copy (unclean stop): only activated.
    d.start(&private).unwrap();
    assert_eq!(
        changes(),
        ["lvchange --activate=y -- qubes_dom0/vm-old-private-snap"]
    );
    d.stop(&private).unwrap();
    let cmds = changes();
    assert_eq!(cmds.len(), 5, "{cmds:?}");
    assert!(
        cmds[0].starts_with("lvrename -- qubes_dom0/vm-old-private qubes_dom0/vm-old-private-")
            && cmds[0].ends_with("-back"),
        "{cmds:?}"
    );
    // Three revisions now, one kept: the two oldest go.
    assert_eq!(
        cmds[1..],
        [
            "lvrename -- qubes_dom0/vm-old-private-snap qubes_dom0/vm-old-private",
            "lvchange --activate=y -- qubes_dom0/vm-old-private",
            "lvremove --force -- qubes_dom0/vm-old-private-1600000000-back",
            "lvremove --force -- qubes_dom0/vm-old-private-1700000000-back"
        ]
    );
    // A clean start: a stale -snap is removed (an error when there is none), then cloned.
    d.start(&private).unwrap();
    assert_eq!(
        changes(),
        [
            "lvremove --force -- qubes_dom0/vm-old-private-snap",
            "lvcreate --setactivationskip=n --activate=y --snapshot --type=thin --name=qubes_dom0/vm-old-private-snap -- qubes_dom0/vm-old-private"
        ]
    );
    // A snapshot of it, and a volatile volume.
    let root = VolumeConfig {
        name: "root".into(),
        vid: "qubes_dom0/vm-app-root".into(),
        save_on_stop: false,
        snap_on_start: true,
        source: Some("qubes_dom0/vm-old-private".into()),
        ..private.clone()
    };
    d.start(&root).unwrap();
    d.stop(&root).unwrap();
    let volatile = VolumeConfig {
        name: "volatile".into(),
        vid: "qubes_dom0/vm-app-volatile".into(),
        save_on_stop: false,
        ..private.clone()
    };
    d.start(&volatile).unwrap();
    d.stop(&volatile).unwrap();
    assert_eq!(
        changes(),
        [
            "lvremove --force -- qubes_dom0/vm-app-root-snap",
            "lvcreate --setactivationskip=n --activate=y --snapshot --type=thin --name=qubes_dom0/vm-app-root-snap -- qubes_dom0/vm-old-private",
            "lvremove --force -- qubes_dom0/vm-app-root-snap",
            "lvremove --force -- qubes_dom0/vm-app-volatile",
            "lvcreate --thin --setactivationskip=n --activate=y --name=vm-app-volatile --virtualsize=2147483648B -- qubes_dom0/vm-pool",
            "lvremove --force -- qubes_dom0/vm-app-volatile",
        ]
    );
    assert!(t.lv_names().contains(&"vm-old-private-snap".to_string()));
}
