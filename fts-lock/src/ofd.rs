//! The file backend: an OFD byte-range lock on the lock record's LB.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys::{self, RangeLock};
use crate::{Backoff, Error, LockGuard, Release, TableLock};

/// Byte offset of LB 6 (the lock record), the range the file backend locks.
const LOCK_START: u64 = fts_layout::LOCK_LB * fts_layout::LB as u64;
/// Length of the locked range: one LB.
const LOCK_LEN: u64 = fts_layout::LB as u64;

/// The file backend: an open-file-description byte-range lock
/// (`F_OFD_SETLK`, Linux ≥ 3.15) on bytes `[6 × 4096, 7 × 4096)` (LB 6, the
/// lock record) of a regular file or block device, standing in for SCSI
/// RESERVE/RELEASE.
///
/// The lock belongs to the open file description this value opens for
/// itself, not to the process: two `OfdLock`s in one process exclude each
/// other (unlike classic POSIX `F_SETLK` locks), and the lock dies with the
/// descriptor, so a process that crashes or is killed never leaves it held.
/// The descriptor is close-on-exec, so child processes do not inherit (and
/// keep alive) the lock.
///
/// The lock is advisory and kernel-local: it excludes every process on this
/// host (and hosts on a network file system that forwards byte-range
/// locks), but not another host sharing a block device over a SAN. It does
/// not touch the lock record's contents.
#[derive(Debug)]
pub struct OfdLock {
    inner: OfdInner,
}

#[derive(Debug)]
struct OfdInner {
    file: File,
    path: PathBuf,
}

impl OfdLock {
    /// Opens `path` (read-write, without creating it) for locking.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(OfdLock {
            inner: OfdInner {
                file,
                path: path.to_owned(),
            },
        })
    }

    /// Locks through `file`, a descriptor the caller already opened
    /// (read-write: an exclusive lock needs write access), e.g. one opened
    /// beneath a directory descriptor so that no path is looked up again.
    /// The lock belongs to `file`'s open file description; `path` only
    /// names it in errors.
    pub fn from_file(file: File, path: PathBuf) -> Self {
        OfdLock {
            inner: OfdInner { file, path },
        }
    }

    /// The path this lock was opened on.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Takes the lock if it is free, without a guard (for backends that
    /// combine it with another lock and release it themselves).
    pub(crate) fn try_acquire_raw(&self) -> Result<bool, Error> {
        self.inner.try_acquire()
    }

    /// Releases a lock taken with [`OfdLock::try_acquire_raw`].
    pub(crate) fn release_raw(&mut self) -> Result<(), Error> {
        self.inner.release()
    }

    /// One attempt, without waiting: `Ok(None)` if someone else holds the lock.
    pub fn try_lock(&mut self) -> Result<Option<LockGuard<'_>>, Error> {
        if self.inner.try_acquire()? {
            Ok(Some(LockGuard::new(&mut self.inner)))
        } else {
            Ok(None)
        }
    }
}

impl OfdInner {
    fn try_acquire(&self) -> Result<bool, Error> {
        sys::ofd_setlk(&self.file, RangeLock::Exclusive, LOCK_START, LOCK_LEN).map_err(|source| {
            Error::Fcntl {
                path: self.path.clone(),
                op: "F_OFD_SETLK(F_WRLCK)",
                source,
            }
        })
    }
}

impl Release for OfdInner {
    fn release(&mut self) -> Result<(), Error> {
        // Unlocking cannot conflict; `false` is impossible.
        sys::ofd_setlk(&self.file, RangeLock::Unlock, LOCK_START, LOCK_LEN)
            .map(|_| ())
            .map_err(|source| Error::Fcntl {
                path: self.path.clone(),
                op: "F_OFD_SETLK(F_UNLCK)",
                source,
            })
    }

    fn still_held(&self) -> Result<(), Error> {
        // Nothing can take an OFD lock away from an open descriptor.
        Ok(())
    }
}

impl TableLock for OfdLock {
    fn lock(&mut self, timeout: Duration) -> Result<LockGuard<'_>, Error> {
        let mut backoff = Backoff::new(timeout);
        loop {
            if self.inner.try_acquire()? {
                return Ok(LockGuard::new(&mut self.inner));
            }
            if !backoff.wait() {
                return Err(Error::Timeout {
                    path: self.inner.path.display().to_string(),
                    what: self.describe(),
                    waited: backoff.elapsed(),
                });
            }
        }
    }

    fn describe(&self) -> String {
        "file (OFD byte-range lock on LB 6)".to_owned()
    }
}
