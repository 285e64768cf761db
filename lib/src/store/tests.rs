//! Store tests: round trips, splicing in qubesd's canonical form, locking, commit, sweep.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;
use std::os::unix::fs::MetadataExt;

fn fixture(rel: &str) -> Option<Vec<u8>> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel);
    std::fs::read(p).ok()
}

fn gen(n: &str) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    if let Some(b) = fixture(&format!("{n}/qubes.xml")) {
        v.push(b);
    }
    if let Ok(b) = std::fs::read(format!("/work/oracle-run/{n}/qubes.xml")) {
        v.push(b);
    }
    v
}

/// A rank like the props module's: stage-2 names alphabetically, then stage-4 ones.
fn rank(name: &str) -> usize {
    const STAGE4: [&str; 9] = [
        "audiovm",
        "bootmode",
        "default_dispvm",
        "guivm",
        "kernelopts",
        "management_dispvm",
        "netvm",
        "template",
        "appvm_default_bootmode",
    ];
    const KNOWN: [&str; 14] = [
        "label",
        "maxmem",
        "memory",
        "name",
        "provides_network",
        "qid",
        "template_for_dispvms",
        "uuid",
        "vcpus",
        "virt_mode",
        "netvm",
        "template",
        "default_dispvm",
        "kernelopts",
    ];
    if !KNOWN.contains(&name) {
        return usize::MAX;
    }
    let stage = usize::from(STAGE4.contains(&name));
    // alphabetical within a stage: a rank from the first bytes
    let mut r = 0usize;
    for (i, b) in name.bytes().take(6).enumerate() {
        r += usize::from(b) << (8 * (5 - i));
    }
    (stage << 60) | r
}

#[test]
fn round_trip_fixtures() {
    for n in ["gen10", "gen100", "gen1000"] {
        for b in gen(n) {
            let d = Document::parse(b.clone()).unwrap();
            assert!(!d.is_modified());
            assert_eq!(d.to_bytes(), b, "{n}");
            // Touch every domain: still identical.
            for id in d.domains() {
                d.data(id).unwrap();
            }
            assert_eq!(d.to_bytes(), b, "{n} after data()");
        }
    }
}

#[test]
fn index_matches_full_parse() {
    for b in gen("gen100") {
        let d = Document::parse(b.clone()).unwrap();
        let ids = d.domains();
        let before: Vec<(String, Option<u32>, Option<String>)> = ids
            .iter()
            .map(|&i| {
                (
                    d.name(i).to_string(),
                    d.qid(i),
                    d.uuid(i).map(str::to_string),
                )
            })
            .collect();
        for &i in &ids {
            d.data(i).unwrap();
        }
        let after: Vec<(String, Option<u32>, Option<String>)> = ids
            .iter()
            .map(|&i| {
                (
                    d.name(i).to_string(),
                    d.qid(i),
                    d.uuid(i).map(str::to_string),
                )
            })
            .collect();
        assert_eq!(before, after);
        for (i, (name, _, uuid)) in ids.iter().zip(&before) {
            assert_eq!(d.domain_by_name(name), Some(*i));
            assert_eq!(d.domain_by_uuid(uuid.as_deref().unwrap()), Some(*i));
        }
        assert_eq!(d.name(ids[0]), "dom0");
        assert_eq!(d.class(ids[0]), "AdminVM");
        assert_eq!(d.uuid(ids[0]), Some(DOM0_UUID));
        assert_eq!(d.domain_by_uuid(DOM0_UUID), Some(ids[0]));
        assert_eq!(d.domain_by_name("no-such-vm"), None);
    }
}

const SMALL: &str = r#"<qubes>
  <labels>
    <label id="label-1" color="0xcc0000">red</label>
    <label id="label-8" color="0x000000">black</label>
  </labels>
  <pools>
    <pool name="varlibqubes" dir_path="/var/lib/qubes" driver="file"/>
  </pools>
  <properties>
    <property name="default_netvm">sys-net</property>
    <property name="default_template">fedora</property>
  </properties>
  <domains>
    <domain id="domain-0" class="AdminVM">
      <properties>
        <property name="label">black</property>
      </properties>
      <features/>
      <tags/>
    </domain>
    <domain id="domain-2" class="AppVM">
      <properties>
        <property name="label">red</property>
        <property name="name">sys-net</property>
        <property name="qid">2</property>
        <property name="uuid">5f0e1a22-3b5e-4e0a-8f9a-6a1d2c3b4a55</property>
        <property name="netvm"></property>
        <property name="template">fedora</property>
      </properties>
      <features>
        <feature name="servicevm">1</feature>
      </features>
      <tags>
        <tag name="created-by-dom0"/>
      </tags>
      <volume-config>
        <volume name="root" pool="varlibqubes" vid="appvms/sys-net/root"/>
      </volume-config>
    </domain>
  </domains>
</qubes>
"#;

fn small() -> (Document, DomId) {
    let d = Document::parse(SMALL.as_bytes().to_vec()).unwrap();
    let id = d.domain_by_name("sys-net").unwrap();
    (d, id)
}

fn text(d: &Document) -> String {
    String::from_utf8(d.to_bytes()).unwrap()
}

#[test]
fn set_property_splices_canonical_form() {
    let (mut d, id) = small();
    assert_eq!(d.data(id).unwrap().property("netvm"), Some(""));
    let dd = d.data_mut(id).unwrap();
    dd.set_property("memory", "400", &rank);
    dd.set_property("netvm", "sys-fw & <x> \"q\"\r", &rank);
    dd.set_property("kernelopts", " ", &rank);
    assert!(d.is_modified());
    let want = SMALL
        .replace(
            "        <property name=\"name\">sys-net</property>\n",
            "        <property name=\"memory\">400</property>\n        <property name=\"name\">sys-net</property>\n",
        )
        .replace(
            "        <property name=\"netvm\"></property>",
            "        <property name=\"kernelopts\"> </property>\n        <property name=\"netvm\">sys-fw &amp; &lt;x&gt; \"q\"&#13;</property>",
        );
    assert_eq!(text(&d), want);
    // Reparse: values come back (whitespace-only too).
    let d2 = Document::parse(d.to_bytes()).unwrap();
    let id2 = d2.domain_by_name("sys-net").unwrap();
    let data = d2.data(id2).unwrap();
    assert_eq!(data.property("netvm"), Some("sys-fw & <x> \"q\"\r"));
    assert_eq!(data.property("kernelopts"), Some(" "));
    assert_eq!(data.property("memory"), Some("400"));
}

#[test]
fn reset_property_and_no_op_set() {
    let (mut d, id) = small();
    d.data_mut(id).unwrap().set_property("label", "red", &rank);
    assert!(!d.is_modified());
    assert_eq!(text(&d), SMALL);
    assert!(d.data_mut(id).unwrap().reset_property("netvm"));
    assert!(!d.data_mut(id).unwrap().reset_property("netvm"));
    assert_eq!(
        text(&d),
        SMALL.replace("        <property name=\"netvm\"></property>\n", "")
    );
    // Removing everything leaves `<properties/>`.
    let names: Vec<String> = d
        .data(id)
        .unwrap()
        .properties()
        .iter()
        .map(|p| p.0.to_string())
        .collect();
    for n in names {
        d.data_mut(id).unwrap().reset_property(&n);
    }
    assert!(text(&d).contains(
        "    <domain id=\"domain-2\" class=\"AppVM\">\n      <properties/>\n      <features>"
    ));
}

#[test]
fn features_and_tags() {
    let (mut d, id) = small();
    let dd = d.data_mut(id).unwrap();
    dd.set_feature("servicevm", "");
    dd.set_feature("new.feature", "x");
    assert!(dd.add_tag("t1"));
    assert!(!dd.add_tag("t1"));
    assert!(dd.remove_tag("created-by-dom0"));
    assert_eq!(dd.features(), vec![("servicevm", ""), ("new.feature", "x")]);
    assert_eq!(dd.tags(), vec!["t1"]);
    let want = SMALL
        .replace(
            "        <feature name=\"servicevm\">1</feature>\n",
            "        <feature name=\"servicevm\"></feature>\n        <feature name=\"new.feature\">x</feature>\n",
        )
        .replace("<tag name=\"created-by-dom0\"/>", "<tag name=\"t1\"/>");
    assert_eq!(text(&d), want);
    let dd = d.data_mut(id).unwrap();
    dd.remove_feature("servicevm");
    dd.remove_feature("new.feature");
    dd.remove_tag("t1");
    let t = text(&d);
    assert!(
        t.contains("      </properties>\n      <features/>\n      <tags/>\n      <volume-config>"),
        "{t}"
    );
    // And back from empty elements.
    let mut d = Document::parse(t.into_bytes()).unwrap();
    let id = d.domain_by_name("sys-net").unwrap();
    d.data_mut(id).unwrap().set_feature("a", "1");
    d.data_mut(id).unwrap().add_tag("b");
    assert!(text(&d).contains(
        "      <features>\n        <feature name=\"a\">1</feature>\n      </features>\n      <tags>\n        <tag name=\"b\"/>\n      </tags>\n"
    ));
}

#[test]
fn labels_and_global_properties() {
    let (mut d, _) = small();
    d.add_label(Label {
        index: 9,
        color: "0x00ffff".into(),
        name: "cyan".into(),
    });
    d.add_label(Label {
        index: 3,
        color: "0xedd400".into(),
        name: "yellow".into(),
    });
    assert_eq!(
        d.labels().iter().map(|l| l.index).collect::<Vec<_>>(),
        vec![1, 3, 8, 9]
    );
    assert!(d.remove_label("red"));
    assert!(!d.remove_label("red"));
    d.set_global_property("clockvm", "sys-net", &|n| {
        if n == "clockvm" {
            0
        } else {
            1
        }
    });
    d.set_global_property("default_template", "debian", &|_| 1);
    assert!(d.reset_global_property("default_netvm"));
    let want = SMALL
        .replace(
            "    <label id=\"label-1\" color=\"0xcc0000\">red</label>\n    <label id=\"label-8\" color=\"0x000000\">black</label>\n",
            "    <label id=\"label-3\" color=\"0xedd400\">yellow</label>\n    <label id=\"label-8\" color=\"0x000000\">black</label>\n    <label id=\"label-9\" color=\"0x00ffff\">cyan</label>\n",
        )
        .replace(
            "    <property name=\"default_netvm\">sys-net</property>\n    <property name=\"default_template\">fedora</property>\n",
            "    <property name=\"clockvm\">sys-net</property>\n    <property name=\"default_template\">debian</property>\n",
        );
    assert_eq!(text(&d), want);
    assert_eq!(d.global_property("clockvm"), Some("sys-net"));
    assert_eq!(d.global_properties().len(), 2);
    assert_eq!(d.pools()[0].driver, "file");
    assert_eq!(
        d.pools()[0].attrs[1],
        ("dir_path".to_string(), "/var/lib/qubes".to_string())
    );
}

#[test]
fn absent_sections_are_created() {
    let src = "<qubes>\n  <domains>\n  </domains>\n</qubes>\n";
    let mut d = Document::parse(src.as_bytes().to_vec()).unwrap();
    assert_eq!(d.to_bytes(), src.as_bytes());
    d.set_global_property("default_kernel", "6.6", &|_| 0);
    d.add_label(Label {
        index: 1,
        color: "0xcc0000".into(),
        name: "red".into(),
    });
    assert_eq!(
        text(&d),
        "<qubes>\n  <labels>\n    <label id=\"label-1\" color=\"0xcc0000\">red</label>\n  </labels>\n  <properties>\n    <property name=\"default_kernel\">6.6</property>\n  </properties>\n  <domains>\n  </domains>\n</qubes>\n"
    );
}

#[test]
fn virtual_dom0() {
    let src = "<qubes>\n  <labels/>\n  <domains>\n    <domain id=\"domain-1\" class=\"TemplateVM\">\n      <properties>\n        <property name=\"name\">fedora</property>\n        <property name=\"qid\">1</property>\n        <property name=\"uuid\">0B4A6F0E-8c1c-4d4e-9d41-4c2c5c0d7e11</property>\n      </properties>\n      <features/>\n      <tags/>\n    </domain>\n  </domains>\n</qubes>\n";
    let mut d = Document::parse(src.as_bytes().to_vec()).unwrap();
    let ids = d.domains();
    assert_eq!(ids.len(), 2);
    let dom0 = d.domain_by_name("dom0").unwrap();
    assert_eq!(ids[0], dom0);
    assert_eq!(d.class(dom0), "AdminVM");
    assert_eq!(d.qid(dom0), Some(0));
    assert_eq!(d.data(dom0).unwrap().property("label"), Some("black"));
    assert_eq!(
        d.domain_by_uuid("0b4a6f0e-8c1c-4d4e-9d41-4c2c5c0d7e11"),
        Some(ids[1])
    );
    // Reading and no-op writes do not write it.
    d.data_mut(dom0)
        .unwrap()
        .set_property("label", "black", &rank);
    assert!(!d.is_modified());
    assert_eq!(d.to_bytes(), src.as_bytes());
    d.data_mut(dom0)
        .unwrap()
        .set_feature("gui-videoram-min", "2048");
    let t = text(&d);
    assert_eq!(
        t,
        src.replace(
            "  <domains>\n",
            "  <domains>\n    <domain id=\"domain-0\" class=\"AdminVM\">\n      <properties>\n        <property name=\"label\">black</property>\n      </properties>\n      <features>\n        <feature name=\"gui-videoram-min\">2048</feature>\n      </features>\n      <tags/>\n    </domain>\n"
        )
    );
    let d2 = Document::parse(t.into_bytes()).unwrap();
    assert_eq!(d2.domains().len(), 2);
    assert_eq!(
        d2.data(d2.domain_by_name("dom0").unwrap())
            .unwrap()
            .feature("gui-videoram-min"),
        Some("2048")
    );
}

#[test]
fn add_and_remove_domains() {
    let (mut d, net) = small();
    let mut data = DomainData::default();
    for (k, v) in [
        ("label", "red"),
        ("name", "work"),
        ("qid", "7"),
        ("uuid", "11111111-2222-3333-4444-555555555555"),
    ] {
        data.set_property(k, v, &rank);
    }
    data.set_property("template", "fedora", &rank);
    data.add_tag("created-by-dom0");
    data.set_raw_elements(
        "volume-config",
        vec![b"<volume-config>\n        <volume name=\"root\"/>\n      </volume-config>".to_vec()],
    );
    let w = d.add_domain("AppVM", data.clone());
    let mut data2 = DomainData::default();
    data2.set_property("name", "alpha", &rank);
    data2.set_property("qid", "8", &rank);
    d.add_domain("AppVM", data2);
    assert_eq!(d.domain_by_name("work"), Some(w));
    assert_eq!(d.qid(w), Some(7));
    assert_eq!(
        d.domain_by_uuid("11111111-2222-3333-4444-555555555555"),
        Some(w)
    );
    let order: Vec<&str> = d.domains().iter().map(|&i| d.name(i)).collect();
    assert_eq!(order, vec!["dom0", "alpha", "sys-net", "work"]);
    let t = text(&d);
    let work = "    <domain id=\"domain-7\" class=\"AppVM\">\n      <properties>\n        <property name=\"label\">red</property>\n        <property name=\"name\">work</property>\n        <property name=\"qid\">7</property>\n        <property name=\"uuid\">11111111-2222-3333-4444-555555555555</property>\n        <property name=\"template\">fedora</property>\n      </properties>\n      <features/>\n      <tags>\n        <tag name=\"created-by-dom0\"/>\n      </tags>\n      <volume-config>\n        <volume name=\"root\"/>\n      </volume-config>\n    </domain>\n";
    let alpha = "    <domain id=\"domain-8\" class=\"AppVM\">\n      <properties>\n        <property name=\"name\">alpha</property>\n        <property name=\"qid\">8</property>\n      </properties>\n      <features/>\n      <tags/>\n    </domain>\n";
    let dom0_end = "      <tags/>\n    </domain>\n";
    let at = SMALL.find(dom0_end).unwrap() + dom0_end.len();
    let mut want = SMALL.to_string();
    want.insert_str(SMALL.find("  </domains>").unwrap(), work);
    want.insert_str(at, alpha);
    assert_eq!(t, want);
    assert!(d.remove_domain(net));
    assert!(!d.remove_domain(net));
    assert_eq!(d.domain_by_name("sys-net"), None);
    let t = text(&d);
    assert!(!t.contains("<property name=\"name\">sys-net"));
    let d2 = Document::parse(t.into_bytes()).unwrap();
    let names: Vec<&str> = d2.domains().iter().map(|&i| d2.name(i)).collect();
    assert_eq!(names, vec!["dom0", "alpha", "work"]);
    assert_eq!(
        d2.data(d2.domain_by_name("work").unwrap())
            .unwrap()
            .raw_elements()
            .len(),
        1
    );
}

const ODD: &str = "<?xml version='1.0' encoding='UTF-8'?>\n<!-- top comment -->\n<!DOCTYPE qubes [ <!ENTITY x \"y\"> ]>\n<qubes  version=\"3.0\" xmlns:q='urn:x'>\n\t<labels><label id='label-1' color=\"0xcc0000\" extra=\"&gt;\">red</label><!-- c --></labels>\n<unknown a=\"1\"><deep><x/></deep></unknown>\n  <properties >\n    <property name=\"default_kernel\" >  6.6 &amp; &#x41;</property>\n    <?pi here?>\n  </properties>\n  <domains>\n    <!-- dom comment with <domain> inside -->\n    <domain class=\"AppVM\" id=\"domain-3\" future=\"yes\">\n      <future-element><domain/></future-element>\n      <properties><property name=\"name\">odd</property><property name='qid'>3</property><property name=\"uuid\">aaaaaaaa-0000-0000-0000-000000000003</property><property name=\"label\" ref=\"label-1\"/><property name=\"ws\">\n\t </property><property name=\"cd\"><![CDATA[a<b]]></property></properties>\n      <features><feature name=\"f\" future=\"1\">v</feature></features>\n    </domain>\n    <domain id=\"domain-0\" class=\"AdminVM\"/>\n  </domains>\n  <trailing-unknown/>\n</qubes>\n<!-- after -->\n";

#[test]
fn odd_file_round_trip_and_edit() {
    let mut d = Document::parse(ODD.as_bytes().to_vec()).unwrap();
    assert_eq!(text(&d), ODD);
    assert_eq!(
        d.labels(),
        &[Label {
            index: 1,
            color: "0xcc0000".into(),
            name: "red".into()
        }]
    );
    assert_eq!(d.global_property("default_kernel"), Some("  6.6 & A"));
    let ids = d.domains();
    assert_eq!(ids.len(), 2, "no virtual dom0: the file has one");
    let odd = d.domain_by_name("odd").unwrap();
    assert_eq!(d.qid(odd), Some(3));
    assert_eq!(d.domain_by_name("dom0"), Some(ids[1]));
    let data = d.data(odd).unwrap();
    assert_eq!(data.property("label"), Some("label-1"));
    assert_eq!(data.property("ws"), Some("\n\t "));
    assert_eq!(data.property("cd"), Some("a<b"));
    assert_eq!(data.feature("f"), Some("v"));
    assert!(data.tags().is_empty());
    assert_eq!(text(&d), ODD);
    // Edit: only the touched pieces change; the ref property and unknown bits stay raw.
    d.data_mut(odd)
        .unwrap()
        .set_property("ws", "x", &|_| usize::MAX);
    d.data_mut(odd).unwrap().add_tag("t");
    d.data_mut(ids[1]).unwrap().set_feature("g", "1");
    let t = text(&d);
    let want = ODD
        .replace("<property name=\"ws\">\n\t </property>", "<property name=\"ws\">x</property>")
        .replace(
            "<feature name=\"f\" future=\"1\">v</feature></features>\n",
            "<feature name=\"f\" future=\"1\">v</feature></features>\n      <tags>\n        <tag name=\"t\"/>\n      </tags>\n",
        )
        .replace(
            "<domain id=\"domain-0\" class=\"AdminVM\"/>",
            "<domain id=\"domain-0\" class=\"AdminVM\">\n      <features>\n        <feature name=\"g\">1</feature>\n      </features>\n    </domain>",
        );
    assert_eq!(t, want);
    assert!(Document::parse(t.into_bytes()).is_ok());
}

#[test]
fn parse_errors() {
    for bad in [
        "",
        "<notqubes/>",
        "<qubes><domains><domain></domains></qubes>",
        "<qubes><!-- x",
        "text<qubes/>",
    ] {
        assert!(
            matches!(
                Document::parse(bad.as_bytes().to_vec()),
                Err(StoreError::Parse(_))
            ),
            "{bad:?}"
        );
    }
    let d = Document::parse(b"<qubes/>".to_vec()).unwrap();
    assert_eq!(d.domains().len(), 1);
}

// ----------------------------------------------------------------------------------------------
// quickcheck
// ----------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Printable(String);

impl quickcheck::Arbitrary for Printable {
    // (shrinking goes through String's, which may produce any char; props clean them)
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        // Python's string.printable plus some non-ASCII.
        const CH: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ \t\n\r\x0b\x0cé€😀";
        let chars: Vec<char> = CH.chars().collect();
        let n = usize::arbitrary(g) % 24;
        Printable((0..n).map(|_| *g.choose(&chars).unwrap_or(&'a')).collect())
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(Printable))
    }
}

#[test]
fn qc_set_then_reparse() {
    fn prop(v: Printable, f: Printable, g: Printable) -> bool {
        // \x0b and \x0c are not XML characters: lxml would refuse them; the handlers do too.
        let clean = |s: &str| {
            s.chars()
                .map(|c| {
                    if c < ' ' && !matches!(c, '\t' | '\n' | '\r') {
                        '_'
                    } else {
                        c
                    }
                })
                .collect::<String>()
        };
        let (v, f, g) = (clean(&v.0), clean(&f.0), clean(&g.0));
        let (mut d, id) = small();
        let dd = d.data_mut(id).unwrap();
        dd.set_property("kernelopts", &v, &rank);
        dd.set_feature("x", &f);
        if !g.is_empty() {
            dd.add_tag(&g);
        }
        d.set_global_property("default_kernel", &v, &|_| 0);
        let bytes = d.to_bytes();
        let d2 = Document::parse(bytes.clone()).unwrap();
        if d2.to_bytes() != bytes {
            return false;
        }
        let id2 = d2.domain_by_name("sys-net").unwrap();
        let data = d2.data(id2).unwrap();
        // lxml normalises a literal \r to \n on read; we write it as &#13;, so it survives.
        data.property("kernelopts") == Some(v.as_str())
            && data.feature("x") == Some(f.as_str())
            && (g.is_empty() || data.has_tag(&g))
            && d2.global_property("default_kernel") == Some(v.as_str())
    }
    quickcheck::QuickCheck::new()
        .tests(500)
        .quickcheck(prop as fn(Printable, Printable, Printable) -> bool);
}

#[test]
fn qc_parse_to_bytes_identity() {
    // Random documents assembled from odd but well-formed pieces.
    fn prop(pieces: Vec<u8>, v: Printable) -> bool {
        let v: String =
            v.0.chars()
                .map(|c| {
                    if c < ' ' && !matches!(c, '\t' | '\n' | '\r') {
                        '_'
                    } else {
                        c
                    }
                })
                .collect();
        let esc = crate::store::xml::escape_text(&v).into_owned();
        let parts = [
            "<!-- c -->".to_string(),
            "\n  ".to_string(),
            format!("<property name=\"p\">{esc}</property>"),
            "<x a='1' b=\"&quot;\"/>".to_string(),
            "<?pi x?>".to_string(),
            format!("<feature name='f'>{esc}<![CDATA[]]></feature>"),
            "<tag name=\"t\" />".to_string(),
            "<y><z/></y>".to_string(),
        ];
        let mut body = String::new();
        for (i, p) in pieces.iter().enumerate() {
            body.push_str(&parts[usize::from(*p) % parts.len()]);
            if i % 3 == 0 {
                body.push_str("\n    ");
            }
        }
        let doc = format!(
            "<qubes>\n  <properties>{body}</properties>\n  <domains>\n    <domain id=\"domain-1\" class=\"AppVM\">\n      <properties>{body}<property name=\"name\">n</property></properties>\n      <features>{body}</features>\n      <tags>{body}</tags>{body}\n    </domain>\n  </domains>\n</qubes>\n"
        );
        let Ok(d) = Document::parse(doc.clone().into_bytes()) else {
            return false;
        };
        let id = d.domain_by_name("n");
        id.is_some_and(|id| d.data(id).is_ok()) && d.to_bytes() == doc.as_bytes()
    }
    quickcheck::QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(Vec<u8>, Printable) -> bool);
}

// ----------------------------------------------------------------------------------------------
// Files, locks, commit
// ----------------------------------------------------------------------------------------------

fn store_in(dir: &Path) -> PathBuf {
    let p = dir.join("qubes.xml");
    std::fs::write(&p, SMALL).unwrap();
    p
}

#[test]
fn missing_store() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("qubes.xml");
    assert!(matches!(load(&p), Err(StoreError::Missing(_))));
    assert!(matches!(
        WriteTxn::begin(&p, Duration::from_millis(10)),
        Err(StoreError::Missing(_))
    ));
    assert!(matches!(stamp(&p), Err(StoreError::Missing(_))));
}

#[test]
fn commit_writes_atomically_with_mode_0660() {
    let d = tempfile::tempdir().unwrap();
    let p = store_in(d.path());
    let st0 = stamp(&p).unwrap();
    {
        let mut t = WriteTxn::begin(&p, Duration::from_secs(1)).unwrap();
        t.commit().unwrap(); // unmodified: no write
        assert_eq!(stamp(&p).unwrap(), st0);
        let id = t.doc().domain_by_name("sys-net").unwrap();
        t.doc_mut().data_mut(id).unwrap().set_feature("a", "b");
        t.commit().unwrap();
        assert!(!t.doc().is_modified());
        // Still locked (old and new file) until drop.
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        assert!(!lock::try_lock_exclusive(&f).unwrap());
    }
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    assert!(lock::try_lock_exclusive(&f).unwrap());
    let md = std::fs::metadata(&p).unwrap();
    assert_eq!(md.mode() & 0o777, 0o660);
    assert_ne!(md.ino(), st0.ino);
    let (doc, _) = load(&p).unwrap();
    assert_eq!(
        doc.data(doc.domain_by_name("sys-net").unwrap())
            .unwrap()
            .feature("a"),
        Some("b")
    );
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("qubes.xml")]);
}

#[test]
fn stale_temps_are_swept_under_the_lock() {
    let d = tempfile::tempdir().unwrap();
    let p = store_in(d.path());
    std::fs::write(d.path().join("qubes.xml~dead1"), "x").unwrap();
    std::fs::write(d.path().join("qubes.xml~"), "keep: no suffix").unwrap();
    std::fs::write(d.path().join("other~1"), "keep").unwrap();
    // Readers do not sweep.
    load(&p).unwrap();
    assert!(d.path().join("qubes.xml~dead1").exists());
    let t = WriteTxn::begin(&p, Duration::from_secs(1)).unwrap();
    assert!(!d.path().join("qubes.xml~dead1").exists());
    assert!(d.path().join("qubes.xml~").exists());
    assert!(d.path().join("other~1").exists());
    drop(t);
}

#[test]
fn lock_excludes_other_transactions_and_times_out() {
    let d = tempfile::tempdir().unwrap();
    let p = store_in(d.path());
    let t = WriteTxn::begin(&p, Duration::from_secs(1)).unwrap();
    let start = Instant::now();
    let r = WriteTxn::begin(&p, Duration::from_millis(150));
    let waited = start.elapsed();
    assert!(
        matches!(r, Err(StoreError::Busy { waited_ms }) if waited_ms >= 150),
        "{:?}",
        r.err()
    );
    assert!(waited >= Duration::from_millis(150) && waited < Duration::from_secs(2));
    drop(t);
    assert!(WriteTxn::begin(&p, Duration::from_millis(10)).is_ok());
}

#[test]
fn waiter_follows_a_rename() {
    // A waiter that opened the old file retries on the new one after the holder commits.
    let d = tempfile::tempdir().unwrap();
    let p = store_in(d.path());
    let mut t = WriteTxn::begin(&p, Duration::from_secs(1)).unwrap();
    let p2 = p.clone();
    let waiter = std::thread::spawn(move || {
        let mut t2 = WriteTxn::begin(&p2, Duration::from_secs(5)).unwrap();
        let id = t2.doc().domain_by_name("sys-net").unwrap();
        let seen = t2
            .doc()
            .data(id)
            .unwrap()
            .feature("step")
            .map(str::to_string);
        t2.doc_mut().data_mut(id).unwrap().set_feature("step", "2");
        t2.commit().unwrap();
        seen
    });
    std::thread::sleep(Duration::from_millis(100));
    let id = t.doc().domain_by_name("sys-net").unwrap();
    t.doc_mut().data_mut(id).unwrap().set_feature("step", "1");
    t.commit().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(t);
    assert_eq!(waiter.join().unwrap().as_deref(), Some("1"));
    let (doc, _) = load(&p).unwrap();
    assert_eq!(
        doc.data(doc.domain_by_name("sys-net").unwrap())
            .unwrap()
            .feature("step"),
        Some("2")
    );
}

#[test]
fn python_lockf_excludes_us_and_we_exclude_it() {
    let py = Path::new("/usr/bin/python3");
    if !py.exists() {
        eprintln!("skipped: no python3");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = store_in(d.path());
    let ready = d.path().join("ready");
    let script = format!(
        "import fcntl,os,time\nf=open({p:?},'r+')\nfcntl.lockf(f,fcntl.LOCK_EX)\nopen({r:?},'w').close()\ntime.sleep(0.6)\n",
        p = p.to_str().unwrap(),
        r = ready.to_str().unwrap()
    );
    let mut child = std::process::Command::new(py)
        .arg("-c")
        .arg(&script)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !ready.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "python did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(matches!(
        WriteTxn::begin(&p, Duration::from_millis(100)),
        Err(StoreError::Busy { .. })
    ));
    let t1 = Instant::now();
    let t = WriteTxn::begin(&p, Duration::from_secs(10)).unwrap();
    assert!(
        t1.elapsed() >= Duration::from_millis(200),
        "should have waited for python"
    );
    assert!(child.wait().unwrap().success());
    // Now we hold it: python's non-blocking lockf fails.
    let out = std::process::Command::new(py)
        .arg("-c")
        .arg(format!(
            "import fcntl,sys\nf=open({:?},'r+')\ntry:\n  fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\n  sys.exit(0)\nexcept OSError:\n  sys.exit(3)\n",
            p.to_str().unwrap()
        ))
        .status()
        .unwrap();
    assert_eq!(out.code(), Some(3));
    drop(t);
}

/// Crash points: a child (this test binary, `crash_child`) aborts at each fail point; the store
/// is then either the old or the new version, and the next writer sweeps the temp file.
#[cfg(feature = "failpoints")]
#[test]
fn crash_at_fail_points() {
    let exe = std::env::current_exe().unwrap();
    for (point, new) in [
        ("after-temp-write", false),
        ("after-fsync", false),
        ("before-rename", false),
        ("after-rename", true),
    ] {
        let d = tempfile::tempdir().unwrap();
        let p = store_in(d.path());
        let st = std::process::Command::new(&exe)
            .args([
                "--exact",
                "store::tests::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("STORE_CHILD_PATH", &p)
            .env("QUBES_ADMIN_FAILPOINT", point)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!st.success(), "{point}: child should have aborted");
        let (doc, _) = load(&p).unwrap();
        let f = doc
            .data(doc.domain_by_name("sys-net").unwrap())
            .unwrap()
            .feature("crash")
            .map(str::to_string);
        assert_eq!(f.is_some(), new, "{point}");
        let t = WriteTxn::begin(&p, Duration::from_secs(1)).unwrap();
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("qubes.xml")],
            "{point}"
        );
        drop(t);
    }
    // during-event-append: torn record ignored by readers, repaired by the next writer.
    let d = tempfile::tempdir().unwrap();
    let ev = |n: &str| crate::events::Event::new("vm", n, vec![("k".into(), "v\nw".into())]);
    crate::events::append(d.path(), &[ev("a")]).unwrap();
    let st = std::process::Command::new(&exe)
        .args([
            "--exact",
            "store::tests::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EVENT_CHILD_DIR", d.path())
        .env("QUBES_ADMIN_FAILPOINT", "during-event-append")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success());
    assert_eq!(crate::events::read_after(d.path(), 0).unwrap().len(), 1);
    assert_eq!(crate::events::append(d.path(), &[ev("c")]).unwrap(), 2);
    let all = crate::events::read_after(d.path(), 0).unwrap();
    assert_eq!(
        all.iter()
            .map(|r| (r.0, r.1.name.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "a"), (2, "c")]
    );
}

#[test]
fn crash_child() {
    if let Some(p) = std::env::var_os("STORE_CHILD_PATH") {
        let mut t = WriteTxn::begin(Path::new(&p), Duration::from_secs(1)).unwrap();
        let id = t.doc().domain_by_name("sys-net").unwrap();
        t.doc_mut().data_mut(id).unwrap().set_feature("crash", "1");
        t.commit().unwrap();
    }
    if let Some(d) = std::env::var_os("EVENT_CHILD_DIR") {
        let ev = crate::events::Event::new("vm", "b", vec![("k".into(), "x".repeat(300))]);
        crate::events::append(Path::new(&d), &[ev]).unwrap();
    }
}

/// Regression (fuzz target `xml_codec`, fuzz/regressions/xml_codec/nested-domains-stray-end-tag):
/// a `<domain>` with a stray `</properties>` and a nested `<domains>` was indexed by the fast
/// path up to the nested `</domain>`, parsed as ending at the stray end tag, and saving a change
/// to it dropped the bytes in between (one domain fewer after reloading). Now that domain does
/// not parse, and a document that is not well-formed at the top level is refused.
#[test]
fn not_well_formed_domains_are_refused() {
    let src = b"<qubes>\n  <domains>\n    <domain id=\"domain-1\" class=\"AppVM\">\n      <properties>\n        <property name=\"name\">a</property>\n        <property name=\"qid\">1</property>\n        <property name=\"uuid\">11111111-1111-1111-1111-111111111111</property>\n      </properties>\n      </properties>\n      <domains>\n    <domain id=\"domain-0\" class=\"AdminVM\">\n      <properties/>\n    </domain>\n    <domain id=\"domain-2\" class=\"AppVM\">\n      <properties>\n        <property name=\"name\">b</property>\n        <property name=\"qid\">2</property>\n        <property name=\"uuid\">22222222-2222-2222-2222-222222222222</property>\n      </properties>\n    </domain>\n  </domains>\n</qubes>\n";
    let doc = Document::parse(src.to_vec()).unwrap();
    let a = doc.domain_by_name("a").unwrap();
    assert!(doc.data(a).is_err());
    // Every domain that parses survives a change and a reload.
    for id in doc.domains() {
        let mut doc = Document::parse(src.to_vec()).unwrap();
        let n = doc.domains().len();
        let Ok(d) = doc.data_mut(id) else { continue };
        d.set_property("netvm", "", &rank);
        let again = Document::parse(doc.to_bytes()).unwrap();
        assert_eq!(again.domains().len(), n);
        assert_eq!(again.data(id).unwrap().property("netvm"), Some(""));
    }
    assert!(Document::parse(b"<qubes><labels></pools></qubes>".to_vec()).is_err());
    assert!(Document::parse(b"<qubes><domains></qubes></domains>".to_vec()).is_err());
    assert!(Document::parse(b"<qubes//>".to_vec()).is_err());
}

/// Regression (fuzz target `xml_codec`, fuzz/regressions/xml_codec/duplicate-global-property):
/// with a name repeated in a section (a hand-edited file), a reset removed only the first entry
/// and the second one became the value: `admin.property.Reset+clockvm` left `clockvm` set.
#[test]
fn reset_removes_duplicate_entries() {
    let src = b"<qubes>\n  <properties>\n    <property name=\"clockvm\">sys-net</property>\n    <property name=\"default_netvm\">sys-firewall</property>\n    <property name=\"clockvm\">sys-net</property>\n  </properties>\n  <domains>\n    <domain id=\"domain-0\" class=\"AdminVM\">\n      <properties/>\n      <features>\n        <feature name=\"f\">1</feature>\n        <feature name=\"f\">2</feature>\n      </features>\n      <tags>\n        <tag name=\"t\"/>\n        <tag name=\"t\"/>\n      </tags>\n    </domain>\n  </domains>\n</qubes>\n";
    let mut doc = Document::parse(src.to_vec()).unwrap();
    assert!(doc.reset_global_property("clockvm"));
    assert_eq!(doc.global_property("clockvm"), None);
    let dom0 = doc.domain_by_name("dom0").unwrap();
    let d = doc.data_mut(dom0).unwrap();
    assert!(d.remove_feature("f"));
    assert!(d.remove_tag("t"));
    assert_eq!((d.feature("f"), d.has_tag("t")), (None, false));
    let again = Document::parse(doc.to_bytes()).unwrap();
    assert_eq!(again.global_property("clockvm"), None);
    assert_eq!(again.global_property("default_netvm"), Some("sys-firewall"));
    let d = again.data(again.domain_by_name("dom0").unwrap()).unwrap();
    assert_eq!((d.feature("f"), d.has_tag("t")), (None, false));
}

/// Regression: with a name and uuid held by two domains (a hand-edited file) the index points at
/// the later one; removing it made both lookups miss although the earlier one is still there.
#[test]
fn removing_a_duplicate_uncovers_the_other() {
    let dom = |qid: u32| {
        format!(
            "    <domain id=\"domain-{qid}\" class=\"AppVM\">\n      <properties>\n        <property name=\"qid\">{qid}</property>\n        <property name=\"name\">x</property>\n        <property name=\"uuid\">11111111-1111-1111-1111-111111111111</property>\n      </properties>\n    </domain>\n"
        )
    };
    let src = format!(
        "<qubes>\n  <domains>\n{}{}  </domains>\n</qubes>\n",
        dom(1),
        dom(2)
    );
    let mut doc = Document::parse(src.into_bytes()).unwrap();
    let uuid = "11111111-1111-1111-1111-111111111111";
    let later = doc.domain_by_name("x").unwrap();
    assert_eq!(doc.qid(later), Some(2));
    assert_eq!(doc.domain_by_uuid(uuid), Some(later));
    assert!(doc.remove_domain(later));
    let earlier = doc.domain_by_name("x").unwrap();
    assert_eq!(doc.qid(earlier), Some(1));
    assert_eq!(doc.domain_by_uuid(uuid), Some(earlier));
}
