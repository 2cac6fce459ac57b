//! `check::check_master` / `check_secondary`: on raw bytes (first byte even),
//! or (first byte odd) on a real formatted control area built from a small
//! geometry chosen by the input, then corrupted by the rest of the input,
//! optionally re-sealing the touched records so their contents are checked.
#![no_main]

use fts_layout::check::{check_master, check_secondary};
use fts_layout::{
    crc32c_record, format_plan, mcb_for_device, FormatSpec, Geometry, GeometryParams, CRC_OFFSET,
    LB, RECORD_SIZE,
};
use uuid::Uuid;

fn byte(data: &[u8], i: usize) -> u8 {
    data.get(i).copied().unwrap_or(0)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if byte(data, 0) % 2 == 0 {
        let _ = check_master(data, data.len() as u64);
        return;
    }
    let n = 2 + u32::from(byte(data, 2) % 40);
    let p = GeometryParams {
        master_bytes: (8 + u64::from(byte(data, 1) % 24)) << 20,
        secondary_bytes: (0..byte(data, 3) % 3).map(|i| (4 + u64::from(i)) << 20).collect(),
        block_size: 512 << (byte(data, 4) % 4),
        segment_bytes: 4096 * (1 + u64::from(byte(data, 5) % 20)),
        max_connections: 1 + u32::from(byte(data, 6) % 4),
        ring_entries: n,
        batch: 1 + u32::from(byte(data, 7)) % n,
    };
    let Ok(geometry) = Geometry::compute(&p) else { return };
    let d = geometry.devices.len();
    let spec = FormatSpec {
        geometry,
        layout_uuid: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
        device_uuids: (0..d).map(|i| Uuid::from_u128(1 + i as u128)).collect(),
        time_ns: 1,
        paths: vec!["/dev/x".into()],
        hw_ids: vec![],
        lease_timeout_ms: 10_000,
        lock_timeout_ms: 10_000,
        io_timeout_ms: 30_000,
        heartbeat_ms: 1_000,
    };
    let end = spec.geometry.control_end_lb() as usize * LB;
    let mut control = vec![0u8; end];
    let mut lb5s = vec![vec![0u8; LB]; d];
    for w in format_plan(&spec) {
        let start = w.lb as usize * LB;
        if w.device == 0 {
            control[start..start + w.data.len()].copy_from_slice(&w.data);
        } else {
            lb5s[w.device].copy_from_slice(&w.data[LB..2 * LB]);
        }
    }
    // Patches: (offset u32, xor u8, reseal u8) groups.
    let mut touched = Vec::new();
    for patch in data.get(8..).unwrap_or(&[]).chunks_exact(6) {
        let off = u32::from_le_bytes([patch[0], patch[1], patch[2], patch[3]]) as usize % end;
        control[off] ^= patch[4];
        if patch[5] & 1 == 1 {
            touched.push(off / RECORD_SIZE * RECORD_SIZE);
        }
    }
    for rec in touched {
        let r = &mut control[rec..rec + RECORD_SIZE];
        if r[0] == b'F' {
            r[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
            let crc = crc32c_record(r, CRC_OFFSET);
            r[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let shrink = usize::from(byte(data, 8) % 8) * LB;
    let device_bytes = spec.geometry.devices[0].device_bytes - (shrink as u64);
    if let Ok((mcb, sdt, _problems)) = check_master(&control, device_bytes) {
        for (i, lb5) in lb5s.iter().enumerate() {
            let _ = check_secondary(lb5, &mcb, &sdt, i);
        }
        let _ = Geometry::from_mcb(&mcb, &sdt);
    }
    let _ = mcb_for_device(&spec, d);
    let _ = check_master(&control[..control.len().min(shrink + 6 * LB)], device_bytes);
});
