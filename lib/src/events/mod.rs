//! Events: the append-only log every successful write adds its events to ([`log`]); the
//! `admin.Events` streaming of a later issue reads it.

pub mod log;

pub use log::{
    append, log_dir, log_path, parse_record, parse_records, read_after, Event, EventLogError,
    Parsed, RawRecord,
};
