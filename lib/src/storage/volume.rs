//! A volume's configuration as qubes.xml stores it (`<volume-config>`, spec storage §B.4), and
//! the attribute order and formatting the reference writes.

use crate::store::xml::{self, Lexer, TokKind};

/// One `<volume .../>` of a qube's `<volume-config>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeConfig {
    /// Name in the qube: `root`, `private`, `volatile`, `kernel`, …
    pub name: String,
    /// Owning pool's name.
    pub pool: String,
    /// Pool-unique id (its format is the driver's); for kernel volumes, the kernel version.
    pub vid: String,
    /// As stored (the reference keeps the pool's string default); `-1` disables snapshots.
    pub revisions_to_keep: i64,
    pub rw: bool,
    pub save_on_stop: bool,
    pub snap_on_start: bool,
    /// Set explicitly (else derived from the pool, §B.2).
    pub ephemeral: Option<bool>,
    /// Configured size in bytes (0: none).
    pub size: u64,
    /// For snapshot volumes: the source volume's vid.
    pub source: Option<String>,
}

impl VolumeConfig {
    /// An origin volume (`save_on_stop`): persistent, committed at stop.
    pub fn is_origin(&self) -> bool {
        self.save_on_stop && !self.snap_on_start
    }

    /// A volatile volume: recreated empty at every start.
    pub fn is_volatile(&self) -> bool {
        !self.save_on_stop && !self.snap_on_start
    }

    /// The `<volume .../>` element: `name, pool, vid, revisions_to_keep, rw, save_on_stop,
    /// snap_on_start, [ephemeral], [size], [source]` (size only if non-zero).
    pub fn to_xml(&self) -> String {
        let mut s = format!(
            "<volume name=\"{}\" pool=\"{}\" vid=\"{}\" revisions_to_keep=\"{}\" rw=\"{}\" \
             save_on_stop=\"{}\" snap_on_start=\"{}\"",
            xml::escape_attr(&self.name),
            xml::escape_attr(&self.pool),
            xml::escape_attr(&self.vid),
            self.revisions_to_keep,
            py_bool(self.rw),
            py_bool(self.save_on_stop),
            py_bool(self.snap_on_start),
        );
        if let Some(e) = self.ephemeral {
            s.push_str(&format!(" ephemeral=\"{}\"", py_bool(e)));
        }
        if self.size != 0 {
            s.push_str(&format!(" size=\"{}\"", self.size));
        }
        if let Some(src) = &self.source {
            s.push_str(&format!(" source=\"{}\"", xml::escape_attr(src)));
        }
        s.push_str("/>");
        s
    }
}

/// Python's `str(bool)`.
pub fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// `True`/`False` as qubes.xml and the reference's pool parameters spell them (any other text
/// is a non-empty string, which Python treats as true).
pub fn parse_bool(text: &str) -> bool {
    !matches!(
        text.to_ascii_lowercase().as_str(),
        "" | "false" | "0" | "no" | "off"
    )
}

/// The whole `<volume-config>` element as a domain child at depth 3 (lxml's pretty print:
/// children at depth 4).
pub fn volume_config_xml(volumes: &[VolumeConfig]) -> Vec<u8> {
    if volumes.is_empty() {
        return b"<volume-config/>".to_vec();
    }
    let mut out = String::from("<volume-config>");
    for v in volumes {
        out.push_str("\n        ");
        out.push_str(&v.to_xml());
    }
    out.push_str("\n      </volume-config>");
    out.into_bytes()
}

/// Parses a `<volume-config>` element (its raw bytes). Unknown attributes (the old `internal`)
/// are dropped, as the reference does; a `<volume>` without a name is skipped.
pub fn parse_volume_config(raw: &[u8]) -> Vec<VolumeConfig> {
    let mut out = Vec::new();
    let mut lx = Lexer::new(raw, 0);
    while let Ok(Some(tok)) = lx.next_tok() {
        let TokKind::Start { name, attrs, .. } = tok.kind else {
            continue;
        };
        if name.of(raw) != b"volume" {
            continue;
        }
        let get = |k: &str| xml::attr(raw, attrs, k);
        let Some(vname) = get("name") else {
            continue;
        };
        let flag = |k: &str| get(k).is_some_and(|v| v == "True");
        out.push(VolumeConfig {
            name: vname,
            pool: get("pool").unwrap_or_default(),
            vid: get("vid").unwrap_or_default(),
            revisions_to_keep: get("revisions_to_keep")
                .and_then(|v| crate::wire::python::int(&v, 10))
                .unwrap_or(1),
            rw: flag("rw"),
            save_on_stop: flag("save_on_stop"),
            snap_on_start: flag("snap_on_start"),
            ephemeral: get("ephemeral").map(|v| v == "True"),
            size: get("size")
                .and_then(|v| crate::wire::python::int(&v, 10))
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            source: get("source").filter(|s| !s.is_empty()),
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const APPVM: &str = "<volume-config>\n        \
<volume name=\"root\" pool=\"varlibqubes\" vid=\"appvms/work/root\" revisions_to_keep=\"1\" rw=\"True\" save_on_stop=\"False\" snap_on_start=\"True\" size=\"10737418240\" source=\"vm-templates/fedora-41/root\"/>\n        \
<volume name=\"private\" pool=\"varlibqubes\" vid=\"appvms/work/private\" revisions_to_keep=\"1\" rw=\"True\" save_on_stop=\"True\" snap_on_start=\"False\" size=\"2147483648\"/>\n        \
<volume name=\"volatile\" pool=\"varlibqubes\" vid=\"appvms/work/volatile\" revisions_to_keep=\"1\" rw=\"True\" save_on_stop=\"False\" snap_on_start=\"False\" size=\"10737418240\"/>\n        \
<volume name=\"kernel\" pool=\"linux-kernel\" vid=\"6.6.0-test\" revisions_to_keep=\"0\" rw=\"False\" save_on_stop=\"False\" snap_on_start=\"False\"/>\n      \
</volume-config>";

    /// What the reference wrote round-trips byte for byte.
    #[test]
    fn round_trip_of_a_reference_volume_config() {
        let vols = parse_volume_config(APPVM.as_bytes());
        assert_eq!(vols.len(), 4);
        assert_eq!(
            vols[0].source.as_deref(),
            Some("vm-templates/fedora-41/root")
        );
        assert!(vols[1].is_origin());
        assert!(vols[2].is_volatile());
        assert_eq!(vols[3].revisions_to_keep, 0);
        assert_eq!(vols[3].size, 0);
        assert_eq!(String::from_utf8(volume_config_xml(&vols)).unwrap(), APPVM);
    }

    #[test]
    fn ephemeral_only_when_explicit_and_internal_dropped() {
        let raw = b"<volume-config><volume name=\"volatile\" pool=\"p\" vid=\"v\" internal=\"True\" revisions_to_keep=\"-1\" rw=\"True\" save_on_stop=\"False\" snap_on_start=\"False\" ephemeral=\"True\"/></volume-config>";
        let v = &parse_volume_config(raw)[0];
        assert_eq!(v.ephemeral, Some(true));
        assert_eq!(v.revisions_to_keep, -1);
        assert_eq!(
            v.to_xml(),
            "<volume name=\"volatile\" pool=\"p\" vid=\"v\" revisions_to_keep=\"-1\" rw=\"True\" save_on_stop=\"False\" snap_on_start=\"False\" ephemeral=\"True\"/>"
        );
    }
}
