//! Sealed segments (`RingPort::set_seal`) over a real formatted file, each
//! side of a connection in its own thread on its own handle, as two hosts
//! would.
//!
//! What must hold: sealed messages of every awkward size arrive intact in
//! both directions; no plaintext byte reaches the device; a segment
//! damaged on the way, or forged by someone who can write the device but
//! has no key (a bit flipped with the CRC fixed up, a segment replayed from
//! an earlier message, two segments swapped, an old segment copied
//! verbatim) is refused, sent again and never handed to the receiver;
//! retransmissions never seal a sequence number twice; and two sides with
//! different keys (or one sealing, one not) fail with a clear error instead
//! of hanging. The forgeries are also run against an unsealed connection,
//! where they succeed: that is what proves the sealing catches them.

// Test helpers (and the threads) outside #[test] fns may panic too.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fts_blockdev::{BlockDevice, DeviceIdentity, FileDevice, OpenOptions, WriteMode};
use fts_faults::{Fault, FaultDevice, FaultPlan, Faults, Rule};
use fts_layout::{
    format_plan, layout_id_of, Expect, FormatSpec, Geometry, GeometryParams, Role, SegHeader,
    Stamp, LB, SEAL_AES256GCM, SEAL_NONE, SEAL_TAG_SIZE, SEG_HDR_SIZE,
};
use fts_ring::{Error, Liveness, MessageInfo, RingPort, SealKeys};
use uuid::Uuid;

const GEN: u64 = 5;

const SLOT: u32 = 2;
const KEY_I2C: [u8; 32] = [0x11; 32];
const KEY_C2I: [u8; 32] = [0x22; 32];

struct Rig {
    dir: tempfile::TempDir,
    /// Unwrapped: formats, and opens the handles the wrappers wrap.
    dev: FileDevice,
    geo: Geometry,
    layout_id: u64,
}

fn rig(block_size: u32) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let bytes = 4 << 20;
    let mut params = GeometryParams::new(bytes);
    params.block_size = block_size;
    params.segment_bytes = 8192;
    params.max_connections = 2;
    params.ring_entries = 4;
    params.batch = 2;
    let geometry = Geometry::compute(&params).unwrap();
    let spec = FormatSpec {
        layout_uuid: Uuid::from_u128(0x5ea1),
        device_uuids: vec![Uuid::from_u128(0x5678)],
        time_ns: 0,
        paths: vec!["test".into()],
        hw_ids: vec![],
        lease_timeout_ms: fts_layout::DEFAULT_LEASE_TIMEOUT_MS,
        lock_timeout_ms: fts_layout::DEFAULT_LOCK_TIMEOUT_MS,
        io_timeout_ms: fts_layout::DEFAULT_IO_TIMEOUT_MS,
        heartbeat_ms: fts_layout::DEFAULT_HEARTBEAT_MS,
        geometry: geometry.clone(),
    };
    spec.validate().unwrap();
    let opts = OpenOptions {
        create_size: Some(bytes),
        block_size: Some(block_size),
        ..OpenOptions::default()
    };
    let mut dev = FileDevice::open(dir.path().join("disk.img"), &opts).unwrap();
    for w in format_plan(&spec) {
        dev.write_at(w.lb * LB as u64, &w.data, WriteMode::Normal)
            .unwrap();
    }
    dev.flush().unwrap();
    Rig {
        dir,
        dev,
        geo: geometry,
        layout_id: layout_id_of(&spec.layout_uuid),
    }
}

impl Rig {
    fn plain(&self) -> Box<dyn BlockDevice> {
        self.dev.reopen().unwrap()
    }

    fn faulty(&self, plan: FaultPlan) -> (Box<dyn BlockDevice>, Faults) {
        let dev = FaultDevice::new(self.plain(), plan).unwrap();
        let faults = dev.faults().clone();
        (Box::new(dev), faults)
    }

    /// Device bytes of the data segments `role` writes.
    fn segments(&self, role: Role) -> Range<u64> {
        let (start, _) = self.segment(role, 0);
        let seg_bytes = self.seg_bytes() as u64;
        start..start + seg_bytes * u64::from(self.geo.ring_entries)
    }

    /// Byte offset and global number of ring entry `index` of `role`.
    fn segment(&self, role: Role, index: u32) -> (u64, u32) {
        let g = self.geo.ring_segment(SLOT, role, index);
        (self.geo.segment_location(g).unwrap().1, g)
    }

    fn seg_bytes(&self) -> usize {
        self.geo.seg_lbs as usize * LB
    }

    /// Payload bytes of a sealed segment.
    fn sealed_capacity(&self) -> usize {
        self.geo.payload_capacity() - SEAL_TAG_SIZE
    }

    /// Every byte of the device file, as another host would read it.
    fn image(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("disk.img")).unwrap()
    }
}

/// How a side seals: `None` unsealed.
#[derive(Clone, Copy)]
struct Keys(Option<([u8; 32], [u8; 32])>);

impl Keys {
    fn initiator() -> Keys {
        Keys(Some((KEY_I2C, KEY_C2I)))
    }
    fn connector() -> Keys {
        Keys(Some((KEY_C2I, KEY_I2C)))
    }
    fn none() -> Keys {
        Keys(None)
    }
    fn apply(self, port: &mut RingPort<'_>) {
        if let Some((send, recv)) = self.0 {
            port.set_seal(SealKeys { send, recv }).unwrap();
        }
    }
}

/// Bytes that repeat nowhere, so that a stale or shifted block never
/// looks right by accident.
fn message(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Ends a wait after a generous deadline, or (when `other` is given) when
/// the other side has failed, as the session's dead-peer check would.
fn liveness(other: Option<Arc<AtomicBool>>) -> Liveness<'static> {
    let end = Instant::now() + Duration::from_secs(60);
    Box::new(move || {
        if other.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
            Err(Error::PeerGone {
                slot: SLOT,
                reason: "the other side failed".into(),
            })
        } else if Instant::now() > end {
            Err(Error::PeerGone {
                slot: SLOT,
                reason: "test deadline".into(),
            })
        } else {
            Ok(())
        }
    })
}

struct Run {
    sent: Result<(), Error>,
    /// Segments the sender wrote, retransmissions included.
    written: u64,
    /// Payload bytes per segment, as the sender computed it.
    capacity: usize,
    received: Vec<Result<MessageInfo, Error>>,
    /// Every byte the receiver's sink got, in order.
    got: Vec<u8>,
}

struct Sides {
    tx: Box<dyn BlockDevice>,
    rx: Box<dyn BlockDevice>,
    tx_keys: Keys,
    rx_keys: Keys,
    /// Whether each side gives up when the other has failed (a test that
    /// wants both sides' own errors sets `false`).
    watch_other: bool,
}

impl Sides {
    fn sealed(rig: &Rig) -> Sides {
        Sides::with(rig.plain(), rig.plain(), Keys::initiator())
    }

    /// Both sides sealed when `keys` is the initiator's, else both plain.
    fn with(tx: Box<dyn BlockDevice>, rx: Box<dyn BlockDevice>, keys: Keys) -> Sides {
        let rx_keys = if keys.0.is_some() {
            Keys::connector()
        } else {
            Keys::none()
        };
        Sides {
            tx,
            rx,
            tx_keys: keys,
            rx_keys,
            watch_other: true,
        }
    }
}

/// The initiator sends `msgs` to the connector of slot [`SLOT`].
fn run(rig: &Rig, sides: Sides, msgs: &[Vec<u8>]) -> Run {
    let gen = common::fresh_gen(GEN);
    let Sides {
        mut tx,
        mut rx,
        tx_keys,
        rx_keys,
        watch_other,
    } = sides;
    let tx_failed = Arc::new(AtomicBool::new(false));
    let rx_failed = Arc::new(AtomicBool::new(false));
    let count = msgs.len();
    let (geo, layout_id) = (rig.geo.clone(), rig.layout_id);
    let rx_flag = Arc::clone(&rx_failed);
    let tx_watch = watch_other.then(|| Arc::clone(&tx_failed));
    let receiver = std::thread::spawn(move || {
        let mut port =
            RingPort::new(rx.as_mut(), geo, SLOT, Role::Connector, gen, layout_id).unwrap();
        rx_keys.apply(&mut port);
        port.set_liveness(liveness(tx_watch));
        let mut got = Vec::new();
        let mut received = Vec::new();
        if let Err(e) = port.init_table() {
            rx_flag.store(true, Ordering::SeqCst);
            return (vec![Err(e)], got);
        }
        for _ in 0..count {
            let r = port.recv(&mut |b: &[u8]| {
                got.extend_from_slice(b);
                Ok::<(), std::io::Error>(())
            });
            let failed = r.is_err();
            received.push(r);
            if failed {
                rx_flag.store(true, Ordering::SeqCst);
                break;
            }
        }
        (received, got)
    });
    let mut port = RingPort::new(
        tx.as_mut(),
        rig.geo.clone(),
        SLOT,
        Role::Initiator,
        gen,
        rig.layout_id,
    )
    .unwrap();
    tx_keys.apply(&mut port);
    port.set_liveness(liveness(watch_other.then(|| Arc::clone(&rx_failed))));
    let capacity = port.payload_capacity();
    let mut sent = port.init_table();
    for m in msgs {
        if sent.is_err() {
            break;
        }
        sent = port.send(&mut m.as_slice(), m.len() as u64);
    }
    if sent.is_err() {
        tx_failed.store(true, Ordering::SeqCst);
    }
    let written = port.writer().next_seq() - 1;
    drop(port);
    let (received, got) = receiver.join().unwrap();
    Run {
        sent,
        written,
        capacity,
        received,
        got,
    }
}

/// Asserts that every message arrived intact (the sink got exactly the
/// messages' bytes, nothing else), and returns how many segments were sent
/// again.
fn assert_delivered(r: &Run, msgs: &[Vec<u8>], what: &str) -> u64 {
    assert!(r.sent.is_ok(), "{what}: send failed: {:?}", r.sent);
    assert_eq!(r.received.len(), msgs.len(), "{what}");
    for (m, got) in msgs.iter().zip(&r.received) {
        let info = got
            .as_ref()
            .unwrap_or_else(|e| panic!("{what}: recv failed: {e}"));
        assert_eq!(info.len, m.len() as u64, "{what}");
    }
    let all: Vec<u8> = msgs.concat();
    assert_eq!(r.got.len(), all.len(), "{what}: the sink got other bytes");
    assert!(
        r.got == all,
        "{what}: the received bytes differ from the sent ones"
    );
    let expected: u64 = msgs
        .iter()
        .map(|m| m.len().div_ceil(r.capacity).max(1) as u64)
        .sum();
    assert!(r.written >= expected);
    r.written - expected
}

const MARKER: &[u8] = b"<<FTS-SECRET-MARKER-7c1e55d0>>";

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Round trips

/// Both directions, sealed: every message is echoed back.
fn sealed_echo(block_size: u32) {
    let rig = rig(block_size);
    let p = rig.sealed_capacity();
    let n = rig.geo.ring_entries as usize;
    let sizes = [
        0,
        1,
        p - 1,
        p,
        p + 1,
        2 * p,
        p + SEAL_TAG_SIZE,
        n * p + 17,
        3 * n * p + 5,
        0,
        100,
    ];
    // Last, text with a marker, echoed too: what the connector decrypted
    // into its I/O buffer must not leak into what it writes back.
    let mut msgs: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(k, &len)| message(len, k as u64))
        .collect();
    msgs.push(MARKER.repeat(3 * n * p / MARKER.len() + 1));
    let count = msgs.len();
    let mut other = rig.plain();
    let (geo, layout_id) = (rig.geo.clone(), rig.layout_id);
    let connector = std::thread::spawn(move || {
        let mut port =
            RingPort::new(other.as_mut(), geo, SLOT, Role::Connector, GEN, layout_id).unwrap();
        Keys::connector().apply(&mut port);
        port.set_liveness(liveness(None));
        port.init_table().unwrap();
        for k in 0..count {
            let mut msg = Vec::new();
            let info = port
                .recv(&mut |b: &[u8]| {
                    msg.extend_from_slice(b);
                    Ok::<(), std::io::Error>(())
                })
                .unwrap();
            assert_eq!(info.len as usize, msg.len());
            assert_eq!(usize::from(info.req_id), k % 16);
            port.send(&mut msg.as_slice(), msg.len() as u64).unwrap();
        }
    });
    let mut dev = rig.plain();
    let mut port = RingPort::new(
        dev.as_mut(),
        rig.geo.clone(),
        SLOT,
        Role::Initiator,
        GEN,
        rig.layout_id,
    )
    .unwrap();
    Keys::initiator().apply(&mut port);
    assert!(port.is_sealed());
    assert_eq!(port.payload_capacity(), p);
    port.set_liveness(liveness(None));
    port.init_table().unwrap();
    for (k, msg) in msgs.iter().enumerate() {
        let len = msg.len();
        port.send(&mut msg.as_slice(), len as u64).unwrap();
        let mut back = Vec::new();
        let info = port
            .recv(&mut |b: &[u8]| {
                back.extend_from_slice(b);
                Ok::<(), std::io::Error>(())
            })
            .unwrap();
        assert_eq!(info.len as usize, len);
        assert_eq!(
            info.segments,
            len.div_ceil(p).max(1) as u64,
            "message {k}: segments of {p} payload bytes"
        );
        assert!(back == *msg, "message {k} of {len} bytes differs");
    }
    // A full segment is exactly header + payload + tag: every segment
    // holds a tag where an unsealed one would hold payload.
    assert_eq!(SEG_HDR_SIZE + p + SEAL_TAG_SIZE, rig.seg_bytes());
    drop(port);
    connector.join().unwrap();

    // What is on the device says it is sealed, and holds no plaintext.
    let img = rig.image();
    assert_eq!(find(&img, MARKER), None, "the marker is on the device");
    for role in Role::BOTH {
        for i in 0..rig.geo.ring_entries {
            let (off, g) = rig.segment(role, i);
            let off = off as usize;
            let h = SegHeader::decode(
                &img[off..off + SEG_HDR_SIZE],
                Expect::exact(rig.layout_id, g),
            )
            .unwrap();
            assert_eq!(h.seal, SEAL_AES256GCM, "{role} entry {i}");
            let body = &img[off + SEG_HDR_SIZE..off + SEG_HDR_SIZE + h.len as usize + 16];
            assert_eq!(h.payload_crc, crc32c::crc32c(body), "CRC covers the tag");
        }
    }
}

#[test]
fn sealed_echo_of_awkward_sizes_512() {
    sealed_echo(512);
}

#[test]
fn sealed_echo_of_awkward_sizes_4096() {
    sealed_echo(4096);
}

#[test]
fn no_plaintext_reaches_the_device() {
    for sealed in [false, true] {
        let rig = rig(512);
        // Many ring wraps of marker-laden text, then a short tail
        // message, both ways through the ring (the reply too).
        let mut big = Vec::new();
        let mut k = 0u64;
        while big.len() < 13 * rig.geo.payload_capacity() {
            big.extend_from_slice(MARKER);
            big.extend_from_slice(format!(" line {k} of the secret file\n").as_bytes());
            k += 1;
        }
        let small = [MARKER, b" alone".as_slice()].concat();
        let keys = if sealed {
            Keys::initiator()
        } else {
            Keys::none()
        };
        let msgs = [big, small];
        let r = run(&rig, Sides::with(rig.plain(), rig.plain(), keys), &msgs);
        assert_eq!(assert_delivered(&r, &msgs, "marker"), 0);
        let img = rig.image();
        let at = find(&img, MARKER);
        if sealed {
            assert_eq!(at, None, "the marker is on the device at byte {at:?}");
            // Nor any 12-byte piece of it.
            for piece in MARKER.windows(12) {
                assert_eq!(
                    find(&img, piece),
                    None,
                    "{:?}",
                    String::from_utf8_lossy(piece)
                );
            }
        } else {
            // The scan finds plaintext where there is some.
            assert!(at.is_some(), "unsealed: the scan should find the marker");
        }
    }
}

// ---------------------------------------------------------------------------
// Damage on the way

#[test]
fn bits_flipped_in_sealed_segments_are_resent_never_published() {
    let cases = [
        ("write", Rule::new(Fault::Flip { bits: 1 }).writes()),
        ("write", Rule::new(Fault::Flip { bits: 9 }).writes()),
        ("read", Rule::new(Fault::Flip { bits: 1 }).reads()),
    ];
    for (k, (op, rule)) in cases.into_iter().enumerate() {
        // A fresh device per case: a connection on the same slot with the
        // same generation would take the last one's acks for its own (a
        // real claim always bumps the generation).
        let rig = rig(512);
        let segs = rig.segments(Role::Initiator);
        let plan = FaultPlan::new(k as u64).rule(rule.bytes(segs.clone()).nth(3));
        let (dev, faults) = rig.faulty(plan);
        let msgs = [message(9 * rig.sealed_capacity() + 3, k as u64)];
        let sides = if op == "write" {
            Sides::with(dev, rig.plain(), Keys::initiator())
        } else {
            Sides::with(rig.plain(), dev, Keys::initiator())
        };
        let r = run(&rig, sides, &msgs);
        let what = format!("flip on {op} ({k})");
        let resent = assert_delivered(&r, &msgs, &what);
        assert_eq!(faults.fired(0), 1, "{what}: the fault never fired");
        // A damaged one-LB poll of a message's first segment (before the
        // table announces it) is read again, not NAKed.
        let polls_only = op == "read" && faults.log().iter().all(|i| i.len <= 4096);
        assert!(resent >= 1 || polls_only, "{what}: nothing was sent again");
    }
}

// ---------------------------------------------------------------------------
// Forgeries: someone who can write the device but has no key

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Flip a bit of segment `seq`'s payload and fix up its CRC.
    FlipFixCrc(u64),
    /// Put the body of an earlier segment at the same ring index and of
    /// the same length into segment `seq`, with `seq`'s header (CRC fixed).
    ReplayOlder(u64),
    /// Swap the bodies of segments `seq` and `seq + 1` (one write), each
    /// under its own header (CRCs fixed).
    SwapWithNext(u64),
    /// Write an earlier segment at the same ring index, header and all,
    /// instead of segment `seq`.
    OldVerbatim(u64),
}

#[derive(Clone)]
struct Old {
    index: u32,
    seq: u64,
    len: u32,
    bytes: Vec<u8>,
}

/// The writer's handle with an attacker between it and the device. It
/// records what the honest writer wrote and, once, forges one segment.
struct Forger {
    inner: Box<dyn BlockDevice>,
    layout_id: u64,
    /// Byte offset of each ring entry of the writer: (index, g).
    entries: HashMap<u64, (u32, u32)>,
    seg_bytes: usize,
    attack: Attack,
    history: Arc<Mutex<Vec<Old>>>,
    fired: Arc<AtomicU32>,
}

struct Parsed {
    pos: usize,
    index: u32,
    g: u32,
    hdr: SegHeader,
    body: Range<usize>,
}

impl Forger {
    fn new(rig: &Rig, attack: Attack) -> (Forger, Arc<AtomicU32>) {
        let entries = (0..rig.geo.ring_entries)
            .map(|i| {
                let (off, g) = rig.segment(Role::Initiator, i);
                (off, (i, g))
            })
            .collect();
        let fired = Arc::new(AtomicU32::new(0));
        let f = Forger {
            inner: rig.plain(),
            layout_id: rig.layout_id,
            entries,
            seg_bytes: rig.seg_bytes(),
            attack,
            history: Arc::default(),
            fired: Arc::clone(&fired),
        };
        (f, fired)
    }

    fn parse(&self, offset: u64, data: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos + SEG_HDR_SIZE <= data.len() {
            if let Some(&(index, g)) = self.entries.get(&(offset + pos as u64)) {
                let expect = Expect::exact(self.layout_id, g);
                if let Ok(hdr) = SegHeader::decode(&data[pos..pos + SEG_HDR_SIZE], expect) {
                    let tag = if hdr.seal == SEAL_NONE {
                        0
                    } else {
                        SEAL_TAG_SIZE
                    };
                    let start = pos + SEG_HDR_SIZE;
                    let end = start + hdr.len as usize + tag;
                    if end <= data.len() {
                        out.push(Parsed {
                            pos,
                            index,
                            g,
                            hdr,
                            body: start..end,
                        });
                    }
                }
            }
            pos += self.seg_bytes;
        }
        out
    }

    /// Rewrites the header of `p` for the body now in `data` (what an
    /// attacker can do: nothing in the header is secret).
    fn fix_crc(&self, data: &mut [u8], p: &Parsed) {
        let mut h = p.hdr.clone();
        h.payload_crc = crc32c::crc32c(&data[p.body.clone()]);
        data[p.pos..p.pos + SEG_HDR_SIZE]
            .copy_from_slice(&h.encode(Stamp::new(self.layout_id, p.g)));
    }

    fn older(&self, p: &Parsed) -> Option<Old> {
        self.history
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|o| o.index == p.index && o.len == p.hdr.len && o.seq < p.hdr.seg_seq)
            .cloned()
    }

    fn forge(&self, data: &mut [u8], parsed: &[Parsed]) -> bool {
        let by_seq = |seq: u64| parsed.iter().find(|p| p.hdr.seg_seq == seq);
        match self.attack {
            Attack::FlipFixCrc(seq) => {
                let Some(p) = by_seq(seq) else { return false };
                let at = p.body.start + p.hdr.len as usize / 2;
                data[at] ^= 0x10;
                self.fix_crc(data, p);
            }
            Attack::ReplayOlder(seq) => {
                let Some(p) = by_seq(seq) else { return false };
                let Some(old) = self.older(p) else {
                    return false;
                };
                data[p.body.clone()].copy_from_slice(&old.bytes[SEG_HDR_SIZE..]);
                self.fix_crc(data, p);
            }
            Attack::SwapWithNext(seq) => {
                let (Some(a), Some(b)) = (by_seq(seq), by_seq(seq + 1)) else {
                    return false;
                };
                assert_eq!(a.hdr.len, b.hdr.len, "swap needs equal lengths");
                let body_a = data[a.body.clone()].to_vec();
                let body_b = data[b.body.clone()].to_vec();
                data[a.body.clone()].copy_from_slice(&body_b);
                data[b.body.clone()].copy_from_slice(&body_a);
                self.fix_crc(data, a);
                self.fix_crc(data, b);
            }
            Attack::OldVerbatim(seq) => {
                let Some(p) = by_seq(seq) else { return false };
                let Some(old) = self.older(p) else {
                    return false;
                };
                data[p.pos..p.pos + old.bytes.len()].copy_from_slice(&old.bytes);
            }
        }
        true
    }
}

impl std::fmt::Debug for Forger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forger")
            .field("attack", &self.attack)
            .finish_non_exhaustive()
    }
}

impl BlockDevice for Forger {
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn identity(&self) -> &DeviceIdentity {
        self.inner.identity()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), fts_blockdev::Error> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(
        &mut self,
        offset: u64,
        buf: &[u8],
        mode: WriteMode,
    ) -> Result<(), fts_blockdev::Error> {
        let parsed = self.parse(offset, buf);
        if parsed.is_empty() {
            return self.inner.write_at(offset, buf, mode);
        }
        let mut data = buf.to_vec();
        if self.fired.load(Ordering::SeqCst) == 0 && self.forge(&mut data, &parsed) {
            self.fired.fetch_add(1, Ordering::SeqCst);
        }
        for p in &parsed {
            self.history.lock().unwrap().push(Old {
                index: p.index,
                seq: p.hdr.seg_seq,
                len: p.hdr.len,
                bytes: buf[p.pos..p.body.end].to_vec(),
            });
        }
        self.inner.write_at(offset, &data, mode)
    }
    fn flush(&mut self) -> Result<(), fts_blockdev::Error> {
        self.inner.flush()
    }
    /// Another handle that forges the same way, sharing what was written
    /// (the ring driver writes segments through its own handle).
    fn reopen(&self) -> Result<Box<dyn BlockDevice>, fts_blockdev::Error> {
        Ok(Box::new(Forger {
            inner: self.inner.reopen()?,
            layout_id: self.layout_id,
            entries: self.entries.clone(),
            seg_bytes: self.seg_bytes,
            attack: self.attack,
            history: self.history.clone(),
            fired: self.fired.clone(),
        }))
    }
    fn location(&self) -> &str {
        self.inner.location()
    }
}

/// Two messages of 8 full segments each (two wraps of the 4-entry ring,
/// batches of 2): without faults, message 1 is seqs 1..=8 and message 2
/// seqs 9..=16, and ring index `i` holds seqs `i+1, i+5, i+9, i+13`.
fn two_messages(capacity: usize) -> [Vec<u8>; 2] {
    [message(8 * capacity, 71), message(8 * capacity, 72)]
}

#[test]
fn forged_segments_are_refused_resent_and_never_published() {
    let attacks = [
        Attack::FlipFixCrc(6),
        Attack::ReplayOlder(10),
        Attack::ReplayOlder(15),
        Attack::SwapWithNext(3),
        Attack::SwapWithNext(11),
        Attack::OldVerbatim(13),
    ];
    for attack in attacks {
        let rig = rig(512);
        let msgs = two_messages(rig.sealed_capacity());
        let (forger, fired) = Forger::new(&rig, attack);
        let r = run(
            &rig,
            Sides::with(Box::new(forger), rig.plain(), Keys::initiator()),
            &msgs,
        );
        let what = format!("sealed, {attack:?}");
        let resent = assert_delivered(&r, &msgs, &what);
        assert_eq!(fired.load(Ordering::SeqCst), 1, "{what}: never forged");
        assert!(resent >= 1, "{what}: the forgery was not refused");
    }
}

/// The control for the test above: on an unsealed connection the same
/// forgeries (except the verbatim copy, whose old sequence number the
/// header check catches) are accepted and wrong bytes are delivered. So
/// what refuses them above is the sealing.
#[test]
fn the_same_forgeries_fool_an_unsealed_connection() {
    for attack in [
        Attack::FlipFixCrc(6),
        Attack::ReplayOlder(10),
        Attack::SwapWithNext(11),
    ] {
        let rig = rig(512);
        let msgs = two_messages(rig.geo.payload_capacity());
        let (forger, fired) = Forger::new(&rig, attack);
        let r = run(
            &rig,
            Sides::with(Box::new(forger), rig.plain(), Keys::none()),
            &msgs,
        );
        assert_eq!(fired.load(Ordering::SeqCst), 1, "{attack:?}: never forged");
        assert!(r.sent.is_ok(), "{attack:?}: {:?}", r.sent);
        assert_eq!(r.written, 16, "{attack:?}: nothing is sent again");
        assert_eq!(r.got.len(), msgs.concat().len());
        assert!(
            r.got != msgs.concat(),
            "{attack:?}: unsealed, the forgery should have gone through"
        );
    }
}

// ---------------------------------------------------------------------------
// Nonces

/// Records the sequence number of every segment header the writer writes.
struct SeqLog {
    inner: Box<dyn BlockDevice>,
    layout_id: u64,
    entries: HashMap<u64, u32>,
    seg_bytes: usize,
    seqs: Arc<Mutex<Vec<u64>>>,
}

impl std::fmt::Debug for SeqLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqLog").finish_non_exhaustive()
    }
}

impl BlockDevice for SeqLog {
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn identity(&self) -> &DeviceIdentity {
        self.inner.identity()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), fts_blockdev::Error> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(
        &mut self,
        offset: u64,
        buf: &[u8],
        mode: WriteMode,
    ) -> Result<(), fts_blockdev::Error> {
        let mut pos = 0;
        while pos + SEG_HDR_SIZE <= buf.len() {
            if let Some(&g) = self.entries.get(&(offset + pos as u64)) {
                let h = SegHeader::decode(
                    &buf[pos..pos + SEG_HDR_SIZE],
                    Expect::exact(self.layout_id, g),
                )
                .unwrap();
                assert_eq!(h.seal, SEAL_AES256GCM);
                self.seqs.lock().unwrap().push(h.seg_seq);
            }
            pos += self.seg_bytes;
        }
        self.inner.write_at(offset, buf, mode)
    }
    fn flush(&mut self) -> Result<(), fts_blockdev::Error> {
        self.inner.flush()
    }
    fn reopen(&self) -> Result<Box<dyn BlockDevice>, fts_blockdev::Error> {
        Ok(Box::new(SeqLog {
            inner: self.inner.reopen()?,
            layout_id: self.layout_id,
            entries: self.entries.clone(),
            seg_bytes: self.seg_bytes,
            seqs: self.seqs.clone(),
        }))
    }
    fn location(&self) -> &str {
        self.inner.location()
    }
}

/// Under many NAKs (bits flipped and writes lost on the way to the
/// device), every segment the writer seals has a sequence number never
/// sealed before: a nonce is never used twice under the writer's key.
#[test]
fn retransmissions_never_seal_a_sequence_number_twice() {
    let rig = rig(512);
    let segs = rig.segments(Role::Initiator);
    let plan = FaultPlan::new(11)
        .rule(
            Rule::new(Fault::Flip { bits: 1 })
                .writes()
                .bytes(segs.clone())
                .probability(0.25),
        )
        .rule(Rule::new(Fault::Drop).writes().bytes(segs).probability(0.1));
    let (faulty, faults) = rig.faulty(plan);
    let entries = (0..rig.geo.ring_entries)
        .map(|i| {
            let (off, g) = rig.segment(Role::Initiator, i);
            (off, g)
        })
        .collect();
    let seqs = Arc::new(Mutex::new(Vec::new()));
    let log = SeqLog {
        inner: faulty,
        layout_id: rig.layout_id,
        entries,
        seg_bytes: rig.seg_bytes(),
        seqs: Arc::clone(&seqs),
    };
    let msgs: Vec<Vec<u8>> = (0..6)
        .map(|k| message((k * 3 + 2) * rig.sealed_capacity() + k, k as u64))
        .collect();
    let r = run(
        &rig,
        Sides::with(Box::new(log), rig.plain(), Keys::initiator()),
        &msgs,
    );
    let resent = assert_delivered(&r, &msgs, "flips and drops");
    assert!(
        faults.fired(0) + faults.fired(1) >= 3 && resent >= 3,
        "too few faults to exercise retransmission: {} flips, {} drops, {resent} resent",
        faults.fired(0),
        faults.fired(1)
    );
    let seqs = seqs.lock().unwrap().clone();
    assert_eq!(
        seqs.len() as u64,
        r.written,
        "every sealed segment was logged"
    );
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        seqs.len(),
        "a sequence number was sealed twice"
    );
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers are sealed in increasing order: {seqs:?}"
    );
}

// ---------------------------------------------------------------------------
// Disagreement

#[test]
fn mismatched_keys_fail_clearly_on_both_sides() {
    let rig = rig(512);
    let msgs = [message(3 * rig.sealed_capacity() + 1, 1)];
    let mut sides = Sides::sealed(&rig);
    sides.rx_keys = Keys(Some((KEY_C2I, [0x33; 32])));
    sides.watch_other = false;
    let started = Instant::now();
    let r = run(&rig, sides, &msgs);
    assert!(
        matches!(r.sent, Err(Error::TooManyRetries { slot: SLOT, .. })),
        "writer: {:?}",
        r.sent
    );
    let rx = r.received.first().unwrap();
    match rx {
        Err(e @ Error::Unauthenticated { slot: SLOT, .. }) => {
            assert!(
                e.to_string()
                    .contains("sealed segment failed authentication: wrong key or forged segment"),
                "{e}"
            );
        }
        other => panic!("reader: {other:?}"),
    }
    assert!(r.got.is_empty(), "nothing reaches the sink");
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "ended by the test deadline, not by the error"
    );
}

#[test]
fn one_side_sealed_the_other_not_fails_clearly() {
    for (tx_keys, rx_keys, reason) in [
        (
            Keys::initiator(),
            Keys::none(),
            "segment is sealed but the connection is not",
        ),
        (
            Keys::none(),
            Keys::connector(),
            "segment is not sealed but the connection is",
        ),
    ] {
        let rig = rig(512);
        // One segment either way (fits both capacities).
        let msgs = [message(100, 2)];
        let sides = Sides {
            tx: rig.plain(),
            rx: rig.plain(),
            tx_keys,
            rx_keys,
            watch_other: false,
        };
        let r = run(&rig, sides, &msgs);
        assert!(
            matches!(r.sent, Err(Error::TooManyRetries { .. })),
            "writer: {:?}",
            r.sent
        );
        match r.received.first().unwrap() {
            Err(e @ Error::Unauthenticated { .. }) => {
                assert!(e.to_string().contains(reason), "{e}");
            }
            other => panic!("reader: {other:?}"),
        }
        assert!(r.got.is_empty());
    }
}

#[test]
fn set_seal_is_checked() {
    let rig = rig(512);
    let mut dev = rig.plain();
    let mut port = RingPort::new(
        dev.as_mut(),
        rig.geo.clone(),
        SLOT,
        Role::Initiator,
        GEN,
        rig.layout_id,
    )
    .unwrap();
    assert!(!port.is_sealed());
    assert_eq!(port.payload_capacity(), rig.geo.payload_capacity());
    let same = SealKeys {
        send: [7; 32],
        recv: [7; 32],
    };
    let err = port.set_seal(same).unwrap_err();
    assert!(
        matches!(err, Error::Config { .. }) && err.to_string().contains("equal"),
        "{err}"
    );
    assert!(!port.is_sealed());
    let keys = SealKeys {
        send: [7; 32],
        recv: [8; 32],
    };
    assert!(!format!("{keys:?}").contains('7'), "Debug shows no key");
    port.init_table().unwrap();
    port.set_seal(keys).unwrap();
    assert!(port.is_sealed());
    assert_eq!(port.payload_capacity(), rig.sealed_capacity());
    // Once a message went, the sealing cannot change.
    port.set_liveness(Box::new(|| {
        Err(Error::PeerGone {
            slot: SLOT,
            reason: "nobody there".into(),
        })
    }));
    let _ = port.send(&mut &b"x"[..], 1);
    let err = port
        .set_seal(SealKeys {
            send: [1; 32],
            recv: [2; 32],
        })
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}
