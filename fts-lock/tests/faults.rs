//! The locked read-modify-write that every Process Id Table update is
//! (take the lock, read the record, check it, change it, write it,
//! release), done by threads that each hold their own `OfdLock` and their
//! own handle of a fault-injecting device (`fts-faults`) over one file.
//! The record updated is the lock record of LB 6 (`FLCK`, with its CRC),
//! and its counter counts the updates that took effect.
//!
//! What must hold: latency that widens the window does not let two
//! updates interleave (the unlocked control run, over the same slow
//! device, does lose updates); a failed or torn write is reported, never
//! counted twice, and never keeps the lock from the others; a corrupt read
//! under the lock stops that update before it writes anything; a waiter
//! that times out reports it and holds nothing. Each test checks in the
//! fault log that its faults fired.

// Test helpers (and the threads) outside #[test] fns may panic too.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fts_blockdev::{BlockDevice, FileDevice, OpenOptions, WriteMode};
use fts_faults::{Fault, FaultDevice, FaultPlan, Faults, Injected, Rule, TornEnd};
use fts_layout::{Expect, LockRecord, Stamp, LB, LOCK_FREE, LOCK_LB, RECORD_SIZE};
use fts_lock::{OfdLock, TableLock};

const LAYOUT_ID: u64 = 0xfa17_0000_0000_0001;
const RECORD: u64 = LOCK_LB * LB as u64;
const WAIT: Duration = Duration::from_secs(30);

struct Disk {
    _dir: tempfile::TempDir,
    path: PathBuf,
    dev: FileDevice,
}

/// A 1 MiB file of 512-byte blocks with a free lock record, counter 0.
fn disk() -> Disk {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let opts = OpenOptions {
        create_size: Some(1 << 20),
        block_size: Some(512),
        ..OpenOptions::default()
    };
    let mut dev = FileDevice::open(&path, &opts).unwrap();
    let rec = LockRecord {
        state: LOCK_FREE,
        ..LockRecord::default()
    };
    let mut lb = vec![0u8; LB];
    lb[..RECORD_SIZE].copy_from_slice(&rec.encode(Stamp::new(LAYOUT_ID, 0)));
    dev.write_at(RECORD, &lb, WriteMode::Fua).unwrap();
    Disk {
        _dir: dir,
        path,
        dev,
    }
}

impl Disk {
    fn faulty(&self, plan: FaultPlan) -> FaultDevice {
        FaultDevice::new(self.dev.reopen().unwrap(), plan).unwrap()
    }

    /// The record as it is on the device (an unwrapped handle).
    fn record(&self) -> LockRecord {
        let mut dev = self.dev.reopen().unwrap();
        read_record(dev.as_mut()).unwrap()
    }
}

#[derive(Debug)]
enum Failed {
    Lock(fts_lock::Error),
    Device(fts_blockdev::Error),
    Record(fts_layout::Error),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Lock(e) => write!(f, "lock: {e}"),
            Failed::Device(e) => write!(f, "device: {e}"),
            Failed::Record(e) => write!(f, "record: {e}"),
        }
    }
}

fn read_record(dev: &mut dyn BlockDevice) -> Result<LockRecord, Failed> {
    let mut lb = vec![0u8; LB];
    dev.read_at(RECORD, &mut lb).map_err(Failed::Device)?;
    LockRecord::decode(&lb[..RECORD_SIZE], Expect::exact(LAYOUT_ID, 0)).map_err(Failed::Record)
}

/// One update: read the record, check it, write counter + 1 as `who`.
/// (The window between the read and the write is the device's latency.)
fn bump(dev: &mut dyn BlockDevice, who: &str) -> Result<u64, Failed> {
    let mut rec = read_record(dev)?;
    rec.counter += 1;
    rec.holder_name = who.to_owned();
    let mut lb = vec![0u8; LB];
    lb[..RECORD_SIZE].copy_from_slice(&rec.encode(Stamp::new(LAYOUT_ID, 0)));
    dev.write_at(RECORD, &lb, WriteMode::Fua)
        .map_err(Failed::Device)?;
    Ok(rec.counter)
}

/// [`bump`] under the lock; the guard is released on every path.
fn locked_bump(lock: &mut OfdLock, dev: &mut dyn BlockDevice, who: &str) -> Result<u64, Failed> {
    let guard = lock.lock(WAIT).map_err(Failed::Lock)?;
    let r = bump(dev, who);
    guard.release().map_err(Failed::Lock)?;
    r
}

/// Per worker: the results of its updates.
type Results = Vec<Vec<Result<u64, Failed>>>;

/// `workers` threads, each with its own lock and its own reopened handle
/// of `dev`, run `per_worker` updates each, starting together.
fn contend(
    path: &Path,
    dev: &FaultDevice,
    workers: usize,
    per_worker: usize,
    locked: bool,
) -> Results {
    let barrier = Arc::new(Barrier::new(workers));
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let mut handle = dev.reopen().unwrap();
            let mut lock = OfdLock::open(path).unwrap();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let who = format!("worker{w}");
                (0..per_worker)
                    .map(|_| {
                        if locked {
                            locked_bump(&mut lock, handle.as_mut(), &who)
                        } else {
                            bump(handle.as_mut(), &who)
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn show(faults: &Faults) -> String {
    let log = faults.log();
    let mut s: String = log.iter().take(20).map(|i| format!("\n  {i}")).collect();
    if log.len() > 20 {
        s.push_str(&format!("\n  … {} more", log.len() - 20));
    }
    s
}

const WORKERS: usize = 4;
const PER_WORKER: usize = 25;

fn slow_device(d: &Disk) -> FaultDevice {
    // Every read and write of the record takes at least 1 ms longer: the
    // window between an update's read and its write.
    d.faulty(
        FaultPlan::new(0)
            .rule(Rule::new(Fault::Latency(Duration::from_millis(1))).lbs(LOCK_LB..LOCK_LB + 1)),
    )
}

#[test]
fn latency_widens_the_window_and_the_lock_still_excludes() {
    let d = disk();
    let dev = slow_device(&d);
    let results = contend(&d.path, &dev, WORKERS, PER_WORKER, true);
    let total = WORKERS * PER_WORKER;
    for r in results.iter().flatten() {
        if let Err(e) = r {
            panic!("an update failed: {e}");
        }
    }
    assert_eq!(
        d.record().counter,
        total as u64,
        "updates were lost under the lock"
    );
    assert!(
        dev.faults().stats().delayed >= 2 * total as u64,
        "the latency did not apply{}",
        show(dev.faults())
    );
    // Each update saw the value the one before it wrote: the counters
    // returned are exactly 1..=total.
    let mut seen: Vec<u64> = results.into_iter().flatten().map(Result::unwrap).collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=total as u64).collect::<Vec<_>>());
}

/// The control: the same workers over the same slow device without the
/// lock lose updates, so the exact count above shows the lock at work.
#[test]
fn without_the_lock_the_same_latency_loses_updates() {
    let d = disk();
    let dev = slow_device(&d);
    let results = contend(&d.path, &dev, WORKERS, PER_WORKER, false);
    assert!(results.iter().flatten().all(Result::is_ok));
    let got = d.record().counter;
    let want = (WORKERS * PER_WORKER) as u64;
    assert!(
        got > 0 && got < want,
        "without the lock the counter reached {got} of {want}: the latency made no window"
    );
    assert!(dev.faults().stats().delayed >= 2 * want);
}

#[test]
fn failed_writes_are_reported_not_counted_and_release_the_lock() {
    let d = disk();
    let dev = d.faulty(
        FaultPlan::new(42).rule(
            Rule::new(Fault::eio())
                .writes()
                .lbs(LOCK_LB..LOCK_LB + 1)
                .probability(0.25),
        ),
    );
    let results = contend(&d.path, &dev, WORKERS, PER_WORKER, true);
    let faults = dev.faults();
    let eio = faults.log().first().and_then(|i| i.what.errno());
    let (mut ok, mut failed) = (0u64, 0u64);
    for r in results.iter().flatten() {
        match r {
            Ok(_) => ok += 1,
            Err(Failed::Device(fts_blockdev::Error::Io {
                op: "write",
                source,
                ..
            })) => {
                assert_eq!(source.raw_os_error(), eio);
                failed += 1;
            }
            // A lock kept by a failed update would show up here as a timeout.
            Err(other) => panic!("unexpected failure: {other}{}", show(faults)),
        }
    }
    assert!(failed > 0, "no write failed{}", show(faults));
    assert_eq!(failed, faults.stats().failed);
    assert_eq!(ok + failed, (WORKERS * PER_WORKER) as u64);
    assert_eq!(
        d.record().counter,
        ok,
        "the counter must count exactly the updates that were written"
    );
    // Nobody holds the lock now.
    let mut lock = OfdLock::open(&d.path).unwrap();
    lock.lock(Duration::ZERO).unwrap().release().unwrap();
}

/// A holder whose host dies in the middle of writing the record (a torn
/// write, then nothing): the next holder finds the old record or the new
/// one, whole, exactly as the log says, and carries on.
#[test]
fn a_holder_crashing_mid_write_leaves_the_old_or_the_new_record() {
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..12 {
        let d = disk();
        let dev = d.faulty(
            FaultPlan::new(seed).rule(
                Rule::new(Fault::Torn {
                    keep: None,
                    then: TornEnd::Crash,
                })
                .writes()
                .lbs(LOCK_LB..LOCK_LB + 1)
                .nth(3),
            ),
        );
        let mut lock = OfdLock::open(&d.path).unwrap();
        let mut h = dev.reopen().unwrap();
        assert_eq!(locked_bump(&mut lock, h.as_mut(), "dying").unwrap(), 1);
        assert_eq!(locked_bump(&mut lock, h.as_mut(), "dying").unwrap(), 2);
        let err = locked_bump(&mut lock, h.as_mut(), "dying").unwrap_err();
        assert!(matches!(err, Failed::Device(_)), "{err}");
        assert!(dev.faults().crashed());
        let Injected::Torn { kept, .. } = dev.faults().log()[0].what else {
            panic!("{}", show(dev.faults()));
        };
        // The record is the first 512 bytes of the 4 KiB written.
        let landed = kept >= RECORD_SIZE;
        outcomes.insert(landed);

        // Another process (its own lock, a healthy handle).
        let mut other = OfdLock::open(&d.path).unwrap();
        let mut good = d.dev.reopen().unwrap();
        let rec = {
            let g = other.lock(Duration::ZERO).unwrap();
            let rec = read_record(good.as_mut()).unwrap();
            g.release().unwrap();
            rec
        };
        assert_eq!(
            rec.counter,
            2 + u64::from(landed),
            "seed {seed}: kept {kept} bytes"
        );
        assert_eq!(
            locked_bump(&mut other, good.as_mut(), "next").unwrap(),
            rec.counter + 1
        );
    }
    assert_eq!(
        outcomes.len(),
        2,
        "the tears never covered both outcomes: {outcomes:?}"
    );
}

/// A bit flipped in the record as read under the lock fails its CRC: the
/// update stops before writing, the lock is free again at once, and the
/// record on the device is the last good one.
#[test]
fn a_corrupt_read_under_the_lock_stops_the_update_before_it_writes() {
    let d = disk();
    let plan = FaultPlan::new(9).rule(
        Rule::new(Fault::Flip { bits: 1 })
            .reads()
            .bytes(RECORD..RECORD + RECORD_SIZE as u64)
            .nth(3),
    );
    let dev = d.faulty(plan);
    let mut lock = OfdLock::open(&d.path).unwrap();
    let mut h = dev.reopen().unwrap();
    assert_eq!(locked_bump(&mut lock, h.as_mut(), "a").unwrap(), 1);
    assert_eq!(locked_bump(&mut lock, h.as_mut(), "a").unwrap(), 2);
    let writes_before = dev.faults().stats().writes;
    let err = locked_bump(&mut lock, h.as_mut(), "a").unwrap_err();
    assert!(matches!(err, Failed::Record(_)), "{err}");
    assert_eq!(dev.faults().fired(0), 1);
    assert_eq!(
        dev.faults().stats().writes,
        writes_before,
        "the update wrote after a bad read"
    );
    let mut other = OfdLock::open(&d.path).unwrap();
    other.lock(Duration::ZERO).unwrap().release().unwrap();
    let rec = d.record();
    assert_eq!((rec.counter, rec.holder_name.as_str()), (2, "a"));
    assert_eq!(locked_bump(&mut lock, h.as_mut(), "a").unwrap(), 3);
}

/// A holder stuck in slow I/O keeps the lock; a waiter with a shorter
/// timeout reports a timeout naming the device, holds nothing and writes
/// nothing, and gets the lock once the holder is done.
#[test]
fn a_waiter_times_out_behind_a_slow_holder_and_holds_nothing() {
    let d = disk();
    let slow = d.faulty(
        FaultPlan::new(0).rule(
            Rule::new(Fault::Latency(Duration::from_millis(400)))
                .writes()
                .nth(1),
        ),
    );
    let mut holder_lock = OfdLock::open(&d.path).unwrap();
    let mut holder_dev = slow.reopen().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let guard = holder_lock.lock(WAIT).unwrap();
        tx.send(()).unwrap();
        let r = bump(holder_dev.as_mut(), "slow");
        guard.release().unwrap();
        r
    });
    rx.recv().unwrap();
    let mut waiter = OfdLock::open(&d.path).unwrap();
    let start = Instant::now();
    let err = waiter.lock(Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, fts_lock::Error::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains(d.path.to_str().unwrap()), "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert!(
        waiter.try_lock().unwrap().is_none(),
        "the waiter holds the lock"
    );
    assert_eq!(holder.join().unwrap().unwrap(), 1);
    assert_eq!(slow.faults().fired(0), 1);
    let rec = d.record();
    assert_eq!((rec.counter, rec.holder_name.as_str()), (1, "slow"));
    let mut h = d.dev.reopen().unwrap();
    assert_eq!(locked_bump(&mut waiter, h.as_mut(), "waiter").unwrap(), 2);
}
