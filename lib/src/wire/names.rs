//! Validators for names that arrive from callers: VM names, label names and colours, tags,
//! feature names. Messages are the reference's.

use crate::error::{ApiError, ExcType};

/// `validate_name`: the VM-name rules (all `QubesValueError`).
pub fn validate_vm_name(name: &str) -> Result<(), ApiError> {
    if name.len() > 31 {
        return Err(ApiError::value(
            "VM name must be shorter than 32 characters",
        ));
    }
    let first = name.bytes().next();
    if matches!(first, Some(b'0'..=b'9' | b'_' | b'.' | b'-')) {
        return Err(ApiError::value(
            "VM name cannot start with hyphen, underscore, dot or numbers",
        ));
    }
    let ok_first = matches!(first, Some(b'a'..=b'z' | b'A'..=b'Z'));
    let ok_rest = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok_first || !ok_rest {
        return Err(ApiError::value("VM name contains illegal characters"));
    }
    if name == "Domain-0" {
        return Err(ApiError::value("VM name cannot be 'Domain-0'"));
    }
    if name == "none" || name == "default" {
        return Err(ApiError::value("VM name cannot be 'none' nor 'default'"));
    }
    if name.ends_with("-dm") {
        return Err(ApiError::value("VM name cannot end with -dm"));
    }
    Ok(())
}

const LABEL_SAFE: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";

/// Label-name rules; `creation` additionally refuses digit-only names.
pub fn validate_label_name(name: &str, creation: bool) -> Result<(), ApiError> {
    let err = |m: &str| ApiError::new(ExcType::QubesInvalidLabelError, m);
    if name.is_empty() {
        return Err(err("Label name must be set"));
    }
    if creation && name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("Label must not be a digit"));
    }
    if !name.bytes().all(|b| LABEL_SAFE.as_bytes().contains(&b)) {
        return Err(err(&format!("Label must be in safe set: {LABEL_SAFE}")));
    }
    Ok(())
}

/// Label colour (`label.Create` payload): returns the validated, stripped `0xRRGGBB` text.
pub fn validate_label_color(payload: &[u8]) -> Result<String, ApiError> {
    let err = |m: &str| ApiError::new(ExcType::QubesInvalidLabelValueError, m);
    if payload.is_empty() {
        return Err(err("Label value must be set"));
    }
    let text = std::str::from_utf8(payload)
        .ok()
        .filter(|s| s.is_ascii())
        .ok_or_else(|| err("Label value must be encoded in ASCII"))?;
    let v = crate::wire::python::strip(text);
    if v.len() != 8 {
        return Err(err("Label value must have length of 8"));
    }
    let Some(hex) = v.strip_prefix("0x") else {
        return Err(err("Label value must start with: 0x"));
    };
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(
            "Label value must only contain hexadecimal digits after prefix: 0123456789abcdefABCDEF",
        ));
    }
    Ok(v.to_string())
}

/// Tag rules (`validate_tag`).
pub fn validate_tag(tag: &str) -> Result<(), ApiError> {
    if tag.is_empty() {
        return Err(ApiError::new(
            ExcType::QubesInvalidTagError,
            "tag cannot be empty",
        ));
    }
    if !tag
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::new(
            ExcType::QubesInvalidTagError,
            "disallowed characters",
        ));
    }
    Ok(())
}

/// Feature names accepted by `admin.vm.feature.Set`: `\A[a-zA-Z0-9_.-]+\Z`.
pub fn is_valid_feature_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_names() {
        assert!(validate_vm_name("work").is_ok());
        assert!(validate_vm_name("a.b-c_d9").is_ok());
        let msg = |n: &str| validate_vm_name(n).unwrap_err().msg;
        assert_eq!(
            msg(".test"),
            "VM name cannot start with hyphen, underscore, dot or numbers"
        );
        assert_eq!(msg(""), "VM name contains illegal characters");
        assert_eq!(
            msg(&"a".repeat(32)),
            "VM name must be shorter than 32 characters"
        );
        assert!(validate_vm_name(&"a".repeat(31)).is_ok());
        assert_eq!(msg("test-###"), "VM name contains illegal characters");
        assert_eq!(msg("Domain-0"), "VM name cannot be 'Domain-0'");
        assert_eq!(msg("default"), "VM name cannot be 'none' nor 'default'");
        assert_eq!(msg("x-dm"), "VM name cannot end with -dm");
    }

    #[test]
    fn labels_and_tags() {
        assert!(validate_label_name("01", false).is_ok());
        assert_eq!(
            validate_label_name("01", true).unwrap_err().msg,
            "Label must not be a digit"
        );
        assert!(validate_label_name("../xxx", false).is_err());
        assert_eq!(validate_label_color(b" 0x00ffff\n").unwrap(), "0x00ffff");
        assert_eq!(
            validate_label_color(b"0X00ffff").unwrap_err().msg,
            "Label value must start with: 0x"
        );
        assert_eq!(
            validate_label_color(b"0x00fffff").unwrap_err().msg,
            "Label value must have length of 8"
        );
        assert_eq!(
            validate_label_color("ö".as_bytes()).unwrap_err().msg,
            "Label value must be encoded in ASCII"
        );
        assert!(validate_tag("created-by-dom0").is_ok());
        assert_eq!(
            validate_tag(".some-tag").unwrap_err().ty,
            ExcType::QubesInvalidTagError
        );
        assert!(is_valid_feature_name("service.x-y_z"));
        assert!(!is_valid_feature_name(" "));
    }
}

/// Property tests (quickcheck): each validator against an independent oracle written from the
/// reference's rules (`qubes/vm/__init__.py` `validate_name`, `qubes/utils.py`
/// `validate_label_name`/`validate_label_value`, `qubes/vm/mix/tags.py` `validate_tag`, the
/// `\A[a-zA-Z0-9_.-]+\Z` feature-name regex), plus "any request bytes get a well-formed frame".
#[cfg(test)]
mod properties {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use quickcheck::{Arbitrary, Gen, QuickCheck};

    /// Short strings over an alphabet where every character class the rules distinguish is
    /// likely, with reserved words and the `-dm` suffix mixed in.
    #[derive(Debug, Clone)]
    struct Name(String);

    const ALPHABET: &[&str] = &[
        "a", "Z", "q", "0", "9", "_", ".", "-", "/", " ", ":", "+", "@", "\t", "\n", "\0", "é",
        "\u{7f}", "none", "default", "Domain-0", "-dm", "dm", "dom0", "..", "../", "uuid:", "0x",
        "f", "A",
    ];

    impl Arbitrary for Name {
        fn arbitrary(g: &mut Gen) -> Self {
            let n = usize::arbitrary(g) % 12;
            let mut s: String = (0..n).map(|_| *g.choose(ALPHABET).unwrap()).collect();
            if bool::arbitrary(g) && bool::arbitrary(g) {
                // lengths around the 31/32 boundary
                let len = 28 + usize::arbitrary(g) % 8;
                s = "v".repeat(len.saturating_sub(s.len())) + &s;
            }
            Name(s)
        }
        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            Box::new(self.0.shrink().map(Name))
        }
    }

    fn qc() -> QuickCheck {
        QuickCheck::new().tests(2000)
    }

    /// The reference's `validate_name`, rule by rule, in its order.
    fn vm_name_oracle(name: &str) -> Result<(), &'static str> {
        let chars: Vec<char> = name.chars().collect();
        if name.len() > 31 {
            return Err("VM name must be shorter than 32 characters");
        }
        if let Some(c) = chars.first() {
            if c.is_ascii_digit() || "_.-".contains(*c) {
                return Err("VM name cannot start with hyphen, underscore, dot or numbers");
            }
        }
        // re.match(r'\A[a-zA-Z][a-zA-Z0-9_.-]*\Z', name)
        let regex = chars.first().is_some_and(char::is_ascii_alphabetic)
            && chars
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c));
        if !regex {
            return Err("VM name contains illegal characters");
        }
        if name == "Domain-0" {
            return Err("VM name cannot be 'Domain-0'");
        }
        if ["none", "default"].contains(&name) {
            return Err("VM name cannot be 'none' nor 'default'");
        }
        if name.ends_with("-dm") {
            return Err("VM name cannot end with -dm");
        }
        Ok(())
    }

    #[test]
    fn qc_vm_names_match_the_reference_rules() {
        fn prop(n: Name) -> bool {
            let got = validate_vm_name(&n.0);
            match (vm_name_oracle(&n.0), got) {
                (Ok(()), Ok(())) => true,
                (Err(m), Err(e)) => e.ty == ExcType::QubesValueError && e.msg == m,
                _ => false,
            }
        }
        qc().quickcheck(prop as fn(Name) -> bool);
    }

    #[test]
    fn qc_tags_match_the_reference_rules() {
        fn prop(n: Name) -> bool {
            let oracle = if n.0.is_empty() {
                Err("tag cannot be empty")
            } else if n
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                Ok(())
            } else {
                Err("disallowed characters")
            };
            match (oracle, validate_tag(&n.0)) {
                (Ok(()), Ok(())) => true,
                (Err(m), Err(e)) => e.ty == ExcType::QubesInvalidTagError && e.msg == m,
                _ => false,
            }
        }
        qc().quickcheck(prop as fn(Name) -> bool);
    }

    #[test]
    fn qc_feature_names_match_the_regex() {
        fn prop(n: Name) -> bool {
            let oracle = !n.0.is_empty()
                && n.0
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            is_valid_feature_name(&n.0) == oracle
        }
        qc().quickcheck(prop as fn(Name) -> bool);
    }

    #[test]
    fn qc_label_names_match_the_reference_rules() {
        fn prop(n: Name, creation: bool) -> bool {
            let safe = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
            let oracle = if n.0.is_empty() {
                Err("Label name must be set".to_string())
            } else if creation && n.0.chars().all(|c| c.is_ascii_digit()) {
                Err("Label must not be a digit".to_string())
            } else if !n.0.chars().all(safe) {
                Err(format!("Label must be in safe set: {LABEL_SAFE}"))
            } else {
                Ok(())
            };
            match (oracle, validate_label_name(&n.0, creation)) {
                (Ok(()), Ok(())) => true,
                (Err(m), Err(e)) => e.ty == ExcType::QubesInvalidLabelError && e.msg == m,
                _ => false,
            }
        }
        qc().quickcheck(prop as fn(Name, bool) -> bool);
    }

    /// Colour payloads: `0x` + hex, with whitespace, case and length mutations.
    #[derive(Debug, Clone)]
    struct Colour(Vec<u8>);

    impl Arbitrary for Colour {
        fn arbitrary(g: &mut Gen) -> Self {
            const PIECES: &[&[u8]] = &[
                b"0x",
                b"0X",
                b"0",
                b"x",
                b"f",
                b"F",
                b"9",
                b"g",
                b" ",
                b"\n",
                b"\t",
                b"\x0b",
                b"\x1c",
                b"\x85",
                b"\xc3\xa9",
                b"\0",
                b"#",
            ];
            let mut v = Vec::new();
            if bool::arbitrary(g) {
                v.extend_from_slice(b"0x");
            }
            for _ in 0..usize::arbitrary(g) % 10 {
                v.extend_from_slice(g.choose(PIECES).unwrap());
            }
            Colour(v)
        }
        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            Box::new(self.0.shrink().map(Colour))
        }
    }

    /// `validate_label_value` as Python runs it: ASCII decode, `str.strip()` (ASCII whitespace
    /// plus \x1c-\x1f), length 8, `0x` prefix, hex digits.
    fn colour_oracle(b: &[u8]) -> Result<String, &'static str> {
        if b.is_empty() {
            return Err("Label value must be set");
        }
        if !b.is_ascii() {
            return Err("Label value must be encoded in ASCII");
        }
        let py_space =
            |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1f);
        let start = b.iter().position(|c| !py_space(c)).unwrap_or(b.len());
        let end = b
            .iter()
            .rposition(|c| !py_space(c))
            .map_or(start, |i| i + 1);
        let v = &b[start..end.max(start)];
        if v.len() != 8 {
            return Err("Label value must have length of 8");
        }
        if !v.starts_with(b"0x") {
            return Err("Label value must start with: 0x");
        }
        if !v[2..].iter().all(u8::is_ascii_hexdigit) {
            return Err("Label value must only contain hexadecimal digits after prefix: 0123456789abcdefABCDEF");
        }
        Ok(String::from_utf8(v.to_vec()).unwrap())
    }

    #[test]
    fn qc_label_colours_match_python() {
        fn prop(c: Colour) -> bool {
            match (colour_oracle(&c.0), validate_label_color(&c.0)) {
                (Ok(a), Ok(b)) => a == b,
                (Err(m), Err(e)) => e.ty == ExcType::QubesInvalidLabelValueError && e.msg == m,
                _ => false,
            }
        }
        qc().quickcheck(prop as fn(Colour) -> bool);
    }

    /// Requests assembled from plausible and hostile pieces, in socket framing.
    #[derive(Debug, Clone)]
    struct Request(Vec<u8>);

    impl Arbitrary for Request {
        fn arbitrary(g: &mut Gen) -> Self {
            let methods: Vec<&str> = crate::api::METHODS.iter().map(|m| m.name).collect();
            const ARGS: &[&str] = &[
                "",
                "label",
                "netvm",
                "memory",
                "kernelopts",
                "red",
                "1",
                "myfeat",
                "created-by-dom0",
                "preload-dispvm",
                "../x",
                "a b",
                "é",
                "uuid",
                "name",
                "qid",
                "default_netvm",
            ];
            const VMS: &[&str] = &[
                "dom0",
                "work",
                "sys-net",
                "fedora-41",
                "nosuch",
                "",
                ".x",
                "none",
                "Domain-0",
                "uuid:00000000-0000-0000-0000-000000000000",
                "uuid:0",
                "é",
                "a b",
            ];
            const TYPES: &[&str] = &["name", "name", "name", "keyword", "other", ""];
            const PAYLOADS: &[&[u8]] = &[
                b"",
                b"",
                b"1",
                b"0",
                b"x",
                b"true",
                b"sys-net",
                b"",
                b"\0",
                b"0xff0000",
                b"\xc3\xa9",
                b" 5 ",
                b"-1",
                b"admin.vm.List+ dom0 name dom0\0",
            ];
            let mut v = Vec::new();
            let garbage = |g: &mut Gen| -> Vec<u8> {
                let n = usize::arbitrary(g) % 6;
                (0..n).map(|_| u8::arbitrary(g)).collect()
            };
            match u8::arbitrary(g) % 8 {
                0 => return Request(garbage(g)),
                1 => v.extend_from_slice(&garbage(g)),
                _ => v.extend_from_slice(g.choose(&methods).unwrap().as_bytes()),
            }
            if u8::arbitrary(g) % 8 != 0 {
                v.push(b'+');
            }
            v.extend_from_slice(g.choose(ARGS).unwrap().as_bytes());
            v.push(b' ');
            v.extend_from_slice(g.choose(VMS).unwrap().as_bytes());
            v.push(b' ');
            v.extend_from_slice(g.choose(TYPES).unwrap().as_bytes());
            v.push(b' ');
            v.extend_from_slice(if bool::arbitrary(g) {
                g.choose(VMS).unwrap().as_bytes()
            } else {
                b"adminvm"
            });
            if u8::arbitrary(g) % 10 != 0 {
                v.push(0);
            }
            v.extend_from_slice(g.choose(PAYLOADS).unwrap());
            if u8::arbitrary(g) % 10 == 0 {
                v.extend_from_slice(&garbage(g));
            }
            Request(v)
        }
        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            Box::new(self.0.shrink().map(Request))
        }
    }

    /// `0\0…`, or `2\0<Type>\0\0<message>\0` with an identifier Type and no NUL in the message.
    fn well_formed(reply: &[u8]) -> bool {
        if reply.starts_with(b"0\0") {
            return true;
        }
        let Some(rest) = reply.strip_prefix(b"2\0") else {
            return false;
        };
        let f: Vec<&[u8]> = rest.split(|&c| c == 0).collect();
        f.len() == 4
            && !f[0].is_empty()
            && f[0].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
            && f[1].is_empty()
            && f[3].is_empty()
            && std::str::from_utf8(f[2]).is_ok()
    }

    #[test]
    fn qc_any_request_bytes_get_a_well_formed_frame() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::sandbox::init(&dir.path().join("sb")).unwrap();
        let hv = crate::runtime::Offline {
            host: crate::runtime::HostInfo {
                memory_mib: 4096,
                cpus: 4,
            },
        };
        let sys = std::cell::RefCell::new(crate::System::with_hypervisor(config, Box::new(hv)));
        let prop = |r: Request| -> bool {
            let reply = match crate::wire::parse_socket_request(&r.0) {
                Ok(raw) => sys.borrow_mut().call(&raw),
                Err(e) => crate::wire::frame_exception(&e),
            };
            well_formed(&reply)
        };
        // quickcheck needs a fn pointer: run the closure over generated cases by hand.
        let mut g = Gen::new(40);
        for _ in 0..600 {
            let r = Request::arbitrary(&mut g);
            assert!(
                prop(r.clone()),
                "malformed reply for {:?}",
                String::from_utf8_lossy(&r.0)
            );
        }
        // and pure noise
        for _ in 0..400 {
            let r = Request(Vec::<u8>::arbitrary(&mut g));
            assert!(prop(r.clone()), "malformed reply for {:?}", r.0);
        }
    }
}
