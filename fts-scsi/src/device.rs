//! [`ScsiDevice`]: the `fts-blockdev` block-device trait over a SCSI
//! logical unit, with READ(16)/WRITE(16) (FUA for control records).
//!
//! What a shared LUN adds to a plain block device, and how it is handled:
//!
//! - **RESERVATION CONFLICT is "retry shortly".** While another host holds a
//!   SCSI-2 RESERVE(6) for its short Process Id Table update, every other
//!   nexus's READ and WRITE gets RESERVATION CONFLICT. A ring write must not
//!   fail for that, so commands are retried with a growing pause (1 ms up to
//!   50 ms) for up to [`IoPolicy::conflict_wait`]; only a conflict that lasts
//!   longer (a host holding the LU for good, or this host fenced by a
//!   PREEMPT) becomes an error.
//! - **UNIT ATTENTION** (a reset, changed mode parameters, preempted
//!   reservations) is reported once per nexus and the command is retried.
//!   The lock backends in `fts-lock` watch for the ones that matter to them.
//! - **A dropped connection** ([`Error::Disconnected`]) is reconnected once
//!   per command by the transport (same initiator name and ISID), which
//!   increments [`Transport::epoch`]; locks held at the old epoch see that
//!   and report themselves lost.
//! - **Identity** comes from VPD page 0x83 (falling back to the unit serial
//!   number), so every host can check that it sees the same LUN.
//!
//! One [`SharedTransport`] is one I_T nexus; [`BlockDevice::reopen`] shares it
//! (reservations belong to the nexus, and a second nexus of the same
//! process would be locked out by its own RESERVE).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use fts_blockdev::{BlockDevice, DeviceIdentity, IdentityKind, WriteMode};

use crate::cdb::{self, Cdb};
use crate::commands::{is_unsupported, Commands};
use crate::error::{Error, Result};
use crate::status::CommandResult;
use crate::transport::{DataBuffer, Transport};

/// One I_T nexus, shared by everything of one process that talks to one
/// LUN: the block device, its reopened handles and the lock backends.
///
/// Besides the transport it counts *fence events*: unit attentions saying
/// that this nexus lost reservations or registrations (29/xx power on or
/// reset, 2A/03 reservations preempted, 2A/04 reservations released, 2A/05
/// registrations preempted). Whoever consumes such an attention (the
/// device's retry loop, a lock backend) records it with
/// [`Nexus::note_sense`], so a lock held at the time can tell that it was
/// broken even if the attention was seen by another user of the nexus.
pub struct Nexus {
    transport: Mutex<Box<dyn Transport>>,
    fence_events: AtomicU64,
    lock_held: AtomicBool,
    /// [`Nexus::set_reserve_break`] in milliseconds; 0: never.
    reserve_break_ms: AtomicU64,
}

impl fmt::Debug for Nexus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nexus")
            .field("fence_events", &self.fence_events())
            .finish_non_exhaustive()
    }
}

impl Nexus {
    /// Wraps a transport for sharing.
    pub fn shared(transport: Box<dyn Transport>) -> SharedTransport {
        Arc::new(Nexus {
            transport: Mutex::new(transport),
            fence_events: AtomicU64::new(0),
            lock_held: AtomicBool::new(false),
            reserve_break_ms: AtomicU64::new(0),
        })
    }

    /// With SCSI-2 locking (RESERVE(6) held only around Process Id Table
    /// updates, which take milliseconds): a RESERVATION CONFLICT that
    /// lasts `after` on one command means the holder died or hung with the
    /// LU reserved. A crashed host's session, and its RESERVE(6), stay on
    /// the target until the target notices (no FIN ever came), so
    /// [`ScsiDevice`] then sends LOGICAL UNIT RESET, as a waiting SCSI-2
    /// lock does, and carries on. `None` (the default, and right for
    /// persistent reservations, which never block reads or registrants'
    /// writes) never resets.
    pub fn set_reserve_break(&self, after: Option<Duration>) {
        let ms = after.map_or(0, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.reserve_break_ms.store(ms, Ordering::SeqCst);
    }

    /// See [`Nexus::set_reserve_break`].
    pub fn reserve_break(&self) -> Option<Duration> {
        match self.reserve_break_ms.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Locks the transport. A panic in another thread while it held the
    /// transport leaves the transport itself intact (every command is
    /// self-contained), so a poisoned mutex is used as is.
    pub fn lock(&self) -> MutexGuard<'_, Box<dyn Transport>> {
        self.transport
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many fence events this nexus has seen.
    pub fn fence_events(&self) -> u64 {
        self.fence_events.load(Ordering::SeqCst)
    }

    /// Marks whether a table lock (a reservation) is held through this
    /// nexus; lock backends set it once they hold and clear it when they
    /// let go. While it is set, nothing sent through the nexus can
    /// legitimately get RESERVATION CONFLICT: one means the reservation was
    /// taken away (preempted, reset), so the device does not retry it.
    pub fn set_lock_held(&self, held: bool) {
        self.lock_held.store(held, Ordering::SeqCst);
    }

    /// Whether a table lock is held through this nexus.
    pub fn lock_held(&self) -> bool {
        self.lock_held.load(Ordering::SeqCst)
    }

    /// Records `sense` if it is a fence event; returns whether it was.
    pub fn note_sense(&self, sense: &crate::sense::Sense) -> bool {
        let fence = sense.key == crate::sense::SenseKey::UnitAttention
            && (sense.asc == 0x29 || (sense.asc == 0x2A && matches!(sense.ascq, 3..=5)));
        if fence {
            self.fence_events.fetch_add(1, Ordering::SeqCst);
        }
        fence
    }
}

/// A nexus shared by the device and the lock; see [`Nexus`].
pub type SharedTransport = Arc<Nexus>;

/// Locks a shared transport ([`Nexus::lock`]).
pub fn lock_transport(t: &SharedTransport) -> MutexGuard<'_, Box<dyn Transport>> {
    t.lock()
}

/// How [`ScsiDevice`] retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoPolicy {
    /// Timeout of each READ/WRITE command.
    pub io_timeout: Duration,
    /// How long a RESERVATION CONFLICT is retried before it is an error.
    pub conflict_wait: Duration,
    /// Largest transfer per command, in bytes.
    pub max_transfer: usize,
}

impl Default for IoPolicy {
    fn default() -> Self {
        Self {
            io_timeout: Duration::from_secs(30),
            conflict_wait: Duration::from_secs(60),
            max_transfer: 1 << 20,
        }
    }
}

/// A SCSI logical unit as an fts block device.
pub struct ScsiDevice {
    transport: SharedTransport,
    location: String,
    identity: DeviceIdentity,
    lba_size: u32,
    size: u64,
    policy: IoPolicy,
    /// Set once the device refused FUA (LIO does unless write-back with
    /// emulate_fua_write); FUA writes are then a WRITE plus SYNCHRONIZE
    /// CACHE.
    no_fua: Arc<AtomicBool>,
}

impl fmt::Debug for ScsiDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScsiDevice")
            .field("location", &self.location)
            .field("identity", &self.identity.id)
            .field("lba_size", &self.lba_size)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl ScsiDevice {
    /// Opens the logical unit behind `transport`: clears pending unit
    /// attentions, checks that it is a disk, and reads its capacity and
    /// identity.
    pub fn open(transport: Box<dyn Transport>) -> Result<Self> {
        Self::with_shared(Nexus::shared(transport), IoPolicy::default())
    }

    /// Like [`ScsiDevice::open`], on a transport that is (or will be)
    /// shared with a lock backend.
    pub fn with_shared(transport: SharedTransport, policy: IoPolicy) -> Result<Self> {
        let (location, identity, lba_size, size) = {
            let mut t = lock_transport(&transport);
            let location = t.target().to_owned();
            match t.clear_unit_attentions() {
                // A preemption or reset reported here concerns the whole
                // nexus (other users of it may hold a lock): record it.
                Ok(seen) => {
                    for sense in &seen {
                        transport.note_sense(sense);
                    }
                }
                // Another host holding RESERVE(6) is normal on a shared LUN.
                Err(Error::ReservationConflict) => {}
                Err(e) => return Err(e),
            }
            let inq = t.inquiry()?;
            if !inq.is_disk() {
                return Err(Error::Connect {
                    target: location,
                    detail: format!(
                        "not a connected disk (peripheral qualifier {}, device type 0x{:02x}: {} {})",
                        inq.peripheral_qualifier,
                        inq.peripheral_device_type,
                        inq.vendor,
                        inq.product
                    ),
                });
            }
            let cap = t.read_capacity16()?;
            let size = cap.size_bytes().ok_or_else(|| Error::BadResponse {
                what: "READ CAPACITY(16) data",
                detail: "capacity overflows 64 bits".into(),
            })?;
            let id = match t.device_identification().map(|d| d.preferred_id()) {
                Ok(Some(id)) => id,
                _ => match t.unit_serial_number() {
                    Ok(sn) if !sn.serial.is_empty() => {
                        format!("t10.{}.{}.{}", inq.vendor, inq.product, sn.serial)
                    }
                    _ => {
                        return Err(Error::Connect {
                            target: location,
                            detail: "the logical unit reports no identifier (VPD 0x83 or 0x80), \
                                     so hosts cannot prove they share it"
                                .into(),
                        })
                    }
                },
            };
            (
                location,
                DeviceIdentity {
                    kind: IdentityKind::Scsi,
                    id,
                },
                cap.block_length,
                size,
            )
        };
        if lba_size == 0 || !lba_size.is_power_of_two() {
            return Err(Error::BadResponse {
                what: "READ CAPACITY(16) data",
                detail: format!("logical block length {lba_size} is not a power of two"),
            });
        }
        Ok(Self {
            transport,
            location,
            identity,
            lba_size,
            size,
            policy,
            no_fua: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The transport (the I_T nexus) this device sends its commands on;
    /// hand it to a lock backend so the lock and the table writes share
    /// the nexus.
    pub fn transport(&self) -> SharedTransport {
        Arc::clone(&self.transport)
    }

    /// The retry policy.
    pub fn policy(&self) -> IoPolicy {
        self.policy
    }

    /// Runs one command with the retries described in the module docs.
    ///
    /// RESERVATION CONFLICT is retried only while nothing suggests that
    /// this nexus was fenced: while this process holds the table lock
    /// through the nexus, or once a fence event (a preemption, a reset) was
    /// seen or the connection re-established during this command, a
    /// conflict is final. Otherwise a write from a preempted holder could
    /// wait out its successor's update and land on top of it.
    fn run(&self, cdb: &Cdb, mut data: DataBuffer<'_>) -> Result<CommandResult> {
        let start = Instant::now();
        let mut fences_at_start = self.transport.fence_events();
        // Since when this command has met RESERVATION CONFLICT without a
        // break, and whether the last thing it did was reset the LU itself.
        let mut blocked_since = start;
        let mut own_reset = false;
        let mut pause = Duration::from_millis(1);
        let mut attentions = 0;
        let mut reconnects = 0;
        loop {
            let outcome = {
                let mut t = lock_transport(&self.transport);
                let r = t.execute(cdb, data.reborrow(), self.policy.io_timeout);
                if let Err(e) = &r {
                    if e.is_disconnected() && reconnects < 2 {
                        reconnects += 1;
                        t.reconnect()?;
                        continue;
                    }
                }
                r?
            };
            if outcome.is_reservation_conflict() {
                let fenced =
                    self.transport.fence_events() != fences_at_start || self.transport.lock_held();
                if fenced || reconnects > 0 {
                    return Err(Error::Transport {
                        target: self.location.clone(),
                        opcode: cdb.opcode(),
                        detail: if fenced {
                            "RESERVATION CONFLICT after this host's reservation was preempted or \
                             reset: fenced, not retried"
                                .into()
                        } else {
                            "RESERVATION CONFLICT after the connection was re-established \
                             (the old session's reservation or registration is gone): not retried"
                                .into()
                        },
                    });
                }
                if start.elapsed() >= self.policy.conflict_wait {
                    return Err(Error::ReservationConflict);
                }
                if let Some(after) = self.transport.reserve_break() {
                    if blocked_since.elapsed() >= after {
                        eprintln!(
                            "fts-scsi: {}: RESERVATION CONFLICT for more than {after:?}: a RESERVE(6) \
                             held that long outlived any table update (its host died or hung); \
                             sending LOGICAL UNIT RESET",
                            self.location
                        );
                        lock_transport(&self.transport).reset_lun()?;
                        blocked_since = Instant::now();
                        own_reset = true;
                        continue;
                    }
                }
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
                continue;
            }
            if outcome.is_unit_attention() && attentions < 8 {
                if let Some(sense) = &outcome.sense {
                    self.transport.note_sense(sense);
                }
                // The reset this command sent itself fences nobody here
                // (it holds no lock: otherwise the conflict was final).
                if std::mem::take(&mut own_reset) {
                    fences_at_start = self.transport.fence_events();
                }
                attentions += 1;
                continue;
            }
            return outcome.into_result();
        }
    }

    fn check_range(
        &self,
        op: &'static str,
        offset: u64,
        len: usize,
    ) -> Result<(), fts_blockdev::Error> {
        let bs = u64::from(self.lba_size);
        if offset % bs != 0 || len as u64 % bs != 0 {
            return Err(fts_blockdev::Error::Misaligned {
                op,
                location: self.location.clone(),
                offset,
                len,
                block_size: self.lba_size,
            });
        }
        let past_end = match offset.checked_add(len as u64) {
            Some(end) => end > self.size,
            None => true,
        };
        if past_end {
            return Err(fts_blockdev::Error::OutOfRange {
                op,
                location: self.location.clone(),
                offset,
                len,
                size: self.size,
            });
        }
        Ok(())
    }

    fn backend_error(
        &self,
        op: &'static str,
        offset: u64,
        len: usize,
        e: Error,
    ) -> fts_blockdev::Error {
        let e = match e {
            Error::ReservationConflict => Error::Transport {
                target: self.location.clone(),
                opcode: 0,
                detail: format!(
                    "RESERVATION CONFLICT for more than {:?}: another host holds the logical \
                     unit reserved, or this host's registration was preempted (fenced)",
                    self.policy.conflict_wait
                ),
            },
            other => other,
        };
        fts_blockdev::Error::Backend {
            op,
            location: self.location.clone(),
            offset,
            len,
            source: Box::new(e),
        }
    }

    /// Largest transfer per command, whole blocks.
    fn chunk(&self) -> usize {
        let bs = self.lba_size as usize;
        (self.policy.max_transfer / bs).max(1) * bs
    }

    fn write_chunks(&self, offset: u64, buf: &[u8], fua: bool) -> Result<()> {
        let bs = u64::from(self.lba_size);
        for (i, piece) in buf.chunks(self.chunk()).enumerate() {
            let off = offset + (i * self.chunk()) as u64;
            let blocks = (piece.len() as u64 / bs) as u32;
            let cdb = cdb::write16(off / bs, blocks, fua);
            let r = self.run(&cdb, DataBuffer::ToDevice(piece))?;
            if r.residual != 0 {
                return Err(short(&self.location, &cdb, r.residual));
            }
        }
        Ok(())
    }
}

fn short(location: &str, cdb: &Cdb, residual: u32) -> Error {
    Error::Transport {
        target: location.to_owned(),
        opcode: cdb.opcode(),
        detail: format!("{residual} bytes were not transferred"),
    }
}

impl BlockDevice for ScsiDevice {
    fn block_size(&self) -> u32 {
        self.lba_size
    }

    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), fts_blockdev::Error> {
        self.check_range("read", offset, buf.len())?;
        let bs = u64::from(self.lba_size);
        let chunk = self.chunk();
        for (i, piece) in buf.chunks_mut(chunk).enumerate() {
            let off = offset + (i * chunk) as u64;
            let len = piece.len();
            let blocks = (len as u64 / bs) as u32;
            let cdb = cdb::read16(off / bs, blocks, false);
            let r = self
                .run(&cdb, DataBuffer::FromDevice(piece))
                .map_err(|e| self.backend_error("read", off, len, e))?;
            if r.residual != 0 {
                let e = short(&self.location, &cdb, r.residual);
                return Err(self.backend_error("read", off, len, e));
            }
        }
        Ok(())
    }

    fn write_at(
        &mut self,
        offset: u64,
        buf: &[u8],
        mode: WriteMode,
    ) -> Result<(), fts_blockdev::Error> {
        self.check_range("write", offset, buf.len())?;
        let fua = mode == WriteMode::Fua;
        let err = |e| self.backend_error("write", offset, buf.len(), e);
        if fua && self.no_fua.load(Ordering::Relaxed) {
            self.write_chunks(offset, buf, false).map_err(err)?;
            return self.flush();
        }
        match self.write_chunks(offset, buf, fua) {
            Err(e) if fua && is_unsupported(&e) => {
                // The target refuses FUA (LIO unless write-back with
                // emulate_fua_write): write, then synchronize.
                self.no_fua.store(true, Ordering::Relaxed);
                self.write_chunks(offset, buf, false).map_err(err)?;
                self.flush()
            }
            r => r.map_err(err),
        }
    }

    fn flush(&mut self) -> Result<(), fts_blockdev::Error> {
        let cdb = cdb::synchronize_cache16(0, 0, false);
        self.run(&cdb, DataBuffer::None)
            .map(drop)
            .map_err(|e| self.backend_error("flush", 0, 0, e))
    }

    fn reopen(&self) -> Result<Box<dyn BlockDevice>, fts_blockdev::Error> {
        Ok(Box::new(ScsiDevice {
            transport: Arc::clone(&self.transport),
            location: self.location.clone(),
            identity: self.identity.clone(),
            lba_size: self.lba_size,
            size: self.size,
            policy: self.policy,
            no_fua: Arc::clone(&self.no_fua),
        }))
    }

    fn location(&self) -> &str {
        &self.location
    }
}
