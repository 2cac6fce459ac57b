//! The format plan: every write `format` does, in a crash-safe order.

use uuid::Uuid;

use crate::codec::{layout_id_of, validate_field, Stamp};
use crate::error::Error;
use crate::geometry::Geometry;
use crate::records::{
    CmdArea, DeviceRole, Lease, LockRecord, Mcb, PidEntry, PtrChunk, PtrEntry, RecordKind, Role,
    SdtEntry, Timeouts, SEC_FLAG_MASTER,
};
use crate::{
    BACKUP_LBS, ENTRIES_PER_CHUNK, HW_ID_MAX, LB, LOCK_LB, MAX_DEVICES, MCB_LB, PATH_MAX,
    PID_ENTRY_LBS, RECORD_SIZE, SDT_LB, ZERO_LB,
};

/// Largest write [`format_plan`] emits, in LBs (1 MiB).
pub const MAX_WRITE_LBS: u64 = 256;

/// Everything `format` needs besides the devices themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatSpec {
    /// The layout (from [`Geometry::compute`]).
    pub geometry: Geometry,
    /// `blk5_layout_uuid`: new for every format run.
    pub layout_uuid: Uuid,
    /// `blk5_device_uuid` of each device, master first (one per geometry device).
    pub device_uuids: Vec<Uuid>,
    /// `blk5_time_id`: creation time, ns since the Unix epoch.
    pub time_ns: u64,
    /// Path of each device at format (`blk5_unix_filename` = the master's, `sec_path`).
    pub paths: Vec<String>,
    /// Hardware identity of each device (`sec_hw_id`), informational.
    pub hw_ids: Vec<String>,
    /// `lease_timeout_ms`.
    pub lease_timeout_ms: u32,
    /// `lock_timeout_ms`.
    pub lock_timeout_ms: u32,
    /// `io_timeout_ms`.
    pub io_timeout_ms: u32,
    /// `heartbeat_ms`.
    pub heartbeat_ms: u32,
}

impl FormatSpec {
    /// The timeouts this spec records.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            lease_ms: self.lease_timeout_ms,
            lock_ms: self.lock_timeout_ms,
            io_ms: self.io_timeout_ms,
            heartbeat_ms: self.heartbeat_ms,
        }
    }

    /// Checks what [`format_plan`] cannot: one distinct non-nil uuid per
    /// device, a non-nil layout uuid, paths and hardware ids that fit their
    /// fields, non-zero timeouts with the heartbeat shorter than the lease
    /// timeout.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field, reason: String| Error::BadField {
            kind: RecordKind::Mcb,
            field,
            reason,
        };
        let n = self.geometry.devices.len();
        if n == 0 || n > MAX_DEVICES {
            return Err(bad(
                "blk5_secondary_device_entrynum",
                format!("{n} devices, need 1..=8"),
            ));
        }
        if self.layout_uuid.is_nil() {
            return Err(bad("blk5_layout_uuid", "nil".into()));
        }
        if self.device_uuids.len() != n {
            return Err(bad(
                "device_uuids",
                format!("{} device uuids for {n} devices", self.device_uuids.len()),
            ));
        }
        for (i, u) in self.device_uuids.iter().enumerate() {
            if u.is_nil() || self.device_uuids[..i].contains(u) {
                return Err(bad(
                    "device_uuids",
                    format!("device {i}: {u} is nil or repeated"),
                ));
            }
        }
        if self.paths.len() > n || self.hw_ids.len() > n {
            return Err(bad(
                "sec_path",
                format!("more paths or hardware ids than the {n} devices"),
            ));
        }
        for p in &self.paths {
            validate_field(p, PATH_MAX)?;
        }
        for h in &self.hw_ids {
            validate_field(h, HW_ID_MAX)?;
        }
        let t = self.timeouts();
        if t.lease_ms == 0 || t.lock_ms == 0 || t.io_ms == 0 || t.heartbeat_ms == 0 {
            return Err(bad(
                "lease_timeout_ms",
                format!("timeouts must be non-zero: {t:?}"),
            ));
        }
        if t.heartbeat_ms >= t.lease_ms {
            return Err(bad(
                "heartbeat_ms",
                format!(
                    "heartbeat {} ms is not shorter than the lease timeout {} ms",
                    t.heartbeat_ms, t.lease_ms
                ),
            ));
        }
        Ok(())
    }

    fn layout_id(&self) -> u64 {
        layout_id_of(&self.layout_uuid)
    }

    fn sdt_entry(&self, i: usize) -> SdtEntry {
        let d = self.geometry.devices.get(i);
        SdtEntry {
            sec_dev_id: self.device_uuids.get(i).copied().unwrap_or_default(),
            sec_str_seg_ptr: d.map_or(0, |d| d.seg_start_lb),
            sec_seg_number_for_device: d.map_or(0, |d| d.seg_count),
            sec_start_segment_number: d.map_or(0, |d| d.first_segment),
            device_bytes: d.map_or(0, |d| d.device_bytes),
            sec_flags: if i == 0 { SEC_FLAG_MASTER } else { 0 },
            sec_hw_id: self.hw_ids.get(i).cloned().unwrap_or_default(),
            sec_path: self.paths.get(i).cloned().unwrap_or_default(),
        }
    }

    /// Contents of master LB `lb`, for `lb` from [`LOCK_LB`] to the end of
    /// the pointer tables.
    fn master_lb(&self, lb: u64, out: &mut [u8]) {
        if lb == SDT_LB {
            out.copy_from_slice(&self.sdt_lb());
        } else {
            formatted_lb(&self.geometry, self.layout_id(), lb, out);
        }
    }

    /// The Secondary Device Table LB (LB 7, and its backup).
    fn sdt_lb(&self) -> Vec<u8> {
        let id = self.layout_id();
        let mut out = vec![0u8; LB];
        for i in 0..self.geometry.devices.len().min(MAX_DEVICES) {
            out[i * RECORD_SIZE..(i + 1) * RECORD_SIZE]
                .copy_from_slice(&self.sdt_entry(i).encode(Stamp::new(id, i as u32 + 1)));
        }
        out
    }
}

/// Contents `format` gives master LB `lb` that depend only on the geometry
/// and the layout id: the lock record (LB 6), the Process Id Table (free
/// entries; leases with state 0 and empty command areas) and the pointer
/// tables (generation 0, every entry's segment and size set, flags 0).
/// Other LBs are left as they are in `out` (one LB).
pub(crate) fn formatted_lb(g: &Geometry, layout_id: u64, lb: u64, out: &mut [u8]) {
    let id = layout_id;
    let mut put = |offset: usize, rec: &[u8; RECORD_SIZE]| {
        if let Some(dst) = out.get_mut(offset..offset + RECORD_SIZE) {
            dst.copy_from_slice(rec);
        }
    };
    if lb == LOCK_LB {
        put(0, &LockRecord::default().encode(Stamp::new(id, 0)));
    } else if lb >= g.pit_ptr && lb < g.ptr_start {
        let rel = lb - g.pit_ptr;
        let slot = (rel / u64::from(PID_ENTRY_LBS)) as u32 + 1;
        let stamp = Stamp::new(id, slot);
        let role = match rel % u64::from(PID_ENTRY_LBS) {
            0 => {
                put(0, &PidEntry::free(slot).encode(stamp));
                return;
            }
            1 => Role::Initiator,
            _ => Role::Connector,
        };
        put(0, &Lease::formatted(role).encode(stamp));
        put(RECORD_SIZE, &CmdArea::default().encode(stamp));
    } else if lb >= g.ptr_start && lb < g.control_end_lb() && g.ptr_table_lbs > 0 {
        let rel = lb - g.ptr_start;
        let t = rel / u64::from(g.ptr_table_lbs);
        let slot = (t / 2) as u32 + 1;
        let role = if t % 2 == 0 {
            Role::Initiator
        } else {
            Role::Connector
        };
        let chunks_per_lb = (LB / RECORD_SIZE) as u64;
        let first_chunk = (rel % u64::from(g.ptr_table_lbs)) * chunks_per_lb;
        for (j, c) in (first_chunk..first_chunk + chunks_per_lb).enumerate() {
            if c >= u64::from(g.chunks_per_table) {
                break;
            }
            let mut chunk = PtrChunk::default();
            for (k, e) in chunk.entries.iter_mut().enumerate() {
                let entry = c * ENTRIES_PER_CHUNK as u64 + k as u64;
                if entry >= u64::from(g.ring_entries) {
                    break;
                }
                *e = PtrEntry {
                    ptr_process_segment_ptr: g.ring_segment(slot, role, entry as u32),
                    ptr_process_blk_read: g.seg_lbs as u16,
                    ..PtrEntry::default()
                };
            }
            put(j * RECORD_SIZE, &chunk.encode(Stamp::new(id, c as u32)));
        }
    }
}

/// One write of the format plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Device index (0 = master, then Secondary Device Table order).
    pub device: usize,
    /// First LB.
    pub lb: u64,
    /// The bytes, a multiple of [`LB`].
    pub data: Vec<u8>,
    /// A commit point: every write before this one must be durable before
    /// it is issued (flush every device), and it must be durable before the
    /// next one (FUA). The backups and the master MCB are commit points.
    pub barrier: bool,
}

/// The MCB `format` writes to LB 5 of `device` (0 = master).
pub fn mcb_for_device(spec: &FormatSpec, device: usize) -> Mcb {
    let g = &spec.geometry;
    let n = g.devices.len().min(MAX_DEVICES);
    let mut device_uuids: Vec<Uuid> = spec.device_uuids.iter().copied().take(n).collect();
    device_uuids.resize(n, Uuid::nil());
    Mcb {
        blk5_id: if device == 0 {
            DeviceRole::Master
        } else {
            DeviceRole::Secondary
        },
        blk5_layout_uuid: spec.layout_uuid,
        blk5_device_uuid: spec.device_uuids.get(device).copied().unwrap_or_default(),
        blk5_dev_id: device as u32 + 1,
        blk5_seg_size: g.seg_lbs,
        blk5_time_id: spec.time_ns,
        blk5_tot_seg_num: g.tot_seg_num,
        blk5_max_connections: g.max_connections,
        blk5_process_id_table_ptr: g.pit_ptr,
        blk5_secondary_device_table_ptr: g.sdt_ptr,
        blk5_secondary_device_entrynum: n as u32,
        blk5_ptr_seg_per_process: g.batch,
        blk5_start_process_segment_ptr: g.ptr_start,
        blk5_mast_sec_start_segment_ptr: g.devices.first().map_or(0, |d| d.seg_start_lb),
        blk5_maxptr: g.ring_entries,
        lock_timeout_ms: spec.lock_timeout_ms,
        lock_record_ptr: g.lock_ptr,
        lease_timeout_ms: spec.lease_timeout_ms,
        io_timeout_ms: spec.io_timeout_ms,
        heartbeat_ms: spec.heartbeat_ms,
        format_block_size: g.block_size,
        device_bytes: g.devices.get(device).map_or(0, |d| d.device_bytes),
        pid_entry_lbs: PID_ENTRY_LBS,
        ptr_table_lbs: g.ptr_table_lbs,
        blk5_unix_filename: spec.paths.first().cloned().unwrap_or_default(),
        device_uuids,
        blk5_minor_version: g.minor_version,
        sdt_backup_ptr: g.sdt_backup_ptr,
        mcb_backup_ptr: g.mcb_backup_ptr,
    }
}

/// Every write `format` must do, in order (see [`format_writes`]).
pub fn format_plan(spec: &FormatSpec) -> Vec<Write> {
    format_writes(spec).collect()
}

/// The writes of [`format_plan`], generated lazily (the pointer tables of a
/// large layout are big). In order:
///
/// 1. master LB 4-5 zeroed (LB 4 "as a precaution"; LB 5 so that an older
///    MCB is invalid while the new layout is half written), and, in v1.1,
///    the two backup LBs at the end of the master zeroed (so that the
///    backups of an older layout are invalid too);
/// 2. master LB 6 up to the end of the pointer tables: lock record, Secondary
///    Device Table, Process Id Table (free entries, leases with state 0,
///    empty command areas), every pointer table (generation 0, each entry
///    with `ptr_process_segment_ptr` and `ptr_process_blk_read` set, flags
///    0), in writes of at most [`MAX_WRITE_LBS`];
/// 3. each secondary's LB 4-7: zero, its MCB copy, zero, zero;
/// 4. in v1.1, the backups (one write of the last two LBs: the Secondary
///    Device Table as in LB 7, then the MCB as in LB 5), a commit point;
/// 5. last, the master MCB (LB 5), a commit point.
///
/// No valid MCB, primary or backup, exists until everything it describes
/// is durable: a crash before step 4 leaves no valid layout; a crash
/// between steps 4 and 5 leaves a complete layout whose primary MCB is
/// missing, which readers open through the backup (and `fts check
/// --repair` completes). Writes marked [`Write::barrier`] need a flush of
/// every device before them and FUA.
pub fn format_writes(spec: &FormatSpec) -> impl Iterator<Item = Write> + '_ {
    let g = &spec.geometry;
    let control_end = g.control_end_lb();
    let backups = g.has_backups().then_some(g.sdt_backup_ptr);
    let zero = core::iter::once(Write {
        device: 0,
        lb: ZERO_LB,
        data: vec![0; 2 * LB],
        barrier: false,
    })
    .chain(backups.map(|lb| Write {
        device: 0,
        lb,
        data: vec![0; BACKUP_LBS as usize * LB],
        barrier: false,
    }));
    let control = (LOCK_LB..control_end)
        .step_by(MAX_WRITE_LBS as usize)
        .map(move |start| {
            let end = (start + MAX_WRITE_LBS).min(control_end);
            let mut data = vec![0u8; (end - start) as usize * LB];
            for (lb, out) in (start..end).zip(data.chunks_exact_mut(LB)) {
                spec.master_lb(lb, out);
            }
            Write {
                device: 0,
                lb: start,
                data,
                barrier: false,
            }
        });
    let secondaries = (1..spec.geometry.devices.len().min(MAX_DEVICES)).map(move |d| {
        let mut data = vec![0u8; 4 * LB];
        data[LB..LB + RECORD_SIZE].copy_from_slice(&mcb_for_device(spec, d).encode());
        Write {
            device: d,
            lb: ZERO_LB,
            data,
            barrier: false,
        }
    });
    let backup = backups.into_iter().map(move |lb| {
        let mut data = spec.sdt_lb();
        data.resize(BACKUP_LBS as usize * LB, 0);
        data[LB..LB + RECORD_SIZE].copy_from_slice(&mcb_for_device(spec, 0).encode());
        Write {
            device: 0,
            lb,
            data,
            barrier: true,
        }
    });
    let master = core::iter::once_with(move || {
        let mut data = vec![0u8; LB];
        data[..RECORD_SIZE].copy_from_slice(&mcb_for_device(spec, 0).encode());
        Write {
            device: 0,
            lb: MCB_LB,
            data,
            barrier: true,
        }
    });
    zero.chain(control)
        .chain(secondaries)
        .chain(backup)
        .chain(master)
}
