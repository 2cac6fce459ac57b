//! The backups of format v1.1 and the repair plan: a damaged primary MCB or
//! Secondary Device Table entry is read from its backup, every damage the
//! surviving copy or the geometry can rebuild is mended by the plan (a
//! damaged image with the plan applied checks clean), and what belongs to
//! a live connection is left alone.
#![allow(clippy::unwrap_used)]

use fts_layout::check::{
    backup_location, check_image, damage_warning, master_records, repair_plan, Backups, MasterBytes,
};
use fts_layout::*;
use proptest::prelude::*;
use uuid::Uuid;

const MIB: u64 = 1 << 20;
/// The checker's clock in these tests (ns since the epoch).
const NOW: u64 = 1_800_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;

fn params(minor_backups: bool) -> (GeometryParams, u32) {
    let p = GeometryParams {
        master_bytes: 8 * MIB + 3 * LB as u64 + 100,
        secondary_bytes: vec![],
        block_size: 512,
        segment_bytes: 16 * 1024,
        max_connections: 3,
        ring_entries: 32,
        batch: 4,
    };
    (p, if minor_backups { FORMAT_MINOR } else { 0 })
}

fn spec_with(minor: u32, secondaries: Vec<u64>) -> FormatSpec {
    let (mut p, _) = params(true);
    p.secondary_bytes = secondaries;
    let geometry = Geometry::compute_minor(&p, minor).unwrap();
    let n = geometry.devices.len();
    FormatSpec {
        geometry,
        layout_uuid: Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0001),
        device_uuids: (0..n).map(|i| Uuid::from_u128(0xd0 + i as u128)).collect(),
        time_ns: 1,
        paths: (0..n).map(|i| format!("/dev/x{i}")).collect(),
        hw_ids: vec![],
        lease_timeout_ms: 10_000,
        lock_timeout_ms: 10_000,
        io_timeout_ms: 30_000,
        heartbeat_ms: 1_000,
    }
}

fn spec() -> FormatSpec {
    spec_with(FORMAT_MINOR, vec![])
}

fn reseal(rec: &mut [u8]) {
    rec[12..16].fill(0);
    let crc = crc32c_record(&rec[..RECORD_SIZE], CRC_OFFSET);
    rec[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn problems(m: &MasterBytes) -> Vec<String> {
    check_image(&m.image(Some(NOW)))
        .unwrap()
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect()
}

/// Plans and applies the repairs (with `dead` confirmed dead), then
/// asserts the master checks clean; returns the plan's lines.
fn repair_clean(m: &mut MasterBytes, dead: &[u32]) -> Vec<String> {
    let plan = repair_plan(&m.image(Some(NOW)), dead).unwrap();
    assert!(plan.left.is_empty(), "{:#?}", plan.left);
    m.apply(&plan);
    let left = problems(m);
    assert!(left.is_empty(), "after {:#?}:\n{left:#?}", plan.repairs);
    // Mended means mended: nothing left to do.
    assert!(repair_plan(&m.image(Some(NOW)), dead)
        .unwrap()
        .repairs
        .is_empty());
    plan.repairs.into_iter().map(|r| r.what).collect()
}

fn flip(m: &mut MasterBytes, lb: u64, byte: usize, bit: u8) {
    m.lb_mut(lb).unwrap()[byte] ^= 1 << bit;
}

fn zero(m: &mut MasterBytes, lb: u64, from: usize, len: usize) {
    m.lb_mut(lb).unwrap()[from..from + len].fill(0);
}

/// LB 5 to 7, as `fts_session::Shared::open` reads them.
fn lb5_7(m: &MasterBytes) -> Vec<u8> {
    m.control[5 * LB..8 * LB].to_vec()
}

#[test]
fn v1_1_layout_has_backups_at_the_end_identical_to_the_primaries() {
    let s = spec();
    let g = &s.geometry;
    let lbs = g.devices[0].device_lbs;
    assert_eq!(lbs, 8 * 256 + 3);
    assert_eq!((g.sdt_backup_ptr, g.mcb_backup_ptr), (lbs - 2, lbs - 1));
    assert_eq!(backups_at_end(g.devices[0].device_bytes), Some(lbs - 2));
    // Data segments end before the backups.
    let m0 = &g.devices[0];
    assert!(m0.seg_start_lb + u64::from(m0.seg_count) * u64::from(g.seg_lbs) <= lbs - 2);
    let m = MasterBytes::formatted(&s);
    assert_eq!(m.backup_lb, lbs - 2);
    assert_eq!(m.lb(lbs - 2).unwrap(), m.lb(SDT_LB).unwrap());
    assert_eq!(m.lb(lbs - 1).unwrap(), m.lb(MCB_LB).unwrap());
    let mcb = Mcb::decode(m.lb(MCB_LB).unwrap()).unwrap();
    assert_eq!(mcb.blk5_minor_version, fts_layout::FORMAT_MINOR);
    assert_eq!((mcb.sdt_backup_ptr, mcb.mcb_backup_ptr), (lbs - 2, lbs - 1));
    let c = check_image(&m.image(Some(NOW))).unwrap();
    assert!(c.problems.is_empty(), "{:#?}", c.problems);
    assert!(c.damaged.is_empty() && c.dead.is_empty());
    assert_eq!(backup_location(&lb5_7(&m), 0), Some(lbs - 2));
    assert!(repair_plan(&m.image(Some(NOW)), &[])
        .unwrap()
        .repairs
        .is_empty());
}

#[test]
fn a_zeroed_mcb_is_read_from_its_backup_and_rewritten() {
    let mut m = MasterBytes::formatted(&spec());
    let good = m.clone();
    zero(&mut m, MCB_LB, 0, LB);
    // Without the backups the layout is unreadable, as in v1.0...
    assert!(matches!(
        master_records(&lb5_7(&m), None),
        Err(Error::Empty { .. })
    ));
    // ...with them it opens, naming the damage.
    let at = backup_location(&lb5_7(&m), m.device_bytes).unwrap();
    assert_eq!(at, m.backup_lb);
    let b = Backups {
        lb: at,
        bytes: &m.backups,
    };
    let r = master_records(&lb5_7(&m), Some(b)).unwrap();
    assert_eq!(r.mcb, Mcb::decode(good.lb(MCB_LB).unwrap()).unwrap());
    assert_eq!(r.damaged.len(), 1);
    let w = damage_warning("/dev/x", &r.damaged).unwrap();
    assert!(w.contains("Master Control Block (LB 5) is damaged"), "{w}");
    assert!(w.contains("check --repair"), "{w}");
    assert!(!w.contains('\n'));
    let p = problems(&m);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].contains("Master Control Block") && p[0].contains("backup"),
        "{p:?}"
    );
    let done = repair_clean(&mut m, &[]);
    assert_eq!(done.len(), 1, "{done:#?}");
    assert!(done[0].contains("rewritten from its backup"), "{done:?}");
    assert_eq!(m, good);
}

#[test]
fn a_damaged_sdt_entry_is_read_from_its_backup_and_rewritten() {
    let mut m = MasterBytes::formatted(&spec_with(FORMAT_MINOR, vec![4 * MIB]));
    let good = m.clone();
    flip(&mut m, SDT_LB, 512 + 60, 3); // entry 2
    let b = Backups {
        lb: m.backup_lb,
        bytes: &m.backups,
    };
    let r = master_records(&lb5_7(&m), Some(b)).unwrap();
    assert_eq!(r.sdt.len(), 2);
    assert_eq!(r.damaged[0].record, "Secondary Device Table entry 2");
    assert!(master_records(&lb5_7(&m), None).is_err());
    let p = problems(&m);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].contains("Secondary Device Table entry 2"), "{p:?}");
    repair_clean(&mut m, &[]);
    assert_eq!(m, good);
}

#[test]
fn damaged_backups_are_reported_and_rewritten_from_the_primaries() {
    let s = spec();
    let good = MasterBytes::formatted(&s);
    for (lb, byte) in [
        (s.geometry.mcb_backup_ptr, 100),
        (s.geometry.mcb_backup_ptr, 3000), // after the record
        (s.geometry.sdt_backup_ptr, 40),
        (s.geometry.sdt_backup_ptr, 1000), // an unused slot
    ] {
        let mut m = good.clone();
        flip(&mut m, lb, byte, 1);
        let p = problems(&m);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].contains("backup"), "{p:?}");
        assert!(p[0].contains(&format!("LB {lb} ")), "{p:?}");
        repair_clean(&mut m, &[]);
        assert_eq!(m, good);
    }
}

#[test]
fn both_copies_damaged_is_an_error_or_left() {
    let s = spec();
    let mut m = MasterBytes::formatted(&s);
    zero(&mut m, MCB_LB, 0, LB);
    flip(&mut m, s.geometry.mcb_backup_ptr, 90, 0);
    assert!(matches!(
        check_image(&m.image(None)),
        Err(Error::Empty { .. })
    ));
    let mut m = MasterBytes::formatted(&s);
    flip(&mut m, SDT_LB, 70, 0);
    flip(&mut m, s.geometry.sdt_backup_ptr, 70, 0);
    let plan = repair_plan(&m.image(None), &[]).unwrap();
    assert!(plan.repairs.is_empty(), "{plan:#?}");
    assert!(plan.left[0].contains("both copies"), "{plan:#?}");
    assert!(plan.left[1].contains("geometry is unknown"), "{plan:#?}");
}

#[test]
fn backups_at_another_place_are_not_used() {
    let mut m = MasterBytes::formatted(&spec());
    zero(&mut m, MCB_LB, 0, LB);
    let b = Backups {
        lb: m.backup_lb - 1,
        bytes: &m.backups,
    };
    assert!(master_records(&lb5_7(&m), Some(b)).is_err());
}

#[test]
fn v1_0_layouts_still_read_check_and_repair() {
    let s = spec_with(0, vec![]);
    assert!(!s.geometry.has_backups());
    assert_eq!(s.geometry.sdt_backup_ptr, 0);
    let m = MasterBytes::formatted(&s);
    assert!(m.backups.is_empty());
    let mcb = Mcb::decode(m.lb(MCB_LB).unwrap()).unwrap();
    assert_eq!(mcb.blk5_minor_version, 0);
    assert_eq!(backup_location(&lb5_7(&m), m.device_bytes), None);
    assert!(problems(&m).is_empty());
    // v1.0 puts data segments up to the end of the device; v1.1 keeps two
    // LBs for the backups.
    let v11 = spec().geometry;
    assert!(s.geometry.tot_seg_num >= v11.tot_seg_num);
    // Damage the backups cannot mend is an error; the rest is repaired.
    let mut bad = m.clone();
    zero(&mut bad, MCB_LB, 0, 512);
    assert!(check_image(&bad.image(None)).is_err());
    let mut bad = m.clone();
    let t = s.geometry.table_lb(2, Role::Connector);
    zero(&mut bad, t, 0, 512);
    repair_clean(&mut bad, &[]);
    assert_eq!(bad, m);
}

#[test]
fn a_flipped_bit_in_an_idle_entry_frees_it_with_a_newer_generation() {
    let s = spec();
    let g = &s.geometry;
    let mut m = MasterBytes::formatted(&s);
    // The slot was used up to generation 6: its leases say so.
    let stamp = Stamp::new(layout_id_of(&s.layout_uuid), 2);
    let mut e = PidEntry::free(2);
    e.pro_generation = 6;
    let mut lb = vec![0u8; LB];
    lb[..RECORD_SIZE].copy_from_slice(&e.encode(stamp));
    m.write(g.pid_entry_lb(2), &lb);
    for role in Role::BOTH {
        let l = Lease {
            state: LEASE_CLOSED,
            generation: 6,
            counter: u64::MAX,
            ..Lease::formatted(role)
        };
        m.lb_mut(g.lease_lb(2, role)).unwrap()[..RECORD_SIZE].copy_from_slice(&l.encode(stamp));
    }
    assert!(problems(&m).is_empty());
    flip(&mut m, g.pid_entry_lb(2), 200, 6);
    let p = problems(&m);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].contains("Process Id Table entry 2"), "{p:?}");
    let done = repair_clean(&mut m, &[]);
    assert_eq!(done.len(), 1, "{done:#?}");
    assert!(done[0].contains("freed (generation 7)"), "{done:?}");
    let e = PidEntry::decode(m.lb(g.pid_entry_lb(2)).unwrap(), Expect::stamp(stamp)).unwrap();
    assert!(e.is_free());
    assert_eq!(e.pro_generation, 7);
}

/// An allocated entry naming `requestee` as raw bytes, resealed so only
/// the name is wrong.
fn forged(s: &FormatSpec, slot: u32, requestee: &[u8]) -> Vec<u8> {
    let stamp = Stamp::new(layout_id_of(&s.layout_uuid), slot);
    let e = PidEntry {
        pro_flag_process: PRO_FLAG_ALLOCATED | PRO_FLAG_PROCESSING,
        pro_generation: 3,
        pro_requestor: "cli".into(),
        pro_requestee: "srv".into(),
        ..PidEntry::free(slot)
    };
    let mut lb = vec![0u8; LB];
    lb[..RECORD_SIZE].copy_from_slice(&e.encode(stamp));
    lb[104..136].fill(0);
    lb[104..104 + requestee.len()].copy_from_slice(requestee);
    reseal(&mut lb);
    lb
}

#[test]
fn forged_requestees_are_reported_and_freed() {
    let s = spec();
    let g = &s.geometry;
    for bad in [&b"srv\0../x"[..], &b"\xff\xfesrv"[..]] {
        let mut m = MasterBytes::formatted(&s);
        m.write(g.pid_entry_lb(3), &forged(&s, 3, bad));
        let p = problems(&m);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].contains("Process Id Table entry 3"), "{p:?}");
        assert!(p[0].contains("pro_requestee"), "{p:?}");
        let done = repair_clean(&mut m, &[]);
        assert_eq!(done.len(), 1, "{done:#?}");
        assert!(done[0].contains("freed (generation 4)"), "{done:?}");
    }
}

#[test]
fn damaged_records_of_a_free_entry_are_rewritten_as_formatted() {
    let s = spec();
    let g = &s.geometry;
    let good = MasterBytes::formatted(&s);
    let cases = [
        (g.table_lb(1, Role::Initiator), 0, 512), // a zeroed chunk
        (g.table_lb(3, Role::Connector), 512 + 40, 1),
        (g.lease_lb(1, Role::Connector), 30, 1),
        (g.lease_lb(2, Role::Initiator), 512 + 100, 1), // command area
        (g.lease_lb(2, Role::Initiator), 2000, 1),      // after it
        (LOCK_LB, 40, 1),
        (ZERO_LB, 7, 1),
    ];
    for (lb, at, len) in cases {
        let mut m = good.clone();
        if len == 1 {
            flip(&mut m, lb, at, 2);
        } else {
            zero(&mut m, lb, at, len);
        }
        assert_eq!(problems(&m).len(), 1, "LB {lb}: {:#?}", problems(&m));
        let done = repair_clean(&mut m, &[]);
        assert_eq!(done.len(), 1, "{done:#?}");
        assert_eq!(m, good, "LB {lb}");
    }
}

/// Entry `slot` as a live or dead connection cli -> srv of generation 5,
/// with the given leases' timestamps (`None`: closed).
fn connected(m: &mut MasterBytes, s: &FormatSpec, slot: u32, beats: [Option<u64>; 2]) {
    let g = &s.geometry;
    let stamp = Stamp::new(layout_id_of(&s.layout_uuid), slot);
    let e = PidEntry {
        pro_flag_process: PRO_FLAG_ALLOCATED | PRO_FLAG_PROCESSING,
        pro_generation: 5,
        pro_alloc_time: NOW - 60 * SEC,
        pro_accept_time: NOW - 59 * SEC,
        pro_requestor: "cli".into(),
        pro_requestee: "srv".into(),
        ..PidEntry::free(slot)
    };
    m.lb_mut(g.pid_entry_lb(slot)).unwrap()[..RECORD_SIZE].copy_from_slice(&e.encode(stamp));
    for (role, beat) in Role::BOTH.into_iter().zip(beats) {
        let l = Lease {
            role,
            state: if beat.is_some() {
                LEASE_ALIVE
            } else {
                LEASE_CLOSED
            },
            generation: 5,
            counter: 9,
            timestamp: beat.unwrap_or(NOW - 30 * SEC),
            host: Uuid::nil(),
            pid: 1,
        };
        m.lb_mut(g.lease_lb(slot, role)).unwrap()[..RECORD_SIZE].copy_from_slice(&l.encode(stamp));
    }
}

#[test]
fn entries_whose_leases_show_no_life_are_reported_and_freed_when_confirmed() {
    let s = spec();
    let g = &s.geometry;
    let mut m = MasterBytes::formatted(&s);
    // Slot 1: live (the connector beat 2 s ago). Slot 2: the server closed,
    // the client's last beat was 40 s ago. Slot 3: both closed.
    connected(&mut m, &s, 1, [None, Some(NOW - 2 * SEC)]);
    connected(&mut m, &s, 2, [Some(NOW - 40 * SEC), None]);
    connected(&mut m, &s, 3, [None, None]);
    let c = check_image(&m.image(Some(NOW))).unwrap();
    let dead: Vec<u32> = c.dead.iter().map(|d| d.slot).collect();
    assert_eq!(dead, [2, 3], "{:#?}", c.problems);
    assert_eq!(c.problems.len(), 2, "{:#?}", c.problems);
    let p = c.problems[0].to_string();
    assert!(p.contains("Process Id Table entry 2"), "{p}");
    assert!(
        p.contains("40.0 s ago") && p.contains("writers' clocks"),
        "{p}"
    );
    assert!(p.contains("--repair"), "{p}");
    // Without a clock nothing is judged; a read-only check of a fresh claim
    // is not judged either.
    assert!(check_image(&m.image(None)).unwrap().problems.is_empty());
    let young = NOW - 60 * SEC + 5 * SEC;
    assert!(check_image(&m.image(Some(young))).unwrap().dead.len() <= 1);
    // A writer whose clock runs ahead is not judged dead.
    connected(&mut m, &s, 2, [Some(NOW + 600 * SEC), None]);
    assert_eq!(check_image(&m.image(Some(NOW))).unwrap().dead.len(), 1);
    connected(&mut m, &s, 2, [Some(NOW - 40 * SEC), None]);
    // Not confirmed: nothing is freed. Confirmed: freed, generation 6.
    let plan = repair_plan(&m.image(Some(NOW)), &[]).unwrap();
    assert!(plan.repairs.is_empty(), "{plan:#?}");
    let done = repair_clean(&mut m, &[2, 3]);
    assert_eq!(done.len(), 2, "{done:#?}");
    assert!(done[0].contains("entry 2") && done[0].contains("dead connection cli -> srv"));
    let e = PidEntry::decode(m.lb(g.pid_entry_lb(2)).unwrap(), Expect::any()).unwrap();
    assert!(e.is_free());
    assert_eq!(e.pro_generation, 6);
    // The live one is untouched.
    let e = PidEntry::decode(m.lb(g.pid_entry_lb(1)).unwrap(), Expect::any()).unwrap();
    assert!(e.is_processing());
}

#[test]
fn records_of_a_live_connection_are_left_to_it() {
    let s = spec();
    let g = &s.geometry;
    let mut m = MasterBytes::formatted(&s);
    connected(&mut m, &s, 1, [Some(NOW - SEC), Some(NOW - SEC)]);
    let t = g.table_lb(1, Role::Initiator);
    zero(&mut m, t, 0, 512);
    let plan = repair_plan(&m.image(Some(NOW)), &[]).unwrap();
    assert!(plan.repairs.is_empty(), "{plan:#?}");
    assert_eq!(plan.left.len(), 1, "{plan:#?}");
    assert!(plan.left[0].contains("live connection"), "{plan:#?}");
    // Once it is confirmed dead, the entry is freed and the chunk rewritten,
    // records first, entry last.
    let plan = repair_plan(&m.image(Some(NOW)), &[1]).unwrap();
    let lbs: Vec<u64> = plan.repairs.iter().map(|r| r.lb).collect();
    assert_eq!(lbs, [t, g.pid_entry_lb(1)]);
    assert!(plan.repairs.iter().all(|r| r.slot == Some(1)));
}

#[test]
fn layout_repairs_come_first_and_the_mcb_last_of_them() {
    let s = spec();
    let g = &s.geometry;
    let mut m = MasterBytes::formatted(&s);
    zero(&mut m, MCB_LB, 0, LB);
    flip(&mut m, SDT_LB, 33, 0);
    flip(&mut m, g.table_lb(2, Role::Initiator), 50, 0);
    let plan = repair_plan(&m.image(None), &[]).unwrap();
    let lbs: Vec<(u64, Option<u32>)> = plan.repairs.iter().map(|r| (r.lb, r.slot)).collect();
    assert_eq!(
        lbs,
        [
            (SDT_LB, None),
            (MCB_LB, None),
            (g.table_lb(2, Role::Initiator), Some(2))
        ]
    );
    assert_eq!(plan.layout().count(), 2);
    assert_eq!(plan.table().count(), 1);
    repair_clean(&mut m, &[]);
}

/// A region of the image to damage: (LB, first byte, length).
fn regions(s: &FormatSpec) -> Vec<(u64, usize, usize)> {
    let g = &s.geometry;
    let mut v = vec![
        (ZERO_LB, 0, LB),
        (MCB_LB, 0, LB),
        (LOCK_LB, 0, LB),
        (SDT_LB, 0, LB),
        (g.sdt_backup_ptr, 0, LB),
        (g.mcb_backup_ptr, 0, LB),
    ];
    for lb in g.pit_ptr..g.control_end_lb() {
        v.push((lb, 0, LB));
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any damage that leaves one copy of the MCB and of each Secondary
    /// Device Table entry is mended by one plan: the image then checks
    /// clean, every entry is free and none is older than before.
    #[test]
    fn any_damage_with_a_surviving_copy_is_mended(
        hits in proptest::collection::vec(
            (any::<proptest::sample::Index>(), any::<u16>(), 0u8..3, any::<u8>()),
            1..12,
        ),
        secondary in any::<bool>(),
    ) {
        let s = spec_with(FORMAT_MINOR, if secondary { vec![4 * MIB] } else { vec![] });
        let g = &s.geometry;
        let good = MasterBytes::formatted(&s);
        let mut m = good.clone();
        let regions = regions(&s);
        for (which, at, how, val) in &hits {
            let (lb, from, len) = regions[which.index(regions.len())];
            // Never both copies of the MCB or of the Secondary Device Table.
            let twin = match lb {
                l if l == MCB_LB => Some(g.mcb_backup_ptr),
                l if l == SDT_LB => Some(g.sdt_backup_ptr),
                l if l == g.mcb_backup_ptr => Some(MCB_LB),
                l if l == g.sdt_backup_ptr => Some(SDT_LB),
                _ => None,
            };
            if twin.is_some_and(|t| m.lb(t) != good.lb(t)) {
                continue;
            }
            let off = from + usize::from(*at) % len;
            let buf = m.lb_mut(lb).unwrap();
            match how {
                0 => buf[off] ^= 1 << (val % 8),
                1 => {
                    let rec = off / RECORD_SIZE * RECORD_SIZE;
                    buf[rec..rec + RECORD_SIZE].fill(0);
                }
                _ => buf[off] = buf[off].wrapping_add(val | 1),
            }
        }
        let plan = repair_plan(&m.image(Some(NOW)), &[]).unwrap();
        prop_assert!(plan.left.is_empty(), "{:#?}", plan.left);
        m.apply(&plan);
        let c = check_image(&m.image(Some(NOW))).unwrap();
        prop_assert!(c.problems.is_empty(), "{:#?}\nafter {:#?}", c.problems, plan.repairs);
        for slot in 1..=g.max_connections {
            let e = PidEntry::decode(m.lb(g.pid_entry_lb(slot)).unwrap(), Expect::any());
            prop_assert!(e.map(|e| e.is_free()).unwrap_or(true));
        }
        prop_assert_eq!(m.lb(MCB_LB), good.lb(MCB_LB));
        prop_assert_eq!(m.lb(SDT_LB), good.lb(SDT_LB));
        prop_assert_eq!(&m.backups, &good.backups);
    }
}
