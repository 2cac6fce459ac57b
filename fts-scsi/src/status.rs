//! SCSI status codes (SAM-5) and the completion of one command.
//!
//! CHECK CONDITION and RESERVATION CONFLICT are ordinary outcomes here, not
//! transport errors: a transport hands back a [`CommandResult`] and the caller
//! decides, e.g. with [`CommandResult::into_result`].

use std::fmt;

use crate::error::{Error, Result};
use crate::sense::{Sense, SenseKey};

/// The status byte a command completed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScsiStatus {
    /// GOOD (0x00).
    Good,
    /// CHECK CONDITION (0x02): sense data describes what happened.
    CheckCondition,
    /// CONDITION MET (0x04).
    ConditionMet,
    /// BUSY (0x08).
    Busy,
    /// RESERVATION CONFLICT (0x18).
    ReservationConflict,
    /// TASK SET FULL (0x28).
    TaskSetFull,
    /// ACA ACTIVE (0x30).
    AcaActive,
    /// TASK ABORTED (0x40).
    TaskAborted,
    /// Any other (obsolete or reserved) value. [`ScsiStatus::from_u8`] never
    /// puts a value that has its own variant here.
    Other(u8),
}

impl ScsiStatus {
    /// Decodes a status byte.
    pub fn from_u8(b: u8) -> Self {
        match b {
            0x00 => Self::Good,
            0x02 => Self::CheckCondition,
            0x04 => Self::ConditionMet,
            0x08 => Self::Busy,
            0x18 => Self::ReservationConflict,
            0x28 => Self::TaskSetFull,
            0x30 => Self::AcaActive,
            0x40 => Self::TaskAborted,
            other => Self::Other(other),
        }
    }

    /// The status byte.
    pub fn code(self) -> u8 {
        match self {
            Self::Good => 0x00,
            Self::CheckCondition => 0x02,
            Self::ConditionMet => 0x04,
            Self::Busy => 0x08,
            Self::ReservationConflict => 0x18,
            Self::TaskSetFull => 0x28,
            Self::AcaActive => 0x30,
            Self::TaskAborted => 0x40,
            Self::Other(b) => b,
        }
    }

    /// The SAM name, e.g. `"RESERVATION CONFLICT"`; `None` for
    /// [`ScsiStatus::Other`].
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::Good => "GOOD",
            Self::CheckCondition => "CHECK CONDITION",
            Self::ConditionMet => "CONDITION MET",
            Self::Busy => "BUSY",
            Self::ReservationConflict => "RESERVATION CONFLICT",
            Self::TaskSetFull => "TASK SET FULL",
            Self::AcaActive => "ACA ACTIVE",
            Self::TaskAborted => "TASK ABORTED",
            Self::Other(_) => return None,
        })
    }
}

impl From<u8> for ScsiStatus {
    fn from(b: u8) -> Self {
        Self::from_u8(b)
    }
}

impl fmt::Display for ScsiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "0x{:02X}", self.code()),
        }
    }
}

/// How one command completed, as far as the SCSI layer is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    /// The status byte.
    pub status: ScsiStatus,
    /// Decoded sense data, if the transport returned any.
    pub sense: Option<Sense>,
    /// Bytes of the data buffer that were not transferred.
    pub residual: u32,
}

impl CommandResult {
    /// A GOOD completion with no residual.
    pub fn good() -> Self {
        Self {
            status: ScsiStatus::Good,
            sense: None,
            residual: 0,
        }
    }

    /// True when the status is GOOD.
    pub fn is_good(&self) -> bool {
        self.status == ScsiStatus::Good
    }

    /// True when the status is RESERVATION CONFLICT.
    pub fn is_reservation_conflict(&self) -> bool {
        self.status == ScsiStatus::ReservationConflict
    }

    /// True for CHECK CONDITION with sense key UNIT ATTENTION.
    pub fn is_unit_attention(&self) -> bool {
        self.status == ScsiStatus::CheckCondition
            && self
                .sense
                .as_ref()
                .is_some_and(|s| s.key == SenseKey::UnitAttention)
    }

    /// `Ok(self)` when the status is GOOD; otherwise the matching [`Error`]:
    /// [`Error::CheckCondition`] (with the sense, which names the key and
    /// ASC/ASCQ), [`Error::CheckConditionNoSense`],
    /// [`Error::ReservationConflict`] or [`Error::Status`].
    ///
    /// Only GOOD is success; CONDITION MET (returned only by PRE-FETCH, which
    /// this crate does not build) is reported as [`Error::Status`].
    pub fn into_result(self) -> Result<Self> {
        match self.status {
            ScsiStatus::Good => Ok(self),
            ScsiStatus::CheckCondition => match self.sense {
                Some(sense) => Err(Error::CheckCondition { sense }),
                None => Err(Error::CheckConditionNoSense),
            },
            ScsiStatus::ReservationConflict => Err(Error::ReservationConflict),
            status => Err(Error::Status {
                status,
                sense: self.sense,
            }),
        }
    }
}
