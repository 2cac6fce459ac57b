//! The SCSI lock backends against a real tgtd: several initiators (each its
//! own iSCSI session, as on separate hosts) contend for the lock, a holder
//! that stops making progress is broken, and a dropped connection is
//! reported as a lost lock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::thread;
use std::time::{Duration, Instant};

use fts_blockdev::{BlockDevice, WriteMode};
use fts_layout::{Expect, Stamp, LB, LOCK_LB};
use fts_lock::{Error, Holder, ScsiLockConfig, ScsiLocks, ScsiMethod, TableLock};
use fts_scsi::iscsi::IscsiTransport;
use fts_scsi::{lock_transport, Commands, IoPolicy, ScsiDevice, SharedTransport};
use hil::tgt::{Lun, Tgtd};

const LAYOUT_ID: u64 = 0x0123_4567_89ab_cdef;
/// Where the shared counter lives (well past the lock record).
const COUNTER_OFF: u64 = 64 * LB as u64;

fn iqn(name: &str) -> String {
    format!("iqn.2026-11.invalid.fts-test:{name}")
}

fn connect(lun: &Lun, name: &str) -> SharedTransport {
    let t = IscsiTransport::connect(&lun.url, &iqn(name), Duration::from_secs(5)).unwrap();
    fts_scsi::Nexus::shared(Box::new(t))
}

fn device(t: &SharedTransport) -> ScsiDevice {
    ScsiDevice::with_shared(t.clone(), IoPolicy::default()).unwrap()
}

fn config(t: &SharedTransport, name: &str, lock_timeout: Duration) -> ScsiLockConfig {
    ScsiLockConfig {
        transport: t.clone(),
        record_offset: LOCK_LB * LB as u64,
        stamp: Stamp::new(LAYOUT_ID, 0),
        expect: Expect::exact(LAYOUT_ID, 0),
        lock_timeout,
        holder: Holder {
            host: uuid::Uuid::nil(),
            name: name.into(),
            pid: std::process::id(),
        },
        host_lock: None,
    }
}

fn rig(test: &str) -> Option<(Tgtd, Lun)> {
    let mut tgtd = hil::tgt::start_or_skip(test)?;
    let lun = tgtd.add_lun(16 << 20, 4096).unwrap();
    Some((tgtd, lun))
}

/// What a third initiator sees: no persistent reservation, no registered
/// key, and no SCSI-2 reservation blocking it.
fn assert_nothing_left(lun: &Lun) {
    let t = connect(lun, "observer");
    let mut t = lock_transport(&t);
    let _ = t.clear_unit_attentions();
    let keys = t.pr_read_keys().unwrap();
    assert!(keys.keys.is_empty(), "stale registrations: {keys:?}");
    let res = t.pr_read_reservation().unwrap();
    assert_eq!(res.reservation, None, "a persistent reservation is left");
    t.test_unit_ready()
        .expect("TEST UNIT READY from a third initiator must not conflict");
}

/// Two initiators, each with two threads, increment a counter on the LUN
/// under the lock; every increment survives.
fn contend(method: ScsiMethod, test: &str) {
    let Some((_tgtd, lun)) = rig(test) else {
        return;
    };
    const PER_THREAD: u64 = 25;
    let mut workers = Vec::new();
    for host in ["host-a", "host-b"] {
        let t = connect(&lun, host);
        let locks = ScsiLocks::new(method, config(&t, host, Duration::from_secs(30))).unwrap();
        let dev = device(&t);
        for _ in 0..2 {
            let locks = locks.clone();
            let mut dev = dev.reopen().unwrap();
            workers.push(thread::spawn(move || {
                let mut lock = locks.handle().unwrap();
                let mut buf = vec![0u8; LB];
                for _ in 0..PER_THREAD {
                    let g = lock.lock(Duration::from_secs(60)).unwrap();
                    dev.read_at(COUNTER_OFF, &mut buf).unwrap();
                    let n = u64::from_le_bytes(buf[..8].try_into().unwrap());
                    buf[..8].copy_from_slice(&(n + 1).to_le_bytes());
                    dev.write_at(COUNTER_OFF, &buf, WriteMode::Fua).unwrap();
                    g.release().unwrap();
                }
            }));
        }
    }
    for w in workers {
        w.join().unwrap();
    }
    let t = connect(&lun, "reader");
    let mut dev = device(&t);
    let mut buf = vec![0u8; LB];
    dev.read_at(COUNTER_OFF, &mut buf).unwrap();
    assert_eq!(
        u64::from_le_bytes(buf[..8].try_into().unwrap()),
        4 * PER_THREAD
    );
    drop(dev);
    drop(t);
    assert_nothing_left(&lun);
}

#[test]
fn scsi2_excludes_other_initiators_and_leaves_nothing() {
    contend(
        ScsiMethod::Reserve6,
        "scsi2_excludes_other_initiators_and_leaves_nothing",
    );
}

#[test]
fn pr_excludes_other_initiators_and_leaves_nothing() {
    contend(
        ScsiMethod::Persistent,
        "pr_excludes_other_initiators_and_leaves_nothing",
    );
}

#[test]
fn auto_picks_pr_on_tgt_and_caw_is_refused() {
    let Some((_tgtd, lun)) = rig("auto_picks_pr_on_tgt_and_caw_is_refused") else {
        return;
    };
    let t = connect(&lun, "auto");
    let (locks, why) = ScsiLocks::auto(config(&t, "auto", Duration::from_secs(5))).unwrap();
    assert_eq!(locks.method(), ScsiMethod::Persistent, "{why}");
    let err = ScsiLocks::new(
        ScsiMethod::CompareAndWrite,
        config(&t, "auto", Duration::from_secs(5)),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Unsupported { .. }) && err.to_string().contains("COMPARE AND WRITE"),
        "{err}"
    );
}

/// A holder that stops making progress (a hung host: its session stays up
/// but it never releases) is preempted after the lock timeout; it then
/// finds out that it lost the lock.
#[test]
fn pr_dead_holder_is_preempted() {
    let Some((_tgtd, lun)) = rig("pr_dead_holder_is_preempted") else {
        return;
    };
    let timeout = Duration::from_millis(1500);
    let ta = connect(&lun, "hung");
    let tb = connect(&lun, "waiter");
    let a = ScsiLocks::new(ScsiMethod::Persistent, config(&ta, "hung", timeout)).unwrap();
    let b = ScsiLocks::new(ScsiMethod::Persistent, config(&tb, "waiter", timeout)).unwrap();
    let mut la = a.handle().unwrap();
    let guard = la.lock(Duration::from_secs(5)).unwrap();
    // A hangs: its guard is never released.
    std::mem::forget(guard);

    let mut lb = b.handle().unwrap();
    let start = Instant::now();
    let g = lb.lock(Duration::from_secs(20)).unwrap();
    let waited = start.elapsed();
    assert!(waited >= timeout, "preempted after only {waited:?}");
    g.still_held().unwrap();
    // A's key is gone and its writes are fenced.
    {
        let mut t = lock_transport(&ta);
        // A's nexus is told: UNIT ATTENTION, RESERVATIONS PREEMPTED (2A/03).
        let attentions = t.clear_unit_attentions().unwrap();
        assert!(
            attentions.iter().any(|s| s.asc == 0x2A && s.ascq == 0x03),
            "{attentions:?}"
        );
        let keys = t.pr_read_keys().unwrap();
        assert!(
            !keys.keys.contains(&a.key()),
            "the hung holder is still registered: {keys:?}"
        );
    }
    let mut dev_a = device_allowing_conflicts(&ta);
    let err = dev_a
        .write_at(COUNTER_OFF, &vec![7u8; LB], WriteMode::Fua)
        .unwrap_err();
    assert!(err.to_string().contains("RESERVATION CONFLICT"), "{err}");
    g.release().unwrap();
    // A's handle: releasing now reports the loss instead of pretending.
    let err = fts_lock::Release::release(&mut la).unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err}");
    drop(la);
    drop(a);
    drop(dev_a);
    drop(ta);
    drop(lb);
    drop(b);
    drop(tb);
    assert_nothing_left(&lun);
}

fn device_allowing_conflicts(t: &SharedTransport) -> ScsiDevice {
    ScsiDevice::with_shared(
        t.clone(),
        IoPolicy {
            conflict_wait: Duration::from_millis(300),
            ..IoPolicy::default()
        },
    )
    .unwrap()
}

/// SCSI-2: a holder that never releases is cleared with a LUN reset after
/// the lock timeout.
#[test]
fn scsi2_stuck_holder_is_reset() {
    let Some((_tgtd, lun)) = rig("scsi2_stuck_holder_is_reset") else {
        return;
    };
    let timeout = Duration::from_millis(1500);
    let ta = connect(&lun, "stuck");
    let tb = connect(&lun, "waiter");
    let a = ScsiLocks::new(ScsiMethod::Reserve6, config(&ta, "stuck", timeout)).unwrap();
    let b = ScsiLocks::new(ScsiMethod::Reserve6, config(&tb, "waiter", timeout)).unwrap();
    let mut la = a.handle().unwrap();
    std::mem::forget(la.lock(Duration::from_secs(5)).unwrap());
    let mut lb = b.handle().unwrap();
    let start = Instant::now();
    let g = lb.lock(Duration::from_secs(20)).unwrap();
    assert!(start.elapsed() >= timeout);
    g.still_held().unwrap();
    g.release().unwrap();
    let err = fts_lock::Release::release(&mut la).unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err}");
    drop((la, a, ta, lb, b, tb));
    assert_nothing_left(&lun);
}

/// The iSCSI connection drops while the lock is held: the holder's update
/// is not silently carried on as if still covered by the lock.
#[test]
fn dropped_connection_during_locked_update_is_a_lost_lock() {
    for method in [ScsiMethod::Reserve6, ScsiMethod::Persistent] {
        let Some((tgtd, lun)) = rig("dropped_connection_during_locked_update_is_a_lost_lock")
        else {
            return;
        };
        let name = format!("dropper-{method:?}").to_lowercase();
        let t = connect(&lun, &name);
        let locks = ScsiLocks::new(method, config(&t, &name, Duration::from_secs(5))).unwrap();
        let mut dev = device_allowing_conflicts(&t);
        let mut lock = locks.handle().unwrap();
        let g = lock.lock(Duration::from_secs(5)).unwrap();
        let n = tgtd.drop_connections(&lun, &name).unwrap();
        assert!(n >= 1, "no connection of {name} to drop");
        // The update goes on: the device reconnects with the same ISID.
        // With RESERVE(6) the target dropped the reservation with the
        // session, so the write goes through; with PR the old session's
        // reservation stays and fences the new, unregistered session.
        let write = dev.write_at(COUNTER_OFF, &vec![1u8; LB], WriteMode::Fua);
        match method {
            ScsiMethod::Persistent => {
                let err = write.unwrap_err();
                assert!(err.to_string().contains("RESERVATION CONFLICT"), "{err}");
            }
            _ => write.unwrap(),
        }
        // Either way the lock reports that it no longer covers the update.
        let err = g.still_held().unwrap_err();
        assert!(matches!(err, Error::Lost { .. }), "{method:?}: {err}");
        let err = g.release().unwrap_err();
        assert!(matches!(err, Error::Lost { .. }), "{method:?}: {err}");
        assert!(err.to_string().contains("connection"), "{err}");
        // The next acquisition works on the new connection.
        lock.lock(Duration::from_secs(5))
            .unwrap()
            .release()
            .unwrap();
        drop((lock, locks, dev, t));
        assert_nothing_left(&lun);
    }
}

/// The connection drops and nothing else touches the device before the
/// release: the release itself reports the lost lock.
#[test]
fn release_after_a_drop_reports_the_lost_lock() {
    let Some((tgtd, lun)) = rig("release_after_a_drop_reports_the_lost_lock") else {
        return;
    };
    let t = connect(&lun, "dropper");
    let locks = ScsiLocks::new(
        ScsiMethod::Reserve6,
        config(&t, "dropper", Duration::from_secs(5)),
    )
    .unwrap();
    let mut lock = locks.handle().unwrap();
    let g = lock.lock(Duration::from_secs(5)).unwrap();
    assert!(tgtd.drop_connections(&lun, "dropper").unwrap() >= 1);
    let err = g.release().unwrap_err();
    assert!(matches!(err, Error::Lost { .. }), "{err}");
}

/// Two processes of one host over SG_IO share the kernel's nexus; SCSI lets
/// a nexus reserve what it already holds. Simulated here with two lock
/// factories (two "processes") on one iSCSI session: without the host-local
/// lock both would hold the lock at once; with it the second waits.
#[test]
fn processes_sharing_a_nexus_need_the_host_lock() {
    let Some((_tgtd, lun)) = rig("processes_sharing_a_nexus_need_the_host_lock") else {
        return;
    };
    let t = connect(&lun, "shared-nexus");
    let timeout = Duration::from_secs(1);
    // Without a host lock: both "processes" get it, which is the hazard.
    let p1 = ScsiLocks::new(ScsiMethod::Reserve6, config(&t, "p1", timeout)).unwrap();
    let p2 = ScsiLocks::new(ScsiMethod::Reserve6, config(&t, "p2", timeout)).unwrap();
    let (mut h1, mut h2) = (p1.handle().unwrap(), p2.handle().unwrap());
    let g1 = h1.lock(Duration::from_secs(5)).unwrap();
    let g2 = h2.lock(Duration::from_millis(300)).unwrap();
    drop(g2);
    drop(g1);
    // With the host lock (an OFD lock on the device node): excluded.
    let node = tempfile::NamedTempFile::new().unwrap();
    node.as_file().set_len(64 * LB as u64).unwrap();
    let with_host = |name| {
        let mut c = config(&t, name, timeout);
        c.host_lock = Some(node.path().to_owned());
        ScsiLocks::new(ScsiMethod::Reserve6, c).unwrap()
    };
    let (p1, p2) = (with_host("p1"), with_host("p2"));
    let (mut h1, mut h2) = (p1.handle().unwrap(), p2.handle().unwrap());
    let g1 = h1.lock(Duration::from_secs(5)).unwrap();
    let err = h2.lock(Duration::from_millis(300)).unwrap_err();
    assert!(
        matches!(err, Error::Timeout { .. })
            && err.to_string().contains("another process of this host"),
        "{err}"
    );
    g1.release().unwrap();
    h2.lock(Duration::from_secs(5)).unwrap().release().unwrap();
}

// Regressions found in review, each reproduced against tgtd first.

/// Two lock users with the same key (processes misconfigured with one
/// initiator name): a live holder that shows progress is never preempted,
/// not even by a waiter whose own key holds the reservation.
#[test]
fn a_live_holder_with_our_key_is_not_preempted() {
    let Some((_tgtd, lun)) = rig("a_live_holder_with_our_key_is_not_preempted") else {
        return;
    };
    let lt = Duration::from_secs(2);
    let ta = connect(&lun, "samename");
    let tb = connect(&lun, "samename");
    let a = ScsiLocks::new(ScsiMethod::Persistent, config(&ta, "p1", lt)).unwrap();
    let mut cb = config(&tb, "p2", lt);
    cb.holder.pid += 1; // another process
    let b = ScsiLocks::new(ScsiMethod::Persistent, cb).unwrap();
    assert_eq!(a.key(), b.key());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut la = a.handle().unwrap();
            let g = la.lock(Duration::from_secs(5)).unwrap();
            let mut checks = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                g.still_held().unwrap();
                checks += 1;
                thread::sleep(Duration::from_millis(300));
            }
            g.release().unwrap();
            checks
        })
    };
    thread::sleep(Duration::from_millis(300));
    let mut lb = b.handle().unwrap();
    let err = lb.lock(Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(holder.join().unwrap() > 5);
}

/// A holder that stalled past the lock timeout and was preempted: its
/// late table write must not wait out the new holder's update and land on
/// top of it.
#[test]
fn a_preempted_holders_late_write_does_not_land() {
    let Some((_tgtd, lun)) = rig("a_preempted_holders_late_write_does_not_land") else {
        return;
    };
    let timeout = Duration::from_millis(1500);
    let ta = connect(&lun, "stalled");
    let tb = connect(&lun, "successor");
    let a = ScsiLocks::new(ScsiMethod::Persistent, config(&ta, "stalled", timeout)).unwrap();
    let b = ScsiLocks::new(ScsiMethod::Persistent, config(&tb, "successor", timeout)).unwrap();
    let mut la = a.handle().unwrap();
    std::mem::forget(la.lock(Duration::from_secs(5)).unwrap());
    let mut lb = b.handle().unwrap();
    let g = lb.lock(Duration::from_secs(20)).unwrap();
    let late = {
        let ta = ta.clone();
        thread::spawn(move || device(&ta).write_at(COUNTER_OFF, &vec![0xAA; LB], WriteMode::Fua))
    };
    thread::sleep(Duration::from_millis(500));
    let mut dev_b = device(&tb);
    dev_b
        .write_at(COUNTER_OFF, &vec![0xBB; LB], WriteMode::Fua)
        .unwrap();
    g.release().unwrap();
    let err = late.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");
    let mut buf = vec![0u8; LB];
    dev_b.read_at(COUNTER_OFF, &mut buf).unwrap();
    assert_eq!(buf[0], 0xBB, "the preempted holder's write landed");
}

/// scsi2, a stuck holder and two waiters: the first resets the LU and
/// takes the lock; the second sees the reset and starts watching the new
/// holder afresh instead of resetting it too.
#[test]
fn scsi2_waiters_do_not_reset_each_other() {
    let Some((_tgtd, lun)) = rig("scsi2_waiters_do_not_reset_each_other") else {
        return;
    };
    let timeout = Duration::from_millis(700);
    let ta = connect(&lun, "stuck");
    let a = ScsiLocks::new(ScsiMethod::Reserve6, config(&ta, "stuck", timeout)).unwrap();
    let mut la = a.handle().unwrap();
    std::mem::forget(la.lock(Duration::from_secs(5)).unwrap());
    let mut waiters = Vec::new();
    for w in ["w1", "w2"] {
        let t = connect(&lun, w);
        waiters.push(thread::spawn(move || {
            let l = ScsiLocks::new(ScsiMethod::Reserve6, config(&t, w, timeout)).unwrap();
            let mut h = l.handle().unwrap();
            let g = h.lock(Duration::from_secs(30)).unwrap();
            thread::sleep(Duration::from_millis(300));
            let held = g.still_held().map_err(|e| e.to_string());
            let released = g.release().map_err(|e| e.to_string());
            (w, held, released)
        }));
    }
    for w in waiters {
        let (w, held, released) = w.join().unwrap();
        assert!(
            held.is_ok() && released.is_ok(),
            "{w}: {held:?} {released:?}"
        );
    }
}

/// The connection drops while the lock is held and `still_held` is the
/// next command: it must not reconnect and report success.
#[test]
fn still_held_after_a_drop_is_lost() {
    let Some((tgtd, lun)) = rig("still_held_after_a_drop_is_lost") else {
        return;
    };
    for method in [ScsiMethod::Reserve6, ScsiMethod::Persistent] {
        let name = format!("sh-{method:?}").to_lowercase();
        let t = connect(&lun, &name);
        let locks = ScsiLocks::new(method, config(&t, &name, Duration::from_secs(5))).unwrap();
        let mut lock = locks.handle().unwrap();
        let g = lock.lock(Duration::from_secs(5)).unwrap();
        assert!(tgtd.drop_connections(&lun, &name).unwrap() >= 1);
        let err = g.still_held().unwrap_err();
        assert!(matches!(err, Error::Lost { .. }), "{method:?}: {err}");
        let _ = g.release();
    }
}
