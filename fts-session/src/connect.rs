//! Connection set-up and tear-down over the Process Id Table (Figs. 8, 9).
//!
//! Only the entry record (the first LB of an entry) is written here, and
//! only while the Process Id Table lock is held; every write is preceded by
//! a re-read under the lock, so a decision made on an unlocked scan is never
//! acted on without being confirmed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fts_layout::{OsType, PidEntry, PRO_FLAG_ALLOCATED, PRO_FLAG_PROCESSING, PRO_FLAG_REFUSED};
use fts_lock::{Backoff, TableLock};
use uuid::Uuid;

use crate::{Error, Shared};

/// Who we are, as written into the Process Id Table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// fts name (1-32 bytes).
    pub name: String,
    /// OS type (`pro_requestor_type` / `pro_requestee_type`).
    pub os: OsType,
    /// Host id.
    pub host: Uuid,
}

impl Identity {
    /// A Unix identity with the host id from `/etc/machine-id` (nil if absent).
    pub fn unix(name: &str) -> Result<Self, Error> {
        fts_layout::validate_name(name).map_err(Error::Name)?;
        let host = std::fs::read_to_string("/etc/machine-id")
            .ok()
            .and_then(|s| Uuid::try_parse(s.trim()).ok())
            .unwrap_or_default();
        Ok(Identity {
            name: name.to_string(),
            os: OsType::Unix,
            host,
        })
    }
}

/// A claimed (and possibly accepted) Process Id Table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// `pro_process_id`: the 1-based entry number.
    pub slot: u32,
    /// `pro_generation` of this connection.
    pub generation: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn first_free(table: &[PidEntry]) -> Option<u32> {
    table.iter().find(|e| e.is_free()).map(|e| e.pro_process_id)
}

/// The table is full: watch it for a lease timeout (and a little more),
/// freeing the slots of dead connections ([`crate::Reaper`]); the first
/// slot that is free then, if any.
fn reclaim_one(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    lock_timeout: Duration,
) -> Result<Option<u32>, Error> {
    let mut reaper = crate::Reaper::new(shared);
    let until = Instant::now() + reaper.timeout() + reaper.timeout() / 2;
    loop {
        for r in reaper.scan(shared, lock, lock_timeout)? {
            eprintln!("fts-session: {}: {r}", shared.location());
        }
        if let Some(s) = first_free(&shared.read_table()?) {
            return Ok(Some(s));
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fig. 8, steps 100-110: claim a free entry for a connection from `me` to
/// the connector named `peer`. Returns once the claim is on disk; see
/// [`wait_accepted`].
pub fn claim(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    me: &Identity,
    peer: &str,
    lock_timeout: Duration,
) -> Result<Claim, Error> {
    fts_layout::validate_name(peer).map_err(Error::Name)?;
    let full = |s: &Shared| Error::TableFull {
        location: s.location().to_string(),
        max: s.geometry().max_connections,
    };
    // Scan without the lock (cheap, no contention)...
    let table = shared.read_table()?;
    let mut slot = match first_free(&table) {
        Some(s) => s,
        None => reclaim_one(shared, lock, lock_timeout)?.ok_or_else(|| full(shared))?,
    };
    // ...then lock, re-read and confirm before writing.
    let guard = lock.lock(lock_timeout)?;
    let mut entry = match shared.read_slot(slot)? {
        crate::Slot::Entry(e) => e,
        crate::Slot::Damaged { .. } => PidEntry {
            pro_flag_process: PRO_FLAG_ALLOCATED,
            ..PidEntry::free(slot)
        },
    };
    if !entry.is_free() {
        let table = shared.read_table()?;
        match first_free(&table) {
            Some(s) => {
                slot = s;
                entry = table[s as usize - 1].clone();
            }
            None => {
                drop(guard);
                return Err(full(shared));
            }
        }
    }
    let generation = entry.pro_generation.wrapping_add(1).max(1);
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce);
    let claimed = PidEntry {
        pro_process_id: slot,
        pro_flag_process: PRO_FLAG_ALLOCATED,
        pro_requestor_type: me.os,
        pro_generation: generation,
        pro_alloc_time: now_ns(),
        pro_requestor: me.name.clone(),
        pro_requestee: peer.to_string(),
        pro_requestor_host: me.host,
        pro_auth_nonce: nonce,
        ..PidEntry::free(slot)
    };
    guard.still_held()?;
    shared.write_entry(&claimed)?;
    guard.release()?;
    Ok(Claim { slot, generation })
}

/// Fig. 8, step 112: poll until the connector sets `PRO_FLAG_PROCESSING`.
/// On timeout or refusal the entry is freed again (under the lock) and the
/// error says why.
pub fn wait_accepted(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    claim: Claim,
    peer: &str,
    timeout: Duration,
    lock_timeout: Duration,
) -> Result<(), Error> {
    wait_accepted_or_stop(
        shared,
        lock,
        claim,
        peer,
        timeout,
        lock_timeout,
        &AtomicBool::new(false),
    )
}

/// [`wait_accepted`] that also ends when `stop` is raised (a signal): the
/// entry is freed and the result is [`Error::Interrupted`].
pub fn wait_accepted_or_stop(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    claim: Claim,
    peer: &str,
    timeout: Duration,
    lock_timeout: Duration,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let start = Instant::now();
    let mut backoff =
        Backoff::with_delays(timeout, Duration::from_micros(50), Duration::from_millis(5));
    // While it waits the initiator shows life in its lease, so nobody
    // reclaims a pending entry whose initiator is alive.
    let beat_every = Duration::from_millis(u64::from(shared.mcb().heartbeat_ms.max(1)));
    let mut beats = 0u64;
    let mut next_beat = Instant::now();
    loop {
        let e = match shared.read_slot(claim.slot)? {
            crate::Slot::Entry(e) => e,
            crate::Slot::Damaged { .. } => PidEntry::free(claim.slot),
        };
        if e.pro_generation != claim.generation || !e.is_allocated() {
            return Err(Error::Lost {
                slot: claim.slot,
                expected: claim.generation,
                found: e.pro_generation,
            });
        }
        if Instant::now() >= next_beat {
            beats += 1;
            crate::lease::beat(
                shared,
                claim,
                fts_layout::Role::Initiator,
                e.pro_requestor_host,
                beats,
            )?;
            next_beat = Instant::now() + beat_every;
        }
        if e.pro_flag_process & PRO_FLAG_REFUSED != 0 {
            close(shared, lock, claim, lock_timeout)?;
            return Err(Error::Refused {
                name: peer.to_string(),
                rc: e.pro_con_rc,
            });
        }
        if e.is_processing() {
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            close(shared, lock, claim, lock_timeout)?;
            return Err(Error::Interrupted);
        }
        if !backoff.wait() {
            close(shared, lock, claim, lock_timeout)?;
            return Err(Error::NoConnector {
                name: peer.to_string(),
                slot: claim.slot,
                waited: start.elapsed(),
            });
        }
    }
}

/// Fig. 9, steps 130-132: entries requesting the connector `name` that are
/// not yet acknowledged (one unlocked table read).
pub fn pending_for(shared: &mut Shared, name: &str) -> Result<Vec<Claim>, Error> {
    Ok(shared
        .read_table()?
        .into_iter()
        .filter(|e| {
            e.pro_flag_process & (PRO_FLAG_ALLOCATED | PRO_FLAG_PROCESSING | PRO_FLAG_REFUSED)
                == PRO_FLAG_ALLOCATED
                && e.pro_requestee == name
        })
        .map(|e| Claim {
            slot: e.pro_process_id,
            generation: e.pro_generation,
        })
        .collect())
}

/// Fig. 9, steps 134-138: accept a pending request. Returns `Ok(false)` if,
/// re-read under the lock, the entry is no longer that pending request.
pub fn accept(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    me: &Identity,
    claim: Claim,
    lock_timeout: Duration,
) -> Result<bool, Error> {
    let guard = lock.lock(lock_timeout)?;
    let mut e = match shared.read_slot(claim.slot)? {
        crate::Slot::Entry(e) => e,
        crate::Slot::Damaged { .. } => {
            guard.release()?;
            return Ok(false);
        }
    };
    let still_pending = e.pro_generation == claim.generation
        && e.pro_flag_process & (PRO_FLAG_ALLOCATED | PRO_FLAG_PROCESSING | PRO_FLAG_REFUSED)
            == PRO_FLAG_ALLOCATED
        && e.pro_requestee == me.name;
    if still_pending {
        e.pro_flag_process |= PRO_FLAG_PROCESSING;
        e.pro_requestee_type = me.os;
        e.pro_requestee_host = me.host;
        e.pro_accept_time = now_ns();
        guard.still_held()?;
        shared.write_entry(&e)?;
    }
    guard.release()?;
    Ok(still_pending)
}

/// Frees the entry if it still belongs to this connection (same
/// generation). The generation is kept so the next claim of the slot gets a
/// new one.
pub fn close(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    claim: Claim,
    lock_timeout: Duration,
) -> Result<(), Error> {
    let guard = lock.lock(lock_timeout)?;
    let e = match shared.read_slot(claim.slot)? {
        crate::Slot::Entry(e) => e,
        // Damaged: nothing shows it is ours; the reaper or `check --repair`
        // frees it.
        crate::Slot::Damaged { .. } => PidEntry::free(claim.slot),
    };
    if e.pro_generation == claim.generation && !e.is_free() {
        let freed = PidEntry {
            pro_generation: e.pro_generation,
            ..PidEntry::free(claim.slot)
        };
        guard.still_held()?;
        shared.write_entry(&freed)?;
    }
    guard.release()?;
    Ok(())
}
