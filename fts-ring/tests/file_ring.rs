//! The driver over a real formatted file: two threads, each with its own
//! device handle, echo messages of awkward sizes through the rings.

use std::time::{Duration, Instant};

use fts_blockdev::{BlockDevice, FileDevice, OpenOptions, WriteMode};
use fts_layout::{format_plan, layout_id_of, FormatSpec, Geometry, GeometryParams, Role, LB};
use fts_ring::{Error, MessageInfo, RingPort};
use uuid::Uuid;

const GEN: u64 = 3;

fn formatted(dir: &tempfile::TempDir, block_size: u32) -> (FileDevice, Geometry, u64) {
    let bytes = 4 << 20;
    let mut params = GeometryParams::new(bytes);
    params.block_size = block_size;
    params.segment_bytes = 8192;
    params.max_connections = 2;
    params.ring_entries = 4;
    params.batch = 2;
    let geometry = Geometry::compute(&params).expect("geometry");
    let spec = FormatSpec {
        layout_uuid: Uuid::from_u128(0x1234),
        device_uuids: vec![Uuid::from_u128(0x5678)],
        time_ns: 0,
        paths: vec!["test".into()],
        hw_ids: vec![],
        lease_timeout_ms: fts_layout::DEFAULT_LEASE_TIMEOUT_MS,
        lock_timeout_ms: fts_layout::DEFAULT_LOCK_TIMEOUT_MS,
        io_timeout_ms: fts_layout::DEFAULT_IO_TIMEOUT_MS,
        heartbeat_ms: fts_layout::DEFAULT_HEARTBEAT_MS,
        geometry: geometry.clone(),
    };
    spec.validate().expect("spec");
    let opts = OpenOptions {
        create_size: Some(bytes),
        block_size: Some(block_size),
        ..OpenOptions::default()
    };
    let mut dev = FileDevice::open(dir.path().join("disk.img"), &opts).expect("open");
    for w in format_plan(&spec) {
        dev.write_at(w.lb * LB as u64, &w.data, WriteMode::Normal)
            .expect("format write");
    }
    dev.flush().expect("flush");
    (dev, geometry, layout_id_of(&spec.layout_uuid))
}

fn pattern(len: usize, tag: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 8) ^ tag.wrapping_mul(29)) as u8)
        .collect()
}

fn deadline(secs: u64) -> fts_ring::Liveness<'static> {
    let end = Instant::now() + Duration::from_secs(secs);
    Box::new(move || {
        if Instant::now() > end {
            Err(Error::PeerGone {
                slot: 2,
                reason: "test deadline".into(),
            })
        } else {
            Ok(())
        }
    })
}

fn recv_vec(port: &mut RingPort<'_>) -> (Vec<u8>, MessageInfo) {
    let mut got = Vec::new();
    let info = port
        .recv(&mut |b: &[u8]| {
            got.extend_from_slice(b);
            Ok::<(), std::io::Error>(())
        })
        .expect("recv");
    (got, info)
}

fn echo(block_size: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut dev, geo, layout_id) = formatted(&dir, block_size);
    let p = geo.payload_capacity();
    let n = geo.ring_entries as usize;
    let sizes = [
        0,
        1,
        p - 1,
        p,
        p + 1,
        2 * p,
        n * p + 17,
        3 * n * p + 5,
        0,
        100,
    ];
    let mut other = dev.reopen().expect("reopen");

    let geo2 = geo.clone();
    let connector = std::thread::spawn(move || {
        let mut port =
            RingPort::new(other.as_mut(), geo2, 2, Role::Connector, GEN, layout_id).expect("port");
        port.set_liveness(deadline(60));
        port.init_table().expect("init");
        for k in 0..sizes.len() {
            let (msg, info) = recv_vec(&mut port);
            assert_eq!(info.len as usize, msg.len());
            assert_eq!(usize::from(info.req_id), k % 16);
            port.send(&mut msg.as_slice(), msg.len() as u64)
                .expect("echo back");
        }
    });

    let mut port = RingPort::new(&mut dev, geo, 2, Role::Initiator, GEN, layout_id).expect("port");
    port.set_liveness(deadline(60));
    port.init_table().expect("init");
    for (k, &len) in sizes.iter().enumerate() {
        let msg = pattern(len, k);
        port.send(&mut msg.as_slice(), len as u64).expect("send");
        let (back, info) = recv_vec(&mut port);
        assert_eq!(info.len as usize, len);
        assert!(back == msg, "message {k} of {len} bytes differs");
    }
    connector.join().expect("connector thread");
}

#[test]
fn echo_awkward_sizes_512() {
    echo(512);
}

#[test]
fn echo_awkward_sizes_4096() {
    echo(4096);
}

#[test]
fn send_from_a_file_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut dev, geo, layout_id) = formatted(&dir, 512);
    let len = 5 * geo.payload_capacity() + 3;
    let data = pattern(len, 9);
    let path = dir.path().join("src.bin");
    std::fs::write(&path, &data).expect("write source");
    let mut other = dev.reopen().expect("reopen");
    let geo2 = geo.clone();
    let rx = std::thread::spawn(move || {
        let mut port =
            RingPort::new(other.as_mut(), geo2, 1, Role::Connector, GEN, layout_id).expect("port");
        port.set_liveness(deadline(60));
        port.init_table().expect("init");
        recv_vec(&mut port).0
    });
    let mut port = RingPort::new(&mut dev, geo, 1, Role::Initiator, GEN, layout_id).expect("port");
    port.set_liveness(deadline(60));
    port.init_table().expect("init");
    let mut file = std::fs::File::open(&path).expect("open source");
    port.send(&mut file, len as u64).expect("send");
    assert!(rx.join().expect("rx") == data);
}

#[test]
fn short_source_and_dead_peer_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut dev, geo, layout_id) = formatted(&dir, 512);
    let mut port =
        RingPort::new(&mut dev, geo.clone(), 1, Role::Initiator, GEN, layout_id).expect("port");
    port.init_table().expect("init");
    let err = port.send(&mut &b"abc"[..], 10).expect_err("short");
    assert!(
        matches!(err, Error::SourceShort { offset: 3, len: 10 }),
        "{err}"
    );

    drop(port);
    let mut port = RingPort::new(&mut dev, geo, 1, Role::Initiator, GEN, layout_id).expect("port");
    port.init_table().expect("init");
    let mut calls = 0;
    port.set_liveness(Box::new(move || {
        calls += 1;
        if calls > 3 {
            Err(Error::PeerGone {
                slot: 1,
                reason: "no lease progress".into(),
            })
        } else {
            Ok(())
        }
    }));
    let err = port.send(&mut &b"hello"[..], 5).expect_err("nobody acks");
    assert!(matches!(err, Error::PeerGone { slot: 1, .. }), "{err}");
}

#[test]
fn bad_slot_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut dev, geo, layout_id) = formatted(&dir, 512);
    let err = RingPort::new(&mut dev, geo, 3, Role::Initiator, GEN, layout_id).expect_err("slot");
    assert!(matches!(err, Error::Config { .. }), "{err}");
}
