//! The driver with several I/Os in flight: a ring of 12 entries in batches
//! of 2, so that the writer has up to three batches queued on its I/O
//! thread while it reads and seals the next, and the reader reads a batch
//! ahead while its sink consumes one. Each side runs in its own thread on
//! its own handle (which the port reopens for its I/O thread), as two hosts
//! would.
//!
//! What must hold: every size arrives intact, sealed or not, across
//! wrap-arounds and back-to-back messages, and without faults each segment
//! is written once (a published entry whose data was not yet on the device
//! would be refused and sent again); bit flips and lost writes with
//! batches in flight are refused and retransmitted and the bytes received
//! are exactly those sent; an I/O error on the I/O thread, a fence and a
//! liveness error end the transfer with that error, never a hang.

// Test helpers (and the threads) outside #[test] fns may panic too.
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fts_blockdev::{BlockDevice, DeviceIdentity, FileDevice, OpenOptions, WriteMode};
use fts_faults::{Fault, FaultDevice, FaultPlan, Faults, Rule};
use fts_layout::{format_plan, layout_id_of, FormatSpec, Geometry, GeometryParams, Role, LB};
use fts_ring::{Error, Liveness, MessageInfo, RingPort, SealKeys};
use uuid::Uuid;

const GEN: u64 = 5;

const SLOT: u32 = 1;
const RING: u32 = 12;
const BATCH: u32 = 2;

struct Rig {
    _dir: tempfile::TempDir,
    dev: FileDevice,
    geo: Geometry,
    layout_id: u64,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let bytes = 8 << 20;
    let mut params = GeometryParams::new(bytes);
    params.block_size = 512;
    params.segment_bytes = 8192;
    params.max_connections = 2;
    params.ring_entries = RING;
    params.batch = BATCH;
    let geometry = Geometry::compute(&params).unwrap();
    let spec = FormatSpec {
        layout_uuid: Uuid::from_u128(0x919e),
        device_uuids: vec![Uuid::from_u128(0x1234)],
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
        block_size: Some(512),
        ..OpenOptions::default()
    };
    let mut dev = FileDevice::open(dir.path().join("disk.img"), &opts).unwrap();
    for w in format_plan(&spec) {
        dev.write_at(w.lb * LB as u64, &w.data, WriteMode::Normal)
            .unwrap();
    }
    dev.flush().unwrap();
    Rig {
        _dir: dir,
        dev,
        geo: geometry,
        layout_id: layout_id_of(&spec.layout_uuid),
    }
}

impl Rig {
    fn plain(&self) -> Box<dyn BlockDevice> {
        self.dev.reopen().unwrap()
    }

    fn host(&self, plan: FaultPlan) -> (Box<dyn BlockDevice>, Faults) {
        let dev = FaultDevice::new(self.dev.reopen().unwrap(), plan).unwrap();
        let faults = dev.faults().clone();
        (Box::new(dev), faults)
    }

    /// Device bytes of the data segments `role` writes.
    fn segments(&self, role: Role) -> Range<u64> {
        let offsets: Vec<u64> = (0..self.geo.ring_entries)
            .map(|i| {
                let g = self.geo.ring_segment(SLOT, role, i);
                self.geo.segment_location(g).unwrap().1
            })
            .collect();
        let seg_bytes = u64::from(self.geo.seg_lbs) * LB as u64;
        *offsets.iter().min().unwrap()..*offsets.iter().max().unwrap() + seg_bytes
    }

    /// Device bytes of `role`'s pointer table.
    fn table(&self, role: Role) -> Range<u64> {
        let start = self.geo.table_lb(SLOT, role) * LB as u64;
        start..start + u64::from(self.geo.ptr_table_lbs) * LB as u64
    }
}

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

/// Mirrored keys for the two sides, or none.
#[derive(Clone, Copy)]
struct Seal(Option<([u8; 32], [u8; 32])>);

impl Seal {
    fn on() -> Seal {
        Seal(Some(([7; 32], [9; 32])))
    }

    fn apply(self, port: &mut RingPort<'_>, role: Role) {
        if let Some((a, b)) = self.0 {
            let (send, recv) = if role == Role::Initiator {
                (a, b)
            } else {
                (b, a)
            };
            port.set_seal(SealKeys { send, recv }).unwrap();
        }
    }
}

fn liveness(other_failed: Arc<AtomicBool>) -> Liveness<'static> {
    let end = Instant::now() + Duration::from_secs(60);
    Box::new(move || {
        if other_failed.load(Ordering::SeqCst) {
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
    written: u64,
    received: Vec<Result<MessageInfo, Error>>,
    got: Vec<u8>,
}

/// The initiator sends `msgs` to the connector, each side on its own
/// handle; the receiver's sink is slow enough that the reader reads ahead.
fn run(
    rig: &Rig,
    mut tx: Box<dyn BlockDevice>,
    mut rx: Box<dyn BlockDevice>,
    seal: Seal,
    msgs: &[Vec<u8>],
) -> Run {
    let gen = common::fresh_gen(GEN);
    let tx_failed = Arc::new(AtomicBool::new(false));
    let rx_failed = Arc::new(AtomicBool::new(false));
    let count = msgs.len();
    let (geo, layout_id) = (rig.geo.clone(), rig.layout_id);
    let rx_flag = Arc::clone(&rx_failed);
    let tx_flag = Arc::clone(&tx_failed);
    let receiver = std::thread::spawn(move || {
        let mut port =
            RingPort::new(rx.as_mut(), geo, SLOT, Role::Connector, gen, layout_id).unwrap();
        seal.apply(&mut port, Role::Connector);
        port.set_liveness(liveness(tx_flag));
        let mut got = Vec::new();
        let mut received = Vec::new();
        if let Err(e) = port.init_table() {
            rx_flag.store(true, Ordering::SeqCst);
            return (vec![Err(e)], got);
        }
        for _ in 0..count {
            let r = port.recv(&mut |b: &[u8]| {
                got.extend_from_slice(b);
                std::thread::sleep(Duration::from_micros(200));
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
    seal.apply(&mut port, Role::Initiator);
    port.set_liveness(liveness(Arc::clone(&rx_failed)));
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
        received,
        got,
    }
}

fn capacity(rig: &Rig, seal: Seal) -> usize {
    rig.geo.payload_capacity() - if seal.0.is_some() { 16 } else { 0 }
}

/// Every message arrived intact; returns the segments sent again.
fn assert_delivered(rig: &Rig, seal: Seal, r: &Run, msgs: &[Vec<u8>], log: &str) -> u64 {
    assert!(r.sent.is_ok(), "send failed: {:?}{log}", r.sent);
    assert_eq!(r.received.len(), msgs.len(), "{log}");
    for (m, got) in msgs.iter().zip(&r.received) {
        let info = got
            .as_ref()
            .unwrap_or_else(|e| panic!("recv failed: {e}{log}"));
        assert_eq!(info.len, m.len() as u64);
    }
    assert!(r.got == msgs.concat(), "the received bytes differ{log}");
    let p = capacity(rig, seal);
    let expected: u64 = msgs.iter().map(|m| m.len().div_ceil(p).max(1) as u64).sum();
    assert!(r.written >= expected);
    r.written - expected
}

fn show(faults: &Faults) -> String {
    faults.log().iter().map(|i| format!("\n  {i}")).collect()
}

/// Logs the order of segment writes and table writes of one side, over
/// every handle reopened from it (the port writes segments through its I/O
/// thread's handle, the table through its own).
#[derive(Debug)]
struct Order {
    inner: Box<dyn BlockDevice>,
    segments: Range<u64>,
    table: Range<u64>,
    log: Arc<Mutex<Vec<char>>>,
}

impl BlockDevice for Order {
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
        if self.table.contains(&offset) {
            self.log.lock().unwrap().push('T');
            return self.inner.write_at(offset, buf, mode);
        }
        if !self.segments.contains(&offset) {
            return self.inner.write_at(offset, buf, mode);
        }
        // Slow segment writes, logged when they start (S) and end (s): the
        // writer gets ahead of the device.
        self.log.lock().unwrap().push('S');
        std::thread::sleep(Duration::from_millis(2));
        let r = self.inner.write_at(offset, buf, mode);
        self.log.lock().unwrap().push('s');
        r
    }
    fn flush(&mut self) -> Result<(), fts_blockdev::Error> {
        self.inner.flush()
    }
    fn reopen(&self) -> Result<Box<dyn BlockDevice>, fts_blockdev::Error> {
        Ok(Box::new(Order {
            inner: self.inner.reopen()?,
            segments: self.segments.clone(),
            table: self.table.clone(),
            log: self.log.clone(),
        }))
    }
    fn location(&self) -> &str {
        self.inner.location()
    }
}

#[test]
fn every_size_arrives_intact_sealed_or_not_each_segment_written_once() {
    let rig = rig();
    for seal in [Seal(None), Seal::on()] {
        let p = capacity(&rig, seal);
        let n = RING as usize;
        let sizes = [
            0,
            1,
            p - 1,
            p,
            p + 1,
            2 * p,
            3 * p + 1,
            n * p - 1,
            n * p,
            n * p + 1,
            2 * n * p + 7,
            5 * n * p + p / 2,
        ];
        let msgs: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| message(len, i as u64))
            .collect();
        let r = run(&rig, rig.plain(), rig.plain(), seal, &msgs);
        let resent = assert_delivered(&rig, seal, &r, &msgs, "");
        // A published entry whose segment was not yet written would be
        // refused by the reader and sent again.
        assert_eq!(resent, 0, "sealed: {}", seal.0.is_some());
    }
}

#[test]
fn the_writer_has_several_batches_in_flight_and_publishes_only_written_ones() {
    let rig = rig();
    let log = Arc::new(Mutex::new(Vec::new()));
    let tx = Box::new(Order {
        inner: rig.plain(),
        segments: rig.segments(Role::Initiator),
        table: rig.table(Role::Initiator),
        log: log.clone(),
    });
    let msgs = [message(4 * RING as usize * rig.geo.payload_capacity(), 3)];
    let r = run(&rig, tx, rig.plain(), Seal(None), &msgs);
    assert_eq!(assert_delivered(&rig, Seal(None), &r, &msgs, ""), 0);
    let log: String = log.lock().unwrap().iter().collect();
    // One I/O at a time gives "SsT" for each batch: the write, then its
    // publication. With writes queued ahead, the table write of a batch
    // is made while the next batch is being written ("ST"), and a write
    // starts as soon as the previous ends ("sS")...
    assert!(
        log.contains("ST"),
        "no table write during a segment write: {log}"
    );
    assert!(
        log.contains("sS"),
        "the device waited between writes: {log}"
    );
    // ...but a batch is never published before its write ended: every T
    // follows at least as many ends as there were publications.
    let (mut ends, mut tables) = (0, 0);
    for k in log.chars() {
        match k {
            's' => ends += 1,
            'T' => {
                tables += 1;
                // init_table is the first T.
                assert!(ends + 1 >= tables, "published before written: {log}");
            }
            _ => {}
        }
    }
}

#[test]
fn flips_and_lost_writes_with_batches_in_flight_are_resent_sealed_or_not() {
    for seal in [Seal(None), Seal::on()] {
        for (seed, on_tx) in [(1, true), (2, false), (3, true)] {
            let rig = rig();
            let segs = rig.segments(Role::Initiator);
            let plan = if on_tx {
                FaultPlan::new(seed)
                    .rule(
                        Rule::new(Fault::Flip { bits: 3 })
                            .writes()
                            .bytes(segs.clone())
                            .nth(3),
                    )
                    .rule(Rule::new(Fault::Drop).writes().bytes(segs.clone()).nth(9))
                    .rule(
                        Rule::new(Fault::Flip { bits: 1 })
                            .writes()
                            .bytes(segs)
                            .nth(14),
                    )
            } else {
                // Damaged on the way back: the read ahead gets bad bytes.
                FaultPlan::new(seed)
                    .rule(
                        Rule::new(Fault::Flip { bits: 2 })
                            .reads()
                            .bytes(segs.clone())
                            .nth(4),
                    )
                    .rule(
                        Rule::new(Fault::Flip { bits: 1 })
                            .reads()
                            .bytes(segs)
                            .nth(11),
                    )
            };
            let (faulty, faults) = rig.host(plan);
            let msgs = [
                message(6 * RING as usize * capacity(&rig, seal) + 99, seed),
                message(17, seed + 1),
            ];
            let r = if on_tx {
                run(&rig, faulty, rig.plain(), seal, &msgs)
            } else {
                run(&rig, rig.plain(), faulty, seal, &msgs)
            };
            let log = show(&faults);
            let resent = assert_delivered(&rig, seal, &r, &msgs, &log);
            let rules = if on_tx { 3 } else { 2 };
            for k in 0..rules {
                assert_eq!(faults.fired(k), 1, "rule {k} never fired{log}");
            }
            // A reader polls a message's first segment with one-LB reads
            // before the table announces it; a damaged poll is simply read
            // again, so flips that only hit such polls need no resend.
            let polls_only = !on_tx && faults.log().iter().all(|i| i.len <= LB);
            assert!(resent >= 1 || polls_only, "nothing was sent again{log}");
        }
    }
}

#[test]
fn an_io_error_on_the_io_thread_is_an_error_on_either_side() {
    for on_tx in [true, false] {
        let rig = rig();
        let segs = rig.segments(Role::Initiator);
        let rule = if on_tx {
            Rule::new(Fault::Fail { errno: 5 })
                .writes()
                .bytes(segs)
                .nth(5)
        } else {
            Rule::new(Fault::Fail { errno: 5 })
                .reads()
                .bytes(segs)
                .nth(5)
        };
        let (faulty, faults) = rig.host(FaultPlan::new(7).rule(rule));
        let msgs = [message(4 * RING as usize * rig.geo.payload_capacity(), 9)];
        let start = Instant::now();
        let r = if on_tx {
            run(&rig, faulty, rig.plain(), Seal(None), &msgs)
        } else {
            run(&rig, rig.plain(), faulty, Seal(None), &msgs)
        };
        assert!(start.elapsed() < Duration::from_secs(30));
        assert_eq!(faults.fired(0), 1);
        let failed = if on_tx {
            r.sent.as_ref().err()
        } else {
            r.received.iter().find_map(|x| x.as_ref().err())
        };
        match failed {
            Some(Error::Io { op, .. }) => {
                let want = if on_tx {
                    "write segments"
                } else {
                    "read segments"
                };
                assert_eq!(*op, want);
            }
            other => panic!("on_tx {on_tx}: expected an I/O error, got {other:?}"),
        }
        // Whatever arrived is a prefix of the message.
        assert!(r.got.len() <= msgs[0].len() && r.got == msgs[0][..r.got.len()]);
    }
}

#[test]
fn a_fence_ends_a_pipelined_send_and_nothing_more_is_written() {
    let rig = rig();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tx = Order {
        inner: rig.plain(),
        segments: rig.segments(Role::Initiator),
        table: rig.table(Role::Initiator),
        log: log.clone(),
    };
    let mut port = RingPort::new(
        &mut tx,
        rig.geo.clone(),
        SLOT,
        Role::Initiator,
        GEN,
        rig.layout_id,
    )
    .unwrap();
    port.init_table().unwrap();
    // No reader: the writer fills its window, then waits for acks. The
    // slot is taken away while it writes.
    let owned = Arc::new(AtomicBool::new(true));
    let flag = owned.clone();
    port.set_fence(Box::new(move || {
        if flag.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Error::Fenced {
                slot: SLOT,
                reason: "taken".into(),
            })
        }
    }));
    let taker = {
        let owned = owned.clone();
        let log = log.clone();
        std::thread::spawn(move || {
            while log.lock().unwrap().iter().filter(|&&k| k == 'S').count() < 2 {
                std::thread::sleep(Duration::from_millis(1));
            }
            owned.store(false, Ordering::SeqCst);
        })
    };
    let msg = message(3 * RING as usize * rig.geo.payload_capacity(), 4);
    let start = Instant::now();
    let r = port.send(&mut msg.as_slice(), msg.len() as u64);
    taker.join().unwrap();
    assert!(
        matches!(r, Err(Error::Fenced { .. })),
        "expected Fenced, got {r:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    drop(port);
    // Once the fence said no, at most the writes already checked (within
    // the fence's freshness) were made: nothing after a refusal.
    let writes = log.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(log.lock().unwrap().len(), writes, "written after the end");
}

#[test]
fn liveness_ends_a_pipelined_send_waiting_for_acks_and_a_recv() {
    let rig = rig();
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
    port.init_table().unwrap();
    let deadline = Instant::now() + Duration::from_millis(300);
    port.set_liveness(Box::new(move || {
        if Instant::now() > deadline {
            Err(Error::PeerGone {
                slot: SLOT,
                reason: "gone".into(),
            })
        } else {
            Ok(())
        }
    }));
    // More than the window: written ahead, then waits for acks that never
    // come.
    let msg = message(3 * RING as usize * rig.geo.payload_capacity(), 5);
    let start = Instant::now();
    let r = port.send(&mut msg.as_slice(), msg.len() as u64);
    assert!(matches!(r, Err(Error::PeerGone { .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // And a recv with nothing to read.
    let mut dev = rig.plain();
    let mut port = RingPort::new(
        dev.as_mut(),
        rig.geo.clone(),
        2,
        Role::Connector,
        GEN,
        rig.layout_id,
    )
    .unwrap();
    port.init_table().unwrap();
    let deadline = Instant::now() + Duration::from_millis(300);
    port.set_liveness(Box::new(move || {
        if Instant::now() > deadline {
            Err(Error::PeerGone {
                slot: 2,
                reason: "gone".into(),
            })
        } else {
            Ok(())
        }
    }));
    let start = Instant::now();
    let r = port.recv(&mut |_: &[u8]| Ok::<(), std::io::Error>(()));
    assert!(matches!(r, Err(Error::PeerGone { .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}
