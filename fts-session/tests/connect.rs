//! Connection set-up over a real file-backed device with real OFD locks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{format, format_with};

use fts_blockdev::OpenOptions;
use fts_layout::{OsType, Role};
use fts_lock::OfdLock;
use fts_session::{
    accept, claim, close, pending_for, wait_accepted, Error, Heartbeat, Identity, Reaped, Reaper,
    Shared, Slot,
};
use uuid::Uuid;

const T: Duration = Duration::from_secs(5);

fn open(path: &Path) -> (Shared, OfdLock) {
    let dev = fts_blockdev::open(path.to_str().unwrap(), &OpenOptions::default()).unwrap();
    (Shared::open(dev).unwrap(), OfdLock::open(path).unwrap())
}

fn id(name: &str) -> Identity {
    Identity {
        name: name.into(),
        os: OsType::Unix,
        host: Uuid::new_v4(),
    }
}

#[test]
fn initiator_and_connector_handshake_then_close() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    format(&p, 4);
    let (mut ini, mut ilock) = open(&p);
    let (mut con, mut clock) = open(&p);
    let c = claim(&mut ini, &mut ilock, &id("alice"), "bob", T).unwrap();
    assert_eq!(c.slot, 1, "process id = 1-based entry number");
    assert_eq!(c.generation, 1);
    assert!(pending_for(&mut con, "carol").unwrap().is_empty());
    let pending = pending_for(&mut con, "bob").unwrap();
    assert_eq!(pending, vec![c]);
    assert!(accept(&mut con, &mut clock, &id("bob"), c, T).unwrap());
    // A second accept of the same request is refused: it is no longer pending.
    assert!(!accept(&mut con, &mut clock, &id("bob"), c, T).unwrap());
    wait_accepted(&mut ini, &mut ilock, c, "bob", T, T).unwrap();
    let e = con.read_entry(1).unwrap();
    assert!(e.is_allocated() && e.is_processing());
    assert_eq!(
        (e.pro_requestor.as_str(), e.pro_requestee.as_str()),
        ("alice", "bob")
    );
    close(&mut ini, &mut ilock, c, T).unwrap();
    let e = con.read_entry(1).unwrap();
    assert!(e.is_free());
    assert_eq!(e.pro_generation, 1, "the generation survives the free");
    let again = claim(&mut ini, &mut ilock, &id("alice"), "bob", T).unwrap();
    assert_eq!(
        again,
        fts_session::Claim {
            slot: 1,
            generation: 2
        }
    );
}

#[test]
fn unknown_connector_times_out_and_frees_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    format(&p, 2);
    let (mut ini, mut lock) = open(&p);
    let c = claim(&mut ini, &mut lock, &id("alice"), "nobody", T).unwrap();
    let err = wait_accepted(
        &mut ini,
        &mut lock,
        c,
        "nobody",
        Duration::from_millis(200),
        T,
    )
    .unwrap_err();
    assert!(matches!(err, Error::NoConnector { slot: 1, .. }), "{err}");
    assert!(err.to_string().contains("nobody"), "{err}");
    assert!(ini.read_entry(1).unwrap().is_free());
}

#[test]
fn full_table_of_live_connections_is_a_clear_error_and_frees_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    format_with(&p, 2, 600, 100);
    let (mut s, mut lock) = open(&p);
    let a = claim(&mut s, &mut lock, &id("a"), "srv", T).unwrap();
    let b = claim(&mut s, &mut lock, &id("b"), "srv", T).unwrap();
    // Both claimants are alive: their leases advance.
    let ha = Heartbeat::start(&s, a, Role::Initiator, Uuid::new_v4()).unwrap();
    let hb = Heartbeat::start(&s, b, Role::Initiator, Uuid::new_v4()).unwrap();
    let before = s.read_table().unwrap();
    let t0 = Instant::now();
    let err = claim(&mut s, &mut lock, &id("c"), "srv", T).unwrap_err();
    assert!(matches!(err, Error::TableFull { max: 2, .. }), "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    // It watched for dead entries for about a lease timeout first.
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(s.read_table().unwrap(), before);
    assert_ne!(a.slot, b.slot);
    ha.stop().unwrap();
    hb.stop().unwrap();
}

#[test]
fn a_full_table_of_dead_connections_is_reclaimed_with_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    format_with(&p, 2, 600, 100);
    let (mut s, mut lock) = open(&p);
    // Two initiators that died right after claiming: nothing of them moves.
    let a = claim(&mut s, &mut lock, &id("a"), "srv", T).unwrap();
    let b = claim(&mut s, &mut lock, &id("b"), "srv", T).unwrap();
    let c = claim(&mut s, &mut lock, &id("c"), "srv", T).unwrap();
    let old = if c.slot == a.slot { a } else { b };
    assert_eq!(c.slot, old.slot);
    assert!(
        c.generation >= old.generation + 2,
        "the reclaim bumps the generation: {old:?} -> {c:?}"
    );
    // The dead owner of the old generation is fenced.
    assert!(matches!(
        fts_session::check_owner(&mut s, old),
        Err(Error::Fenced { .. })
    ));
    fts_session::check_owner(&mut s, c).unwrap();
}

#[test]
fn a_damaged_entry_is_skipped_then_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    format_with(&p, 2, 600, 100);
    let (mut s, mut lock) = open(&p);
    let a = claim(&mut s, &mut lock, &id("a"), "srv", T).unwrap();
    // Flip a bit in the middle of slot a's record.
    let lb = s.geometry().pid_entry_lb(a.slot);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let off = lb * fts_layout::LB as u64 + 100;
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, off).unwrap();
        f.write_all_at(&[byte[0] ^ 0x10], off).unwrap();
    }
    assert!(matches!(s.read_slot(a.slot).unwrap(), Slot::Damaged { .. }));
    // The table still reads; the damaged slot is left out.
    assert_eq!(s.read_table().unwrap().len(), 1);
    let mut reaper = Reaper::new(&s);
    let first = reaper.scan(&mut s, &mut lock, T).unwrap();
    assert!(
        matches!(first.as_slice(), [Reaped::Damaged { slot, .. }] if *slot == a.slot),
        "{first:?}"
    );
    let t0 = Instant::now();
    let freed = loop {
        std::thread::sleep(Duration::from_millis(50));
        let r = reaper.scan(&mut s, &mut lock, T).unwrap();
        if let Some(f) = r.into_iter().find(|r| matches!(r, Reaped::Freed { .. })) {
            break f;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "never freed");
    };
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    assert!(freed.to_string().contains("damaged"), "{freed}");
    let e = s.read_entry(a.slot).unwrap();
    assert!(e.is_free());
    assert!(e.pro_generation > a.generation, "{e:?}");
}

#[test]
fn names_too_long_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    format(&p, 2);
    let (mut s, mut lock) = open(&p);
    let long = "x".repeat(33);
    assert!(matches!(
        claim(&mut s, &mut lock, &id("a"), &long, T),
        Err(Error::Name(_))
    ));
    assert!(Identity::unix(&long).is_err());
}

/// Eight initiators racing, each with its own device handle and lock: every
/// claim gets a distinct entry (checked by re-reading the table).
#[test]
fn concurrent_claims_never_share_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    format(&p, 8);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || {
                let (mut s, mut lock) = open(&p);
                claim(&mut s, &mut lock, &id(&format!("c{i}")), "srv", T).unwrap()
            })
        })
        .collect();
    let mut slots: Vec<u32> = handles
        .into_iter()
        .map(|h| h.join().unwrap().slot)
        .collect();
    slots.sort();
    assert_eq!(slots, (1..=8).collect::<Vec<_>>());
    let (mut s, _) = open(&p);
    let mut names: Vec<String> = s
        .read_table()
        .unwrap()
        .into_iter()
        .map(|e| e.pro_requestor)
        .collect();
    names.sort();
    assert_eq!(names, (0..8).map(|i| format!("c{i}")).collect::<Vec<_>>());
}

/// A reaper that could not look for a while (its reads were held up, or
/// its process stopped) does not count that gap as the slots' silence:
/// a slot is freed only after a lease timeout watched without a gap.
#[test]
fn a_reaper_that_was_not_watching_does_not_count_the_gap_as_silence() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    format_with(&p, 2, 400, 100);
    let (mut s, mut lock) = open(&p);
    // A claim whose initiator never beats: dead from the start.
    let c = claim(&mut s, &mut lock, &id("ghost"), "srv", T).unwrap();
    let mut reaper = Reaper::new(&s);
    assert!(reaper.scan(&mut s, &mut lock, T).unwrap().is_empty());
    // Not watching for two lease timeouts.
    std::thread::sleep(Duration::from_millis(800));
    let after_gap = reaper.scan(&mut s, &mut lock, T).unwrap();
    assert!(
        !after_gap.iter().any(|r| matches!(r, Reaped::Freed { .. })),
        "freed right after a gap in watching: {after_gap:?}"
    );
    assert!(!s.read_entry(c.slot).unwrap().is_free());
    // Watching steadily, it is freed after one more lease timeout.
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let r = reaper.scan(&mut s, &mut lock, T).unwrap();
        if r.iter().any(|r| matches!(r, Reaped::Freed { .. })) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "never freed");
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t0.elapsed()
    );
    assert!(s.read_entry(c.slot).unwrap().is_free());
}
