//! The file-reflink driver on the filesystems it is for: btrfs and xfs in loop devices (reflink
//! copies share extents) and the machine's own filesystem (sparse copies). Needs root, loop
//! devices and `mkfs.btrfs`/`mkfs.xfs`; each test says why it skips where they are missing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use qubes_admin::storage::drivers::reflink::{copy_file, CopyKind};
use support::{frame_request, Sandbox};

/// A filesystem of type `fs` in a loop device, mounted on a temp dir; unmounted on drop.
struct LoopFs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl LoopFs {
    fn new(fs: &str) -> Option<LoopFs> {
        let skip = |why: String| {
            eprintln!("SKIP {fs}: {why}");
            None
        };
        if !nix::unistd::geteuid().is_root() {
            return skip("needs root (mount)".into());
        }
        if !Path::new("/dev/loop-control").exists() {
            return skip("no loop devices (/dev/loop-control)".into());
        }
        let mkfs = format!("mkfs.{fs}");
        if Command::new(&mkfs).arg("-V").output().is_err() {
            return skip(format!("{mkfs} not installed"));
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        let out = Command::new(&mkfs).arg("-q").arg(&img).output().unwrap();
        if !out.status.success() {
            return skip(format!(
                "{mkfs} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .unwrap();
        if !out.status.success() {
            return skip(format!(
                "mount -o loop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Some(LoopFs { _dir: dir, mnt })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn free_bytes(p: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(p).unwrap();
    s.fragment_size() * s.blocks_free()
}

/// 64 MiB of data that does not compress or dedupe.
fn write_data(p: &Path) {
    let f = std::fs::File::create(p).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..64u64 {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        f.write_all_at(&block, i << 20).unwrap();
    }
    f.sync_all().unwrap();
}

fn reflink_on(fs: &str) {
    let Some(l) = LoopFs::new(fs) else { return };
    let src = l.mnt.join("src.img");
    write_data(&src);
    let before = free_bytes(&l.mnt);
    let kind = copy_file(&src, &l.mnt.join("dst.img"), true).unwrap();
    assert_eq!(kind, CopyKind::Reflink, "{fs}");
    let used = before.saturating_sub(free_bytes(&l.mnt));
    assert!(
        used < 8 << 20,
        "{fs}: a reflink copy of 64 MiB used {used} bytes"
    );
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(l.mnt.join("dst.img")).unwrap()
    );
    assert_eq!(
        std::fs::metadata(&src).unwrap().modified().unwrap(),
        std::fs::metadata(l.mnt.join("dst.img"))
            .unwrap()
            .modified()
            .unwrap()
    );
}

#[test]
fn reflink_copy_on_btrfs() {
    reflink_on("btrfs");
}

#[test]
fn reflink_copy_on_xfs() {
    reflink_on("xfs");
}

/// Where the filesystem cannot share extents (ext4, tmpfs), a sparse copy: same bytes, holes
/// kept.
#[test]
fn sparse_copy_elsewhere() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.img");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(1 << 30).unwrap();
    f.write_all_at(b"data", 512 << 20).unwrap();
    drop(f);
    let dst = d.path().join("dst.img");
    let kind = copy_file(&src, &dst, false).unwrap();
    let fs_reflinks = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(d.path())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if matches!(fs_reflinks.as_str(), "btrfs" | "xfs") {
        eprintln!("SKIP: the temp dir is on {fs_reflinks}, which reflinks");
        return;
    }
    assert_eq!(kind, CopyKind::Sparse);
    let m = std::fs::metadata(&dst).unwrap();
    assert_eq!(m.len(), 1 << 30);
    assert!(
        m.blocks() < 1024,
        "holes were filled: {} blocks",
        m.blocks()
    );
    let mut buf = [0u8; 4];
    std::fs::File::open(&dst)
        .unwrap()
        .read_exact_at(&mut buf, 512 << 20)
        .unwrap();
    assert_eq!(&buf, b"data");
}

/// A qube created through the binary in a pool on btrfs: its origin images and their precache
/// copies are there; Remove takes them and the qube's directory in the pool away.
#[test]
fn create_and_remove_in_a_btrfs_pool() {
    let Some(l) = LoopFs::new("btrfs") else {
        return;
    };
    let sb = Sandbox::new_rebased("golden-10", "/work/oracle-run/golden-ref/varlib");
    let pool = l.mnt.join("pool");
    let xml = std::fs::read_to_string(sb.xml()).unwrap().replacen(
        "  </pools>",
        &format!(
            "    <pool name=\"btrfs\" dir_path=\"{}\" driver=\"file-reflink\" revisions_to_keep=\"1\" ephemeral_volatile=\"False\"/>\n  </pools>",
            pool.display()
        ),
        1,
    );
    std::fs::write(sb.xml(), xml).unwrap();
    let out = sb.socket_request(&frame_request(
        "admin.vm.CreateInPool.StandaloneVM",
        "dom0",
        "dom0",
        b"name=b1 label=red pool=btrfs",
    ));
    assert_eq!(out.stdout, b"0\0", "{out:?}");
    let dir = pool.join("appvms/b1");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "private-precache.img",
            "private.img",
            "root-precache.img",
            "root.img"
        ]
    );
    assert_eq!(
        std::fs::metadata(dir.join("root.img")).unwrap().len(),
        10 << 30
    );
    let out = sb.socket_request(&frame_request("admin.vm.Remove", "dom0", "b1", b""));
    assert_eq!(out.stdout, b"0\0", "{out:?}");
    assert!(!dir.exists());
}
