//! Reclaiming what the dead leave in the Process Id Table.
//!
//! A connection's slot is alive while *something* of it changes: its entry
//! record (claimed, accepted, closed) or either side's lease record (a live
//! side advances its counter every heartbeat, an initiator also while it
//! waits to be accepted). A [`Reaper`] watches every slot that is not free
//! on its own monotonic clock (no two hosts' clocks are compared): a slot
//! whose entry and leases stay byte-identical for the MCB's lease timeout
//! belongs to dead processes (killed after the close reply but before
//! freeing, killed before being accepted, both sides crashed) or holds a
//! damaged record nobody can use. Under the table lock the reaper re-reads
//! the slot, confirms that nothing changed, and frees it with the
//! generation bumped, so a hung owner that wakes up is fenced
//! ([`crate::check_owner`]).
//!
//! A server's registration of its name ([`crate::Registration`]) is
//! watched the same way: its server advances the entry's connector lease
//! for as long as it serves, so a live registration always changes and a
//! dead server's (killed, its host gone) is freed after a lease timeout,
//! which frees its name.
//!
//! Any process that scans the table runs one: a server in its accept loop,
//! a client that finds the table full, a server registering its name in a
//! full table.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fts_layout::{Expect, Lease, PidEntry, Role, LB, RECORD_SIZE};
use fts_lock::TableLock;

use crate::{Error, Shared, Slot};

/// What a [`Reaper`] pass found worth telling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaped {
    /// A slot was freed.
    Freed {
        /// The 1-based slot.
        slot: u32,
        /// The generation the free entry now carries.
        generation: u64,
        /// Whose it was and why it was dead.
        what: String,
    },
    /// A slot holds a damaged record (reported once per distinct damage;
    /// freed after a lease timeout like any dead slot).
    Damaged {
        /// The 1-based slot.
        slot: u32,
        /// What is wrong with it.
        reason: String,
    },
}

impl std::fmt::Display for Reaped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reaped::Freed {
                slot,
                generation,
                what,
            } => write!(
                f,
                "freed Process Id Table entry {slot} ({what}); it now carries generation {generation}"
            ),
            Reaped::Damaged { slot, reason } => write!(
                f,
                "Process Id Table entry {slot} is damaged ({reason}); skipped, freed if it stays so for a lease timeout (or run `fts check --repair`)"
            ),
        }
    }
}

#[derive(Debug)]
struct Watch {
    fingerprint: [u8; 32],
    since: Instant,
}

/// Watches the Process Id Table and frees dead slots; see the module docs.
#[derive(Debug)]
pub struct Reaper {
    timeout: Duration,
    every: Duration,
    last: Option<Instant>,
    /// When the previous pass finished reading the table.
    seen: Option<Instant>,
    watches: HashMap<u32, Watch>,
    reported: HashMap<u32, [u8; 32]>,
}

/// A slot's state as the reaper compares it: the entry record's bytes and
/// both lease records' bytes.
fn fingerprint(shared: &mut Shared, slot: u32) -> Result<([u8; 32], Slot), Error> {
    let state = shared.read_slot(slot)?;
    let mut h = blake3::Hasher::new();
    match &state {
        Slot::Entry(e) => {
            h.update(b"entry");
            h.update(&e.encode(fts_layout::Stamp::new(shared.mcb().layout_id(), slot)));
        }
        Slot::Damaged { raw, .. } => {
            h.update(b"damaged");
            h.update(raw);
        }
    }
    for role in Role::BOTH {
        let mut buf = vec![0u8; LB];
        let lb = shared.geometry().lease_lb(slot, role);
        shared.device().read_at(lb * LB as u64, &mut buf)?;
        h.update(&buf[..RECORD_SIZE]);
    }
    Ok((*h.finalize().as_bytes(), state))
}

/// The generation for freeing a damaged entry, whose own generation is
/// unknown: above the highest one found in its record's `pro_generation`
/// field (bytes 48..56, possibly damaged itself) and its leases, by 2^32,
/// so that any owner of the lost generation is fenced even if damage
/// lowered the field.
fn damaged_generation(shared: &mut Shared, slot: u32, raw: &[u8]) -> u64 {
    let field = raw
        .get(48..56)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes);
    lease_generation(shared, slot)
        .max(field)
        .saturating_add(1 << 32)
}

/// The highest generation either lease of `slot` names.
fn lease_generation(shared: &mut Shared, slot: u32) -> u64 {
    let id = shared.mcb().layout_id();
    Role::BOTH
        .into_iter()
        .filter_map(|role| {
            let mut buf = vec![0u8; LB];
            let lb = shared.geometry().lease_lb(slot, role);
            shared.device().read_at(lb * LB as u64, &mut buf).ok()?;
            Lease::decode(&buf[..RECORD_SIZE], Expect::exact(id, slot)).ok()
        })
        .map(|l| l.generation)
        .max()
        .unwrap_or(0)
}

impl Reaper {
    /// A reaper with the MCB's lease timeout, sampling at most every
    /// quarter of it.
    pub fn new(shared: &Shared) -> Reaper {
        let timeout = Duration::from_millis(u64::from(shared.mcb().lease_timeout_ms));
        Reaper {
            timeout,
            every: (timeout / 4).max(Duration::from_millis(10)),
            last: None,
            seen: None,
            watches: HashMap::new(),
            reported: HashMap::new(),
        }
    }

    /// A gap between passes (or a pass) longer than this means we were not
    /// watching: half a lease timeout, plus slack for the callers' own
    /// polling cadence.
    fn blind_after(&self) -> Duration {
        self.timeout / 2 + Duration::from_millis(100)
    }

    /// How long a slot must stay unchanged to be freed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One pass (a no-op if the last one was less than a quarter lease
    /// timeout ago): samples every slot in use, and frees, under the lock,
    /// those unchanged for the lease timeout.
    pub fn scan(
        &mut self,
        shared: &mut Shared,
        lock: &mut dyn TableLock,
        lock_timeout: Duration,
    ) -> Result<Vec<Reaped>, Error> {
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        self.last = Some(started);
        let mut out = Vec::new();
        let mut due = Vec::new();
        let slots = shared.read_slots()?;
        // Silence is only evidence while we were watching. If we could not
        // look for a while (our own I/O blocked, e.g. behind a dead host's
        // reservation that blocked everyone's writes, or this process was
        // stopped), every slot's clock starts again now: what we missed
        // may have been others' writes just as blocked as ours.
        if self.seen.map_or(true, |t| t.elapsed() > self.blind_after()) {
            let now = Instant::now();
            for w in self.watches.values_mut() {
                w.since = now;
            }
        }
        let in_use: Vec<u32> = slots
            .iter()
            .filter(|s| !matches!(s, Slot::Entry(e) if e.is_free()))
            .map(Slot::slot)
            .collect();
        self.watches.retain(|slot, _| in_use.contains(slot));
        self.reported.retain(|slot, _| in_use.contains(slot));
        for slot in in_use {
            let (fp, state) = fingerprint(shared, slot)?;
            if let Slot::Damaged { error, .. } = &state {
                if self.reported.get(&slot) != Some(&fp) {
                    self.reported.insert(slot, fp);
                    out.push(Reaped::Damaged {
                        slot,
                        reason: error.to_string(),
                    });
                }
            }
            let w = self.watches.entry(slot).or_insert(Watch {
                fingerprint: fp,
                since: Instant::now(),
            });
            if w.fingerprint != fp {
                *w = Watch {
                    fingerprint: fp,
                    since: Instant::now(),
                };
            } else if w.since.elapsed() >= self.timeout {
                due.push((slot, fp, w.since.elapsed()));
            }
        }
        // A pass that itself took long (reads held up) saw nothing for a
        // while either.
        if started.elapsed() > self.blind_after() {
            let now = Instant::now();
            for w in self.watches.values_mut() {
                w.since = now;
            }
            due.clear();
        }
        self.seen = Some(Instant::now());
        if due.is_empty() {
            return Ok(out);
        }
        let guard = lock.lock(lock_timeout)?;
        for (slot, fp, silent) in due {
            // Confirm under the lock: a slot that changed since is alive.
            let (now, state) = fingerprint(shared, slot)?;
            if now != fp {
                continue;
            }
            let (generation, what) = match &state {
                // A server's registration: its server beats the connector
                // lease for as long as it serves.
                Slot::Entry(e) if e.is_server() => (
                    e.pro_generation.wrapping_add(1).max(1),
                    format!(
                        "registration of fts server {:?}, generation {}: its server is dead, its lease made no progress for {:.1}s",
                        e.pro_requestee,
                        e.pro_generation,
                        silent.as_secs_f64()
                    ),
                ),
                Slot::Entry(e) => (
                    e.pro_generation.wrapping_add(1).max(1),
                    format!(
                        "connection {:?} -> {:?}, generation {}: nothing changed for {:.1}s",
                        e.pro_requestor,
                        e.pro_requestee,
                        e.pro_generation,
                        silent.as_secs_f64()
                    ),
                ),
                Slot::Damaged { error, raw, .. } => (
                    damaged_generation(shared, slot, raw),
                    format!(
                        "damaged record ({error}) unchanged for {:.1}s",
                        silent.as_secs_f64()
                    ),
                ),
            };
            guard.still_held()?;
            shared.write_entry(&PidEntry {
                pro_generation: generation,
                ..PidEntry::free(slot)
            })?;
            self.watches.remove(&slot);
            self.reported.remove(&slot);
            out.push(Reaped::Freed {
                slot,
                generation,
                what,
            });
        }
        guard.release()?;
        Ok(out)
    }
}
