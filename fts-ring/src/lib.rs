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
//!   one side over the layout's devices ([`fts_blockdev::BlockDevice`]: the
//!   master, holding the pointer tables, and the secondaries the session
//!   gives it with [`RingPort::set_devices`]): segment headers with CRC32C
//!   payload checks, coalesced batch I/O (a batch never crosses a multiple
//!   of `B` in the ring, so it is one I/O on one device), table
//!   publication and adaptive polling ([`Poller`]). Each port keeps several
//!   I/Os in flight with an I/O thread per device it uses, each on its own
//!   device handle, so that bandwidth grows with the number of devices: the
//!   writer reads the next batches while earlier ones are sealed and
//!   written, the reader reads (and checks) the next published batches
//!   while its sink consumes one.
//!
//! - [`seal`]: sealed segments. With [`RingPort::set_seal`] every data
//!   segment of a connection — so every message, file data and control
//!   alike — is encrypted and authenticated with AES-256-GCM (`ring`'s
//!   implementation: several GB/s per core with AES-NI) under
//!   per-direction keys ([`SealKeys`]) that the session layer derives for
//!   the connection. The segment's sequence number is the nonce; layout,
//!   slot, generation, writing side, ring index, segment number, sequence
//!   number, request id, flags and length are the associated data.
//!
//! What sealing protects: the payload bytes never reach the device in
//! clear (they are encrypted in the I/O buffer, in place); a segment that
//! was altered, forged without the key, replayed from an earlier message or
//! connection, or moved to another ring entry, slot or layout fails to open,
//! is refused (NAK, so the writer sends it again) and never reaches the
//! receiver; a peer with other keys is detected ([`Error::Unauthenticated`]
//! on the reading side, [`Error::TooManyRetries`] on the writing side).
//! What it does not protect: the pointer tables, segment headers and
//! Process Id Table entries stay in clear, so whoever can read the device
//! still sees who talks to whom (names), when, how many messages and how
//! long each is (lengths are exact, not padded), and the timing of every
//! segment; and a host that can write the device can still stop a transfer
//! (by damaging segments or tables), though it cannot make the receiver
//! accept anything. Keys are only as good as the handshake that made them
//! (`fts-session`).
//!
//! What it is not for: connection setup, authentication, leases and
//! dead-peer detection (`fts-session`; the driver only calls a liveness
//! callback while it waits), and locking (`fts-lock`): rings are never
//! locked, because every 4 KiB of a table or segment has exactly one writer.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod driver;
pub mod machine;
pub mod seal;

pub use driver::{
    Error, Fence, Liveness, MessageSource, Poller, RingPort, CORRUPT_TABLE_PATIENCE,
    REPUBLISH_AFTER,
};
pub use seal::SealKeys;

pub use machine::{
    group_end, peer_entry, Batch, Expectation, MachineError, MessageInfo, Reader, ReaderAction,
    RingConfig, Segment, SegmentOutcome, TableImage, Writer, WriterAction, DEFAULT_MAX_RETRIES,
};
