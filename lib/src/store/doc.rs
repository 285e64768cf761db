//! The qubes.xml document model. OWNER: store helper.
//!
//! Contract (keep these signatures): the document keeps the original bytes; only sections that
//! a mutation touched are re-serialised (in lxml's pretty-print form), everything else —
//! including unknown elements and attributes — is copied verbatim, so an unmodified document
//! saves byte-identical.

use super::StoreError;

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

/// Parsed content of one domain (properties, features, tags); other children stay raw.
#[derive(Debug, Clone, Default)]
pub struct DomainData {
    _private: (),
}

impl DomainData {
    pub fn property(&self, name: &str) -> Option<&str> {
        let _ = name;
        todo!()
    }
    /// Stored properties in file order.
    pub fn properties(&self) -> Vec<(&str, &str)> {
        todo!()
    }
    /// Stores a value; a new entry is inserted so that entries stay sorted by `rank`.
    pub fn set_property(&mut self, name: &str, value: &str, rank: &dyn Fn(&str) -> usize) {
        let _ = (name, value, rank);
        todo!()
    }
    /// Removes the stored value; false if there was none.
    pub fn reset_property(&mut self, name: &str) -> bool {
        let _ = name;
        todo!()
    }
    pub fn feature(&self, name: &str) -> Option<&str> {
        let _ = name;
        todo!()
    }
    /// Features in insertion (file) order.
    pub fn features(&self) -> Vec<(&str, &str)> {
        todo!()
    }
    /// Sets a feature; an existing one keeps its position, a new one is appended.
    pub fn set_feature(&mut self, name: &str, value: &str) {
        let _ = (name, value);
        todo!()
    }
    pub fn remove_feature(&mut self, name: &str) -> bool {
        let _ = name;
        todo!()
    }
    pub fn has_tag(&self, tag: &str) -> bool {
        let _ = tag;
        todo!()
    }
    /// Tags in file order (callers sort).
    pub fn tags(&self) -> Vec<&str> {
        todo!()
    }
    /// Adds a tag; false if it was already there.
    pub fn add_tag(&mut self, tag: &str) -> bool {
        let _ = tag;
        todo!()
    }
    pub fn remove_tag(&mut self, tag: &str) -> bool {
        let _ = tag;
        todo!()
    }
}

/// One qubes.xml, indexed. Domains are parsed lazily on first access.
#[derive(Debug)]
pub struct Document {
    _private: (),
}

impl Document {
    pub fn parse(bytes: Vec<u8>) -> Result<Document, StoreError> {
        let _ = bytes;
        todo!()
    }
    /// Serialises; byte-identical to the input when nothing was modified.
    pub fn to_bytes(&self) -> Vec<u8> {
        todo!()
    }
    pub fn is_modified(&self) -> bool {
        todo!()
    }
    /// Labels in file order.
    pub fn labels(&self) -> &[Label] {
        todo!()
    }
    /// Adds a label (kept sorted by index in the file).
    pub fn add_label(&mut self, label: Label) {
        let _ = label;
        todo!()
    }
    pub fn remove_label(&mut self, name: &str) -> bool {
        let _ = name;
        todo!()
    }
    pub fn pools(&self) -> &[Pool] {
        todo!()
    }
    pub fn global_property(&self, name: &str) -> Option<&str> {
        let _ = name;
        todo!()
    }
    pub fn global_properties(&self) -> Vec<(&str, &str)> {
        todo!()
    }
    pub fn set_global_property(&mut self, name: &str, value: &str, rank: &dyn Fn(&str) -> usize) {
        let _ = (name, value, rank);
        todo!()
    }
    pub fn reset_global_property(&mut self, name: &str) -> bool {
        let _ = name;
        todo!()
    }
    /// All domains in file order. The AdminVM (qid 0) is always present: if the file has none,
    /// a virtual dom0 is indexed (written only if modified).
    pub fn domains(&self) -> Vec<DomId> {
        todo!()
    }
    /// By name (`dom0` for the AdminVM).
    pub fn domain_by_name(&self, name: &str) -> Option<DomId> {
        let _ = name;
        todo!()
    }
    /// By canonical lowercase UUID (all zeros for dom0); the later domain wins on duplicates.
    pub fn domain_by_uuid(&self, uuid: &str) -> Option<DomId> {
        let _ = uuid;
        todo!()
    }
    /// The `class` attribute (`AdminVM`, `AppVM`, ...).
    pub fn class(&self, id: DomId) -> &str {
        let _ = id;
        todo!()
    }
    pub fn name(&self, id: DomId) -> &str {
        let _ = id;
        todo!()
    }
    pub fn qid(&self, id: DomId) -> Option<u32> {
        let _ = id;
        todo!()
    }
    /// Stored uuid text (all zeros for dom0).
    pub fn uuid(&self, id: DomId) -> Option<&str> {
        let _ = id;
        todo!()
    }
    /// Parses the domain on first use.
    pub fn data(&self, id: DomId) -> Result<&DomainData, StoreError> {
        let _ = id;
        todo!()
    }
    /// Marks the domain modified.
    pub fn data_mut(&mut self, id: DomId) -> Result<&mut DomainData, StoreError> {
        let _ = id;
        todo!()
    }
}
