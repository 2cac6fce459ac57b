//! Micro-benchmarks of the hot pure code of the on-disk format, no I/O:
//! - `segment/*`: what each side does per data segment — the 64-byte
//!   header encoded or decoded and checked, the CRC32C of a 1 MiB payload;
//! - `ptr_chunk/*`: one 512-byte pointer-table chunk (15 entries) encoded
//!   or decoded, what every table publish and poll does per chunk;
//! - `mcb/*`: the Master Control Block decoded, as every command that
//!   opens a layout does, and the geometry rebuilt from it;
//! - `geometry/*`: the geometry computed, and chosen by `Geometry::auto`.
//!
//! Short runs (`cargo bench -p fts-layout`, a few seconds): speed goals
//! of the data path are measured by `cargo xtask bench`, not here.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fts_layout::{
    format_plan, layout_id_of, mcb_for_device, Expect, FormatSpec, Geometry, GeometryParams, Mcb,
    PtrChunk, PtrEntry, SdtEntry, SegHeader, Stamp, FLG_INITIATOR, FLG_LAST, LB, MCB_LB, SDT_LB,
};
use uuid::Uuid;

const PAYLOAD: usize = 1 << 20;

fn spec() -> FormatSpec {
    let mut p = GeometryParams::new(1 << 30);
    p.max_connections = 16;
    p.segment_bytes = 256 << 10;
    p.ring_entries = 127;
    p.batch = 4;
    FormatSpec {
        geometry: Geometry::compute(&p).expect("geometry"),
        layout_uuid: Uuid::from_u128(0x1234),
        device_uuids: vec![Uuid::from_u128(0x5678)],
        time_ns: 1,
        paths: vec!["/dev/bench".into()],
        hw_ids: vec![],
        lease_timeout_ms: fts_layout::DEFAULT_LEASE_TIMEOUT_MS,
        lock_timeout_ms: fts_layout::DEFAULT_LOCK_TIMEOUT_MS,
        io_timeout_ms: fts_layout::DEFAULT_IO_TIMEOUT_MS,
        heartbeat_ms: fts_layout::DEFAULT_HEARTBEAT_MS,
    }
}

fn segment(c: &mut Criterion) {
    let id = layout_id_of(&Uuid::from_u128(0x1234));
    let stamp = Stamp::new(id, 4711);
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 7 + i / 4096) as u8).collect();
    let header = SegHeader {
        seg_seq: 123_456,
        generation: 9,
        timestamp: 1_700_000_000_000_000_000,
        len: PAYLOAD as u32,
        payload_crc: crc32c::crc32c(&payload),
        slot: 3,
        req_id: 5,
        flags: FLG_INITIATOR | FLG_LAST,
        ..SegHeader::default()
    };
    let bytes = header.encode(stamp);
    let mut g = c.benchmark_group("segment");
    g.bench_function("header_encode", |b| {
        b.iter(|| black_box(&header).encode(black_box(stamp)))
    });
    g.bench_function("header_decode", |b| {
        b.iter(|| SegHeader::decode(black_box(&bytes), Expect::stamp(stamp)).expect("decode"))
    });
    g.throughput(Throughput::Bytes(PAYLOAD as u64));
    g.bench_function("payload_crc32c_1MiB", |b| {
        b.iter(|| crc32c::crc32c(black_box(&payload)))
    });
    // What the writer does per 1 MiB segment before its I/O, and the
    // reader after it: header and payload CRC.
    g.bench_function("write_side_1MiB", |b| {
        b.iter(|| {
            let h = SegHeader {
                payload_crc: crc32c::crc32c(black_box(&payload)),
                ..header.clone()
            };
            h.encode(stamp)
        })
    });
    g.bench_function("read_side_1MiB", |b| {
        b.iter(|| {
            let h = SegHeader::decode(black_box(&bytes), Expect::stamp(stamp)).expect("decode");
            assert_eq!(crc32c::crc32c(black_box(&payload)), h.payload_crc);
        })
    });
    g.finish();
}

fn ptr_chunk(c: &mut Criterion) {
    let id = layout_id_of(&Uuid::from_u128(0x1234));
    let stamp = Stamp::new(id, 3);
    let mut chunk = PtrChunk {
        generation: 42,
        ..PtrChunk::default()
    };
    for (i, e) in chunk.entries.iter_mut().enumerate() {
        *e = PtrEntry {
            ptr_process_segment_ptr: 1000 + i as u32,
            ptr_process_segment_flg: FLG_INITIATOR,
            ptr_process_req_id: 7,
            ptr_process_blk_read: 64,
            ptr_process_block_seq: 5000 + i as u64,
            ptr_len: (256 << 10) - 64,
            ack_flg: 0,
            ack_req_id: 0,
            ack_seq: 0,
        };
    }
    let bytes = chunk.encode(stamp);
    let mut g = c.benchmark_group("ptr_chunk");
    g.bench_function("encode", |b| {
        b.iter(|| black_box(&chunk).encode(black_box(stamp)))
    });
    g.bench_function("decode", |b| {
        b.iter(|| PtrChunk::decode(black_box(&bytes), Expect::stamp(stamp)).expect("decode"))
    });
    // A whole table of the default 640 entries (43 chunks, 6 LBs), as a
    // poll of the peer's table decodes it.
    let table: Vec<[u8; 512]> = (0..43).map(|i| chunk.encode(Stamp::new(id, i))).collect();
    g.throughput(Throughput::Elements(43));
    g.bench_function("decode_table_640_entries", |b| {
        b.iter(|| {
            for (i, c) in table.iter().enumerate() {
                PtrChunk::decode(black_box(c), Expect::exact(id, i as u32)).expect("decode");
            }
        })
    });
    g.finish();
}

fn mcb(c: &mut Criterion) {
    let spec = spec();
    let plan = format_plan(&spec);
    let lb = |n: u64| -> Vec<u8> {
        // The last write of the LB (LB 5 is written zero first, the MCB last).
        plan.iter()
            .rev()
            .find(|w| w.device == 0 && w.lb <= n && n < w.lb + (w.data.len() / LB) as u64)
            .map(|w| {
                let at = (n - w.lb) as usize * LB;
                w.data[at..at + LB].to_vec()
            })
            .expect("planned LB")
    };
    let mcb_bytes = lb(MCB_LB);
    let sdt_bytes = lb(SDT_LB);
    let mcb = Mcb::decode(&mcb_bytes).expect("mcb");
    assert_eq!(mcb, mcb_for_device(&spec, 0));
    let sdt = vec![SdtEntry::decode(&sdt_bytes[..512], Expect::any()).expect("sdt")];
    let mut g = c.benchmark_group("mcb");
    g.bench_function("decode", |b| {
        b.iter(|| Mcb::decode(black_box(&mcb_bytes)).expect("decode"))
    });
    g.bench_function("encode", |b| b.iter(|| black_box(&mcb).encode()));
    g.bench_function("geometry_from_mcb", |b| {
        b.iter(|| Geometry::from_mcb(black_box(&mcb), black_box(&sdt)).expect("geometry"))
    });
    g.finish();
}

fn geometry(c: &mut Criterion) {
    let mut g = c.benchmark_group("geometry");
    let p = spec().geometry.params();
    g.bench_function("compute", |b| {
        b.iter(|| Geometry::compute(black_box(&p)).expect("compute"))
    });
    // The search `format` runs when no tunable is given: 1 GiB for 16
    // connections is sized from the device.
    g.bench_function("auto_1GiB_16_connections", |b| {
        b.iter(|| {
            Geometry::auto(black_box(1 << 30), &[], 512, 16)
                .resolve()
                .expect("auto")
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(700));
    targets = segment, ptr_chunk, mcb, geometry
}
criterion_main!(benches);
