//! Test helpers shared by the integration tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use fts_blockdev::{OpenOptions, WriteMode};
use fts_layout::{format_plan, FormatSpec, Geometry, GeometryParams, LB};
use uuid::Uuid;

/// Formats a 16 MiB file for tests.
pub fn format(path: &Path, max_connections: u32) {
    format_with(path, max_connections, 10_000, 1_000);
}

/// Formats a 16 MiB file with the given lease timeout and heartbeat.
pub fn format_with(path: &Path, max_connections: u32, lease_timeout_ms: u32, heartbeat_ms: u32) {
    let mut dev = fts_blockdev::open(
        path.to_str().unwrap(),
        &OpenOptions {
            create_size: Some(16 << 20),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let g = Geometry::compute(&GeometryParams {
        master_bytes: dev.size_bytes(),
        secondary_bytes: vec![],
        block_size: dev.block_size(),
        segment_bytes: 64 << 10,
        max_connections,
        ring_entries: 8,
        batch: 2,
    })
    .unwrap();
    let spec = FormatSpec {
        geometry: g,
        layout_uuid: Uuid::new_v4(),
        device_uuids: vec![Uuid::new_v4()],
        time_ns: 1,
        paths: vec![path.display().to_string()],
        hw_ids: vec![String::new()],
        lease_timeout_ms,
        lock_timeout_ms: 10_000,
        io_timeout_ms: 30_000,
        heartbeat_ms,
    };
    for w in format_plan(&spec) {
        dev.write_at(w.lb * LB as u64, &w.data, WriteMode::Normal)
            .unwrap();
    }
    dev.flush().unwrap();
}
