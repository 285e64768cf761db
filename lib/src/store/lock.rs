//! OFD locks on qubes.xml (interoperate with Python's `fcntl.lockf`).
//!
//! Open-file-description locks (`F_OFD_SETLK`) conflict with POSIX record locks (what
//! `fcntl.lockf` takes) on the same inode, so Python Qubes tools and this crate exclude each
//! other. Unlike POSIX locks they belong to the open file description, not the process: two
//! descriptors opened separately in one process conflict, and closing an unrelated descriptor of
//! the same file does not drop the lock. The lock is released when the last descriptor of the
//! description is closed (i.e. when the `File` is dropped).

use std::fs::File;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;

/// Tries to take an exclusive whole-file OFD lock; `Ok(false)` if another holder conflicts.
pub fn try_lock_exclusive(file: &File) -> Result<bool, std::io::Error> {
    let fl = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    match fcntl(file, FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN) | Err(Errno::EACCES) => Ok(false),
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// Outcome of [`lock_exclusive_until`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    Yes,
    /// Still held by someone else after waiting this long.
    TimedOut(Duration),
}

/// Polls [`try_lock_exclusive`] with short sleeps (1 ms doubling to 16 ms) until `deadline`.
pub fn lock_exclusive_until(
    file: &File,
    started: Instant,
    deadline: Instant,
) -> Result<Locked, std::io::Error> {
    let mut nap = Duration::from_millis(1);
    loop {
        if try_lock_exclusive(file)? {
            return Ok(Locked::Yes);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Locked::TimedOut(now.duration_since(started)));
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(16));
    }
}
