//! SCSI lock backends: RESERVE(6)/RELEASE(6), persistent reservations and
//! COMPARE AND WRITE, all keeping fts's lock record (LB 6, `FLCK`, see
//! `docs/FORMAT.md`) up to date so that waiters can tell a live holder from
//! a dead one.
//!
//! # How each backend works
//!
//! * **scsi2** — RESERVE(6) of the whole logical unit, as in the patent.
//!   While it is held every other nexus's READ and WRITE gets RESERVATION
//!   CONFLICT, which `fts-scsi`'s device retries shortly; the lock is held
//!   only for the table's read-modify-write. A dead holder's session drop
//!   releases the reservation on the target; a holder that is alive but
//!   stuck keeps everyone out, so a waiter that has seen nothing but
//!   conflicts for the lock timeout stored in the Master Control Block
//!   sends a LOGICAL UNIT RESET.
//! * **pr** — SCSI-3 persistent reservation of type 5, Write Exclusive –
//!   Registrants Only. A host registers its key (derived from its
//!   initiator name) for the duration of one locked update, reserves,
//!   updates, releases and unregisters, so nothing is left on the LU
//!   between commands. While the reservation is held, registered hosts' I/O
//!   flows and only a second RESERVE conflicts; unregistered hosts' writes
//!   conflict and are retried shortly. The holder writes the lock record
//!   (holder, generation, counter); a waiter that sees the record *and* the
//!   reservation holder unchanged for longer than the lock timeout treats
//!   the holder as dead and preempts its key (PREEMPT AND ABORT where the
//!   target has it, as fence_scsi does; PREEMPT otherwise, e.g. on tgt).
//!   Progress is judged on the waiter's own clock; clocks are never
//!   compared between hosts.
//! * **caw** — COMPARE AND WRITE of the lock record: compare the free
//!   record read a moment ago, write the held one; a miscompare means
//!   someone else got there first. A held record that stops changing for
//!   the lock timeout is taken over the same way. Not every target has
//!   COMPARE AND WRITE (tgt does not, LIO does): [`ScsiLocks::new`] probes
//!   and [`ScsiLocks::auto`] falls back.
//!
//! All handles made by one [`ScsiLocks`] share one in-process mutex, because
//! a SCSI reservation belongs to the I_T nexus, and all threads of a process
//! share its nexus: without the mutex two threads could both "hold" it.
//!
//! A lock taken at one transport epoch is lost if the epoch changes (the
//! iSCSI connection dropped and was re-established): the target released
//! the RESERVE(6), and nothing done since is covered by it.
//! [`Release::still_held`] and [`Release::release`] then report
//! [`Error::Lost`].

use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fts_layout::{Expect, LockRecord, Stamp, LOCK_FREE, LOCK_HELD, RECORD_SIZE};
use fts_scsi::pr::{PrOutParams, PrOutServiceAction, PrType};
use fts_scsi::{
    cdb, is_unsupported, lock_transport, Commands, DataBuffer, SharedTransport, Transport,
};
use uuid::Uuid;

use crate::{Backoff, Error, LockGuard, LockKind, Release, TableLock};

/// Timeout of the lock's own SCSI commands.
const CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// The reservation type fts uses: Write Exclusive – Registrants Only.
const PR_TYPE: PrType = PrType::WriteExclusiveRegistrantsOnly;

/// Who takes the lock, as written into the lock record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Host id.
    pub host: Uuid,
    /// The fts `--name`.
    pub name: String,
    /// Process id.
    pub pid: u32,
}

/// Where the lock record is and how long a holder may make no progress.
#[derive(Debug, Clone)]
pub struct ScsiLockConfig {
    /// The nexus shared with the device (see `fts_scsi::ScsiDevice::transport`).
    pub transport: SharedTransport,
    /// Byte offset of the lock record (`LOCK_LB × LB`).
    pub record_offset: u64,
    /// Stamp for the lock record of this layout (`Mcb::stamp_record(0)`).
    pub stamp: Stamp,
    /// Expectation for decoding it (`Mcb::expect_record(0)`).
    pub expect: Expect,
    /// The Master Control Block's lock timeout: a holder whose record makes
    /// no progress this long is dead.
    pub lock_timeout: Duration,
    /// Who we are.
    pub holder: Holder,
    /// A local device node (`/dev/sdX`, `/dev/sgN`) to also take an OFD
    /// lock on. Over SG_IO every process of a host shares the kernel's I_T
    /// nexus, and SCSI lets one nexus "reserve" what it already holds, so
    /// processes of one host must also exclude each other locally. `None`
    /// for iSCSI, where each process is its own nexus.
    pub host_lock: Option<std::path::PathBuf>,
}

/// Which SCSI mechanism a [`ScsiLocks`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScsiMethod {
    /// RESERVE(6)/RELEASE(6).
    Reserve6,
    /// Persistent reservation, type 5.
    Persistent,
    /// COMPARE AND WRITE on the lock record.
    CompareAndWrite,
}

impl ScsiMethod {
    /// The `--lock` kind.
    pub fn kind(self) -> LockKind {
        match self {
            ScsiMethod::Reserve6 => LockKind::Scsi2,
            ScsiMethod::Persistent => LockKind::Pr,
            ScsiMethod::CompareAndWrite => LockKind::Caw,
        }
    }
}

/// The in-process half of the lock.
#[derive(Debug, Default)]
struct Local {
    held: Mutex<bool>,
    cv: Condvar,
}

impl Local {
    fn acquire(&self, deadline: Instant) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while *held {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            held = match self.cv.wait_timeout(held, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        *held = true;
        true
    }

    fn release(&self) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.cv.notify_one();
    }
}

/// A factory of lock handles on one LU for one process; see the module
/// docs.
#[derive(Debug, Clone)]
pub struct ScsiLocks {
    method: ScsiMethod,
    cfg: Arc<Config>,
    local: Arc<Local>,
}

#[derive(Debug)]
struct Config {
    user: ScsiLockConfig,
    key: u64,
    lba_size: u32,
    location: String,
}

impl ScsiLocks {
    /// A lock factory using `method`. Fails with [`Error::Unsupported`]
    /// when the device lacks it (probed: REPORT CAPABILITIES for `Persistent`,
    /// a harmless COMPARE AND WRITE for `CompareAndWrite`).
    pub fn new(method: ScsiMethod, cfg: ScsiLockConfig) -> Result<Self, Error> {
        let locks = Self::unprobed(method, cfg)?;
        if let Some(reason) = locks.probe()? {
            return Err(Error::Unsupported {
                kind: method.kind(),
                location: locks.cfg.location.clone(),
                reason,
            });
        }
        locks.arm_reserve_break();
        Ok(locks)
    }

    /// With RESERVE(6) locking, every command of the nexus (ring I/O, table
    /// reads) breaks a RESERVE(6) that blocks it as long as a lock waiter
    /// would ([`fts_scsi::Nexus::set_reserve_break`]): three lock timeouts.
    fn arm_reserve_break(&self) {
        let after = (self.method == ScsiMethod::Reserve6).then(|| self.cfg.user.lock_timeout * 3);
        self.cfg.user.transport.set_reserve_break(after);
    }

    /// The best method the device supports, in the order persistent
    /// reservations, COMPARE AND WRITE, RESERVE(6); and why it was chosen.
    pub fn auto(cfg: ScsiLockConfig) -> Result<(Self, String), Error> {
        // One READ CAPACITY for all candidates: they differ only in method.
        let base = Self::unprobed(ScsiMethod::Reserve6, cfg)?;
        let mut skipped = Vec::new();
        for method in [ScsiMethod::Persistent, ScsiMethod::CompareAndWrite] {
            let locks = ScsiLocks {
                method,
                ..base.clone()
            };
            match locks.probe()? {
                None => {
                    let why = if skipped.is_empty() {
                        "the device supports it".to_string()
                    } else {
                        skipped.join("; ")
                    };
                    return Ok((locks, why));
                }
                Some(reason) => skipped.push(format!("{} unavailable: {reason}", method.kind())),
            }
        }
        base.arm_reserve_break();
        Ok((base, skipped.join("; ")))
    }

    fn unprobed(method: ScsiMethod, user: ScsiLockConfig) -> Result<Self, Error> {
        let (key, lba_size, location) = {
            let mut t = lock_transport(&user.transport);
            let location = t.target().to_owned();
            let cap = t
                .read_capacity16()
                .map_err(|e| scsi_err(&location, "READ CAPACITY(16)", e))?;
            (
                fts_scsi::initiator::pr_key_for(&t.initiator()),
                cap.block_length.max(1),
                location,
            )
        };
        Ok(Self {
            method,
            cfg: Arc::new(Config {
                user,
                key,
                lba_size,
                location,
            }),
            local: Arc::new(Local::default()),
        })
    }

    /// `Some(reason)` when the device does not support the method.
    fn probe(&self) -> Result<Option<&'static str>, Error> {
        let c = &self.cfg;
        match self.method {
            ScsiMethod::Reserve6 => Ok(None),
            ScsiMethod::Persistent => {
                let r = lock_transport(&c.user.transport).pr_report_capabilities();
                match r {
                    Ok(caps) if caps.supports(PR_TYPE) == Some(false) => Ok(Some(
                        "the device does not offer persistent reservation type 5",
                    )),
                    Ok(_) => Ok(None),
                    Err(e) if is_unsupported(&e) => {
                        Ok(Some("the device does not support PERSISTENT RESERVE IN"))
                    }
                    Err(e) => Err(scsi_err(&c.location, "PR IN REPORT CAPABILITIES", e)),
                }
            }
            ScsiMethod::CompareAndWrite => {
                // Compare and write the record with what it holds now: a
                // no-op where supported (or a miscompare if it just changed).
                let cur = c.read_record()?;
                let mut both = cur.clone();
                both.extend_from_slice(&cur);
                let r = lock_transport(&c.user.transport).compare_and_write(
                    c.record_lba(),
                    c.record_blocks(),
                    &both,
                );
                match r {
                    Ok(_) => Ok(None),
                    Err(e) if is_unsupported(&e) => {
                        Ok(Some("the device does not support COMPARE AND WRITE"))
                    }
                    Err(e) => Err(scsi_err(&c.location, "COMPARE AND WRITE", e)),
                }
            }
        }
    }

    /// The method in use.
    pub fn method(&self) -> ScsiMethod {
        self.method
    }

    /// The reservation key this process registers (persistent
    /// reservations).
    pub fn key(&self) -> u64 {
        self.cfg.key
    }

    /// The mechanism, for messages (as [`TableLock::describe`] gives it).
    pub fn describe(&self) -> String {
        match self.method {
            ScsiMethod::Reserve6 => {
                "scsi2 (RESERVE(6)/RELEASE(6) of the LU, lock record at LB 6)".into()
            }
            ScsiMethod::Persistent => format!(
                "pr (persistent reservation type 5 Write Exclusive - Registrants Only, key 0x{:016x}, lock record at LB 6)",
                self.cfg.key
            ),
            ScsiMethod::CompareAndWrite => {
                "caw (COMPARE AND WRITE of the lock record at LB 6)".into()
            }
        }
    }

    /// A lock handle (one per thread).
    pub fn handle(&self) -> Result<ScsiLock, Error> {
        let host = match &self.cfg.user.host_lock {
            Some(path) => Some(crate::OfdLock::open(path)?),
            None => None,
        };
        Ok(ScsiLock {
            locks: self.clone(),
            held: None,
            acquired_epoch: 0,
            host,
        })
    }
}

impl Config {
    fn record_lba(&self) -> u64 {
        self.user.record_offset / u64::from(self.lba_size)
    }

    fn record_blocks(&self) -> u8 {
        (RECORD_SIZE as u32).div_ceil(self.lba_size).max(1) as u8
    }

    fn record_bytes(&self) -> usize {
        usize::from(self.record_blocks()) * self.lba_size as usize
    }

    /// Executes a command on the shared nexus with [`Config::cmd`]'s
    /// handling; `Ok(None)` for RESERVATION CONFLICT.
    fn exec(
        &self,
        what: &'static str,
        cdb: &fts_scsi::Cdb,
        mut data: DataBuffer<'_>,
    ) -> Result<Option<fts_scsi::CommandResult>, Error> {
        self.cmd(what, |t| {
            let r = t.execute(cdb, data.reborrow(), CMD_TIMEOUT)?;
            if r.is_reservation_conflict() {
                return Ok(None);
            }
            // CHECK CONDITION (a unit attention included) becomes an error
            // here, which `cmd` retries or reports.
            r.into_result().map(Some)
        })
    }

    /// Runs a command on the shared nexus: unit attentions are recorded as
    /// fence events where they are ([`fts_scsi::Nexus::note_sense`]) and
    /// retried (up to 8), a dropped connection is re-established once (same
    /// ISID; the epoch changes, so a lock held across it reports itself
    /// lost).
    fn cmd<T>(
        &self,
        what: &'static str,
        mut f: impl FnMut(&mut Box<dyn Transport>) -> fts_scsi::Result<T>,
    ) -> Result<T, Error> {
        let mut t = lock_transport(&self.user.transport);
        let mut reconnected = false;
        let mut attentions = 0;
        loop {
            match f(&mut t) {
                Err(fts_scsi::Error::CheckCondition { sense })
                    if sense.is_unit_attention() && attentions < 8 =>
                {
                    self.user.transport.note_sense(&sense);
                    attentions += 1;
                }
                Err(e) if e.is_disconnected() && !reconnected => {
                    reconnected = true;
                    t.reconnect()
                        .map_err(|e| scsi_err(&self.location, what, e))?;
                }
                r => return r.map_err(|e| scsi_err(&self.location, what, e)),
            }
        }
    }

    /// The raw lock-record blocks; `Err(Busy)`-like `Ok(None)` never: a
    /// conflict is returned as [`Error::Scsi`] with RESERVATION CONFLICT.
    fn read_record(&self) -> Result<Vec<u8>, Error> {
        self.try_read_record()?.ok_or_else(|| {
            scsi_err(
                &self.location,
                "READ(16) of the lock record",
                fts_scsi::Error::ReservationConflict,
            )
        })
    }

    /// `Ok(None)` when the read got RESERVATION CONFLICT.
    fn try_read_record(&self) -> Result<Option<Vec<u8>>, Error> {
        let mut buf = vec![0u8; self.record_bytes()];
        let cdb = cdb::read16(self.record_lba(), u32::from(self.record_blocks()), false);
        Ok(self
            .exec(
                "READ(16) of the lock record",
                &cdb,
                DataBuffer::FromDevice(&mut buf),
            )?
            .map(|_| buf))
    }

    fn write_record(&self, rec: &LockRecord) -> Result<bool, Error> {
        let buf = self.encode(rec);
        let cdb = cdb::write16(self.record_lba(), u32::from(self.record_blocks()), true);
        Ok(self
            .exec(
                "WRITE(16) of the lock record",
                &cdb,
                DataBuffer::ToDevice(&buf),
            )?
            .is_some())
    }

    fn encode(&self, rec: &LockRecord) -> Vec<u8> {
        let mut buf = vec![0u8; self.record_bytes()];
        buf[..RECORD_SIZE].copy_from_slice(&rec.encode(self.user.stamp));
        buf
    }

    fn decode(&self, raw: &[u8]) -> Option<LockRecord> {
        LockRecord::decode(raw.get(..RECORD_SIZE)?, self.user.expect).ok()
    }

    fn mine(&self, generation: u64, counter: u64) -> LockRecord {
        LockRecord {
            state: LOCK_HELD,
            generation,
            counter,
            timestamp: now_ns(),
            holder_host: self.user.holder.host,
            holder_name: self.user.holder.name.clone(),
            holder_key: self.key,
            holder_pid: self.user.holder.pid,
        }
    }

    fn pr(&self, action: PrOutServiceAction, ty: Option<PrType>, sark: u64) -> Result<bool, Error> {
        let params = PrOutParams {
            reservation_key: if action == PrOutServiceAction::RegisterAndIgnoreExistingKey {
                0
            } else {
                self.key
            },
            service_action_reservation_key: sark,
            ..PrOutParams::default()
        };
        let cdb = cdb::persistent_reserve_out(action, ty);
        Ok(self
            .exec(
                "PERSISTENT RESERVE OUT",
                &cdb,
                DataBuffer::ToDevice(&params.to_bytes()),
            )?
            .is_some())
    }

    fn describe_holder(&self, raw: Option<&[u8]>) -> String {
        match raw.and_then(|r| self.decode(r)) {
            Some(r) if r.state == LOCK_HELD => format!(
                "{} (pid {}, host {}, generation {})",
                r.holder_name, r.holder_pid, r.holder_host, r.generation
            ),
            _ => "an unknown holder".into(),
        }
    }
}

/// What a waiter saw of the holder; unchanged for the lock timeout means
/// the holder is dead.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    /// The record (and, for PR, the reservation holder's key).
    Seen(Vec<u8>, u64),
    /// Nothing could be read (scsi2: the reservation blocks reads).
    Unreadable,
}

/// What one attempt gave.
enum Attempt {
    Acquired { generation: u64 },
    Busy(Progress),
}

/// One lock handle; see [`ScsiLocks::handle`].
pub struct ScsiLock {
    locks: ScsiLocks,
    held: Option<Held>,
    /// The host-local OFD lock (see [`ScsiLockConfig::host_lock`]).
    host: Option<crate::OfdLock>,
    /// The transport epoch when the current acquisition started.
    acquired_epoch: u64,
}

#[derive(Debug)]
struct Held {
    epoch: u64,
    /// The nexus's fence-event count when the lock was taken.
    fences: u64,
    generation: u64,
    /// The counter last written to the lock record; advanced by every
    /// [`Release::still_held`], so waiters see a live holder make progress.
    counter: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for ScsiLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScsiLock")
            .field("method", &self.locks.method)
            .field("location", &self.locks.cfg.location)
            .field("held", &self.held)
            .finish()
    }
}

impl ScsiLock {
    fn cfg(&self) -> &Config {
        &self.locks.cfg
    }

    fn epoch(&self) -> u64 {
        lock_transport(&self.cfg().user.transport).epoch()
    }

    fn attempt(&self) -> Result<Attempt, Error> {
        let c = self.cfg();
        match self.locks.method {
            ScsiMethod::Reserve6 => {
                if c.exec("RESERVE(6)", &cdb::reserve6(), DataBuffer::None)?
                    .is_some()
                {
                    let generation = next_generation(c, c.try_read_record()?.as_deref());
                    return Ok(Attempt::Acquired { generation });
                }
                let seen = c.try_read_record()?;
                Ok(Attempt::Busy(match seen {
                    Some(raw) => Progress::Seen(raw, 0),
                    None => Progress::Unreadable,
                }))
            }
            ScsiMethod::Persistent => {
                c.pr(
                    PrOutServiceAction::RegisterAndIgnoreExistingKey,
                    None,
                    c.key,
                )?;
                if c.pr(PrOutServiceAction::Reserve, Some(PR_TYPE), 0)? {
                    let generation = next_generation(c, c.try_read_record()?.as_deref());
                    return Ok(Attempt::Acquired { generation });
                }
                let raw = c.read_record()?;
                let holder = self.reservation_holder()?;
                let this_process = c.decode(&raw).is_some_and(|r| {
                    r.state == LOCK_HELD
                        && r.holder_key == c.key
                        && r.holder_pid == c.user.holder.pid
                        && r.holder_host == c.user.holder.host
                });
                if holder == Some(c.key) && this_process {
                    // Our own key holds it and the record names this very
                    // process, which does not hold it (the in-process mutex
                    // is ours): an orphan of an earlier session of this
                    // process, whose connection dropped while it held the
                    // lock (see `clear_key`). Preempting our own key takes
                    // its reservation over. Anything else with our key (a
                    // process that died, or one misconfigured with our
                    // initiator name) is judged by its progress like any
                    // other holder.
                    c.pr(PrOutServiceAction::Preempt, Some(PR_TYPE), c.key)?;
                    if c.pr(PrOutServiceAction::Reserve, Some(PR_TYPE), 0)? {
                        let generation = next_generation(c, Some(&raw));
                        return Ok(Attempt::Acquired { generation });
                    }
                }
                Ok(Attempt::Busy(Progress::Seen(raw, holder.unwrap_or(0))))
            }
            ScsiMethod::CompareAndWrite => {
                let raw = c.read_record()?;
                if c.decode(&raw).is_some_and(|r| r.state == LOCK_HELD) {
                    return Ok(Attempt::Busy(Progress::Seen(raw, 0)));
                }
                let generation = next_generation(c, Some(&raw));
                if self.caw(&raw, &c.mine(generation, 0))? {
                    return Ok(Attempt::Acquired { generation });
                }
                Ok(Attempt::Busy(Progress::Seen(c.read_record()?, 0)))
            }
        }
    }

    fn caw(&self, expected: &[u8], new: &LockRecord) -> Result<bool, Error> {
        let c = self.cfg();
        let mut both = expected.to_vec();
        both.extend_from_slice(&c.encode(new));
        c.cmd("COMPARE AND WRITE of the lock record", |t| {
            t.compare_and_write(c.record_lba(), c.record_blocks(), &both)
        })
    }

    fn reservation_holder(&self) -> Result<Option<u64>, Error> {
        let c = self.cfg();
        let r = c.cmd("PR IN READ RESERVATION", |t| t.pr_read_reservation())?;
        Ok(r.reservation.map(|r| r.key))
    }

    /// Breaks a holder that made no progress for the lock timeout.
    fn break_holder(&self, seen: &Progress) -> Result<Option<u64>, Error> {
        let c = self.cfg();
        let raw = match seen {
            Progress::Seen(raw, _) => Some(raw.as_slice()),
            Progress::Unreadable => None,
        };
        let who = c.describe_holder(raw);
        match self.locks.method {
            ScsiMethod::Reserve6 => {
                eprintln!(
                    "fts-lock: {}: RESERVE(6) held by {who} for more than {:?} with no progress; \
                     sending LOGICAL UNIT RESET",
                    c.location, c.user.lock_timeout
                );
                lock_transport(&c.user.transport)
                    .reset_lun()
                    .map_err(|e| scsi_err(&c.location, "LOGICAL UNIT RESET", e))?;
                Ok(None)
            }
            ScsiMethod::Persistent => {
                // Preempt the key that was watched making no progress, not
                // whoever holds the reservation now (another waiter may just
                // have preempted the dead holder and be live). If that key
                // is no longer registered, the target refuses (RESERVATION
                // CONFLICT) and we look again.
                let victim = match seen {
                    Progress::Seen(_, key) if *key != 0 => *key,
                    _ => return Ok(None),
                };
                eprintln!(
                    "fts-lock: {}: persistent reservation held by key 0x{victim:016x} ({who}) \
                     with no progress for more than {:?}; preempting it",
                    c.location, c.user.lock_timeout
                );
                let abort = c.pr(PrOutServiceAction::PreemptAndAbort, Some(PR_TYPE), victim);
                match abort {
                    Ok(true) => {}
                    Err(Error::Scsi { ref source, .. }) if is_unsupported(source) => {
                        c.pr(PrOutServiceAction::Preempt, Some(PR_TYPE), victim)?;
                    }
                    Ok(false) => {}
                    Err(e) => return Err(e),
                }
                Ok(None)
            }
            ScsiMethod::CompareAndWrite => {
                let Some(raw) = raw else { return Ok(None) };
                eprintln!(
                    "fts-lock: {}: lock record held by {who} with no progress for more than \
                     {:?}; taking it over",
                    c.location, c.user.lock_timeout
                );
                let generation = next_generation(c, Some(raw));
                Ok(self.caw(raw, &c.mine(generation, 0))?.then_some(generation))
            }
        }
    }

    /// Undoes a partial acquisition and the local lock.
    fn abandon(&mut self) {
        let c = self.cfg();
        c.user.transport.set_lock_held(false);
        match self.locks.method {
            ScsiMethod::Reserve6 => {
                let _ = c.exec("RELEASE(6)", &cdb::release6(), DataBuffer::None);
            }
            ScsiMethod::Persistent => {
                let _ = c.pr(PrOutServiceAction::Release, Some(PR_TYPE), 0);
                let _ = c.pr(PrOutServiceAction::Register, None, 0);
                // A reconnect during the hold leaves the old session's
                // registration (and maybe reservation) behind on tgt.
                if self.epoch() != self.acquired_epoch {
                    let _ = self.remove_orphans();
                }
            }
            ScsiMethod::CompareAndWrite => {}
        }
        if let Some(host) = &mut self.host {
            let _ = host.release_raw();
        }
        self.locks.local.release();
    }

    /// Removes registrations of our key left by an earlier session of
    /// this initiator (see [`clear_key`]).
    fn remove_orphans(&self) -> Result<bool, Error> {
        clear_key(&self.cfg().user.transport, self.cfg().key)
    }

    fn lost(&self, reason: String) -> Error {
        Error::Lost {
            path: self.cfg().location.clone(),
            what: self.describe(),
            reason,
        }
    }
}

/// Removes every registration of `key` on the logical unit, and a
/// persistent reservation held under it, whichever session of this
/// initiator made them. Returns whether there was anything to remove.
///
/// tgt ties a registration to the session, not to the initiator name and
/// ISID (SPC's I_T nexus): after a reconnect, or from a later process of
/// the same initiator, the old registration is an orphan that the new
/// session can neither use nor unregister. What works (measured on tgt
/// 1.0.85): REGISTER AND IGNORE EXISTING KEY, PREEMPT of our own key (which
/// removes the orphans and hands their reservation to us), RELEASE,
/// unregister.
pub fn clear_key(transport: &SharedTransport, key: u64) -> Result<bool, Error> {
    let mut t = lock_transport(transport);
    let location = t.target().to_owned();
    let err = |what: &'static str| {
        let location = location.clone();
        move |e| scsi_err(&location, what, e)
    };
    // Unit attentions (e.g. 2A/03 after a preemption) are expected here;
    // record them for whoever else uses the nexus.
    if let Ok(seen) = t.clear_unit_attentions() {
        for sense in &seen {
            transport.note_sense(sense);
        }
    }
    let keys = t.pr_read_keys().map_err(err("PR IN READ KEYS"))?;
    if !keys.keys.contains(&key) {
        return Ok(false);
    }
    let params = |reservation_key, service_action_reservation_key| PrOutParams {
        reservation_key,
        service_action_reservation_key,
        ..PrOutParams::default()
    };
    t.pr_out(
        PrOutServiceAction::RegisterAndIgnoreExistingKey,
        None,
        &params(0, key),
    )
    .map_err(err("PR OUT REGISTER AND IGNORE EXISTING KEY"))?;
    t.pr_out(
        PrOutServiceAction::Preempt,
        Some(PR_TYPE),
        &params(key, key),
    )
    .map_err(err("PR OUT PREEMPT (own key)"))?;
    match t.pr_out(PrOutServiceAction::Release, Some(PR_TYPE), &params(key, 0)) {
        Ok(()) | Err(fts_scsi::Error::ReservationConflict) => {}
        Err(e) => return Err(err("PR OUT RELEASE")(e)),
    }
    t.pr_out(PrOutServiceAction::Register, None, &params(key, 0))
        .map_err(err("PR OUT REGISTER (unregister)"))?;
    Ok(true)
}

fn next_generation(c: &Config, raw: Option<&[u8]>) -> u64 {
    raw.and_then(|r| c.decode(r))
        .map_or(1, |r| r.generation.wrapping_add(1).max(1))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn scsi_err(location: &str, what: &'static str, source: fts_scsi::Error) -> Error {
    Error::Scsi {
        location: location.to_owned(),
        what,
        source,
    }
}

impl TableLock for ScsiLock {
    /// Waits at least twice the lock timeout, whatever `timeout` says:
    /// breaking a dead holder takes one lock timeout of watching it make no
    /// progress, and a shorter wait would give up just before that.
    fn lock(&mut self, timeout: Duration) -> Result<LockGuard<'_>, Error> {
        let timeout = timeout.max(self.cfg().user.lock_timeout * 2 + Duration::from_secs(1));
        let start = Instant::now();
        let deadline = start + timeout;
        if !self.locks.local.acquire(deadline) {
            return Err(Error::Timeout {
                path: self.cfg().location.clone(),
                what: format!(
                    "{} (held by another thread of this process)",
                    self.describe()
                ),
                waited: start.elapsed(),
            });
        }
        if let Some(host) = &self.host {
            let mut backoff = Backoff::new(deadline.saturating_duration_since(Instant::now()));
            loop {
                match host.try_acquire_raw() {
                    Ok(true) => break,
                    Ok(false) if backoff.wait() => {}
                    Ok(false) => {
                        self.locks.local.release();
                        return Err(Error::Timeout {
                            path: self.cfg().location.clone(),
                            what: format!(
                                "{} (held by another process of this host)",
                                self.describe()
                            ),
                            waited: start.elapsed(),
                        });
                    }
                    Err(e) => {
                        self.locks.local.release();
                        return Err(e);
                    }
                }
            }
        }
        // Make sure the nexus is up (reconnecting if it dropped since the
        // last command), so the epoch recorded below is the one we hold at.
        if let Err(e) =
            self.cfg()
                .exec("TEST UNIT READY", &cdb::test_unit_ready(), DataBuffer::None)
        {
            self.abandon();
            return Err(e);
        }
        let epoch = self.epoch();
        self.acquired_epoch = epoch;
        let mut backoff = Backoff::with_delays(
            timeout,
            Duration::from_micros(200),
            Duration::from_millis(20),
        );
        let mut last: Option<(Progress, Instant, u64)> = None;
        let generation = loop {
            let attempt = match self.attempt() {
                Ok(a) => a,
                Err(e) => {
                    self.abandon();
                    return Err(e);
                }
            };
            match attempt {
                Attempt::Acquired { generation } => break generation,
                Attempt::Busy(seen) => {
                    // The holder counts as stalled while what we see of it
                    // stays the same. A fence event (someone reset the LU
                    // or preempted) means the holder changed hands: start
                    // watching again.
                    let fences = self.cfg().user.transport.fence_events();
                    let since = match &last {
                        Some((p, t, f)) if *p == seen && *f == fences => *t,
                        _ => Instant::now(),
                    };
                    // scsi2 cannot read the record while the LU is
                    // reserved, so "unreadable" may hide holders taking
                    // turns: demand three lock timeouts of it.
                    let patience = match seen {
                        Progress::Unreadable => self.cfg().user.lock_timeout * 3,
                        Progress::Seen(..) => self.cfg().user.lock_timeout,
                    };
                    if since.elapsed() >= patience {
                        match self.break_holder(&seen) {
                            Ok(Some(generation)) => break generation,
                            Ok(None) => {
                                last = None;
                                continue;
                            }
                            Err(e) => {
                                self.abandon();
                                return Err(e);
                            }
                        }
                    }
                    last = Some((seen.clone(), since, fences));
                    if !backoff.wait() {
                        self.abandon();
                        let raw = match &seen {
                            Progress::Seen(raw, _) => Some(raw.as_slice()),
                            Progress::Unreadable => None,
                        };
                        return Err(Error::Timeout {
                            path: self.cfg().location.clone(),
                            what: format!(
                                "{}, held by {}",
                                self.describe(),
                                self.cfg().describe_holder(raw)
                            ),
                            waited: start.elapsed(),
                        });
                    }
                }
            }
        };
        // Record the holder (CAW wrote it as part of the acquisition).
        if self.locks.method != ScsiMethod::CompareAndWrite {
            let c = self.cfg();
            match c.write_record(&c.mine(generation, 0)) {
                Ok(true) => {}
                Ok(false) => {
                    self.abandon();
                    return Err(self.lost("the lock record write got RESERVATION CONFLICT right after the reservation was granted (preempted?)".into()));
                }
                Err(e) => {
                    self.abandon();
                    return Err(e);
                }
            }
        }
        if self.epoch() != epoch {
            self.abandon();
            return Err(self.lost(
                "the connection to the device dropped while the lock was being taken".into(),
            ));
        }
        self.cfg().user.transport.set_lock_held(true);
        self.held = Some(Held {
            epoch,
            fences: self.cfg().user.transport.fence_events(),
            generation,
            counter: std::sync::atomic::AtomicU64::new(0),
        });
        Ok(LockGuard::new(self))
    }

    fn describe(&self) -> String {
        self.locks.describe()
    }
}

impl Release for ScsiLock {
    fn release(&mut self) -> Result<(), Error> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let c = self.cfg();
        let counter = held.counter.load(std::sync::atomic::Ordering::Relaxed);
        let mut free = c.mine(held.generation, counter + 1);
        free.state = LOCK_FREE;
        let dropped = |epoch_now: u64| {
            self.lost(format!(
                "the connection to the device dropped while the lock was held (transport epoch {} -> {epoch_now}); \
                 a RESERVE(6) is released by the target when its session drops, so the update may have raced another host",
                held.epoch
            ))
        };
        let fenced = |what: &str| {
            self.lost(format!(
                "this host's reservation was {what} while the lock was held (a unit attention \
                 reported a preemption or a LU reset), so the update may have raced another host"
            ))
        };
        let epoch_now = self.epoch();
        let result = if epoch_now != held.epoch {
            Err(dropped(epoch_now))
        } else if c.user.transport.fence_events() != held.fences {
            Err(fenced("preempted or reset"))
        } else {
            match self.locks.method {
                ScsiMethod::CompareAndWrite => {
                    // Compare with the record as it is, if it still names us.
                    let ours = c.read_record().map(|raw| {
                        let mine = c.decode(&raw).is_some_and(|r| {
                            r.state == LOCK_HELD
                                && r.generation == held.generation
                                && r.holder_key == c.key
                        });
                        mine.then_some(raw)
                    });
                    match ours.and_then(|raw| match raw {
                        Some(raw) => self.caw(&raw, &free),
                        None => Ok(false),
                    }) {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(self.lost("the lock record no longer names this holder: another host took the lock over".into())),
                        Err(e) => Err(e),
                    }
                }
                _ => {
                    // The record must still name us: a holder that was
                    // broken (LUN reset, preempted) must not overwrite its
                    // successor's record, and must learn that it lost.
                    let ours = c.try_read_record().map(|raw| {
                        raw.and_then(|raw| c.decode(&raw)).is_some_and(|r| {
                            r.state == LOCK_HELD
                                && r.generation == held.generation
                                && r.holder_key == c.key
                        })
                    });
                    match ours {
                        Ok(true) => match c.write_record(&free) {
                            Ok(true) => Ok(()),
                            Ok(false) => Err(self.lost(
                                "RESERVATION CONFLICT writing the lock record: this host's reservation was preempted"
                                    .into(),
                            )),
                            Err(e) => Err(e),
                        },
                        Ok(false) => Err(self.lost(
                            "the lock record no longer names this holder: the lock was broken (LUN reset or \
                             preempted) and taken by another host"
                                .into(),
                        )),
                        Err(e) => Err(e),
                    }
                }
            }
        };
        // The release's own commands may have found the connection gone
        // (and reconnected): the lock did not cover the whole update.
        let epoch_now = self.epoch();
        let result = match result {
            Ok(()) if epoch_now != held.epoch => Err(dropped(epoch_now)),
            Ok(()) if c.user.transport.fence_events() != held.fences => {
                Err(fenced("preempted or reset"))
            }
            Err(Error::Scsi { ref source, .. }) if source.is_disconnected() => {
                Err(dropped(epoch_now))
            }
            r => r,
        };
        self.abandon();
        result
    }

    fn still_held(&self) -> Result<(), Error> {
        let Some(held) = &self.held else {
            return Err(self.lost("not held".into()));
        };
        let broken = || -> Option<Error> {
            let now = self.epoch();
            if now != held.epoch {
                return Some(self.lost(format!(
                    "the connection to the device dropped while the lock was held (transport epoch {} -> {now})",
                    held.epoch
                )));
            }
            if self.cfg().user.transport.fence_events() != held.fences {
                return Some(self.lost(
                    "a unit attention reported that this host's reservation was preempted or the LU reset"
                        .into(),
                ));
            }
            None
        };
        if let Some(e) = broken() {
            return Err(e);
        }
        // The checks below talk to the device, which may itself reveal a
        // dropped connection (and reconnect) or a fence event: look again
        // afterwards, and never report success across either.
        let r = self.check_and_advance(held);
        if let Some(e) = broken() {
            return Err(e);
        }
        match r {
            Err(Error::Scsi { ref source, .. }) if source.is_disconnected() => {
                Err(self
                    .lost("the connection to the device dropped while the lock was held".into()))
            }
            r => r,
        }
    }
}

impl ScsiLock {
    /// The device half of [`Release::still_held`]: the reservation or
    /// record still names us; then the record's counter is advanced.
    fn check_and_advance(&self, held: &Held) -> Result<(), Error> {
        let c = self.cfg();
        let mut current_raw = None;
        match self.locks.method {
            ScsiMethod::Persistent => {
                if self.reservation_holder()? != Some(c.key) {
                    return Err(self.lost("the persistent reservation is no longer held by this host's key (preempted)".into()));
                }
            }
            ScsiMethod::Reserve6 | ScsiMethod::CompareAndWrite => {
                let Some(raw) = c.try_read_record()? else {
                    return Err(self.lost(
                        "RESERVATION CONFLICT reading the lock record: another initiator holds the logical unit \
                         (our reservation was cleared, e.g. by a reset)"
                            .into(),
                    ));
                };
                let ok = c.decode(&raw).is_some_and(|r| {
                    r.state == LOCK_HELD && r.generation == held.generation && r.holder_key == c.key
                });
                if !ok {
                    return Err(self.lost("the lock record no longer names this holder".into()));
                }
                current_raw = Some(raw);
            }
        }
        // Show progress: advance the counter in the lock record.
        let counter = held.counter.load(std::sync::atomic::Ordering::Relaxed);
        let next = c.mine(held.generation, counter + 1);
        let written = match self.locks.method {
            ScsiMethod::CompareAndWrite => match &current_raw {
                Some(raw) => self.caw(raw, &next)?,
                None => false,
            },
            _ => c.write_record(&next)?,
        };
        if !written {
            return Err(self.lost(
                "the lock record could not be advanced: another host took the lock over".into(),
            ));
        }
        held.counter
            .store(counter + 1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for ScsiLock {
    fn drop(&mut self) {
        if self.held.is_some() {
            let _ = Release::release(self);
        }
    }
}
