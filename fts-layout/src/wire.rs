//! Wire layouts of the records, exactly as FORMAT.md lays them out. Private:
//! the public API uses plain Rust structs. All integers little-endian.

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Common record header (24 bytes).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct Header {
    pub magic: [u8; 4],
    pub version: U16,
    pub rec_size: U16,
    pub index: U32,
    pub crc: U32,
    pub layout_id: U64,
}
const _: () = assert!(size_of::<Header>() == 24);
const _: () = assert!(offset_of!(Header, crc) == crate::CRC_OFFSET);

/// Master Control Block (`FMCB`).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Mcb {
    pub hdr: Header,
    pub blk5_id: [u8; 8],
    pub blk5_layout_uuid: [u8; 16],
    pub blk5_device_uuid: [u8; 16],
    pub blk5_dev_id: U32,
    pub blk5_seg_size: U32,
    pub blk5_time_id: U64,
    pub blk5_tot_seg_num: U32,
    pub blk5_max_connections: U32,
    pub blk5_process_id_table_ptr: U64,
    pub blk5_secondary_device_table_ptr: U64,
    pub blk5_secondary_device_entrynum: U32,
    pub blk5_ptr_seg_per_process: U32,
    pub blk5_start_process_segment_ptr: U64,
    pub blk5_mast_sec_start_segment_ptr: U64,
    pub blk5_maxptr: U32,
    pub lock_timeout_ms: U32,
    pub lock_record_ptr: U64,
    pub lease_timeout_ms: U32,
    pub io_timeout_ms: U32,
    pub heartbeat_ms: U32,
    pub format_block_size: U32,
    pub device_bytes: U64,
    pub pid_entry_lbs: U32,
    pub ptr_table_lbs: U32,
    pub blk5_unix_filename: [u8; 128],
    pub device_uuids: [[u8; 16]; 8],
    pub blk5_minor_version: U32,
    pub reserved0: U32,
    pub sdt_backup_ptr: U64,
    pub mcb_backup_ptr: U64,
    pub reserved: [u8; 56],
}
const _: () = assert!(size_of::<Mcb>() == 512);
const _: () = assert!(offset_of!(Mcb, blk5_dev_id) == 64);
const _: () = assert!(offset_of!(Mcb, blk5_maxptr) == 128);
const _: () = assert!(offset_of!(Mcb, lock_record_ptr) == 136);
const _: () = assert!(offset_of!(Mcb, device_bytes) == 160);
const _: () = assert!(offset_of!(Mcb, blk5_unix_filename) == 176);
const _: () = assert!(offset_of!(Mcb, device_uuids) == 304);
const _: () = assert!(offset_of!(Mcb, blk5_minor_version) == 432);
const _: () = assert!(offset_of!(Mcb, sdt_backup_ptr) == 440);
const _: () = assert!(offset_of!(Mcb, mcb_backup_ptr) == 448);
const _: () = assert!(offset_of!(Mcb, reserved) == 456);

/// Lock record (`FLCK`).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Lock {
    pub hdr: Header,
    pub state: U32,
    pub reserved0: U32,
    pub generation: U64,
    pub counter: U64,
    pub timestamp: U64,
    pub holder_host: [u8; 16],
    pub holder_name: [u8; 32],
    pub holder_key: U64,
    pub holder_pid: U32,
    pub reserved: [u8; 396],
}
const _: () = assert!(size_of::<Lock>() == 512);
const _: () = assert!(offset_of!(Lock, holder_name) == 72);
const _: () = assert!(offset_of!(Lock, holder_pid) == 112);

/// Secondary Device Table entry (`FSDT`).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Sdt {
    pub hdr: Header,
    pub sec_dev_id: [u8; 16],
    pub sec_str_seg_ptr: U64,
    pub sec_seg_number_for_device: U32,
    pub sec_start_segment_number: U32,
    pub device_bytes: U64,
    pub sec_flags: U32,
    pub reserved0: U32,
    pub sec_hw_id: [u8; 64],
    pub sec_path: [u8; 128],
    pub reserved: [u8; 248],
}
const _: () = assert!(size_of::<Sdt>() == 512);
const _: () = assert!(offset_of!(Sdt, sec_hw_id) == 72);
const _: () = assert!(offset_of!(Sdt, sec_path) == 136);

/// Process Id Table entry (`FPID`).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Pid {
    pub hdr: Header,
    pub pro_process_id: U32,
    pub pro_flag_process: U32,
    pub pro_con_rc: I32,
    pub pro_requestor_type: U32,
    pub pro_requestee_type: U32,
    pub pro_auth_alg: U32,
    pub pro_generation: U64,
    pub pro_alloc_time: U64,
    pub pro_accept_time: U64,
    pub pro_requestor: [u8; 32],
    pub pro_requestee: [u8; 32],
    pub pro_requestor_host: [u8; 16],
    pub pro_requestee_host: [u8; 16],
    pub pro_auth_nonce: [u8; 16],
    pub pro_requestor_key: [u8; 32],
    pub pro_requestor_kx: [u8; 32],
    pub pro_requestee_nonce: [u8; 16],
    pub pro_requestee_key: [u8; 32],
    pub pro_requestee_kx: [u8; 32],
    pub pro_requestee_sig: [u8; 64],
    pub pro_auth_flags: U32,
    pub reserved: [u8; 116],
}
const _: () = assert!(size_of::<Pid>() == 512);
const _: () = assert!(offset_of!(Pid, pro_requestor) == 72);
const _: () = assert!(offset_of!(Pid, pro_requestor_key) == 184);
const _: () = assert!(offset_of!(Pid, pro_requestor_kx) == 216);
const _: () = assert!(offset_of!(Pid, pro_requestee_nonce) == 248);
const _: () = assert!(offset_of!(Pid, pro_requestee_sig) == 328);
const _: () = assert!(offset_of!(Pid, pro_auth_flags) == 392);
const _: () = assert!(offset_of!(Pid, reserved) == 396);

/// Lease (`FLSE`).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Lease {
    pub hdr: Header,
    pub role: U32,
    pub state: U32,
    pub generation: U64,
    pub counter: U64,
    pub timestamp: U64,
    pub host: [u8; 16],
    pub pid: U32,
    pub reserved: [u8; 436],
}
const _: () = assert!(size_of::<Lease>() == 512);
const _: () = assert!(offset_of!(Lease, pid) == 72);

/// Command area (`FCMD`).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Cmd {
    pub hdr: Header,
    pub generation: U64,
    pub len: U32,
    pub reserved0: U32,
    pub data: [u8; 472],
}
const _: () = assert!(size_of::<Cmd>() == 512);
const _: () = assert!(offset_of!(Cmd, data) == 40);

/// Pointer-table entry (32 bytes).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct PtrEntry {
    pub ptr_process_segment_ptr: U32,
    pub ptr_process_segment_flg: u8,
    pub ptr_process_req_id: u8,
    pub ptr_process_blk_read: U16,
    pub ptr_process_block_seq: U64,
    pub ptr_len: U32,
    pub ack_flg: u8,
    pub ack_req_id: u8,
    pub reserved: U16,
    pub ack_seq: U64,
}
const _: () = assert!(size_of::<PtrEntry>() == crate::PTR_ENTRY_SIZE);
const _: () = assert!(offset_of!(PtrEntry, ack_flg) == 20);
const _: () = assert!(offset_of!(PtrEntry, ack_seq) == 24);

/// Pointer-table chunk (`FPTR`).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct PtrChunk {
    pub hdr: Header,
    pub generation: U64,
    pub entries: [PtrEntry; crate::ENTRIES_PER_CHUNK],
}
const _: () = assert!(size_of::<PtrChunk>() == 512);
const _: () = assert!(offset_of!(PtrChunk, entries) == 32);

/// Data-segment header (`FSEG`).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct SegHdr {
    pub hdr: Header,
    pub seg_seq: U64,
    pub generation: U64,
    pub timestamp: U64,
    pub len: U32,
    pub payload_crc: U32,
    pub slot: U32,
    pub req_id: u8,
    pub flags: u8,
    pub seal: u8,
    pub reserved: u8,
}
const _: () = assert!(size_of::<SegHdr>() == crate::SEG_HDR_SIZE);
const _: () = assert!(offset_of!(SegHdr, req_id) == 60);
const _: () = assert!(offset_of!(SegHdr, seal) == 62);
