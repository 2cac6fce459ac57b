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

use crate::auth::{ClientAuth, Decision, Hello, PendingProof, ServerAuth};
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
    claim_with(shared, lock, me, peer, lock_timeout, None)
}

/// [`claim`] with the initiator's half of an authenticated handshake
/// (`pro_auth_alg` 2) written into the entry.
pub fn claim_with(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    me: &Identity,
    peer: &str,
    lock_timeout: Duration,
    hello: Option<(&ClientAuth, &Hello)>,
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
    let mut claimed = PidEntry {
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
    if let Some((auth, hello)) = hello {
        hello.fill(auth, &mut claimed);
    }
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
    wait_accepted_entry(shared, lock, claim, peer, timeout, lock_timeout, stop).map(|_| ())
}

/// [`wait_accepted_or_stop`] returning the accepted entry (the
/// connector's half of an authenticated handshake is in it). A refusal
/// for authentication is [`Error::Auth`].
pub fn wait_accepted_entry(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    claim: Claim,
    peer: &str,
    timeout: Duration,
    lock_timeout: Duration,
    stop: &AtomicBool,
) -> Result<PidEntry, Error> {
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
            if let Some(reason) = crate::auth::describe_refusal(e.pro_con_rc) {
                return Err(Error::Auth {
                    server: peer.to_string(),
                    side: "the server",
                    reason: reason.to_string(),
                });
            }
            return Err(Error::Refused {
                name: peer.to_string(),
                rc: e.pro_con_rc,
            });
        }
        if e.is_processing() {
            return Ok(e);
        }
        if stop.load(Ordering::Relaxed) {
            close(shared, lock, claim, lock_timeout)?;
            return Err(Error::Interrupted);
        }
        if !backoff.wait() {
            close(shared, lock, claim, lock_timeout)?;
            let hint = match crate::registered(shared, peer) {
                Ok(None) => format!(
                    "; no server of that name is registered on {} (is `fts serve -n {peer}` running on this device?)",
                    shared.location()
                ),
                Ok(Some(r)) => format!(
                    "; a server of that name is registered ({}) but did not answer: busy, stopped or dead",
                    r.holder(now_ns())
                ),
                Err(_) => String::new(),
            };
            return Err(Error::NoConnector {
                name: peer.to_string(),
                slot: claim.slot,
                waited: start.elapsed(),
                hint,
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
    Ok(matches!(
        accept_with(shared, lock, me, claim, lock_timeout, None)?,
        Accepted::Yes { .. }
    ))
}

/// What [`accept_with`] did.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // made once per connection
pub enum Accepted {
    /// The entry is no longer that pending request: nothing written.
    Gone,
    /// Accepted (`PRO_FLAG_PROCESSING`).
    Yes {
        /// The entry as written.
        entry: PidEntry,
        /// With authentication: the initiator's proof still to check.
        proof: Option<PendingProof>,
    },
    /// Refused (`PRO_FLAG_REFUSED`, `pro_con_rc`); the initiator frees the
    /// entry.
    Refused {
        /// The requestor's name, as it claims.
        requestor: String,
        /// Why, for the server's log.
        reason: String,
    },
}

/// [`accept`] for a server that may require authentication: with `auth`,
/// a request without a trusted key is refused (`PRO_FLAG_REFUSED` and the
/// reason code in `pro_con_rc`), and an accepted one gets the connector's
/// half of the handshake.
pub fn accept_with(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    me: &Identity,
    claim: Claim,
    lock_timeout: Duration,
    auth: Option<&ServerAuth>,
) -> Result<Accepted, Error> {
    let layout = shared.mcb().blk5_layout_uuid;
    let guard = lock.lock(lock_timeout)?;
    let mut e = match shared.read_slot(claim.slot)? {
        crate::Slot::Entry(e) => e,
        crate::Slot::Damaged { .. } => {
            guard.release()?;
            return Ok(Accepted::Gone);
        }
    };
    let still_pending = e.pro_generation == claim.generation
        && e.pro_flag_process & (PRO_FLAG_ALLOCATED | PRO_FLAG_PROCESSING | PRO_FLAG_REFUSED)
            == PRO_FLAG_ALLOCATED
        && e.pro_requestee == me.name;
    if !still_pending {
        guard.release()?;
        return Ok(Accepted::Gone);
    }
    e.pro_requestee_type = me.os;
    e.pro_requestee_host = me.host;
    e.pro_accept_time = now_ns();
    let result = match crate::auth::respond(auth, layout, &mut e)? {
        Decision::Accept(proof) => {
            e.pro_flag_process |= PRO_FLAG_PROCESSING;
            Accepted::Yes {
                entry: e.clone(),
                proof,
            }
        }
        Decision::Refuse { rc, reason } => {
            e.pro_flag_process |= PRO_FLAG_REFUSED;
            e.pro_con_rc = rc;
            Accepted::Refused {
                requestor: e.pro_requestor.clone(),
                reason,
            }
        }
    };
    guard.still_held()?;
    shared.write_entry(&e)?;
    guard.release()?;
    Ok(result)
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
