//! The cost of sealing and opening one segment payload (`fts_ring::seal`)
//! on this CPU, for 64 KiB and 1 MiB payloads: the AEAD alone, without
//! I/O, CRC or headers. Throughput is payload bytes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fts_layout::{Role, SEAL_TAG_SIZE};
use fts_ring::seal::{SealKeys, Sealer, SegmentContext};

fn ctx(len: usize, seq: u64) -> SegmentContext {
    SegmentContext {
        layout_id: 0x1122_3344_5566_7788,
        slot: 3,
        generation: 9,
        writer: Role::Initiator,
        index: 2,
        segment: 40,
        seq,
        req_id: 5,
        flags: 0x41,
        len: u32::try_from(len).expect("payload fits a u32"),
    }
}

fn seal_open(c: &mut Criterion) {
    let keys = SealKeys {
        send: [1; 32],
        recv: [2; 32],
    };
    let mirrored = SealKeys {
        send: [2; 32],
        recv: [1; 32],
    };
    let mut g = c.benchmark_group("seal");
    for len in [64 << 10, 1 << 20] {
        g.throughput(Throughput::Bytes(len as u64));
        let mut tx = Sealer::new(&keys).expect("keys");
        let mut body = vec![0x5a; len + SEAL_TAG_SIZE];
        let mut seq = 0;
        g.bench_function(BenchmarkId::new("seal", len), |b| {
            b.iter(|| {
                seq += 1;
                tx.seal(&ctx(len, seq), &mut body).expect("seal");
            })
        });
        // One sealed copy, opened again and again from a scratch buffer:
        // the copy is part of the figure (a memcpy, far faster than the
        // AEAD).
        let mut tx = Sealer::new(&keys).expect("keys");
        let rx = Sealer::new(&mirrored).expect("keys");
        let mut sealed = vec![0x5a; len + SEAL_TAG_SIZE];
        tx.seal(&ctx(len, 1), &mut sealed).expect("seal");
        let mut scratch = sealed.clone();
        g.bench_function(BenchmarkId::new("open", len), |b| {
            b.iter(|| {
                scratch.copy_from_slice(&sealed);
                rx.open(&ctx(len, 1), &mut scratch).expect("open");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
