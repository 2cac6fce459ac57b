//! fts connections and the file-transfer command protocol.
//!
//! **For** (to be filled by issue 3): connection set-up over the Process Id
//! Table (the patent's Figs. 8 and 9: the initiator claims a free entry under
//! the table lock, the connector acknowledges with `PRO_FLAG_PROCESSING`),
//! leases for dead-peer detection, and the Appendix A commands (`open`, `get`,
//! `put`, `replace`, `dir`, `cd`, `close`, `quit`) framed as ring messages.
//!
//! **Not for**: the on-disk format (`fts-layout`), device I/O
//! (`fts-blockdev`), locking mechanisms (`fts-lock`) or the segment protocol
//! itself (`fts-ring`). This crate composes them.
//!
//! Nothing is implemented yet; this crate is a documented skeleton.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
