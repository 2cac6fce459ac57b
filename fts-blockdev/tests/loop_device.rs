//! The file backend on real Linux block devices: loop devices, including one
//! with 4096-byte logical sectors (an emulated 4Kn disk).
//!
//! Needs root, `losetup` and loop-device support (and `mkfs.ext4` and
//! `mount` for the file-system test); otherwise each test skips through
//! [`hil::skip`]: a SKIPPED banner on the real stderr and a line in the skip
//! log that `cargo xtask ci` counts, or, with `CI` set, a failure.

// Test helpers outside #[test] fns may panic too.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use fts_blockdev::{
    open, AlignedBuf, BlockDevice, Error, FileDevice, IdentityKind, OpenOptions, WriteMode,
};
use tempfile::TempDir;

const SIZE: u64 = 16 << 20;

/// An attached loop device; detached on drop (before its backing file's
/// directory is removed: fields drop in declaration order).
struct LoopDevice {
    dev: PathBuf,
    backing: PathBuf,
    _dir: TempDir,
}

impl LoopDevice {
    /// Attaches a fresh `SIZE`-byte file with `sector_size`-byte sectors, or
    /// says why it cannot.
    fn attach(sector_size: u32) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let backing = dir.path().join("lun.img");
        fs::File::create(&backing)
            .and_then(|f| f.set_len(SIZE))
            .map_err(|e| format!("creating {}: {e}", backing.display()))?;
        let out = Command::new("losetup")
            .args(["--find", "--show", "--sector-size"])
            .arg(sector_size.to_string())
            .arg(&backing)
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "`losetup` is not on PATH (Debian package mount/util-linux)".to_owned()
                }
                _ => format!("cannot run losetup: {e}"),
            })?;
        if !out.status.success() {
            return Err(format!(
                "losetup failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if dev.is_empty() {
            return Err("losetup printed no device".to_owned());
        }
        Ok(Self {
            dev: PathBuf::from(dev),
            backing,
            _dir: dir,
        })
    }

    fn path(&self) -> &str {
        self.dev.to_str().unwrap()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        match Command::new("losetup").arg("-d").arg(&self.dev).status() {
            Ok(s) if s.success() => {}
            other => eprintln!(
                "WARNING: could not detach {}: {other:?}",
                self.dev.display()
            ),
        }
    }
}

/// Attaches a loop device, or skips the test `test` (fails it under CI).
#[track_caller]
fn attach_or_skip(test: &str, sector_size: u32) -> Option<LoopDevice> {
    match LoopDevice::attach(sector_size) {
        Ok(l) => Some(l),
        Err(why) => {
            hil::skip::skip(test, &format!("loop devices unavailable: {why}"));
            None
        }
    }
}

fn filled(len: usize, byte: u8) -> AlignedBuf {
    let mut b = AlignedBuf::new(len).unwrap();
    b.fill(byte);
    b
}

fn read_backing(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut v, offset)
        .unwrap();
    v
}

#[test]
#[serial_test::serial]
fn loop_device_with_4096_byte_sectors() {
    let test = "loop_device_with_4096_byte_sectors";
    let Some(lo) = attach_or_skip(test, 4096) else {
        return;
    };
    let mut dev = open(lo.path(), &OpenOptions::default()).unwrap();
    assert_eq!(dev.block_size(), 4096);
    assert_eq!(dev.size_bytes(), SIZE);
    assert_eq!(dev.location(), lo.path());
    let id = dev.identity().clone();
    assert_eq!(id.kind, IdentityKind::BlockDevice);
    let rdev = fs::metadata(&lo.dev).unwrap().rdev();
    // Loop devices have no WWID in sysfs, so the identity is major:minor.
    assert_eq!(
        id.id,
        format!("block:{}:{}", libc::major(rdev), libc::minor(rdev))
    );

    // Round trip, through an aligned and an unaligned buffer.
    let data = filled(8192, 0xa5);
    dev.write_at(SIZE - 8192, &data, WriteMode::Fua).unwrap();
    let mut back = AlignedBuf::new(8192).unwrap();
    dev.read_at(SIZE - 8192, &mut back).unwrap();
    assert_eq!(&back[..], &data[..]);
    let mut storage = vec![0_u8; 4096 + 4096 + 1];
    let start = storage.as_ptr().align_offset(4096) + 1;
    dev.read_at(SIZE - 4096, &mut storage[start..start + 4096])
        .unwrap();
    assert!(storage[start..start + 4096].iter().all(|&b| b == 0xa5));

    // It really went to the device: the backing file has it.
    dev.flush().unwrap();
    assert!(read_backing(&lo.backing, SIZE - 8192, 8192)
        .iter()
        .all(|&b| b == 0xa5));

    // 512-byte I/O is not whole blocks on a 4Kn device.
    let mut small = AlignedBuf::new(4096).unwrap();
    let err = dev.read_at(512, &mut small).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Misaligned {
                block_size: 4096,
                ..
            }
        ),
        "{err:?}"
    );
    let err = dev
        .write_at(0, &small[..512], WriteMode::Normal)
        .unwrap_err();
    assert!(matches!(err, Error::Misaligned { len: 512, .. }), "{err:?}");
    let err = dev.read_at(SIZE, &mut small).unwrap_err();
    assert!(
        matches!(err, Error::OutOfRange { size: SIZE, .. }),
        "{err:?}"
    );

    // A second handle sees the data and the same identity.
    let mut other = dev.reopen().unwrap();
    assert_eq!(other.identity(), &id);
    other.read_at(SIZE - 8192, &mut back).unwrap();
    assert_eq!(&back[..], &data[..]);
    drop(other);
    drop(dev);

    // A block size below the device's logical block size is refused.
    let opts = OpenOptions {
        block_size: Some(512),
        ..OpenOptions::default()
    };
    let err = open(lo.path(), &opts).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidBlockSize {
                block_size: 512,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
#[serial_test::serial]
fn loop_device_with_512_byte_sectors_and_4096_override() {
    let test = "loop_device_with_512_byte_sectors_and_4096_override";
    let Some(lo) = attach_or_skip(test, 512) else {
        return;
    };
    let mut dev = open(lo.path(), &OpenOptions::default()).unwrap();
    assert_eq!(dev.block_size(), 512);
    assert_eq!(dev.size_bytes(), SIZE);
    let data = filled(512, 0x3c);
    dev.write_at(512, &data, WriteMode::Fua).unwrap();
    assert_eq!(read_backing(&lo.backing, 512, 512), vec![0x3c; 512]);
    drop(dev);

    let opts = OpenOptions {
        block_size: Some(4096),
        ..OpenOptions::default()
    };
    let mut dev = open(lo.path(), &opts).unwrap();
    assert_eq!(dev.block_size(), 4096);
    let mut buf = AlignedBuf::new(4096).unwrap();
    let err = dev.read_at(512, &mut buf).unwrap_err();
    assert!(matches!(err, Error::Misaligned { .. }), "{err:?}");
    dev.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf[512..1024], &data[..]);
}

#[test]
#[serial_test::serial]
fn loop_device_smaller_than_create_size_is_refused() {
    let test = "loop_device_smaller_than_create_size_is_refused";
    let Some(lo) = attach_or_skip(test, 512) else {
        return;
    };
    let opts = OpenOptions {
        create_size: Some(SIZE + 4096),
        ..OpenOptions::default()
    };
    let err = open(lo.path(), &opts).unwrap_err();
    assert!(matches!(err, Error::TooSmall { size: SIZE, .. }), "{err:?}");
    // A create_size it satisfies is fine and does not change the device.
    let opts = OpenOptions {
        create_size: Some(SIZE),
        ..OpenOptions::default()
    };
    assert_eq!(open(lo.path(), &opts).unwrap().size_bytes(), SIZE);
}

/// A file system mounted on a temp dir; unmounted on drop.
struct Mount {
    dir: TempDir,
}

impl Mount {
    /// Makes an ext4 file system on `dev` and mounts it, or says why not.
    fn ext4(dev: &str) -> Result<Self, String> {
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd
                .output()
                .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F", dev]))?;
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        run(Command::new("mount").arg(dev).arg(dir.path()))?;
        Ok(Self { dir })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        match Command::new("umount").arg(self.dir.path()).status() {
            Ok(s) if s.success() => {}
            other => eprintln!(
                "WARNING: could not unmount {}: {other:?}",
                self.dir.path().display()
            ),
        }
    }
}

#[test]
#[serial_test::serial]
fn image_file_on_a_4kn_file_system_needs_4096_byte_blocks() {
    let test = "image_file_on_a_4kn_file_system_needs_4096_byte_blocks";
    let Some(lo) = attach_or_skip(test, 4096) else {
        return;
    };
    let mnt = match Mount::ext4(lo.path()) {
        Ok(m) => m,
        Err(why) => {
            hil::skip::skip(test, &format!("cannot mount ext4 on a loop device: {why}"));
            return;
        }
    };
    let path = mnt.dir.path().join("image.img");
    let opts = OpenOptions {
        create_size: Some(1 << 20),
        ..OpenOptions::default()
    };
    // O_DIRECT on this file needs 4096-byte granularity: 512 would fail on
    // the first real I/O, so the open refuses it up front.
    let err = FileDevice::open(&path, &opts).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidBlockSize {
                block_size: 512,
                ..
            }
        ),
        "{err:?}"
    );
    let opts = OpenOptions {
        block_size: Some(4096),
        ..opts
    };
    let mut dev = FileDevice::open(&path, &opts).unwrap();
    assert!(dev.direct_io());
    let data = filled(4096, 0x77);
    dev.write_at(4096, &data, WriteMode::Fua).unwrap();
    let mut back = AlignedBuf::new(4096).unwrap();
    dev.read_at(4096, &mut back).unwrap();
    assert_eq!(&back[..], &data[..]);
    drop(dev);
    drop(mnt);
}
