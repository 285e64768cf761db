//! The document's index. Loading is an *index* pass: the top-level `<labels>`, `<pools>` and `<properties>` are
//! parsed (they are small), and for every `<domain>` only its byte span, `class` attribute and
//! name/qid/uuid are found (with memchr/memmem scans when the file has the canonical shape, with
//! the full lexer otherwise). The name/UUID hash index answers lookups.

use std::cell::OnceCell;
use std::collections::HashMap;

use memchr::memmem;

use super::document::{entry_label, entry_pool, Document, DomId};
use super::domain::DomainData;
use super::section::{name_is, perr, Kind, Section};
use super::StoreError;
use crate::store::xml::{self, Lexer, Span, TokKind, XmlError};

pub(super) const RETRY_SLOW: &str = "retry without the fast path";

#[derive(Debug)]
pub(super) struct Dom {
    /// The element in the source (None: new or virtual).
    pub(super) span: Option<Span>,
    /// The text between the previous sibling and this element (dropped on removal).
    pub(super) lead: Option<Span>,
    /// Class `AdminVM` (name, qid and uuid are fixed).
    pub(super) admin: bool,
    pub(super) class: Txt,
    pub(super) name: Txt,
    pub(super) qid: Option<u32>,
    pub(super) uuid: Option<Txt>,
    /// Boxed: most domains are never parsed, and the index stays small.
    pub(super) data: OnceCell<Box<DomainData>>,
    pub(super) removed: bool,
    /// Virtual dom0 (not in the file): written only if its data changed.
    pub(super) virt: bool,
}

impl Dom {
    pub(super) fn is_admin(&self) -> bool {
        self.admin
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Container {
    /// Whole element.
    pub(super) span: Span,
    /// End of the start tag (insertion point for a first child).
    pub(super) open_end: usize,
    pub(super) self_closing: bool,
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

/// One indexed domain from its lead, span, class and identity (None: the domain is parsed now
/// to find it, and stays parsed).
fn make_dom(
    src: &[u8],
    lead: Span,
    span: Span,
    class: Txt,
    ids: Option<Ids>,
) -> Result<Dom, XmlError> {
    let data = OnceCell::new();
    let (name, qid, uuid) = match ids {
        Some(ids) => ids,
        None => {
            let d = DomainData::parse(src, span)?;
            let ids = (
                Txt::Own(d.property("name").unwrap_or_default().to_string()),
                d.property("qid").and_then(|q| q.trim().parse().ok()),
                d.property("uuid").map(|u| Txt::Own(u.to_string())),
            );
            let _ = data.set(Box::new(d));
            ids
        }
    };
    let admin = class.get(src) == "AdminVM";
    Ok(Dom {
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
    })
}

/// Text that is either a verbatim (entity-free, UTF-8) span of the source or owned.
#[derive(Debug, Clone)]
pub(super) enum Txt {
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
    pub(super) fn get<'a>(&'a self, src: &'a [u8]) -> &'a str {
        match self {
            Txt::Src(sp) => std::str::from_utf8(sp.of(src)).unwrap_or(""),
            Txt::Own(s) => s,
        }
    }
}

/// FNV-1a, for the name index (keys are hashes; entries are verified on lookup).
pub(super) fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A hasher for keys that already are hashes.
#[derive(Default, Clone, Copy)]
pub(super) struct IdHasher(u64);

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

pub(super) type HashIndex = HashMap<u64, DomId, std::hash::BuildHasherDefault<IdHasher>>;

/// Marks a hash shared by different names: look up by scanning.
const AMBIGUOUS: DomId = DomId(usize::MAX);

fn index_insert(map: &mut HashIndex, key: &str, id: DomId, name_of: impl Fn(DomId) -> bool) {
    index_insert_hashed(map, fnv(key), id, name_of);
}

/// [`index_insert`] of a key already hashed (`name_of` tells whether a domain already in the
/// map has the same key: only asked on a hash collision).
fn index_insert_hashed(map: &mut HashIndex, h: u64, id: DomId, name_of: impl Fn(DomId) -> bool) {
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
    pub(super) fn index(&mut self, src: &[u8], allow_fast: bool) -> Result<(), XmlError> {
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
                            self.doms = doms;
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
    fn index_domains_fast(src: &[u8], content_start: usize) -> Option<(Vec<Dom>, usize)> {
        let dom_close = memmem::Finder::new(b"</domain");
        // Domains are 1–2 KiB in canonical files: one allocation, touched once.
        let mut out = Vec::with_capacity(src.len().saturating_sub(content_start) / 1280 + 2);
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
                out.push(make_dom(src, lead, tok.span, class, None).ok()?);
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
            out.push(make_dom(src, lead, Span::new(pos, end), class, ids).ok()?);
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
    fn index_domains_slow(src: &[u8], lx: &mut Lexer<'_>) -> Result<(Vec<Dom>, usize), XmlError> {
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
                        out.push(make_dom(
                            src,
                            Span::new(lead_start, t.span.start),
                            Span::new(t.span.start, end),
                            class,
                            ids,
                        )?);
                        lead_start = end;
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn finish_index(&mut self) -> Result<(), StoreError> {
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

    /// A document from `src` and its index file's contents (see `file_index`): the top-level
    /// sections are parsed at their recorded spans, domains are not scanned, and the name and
    /// uuid maps come from the recorded hashes. None if the recorded spans do not hold what they
    /// should (the caller then scans).
    pub(super) fn from_decoded(
        src: super::document::Source,
        d: super::file_index::Decoded,
    ) -> Result<Document, super::document::Source> {
        let Some((mut doc, hashes)) = Self::build_decoded(&src, d) else {
            return Err(src);
        };
        doc.src = src;
        let (mut by_name, mut by_uuid) = (HashIndex::default(), HashIndex::default());
        by_name.reserve(doc.doms.len());
        by_uuid.reserve(doc.doms.len());
        for (i, (nh, uh)) in hashes.into_iter().enumerate() {
            let id = DomId(i);
            index_insert_hashed(&mut by_name, nh, id, |o| doc.name(o) == doc.name(id));
            if let Some(uh) = uh {
                index_insert_hashed(&mut by_uuid, uh, id, |o| {
                    match (doc.uuid(o), doc.uuid(id)) {
                        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                        _ => false,
                    }
                });
            }
        }
        doc.by_name = by_name;
        doc.by_uuid = by_uuid;
        Ok(doc)
    }

    /// [`Document::from_decoded`] up to the maps (which need the source in place).
    #[allow(clippy::type_complexity)]
    fn build_decoded(
        src: &[u8],
        d: super::file_index::Decoded,
    ) -> Option<(Document, Vec<(u64, Option<u64>)>)> {
        let mut doc = Document::empty();
        doc.root_open_end = d.root_open_end;
        doc.root_close_start = d.root_close_start;
        doc.root_self_closing = d.root_self_closing;
        for (span, kind, tag) in [
            (d.labels, Kind::Label, "labels"),
            (d.pools, Kind::Pool, "pools"),
            (d.props, Kind::Property, "properties"),
        ] {
            let Some(span) = span else { continue };
            let mut lx = Lexer::new(src, span.start);
            let t = lx.next_tok().ok()??;
            let TokKind::Start { name, .. } = t.kind else {
                return None;
            };
            if !name_is(src, name, tag) || t.span.start != span.start {
                return None;
            }
            let sec = Section::parse(src, &mut lx, t, kind, tag, 1).ok()?;
            if lx.pos() != span.end {
                return None;
            }
            match kind {
                Kind::Label => (doc.labels, doc.labels_span) = (sec, Some(span)),
                Kind::Pool => (doc.pools, doc.pools_span) = (sec, Some(span)),
                _ => (doc.props, doc.props_span) = (sec, Some(span)),
            }
        }
        doc.domains_c = d.domains_c;
        for dom in &d.doms {
            // Each recorded domain starts with its start tag.
            let at = dom.span.map_or(usize::MAX, |s| s.start);
            if !src.get(at..)?.starts_with(b"<domain") {
                return None;
            }
        }
        if !d.doms.iter().any(Dom::is_admin) {
            return None;
        }
        doc.doms = d.doms;
        let hashes = d.hashes;
        doc.label_list = doc.labels.entries().map(entry_label).collect();
        doc.pool_list = doc.pools.entries().map(entry_pool).collect();
        doc.order = (0..doc.doms.len()).map(DomId).collect();
        Some((doc, hashes))
    }

    pub(super) fn index_ids(&mut self, id: DomId) {
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

    pub(super) fn lookup(
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
}
