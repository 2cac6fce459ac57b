//! Property tests of the record codecs: round trips, robustness on
//! arbitrary bytes, all-zero → Empty, and single-bit corruption detection.
#![allow(clippy::unwrap_used)]

use fts_layout::*;
use proptest::prelude::*;
use uuid::Uuid;

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<[u8; 16]>().prop_map(Uuid::from_bytes)
}

/// A string of at most `max` bytes without NUL.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..=max)
        .prop_map(move |cs| {
            let mut s = String::new();
            for c in cs {
                if s.len() + c.len_utf8() > max {
                    break;
                }
                s.push(c);
            }
            s
        })
}

fn os() -> impl Strategy<Value = OsType> {
    (0u32..=5).prop_map(|c| OsType::from_code(c).unwrap())
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Initiator), Just(Role::Connector)]
}

fn stamp() -> impl Strategy<Value = Stamp> {
    (any::<u64>(), any::<u32>()).prop_map(|(l, i)| Stamp::new(l, i))
}

prop_compose! {
    fn mcb()(
        role in prop_oneof![Just(DeviceRole::Master), Just(DeviceRole::Secondary)],
        layout in uuid(), device in uuid(),
        uuids in proptest::collection::vec(uuid(), 1..=8),
        dev_pick in any::<proptest::sample::Index>(),
        a in any::<[u32; 12]>(), b in any::<[u64; 7]>(),
        name in text(PATH_MAX),
        minor in 0..=FORMAT_MINOR, backup in any::<u64>(),
    ) -> Mcb {
        Mcb {
            blk5_id: role,
            blk5_layout_uuid: layout,
            blk5_device_uuid: device,
            blk5_dev_id: dev_pick.index(uuids.len()) as u32 + 1,
            blk5_seg_size: a[0],
            blk5_time_id: b[0],
            blk5_tot_seg_num: a[1],
            blk5_max_connections: a[2],
            blk5_process_id_table_ptr: b[1],
            blk5_secondary_device_table_ptr: b[2],
            blk5_secondary_device_entrynum: uuids.len() as u32,
            blk5_ptr_seg_per_process: a[3],
            blk5_start_process_segment_ptr: b[3],
            blk5_mast_sec_start_segment_ptr: b[4],
            blk5_maxptr: a[4],
            lock_timeout_ms: a[5],
            lock_record_ptr: b[5],
            lease_timeout_ms: a[6],
            io_timeout_ms: a[7],
            heartbeat_ms: a[8],
            format_block_size: a[9],
            device_bytes: b[6],
            pid_entry_lbs: a[10],
            ptr_table_lbs: a[11],
            blk5_unix_filename: name,
            device_uuids: uuids,
            blk5_minor_version: minor,
            sdt_backup_ptr: backup,
            mcb_backup_ptr: backup.wrapping_add(1),
        }
    }
}

prop_compose! {
    fn lock()(state in 0u32..=1, g in any::<[u64; 4]>(), host in uuid(), name in text(NAME_MAX), pid in any::<u32>()) -> LockRecord {
        LockRecord { state, generation: g[0], counter: g[1], timestamp: g[2], holder_host: host, holder_name: name, holder_key: g[3], holder_pid: pid }
    }
}

prop_compose! {
    fn sdt()(id in uuid(), p in any::<u64>(), n in any::<[u32; 2]>(), bytes in any::<u64>(), master in any::<bool>(), hw in text(HW_ID_MAX), path in text(PATH_MAX)) -> SdtEntry {
        SdtEntry { sec_dev_id: id, sec_str_seg_ptr: p, sec_seg_number_for_device: n[0], sec_start_segment_number: n[1], device_bytes: bytes, sec_flags: u32::from(master), sec_hw_id: hw, sec_path: path }
    }
}

prop_compose! {
    fn pid()(
        id in any::<u32>(), flags in 0u32..32, rc in any::<i32>(), t1 in os(), t2 in os(), alg in prop_oneof![Just(0u32), Just(2u32)],
        g in any::<[u64; 3]>(), n1 in text(NAME_MAX), n2 in text(NAME_MAX), h1 in uuid(), h2 in uuid(),
        nonce in any::<[u8; 16]>(), k in any::<[[u8; 32]; 4]>(), nonce2 in any::<[u8; 16]>(),
        sig in any::<[[u8; 32]; 2]>(), aflags in 0u32..4,
    ) -> PidEntry {
        PidEntry {
            pro_process_id: id, pro_flag_process: flags, pro_con_rc: rc, pro_requestor_type: t1, pro_requestee_type: t2,
            pro_auth_alg: alg, pro_generation: g[0], pro_alloc_time: g[1], pro_accept_time: g[2],
            pro_requestor: n1, pro_requestee: n2, pro_requestor_host: h1, pro_requestee_host: h2,
            pro_auth_nonce: nonce, pro_requestor_key: k[0], pro_requestor_kx: k[1],
            pro_requestee_nonce: nonce2, pro_requestee_key: k[2], pro_requestee_kx: k[3],
            pro_requestee_sig: core::array::from_fn(|i| sig[i / 32][i % 32]), pro_auth_flags: aflags,
        }
    }
}

prop_compose! {
    fn lease()(role in role(), state in 0u32..=2, g in any::<[u64; 3]>(), host in uuid(), pid in any::<u32>()) -> Lease {
        Lease { role, state, generation: g[0], counter: g[1], timestamp: g[2], host, pid }
    }
}

prop_compose! {
    fn cmd()(generation in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 0..=CMD_DATA_MAX)) -> CmdArea {
        CmdArea { generation, data }
    }
}

prop_compose! {
    fn entry()(a in any::<u32>(), f in any::<[u8; 4]>(), r in any::<u16>(), s in any::<[u64; 2]>(), l in any::<u32>()) -> PtrEntry {
        PtrEntry { ptr_process_segment_ptr: a, ptr_process_segment_flg: f[0], ptr_process_req_id: f[1], ptr_process_blk_read: r, ptr_process_block_seq: s[0], ptr_len: l, ack_flg: f[2], ack_req_id: f[3], ack_seq: s[1] }
    }
}

prop_compose! {
    fn chunk()(generation in any::<u64>(), e in proptest::collection::vec(entry(), ENTRIES_PER_CHUNK)) -> PtrChunk {
        let mut c = PtrChunk { generation, ..PtrChunk::default() };
        c.entries.copy_from_slice(&e);
        c
    }
}

prop_compose! {
    fn seg()(q in any::<[u64; 3]>(), n in any::<[u32; 3]>(), b in any::<[u8; 3]>()) -> SegHeader {
        SegHeader { seg_seq: q[0], generation: q[1], timestamp: q[2], len: n[0], payload_crc: n[1], slot: n[2], req_id: b[0], flags: b[1], seal: b[2] }
    }
}

/// Decodes `buf` as `kind` with no expectations, discarding the value.
fn decode_any(kind: RecordKind, buf: &[u8]) -> Result<(), Error> {
    let e = Expect::any();
    match kind {
        RecordKind::Mcb => Mcb::decode(buf).map(drop),
        RecordKind::Lock => LockRecord::decode(buf, e).map(drop),
        RecordKind::Sdt => SdtEntry::decode(buf, e).map(drop),
        RecordKind::Pid => PidEntry::decode(buf, e).map(drop),
        RecordKind::Lease => Lease::decode(buf, e).map(drop),
        RecordKind::Cmd => CmdArea::decode(buf, e).map(drop),
        RecordKind::PtrChunk => PtrChunk::decode(buf, e).map(drop),
        RecordKind::SegHdr => SegHeader::decode(buf, e).map(drop),
    }
}

/// The stamp a record's header carries: `index` at bytes 8..12 and
/// `layout_id` at 16..24, little-endian (FORMAT.md, common header).
fn header_stamp(buf: &[u8]) -> Stamp {
    let index = u32::from_le_bytes(buf[8..12].try_into().unwrap());
    let layout_id = u64::from_le_bytes(buf[16..24].try_into().unwrap());
    Stamp::new(layout_id, index)
}

/// Decodes `buf` as `kind`; if that succeeds, re-encodes the value with the
/// stamp its header carried and decodes that again. `None` when `buf` does
/// not decode; `Some(Err(..))` when the re-encoded record means something
/// else (or does not decode).
fn reencode(kind: RecordKind, buf: &[u8]) -> Option<Result<(), String>> {
    fn again<T: PartialEq + std::fmt::Debug>(
        first: T,
        second: Result<T, Error>,
    ) -> Result<(), String> {
        match second {
            Ok(v) if v == first => Ok(()),
            Ok(v) => Err(format!("decoded {first:?}, re-encoded and decoded {v:?}")),
            Err(e) => Err(format!("decoded {first:?}, its re-encoding fails: {e}")),
        }
    }
    let any = Expect::any();
    let s = header_stamp(buf);
    let e = Expect::stamp(s);
    Some(match kind {
        RecordKind::Mcb => {
            let v = Mcb::decode(buf).ok()?;
            let b = v.encode();
            again(v, Mcb::decode(&b))
        }
        RecordKind::Lock => {
            let v = LockRecord::decode(buf, any).ok()?;
            let b = v.encode(s);
            again(v, LockRecord::decode(&b, e))
        }
        RecordKind::Sdt => {
            let v = SdtEntry::decode(buf, any).ok()?;
            let b = v.encode(s);
            again(v, SdtEntry::decode(&b, e))
        }
        RecordKind::Pid => {
            let v = PidEntry::decode(buf, any).ok()?;
            let b = v.encode(s);
            again(v, PidEntry::decode(&b, e))
        }
        RecordKind::Lease => {
            let v = Lease::decode(buf, any).ok()?;
            let b = v.encode(s);
            again(v, Lease::decode(&b, e))
        }
        RecordKind::Cmd => {
            let v = CmdArea::decode(buf, any).ok()?;
            let b = v.encode(s);
            again(v, CmdArea::decode(&b, e))
        }
        RecordKind::PtrChunk => {
            let v = PtrChunk::decode(buf, any).ok()?;
            let b = v.encode(s);
            again(v, PtrChunk::decode(&b, e))
        }
        RecordKind::SegHdr => {
            let v = SegHeader::decode(buf, any).ok()?;
            let b = v.encode(s);
            again(v, SegHeader::decode(&b, e))
        }
    })
}

/// Gives `body` (the first `kind.size()` bytes) a valid header for `kind`
/// and seals it: magic, version, size and CRC; index and layout id are
/// whatever the bytes hold.
fn valid_header(kind: RecordKind, body: &mut Vec<u8>) {
    let size = kind.size();
    body.truncate(size);
    body[..4].copy_from_slice(&kind.magic());
    body[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    body[6..8].copy_from_slice(&(size as u16).to_le_bytes());
    let crc = crc32c_record(body, CRC_OFFSET);
    body[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// A small formatted master (16 MiB, 4 connections, 32-entry rings, one
/// 16 MiB secondary) as `format` lays it out: the whole control area, LB 0 to the
/// end of the pointer tables, and the master's size.
fn formatted_master() -> (Vec<u8>, u64) {
    static IMAGE: std::sync::OnceLock<(Vec<u8>, u64)> = std::sync::OnceLock::new();
    IMAGE.get_or_init(format_master).clone()
}

fn format_master() -> (Vec<u8>, u64) {
    let geometry = Geometry::compute(&GeometryParams {
        master_bytes: 16 << 20,
        secondary_bytes: vec![16 << 20],
        block_size: 512,
        segment_bytes: 64 * 1024,
        max_connections: 4,
        ring_entries: 32,
        batch: 8,
    })
    .unwrap();
    let spec = FormatSpec {
        layout_uuid: Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
        device_uuids: vec![Uuid::from_u128(0xd0), Uuid::from_u128(0xd1)],
        time_ns: 1_700_000_000_000_000_000,
        paths: vec!["/dev/sdb".into(), "/dev/sdc".into()],
        hw_ids: vec!["naa.6000000000000000".into(), "naa.6000000000000001".into()],
        lease_timeout_ms: DEFAULT_LEASE_TIMEOUT_MS,
        lock_timeout_ms: DEFAULT_LOCK_TIMEOUT_MS,
        io_timeout_ms: DEFAULT_IO_TIMEOUT_MS,
        heartbeat_ms: DEFAULT_HEARTBEAT_MS,
        geometry,
    };
    let mut master = check::MasterBytes::zeroed(&spec.geometry);
    for w in format_plan(&spec).into_iter().filter(|w| w.device == 0) {
        assert!(master.write(w.lb, &w.data));
    }
    (master.control, spec.geometry.devices[0].device_bytes)
}

/// The byte range of the master MCB record in the control area.
const MCB_RECORD: std::ops::Range<usize> = MCB_LB as usize * LB..MCB_LB as usize * LB + RECORD_SIZE;

/// An encoded record of each kind, from the strategies.
fn any_encoded() -> impl Strategy<Value = (RecordKind, Vec<u8>)> {
    prop_oneof![
        mcb().prop_map(|m| (RecordKind::Mcb, m.encode().to_vec())),
        (lock(), stamp()).prop_map(|(r, s)| (RecordKind::Lock, r.encode(s).to_vec())),
        (sdt(), stamp()).prop_map(|(r, s)| (RecordKind::Sdt, r.encode(s).to_vec())),
        (pid(), stamp()).prop_map(|(r, s)| (RecordKind::Pid, r.encode(s).to_vec())),
        (lease(), stamp()).prop_map(|(r, s)| (RecordKind::Lease, r.encode(s).to_vec())),
        (cmd(), stamp()).prop_map(|(r, s)| (RecordKind::Cmd, r.encode(s).to_vec())),
        (chunk(), stamp()).prop_map(|(r, s)| (RecordKind::PtrChunk, r.encode(s).to_vec())),
        (seg(), stamp()).prop_map(|(r, s)| (RecordKind::SegHdr, r.encode(s).to_vec())),
    ]
}

proptest! {
    #[test]
    fn mcb_round_trip(m in mcb()) {
        prop_assert_eq!(Mcb::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn lock_round_trip(r in lock(), s in stamp()) {
        prop_assert_eq!(LockRecord::decode(&r.encode(s), Expect::stamp(s)).unwrap(), r);
    }

    #[test]
    fn sdt_round_trip(r in sdt(), s in stamp()) {
        prop_assert_eq!(SdtEntry::decode(&r.encode(s), Expect::stamp(s)).unwrap(), r);
    }

    #[test]
    fn pid_round_trip(r in pid(), s in stamp()) {
        prop_assert_eq!(PidEntry::decode(&r.encode(s), Expect::stamp(s)).unwrap(), r);
    }

    #[test]
    fn lease_round_trip(r in lease(), s in stamp()) {
        prop_assert_eq!(Lease::decode(&r.encode(s), Expect::stamp(s)).unwrap(), r);
    }

    #[test]
    fn cmd_round_trip(r in cmd(), s in stamp()) {
        prop_assert_eq!(CmdArea::decode(&r.encode(s), Expect::stamp(s)).unwrap(), r);
    }

    #[test]
    fn ptr_chunk_round_trip(r in chunk(), s in stamp()) {
        prop_assert_eq!(PtrChunk::decode(&r.encode(s), Expect::stamp(s)).unwrap(), r);
    }

    #[test]
    fn seg_header_round_trip(r in seg(), s in stamp()) {
        prop_assert_eq!(SegHeader::decode(&r.encode(s), Expect::stamp(s)).unwrap(), r);
    }

    /// Decoders never panic on arbitrary bytes, of any length; fewer bytes
    /// than LB 0-5 are not a master to check, and say how much to read.
    #[test]
    fn decoders_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
        for kind in RecordKind::ALL {
            let _ = decode_any(kind, &buf);
        }
        let got = buf.len();
        prop_assert_eq!(
            check::check_master(&buf, got as u64).map(drop),
            Err(Error::Truncated { kind: RecordKind::Mcb, need: 6 * LB, got })
        );
    }

    /// Arbitrary bytes behind a valid header and CRC: the field checks never
    /// panic, and what decodes re-encodes to the same bytes' meaning.
    #[test]
    fn decoders_never_panic_past_the_crc(kind_i in 0usize..8, mut body in proptest::collection::vec(any::<u8>(), 512)) {
        let kind = RecordKind::ALL[kind_i];
        valid_header(kind, &mut body);
        if let Some(round_trip) = reencode(kind, &body) {
            prop_assert!(round_trip.is_ok(), "{}: {:?}", kind, round_trip);
        }
    }

    /// A valid record with some bytes past its header overwritten (and the
    /// CRC resealed) either is refused or re-encodes to the same meaning.
    #[test]
    fn damaged_valid_records_round_trip_or_are_refused(
        (kind, mut rec) in any_encoded(),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
    ) {
        for (at, byte) in edits {
            let i = HEADER_SIZE + at.index(rec.len() - HEADER_SIZE);
            rec[i] = byte;
        }
        valid_header(kind, &mut rec);
        if let Some(round_trip) = reencode(kind, &rec) {
            prop_assert!(round_trip.is_ok(), "{}: {:?}", kind, round_trip);
        }
    }

    /// `check_master` on a whole formatted control area with bytes
    /// overwritten anywhere past the MCB never panics and, the MCB being
    /// intact, always gives a report rather than an error.
    #[test]
    fn check_master_reports_damage_past_the_mcb(
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..64),
    ) {
        let (mut control, device_bytes) = formatted_master();
        let len = control.len();
        for (at, byte) in edits {
            let mut i = at.index(len - RECORD_SIZE);
            if i >= MCB_RECORD.start {
                i += RECORD_SIZE; // skip the MCB record itself
            }
            control[i] = byte;
        }
        let checked = check::check_master(&control, device_bytes);
        prop_assert!(checked.is_ok(), "{:?}", checked.map(drop));
    }

    /// `check_master` on a whole control area whose MCB is any valid MCB
    /// (including nonsense geometry) never panics.
    #[test]
    fn check_master_never_panics_on_any_mcb(m in mcb()) {
        let (mut control, device_bytes) = formatted_master();
        control[MCB_RECORD].copy_from_slice(&m.encode());
        let _ = check::check_master(&control, device_bytes);
    }

    /// A control area cut short past LB 5 is Truncated, and `need` is the
    /// whole control area (the second read the module docs describe).
    #[test]
    fn check_master_asks_for_the_whole_control_area(cut in any::<proptest::sample::Index>()) {
        let (control, device_bytes) = formatted_master();
        let len = control.len();
        let got = 6 * LB + cut.index(len - 6 * LB);
        let err = check::check_master(&control[..got], device_bytes).map(drop).unwrap_err();
        prop_assert!(
            matches!(err, Error::Truncated { need, got: g, .. } if need == len && g == got),
            "{:?}", err
        );
    }

    /// Every single-bit flip of every encoded record is detected.
    #[test]
    fn single_bit_flip_detected((kind, rec) in any_encoded(), bit in any::<proptest::sample::Index>()) {
        let mut bad = rec.clone();
        let bit = bit.index(bad.len() * 8);
        bad[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode_any(kind, &rec).is_ok());
        let err = decode_any(kind, &bad).unwrap_err();
        prop_assert!(
            matches!(err, Error::CrcMismatch { .. } | Error::BadMagic { .. } | Error::UnsupportedVersion { .. } | Error::BadRecordSize { .. }),
            "bit {bit} of {kind}: {err}"
        );
    }
}

/// The image the property tests damage is one `check_master` accepts
/// whole, and one changed byte in it is found where it is.
#[test]
fn check_master_on_a_whole_formatted_image() {
    let (control, device_bytes) = formatted_master();
    let (mcb, sdt, problems) = check::check_master(&control, device_bytes).unwrap();
    assert_eq!(problems, vec![]);
    assert_eq!(mcb.blk5_id, DeviceRole::Master);
    assert_eq!((mcb.blk5_max_connections, mcb.blk5_maxptr), (4, 32));
    assert_eq!(sdt.len(), 2);
    let mut bad = control.clone();
    // Process Id Table entry 2 is LB 8 + 3.
    bad[(PIT_LB as usize + 3) * LB + 100] ^= 1;
    let problems = check::check_master(&bad, device_bytes).unwrap().2;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].record, "Process Id Table entry 2");
    assert_eq!(problems[0].lb, PIT_LB + 3);
}

#[test]
fn all_zero_is_empty() {
    for kind in RecordKind::ALL {
        for len in [kind.size(), 4096] {
            let err = decode_any(kind, &vec![0; len]).unwrap_err();
            assert_eq!(err, Error::Empty { kind });
            assert!(err.to_string().contains("unformatted"), "{err}");
        }
    }
    assert!(matches!(
        check::check_master(&vec![0; 6 * LB], 1 << 30),
        Err(Error::Empty {
            kind: RecordKind::Mcb
        })
    ));
}

#[test]
fn short_input_is_truncated() {
    for kind in RecordKind::ALL {
        let err = decode_any(kind, &[1u8; 10]).unwrap_err();
        assert_eq!(
            err,
            Error::Truncated {
                kind,
                need: kind.size(),
                got: 10
            }
        );
    }
}

/// Exhaustive: every bit of one record of each kind.
#[test]
fn every_bit_flip_of_fixed_records_detected() {
    let s = Stamp::new(0x1234_5678_9abc_def0, 3);
    let recs: Vec<(RecordKind, Vec<u8>)> = vec![
        (
            RecordKind::Lock,
            LockRecord {
                holder_name: "x".into(),
                ..LockRecord::default()
            }
            .encode(s)
            .to_vec(),
        ),
        (RecordKind::Sdt, SdtEntry::default().encode(s).to_vec()),
        (RecordKind::Pid, PidEntry::free(3).encode(s).to_vec()),
        (
            RecordKind::Lease,
            Lease::formatted(Role::Connector).encode(s).to_vec(),
        ),
        (RecordKind::Cmd, CmdArea::default().encode(s).to_vec()),
        (RecordKind::PtrChunk, PtrChunk::default().encode(s).to_vec()),
        (RecordKind::SegHdr, SegHeader::default().encode(s).to_vec()),
    ];
    for (kind, rec) in recs {
        decode_any(kind, &rec).unwrap();
        for bit in 0..rec.len() * 8 {
            let mut bad = rec.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_any(kind, &bad).is_err(), "{kind}: bit {bit}");
        }
    }
}

#[test]
fn header_checks_in_order() {
    let s = Stamp::new(7, 3);
    let rec = PidEntry::free(3).encode(s);
    let e = Expect::exact(7, 3);
    assert!(PidEntry::decode(&rec, e).is_ok());
    assert_eq!(
        PidEntry::decode(&rec, Expect::exact(8, 3)),
        Err(Error::ForeignLayout {
            kind: RecordKind::Pid,
            found: 7,
            expected: 8
        })
    );
    assert_eq!(
        PidEntry::decode(&rec, Expect::exact(7, 4)),
        Err(Error::WrongIndex {
            kind: RecordKind::Pid,
            found: 3,
            expected: 4
        })
    );
    // Wrong magic (a lease where a PID entry is expected).
    let lease = Lease::formatted(Role::Initiator).encode(s);
    assert_eq!(
        PidEntry::decode(&lease, e),
        Err(Error::BadMagic {
            kind: RecordKind::Pid,
            found: *b"FLSE"
        })
    );
    let mut v2 = rec;
    v2[4] = 2;
    assert_eq!(
        PidEntry::decode(&v2, e),
        Err(Error::UnsupportedVersion {
            kind: RecordKind::Pid,
            found: 2
        })
    );
    let mut sz = rec;
    sz[6] = 64;
    sz[7] = 0;
    assert_eq!(
        PidEntry::decode(&sz, e),
        Err(Error::BadRecordSize {
            kind: RecordKind::Pid,
            found: 64
        })
    );
    let mut crc = rec;
    crc[100] ^= 1;
    let err = PidEntry::decode(&crc, e).unwrap_err();
    assert!(matches!(
        err,
        Error::CrcMismatch {
            kind: RecordKind::Pid,
            index: 3,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.starts_with("Process Id Table entry 3: CRC mismatch (stored 0x"),
        "{msg}"
    );
    assert!(msg.contains("computed 0x"), "{msg}");
    assert!(err.detail().starts_with("CRC mismatch"), "{}", err.detail());
}

/// Re-seals a record after a field edit.
fn reseal(rec: &mut [u8]) {
    rec[12..16].fill(0);
    let crc = crc32c_record(rec, CRC_OFFSET);
    rec[12..16].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn bad_fields_are_refused() {
    let s = Stamp::new(1, 1);
    let e = Expect::stamp(s);
    let field = |r: Result<(), Error>| match r {
        Err(Error::BadField { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let mut p = PidEntry::free(1).encode(s);
    p[36] = 6;
    reseal(&mut p);
    assert_eq!(
        field(PidEntry::decode(&p, e).map(drop)),
        "pro_requestor_type"
    );
    let mut p = PidEntry::free(1).encode(s);
    p[28] = 0x20;
    reseal(&mut p);
    assert_eq!(field(PidEntry::decode(&p, e).map(drop)), "pro_flag_process");
    let mut p = PidEntry::free(1).encode(s);
    p[72] = 0xff; // not UTF-8
    reseal(&mut p);
    assert_eq!(field(PidEntry::decode(&p, e).map(drop)), "pro_requestor");
    let mut p = PidEntry::free(1).encode(s);
    p[80] = b'x'; // text after the NUL padding
    reseal(&mut p);
    assert_eq!(field(PidEntry::decode(&p, e).map(drop)), "pro_requestor");
    let mut l = Lease::formatted(Role::Initiator).encode(s);
    l[24] = 3;
    reseal(&mut l);
    assert_eq!(field(Lease::decode(&l, e).map(drop)), "role");
    let mut c = CmdArea::default().encode(s);
    c[32..36].copy_from_slice(&473u32.to_le_bytes());
    reseal(&mut c);
    assert_eq!(field(CmdArea::decode(&c, e).map(drop)), "len");
    let mut k = LockRecord::default().encode(s);
    k[24] = 2;
    reseal(&mut k);
    assert_eq!(field(LockRecord::decode(&k, e).map(drop)), "state");
}

#[test]
fn mcb_self_consistency() {
    let m = Mcb {
        blk5_id: DeviceRole::Master,
        blk5_layout_uuid: Uuid::from_u128(0xfeed),
        blk5_device_uuid: Uuid::from_u128(1),
        blk5_dev_id: 1,
        blk5_seg_size: 16,
        blk5_time_id: 0,
        blk5_tot_seg_num: 0,
        blk5_max_connections: 1,
        blk5_process_id_table_ptr: 8,
        blk5_secondary_device_table_ptr: 7,
        blk5_secondary_device_entrynum: 1,
        blk5_ptr_seg_per_process: 1,
        blk5_start_process_segment_ptr: 11,
        blk5_mast_sec_start_segment_ptr: 16,
        blk5_maxptr: 2,
        lock_timeout_ms: 1,
        lock_record_ptr: 6,
        lease_timeout_ms: 1,
        io_timeout_ms: 1,
        heartbeat_ms: 1,
        format_block_size: 512,
        device_bytes: 1 << 20,
        pid_entry_lbs: 3,
        ptr_table_lbs: 1,
        blk5_unix_filename: String::new(),
        device_uuids: vec![Uuid::from_u128(1)],
        blk5_minor_version: 0,
        sdt_backup_ptr: 0,
        mcb_backup_ptr: 0,
    };
    assert_eq!(Mcb::decode(&m.encode()).unwrap(), m);
    assert_eq!(
        m.timeouts(),
        Timeouts {
            lease_ms: 1,
            lock_ms: 1,
            io_ms: 1,
            heartbeat_ms: 1
        }
    );
    // The header's layout id must be the uuid's.
    let mut b = m.encode();
    b[16] ^= 1;
    reseal(&mut b);
    assert!(matches!(
        Mcb::decode(&b),
        Err(Error::ForeignLayout {
            kind: RecordKind::Mcb,
            ..
        })
    ));
    // Unknown blk5_id.
    let mut b = m.encode();
    b[24] = b'X';
    reseal(&mut b);
    assert!(matches!(
        Mcb::decode(&b),
        Err(Error::BadField {
            field: "blk5_id",
            ..
        })
    ));
    // Device count out of range, dev id out of range, stray device uuid.
    for (off, val, f) in [
        (104, 9u32, "blk5_secondary_device_entrynum"),
        (104, 0, "blk5_secondary_device_entrynum"),
        (64, 2, "blk5_dev_id"),
    ] {
        let mut b = m.encode();
        b[off..off + 4].copy_from_slice(&val.to_le_bytes());
        reseal(&mut b);
        assert!(
            matches!(Mcb::decode(&b), Err(Error::BadField { field, .. }) if field == f),
            "{f}"
        );
    }
    let mut b = m.encode();
    b[320] = 1;
    reseal(&mut b);
    assert!(matches!(
        Mcb::decode(&b),
        Err(Error::BadField {
            field: "device_uuids",
            ..
        })
    ));
}

#[test]
fn names() {
    assert_eq!(validate_name(""), Err(Error::EmptyName));
    assert_eq!(validate_name("a\0b"), Err(Error::NameHasNul));
    assert!(validate_name(&"x".repeat(32)).is_ok());
    assert_eq!(
        validate_name(&"x".repeat(33)),
        Err(Error::NameTooLong {
            name: "x".repeat(33),
            max: 32
        })
    );
    assert!(validate_path("").is_ok());
    assert!(validate_path(&"p".repeat(129)).is_err());
    // A name that fills its field has no NUL and round-trips.
    let r = LockRecord {
        holder_name: "é".repeat(16),
        ..LockRecord::default()
    };
    assert_eq!(
        LockRecord::decode(&r.encode(Stamp::default()), Expect::any()).unwrap(),
        r
    );
    // Encoding an over-long name does not panic and never splits a character.
    let r = LockRecord {
        holder_name: format!("a{}", "é".repeat(20)),
        ..LockRecord::default()
    };
    let d = LockRecord::decode(&r.encode(Stamp::default()), Expect::any()).unwrap();
    assert_eq!(d.holder_name, format!("a{}", "é".repeat(15)));
    // Over-long command data is cut, not a panic.
    let c = CmdArea {
        generation: 1,
        data: vec![7; 600],
    };
    assert_eq!(
        CmdArea::decode(&c.encode(Stamp::default()), Expect::any())
            .unwrap()
            .data
            .len(),
        CMD_DATA_MAX
    );
}

#[test]
fn displays() {
    assert_eq!(RecordKind::Pid.at(3), "Process Id Table entry 3");
    assert_eq!(RecordKind::Mcb.at(0), "Master Control Block");
    assert_eq!(RecordKind::Sdt.to_string(), "Secondary Device Table entry");
    assert_eq!(RecordKind::PtrChunk.to_string(), "pointer-table chunk");
    assert_eq!(RecordKind::SegHdr.to_string(), "segment header");
    assert_eq!(RecordKind::Cmd.to_string(), "command area");
    for k in RecordKind::ALL {
        assert_eq!(k.magic()[0], b'F');
    }
    assert_eq!(Role::Initiator.flag(), FLG_INITIATOR);
    assert_eq!(Role::Connector.flag(), FLG_CONNECTOR);
    assert_eq!(Role::Initiator.dir(), 0);
    assert_eq!(Role::Connector.dir(), 1);
    let e = Error::BadMagic {
        kind: RecordKind::Lease,
        found: *b"FPID",
    };
    assert_eq!(
        e.to_string(),
        "lease: bad magic \"FPID\" (expected \"FLSE\")"
    );
}
