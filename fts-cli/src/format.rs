//! `fts format`: lay the control structures on a master device (and the
//! identity copies on secondary devices).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fts_blockdev::{BlockDevice, OpenOptions, WriteMode};
use fts_layout::{
    format_writes, FormatSpec, Geometry, GeometryError, Mcb, DEFAULT_HEARTBEAT_MS,
    DEFAULT_IO_TIMEOUT_MS, DEFAULT_LEASE_TIMEOUT_MS, DEFAULT_LOCK_TIMEOUT_MS, LB,
};
use uuid::Uuid;

use crate::exit::{fail, Code};
use crate::layout::open_device;
use crate::out::outln;
use crate::size::human;

/// What to format.
#[derive(Debug, Clone)]
pub struct FormatArgs {
    /// Master device.
    pub device: String,
    /// Create or extend a regular file to this size.
    pub size: Option<u64>,
    /// Segment size in bytes; `None`: chosen from the devices
    /// ([`Geometry::auto`]).
    pub segment_bytes: Option<u64>,
    /// `blk5_max_connections`.
    pub max_connections: u32,
    /// `blk5_maxptr`; `None`: chosen from the devices.
    pub ring_entries: Option<u32>,
    /// `blk5_ptr_seg_per_process`; `None`: chosen from the devices.
    pub batch: Option<u32>,
    /// Secondary devices.
    pub secondaries: Vec<String>,
    /// Overwrite an existing layout or foreign data.
    pub force: bool,
    /// Logical block size override for regular files (emulate 4Kn).
    pub block_size: Option<u32>,
    /// Lease timeout stored in the MCB.
    pub lease_timeout_ms: u32,
    /// Lock timeout (ms): a lock holder whose lock record stalls this long is broken.
    pub lock_timeout_ms: u32,
}

impl FormatArgs {
    /// Defaults from fts-layout for everything but the device; the
    /// geometry chosen from the devices' sizes.
    pub fn new(device: String) -> Self {
        FormatArgs {
            device,
            size: None,
            segment_bytes: None,
            max_connections: fts_layout::DEFAULT_MAX_CONNECTIONS,
            ring_entries: None,
            batch: None,
            secondaries: Vec::new(),
            force: false,
            block_size: None,
            lease_timeout_ms: DEFAULT_LEASE_TIMEOUT_MS,
            lock_timeout_ms: DEFAULT_LOCK_TIMEOUT_MS,
        }
    }
}

/// Refuses to overwrite an fts layout or foreign data at LB 4-7 unless forced.
fn guard_existing(dev: &mut dyn BlockDevice, force: bool) -> Result<()> {
    let loc = dev.location().to_string();
    if dev.size_bytes() < 8 * LB as u64 {
        return Ok(()); // too small; geometry will say so
    }
    if force {
        return Ok(());
    }
    let mut buf = vec![0u8; 4 * LB];
    dev.read_at(4 * LB as u64, &mut buf)?;
    // A layout whose LB 5 is damaged but whose backup at the end is valid
    // is still a layout: `check --repair` mends it.
    let backup = match fts_layout::backups_at_end(dev.size_bytes()) {
        Some(lb) if Mcb::decode(&buf[LB..2 * LB]).is_err() => {
            let mut b = vec![0u8; LB];
            dev.read_at((lb + 1) * LB as u64, &mut b)?;
            Mcb::decode(&b)
                .ok()
                .filter(|m| {
                    m.blk5_id == fts_layout::DeviceRole::Master && m.mcb_backup_ptr == lb + 1
                })
                .map(|m| (lb + 1, m))
        }
        _ => None,
    };
    if let Some((lb, m)) = backup {
        return Err(fail(
            Code::Exists,
            format!(
                "{loc} holds fts layout {} whose Master Control Block at LB 5 is damaged, but its backup at LB {lb} is valid: `fts -d {loc} check --repair` mends it; refusing to overwrite it without --force",
                m.blk5_layout_uuid
            ),
        ));
    }
    if buf.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let lb5 = &buf[LB..2 * LB];
    let what = match Mcb::decode(lb5) {
        Ok(m) => format!(
            "already holds an fts layout ({} device {} of layout {}, {} connections)",
            match m.blk5_id {
                fts_layout::DeviceRole::Master => "master",
                fts_layout::DeviceRole::Secondary => "secondary",
            },
            m.blk5_dev_id,
            m.blk5_layout_uuid,
            m.blk5_max_connections
        ),
        Err(_) => {
            "contains data at LB 4-7 (bytes 16384-32767) that is not an fts layout".to_string()
        }
    };
    Err(fail(
        Code::Exists,
        format!("{loc} {what}; refusing to overwrite it without --force"),
    ))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn path_for_record(loc: &str) -> String {
    let p = std::fs::canonicalize(loc)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| loc.to_string());
    // Keep the tail if the path is longer than the field.
    if p.len() > fts_layout::PATH_MAX {
        let mut start = p.len() - fts_layout::PATH_MAX;
        while !p.is_char_boundary(start) {
            start += 1;
        }
        p[start..].to_string()
    } else {
        p
    }
}

fn hw_id(dev: &dyn BlockDevice) -> String {
    let id = dev.identity().id.clone();
    if id.len() > fts_layout::HW_ID_MAX {
        id.chars().take(fts_layout::HW_ID_MAX / 4).collect()
    } else {
        id
    }
}

/// What the master path was before `format` touched it.
enum Before {
    /// Nothing: `format --size` creates the file.
    Absent,
    /// A regular file of this many bytes (`--size` may extend it).
    File(u64),
    /// Anything else (a block device, a SCSI location, …): never touched.
    Other,
}

fn before(location: &str) -> Before {
    if fts_scsi::is_scsi_location(location) {
        return Before::Other;
    }
    match std::fs::symlink_metadata(location) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Before::Absent,
        Ok(m) if m.file_type().is_file() => Before::File(m.len()),
        _ => Before::Other,
    }
}

/// Undoes what a failed format did to the master path itself: removes a
/// file it created, shrinks a regular file it extended back to its size.
/// Never removes anything that existed before.
fn undo(location: &str, was: &Before) {
    let r = match was {
        Before::Absent => match std::fs::remove_file(location) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        },
        Before::File(len) => match std::fs::symlink_metadata(location) {
            Ok(m) if m.file_type().is_file() && m.len() > *len => std::fs::OpenOptions::new()
                .write(true)
                .open(location)
                .and_then(|f| f.set_len(*len)),
            _ => Ok(()),
        },
        Before::Other => Ok(()),
    };
    if let Err(e) = r {
        eprintln!("fts: warning: cannot undo what the failed format did to {location}: {e}");
    }
}

/// The geometry flags of `format`, with the value given for each.
fn geometry_flags(args: &FormatArgs) -> [(&'static str, Option<String>); 3] {
    [
        ("--segment-size", args.segment_bytes.map(human)),
        ("--ring-entries", args.ring_entries.map(|n| n.to_string())),
        ("--batch", args.batch.map(|b| b.to_string())),
    ]
}

/// Chooses the geometry (fts-layout's [`Geometry::auto`]: the tunables not
/// given are sized from the devices, the way `mkfs` sizes its tables) and
/// returns it with, when anything was chosen, the lines saying what and
/// why. A request that cannot fit fails with exit 7 and says which flag to
/// change and how far it may go.
fn choose(
    args: &FormatArgs,
    master_bytes: u64,
    secondary_bytes: &[u64],
    block_size: u32,
) -> Result<(Geometry, Option<String>)> {
    let mut req = Geometry::auto(
        master_bytes,
        secondary_bytes,
        block_size,
        args.max_connections,
    );
    req.segment_bytes = args.segment_bytes;
    req.ring_entries = args.ring_entries;
    req.batch = args.batch;
    let flags = geometry_flags(args);
    let free: Vec<&str> = flags
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(f, _)| *f)
        .collect();
    let given: Vec<String> = flags
        .iter()
        .filter_map(|(f, v)| v.as_ref().map(|v| format!("{f} {v}")))
        .collect();
    let e = match req.resolve() {
        Ok(a) if free.is_empty() => return Ok((a.geometry, None)),
        Ok(a) => {
            let pass = match free.as_slice() {
                [init @ .., last] if !init.is_empty() => format!("{} or {last}", init.join(", ")),
                _ => free.join(""),
            };
            let lines = format!(
                "geometry: {}\n  chosen because {}; pass {pass} to choose yourself",
                a.chosen, a.reason
            );
            return Ok((a.geometry, Some(lines)));
        }
        Err(e) => e,
    };
    let mut msg = format!("cannot format {}: {e}", args.device);
    if matches!(
        e,
        GeometryError::NotEnoughSegments { .. } | GeometryError::DeviceTooSmall { .. }
    ) {
        // How far each given flag may go, the others as given.
        let total = human(master_bytes + secondary_bytes.iter().sum::<u64>());
        let c = args.max_connections;
        let fits = |flag: &str| {
            let mut w = format!(
                "{total} with {c} connection{}",
                if c == 1 { "" } else { "s" }
            );
            for g in given.iter().filter(|g| !g.starts_with(flag)) {
                w.push_str(&format!(" and {g}"));
            }
            w
        };
        if let Some(n) = args.ring_entries {
            msg.push_str(&match req.largest_ring_entries() {
                Some(max) => format!(
                    "\n  --ring-entries {n}: the largest that fits {} is {max}",
                    fits("--ring-entries")
                ),
                None => format!(
                    "\n  --ring-entries {n}: no ring fits {}",
                    fits("--ring-entries")
                ),
            });
        }
        if let Some(s) = args.segment_bytes {
            let s = human(s);
            msg.push_str(&match req.largest_segment_bytes() {
                Some(max) => format!(
                    "\n  --segment-size {s}: the largest that fits {} is {} ({max} bytes)",
                    fits("--segment-size"),
                    human(max)
                ),
                None => format!(
                    "\n  --segment-size {s}: none fits {}",
                    fits("--segment-size")
                ),
            });
        }
        let with = if given.is_empty() {
            "the smallest segments and rings".to_string()
        } else {
            given.join(" and ")
        };
        msg.push_str(&match req.largest_max_connections() {
            Some(max) => {
                format!("\n  --max-connections {c}: at most {max} fit {total} with {with}")
            }
            None => {
                format!("\n  not even 1 connection fits {total} with {with}: use a larger device")
            }
        });
    }
    Err(fail(Code::Geometry, msg))
}

/// Formats the devices; returns the spec written, for the caller's summary.
/// When it fails, a master file this run created is removed again, and a
/// regular file it extended is cut back to its size; a file or device that
/// existed before is never removed.
pub fn run(args: &FormatArgs) -> Result<FormatSpec> {
    let was = before(&args.device);
    let result = format_devices(args);
    if result.is_err() {
        undo(&args.device, &was);
    }
    result
}

fn format_devices(args: &FormatArgs) -> Result<FormatSpec> {
    let opts = OpenOptions {
        create_size: args.size,
        block_size: args.block_size,
        ..OpenOptions::default()
    };
    let mut devs: Vec<Box<dyn BlockDevice>> = vec![open_device(&args.device, &opts)?];
    for s in &args.secondaries {
        let sopts = OpenOptions {
            block_size: args.block_size,
            ..OpenOptions::default()
        };
        devs.push(open_device(s, &sopts)?);
    }
    for i in 0..devs.len() {
        for j in 0..i {
            if devs[i].identity() == devs[j].identity() {
                return Err(fail(
                    Code::Usage,
                    format!(
                        "{} and {} are the same device ({}); every secondary must be a distinct device",
                        devs[j].location(),
                        devs[i].location(),
                        devs[i].identity()
                    ),
                ));
            }
        }
    }
    for d in devs.iter_mut() {
        guard_existing(d.as_mut(), args.force)?;
    }
    let (geometry, chosen) = choose(
        args,
        devs[0].size_bytes(),
        &devs[1..].iter().map(|d| d.size_bytes()).collect::<Vec<_>>(),
        devs.iter().map(|d| d.block_size()).max().unwrap_or(512),
    )?;
    if let Some(lines) = chosen {
        outln!("{lines}");
    }
    let spec = FormatSpec {
        geometry,
        layout_uuid: Uuid::new_v4(),
        device_uuids: devs.iter().map(|_| Uuid::new_v4()).collect(),
        time_ns: now_ns(),
        paths: devs.iter().map(|d| path_for_record(d.location())).collect(),
        hw_ids: devs.iter().map(|d| hw_id(d.as_ref())).collect(),
        lease_timeout_ms: args.lease_timeout_ms,
        lock_timeout_ms: args.lock_timeout_ms,
        io_timeout_ms: DEFAULT_IO_TIMEOUT_MS,
        heartbeat_ms: DEFAULT_HEARTBEAT_MS.min(args.lease_timeout_ms / 4).max(1),
    };
    spec.validate()
        .with_context(|| format!("cannot format {}", args.device))?;
    // The plan's commit points (the backups, then the master MCB alone in
    // LB 5, last) make a layout valid: a crash before them leaves no valid
    // master behind. Make everything before each durable first.
    for w in format_writes(&spec) {
        if w.barrier {
            for d in devs.iter_mut() {
                d.flush()?;
            }
        }
        let mode = if w.barrier {
            WriteMode::Fua
        } else {
            WriteMode::Normal
        };
        let dev = devs
            .get_mut(w.device)
            .ok_or_else(|| anyhow::anyhow!("format plan names device {}", w.device))?;
        dev.write_at(w.lb * LB as u64, &w.data, mode)?;
    }
    for d in devs.iter_mut() {
        d.flush()?;
    }
    Ok(spec)
}

/// One-paragraph summary of a format.
pub fn summary(spec: &FormatSpec) -> String {
    let g = &spec.geometry;
    let mut s = format!(
        "formatted {} as an fts master: layout {}\n  {} connections, {} ring entries per table, batch {}, segments of {} ({} payload bytes)\n  {} data segments in all",
        spec.paths[0],
        spec.layout_uuid,
        g.max_connections,
        g.ring_entries,
        g.batch,
        human(u64::from(g.seg_lbs) * LB as u64),
        g.payload_capacity(),
        g.tot_seg_num,
    );
    for (i, p) in spec.paths.iter().enumerate().skip(1) {
        s.push_str(&format!(
            "\n  secondary device {} ({}): {} segments, id {}",
            i + 1,
            p,
            g.devices[i].seg_count,
            spec.device_uuids[i]
        ));
    }
    s
}
