//! The append-only event log in `QUBES_RUN_DIR` that `admin.Events` streams. OWNER: store helper.
//! Format documented in `docs/event-log.md`.

use std::path::Path;

/// One event as the reference fires it: subject is the VM name, or empty for the app object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub subject: String,
    pub name: String,
    pub kwargs: Vec<(String, String)>,
}

impl Event {
    pub fn new(subject: &str, name: impl Into<String>, kwargs: Vec<(String, String)>) -> Self {
        Event { subject: subject.to_string(), name: name.into(), kwargs }
    }
    /// The wire frame `1\0<subject>\0<event>\0(k\0v\0)*\0`.
    pub fn frame(&self) -> Vec<u8> {
        crate::wire::frame_event(&self.subject, &self.name, &self.kwargs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("event log I/O error on '{path}': {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("event log is corrupt at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
}

/// Appends `events` (one lock, one write) and returns the sequence number of the last one.
pub fn append(run_dir: &Path, events: &[Event]) -> Result<u64, EventLogError> {
    let _ = (run_dir, events);
    todo!("store helper")
}

/// Reads every complete record with sequence number > `after`.
pub fn read_after(run_dir: &Path, after: u64) -> Result<Vec<(u64, Event)>, EventLogError> {
    let _ = (run_dir, after);
    todo!("store helper")
}
