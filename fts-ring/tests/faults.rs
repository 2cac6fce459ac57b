//! The ring driver over a real formatted file whose handles inject faults
//! (`fts-faults`): each side of a connection runs in its own thread on its
//! own wrapped handle, as two hosts would.
//!
//! What must hold: a segment whose bytes were flipped, torn or lost on the
//! way to or from the disk is rejected (NAK) and sent again, and the bytes
//! received are exactly the bytes sent; a corrupt pointer table and an I/O
//! error end the transfer with an error naming what failed, and whatever
//! reached the receiver before is an exact prefix of the message, never
//! wrong bytes. Every test checks in the fault log that its fault fired,
//! and the NAK tests that segments really were sent again (a transfer
//! without faults sends each segment once).

// Test helpers (and the threads) outside #[test] fns may panic too.
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fts_blockdev::{BlockDevice, FileDevice, OpenOptions, WriteMode};
use fts_faults::{Fault, FaultDevice, FaultPlan, Faults, Rule, TornEnd};
use fts_layout::{format_plan, layout_id_of, FormatSpec, Geometry, GeometryParams, Role, LB};
use fts_ring::{Error, Liveness, MessageInfo, RingPort};
use uuid::Uuid;

const GEN: u64 = 3;

const SLOT: u32 = 1;

struct Rig {
    _dir: tempfile::TempDir,
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
        layout_uuid: Uuid::from_u128(0xfa17),
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
        _dir: dir,
        dev,
        geo: geometry,
        layout_id: layout_id_of(&spec.layout_uuid),
    }
}

impl Rig {
    /// A handle of "a host" whose view of the device follows `plan`.
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
        let start = *offsets.iter().min().unwrap();
        let end = *offsets.iter().max().unwrap() + seg_bytes;
        assert_eq!(end - start, seg_bytes * u64::from(self.geo.ring_entries));
        start..end
    }

    /// Device bytes of `role`'s pointer table.
    fn table(&self, role: Role) -> Range<u64> {
        let start = self.geo.table_lb(SLOT, role) * LB as u64;
        start..start + u64::from(self.geo.ptr_table_lbs) * LB as u64
    }

    /// Segments a message of `len` bytes takes when nothing goes wrong.
    fn segments_of(&self, len: usize) -> u64 {
        len.div_ceil(self.geo.payload_capacity()).max(1) as u64
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

/// Ends a wait when the other side has failed (as the session's dead-peer
/// check would) or after a generous deadline.
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
    /// Segments the sender wrote, retransmissions included.
    written: u64,
    received: Vec<Result<MessageInfo, Error>>,
    /// Every byte the receiver's sink got, in order.
    got: Vec<u8>,
}

/// The initiator sends `msgs` to the connector of slot [`SLOT`], each side
/// on its own handle, with generation `gen`.
fn run(
    rig: &Rig,
    mut tx: Box<dyn BlockDevice>,
    mut rx: Box<dyn BlockDevice>,
    gen: u64,
    msgs: &[Vec<u8>],
) -> Run {
    let tx_failed = Arc::new(AtomicBool::new(false));
    let rx_failed = Arc::new(AtomicBool::new(false));
    let count = msgs.len();
    let (geo, layout_id) = (rig.geo.clone(), rig.layout_id);
    let rx_flag = Arc::clone(&rx_failed);
    let tx_flag = Arc::clone(&tx_failed);
    let receiver = std::thread::spawn(move || {
        let mut port =
            RingPort::new(rx.as_mut(), geo, SLOT, Role::Connector, gen, layout_id).unwrap();
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

fn show(faults: &Faults) -> String {
    faults.log().iter().map(|i| format!("\n  {i}")).collect()
}

/// Asserts that every message arrived intact, and returns how many
/// segments were sent again.
fn assert_delivered(rig: &Rig, r: &Run, msgs: &[Vec<u8>], faults: &Faults) -> u64 {
    let log = show(faults);
    assert!(r.sent.is_ok(), "send failed: {:?}{log}", r.sent);
    assert_eq!(r.received.len(), msgs.len());
    for (m, got) in msgs.iter().zip(&r.received) {
        let info = got
            .as_ref()
            .unwrap_or_else(|e| panic!("recv failed: {e}{log}"));
        assert_eq!(info.len, m.len() as u64);
    }
    let all: Vec<u8> = msgs.concat();
    assert!(
        r.got == all,
        "the received bytes differ from the sent ones{log}"
    );
    let expected: u64 = msgs.iter().map(|m| rig.segments_of(m.len())).sum();
    assert!(r.written >= expected);
    r.written - expected
}

/// What reached the receiver is an exact prefix of what was sent.
fn assert_prefix(r: &Run, msgs: &[Vec<u8>]) {
    let all: Vec<u8> = msgs.concat();
    assert!(
        r.got.len() <= all.len() && r.got == all[..r.got.len()],
        "the receiver got {} bytes that are not a prefix of the message",
        r.got.len()
    );
}

fn plain(rig: &Rig) -> Box<dyn BlockDevice> {
    rig.dev.reopen().unwrap()
}

#[test]
fn without_faults_every_segment_is_sent_once() {
    // The baseline the retransmission counts below are measured against.
    let rig = rig(512);
    let msgs = [message(20 * rig.geo.payload_capacity() + 77, 1)];
    let r = run(
        &rig,
        plain(&rig),
        plain(&rig),
        common::fresh_gen(GEN),
        &msgs,
    );
    let (_, faults) = rig.host(FaultPlan::new(0));
    assert_eq!(assert_delivered(&rig, &r, &msgs, &faults), 0);
}

/// One fault of each kind on the sender's segment writes, alone: each is
/// caught by the reader's checks and costs a retransmission.
#[test]
fn flipped_torn_and_dropped_segment_writes_are_resent() {
    for block_size in [512, 4096] {
        let rig = rig(block_size);
        let segs = rig.segments(Role::Initiator);
        let faults = [
            Fault::Flip { bits: 1 },
            Fault::Flip { bits: 5 },
            Fault::Torn {
                keep: None,
                then: TornEnd::Silent,
            },
            Fault::Torn {
                keep: Some(1),
                then: TornEnd::Silent,
            },
            Fault::Drop,
        ];
        for (k, fault) in faults.into_iter().enumerate() {
            let what = format!("{fault} on {block_size}-byte blocks");
            // The 4th segment write; every segment of the message is full,
            // so every byte of it is covered by a check.
            let plan =
                FaultPlan::new(k as u64).rule(Rule::new(fault).writes().bytes(segs.clone()).nth(4));
            let (tx, faults) = rig.host(plan);
            let msgs = [message(16 * rig.geo.payload_capacity(), k as u64)];
            let r = run(&rig, tx, plain(&rig), common::fresh_gen(GEN), &msgs);
            let resent = assert_delivered(&rig, &r, &msgs, &faults);
            assert_eq!(faults.fired(0), 1, "{what}: the fault never fired");
            assert!(
                resent >= 1,
                "{what}: nothing was sent again{}",
                show(&faults)
            );
        }
    }
}

/// The same on the receiver's side: bits flipped while it reads segments.
#[test]
fn bits_flipped_on_segment_reads_are_resent() {
    let rig = rig(512);
    let segs = rig.segments(Role::Initiator);
    let plan = FaultPlan::new(5)
        .rule(
            Rule::new(Fault::Flip { bits: 1 })
                .reads()
                .bytes(segs.clone())
                .nth(2),
        )
        .rule(
            Rule::new(Fault::Flip { bits: 3 })
                .reads()
                .bytes(segs)
                .skip(6)
                .probability(0.2),
        );
    let (rx, faults) = rig.host(plan);
    let msgs = [message(30 * rig.geo.payload_capacity() + 1000, 3)];
    let r = run(&rig, plain(&rig), rx, common::fresh_gen(GEN), &msgs);
    let resent = assert_delivered(&rig, &r, &msgs, &faults);
    assert_eq!(faults.fired(0), 1);
    assert!(resent >= 1, "nothing was sent again{}", show(&faults));
}

/// A seeded storm of every data fault on both sides over several messages
/// of awkward sizes (empty, one byte, partial last segments).
#[test]
fn a_storm_of_segment_faults_never_changes_a_byte() {
    let rig = rig(512);
    let segs = rig.segments(Role::Initiator);
    let p = rig.geo.payload_capacity();
    let tx_plan = FaultPlan::new(11)
        .rule(
            Rule::new(Fault::Flip { bits: 2 })
                .writes()
                .bytes(segs.clone())
                .probability(0.05),
        )
        .rule(
            Rule::new(Fault::Torn {
                keep: None,
                then: TornEnd::Silent,
            })
            .writes()
            .bytes(segs.clone())
            .probability(0.05),
        )
        .rule(
            Rule::new(Fault::Drop)
                .writes()
                .bytes(segs.clone())
                .probability(0.05),
        )
        .rule(Rule::new(Fault::Latency(Duration::from_micros(300))).probability(0.1));
    let rx_plan = FaultPlan::new(12)
        .rule(
            Rule::new(Fault::Flip { bits: 1 })
                .reads()
                .bytes(segs)
                .probability(0.05),
        )
        .rule(Rule::new(Fault::Latency(Duration::from_micros(300))).probability(0.1));
    let (tx, tx_faults) = rig.host(tx_plan);
    let (rx, rx_faults) = rig.host(rx_plan);
    let msgs: Vec<Vec<u8>> = [0, 1, p - 1, p, p + 1, 7 * p + 3, 40 * p + 17, 12, 25 * p]
        .iter()
        .enumerate()
        .map(|(k, &len)| message(len, 100 + k as u64))
        .collect();
    let r = run(&rig, tx, rx, common::fresh_gen(GEN), &msgs);
    let resent = assert_delivered(&rig, &r, &msgs, &tx_faults);
    let tx_stats = tx_faults.stats();
    let rx_stats = rx_faults.stats();
    let injected = tx_stats.flipped + tx_stats.torn + tx_stats.dropped + rx_stats.flipped;
    assert!(
        injected >= 5,
        "only {injected} data faults: {tx_stats:?} {rx_stats:?}"
    );
    assert!(resent >= 1);
}

/// A pointer table that fails validation once (a flipped bit on one
/// read) is read again, and a table write the device lost is rewritten by
/// its owner when the connection stalls: both transfers complete intact.
#[test]
fn a_transient_table_flip_or_a_lost_table_write_is_survived() {
    let rig = rig(512);
    let t = rig.table(Role::Initiator);
    let chunk0 = t.start..t.start + 512;
    let cases = [
        (
            "a flip on one read by the receiver",
            true,
            Rule::new(Fault::Flip { bits: 1 })
                .reads()
                .bytes(chunk0.clone())
                .nth(3),
        ),
        (
            "the sender's table write lost once",
            false,
            Rule::new(Fault::Drop).writes().bytes(chunk0).nth(2),
        ),
    ];
    for (what, on_rx, rule) in cases {
        let (faulty, faults) = rig.host(FaultPlan::new(1).rule(rule));
        let msgs = [message(12 * rig.geo.payload_capacity(), 9)];
        let r = if on_rx {
            run(&rig, plain(&rig), faulty, common::fresh_gen(GEN), &msgs)
        } else {
            run(&rig, faulty, plain(&rig), common::fresh_gen(GEN), &msgs)
        };
        assert!(faults.fired(0) >= 1, "{what}: the fault never fired");
        assert_delivered(&rig, &r, &msgs, &faults);
    }
}

/// A flipped bit in the peer's pointer table that lasts (every write of
/// it damaged) ends the transfer with an error that names the slot and
/// the table, never with wrong bytes.
#[test]
fn a_lasting_corrupt_pointer_table_is_an_error_not_data() {
    let rig = rig(512);
    // Chunk 0 of the initiator's table is its first 512 bytes.
    let t = rig.table(Role::Initiator);
    let chunk0 = t.start..t.start + 512;
    // From its second write of the table on, every write is damaged.
    let rule = Rule::new(Fault::Flip { bits: 1 })
        .writes()
        .bytes(chunk0)
        .skip(1);
    let (faulty, faults) = rig.host(FaultPlan::new(1).rule(rule));
    let msgs = [message(12 * rig.geo.payload_capacity(), 9)];
    let r = run(&rig, faulty, plain(&rig), common::fresh_gen(GEN), &msgs);
    assert!(faults.fired(0) >= 1, "the flip never fired");
    let err = r.received.iter().find_map(|x| x.as_ref().err());
    match err {
        Some(Error::CorruptTable {
            slot, role, chunk, ..
        }) => {
            assert_eq!((*slot, *role, *chunk), (SLOT, Role::Initiator, 0));
        }
        other => panic!("expected a corrupt table, got {other:?}{}", show(&faults)),
    }
    let msg = err.unwrap().to_string();
    assert!(msg.contains("slot 1") && msg.contains("initiator"), "{msg}");
    assert!(
        matches!(r.sent, Err(Error::PeerGone { .. })),
        "{:?}",
        r.sent
    );
    assert_prefix(&r, &msgs);
}

/// An I/O error anywhere in the data path ends that side's transfer with
/// an [`Error::Io`] naming the operation and carrying the device's error;
/// the receiver never gets a wrong byte.
#[test]
fn injected_io_errors_surface_as_errors() {
    let rig = rig(512);
    let tx_segs = rig.segments(Role::Initiator);
    let tx_table = rig.table(Role::Initiator);
    let rx_table = rig.table(Role::Connector);
    // (failing side is the sender?, rule, the operation named in the error)
    let cases = [
        (
            true,
            Rule::new(Fault::eio())
                .writes()
                .bytes(tx_segs.clone())
                .nth(3),
            "write segments",
        ),
        (
            true,
            Rule::new(Fault::eio())
                .writes()
                .bytes(tx_table.clone())
                .nth(3),
            "write pointer table",
        ),
        (
            true,
            Rule::new(Fault::eio())
                .reads()
                .bytes(rx_table.clone())
                .nth(3),
            "read pointer table",
        ),
        (
            false,
            Rule::new(Fault::eio()).reads().bytes(tx_segs).nth(3),
            "read segments",
        ),
        (
            false,
            Rule::new(Fault::eio()).reads().bytes(tx_table).nth(4),
            "read pointer table",
        ),
        (
            false,
            Rule::new(Fault::eio()).writes().bytes(rx_table).nth(3),
            "write pointer table",
        ),
        (
            true,
            Rule::new(Fault::Crash)
                .reads()
                .bytes(rig.table(Role::Connector))
                .nth(2),
            "read pointer table",
        ),
    ];
    for (k, (on_tx, rule, op_named)) in cases.into_iter().enumerate() {
        let what = format!(
            "case {k}: {rule} on the {}",
            if on_tx { "sender" } else { "receiver" }
        );
        let (faulty, faults) = rig.host(FaultPlan::new(k as u64).rule(rule));
        let msgs = [message(10 * rig.geo.payload_capacity() + 5, k as u64)];
        let r = if on_tx {
            run(&rig, faulty, plain(&rig), common::fresh_gen(GEN), &msgs)
        } else {
            run(&rig, plain(&rig), faulty, common::fresh_gen(GEN), &msgs)
        };
        assert_eq!(faults.fired(0), 1, "{what}: never fired");
        let injected = &faults.log()[0].what;
        let errno = injected
            .errno()
            .unwrap_or_else(|| panic!("{what}: {injected} is not a failure"));
        let (failed, other) = if on_tx {
            (
                r.sent.as_ref().err(),
                r.received.iter().find_map(|x| x.as_ref().err()),
            )
        } else {
            (
                r.received.iter().find_map(|x| x.as_ref().err()),
                r.sent.as_ref().err(),
            )
        };
        match failed {
            Some(Error::Io {
                op,
                location,
                source,
            }) => {
                assert_eq!(*op, op_named, "{what}");
                assert!(location.contains("slot 1"), "{what}: {location}");
                match source {
                    fts_blockdev::Error::Io { source, .. } => {
                        assert_eq!(source.raw_os_error(), Some(errno), "{what}")
                    }
                    other => panic!("{what}: {other:?}"),
                }
            }
            other => panic!("{what}: expected an I/O error, got {other:?}"),
        }
        assert!(
            matches!(other, Some(Error::PeerGone { .. })),
            "{what}: the other side: {other:?}"
        );
        assert_prefix(&r, &msgs);
    }
}

/// A sender that crashes in the middle of a batch write leaves its ring
/// behind: a torn segment, and before it intact segments of the old
/// generation. The next connection in the slot (a new generation) numbers
/// its segments from 1 again, so when its first segment write is lost, the
/// reader finds an old segment with the very sequence number, request id,
/// length, flags, slot and a valid CRC where the new one should be: only
/// the generation tells them apart. It must be refused and sent again.
#[test]
fn a_crash_mid_write_then_a_new_generation_delivers_intact() {
    let rig = rig(512);
    let segs = rig.segments(Role::Initiator);
    let len = 20 * rig.geo.payload_capacity();

    // Generation GEN: the first batch (ring entries 0 and 1) lands, the
    // second is torn and the sender's host crashes.
    let plan = FaultPlan::new(3).rule(
        Rule::new(Fault::Torn {
            keep: None,
            then: TornEnd::Crash,
        })
        .writes()
        .bytes(segs.clone())
        .nth(2),
    );
    let (tx, faults) = rig.host(plan);
    let first = [message(len, 21)];
    let r = run(&rig, tx, plain(&rig), GEN, &first);
    assert_eq!(faults.fired(0), 1);
    assert!(faults.crashed());
    // With several writes in flight, the crash may first be seen by the
    // table write of the batch before the torn one.
    assert!(
        matches!(
            r.sent,
            Err(Error::Io {
                op: "write segments" | "write pointer table",
                ..
            })
        ),
        "{:?}",
        r.sent
    );
    assert_prefix(&r, &first);
    assert!(r.got.len() < len);

    // Generation GEN + 1, same slot, a message of the same length: its
    // first segment write is lost.
    let plan = FaultPlan::new(4).rule(Rule::new(Fault::Drop).writes().bytes(segs).nth(1));
    let (tx, faults) = rig.host(plan);
    let second = [message(len, 22), message(3, 23)];
    let r = run(&rig, tx, plain(&rig), GEN + 1, &second);
    let resent = assert_delivered(&rig, &r, &second, &faults);
    assert_eq!(faults.fired(0), 1);
    assert!(resent >= 1, "the old segment was taken{}", show(&faults));
}
