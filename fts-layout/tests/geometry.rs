//! Geometry rules (FORMAT.md "Geometry rules").
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use fts_layout::*;
use rstest::rstest;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

fn params(master: u64, seg: u64, c: u32, n: u32, b: u32) -> GeometryParams {
    GeometryParams {
        master_bytes: master,
        secondary_bytes: vec![],
        block_size: 512,
        segment_bytes: seg,
        max_connections: c,
        ring_entries: n,
        batch: b,
    }
}

/// No two extents overlap (pairwise), every extent is inside its device, and
/// every ring segment is in range, distinct, and inside the data area.
fn assert_sound(g: &Geometry) {
    let ext = g.extents();
    for (i, a) in ext.iter().enumerate() {
        assert!(a.lbs > 0, "{a:?}");
        assert!(
            a.end_lb() <= g.devices[a.device].device_lbs,
            "{a:?} past the end"
        );
        for b in &ext[i + 1..] {
            assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
        }
    }
    let mut seen = HashSet::new();
    for slot in 1..=g.max_connections {
        for role in Role::BOTH {
            for e in 0..g.ring_entries {
                let s = g.ring_segment(slot, role, e);
                assert!((1..=g.tot_seg_num).contains(&s), "segment {s}");
                assert!(seen.insert(s), "segment {s} used twice");
                let (dev, off) = g.segment_location(s).unwrap();
                let d = &g.devices[dev];
                assert_eq!(off % LB as u64, 0);
                assert!(off / LB as u64 >= d.seg_start_lb);
                assert!(off / LB as u64 + u64::from(g.seg_lbs) <= d.device_lbs);
                if dev == 0 {
                    assert!(off / LB as u64 >= g.control_end_lb());
                }
            }
            // The entries of a batch group are contiguous on one device (a
            // whole ring before v1.3 or on one device).
            let mut start = 0;
            while start < g.ring_entries {
                let end = g.group_end(start);
                assert!(
                    end > start && end - start <= g.batch.max(1),
                    "{start}..{end}"
                );
                let at = |e| g.segment_location(g.ring_segment(slot, role, e)).unwrap();
                let first = at(start);
                let last = at(end - 1);
                assert_eq!(first.0, last.0);
                assert_eq!(
                    last.1 - first.1,
                    u64::from(end - 1 - start) * u64::from(g.seg_lbs) * LB as u64
                );
                start = end;
            }
            if !g.is_striped() {
                let first = g.segment_location(g.ring_segment(slot, role, 0)).unwrap();
                let last = g
                    .segment_location(g.ring_segment(slot, role, g.ring_entries - 1))
                    .unwrap();
                assert_eq!(first.0, last.0);
                assert_eq!(
                    last.1 - first.1,
                    u64::from(g.ring_entries - 1) * u64::from(g.seg_lbs) * LB as u64
                );
            } else {
                // Consecutive groups are on consecutive devices.
                for e in (g.batch..g.ring_entries).step_by(g.batch as usize) {
                    let dev = |e| g.segment_location(g.ring_segment(slot, role, e)).unwrap().0;
                    assert_eq!(dev(e), (dev(e - g.batch) + 1) % g.devices.len());
                }
            }
        }
    }
    let total: u64 = g.devices.iter().map(|d| u64::from(d.seg_count)).sum();
    assert_eq!(total, u64::from(g.tot_seg_num));
    let mut next = 1;
    for d in &g.devices {
        assert_eq!(d.first_segment, next);
        next += d.seg_count;
    }
}

#[test]
fn one_tib_1mib_segments_64_connections() {
    let g = Geometry::compute(&params(TIB, MIB, 64, 640, 8)).unwrap();
    assert_eq!(g.seg_lbs, 256);
    assert_eq!(g.chunks_per_table, 43);
    assert_eq!(g.ptr_table_lbs, 6);
    assert_eq!(g.pit_ptr, 8);
    assert_eq!(g.ptr_start, 8 + 3 * 64);
    assert_eq!(g.control_end_lb(), 200 + 128 * 6);
    // Data start aligned to 1 MiB (256 LBs) after LB 968.
    assert_eq!(g.devices[0].seg_start_lb, 1024);
    // The last two LBs hold the backups (v1.1).
    assert_eq!(
        g.tot_seg_num,
        ((TIB / LB as u64 - 1024 - BACKUP_LBS) / 256) as u32
    );
    assert_eq!(g.sdt_backup_ptr, TIB / LB as u64 - 2);
    assert_eq!(g.mcb_backup_ptr, TIB / LB as u64 - 1);
    // v1.0 had data segments to the very end.
    let v10 = Geometry::compute_minor(&params(TIB, MIB, 64, 640, 8), 0).unwrap();
    assert_eq!(v10.tot_seg_num, ((TIB / LB as u64 - 1024) / 256) as u32);
    assert_eq!(
        (v10.minor_version, v10.sdt_backup_ptr, v10.mcb_backup_ptr),
        (0, 0, 0)
    );
    assert_sound(&v10);
    assert_eq!(g.payload_capacity(), (MIB - 64) as usize);
    assert_eq!(g.table_bytes(), 6 * LB);
    assert_sound(&g);
}

#[test]
fn sixteen_mib_small_layout_fits() {
    let g = Geometry::compute(&params(16 * MIB, 64 * 1024, 2, 32, 8)).unwrap();
    assert_eq!(g.ptr_table_lbs, 1);
    assert_eq!(g.control_end_lb(), 8 + 6 + 4);
    assert_eq!(g.devices[0].seg_start_lb, 32);
    assert_eq!(g.tot_seg_num, (4096 - 32 - 2) / 16);
    assert_sound(&g);
}

#[test]
fn placement_of_control_structures() {
    let g = Geometry::compute(&params(2 * GIB, 64 * 1024, 16, 640, 8)).unwrap();
    assert_eq!(g.pid_entry_lb(1), 8);
    assert_eq!(g.pid_entry_lb(3), 14);
    assert_eq!(g.lease_lb(3, Role::Initiator), 15);
    assert_eq!(g.lease_lb(3, Role::Connector), 16);
    assert_eq!(g.ptr_start, 56);
    assert_eq!(g.table_lb(1, Role::Initiator), 56);
    assert_eq!(g.table_lb(1, Role::Connector), 62);
    assert_eq!(g.table_lb(2, Role::Initiator), 68);
    assert_eq!(g.control_end_lb(), 56 + 32 * 6);
    // Table t owns segments t*N+1 .. (t+1)*N on the master.
    assert_eq!(g.ring_segment(1, Role::Initiator, 0), 1);
    assert_eq!(g.ring_segment(1, Role::Connector, 0), 641);
    assert_eq!(g.ring_segment(2, Role::Initiator, 639), 3 * 640);
    // Out of range gives 0, never a panic.
    assert_eq!(g.ring_segment(0, Role::Initiator, 0), 0);
    assert_eq!(g.ring_segment(17, Role::Initiator, 0), 0);
    assert_eq!(g.ring_segment(1, Role::Initiator, 640), 0);
    assert_eq!(g.segment_location(0), None);
    assert_eq!(g.segment_location(g.tot_seg_num + 1), None);
    assert_eq!(
        g.segment_location(1),
        Some((0, g.devices[0].seg_start_lb * LB as u64))
    );
    assert_eq!(chunk_of_entry(0), (0, 0));
    assert_eq!(chunk_of_entry(14), (0, 14));
    assert_eq!(chunk_of_entry(15), (1, 0));
    assert_eq!(chunk_of_entry(639), (42, 9));
    assert_sound(&g);
}

#[rstest]
#[case::ring_2(2, 1, 1)]
#[case::ring_15(15, 1, 1)]
#[case::ring_16(16, 2, 1)]
#[case::ring_120(120, 8, 1)]
#[case::ring_121(121, 9, 2)]
#[case::ring_640(640, 43, 6)]
#[case::ring_65535(65_535, 4369, 547)]
fn pointer_table_size(#[case] n: u32, #[case] chunks: u32, #[case] lbs: u32) {
    let g = Geometry::compute(&params(64 * GIB, 4096, 1, n, 1)).unwrap();
    assert_eq!(g.chunks_per_table, chunks);
    assert_eq!(g.ptr_table_lbs, lbs);
}

#[rstest]
#[case::block_512(512, true)]
#[case::block_1024(1024, true)]
#[case::block_2048(2048, true)]
#[case::block_4096(4096, true)]
#[case::block_256(256, false)]
#[case::block_8192(8192, false)]
#[case::block_1000(1000, false)]
#[case::block_0(0, false)]
fn block_sizes(#[case] bs: u32, #[case] ok: bool) {
    let mut p = params(GIB, 64 * 1024, 2, 32, 8);
    p.block_size = bs;
    let r = Geometry::compute(&p);
    assert_eq!(r.is_ok(), ok, "{r:?}");
    if !ok {
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains(&bs.to_string()) && msg.contains("power of two"),
            "{msg}"
        );
    }
}

#[rstest]
#[case::seg_4k(4096, true)]
#[case::seg_12k(12 * 1024, true)]
#[case::seg_64k(64 * 1024, true)]
#[case::seg_1m(MIB, true)]
#[case::seg_max(65_535 * 4096, true)]
#[case::seg_over(65_536 * 4096, false)]
#[case::seg_0(0, false)]
#[case::seg_1000(1000, false)]
#[case::seg_6000(6000, false)]
fn segment_sizes(#[case] seg: u64, #[case] ok: bool) {
    let r = Geometry::compute(&params(64 * GIB, seg, 1, 2, 1));
    assert_eq!(r.is_ok(), ok, "{r:?}");
    match r {
        Ok(g) => assert_sound(&g),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&seg.to_string()) && msg.contains("multiple of 4096"),
                "{msg}"
            );
        }
    }
}

#[rstest]
#[case::c0(0, 640, 8, "max connections 0")]
#[case::c4097(4097, 640, 8, "max connections 4097")]
#[case::ring_1(1, 1, 1, "ring entries 1 ")]
#[case::ring_0(1, 0, 1, "ring entries 0 ")]
#[case::ring_big(1, 65_536, 1, "ring entries 65536")]
#[case::batch_0(1, 640, 0, "batch 0 ")]
#[case::batch_gt_ring(1, 32, 33, "batch 33 is out of range: it must be 1..=32")]
fn tunables_refused(#[case] c: u32, #[case] n: u32, #[case] b: u32, #[case] msg: &str) {
    let e = Geometry::compute(&params(64 * GIB, 64 * 1024, c, n, b)).unwrap_err();
    assert!(e.to_string().contains(msg), "{e}");
}

#[rstest]
#[case::c1(1)]
#[case::c4096(4096)]
fn connection_limits_allowed(#[case] c: u32) {
    let g = Geometry::compute(&params(64 * GIB, 4096, c, 2, 2)).unwrap();
    assert_eq!(g.max_connections, c);
}

#[test]
fn sixteen_mib_default_connections_refused() {
    let e = Geometry::compute(&params(16 * MIB, 64 * 1024, 16, 640, 8)).unwrap_err();
    let GeometryError::NotEnoughSegments {
        device,
        need,
        fit,
        tables,
        ..
    } = e.clone()
    else {
        panic!("{e:?}");
    };
    assert_eq!((device, tables, need), (0, 32, 32 * 640));
    assert_eq!(fit, (4096 - 256 - 2) / 16);
    let msg = e.to_string();
    for n in [
        "16777216",
        "20480",
        "239",
        "65536",
        "32 pointer tables",
        "640 segments each",
        "fewer connections",
    ] {
        assert!(msg.contains(n), "{n} not in: {msg}");
    }
}

#[test]
fn device_too_small_for_control_structures() {
    let e = Geometry::compute(&params(64 * 1024, 64 * 1024, 16, 640, 8)).unwrap_err();
    assert!(
        matches!(
            e,
            GeometryError::DeviceTooSmall {
                device: 0,
                device_bytes: 65_536,
                need_bytes: 1_056_768
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("65536") && msg.contains("1056768"), "{msg}");
    assert!(msg.contains("backups"), "{msg}");
}

#[test]
fn nine_devices_refused() {
    let mut p = params(GIB, 64 * 1024, 1, 2, 1);
    p.secondary_bytes = vec![GIB; 8];
    let e = Geometry::compute(&p).unwrap_err();
    assert_eq!(e, GeometryError::TooManyDevices { devices: 9 });
    assert!(e.to_string().contains("9 devices"), "{e}");
    p.secondary_bytes.pop();
    assert_sound(&Geometry::compute(&p).unwrap());
}

#[test]
fn too_many_segments_refused() {
    let mut p = params(16 * TIB, 4096, 1, 2, 1);
    p.secondary_bytes = vec![2 * TIB];
    let e = Geometry::compute(&p).unwrap_err();
    assert!(matches!(e, GeometryError::TooManySegments { .. }), "{e:?}");
    assert!(e.to_string().contains("larger segments"), "{e}");
}

#[test]
fn secondary_devices_round_robin_before_v1_3() {
    let mut p = params(GIB, MIB, 3, 40, 8);
    p.secondary_bytes = vec![512 * MIB, 256 * MIB];
    let g = Geometry::compute_minor(&p, 2).unwrap();
    assert!(!g.is_striped());
    assert_eq!(g.devices.len(), 3);
    let (m, s1, s2) = (&g.devices[0], &g.devices[1], &g.devices[2]);
    assert_eq!(m.first_segment, 1);
    assert_eq!(s1.first_segment, 1 + m.seg_count);
    assert_eq!(s2.first_segment, s1.first_segment + s1.seg_count);
    assert_eq!(g.tot_seg_num, m.seg_count + s1.seg_count + s2.seg_count);
    // Secondaries start at the first multiple of align (256 LBs) >= 8.
    assert_eq!(s1.seg_start_lb, 256);
    assert_eq!(s1.seg_count, (512 * 256 - 256) / 256);
    assert_eq!(s1.device_bytes, 512 * MIB);
    // 6 tables over 3 devices: t mod 3.
    let dev_of = |slot, role| g.segment_location(g.ring_segment(slot, role, 0)).unwrap().0;
    assert_eq!(dev_of(1, Role::Initiator), 0); // t=0
    assert_eq!(dev_of(1, Role::Connector), 1); // t=1
    assert_eq!(dev_of(2, Role::Initiator), 2); // t=2
    assert_eq!(dev_of(2, Role::Connector), 0); // t=3, k=1
    assert_eq!(dev_of(3, Role::Initiator), 1); // t=4, k=1
    assert_eq!(dev_of(3, Role::Connector), 2); // t=5, k=1
                                               // k-th table on a device owns k*N+1.. of that device's segments.
    assert_eq!(g.ring_segment(2, Role::Connector, 0), m.first_segment + 40);
    assert_eq!(
        g.ring_segment(3, Role::Connector, 5),
        s2.first_segment + 40 + 5
    );
    // segment_location on a secondary.
    let seg = s1.first_segment + 7;
    assert_eq!(
        g.segment_location(seg),
        Some((1, (256 + 7 * 256) * LB as u64))
    );
    assert_eq!(
        g.segment_location(s2.first_segment + s2.seg_count - 1)
            .unwrap()
            .0,
        2
    );
    assert_eq!(g.segment_location(g.tot_seg_num + 1), None);
    assert_sound(&g);
    assert_eq!(Geometry::compute_minor(&g.params(), 2).unwrap(), g);
}

#[test]
fn v1_3_stripes_every_ring_across_the_devices_by_batch_groups() {
    // 3 devices, N = 44 entries in batches of 8: groups 0..=5, the last of
    // 4 entries; S = ceil(6 / 3) × 8 = 16 segments per table per device.
    let mut p = params(GIB, MIB, 3, 44, 8);
    p.secondary_bytes = vec![512 * MIB, 256 * MIB];
    let g = Geometry::compute(&p).unwrap();
    assert!(g.is_striped());
    assert_eq!(g.minor_version, 3);
    let d = &g.devices;
    let at = |slot, role, e| g.segment_location(g.ring_segment(slot, role, e)).unwrap();
    // Table t = 0 (slot 1, initiator): group g on device g mod 3, the
    // (g / 3)-th group of its 16 segments there.
    assert_eq!(g.ring_segment(1, Role::Initiator, 0), d[0].first_segment);
    assert_eq!(g.ring_segment(1, Role::Initiator, 8), d[1].first_segment);
    assert_eq!(g.ring_segment(1, Role::Initiator, 16), d[2].first_segment);
    assert_eq!(
        g.ring_segment(1, Role::Initiator, 27),
        d[0].first_segment + 8 + 3
    );
    assert_eq!(
        g.ring_segment(1, Role::Initiator, 43),
        d[2].first_segment + 8 + 3
    );
    // Table t = 1 (slot 1, connector) starts one device further, at its
    // own 16 segments on each device.
    assert_eq!(at(1, Role::Connector, 0).0, 1);
    assert_eq!(
        g.ring_segment(1, Role::Connector, 0),
        d[1].first_segment + 16
    );
    assert_eq!(at(1, Role::Connector, 8).0, 2);
    assert_eq!(at(1, Role::Connector, 16).0, 0);
    // Table t = 5 (slot 3, connector): group 0 on device 5 mod 3 = 2.
    assert_eq!(
        g.ring_segment(3, Role::Connector, 0),
        d[2].first_segment + 5 * 16
    );
    // Batches stop at group ends; the last group is short.
    assert_eq!(g.group_end(0), 8);
    assert_eq!(g.group_end(13), 16);
    assert_eq!(g.group_end(40), 44);
    assert_sound(&g);
    assert_eq!(Geometry::compute(&g.params()).unwrap(), g);
    // One device: the same segments as the whole-ring rule.
    let one = Geometry::compute(&params(GIB, MIB, 3, 44, 8)).unwrap();
    let old = Geometry::compute_minor(&params(GIB, MIB, 3, 44, 8), 2).unwrap();
    assert!(!one.is_striped());
    for slot in 1..=3 {
        for role in Role::BOTH {
            for e in 0..44 {
                assert_eq!(
                    one.ring_segment(slot, role, e),
                    old.ring_segment(slot, role, e)
                );
            }
        }
    }
}

#[test]
fn secondary_too_small_for_its_rings() {
    let mut p = params(GIB, MIB, 2, 40, 8);
    p.secondary_bytes = vec![20 * MIB];
    let e = Geometry::compute_minor(&p, 2).unwrap_err();
    assert!(
        matches!(
            e,
            GeometryError::NotEnoughSegments {
                device: 1,
                need: 80,
                fit: 19,
                tables: 2,
                ..
            }
        ),
        "{e:?}"
    );
    // Striped (v1.3): all 4 tables have ceil(5 / 2) × 8 = 24 segments on
    // every device.
    let e = Geometry::compute(&p).unwrap_err();
    assert!(
        matches!(
            e,
            GeometryError::NotEnoughSegments {
                device: 1,
                need: 96,
                fit: 19,
                tables: 4,
                per_table: 24,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("device 1 (20971520 bytes)"), "{e}");
    // A secondary with no tables (more devices than tables) is fine.
    let mut p = params(GIB, MIB, 1, 10, 8);
    p.secondary_bytes = vec![20 * MIB, 20 * MIB];
    let g = Geometry::compute(&p).unwrap();
    assert_sound(&g);
    p.secondary_bytes = vec![20 * MIB, 64 * 1024];
    assert!(matches!(
        Geometry::compute(&p),
        Err(GeometryError::DeviceTooSmall { device: 2, .. })
    ));
}

#[rstest]
#[case::tiny(16 * MIB, 4096, 1, 2, 1)]
#[case::small_odd_segments(64 * MIB, 12 * 1024, 5, 17, 3)]
#[case::four_k_ring_max(8 * GIB, 4096, 1, 65_535, 65_535)]
#[case::many_connections(GIB, 4096, 300, 2, 2)]
fn sound_layouts(
    #[case] bytes: u64,
    #[case] seg: u64,
    #[case] c: u32,
    #[case] n: u32,
    #[case] b: u32,
) {
    assert_sound(&Geometry::compute(&params(bytes, seg, c, n, b)).unwrap());
}

#[rstest]
#[case::two_defaults(2, 640, 8)]
#[case::three_odd(3, 17, 3)]
#[case::eight_tiny(8, 2, 2)]
#[case::two_one_batch(2, 9, 9)]
#[case::three_batch_one(3, 7, 1)]
fn striped_layouts_are_sound(#[case] devices: usize, #[case] n: u32, #[case] b: u32) {
    let mut p = params(4 * GIB, 64 * 1024, 5, n, b);
    p.secondary_bytes = vec![GIB; devices - 1];
    let g = Geometry::compute(&p).unwrap();
    assert_eq!(g.is_striped(), devices > 1);
    assert_sound(&g);
    assert_eq!(Geometry::compute(&g.params()).unwrap(), g);
}
