//! The shared device as the session layer sees it: the layout and the
//! Process Id Table entry records.

use fts_blockdev::{BlockDevice, WriteMode};
use fts_layout::{Expect, Geometry, Mcb, PidEntry, SdtEntry, Stamp, LB, MCB_LB, RECORD_SIZE};

use crate::Error;

/// One Process Id Table slot as read from the device.
// An entry is read one at a time and moved rarely: boxing it would cost an
// allocation per read for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// A valid entry record (an all-zero record reads as a free entry).
    Entry(PidEntry),
    /// A record that fails validation: torn, corrupt, forged, or from
    /// another layout. Nobody can use the slot until it is freed (by the
    /// reaper once it stays so for a lease timeout, or `check --repair`).
    Damaged {
        /// The 1-based slot.
        slot: u32,
        /// The record's bytes as read.
        raw: Vec<u8>,
        /// The first check it failed.
        error: fts_layout::Error,
    },
}

impl Slot {
    /// The 1-based slot number.
    pub fn slot(&self) -> u32 {
        match self {
            Slot::Entry(e) => e.pro_process_id,
            Slot::Damaged { slot, .. } => *slot,
        }
    }
}

/// A handle on a formatted master device.
#[derive(Debug)]
pub struct Shared {
    dev: Box<dyn BlockDevice>,
    mcb: Mcb,
    geometry: Geometry,
    /// The Secondary Device Table, master first.
    sdt: Vec<SdtEntry>,
    /// Handles on devices 1.. of the layout, `None` until found
    /// ([`Shared::attach_secondaries`]).
    secondaries: Vec<Option<Box<dyn BlockDevice>>>,
}

impl Shared {
    /// Reads the Master Control Block and Secondary Device Table of `dev`.
    /// A primary that fails its checks is read from its backup at the end
    /// of the master (format v1.1); this then writes one warning line to
    /// standard error naming what was damaged and that `fts check
    /// --repair` rewrites it. Without a valid backup (or on a v1.0 layout)
    /// the primary's error is returned.
    pub fn open(mut dev: Box<dyn BlockDevice>) -> Result<Self, Error> {
        use fts_layout::check::{backup_location, damage_warning, master_records, Backups};
        let mut buf = vec![0u8; 3 * LB];
        dev.read_at(MCB_LB * LB as u64, &mut buf)?;
        let location = dev.location().to_string();
        let layout = |source| Error::Layout {
            location: location.clone(),
            source,
        };
        let records = match master_records(&buf, None) {
            Ok(r) => r,
            Err(first) => {
                // Only a damaged primary costs the extra read.
                let Some(at) = backup_location(&buf, dev.size_bytes()) else {
                    return Err(layout(first));
                };
                let mut backups = vec![0u8; fts_layout::BACKUP_LBS as usize * LB];
                if dev.read_at(at * LB as u64, &mut backups).is_err() {
                    return Err(layout(first));
                }
                let b = Backups {
                    lb: at,
                    bytes: &backups,
                };
                master_records(&buf, Some(b)).map_err(|_| layout(first))?
            }
        };
        if let Some(w) = damage_warning(&location, &records.damaged) {
            eprintln!("fts: {w}");
        }
        let mcb: Mcb = records.mcb;
        let sdt: Vec<SdtEntry> = records.sdt;
        let geometry = Geometry::from_mcb(&mcb, &sdt).map_err(layout)?;
        let secondaries = sdt.iter().skip(1).map(|_| None).collect();
        Ok(Shared {
            dev,
            mcb,
            geometry,
            sdt,
            secondaries,
        })
    }

    /// Finds the layout's secondary devices not found yet, by identity:
    /// each of `candidates`, then the path recorded at format, is opened
    /// with `open` and taken only if its LB 5 is a valid secondary copy of
    /// this layout's Master Control Block (`blk5_layout_uuid`) for that
    /// Secondary Device Table entry (`blk5_device_uuid`) and the device is
    /// not smaller than at format. A path is never trusted by itself.
    /// Returns what was found, e.g. `["secondary device 2: /dev/sdc"]`.
    pub fn attach_secondaries(
        &mut self,
        candidates: &[String],
        open: &mut dyn FnMut(&str) -> Option<Box<dyn BlockDevice>>,
    ) -> Vec<String> {
        let mut found = Vec::new();
        for (i, e) in self.sdt.iter().enumerate().skip(1) {
            if self.secondaries.get(i - 1).is_some_and(Option::is_some) {
                continue;
            }
            let paths = candidates
                .iter()
                .map(String::as_str)
                .chain(core::iter::once(e.sec_path.as_str()))
                .filter(|p| !p.is_empty());
            for path in paths {
                let Some(mut dev) = open(path) else {
                    continue;
                };
                let mut lb5 = vec![0u8; LB];
                if dev.read_at(MCB_LB * LB as u64, &mut lb5).is_err() {
                    continue;
                }
                let ours = match Mcb::decode(&lb5) {
                    Ok(m) => {
                        m.blk5_id == fts_layout::DeviceRole::Secondary
                            && m.blk5_layout_uuid == self.mcb.blk5_layout_uuid
                            && m.blk5_device_uuid == e.sec_dev_id
                    }
                    Err(_) => false,
                };
                if ours && dev.size_bytes() >= e.device_bytes {
                    found.push(format!("secondary device {}: {}", i + 1, dev.location()));
                    if let Some(slot) = self.secondaries.get_mut(i - 1) {
                        *slot = Some(dev);
                    }
                    break;
                }
            }
        }
        found
    }

    /// `Ok` when every secondary device of the layout is attached (the
    /// rings of every connection use every device), else which one is
    /// missing and what to do.
    pub fn require_secondaries(&self) -> Result<(), Error> {
        for (i, e) in self.sdt.iter().enumerate().skip(1) {
            if !self.secondaries.get(i - 1).is_some_and(Option::is_some) {
                return Err(Error::SecondaryMissing {
                    location: self.dev.location().to_string(),
                    device: i + 1,
                    id: e.sec_dev_id.to_string(),
                    recorded: e.sec_path.clone(),
                });
            }
        }
        Ok(())
    }

    /// New handles on the secondary devices for a ring port, device 1
    /// first (`None`: not attached).
    pub fn secondary_handles(&self) -> Result<Vec<Option<Box<dyn BlockDevice>>>, Error> {
        self.secondaries
            .iter()
            .map(|d| {
                d.as_ref()
                    .map(|d| d.reopen())
                    .transpose()
                    .map_err(Error::from)
            })
            .collect()
    }

    /// The Master Control Block.
    pub fn mcb(&self) -> &Mcb {
        &self.mcb
    }

    /// The layout geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The device location, for messages.
    pub fn location(&self) -> &str {
        self.dev.location()
    }

    /// A second handle on the same device (one per thread).
    pub fn reopen(&self) -> Result<Shared, Error> {
        Ok(Shared {
            dev: self.dev.reopen()?,
            mcb: self.mcb.clone(),
            geometry: self.geometry.clone(),
            sdt: self.sdt.clone(),
            secondaries: self.secondary_handles()?,
        })
    }

    /// The device, for the ring driver.
    pub fn device(&mut self) -> &mut dyn BlockDevice {
        self.dev.as_mut()
    }

    /// Reads one entry; an all-zero record reads as free. A record that
    /// fails validation is an [`Error::Layout`]; see [`Shared::read_slot`]
    /// to tell damage apart from I/O failure.
    pub fn read_entry(&mut self, slot: u32) -> Result<PidEntry, Error> {
        match self.read_slot(slot)? {
            Slot::Entry(e) => Ok(e),
            Slot::Damaged { error, .. } => Err(Error::Layout {
                location: self.dev.location().to_string(),
                source: error,
            }),
        }
    }

    /// Reads one slot: its entry, or what is wrong with its record.
    pub fn read_slot(&mut self, slot: u32) -> Result<Slot, Error> {
        let mut buf = vec![0u8; LB];
        self.dev
            .read_at(self.geometry.pid_entry_lb(slot) * LB as u64, &mut buf)?;
        Ok(self.decode(slot, &buf[..RECORD_SIZE]))
    }

    fn decode(&self, slot: u32, rec: &[u8]) -> Slot {
        match PidEntry::decode(rec, Expect::exact(self.mcb.layout_id(), slot)) {
            Ok(e) => Slot::Entry(e),
            Err(fts_layout::Error::Empty { .. }) => Slot::Entry(PidEntry::free(slot)),
            Err(error) => Slot::Damaged {
                slot,
                raw: rec.to_vec(),
                error,
            },
        }
    }

    /// Reads every slot in one I/O. A damaged record is returned as such,
    /// never as an error: one bad entry must not stop the others.
    pub fn read_slots(&mut self) -> Result<Vec<Slot>, Error> {
        let g = &self.geometry;
        let n = g.max_connections;
        let per = fts_layout::PID_ENTRY_LBS as usize * LB;
        let mut buf = vec![0u8; n as usize * per];
        self.dev.read_at(g.pit_ptr * LB as u64, &mut buf)?;
        Ok((1..=n)
            .map(|slot| {
                let off = (slot as usize - 1) * per;
                self.decode(slot, &buf[off..off + RECORD_SIZE])
            })
            .collect())
    }

    /// The valid entries of every slot (one I/O); damaged slots are left
    /// out (see [`Shared::read_slots`]).
    pub fn read_table(&mut self) -> Result<Vec<PidEntry>, Error> {
        Ok(self
            .read_slots()?
            .into_iter()
            .filter_map(|s| match s {
                Slot::Entry(e) => Some(e),
                Slot::Damaged { .. } => None,
            })
            .collect())
    }

    /// Writes one entry record (its LB holds nothing else), durably.
    /// Callers hold the Process Id Table lock.
    pub fn write_entry(&mut self, e: &PidEntry) -> Result<(), Error> {
        let mut buf = vec![0u8; LB];
        let stamp = Stamp::new(self.mcb.layout_id(), e.pro_process_id);
        buf[..RECORD_SIZE].copy_from_slice(&e.encode(stamp));
        let lb = self.geometry.pid_entry_lb(e.pro_process_id);
        self.dev.write_at(lb * LB as u64, &buf, WriteMode::Fua)?;
        Ok(())
    }
}
