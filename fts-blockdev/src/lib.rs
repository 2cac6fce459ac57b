//! Block-device access for fts: whole-block, aligned I/O on storage that
//! several hosts share.
//!
//! Every other fts crate does its I/O through the [`BlockDevice`] trait:
//! read and write whole logical blocks at byte offsets, optionally with
//! force-unit-access durability ([`WriteMode::Fua`]), flush, and ask for the
//! block size, usable size and a stable [`DeviceIdentity`]. [`open`] turns a
//! location string into a device; today that is a regular file or Linux
//! block device ([`FileDevice`], opened with `O_DIRECT` so that one host never
//! reads another host's data out of its own page cache). Later backends (SCSI
//! READ(16)/WRITE(16) over SG_IO or iSCSI) implement the same trait and are
//! selected by [`open`] from the location.
//!
//! What this crate is **not** for:
//!
//! * It knows nothing of the on-disk layout: no records, checksums or
//!   geometry (that is `fts-layout`).
//! * It does no locking or coordination between hosts or threads (that is
//!   `fts-lock`); it only guarantees that a completed FUA write or flush is
//!   durable and that reads are not served from a stale local cache.
//!
//! Direct I/O needs aligned memory; [`AlignedBuf`] provides it, and buffers
//! that are not aligned are copied internally.
//!
//! # Example
//!
//! ```
//! use fts_blockdev::{open, AlignedBuf, BlockDevice, OpenOptions, WriteMode};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("disk.img");
//! let opts = OpenOptions { create_size: Some(1 << 20), ..OpenOptions::default() };
//! let mut dev = open(path.to_str().ok_or("non-UTF-8 path")?, &opts)?;
//! assert_eq!(dev.block_size(), 512);
//! assert_eq!(dev.size_bytes(), 1 << 20);
//!
//! let mut block = AlignedBuf::new(4096)?;
//! block[..5].copy_from_slice(b"hello");
//! dev.write_at(8192, &block, WriteMode::Fua)?;
//!
//! // A second handle (e.g. for another thread) sees the write at once.
//! let mut other = dev.reopen()?;
//! let mut back = AlignedBuf::new(4096)?;
//! other.read_at(8192, &mut back)?;
//! assert_eq!(&back[..5], b"hello");
//!
//! // Requests must be whole blocks inside the device.
//! assert!(dev.read_at(100, &mut back).is_err());
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod aligned;
mod device;
mod error;
mod file;
mod sys;

pub use aligned::AlignedBuf;
pub use device::{BlockDevice, DeviceIdentity, DirectIo, IdentityKind, OpenOptions, WriteMode};
pub use error::Error;
pub use file::FileDevice;

/// Opens the device at `location`.
///
/// A plain path opens a regular file or block device as a [`FileDevice`].
/// Locations with a URL scheme (`scheme://…`, e.g. the future `iscsi://`)
/// are dispatched here to their backend; none exists yet, so they fail with
/// [`Error::UnsupportedScheme`].
pub fn open(location: &str, opts: &OpenOptions) -> Result<Box<dyn BlockDevice>, Error> {
    if location.contains("://") {
        return Err(Error::UnsupportedScheme {
            location: location.to_owned(),
        });
    }
    Ok(Box::new(FileDevice::open(location, opts)?))
}
