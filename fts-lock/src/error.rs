//! The crate's single error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::LockKind;

/// Everything that can go wrong opening, taking or releasing a Process Id
/// Table lock.
///
/// Every variant names the device (path or location) so that the message
/// alone says which lock failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device file could not be opened for locking.
    #[error("cannot open {} for locking: {source}", path.display())]
    Open {
        /// The path that was opened.
        path: PathBuf,
        /// The error from `open(2)`.
        source: io::Error,
    },

    /// An `fcntl(2)` lock operation failed (other than "held by someone else").
    #[error("{op} on {} failed: {source}", path.display())]
    Fcntl {
        /// The device file.
        path: PathBuf,
        /// The operation, e.g. `F_OFD_SETLK(F_WRLCK)`.
        op: &'static str,
        /// The error from `fcntl(2)`.
        source: io::Error,
    },

    /// The lock was still held by someone else when the timeout expired.
    #[error("timed out after {waited:.1?} waiting for the Process Id Table lock on {path} ({what}); another fts process holds it")]
    Timeout {
        /// The device path or location.
        path: String,
        /// The mechanism, as [`TableLock::describe`](crate::TableLock::describe) gives it.
        what: String,
        /// How long was actually waited.
        waited: Duration,
    },

    /// The lock kind cannot be used on this device.
    #[error("lock kind {kind} cannot be used on {location}: {reason}")]
    Unsupported {
        /// The kind asked for.
        kind: LockKind,
        /// The device location as given.
        location: String,
        /// Why not.
        reason: &'static str,
    },

    /// A lock that was acquired is no longer held (e.g. a SCSI reservation
    /// was preempted or cleared by a reset). Not produced by the file backend.
    #[error("the Process Id Table lock on {path} ({what}) was lost: {reason}")]
    Lost {
        /// The device path or location.
        path: String,
        /// The mechanism, as [`TableLock::describe`](crate::TableLock::describe) gives it.
        what: String,
        /// What happened.
        reason: String,
    },

    /// A SCSI command of a SCSI lock backend failed.
    #[error("{what} on {location} failed: {source}")]
    Scsi {
        /// The device.
        location: String,
        /// The command and what it was for.
        what: &'static str,
        /// The SCSI error.
        source: fts_scsi::Error,
    },

    /// A lock kind name could not be parsed.
    #[error("unknown lock kind {given:?}: expected one of file, scsi2, pr, caw, auto")]
    UnknownKind {
        /// The string given.
        given: String,
    },
}
