//! End to end through `System`: vmclass, label, feature, tag and notes calls on a temp copy of
//! the gen10 fixture, asserting reply bytes, the saved XML and the logged events.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use qubes_admin::runtime::{HostInfo, Offline};
use qubes_admin::wire::{RawRequest, Target};
use qubes_admin::{events, Config, System};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/gen10/qubes.xml"
);

struct Env {
    dir: tempfile::TempDir,
    sys: System,
    seen: u64,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(FIXTURE, dir.path().join("qubes.xml")).unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        let config = Config {
            xml_path: dir.path().join("qubes.xml"),
            base_dir: dir.path().to_path_buf(),
            run_dir: dir.path().join("run"),
            ..Config::default()
        };
        let hv = Box::new(Offline {
            host: HostInfo {
                memory_mib: 3072,
                cpus: 16,
            },
        });
        Env {
            sys: System::with_hypervisor(config, hv),
            dir,
            seen: 0,
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn xml(&self) -> String {
        std::fs::read_to_string(self.path("qubes.xml")).unwrap()
    }
    fn call_from(&mut self, src: &str, method: &str, dest: &str, payload: &[u8]) -> Vec<u8> {
        let (m, arg) = method.split_once('+').unwrap_or((method, ""));
        self.sys.call(&RawRequest {
            method: m.as_bytes().to_vec(),
            arg: arg.as_bytes().to_vec(),
            src: src.as_bytes().to_vec(),
            target: Target::Name(dest.as_bytes().to_vec()),
            payload: payload.to_vec(),
        })
    }
    fn call(&mut self, method: &str, dest: &str, payload: &[u8]) -> Vec<u8> {
        self.call_from("dom0", method, dest, payload)
    }
    /// Event frames logged since the last call of this function.
    fn events(&mut self) -> Vec<Vec<u8>> {
        let evs = events::read_after(&self.path("run"), self.seen).unwrap();
        if let Some((seq, _)) = evs.last() {
            self.seen = *seq;
        }
        evs.iter().map(|(_, e)| e.frame()).collect()
    }
}

fn ok(body: &[u8]) -> Vec<u8> {
    [b"0\0".as_slice(), body].concat()
}

fn exc(ty: &str, msg: &str) -> Vec<u8> {
    format!("2\0{ty}\0\0{msg}\0").into_bytes()
}

fn ev(subject: &str, name: &str, kwargs: &[(&str, &str)]) -> Vec<u8> {
    let mut f = format!("1\0{subject}\0{name}\0");
    for (k, v) in kwargs {
        f.push_str(&format!("{k}\0{v}\0"));
    }
    f.push('\0');
    f.into_bytes()
}

#[test]
fn vmclass_list() {
    let mut e = Env::new();
    assert_eq!(
        e.call("admin.vmclass.List", "dom0", b""),
        ok(b"AdminVM\nAppVM\nDispVM\nRemoteVM\nStandaloneVM\nTemplateVM\n")
    );
    assert_eq!(
        e.call("admin.vmclass.List+TemplateVM", "dom0", b""),
        ok(b"TemplateVM\n")
    );
    assert_eq!(
        e.call("admin.vmclass.List+Foo", "dom0", b""),
        exc("QubesException", "no such VM class: 'Foo'")
    );
    assert_eq!(
        e.call("admin.vmclass.List", "vm0001", b""),
        exc("ProtocolError", "expected destination to be AdminVM")
    );
}

#[test]
fn labels() {
    let mut e = Env::new();
    assert_eq!(
        e.call("admin.label.List", "dom0", b""),
        ok(b"red\norange\nyellow\ngreen\ngray\nblue\npurple\nblack\n")
    );
    assert_eq!(e.call("admin.label.Get+3", "dom0", b""), ok(b"0xedd400"));
    assert_eq!(e.call("admin.label.Index+black", "dom0", b""), ok(b"8"));
    assert_eq!(e.call("admin.label.List+blue", "dom0", b""), ok(b"blue\n"));
    assert_eq!(
        e.call("admin.label.Get+label-3", "dom0", b""),
        exc("QubesLabelNotFoundError", "Label does not exist: label-3")
    );
    assert_eq!(
        e.call("admin.label.Create+red", "dom0", b"0x00ffff"),
        exc("QubesLabelInUseError", "Label is still in use: 'red'")
    );
    assert_eq!(
        e.call("admin.label.Create+01", "dom0", b"0x00ffff"),
        exc("QubesInvalidLabelError", "Label must not be a digit")
    );
    assert_eq!(
        e.call("admin.label.Create+cyan", "dom0", b" 0x00ffff\n"),
        ok(b"")
    );
    assert!(e
        .xml()
        .contains("<label id=\"label-9\" color=\"0x00ffff\">cyan</label>"));
    assert_eq!(e.call("admin.label.Index+cyan", "dom0", b""), ok(b"9"));
    assert_eq!(e.call("admin.label.Get+9", "dom0", b""), ok(b"0x00ffff"));
    assert_eq!(
        e.call("admin.label.Remove+red", "dom0", b""),
        exc("ProtocolError", "Can only remove custom labels")
    );

    // A VM using it by the legacy `label-N` form blocks removal.
    let xml = e.xml();
    let used = xml.replacen(
        "<property name=\"label\">green</property>",
        "<property name=\"label\">label-9</property>",
        1,
    );
    std::fs::write(e.path("qubes.xml"), &used).unwrap();
    assert_eq!(
        e.call("admin.label.Remove+cyan", "dom0", b""),
        exc(
            "QubesLabelInUseError",
            "Label is still in use: Label(9, '0x00ffff', 'cyan')"
        )
    );
    std::fs::write(e.path("qubes.xml"), &xml).unwrap();
    assert_eq!(e.call("admin.label.Remove+cyan", "dom0", b""), ok(b""));
    assert!(!e.xml().contains("cyan"));
    assert_eq!(
        e.call("admin.label.Create+teal", "dom0", b"0x008080"),
        ok(b"")
    );
    assert_eq!(e.call("admin.label.Index+teal", "dom0", b""), ok(b"9"));
    assert!(e.events().is_empty(), "label calls emit no events");
}

#[test]
fn features() {
    let mut e = Env::new();
    assert_eq!(
        e.call("admin.vm.feature.List", "vm0001", b""),
        ok(b"service.cups\nbench-index\n")
    );
    assert_eq!(
        e.call("admin.vm.feature.List+bench-index", "vm0001", b""),
        ok(b"bench-index\n")
    );
    assert_eq!(
        e.call("admin.vm.feature.Get+nope", "vm0001", b""),
        exc(
            "QubesFeatureNotFoundError",
            "Feature not set for domain vm0001: nope"
        )
    );
    assert_eq!(
        e.call("admin.vm.feature.CheckWithTemplate+os", "vm0001", b""),
        ok(b"Linux")
    );
    // vm0001 → default_netvm sys-firewall → sys-net, which has it.
    assert_eq!(
        e.call(
            "admin.vm.feature.CheckWithNetvm+service.clocksync",
            "vm0001",
            b""
        ),
        ok(b"1")
    );
    assert_eq!(
        e.call(
            "admin.vm.feature.CheckWithNetvm+service.clocksync",
            "fedora-41",
            b""
        ),
        exc(
            "QubesFeatureNotFoundError",
            "Feature not set for domain fedora-41: service.clocksync"
        )
    );

    assert_eq!(e.call("admin.vm.feature.Set+f1", "vm0001", b"v1"), ok(b""));
    assert_eq!(
        e.events(),
        [
            ev(
                "vm0001",
                "domain-feature-pre-set:f1",
                &[("feature", "f1"), ("value", "v1")]
            ),
            ev(
                "vm0001",
                "domain-feature-set:f1",
                &[("feature", "f1"), ("value", "v1")]
            ),
        ]
    );
    assert!(e.xml().contains("<feature name=\"f1\">v1</feature>"));
    assert_eq!(e.call("admin.vm.feature.Set+f1", "vm0001", b"v1"), ok(b""));
    let kw = [("feature", "f1"), ("value", "v1"), ("oldvalue", "v1")];
    assert_eq!(
        e.events(),
        [
            ev("vm0001", "domain-feature-pre-set:f1", &kw),
            ev("vm0001", "domain-feature-set:f1", &kw)
        ]
    );
    assert_eq!(
        e.call("admin.vm.feature.List", "vm0001", b""),
        ok(b"service.cups\nbench-index\nf1\n")
    );
    assert_eq!(
        e.call("admin.vm.feature.CheckWithAdminVM+f1", "vm0001", b""),
        ok(b"v1")
    );
    assert_eq!(e.call("admin.vm.feature.Set+f1", "dom0", b""), ok(b""));
    e.events();
    assert_eq!(
        e.call(
            "admin.vm.feature.CheckWithTemplateAndAdminVM+f1",
            "vm0002",
            b""
        ),
        ok(b"")
    );

    // Failures save nothing and log nothing.
    let before = e.xml();
    for (arg, payload, want) in [
        (
            "service.",
            b"1".as_slice(),
            exc("QubesValueError", "Service name cannot be empty"),
        ),
        (
            "vm-config.1a",
            b"1",
            exc(
                "QubesValueError",
                "Config name must start with an ASCII letter",
            ),
        ),
        (
            "x",
            b"a\tb",
            exc("ProtocolError", "x value contains illegal characters"),
        ),
        (
            "x",
            "ö".as_bytes(),
            exc(
                "ProtocolError",
                "Feature value contains non-ASCII characters",
            ),
        ),
        (
            "preload-dispvm",
            b"",
            exc(
                "PermissionDenied",
                "changing this feature is prohibited by qubes.ext.admin.AdminExtension",
            ),
        ),
    ] {
        assert_eq!(
            e.call(&format!("admin.vm.feature.Set+{arg}"), "vm0001", payload),
            want,
            "{arg}"
        );
    }
    assert_eq!(e.xml(), before);
    assert!(e.events().is_empty());

    assert_eq!(e.call("admin.vm.feature.Remove+f1", "vm0001", b""), ok(b""));
    assert_eq!(
        e.events(),
        [
            ev(
                "vm0001",
                "domain-feature-pre-delete:f1",
                &[("feature", "f1")]
            ),
            ev("vm0001", "domain-feature-delete:f1", &[("feature", "f1")]),
        ]
    );
    assert!(!e.xml().contains("<feature name=\"f1\">v1</feature>"));
    assert_eq!(
        e.call("admin.vm.feature.Remove+f1", "vm0001", b""),
        exc(
            "QubesFeatureNotFoundError",
            "Feature not set for domain vm0001: f1"
        )
    );

    // A derived event fires before the set event.
    assert_eq!(
        e.call("admin.vm.feature.Set+boot-mode.active", "vm0001", b"x"),
        ok(b"")
    );
    let kw = [("feature", "boot-mode.active"), ("value", "x")];
    assert_eq!(
        e.events(),
        [
            ev("vm0001", "domain-feature-pre-set:boot-mode.active", &kw),
            ev("vm0001", "property-reset:bootmode", &[("name", "bootmode")]),
            ev("vm0001", "domain-feature-set:boot-mode.active", &kw),
        ]
    );
}

#[test]
fn tags() {
    let mut e = Env::new();
    assert_eq!(
        e.call("admin.vm.tag.List", "vm0001", b""),
        ok(b"audiovm-dom0\ngroup-1\nguivm-dom0\n")
    );
    assert_eq!(
        e.call("admin.vm.tag.Get+guivm-dom0", "vm0001", b""),
        ok(b"1")
    );
    assert_eq!(e.call("admin.vm.tag.Get+nope", "vm0001", b""), ok(b"0"));
    assert_eq!(
        e.call("admin.vm.tag.Get+.x", "vm0001", b""),
        exc("QubesInvalidTagError", "disallowed characters")
    );
    assert_eq!(e.call("admin.vm.tag.Set+t1", "vm0001", b""), ok(b""));
    assert_eq!(
        e.events(),
        [ev("vm0001", "domain-tag-add:t1", &[("tag", "t1")])]
    );
    assert_eq!(e.call("admin.vm.tag.Set+t1", "vm0001", b""), ok(b""));
    assert!(e.events().is_empty());
    assert!(e.xml().contains("<tag name=\"t1\"/>"));

    let denied = exc(
        "PermissionDenied",
        "changing this tag is prohibited by qubes.ext.admin.AdminExtension",
    );
    assert_eq!(
        e.call_from("vm0002", "admin.vm.tag.Set+created-by-x", "vm0001", b""),
        denied
    );
    assert_eq!(
        e.call_from("vm0002", "admin.vm.tag.Remove+created-by-x", "vm0001", b""),
        denied
    );
    assert_eq!(
        e.call_from("vm0002", "admin.vm.tag.Set+other", "vm0001", b""),
        ok(b"")
    );
    e.events();

    // created-by-<X> pulls in X's `tag-created-vm-with`, whose events come first.
    assert_eq!(
        e.call(
            "admin.vm.feature.Set+tag-created-vm-with",
            "dom0",
            b"tg1  tg2 t1"
        ),
        ok(b"")
    );
    e.events();
    assert_eq!(
        e.call("admin.vm.tag.Set+created-by-dom0", "vm0001", b""),
        ok(b"")
    );
    assert_eq!(
        e.events(),
        [
            ev("vm0001", "domain-tag-add:tg1", &[("tag", "tg1")]),
            ev("vm0001", "domain-tag-add:tg2", &[("tag", "tg2")]),
            ev(
                "vm0001",
                "domain-tag-add:created-by-dom0",
                &[("tag", "created-by-dom0")]
            ),
        ]
    );
    assert_eq!(
        e.call("admin.vm.tag.List", "vm0001", b""),
        ok(b"audiovm-dom0\ncreated-by-dom0\ngroup-1\nguivm-dom0\nother\nt1\ntg1\ntg2\n")
    );
    assert_eq!(
        e.call("admin.vm.tag.Set+created-by-nosuch", "vm0001", b""),
        exc("QubesVMNotFoundError", "No such domain: 'nosuch'")
    );

    assert_eq!(e.call("admin.vm.tag.Remove+t1", "vm0001", b""), ok(b""));
    assert_eq!(
        e.events(),
        [ev("vm0001", "domain-tag-delete:t1", &[("tag", "t1")])]
    );
    assert_eq!(
        e.call("admin.vm.tag.Remove+t1", "vm0001", b""),
        exc("QubesTagNotFoundError", "Tag not set for domain vm0001: t1")
    );
    assert_eq!(
        e.call("admin.vm.tag.List+t1", "vm0001", b""),
        exc("QubesTagNotFoundError", "Tag not set for domain vm0001: t1")
    );
    assert_eq!(e.call("admin.vm.tag.List+tg1", "vm0001", b""), ok(b"tg1\n"));
}

#[test]
fn notes() {
    let mut e = Env::new();
    let xml = e.xml();
    assert_eq!(e.call("admin.vm.notes.Get", "vm0001", b""), ok(b""));
    let notes = "For Your Eyes Only\n\tdef f():\u{8}\u{a0}\u{200b}é中";
    assert_eq!(
        e.call("admin.vm.notes.Set", "vm0001", notes.as_bytes()),
        ok(b"")
    );
    let file: &Path = &e.path("appvms/vm0001/notes.txt");
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        "For Your Eyes Only\n\tdef f():___é中"
    );
    assert_eq!(
        e.call("admin.vm.notes.Get", "vm0001", b""),
        ok("For Your Eyes Only\n\tdef f():___é中".as_bytes())
    );
    assert_eq!(e.call("admin.vm.notes.Set", "fedora-41", b"tpl"), ok(b""));
    assert_eq!(
        std::fs::read(e.path("vm-templates/fedora-41/notes.txt")).unwrap(),
        b"tpl"
    );
    assert_eq!(
        e.call("admin.vm.notes.Set", "vm0001", b"\xd8"),
        exc(
            "ProtocolError",
            "Unable to sanitise qube notes: 'utf-8' codec can't decode byte 0xd8 in position 0: unexpected end of data"
        )
    );
    assert_eq!(
        e.call("admin.vm.notes.Set", "dom0", b"x"),
        exc("ProtocolError", "expected destination to not be AdminVM")
    );
    assert_eq!(e.xml(), xml, "notes never touch qubes.xml");
    assert!(e.events().is_empty());
}
