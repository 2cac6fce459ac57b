//! The transport trait: how a CDB reaches a logical unit.
//!
//! A [`Transport`] executes one command: a [`Cdb`], an optional data buffer
//! in the direction the CDB says, and a timeout. It returns a
//! [`CommandResult`] for every command the device *completed*, whatever its
//! status: CHECK CONDITION and RESERVATION CONFLICT are data, not errors.
//! Only a failure to deliver the command (the connection dropped, the ioctl
//! failed, the timeout expired) is an [`Error`].
//!
//! Implementations: [`crate::sg::SgTransport`] (Linux SG_IO on `/dev/sg*`
//! and `/dev/sd*`) and, with the `iscsi` feature,
//! [`crate::iscsi::IscsiTransport`] (libiscsi, a userspace iSCSI initiator).
//! [`crate::Commands`] adds typed helpers (INQUIRY, READ(16), PR OUT, ...) on
//! top of any transport.

use std::fmt;
use std::time::Duration;

use crate::cdb::{Cdb, DataDirection};
use crate::error::{Error, Result};
use crate::status::CommandResult;

/// The data buffer of one command.
#[derive(Debug)]
pub enum DataBuffer<'a> {
    /// The command transfers no data.
    None,
    /// Data-in: the device fills (a prefix of) this buffer; the residual in
    /// the [`CommandResult`] says how much was *not* transferred.
    FromDevice(&'a mut [u8]),
    /// Data-out: the device receives this buffer.
    ToDevice(&'a [u8]),
}

impl DataBuffer<'_> {
    /// The transfer direction.
    pub fn direction(&self) -> DataDirection {
        match self {
            DataBuffer::None => DataDirection::None,
            DataBuffer::FromDevice(_) => DataDirection::FromDevice,
            DataBuffer::ToDevice(_) => DataDirection::ToDevice,
        }
    }

    /// The buffer length in bytes (0 for [`DataBuffer::None`]).
    pub fn len(&self) -> usize {
        match self {
            DataBuffer::None => 0,
            DataBuffer::FromDevice(b) => b.len(),
            DataBuffer::ToDevice(b) => b.len(),
        }
    }

    /// True when no data is transferred.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same buffer, borrowed again for one more attempt of a command.
    pub fn reborrow(&mut self) -> DataBuffer<'_> {
        match self {
            DataBuffer::None => DataBuffer::None,
            DataBuffer::FromDevice(b) => DataBuffer::FromDevice(b),
            DataBuffer::ToDevice(b) => DataBuffer::ToDevice(b),
        }
    }
}

/// Checks that `data` goes the way `cdb` says. An empty buffer is accepted
/// for any direction (a zero-length transfer); every transport calls this
/// before sending.
pub fn check_direction(target: &str, cdb: &Cdb, data: &DataBuffer<'_>) -> Result<()> {
    if data.is_empty() || data.direction() == cdb.direction() {
        return Ok(());
    }
    Err(Error::InvalidRequest {
        target: target.to_owned(),
        detail: format!(
            "{cdb:?} expects a {:?} transfer, got a {:?} buffer of {} bytes",
            cdb.direction(),
            data.direction(),
            data.len()
        ),
    })
}

/// Something that sends CDBs to one logical unit through one I_T nexus.
///
/// Reservations belong to the I_T nexus, so one `Transport` value is one
/// initiator as far as the target is concerned; share it (e.g. in an
/// `Arc<Mutex<_>>`) rather than opening a second one when the same host must
/// keep a reservation it took.
pub trait Transport: Send + fmt::Debug {
    /// Executes one command. Returns `Ok` for every command the device
    /// completed (any status); `Err` only when the command could not be
    /// delivered or did not complete within `timeout`.
    fn execute(
        &mut self,
        cdb: &Cdb,
        data: DataBuffer<'_>,
        timeout: Duration,
    ) -> Result<CommandResult>;

    /// Where commands go, for messages: a device path or an iSCSI URL.
    fn target(&self) -> &str;

    /// Who sends them: the initiator name (an iSCSI IQN with its ISID, or
    /// the local host for SG_IO).
    fn initiator(&self) -> String;

    /// How many times the nexus has been (re-)established. A reservation
    /// taken at epoch *n* is lost if the epoch is no longer *n*: iSCSI
    /// targets drop a RESERVE(6) when the session drops.
    fn epoch(&self) -> u64;

    /// Re-establishes the nexus after [`Error::Disconnected`] with the same
    /// initiator name and ISID, incrementing [`Transport::epoch`].
    /// Transports whose nexus cannot drop (SG_IO) return `Ok(())`.
    ///
    /// What survives is up to the target: a RESERVE(6) never does; SPC
    /// says a persistent-reservation registration belongs to the I_T nexus
    /// (initiator name + ISID), but tgt 1.0.85 ties it to the session, so
    /// after a reconnect the old registration is an orphan the new session
    /// cannot use (measured; `fts-lock` removes such orphans).
    fn reconnect(&mut self) -> Result<()>;

    /// Sends a LOGICAL UNIT RESET task management function: the last resort
    /// to clear a SCSI-2 reservation whose holder is dead. Every nexus then
    /// sees UNIT ATTENTION 29/00.
    fn reset_lun(&mut self) -> Result<()>;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn execute(
        &mut self,
        cdb: &Cdb,
        data: DataBuffer<'_>,
        timeout: Duration,
    ) -> Result<CommandResult> {
        (**self).execute(cdb, data, timeout)
    }
    fn target(&self) -> &str {
        (**self).target()
    }
    fn initiator(&self) -> String {
        (**self).initiator()
    }
    fn epoch(&self) -> u64 {
        (**self).epoch()
    }
    fn reconnect(&mut self) -> Result<()> {
        (**self).reconnect()
    }
    fn reset_lun(&mut self) -> Result<()> {
        (**self).reset_lun()
    }
}
