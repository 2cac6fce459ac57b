//! Common header handling, CRC, strings and names.

use uuid::Uuid;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::FromBytes;

use crate::error::Error;
use crate::records::RecordKind;
use crate::wire;
use crate::{CRC_OFFSET, FORMAT_VERSION, NAME_MAX, PATH_MAX};

/// What an encoder writes into the common header besides magic, version,
/// size and CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Stamp {
    /// `layout_id`: [`layout_id_of`] the layout UUID.
    pub layout_id: u64,
    /// `index`: the record's position in its table (see each record).
    pub index: u32,
}

impl Stamp {
    /// A stamp for record `index` of layout `layout_id`.
    pub fn new(layout_id: u64, index: u32) -> Stamp {
        Stamp { layout_id, index }
    }
}

/// What a decoder checks in the common header (`None` = don't check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Expect {
    /// Expected `layout_id`; a mismatch is [`Error::ForeignLayout`].
    pub layout_id: Option<u64>,
    /// Expected `index`; a mismatch is [`Error::WrongIndex`].
    pub index: Option<u32>,
}

impl Expect {
    /// Check nothing beyond magic, version, size and CRC.
    pub fn any() -> Expect {
        Expect::default()
    }

    /// Check both the layout id and the index.
    pub fn exact(layout_id: u64, index: u32) -> Expect {
        Expect {
            layout_id: Some(layout_id),
            index: Some(index),
        }
    }

    /// The expectation matching what `stamp` writes.
    pub fn stamp(stamp: Stamp) -> Expect {
        Expect::exact(stamp.layout_id, stamp.index)
    }
}

/// The layout id of a layout UUID: its first 8 bytes (RFC 4122 order) read
/// as a little-endian u64.
pub fn layout_id_of(uuid: &Uuid) -> u64 {
    let b = uuid.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// CRC32C (Castagnoli) of `buf` with the 4 bytes at `crc_offset` taken as
/// zero, without copying the buffer. For a record, `buf` is exactly its
/// `rec_size` bytes and `crc_offset` is [`CRC_OFFSET`]. If the field runs
/// past the end of `buf`, only the bytes inside `buf` are taken as zero.
pub fn crc32c_record(buf: &[u8], crc_offset: usize) -> u32 {
    let (before, rest) = buf.split_at(crc_offset.min(buf.len()));
    let (field, after) = rest.split_at(rest.len().min(4));
    let crc = crc32c::crc32c(before);
    let crc = crc32c::crc32c_append(crc, &[0u8; 4][..field.len()]);
    crc32c::crc32c_append(crc, after)
}

/// Checks a process name (`pro_requestor`, `pro_requestee`, `holder_name`):
/// 1 to [`NAME_MAX`] bytes of UTF-8 without NUL. Encoders do not check;
/// callers validate names before they go to disk.
pub fn validate_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::EmptyName);
    }
    validate_field(name, NAME_MAX)
}

/// Checks a path (`blk5_unix_filename`, `sec_path`): at most [`PATH_MAX`]
/// bytes without NUL (may be empty).
pub fn validate_path(path: &str) -> Result<(), Error> {
    validate_field(path, PATH_MAX)
}

/// At most `max` bytes, no NUL.
pub(crate) fn validate_field(s: &str, max: usize) -> Result<(), Error> {
    if s.as_bytes().contains(&0) {
        return Err(Error::NameHasNul);
    }
    if s.len() > max {
        return Err(Error::NameTooLong {
            name: s.to_string(),
            max,
        });
    }
    Ok(())
}

/// A string NUL-padded into an `N`-byte field. Never panics: a string longer
/// than the field is cut at the last character boundary that fits.
pub(crate) fn put_str<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

/// The string in a NUL-padded field: UTF-8 up to the first NUL, then only
/// NULs.
pub(crate) fn get_str(b: &[u8], kind: RecordKind, field: &'static str) -> Result<String, Error> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let (text, pad) = b.split_at(end);
    if pad.iter().any(|&c| c != 0) {
        return Err(Error::BadField {
            kind,
            field,
            reason: "bytes after the terminating NUL are not zero".to_string(),
        });
    }
    match core::str::from_utf8(text) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => Err(Error::BadField {
            kind,
            field,
            reason: format!("not UTF-8: {e}"),
        }),
    }
}

/// The header an encoder writes (CRC still zero; [`seal`] sets it).
pub(crate) fn header(kind: RecordKind, stamp: Stamp) -> wire::Header {
    wire::Header {
        magic: kind.magic(),
        version: U16::new(FORMAT_VERSION),
        rec_size: U16::new(kind.size_u16()),
        index: U32::new(stamp.index),
        crc: U32::new(0),
        layout_id: U64::new(stamp.layout_id),
    }
}

/// Sets the CRC of an encoded record.
pub(crate) fn seal<const N: usize>(mut rec: [u8; N]) -> [u8; N] {
    let crc = crc32c_record(&rec, CRC_OFFSET).to_le_bytes();
    if let Some(field) = rec.get_mut(CRC_OFFSET..CRC_OFFSET + 4) {
        field.copy_from_slice(&crc);
    }
    rec
}

/// Validates the common header of a `kind` record at the start of `buf`, in
/// FORMAT.md's order, and returns the record's bytes (exactly
/// `kind.size()`) and its header.
pub(crate) fn open(
    buf: &[u8],
    kind: RecordKind,
    expect: Expect,
) -> Result<(&[u8], wire::Header), Error> {
    let size = kind.size();
    let rec = buf.get(..size).ok_or(Error::Truncated {
        kind,
        need: size,
        got: buf.len(),
    })?;
    if rec.iter().all(|&b| b == 0) {
        return Err(Error::Empty { kind });
    }
    let (hdr, _) = wire::Header::read_from_prefix(rec).map_err(|_| Error::Truncated {
        kind,
        need: size,
        got: buf.len(),
    })?;
    if hdr.magic != kind.magic() {
        return Err(Error::BadMagic {
            kind,
            found: hdr.magic,
        });
    }
    if hdr.version.get() != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            kind,
            found: hdr.version.get(),
        });
    }
    if usize::from(hdr.rec_size.get()) != size {
        return Err(Error::BadRecordSize {
            kind,
            found: hdr.rec_size.get(),
        });
    }
    let computed = crc32c_record(rec, CRC_OFFSET);
    if hdr.crc.get() != computed {
        return Err(Error::CrcMismatch {
            kind,
            index: hdr.index.get(),
            stored: hdr.crc.get(),
            computed,
        });
    }
    if let Some(expected) = expect.layout_id {
        if hdr.layout_id.get() != expected {
            return Err(Error::ForeignLayout {
                kind,
                found: hdr.layout_id.get(),
                expected,
            });
        }
    }
    if let Some(expected) = expect.index {
        if hdr.index.get() != expected {
            return Err(Error::WrongIndex {
                kind,
                found: hdr.index.get(),
                expected,
            });
        }
    }
    Ok((rec, hdr))
}

/// Reads a wire struct from a record slice already checked by [`open`].
pub(crate) fn read<W: FromBytes>(rec: &[u8], kind: RecordKind) -> Result<W, Error> {
    W::read_from_bytes(rec).map_err(|_| Error::Truncated {
        kind,
        need: kind.size(),
        got: rec.len(),
    })
}
