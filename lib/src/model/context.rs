//! What a handler gets: the resolved call and access to the store, runtime state and events.
//!
//! It sits below the api layer so that the engines the families share (properties, features)
//! take the same context; it knows the method only by name, not the dispatch table.

use std::cell::OnceCell;

use crate::config::Config;
use crate::error::ApiError;
use crate::events::{Event, Subscription};

/// What a streaming call streams once accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stream {
    /// `admin.Events`: the event log, filtered.
    Events(Subscription),
    /// `admin.vm.Stats`: `vm-stats` samples of the running qubes the subscription covers.
    Stats(Subscription),
}
use crate::runtime::{Hypervisor, Runtime};
use crate::store::{Document, DomId};

/// A resolved call: who calls what on which qube, with which argument and payload.
pub struct Call {
    /// The method's name (e.g. `admin.vm.property.Set`).
    pub method: &'static str,
    pub src: DomId,
    pub dest: DomId,
    pub arg: String,
    pub payload: Vec<u8>,
}

/// The document a handler works on: shared for read-only calls, exclusive inside a write
/// transaction.
pub enum DocRef<'a> {
    Read(&'a Document),
    Write(&'a mut Document),
}

/// A resolved call. Handlers never see request bytes other than the payload, whose meaning
/// depends on the call (e.g. the type of the property being set).
pub struct Ctx<'a> {
    pub config: &'a Config,
    /// The method's name.
    pub method: &'static str,
    /// The calling qube.
    pub src: DomId,
    /// The target qube (dom0 for global calls).
    pub dest: DomId,
    /// The argument (ASCII; empty when the method takes none).
    pub arg: String,
    pub payload: Vec<u8>,
    doc: DocRef<'a>,
    hv: &'a dyn Hypervisor,
    runtime: OnceCell<Runtime>,
    events: Vec<Event>,
    undo: Vec<Box<dyn FnOnce()>>,
    after_commit: Vec<Box<dyn FnOnce()>>,
    stream: Option<Stream>,
}

/// What a finished handler leaves for its caller to do: the events to log, work to undo if the
/// call does not commit, and work to run after the commit, outside the qubes.xml lock.
pub struct Outcome {
    pub events: Vec<Event>,
    pub undo: Vec<Box<dyn FnOnce()>>,
    pub after_commit: Vec<Box<dyn FnOnce()>>,
    /// For a streaming method (`admin.Events`): what to stream once the call succeeded.
    pub stream: Option<Stream>,
}

impl Outcome {
    /// The call failed or its commit did not happen: undo, newest first.
    pub fn abort(self) {
        for f in self.undo.into_iter().rev() {
            f();
        }
    }
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        config: &'a Config,
        call: Call,
        doc: DocRef<'a>,
        hv: &'a dyn Hypervisor,
    ) -> Self {
        let Call {
            method,
            src,
            dest,
            arg,
            payload,
        } = call;
        Ctx {
            config,
            method,
            src,
            dest,
            arg,
            payload,
            doc,
            hv,
            runtime: OnceCell::new(),
            events: Vec::new(),
            undo: Vec::new(),
            after_commit: Vec::new(),
            stream: None,
        }
    }

    pub fn doc(&self) -> &Document {
        match &self.doc {
            DocRef::Read(d) => d,
            DocRef::Write(d) => d,
        }
    }

    /// The document for mutation; only write methods get one.
    pub fn doc_mut(&mut self) -> Result<&mut Document, ApiError> {
        match &mut self.doc {
            DocRef::Write(d) => Ok(d),
            DocRef::Read(_) => Err(ApiError::qubes(format!(
                "internal error: {} is read-only but tried to modify qubes.xml",
                self.method
            ))),
        }
    }

    /// Runtime state, queried once per call on first use.
    pub fn runtime(&self) -> Result<&Runtime, ApiError> {
        if let Some(r) = self.runtime.get() {
            return Ok(r);
        }
        let r = self.hv.runtime()?;
        Ok(self.runtime.get_or_init(|| r))
    }

    /// The runtime-state source itself, for live per-domain queries
    /// ([`Hypervisor::domain`]); prefer [`Ctx::runtime`] for the cached listing.
    pub fn hypervisor(&self) -> &dyn Hypervisor {
        self.hv
    }

    /// The dom0 services (qmemman, QubesDB, qrexec) this configuration names: the real ones
    /// of a Xen dom0, or the sandbox's stand-ins.
    pub fn dom0_services(&self) -> Box<dyn crate::runtime::dom0::Dom0Services> {
        crate::runtime::dom0::for_config(&self.config.run_dir, &self.config.dom0)
    }

    /// Records an event; it is appended to the event log after the call commits.
    pub fn emit(&mut self, subject: &str, name: impl Into<String>, kwargs: &[(&str, &str)]) {
        let kwargs = kwargs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.events.push(Event::new(subject, name, kwargs));
    }

    /// Registers work that undoes a side effect outside qubes.xml (files made) if the call
    /// fails or does not commit.
    pub fn on_undo(&mut self, f: impl FnOnce() + 'static) {
        self.undo.push(Box::new(f));
    }

    /// Registers work to run once the call has committed, after the qubes.xml lock is released
    /// (e.g. deleting a removed qube's images: slow, and its errors do not fail the call).
    pub fn after_commit(&mut self, f: impl FnOnce() + 'static) {
        self.after_commit.push(Box::new(f));
    }

    /// Makes this call a stream: after the (empty) handler result, the front end serves it.
    pub fn subscribe(&mut self, stream: Stream) {
        self.stream = Some(stream);
    }

    pub(crate) fn finish(self) -> Outcome {
        Outcome {
            events: self.events,
            undo: self.undo,
            after_commit: self.after_commit,
            stream: self.stream,
        }
    }

    /// Name of the destination qube.
    pub fn dest_name(&self) -> &str {
        self.doc().name(self.dest)
    }

    /// Whether the caller is the AdminVM.
    pub fn src_is_admin(&self) -> bool {
        self.doc().is_admin(self.src)
    }

    /// Whether the destination is the AdminVM.
    pub fn dest_is_admin(&self) -> bool {
        self.doc().is_admin(self.dest)
    }
}
