//! Fuzz target `xml_codec`: the qubes.xml codec (`Document::parse` / `to_bytes`).
//!
//! Input: `<op> <domain> <key len> <value len> <key> <value> <document...>`.
//!
//! Checks, on any bytes:
//! * `Document::parse` does not panic; neither does parsing every domain (`data`, lazy);
//! * a document that parses saves byte-identical (also after every domain was parsed);
//! * after one mutation (`op`: set/reset a property, set/remove a feature, add/remove a tag on
//!   the chosen domain, or set/reset a global property) the saved bytes parse again, the
//!   mutation is visible there, everything else read the same (other domains' properties,
//!   features and tags, labels, pools, global properties), and applying the same mutation to the
//!   reparsed document saves the same bytes again (fixed point).
//!
//! Keys are what the handlers can store (feature names and tags pass the validators, property
//! names are identifiers); values are any text without NUL or other C0 controls but TAB, LF, CR.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qubes_admin::wire::names;
use qubes_admin::store::{Document, DomId};

#[derive(Debug, Clone, Copy)]
enum Op {
    SetProperty,
    ResetProperty,
    SetFeature,
    RemoveFeature,
    AddTag,
    RemoveTag,
    SetGlobal,
    ResetGlobal,
    None,
}

const OPS: [Op; 9] = [
    Op::SetProperty,
    Op::ResetProperty,
    Op::SetFeature,
    Op::RemoveFeature,
    Op::AddTag,
    Op::RemoveTag,
    Op::SetGlobal,
    Op::ResetGlobal,
    Op::None,
];

/// A property order like the real tables': a few known names first, unknown ones last.
fn rank(name: &str) -> usize {
    const KNOWN: [&str; 8] = [
        "label", "maxmem", "memory", "name", "qid", "uuid", "netvm", "template",
    ];
    KNOWN.iter().position(|k| *k == name).unwrap_or(usize::MAX)
}

fn key_ok(op: Op, key: &str) -> bool {
    match op {
        Op::SetFeature | Op::RemoveFeature => names::is_valid_feature_name(key),
        Op::AddTag | Op::RemoveTag => names::validate_tag(key).is_ok(),
        _ => {
            !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
    }
}

fn value_ok(v: &str) -> bool {
    v.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
}

/// What the document says, per domain (None: that domain does not parse).
type Snapshot = Vec<Option<(Vec<(String, String)>, Vec<(String, String)>, Vec<String>)>>;

fn snapshot(doc: &Document) -> Snapshot {
    doc.domains()
        .into_iter()
        .map(|id| {
            doc.data(id).ok().map(|d| {
                let own = |v: Vec<(&str, &str)>| {
                    v.into_iter()
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .collect::<Vec<_>>()
                };
                (
                    own(d.properties()),
                    own(d.features()),
                    d.tags().into_iter().map(str::to_string).collect(),
                )
            })
        })
        .collect()
}

fn globals(doc: &Document) -> (Vec<(String, String)>, String, String) {
    let props = doc
        .global_properties()
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    (
        props,
        format!("{:?}", doc.labels()),
        format!("{:?}", doc.pools()),
    )
}

/// Applies the mutation; false if it could not be applied (the domain does not parse).
fn apply(doc: &mut Document, op: Op, dom: Option<DomId>, key: &str, value: &str) -> bool {
    match op {
        Op::SetGlobal => {
            doc.set_global_property(key, value, &rank);
            return true;
        }
        Op::ResetGlobal => {
            doc.reset_global_property(key);
            return true;
        }
        Op::None => return true,
        _ => {}
    }
    let Some(id) = dom else { return false };
    let Ok(d) = doc.data_mut(id) else {
        return false;
    };
    match op {
        Op::SetProperty => d.set_property(key, value, &rank),
        Op::ResetProperty => {
            d.reset_property(key);
        }
        Op::SetFeature => d.set_feature(key, value),
        Op::RemoveFeature => {
            d.remove_feature(key);
        }
        Op::AddTag => {
            d.add_tag(key);
        }
        Op::RemoveTag => {
            d.remove_tag(key);
        }
        _ => {}
    }
    true
}

fn check_visible(doc: &Document, op: Op, dom: Option<DomId>, key: &str, value: &str) {
    match op {
        Op::SetGlobal => assert_eq!(doc.global_property(key), Some(value), "global {key}"),
        Op::ResetGlobal => assert_eq!(doc.global_property(key), None, "global {key} reset"),
        Op::None => {}
        _ => {
            let id = dom.unwrap();
            let d = doc.data(id).unwrap();
            match op {
                Op::SetProperty => assert_eq!(d.property(key), Some(value), "property {key}"),
                Op::ResetProperty => assert_eq!(d.property(key), None, "property {key} reset"),
                Op::SetFeature => assert_eq!(d.feature(key), Some(value), "feature {key}"),
                Op::RemoveFeature => assert_eq!(d.feature(key), None, "feature {key} removed"),
                Op::AddTag => assert!(d.has_tag(key), "tag {key}"),
                Op::RemoveTag => assert!(!d.has_tag(key), "tag {key} removed"),
                _ => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((hdr, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let [op, dom_sel, klen, vlen] = *hdr;
    let op = OPS[op as usize % OPS.len()];
    let klen = (klen as usize % 32).min(rest.len());
    let (key, rest) = rest.split_at(klen);
    let vlen = (vlen as usize % 64).min(rest.len());
    let (value, input) = rest.split_at(vlen);
    let key = String::from_utf8_lossy(key).into_owned();
    let value = String::from_utf8_lossy(value).into_owned();

    // 1. Any bytes: no panic; a document that parses saves byte-identical.
    let Ok(mut doc) = Document::parse(input.to_vec()) else {
        return;
    };
    assert!(
        doc.to_bytes() == input,
        "unmodified document does not save byte-identical"
    );
    assert!(!doc.is_modified());
    let before = snapshot(&doc); // parses every domain
    assert!(
        doc.to_bytes() == input,
        "parsing the domains changed the saved bytes"
    );
    assert!(!doc.is_modified());

    if !key_ok(op, &key) || !value_ok(&value) {
        return;
    }
    let ids = doc.domains();
    let pos = (!ids.is_empty()).then(|| dom_sel as usize % ids.len());
    let dom = pos.map(|p| ids[p]);
    if !apply(&mut doc, op, dom, &key, &value) {
        return;
    }
    let g_before = globals(&doc);
    let after_mut = snapshot(&doc);
    check_visible(&doc, op, dom, &key, &value);

    // 2. The saved bytes parse again and read as the mutated document.
    let saved = doc.to_bytes();
    assert!(doc.to_bytes() == saved, "to_bytes is not deterministic");
    let mut doc2 = Document::parse(saved.clone()).unwrap_or_else(|e| {
        panic!(
            "mutated document does not reparse: {e}\n{}",
            String::from_utf8_lossy(&saved)
        )
    });
    assert!(doc2.to_bytes() == saved);
    let ids2 = doc2.domains();
    assert_eq!(ids.len(), ids2.len(), "number of domains changed");
    let dom2 = pos.map(|p| ids2[p]);
    check_visible(&doc2, op, dom2, &key, &value);
    let reread = snapshot(&doc2);
    for (i, (a, b)) in after_mut.iter().zip(&reread).enumerate() {
        if let Some(a) = a {
            assert_eq!(
                Some(a),
                b.as_ref(),
                "domain #{i} reads differently after save"
            );
        }
    }
    assert_eq!(
        g_before,
        globals(&doc2),
        "global sections read differently after save"
    );
    let _ = before;

    // 3. Fixed point: the same mutation on the reparsed document saves the same bytes.
    assert!(apply(&mut doc2, op, dom2, &key, &value));
    let again = doc2.to_bytes();
    assert!(
        again == saved,
        "second save differs:\n--- first\n{}\n--- second\n{}",
        String::from_utf8_lossy(&saved),
        String::from_utf8_lossy(&again)
    );
});
