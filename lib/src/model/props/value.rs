//! Typed property values, Set payload sanitizing (§4.2) and parsing of stored text.

use super::defs::PropType;
use crate::error::ApiError;
pub use crate::wire::python::repr as py_repr;

/// A property value as the reference holds it after loading/assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    None,
    Bool(bool),
    Int(i64),
    /// Text, including IPs, UUIDs, pools and labels (by name), already in canonical form.
    Text(String),
    /// A qube, by name.
    Vm(String),
}

impl Val {
    /// Python `str(value)`, as used in events (`None` for None).
    pub fn py_str(&self) -> String {
        match self {
            Val::None => "None".to_string(),
            Val::Bool(true) => "True".to_string(),
            Val::Bool(false) => "False".to_string(),
            Val::Int(i) => i.to_string(),
            Val::Text(s) | Val::Vm(s) => s.clone(),
        }
    }

    /// Reply rendering: like [`Val::py_str`] but None is empty.
    pub fn reply_str(&self) -> String {
        match self {
            Val::None => String::new(),
            v => v.py_str(),
        }
    }

    /// How the value is written to qubes.xml (None as empty text).
    pub fn stored_text(&self) -> String {
        self.reply_str()
    }

    /// Python truthiness.
    pub fn truthy(&self) -> bool {
        match self {
            Val::None => false,
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Text(s) => !s.is_empty(),
            Val::Vm(_) => true,
        }
    }

    /// The qube name if VM-valued.
    pub fn vm(&self) -> Option<&str> {
        match self {
            Val::Vm(n) => Some(n),
            _ => None,
        }
    }
}

/// Python `int(str)` (see [`crate::wire::python::int`]).
fn py_int(text: &str) -> Option<i64> {
    crate::wire::python::int(text, 10)
}

/// `qubes.property.bool` on text.
pub fn py_bool(text: &str) -> Result<bool, ApiError> {
    match text.to_ascii_lowercase().as_str() {
        "0" | "no" | "false" | "off" => Ok(false),
        "1" | "yes" | "true" | "on" => Ok(true),
        _ => Err(ApiError::value(format!(
            "Invalid literal for boolean property: {}",
            py_repr(text)
        ))),
    }
}

/// `uuid.UUID(text)`: braces, `urn:uuid:` and hyphens are accepted; canonical lowercase out.
pub fn py_uuid(text: &str) -> Option<String> {
    let t = text.replace("urn:", "").replace("uuid:", "");
    let t = t.trim_matches(|c| c == '{' || c == '}').replace('-', "");
    if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let t = t.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        t.get(0..8)?,
        t.get(8..12)?,
        t.get(12..16)?,
        t.get(16..20)?,
        t.get(20..32)?
    ))
}

/// `ipaddress.IPv4Address(text)` canonical text.
pub fn py_ipv4(text: &str) -> Option<String> {
    text.parse::<std::net::Ipv4Addr>()
        .ok()
        .map(|a| a.to_string())
}

/// `ipaddress.IPv6Address(text)` canonical (compressed) text.
pub fn py_ipv6(text: &str) -> Option<String> {
    text.parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|a| a.to_string())
}

/// Python's `string.printable`.
fn printable(b: u8) -> bool {
    b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The sanitized payload of a Set: what the reference hands to `setattr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sanitized {
    /// A VM name, or empty for None.
    VmName(String),
    Bool(bool),
    Int(i64),
    /// Text (for str/untyped/label) or the canonical form of an IP/UUID.
    Text(String),
}

impl Sanitized {
    /// Python `str()` of the sanitized value.
    pub fn py_str(&self) -> String {
        match self {
            Sanitized::VmName(s) | Sanitized::Text(s) => s.clone(),
            Sanitized::Bool(b) => if *b { "True" } else { "False" }.to_string(),
            Sanitized::Int(i) => i.to_string(),
        }
    }
}

/// §4.2: sanitize a Set payload by the declared type.
pub fn sanitize(ty: PropType, payload: &[u8]) -> Result<Sanitized, ApiError> {
    let ascii = std::str::from_utf8(payload).ok().filter(|s| s.is_ascii());
    if let PropType::Vm(..) = ty {
        // The reference raises QubesValueError() with no message here.
        let name = ascii.ok_or_else(|| ApiError::value(""))?;
        if !name.is_empty() {
            crate::wire::names::validate_vm_name(name)?;
        }
        return Ok(Sanitized::VmName(name.to_string()));
    }
    let text = ascii.ok_or_else(|| ApiError::value("Non-ASCII bytes in property value"))?;
    let parse_err = |t: &str| ApiError::value(format!("Failed to parse property value as {t}"));
    match ty {
        PropType::Bool => py_bool(text).map(Sanitized::Bool),
        PropType::Int => py_int(text)
            .map(Sanitized::Int)
            .ok_or_else(|| parse_err("int")),
        PropType::Ipv4 => py_ipv4(text)
            .map(Sanitized::Text)
            .ok_or_else(|| parse_err("IPv4Address")),
        PropType::Ipv6 => py_ipv6(text)
            .map(Sanitized::Text)
            .ok_or_else(|| parse_err("IPv6Address")),
        PropType::Uuid => py_uuid(text)
            .map(Sanitized::Text)
            .ok_or_else(|| parse_err("UUID")),
        _ => {
            if text.bytes().all(printable) {
                Ok(Sanitized::Text(text.to_string()))
            } else {
                Err(ApiError::value("Invalid characters in property value"))
            }
        }
    }
}

/// Interprets stored qubes.xml text the way loading does (type coercion), for display.
pub fn parse_stored(ty: PropType, text: &str) -> Val {
    match ty {
        PropType::Vm(..) if text.is_empty() => Val::None,
        PropType::Vm(..) => Val::Vm(text.to_string()),
        PropType::Bool => py_bool(text).map_or_else(|_| Val::Text(text.to_string()), Val::Bool),
        PropType::Int => py_int(text).map_or_else(|| Val::Text(text.to_string()), Val::Int),
        PropType::Ipv4 => Val::Text(py_ipv4(text).unwrap_or_else(|| text.to_string())),
        PropType::Ipv6 => Val::Text(py_ipv6(text).unwrap_or_else(|| text.to_string())),
        PropType::Uuid => Val::Text(py_uuid(text).unwrap_or_else(|| text.to_string())),
        _ => Val::Text(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::props::defs::VmReq;

    #[test]
    fn python_int_leniency() {
        assert_eq!(py_int(" 5\n"), Some(5));
        assert_eq!(py_int("+3"), Some(3));
        assert_eq!(py_int("-3"), Some(-3));
        assert_eq!(py_int("1_000"), Some(1000));
        assert_eq!(py_int("007"), Some(7));
        assert_eq!(py_int("1__0"), None);
        assert_eq!(py_int("_1"), None);
        assert_eq!(py_int("1_"), None);
        assert_eq!(py_int(""), None);
        assert_eq!(py_int("+"), None);
        assert_eq!(py_int("fourty two"), None);
        assert_eq!(py_int("1 2"), None);
    }

    #[test]
    fn sanitizing_messages() {
        let msg = |t, p: &[u8]| sanitize(t, p).unwrap_err().msg;
        assert_eq!(
            msg(PropType::Int, b"fourty two"),
            "Failed to parse property value as int"
        );
        assert_eq!(
            msg(PropType::Bool, b"some string"),
            "Invalid literal for boolean property: 'some string'"
        );
        assert_eq!(
            msg(PropType::Bool, b" true"),
            "Invalid literal for boolean property: ' true'"
        );
        assert_eq!(
            msg(PropType::Str, "ö".as_bytes()),
            "Non-ASCII bytes in property value"
        );
        assert_eq!(
            msg(PropType::Str, b"a\x01"),
            "Invalid characters in property value"
        );
        assert_eq!(msg(PropType::Vm(VmReq::Local, true), b"\x80\x90\xa0"), "");
        assert_eq!(
            msg(PropType::Vm(VmReq::Local, true), b"forbidden-chars/../!"),
            "VM name contains illegal characters"
        );
        assert_eq!(
            msg(PropType::Ipv4, b"1.2.3"),
            "Failed to parse property value as IPv4Address"
        );
        assert_eq!(
            msg(PropType::Uuid, b"x"),
            "Failed to parse property value as UUID"
        );
        assert_eq!(
            sanitize(PropType::Bool, b"On").unwrap(),
            Sanitized::Bool(true)
        );
        assert_eq!(
            sanitize(PropType::Int, b" 007\n").unwrap(),
            Sanitized::Int(7)
        );
        assert_eq!(
            sanitize(PropType::Str, b"opt1\nopt2\t").unwrap(),
            Sanitized::Text("opt1\nopt2\t".into())
        );
        assert_eq!(
            sanitize(PropType::Vm(VmReq::Local, true), b"").unwrap(),
            Sanitized::VmName(String::new())
        );
        assert_eq!(
            sanitize(PropType::Uuid, b"{9B810E76-6EC9-4286-A3CA-828DD5F4B3B2}").unwrap(),
            Sanitized::Text("9b810e76-6ec9-4286-a3ca-828dd5f4b3b2".into())
        );
    }
}

/// Property tests (quickcheck): the Set sanitizers against independent models of the Python
/// the reference runs (`int()`, `qubes.property.bool`, `uuid.UUID()`, `string.printable`), and a
/// store round trip through `System::call` (Set, then Get, then reopen).
#[cfg(test)]
mod properties {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use quickcheck::{Arbitrary, Gen, QuickCheck};

    /// Short strings over the characters that matter to the parsers.
    #[derive(Debug, Clone)]
    struct Text(String);

    impl Arbitrary for Text {
        fn arbitrary(g: &mut Gen) -> Self {
            const P: &[&str] = &[
                "0",
                "1",
                "5",
                "9",
                "_",
                "__",
                "-",
                "+",
                " ",
                "\t",
                "\n",
                "\x0b",
                "\x1c",
                "e",
                "x",
                "a",
                "F",
                "{",
                "}",
                "urn:",
                "uuid:",
                "yes",
                "No",
                "TRUE",
                "off",
                "On",
                "0x",
                "9b810e76",
                "6ec9",
                "4286",
                "a3ca",
                "828dd5f4b3b2",
                "\u{663}",
                "é",
                ".",
            ];
            let n = usize::arbitrary(g) % 8;
            Text((0..n).map(|_| *g.choose(P).unwrap()).collect())
        }
        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            Box::new(self.0.shrink().map(Text))
        }
    }

    fn qc() -> QuickCheck {
        QuickCheck::new().tests(3000)
    }

    /// Python `int(s)` for ASCII text (None = ValueError), as arbitrary precision, then the
    /// project's i64 bound (values outside it are refused, see [`py_int`]).
    fn int_oracle(s: &str) -> Option<i64> {
        if !s.is_ascii() {
            return None;
        }
        let t = s.trim_matches(|c: char| " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f".contains(c));
        let (sign, body) = match t.chars().next() {
            Some('-') => (-1i128, &t[1..]),
            Some('+') => (1, &t[1..]),
            _ => (1, t),
        };
        // digits, single underscores only between digits
        let mut prev_digit = false;
        let mut digits = String::new();
        for c in body.chars() {
            match c {
                '0'..='9' => {
                    prev_digit = true;
                    digits.push(c);
                }
                '_' if prev_digit => prev_digit = false,
                _ => return None,
            }
        }
        if digits.is_empty() || !prev_digit {
            return None;
        }
        let v: i128 = digits.parse().ok()?;
        i64::try_from(sign * v).ok()
    }

    #[test]
    fn qc_int_matches_python() {
        fn prop(t: Text) -> bool {
            py_int(&t.0) == int_oracle(&t.0)
        }
        qc().quickcheck(prop as fn(Text) -> bool);
        // the boundary, exactly
        assert_eq!(py_int("9223372036854775807"), Some(i64::MAX));
        assert_eq!(py_int("-9223372036854775807"), Some(-i64::MAX));
        assert_eq!(py_int("9223372036854775808"), None);
    }

    #[test]
    fn qc_bool_matches_the_reference() {
        fn prop(t: Text) -> bool {
            let l = t.0.to_lowercase();
            let want = if ["0", "no", "false", "off"].contains(&l.as_str()) && t.0.is_ascii() {
                Some(false)
            } else if ["1", "yes", "true", "on"].contains(&l.as_str()) && t.0.is_ascii() {
                Some(true)
            } else {
                None
            };
            match (want, py_bool(&t.0)) {
                (Some(a), Ok(b)) => a == b,
                (None, Err(e)) => {
                    e.msg == format!("Invalid literal for boolean property: {}", py_repr(&t.0))
                }
                _ => false,
            }
        }
        qc().quickcheck(prop as fn(Text) -> bool);
    }

    /// `uuid.UUID(s)`: drop `urn:` and `uuid:`, `strip('{}')` (either brace at either end),
    /// drop hyphens, 32 hex.
    fn uuid_oracle(s: &str) -> Option<String> {
        let h = s.replace("urn:", "").replace("uuid:", "");
        let h = h.trim_matches(['{', '}']).replace('-', "");
        (h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit())).then(|| {
            let h = h.to_lowercase();
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        })
    }

    #[test]
    fn qc_uuid_matches_python() {
        fn prop(t: Text) -> bool {
            py_uuid(&t.0) == uuid_oracle(&t.0)
        }
        qc().quickcheck(prop as fn(Text) -> bool);
        assert!(py_uuid("urn:uuid:{9b810e76-6ec9-4286-a3ca-828dd5f4b3b2}").is_some());
        // Found by this property (the oracle once stripped only `{` at the start): Python's
        // strip('{}') also takes a trailing `{`.
        assert_eq!(
            py_uuid("00000000000000000000000000000000{").as_deref(),
            Some("00000000-0000-0000-0000-000000000000")
        );
    }

    #[test]
    fn qc_sanitize_is_total_and_typed() {
        fn prop(b: Vec<u8>, t: Text) -> bool {
            use crate::model::props::defs::VmReq;
            let mut ok = true;
            for payload in [b.as_slice(), t.0.as_bytes()] {
                for ty in [
                    PropType::Bool,
                    PropType::Int,
                    PropType::Str,
                    PropType::Uuid,
                    PropType::Ipv4,
                    PropType::Ipv6,
                    PropType::Vm(VmReq::Local, true),
                ] {
                    let r = sanitize(ty, payload);
                    let ascii = std::str::from_utf8(payload).ok().filter(|s| s.is_ascii());
                    ok &= match (&r, ascii) {
                        (Ok(_), None) => false,
                        (Ok(Sanitized::Int(i)), Some(s)) => int_oracle(s) == Some(*i),
                        (Ok(Sanitized::Text(v)), Some(s)) if ty == PropType::Str => v == s,
                        (Err(e), _) => e.ty == crate::error::ExcType::QubesValueError,
                        _ => true,
                    };
                }
            }
            ok
        }
        qc().quickcheck(prop as fn(Vec<u8>, Text) -> bool);
    }

    /// Python `string.printable` text with some non-ASCII.
    #[derive(Debug, Clone)]
    struct Printable(Vec<u8>);

    impl Arbitrary for Printable {
        fn arbitrary(g: &mut Gen) -> Self {
            const P: &[&[u8]] = &[
                b"a",
                b"Z",
                b"0",
                b" ",
                b"\t",
                b"\n",
                b"\r",
                b"\\",
                b"&",
                b"<",
                b">",
                b"\"",
                b"'",
                b"]]>",
                b"=",
                b"x y",
                b"\xc3\xa9",
                b"\x01",
                b"\x0b",
            ];
            let n = usize::arbitrary(g) % 16;
            Printable((0..n).flat_map(|_| g.choose(P).unwrap().to_vec()).collect())
        }
        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            Box::new(self.0.shrink().map(Printable))
        }
    }

    /// Store round trip: Set a str property through the API, read it back (cached and after a
    /// fresh open), and the GetAll escaping holds; refused values leave qubes.xml untouched.
    #[test]
    fn qc_str_property_store_round_trip() {
        use crate::wire::{RawRequest, Target};
        let dir = tempfile::tempdir().unwrap();
        let config = crate::sandbox::init(&dir.path().join("sb")).unwrap();
        let hv = || {
            Box::new(crate::runtime::Offline {
                host: crate::runtime::HostInfo {
                    memory_mib: 4096,
                    cpus: 4,
                },
            })
        };
        let xml = config.xml_path.clone();
        let sys = std::cell::RefCell::new(crate::System::with_hypervisor(config.clone(), hv()));
        let req = |method: &str, payload: &[u8]| RawRequest {
            method: method.as_bytes().to_vec(),
            arg: b"kernelopts".to_vec(),
            src: b"dom0".to_vec(),
            target: Target::Name(b"work".to_vec()),
            payload: payload.to_vec(),
        };
        let prop = |p: Printable| -> bool {
            let before = std::fs::read(&xml).unwrap();
            let set = sys.borrow_mut().call(&req("admin.vm.property.Set", &p.0));
            let valid = p.0.is_ascii() && p.0.iter().all(|&b| printable(b)) && p.0.len() <= 512;
            if !valid {
                return set.starts_with(b"2\0QubesValueError\0")
                    && std::fs::read(&xml).unwrap() == before;
            }
            if set != b"0\0" {
                return false;
            }
            let want = [b"0\0default=False type=str ".as_slice(), &p.0].concat();
            let got = sys.borrow_mut().call(&req("admin.vm.property.Get", b""));
            let mut fresh = crate::System::with_hypervisor(config.clone(), hv());
            let got2 = fresh.call(&req("admin.vm.property.Get", b""));
            got == want && got2 == want
        };
        let mut g = Gen::new(30);
        for _ in 0..150 {
            let p = Printable::arbitrary(&mut g);
            assert!(
                prop(p.clone()),
                "round trip failed for {:?}",
                String::from_utf8_lossy(&p.0)
            );
        }
    }
}
