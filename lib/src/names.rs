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
    // Python's str.strip(): ASCII whitespace plus VT and the four separators 0x1c-0x1f.
    let v = text
        .trim_matches(|c: char| c.is_ascii_whitespace() || matches!(c, '\x0b' | '\x1c'..='\x1f'));
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
