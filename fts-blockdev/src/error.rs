//! The crate's single error type.

use std::io;

/// Everything that can go wrong opening or doing I/O on a [`BlockDevice`](crate::BlockDevice).
///
/// Every variant carries the device's `location` (a path, later a URL) and,
/// for I/O, the byte `offset` and `len` of the request, so that the message
/// alone says what failed and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The location looks like a URL (`scheme://…`) and no backend handles it yet.
    #[error("unsupported device location {location}: URL schemes are not supported yet (give a file or block-device path)")]
    UnsupportedScheme {
        /// The location as given.
        location: String,
    },

    /// The file or device could not be opened.
    #[error("cannot open {location}: {source}")]
    Open {
        /// The path that was opened.
        location: String,
        /// The error from `open(2)`.
        source: io::Error,
    },

    /// [`DirectIo::Require`](crate::DirectIo::Require) was asked for but the
    /// file system does not offer direct I/O.
    #[error("direct I/O (O_DIRECT) is required but not available on {location}: {reason}")]
    DirectIoUnsupported {
        /// The path that was opened.
        location: String,
        /// Why direct I/O is not available.
        reason: String,
    },

    /// The path is neither a regular file nor a block device.
    #[error("{location} is neither a regular file nor a block device")]
    UnsupportedFileType {
        /// The path that was opened.
        location: String,
    },

    /// A block size (requested or reported by the device) cannot be used.
    #[error("invalid block size {block_size} for {location}: {reason}")]
    InvalidBlockSize {
        /// The device.
        location: String,
        /// The offending block size in bytes.
        block_size: u32,
        /// Why it cannot be used.
        reason: String,
    },

    /// The combination of [`OpenOptions`](crate::OpenOptions) makes no sense.
    #[error("invalid options for {location}: {reason}")]
    InvalidOptions {
        /// The device.
        location: String,
        /// What is wrong.
        reason: &'static str,
    },

    /// A block device is smaller than the size requested with `create_size`.
    #[error("{location} has {size} bytes but {required} bytes were requested")]
    TooSmall {
        /// The device.
        location: String,
        /// Its size in bytes.
        size: u64,
        /// The requested size in bytes.
        required: u64,
    },

    /// Querying a property of the opened file or device failed.
    #[error("cannot query the {what} of {location}: {source}")]
    Query {
        /// The property, e.g. "size" or "logical block size".
        what: &'static str,
        /// The device.
        location: String,
        /// The error from the system call.
        source: io::Error,
    },

    /// Growing a regular file to `create_size` failed.
    #[error("cannot resize {location} to {size} bytes: {source}")]
    Resize {
        /// The file.
        location: String,
        /// The size asked for.
        size: u64,
        /// The error from `ftruncate(2)`.
        source: io::Error,
    },

    /// An I/O request is not made of whole, aligned blocks.
    #[error("{op} of {len} bytes at offset {offset} on {location} is not aligned to the block size of {block_size} bytes")]
    Misaligned {
        /// "read" or "write".
        op: &'static str,
        /// The device.
        location: String,
        /// Requested byte offset.
        offset: u64,
        /// Requested length in bytes.
        len: usize,
        /// The device's block size.
        block_size: u32,
    },

    /// An I/O request reaches past the end of the device.
    #[error("{op} of {len} bytes at offset {offset} on {location} reaches past the end of the device ({size} bytes)")]
    OutOfRange {
        /// "read" or "write".
        op: &'static str,
        /// The device.
        location: String,
        /// Requested byte offset.
        offset: u64,
        /// Requested length in bytes.
        len: usize,
        /// The device's usable size in bytes.
        size: u64,
    },

    /// A write was attempted on a device opened read-only.
    #[error("write of {len} bytes at offset {offset} on {location} refused: the device was opened read-only")]
    ReadOnly {
        /// The device.
        location: String,
        /// Requested byte offset.
        offset: u64,
        /// Requested length in bytes.
        len: usize,
    },

    /// The operating system reported an error for a read or write.
    #[error("{op} of {len} bytes at offset {offset} on {location} failed: {source}")]
    Io {
        /// What was being done: "read", "write", "fdatasync after write", …
        op: &'static str,
        /// The device.
        location: String,
        /// Requested byte offset.
        offset: u64,
        /// Requested length in bytes.
        len: usize,
        /// The error from the system call.
        source: io::Error,
    },

    /// A device backend outside this crate (e.g. SCSI, in `fts-scsi`)
    /// failed an operation; `source` is its own error.
    #[error("{op} of {len} bytes at offset {offset} on {location} failed: {source}")]
    Backend {
        /// The operation: "read", "write" or "flush".
        op: &'static str,
        /// The device.
        location: String,
        /// Byte offset of the operation (0 for flush).
        offset: u64,
        /// Length of the operation (0 for flush).
        len: usize,
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// Making completed writes durable failed.
    #[error("flush of {location} failed: {source}")]
    Flush {
        /// The device.
        location: String,
        /// The error from `fdatasync(2)`.
        source: io::Error,
    },

    /// [`BlockDevice::reopen`](crate::BlockDevice::reopen) found a different
    /// device behind the same location.
    #[error("{location} now refers to {found}, but it referred to {expected} when first opened")]
    IdentityChanged {
        /// The device.
        location: String,
        /// Identity at the first open.
        expected: String,
        /// Identity now.
        found: String,
    },

    /// An [`AlignedBuf`](crate::AlignedBuf) could not be allocated.
    #[error("cannot allocate an aligned buffer of {len} bytes")]
    Alloc {
        /// Requested length in bytes.
        len: usize,
    },
}
