//! Server registrations over a real file-backed device with real OFD
//! locks: one live holder per name, a dead one taken over after the lease
//! timeout (and fenced), a race between starters won exactly once, and
//! the reaper freeing dead registrations but never live ones.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::format_with;

use fts_blockdev::OpenOptions;
use fts_layout::{
    OsType, PidEntry, Role, LEASE_CLOSED, PRO_FLAG_ALLOCATED, PRO_FLAG_PROCESSING, PRO_FLAG_SERVER,
};
use fts_lock::OfdLock;
use fts_session::{
    check_owner, pending_for, read_lease, registered, registrations, Error, Identity, Reaped,
    Reaper, Registration, Shared,
};
use uuid::Uuid;

const T: Duration = Duration::from_secs(5);
const LEASE_MS: u64 = 600;
const BEAT_MS: u32 = 50;

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

/// A log that keeps its lines.
#[derive(Default, Clone)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn f(&self) -> impl Fn(String) + '_ {
        move |m| self.0.lock().unwrap().push(m)
    }
    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

fn device(slots: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.img");
    format_with(&p, slots, LEASE_MS as u32, BEAT_MS);
    (dir, p)
}

fn register(p: &Path, name: &str, log: &Log) -> Result<Registration, Error> {
    let (mut s, mut l) = open(p);
    Registration::register(&mut s, &mut l, &id(name), T, &log.f())
}

#[test]
fn a_live_holder_keeps_its_name_and_a_clean_release_frees_it() {
    let (_dir, p) = device(4);
    let log = Log::default();
    let me = id("srv");
    let (mut s, mut l) = open(&p);
    let a = Registration::register(&mut s, &mut l, &me, T, &log.f()).unwrap();
    // The highest free entry, flagged as a registration, names both ways.
    assert_eq!(a.claim().slot, 4);
    let e = s.read_entry(4).unwrap();
    assert_eq!(
        e.pro_flag_process,
        PRO_FLAG_ALLOCATED | PRO_FLAG_PROCESSING | PRO_FLAG_SERVER
    );
    assert_eq!(
        (e.pro_requestor.as_str(), e.pro_requestee.as_str()),
        ("srv", "srv")
    );
    assert_eq!(
        (e.pro_requestor_host, e.pro_requestee_host),
        (me.host, me.host)
    );
    assert!(e.pro_alloc_time > 0);
    assert!(
        log.text().contains("registered as fts server \"srv\""),
        "{}",
        log.text()
    );
    // No connector takes it for a request.
    assert!(pending_for(&mut s, "srv").unwrap().is_empty());
    let r = registered(&mut s, "srv").unwrap().expect("registered");
    assert_eq!((r.slot, r.host), (4, me.host));
    assert_eq!(r.pid(), Some(std::process::id()));
    assert!(registered(&mut s, "nobody").unwrap().is_none());

    // A second server of that name is refused within about a heartbeat,
    // naming the holder.
    let t = Instant::now();
    let err = register(&p, "srv", &Log::default()).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(LEASE_MS),
        "{:?}",
        t.elapsed()
    );
    match &err {
        Error::NameTaken { name, holder, .. } => {
            assert_eq!(name, "srv");
            assert!(holder.contains("entry 4"), "{holder}");
            assert!(holder.contains(&me.host.to_string()), "{holder}");
            assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            );
            assert!(holder.contains("UTC"), "{holder}");
        }
        e => panic!("{e}"),
    }
    // Another name goes into the next entry down.
    let b = register(&p, "other", &Log::default()).unwrap();
    assert_eq!(b.claim().slot, 3);
    let names: Vec<String> = registrations(&mut s)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["other", "srv"]);
    b.release(&mut s, &mut l, T).unwrap();

    // A clean release: lease closed, entry free (generation kept).
    let g = a.claim().generation;
    a.release(&mut s, &mut l, T).unwrap();
    let e = s.read_entry(4).unwrap();
    assert!(e.is_free() && e.pro_generation == g, "{e:?}");
    assert_eq!(
        read_lease(&mut s, 4, Role::Connector).unwrap().state,
        LEASE_CLOSED
    );
    assert!(registered(&mut s, "srv").unwrap().is_none());
    // And the name is free at once.
    let t = Instant::now();
    let c = register(&p, "srv", &Log::default()).unwrap();
    assert!(t.elapsed() < Duration::from_millis(LEASE_MS));
    assert_eq!(c.claim().generation, g + 1);
}

#[test]
fn of_servers_registering_at_the_same_moment_exactly_one_wins() {
    let (_dir, p) = device(8);
    for round in 0..4 {
        let n = 6;
        let gate = Arc::new(Barrier::new(n));
        let tries: Vec<_> = (0..n)
            .map(|_| {
                let (p, gate) = (p.clone(), gate.clone());
                std::thread::spawn(move || {
                    let (mut s, mut l) = open(&p);
                    let me = id("srv");
                    gate.wait();
                    Registration::register(&mut s, &mut l, &me, T, &|_| {})
                })
            })
            .collect();
        let results: Vec<_> = tries.into_iter().map(|t| t.join().unwrap()).collect();
        let won: Vec<&Registration> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let outcomes: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(r) => format!("registered in entry {}", r.claim().slot),
                Err(e) => e.to_string(),
            })
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {outcomes:#?}");
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, Error::NameTaken { .. }), "round {round}: {e}");
            }
        }
        let (mut s, mut l) = open(&p);
        assert_eq!(registrations(&mut s).unwrap().len(), 1, "round {round}");
        for r in results.into_iter().flatten() {
            r.release(&mut s, &mut l, T).unwrap();
        }
    }
}

#[test]
fn a_dead_holder_is_taken_over_after_the_lease_timeout_and_fenced() {
    let (_dir, p) = device(4);
    let a = register(&p, "srv", &Log::default()).unwrap();
    let old = a.claim();
    // Dropped without release: its heartbeat stops, nothing closes it, as
    // when the process is killed.
    drop(a);
    let log = Log::default();
    let t = Instant::now();
    let b = register(&p, "srv", &log).unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(LEASE_MS), "{took:?}");
    assert!(took < Duration::from_millis(4 * LEASE_MS), "{took:?}");
    assert_eq!(b.claim().slot, old.slot);
    assert_eq!(b.claim().generation, old.generation + 1);
    let said = log.text();
    assert!(
        said.contains("reclaimed the registration of a dead fts server \"srv\""),
        "{said}"
    );
    assert!(said.contains("made no progress"), "{said}");
    // The old holder, should it wake up, is fenced.
    let (mut s, _) = open(&p);
    assert!(matches!(
        check_owner(&mut s, old),
        Err(Error::Fenced { .. })
    ));
}

#[test]
fn a_registration_left_with_a_closed_lease_is_taken_at_once() {
    let (_dir, p) = device(4);
    let (mut s, mut l) = open(&p);
    let a = register(&p, "srv", &Log::default()).unwrap();
    let c = a.claim();
    let entry = s.read_entry(c.slot).unwrap();
    a.release(&mut s, &mut l, T).unwrap();
    // As if the process died after closing its lease, before freeing.
    s.write_entry(&entry).unwrap();
    assert!(registered(&mut s, "srv").unwrap().is_none(), "closed");
    let t = Instant::now();
    let log = Log::default();
    let b = register(&p, "srv", &log).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(LEASE_MS),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        b.claim(),
        fts_session::Claim {
            slot: c.slot,
            generation: c.generation + 1
        }
    );
    assert!(
        log.text().contains("its lease says it stopped"),
        "{}",
        log.text()
    );
}

#[test]
fn a_holder_whose_entry_is_taken_over_learns_it_and_leaves_the_new_holder_alone() {
    let (_dir, p) = device(4);
    let (mut s, mut l) = open(&p);
    let mut a = register(&p, "srv", &Log::default()).unwrap();
    let c = a.claim();
    // Someone took the entry over (as a server does once it judged us
    // dead while we were stopped): the same name, a newer generation.
    let thief = id("srv");
    let mut e = s.read_entry(c.slot).unwrap();
    e.pro_generation += 1;
    e.pro_requestee_host = thief.host;
    s.write_entry(&e).unwrap();
    let log = Log::default();
    let t = Instant::now();
    while a.keep_alive(&log.f()) {
        assert!(t.elapsed() < T, "never noticed the loss");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(a.lost());
    assert!(log.text().contains("no longer its own"), "{}", log.text());
    // The thief's entry is left alone by the release.
    a.release(&mut s, &mut l, T).unwrap();
    assert_eq!(s.read_entry(c.slot).unwrap(), e);
}

#[test]
fn the_reaper_frees_a_dead_registration_and_never_a_live_one() {
    let (_dir, p) = device(4);
    let live = register(&p, "alive", &Log::default()).unwrap();
    let dead = register(&p, "gone", &Log::default()).unwrap();
    let (live_slot, dead_slot) = (live.claim().slot, dead.claim().slot);
    drop(dead);
    let (mut s, mut l) = open(&p);
    let mut reaper = Reaper::new(&s);
    let mut freed = Vec::new();
    let end = Instant::now() + Duration::from_millis(4 * LEASE_MS);
    while Instant::now() < end {
        freed.extend(reaper.scan(&mut s, &mut l, T).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(freed.len(), 1, "{freed:?}");
    match &freed[0] {
        Reaped::Freed { slot, what, .. } => {
            assert_eq!(*slot, dead_slot);
            assert!(
                what.contains("registration of fts server \"gone\""),
                "{what}"
            );
            assert!(!what.contains("->"), "not a connection: {what}");
        }
        r => panic!("{r}"),
    }
    assert!(s.read_entry(dead_slot).unwrap().is_free());
    let e = s.read_entry(live_slot).unwrap();
    assert!(e.is_server() && e.pro_requestee == "alive");
    live.release(&mut s, &mut l, T).unwrap();
}

#[test]
fn a_full_table_frees_the_dead_for_a_registration_or_says_it_is_full() {
    let (_dir, p) = device(2);
    let (mut s, _) = open(&p);
    for slot in 1..=2 {
        s.write_entry(&PidEntry {
            pro_flag_process: PRO_FLAG_ALLOCATED | PRO_FLAG_PROCESSING,
            pro_generation: 3,
            pro_requestor: format!("gone{slot}"),
            pro_requestee: "x".into(),
            ..PidEntry::free(slot)
        })
        .unwrap();
    }
    let log = Log::default();
    let a = register(&p, "srv", &log).unwrap();
    assert!(log.text().contains("is full"), "{}", log.text());
    assert!(
        log.text().contains("freed Process Id Table entry"),
        "{}",
        log.text()
    );
    // Both entries now hold live registrations: a third name finds no
    // dead to free.
    let b = register(&p, "srv2", &Log::default()).unwrap();
    let t = Instant::now();
    let err = register(&p, "srv3", &Log::default()).unwrap_err();
    assert!(matches!(err, Error::TableFull { .. }), "{err}");
    assert!(
        t.elapsed() >= Duration::from_millis(LEASE_MS),
        "{:?}",
        t.elapsed()
    );
    drop((a, b));
}
