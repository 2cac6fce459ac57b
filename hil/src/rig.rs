//! The two abstractions of the rig: a [`Target`] exports the shared LUN, a
//! [`Host`] runs fts against it and can fail.
//!
//! Targets: [`TgtTarget`] (tgtd, anywhere) and [`crate::lio::LioTarget`]
//! (LIO, where configfs exists). Hosts: [`crate::netns::NetnsHost`] (a
//! network namespace on this machine) and [`crate::vm::guest::Guest`] (a
//! qemu guest driven over its serial console). The scenarios are written
//! per host kind ([`crate::scenario`] for namespaces, [`crate::vm`] for
//! guests), because a guest can only be driven through its console, but
//! provisioning, resets between scenarios and crashes go through these
//! traits.

use std::fmt;
use std::time::Duration;

use crate::tgt::{Lun, Tgtd};
use crate::Error;

/// Something that exports the rig's shared LUN.
pub trait Target: fmt::Debug {
    /// `"tgt"` or `"lio"`.
    fn kind(&self) -> &'static str;
    /// The LUN's `iscsi://` URL as the hosts reach it.
    fn url(&self) -> String;
    /// Clears persistent-reservation state and mode pages between
    /// scenarios, keeping the data (tgt keeps registrations of dead
    /// sessions otherwise).
    fn reset_lun(&mut self) -> Result<(), Error>;
}

/// What a command run on a host printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOutput {
    /// Exit status (-1: unknown, e.g. killed).
    pub status: i32,
    /// Everything it printed (stdout and stderr).
    pub text: String,
}

/// A host of the rig.
pub trait Host: fmt::Debug {
    /// Its name (also its fts server name in the scenarios).
    fn host_name(&self) -> &str;
    /// Runs a shell command line on the host to completion.
    fn run_shell(&mut self, command: &str, timeout: Duration) -> Result<HostOutput, Error>;
    /// Dies as a crash would: the link cut first (so the target sees no
    /// FIN and keeps the session), then every process killed. Fails if
    /// either step fails.
    fn crash(&mut self) -> Result<(), Error>;
}

/// A tgtd and the LUN it exports.
#[derive(Debug)]
pub struct TgtTarget {
    /// The daemon (stopped when this is dropped).
    pub tgtd: Tgtd,
    /// The shared LUN.
    pub lun: Lun,
}

impl Target for TgtTarget {
    fn kind(&self) -> &'static str {
        "tgt"
    }

    fn url(&self) -> String {
        self.lun.url.clone()
    }

    fn reset_lun(&mut self) -> Result<(), Error> {
        self.tgtd.reset_lun(&self.lun)
    }
}

impl Target for crate::lio::LioTarget {
    fn kind(&self) -> &'static str {
        "lio"
    }

    fn url(&self) -> String {
        crate::lio::LioTarget::url(self)
    }

    fn reset_lun(&mut self) -> Result<(), Error> {
        crate::lio::LioTarget::reset_lun(self)
    }
}

impl Host for crate::vm::guest::Guest {
    fn host_name(&self) -> &str {
        self.name()
    }

    fn run_shell(&mut self, command: &str, timeout: Duration) -> Result<HostOutput, Error> {
        let out = self.run(command, timeout)?;
        Ok(HostOutput {
            status: out.status,
            text: out.lines.join("\n"),
        })
    }

    fn crash(&mut self) -> Result<(), Error> {
        crate::vm::guest::Guest::crash(self)
    }
}
