//! Mutual exclusion on the fts Process Id Table, across processes and hosts.
//!
//! In the design fts follows (EMC's patent WO 98/14871) the Process Id Table
//! is the *only* structure ever locked: "SCSI reserve and release operations
//! are used when writing to the Process Id Table". Every host that wants to
//! change a Process Id Table entry takes this lock, re-reads the table,
//! writes, and releases. This crate provides that lock behind one trait,
//! [`TableLock`], whose [`lock`](TableLock::lock) waits a bounded time (with
//! exponential [`Backoff`]) and returns an RAII [`LockGuard`].
//!
//! Backends ([`LockKind`], chosen with [`open_lock`]):
//!
//! * **file** ([`OfdLock`], implemented): an open-file-description
//!   byte-range lock (`F_OFD_SETLK`) on the bytes of the lock record, LB 6,
//!   of the device file. It stands in for SCSI RESERVE/RELEASE. It excludes
//!   every process whose kernel sees the same lock table: all processes on
//!   one host, or hosts sharing a network file system that forwards
//!   byte-range locks. It does **not** exclude another host that sees the
//!   same block device over a SAN; use a SCSI backend there.
//! * **scsi2**, **pr**, **caw** ([`ScsiLocks`], made from the device's
//!   shared transport with [`ScsiLocks::new`] or [`ScsiLocks::auto`]):
//!   SCSI-2 RESERVE(6)/RELEASE(6) as in the patent; a persistent
//!   reservation of type 5 (Write Exclusive – Registrants Only), registered
//!   only around each update; COMPARE AND WRITE of the lock record. All
//!   keep the lock record at LB 6 (holder, generation, a counter the
//!   holder advances) so that a waiter can break a holder whose record
//!   makes no progress for the Master Control Block's lock timeout, and
//!   all report a lock whose transport reconnected while it was held as
//!   [`Error::Lost`]. See the `scsi` module docs.
//!
//! What this crate is **not** for:
//!
//! * It never locks the rings (pointer tables and data segments): each of
//!   those has exactly one writer, and the format is designed so that they
//!   need no lock.
//! * It knows nothing of the Process Id Table's contents: reading, checking
//!   and writing the entries is `fts-layout` (codecs) and `fts-session`
//!   (protocol). It only provides the mutual exclusion around that.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use fts_lock::{open_lock, LockKind, TableLock};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("disk.img");
//! std::fs::File::create(&path)?.set_len(1 << 20)?;
//! let location = path.to_str().ok_or("non-UTF-8 path")?;
//!
//! let mut lock = open_lock(LockKind::Auto, location)?;
//! assert_eq!(lock.describe(), "file (OFD byte-range lock on LB 6)");
//! {
//!     let guard = lock.lock(Duration::from_secs(1))?;
//!     guard.still_held()?;
//!     // ... read, update and write the Process Id Table ...
//!     guard.release()?; // or just let it drop
//! }
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![deny(unsafe_code)]

mod backoff;
mod error;
mod guard;
mod kind;
mod ofd;
mod scsi;
mod sys;

pub use backoff::Backoff;
pub use error::Error;
pub use guard::{LockGuard, Release, TableLock};
pub use kind::{open_lock, LockKind};
pub use ofd::OfdLock;
pub use scsi::{clear_key, Holder, ScsiLock, ScsiLockConfig, ScsiLocks, ScsiMethod};
