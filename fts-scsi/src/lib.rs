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
//! Transports that actually issue commands (Linux SG_IO, libiscsi) come in
//! later modules; everything here is pure: no I/O, no `unsafe`. Decoders
//! never panic, whatever the bytes (checked by proptest and cargo-fuzz).
//!
//! This crate is **not** where fts's on-disk block layout lives
//! (`fts-layout`), nor its locking policy — which reservation to take, when,
//! and what to do on a conflict (`fts-lock`). It reports RESERVATION CONFLICT
//! and UNIT ATTENTION as data; callers decide.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod capacity;
pub mod cdb;
mod error;
pub mod inquiry;
pub mod mode;
pub mod pr;
pub mod sense;
pub mod status;

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
