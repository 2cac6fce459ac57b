//! The records: plain Rust structs and their codecs.

use core::fmt;

use uuid::Uuid;
use zerocopy::little_endian::{I32, U16, U32, U64};
use zerocopy::FromZeros;

use crate::codec::{get_str, header, layout_id_of, open, put_str, read, seal, Expect, Stamp};
use crate::error::Error;
use crate::wire;
use crate::{
    DEFAULT_HEARTBEAT_MS, DEFAULT_IO_TIMEOUT_MS, DEFAULT_LEASE_TIMEOUT_MS, DEFAULT_LOCK_TIMEOUT_MS,
    ENTRIES_PER_CHUNK, FORMAT_MINOR, MAX_DEVICES, RECORD_SIZE, SEG_HDR_SIZE,
};

/// The kinds of record, each with its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// `FMCB`: Master Control Block (and its secondary copies), LB 5.
    Mcb,
    /// `FLCK`: lock record, LB 6.
    Lock,
    /// `FSDT`: Secondary Device Table entry, LB 7.
    Sdt,
    /// `FPID`: Process Id Table entry.
    Pid,
    /// `FLSE`: lease (heartbeat) record.
    Lease,
    /// `FCMD`: command area (`pro_dtd` / `InitM`).
    Cmd,
    /// `FPTR`: Process Segment Pointer Table chunk.
    PtrChunk,
    /// `FSEG`: data-segment header.
    SegHdr,
}

impl RecordKind {
    /// Every kind, in FORMAT.md order.
    pub const ALL: [RecordKind; 8] = [
        RecordKind::Mcb,
        RecordKind::Lock,
        RecordKind::Sdt,
        RecordKind::Pid,
        RecordKind::Lease,
        RecordKind::Cmd,
        RecordKind::PtrChunk,
        RecordKind::SegHdr,
    ];

    /// The four ASCII bytes at offset 0.
    pub fn magic(self) -> [u8; 4] {
        *match self {
            RecordKind::Mcb => b"FMCB",
            RecordKind::Lock => b"FLCK",
            RecordKind::Sdt => b"FSDT",
            RecordKind::Pid => b"FPID",
            RecordKind::Lease => b"FLSE",
            RecordKind::Cmd => b"FCMD",
            RecordKind::PtrChunk => b"FPTR",
            RecordKind::SegHdr => b"FSEG",
        }
    }

    /// The record size in bytes (`rec_size`).
    pub fn size(self) -> usize {
        match self {
            RecordKind::SegHdr => SEG_HDR_SIZE,
            _ => RECORD_SIZE,
        }
    }

    pub(crate) fn size_u16(self) -> u16 {
        match self {
            RecordKind::SegHdr => 64,
            _ => 512,
        }
    }

    /// The human name of record `index` of this kind, e.g.
    /// "Process Id Table entry 3" (the MCB and lock record have no number).
    pub fn at(self, index: u32) -> String {
        match self {
            RecordKind::Mcb | RecordKind::Lock => self.to_string(),
            _ => format!("{self} {index}"),
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::Mcb => "Master Control Block",
            RecordKind::Lock => "lock record",
            RecordKind::Sdt => "Secondary Device Table entry",
            RecordKind::Pid => "Process Id Table entry",
            RecordKind::Lease => "lease",
            RecordKind::Cmd => "command area",
            RecordKind::PtrChunk => "pointer-table chunk",
            RecordKind::SegHdr => "segment header",
        })
    }
}

fn bad(kind: RecordKind, field: &'static str, reason: impl Into<String>) -> Error {
    Error::BadField {
        kind,
        field,
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------
// Master Control Block

/// `blk5_id`: whether this copy of the MCB is on the master or a secondary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceRole {
    /// `"MAS FTS\0"`: the master device.
    Master,
    /// `"SEC FTS\0"`: a secondary device's copy.
    Secondary,
}

impl DeviceRole {
    /// The 8 bytes of `blk5_id`.
    pub fn blk5_id(self) -> [u8; 8] {
        *match self {
            DeviceRole::Master => b"MAS FTS\0",
            DeviceRole::Secondary => b"SEC FTS\0",
        }
    }

    fn from_blk5_id(id: &[u8; 8]) -> Option<DeviceRole> {
        [DeviceRole::Master, DeviceRole::Secondary]
            .into_iter()
            .find(|r| r.blk5_id() == *id)
    }
}

impl fmt::Display for DeviceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceRole::Master => "master",
            DeviceRole::Secondary => "secondary",
        })
    }
}

/// The timeouts every host takes from the MCB (so all derive the same
/// deadlines); callers compare them with their own configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// `lease_timeout_ms`: a peer whose lease counter makes no progress this long is dead.
    pub lease_ms: u32,
    /// `lock_timeout_ms`: a lock holder whose lock record makes no progress this long is dead.
    pub lock_ms: u32,
    /// `io_timeout_ms`: per-I/O timeout every host uses.
    pub io_ms: u32,
    /// `heartbeat_ms`: how often a live peer advances its lease counter.
    pub heartbeat_ms: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            lease_ms: DEFAULT_LEASE_TIMEOUT_MS,
            lock_ms: DEFAULT_LOCK_TIMEOUT_MS,
            io_ms: DEFAULT_IO_TIMEOUT_MS,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
        }
    }
}

/// Master Control Block (`FMCB`, LB 5; the patent's Fig. 4): where every other
/// structure lives. The header's `index` is 0 and its `layout_id` is that of
/// `blk5_layout_uuid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mcb {
    /// `blk5_id`: block identifier, "MAS FTS" on the master device, "SEC FTS" on copies on secondary devices.
    pub blk5_id: DeviceRole,
    /// `blk5_layout_uuid` (fts): identity of this layout (one `format` run).
    pub blk5_layout_uuid: Uuid,
    /// `blk5_device_uuid` (fts): identity of the device this copy is on.
    pub blk5_device_uuid: Uuid,
    /// `blk5_dev_id`: entry number of this device in the Secondary Device Table (1-based; master = 1).
    pub blk5_dev_id: u32,
    /// `blk5_seg_size`: size of transfer segment in blocks (LBs).
    pub blk5_seg_size: u32,
    /// `blk5_time_id`: creation time of the master control block (ns since the Unix epoch).
    pub blk5_time_id: u64,
    /// `blk5_tot_seg_num`: total number of transfer segments on all devices.
    pub blk5_tot_seg_num: u32,
    /// `blk5_max_connections`: maximum number of connections allowed (Process Id Table entries).
    pub blk5_max_connections: u32,
    /// `blk5_process_id_table_ptr`: pointer to start of process id table structure (LB 8).
    pub blk5_process_id_table_ptr: u64,
    /// `blk5_secondary_device_table_ptr`: pointer to start of the Secondary Device Table (LB 7).
    pub blk5_secondary_device_table_ptr: u64,
    /// `blk5_secondary_device_entrynum`: number of entries in the Secondary Device Table (devices, master included).
    pub blk5_secondary_device_entrynum: u32,
    /// `blk5_ptr_seg_per_process`: number of segments per process; fts: the batch a side writes or reads per pointer-table write.
    pub blk5_ptr_seg_per_process: u32,
    /// `blk5_start_process_segment_ptr`: pointer to process segment pointer table structures (LB).
    pub blk5_start_process_segment_ptr: u64,
    /// `blk5_mast_sec_start_segment_ptr`: pointer to start of data segments on the master (LB).
    pub blk5_mast_sec_start_segment_ptr: u64,
    /// `blk5_maxptr`: maximum number of segments per process; fts: entries per pointer table (ring size).
    pub blk5_maxptr: u32,
    /// `lock_timeout_ms` (fts): a lock holder whose lock record makes no progress this long is dead.
    pub lock_timeout_ms: u32,
    /// `lock_record_ptr` (fts): LB of the lock record (6).
    pub lock_record_ptr: u64,
    /// `lease_timeout_ms` (fts): a peer whose lease counter makes no progress this long is dead.
    pub lease_timeout_ms: u32,
    /// `io_timeout_ms` (fts): per-I/O timeout every host uses.
    pub io_timeout_ms: u32,
    /// `heartbeat_ms` (fts): how often a live peer advances its lease counter.
    pub heartbeat_ms: u32,
    /// `format_block_size` (fts): logical block size of the master at format time.
    pub format_block_size: u32,
    /// `device_bytes` (fts): size of this device at format time.
    pub device_bytes: u64,
    /// `pid_entry_lbs` (fts): LBs per Process Id Table entry (3).
    pub pid_entry_lbs: u32,
    /// `ptr_table_lbs` (fts): LBs per pointer table.
    pub ptr_table_lbs: u32,
    /// `blk5_unix_filename`: UNIX file name of master device (at format time, at most 128 bytes).
    pub blk5_unix_filename: String,
    /// `device_uuids` (fts): `blk5_device_uuid` of Secondary Device Table entries 1.. (length = `blk5_secondary_device_entrynum`).
    pub device_uuids: Vec<Uuid>,
    /// `blk5_minor_version` (fts): minor format version, 0 (v1.0: no
    /// backups) or 1 (v1.1: backups of the MCB and SDT at the end of the
    /// master). Readers refuse a minor version newer than
    /// [`crate::FORMAT_MINOR`].
    pub blk5_minor_version: u32,
    /// `sdt_backup_ptr` (fts, v1.1): LB of the backup Secondary Device Table
    /// on the master (the last LB but one); 0 in v1.0.
    pub sdt_backup_ptr: u64,
    /// `mcb_backup_ptr` (fts, v1.1): LB of the backup Master Control Block
    /// on the master (its last LB); 0 in v1.0.
    pub mcb_backup_ptr: u64,
}

impl Mcb {
    /// The 512-byte record (stamp: this MCB's layout id, index 0). At most
    /// [`MAX_DEVICES`] device uuids are written.
    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut w = wire::Mcb::new_zeroed();
        w.hdr = header(RecordKind::Mcb, Stamp::new(self.layout_id(), 0));
        w.blk5_id = self.blk5_id.blk5_id();
        w.blk5_layout_uuid = self.blk5_layout_uuid.into_bytes();
        w.blk5_device_uuid = self.blk5_device_uuid.into_bytes();
        w.blk5_dev_id = U32::new(self.blk5_dev_id);
        w.blk5_seg_size = U32::new(self.blk5_seg_size);
        w.blk5_time_id = U64::new(self.blk5_time_id);
        w.blk5_tot_seg_num = U32::new(self.blk5_tot_seg_num);
        w.blk5_max_connections = U32::new(self.blk5_max_connections);
        w.blk5_process_id_table_ptr = U64::new(self.blk5_process_id_table_ptr);
        w.blk5_secondary_device_table_ptr = U64::new(self.blk5_secondary_device_table_ptr);
        w.blk5_secondary_device_entrynum = U32::new(self.blk5_secondary_device_entrynum);
        w.blk5_ptr_seg_per_process = U32::new(self.blk5_ptr_seg_per_process);
        w.blk5_start_process_segment_ptr = U64::new(self.blk5_start_process_segment_ptr);
        w.blk5_mast_sec_start_segment_ptr = U64::new(self.blk5_mast_sec_start_segment_ptr);
        w.blk5_maxptr = U32::new(self.blk5_maxptr);
        w.lock_timeout_ms = U32::new(self.lock_timeout_ms);
        w.lock_record_ptr = U64::new(self.lock_record_ptr);
        w.lease_timeout_ms = U32::new(self.lease_timeout_ms);
        w.io_timeout_ms = U32::new(self.io_timeout_ms);
        w.heartbeat_ms = U32::new(self.heartbeat_ms);
        w.format_block_size = U32::new(self.format_block_size);
        w.device_bytes = U64::new(self.device_bytes);
        w.pid_entry_lbs = U32::new(self.pid_entry_lbs);
        w.ptr_table_lbs = U32::new(self.ptr_table_lbs);
        w.blk5_unix_filename = put_str(&self.blk5_unix_filename);
        for (slot, u) in w.device_uuids.iter_mut().zip(&self.device_uuids) {
            *slot = u.into_bytes();
        }
        w.blk5_minor_version = U32::new(self.blk5_minor_version);
        w.sdt_backup_ptr = U64::new(self.sdt_backup_ptr);
        w.mcb_backup_ptr = U64::new(self.mcb_backup_ptr);
        seal(zerocopy::transmute!(w))
    }

    /// Decodes and checks an MCB (master or secondary copy) from the first
    /// 512 bytes of `buf`. Besides the common header it checks its own
    /// consistency: header `layout_id` = that of `blk5_layout_uuid`, index
    /// 0, a known `blk5_id`, `blk5_secondary_device_entrynum` in 1..=8,
    /// `blk5_dev_id` within it, unused `device_uuids` slots zero, and a
    /// `blk5_minor_version` no newer than [`crate::FORMAT_MINOR`].
    pub fn decode(buf: &[u8]) -> Result<Mcb, Error> {
        const K: RecordKind = RecordKind::Mcb;
        let (rec, hdr) = open(
            buf,
            K,
            Expect {
                layout_id: None,
                index: Some(0),
            },
        )?;
        let w: wire::Mcb = read(rec, K)?;
        let blk5_layout_uuid = Uuid::from_bytes(w.blk5_layout_uuid);
        let expected = layout_id_of(&blk5_layout_uuid);
        if hdr.layout_id.get() != expected {
            return Err(Error::ForeignLayout {
                kind: K,
                found: hdr.layout_id.get(),
                expected,
            });
        }
        let blk5_id = DeviceRole::from_blk5_id(&w.blk5_id).ok_or_else(|| {
            bad(
                K,
                "blk5_id",
                format!("{:02x?} is neither \"MAS FTS\" nor \"SEC FTS\"", w.blk5_id),
            )
        })?;
        let entrynum = w.blk5_secondary_device_entrynum.get();
        let n = usize::try_from(entrynum).unwrap_or(usize::MAX);
        if !(1..=MAX_DEVICES).contains(&n) {
            return Err(bad(
                K,
                "blk5_secondary_device_entrynum",
                format!("{entrynum} is not in 1..=8"),
            ));
        }
        let dev_id = w.blk5_dev_id.get();
        if dev_id == 0 || dev_id > entrynum {
            return Err(bad(
                K,
                "blk5_dev_id",
                format!("{dev_id} is not in 1..={entrynum}"),
            ));
        }
        let minor = w.blk5_minor_version.get();
        if minor > FORMAT_MINOR {
            return Err(bad(
                K,
                "blk5_minor_version",
                format!(
                    "format v1.{minor} is newer than this fts reads (v1.0 to v1.{FORMAT_MINOR}); use a newer fts"
                ),
            ));
        }
        if w.device_uuids[n..]
            .iter()
            .any(|u| u.iter().any(|&b| b != 0))
        {
            return Err(bad(
                K,
                "device_uuids",
                format!("slots past blk5_secondary_device_entrynum ({entrynum}) are not zero"),
            ));
        }
        Ok(Mcb {
            blk5_id,
            blk5_layout_uuid,
            blk5_device_uuid: Uuid::from_bytes(w.blk5_device_uuid),
            blk5_dev_id: dev_id,
            blk5_seg_size: w.blk5_seg_size.get(),
            blk5_time_id: w.blk5_time_id.get(),
            blk5_tot_seg_num: w.blk5_tot_seg_num.get(),
            blk5_max_connections: w.blk5_max_connections.get(),
            blk5_process_id_table_ptr: w.blk5_process_id_table_ptr.get(),
            blk5_secondary_device_table_ptr: w.blk5_secondary_device_table_ptr.get(),
            blk5_secondary_device_entrynum: entrynum,
            blk5_ptr_seg_per_process: w.blk5_ptr_seg_per_process.get(),
            blk5_start_process_segment_ptr: w.blk5_start_process_segment_ptr.get(),
            blk5_mast_sec_start_segment_ptr: w.blk5_mast_sec_start_segment_ptr.get(),
            blk5_maxptr: w.blk5_maxptr.get(),
            lock_timeout_ms: w.lock_timeout_ms.get(),
            lock_record_ptr: w.lock_record_ptr.get(),
            lease_timeout_ms: w.lease_timeout_ms.get(),
            io_timeout_ms: w.io_timeout_ms.get(),
            heartbeat_ms: w.heartbeat_ms.get(),
            format_block_size: w.format_block_size.get(),
            device_bytes: w.device_bytes.get(),
            pid_entry_lbs: w.pid_entry_lbs.get(),
            ptr_table_lbs: w.ptr_table_lbs.get(),
            blk5_unix_filename: get_str(&w.blk5_unix_filename, K, "blk5_unix_filename")?,
            device_uuids: w.device_uuids[..n]
                .iter()
                .map(|b| Uuid::from_bytes(*b))
                .collect(),
            blk5_minor_version: minor,
            sdt_backup_ptr: w.sdt_backup_ptr.get(),
            mcb_backup_ptr: w.mcb_backup_ptr.get(),
        })
    }

    /// The layout id every record of this layout carries.
    pub fn layout_id(&self) -> u64 {
        layout_id_of(&self.blk5_layout_uuid)
    }

    /// The timeouts recorded at format.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            lease_ms: self.lease_timeout_ms,
            lock_ms: self.lock_timeout_ms,
            io_ms: self.io_timeout_ms,
            heartbeat_ms: self.heartbeat_ms,
        }
    }

    /// The stamp of record `index` of this layout.
    pub fn stamp_record(&self, index: u32) -> Stamp {
        Stamp::new(self.layout_id(), index)
    }

    /// The expectation for record `index` of this layout.
    pub fn expect_record(&self, index: u32) -> Expect {
        Expect::exact(self.layout_id(), index)
    }
}

// ---------------------------------------------------------------------------
// Lock record

/// `state` of a [`LockRecord`]: free.
pub const LOCK_FREE: u32 = 0;
/// `state` of a [`LockRecord`]: held.
pub const LOCK_HELD: u32 = 1;

/// Lock record (`FLCK`, LB 6) (fts), used by the SCSI lock backends of
/// `fts-lock`. Its `index` is 0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockRecord {
    /// `state`: [`LOCK_FREE`] or [`LOCK_HELD`].
    pub state: u32,
    /// `generation`: incremented by every acquisition.
    pub generation: u64,
    /// `counter`: advanced by the holder while it holds.
    pub counter: u64,
    /// `timestamp`: holder's clock (informational, ns).
    pub timestamp: u64,
    /// `holder_host`: host id of the holder.
    pub holder_host: Uuid,
    /// `holder_name`: fts `--name` of the holder (at most 32 bytes).
    pub holder_name: String,
    /// `holder_key`: the holder's PR key (0 if none).
    pub holder_key: u64,
    /// `holder_pid`: the holder's process id.
    pub holder_pid: u32,
}

impl LockRecord {
    /// The 512-byte record.
    pub fn encode(&self, stamp: Stamp) -> [u8; RECORD_SIZE] {
        let mut w = wire::Lock::new_zeroed();
        w.hdr = header(RecordKind::Lock, stamp);
        w.state = U32::new(self.state);
        w.generation = U64::new(self.generation);
        w.counter = U64::new(self.counter);
        w.timestamp = U64::new(self.timestamp);
        w.holder_host = self.holder_host.into_bytes();
        w.holder_name = put_str(&self.holder_name);
        w.holder_key = U64::new(self.holder_key);
        w.holder_pid = U32::new(self.holder_pid);
        seal(zerocopy::transmute!(w))
    }

    /// Decodes and checks a lock record from the first 512 bytes of `buf`.
    pub fn decode(buf: &[u8], expect: Expect) -> Result<LockRecord, Error> {
        const K: RecordKind = RecordKind::Lock;
        let (rec, _) = open(buf, K, expect)?;
        let w: wire::Lock = read(rec, K)?;
        let state = w.state.get();
        if state > LOCK_HELD {
            return Err(bad(
                K,
                "state",
                format!("{state} is neither 0 (free) nor 1 (held)"),
            ));
        }
        Ok(LockRecord {
            state,
            generation: w.generation.get(),
            counter: w.counter.get(),
            timestamp: w.timestamp.get(),
            holder_host: Uuid::from_bytes(w.holder_host),
            holder_name: get_str(&w.holder_name, K, "holder_name")?,
            holder_key: w.holder_key.get(),
            holder_pid: w.holder_pid.get(),
        })
    }
}

// ---------------------------------------------------------------------------
// Secondary Device Table

/// `sec_flags` bit 0: this entry is the master.
pub const SEC_FLAG_MASTER: u32 = 0x01;

/// Secondary Device Table entry (`FSDT`, LB 7; Fig. 6). Slot `i` (0-based)
/// holds entry `i+1`, `index` = `i+1`; entry 1 is the master.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdtEntry {
    /// `sec_dev_id`: device id (= that device's `blk5_device_uuid`).
    pub sec_dev_id: Uuid,
    /// `sec_str_seg_ptr`: pointer to start of data segments for the device (LB).
    pub sec_str_seg_ptr: u64,
    /// `sec_seg_number_for_device`: number of data segments on the device.
    pub sec_seg_number_for_device: u32,
    /// `sec_start_segment_number`: segment number of first segment on device (master: 1).
    pub sec_start_segment_number: u32,
    /// `device_bytes` (fts): size of that device at format.
    pub device_bytes: u64,
    /// `sec_flags` (fts): [`SEC_FLAG_MASTER`].
    pub sec_flags: u32,
    /// `sec_hw_id` (fts): hardware identity seen at format (informational, at most 64 bytes).
    pub sec_hw_id: String,
    /// `sec_path` (fts): path at format (informational, at most 128 bytes).
    pub sec_path: String,
}

impl SdtEntry {
    /// The 512-byte record.
    pub fn encode(&self, stamp: Stamp) -> [u8; RECORD_SIZE] {
        let mut w = wire::Sdt::new_zeroed();
        w.hdr = header(RecordKind::Sdt, stamp);
        w.sec_dev_id = self.sec_dev_id.into_bytes();
        w.sec_str_seg_ptr = U64::new(self.sec_str_seg_ptr);
        w.sec_seg_number_for_device = U32::new(self.sec_seg_number_for_device);
        w.sec_start_segment_number = U32::new(self.sec_start_segment_number);
        w.device_bytes = U64::new(self.device_bytes);
        w.sec_flags = U32::new(self.sec_flags);
        w.sec_hw_id = put_str(&self.sec_hw_id);
        w.sec_path = put_str(&self.sec_path);
        seal(zerocopy::transmute!(w))
    }

    /// Decodes and checks an SDT entry from the first 512 bytes of `buf`.
    pub fn decode(buf: &[u8], expect: Expect) -> Result<SdtEntry, Error> {
        const K: RecordKind = RecordKind::Sdt;
        let (rec, _) = open(buf, K, expect)?;
        let w: wire::Sdt = read(rec, K)?;
        let sec_flags = w.sec_flags.get();
        if sec_flags & !SEC_FLAG_MASTER != 0 {
            return Err(bad(
                K,
                "sec_flags",
                format!("unknown bits in {sec_flags:#x}"),
            ));
        }
        Ok(SdtEntry {
            sec_dev_id: Uuid::from_bytes(w.sec_dev_id),
            sec_str_seg_ptr: w.sec_str_seg_ptr.get(),
            sec_seg_number_for_device: w.sec_seg_number_for_device.get(),
            sec_start_segment_number: w.sec_start_segment_number.get(),
            device_bytes: w.device_bytes.get(),
            sec_flags,
            sec_hw_id: get_str(&w.sec_hw_id, K, "sec_hw_id")?,
            sec_path: get_str(&w.sec_path, K, "sec_path")?,
        })
    }

    /// Whether `sec_flags` marks the master.
    pub fn is_master(&self) -> bool {
        self.sec_flags & SEC_FLAG_MASTER != 0
    }
}

// ---------------------------------------------------------------------------
// Process Id Table

/// `pro_flag_process`: the entry is allocated (claimed by an initiator).
pub const PRO_FLAG_ALLOCATED: u32 = 0x01;
/// `pro_flag_process`: the connector accepted: the connection is established.
pub const PRO_FLAG_PROCESSING: u32 = 0x02;
/// `pro_flag_process`: the requestor runs MVS.
pub const PRO_FLAG_MVS: u32 = 0x04;
/// `pro_flag_process` (fts): the connector refused; reason in `pro_con_rc`.
pub const PRO_FLAG_REFUSED: u32 = 0x08;
/// `pro_flag_process` (fts, v1.2): the entry is a server's registration of
/// its name, not a connection (written with `ALLOCATED | PROCESSING`, so
/// that no connector ever takes it for a pending request).
pub const PRO_FLAG_SERVER: u32 = 0x10;
const PRO_FLAGS_KNOWN: u32 =
    PRO_FLAG_ALLOCATED | PRO_FLAG_PROCESSING | PRO_FLAG_MVS | PRO_FLAG_REFUSED | PRO_FLAG_SERVER;

/// `pro_con_rc`: ok.
pub const CON_RC_OK: i32 = 0;
/// `pro_con_rc`: refused, authentication failed.
pub const CON_RC_AUTH_FAILED: i32 = 1;
/// `pro_con_rc`: refused, server full.
pub const CON_RC_SERVER_FULL: i32 = 2;
/// `pro_con_rc`: refused, protocol version.
pub const CON_RC_PROTOCOL_VERSION: i32 = 3;

/// `pro_auth_alg`: no authentication.
pub const AUTH_NONE: u32 = 0;
/// `pro_auth_alg` value 1 was HMAC-SHA-256 over a shared secret in the
/// v1.1 description; no fts ever wrote it, and readers refuse it.
pub const AUTH_RESERVED_HMAC: u32 = 1;
/// `pro_auth_alg` (v1.2): Ed25519 signatures by both sides over the
/// handshake transcript, X25519 ephemeral key agreement (docs/FORMAT.md,
/// "Authentication").
pub const AUTH_ED25519: u32 = 2;

/// `pro_auth_flags`: the initiator asks for sealed (encrypted) segments.
pub const AUTH_FLAG_ENCRYPT_ASKED: u32 = 0x1;
/// `pro_auth_flags`: the connector's decision: segments are sealed.
pub const AUTH_FLAG_SEALED: u32 = 0x2;
const AUTH_FLAGS_KNOWN: u32 = AUTH_FLAG_ENCRYPT_ASKED | AUTH_FLAG_SEALED;

/// OS type (`pro_requestor_type`, `pro_requestee_type`): the patent's `PRO_TYPE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum OsType {
    /// `PRO_TYPE_UNKNOWN`.
    #[default]
    Unknown = 0,
    /// `PRO_TYPE_UNIX`.
    Unix = 1,
    /// `PRO_TYPE_TEXT`.
    Text = 2,
    /// `PRO_TYPE_NT`.
    Nt = 3,
    /// `PRO_TYPE_TPF`.
    Tpf = 4,
    /// `PRO_TYPE_MVS`.
    Mvs = 5,
}

impl OsType {
    /// The on-disk code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The type with on-disk code `code`, if known.
    pub fn from_code(code: u32) -> Option<OsType> {
        Some(match code {
            0 => OsType::Unknown,
            1 => OsType::Unix,
            2 => OsType::Text,
            3 => OsType::Nt,
            4 => OsType::Tpf,
            5 => OsType::Mvs,
            _ => return None,
        })
    }
}

impl fmt::Display for OsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OsType::Unknown => "PRO_TYPE_UNKNOWN",
            OsType::Unix => "PRO_TYPE_UNIX",
            OsType::Text => "PRO_TYPE_TEXT",
            OsType::Nt => "PRO_TYPE_NT",
            OsType::Tpf => "PRO_TYPE_TPF",
            OsType::Mvs => "PRO_TYPE_MVS",
        })
    }
}

/// Process Id Table entry record (`FPID`; Fig. 5), at byte 0 of the first
/// LB of entry `s`; `index` = `s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidEntry {
    /// `pro_process_id`: process (connection) id = slot number `s` (1-based).
    pub pro_process_id: u32,
    /// `pro_flag_process`: process flag field, `PRO_FLAG_*`.
    pub pro_flag_process: u32,
    /// `pro_con_rc`: status code between the two sides (`CON_RC_*`).
    pub pro_con_rc: i32,
    /// `pro_requestor_type`: OS type of requestor (initiator).
    pub pro_requestor_type: OsType,
    /// `pro_requestee_type`: OS type of requestee (connector).
    pub pro_requestee_type: OsType,
    /// `pro_auth_alg` (fts): [`AUTH_NONE`] or [`AUTH_ED25519`].
    pub pro_auth_alg: u32,
    /// `pro_generation` (fts): incarnation of this slot, incremented by every claim.
    pub pro_generation: u64,
    /// `pro_alloc_time` (fts): initiator's clock at claim (informational, ns).
    pub pro_alloc_time: u64,
    /// `pro_accept_time` (fts): connector's clock at accept (informational, ns).
    pub pro_accept_time: u64,
    /// `pro_requestor`: name of requestor (initiator) process (1-32 bytes when allocated).
    pub pro_requestor: String,
    /// `pro_requestee`: name of requestee (connector) process (1-32 bytes when allocated).
    pub pro_requestee: String,
    /// `pro_requestor_host` (fts): initiator's host id.
    pub pro_requestor_host: Uuid,
    /// `pro_requestee_host` (fts): connector's host id.
    pub pro_requestee_host: Uuid,
    /// `pro_auth_nonce` (fts): random, chosen by the initiator at claim.
    pub pro_auth_nonce: [u8; 16],
    /// `pro_requestor_key` (fts, v1.2): the initiator's Ed25519 public key
    /// (replaces the patent's cleartext `pro_requestor_password`).
    pub pro_requestor_key: [u8; 32],
    /// `pro_requestor_kx` (fts, v1.2): the initiator's ephemeral X25519 public key.
    pub pro_requestor_kx: [u8; 32],
    /// `pro_requestee_nonce` (fts, v1.2): random, chosen by the connector at accept.
    pub pro_requestee_nonce: [u8; 16],
    /// `pro_requestee_key` (fts, v1.2): the connector's Ed25519 public key.
    pub pro_requestee_key: [u8; 32],
    /// `pro_requestee_kx` (fts, v1.2): the connector's ephemeral X25519 public key.
    pub pro_requestee_kx: [u8; 32],
    /// `pro_requestee_sig` (fts, v1.2): the connector's Ed25519 signature
    /// of the handshake transcript.
    pub pro_requestee_sig: [u8; 64],
    /// `pro_auth_flags` (fts, v1.2): `AUTH_FLAG_*`.
    pub pro_auth_flags: u32,
}

impl Default for PidEntry {
    fn default() -> PidEntry {
        PidEntry {
            pro_process_id: 0,
            pro_flag_process: 0,
            pro_con_rc: 0,
            pro_requestor_type: OsType::Unknown,
            pro_requestee_type: OsType::Unknown,
            pro_auth_alg: AUTH_NONE,
            pro_generation: 0,
            pro_alloc_time: 0,
            pro_accept_time: 0,
            pro_requestor: String::new(),
            pro_requestee: String::new(),
            pro_requestor_host: Uuid::nil(),
            pro_requestee_host: Uuid::nil(),
            pro_auth_nonce: [0; 16],
            pro_requestor_key: [0; 32],
            pro_requestor_kx: [0; 32],
            pro_requestee_nonce: [0; 16],
            pro_requestee_key: [0; 32],
            pro_requestee_kx: [0; 32],
            pro_requestee_sig: [0; 64],
            pro_auth_flags: 0,
        }
    }
}

impl PidEntry {
    /// A free entry for slot `slot` (as `format` writes it).
    pub fn free(slot: u32) -> PidEntry {
        PidEntry {
            pro_process_id: slot,
            ..PidEntry::default()
        }
    }

    /// `PRO_FLAG_ALLOCATED` is set.
    pub fn is_allocated(&self) -> bool {
        self.pro_flag_process & PRO_FLAG_ALLOCATED != 0
    }

    /// `PRO_FLAG_PROCESSING` is set.
    pub fn is_processing(&self) -> bool {
        self.pro_flag_process & PRO_FLAG_PROCESSING != 0
    }

    /// `PRO_FLAG_MVS` is set.
    pub fn is_mvs(&self) -> bool {
        self.pro_flag_process & PRO_FLAG_MVS != 0
    }

    /// `PRO_FLAG_REFUSED` is set.
    pub fn is_refused(&self) -> bool {
        self.pro_flag_process & PRO_FLAG_REFUSED != 0
    }

    /// `PRO_FLAG_SERVER` is set: a server's registration, not a connection.
    pub fn is_server(&self) -> bool {
        self.pro_flag_process & PRO_FLAG_SERVER != 0
    }

    /// Free: no flag set.
    pub fn is_free(&self) -> bool {
        self.pro_flag_process == 0
    }

    /// The 512-byte record.
    pub fn encode(&self, stamp: Stamp) -> [u8; RECORD_SIZE] {
        let mut w = wire::Pid::new_zeroed();
        w.hdr = header(RecordKind::Pid, stamp);
        w.pro_process_id = U32::new(self.pro_process_id);
        w.pro_flag_process = U32::new(self.pro_flag_process);
        w.pro_con_rc = I32::new(self.pro_con_rc);
        w.pro_requestor_type = U32::new(self.pro_requestor_type.code());
        w.pro_requestee_type = U32::new(self.pro_requestee_type.code());
        w.pro_auth_alg = U32::new(self.pro_auth_alg);
        w.pro_generation = U64::new(self.pro_generation);
        w.pro_alloc_time = U64::new(self.pro_alloc_time);
        w.pro_accept_time = U64::new(self.pro_accept_time);
        w.pro_requestor = put_str(&self.pro_requestor);
        w.pro_requestee = put_str(&self.pro_requestee);
        w.pro_requestor_host = self.pro_requestor_host.into_bytes();
        w.pro_requestee_host = self.pro_requestee_host.into_bytes();
        w.pro_auth_nonce = self.pro_auth_nonce;
        w.pro_requestor_key = self.pro_requestor_key;
        w.pro_requestor_kx = self.pro_requestor_kx;
        w.pro_requestee_nonce = self.pro_requestee_nonce;
        w.pro_requestee_key = self.pro_requestee_key;
        w.pro_requestee_kx = self.pro_requestee_kx;
        w.pro_requestee_sig = self.pro_requestee_sig;
        w.pro_auth_flags = U32::new(self.pro_auth_flags);
        seal(zerocopy::transmute!(w))
    }

    /// Decodes and checks a Process Id Table entry from the first 512 bytes
    /// of `buf`. An all-zero record is [`Error::Empty`], which FORMAT.md
    /// allows as a free entry.
    pub fn decode(buf: &[u8], expect: Expect) -> Result<PidEntry, Error> {
        const K: RecordKind = RecordKind::Pid;
        let (rec, _) = open(buf, K, expect)?;
        let w: wire::Pid = read(rec, K)?;
        let flags = w.pro_flag_process.get();
        if flags & !PRO_FLAGS_KNOWN != 0 {
            return Err(bad(
                K,
                "pro_flag_process",
                format!("unknown bits in {flags:#x}"),
            ));
        }
        let os = |v: U32, field: &'static str| {
            OsType::from_code(v.get())
                .ok_or_else(|| bad(K, field, format!("unknown OS type {}", v.get())))
        };
        let alg = w.pro_auth_alg.get();
        if alg != AUTH_NONE && alg != AUTH_ED25519 {
            return Err(bad(K, "pro_auth_alg", format!("unknown algorithm {alg}")));
        }
        let auth_flags = w.pro_auth_flags.get();
        if auth_flags & !AUTH_FLAGS_KNOWN != 0 {
            return Err(bad(
                K,
                "pro_auth_flags",
                format!("unknown bits in {auth_flags:#x}"),
            ));
        }
        Ok(PidEntry {
            pro_process_id: w.pro_process_id.get(),
            pro_flag_process: flags,
            pro_con_rc: w.pro_con_rc.get(),
            pro_requestor_type: os(w.pro_requestor_type, "pro_requestor_type")?,
            pro_requestee_type: os(w.pro_requestee_type, "pro_requestee_type")?,
            pro_auth_alg: alg,
            pro_generation: w.pro_generation.get(),
            pro_alloc_time: w.pro_alloc_time.get(),
            pro_accept_time: w.pro_accept_time.get(),
            pro_requestor: get_str(&w.pro_requestor, K, "pro_requestor")?,
            pro_requestee: get_str(&w.pro_requestee, K, "pro_requestee")?,
            pro_requestor_host: Uuid::from_bytes(w.pro_requestor_host),
            pro_requestee_host: Uuid::from_bytes(w.pro_requestee_host),
            pro_auth_nonce: w.pro_auth_nonce,
            pro_requestor_key: w.pro_requestor_key,
            pro_requestor_kx: w.pro_requestor_kx,
            pro_requestee_nonce: w.pro_requestee_nonce,
            pro_requestee_key: w.pro_requestee_key,
            pro_requestee_kx: w.pro_requestee_kx,
            pro_requestee_sig: w.pro_requestee_sig,
            pro_auth_flags: auth_flags,
        })
    }
}

// ---------------------------------------------------------------------------
// Leases

/// Pointer-table flag: written by the connector.
pub const FLG_CONNECTOR: u8 = 0x80;
/// Pointer-table flag: written by the initiator.
pub const FLG_INITIATOR: u8 = 0x40;
/// Pointer-table flag: last segment of a message ("last message").
pub const FLG_LAST: u8 = 0x20;
/// Pointer-table flag, in `ack_flg`: the segment `ack_seq` failed verification.
pub const FLG_NAK: u8 = 0x10;

/// The side of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Role {
    /// The initiator (requestor), which claims the Process Id Table entry.
    Initiator = 1,
    /// The connector (requestee), which accepts.
    Connector = 2,
}

impl Role {
    /// Both roles, initiator first (the order of [`Role::dir`]).
    pub const BOTH: [Role; 2] = [Role::Initiator, Role::Connector];

    /// The flag a side marks what it writes with.
    pub fn flag(self) -> u8 {
        match self {
            Role::Initiator => FLG_INITIATOR,
            Role::Connector => FLG_CONNECTOR,
        }
    }

    /// `d` of FORMAT.md: 0 for the initiator-owned (initiator-to-connector)
    /// table, 1 for the connector-owned one.
    pub fn dir(self) -> usize {
        match self {
            Role::Initiator => 0,
            Role::Connector => 1,
        }
    }

    /// The other side.
    pub fn peer(self) -> Role {
        match self {
            Role::Initiator => Role::Connector,
            Role::Connector => Role::Initiator,
        }
    }

    /// The on-disk code (lease `role`).
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The role with on-disk code `code`, if known.
    pub fn from_code(code: u32) -> Option<Role> {
        match code {
            1 => Some(Role::Initiator),
            2 => Some(Role::Connector),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Initiator => "initiator",
            Role::Connector => "connector",
        })
    }
}

/// Lease `state`: none.
pub const LEASE_NONE: u32 = 0;
/// Lease `state`: alive.
pub const LEASE_ALIVE: u32 = 1;
/// Lease `state`: closed cleanly.
pub const LEASE_CLOSED: u32 = 2;

/// Lease (heartbeat) record (`FLSE`) (fts), at byte 0 of LB +1 (initiator)
/// or +2 (connector) of Process Id Table entry `s`; `index` = `s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `role`: whose lease this is.
    pub role: Role,
    /// `state`: [`LEASE_NONE`], [`LEASE_ALIVE`] or [`LEASE_CLOSED`].
    pub state: u32,
    /// `generation`: `pro_generation` of the connection.
    pub generation: u64,
    /// `counter`: advanced at least every `heartbeat_ms` while alive.
    pub counter: u64,
    /// `timestamp`: writer's clock (informational, ns).
    pub timestamp: u64,
    /// `host`: writer's host id.
    pub host: Uuid,
    /// `pid`: writer's process id.
    pub pid: u32,
}

impl Lease {
    /// The lease as `format` writes it: state none, everything zero.
    pub fn formatted(role: Role) -> Lease {
        Lease {
            role,
            state: LEASE_NONE,
            generation: 0,
            counter: 0,
            timestamp: 0,
            host: Uuid::nil(),
            pid: 0,
        }
    }

    /// The 512-byte record.
    pub fn encode(&self, stamp: Stamp) -> [u8; RECORD_SIZE] {
        let mut w = wire::Lease::new_zeroed();
        w.hdr = header(RecordKind::Lease, stamp);
        w.role = U32::new(self.role.code());
        w.state = U32::new(self.state);
        w.generation = U64::new(self.generation);
        w.counter = U64::new(self.counter);
        w.timestamp = U64::new(self.timestamp);
        w.host = self.host.into_bytes();
        w.pid = U32::new(self.pid);
        seal(zerocopy::transmute!(w))
    }

    /// Decodes and checks a lease from the first 512 bytes of `buf`.
    pub fn decode(buf: &[u8], expect: Expect) -> Result<Lease, Error> {
        const K: RecordKind = RecordKind::Lease;
        let (rec, _) = open(buf, K, expect)?;
        let w: wire::Lease = read(rec, K)?;
        let role = Role::from_code(w.role.get()).ok_or_else(|| {
            bad(
                K,
                "role",
                format!(
                    "{} is neither 1 (initiator) nor 2 (connector)",
                    w.role.get()
                ),
            )
        })?;
        let state = w.state.get();
        if state > LEASE_CLOSED {
            return Err(bad(
                K,
                "state",
                format!("{state} is not 0 (none), 1 (alive) or 2 (closed)"),
            ));
        }
        Ok(Lease {
            role,
            state,
            generation: w.generation.get(),
            counter: w.counter.get(),
            timestamp: w.timestamp.get(),
            host: Uuid::from_bytes(w.host),
            pid: w.pid.get(),
        })
    }
}

// ---------------------------------------------------------------------------
// Command area

/// Most bytes a command area holds.
pub const CMD_DATA_MAX: usize = 472;

/// Command area (`FCMD`): the patent's `pro_dtd` (initiator's, at byte 512 of
/// LB +1 of entry `s`) or `InitM` (connector's, byte 512 of LB +2);
/// `index` = `s`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdArea {
    /// `generation`: `pro_generation` of the connection.
    pub generation: u64,
    /// `data`: the command structure (at most [`CMD_DATA_MAX`] bytes; `len` on disk).
    pub data: Vec<u8>,
}

impl CmdArea {
    /// The 512-byte record. At most [`CMD_DATA_MAX`] bytes of `data` are written.
    pub fn encode(&self, stamp: Stamp) -> [u8; RECORD_SIZE] {
        let mut w = wire::Cmd::new_zeroed();
        w.hdr = header(RecordKind::Cmd, stamp);
        w.generation = U64::new(self.generation);
        let n = self.data.len().min(CMD_DATA_MAX);
        w.len = U32::new(n as u32);
        w.data[..n].copy_from_slice(&self.data[..n]);
        seal(zerocopy::transmute!(w))
    }

    /// Decodes and checks a command area from the first 512 bytes of `buf`.
    pub fn decode(buf: &[u8], expect: Expect) -> Result<CmdArea, Error> {
        const K: RecordKind = RecordKind::Cmd;
        let (rec, _) = open(buf, K, expect)?;
        let w: wire::Cmd = read(rec, K)?;
        let len = w.len.get();
        let data = usize::try_from(len)
            .ok()
            .and_then(|n| w.data.get(..n))
            .ok_or_else(|| bad(K, "len", format!("{len} is more than {CMD_DATA_MAX}")))?;
        Ok(CmdArea {
            generation: w.generation.get(),
            data: data.to_vec(),
        })
    }
}

// ---------------------------------------------------------------------------
// Pointer tables

/// One Process Segment Pointer Table entry (32 bytes; Fig. 7). The data half
/// (`ptr_process_*`, `ptr_len`) and the ack half (`ack_*`) are both written
/// by the table's owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtrEntry {
    /// `ptr_process_segment_ptr`: global segment number (1-based) of this entry's data segment.
    pub ptr_process_segment_ptr: u32,
    /// `ptr_process_segment_flg`: segment status flag (`FLG_*`).
    pub ptr_process_segment_flg: u8,
    /// `ptr_process_req_id`: process request sequence number, modulo 16.
    pub ptr_process_req_id: u8,
    /// `ptr_process_blk_read`: size of segment in blocks (LBs).
    pub ptr_process_blk_read: u16,
    /// `ptr_process_block_seq`: segment sequence number (0 = never written).
    pub ptr_process_block_seq: u64,
    /// `ptr_len` (fts): payload bytes in the segment.
    pub ptr_len: u32,
    /// `ack_flg` (fts): acknowledgement flags (`FLG_*`).
    pub ack_flg: u8,
    /// `ack_req_id` (fts): request id of the acknowledged segment.
    pub ack_req_id: u8,
    /// `ack_seq` (fts): sequence number of the peer's segment at the same index that this side has read.
    pub ack_seq: u64,
}

impl PtrEntry {
    fn to_wire(self) -> wire::PtrEntry {
        wire::PtrEntry {
            ptr_process_segment_ptr: U32::new(self.ptr_process_segment_ptr),
            ptr_process_segment_flg: self.ptr_process_segment_flg,
            ptr_process_req_id: self.ptr_process_req_id,
            ptr_process_blk_read: U16::new(self.ptr_process_blk_read),
            ptr_process_block_seq: U64::new(self.ptr_process_block_seq),
            ptr_len: U32::new(self.ptr_len),
            ack_flg: self.ack_flg,
            ack_req_id: self.ack_req_id,
            reserved: U16::new(0),
            ack_seq: U64::new(self.ack_seq),
        }
    }

    fn from_wire(w: &wire::PtrEntry) -> PtrEntry {
        PtrEntry {
            ptr_process_segment_ptr: w.ptr_process_segment_ptr.get(),
            ptr_process_segment_flg: w.ptr_process_segment_flg,
            ptr_process_req_id: w.ptr_process_req_id,
            ptr_process_blk_read: w.ptr_process_blk_read.get(),
            ptr_process_block_seq: w.ptr_process_block_seq.get(),
            ptr_len: w.ptr_len.get(),
            ack_flg: w.ack_flg,
            ack_req_id: w.ack_req_id,
            ack_seq: w.ack_seq.get(),
        }
    }
}

/// One 512-byte chunk (`FPTR`) of a Process Segment Pointer Table: chunk `c`
/// is at byte `512 c` of the table, `index` = `c`, and holds entries
/// `15c … 15c+14`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PtrChunk {
    /// `generation`: `pro_generation` of the connection that last wrote this table; 0 = as formatted.
    pub generation: u64,
    /// The 15 entries (slots past the ring size are zero).
    pub entries: [PtrEntry; ENTRIES_PER_CHUNK],
}

impl PtrChunk {
    /// The 512-byte record.
    pub fn encode(&self, stamp: Stamp) -> [u8; RECORD_SIZE] {
        let mut w = wire::PtrChunk::new_zeroed();
        w.hdr = header(RecordKind::PtrChunk, stamp);
        w.generation = U64::new(self.generation);
        for (slot, e) in w.entries.iter_mut().zip(&self.entries) {
            *slot = e.to_wire();
        }
        seal(zerocopy::transmute!(w))
    }

    /// Decodes and checks a chunk from the first 512 bytes of `buf`.
    pub fn decode(buf: &[u8], expect: Expect) -> Result<PtrChunk, Error> {
        const K: RecordKind = RecordKind::PtrChunk;
        let (rec, _) = open(buf, K, expect)?;
        let w: wire::PtrChunk = read(rec, K)?;
        let mut entries = [PtrEntry::default(); ENTRIES_PER_CHUNK];
        for (e, we) in entries.iter_mut().zip(&w.entries) {
            *e = PtrEntry::from_wire(we);
        }
        Ok(PtrChunk {
            generation: w.generation.get(),
            entries,
        })
    }
}

// ---------------------------------------------------------------------------
// Segment header

/// Data-segment header (`FSEG`, 64 bytes at the start of segment `g`;
/// `index` = `g`). The header CRC covers these 64 bytes; the payload has its
/// own CRC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegHeader {
    /// `seg_seq`: = `ptr_process_block_seq`.
    pub seg_seq: u64,
    /// `generation`: connection generation.
    pub generation: u64,
    /// `timestamp`: writer's clock (the patent's "time stamp", ns).
    pub timestamp: u64,
    /// `len`: payload bytes.
    pub len: u32,
    /// `payload_crc`: CRC32C of the payload bytes.
    pub payload_crc: u32,
    /// `slot`: `pro_process_id`.
    pub slot: u32,
    /// `req_id`: = `ptr_process_req_id`.
    pub req_id: u8,
    /// `flags`: = `ptr_process_segment_flg`.
    pub flags: u8,
    /// `seal` (v1.2): 0 plaintext payload; [`SEAL_AES256GCM`]: the payload
    /// is AES-256-GCM ciphertext followed by its 16-byte tag.
    pub seal: u8,
}

/// `seal` of a segment header: no sealing.
pub const SEAL_NONE: u8 = 0;
/// `seal` of a segment header (v1.2): AES-256-GCM, tag after the payload.
pub const SEAL_AES256GCM: u8 = 1;
/// Bytes of the AEAD tag that follows a sealed payload.
pub const SEAL_TAG_SIZE: usize = 16;

impl SegHeader {
    /// The 64-byte header (stamp index = global segment number `g`).
    pub fn encode(&self, stamp: Stamp) -> [u8; SEG_HDR_SIZE] {
        let mut w = wire::SegHdr::new_zeroed();
        w.hdr = header(RecordKind::SegHdr, stamp);
        w.seg_seq = U64::new(self.seg_seq);
        w.generation = U64::new(self.generation);
        w.timestamp = U64::new(self.timestamp);
        w.len = U32::new(self.len);
        w.payload_crc = U32::new(self.payload_crc);
        w.slot = U32::new(self.slot);
        w.req_id = self.req_id;
        w.flags = self.flags;
        w.seal = self.seal;
        seal(zerocopy::transmute!(w))
    }

    /// Decodes and checks a segment header from the first 64 bytes of `buf`.
    pub fn decode(buf: &[u8], expect: Expect) -> Result<SegHeader, Error> {
        const K: RecordKind = RecordKind::SegHdr;
        let (rec, _) = open(buf, K, expect)?;
        let w: wire::SegHdr = read(rec, K)?;
        Ok(SegHeader {
            seg_seq: w.seg_seq.get(),
            generation: w.generation.get(),
            timestamp: w.timestamp.get(),
            len: w.len.get(),
            payload_crc: w.payload_crc.get(),
            slot: w.slot.get(),
            req_id: w.req_id,
            flags: w.flags,
            seal: w.seal,
        })
    }
}
