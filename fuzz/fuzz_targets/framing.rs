//! Fuzz target `framing`: the byte-level parsers and validators that see untrusted bytes before
//! any handler: socket framing, the exec-service request, VM references and names, label
//! names/colours, tags, feature names, notes sanitising, event frames and event-log records.
//!
//! Input: `<selector> <bytes...>`; the selector picks the parser, the bytes are its input.
//! Besides "no panic", each parser's own contract is checked (see the asserts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qubes_admin::events::{self, Event, Parsed};
use qubes_admin::wire::vm_ref::{self, VmRef};
use qubes_admin::wire::{self, Target};
use qubes_admin::{model::notes_sanitize, wire::names};

fn socket(b: &[u8]) {
    let Ok(r) = wire::parse_socket_request(b) else {
        return;
    };
    assert!(b.len() <= wire::MAX_REQUEST);
    assert!(!r.method.contains(&b'+'), "method keeps a '+'");
    for f in [&r.method, &r.arg, &r.src] {
        assert!(!f.contains(&0) && !f.contains(&b' '));
    }
    // Re-framing the parsed request gives the same request back.
    let (tt, dest): (&[u8], &[u8]) = match &r.target {
        Target::Name(n) => (b"name", n),
        Target::Keyword(k) => (b"keyword", k),
    };
    let mut again = r.method.clone();
    again.push(b'+');
    again.extend_from_slice(&r.arg);
    for x in [&r.src[..], tt, dest] {
        again.push(b' ');
        again.extend_from_slice(x);
    }
    again.push(0);
    again.extend_from_slice(&r.payload);
    if again.len() <= wire::MAX_REQUEST {
        let r2 = wire::parse_socket_request(&again).unwrap();
        assert_eq!(r, r2);
    }
}

fn exec(b: &[u8]) {
    // Fields as NUL-free environment values, split at 0x1F; the rest is the payload.
    let mut it = b.splitn(5, |&c| c == 0x1F);
    let mut next = || {
        let f = it.next().unwrap_or_default();
        f.iter().position(|&c| c == 0).map_or(f, |i| &f[..i])
    };
    let (service, remote, ttype, target) = (next(), next(), next(), next());
    let payload = it.next().unwrap_or_default().to_vec();
    let ttype = (!ttype.is_empty()).then_some(ttype);
    if let Ok(r) = wire::from_exec_env(service, remote, ttype, Some(target), Some(target), payload)
    {
        let (m, a) = wire::split_service(service);
        assert_eq!((r.method, r.arg, r.src), (m, a, remote.to_vec()));
    }
}

fn vm_ref(b: &[u8]) {
    match vm_ref::parse_vm_ref(b) {
        Ok(VmRef::Name(n)) => {
            assert_eq!(n.as_bytes(), b);
            assert!(names::validate_vm_name(&n).is_ok());
            assert!(n.len() < 32 && n.is_ascii());
        }
        Ok(VmRef::Uuid { uuid, text }) => {
            assert_eq!(text.as_bytes(), b);
            assert_eq!(uuid.len(), 36);
            assert_eq!(vm_ref::parse_uuid(&uuid).as_deref(), Some(uuid.as_str()));
        }
        Err(e) => assert!(!e.msg.is_empty()),
    }
    if let Ok(s) = std::str::from_utf8(b) {
        if let Some(u) = vm_ref::parse_uuid(s) {
            assert!(u.eq_ignore_ascii_case(s));
            assert!(!u.bytes().any(|c| c.is_ascii_uppercase()));
        }
    }
}

fn validators(b: &[u8]) {
    let Ok(s) = std::str::from_utf8(b) else {
        return;
    };
    let _ = names::validate_label_name(s, true);
    let _ = names::validate_label_name(s, false);
    if names::validate_tag(s).is_ok() {
        assert!(!s.is_empty() && s.is_ascii());
    }
    if names::is_valid_feature_name(s) {
        assert!(!s.is_empty());
    }
}

fn label_color(b: &[u8]) {
    if let Ok(c) = names::validate_label_color(b) {
        assert_eq!(c.len(), 8);
        assert!(c.starts_with("0x"));
        assert_eq!(
            names::validate_label_color(c.as_bytes()).ok(),
            Some(c.clone())
        );
    }
}

fn notes(b: &[u8]) {
    match notes_sanitize::sanitise(b) {
        Ok(text) => {
            assert!(std::str::from_utf8(b).is_ok());
            // Sanitising is idempotent.
            assert_eq!(
                notes_sanitize::sanitise(text.as_bytes()).ok(),
                Some(text.clone())
            );
        }
        Err(e) => {
            assert!(std::str::from_utf8(b).is_err());
            assert!(!e.is_empty());
        }
    }
}

fn event_frame(b: &[u8]) {
    if let Some(ev) = Event::from_frame(b) {
        assert_eq!(ev.frame(), b, "frame(from_frame(x)) != x");
    }
    // The other direction, for an event built from the bytes (NUL-free fields).
    let text = String::from_utf8_lossy(b).replace('\0', "");
    let mut parts = text.split('\u{1f}');
    let subject = parts.next().unwrap_or_default();
    let name = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let kwargs = rest
        .chunks_exact(2)
        .map(|kv| (kv[0].to_string(), kv[1].to_string()))
        .collect();
    let ev = Event::new(subject, name, kwargs);
    assert_eq!(Event::from_frame(&ev.frame()), Some(ev));
}

fn log_records(b: &[u8]) {
    match events::parse_record(b) {
        Parsed::Record { len, frame, .. } => {
            assert!(len <= b.len() && len > 0);
            assert!(frame.len() < len);
        }
        Parsed::Incomplete | Parsed::Bad(_) => {}
    }
    if let Ok((recs, end)) = events::parse_records(b, 7) {
        assert!(end >= 7 && end - 7 <= b.len() as u64);
        let mut last = 7;
        for (_, _, off) in recs {
            assert!(off >= last && off < end);
            last = off;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, b)) = data.split_first() else {
        return;
    };
    match sel % 8 {
        0 => socket(b),
        1 => exec(b),
        2 => vm_ref(b),
        3 => validators(b),
        4 => label_color(b),
        5 => notes(b),
        6 => event_frame(b),
        _ => log_records(b),
    }
});
