//! Golden bytes: records with fixed field values must encode to exactly
//! these bytes. The expected bytes were laid out by hand from the offsets in
//! docs/FORMAT.md (not with this crate's wire structs) and their CRCs
//! computed with an independent bit-by-bit CRC32C; they pin the field
//! offsets, the little-endian byte order and the CRC convention.
#![allow(clippy::unwrap_used)]

use fts_layout::{
    crc32c_record, layout_id_of, DeviceRole, Expect, Mcb, OsType, PidEntry, PtrChunk, PtrEntry,
    SegHeader, Stamp, CRC_OFFSET, FLG_CONNECTOR, FLG_INITIATOR, FLG_LAST, FLG_NAK,
};
use uuid::Uuid;

fn unhex(lines: &[&str]) -> Vec<u8> {
    let s: String = lines.concat();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> Vec<String> {
    b.chunks(32)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect())
        .collect()
}

/// 00112233-4455-6677-8899-aabbccddeeff
fn layout_uuid() -> Uuid {
    Uuid::from_bytes([
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ])
}

fn dev1() -> Uuid {
    Uuid::from_bytes(core::array::from_fn(|i| 0x10 + i as u8))
}

fn dev2() -> Uuid {
    Uuid::from_bytes(core::array::from_fn(|i| 0x20 + i as u8))
}

fn lid() -> u64 {
    layout_id_of(&layout_uuid())
}

#[test]
fn layout_id_is_first_8_bytes_le() {
    assert_eq!(lid(), 0x7766_5544_3322_1100);
}

#[test]
fn crc32c_known_answers() {
    // The iSCSI check value, and CRC with the field zeroed.
    assert_eq!(crc32c_record(b"123456789", 100), 0xE306_9283);
    assert_eq!(crc32c_record(b"123456789", 9), 0xE306_9283);
    assert_eq!(crc32c::crc32c(b"payload"), 0xf4e3_6970);
    let mut rec = *b"12345678\xff\xff\xff\xff9";
    let zeroed = crc32c::crc32c(b"12345678\0\0\0\09");
    assert_eq!(crc32c_record(&rec, 8), zeroed);
    rec[8] = 0;
    assert_eq!(crc32c_record(&rec, 8), zeroed);
    // A field running past the end: only the bytes present count as zero.
    assert_eq!(crc32c_record(b"1234", 2), crc32c::crc32c(b"12\0\0"));
}

const MCB_GOLDEN: [&str; 16] = [
    "464d43420100000200000000a0efb0e900112233445566774d41532046545300",
    "00112233445566778899aabbccddeeff101112131415161718191a1b1c1d1e1f",
    "0100000010000000080706050403020145230100100000000800000000000000",
    "0700000000000000020000000800000038000000000000005544332211000000",
    "80020000102700000600000000000000e02e000030750000e803000000100000",
    "000000000001000003000000060000002f6465762f7364620000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000101112131415161718191a1b1c1d1e1f",
    "202122232425262728292a2b2c2d2e2f00000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000100000000000000feffff0f00000000",
    "ffffff0f00000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
];

fn golden_mcb() -> Mcb {
    Mcb {
        blk5_id: DeviceRole::Master,
        blk5_layout_uuid: layout_uuid(),
        blk5_device_uuid: dev1(),
        blk5_dev_id: 1,
        blk5_seg_size: 16,
        blk5_time_id: 0x0102_0304_0506_0708,
        blk5_tot_seg_num: 0x0001_2345,
        blk5_max_connections: 16,
        blk5_process_id_table_ptr: 8,
        blk5_secondary_device_table_ptr: 7,
        blk5_secondary_device_entrynum: 2,
        blk5_ptr_seg_per_process: 8,
        blk5_start_process_segment_ptr: 56,
        blk5_mast_sec_start_segment_ptr: 0x11_2233_4455,
        blk5_maxptr: 640,
        lock_timeout_ms: 10_000,
        lock_record_ptr: 6,
        lease_timeout_ms: 12_000,
        io_timeout_ms: 30_000,
        heartbeat_ms: 1_000,
        format_block_size: 4096,
        device_bytes: 1 << 40,
        pid_entry_lbs: 3,
        ptr_table_lbs: 6,
        blk5_unix_filename: "/dev/sdb".into(),
        device_uuids: vec![dev1(), dev2()],
        blk5_minor_version: 1,
        sdt_backup_ptr: 0x0fff_fffe,
        mcb_backup_ptr: 0x0fff_ffff,
    }
}

#[test]
fn mcb_golden_bytes() {
    let expected = unhex(&MCB_GOLDEN);
    assert_eq!(expected.len(), 512);
    let got = golden_mcb().encode();
    assert_eq!(hex(&got), hex(&expected));
    // The CRC, little-endian at offset 12.
    assert_eq!(
        &got[CRC_OFFSET..CRC_OFFSET + 4],
        &0xe9b0_efa0u32.to_le_bytes()
    );
    assert_eq!(Mcb::decode(&expected).unwrap(), golden_mcb());
}

/// The same MCB as written by format v1.0 (before the backups): offsets
/// 432-511 reserved and zero. A v1.1 reader still reads it, as minor
/// version 0 without backups.
const MCB_GOLDEN_V1_0: [&str; 16] = [
    "464d43420100000200000000541f64e100112233445566774d41532046545300",
    "00112233445566778899aabbccddeeff101112131415161718191a1b1c1d1e1f",
    "0100000010000000080706050403020145230100100000000800000000000000",
    "0700000000000000020000000800000038000000000000005544332211000000",
    "80020000102700000600000000000000e02e000030750000e803000000100000",
    "000000000001000003000000060000002f6465762f7364620000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000000101112131415161718191a1b1c1d1e1f",
    "202122232425262728292a2b2c2d2e2f00000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
];

#[test]
fn mcb_v1_0_golden_bytes_still_decode() {
    let v10 = Mcb {
        blk5_minor_version: 0,
        sdt_backup_ptr: 0,
        mcb_backup_ptr: 0,
        ..golden_mcb()
    };
    let expected = unhex(&MCB_GOLDEN_V1_0);
    assert_eq!(Mcb::decode(&expected).unwrap(), v10);
    assert_eq!(hex(&v10.encode()), hex(&expected));
    // A minor version this fts does not know is refused, naming it.
    let mut newer = v10.clone();
    newer.blk5_minor_version = fts_layout::FORMAT_MINOR + 1;
    let err = Mcb::decode(&newer.encode()).unwrap_err();
    assert!(err.to_string().contains("blk5_minor_version"), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("v1.{}", fts_layout::FORMAT_MINOR + 1)),
        "{err}"
    );
}

const PTR_GOLDEN: [&str; 16] = [
    "46505452010000020300000025814ac800112233445566770900000007000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "c3b2a100600b0001efcdab8967452301c0ff0000500a00001032547698badcfe",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "ffffffff0000ffff000000000000000000000000000000000000000000000000",
];

fn golden_chunk() -> PtrChunk {
    let mut c = PtrChunk {
        generation: 0x0000_0007_0000_0009,
        ..PtrChunk::default()
    };
    c.entries[1] = PtrEntry {
        ptr_process_segment_ptr: 0x00A1_B2C3,
        ptr_process_segment_flg: FLG_INITIATOR | FLG_LAST,
        ptr_process_req_id: 11,
        ptr_process_blk_read: 256,
        ptr_process_block_seq: 0x0123_4567_89ab_cdef,
        ptr_len: 65_472,
        ack_flg: FLG_INITIATOR | FLG_NAK,
        ack_req_id: 10,
        ack_seq: 0xfedc_ba98_7654_3210,
    };
    c.entries[14] = PtrEntry {
        ptr_process_segment_ptr: u32::MAX,
        ptr_process_blk_read: u16::MAX,
        ..PtrEntry::default()
    };
    c
}

#[test]
fn ptr_chunk_golden_bytes() {
    let expected = unhex(&PTR_GOLDEN);
    let got = golden_chunk().encode(Stamp::new(lid(), 3));
    assert_eq!(hex(&got), hex(&expected));
    assert_eq!(
        &got[CRC_OFFSET..CRC_OFFSET + 4],
        &0xc84a_8125u32.to_le_bytes()
    );
    // One entry alone: bytes 64..96 of the chunk.
    assert_eq!(
        hex(&got[64..96]),
        vec!["c3b2a100600b0001efcdab8967452301c0ff0000500a00001032547698badcfe".to_string()]
    );
    assert_eq!(
        PtrChunk::decode(&expected, Expect::exact(lid(), 3)).unwrap(),
        golden_chunk()
    );
}

const SEG_GOLDEN: [&str; 2] = [
    "465345470100400087d61200bacc020e00112233445566772a00000000000000",
    "070000000000000096a5b4c3d2e1f017c00f00007069e3f40300000009a00100",
];

fn golden_seg() -> SegHeader {
    SegHeader {
        seg_seq: 42,
        generation: 7,
        timestamp: 0x17f0_e1d2_c3b4_a596,
        len: 4032,
        payload_crc: crc32c::crc32c(b"payload"),
        slot: 3,
        req_id: 9,
        flags: FLG_CONNECTOR | FLG_LAST,
        seal: fts_layout::SEAL_AES256GCM,
    }
}

#[test]
fn seg_header_golden_bytes() {
    let expected = unhex(&SEG_GOLDEN);
    assert_eq!(expected.len(), 64);
    let got = golden_seg().encode(Stamp::new(lid(), 1_234_567));
    assert_eq!(hex(&got), hex(&expected));
    assert_eq!(
        &got[CRC_OFFSET..CRC_OFFSET + 4],
        &0x0e02_ccbau32.to_le_bytes()
    );
    assert_eq!(
        SegHeader::decode(&expected, Expect::exact(lid(), 1_234_567)).unwrap(),
        golden_seg()
    );
}

const PID_GOLDEN: [&str; 16] = [
    "465049440100000203000000b0ae53cc00112233445566770300000003000000",
    "feffffff0100000005000000020000000100000001000000e803000000000000",
    "d007000000000000616c69636500000000000000000000000000000000000000",
    "0000000000000000626f62000000000000000000000000000000000000000000",
    "0000000000000000101112131415161718191a1b1c1d1e1f2021222324252627",
    "28292a2b2c2d2e2fa5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a50001020304050607",
    "08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627",
    "28292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f5a5a5a5a5a5a5a5a",
    "5a5a5a5a5a5a5a5a404142434445464748494a4b4c4d4e4f5051525354555657",
    "58595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f7071727374757677",
    "78797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f9091929394959697",
    "98999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7",
    "b8b9babbbcbdbebf030000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
];

fn golden_pid() -> PidEntry {
    PidEntry {
        pro_process_id: 3,
        pro_flag_process: fts_layout::PRO_FLAG_ALLOCATED | fts_layout::PRO_FLAG_PROCESSING,
        pro_con_rc: -2,
        pro_requestor_type: OsType::Unix,
        pro_requestee_type: OsType::Mvs,
        pro_auth_alg: fts_layout::AUTH_ED25519,
        pro_generation: 0x1_0000_0001,
        pro_alloc_time: 1000,
        pro_accept_time: 2000,
        pro_requestor: "alice".into(),
        pro_requestee: "bob".into(),
        pro_requestor_host: dev1(),
        pro_requestee_host: dev2(),
        pro_auth_nonce: [0xa5; 16],
        pro_requestor_key: core::array::from_fn(|i| i as u8),
        pro_requestor_kx: core::array::from_fn(|i| 32 + i as u8),
        pro_requestee_nonce: [0x5a; 16],
        pro_requestee_key: core::array::from_fn(|i| 64 + i as u8),
        pro_requestee_kx: core::array::from_fn(|i| 96 + i as u8),
        pro_requestee_sig: core::array::from_fn(|i| 128 + i as u8),
        pro_auth_flags: fts_layout::AUTH_FLAG_ENCRYPT_ASKED | fts_layout::AUTH_FLAG_SEALED,
    }
}

#[test]
fn pid_entry_golden_bytes() {
    let expected = unhex(&PID_GOLDEN);
    let got = golden_pid().encode(Stamp::new(lid(), 3));
    assert_eq!(hex(&got), hex(&expected));
    assert_eq!(
        &got[CRC_OFFSET..CRC_OFFSET + 4],
        &0xcc53_aeb0u32.to_le_bytes()
    );
    assert_eq!(
        PidEntry::decode(&expected, Expect::exact(lid(), 3)).unwrap(),
        golden_pid()
    );
}
