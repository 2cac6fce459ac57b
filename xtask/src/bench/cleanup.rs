//! Everything the bench creates is undone, on success, on error and on
//! Ctrl-C.
//!
//! Each resource is a guard whose `Drop` undoes it (errors and panics
//! unwind through those). A signal does not unwind, so every guard also
//! writes one line to a journal, and a watchdog process (this binary again,
//! `bench --watchdog JOURNAL`, in its own process group so that the
//! terminal's Ctrl-C does not reach it) waits for its standard input to
//! close. That happens when the bench exits for any reason; if the journal
//! is still there then, the bench did not get to clean up, and the watchdog
//! replays the journal backwards. Every replayed step checks first that the
//! resource is still the bench's (a process's start time, a loop device's
//! backing file, a mount point in `/proc/mounts`), so replaying a step whose
//! guard already ran does nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The journal the guards append to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    file: Arc<Mutex<File>>,
}

impl Journal {
    fn open(path: &Path) -> Result<Journal> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("creating the cleanup journal {}", path.display()))?;
        Ok(Journal {
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Appends one replayable step.
    fn note(&self, line: &str) {
        debug_assert!(!line.contains('\n'));
        if let Ok(mut f) = self.file.lock() {
            // Best effort: a journal that cannot be written only loses the
            // Ctrl-C cleanup, not the normal one.
            let _ = writeln!(f, "{line}");
            let _ = f.flush();
        }
    }
}

/// The watchdog, and the journal it replays if the bench dies. Create it
/// first and drop it last: its drop removes the journal (everything was
/// cleaned up by then) and lets the watchdog go.
#[derive(Debug)]
pub struct Watchdog {
    journal_path: PathBuf,
    journal: Journal,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts the watchdog on a new journal at `journal_path`.
    pub fn start(journal_path: &Path) -> Result<Watchdog> {
        let _ = fs::remove_file(journal_path);
        let journal = Journal::open(journal_path)?;
        let exe = std::env::current_exe().context("finding the xtask binary for the watchdog")?;
        let mut child = Command::new(exe)
            .args(["bench", "--watchdog"])
            .arg(journal_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Its own process group: Ctrl-C in the terminal does not reach it.
            .process_group(0)
            .spawn()
            .context("starting the bench's cleanup watchdog")?;
        let stdin = child.stdin.take();
        Ok(Watchdog {
            journal_path: journal_path.to_path_buf(),
            journal,
            child: Some(child),
            stdin,
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.journal_path);
        drop(self.stdin.take());
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// `bench --watchdog JOURNAL`: waits for standard input to close, then
/// replays whatever the journal still holds, last step first.
pub fn watchdog(args: &[String]) -> Result<()> {
    let [journal] = args else {
        bail!("bench --watchdog JOURNAL");
    };
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    let Ok(text) = fs::read_to_string(journal) else {
        return Ok(()); // removed: the bench cleaned up itself
    };
    // Let the bench's other children (killed by the same Ctrl-C) exit.
    std::thread::sleep(Duration::from_millis(300));
    eprintln!("bench watchdog: the bench ended without cleaning up; undoing what it created");
    for line in text.lines().rev() {
        let words: Vec<&str> = line.split(' ').collect();
        let what = replay(&words);
        if !what.is_empty() {
            eprintln!("bench watchdog: {what}");
        }
    }
    let _ = fs::remove_file(journal);
    Ok(())
}

/// Undoes one journal step if it is still in place; says what it did.
fn replay(w: &[&str]) -> String {
    match w {
        ["kill", pid, start] => {
            if start_time(pid.parse().unwrap_or(0)).as_deref() == Some(*start) {
                quiet(Command::new("kill").args(["-KILL", pid]));
                format!("killed process {pid}")
            } else {
                String::new()
            }
        }
        ["tgtd", port, pid, start] => {
            if start_time(pid.parse().unwrap_or(0)).as_deref() != Some(*start) {
                return String::new();
            }
            for tid in 1..=8 {
                let tid = tid.to_string();
                quiet(Command::new("tgtadm").args([
                    "-C", port, "--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid",
                    &tid, "--force",
                ]));
            }
            quiet(Command::new("tgtadm").args(["-C", port, "--op", "delete", "--mode", "system"]));
            std::thread::sleep(Duration::from_millis(500));
            if start_time(pid.parse().unwrap_or(0)).as_deref() == Some(*start) {
                quiet(Command::new("kill").args(["-KILL", pid]));
            }
            // What hil::Tgtd's own teardown removes: the control socket and
            // its lock file, and its state directory (with the log).
            for f in [format!("socket.{port}"), format!("socket.{port}.lock")] {
                let _ = fs::remove_file(Path::new("/var/run/tgtd").join(f));
            }
            if let Ok(rd) = fs::read_dir(std::env::temp_dir()) {
                for e in rd.flatten() {
                    let ours = e.file_name().to_string_lossy().starts_with("fts-hil-tgtd-")
                        && e.path().join(format!("tgtd-{port}.log")).is_file();
                    if ours {
                        let _ = fs::remove_dir_all(e.path());
                    }
                }
            }
            format!("stopped tgtd {pid}")
        }
        ["losetup", dev, backing] => {
            if loop_backing(dev).as_deref() == Some(Path::new(backing)) {
                quiet(Command::new("losetup").args(["-d", dev]));
                format!("detached {dev}")
            } else {
                String::new()
            }
        }
        ["umount", path] => {
            if is_mounted(Path::new(path)) {
                if !quiet(Command::new("umount").arg(path)) {
                    quiet(Command::new("umount").args(["-l", path]));
                }
                format!("unmounted {path}")
            } else {
                String::new()
            }
        }
        ["cgroup", path] => {
            let p = Path::new(path);
            if !p.is_dir() {
                return String::new();
            }
            kill_cgroup(p);
            // Killed processes leave the cgroup once reaped (by init, now
            // that the bench is gone): give them a few seconds.
            let deadline = Instant::now() + Duration::from_secs(10);
            while fs::remove_dir(p).is_err() {
                if Instant::now() > deadline {
                    return format!("could not remove cgroup {path}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            format!("removed cgroup {path}")
        }
        ["rmdir", path] => {
            let _ = fs::remove_dir(path);
            String::new()
        }
        ["rm-rf", path] => {
            if Path::new(path).exists() {
                let _ = fs::remove_dir_all(path);
                format!("removed {path}")
            } else {
                String::new()
            }
        }
        _ => String::new(),
    }
}

/// Runs a cleanup command with no output; whether it succeeded.
fn quiet(c: &mut Command) -> bool {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot):
/// with the pid, it names one process for good.
pub fn start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state); field 22 is index 19.
    rest.split_whitespace().nth(19).map(str::to_string)
}

fn loop_backing(dev: &str) -> Option<PathBuf> {
    let name = Path::new(dev).file_name()?.to_str()?;
    let s = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(s.trim()))
}

fn is_mounted(path: &Path) -> bool {
    let Ok(m) = fs::read_to_string("/proc/mounts") else {
        return false;
    };
    let p = path.to_string_lossy();
    m.lines().any(|l| l.split(' ').nth(1) == Some(&*p))
}

fn kill_cgroup(path: &Path) {
    if let Ok(procs) = fs::read_to_string(path.join("cgroup.procs")) {
        for pid in procs.split_whitespace() {
            quiet(Command::new("kill").args(["-KILL", pid]));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
}

/// The bench's work directory: removed with everything in it.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn create(journal: &Journal, path: &Path) -> Result<WorkDir> {
        let _ = fs::remove_dir_all(path);
        fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        journal.note(&format!("rm-rf {}", path.display()));
        Ok(WorkDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A tmpfs mounted on a new directory.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(journal: &Journal, path: &Path, size: u64) -> Result<Tmpfs> {
        fs::create_dir_all(path)?;
        journal.note(&format!("umount {}", path.display()));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("tmpfs")
            .arg(path)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!(
                "mount -t tmpfs on {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_mounted(&self.path) {
            if quiet(Command::new("umount").arg(&self.path)) {
                break;
            }
            if Instant::now() > deadline {
                quiet(Command::new("umount").arg("-l").arg(&self.path));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = fs::remove_dir(&self.path);
    }
}

/// A loop device over a file.
#[derive(Debug)]
pub struct LoopDev {
    dev: String,
}

impl LoopDev {
    pub fn attach(journal: &Journal, backing: &Path) -> Result<LoopDev> {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .context("running losetup")?;
        if !out.status.success() {
            bail!(
                "losetup -f --show {}: {}",
                backing.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        journal.note(&format!("losetup {dev} {}", backing.display()));
        Ok(LoopDev { dev })
    }

    pub fn dev(&self) -> &str {
        &self.dev
    }

    /// `MAJOR:MINOR` of the device, as cgroups name it.
    pub fn major_minor(&self) -> Result<String> {
        let name = Path::new(&self.dev)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let s = fs::read_to_string(format!("/sys/block/{name}/dev"))
            .with_context(|| format!("reading the device number of {}", self.dev))?;
        Ok(s.trim().to_string())
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        for _ in 0..20 {
            if quiet(Command::new("losetup").args(["-d", &self.dev])) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A long-running child process (a server): asked to stop with SIGTERM on
/// drop, killed if it does not within 5 s, and reaped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn spawn(journal: &Journal, cmd: &mut Command, what: &str) -> Result<Proc> {
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        if let Some(st) = start_time(child.id()) {
            journal.note(&format!("kill {} {st}", child.id()));
        }
        Ok(Proc { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited already.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited() {
            return;
        }
        quiet(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Journals a tgtd that a `hil::Tgtd` owns (its drop stops it; this is for
/// the watchdog).
pub fn note_tgtd(journal: &Journal, control_port: u16, pid: u32) {
    if let Some(st) = start_time(pid) {
        journal.note(&format!("tgtd {control_port} {pid} {st}"));
    }
}

/// A directory this run created and removes again if it is empty (sshd's
/// privilege separation directory).
#[derive(Debug)]
pub struct CreatedDir {
    path: Option<PathBuf>,
}

impl CreatedDir {
    pub fn ensure(journal: &Journal, path: &Path) -> Result<CreatedDir> {
        if path.is_dir() {
            return Ok(CreatedDir { path: None });
        }
        fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        journal.note(&format!("rmdir {}", path.display()));
        Ok(CreatedDir {
            path: Some(path.to_path_buf()),
        })
    }
}

impl Drop for CreatedDir {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = fs::remove_dir(p);
        }
    }
}

/// A blkio cgroup whose processes are throttled per device.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    v2: bool,
}

impl Cgroup {
    /// A new cgroup for throttling: cgroup v1's blkio controller, or v2's
    /// io controller.
    pub fn create(journal: &Journal, name: &str) -> Result<Cgroup> {
        let v1 = Path::new("/sys/fs/cgroup/blkio");
        let (path, v2) = if v1.join("cgroup.procs").is_file() {
            (v1.join(name), false)
        } else {
            let root = Path::new("/sys/fs/cgroup");
            let controllers =
                fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "io") {
                bail!("no blkio cgroup (v1) and no io controller (v2) to throttle devices with");
            }
            let mut sub = OpenOptions::new()
                .write(true)
                .open(root.join("cgroup.subtree_control"))
                .context("enabling the io controller in /sys/fs/cgroup/cgroup.subtree_control")?;
            sub.write_all(b"+io")
                .context("enabling the io controller in /sys/fs/cgroup/cgroup.subtree_control")?;
            (root.join(name), true)
        };
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        journal.note(&format!("cgroup {}", path.display()));
        Ok(Cgroup { path, v2 })
    }

    /// Caps reads and writes of the device `major_minor` at `bps` each.
    pub fn throttle(&self, major_minor: &str, bps: u64) -> Result<()> {
        let write = |file: &str, text: String| {
            fs::write(self.path.join(file), text.as_bytes())
                .with_context(|| format!("writing {text:?} to {}", self.path.join(file).display()))
        };
        if self.v2 {
            write("io.max", format!("{major_minor} rbps={bps} wbps={bps}"))
        } else {
            write(
                "blkio.throttle.read_bps_device",
                format!("{major_minor} {bps}"),
            )?;
            write(
                "blkio.throttle.write_bps_device",
                format!("{major_minor} {bps}"),
            )
        }
    }

    /// `cmd` wrapped so that the process joins this cgroup before it execs.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let procs = self.path.join("cgroup.procs");
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("echo $$ > '{}' && exec \"$@\"", procs.display()))
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            c.current_dir(d);
        }
        c
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        kill_cgroup(&self.path);
        let _ = fs::remove_dir(&self.path);
    }
}
