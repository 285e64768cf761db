//! qubes-admin: the Qubes OS Admin API (the calls `qubesd` serves) as an embeddable library.
//!
//! No daemon: each call opens the store, takes the qubes.xml lock only if it writes, runs, and
//! returns the framed reply. A dom0 tool can link this crate and call in-process:
//!
//! ```no_run
//! use qubes_admin::{Config, System, wire::{RawRequest, Target}};
//! let mut sys = System::open(Config::from_env());
//! let reply = sys.call(&RawRequest {
//!     method: b"admin.vm.property.Get".to_vec(),
//!     arg: b"label".to_vec(),
//!     src: b"dom0".to_vec(),
//!     target: Target::Name(b"work".to_vec()),
//!     payload: Vec::new(),
//! });
//! assert!(reply.starts_with(b"0\0") || reply.starts_with(b"2\0"));
//! ```

//!
//! Layers, top to bottom (a module imports only its own layer and those below; a test in
//! `lib/tests/layers.rs` enforces it; `docs/architecture.md` explains each):
//!
//! | layer | modules |
//! |---|---|
//! | entry | this file ([`System`]), [`sandbox`] |
//! | api | [`api`]: the dispatch table, request resolution, one module per API family |
//! | model | [`model`]: the call context and the engines the families share |
//! | state | [`store`] (qubes.xml), [`storage`] (pools, volumes, drivers), [`events`] (the event log), [`runtime`] (libvirt, the helper, the dom0 services), [`policy`] (the qrexec policy) |
//! | wire | [`wire`]: framing, VM-reference syntax, name validators, Python rules |
//!
//! [`error`], [`config`] and [`ffi`] serve every layer.

pub mod api;
pub mod config;
pub mod error;
pub mod events;
pub mod ffi;
pub mod model;
pub mod policy;
pub mod runtime;
pub mod sandbox;
pub mod storage;
pub mod store;
pub mod wire;

pub use config::Config;
pub use error::{ApiError, ExcType};

use model::context::{Call, Ctx, DocRef};
use runtime::Hypervisor;
use store::{Document, FileStamp, WriteTxn};
use wire::vm_ref::parse_vm_ref;
use wire::RawRequest;

/// One Qubes system: a configuration, a runtime-state source and (for in-process users) a cached
/// parse of qubes.xml that is reused while the file is unchanged.
pub struct System {
    config: Config,
    hv: Box<dyn Hypervisor>,
    /// The parsed version, its stamp, and its file, kept open so that its inode number cannot
    /// be recycled for a later version (which could then have the same stamp).
    cache: Option<(FileStamp, Document, std::fs::File)>,
    /// Which methods requests may name (the admin socket's unless set by [`System::serving`]).
    endpoint: api::Endpoint,
}

impl System {
    /// Opens a system with the default runtime source for this configuration
    /// (see [`runtime::default_for`]).
    pub fn open(config: Config) -> System {
        let hv = runtime::default_for(&config);
        System::with_hypervisor(config, hv)
    }

    /// Opens a system with an explicit runtime source.
    pub fn with_hypervisor(config: Config, hv: Box<dyn Hypervisor>) -> System {
        System {
            config,
            hv,
            cache: None,
            endpoint: api::Endpoint::Socket(api::Socket::Admin),
        }
    }

    /// Serves the methods of `endpoint` (one of qubesd's three sockets, or every qrexec
    /// service) instead of the admin socket's.
    pub fn serving(mut self, endpoint: api::Endpoint) -> System {
        self.endpoint = endpoint;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How long the calls so far waited on live libvirt requests (per-domain state,
    /// operations, definitions); the rest of a call's time is its own.
    pub fn hypervisor_waited(&self) -> runtime::Waits {
        self.hv.waited()
    }

    /// Runs one request and returns the framed reply (`0\0…` or `2\0…`).
    pub fn call(&mut self, raw: &RawRequest) -> Vec<u8> {
        wire::frame(&self.execute(raw))
    }

    /// Runs one request and returns the reply body or the exception. A streaming method
    /// (`admin.Events`) only checks its request here: [`System::serve`] streams.
    pub fn execute(&mut self, raw: &RawRequest) -> Result<Vec<u8>, ApiError> {
        let method = std::str::from_utf8(&raw.method)
            .ok()
            .and_then(|n| api::find_on(self.endpoint, n));
        if method.is_some_and(|m| m.writes()) {
            self.execute_write(raw)
        } else {
            self.execute_read(raw).map(|(body, _)| body)
        }
    }

    /// Runs one request and writes its reply to `out`: the framed reply, or for a streaming
    /// method its frames until the caller goes away (its end of `out` closes).
    pub fn serve<W: std::io::Write + std::os::fd::AsFd>(
        &mut self,
        raw: &RawRequest,
        out: &mut W,
    ) -> std::io::Result<()> {
        let method = std::str::from_utf8(&raw.method)
            .ok()
            .and_then(|n| api::find_on(self.endpoint, n));
        if !method.is_some_and(|m| m.access == api::table::Access::Stream) {
            out.write_all(&self.call(raw))?;
            return out.flush();
        }
        let stream = match self.execute_read(raw) {
            Ok((_, Some(stream))) => stream,
            Ok((_, None)) => {
                let e = ApiError::qubes("internal error: a streaming method did not subscribe");
                out.write_all(&wire::frame_exception(&e))?;
                return out.flush();
            }
            Err(e) => {
                out.write_all(&wire::frame_exception(&e))?;
                return out.flush();
            }
        };
        match stream {
            model::context::Stream::Events(sub) => {
                match events::Follower::open(&self.config.run_dir, sub) {
                    Ok(f) => {
                        if let Err(e) = f.run(out) {
                            // The stream has begun: an exception frame now would be read as
                            // an event. End the connection; say why on stderr (the log).
                            eprintln!("qubes-admin: admin.Events: {e}");
                        }
                        Ok(())
                    }
                    Err(e) => {
                        let e = ApiError::qubes(format!("cannot follow the event log: {e}"));
                        out.write_all(&wire::frame_exception(&e))?;
                        out.flush()
                    }
                }
            }
            model::context::Stream::Stats(sub) => {
                api::vm_stats::stream(out, || self.stats_sample(&sub))
            }
        }
    }

    /// One `admin.vm.Stats` round: `stats_interval` and the live figures of the running qubes
    /// `sub` covers, from the current qubes.xml (dom0 only where libvirt has a domain for it,
    /// i.e. on Xen). A qube asked for by name that is not running ends the stream.
    fn stats_sample(
        &mut self,
        sub: &events::Subscription,
    ) -> Result<api::vm_stats::Sample, ApiError> {
        let interval = self
            .property(None, "stats_interval")?
            .value
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let doc = cached_document(&mut self.cache, &self.config, self.hv.as_ref())?;
        let rt = self.hv.runtime()?;
        let mut qubes = Vec::new();
        for id in doc.domains() {
            let name = doc.name(id);
            let Some(uuid) = doc.uuid(id).filter(|_| sub.covers(name)) else {
                continue;
            };
            let live = match rt.by_uuid(uuid).filter(|d| d.active) {
                Some(_) => self.hv.domain(uuid)?.filter(|d| d.active),
                None => None,
            };
            match (live, sub) {
                (Some(d), _) => qubes.push((name.to_string(), d)),
                (None, events::Subscription::Qube(_)) if !doc.is_admin(id) => {
                    return Err(ApiError::new(
                        ExcType::QubesVMNotRunningError,
                        format!(
                            "Domain not running (either powered off or paused): {}",
                            wire::python::repr(name)
                        ),
                    ))
                }
                _ => {}
            }
        }
        Ok(api::vm_stats::Sample { interval, qubes })
    }

    fn execute_write(&mut self, raw: &RawRequest) -> Result<Vec<u8>, ApiError> {
        self.cache = None;
        let index = store::index_path(&self.config.run_dir);
        let mut txn = WriteTxn::begin_indexed(
            &self.config.xml_path,
            self.config.lock_timeout,
            Some(&index),
        )?;
        // A write saves the migrated form of an older file (with its own change).
        let loaded = txn.stamp();
        model::migrate::prepare(&self.config, self.hv.as_ref(), txn.doc_mut(), &loaded)?;
        let r = api::request::resolve_request(txn.doc(), raw, self.endpoint)?;
        let (body, outcome) = {
            let handler = r.method.handler;
            let mut ctx = Ctx::new(
                &self.config,
                r.into_call(raw.payload.clone()),
                DocRef::Write(txn.doc_mut()),
                self.hv.as_ref(),
            );
            let body = handler(&mut ctx);
            (body, ctx.finish())
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                outcome.abort();
                return Err(e);
            }
        };
        // Events are appended right after the rename, still under the qubes.xml lock: the log's
        // order is the commit order, and a kill between the two is a matter of microseconds.
        let run_dir = &self.config.run_dir;
        let events = &outcome.events;
        let logged = match txn.commit_then(|| {
            if events.is_empty() {
                Ok(0)
            } else {
                events::append(run_dir, events)
            }
        }) {
            Ok(l) => l,
            Err(e) => {
                outcome.abort();
                return Err(e.into());
            }
        };
        // What we saved is current: the next call need not look for old forms.
        let saved = txn.stamp();
        if saved != loaded {
            model::migrate::mark_current(&self.config, &saved);
        }
        drop(txn);
        for f in outcome.after_commit {
            f();
        }
        logged.map_err(|e| {
            ApiError::qubes(format!(
                "the change was saved, but its events were not logged: {e}"
            ))
        })?;
        Ok(body)
    }

    /// The current qubes.xml, parsed once and reused while the file is unchanged (same inode,
    /// size and mtime): typed access to labels, pools, domains and what they store.
    pub fn document(&mut self) -> Result<&Document, ApiError> {
        cached_document(&mut self.cache, &self.config, self.hv.as_ref())
    }

    /// The qrexec policy's verdict on `req`, evaluated on the current qubes.xml and runtime
    /// as the policy daemon would (the local-qrexec tool; nothing is executed).
    pub fn policy_verdict(&mut self, req: &policy::Request) -> Result<policy::Verdict, ApiError> {
        let doc = cached_document(&mut self.cache, &self.config, self.hv.as_ref())?;
        let dom0 = doc
            .domain_by_name("dom0")
            .ok_or_else(|| ApiError::vm_not_found("dom0"))?;
        let call = Call {
            method: "qrexec-policy",
            src: dom0,
            dest: dom0,
            arg: String::new(),
            payload: Vec::new(),
        };
        let ctx = Ctx::new(&self.config, call, DocRef::Read(doc), self.hv.as_ref());
        let rules = model::access::load_rules(&ctx)?;
        let domains = model::access::domains(&ctx)?;
        Ok(model::access::evaluate(&ctx, &rules, &domains, req))
    }

    /// A property of qube `vm` (by name), or of the global object when `vm` is `None`, as a
    /// typed value: what `admin.vm.property.Get` / `admin.property.Get` report.
    pub fn property(
        &mut self,
        vm: Option<&str>,
        name: &str,
    ) -> Result<model::props::PropertyValue, ApiError> {
        let doc = cached_document(&mut self.cache, &self.config, self.hv.as_ref())?;
        let dom0 = doc
            .domain_by_name("dom0")
            .ok_or_else(|| ApiError::vm_not_found("dom0"))?;
        let (dest, holder) = match vm {
            Some(n) => {
                let id = api::request::resolve(doc, &parse_vm_ref(n.as_bytes())?)?;
                (id, model::props::Holder::Vm(id))
            }
            None => (dom0, model::props::Holder::Global),
        };
        let call = Call {
            method: if vm.is_some() {
                "admin.vm.property.Get"
            } else {
                "admin.property.Get"
            },
            src: dom0,
            dest,
            arg: name.to_string(),
            payload: Vec::new(),
        };
        let ctx = Ctx::new(&self.config, call, DocRef::Read(doc), self.hv.as_ref());
        model::props::read(&ctx, holder, name)
    }

    /// Read-only calls, and calls that act on the hypervisor without saving qubes.xml
    /// (Execute): a shared view of the current file, no qubes.xml lock. Their events (Execute
    /// calls fire some) go to the log, also when the handler fails (nothing is undone in
    /// qubes.xml for them: what they fired happened).
    fn execute_read(
        &mut self,
        raw: &RawRequest,
    ) -> Result<(Vec<u8>, Option<model::context::Stream>), ApiError> {
        let doc = cached_document(&mut self.cache, &self.config, self.hv.as_ref())?;
        let r = api::request::resolve_request(doc, raw, self.endpoint)?;
        let handler = r.method.handler;
        let mut ctx = Ctx::new(
            &self.config,
            r.into_call(raw.payload.clone()),
            DocRef::Read(doc),
            self.hv.as_ref(),
        );
        let body = handler(&mut ctx);
        let mut outcome = ctx.finish();
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                // Nothing was saved, but what the call fired did happen (a Start that failed
                // after `domain-pre-start`, a vetoed Shutdown): subscribers see it, ending
                // with the failure event the handler added, as the reference's do.
                let events = std::mem::take(&mut outcome.events);
                outcome.abort();
                if !events.is_empty() {
                    if let Err(le) = events::append(&self.config.run_dir, &events) {
                        eprintln!("qubes-admin: the failed call's events were not logged: {le}");
                    }
                }
                return Err(e);
            }
        };
        let stream = outcome.stream.clone();
        log_and_finish(&self.config, outcome)?;
        Ok((body, stream))
    }

    /// What the helper calls for a lifecycle change libvirt reported (a qube that stopped or
    /// was paused while no call was looking): [`model::lifecycle::on_domain_event`] on the
    /// current qubes.xml, its events logged as a call's are. A qube unknown to qubes.xml is
    /// none of ours.
    pub fn domain_event(&mut self, ev: &runtime::DomainEvent) -> Result<(), ApiError> {
        let doc = cached_document(&mut self.cache, &self.config, self.hv.as_ref())?;
        let (Some(id), Some(dom0)) = (doc.domain_by_uuid(&ev.uuid), doc.domain_by_name("dom0"))
        else {
            return Ok(());
        };
        let call = Call {
            method: "qubes-admin-eventd",
            src: dom0,
            dest: id,
            arg: String::new(),
            payload: Vec::new(),
        };
        let mut ctx = Ctx::new(&self.config, call, DocRef::Read(doc), self.hv.as_ref());
        let r = model::lifecycle::on_domain_event(&mut ctx, id, ev.kind);
        let outcome = ctx.finish();
        if let Err(e) = r {
            outcome.abort();
            return Err(e);
        }
        log_and_finish(&self.config, outcome)
    }
}

impl System {
    /// What the helper runs when a firewall rule may have expired
    /// ([`api::vm_firewall::expire_due`] for each qube, its events logged as a call's are).
    /// Returns the next expiry of any rule. A qube whose rules cannot be handled is reported
    /// and skipped (the others still lose their expired rules) and tried again in a minute.
    pub fn expire_firewall_rules(&mut self) -> Result<Option<i64>, ApiError> {
        let doc = cached_document(&mut self.cache, &self.config, self.hv.as_ref())?;
        let Some(dom0) = doc.domain_by_name("dom0") else {
            return Ok(None);
        };
        let mut next: Option<i64> = None;
        for id in doc.domains().into_iter().filter(|id| !doc.is_admin(*id)) {
            let call = Call {
                method: "qubes-admin-eventd",
                src: dom0,
                dest: id,
                arg: String::new(),
                payload: Vec::new(),
            };
            let mut ctx = Ctx::new(&self.config, call, DocRef::Read(doc), self.hv.as_ref());
            let r = api::vm_firewall::expire_due(&mut ctx);
            let outcome = ctx.finish();
            let at = match r {
                Ok(at) => {
                    log_and_finish(&self.config, outcome)?;
                    at
                }
                Err(e) => {
                    outcome.abort();
                    eprintln!(
                        "qubes-admin-eventd: firewall expiry of {}: {}: {}",
                        doc.name(id),
                        e.ty.as_str(),
                        e.msg
                    );
                    Some(model::firewall::now() + RETRY_SECS)
                }
            };
            next = match (next, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(next)
    }
}

/// How long the firewall timer waits before trying again after a failure.
const RETRY_SECS: i64 = 60;

/// The helper's firewall timer ([`runtime::eventd::Timer`]): [`System::expire_firewall_rules`]
/// on the helper's own runtime source. Errors go to stderr, and the sweep is tried again in a
/// minute.
pub fn expire_firewall_rules(config: &Config, hv: Box<dyn runtime::Hypervisor>) -> Option<i64> {
    match System::with_hypervisor(config.clone(), hv).expire_firewall_rules() {
        Ok(next) => next,
        Err(e) => {
            eprintln!(
                "qubes-admin-eventd: firewall expiry: {}: {}",
                e.ty.as_str(),
                e.msg
            );
            Some(model::firewall::now() + RETRY_SECS)
        }
    }
}

/// After a call on the read view succeeded: its events to the log first, then the work after
/// it (a disposable's auto-cleanup logs its own events after).
fn log_and_finish(config: &Config, outcome: model::context::Outcome) -> Result<(), ApiError> {
    let logged = if outcome.events.is_empty() {
        Ok(0)
    } else {
        events::append(&config.run_dir, &outcome.events)
    };
    for f in outcome.after_commit {
        f();
    }
    logged.map_err(|e| {
        ApiError::qubes(format!(
            "the call succeeded, but its events were not logged: {e}"
        ))
    })?;
    Ok(())
}

/// The helper's reaction to a lifecycle change ([`runtime::eventd::Reactor`]): a short
/// [`System::domain_event`] on the helper's own runtime source. Errors go to stderr, the
/// helper's log.
pub fn react_to_domain_event(
    config: &Config,
    hv: Box<dyn runtime::Hypervisor>,
    ev: &runtime::DomainEvent,
) {
    if let Err(e) = System::with_hypervisor(config.clone(), hv).domain_event(ev) {
        eprintln!(
            "qubes-admin-eventd: {:?} of {}: {}: {}",
            ev.kind,
            ev.uuid,
            e.ty.as_str(),
            e.msg
        );
    }
}

/// The cached parse of `path`, reloaded unless the file still has the cached version's stamp.
/// A free function over the cache field, so that callers can keep borrowing `config` and `hv`.
fn cached_document<'c>(
    cache: &'c mut Option<(FileStamp, Document, std::fs::File)>,
    config: &Config,
    hv: &dyn Hypervisor,
) -> Result<&'c Document, ApiError> {
    let path = &config.xml_path;
    let stamp = store::stamp(path).ok();
    let fresh = matches!((&*cache, stamp), (Some((s, _, _)), Some(now)) if *s == now);
    if !fresh {
        // Close the old version first: this process's own descriptor is no reason to keep the
        // old inode.
        *cache = None;
        let index = store::index_path(&config.run_dir);
        let (mut doc, stamp, file) = store::load_open_indexed(path, Some(&index))?;
        // The reference's view of an older file (nothing is written by a read).
        model::migrate::prepare(config, hv, &mut doc, &stamp)?;
        return Ok(&cache.insert((stamp, doc, file)).1);
    }
    match cache {
        Some((_, doc, _)) => Ok(doc),
        None => Err(ApiError::qubes("internal error: qubes.xml not loaded")),
    }
}
