//! The bodies of the fts-layout fuzz targets.
//!
//! Each fuzz binary (`fuzz_targets/<target>.rs`) includes this file with
//! `#[path]` and calls its body; so does the replay test
//! `fts-layout/tests/fuzz_regressions.rs`, which feeds every committed seed
//! and every kept crasher (`fuzz/seeds/`, `fuzz/regressions/`) to the very
//! code the fuzzer ran. A body panics on a bug (an assertion about the
//! library's contract) and otherwise describes what the input did.
#![allow(dead_code)]

use core::fmt;

use fts_layout::check::{
    backup_location, check_image, check_master as check_master_area, check_secondary,
    master_records, repair_plan, Checked, MasterBytes,
};
use fts_layout::{
    crc32c_record, format_plan, mcb_for_device, CmdArea, Error, Expect, FormatSpec, Geometry,
    GeometryParams, Lease, LockRecord, Mcb, PidEntry, PtrChunk, RecordKind, SdtEntry, SegHeader,
    Stamp, BACKUP_LBS, CRC_OFFSET, FORMAT_MINOR, FORMAT_VERSION, LB, MCB_LB, RECORD_SIZE, SDT_LB,
};
use uuid::Uuid;

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The input got past the first checks: the record decoded as it was
    /// given (not only after [`sealed`] repaired its header), or
    /// `check_master` returned its report rather than an error.
    pub reached: bool,
    /// The result, one line per decode; what a regression's `.expected`
    /// file holds.
    pub text: String,
}

/// A fuzz target's body.
pub type Body = fn(&[u8]) -> Outcome;

/// Every fuzz target of the crate, by its `[[bin]]` name.
pub const TARGETS: &[(&str, Body)] = &[
    ("check_master", check_master),
    ("cmd_area", cmd_area),
    ("lease", lease),
    ("lock_record", lock_record),
    ("mcb", mcb),
    ("pid_entry", pid_entry),
    ("ptr_chunk", ptr_chunk),
    ("sdt_entry", sdt_entry),
    ("seg_header", seg_header),
];

fn describe<T>(r: &Result<T, Error>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("error: {e}"),
    }
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or_default())
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap_or_default())
}

/// `data` turned into a `kind` record with a valid common header and CRC
/// (padded with zeros), so that the fuzzer reaches the field checks the
/// CRC otherwise hides. For the MCB the header's layout id is taken from
/// the layout uuid, as `Mcb::decode` requires.
pub fn sealed(data: &[u8], kind: RecordKind) -> Vec<u8> {
    let size = kind.size();
    let mut rec = vec![0u8; size];
    let n = data.len().min(size);
    rec[..n].copy_from_slice(&data[..n]);
    rec[..4].copy_from_slice(&kind.magic());
    rec[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    rec[6..8].copy_from_slice(&(size as u16).to_le_bytes());
    if kind == RecordKind::Mcb {
        rec[8..12].fill(0);
        let id: [u8; 8] = rec[32..40].try_into().unwrap_or_default();
        rec[16..24].copy_from_slice(&id);
    }
    rec[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
    let crc = crc32c_record(&rec, CRC_OFFSET);
    rec[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    rec
}

/// A record type with the `decode(buf, Expect)` / `encode(Stamp)` codec.
pub trait Record: Sized + PartialEq + fmt::Debug {
    /// Its kind (magic, size).
    const KIND: RecordKind;
    /// `Self::decode`.
    fn dec(buf: &[u8], expect: Expect) -> Result<Self, Error>;
    /// `Self::encode`.
    fn enc(&self, stamp: Stamp) -> Vec<u8>;
}

macro_rules! record {
    ($($ty:ident => $kind:ident),* $(,)?) => {$(
        impl Record for $ty {
            const KIND: RecordKind = RecordKind::$kind;
            fn dec(buf: &[u8], expect: Expect) -> Result<Self, Error> {
                $ty::decode(buf, expect)
            }
            fn enc(&self, stamp: Stamp) -> Vec<u8> {
                self.encode(stamp).to_vec()
            }
        }
    )*};
}

record!(
    CmdArea => Cmd,
    Lease => Lease,
    LockRecord => Lock,
    PidEntry => Pid,
    PtrChunk => PtrChunk,
    SdtEntry => Sdt,
    SegHeader => SegHdr,
);

/// Decoding `data` raw and sealed never panics; whatever decodes
/// re-encodes to a record that decodes to the same value.
pub fn round_trip<T: Record>(data: &[u8]) -> Outcome {
    let raw = T::dec(data, Expect::any());
    let rec = sealed(data, T::KIND);
    let sealed = T::dec(&rec, Expect::any());
    if let Ok(v) = &sealed {
        let stamp = Stamp::new(le_u64(&rec[16..24]), le_u32(&rec[8..12]));
        let again = T::dec(&v.enc(stamp), Expect::stamp(stamp));
        assert_eq!(
            again.as_ref(),
            Ok(v),
            "a re-encoded {} decodes differently",
            T::KIND
        );
    }
    Outcome {
        reached: raw.is_ok(),
        text: format!("raw: {}\nsealed: {}", describe(&raw), describe(&sealed)),
    }
}

pub fn cmd_area(data: &[u8]) -> Outcome {
    round_trip::<CmdArea>(data)
}

pub fn lease(data: &[u8]) -> Outcome {
    round_trip::<Lease>(data)
}

pub fn lock_record(data: &[u8]) -> Outcome {
    round_trip::<LockRecord>(data)
}

pub fn pid_entry(data: &[u8]) -> Outcome {
    round_trip::<PidEntry>(data)
}

pub fn ptr_chunk(data: &[u8]) -> Outcome {
    round_trip::<PtrChunk>(data)
}

pub fn sdt_entry(data: &[u8]) -> Outcome {
    round_trip::<SdtEntry>(data)
}

pub fn seg_header(data: &[u8]) -> Outcome {
    round_trip::<SegHeader>(data)
}

/// `Mcb::decode` on arbitrary bytes, raw and behind a valid header; and
/// `Geometry::from_mcb` on what decodes, with the device sizes taken from
/// the bytes after the record (u64 each, Secondary Device Table order).
pub fn mcb(data: &[u8]) -> Outcome {
    let raw = Mcb::decode(data);
    let rec = sealed(data, RecordKind::Mcb);
    let sealed = Mcb::decode(&rec);
    let mut geometry = String::new();
    if let Ok(m) = &sealed {
        assert_eq!(
            Mcb::decode(&m.encode()).as_ref(),
            Ok(m),
            "a re-encoded MCB decodes differently"
        );
        let _ = m.timeouts();
        let sizes = data.get(RECORD_SIZE..).unwrap_or(&[]);
        let sdt: Vec<SdtEntry> = (0..m.blk5_secondary_device_entrynum as usize)
            .map(|i| SdtEntry {
                device_bytes: sizes.get(i * 8..i * 8 + 8).map_or(0, le_u64),
                sec_dev_id: m.device_uuids.get(i).copied().unwrap_or_default(),
                ..SdtEntry::default()
            })
            .collect();
        geometry = match Geometry::from_mcb(m, &sdt) {
            Ok(g) => format!("\ngeometry: ok, {} extents", g.extents().len()),
            Err(e) => format!("\ngeometry: error: {e}"),
        };
    }
    Outcome {
        reached: raw.is_ok(),
        text: format!(
            "raw: {}\nsealed: {}{geometry}",
            describe(&raw),
            describe(&sealed)
        ),
    }
}

fn byte(data: &[u8], i: usize) -> u8 {
    data.get(i).copied().unwrap_or(0)
}

/// The checker's clock for the format-and-corrupt mode (ns since the
/// epoch), long after the layout's `time_ns`.
const NOW_NS: u64 = 1_800_000_000_000_000_000;

fn describe_checked(r: &Result<Checked, Error>) -> String {
    match r {
        Ok(c) => {
            let mut s = format!(
                "ok: {} SDT entries, {} problem(s), {} damaged, {} dead",
                c.sdt.len(),
                c.problems.len(),
                c.damaged.len(),
                c.dead.len()
            );
            for p in &c.problems {
                s.push_str("\n  ");
                s.push_str(&p.to_string());
            }
            for d in &c.damaged {
                let _ = d.to_string();
                s.push_str(&format!(
                    "\n  damaged: {} (LB {}), read from LB {}",
                    d.record, d.lb, d.backup_lb
                ));
            }
            for d in &c.dead {
                s.push_str(&format!(
                    "\n  dead: slot {} generation {}",
                    d.slot, d.generation
                ));
            }
            s
        }
        Err(e) => format!("error: {e}"),
    }
}

/// Copies the part of `data`, written at LB `lb`, that falls into `dst`,
/// which holds the LBs from `first` on.
fn overlay(dst: &mut [u8], first: u64, lb: u64, data: &[u8]) {
    let (dst_start, w_start) = (first as usize * LB, lb as usize * LB);
    let lo = dst_start.max(w_start);
    let hi = (dst_start + dst.len()).min(w_start + data.len());
    if lo < hi {
        dst[lo - dst_start..hi - dst_start].copy_from_slice(&data[lo - w_start..hi - w_start]);
    }
}

/// Checks `m`, reads its MCB and SDT as a program opening it would, plans
/// the repairs (freeing the entries the check finds dead) and holds
/// `repair_plan` to its word: a plan that leaves nothing unmended
/// (`left` empty) mends everything, so that after its writes the master
/// checks without problems and a new plan has nothing to write.
fn check_and_repair(m: &MasterBytes, now_ns: Option<u64>) -> (bool, String) {
    let img = m.image(now_ns);
    let checked = check_image(&img);
    let mut text = format!("check: {}", describe_checked(&checked));
    let lb5_7 = m.control.get(MCB_LB as usize * LB..).unwrap_or(&[]);
    let records = master_records(&lb5_7[..lb5_7.len().min(3 * LB)], img.backups);
    text.push_str(&match &records {
        Ok(r) => format!("\nrecords: ok, {} damaged", r.damaged.len()),
        Err(e) => format!("\nrecords: error: {e}"),
    });
    let Ok(c) = &checked else {
        return (false, text);
    };
    let dead: Vec<u32> = c.dead.iter().map(|d| d.slot).collect();
    match repair_plan(&img, &dead) {
        Ok(plan) => {
            text.push_str(&format!(
                "\nrepair: {} write(s), {} left",
                plan.repairs.len(),
                plan.left.len()
            ));
            for r in &plan.repairs {
                text.push_str(&format!("\n  LB {}: {}", r.lb, r.what));
            }
            for l in &plan.left {
                text.push_str(&format!("\n  left: {l}"));
            }
            if plan.left.is_empty() {
                let mut mended = m.clone();
                mended.apply(&plan);
                let after = check_image(&mended.image(now_ns));
                let problems = after.as_ref().map(|a| a.problems.as_slice());
                assert!(
                    matches!(problems, Ok([])),
                    "a repair plan that leaves nothing did not mend the master: \
                     after {}\nthe check says {}",
                    text,
                    describe_checked(&after)
                );
                let again = repair_plan(&mended.image(now_ns), &dead).map(|p| p.repairs);
                assert!(
                    matches!(again.as_deref(), Ok([])),
                    "a mended master needs more repairs: after {text}\nagain: {:?}",
                    again.map(|r| r
                        .iter()
                        .map(|r| format!("LB {}: {}", r.lb, r.what))
                        .collect::<Vec<_>>())
                );
            }
        }
        Err(e) => text.push_str(&format!("\nrepair: error: {e}")),
    }
    (true, text)
}

/// The whole-master checks: `check_image` (through `check_master`'s
/// name, the target's first function), `master_records` and
/// `repair_plan`, with the backups of a v1.1 layout. Two modes:
///
/// - first byte even: the master as a reader reads it, LB 0 up to the end
///   of the pointer tables, followed, when the MCB (or the device size)
///   places backups, by the two backup LBs. The device size is the MCB's
///   `device_bytes` field (raw); the checker's clock the first 8 bytes of
///   LB 0, which fts never writes (0: no clock).
/// - first byte odd: a master formatted in memory with a small geometry
///   chosen by bytes 1-7 (byte 3 bit 7 set: v1.0, without backups), then
///   corrupted by 6-byte patches from byte 8 on (offset u32 into the
///   control area followed by the backups, xor, bit 0 set: re-seal the
///   record's CRC so its contents are checked); byte 8 also shrinks the
///   device by up to 7 LBs.
pub fn check_master(data: &[u8]) -> Outcome {
    if byte(data, 0) % 2 == 0 {
        raw_master(data)
    } else {
        formatted_master(data)
    }
}

fn raw_master(data: &[u8]) -> Outcome {
    let mcb_at = MCB_LB as usize * LB;
    let device_bytes = data.get(mcb_at + 160..mcb_at + 168).map_or(0, le_u64);
    let lb5_7 = data.get(mcb_at..).unwrap_or(&[]);
    let lb5_7 = &lb5_7[..lb5_7.len().min(3 * LB)];
    let backup_len = BACKUP_LBS as usize * LB;
    let split = backup_location(lb5_7, device_bytes)
        .filter(|_| data.len() >= (SDT_LB as usize + 1) * LB + backup_len);
    let (control, backups, backup_lb) = match split {
        Some(lb) => {
            let at = data.len() - backup_len;
            (&data[..at], &data[at..], lb)
        }
        None => (data, &[][..], 0),
    };
    let now = le_u64(data.get(..8).unwrap_or(&[]));
    let m = MasterBytes {
        control: control.to_vec(),
        backup_lb,
        backups: backups.to_vec(),
        device_bytes,
    };
    let (reached, text) = check_and_repair(&m, (now != 0).then_some(now));
    Outcome { reached, text }
}

fn formatted_master(data: &[u8]) -> Outcome {
    let n = 2 + u32::from(byte(data, 2) % 40);
    let p = GeometryParams {
        master_bytes: (8 + u64::from(byte(data, 1) % 24)) << 20,
        secondary_bytes: (0..byte(data, 3) % 3)
            .map(|i| (4 + u64::from(i)) << 20)
            .collect(),
        block_size: 512 << (byte(data, 4) % 4),
        segment_bytes: 4096 * (1 + u64::from(byte(data, 5) % 20)),
        max_connections: 1 + u32::from(byte(data, 6) % 4),
        ring_entries: n,
        batch: 1 + u32::from(byte(data, 7)) % n,
    };
    let minor = if byte(data, 3) & 0x80 != 0 {
        0
    } else {
        FORMAT_MINOR
    };
    let geometry = match Geometry::compute_minor(&p, minor) {
        Ok(g) => g,
        Err(e) => {
            return Outcome {
                reached: false,
                text: format!("geometry: error: {e}"),
            }
        }
    };
    let d = geometry.devices.len();
    let spec = FormatSpec {
        geometry,
        layout_uuid: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
        device_uuids: (0..d).map(|i| Uuid::from_u128(1 + i as u128)).collect(),
        time_ns: 1,
        paths: vec!["/dev/x".into()],
        hw_ids: vec![],
        lease_timeout_ms: 10_000,
        lock_timeout_ms: 10_000,
        io_timeout_ms: 30_000,
        heartbeat_ms: 1_000,
    };
    let mut m = MasterBytes::formatted(&spec);
    // Each secondary's LB 5 as format writes it.
    let mut lb5s = vec![vec![0u8; LB]; d];
    for w in format_plan(&spec) {
        if w.device > 0 {
            overlay(&mut lb5s[w.device], MCB_LB, w.lb, &w.data);
        }
    }
    // Patches: (offset u32, xor u8, reseal u8) groups, over the control
    // area followed by the backups.
    let end = m.control.len();
    let span = end + m.backups.len();
    let mut touched = Vec::new();
    for patch in data.get(8..).unwrap_or(&[]).chunks_exact(6) {
        let off = le_u32(&patch[..4]) as usize % span;
        let (buf, at) = if off < end {
            (&mut m.control, off)
        } else {
            (&mut m.backups, off - end)
        };
        buf[at] ^= patch[4];
        if patch[5] & 1 == 1 {
            touched.push(off / RECORD_SIZE * RECORD_SIZE);
        }
    }
    for rec in touched {
        let (buf, at) = if rec < end {
            (&mut m.control, rec)
        } else {
            (&mut m.backups, rec - end)
        };
        let r = &mut buf[at..at + RECORD_SIZE];
        if r[0] == b'F' {
            r[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
            let crc = crc32c_record(r, CRC_OFFSET);
            r[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let shrink = usize::from(byte(data, 8) % 8) * LB;
    m.device_bytes -= shrink as u64;
    let (reached, mut text) = check_and_repair(&m, Some(NOW_NS));
    text.insert_str(0, "formatted: ");
    if let Ok(c) = check_image(&m.image(None)) {
        for (i, lb5) in lb5s.iter().enumerate() {
            let problems = check_secondary(lb5, &c.mcb, &c.sdt, i);
            text.push_str(&format!("\nsecondary {i}: {} problem(s)", problems.len()));
        }
        let g = Geometry::from_mcb(&c.mcb, &c.sdt);
        text.push_str(&format!("\nfrom_mcb: {}", describe(&g)));
    }
    let _ = mcb_for_device(&spec, d);
    let cut = check_master_area(&m.control[..end.min(shrink + 6 * LB)], m.device_bytes);
    text.push_str(&format!(
        "\ncut: {}",
        match cut {
            Ok((_, sdt, problems)) => format!(
                "ok: {} SDT entries, {} problem(s)",
                sdt.len(),
                problems.len()
            ),
            Err(e) => format!("error: {e}"),
        }
    ));
    Outcome { reached, text }
}
