//! The qubes.xml document model.
//!
//! Contract (keep these signatures): the document keeps the original bytes; only sections that
//! a mutation touched are re-serialised (in lxml's pretty-print form), everything else —
//! including unknown elements and attributes — is copied verbatim, so an unmodified document
//! saves byte-identical.
//!
//! Loading is an *index* pass: the top-level `<labels>`, `<pools>` and `<properties>` are parsed
//! (they are small), and for every `<domain>` only its byte span, `class` attribute and
//! name/qid/uuid are found (with memchr/memmem scans when the file has the canonical shape, with
//! the full lexer otherwise). A domain's properties, features and tags are parsed on first
//! [`Document::data`] / [`Document::data_mut`]. See `docs/store.md`.

use std::cell::OnceCell;
use std::collections::HashMap;

use memchr::memmem;

use super::StoreError;
use crate::xml::{self, Lexer, Span, Tok, TokKind, XmlError};

/// A label (`<label id="label-N" color="0x..">name</label>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub index: u32,
    pub color: String,
    pub name: String,
}

/// A storage pool entry; `attrs` are all attributes in file order (including name and driver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub driver: String,
    pub attrs: Vec<(String, String)>,
}

/// Handle of one `<domain>` in a [`Document`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomId(pub usize);

/// The uuid of the AdminVM.
pub const DOM0_UUID: &str = "00000000-0000-0000-0000-000000000000";

const RETRY_SLOW: &str = "retry without the fast path";

fn perr(e: XmlError) -> StoreError {
    StoreError::Parse(e.to_string())
}

fn indent(out: &mut Vec<u8>, depth: usize) {
    out.push(b'\n');
    for _ in 0..depth {
        out.extend_from_slice(b"  ");
    }
}

fn name_is(src: &[u8], name: Span, want: &str) -> bool {
    name.of(src) == want.as_bytes()
}

// ---------------------------------------------------------------------------------------------
// Sections: <properties>, <features>, <tags>, <labels>, <pools>
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Property,
    Feature,
    Tag,
    Label,
    Pool,
}

impl Kind {
    fn child(self) -> &'static str {
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
struct Entry {
    /// `name` attribute (label: the text).
    key: String,
    /// Text (label: color).
    value: String,
    /// Label index.
    index: u32,
    /// All attributes (pools only).
    attrs: Vec<(String, String)>,
    /// Original bytes while unchanged.
    raw: Option<Vec<u8>>,
}

impl Entry {
    fn new(key: &str, value: &str) -> Entry {
        Entry {
            key: key.to_string(),
            value: value.to_string(),
            ..Entry::default()
        }
    }

    fn write(&self, kind: Kind, out: &mut Vec<u8>) {
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
enum Body {
    Entry(Entry),
    /// Anything else (unknown elements, comments, ...), verbatim.
    Other(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Item {
    /// Text before the item (None: canonical newline + indent).
    lead: Option<Vec<u8>>,
    body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Not in the file.
    Absent,
    /// In the file, unchanged: the original bytes.
    Orig(Vec<u8>),
    /// Present and to be re-serialised.
    Changed,
}

#[derive(Debug, Clone)]
struct Section {
    kind: Kind,
    tag: &'static str,
    depth: usize,
    state: State,
    /// Raw start tag (`<features x="1">`) if the element had content.
    open: Option<Vec<u8>>,
    /// Raw attribute bytes of the start tag (for the self-closing form).
    attrs: Vec<u8>,
    close: Option<Vec<u8>>,
    /// Raw text before the end tag, only if the original had element children.
    tail: Option<Vec<u8>>,
    items: Vec<Item>,
}

impl Section {
    fn absent(kind: Kind, tag: &'static str, depth: usize) -> Section {
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

    fn present(&self) -> bool {
        self.state != State::Absent
    }

    fn changed(&self) -> bool {
        self.state == State::Changed
    }

    fn touch(&mut self) {
        self.state = State::Changed;
    }

    /// Parses the section element whose start tag is `start` (the lexer is just after it).
    fn parse(
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

    fn write(&self, out: &mut Vec<u8>) {
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

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.items.iter().filter_map(|i| match &i.body {
            Body::Entry(e) => Some(e),
            Body::Other(_) => None,
        })
    }

    fn pos(&self, key: &str) -> Option<usize> {
        self.items
            .iter()
            .position(|i| matches!(&i.body, Body::Entry(e) if e.key == key))
    }

    fn get(&self, key: &str) -> Option<&Entry> {
        self.entries().find(|e| e.key == key)
    }

    /// Sets an entry's value; returns true if the section changed.
    fn set(&mut self, key: &str, value: &str, rank: Option<&dyn Fn(&str) -> usize>) -> bool {
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
    fn insert_item(&mut self, at: usize, item: Item) {
        let at = at.min(self.items.len());
        self.items.insert(at, item);
        self.touch();
    }

    /// Removes the entry, and any duplicate of it (a hand-edited file may repeat a name):
    /// afterwards `get(key)` is None.
    fn remove(&mut self, key: &str) -> bool {
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

// ---------------------------------------------------------------------------------------------
// DomainData
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum DChild {
    Props,
    Features,
    Tags,
    /// Another child element (`name`) or a comment (`name` empty), verbatim.
    Other {
        name: String,
        raw: Vec<u8>,
    },
}

/// Parsed content of one domain (properties, features, tags); other children stay raw.
#[derive(Debug, Clone)]
pub struct DomainData {
    /// Raw start tag written as `<domain ...>` (None for a new domain: canonical).
    open: Option<Vec<u8>>,
    close: Option<Vec<u8>>,
    tail: Option<Vec<u8>>,
    children: Vec<(Option<Vec<u8>>, DChild)>,
    props: Section,
    features: Section,
    tags: Section,
    /// Children other than the three sections were added or removed.
    struct_changed: bool,
}

impl Default for DomainData {
    /// An empty new domain: `<properties/>`, `<features/>`, `<tags/>`.
    fn default() -> Self {
        let mut d = DomainData::absent();
        d.props.state = State::Changed;
        d.features.state = State::Changed;
        d.tags.state = State::Changed;
        d.children = vec![
            (None, DChild::Props),
            (None, DChild::Features),
            (None, DChild::Tags),
        ];
        d.struct_changed = true;
        d
    }
}

impl DomainData {
    fn absent() -> DomainData {
        DomainData {
            open: None,
            close: None,
            tail: None,
            children: Vec::new(),
            props: Section::absent(Kind::Property, "properties", 3),
            features: Section::absent(Kind::Feature, "features", 3),
            tags: Section::absent(Kind::Tag, "tags", 3),
            struct_changed: false,
        }
    }

    /// Parses the `<domain>` element at `span`.
    fn parse(src: &[u8], span: Span) -> Result<DomainData, XmlError> {
        let mut d = DomainData::absent();
        let mut lx = Lexer::new(src, span.start);
        let Some(start) = lx.next_tok()? else {
            return Err(XmlError {
                offset: span.start,
                reason: "expected <domain>",
            });
        };
        let TokKind::Start { name, attrs, empty } = start.kind else {
            return Err(XmlError {
                offset: span.start,
                reason: "expected <domain>",
            });
        };
        if empty {
            let mut open = b"<".to_vec();
            open.extend_from_slice(name.of(src));
            open.extend_from_slice(attrs.of(src).strip_suffix(b" ").unwrap_or(attrs.of(src)));
            open.push(b'>');
            d.open = Some(open);
            return Ok(d);
        }
        d.open = Some(start.span.of(src).to_vec());
        let mut lead_start = start.span.end;
        let mut had_children = false;
        loop {
            let Some(t) = lx.next_tok()? else {
                return Err(XmlError {
                    offset: lx.pos(),
                    reason: "unterminated <domain>",
                });
            };
            if t.kind == TokKind::Text {
                continue;
            }
            let lead = src.get(lead_start..t.span.start).unwrap_or(&[]).to_vec();
            match t.kind {
                TokKind::Text => continue,
                TokKind::End { .. } => {
                    // The lexer checked that this is `</domain>`; it must also be where the
                    // index put the element's end (the fast index only scans for `</domain`),
                    // or saving this domain would splice over the wrong bytes.
                    if t.span.end != span.end {
                        return Err(XmlError {
                            offset: t.span.start,
                            reason: "<domain> does not end where the index found its end tag",
                        });
                    }
                    if had_children || !xml::is_blank(&lead) {
                        d.tail = Some(lead);
                    }
                    d.close = Some(t.span.of(src).to_vec());
                    return Ok(d);
                }
                TokKind::Start { name, empty, .. } => {
                    had_children = true;
                    let which = if name_is(src, name, "properties") && !d.props.present() {
                        Some((Kind::Property, "properties"))
                    } else if name_is(src, name, "features") && !d.features.present() {
                        Some((Kind::Feature, "features"))
                    } else if name_is(src, name, "tags") && !d.tags.present() {
                        Some((Kind::Tag, "tags"))
                    } else {
                        None
                    };
                    match which {
                        Some((kind, tag)) => {
                            let sec = Section::parse(src, &mut lx, t, kind, tag, 3)?;
                            let child = match kind {
                                Kind::Property => {
                                    d.props = sec;
                                    DChild::Props
                                }
                                Kind::Feature => {
                                    d.features = sec;
                                    DChild::Features
                                }
                                _ => {
                                    d.tags = sec;
                                    DChild::Tags
                                }
                            };
                            d.children.push((Some(lead), child));
                            lead_start = lx.pos();
                        }
                        None => {
                            let end = if empty {
                                t.span.end
                            } else {
                                lx.skip_element()?
                            };
                            let raw = Span::new(t.span.start, end).of(src).to_vec();
                            let name = String::from_utf8_lossy(name.of(src)).into_owned();
                            d.children.push((Some(lead), DChild::Other { name, raw }));
                            lead_start = end;
                        }
                    }
                }
                _ => {
                    had_children = true;
                    let raw = t.span.of(src).to_vec();
                    d.children.push((
                        Some(lead),
                        DChild::Other {
                            name: String::new(),
                            raw,
                        },
                    ));
                    lead_start = t.span.end;
                }
            }
        }
    }

    /// Whether anything would be re-serialised.
    fn changed(&self) -> bool {
        self.struct_changed
            || self.props.changed()
            || self.features.changed()
            || self.tags.changed()
    }

    fn ensure(&mut self, which: DChild) {
        let present = match which {
            DChild::Props => self.props.present(),
            DChild::Features => self.features.present(),
            DChild::Tags => self.tags.present(),
            DChild::Other { .. } => true,
        };
        if present {
            return;
        }
        // Canonical order: properties, features, tags (then the rest): after the last present
        // section that comes before it, else before the first that comes after, else first.
        let rank = |c: &DChild| match c {
            DChild::Props => Some(0),
            DChild::Features => Some(1),
            DChild::Tags => Some(2),
            DChild::Other { .. } => None,
        };
        let r = rank(&which);
        let after = self
            .children
            .iter()
            .rposition(|(_, c)| rank(c).is_some_and(|x| Some(x) < r))
            .map(|i| i + 1);
        let before = self
            .children
            .iter()
            .position(|(_, c)| rank(c).is_some_and(|x| Some(x) > r));
        let at = after.or(before).unwrap_or(0);
        self.children.insert(at, (None, which));
        self.struct_changed = true;
    }

    fn write(&self, out: &mut Vec<u8>, class: &str, qid: u32) {
        match &self.open {
            Some(o) => out.extend_from_slice(o),
            None => out.extend_from_slice(
                format!(
                    "<domain id=\"domain-{qid}\" class=\"{}\">",
                    xml::escape_attr(class)
                )
                .as_bytes(),
            ),
        }
        for (lead, c) in &self.children {
            match lead {
                Some(l) => out.extend_from_slice(l),
                None => indent(out, 3),
            }
            match c {
                DChild::Props => self.props.write(out),
                DChild::Features => self.features.write(out),
                DChild::Tags => self.tags.write(out),
                DChild::Other { raw, .. } => out.extend_from_slice(raw),
            }
        }
        match &self.tail {
            Some(t) => out.extend_from_slice(t),
            None => indent(out, 2),
        }
        match &self.close {
            Some(c) => out.extend_from_slice(c),
            None => out.extend_from_slice(b"</domain>"),
        }
    }

    pub fn property(&self, name: &str) -> Option<&str> {
        self.props.get(name).map(|e| e.value.as_str())
    }
    /// Stored properties in file order.
    pub fn properties(&self) -> Vec<(&str, &str)> {
        self.props
            .entries()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect()
    }
    /// Stores a value; a new entry is inserted so that entries stay sorted by `rank`
    /// (`usize::MAX` = unknown rank: such entries keep their place and new ones go last).
    pub fn set_property(&mut self, name: &str, value: &str, rank: &dyn Fn(&str) -> usize) {
        self.ensure(DChild::Props);
        self.props.set(name, value, Some(rank));
    }
    /// Removes the stored value; false if there was none.
    pub fn reset_property(&mut self, name: &str) -> bool {
        self.props.remove(name)
    }
    pub fn feature(&self, name: &str) -> Option<&str> {
        self.features.get(name).map(|e| e.value.as_str())
    }
    /// Features in insertion (file) order.
    pub fn features(&self) -> Vec<(&str, &str)> {
        self.features
            .entries()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect()
    }
    /// Sets a feature; an existing one keeps its position, a new one is appended.
    pub fn set_feature(&mut self, name: &str, value: &str) {
        self.ensure(DChild::Features);
        self.features.set(name, value, None);
    }
    pub fn remove_feature(&mut self, name: &str) -> bool {
        self.features.remove(name)
    }
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.get(tag).is_some()
    }
    /// Tags in file order (callers sort).
    pub fn tags(&self) -> Vec<&str> {
        self.tags.entries().map(|e| e.key.as_str()).collect()
    }
    /// Adds a tag; false if it was already there.
    pub fn add_tag(&mut self, tag: &str) -> bool {
        if self.has_tag(tag) {
            return false;
        }
        self.ensure(DChild::Tags);
        self.tags.set(tag, "", None)
    }
    pub fn remove_tag(&mut self, tag: &str) -> bool {
        self.tags.remove(tag)
    }

    /// The other child elements (`devices`, `volume-config`, unknown ones) as
    /// `(element name, raw XML)` in file order.
    pub fn raw_elements(&self) -> Vec<(&str, &[u8])> {
        self.children
            .iter()
            .filter_map(|(_, c)| match c {
                DChild::Other { name, raw } if !name.is_empty() => {
                    Some((name.as_str(), raw.as_slice()))
                }
                _ => None,
            })
            .collect()
    }

    /// Replaces every child element called `name` by `elements` (each one complete element,
    /// serialised by the caller for depth 3: no leading indent, inner lines indented with 8+
    /// spaces). The new ones take the place of the first old one, or go last.
    pub fn set_raw_elements(&mut self, name: &str, elements: Vec<Vec<u8>>) {
        let first = self
            .children
            .iter()
            .position(|(_, c)| matches!(c, DChild::Other { name: n, .. } if n == name));
        let old_count = self.children.len();
        self.children
            .retain(|(_, c)| !matches!(c, DChild::Other { name: n, .. } if n == name));
        if old_count == self.children.len() && elements.is_empty() {
            return;
        }
        let at = first
            .unwrap_or(self.children.len())
            .min(self.children.len());
        for (i, raw) in elements.into_iter().enumerate() {
            self.children.insert(
                at + i,
                (
                    None,
                    DChild::Other {
                        name: name.to_string(),
                        raw,
                    },
                ),
            );
        }
        self.struct_changed = true;
    }
}

// ---------------------------------------------------------------------------------------------
// Document
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Dom {
    /// The element in the source (None: new or virtual).
    span: Option<Span>,
    /// The text between the previous sibling and this element (dropped on removal).
    lead: Option<Span>,
    /// Class `AdminVM` (name, qid and uuid are fixed).
    admin: bool,
    class: Txt,
    name: Txt,
    qid: Option<u32>,
    uuid: Option<Txt>,
    /// Boxed: most domains are never parsed, and the index stays small.
    data: OnceCell<Box<DomainData>>,
    removed: bool,
    /// Virtual dom0 (not in the file): written only if its data changed.
    virt: bool,
}

impl Dom {
    fn is_admin(&self) -> bool {
        self.admin
    }
}

#[derive(Debug, Clone, Copy)]
struct Container {
    /// Whole element.
    span: Span,
    /// End of the start tag (insertion point for a first child).
    open_end: usize,
    self_closing: bool,
}

/// One qubes.xml, indexed. Domains are parsed lazily on first access.
#[derive(Debug)]
pub struct Document {
    src: Vec<u8>,
    /// Root element (`<qubes>`): end of its start tag, and start of its end tag.
    root_open_end: usize,
    root_self_closing: bool,
    root_close_start: usize,
    /// The top-level sections and their spans in the source (None: absent).
    labels: Section,
    labels_span: Option<Span>,
    pools: Section,
    pools_span: Option<Span>,
    props: Section,
    props_span: Option<Span>,
    label_list: Vec<Label>,
    pool_list: Vec<Pool>,
    domains_c: Option<Container>,
    doms: Vec<Dom>,
    /// Document order of live domains.
    order: Vec<DomId>,
    /// fnv(name) → domain; fnv(lowercase uuid) → domain (later wins).
    by_name: HashIndex,
    by_uuid: HashIndex,
    /// Set by any `data_mut` or `remove_domain`: the hash index may then miss (a renamed
    /// domain, a removed duplicate hiding an earlier one), so a miss falls back to a scan.
    names_stale: bool,
    domains_changed: bool,
}

fn skip_ws(src: &[u8], mut i: usize, end: usize) -> usize {
    while i < end
        && src
            .get(i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

fn name_end_at(src: &[u8], i: usize) -> bool {
    src.get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'>' | b'/'))
}

/// Identity found by the index: name, qid, uuid.
type Ids = (Txt, Option<u32>, Option<Txt>);
/// One indexed domain: lead, span, class, identity (None: parse the domain to find it).
type Indexed = (Span, Span, Txt, Option<Ids>);

/// Text that is either a verbatim (entity-free, UTF-8) span of the source or owned.
#[derive(Debug, Clone)]
enum Txt {
    Src(Span),
    Own(String),
}

impl Default for Txt {
    fn default() -> Self {
        Txt::Own(String::new())
    }
}

impl Txt {
    fn from_src(src: &[u8], span: Span) -> Txt {
        let b = span.of(src);
        if memchr::memchr(b'&', b).is_none() && std::str::from_utf8(b).is_ok() {
            Txt::Src(span)
        } else {
            Txt::Own(xml::decode(b))
        }
    }
    fn get<'a>(&'a self, src: &'a [u8]) -> &'a str {
        match self {
            Txt::Src(sp) => std::str::from_utf8(sp.of(src)).unwrap_or(""),
            Txt::Own(s) => s,
        }
    }
}

/// FNV-1a, for the name index (keys are hashes; entries are verified on lookup).
fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A hasher for keys that already are hashes.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashIndex = HashMap<u64, DomId, std::hash::BuildHasherDefault<IdHasher>>;

/// Marks a hash shared by different names: look up by scanning.
const AMBIGUOUS: DomId = DomId(usize::MAX);

fn index_insert(map: &mut HashIndex, key: &str, id: DomId, name_of: impl Fn(DomId) -> bool) {
    let h = fnv(key);
    match map.get(&h).copied() {
        Some(old) if old != AMBIGUOUS && !name_of(old) => {
            map.insert(h, AMBIGUOUS);
        }
        Some(AMBIGUOUS) => {}
        _ => {
            map.insert(h, id);
        }
    }
}

impl Document {
    pub fn parse(bytes: Vec<u8>) -> Result<Document, StoreError> {
        let mut doc = Document::empty();
        match doc.index(&bytes, true) {
            Err(e) if e.reason == RETRY_SLOW => {
                doc = Document::empty();
                doc.index(&bytes, false).map_err(perr)?;
            }
            r => r.map_err(perr)?,
        }
        doc.src = bytes;
        doc.finish_index()?;
        Ok(doc)
    }

    fn empty() -> Document {
        Document {
            src: Vec::new(),
            root_open_end: 0,
            root_self_closing: false,
            root_close_start: 0,
            labels: Section::absent(Kind::Label, "labels", 1),
            labels_span: None,
            pools: Section::absent(Kind::Pool, "pools", 1),
            pools_span: None,
            props: Section::absent(Kind::Property, "properties", 1),
            props_span: None,
            label_list: Vec::new(),
            pool_list: Vec::new(),
            domains_c: None,
            doms: Vec::new(),
            order: Vec::new(),
            by_name: HashIndex::default(),
            by_uuid: HashIndex::default(),
            names_stale: false,
            domains_changed: false,
        }
    }

    fn index(&mut self, src: &[u8], allow_fast: bool) -> Result<(), XmlError> {
        let mut used_fast = false;
        let mut lx = Lexer::new(src, 0);
        // Prolog.
        let root = loop {
            let Some(t) = lx.next_tok()? else {
                return Err(XmlError {
                    offset: src.len(),
                    reason: "no root element",
                });
            };
            match t.kind {
                TokKind::Start { .. } => break t,
                TokKind::Text if xml::is_blank(t.span.of(src)) => {}
                TokKind::Text => {
                    return Err(XmlError {
                        offset: t.span.start,
                        reason: "text before the root element",
                    })
                }
                TokKind::End { .. } => {
                    return Err(XmlError {
                        offset: t.span.start,
                        reason: "unexpected end tag",
                    })
                }
                _ => {}
            }
        };
        let TokKind::Start { name, empty, .. } = root.kind else {
            return Err(XmlError {
                offset: root.span.start,
                reason: "no root element",
            });
        };
        if !name_is(src, name, "qubes") {
            return Err(XmlError {
                offset: root.span.start,
                reason: "the root element is not <qubes>",
            });
        }
        self.root_open_end = root.span.end;
        if empty {
            self.root_self_closing = true;
            self.root_close_start = root.span.end;
            return Ok(());
        }
        loop {
            let Some(t) = lx.next_tok()? else {
                return Err(XmlError {
                    offset: src.len(),
                    reason: "unterminated <qubes>",
                });
            };
            match t.kind {
                TokKind::End { name } => {
                    if !name_is(src, name, "qubes") {
                        return Err(XmlError {
                            offset: t.span.start,
                            // The fast path may have taken a nested `</domains>` for ours.
                            reason: if used_fast {
                                RETRY_SLOW
                            } else {
                                "mismatched end tag (expected </qubes>)"
                            },
                        });
                    }
                    self.root_close_start = t.span.start;
                    return Ok(());
                }
                TokKind::Start { name, empty, .. } => {
                    let n = name.of(src);
                    if n == b"labels" && self.labels_span.is_none() {
                        self.labels = Section::parse(src, &mut lx, t, Kind::Label, "labels", 1)?;
                        self.labels_span = Some(Span::new(t.span.start, lx.pos()));
                    } else if n == b"pools" && self.pools_span.is_none() {
                        self.pools = Section::parse(src, &mut lx, t, Kind::Pool, "pools", 1)?;
                        self.pools_span = Some(Span::new(t.span.start, lx.pos()));
                    } else if n == b"properties" && self.props_span.is_none() {
                        self.props =
                            Section::parse(src, &mut lx, t, Kind::Property, "properties", 1)?;
                        self.props_span = Some(Span::new(t.span.start, lx.pos()));
                    } else if n == b"domains" && self.domains_c.is_none() {
                        if empty {
                            self.domains_c = Some(Container {
                                span: t.span,
                                open_end: t.span.end,
                                self_closing: true,
                            });
                        } else {
                            let fast = if allow_fast {
                                Self::index_domains_fast(src, t.span.end)
                            } else {
                                None
                            };
                            used_fast = fast.is_some();
                            let found = match fast {
                                Some(f) => f,
                                None => {
                                    Self::index_domains_slow(src, &mut Lexer::new(src, t.span.end))?
                                }
                            };
                            let (doms, close_end) = found;
                            lx = Lexer::new(src, close_end);
                            self.domains_c = Some(Container {
                                span: Span::new(t.span.start, close_end),
                                open_end: t.span.end,
                                self_closing: false,
                            });
                            for (lead, span, class, ids) in doms {
                                let data = OnceCell::new();
                                let (name, qid, uuid) = match ids {
                                    Some(ids) => ids,
                                    None => {
                                        let d = DomainData::parse(src, span)?;
                                        let ids = (
                                            Txt::Own(
                                                d.property("name").unwrap_or_default().to_string(),
                                            ),
                                            d.property("qid").and_then(|q| q.trim().parse().ok()),
                                            d.property("uuid").map(|u| Txt::Own(u.to_string())),
                                        );
                                        let _ = data.set(Box::new(d));
                                        ids
                                    }
                                };
                                let admin = class.get(src) == "AdminVM";
                                self.doms.push(Dom {
                                    span: Some(span),
                                    lead: Some(lead),
                                    admin,
                                    class,
                                    name,
                                    qid,
                                    uuid,
                                    data,
                                    removed: false,
                                    virt: false,
                                });
                            }
                        }
                    } else if !empty {
                        lx.skip_element()?;
                    }
                }
                _ => {}
            }
        }
    }

    /// The canonical-shape fast path: the `<domains>` content is whitespace-separated
    /// `<domain>` elements with no comments, CDATA or PIs inside (so every `<` starts a tag and
    /// every `</domain` is an end tag). Returns None to fall back. A nested `<domain>` makes a later
    /// step fail (the next non-blank content is then not a `<domain` start tag); a nested
    /// `<domains>` is caught by the caller (the next end tag is then not `</qubes>`).
    fn index_domains_fast(src: &[u8], content_start: usize) -> Option<(Vec<Indexed>, usize)> {
        let dom_close = memmem::Finder::new(b"</domain");
        let mut out = Vec::with_capacity(src.len().saturating_sub(content_start) / 1024 + 1);
        let mut pos = content_start;
        loop {
            let lead_start = pos;
            pos = skip_ws(src, pos, src.len());
            let rest = src.get(pos..)?;
            if rest.starts_with(b"</domains") && name_end_at(src, pos + 9) {
                let close_end = memchr::memchr(b'>', rest)? + pos + 1;
                return Some((out, close_end));
            }
            if !rest.starts_with(b"<domain") || !name_end_at(src, pos + 7) {
                return None;
            }
            let mut lx = Lexer::new(src, pos);
            let tok = lx.next_tok().ok()??;
            let TokKind::Start { attrs, empty, .. } = tok.kind else {
                return None;
            };
            let class = xml::attr_span(src, attrs, "class")
                .map(|c| Txt::from_src(src, c))
                .unwrap_or_default();
            let lead = Span::new(lead_start, pos);
            if empty {
                out.push((lead, tok.span, class, None));
                pos = tok.span.end;
                continue;
            }
            let (ids, scan_from) = if class.get(src) == "AdminVM" {
                (Some((Txt::default(), Some(0), None)), tok.span.end)
            } else {
                match Self::fast_ids(src, tok.span.end, src.len()) {
                    Some((ids, after)) => (Some(ids), after),
                    None => (None, tok.span.end),
                }
            };
            let end_tag = dom_close.find(src.get(scan_from..)?)? + scan_from;
            if !name_end_at(src, end_tag + 8) {
                return None;
            }
            let end = memchr::memchr(b'>', src.get(end_tag..)?)? + end_tag + 1;
            // No comments, CDATA, PIs or DOCTYPE inside (`!` and `?` are rare in qubes.xml, so
            // look for them rather than for `<!`/`<?`).
            let body = src.get(tok.span.end..end_tag)?;
            let mut from = 0;
            while let Some(i) = memchr::memchr2(b'!', b'?', body.get(from..)?) {
                let at = from + i;
                if at > 0 && body.get(at - 1) == Some(&b'<') {
                    return None;
                }
                from = at + 1;
            }
            out.push((lead, Span::new(pos, end), class, ids));
            pos = end;
        }
    }

    /// Walks a canonical `<properties>` (first child, one `<property name="k">v</property>`
    /// after another) until name, qid and uuid are known. Returns them and the offset reached.
    fn fast_ids(src: &[u8], a: usize, b: usize) -> Option<(Ids, usize)> {
        let mut p = skip_ws(src, a, b);
        let rest = src.get(p..b)?;
        if !rest.starts_with(b"<properties>") {
            return None;
        }
        p += 12;
        let (mut name, mut qid, mut uuid) = (None, None, None);
        loop {
            p = skip_ws(src, p, b);
            let rest = src.get(p..b)?;
            if !rest.starts_with(b"<property name=\"") {
                return None; // `</properties>` before all three, or another shape
            }
            let ks = p + 16;
            let ke = memchr::memchr(b'"', src.get(ks..b)?)? + ks;
            if src.get(ke + 1) != Some(&b'>') {
                return None;
            }
            let vs = ke + 2;
            let ve = memchr::memchr(b'<', src.get(vs..b)?)? + vs;
            if !src.get(ve..b)?.starts_with(b"</property>") {
                return None;
            }
            let key = src.get(ks..ke)?;
            let val = Span::new(vs, ve);
            match key {
                b"name" => name = Some(Txt::from_src(src, val)),
                b"qid" => qid = Some(xml::decode(val.of(src)).trim().parse::<u32>().ok()?),
                b"uuid" => uuid = Some(Txt::from_src(src, val)),
                _ => {}
            }
            p = ve + 11;
            if let (Some(n), Some(q), Some(u)) = (&name, qid, &uuid) {
                return Some(((n.clone(), Some(q), Some(u.clone())), p));
            }
        }
    }

    /// The general path: lex the `<domains>` content.
    fn index_domains_slow(
        src: &[u8],
        lx: &mut Lexer<'_>,
    ) -> Result<(Vec<Indexed>, usize), XmlError> {
        let mut out = Vec::new();
        let mut lead_start = lx.pos();
        loop {
            let Some(t) = lx.next_tok()? else {
                return Err(XmlError {
                    offset: src.len(),
                    reason: "unterminated <domains>",
                });
            };
            match t.kind {
                TokKind::End { name } if name_is(src, name, "domains") => {
                    return Ok((out, t.span.end))
                }
                TokKind::End { .. } => {
                    return Err(XmlError {
                        offset: t.span.start,
                        reason: "mismatched end tag (expected </domains>)",
                    })
                }
                TokKind::Start { name, attrs, empty } => {
                    let end = if empty {
                        t.span.end
                    } else {
                        lx.skip_element()?
                    };
                    if name_is(src, name, "domain") {
                        let class = xml::attr_span(src, attrs, "class")
                            .map(|c| Txt::from_src(src, c))
                            .unwrap_or_default();
                        let ids =
                            (class.get(src) == "AdminVM").then(|| (Txt::default(), Some(0), None));
                        out.push((
                            Span::new(lead_start, t.span.start),
                            Span::new(t.span.start, end),
                            class,
                            ids,
                        ));
                        lead_start = end;
                    }
                }
                _ => {}
            }
        }
    }

    fn finish_index(&mut self) -> Result<(), StoreError> {
        self.label_list = self.labels.entries().map(entry_label).collect();
        self.pool_list = self.pools.entries().map(entry_pool).collect();
        let has_dom0 = self.doms.iter().any(|d| d.is_admin() || d.qid == Some(0));
        if !has_dom0 {
            let snippet = b"<domain id=\"domain-0\" class=\"AdminVM\">\n      <properties>\n        <property name=\"label\">black</property>\n      </properties>\n      <features/>\n      <tags/>\n    </domain>";
            let data = DomainData::parse(snippet, Span::new(0, snippet.len())).map_err(perr)?;
            let cell = OnceCell::new();
            let _ = cell.set(Box::new(data));
            self.doms.insert(
                0,
                Dom {
                    span: None,
                    lead: None,
                    admin: true,
                    class: Txt::Own("AdminVM".to_string()),
                    name: Txt::default(),
                    qid: Some(0),
                    uuid: None,
                    data: cell,
                    removed: false,
                    virt: true,
                },
            );
        }
        self.order = (0..self.doms.len()).map(DomId).collect();
        self.by_name.reserve(self.doms.len());
        self.by_uuid.reserve(self.doms.len());
        for i in 0..self.doms.len() {
            self.index_ids(DomId(i));
        }
        Ok(())
    }

    fn index_ids(&mut self, id: DomId) {
        let mut by_name = std::mem::take(&mut self.by_name);
        let mut by_uuid = std::mem::take(&mut self.by_uuid);
        let name = self.name(id);
        index_insert(&mut by_name, name, id, |o| {
            !self.live(o) || self.name(o) == name
        });
        if let Some(u) = self.uuid(id) {
            let lower;
            let u = if u.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = u.to_ascii_lowercase();
                lower.as_str()
            } else {
                u
            };
            index_insert(&mut by_uuid, u, id, |o| {
                !self.live(o) || self.uuid(o).is_some_and(|x| x.eq_ignore_ascii_case(u))
            });
        }
        self.by_name = by_name;
        self.by_uuid = by_uuid;
    }

    fn lookup(
        &self,
        map: &HashIndex,
        key: &str,
        is: &dyn Fn(DomId) -> bool,
        from_end: bool,
    ) -> Option<DomId> {
        match map.get(&fnv(key)).copied() {
            Some(id) if id != AMBIGUOUS && self.live(id) && is(id) => return Some(id),
            Some(AMBIGUOUS) => {}
            _ if self.names_stale => {}
            _ => return None,
        }
        if from_end {
            self.order.iter().rev().copied().find(|&id| is(id))
        } else {
            self.order.iter().copied().find(|&id| is(id))
        }
    }

    /// Serialises; byte-identical to the input when nothing was modified.
    pub fn to_bytes(&self) -> Vec<u8> {
        let src = &self.src;
        // (start, end, replacement) patches on the source, applied in order.
        let mut patches: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        let mut insert_top: Vec<Vec<u8>> = Vec::new(); // new top-level sections, in order
        let mut top_anchor = self.root_open_end;
        for (sec, span) in [
            (&self.labels, self.labels_span),
            (&self.pools, self.pools_span),
            (&self.props, self.props_span),
        ] {
            match span {
                Some(sp) => {
                    if sec.changed() {
                        let mut b = Vec::new();
                        sec.write(&mut b);
                        patches.push((sp.start, sp.end, b));
                    }
                    if !insert_top.is_empty() {
                        Self::flush_inserts(&mut patches, top_anchor, &mut insert_top);
                    }
                    top_anchor = sp.end;
                }
                None => {
                    if sec.changed() {
                        let mut b = Vec::new();
                        sec.write(&mut b);
                        insert_top.push(b);
                    }
                }
            }
        }
        if let Some(c) = &self.domains_c {
            if !insert_top.is_empty() {
                Self::flush_inserts(&mut patches, top_anchor, &mut insert_top);
            }
            top_anchor = c.span.end;
        }
        // Domains.
        let mut new_doms: Vec<(usize, Vec<u8>)> = Vec::new(); // (anchor, bytes)
        let mut anchor = self.domains_c.map(|c| c.open_end);
        let mut any_live_in_file = false;
        for id in &self.order {
            let Some(d) = self.doms.get(id.0) else {
                continue;
            };
            match d.span {
                Some(sp) => {
                    any_live_in_file = true;
                    if let Some(data) = d.data.get().filter(|x| x.changed()) {
                        let mut b = Vec::new();
                        data.write(&mut b, d.class.get(src), d.qid.unwrap_or(0));
                        patches.push((sp.start, sp.end, b));
                    }
                    anchor = Some(sp.end);
                }
                None => {
                    let Some(data) = d.data.get() else { continue };
                    if d.virt && !data.changed() {
                        continue;
                    }
                    let mut b = Vec::new();
                    indent(&mut b, 2);
                    let qid = if d.is_admin() {
                        0
                    } else {
                        self.qid(*id).unwrap_or(0)
                    };
                    data.write(&mut b, d.class.get(src), qid);
                    new_doms.push((anchor.unwrap_or(0), b));
                }
            }
        }
        for d in &self.doms {
            if d.removed {
                if let (Some(sp), Some(lead)) = (d.span, d.lead) {
                    patches.push((lead.start, sp.end, Vec::new()));
                }
            }
        }
        let container_ok = matches!(self.domains_c, Some(c) if !c.self_closing);
        if !new_doms.is_empty() {
            if container_ok {
                for (a, b) in new_doms {
                    patches.push((a, a, b));
                }
            } else {
                // `<domains/>` or no `<domains>` at all: write the container.
                let mut b = b"<domains>".to_vec();
                for (_, d) in new_doms {
                    b.extend_from_slice(&d);
                }
                indent(&mut b, 1);
                b.extend_from_slice(b"</domains>");
                match self.domains_c {
                    Some(c) => patches.push((c.span.start, c.span.end, b)),
                    None => insert_top.push(b),
                }
            }
        } else if !any_live_in_file && self.domains_changed && container_ok {
            // Every domain removed: lxml writes an empty container as `<domains/>`.
            if let Some(c) = self.domains_c {
                patches.retain(|p| p.0 < c.span.start || p.1 > c.span.end);
                patches.push((c.span.start, c.span.end, b"<domains/>".to_vec()));
            }
        }
        if !insert_top.is_empty() {
            if self.root_self_closing {
                let mut b = b">".to_vec();
                for s in insert_top {
                    indent(&mut b, 1);
                    b.extend_from_slice(&s);
                }
                b.extend_from_slice(b"\n</qubes>");
                // Replace the "/>" of the root start tag.
                let start = self.root_open_end.saturating_sub(2);
                patches.push((start, self.root_open_end, b));
            } else {
                Self::flush_inserts(&mut patches, top_anchor, &mut insert_top);
            }
        }
        patches.sort_by_key(|p| (p.0, p.1));
        let mut out = Vec::with_capacity(src.len() + 256);
        let mut pos = 0usize;
        for (s, e, b) in patches {
            if s < pos {
                continue; // overlapping (cannot happen with well-formed patches)
            }
            out.extend_from_slice(src.get(pos..s).unwrap_or(&[]));
            out.extend_from_slice(&b);
            pos = e;
        }
        out.extend_from_slice(src.get(pos..).unwrap_or(&[]));
        out
    }

    fn flush_inserts(
        patches: &mut Vec<(usize, usize, Vec<u8>)>,
        at: usize,
        items: &mut Vec<Vec<u8>>,
    ) {
        let mut b = Vec::new();
        for s in items.drain(..) {
            indent(&mut b, 1);
            b.extend_from_slice(&s);
        }
        patches.push((at, at, b));
    }

    pub fn is_modified(&self) -> bool {
        self.labels.changed()
            || self.pools.changed()
            || self.props.changed()
            || self.domains_changed
            || self
                .doms
                .iter()
                .any(|d| !d.removed && d.data.get().is_some_and(|x| x.changed()))
    }

    /// Labels in file order.
    pub fn labels(&self) -> &[Label] {
        &self.label_list
    }
    /// Adds a label (kept sorted by index in the file). A label with the same index or name
    /// is replaced.
    pub fn add_label(&mut self, label: Label) {
        self.labels.items.retain(
            |i| !matches!(&i.body, Body::Entry(e) if e.index == label.index || e.key == label.name),
        );
        let at = self
            .labels
            .items
            .iter()
            .position(|i| matches!(&i.body, Body::Entry(e) if e.index > label.index))
            .unwrap_or(self.labels.items.len());
        let e = Entry {
            key: label.name,
            value: label.color,
            index: label.index,
            ..Entry::default()
        };
        self.labels.insert_item(
            at,
            Item {
                lead: None,
                body: Body::Entry(e),
            },
        );
        self.label_list = self.labels.entries().map(entry_label).collect();
    }
    pub fn remove_label(&mut self, name: &str) -> bool {
        let r = self.labels.remove(name);
        self.label_list = self.labels.entries().map(entry_label).collect();
        r
    }
    pub fn pools(&self) -> &[Pool] {
        &self.pool_list
    }
    /// Adds (or replaces, by name) a pool; a new one is appended.
    pub fn set_pool(&mut self, pool: Pool) {
        let mut attrs = pool.attrs;
        if !attrs.iter().any(|(k, _)| k == "name") {
            attrs.insert(0, ("name".to_string(), pool.name.clone()));
        }
        if !attrs.iter().any(|(k, _)| k == "driver") {
            attrs.push(("driver".to_string(), pool.driver));
        }
        let e = Entry {
            key: pool.name.clone(),
            attrs,
            ..Entry::default()
        };
        match self.pools.pos(&pool.name) {
            Some(i) => {
                if let Some(it) = self.pools.items.get_mut(i) {
                    it.body = Body::Entry(e);
                }
                self.pools.touch();
            }
            None => {
                let n = self.pools.items.len();
                self.pools.insert_item(
                    n,
                    Item {
                        lead: None,
                        body: Body::Entry(e),
                    },
                );
            }
        }
        self.pool_list = self.pools.entries().map(entry_pool).collect();
    }
    pub fn remove_pool(&mut self, name: &str) -> bool {
        let r = self.pools.remove(name);
        self.pool_list = self.pools.entries().map(entry_pool).collect();
        r
    }
    pub fn global_property(&self, name: &str) -> Option<&str> {
        self.props.get(name).map(|e| e.value.as_str())
    }
    pub fn global_properties(&self) -> Vec<(&str, &str)> {
        self.props
            .entries()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect()
    }
    pub fn set_global_property(&mut self, name: &str, value: &str, rank: &dyn Fn(&str) -> usize) {
        self.props.set(name, value, Some(rank));
    }
    pub fn reset_global_property(&mut self, name: &str) -> bool {
        self.props.remove(name)
    }
    /// All domains in file order. The AdminVM (qid 0) is always present: if the file has none,
    /// a virtual dom0 is indexed (written only if modified).
    pub fn domains(&self) -> Vec<DomId> {
        self.order.clone()
    }
    /// By name (`dom0` for the AdminVM).
    pub fn domain_by_name(&self, name: &str) -> Option<DomId> {
        self.lookup(&self.by_name, name, &|id| self.name(id) == name, false)
    }
    /// By canonical lowercase UUID (all zeros for dom0); the later domain wins on duplicates.
    pub fn domain_by_uuid(&self, uuid: &str) -> Option<DomId> {
        let lower;
        let key = if uuid.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = uuid.to_ascii_lowercase();
            lower.as_str()
        } else {
            uuid
        };
        self.lookup(
            &self.by_uuid,
            key,
            &|id| self.uuid(id).is_some_and(|u| u.eq_ignore_ascii_case(uuid)),
            true,
        )
    }

    fn live(&self, id: DomId) -> bool {
        self.doms.get(id.0).is_some_and(|d| !d.removed)
    }

    /// Whether the domain is the AdminVM (class `AdminVM`).
    pub fn is_admin(&self, id: DomId) -> bool {
        self.doms.get(id.0).is_some_and(Dom::is_admin)
    }
    /// The `class` attribute (`AdminVM`, `AppVM`, ...).
    pub fn class(&self, id: DomId) -> &str {
        self.doms.get(id.0).map_or("", |d| d.class.get(&self.src))
    }
    pub fn name(&self, id: DomId) -> &str {
        let Some(d) = self.doms.get(id.0) else {
            return "";
        };
        if d.is_admin() {
            return "dom0";
        }
        match d.data.get() {
            Some(data) => data.property("name").unwrap_or(""),
            None => d.name.get(&self.src),
        }
    }
    pub fn qid(&self, id: DomId) -> Option<u32> {
        let d = self.doms.get(id.0)?;
        if d.is_admin() {
            return Some(0);
        }
        match d.data.get() {
            Some(data) => data.property("qid").and_then(|q| q.trim().parse().ok()),
            None => d.qid,
        }
    }
    /// Stored uuid text (all zeros for dom0).
    pub fn uuid(&self, id: DomId) -> Option<&str> {
        let d = self.doms.get(id.0)?;
        if d.is_admin() {
            return Some(DOM0_UUID);
        }
        match d.data.get() {
            Some(data) => data.property("uuid"),
            None => d.uuid.as_ref().map(|u| u.get(&self.src)),
        }
    }
    /// Parses the domain on first use.
    pub fn data(&self, id: DomId) -> Result<&DomainData, StoreError> {
        let Some(d) = self.doms.get(id.0) else {
            return Err(StoreError::Parse(format!("no domain with handle {}", id.0)));
        };
        if let Some(data) = d.data.get() {
            return Ok(data);
        }
        let Some(span) = d.span else {
            return Err(StoreError::Parse("domain has no content".to_string()));
        };
        let parsed = DomainData::parse(&self.src, span).map_err(perr)?;
        Ok(d.data.get_or_init(|| Box::new(parsed)))
    }
    /// Marks the domain modified.
    pub fn data_mut(&mut self, id: DomId) -> Result<&mut DomainData, StoreError> {
        self.data(id)?;
        self.names_stale = true;
        let Some(d) = self.doms.get_mut(id.0) else {
            return Err(StoreError::Parse(format!("no domain with handle {}", id.0)));
        };
        d.data
            .get_mut()
            .map(|b| &mut **b)
            .ok_or_else(|| StoreError::Parse("domain not loaded".to_string()))
    }

    /// Adds a new domain of `class` whose identity (name, qid, uuid) is in `data`'s properties.
    /// It is placed after dom0, before the first domain whose name sorts after it.
    pub fn add_domain(&mut self, class: &str, data: DomainData) -> DomId {
        let name = data.property("name").unwrap_or("").to_string();
        let id = DomId(self.doms.len());
        let cell = OnceCell::new();
        let _ = cell.set(Box::new(data));
        let is_admin = class == "AdminVM";
        self.doms.push(Dom {
            span: None,
            lead: None,
            admin: is_admin,
            class: Txt::Own(class.to_string()),
            name: Txt::Own(name.clone()),
            qid: None,
            uuid: None,
            data: cell,
            removed: false,
            virt: false,
        });
        let at = if is_admin {
            0
        } else {
            self.order
                .iter()
                .position(|&o| !self.is_admin(o) && self.name(o) > name.as_str())
                .unwrap_or(self.order.len())
        };
        self.order.insert(at, id);
        self.index_ids(id);
        self.domains_changed = true;
        id
    }

    /// Removes a domain; false if it was not there.
    pub fn remove_domain(&mut self, id: DomId) -> bool {
        let Some(d) = self.doms.get_mut(id.0) else {
            return false;
        };
        if d.removed {
            return false;
        }
        d.removed = true;
        // The index entry of a name or uuid held twice (a hand-edited file) pointed here.
        self.names_stale = true;
        self.order.retain(|&o| o != id);
        self.domains_changed = true;
        true
    }
}

fn entry_label(e: &Entry) -> Label {
    Label {
        index: e.index,
        color: e.value.clone(),
        name: e.key.clone(),
    }
}

fn entry_pool(e: &Entry) -> Pool {
    let driver = e
        .attrs
        .iter()
        .find(|(k, _)| k == "driver")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    Pool {
        name: e.key.clone(),
        driver,
        attrs: e.attrs.clone(),
    }
}
