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

use fts_layout::check::{self, check_master as check_master_area, check_secondary};
use fts_layout::{
    crc32c_record, format_plan, mcb_for_device, CmdArea, Error, Expect, FormatSpec, Geometry,
    GeometryParams, Lease, LockRecord, Mcb, PidEntry, PtrChunk, RecordKind, SdtEntry, SegHeader,
    Stamp, CRC_OFFSET, FORMAT_VERSION, LB, MCB_LB, RECORD_SIZE,
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

fn describe_check(r: &Result<(Mcb, Vec<SdtEntry>, Vec<check::Problem>), Error>) -> String {
    match r {
        Ok((_, sdt, problems)) => {
            let mut s = format!(
                "ok: {} SDT entries, {} problem(s)",
                sdt.len(),
                problems.len()
            );
            for p in problems {
                s.push_str("\n  ");
                s.push_str(&p.to_string());
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

/// `check::check_master` / `check_secondary`: on raw bytes (first byte
/// even: a control area as read from a master, LB 0 on), or (first byte
/// odd) on a real formatted control area built from a small geometry chosen
/// by the input, then corrupted by the rest of the input, optionally
/// re-sealing the touched records so their contents are checked.
pub fn check_master(data: &[u8]) -> Outcome {
    if byte(data, 0) % 2 == 0 {
        let r = check_master_area(data, data.len() as u64);
        return Outcome {
            reached: r.is_ok(),
            text: describe_check(&r),
        };
    }
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
    let geometry = match Geometry::compute(&p) {
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
    let end = spec.geometry.control_end_lb() as usize * LB;
    // The master's control area and each secondary's LB 5: what format
    // writes there (it also writes elsewhere, e.g. LB 4).
    let mut control = vec![0u8; end];
    let mut lb5s = vec![vec![0u8; LB]; d];
    for w in format_plan(&spec) {
        match w.device {
            0 => overlay(&mut control, 0, w.lb, &w.data),
            n => overlay(&mut lb5s[n], MCB_LB, w.lb, &w.data),
        }
    }
    // Patches: (offset u32, xor u8, reseal u8) groups.
    let mut touched = Vec::new();
    for patch in data.get(8..).unwrap_or(&[]).chunks_exact(6) {
        let off = le_u32(&patch[..4]) as usize % end;
        control[off] ^= patch[4];
        if patch[5] & 1 == 1 {
            touched.push(off / RECORD_SIZE * RECORD_SIZE);
        }
    }
    for rec in touched {
        let r = &mut control[rec..rec + RECORD_SIZE];
        if r[0] == b'F' {
            r[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
            let crc = crc32c_record(r, CRC_OFFSET);
            r[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let shrink = usize::from(byte(data, 8) % 8) * LB;
    let device_bytes = spec.geometry.devices[0].device_bytes - (shrink as u64);
    let full = check_master_area(&control, device_bytes);
    let mut text = format!("formatted: {}", describe_check(&full));
    if let Ok((mcb, sdt, _problems)) = &full {
        for (i, lb5) in lb5s.iter().enumerate() {
            let problems = check_secondary(lb5, mcb, sdt, i);
            text.push_str(&format!("\nsecondary {i}: {} problem(s)", problems.len()));
        }
        let g = Geometry::from_mcb(mcb, sdt);
        text.push_str(&format!("\nfrom_mcb: {}", describe(&g)));
    }
    let _ = mcb_for_device(&spec, d);
    let cut = check_master_area(&control[..control.len().min(shrink + 6 * LB)], device_bytes);
    text.push_str(&format!("\ncut: {}", describe_check(&cut)));
    Outcome {
        reached: full.is_ok(),
        text,
    }
}
