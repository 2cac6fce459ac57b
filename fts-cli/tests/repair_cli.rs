//! Damage to the layout, with real `fts` processes on real device files:
//! a zeroed Master Control Block or Secondary Device Table sector is read
//! from its backup at the end of the master (inspect, status, serve and
//! put keep working, with one warning); `check` exits 5 naming the damage;
//! `check --repair` mends it, one line per repair, and `check` then exits
//! 0. The same for a flipped bit in a Process Id Table entry, a zeroed
//! pointer-table chunk, forged entries and dead connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fts_layout::{layout_id_of, PidEntry, Stamp, CRC_OFFSET, LB, PRO_FLAG_ALLOCATED, RECORD_SIZE};

fn fts() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fts"));
    c.env_remove("FTS_DEVICE").env_remove("FTS_NAME");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Kills and reaps on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

struct Dev {
    dir: tempfile::TempDir,
    path: String,
}

impl Dev {
    /// A 32 MiB master: 4 connections, 40-entry rings (one LB per table).
    fn new(lease_ms: u32) -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.img").display().to_string();
        let o = fts()
            .args([
                "-d",
                &path,
                "format",
                "--size",
                "32M",
                "--max-connections",
                "4",
            ])
            .args(["--ring-entries", "40", "--batch", "4", "--lease-timeout-ms"])
            .arg(lease_ms.to_string())
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{}", text(&o));
        Dev { dir, path }
    }

    fn run(&self, args: &[&str]) -> Output {
        fts()
            .args(["-d", &self.path, "-n", "ops"])
            .args(args)
            .output()
            .unwrap()
    }

    fn inspect(&self) -> serde_json::Value {
        let o = self.run(&["inspect", "--json"]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .unwrap()
    }

    fn write(&self, at: u64, bytes: &[u8]) {
        self.file().write_all_at(bytes, at).unwrap();
    }

    fn read(&self, at: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.file().read_exact_at(&mut b, at).unwrap();
        b
    }

    fn flip(&self, at: u64, bit: u8) {
        let mut b = self.read(at, 1);
        b[0] ^= 1 << bit;
        self.write(at, &b);
    }

    fn zero_lb(&self, lb: u64) {
        self.write(lb * LB as u64, &[0u8; LB]);
    }

    fn root(&self) -> PathBuf {
        let r = self.dir.path().join("root");
        std::fs::create_dir_all(&r).unwrap();
        r
    }

    fn serve(&self) -> (Proc, PathBuf) {
        let log = self.dir.path().join("serve.log");
        let child = fts()
            .args(["-d", &self.path, "-n", "srv", "serve", "--root"])
            .arg(self.root())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (Proc(child), log)
    }

    /// `check` exits 5 naming `what`; `check --repair` mends it (every
    /// line of `repaired` in its output) and exits 0; `check` then exits 0.
    fn check_and_repair(&self, what: &[&str], repaired: &[&str]) -> String {
        let o = self.run(&["check"]);
        assert_eq!(code(&o), 5, "{}", text(&o));
        for w in what {
            assert!(text(&o).contains(w), "{w:?} not in:\n{}", text(&o));
        }
        let o = self.run(&["check", "--repair"]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        for r in repaired {
            assert!(
                out.lines()
                    .any(|l| l.starts_with("repaired: ") && l.contains(r)),
                "no repair line with {r:?} in:\n{}",
                text(&o)
            );
        }
        assert!(out.contains("is consistent after"), "{}", text(&o));
        let o = self.run(&["check"]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        assert!(text(&o).contains("is consistent"), "{}", text(&o));
        out
    }
}

/// `put` of a random file through a running server: it arrives intact.
fn put_through(dev: &Dev, name: &str) -> Output {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let local = dev.dir.path().join(name);
    std::fs::write(&local, &data).unwrap();
    let o = fts()
        .args(["-d", &dev.path, "-n", "cli", "put", "srv"])
        .arg(&local)
        .arg(name)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(std::fs::read(dev.root().join(name)).unwrap(), data);
    o
}

fn warns_about(o: &Output, record: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(lines.len(), 1, "one warning line expected:\n{err}");
    assert!(lines[0].contains(record), "{record:?} not in {err}");
    assert!(lines[0].contains("check --repair"), "{err}");
}

/// Inspect, status, serve and put work off the backup, each with one
/// warning; check and repair as in [`Dev::check_and_repair`].
fn survives_and_mends(dev: &Dev, record: &str, lb: u64, repaired: &str) {
    let o = dev.run(&["inspect"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    warns_about(&o, &format!("{record} (LB {lb}) is damaged"));
    let o = dev.run(&["status"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    warns_about(&o, record);
    let (server, log) = dev.serve();
    let o = put_through(dev, "through-the-backup.bin");
    warns_about(&o, record);
    drop(server);
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains(record) && log.contains("check --repair"),
        "{log}"
    );
    let out = dev.check_and_repair(&[record, "backup"], &[repaired]);
    assert!(out.contains(&format!("(LB {lb})")), "{out}");
    // Opened cleanly now: no warning.
    let o = dev.run(&["status"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(!text(&o).contains("warning"), "{}", text(&o));
}

#[test]
fn a_zeroed_mcb_sector_is_read_from_its_backup_and_repaired() {
    let dev = Dev::new(10_000);
    let v = dev.inspect();
    let backup = v["master_control_block"]["mcb_backup_ptr"]
        .as_u64()
        .unwrap();
    assert_eq!(backup, (32 << 20) / LB as u64 - 1);
    assert_eq!(v["master_control_block"]["blk5_minor_version"], 3);
    assert_eq!(
        dev.read(backup * LB as u64, LB),
        dev.read(5 * LB as u64, LB)
    );
    // One 512-byte sector, as a disk loses it.
    dev.write(5 * LB as u64, &[0u8; 512]);
    survives_and_mends(
        &dev,
        "Master Control Block",
        5,
        "Master Control Block (LB 5): rewritten from its backup",
    );
    assert_eq!(
        dev.read(backup * LB as u64, LB),
        dev.read(5 * LB as u64, LB)
    );
}

#[test]
fn a_zeroed_sdt_sector_is_read_from_its_backup_and_repaired() {
    let dev = Dev::new(10_000);
    let v = dev.inspect();
    let backup = v["master_control_block"]["sdt_backup_ptr"]
        .as_u64()
        .unwrap();
    dev.write(7 * LB as u64, &[0u8; 512]);
    survives_and_mends(
        &dev,
        "Secondary Device Table entry 1",
        7,
        "Secondary Device Table (LB 7): rewritten from its backup",
    );
    assert_eq!(
        dev.read(backup * LB as u64, LB),
        dev.read(7 * LB as u64, LB)
    );
}

#[test]
fn a_flipped_bit_in_a_backup_is_found_and_rewritten() {
    let dev = Dev::new(10_000);
    let v = dev.inspect();
    let backup = v["master_control_block"]["mcb_backup_ptr"]
        .as_u64()
        .unwrap();
    dev.flip(backup * LB as u64 + 90, 2);
    dev.check_and_repair(
        &[&format!("LB {backup} "), "backup Master Control Block"],
        &["backup Master Control Block"],
    );
}

#[test]
fn both_copies_of_the_mcb_zeroed_is_unreadable_and_said_so() {
    let dev = Dev::new(10_000);
    let backup = dev.inspect()["master_control_block"]["mcb_backup_ptr"]
        .as_u64()
        .unwrap();
    dev.flip(5 * LB as u64 + 100, 0);
    dev.zero_lb(backup);
    for args in [
        &["check"][..],
        &["check", "--repair"],
        &["inspect"],
        &["status"],
    ] {
        let o = dev.run(args);
        assert_eq!(code(&o), 4, "{args:?}: {}", text(&o));
        assert!(text(&o).contains("CRC"), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("panicked"), "{}", text(&o));
    }
    let o = dev.run(&["check"]);
    assert!(
        text(&o).contains(&format!("backup at LB {backup}")),
        "{}",
        text(&o)
    );
}

#[test]
fn a_flipped_bit_in_an_idle_entry_is_freed_by_repair_while_a_connection_runs() {
    let dev = Dev::new(10_000);
    let (server, _log) = dev.serve();
    // A live connection in entry 1 (a shell waiting for commands).
    let mut shell = Proc(
        fts()
            .args(["-d", &dev.path, "-n", "live", "shell", "srv"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let connected = || {
        let o = dev.run(&["status", "--json"]);
        String::from_utf8_lossy(&o.stdout).contains("\"live\"")
    };
    assert!(wait_until(Duration::from_secs(20), connected));
    // Entry 3 is idle: flip a bit in its record.
    let pid3 = (8 + 3 * 2) * LB as u64;
    dev.flip(pid3 + 150, 4);
    let out = dev.check_and_repair(
        &["Process Id Table entry 3", "CRC"],
        &["Process Id Table entry 3 (LB 14): freed"],
    );
    assert!(!out.contains("entry 1 "), "{out}");
    // The live connection was not touched, and still works.
    assert!(connected());
    use std::io::Write as _;
    let stdin = shell.0.stdin.as_mut().unwrap();
    writeln!(stdin, "pwd\nquit").unwrap();
    let done = wait_until(Duration::from_secs(20), || {
        matches!(shell.0.try_wait(), Ok(Some(_)))
    });
    assert!(done);
    assert!(shell.0.wait().unwrap().success());
    drop(server);
}

#[test]
fn a_zeroed_pointer_table_chunk_is_rewritten() {
    let dev = Dev::new(10_000);
    let v = dev.inspect();
    let t = v["pointer_tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["slot"] == 3 && t["writer"] == "connector")
        .unwrap()["lb"]
        .as_u64()
        .unwrap();
    dev.write(t * LB as u64 + 512, &[0u8; 512]);
    dev.check_and_repair(
        &["pointer table 3 (connector) chunk 1", "all zero"],
        &[&format!(
            "pointer table 3 (connector) (LB {t}): rewritten as formatted"
        )],
    );
    // And a flipped bit in a lease of another idle entry.
    dev.flip((8 + 3 + 2) * LB as u64 + 40, 1);
    dev.check_and_repair(&["lease 2 (connector)"], &["lease 2 (connector)"]);
}

/// Writes an allocated entry for `slot` whose `pro_requestee` bytes are
/// `requestee`, with a valid CRC: a forged or buggy writer's record.
fn forge(dev: &Dev, slot: u32, requestee: &[u8]) {
    let v = dev.inspect();
    let uuid = uuid::Uuid::parse_str(
        v["master_control_block"]["blk5_layout_uuid"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let stamp = Stamp::new(layout_id_of(&uuid), slot);
    let e = PidEntry {
        pro_flag_process: PRO_FLAG_ALLOCATED,
        pro_generation: 41,
        pro_requestor: "mallory".into(),
        pro_requestee: "x".into(),
        ..PidEntry::free(slot)
    };
    let mut rec = e.encode(stamp);
    rec[104..136].fill(0);
    rec[104..104 + requestee.len()].copy_from_slice(requestee);
    rec[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
    let crc = fts_layout::crc32c_record(&rec, CRC_OFFSET);
    rec[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    let lb = 8 + 3 * u64::from(slot - 1);
    dev.write(lb * LB as u64, &rec[..RECORD_SIZE]);
}

#[test]
fn forged_entries_are_reported_and_freed() {
    let dev = Dev::new(10_000);
    forge(&dev, 2, b"srv\0../x");
    forge(&dev, 4, b"\xff\xfe\xfdsrv");
    let out = dev.check_and_repair(
        &[
            "Process Id Table entry 2",
            "Process Id Table entry 4",
            "pro_requestee",
            "not UTF-8",
        ],
        &[
            "Process Id Table entry 2 (LB 11): freed (generation 42)",
            "Process Id Table entry 4 (LB 17): freed (generation 42)",
        ],
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("repaired:")).count(),
        2,
        "{out}"
    );
    // The slots are usable again: a put through a server takes them.
    let (_server, _log) = dev.serve();
    put_through(&dev, "after.bin");
}

#[test]
fn a_dead_connection_is_reported_and_freed() {
    // A short lease keeps the test short.
    let dev = Dev::new(1_000);
    let (server, _log) = dev.serve();
    let shell = Proc(
        fts()
            .args(["-d", &dev.path, "-n", "doomed", "shell", "srv"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let connected = || {
        let o = dev.run(&["status", "--json"]);
        String::from_utf8_lossy(&o.stdout).contains("\"doomed\"")
    };
    assert!(wait_until(Duration::from_secs(20), connected));
    // Both sides die at once (kill -9): nobody frees the entry.
    drop(shell);
    drop(server);
    std::thread::sleep(Duration::from_millis(1_600));
    let o = dev.run(&["check"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("Process Id Table entry 1"), "{t}");
    assert!(
        t.contains("doomed -> srv") && t.contains("shows no life"),
        "{t}"
    );
    assert!(t.contains("writers' clocks"), "{t}");
    let started = Instant::now();
    let out = dev.check_and_repair(
        &["dead connection"],
        &["Process Id Table entry 1 (LB 8): freed"],
    );
    assert!(out.contains("dead connection doomed -> srv"), "{out}");
    // It watched the leases for a lease timeout before freeing.
    assert!(started.elapsed() >= Duration::from_millis(1_000));
    let o = dev.run(&["status", "--json"]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("doomed"),
        "{}",
        text(&o)
    );
}

#[test]
fn check_alone_writes_nothing() {
    let dev = Dev::new(10_000);
    dev.write(5 * LB as u64, &[0u8; 512]);
    dev.flip((8 + 3) * LB as u64 + 60, 0);
    let before = std::fs::read(&dev.path).unwrap();
    for _ in 0..2 {
        let o = dev.run(&["check"]);
        assert_eq!(code(&o), 5, "{}", text(&o));
        assert!(text(&o).contains("--repair"), "{}", text(&o));
    }
    assert!(std::fs::read(&dev.path).unwrap() == before);
}

/// `format` without --force refuses a device whose LB 4-7 are gone but
/// whose backup MCB at the end still shows a layout: repair may save it.
#[test]
fn format_refuses_a_layout_whose_mcb_only_the_backup_shows() {
    let dev = Dev::new(10_000);
    for lb in 4..8 {
        dev.zero_lb(lb);
    }
    let o = fts()
        .args(["-d", &dev.path, "format", "--max-connections", "4"])
        .args(["--ring-entries", "40"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 6, "{}", text(&o));
    assert!(text(&o).contains("backup"), "{}", text(&o));
    assert!(text(&o).contains("check --repair"), "{}", text(&o));
}
