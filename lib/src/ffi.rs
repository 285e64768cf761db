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

/// libvirt FFI the `virt` crate does not wrap: domain lifecycle callbacks and a close that
/// reports errors instead of panicking (`virt::Connect::drop` panics when the close fails).
#[cfg(feature = "libvirt")]
pub mod libvirt {
    use std::ffi::{c_char, c_int, c_void, CStr};

    use virt::connect::Connect;
    use virt::error::Error;
    use virt::sys;

    /// Called on the event-loop thread with the domain's UUID (canonical text) and libvirt's
    /// lifecycle event and detail codes. It must return quickly and must not block on libvirt.
    pub type LifecycleHandler = Box<dyn Fn(&str, i32, i32) + Send + Sync + 'static>;

    /// A registered callback (for [`deregister_lifecycle`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CallbackId(c_int);

    unsafe extern "C" fn lifecycle_trampoline(
        _conn: sys::virConnectPtr,
        dom: sys::virDomainPtr,
        event: c_int,
        detail: c_int,
        opaque: *mut c_void,
    ) -> c_int {
        if opaque.is_null() || dom.is_null() {
            return 0;
        }
        // SAFETY: `opaque` is the `Box<LifecycleHandler>` leaked by `register_lifecycle`; libvirt
        // frees it (through `free_handler`) only after the last callback has returned, so it is
        // valid for the duration of this call. It is only read (`Fn`), and the handler is
        // `Sync`, so concurrent callbacks are fine.
        let handler = unsafe { &*(opaque as *const LifecycleHandler) };
        let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
        // SAFETY: `dom` is a valid domain pointer for the duration of the callback (libvirt
        // holds a reference), and `buf` has the VIR_UUID_STRING_BUFLEN bytes the call writes,
        // NUL included.
        if unsafe { sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) } < 0 {
            return 0;
        }
        // SAFETY: on success libvirt wrote a NUL-terminated string into `buf`.
        let uuid = unsafe { CStr::from_ptr(buf.as_ptr()) };
        if let Ok(uuid) = uuid.to_str() {
            handler(uuid, event, detail);
        }
        0
    }

    unsafe extern "C" fn free_handler(opaque: *mut c_void) {
        if !opaque.is_null() {
            // SAFETY: `opaque` came from `Box::into_raw` in `register_lifecycle`, and libvirt
            // calls this free callback exactly once, after the callback is deregistered.
            drop(unsafe { Box::from_raw(opaque as *mut LifecycleHandler) });
        }
    }

    /// Registers `handler` for every domain's lifecycle events on `conn`. Events are delivered
    /// by the default event loop (`virt::event::event_register_default_impl` must have run
    /// before the connection was opened, and `event_run_default_impl` must be running).
    pub fn register_lifecycle(
        conn: &Connect,
        handler: LifecycleHandler,
    ) -> Result<CallbackId, Error> {
        let opaque = Box::into_raw(Box::new(handler)) as *mut c_void;
        let typed: unsafe extern "C" fn(
            sys::virConnectPtr,
            sys::virDomainPtr,
            c_int,
            c_int,
            *mut c_void,
        ) -> c_int = lifecycle_trampoline;
        // SAFETY: this is what the C macro VIR_DOMAIN_EVENT_CALLBACK does: libvirt stores the
        // generic pointer and calls it back with the lifecycle signature for
        // VIR_DOMAIN_EVENT_ID_LIFECYCLE. Both are `extern "C"` function pointers of the same size.
        let generic: sys::virConnectDomainEventGenericCallback = Some(unsafe {
            std::mem::transmute::<
                unsafe extern "C" fn(
                    sys::virConnectPtr,
                    sys::virDomainPtr,
                    c_int,
                    c_int,
                    *mut c_void,
                ) -> c_int,
                unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
            >(typed)
        });
        // SAFETY: `conn` is a live connection (borrowed for the call); a null domain means "all
        // domains"; `opaque` stays valid until libvirt calls `free_handler`.
        let id = unsafe {
            sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                std::ptr::null_mut(),
                sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
                generic,
                opaque,
                Some(free_handler),
            )
        };
        if id < 0 {
            // Whether libvirt already called `free_handler` on this path is not documented, so the
            // (small) handler is deliberately leaked rather than risking a double free.
            return Err(Error::last_error());
        }
        Ok(CallbackId(id))
    }

    /// Removes a callback registered on `conn`; libvirt then frees its handler.
    pub fn deregister_lifecycle(conn: &Connect, id: CallbackId) -> Result<(), Error> {
        // SAFETY: `conn` is a live connection; an unknown id only makes libvirt return -1.
        if unsafe { sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), id.0) } < 0 {
            return Err(Error::last_error());
        }
        Ok(())
    }

    /// Closes `conn`, returning libvirt's error instead of panicking as `Connect::drop` does.
    pub fn close(conn: Connect) -> Result<(), Error> {
        // SAFETY: the pointer is taken from a live `Connect`, which is then forgotten so that its
        // `Drop` does not close it a second time: exactly one reference is released here.
        let ptr = unsafe { conn.as_ptr() };
        std::mem::forget(conn);
        // SAFETY: `ptr` holds the reference the forgotten `Connect` owned.
        if unsafe { sys::virConnectClose(ptr) } < 0 {
            return Err(Error::last_error());
        }
        Ok(())
    }
}

/// `ioctl(dst, FICLONE, src)`: `dst` shares all of `src`'s extents (a reflink copy). Fails with
/// `EOPNOTSUPP`/`EXDEV`/`EINVAL` where the filesystem cannot (ext4, another filesystem).
pub fn ficlone(dst: &std::fs::File, src: &std::fs::File) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    nix::ioctl_write_int!(ficlone_raw, 0x94, 9);
    let src_fd = nix::sys::ioctl::ioctl_param_type::try_from(src.as_raw_fd())
        .map_err(|_| nix::errno::Errno::EBADF)?;
    // SAFETY: both descriptors belong to open `File`s borrowed for the whole call, so they stay
    // valid; FICLONE takes the source descriptor by value and writes no memory of ours.
    unsafe { ficlone_raw(dst.as_raw_fd(), src_fd) }.map(|_| ())
}

/// What a call answers when qubes.xml is truncated in place under its mapping (see
/// [`guard_sigbus`]).
const SIGBUS_FRAME: &[u8] = b"2\0QubesException\0\0qubes.xml was truncated in place by another \
program while this call read it; the call was stopped (writers must replace the file by \
rename, as qubesd and qubes-admin-rs do)\0";

static SIGBUS_GUARDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigbus(_: nix::libc::c_int) {
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the frame is a static.
    unsafe {
        let _ = nix::libc::write(1, SIGBUS_FRAME.as_ptr().cast(), SIGBUS_FRAME.len());
        nix::libc::_exit(0);
    }
}

/// For a per-call process: a SIGBUS (a mapped file truncated under us: only qubes.xml is
/// mapped) ends the call with an exception frame on stdout instead of a silent crash, and
/// qubes.xml may then be read through a mapping ([`Mapping`]) instead of a copy. Library users
/// that do not call this keep reading it with read(2).
pub fn guard_sigbus() {
    // SAFETY: the handler only calls async-signal-safe functions (see `on_sigbus`).
    if unsafe { signal(Signal::SIGBUS, SigHandler::Handler(on_sigbus)) }.is_ok() {
        SIGBUS_GUARDED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether [`guard_sigbus`] was installed.
pub fn sigbus_guarded() -> bool {
    SIGBUS_GUARDED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A read-only private mapping of a whole file: its pages come from the page cache on first
/// touch (no copy, no zeroed buffer), which is what makes loading a large qubes.xml cheap.
pub struct Mapping {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    len: usize,
}

impl Mapping {
    /// Maps the first `len` bytes of `file` (`None` for an empty file or a failed mmap: the
    /// caller reads the file instead).
    pub fn of(file: &std::fs::File, len: usize) -> Option<Mapping> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let size = std::num::NonZeroUsize::new(len)?;
        // SAFETY: a new private read-only mapping aliases no Rust object. Its contents can
        // change only if another program writes the file in place (qubesd and we replace it by
        // rename, which leaves this inode as it was); a truncation raises SIGBUS, which
        // `guard_sigbus` turns into an exception frame (callers map only when it is installed).
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE,
                file,
                0,
            )
        }
        .ok()?;
        Some(Mapping { ptr, len })
    }
}

impl std::ops::Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes until `drop` unmaps it.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `of`; no slice of it outlives `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len) };
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapping({} bytes)", self.len)
    }
}

/// For the long-lived helper, once it has started: hands back the pages of its read-only file
/// mappings (program and shared-library code and constants). Linking libvirt maps 57
/// libraries whose start-up (relocation, constructors, connecting) faults in about 16 MiB of
/// them, almost all never touched again; `MADV_PAGEOUT` drops them from the process (the page
/// cache keeps or reclaims them as it sees fit), and what the helper does use afterwards
/// comes back on first touch. Contents never change: only residency. Returns the number of
/// mappings advised (0 where the kernel lacks `MADV_PAGEOUT`, Linux < 5.4).
pub fn page_out_read_only_mappings() -> usize {
    use nix::sys::mman::{madvise, MmapAdvise};
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
    for line in maps.lines() {
        // "start-end perms offset dev inode path"
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let path = f.nth(3).unwrap_or("");
        if !path.starts_with('/') || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let Some(ptr) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: MADV_PAGEOUT never changes the contents of a mapping, only which of its
        // pages are resident (private pages already written, such as relocated read-only
        // data, are anonymous memory and stay as they are without swap, or are swapped out
        // and back intact); the range is one whole mapping of this process as the kernel
        // listed it.
        if unsafe { madvise(ptr, end.saturating_sub(start), MmapAdvise::MADV_PAGEOUT) }.is_ok() {
            advised += 1;
        }
        // SAFETY: as above; MADV_RANDOM only turns off read-ahead and fault-around.
        let _ = unsafe { madvise(ptr, end.saturating_sub(start), MmapAdvise::MADV_RANDOM) };
    }
    advised
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Paging out changes residency only: a read-only file mapping reads the same bytes
    /// afterwards (the helper's code and constants are such mappings).
    #[test]
    fn page_out_keeps_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let map = Mapping::of(&file, data.len()).unwrap();
        assert!(*map == data[..]);
        let advised = page_out_read_only_mappings();
        // The test binary, its libraries and `map` at least (kernels before 5.4: none).
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let (major, minor) = kernel.split_once('.').unwrap();
        let minor: u32 = minor.split('.').next().unwrap().parse().unwrap();
        if (major.parse::<u32>().unwrap(), minor) >= (5, 4) {
            assert!(advised >= 2, "{advised} mappings advised");
        }
        assert!(*map == data[..]);
    }
}
