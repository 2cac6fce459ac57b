//! The file backend: regular files and Linux block devices, through
//! `pread`/`pwrite` on a descriptor opened with `O_DIRECT`.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Once;

use crate::{
    sys, AlignedBuf, BlockDevice, DeviceIdentity, DirectIo, Error, IdentityKind, OpenOptions,
    WriteMode,
};

/// Block size of regular files unless [`OpenOptions::block_size`] says
/// otherwise.
const DEFAULT_FILE_BLOCK_SIZE: u32 = 512;

/// Smallest and largest logical block size fts supports.
const MIN_BLOCK_SIZE: u32 = 512;
const MAX_BLOCK_SIZE: u32 = 4096;

/// Largest bounce buffer kept per handle; unaligned requests larger than this
/// are copied through it in pieces.
const MAX_BOUNCE: usize = 1 << 20;

/// Guards the once-per-process warning about falling back to buffered I/O.
static BUFFERED_FALLBACK_WARNING: Once = Once::new();

/// A regular file or Linux block device used as a [`BlockDevice`].
///
/// Opened with `O_DIRECT` by default so that hosts sharing a LUN never serve
/// each other stale data out of their own page cache; see [`DirectIo`] for
/// the fallback. Caller buffers that are not 4096-aligned are copied through
/// an internal [`AlignedBuf`] that is kept for reuse.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
    location: String,
    opts: OpenOptions,
    block_size: u32,
    size: u64,
    identity: DeviceIdentity,
    direct: bool,
    bounce: Option<AlignedBuf>,
}

impl FileDevice {
    /// Opens the regular file or block device at `path`.
    ///
    /// Regular files present [`OpenOptions::block_size`] (default 512) and
    /// their length rounded down to a whole block; block devices present
    /// their logical block size (`BLKSSZGET`) and size (`BLKGETSIZE64`).
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Self, Error> {
        let path = path.as_ref();
        let location = path.display().to_string();
        check_options(&location, opts)?;

        let (file, direct) = open_file(path, &location, opts)?;
        let meta = file.metadata().map_err(|source| Error::Query {
            what: "file type",
            location: location.clone(),
            source,
        })?;
        let file_type = meta.file_type();

        let (raw_size, block_size, identity) = if file_type.is_file() {
            let mut len = meta.len();
            if let Some(want) = opts.create_size {
                if len < want {
                    file.set_len(want).map_err(|source| Error::Resize {
                        location: location.clone(),
                        size: want,
                        source,
                    })?;
                    len = want;
                }
            }
            let identity = DeviceIdentity {
                kind: IdentityKind::File,
                id: format!(
                    "file:dev={}:{}:ino={}",
                    libc::major(meta.dev()),
                    libc::minor(meta.dev()),
                    meta.ino()
                ),
            };
            let block_size = opts.block_size.unwrap_or(DEFAULT_FILE_BLOCK_SIZE);
            (len, block_size, identity)
        } else if file_type.is_block_device() {
            let size = sys::block_device_size(&file).map_err(|source| Error::Query {
                what: "size (BLKGETSIZE64)",
                location: location.clone(),
                source,
            })?;
            let native = sys::logical_block_size(&file).map_err(|source| Error::Query {
                what: "logical block size (BLKSSZGET)",
                location: location.clone(),
                source,
            })?;
            let block_size = block_device_block_size(&location, native, opts.block_size)?;
            if let Some(want) = opts.create_size {
                if size < want {
                    return Err(Error::TooSmall {
                        location,
                        size,
                        required: want,
                    });
                }
            }
            let identity = block_device_identity(meta.rdev());
            (size, block_size, identity)
        } else {
            return Err(Error::UnsupportedFileType { location });
        };

        let size = raw_size - raw_size % u64::from(block_size);
        Ok(Self {
            file,
            path: path.to_path_buf(),
            location,
            opts: opts.clone(),
            block_size,
            size,
            identity,
            direct,
            bounce: None,
        })
    }

    /// Whether I/O bypasses the page cache (`O_DIRECT`). `false` after a
    /// fallback under [`DirectIo::Auto`] or with [`DirectIo::Off`].
    pub fn direct_io(&self) -> bool {
        self.direct
    }

    fn check(&self, op: &'static str, offset: u64, len: usize) -> Result<(), Error> {
        let bs = u64::from(self.block_size);
        if offset % bs != 0 || len as u64 % bs != 0 {
            return Err(Error::Misaligned {
                op,
                location: self.location.clone(),
                offset,
                len,
                block_size: self.block_size,
            });
        }
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::OutOfRange {
                op,
                location: self.location.clone(),
                offset,
                len,
                size: self.size,
            }),
        }
    }

    /// Whether `ptr` must be copied through the bounce buffer.
    fn needs_bounce(&self, ptr: *const u8) -> bool {
        self.direct && (ptr as usize) % AlignedBuf::ALIGN != 0
    }

    fn io_error(&self, op: &'static str, offset: u64, len: usize, source: io::Error) -> Error {
        Error::Io {
            op,
            location: self.location.clone(),
            offset,
            len,
            source,
        }
    }
}

impl BlockDevice for FileDevice {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.check("read", offset, buf.len())?;
        let result = if self.needs_bounce(buf.as_ptr()) {
            let mut done = 0;
            let mut result = Ok(());
            while done < buf.len() {
                let n = (buf.len() - done).min(MAX_BOUNCE);
                let bounce = bounce_buffer(&mut self.bounce, n)?;
                if let Err(e) = self
                    .file
                    .read_exact_at(&mut bounce[..n], offset + done as u64)
                {
                    result = Err(e);
                    break;
                }
                buf[done..done + n].copy_from_slice(&bounce[..n]);
                done += n;
            }
            result
        } else {
            self.file.read_exact_at(buf, offset)
        };
        result.map_err(|source| self.io_error("read", offset, buf.len(), source))
    }

    fn write_at(&mut self, offset: u64, buf: &[u8], mode: WriteMode) -> Result<(), Error> {
        if self.opts.read_only {
            return Err(Error::ReadOnly {
                location: self.location.clone(),
                offset,
                len: buf.len(),
            });
        }
        self.check("write", offset, buf.len())?;
        let result = if self.needs_bounce(buf.as_ptr()) {
            let mut done = 0;
            let mut result = Ok(());
            while done < buf.len() {
                let n = (buf.len() - done).min(MAX_BOUNCE);
                let bounce = bounce_buffer(&mut self.bounce, n)?;
                bounce[..n].copy_from_slice(&buf[done..done + n]);
                if let Err(e) = self.file.write_all_at(&bounce[..n], offset + done as u64) {
                    result = Err(e);
                    break;
                }
                done += n;
            }
            result
        } else {
            self.file.write_all_at(buf, offset)
        };
        result.map_err(|source| self.io_error("write", offset, buf.len(), source))?;
        if mode == WriteMode::Fua {
            // pwrite + fdatasync: with O_DIRECT this flushes the disk's
            // volatile cache; buffered, it also writes back the page cache.
            self.file.sync_data().map_err(|source| {
                self.io_error("fdatasync after write", offset, buf.len(), source)
            })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.file.sync_data().map_err(|source| Error::Flush {
            location: self.location.clone(),
            source,
        })
    }

    fn reopen(&self) -> Result<Box<dyn BlockDevice>, Error> {
        let other = FileDevice::open(&self.path, &self.opts)?;
        if other.identity != self.identity {
            return Err(Error::IdentityChanged {
                location: self.location.clone(),
                expected: self.identity.id.clone(),
                found: other.identity.id,
            });
        }
        Ok(Box::new(other))
    }

    fn location(&self) -> &str {
        &self.location
    }
}

/// Returns the bounce buffer, (re)allocating it if it is shorter than `n`.
fn bounce_buffer(slot: &mut Option<AlignedBuf>, n: usize) -> Result<&mut AlignedBuf, Error> {
    let buf = match slot.take() {
        Some(buf) if buf.len() >= n => buf,
        // Round up so that slightly larger requests later reuse it.
        _ => AlignedBuf::new(n.div_ceil(AlignedBuf::ALIGN) * AlignedBuf::ALIGN)?,
    };
    Ok(slot.insert(buf))
}

fn check_options(location: &str, opts: &OpenOptions) -> Result<(), Error> {
    if opts.read_only && opts.create_size.is_some() {
        return Err(Error::InvalidOptions {
            location: location.to_owned(),
            reason: "create_size cannot be combined with read_only",
        });
    }
    if let Some(bs) = opts.block_size {
        check_block_size(location, bs)?;
    }
    Ok(())
}

fn check_block_size(location: &str, block_size: u32) -> Result<(), Error> {
    if block_size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        Ok(())
    } else {
        Err(Error::InvalidBlockSize {
            location: location.to_owned(),
            block_size,
            reason: format!(
                "fts supports powers of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE} bytes"
            ),
        })
    }
}

/// Picks the presented block size of a block device whose logical block
/// size is `native`.
fn block_device_block_size(
    location: &str,
    native: u32,
    requested: Option<u32>,
) -> Result<u32, Error> {
    check_block_size(location, native)?;
    match requested {
        None => Ok(native),
        Some(bs) if bs >= native => Ok(bs), // both powers of two: a multiple
        Some(bs) => Err(Error::InvalidBlockSize {
            location: location.to_owned(),
            block_size: bs,
            reason: format!("the device's logical block size is {native} bytes"),
        }),
    }
}

/// Opens `path` honouring [`OpenOptions::direct`]; returns the file and
/// whether it is in direct-I/O mode.
fn open_file(path: &Path, location: &str, opts: &OpenOptions) -> Result<(File, bool), Error> {
    let open = |direct: bool| {
        let mut o = fs::OpenOptions::new();
        o.read(true)
            .write(!opts.read_only)
            .create(!opts.read_only && opts.create_size.is_some())
            .custom_flags(if direct { libc::O_DIRECT } else { 0 });
        o.open(path)
    };
    let open_err = |source| Error::Open {
        location: location.to_owned(),
        source,
    };

    if opts.direct == DirectIo::Off {
        return Ok((open(false).map_err(open_err)?, false));
    }
    let (reason, buffered) = match open(true) {
        Ok(file) => match direct_io_refusal(&file, location, opts)? {
            None => return Ok((file, true)),
            Some(reason) => (reason, None),
        },
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // EINVAL also comes from directories and other odd files: only
            // call it a direct-I/O refusal for things we could use at all.
            let file = open(false).map_err(open_err)?;
            let file_type = file
                .metadata()
                .map_err(|source| Error::Query {
                    what: "file type",
                    location: location.to_owned(),
                    source,
                })?
                .file_type();
            if !file_type.is_file() && !file_type.is_block_device() {
                return Err(Error::UnsupportedFileType {
                    location: location.to_owned(),
                });
            }
            (e.to_string(), Some(file))
        }
        Err(e) => return Err(open_err(e)),
    };
    if opts.direct == DirectIo::Require {
        return Err(Error::DirectIoUnsupported {
            location: location.to_owned(),
            reason,
        });
    }
    BUFFERED_FALLBACK_WARNING.call_once(|| {
        eprintln!(
            "fts: warning: O_DIRECT refused on {location} (tmpfs?); using buffered I/O \
             with fdatasync — do not share this device between hosts"
        );
    });
    let file = match buffered {
        Some(file) => file,
        None => open(false).map_err(open_err)?,
    };
    Ok((file, false))
}

/// Checks a regular file opened with `O_DIRECT`: returns why direct I/O is
/// not really available (for the fallback), or an error if it is available
/// but not at the requested block size.
///
/// Since Linux 6.6 tmpfs accepts `O_DIRECT` but, being made of page cache,
/// cannot honour it; that counts as a refusal, as does a file system that
/// reports no direct-I/O support through `statx`. Block devices are not
/// checked: their block size is never below the logical block size, and
/// their inode lives on devtmpfs, which reports the tmpfs magic.
fn direct_io_refusal(
    file: &File,
    location: &str,
    opts: &OpenOptions,
) -> Result<Option<String>, Error> {
    let query = |what| {
        move |source| Error::Query {
            what,
            location: location.to_owned(),
            source,
        }
    };
    if !file
        .metadata()
        .map_err(query("file type"))?
        .file_type()
        .is_file()
    {
        return Ok(None);
    }
    if sys::is_tmpfs(file).map_err(query("file system type"))? {
        return Ok(Some(
            "the file is on tmpfs, which has no storage below its page cache".to_owned(),
        ));
    }
    let Some(align) = sys::dio_alignment(file).map_err(query("direct-I/O alignment"))? else {
        return Ok(None); // not reported: trust the open
    };
    if align.offset == 0 || align.mem == 0 {
        return Ok(Some(
            "the file system reports no direct-I/O support for this file".to_owned(),
        ));
    }
    if align.mem as usize > AlignedBuf::ALIGN {
        return Ok(Some(format!(
            "the file system needs {}-byte aligned memory for direct I/O",
            align.mem
        )));
    }
    let block_size = opts.block_size.unwrap_or(DEFAULT_FILE_BLOCK_SIZE);
    if align.offset > block_size {
        return Err(Error::InvalidBlockSize {
            location: location.to_owned(),
            block_size,
            reason: format!(
                "direct I/O on this file needs {}-byte aligned offsets and lengths; \
                 use that block size or larger, or turn direct I/O off",
                align.offset
            ),
        });
    }
    Ok(None)
}

/// Identity of the block device `rdev`: its WWID (or device-mapper UUID)
/// from sysfs when there is one, else the host-local `block:MAJ:MIN`.
fn block_device_identity(rdev: u64) -> DeviceIdentity {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let sys_dir = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let id = stable_block_id(&sys_dir).unwrap_or_else(|| format!("block:{major}:{minor}"));
    DeviceIdentity {
        kind: IdentityKind::BlockDevice,
        id,
    }
}

fn stable_block_id(sys_dir: &Path) -> Option<String> {
    if let Some(id) = disk_id(sys_dir) {
        return Some(id);
    }
    // A partition has no wwid of its own: use its disk's plus the number.
    let part = read_trimmed(&sys_dir.join("partition"))?;
    let disk_dir = fs::canonicalize(sys_dir).ok()?.parent()?.to_path_buf();
    Some(format!("{}:part={part}", disk_id(&disk_dir)?))
}

fn disk_id(dir: &Path) -> Option<String> {
    [
        ("device/wwid", "wwid"),
        ("wwid", "wwid"),
        ("dm/uuid", "dm-uuid"),
    ]
    .iter()
    .find_map(|(file, label)| {
        read_trimmed(&dir.join(file)).map(|value| format!("block:{label}={value}"))
    })
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
