//! A writer (and, for checking, a reader) of the "newc" cpio format, the
//! format of Linux initramfs archives (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Every entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex
//! fields), the NUL-terminated path padded to a multiple of 4 bytes, and
//! the data padded likewise; the archive ends with an entry named
//! `TRAILER!!!`. The kernel accepts several archives one after the other,
//! but the rig writes one per guest.

use std::collections::BTreeSet;

/// The magic of a newc header without checksums.
const MAGIC: &[u8; 6] = b"070701";
/// The name of the last entry.
const TRAILER: &str = "TRAILER!!!";
/// Header length: magic plus 13 fields of 8 hex digits.
const HEADER_LEN: usize = 6 + 13 * 8;

/// File-type bits of `st_mode`.
pub mod mode {
    /// Regular file.
    pub const S_IFREG: u32 = 0o100_000;
    /// Directory.
    pub const S_IFDIR: u32 = 0o040_000;
    /// Symbolic link.
    pub const S_IFLNK: u32 = 0o120_000;
    /// Character device.
    pub const S_IFCHR: u32 = 0o020_000;
    /// The mask of the type bits.
    pub const S_IFMT: u32 = 0o170_000;
}

/// A newc archive being written in memory.
///
/// Paths are relative (`bin/busybox`); a leading `/` is removed. Parent
/// directories are not created implicitly: add them first with
/// [`Newc::dir`]. Cloning an unfinished archive is how the rig makes
/// per-guest archives that share their large files.
#[derive(Debug, Clone, Default)]
pub struct Newc {
    buf: Vec<u8>,
    next_ino: u32,
    names: BTreeSet<String>,
}

/// One entry read back by [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path as stored (no leading `/`).
    pub name: String,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Inode number.
    pub ino: u32,
    /// Link count.
    pub nlink: u32,
    /// Device major of a device node.
    pub rdev_major: u32,
    /// Device minor of a device node.
    pub rdev_minor: u32,
    /// The data (a symlink's target for links).
    pub data: Vec<u8>,
}

impl Newc {
    /// An empty archive.
    pub fn new() -> Newc {
        Newc {
            buf: Vec::new(),
            next_ino: 1,
            names: BTreeSet::new(),
        }
    }

    /// Adds a directory with permission bits `perm` (e.g. `0o755`).
    pub fn dir(&mut self, path: &str, perm: u32) -> &mut Newc {
        self.entry(path, mode::S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])
    }

    /// Adds a regular file with permission bits `perm` and contents `data`.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> &mut Newc {
        self.entry(path, mode::S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// Adds a symbolic link `path` -> `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Newc {
        self.entry(path, mode::S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Adds a character device node (e.g. `dev/console`, 5:1), which the
    /// kernel needs to give `/init` its standard streams.
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> &mut Newc {
        self.entry(
            path,
            mode::S_IFCHR | (perm & 0o7777),
            1,
            (major, minor),
            &[],
        )
    }

    /// Whether an entry named `path` was added.
    pub fn contains(&self, path: &str) -> bool {
        self.names.contains(path.trim_start_matches('/'))
    }

    /// Appends the trailer and returns the archive's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.header(TRAILER, 0, 0, 1, (0, 0), 0);
        self.buf
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> &mut Newc {
        let name = path.trim_start_matches('/').to_owned();
        let ino = self.next_ino;
        self.next_ino += 1;
        // Sizes beyond 4 GiB cannot be expressed; the rig's files are far
        // smaller, so saturate rather than fail (the reader would reject it).
        let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.header(&name, ino, mode, nlink, rdev, size);
        self.buf.extend_from_slice(data);
        self.pad();
        self.names.insert(name);
        self
    }

    fn header(&mut self, name: &str, ino: u32, mode: u32, nlink: u32, rdev: (u32, u32), size: u32) {
        self.buf.extend_from_slice(MAGIC);
        let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
        for field in [
            ino, mode, 0, /* uid */
            0, /* gid */
            nlink, 0, /* mtime */
            size, 0, /* devmajor */
            0, /* devminor */
            rdev.0, rdev.1, namesize, 0, /* check */
        ] {
            self.buf
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }
}

/// Reads a newc archive back: every entry up to the trailer, in order.
///
/// Checks the magic, the hex fields, the padding and the trailer; for
/// tests and for sanity checks of generated archives.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    loop {
        let header = bytes
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| format!("truncated header at offset {pos}"))?;
        if &header[..6] != MAGIC {
            return Err(format!("bad magic at offset {pos}"));
        }
        let mut fields = [0u32; 13];
        for (i, f) in fields.iter_mut().enumerate() {
            let hex = std::str::from_utf8(&header[6 + i * 8..6 + (i + 1) * 8])
                .map_err(|_| format!("non-ASCII field {i} at offset {pos}"))?;
            *f = u32::from_str_radix(hex, 16)
                .map_err(|_| format!("bad hex field {i} ({hex:?}) at offset {pos}"))?;
        }
        let [ino, mode, _uid, _gid, nlink, _mtime, size, _maj, _min, rmaj, rmin, namesize, check] =
            fields;
        if check != 0 {
            return Err(format!("non-zero check field at offset {pos}"));
        }
        let name_start = pos + HEADER_LEN;
        let name_len = namesize as usize;
        let name_bytes = bytes
            .get(name_start..name_start + name_len)
            .ok_or_else(|| format!("truncated name at offset {name_start}"))?;
        if name_len == 0 || name_bytes[name_len - 1] != 0 {
            return Err(format!("name at offset {name_start} is not NUL-terminated"));
        }
        let name = String::from_utf8(name_bytes[..name_len - 1].to_vec())
            .map_err(|_| format!("name at offset {name_start} is not UTF-8"))?;
        let data_start = align4(name_start + name_len);
        if bytes[name_start + name_len..data_start.min(bytes.len())]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(format!("non-zero padding after name {name:?}"));
        }
        if name == TRAILER {
            return Ok(entries);
        }
        let data = bytes
            .get(data_start..data_start + size as usize)
            .ok_or_else(|| format!("truncated data of {name:?}"))?
            .to_vec();
        pos = align4(data_start + size as usize);
        entries.push(Entry {
            name,
            mode,
            ino,
            nlink,
            rdev_major: rmaj,
            rdev_minor: rmin,
            data,
        });
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_the_kernel_format() {
        let mut a = Newc::new();
        a.file("/init", 0o755, b"hi");
        let bytes = a.finish();
        assert_eq!(&bytes[..6], b"070701");
        // ino 1, mode 0100755, uid, gid, nlink 1, mtime, size 2, ...
        assert_eq!(
            std::str::from_utf8(&bytes[6..6 + 8 * 7]).unwrap(),
            concat!(
                "00000001", "000081ed", "00000000", "00000000", "00000001", "00000000", "00000002"
            )
        );
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(bytes.len() % 4, 0);
    }
}
