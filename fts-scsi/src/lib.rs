//! SCSI command encoding and decoding for fts.
//!
//! fts moves files between hosts through a LUN that all of them see on a
//! SAN. Following its patent, it serialises access to its control tables
//! with SCSI reservations (RESERVE/RELEASE, or persistent reservations) and
//! turns off the array's write-back cache so that what one host writes is on
//! the medium before another host reads it. This crate speaks the SCSI side
//! of that:
//!
//! - [`cdb`]: builders for the CDBs fts sends (TEST UNIT READY, INQUIRY,
//!   READ CAPACITY(16), READ/WRITE(16), SYNCHRONIZE CACHE, RESERVE/RELEASE,
//!   PERSISTENT RESERVE IN/OUT, MODE SENSE/SELECT, COMPARE AND WRITE);
//! - [`sense`], [`status`]: what a command completed with;
//! - [`inquiry`], [`capacity`], [`pr`], [`mode`]: decoders for the
//!   responses, and the parameter lists fts sends (PR OUT, MODE SELECT of the
//!   Caching page).
//!
//! Those modules are pure: no I/O, no `unsafe`. Decoders never panic,
//! whatever the bytes (checked by proptest and cargo-fuzz). On top of them:
//!
//! - [`Transport`]: executes one CDB; [`sg::SgTransport`] (Linux SG_IO on
//!   `/dev/sg*` and `/dev/sd*`, the only module with `unsafe`, each block
//!   with its safety argument) and, with the `iscsi` feature,
//!   `iscsi::IscsiTransport` (libiscsi, loaded at run time through the
//!   `libiscsi-sys` crate);
//! - [`Commands`]: typed helpers over any transport (INQUIRY, READ(16),
//!   PR IN/OUT, MODE SENSE/SELECT, ...);
//! - [`ScsiDevice`]: the `fts-blockdev` block-device trait over
//!   READ(16)/WRITE(16), identified by VPD page 0x83;
//! - [`cache`]: the Caching mode page as a setting that is restored when
//!   the transfer ends;
//! - [`initiator`]: the IQN and ISID a host uses, derived from its name.
//!
//! This crate is **not** where fts's on-disk block layout lives
//! (`fts-layout`), nor its locking policy — which reservation to take, when,
//! and what to do on a conflict (`fts-lock`). It reports RESERVATION CONFLICT
//! and UNIT ATTENTION as data; callers decide.

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod cache;
pub mod capacity;
pub mod cdb;
mod commands;
mod device;
mod error;
pub mod initiator;
pub mod inquiry;
#[cfg(feature = "iscsi")]
#[allow(unsafe_code)]
pub mod iscsi;
pub mod mode;
mod open;
pub mod pr;
pub mod sense;
#[allow(unsafe_code)]
pub mod sg;
pub mod status;
mod transport;

pub use commands::{is_unsupported, Commands, COMMAND_TIMEOUT};
pub use device::{lock_transport, IoPolicy, Nexus, ScsiDevice, SharedTransport};
pub use open::{is_scsi_location, open_transport, ScsiOptions};
pub use transport::{check_direction, DataBuffer, Transport};

pub use capacity::ReadCapacity16;
pub use cdb::{Cdb, DataDirection};
pub use error::{Error, Result};
pub use inquiry::{
    Association, BlockLimits, CodeSet, Designator, DesignatorType, DeviceIdentification,
    StandardInquiry, SupportedVpdPages, UnitSerialNumber,
};
pub use mode::{apply_changeable, CachingPage, ModeHeader, ModePage, ModeSense, PageControl};
pub use pr::{
    FullStatusDescriptor, PrInServiceAction, PrOutParams, PrOutServiceAction, PrType,
    ReadFullStatus, ReadKeys, ReadReservation, ReportCapabilities, Reservation,
};
pub use sense::{asc_name, FieldPointer, Sense, SenseKey, SenseKeySpecific};
pub use status::{CommandResult, ScsiStatus};
