//! Qube-notes sanitising: libqubes-pure's `qubes_pure_code_point_safe_for_display` allowlist
//! (ported as a generated range table) and the reference's strict UTF-8 decoding, whose error
//! text follows CPython's `UnicodeDecodeError`.

mod table;

/// Whether libqubes-pure considers `cp` safe for display (TAB and LF are not).
pub fn code_point_safe_for_display(cp: u32) -> bool {
    table::SAFE_FOR_DISPLAY
        .binary_search_by(|&(lo, hi)| {
            if hi < cp {
                std::cmp::Ordering::Less
            } else if lo > cp {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Decodes `payload` strictly as UTF-8 and replaces every code point that is neither safe for
/// display nor TAB/LF with `_`. The error is CPython's decode message, e.g.
/// `'utf-8' codec can't decode byte 0xd8 in position 0: unexpected end of data`.
pub fn sanitise(payload: &[u8]) -> Result<String, String> {
    let text = decode_utf8(payload)?;
    Ok(text
        .chars()
        .map(|c| {
            if c == '\t' || c == '\n' || code_point_safe_for_display(u32::from(c)) {
                c
            } else {
                '_'
            }
        })
        .collect())
}

/// Strict UTF-8 decoding with CPython's error message.
pub fn decode_utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| python_decode_error(bytes, &e))
}

/// CPython's message for the first undecodable sequence: a byte that cannot start a sequence is
/// an "invalid start byte", a valid prefix cut by the end of input is "unexpected end of data"
/// (range up to the end), any other is an "invalid continuation byte" (range = valid prefix).
fn python_decode_error(bytes: &[u8], e: &std::str::Utf8Error) -> String {
    let start = e.valid_up_to();
    let first = bytes.get(start).copied().unwrap_or(0);
    let (end, reason) = match e.error_len() {
        None => (bytes.len(), "unexpected end of data"),
        Some(_) if matches!(first, 0x80..=0xC1 | 0xF5..=0xFF) => (start + 1, "invalid start byte"),
        Some(n) => (start + n, "invalid continuation byte"),
    };
    if end <= start + 1 {
        format!("'utf-8' codec can't decode byte 0x{first:02x} in position {start}: {reason}")
    } else {
        format!(
            "'utf-8' codec can't decode bytes in position {start}-{}: {reason}",
            end - 1
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_disjoint() {
        let t = table::SAFE_FOR_DISPLAY;
        assert!(t.windows(2).all(|w| w[0].0 <= w[0].1 && w[0].1 < w[1].0));
        assert_eq!(t.first(), Some(&(0x20, 0x7e)));
    }

    #[test]
    fn spec_vectors() {
        assert_eq!(
            sanitise(b"For Your Eyes Only").unwrap(),
            "For Your Eyes Only"
        );
        let code = "def python_example_function():\n\tpass";
        assert_eq!(sanitise(code.as_bytes()).unwrap(), code);
        assert_eq!(
            sanitise("\u{8}\u{a0}\u{200b}\u{200c}\u{200d}".as_bytes()).unwrap(),
            "_____"
        );
        assert_eq!(
            sanitise(b"\xd8").unwrap_err(),
            "'utf-8' codec can't decode byte 0xd8 in position 0: unexpected end of data"
        );
    }

    #[test]
    fn allowlist_samples() {
        for c in [
            'a', '~', ' ', 'é', 'Ж', 'λ', '中', 'ア', '한', '€', '—', '∑',
        ] {
            assert!(code_point_safe_for_display(u32::from(c)), "{c:?}");
        }
        for cp in [
            0x0, 0x9, 0xa, 0xd, 0x7f, 0x85, 0xa0, 0x300, 0x5d0, 0x627, 0x202e, 0xe000, 0xfeff,
        ] {
            assert!(!code_point_safe_for_display(cp), "{cp:#x}");
        }
        assert_eq!(
            sanitise("a\rb\u{202e}c\u{1f600}".as_bytes()).unwrap(),
            "a_b_c_"
        );
    }

    /// Messages checked against CPython 3 `bytes.decode("utf8")`.
    #[test]
    fn python_decode_messages() {
        let m = |b: &[u8]| sanitise(b).unwrap_err();
        assert_eq!(
            m(b"ab\xff"),
            "'utf-8' codec can't decode byte 0xff in position 2: invalid start byte"
        );
        assert_eq!(
            m(b"\x80"),
            "'utf-8' codec can't decode byte 0x80 in position 0: invalid start byte"
        );
        assert_eq!(
            m(b"\xc0\xaf"),
            "'utf-8' codec can't decode byte 0xc0 in position 0: invalid start byte"
        );
        assert_eq!(
            m(b"\xe2\x28\xa1"),
            "'utf-8' codec can't decode byte 0xe2 in position 0: invalid continuation byte"
        );
        assert_eq!(
            m(b"x\xf0\x90\x28"),
            "'utf-8' codec can't decode bytes in position 1-2: invalid continuation byte"
        );
        assert_eq!(
            m(b"\xed\xa0\x80"),
            "'utf-8' codec can't decode byte 0xed in position 0: invalid continuation byte"
        );
        assert_eq!(
            m(b"\xe2\x82"),
            "'utf-8' codec can't decode bytes in position 0-1: unexpected end of data"
        );
        assert_eq!(
            m(b"\xf4\x90\x80\x80"),
            "'utf-8' codec can't decode byte 0xf4 in position 0: invalid continuation byte"
        );
    }
}
