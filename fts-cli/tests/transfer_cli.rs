//! Transfers between real `fts` processes through a file-backed device:
//! a `serve` process and client processes, as on two hosts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const P: usize = 64 * 1024 - 64; // payload bytes per 64 KiB segment
const RING: usize = 16;

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

struct Rig {
    dir: tempfile::TempDir,
    dev: String,
    root: PathBuf,
    server: Child,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Rig {
    fn new(max_connections: u32) -> Rig {
        Rig::with_lease(max_connections, 10_000)
    }

    fn with_lease(max_connections: u32, lease_ms: u32) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("shared.img").display().to_string();
        let o = fts()
            .args([
                "-d",
                &dev,
                "format",
                "--size",
                "48M",
                "--segment-size",
                "64K",
                "--ring-entries",
            ])
            .arg(RING.to_string())
            .args(["--batch", "4", "--max-connections"])
            .arg(max_connections.to_string())
            .arg("--lease-timeout-ms")
            .arg(lease_ms.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let server = fts()
            .args(["-d", &dev, "-n", "srv", "serve", "--root"])
            .arg(&root)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Rig {
            dir,
            dev,
            root,
            server,
        }
    }

    fn client(&self, name: &str, args: &[&str]) -> Output {
        fts()
            .args(["-d", &self.dev, "-n", name])
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `fts shell srv` with `script` on stdin.
    fn shell(&self, name: &str, script: &[u8]) -> Output {
        let mut child = fts()
            .args(["-d", &self.dev, "-n", name, "shell", "srv"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(script).unwrap();
        child.wait_with_output().unwrap()
    }

    /// The `connections` array of `fts status --json`.
    fn connections(&self) -> Vec<serde_json::Value> {
        let o = self.client("q", &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["connections"].as_array().unwrap().clone()
    }

    fn local(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn put_and_get_are_byte_identical_at_every_boundary() {
    let rig = Rig::new(4);
    let sizes = [0, 1, P - 1, P, P + 1, 3 * RING * P + 12345];
    for (i, &n) in sizes.iter().enumerate() {
        let data = random(n, i as u64 + 1);
        let src = rig.local(&format!("src{i}"));
        std::fs::write(&src, &data).unwrap();
        let o = rig.client("cli", &["put", "srv", s(&src), &format!("f{i}")]);
        assert!(o.status.success(), "put {n}: {}", text(&o));
        assert_eq!(
            std::fs::read(rig.root.join(format!("f{i}"))).unwrap(),
            data,
            "put {n}"
        );
        let back = rig.local(&format!("back{i}"));
        let o = rig.client("cli", &["get", "srv", &format!("f{i}"), s(&back)]);
        assert!(o.status.success(), "get {n}: {}", text(&o));
        assert_eq!(std::fs::read(&back).unwrap(), data, "get {n}");
    }
    // No temporary files are left in the server root.
    let names: Vec<String> = std::fs::read_dir(&rig.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn replace_semantics_and_exit_codes() {
    let rig = Rig::new(4);
    let a = rig.local("a");
    std::fs::write(&a, b"first").unwrap();
    assert!(rig
        .client("c", &["put", "srv", s(&a), "x"])
        .status
        .success());
    std::fs::write(&a, b"second").unwrap();
    let o = rig.client("c", &["put", "srv", s(&a), "x"]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(text(&o).contains("exists"), "{}", text(&o));
    assert_eq!(std::fs::read(rig.root.join("x")).unwrap(), b"first");
    let o = rig.client("c", &["put", "srv", s(&a), "x", "--replace"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(rig.root.join("x")).unwrap(), b"second");
    // get onto an existing local file
    let o = rig.client("c", &["get", "srv", "x", s(&a)]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    let o = rig.client("c", &["get", "srv", "missing", s(&rig.local("m"))]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(!rig.local("m").exists());
}

#[test]
fn paths_escaping_the_root_are_refused() {
    let rig = Rig::new(4);
    let a = rig.local("a");
    std::fs::write(&a, b"x").unwrap();
    std::os::unix::fs::symlink(rig.dir.path(), rig.root.join("escape")).unwrap();
    for remote in ["../outside", "/etc/passwd", "escape/a", "escape/new"] {
        let o = rig.client("c", &["get", "srv", remote, s(&rig.local("got"))]);
        assert_eq!(o.status.code(), Some(8), "get {remote}: {}", text(&o));
        let o = rig.client("c", &["put", "srv", s(&a), remote]);
        assert_eq!(o.status.code(), Some(8), "put {remote}: {}", text(&o));
    }
    assert!(!rig.dir.path().join("outside").exists());
    assert!(!rig.dir.path().join("new").exists());
}

#[test]
fn shell_script_dir_cd_text_mode() {
    let rig = Rig::new(4);
    std::fs::create_dir_all(rig.root.join("sub")).unwrap();
    std::fs::write(rig.root.join("sub/hello.txt"), b"one\r\ntwo\r\n").unwrap();
    let t = rig.local("unix.txt");
    std::fs::write(&t, b"a\nb\n").unwrap();
    let script = format!(
        "dir\ncd sub\npwd\ndir\ntext\nget hello.txt {}\nput {} up.txt\nbinary\nget up.txt {}\nquit\n",
        s(&rig.local("hello.lf")),
        s(&t),
        s(&rig.local("up.crlf"))
    );
    let o = rig.shell("sh", script.as_bytes());
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("d ") && out.contains("sub"), "{out}");
    assert!(out.contains("/sub"), "{out}");
    assert!(out.contains("hello.txt"), "{out}");
    assert_eq!(std::fs::read(rig.local("hello.lf")).unwrap(), b"one\ntwo\n");
    assert_eq!(
        std::fs::read(rig.root.join("sub/up.txt")).unwrap(),
        b"a\nb\n"
    );
    assert_eq!(std::fs::read(rig.local("up.crlf")).unwrap(), b"a\nb\n");
    // A failing script stops at the first error with a non-zero exit.
    let o = rig.shell("sh", b"cd nowhere\nput /nonexistent-file x\n");
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
}

#[test]
fn unknown_server_times_out_clearly() {
    let rig = Rig::new(4);
    let o = rig.client("c", &["dir", "nobody", "--timeout", "0.5"]);
    assert_eq!(o.status.code(), Some(9), "{}", text(&o));
    assert!(text(&o).contains("nobody"), "{}", text(&o));
    assert!(
        text(&o).contains("no server of that name is registered"),
        "{}",
        text(&o)
    );
    let conns = rig.connections();
    assert_eq!(conns.len(), 0, "the claimed entry was freed");
}

#[test]
fn eight_clients_at_once() {
    // Nine entries: eight clients and the server's registration.
    let rig = Rig::new(9);
    let kids: Vec<(usize, Vec<u8>, Child)> = (0..8)
        .map(|i| {
            let data = random(200_000 + i * 77_777, 100 + i as u64);
            let src = rig.local(&format!("c{i}"));
            std::fs::write(&src, &data).unwrap();
            let child = fts()
                .args([
                    "-d",
                    &rig.dev,
                    "-n",
                    &format!("c{i}"),
                    "put",
                    "srv",
                    s(&src),
                    &format!("c{i}.bin"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (i, data, child)
        })
        .collect();
    for (i, data, child) in kids {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "client {i}: {}", text(&o));
        assert_eq!(
            std::fs::read(rig.root.join(format!("c{i}.bin"))).unwrap(),
            data,
            "client {i}"
        );
    }
}

#[test]
fn a_full_table_is_a_clear_error_and_frees_nothing() {
    // Three entries: one holds the server's registration.
    let rig = Rig::new(3);
    // Two shells hold both entries open (their stdin stays open).
    let mut holders: Vec<Child> = (0..2)
        .map(|i| {
            fts()
                .args(["-d", &rig.dev, "-n", &format!("h{i}"), "shell", "srv"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    assert!(connected(&rig, 2), "both holders should be connected");
    let o = rig.client("late", &["dir", "srv"]);
    assert_eq!(o.status.code(), Some(12), "{}", text(&o));
    assert!(text(&o).contains("full"), "{}", text(&o));
    let conns = rig.connections();
    let names: Vec<&str> = conns
        .iter()
        .map(|c| c["requestor"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for h in holders.iter_mut() {
        h.stdin.take().unwrap().write_all(b"quit\n").unwrap();
    }
    for h in holders {
        assert!(h.wait_with_output().unwrap().status.success());
    }
    let o = rig.client("late", &["dir", "srv"]);
    assert!(o.status.success(), "{}", text(&o));
}

fn connected(rig: &Rig, want: usize) -> bool {
    for _ in 0..200 {
        let conns = rig.connections();
        let n = conns.iter().filter(|c| c["state"] == "connected").count();
        if n == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// The server dies (SIGKILL) under an open connection: the client's next
/// command fails with "peer died" (exit 10) within about the lease timeout,
/// leaves no partial file, and frees its Process Id Table entry.
#[test]
fn a_dead_server_is_detected_and_nothing_partial_is_left() {
    let mut rig = Rig::with_lease(4, 800);
    let mut sh = fts()
        .args(["-d", &rig.dev, "-n", "c", "shell", "srv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(connected(&rig, 1));
    rig.server.kill().unwrap();
    rig.server.wait().unwrap();
    let target = rig.local("never");
    let t = std::time::Instant::now();
    sh.stdin
        .take()
        .unwrap()
        .write_all(format!("get f {}\n", s(&target)).as_bytes())
        .unwrap();
    let o = sh.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    assert!(
        text(&o).contains("dead") || text(&o).contains("gone"),
        "{}",
        text(&o)
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(!target.exists());
    let leftovers: Vec<_> = std::fs::read_dir(rig.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".fts-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let conns = rig.connections();
    assert_eq!(conns.len(), 0, "{conns:?}");
}

/// A client killed mid-session: the server sees its lease stop, frees the
/// entry, and keeps serving others.
#[test]
fn a_dead_client_is_cleaned_up_by_the_server() {
    let rig = Rig::with_lease(4, 800);
    let mut sh = fts()
        .args(["-d", &rig.dev, "-n", "doomed", "shell", "srv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(connected(&rig, 1));
    sh.kill().unwrap();
    sh.wait().unwrap();
    assert!(
        connected(&rig, 0),
        "the dead client's entry was never freed"
    );
    let conns = rig.connections();
    assert_eq!(conns.len(), 0, "{conns:?}");
    let o = rig.client("next", &["dir", "srv"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// The README's main job runs end to end.
#[test]
fn demo_moves_a_file_both_ways() {
    let o = fts().args(["demo", "--size", "3M"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("byte-identical"), "{out}");
    assert!(out.contains("MiB/s"), "{out}");
}
