//! Leases on a real file-backed device: a live peer stays alive, an
//! abandoned one is declared dead after the lease timeout from the MCB, a
//! cleanly stopped one is seen as closed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use fts_blockdev::OpenOptions;
use fts_layout::{PidEntry, Role, LEASE_ALIVE, PRO_FLAG_ALLOCATED};
use fts_session::{read_lease, Claim, Error, Heartbeat, PeerWatch, Shared};
use uuid::Uuid;

fn shared(p: &std::path::Path) -> Shared {
    Shared::open(fts_blockdev::open(p.to_str().unwrap(), &OpenOptions::default()).unwrap()).unwrap()
}

/// Writes `claim` into its entry, as a claim would: a heartbeat beats only
/// for a slot that is its own.
fn own(s: &mut Shared, claim: Claim) -> Claim {
    s.write_entry(&PidEntry {
        pro_process_id: claim.slot,
        pro_flag_process: PRO_FLAG_ALLOCATED,
        pro_generation: claim.generation,
        pro_requestor: "a".into(),
        pro_requestee: "b".into(),
        ..PidEntry::free(claim.slot)
    })
    .unwrap();
    claim
}

const LEASE_MS: u32 = 400;
const BEAT_MS: u32 = 50;

fn watch_for(s: &mut Shared, w: &mut PeerWatch, how_long: Duration) -> Result<(), Error> {
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        w.check(s)?;
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[test]
fn a_beating_peer_stays_alive_and_an_abandoned_one_dies() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    common::format_with(&p, 2, LEASE_MS, BEAT_MS);
    let mut me = shared(&p);
    let claim = own(
        &mut me,
        Claim {
            slot: 1,
            generation: 1,
        },
    );
    let hb = Heartbeat::start(&me, claim, Role::Initiator, Uuid::new_v4()).unwrap();
    let mut w = PeerWatch::new(&me, claim, Role::Initiator);
    watch_for(&mut me, &mut w, Duration::from_millis(3 * LEASE_MS as u64)).unwrap();
    let l = read_lease(&mut me, 1, Role::Initiator).unwrap();
    assert_eq!(l.state, LEASE_ALIVE);
    assert!(l.counter > 5, "counter advanced only to {}", l.counter);
    // Abandon without a clean stop: the peer must notice within the timeout.
    drop(hb);
    let t = Instant::now();
    let err = watch_for(&mut me, &mut w, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, Error::PeerDead { slot: 1, .. }), "{err}");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(LEASE_MS as u64 - BEAT_MS as u64),
        "{took:?}"
    );
    assert!(
        took < Duration::from_millis(3 * LEASE_MS as u64),
        "{took:?}"
    );
}

#[test]
fn a_clean_stop_reads_as_closed_and_old_generations_never_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    common::format_with(&p, 2, LEASE_MS, BEAT_MS);
    let mut me = shared(&p);
    let old = own(
        &mut me,
        Claim {
            slot: 2,
            generation: 1,
        },
    );
    let hb = Heartbeat::start(&me, old, Role::Connector, Uuid::new_v4()).unwrap();
    // A watcher of generation 2 ignores generation 1's beats and times out.
    let mut w2 = PeerWatch::new(
        &me,
        Claim {
            slot: 2,
            generation: 2,
        },
        Role::Connector,
    );
    let err = watch_for(&mut me, &mut w2, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, Error::PeerDead { .. }), "{err}");
    let mut w1 = PeerWatch::new(&me, old, Role::Connector);
    w1.check(&mut me).unwrap();
    hb.stop().unwrap();
    let err = w1.check(&mut me).unwrap_err();
    assert!(matches!(err, Error::PeerClosed { slot: 2, .. }), "{err}");
}

/// A heartbeat whose slot is reclaimed (another generation claims it)
/// stops at once and never writes the old generation's lease again.
#[test]
fn a_heartbeat_whose_slot_was_reclaimed_stops_writing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    common::format_with(&p, 2, LEASE_MS, BEAT_MS);
    let mut me = shared(&p);
    let old = own(
        &mut me,
        Claim {
            slot: 1,
            generation: 1,
        },
    );
    let hb = Heartbeat::start(&me, old, Role::Connector, Uuid::new_v4()).unwrap();
    std::thread::sleep(Duration::from_millis(3 * BEAT_MS as u64));
    assert!(!hb.fenced());
    // The slot is reclaimed and a new connection writes its lease.
    let new = own(
        &mut me,
        Claim {
            slot: 1,
            generation: 3,
        },
    );
    let hb_new = Heartbeat::start(&me, new, Role::Connector, Uuid::new_v4()).unwrap();
    let t0 = Instant::now();
    while !hb.fenced() {
        assert!(t0.elapsed() < Duration::from_secs(2), "never fenced");
        std::thread::sleep(Duration::from_millis(5));
    }
    // For many beats after that, the lease on the device is the new one's.
    for _ in 0..10 {
        let l = read_lease(&mut me, 1, Role::Connector).unwrap();
        assert_eq!(
            l.generation, 3,
            "an old-generation lease was written: {l:?}"
        );
        std::thread::sleep(Duration::from_millis(BEAT_MS as u64));
    }
    assert!(matches!(hb.stop(), Err(Error::Fenced { slot: 1, .. })));
    hb_new.stop().unwrap();
}

/// The fts check of the device stays clean with leases written.
#[test]
fn leases_keep_the_layout_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    common::format_with(&p, 2, LEASE_MS, BEAT_MS);
    let mut me = shared(&p);
    let claim = own(
        &mut me,
        Claim {
            slot: 1,
            generation: 1,
        },
    );
    let hb = Heartbeat::start(&me, claim, Role::Initiator, Uuid::new_v4()).unwrap();
    hb.stop().unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let g = me.geometry();
    let end = g.control_end_lb() as usize * fts_layout::LB;
    let (_, _, problems) =
        fts_layout::check::check_master(&bytes[..end], bytes.len() as u64).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}
