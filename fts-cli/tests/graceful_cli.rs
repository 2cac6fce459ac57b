//! Graceful stops with real `fts` processes: SIGTERM of a server ends its
//! clients' transfers within a second (not a lease timeout) with a message
//! naming the server; SIGINT of a one-shot client frees its entry and
//! removes its temporary before it exits 130; Ctrl-C in an interactive
//! shell (on a pseudo-terminal, through script(1)) abandons the command and
//! returns to the prompt on a fresh connection.
//!
//! The device has the default 10 s lease, so "within a second" cannot be a
//! lease expiry. These tests run one at a time (`serial`): they time
//! reactions, and the machine is small.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod robust_common;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use robust_common::*;
use serial_test::serial;

/// A 2 GiB sparse file: a transfer that lasts long enough to interrupt.
fn huge(path: &Path) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
}

fn grown(dir: &Path, pattern: &str) {
    assert!(
        wait_until(Duration::from_secs(60), || temp_size(dir, pattern)
            .is_some_and(|(_, n)| n >= 2 << 20)),
        "no temporary {pattern} of 2 MiB in {dir:?}"
    );
}

/// SIGTERM of the server while a client transfers: the client ends within
/// 1 s, exit 10, naming the server; the server exits 130 having removed
/// its temporary and freed the entry.
fn server_stop_ends_transfer(put: bool) {
    let mut rig = Rig::new();
    let (child, dir, pattern) = if put {
        let src = rig.local("huge.src");
        huge(&src);
        let c = rig.spawn("c", &["put", "srv", s(&src), "huge.bin"]);
        (c, rig.root.clone(), ".huge.bin.fts-")
    } else {
        huge(&rig.root.join("huge.bin"));
        let c = rig.spawn("c", &["get", "srv", "huge.bin", s(&rig.local("copy"))]);
        (c, rig.dir.path().to_path_buf(), ".copy.fts-")
    };
    grown(&dir, pattern);
    let t = Instant::now();
    signal(rig.server_pid(), "TERM");
    let o = wait_output(
        child,
        Duration::from_secs(15),
        "client of a stopping server",
    );
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    assert!(text(&o).contains("fts server \"srv\""), "{}", text(&o));
    assert!(text(&o).contains("closed"), "{}", text(&o));
    assert!(
        took < Duration::from_secs(1),
        "the client took {took:?} to notice the server's stop"
    );
    let server = rig.server.take().unwrap();
    let so = wait_output(server, Duration::from_secs(10), "stopping server");
    assert_eq!(so.status.code(), Some(130), "{}", rig.server_stderr());
    assert!(
        rig.server_stderr().contains("SIGTERM"),
        "{}",
        rig.server_stderr()
    );
    assert!(
        temporaries(&rig.root).is_empty(),
        "{:?}",
        temporaries(&rig.root)
    );
    assert!(temporaries(rig.dir.path()).is_empty());
    assert!(rig.connections().is_empty(), "{:?}", rig.connections());
}

#[test]
#[serial]
fn a_stopping_server_ends_a_put_within_a_second_naming_itself() {
    server_stop_ends_transfer(true);
}

#[test]
#[serial]
fn a_stopping_server_ends_a_get_within_a_second_naming_itself() {
    server_stop_ends_transfer(false);
}

/// SIGINT of a one-shot get: exit 130 within 1 s, its temporary removed,
/// its entry freed at once (not after the 10 s lease); the server sees the
/// close and keeps serving. The same for a put, whose temporary is on the
/// server.
#[test]
#[serial]
fn an_interrupted_one_shot_client_cleans_up_and_exits_130() {
    let rig = Rig::new();
    huge(&rig.root.join("huge.bin"));
    let child = rig.spawn("c", &["get", "srv", "huge.bin", s(&rig.local("copy"))]);
    grown(rig.dir.path(), ".copy.fts-");
    let t = Instant::now();
    signal(child.id(), "INT");
    let o = wait_output(child, Duration::from_secs(15), "interrupted get");
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(text(&o).contains("interrupted by SIGINT"), "{}", text(&o));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(
        temporaries(rig.dir.path()).is_empty(),
        "{:?}",
        temporaries(rig.dir.path())
    );
    assert!(!rig.local("copy").exists());
    let conns = rig.connections();
    assert!(conns.is_empty(), "entry not freed: {conns:?}");
    assert!(t.elapsed() < Duration::from_secs(5));

    let src = rig.local("huge.src");
    huge(&src);
    let child = rig.spawn("c", &["put", "srv", s(&src), "up.bin"]);
    grown(&rig.root, ".up.bin.fts-");
    signal(child.id(), "INT");
    let o = wait_output(child, Duration::from_secs(15), "interrupted put");
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(
        wait_until(Duration::from_secs(2), || temporaries(&rig.root).is_empty()),
        "the server kept the temporary: {:?}",
        temporaries(&rig.root)
    );
    assert!(!rig.root.join("up.bin").exists());
    let small = rig.local("small");
    std::fs::write(&small, b"still serving").unwrap();
    let o = rig.client("d", &["put", "srv", s(&small), "small"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Output of a child gathered by a thread.
fn collect(mut r: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let o = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            o.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    out
}

/// Ctrl-C (the byte 0x03 typed on the shell's terminal) during a get in an
/// interactive shell: the get is abandoned (no temporary left), the shell
/// reconnects to the same server in the same remote directory and goes on
/// taking commands; `quit` then exits 0 and leaves no entry.
#[test]
#[serial]
fn ctrl_c_in_an_interactive_shell_returns_to_the_prompt() {
    if Command::new("script").arg("--version").output().is_err() {
        return hil::skip::skip(
            "ctrl_c_in_an_interactive_shell_returns_to_the_prompt",
            "script(1) from util-linux is missing (it provides the pseudo-terminal)",
        );
    }
    let rig = Rig::new();
    std::fs::create_dir(rig.root.join("sub")).unwrap();
    huge(&rig.root.join("sub/huge.bin"));
    std::fs::write(rig.root.join("sub/small.txt"), b"small").unwrap();
    let line = format!(
        "exec {} -d {} -n c shell srv",
        env!("CARGO_BIN_EXE_fts"),
        rig.dev
    );
    let mut sh = Command::new("script")
        .args(["-q", "-e", "-f", "-c", &line, "/dev/null"])
        .current_dir(rig.dir.path())
        .env_remove("FTS_DEVICE")
        .env_remove("FTS_NAME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = collect(sh.stdout.take().unwrap());
    let mut input = sh.stdin.take().unwrap();
    let seen = |what: &str, times: usize| {
        wait_until(Duration::from_secs(20), || {
            out.lock().unwrap().matches(what).count() >= times
        })
    };
    assert!(seen("srv> ", 1), "no prompt: {}", out.lock().unwrap());
    input.write_all(b"cd sub\nget huge.bin copy.bin\n").unwrap();
    grown(rig.dir.path(), ".copy.bin.fts-");
    input.write_all(b"\x03").unwrap();
    assert!(seen("reconnecting to srv", 1), "{}", out.lock().unwrap());
    assert!(seen("connected to srv", 2), "{}", out.lock().unwrap());
    input.write_all(b"pwd\nget small.txt small.txt\n").unwrap();
    assert!(seen("received 5 bytes", 1), "{}", out.lock().unwrap());
    assert!(
        out.lock().unwrap().contains("/sub"),
        "{}",
        out.lock().unwrap()
    );
    assert_eq!(std::fs::read(rig.local("small.txt")).unwrap(), b"small");
    assert!(!rig.local("copy.bin").exists());
    assert!(
        temporaries(rig.dir.path()).is_empty(),
        "{:?}",
        temporaries(rig.dir.path())
    );
    input.write_all(b"quit\n").unwrap();
    let st = {
        let start = Instant::now();
        loop {
            if let Some(st) = sh.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = sh.kill();
                panic!("the shell did not quit: {}", out.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    drop(input);
    let mut err = String::new();
    let _ = sh.stderr.take().unwrap().read_to_string(&mut err);
    assert!(st.success(), "{st:?}: {}{err}", out.lock().unwrap());
    assert!(rig.connections().is_empty(), "{:?}", rig.connections());
}

/// A shell idle on a connection when its server stops: its next command
/// fails at once (well within the lease), naming the server.
#[test]
#[serial]
fn an_idle_shell_learns_of_a_server_stop_at_its_next_command() {
    let mut rig = Rig::new();
    let mut sh = rig
        .cmd("c", &["shell", "srv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || rig
        .connections()
        .iter()
        .any(|c| c["state"] == "connected")));
    signal(rig.server_pid(), "TERM");
    let server = rig.server.take().unwrap();
    let so = wait_output(server, Duration::from_secs(10), "stopping server");
    assert_eq!(so.status.code(), Some(130));
    let t = Instant::now();
    sh.stdin.take().unwrap().write_all(b"pwd\n").unwrap();
    let o = wait_output(
        sh,
        Duration::from_secs(15),
        "shell after the server stopped",
    );
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    assert!(text(&o).contains("fts server \"srv\""), "{}", text(&o));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(rig.connections().is_empty(), "{:?}", rig.connections());
}
