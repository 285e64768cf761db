//! The qubes.xml document model.
//!
//! Contract (keep these signatures): the document keeps the original bytes; only sections that
//! a mutation touched are re-serialised (in lxml's pretty-print form), everything else —
//! including unknown elements and attributes — is copied verbatim, so an unmodified document
//! saves byte-identical.
//!
//! Loading only indexes the file (`index.rs`); a domain's properties, features and tags
//! (`domain.rs`) are parsed on first [`Document::data`] / [`Document::data_mut`]. The key/value
//! sections are in `section.rs`. See `docs/store.md`.

use std::cell::OnceCell;

use super::domain::DomainData;
use super::index::{Container, Dom, HashIndex, Txt, RETRY_SLOW};
use super::section::{indent, perr, Body, Entry, Item, Kind, Section};
use super::StoreError;
use crate::store::xml::Span;

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
/// The bytes of one qubes.xml version: a copy, or (per-call processes) a mapping of the file.
#[derive(Debug)]
pub enum Source {
    Owned(Vec<u8>),
    Mapped(crate::ffi::Mapping),
}

impl std::ops::Deref for Source {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Source::Owned(v) => v,
            Source::Mapped(m) => m,
        }
    }
}

/// One qubes.xml, indexed. Domains are parsed lazily on first access.
#[derive(Debug)]
pub struct Document {
    pub(super) src: Source,
    /// Root element (`<qubes>`): end of its start tag, and start of its end tag.
    pub(super) root_open_end: usize,
    pub(super) root_self_closing: bool,
    pub(super) root_close_start: usize,
    /// The top-level sections and their spans in the source (None: absent).
    pub(super) labels: Section,
    pub(super) labels_span: Option<Span>,
    pub(super) pools: Section,
    pub(super) pools_span: Option<Span>,
    pub(super) props: Section,
    pub(super) props_span: Option<Span>,
    pub(super) label_list: Vec<Label>,
    pub(super) pool_list: Vec<Pool>,
    pub(super) domains_c: Option<Container>,
    pub(super) doms: Vec<Dom>,
    /// Document order of live domains.
    pub(super) order: Vec<DomId>,
    /// fnv(name) → domain; fnv(lowercase uuid) → domain (later wins).
    pub(super) by_name: HashIndex,
    pub(super) by_uuid: HashIndex,
    /// Set by any `data_mut` or `remove_domain`: the hash index may then miss (a renamed
    /// domain, a removed duplicate hiding an earlier one), so a miss falls back to a scan.
    pub(super) names_stale: bool,
    domains_changed: bool,
}

impl Document {
    pub fn parse(bytes: Vec<u8>) -> Result<Document, StoreError> {
        Document::parse_source(Source::Owned(bytes))
    }

    /// [`Document::parse`] of bytes that may be a mapping.
    pub fn parse_source(bytes: Source) -> Result<Document, StoreError> {
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

    pub(super) fn empty() -> Document {
        Document {
            src: Source::Owned(Vec::new()),
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

    pub(super) fn live(&self, id: DomId) -> bool {
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
    /// Whether the domain's stored form may contain `needle`: a byte search of its source
    /// while it is unparsed (cheap: no parse), `true` once it is parsed or new (the caller then
    /// looks at [`Document::data`]). For scans that visit every domain for a rare match.
    pub fn may_contain(&self, id: DomId, needle: &[u8]) -> bool {
        match self.doms.get(id.0) {
            Some(d) if d.data.get().is_none() => d
                .span
                .is_none_or(|sp| memchr::memmem::find(sp.of(&self.src), needle).is_some()),
            _ => true,
        }
    }

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

pub(super) fn entry_label(e: &Entry) -> Label {
    Label {
        index: e.index,
        color: e.value.clone(),
        name: e.key.clone(),
    }
}

pub(super) fn entry_pool(e: &Entry) -> Pool {
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
