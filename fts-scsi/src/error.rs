//! The crate's error type.

use crate::sense::Sense;
use crate::status::ScsiStatus;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while decoding a response or interpreting a
/// command's completion.
///
/// Decoders return [`Error::Truncated`] when the buffer is shorter than the
/// response says it should be; `need` is then the size to ask for (as the
/// allocation length) when the command is sent again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the structure (or than the length the
    /// structure declares).
    #[error("{what}: truncated: need {need} bytes, got {got}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// The response is long enough but its content is not valid.
    #[error("{what}: bad response: {detail}")]
    BadResponse {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The command completed with CHECK CONDITION and sense data.
    #[error("CHECK CONDITION: {sense}")]
    CheckCondition {
        /// The decoded sense data.
        sense: Sense,
    },
    /// The command completed with CHECK CONDITION but no (decodable) sense
    /// data came back.
    #[error("CHECK CONDITION without sense data")]
    CheckConditionNoSense,
    /// The command completed with RESERVATION CONFLICT: another I_T nexus
    /// holds a reservation that forbids it.
    #[error("RESERVATION CONFLICT")]
    ReservationConflict,
    /// The command completed with another status that is not GOOD.
    #[error("SCSI status {status}")]
    Status {
        /// The status.
        status: ScsiStatus,
        /// Sense data, if any came back with it.
        sense: Option<Sense>,
    },
    /// The device or target could not be opened or logged in to (a missing
    /// `/dev/sg*`, a refused iSCSI login, libiscsi not installed, ...).
    #[error("cannot open SCSI device {target}: {detail}")]
    Connect {
        /// The device path or iSCSI URL.
        target: String,
        /// What went wrong.
        detail: String,
    },
    /// The transport to the device went away (an iSCSI connection dropped).
    /// Reservations held through it must be considered lost.
    #[error("connection to {target} lost: {detail}")]
    Disconnected {
        /// The device path or iSCSI URL.
        target: String,
        /// What went wrong.
        detail: String,
    },
    /// A command did not complete within its timeout.
    #[error("{target}: command 0x{opcode:02X} timed out after {after:?}")]
    Timeout {
        /// The device path or iSCSI URL.
        target: String,
        /// The CDB's operation code.
        opcode: u8,
        /// The timeout that expired.
        after: std::time::Duration,
    },
    /// The transport failed to deliver a command (an ioctl error, a host or
    /// driver status from SG_IO, an iSCSI protocol error, ...).
    #[error("{target}: command 0x{opcode:02X} failed in the transport: {detail}")]
    Transport {
        /// The device path or iSCSI URL.
        target: String,
        /// The CDB's operation code.
        opcode: u8,
        /// What went wrong.
        detail: String,
    },
    /// The caller passed something the transport cannot send (a buffer whose
    /// direction does not match the CDB, a buffer too large, ...).
    #[error("{target}: invalid request: {detail}")]
    InvalidRequest {
        /// The device path or iSCSI URL.
        target: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl Error {
    /// The sense data carried by this error, if any.
    pub fn sense(&self) -> Option<&Sense> {
        match self {
            Error::CheckCondition { sense } => Some(sense),
            Error::Status { sense, .. } => sense.as_ref(),
            _ => None,
        }
    }

    /// True for CHECK CONDITION with sense key UNIT ATTENTION.
    pub fn is_unit_attention(&self) -> bool {
        matches!(self, Error::CheckCondition { sense } if sense.is_unit_attention())
    }

    /// True for RESERVATION CONFLICT.
    pub fn is_reservation_conflict(&self) -> bool {
        matches!(self, Error::ReservationConflict)
    }

    /// True when the transport to the device is gone
    /// ([`Error::Disconnected`]): anything held through it (a reservation,
    /// a lock) must be treated as lost.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected { .. })
    }
}

/// Fails with [`Error::Truncated`] unless `buf` holds at least `need` bytes.
pub(crate) fn need(buf: &[u8], need: usize, what: &'static str) -> Result<()> {
    if buf.len() < need {
        Err(Error::Truncated {
            what,
            need,
            got: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// Builds an [`Error::BadResponse`].
pub(crate) fn bad(what: &'static str, detail: impl Into<String>) -> Error {
    Error::BadResponse {
        what,
        detail: detail.into(),
    }
}

/// Reads `n` (at most 8) big-endian bytes at `off`, or `None` when they are
/// not all inside `buf`.
pub(crate) fn be(buf: &[u8], off: usize, n: usize) -> Option<u64> {
    debug_assert!(n <= 8);
    let s = buf.get(off..off.checked_add(n)?)?;
    Some(s.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Like [`be`] but reads 0 for bytes that are not there. For optional fields
/// at the end of structures whose length varies between standard revisions.
pub(crate) fn be_or0(buf: &[u8], off: usize, n: usize) -> u64 {
    be(buf, off, n).unwrap_or(0)
}

/// Byte at `off`, or 0 if it is not there.
pub(crate) fn byte_or0(buf: &[u8], off: usize) -> u8 {
    buf.get(off).copied().unwrap_or(0)
}

/// Turns space/NUL padded ASCII into a `String`: trailing (and, if
/// `trim_start`, leading) spaces and NULs are removed, then any byte that is
/// not printable ASCII becomes `'?'`.
pub(crate) fn ascii_field(bytes: &[u8], trim_start: bool) -> String {
    let is_pad = |b: &u8| *b == b' ' || *b == 0;
    let end = bytes.iter().rposition(|b| !is_pad(b)).map_or(0, |i| i + 1);
    let bytes = &bytes[..end];
    let start = if trim_start {
        bytes.iter().position(|b| !is_pad(b)).unwrap_or(bytes.len())
    } else {
        0
    };
    bytes[start..]
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}
