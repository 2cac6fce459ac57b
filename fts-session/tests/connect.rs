//! Connection set-up over a real file-backed device with real OFD locks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::format;

use fts_blockdev::OpenOptions;
use fts_layout::OsType;
use fts_lock::OfdLock;
use fts_session::{accept, claim, close, pending_for, wait_accepted, Error, Identity, Shared};
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
fn full_table_is_a_clear_error_and_frees_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    format(&p, 2);
    let (mut s, mut lock) = open(&p);
    let a = claim(&mut s, &mut lock, &id("a"), "srv", T).unwrap();
    let b = claim(&mut s, &mut lock, &id("b"), "srv", T).unwrap();
    let before = s.read_table().unwrap();
    let err = claim(&mut s, &mut lock, &id("c"), "srv", T).unwrap_err();
    assert!(matches!(err, Error::TableFull { max: 2, .. }), "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    assert_eq!(s.read_table().unwrap(), before);
    assert_ne!(a.slot, b.slot);
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
