//! Running host commands with a deadline and captured output.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
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

/// Runs `cmd` (stdin closed), killing it after `timeout`; returns what it
/// printed whatever its exit status.
pub fn run_raw(cmd: &mut Command, timeout: Duration) -> Result<Captured, Error> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let status = wait_deadline(&mut child, timeout, &command)?;
    let stdout = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    Ok(Captured {
        status,
        stdout,
        stderr,
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
