//! `ScsiDevice` over the libiscsi transport against a local tgtd (file-backed
//! LUN, 4096-byte blocks): what the SCSI path costs compared with the file
//! device of `fts-ring`'s bench.
//! - `write_4KiB_fua`: one control-record write (WRITE(16) FUA);
//! - `read_4KiB`: one control-record read (the polling unit);
//! - `write_1MiB` / `read_1MiB`: bulk segment I/O.
//!
//! Skips (with a banner) where tgt is missing.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fts_blockdev::{BlockDevice, WriteMode};
use fts_scsi::iscsi::IscsiTransport;
use fts_scsi::{IoPolicy, ScsiDevice};

fn bench(c: &mut Criterion) {
    let Some(mut tgtd) = hil::tgt::start_or_skip("fts-scsi iscsi bench") else {
        return;
    };
    let lun = tgtd.add_lun(256 << 20, 4096).expect("LUN");
    let t = IscsiTransport::connect(
        &lun.url,
        "iqn.2026-11.invalid.fts-bench:dev",
        Duration::from_secs(10),
    )
    .expect("login");
    let shared = fts_scsi::Nexus::shared(Box::new(t));
    let mut dev = ScsiDevice::with_shared(shared, IoPolicy::default()).expect("device");

    let mut g = c.benchmark_group("iscsi_tgt");
    let small = vec![0x5au8; 4096];
    let mut small_in = vec![0u8; 4096];
    g.throughput(Throughput::Bytes(4096));
    g.bench_function("write_4KiB_fua", |b| {
        b.iter(|| {
            dev.write_at(8 << 20, &small, WriteMode::Fua)
                .expect("write")
        })
    });
    g.bench_function("read_4KiB", |b| {
        b.iter(|| dev.read_at(8 << 20, &mut small_in).expect("read"))
    });
    let big = vec![0xa5u8; 1 << 20];
    let mut big_in = vec![0u8; 1 << 20];
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("write_1MiB", |b| {
        b.iter(|| {
            dev.write_at(16 << 20, &big, WriteMode::Normal)
                .expect("write")
        })
    });
    g.bench_function("read_1MiB", |b| {
        b.iter(|| dev.read_at(16 << 20, &mut big_in).expect("read"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
