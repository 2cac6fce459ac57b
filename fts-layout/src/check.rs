//! fsck-style checks of bytes the caller has read. Pure: no I/O.
//!
//! A check reads the master's control area with two reads: first LB 0-5
//! (`6 × LB` bytes); [`check_master`] then returns [`Error::Truncated`]
//! whose `need` is the size of the whole control area (LB 0 up to
//! [`Geometry::control_end_lb`]); read that much and call it again.

use core::fmt;

use crate::codec::validate_name;
use crate::error::{Error, GeometryError};
use crate::geometry::{reconcile, ControlLayout, Extent, Geometry};
use crate::records::{
    CmdArea, DeviceRole, Lease, LockRecord, Mcb, PidEntry, PtrChunk, PtrEntry, RecordKind, Role,
    SdtEntry, LOCK_HELD,
};
use crate::{
    ENTRIES_PER_CHUNK, LB, LOCK_LB, MAX_DEVICES, MCB_LB, PID_ENTRY_LBS, PIT_LB, PTR_ENTRY_SIZE,
    RECORD_SIZE, SDT_LB, ZERO_LB,
};

/// One thing wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Device index (0 = master, then Secondary Device Table order).
    pub device: usize,
    /// LB of the record (or region) at fault.
    pub lb: u64,
    /// Byte offset of the record, or of the bad field, in that LB.
    pub offset_in_lb: u32,
    /// The record, e.g. "Process Id Table entry 3", "lease 3 (initiator)",
    /// "pointer table 3 (connector) chunk 2".
    pub record: String,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "device {} LB {} +{}: {}: {}",
            self.device, self.lb, self.offset_in_lb, self.record, self.what
        )
    }
}

/// Name of the lease record of `slot` written by `role`.
pub fn lease_name(slot: u32, role: Role) -> String {
    format!("{} ({role})", RecordKind::Lease.at(slot))
}

/// Name of the command area of `slot` written by `role` (`pro_dtd` for the
/// initiator, `InitM` for the connector).
pub fn cmd_name(slot: u32, role: Role) -> String {
    let which = match role {
        Role::Initiator => "pro_dtd",
        Role::Connector => "InitM",
    };
    format!("{} ({which})", RecordKind::Cmd.at(slot))
}

/// Name of chunk `chunk` of the pointer table of `slot` written by `role`.
pub fn chunk_name(slot: u32, role: Role, chunk: u32) -> String {
    format!("pointer table {slot} ({role}) chunk {chunk}")
}

struct Report {
    device: usize,
    problems: Vec<Problem>,
}

impl Report {
    fn add(
        &mut self,
        lb: u64,
        offset_in_lb: usize,
        record: impl Into<String>,
        what: impl Into<String>,
    ) {
        self.problems.push(Problem {
            device: self.device,
            lb,
            offset_in_lb: offset_in_lb as u32,
            record: record.into(),
            what: what.into(),
        });
    }

    /// Reports the first non-zero byte of `bytes` (which start at
    /// `offset` in `lb`), if any.
    fn zero(
        &mut self,
        lb: u64,
        offset: usize,
        bytes: &[u8],
        record: impl Into<String>,
        what: &str,
    ) {
        if let Some(i) = bytes.iter().position(|&b| b != 0) {
            self.add(
                lb,
                offset + i,
                record,
                format!("{what}: byte {:#04x} at offset {}", bytes[i], offset + i),
            );
        }
    }
}

fn lb_bytes(control: &[u8], lb: u64) -> &[u8] {
    let start = usize::try_from(lb)
        .ok()
        .and_then(|l| l.checked_mul(LB))
        .unwrap_or(usize::MAX);
    control.get(start..start.saturating_add(LB)).unwrap_or(&[])
}

/// Which record a control area cut at `len` bytes loses first.
fn kind_at(len: usize, ptr_start: u64) -> RecordKind {
    match (len / LB) as u64 {
        l if l <= MCB_LB => RecordKind::Mcb,
        l if l == LOCK_LB => RecordKind::Lock,
        l if l == SDT_LB => RecordKind::Sdt,
        l if l < ptr_start => RecordKind::Pid,
        _ => RecordKind::PtrChunk,
    }
}

/// Checks the master's control area: `control` holds the bytes from LB 0 to
/// the end of the pointer tables ([`Geometry::control_end_lb`]);
/// `device_bytes` is the master's current size.
///
/// Returns `Err` only when the Master Control Block itself is unusable:
/// [`Error::Empty`] (unformatted), a corrupt or secondary MCB, an MCB whose
/// connection count or ring size is out of range, or `control` too short
/// ([`Error::Truncated`], whose `need` says how many bytes to read).
/// Otherwise returns the MCB, the Secondary Device Table entries that decoded
/// (in order, up to the first that did not) and every problem found.
pub fn check_master(
    control: &[u8],
    device_bytes: u64,
) -> Result<(Mcb, Vec<SdtEntry>, Vec<Problem>), Error> {
    let got = control.len();
    let need_mcb = (MCB_LB as usize + 1) * LB;
    if got < need_mcb {
        return Err(Error::Truncated {
            kind: RecordKind::Mcb,
            need: need_mcb,
            got,
        });
    }
    let lb5 = lb_bytes(control, MCB_LB);
    let mcb = Mcb::decode(lb5)?;
    if mcb.blk5_id != DeviceRole::Master {
        return Err(Error::BadField {
            kind: RecordKind::Mcb,
            field: "blk5_id",
            reason: format!(
                "this is the copy of secondary device {} (\"SEC FTS\"), not a master",
                mcb.blk5_dev_id
            ),
        });
    }
    let ctl = ControlLayout::new(mcb.blk5_max_connections, mcb.blk5_maxptr).map_err(|e| {
        let field = match e {
            GeometryError::Connections { .. } => "blk5_max_connections",
            _ => "blk5_maxptr",
        };
        Error::BadField {
            kind: RecordKind::Mcb,
            field,
            reason: e.to_string(),
        }
    })?;
    let need = usize::try_from(ctl.control_end)
        .ok()
        .and_then(|l| l.checked_mul(LB))
        .unwrap_or(usize::MAX);
    if got < need {
        return Err(Error::Truncated {
            kind: kind_at(got, ctl.ptr_start),
            need,
            got,
        });
    }

    let mut r = Report {
        device: 0,
        problems: Vec::new(),
    };
    let mcb_name = RecordKind::Mcb.to_string();

    if device_bytes < mcb.device_bytes {
        r.add(
            MCB_LB,
            160,
            &mcb_name,
            format!(
                "the device is {device_bytes} bytes, smaller than the {} bytes it had at format: data segments past its end are lost",
                mcb.device_bytes
            ),
        );
    }
    r.zero(
        ZERO_LB,
        0,
        lb_bytes(control, ZERO_LB),
        "LB 4",
        "not zero (format zeroes it)",
    );
    r.zero(
        MCB_LB,
        RECORD_SIZE,
        lb5.get(RECORD_SIZE..).unwrap_or(&[]),
        &mcb_name,
        "bytes after the record are not zero",
    );

    // Lock record.
    let lb6 = lb_bytes(control, LOCK_LB);
    let lock_name = RecordKind::Lock.to_string();
    match LockRecord::decode(lb6, mcb.expect_record(0)) {
        Ok(lock) if lock.state == LOCK_HELD => {
            if let Err(e) = validate_name(&lock.holder_name) {
                r.add(
                    LOCK_LB,
                    72,
                    &lock_name,
                    format!("held, but holder_name: {e}"),
                );
            }
        }
        Ok(_) => {}
        Err(e) => r.add(LOCK_LB, 0, &lock_name, e.detail()),
    }
    r.zero(
        LOCK_LB,
        RECORD_SIZE,
        lb6.get(RECORD_SIZE..).unwrap_or(&[]),
        &lock_name,
        "bytes after the record are not zero",
    );

    // Secondary Device Table.
    let lb7 = lb_bytes(control, SDT_LB);
    let entrynum = mcb.blk5_secondary_device_entrynum as usize;
    let mut sdt = Vec::with_capacity(entrynum);
    let mut sdt_ok = true;
    for (i, slot) in lb7.chunks_exact(RECORD_SIZE).take(MAX_DEVICES).enumerate() {
        let index = i as u32 + 1;
        let name = RecordKind::Sdt.at(index);
        if i >= entrynum {
            r.zero(
                SDT_LB,
                i * RECORD_SIZE,
                slot,
                name,
                "unused slot is not zero",
            );
            continue;
        }
        match SdtEntry::decode(slot, mcb.expect_record(index)) {
            Ok(e) if sdt_ok => sdt.push(e),
            Ok(_) => {}
            Err(e) => {
                sdt_ok = false;
                r.add(SDT_LB, i * RECORD_SIZE, name, e.detail());
            }
        }
    }

    // Geometry recomputed from the recorded sizes and tunables.
    let mut geometry = None;
    if sdt_ok {
        match reconcile(&mcb, &sdt) {
            Ok((g, mismatches)) => {
                for m in mismatches {
                    let what = format!("{}: {}", m.field, m.reason);
                    match m.kind {
                        RecordKind::Sdt => {
                            let off = (m.index as usize).saturating_sub(1) * RECORD_SIZE
                                + m.offset as usize;
                            r.add(SDT_LB, off, RecordKind::Sdt.at(m.index), what);
                        }
                        _ => r.add(MCB_LB, m.offset as usize, &mcb_name, what),
                    }
                }
                check_extents(&mut r, &g);
                geometry = Some(g);
            }
            Err(e) => r.add(MCB_LB, 0, &mcb_name, e.to_string()),
        }
    }

    // Process Id Table: entries, leases, command areas.
    let c = mcb.blk5_max_connections;
    let mut generations: Vec<Option<u64>> = Vec::with_capacity(c as usize);
    for slot in 1..=c {
        let lb = PIT_LB + u64::from(slot - 1) * u64::from(PID_ENTRY_LBS);
        let bytes = lb_bytes(control, lb);
        let name = RecordKind::Pid.at(slot);
        let generation = match PidEntry::decode(bytes, mcb.expect_record(slot)) {
            Ok(e) => {
                check_pid(&mut r, lb, &name, slot, &e);
                Some(e.pro_generation)
            }
            Err(Error::Empty { .. }) => Some(0),
            Err(e) => {
                r.add(lb, 0, &name, e.detail());
                None
            }
        };
        r.zero(
            lb,
            RECORD_SIZE,
            bytes.get(RECORD_SIZE..).unwrap_or(&[]),
            &name,
            "bytes after the record are not zero",
        );
        generations.push(generation);
        for role in Role::BOTH {
            let lb = lb + 1 + role.dir() as u64;
            let bytes = lb_bytes(control, lb);
            let name = lease_name(slot, role);
            match Lease::decode(bytes, mcb.expect_record(slot)) {
                Ok(l) => {
                    if l.role != role {
                        r.add(
                            lb,
                            24,
                            &name,
                            format!("role is {}, expected {role}", l.role),
                        );
                    }
                    newer(&mut r, lb, 32, &name, l.generation, generation);
                }
                Err(e) => r.add(lb, 0, &name, e.detail()),
            }
            let cname = cmd_name(slot, role);
            match CmdArea::decode(
                bytes.get(RECORD_SIZE..).unwrap_or(&[]),
                mcb.expect_record(slot),
            ) {
                Ok(cmd) => newer(
                    &mut r,
                    lb,
                    RECORD_SIZE + 24,
                    &cname,
                    cmd.generation,
                    generation,
                ),
                Err(e) => r.add(lb, RECORD_SIZE, &cname, e.detail()),
            }
            r.zero(
                lb,
                2 * RECORD_SIZE,
                bytes.get(2 * RECORD_SIZE..).unwrap_or(&[]),
                format!("Process Id Table entry {slot} LB +{}", 1 + role.dir()),
                "bytes after the command area are not zero",
            );
        }
    }

    // Pointer tables.
    let chunks_per_lb = (LB / RECORD_SIZE) as u64;
    for slot in 1..=c {
        let generation = generations.get(slot as usize - 1).copied().flatten();
        for role in Role::BOTH {
            let table_lb = ctl.ptr_start
                + (u64::from(slot - 1) * 2 + role.dir() as u64) * u64::from(ctl.ptr_table_lbs);
            for chunk in 0..ctl.chunks_per_table {
                let lb = table_lb + u64::from(chunk) / chunks_per_lb;
                let off = (u64::from(chunk) % chunks_per_lb) as usize * RECORD_SIZE;
                let bytes = lb_bytes(control, lb).get(off..).unwrap_or(&[]);
                let name = chunk_name(slot, role, chunk);
                match PtrChunk::decode(bytes, mcb.expect_record(chunk)) {
                    Ok(ch) => {
                        newer(&mut r, lb, off + 24, &name, ch.generation, generation);
                        let ctx = ChunkCtx {
                            mcb: &mcb,
                            geometry: geometry.as_ref(),
                            slot,
                            role,
                            chunk,
                            lb,
                            off,
                        };
                        check_entries(&mut r, &ctx, &name, &ch);
                    }
                    Err(e) => r.add(lb, off, &name, e.detail()),
                }
            }
            // Bytes of the table's last LB after the last chunk.
            let used = ctl.chunks_per_table as usize * RECORD_SIZE;
            let last_lb = table_lb + u64::from(ctl.ptr_table_lbs) - 1;
            let tail_from =
                used.saturating_sub((ctl.ptr_table_lbs as usize).saturating_sub(1) * LB);
            r.zero(
                last_lb,
                tail_from,
                lb_bytes(control, last_lb).get(tail_from..).unwrap_or(&[]),
                format!("pointer table {slot} ({role})"),
                "bytes after the last chunk are not zero",
            );
        }
    }
    Ok((mcb, sdt, r.problems))
}

fn check_pid(r: &mut Report, lb: u64, name: &str, slot: u32, e: &PidEntry) {
    if e.pro_process_id != slot {
        r.add(
            lb,
            24,
            name,
            format!("pro_process_id is {}, expected {slot}", e.pro_process_id),
        );
    }
    if e.is_processing() && !e.is_allocated() {
        r.add(
            lb,
            28,
            name,
            format!(
                "pro_flag_process {:#x}: PROCESSING without ALLOCATED",
                e.pro_flag_process
            ),
        );
    }
    if e.is_allocated() {
        for (field, off, value) in [
            ("pro_requestor", 72, &e.pro_requestor),
            ("pro_requestee", 104, &e.pro_requestee),
        ] {
            if let Err(err) = validate_name(value) {
                r.add(lb, off, name, format!("{field}: {err}"));
            }
        }
    }
}

/// Reports a generation newer than the Process Id Table entry's.
fn newer(
    r: &mut Report,
    lb: u64,
    off: usize,
    name: &str,
    generation: u64,
    pro_generation: Option<u64>,
) {
    if let Some(pg) = pro_generation {
        if generation > pg {
            r.add(
                lb,
                off,
                name,
                format!("generation {generation} is newer than the Process Id Table entry's pro_generation {pg} (inconsistent)"),
            );
        }
    }
}

struct ChunkCtx<'a> {
    mcb: &'a Mcb,
    geometry: Option<&'a Geometry>,
    slot: u32,
    role: Role,
    chunk: u32,
    lb: u64,
    off: usize,
}

fn check_entries(r: &mut Report, cx: &ChunkCtx<'_>, name: &str, ch: &PtrChunk) {
    let n = cx.mcb.blk5_maxptr;
    for (j, e) in ch.entries.iter().enumerate() {
        let entry = cx.chunk * ENTRIES_PER_CHUNK as u32 + j as u32;
        let off = cx.off + 32 + j * PTR_ENTRY_SIZE;
        if entry >= n {
            if *e != PtrEntry::default() {
                r.add(
                    cx.lb,
                    off,
                    name,
                    format!("slot {j} (entry {entry}) is past the ring size {n} but not zero"),
                );
            }
            continue;
        }
        let seg = e.ptr_process_segment_ptr;
        match cx.geometry {
            Some(g) => {
                let expected = g.ring_segment(cx.slot, cx.role, entry);
                if seg != expected {
                    let range = if seg == 0 || seg > g.tot_seg_num {
                        " (out of range)"
                    } else {
                        ""
                    };
                    r.add(
                        cx.lb,
                        off,
                        name,
                        format!("entry {entry}: ptr_process_segment_ptr {seg}{range}, the geometry maps it to {expected}"),
                    );
                }
            }
            None => {
                if seg == 0 || seg > cx.mcb.blk5_tot_seg_num {
                    r.add(
                        cx.lb,
                        off,
                        name,
                        format!(
                            "entry {entry}: ptr_process_segment_ptr {seg} is not in 1..={}",
                            cx.mcb.blk5_tot_seg_num
                        ),
                    );
                }
            }
        }
        if u32::from(e.ptr_process_blk_read) != cx.mcb.blk5_seg_size {
            r.add(
                cx.lb,
                off + 6,
                name,
                format!(
                    "entry {entry}: ptr_process_blk_read {}, but blk5_seg_size is {}",
                    e.ptr_process_blk_read, cx.mcb.blk5_seg_size
                ),
            );
        }
        let peer = cx.role.peer().flag();
        if e.ptr_process_segment_flg & peer != 0 || e.ack_flg & peer != 0 {
            r.add(
                cx.lb,
                off + 4,
                name,
                format!(
                    "entry {entry}: flags {:#04x}/{:#04x} carry the {} bit in the {}'s table",
                    e.ptr_process_segment_flg,
                    e.ack_flg,
                    cx.role.peer(),
                    cx.role
                ),
            );
        }
    }
}

fn check_extents(r: &mut Report, g: &Geometry) {
    let mut ext: Vec<Extent> = g.extents();
    ext.sort_by_key(|e| (e.device, e.start_lb));
    let mut prev: Option<&Extent> = None;
    for e in &ext {
        if let Some(p) = prev.filter(|p| p.device == e.device) {
            if p.overlaps(e) {
                let (dev, r_dev) = (e.device, r.device);
                r.device = dev;
                r.add(
                    e.start_lb,
                    0,
                    &e.name,
                    format!("overlaps {} (LB {}..{})", p.name, p.start_lb, p.end_lb()),
                );
                r.device = r_dev;
            }
        }
        if let Some(d) = g.devices.get(e.device) {
            if e.end_lb() > d.device_lbs {
                let r_dev = r.device;
                r.device = e.device;
                r.add(
                    e.start_lb,
                    0,
                    &e.name,
                    format!(
                        "ends at LB {}, past the end of the device ({} LBs)",
                        e.end_lb(),
                        d.device_lbs
                    ),
                );
                r.device = r_dev;
            }
        }
        let extends = match prev {
            Some(p) => p.device != e.device || e.end_lb() > p.end_lb(),
            None => true,
        };
        if extends {
            prev = Some(e);
        }
    }
}

/// Checks the Master Control Block copy read from LB 5 of secondary device
/// `device` (its Secondary Device Table index, 1..) against the master's
/// MCB and Secondary Device Table. `lb5` is the record, or the whole LB.
pub fn check_secondary(lb5: &[u8], master: &Mcb, sdt: &[SdtEntry], device: usize) -> Vec<Problem> {
    let mut r = Report {
        device,
        problems: Vec::new(),
    };
    let name = "Master Control Block copy";
    let Some(entry) = sdt.get(device).filter(|_| device > 0) else {
        r.add(
            MCB_LB,
            0,
            name,
            format!(
                "device {device} is not a secondary of this layout ({} devices)",
                sdt.len()
            ),
        );
        return r.problems;
    };
    r.zero(
        MCB_LB,
        RECORD_SIZE,
        lb5.get(RECORD_SIZE..).unwrap_or(&[]),
        name,
        "bytes after the record are not zero",
    );
    let copy = match Mcb::decode(lb5) {
        Ok(m) => m,
        Err(e) => {
            r.add(MCB_LB, 0, name, e.detail());
            return r.problems;
        }
    };
    let mut expected = master.clone();
    expected.blk5_id = DeviceRole::Secondary;
    expected.blk5_device_uuid = entry.sec_dev_id;
    expected.blk5_dev_id = device as u32 + 1;
    expected.device_bytes = entry.device_bytes;
    macro_rules! same {
        ($($field:ident @ $off:expr),* $(,)?) => {$(
            if copy.$field != expected.$field {
                r.add(MCB_LB, $off, name, format!(
                    "{}: {:?} on this device, expected {:?}",
                    stringify!($field), copy.$field, expected.$field
                ));
            }
        )*};
    }
    if copy.blk5_layout_uuid != master.blk5_layout_uuid {
        r.add(
            MCB_LB,
            32,
            name,
            format!(
                "belongs to layout {}, not this layout {} (stale)",
                copy.blk5_layout_uuid, master.blk5_layout_uuid
            ),
        );
        return r.problems;
    }
    same!(
        blk5_id @ 24, blk5_device_uuid @ 48, blk5_dev_id @ 64, blk5_seg_size @ 68,
        blk5_time_id @ 72, blk5_tot_seg_num @ 80, blk5_max_connections @ 84,
        blk5_process_id_table_ptr @ 88, blk5_secondary_device_table_ptr @ 96,
        blk5_secondary_device_entrynum @ 104, blk5_ptr_seg_per_process @ 108,
        blk5_start_process_segment_ptr @ 112, blk5_mast_sec_start_segment_ptr @ 120,
        blk5_maxptr @ 128, lock_timeout_ms @ 132, lock_record_ptr @ 136,
        lease_timeout_ms @ 144, io_timeout_ms @ 148, heartbeat_ms @ 152,
        format_block_size @ 156, device_bytes @ 160, pid_entry_lbs @ 168,
        ptr_table_lbs @ 172, blk5_unix_filename @ 176, device_uuids @ 304,
    );
    r.problems
}
