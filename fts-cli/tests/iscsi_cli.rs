//! `fts` over `iscsi://` against a real tgtd: format, a `serve` process and
//! client processes with distinct initiator names (two I_T nexuses, as on
//! two hosts), byte-identical files both ways, nothing left reserved
//! afterwards, and the operator commands of `fts scsi`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hil::tgt::{Lun, Tgtd};

fn fts(url: &str, name: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fts"));
    c.env_remove("FTS_DEVICE")
        .env_remove("FTS_NAME")
        .env_remove("FTS_INITIATOR")
        .env_remove("FTS_LOCK")
        .args(["-d", url, "--name", name]);
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(mut c: Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?} failed: {}", text(&o));
    text(&o)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rig(test: &str) -> Option<(Tgtd, Lun)> {
    let mut tgtd = hil::tgt::start_or_skip(test)?;
    let lun = tgtd.add_lun(64 << 20, 4096).unwrap();
    Some((tgtd, lun))
}

fn format(url: &str) {
    let mut c = fts(url, "formatter");
    c.args(["format", "--max-connections", "4", "--ring-entries", "16"]);
    ok(c);
}

fn serve(url: &str, lock: &str, root: &Path, extra: &[&str]) -> Server {
    let mut c = fts(url, "srv");
    c.args(["--lock", lock])
        .args(extra)
        .arg("serve")
        .arg("--root")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Server(c.spawn().unwrap())
}

/// What a third initiator reports through `fts scsi reservations`.
fn assert_nothing_left(url: &str) {
    let out = ok({
        let mut c = fts(url, "observer");
        c.args(["scsi", "reservations"]);
        c
    });
    assert!(out.contains("0 registered key(s)"), "{out}");
    assert!(out.contains("reservation: none"), "{out}");
    assert!(out.contains("TEST UNIT READY: GOOD"), "{out}");
}

fn put_get_round_trip(lock: &str, test: &str) {
    let Some((_tgtd, lun)) = rig(test) else {
        return;
    };
    let url = lun.url.clone();
    format(&url);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let server = serve(&url, lock, &root, &[]);

    let src = dir.path().join("src.bin");
    let data: Vec<u8> = (0..(3 << 20) + 12345u32)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let mut c = fts(&url, "cli");
    c.args(["--lock", lock, "put", "srv"])
        .arg(&src)
        .arg("copy.bin")
        .args(["--timeout", "30"]);
    let out = ok(c);
    assert!(out.contains("Process Id Table lock: "), "{out}");
    assert_eq!(std::fs::read(root.join("copy.bin")).unwrap(), data);

    let back = dir.path().join("back.bin");
    let mut c = fts(&url, "cli2");
    c.args(["--lock", lock, "get", "srv", "copy.bin"])
        .arg(&back)
        .args(["--timeout", "30"]);
    ok(c);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    drop(server);
    assert_nothing_left(&url);
}

#[test]
fn put_get_over_iscsi_with_persistent_reservations() {
    put_get_round_trip("pr", "put_get_over_iscsi_with_persistent_reservations");
}

#[test]
fn put_get_over_iscsi_with_scsi2_reservations() {
    put_get_round_trip("scsi2", "put_get_over_iscsi_with_scsi2_reservations");
}

#[test]
fn auto_lock_says_which_backend_it_chose() {
    let Some((_tgtd, lun)) = rig("auto_lock_says_which_backend_it_chose") else {
        return;
    };
    format(&lun.url);
    // No server named "nobody": the claim is made under the lock, nobody
    // accepts, exit 9, and the entry is freed again (under the lock).
    let mut c = fts(&lun.url, "someone");
    c.args(["dir", "nobody", "--timeout", "1"]);
    let o = c.output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(9), "{out}");
    assert!(
        out.contains("lock: pr (persistent reservation type 5"),
        "{out}"
    );
    assert!(out.contains("auto:"), "{out}");
    let mut c = fts(&lun.url, "someone");
    c.arg("status");
    let out = ok(c);
    assert!(out.contains("0 of 4 connections in use"), "{out}");
    assert_nothing_left(&lun.url);
    // COMPARE AND WRITE is refused by tgt: a clear usage error, exit 2.
    let mut c = fts(&lun.url, "someone");
    c.args(["--lock", "caw", "dir", "nobody", "--timeout", "1"]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("COMPARE AND WRITE"), "{}", text(&o));
    // And a file lock cannot protect a SAN LUN.
    let mut c = fts(&lun.url, "someone");
    c.args(["--lock", "file", "dir", "nobody", "--timeout", "1"]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn scsi_operator_commands() {
    let Some((_tgtd, lun)) = rig("scsi_operator_commands") else {
        return;
    };
    let url = &lun.url;
    let run = |args: &[&str]| {
        let mut c = fts(url, "op");
        c.args(["scsi"]).args(args);
        ok(c)
    };
    let inq = run(&["inquiry"]);
    assert!(inq.contains("type:      0x00 (disk)"), "{inq}");
    assert!(inq.contains("initiator: iqn."), "{inq}");
    let cap = run(&["capacity"]);
    assert!(cap.contains(&format!("{} bytes", 64 << 20)), "{cap}");
    assert!(cap.contains("of 4096 bytes"), "{cap}");

    let out = run(&["register"]);
    assert!(out.contains("registered key 0x"), "{out}");
    let res = run(&["reservations"]);
    assert!(res.contains("1 registered key(s)"), "{res}");
    assert!(res.contains("(this initiator)"), "{res}");
    run(&["release"]);
    assert_nothing_left(url);

    // Cache: WCE off, then on, read back each time.
    let out = run(&["cache", "--set", "wce=off"]);
    assert!(out.contains("current   : WCE=0"), "{out}");
    let out = run(&["cache", "--set", "wce=on"]);
    assert!(out.contains("current   : WCE=1"), "{out}");
    let mut c = fts(url, "op");
    c.args(["scsi", "cache", "--set", "rcd=on"]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // Preempt a registered but dead host's key.
    let mut c = fts(url, "dead-host");
    c.args(["scsi", "register"]);
    let out = ok(c);
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("0x"))
        .unwrap()
        .to_string();
    let out = run(&["preempt", &key]);
    assert!(
        out.contains("PREEMPT (the device has no PREEMPT AND ABORT)"),
        "{out}"
    );
    assert_nothing_left(url);
}

/// `--destage-off` sets WCE for the duration of the command and restores
/// the page afterwards, also when the command is interrupted.
#[test]
fn destage_off_is_restored_after_the_command_and_on_sigint() {
    let Some((_tgtd, lun)) = rig("destage_off_is_restored_after_the_command_and_on_sigint") else {
        return;
    };
    let url = lun.url.clone();
    format(&url);
    let wce = || {
        let mut c = fts(&url, "op");
        c.args(["scsi", "cache"]);
        let out = ok(c);
        out.lines()
            .find(|l| l.starts_with("current"))
            .map(|l| l.contains("WCE=1"))
            .unwrap()
    };
    let mut c = fts(&url, "op");
    c.args(["scsi", "cache", "--set", "wce=off"]);
    ok(c);
    assert!(!wce());

    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(&url, "pr", dir.path(), &["--destage-off"]);
    // Wait until the server reports the change, then check it took.
    let stderr = server.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut destaging = false;
    // Until the server serves (registered): its start-up holds the table
    // lock, and a MODE SENSE from another initiator meanwhile may read
    // the page as it was.
    loop {
        let line = rx.recv_timeout(deadline - Instant::now()).unwrap();
        seen.push(line.clone());
        if line.contains("destaging off") {
            assert!(line.contains("WCE 0 -> 1"), "{line}");
            destaging = true;
        }
        if line.contains("serving as") {
            assert!(destaging, "{seen:?}");
            break;
        }
    }
    assert!(wce(), "WCE not set while the server runs");
    // SIGINT: the page is restored before the process exits.
    unsafe_free_kill(server.0.id(), libc::SIGINT);
    let status = server.0.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!wce(), "WCE not restored after SIGINT");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("Caching mode page restored")),
        "{rest:?}"
    );
}

fn unsafe_free_kill(pid: u32, sig: i32) {
    let out = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// Two processes with one initiator name towards one target would share an
/// ISID and a reservation key; the second is refused with a clear message.
#[test]
fn one_initiator_name_per_process_and_target() {
    let Some((_tgtd, lun)) = rig("one_initiator_name_per_process_and_target") else {
        return;
    };
    format(&lun.url);
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(&lun.url, "pr", dir.path(), &[]);
    // Wait until the server has its session (it formats nothing; a status
    // from another name succeeds meanwhile).
    std::thread::sleep(Duration::from_millis(500));
    let mut c = fts(&lun.url, "srv");
    c.arg("status");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("already uses initiator name"),
        "{}",
        text(&o)
    );
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "the server must be unaffected"
    );
    let mut c = fts(&lun.url, "other");
    c.arg("status");
    ok(c);
}
