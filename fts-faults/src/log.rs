//! What was injected: the log entries and the counters.

use std::fmt;
use std::time::Duration;

use crate::{Op, TornEnd};

/// What was done to one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injected {
    /// It failed with this `errno` and did nothing.
    Failed {
        /// The OS error number.
        errno: i32,
    },
    /// It was delayed this long.
    Delayed(Duration),
    /// Only the first `kept` bytes reached the device; then it ended as `then`.
    Torn {
        /// Bytes written (whole device blocks).
        kept: usize,
        /// How it ended.
        then: TornEnd,
    },
    /// It was reported done and never reached the device.
    Dropped,
    /// These bits of the device were inverted in the data read or written,
    /// as absolute bit positions: `byte offset on the device × 8 + bit`
    /// (bit 0 is the least significant).
    Flipped {
        /// The bit positions, ascending.
        bits: Vec<u64>,
    },
    /// It failed and made the device dead (a crash, or a torn write ending
    /// in one).
    Crashed,
    /// It failed because the device had crashed before.
    Dead,
}

impl Injected {
    /// The OS error number the operation failed with, if it failed: the
    /// rule's for [`Injected::Failed`], `EIO` for crashes, refusals after
    /// a crash and torn writes that end in an error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Injected::Failed { errno } => Some(*errno),
            Injected::Crashed | Injected::Dead => Some(libc::EIO),
            Injected::Torn { then, .. } if *then != TornEnd::Silent => Some(libc::EIO),
            Injected::Torn { .. }
            | Injected::Delayed(_)
            | Injected::Dropped
            | Injected::Flipped { .. } => None,
        }
    }
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Injected::Failed { errno } => {
                write!(f, "failed: {}", std::io::Error::from_raw_os_error(*errno))
            }
            Injected::Delayed(d) => write!(f, "delayed {d:?}"),
            Injected::Torn { kept, then } => {
                write!(f, "torn after {kept} bytes, then {then}")
            }
            Injected::Dropped => f.write_str("dropped"),
            Injected::Flipped { bits } => {
                f.write_str("flipped bit")?;
                if bits.len() > 1 {
                    f.write_str("s")?;
                }
                for (i, b) in bits.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{b} (byte {} bit {})", b / 8, b % 8)?;
                }
                Ok(())
            }
            Injected::Crashed => f.write_str("crashed: the device is dead from now on"),
            Injected::Dead => f.write_str("refused: the device crashed earlier"),
        }
    }
}

/// One injection: which operation, and what was done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// Number of the operation (0-based) among all operations of all
    /// handles of the wrapper.
    pub op_index: u64,
    /// Time since the wrapper was created.
    pub elapsed: Duration,
    /// Which handle: 0 for the first, then in [`reopen`](fts_blockdev::BlockDevice::reopen) order.
    pub handle: u32,
    /// The operation.
    pub op: Op,
    /// Its byte offset (0 for a flush).
    pub offset: u64,
    /// Its length in bytes (0 for a flush).
    pub len: usize,
    /// Index of the rule in the plan that fired (`None` for [`Injected::Dead`]).
    pub rule: Option<usize>,
    /// What was done.
    pub what: Injected,
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op {} at {:?} handle {}: {} of {} bytes at offset {}",
            self.op_index, self.elapsed, self.handle, self.op, self.len, self.offset
        )?;
        if let Some(r) = self.rule {
            write!(f, " (rule {r})")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// Counters over the whole life of a wrapper (all handles). They are kept
/// even when the in-memory log is full.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Reads asked for.
    pub reads: u64,
    /// Writes asked for.
    pub writes: u64,
    /// Flushes asked for.
    pub flushes: u64,
    /// Operations failed by a [`Fault::Fail`](crate::Fault::Fail).
    pub failed: u64,
    /// Operations delayed by a [`Fault::Latency`](crate::Fault::Latency).
    pub delayed: u64,
    /// Writes torn.
    pub torn: u64,
    /// Writes and flushes dropped.
    pub dropped: u64,
    /// Operations whose data had bits flipped.
    pub flipped: u64,
    /// Bits flipped in all.
    pub bits_flipped: u64,
    /// Crashes (a crash fault, or a torn write ending in one).
    pub crashes: u64,
    /// Operations refused because the device had crashed.
    pub dead: u64,
    /// Time operations spent waiting for the bandwidth cap.
    pub throttled: Duration,
    /// Injections not kept in the in-memory log because it was full.
    pub log_overflow: u64,
    /// Lines that could not be appended to the plan's log file.
    pub log_file_errors: u64,
}
