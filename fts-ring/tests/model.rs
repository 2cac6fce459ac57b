//! Model tests of the pure ring state machine: a writer and a reader on an
//! in-memory "disk" (two published tables and N segment slots), stepped in
//! arbitrary interleavings, with injected verification failures.

use std::collections::HashSet;

use fts_layout::{PtrChunk, PtrEntry, Role, FLG_LAST, FLG_NAK};
use fts_ring::{
    group_end, MachineError, Reader, ReaderAction, RingConfig, Segment, SegmentOutcome, TableImage,
    Writer, WriterAction,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct StoredSeg {
    seq: u64,
    req_id: u8,
    flags: u8,
    payload: Vec<u8>,
}

struct Model {
    n: u32,
    b: u32,
    writer: Writer,
    w_table: TableImage,
    reader: Reader,
    r_table: TableImage,
    /// Published (on-disk) copies.
    disk_w: Vec<PtrChunk>,
    disk_r: Vec<PtrChunk>,
    segs: Vec<Option<StoredSeg>>,
    /// Messages to send and their progress.
    messages: Vec<Vec<u8>>,
    sent: usize,
    sending: bool,
    /// What the reader delivered.
    received: Vec<Vec<u8>>,
    current: Vec<u8>,
    /// Reader bookkeeping for the overwrite invariant.
    accepted: HashSet<u64>,
    naks: Vec<u64>,
    /// Reads (counted from 0) whose verification is forced to fail.
    corrupt_reads: HashSet<u32>,
    reads: u32,
    rejected: u32,
    /// The reader reads a message's first segment before the writer's
    /// table announces it, as the driver does ([`Reader::announce`]).
    early: bool,
    /// First segments the reader took that way.
    early_taken: u32,
}

fn cfg(role: Role, n: u32, b: u32, p: usize, max_retries: u32) -> RingConfig {
    RingConfig {
        role,
        generation: 7,
        ring_entries: n,
        batch: b,
        payload_capacity: p,
        max_retries,
    }
}

fn message(len: usize, tag: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ tag.wrapping_mul(131)) as u8)
        .collect()
}

impl Model {
    fn new(n: u32, b: u32, p: usize, messages: Vec<Vec<u8>>, corrupt: HashSet<u32>) -> Model {
        let w_cfg = cfg(Role::Initiator, n, b, p, 8);
        let r_cfg = cfg(Role::Connector, n, b, p, 8);
        let w_table = TableImage::cleared(7, n, 1, |i| 100 + i);
        let r_table = TableImage::cleared(7, n, 1, |i| 200 + i);
        // The disk starts with tables of an older generation full of
        // plausible-looking entries: they must never match.
        let stale = |role: Role| {
            let e: Vec<PtrEntry> = (0..n)
                .map(|i| PtrEntry {
                    ptr_process_segment_flg: role.flag() | FLG_LAST,
                    ptr_process_block_seq: u64::from(i) + 1,
                    ptr_len: 0,
                    ack_flg: role.flag(),
                    ack_seq: u64::from(i) + 1,
                    ..PtrEntry::default()
                })
                .collect();
            TableImage::new(6, e).chunks()
        };
        Model {
            n,
            b,
            writer: Writer::new(w_cfg).expect("writer"),
            w_table,
            reader: Reader::new(r_cfg).expect("reader"),
            r_table,
            disk_w: stale(Role::Initiator),
            disk_r: stale(Role::Connector),
            segs: vec![None; n as usize],
            messages,
            sent: 0,
            sending: false,
            received: Vec::new(),
            current: Vec::new(),
            accepted: HashSet::new(),
            naks: Vec::new(),
            corrupt_reads: corrupt,
            reads: 0,
            rejected: 0,
            early: false,
            early_taken: 0,
        }
    }

    fn publish(table: &mut TableImage, disk: &mut [PtrChunk]) {
        for run in table.dirty_runs() {
            for c in run {
                disk[c as usize] = table.chunk(c);
            }
        }
        table.mark_clean();
    }

    fn done(&self) -> bool {
        self.received.len() == self.messages.len() && !self.sending
    }

    fn step_writer(&mut self) -> Result<(), MachineError> {
        if !self.sending {
            if self.sent == self.messages.len() {
                return Ok(());
            }
            self.writer
                .begin_message(self.messages[self.sent].len() as u64)?;
            self.sending = true;
        }
        match self.writer.next_action() {
            WriterAction::WriteSegments(b) => {
                assert!(b.count() >= 1);
                assert!(b.first_index() + b.count() <= self.n, "batch wraps");
                assert!(
                    b.first_index() + b.count() <= group_end(b.first_index(), self.n, self.b),
                    "writer's batch {}+{} crosses a multiple of {}",
                    b.first_index(),
                    b.count(),
                    self.b
                );
                let msg = &self.messages[self.sent];
                for (j, s) in b.segments.iter().enumerate() {
                    assert_eq!(s.index, b.first_index() + j as u32, "not contiguous");
                    // Never overwrite a segment the reader may still need.
                    if let Some(old) = &self.segs[s.index as usize] {
                        assert!(
                            self.accepted.contains(&old.seq)
                                || self.naks.iter().any(|&k| k <= old.seq),
                            "writer overwrote unconsumed seq {} at {} with {}",
                            old.seq,
                            s.index,
                            s.seq
                        );
                    }
                    let start = s.offset as usize;
                    let payload = msg[start..start + s.len as usize].to_vec();
                    self.segs[s.index as usize] = Some(StoredSeg {
                        seq: s.seq,
                        req_id: s.req_id,
                        flags: s.flags,
                        payload,
                    });
                }
                self.writer.on_segments_written(&mut self.w_table);
            }
            WriterAction::PublishTable => {
                Self::publish(&mut self.w_table, &mut self.disk_w);
                self.writer.on_published();
            }
            WriterAction::WaitForAck => {
                self.writer.on_peer_acks(&self.disk_r)?;
            }
            WriterAction::Done => {
                self.sent += 1;
                self.sending = false;
            }
            WriterAction::Idle => panic!("idle while sending"),
        }
        Ok(())
    }

    fn step_reader(&mut self) -> Result<(), MachineError> {
        let mut view = self.disk_w.clone();
        if self.early {
            // The expected first segment, if the writer wrote it already
            // (published or not), as its header says.
            if let Some(x) = self.reader.message_start() {
                if let Some(st) = self.segs[x.index as usize].as_ref() {
                    let seg = Segment {
                        index: x.index,
                        seq: st.seq,
                        offset: 0,
                        len: st.payload.len() as u32,
                        flags: st.flags,
                        req_id: st.req_id,
                    };
                    let unpublished = fts_ring::peer_entry(&self.disk_w, x.index)
                        .is_some_and(|(_, e)| e.ptr_process_block_seq != st.seq);
                    if self.reader.announce(&mut view, &seg) && unpublished {
                        self.early_taken += 1;
                    }
                }
            }
        }
        match self.reader.next_action(&view)? {
            ReaderAction::ReadSegments(b) => {
                assert!(b.count() >= 1);
                assert!(
                    b.first_index() + b.count() <= group_end(b.first_index(), self.n, self.b),
                    "reader's batch {}+{} crosses a multiple of {}",
                    b.first_index(),
                    b.count(),
                    self.b
                );
                for (j, s) in b.segments.iter().enumerate() {
                    assert_eq!(s.index, b.first_index() + j as u32, "not contiguous");
                }
                let mut rejected = false;
                for s in &b.segments {
                    let stored = self.segs[s.index as usize].clone();
                    let corrupt = self.corrupt_reads.contains(&self.reads);
                    self.reads += 1;
                    let ok = !corrupt
                        && stored.as_ref().is_some_and(|st| {
                            st.seq == s.seq
                                && st.req_id == s.req_id
                                && st.flags == s.flags
                                && st.payload.len() == s.len as usize
                        });
                    let out = self.reader.on_segment(&mut self.r_table, s, ok);
                    if rejected {
                        assert_eq!(out, SegmentOutcome::Ignored);
                        continue;
                    }
                    match out {
                        SegmentOutcome::Accepted { last } => {
                            assert!(ok);
                            assert!(self.accepted.insert(s.seq), "seq {} twice", s.seq);
                            let st = stored.expect("accepted a missing segment");
                            self.current.extend_from_slice(&st.payload);
                            if last {
                                let info = self.reader.take_completed().expect("completed");
                                assert_eq!(info.len as usize, self.current.len());
                                self.received.push(std::mem::take(&mut self.current));
                            }
                        }
                        SegmentOutcome::Rejected => {
                            assert!(!ok);
                            rejected = true;
                            self.rejected += 1;
                            self.naks.push(s.seq);
                        }
                        SegmentOutcome::Ignored => panic!("first segment of batch ignored"),
                    }
                }
            }
            ReaderAction::PublishTable => {
                Self::publish(&mut self.r_table, &mut self.disk_r);
                self.reader.on_published();
            }
            ReaderAction::Wait => {}
        }
        Ok(())
    }

    /// Runs with `schedule` (true = writer steps), then alternates.
    fn run(&mut self, schedule: &[bool]) -> Result<(), MachineError> {
        let mut i = 0usize;
        while !self.done() {
            let w = schedule.get(i).copied().unwrap_or(i % 2 == 0);
            if w {
                self.step_writer()?;
            } else {
                self.step_reader()?;
            }
            i += 1;
            assert!(i < 200_000, "no progress (deadlock?)");
        }
        // The reader has published everything once it is idle.
        Ok(())
    }

    fn check(&self) {
        assert_eq!(self.received.len(), self.messages.len());
        for (k, (got, want)) in self.received.iter().zip(&self.messages).enumerate() {
            assert!(
                got == want,
                "message {k} differs ({} vs {} bytes)",
                got.len(),
                want.len()
            );
        }
    }
}

fn run_case(
    n: u32,
    b: u32,
    p: usize,
    sizes: &[usize],
    schedule: &[bool],
    corrupt: HashSet<u32>,
) -> Model {
    run_case_with(n, b, p, sizes, schedule, corrupt, false)
}

fn run_case_with(
    n: u32,
    b: u32,
    p: usize,
    sizes: &[usize],
    schedule: &[bool],
    corrupt: HashSet<u32>,
    early: bool,
) -> Model {
    let msgs = sizes
        .iter()
        .enumerate()
        .map(|(k, &l)| message(l, k))
        .collect();
    let mut m = Model::new(n, b, p, msgs, corrupt);
    m.early = early;
    m.run(schedule).expect("machine error");
    m.check();
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_interleavings_deliver_every_message(
        n in 2u32..=8,
        b_frac in 0.0f64..1.0,
        p in 1usize..=7,
        sizes_p in prop::collection::vec(0usize..=70, 1..6),
        schedule in prop::collection::vec(any::<bool>(), 0..400),
        early in any::<bool>(),
    ) {
        let b = 1 + ((f64::from(n) * b_frac) as u32).min(n - 1);
        // Message sizes 0..=10 P.
        let sizes: Vec<usize> = sizes_p.iter().map(|&s| s * p / 7).collect();
        run_case_with(n, b, p, &sizes, &schedule, HashSet::new(), early);
    }

    #[test]
    fn corrupt_segments_are_retransmitted(
        n in 2u32..=8,
        b_frac in 0.0f64..1.0,
        p in 1usize..=7,
        sizes_p in prop::collection::vec(0usize..=70, 1..5),
        schedule in prop::collection::vec(any::<bool>(), 0..400),
        corrupt in prop::collection::hash_set(0u32..60, 0..4),
        early in any::<bool>(),
    ) {
        let b = 1 + ((f64::from(n) * b_frac) as u32).min(n - 1);
        let sizes: Vec<usize> = sizes_p.iter().map(|&s| s * p / 7).collect();
        let m = run_case_with(n, b, p, &sizes, &schedule, corrupt, early);
        // Each injected failure that hit a segment caused one NAK.
        prop_assert!(m.rejected as usize <= m.corrupt_reads.len());
    }
}

/// Exhaustive: ring 2, batch 1..=2, every schedule of 10 steps (then
/// alternating), messages of 0..=3 P.
#[test]
fn exhaustive_small_rings() {
    let p = 3;
    let sizes = [0usize, 1, 3, 4, 9, 2];
    for b in 1..=2 {
        for bits in 0u32..(1 << 10) {
            let schedule: Vec<bool> = (0..10).map(|i| bits >> i & 1 == 1).collect();
            run_case(2, b, p, &sizes, &schedule, HashSet::new());
            run_case(2, b, p, &sizes, &schedule, HashSet::from([bits % 7]));
        }
    }
}

/// A reader that takes each message's first segment as soon as the writer
/// wrote it, before the writer's table says so, gets every message, and
/// the writer still never overwrites an entry before its acknowledgement
/// (checked in every step); a NAK of such a segment is recovered.
#[test]
fn first_segments_read_before_the_table_announces_them() {
    // Pseudo-random schedules: in some, the reader steps between the
    // write of a message's first segment and the table's publication.
    let sizes = [0, 3, 4, 9, 1];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut early = 0;
    for _ in 0..64 {
        let schedule: Vec<bool> = (0..400)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x & 1 == 0
            })
            .collect();
        early += run_case_with(4, 2, 4, &sizes, &schedule, HashSet::new(), true).early_taken;
    }
    assert!(early > 0, "no first segment was read early");
    let schedule: Vec<bool> = (0..400).map(|i| i % 2 == 0).collect();
    let m = run_case_with(4, 2, 4, &sizes, &schedule, HashSet::from([0, 3]), true);
    assert!(m.rejected >= 1);
    // Not after a NAK (the next copy has a fresh sequence number), nor
    // before the writer's table was read in this generation.
    let (_, r) = cfgs(4, 2);
    let mut reader = Reader::new(r).unwrap();
    let seg = Segment {
        index: 0,
        seq: 1,
        offset: 0,
        len: 0,
        flags: Role::Initiator.flag() | FLG_LAST,
        req_id: 0,
    };
    let mut old = vec![PtrChunk::default(); 1];
    assert!(!reader.announce(&mut old, &seg), "generation 0 table");
    let mut cur = vec![
        PtrChunk {
            generation: 7,
            ..PtrChunk::default()
        };
        1
    ];
    assert!(!reader.announce(&mut cur, &Segment { seq: 2, ..seg }));
    assert!(reader.announce(&mut cur, &seg));
    assert_eq!(
        reader.next_action(&cur).unwrap(),
        ReaderAction::ReadSegments(fts_ring::Batch {
            segments: vec![seg]
        })
    );
}

#[test]
fn a_single_nak_rolls_back_and_retransmits_with_fresh_seqs() {
    let m = run_case(4, 2, 4, &[20], &[], HashSet::from([2]));
    assert_eq!(m.rejected, 1);
    assert_eq!(m.naks, vec![3]);
    // 5 segments delivered; the rejected seq 3 never accepted.
    assert!(!m.accepted.contains(&3));
    assert_eq!(m.accepted.len(), 5);
}

#[test]
fn persistent_corruption_ends_with_too_many_retries() {
    let msgs = vec![message(10, 0)];
    let mut m = Model::new(2, 1, 4, msgs, (0..1000).collect());
    let err = m.run(&[]).expect_err("must give up");
    assert!(
        matches!(err, MachineError::TooManyRetries { retries: 9, .. }),
        "{err:?}"
    );
}

fn cfgs(n: u32, b: u32) -> (RingConfig, RingConfig) {
    (
        cfg(Role::Initiator, n, b, 4, 8),
        cfg(Role::Connector, n, b, 4, 8),
    )
}

#[test]
fn stale_generation_or_wrong_role_never_matches() {
    let (wc, rc) = cfgs(4, 2);
    let mut reader = Reader::new(rc).expect("reader");
    let good = PtrEntry {
        ptr_process_segment_flg: Role::Initiator.flag() | FLG_LAST,
        ptr_process_block_seq: 1,
        ptr_len: 3,
        ..PtrEntry::default()
    };
    let table = |gen: u64, e: PtrEntry| TableImage::new(gen, vec![e; 4]).chunks();
    // Older generation.
    assert_eq!(
        reader.next_action(&table(6, good)).expect("ok"),
        ReaderAction::Wait
    );
    // Written by the wrong role (our own flag).
    let wrong_role = PtrEntry {
        ptr_process_segment_flg: Role::Connector.flag() | FLG_LAST,
        ..good
    };
    assert_eq!(
        reader.next_action(&table(7, wrong_role)).expect("ok"),
        ReaderAction::Wait
    );
    // Wrong request id, wrong seq.
    for e in [
        PtrEntry {
            ptr_process_req_id: 1,
            ..good
        },
        PtrEntry {
            ptr_process_block_seq: 2,
            ..good
        },
    ] {
        assert_eq!(
            reader.next_action(&table(7, e)).expect("ok"),
            ReaderAction::Wait
        );
    }
    // The right one.
    assert!(matches!(
        reader.next_action(&table(7, good)).expect("ok"),
        ReaderAction::ReadSegments(b) if b.count() == 1 && b.segments[0].is_last()
    ));

    // The writer ignores acks of an older generation or a wrong role.
    let mut writer = Writer::new(wc).expect("writer");
    let mut img = TableImage::cleared(7, 4, 1, |i| i + 1);
    writer.begin_message(3).expect("begin");
    assert!(matches!(
        writer.next_action(),
        WriterAction::WriteSegments(_)
    ));
    writer.on_segments_written(&mut img);
    assert_eq!(writer.next_action(), WriterAction::PublishTable);
    writer.on_published();
    assert_eq!(writer.next_action(), WriterAction::WaitForAck);
    let ack = PtrEntry {
        ack_flg: Role::Connector.flag(),
        ack_seq: 1,
        ..PtrEntry::default()
    };
    assert!(!writer.on_peer_acks(&table(6, ack)).expect("ok"));
    let own = PtrEntry {
        ack_flg: Role::Initiator.flag(),
        ..ack
    };
    assert!(!writer.on_peer_acks(&table(7, own)).expect("ok"));
    assert!(writer.on_peer_acks(&table(7, ack)).expect("ok"));
    assert_eq!(writer.next_action(), WriterAction::Done);
    assert_eq!(writer.next_action(), WriterAction::Idle);
}

#[test]
fn empty_message_is_one_last_segment_and_req_ids_cycle() {
    let (wc, _) = cfgs(2, 1);
    let mut writer = Writer::new(wc).expect("writer");
    let mut img = TableImage::cleared(7, 2, 1, |i| i + 1);
    for k in 0..20u64 {
        writer.begin_message(0).expect("begin");
        assert_eq!(writer.begin_message(0), Err(MachineError::Busy));
        let WriterAction::WriteSegments(b) = writer.next_action() else {
            panic!("expected a write");
        };
        assert_eq!(b.count(), 1);
        let s = b.segments[0];
        assert_eq!((s.index, s.len, s.seq), (0, 0, k + 1));
        assert_eq!(s.flags, Role::Initiator.flag() | FLG_LAST);
        assert_eq!(u64::from(s.req_id), k % 16);
        writer.on_segments_written(&mut img);
        writer.on_published();
        let ack = PtrEntry {
            ack_flg: Role::Connector.flag(),
            ack_seq: k + 1,
            ..PtrEntry::default()
        };
        assert!(writer
            .on_peer_acks(&TableImage::new(7, vec![ack; 2]).chunks())
            .expect("ok"));
        assert_eq!(writer.next_action(), WriterAction::Done);
    }
}

#[test]
fn nak_flag_and_dirty_runs() {
    let (_, rc) = cfgs(40, 4);
    let mut reader = Reader::new(rc).expect("reader");
    let mut img = TableImage::cleared(7, 40, 1, |i| i + 1);
    assert_eq!(img.dirty_runs(), vec![0..3]);
    img.mark_clean();
    assert!(!img.is_dirty());
    let e = PtrEntry {
        ptr_process_segment_flg: Role::Initiator.flag(),
        ptr_process_block_seq: 1,
        ptr_len: 4,
        ..PtrEntry::default()
    };
    let ReaderAction::ReadSegments(b) = reader
        .next_action(&TableImage::new(7, vec![e; 40]).chunks())
        .expect("ok")
    else {
        panic!("expected a read");
    };
    assert_eq!(b.count(), 1);
    assert_eq!(
        reader.on_segment(&mut img, &b.segments[0], false),
        SegmentOutcome::Rejected
    );
    let a = img.entries()[0];
    assert_eq!(a.ack_flg, Role::Connector.flag() | FLG_NAK);
    assert_eq!(a.ack_seq, 1);
    assert_eq!(img.dirty_runs(), vec![0..1]);
    // A NAK is published at once; afterwards seq 1 is not accepted again.
    assert_eq!(
        reader.next_action(&[]).expect("ok"),
        ReaderAction::PublishTable
    );
    reader.on_published();
    assert_eq!(reader.expect().seq, 2);
    assert_eq!(
        reader
            .next_action(&TableImage::new(7, vec![e; 40]).chunks())
            .expect("ok"),
        ReaderAction::Wait
    );
}

#[test]
fn bad_length_is_a_protocol_error() {
    let (_, rc) = cfgs(4, 2);
    let mut reader = Reader::new(rc).expect("reader");
    let e = PtrEntry {
        ptr_process_segment_flg: Role::Initiator.flag(),
        ptr_process_block_seq: 1,
        ptr_len: 3, // not last, but short
        ..PtrEntry::default()
    };
    let err = reader
        .next_action(&TableImage::new(7, vec![e; 4]).chunks())
        .expect_err("protocol");
    assert!(matches!(
        err,
        MachineError::Protocol {
            index: 0,
            seq: 1,
            ..
        }
    ));
}

#[test]
fn config_is_validated() {
    for (n, b, p) in [(1, 1, 4), (4, 0, 4), (4, 5, 4), (4, 2, 0)] {
        let c = cfg(Role::Initiator, n, b, p, 8);
        assert!(Writer::new(c).is_err(), "{n} {b} {p}");
        assert!(Reader::new(c).is_err(), "{n} {b} {p}");
    }
}
