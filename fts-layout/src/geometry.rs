//! Where everything lives: FORMAT.md "Geometry rules".

use crate::error::{Error, GeometryError};
use crate::records::{DeviceRole, Mcb, RecordKind, Role, SdtEntry, SEC_FLAG_MASTER};
use crate::{
    BACKUP_LBS, DEFAULT_BATCH, DEFAULT_MAX_CONNECTIONS, DEFAULT_RING_ENTRIES,
    DEFAULT_SEGMENT_BYTES, ENTRIES_PER_CHUNK, FORMAT_MINOR, LB, LOCK_LB, MAX_DEVICES, MCB_LB,
    PID_ENTRY_LBS, PIT_LB, RECORD_SIZE, SDT_LB, SEG_HDR_SIZE, ZERO_LB,
};

/// Most LBs in a data segment (`ptr_process_blk_read` is a u16).
pub const MAX_SEG_LBS: u32 = 65_535;
/// Most connections (`blk5_max_connections`).
pub const MAX_CONNECTIONS: u32 = 4096;
/// Fewest ring entries (`blk5_maxptr`).
pub const MIN_RING_ENTRIES: u32 = 2;
/// Most ring entries (`blk5_maxptr`).
pub const MAX_RING_ENTRIES: u32 = 65_535;
/// Data segments are aligned to at most this many LBs (1 MiB).
const MAX_ALIGN_LBS: u64 = 256;
const LB64: u64 = LB as u64;

/// The chunk holding ring entry `entry` (0-based) of a pointer table, and the
/// entry's slot in that chunk.
pub fn chunk_of_entry(entry: u32) -> (u32, usize) {
    let per = ENTRIES_PER_CHUNK as u32;
    (entry / per, (entry % per) as usize)
}

/// Inputs of [`Geometry::compute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeometryParams {
    /// Size of the master device in bytes.
    pub master_bytes: u64,
    /// Sizes of the secondary devices in bytes, in Secondary Device Table order.
    pub secondary_bytes: Vec<u64>,
    /// Logical block size of the master (`format_block_size`).
    pub block_size: u32,
    /// Data-segment size in bytes (a multiple of 4096).
    pub segment_bytes: u64,
    /// `blk5_max_connections` (`C`).
    pub max_connections: u32,
    /// Ring entries per pointer table, `blk5_maxptr` (`N`).
    pub ring_entries: u32,
    /// Batch, `blk5_ptr_seg_per_process` (`B`).
    pub batch: u32,
}

impl GeometryParams {
    /// A single master device of `master_bytes` with 512-byte logical
    /// blocks and the default tunables.
    pub fn new(master_bytes: u64) -> GeometryParams {
        GeometryParams {
            master_bytes,
            secondary_bytes: Vec::new(),
            block_size: 512,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            ring_entries: DEFAULT_RING_ENTRIES,
            batch: DEFAULT_BATCH,
        }
    }
}

/// The data-segment area of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceExtent {
    /// Size of the device in whole LBs.
    pub device_lbs: u64,
    /// LB of its first data segment (`sec_str_seg_ptr`).
    pub seg_start_lb: u64,
    /// Data segments on it (`sec_seg_number_for_device`).
    pub seg_count: u32,
    /// Global number of its first segment (`sec_start_segment_number`).
    pub first_segment: u32,
    /// Size of the device in bytes at format (`device_bytes`).
    pub device_bytes: u64,
}

/// A named region of a device, for overlap checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Device index (0 = master).
    pub device: usize,
    /// What the region holds.
    pub name: String,
    /// First LB.
    pub start_lb: u64,
    /// Length in LBs.
    pub lbs: u64,
}

impl Extent {
    /// First LB after the region.
    pub fn end_lb(&self) -> u64 {
        self.start_lb.saturating_add(self.lbs)
    }

    /// Whether the two regions share an LB on the same device.
    pub fn overlaps(&self, other: &Extent) -> bool {
        self.device == other.device
            && self.lbs > 0
            && other.lbs > 0
            && self.start_lb < other.end_lb()
            && other.start_lb < self.end_lb()
    }
}

/// Where every structure and data segment of a layout lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// Logical block size of the master at format (`format_block_size`).
    pub block_size: u32,
    /// Segment size in LBs (`blk5_seg_size`).
    pub seg_lbs: u32,
    /// `blk5_max_connections`.
    pub max_connections: u32,
    /// Entries per pointer table (`blk5_maxptr`).
    pub ring_entries: u32,
    /// Batch (`blk5_ptr_seg_per_process`).
    pub batch: u32,
    /// 512-byte chunks per pointer table: `ceil(N / 15)`.
    pub chunks_per_table: u32,
    /// LBs per pointer table (`ptr_table_lbs`).
    pub ptr_table_lbs: u32,
    /// LB of the Process Id Table (`blk5_process_id_table_ptr`, 8).
    pub pit_ptr: u64,
    /// LB of the Secondary Device Table (`blk5_secondary_device_table_ptr`, 7).
    pub sdt_ptr: u64,
    /// LB of the lock record (`lock_record_ptr`, 6).
    pub lock_ptr: u64,
    /// LB of the first pointer table (`blk5_start_process_segment_ptr`).
    pub ptr_start: u64,
    /// Data-segment areas, master first, in Secondary Device Table order.
    pub devices: Vec<DeviceExtent>,
    /// Total data segments (`blk5_tot_seg_num`).
    pub tot_seg_num: u32,
    /// Minor format version (`blk5_minor_version`): 0 for v1.0 (no
    /// backups), [`FORMAT_MINOR`] for what `format` writes now.
    pub minor_version: u32,
    /// LB of the backup Secondary Device Table on the master
    /// (`sdt_backup_ptr`); 0 in v1.0.
    pub sdt_backup_ptr: u64,
    /// LB of the backup Master Control Block on the master
    /// (`mcb_backup_ptr`); 0 in v1.0.
    pub mcb_backup_ptr: u64,
}

/// Where the backups of a v1.1 master of `device_bytes` bytes are: the LB
/// of the backup Secondary Device Table (the last LB but one); the backup
/// Master Control Block is the LB after it (the last). `None` if the device
/// is too small to hold any layout. A reader whose primary MCB is damaged
/// finds the backups here, from the device's current size.
pub fn backups_at_end(device_bytes: u64) -> Option<u64> {
    let lbs = device_bytes / LB64;
    lbs.checked_sub(BACKUP_LBS).filter(|&lb| lb > SDT_LB)
}

/// Pointer tables whose rings are on device `d` of `n_dev` (tables `t` with
/// `t mod n_dev == d`, out of `tables`): the whole-ring rule of v1.0-v1.2.
fn tables_on_device(d: u64, n_dev: u64, tables: u64) -> u64 {
    if d >= tables || n_dev == 0 {
        0
    } else {
        (tables - d).div_ceil(n_dev)
    }
}

/// Segments each table owns on every device under the striped rule (v1.3):
/// `S = ceil(ceil(N / B) / D) × B`, or `N` on a single device.
fn stripe_segments(n: u64, b: u64, n_dev: u64) -> u64 {
    if n_dev <= 1 {
        return n;
    }
    n.div_ceil(b.max(1))
        .div_ceil(n_dev)
        .saturating_mul(b.max(1))
}

/// Segments device `d` must hold for the rings: how many tables have
/// segments there and how many each (the refusal message names both).
fn ring_need(minor: u32, d: u64, n_dev: u64, tables: u64, n: u64, b: u64) -> (u64, u64) {
    if minor >= STRIPED_MINOR {
        (tables, stripe_segments(n, b, n_dev))
    } else {
        (tables_on_device(d, n_dev, tables), n)
    }
}

/// The first minor version whose rings are striped across the devices by
/// batch groups (v1.3); before it each ring lies whole on one device.
pub const STRIPED_MINOR: u32 = 3;

/// Exclusive end of the batch group holding ring entry `index` in a ring
/// of `ring_entries` entries with batch `batch`: the next multiple of
/// `batch`, or the end of the ring. Each group `[g × B, (g+1) × B)` is one
/// contiguous run of segments on one device (FORMAT.md "Geometry rules"),
/// so no batch crosses a group's end and every batch is one I/O on one
/// device.
pub fn group_end(index: u32, ring_entries: u32, batch: u32) -> u32 {
    let b = u64::from(batch.max(1));
    let end = (u64::from(index) / b + 1) * b;
    u32::try_from(end.min(u64::from(ring_entries))).unwrap_or(ring_entries)
}

fn round_up(x: u64, align: u64) -> u64 {
    x.div_ceil(align.max(1)).saturating_mul(align.max(1))
}

/// The part of the layout that depends only on `C` and `N`.
pub(crate) struct ControlLayout {
    pub chunks_per_table: u32,
    pub ptr_table_lbs: u32,
    pub ptr_start: u64,
    pub control_end: u64,
}

impl ControlLayout {
    pub(crate) fn new(
        max_connections: u32,
        ring_entries: u32,
    ) -> Result<ControlLayout, GeometryError> {
        if !(1..=MAX_CONNECTIONS).contains(&max_connections) {
            return Err(GeometryError::Connections { max_connections });
        }
        if !(MIN_RING_ENTRIES..=MAX_RING_ENTRIES).contains(&ring_entries) {
            return Err(GeometryError::RingEntries { ring_entries });
        }
        let chunks_per_table = ring_entries.div_ceil(ENTRIES_PER_CHUNK as u32);
        let ptr_table_lbs = (chunks_per_table * RECORD_SIZE as u32).div_ceil(LB as u32);
        let c = u64::from(max_connections);
        let ptr_start = PIT_LB + u64::from(PID_ENTRY_LBS) * c;
        let control_end = ptr_start + 2 * c * u64::from(ptr_table_lbs);
        Ok(ControlLayout {
            chunks_per_table,
            ptr_table_lbs,
            ptr_start,
            control_end,
        })
    }
}

impl Geometry {
    /// Computes the layout for `p` (FORMAT.md "Geometry rules") in the
    /// current minor version ([`FORMAT_MINOR`]), or says why it is refused,
    /// with the numbers and what to change.
    pub fn compute(p: &GeometryParams) -> Result<Geometry, GeometryError> {
        Self::compute_minor(p, FORMAT_MINOR)
    }

    /// [`Geometry::compute`] for minor version `minor`: 0 lays out v1.0
    /// (data segments up to the end of the master, no backups), anything
    /// else v1.1 (the last [`BACKUP_LBS`] LBs of the master hold the
    /// backups, and data segments end before them).
    pub fn compute_minor(p: &GeometryParams, minor: u32) -> Result<Geometry, GeometryError> {
        let minor = minor.min(FORMAT_MINOR);
        let backup_lbs = if minor >= 1 { BACKUP_LBS } else { 0 };
        if !(p.block_size.is_power_of_two() && (512..=4096).contains(&p.block_size)) {
            return Err(GeometryError::BlockSize {
                block_size: p.block_size,
            });
        }
        let seg_lbs = p.segment_bytes / LB64;
        if p.segment_bytes % LB64 != 0 || seg_lbs == 0 || seg_lbs > u64::from(MAX_SEG_LBS) {
            return Err(GeometryError::SegmentSize {
                segment_bytes: p.segment_bytes,
            });
        }
        let ctl = ControlLayout::new(p.max_connections, p.ring_entries)?;
        if !(1..=p.ring_entries).contains(&p.batch) {
            return Err(GeometryError::Batch {
                batch: p.batch,
                ring_entries: p.ring_entries,
            });
        }
        let n_dev = 1 + p.secondary_bytes.len();
        if n_dev > MAX_DEVICES {
            return Err(GeometryError::TooManyDevices { devices: n_dev });
        }
        let align = seg_lbs.min(MAX_ALIGN_LBS);
        let tables = 2 * u64::from(p.max_connections);
        let n = u64::from(p.ring_entries);
        let mut devices = Vec::with_capacity(n_dev);
        let mut total: u64 = 0;
        let sizes = core::iter::once(p.master_bytes).chain(p.secondary_bytes.iter().copied());
        for (i, device_bytes) in sizes.enumerate() {
            let device_lbs = device_bytes / LB64;
            let (seg_start_lb, tail) = if i == 0 {
                (round_up(ctl.control_end, align), backup_lbs)
            } else {
                (round_up(8, align), 0)
            };
            if device_lbs < seg_start_lb + tail {
                return Err(GeometryError::DeviceTooSmall {
                    device: i,
                    device_bytes,
                    need_bytes: (seg_start_lb + tail).saturating_mul(LB64),
                });
            }
            let fit = (device_lbs - tail - seg_start_lb) / seg_lbs;
            let (t, per) = ring_need(minor, i as u64, n_dev as u64, tables, n, p.batch.into());
            let need = t * per;
            if fit < need {
                return Err(GeometryError::NotEnoughSegments {
                    device: i,
                    device_bytes,
                    segment_bytes: p.segment_bytes,
                    tables: t as u32,
                    per_table: per,
                    need,
                    fit,
                    need_bytes: seg_start_lb
                        .saturating_add(need.saturating_mul(seg_lbs))
                        .saturating_add(tail)
                        .saturating_mul(LB64),
                });
            }
            let first = total + 1;
            total = total.saturating_add(fit);
            let (Ok(seg_count), Ok(first_segment)) = (u32::try_from(fit), u32::try_from(first))
            else {
                return Err(GeometryError::TooManySegments { total });
            };
            devices.push(DeviceExtent {
                device_lbs,
                seg_start_lb,
                seg_count,
                first_segment,
                device_bytes,
            });
        }
        let tot_seg_num =
            u32::try_from(total).map_err(|_| GeometryError::TooManySegments { total })?;
        let sdt_backup_ptr = match devices.first() {
            Some(m) if backup_lbs > 0 => m.device_lbs - BACKUP_LBS,
            _ => 0,
        };
        Ok(Geometry {
            block_size: p.block_size,
            seg_lbs: seg_lbs as u32,
            max_connections: p.max_connections,
            ring_entries: p.ring_entries,
            batch: p.batch,
            chunks_per_table: ctl.chunks_per_table,
            ptr_table_lbs: ctl.ptr_table_lbs,
            pit_ptr: PIT_LB,
            sdt_ptr: SDT_LB,
            lock_ptr: LOCK_LB,
            ptr_start: ctl.ptr_start,
            devices,
            tot_seg_num,
            minor_version: minor,
            sdt_backup_ptr,
            mcb_backup_ptr: if sdt_backup_ptr > 0 {
                sdt_backup_ptr + 1
            } else {
                0
            },
        })
    }

    /// Whether this layout has backups of the MCB and the Secondary Device
    /// Table (v1.1 and later).
    pub fn has_backups(&self) -> bool {
        self.minor_version >= 1 && self.sdt_backup_ptr > 0
    }

    /// Rebuilds the geometry from an MCB (master or a secondary copy) and the
    /// Secondary Device Table, recomputing it from the sizes and tunables
    /// recorded at format and cross-checking every derived field. The first
    /// disagreement is returned as [`Error::BadField`].
    pub fn from_mcb(mcb: &Mcb, sdt: &[SdtEntry]) -> Result<Geometry, Error> {
        let (g, mismatches) = reconcile(mcb, sdt)?;
        match mismatches.into_iter().next() {
            Some(m) => Err(Error::BadField {
                kind: m.kind,
                field: m.field,
                reason: match m.kind {
                    RecordKind::Sdt => format!("entry {}: {}", m.index, m.reason),
                    _ => m.reason,
                },
            }),
            None => Ok(g),
        }
    }

    /// The parameters this geometry was computed from.
    pub fn params(&self) -> GeometryParams {
        GeometryParams {
            master_bytes: self.devices.first().map_or(0, |d| d.device_bytes),
            secondary_bytes: self
                .devices
                .iter()
                .skip(1)
                .map(|d| d.device_bytes)
                .collect(),
            block_size: self.block_size,
            segment_bytes: u64::from(self.seg_lbs) * LB64,
            max_connections: self.max_connections,
            ring_entries: self.ring_entries,
            batch: self.batch,
        }
    }

    /// LB of the `FPID` record of Process Id Table entry `slot` (1-based).
    pub fn pid_entry_lb(&self, slot: u32) -> u64 {
        self.pit_ptr
            .saturating_add(u64::from(slot.saturating_sub(1)) * u64::from(PID_ENTRY_LBS))
    }

    /// LB holding `role`'s lease (byte 0) and command area (byte 512) of
    /// entry `slot`: +1 for the initiator, +2 for the connector.
    pub fn lease_lb(&self, slot: u32, role: Role) -> u64 {
        self.pid_entry_lb(slot)
            .saturating_add(1 + role.dir() as u64)
    }

    /// Table ordinal `t = (s-1) × 2 + d`.
    fn table_ordinal(slot: u32, role: Role) -> u64 {
        u64::from(slot.saturating_sub(1)) * 2 + role.dir() as u64
    }

    /// First LB of the pointer table written by `role` for entry `slot`.
    pub fn table_lb(&self, slot: u32, role: Role) -> u64 {
        self.ptr_start
            .saturating_add(Self::table_ordinal(slot, role) * u64::from(self.ptr_table_lbs))
    }

    /// Size of one pointer table in bytes (whole LBs).
    pub fn table_bytes(&self) -> usize {
        self.ptr_table_lbs as usize * LB
    }

    /// Global segment number of ring entry `entry` (0-based) of the table
    /// written by `role` for `slot`. Returns 0 (never a valid segment) if
    /// `slot` or `entry` is out of range.
    pub fn ring_segment(&self, slot: u32, role: Role, entry: u32) -> u32 {
        if slot == 0 || slot > self.max_connections || entry >= self.ring_entries {
            return 0;
        }
        let t = Self::table_ordinal(slot, role);
        let Some((d, rel)) = self.ring_place(t, u64::from(entry)) else {
            return 0;
        };
        let Some(dev) = self.devices.get(d) else {
            return 0;
        };
        u32::try_from(u64::from(dev.first_segment) + rel).unwrap_or(0)
    }

    /// Whether the rings are striped across the devices by batch groups
    /// (v1.3 with secondary devices) rather than each lying whole on one.
    pub fn is_striped(&self) -> bool {
        self.minor_version >= STRIPED_MINOR && self.devices.len() > 1
    }

    /// Exclusive end of the batch group holding ring entry `entry`: the
    /// next multiple of the batch, or the ring's end. A batch never crosses
    /// it, so each batch is contiguous on one device.
    pub fn group_end(&self, entry: u32) -> u32 {
        group_end(entry, self.ring_entries, self.batch)
    }

    /// Device and segment (relative to the device's first) of entry `i` of
    /// table `t`. v1.3 with `D > 1` devices: group `g = i / B` is on device
    /// `(t + g) mod D`, the `(g / D)`-th group of table `t`'s `S` segments
    /// there. Otherwise the whole table is on device `t mod D`, its
    /// `(t / D)`-th run of `N` segments.
    fn ring_place(&self, t: u64, i: u64) -> Option<(usize, u64)> {
        let n_dev = self.devices.len() as u64;
        let n = u64::from(self.ring_entries);
        if n_dev == 0 {
            return None;
        }
        if self.is_striped() {
            let b = u64::from(self.batch.max(1));
            let g = i / b;
            let d = (t + g) % n_dev;
            let s = stripe_segments(n, b, n_dev);
            Some((d as usize, t * s + (g / n_dev) * b + i % b))
        } else {
            Some(((t % n_dev) as usize, (t / n_dev) * n + i))
        }
    }

    /// Where global segment `seg` is: device index (0 = master) and byte
    /// offset on that device. `None` if there is no such segment.
    pub fn segment_location(&self, seg: u32) -> Option<(usize, u64)> {
        self.devices.iter().enumerate().find_map(|(i, d)| {
            let rel = seg.checked_sub(d.first_segment)?;
            (rel < d.seg_count).then(|| {
                let lb = d
                    .seg_start_lb
                    .saturating_add(u64::from(rel) * u64::from(self.seg_lbs));
                (i, lb.saturating_mul(LB64))
            })
        })
    }

    /// Payload bytes a segment holds: `seg_lbs × 4096 − 64`.
    pub fn payload_capacity(&self) -> usize {
        (self.seg_lbs as usize * LB).saturating_sub(SEG_HDR_SIZE)
    }

    /// First LB after the pointer tables: a check reads LB 0 up to here.
    pub fn control_end_lb(&self) -> u64 {
        let tables = 2 * u64::from(self.max_connections);
        self.ptr_start
            .saturating_add(tables.saturating_mul(u64::from(self.ptr_table_lbs)))
    }

    /// Named regions of every device, for overlap and bounds checks: the
    /// fixed LBs, the Process Id Table, each pointer table, each table's
    /// ring of data segments and the unassigned data segments.
    pub fn extents(&self) -> Vec<Extent> {
        let ext = |device: usize, name: String, start_lb: u64, lbs: u64| Extent {
            device,
            name,
            start_lb,
            lbs,
        };
        let mut v = vec![
            ext(0, "LB 4 (zeroed)".into(), ZERO_LB, 1),
            ext(0, RecordKind::Mcb.to_string(), MCB_LB, 1),
            ext(0, RecordKind::Lock.to_string(), self.lock_ptr, 1),
            ext(0, "Secondary Device Table".into(), self.sdt_ptr, 1),
            ext(
                0,
                "Process Id Table".into(),
                self.pit_ptr,
                u64::from(self.max_connections) * u64::from(PID_ENTRY_LBS),
            ),
        ];
        for slot in 1..=self.max_connections {
            for role in Role::BOTH {
                v.push(ext(
                    0,
                    format!("pointer table {slot} ({role})"),
                    self.table_lb(slot, role),
                    u64::from(self.ptr_table_lbs),
                ));
            }
        }
        if self.has_backups() {
            v.push(ext(
                0,
                "backup Secondary Device Table".into(),
                self.sdt_backup_ptr,
                1,
            ));
            v.push(ext(
                0,
                "backup Master Control Block".into(),
                self.mcb_backup_ptr,
                1,
            ));
        }
        for i in 1..self.devices.len() {
            v.push(ext(i, "LB 4 (zeroed)".into(), ZERO_LB, 1));
            v.push(ext(i, "Master Control Block copy".into(), MCB_LB, 1));
            v.push(ext(i, "LB 6-7 (zeroed)".into(), LOCK_LB, 2));
        }
        let n_dev = self.devices.len() as u64;
        let tables = 2 * u64::from(self.max_connections);
        let seg_lbs = u64::from(self.seg_lbs);
        let n = u64::from(self.ring_entries);
        let b = u64::from(self.batch);
        for slot in 1..=self.max_connections {
            for role in Role::BOTH {
                let t = Self::table_ordinal(slot, role);
                if self.is_striped() {
                    let s = stripe_segments(n, b, n_dev);
                    for (d, dev) in self.devices.iter().enumerate() {
                        v.push(ext(
                            d,
                            format!("ring segments of pointer table {slot} ({role}), stripe"),
                            dev.seg_start_lb + t * s * seg_lbs,
                            s * seg_lbs,
                        ));
                    }
                    continue;
                }
                let Some((d, _)) = self.ring_place(t, 0) else {
                    continue;
                };
                let Some(dev) = self.devices.get(d) else {
                    continue;
                };
                v.push(ext(
                    d,
                    format!("ring segments of pointer table {slot} ({role})"),
                    dev.seg_start_lb + (t / n_dev) * n * seg_lbs,
                    n * seg_lbs,
                ));
            }
        }
        for (i, dev) in self.devices.iter().enumerate() {
            let (t, per) = ring_need(self.minor_version, i as u64, n_dev, tables, n, b);
            let used = t * per;
            let spare = u64::from(dev.seg_count).saturating_sub(used);
            if spare > 0 {
                v.push(ext(
                    i,
                    "unassigned data segments".into(),
                    dev.seg_start_lb + used * seg_lbs,
                    spare * seg_lbs,
                ));
            }
        }
        v
    }
}

/// One field of an MCB or SDT entry that disagrees with the recomputed
/// geometry.
pub(crate) struct Mismatch {
    pub kind: RecordKind,
    /// SDT entry number (1-based) for SDT mismatches, 0 for the MCB.
    pub index: u32,
    pub field: &'static str,
    /// Byte offset of the field in its record.
    pub offset: u32,
    pub reason: String,
}

/// Recomputes the geometry from the sizes and tunables on disk and lists
/// every field that disagrees with it.
pub(crate) fn reconcile(mcb: &Mcb, sdt: &[SdtEntry]) -> Result<(Geometry, Vec<Mismatch>), Error> {
    let entrynum = mcb.blk5_secondary_device_entrynum as usize;
    if sdt.len() != entrynum {
        return Err(Error::BadField {
            kind: RecordKind::Mcb,
            field: "blk5_secondary_device_entrynum",
            reason: format!(
                "{entrynum} devices, but {} Secondary Device Table entries given",
                sdt.len()
            ),
        });
    }
    let Some(master) = sdt.first() else {
        return Err(Error::BadField {
            kind: RecordKind::Mcb,
            field: "blk5_secondary_device_entrynum",
            reason: "no Secondary Device Table entries".into(),
        });
    };
    let params = GeometryParams {
        master_bytes: master.device_bytes,
        secondary_bytes: sdt.iter().skip(1).map(|e| e.device_bytes).collect(),
        block_size: mcb.format_block_size,
        segment_bytes: u64::from(mcb.blk5_seg_size) * LB64,
        max_connections: mcb.blk5_max_connections,
        ring_entries: mcb.blk5_maxptr,
        batch: mcb.blk5_ptr_seg_per_process,
    };
    let g = Geometry::compute_minor(&params, mcb.blk5_minor_version)?;
    let mut out = Vec::new();
    let mut m = |kind, index, field, offset, found: u64, expected: u64| {
        if found != expected {
            out.push(Mismatch {
                kind,
                index,
                field,
                offset,
                reason: format!("{found} on disk, but the geometry gives {expected}"),
            });
        }
    };
    use RecordKind::{Mcb as M, Sdt as S};
    m(
        M,
        0,
        "blk5_tot_seg_num",
        80,
        mcb.blk5_tot_seg_num.into(),
        g.tot_seg_num.into(),
    );
    m(
        M,
        0,
        "blk5_process_id_table_ptr",
        88,
        mcb.blk5_process_id_table_ptr,
        g.pit_ptr,
    );
    m(
        M,
        0,
        "blk5_secondary_device_table_ptr",
        96,
        mcb.blk5_secondary_device_table_ptr,
        g.sdt_ptr,
    );
    m(
        M,
        0,
        "blk5_start_process_segment_ptr",
        112,
        mcb.blk5_start_process_segment_ptr,
        g.ptr_start,
    );
    let master_start = g.devices.first().map_or(0, |d| d.seg_start_lb);
    m(
        M,
        0,
        "blk5_mast_sec_start_segment_ptr",
        120,
        mcb.blk5_mast_sec_start_segment_ptr,
        master_start,
    );
    m(
        M,
        0,
        "lock_record_ptr",
        136,
        mcb.lock_record_ptr,
        g.lock_ptr,
    );
    m(
        M,
        0,
        "sdt_backup_ptr",
        440,
        mcb.sdt_backup_ptr,
        g.sdt_backup_ptr,
    );
    m(
        M,
        0,
        "mcb_backup_ptr",
        448,
        mcb.mcb_backup_ptr,
        g.mcb_backup_ptr,
    );
    m(
        M,
        0,
        "pid_entry_lbs",
        168,
        mcb.pid_entry_lbs.into(),
        PID_ENTRY_LBS.into(),
    );
    m(
        M,
        0,
        "ptr_table_lbs",
        172,
        mcb.ptr_table_lbs.into(),
        g.ptr_table_lbs.into(),
    );
    let this = (mcb.blk5_dev_id as usize)
        .checked_sub(1)
        .and_then(|i| sdt.get(i));
    if let Some(e) = this {
        m(M, 0, "device_bytes", 160, mcb.device_bytes, e.device_bytes);
    }
    for (i, (e, d)) in sdt.iter().zip(&g.devices).enumerate() {
        let idx = i as u32 + 1;
        m(
            S,
            idx,
            "sec_str_seg_ptr",
            40,
            e.sec_str_seg_ptr,
            d.seg_start_lb,
        );
        m(
            S,
            idx,
            "sec_seg_number_for_device",
            48,
            e.sec_seg_number_for_device.into(),
            d.seg_count.into(),
        );
        m(
            S,
            idx,
            "sec_start_segment_number",
            52,
            e.sec_start_segment_number.into(),
            d.first_segment.into(),
        );
        let flags = if i == 0 { SEC_FLAG_MASTER } else { 0 };
        m(S, idx, "sec_flags", 64, e.sec_flags.into(), flags.into());
    }
    let expected_role = if mcb.blk5_dev_id == 1 {
        DeviceRole::Master
    } else {
        DeviceRole::Secondary
    };
    if mcb.blk5_id != expected_role {
        out.push(Mismatch {
            kind: M,
            index: 0,
            field: "blk5_id",
            offset: 24,
            reason: format!("{} copy with blk5_dev_id {}", mcb.blk5_id, mcb.blk5_dev_id),
        });
    }
    for (i, (u, e)) in mcb.device_uuids.iter().zip(sdt).enumerate() {
        if *u != e.sec_dev_id {
            out.push(Mismatch {
                kind: M,
                index: 0,
                field: "device_uuids",
                offset: 304 + 16 * i as u32,
                reason: format!(
                    "slot {} is {u}, but Secondary Device Table entry {} has sec_dev_id {}",
                    i + 1,
                    i + 1,
                    e.sec_dev_id
                ),
            });
        }
    }
    if let Some(u) = (mcb.blk5_dev_id as usize)
        .checked_sub(1)
        .and_then(|i| mcb.device_uuids.get(i))
    {
        if *u != mcb.blk5_device_uuid {
            out.push(Mismatch {
                kind: M,
                index: 0,
                field: "blk5_device_uuid",
                offset: 48,
                reason: format!(
                    "{} is not device_uuids slot {} ({u})",
                    mcb.blk5_device_uuid, mcb.blk5_dev_id
                ),
            });
        }
    }
    Ok((g, out))
}

// ---------------------------------------------------------------------------
// Choosing a geometry

/// Batch size (one I/O: `B` contiguous segments) [`GeometryRequest::resolve`]
/// aims at: large sequential I/Os are what a SAN array (and its cache) does
/// best.
const AUTO_IO_BYTES: u64 = 1 << 20;
/// Batches per ring [`GeometryRequest::resolve`] aims at, so both sides can
/// keep several I/Os in flight: the writer fills batches ahead while the
/// reader still reads earlier ones.
const AUTO_RING_DEPTH: u64 = 8;
/// Smallest segment size [`GeometryRequest::resolve`] chooses when a batch
/// of at least that much fits (the default segment size).
const AUTO_MIN_SEGMENT: u64 = DEFAULT_SEGMENT_BYTES;
/// Largest segment size [`GeometryRequest::resolve`] chooses: a 1 MiB batch
/// is then 4 segments, and a ring of a few MiB still has dozens of entries.
const AUTO_MAX_SEGMENT: u64 = 256 << 10;

/// What `format` was asked for: the devices and connections, and the
/// tunables the user fixed; [`GeometryRequest::resolve`] chooses the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeometryRequest {
    /// Size of the master device in bytes.
    pub master_bytes: u64,
    /// Sizes of the secondary devices in bytes, in Secondary Device Table order.
    pub secondary_bytes: Vec<u64>,
    /// Logical block size of the master (`format_block_size`).
    pub block_size: u32,
    /// `blk5_max_connections` (`C`): always given (it is what the devices
    /// are shared by, not a tuning knob).
    pub max_connections: u32,
    /// Data-segment size in bytes, or `None` to choose it.
    pub segment_bytes: Option<u64>,
    /// Ring entries per pointer table (`N`), or `None` to choose them.
    pub ring_entries: Option<u32>,
    /// Batch (`B`), or `None` to choose it.
    pub batch: Option<u32>,
}

/// A geometry [`GeometryRequest::resolve`] chose, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoGeometry {
    /// The parameters, every tunable set.
    pub params: GeometryParams,
    /// The layout they give.
    pub geometry: Geometry,
    /// Whether the defaults were kept (for the tunables not given): they
    /// fit. `false` when the geometry was sized from the devices, or every
    /// tunable was given.
    pub kept_defaults: bool,
    /// What it is, for people: "16 connections, 127 ring entries of 256
    /// KiB, batch 4 (1 MiB per I/O, 31 batches per ring); the rings fill
    /// 99% of 1 GiB".
    pub chosen: String,
    /// Why, for people: "the defaults fit", or "the defaults (640 ring
    /// entries of 64 KiB) need a master of 1.3 GiB but it has 1 GiB".
    pub reason: String,
}

/// `x` rounded down to a power of two (0 for 0).
fn pow2_floor(x: u64) -> u64 {
    match x {
        0 => 0,
        _ => 1 << (63 - x.leading_zeros()),
    }
}

/// The largest `v` in `lo..=hi` with `ok(v)`, for an `ok` that holds up to
/// some value and not above it; `None` if not even `ok(lo)`.
fn largest(lo: u64, hi: u64, mut ok: impl FnMut(u64) -> bool) -> Option<u64> {
    if lo > hi || !ok(lo) {
        return None;
    }
    let (mut good, mut bad) = (lo, hi.saturating_add(1));
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if ok(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Some(good)
}

/// Whether `p` leaves the devices room enough: it computes, or fails for a
/// reason other than space (e.g. too many segments for u32 numbers).
fn room_enough(p: &GeometryParams) -> bool {
    !matches!(
        Geometry::compute(p),
        Err(GeometryError::NotEnoughSegments { .. } | GeometryError::DeviceTooSmall { .. })
    )
}

/// Bytes for people: `64 KiB`, `1.3 GiB`, `512 B`.
fn size_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{} {}", v.round() as u64, UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl Geometry {
    /// A request to choose the geometry of `master_bytes` (and
    /// `secondary_bytes`) with `block_size`-byte logical blocks for
    /// `max_connections` connections: set the tunables the user gave on it,
    /// then its `resolve` chooses the others.
    pub fn auto(
        master_bytes: u64,
        secondary_bytes: &[u64],
        block_size: u32,
        max_connections: u32,
    ) -> GeometryRequest {
        GeometryRequest {
            master_bytes,
            secondary_bytes: secondary_bytes.to_vec(),
            block_size,
            max_connections,
            segment_bytes: None,
            ring_entries: None,
            batch: None,
        }
    }
}

impl GeometryRequest {
    /// The parameters with the given tunables, and `s`, `n`, `b` for the others.
    fn params(&self, s: u64, n: u32, b: u32) -> GeometryParams {
        self.at(
            self.segment_bytes.unwrap_or(s),
            self.ring_entries.unwrap_or(n),
            self.batch.unwrap_or(b),
        )
    }

    /// The parameters with exactly `s`, `n` and `b`.
    fn at(&self, s: u64, n: u32, b: u32) -> GeometryParams {
        GeometryParams {
            master_bytes: self.master_bytes,
            secondary_bytes: self.secondary_bytes.clone(),
            block_size: self.block_size,
            segment_bytes: s,
            max_connections: self.max_connections,
            ring_entries: n,
            batch: b,
        }
    }

    /// The most ring entries that fit with segments of `s` bytes.
    fn max_ring_entries(&self, s: u64) -> Option<u32> {
        let fits = |n: u64| Geometry::compute(&self.at(s, n as u32, 1)).is_ok();
        largest(MIN_RING_ENTRIES.into(), MAX_RING_ENTRIES.into(), fits).map(|n| n as u32)
    }

    /// The largest segment (bytes, a multiple of 4096) that fits `n` ring
    /// entries.
    fn max_segment_bytes(&self, n: u32) -> Option<u64> {
        let room = |lbs: u64| room_enough(&self.at(lbs * LB64, n, 1));
        let lbs = largest(1, MAX_SEG_LBS.into(), room)?;
        Geometry::compute(&self.at(lbs * LB64, n, 1))
            .is_ok()
            .then_some(lbs * LB64)
    }

    /// What to tell a user whose request does not fit: the largest segment
    /// size (bytes, a multiple of 4096) that fits the devices with the ring
    /// entries as given (or as few as possible: 2, or a given batch).
    /// `None` if not even 4096 does.
    pub fn largest_segment_bytes(&self) -> Option<u64> {
        self.max_segment_bytes(self.smallest_ring())
    }

    /// The most ring entries that fit the devices with the segment size as
    /// given (or 4096 bytes). `None` if not even 2 do.
    pub fn largest_ring_entries(&self) -> Option<u32> {
        self.max_ring_entries(self.segment_bytes.unwrap_or(LB64))
    }

    /// The most connections that fit the devices with the segment size and
    /// ring entries as given (or as small as possible). `None` if not even
    /// one does.
    pub fn largest_max_connections(&self) -> Option<u32> {
        let (s, n) = (self.segment_bytes.unwrap_or(LB64), self.smallest_ring());
        let mut p = self.at(s, n, 1);
        largest(1, MAX_CONNECTIONS.into(), |c| {
            p.max_connections = c as u32;
            Geometry::compute(&p).is_ok()
        })
        .map(|c| c as u32)
    }

    /// The ring entries as given, or the fewest that hold a given batch.
    fn smallest_ring(&self) -> u32 {
        self.ring_entries
            .unwrap_or(self.batch.unwrap_or(0).max(MIN_RING_ENTRIES))
    }

    /// Chooses the tunables not given, the way `mkfs` sizes its tables
    /// from the device:
    ///
    /// 1. **The defaults where they fit**: if [`DEFAULT_SEGMENT_BYTES`],
    ///    [`DEFAULT_RING_ENTRIES`] and [`DEFAULT_BATCH`] (for the tunables
    ///    not given) fit the devices with `C` connections, they are kept, so
    ///    a device large enough gets the layout it always got.
    /// 2. **Otherwise sized from the devices**: the rings get all the room
    ///    the data area has, `R` bytes per ring (the tightest device
    ///    decides). 8 batches of 4 segments each would fill it, so the
    ///    segment size is `R / 32` rounded down to a power of two, from 64
    ///    KiB to 256 KiB (smaller only when a ring would not hold 2 of
    ///    them); the ring entries are as many as fit; and the batch — one
    ///    I/O — is as large as it can be up to 1 MiB while the ring still
    ///    holds 8 batches (and at least 1 segment).
    ///
    /// Given tunables are kept as given; the ones chosen adapt to them
    /// (e.g. a given ring of 640 entries on a small device gets small
    /// segments). Every result is checked by [`Geometry::compute`]; an
    /// error is the one it gives for the smallest geometry tried, which
    /// names the numbers; [`GeometryRequest::largest_ring_entries`] and its
    /// siblings then say how far each given tunable may go.
    pub fn resolve(&self) -> Result<AutoGeometry, GeometryError> {
        let done = |params: GeometryParams, geometry: Geometry, kept_defaults, reason: String| {
            let chosen = format!("{}; {}", describe(&geometry), fill(&geometry));
            Ok(AutoGeometry {
                params,
                geometry,
                kept_defaults,
                chosen,
                reason,
            })
        };
        if let (Some(_), Some(_), Some(_)) = (self.segment_bytes, self.ring_entries, self.batch) {
            let params = self.params(0, 0, 0);
            let geometry = Geometry::compute(&params)?;
            return done(params, geometry, false, "all given".into());
        }
        let defaults = self.params(DEFAULT_SEGMENT_BYTES, DEFAULT_RING_ENTRIES, DEFAULT_BATCH);
        let defaults_err = match Geometry::compute(&defaults) {
            Ok(geometry) => {
                return done(defaults, geometry, true, "the defaults fit".into());
            }
            Err(e) => e,
        };
        let geometry = self.sized()?;
        let default_ring = format!(
            "{} ring entries of {}",
            defaults.ring_entries,
            size_text(defaults.segment_bytes)
        );
        let why = match &defaults_err {
            GeometryError::NotEnoughSegments {
                device,
                need_bytes,
                device_bytes,
                ..
            }
            | GeometryError::DeviceTooSmall {
                device,
                need_bytes,
                device_bytes,
            } => format!(
                "the defaults ({default_ring}) need a {} of {} but it has {}",
                if *device == 0 {
                    "master".to_string()
                } else {
                    format!("secondary device {device}")
                },
                size_text(*need_bytes),
                size_text(*device_bytes)
            ),
            other => format!("the defaults ({default_ring}) do not fit: {other}"),
        };
        done(geometry.params(), geometry, false, why)
    }

    /// Step 2 of [`GeometryRequest::resolve`].
    fn sized(&self) -> Result<Geometry, GeometryError> {
        // Ring bytes per table, measured at the finest grain the given
        // tunables allow.
        let ring_bytes = match (self.segment_bytes, self.ring_entries) {
            (Some(s), _) => self.max_ring_entries(s).map(|n| u64::from(n) * s),
            (None, Some(n)) => self.max_segment_bytes(n).map(|s| u64::from(n) * s),
            (None, None) => self.max_ring_entries(LB64).map(|n| u64::from(n) * LB64),
        };
        let Some(ring_bytes) = ring_bytes else {
            // Not even the smallest geometry fits: its error says why.
            return Geometry::compute(&self.params(LB64, MIN_RING_ENTRIES, 1));
        };
        let mut seg = match self.segment_bytes {
            Some(s) => s,
            None => {
                let mut s = pow2_floor(ring_bytes / (AUTO_RING_DEPTH * 4))
                    .clamp(AUTO_MIN_SEGMENT, AUTO_MAX_SEGMENT);
                if let Some(n) = self.ring_entries {
                    // As large as the given ring allows.
                    s = s.min(self.max_segment_bytes(n).unwrap_or(LB64));
                }
                if let Some(b) = self.batch {
                    // Room for two batches of the given size.
                    let per = ring_bytes / (2 * u64::from(b).max(1));
                    s = s.min((per / LB64).max(1) * LB64);
                }
                s
            }
        };
        loop {
            let n = match self.ring_entries {
                Some(n) => Some(n),
                None => self.max_ring_entries(seg),
            };
            let attempt = match n {
                Some(n) => {
                    let by_io = AUTO_IO_BYTES / seg;
                    let by_depth = u64::from(n) / AUTO_RING_DEPTH;
                    let b = by_io.min(by_depth).max(1) as u32;
                    let b = self.batch.unwrap_or(b);
                    match Geometry::compute(&self.params(seg, n, b)) {
                        // Striped rings (v1.3) round each table's share on
                        // a device up to whole batches: fewer entries then.
                        Err(GeometryError::NotEnoughSegments { .. })
                            if self.ring_entries.is_none() =>
                        {
                            let fits =
                                |m: u64| Geometry::compute(&self.params(seg, m as u32, b)).is_ok();
                            match largest(u64::from(b.max(MIN_RING_ENTRIES)), n.into(), fits) {
                                Some(m) => Geometry::compute(&self.params(seg, m as u32, b)),
                                None => Geometry::compute(&self.params(seg, n, b)),
                            }
                        }
                        r => r,
                    }
                }
                None => Geometry::compute(&self.params(seg, MIN_RING_ENTRIES, 1)),
            };
            match attempt {
                Err(_) if self.segment_bytes.is_none() && seg > LB64 => {
                    seg = (seg / 2 / LB64).max(1) * LB64;
                }
                r => return r,
            }
        }
    }
}

/// "16 connections, 31 ring entries of 64 KiB, batch 2 (128 KiB per
/// I/O, 15 batches per ring)".
fn describe(g: &Geometry) -> String {
    let seg = u64::from(g.seg_lbs) * LB64;
    format!(
        "{} connection{}, {} ring entries of {}, batch {} ({} per I/O, {} batches per ring)",
        g.max_connections,
        if g.max_connections == 1 { "" } else { "s" },
        g.ring_entries,
        size_text(seg),
        g.batch,
        size_text(seg * u64::from(g.batch)),
        g.ring_entries / g.batch.max(1)
    )
}

/// "the rings fill 93% of 64 MiB".
fn fill(g: &Geometry) -> String {
    let total: u64 = g.devices.iter().map(|d| d.device_bytes).sum();
    let rings =
        2 * u64::from(g.max_connections) * u64::from(g.ring_entries) * u64::from(g.seg_lbs) * LB64;
    let pct = (rings as u128 * 100 / u128::from(total.max(1))) as u64;
    format!(
        "the rings fill {pct}% of {}{}",
        size_text(total),
        if g.devices.len() > 1 {
            format!(" on {} devices", g.devices.len())
        } else {
            String::new()
        }
    )
}
