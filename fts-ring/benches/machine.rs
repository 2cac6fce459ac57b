//! The pure ring machines, no I/O: one direction of a connection, a
//! [`Writer`] on one side and a [`Reader`] on the other, moving messages of
//! 1, one batch and 1024 segments through their `next_action`/`on_*`
//! cycles. `pure` hands the tables over as chunks in memory; `codec`
//! also encodes every published chunk and decodes the whole table at each
//! poll, as the driver does around its I/O. The figure is the protocol's
//! CPU cost per segment, without the data I/O and payload CRCs (those are
//! in fts-layout's `codec` bench).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fts_layout::{Expect, PtrChunk, Role, Stamp, RECORD_SIZE};
use fts_ring::Reader;
use fts_ring::{ReaderAction, RingConfig, TableImage, Writer, WriterAction, DEFAULT_MAX_RETRIES};

const GENERATION: u64 = 7;
const LAYOUT_ID: u64 = 0x00f7_5f75;

/// One direction: the initiator writes, the connector reads.
struct Direction {
    writer: Writer,
    reader: Reader,
    /// The initiator's table (its writer's data halves).
    writer_table: TableImage,
    /// The connector's table (its reader's ack halves).
    reader_table: TableImage,
    /// The initiator's table as the connector last read it.
    writer_seen: Vec<PtrChunk>,
    /// The connector's table as the initiator last read it.
    reader_seen: Vec<PtrChunk>,
    /// Encode and decode the tables, as the driver does.
    codec: bool,
    /// Encoded tables, as on disk.
    writer_disk: Vec<u8>,
    reader_disk: Vec<u8>,
}

fn config(role: Role, n: u32, b: u32, seg_bytes: usize) -> RingConfig {
    RingConfig {
        role,
        generation: GENERATION,
        ring_entries: n,
        batch: b,
        payload_capacity: seg_bytes - fts_layout::SEG_HDR_SIZE,
        max_retries: DEFAULT_MAX_RETRIES,
    }
}

/// Publishes the dirty chunks of `table` (encoding them into `disk` when
/// `codec`), and returns the table as the peer reads it next (decoding
/// all of `disk` when `codec`).
fn publish(table: &mut TableImage, disk: &mut [u8], codec: bool) -> Vec<PtrChunk> {
    if !codec {
        table.mark_clean();
        return table.chunks();
    }
    for run in table.dirty_runs() {
        for c in run {
            let at = c as usize * RECORD_SIZE;
            disk[at..at + RECORD_SIZE]
                .copy_from_slice(&table.chunk(c).encode(Stamp::new(LAYOUT_ID, c)));
        }
    }
    table.mark_clean();
    disk.chunks(RECORD_SIZE)
        .enumerate()
        .map(|(c, rec)| PtrChunk::decode(rec, Expect::exact(LAYOUT_ID, c as u32)).expect("chunk"))
        .collect()
}

impl Direction {
    fn new(n: u32, b: u32, seg_bytes: usize, codec: bool) -> Direction {
        let seg_lbs = (seg_bytes / fts_layout::LB) as u16;
        let writer_table = TableImage::cleared(GENERATION, n, seg_lbs, |i| 1 + i);
        let reader_table = TableImage::cleared(GENERATION, n, seg_lbs, |i| 1 + n + i);
        let bytes = writer_table.chunk_count() as usize * RECORD_SIZE;
        let mut d = Direction {
            writer: Writer::new(config(Role::Initiator, n, b, seg_bytes)).expect("writer"),
            reader: Reader::new(config(Role::Connector, n, b, seg_bytes)).expect("reader"),
            writer_seen: Vec::new(),
            reader_seen: Vec::new(),
            writer_table,
            reader_table,
            codec,
            writer_disk: vec![0; bytes],
            reader_disk: vec![0; bytes],
        };
        d.writer_seen = publish(&mut d.writer_table, &mut d.writer_disk, codec);
        d.reader_seen = publish(&mut d.reader_table, &mut d.reader_disk, codec);
        d
    }

    /// Moves one message of `len` bytes; returns the segments written.
    fn send(&mut self, len: u64) -> u64 {
        self.writer.begin_message(len).expect("begin");
        let mut segments = 0;
        loop {
            match self.writer.next_action() {
                WriterAction::WriteSegments(b) => {
                    segments += u64::from(b.count());
                    self.writer.on_segments_written(&mut self.writer_table);
                }
                WriterAction::PublishTable => {
                    self.writer_seen =
                        publish(&mut self.writer_table, &mut self.writer_disk, self.codec);
                    self.writer.on_published();
                }
                WriterAction::WaitForAck => {
                    self.read_all();
                    let changed = self.writer.on_peer_acks(&self.reader_seen).expect("acks");
                    assert!(
                        changed,
                        "the writer waits but the reader acknowledged nothing"
                    );
                }
                WriterAction::Done => break,
                WriterAction::Idle => panic!("idle during a message"),
            }
        }
        let done = self.reader.take_completed().expect("message completed");
        assert_eq!(done.len, len);
        segments
    }

    /// Runs the reader until it waits for the writer.
    fn read_all(&mut self) {
        loop {
            match self.reader.next_action(&self.writer_seen).expect("reader") {
                ReaderAction::ReadSegments(b) => {
                    for s in &b.segments {
                        self.reader.on_segment(&mut self.reader_table, s, true);
                    }
                }
                ReaderAction::PublishTable => {
                    self.reader_seen =
                        publish(&mut self.reader_table, &mut self.reader_disk, self.codec);
                    self.reader.on_published();
                }
                ReaderAction::Wait => return,
            }
        }
    }
}

fn machine(c: &mut Criterion) {
    // (ring entries, batch, segment bytes): what `format` chooses for 1 GiB
    // and 16 connections, and the defaults (640 × 64 KiB, batch 8).
    for (n, b, seg) in [(127u32, 4u32, 256usize << 10), (640, 8, 64 << 10)] {
        let mut g = c.benchmark_group(format!("ring_{n}x{}KiB_batch_{b}", seg >> 10));
        for codec in [false, true] {
            let mut d = Direction::new(n, b, seg, codec);
            let p = (seg - fts_layout::SEG_HDR_SIZE) as u64;
            for segments in [1u64, u64::from(b), 1024] {
                g.throughput(Throughput::Elements(segments));
                let id = BenchmarkId::new(if codec { "codec" } else { "pure" }, segments);
                g.bench_with_input(id, &segments, |bch, &k| {
                    bch.iter(|| assert_eq!(d.send(black_box(k * p)), k))
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(700));
    targets = machine
}
criterion_main!(benches);
