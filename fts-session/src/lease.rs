//! Leases: each side of a connection advances a counter in its own lease
//! record; the other side declares it dead when the counter makes no
//! progress for `lease_timeout_ms` (from the Master Control Block) as
//! measured on its **own** monotonic clock. No two hosts' clocks are ever
//! compared.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fts_blockdev::WriteMode;
use fts_layout::{CmdArea, Expect, Lease, Role, Stamp, LB, LEASE_ALIVE, LEASE_CLOSED, RECORD_SIZE};
use uuid::Uuid;

use crate::{Claim, Error, Shared};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// How old an ownership check may be when a lease write is issued (a
/// process stopped between check and write checks again on waking).
const OWNER_FRESH: Duration = Duration::from_millis(20);

/// [`check_owner`], then [`write_lease`] only while that check is fresh.
fn write_lease_if_owner(
    shared: &mut Shared,
    claim: Claim,
    role: Role,
    lease: &Lease,
    cmd: &[u8],
) -> Result<(), Error> {
    loop {
        // Stamped before the check: a stop during or after it makes the
        // check look old here, and it is repeated.
        let at = Instant::now();
        check_owner(shared, claim)?;
        if at.elapsed() <= OWNER_FRESH {
            return write_lease(shared, claim, role, lease, cmd);
        }
    }
}

/// Writes one lease LB: the lease record and our command area (`cmd`:
/// the handshake's proof or verdict, else empty), both ours alone.
fn write_lease(
    shared: &mut Shared,
    claim: Claim,
    role: Role,
    lease: &Lease,
    cmd: &[u8],
) -> Result<(), Error> {
    let stamp = Stamp::new(shared.mcb().layout_id(), claim.slot);
    let mut buf = vec![0u8; LB];
    buf[..RECORD_SIZE].copy_from_slice(&lease.encode(stamp));
    let cmd = CmdArea {
        generation: claim.generation,
        data: cmd.to_vec(),
    };
    buf[RECORD_SIZE..2 * RECORD_SIZE].copy_from_slice(&cmd.encode(stamp));
    let lb = shared.geometry().lease_lb(claim.slot, role);
    // Not FUA: a lease must be seen by the other hosts (every write
    // reaches the device, O_DIRECT or SCSI), not survive a power loss; a
    // forced flush per beat cost ~20 ms on a file (fdatasync) and sat in
    // every connection's open and close.
    shared
        .device()
        .write_at(lb * LB as u64, &buf, WriteMode::Normal)?;
    Ok(())
}

/// Checks that `claim`'s slot still belongs to it (one read of the entry
/// record): [`Error::Fenced`] when the entry is free, damaged or of
/// another generation. Run before writing into the slot, so a process
/// that was stopped or hung while its slot was reclaimed and reused never
/// writes into a connection that is no longer its own.
pub fn check_owner(shared: &mut Shared, claim: Claim) -> Result<(), Error> {
    let found = match shared.read_slot(claim.slot)? {
        crate::Slot::Entry(e) if e.pro_generation == claim.generation && !e.is_free() => {
            return Ok(())
        }
        crate::Slot::Entry(e) if e.is_free() => {
            format!("free, generation {}", e.pro_generation)
        }
        crate::Slot::Entry(e) => format!(
            "generation {}, {} -> {}",
            e.pro_generation, e.pro_requestor, e.pro_requestee
        ),
        crate::Slot::Damaged { error, .. } => format!("damaged: {error}"),
    };
    Err(Error::Fenced {
        slot: claim.slot,
        expected: claim.generation,
        found,
    })
}

/// A [`fts_ring::Fence`] for `claim`: [`check_owner`] on a device handle
/// of its own, before every ring write.
pub fn ring_fence(shared: &Shared, claim: Claim) -> Result<fts_ring::Fence<'static>, Error> {
    let mut dev = shared.reopen()?;
    Ok(Box::new(move || {
        check_owner(&mut dev, claim).map_err(|e| fts_ring::Error::Fenced {
            slot: claim.slot,
            reason: e.to_string(),
        })
    }))
}

/// Writes one beat of `role`'s lease for `claim` (counter `counter`),
/// after checking that the slot is still ours. For a side that must show
/// life before its heartbeat thread runs (an initiator waiting to be
/// accepted).
pub(crate) fn beat(
    shared: &mut Shared,
    claim: Claim,
    role: Role,
    host: Uuid,
    counter: u64,
) -> Result<(), Error> {
    let lease = Lease {
        role,
        state: LEASE_ALIVE,
        generation: claim.generation,
        counter,
        timestamp: now_ns(),
        host,
        pid: std::process::id(),
    };
    write_lease_if_owner(shared, claim, role, &lease, &[])
}

/// Reads the command area `role` wrote for `slot` (the handshake's proof
/// or verdict), with the generation it carries.
pub fn read_command(shared: &mut Shared, slot: u32, role: Role) -> Result<CmdArea, Error> {
    let mut buf = vec![0u8; LB];
    let lb = shared.geometry().lease_lb(slot, role);
    shared.device().read_at(lb * LB as u64, &mut buf)?;
    let id = shared.mcb().layout_id();
    CmdArea::decode(&buf[RECORD_SIZE..2 * RECORD_SIZE], Expect::exact(id, slot)).map_err(|source| {
        Error::Layout {
            location: shared.location().to_string(),
            source,
        }
    })
}

/// Reads the lease `role` wrote for `slot`.
pub fn read_lease(shared: &mut Shared, slot: u32, role: Role) -> Result<Lease, Error> {
    let mut buf = vec![0u8; LB];
    let lb = shared.geometry().lease_lb(slot, role);
    shared.device().read_at(lb * LB as u64, &mut buf)?;
    let id = shared.mcb().layout_id();
    Lease::decode(&buf[..RECORD_SIZE], Expect::exact(id, slot)).map_err(|source| Error::Layout {
        location: shared.location().to_string(),
        source,
    })
}

/// Our side's heartbeat: a thread with its own device handle that advances
/// the lease counter every `heartbeat_ms`. Before each beat it checks that
/// the slot is still ours ([`check_owner`]); if not, it stops at once and
/// [`Heartbeat::fenced`] says so.
#[derive(Debug)]
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    fenced: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), Error>>>,
    shared: Shared,
    claim: Claim,
    role: Role,
    host: Uuid,
    /// Counter and command area; every write of the lease LB holds it, so
    /// a beat never overwrites a newer command area with an older one.
    beat: Arc<Mutex<(u64, Vec<u8>)>>,
}

impl Heartbeat {
    /// Writes the first beat synchronously, then keeps beating in the background.
    pub fn start(
        shared: &Shared,
        claim: Claim,
        role: Role,
        host: Uuid,
    ) -> Result<Heartbeat, Error> {
        Self::start_with_command(shared, claim, role, host, Vec::new())
    }

    /// [`Heartbeat::start`] with `cmd` in the command area of every beat
    /// (the initiator's handshake proof).
    pub fn start_with_command(
        shared: &Shared,
        claim: Claim,
        role: Role,
        host: Uuid,
        cmd: Vec<u8>,
    ) -> Result<Heartbeat, Error> {
        let mut mine = shared.reopen()?;
        let interval = Duration::from_millis(u64::from(shared.mcb().heartbeat_ms.max(1)));
        let lease = move |counter| Lease {
            role,
            state: LEASE_ALIVE,
            generation: claim.generation,
            counter,
            timestamp: now_ns(),
            host,
            pid: std::process::id(),
        };
        write_lease_if_owner(&mut mine, claim, role, &lease(1), &cmd)?;
        let beat = Arc::new(Mutex::new((1u64, cmd)));
        let stop = Arc::new(AtomicBool::new(false));
        let fenced = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let fenced_flag = fenced.clone();
        let mut bg = shared.reopen()?;
        let state = beat.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fts-heartbeat-{}", claim.slot))
            .spawn(move || {
                let mut next = Instant::now() + interval;
                while !flag.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now < next {
                        // Woken at once by `halt`, so stopping costs no
                        // sleep.
                        std::thread::park_timeout(next - now);
                        continue;
                    }
                    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                    st.0 += 1;
                    match write_lease_if_owner(&mut bg, claim, role, &lease(st.0), &st.1) {
                        Err(e @ Error::Fenced { .. }) => {
                            fenced_flag.store(true, Ordering::SeqCst);
                            return Err(e);
                        }
                        r => r?,
                    }
                    next += interval;
                }
                Ok(())
            })
            .map_err(|e| Error::Thread(e.to_string()))?;
        Ok(Heartbeat {
            stop,
            fenced,
            thread: Some(thread),
            shared: mine,
            claim,
            role,
            host,
            beat,
        })
    }

    /// Puts `cmd` in the command area and writes a beat with it now (the
    /// connector's verdict on the initiator's proof).
    pub fn set_command(&mut self, cmd: &[u8]) -> Result<(), Error> {
        let mut st = self.beat.lock().unwrap_or_else(|p| p.into_inner());
        st.0 += 1;
        st.1 = cmd.to_vec();
        let lease = Lease {
            role: self.role,
            state: LEASE_ALIVE,
            generation: self.claim.generation,
            counter: st.0,
            timestamp: now_ns(),
            host: self.host,
            pid: std::process::id(),
        };
        write_lease_if_owner(&mut self.shared, self.claim, self.role, &lease, &st.1)
    }

    /// Whether the heartbeat stopped because the slot is no longer ours.
    pub fn fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// Stops beating and marks the lease closed cleanly, so the peer sees a
    /// close rather than waiting for the lease to expire. A fenced
    /// heartbeat writes nothing and returns [`Error::Fenced`].
    pub fn stop(mut self) -> Result<(), Error> {
        self.halt()?;
        let lease = Lease {
            role: self.role,
            state: LEASE_CLOSED,
            generation: self.claim.generation,
            counter: u64::MAX,
            timestamp: now_ns(),
            host: self.host,
            pid: std::process::id(),
        };
        // The command area stays as it was (a refusal's verdict with it).
        let cmd = self
            .beat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone();
        write_lease_if_owner(&mut self.shared, self.claim, self.role, &lease, &cmd)
    }

    fn halt(&mut self) -> Result<(), Error> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => {
                t.thread().unpark();
                t.join()
                    .map_err(|_| Error::Thread("heartbeat thread panicked".into()))?
            }
            None => Ok(()),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        // Stop beating; without an explicit stop the peer sees expiry, which
        // is the truth about a connection we abandoned.
        let _ = self.halt();
    }
}

/// Watches the peer's lease.
#[derive(Debug, Clone)]
pub struct PeerWatch {
    claim: Claim,
    peer: Role,
    timeout: Duration,
    last: Option<u64>,
    since: Instant,
}

impl PeerWatch {
    /// Watches `peer`'s lease of this connection with the MCB's lease timeout.
    pub fn new(shared: &Shared, claim: Claim, peer: Role) -> PeerWatch {
        PeerWatch {
            claim,
            peer,
            timeout: Duration::from_millis(u64::from(shared.mcb().lease_timeout_ms)),
            last: None,
            since: Instant::now(),
        }
    }

    /// `Ok` while the peer lives (or has not started beating yet within the
    /// timeout); [`Error::PeerClosed`] or [`Error::PeerDead`] otherwise.
    pub fn check(&mut self, shared: &mut Shared) -> Result<(), Error> {
        let lease = read_lease(shared, self.claim.slot, self.peer)?;
        let current = lease.generation == self.claim.generation;
        if current && lease.state == LEASE_CLOSED {
            return Err(Error::PeerClosed {
                slot: self.claim.slot,
                peer: self.peer.to_string(),
            });
        }
        let counter = if current && lease.state == LEASE_ALIVE {
            Some(lease.counter)
        } else {
            None
        };
        if counter.is_some() && counter != self.last {
            self.last = counter;
            self.since = Instant::now();
            return Ok(());
        }
        let silent = self.since.elapsed();
        if silent > self.timeout {
            return Err(Error::PeerDead {
                slot: self.claim.slot,
                peer: self.peer.to_string(),
                silent,
            });
        }
        Ok(())
    }
}
