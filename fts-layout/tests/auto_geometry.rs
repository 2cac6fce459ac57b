//! `Geometry::auto`: the geometry `format` chooses when no tunable is
//! given, and how given tunables are kept.
#![allow(clippy::unwrap_used)]

use fts_layout::*;
use proptest::prelude::*;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The batch (one I/O) a sized geometry aims at.
const IO_TARGET: u64 = MIB;
/// Batches a sized ring holds at least (unless a batch is one segment).
const DEPTH: u32 = 8;

/// No two regions of the layout overlap, and each is inside its device.
fn assert_sound(g: &Geometry) {
    let ext = g.extents();
    for (i, a) in ext.iter().enumerate() {
        assert!(a.end_lb() <= g.devices[a.device].device_lbs, "{a:?}");
        for b in &ext[i + 1..] {
            assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
        }
    }
}

/// Fraction of all device bytes the rings take.
fn fill(g: &Geometry) -> f64 {
    let total: u64 = g.devices.iter().map(|d| d.device_bytes).sum();
    let rings = 2
        * u64::from(g.max_connections)
        * u64::from(g.ring_entries)
        * u64::from(g.seg_lbs)
        * LB as u64;
    rings as f64 / total as f64
}

fn batch_bytes(p: &GeometryParams) -> u64 {
    p.segment_bytes * u64::from(p.batch)
}

#[test]
fn every_device_from_16_mib_up_gets_a_geometry() {
    for bytes in [16 * MIB, 64 * MIB, GIB, 16 * GIB] {
        for block_size in [512, 4096] {
            for c in [1, 4, 8, 16, 64] {
                let a = Geometry::auto(bytes, &[], block_size, c).resolve().unwrap();
                let p = &a.params;
                let what = format!("{bytes} B, {block_size}-byte blocks, {c} connections");
                assert_eq!(Geometry::compute(p).unwrap(), a.geometry, "{what}");
                assert_eq!(a.geometry.params(), *p, "{what}");
                assert_eq!((p.block_size, p.max_connections), (block_size, c), "{what}");
                assert!(p.batch >= 1 && p.batch <= p.ring_entries, "{what}: {p:?}");
                assert_sound(&a.geometry);
                if a.kept_defaults {
                    assert_eq!(
                        (p.segment_bytes, p.ring_entries, p.batch),
                        (DEFAULT_SEGMENT_BYTES, DEFAULT_RING_ENTRIES, DEFAULT_BATCH),
                        "{what}"
                    );
                    assert_eq!(a.reason, "the defaults fit");
                } else {
                    // One I/O is at most 1 MiB and the ring holds 8 of
                    // them (or the batch is one segment).
                    assert!(batch_bytes(p) <= IO_TARGET, "{what}: {p:?}");
                    assert!(
                        p.batch == 1 || p.ring_entries / p.batch >= DEPTH,
                        "{what}: {p:?}"
                    );
                    assert!(a.reason.contains("the defaults"), "{}", a.reason);
                    // The rings take the room the defaults could not.
                    let least = if c <= 16 { 0.85 } else { 0.7 };
                    assert!(fill(&a.geometry) >= least, "{what}: {}", a.chosen);
                }
                assert!(a.chosen.contains("ring entries of"), "{}", a.chosen);
            }
        }
    }
}

#[test]
fn the_defaults_are_kept_where_they_fit() {
    let a = Geometry::auto(16 * GIB, &[], 512, 16).resolve().unwrap();
    assert!(a.kept_defaults);
    assert_eq!(a.params, GeometryParams::new(16 * GIB));
    assert_eq!(a.reason, "the defaults fit");
    // 16 connections of the default geometry need about 1.34 GB: 1 GiB is
    // sized, 1.5 GiB keeps the defaults.
    let one = Geometry::auto(GIB, &[], 512, 16).resolve().unwrap();
    assert!(!one.kept_defaults);
    assert!(
        one.reason
            .contains("need a master of 1.3 GiB but it has 1 GiB"),
        "{}",
        one.reason
    );
    assert_eq!(batch_bytes(&one.params), MIB, "{}", one.chosen);
    let more = Geometry::auto(3 * GIB / 2, &[], 512, 16).resolve().unwrap();
    assert!(more.kept_defaults);
}

#[test]
fn demo_and_small_devices() {
    // What `fts demo` formats: 256 MiB for 4 connections.
    let a = Geometry::auto(256 * MIB, &[], 512, 4).resolve().unwrap();
    assert_eq!(batch_bytes(&a.params), MIB, "{}", a.chosen);
    assert!(fill(&a.geometry) > 0.95, "{}", a.chosen);
    // 64 MiB for 8 connections: the example of issue 12.
    let a = Geometry::auto(64 * MIB, &[], 512, 8).resolve().unwrap();
    assert!(batch_bytes(&a.params) >= 256 * KIB, "{}", a.chosen);
    assert!(fill(&a.geometry) > 0.9, "{}", a.chosen);
    assert!(a.chosen.contains("the rings fill 9"), "{}", a.chosen);
}

#[test]
fn larger_devices_never_get_smaller_batches() {
    for c in [1, 2, 4, 8, 16, 32, 64] {
        let mut last = 0;
        let mut bytes = 16 * MIB;
        while bytes <= 64 * GIB {
            let a = Geometry::auto(bytes, &[], 512, c).resolve().unwrap();
            if a.kept_defaults {
                break;
            }
            let io = batch_bytes(&a.params);
            assert!(io >= last, "{c} connections, {bytes} B: {}", a.chosen);
            last = io;
            bytes += bytes / 4;
        }
    }
}

#[test]
fn given_tunables_are_kept_and_the_others_adapt() {
    let base = Geometry::auto(64 * MIB, &[], 512, 8);
    for s in [None, Some(4 * KIB), Some(128 * KIB)] {
        for n in [None, Some(2), Some(40), Some(640)] {
            for b in [None, Some(1), Some(2), Some(16)] {
                let mut r = base.clone();
                (r.segment_bytes, r.ring_entries, r.batch) = (s, n, b);
                let Ok(a) = r.resolve() else {
                    continue;
                };
                let p = &a.params;
                assert_eq!(s.unwrap_or(p.segment_bytes), p.segment_bytes);
                assert_eq!(n.unwrap_or(p.ring_entries), p.ring_entries);
                assert_eq!(b.unwrap_or(p.batch), p.batch);
                assert_eq!(Geometry::compute(p).unwrap(), a.geometry);
                if (s, n, b) == (Some(4 * KIB), Some(40), Some(2)) {
                    assert_eq!(a.reason, "all given");
                }
            }
        }
    }
    // A ring of 640 entries (the default) fits 64 MiB for 8 connections
    // with small segments: the segment size gives way, not the ring.
    let mut r = base.clone();
    r.ring_entries = Some(640);
    let a = r.resolve().unwrap();
    assert_eq!(a.params.ring_entries, 640);
    assert_eq!(a.params.segment_bytes, 4 * KIB);
    // A given ring and batch: the segments take the room, whatever their
    // size.
    let mut r = base.clone();
    (r.ring_entries, r.batch) = (Some(64), Some(16));
    let a = r.resolve().unwrap();
    assert_eq!((a.params.ring_entries, a.params.batch), (64, 16));
    assert!(fill(&a.geometry) > 0.9, "{}", a.chosen);
    // A given batch larger than the default ring fits too.
    let mut r = base.clone();
    r.batch = Some(64);
    let a = r.resolve().unwrap();
    assert_eq!(a.params.batch, 64);
    assert!(a.params.ring_entries >= 128, "{}", a.chosen);
}

#[test]
fn what_does_not_fit_says_how_far_each_tunable_may_go() {
    // 1 MiB segments for 16 connections on 16 MiB: not even 2 entries each.
    let mut r = Geometry::auto(16 * MIB, &[], 512, 16);
    r.segment_bytes = Some(MIB);
    let e = r.resolve().unwrap_err();
    assert!(
        matches!(e, GeometryError::NotEnoughSegments { .. }),
        "{e:?}"
    );
    let s = r.largest_segment_bytes().unwrap();
    assert_eq!(s % LB as u64, 0);
    let mut ok = r.clone();
    ok.segment_bytes = Some(s);
    ok.resolve().unwrap();
    ok.segment_bytes = Some(s + LB as u64);
    ok.resolve().unwrap_err();
    assert_eq!(r.largest_ring_entries(), None);
    let c = r.largest_max_connections().unwrap();
    let mut ok = r.clone();
    ok.max_connections = c;
    ok.resolve().unwrap();
    ok.max_connections = c + 1;
    ok.resolve().unwrap_err();

    // The ring: 64 KiB segments for 8 connections on 64 MiB.
    let mut r = Geometry::auto(64 * MIB, &[], 512, 8);
    r.segment_bytes = Some(64 * KIB);
    r.ring_entries = Some(640);
    let e = r.resolve().unwrap_err();
    assert!(e.to_string().contains("640 segments each"), "{e}");
    let n = r.largest_ring_entries().unwrap();
    r.ring_entries = Some(n);
    r.resolve().unwrap();
    r.ring_entries = Some(n + 1);
    r.resolve().unwrap_err();

    // Connections: 4096 do not fit 16 MiB whatever the rest.
    let r = Geometry::auto(16 * MIB, &[], 512, 4096);
    let e = r.resolve().unwrap_err();
    assert!(matches!(e, GeometryError::DeviceTooSmall { .. }), "{e:?}");
    let c = r.largest_max_connections().unwrap();
    assert!(Geometry::auto(16 * MIB, &[], 512, c).resolve().is_ok());
    assert!(Geometry::auto(16 * MIB, &[], 512, c + 1).resolve().is_err());

    // A device that cannot hold the control structures at all.
    let r = Geometry::auto(64 * KIB, &[], 512, 16);
    assert!(matches!(
        r.resolve().unwrap_err(),
        GeometryError::DeviceTooSmall { .. }
    ));
    assert_eq!(r.largest_max_connections(), None);
}

#[test]
fn secondary_devices_share_the_rings() {
    // The tightest device decides: tables alternate between the devices.
    let a = Geometry::auto(64 * MIB, &[GIB], 512, 8).resolve().unwrap();
    assert_eq!(a.geometry.devices.len(), 2);
    assert_sound(&a.geometry);
    let alone = Geometry::auto(64 * MIB, &[], 512, 8).resolve().unwrap();
    let per_ring = |g: &Geometry| u64::from(g.ring_entries) * u64::from(g.seg_lbs) * LB as u64;
    assert!(
        per_ring(&a.geometry) >= per_ring(&alone.geometry),
        "{} vs {}",
        a.chosen,
        alone.chosen
    );
    assert!(a.chosen.contains("on 2 devices"), "{}", a.chosen);
    // Two equal devices: twice the room of one for the same rings.
    let two = Geometry::auto(GIB, &[GIB], 4096, 16).resolve().unwrap();
    assert!(two.kept_defaults, "{}", two.chosen);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any device and connections: a geometry exactly when the smallest
    /// one fits, and it is what `compute` gives for its parameters.
    #[test]
    fn resolve_agrees_with_compute(
        mib in 1u64..200_000,
        c in 1u32..=256,
        secondary in prop::option::of(16u64..4096),
        block_4k in any::<bool>(),
    ) {
        let block = if block_4k { 4096 } else { 512 };
        let sec: Vec<u64> = secondary.into_iter().map(|m| m * MIB).collect();
        let r = Geometry::auto(mib * MIB, &sec, block, c);
        let smallest = GeometryParams {
            master_bytes: mib * MIB,
            secondary_bytes: sec.clone(),
            block_size: block,
            segment_bytes: LB as u64,
            max_connections: c,
            ring_entries: 2,
            batch: 1,
        };
        match r.resolve() {
            Ok(a) => {
                prop_assert_eq!(Geometry::compute(&a.params).unwrap(), a.geometry.clone());
                prop_assert!(a.params.batch <= a.params.ring_entries);
                prop_assert!(a.kept_defaults || batch_bytes(&a.params) <= IO_TARGET);
            }
            Err(e) => prop_assert!(Geometry::compute(&smallest).is_err(), "{e}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever is given is kept, and the rest is a geometry `compute`
    /// accepts.
    #[test]
    fn given_tunables_survive(
        mib in 16u64..20_000,
        c in 1u32..=64,
        seg_lbs in prop::option::of(1u64..=256),
        n in prop::option::of(2u32..=2000),
        b in prop::option::of(1u32..=64),
    ) {
        let mut r = Geometry::auto(mib * MIB, &[], 512, c);
        (r.segment_bytes, r.ring_entries, r.batch) = (seg_lbs.map(|l| l * LB as u64), n, b);
        if let Ok(a) = r.resolve() {
            let p = &a.params;
            prop_assert_eq!(Geometry::compute(p).unwrap(), a.geometry.clone());
            prop_assert_eq!(r.segment_bytes.unwrap_or(p.segment_bytes), p.segment_bytes);
            prop_assert_eq!(n.unwrap_or(p.ring_entries), p.ring_entries);
            prop_assert_eq!(b.unwrap_or(p.batch), p.batch);
            prop_assert_eq!(p.segment_bytes % LB as u64, 0);
        } else if let Some(max) = r.largest_ring_entries() {
            // A given ring that does not fit is larger than the largest.
            if let (Some(n), None) = (n, b) {
                prop_assert!(n > max, "{} entries refused, but {} fit", n, max);
            }
        }
    }
}
