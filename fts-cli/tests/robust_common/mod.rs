//! Helpers of the robustness tests (transfer_robust, resume_cli,
//! graceful_cli): a file-backed device, a real `fts serve` process whose
//! standard error is kept, clients with deadlines, signals, mounts.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest any single fts command of these tests may take: a hang fails
/// the test instead of wedging the run.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn fts() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fts"));
    c.env_remove("FTS_DEVICE").env_remove("FTS_NAME");
    c
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn random(n: usize, seed: u64) -> Vec<u8> {
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

/// Waits for `child` at most `limit`; kills it and panics (naming `what`)
/// if it is still running then.
pub fn wait_output(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{what}: still running after {limit:?} (killed): {}",
                text(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` with captured output under [`DEADLINE`] (or `limit`).
pub fn run(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, limit, what)
}

/// Sends `sig` (e.g. "STOP", "INT") to `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// Polls `cond` every few milliseconds for at most `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Files in `dir` whose name contains `.fts-` (temporaries, partials).
pub fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".fts-"))
        .collect();
    v.sort();
    v
}

/// The largest temporary in `dir` whose name contains `pattern`, and its size.
pub fn temp_size(dir: &Path, pattern: &str) -> Option<(PathBuf, u64)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(pattern))
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .max_by_key(|(_, n)| *n)
}

/// A formatted file-backed device, a server root and (once started) a
/// `serve` process named "srv" whose standard error goes to a file.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub dev: String,
    pub root: PathBuf,
    pub server: Option<Child>,
    pub server_log: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = signal_quiet(s.id(), "CONT");
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn signal_quiet(pid: u32, sig: &str) -> std::io::Result<ExitStatus> {
    Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status()
}

impl Rig {
    /// Formats the device (lease timeout `lease_ms`); no server yet.
    pub fn format(lease_ms: u32) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("shared.img").display().to_string();
        let o = run(
            {
                let mut c = fts();
                c.args([
                    "-d",
                    &dev,
                    "format",
                    "--size",
                    "48M",
                    "--segment-size",
                    "64K",
                    "--ring-entries",
                    "16",
                    "--batch",
                    "4",
                    "--max-connections",
                    "4",
                    "--lease-timeout-ms",
                ])
                .arg(lease_ms.to_string());
                c
            },
            DEADLINE,
            "format",
        );
        assert!(o.status.success(), "{}", text(&o));
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let server_log = dir.path().join("server.log");
        Rig {
            dir,
            dev,
            root,
            server: None,
            server_log,
        }
    }

    /// Formats and starts the server with the default 10 s lease.
    pub fn new() -> Rig {
        let mut rig = Rig::format(10_000);
        rig.start(&[]);
        rig
    }

    /// Starts `fts serve --root ROOT EXTRA...` and waits until it serves.
    pub fn start(&mut self, extra: &[&str]) {
        let log = std::fs::File::create(&self.server_log).unwrap();
        let child = fts()
            .args(["-d", &self.dev, "-n", "srv", "serve", "--root"])
            .arg(&self.root)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), || self
                .server_stderr()
                .contains("serving as")),
            "the server did not start: {}",
            self.server_stderr()
        );
    }

    pub fn server_pid(&self) -> u32 {
        self.server.as_ref().unwrap().id()
    }

    /// What the server wrote to its standard error so far.
    pub fn server_stderr(&self) -> String {
        let mut out = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.server_log) {
            let _ = f.read_to_string(&mut out);
        }
        out
    }

    /// `fts -d DEV -n NAME ARGS...`, not started.
    pub fn cmd(&self, name: &str, args: &[&str]) -> Command {
        let mut c = fts();
        c.args(["-d", &self.dev, "-n", name]).args(args);
        c
    }

    /// Runs a client command to completion under the deadline.
    pub fn client(&self, name: &str, args: &[&str]) -> Output {
        run(self.cmd(name, args), DEADLINE, &format!("fts {args:?}"))
    }

    /// Starts a client command with captured output.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Child {
        self.cmd(name, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The `connections` array of `fts status --json`.
    pub fn connections(&self) -> Vec<serde_json::Value> {
        let o = self.client("q", &["status", "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["connections"].as_array().unwrap().clone()
    }

    pub fn local(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A tmpfs mounted for a test, unmounted when dropped.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "1m") with `opts` (e.g. "ro") at
    /// `path` (created); `Err` says why it cannot be done here.
    pub fn mount(path: &Path, size: &str, opts: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let mut o = format!("size={size}");
        if !opts.is_empty() {
            o.push(',');
            o.push_str(opts);
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &o, "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
