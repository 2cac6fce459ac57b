//! The wrapper over a real file device: every fault does to the bytes on
//! the device (read back through an independent, unwrapped handle) what
//! its log says it did.

// Test helpers outside #[test] fns may panic too.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use fts_blockdev::{BlockDevice, FileDevice, OpenOptions, WriteMode};
use fts_faults::{
    wrap_from_env, Error, Fault, FaultDevice, FaultPlan, Injected, Op, Rule, TornEnd, FTS_LB,
    PLAN_ENV,
};

const SIZE: u64 = 1 << 20;

struct Disk {
    _dir: tempfile::TempDir,
    /// An unwrapped handle: the device as it really is.
    truth: Box<dyn BlockDevice>,
}

fn disk(block_size: u32) -> Disk {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        create_size: Some(SIZE),
        block_size: Some(block_size),
        ..OpenOptions::default()
    };
    let truth = Box::new(FileDevice::open(dir.path().join("disk.img"), &opts).unwrap());
    Disk { _dir: dir, truth }
}

fn wrap(d: &Disk, plan: FaultPlan) -> FaultDevice {
    FaultDevice::new(d.truth.reopen().unwrap(), plan).unwrap()
}

fn read(dev: &mut dyn BlockDevice, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    dev.read_at(offset, &mut buf).unwrap();
    buf
}

fn fill(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
}

fn errno_of(e: &fts_blockdev::Error) -> Option<i32> {
    match e {
        fts_blockdev::Error::Io { source, .. } | fts_blockdev::Error::Flush { source, .. } => {
            source.raw_os_error()
        }
        _ => None,
    }
}

#[test]
fn the_nth_write_fails_with_eio_and_writes_nothing() {
    let mut d = disk(512);
    let mut dev = wrap(
        &d,
        FaultPlan::new(0).rule(Rule::new(Fault::eio()).writes().nth(3)),
    );
    let data = fill(4096, 1);
    dev.write_at(0, &data, WriteMode::Normal).unwrap();
    dev.write_at(4096, &data, WriteMode::Normal).unwrap();
    let err = dev.write_at(8192, &data, WriteMode::Fua).unwrap_err();
    assert_eq!(errno_of(&err), Some(libc::EIO), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("offset 8192") && msg.contains("disk.img"),
        "{msg}"
    );
    dev.write_at(12288, &data, WriteMode::Normal).unwrap();

    assert_eq!(read(d.truth.as_mut(), 0, 4096), data);
    assert_eq!(
        read(d.truth.as_mut(), 8192, 4096),
        vec![0; 4096],
        "the failed write wrote"
    );
    assert_eq!(read(d.truth.as_mut(), 12288, 4096), data);

    let log = dev.faults().log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (log[0].op, log[0].offset, log[0].op_index),
        (Op::Write, 8192, 2)
    );
    assert_eq!(log[0].what, Injected::Failed { errno: libc::EIO });
    assert_eq!(dev.faults().fired(0), 1);
    assert_eq!(dev.faults().seen(0), 4);
    assert_eq!(dev.faults().stats().writes, 4);
}

#[test]
fn a_range_rule_hits_only_operations_touching_its_range() {
    let mut d = disk(512);
    let plan = FaultPlan::new(0).rule(
        Rule::new(Fault::Fail {
            errno: libc::ENOSPC,
        })
        .writes()
        .lbs(3..4),
    );
    let mut dev = wrap(&d, plan);
    let block = fill(4096, 2);
    for lb in 0..6u64 {
        let r = dev.write_at(lb * FTS_LB, &block, WriteMode::Normal);
        assert_eq!(r.is_err(), lb == 3, "LB {lb}: {r:?}");
    }
    // A request straddling the range's first byte is hit too.
    let two = fill(8192, 3);
    let err = dev
        .write_at(2 * FTS_LB, &two, WriteMode::Normal)
        .unwrap_err();
    assert_eq!(errno_of(&err), Some(libc::ENOSPC));
    // Reads are not selected.
    read(&mut dev, 3 * FTS_LB, 4096);
    assert_eq!(read(d.truth.as_mut(), 3 * FTS_LB, 4096), vec![0; 4096]);
    assert_eq!(dev.faults().fired(0), 2);
}

#[test]
fn a_torn_write_keeps_exactly_a_prefix_and_ends_as_planned() {
    for then in [TornEnd::Error, TornEnd::Silent, TornEnd::Crash] {
        let mut d = disk(512);
        let old = fill(8192, 0x10);
        d.truth.write_at(0, &old, WriteMode::Normal).unwrap();
        let plan = FaultPlan::new(0).rule(
            Rule::new(Fault::Torn {
                keep: Some(3),
                then,
            })
            .nth(1),
        );
        let mut dev = wrap(&d, plan);
        // A single-block write is atomic: the rule does not see it.
        dev.write_at(16384, &[7u8; 512], WriteMode::Normal).unwrap();
        let new = fill(8192, 0x20);
        let r = dev.write_at(0, &new, WriteMode::Fua);
        assert_eq!(r.is_ok(), then == TornEnd::Silent, "{then}: {r:?}");
        let on_disk = read(d.truth.as_mut(), 0, 8192);
        assert_eq!(on_disk[..1536], new[..1536], "{then}: the prefix");
        assert_eq!(on_disk[1536..], old[1536..], "{then}: the rest");
        let log = dev.faults().log();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].what, Injected::Torn { kept: 1536, then });

        // After a crash, every handle (also one opened before) is dead.
        let mut other = dev.reopen().unwrap();
        let r = other.read_at(0, &mut [0u8; 512]);
        assert_eq!(r.is_err(), then == TornEnd::Crash, "{then}: {r:?}");
        if then == TornEnd::Crash {
            assert!(dev.flush().is_err());
            assert!(dev.faults().crashed());
            assert_eq!(dev.faults().stats().dead, 2);
            dev.faults().revive();
            other.read_at(0, &mut [0u8; 512]).unwrap();
        }
    }
}

#[test]
fn random_tears_are_prefixes_shorter_than_the_write() {
    let mut d = disk(512);
    let plan = FaultPlan::new(99).rule(Rule::new(Fault::Torn {
        keep: None,
        then: TornEnd::Silent,
    }));
    let mut dev = wrap(&d, plan);
    let mut kept_sizes = std::collections::BTreeSet::new();
    for round in 0..40u8 {
        let before = read(d.truth.as_mut(), 0, 4096);
        let new = fill(4096, round.wrapping_add(1));
        dev.write_at(0, &new, WriteMode::Normal).unwrap();
        let after = read(d.truth.as_mut(), 0, 4096);
        let Injected::Torn { kept, .. } = dev.faults().log()[round as usize].what else {
            panic!("not torn");
        };
        assert!(kept < 4096 && kept % 512 == 0, "{kept}");
        assert_eq!(after[..kept], new[..kept]);
        assert_eq!(after[kept..], before[kept..]);
        kept_sizes.insert(kept);
    }
    assert!(kept_sizes.len() > 3, "tears all alike: {kept_sizes:?}");
}

#[test]
fn a_dropped_write_reports_success_and_changes_nothing() {
    let mut d = disk(4096);
    let plan = FaultPlan::new(0)
        .rule(Rule::new(Fault::Drop).writes().nth(2))
        .rule(Rule::new(Fault::Drop).on(Op::Flush));
    let mut dev = wrap(&d, plan);
    let a = fill(4096, 1);
    let b = fill(4096, 2);
    dev.write_at(0, &a, WriteMode::Normal).unwrap();
    dev.write_at(0, &b, WriteMode::Fua).unwrap();
    dev.flush().unwrap();
    assert_eq!(read(d.truth.as_mut(), 0, 4096), a);
    let s = dev.faults().stats();
    assert_eq!((s.dropped, s.writes, s.flushes), (2, 2, 1));
}

#[test]
fn flips_change_exactly_the_logged_bits() {
    let mut d = disk(512);
    let data = fill(8192, 5);
    d.truth.write_at(0, &data, WriteMode::Normal).unwrap();
    let plan = FaultPlan::new(7)
        .rule(
            Rule::new(Fault::Flip { bits: 3 })
                .reads()
                .bytes(1000..1100)
                .nth(1),
        )
        .rule(Rule::new(Fault::Flip { bits: 1 }).writes().nth(1));
    let mut dev = wrap(&d, plan);

    // On read: the caller sees 3 flipped bits inside bytes 1000..1100; the
    // device is untouched.
    let got = read(&mut dev, 0, 8192);
    let Injected::Flipped { bits } = dev.faults().log()[0].what.clone() else {
        panic!("no flip logged");
    };
    assert_eq!(bits.len(), 3);
    let mut expect = data.clone();
    for b in &bits {
        assert!((1000 * 8..1100 * 8).contains(b), "{b}");
        expect[(b / 8) as usize] ^= 1 << (b % 8);
    }
    assert_eq!(got, expect);
    assert_eq!(read(d.truth.as_mut(), 0, 8192), data);
    assert_eq!(read(&mut dev, 0, 8192), data, "only the first read");

    // On write: the device gets the flipped bit, the caller's buffer is intact.
    let new = fill(4096, 6);
    let copy = new.clone();
    dev.write_at(4096, &new, WriteMode::Normal).unwrap();
    assert_eq!(new, copy);
    let Injected::Flipped { bits } = dev.faults().log()[1].what.clone() else {
        panic!("no flip logged");
    };
    let mut expect = new.clone();
    let b = bits[0];
    assert!((4096 * 8..8192 * 8).contains(&b), "{b}");
    expect[(b / 8 - 4096) as usize] ^= 1 << (b % 8);
    assert_eq!(read(d.truth.as_mut(), 4096, 4096), expect);
    assert_eq!(dev.faults().stats().bits_flipped, 4);
}

fn fired_ops(seed: u64) -> Vec<u64> {
    let d = disk(512);
    let mut dev = wrap(
        &d,
        FaultPlan::new(seed).rule(Rule::new(Fault::eio()).reads().probability(0.3)),
    );
    let mut buf = vec![0u8; 512];
    for i in 0..1000 {
        let _ = dev.read_at((i % 64) * 512, &mut buf);
    }
    dev.faults().log().iter().map(|i| i.op_index).collect()
}

#[test]
fn probability_is_seeded_and_reproducible() {
    let a = fired_ops(1234);
    assert_eq!(a, fired_ops(1234));
    assert_ne!(a, fired_ops(1235));
    assert!(
        (230..370).contains(&a.len()),
        "{} of 1000 at p=0.3",
        a.len()
    );
}

#[test]
fn skip_times_and_after_schedule_the_rule() {
    let d = disk(512);
    let plan = FaultPlan::new(0)
        .rule(Rule::new(Fault::eio()).reads().skip(2).times(3))
        .rule(
            Rule::new(Fault::eio())
                .writes()
                .after(Duration::from_millis(200)),
        );
    let mut dev = wrap(&d, plan);
    let mut buf = [0u8; 512];
    let results: Vec<bool> = (0..8).map(|_| dev.read_at(0, &mut buf).is_ok()).collect();
    assert_eq!(results, [true, true, false, false, false, true, true, true]);
    dev.write_at(0, &buf, WriteMode::Normal).unwrap();
    std::thread::sleep(Duration::from_millis(250));
    assert!(dev.write_at(0, &buf, WriteMode::Normal).is_err());
    assert!(dev.faults().log()[3].elapsed >= Duration::from_millis(200));
}

#[test]
fn only_the_first_outcome_fault_acts_latency_adds_up() {
    let d = disk(512);
    let plan = FaultPlan::new(0)
        .rule(Rule::new(Fault::Latency(Duration::from_millis(30))).writes())
        .rule(Rule::new(Fault::Drop).writes())
        .rule(Rule::new(Fault::eio()).writes())
        .rule(Rule::new(Fault::Latency(Duration::from_millis(30))).writes());
    let mut dev = wrap(&d, plan);
    let start = Instant::now();
    dev.write_at(0, &[1u8; 512], WriteMode::Normal).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(60),
        "{:?}",
        start.elapsed()
    );
    let f = dev.faults();
    assert_eq!(
        (f.fired(0), f.fired(1), f.fired(2), f.fired(3)),
        (1, 1, 0, 1)
    );
    assert_eq!((f.seen(2), f.stats().delayed), (1, 2));
}

#[test]
fn the_bandwidth_cap_is_shared_by_all_handles() {
    let d = disk(4096);
    let mut dev = wrap(&d, FaultPlan::new(0).bandwidth(2 << 20));
    let mut other = dev.reopen().unwrap();
    let buf = vec![0u8; 256 << 10];
    let start = Instant::now();
    // 4 × 256 KiB = 1 MiB at 2 MiB/s: at least half a second.
    for _ in 0..2 {
        dev.write_at(0, &buf, WriteMode::Normal).unwrap();
        other.write_at(0, &buf, WriteMode::Normal).unwrap();
    }
    assert!(
        start.elapsed() >= Duration::from_millis(480),
        "{:?}",
        start.elapsed()
    );
    assert!(dev.faults().stats().throttled >= Duration::from_millis(400));
    dev.faults().set_bandwidth(None).unwrap();
    let start = Instant::now();
    dev.write_at(0, &buf, WriteMode::Normal).unwrap();
    assert!(start.elapsed() < Duration::from_millis(480));
}

#[test]
fn reopened_handles_share_the_counts_and_the_log() {
    let d = disk(512);
    let mut dev = wrap(
        &d,
        FaultPlan::new(0).rule(Rule::new(Fault::eio()).writes().nth(3)),
    );
    let mut a = dev.reopen().unwrap();
    let mut b = dev.reopen().unwrap();
    let block = [0u8; 512];
    dev.write_at(0, &block, WriteMode::Normal).unwrap();
    a.write_at(0, &block, WriteMode::Normal).unwrap();
    assert!(b.write_at(0, &block, WriteMode::Normal).is_err());
    a.write_at(0, &block, WriteMode::Normal).unwrap();
    let log = dev.faults().log();
    assert_eq!((log.len(), log[0].handle), (1, 2));
    assert_eq!(dev.location(), d.truth.location());
    assert_eq!(dev.identity(), d.truth.identity());
}

#[test]
fn disarmed_rules_neither_count_nor_fire_and_rules_can_be_added() {
    let d = disk(512);
    let mut dev = wrap(
        &d,
        FaultPlan::new(0).rule(Rule::new(Fault::eio()).writes().nth(1)),
    );
    let f = dev.faults().clone();
    f.set_armed(false);
    dev.write_at(0, &[0u8; 512], WriteMode::Normal).unwrap();
    assert_eq!(f.seen(0), 0);
    f.set_armed(true);
    assert!(dev.write_at(0, &[0u8; 512], WriteMode::Normal).is_err());
    let i = f.add_rule(Rule::new(Fault::Crash).on(Op::Flush)).unwrap();
    assert_eq!(i, 1);
    let err = dev.flush().unwrap_err();
    assert!(matches!(err, fts_blockdev::Error::Flush { .. }), "{err}");
    assert!(f.crashed());
    assert!(f
        .add_rule(
            Rule::new(Fault::Torn {
                keep: None,
                then: TornEnd::Error
            })
            .reads()
        )
        .is_err());
}

#[test]
fn plans_parse_print_and_reject_with_the_item_named() {
    let text = "seed=0x2a; bandwidth=64M/s; eio op=write nth=3; errno=28 lbs=8..11 p=0.25; \
                latency=1500us op=read after=2s; torn keep=1 then=silent; drop op=flush times=2; \
                flip bits=4 op=read bytes=0..512 skip=5; crash op=write nth=10";
    let plan: FaultPlan = text.parse().unwrap();
    assert_eq!(plan.seed, 42);
    assert_eq!(plan.bandwidth, Some(64 << 20));
    assert_eq!(plan.rules.len(), 7);
    assert_eq!(plan.rules[0], Rule::new(Fault::eio()).writes().nth(3));
    assert_eq!(
        plan.rules[1],
        Rule::new(Fault::Fail { errno: 28 })
            .bytes(8 * 4096..11 * 4096)
            .probability(0.25)
    );
    assert_eq!(
        plan.rules[2],
        Rule::new(Fault::Latency(Duration::from_micros(1500)))
            .reads()
            .after(Duration::from_secs(2))
    );
    assert_eq!(
        plan.rules[3].fault,
        Fault::Torn {
            keep: Some(1),
            then: TornEnd::Silent
        }
    );
    assert_eq!(plan.to_string().parse::<FaultPlan>().unwrap(), plan);

    for (bad, says) in [
        ("explode", "not a fault"),
        ("eio op=sideways", "op=sideways"),
        ("eio nth=0", "counts from 1"),
        ("latency=5", "no unit"),
        ("flip bits=2 keep=1", "unknown setting"),
        ("eio bytes=10", "not a range"),
        ("seed=x", "not a number"),
    ] {
        let err = bad.parse::<FaultPlan>().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Syntax { .. }), "{bad}: {err:?}");
        assert!(msg.contains(bad) && msg.contains(says), "{bad}: {msg}");
    }
    for bad in [
        "eio p=1.5",
        "torn op=read",
        "drop op=read",
        "eio bytes=5..5",
        "bandwidth=0",
    ] {
        let err = bad.parse::<FaultPlan>().unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{bad}: {err:?}");
    }
}

#[test]
fn the_environment_hook_and_the_log_file() {
    let d = disk(512);
    let log = d._dir.path().join("faults.log");
    // The only test that touches the environment.
    std::env::set_var(
        PLAN_ENV,
        format!("seed=1; log={}; eio op=read nth=2", log.display()),
    );
    let wrapped = wrap_from_env(d.truth.reopen().unwrap());
    std::env::set_var(PLAN_ENV, "eio op=bogus");
    let bad = wrap_from_env(d.truth.reopen().unwrap()).map(|_| ());
    std::env::remove_var(PLAN_ENV);
    let plain = wrap_from_env(d.truth.reopen().unwrap()).unwrap();

    let mut dev = wrapped.unwrap();
    let mut buf = [0u8; 512];
    dev.read_at(0, &mut buf).unwrap();
    assert!(dev.read_at(512, &mut buf).is_err());
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(
        lines.contains("read of 512 bytes at offset 512 (rule 0): failed"),
        "{lines}"
    );
    assert!(bad.unwrap_err().to_string().contains("op=bogus"));
    assert!(!format!("{plain:?}").contains("FaultDevice"));
}

#[test]
fn lbs_are_fts_logical_blocks() {
    assert_eq!(FTS_LB, fts_layout::LB as u64);
}
