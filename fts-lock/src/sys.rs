//! The one system call std does not wrap: `fcntl(2)` with open-file-description
//! byte-range locks. All `unsafe` in the crate lives here.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// What to do with a byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeLock {
    /// Take an exclusive (write) lock.
    Exclusive,
    /// Drop our lock.
    Unlock,
}

/// One non-blocking `F_OFD_SETLK` on bytes `[start, start + len)` of `file`.
///
/// Returns `Ok(true)` when done, `Ok(false)` when another open file
/// description holds a conflicting lock (`EAGAIN`/`EACCES`), and the OS
/// error otherwise. `EINTR` is retried.
pub(crate) fn ofd_setlk(file: &File, what: RangeLock, start: u64, len: u64) -> io::Result<bool> {
    let too_big = |_| io::Error::new(io::ErrorKind::InvalidInput, "lock range exceeds off_t");
    let l_start = libc::off_t::try_from(start).map_err(too_big)?;
    let l_len = libc::off_t::try_from(len).map_err(too_big)?;
    let l_type = match what {
        RangeLock::Exclusive => libc::F_WRLCK,
        RangeLock::Unlock => libc::F_UNLCK,
    };
    // SAFETY: `flock` is a plain C struct of integers (some targets add
    // padding fields), for which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    // The constants are small (0..=2) and fit every target's `l_type` type.
    fl.l_type = l_type as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = l_start;
    fl.l_len = l_len;
    fl.l_pid = 0; // required to be 0 for OFD locks
    loop {
        // SAFETY: `file` keeps the descriptor open for the duration of the
        // call; F_OFD_SETLK reads one `struct flock` through the pointer,
        // which points to a live, initialised, properly aligned `flock` on
        // our stack (and may write into it only for F_OFD_GETLK, not used).
        let rc = unsafe {
            libc::fcntl(
                file.as_raw_fd(),
                libc::F_OFD_SETLK,
                &mut fl as *mut libc::flock,
            )
        };
        if rc != -1 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) => return Ok(false),
            _ => return Err(err),
        }
    }
}
