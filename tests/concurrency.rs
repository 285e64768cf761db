//! Many processes writing one qubes.xml at once: 8 writers × 200 mixed property / feature / tag
//! writes, each one exec of the binary (as qrexec runs it). No update may be lost, the file
//! must stay valid, and the event log must be gap-free and in commit order.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_qubes-admin-call");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/gen10/qubes.xml"
);
const WRITERS: usize = 8;
const WRITES: usize = 200;

fn call(dir: &Path, req: &[u8]) -> Vec<u8> {
    let mut child = Command::new(BIN)
        .arg("--socket-request")
        .env("QUBES_XML_PATH", dir.join("qubes.xml"))
        .env("QUBES_BASE_DIR", dir)
        .env("QUBES_RUN_DIR", dir.join("run"))
        .env("QUBES_LIBVIRT_URI", "test:///default")
        .env("QUBES_LOCK_TIMEOUT_MS", "60000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(req).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[test]
fn eight_writers_lose_no_update() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::copy(FIXTURE, dir.join("qubes.xml")).unwrap();
    std::fs::create_dir(dir.join("run")).unwrap();
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let vm = format!("vm{:04}", w);
                for k in 0..WRITES {
                    let req = match k % 3 {
                        0 => format!("admin.vm.feature.Set+w{w}-f{k} dom0 name {vm}\0v{k}"),
                        1 => format!("admin.vm.tag.Set+w{w}-t{k} dom0 name vm0009\0"),
                        _ => format!("admin.vm.property.Set+memory dom0 name {vm}\0{}", 500 + k),
                    };
                    let reply = call(&dir, req.as_bytes());
                    assert_eq!(
                        reply,
                        b"0\0",
                        "writer {w} write {k}: {:?}",
                        String::from_utf8_lossy(&reply)
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Every feature and tag is there, every writer's last memory value stuck.
    for w in 0..WRITERS {
        let vm = format!("vm{:04}", w);
        let features = call(
            &dir,
            format!("admin.vm.feature.List+ dom0 name {vm}\0").as_bytes(),
        );
        let features = String::from_utf8(features).unwrap();
        for k in (0..WRITES).filter(|k| k % 3 == 0) {
            assert!(
                features.contains(&format!("\nw{w}-f{k}\n"))
                    || features.starts_with(&format!("0\0w{w}-f{k}\n")),
                "lost feature w{w}-f{k}"
            );
            let v = call(
                &dir,
                format!("admin.vm.feature.Get+w{w}-f{k} dom0 name {vm}\0").as_bytes(),
            );
            assert_eq!(v, format!("0\0v{k}").as_bytes());
        }
        let last = (0..WRITES).filter(|k| k % 3 == 2).max().unwrap();
        let mem = call(
            &dir,
            format!("admin.vm.property.Get+memory dom0 name {vm}\0").as_bytes(),
        );
        assert_eq!(
            mem,
            format!("0\0default=False type=int {}", 500 + last).as_bytes()
        );
    }
    let tags = String::from_utf8(call(&dir, b"admin.vm.tag.List+ dom0 name vm0009\0")).unwrap();
    for w in 0..WRITERS {
        for k in (0..WRITES).filter(|k| k % 3 == 1) {
            assert!(tags.contains(&format!("w{w}-t{k}\n")), "lost tag w{w}-t{k}");
        }
    }
    // No temp files left behind, the file still parses.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("qubes.xml~"))
        .collect();
    assert!(leftovers.is_empty(), "stale temp files: {leftovers:?}");
    qubes_admin::store::Document::parse(std::fs::read(dir.join("qubes.xml")).unwrap()).unwrap();
    // Event log: gap-free, strictly increasing sequence numbers.
    let events = qubes_admin::eventlog::read_after(&dir.join("run"), 0).unwrap();
    assert!(!events.is_empty());
    for (i, (seq, _)) in events.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "sequence gap at record {i}");
    }
    let tag_adds = events
        .iter()
        .filter(|(_, e)| e.name.starts_with("domain-tag-add:w"))
        .count();
    assert_eq!(
        tag_adds,
        WRITERS * (0..WRITES).filter(|k| k % 3 == 1).count()
    );
}
