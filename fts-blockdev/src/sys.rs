//! The few raw system calls std does not wrap: block-device ioctls,
//! `fstatfs` and `statx`. All `unsafe` outside [`crate::AlignedBuf`] lives here.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `BLKGETSIZE64` from `<linux/fs.h>`: `_IOR(0x12, 114, size_t)`; returns
/// the device size in bytes as a `u64`. (The historical `size_t` in the
/// request number is part of the ABI; the kernel always writes 8 bytes.)
const BLKGETSIZE64: libc::Ioctl = libc::_IOR::<libc::size_t>(0x12, 114);

/// `TMPFS_MAGIC` from `<linux/magic.h>`.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Size of the block device behind `file`, in bytes.
pub(crate) fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: `file` keeps the descriptor open for the duration of the call;
    // BLKGETSIZE64 writes exactly one u64 through the pointer, which points
    // to a live, writable, properly aligned u64 on our stack.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Logical block (sector) size of the block device behind `file`, in bytes.
pub(crate) fn logical_block_size(file: &File) -> io::Result<u32> {
    let mut lbs: libc::c_int = 0;
    // SAFETY: `file` keeps the descriptor open for the duration of the call;
    // BLKSSZGET writes exactly one int through the pointer, which points to
    // a live, writable, properly aligned c_int on our stack.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::BLKSSZGET,
            &mut lbs as *mut libc::c_int,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(lbs).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("BLKSSZGET returned a negative size {lbs}"),
        )
    })
}

/// Whether `file` lives on tmpfs, where `O_DIRECT` is accepted (Linux ≥ 6.6)
/// but cannot bypass a page cache, because the page cache is the storage.
pub(crate) fn is_tmpfs(file: &File) -> io::Result<bool> {
    // SAFETY: `statfs` is a plain C struct of integers, for which all-zero
    // bytes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `file` keeps the descriptor open for the duration of the call;
    // `st` is a live, writable `statfs` that the kernel fills in.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // The type of `f_type` differs between architectures (i64, i32, u32).
    #[allow(clippy::unnecessary_cast)]
    let fs_type = st.f_type as i64;
    Ok(fs_type == TMPFS_MAGIC)
}

/// Direct-I/O alignment requirements of a file, from `statx(STATX_DIOALIGN)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DioAlign {
    /// Required alignment of memory buffers, in bytes (0: no direct I/O).
    pub(crate) mem: u32,
    /// Required alignment of file offsets and lengths, in bytes (0: no
    /// direct I/O).
    pub(crate) offset: u32,
}

/// Direct-I/O alignment of `file`, or `None` where the kernel (< 6.1) or
/// file system does not report it.
pub(crate) fn dio_alignment(file: &File) -> io::Result<Option<DioAlign>> {
    // SAFETY: `statx` is a plain C struct of integers, for which all-zero
    // bytes are a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `file` keeps the descriptor open for the duration of the call;
    // the path is a valid NUL-terminated empty string, which with
    // AT_EMPTY_PATH makes statx describe the descriptor itself; `stx` is a
    // live, writable `statx` that the kernel fills in.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOSYS) => Ok(None),
            _ => Err(err),
        };
    }
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return Ok(None);
    }
    Ok(Some(DioAlign {
        mem: stx.stx_dio_mem_align,
        offset: stx.stx_dio_offset_align,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // Values from <linux/fs.h> on the asm-generic ioctl encoding
        // (x86_64, aarch64, riscv64).
        #[cfg(any(
            target_arch = "x86_64",
            target_arch = "aarch64",
            target_arch = "riscv64"
        ))]
        {
            assert_eq!(BLKGETSIZE64, 0x8008_1272);
            assert_eq!(libc::BLKSSZGET, 0x1268);
        }
    }

    #[test]
    fn ioctls_fail_cleanly_on_a_regular_file() {
        let f = tempfile::tempfile().unwrap();
        assert!(block_device_size(&f).is_err());
        assert!(logical_block_size(&f).is_err());
    }

    #[test]
    fn fstatfs_recognises_tmpfs() {
        let f = tempfile::tempfile().unwrap();
        // Only checks that the call works; /tmp may or may not be tmpfs.
        is_tmpfs(&f).unwrap();
        if std::path::Path::new("/dev/shm").is_dir() {
            let f = tempfile::tempfile_in("/dev/shm").unwrap();
            assert!(is_tmpfs(&f).unwrap());
        }
    }

    #[test]
    fn dio_alignment_of_a_temp_file_is_sane_when_reported() {
        let f = tempfile::tempfile().unwrap();
        if let Some(a) = dio_alignment(&f).unwrap() {
            assert!(a.offset == 0 || a.offset.is_power_of_two(), "{a:?}");
            assert!(a.mem == 0 || a.mem.is_power_of_two(), "{a:?}");
        }
    }
}
