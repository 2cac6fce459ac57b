//! Ring latency and throughput over a real O_DIRECT file device, two
//! threads standing in for two hosts:
//! - `round_trip_32B`: a 32-byte message there and back (the handoff cost
//!   the patent's one-second polling is compared against);
//! - `one_way_16MiB`: a 16 MiB message with 256 KiB segments, batch 16.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use fts_blockdev::{BlockDevice, FileDevice, OpenOptions, WriteMode};
use fts_layout::{format_plan, layout_id_of, FormatSpec, Geometry, GeometryParams, Role, LB};
use fts_ring::RingPort;
use uuid::Uuid;

const GEN: u64 = 1;
const BIG: usize = 16 << 20;

fn formatted(path: &std::path::Path) -> (FileDevice, Geometry, u64) {
    let bytes = 96 << 20;
    let mut params = GeometryParams::new(bytes);
    params.segment_bytes = 256 << 10;
    params.max_connections = 1;
    params.ring_entries = 64;
    params.batch = 16;
    let geometry = Geometry::compute(&params).expect("geometry");
    let spec = FormatSpec {
        layout_uuid: Uuid::new_v4(),
        device_uuids: vec![Uuid::new_v4()],
        time_ns: 0,
        paths: vec!["bench".into()],
        hw_ids: vec![],
        lease_timeout_ms: fts_layout::DEFAULT_LEASE_TIMEOUT_MS,
        lock_timeout_ms: fts_layout::DEFAULT_LOCK_TIMEOUT_MS,
        io_timeout_ms: fts_layout::DEFAULT_IO_TIMEOUT_MS,
        heartbeat_ms: fts_layout::DEFAULT_HEARTBEAT_MS,
        geometry: geometry.clone(),
    };
    let opts = OpenOptions {
        create_size: Some(bytes),
        ..OpenOptions::default()
    };
    let mut dev = FileDevice::open(path, &opts).expect("open");
    for w in format_plan(&spec) {
        dev.write_at(w.lb * LB as u64, &w.data, WriteMode::Normal)
            .expect("format");
    }
    dev.flush().expect("flush");
    (dev, geometry, layout_id_of(&spec.layout_uuid))
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let (mut dev, geo, id) = formatted(&dir.path().join("ring.img"));
    let mut peer_dev = dev.reopen().expect("reopen");
    let peer_geo = geo.clone();
    // The connector: echoes small messages, swallows big ones, stops on an empty one.
    let peer = std::thread::spawn(move || {
        let mut port =
            RingPort::new(peer_dev.as_mut(), peer_geo, 1, Role::Connector, GEN, id).expect("port");
        port.init_table().expect("init");
        loop {
            let mut msg = Vec::new();
            port.recv(&mut |b: &[u8]| {
                if msg.len() < 64 {
                    msg.extend_from_slice(&b[..b.len().min(64)]);
                }
                Ok::<(), std::io::Error>(())
            })
            .expect("recv");
            if msg.is_empty() {
                return;
            }
            if msg.len() <= 32 {
                let len = msg.len() as u64;
                port.send(&mut msg, len).expect("echo");
            }
        }
    });
    let mut port = RingPort::new(&mut dev, geo, 1, Role::Initiator, GEN, id).expect("port");
    port.init_table().expect("init");
    let small = vec![7u8; 32];
    c.bench_function("round_trip_32B", |b| {
        b.iter(|| {
            let mut m = small.clone();
            port.send(&mut m, 32).expect("send");
            port.recv(&mut |_b: &[u8]| Ok::<(), std::io::Error>(()))
                .expect("recv");
        })
    });
    let big = vec![0xa5u8; BIG];
    let mut g = c.benchmark_group("throughput");
    g.throughput(Throughput::Bytes(BIG as u64));
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(3));
    g.bench_function("one_way_16MiB", |b| {
        b.iter(|| {
            let mut m: &[u8] = &big;
            port.send(&mut m, BIG as u64).expect("send");
        })
    });
    g.finish();
    let mut end: &[u8] = &[];
    port.send(&mut end, 0).expect("stop");
    drop(port);
    peer.join().expect("peer");
}

criterion_group! {
    name = benches;
    // Short runs: the data path's speed goals are `cargo xtask bench`'s.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
