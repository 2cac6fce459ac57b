//! Opening a device and reading its fts layout, with messages that say what
//! and where for every way this can fail.

use anyhow::{Context, Result};
use fts_blockdev::{BlockDevice, OpenOptions};
use fts_layout::{check, Error as LayoutError, Geometry, Mcb, SdtEntry, LB};

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
    Ok((dev, None))
}

/// A master device's layout as read from disk.
#[derive(Debug)]
pub struct Loaded {
    /// The Master Control Block.
    pub mcb: Mcb,
    /// Secondary Device Table entries that decoded, master first.
    pub sdt: Vec<SdtEntry>,
    /// The geometry rebuilt from the MCB and SDT, or why it could not be
    /// (a damaged Secondary Device Table; `problems` then names it).
    pub geometry: Result<Geometry, String>,
    /// Bytes from LB 0 to the end of the pointer tables.
    pub control: Vec<u8>,
    /// Every problem `check` found in them.
    pub problems: Vec<check::Problem>,
}

fn read(dev: &mut dyn BlockDevice, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    dev.read_at(0, &mut buf)?;
    Ok(buf)
}

/// Reads and checks the control area of a master device.
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
    let mut control = read(dev, first)?;
    let mut tries = 0;
    loop {
        match check::check_master(&control, size) {
            Ok((mcb, sdt, problems)) => {
                let geometry = Geometry::from_mcb(&mcb, &sdt).map_err(|e| e.to_string());
                if let Err(e) = &geometry {
                    if problems.is_empty() {
                        return Err(fail(
                            Code::Layout,
                            format!("{loc}: the Master Control Block describes an impossible layout: {e}"),
                        ));
                    }
                }
                return Ok(Loaded {
                    mcb,
                    sdt,
                    geometry,
                    control,
                    problems,
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
                let aligned = need.div_ceil(dev.block_size() as usize) * dev.block_size() as usize;
                control = read(dev, aligned)?;
            }
            Err(e @ LayoutError::Empty { .. }) => {
                return Err(fail(
                    Code::Layout,
                    format!(
                        "{loc} is not formatted: no fts Master Control Block at LB 5 (byte offset {}) ({e}); run `fts -d {loc} format` first",
                        5 * LB
                    ),
                ))
            }
            Err(e) => {
                return Err(fail(
                    Code::Layout,
                    format!("{loc}: unreadable fts layout: {e}"),
                ))
            }
        }
    }
}
