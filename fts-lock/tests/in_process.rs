//! OfdLock within one process, lock-kind parsing and backend selection.

// Test helpers (and the child processes) outside #[test] fns may panic too.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fts_lock::{open_lock, Error, LockKind, OfdLock, TableLock};
use rstest::rstest;

fn device() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    (dir, path)
}

#[test]
fn two_instances_in_one_process_exclude_each_other() {
    let (_dir, path) = device();
    let mut a = OfdLock::open(&path).unwrap();
    let mut b = OfdLock::open(&path).unwrap();

    let guard = a.lock(Duration::from_millis(100)).unwrap();
    guard.still_held().unwrap();

    let start = Instant::now();
    let err = b.lock(Duration::from_millis(100)).unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(b.try_lock().unwrap().is_none());

    drop(guard);
    let guard_b = b.lock(Duration::from_millis(100)).unwrap();
    assert!(a.try_lock().unwrap().is_none());

    // Explicit, checked release.
    guard_b.release().unwrap();
    let guard_a = a.lock(Duration::ZERO).unwrap();
    guard_a.release().unwrap();
    b.lock(Duration::ZERO).unwrap().release().unwrap();
}

#[test]
fn from_file_locks_the_description_it_is_given() {
    let (_dir, path) = device();
    let rw = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap()
    };
    let mut a = OfdLock::from_file(rw(), path.clone());
    let mut b = OfdLock::open(&path).unwrap();
    assert_eq!(a.path(), path);
    let guard = a.try_lock().unwrap().expect("the lock is free");
    assert!(b.try_lock().unwrap().is_none(), "a holds it");
    drop(guard);
    assert!(b.try_lock().unwrap().is_some());
}

#[test]
fn waiter_gets_the_lock_when_it_is_released_during_the_wait() {
    let (_dir, path) = device();
    let mut a = OfdLock::open(&path).unwrap();
    let mut b = OfdLock::open(&path).unwrap();
    let holder = std::thread::spawn(move || {
        let guard = a.lock(Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        guard.release().unwrap();
    });
    std::thread::sleep(Duration::from_millis(30));
    let start = Instant::now();
    let guard = b.lock(Duration::from_secs(10)).unwrap();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    drop(guard);
    holder.join().unwrap();
}

#[test]
fn works_on_a_file_shorter_than_the_lock_record() {
    // OFD locks may cover bytes past the end of the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.img");
    std::fs::File::create(&path).unwrap();
    let mut a = OfdLock::open(&path).unwrap();
    let mut b = OfdLock::open(&path).unwrap();
    let g = a.lock(Duration::ZERO).unwrap();
    assert!(b.try_lock().unwrap().is_none());
    drop(g);
    assert!(b.try_lock().unwrap().is_some());
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "locking wrote nothing"
    );
}

#[test]
fn timeout_message_names_the_path_and_the_wait() {
    let (_dir, path) = device();
    let mut a = OfdLock::open(&path).unwrap();
    let mut b = OfdLock::open(&path).unwrap();
    let _g = a.lock(Duration::ZERO).unwrap();
    let err = b.lock(Duration::from_millis(100)).unwrap_err();
    let Error::Timeout { waited, .. } = &err else {
        panic!("expected a timeout, got {err:?}");
    };
    assert!(*waited >= Duration::from_millis(100));
    let msg = err.to_string();
    assert!(msg.contains(path.to_str().unwrap()), "{msg}");
    assert!(msg.contains(&format!("{waited:.1?}")), "{msg}");
    assert!(msg.contains("ms"), "{msg}");
    assert!(msg.contains("OFD byte-range lock on LB 6"), "{msg}");
}

#[test]
fn open_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.img");
    let err = OfdLock::open(&path).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.img"), "{err}");
    assert!(!path.exists(), "open must not create the file");
}

#[test]
fn describe() {
    let (_dir, path) = device();
    let lock = OfdLock::open(&path).unwrap();
    assert_eq!(lock.describe(), "file (OFD byte-range lock on LB 6)");
    assert_eq!(lock.path(), path);
}

#[rstest]
#[case("file", Some(LockKind::File))]
#[case("scsi2", Some(LockKind::Scsi2))]
#[case("pr", Some(LockKind::Pr))]
#[case("caw", Some(LockKind::Caw))]
#[case("auto", Some(LockKind::Auto))]
#[case("FILE", Some(LockKind::File))]
#[case("Pr", Some(LockKind::Pr))]
#[case("", None)]
#[case("scsi3", None)]
#[case("ofd", None)]
#[case(" file", None)]
fn lock_kind_parsing(#[case] text: &str, #[case] expected: Option<LockKind>) {
    match (text.parse::<LockKind>(), expected) {
        (Ok(kind), Some(expected)) => {
            assert_eq!(kind, expected);
            assert_eq!(kind.to_string().parse::<LockKind>().unwrap(), kind);
        }
        (Err(err), None) => {
            assert!(matches!(err, Error::UnknownKind { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("{text:?}")), "{msg}");
            for choice in ["file", "scsi2", "pr", "caw", "auto"] {
                assert!(msg.contains(choice), "{msg} lacks {choice}");
            }
        }
        (got, expected) => panic!("{text:?}: got {got:?}, expected {expected:?}"),
    }
}

#[test]
fn lock_kind_names_round_trip() {
    for kind in LockKind::ALL {
        assert_eq!(kind.as_str().parse::<LockKind>().unwrap(), kind);
    }
    assert_eq!(LockKind::default(), LockKind::Auto);
}

#[rstest]
#[case(LockKind::File)]
#[case(LockKind::Auto)]
fn open_lock_on_a_file_gives_the_file_backend(#[case] kind: LockKind) {
    let (_dir, path) = device();
    let mut lock = open_lock(kind, path.to_str().unwrap()).unwrap();
    assert_eq!(lock.describe(), "file (OFD byte-range lock on LB 6)");
    let mut other = OfdLock::open(&path).unwrap();
    let g = lock.lock(Duration::ZERO).unwrap();
    assert!(other.try_lock().unwrap().is_none());
    g.release().unwrap();
    assert!(other.try_lock().unwrap().is_some());
}

#[rstest]
#[case(LockKind::Scsi2)]
#[case(LockKind::Pr)]
#[case(LockKind::Caw)]
fn scsi_kinds_on_a_file_are_unsupported(#[case] kind: LockKind) {
    let (_dir, path) = device();
    let err = open_lock(kind, path.to_str().unwrap()).unwrap_err();
    match &err {
        Error::Unsupported {
            kind: k, reason, ..
        } => {
            assert_eq!(*k, kind);
            assert_eq!(*reason, "needs a SCSI device (iscsi:// or /dev/sg*)");
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(kind.as_str()) && msg.contains(path.to_str().unwrap()),
        "{msg}"
    );
}

#[rstest]
#[case(LockKind::File)]
#[case(LockKind::Scsi2)]
#[case(LockKind::Pr)]
#[case(LockKind::Caw)]
#[case(LockKind::Auto)]
fn scsi_locations_are_unsupported_for_now(#[case] kind: LockKind) {
    let err = open_lock(kind, "iscsi://192.0.2.1/iqn.2000-01.com.example:disk/0").unwrap_err();
    assert!(
        matches!(err, Error::Unsupported { kind: k, .. } if k == kind),
        "{err:?}"
    );
}

#[rstest]
#[case(LockKind::File)]
#[case(LockKind::Auto)]
fn character_devices_are_not_file_locked(#[case] kind: LockKind) {
    // /dev/sg* is a character device; /dev/null stands in for it.
    let err = open_lock(kind, "/dev/null").unwrap_err();
    assert!(
        matches!(err, Error::Unsupported { kind: k, .. } if k == kind),
        "{err:?}"
    );
}

#[test]
fn auto_on_a_missing_path_fails_to_open() {
    let err = open_lock(LockKind::Auto, "/nonexistent/fts-lock-test.img").unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
}
