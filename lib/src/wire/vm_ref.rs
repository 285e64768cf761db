//! VM references as callers write them (`name` or `uuid:<uuid>`), checked for syntax only;
//! looking them up in qubes.xml is the api layer's job (`api::request`).

use super::names;
use crate::error::{ApiError, ExcType};

/// A VM reference as written by the caller, syntax-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmRef {
    Name(String),
    /// Canonical lowercase UUID; `text` is what the caller wrote (for NotFound messages).
    Uuid {
        uuid: String,
        text: String,
    },
}

/// `decode_vm` syntax: ASCII, `uuid:<uuid>` form or a valid VM name.
pub fn parse_vm_ref(bytes: &[u8]) -> Result<VmRef, ApiError> {
    let text = ascii(bytes, "qube name")?;
    if let Some(rest) = text.strip_prefix("uuid:") {
        let invalid = || {
            ApiError::new(
                ExcType::QubesVMInvalidUUIDError,
                format!("VM UUID is not valid: '{rest}'"),
            )
        };
        if text.len() != 41 || !uuid_prefix_ok(rest) {
            return Err(invalid());
        }
        let uuid = parse_uuid(rest).ok_or_else(invalid)?;
        return Ok(VmRef::Uuid {
            uuid,
            text: text.to_string(),
        });
    }
    names::validate_vm_name(text)?;
    Ok(VmRef::Name(text.to_string()))
}

/// The reference's `\Auuid:[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]*` (a prefix match).
fn uuid_prefix_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|x| x.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
    };
    hex(0..8)
        && b.get(8) == Some(&b'-')
        && hex(9..13)
        && b.get(13) == Some(&b'-')
        && hex(14..18)
        && b.get(18) == Some(&b'-')
        && hex(19..23)
        && b.get(23) == Some(&b'-')
}

/// Parses a hyphenated UUID case-insensitively into canonical lowercase text.
pub fn parse_uuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    for (i, c) in b.iter().enumerate() {
        let dash = matches!(i, 8 | 13 | 18 | 23);
        if dash != (*c == b'-') || (!dash && !c.is_ascii_hexdigit()) {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

pub(crate) fn ascii<'b>(bytes: &'b [u8], what: &str) -> Result<&'b str, ApiError> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| s.is_ascii())
        .ok_or_else(|| ApiError::protocol(format!("{what} contains non-ASCII bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_refs() {
        assert_eq!(parse_vm_ref(b"work").unwrap(), VmRef::Name("work".into()));
        let u = parse_vm_ref(b"uuid:00000000-0000-0000-0000-00000000000A").unwrap();
        assert_eq!(
            u,
            VmRef::Uuid {
                uuid: "00000000-0000-0000-0000-00000000000a".into(),
                text: "uuid:00000000-0000-0000-0000-00000000000A".into()
            }
        );
        let e = parse_vm_ref(b"uuid:0000").unwrap_err();
        assert_eq!(e.ty, ExcType::QubesVMInvalidUUIDError);
        assert_eq!(e.msg, "VM UUID is not valid: '0000'");
        // uppercase outside the last group fails the prefix match
        assert!(parse_vm_ref(b"uuid:0000000A-0000-0000-0000-000000000000").is_err());
        // the last group passes the prefix match but must still parse
        assert!(parse_vm_ref(b"uuid:00000000-0000-0000-0000-00000000000g").is_err());
        assert_eq!(
            parse_vm_ref(b".x").unwrap_err().ty,
            ExcType::QubesValueError
        );
        assert_eq!(
            parse_vm_ref("ö".as_bytes()).unwrap_err().ty,
            ExcType::ProtocolError
        );
    }
}
