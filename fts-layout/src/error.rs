//! The crate's error types.

use crate::records::RecordKind;

/// Why a record (or a name, or a layout read from disk) was refused.
///
/// Record errors are listed in the order a reader checks them (FORMAT.md,
/// "Common record header"): the first failure is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The record's bytes are all zero: never written (unformatted).
    #[error("{kind}: all zero (unformatted or never written)")]
    Empty {
        /// The record that was expected.
        kind: RecordKind,
    },
    /// Fewer bytes than the record needs.
    #[error("{kind}: truncated: need {need} bytes, got {got}")]
    Truncated {
        /// The record (or, from [`crate::check::check_master`], the first
        /// record) that does not fit.
        kind: RecordKind,
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// The magic is not the expected record kind's.
    #[error("{kind}: bad magic {} (expected {})", fmt_magic(.found), fmt_magic(&.kind.magic()))]
    BadMagic {
        /// The record that was expected.
        kind: RecordKind,
        /// The magic found.
        found: [u8; 4],
    },
    /// A format version this reader does not know.
    #[error(
        "{kind}: unsupported format version {found} (this build reads version {})",
        crate::FORMAT_VERSION
    )]
    UnsupportedVersion {
        /// The record.
        kind: RecordKind,
        /// The version found.
        found: u16,
    },
    /// The `rec_size` field does not match the record kind.
    #[error("{kind}: bad record size {found} (expected {})", .kind.size())]
    BadRecordSize {
        /// The record.
        kind: RecordKind,
        /// The size found.
        found: u16,
    },
    /// The stored CRC does not match the record's bytes.
    #[error("{}: CRC mismatch (stored {stored:#010x}, computed {computed:#010x})", .kind.at(*.index))]
    CrcMismatch {
        /// The record.
        kind: RecordKind,
        /// The `index` field as stored (itself not trustworthy).
        index: u32,
        /// CRC stored in the record.
        stored: u32,
        /// CRC computed over the record.
        computed: u32,
    },
    /// The record belongs to another `format` run: stale.
    #[error("{kind}: layout id {found:#018x} is not this layout's {expected:#018x} (stale record from another format)")]
    ForeignLayout {
        /// The record.
        kind: RecordKind,
        /// Layout id found.
        found: u64,
        /// Layout id expected.
        expected: u64,
    },
    /// The record is valid but for another position in its table.
    #[error("{kind}: index {found} where {expected} was expected (misplaced record)")]
    WrongIndex {
        /// The record.
        kind: RecordKind,
        /// Index found.
        found: u32,
        /// Index expected.
        expected: u32,
    },
    /// A field has a value the format does not allow.
    #[error("{kind}: field {field}: {reason}")]
    BadField {
        /// The record.
        kind: RecordKind,
        /// Name of the field as in FORMAT.md.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A name or path longer than its field.
    #[error("name {name:?} is too long: {} bytes, at most {max}", .name.len())]
    NameTooLong {
        /// The name.
        name: String,
        /// The field size in bytes.
        max: usize,
    },
    /// An empty name.
    #[error("name is empty")]
    EmptyName,
    /// A name with a NUL byte (the on-disk padding character).
    #[error("name contains a NUL byte")]
    NameHasNul,
    /// The geometry recomputed from the disk's fields is refused.
    #[error("geometry recorded on disk is invalid: {0}")]
    Geometry(#[from] GeometryError),
}

impl Error {
    /// The record this error is about, as a human name
    /// (e.g. "Process Id Table entry 3"), if it is about a record.
    pub fn record(&self) -> Option<String> {
        match self {
            Error::CrcMismatch { kind, index, .. } => Some(kind.at(*index)),
            Error::Empty { kind }
            | Error::Truncated { kind, .. }
            | Error::BadMagic { kind, .. }
            | Error::UnsupportedVersion { kind, .. }
            | Error::BadRecordSize { kind, .. }
            | Error::ForeignLayout { kind, .. }
            | Error::WrongIndex { kind, .. }
            | Error::BadField { kind, .. } => Some(kind.to_string()),
            Error::NameTooLong { .. }
            | Error::EmptyName
            | Error::NameHasNul
            | Error::Geometry(_) => None,
        }
    }

    /// The message without the leading record name (what went wrong, for a
    /// caller that names the record itself).
    pub fn detail(&self) -> String {
        let full = self.to_string();
        match self.record() {
            Some(r) => match full.strip_prefix(&format!("{r}: ")) {
                Some(rest) => rest.to_string(),
                None => full,
            },
            None => full,
        }
    }

    /// The record kind this error is about, if any.
    pub fn kind(&self) -> Option<RecordKind> {
        match self {
            Error::Empty { kind }
            | Error::Truncated { kind, .. }
            | Error::BadMagic { kind, .. }
            | Error::UnsupportedVersion { kind, .. }
            | Error::BadRecordSize { kind, .. }
            | Error::CrcMismatch { kind, .. }
            | Error::ForeignLayout { kind, .. }
            | Error::WrongIndex { kind, .. }
            | Error::BadField { kind, .. } => Some(*kind),
            Error::NameTooLong { .. }
            | Error::EmptyName
            | Error::NameHasNul
            | Error::Geometry(_) => None,
        }
    }
}

fn device_label(device: usize) -> String {
    match device {
        0 => "master device".to_string(),
        n => format!("secondary device {n}"),
    }
}

fn fmt_magic(m: &[u8; 4]) -> String {
    if m.iter().all(|b| b.is_ascii_graphic()) {
        format!(
            "\"{}\"",
            m.iter().map(|&b| char::from(b)).collect::<String>()
        )
    } else {
        format!("{m:02x?}")
    }
}

/// Why [`crate::Geometry::compute`] refused a layout. Every message names
/// the numbers involved and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// Logical block size not a power of two in 512..=4096.
    #[error("logical block size {block_size} is not supported: it must be a power of two from 512 to 4096 (512-byte and 4Kn devices)")]
    BlockSize {
        /// The logical block size given.
        block_size: u32,
    },
    /// Segment size not a positive multiple of 4096, or over 65535 LBs.
    #[error("segment size {segment_bytes} bytes is not supported: it must be a positive multiple of 4096 and at most 65535 × 4096 = 268431360 bytes (e.g. 65536 or 1048576)")]
    SegmentSize {
        /// The segment size given, in bytes.
        segment_bytes: u64,
    },
    /// `blk5_max_connections` out of range.
    #[error("max connections {max_connections} is out of range: it must be 1..=4096")]
    Connections {
        /// The value given.
        max_connections: u32,
    },
    /// Ring size (`blk5_maxptr`) out of range.
    #[error("ring entries {ring_entries} is out of range: it must be 2..=65535 (default 640)")]
    RingEntries {
        /// The value given.
        ring_entries: u32,
    },
    /// Batch (`blk5_ptr_seg_per_process`) out of range.
    #[error(
        "batch {batch} is out of range: it must be 1..={ring_entries} (at most the ring entries)"
    )]
    Batch {
        /// The batch given.
        batch: u32,
        /// The ring size it must not exceed.
        ring_entries: u32,
    },
    /// More than [`crate::MAX_DEVICES`] devices.
    #[error("{devices} devices given (master and secondaries): at most 8 fit the Secondary Device Table; use fewer secondary devices")]
    TooManyDevices {
        /// Devices given, master included.
        devices: usize,
    },
    /// A device cannot even hold its control structures.
    #[error("{} ({device_bytes} bytes) is too small to hold its control structures: they need {need_bytes} bytes{}; use a larger device{}", device_label(*.device), if *.device == 0 { " (with the backups at its end)" } else { "" }, if *.device == 0 { ", fewer connections or fewer ring entries" } else { "" })]
    DeviceTooSmall {
        /// Device index (0 = master).
        device: usize,
        /// Its size in bytes.
        device_bytes: u64,
        /// Bytes the control structures need: up to the first data segment
        /// (and, on a v1.1 master, the backups at its end).
        need_bytes: u64,
    },
    /// A device has fewer data segments than the rings assigned to it need.
    #[error("{} ({device_bytes} bytes) has room for {fit} data segments of {segment_bytes} bytes, but its {tables} pointer tables × {per_table} segments each need {need} (a device of at least {need_bytes} bytes); use fewer connections, fewer ring entries, smaller segments, more devices or a larger device", device_label(*.device))]
    NotEnoughSegments {
        /// Device index (0 = master).
        device: usize,
        /// Its size in bytes.
        device_bytes: u64,
        /// Segment size in bytes.
        segment_bytes: u64,
        /// Pointer tables whose rings live on this device.
        tables: u32,
        /// Segments each of those tables owns on this device: its ring
        /// entries, or (v1.3 with secondary devices) its stripe there.
        per_table: u64,
        /// Segments needed.
        need: u64,
        /// Segments that fit.
        fit: u64,
        /// Device size that would be enough.
        need_bytes: u64,
    },
    /// More data segments than a u32 segment number can address.
    #[error("{total} data segments in all do not fit 32-bit segment numbers (at most 4294967295); use larger segments")]
    TooManySegments {
        /// Total segments the devices would hold.
        total: u64,
    },
}
