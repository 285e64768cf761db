//! The index file: what indexing one version of qubes.xml found (the root element, the spans
//! of the top-level sections, and for each domain its span, class, name, qid, uuid and the
//! hashes of name and uuid), saved so that the next call need not scan the file: loading is
//! then one small read, the top-level sections (a few KiB at the start) and, for each domain
//! a call looks at, its own bytes.
//!
//! Never trusted blindly: the file names the exact version it describes (device, inode, size,
//! modification and change time of qubes.xml, compared with the descriptor the caller opened)
//! and ends with a checksum; every offset is bounds- and order-checked. Anything else (another
//! version, a torn or garbage file, a format change) is ignored and the caller scans, then
//! writes a fresh index. Writers write it after each commit; it is a cache, written without
//! fsync (losing it costs one scan).
//!
//! Layout (little-endian): magic `QXIDX002`, the stamp (dev, ino, size: u64; mtime, ctime:
//! i128 ns), root open-tag end, root close-tag start, root self-closing (u32 each), three
//! sections (present, start, end: u32 each: labels, pools, properties), the `<domains>`
//! container (present, start, end, open-tag end, self-closing), the domain count, then per
//! domain 11 u32 (lead start/end, span start/end, class, name and uuid start/end, qid or
//! `u32::MAX`) plus flags (u32: admin, has uuid) and two u64 hashes; the checksum (u64) of all
//! that precedes it.

use super::document::Document;
use super::index::{Container, Dom, Txt};
use super::FileStamp;
use crate::store::xml::Span;

const MAGIC: &[u8; 8] = b"QXIDX002";
const NONE: u32 = u32::MAX;

/// A checksum for torn or garbage files (not against an adversary: the file lives in a
/// root-only directory).
fn checksum(b: &[u8]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in b.chunks(8) {
        let mut w = [0u8; 8];
        if let Some(dst) = w.get_mut(..chunk.len()) {
            dst.copy_from_slice(chunk);
        }
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29);
    }
    h ^ b.len() as u64
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: usize) -> Option<()> {
        self.0
            .extend_from_slice(&u32::try_from(v).ok()?.to_le_bytes());
        Some(())
    }
    /// The twin of [`Reader::range`].
    fn range(&mut self, s: Span) -> Option<()> {
        self.u32(s.start)?;
        self.u32(s.end)
    }
    /// The twin of [`Reader::opt_span`].
    fn span(&mut self, s: Option<Span>) -> Option<()> {
        self.u32(usize::from(s.is_some()))?;
        self.range(s.unwrap_or_default())
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    /// Offsets must lie within the described file.
    limit: usize,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.b.get(self.pos..self.pos + N)?;
        self.pos += N;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes::<8>().map(u64::from_le_bytes)
    }
    fn i128(&mut self) -> Option<i128> {
        self.bytes::<16>().map(i128::from_le_bytes)
    }
    fn offset(&mut self) -> Option<usize> {
        let v = usize::try_from(self.u32()?).ok()?;
        (v <= self.limit).then_some(v)
    }
    fn range(&mut self) -> Option<Span> {
        let (s, e) = (self.offset()?, self.offset()?);
        (s <= e).then_some(Span::new(s, e))
    }
    fn opt_span(&mut self) -> Option<Option<Span>> {
        let present = self.u32()?;
        let s = self.range()?;
        match present {
            0 => Some(None),
            1 => Some(Some(s)),
            _ => None,
        }
    }
}

fn put_stamp(out: &mut Vec<u8>, s: &FileStamp) {
    out.extend_from_slice(&s.dev.to_le_bytes());
    out.extend_from_slice(&s.ino.to_le_bytes());
    out.extend_from_slice(&s.size.to_le_bytes());
    out.extend_from_slice(&s.mtime_ns.to_le_bytes());
    out.extend_from_slice(&s.ctime_ns.to_le_bytes());
}

/// What [`Document::from_decoded`] takes from an index file.
pub(super) struct Decoded {
    pub(super) root_open_end: usize,
    pub(super) root_close_start: usize,
    pub(super) root_self_closing: bool,
    pub(super) labels: Option<Span>,
    pub(super) pools: Option<Span>,
    pub(super) props: Option<Span>,
    pub(super) domains_c: Option<Container>,
    pub(super) doms: Vec<Dom>,
    /// The hashes of each domain's name and uuid.
    pub(super) hashes: Vec<(u64, Option<u64>)>,
}

/// Encodes the index of `doc` as parsed from the version `stamp` (None when the document was
/// modified since, is too large for 32-bit offsets, or has a name, class or uuid that needed
/// decoding: those are rare and simply scanned each time).
pub(super) fn encode(doc: &Document, stamp: &FileStamp) -> Option<Vec<u8>> {
    if doc.is_modified() {
        return None;
    }
    let mut w = Writer(Vec::with_capacity(160 + doc.doms.len() * 64));
    w.0.extend_from_slice(MAGIC);
    put_stamp(&mut w.0, stamp);
    w.u32(doc.root_open_end)?;
    w.u32(doc.root_close_start)?;
    w.u32(usize::from(doc.root_self_closing))?;
    w.span(doc.labels_span)?;
    w.span(doc.pools_span)?;
    w.span(doc.props_span)?;
    match &doc.domains_c {
        Some(c) => {
            w.span(Some(c.span))?;
            w.u32(c.open_end)?;
            w.u32(usize::from(c.self_closing))?;
        }
        None => {
            w.span(None)?;
            w.u32(0)?;
            w.u32(0)?;
        }
    }
    // A virtual dom0 (a file without one) is rare: such files are scanned each time.
    if doc.doms.iter().any(|d| d.virt || d.removed) {
        return None;
    }
    w.u32(doc.doms.len())?;
    for (i, d) in doc.doms.iter().enumerate() {
        let id = super::document::DomId(i);
        let (Some(lead), Some(span)) = (d.lead, d.span) else {
            return None;
        };
        let src_span = |t: &Txt| match t {
            Txt::Src(s) => Some(*s),
            Txt::Own(s) if s.is_empty() => Some(Span::new(0, 0)),
            Txt::Own(_) => None,
        };
        w.range(lead)?;
        w.range(span)?;
        w.range(src_span(&d.class)?)?;
        w.range(src_span(&d.name)?)?;
        let uuid = match &d.uuid {
            Some(u) => src_span(u)?,
            None => Span::default(),
        };
        w.range(uuid)?;
        match d.qid {
            Some(q) if q != NONE => w.u32(q as usize)?,
            Some(_) => return None,
            None => w.0.extend_from_slice(&NONE.to_le_bytes()),
        }
        w.u32(usize::from(d.admin) | (usize::from(doc.uuid(id).is_some()) << 1))?;
        // The keys `index_ids` uses: dom0's are fixed whatever the file says.
        w.0.extend_from_slice(&super::index::fnv(doc.name(id)).to_le_bytes());
        let uuid_hash = doc
            .uuid(id)
            .map(|u| super::index::fnv(&u.to_ascii_lowercase()))
            .unwrap_or(0);
        w.0.extend_from_slice(&uuid_hash.to_le_bytes());
    }
    let sum = checksum(&w.0);
    w.0.extend_from_slice(&sum.to_le_bytes());
    Some(w.0)
}

/// Decodes an index file for the version `stamp` of a file of `len` bytes; None if it is for
/// another version, torn, garbage or of another format.
pub(super) fn decode(b: &[u8], stamp: &FileStamp, len: usize) -> Option<Decoded> {
    let body_len = b.len().checked_sub(8)?;
    let (body, sum) = (b.get(..body_len)?, b.get(body_len..)?);
    let mut sb = [0u8; 8];
    sb.copy_from_slice(sum);
    if u64::from_le_bytes(sb) != checksum(body) || body.get(..8)? != MAGIC {
        return None;
    }
    let mut r = Reader {
        b: body,
        pos: 8,
        limit: len,
    };
    let file = FileStamp {
        dev: r.u64()?,
        ino: r.u64()?,
        size: r.u64()?,
        mtime_ns: r.i128()?,
        ctime_ns: r.i128()?,
    };
    if file != *stamp || usize::try_from(file.size).ok()? != len {
        return None;
    }
    let root_open_end = r.offset()?;
    let root_close_start = r.offset()?;
    let root_self_closing = match r.u32()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let labels = r.opt_span()?;
    let pools = r.opt_span()?;
    let props = r.opt_span()?;
    let domains_span = r.opt_span()?;
    let open_end = r.offset()?;
    let self_closing = r.u32()? == 1;
    let domains_c = domains_span.map(|span| Container {
        span,
        open_end,
        self_closing,
    });
    let n = usize::try_from(r.u32()?).ok()?;
    // 11 u32 + flags + two u64 per domain: a count the file cannot hold is garbage.
    if n.checked_mul(64)? > body.len() {
        return None;
    }
    let mut doms = Vec::with_capacity(n + 1);
    let mut hashes = Vec::with_capacity(n + 1);
    let mut prev_end = root_open_end;
    for _ in 0..n {
        let lead = r.range()?;
        let span = r.range()?;
        let class = r.range()?;
        let name = r.range()?;
        let uuid = r.range()?;
        let qid = r.u32()?;
        let flags = r.u32()?;
        let name_hash = r.u64()?;
        let uuid_hash = r.u64()?;
        // Domains follow each other, each after its lead, inside the file.
        if lead.start < prev_end || lead.end != span.start || span.end > root_close_start {
            return None;
        }
        prev_end = span.end;
        let inside = |t: Span| t.is_empty() || (t.start >= span.start && t.end <= span.end);
        if !(inside(class) && inside(name) && inside(uuid)) || flags > 3 {
            return None;
        }
        let (admin, has_uuid) = (flags & 1 != 0, flags & 2 != 0);
        hashes.push((name_hash, has_uuid.then_some(uuid_hash)));
        doms.push(Dom {
            span: Some(span),
            lead: Some(lead),
            admin,
            class: Txt::Src(class),
            name: if name.is_empty() {
                Txt::default()
            } else {
                Txt::Src(name)
            },
            qid: (qid != NONE).then_some(qid),
            // dom0's uuid is fixed (`Document::uuid`); others' as stored.
            uuid: (has_uuid && !admin).then_some(Txt::Src(uuid)),
            data: std::cell::OnceCell::new(),
            removed: false,
            virt: false,
        });
    }
    (r.pos == body.len()).then_some(Decoded {
        root_open_end,
        root_close_start,
        root_self_closing,
        labels,
        pools,
        props,
        domains_c,
        doms,
        hashes,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::store::document::Source;

    const XML: &str = "<qubes>\n  <labels>\n    <label id=\"label-1\" color=\"0xcc0000\">red</label>\n  </labels>\n  <properties>\n    <property name=\"default_kernel\">6.6</property>\n  </properties>\n  <domains>\n    <domain id=\"domain-0\" class=\"AdminVM\">\n      <properties>\n        <property name=\"label\">red</property>\n      </properties>\n      <features/>\n      <tags/>\n    </domain>\n    <domain id=\"domain-1\" class=\"AppVM\">\n      <properties>\n        <property name=\"label\">red</property>\n        <property name=\"name\">work</property>\n        <property name=\"qid\">1</property>\n        <property name=\"uuid\">AAAAAAAA-0000-0000-0000-000000000001</property>\n      </properties>\n      <features/>\n      <tags/>\n    </domain>\n  </domains>\n</qubes>\n";

    fn stamp() -> FileStamp {
        FileStamp {
            dev: 1,
            ino: 2,
            size: XML.len() as u64,
            mtime_ns: 3,
            ctime_ns: 4,
        }
    }

    fn from_index(b: &[u8], s: &FileStamp) -> Option<Document> {
        let d = decode(b, s, XML.len())?;
        Document::from_decoded(Source::Owned(XML.as_bytes().to_vec()), d).ok()
    }

    /// What the index gives is what a scan gives: names, classes, qids, uuids, both lookups
    /// (dom0's fixed identity, uuids case-insensitively), the top-level sections, and the
    /// same bytes back.
    #[test]
    fn round_trip_equals_a_scan() {
        let scanned = Document::parse(XML.as_bytes().to_vec()).unwrap();
        let b = encode(&scanned, &stamp()).unwrap();
        let doc = from_index(&b, &stamp()).unwrap();
        for id in scanned.domains() {
            assert_eq!(doc.name(id), scanned.name(id));
            assert_eq!(doc.class(id), scanned.class(id));
            assert_eq!(doc.qid(id), scanned.qid(id));
            assert_eq!(doc.uuid(id), scanned.uuid(id));
        }
        let work = doc.domain_by_name("work").unwrap();
        assert_eq!(
            doc.domain_by_uuid("aaaaaaaa-0000-0000-0000-000000000001"),
            Some(work)
        );
        assert_eq!(doc.domain_by_name("dom0"), scanned.domain_by_name("dom0"));
        assert_eq!(
            doc.domain_by_uuid(crate::store::DOM0_UUID),
            doc.domain_by_name("dom0")
        );
        assert_eq!(doc.labels(), scanned.labels());
        assert_eq!(doc.global_property("default_kernel"), Some("6.6"));
        assert_eq!(doc.data(work).unwrap().property("label"), Some("red"));
        assert_eq!(doc.to_bytes(), XML.as_bytes());
    }

    /// Another version, a flipped byte anywhere, a cut anywhere: never used.
    #[test]
    fn anything_else_is_refused() {
        let scanned = Document::parse(XML.as_bytes().to_vec()).unwrap();
        let b = encode(&scanned, &stamp()).unwrap();
        for other in [
            FileStamp {
                ctime_ns: 5,
                ..stamp()
            },
            FileStamp {
                mtime_ns: 5,
                ..stamp()
            },
            FileStamp { ino: 9, ..stamp() },
            FileStamp { dev: 9, ..stamp() },
        ] {
            assert!(decode(&b, &other, XML.len()).is_none());
        }
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x40;
            assert!(decode(&x, &stamp(), XML.len()).is_none(), "byte {i}");
            assert!(decode(&b[..i], &stamp(), XML.len()).is_none(), "cut at {i}");
        }
        // A modified document has no index of its own.
        let mut changed = Document::parse(XML.as_bytes().to_vec()).unwrap();
        changed.set_global_property("default_kernel", "6.7", &|_| 0);
        assert!(encode(&changed, &stamp()).is_none());
    }
}
