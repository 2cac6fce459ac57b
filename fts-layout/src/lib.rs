//! The fts on-disk format, version 1 (minor versions 1.0 and 1.1):
//! everything fts writes to a shared device, as pure codecs. `docs/FORMAT.md` is the normative description;
//! this crate implements it byte for byte (the golden tests in
//! `tests/golden.rs` pin it).
//!
//! What it is for:
//!
//! - **Record codecs**: the Master Control Block, lock record, Secondary
//!   Device Table, Process Id Table entries, leases, command areas,
//!   pointer-table chunks and segment headers (after EMC's WO 98/14871,
//!   "File Transfer Utility On Disk Structures", Figs. 4-7). Every record
//!   carries a common header (magic, version, size, index, CRC32C, layout id)
//!   and decoding checks it in the order FORMAT.md prescribes.
//! - **CRC32C** of a record with its CRC field taken as zero
//!   ([`crc32c_record`]).
//! - **Geometry**: where every structure and data segment lives, computed
//!   from device sizes and tunables ([`Geometry::compute`]), chosen for a
//!   device ([`Geometry::auto`]), or rebuilt from the disk
//!   ([`Geometry::from_mcb`]).
//! - **Format plan**: every write `format` must do, in a crash-safe order
//!   ([`format_plan`]).
//! - **Checks and repairs**: fsck-style validation of bytes the caller has
//!   read, reading the MCB and the Secondary Device Table through their
//!   backups when a primary is damaged, and the writes that mend what the
//!   surviving copy and the geometry can rebuild ([`check`]).
//!
//! What it is not for: it does no I/O (no files, no devices, no clocks: the
//! caller passes bytes, times and UUIDs in), no locking (`fts-lock`) and no
//! protocol state (`fts-ring`, `fts-session`).
//!
//! ```
//! use fts_layout::{check, format_plan, FormatSpec, Geometry, GeometryParams, LB};
//! use uuid::Uuid;
//!
//! let mut params = GeometryParams::new(64 << 20); // 64 MiB master
//! params.max_connections = 2;
//! params.ring_entries = 32;
//! let geometry = Geometry::compute(&params)?;
//! let spec = FormatSpec {
//!     layout_uuid: Uuid::from_u128(1),
//!     device_uuids: vec![Uuid::from_u128(2)],
//!     time_ns: 0,
//!     paths: vec!["/dev/sdb".into()],
//!     hw_ids: vec![],
//!     lease_timeout_ms: fts_layout::DEFAULT_LEASE_TIMEOUT_MS,
//!     lock_timeout_ms: fts_layout::DEFAULT_LOCK_TIMEOUT_MS,
//!     io_timeout_ms: fts_layout::DEFAULT_IO_TIMEOUT_MS,
//!     heartbeat_ms: fts_layout::DEFAULT_HEARTBEAT_MS,
//!     geometry,
//! };
//! spec.validate()?;
//! // "Write" the plan to an in-memory master (its control area and the
//! // backups at its end), then check it.
//! let mut disk = check::MasterBytes::zeroed(&spec.geometry);
//! for w in format_plan(&spec) {
//!     assert!(disk.write(w.lb, &w.data));
//! }
//! let checked = check::check_image(&disk.image(None))?;
//! assert!(checked.problems.is_empty());
//! assert_eq!(Geometry::from_mcb(&checked.mcb, &checked.sdt)?, spec.geometry);
//!
//! // Zero the Master Control Block: the backup stands in, and the repair
//! // plan rewrites it.
//! disk.write(fts_layout::MCB_LB, &[0u8; LB]);
//! let checked = check::check_image(&disk.image(None))?;
//! assert_eq!(checked.damaged.len(), 1);
//! disk.apply(&check::repair_plan(&disk.image(None), &[])?);
//! assert!(check::check_image(&disk.image(None))?.problems.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
mod error;
mod format;
mod geometry;
mod records;
mod wire;

pub mod check;

pub use codec::{crc32c_record, layout_id_of, validate_name, validate_path, Expect, Stamp};
pub use error::{Error, GeometryError};
pub use format::{format_plan, format_writes, mcb_for_device, FormatSpec, Write, MAX_WRITE_LBS};
pub use geometry::{
    backups_at_end, chunk_of_entry, group_end, AutoGeometry, DeviceExtent, Extent, Geometry,
    GeometryParams, GeometryRequest, MAX_CONNECTIONS, MAX_RING_ENTRIES, MAX_SEG_LBS,
    MIN_RING_ENTRIES,
};
pub use records::{
    CmdArea, DeviceRole, Lease, LockRecord, Mcb, OsType, PidEntry, PtrChunk, PtrEntry, RecordKind,
    Role, SdtEntry, SegHeader, Timeouts, AUTH_ED25519, AUTH_FLAG_ENCRYPT_ASKED, AUTH_FLAG_SEALED,
    AUTH_NONE, AUTH_RESERVED_HMAC, CMD_DATA_MAX, CON_RC_AUTH_FAILED, CON_RC_OK,
    CON_RC_PROTOCOL_VERSION, CON_RC_SERVER_FULL, FLG_CONNECTOR, FLG_INITIATOR, FLG_LAST, FLG_NAK,
    LEASE_ALIVE, LEASE_CLOSED, LEASE_NONE, LOCK_FREE, LOCK_HELD, PRO_FLAG_ALLOCATED, PRO_FLAG_MVS,
    PRO_FLAG_PROCESSING, PRO_FLAG_REFUSED, PRO_FLAG_SERVER, SEAL_AES256GCM, SEAL_NONE,
    SEAL_TAG_SIZE, SEC_FLAG_MASTER,
};

/// Layout block: the unit of every pointer in the format, 4096 bytes.
pub const LB: usize = 4096;
/// Size of every control record in bytes.
pub const RECORD_SIZE: usize = 512;
/// Size of the data-segment header in bytes.
pub const SEG_HDR_SIZE: usize = 64;
/// Size of the common record header in bytes.
pub const HEADER_SIZE: usize = 24;
/// Byte offset of the `crc` field in the common header.
pub const CRC_OFFSET: usize = 12;
/// Pointer-table entries per 512-byte chunk.
pub const ENTRIES_PER_CHUNK: usize = 15;
/// Size of one pointer-table entry in bytes.
pub const PTR_ENTRY_SIZE: usize = 32;
/// Devices in one layout, master included (Secondary Device Table slots).
pub const MAX_DEVICES: usize = 8;
/// The format version every record carries (the patent's `blk5_version`).
pub const FORMAT_VERSION: u16 = 1;
/// The minor format version `format` writes (`blk5_minor_version` in the
/// MCB): 1 = v1.1 added the backups of the MCB and the Secondary Device
/// Table at the end of the master; 2 = v1.2 adds server registrations and
/// the Ed25519 handshake in Process Id Table entries and sealed segments;
/// 3 = v1.3 stripes each ring across all the devices by batch groups (so
/// secondary devices add bandwidth to every connection).
/// Readers read 0 (v1.0) to this.
pub const FORMAT_MINOR: u32 = 3;
/// LBs at the end of a v1.1 master that hold the backups: the backup
/// Secondary Device Table (the last LB but one) and the backup MCB (the
/// last LB).
pub const BACKUP_LBS: u64 = 2;
/// Longest process name (`pro_requestor`, `pro_requestee`, `holder_name`), in bytes.
pub const NAME_MAX: usize = 32;
/// Longest path (`blk5_unix_filename`, `sec_path`), in bytes.
pub const PATH_MAX: usize = 128;
/// Longest hardware id (`sec_hw_id`), in bytes.
pub const HW_ID_MAX: usize = 64;

/// LB zeroed at format ("block 4 zeroed as a precaution").
pub const ZERO_LB: u64 = 4;
/// LB of the Master Control Block ("block 5"), on the master and every secondary.
pub const MCB_LB: u64 = 5;
/// LB of the lock record (`lock_record_ptr`).
pub const LOCK_LB: u64 = 6;
/// LB of the Secondary Device Table (`blk5_secondary_device_table_ptr`).
pub const SDT_LB: u64 = 7;
/// LB of the Process Id Table (`blk5_process_id_table_ptr`).
pub const PIT_LB: u64 = 8;
/// LBs per Process Id Table entry (`pid_entry_lbs`).
pub const PID_ENTRY_LBS: u32 = 3;

/// Default ring size (`blk5_maxptr`), as in the patent's embodiment.
pub const DEFAULT_RING_ENTRIES: u32 = 640;
/// Default data-segment size in bytes.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024;
/// Default `blk5_max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// Default batch (`blk5_ptr_seg_per_process`).
pub const DEFAULT_BATCH: u32 = 8;
/// Default `lease_timeout_ms`.
pub const DEFAULT_LEASE_TIMEOUT_MS: u32 = 10_000;
/// Default `lock_timeout_ms`.
pub const DEFAULT_LOCK_TIMEOUT_MS: u32 = 10_000;
/// Default `io_timeout_ms`.
pub const DEFAULT_IO_TIMEOUT_MS: u32 = 30_000;
/// Default `heartbeat_ms`.
pub const DEFAULT_HEARTBEAT_MS: u32 = 1_000;
