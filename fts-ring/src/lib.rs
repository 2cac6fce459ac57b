//! The fts segment protocol: how one side of a connection moves a message
//! to the other through a ring of data segments and two pointer tables on
//! the shared disk (EMC WO 98/14871, "Transferring File or Command Data",
//! "Writing Process", "Reading Process", Figs. 10-11; `docs/FORMAT.md`,
//! "Ring protocol").
//!
//! What it is for:
//!
//! - [`machine`]: a pure, sans-IO state machine for one direction of a
//!   connection — a [`Writer`] that cuts a message into segments, fills free
//!   ring entries in batches and handles acknowledgements, NAKs and
//!   retransmission, and a [`Reader`] that finds the peer's next segments,
//!   acknowledges them (or NAKs a corrupt one) and reports complete
//!   messages. Each side's pointer table lives in memory as a
//!   [`TableImage`]. No I/O, no clocks; exhaustively testable.
//! - [`driver`]: a thin I/O loop ([`RingPort`]) that runs both machines of
//!   one side over a [`fts_blockdev::BlockDevice`]: segment headers with
//!   CRC32C payload checks, coalesced batch I/O, table publication and
//!   adaptive polling ([`Poller`]).
//!
//! What it is not for: connection setup, authentication, leases and
//! dead-peer detection (`fts-session`; the driver only calls a liveness
//! callback while it waits), and locking (`fts-lock`): rings are never
//! locked, because every 4 KiB of a table or segment has exactly one writer.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod driver;
pub mod machine;

pub use driver::{
    Error, Fence, Liveness, MessageSource, Poller, RingPort, CORRUPT_TABLE_PATIENCE,
    REPUBLISH_AFTER,
};

pub use machine::{
    peer_entry, Batch, Expectation, MachineError, MessageInfo, Reader, ReaderAction, RingConfig,
    Segment, SegmentOutcome, TableImage, Writer, WriterAction, DEFAULT_MAX_RETRIES,
};
