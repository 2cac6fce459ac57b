//! The crate's single error type.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong driving the test rig.
///
/// Every variant says which command, daemon or file was involved and, where
/// there is one, what it printed, so that the message alone explains a
/// failed test.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program the rig needs is not installed (not on `PATH`, nor in
    /// `/usr/sbin`, `/sbin`, `/usr/local/sbin`).
    #[error("{program} not found on PATH or in /usr/sbin, /sbin, /usr/local/sbin (Debian package `{package}`)")]
    ProgramNotFound {
        /// The program looked for, e.g. `tgtd`.
        program: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },

    /// An argument was out of range or malformed.
    #[error("invalid argument: {what}")]
    InvalidArgument {
        /// What was wrong, with the offending value.
        what: String,
    },

    /// A file or directory operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `create backing file`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A program could not be started (or waited for) at all.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The error from `fork`/`exec`/`wait`.
        source: io::Error,
    },

    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {}", stderr.trim_end())]
    Command {
        /// The command line.
        command: String,
        /// How it exited. `tgtadm` exits with its error number (22 for most
        /// refusals); the reason is on `stderr`.
        status: ExitStatus,
        /// What it printed on standard output.
        stdout: String,
        /// What it printed on standard error, e.g. `tgtadm: can't find the session`.
        stderr: String,
    },

    /// A command did not finish in time and was killed.
    #[error("`{command}` did not finish within {waited:.1?} and was killed")]
    CommandTimeout {
        /// The command line.
        command: String,
        /// How long it was given.
        waited: Duration,
    },

    /// `tgtd` exited when it should have been running.
    #[error("tgtd (control port {control_port}) exited unexpectedly ({status}); its log:\n{log}")]
    DaemonExited {
        /// Its `-C` control port.
        control_port: u16,
        /// How it exited.
        status: ExitStatus,
        /// The tail of what it printed.
        log: String,
    },

    /// `tgtd` did not answer `tgtadm` within the readiness timeout.
    #[error("tgtd (control port {control_port}) not ready after {waited:.1?}: {last_error}; its log:\n{log}")]
    NotReady {
        /// Its `-C` control port.
        control_port: u16,
        /// How long was waited.
        waited: Duration,
        /// The last `tgtadm` failure.
        last_error: String,
        /// The tail of what it printed.
        log: String,
    },

    /// `tgtd` started but does not listen on the portal asked for.
    ///
    /// tgt does not exit when it cannot bind the portal: it falls back to
    /// `0.0.0.0:3260` and `[::]:3260`. The rig detects this and retries on
    /// another port.
    #[error("tgtd (control port {control_port}) did not bind portal {expected} (it lists {listed:?}); its log:\n{log}")]
    PortalNotBound {
        /// Its `-C` control port.
        control_port: u16,
        /// The portal asked for, `ADDR:PORT`.
        expected: String,
        /// The portals it reports, `ADDR:PORT`.
        listed: Vec<String>,
        /// The tail of what it printed.
        log: String,
    },

    /// Another process holds the control port's lock file, so `tgtadm`
    /// would talk to someone else's daemon.
    #[error("control port {control_port} is held by pid {holder:?}, not by our tgtd (pid {ours})")]
    ControlPortTaken {
        /// The `-C` control port.
        control_port: u16,
        /// The pid holding `/var/run/tgtd/socket.N.lock`, if any.
        holder: Option<i32>,
        /// Our daemon's pid.
        ours: u32,
    },

    /// Several attempts to start `tgtd` collided with other daemons.
    #[error("could not start tgtd after {attempts} attempts; last failure: {last}")]
    StartFailed {
        /// How many daemons were tried.
        attempts: u32,
        /// Why the last one failed.
        last: Box<Error>,
    },

    /// `tgtadm` printed something the parser does not understand.
    #[error("cannot parse the output of `{command}`: {detail}; output:\n{output}")]
    Parse {
        /// The command line.
        command: String,
        /// What was unexpected.
        detail: String,
        /// The whole output.
        output: String,
    },

    /// The target is not one this daemon created (or it no longer exists).
    #[error("target {tid} ({iqn}) does not exist on tgtd (control port {control_port})")]
    UnknownTarget {
        /// The target id.
        tid: u32,
        /// The target's IQN.
        iqn: String,
        /// The daemon's `-C` control port.
        control_port: u16,
    },

    /// Something did not happen within its deadline.
    #[error("timed out after {waited:.1?} waiting for {what}")]
    Timeout {
        /// What was waited for, with the details needed to investigate.
        what: String,
        /// How long was waited.
        waited: Duration,
    },

    /// The rig could not be set up as a multi-host rig (a host does not see
    /// the LUN, hosts see different LUNs, the machine lacks what the rig
    /// needs, ...).
    #[error("cannot provision the rig: {what}")]
    Provision {
        /// What went wrong, with where.
        what: String,
    },

    /// A qemu guest of the VM rig failed: qemu exited, or the guest's
    /// `/init` gave up.
    #[error("guest {guest}: {what}; its console {console}")]
    Guest {
        /// The guest's name, e.g. `g0`.
        guest: String,
        /// What went wrong.
        what: String,
        /// The console log's path and last lines.
        console: String,
    },
}

impl Error {
    /// Whether this is a `tgtadm` refusal whose message contains `needle`
    /// (e.g. `"can't find the session"`).
    pub fn is_tgtadm_refusal(&self, needle: &str) -> bool {
        matches!(self, Error::Command { stderr, .. } if stderr.contains(needle))
    }

    /// Whether a start attempt failed because another daemon already had the
    /// control port or the portal, so that another attempt on other ports may
    /// succeed.
    pub(crate) fn is_start_collision(&self) -> bool {
        match self {
            Error::PortalNotBound { .. } | Error::ControlPortTaken { .. } => true,
            Error::DaemonExited { log, .. } => {
                log.contains("another tgtd is using") || log.contains("unable to get lock")
            }
            _ => false,
        }
    }
}
