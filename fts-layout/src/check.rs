//! fsck-style checks of bytes the caller has read, and the repairs that
//! follow from them. Pure: no I/O.
//!
//! A check reads the master's control area with two reads: first LB 0-7
//! (`8 × LB` bytes) and the two backup LBs ([`backup_location`]);
//! [`check_image`] then returns [`Error::Truncated`] whose `need` is the
//! size of the whole control area (LB 0 up to
//! [`Geometry::control_end_lb`]); read that much and call it again.
//!
//! A v1.1 master keeps backups of its Master Control Block and Secondary
//! Device Table in its last two LBs. [`master_records`] reads the MCB and
//! the SDT through them when a primary record is damaged (what a program
//! opening the device does); [`check_image`] reports the damage and
//! [`repair_plan`] says what to write to mend it.

use core::fmt;

use crate::codec::validate_name;
use crate::error::{Error, GeometryError};
use crate::format::formatted_lb;
use crate::geometry::{backups_at_end, reconcile, ControlLayout, Extent, Geometry};
use crate::records::{
    CmdArea, DeviceRole, Lease, LockRecord, Mcb, PidEntry, PtrChunk, PtrEntry, RecordKind, Role,
    SdtEntry, LEASE_ALIVE, LEASE_CLOSED, LOCK_HELD,
};
use crate::{
    BACKUP_LBS, ENTRIES_PER_CHUNK, LB, LOCK_LB, MAX_DEVICES, MCB_LB, PID_ENTRY_LBS, PIT_LB,
    PTR_ENTRY_SIZE, RECORD_SIZE, SDT_LB, ZERO_LB,
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

/// The two backup LBs of a v1.1 master, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backups<'a> {
    /// The LB they were read from: the backup Secondary Device Table; the
    /// backup Master Control Block is the LB after it.
    pub lb: u64,
    /// `2 × LB` bytes from `lb`.
    pub bytes: &'a [u8],
}

impl<'a> Backups<'a> {
    fn sdt_lb(&self) -> &'a [u8] {
        self.bytes.get(..LB).unwrap_or(&[])
    }

    fn mcb_lb(&self) -> &'a [u8] {
        self.bytes.get(LB..2 * LB).unwrap_or(&[])
    }

    /// These are the backups `mcb` describes.
    fn belong_to(&self, mcb: &Mcb) -> bool {
        mcb.blk5_minor_version >= 1
            && mcb.sdt_backup_ptr > 0
            && self.lb == mcb.sdt_backup_ptr
            && mcb.mcb_backup_ptr == self.lb + 1
            && self.bytes.len() >= BACKUP_LBS as usize * LB
    }
}

/// Name of the backup of `record` (e.g. "backup Master Control Block").
fn backup_name(record: &str) -> String {
    format!("backup {record}")
}

/// A primary record that failed its checks and was read from its backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The record, e.g. "Master Control Block", "Secondary Device Table entry 2".
    pub record: String,
    /// LB of the damaged primary.
    pub lb: u64,
    /// Why the primary was refused.
    pub error: Error,
    /// LB of the backup that was used instead.
    pub backup_lb: u64,
}

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} (LB {}) is damaged: {}; using its backup at LB {}",
            self.record,
            self.lb,
            self.error.detail(),
            self.backup_lb
        )
    }
}

/// The Master Control Block and Secondary Device Table a reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterRecords {
    /// The MCB (the primary, or its backup if the primary is damaged).
    pub mcb: Mcb,
    /// The Secondary Device Table entries, master first.
    pub sdt: Vec<SdtEntry>,
    /// The primaries that were damaged and read from their backups.
    pub damaged: Vec<Damaged>,
}

/// One warning line for the primaries in `damaged`, naming each and saying
/// how to mend them; `None` when nothing was damaged.
pub fn damage_warning(location: &str, damaged: &[Damaged]) -> Option<String> {
    if damaged.is_empty() {
        return None;
    }
    let what: Vec<String> = damaged.iter().map(|d| d.to_string()).collect();
    Some(format!(
        "warning: {location}: {}; `fts -d {location} check --repair` rewrites it from the backup",
        what.join("; ")
    ))
}

/// Where the backups of a master are, given its LB 5 to 7 (`3 × LB` bytes
/// from LB 5, or at least the MCB record) and its current size: the LB the
/// MCB names (`sdt_backup_ptr`) if the MCB is valid, none for a valid v1.0
/// MCB, else the last two LBs of the device ([`backups_at_end`]).
pub fn backup_location(lb5_7: &[u8], device_bytes: u64) -> Option<u64> {
    match Mcb::decode(lb5_7) {
        Ok(m) if m.blk5_minor_version >= 1 && m.sdt_backup_ptr > 0 => Some(m.sdt_backup_ptr),
        Ok(_) => None,
        Err(_) => backups_at_end(device_bytes),
    }
}

/// The backup MCB in `backups`, if it is a valid master MCB that describes
/// these very backups.
fn backup_mcb(backups: Option<Backups<'_>>) -> Option<Mcb> {
    let b = backups?;
    let m = Mcb::decode(b.mcb_lb()).ok()?;
    (m.blk5_id == DeviceRole::Master && b.belong_to(&m)).then_some(m)
}

fn not_master(m: &Mcb) -> Error {
    Error::BadField {
        kind: RecordKind::Mcb,
        field: "blk5_id",
        reason: format!(
            "this is the copy of secondary device {} (\"SEC FTS\"), not a master",
            m.blk5_dev_id
        ),
    }
}

/// The MCB of a master: the primary (LB 5, the first record of `lb5`) or,
/// when it is damaged, the backup. `Err` (the primary's error) when
/// neither is a valid master MCB.
fn resolve_mcb(lb5: &[u8], backups: Option<Backups<'_>>) -> Result<(Mcb, Option<Damaged>), Error> {
    match Mcb::decode(lb5) {
        Ok(m) if m.blk5_id == DeviceRole::Master => Ok((m, None)),
        Ok(m) => Err(not_master(&m)),
        Err(e) => match backup_mcb(backups) {
            Some(m) => {
                let backup_lb = m.mcb_backup_ptr;
                Ok((
                    m,
                    Some(Damaged {
                        record: RecordKind::Mcb.to_string(),
                        lb: MCB_LB,
                        error: e,
                        backup_lb,
                    }),
                ))
            }
            None => Err(e),
        },
    }
}

/// Reads the Master Control Block and the Secondary Device Table of a
/// master from `lb5_7` (`3 × LB` bytes from LB 5), each primary record
/// replaced by its backup (from `backups`, read at [`backup_location`])
/// when it fails its checks. Without backups (or on a v1.0 layout, which
/// has none) a damaged primary is an error, as is a record damaged in both
/// copies; the error is the primary's.
pub fn master_records(lb5_7: &[u8], backups: Option<Backups<'_>>) -> Result<MasterRecords, Error> {
    let lb5 = lb5_7.get(..LB).unwrap_or(lb5_7);
    let (mcb, mcb_damage) = resolve_mcb(lb5, backups)?;
    let backups = backups.filter(|b| b.belong_to(&mcb));
    let lb7 = lb5_7.get(2 * LB..3 * LB).unwrap_or(&[]);
    let mut damaged: Vec<Damaged> = mcb_damage.into_iter().collect();
    let mut sdt = Vec::new();
    for i in 0..mcb.blk5_secondary_device_entrynum as usize {
        let index = i as u32 + 1;
        let expect = mcb.expect_record(index);
        let slot = |lb: &[u8]| lb.get(i * RECORD_SIZE..).unwrap_or(&[]).to_vec();
        match SdtEntry::decode(&slot(lb7), expect) {
            Ok(e) => sdt.push(e),
            Err(error) => {
                let b = backups.ok_or_else(|| error.clone())?;
                let e = SdtEntry::decode(&slot(b.sdt_lb()), expect).map_err(|_| error.clone())?;
                damaged.push(Damaged {
                    record: RecordKind::Sdt.at(index),
                    lb: SDT_LB,
                    error,
                    backup_lb: b.lb,
                });
                sdt.push(e);
            }
        }
    }
    Ok(MasterRecords { mcb, sdt, damaged })
}

/// Checks the master's control area: `control` holds the bytes from LB 0 to
/// the end of the pointer tables ([`Geometry::control_end_lb`]);
/// `device_bytes` is the master's current size. The backups of a v1.1
/// layout are not looked at (see [`check_image`]).
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
    check_image(&Image {
        control,
        backups: None,
        device_bytes,
        now_ns: None,
    })
    .map(|c| (c.mcb, c.sdt, c.problems))
}

/// What a check of a master reads.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    /// The bytes from LB 0 to the end of the pointer tables
    /// ([`Geometry::control_end_lb`]), or LB 0-7 on the first read.
    pub control: &'a [u8],
    /// The two backup LBs of a v1.1 layout, read at [`backup_location`];
    /// `None` leaves them unchecked (and the primaries without a fallback).
    pub backups: Option<Backups<'a>>,
    /// The master's current size in bytes.
    pub device_bytes: u64,
    /// The checker's clock (ns since the Unix epoch): when given, allocated
    /// Process Id Table entries whose leases show no life are reported
    /// (see [`DeadEntry`]).
    pub now_ns: Option<u64>,
}

/// An allocated Process Id Table entry whose leases show no life: neither
/// side has a lease of the entry's generation that is alive with a writer
/// timestamp within the MCB's lease timeout of the checker's clock, and
/// the entry was claimed (and accepted) longer ago than that. This compares
/// the writers' clocks with the checker's, so a host whose clock is far
/// behind can look dead; `fts check --repair` therefore confirms the death
/// on its own clock (no lease changes for a lease timeout) before it frees
/// the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadEntry {
    /// The 1-based slot.
    pub slot: u32,
    /// `pro_generation` of the entry.
    pub generation: u64,
    /// `pro_requestor`.
    pub requestor: String,
    /// `pro_requestee`.
    pub requestee: String,
    /// What each lease shows, for the message.
    pub why: String,
}

/// The result of [`check_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The MCB used (the primary, or its backup).
    pub mcb: Mcb,
    /// The Secondary Device Table entries that decoded (from either copy),
    /// in order, up to the first that did not.
    pub sdt: Vec<SdtEntry>,
    /// Every problem found.
    pub problems: Vec<Problem>,
    /// The primaries read from their backups.
    pub damaged: Vec<Damaged>,
    /// Entries whose leases show no life (only when [`Image::now_ns`] is given).
    pub dead: Vec<DeadEntry>,
}

/// Checks a master: its control area, and the backups of a v1.1 layout.
/// A damaged primary MCB or Secondary Device Table entry is read from its
/// backup (and reported); see [`check_master`] for the errors, which here
/// apply only when the backup cannot stand in either.
pub fn check_image(img: &Image<'_>) -> Result<Checked, Error> {
    let control = img.control;
    let device_bytes = img.device_bytes;
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
    let (mcb, mcb_damage) = resolve_mcb(lb5, img.backups)?;
    let backups = img.backups.filter(|b| b.belong_to(&mcb));
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
    let mut damaged = Vec::new();

    match &mcb_damage {
        Some(d) => r.add(
            MCB_LB,
            0,
            &mcb_name,
            format!(
                "{}; read from its backup at LB {} (`fts check --repair` rewrites it)",
                d.error.detail(),
                d.backup_lb
            ),
        ),
        None => r.zero(
            MCB_LB,
            RECORD_SIZE,
            lb5.get(RECORD_SIZE..).unwrap_or(&[]),
            &mcb_name,
            "bytes after the record are not zero",
        ),
    }
    // The MCB record as it should be in both copies: the one in use.
    let good_mcb: &[u8] = match (&mcb_damage, backups) {
        (Some(_), Some(b)) => b.mcb_lb().get(..RECORD_SIZE).unwrap_or(&[]),
        _ => lb5.get(..RECORD_SIZE).unwrap_or(&[]),
    };
    if let (Some(b), None) = (backups, &mcb_damage) {
        let name = backup_name(&mcb_name);
        let lb = mcb.mcb_backup_ptr;
        let copy = b.mcb_lb();
        match Mcb::decode(copy) {
            Err(e) => r.add(lb, 0, &name, e.detail()),
            Ok(_) if copy.get(..RECORD_SIZE) != Some(good_mcb) => r.add(
                lb,
                0,
                &name,
                "differs from the Master Control Block at LB 5 (`fts check --repair` rewrites it)",
            ),
            Ok(_) => r.zero(
                lb,
                RECORD_SIZE,
                copy.get(RECORD_SIZE..).unwrap_or(&[]),
                &name,
                "bytes after the record are not zero",
            ),
        }
    }
    damaged.extend(mcb_damage);

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

    // Secondary Device Table, and its backup.
    let lb7 = lb_bytes(control, SDT_LB);
    let entrynum = mcb.blk5_secondary_device_entrynum as usize;
    let mut sdt = Vec::with_capacity(entrynum);
    let mut sdt_ok = true;
    let backup_slot = |i: usize| -> Option<&[u8]> {
        backups.map(|b| {
            b.sdt_lb()
                .get(i * RECORD_SIZE..(i + 1) * RECORD_SIZE)
                .unwrap_or(&[])
        })
    };
    for (i, slot) in lb7.chunks_exact(RECORD_SIZE).take(MAX_DEVICES).enumerate() {
        let index = i as u32 + 1;
        let name = RecordKind::Sdt.at(index);
        let bname = backup_name(&name);
        let boff = i * RECORD_SIZE;
        if i >= entrynum {
            r.zero(
                SDT_LB,
                i * RECORD_SIZE,
                slot,
                name,
                "unused slot is not zero",
            );
            if let Some(b) = backup_slot(i) {
                r.zero(
                    mcb.sdt_backup_ptr,
                    boff,
                    b,
                    bname,
                    "unused slot is not zero",
                );
            }
            continue;
        }
        let expect = mcb.expect_record(index);
        let entry = match SdtEntry::decode(slot, expect) {
            Ok(e) => {
                if let Some(b) = backup_slot(i) {
                    match SdtEntry::decode(b, expect) {
                        Err(e) => r.add(mcb.sdt_backup_ptr, boff, &bname, e.detail()),
                        Ok(_) if b != slot => r.add(
                            mcb.sdt_backup_ptr,
                            boff,
                            &bname,
                            "differs from the entry at LB 7 (`fts check --repair` rewrites it)",
                        ),
                        Ok(_) => {}
                    }
                }
                Some(e)
            }
            Err(error) => match backup_slot(i).map(|b| SdtEntry::decode(b, expect)) {
                Some(Ok(e)) => {
                    r.add(
                        SDT_LB,
                        i * RECORD_SIZE,
                        &name,
                        format!(
                            "{}; read from its backup at LB {} (`fts check --repair` rewrites it)",
                            error.detail(),
                            mcb.sdt_backup_ptr
                        ),
                    );
                    damaged.push(Damaged {
                        record: name.clone(),
                        lb: SDT_LB,
                        error,
                        backup_lb: mcb.sdt_backup_ptr,
                    });
                    Some(e)
                }
                Some(Err(be)) => {
                    r.add(SDT_LB, i * RECORD_SIZE, &name, error.detail());
                    r.add(mcb.sdt_backup_ptr, boff, &bname, be.detail());
                    None
                }
                None => {
                    r.add(SDT_LB, i * RECORD_SIZE, &name, error.detail());
                    None
                }
            },
        };
        match entry {
            Some(e) if sdt_ok => sdt.push(e),
            Some(_) => {}
            None => sdt_ok = false,
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
    let mut dead = Vec::new();
    for slot in 1..=c {
        let lb = PIT_LB + u64::from(slot - 1) * u64::from(PID_ENTRY_LBS);
        let bytes = lb_bytes(control, lb);
        let name = RecordKind::Pid.at(slot);
        let entry = match PidEntry::decode(bytes, mcb.expect_record(slot)) {
            Ok(e) => {
                check_pid(&mut r, lb, &name, slot, &e);
                Some(e)
            }
            Err(Error::Empty { .. }) => Some(PidEntry::free(slot)),
            Err(e) => {
                r.add(lb, 0, &name, e.detail());
                None
            }
        };
        let generation = entry.as_ref().map(|e| e.pro_generation);
        r.zero(
            lb,
            RECORD_SIZE,
            bytes.get(RECORD_SIZE..).unwrap_or(&[]),
            &name,
            "bytes after the record are not zero",
        );
        generations.push(generation);
        let mut leases = Vec::with_capacity(2);
        for role in Role::BOTH {
            let lb = lb + 1 + role.dir() as u64;
            let bytes = lb_bytes(control, lb);
            let name = lease_name(slot, role);
            let lease = Lease::decode(bytes, mcb.expect_record(slot));
            match &lease {
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
            leases.push((role, lease.ok()));
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
        if let (Some(now), Some(e)) = (img.now_ns, &entry) {
            if let Some(d) = no_life(&mcb, e, &leases, now) {
                let what = if e.is_server() {
                    format!(
                        "registration of fts server {:?} (generation {}) shows no life: {}: a dead server's registration (`fts check --repair` frees it, and so does any fts process after a lease timeout)",
                        d.requestee, d.generation, d.why
                    )
                } else {
                    format!(
                        "{} -> {} (generation {}) shows no life: {}: a dead connection (`fts check --repair` frees it)",
                        d.requestor, d.requestee, d.generation, d.why
                    )
                };
                r.add(lb, 0, &name, what);
                dead.push(d);
            }
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
    Ok(Checked {
        mcb,
        sdt,
        problems: r.problems,
        damaged,
        dead,
    })
}

/// A master held in memory as a check reads it: the control area and the
/// backup LBs. For tests, fuzzing and tools that build or mend a layout in
/// memory: [`MasterBytes::write`] applies a [`crate::Write`] or a
/// [`Repair`] to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterBytes {
    /// LB 0 up to the end of the pointer tables.
    pub control: Vec<u8>,
    /// LB of the backups (0 when the layout has none).
    pub backup_lb: u64,
    /// The backup LBs (`2 × LB` bytes; empty when the layout has none).
    pub backups: Vec<u8>,
    /// The device's size in bytes.
    pub device_bytes: u64,
}

impl MasterBytes {
    /// An all-zero master laid out as `geometry` says.
    pub fn zeroed(geometry: &Geometry) -> MasterBytes {
        let control = vec![0u8; geometry.control_end_lb() as usize * LB];
        let (backup_lb, backups) = if geometry.has_backups() {
            (geometry.sdt_backup_ptr, vec![0u8; BACKUP_LBS as usize * LB])
        } else {
            (0, Vec::new())
        };
        MasterBytes {
            control,
            backup_lb,
            backups,
            device_bytes: geometry.devices.first().map_or(0, |d| d.device_bytes),
        }
    }

    /// The master as [`crate::format_plan`] leaves it.
    pub fn formatted(spec: &crate::FormatSpec) -> MasterBytes {
        let mut m = MasterBytes::zeroed(&spec.geometry);
        for w in crate::format_writes(spec).filter(|w| w.device == 0) {
            m.write(w.lb, &w.data);
        }
        m
    }

    /// Writes `data` (whole LBs) at `lb`; the parts outside the control
    /// area and the backups are dropped. Returns whether all of it landed.
    pub fn write(&mut self, lb: u64, data: &[u8]) -> bool {
        let mut all = true;
        for (k, chunk) in data.chunks(LB).enumerate() {
            match self.lb_mut(lb.saturating_add(k as u64)) {
                Some(dst) if dst.len() == chunk.len() => dst.copy_from_slice(chunk),
                _ => all = false,
            }
        }
        all
    }

    /// LB `lb`, if it is in the control area or the backups.
    pub fn lb(&self, lb: u64) -> Option<&[u8]> {
        let (buf, rel) = if self.backup_lb > 0 && lb >= self.backup_lb {
            (&self.backups, lb - self.backup_lb)
        } else {
            (&self.control, lb)
        };
        let start = usize::try_from(rel).ok()?.checked_mul(LB)?;
        buf.get(start..start.checked_add(LB)?)
    }

    /// LB `lb`, writable, if it is in the control area or the backups.
    pub fn lb_mut(&mut self, lb: u64) -> Option<&mut [u8]> {
        let (buf, rel) = if self.backup_lb > 0 && lb >= self.backup_lb {
            (&mut self.backups, lb - self.backup_lb)
        } else {
            (&mut self.control, lb)
        };
        let start = usize::try_from(rel).ok()?.checked_mul(LB)?;
        buf.get_mut(start..start.checked_add(LB)?)
    }

    /// The [`Image`] a check reads.
    pub fn image(&self, now_ns: Option<u64>) -> Image<'_> {
        Image {
            control: &self.control,
            backups: (self.backup_lb > 0).then_some(Backups {
                lb: self.backup_lb,
                bytes: &self.backups,
            }),
            device_bytes: self.device_bytes,
            now_ns,
        }
    }

    /// Applies every repair of `plan`.
    pub fn apply(&mut self, plan: &RepairPlan) {
        for r in &plan.repairs {
            self.write(r.lb, &r.data);
        }
    }
}

/// Seconds, for messages.
fn secs(ns: u64) -> String {
    format!("{:.1} s", ns as f64 / 1e9)
}

/// Whether allocated entry `e` shows no life (see [`DeadEntry`]); `leases`
/// are its two leases (those that decoded).
fn no_life(
    mcb: &Mcb,
    e: &PidEntry,
    leases: &[(Role, Option<Lease>)],
    now: u64,
) -> Option<DeadEntry> {
    if !e.is_allocated() {
        return None;
    }
    let timeout = u64::from(mcb.lease_timeout_ms).saturating_mul(1_000_000);
    let recent = |t: u64| t != 0 && now.saturating_sub(t) <= timeout;
    // Claimed or accepted within a lease timeout: its leases may not be
    // written yet.
    if recent(e.pro_alloc_time) || recent(e.pro_accept_time) {
        return None;
    }
    let mut why = Vec::with_capacity(2);
    // A registration has one live side: its server, on the connector lease
    // (the initiator lease is whatever an earlier connection left).
    let sides = leases
        .iter()
        .filter(|(role, _)| !e.is_server() || *role == Role::Connector);
    for (role, lease) in sides {
        let shows = match lease {
            Some(l) if l.generation != e.pro_generation => {
                format!("absent (generation {})", l.generation)
            }
            Some(l) if l.state == LEASE_CLOSED => "closed".to_string(),
            Some(l) if l.state == LEASE_ALIVE => {
                if recent(l.timestamp) || l.timestamp > now {
                    return None;
                }
                format!(
                    "alive, but its last beat was {} ago",
                    secs(now.saturating_sub(l.timestamp))
                )
            }
            Some(_) => "never started".to_string(),
            None => "unreadable".to_string(),
        };
        why.push(format!("{role} lease {shows}"));
    }
    Some(DeadEntry {
        slot: e.pro_process_id,
        generation: e.pro_generation,
        requestor: e.pro_requestor.clone(),
        requestee: e.pro_requestee.clone(),
        why: format!(
            "{} (by the writers' clocks against this host's; lease timeout {})",
            why.join(", "),
            secs(timeout)
        ),
    })
}

/// One write that mends something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// LB on the master.
    pub lb: u64,
    /// The bytes, whole LBs.
    pub data: Vec<u8>,
    /// What it mends, one line for the user.
    pub what: String,
    /// `Some(slot)`: it belongs to Process Id Table entry `slot` (or, for
    /// `Some(0)`, is the lock record) and must be written while holding
    /// the Process Id Table lock, from a plan computed on bytes read under
    /// it. `None`: a record only `format` writes (MCB, Secondary Device
    /// Table, LB 4), written without the lock.
    pub slot: Option<u32>,
}

/// What [`repair_plan`] found to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RepairPlan {
    /// The writes, in the order to do them: LB 4, the backups, the
    /// Secondary Device Table, the MCB last of the layout records; then the
    /// lock record; then, per entry, its leases and pointer tables before
    /// the entry record itself.
    pub repairs: Vec<Repair>,
    /// Problems no write here mends, each with why (a live connection's
    /// records, a record damaged in both copies, fields that disagree with
    /// the geometry, …).
    pub left: Vec<String>,
}

impl RepairPlan {
    /// The repairs of records only `format` writes (no lock needed).
    pub fn layout(&self) -> impl Iterator<Item = &Repair> {
        self.repairs.iter().filter(|r| r.slot.is_none())
    }

    /// The repairs that need the Process Id Table lock.
    pub fn table(&self) -> impl Iterator<Item = &Repair> {
        self.repairs.iter().filter(|r| r.slot.is_some())
    }
}

/// Generations at most this large are believed when read from a damaged
/// entry record (a flipped high bit must not push the slot's generation
/// near the end of the u64 range).
const PLAUSIBLE_GENERATION: u64 = 1 << 48;

/// What to write to mend the master in `img`: every problem [`check_image`]
/// finds that the surviving copy or the geometry can rebuild exactly.
///
/// - the MCB and each Secondary Device Table entry from whichever copy is
///   valid, into the other (and LB 4 zeroed);
/// - the lock record, and every lease, command area and pointer-table LB
///   with a problem whose entry is free (or freed here), rewritten as
///   `format` writes them;
/// - entries that are damaged or inconsistent, and those in `free_dead`
///   (dead connections the caller confirmed, see [`DeadEntry`]), freed:
///   written free with a generation above every one the slot's records
///   carry, so no leftover record can match the next connection.
///
/// Records of entries in use by a live connection are left to their
/// owners. A caller writes the plan's layout repairs, then takes the table
/// lock, reads the image again and writes the table repairs of a plan
/// computed on that.
pub fn repair_plan(img: &Image<'_>, free_dead: &[u32]) -> Result<RepairPlan, Error> {
    // Dead connections are the caller's call (`free_dead`), not the clock's.
    let checked = check_image(&Image {
        now_ns: None,
        ..*img
    })?;
    let mcb = &checked.mcb;
    let control = img.control;
    let backups = img.backups.filter(|b| b.belong_to(mcb));
    let mut plan = RepairPlan::default();
    let problem_lbs: Vec<u64> = checked
        .problems
        .iter()
        .filter(|p| p.device == 0)
        .map(|p| p.lb)
        .collect();
    let has_problem = |lb: u64| problem_lbs.contains(&lb);
    // Copy the MCB only if its geometry holds together.
    let consistent = matches!(reconcile(mcb, &checked.sdt), Ok((_, m)) if m.is_empty());
    let mcb_name = RecordKind::Mcb.to_string();

    // A device that shrank since format: no write brings its end back.
    if img.device_bytes < mcb.device_bytes {
        plan.left.push(format!(
            "{mcb_name}: the device is {} bytes, smaller than the {} bytes it had at format; \
             not mended (give the device its size back, or format again)",
            img.device_bytes, mcb.device_bytes
        ));
    }

    // LB 4.
    if lb_bytes(control, ZERO_LB).iter().any(|&b| b != 0) {
        plan.repairs.push(Repair {
            lb: ZERO_LB,
            data: vec![0; LB],
            what: "LB 4: zeroed (format zeroes it)".into(),
            slot: None,
        });
    }

    // The Master Control Block and the Secondary Device Table, both copies.
    let mcb_damaged = checked.damaged.iter().any(|d| d.lb == MCB_LB);
    let mut good_mcb = vec![0u8; LB];
    let source: &[u8] = match (mcb_damaged, backups) {
        (true, Some(b)) => b.mcb_lb(),
        _ => lb_bytes(control, MCB_LB),
    };
    if let (Some(dst), Some(src)) = (good_mcb.get_mut(..RECORD_SIZE), source.get(..RECORD_SIZE)) {
        dst.copy_from_slice(src);
    }
    let mut sdt_lb = vec![0u8; LB];
    let mut sdt_whole = true;
    let lb7 = lb_bytes(control, SDT_LB);
    for i in 0..(mcb.blk5_secondary_device_entrynum as usize).min(MAX_DEVICES) {
        let index = i as u32 + 1;
        let expect = mcb.expect_record(index);
        let range = i * RECORD_SIZE..(i + 1) * RECORD_SIZE;
        let primary = lb7.get(range.clone()).unwrap_or(&[]);
        let backup = backups.and_then(|b| b.sdt_lb().get(range.clone()));
        let good = if SdtEntry::decode(primary, expect).is_ok() {
            Some(primary)
        } else {
            backup.filter(|b| SdtEntry::decode(b, expect).is_ok())
        };
        match (good, sdt_lb.get_mut(range)) {
            (Some(src), Some(dst)) => dst.copy_from_slice(src),
            _ => {
                sdt_whole = false;
                plan.left.push(format!(
                    "{}: damaged{}; not rebuilt (restore it or format again)",
                    RecordKind::Sdt.at(index),
                    if backups.is_some() {
                        " in both copies"
                    } else {
                        " and there is no backup (format v1.0)"
                    }
                ));
            }
        }
    }
    if sdt_whole && !consistent {
        plan.left.push(format!(
            "{mcb_name}: fields disagree with the geometry (see `fts check`); not rewritten (format again)"
        ));
    }
    let trusted = consistent && sdt_whole;
    if trusted {
        if let Some(b) = backups {
            if b.sdt_lb() != sdt_lb.as_slice() {
                plan.repairs.push(Repair {
                    lb: b.lb,
                    data: sdt_lb.clone(),
                    what: format!(
                        "backup Secondary Device Table (LB {}): rewritten from the Secondary Device Table",
                        b.lb
                    ),
                    slot: None,
                });
            }
            if b.mcb_lb() != good_mcb.as_slice() {
                plan.repairs.push(Repair {
                    lb: b.lb + 1,
                    data: good_mcb.clone(),
                    what: format!(
                        "backup Master Control Block (LB {}): rewritten from the Master Control Block",
                        b.lb + 1
                    ),
                    slot: None,
                });
            }
        }
        if lb7 != sdt_lb.as_slice() {
            plan.repairs.push(Repair {
                lb: SDT_LB,
                data: sdt_lb,
                what: format!(
                    "Secondary Device Table (LB 7): rewritten{}",
                    if backups.is_some() {
                        " from its backup"
                    } else {
                        ""
                    }
                ),
                slot: None,
            });
        }
        if lb_bytes(control, MCB_LB) != good_mcb.as_slice() {
            plan.repairs.push(Repair {
                lb: MCB_LB,
                data: good_mcb,
                what: if mcb_damaged {
                    format!(
                        "{mcb_name} (LB 5): rewritten from its backup (LB {})",
                        mcb.mcb_backup_ptr
                    )
                } else {
                    format!("{mcb_name} (LB 5): bytes after the record zeroed")
                },
                slot: None,
            });
        }
    }

    // The rest needs the geometry.
    let geometry = match Geometry::from_mcb(mcb, &checked.sdt) {
        Ok(g) => g,
        Err(e) => {
            plan.left.push(if sdt_whole {
                format!(
                    "Process Id Table and pointer tables: not repaired: the layout's geometry is unusable ({e})"
                )
            } else {
                "Process Id Table and pointer tables: not repaired: without the Secondary Device Table the geometry is unknown".to_string()
            });
            return Ok(plan);
        }
    };
    let id = mcb.layout_id();
    let formatted = |lb: u64| {
        let mut out = vec![0u8; LB];
        formatted_lb(&geometry, id, lb, &mut out);
        out
    };

    // The lock record.
    if has_problem(LOCK_LB) {
        plan.repairs.push(Repair {
            lb: LOCK_LB,
            data: formatted(LOCK_LB),
            what: "lock record (LB 6): rewritten as formatted (free)".into(),
            slot: Some(0),
        });
    }

    // The Process Id Table and the pointer tables, entry by entry.
    for slot in 1..=geometry.max_connections {
        let entry_lb = geometry.pid_entry_lb(slot);
        let name = RecordKind::Pid.at(slot);
        let raw = lb_bytes(control, entry_lb);
        let decoded = match PidEntry::decode(raw, mcb.expect_record(slot)) {
            Ok(e) => Ok(e),
            Err(Error::Empty { .. }) => Ok(PidEntry::free(slot)),
            Err(e) => Err(e),
        };
        let mut gens: Vec<u64> = Vec::new();
        let reason: Option<String> = match &decoded {
            Err(e) => {
                let g = raw
                    .get(48..56)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or(0);
                if g < PLAUSIBLE_GENERATION {
                    gens.push(g);
                }
                Some(format!("the record was damaged ({})", e.detail()))
            }
            Ok(e) => {
                gens.push(e.pro_generation);
                let entry_problems: Vec<&Problem> = checked
                    .problems
                    .iter()
                    .filter(|p| {
                        p.device == 0
                            && p.lb == entry_lb
                            && p.record == name
                            && p.offset_in_lb < RECORD_SIZE as u32
                    })
                    .collect();
                if free_dead.contains(&slot) && e.is_server() {
                    Some(format!(
                        "dead server's registration of {:?} (generation {}): its lease showed no life",
                        e.pro_requestee, e.pro_generation
                    ))
                } else if free_dead.contains(&slot) && e.is_allocated() {
                    Some(format!(
                        "dead connection {} -> {} (generation {}): no lease showed life",
                        e.pro_requestor, e.pro_requestee, e.pro_generation
                    ))
                } else {
                    entry_problems
                        .first()
                        .map(|p| format!("the record was inconsistent ({})", p.what))
                }
            }
        };
        let in_use = matches!(&decoded, Ok(e) if !e.is_free()) && reason.is_none();
        // Generations the slot's records carry.
        for role in Role::BOTH {
            let lb = geometry.lease_lb(slot, role);
            let b = lb_bytes(control, lb);
            if let Ok(l) = Lease::decode(b, mcb.expect_record(slot)) {
                gens.push(l.generation);
            }
            if let Ok(c) =
                CmdArea::decode(b.get(RECORD_SIZE..).unwrap_or(&[]), mcb.expect_record(slot))
            {
                gens.push(c.generation);
            }
            let table = geometry.table_lb(slot, role);
            for chunk in 0..geometry.chunks_per_table {
                let lb = table + u64::from(chunk) / (LB / RECORD_SIZE) as u64;
                let off = (chunk as usize % (LB / RECORD_SIZE)) * RECORD_SIZE;
                let b = lb_bytes(control, lb).get(off..).unwrap_or(&[]);
                if let Ok(ch) = PtrChunk::decode(b, mcb.expect_record(chunk)) {
                    gens.push(ch.generation);
                }
            }
        }
        let max_gen = gens.iter().copied().max().unwrap_or(0);
        // Every LB of the slot but the entry's, with its name.
        let mut lbs: Vec<(u64, String)> = Vec::new();
        for role in Role::BOTH {
            lbs.push((
                geometry.lease_lb(slot, role),
                format!("{} and {}", lease_name(slot, role), cmd_name(slot, role)),
            ));
        }
        for role in Role::BOTH {
            let table = geometry.table_lb(slot, role);
            for k in 0..u64::from(geometry.ptr_table_lbs) {
                lbs.push((table + k, format!("pointer table {slot} ({role})")));
            }
        }
        let bad: Vec<&(u64, String)> = lbs.iter().filter(|(lb, _)| has_problem(*lb)).collect();
        if in_use {
            for (lb, what) in bad {
                plan.left.push(format!(
                    "{what} (LB {lb}): not rewritten: entry {slot} is in use by a live connection, whose sides rewrite their own records"
                ));
            }
            if has_problem(entry_lb) {
                plan.left.push(format!(
                    "{name} (LB {entry_lb}): in use by a live connection; not changed"
                ));
            }
            continue;
        }
        for (lb, what) in bad {
            plan.repairs.push(Repair {
                lb: *lb,
                data: formatted(*lb),
                what: format!("{what} (LB {lb}): rewritten as formatted"),
                slot: Some(slot),
            });
        }
        let entry_gen = decoded.as_ref().map(|e| e.pro_generation).ok();
        let newer_records = entry_gen.is_some_and(|g| max_gen > g);
        if reason.is_some() || newer_records || has_problem(entry_lb) {
            let generation = max_gen.saturating_add(1);
            let free = PidEntry {
                pro_generation: generation,
                ..PidEntry::free(slot)
            };
            let mut data = vec![0u8; LB];
            if let Some(dst) = data.get_mut(..RECORD_SIZE) {
                dst.copy_from_slice(&free.encode(mcb.stamp_record(slot)));
            }
            let why = reason.unwrap_or_else(|| {
                if newer_records {
                    format!("its records carry generation {max_gen}, newer than the entry's")
                } else {
                    "bytes after the record were not zero".to_string()
                }
            });
            plan.repairs.push(Repair {
                lb: entry_lb,
                data,
                what: format!("{name} (LB {entry_lb}): freed (generation {generation}): {why}"),
                slot: Some(slot),
            });
        }
    }
    Ok(plan)
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
    // A server's registration is written with ALLOCATED | PROCESSING, so
    // that no connector takes it for a request; it is otherwise an entry
    // in use like a connection's.
    if e.is_server() && !(e.is_allocated() && e.is_processing()) {
        r.add(
            lb,
            28,
            name,
            format!(
                "pro_flag_process {:#x}: SERVER (a registration) without ALLOCATED and PROCESSING",
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
        blk5_minor_version @ 432, sdt_backup_ptr @ 440, mcb_backup_ptr @ 448,
    );
    r.problems
}
