//! Secondary devices with real `fts` processes on file-backed devices:
//! format v1.3 stripes every connection's rings over the master and its
//! secondaries, so a transfer's segments land on every device and arrive
//! intact; a secondary is found by its id wherever it moved
//! (`--secondary`), a missing one is named before anything is claimed,
//! and a look-alike from another layout is never taken.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod robust_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use robust_common::{fts, run, text, wait_until, DEADLINE};

const MARKER: &[u8] = b"<<fts-secondary-marker-7c1d>>";

struct Layout {
    dir: tempfile::TempDir,
    master: String,
    secondaries: Vec<String>,
}

/// Kills and reaps on drop.
struct Server(Child, PathBuf);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    fn said(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Formats a 64 MiB master with `n` secondaries of 32 MiB: 32 ring
/// entries of 64 KiB in batches of 4, so a few MiB wrap every ring.
fn layout(n: usize) -> Layout {
    let dir = tempfile::tempdir().unwrap();
    let master = s(&dir.path().join("master.img"));
    let mut secondaries = Vec::new();
    for i in 0..n {
        let p = s(&dir.path().join(format!("sec{i}.img")));
        std::fs::File::create(&p)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        secondaries.push(p);
    }
    let mut c = fts();
    c.args(["-d", &master, "format", "--size", "64M"])
        .args(["--segment-size", "64K", "--ring-entries", "32"])
        .args(["--batch", "4", "--max-connections", "4"]);
    for p in &secondaries {
        c.args(["--secondary", p]);
    }
    let o = run(c, DEADLINE, "format");
    assert!(o.status.success(), "{}", text(&o));
    Layout {
        dir,
        master,
        secondaries,
    }
}

impl Layout {
    fn root(&self) -> PathBuf {
        let r = self.dir.path().join("root");
        std::fs::create_dir_all(&r).unwrap();
        r
    }

    fn serve(&self, extra: &[&str]) -> Server {
        let log = self.dir.path().join("serve.log");
        let child = fts()
            .args(["-d", &self.master, "-n", "srv"])
            .args(extra)
            .args(["serve", "--root"])
            .arg(self.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let srv = Server(child, log);
        assert!(
            wait_until(Duration::from_secs(20), || srv
                .said()
                .contains("serving as")),
            "the server did not start: {}",
            srv.said()
        );
        srv
    }

    fn client(&self, extra: &[&str], args: &[&str]) -> std::process::Output {
        let mut c = fts();
        c.args(["-d", &self.master, "-n", "cli"])
            .args(extra)
            .args(args);
        run(c, DEADLINE, &format!("fts {args:?}"))
    }
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// A file of `len` bytes: the marker again and again, each copy numbered,
/// so a misplaced segment cannot compare equal.
fn marked(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(MARKER);
        v.extend_from_slice(format!("{i:016}\n").as_bytes());
        i += 1;
    }
    v.truncate(len);
    v
}

#[test]
fn every_transfer_uses_every_device_and_arrives_intact() {
    let l = layout(2);
    let _srv = l.serve(&[]);
    // Before: no device holds the marker.
    for p in l.secondaries.iter().chain([&l.master]) {
        assert_eq!(count(&std::fs::read(p).unwrap(), MARKER), 0, "{p}");
    }
    // 0 bytes, 1 byte, less than a batch, exactly a ring, several rings.
    for len in [0usize, 1, 70_000, 32 * 65_472, 5 * 1024 * 1024 + 12_345] {
        let src = l.dir.path().join(format!("src-{len}"));
        let data = marked(len);
        std::fs::write(&src, &data).unwrap();
        let name = format!("f{len}");
        let o = l.client(&[], &["put", "srv", &s(&src), &name]);
        assert!(o.status.success(), "put {len}: {}", text(&o));
        assert_eq!(
            std::fs::read(l.root().join(&name)).unwrap(),
            data,
            "put {len}"
        );
        let back = l.dir.path().join(format!("back-{len}"));
        let o = l.client(&[], &["get", "srv", &name, &s(&back)]);
        assert!(o.status.success(), "get {len}: {}", text(&o));
        assert_eq!(std::fs::read(&back).unwrap(), data, "get {len}");
    }
    // Consecutive batches went to the devices in turn: each holds copies.
    for p in l.secondaries.iter().chain([&l.master]) {
        let n = count(&std::fs::read(p).unwrap(), MARKER);
        assert!(n > 100, "{p} holds {n} copies of the marker");
    }
}

#[test]
fn a_moved_secondary_is_found_by_id_and_a_missing_one_is_named() {
    let l = layout(2);
    let moved = s(&l.dir.path().join("moved.img"));
    std::fs::rename(&l.secondaries[1], &moved).unwrap();
    // Missing: serve and clients refuse before touching the table, naming
    // the device and what to do; nothing is claimed.
    let mut c = fts();
    c.args(["-d", &l.master, "-n", "srv", "serve", "--root"])
        .arg(l.root());
    let o = run(c, DEADLINE, "serve without a secondary");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("secondary device 3"), "{t}");
    assert!(t.contains("--secondary"), "{t}");
    let src = l.dir.path().join("src");
    std::fs::write(&src, marked(300_000)).unwrap();
    let o = l.client(&[], &["put", "srv", &s(&src), "x"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = l.client(&[], &["status", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["connections"].as_array().unwrap().len(), 0, "{v}");
    // Found at its new path by its id, given on the command line or in
    // the environment.
    let _srv = l.serve(&["--secondary", &moved]);
    let mut c = fts();
    c.args(["-d", &l.master, "-n", "cli", "put", "srv", &s(&src), "x"])
        .env("FTS_SECONDARY", format!("/nonexistent,{moved}"));
    let o = run(c, DEADLINE, "put with FTS_SECONDARY");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(l.root().join("x")).unwrap(),
        std::fs::read(&src).unwrap()
    );
}

#[test]
fn a_look_alike_from_another_layout_is_never_taken() {
    let l = layout(1);
    let other = layout(1);
    std::fs::remove_file(&l.secondaries[0]).unwrap();
    // Same size, a valid secondary copy, but of another layout: refused.
    let o = l.client(&["--secondary", &other.secondaries[0]], &["dir", "srv"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("secondary device 2"), "{}", text(&o));
    // Nor is the master itself, or a file of zeros.
    let zeros = s(&l.dir.path().join("zeros.img"));
    std::fs::File::create(&zeros)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let o = l.client(
        &["--secondary", &l.master, "--secondary", &zeros],
        &["dir", "srv"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    // The other layout's device was not written to.
    let o = fts().args(["-d", &other.master, "check"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
}
