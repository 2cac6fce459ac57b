//! What the dead and the damaged leave behind, with real `fts` processes
//! on a file-backed device: leaked entries are reclaimed, a damaged entry
//! stops nobody, a stopped (SIGSTOP) server or client that resumes never
//! writes into the slot a new connection owns (checked on the device
//! bytes), and names from the device reach the terminal escaped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fts_blockdev::OpenOptions;
use fts_layout::{
    Expect, Lease, OsType, PidEntry, PtrChunk, Role, LB, PRO_FLAG_ALLOCATED, PRO_FLAG_PROCESSING,
    RECORD_SIZE,
};
use fts_session::Shared;

const LEASE_MS: u64 = 1500;

mod robust_common;

use robust_common::{fts, text};

/// Kills and reaps on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // A stopped child must be continued to die promptly.
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Dev {
    dir: tempfile::TempDir,
    path: String,
}

impl Dev {
    fn new(max_connections: u32) -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.img").display().to_string();
        let o = fts()
            .args([
                "-d",
                &path,
                "format",
                "--size",
                "32M",
                "--segment-size",
                "64K",
                "--ring-entries",
                "16",
                "--batch",
                "4",
                "--lease-timeout-ms",
            ])
            .arg(LEASE_MS.to_string())
            .arg("--max-connections")
            .arg(max_connections.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        Dev { dir, path }
    }

    fn root(&self, name: &str) -> PathBuf {
        let r = self.dir.path().join(name);
        std::fs::create_dir_all(&r).unwrap();
        r
    }

    fn serve(&self, name: &str) -> (Proc, PathBuf) {
        let root = self.root(name);
        let log = self.dir.path().join(format!("{name}.log"));
        let child = fts()
            .args(["-d", &self.path, "-n", name, "serve", "--root"])
            .arg(&root)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("serving as")
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (Proc(child), log)
    }

    fn shared(&self) -> Shared {
        let dev = fts_blockdev::open(&self.path, &OpenOptions::default()).unwrap();
        Shared::open(dev).unwrap()
    }

    fn status_json(&self) -> serde_json::Value {
        let o = fts()
            .args(["-d", &self.path, "status", "--json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn in_use(&self) -> usize {
        self.status_json()["connections"].as_array().unwrap().len()
    }

    /// An entry left as a client killed after the server's close reply
    /// leaves it: claimed, accepted, and nothing that moves any more.
    fn leak_entry(&self, slot: u32, generation: u64) {
        let mut s = self.shared();
        s.write_entry(&PidEntry {
            pro_process_id: slot,
            pro_flag_process: PRO_FLAG_ALLOCATED | PRO_FLAG_PROCESSING,
            pro_requestor_type: OsType::Unix,
            pro_requestee_type: OsType::Unix,
            pro_generation: generation,
            pro_requestor: format!("gone{slot}"),
            pro_requestee: "srv".into(),
            ..PidEntry::free(slot)
        })
        .unwrap();
    }

    fn flip(&self, offset: u64) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset).unwrap();
        f.write_all_at(&[b[0] ^ 0x04], offset).unwrap();
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

fn put(dev: &Dev, me: &str, server: &str, local: &Path, remote: &str) -> Output {
    fts()
        .args(["-d", &dev.path, "-n", me, "put", server])
        .arg(local)
        .args([remote, "--timeout", "30"])
        .output()
        .unwrap()
}

#[test]
fn a_server_frees_entries_that_dead_clients_leaked() {
    let dev = Dev::new(4);
    dev.leak_entry(1, 7);
    dev.leak_entry(3, 2);
    assert_eq!(dev.in_use(), 2);
    // Before: nothing ever freed them (status said "connected" for ever).
    let (_srv, log) = dev.serve("srv");
    let took = wait_until(
        "leaked entries freed",
        Duration::from_secs(4 * LEASE_MS / 1000 + 5),
        || dev.in_use() == 0,
    );
    assert!(
        took + Duration::from_millis(300) >= Duration::from_millis(LEASE_MS),
        "freed after {took:?}, sooner than the lease timeout"
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("freed Process Id Table entry 1"), "{said}");
    assert!(said.contains("freed Process Id Table entry 3"), "{said}");
    // The generation was bumped: the leaked owner is fenced.
    let e = dev.shared().read_entry(1).unwrap();
    assert!(e.is_free() && e.pro_generation == 8, "{e:?}");
}

#[test]
fn a_put_on_a_table_full_of_dead_entries_reclaims_one_instead_of_exit_12() {
    let dev = Dev::new(2);
    dev.leak_entry(1, 1);
    dev.leak_entry(2, 1);
    let (_srv, _) = dev.serve("srv");
    // Stop the server's own reaping from winning the race: the client must
    // cope either way; what matters is that the put succeeds.
    let src = dev.dir.path().join("f.bin");
    std::fs::write(&src, vec![7u8; 100_000]).unwrap();
    let o = put(&dev, "cli", "srv", &src, "f.bin");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(dev.dir.path().join("srv").join("f.bin")).unwrap(),
        vec![7u8; 100_000]
    );
}

#[test]
fn a_client_alone_reclaims_a_full_table_of_dead_entries() {
    let dev = Dev::new(2);
    dev.leak_entry(1, 1);
    dev.leak_entry(2, 1);
    // No server runs: the client itself must find the dead entries, free
    // one, and then report that no server accepted (9), not a full table (12).
    let o = fts()
        .args([
            "-d",
            &dev.path,
            "-n",
            "cli",
            "dir",
            "nobody",
            "--timeout",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(9), "{}", text(&o));
    assert!(
        text(&o).contains("freed Process Id Table entry"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_damaged_entry_stops_neither_the_server_nor_status_nor_other_clients() {
    let dev = Dev::new(4);
    dev.leak_entry(2, 5);
    let lb = dev.shared().geometry().pid_entry_lb(2);
    dev.flip(lb * LB as u64 + 60);
    let (_srv, log) = dev.serve("srv");
    let st = dev.status_json();
    let rows = st["connections"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["slot"] == 2 && r["state"] == "damaged"),
        "{st}"
    );
    let o = fts().args(["-d", &dev.path, "status"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("damaged"), "{}", text(&o));
    let src = dev.dir.path().join("g.bin");
    std::fs::write(&src, b"hello through a damaged table").unwrap();
    let o = put(&dev, "cli", "srv", &src, "g.bin");
    assert!(o.status.success(), "{}", text(&o));
    // Reported once, then freed after a lease timeout.
    wait_until("the damaged entry freed", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("freed Process Id Table entry 2")
    });
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(said.matches("entry 2 is damaged").count(), 1, "{said}");
}

/// Reads the generation of the records `role` keeps for `slot`: its lease
/// and its pointer table's first chunk (None where nothing valid is there).
fn generations(dev: &Dev, slot: u32, role: Role) -> (Option<u64>, Option<u64>) {
    let mut s = dev.shared();
    let id = s.mcb().layout_id();
    let g = s.geometry().clone();
    let mut buf = vec![0u8; LB];
    s.device()
        .read_at(g.lease_lb(slot, role) * LB as u64, &mut buf)
        .unwrap();
    let lease = Lease::decode(&buf[..RECORD_SIZE], Expect::exact(id, slot))
        .ok()
        .map(|l| l.generation);
    s.device()
        .read_at(g.table_lb(slot, role) * LB as u64, &mut buf)
        .unwrap();
    let table = PtrChunk::decode(&buf[..RECORD_SIZE], Expect::exact(id, 0))
        .ok()
        .map(|c| c.generation);
    (lease, table)
}

fn signal(p: &Proc, sig: &str) {
    robust_common::signal(p.0.id(), sig);
}

/// The shared part of the two SIGSTOP tests: `stopped` is SIGSTOPped in
/// the middle of a transfer, the other side gives up after the lease
/// timeout and frees the slot, a new connection claims the same slot, the
/// stopped process resumes: none of its old-generation records may appear.
fn stopped_side_never_writes_into_the_new_connection(stop_server: bool) {
    let dev = Dev::new(3);
    let (srv, _) = dev.serve("srv");
    let src = dev.dir.path().join("big.bin");
    std::fs::write(&src, vec![0x5a; 24 << 20]).unwrap();
    let client = Proc(
        fts()
            .args(["-d", &dev.path, "-n", "cli", "put", "srv"])
            .arg(&src)
            .args(["big.bin", "--timeout", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the transfer to start", Duration::from_secs(10), || {
        generations(&dev, 1, Role::Initiator).1 == Some(1)
    });
    let (stopped, stopped_role, live) = if stop_server {
        (&srv, Role::Connector, &client)
    } else {
        (&client, Role::Initiator, &srv)
    };
    signal(stopped, "STOP");
    // The live side declares the stopped one dead and the slot is freed
    // (by the client closing, or by the server's reaper).
    wait_until(
        "the stopped side's slot freed",
        Duration::from_secs(4 * LEASE_MS / 1000 + 8),
        || dev.shared().read_entry(1).unwrap().is_free(),
    );
    let _ = live;
    // A new connection takes the same (only) slot: a second server and a
    // shell that stays connected.
    let (_srv2, _) = dev.serve("srv2");
    let mut shell = Proc(
        fts()
            .args(["-d", &dev.path, "-n", "cli2", "shell", "srv2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the new connection", Duration::from_secs(10), || {
        let e = dev.shared().read_entry(1).unwrap();
        e.is_processing() && e.pro_requestor == "cli2"
    });
    let new_gen = dev.shared().read_entry(1).unwrap().pro_generation;
    assert!(new_gen >= 2);
    wait_until(
        "the new connection's records",
        Duration::from_secs(10),
        || generations(&dev, 1, stopped_role) == (Some(new_gen), Some(new_gen)),
    );
    signal(stopped, "CONT");
    // For several lease timeouts the device must show only the new
    // generation in the slot's records of the resumed side's role.
    let until = Instant::now() + Duration::from_millis(3 * LEASE_MS);
    while Instant::now() < until {
        let (lease, table) = generations(&dev, 1, stopped_role);
        assert_eq!(
            (lease, table),
            (Some(new_gen), Some(new_gen)),
            "a resumed {stopped_role} wrote an old-generation record into slot 1"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(shell.0.stdin.take());
}

#[test]
fn a_stopped_server_that_resumes_never_writes_into_the_new_connection() {
    stopped_side_never_writes_into_the_new_connection(true);
}

#[test]
fn a_stopped_client_that_resumes_never_writes_into_the_new_connection() {
    stopped_side_never_writes_into_the_new_connection(false);
}

#[test]
fn names_with_control_characters_reach_status_escaped() {
    let dev = Dev::new(2);
    let mut s = dev.shared();
    let hostile = "evil\u{1b}]0;owned\u{7}\u{1b}[2J";
    s.write_entry(&PidEntry {
        pro_process_id: 1,
        pro_flag_process: PRO_FLAG_ALLOCATED,
        pro_generation: 1,
        pro_requestor: hostile.into(),
        pro_requestee: "srv".into(),
        ..PidEntry::free(1)
    })
    .unwrap();
    let o = fts().args(["-d", &dev.path, "status"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!o.stdout.contains(&0x1b), "a raw ESC reached the terminal");
    assert!(!o.stdout.contains(&0x07), "a raw BEL reached the terminal");
    assert!(text(&o).contains("evil\\u{1b}]0;owned"), "{}", text(&o));
    let o = fts()
        .args(["-d", &dev.path, "status", "--json"])
        .output()
        .unwrap();
    assert!(!o.stdout.contains(&0x1b), "a raw ESC in the JSON");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["connections"][0]["requestor"], hostile);
}
