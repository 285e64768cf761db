//! Qubes that exist: `admin.vm.Create*`, `CreateDisposable`, `Remove`, and the pool and volume
//! read calls, through the built binary (`--socket-request`, one exec per call), on the golden
//! fixture (written by the real qubesd) with its pools rebased into the sandbox. Every test
//! asserts the exact reply, the events logged, qubes.xml and the files on disk.
//!
//! The reflink path on real btrfs/xfs filesystems is in `storage_fs.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use support::{frame_request, Sandbox};

const FIXTURE: &str = "golden-10";
const CAPTURE_BASE: &str = "/work/oracle-run/golden-ref/varlib";

struct T {
    sb: Sandbox,
    seen: u64,
}

impl T {
    fn new() -> T {
        T {
            sb: Sandbox::new_rebased(FIXTURE, CAPTURE_BASE),
            seen: 0,
        }
    }

    /// One call from `src`; the reply bytes.
    fn call_from(&self, src: &str, method_arg: &str, dest: &str, payload: &[u8]) -> Vec<u8> {
        let out = self
            .sb
            .socket_request(&frame_request(method_arg, src, dest, payload));
        assert!(out.status.success(), "{method_arg}: {out:?}");
        out.stdout
    }

    fn call(&self, method_arg: &str, dest: &str, payload: &[u8]) -> Vec<u8> {
        self.call_from("dom0", method_arg, dest, payload)
    }

    /// The call succeeds with `expected` as its body.
    fn ok(&self, method_arg: &str, dest: &str, payload: &[u8], expected: &str) {
        let r = self.call(method_arg, dest, payload);
        assert_eq!(
            String::from_utf8_lossy(&r),
            format!("0\0{expected}"),
            "{method_arg} {dest}"
        );
    }

    /// The call fails with exactly `ty`/`msg` and changes nothing: qubes.xml, files, events.
    fn err(&mut self, method_arg: &str, dest: &str, payload: &[u8], ty: &str, msg: &str) {
        let xml = std::fs::read(self.sb.xml()).unwrap();
        let files = tree(&self.sb.base_dir());
        let r = self.call(method_arg, dest, payload);
        assert_eq!(
            String::from_utf8_lossy(&r),
            format!("2\0{ty}\0\0{msg}\0"),
            "{method_arg} {dest} {}",
            String::from_utf8_lossy(payload)
        );
        assert!(
            std::fs::read(self.sb.xml()).unwrap() == xml,
            "{method_arg}: qubes.xml changed"
        );
        assert_eq!(
            tree(&self.sb.base_dir()),
            files,
            "{method_arg}: files changed"
        );
        assert_eq!(
            self.events(),
            Vec::<String>::new(),
            "{method_arg}: events logged"
        );
    }

    /// Events logged since the last look, as `subject|event|k=v|…`.
    fn events(&mut self) -> Vec<String> {
        let evs = qubes_admin::events::read_after(&self.sb.run_dir(), self.seen).unwrap();
        if let Some((s, _)) = evs.last() {
            self.seen = *s;
        }
        evs.iter()
            .map(|(_, e)| {
                let mut s = format!("{}|{}", e.subject, e.name);
                for (k, v) in &e.kwargs {
                    s.push_str(&format!("|{k}={v}"));
                }
                s
            })
            .collect()
    }

    fn base(&self) -> PathBuf {
        self.sb.base_dir()
    }

    fn xml(&self) -> String {
        std::fs::read_to_string(self.sb.xml()).unwrap()
    }

    /// The `<domain>` element of qube `name` in qubes.xml.
    fn domain(&self, name: &str) -> Option<String> {
        let xml = self.xml();
        let needle = format!("<property name=\"name\">{name}</property>");
        let at = xml.find(&needle)?;
        let start = xml[..at].rfind("<domain ")?;
        let end = xml[at..].find("</domain>")? + at + "</domain>".len();
        Some(xml[start..end].to_string())
    }

    /// Adds `<pool …/>` to qubes.xml.
    fn add_pool(&self, attrs: &str) {
        let xml = self
            .xml()
            .replacen("  </pools>", &format!("    <pool {attrs}/>\n  </pools>"), 1);
        std::fs::write(self.sb.xml(), xml).unwrap();
    }
}

/// Every file and directory under `dir` (relative paths, sorted) with its size.
fn tree(dir: &Path) -> Vec<(String, u64)> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, u64)>) {
        let Ok(rd) = std::fs::read_dir(d) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((rel, if m.is_dir() { 0 } else { m.len() }));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `<volume …/>` lines of a domain, indented as qubes.xml holds them (written out here, not by
/// the library, so that the expectation is independent of the code under test).
#[allow(clippy::too_many_arguments)]
fn vol(
    name: &str,
    pool: &str,
    vid: &str,
    rev: i64,
    rw: bool,
    save: bool,
    snap: bool,
    size: Option<u64>,
    source: Option<&str>,
) -> String {
    let b = |x: bool| if x { "True" } else { "False" };
    let mut s = format!(
        "        <volume name=\"{name}\" pool=\"{pool}\" vid=\"{vid}\" revisions_to_keep=\"{rev}\" rw=\"{}\" save_on_stop=\"{}\" snap_on_start=\"{}\"",
        b(rw),
        b(save),
        b(snap)
    );
    if let Some(sz) = size {
        s.push_str(&format!(" size=\"{sz}\""));
    }
    if let Some(src) = source {
        s.push_str(&format!(" source=\"{src}\""));
    }
    s.push_str("/>\n");
    s
}

const GIB: u64 = 1 << 30;

#[test]
fn pool_read_calls() {
    let t = T::new();
    let base = t.base();
    t.ok(
        "admin.pool.List",
        "dom0",
        b"",
        "varlibqubes\nlinux-kernel\n",
    );
    t.ok(
        "admin.pool.ListDrivers",
        "dom0",
        b"",
        "file revisions_to_keep dir_path ephemeral_volatile\n\
         file-reflink revisions_to_keep dir_path setup_check ephemeral_volatile\n\
         linux-kernel dir_path\n\
         lvm_thin revisions_to_keep volume_group thin_pool ephemeral_volatile\n\
         callback conf_id\n\
         zfs revisions_to_keep container ephemeral_volatile snap_on_start_forensics\n",
    );
    t.ok(
        "admin.pool.Info+linux-kernel",
        "dom0",
        b"",
        &format!(
            "dir_path={}/vm-kernels\ndriver=linux-kernel\nname=linux-kernel\nincluded_in=varlibqubes\n",
            base.display()
        ),
    );
    // size/usage are the filesystem's (statvfs), read in the same instant by the call.
    let info = String::from_utf8(t.call("admin.pool.Info+varlibqubes", "dom0", b"")).unwrap();
    let head = format!(
        "0\0dir_path={}\ndriver=file-reflink\nephemeral_volatile=False\nname=varlibqubes\nrevisions_to_keep=1\nsize=",
        base.display()
    );
    assert!(info.starts_with(&head), "{info}");
    let vfs = nix::sys::statvfs::statvfs(&base).unwrap();
    let size = vfs.fragment_size() * vfs.blocks();
    assert!(info.contains(&format!("\nsize={size}\nusage=")), "{info}");
    assert!(
        info.ends_with('\n') && !info.contains("included_in"),
        "{info}"
    );
    let usage =
        String::from_utf8(t.call("admin.pool.UsageDetails+varlibqubes", "dom0", b"")).unwrap();
    assert!(
        usage.starts_with(&format!("0\0data_size={size}\ndata_usage=")),
        "{usage}"
    );
    t.ok("admin.pool.UsageDetails+linux-kernel", "dom0", b"", "");

    // Qubes in file order, each one's template first (fedora-41 before default-dvm).
    let mut expected = String::new();
    for q in [
        "vm-templates/fedora-41",
        "appvms/default-dvm",
        "appvms/disp1",
        "appvms/sa1",
        "appvms/sys-firewall",
        "appvms/sys-net",
        "appvms/vm0000",
        "appvms/vm0001",
        "appvms/vm0002",
        "appvms/vm0003",
        "appvms/vm0004",
        "appvms/vm0005",
        "appvms/vm0006",
        "appvms/vm0007",
        "appvms/vm0008",
        "appvms/vm0009",
    ] {
        for v in ["root", "private", "volatile"] {
            expected.push_str(&format!("{q}/{v}\n"));
        }
    }
    t.ok("admin.pool.volume.List+varlibqubes", "dom0", b"", &expected);
    std::fs::create_dir_all(base.join("vm-kernels/6.6.0-test")).unwrap();
    std::fs::write(base.join("vm-kernels/README"), b"not a kernel").unwrap();
    t.ok(
        "admin.pool.volume.List+linux-kernel",
        "dom0",
        b"",
        "6.6.0-test\n",
    );

    let mut t = t;
    t.err(
        "admin.pool.Info+nosuch",
        "dom0",
        b"",
        "PermissionDenied",
        "Argument not in 'pools'",
    );
    t.err(
        "admin.pool.Info",
        "dom0",
        b"",
        "ProtocolError",
        "expected an argument",
    );
    t.err(
        "admin.pool.List+x",
        "dom0",
        b"",
        "ProtocolError",
        "unexpected argument",
    );
    t.err(
        "admin.pool.List",
        "vm0001",
        b"",
        "ProtocolError",
        "expected destination to be AdminVM",
    );
}

#[test]
fn volume_read_calls() {
    let mut t = T::new();
    let base = t.base();
    t.ok(
        "admin.vm.volume.List",
        "vm0001",
        b"",
        "root\nprivate\nvolatile\nkernel\n",
    );
    t.ok("admin.vm.volume.List", "dom0", b"", "");
    // A private image with 1 MiB of data, a dirty image and three revisions on disk.
    let dir = base.join("appvms/vm0001");
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::File::create(dir.join("private.img")).unwrap();
    f.set_len(2 * GIB).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![7u8; 1 << 20], 0).unwrap();
    f.sync_all().unwrap();
    let usage = std::fs::metadata(dir.join("private.img")).unwrap().blocks() * 512;
    for (n, ts) in [
        ("1", "2026-02-01T00:00:00"),
        ("2", "2026-01-01T00:00:00"),
        ("10", "2026-03-01T00:00:00"),
    ] {
        std::fs::write(dir.join(format!("private.img.{n}@{ts}Z")), b"").unwrap();
    }
    t.ok(
        "admin.vm.volume.Info+private",
        "vm0001",
        b"",
        &format!(
            "pool=varlibqubes\nvid=appvms/vm0001/private\nsize={}\nusage={usage}\nrw=True\nsource=\n\
             path={}/appvms/vm0001/private-dirty.img\nsave_on_stop=True\nsnap_on_start=False\n\
             revisions_to_keep=1\nephemeral=False\nis_outdated=False\n",
            2 * GIB,
            base.display()
        ),
    );
    t.ok(
        "admin.vm.volume.ListSnapshots+private",
        "vm0001",
        b"",
        "2\n1\n10\n",
    );
    t.ok(
        "admin.vm.volume.Info+root",
        "vm0001",
        b"",
        &format!(
            "pool=varlibqubes\nvid=appvms/vm0001/root\nsize={}\nusage=0\nrw=True\n\
             source=vm-templates/fedora-41/root\npath={}/appvms/vm0001/root-dirty.img\n\
             save_on_stop=False\nsnap_on_start=True\nrevisions_to_keep=1\nephemeral=False\n\
             is_outdated=False\n",
            10 * GIB,
            base.display()
        ),
    );
    // The kernel volume follows the qube's kernel property.
    t.call("admin.vm.property.Set+kernel", "vm0001", b"");
    t.ok(
        "admin.vm.volume.Info+kernel",
        "vm0001",
        b"",
        "pool=linux-kernel\nvid=\nsize=0\nusage=0\nrw=False\nsource=\npath=\nsave_on_stop=False\n\
         snap_on_start=False\nrevisions_to_keep=0\nephemeral=False\nis_outdated=False\n",
    );
    t.events();
    t.ok("admin.vm.volume.ListSnapshots+kernel", "vm0001", b"", "");
    t.err(
        "admin.vm.volume.Info+nosuch",
        "vm0001",
        b"",
        "PermissionDenied",
        "Argument not in 'vm0001 volumes'",
    );
    t.err(
        "admin.vm.volume.Info+root",
        "dom0",
        b"",
        "PermissionDenied",
        "Argument not in 'dom0 volumes'",
    );
    t.err(
        "admin.vm.volume.List+root",
        "vm0001",
        b"",
        "ProtocolError",
        "unexpected argument",
    );
}

#[test]
fn create_appvm_template_standalone() {
    let mut t = T::new();
    let base = t.base();
    t.ok("admin.vm.Create.AppVM", "dom0", b"name=new1 label=red", "");
    assert_eq!(
        t.events(),
        [
            "|domain-add|vm=new1",
            "new1|domain-tag-add:created-by-dom0|tag=created-by-dom0",
            "new1|domain-create-on-disk"
        ]
    );
    let d = t.domain("new1").expect("new1 in qubes.xml");
    assert!(d.starts_with("<domain id=\"domain-17\" class=\"AppVM\">\n      <properties>\n        <property name=\"label\">red</property>\n        <property name=\"name\">new1</property>\n        <property name=\"qid\">17</property>\n        <property name=\"uuid\">"), "{d}");
    assert!(d.contains("</property>\n        <property name=\"template\">fedora-41</property>\n      </properties>\n      <features/>\n      <tags>\n"), "{d}");
    for tag in ["created-by-dom0", "guivm-dom0", "audiovm-dom0"] {
        assert!(d.contains(&format!("<tag name=\"{tag}\"/>")), "{d}");
    }
    let vc = format!(
        "      <volume-config>\n{}{}{}{}      </volume-config>\n    </domain>",
        vol(
            "root",
            "varlibqubes",
            "appvms/new1/root",
            1,
            true,
            false,
            true,
            Some(10 * GIB),
            Some("vm-templates/fedora-41/root")
        ),
        vol(
            "private",
            "varlibqubes",
            "appvms/new1/private",
            1,
            true,
            true,
            false,
            Some(2 * GIB),
            None
        ),
        vol(
            "volatile",
            "varlibqubes",
            "appvms/new1/volatile",
            1,
            true,
            false,
            false,
            Some(10 * GIB),
            None
        ),
        vol(
            "kernel",
            "linux-kernel",
            "6.6.0-test",
            0,
            false,
            false,
            false,
            None,
            None
        ),
    );
    assert!(d.ends_with(&vc), "{d}\n--- expected end:\n{vc}");
    // Files: the private origin image (sparse, 0600) and its precache copy; nothing else.
    let dir = base.join("appvms/new1");
    assert_eq!(
        tree(&dir),
        [
            ("private-precache.img".into(), 2 * GIB),
            ("private.img".into(), 2 * GIB)
        ]
    );
    let m = std::fs::metadata(dir.join("private.img")).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600);
    assert!(m.blocks() < 64, "not sparse");
    assert!(std::fs::metadata(&dir).unwrap().is_dir());
    t.ok(
        "admin.vm.List",
        "new1",
        b"",
        &format!("new1 class=AppVM state=Halted uuid={}\n", uuid_of(&d)),
    );
    t.ok(
        "admin.vm.tag.List",
        "new1",
        b"",
        "audiovm-dom0\ncreated-by-dom0\nguivm-dom0\n",
    );

    // TemplateVM and StandaloneVM: root and private are origins.
    t.ok(
        "admin.vm.Create.TemplateVM",
        "dom0",
        b"name=tpl label=black",
        "",
    );
    t.ok(
        "admin.vm.Create.StandaloneVM",
        "dom0",
        b"name=sa2 label=blue",
        "",
    );
    t.events();
    assert_eq!(
        tree(&base.join("vm-templates/tpl")),
        [
            ("private-precache.img".into(), 2 * GIB),
            ("private.img".into(), 2 * GIB),
            ("root-precache.img".into(), 10 * GIB),
            ("root.img".into(), 10 * GIB),
        ]
    );
    let d = t.domain("tpl").unwrap();
    assert!(
        d.contains(&vol(
            "root",
            "varlibqubes",
            "vm-templates/tpl/root",
            1,
            true,
            true,
            false,
            Some(10 * GIB),
            None
        )),
        "{d}"
    );
    assert!(!d.contains("name=\"template\""));
    assert_eq!(tree(&base.join("appvms/sa2")).len(), 4);
    // An AppVM on the new template, by argument; a created-by tag of a qube caller.
    t.ok(
        "admin.vm.Create.AppVM+tpl",
        "dom0",
        b"name=on-tpl label=green",
        "",
    );
    let d = t.domain("on-tpl").unwrap();
    assert!(
        d.contains("<property name=\"template\">tpl</property>"),
        "{d}"
    );
    assert!(d.contains("source=\"vm-templates/tpl/root\""), "{d}");
    t.events();
}

fn uuid_of(domain: &str) -> String {
    let at = domain.find("<property name=\"uuid\">").unwrap() + "<property name=\"uuid\">".len();
    domain[at..at + 36].to_string()
}

#[test]
fn create_refusals_in_the_reference_order() {
    let mut t = T::new();
    let e = |t: &mut T, m: &str, payload: &str, ty: &str, msg: &str| {
        t.err(m, "dom0", payload.as_bytes(), ty, msg)
    };
    let pe = "ProtocolError";
    e(
        &mut t,
        "admin.vm.Create.StandaloneVM+fedora-41",
        "name=x label=red",
        pe,
        "StandaloneVM cannot be based on template",
    );
    e(
        &mut t,
        "admin.vm.Create.TemplateVM+nosuch",
        "name=x label=red",
        pe,
        "TemplateVM cannot be based on template",
    );
    e(
        &mut t,
        "admin.vm.Create.AppVM",
        "name=x label=r\u{e9}d",
        pe,
        "Parameters contains non-ASCII characters",
    );
    e(
        &mut t,
        "admin.vm.Create.AppVM",
        "name=x name=y label=red",
        pe,
        "Options must be unique",
    );
    e(
        &mut t,
        "admin.vm.Create.AppVM",
        "name=test-### label=red",
        "QubesValueError",
        "VM name contains illegal characters",
    );
    e(
        &mut t,
        "admin.vm.Create.AppVM",
        "name=x label=7",
        "QubesInvalidLabelError",
        "Label must not be a digit",
    );
    e(
        &mut t,
        "admin.vm.Create.AppVM",
        "name=x label=nosuch",
        pe,
        "Creation requested without key: label",
    );
    e(
        &mut t,
        "admin.vm.Create.AppVM",
        "label=red",
        pe,
        "Creation requested without key: name",
    );
    e(
        &mut t,
        "admin.vm.Create.AppVM",
        "name=x label=red pool=varlibqubes",
        pe,
        "Pool option specified but 'allow_pool' is False",
    );
    e(
        &mut t,
        "admin.vm.Create.AppVM",
        "name=x label=red what=is",
        pe,
        "Options does not match: name, label, pool, pool:",
    );
    e(
        &mut t,
        "admin.vm.CreateInPool.AppVM",
        "name=x label=red pool=a pool=b",
        pe,
        "Option 'pool' must be unique",
    );
    e(
        &mut t,
        "admin.vm.CreateInPool.AppVM",
        "name=x label=red pool:invalid=a",
        pe,
        "Volume must be one of: root, private, volatile, kernel",
    );
    e(
        &mut t,
        "admin.vm.CreateInPool.AppVM",
        "name=x label=red pool:private=a pool:private=b",
        pe,
        "Option 'pool:private' must be unique",
    );
    e(
        &mut t,
        "admin.vm.CreateInPool.AppVM",
        "name=x label=red pool=a pool:private=b",
        pe,
        "Conflicting options specified: 'pool=', 'pool:volume='",
    );
    e(
        &mut t,
        "admin.vm.Create.AppVM",
        "name=vm0001 label=red",
        "QubesVMAlreadyExistsError",
        "Qube already exists: vm0001",
    );
    e(
        &mut t,
        "admin.vm.Create.AppVM",
        "name=dom0 label=red",
        "QubesVMAlreadyExistsError",
        "Qube already exists: dom0",
    );
    e(
        &mut t,
        "admin.vm.Create.AppVM+nosuch",
        "name=x label=red",
        "QubesVMNotFoundError",
        "No such domain: 'nosuch'",
    );
    e(
        &mut t,
        "admin.vm.CreateInPool.AppVM",
        "name=x label=red pool=nosuch",
        "QubesException",
        "Unknown storage pool nosuch",
    );
    e(&mut t, "admin.vm.CreateInPool.AppVM", "name=x label=red pool:root=linux-kernel", "QubesException", "Snapshot volume root must be in the same pool as its origin (root volume of template),cannot move to pool linux-kernel ");
    e(
        &mut t,
        "admin.vm.Create.AdminVM",
        "name=x label=red",
        "QubesPropertyValueError",
        "property 'qid' on AdminVM instance cannot be set",
    );
    e(
        &mut t,
        "admin.vm.Create.AppVM+vm0001",
        "name=x label=red",
        "QubesPropertyValueError",
        "wrong VM class: domains['vm0001'] is of type AppVM and not TemplateVM",
    );
    e(
        &mut t,
        "admin.vm.Create.DispVM+vm0001",
        "name=x label=red",
        "QubesValueError",
        "template for disposable (vm0001) needs to be an AppVM with template_for_dispvms=True",
    );
    e(
        &mut t,
        "admin.vm.Create.RemoteVM",
        "name=x label=red",
        "QubesException",
        "RemoteVM qubes cannot be created through the Admin API (they have no storage)",
    );
    // Where the reference drops the connection (a piece without '='), a clear frame.
    for payload in ["", "name=x  label=red", "name=x label=red "] {
        let r = t.call("admin.vm.Create.AppVM", "dom0", payload.as_bytes());
        assert!(
            r.starts_with(b"2\0QubesException\0\0malformed parameter "),
            "{:?}",
            String::from_utf8_lossy(&r)
        );
    }
    // No default template.
    let xml = t.xml().replace(
        "<property name=\"default_template\">fedora-41</property>\n    ",
        "",
    );
    std::fs::write(t.sb.xml(), xml).unwrap();
    e(
        &mut t,
        "admin.vm.Create.AppVM",
        "name=x label=red",
        "QubesValueError",
        "Template for the qube not specified, nor default template set.",
    );
}

#[test]
fn create_refusal_of_a_non_dom0_destination() {
    let mut t = T::new();
    t.err(
        "admin.vm.Create.AppVM",
        "vm0001",
        b"name=x label=red",
        "ProtocolError",
        "expected destination to be AdminVM",
    );
}

#[test]
fn create_in_pool_moves_the_writable_volumes() {
    let mut t = T::new();
    let other = t.sb.dir.path().join("other");
    t.add_pool(&format!(
        "name=\"other\" dir_path=\"{}\" driver=\"file-reflink\" revisions_to_keep=\"3\" ephemeral_volatile=\"True\"",
        other.display()
    ));
    t.ok(
        "admin.vm.CreateInPool.AppVM",
        "dom0",
        b"name=p1 label=red pool=other",
        "",
    );
    t.events();
    let d = t.domain("p1").unwrap();
    assert!(
        d.contains(&vol(
            "root",
            "varlibqubes",
            "appvms/p1/root",
            1,
            true,
            false,
            true,
            Some(10 * GIB),
            Some("vm-templates/fedora-41/root")
        )),
        "{d}"
    );
    assert!(
        d.contains(&vol(
            "private",
            "other",
            "appvms/p1/private",
            3,
            true,
            true,
            false,
            Some(2 * GIB),
            None
        )),
        "{d}"
    );
    assert!(
        d.contains(&vol(
            "volatile",
            "other",
            "appvms/p1/volatile",
            3,
            true,
            false,
            false,
            Some(10 * GIB),
            None
        )),
        "{d}"
    );
    assert!(
        d.contains(&vol(
            "kernel",
            "linux-kernel",
            "6.6.0-test",
            0,
            false,
            false,
            false,
            None,
            None
        )),
        "{d}"
    );
    assert_eq!(tree(&other.join("appvms/p1")).len(), 2);
    assert!(
        t.base().join("appvms/p1").is_dir(),
        "the qube's directory is in the base dir"
    );
    // The volatile volume of an ephemeral_volatile pool is ephemeral.
    let info = String::from_utf8(t.call("admin.vm.volume.Info+volatile", "p1", b"")).unwrap();
    assert!(info.contains("\nephemeral=True\n"), "{info}");
    t.ok(
        "admin.vm.CreateInPool.AppVM",
        "dom0",
        b"name=p2 label=red pool:private=other",
        "",
    );
    let d = t.domain("p2").unwrap();
    assert!(
        d.contains(&vol(
            "private",
            "other",
            "appvms/p2/private",
            3,
            true,
            true,
            false,
            Some(2 * GIB),
            None
        )),
        "{d}"
    );
    assert!(
        d.contains(&vol(
            "volatile",
            "varlibqubes",
            "appvms/p2/volatile",
            1,
            true,
            false,
            false,
            Some(10 * GIB),
            None
        )),
        "{d}"
    );
    t.ok(
        "admin.pool.volume.List+other",
        "dom0",
        b"",
        "appvms/p1/private\nappvms/p1/volatile\nappvms/p2/private\n",
    );
}

/// A Create whose disk work fails half-way leaves nothing: no directory, no image, no entry.
#[test]
fn failed_create_leaves_nothing_behind() {
    let mut t = T::new();
    // A pool whose directory cannot exist (its parent is a regular file).
    let blocker = t.sb.dir.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    t.add_pool(&format!(
        "name=\"broken\" dir_path=\"{}/pool\" driver=\"file-reflink\"",
        blocker.display()
    ));
    let xml = std::fs::read(t.sb.xml()).unwrap();
    let before = tree(&t.base());
    // root is made in varlibqubes (with the qube's directory), then private fails.
    let r = t.call(
        "admin.vm.CreateInPool.StandaloneVM",
        "dom0",
        b"name=f2 label=red pool:private=broken",
    );
    let r = String::from_utf8_lossy(&r);
    assert!(
        r.starts_with("2\0QubesException\0\0") && r.contains("blocker"),
        "{r}"
    );
    assert_eq!(std::fs::read(t.sb.xml()).unwrap(), xml);
    assert_eq!(
        tree(&t.base()),
        before,
        "root.img of f2 and its directory must be gone"
    );
    assert!(t.events().is_empty());
    // The same with the first volume in another pool: its directory there goes too.
    let other = t.sb.dir.path().join("other");
    t.add_pool(&format!(
        "name=\"other\" dir_path=\"{}\" driver=\"file-reflink\"",
        other.display()
    ));
    let xml = std::fs::read(t.sb.xml()).unwrap();
    let r = t.call(
        "admin.vm.CreateInPool.StandaloneVM",
        "dom0",
        b"name=f3 label=red pool:root=other pool:private=broken",
    );
    assert!(r.starts_with(b"2\0QubesException\0\0"), "{r:?}");
    assert_eq!(std::fs::read(t.sb.xml()).unwrap(), xml);
    assert_eq!(tree(&t.base()), before);
    assert_eq!(tree(&other), [("appvms".to_string(), 0)]);
    assert!(t.events().is_empty());
}

#[test]
fn create_disposable() {
    let mut t = T::new();
    // Features of the template are copied, except preload-dispvm*.
    t.call(
        "admin.vm.feature.Set+preload-dispvm-max",
        "default-dvm",
        b"0",
    );
    t.call("admin.vm.feature.Set+custom", "default-dvm", b"x");
    t.events();
    let r = t.call("admin.vm.CreateDisposable", "default-dvm", b"");
    let r = String::from_utf8(r).unwrap();
    let name = r.strip_prefix("0\0").unwrap().to_string();
    let dispid: u32 = name.strip_prefix("disp").unwrap().parse().unwrap();
    assert!(dispid <= 9999);
    assert_eq!(
        t.events(),
        [
            format!("|domain-add|vm={name}"),
            format!("{name}|domain-create-on-disk"),
            format!("{name}|domain-tag-add:created-by-dom0|tag=created-by-dom0"),
            format!("{name}|domain-tag-add:disp-created-by-dom0|tag=disp-created-by-dom0"),
        ]
    );
    let d = t.domain(&name).unwrap();
    assert!(d.starts_with("<domain id=\"domain-17\" class=\"DispVM\">\n      <properties>\n        <property name=\"auto_cleanup\">True</property>\n"), "{d}");
    assert!(d.contains(&format!("<property name=\"dispid\">{dispid}</property>\n        <property name=\"label\">red</property>\n        <property name=\"name\">{name}</property>")), "{d}");
    assert!(
        d.contains("<property name=\"template\">default-dvm</property>"),
        "{d}"
    );
    assert!(!d.contains("template_for_dispvms"), "{d}");
    assert!(
        d.contains("<feature name=\"appmenus-dispvm\">1</feature>")
            && d.contains("<feature name=\"custom\">x</feature>"),
        "{d}"
    );
    assert!(!d.contains("preload-dispvm"), "{d}");
    assert!(
        d.contains(&vol(
            "private",
            "varlibqubes",
            &format!("appvms/{name}/private"),
            1,
            true,
            false,
            true,
            Some(2 * GIB),
            Some("appvms/default-dvm/private")
        )),
        "{d}"
    );
    assert!(
        d.contains(&vol(
            "root",
            "varlibqubes",
            &format!("appvms/{name}/root"),
            1,
            true,
            false,
            true,
            Some(10 * GIB),
            Some("vm-templates/fedora-41/root")
        )),
        "{d}"
    );
    assert!(
        d.contains(&vol(
            "volatile",
            "varlibqubes",
            &format!("appvms/{name}/volatile"),
            1,
            true,
            false,
            false,
            Some(12 * GIB),
            None
        )),
        "{d}"
    );
    // A disposable has no origin volume: its directory is empty.
    assert_eq!(tree(&t.base().join("appvms").join(&name)), []);
    // dom0 as destination: the caller's default_dispvm; the uuid form of the reply.
    let r = String::from_utf8(t.call("admin.vm.CreateDisposable", "dom0", b"uuid")).unwrap();
    let uuid = r.strip_prefix("0\0uuid:").unwrap().to_string();
    let got = t.call("admin.vm.property.Get+name", &format!("uuid:{uuid}"), b"");
    assert!(
        got.starts_with(b"0\0default=False type=str disp"),
        "{got:?}"
    );
    let _ = t.events();
    // The record of recent dispids holds both.
    let record = std::fs::read_to_string(t.sb.run_dir().join("qubes-admin/dispids")).unwrap();
    assert_eq!(record.lines().count(), 2);
    assert!(record.starts_with(&format!("{dispid} ")));

    t.err(
        "admin.vm.CreateDisposable+oops",
        "default-dvm",
        b"",
        "PermissionDenied",
        "Argument not in \"'', 'preload'\"",
    );
    t.err(
        "admin.vm.CreateDisposable",
        "default-dvm",
        b"uuids",
        "ProtocolError",
        "Invalid payload, expected empty string or 'uuid'",
    );
    t.err(
        "admin.vm.CreateDisposable",
        "vm0001",
        b"",
        "QubesException",
        "Refusing to create disposable out of app qube which has template_for_dispvms=False",
    );
    t.err(
        "admin.vm.CreateDisposable+preload",
        "default-dvm",
        b"",
        "QubesException",
        "preloading disposables is not supported by this implementation yet",
    );
}

#[test]
fn create_dispvm_by_name() {
    let mut t = T::new();
    t.ok("admin.vm.Create.DispVM", "dom0", b"name=d2 label=green", "");
    assert_eq!(
        t.events(),
        [
            "|domain-add|vm=d2",
            "d2|domain-tag-add:created-by-dom0|tag=created-by-dom0",
            "d2|domain-create-on-disk"
        ]
    );
    let d = t.domain("d2").unwrap();
    assert!(
        d.contains("<property name=\"label\">green</property>"),
        "{d}"
    );
    assert!(!d.contains("auto_cleanup"), "{d}");
    assert!(
        d.contains("<property name=\"template\">default-dvm</property>"),
        "{d}"
    );
}

#[test]
fn remove() {
    let mut t = T::new();
    t.ok("admin.vm.Create.AppVM", "dom0", b"name=gone label=red", "");
    t.events();
    let before_xml = t.domain("gone").unwrap();
    assert!(t.base().join("appvms/gone/private.img").exists());
    std::fs::write(t.base().join("appvms/gone/notes.txt"), b"n").unwrap();
    t.ok("admin.vm.Remove", "gone", b"", "");
    assert_eq!(
        t.events(),
        ["|domain-pre-delete|vm=gone", "|domain-delete|vm=gone"]
    );
    assert!(t.domain("gone").is_none(), "{before_xml}");
    assert!(!t.base().join("appvms/gone").exists());
    t.err(
        "admin.vm.Remove",
        "gone",
        b"",
        "QubesVMNotFoundError",
        "No such domain: 'gone'",
    );

    t.err(
        "admin.vm.Remove",
        "dom0",
        b"",
        "QubesVMInUseError",
        "'dom0' cannot be removed",
    );
    let in_use = |n: &str| {
        format!("Domain is in use: '{n}';  see 'journalctl -u qubesd -e' in dom0 for details")
    };
    // Used as template (explicitly), as a global default (default_template, default_netvm),
    // as an explicit netvm.
    t.err(
        "admin.vm.Remove",
        "fedora-41",
        b"",
        "QubesVMInUseError",
        &in_use("fedora-41"),
    );
    t.err(
        "admin.vm.Remove",
        "sys-firewall",
        b"",
        "QubesVMInUseError",
        &in_use("sys-firewall"),
    );
    t.err(
        "admin.vm.Remove",
        "default-dvm",
        b"",
        "QubesVMInUseError",
        &in_use("default-dvm"),
    );
    t.ok(
        "admin.vm.Create.TemplateVM",
        "dom0",
        b"name=tx label=red",
        "",
    );
    t.ok(
        "admin.vm.Create.AppVM+tx",
        "dom0",
        b"name=on-tx label=red",
        "",
    );
    t.events();
    t.err(
        "admin.vm.Remove",
        "tx",
        b"",
        "QubesVMInUseError",
        &in_use("tx"),
    );
    t.err(
        "admin.vm.Remove+x",
        "tx",
        b"",
        "ProtocolError",
        "unexpected argument",
    );

    // A reference in a qube the call does not otherwise parse (found by the byte prefilter).
    let xml = t.xml().replacen(
        "<property name=\"netvm\"></property>",
        "<property name=\"netvm\">vm0009</property>",
        1,
    );
    std::fs::write(t.sb.xml(), xml).unwrap();
    t.err(
        "admin.vm.Remove",
        "vm0009",
        b"",
        "QubesVMInUseError",
        &in_use("vm0009"),
    );

    t.call("admin.vm.property.Set+installed_by_rpm", "vm0006", b"True");
    t.events();
    t.err(
        "admin.vm.Remove",
        "vm0006",
        b"",
        "QubesVMInUseError",
        "VM installed by package manager: vm0006",
    );

    // A qube providing a device assigned to another one.
    let xml = t.xml();
    let at = xml
        .find("<property name=\"name\">vm0008</property>")
        .unwrap();
    let vc = xml[at..].find("      <volume-config>").unwrap() + at;
    let xml = format!(
        "{}      <devices class=\"pci\">\n        <device backend-domain=\"vm0007\" id=\"00_14.0\" mode=\"required\" identity=\"*\"/>\n      </devices>\n{}",
        &xml[..vc],
        &xml[vc..]
    );
    std::fs::write(t.sb.xml(), xml).unwrap();
    t.err(
        "admin.vm.Remove",
        "vm0007",
        b"",
        "QubesVMInUseError",
        "VM has devices assigned to other VMs: 00_14.0",
    );
}

#[test]
fn remove_refuses_a_running_qube() {
    let mut t = T::new();
    // vm0004 runs in the libvirt test node.
    let node =
        std::fs::read_to_string(support::fixture_dir(FIXTURE).join("libvirt-node.xml")).unwrap();
    let node = node.replace(
        "</node>",
        "  <domain type=\"test\">\n    <name>vm0004</name>\n    <uuid>1a2b8f1f-f1fd-42a2-9755-d4c13a902931</uuid>\n    <memory>409600</memory>\n    <vcpu>2</vcpu>\n    <os><type>xen</type></os>\n  </domain>\n</node>",
    );
    std::fs::write(t.sb.dir.path().join("libvirt-node.xml"), node).unwrap();
    t.err(
        "admin.vm.Remove",
        "vm0004",
        b"",
        "QubesVMNotHaltedError",
        "Domain is not powered off: 'vm0004'",
    );
}

/// qrexec's way in: exec-service mode, the call's argument as argv[1].
#[test]
fn create_and_remove_as_qrexec_services() {
    let t = T::new();
    let out = t.sb.exec_service(
        "admin.vm.Create.AppVM+fedora-41",
        "dom0",
        "@adminvm",
        b"name=q1 label=red",
    );
    assert_eq!(out.stdout, b"0\0");
    assert!(t.domain("q1").is_some());
    let out = t.sb.exec_service("admin.vm.Remove+", "dom0", "q1", b"");
    assert_eq!(out.stdout, b"0\0");
    assert!(t.domain("q1").is_none());
    let out =
        t.sb.exec_service("admin.vm.volume.List+", "dom0", "vm0001", b"");
    assert_eq!(out.stdout, b"0\0root\nprivate\nvolatile\nkernel\n");
}

/// The volume lifecycle a Start and a stop run (library functions until the lifecycle calls
/// land): verify, start (snapshot of the template's root, the private working copy, a fresh
/// volatile; running-state files), stop (private committed with a revision, the rest gone).
#[test]
fn volume_start_and_stop_cycle() {
    use qubes_admin::model::volumes::{start_storage, stop_storage};
    use qubes_admin::storage::{volume::parse_volume_config, Pool};
    let t = T::new();
    let base = t.base();
    let run = t.sb.run_dir();
    t.ok(
        "admin.vm.Create.TemplateVM",
        "dom0",
        b"name=tpl label=black",
        "",
    );
    t.ok(
        "admin.vm.Create.AppVM+tpl",
        "dom0",
        b"name=a1 label=red",
        "",
    );
    let doc = qubes_admin::store::load(&t.sb.xml()).unwrap().0;
    let id = doc.domain_by_name("a1").unwrap();
    let raw = doc.data(id).unwrap().raw_elements();
    let vols: Vec<_> =
        parse_volume_config(raw.iter().find(|(n, _)| *n == "volume-config").unwrap().1)
            .into_iter()
            .filter(|v| v.name != "kernel")
            .collect();
    let pools = Pool::open_all(doc.pools());
    let dir = base.join("appvms/a1");

    // A missing qube directory is refused before anything starts.
    let gone = base.join("appvms/nosuch");
    let e = start_storage(&run, &gone, &pools, &vols).unwrap_err();
    assert_eq!(
        e.msg,
        format!("VM directory does not exist: {}", gone.display())
    );

    start_storage(&run, &dir, &pools, &vols).unwrap();
    assert_eq!(
        tree(&dir),
        [
            ("private-dirty.img".into(), 2 * GIB),
            ("private.img".into(), 2 * GIB),
            ("root-dirty.img".into(), 10 * GIB),
            ("root.img".into(), 10 * GIB),
            ("volatile-dirty.img".into(), 10 * GIB),
        ]
    );
    assert_eq!(
        std::fs::metadata(dir.join("root.img")).unwrap().ino(),
        std::fs::metadata(base.join("vm-templates/tpl/root.img"))
            .unwrap()
            .ino(),
        "the snapshot holds a hardlink of the template's root"
    );
    let mut state: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("volume-running-"))
        .collect();
    state.sort();
    assert_eq!(
        state,
        [
            "volume-running-varlibqubes:appvms-a1-private",
            "volume-running-varlibqubes:appvms-a1-root",
            "volume-running-varlibqubes:appvms-a1-volatile"
        ]
    );
    assert!(stop_storage(&run, &pools, &vols).is_empty());
    let files: Vec<String> = tree(&dir).into_iter().map(|(n, _)| n).collect();
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(files[0], "private-precache.img");
    assert_eq!(files[1], "private.img");
    assert!(
        files[2].starts_with("private.img.1@") && files[2].ends_with('Z'),
        "{files:?}"
    );
    assert!(!std::fs::read_dir(&run).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("volume-running-")));
}

/// With `check_updates_vm` off, a new qube gets `check-updates=""` (no events: it is part of
/// the new qube, not a later change); and a non-dom0 creator's tag.
#[test]
fn create_follows_check_updates_vm_and_tags_its_creator() {
    let mut t = T::new();
    t.ok("admin.property.Set+check_updates_vm", "dom0", b"False", "");
    t.events();
    t.ok(
        "admin.vm.Create.StandaloneVM",
        "dom0",
        b"name=nu label=red",
        "",
    );
    let d = t.domain("nu").unwrap();
    assert!(
        d.contains(
            "<features>\n        <feature name=\"check-updates\"></feature>\n      </features>"
        ),
        "{d}"
    );
    assert_eq!(
        t.events(),
        [
            "|domain-add|vm=nu",
            "nu|domain-tag-add:created-by-dom0|tag=created-by-dom0",
            "nu|domain-create-on-disk"
        ]
    );
    t.ok("admin.vm.feature.Get+check-updates", "nu", b"", "");
    // The creator's tag-created-vm-with tags come with its created-by tag, before it.
    t.ok(
        "admin.vm.feature.Set+tag-created-vm-with",
        "dom0",
        b"mgmt extra",
        "",
    );
    t.events();
    t.ok(
        "admin.vm.Create.StandaloneVM",
        "dom0",
        b"name=nu2 label=red",
        "",
    );
    assert_eq!(
        t.events(),
        [
            "|domain-add|vm=nu2",
            "nu2|domain-tag-add:mgmt|tag=mgmt",
            "nu2|domain-tag-add:extra|tag=extra",
            "nu2|domain-tag-add:created-by-dom0|tag=created-by-dom0",
            "nu2|domain-create-on-disk"
        ]
    );
}
