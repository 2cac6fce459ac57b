//! The crate's error type.

use std::time::Duration;

/// Everything that can go wrong setting up or tearing down a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Device I/O failed.
    #[error(transparent)]
    Device(#[from] fts_blockdev::Error),
    /// The layout on the device is unusable.
    #[error("{location}: {source}")]
    Layout {
        /// The device.
        location: String,
        /// What is wrong.
        source: fts_layout::Error,
    },
    /// The Process Id Table lock could not be taken or was lost.
    #[error(transparent)]
    Lock(#[from] fts_lock::Error),
    /// Every Process Id Table entry is in use.
    #[error("the Process Id Table on {location} is full: all {max} connections are in use")]
    TableFull {
        /// The device.
        location: String,
        /// `blk5_max_connections`.
        max: u32,
    },
    /// No connector with that name accepted in time; the claimed entry was freed.
    #[error("no fts server named {name:?} accepted the connection within {waited:?} (Process Id Table entry {slot} released)")]
    NoConnector {
        /// The requested connector.
        name: String,
        /// Entry that was claimed and freed again.
        slot: u32,
        /// How long we waited.
        waited: Duration,
    },
    /// The connector refused the request.
    #[error("fts server {name:?} refused the connection (status {rc})")]
    Refused {
        /// The requested connector.
        name: String,
        /// `pro_con_rc`.
        rc: i32,
    },
    /// Our entry was taken over by someone else while we waited.
    #[error("Process Id Table entry {slot} was taken over (expected generation {expected}, found {found})")]
    Lost {
        /// The entry.
        slot: u32,
        /// Our generation.
        expected: u64,
        /// What is there now.
        found: u64,
    },
    /// A name does not fit `pro_requestor`/`pro_requestee`.
    #[error("invalid fts name: {0}")]
    Name(fts_layout::Error),
}
