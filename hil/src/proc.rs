//! Running host commands with a deadline and captured output: the one
//! place the rig waits for a child process (tgtadm, targetcli, `ip`, fts in
//! a host namespace, apt, cargo), so no wait can hang a run.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::Error;

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Captured {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error, lossily decoded.
    pub stderr: String,
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A child started by [`spawn`] whose output is being collected.
#[derive(Debug)]
pub struct Running {
    child: Child,
    command: String,
    out: thread::JoinHandle<Vec<u8>>,
    err: thread::JoinHandle<Vec<u8>>,
}

/// Starts `cmd` (stdin closed, stdout and stderr collected by reader
/// threads, so a chatty child never blocks on a full pipe).
pub fn spawn(cmd: &mut Command) -> Result<Running, Error> {
    spawn_with_stdin(cmd, Stdio::null())
}

/// Like [`spawn`], with `stdin` as the child's standard input.
pub fn spawn_with_stdin(cmd: &mut Command, stdin: Stdio) -> Result<Running, Error> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    Ok(Running {
        child,
        command,
        out,
        err,
    })
}

impl Running {
    /// Whether it has exited (without reaping its output).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Kills it (SIGKILL); [`Running::finish`] then returns at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits for it, killing (SIGKILL) and reaping it after `timeout`
    /// ([`Error::CommandTimeout`]); returns what it printed whatever its
    /// exit status.
    pub fn finish(mut self, timeout: Duration) -> Result<Output, Error> {
        let status = wait_deadline(&mut self.child, timeout, &self.command)?;
        Ok(Output {
            status,
            stdout: self.out.join().unwrap_or_default(),
            stderr: self.err.join().unwrap_or_default(),
        })
    }
}

/// Runs `cmd` (stdin closed), killing it after `timeout`; returns what it
/// printed whatever its exit status.
pub fn run_output(cmd: &mut Command, timeout: Duration) -> Result<Output, Error> {
    spawn(cmd)?.finish(timeout)
}

/// Like [`run_output`], with standard error decoded.
pub fn run_raw(cmd: &mut Command, timeout: Duration) -> Result<Captured, Error> {
    let o = run_output(cmd, timeout)?;
    Ok(Captured {
        status: o.status,
        stdout: o.stdout,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    })
}

/// Runs `cmd` and returns its standard output; a non-zero exit is
/// [`Error::Command`].
pub fn run_bytes(cmd: &mut Command, timeout: Duration) -> Result<Vec<u8>, Error> {
    let c = run_raw(cmd, timeout)?;
    if !c.status.success() {
        return Err(Error::Command {
            command: describe(cmd),
            status: c.status,
            stdout: String::from_utf8_lossy(&c.stdout).into_owned(),
            stderr: c.stderr,
        });
    }
    Ok(c.stdout)
}

/// Like [`run_bytes`], decoded lossily as text.
pub fn run_capture(cmd: &mut Command, timeout: Duration) -> Result<String, Error> {
    run_bytes(cmd, timeout).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn reader<R: Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child`, killing (SIGKILL) and reaping it after `timeout`.
pub fn wait_deadline(
    child: &mut Child,
    timeout: Duration,
    command: &str,
) -> Result<ExitStatus, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::CommandTimeout {
                    command: command.to_owned(),
                    waited: timeout,
                });
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Spawn {
                    command: command.to_owned(),
                    source,
                });
            }
        }
    }
}

/// `Some(status)` once `child` exits, `None` if it still runs after
/// `timeout` (it is left running: for daemons given a grace period).
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Where [`find_program`] looks besides `PATH` (root's tools live in sbin,
/// which a user's `PATH` may lack).
const SBIN_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"];

/// `name` on `PATH` or in the usual sbin directories, if executable.
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(std::path::PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
