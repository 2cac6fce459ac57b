//! The ring driver over a layout of several real image files: a master and
//! one or two secondary devices. Each side of a connection runs in its own
//! thread with its own handles on every device, as two hosts would.
//!
//! What must hold: messages of every size arrive intact in both directions,
//! sealed or not, whichever device each ring is on; the segments really are
//! written to (and read from) the secondary devices; a port that lacks a
//! device its connection needs says so before writing anything; and a bit
//! flipped on a secondary device is caught and the segment sent again.
//!
//! The tests only use [`Geometry::ring_segment`] and
//! [`Geometry::segment_location`] to find out where the rings are, so they
//! hold under any geometry rule that keeps each group of `B` ring entries
//! contiguous on one device.

// Test helpers (and the threads) outside #[test] fns may panic too.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fts_blockdev::{BlockDevice, DeviceIdentity, FileDevice, OpenOptions, WriteMode};
use fts_faults::{Fault, FaultDevice, FaultPlan, Faults, Rule};
use fts_layout::{
    format_plan, layout_id_of, Expect, FormatSpec, Geometry, GeometryParams, Role, SegHeader, LB,
    SEG_HDR_SIZE,
};
use fts_ring::{Error, Liveness, MessageInfo, RingPort, SealKeys};
use uuid::Uuid;

/// The generation of the rig's first connection; every connection gets
/// the next one ([`Rig::claim`]).
const GEN: u64 = 5;
const MASTER_BYTES: u64 = 4 << 20;
const SECONDARY_BYTES: u64 = 2 << 20;

/// A formatted layout of a master and `secondaries` secondary image files.
struct Rig {
    _dir: tempfile::TempDir,
    /// Unwrapped handles, master first: format, open the ports' handles,
    /// inspect the result.
    devs: Vec<FileDevice>,
    paths: Vec<PathBuf>,
    geo: Geometry,
    layout_id: u64,
    /// The generation the next connection gets ([`Rig::claim`]).
    next_gen: AtomicU64,
}

fn rig(secondaries: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let mut params = GeometryParams::new(MASTER_BYTES);
    params.secondary_bytes = vec![SECONDARY_BYTES; secondaries];
    params.segment_bytes = 8192;
    params.max_connections = 2;
    params.ring_entries = 8;
    params.batch = 2;
    let geometry = Geometry::compute(&params).unwrap();
    let n = 1 + secondaries;
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| dir.path().join(format!("dev{i}.img")))
        .collect();
    let spec = FormatSpec {
        layout_uuid: Uuid::from_u128(0xde5),
        device_uuids: (0..n).map(|i| Uuid::from_u128(0x100 + i as u128)).collect(),
        time_ns: 0,
        paths: paths.iter().map(|p| p.display().to_string()).collect(),
        hw_ids: vec![],
        lease_timeout_ms: fts_layout::DEFAULT_LEASE_TIMEOUT_MS,
        lock_timeout_ms: fts_layout::DEFAULT_LOCK_TIMEOUT_MS,
        io_timeout_ms: fts_layout::DEFAULT_IO_TIMEOUT_MS,
        heartbeat_ms: fts_layout::DEFAULT_HEARTBEAT_MS,
        geometry: geometry.clone(),
    };
    spec.validate().unwrap();
    let mut devs: Vec<FileDevice> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let opts = OpenOptions {
                create_size: Some(if i == 0 {
                    MASTER_BYTES
                } else {
                    SECONDARY_BYTES
                }),
                block_size: Some(512),
                ..OpenOptions::default()
            };
            FileDevice::open(p, &opts).unwrap()
        })
        .collect();
    for w in format_plan(&spec) {
        devs[w.device]
            .write_at(w.lb * LB as u64, &w.data, WriteMode::Normal)
            .unwrap();
    }
    for d in &mut devs {
        d.flush().unwrap();
    }
    Rig {
        _dir: dir,
        devs,
        paths,
        geo: geometry,
        layout_id: layout_id_of(&spec.layout_uuid),
        next_gen: AtomicU64::new(GEN),
    }
}

/// Reads and writes made through a handle and every handle reopened from it.
#[derive(Debug, Default)]
struct Counts {
    reads: AtomicU64,
    writes: AtomicU64,
}

/// A handle counting its I/O (and that of the handles reopened from it).
#[derive(Debug)]
struct Counted {
    inner: Box<dyn BlockDevice>,
    counts: Arc<Counts>,
}

impl BlockDevice for Counted {
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
        self.counts.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_at(offset, buf)
    }

    fn write_at(
        &mut self,
        offset: u64,
        buf: &[u8],
        mode: WriteMode,
    ) -> Result<(), fts_blockdev::Error> {
        self.counts.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.write_at(offset, buf, mode)
    }

    fn flush(&mut self) -> Result<(), fts_blockdev::Error> {
        self.inner.flush()
    }

    fn reopen(&self) -> Result<Box<dyn BlockDevice>, fts_blockdev::Error> {
        Ok(Box::new(Counted {
            inner: self.inner.reopen()?,
            counts: Arc::clone(&self.counts),
        }))
    }

    fn location(&self) -> &str {
        self.inner.location()
    }
}

/// One side's handles: the master and every secondary (`None`: not open).
struct Host {
    master: Box<dyn BlockDevice>,
    secondaries: Vec<Option<Box<dyn BlockDevice>>>,
}

impl Rig {
    /// A fresh generation for a connection, as a slot's claim makes
    /// (`pro_generation` + 1). Connections of a slot must never share one:
    /// a side that starts sending before its peer rewrote its table reads
    /// the table the last connection left, and with the same generation
    /// its acknowledgements look current: the writer takes them for
    /// segments nobody read and writes over entries the reader still
    /// waits for.
    fn claim(&self) -> u64 {
        self.next_gen.fetch_add(1, Ordering::SeqCst)
    }

    /// Whether `generation` is that of a connection of this rig.
    fn claimed(&self, generation: u64) -> bool {
        (GEN..self.next_gen.load(Ordering::SeqCst)).contains(&generation)
    }

    /// Plain handles on every device.
    fn host(&self) -> Host {
        Host {
            master: self.devs[0].reopen().unwrap(),
            secondaries: self.devs[1..]
                .iter()
                .map(|d| Some(d.reopen().unwrap()))
                .collect(),
        }
    }

    /// Handles on every device counting into `counts[device]`.
    fn counted_host(&self, counts: &[Arc<Counts>]) -> Host {
        let mut all: Vec<Box<dyn BlockDevice>> = self
            .devs
            .iter()
            .zip(counts)
            .map(|(d, c)| {
                Box::new(Counted {
                    inner: d.reopen().unwrap(),
                    counts: Arc::clone(c),
                }) as Box<dyn BlockDevice>
            })
            .collect();
        let secondaries = all.split_off(1).into_iter().map(Some).collect();
        Host {
            master: all.pop().unwrap(),
            secondaries,
        }
    }

    /// The device holding ring entry `entry` of `role`'s table of `slot`,
    /// and its byte offset there.
    fn entry_at(&self, slot: u32, role: Role, entry: u32) -> (usize, u64) {
        let g = self.geo.ring_segment(slot, role, entry);
        self.geo.segment_location(g).unwrap()
    }

    /// The devices holding `role`'s ring of `slot`.
    fn ring_devices(&self, slot: u32, role: Role) -> BTreeSet<usize> {
        (0..self.geo.ring_entries)
            .map(|i| self.entry_at(slot, role, i).0)
            .collect()
    }

    /// The bytes of device `dev` holding `role`'s segments of `slot` (the
    /// ring's part on that device is contiguous).
    fn ring_bytes_on(&self, slot: u32, role: Role, dev: usize) -> Range<u64> {
        let seg_bytes = u64::from(self.geo.seg_lbs) * LB as u64;
        let offsets: Vec<u64> = (0..self.geo.ring_entries)
            .map(|i| self.entry_at(slot, role, i))
            .filter(|&(d, _)| d == dev)
            .map(|(_, off)| off)
            .collect();
        let start = *offsets.iter().min().unwrap();
        let end = *offsets.iter().max().unwrap() + seg_bytes;
        assert_eq!(end - start, seg_bytes * offsets.len() as u64);
        start..end
    }

    /// Ring entries of `role`'s table of `slot` whose segment, read from
    /// its device, has a valid header of this connection.
    fn headers_found(&self, slot: u32, role: Role) -> Vec<(u32, usize)> {
        let mut found = Vec::new();
        for i in 0..self.geo.ring_entries {
            let g = self.geo.ring_segment(slot, role, i);
            let (dev, off) = self.geo.segment_location(g).unwrap();
            let mut buf = vec![0u8; LB];
            self.devs[dev]
                .reopen()
                .unwrap()
                .read_at(off, &mut buf)
                .unwrap();
            if let Ok(h) = SegHeader::decode(&buf[..SEG_HDR_SIZE], Expect::exact(self.layout_id, g))
            {
                if self.claimed(h.generation) && h.slot == slot && h.flags & role.flag() != 0 {
                    found.push((i, dev));
                }
            }
        }
        found
    }

    /// Segments a message of `len` bytes takes when nothing goes wrong.
    fn segments_of(&self, len: usize, sealed: bool) -> u64 {
        len.div_ceil(self.payload(sealed)).max(1) as u64
    }

    fn payload(&self, sealed: bool) -> usize {
        self.geo.payload_capacity() - if sealed { 16 } else { 0 }
    }

    /// Message sizes that exercise every boundary: empty, one byte, one
    /// segment, one batch, several batches, many times the ring (it
    /// wraps), and sizes that are multiples of nothing.
    fn sizes(&self, sealed: bool) -> Vec<usize> {
        let p = self.payload(sealed);
        let b = self.geo.batch as usize;
        let n = self.geo.ring_entries as usize;
        vec![
            0,
            1,
            p - 1,
            p,
            p + 1,
            b * p,
            b * p + 1,
            3 * b * p - 7,
            n * p,
            7 * n * p + 13,
            12_345,
            0,
            99_991,
        ]
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

/// Ends a wait when the other side has failed or after a generous deadline;
/// sets `waiting` (if any) whenever the port waits.
fn liveness(
    slot: u32,
    other_failed: Arc<AtomicBool>,
    waiting: Option<Arc<AtomicBool>>,
) -> Liveness<'static> {
    let end = Instant::now() + Duration::from_secs(90);
    Box::new(move || {
        if let Some(w) = &waiting {
            w.store(true, Ordering::SeqCst);
        }
        if other_failed.load(Ordering::SeqCst) {
            Err(Error::PeerGone {
                slot,
                reason: "the other side failed".into(),
            })
        } else if Instant::now() > end {
            Err(Error::PeerGone {
                slot,
                reason: "test deadline".into(),
            })
        } else {
            Ok(())
        }
    })
}

fn keys(role: Role) -> SealKeys {
    let (a, b) = ([0x11; 32], [0x22; 32]);
    match role {
        Role::Initiator => SealKeys { send: a, recv: b },
        Role::Connector => SealKeys { send: b, recv: a },
    }
}

/// A port for `role` of `slot` (connection `generation`) on `host`'s
/// handles, its table initialised; `waiting` is set when it waits.
#[allow(clippy::too_many_arguments)]
fn port<'d>(
    rig: &Rig,
    geo: &Geometry,
    host: &'d mut Host,
    slot: u32,
    role: Role,
    sealed: bool,
    generation: u64,
    other_failed: Arc<AtomicBool>,
    waiting: Option<Arc<AtomicBool>>,
) -> Result<RingPort<'d>, Error> {
    let mut port = RingPort::new(
        host.master.as_mut(),
        geo.clone(),
        slot,
        role,
        generation,
        rig.layout_id,
    )?;
    port.set_devices(std::mem::take(&mut host.secondaries))?;
    if sealed {
        port.set_seal(keys(role))?;
    }
    port.set_liveness(liveness(slot, other_failed, waiting));
    port.init_table()?;
    Ok(port)
}

fn recv_vec(port: &mut RingPort<'_>, got: &mut Vec<u8>) -> Result<MessageInfo, Error> {
    port.recv(&mut |b: &[u8]| {
        got.extend_from_slice(b);
        Ok::<(), std::io::Error>(())
    })
}

/// What a one-way run produced.
struct Run {
    sent: Result<(), Error>,
    /// Segments the sender wrote, retransmissions included.
    written: u64,
    received: Vec<Result<MessageInfo, Error>>,
    /// Every byte the receiver's sink got, in order.
    got: Vec<u8>,
}

/// `from` sends `msgs` to the other side of `slot`, each on its own host,
/// over a new connection (its own generation).
#[allow(clippy::too_many_arguments)]
fn one_way(
    rig: &Rig,
    geo: &Geometry,
    slot: u32,
    from: Role,
    sealed: bool,
    tx: Host,
    rx: Host,
    msgs: &[Vec<u8>],
) -> Run {
    one_way_with(rig, geo, slot, from, sealed, tx, rx, msgs, false)
}

/// [`one_way`]; with `late_receiver`, the receiver starts (and writes its
/// table) only once the sender waits for acknowledgements, having read
/// the receiver's table as the last connection of the slot left it.
#[allow(clippy::too_many_arguments)]
fn one_way_with(
    rig: &Rig,
    geo: &Geometry,
    slot: u32,
    from: Role,
    sealed: bool,
    mut tx: Host,
    mut rx: Host,
    msgs: &[Vec<u8>],
    late_receiver: bool,
) -> Run {
    let generation = rig.claim();
    let tx_failed = Arc::new(AtomicBool::new(false));
    let rx_failed = Arc::new(AtomicBool::new(false));
    let tx_waiting = late_receiver.then(|| Arc::new(AtomicBool::new(false)));
    std::thread::scope(|s| {
        let rx_flag = Arc::clone(&rx_failed);
        let tx_flag = Arc::clone(&tx_failed);
        let tx_wait = tx_waiting.clone();
        let receiver = s.spawn(move || {
            let mut got = Vec::new();
            let mut received = Vec::new();
            if let Some(w) = tx_wait {
                while !w.load(Ordering::SeqCst) && !tx_flag.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let role = from.peer();
            let mut port = match port(
                rig, geo, &mut rx, slot, role, sealed, generation, tx_flag, None,
            ) {
                Ok(p) => p,
                Err(e) => {
                    rx_flag.store(true, Ordering::SeqCst);
                    return (vec![Err(e)], got);
                }
            };
            for _ in msgs {
                let r = recv_vec(&mut port, &mut got);
                let failed = r.is_err();
                received.push(r);
                if failed {
                    rx_flag.store(true, Ordering::SeqCst);
                    break;
                }
            }
            (received, got)
        });
        let (sent, written) = match port(
            rig,
            geo,
            &mut tx,
            slot,
            from,
            sealed,
            generation,
            Arc::clone(&rx_failed),
            tx_waiting.clone(),
        ) {
            Ok(mut port) => {
                let mut sent = Ok(());
                for m in msgs {
                    sent = port.send(&mut m.as_slice(), m.len() as u64);
                    if sent.is_err() {
                        break;
                    }
                }
                (sent, port.writer().next_seq() - 1)
            }
            Err(e) => (Err(e), 0),
        };
        if sent.is_err() {
            tx_failed.store(true, Ordering::SeqCst);
        }
        // A sender that never waited (it took acknowledgements nobody
        // wrote for it) must not keep a late receiver from starting.
        if let Some(w) = &tx_waiting {
            w.store(true, Ordering::SeqCst);
        }
        let (received, got) = receiver.join().unwrap();
        Run {
            sent,
            written,
            received,
            got,
        }
    })
}

fn show(faults: Option<&Faults>) -> String {
    faults.map_or(String::new(), |f| {
        f.log().iter().map(|i| format!("\n  {i}")).collect()
    })
}

/// Asserts that every message arrived intact; returns how many segments
/// were sent again.
fn assert_delivered(
    rig: &Rig,
    r: &Run,
    msgs: &[Vec<u8>],
    sealed: bool,
    faults: Option<&Faults>,
) -> u64 {
    let log = show(faults);
    assert!(
        r.sent.is_ok(),
        "send failed: {:?}{log}\nreceived: {:?}",
        r.sent,
        r.received
            .iter()
            .map(|x| x.as_ref().err().map(ToString::to_string))
            .collect::<Vec<_>>()
    );
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
    let expected: u64 = msgs.iter().map(|m| rig.segments_of(m.len(), sealed)).sum();
    assert!(r.written >= expected);
    r.written - expected
}

/// Both directions of `slot`, messages of every size, on counted handles:
/// returns the I/O counts per device.
fn both_ways(rig: &Rig, geo: &Geometry, slot: u32, sealed: bool) -> Vec<Arc<Counts>> {
    let counts: Vec<Arc<Counts>> = (0..rig.devs.len()).map(|_| Arc::default()).collect();
    let sizes = rig.sizes(sealed);
    for (k, from) in Role::BOTH.into_iter().enumerate() {
        let msgs: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(j, &len)| message(len, (slot as u64) << 32 | (k as u64) << 16 | j as u64))
            .collect();
        let r = one_way(
            rig,
            geo,
            slot,
            from,
            sealed,
            rig.counted_host(&counts),
            rig.counted_host(&counts),
            &msgs,
        );
        let what = format!("slot {slot}, from the {from}, sealed {sealed}");
        let resent = assert_delivered(rig, &r, &msgs, sealed, None);
        assert_eq!(resent, 0, "{what}: segments sent again without faults");
    }
    counts
}

/// Every device holding a ring of the slot got reads and writes; every
/// segment of both rings was written where the geometry says.
fn assert_on_devices(rig: &Rig, geo: &Geometry, slot: u32, counts: &[Arc<Counts>]) {
    for role in Role::BOTH {
        let found = rig.headers_found(slot, role);
        assert_eq!(
            found.len(),
            geo.ring_entries as usize,
            "slot {slot}: not every segment of the {role}'s ring holds one of its headers: {found:?}"
        );
        for dev in rig.ring_devices(slot, role) {
            let c = &counts[dev];
            assert!(
                c.writes.load(Ordering::SeqCst) > 0 && c.reads.load(Ordering::SeqCst) > 0,
                "slot {slot}: device {dev} holds the {role}'s ring but saw no I/O: {c:?}"
            );
        }
    }
}

#[test]
fn one_secondary_every_size_both_ways_sealed_and_not() {
    let rig = rig(1);
    // Whatever the rule, the rings of the two slots use both devices.
    let used: BTreeSet<usize> = [1, 2]
        .into_iter()
        .flat_map(|slot| Role::BOTH.map(|r| rig.ring_devices(slot, r)))
        .flatten()
        .collect();
    assert_eq!(used, BTreeSet::from([0, 1]));
    for slot in [1, 2] {
        for sealed in [false, true] {
            let counts = both_ways(&rig, &rig.geo, slot, sealed);
            assert_on_devices(&rig, &rig.geo, slot, &counts);
        }
    }
}

#[test]
fn two_secondaries_every_size_both_ways_sealed_and_not() {
    let rig = rig(2);
    let used: BTreeSet<usize> = [1, 2]
        .into_iter()
        .flat_map(|slot| Role::BOTH.map(|r| rig.ring_devices(slot, r)))
        .flatten()
        .collect();
    assert_eq!(used, BTreeSet::from([0, 1, 2]));
    let mut secondary_segments = 0;
    for slot in [1, 2] {
        for sealed in [false, true] {
            let counts = both_ways(&rig, &rig.geo, slot, sealed);
            assert_on_devices(&rig, &rig.geo, slot, &counts);
        }
        secondary_segments += Role::BOTH
            .into_iter()
            .flat_map(|r| rig.headers_found(slot, r))
            .filter(|&(_, dev)| dev != 0)
            .count();
    }
    assert!(secondary_segments > 0);
}

/// The real geometry of a master and one secondary, changed so that the
/// initiator's ring of slot 2 is half on the master and half on the
/// secondary (as a rule striping groups of `B` entries over the devices
/// does): the master's segment area ends in the middle of that ring, and
/// the secondary's starts with the rest. Only slot 2 may be used (slot 1's
/// connector ring now overlaps it).
fn spread(rig: &Rig) -> Geometry {
    let mut geo = rig.geo.clone();
    let n = geo.ring_entries;
    assert_eq!(geo.devices.len(), 2);
    assert_eq!(
        geo.ring_segment(2, Role::Initiator, 0),
        geo.devices[0].first_segment + n
    );
    geo.devices[0].seg_count = n + n / 2;
    geo.devices[1].first_segment = geo.devices[0].first_segment + n + n / 2;
    assert!(geo.devices[1].seg_count >= 2 * n);
    let first = geo.segment_location(geo.ring_segment(2, Role::Initiator, 0));
    let last = geo.segment_location(geo.ring_segment(2, Role::Initiator, n - 1));
    assert_eq!(first.map(|l| l.0), Some(0));
    assert_eq!(last.map(|l| l.0), Some(1));
    geo
}

/// One ring over two devices: batches are written ahead on both devices at
/// once and read ahead from both, and (sealed) still sealed in order.
#[test]
fn a_ring_spread_over_two_devices() {
    let rig = rig(1);
    let geo = spread(&rig);
    for sealed in [false, true] {
        let counts = both_ways(&rig, &geo, 2, sealed);
        for (role, want) in [(Role::Initiator, vec![0, 1]), (Role::Connector, vec![1])] {
            let found = {
                // (Rig::headers_found with the changed geometry.)
                let mut found = BTreeSet::new();
                for i in 0..geo.ring_entries {
                    let g = geo.ring_segment(2, role, i);
                    let (dev, off) = geo.segment_location(g).unwrap();
                    let mut buf = vec![0u8; LB];
                    rig.devs[dev]
                        .reopen()
                        .unwrap()
                        .read_at(off, &mut buf)
                        .unwrap();
                    let h =
                        SegHeader::decode(&buf[..SEG_HDR_SIZE], Expect::exact(rig.layout_id, g))
                            .unwrap_or_else(|e| panic!("{role} entry {i}: {e}"));
                    assert!(
                        rig.claimed(h.generation),
                        "{role} entry {i}: generation {}",
                        h.generation
                    );
                    found.insert(dev);
                }
                found
            };
            assert_eq!(found.into_iter().collect::<Vec<_>>(), want, "{role}");
        }
        assert!(counts[1].writes.load(Ordering::SeqCst) > 0);
    }
}

#[test]
fn a_port_without_a_secondary_it_needs_says_so_and_writes_nothing() {
    let rig = rig(1);
    let slot = (1..=2)
        .find(|&s| {
            Role::BOTH
                .iter()
                .any(|&r| rig.ring_devices(s, r).contains(&1))
        })
        .unwrap();
    let before: Vec<Vec<u8>> = rig
        .paths
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    for role in Role::BOTH {
        let mut host = rig.host();
        let mut port = RingPort::new(
            host.master.as_mut(),
            rig.geo.clone(),
            slot,
            role,
            rig.claim(),
            rig.layout_id,
        )
        .unwrap();
        assert_eq!(port.ring_devices(), vec![0, 1]);
        // Not given at all.
        let err = port.init_table().unwrap_err();
        assert!(
            matches!(err, Error::DeviceMissing { slot: s, device: 1 } if s == slot),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("slot {slot}"))
                && text.contains("secondary device 1")
                && text.contains("not open on this host"),
            "{text}"
        );
        let err = port.send(&mut &b"hello"[..], 5).unwrap_err();
        assert!(matches!(err, Error::DeviceMissing { .. }), "{err}");
        // Given as not found.
        port.set_devices(vec![None]).unwrap();
        let err = port.init_table().unwrap_err();
        assert!(matches!(err, Error::DeviceMissing { .. }), "{err}");
        // More devices than the layout has.
        let err = port.set_devices(vec![None, None]).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
    }
    let after: Vec<Vec<u8>> = rig
        .paths
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(before == after, "a refused port wrote to a device");
    // With the device, the same port starts.
    let mut host = rig.host();
    let mut port = RingPort::new(
        host.master.as_mut(),
        rig.geo.clone(),
        slot,
        Role::Initiator,
        rig.claim(),
        rig.layout_id,
    )
    .unwrap();
    port.set_devices(std::mem::take(&mut host.secondaries))
        .unwrap();
    port.init_table().unwrap();
}

/// A role of some slot whose ring has segments on device 1, and that slot.
fn on_secondary(rig: &Rig) -> (u32, Role) {
    (1..=2)
        .flat_map(|s| Role::BOTH.map(|r| (s, r)))
        .find(|&(s, r)| rig.ring_devices(s, r).contains(&1))
        .unwrap()
}

/// A handle on device `dev` whose I/O follows `plan`.
fn faulty(rig: &Rig, dev: usize, plan: FaultPlan) -> (Box<dyn BlockDevice>, Faults) {
    let d = FaultDevice::new(rig.devs[dev].reopen().unwrap(), plan).unwrap();
    let faults = d.faults().clone();
    (Box::new(d), faults)
}

#[test]
fn a_bit_flipped_writing_a_secondary_segment_is_nacked_and_resent() {
    let rig = rig(1);
    let (slot, from) = on_secondary(&rig);
    let segs = rig.ring_bytes_on(slot, from, 1);
    for sealed in [false, true] {
        let plan = FaultPlan::new(7).rule(
            Rule::new(Fault::Flip { bits: 1 })
                .writes()
                .bytes(segs.clone())
                .nth(3),
        );
        let (dev, faults) = faulty(&rig, 1, plan);
        let mut tx = rig.host();
        tx.secondaries[0] = Some(dev);
        // Every segment full: every byte of the ones written is checked.
        let msgs = [message(12 * rig.payload(sealed), 3)];
        let r = one_way(&rig, &rig.geo, slot, from, sealed, tx, rig.host(), &msgs);
        let resent = assert_delivered(&rig, &r, &msgs, sealed, Some(&faults));
        assert_eq!(
            faults.fired(0),
            1,
            "the fault never fired{}",
            show(Some(&faults))
        );
        assert!(resent >= 1, "nothing was sent again{}", show(Some(&faults)));
    }
}

/// A connection whose sender reads the receiver's table before the
/// receiver rewrote it for the connection sees what the slot's last
/// connection left there, and must take none of it for its own
/// acknowledgements. (With one generation for both connections, as the
/// tests once had, the second sender took the first one's acks of ring
/// entries 4-7 for its segments 5-8 and wrote over entries 0-3 before
/// the receiver had read them: the receiver waited for ever for segment
/// 1, and the sender either waited too or, when the stale acks covered
/// the rest, returned from `send` as if all were read.)
#[test]
fn a_new_connection_takes_no_acknowledgement_the_last_one_on_its_slot_left() {
    let rig = rig(1);
    let (slot, from) = on_secondary(&rig);
    // Twelve segments: the second lap ends at entry 3, so entries 4-7 of
    // the receiver's table keep the first lap's acknowledgements, of
    // sequence numbers 5-8: those of the next connection's first lap.
    let msgs = [message(12 * rig.payload(false), 6)];
    for late_receiver in [false, true] {
        let r = one_way_with(
            &rig,
            &rig.geo,
            slot,
            from,
            false,
            rig.host(),
            rig.host(),
            &msgs,
            late_receiver,
        );
        let resent = assert_delivered(&rig, &r, &msgs, false, None);
        assert_eq!(
            resent, 0,
            "late receiver {late_receiver}: segments sent again"
        );
    }
}

#[test]
fn a_bit_flipped_reading_a_secondary_segment_is_nacked_and_resent() {
    let rig = rig(2);
    for dev in [1, 2] {
        let (slot, from) = (1..=2)
            .flat_map(|s| Role::BOTH.map(|r| (s, r)))
            .find(|&(s, r)| rig.ring_devices(s, r).contains(&dev))
            .unwrap();
        let segs = rig.ring_bytes_on(slot, from, dev);
        let plan = FaultPlan::new(11).rule(
            Rule::new(Fault::Flip { bits: 1 })
                .reads()
                .bytes(segs)
                .nth(2),
        );
        let (faulty_dev, faults) = faulty(&rig, dev, plan);
        let mut rx = rig.host();
        rx.secondaries[dev - 1] = Some(faulty_dev);
        // Five laps of the ring: with the rings striped, each device holds
        // a batch group of every lap, so the third read there happens.
        let laps = 5 * rig.geo.ring_entries as usize;
        let msgs = [message(laps * rig.payload(false), 4), message(3, 5)];
        let r = one_way(&rig, &rig.geo, slot, from, false, rig.host(), rx, &msgs);
        // The damaged bytes never reach the receiver. A NAK and a resend
        // follow when the flipped read was the one the reader verified; a
        // flipped read-ahead that was discarded, or a one-LB poll of a
        // first segment, is simply read again: no resend is required.
        assert_delivered(&rig, &r, &msgs, false, Some(&faults));
        assert_eq!(faults.fired(0), 1, "device {dev}: the fault never fired");
    }
}
