//! Mutual exclusion between real processes.
//!
//! The tests re-run this test binary as child processes, selecting only
//! the `child_entry` test and a mode through environment variables. Run
//! normally (no variables), `child_entry` does nothing.

// Test helpers (and the child processes) outside #[test] fns may panic too.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fts_lock::{Error, OfdLock, TableLock};

const MODE: &str = "FTS_LOCK_TEST_CHILD";
const DEVICE: &str = "FTS_LOCK_TEST_DEVICE";
const GO: &str = "FTS_LOCK_TEST_GO";
const ITERATIONS: &str = "FTS_LOCK_TEST_ITERATIONS";
const LOCKED_LINE: &str = "FTS-LOCK-TEST: LOCKED";

/// Where the shared counter lives: LB 8, the first Process Id Table entry,
/// i.e. the kind of data the lock protects.
const COUNTER_OFFSET: u64 = 8 * 4096;

const PROCESSES: u64 = 4;
const PER_PROCESS: u64 = 100;
/// How long each update sleeps between reading and writing the counter, in
/// both modes: long enough that, without the lock, processes that run at
/// the same time surely read the same value and lose updates, so the
/// locked run's exact count means something.
const WINDOW: Duration = Duration::from_millis(2);

// ---------------------------------------------------------------- child side

#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(MODE) else {
        return; // an ordinary test run
    };
    let device = PathBuf::from(std::env::var(DEVICE).expect("device"));
    match mode.as_str() {
        "counter" | "counter-unlocked" => {
            let go = PathBuf::from(std::env::var(GO).expect("go file"));
            let n: u64 = std::env::var(ITERATIONS)
                .expect("iterations")
                .parse()
                .expect("number");
            count(&device, &go, n, mode == "counter");
        }
        "hold" => hold(&device),
        other => panic!("unknown child mode {other:?}"),
    }
}

/// `n` times: lock; read the counter; sleep [`WINDOW`]; write counter + 1;
/// unlock.
fn count(device: &Path, go: &Path, n: u64, locked: bool) {
    let mut lock = OfdLock::open(device).unwrap();
    let data = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .unwrap();
    // Start together, so that the processes really contend: say we are
    // ready, then wait for the parent's go.
    std::fs::write(ready_file(go, std::process::id()), b"").unwrap();
    let start = Instant::now();
    while !go.exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "no go signal");
        std::thread::sleep(Duration::from_millis(1));
    }
    for _ in 0..n {
        let guard = if locked {
            Some(lock.lock(Duration::from_secs(30)).unwrap())
        } else {
            None
        };
        let mut buf = [0u8; 8];
        data.read_exact_at(&mut buf, COUNTER_OFFSET).unwrap();
        let value = u64::from_le_bytes(buf);
        std::thread::sleep(WINDOW);
        data.write_all_at(&(value + 1).to_le_bytes(), COUNTER_OFFSET)
            .unwrap();
        if let Some(guard) = guard {
            guard.release().unwrap();
        }
    }
}

/// Takes the lock, says so on stdout, and holds it until killed (at most
/// a minute, in case the parent died).
fn hold(device: &Path) {
    use std::io::Write;
    let mut lock = OfdLock::open(device).unwrap();
    let _guard = lock.lock(Duration::from_secs(10)).unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "{LOCKED_LINE}").unwrap();
    out.flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

// --------------------------------------------------------------- parent side

fn device(dir: &Path) -> PathBuf {
    let path = dir.join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    path
}

fn spawn_child(mode: &str, device: &Path, stdout: Stdio) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .env(DEVICE, device)
        .stdin(Stdio::null())
        .stdout(stdout);
    cmd
}

/// The file a counting child creates when it is ready to start.
fn ready_file(go: &Path, pid: u32) -> PathBuf {
    go.with_file_name(format!("ready-{pid}"))
}

/// Runs `PROCESSES` counting children, starting them together once all
/// are ready, and returns the final counter.
fn run_counters(mode: &str) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let device = device(dir.path());
    let go = dir.path().join("go");
    let mut children: Vec<KillOnDrop> = (0..PROCESSES)
        .map(|_| {
            KillOnDrop(Some(
                spawn_child(mode, &device, Stdio::null())
                    .env(GO, &go)
                    .env(ITERATIONS, PER_PROCESS.to_string())
                    .spawn()
                    .unwrap(),
            ))
        })
        .collect();
    let start = Instant::now();
    for child in &mut children {
        let child = child.0.as_mut().unwrap();
        let pid = child.id();
        while !ready_file(&go, pid).exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("child {pid} exited before it was ready: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "child {pid} never got ready"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::fs::write(&go, b"go").unwrap();
    for mut child in children {
        let mut child = child.0.take().unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
    let data = std::fs::File::open(&device).unwrap();
    let mut buf = [0u8; 8];
    data.read_exact_at(&mut buf, COUNTER_OFFSET).unwrap();
    u64::from_le_bytes(buf)
}

#[test]
fn processes_exclude_each_other() {
    assert_eq!(run_counters("counter"), PROCESSES * PER_PROCESS);
}

/// The control for the test above: the same processes without the lock
/// lose updates, so an exact count there shows the lock at work (a lock
/// that excluded nothing would fail it).
#[test]
fn without_the_lock_updates_are_lost() {
    let want = PROCESSES * PER_PROCESS;
    let got = run_counters("counter-unlocked");
    assert!(
        got > 0 && got < want,
        "without the lock the counter reached {got} of {want}: no update was lost, \
         so the counter cannot tell a working lock from a broken one"
    );
}

#[test]
fn a_killed_holder_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let device = device(dir.path());
    let mut child = spawn_child("hold", &device, Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut child = KillOnDrop(Some(child));

    // Wait until the child holds the lock.
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("child exited before taking the lock")
            .unwrap();
        // libtest may have printed "test child_entry ... " on the same line.
        if line.trim_end().ends_with(LOCKED_LINE) {
            break;
        }
    }

    let mut lock = OfdLock::open(&device).unwrap();
    let err = lock.lock(Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");

    // SIGKILL the holder while we wait.
    let mut child = child.0.take().unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap()
    });
    let start = Instant::now();
    let guard = lock.lock(Duration::from_secs(20)).unwrap();
    let waited = start.elapsed();
    let status = killer.join().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    guard.release().unwrap();
}

/// Kills (SIGKILL) and reaps the child if the test fails before it does.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
