//! Events: the append-only log every successful call adds its events to ([`log`]), and the
//! follower that streams it to one `admin.Events` subscriber ([`follow`]).

pub mod follow;
pub mod log;

pub use follow::{Follower, Subscription};
pub use log::{
    append, log_dir, log_path, parse_record, parse_records, read_after, Event, EventLogError,
    Parsed, RawRecord,
};
