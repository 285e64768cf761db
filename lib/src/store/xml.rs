//! A minimal, allocation-free XML lexer over bytes, plus lxml-compatible escaping.
//!
//! This is not a general XML library: it tokenises well-formed documents (start/end tags,
//! text, comments, CDATA, processing instructions, DOCTYPE) and reports byte spans, so that the
//! store can keep the original bytes of everything it does not rewrite. Namespaces and DTD
//! entities are not interpreted (unknown entity references are kept literally on decode).

use std::borrow::Cow;

/// A lexing error (the document is not well-formed in a way the lexer can see).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {offset}")]
pub struct XmlError {
    pub offset: usize,
    pub reason: &'static str,
}

fn err<T>(offset: usize, reason: &'static str) -> Result<T, XmlError> {
    Err(XmlError { offset, reason })
}

/// A half-open byte range `start..end` into the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
    pub fn of<'a>(&self, src: &'a [u8]) -> &'a [u8] {
        src.get(self.start..self.end).unwrap_or(&[])
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokKind {
    /// `<name attrs>` or `<name attrs/>` (`empty`); `name` and `attrs` are spans in the source.
    Start {
        name: Span,
        attrs: Span,
        empty: bool,
    },
    /// `</name>`.
    End {
        name: Span,
    },
    /// Character data (entities not decoded).
    Text,
    /// `<![CDATA[...]]>`; `inner` is the content.
    CData {
        inner: Span,
    },
    Comment,
    /// `<?...?>` (including the XML declaration).
    Pi,
    /// `<!DOCTYPE ...>`.
    Doctype,
}

/// One token and its full span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tok {
    pub kind: TokKind,
    pub span: Span,
}

/// The lexer: call [`Lexer::next_tok`] until it returns `Ok(None)`.
///
/// It checks that elements nest: an end tag must name the innermost element this lexer saw
/// open. An end tag with no element open in this lexer (one opened before the position it was
/// created at) cannot be checked here: the caller that knows that element checks its name.
pub struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// Names of the elements opened since this lexer started and not closed yet.
    open: Vec<Span>,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Whether the bytes are XML whitespace only.
pub fn is_blank(b: &[u8]) -> bool {
    b.iter().all(|&c| is_ws(c))
}

fn is_name_end(b: u8) -> bool {
    is_ws(b) || b == b'>' || b == b'/'
}

/// Whether a start tag's attribute bytes (between the name and `>` or `/>`) are
/// `(whitespace name whitespace? = whitespace? quoted-value)* whitespace?`.
fn attrs_well_formed(b: &[u8]) -> bool {
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while b.get(i).is_some_and(|&c| is_ws(c)) {
            i += 1;
        }
        i
    };
    loop {
        let before = i;
        i = skip_ws(i);
        if i >= b.len() {
            return true;
        }
        if i == before {
            return false; // an attribute must follow whitespace
        }
        let name_start = i;
        while b
            .get(i)
            .is_some_and(|&c| !is_ws(c) && !matches!(c, b'=' | b'"' | b'\'' | b'/' | b'<' | b'>'))
        {
            i += 1;
        }
        if i == name_start {
            return false;
        }
        i = skip_ws(i);
        if b.get(i) != Some(&b'=') {
            return false;
        }
        i = skip_ws(i + 1);
        let Some(&q) = b.get(i).filter(|&&c| c == b'"' || c == b'\'') else {
            return false;
        };
        let Some(len) = b.get(i + 1..).and_then(|r| memchr::memchr(q, r)) else {
            return false;
        };
        i += 1 + len + 1;
    }
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a [u8], pos: usize) -> Lexer<'a> {
        Lexer {
            src,
            pos,
            open: Vec::new(),
        }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn src(&self) -> &'a [u8] {
        self.src
    }

    fn find(&self, from: usize, needle: &[u8]) -> Option<usize> {
        let hay = self.src.get(from..)?;
        memchr::memmem::find(hay, needle).map(|i| i + from)
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.src.get(i).copied()
    }

    /// The next token, or `None` at the end of the input.
    pub fn next_tok(&mut self) -> Result<Option<Tok>, XmlError> {
        let start = self.pos;
        let Some(first) = self.at(start) else {
            return Ok(None);
        };
        if first != b'<' {
            let end = self
                .src
                .get(start..)
                .and_then(|s| memchr::memchr(b'<', s))
                .map_or(self.src.len(), |i| i + start);
            self.pos = end;
            return Ok(Some(Tok {
                kind: TokKind::Text,
                span: Span::new(start, end),
            }));
        }
        let rest = self.src.get(start..).unwrap_or(&[]);
        if rest.starts_with(b"<!--") {
            let Some(e) = self.find(start + 4, b"-->") else {
                return err(start, "unterminated comment");
            };
            self.pos = e + 3;
            return Ok(Some(Tok {
                kind: TokKind::Comment,
                span: Span::new(start, self.pos),
            }));
        }
        if rest.starts_with(b"<![CDATA[") {
            let Some(e) = self.find(start + 9, b"]]>") else {
                return err(start, "unterminated CDATA section");
            };
            self.pos = e + 3;
            return Ok(Some(Tok {
                kind: TokKind::CData {
                    inner: Span::new(start + 9, e),
                },
                span: Span::new(start, self.pos),
            }));
        }
        if rest.starts_with(b"<?") {
            let Some(e) = self.find(start + 2, b"?>") else {
                return err(start, "unterminated processing instruction");
            };
            self.pos = e + 2;
            return Ok(Some(Tok {
                kind: TokKind::Pi,
                span: Span::new(start, self.pos),
            }));
        }
        if rest.starts_with(b"<!") {
            // DOCTYPE, possibly with an internal subset in brackets.
            let mut i = start + 2;
            let mut depth = 0usize;
            loop {
                let Some(c) = self.at(i) else {
                    return err(start, "unterminated declaration");
                };
                match c {
                    b'[' => depth += 1,
                    b']' => depth = depth.saturating_sub(1),
                    b'"' | b'\'' => {
                        let Some(q) = self.src.get(i + 1..).and_then(|s| memchr::memchr(c, s))
                        else {
                            return err(i, "unterminated literal");
                        };
                        i += q + 1;
                    }
                    b'>' if depth == 0 => break,
                    _ => {}
                }
                i += 1;
            }
            self.pos = i + 1;
            return Ok(Some(Tok {
                kind: TokKind::Doctype,
                span: Span::new(start, self.pos),
            }));
        }
        if rest.starts_with(b"</") {
            let name_start = start + 2;
            let Some(gt) = self.find(name_start, b">") else {
                return err(start, "unterminated end tag");
            };
            let mut name_end = name_start;
            while name_end < gt && self.at(name_end).is_some_and(|c| !is_ws(c)) {
                name_end += 1;
            }
            if name_end == name_start {
                return err(start, "empty end tag name");
            }
            let name = Span::new(name_start, name_end);
            if let Some(open) = self.open.pop() {
                if open.of(self.src) != name.of(self.src) {
                    return err(start, "mismatched end tag");
                }
            }
            self.pos = gt + 1;
            return Ok(Some(Tok {
                kind: TokKind::End { name },
                span: Span::new(start, self.pos),
            }));
        }
        // Start tag.
        let name_start = start + 1;
        let mut i = name_start;
        while self.at(i).is_some_and(|c| !is_name_end(c)) {
            i += 1;
        }
        if i == name_start {
            return err(start, "empty tag name");
        }
        let name = Span::new(name_start, i);
        let attrs_start = i;
        loop {
            let Some(off) = self
                .src
                .get(i..)
                .and_then(|s| memchr::memchr3(b'>', b'"', b'\'', s))
            else {
                return err(start, "unterminated start tag");
            };
            let j = i + off;
            match self.at(j) {
                Some(b'>') => {
                    let empty = j > attrs_start && self.at(j - 1) == Some(b'/');
                    let attrs_end = if empty { j - 1 } else { j };
                    if !attrs_well_formed(Span::new(attrs_start, attrs_end).of(self.src)) {
                        return err(start, "malformed attributes in start tag");
                    }
                    if !empty {
                        self.open.push(name);
                    }
                    self.pos = j + 1;
                    return Ok(Some(Tok {
                        kind: TokKind::Start {
                            name,
                            attrs: Span::new(attrs_start, attrs_end),
                            empty,
                        },
                        span: Span::new(start, self.pos),
                    }));
                }
                Some(q) => {
                    let Some(qe) = self.src.get(j + 1..).and_then(|s| memchr::memchr(q, s)) else {
                        return err(j, "unterminated attribute value");
                    };
                    i = j + 1 + qe + 1;
                }
                None => return err(start, "unterminated start tag"),
            }
        }
    }

    /// Having just read the start tag of a non-empty element, skips to just after its end tag
    /// and returns that offset.
    pub fn skip_element(&mut self) -> Result<usize, XmlError> {
        let mut depth = 1usize;
        loop {
            let Some(t) = self.next_tok()? else {
                return err(self.pos, "unexpected end of document inside an element");
            };
            match t.kind {
                TokKind::Start { empty: false, .. } => depth += 1,
                TokKind::End { .. } => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(t.span.end);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Iterates the attributes in a start tag's attribute span: `(name, raw value)` with the
/// quotes removed and entities not decoded.
pub fn attrs(src: &[u8], span: Span) -> impl Iterator<Item = (&[u8], &[u8])> {
    attr_spans(src, span).map(move |(n, v)| (n, v.of(src)))
}

/// Like [`attrs`], with the value as a span of `src`.
pub fn attr_spans(src: &[u8], span: Span) -> AttrIter<'_> {
    AttrIter {
        src,
        pos: span.start,
        end: span.end.min(src.len()),
    }
}

pub struct AttrIter<'a> {
    src: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = (&'a [u8], Span);
    fn next(&mut self) -> Option<Self::Item> {
        let s = self.src.get(self.pos..self.end)?;
        let start = s.iter().position(|&c| !is_ws(c))?;
        let eq = memchr::memchr(b'=', s.get(start..)?)? + start;
        let name = trim(s.get(start..eq)?);
        let qpos = s.get(eq + 1..)?.iter().position(|&c| !is_ws(c))? + eq + 1;
        let q = *s.get(qpos)?;
        if q != b'"' && q != b'\'' {
            self.pos = self.end;
            return None;
        }
        let vstart = qpos + 1;
        let vlen = memchr::memchr(q, s.get(vstart..)?)?;
        let value = Span::new(self.pos + vstart, self.pos + vstart + vlen);
        self.pos += vstart + vlen + 1;
        Some((name, value))
    }
}

/// The raw span of attribute `name`'s value, if present.
pub fn attr_span(src: &[u8], span: Span, name: &str) -> Option<Span> {
    attr_spans(src, span)
        .find(|(n, _)| *n == name.as_bytes())
        .map(|(_, v)| v)
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b.iter().position(|&c| !is_ws(c)).unwrap_or(b.len());
    let e = b.iter().rposition(|&c| !is_ws(c)).map_or(s, |i| i + 1);
    b.get(s..e).unwrap_or(&[])
}

/// The decoded value of attribute `name`, if present.
pub fn attr(src: &[u8], span: Span, name: &str) -> Option<String> {
    attrs(src, span)
        .find(|(n, _)| *n == name.as_bytes())
        .map(|(_, v)| decode_attr(v))
}

/// Decodes entity and character references (`&amp; &lt; &gt; &quot; &apos; &#N; &#xN;`).
/// Unknown or malformed references are kept literally. Invalid UTF-8 is replaced lossily.
pub fn decode(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    if !s.contains('&') {
        return s.into_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest: &str = &s;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or(""));
        let tail = rest.get(amp..).unwrap_or("");
        let semi = tail.as_bytes().iter().take(12).position(|&b| b == b';');
        let decoded = semi.and_then(|semi| {
            let ent = tail.get(1..semi)?;
            let c = match ent {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                _ => {
                    let n = if let Some(h) =
                        ent.strip_prefix("#x").or_else(|| ent.strip_prefix("#X"))
                    {
                        u32::from_str_radix(h, 16).ok()?
                    } else {
                        ent.strip_prefix('#')?.parse::<u32>().ok()?
                    };
                    char::from_u32(n)?
                }
            };
            Some((c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = tail.get(len..).unwrap_or("");
            }
            None => {
                out.push('&');
                rest = tail.get(1..).unwrap_or("");
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes an attribute value. (Attribute-value normalisation of literal whitespace is not
/// applied; lxml writes `\n`/`\t`/`\r` as character references, which are decoded.)
pub fn decode_attr(raw: &[u8]) -> String {
    decode(raw)
}

/// Escapes text content the way libxml2 (lxml) serialises it.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| matches!(b, b'&' | b'<' | b'>' | b'\r')) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Escapes an attribute value (double-quoted) the way libxml2 (lxml) serialises it.
pub fn escape_attr(s: &str) -> Cow<'_, str> {
    if !s
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\n' | b'\t' | b'\r'))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_entities() {
        assert_eq!(
            decode(b"a&amp;b&lt;&gt;&quot;&apos;&#65;&#x42;&bogus;&"),
            "a&b<>\"'AB&bogus;&"
        );
        assert_eq!(decode(b" \n\t"), " \n\t");
        assert_eq!(decode("&amp;&#13;\u{800}".as_bytes()), "&\r\u{800}");
    }

    #[test]
    fn escapes() {
        assert_eq!(escape_text("a&<>\"'\r\n"), "a&amp;&lt;&gt;\"'&#13;\n");
        assert_eq!(
            escape_attr("a&<>\"'\r\n\t"),
            "a&amp;&lt;&gt;&quot;'&#13;&#10;&#9;"
        );
    }

    /// Regression (fuzz target `xml_codec`, fuzz/regressions/xml_codec/): the lexer took any end
    /// tag for the innermost element's and accepted junk between a tag name and `>`, so a
    /// document that is not well-formed parsed, and saving it after a change lost bytes or the
    /// change (`<qubes//>`: the new `<domains>` was written after `<qubes/`+`>`).
    #[test]
    fn nesting_and_attribute_syntax_are_checked() {
        let lex_all = |src: &[u8]| -> Result<usize, XmlError> {
            let mut lx = Lexer::new(src, 0);
            let mut n = 0;
            while lx.next_tok()?.is_some() {
                n += 1;
            }
            Ok(n)
        };
        assert_eq!(lex_all(b"<a><b></b><c/></a>"), Ok(5));
        assert_eq!(
            lex_all(b"<a><b></a></b>").unwrap_err().reason,
            "mismatched end tag"
        );
        // An end tag of an element opened before the lexer's start is the caller's to check.
        assert_eq!(lex_all(b"</x>"), Ok(1));
        for ok in [
            &b"<a/>"[..],
            b"<a b='1'/>",
            b"<a\n b = \"1\"\tc='2' >",
            b"<a b=\"x/>\"/>",
        ] {
            assert!(lex_all(ok).is_ok(), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"<qubes//>"[..],
            b"<a b>",
            b"<a b=1>",
            b"<a b='1'c='2'>",
            b"<a =''>",
            b"<a/ >",
        ] {
            assert_eq!(
                lex_all(bad).unwrap_err().reason,
                "malformed attributes in start tag",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Too lenient a skip would also have hidden the mismatch.
        let src = b"<a><b><c></b></c></a>";
        let mut lx = Lexer::new(src, 0);
        assert!(lx.next_tok().is_ok());
        assert!(lx.next_tok().is_ok());
        assert!(lx.skip_element().is_err());
    }

    #[test]
    fn lex_tags() {
        let src = b"<?xml version='1.0'?><!-- c --><a x='>' y=\"1\"><b/>t&amp;<![CDATA[<]]></a>";
        let mut lx = Lexer::new(src, 0);
        let mut kinds = Vec::new();
        while let Ok(Some(t)) = lx.next_tok() {
            kinds.push(t.kind);
        }
        assert_eq!(kinds.len(), 7);
        let Some(TokKind::Start { attrs: a, .. }) = kinds.get(2).copied() else {
            unreachable!("start tag expected")
        };
        let got: Vec<_> = attrs(src, a).collect();
        assert_eq!(got, vec![(&b"x"[..], &b">"[..]), (&b"y"[..], &b"1"[..])]);
    }
}
