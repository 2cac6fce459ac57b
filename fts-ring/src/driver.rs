//! The thin I/O driver: runs one side's [`Writer`] and [`Reader`] over a
//! [`BlockDevice`].
//!
//! A [`RingPort`] owns this side's [`TableImage`]. [`RingPort::send`] cuts a
//! message into segments, writes each batch of contiguous segments with one
//! I/O (header with payload CRC32C + payload, only the LBs in use), then the
//! dirty LBs of its table, and waits for the peer's acknowledgements.
//! [`RingPort::recv`] polls the peer's table (waiting for a message's first
//! segment, mostly that segment itself: see FORMAT.md "Ring protocol",
//! reading a message's first segment early), reads each batch with one I/O,
//! verifies it, hands verified payload to a sink in order and publishes its
//! acknowledgements. While waiting it calls the liveness callback (dead-peer
//! detection and timeouts belong to the session layer) and backs off with a
//! [`Poller`].
//!
//! Devices: the pointer tables are on the master (the device given to
//! [`RingPort::new`]); the ring segments are wherever the layout puts them
//! ([`Geometry::ring_segment`], [`Geometry::segment_location`]), on the
//! master or on secondary devices, which the session gives the port with
//! [`RingPort::set_devices`]. A batch never crosses a multiple of the
//! batch size `B` in the ring ([`crate::machine::group_end`]) and each such
//! group of entries is one contiguous run on one device (checked by
//! [`RingPort::new`]), so every batch is one I/O on one device.
//! [`RingPort::init_table`] refuses, before writing anything, a connection
//! whose segments are on a device the port was not given
//! ([`Error::DeviceMissing`]).
//!
//! Several I/Os in flight: each device a port uses gets an I/O thread on a
//! second handle of it ([`BlockDevice::reopen`]), started at its first
//! I/O; when that fails, that device's I/O is made on the caller's thread.
//! Each thread makes its I/Os in order; the port completes them in the
//! order the machines need. While batches are written, `send` reads and
//! seals the next ones (up to `WRITE_DEPTH` batches queued, or twice the
//! number of devices its ring uses if more, so that every device works at
//! once) and publishes a batch's table entries only once its write
//! completed, the batches completed by then in one table write. While
//! `recv`'s sink consumes a batch, the I/O threads read the next ones
//! already published (one per device the peer's ring uses); each is
//! verified on the caller's thread when its turn comes. Reading the source,
//! sealing, verifying and the sink stay on the caller's thread (sealing
//! moves to the I/O thread when the ring is on one device: segments are
//! sealed in sequence order, which threads of several devices would not
//! keep); buffers are reused, never allocated per I/O.
//!
//! Sealed connections ([`RingPort::set_seal`], [`crate::seal`]): each
//! segment's payload is encrypted in place in the I/O buffer before the
//! write and its tag stored after it; the reader checks the header and the
//! CRC (damage), then the `seal` byte and the tag (keys, forgeries), and
//! decrypts in place only what authenticates. A segment failing any check
//! is NAKed and never handed to the sink.
//!
//! After any error the port's state is undefined: tear the connection
//! down.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fts_blockdev::{AlignedBuf, BlockDevice, WriteMode};
use fts_layout::{
    Expect, Geometry, PtrChunk, Role, SegHeader, Stamp, FLG_LAST, LB, RECORD_SIZE, SEAL_AES256GCM,
    SEAL_NONE, SEAL_TAG_SIZE, SEG_HDR_SIZE,
};

use crate::machine::{
    group_end, Batch, MachineError, MessageInfo, Reader, ReaderAction, RingConfig, Segment,
    SegmentOutcome, TableImage, Writer, WriterAction,
};
use crate::seal::{Opener, SealError, SealKeys, Sealer, SegmentContext};

const CHUNKS_PER_LB: usize = LB / RECORD_SIZE;

/// LBs of a pointer table at most (65,535 entries, 15 per 512-byte chunk).
const MAX_TABLE_LBS: usize =
    (65_535usize.div_ceil(fts_layout::ENTRIES_PER_CHUNK)).div_ceil(CHUNKS_PER_LB);

/// Everything that can go wrong moving a message through a ring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A device I/O failed.
    #[error("{op} at {location} failed: {source}")]
    Io {
        /// What was being done (e.g. "write segments").
        op: &'static str,
        /// Where: slot, role, ring index or table, byte offset.
        location: String,
        /// The device error.
        source: fts_blockdev::Error,
    },
    /// A chunk of the peer's pointer table does not decode.
    #[error("slot {slot}: chunk {chunk} of the {role}'s pointer table is unreadable: {source}")]
    CorruptTable {
        /// Connection slot.
        slot: u32,
        /// Owner of the table.
        role: Role,
        /// Chunk index.
        chunk: u32,
        /// The decode error.
        source: fts_layout::Error,
    },
    /// The peer's table holds an entry no correct writer produces.
    #[error("slot {slot}: segment {seq} is corrupt: {reason}")]
    Corrupt {
        /// Connection slot.
        slot: u32,
        /// Sequence number of the segment.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// The reader kept rejecting our segments.
    #[error("slot {slot}: segment {seq} rejected by the peer, {retries} retransmissions without progress")]
    TooManyRetries {
        /// Connection slot.
        slot: u32,
        /// Sequence number of the last rejected segment.
        seq: u64,
        /// NAKs without progress.
        retries: u32,
    },
    /// This side no longer owns the slot (raised by the fence callback
    /// before a write): nothing more is written.
    #[error("slot {slot}: fenced, not writing: {reason}")]
    Fenced {
        /// Connection slot.
        slot: u32,
        /// Why (from the fence callback).
        reason: String,
    },
    /// The peer is dead or closed (raised by the liveness callback).
    #[error("slot {slot}: peer gone: {reason}")]
    PeerGone {
        /// Connection slot.
        slot: u32,
        /// Why the peer is considered gone.
        reason: String,
    },
    /// Reading the message source failed.
    #[error("reading the message at offset {offset} failed: {source}")]
    Source {
        /// Byte offset in the message.
        offset: u64,
        /// The error.
        source: io::Error,
    },
    /// The message source ended before the announced length.
    #[error("the message source ended at offset {offset}, before the announced {len} bytes")]
    SourceShort {
        /// Where it ended.
        offset: u64,
        /// The announced length.
        len: u64,
    },
    /// The receiving sink failed.
    #[error("the receiving sink failed: {source}")]
    Sink {
        /// Its error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A message is already being sent.
    #[error("slot {slot}: a message is already being sent")]
    Busy {
        /// Connection slot.
        slot: u32,
    },
    /// Parameters that cannot work.
    #[error("invalid ring parameters: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// Ring segments of the connection (this side's or the peer's) are on
    /// a secondary device of the layout that this port was not given
    /// ([`RingPort::set_devices`]): nothing was written. Open it (the
    /// command line's `--secondary PATH`) and connect again.
    #[error("slot {slot}: ring segments are on secondary device {device}, which is not open on this host")]
    DeviceMissing {
        /// Connection slot.
        slot: u32,
        /// Index of the device in the layout (1..: secondaries).
        device: usize,
    },
    /// Something this driver does not do yet.
    #[error("unsupported: {reason}")]
    Unsupported {
        /// What.
        reason: String,
    },
    /// The peer's segments kept failing the connection's sealing: more than
    /// `max_retries` in a row did not authenticate (or were not sealed as
    /// agreed). Retransmissions did not help, so this is not damage on the
    /// way: the two sides have different keys, or someone else writes the
    /// ring. (The writing side sees [`Error::TooManyRetries`].)
    #[error("slot {slot}: segment {seq} refused {failures} times in a row: {reason}")]
    Unauthenticated {
        /// Connection slot.
        slot: u32,
        /// Sequence number of the last refused segment.
        seq: u64,
        /// Refusals in a row.
        failures: u32,
        /// Why, e.g. "sealed segment failed authentication: wrong key or
        /// forged segment".
        reason: &'static str,
    },
    /// This side was about to seal a sequence number it had sealed before
    /// (which would reuse a nonce); nothing was written. A bug, or a send
    /// retried on a port that already failed.
    #[error("slot {slot}: refusing to seal segment {seq} again (last sealed {last}): a nonce would repeat")]
    SealSequence {
        /// Connection slot.
        slot: u32,
        /// The refused sequence number.
        seq: u64,
        /// The last sequence number sealed.
        last: u64,
    },
}

/// Why a segment did not pass the connection's sealing.
const BAD_TAG: &str = "sealed segment failed authentication: wrong key or forged segment";
const NOT_SEALED: &str = "segment is not sealed but the connection is";
const UNEXPECTED_SEAL: &str = "segment is sealed but the connection is not";

/// Where a message's bytes come from (random access, so a NAK can rewind).
pub trait MessageSource {
    /// Reads up to `buf.len()` bytes at `offset`; 0 means end of data.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

fn slice_read_at(data: &[u8], offset: u64, buf: &mut [u8]) -> usize {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let n = buf.len().min(data.len() - start);
    buf[..n].copy_from_slice(&data[start..start + n]);
    n
}

impl MessageSource for &[u8] {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        Ok(slice_read_at(self, offset, buf))
    }
}

impl MessageSource for Vec<u8> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        Ok(slice_read_at(self, offset, buf))
    }
}

impl MessageSource for std::fs::File {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

/// Adaptive waiting: hot right after progress (spins, then yields, for at
/// most [`hot`](Poller::hot): the peer's answer usually comes within a
/// few of its I/Os), then sleeps doubling up to a maximum, so that an idle
/// connection costs next to nothing; [`reset`](Poller::reset) on progress.
/// The hot phase is bounded in time, not only in waits: each wait follows
/// a poll, an I/O, whose cost differs by device and by what is polled.
/// After [`idle_after`](Poller::idle_after) without progress the sleeps
/// grow to [`idle_sleep`](Poller::idle_sleep): every poll is an I/O (and
/// on a virtual machine an exit), so an idle connection polled every few
/// milliseconds costs a few percent of a core; the first message after a
/// pause then waits for at most one such sleep.
#[derive(Debug, Clone)]
pub struct Poller {
    /// Waits that only spin.
    pub spins: u32,
    /// Waits that yield the CPU after the spins.
    pub yields: u32,
    /// How long after progress waiting may stay hot (spins and yields).
    pub hot: Duration,
    /// First sleep.
    pub min_sleep: Duration,
    /// Longest sleep while the connection is busy.
    pub max_sleep: Duration,
    /// Time without progress after which the connection counts as idle.
    pub idle_after: Duration,
    /// Sleep once idle (never shorter than `max_sleep`).
    pub idle_sleep: Duration,
    idle: u32,
    since: Option<Instant>,
    sleep: Duration,
}

impl Default for Poller {
    fn default() -> Poller {
        Poller::new(Duration::from_millis(2))
    }
}

impl Poller {
    /// A poller sleeping at most `max_sleep`.
    pub fn new(max_sleep: Duration) -> Poller {
        let min_sleep = Duration::from_micros(10).min(max_sleep);
        Poller {
            spins: 64,
            yields: 16,
            hot: Duration::from_millis(2),
            min_sleep,
            max_sleep,
            idle_after: Duration::from_secs(1),
            idle_sleep: Duration::from_millis(25),
            idle: 0,
            since: None,
            sleep: min_sleep,
        }
    }

    /// Progress was made: wait briefly again.
    pub fn reset(&mut self) {
        self.idle = 0;
        self.since = None;
        self.sleep = self.min_sleep;
    }

    /// Waits once.
    pub fn wait(&mut self) {
        let since = *self.since.get_or_insert_with(Instant::now);
        let elapsed = since.elapsed();
        let hot = elapsed < self.hot;
        if hot && self.idle < self.spins {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        } else if hot && self.idle < self.spins.saturating_add(self.yields) {
            std::thread::yield_now();
        } else if elapsed >= self.idle_after {
            std::thread::sleep(self.idle_sleep.max(self.max_sleep));
        } else {
            std::thread::sleep(self.sleep);
            self.sleep = (self.sleep * 2).min(self.max_sleep);
        }
        self.idle = self.idle.saturating_add(1);
    }
}

/// Batches written ahead while the oldest is still being written: the
/// source is read and sealed for the next while the device writes the
/// previous ones. A ring on several devices gets two per device if that is
/// more, so that every device has a write queued while it works.
const WRITE_DEPTH: usize = 3;

/// What the I/O thread is asked to do.
#[derive(Debug, Clone, Copy)]
enum IoOp {
    Read,
    Write(WriteMode),
}

/// One I/O for the I/O thread: `buf[..len]` at `offset`.
struct IoReq {
    op: IoOp,
    offset: u64,
    len: usize,
    buf: AlignedBuf,
    /// For a write into the slot when a fence is set: when the fence was
    /// last checked. A write found older than [`FENCE_FRESH`] when its turn
    /// comes (the process was stopped) is not made: the caller checks
    /// the fence again and makes it itself.
    fenced_at: Option<Instant>,
    /// For a read ahead: check (and open) its segments here too.
    check: Option<(Checker, Vec<(Segment, SegmentContext)>)>,
    /// For a write: seal, checksum and head its segments here first.
    finish: Option<(Finisher, Vec<(Segment, SegmentContext)>)>,
}

enum IoResult {
    Done,
    StaleFence,
    /// Not made: the caller no longer wants it ([`RingPort::drain_io`]).
    Cancelled,
    /// Not written: sealing segment `.0` failed.
    Seal(u64, SealError),
    Failed(fts_blockdev::Error),
}

struct IoDone {
    buf: AlignedBuf,
    result: IoResult,
    /// What the check of each segment found, when asked for.
    verdicts: Option<Vec<Verdict>>,
}

/// What checking a segment read from the peer found: intact and current
/// (and opened, when sealed), and if not, whether it failed the sealing.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    ok: bool,
    refusal: Option<&'static str>,
}

/// Turns a batch whose payloads are in place into what is written: seals
/// each payload in place (the plaintext never reaches the device),
/// computes its CRC and writes its header. Runs on the I/O thread for
/// batches written ahead (so sealing overlaps reading the source), else on
/// the caller's; batches are finished in sequence order either way, under
/// the one sealer and its nonce guard.
#[derive(Debug, Clone)]
struct Finisher {
    layout_id: u64,
    generation: u64,
    slot: u32,
    seg_bytes: usize,
    tag: usize,
    timestamp: u64,
    sealer: Option<Arc<Mutex<Sealer>>>,
}

impl Finisher {
    fn finish(
        &self,
        buf: &mut [u8],
        segs: &[(Segment, SegmentContext)],
    ) -> Result<(), (u64, SealError)> {
        let mut sealer = match &self.sealer {
            Some(m) => Some(m.lock().map_err(|_| (0, SealError::Short))?),
            None => None,
        };
        for (j, (s, ctx)) in segs.iter().enumerate() {
            let base = j * self.seg_bytes;
            let end = base + SEG_HDR_SIZE + s.len as usize + self.tag;
            let Some(seg) = buf.get_mut(base..end) else {
                return Err((s.seq, SealError::Short));
            };
            let (hdr, body) = seg.split_at_mut(SEG_HDR_SIZE);
            let seal = match sealer.as_mut() {
                Some(sealer) => {
                    sealer.seal(ctx, body).map_err(|e| (s.seq, e))?;
                    SEAL_AES256GCM
                }
                None => SEAL_NONE,
            };
            let h = SegHeader {
                seg_seq: s.seq,
                generation: self.generation,
                timestamp: self.timestamp,
                len: s.len,
                payload_crc: crc32c::crc32c(body),
                slot: self.slot,
                req_id: s.req_id,
                flags: s.flags,
                seal,
            };
            hdr.copy_from_slice(&h.encode(Stamp::new(self.layout_id, ctx.segment)));
        }
        Ok(())
    }
}

/// Checks segments read from the peer: header, payload CRC, sealing. The
/// same code runs on the caller's thread and, for batches read ahead, on
/// the I/O thread; its verdicts then go with the buffer to the reader
/// machine, which alone decides what reaches the sink.
#[derive(Debug, Clone)]
struct Checker {
    layout_id: u64,
    generation: u64,
    slot: u32,
    seg_bytes: usize,
    tag: usize,
    opener: Option<Arc<Opener>>,
}

impl Checker {
    /// Checks the `j`-th segment of a batch in `buf`, opening it in place
    /// when it authenticates.
    fn check(&self, buf: &mut [u8], j: usize, s: &Segment, ctx: &SegmentContext) -> Verdict {
        let want_seal = if self.opener.is_some() {
            SEAL_AES256GCM
        } else {
            SEAL_NONE
        };
        let base = j * self.seg_bytes;
        let len = s.len as usize;
        let Some(seg) = buf.get_mut(base..base + SEG_HDR_SIZE + len + self.tag) else {
            return Verdict {
                ok: false,
                refusal: None,
            };
        };
        let (hdr, rest) = seg.split_at_mut(SEG_HDR_SIZE);
        // Damage (CRC) first; then the sealing, which only a segment
        // that arrived intact can fail: a wrong key or a forgery.
        let mut refusal = None;
        let mut ok = match SegHeader::decode(hdr, Expect::exact(self.layout_id, ctx.segment)) {
            Ok(h) => {
                let current = h.seg_seq == s.seq
                    && h.generation == self.generation
                    && h.req_id == s.req_id
                    && h.flags == s.flags
                    && h.len == s.len
                    && h.slot == self.slot;
                if current && h.seal != want_seal {
                    // The header has its own CRC: this is what the
                    // writer meant (and its payload CRC covers a body
                    // of another length, so it would not match).
                    refusal = Some(if want_seal == SEAL_NONE {
                        UNEXPECTED_SEAL
                    } else {
                        NOT_SEALED
                    });
                }
                current && h.payload_crc == crc32c::crc32c(rest)
            }
            Err(_) => false,
        };
        if ok && refusal.is_none() {
            if let Some(opener) = &self.opener {
                if opener.open(ctx, rest).is_err() {
                    refusal = Some(BAD_TAG);
                }
            }
        }
        ok &= refusal.is_none();
        Verdict { ok, refusal }
    }
}

/// What the caller remembers of an I/O handed to an I/O thread.
struct InFlight {
    /// The device, whose I/O thread makes it.
    dev: usize,
    op: IoOp,
    offset: u64,
    len: usize,
    /// The batch read ahead (reads) or written (writes).
    batch: Batch,
}

/// A thread doing device I/O in order through its own device handle, so
/// that reading the source, sealing, verifying, opening and the sink run
/// on the caller's thread while the device works. Buffers travel to it and
/// back; nothing is allocated per I/O.
struct IoWorker {
    /// Set: the I/Os still queued are not made.
    cancel: Arc<AtomicBool>,
    tx: Option<mpsc::Sender<IoReq>>,
    rx: mpsc::Receiver<IoDone>,
    thread: Option<JoinHandle<()>>,
}

impl IoWorker {
    fn spawn(mut dev: Box<dyn BlockDevice>) -> io::Result<IoWorker> {
        let (tx, requests) = mpsc::channel::<IoReq>();
        let (done, rx) = mpsc::channel::<IoDone>();
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("fts-ring-io".into())
            .spawn(move || {
                for mut r in requests {
                    // Finished (sealed) first: a write whose fence check
                    // went stale is then made as it is by the caller.
                    let finished = match r.finish.take() {
                        Some((f, segs)) if !cancelled.load(Ordering::Acquire) => {
                            f.finish(&mut r.buf, &segs)
                        }
                        _ => Ok(()),
                    };
                    let result = if cancelled.load(Ordering::Acquire) {
                        IoResult::Cancelled
                    } else if let Err((seq, e)) = finished {
                        IoResult::Seal(seq, e)
                    } else if r.fenced_at.is_some_and(|t| t.elapsed() > FENCE_FRESH) {
                        IoResult::StaleFence
                    } else {
                        let res = match r.op {
                            IoOp::Read => dev.read_at(r.offset, &mut r.buf[..r.len]),
                            IoOp::Write(mode) => dev.write_at(r.offset, &r.buf[..r.len], mode),
                        };
                        match res {
                            Ok(()) => IoResult::Done,
                            Err(e) => IoResult::Failed(e),
                        }
                    };
                    let verdicts = match (&result, r.check.take()) {
                        (IoResult::Done, Some((checker, segs))) => Some(
                            segs.iter()
                                .enumerate()
                                .map(|(j, (s, ctx))| checker.check(&mut r.buf, j, s, ctx))
                                .collect(),
                        ),
                        _ => None,
                    };
                    let d = IoDone {
                        buf: r.buf,
                        result,
                        verdicts,
                    };
                    if done.send(d).is_err() {
                        break;
                    }
                }
            })?;
        Ok(IoWorker {
            cancel,
            tx: Some(tx),
            rx,
            thread: Some(thread),
        })
    }
}

/// The I/O thread of one device of the layout.
enum Lane {
    /// Not needed yet.
    Idle,
    /// Running.
    Running(IoWorker),
    /// None (the device could not be reopened, or a thread ended): this
    /// device's I/O is made on the caller's thread.
    Here,
}

impl Drop for IoWorker {
    fn drop(&mut self) {
        // Ends its loop once the queued I/Os are dropped.
        self.cancel.store(true, Ordering::Release);
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Called while waiting; an error aborts the transfer.
pub type Liveness<'d> = Box<dyn FnMut() -> Result<(), Error> + Send + 'd>;

/// Called before writes into the slot (a batch of segments, the pointer
/// table) whenever the last call is older than 20 ms (`FENCE_FRESH`) when
/// the write is issued: `Err` (normally [`Error::Fenced`]) when this side
/// no longer owns the slot, e.g. because it was stopped long enough for
/// the slot to be reclaimed and reused. The write is then not made. (A
/// slot is reclaimed only after its owner's lease went stale for far
/// longer; checking before every write cost an I/O per write, most of a
/// request's latency.)
pub type Fence<'d> = Box<dyn FnMut() -> Result<(), Error> + Send + 'd>;

/// How old a fence check may be when a write is issued before it is
/// repeated (see `RingPort::fence_fresh`).
const FENCE_FRESH: Duration = Duration::from_millis(20);

/// A reader waiting for a message's first segment reads that segment
/// instead of the peer's table ([`RingPort::read_early`]), except every
/// this many polls: a segment whose header is damaged is only found (and
/// NAKed) through the table.
const TABLE_EVERY: u32 = 4;

/// How long a side waits without progress before it rewrites its whole
/// pointer table (and again every as long).
pub const REPUBLISH_AFTER: Duration = Duration::from_millis(250);

/// How long a peer table that fails validation is read again before the
/// connection fails with [`Error::CorruptTable`]: several of the peer's
/// rewrites ([`REPUBLISH_AFTER`]).
pub const CORRUPT_TABLE_PATIENCE: Duration = Duration::from_secs(2);

/// One side of a connection: its table, both machines, the device.
pub struct RingPort<'d> {
    dev: &'d mut dyn BlockDevice,
    geo: Geometry,
    slot: u32,
    role: Role,
    generation: u64,
    layout_id: u64,
    table: TableImage,
    writer: Writer,
    reader: Reader,
    poller: Poller,
    liveness: Option<Liveness<'d>>,
    fence: Option<Fence<'d>>,
    fence_checked: Option<Instant>,
    stalled_since: Option<Instant>,
    /// Segment buffers (one batch each) free for the next I/O: allocated
    /// as the pipeline first needs them, then reused.
    free: Vec<AlignedBuf>,
    /// The secondary devices of the layout: `[i]` is device `i + 1`,
    /// `None` when not open on this host ([`Self::set_devices`]).
    secondaries: Vec<Option<Box<dyn BlockDevice + 'd>>>,
    /// Where each group of `B` entries of this side's ring is: device
    /// index and byte offset of its first segment.
    own_groups: Vec<(usize, u64)>,
    /// The same for the peer's ring.
    peer_groups: Vec<(usize, u64)>,
    /// Every device holding segments of either ring was found open.
    devices_checked: bool,
    /// The I/O thread of each device of the layout (index 0: the master),
    /// each with its own handle on its device, started at its first I/O.
    lanes: Vec<Lane>,
    /// Devices holding this side's ring.
    own_devices: usize,
    /// Batches written ahead at most.
    write_depth: usize,
    /// Batches read ahead at most.
    read_depth: usize,
    /// I/Os handed to the I/O threads, oldest first (each thread completes
    /// its own in this order).
    inflight: VecDeque<InFlight>,
    table_buf: AlignedBuf,
    peer_buf: AlignedBuf,
    peer: Vec<PtrChunk>,
    sealer: Option<Arc<Mutex<Sealer>>>,
    /// The sealer's receiving cipher, shared with the I/O thread.
    opener: Option<Arc<Opener>>,
    /// A message was sent or received: sealing can no longer change.
    used: bool,
    /// Peer segments in a row that failed the sealing.
    seal_failures: u32,
    /// The first segment of the next message, read (and verified) before
    /// the peer's table announced it ([`Self::read_early`]).
    early: Option<(Segment, AlignedBuf, Verdict)>,
    /// Polls for a message's first segment so far (every
    /// [`TABLE_EVERY`]-th reads the table).
    polls: u32,
}

impl fmt::Debug for RingPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secondaries: Vec<Option<&str>> = self
            .secondaries
            .iter()
            .map(|d| d.as_ref().map(|d| d.location()))
            .collect();
        f.debug_struct("RingPort")
            .field("device", &self.dev.location())
            .field("secondaries", &secondaries)
            .field("slot", &self.slot)
            .field("role", &self.role)
            .field("generation", &self.generation)
            .field("sealed", &self.sealer.is_some())
            .field("writer", &self.writer)
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn lbs_for(bytes: usize) -> usize {
    bytes.div_ceil(LB) * LB
}

/// Where each group of `B` entries of `role`'s ring of `slot` is: the
/// device index and byte offset of the group's first segment. Refused when
/// a group is not one contiguous run of segments on one device (a batch
/// could then not be one I/O).
fn ring_groups(geo: &Geometry, slot: u32, role: Role) -> Result<Vec<(usize, u64)>, Error> {
    let n = geo.ring_entries;
    let b = geo.batch.max(1);
    let seg_bytes = u64::from(geo.seg_lbs) * LB as u64;
    let locate = |e: u32| {
        let g = geo.ring_segment(slot, role, e);
        geo.segment_location(g).ok_or_else(|| Error::Config {
            reason: format!(
                "slot {slot}: ring entry {e} of the {role}'s table is segment {g}, which no device holds"
            ),
        })
    };
    let mut groups = Vec::with_capacity(n.div_ceil(b) as usize);
    let mut first = 0;
    while first < n {
        let end = group_end(first, n, b);
        let (dev, base) = locate(first)?;
        for e in first + 1..end {
            let (d, off) = locate(e)?;
            if d != dev || off != base + u64::from(e - first) * seg_bytes {
                return Err(Error::Unsupported {
                    reason: format!(
                        "slot {slot}: ring entries {first}..{end} of the {role}'s table are not one contiguous run on one device (entry {e} is at byte {off} of device {d}, entry {first} at byte {base} of device {dev})"
                    ),
                });
            }
        }
        groups.push((dev, base));
        first = end;
    }
    Ok(groups)
}

/// How many distinct devices hold the groups.
fn devices_in(groups: &[(usize, u64)]) -> usize {
    let mask = groups.iter().fold(0u64, |m, &(d, _)| {
        m | 1u64.checked_shl(d as u32).unwrap_or(0)
    });
    mask.count_ones().max(1) as usize
}

impl<'d> RingPort<'d> {
    /// A port for `role` of connection `slot` (1-based) with `generation`,
    /// on the master device `dev` of the layout `geo` / `layout_id`. Does no
    /// I/O; when the layout has secondary devices give them with
    /// [`set_devices`](Self::set_devices), then call
    /// [`init_table`](Self::init_table) at connection start.
    ///
    /// Refused ([`Error::Unsupported`]) when a group of `B` ring entries
    /// (see [`crate::machine::group_end`]) of either side's ring is not one
    /// contiguous run of segments on one device.
    pub fn new(
        dev: &'d mut dyn BlockDevice,
        geo: Geometry,
        slot: u32,
        role: Role,
        generation: u64,
        layout_id: u64,
    ) -> Result<RingPort<'d>, Error> {
        if slot == 0 || slot > geo.max_connections {
            return Err(Error::Config {
                reason: format!("slot {slot} not in 1..={}", geo.max_connections),
            });
        }
        let cfg = RingConfig::from_geometry(&geo, role, generation);
        let cfg_err = |e: MachineError| Error::Config {
            reason: e.to_string(),
        };
        let writer = Writer::new(cfg).map_err(cfg_err)?;
        let reader = Reader::new(cfg).map_err(cfg_err)?;
        let own_groups = ring_groups(&geo, slot, role)?;
        let peer_groups = ring_groups(&geo, slot, role.peer())?;
        let own_devices = devices_in(&own_groups);
        let write_depth = WRITE_DEPTH.max(2 * own_devices);
        let read_depth = devices_in(&peer_groups);
        let lanes = (0..geo.devices.len().max(1)).map(|_| Lane::Idle).collect();
        let secondaries = (1..geo.devices.len()).map(|_| None).collect();
        let blk_read = u16::try_from(geo.seg_lbs).map_err(|_| Error::Config {
            reason: format!("segment of {} LBs", geo.seg_lbs),
        })?;
        let table = TableImage::cleared(generation, geo.ring_entries, blk_read, |i| {
            geo.ring_segment(slot, role, i)
        });
        let alloc = |len: usize| {
            AlignedBuf::new(len).map_err(|source| Error::Io {
                op: "allocate buffer",
                location: dev.location().to_owned(),
                source,
            })
        };
        let seg_buf = alloc(geo.batch as usize * geo.seg_lbs as usize * LB)?;
        let table_buf = alloc(geo.table_bytes())?;
        let peer_buf = alloc(geo.table_bytes())?;
        Ok(RingPort {
            dev,
            geo,
            slot,
            role,
            generation,
            layout_id,
            table,
            writer,
            reader,
            poller: Poller::default(),
            liveness: None,
            fence: None,
            fence_checked: None,
            stalled_since: None,
            free: vec![seg_buf],
            secondaries,
            own_groups,
            peer_groups,
            devices_checked: false,
            lanes,
            own_devices,
            write_depth,
            read_depth,
            inflight: VecDeque::new(),
            table_buf,
            peer_buf,
            peer: Vec::new(),
            sealer: None,
            opener: None,
            used: false,
            seal_failures: 0,
            early: None,
            polls: 0,
        })
    }

    /// Seals every segment of this connection with `keys` (AES-256-GCM; see
    /// [`crate::seal`]): what this side writes is sealed with `keys.send`,
    /// what the peer writes must open with `keys.recv`. Both sides call it,
    /// with mirrored keys, after [`new`](Self::new) and before the first
    /// message (normally before [`init_table`](Self::init_table)). The
    /// payload capacity per segment shrinks by the 16-byte tag.
    ///
    /// Refused (with [`Error::Config`]) once a message was sent or
    /// received, when the two keys are equal, or when a segment has no
    /// room for a payload and a tag.
    pub fn set_seal(&mut self, keys: SealKeys) -> Result<(), Error> {
        if self.used {
            return Err(Error::Config {
                reason: format!(
                    "slot {}: sealing must be set before the first message",
                    self.slot
                ),
            });
        }
        let sealer = Sealer::new(&keys).map_err(|reason| Error::Config {
            reason: format!("slot {}: {reason}", self.slot),
        })?;
        let cfg = RingConfig::from_geometry(&self.geo, self.role, self.generation).sealed();
        let cfg_err = |e: MachineError| Error::Config {
            reason: format!("sealed segments: {e}"),
        };
        self.writer = Writer::new(cfg).map_err(cfg_err)?;
        self.reader = Reader::new(cfg).map_err(cfg_err)?;
        self.opener = Some(Arc::new(sealer.opener()));
        self.sealer = Some(Arc::new(Mutex::new(sealer)));
        Ok(())
    }

    /// Gives the port the secondary devices of the layout: `secondaries[i]`
    /// is device `i + 1` in Secondary Device Table order (index 0 of the
    /// layout is the master, given to [`new`](Self::new)); `None`, or a
    /// shorter vector, for devices not found on this host. Only the
    /// devices holding ring segments of this connection are used
    /// ([`ring_devices`](Self::ring_devices)); each gets its own I/O thread
    /// on a second handle ([`BlockDevice::reopen`]) at its first I/O.
    /// Identifying the devices (layout and device ids) is the caller's
    /// business. Call it after `new` and before
    /// [`init_table`](Self::init_table), which checks that every device
    /// the connection needs is there ([`Error::DeviceMissing`]).
    ///
    /// Refused (with [`Error::Config`]) once a message was sent or
    /// received, or with more devices than the layout has.
    pub fn set_devices(
        &mut self,
        mut secondaries: Vec<Option<Box<dyn BlockDevice + 'd>>>,
    ) -> Result<(), Error> {
        let want = self.geo.devices.len().saturating_sub(1);
        if self.used || !self.inflight.is_empty() {
            return Err(Error::Config {
                reason: format!(
                    "slot {}: devices must be set before the first message",
                    self.slot
                ),
            });
        }
        if secondaries.len() > want {
            return Err(Error::Config {
                reason: format!(
                    "slot {}: {} secondary devices given, the layout has {want}",
                    self.slot,
                    secondaries.len()
                ),
            });
        }
        secondaries.resize_with(want, || None);
        self.secondaries = secondaries;
        for lane in &mut self.lanes {
            *lane = Lane::Idle;
        }
        self.devices_checked = false;
        Ok(())
    }

    /// The devices of the layout (0: the master, 1..: secondaries) holding
    /// ring segments of this connection, this side's or the peer's, in
    /// increasing order: those [`init_table`](Self::init_table) needs.
    pub fn ring_devices(&self) -> Vec<usize> {
        let mut devs: Vec<usize> = self
            .own_groups
            .iter()
            .chain(&self.peer_groups)
            .map(|&(d, _)| d)
            .collect();
        devs.sort_unstable();
        devs.dedup();
        devs
    }

    /// Checks (once) that every device holding ring segments of this
    /// connection is open and large enough.
    fn check_devices(&mut self) -> Result<(), Error> {
        if self.devices_checked {
            return Ok(());
        }
        let (n, b) = (self.geo.ring_entries, self.geo.batch.max(1));
        let seg_bytes = u64::from(self.geo.seg_lbs) * LB as u64;
        for dev in self.ring_devices() {
            let Some(d) = self.device_ref(dev) else {
                return Err(Error::DeviceMissing {
                    slot: self.slot,
                    device: dev,
                });
            };
            let size = d.size_bytes();
            // The end of the last segment of each group on the device.
            let end = [&self.own_groups, &self.peer_groups]
                .into_iter()
                .flat_map(|groups| groups.iter().enumerate())
                .filter(|&(_, &(g, _))| g == dev)
                .map(|(k, &(_, off))| {
                    let first = (k as u32).saturating_mul(b);
                    let len = group_end(first, n, b).saturating_sub(first);
                    off.saturating_add(u64::from(len) * seg_bytes)
                })
                .max()
                .unwrap_or(0);
            if end > size {
                return Err(Error::Config {
                    reason: format!(
                        "slot {}: ring segments reach byte {end} of device {dev} ({}), which has {size} bytes",
                        self.slot,
                        d.location()
                    ),
                });
            }
        }
        self.devices_checked = true;
        Ok(())
    }

    /// Device `i` of the layout (0: the master), if open.
    fn device_ref(&self, i: usize) -> Option<&dyn BlockDevice> {
        if i == 0 {
            return Some(&*self.dev);
        }
        match self.secondaries.get(i - 1) {
            Some(Some(d)) => Some(d.as_ref()),
            _ => None,
        }
    }

    /// Device `i` of the layout (0: the master), for an I/O on the
    /// caller's thread.
    fn device(&mut self, i: usize) -> Result<&mut dyn BlockDevice, Error> {
        if i == 0 {
            return Ok(&mut *self.dev);
        }
        match self.secondaries.get_mut(i - 1) {
            Some(Some(d)) => Ok(d.as_mut()),
            _ => Err(Error::DeviceMissing {
                slot: self.slot,
                device: i,
            }),
        }
    }

    /// Where device `i` is, for messages.
    fn location(&self, i: usize) -> &str {
        self.device_ref(i)
            .map_or("(device not open)", |d| d.location())
    }

    /// The device and byte offset of batch `b` of `owner`'s ring: one
    /// contiguous run in one group of `B` entries, so one I/O.
    fn batch_location(&self, owner: Role, b: &Batch) -> Result<(usize, u64), Error> {
        let groups = if owner == self.role {
            &self.own_groups
        } else {
            &self.peer_groups
        };
        let bsz = self.geo.batch.max(1);
        let first = b.first_index();
        let last = first + b.count().max(1) - 1;
        let g = first / bsz;
        debug_assert_eq!(last / bsz, g, "batch {first}..={last} crosses a group");
        match groups.get(g as usize) {
            Some(&(dev, base)) if last / bsz == g => {
                let seg_bytes = u64::from(self.geo.seg_lbs) * LB as u64;
                Ok((dev, base + u64::from(first - g * bsz) * seg_bytes))
            }
            _ => Err(Error::Unsupported {
                reason: format!(
                    "slot {}: ring entries {first}..={last} of the {owner}'s table are not in one group of {bsz}",
                    self.slot
                ),
            }),
        }
    }

    /// Whether segments are sealed ([`set_seal`](Self::set_seal)).
    pub fn is_sealed(&self) -> bool {
        self.sealer.is_some()
    }

    /// Payload bytes per segment (16 fewer when sealed).
    pub fn payload_capacity(&self) -> usize {
        self.writer.config().payload_capacity
    }

    /// What checks the peer's segments.
    fn checker(&self) -> Checker {
        Checker {
            layout_id: self.layout_id,
            generation: self.generation,
            slot: self.slot,
            seg_bytes: self.geo.seg_lbs as usize * LB,
            tag: self.tag_len(),
            opener: self.opener.clone(),
        }
    }

    /// Bytes after a segment's payload: the tag when sealed.
    fn tag_len(&self) -> usize {
        if self.sealer.is_some() {
            SEAL_TAG_SIZE
        } else {
            0
        }
    }

    /// Sets the callback run while waiting (dead-peer detection, timeouts).
    pub fn set_liveness(&mut self, liveness: Liveness<'d>) {
        self.liveness = Some(liveness);
    }

    /// Sets the check run before every write into the slot (see [`Fence`]).
    pub fn set_fence(&mut self, fence: Fence<'d>) {
        self.fence = Some(fence);
    }

    fn check_fence(&mut self) -> Result<(), Error> {
        match &mut self.fence {
            Some(f) => {
                // Stamped before the check: a stop during or after it
                // makes the check look old at the write.
                let at = Instant::now();
                f()?;
                self.fence_checked = Some(at);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Right before a write: the fence check must be recent. A process
    /// stopped (SIGSTOP, a hung host) between its check and its write
    /// wakes up with an old check: it checks again, so it finds out that
    /// its slot was reused instead of writing into it. (The monotonic
    /// clock runs while a process is stopped.)
    fn fence_fresh(&mut self) -> Result<(), Error> {
        if self.fence.is_some()
            && self
                .fence_checked
                .map_or(true, |t| t.elapsed() > FENCE_FRESH)
        {
            self.check_fence()?;
        }
        Ok(())
    }

    /// Replaces the poller.
    pub fn set_poller(&mut self, poller: Poller) {
        self.poller = poller;
    }

    /// This side's table image.
    pub fn table(&self) -> &TableImage {
        &self.table
    }

    /// This side's writer machine.
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// This side's reader machine.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Writes this side's whole table, cleared, with the connection's
    /// generation (FUA). First checks that every device holding ring
    /// segments of the connection, this side's or the peer's, is open
    /// ([`set_devices`](Self::set_devices)): else nothing is written and
    /// the error is [`Error::DeviceMissing`].
    pub fn init_table(&mut self) -> Result<(), Error> {
        self.check_devices()?;
        self.table.mark_all_dirty();
        self.publish(WriteMode::Fua)
    }

    /// Sends the `len` bytes of `msg`; returns when the peer has
    /// acknowledged the last segment.
    ///
    /// While the I/O thread writes a batch, the next ones are read from
    /// `msg` and sealed; each batch's table entries are published once its
    /// write completed (the batches completed by then in one table write).
    pub fn send(&mut self, msg: &mut dyn MessageSource, len: u64) -> Result<(), Error> {
        self.check_devices()?;
        self.used = true;
        self.writer
            .begin_message(len)
            .map_err(|e| self.machine_err(e))?;
        self.progressed();
        let r = self.send_loop(msg, len);
        if r.is_err() {
            self.drain_io();
        }
        r
    }

    fn send_loop(&mut self, msg: &mut dyn MessageSource, len: u64) -> Result<(), Error> {
        loop {
            // Keep the I/O threads busy. A message that fits in one batch
            // is written right here: a hand-off would only add latency.
            // So is a batch for a device without an I/O thread, once the
            // writes before it completed (they complete in order).
            while self.inflight.len() < self.write_depth {
                let Some(b) = self.writer.write_ahead() else {
                    break;
                };
                let (dev, offset) = self.batch_location(self.role, &b)?;
                let alone =
                    self.inflight.is_empty() && b.segments.last().is_some_and(Segment::is_last);
                if alone || !self.lane(dev) {
                    while self.finish_write(true)? {}
                    self.write_batch_here(msg, &b, len, dev, offset)?;
                    self.writer.on_segments_written(&mut self.table);
                    self.progressed();
                    break;
                }
                self.submit_batch(msg, b, len, dev, offset)?;
            }
            if !self.inflight.is_empty() {
                // The oldest write, and any others already done: one
                // table write publishes them all.
                self.finish_write(true)?;
                while self.finish_write(false)? {}
                self.progressed();
                self.publish(WriteMode::Normal)?;
                self.writer.on_published();
                continue;
            }
            match self.writer.next_action() {
                WriterAction::WriteSegments(b) => {
                    let (dev, offset) = self.batch_location(self.role, &b)?;
                    self.write_batch_here(msg, &b, len, dev, offset)?;
                    self.writer.on_segments_written(&mut self.table);
                    self.progressed();
                }
                WriterAction::PublishTable => {
                    self.publish(WriteMode::Normal)?;
                    self.writer.on_published();
                }
                WriterAction::WaitForAck => {
                    let (first, count) = self.writer.unacknowledged();
                    self.read_peer(first, count.max(1))?;
                    let progress = self
                        .writer
                        .on_peer_acks(&self.peer)
                        .map_err(|e| self.machine_err(e))?;
                    if progress {
                        self.progressed();
                    } else {
                        self.idle()?;
                    }
                }
                WriterAction::Done | WriterAction::Idle => return Ok(()),
            }
        }
    }

    /// Receives the next message, handing its payload to `sink` in order.
    ///
    /// While `sink` consumes a batch, the I/O thread reads the next one
    /// already published; it is verified (and opened) only when its turn
    /// comes, so nothing unverified ever reaches `sink`.
    pub fn recv<E>(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<MessageInfo, Error>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.check_devices()?;
        self.used = true;
        self.progressed();
        let r = self.recv_loop(sink);
        // A batch read ahead but not wanted any more (after a NAK).
        self.drain_io();
        if let Some((_, buf, _)) = self.early.take() {
            self.free.push(buf);
        }
        r
    }

    fn recv_loop<E>(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<MessageInfo, Error>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut done: Option<MessageInfo> = None;
        let mut stale = true;
        loop {
            if stale && !self.read_early()? {
                // What next_action and read_ahead look at.
                let first = self.reader.expect().index;
                let ahead = u32::try_from(self.read_depth).unwrap_or(1);
                self.read_peer(first, ahead.saturating_add(1) * self.geo.batch)?;
            }
            let action = self
                .reader
                .next_action(&self.peer)
                .map_err(|e| self.machine_err(e))?;
            match action {
                ReaderAction::ReadSegments(b) => {
                    let (mut buf, verdicts) = self.fetch_batch(&b)?;
                    if let Err(e) = self.read_ahead(&b) {
                        self.free.push(buf);
                        return Err(e);
                    }
                    let r = self.verify_batch(&b, &mut buf, verdicts, sink);
                    self.free.push(buf);
                    r?;
                    if let Some(info) = self.reader.take_completed() {
                        done = Some(info);
                    }
                    self.progressed();
                    // With as many batches read ahead as the devices
                    // allow, the table read says what comes next already;
                    // with fewer (a ring on several devices), reading it
                    // again lets the next batch top them up. A completed
                    // message needs no more of the peer's table: its
                    // acknowledgement is published next.
                    stale = done.is_none() && self.inflight.len() < self.read_depth;
                }
                ReaderAction::PublishTable => {
                    self.publish(WriteMode::Normal)?;
                    self.reader.on_published();
                    if let Some(info) = done {
                        return Ok(info);
                    }
                    stale = false;
                }
                ReaderAction::Wait => {
                    if let Some(info) = done {
                        return Ok(info);
                    }
                    self.idle()?;
                    stale = true;
                }
            }
        }
    }

    /// Whether device `dev` has an I/O thread: started, on a second handle
    /// of the device, at the first call. Without one (the device cannot be
    /// reopened), its I/O is made on the caller's thread.
    fn lane(&mut self, dev: usize) -> bool {
        match self.lanes.get(dev) {
            Some(Lane::Running(_)) => return true,
            Some(Lane::Here) | None => return false,
            Some(Lane::Idle) => {}
        }
        let worker = self
            .device_ref(dev)
            .and_then(|d| d.reopen().ok())
            .and_then(|h| IoWorker::spawn(h).ok());
        let running = worker.is_some();
        if let Some(lane) = self.lanes.get_mut(dev) {
            *lane = worker.map_or(Lane::Here, Lane::Running);
        }
        running
    }

    /// The I/O thread of device `dev`, if running.
    fn worker(&self, dev: usize) -> Option<&IoWorker> {
        match self.lanes.get(dev) {
            Some(Lane::Running(io)) => Some(io),
            _ => None,
        }
    }

    fn io_gone(&self, dev: usize) -> Error {
        let location = self.location(dev);
        Error::Io {
            op: "device I/O",
            location: format!("{location} slot {}", self.slot),
            source: fts_blockdev::Error::Io {
                op: "hand an I/O to the I/O thread",
                location: location.to_owned(),
                offset: 0,
                len: 0,
                source: io::Error::other("the I/O thread ended"),
            },
        }
    }

    /// A free segment buffer (allocated the first times only).
    fn take_buf(&mut self) -> Result<AlignedBuf, Error> {
        if let Some(b) = self.free.pop() {
            return Ok(b);
        }
        AlignedBuf::new(self.geo.batch as usize * self.geo.seg_lbs as usize * LB).map_err(
            |source| Error::Io {
                op: "allocate buffer",
                location: self.dev.location().to_owned(),
                source,
            },
        )
    }

    /// Hands an I/O on device `dev` to its I/O thread.
    fn submit(&mut self, dev: usize, req: IoReq, batch: Batch) -> Result<(), Error> {
        let f = InFlight {
            dev,
            op: req.op,
            offset: req.offset,
            len: req.len,
            batch,
        };
        let sent = match self.worker(dev).and_then(|io| io.tx.as_ref()) {
            Some(tx) => tx.send(req).map_err(|e| e.0.buf),
            None => Err(req.buf),
        };
        match sent {
            Ok(()) => {
                self.inflight.push_back(f);
                Ok(())
            }
            Err(buf) => {
                self.free.push(buf);
                Err(self.io_gone(dev))
            }
        }
    }

    /// The next completion of device `dev`'s I/O thread (`None`: none yet
    /// and `block` is false). When a thread ended, every thread is stopped
    /// and what was in flight forgotten (the port is done for anyway).
    fn next_done(&mut self, dev: usize, block: bool) -> Result<Option<IoDone>, Error> {
        let Some(io) = self.worker(dev) else {
            return Err(self.io_gone(dev));
        };
        let r = if block {
            io.rx.recv().map_err(|_| ())
        } else {
            match io.rx.try_recv() {
                Ok(d) => Ok(d),
                Err(mpsc::TryRecvError::Empty) => return Ok(None),
                Err(mpsc::TryRecvError::Disconnected) => Err(()),
            }
        };
        match r {
            Ok(d) => Ok(Some(d)),
            Err(()) => {
                for lane in &mut self.lanes {
                    if matches!(lane, Lane::Running(_)) {
                        *lane = Lane::Here;
                    }
                }
                self.inflight.clear();
                Err(self.io_gone(dev))
            }
        }
    }

    /// Sets or clears the cancel flag of every I/O thread.
    fn cancel_io(&self, cancel: bool) {
        for lane in &self.lanes {
            if let Lane::Running(io) = lane {
                io.cancel.store(cancel, Ordering::Release);
            }
        }
    }

    /// Drops the I/Os in flight: those not started yet are not made, those
    /// under way are waited for.
    fn drain_io(&mut self) {
        if self.inflight.is_empty() {
            return;
        }
        self.cancel_io(true);
        while let Some(dev) = self.inflight.front().map(|f| f.dev) {
            match self.next_done(dev, true) {
                Ok(Some(d)) => {
                    self.inflight.pop_front();
                    self.free.push(d.buf);
                }
                _ => break,
            }
        }
        self.cancel_io(false);
    }

    /// Hands the reads of the batches following `current` (the batch
    /// being consumed) that the peer's table already shows to the I/O
    /// threads: up to one per device the peer's ring uses, stopping at a
    /// device without an I/O thread.
    fn read_ahead(&mut self, current: &Batch) -> Result<(), Error> {
        while self.inflight.len() < self.read_depth {
            let segments = self
                .inflight
                .iter()
                .fold(u64::from(current.count()), |n, f| {
                    n + u64::from(f.batch.count())
                });
            let last = self.inflight.back().map_or(current, |f| &f.batch);
            let Some(next) = self
                .reader
                .read_ahead_past(&self.peer, current, last, segments)
            else {
                break;
            };
            let (dev, offset) = self.batch_location(self.role.peer(), &next)?;
            if !self.lane(dev) {
                break;
            }
            self.submit_read(next, dev, offset)?;
        }
        Ok(())
    }

    /// Reads `b` from the source, seals it and hands its write, at
    /// `offset` of device `dev`, to that device's I/O thread. The sealing
    /// is done there too when this side's ring is on one device; with
    /// several, here, so that segments are sealed in sequence order.
    fn submit_batch(
        &mut self,
        msg: &mut dyn MessageSource,
        b: Batch,
        len: u64,
        dev: usize,
        offset: u64,
    ) -> Result<(), Error> {
        let mut buf = self.take_buf()?;
        let seal_here = self.sealer.is_some() && self.own_devices > 1;
        let mut finish = Some((self.finisher(), self.write_contexts(&b)));
        let ready = self.load_batch(msg, &b, len, &mut buf).and_then(|total| {
            if seal_here {
                if let Some((f, segs)) = finish.take() {
                    f.finish(&mut buf, &segs)
                        .map_err(|(seq, e)| self.seal_err(seq, e))?;
                }
            }
            self.fence_fresh()?;
            Ok(total)
        });
        let total = match ready {
            Ok(r) => r,
            Err(e) => {
                self.free.push(buf);
                return Err(e);
            }
        };
        let fenced_at = self.fence.as_ref().and(self.fence_checked);
        let req = IoReq {
            op: IoOp::Write(WriteMode::Normal),
            offset,
            len: total,
            buf,
            fenced_at,
            check: None,
            finish,
        };
        self.submit(dev, req, b)
    }

    /// Hands the read of `b` (read ahead), at `offset` of device `dev`, to
    /// that device's I/O thread.
    fn submit_read(&mut self, b: Batch, dev: usize, offset: u64) -> Result<(), Error> {
        let peer = self.role.peer();
        let segs = b
            .segments
            .iter()
            .map(|s| (*s, self.seal_context(peer, s)))
            .collect();
        let buf = self.take_buf()?;
        let req = IoReq {
            op: IoOp::Read,
            offset,
            len: self.batch_bytes(&b),
            buf,
            fenced_at: None,
            check: Some((self.checker(), segs)),
            finish: None,
        };
        self.submit(dev, req, b)
    }

    /// Completes the oldest write in flight (waiting for it if `block`):
    /// its segments are recorded in the table, to be published. `false`
    /// when none was done.
    fn finish_write(&mut self, block: bool) -> Result<bool, Error> {
        let Some(dev) = self.inflight.front().map(|f| f.dev) else {
            return Ok(false);
        };
        // Each thread completes its I/Os in order: the oldest one's
        // thread has it next.
        let Some(IoDone { buf, result, .. }) = self.next_done(dev, block)? else {
            return Ok(false);
        };
        let Some(f) = self.inflight.pop_front() else {
            self.free.push(buf);
            return Ok(false);
        };
        let err = self.io_err(
            f.dev,
            "write segments",
            format!(
                "{} ring entries {}+{}",
                self.role,
                f.batch.first_index(),
                f.batch.count()
            ),
            f.offset,
        );
        let r = match (result, f.op) {
            (IoResult::Done, _) => Ok(()),
            (IoResult::Failed(e), _) => Err(err(e)),
            // Stopped between the fence check and the write: check again,
            // and write here if the slot is still ours.
            (IoResult::StaleFence, IoOp::Write(mode)) => self.check_fence().and_then(|()| {
                self.device(f.dev)?
                    .write_at(f.offset, &buf[..f.len], mode)
                    .map_err(err)
            }),
            (IoResult::StaleFence, IoOp::Read) => Ok(()),
            (IoResult::Cancelled, _) => Err(self.io_gone(f.dev)),
            (IoResult::Seal(seq, e), _) => Err(self.seal_err(seq, e)),
        };
        self.free.push(buf);
        r?;
        self.writer.on_segments_written(&mut self.table);
        Ok(true)
    }

    /// The buffer holding `b` as read from the device: the batch read
    /// ahead when it is `b`, else read now.
    fn fetch_batch(&mut self, b: &Batch) -> Result<(AlignedBuf, Option<Vec<Verdict>>), Error> {
        if self
            .early
            .as_ref()
            .is_some_and(|(s, _, _)| b.segments.as_slice() == [*s])
        {
            if let Some((_, buf, v)) = self.early.take() {
                return Ok((buf, Some(vec![v])));
            }
        }
        let peer = self.role.peer();
        let (dev, offset) = self.batch_location(peer, b)?;
        let total = self.batch_bytes(b);
        let err = self.io_err(
            dev,
            "read segments",
            format!("{peer} ring entries {}+{}", b.first_index(), b.count()),
            offset,
        );
        if let Some(f) = self.inflight.front() {
            if f.batch == *b && matches!(f.op, IoOp::Read) && f.len == total {
                let fdev = f.dev;
                if let Some(IoDone {
                    buf,
                    result,
                    verdicts,
                }) = self.next_done(fdev, true)?
                {
                    self.inflight.pop_front();
                    match result {
                        IoResult::Done => return Ok((buf, verdicts)),
                        IoResult::Failed(e) => {
                            self.free.push(buf);
                            return Err(err(e));
                        }
                        IoResult::StaleFence | IoResult::Cancelled | IoResult::Seal(..) => {
                            self.free.push(buf)
                        }
                    }
                }
            }
            self.drain_io();
        }
        let mut buf = self.take_buf()?;
        let r = self
            .device(dev)
            .and_then(|d| d.read_at(offset, &mut buf[..total]).map_err(err));
        if let Err(e) = r {
            self.free.push(buf);
            return Err(e);
        }
        Ok((buf, None))
    }

    fn machine_err(&self, e: MachineError) -> Error {
        match e {
            MachineError::TooManyRetries { seq, retries } => Error::TooManyRetries {
                slot: self.slot,
                seq,
                retries,
            },
            MachineError::Protocol { index, seq, reason } => Error::Corrupt {
                slot: self.slot,
                seq,
                reason: format!("ring entry {index}: {reason}"),
            },
            MachineError::Busy => Error::Busy { slot: self.slot },
            MachineError::Config { reason } => Error::Config { reason },
        }
    }

    /// Something moved: poll hot again, and the stall clock restarts.
    fn progressed(&mut self) {
        self.poller.reset();
        self.stalled_since = None;
    }

    /// Nothing moved: check the peer's liveness and wait a little. After
    /// [`REPUBLISH_AFTER`] without progress (and again every as long),
    /// rewrite this side's whole table: a table write the device lost
    /// (or damaged) would otherwise leave both sides waiting on each other
    /// for ever, both alive.
    fn idle(&mut self) -> Result<(), Error> {
        if let Some(l) = &mut self.liveness {
            l()?;
        }
        let since = *self.stalled_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= REPUBLISH_AFTER {
            self.table.mark_all_dirty();
            self.publish(WriteMode::Normal)?;
            self.stalled_since = Some(Instant::now());
        }
        self.poller.wait();
        Ok(())
    }

    fn io_err(
        &self,
        dev: usize,
        op: &'static str,
        what: String,
        offset: u64,
    ) -> impl FnOnce(fts_blockdev::Error) -> Error {
        let location = format!(
            "{} slot {} {}, byte {offset}",
            self.location(dev),
            self.slot,
            what
        );
        move |source| Error::Io {
            op,
            location,
            source,
        }
    }

    /// Writes the LBs holding dirty chunks.
    fn publish(&mut self, mode: WriteMode) -> Result<(), Error> {
        let chunks = self.table.chunk_count() as usize;
        let mut dirty_lbs = vec![false; self.geo.ptr_table_lbs as usize];
        for run in self.table.dirty_runs() {
            let (a, b) = (run.start as usize, run.end as usize);
            for lb in a / CHUNKS_PER_LB..b.div_ceil(CHUNKS_PER_LB) {
                if let Some(d) = dirty_lbs.get_mut(lb) {
                    *d = true;
                }
            }
        }
        let base = self.geo.table_lb(self.slot, self.role) * LB as u64;
        let mut lb = 0;
        while lb < dirty_lbs.len() {
            if !dirty_lbs[lb] {
                lb += 1;
                continue;
            }
            let start = lb;
            while lb < dirty_lbs.len() && dirty_lbs[lb] {
                lb += 1;
            }
            let buf = &mut self.table_buf[start * LB..lb * LB];
            for (k, rec) in buf.chunks_exact_mut(RECORD_SIZE).enumerate() {
                let c = start * CHUNKS_PER_LB + k;
                if c < chunks {
                    rec.copy_from_slice(
                        &self
                            .table
                            .chunk(c as u32)
                            .encode(Stamp::new(self.layout_id, c as u32)),
                    );
                } else {
                    rec.fill(0);
                }
            }
            let offset = base + (start * LB) as u64;
            let err = self.io_err(
                0,
                "write pointer table",
                format!("{} table", self.role),
                offset,
            );
            self.fence_fresh()?;
            self.dev
                .write_at(offset, &self.table_buf[start * LB..lb * LB], mode)
                .map_err(err)?;
        }
        self.table.mark_clean();
        Ok(())
    }

    /// Reads and decodes the part of the peer's table holding its ring
    /// entries `first`, `first + 1`, … (`count` of them, wrapping) into
    /// `self.peer`; the whole table the first time. Polling reads one LB
    /// instead of the whole table.
    ///
    /// A chunk that fails validation is read again (with liveness checks)
    /// for up to [`CORRUPT_TABLE_PATIENCE`]: a transient read error, or a
    /// damaged table that the peer rewrites when it stalls
    /// ([`Self::idle`]), must not end the connection. Only damage that
    /// lasts is an error.
    fn read_peer(&mut self, first: u32, count: u32) -> Result<(), Error> {
        let lbs = self.geo.ptr_table_lbs as usize;
        let chunks = self.geo.chunks_per_table as usize;
        let n = self.geo.ring_entries;
        let mut want = [self.peer.len() != chunks; MAX_TABLE_LBS];
        let lbs = lbs.min(MAX_TABLE_LBS);
        if self.peer.len() == chunks {
            for k in 0..count.min(n) {
                let c = ((first + k) % n) as usize / fts_layout::ENTRIES_PER_CHUNK;
                if let Some(w) = want.get_mut(c / CHUNKS_PER_LB) {
                    *w = true;
                }
            }
        } else {
            self.peer = vec![PtrChunk::default(); chunks];
        }
        let peer = self.role.peer();
        let base = self.geo.table_lb(self.slot, peer) * LB as u64;
        let mut first_failure: Option<Instant> = None;
        loop {
            let mut bad = None;
            let mut lb = 0;
            while lb < lbs {
                if !want[lb] {
                    lb += 1;
                    continue;
                }
                let start = lb;
                while lb < lbs && want[lb] {
                    lb += 1;
                }
                let offset = base + (start * LB) as u64;
                let r = self
                    .dev
                    .read_at(offset, &mut self.peer_buf[start * LB..lb * LB]);
                // (The error's text is only made when it is needed: this
                // is the polling loop.)
                if let Err(e) = r {
                    return Err(self.io_err(
                        0,
                        "read pointer table",
                        format!("{peer} table"),
                        offset,
                    )(e));
                }
                let cs = start * CHUNKS_PER_LB..(lb * CHUNKS_PER_LB).min(chunks);
                for c in cs {
                    let at = c * RECORD_SIZE;
                    let rec = &self.peer_buf[at..at + RECORD_SIZE];
                    match PtrChunk::decode(rec, Expect::exact(self.layout_id, c as u32)) {
                        Ok(chunk) => self.peer[c] = chunk,
                        Err(source) => {
                            bad = Some((c as u32, source));
                            break;
                        }
                    }
                }
                if bad.is_some() {
                    break;
                }
            }
            let Some((chunk, source)) = bad else {
                return Ok(());
            };
            let since = *first_failure.get_or_insert_with(Instant::now);
            if since.elapsed() >= CORRUPT_TABLE_PATIENCE {
                // Read in full next time.
                self.peer.clear();
                return Err(Error::CorruptTable {
                    slot: self.slot,
                    role: peer,
                    chunk,
                    source,
                });
            }
            if let Some(l) = &mut self.liveness {
                l()?;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Polls for the first segment of the next message by reading the
    /// segment itself rather than the peer's table, which the writer
    /// writes only after it: `Ok(true)` when it was there, intact and
    /// current (header: own CRC, generation, slot, sequence number,
    /// request id, role bit; payload: CRC and, sealed, the tag), and is
    /// now announced in `self.peer` ([`Reader::announce`]) for the reader
    /// machine to take like any other. `Ok(false)`: read the table as
    /// usual; so does every [`TABLE_EVERY`]-th poll, and the one after a
    /// segment that is current but fails its checks (a torn write, or
    /// damage the table path then NAKs).
    fn read_early(&mut self) -> Result<bool, Error> {
        self.polls = self.polls.wrapping_add(1);
        if self.polls % TABLE_EVERY == 0
            || !self.inflight.is_empty()
            || self.early.is_some()
            || self.peer.len() != self.geo.chunks_per_table as usize
        {
            return Ok(false);
        }
        let Some(x) = self.reader.message_start() else {
            return Ok(false);
        };
        let peer = self.role.peer();
        let probe = Segment {
            index: x.index,
            seq: x.seq,
            offset: 0,
            len: 0,
            flags: peer.flag(),
            req_id: x.req_id,
        };
        let (dev, offset) = self.batch_location(
            peer,
            &Batch {
                segments: vec![probe],
            },
        )?;
        let mut buf = self.take_buf()?;
        match self.read_early_into(&mut buf, dev, offset, probe) {
            Ok(Some((seg, v))) if self.reader.announce(&mut self.peer, &seg) => {
                self.early = Some((seg, buf, v));
                Ok(true)
            }
            Ok(_) => {
                self.free.push(buf);
                Ok(false)
            }
            Err(e) => {
                self.free.push(buf);
                Err(e)
            }
        }
    }

    /// [`Self::read_early`]'s read and checks of the segment `probe`
    /// (sequence number, request id, index) at `offset` of device `dev`.
    fn read_early_into(
        &mut self,
        buf: &mut AlignedBuf,
        dev: usize,
        offset: u64,
        probe: Segment,
    ) -> Result<Option<(Segment, Verdict)>, Error> {
        let peer = self.role.peer();
        let what = || format!("{peer} ring entry {}", probe.index);
        let err = self.io_err(dev, "read segments", what(), offset);
        self.device(dev)?
            .read_at(offset, &mut buf[..LB])
            .map_err(err)?;
        let ctx = self.seal_context(peer, &probe);
        let Ok(h) = SegHeader::decode(
            &buf[..SEG_HDR_SIZE],
            Expect::exact(self.layout_id, ctx.segment),
        ) else {
            return Ok(None);
        };
        let flag = peer.flag();
        let cap = self.reader.config().payload_capacity;
        let len = h.len as usize;
        let last = h.flags & FLG_LAST != 0;
        if h.seg_seq != probe.seq
            || h.generation != self.generation
            || h.slot != self.slot
            || h.req_id != probe.req_id
            || h.flags & flag == 0
            || h.flags & !(flag | FLG_LAST) != 0
            || len > cap
            || (!last && len != cap)
        {
            return Ok(None);
        }
        let seg = Segment {
            len: h.len,
            flags: h.flags,
            ..probe
        };
        let need = lbs_for(SEG_HDR_SIZE + len + self.tag_len());
        if need > LB {
            let at = offset + LB as u64;
            let err = self.io_err(dev, "read segments", what(), at);
            self.device(dev)?
                .read_at(at, &mut buf[LB..need])
                .map_err(err)?;
        }
        let ctx = self.seal_context(peer, &seg);
        let v = self.checker().check(buf, 0, &seg, &ctx);
        if !v.ok {
            // Current but not intact: the table decides (and NAKs).
            self.polls = TABLE_EVERY - 1;
            return Ok(None);
        }
        Ok(Some((seg, v)))
    }

    /// Bytes one I/O covers for `b`: every segment but the last is full.
    fn batch_bytes(&self, b: &Batch) -> usize {
        let seg_bytes = self.geo.seg_lbs as usize * LB;
        let last = b.segments.last().map_or(0, |s| s.len as usize);
        (b.segments.len().saturating_sub(1)) * seg_bytes
            + lbs_for(SEG_HDR_SIZE + last + self.tag_len())
    }

    /// What a segment of `owner`'s ring is bound to when sealed.
    fn seal_context(&self, owner: Role, s: &Segment) -> SegmentContext {
        SegmentContext {
            layout_id: self.layout_id,
            slot: self.slot,
            generation: self.generation,
            writer: owner,
            index: s.index,
            segment: self.geo.ring_segment(self.slot, owner, s.index),
            seq: s.seq,
            req_id: s.req_id,
            flags: s.flags,
            len: s.len,
        }
    }

    /// Writes `b` at `offset` of device `dev` from this thread (no write
    /// in flight).
    fn write_batch_here(
        &mut self,
        msg: &mut dyn MessageSource,
        b: &Batch,
        len: u64,
        dev: usize,
        offset: u64,
    ) -> Result<(), Error> {
        let mut buf = self.take_buf()?;
        let r = self.fill_batch(msg, b, len, &mut buf).and_then(|total| {
            let err = self.io_err(
                dev,
                "write segments",
                format!(
                    "{} ring entries {}+{}",
                    self.role,
                    b.first_index(),
                    b.count()
                ),
                offset,
            );
            self.fence_fresh()?;
            self.device(dev)?
                .write_at(offset, &buf[..total], WriteMode::Normal)
                .map_err(err)
        });
        self.free.push(buf);
        r
    }

    /// Reads `b`'s payload from `msg` into `buf`, seals it and adds the
    /// headers; returns the bytes to write.
    fn fill_batch(
        &mut self,
        msg: &mut dyn MessageSource,
        b: &Batch,
        len: u64,
        buf: &mut [u8],
    ) -> Result<usize, Error> {
        let total = self.load_batch(msg, b, len, buf)?;
        let segs = self.write_contexts(b);
        self.finisher()
            .finish(buf, &segs)
            .map_err(|(seq, e)| self.seal_err(seq, e))?;
        Ok(total)
    }

    /// The segments of `b` (ours) with what each is bound to when sealed.
    fn write_contexts(&self, b: &Batch) -> Vec<(Segment, SegmentContext)> {
        b.segments
            .iter()
            .map(|s| (*s, self.seal_context(self.role, s)))
            .collect()
    }

    fn finisher(&self) -> Finisher {
        Finisher {
            layout_id: self.layout_id,
            generation: self.generation,
            slot: self.slot,
            seg_bytes: self.geo.seg_lbs as usize * LB,
            tag: self.tag_len(),
            timestamp: now_ns(),
            sealer: self.sealer.clone(),
        }
    }

    fn seal_err(&self, seq: u64, e: SealError) -> Error {
        match e {
            SealError::Sequence { seq, last } => Error::SealSequence {
                slot: self.slot,
                seq,
                last,
            },
            SealError::Open | SealError::Short | SealError::EqualKeys | SealError::Key => {
                Error::Config {
                    reason: format!("sealing segment {seq}: {e}"),
                }
            }
        }
    }

    /// Reads `b`'s payload from `msg` into `buf` and zeroes the padding
    /// (not the headers and tags, which [`Finisher::finish`] writes);
    /// returns the bytes to write.
    fn load_batch(
        &mut self,
        msg: &mut dyn MessageSource,
        b: &Batch,
        len: u64,
        buf: &mut [u8],
    ) -> Result<usize, Error> {
        let seg_bytes = self.geo.seg_lbs as usize * LB;
        let total = self.batch_bytes(b);
        let tag = self.tag_len();
        for (j, s) in b.segments.iter().enumerate() {
            let base = j * seg_bytes;
            let end = base + lbs_for(SEG_HDR_SIZE + s.len as usize + tag);
            let seg = &mut buf[base..end];
            let (_, rest) = seg.split_at_mut(SEG_HDR_SIZE);
            let (body, pad) = rest.split_at_mut(s.len as usize + tag);
            let payload = &mut body[..s.len as usize];
            let mut filled = 0;
            while filled < payload.len() {
                let off = s.offset + filled as u64;
                match msg.read_at(off, &mut payload[filled..]) {
                    Ok(0) => return Err(Error::SourceShort { offset: off, len }),
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(Error::Source {
                            offset: off,
                            source,
                        })
                    }
                }
            }
            pad.fill(0);
        }
        Ok(total)
    }

    /// Verifies (and opens) the segments of `b` read into `buf`, hands
    /// what passes to `sink` in order and records acks and NAKs.
    fn verify_batch<E>(
        &mut self,
        b: &Batch,
        buf: &mut [u8],
        verdicts: Option<Vec<Verdict>>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), Error>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let peer = self.role.peer();
        let checker = self.checker();
        for (j, s) in b.segments.iter().enumerate() {
            // Checked on the I/O thread when read ahead, else here.
            let Verdict { ok, refusal } = match verdicts.as_ref().and_then(|v| v.get(j)) {
                Some(v) => *v,
                None => {
                    let ctx = self.seal_context(peer, s);
                    checker.check(buf, j, s, &ctx)
                }
            };
            let base = j * checker.seg_bytes + SEG_HDR_SIZE;
            let len = s.len as usize;
            match self.reader.on_segment(&mut self.table, s, ok) {
                SegmentOutcome::Accepted { .. } => {
                    self.seal_failures = 0;
                    let payload = &buf[base..base + len];
                    if !payload.is_empty() {
                        sink(payload).map_err(|e| Error::Sink {
                            source: Box::new(e),
                        })?;
                    }
                }
                SegmentOutcome::Rejected => {
                    if let Some(reason) = refusal {
                        self.seal_failures += 1;
                        if self.seal_failures > self.reader.config().max_retries {
                            // Tell the writer (its NAK), then give up.
                            self.publish(WriteMode::Normal)?;
                            self.reader.on_published();
                            return Err(Error::Unauthenticated {
                                slot: self.slot,
                                seq: s.seq,
                                failures: self.seal_failures,
                                reason,
                            });
                        }
                    }
                    // The rest of the batch is discarded (the writer
                    // rewinds to the rejected segment): not worth opening.
                    break;
                }
                SegmentOutcome::Ignored => {}
            }
        }
        Ok(())
    }
}
