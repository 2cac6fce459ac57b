//! Choosing a backend.

use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::str::FromStr;

use crate::{Error, OfdLock, TableLock};

/// Which locking mechanism to use (the `--lock` choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LockKind {
    /// OFD byte-range lock on LB 6 of a file or block device ([`OfdLock`]).
    File,
    /// SCSI-2 RESERVE(6)/RELEASE(6) of the whole LU ([`crate::ScsiMethod::Reserve6`]).
    Scsi2,
    /// SCSI-3 persistent reservation, type 5 ([`crate::ScsiMethod::Persistent`]).
    Pr,
    /// COMPARE AND WRITE on the lock record at LB 6 ([`crate::ScsiMethod::CompareAndWrite`]).
    Caw,
    /// The best mechanism the device offers: today [`File`](Self::File)
    /// for file and block-device paths.
    #[default]
    Auto,
}

impl LockKind {
    /// Every kind, in the order of the `--lock` choices.
    pub const ALL: [LockKind; 5] = [
        LockKind::File,
        LockKind::Scsi2,
        LockKind::Pr,
        LockKind::Caw,
        LockKind::Auto,
    ];

    /// The name accepted by [`FromStr`]: `file`, `scsi2`, `pr`, `caw` or `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::File => "file",
            LockKind::Scsi2 => "scsi2",
            LockKind::Pr => "pr",
            LockKind::Caw => "caw",
            LockKind::Auto => "auto",
        }
    }
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LockKind {
    type Err = Error;

    /// Parses `file|scsi2|pr|caw|auto` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Error> {
        LockKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::UnknownKind {
                given: s.to_owned(),
            })
    }
}

/// Whether `location` is a SCSI device rather than a file or block device:
/// a URL (`iscsi://…`) or a character device (`/dev/sg*`, `/dev/bsg/*`).
fn is_scsi_location(location: &str) -> bool {
    location.contains("://")
        || location.starts_with("/dev/sg")
        || location.starts_with("/dev/bsg/")
        || std::fs::metadata(location).is_ok_and(|m| m.file_type().is_char_device())
}

/// Opens a Process Id Table lock of `kind` on the device at `device_location`.
///
/// * `file`, and `auto` on a file or block-device path: an [`OfdLock`].
/// * `scsi2`, `pr`, `caw` on a file or block-device path:
///   [`Error::Unsupported`] ("needs a SCSI device (iscsi:// or /dev/sg*)").
/// * Any kind on a SCSI location (URL, `/dev/sg*`): [`Error::Unsupported`]:
///   a SCSI backend needs the device's transport (use [`crate::ScsiLocks`]),
///   and a file lock cannot exclude other hosts there.
pub fn open_lock(kind: LockKind, device_location: &str) -> Result<Box<dyn TableLock>, Error> {
    let unsupported = |reason| Error::Unsupported {
        kind,
        location: device_location.to_owned(),
        reason,
    };
    let scsi = is_scsi_location(device_location);
    match kind {
        LockKind::File | LockKind::Auto if !scsi => {
            Ok(Box::new(OfdLock::open(Path::new(device_location))?))
        }
        LockKind::File => Err(unsupported(
            "needs a file or block-device path (an OFD lock cannot be taken on a SCSI URL or generic device)",
        )),
        LockKind::Scsi2 | LockKind::Pr | LockKind::Caw if !scsi => {
            Err(unsupported("needs a SCSI device (iscsi:// or /dev/sg*)"))
        }
        LockKind::Scsi2 | LockKind::Pr | LockKind::Caw | LockKind::Auto => {
            Err(unsupported("a SCSI lock needs the device's transport: build it with ScsiLocks"))
        }
    }
}
