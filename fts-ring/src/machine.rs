//! The sans-IO ring state machine for one direction of a connection.
//!
//! A direction has a [`Writer`] on one side and a [`Reader`] on the other.
//! Each side owns one pointer table, kept in memory as a [`TableImage`]: its
//! data halves are written by the side's `Writer`, its ack halves by the
//! side's `Reader`. The machines never do I/O; they tell the driver what to
//! write or read next and are told what happened.
//!
//! # Protocol (normative; FORMAT.md "Ring protocol")
//!
//! - Sequence numbers count segments over the life of a connection
//!   (generation): the first segment is 1 and a sequence number is never
//!   used twice, not even for a retransmission.
//! - Segment `k` (0-based) of a message is at ring index `k mod N`; every
//!   message starts at index 0. Every segment but the last carries exactly
//!   `P` payload bytes ([`RingConfig::payload_capacity`]); the last carries
//!   the rest (0 for an empty message, which is one segment) and has
//!   `FLG_LAST`. Every data flag has the writer's role bit; the request id
//!   is the writer's message counter modulo 16.
//! - **Writer**: the segment at message position `k` may be written once
//!   position `k - N` is acknowledged (so entry `i` is free when it was never
//!   written or the reader acknowledged the sequence number last written
//!   there). It writes a batch of at most `B` contiguous entries that never
//!   crosses a multiple of `B` (nor wraps): the entries `[g × B, (g+1) × B)`
//!   of group `g` are one contiguous run on one device (FORMAT.md "Ring
//!   segments"), so a batch is always one I/O on one device ([`group_end`]).
//!   Then it publishes the dirty chunks of its table. A message is done
//!   when its last segment is acknowledged.
//! - **Reader**: accepts the writer's entry at the expected index when its
//!   chunk has the connection's generation, its flag has the writer's role
//!   bit, its request id is the current one and its sequence number is the
//!   expected one. It acknowledges (`ack_flg` = its own role bit, `ack_seq`,
//!   `ack_req_id`) in its own table and publishes at least every `B`
//!   segments, at the end of a message, after a NAK and whenever it has
//!   nothing to read. It reads the writer's segments by the same rule, a
//!   batch never crossing a multiple of `B`.
//! - **NAK**: a segment that fails verification is answered with
//!   `FLG_NAK` and its `ack_seq`. The reader then expects, at the same index,
//!   a sequence number *greater* than the rejected one. The writer rewinds to
//!   the rejected segment's message position and retransmits from there
//!   with fresh sequence numbers; the entries it had written after the
//!   rejected one are discarded by the reader and free again. More than
//!   [`RingConfig::max_retries`] NAKs without an acknowledgement in between
//!   fail with [`MachineError::TooManyRetries`].
//! - Stale entries (earlier messages, earlier generations) never match:
//!   their sequence numbers are lower, or their chunk generation differs.

use std::collections::VecDeque;
use std::ops::Range;

use fts_layout::{Geometry, PtrChunk, PtrEntry, Role, ENTRIES_PER_CHUNK, FLG_LAST, FLG_NAK};

/// Default bound on consecutive NAKs before the writer gives up.
pub const DEFAULT_MAX_RETRIES: u32 = 8;

/// Errors of the pure state machines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    /// The reader rejected segments more than `max_retries` times in a row.
    #[error(
        "segment {seq} was rejected by the reader; {retries} retransmissions without progress"
    )]
    TooManyRetries {
        /// Sequence number of the last rejected segment.
        seq: u64,
        /// NAKs received without an acknowledgement in between.
        retries: u32,
    },
    /// The peer's table holds an entry no correct writer produces.
    #[error("protocol violation at ring entry {index} (seq {seq}): {reason}")]
    Protocol {
        /// Ring index of the entry.
        index: u32,
        /// Its sequence number.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// [`Writer::begin_message`] was called while a message is in progress.
    #[error("a message is already being sent")]
    Busy,
    /// The configuration cannot work (ring < 2, batch 0 or > ring, no payload room).
    #[error("invalid ring configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
}

/// The parameters of one direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// This side's role (its flag marks everything it writes).
    pub role: Role,
    /// Connection generation (`pro_generation`).
    pub generation: u64,
    /// Ring entries `N` (`blk5_maxptr`).
    pub ring_entries: u32,
    /// Batch `B` (`blk5_ptr_seg_per_process`).
    pub batch: u32,
    /// Payload bytes per segment `P`.
    pub payload_capacity: usize,
    /// NAKs without progress before [`MachineError::TooManyRetries`].
    pub max_retries: u32,
}

impl RingConfig {
    /// The configuration for `role` of a connection with `generation` on a
    /// layout with geometry `g`.
    pub fn from_geometry(g: &Geometry, role: Role, generation: u64) -> RingConfig {
        RingConfig {
            role,
            generation,
            ring_entries: g.ring_entries,
            batch: g.batch,
            payload_capacity: g.payload_capacity(),
            max_retries: DEFAULT_MAX_RETRIES,
        }
    }

    /// The same configuration for sealed segments: the payload capacity
    /// shrinks by the tag ([`fts_layout::SEAL_TAG_SIZE`]), which follows the
    /// payload in the segment. Both sides of a connection must agree.
    pub fn sealed(self) -> RingConfig {
        RingConfig {
            payload_capacity: self
                .payload_capacity
                .saturating_sub(fts_layout::SEAL_TAG_SIZE),
            ..self
        }
    }

    /// Checks that the parameters can work.
    pub fn validate(&self) -> Result<(), MachineError> {
        let bad = |reason: String| Err(MachineError::Config { reason });
        if self.ring_entries < 2 {
            return bad(format!(
                "ring of {} entries, need at least 2",
                self.ring_entries
            ));
        }
        if self.batch == 0 || self.batch > self.ring_entries {
            return bad(format!(
                "batch {} not in 1..={}",
                self.batch, self.ring_entries
            ));
        }
        if self.payload_capacity == 0 || u32::try_from(self.payload_capacity).is_err() {
            return bad(format!("payload capacity {}", self.payload_capacity));
        }
        Ok(())
    }

    fn n(&self) -> u64 {
        u64::from(self.ring_entries)
    }

    /// Entries a batch starting at ring index `idx` may hold: up to the
    /// end of its group ([`group_end`]), so at most `B` and never wrapping.
    fn group_room(&self, idx: u64) -> u64 {
        let idx = u32::try_from(idx).unwrap_or(u32::MAX);
        u64::from(group_end(idx, self.ring_entries, self.batch).saturating_sub(idx))
    }

    fn p(&self) -> u64 {
        self.payload_capacity as u64
    }
}

/// Exclusive end of the batch group holding entry `index`; the rule lives
/// with the geometry that places the groups on the devices.
pub use fts_layout::group_end;

/// Request id of message number `counter` (0-based): the counter modulo 16.
fn req_id_of(counter: u64) -> u8 {
    (counter % 16) as u8
}

/// The entry at ring index `index` of a peer table given as chunks, with
/// the generation of its chunk.
pub fn peer_entry(chunks: &[PtrChunk], index: u32) -> Option<(u64, &PtrEntry)> {
    let c = chunks.get(index as usize / ENTRIES_PER_CHUNK)?;
    let e = c.entries.get(index as usize % ENTRIES_PER_CHUNK)?;
    Some((c.generation, e))
}

// ---------------------------------------------------------------------------
// Table image

/// In-memory image of the table this side owns: `N` entries whose data
/// halves the [`Writer`] sets and whose ack halves the [`Reader`] sets, plus
/// which 512-byte chunks changed since the last publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableImage {
    generation: u64,
    entries: Vec<PtrEntry>,
    dirty: Vec<bool>,
}

impl TableImage {
    /// An image with `entries` (the ring) for `generation`, entirely dirty.
    pub fn new(generation: u64, entries: Vec<PtrEntry>) -> TableImage {
        let chunks = entries.len().div_ceil(ENTRIES_PER_CHUNK);
        TableImage {
            generation,
            entries,
            dirty: vec![true; chunks],
        }
    }

    /// The image written at connection start: entry `i` points at segment
    /// `segment_of(i)` of `blk_read` LBs, every flag and sequence clear.
    pub fn cleared(
        generation: u64,
        ring_entries: u32,
        blk_read: u16,
        mut segment_of: impl FnMut(u32) -> u32,
    ) -> TableImage {
        let entries = (0..ring_entries)
            .map(|i| PtrEntry {
                ptr_process_segment_ptr: segment_of(i),
                ptr_process_blk_read: blk_read,
                ..PtrEntry::default()
            })
            .collect();
        TableImage::new(generation, entries)
    }

    /// The connection generation every chunk carries.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The entries.
    pub fn entries(&self) -> &[PtrEntry] {
        &self.entries
    }

    /// Number of chunks (`ceil(N / 15)`).
    pub fn chunk_count(&self) -> u32 {
        self.dirty.len() as u32
    }

    /// Chunk `c` as it is to be written (slots past the ring are zero).
    pub fn chunk(&self, c: u32) -> PtrChunk {
        let mut chunk = PtrChunk {
            generation: self.generation,
            ..PtrChunk::default()
        };
        let start = c as usize * ENTRIES_PER_CHUNK;
        if let Some(src) = self.entries.get(start..) {
            for (dst, e) in chunk.entries.iter_mut().zip(src) {
                *dst = *e;
            }
        }
        chunk
    }

    /// Every chunk, as the peer would read them.
    pub fn chunks(&self) -> Vec<PtrChunk> {
        (0..self.chunk_count()).map(|c| self.chunk(c)).collect()
    }

    /// Whether any chunk changed since the last [`mark_clean`](Self::mark_clean).
    pub fn is_dirty(&self) -> bool {
        self.dirty.iter().any(|&d| d)
    }

    /// Maximal runs of consecutive dirty chunks, in order.
    pub fn dirty_runs(&self) -> Vec<Range<u32>> {
        let mut runs: Vec<Range<u32>> = Vec::new();
        for (c, _) in self.dirty.iter().enumerate().filter(|(_, &d)| d) {
            let c = c as u32;
            match runs.last_mut() {
                Some(r) if r.end == c => r.end = c + 1,
                _ => runs.push(c..c + 1),
            }
        }
        runs
    }

    /// Records that every dirty chunk has been written.
    pub fn mark_clean(&mut self) {
        self.dirty.iter_mut().for_each(|d| *d = false);
    }

    /// Marks every chunk dirty (e.g. to rewrite the whole table).
    pub fn mark_all_dirty(&mut self) {
        self.dirty.iter_mut().for_each(|d| *d = true);
    }

    fn touch(&mut self, index: u32) {
        if let Some(d) = self.dirty.get_mut(index as usize / ENTRIES_PER_CHUNK) {
            *d = true;
        }
    }

    fn set_data(&mut self, index: u32, flg: u8, req_id: u8, seq: u64, len: u32) {
        if let Some(e) = self.entries.get_mut(index as usize) {
            e.ptr_process_segment_flg = flg;
            e.ptr_process_req_id = req_id;
            e.ptr_process_block_seq = seq;
            e.ptr_len = len;
            self.touch(index);
        }
    }

    fn set_ack(&mut self, index: u32, flg: u8, req_id: u8, seq: u64) {
        if let Some(e) = self.entries.get_mut(index as usize) {
            e.ack_flg = flg;
            e.ack_req_id = req_id;
            e.ack_seq = seq;
            self.touch(index);
        }
    }
}

// ---------------------------------------------------------------------------
// Segments

/// One segment to write or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Ring index.
    pub index: u32,
    /// Sequence number (`ptr_process_block_seq` = `seg_seq`).
    pub seq: u64,
    /// Byte offset of the payload in the message.
    pub offset: u64,
    /// Payload bytes.
    pub len: u32,
    /// Data flags (role bit, maybe `FLG_LAST`).
    pub flags: u8,
    /// Request id.
    pub req_id: u8,
}

impl Segment {
    /// Whether this is the last segment of its message.
    pub fn is_last(&self) -> bool {
        self.flags & FLG_LAST != 0
    }
}

/// Contiguous segments (consecutive ring indices within one group of `B`
/// entries, see [`group_end`]): one I/O on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The segments, in index order.
    pub segments: Vec<Segment>,
}

impl Batch {
    /// Ring index of the first segment.
    pub fn first_index(&self) -> u32 {
        self.segments.first().map_or(0, |s| s.index)
    }

    /// Number of segments.
    pub fn count(&self) -> u32 {
        self.segments.len() as u32
    }
}

// ---------------------------------------------------------------------------
// Writer

/// What the writer wants the driver to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterAction {
    /// Write these segments (header + payload), then call
    /// [`Writer::on_segments_written`].
    WriteSegments(Batch),
    /// Write the dirty chunks of the table, then call
    /// [`TableImage::mark_clean`] and [`Writer::on_published`].
    PublishTable,
    /// Read the peer's table and pass it to [`Writer::on_peer_acks`].
    WaitForAck,
    /// The message is completely acknowledged; the next one may begin.
    Done,
    /// No message in progress.
    Idle,
}

#[derive(Debug, Clone)]
struct OutMsg {
    len: u64,
    segments: u64,
    req_id: u8,
    /// Next message position to write.
    written: u64,
    /// Positions below this are acknowledged.
    acked: u64,
}

/// The sending half of one side: owns the data halves of its table.
#[derive(Debug, Clone)]
pub struct Writer {
    cfg: RingConfig,
    next_seq: u64,
    messages: u64,
    msg: Option<OutMsg>,
    last_seq_at: Vec<u64>,
    retries: u32,
    unpublished: bool,
    /// Batches handed out and not yet written, oldest first (their
    /// sequence numbers follow each other from `next_seq`).
    pending: VecDeque<Batch>,
}

impl Writer {
    /// A writer at the start of a connection.
    pub fn new(cfg: RingConfig) -> Result<Writer, MachineError> {
        cfg.validate()?;
        Ok(Writer {
            cfg,
            next_seq: 1,
            messages: 0,
            msg: None,
            last_seq_at: vec![0; cfg.ring_entries as usize],
            retries: 0,
            unpublished: false,
            pending: VecDeque::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RingConfig {
        &self.cfg
    }

    /// Whether a message is in progress.
    pub fn busy(&self) -> bool {
        self.msg.is_some()
    }

    /// Sequence number the next new segment gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Starts a message of `len` bytes.
    pub fn begin_message(&mut self, len: u64) -> Result<(), MachineError> {
        if self.msg.is_some() {
            return Err(MachineError::Busy);
        }
        let segments = len.div_ceil(self.cfg.p()).max(1);
        self.msg = Some(OutMsg {
            len,
            segments,
            req_id: req_id_of(self.messages),
            written: 0,
            acked: 0,
        });
        self.messages += 1;
        self.retries = 0;
        Ok(())
    }

    /// What to do next.
    pub fn next_action(&mut self) -> WriterAction {
        if let Some(b) = self.pending.front() {
            return WriterAction::WriteSegments(b.clone());
        }
        if self.unpublished {
            return WriterAction::PublishTable;
        }
        let Some(m) = &self.msg else {
            return WriterAction::Idle;
        };
        if m.acked >= m.segments {
            self.msg = None;
            return WriterAction::Done;
        }
        match self.next_batch() {
            Some(b) => {
                self.pending.push_back(b.clone());
                WriterAction::WriteSegments(b)
            }
            None => WriterAction::WaitForAck,
        }
    }

    /// For a driver with several writes in flight: the batch after those
    /// already handed out (by [`next_action`](Self::next_action) or this)
    /// and not yet written, if the window has room for one. Each batch
    /// handed out must be written, and [`on_segments_written`] called for
    /// it, in the order they were handed out; publishing the table after
    /// each (or after several) is the driver's business, but never before
    /// the write completed.
    ///
    /// [`on_segments_written`]: Self::on_segments_written
    pub fn write_ahead(&mut self) -> Option<Batch> {
        let m = self.msg.as_ref()?;
        if m.acked >= m.segments {
            return None;
        }
        let b = self.next_batch()?;
        self.pending.push_back(b.clone());
        Some(b)
    }

    /// The ring entries whose acknowledgement the writer waits for: the
    /// first index and how many (wrapping); `(0, 0)` without a message.
    pub fn unacknowledged(&self) -> (u32, u32) {
        match &self.msg {
            Some(m) => (
                (m.acked % self.cfg.n()) as u32,
                (m.written - m.acked).min(self.cfg.n()) as u32,
            ),
            None => (0, 0),
        }
    }

    /// Batches handed out and not yet written.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether written segments wait to be published.
    pub fn unpublished(&self) -> bool {
        self.unpublished
    }

    /// The batch following the pending ones, if the window allows.
    fn next_batch(&self) -> Option<Batch> {
        let m = self.msg.as_ref()?;
        let ahead: u64 = self.pending.iter().map(|b| u64::from(b.count())).sum();
        let start = m.written + ahead;
        let first_seq = self.next_seq + ahead;
        let n = self.cfg.n();
        let window_end = (m.acked + n).min(m.segments);
        if start >= window_end {
            return None;
        }
        let idx = start % n;
        let count = (window_end - start).min(self.cfg.group_room(idx));
        let p = self.cfg.p();
        let flag = self.cfg.role.flag();
        let segments = (0..count)
            .map(|j| {
                let pos = start + j;
                let offset = pos * p;
                let last = pos + 1 == m.segments;
                Segment {
                    index: (idx + j) as u32,
                    seq: first_seq + j,
                    offset,
                    len: (m.len - offset).min(p) as u32,
                    flags: if last { flag | FLG_LAST } else { flag },
                    req_id: m.req_id,
                }
            })
            .collect();
        Some(Batch { segments })
    }

    /// The segments of the oldest batch handed out
    /// ([`WriterAction::WriteSegments`], [`write_ahead`](Self::write_ahead))
    /// are on disk: records them in the data halves of `table`.
    pub fn on_segments_written(&mut self, table: &mut TableImage) {
        let Some(b) = self.pending.pop_front() else {
            return;
        };
        for s in &b.segments {
            table.set_data(s.index, s.flags, s.req_id, s.seq, s.len);
            if let Some(l) = self.last_seq_at.get_mut(s.index as usize) {
                *l = s.seq;
            }
            self.next_seq = self.next_seq.max(s.seq + 1);
        }
        if let Some(m) = &mut self.msg {
            m.written += u64::from(b.count());
        }
        self.unpublished = true;
    }

    /// The dirty chunks have been written.
    pub fn on_published(&mut self) {
        self.unpublished = false;
    }

    /// Consumes the peer's table (its ack halves). Returns whether anything
    /// changed (an acknowledgement or a NAK). Must not be called between a
    /// [`WriterAction::WriteSegments`] and [`Writer::on_segments_written`]
    /// (it then does nothing).
    pub fn on_peer_acks(&mut self, peer: &[PtrChunk]) -> Result<bool, MachineError> {
        if !self.pending.is_empty() {
            return Ok(false);
        }
        let Some(m) = &mut self.msg else {
            return Ok(false);
        };
        let n = self.cfg.n();
        let peer_flag = self.cfg.role.peer().flag();
        let mut new_acked = m.acked;
        let mut nak = None;
        for pos in m.acked..m.written {
            let idx = (pos % n) as u32;
            let q = self.last_seq_at.get(idx as usize).copied().unwrap_or(0);
            let Some((gen, e)) = peer_entry(peer, idx) else {
                continue;
            };
            if q == 0 || gen != self.cfg.generation || e.ack_flg & peer_flag == 0 || e.ack_seq != q
            {
                continue;
            }
            if e.ack_flg & FLG_NAK != 0 {
                nak = Some((pos, q));
                break;
            }
            new_acked = pos + 1;
        }
        let mut changed = false;
        if new_acked > m.acked {
            m.acked = new_acked;
            self.retries = 0;
            changed = true;
        }
        if let Some((pos, seq)) = nak {
            self.retries += 1;
            if self.retries > self.cfg.max_retries {
                return Err(MachineError::TooManyRetries {
                    seq,
                    retries: self.retries,
                });
            }
            // Everything before the rejected segment was consumed; it and
            // everything after it is discarded by the reader: rewind.
            m.acked = pos;
            for p in pos..m.written {
                if let Some(l) = self.last_seq_at.get_mut((p % n) as usize) {
                    *l = 0;
                }
            }
            m.written = pos;
            changed = true;
        }
        Ok(changed)
    }
}

// ---------------------------------------------------------------------------
// Reader

/// What the reader wants the driver to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderAction {
    /// Read these segments of the peer, verify each and pass the result to
    /// [`Reader::on_segment`] in order.
    ReadSegments(Batch),
    /// Write the dirty chunks of the table, then call
    /// [`TableImage::mark_clean`] and [`Reader::on_published`].
    PublishTable,
    /// Nothing to do until the peer's table changes.
    Wait,
}

/// What [`Reader::on_segment`] made of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentOutcome {
    /// Verified and acknowledged; deliver its payload. `last` ends the message.
    Accepted {
        /// Whether it completed the message.
        last: bool,
    },
    /// Failed verification: NAK recorded, the writer will retransmit.
    Rejected,
    /// Not the segment expected now (e.g. read in the same batch after a
    /// rejected one): drop it.
    Ignored,
}

/// A completely received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageInfo {
    /// Payload bytes.
    pub len: u64,
    /// Segments.
    pub segments: u64,
    /// Request id.
    pub req_id: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Exact(u64),
    After(u64),
}

impl Want {
    fn matches(self, seq: u64) -> bool {
        match self {
            Want::Exact(s) => seq == s,
            Want::After(s) => seq > s,
        }
    }
}

/// What the reader is looking for next (for diagnostics and drivers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectation {
    /// Ring index of the peer entry.
    pub index: u32,
    /// Sequence number it must have (after a NAK: the smallest acceptable).
    pub seq: u64,
    /// Request id it must have.
    pub req_id: u8,
}

/// The receiving half of one side: reads the peer's table, owns the ack
/// halves of its own.
#[derive(Debug, Clone)]
pub struct Reader {
    cfg: RingConfig,
    messages: u64,
    pos: u64,
    want: Want,
    bytes: u64,
    pending_acks: u32,
    must_publish: bool,
    completed: Option<MessageInfo>,
}

impl Reader {
    /// A reader at the start of a connection.
    pub fn new(cfg: RingConfig) -> Result<Reader, MachineError> {
        cfg.validate()?;
        Ok(Reader {
            cfg,
            messages: 0,
            pos: 0,
            want: Want::Exact(1),
            bytes: 0,
            pending_acks: 0,
            must_publish: false,
            completed: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RingConfig {
        &self.cfg
    }

    /// The peer entry the reader waits for.
    pub fn expect(&self) -> Expectation {
        Expectation {
            index: (self.pos % self.cfg.n()) as u32,
            seq: match self.want {
                Want::Exact(s) => s,
                Want::After(s) => s + 1,
            },
            req_id: req_id_of(self.messages),
        }
    }

    /// The first segment of the next message, when the reader waits for it
    /// (not after a NAK): a driver may read that segment before the
    /// writer's table announces it, and offer it with
    /// [`announce`](Self::announce) when its header and payload check.
    pub fn message_start(&self) -> Option<Expectation> {
        match self.want {
            Want::Exact(_) if self.pos == 0 => Some(self.expect()),
            _ => None,
        }
    }

    /// Writes the data half of `seg` (read early: see
    /// [`message_start`](Self::message_start)) into `peer`, the driver's
    /// copy of the writer's table, as the writer is about to publish it,
    /// so that [`next_action`](Self::next_action) reads it. Nothing changes
    /// unless `seg` is the expected first segment and the copy holds the
    /// connection's generation at its index (a table read at least once).
    pub fn announce(&self, peer: &mut [PtrChunk], seg: &Segment) -> bool {
        let Some(x) = self.message_start() else {
            return false;
        };
        if seg.index != x.index || seg.seq != x.seq || seg.req_id != x.req_id {
            return false;
        }
        let i = seg.index as usize;
        let Some(c) = peer.get_mut(i / ENTRIES_PER_CHUNK) else {
            return false;
        };
        if c.generation != self.cfg.generation {
            return false;
        }
        let Some(e) = c.entries.get_mut(i % ENTRIES_PER_CHUNK) else {
            return false;
        };
        e.ptr_process_segment_flg = seg.flags;
        e.ptr_process_req_id = seg.req_id;
        e.ptr_process_block_seq = seg.seq;
        e.ptr_len = seg.len;
        true
    }

    /// Takes the message completed by the last accepted segment, if any.
    pub fn take_completed(&mut self) -> Option<MessageInfo> {
        self.completed.take()
    }

    /// What to do next, given the peer's current table.
    pub fn next_action(&mut self, peer: &[PtrChunk]) -> Result<ReaderAction, MachineError> {
        if self.must_publish || self.pending_acks >= self.cfg.batch {
            return Ok(ReaderAction::PublishTable);
        }
        let segments = self.scan(peer, self.pos, self.want)?;
        if !segments.is_empty() {
            Ok(ReaderAction::ReadSegments(Batch { segments }))
        } else if self.pending_acks > 0 {
            Ok(ReaderAction::PublishTable)
        } else {
            Ok(ReaderAction::Wait)
        }
    }

    /// For a driver that reads ahead: the batch `peer` already holds after
    /// `after` (the batch of the last [`ReaderAction::ReadSegments`], not
    /// yet passed to [`on_segment`](Self::on_segment)), assuming every
    /// segment of `after` is accepted: what `next_action` would return to
    /// read next. `None` when `after` ends its message, is not the batch
    /// the reader expects, or nothing valid follows it yet. Reading it
    /// early is only an optimisation: its segments still go through
    /// `next_action` and `on_segment` (which ignores them if `after` was
    /// not accepted in full).
    pub fn read_ahead(&self, peer: &[PtrChunk], after: &Batch) -> Option<Batch> {
        self.read_ahead_past(peer, after, after, u64::from(after.count()))
    }

    /// For a driver with several reads ahead: the batch `peer` holds after
    /// `last`, the last of the batches read ahead (each the `read_ahead`
    /// of the one before) after `current`, the batch of the last
    /// [`ReaderAction::ReadSegments`] (not yet passed to
    /// [`on_segment`](Self::on_segment)); `segments` counts the segments
    /// from the first of `current` to the last of `last`, both included.
    /// [`read_ahead`](Self::read_ahead) is this with `last` = `current`.
    /// `None` as for `read_ahead`, or when `current` and `last` are not the
    /// ends of such a run.
    pub fn read_ahead_past(
        &self,
        peer: &[PtrChunk],
        current: &Batch,
        last: &Batch,
        segments: u64,
    ) -> Option<Batch> {
        let n = self.cfg.n();
        let first = current.segments.first()?;
        let end = last.segments.last()?;
        let pos = self.pos.checked_add(segments)?;
        if end.is_last()
            || segments < u64::from(current.count())
            || u64::from(first.index) != self.pos % n
            || u64::from(end.index) != (pos - 1) % n
            || end.seq.checked_sub(first.seq) != Some(segments - 1)
            || !self.want.matches(first.seq)
        {
            return None;
        }
        let segments = self.scan(peer, pos, Want::Exact(end.seq + 1)).ok()?;
        (!segments.is_empty()).then_some(Batch { segments })
    }

    /// The valid segments `peer` holds from message position `pos` on (at
    /// most to the end of the group, see [`group_end`]), the first matching
    /// `want`.
    fn scan(
        &self,
        peer: &[PtrChunk],
        pos: u64,
        mut want: Want,
    ) -> Result<Vec<Segment>, MachineError> {
        let n = self.cfg.n();
        let idx = pos % n;
        let max = self.cfg.group_room(idx);
        let peer_flag = self.cfg.role.peer().flag();
        let req_id = req_id_of(self.messages);
        let p = self.cfg.p();
        let mut segments = Vec::new();
        for j in 0..max {
            let index = (idx + j) as u32;
            let Some((gen, e)) = peer_entry(peer, index) else {
                break;
            };
            let seq = e.ptr_process_block_seq;
            if gen != self.cfg.generation
                || e.ptr_process_segment_flg & peer_flag == 0
                || e.ptr_process_req_id != req_id
                || !want.matches(seq)
            {
                break;
            }
            let last = e.ptr_process_segment_flg & FLG_LAST != 0;
            let len = u64::from(e.ptr_len);
            if len > p || (!last && len != p) {
                return Err(MachineError::Protocol {
                    index,
                    seq,
                    reason: format!(
                        "payload length {len} (capacity {p}, {})",
                        if last { "last" } else { "not last" }
                    ),
                });
            }
            segments.push(Segment {
                index,
                seq,
                offset: (pos + j) * p,
                len: e.ptr_len,
                flags: e.ptr_process_segment_flg,
                req_id,
            });
            want = Want::Exact(seq + 1);
            if last {
                break;
            }
        }
        Ok(segments)
    }

    /// The result of verifying `seg` (from the last
    /// [`ReaderAction::ReadSegments`]): `ok` when its header and payload
    /// check. Records the acknowledgement or NAK in `table`.
    pub fn on_segment(
        &mut self,
        table: &mut TableImage,
        seg: &Segment,
        ok: bool,
    ) -> SegmentOutcome {
        let idx = (self.pos % self.cfg.n()) as u32;
        let req_id = req_id_of(self.messages);
        if seg.index != idx || seg.req_id != req_id || !self.want.matches(seg.seq) {
            return SegmentOutcome::Ignored;
        }
        let flag = self.cfg.role.flag();
        self.pending_acks += 1;
        if !ok {
            table.set_ack(idx, flag | FLG_NAK, req_id, seg.seq);
            self.want = Want::After(seg.seq);
            self.must_publish = true;
            return SegmentOutcome::Rejected;
        }
        table.set_ack(idx, flag, req_id, seg.seq);
        self.want = Want::Exact(seg.seq + 1);
        self.pos += 1;
        self.bytes += u64::from(seg.len);
        if seg.is_last() {
            self.completed = Some(MessageInfo {
                len: self.bytes,
                segments: self.pos,
                req_id,
            });
            self.messages += 1;
            self.pos = 0;
            self.bytes = 0;
            self.must_publish = true;
            return SegmentOutcome::Accepted { last: true };
        }
        SegmentOutcome::Accepted { last: false }
    }

    /// The dirty chunks have been written.
    pub fn on_published(&mut self) {
        self.pending_acks = 0;
        self.must_publish = false;
    }
}
