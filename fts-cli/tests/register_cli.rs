//! One server per name, with real `fts serve` processes on a file-backed
//! device: a second serve of a live name is refused (exit 15) and the
//! first keeps serving; a SIGKILLed server's name is reclaimed after the
//! lease timeout; of two serves started at once exactly one survives; a
//! server stopped past its lease and taken over stops when it wakes;
//! `status` lists the servers (names escaped) apart from the connections,
//! and `check` calls a live registration no problem.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod robust_common;

use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use robust_common::{fts, run, signal, text, wait_until, DEADLINE};

const LEASE_MS: u64 = 1500;

/// Kills and reaps on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The exit code once it has ended (within `limit`).
    fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        assert!(
            wait_until(limit, || matches!(self.0.try_wait(), Ok(Some(_)))),
            "still running after {limit:?}"
        );
        self.0.wait().unwrap().code()
    }

    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

struct Dev {
    dir: tempfile::TempDir,
    path: String,
    logs: std::cell::Cell<u32>,
}

/// A server process and the file its standard error goes to.
struct Server {
    proc: Proc,
    log: PathBuf,
    root: PathBuf,
}

impl Server {
    fn said(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it has registered its name (or ended).
    fn registered(&mut self) -> bool {
        wait_until(Duration::from_secs(20), || {
            let s = self.said();
            s.contains("registered as fts server")
                || s.contains("reclaimed the registration")
                || s.contains("fts: error")
        });
        let s = self.said();
        s.contains("registered as fts server") || s.contains("reclaimed the registration")
    }
}

impl Dev {
    fn new() -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.img").display().to_string();
        let o = run(
            {
                let mut c = fts();
                c.args(["-d", &path, "format", "--size", "32M"])
                    .args(["--segment-size", "64K", "--ring-entries", "16"])
                    .args(["--batch", "4", "--max-connections", "6"])
                    .args(["--lease-timeout-ms", &LEASE_MS.to_string()]);
                c
            },
            DEADLINE,
            "format",
        );
        assert!(o.status.success(), "{}", text(&o));
        Dev {
            dir,
            path,
            logs: std::cell::Cell::new(0),
        }
    }

    /// Starts `fts -n NAME serve --root <dir>/ROOT` (not waiting).
    fn spawn_server(&self, name: &str, root: &str) -> Server {
        let root = self.dir.path().join(root);
        std::fs::create_dir_all(&root).unwrap();
        let n = self.logs.get() + 1;
        self.logs.set(n);
        let log = self.dir.path().join(format!("serve{n}.log"));
        let child = fts()
            .args(["-d", &self.path, "-n", name, "serve", "--root"])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Server {
            proc: Proc(child),
            log,
            root,
        }
    }

    /// Starts a server and waits until it has registered.
    fn serve(&self, name: &str, root: &str) -> Server {
        let mut s = self.spawn_server(name, root);
        assert!(s.registered(), "{name} did not register: {}", s.said());
        s
    }

    fn run(&self, args: &[&str]) -> Output {
        run(
            {
                let mut c = fts();
                c.args(["-d", &self.path]).args(args);
                c
            },
            DEADLINE,
            &format!("fts {args:?}"),
        )
    }

    fn status_json(&self) -> serde_json::Value {
        let o = self.run(&["status", "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn servers(&self) -> Vec<serde_json::Value> {
        self.status_json()["servers"].as_array().unwrap().clone()
    }

    /// `put` of a small file to `server`; the file as the client sent it.
    fn put(&self, server: &str, remote: &str) -> (Output, Vec<u8>) {
        let data: Vec<u8> = (0..150_000u32).map(|i| (i * 31 + i / 97) as u8).collect();
        let local = self.dir.path().join(format!("{remote}.src"));
        std::fs::write(&local, &data).unwrap();
        let o = self.run(&[
            "-n",
            "cli",
            "put",
            server,
            local.to_str().unwrap(),
            remote,
            "--timeout",
            "20",
        ]);
        (o, data)
    }
}

#[test]
fn a_second_serve_of_a_live_name_is_refused_with_exit_15_and_the_first_keeps_serving() {
    let dev = Dev::new();
    let mut first = dev.serve("srv", "root1");
    let t = Instant::now();
    let mut second = dev.spawn_server("srv", "root2");
    assert_eq!(
        second.proc.exit_code(DEADLINE),
        Some(15),
        "{}",
        second.said()
    );
    // Refused on seeing the holder's lease move, well within a lease timeout.
    assert!(
        t.elapsed() < Duration::from_millis(LEASE_MS + 1000),
        "{:?}",
        t.elapsed()
    );
    let said = second.said();
    assert!(said.contains("already running"), "{said}");
    assert!(
        said.contains(&format!("pid {}", first.proc.pid())),
        "{said}"
    );
    assert!(said.contains("registered since"), "{said}");
    assert!(said.contains("lease age"), "{said}");
    // The first keeps serving: a put reaches its root, not the second's.
    assert!(first.proc.running());
    let (o, data) = dev.put("srv", "f.bin");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(first.root.join("f.bin")).unwrap(), data);
    assert!(!second.root.join("f.bin").exists());
    let servers = dev.servers();
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0]["pid"], first.proc.pid());
}

#[test]
fn a_sigkilled_servers_name_is_reclaimed_after_the_lease_timeout() {
    let dev = Dev::new();
    let first = dev.serve("srv", "root1");
    let old_pid = first.proc.pid();
    // Another server watches the table (its reaper) all along.
    let other = dev.serve("other", "root-other");
    signal(old_pid, "KILL");
    drop(first);
    // The name is not free at once (the registration is still there)...
    assert_eq!(dev.servers().len(), 2);
    let t = Instant::now();
    let mut next = dev.spawn_server("srv", "root2");
    assert!(next.registered(), "{}", next.said());
    let took = t.elapsed();
    // ...but after the lease timeout: reclaimed by the new server, or
    // freed first by the other server's reaper.
    assert!(took < Duration::from_millis(4 * LEASE_MS), "{took:?}");
    let said = next.said();
    let reaped = other.said();
    assert!(
        said.contains("reclaimed the registration of a dead fts server \"srv\"")
            || reaped.contains("registration of fts server \"srv\""),
        "new server: {said}\nother server: {reaped}"
    );
    if said.contains("reclaimed the registration") {
        assert!(said.contains(&format!("pid {old_pid}")), "{said}");
        assert!(took >= Duration::from_millis(LEASE_MS - 300), "{took:?}");
    }
    // A registration is never reported as a dead connection.
    assert!(!reaped.contains("connection \"srv\""), "{reaped}");
    let (o, data) = dev.put("srv", "g.bin");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(next.root.join("g.bin")).unwrap(), data);
    let servers = dev.servers();
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert!(servers
        .iter()
        .any(|s| s["name"] == "srv" && s["pid"] == next.proc.pid() && s["alive"] == true));
}

#[test]
fn the_reaper_of_a_running_server_frees_a_killed_servers_registration() {
    let dev = Dev::new();
    let other = dev.serve("other", "root-other");
    let gone = dev.serve("gone", "root-gone");
    signal(gone.proc.pid(), "KILL");
    let slot = dev.servers().iter().find(|s| s["name"] == "gone").unwrap()["slot"].clone();
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_millis(5 * LEASE_MS), || dev
            .servers()
            .iter()
            .all(|s| s["name"] != "gone")),
        "never freed: {}",
        other.said()
    );
    assert!(t.elapsed() + Duration::from_millis(300) >= Duration::from_millis(LEASE_MS));
    let said = other.said();
    assert!(
        said.contains(&format!(
            "freed Process Id Table entry {slot} (registration of fts server \"gone\""
        )),
        "{said}"
    );
    // The live one (its own) stays.
    let servers = dev.servers();
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0]["name"], "other");
    assert_eq!(servers[0]["alive"], true);
}

#[test]
fn of_two_serves_started_at_once_exactly_one_survives() {
    let dev = Dev::new();
    for round in 0..3 {
        let mut a = dev.spawn_server("srv", "ra");
        let mut b = dev.spawn_server("srv", "rb");
        // Both have registered or been refused within a lease timeout.
        let settled = wait_until(Duration::from_secs(20), || {
            let (sa, sb) = (a.said(), b.said());
            let done = |s: &str| s.contains("registered as") || s.contains("fts: error");
            done(&sa) && done(&sb)
        });
        assert!(settled, "round {round}: {}\n---\n{}", a.said(), b.said());
        std::thread::sleep(Duration::from_millis(300));
        let (ra, rb) = (a.proc.running(), b.proc.running());
        assert!(
            ra != rb,
            "round {round}: exactly one must run (a: {ra}, b: {rb}):\n{}\n---\n{}",
            a.said(),
            b.said()
        );
        let (winner, loser) = if ra {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        assert_eq!(loser.proc.exit_code(DEADLINE), Some(15), "{}", loser.said());
        let (o, data) = dev.put("srv", &format!("r{round}.bin"));
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(
            std::fs::read(winner.root.join(format!("r{round}.bin"))).unwrap(),
            data
        );
        // A clean stop frees the name at once for the next round.
        signal(winner.proc.pid(), "TERM");
        assert_eq!(
            winner.proc.exit_code(DEADLINE),
            Some(130),
            "{}",
            winner.said()
        );
        assert!(dev.servers().is_empty(), "round {round}");
    }
}

#[test]
fn a_server_stopped_past_its_lease_and_taken_over_stops_when_it_wakes() {
    let dev = Dev::new();
    let mut first = dev.serve("srv", "root1");
    signal(first.proc.pid(), "STOP");
    let mut second = dev.serve("srv", "root2");
    assert!(
        second.said().contains("reclaimed the registration"),
        "{}",
        second.said()
    );
    signal(first.proc.pid(), "CONT");
    assert_eq!(first.proc.exit_code(DEADLINE), Some(15), "{}", first.said());
    let said = first.said();
    assert!(said.contains("no longer its own"), "{said}");
    assert!(said.contains("stopped serving"), "{said}");
    assert!(
        said.contains(&format!("pid {}", second.proc.pid())),
        "names the new holder: {said}"
    );
    // The new holder is untouched and serves.
    assert!(second.proc.running());
    let (o, data) = dev.put("srv", "h.bin");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(second.root.join("h.bin")).unwrap(), data);
    let servers = dev.servers();
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0]["pid"], second.proc.pid());
}

#[test]
fn status_lists_servers_apart_from_connections_and_escapes_their_names() {
    let dev = Dev::new();
    let hostile = "evil\u{1b}]0;owned\u{7}\u{1b}[2J";
    let _evil = dev.serve(hostile, "root-evil");
    let srv = dev.serve("srv", "root-srv");
    // A connection held open by a shell.
    let mut shell = Proc(
        fts()
            .args(["-d", &dev.path, "-n", "cli", "shell", "srv"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(Duration::from_secs(20), || {
        dev.status_json()["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["requestor"] == "cli" && c["state"] == "connected")
    }));
    let v = dev.status_json();
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "registrations are not connections: {v}");
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{v}");
    let s = servers.iter().find(|s| s["name"] == "srv").unwrap();
    assert_eq!(s["pid"], srv.proc.pid());
    assert_eq!(s["alive"], true);
    assert_eq!(s["state"], "alive");
    assert!(s["since"].as_str().unwrap().ends_with("UTC"), "{s}");
    assert!(s["lease_age_s"].as_f64().unwrap() < LEASE_MS as f64 / 1000.0);
    let host = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    if let Ok(h) = uuid::Uuid::try_parse(host.trim()) {
        assert_eq!(s["host"], h.to_string());
    }
    assert!(servers.iter().any(|s| s["name"] == hostile), "{v}");
    // The JSON carries the name exactly, with the control characters
    // escaped by JSON itself.
    let o = dev.run(&["status", "--json"]);
    assert!(!o.stdout.contains(&0x1b), "a raw ESC in the JSON");
    assert!(!o.stdout.contains(&0x07), "a raw BEL in the JSON");
    // The text shows both servers, the hostile name escaped.
    let o = dev.run(&["status"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!o.stdout.contains(&0x1b), "a raw ESC reached the terminal");
    assert!(!o.stdout.contains(&0x07), "a raw BEL reached the terminal");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("evil\\u{1b}]0;owned\\u{7}\\u{1b}[2J"), "{out}");
    assert!(out.contains(&srv.proc.pid().to_string()), "{out}");
    assert!(out.contains("1 of 6 connections in use"), "{out}");
    assert!(
        out.contains("2 more entries hold server registrations"),
        "{out}"
    );
    // `check` calls live registrations no problem.
    let o = dev.run(&["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("is consistent"), "{}", text(&o));
    use std::io::Write as _;
    writeln!(shell.0.stdin.as_mut().unwrap(), "quit").unwrap();
    assert_eq!(shell.exit_code(DEADLINE), Some(0));
}
