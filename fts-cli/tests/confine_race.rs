//! Confinement that cannot race, with real `fts` processes: while gets of
//! a path inside the server's root run, a thread keeps replacing that path
//! with a symbolic link to a secret file outside the root and back (by
//! renaming a prepared symlink, then a prepared hard link of the inside
//! file, over it). No get may ever deliver the secret's bytes: each one
//! either delivers the inside file or is refused cleanly. Likewise, puts
//! into a directory that keeps being swapped for a symlink to a directory
//! outside the root never create anything there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod robust_common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use robust_common::*;

/// Gets in all; `CLIENTS` of them run at a time (the device has 4 slots).
const GETS: usize = 300;
const CLIENTS: usize = 3;

/// What the gets saw.
#[derive(Debug, Default)]
struct Outcomes {
    /// Delivered the inside file's bytes.
    inside: usize,
    /// Refused by the server (exit 8), nothing written locally.
    refused: usize,
    /// Delivered the secret's bytes: the confinement was escaped.
    leaked: Vec<String>,
    /// Anything else (other exit codes, other bytes, a local file left by
    /// a failure).
    odd: Vec<String>,
}

/// Keeps swapping `target` between a regular file (a hard link of
/// `master`) and a symlink to `secret` until `stop` is raised; returns
/// (swaps to the symlink, swaps back). Every swap is one rename, so
/// `target` always exists.
fn swapper(
    target: &Path,
    master: &Path,
    secret: &Path,
    stage: &Path,
    stop: &AtomicBool,
    swaps: &AtomicU64,
) -> (u64, u64) {
    let link = stage.join("link");
    let file = stage.join("file");
    let (mut to_link, mut to_file) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        std::os::unix::fs::symlink(secret, &link).unwrap();
        std::fs::rename(&link, target).unwrap();
        to_link += 1;
        std::fs::hard_link(master, &file).unwrap();
        std::fs::rename(&file, target).unwrap();
        to_file += 1;
        swaps.fetch_add(1, Ordering::Relaxed);
    }
    (to_link, to_file)
}

#[test]
fn a_symlink_swapped_in_during_gets_never_yields_a_file_outside_the_root() {
    let rig = Rig::new();
    let inside = random(8192, 1);
    let secret_bytes = random(8192, 2);
    assert_ne!(inside, secret_bytes);
    // Outside the root, on the same file system (renames must work).
    let secret = rig.dir.path().join("secret");
    std::fs::write(&secret, &secret_bytes).unwrap();
    let stage = rig.dir.path().join("stage");
    std::fs::create_dir(&stage).unwrap();
    let master = stage.join("master");
    std::fs::write(&master, &inside).unwrap();
    let target = rig.root.join("f");
    std::fs::hard_link(&master, &target).unwrap();
    // Without the race, the path is served and the secret is not.
    let o = rig.client("c0", &["get", "srv", "f", s(&rig.local("plain"))]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(rig.local("plain")).unwrap(), inside);

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapping = {
        let (target, master, secret, stage) = (
            target.clone(),
            master.clone(),
            secret.clone(),
            stage.clone(),
        );
        let (stop, swaps) = (stop.clone(), swaps.clone());
        std::thread::spawn(move || swapper(&target, &master, &secret, &stage, &stop, &swaps))
    };
    // The swapper is running before the first get.
    assert!(wait_until(Duration::from_secs(5), || swaps
        .load(Ordering::Relaxed)
        > 100));

    let started = Instant::now();
    let outcomes = std::sync::Mutex::new(Outcomes::default());
    let next = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (rig, outcomes, next) = (&rig, &outcomes, &next);
            let (inside, secret_bytes) = (&inside, &secret_bytes);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= GETS as u64 {
                    break;
                }
                let local = rig.local(&format!("got-{i}"));
                let name = format!("c{client}");
                let o = rig.client(&name, &["get", "srv", "f", s(&local)]);
                let got = std::fs::read(&local).ok();
                let mut out = outcomes.lock().unwrap();
                match (o.status.code(), got) {
                    (_, Some(b)) if b == *secret_bytes => {
                        out.leaked.push(format!("get {i}: {}", text(&o)))
                    }
                    (Some(0), Some(b)) if b == *inside => out.inside += 1,
                    (Some(8), None) => out.refused += 1,
                    (code, got) => out.odd.push(format!(
                        "get {i}: exit {code:?}, local file {:?}: {}",
                        got.map(|b| b.len()),
                        text(&o)
                    )),
                }
            });
        }
    });
    stop.store(true, Ordering::Relaxed);
    let (to_link, to_file) = swapping.join().unwrap();
    let out = outcomes.into_inner().unwrap();
    let summary = format!(
        "{GETS} gets in {:?} while the path was swapped {to_link} times to the symlink \
         and {to_file} times back: {} delivered the inside file, {} were refused, \
         {} delivered the SECRET, {} other",
        started.elapsed(),
        out.inside,
        out.refused,
        out.leaked.len(),
        out.odd.len()
    );
    eprintln!("{summary}");
    assert!(
        out.leaked.is_empty(),
        "{summary}\nthe secret outside the root was served:\n{}",
        out.leaked.join("\n")
    );
    assert!(out.odd.is_empty(), "{summary}\n{}", out.odd.join("\n"));
    // It really raced: both states were seen by the server, many times.
    assert!(out.inside > 0 && out.refused > 0, "{summary}");
    assert!(to_link > 1000 && to_file > 1000, "{summary}");
    // The server survived it all and still serves the file (each swap
    // ends with the file in place).
    let o = rig.client("c0", &["get", "srv", "f", s(&rig.local("after"))]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(rig.local("after")).unwrap(), inside);
}

/// Keeps swapping the directory `d` with a symlink to `outdir` (a
/// directory outside the root) and back until `stop`: a symlink cannot be
/// renamed over a directory, so the directory is moved aside, the symlink
/// moved in, out again, and the directory back; `swaps` counts round trips.
fn dir_swapper(d: &Path, outdir: &Path, stage: &Path, stop: &AtomicBool, swaps: &AtomicU64) {
    let (real, link) = (stage.join("real"), stage.join("link"));
    while !stop.load(Ordering::Relaxed) {
        std::fs::rename(d, &real).unwrap();
        std::os::unix::fs::symlink(outdir, &link).unwrap();
        std::fs::rename(&link, d).unwrap();
        std::fs::rename(d, &link).unwrap();
        std::fs::remove_file(&link).unwrap();
        std::fs::rename(&real, d).unwrap();
        swaps.fetch_add(1, Ordering::Relaxed);
        // The directory stays in place about as long as it is away, so
        // that puts get through too.
        let now = Instant::now();
        while now.elapsed() < Duration::from_micros(30) {
            std::hint::spin_loop();
        }
    }
}

#[test]
fn a_directory_swapped_for_a_symlink_during_puts_never_takes_a_file_outside() {
    const PUTS: usize = 150;
    let rig = Rig::new();
    let data = random(8192, 3);
    let src = rig.local("src");
    std::fs::write(&src, &data).unwrap();
    let d = rig.root.join("d");
    std::fs::create_dir(&d).unwrap();
    let outdir = rig.dir.path().join("outdir");
    std::fs::create_dir(&outdir).unwrap();
    let stage = rig.dir.path().join("stage");
    std::fs::create_dir(&stage).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapping = {
        let (d, outdir, stage) = (d.clone(), outdir.clone(), stage.clone());
        let (stop, swaps) = (stop.clone(), swaps.clone());
        std::thread::spawn(move || dir_swapper(&d, &outdir, &stage, &stop, &swaps))
    };
    assert!(wait_until(Duration::from_secs(5), || swaps
        .load(Ordering::Relaxed)
        > 100));

    let (ok, refused, odd) = (AtomicU64::new(0), AtomicU64::new(0), Mutex::new(Vec::new()));
    let next = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (rig, src, next) = (&rig, &src, &next);
            let (ok, refused, odd) = (&ok, &refused, &odd);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= PUTS as u64 {
                    break;
                }
                let remote = format!("d/x{i}");
                let o = rig.client(&format!("c{client}"), &["put", "srv", s(src), &remote]);
                match o.status.code() {
                    Some(0) => ok.fetch_add(1, Ordering::Relaxed),
                    Some(8) => refused.fetch_add(1, Ordering::Relaxed),
                    code => {
                        odd.lock()
                            .unwrap()
                            .push(format!("put {i}: exit {code:?}: {}", text(&o)));
                        0
                    }
                };
            });
        }
    });
    stop.store(true, Ordering::Relaxed);
    swapping.join().unwrap();
    let (ok, refused, swaps) = (
        ok.into_inner() as usize,
        refused.into_inner() as usize,
        swaps.load(Ordering::Relaxed),
    );
    let odd = odd.into_inner().unwrap();
    let outside: Vec<_> = std::fs::read_dir(&outdir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let inside: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let summary = format!(
        "{PUTS} puts while the directory was swapped {swaps} times: {ok} stored, \
         {refused} refused, {} other; {} file(s) outside the root, {} inside",
        odd.len(),
        outside.len(),
        inside.len()
    );
    eprintln!("{summary}");
    assert!(
        outside.is_empty(),
        "{summary}\nfiles created outside the root: {outside:?}"
    );
    assert!(odd.is_empty(), "{summary}\n{}", odd.join("\n"));
    // Every stored file is in the directory, whole; nothing else is.
    assert_eq!(inside.len(), ok, "{summary}: {inside:?}");
    for p in &inside {
        assert_eq!(std::fs::read(p).unwrap(), data, "{p:?}");
    }
    assert!(ok > 0 && refused > 0 && swaps > 1000, "{summary}");
}
