//! Careless input and closed pipes, with real `fts` processes: absurd
//! durations are usage errors (exit 2) naming the flag and its range, a
//! closed standard output ends a command quietly with 141 (never a panic),
//! any other output failure is an error, and a failed `format` leaves no
//! file it created.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn fts() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fts"));
    c.env_remove("FTS_DEVICE")
        .env_remove("FTS_NAME")
        .env_remove("FTS_INITIATOR")
        .env_remove("FTS_LOCK");
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

fn formatted(dir: &Path) -> String {
    let dev = dir.join("shared.img").display().to_string();
    let o = fts()
        .args([
            "-d",
            &dev,
            "format",
            "--size",
            "32M",
            "--max-connections",
            "4",
        ])
        .args(["--ring-entries", "40"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    dev
}

/// Runs `cmd` with its standard output a pipe whose reader is already
/// gone (what `| head` leaves once head has its lines): every write fails
/// with EPIPE.
fn closed_stdout(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

fn assert_quiet_141(o: &Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert_eq!(code(o), 141, "{what}: {err}");
    assert!(!err.contains("error"), "{what}: {err}");
}

#[test]
fn absurd_durations_are_usage_errors_naming_the_flag_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let dev = formatted(dir.path());
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["put", "srv", "x", "y", "--timeout", "1e300"],
            "--timeout",
            "0 to 86400",
        ),
        (
            &["get", "srv", "x", "y", "--timeout", "inf"],
            "--timeout",
            "0 to 86400",
        ),
        (
            &["dir", "srv", "--timeout", "NaN"],
            "--timeout",
            "0 to 86400",
        ),
        (&["shell", "srv", "--timeout=-1"], "--timeout", "0 to 86400"),
        (
            &["dir", "srv", "--timeout", "ten"],
            "--timeout",
            "not a number",
        ),
        (
            &["--scsi-timeout", "1e300", "status"],
            "--scsi-timeout",
            "3600",
        ),
        (
            &["--scsi-timeout", "0", "status"],
            "--scsi-timeout",
            "more than 0",
        ),
        (
            &["format", "--force", "--lease-timeout-ms", "1"],
            "--lease-timeout-ms",
            "100 to 3600000",
        ),
        (
            &["format", "--force", "--lock-timeout-ms", "4000000000"],
            "--lock-timeout-ms",
            "100 to 3600000",
        ),
    ];
    let before = std::fs::read(&dev).unwrap();
    for (args, flag, range) in cases {
        let o = fts()
            .args(["-d", &dev, "-n", "a"])
            .args(*args)
            .output()
            .unwrap();
        assert_eq!(code(&o), 2, "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {flag} not in {err}");
        assert!(err.contains(range), "{args:?}: {range} not in {err}");
    }
    // Nothing ran: the device is as formatted.
    assert!(std::fs::read(&dev).unwrap() == before);
    // In range is accepted (a zero timeout: no server answers at once).
    let o = fts()
        .args(["-d", &dev, "-n", "a", "dir", "nobody", "--timeout", "0"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 9, "{}", text(&o));
}

#[test]
fn a_closed_stdout_ends_printing_commands_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let dev = formatted(dir.path());
    let runs: &[&[&str]] = &[
        &["inspect", "--json", "--entries"],
        &["inspect", "--entries"],
        &["check"],
        &["status"],
        &["status", "--json"],
    ];
    for args in runs {
        let mut c = fts();
        c.args(["-d", &dev, "-n", "a"]).args(*args);
        assert_quiet_141(&closed_stdout(c), &format!("{args:?}"));
    }
    // A check that finds problems still says so, with its own code.
    let f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 512], 7 * 4096).unwrap();
    let mut c = fts();
    c.args(["-d", &dev, "check"]);
    let o = closed_stdout(c);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
    // format does its work, then ends quietly.
    let new = dir.path().join("new.img");
    let mut c = fts();
    c.arg("-d")
        .arg(&new)
        .args(["format", "--size", "32M", "--max-connections", "4"])
        .args(["--ring-entries", "40"]);
    assert_quiet_141(&closed_stdout(c), "format");
    let o = fts().arg("-d").arg(&new).arg("check").output().unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
}

#[test]
fn other_output_failures_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dev = formatted(dir.path());
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = fts()
        .args(["-d", &dev, "inspect", "--json"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot write to standard output"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn scsi_inquiry_into_a_closed_pipe_ends_quietly() {
    let test = "scsi_inquiry_into_a_closed_pipe_ends_quietly";
    let Some(mut tgtd) = hil::tgt::start_or_skip(test) else {
        return;
    };
    let lun = tgtd.add_lun(16 << 20, 4096).unwrap();
    let mut c = fts();
    c.args(["-d", &lun.url, "-n", "probe", "scsi", "inquiry"]);
    assert_quiet_141(&closed_stdout(c), "scsi inquiry");
    // With a reader, it prints.
    let o = fts()
        .args(["-d", &lun.url, "-n", "probe", "scsi", "inquiry"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("vendor:"), "{}", text(&o));
}

#[test]
fn a_failed_format_leaves_no_file_it_created() {
    let dir = tempfile::tempdir().unwrap();
    // Geometry does not fit (exit 7): the file format created is gone.
    let new = dir.path().join("too-small.img");
    let o = fts()
        .arg("-d")
        .arg(&new)
        .args(["format", "--size", "16M", "--ring-entries", "640"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 7, "{}", text(&o));
    assert!(!new.exists(), "{} was left behind", new.display());
    // Too small for even the control structures.
    let o = fts()
        .arg("-d")
        .arg(&new)
        .args(["format", "--size", "64K"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 7, "{}", text(&o));
    assert!(!new.exists());
    // A file that existed stays, with its bytes and its size, even when
    // --size extended it first.
    let old = dir.path().join("existing.img");
    let bytes = vec![0u8; 1 << 20];
    std::fs::write(&old, &bytes).unwrap();
    for extra in [&[][..], &["--size", "16M"][..]] {
        let o = fts()
            .arg("-d")
            .arg(&old)
            .args(["format", "--ring-entries", "640"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(code(&o), 7, "{extra:?}: {}", text(&o));
        assert!(std::fs::read(&old).unwrap() == bytes, "{extra:?}");
    }
    // A device that cannot be opened: nothing created either.
    let nested = dir.path().join("no-such-dir").join("x.img");
    let o = fts()
        .arg("-d")
        .arg(&nested)
        .args(["format", "--size", "32M"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(!nested.exists());
    // And a format that fits still works on the same path.
    let o = fts()
        .arg("-d")
        .arg(&new)
        .args(["format", "--size", "32M", "--max-connections", "4"])
        .args(["--ring-entries", "40"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(new.exists());
}

/// `hold-lock 1e30` panicked converting the seconds; anything beyond a
/// year now means "until killed", and a negative or NaN value is a usage
/// error.
#[test]
fn hold_lock_takes_absurd_seconds_without_panicking() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let dev = formatted(dir.path());
    let mut child = fts()
        .args(["-d", &dev, "-n", "holder", "hold-lock", "1e30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("holding"), "{line}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "hold-lock 1e30 exited");
    child.kill().unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    for bad in ["-1", "NaN"] {
        let o = fts()
            .args(["-d", &dev, "-n", "holder", "hold-lock", bad])
            .output()
            .unwrap();
        assert_eq!(code(&o), 2, "hold-lock {bad}: {}", text(&o));
        assert!(!text(&o).contains("panicked"), "{}", text(&o));
    }
}
