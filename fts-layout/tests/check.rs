//! format_plan + check: a formatted control area has no problems, and every
//! corruption is reported against exactly the record it hit.
#![allow(clippy::unwrap_used)]

use fts_layout::check::{check_master, check_secondary, chunk_name, cmd_name, lease_name, Problem};
use fts_layout::*;
use proptest::prelude::*;
use uuid::Uuid;

const MIB: u64 = 1 << 20;

fn spec_for(p: &GeometryParams) -> FormatSpec {
    let geometry = Geometry::compute(p).unwrap();
    let n = geometry.devices.len();
    FormatSpec {
        geometry,
        layout_uuid: Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
        device_uuids: (0..n).map(|i| Uuid::from_u128(0xd0 + i as u128)).collect(),
        time_ns: 1_700_000_000_000_000_000,
        paths: (0..n)
            .map(|i| format!("/dev/sd{}", (b'b' + i as u8) as char))
            .collect(),
        hw_ids: (0..n).map(|i| format!("naa.600000000000000{i}")).collect(),
        lease_timeout_ms: DEFAULT_LEASE_TIMEOUT_MS,
        lock_timeout_ms: DEFAULT_LOCK_TIMEOUT_MS,
        io_timeout_ms: DEFAULT_IO_TIMEOUT_MS,
        heartbeat_ms: DEFAULT_HEARTBEAT_MS,
    }
}

/// 64 MiB master + two 16 MiB secondaries, 4 connections, 32-entry rings
/// (3 chunks per table, one LB each).
fn spec() -> FormatSpec {
    spec_for(&GeometryParams {
        master_bytes: 64 * MIB,
        secondary_bytes: vec![16 * MIB, 16 * MIB],
        block_size: 512,
        segment_bytes: 64 * 1024,
        max_connections: 4,
        ring_entries: 32,
        batch: 8,
    })
}

/// Applies the plan to in-memory devices: the master's control area, and
/// LB 0-7 of each secondary.
fn apply(spec: &FormatSpec) -> Vec<Vec<u8>> {
    let g = &spec.geometry;
    let mut devs: Vec<Vec<u8>> = (0..g.devices.len())
        .map(|d| {
            vec![
                0u8;
                if d == 0 {
                    g.control_end_lb() as usize * LB
                } else {
                    8 * LB
                }
            ]
        })
        .collect();
    for w in format_plan(spec) {
        let start = w.lb as usize * LB;
        if w.device == 0 && w.lb >= g.control_end_lb() {
            continue; // the backups at the end of the master: see `MasterBytes`
        }
        devs[w.device][start..start + w.data.len()].copy_from_slice(&w.data);
    }
    devs
}

fn master_bytes(spec: &FormatSpec) -> u64 {
    spec.geometry.devices[0].device_bytes
}

fn check(spec: &FormatSpec, control: &[u8]) -> Vec<Problem> {
    check_master(control, master_bytes(spec)).unwrap().2
}

fn flip(buf: &mut [u8], byte: usize, bit: u8) {
    buf[byte] ^= 1 << bit;
}

/// Writes a re-encoded 512-byte record at `lb`/`off`.
fn put(buf: &mut [u8], lb: u64, off: usize, rec: &[u8]) {
    let start = lb as usize * LB + off;
    buf[start..start + rec.len()].copy_from_slice(rec);
}

fn assert_one(problems: &[Problem], record: &str, lb: u64, what: &str) -> Problem {
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = problems[0].clone();
    assert_eq!(p.record, record, "{p}");
    assert_eq!(p.lb, lb, "{p}");
    assert!(p.what.contains(what), "{what:?} not in {p}");
    p
}

#[test]
fn clean_format_has_no_problems() {
    for s in [
        spec(),
        spec_for(&GeometryParams::new(256 * MIB).clone_with(|p| {
            p.max_connections = 2;
            p.ring_entries = 640;
        })),
        spec_for(&GeometryParams::new(4 * MIB).clone_with(|p| {
            p.max_connections = 1;
            p.ring_entries = 2;
            p.batch = 1;
            p.segment_bytes = 4096;
            p.block_size = 4096;
        })),
    ] {
        s.validate().unwrap();
        let devs = apply(&s);
        let (mcb, sdt, problems) = check_master(&devs[0], master_bytes(&s)).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(mcb, mcb_for_device(&s, 0));
        assert_eq!(sdt.len(), s.geometry.devices.len());
        assert_eq!(Geometry::from_mcb(&mcb, &sdt).unwrap(), s.geometry);
        assert_eq!(mcb.timeouts(), s.timeouts());
        assert_eq!(mcb.timeouts(), Timeouts::default());
        for (d, dev) in devs.iter().enumerate().skip(1) {
            let lb5 = &dev[5 * LB..6 * LB];
            assert!(check_secondary(lb5, &mcb, &sdt, d).is_empty());
            let copy = Mcb::decode(lb5).unwrap();
            assert_eq!(copy.blk5_id, DeviceRole::Secondary);
            assert_eq!(copy.blk5_dev_id, d as u32 + 1);
            assert_eq!(Geometry::from_mcb(&copy, &sdt).unwrap(), s.geometry);
            assert!(dev[4 * LB..5 * LB].iter().all(|&b| b == 0));
            assert!(dev[5 * LB + 512..8 * LB].iter().all(|&b| b == 0));
        }
    }
}

trait CloneWith: Sized + Clone {
    fn clone_with(&self, f: impl FnOnce(&mut Self)) -> Self {
        let mut c = self.clone();
        f(&mut c);
        c
    }
}
impl CloneWith for GeometryParams {}

#[test]
fn formatted_records_have_the_right_contents() {
    let s = spec();
    let g = &s.geometry;
    let devs = apply(&s);
    let m = &devs[0];
    let id = layout_id_of(&s.layout_uuid);
    let at = |lb: u64, off: usize| &m[lb as usize * LB + off..];
    for slot in 1..=g.max_connections {
        let e = PidEntry::decode(at(g.pid_entry_lb(slot), 0), Expect::exact(id, slot)).unwrap();
        assert_eq!(e, PidEntry::free(slot));
        for role in Role::BOTH {
            let l = Lease::decode(at(g.lease_lb(slot, role), 0), Expect::exact(id, slot)).unwrap();
            assert_eq!(l, Lease::formatted(role));
            let c =
                CmdArea::decode(at(g.lease_lb(slot, role), 512), Expect::exact(id, slot)).unwrap();
            assert_eq!(c, CmdArea::default());
            for entry in 0..g.ring_entries {
                let (chunk, i) = chunk_of_entry(entry);
                let off = chunk as usize * 512;
                let ch = PtrChunk::decode(
                    at(g.table_lb(slot, role) + (off / LB) as u64, off % LB),
                    Expect::exact(id, chunk),
                )
                .unwrap();
                assert_eq!(ch.generation, 0);
                assert_eq!(
                    ch.entries[i],
                    PtrEntry {
                        ptr_process_segment_ptr: g.ring_segment(slot, role, entry),
                        ptr_process_blk_read: g.seg_lbs as u16,
                        ..PtrEntry::default()
                    }
                );
            }
        }
    }
    let lock = LockRecord::decode(at(LOCK_LB, 0), Expect::exact(id, 0)).unwrap();
    assert_eq!(lock, LockRecord::default());
    let sdt1 = SdtEntry::decode(at(SDT_LB, 0), Expect::exact(id, 1)).unwrap();
    assert!(sdt1.is_master());
    assert_eq!(sdt1.sec_path, "/dev/sdb");
    assert_eq!(sdt1.sec_hw_id, "naa.6000000000000000");
    assert_eq!(sdt1.sec_dev_id, s.device_uuids[0]);
    let sdt3 = SdtEntry::decode(at(SDT_LB, 1024), Expect::exact(id, 3)).unwrap();
    assert_eq!(sdt3.sec_start_segment_number, g.devices[2].first_segment);
    assert!(at(SDT_LB, 1536)[..LB - 1536].iter().all(|&b| b == 0));
}

#[test]
fn plan_order_and_shape() {
    let s = spec_for(&GeometryParams {
        master_bytes: 1 << 40,
        secondary_bytes: vec![64 << 30],
        block_size: 4096,
        segment_bytes: MIB,
        max_connections: 64,
        ring_entries: 640,
        batch: 8,
    });
    let plan = format_plan(&s);
    let end = s.geometry.control_end_lb();
    // First: master LB 4-5 zeroed.
    assert_eq!((plan[0].device, plan[0].lb), (0, 4));
    assert!(plan[0].data.iter().all(|&b| b == 0) && plan[0].data.len() == 2 * LB);
    // Last: the master MCB.
    let last = plan.last().unwrap();
    assert_eq!((last.device, last.lb, last.data.len()), (0, 5, LB));
    assert_eq!(Mcb::decode(&last.data).unwrap(), mcb_for_device(&s, 0));
    // The backups of a v1.1 layout: zeroed second (before anything that
    // makes a layout), written second last, as a commit point.
    let g = &s.geometry;
    let backup_lb = g.sdt_backup_ptr;
    assert_eq!(backup_lb, (1u64 << 40) / LB as u64 - 2);
    assert_eq!(g.mcb_backup_ptr, backup_lb + 1);
    assert_eq!((plan[1].device, plan[1].lb), (0, backup_lb));
    assert!(plan[1].data.iter().all(|&b| b == 0) && plan[1].data.len() == 2 * LB);
    let backup = &plan[plan.len() - 2];
    assert_eq!(
        (backup.device, backup.lb, backup.data.len()),
        (0, backup_lb, 2 * LB)
    );
    assert!(backup.barrier && last.barrier);
    assert_eq!(&backup.data[LB..2 * LB], &last.data[..]);
    let lb7 = plan
        .iter()
        .find(|w| w.device == 0 && w.lb <= 7 && w.lb + (w.data.len() / LB) as u64 > 7)
        .unwrap();
    let off = (7 - lb7.lb) as usize * LB;
    assert_eq!(&backup.data[..LB], &lb7.data[off..off + LB]);
    // No other write is a commit point or holds a valid master MCB.
    for w in &plan[..plan.len() - 2] {
        assert!(!w.barrier);
        for k in 0..w.data.len() / LB {
            let m = Mcb::decode(&w.data[k * LB..]);
            assert!(
                !matches!(m, Ok(ref m) if m.blk5_id == DeviceRole::Master),
                "device {} LB {}",
                w.device,
                w.lb + k as u64
            );
        }
    }
    // Control area in few large writes covering LB 6..end exactly.
    let control: Vec<_> = plan
        .iter()
        .filter(|w| w.device == 0 && w.lb >= 6 && w.lb < end)
        .collect();
    assert_eq!(control.len() as u64, (end - 6).div_ceil(MAX_WRITE_LBS));
    let mut next = 6;
    for w in &control {
        assert_eq!(w.lb, next);
        assert_eq!(w.data.len() % LB, 0);
        assert!(w.data.len() as u64 <= MAX_WRITE_LBS * LB as u64);
        next += (w.data.len() / LB) as u64;
    }
    assert_eq!(next, end);
    // The secondary: LB 4-7 in one write, before the backups.
    let sec: Vec<_> = plan
        .iter()
        .enumerate()
        .filter(|(_, w)| w.device == 1)
        .collect();
    assert_eq!(sec.len(), 1);
    assert_eq!((sec[0].1.lb, sec[0].1.data.len()), (4, 4 * LB));
    assert!(sec[0].0 < plan.len() - 2);
    assert_eq!(format_writes(&s).count(), plan.len());
}

#[test]
fn spec_validation() {
    let s = spec();
    s.validate().unwrap();
    let bad = |f: &dyn Fn(&mut FormatSpec)| {
        let mut t = s.clone();
        f(&mut t);
        t.validate().unwrap_err()
    };
    bad(&|t| t.device_uuids.pop().map(drop).unwrap_or(()));
    bad(&|t| t.device_uuids[1] = t.device_uuids[0]);
    bad(&|t| t.device_uuids[2] = Uuid::nil());
    bad(&|t| t.layout_uuid = Uuid::nil());
    bad(&|t| t.paths[0] = "p".repeat(129));
    bad(&|t| t.hw_ids[0] = "a\0b".into());
    bad(&|t| t.heartbeat_ms = 0);
    bad(&|t| t.heartbeat_ms = t.lease_timeout_ms);
}

// ----------------------------------------------------------------------------
// Corruption: each record kind.

/// (record name, LB, byte offset in LB) of one record of each kind.
fn targets(s: &FormatSpec) -> Vec<(String, u64, usize)> {
    let g = &s.geometry;
    vec![
        ("lock record".into(), LOCK_LB, 0),
        ("Secondary Device Table entry 1".into(), SDT_LB, 0),
        ("Secondary Device Table entry 2".into(), SDT_LB, 512),
        ("Process Id Table entry 1".into(), g.pid_entry_lb(1), 0),
        ("Process Id Table entry 3".into(), g.pid_entry_lb(3), 0),
        (
            lease_name(3, Role::Initiator),
            g.lease_lb(3, Role::Initiator),
            0,
        ),
        (
            lease_name(2, Role::Connector),
            g.lease_lb(2, Role::Connector),
            0,
        ),
        (
            cmd_name(3, Role::Initiator),
            g.lease_lb(3, Role::Initiator),
            512,
        ),
        (
            cmd_name(4, Role::Connector),
            g.lease_lb(4, Role::Connector),
            512,
        ),
        (
            chunk_name(1, Role::Initiator, 0),
            g.table_lb(1, Role::Initiator),
            0,
        ),
        (
            chunk_name(2, Role::Connector, 1),
            g.table_lb(2, Role::Connector),
            512,
        ),
        (
            chunk_name(4, Role::Connector, 2),
            g.table_lb(4, Role::Connector),
            1024,
        ),
    ]
}

#[test]
fn record_names() {
    assert_eq!(lease_name(3, Role::Initiator), "lease 3 (initiator)");
    assert_eq!(cmd_name(3, Role::Connector), "command area 3 (InitM)");
    assert_eq!(cmd_name(3, Role::Initiator), "command area 3 (pro_dtd)");
    assert_eq!(
        chunk_name(2, Role::Connector, 1),
        "pointer table 2 (connector) chunk 1"
    );
}

#[test]
fn each_record_kind_bit_flip_is_named() {
    let s = spec();
    let clean = apply(&s).swap_remove(0);
    for (name, lb, off) in targets(&s) {
        for byte in [0, 13, 24, 100, 511] {
            let mut c = clean.clone();
            flip(&mut c, lb as usize * LB + off + byte, 3);
            let p = assert_one(&check(&s, &c), &name, lb, "");
            assert_eq!(p.offset_in_lb as usize, off, "{p}");
            assert_eq!(p.device, 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn any_bit_flip_in_any_record_is_named(t in 0usize..12, bit in 0usize..4096) {
        let s = spec();
        let mut c = apply(&s).swap_remove(0);
        let (name, lb, off) = targets(&s).swap_remove(t);
        flip(&mut c, lb as usize * LB + off + bit / 8, (bit % 8) as u8);
        let problems = check(&s, &c);
        prop_assert_eq!(problems.len(), 1, "{:#?}", problems);
        prop_assert_eq!(&problems[0].record, &name);
        prop_assert_eq!(problems[0].lb, lb);
    }

    #[test]
    fn check_master_never_panics_on_corrupt_control(flips in proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..8), 1..20)) {
        let s = spec();
        let mut c = apply(&s).swap_remove(0);
        let n = c.len();
        for (i, b) in flips {
            flip(&mut c, i.index(n), b);
        }
        let _ = check_master(&c, master_bytes(&s));
    }
}

#[test]
fn mcb_bit_flip_is_an_error_naming_the_mcb() {
    let s = spec();
    let clean = apply(&s).swap_remove(0);
    for bit in (0..512 * 8).step_by(7) {
        let mut c = clean.clone();
        flip(&mut c, 5 * LB + bit / 8, (bit % 8) as u8);
        let e = check_master(&c, master_bytes(&s)).unwrap_err();
        assert_eq!(e.kind(), Some(RecordKind::Mcb), "{e}");
        assert!(e.to_string().starts_with("Master Control Block"), "{e}");
    }
}

#[test]
fn stray_bytes_are_named() {
    let s = spec();
    let g = &s.geometry;
    let clean = apply(&s).swap_remove(0);
    let cases = [
        (4 * LB + 100, "LB 4", 4, 100),
        (5 * LB + 600, "Master Control Block", 5, 600),
        (
            SDT_LB as usize * LB + 3 * 512 + 7,
            "Secondary Device Table entry 4",
            SDT_LB,
            3 * 512 + 7,
        ),
        (
            g.pid_entry_lb(2) as usize * LB + 900,
            "Process Id Table entry 2",
            g.pid_entry_lb(2),
            900,
        ),
        (
            g.lease_lb(2, Role::Connector) as usize * LB + 2000,
            "Process Id Table entry 2 LB +2",
            g.lease_lb(2, Role::Connector),
            2000,
        ),
        (
            g.table_lb(3, Role::Initiator) as usize * LB + 3 * 512 + 1,
            "pointer table 3 (initiator)",
            g.table_lb(3, Role::Initiator),
            3 * 512 + 1,
        ),
    ];
    for (at, name, lb, off) in cases {
        let mut c = clean.clone();
        c[at] = 0x5a;
        let p = assert_one(&check(&s, &c), name, lb, "not zero");
        assert_eq!(p.offset_in_lb as usize, off, "{p}");
    }
}

#[test]
fn unformatted_and_truncated() {
    let s = spec();
    let c = apply(&s).swap_remove(0);
    let end = s.geometry.control_end_lb() as usize * LB;
    // All zero: unformatted.
    let e = check_master(&vec![0; end], 1 << 30).unwrap_err();
    assert_eq!(
        e,
        Error::Empty {
            kind: RecordKind::Mcb
        }
    );
    assert!(e.to_string().contains("unformatted"));
    // Too short for the MCB.
    for len in [0, 100, 5 * LB, 6 * LB - 1] {
        let e = check_master(&c[..len], 1 << 30).unwrap_err();
        assert_eq!(
            e,
            Error::Truncated {
                kind: RecordKind::Mcb,
                need: 6 * LB,
                got: len
            }
        );
    }
    // Long enough for the MCB: says how much the whole control area needs.
    for (len, kind) in [
        (6 * LB, RecordKind::Lock),
        (7 * LB + 10, RecordKind::Sdt),
        (9 * LB, RecordKind::Pid),
        (end - 1, RecordKind::PtrChunk),
    ] {
        let e = check_master(&c[..len], 1 << 30).unwrap_err();
        assert_eq!(
            e,
            Error::Truncated {
                kind,
                need: end,
                got: len
            }
        );
        assert!(e.to_string().contains(&end.to_string()), "{e}");
    }
    // Longer than needed is fine.
    let mut longer = c.clone();
    longer.extend_from_slice(&[0xff; LB]);
    assert!(check_master(&longer, master_bytes(&s))
        .unwrap()
        .2
        .is_empty());
}

#[test]
fn secondary_mcb_on_the_master_is_refused() {
    let s = spec();
    let devs = apply(&s);
    let mut c = devs[0].clone();
    c[5 * LB..6 * LB].copy_from_slice(&devs[1][5 * LB..6 * LB]);
    let e = check_master(&c, 1 << 30).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadField {
                kind: RecordKind::Mcb,
                field: "blk5_id",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn master_shrank() {
    let s = spec();
    let c = apply(&s).swap_remove(0);
    let p = check_master(&c, master_bytes(&s) - 1).unwrap().2;
    assert_one(&p, "Master Control Block", 5, "smaller");
}

// ----------------------------------------------------------------------------
// Records that pass their CRC but are inconsistent.

fn id(s: &FormatSpec) -> u64 {
    layout_id_of(&s.layout_uuid)
}

#[test]
fn mcb_fields_inconsistent_with_geometry() {
    let s = spec();
    let mut c = apply(&s).swap_remove(0);
    let mut m = mcb_for_device(&s, 0);
    m.blk5_tot_seg_num += 1;
    m.blk5_start_process_segment_ptr += 1;
    put(&mut c, 5, 0, &m.encode());
    let p = check(&s, &c);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p
        .iter()
        .all(|p| p.record == "Master Control Block" && p.lb == 5));
    assert_eq!(p[0].offset_in_lb, 80);
    assert!(p[0].what.contains("blk5_tot_seg_num"), "{}", p[0]);
    assert_eq!(p[1].offset_in_lb, 112);
    let e = Geometry::from_mcb(&m, &check_master(&c, 1 << 30).unwrap().1).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadField {
                field: "blk5_tot_seg_num",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn mcb_with_impossible_geometry() {
    let s = spec();
    let mut c = apply(&s).swap_remove(0);
    let mut m = mcb_for_device(&s, 0);
    m.blk5_ptr_seg_per_process = 33; // batch > ring
    put(&mut c, 5, 0, &m.encode());
    let p = check(&s, &c);
    assert_one(&p, "Master Control Block", 5, "batch 33");
    // Out-of-range connection count: the MCB is unusable.
    m.blk5_max_connections = 5000;
    put(&mut c, 5, 0, &m.encode());
    let e = check_master(&c, 1 << 30).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadField {
                kind: RecordKind::Mcb,
                field: "blk5_max_connections",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("max connections 5000"), "{e}");
    m.blk5_max_connections = 4;
    m.blk5_maxptr = 1;
    put(&mut c, 5, 0, &m.encode());
    let e = check_master(&c, 1 << 30).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadField {
                kind: RecordKind::Mcb,
                field: "blk5_maxptr",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn held_lock_needs_a_holder_name() {
    let s = spec();
    let mut c = apply(&s).swap_remove(0);
    let stamp = Stamp::new(id(&s), 0);
    let held = LockRecord {
        state: LOCK_HELD,
        generation: 3,
        holder_name: "host-a".into(),
        ..LockRecord::default()
    };
    put(&mut c, LOCK_LB, 0, &held.encode(stamp));
    assert!(check(&s, &c).is_empty());
    let nameless = LockRecord {
        holder_name: String::new(),
        ..held
    };
    put(&mut c, LOCK_LB, 0, &nameless.encode(stamp));
    let p = assert_one(
        &check(&s, &c),
        "lock record",
        LOCK_LB,
        "holder_name: name is empty",
    );
    assert_eq!(p.offset_in_lb, 72);
}

#[test]
fn sdt_entry_inconsistent() {
    let s = spec();
    let mut c = apply(&s).swap_remove(0);
    let mut e = SdtEntry::decode(&c[SDT_LB as usize * LB + 512..], Expect::any()).unwrap();
    e.sec_str_seg_ptr += 1;
    put(&mut c, SDT_LB, 512, &e.encode(Stamp::new(id(&s), 2)));
    let p = assert_one(
        &check(&s, &c),
        "Secondary Device Table entry 2",
        SDT_LB,
        "sec_str_seg_ptr",
    );
    assert_eq!(p.offset_in_lb, 512 + 40);
}

#[test]
fn stale_and_misplaced_records() {
    let s = spec();
    let g = s.geometry.clone();
    let clean = apply(&s).swap_remove(0);
    // A record from another format run.
    let mut c = clean.clone();
    put(
        &mut c,
        g.pid_entry_lb(2),
        0,
        &PidEntry::free(2).encode(Stamp::new(id(&s) ^ 1, 2)),
    );
    assert_one(
        &check(&s, &c),
        "Process Id Table entry 2",
        g.pid_entry_lb(2),
        "stale",
    );
    // A record for another slot.
    let mut c = clean.clone();
    put(
        &mut c,
        g.pid_entry_lb(2),
        0,
        &PidEntry::free(3).encode(Stamp::new(id(&s), 3)),
    );
    assert_one(
        &check(&s, &c),
        "Process Id Table entry 2",
        g.pid_entry_lb(2),
        "index 3 where 2",
    );
    // A lease of the wrong role.
    let mut c = clean.clone();
    let lb = g.lease_lb(1, Role::Initiator);
    put(
        &mut c,
        lb,
        0,
        &Lease::formatted(Role::Connector).encode(Stamp::new(id(&s), 1)),
    );
    assert_one(&check(&s, &c), "lease 1 (initiator)", lb, "role");
    // An all-zero PID entry is a free entry.
    let mut c = clean.clone();
    put(&mut c, g.pid_entry_lb(4), 0, &[0; 512]);
    assert!(check(&s, &c).is_empty());
    // An all-zero lease is not.
    let mut c = clean;
    put(&mut c, lb, 0, &[0; 512]);
    assert_one(&check(&s, &c), "lease 1 (initiator)", lb, "unformatted");
}

#[test]
fn pid_entry_flags_and_names() {
    let s = spec();
    let g = s.geometry.clone();
    let clean = apply(&s).swap_remove(0);
    let lb = g.pid_entry_lb(2);
    let stamp = Stamp::new(id(&s), 2);
    let mut c = clean.clone();
    let e = PidEntry {
        pro_flag_process: PRO_FLAG_PROCESSING,
        ..PidEntry::free(2)
    };
    put(&mut c, lb, 0, &e.encode(stamp));
    assert_one(
        &check(&s, &c),
        "Process Id Table entry 2",
        lb,
        "PROCESSING without ALLOCATED",
    );
    let mut c = clean.clone();
    let e = PidEntry {
        pro_flag_process: PRO_FLAG_ALLOCATED,
        pro_requestor: "init".into(),
        ..PidEntry::free(2)
    };
    put(&mut c, lb, 0, &e.encode(stamp));
    let p = assert_one(
        &check(&s, &c),
        "Process Id Table entry 2",
        lb,
        "pro_requestee: name is empty",
    );
    assert_eq!(p.offset_in_lb, 104);
    let mut c = clean;
    let e = PidEntry {
        pro_flag_process: PRO_FLAG_ALLOCATED | PRO_FLAG_PROCESSING,
        pro_requestor: "init".into(),
        pro_requestee: "conn".into(),
        pro_generation: 5,
        ..PidEntry::free(2)
    };
    put(&mut c, lb, 0, &e.encode(stamp));
    assert!(check(&s, &c).is_empty());
    // pro_process_id disagreeing with the slot.
    let e = PidEntry {
        pro_process_id: 9,
        ..e
    };
    put(&mut c, lb, 0, &e.encode(stamp));
    assert_one(
        &check(&s, &c),
        "Process Id Table entry 2",
        lb,
        "pro_process_id is 9",
    );
}

#[test]
fn generations_newer_than_the_pid_entry() {
    let s = spec();
    let g = s.geometry.clone();
    let mut c = apply(&s).swap_remove(0);
    let stamp = Stamp::new(id(&s), 3);
    // Connection generation 4 in entry 3: leases / tables at 4 are fine.
    let e = PidEntry {
        pro_flag_process: PRO_FLAG_ALLOCATED,
        pro_requestor: "a".into(),
        pro_requestee: "b".into(),
        pro_generation: 4,
        ..PidEntry::free(3)
    };
    put(&mut c, g.pid_entry_lb(3), 0, &e.encode(stamp));
    let lb = g.lease_lb(3, Role::Connector);
    put(
        &mut c,
        lb,
        0,
        &Lease {
            generation: 4,
            state: LEASE_ALIVE,
            ..Lease::formatted(Role::Connector)
        }
        .encode(stamp),
    );
    assert!(check(&s, &c).is_empty());
    put(
        &mut c,
        lb,
        0,
        &Lease {
            generation: 5,
            ..Lease::formatted(Role::Connector)
        }
        .encode(stamp),
    );
    assert_one(&check(&s, &c), "lease 3 (connector)", lb, "inconsistent");
    put(
        &mut c,
        lb,
        0,
        &Lease::formatted(Role::Connector).encode(stamp),
    );
    put(
        &mut c,
        lb,
        512,
        &CmdArea {
            generation: 5,
            data: vec![1, 2, 3],
        }
        .encode(stamp),
    );
    assert_one(&check(&s, &c), "command area 3 (InitM)", lb, "newer");
    put(&mut c, lb, 512, &CmdArea::default().encode(stamp));
    // A pointer-table chunk of a newer generation.
    let tlb = g.table_lb(3, Role::Initiator);
    let mut ch = PtrChunk::decode(&c[tlb as usize * LB + 512..], Expect::any()).unwrap();
    ch.generation = 9;
    put(&mut c, tlb, 512, &ch.encode(Stamp::new(id(&s), 1)));
    let p = assert_one(
        &check(&s, &c),
        "pointer table 3 (initiator) chunk 1",
        tlb,
        "pro_generation 4",
    );
    assert_eq!(p.offset_in_lb, 512 + 24);
}

#[test]
fn pointer_entries_checked() {
    let s = spec();
    let g = s.geometry.clone();
    let clean = apply(&s).swap_remove(0);
    let tlb = g.table_lb(2, Role::Connector);
    let stamp = Stamp::new(id(&s), 2);
    let chunk2 = || PtrChunk::decode(&clean[tlb as usize * LB + 1024..], Expect::any()).unwrap();
    let name = "pointer table 2 (connector) chunk 2";
    // Entry 31 (chunk 2 slot 1) points at another table's segment.
    let mut c = clean.clone();
    let mut ch = chunk2();
    ch.entries[1].ptr_process_segment_ptr = g.ring_segment(1, Role::Initiator, 0);
    put(&mut c, tlb, 1024, &ch.encode(stamp));
    let p = assert_one(
        &check(&s, &c),
        name,
        tlb,
        "entry 31: ptr_process_segment_ptr 1, the geometry maps it to",
    );
    assert_eq!(p.offset_in_lb, 1024 + 32 + 32);
    // Out of range.
    ch.entries[1].ptr_process_segment_ptr = g.tot_seg_num + 1;
    put(&mut c, tlb, 1024, &ch.encode(stamp));
    assert_one(&check(&s, &c), name, tlb, "out of range");
    // ptr_process_blk_read wrong.
    let mut c = clean.clone();
    let mut ch = chunk2();
    ch.entries[0].ptr_process_blk_read = 1;
    put(&mut c, tlb, 1024, &ch.encode(stamp));
    assert_one(&check(&s, &c), name, tlb, "ptr_process_blk_read 1");
    // Slot past the ring size (entry 32) not zero.
    let mut c = clean.clone();
    let mut ch = chunk2();
    ch.entries[2].ptr_process_block_seq = 1;
    put(&mut c, tlb, 1024, &ch.encode(stamp));
    assert_one(&check(&s, &c), name, tlb, "past the ring size 32");
    // The initiator's bit in the connector's table.
    let mut c = clean.clone();
    let mut ch = chunk2();
    ch.entries[0].ack_flg = FLG_INITIATOR;
    put(&mut c, tlb, 1024, &ch.encode(stamp));
    assert_one(&check(&s, &c), name, tlb, "initiator bit");
    // The owner's own bits are fine.
    ch.entries[0].ack_flg = FLG_CONNECTOR | FLG_NAK;
    ch.entries[0].ptr_process_segment_flg = FLG_CONNECTOR | FLG_LAST;
    put(&mut c, tlb, 1024, &ch.encode(stamp));
    assert!(check(&s, &c).is_empty());
}

// ----------------------------------------------------------------------------
// Secondaries.

#[test]
fn secondary_checks() {
    let s = spec();
    let devs = apply(&s);
    let (mcb, sdt, _) = check_master(&devs[0], master_bytes(&s)).unwrap();
    let lb5 = devs[2][5 * LB..6 * LB].to_vec();
    assert!(check_secondary(&lb5, &mcb, &sdt, 2).is_empty());
    // On the wrong device.
    let p = check_secondary(&lb5, &mcb, &sdt, 1);
    assert!(p.iter().any(|p| p.what.contains("blk5_dev_id")), "{p:#?}");
    assert!(p.iter().all(|p| p.device == 1 && p.lb == 5));
    // Not a secondary of this layout.
    assert_eq!(check_secondary(&lb5, &mcb, &sdt, 3).len(), 1);
    assert_eq!(check_secondary(&lb5, &mcb, &sdt, 0).len(), 1);
    // Corrupt.
    let mut bad = lb5.clone();
    bad[77] ^= 4;
    let p = check_secondary(&bad, &mcb, &sdt, 2);
    assert_eq!(p.len(), 1);
    assert!(p[0].what.contains("CRC mismatch"), "{}", p[0]);
    // Unformatted.
    let p = check_secondary(&[0; LB], &mcb, &sdt, 2);
    assert!(p[0].what.contains("unformatted"), "{}", p[0]);
    // From another layout.
    let mut other = s.clone();
    other.layout_uuid = Uuid::from_u128(42);
    let stale = mcb_for_device(&other, 2).encode();
    let p = check_secondary(&stale, &mcb, &sdt, 2);
    assert_eq!(p.len(), 1);
    assert!(p[0].what.contains("stale"), "{}", p[0]);
    // A field that differs from the master.
    let mut m = mcb_for_device(&s, 2);
    m.heartbeat_ms += 1;
    let p = check_secondary(&m.encode(), &mcb, &sdt, 2);
    assert_eq!(p.len(), 1);
    assert!(p[0].what.starts_with("heartbeat_ms"), "{}", p[0]);
    assert_eq!(p[0].offset_in_lb, 152);
}
