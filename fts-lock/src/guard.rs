//! The backend-neutral lock trait and its RAII guard.

use std::fmt;
use std::time::Duration;

use crate::Error;

/// A lock on the Process Id Table region of one shared device.
///
/// One value per device handle; it excludes every other [`TableLock`] on the
/// same device that uses the same mechanism, in this process (even another
/// instance on the same path), in other processes, and, for backends that
/// reach the storage itself, on other hosts.
pub trait TableLock: Send + fmt::Debug {
    /// Acquires the lock, retrying with exponential [`Backoff`](crate::Backoff)
    /// (with jitter) for at most `timeout`; [`Error::Timeout`] if it is still
    /// held by someone else then. A zero timeout makes exactly one attempt.
    ///
    /// The returned guard releases the lock when dropped.
    fn lock(&mut self, timeout: Duration) -> Result<LockGuard<'_>, Error>;

    /// The mechanism, for messages, e.g. `file (OFD byte-range lock on LB 6)`.
    fn describe(&self) -> String;
}

/// The backend side of a held lock, driven by [`LockGuard`].
///
/// Implement it (together with [`TableLock`]) to add a backend, or a test
/// double, outside this crate.
pub trait Release: Send + fmt::Debug {
    /// Releases the lock. Called at most once per acquisition.
    fn release(&mut self) -> Result<(), Error>;

    /// `Ok` if the lock is still held; [`Error::Lost`] if the backend can
    /// tell that it was taken away.
    fn still_held(&self) -> Result<(), Error>;
}

/// Proof that a [`TableLock`] is held; releases it when dropped.
///
/// Dropping cannot report errors, so a failed release during drop is
/// printed on stderr (one line). Use [`release`](Self::release) to release
/// explicitly and see the error.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard<'a> {
    held: Option<&'a mut dyn Release>,
}

impl<'a> LockGuard<'a> {
    /// A guard for a lock that `held` has just acquired (for implementors
    /// of [`TableLock`]).
    pub fn new(held: &'a mut dyn Release) -> Self {
        LockGuard { held: Some(held) }
    }

    /// `Ok` while the lock is still held; [`Error::Lost`] if the backend
    /// knows it was lost (a SCSI reservation preempted, say). The file
    /// backend cannot lose its lock and always returns `Ok`.
    ///
    /// Check this before a write that relies on the lock.
    pub fn still_held(&self) -> Result<(), Error> {
        match &self.held {
            Some(held) => held.still_held(),
            None => Ok(()),
        }
    }

    /// Releases the lock now, reporting any error.
    pub fn release(mut self) -> Result<(), Error> {
        match self.held.take() {
            Some(held) => held.release(),
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            if let Err(e) = held.release() {
                eprintln!("fts-lock: releasing the Process Id Table lock failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test double that counts releases and can fail them.
    #[derive(Debug, Default)]
    struct Fake {
        releases: u32,
        fail: bool,
        lost: bool,
    }

    impl Release for Fake {
        fn release(&mut self) -> Result<(), Error> {
            self.releases += 1;
            if self.fail {
                return Err(Error::Lost {
                    path: "fake".into(),
                    what: "fake".into(),
                    reason: "release failed".into(),
                });
            }
            Ok(())
        }

        fn still_held(&self) -> Result<(), Error> {
            if self.lost {
                return Err(Error::Lost {
                    path: "fake".into(),
                    what: "fake".into(),
                    reason: "preempted".into(),
                });
            }
            Ok(())
        }
    }

    fn assert_send<T: Send>() {}

    #[test]
    fn guard_is_send() {
        assert_send::<LockGuard<'static>>();
    }

    #[test]
    fn drop_releases_once() {
        let mut fake = Fake::default();
        drop(LockGuard::new(&mut fake));
        assert_eq!(fake.releases, 1);
    }

    #[test]
    fn explicit_release_reports_the_error_and_does_not_release_again() {
        let mut fake = Fake {
            fail: true,
            ..Fake::default()
        };
        let err = LockGuard::new(&mut fake).release().unwrap_err();
        assert!(err.to_string().contains("release failed"), "{err}");
        assert_eq!(fake.releases, 1);
    }

    #[test]
    fn failed_release_on_drop_does_not_panic() {
        let mut fake = Fake {
            fail: true,
            ..Fake::default()
        };
        drop(LockGuard::new(&mut fake));
        assert_eq!(fake.releases, 1);
    }

    #[test]
    fn still_held_asks_the_backend() {
        let mut fake = Fake {
            lost: true,
            ..Fake::default()
        };
        let guard = LockGuard::new(&mut fake);
        assert!(matches!(guard.still_held(), Err(Error::Lost { .. })));
    }
}
