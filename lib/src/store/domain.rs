//! One `<domain>`'s data: its properties, features, tags and the elements kept verbatim
//! (devices, volume config), parsed on first access.

use super::section::{indent, name_is, Kind, Section, State};
use crate::store::xml::{self, Lexer, Span, TokKind, XmlError};

#[derive(Debug, Clone)]
pub(super) enum DChild {
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
    pub(super) open: Option<Vec<u8>>,
    pub(super) close: Option<Vec<u8>>,
    pub(super) tail: Option<Vec<u8>>,
    pub(super) children: Vec<(Option<Vec<u8>>, DChild)>,
    pub(super) props: Section,
    pub(super) features: Section,
    pub(super) tags: Section,
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
    pub(super) fn absent() -> DomainData {
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
    pub(super) fn parse(src: &[u8], span: Span) -> Result<DomainData, XmlError> {
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
    pub(super) fn changed(&self) -> bool {
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

    pub(super) fn write(&self, out: &mut Vec<u8>, class: &str, qid: u32) {
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
