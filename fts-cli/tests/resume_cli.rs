//! Resumable transfers with real `fts` processes: a put or get interrupted
//! with Ctrl-C (SIGINT) keeps its partial copy; `--resume` (and `reput` /
//! `reget` in the shell) continues it, sends only the rest and delivers
//! identical bytes; a partial copy whose prefix does not match the file
//! starts over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod robust_common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use robust_common::*;

/// 96 MiB: long enough to interrupt, every MiB different.
fn big_data() -> Vec<u8> {
    let block = random(1 << 20, 42);
    let mut out = Vec::with_capacity(96 << 20);
    for i in 0..96u8 {
        out.extend(block.iter().map(|b| b ^ i.wrapping_mul(37)));
    }
    out
}

/// Waits until the temporary named `pattern` in `dir` holds at least
/// 4 MiB, then stops the server (SIGSTOP), interrupts the client (SIGINT),
/// waits for the client and resumes the server. The client must end
/// within 5 s.
fn interrupt(rig: &Rig, client: std::process::Child, dir: &Path, pattern: &str) -> Output {
    let grown = wait_until(Duration::from_secs(60), || {
        temp_size(dir, pattern).is_some_and(|(_, n)| n >= 4 << 20)
    });
    assert!(grown, "no temporary {pattern} of 4 MiB appeared in {dir:?}");
    signal(rig.server_pid(), "STOP");
    signal(client.id(), "INT");
    let o = wait_output(client, Duration::from_secs(5), "interrupted client");
    signal(rig.server_pid(), "CONT");
    o
}

/// "resumed at byte P, S bytes sent" → (P, S).
fn resumed(out: &str) -> Option<(u64, u64)> {
    let rest = &out[out.find("resumed at byte ")? + "resumed at byte ".len()..];
    let (p, rest) = rest.split_once(", ")?;
    let sent = rest.split_once(" bytes sent")?.0;
    Some((p.parse().ok()?, sent.parse().ok()?))
}

/// Waits until the server's connection thread has seen the client go.
fn server_saw_close(rig: &Rig) {
    assert!(
        wait_until(Duration::from_secs(10), || rig
            .server_stderr()
            .contains("client \"c\" closed")),
        "{}",
        rig.server_stderr()
    );
}

#[test]
fn an_interrupted_put_resumes_and_sends_only_the_rest() {
    let rig = Rig::new();
    let data = big_data();
    let src = rig.local("big.src");
    std::fs::write(&src, &data).unwrap();
    let child = rig.spawn("c", &["put", "srv", s(&src), "big.bin", "--resume"]);
    let o = interrupt(&rig, child, &rig.root, ".big.bin.fts-partial-");
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(text(&o).contains("interrupted by SIGINT"), "{}", text(&o));
    server_saw_close(&rig);
    assert!(!rig.root.join("big.bin").exists());
    let (partial, have) = temp_size(&rig.root, ".big.bin.fts-partial-").unwrap();
    assert!(have > 0 && have < data.len() as u64, "{have}");
    let o = rig.client("c", &["put", "srv", s(&src), "big.bin", "--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    let (at, sent) = resumed(&text(&o)).unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(at, have, "{}", text(&o));
    assert_eq!(sent, data.len() as u64 - have, "{}", text(&o));
    assert!(std::fs::read(rig.root.join("big.bin")).unwrap() == data);
    assert!(!partial.exists());
    assert!(
        temporaries(&rig.root).is_empty(),
        "{:?}",
        temporaries(&rig.root)
    );
}

#[test]
fn an_interrupted_get_resumes_and_sends_only_the_rest() {
    let rig = Rig::new();
    let data = big_data();
    std::fs::write(rig.root.join("big.bin"), &data).unwrap();
    let local = rig.local("copy.bin");
    let child = rig.spawn("c", &["get", "srv", "big.bin", s(&local), "--resume"]);
    let o = interrupt(&rig, child, rig.dir.path(), ".copy.bin.fts-partial-");
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(!local.exists());
    let (partial, have) = temp_size(rig.dir.path(), ".copy.bin.fts-partial-").unwrap();
    assert!(have > 0 && have < data.len() as u64, "{have}");
    let o = rig.client("c", &["get", "srv", "big.bin", s(&local), "--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    let (at, sent) = resumed(&text(&o)).unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!((at, sent), (have, data.len() as u64 - have), "{}", text(&o));
    assert!(std::fs::read(&local).unwrap() == data);
    assert!(!partial.exists());
}

/// The local file changed since the interrupted put: its first bytes no
/// longer match the server's partial copy, so the transfer starts over
/// (and still delivers the new bytes exactly).
#[test]
fn a_partial_copy_that_does_not_match_starts_over() {
    let rig = Rig::new();
    let mut data = big_data();
    let src = rig.local("big.src");
    std::fs::write(&src, &data).unwrap();
    let child = rig.spawn("c", &["put", "srv", s(&src), "big.bin", "--resume"]);
    let o = interrupt(&rig, child, &rig.root, ".big.bin.fts-partial-");
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    server_saw_close(&rig);
    data[10] ^= 0xff;
    std::fs::write(&src, &data).unwrap();
    let o = rig.client("c", &["put", "srv", s(&src), "big.bin", "--resume"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(resumed(&text(&o)), None, "{}", text(&o));
    assert!(std::fs::read(rig.root.join("big.bin")).unwrap() == data);
    assert!(
        temporaries(&rig.root).is_empty(),
        "{:?}",
        temporaries(&rig.root)
    );
}

/// The shell's `reget` and `reput` continue what one-shot `--resume`
/// transfers left.
#[test]
fn shell_reget_and_reput_continue_partial_copies() {
    let rig = Rig::new();
    let data = big_data();
    std::fs::write(rig.root.join("big.bin"), &data).unwrap();
    let local = rig.local("copy.bin");
    let child = rig.spawn("c", &["get", "srv", "big.bin", s(&local), "--resume"]);
    let o = interrupt(&rig, child, rig.dir.path(), ".copy.bin.fts-partial-");
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    server_saw_close(&rig);
    let (_, got) = temp_size(rig.dir.path(), ".copy.bin.fts-partial-").unwrap();
    let src = rig.local("up.src");
    std::fs::write(&src, &data).unwrap();
    let child = rig.spawn("c", &["put", "srv", s(&src), "up.bin", "--resume"]);
    let o = interrupt(&rig, child, &rig.root, ".up.bin.fts-partial-");
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(
        wait_until(Duration::from_secs(10), || rig
            .server_stderr()
            .matches("client \"c\" closed")
            .count()
            >= 2),
        "{}",
        rig.server_stderr()
    );
    let (_, put) = temp_size(&rig.root, ".up.bin.fts-partial-").unwrap();
    let mut sh = rig
        .cmd("c", &["shell", "srv"])
        .current_dir(rig.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sh.stdin
        .take()
        .unwrap()
        .write_all(b"reget big.bin copy.bin\nreput up.src up.bin\nquit\n")
        .unwrap();
    let o = wait_output(sh, DEADLINE, "shell reget/reput");
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    let n = data.len() as u64;
    assert!(
        out.contains(&format!(
            "received {} bytes (resumed at byte {got} of {n})",
            n - got
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "sent {} bytes (resumed at byte {put} of {n})",
            n - put
        )),
        "{out}"
    );
    assert!(std::fs::read(&local).unwrap() == data);
    assert!(std::fs::read(rig.root.join("up.bin")).unwrap() == data);
    assert!(temporaries(&rig.root).is_empty());
    assert!(temporaries(rig.dir.path()).is_empty());
}

/// `--resume` is binary only.
#[test]
fn resume_with_text_mode_is_a_usage_error() {
    let rig = Rig::new();
    let src = rig.local("t");
    std::fs::write(&src, b"a\n").unwrap();
    let o = rig.client("c", &["put", "srv", s(&src), "t", "--resume", "--text"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("binary"), "{}", text(&o));
}
