//! The machines' support for several I/Os in flight: a writer hands out
//! batches ahead of those not yet written ([`Writer::write_ahead`]) within
//! its window and in sequence order, and a reader says which batch follows
//! one it has not consumed yet ([`Reader::read_ahead`]), never across the
//! end of a message.

use fts_layout::Role;
use fts_ring::{
    group_end, Reader, ReaderAction, RingConfig, SegmentOutcome, TableImage, Writer, WriterAction,
};

const GEN: u64 = 9;

fn cfg(role: Role) -> RingConfig {
    RingConfig {
        role,
        generation: GEN,
        ring_entries: 8,
        batch: 2,
        payload_capacity: 100,
        max_retries: 3,
    }
}

fn table() -> TableImage {
    TableImage::cleared(GEN, 8, 1, |i| i)
}

#[test]
fn the_writer_hands_out_batches_ahead_in_order_within_its_window() {
    let mut w = Writer::new(cfg(Role::Initiator)).unwrap();
    let mut t = table();
    w.begin_message(20 * 100).unwrap();
    // A window of 8 entries in batches of 2: four batches ahead, no more.
    let ahead: Vec<_> = std::iter::from_fn(|| w.write_ahead()).collect();
    assert_eq!(ahead.len(), 4);
    assert_eq!(w.in_flight(), 4);
    let mut seq = 1;
    for (k, b) in ahead.iter().enumerate() {
        assert_eq!(b.first_index(), 2 * k as u32);
        for s in &b.segments {
            assert_eq!(s.seq, seq);
            assert_eq!(s.offset, (seq - 1) * 100);
            seq += 1;
        }
    }
    // next_action names the oldest batch not yet written.
    assert_eq!(
        w.next_action(),
        WriterAction::WriteSegments(ahead[0].clone())
    );
    // Written in order: each is recorded in the table, nothing else.
    w.on_segments_written(&mut t);
    assert_eq!(w.in_flight(), 3);
    assert!(w.unpublished());
    assert_eq!(t.entries()[0].ptr_process_block_seq, 1);
    assert_eq!(t.entries()[1].ptr_process_block_seq, 2);
    assert_eq!(t.entries()[2].ptr_process_block_seq, 0);
    for _ in 0..3 {
        w.on_segments_written(&mut t);
    }
    assert_eq!(w.next_seq(), 9);
    assert_eq!(w.unacknowledged(), (0, 8));
    assert!(w.write_ahead().is_none());
    w.on_published();
    assert_eq!(w.next_action(), WriterAction::WaitForAck);
}

#[test]
fn the_reader_reads_ahead_within_a_message_only() {
    let mut w = Writer::new(cfg(Role::Initiator)).unwrap();
    let mut wt = table();
    let mut r = Reader::new(cfg(Role::Connector)).unwrap();
    let mut rt = table();
    // 5 segments: batches [0,1] [2,3] [4 last].
    w.begin_message(450).unwrap();
    while w.write_ahead().is_some() {
        w.on_segments_written(&mut wt);
    }
    w.on_published();
    let peer = wt.chunks();
    let ReaderAction::ReadSegments(b0) = r.next_action(&peer).unwrap() else {
        panic!("nothing to read");
    };
    let b1 = r.read_ahead(&peer, &b0).unwrap();
    assert_eq!(b1.first_index(), 2);
    assert_eq!(b1.segments[0].seq, 3);
    let b2 = r.read_ahead(&peer, &b1);
    // read_ahead looks one batch past the one the reader expects, no more.
    assert!(b2.is_none(), "{b2:?}");
    for s in &b0.segments {
        assert_eq!(
            r.on_segment(&mut rt, s, true),
            SegmentOutcome::Accepted { last: false }
        );
    }
    r.on_published();
    // What was read ahead is what the reader asks for next.
    assert_eq!(
        r.next_action(&peer).unwrap(),
        ReaderAction::ReadSegments(b1.clone())
    );
    let b2 = r.read_ahead(&peer, &b1).unwrap();
    assert!(b2.segments.last().unwrap().is_last());
    for s in &b1.segments {
        r.on_segment(&mut rt, s, true);
    }
    // Nothing follows the last segment of a message.
    assert!(r.read_ahead(&peer, &b2).is_none());
    // And a batch rejected in part: what was read ahead is ignored.
    let mut r2 = Reader::new(cfg(Role::Connector)).unwrap();
    let mut rt2 = table();
    let ReaderAction::ReadSegments(a0) = r2.next_action(&peer).unwrap() else {
        panic!("nothing to read");
    };
    let a1 = r2.read_ahead(&peer, &a0).unwrap();
    assert_eq!(
        r2.on_segment(&mut rt2, &a0.segments[0], true),
        SegmentOutcome::Accepted { last: false }
    );
    assert_eq!(
        r2.on_segment(&mut rt2, &a0.segments[1], false),
        SegmentOutcome::Rejected
    );
    for s in &a1.segments {
        assert_eq!(r2.on_segment(&mut rt2, s, true), SegmentOutcome::Ignored);
    }
}

fn cfg_nb(role: Role, n: u32, b: u32) -> RingConfig {
    RingConfig {
        ring_entries: n,
        batch: b,
        ..cfg(role)
    }
}

#[test]
fn group_end_is_the_next_multiple_of_the_batch_or_the_ring_end() {
    assert_eq!(group_end(0, 7, 3), 3);
    assert_eq!(group_end(2, 7, 3), 3);
    assert_eq!(group_end(3, 7, 3), 6);
    assert_eq!(group_end(5, 7, 3), 6);
    assert_eq!(group_end(6, 7, 3), 7);
    assert_eq!(group_end(0, 4, 4), 4);
    assert_eq!(group_end(3, 4, 1), 4);
    assert_eq!(group_end(65_534, 65_535, 65_535), 65_535);
}

/// Batches on both sides stop at every multiple of `B` (and the ring's
/// end), also when a NAK makes the writer start again inside a group.
#[test]
fn batches_never_cross_a_multiple_of_the_batch() {
    let (n, b) = (7, 3);
    let mut w = Writer::new(cfg_nb(Role::Initiator, n, b)).unwrap();
    let mut wt = TableImage::cleared(GEN, n, 1, |i| i);
    let mut r = Reader::new(cfg_nb(Role::Connector, n, b)).unwrap();
    let mut rt = TableImage::cleared(GEN, n, 1, |i| i);
    // 7 segments: [0,3) [3,6) [6,7).
    w.begin_message(7 * 100).unwrap();
    let ahead: Vec<_> = std::iter::from_fn(|| w.write_ahead()).collect();
    let runs: Vec<_> = ahead.iter().map(|b| (b.first_index(), b.count())).collect();
    assert_eq!(runs, [(0, 3), (3, 3), (6, 1)]);
    for _ in &ahead {
        w.on_segments_written(&mut wt);
    }
    w.on_published();
    let peer = wt.chunks();
    // The reader reads the same runs, and reads ahead by them too.
    let ReaderAction::ReadSegments(r0) = r.next_action(&peer).unwrap() else {
        panic!("nothing to read");
    };
    assert_eq!((r0.first_index(), r0.count()), (0, 3));
    let r1 = r.read_ahead(&peer, &r0).unwrap();
    assert_eq!((r1.first_index(), r1.count()), (3, 3));
    let r2 = r.read_ahead_past(&peer, &r0, &r1, 6).unwrap();
    assert_eq!((r2.first_index(), r2.count()), (6, 1));
    assert!(r2.segments[0].is_last());
    // Not the ends of a run read ahead: nothing.
    assert!(r.read_ahead_past(&peer, &r0, &r1, 5).is_none());
    assert!(r.read_ahead_past(&peer, &r1, &r1, 3).is_none());
    assert!(r.read_ahead_past(&peer, &r0, &r2, 7).is_none());
    // Accept 0..3 and 3, reject 4 (seq 5): the writer starts again at 4,
    // inside the group [3,6), and stops at its end.
    for s in &r0.segments {
        r.on_segment(&mut rt, s, true);
    }
    assert_eq!(
        r.on_segment(&mut rt, &r1.segments[0], true),
        SegmentOutcome::Accepted { last: false }
    );
    assert_eq!(
        r.on_segment(&mut rt, &r1.segments[1], false),
        SegmentOutcome::Rejected
    );
    r.on_published();
    assert!(w.on_peer_acks(&rt.chunks()).unwrap());
    let again = w.write_ahead().unwrap();
    assert_eq!((again.first_index(), again.count()), (4, 2));
    assert_eq!(again.segments[0].seq, 8);
    let next = w.write_ahead().unwrap();
    assert_eq!((next.first_index(), next.count()), (6, 1));
    w.on_segments_written(&mut wt);
    w.on_segments_written(&mut wt);
    w.on_published();
    // The reader, expecting index 4 after seq 5, reads [4,6) then [6,7).
    let peer = wt.chunks();
    let ReaderAction::ReadSegments(b4) = r.next_action(&peer).unwrap() else {
        panic!("nothing to read");
    };
    assert_eq!((b4.first_index(), b4.count()), (4, 2));
    let b6 = r.read_ahead(&peer, &b4).unwrap();
    assert_eq!((b6.first_index(), b6.count()), (6, 1));
}
