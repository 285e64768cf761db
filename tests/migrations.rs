//! Older qubes.xml forms (hand-written R4.0 and R4.1 fixtures in `tests/fixtures/r40`, `r41`):
//! every read answers from the reference's migrated view without writing the file, the first
//! write saves the whole migrated form, later writes splice as always, and a current file is
//! neither rewritten nor rescanned (`lib/src/model/migrate.rs`).
//!
//! Golden files (`UPDATE_GOLDEN=1` rewrites them; review the diff):
//! `tests/golden/migrations/<fixture>-reads.txt` (every read below, request and reply) and
//! `tests/fixtures/<fixture>/after-first-write.xml`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use support::{fixture_dir, frame_request, show, Sandbox};

fn call(sb: &Sandbox, method_arg: &str, dest: &str, payload: &[u8]) -> String {
    show(
        &sb.socket_request(&frame_request(method_arg, "dom0", dest, payload))
            .stdout,
    )
}

fn golden(path: &std::path::Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
    }
    let want = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(actual, want, "{} differs", path.display());
}

/// Every read a client makes of the whole system: labels, pools, global properties, and per
/// qube its properties, features, tags and volumes; also by `uuid:`.
fn all_reads(sb: &Sandbox) -> String {
    let mut out = String::new();
    let mut read = |m: &str, dest: &str| {
        out.push_str(&format!("> {m} {dest}\n< {}\n", call(sb, m, dest, b"")));
    };
    read("admin.label.List+", "dom0");
    let labels = call(sb, "admin.label.List+", "dom0", b"");
    for l in labels.trim_start_matches("0|").lines() {
        read(&format!("admin.label.Get+{l}"), "dom0");
    }
    read("admin.pool.List+", "dom0");
    let pools = call(sb, "admin.pool.List+", "dom0", b"");
    for p in pools.trim_start_matches("0|").lines() {
        read(&format!("admin.pool.Info+{p}"), "dom0");
    }
    read("admin.property.GetAll+", "dom0");
    read("admin.vm.List+", "dom0");
    let list = call(sb, "admin.vm.List+", "dom0", b"");
    for line in list.trim_start_matches("0|").lines() {
        let Some((vm, rest)) = line.split_once(' ') else {
            continue;
        };
        read("admin.vm.property.GetAll+", vm);
        read("admin.vm.feature.List+", vm);
        read("admin.vm.tag.List+", vm);
        read("admin.vm.volume.List+", vm);
        if let Some(uuid) = rest.split("uuid=").nth(1) {
            read("admin.vm.property.Get+name", &format!("uuid:{uuid}"));
        }
    }
    out
}

fn reads_then_first_write(fixture: &str) -> Sandbox {
    let sb = Sandbox::new(fixture);
    let original = std::fs::read(sb.xml()).unwrap();
    let reads = all_reads(&sb);
    golden(
        &support::tests_dir(&format!("golden/migrations/{fixture}-reads.txt")),
        &reads,
    );
    assert_eq!(
        std::fs::read(sb.xml()).unwrap(),
        original,
        "a read wrote qubes.xml"
    );
    assert!(
        !sb.run_dir().join("qubes-admin/qubes.xml.current").exists(),
        "an old file was marked current"
    );
    // The first write saves the migrated form with its own change.
    assert_eq!(call(&sb, "admin.vm.tag.Set+t1", "work", b""), "0|");
    let first = std::fs::read_to_string(sb.xml()).unwrap();
    golden(&fixture_dir(fixture).join("after-first-write.xml"), &first);
    // Every read answers as before it (the tag aside).
    let again = all_reads(&sb).replace(
        "\n< 0|audiovm-dom0\nguivm-dom0\nmytag\nt1\n",
        "\n< 0|audiovm-dom0\nguivm-dom0\nmytag\n",
    );
    assert_eq!(again.replace("\nguivm-dom0\nt1\n", "\nguivm-dom0\n"), reads);
    // Later writes splice: only the changed section differs.
    assert_eq!(call(&sb, "admin.vm.tag.Set+t2", "work", b""), "0|");
    let second = std::fs::read_to_string(sb.xml()).unwrap();
    assert_eq!(
        second,
        first.replace(
            "<tag name=\"t1\"/>\n",
            "<tag name=\"t1\"/>\n        <tag name=\"t2\"/>\n"
        )
    );
    sb
}

/// R4.0: `label-N` references, the old gray, pools without `ephemeral_volatile`,
/// `default_fw_netvm`, `hvm`, `dispvm_allowed`, `service.meminfo-writer` on and off, old PCI
/// assignments (with `required="no"`), dom0's empty usb devices, no extension tags, and a
/// StandaloneVM without volume config.
#[test]
fn r40_store() {
    let sb = reads_then_first_write("r40");
    // A few of the migrations, spelled out (the golden files hold the rest).
    assert_eq!(call(&sb, "admin.label.Get+gray", "dom0", b""), "0|0x555555");
    assert_eq!(
        call(&sb, "admin.vm.property.Get+label", "work", b""),
        "0|default=False type=label blue"
    );
    assert_eq!(
        call(&sb, "admin.vm.property.Get+virt_mode", "win7", b""),
        "0|default=False type=str hvm"
    );
    assert_eq!(
        call(&sb, "admin.vm.property.Get+virt_mode", "fedora-26", b""),
        "0|default=False type=str pv"
    );
    assert_eq!(
        call(
            &sb,
            "admin.vm.property.Get+template_for_dispvms",
            "fedora-26-dvm",
            b""
        ),
        "0|default=False type=bool True"
    );
    assert_eq!(
        call(&sb, "admin.vm.property.Get+maxmem", "sys-net", b""),
        "0|default=False type=int 0"
    );
    assert!(call(
        &sb,
        "admin.vm.feature.Get+service.meminfo-writer",
        "fedora-26",
        b""
    )
    .starts_with("2|QubesFeatureNotFoundError|"));
    // default_fw_netvm (sys-net) differed from default_netvm: sys-firewall gets it.
    assert_eq!(
        call(&sb, "admin.vm.property.Get+netvm", "sys-firewall", b""),
        "0|default=False type=vm sys-net"
    );
    assert_eq!(
        call(&sb, "admin.vm.volume.List+", "win7", b""),
        "0|root\nprivate\nvolatile\nkernel\n"
    );
    let xml = std::fs::read_to_string(sb.xml()).unwrap();
    assert!(!xml.contains("ref=\"label-"));
    assert!(!xml.contains("default_fw_netvm"));
    assert!(!xml.contains("<devices class=\"usb\"/>"));
    assert!(xml.contains(
        "<device backend-domain=\"dom0\" id=\"03_00.0\" mode=\"auto-attach\" identity=\"*\"/>"
    ));
}

/// R4.1: a netvm loop, `management_dispvm` naming a qube that is not a disposable template,
/// two qubes with one UUID, a stale and a missing extension tag, pools without
/// `ephemeral_volatile` (and reflink's unsaved `setup_check`), `required="yes"` assignments,
/// `service.meminfo-writer=1`.
#[test]
fn r41_store() {
    let sb = reads_then_first_write("r41");
    assert_eq!(
        call(&sb, "admin.vm.property.Get+netvm", "sys-firewall", b""),
        "0|default=False type=vm "
    );
    assert_eq!(
        call(&sb, "admin.property.Get+management_dispvm", "dom0", b""),
        "0|default=False type=vm "
    );
    // The later of two qubes sharing a UUID answers to it.
    assert_eq!(
        call(
            &sb,
            "admin.vm.property.Get+name",
            "uuid:6e8a2f5d-2b3c-4d4e-9fa0-1b2c3d4e5f05",
            b""
        ),
        "0|default=False type=str work-copy"
    );
    assert_eq!(
        call(&sb, "admin.vm.tag.List+", "work-copy", b""),
        "0|audiovm-dom0\nguivm-dom0\n"
    );
    let xml = std::fs::read_to_string(sb.xml()).unwrap();
    assert!(!xml.contains("setup_check"));
    assert!(!xml.contains("required=\"yes\""));
}

/// Two qubes with one qid: the reference refuses to load the file; every call says why, and
/// nothing is written.
#[test]
fn duplicate_qid_is_a_clear_error() {
    let sb = Sandbox::new("r41");
    let text = std::fs::read_to_string(sb.xml()).unwrap().replace(
        "<property name=\"qid\">6</property>",
        "<property name=\"qid\">5</property>",
    );
    std::fs::write(sb.xml(), &text).unwrap();
    let want = "2|QubesException||qubes.xml is inconsistent: qubes 'work' and 'work-copy' both \
                have qid 5; fix the file (qubesd refuses to load it too)|";
    assert_eq!(call(&sb, "admin.vm.List+", "dom0", b""), want);
    assert_eq!(call(&sb, "admin.vm.tag.Set+t1", "work", b""), want);
    assert_eq!(std::fs::read_to_string(sb.xml()).unwrap(), text);
}

/// A current file: reads mark it current, writes splice without migrating anything, and a
/// file replaced by another writer (here with an old form) is looked at again, never answered
/// from the marker.
#[test]
fn current_file_is_trusted_only_while_unchanged() {
    let sb = Sandbox::new("golden-10");
    let original = std::fs::read_to_string(sb.xml()).unwrap();
    let marker = sb.run_dir().join("qubes-admin/qubes.xml.current");
    assert!(call(&sb, "admin.vm.feature.List+", "vm0000", b"").starts_with("0|"));
    assert!(marker.exists(), "a current file was not marked");
    assert_eq!(std::fs::read_to_string(sb.xml()).unwrap(), original);
    // A write changes exactly what it changes.
    assert_eq!(call(&sb, "admin.vm.tag.Set+t1", "vm0000", b""), "0|");
    let after = std::fs::read_to_string(sb.xml()).unwrap();
    assert_eq!(
        after,
        original.replacen(
            "<tag name=\"bench\"/>\n",
            "<tag name=\"bench\"/>\n        <tag name=\"t1\"/>\n",
            1
        )
    );
    // Another writer puts an old form in (`service.cups` becomes a feature the reference
    // migrates away); the marker names the previous version and is not trusted.
    let old = after.replacen(
        "<feature name=\"service.cups\"></feature>",
        "<feature name=\"service.meminfo-writer\"></feature>",
        1,
    );
    assert_ne!(old, after);
    let tmp = sb.dir.path().join("qubes.xml.new");
    std::fs::write(&tmp, &old).unwrap();
    std::fs::rename(&tmp, sb.xml()).unwrap();
    let features = call(&sb, "admin.vm.feature.List+", "vm0000", b"");
    assert!(!features.contains("meminfo-writer"), "{features}");
    assert_eq!(std::fs::read_to_string(sb.xml()).unwrap(), old);
}
