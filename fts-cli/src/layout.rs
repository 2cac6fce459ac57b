//! Opening a device and reading its fts layout, with messages that say what
//! and where for every way this can fail.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fts_blockdev::{BlockDevice, OpenOptions};
use fts_layout::check::{self, MasterBytes};
use fts_layout::{Error as LayoutError, Geometry, Mcb, SdtEntry, BACKUP_LBS, LB, MCB_LB};

use crate::exit::{fail, Code};

/// Opens a device for fts I/O: a SCSI location (`iscsi://`, `/dev/sgN`,
/// `/dev/sdX`) through `fts-scsi`, anything else (file, block device)
/// through `fts-blockdev`.
pub fn open_device(location: &str, opts: &OpenOptions) -> Result<Box<dyn BlockDevice>> {
    open_device_and_nexus(location, opts).map(|(dev, _)| dev)
}

/// Like [`open_device`], also returning the I_T nexus of a SCSI device,
/// which its lock backend and cache setting must share.
pub fn open_device_and_nexus(
    location: &str,
    opts: &OpenOptions,
) -> Result<(Box<dyn BlockDevice>, Option<fts_scsi::SharedTransport>)> {
    if fts_scsi::is_scsi_location(location) {
        if opts.create_size.is_some() || opts.block_size.is_some() {
            return Err(fail(
                Code::Usage,
                format!("{location} is a SCSI device: --size and --block-size apply to files only"),
            ));
        }
        let dev = crate::scsi::open(location)?;
        let nexus = dev.transport();
        return Ok((Box::new(dev), Some(nexus)));
    }
    let dev = fts_blockdev::open(location, opts)
        .with_context(|| format!("cannot open device {location}"))?;
    Ok((with_faults(dev)?, None))
}

/// Test builds only (feature `fault-injection`): wraps the device in the
/// fault plan of `FTS_FAULT_PLAN` (see `fts-faults`), so process tests can
/// make a real `fts` meet a misbehaving disk. Release builds never read it.
#[cfg(feature = "fault-injection")]
fn with_faults(dev: Box<dyn BlockDevice>) -> Result<Box<dyn BlockDevice>> {
    fts_faults::wrap_from_env(dev).context("FTS_FAULT_PLAN")
}

#[cfg(not(feature = "fault-injection"))]
fn with_faults(dev: Box<dyn BlockDevice>) -> Result<Box<dyn BlockDevice>> {
    Ok(dev)
}

/// A master device's layout as read from disk.
#[derive(Debug)]
pub struct Loaded {
    /// The Master Control Block (the primary, or its backup if the primary
    /// is damaged).
    pub mcb: Mcb,
    /// Secondary Device Table entries that decoded (from either copy),
    /// master first.
    pub sdt: Vec<SdtEntry>,
    /// The geometry rebuilt from the MCB and SDT, or why it could not be
    /// (a damaged Secondary Device Table; `problems` then names it).
    pub geometry: Result<Geometry, String>,
    /// The bytes read: LB 0 to the end of the pointer tables, and the
    /// backups at the end of a v1.1 master.
    pub master: MasterBytes,
    /// Every problem `check` found in them.
    pub problems: Vec<check::Problem>,
    /// Primaries that were damaged and read from their backups.
    pub damaged: Vec<check::Damaged>,
    /// Entries whose leases show no life (by the writers' clocks).
    pub dead: Vec<check::DeadEntry>,
}

impl Loaded {
    /// The one warning line to print when a backup stood in for a damaged
    /// primary.
    pub fn warning(&self, location: &str) -> Option<String> {
        check::damage_warning(location, &self.damaged)
    }
}

fn read_at(dev: &mut dyn BlockDevice, lb: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    dev.read_at(lb * LB as u64, &mut buf)?;
    Ok(buf)
}

/// This host's clock, ns since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Why the backup MCB in `backups` (read at `lb`) cannot stand in.
fn backup_unusable(lb: u64, backups: &[u8]) -> String {
    let rec = backups.get(LB..2 * LB).unwrap_or(&[]);
    match Mcb::decode(rec) {
        Err(e) => format!("its backup at LB {} is not usable either ({})", lb + 1, e.detail()),
        Ok(m) if m.mcb_backup_ptr != lb + 1 => format!(
            "the MCB at LB {} is a backup for LB {}, not this device's end (was the device resized?)",
            lb + 1,
            m.mcb_backup_ptr
        ),
        Ok(_) => format!("its backup at LB {} is not a usable master MCB either", lb + 1),
    }
}

/// Reads and checks the control area of a master (and the backups of a
/// v1.1 layout), judging lease life against this host's clock.
pub fn load(dev: &mut dyn BlockDevice) -> Result<Loaded> {
    let loc = dev.location().to_string();
    let size = dev.size_bytes();
    let first = 8 * LB;
    if size < first as u64 {
        return Err(fail(
            Code::Layout,
            format!(
                "{loc} is not an fts device: it holds only {size} bytes, less than the {first} bytes up to the Master Control Block's neighbours (LB 0-7)"
            ),
        ));
    }
    let mut control = read_at(dev, 0, first)?;
    // The backups: where a valid MCB says, else at the end of the device.
    let backup_lb = check::backup_location(&control[MCB_LB as usize * LB..first], size)
        .filter(|&lb| (lb + BACKUP_LBS).saturating_mul(LB as u64) <= size);
    let backups = match backup_lb {
        // A backup that cannot be read is only a missing fallback.
        Some(lb) => read_at(dev, lb, BACKUP_LBS as usize * LB).ok(),
        None => None,
    };
    let now = now_ns();
    let mut tries = 0;
    loop {
        let image = check::Image {
            control: &control,
            backups: backup_lb
                .zip(backups.as_deref())
                .map(|(lb, bytes)| check::Backups { lb, bytes }),
            device_bytes: size,
            now_ns: Some(now),
        };
        let no_backup = || match (backup_lb, &backups) {
            (Some(lb), Some(b)) => format!("; {}", backup_unusable(lb, b)),
            (Some(lb), None) => format!("; its backup at LB {} cannot be read", lb + 1),
            (None, _) => String::new(),
        };
        match check::check_image(&image) {
            Ok(c) => {
                let geometry = Geometry::from_mcb(&c.mcb, &c.sdt).map_err(|e| e.to_string());
                if let Err(e) = &geometry {
                    if c.problems.is_empty() {
                        return Err(fail(
                            Code::Layout,
                            format!("{loc}: the Master Control Block describes an impossible layout: {e}"),
                        ));
                    }
                }
                let (backup_lb, backups) = match (backup_lb, backups) {
                    (Some(lb), Some(b)) if c.mcb.sdt_backup_ptr == lb => (lb, b),
                    _ => (0, Vec::new()),
                };
                return Ok(Loaded {
                    mcb: c.mcb,
                    sdt: c.sdt,
                    geometry,
                    master: MasterBytes {
                        control,
                        backup_lb,
                        backups,
                        device_bytes: size,
                    },
                    problems: c.problems,
                    damaged: c.damaged,
                    dead: c.dead,
                });
            }
            Err(LayoutError::Truncated { need, got, .. }) if tries == 0 && need > got => {
                tries += 1;
                if need as u64 > size {
                    return Err(fail(
                        Code::Layout,
                        format!(
                            "{loc} is truncated: its layout needs {need} bytes of control structures but the device holds only {size} bytes"
                        ),
                    ));
                }
                let bs = dev.block_size().max(1) as usize;
                control = read_at(dev, 0, need.div_ceil(bs) * bs)?;
            }
            Err(e @ LayoutError::Empty { .. }) => {
                let something_at_end = backups.as_ref().is_some_and(|b| b.iter().any(|&x| x != 0));
                let msg = if something_at_end {
                    format!(
                        "{loc}: the Master Control Block at LB 5 is all zero{}; restore the device or format it again",
                        no_backup()
                    )
                } else {
                    format!(
                        "{loc} is not formatted: no fts Master Control Block at LB 5 (byte offset {}) ({e}), nor a backup at the end; run `fts -d {loc} format` first",
                        5 * LB
                    )
                };
                return Err(fail(Code::Layout, msg));
            }
            Err(e) => {
                return Err(fail(
                    Code::Layout,
                    format!("{loc}: unreadable fts layout: {e}{}", no_backup()),
                ))
            }
        }
    }
}
