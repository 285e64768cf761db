//! The sections of qubes.xml that hold key/value entries (`<properties>`, `<features>`,
//! `<tags>`, `<labels>`, `<pools>`): parsed from the source, kept with their original bytes,
//! and re-serialised in lxml's pretty-print form only when changed.

use super::StoreError;
use crate::store::xml::{self, Lexer, Span, Tok, TokKind, XmlError};

pub(super) fn perr(e: XmlError) -> StoreError {
    StoreError::Parse(e.to_string())
}

pub(super) fn indent(out: &mut Vec<u8>, depth: usize) {
    out.push(b'\n');
    for _ in 0..depth {
        out.extend_from_slice(b"  ");
    }
}

pub(super) fn name_is(src: &[u8], name: Span, want: &str) -> bool {
    name.of(src) == want.as_bytes()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Property,
    Feature,
    Tag,
    Label,
    Pool,
}

impl Kind {
    pub(super) fn child(self) -> &'static str {
        match self {
            Kind::Property => "property",
            Kind::Feature => "feature",
            Kind::Tag => "tag",
            Kind::Label => "label",
            Kind::Pool => "pool",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct Entry {
    /// `name` attribute (label: the text).
    pub(super) key: String,
    /// Text (label: color).
    pub(super) value: String,
    /// Label index.
    pub(super) index: u32,
    /// All attributes (pools only).
    pub(super) attrs: Vec<(String, String)>,
    /// Original bytes while unchanged.
    pub(super) raw: Option<Vec<u8>>,
}

impl Entry {
    pub(super) fn new(key: &str, value: &str) -> Entry {
        Entry {
            key: key.to_string(),
            value: value.to_string(),
            ..Entry::default()
        }
    }

    pub(super) fn write(&self, kind: Kind, out: &mut Vec<u8>) {
        if let Some(raw) = &self.raw {
            out.extend_from_slice(raw);
            return;
        }
        let s = match kind {
            Kind::Property | Kind::Feature => format!(
                "<{t} name=\"{}\">{}</{t}>",
                xml::escape_attr(&self.key),
                xml::escape_text(&self.value),
                t = kind.child()
            ),
            Kind::Tag => format!("<tag name=\"{}\"/>", xml::escape_attr(&self.key)),
            Kind::Label => format!(
                "<label id=\"label-{}\" color=\"{}\">{}</label>",
                self.index,
                xml::escape_attr(&self.value),
                xml::escape_text(&self.key)
            ),
            Kind::Pool => {
                let mut s = String::from("<pool");
                for (k, v) in &self.attrs {
                    s.push_str(&format!(" {k}=\"{}\"", xml::escape_attr(v)));
                }
                s.push_str("/>");
                s
            }
        };
        out.extend_from_slice(s.as_bytes());
    }
}

#[derive(Debug, Clone)]
pub(super) enum Body {
    Entry(Entry),
    /// Anything else (unknown elements, comments, ...), verbatim.
    Other(Vec<u8>),
}

#[derive(Debug, Clone)]
pub(super) struct Item {
    /// Text before the item (None: canonical newline + indent).
    pub(super) lead: Option<Vec<u8>>,
    pub(super) body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    /// Not in the file.
    Absent,
    /// In the file, unchanged: the original bytes.
    Orig(Vec<u8>),
    /// Present and to be re-serialised.
    Changed,
}

#[derive(Debug, Clone)]
pub(super) struct Section {
    pub(super) kind: Kind,
    pub(super) tag: &'static str,
    pub(super) depth: usize,
    pub(super) state: State,
    /// Raw start tag (`<features x="1">`) if the element had content.
    pub(super) open: Option<Vec<u8>>,
    /// Raw attribute bytes of the start tag (for the self-closing form).
    pub(super) attrs: Vec<u8>,
    pub(super) close: Option<Vec<u8>>,
    /// Raw text before the end tag, only if the original had element children.
    pub(super) tail: Option<Vec<u8>>,
    pub(super) items: Vec<Item>,
}

impl Section {
    pub(super) fn absent(kind: Kind, tag: &'static str, depth: usize) -> Section {
        Section {
            kind,
            tag,
            depth,
            state: State::Absent,
            open: None,
            attrs: Vec::new(),
            close: None,
            tail: None,
            items: Vec::new(),
        }
    }

    pub(super) fn present(&self) -> bool {
        self.state != State::Absent
    }

    pub(super) fn changed(&self) -> bool {
        self.state == State::Changed
    }

    pub(super) fn touch(&mut self) {
        self.state = State::Changed;
    }

    /// Parses the section element whose start tag is `start` (the lexer is just after it).
    pub(super) fn parse(
        src: &[u8],
        lx: &mut Lexer<'_>,
        start: Tok,
        kind: Kind,
        tag: &'static str,
        depth: usize,
    ) -> Result<Section, XmlError> {
        let mut sec = Section::absent(kind, tag, depth);
        let TokKind::Start { attrs, empty, .. } = start.kind else {
            return Err(XmlError {
                offset: start.span.start,
                reason: "expected a start tag",
            });
        };
        sec.attrs = attrs.of(src).to_vec();
        if empty {
            sec.state = State::Orig(start.span.of(src).to_vec());
            return Ok(sec);
        }
        sec.open = Some(start.span.of(src).to_vec());
        let mut lead_start = start.span.end;
        let mut had_elements = false;
        loop {
            let Some(t) = lx.next_tok()? else {
                return Err(XmlError {
                    offset: lx.pos(),
                    reason: "unterminated section",
                });
            };
            match t.kind {
                TokKind::Text => {}
                TokKind::End { .. } => {
                    // The text before the end tag is kept if there were children (it is their
                    // closing indent) or if it is not blank (text directly in the section).
                    let tail = src.get(lead_start..t.span.start).unwrap_or(&[]);
                    if had_elements || !xml::is_blank(tail) {
                        sec.tail = Some(tail.to_vec());
                    }
                    sec.close = Some(t.span.of(src).to_vec());
                    sec.state =
                        State::Orig(Span::new(start.span.start, t.span.end).of(src).to_vec());
                    return Ok(sec);
                }
                TokKind::Start { name, attrs, empty } => {
                    had_elements = true;
                    let end = if empty { t.span.end } else { lx.pos() };
                    let (body, end) = if name_is(src, name, kind.child()) {
                        let text = if empty {
                            (String::new(), end)
                        } else {
                            read_text(src, lx)?
                        };
                        match make_entry(src, kind, attrs, text.0) {
                            Some(mut e) => {
                                e.raw = Some(Span::new(t.span.start, text.1).of(src).to_vec());
                                (Body::Entry(e), text.1)
                            }
                            None => (
                                Body::Other(Span::new(t.span.start, text.1).of(src).to_vec()),
                                text.1,
                            ),
                        }
                    } else {
                        let end = if empty { end } else { lx.skip_element()? };
                        (
                            Body::Other(Span::new(t.span.start, end).of(src).to_vec()),
                            end,
                        )
                    };
                    let lead = src.get(lead_start..t.span.start).unwrap_or(&[]).to_vec();
                    sec.items.push(Item {
                        lead: Some(lead),
                        body,
                    });
                    lead_start = end;
                }
                _ => {
                    // Comments, PIs, CDATA directly inside the section: keep verbatim.
                    had_elements = true;
                    let lead = src.get(lead_start..t.span.start).unwrap_or(&[]).to_vec();
                    sec.items.push(Item {
                        lead: Some(lead),
                        body: Body::Other(t.span.of(src).to_vec()),
                    });
                    lead_start = t.span.end;
                }
            }
        }
    }

    pub(super) fn write(&self, out: &mut Vec<u8>) {
        match &self.state {
            State::Absent => {}
            State::Orig(b) => out.extend_from_slice(b),
            State::Changed => {
                let attrs = self.attrs.strip_suffix(b" ").unwrap_or(&self.attrs);
                if self.items.is_empty() {
                    out.push(b'<');
                    out.extend_from_slice(self.tag.as_bytes());
                    out.extend_from_slice(attrs);
                    out.extend_from_slice(b"/>");
                    return;
                }
                match &self.open {
                    Some(o) => out.extend_from_slice(o),
                    None => {
                        out.push(b'<');
                        out.extend_from_slice(self.tag.as_bytes());
                        out.extend_from_slice(attrs);
                        out.push(b'>');
                    }
                }
                for it in &self.items {
                    match &it.lead {
                        Some(l) => out.extend_from_slice(l),
                        None => indent(out, self.depth + 1),
                    }
                    match &it.body {
                        Body::Entry(e) => e.write(self.kind, out),
                        Body::Other(b) => out.extend_from_slice(b),
                    }
                }
                match &self.tail {
                    Some(t) => out.extend_from_slice(t),
                    None => indent(out, self.depth),
                }
                match &self.close {
                    Some(c) => out.extend_from_slice(c),
                    None => {
                        out.extend_from_slice(b"</");
                        out.extend_from_slice(self.tag.as_bytes());
                        out.push(b'>');
                    }
                }
            }
        }
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.items.iter().filter_map(|i| match &i.body {
            Body::Entry(e) => Some(e),
            Body::Other(_) => None,
        })
    }

    pub(super) fn pos(&self, key: &str) -> Option<usize> {
        self.items
            .iter()
            .position(|i| matches!(&i.body, Body::Entry(e) if e.key == key))
    }

    pub(super) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries().find(|e| e.key == key)
    }

    /// Sets an entry's value; returns true if the section changed.
    pub(super) fn set(
        &mut self,
        key: &str,
        value: &str,
        rank: Option<&dyn Fn(&str) -> usize>,
    ) -> bool {
        if let Some(i) = self.pos(key) {
            if let Some(Item {
                body: Body::Entry(e),
                ..
            }) = self.items.get_mut(i)
            {
                if e.value == value {
                    return false;
                }
                e.value = value.to_string();
                e.raw = None;
            }
            self.touch();
            return true;
        }
        let item = Item {
            lead: None,
            body: Body::Entry(Entry::new(key, value)),
        };
        let at = match rank {
            Some(rank) => rank_position(self, key, rank),
            None => self.items.len(),
        };
        self.insert_item(at, item);
        true
    }

    /// Inserts at `at` (clamped). The new item's lead is its own (canonical when `None`); its
    /// neighbours and the section's tail keep their original bytes.
    pub(super) fn insert_item(&mut self, at: usize, item: Item) {
        let at = at.min(self.items.len());
        self.items.insert(at, item);
        self.touch();
    }

    /// Removes the entry, and any duplicate of it (a hand-edited file may repeat a name):
    /// afterwards `get(key)` is None.
    pub(super) fn remove(&mut self, key: &str) -> bool {
        let before = self.items.len();
        self.items
            .retain(|i| !matches!(&i.body, Body::Entry(e) if e.key == key));
        if self.items.len() == before {
            return false;
        }
        self.touch();
        true
    }
}

/// Where a new entry of rank `rank(key)` goes: after the last entry of known rank that is not
/// greater, else before the first entry of known rank, else at the end. `usize::MAX` is "unknown".
fn rank_position(sec: &Section, key: &str, rank: &dyn Fn(&str) -> usize) -> usize {
    let r = rank(key);
    let mut after_last_le = None;
    let mut first_known = None;
    for (i, it) in sec.items.iter().enumerate() {
        if let Body::Entry(e) = &it.body {
            let er = rank(&e.key);
            if er == usize::MAX {
                continue;
            }
            if first_known.is_none() {
                first_known = Some(i);
            }
            if er <= r {
                after_last_le = Some(i + 1);
            }
        }
    }
    if r == usize::MAX {
        return sec.items.len();
    }
    after_last_le.or(first_known).unwrap_or(sec.items.len())
}

/// Reads an element's text (text and CDATA up to the first child node, entities decoded) and
/// skips to its end. Returns the text and the offset after the end tag.
fn read_text(src: &[u8], lx: &mut Lexer<'_>) -> Result<(String, usize), XmlError> {
    let mut text = String::new();
    let mut in_text = true;
    let mut depth = 1usize;
    loop {
        let Some(t) = lx.next_tok()? else {
            return Err(XmlError {
                offset: lx.pos(),
                reason: "unterminated element",
            });
        };
        match t.kind {
            TokKind::Text if in_text && depth == 1 => text.push_str(&xml::decode(t.span.of(src))),
            TokKind::CData { inner } if in_text && depth == 1 => {
                text.push_str(&String::from_utf8_lossy(inner.of(src)))
            }
            TokKind::End { .. } => {
                depth -= 1;
                if depth == 0 {
                    return Ok((text, t.span.end));
                }
            }
            TokKind::Start { empty, .. } => {
                in_text = false;
                if !empty {
                    depth += 1;
                }
            }
            _ => in_text = false,
        }
    }
}

fn make_entry(src: &[u8], kind: Kind, attrs: Span, text: String) -> Option<Entry> {
    match kind {
        Kind::Property => {
            let key = xml::attr(src, attrs, "name")?;
            // Legacy: a `ref` attribute is used instead of the text.
            let value = xml::attr(src, attrs, "ref").unwrap_or(text);
            Some(Entry {
                key,
                value,
                ..Entry::default()
            })
        }
        Kind::Feature => Some(Entry {
            key: xml::attr(src, attrs, "name")?,
            value: text,
            ..Entry::default()
        }),
        Kind::Tag => Some(Entry {
            key: xml::attr(src, attrs, "name")?,
            ..Entry::default()
        }),
        Kind::Label => {
            let id = xml::attr(src, attrs, "id")?;
            let index = id.strip_prefix("label-")?.parse::<u32>().ok()?;
            let color = xml::attr(src, attrs, "color").unwrap_or_default();
            Some(Entry {
                key: text,
                value: color,
                index,
                ..Entry::default()
            })
        }
        Kind::Pool => {
            let attrs: Vec<(String, String)> = xml::attrs(src, attrs)
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), xml::decode_attr(v)))
                .collect();
            let key = attrs.iter().find(|(k, _)| k == "name")?.1.clone();
            Some(Entry {
                key,
                attrs,
                ..Entry::default()
            })
        }
    }
}
