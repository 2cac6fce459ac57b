//! Server registrations: one live `serve` per name on a device.
//!
//! A server claims a Process Id Table entry for its name, as an initiator
//! claims one for a connection, but with `PRO_FLAG_SERVER` set beside
//! `ALLOCATED | PROCESSING` (so no connector takes it for a pending
//! request and older code sees a busy entry), its name in both
//! `pro_requestor` and `pro_requestee`, its host id in both host fields and
//! `pro_alloc_time` = when it registered. It beats the entry's **connector**
//! lease ([`Heartbeat`], [`Role::Connector`]) for as long as it serves; a
//! clean stop marks that lease closed and frees the entry.
//!
//! A server that finds its name registered watches the holder's lease on
//! its **own** monotonic clock, like [`crate::PeerWatch`] (no clocks of two
//! hosts are compared):
//!
//! - the lease changes within the MCB's lease timeout: the holder lives;
//!   [`Error::NameTaken`], naming it;
//! - the lease is closed (the holder stopped, the entry was left): the
//!   name is free at once;
//! - nothing changes for the lease timeout: the holder is dead. Under the
//!   Process Id Table lock, the entry and lease are re-read; if they are
//!   still exactly what was watched the entry is taken over with its
//!   generation bumped (which fences the old holder, should it wake up).
//!
//! Every decision to write is confirmed under the lock on a re-read, so of
//! two servers starting at the same moment exactly one registers; the
//! other sees the registration and, once its lease moves, is refused.
//! Registrations go into the highest free entry, so connections keep
//! taking the lowest ones.
//!
//! The [`crate::Reaper`] of any process frees a registration whose entry
//! and leases stay unchanged for a lease timeout, like a dead connection's.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fts_layout::{
    Expect, Lease, PidEntry, Role, LB, LEASE_ALIVE, LEASE_CLOSED, PRO_FLAG_ALLOCATED,
    PRO_FLAG_PROCESSING, PRO_FLAG_SERVER, RECORD_SIZE,
};
use fts_lock::TableLock;
use uuid::Uuid;

use crate::lease::Heartbeat;
use crate::{Claim, Error, Identity, Shared, Slot};

/// `pro_flag_process` of a registration.
const FLAGS: u32 = PRO_FLAG_ALLOCATED | PRO_FLAG_PROCESSING | PRO_FLAG_SERVER;

/// How many times the registration of a name may change under a starting
/// server's eyes (other servers starting or stopping) before it gives up.
const MAX_ROUNDS: u32 = 50;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `ns` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (H. Hinnant's algorithm), all in u64: the
    // epoch shift keeps every intermediate value non-negative.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn is_registration(e: &PidEntry) -> bool {
    e.is_server() && e.is_allocated()
}

fn is_registration_of(e: &PidEntry, name: &str) -> bool {
    is_registration(e) && e.pro_requestee == name
}

/// A registration entry for `me` in `claim`'s slot.
fn entry_for(me: &Identity, claim: Claim) -> PidEntry {
    PidEntry {
        pro_process_id: claim.slot,
        pro_flag_process: FLAGS,
        pro_requestor_type: me.os,
        pro_requestee_type: me.os,
        pro_generation: claim.generation,
        pro_alloc_time: now_ns(),
        pro_requestor: me.name.clone(),
        pro_requestee: me.name.clone(),
        pro_requestor_host: me.host,
        pro_requestee_host: me.host,
        ..PidEntry::free(claim.slot)
    }
}

/// The raw connector lease record of `slot` (what a heartbeat rewrites).
fn lease_bytes(shared: &mut Shared, slot: u32) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; LB];
    let lb = shared.geometry().lease_lb(slot, Role::Connector);
    shared.device().read_at(lb * LB as u64, &mut buf)?;
    buf.truncate(RECORD_SIZE);
    Ok(buf)
}

/// The connector lease in `raw` if it belongs to generation `generation`.
fn lease_of(shared: &Shared, slot: u32, generation: u64, raw: &[u8]) -> Option<Lease> {
    Lease::decode(raw, Expect::exact(shared.mcb().layout_id(), slot))
        .ok()
        .filter(|l| l.generation == generation && l.role == Role::Connector)
}

/// A server's registration as read from the device (one read; whether
/// its server lives takes a lease timeout of watching to tell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The server's name.
    pub name: String,
    /// The Process Id Table entry.
    pub slot: u32,
    /// `pro_generation` of the registration.
    pub generation: u64,
    /// The server's host id (`pro_requestee_host`).
    pub host: Uuid,
    /// When it registered, by its clock (`pro_alloc_time`, ns since the
    /// Unix epoch).
    pub since_ns: u64,
    /// Its connector lease, if one of this generation is there yet.
    pub lease: Option<Lease>,
}

impl Registered {
    fn read(shared: &mut Shared, e: &PidEntry) -> Result<Registered, Error> {
        let raw = lease_bytes(shared, e.pro_process_id)?;
        Ok(Registered {
            name: e.pro_requestee.clone(),
            slot: e.pro_process_id,
            generation: e.pro_generation,
            host: e.pro_requestee_host,
            since_ns: e.pro_alloc_time,
            lease: lease_of(shared, e.pro_process_id, e.pro_generation, &raw),
        })
    }

    /// The server's process id, from its lease.
    pub fn pid(&self) -> Option<u32> {
        self.lease.as_ref().map(|l| l.pid)
    }

    /// Its lease says the server stopped cleanly.
    pub fn closed(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| l.state == LEASE_CLOSED)
    }

    /// How long ago its lease was last written, by the writer's clock
    /// against `now_ns` (a hint for people; liveness is judged by the
    /// counter on one clock).
    pub fn lease_age(&self, now_ns: u64) -> Option<Duration> {
        self.lease
            .as_ref()
            .filter(|l| l.state == LEASE_ALIVE)
            .map(|l| Duration::from_nanos(now_ns.saturating_sub(l.timestamp)))
    }

    /// When it registered, as a UTC date (by its clock).
    pub fn since_utc(&self) -> String {
        utc(self.since_ns)
    }

    /// Who holds the name, for messages: entry, host, pid, since, lease age.
    pub fn holder(&self, now_ns: u64) -> String {
        let pid = self.pid().map_or_else(
            || "pid unknown (no lease yet)".to_string(),
            |p| format!("pid {p}"),
        );
        let age = match (self.closed(), self.lease_age(now_ns)) {
            (true, _) => "its lease is closed".to_string(),
            (false, Some(a)) => format!("lease age {:.1} s", a.as_secs_f64()),
            (false, None) => "no lease yet".to_string(),
        };
        format!(
            "Process Id Table entry {}: host {}, {pid}, registered since {}, {age}",
            self.slot,
            self.host,
            self.since_utc()
        )
    }
}

/// Every server registration in the Process Id Table (one table read and
/// one lease read per registration), in slot order.
pub fn registrations(shared: &mut Shared) -> Result<Vec<Registered>, Error> {
    let table = shared.read_table()?;
    table
        .iter()
        .filter(|e| is_registration(e))
        .map(|e| Registered::read(shared, e))
        .collect()
}

/// The registration of the server named `name`, unless there is none or
/// its lease says it stopped: for a client to fail fast when no such
/// server runs. One read: a registration whose server died shows here
/// until it is reclaimed (after a lease timeout).
pub fn registered(shared: &mut Shared, name: &str) -> Result<Option<Registered>, Error> {
    Ok(registrations(shared)?
        .into_iter()
        .find(|r| r.name == name && !r.closed()))
}

/// One registration entry under watch.
#[derive(Debug, Clone)]
struct Seen {
    entry: PidEntry,
    lease_raw: Vec<u8>,
    lease: Option<Lease>,
}

impl Seen {
    fn look(shared: &mut Shared, entry: PidEntry) -> Result<Seen, Error> {
        let lease_raw = lease_bytes(shared, entry.pro_process_id)?;
        let lease = lease_of(
            shared,
            entry.pro_process_id,
            entry.pro_generation,
            &lease_raw,
        );
        Ok(Seen {
            entry,
            lease_raw,
            lease,
        })
    }

    fn closed(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| l.state == LEASE_CLOSED)
    }

    fn registered(&self) -> Registered {
        Registered {
            name: self.entry.pro_requestee.clone(),
            slot: self.entry.pro_process_id,
            generation: self.entry.pro_generation,
            host: self.entry.pro_requestee_host,
            since_ns: self.entry.pro_alloc_time,
            lease: self.lease.clone(),
        }
    }
}

/// What watching the registrations of a name showed.
enum Verdict {
    /// A holder's lease moved: it lives.
    Alive(Registered),
    /// An entry changed (freed, taken over, re-registered): look again.
    Changed,
    /// No holder showed life; `why` says how that was seen.
    Dead { seen: Vec<Seen>, why: String },
}

/// Watches `held` (the registrations of one name) on our monotonic clock
/// until one shows life, one changes, or all are closed or silent for the
/// lease timeout.
fn judge(shared: &mut Shared, held: Vec<PidEntry>) -> Result<Verdict, Error> {
    let timeout = Duration::from_millis(u64::from(shared.mcb().lease_timeout_ms));
    let poll = Duration::from_millis(u64::from(shared.mcb().heartbeat_ms / 4))
        .clamp(Duration::from_millis(5), Duration::from_millis(50));
    let mut seen = held
        .into_iter()
        .map(|e| Seen::look(shared, e))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    loop {
        if seen.iter().all(Seen::closed) {
            return Ok(Verdict::Dead {
                seen,
                why: "its lease says it stopped".into(),
            });
        }
        let silent = start.elapsed();
        if silent > timeout {
            return Ok(Verdict::Dead {
                seen,
                why: format!(
                    "its lease made no progress for {:.1} s (the lease timeout)",
                    silent.as_secs_f64()
                ),
            });
        }
        std::thread::sleep(poll);
        for s in &mut seen {
            let slot = s.entry.pro_process_id;
            match shared.read_slot(slot)? {
                Slot::Entry(e) if e == s.entry => {}
                _ => return Ok(Verdict::Changed),
            }
            let raw = lease_bytes(shared, slot)?;
            if raw != s.lease_raw {
                s.lease = lease_of(shared, slot, s.entry.pro_generation, &raw);
                s.lease_raw = raw;
                if !s.closed() {
                    return Ok(Verdict::Alive(s.registered()));
                }
            }
        }
    }
}

/// How a locked attempt to register ended.
enum Attempt {
    /// Registered in this entry.
    Done(Claim),
    /// What was decided on is no longer what the table shows.
    Changed,
    /// No entry is free.
    Full,
}

/// Under the lock: registers `me` in the highest free entry, unless a
/// registration of its name appeared meanwhile.
fn claim_free(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    me: &Identity,
    lock_timeout: Duration,
) -> Result<Attempt, Error> {
    let guard = lock.lock(lock_timeout)?;
    let table = shared.read_table()?;
    if table.iter().any(|e| is_registration_of(e, &me.name)) {
        guard.release()?;
        return Ok(Attempt::Changed);
    }
    let Some(free) = table.iter().rev().find(|e| e.is_free()) else {
        guard.release()?;
        return Ok(Attempt::Full);
    };
    let claim = Claim {
        slot: free.pro_process_id,
        generation: free.pro_generation.wrapping_add(1).max(1),
    };
    guard.still_held()?;
    shared.write_entry(&entry_for(me, claim))?;
    guard.release()?;
    Ok(Attempt::Done(claim))
}

/// Under the lock: takes over the first of the dead registrations in
/// `seen` (generation bumped) and frees the others, if every one is still
/// exactly as watched and no other registration of the name appeared.
fn take_over(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    me: &Identity,
    seen: &[Seen],
    lock_timeout: Duration,
) -> Result<Attempt, Error> {
    let guard = lock.lock(lock_timeout)?;
    for s in seen {
        let slot = s.entry.pro_process_id;
        let same = matches!(shared.read_slot(slot)?, Slot::Entry(e) if e == s.entry)
            && lease_bytes(shared, slot)? == s.lease_raw;
        if !same {
            guard.release()?;
            return Ok(Attempt::Changed);
        }
    }
    let watched: Vec<u32> = seen.iter().map(|s| s.entry.pro_process_id).collect();
    let others = shared
        .read_table()?
        .iter()
        .any(|e| is_registration_of(e, &me.name) && !watched.contains(&e.pro_process_id));
    let Some((first, rest)) = seen.split_first() else {
        guard.release()?;
        return Ok(Attempt::Changed);
    };
    if others {
        guard.release()?;
        return Ok(Attempt::Changed);
    }
    let bump = |e: &PidEntry| e.pro_generation.wrapping_add(1).max(1);
    let claim = Claim {
        slot: first.entry.pro_process_id,
        generation: bump(&first.entry),
    };
    guard.still_held()?;
    shared.write_entry(&entry_for(me, claim))?;
    for s in rest {
        guard.still_held()?;
        shared.write_entry(&PidEntry {
            pro_generation: bump(&s.entry),
            ..PidEntry::free(s.entry.pro_process_id)
        })?;
    }
    guard.release()?;
    Ok(Attempt::Done(claim))
}

/// The table is full: runs a [`crate::Reaper`] for one and a half lease
/// timeouts (without the lock, except to free); whether an entry is free
/// then.
fn reclaim(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    lock_timeout: Duration,
    log: &dyn Fn(String),
) -> Result<bool, Error> {
    let mut reaper = crate::Reaper::new(shared);
    let until = Instant::now() + reaper.timeout() + reaper.timeout() / 2;
    loop {
        for r in reaper.scan(shared, lock, lock_timeout)? {
            log(r.to_string());
        }
        if shared.read_table()?.iter().any(PidEntry::is_free) {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server's registration of its name, kept alive by a [`Heartbeat`] on
/// the entry's connector lease until [`Registration::release`].
pub struct Registration {
    claim: Claim,
    name: String,
    host: Uuid,
    hb: Option<Heartbeat>,
    lost: bool,
    /// The loss was logged.
    told: bool,
    /// Our own handle, for watching our own lease.
    probe: Shared,
    every: Duration,
    next_check: Instant,
    last_counter: Option<u64>,
    stalls: u32,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .field("claim", &self.claim)
            .field("lost", &self.lost())
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// Registers `me.name`, or refuses with [`Error::NameTaken`] while a
    /// live server holds it (see the module docs). Takes up to a lease
    /// timeout when a registration of the name is found (to watch its
    /// lease), and up to one and a half more when the table is full (to
    /// free the entries of the dead); [`Error::TableFull`] if none frees.
    pub fn register(
        shared: &mut Shared,
        lock: &mut dyn TableLock,
        me: &Identity,
        lock_timeout: Duration,
        log: &dyn Fn(String),
    ) -> Result<Registration, Error> {
        fts_layout::validate_name(&me.name).map_err(Error::Name)?;
        let mut reclaimed = false;
        let mut last_seen: Option<Registered> = None;
        for _ in 0..MAX_ROUNDS {
            let held: Vec<PidEntry> = shared
                .read_table()?
                .into_iter()
                .filter(|e| is_registration_of(e, &me.name))
                .collect();
            let (attempt, took) = if held.is_empty() {
                (claim_free(shared, lock, me, lock_timeout)?, None)
            } else {
                last_seen = Some(Seen::look(shared, held[0].clone())?.registered());
                match judge(shared, held)? {
                    Verdict::Alive(r) => {
                        return Err(Error::NameTaken {
                            name: me.name.clone(),
                            location: shared.location().to_string(),
                            holder: r.holder(now_ns()),
                        })
                    }
                    Verdict::Changed => continue,
                    Verdict::Dead { seen, why } => {
                        let was = seen.first().map(|s| s.registered().holder(now_ns()));
                        (
                            take_over(shared, lock, me, &seen, lock_timeout)?,
                            was.zip(Some(why)),
                        )
                    }
                }
            };
            let claim = match attempt {
                Attempt::Done(c) => c,
                Attempt::Changed => continue,
                Attempt::Full if !reclaimed => {
                    let wait =
                        Duration::from_millis(u64::from(shared.mcb().lease_timeout_ms)) * 3 / 2;
                    log(format!(
                        "the Process Id Table is full; registering {:?} once an entry of the dead is freed (watching for up to {:.1} s)",
                        me.name,
                        wait.as_secs_f64()
                    ));
                    reclaimed = true;
                    if reclaim(shared, lock, lock_timeout, log)? {
                        continue;
                    }
                    return Err(Error::TableFull {
                        location: shared.location().to_string(),
                        max: shared.geometry().max_connections,
                    });
                }
                Attempt::Full => {
                    return Err(Error::TableFull {
                        location: shared.location().to_string(),
                        max: shared.geometry().max_connections,
                    })
                }
            };
            let hb = match Heartbeat::start(shared, claim, Role::Connector, me.host) {
                Ok(hb) => hb,
                // Taken from us before the first beat: look again.
                Err(Error::Fenced { .. }) => continue,
                Err(e) => {
                    let _ = free_if_ours(shared, lock, claim, lock_timeout);
                    return Err(e);
                }
            };
            match took {
                Some((was, why)) => log(format!(
                    "reclaimed the registration of a dead fts server {:?} ({was}): {why}; registered in Process Id Table entry {} (generation {})",
                    me.name, claim.slot, claim.generation
                )),
                None => log(format!(
                    "registered as fts server {:?} in Process Id Table entry {} (generation {})",
                    me.name, claim.slot, claim.generation
                )),
            }
            let every = Duration::from_millis(u64::from(shared.mcb().heartbeat_ms.max(1))) * 2;
            return Ok(Registration {
                claim,
                name: me.name.clone(),
                host: me.host,
                hb: Some(hb),
                lost: false,
                told: false,
                probe: shared.reopen()?,
                every,
                next_check: Instant::now() + every,
                last_counter: None,
                stalls: 0,
            });
        }
        Err(Error::NameTaken {
            name: me.name.clone(),
            location: shared.location().to_string(),
            holder: format!(
                "its registration kept changing while watched (other servers of that name starting or stopping){}",
                last_seen
                    .map(|r| format!("; last seen: {}", r.holder(now_ns())))
                    .unwrap_or_default()
            ),
        })
    }

    /// The registration's entry and generation.
    pub fn claim(&self) -> Claim {
        self.claim
    }

    /// Whether the entry is no longer ours (taken over or freed while this
    /// server was presumed dead).
    pub fn lost(&self) -> bool {
        self.lost || self.hb.as_ref().is_some_and(Heartbeat::fenced)
    }

    /// Call often (every pass of an accept loop): `false` once the
    /// registration is lost, after logging why. A heartbeat whose thread
    /// ended on an error other than fencing (its lease stops moving) is
    /// restarted.
    pub fn keep_alive(&mut self, log: &dyn Fn(String)) -> bool {
        if self.lost() {
            self.lose(log);
            return false;
        }
        if Instant::now() < self.next_check {
            return true;
        }
        self.next_check = Instant::now() + self.every;
        let counter =
            match crate::lease::read_lease(&mut self.probe, self.claim.slot, Role::Connector) {
                Ok(l) if l.generation == self.claim.generation && l.state == LEASE_ALIVE => {
                    Some(l.counter)
                }
                Ok(_) => None,
                Err(e) => {
                    log(format!(
                        "registration of {:?}: reading its lease: {e}",
                        self.name
                    ));
                    return true;
                }
            };
        if counter.is_some() && counter != self.last_counter {
            self.last_counter = counter;
            self.stalls = 0;
            return true;
        }
        self.stalls += 1;
        if self.stalls < 2 {
            return true;
        }
        // Two checks (four heartbeats) without a beat: the heartbeat
        // thread ended on an error. Start it again.
        drop(self.hb.take());
        match Heartbeat::start(&self.probe, self.claim, Role::Connector, self.host) {
            Ok(hb) => {
                log(format!(
                    "registration of {:?}: its heartbeat had stopped; restarted",
                    self.name
                ));
                self.hb = Some(hb);
                self.stalls = 0;
                self.last_counter = None;
                true
            }
            Err(Error::Fenced { .. }) => {
                self.lose(log);
                false
            }
            Err(e) => {
                log(format!(
                    "registration of {:?}: its heartbeat had stopped and cannot restart: {e}",
                    self.name
                ));
                true
            }
        }
    }

    fn lose(&mut self, log: &dyn Fn(String)) {
        self.lost = true;
        drop(self.hb.take());
        if !self.told {
            self.told = true;
            log(format!(
                "fts server {:?}: its registration (Process Id Table entry {}, generation {}) is no longer its own: taken over or freed while this server was presumed dead; stopped serving",
                self.name, self.claim.slot, self.claim.generation
            ));
        }
    }

    /// Ends the registration: the lease is marked closed and the entry
    /// freed (under the lock), if both are still ours. A lost registration
    /// is left to whoever holds it now.
    pub fn release(
        mut self,
        shared: &mut Shared,
        lock: &mut dyn TableLock,
        lock_timeout: Duration,
    ) -> Result<(), Error> {
        let stopped = match self.hb.take() {
            Some(hb) if !self.lost => match hb.stop() {
                Err(Error::Fenced { .. }) => {
                    self.lost = true;
                    Ok(())
                }
                r => r,
            },
            _ => Ok(()),
        };
        if self.lost {
            return Ok(());
        }
        let freed = free_if_ours(shared, lock, self.claim, lock_timeout);
        stopped.and(freed)
    }

    /// What `serve` returns once its accept loop has ended with `served`:
    /// the registration released, or, if it was lost, the error that says
    /// so ([`Error::NameTaken`] naming the new holder, or
    /// [`Error::Fenced`]).
    pub(crate) fn finish(
        self,
        shared: &mut Shared,
        lock: &mut dyn TableLock,
        lock_timeout: Duration,
        served: Result<(), Error>,
        log: &dyn Fn(String),
    ) -> Result<(), Error> {
        if !self.lost() {
            let released = self.release(shared, lock, lock_timeout);
            if let Err(e) = &released {
                log(format!("releasing the registration: {e}"));
            }
            return served.and(released);
        }
        served?;
        let claim = self.claim;
        let now = registered(shared, &self.name)?;
        Err(match now {
            Some(r) if r.slot != claim.slot || r.generation != claim.generation => {
                Error::NameTaken {
                    name: self.name.clone(),
                    location: shared.location().to_string(),
                    holder: format!(
                        "{} (it took over while this server was presumed dead)",
                        r.holder(now_ns())
                    ),
                }
            }
            _ => Error::Fenced {
                slot: claim.slot,
                expected: claim.generation,
                found: "freed or taken over: the registration of this server".into(),
            },
        })
    }
}

/// Frees `claim`'s registration entry, under the lock, if it is still
/// that registration; its generation is kept (the next claim bumps it).
fn free_if_ours(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    claim: Claim,
    lock_timeout: Duration,
) -> Result<(), Error> {
    let guard = lock.lock(lock_timeout)?;
    if let Slot::Entry(e) = shared.read_slot(claim.slot)? {
        if e.pro_generation == claim.generation && is_registration(&e) {
            guard.still_held()?;
            shared.write_entry(&PidEntry {
                pro_generation: e.pro_generation,
                ..PidEntry::free(claim.slot)
            })?;
        }
    }
    guard.release()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc(1_700_000_000 * 1_000_000_000),
            "2023-11-14 22:13:20 UTC"
        );
        assert_eq!(utc(951_782_400 * 1_000_000_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(
            utc(4_107_542_399 * 1_000_000_000),
            "2100-02-28 23:59:59 UTC"
        );
        assert_eq!(utc(u64::MAX), "2554-07-21 23:34:33 UTC");
    }
}
