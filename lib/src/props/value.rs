//! Typed property values, Set payload sanitizing (§4.2) and parsing of stored text.

use super::defs::PropType;
use crate::error::ApiError;

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

/// Python `repr()` of a str (quote choice and escapes as CPython does for ASCII).
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python `int(text)` in base 10: surrounding whitespace, one sign, `_` between digits,
/// leading zeros. Values outside i64 are refused (the reference has unbounded ints; no
/// property has a meaningful value that large).
pub fn py_int(text: &str) -> Option<i64> {
    let ws = |c: char| c.is_ascii_whitespace() || matches!(c, '\x0b' | '\x1c'..='\x1f');
    let t = text.trim_matches(ws);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..)?),
        Some(b'+') => (false, t.get(1..)?),
        _ => (false, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut v: i64 = 0;
    for c in digits.chars().filter(|c| *c != '_') {
        let d = c.to_digit(10)?;
        v = v.checked_mul(10)?.checked_add(i64::from(d))?;
    }
    Some(if neg { -v } else { v })
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
            crate::names::validate_vm_name(name)?;
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
    use crate::props::defs::VmReq;

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

    #[test]
    fn reprs() {
        assert_eq!(py_repr("a"), "'a'");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_repr("a\nb"), "'a\\nb'");
    }
}
