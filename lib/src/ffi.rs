//! The one module with `unsafe`: OS calls without a safe wrapper and the libvirt FFI (domain
//! event callbacks, stats records) that the `virt` crate does not wrap.
#![allow(unsafe_code)]

use nix::sys::signal::{signal, SigHandler, Signal};

/// Ignores SIGPIPE so that a caller that hangs up cannot kill a call half-way: writes then fail
/// with EPIPE, which the front ends ignore after the work is done.
pub fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN runs no code in signal context; it cannot violate any invariant.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}
