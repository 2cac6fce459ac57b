//! fts connections and (later) the file-transfer command protocol.
//!
//! **For**: connection set-up over the Process Id Table, as in the patent's
//! Figs. 8 and 9 — the initiator scans for a free entry without the lock,
//! locks, re-reads, claims it (`PRO_FLAG_ALLOCATED`, names, OS type), writes
//! it back, unlocks and polls; the connector polls for unacknowledged
//! entries naming it, locks, re-reads and sets `PRO_FLAG_PROCESSING`.
//! Closing frees the entry. Still to come (issue 3): leases for dead-peer
//! detection and the Appendix A commands framed as ring messages.
//!
//! **Not for**: the on-disk format (`fts-layout`), device I/O
//! (`fts-blockdev`), lock mechanisms (`fts-lock`) or the segment protocol
//! (`fts-ring`). This crate composes them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod auth;
mod beneath;
mod connect;
mod error;
mod lease;
mod proto;
mod reap;
mod register;
mod root;
mod table;
mod transfer;

pub use auth::{
    keygen, pub_path, transcript, verify_server, ClientAuth, ClientProof, Decision, Hello,
    PendingProof, PublicKey, SecretKey, ServerAuth, SessionKeys, PUBLIC_PREFIX,
};
pub use connect::{
    accept, accept_with, claim, claim_with, close, pending_for, wait_accepted, wait_accepted_entry,
    wait_accepted_or_stop, Accepted, Claim, Identity,
};
pub use error::Error;
pub use lease::{check_owner, read_command, read_lease, ring_fence, Heartbeat, PeerWatch};
pub use proto::{
    decode_request, decode_response, encode_request, encode_response, to_wire_text, DirEntry,
    EntryKind, ErrorCode, FromWireText, ProtoError, Request, Response, MAGIC, MAX_CONTROL_MESSAGE,
};
pub use reap::{Reaped, Reaper};
pub use register::{registered, registrations, Registered, Registration};
pub use root::{Access, Confinement, NewTarget, Root, RootError};
pub use table::{Shared, Slot};
pub use transfer::{
    check_local, serve, with_client, Client, ClientTimeouts, CopyOptions, LockFactory,
    ServeOptions, Transferred,
};
