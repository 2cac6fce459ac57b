//! The backend-neutral device trait and its small vocabulary types.

use std::fmt;

use crate::Error;

/// A device addressed in whole logical blocks, shared with other hosts.
///
/// Implementations: [`FileDevice`](crate::FileDevice) (regular files and Linux
/// block devices); later a SCSI backend (READ(16)/WRITE(16) over SG_IO or
/// iSCSI). Nothing here assumes a file descriptor.
///
/// All offsets and lengths are in bytes and must be multiples of
/// [`block_size`](Self::block_size). A handle is used by one thread at a time
/// (`&mut self`); use [`reopen`](Self::reopen) to get one handle per thread.
pub trait BlockDevice: Send + fmt::Debug {
    /// Logical block size in bytes (power of two, 512..=4096 supported by fts).
    fn block_size(&self) -> u32;

    /// Usable size in bytes (a multiple of [`block_size`](Self::block_size)).
    fn size_bytes(&self) -> u64;

    /// Stable identity of the underlying device: the same on every host that
    /// sees the same device, where the backend can tell.
    fn identity(&self) -> &DeviceIdentity;

    /// Reads whole blocks at `offset` into `buf`.
    ///
    /// `offset` and `buf.len()` must be multiples of the block size
    /// ([`Error::Misaligned`]) and the range must lie within
    /// [`size_bytes`](Self::size_bytes) ([`Error::OutOfRange`]). Any buffer
    /// address works; an [`AlignedBuf`](crate::AlignedBuf) avoids a copy.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error>;

    /// Writes whole blocks from `buf` at `offset`, with the same alignment
    /// and range rules as [`read_at`](Self::read_at).
    ///
    /// With [`WriteMode::Fua`] the data is durable (on stable media, visible
    /// to every host) when this returns `Ok`.
    fn write_at(&mut self, offset: u64, buf: &[u8], mode: WriteMode) -> Result<(), Error>;

    /// Makes all completed writes durable.
    fn flush(&mut self) -> Result<(), Error>;

    /// Opens an independent handle to the same device (one handle per
    /// thread), with the same options.
    fn reopen(&self) -> Result<Box<dyn BlockDevice>, Error>;

    /// Human-readable location for messages, e.g. the path.
    fn location(&self) -> &str;
}

/// Durability requested for a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WriteMode {
    /// Completed when the device has accepted the data; it may sit in a
    /// volatile cache until [`BlockDevice::flush`].
    #[default]
    Normal,
    /// Force Unit Access: durable before the write returns.
    Fua,
}

/// What kind of thing a [`DeviceIdentity`] identifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    /// A regular file (identified by file system device and inode; only
    /// meaningful on one host).
    File,
    /// A block device node (identified by WWID where sysfs has one, else by
    /// major:minor, which is host-local).
    BlockDevice,
    /// A SCSI logical unit addressed directly (e.g. by iSCSI URL).
    Scsi,
}

/// Stable identity of a device, used to tell whether two locations (or two
/// hosts) talk to the same storage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentity {
    /// What kind of device this is.
    pub kind: IdentityKind,
    /// Stable string, e.g. `file:dev=8:1:ino=1234`,
    /// `block:wwid=naa.600a0b80…` or `block:8:16`.
    pub id: String,
}

impl fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Whether to bypass the page cache with `O_DIRECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DirectIo {
    /// Use direct I/O; if the file system refuses it (tmpfs), fall back to
    /// buffered I/O with `fdatasync` and warn once on stderr.
    #[default]
    Auto,
    /// Use direct I/O or fail with [`Error::DirectIoUnsupported`].
    Require,
    /// Always use buffered I/O (only safe when no other host shares the
    /// device).
    Off,
}

/// How to open a device; `Default` gives a read-write, direct-I/O open of an
/// existing file or device with its native block size.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenOptions {
    /// Create a regular file, or extend a shorter one, to this many bytes
    /// (sparse, via `set_len`); never shrinks. For a block device, the
    /// device must be at least this large ([`Error::TooSmall`]).
    pub create_size: Option<u64>,
    /// Logical block size to present: for regular files any power of two in
    /// 512..=4096 (default 512; 4096 emulates a 4Kn disk); for block devices
    /// a multiple of the device's own logical block size (default: that).
    pub block_size: Option<u32>,
    /// Direct I/O policy.
    pub direct: DirectIo,
    /// Open without write access; writes fail with [`Error::ReadOnly`].
    pub read_only: bool,
}
