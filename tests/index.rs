//! qubes.xml's index file (`<run_dir>/qubes-admin/qubes.xml.index`, `lib/src/store/file_index.rs`):
//! written by the first reader and by every write, and never the source of a stale or wrong
//! reply: qubes.xml replaced or rewritten in place by another program with its size and
//! modification time restored, an index of another file, a truncated or garbage index.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use support::{frame_request, show, Sandbox};

fn label_of(sb: &Sandbox, vm: &str) -> String {
    show(
        &sb.socket_request(&frame_request(
            "admin.vm.property.Get+label",
            "dom0",
            vm,
            b"",
        ))
        .stdout,
    )
}

fn index(sb: &Sandbox) -> std::path::PathBuf {
    sb.run_dir().join("qubes-admin/qubes.xml.index")
}

/// Swaps the names of vm0001 (orange) and vm0002 (yellow): the same size, every domain where
/// it was, but each name now in the other's domain. An index of the old version would send
/// `vm0001` to the wrong domain (whose stored name no longer matches).
fn swap_names(xml: &str) -> String {
    xml.replace(">vm0001<", ">tmp<")
        .replace(">vm0002<", ">vm0001<")
        .replace(">tmp<", ">vm0002<")
}

fn restore_mtime(sb: &Sandbox, mtime: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(sb.xml())
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

#[test]
fn written_by_a_reader_and_by_a_write() {
    let sb = Sandbox::new("golden-10");
    assert_eq!(label_of(&sb, "vm0001"), "0|default=False type=label orange");
    let first = std::fs::read(index(&sb)).expect("the first reader writes the index");
    assert!(first.starts_with(b"QXIDX002"));
    // Reads keep it; a write records the new version's.
    assert_eq!(label_of(&sb, "vm0002"), "0|default=False type=label yellow");
    assert_eq!(std::fs::read(index(&sb)).unwrap(), first);
    let set = sb.socket_request(&frame_request(
        "admin.vm.property.Set+label",
        "dom0",
        "vm0001",
        b"blue",
    ));
    assert_eq!(show(&set.stdout), "0|");
    let after = std::fs::read(index(&sb)).unwrap();
    assert_ne!(after, first);
    let md = std::fs::metadata(sb.xml()).unwrap();
    assert_eq!(
        &after[16..24],
        &md.ino().to_le_bytes(),
        "the index names the new version"
    );
    assert_eq!(label_of(&sb, "vm0001"), "0|default=False type=label blue");
    assert_eq!(std::fs::read(index(&sb)).unwrap(), after);
}

/// Another program replaces qubes.xml by rename with a file of the same size, and sets its
/// modification time back: the index describes the old version and is not used.
/// A temp file a crashed process left between writing the index and renaming it is removed by
/// the next write; one whose process lives (it may be writing now) and other names stay.
#[test]
fn a_dead_writers_index_temp_is_swept_by_the_next_write() {
    let sb = Sandbox::new("golden-10");
    let dir = index(&sb).parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    // Above any pid Linux hands out (pid_max is at most 2^22).
    let dead = dir.join("qubes.xml.index.999999999");
    let live = dir.join(format!("qubes.xml.index.{}", std::process::id()));
    let other = dir.join("qubes.xml.index.x1");
    for p in [&dead, &live, &other] {
        std::fs::write(p, "torn").unwrap();
    }
    assert_eq!(label_of(&sb, "vm0001"), "0|default=False type=label orange");
    assert!(dead.exists(), "readers do not sweep");
    let set = sb.socket_request(&frame_request(
        "admin.vm.property.Set+label",
        "dom0",
        "vm0001",
        b"blue",
    ));
    assert_eq!(show(&set.stdout), "0|");
    assert!(!dead.exists());
    assert!(live.exists() && other.exists());
}

#[test]
fn replaced_with_same_size_and_restored_mtime() {
    let sb = Sandbox::new("golden-10");
    assert_eq!(label_of(&sb, "vm0001"), "0|default=False type=label orange");
    let old = std::fs::read_to_string(sb.xml()).unwrap();
    let mtime = std::fs::metadata(sb.xml()).unwrap().modified().unwrap();
    let new = swap_names(&old);
    assert_eq!(new.len(), old.len());
    let tmp = sb.dir.path().join("qubes.xml.new");
    std::fs::write(&tmp, &new).unwrap();
    std::fs::rename(&tmp, sb.xml()).unwrap();
    restore_mtime(&sb, mtime);
    assert_eq!(label_of(&sb, "vm0001"), "0|default=False type=label yellow");
    assert_eq!(label_of(&sb, "vm0002"), "0|default=False type=label orange");
}

/// The same, written in place (same inode, same size, modification time restored): only the
/// change time tells, and it does.
#[test]
fn rewritten_in_place_with_restored_mtime() {
    let sb = Sandbox::new("golden-10");
    assert_eq!(label_of(&sb, "vm0001"), "0|default=False type=label orange");
    let old = std::fs::read_to_string(sb.xml()).unwrap();
    let before = std::fs::metadata(sb.xml()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut f = std::fs::File::options().write(true).open(sb.xml()).unwrap();
    f.write_all(swap_names(&old).as_bytes()).unwrap();
    drop(f);
    restore_mtime(&sb, before.modified().unwrap());
    let after = std::fs::metadata(sb.xml()).unwrap();
    assert_eq!(
        (after.ino(), after.size(), after.mtime(), after.mtime_nsec()),
        (
            before.ino(),
            before.size(),
            before.mtime(),
            before.mtime_nsec()
        )
    );
    assert_eq!(label_of(&sb, "vm0001"), "0|default=False type=label yellow");
    assert_eq!(label_of(&sb, "vm0002"), "0|default=False type=label orange");
}

/// An index of another qubes.xml, a truncated one, garbage: ignored, then replaced by a good
/// one.
#[test]
fn foreign_truncated_or_garbage_index() {
    let other = Sandbox::new("gen10");
    assert!(label_of(&other, "vm0001").starts_with("0|"));
    let foreign = std::fs::read(index(&other)).unwrap();
    let sb = Sandbox::new("golden-10");
    assert_eq!(label_of(&sb, "vm0001"), "0|default=False type=label orange");
    let good = std::fs::read(index(&sb)).unwrap();
    for bad in [
        foreign,
        good[..good.len() / 2].to_vec(),
        b"garbage".repeat(1000),
        Vec::new(),
    ] {
        std::fs::write(index(&sb), &bad).unwrap();
        assert_eq!(label_of(&sb, "vm0001"), "0|default=False type=label orange");
        assert_eq!(label_of(&sb, "sys-net"), "0|default=False type=label red");
        assert_eq!(std::fs::read(index(&sb)).unwrap(), good, "not rewritten");
    }
}
