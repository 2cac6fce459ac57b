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
    #[error("no fts server named {name:?} accepted the connection within {waited:?} (Process Id Table entry {slot} released){hint}")]
    NoConnector {
        /// The requested connector.
        name: String,
        /// Entry that was claimed and freed again.
        slot: u32,
        /// How long we waited.
        waited: Duration,
        /// What the table says about such a server, e.g. "; no server of
        /// that name is registered on the device", or empty.
        hint: String,
    },
    /// The connector refused the request.
    #[error("fts server {name:?} refused the connection (status {rc})")]
    Refused {
        /// The requested connector.
        name: String,
        /// `pro_con_rc`.
        rc: i32,
    },
    /// Authentication failed: `side` ("the server" or "this client",
    /// ...) refused the other because `reason`. Says nothing about files.
    #[error("authentication failed with fts server {server:?}: {side} refused: {reason}")]
    Auth {
        /// The server's name.
        server: String,
        /// Which side refused: "the server" or "this client".
        side: &'static str,
        /// Why (no secrets, nothing about files).
        reason: String,
    },
    /// A key, trust list or key file could not be used.
    #[error("{path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A secondary device of the layout was not found on this host: every
    /// connection's rings are striped over all the devices.
    #[error("{location}: secondary device {device} of the layout (id {id}, recorded at {recorded:?}) was not found on this host; pass --secondary PATH (it is recognised by its id, whatever the path)")]
    SecondaryMissing {
        /// The master device.
        location: String,
        /// Its 1-based Secondary Device Table entry.
        device: usize,
        /// Its `sec_dev_id`.
        id: String,
        /// `sec_path`, where it was at format.
        recorded: String,
    },
    /// Another live `serve` holds the name.
    #[error("an fts server named {name:?} is already running on {location}: {holder}; stop it first or pick another --name (a dead server's registration is reclaimed after the lease timeout)")]
    NameTaken {
        /// The name.
        name: String,
        /// The device.
        location: String,
        /// Who holds it: host id, pid, since when, lease age.
        holder: String,
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
    /// Our Process Id Table entry now belongs to another connection (a
    /// newer generation, freed, or damaged): this process was stopped or
    /// hung long enough for its lease to expire and its slot to be
    /// reclaimed, and it stopped writing into the slot at once.
    #[error("Process Id Table entry {slot} is no longer ours ({found}; ours was generation {expected}): this process was presumed dead and its slot reclaimed; stopped writing to it")]
    Fenced {
        /// The entry.
        slot: u32,
        /// Our generation.
        expected: u64,
        /// What the entry shows now.
        found: String,
    },
    /// A name does not fit `pro_requestor`/`pro_requestee`.
    #[error("invalid fts name: {0}")]
    Name(fts_layout::Error),
    /// The peer's lease made no progress for longer than the lease timeout.
    #[error("the {peer} of connection {slot} is dead: its lease made no progress for {silent:?}")]
    PeerDead {
        /// The connection.
        slot: u32,
        /// "initiator" or "connector".
        peer: String,
        /// How long it was silent, on our clock.
        silent: std::time::Duration,
    },
    /// The peer closed the connection.
    #[error("the {peer} closed connection {slot}")]
    PeerClosed {
        /// The connection.
        slot: u32,
        /// "initiator" or "connector".
        peer: String,
    },
    /// A background thread could not be started or failed.
    #[error("heartbeat thread: {0}")]
    Thread(String),
    /// The ring (segment protocol) failed.
    #[error(transparent)]
    Ring(#[from] fts_ring::Error),
    /// The server answered with an error.
    #[error("{}: {message}", code.describe())]
    Remote {
        /// Class of the error.
        code: crate::ErrorCode,
        /// The server's reason.
        message: String,
    },
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Local {
        /// What was being done.
        op: &'static str,
        /// The local path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The local target exists and replace was not requested.
    #[error("{path} exists; use replace to overwrite it")]
    LocalExists {
        /// The local path.
        path: String,
    },
    /// End-to-end digest mismatch: the file was not put in place.
    #[error(
        "integrity check failed for {path}: BLAKE3 of the received bytes differs from the sender's"
    )]
    Integrity {
        /// The file.
        path: String,
    },
    /// The peer sent something the protocol does not allow here.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The caller's stop flag was raised (a signal): the transfer was
    /// abandoned, its temporary file removed (a `--resume` partial kept).
    #[error("interrupted: transfer abandoned")]
    Interrupted,
    /// The peer's lease is alive but the reply or data it owes did not come
    /// (or stopped coming) in time.
    #[error("the {peer} of connection {slot} is alive but sent no {what} for {waited:?}")]
    NoReply {
        /// The connection.
        slot: u32,
        /// Who should have answered, e.g. `fts server "b"`.
        peer: String,
        /// What was awaited, e.g. "reply", "data".
        what: &'static str,
        /// How long we waited.
        waited: Duration,
    },
    /// A local path cannot take part in a transfer: not a regular file
    /// (FIFO, socket, device, directory) or the shared device itself.
    #[error("{path}: {reason}")]
    LocalRefused {
        /// The local path.
        path: String,
        /// Why, e.g. "is a FIFO; fts reads and writes regular files only".
        reason: String,
    },
}
