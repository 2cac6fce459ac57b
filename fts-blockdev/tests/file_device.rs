//! The file backend on real files (in the system temp dir and on tmpfs).

// Test helpers outside #[test] fns may panic too.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fts_blockdev::{
    open, AlignedBuf, BlockDevice, DirectIo, Error, FileDevice, IdentityKind, OpenOptions,
    WriteMode,
};
use proptest::prelude::*;
use tempfile::TempDir;

const MIB: u64 = 1 << 20;

fn sized(size: u64) -> OpenOptions {
    OpenOptions {
        create_size: Some(size),
        ..OpenOptions::default()
    }
}

/// A fresh image of `size` bytes in a new temp dir.
fn image(size: u64) -> (TempDir, PathBuf, FileDevice) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let dev = FileDevice::open(&path, &sized(size)).unwrap();
    (dir, path, dev)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// `pattern` in an `AlignedBuf`.
fn aligned_pattern(len: usize, seed: u8) -> AlignedBuf {
    let mut buf = AlignedBuf::new(len).unwrap();
    buf.copy_from_slice(&pattern(len, seed));
    buf
}

/// A slice of `len` bytes whose address is 1 byte past a 4096 boundary.
fn unaligned(storage: &mut Vec<u8>, len: usize) -> &mut [u8] {
    storage.resize(len + AlignedBuf::ALIGN + 1, 0);
    let start = storage.as_ptr().align_offset(AlignedBuf::ALIGN) + 1;
    let slice = &mut storage[start..start + len];
    assert_ne!(slice.as_ptr() as usize % AlignedBuf::ALIGN, 0);
    slice
}

#[test]
fn round_trip_with_default_and_4096_block_sizes() {
    for block_size in [None, Some(512), Some(1024), Some(4096)] {
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions {
            block_size,
            ..sized(MIB)
        };
        let mut dev = FileDevice::open(dir.path().join("d.img"), &opts).unwrap();
        let bs = dev.block_size() as usize;
        assert_eq!(bs, block_size.unwrap_or(512) as usize);
        assert!(dev.direct_io(), "O_DIRECT should work in the temp dir");

        let data = aligned_pattern(4 * bs, 7);
        dev.write_at(3 * bs as u64, &data, WriteMode::Normal)
            .unwrap();
        let last = aligned_pattern(bs, 9);
        let end = dev.size_bytes() - bs as u64;
        dev.write_at(end, &last, WriteMode::Fua).unwrap();
        dev.flush().unwrap();

        let mut back = AlignedBuf::new(4 * bs).unwrap();
        dev.read_at(3 * bs as u64, &mut back).unwrap();
        assert_eq!(&back[..], &data[..]);
        let mut back = AlignedBuf::new(bs).unwrap();
        dev.read_at(end, &mut back).unwrap();
        assert_eq!(&back[..], &last[..]);
        // Never-written blocks of the sparse file read as zeros.
        dev.read_at(0, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0));
    }
}

#[test]
fn data_lands_at_the_byte_offset_in_the_file() {
    let (_dir, path, mut dev) = image(64 * 1024);
    let data = aligned_pattern(4096, 1);
    dev.write_at(8192, &data, WriteMode::Fua).unwrap();
    let raw = fs::read(&path).unwrap();
    assert_eq!(&raw[8192..12288], &data[..]);
    assert!(raw[..8192].iter().all(|&b| b == 0));
}

#[test]
fn zero_length_io_is_a_no_op() {
    let (_dir, _path, mut dev) = image(64 * 1024);
    dev.read_at(4096, &mut []).unwrap();
    dev.write_at(dev.size_bytes(), &[], WriteMode::Fua).unwrap();
}

#[test]
fn misaligned_offset_or_length_is_rejected() {
    let (_dir, path, mut dev) = image(64 * 1024);
    let mut buf = AlignedBuf::new(1024).unwrap();
    for (offset, len) in [(100_u64, 512_usize), (512, 100), (0, 513), (511, 1024)] {
        match dev.read_at(offset, &mut buf[..len]) {
            Err(Error::Misaligned {
                op: "read",
                location,
                offset: o,
                len: l,
                block_size: 512,
            }) => {
                assert_eq!((o, l), (offset, len));
                assert_eq!(location, path.display().to_string());
            }
            other => panic!("read {offset}+{len}: expected Misaligned, got {other:?}"),
        }
        let err = dev
            .write_at(offset, &buf[..len], WriteMode::Normal)
            .unwrap_err();
        assert!(
            matches!(err, Error::Misaligned { op: "write", .. }),
            "{err:?}"
        );
    }
    let msg = dev.read_at(100, &mut buf[..512]).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "read of 512 bytes at offset 100 on {} is not aligned to the block size of 512 bytes",
            path.display()
        )
    );
}

#[test]
fn out_of_range_is_rejected() {
    let (_dir, _path, mut dev) = image(64 * 1024);
    let size = dev.size_bytes();
    assert_eq!(size, 64 * 1024);
    let mut buf = AlignedBuf::new(1024).unwrap();
    for offset in [size, size - 512, size + 4096, u64::MAX - 511] {
        match dev.read_at(offset, &mut buf) {
            Err(Error::OutOfRange {
                op: "read",
                offset: o,
                len: 1024,
                size: s,
                ..
            }) => assert_eq!((o, s), (offset, size)),
            other => panic!("read at {offset}: expected OutOfRange, got {other:?}"),
        }
        let err = dev.write_at(offset, &buf, WriteMode::Fua).unwrap_err();
        assert!(
            matches!(err, Error::OutOfRange { op: "write", .. }),
            "{err:?}"
        );
    }
    // The very last block is fine.
    dev.read_at(size - 1024, &mut buf).unwrap();
}

#[test]
fn create_size_makes_a_sparse_file_and_never_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.img");
    let size = 256 * MIB;
    let dev = FileDevice::open(&path, &sized(size)).unwrap();
    assert_eq!(dev.size_bytes(), size);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), size);
    assert!(
        meta.blocks() * 512 < MIB,
        "not sparse: {} bytes allocated",
        meta.blocks() * 512
    );
    drop(dev);

    // Smaller create_size leaves the file alone; larger extends it.
    let dev = FileDevice::open(&path, &sized(MIB)).unwrap();
    assert_eq!(dev.size_bytes(), size);
    let dev = FileDevice::open(&path, &sized(size + MIB)).unwrap();
    assert_eq!(dev.size_bytes(), size + MIB);
    assert_eq!(fs::metadata(&path).unwrap().len(), size + MIB);
}

#[test]
fn size_is_rounded_down_to_whole_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.img");
    fs::write(&path, vec![0_u8; 10_000]).unwrap();
    let dev = FileDevice::open(&path, &OpenOptions::default()).unwrap();
    assert_eq!(dev.size_bytes(), 9728);
    let opts = OpenOptions {
        block_size: Some(4096),
        ..OpenOptions::default()
    };
    let dev = FileDevice::open(&path, &opts).unwrap();
    assert_eq!(dev.size_bytes(), 8192);
}

#[test]
fn missing_file_without_create_size_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.img");
    let err = FileDevice::open(&path, &OpenOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    assert!(!path.exists());
}

#[test]
fn directories_are_not_devices() {
    let dir = tempfile::tempdir().unwrap();
    let ro = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let err = FileDevice::open(dir.path(), &ro).unwrap_err();
    assert!(matches!(err, Error::UnsupportedFileType { .. }), "{err:?}");
    let err = FileDevice::open(dir.path(), &OpenOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
}

#[test]
fn reopen_sees_the_other_handles_writes_immediately() {
    let (_dir, _path, mut a) = image(MIB);
    assert!(a.direct_io());
    let mut b = a.reopen().unwrap();
    assert_eq!(b.identity(), a.identity());
    assert_eq!(b.block_size(), a.block_size());
    assert_eq!(b.size_bytes(), a.size_bytes());
    assert_eq!(b.location(), a.location());

    let mut back = AlignedBuf::new(4096).unwrap();
    for round in 0..8_u8 {
        let data = aligned_pattern(4096, round);
        let offset = u64::from(round) * 4096;
        // No flush: visibility, not durability, is what is tested.
        if round % 2 == 0 {
            a.write_at(offset, &data, WriteMode::Normal).unwrap();
            b.read_at(offset, &mut back).unwrap();
        } else {
            b.write_at(offset, &data, WriteMode::Normal).unwrap();
            a.read_at(offset, &mut back).unwrap();
        }
        assert_eq!(&back[..], &data[..], "round {round}");
    }
}

#[test]
fn reopen_is_usable_from_another_thread() {
    let (_dir, _path, mut a) = image(MIB);
    let mut b = a.reopen().unwrap();
    let writer = std::thread::spawn(move || {
        b.write_at(0, &aligned_pattern(8192, 3), WriteMode::Fua)
            .unwrap();
    });
    writer.join().unwrap();
    let mut back = AlignedBuf::new(8192).unwrap();
    a.read_at(0, &mut back).unwrap();
    assert_eq!(&back[..], &pattern(8192, 3)[..]);
}

#[test]
fn reopen_detects_a_replaced_file() {
    let (dir, path, a) = image(MIB);
    let other = dir.path().join("other.img");
    FileDevice::open(&other, &sized(MIB)).unwrap();
    fs::rename(&other, &path).unwrap();
    let err = a.reopen().unwrap_err();
    assert!(matches!(err, Error::IdentityChanged { .. }), "{err:?}");
}

#[test]
fn unaligned_caller_buffers_work() {
    let (_dir, _path, mut dev) = image(8 * MIB);
    let mut storage = Vec::new();
    // Small, and larger than the internal bounce buffer (1 MiB) so it is
    // copied in pieces.
    for (offset, len) in [
        (512_u64, 512_usize),
        (4096, 12288),
        (MIB, 3 * MIB as usize + 512),
    ] {
        let data = pattern(len, len as u8);
        let src = unaligned(&mut storage, len);
        src.copy_from_slice(&data);
        dev.write_at(offset, src, WriteMode::Fua).unwrap();

        let mut check = AlignedBuf::new(len).unwrap();
        dev.read_at(offset, &mut check).unwrap();
        assert_eq!(&check[..], &data[..], "aligned read back of {len}");

        let dst = unaligned(&mut storage, len);
        dst.fill(0xee);
        dev.read_at(offset, dst).unwrap();
        assert_eq!(dst, &data[..], "unaligned read back of {len}");
    }
}

#[test]
fn sub_slices_of_aligned_bufs_work() {
    let (_dir, _path, mut dev) = image(MIB);
    let buf = aligned_pattern(3 * 4096, 5);
    // 512 bytes into the buffer: not 4096-aligned, goes through the bounce.
    dev.write_at(0, &buf[512..4608], WriteMode::Normal).unwrap();
    let mut back = AlignedBuf::new(3 * 4096).unwrap();
    dev.read_at(0, &mut back[4096..8192]).unwrap();
    assert_eq!(&back[4096..8192], &buf[512..4608]);
}

#[test]
fn block_size_4096_rejects_512_aligned_io() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        block_size: Some(4096),
        ..sized(MIB)
    };
    let mut dev = FileDevice::open(dir.path().join("4kn.img"), &opts).unwrap();
    assert_eq!(dev.block_size(), 4096);
    let mut buf = AlignedBuf::new(4096).unwrap();
    let err = dev.read_at(512, &mut buf).unwrap_err();
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
    let err = dev.write_at(0, &buf[..512], WriteMode::Fua).unwrap_err();
    assert!(matches!(err, Error::Misaligned { len: 512, .. }), "{err:?}");
    dev.write_at(4096, &buf, WriteMode::Fua).unwrap();
}

#[test]
fn unsupported_block_sizes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for bs in [0, 256, 1000, 8192, 65536] {
        let opts = OpenOptions {
            block_size: Some(bs),
            ..sized(MIB)
        };
        let err = FileDevice::open(dir.path().join("x.img"), &opts).unwrap_err();
        assert!(
            matches!(err, Error::InvalidBlockSize { block_size, .. } if block_size == bs),
            "{bs}: {err:?}"
        );
    }
}

#[test]
fn read_only_handles_refuse_writes() {
    let (_dir, path, mut rw) = image(MIB);
    rw.write_at(0, &aligned_pattern(512, 4), WriteMode::Fua)
        .unwrap();
    let ro = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let mut dev = FileDevice::open(&path, &ro).unwrap();
    let mut buf = AlignedBuf::new(512).unwrap();
    dev.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf[..], &pattern(512, 4)[..]);
    let err = dev.write_at(0, &buf, WriteMode::Normal).unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
    dev.flush().unwrap();

    let both = OpenOptions {
        read_only: true,
        create_size: Some(MIB),
        ..OpenOptions::default()
    };
    let err = FileDevice::open(&path, &both).unwrap_err();
    assert!(matches!(err, Error::InvalidOptions { .. }), "{err:?}");
}

#[test]
fn direct_io_off_is_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        direct: DirectIo::Off,
        ..sized(MIB)
    };
    let mut dev = FileDevice::open(dir.path().join("b.img"), &opts).unwrap();
    assert!(!dev.direct_io());
    let mut storage = Vec::new();
    let buf = unaligned(&mut storage, 1024);
    buf.copy_from_slice(&pattern(1024, 8));
    dev.write_at(512, buf, WriteMode::Fua).unwrap();
    let mut back = vec![0_u8; 1024];
    dev.read_at(512, &mut back).unwrap();
    assert_eq!(back, pattern(1024, 8));
    // Its reopen keeps the policy.
    let again = dev.reopen().unwrap();
    assert_eq!(again.identity(), dev.identity());
}

#[test]
fn direct_io_require_works_where_supported() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        direct: DirectIo::Require,
        ..sized(MIB)
    };
    let dev = FileDevice::open(dir.path().join("r.img"), &opts).unwrap();
    assert!(dev.direct_io());
}

#[test]
fn file_identity_names_device_and_inode() {
    let (dir, path, a) = image(MIB);
    let meta = fs::metadata(&path).unwrap();
    let id = a.identity();
    assert_eq!(id.kind, IdentityKind::File);
    assert_eq!(
        id.id,
        format!(
            "file:dev={}:{}:ino={}",
            libc::major(meta.dev()),
            libc::minor(meta.dev()),
            meta.ino()
        )
    );
    assert_eq!(id.to_string(), id.id);
    let (_dir2, _path2, b) = image(MIB);
    assert_ne!(b.identity(), id);
    drop(dir);
}

#[test]
fn io_errors_name_operation_location_and_offset() {
    let (_dir, path, mut dev) = image(64 * 1024);
    // Shrink the file behind the handle's back: the handle still believes
    // it is 64 KiB long, so the read passes the range check and hits EOF.
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let mut buf = AlignedBuf::new(4096).unwrap();
    let err = dev.read_at(20480, &mut buf).unwrap_err();
    match &err {
        Error::Io {
            op: "read",
            location,
            offset: 20480,
            len: 4096,
            source,
        } => {
            assert_eq!(location, &path.display().to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    let prefix = format!(
        "read of 4096 bytes at offset 20480 on {} failed: ",
        path.display()
    );
    assert!(err.to_string().starts_with(&prefix), "{err}");
}

#[test]
fn io_error_display_matches_the_documented_form() {
    let err = Error::Io {
        op: "read",
        location: "/dev/loop3".into(),
        offset: 20480,
        len: 4096,
        source: std::io::Error::from_raw_os_error(libc::EIO),
    };
    assert!(
        err.to_string()
            .starts_with("read of 4096 bytes at offset 20480 on /dev/loop3 failed: "),
        "{err}"
    );
}

#[test]
fn open_dispatches_paths_and_refuses_url_schemes() {
    let (_dir, path, _dev) = image(MIB);
    let dev = open(path.to_str().unwrap(), &OpenOptions::default()).unwrap();
    assert_eq!(dev.size_bytes(), MIB);
    assert_eq!(dev.location(), path.to_str().unwrap());

    for url in [
        "iscsi://10.0.0.1/iqn.2001-04.com.example:lun/0",
        "file:///tmp/x",
    ] {
        match open(url, &OpenOptions::default()) {
            Err(Error::UnsupportedScheme { location }) => assert_eq!(location, url),
            other => panic!("{url}: expected UnsupportedScheme, got {other:?}"),
        }
    }
}

/// A temp dir on tmpfs (`/dev/shm`), or skips the test `test` (fails it
/// under CI) where there is none.
#[track_caller]
fn shm_dir(test: &str) -> Option<TempDir> {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        hil::skip::skip(
            test,
            "/dev/shm is missing: the tmpfs fallback cannot be tested",
        );
        return None;
    }
    Some(tempfile::tempdir_in(shm).unwrap())
}

#[test]
fn tmpfs_falls_back_to_buffered_io() {
    let Some(dir) = shm_dir("tmpfs_falls_back_to_buffered_io") else {
        return;
    };
    let path = dir.path().join("shm.img");
    let mut dev = FileDevice::open(&path, &sized(MIB)).unwrap();
    assert!(!dev.direct_io(), "tmpfs cannot do real direct I/O");
    let data = aligned_pattern(4096, 2);
    dev.write_at(4096, &data, WriteMode::Fua).unwrap();
    let mut back = dev.reopen().unwrap();
    let mut buf = AlignedBuf::new(4096).unwrap();
    back.read_at(4096, &mut buf).unwrap();
    assert_eq!(&buf[..], &data[..]);
}

#[test]
fn tmpfs_with_direct_io_required_fails() {
    let Some(dir) = shm_dir("tmpfs_with_direct_io_required_fails") else {
        return;
    };
    let opts = OpenOptions {
        direct: DirectIo::Require,
        ..sized(MIB)
    };
    let err = FileDevice::open(dir.path().join("req.img"), &opts).unwrap_err();
    assert!(matches!(err, Error::DirectIoUnsupported { .. }), "{err:?}");
}

/// One step of the model-based property test.
#[derive(Debug, Clone)]
enum Op {
    Write {
        block: u64,
        blocks: usize,
        shift: usize,
        seed: u8,
        fua: bool,
    },
    Read {
        block: u64,
        blocks: usize,
        shift: usize,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..64_u64, 1..9_usize, 0..3_usize, any::<u8>(), any::<bool>())
            .prop_map(|(block, blocks, shift, seed, fua)| Op::Write { block, blocks, shift, seed, fua }),
        4 => (0..64_u64, 1..9_usize, 0..3_usize)
            .prop_map(|(block, blocks, shift)| Op::Read { block, blocks, shift }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any sequence of in-range whole-block reads and writes, through
    /// aligned or unaligned buffers and across reopened handles, behaves
    /// like a plain byte array.
    #[test]
    fn behaves_like_a_byte_array(bs in prop_oneof![Just(512_u32), Just(4096_u32)],
                                 ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let blocks_total = 72_u64;
        let size = blocks_total * u64::from(bs);
        let opts = OpenOptions { block_size: Some(bs), ..sized(size) };
        let mut dev: Box<dyn BlockDevice> =
            Box::new(FileDevice::open(dir.path().join("p.img"), &opts).unwrap());
        let mut model = vec![0_u8; size as usize];
        let bsz = bs as usize;
        for op in ops {
            match op {
                Op::Write { block, blocks, shift, seed, fua } => {
                    let len = blocks * bsz;
                    let data = pattern(len, seed);
                    let mut storage = AlignedBuf::new(len + 2 * 4096).unwrap();
                    let at = shift * 2049; // 0, or unaligned
                    storage[at..at + len].copy_from_slice(&data);
                    let mode = if fua { WriteMode::Fua } else { WriteMode::Normal };
                    let off = block * u64::from(bs);
                    dev.write_at(off, &storage[at..at + len], mode).unwrap();
                    model[off as usize..off as usize + len].copy_from_slice(&data);
                }
                Op::Read { block, blocks, shift } => {
                    let len = blocks * bsz;
                    let mut storage = AlignedBuf::new(len + 2 * 4096).unwrap();
                    let at = shift * 2049;
                    let off = block * u64::from(bs);
                    dev.read_at(off, &mut storage[at..at + len]).unwrap();
                    prop_assert_eq!(&storage[at..at + len], &model[off as usize..off as usize + len]);
                }
                Op::Reopen => dev = dev.reopen().unwrap(),
            }
        }
    }
}
