//! What the wire inherits from Python: the reference renders and parses some values with
//! Python's own rules (`repr()` of a str in messages, `int()` for numbers, `str.strip()`), so
//! byte-exact replies need the same rules. One place for all of them.

/// Python's `str.strip()` on ASCII text: whitespace, VT, FF and the separators 0x1c–0x1f.
pub fn strip(s: &str) -> &str {
    s.trim_matches(|c: char| {
        c.is_ascii_whitespace() || matches!(c, '\x0b' | '\x0c' | '\x1c'..='\x1f')
    })
}

/// Python's `repr(str)`: single quotes unless the text contains `'` and no `"`; backslash, the
/// quote, TAB/LF/CR and other control characters escaped.
pub fn repr(s: &str) -> String {
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
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
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

/// Python's `int(s)` (base 10) or `int(s, 8)`: surrounding whitespace, an optional sign, digits
/// with single underscores between them (base 8 also takes a `0o` prefix, which an underscore
/// may follow). `None` where Python raises, or when the value does not fit in an i64.
pub fn int(s: &str, base: u32) -> Option<i64> {
    let t = strip(s);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, t.get(1..)?),
        Some(b'+') => (false, t.get(1..)?),
        _ => (false, t),
    };
    let digits = match (base, t.strip_prefix("0o").or_else(|| t.strip_prefix("0O"))) {
        (8, Some(r)) => r.strip_prefix('_').unwrap_or(r),
        _ => t,
    };
    let b = digits.as_bytes();
    let digit = |c: &u8| char::from(*c).is_digit(base);
    let ok = b.first().is_some_and(digit)
        && b.last().is_some_and(digit)
        && b.iter().all(|c| digit(c) || *c == b'_')
        && !digits.contains("__");
    if !ok {
        return None;
    }
    let mut v: i64 = 0;
    for d in b.iter().filter_map(|c| char::from(*c).to_digit(base)) {
        v = v.checked_mul(i64::from(base))?.checked_add(i64::from(d))?;
    }
    Some(if neg { -v } else { v })
}

/// A JSON string as Python's `json.dumps` writes it (`ensure_ascii`): `"` and `\` escaped,
/// the short escapes for BS, TAB, LF, FF and CR, `\u00XX` for other control characters and
/// `\uXXXX` (surrogate pairs above U+FFFF) for anything not ASCII.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_like_cpython() {
        assert_eq!(json_str("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_str("\t\n\x01\x7f"), r#""\t\n\u0001\u007f""#);
        assert_eq!(json_str("é😀"), r#""\u00e9\ud83d\ude00""#);
    }

    #[test]
    fn repr_like_cpython() {
        assert_eq!(repr(" 0x00ffff\n"), "' 0x00ffff\\n'");
        assert_eq!(repr("a'b"), "\"a'b\"");
        assert_eq!(repr("a'b\""), "'a\\'b\"'");
        assert_eq!(repr("\x01\\"), "'\\x01\\\\'");
    }

    #[test]
    fn int_like_cpython() {
        assert_eq!(int(" +1_0 ", 10), Some(10));
        assert_eq!(int("-0", 10), Some(0));
        assert_eq!(int("007", 10), Some(7));
        for bad in [
            "1__0",
            "_1",
            "1_",
            "",
            "+",
            "1e3",
            "0x10",
            "99999999999999999999",
        ] {
            assert_eq!(int(bad, 10), None, "{bad}");
        }
        assert_eq!(int(" 755", 8), Some(0o755));
        assert_eq!(int("0o_7", 8), Some(7));
        assert_eq!(int("0O7", 8), Some(7));
        assert_eq!(int("7_5_5", 8), Some(0o755));
        for bad in ["8", "0o", "0o__7", "0x7", "7__5"] {
            assert_eq!(int(bad, 8), None, "{bad}");
        }
    }
}
