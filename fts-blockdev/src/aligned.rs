//! A heap buffer aligned for direct I/O.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use crate::Error;

/// A zero-initialised heap buffer whose start is aligned to
/// [`AlignedBuf::ALIGN`] (4096) bytes.
///
/// Direct I/O (`O_DIRECT`, SG_IO) needs memory aligned to the device's block
/// size; 4096 satisfies every block size fts supports. Passing an
/// `AlignedBuf` (or a block-aligned sub-slice of one) to
/// [`BlockDevice::read_at`](crate::BlockDevice::read_at) /
/// [`write_at`](crate::BlockDevice::write_at) lets backends do the I/O without
/// copying through a bounce buffer.
///
/// The buffer dereferences to `[u8]` of exactly the requested length; any
/// length is accepted, but only multiples of the device block size can be
/// used for I/O.
///
/// # Safety
///
/// This type owns one allocation made with [`std::alloc::alloc_zeroed`] and
/// the `Layout` stored next to it (size `max(len, 1)`, alignment 4096; the
/// size is never 0, which `alloc` forbids). The invariants are:
///
/// * `ptr` is non-null, points to that allocation, and is freed exactly once,
///   in `Drop`, with the same `Layout`;
/// * the first `len <= layout.size()` bytes are initialised (zeroed at
///   allocation, afterwards only written through `&mut [u8]`);
/// * the allocation is uniquely owned, so `&self` hands out only shared
///   slices and `&mut self` only exclusive ones, which is what makes the type
///   `Send` and `Sync` like a `Vec<u8>`.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

impl AlignedBuf {
    /// Alignment of every `AlignedBuf`, in bytes.
    pub const ALIGN: usize = 4096;

    /// Allocates a zero-filled buffer of `len` bytes aligned to
    /// [`Self::ALIGN`].
    ///
    /// Fails with [`Error::Alloc`] if `len` is too large for a `Layout` or the
    /// allocator refuses.
    pub fn new(len: usize) -> Result<Self, Error> {
        let layout =
            Layout::from_size_align(len.max(1), Self::ALIGN).map_err(|_| Error::Alloc { len })?;
        // SAFETY: `layout` has a non-zero size (at least 1 byte), which is the
        // only precondition of `alloc_zeroed`.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or(Error::Alloc { len })?;
        Ok(Self { ptr, len, layout })
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to a live allocation of at least `len` bytes,
        // all initialised (zeroed at allocation); the shared borrow of `self`
        // prevents any mutable access for the lifetime of the slice.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; the exclusive borrow of `self` guarantees
        // that this is the only live reference into the allocation.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was returned by `alloc_zeroed(self.layout)`, has not
        // been freed (this is the only place that frees it, and `drop` runs
        // once), and `self.layout` is unchanged since allocation.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

// SAFETY: `AlignedBuf` uniquely owns its allocation (like `Box<[u8]>`), has no
// interior mutability and no thread affinity, so moving it to another thread
// is sound.
unsafe impl Send for AlignedBuf {}

// SAFETY: shared access (`&AlignedBuf`) only yields `&[u8]`, which is `Sync`;
// mutation requires `&mut AlignedBuf`.
unsafe impl Sync for AlignedBuf {}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed_for_many_lengths() {
        for len in [0, 1, 511, 512, 4096, 4097, 65536, 1 << 20] {
            let buf = AlignedBuf::new(len).unwrap();
            assert_eq!(buf.len(), len);
            assert_eq!(buf.as_ptr() as usize % AlignedBuf::ALIGN, 0, "len {len}");
            assert!(buf.iter().all(|&b| b == 0), "len {len} not zeroed");
        }
    }

    #[test]
    fn writable_and_sendable() {
        let mut buf = AlignedBuf::new(8192).unwrap();
        buf[..4].copy_from_slice(b"fts!");
        buf[8191] = 7;
        let buf = std::thread::spawn(move || buf).join().unwrap();
        assert_eq!(&buf[..4], b"fts!");
        assert_eq!(buf[8191], 7);
    }

    #[test]
    fn absurd_length_is_an_error_not_a_panic() {
        let err = AlignedBuf::new(usize::MAX).unwrap_err();
        assert!(matches!(err, Error::Alloc { len } if len == usize::MAX));
    }

    #[test]
    fn debug_does_not_dump_contents() {
        let buf = AlignedBuf::new(4096).unwrap();
        let s = format!("{buf:?}");
        assert!(s.contains("len: 4096"), "{s}");
        assert!(s.len() < 100, "{s}");
    }
}
