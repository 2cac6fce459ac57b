//! Exit codes and the mapping from library errors to them.
//!
//! Every failure leaves the process with a distinct, documented code so that
//! scripts can tell a wrong device from a corrupt layout from a refused
//! overwrite. The table is repeated in `fts --help`.

use std::fmt;

/// Process exit codes of `fts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Anything not covered below.
    Failure = 1,
    /// Bad command line (clap uses 2 as well).
    Usage = 2,
    /// The device could not be opened, read or written.
    Device = 3,
    /// The device holds no fts layout, or its layout is unreadable.
    Layout = 4,
    /// `check` found problems.
    CheckProblems = 5,
    /// Refused to overwrite something that exists (layout, file) without --force/--replace.
    Exists = 6,
    /// The requested geometry does not fit the device(s).
    Geometry = 7,
    /// The far side refused the command (its reason is in the message).
    Remote = 8,
    /// No connector with that name accepted in time.
    NoServer = 9,
    /// The peer died (lease expired) or closed the connection.
    PeerGone = 10,
    /// The end-to-end digest did not match; nothing was put in place.
    Integrity = 11,
    /// Every Process Id Table entry is in use.
    TableFull = 12,
    /// The Process Id Table lock was lost (connection dropped, preempted)
    /// or could not be taken in time.
    Lock = 13,
    /// Authentication failed: the server refused this client's key (or its
    /// lack of one), or the server could not prove its own key to this
    /// client. The message says which side refused and why.
    Auth = 14,
    /// `serve`: another live server already holds this name on the device.
    NameTaken = 15,
    /// Stopped by SIGINT, SIGTERM or SIGHUP after cleaning up (the shell's
    /// code for an interrupted command, 128 + SIGINT).
    Interrupted = 130,
}

/// An error that carries its exit code; library errors are mapped in [`code_of`].
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: Code,
    /// The message.
    pub msg: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Failure {}

/// Builds an `anyhow::Error` with an exit code.
pub fn fail(code: Code, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code,
        msg: msg.into(),
    })
}

/// The exit code for an error: the first [`Failure`] or known library error in its chain.
pub fn code_of(err: &anyhow::Error) -> Code {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        if let Some(e) = cause.downcast_ref::<fts_session::Error>() {
            use fts_session::Error as S;
            match e {
                S::Remote {
                    code: fts_session::ErrorCode::Exists,
                    ..
                }
                | S::LocalExists { .. } => return Code::Exists,
                S::Remote {
                    code: fts_session::ErrorCode::Integrity,
                    ..
                }
                | S::Integrity { .. } => return Code::Integrity,
                S::Remote { .. } => return Code::Remote,
                S::Interrupted => return Code::Interrupted,
                S::NoReply { .. } => return Code::PeerGone,
                S::LocalRefused { .. } => return Code::Usage,
                S::NoConnector { .. } | S::Refused { .. } => return Code::NoServer,
                S::PeerDead { .. } | S::PeerClosed { .. } => return Code::PeerGone,
                S::Ring(fts_ring::Error::PeerGone { .. }) => return Code::PeerGone,
                // Our slot was reclaimed while we were presumed dead: the
                // connection is gone.
                S::Fenced { .. } | S::Ring(fts_ring::Error::Fenced { .. }) => {
                    return Code::PeerGone
                }
                S::TableFull { .. } => return Code::TableFull,
                S::Auth { .. } => return Code::Auth,
                S::Key { .. } => return Code::Usage,
                S::NameTaken { .. } => return Code::NameTaken,
                S::Name(_) => return Code::Usage,
                S::Device(_)
                | S::SecondaryMissing { .. }
                | S::Ring(fts_ring::Error::DeviceMissing { .. }) => return Code::Device,
                S::Lock(e) => return lock_code(e),
                S::Layout { .. } => return Code::Layout,
                _ => {}
            }
        }
        if let Some(e) = cause.downcast_ref::<fts_lock::Error>() {
            return lock_code(e);
        }
        if cause.downcast_ref::<fts_scsi::Error>().is_some() {
            return Code::Device;
        }
        if cause.downcast_ref::<fts_layout::GeometryError>().is_some() {
            return Code::Geometry;
        }
        if cause.downcast_ref::<fts_layout::Error>().is_some() {
            return Code::Layout;
        }
        if cause.downcast_ref::<fts_blockdev::Error>().is_some() {
            return Code::Device;
        }
    }
    Code::Failure
}

fn lock_code(e: &fts_lock::Error) -> Code {
    match e {
        fts_lock::Error::Lost { .. } | fts_lock::Error::Timeout { .. } => Code::Lock,
        fts_lock::Error::Unsupported { .. } | fts_lock::Error::UnknownKind { .. } => Code::Usage,
        _ => Code::Device,
    }
}
