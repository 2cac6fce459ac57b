//! The wrapper: [`FaultDevice`] and the state its handles share, [`Faults`].

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{self, Write as _};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fts_blockdev::{AlignedBuf, BlockDevice, DeviceIdentity, WriteMode};

use crate::rng::SplitMix64;
use crate::{Error, Fault, FaultPlan, Injected, Injection, Op, Rule, Stats, TornEnd};

/// Injections kept in memory; beyond this only [`Stats`] count.
const LOG_CAP: usize = 100_000;

#[derive(Debug)]
struct RuleState {
    rule: Rule,
    seen: u64,
    fired: u64,
}

#[derive(Debug)]
struct State {
    rules: Vec<RuleState>,
    rng: SplitMix64,
    armed: bool,
    crashed: bool,
    bandwidth: Option<u64>,
    next_free: Instant,
    op_index: u64,
    next_handle: u32,
    stats: Stats,
    log: Vec<Injection>,
    log_file: Option<File>,
}

#[derive(Debug)]
struct Shared {
    start: Instant,
    state: Mutex<State>,
}

/// The plan, counters and log shared by every handle of one
/// [`FaultDevice`] (the original and all its [`reopen`](BlockDevice::reopen)ed
/// handles). Cheap to clone; keep one to inspect or steer the faults while
/// the device is in use elsewhere.
#[derive(Clone)]
pub struct Faults(Arc<Shared>);

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state();
        f.debug_struct("Faults")
            .field("rules", &s.rules.len())
            .field("armed", &s.armed)
            .field("crashed", &s.crashed)
            .field("stats", &s.stats)
            .finish_non_exhaustive()
    }
}

enum Outcome {
    Pass,
    Fail(i32),
    Torn { kept: usize, then: TornEnd },
    Drop,
    Dead,
}

struct Decision {
    delay: Duration,
    throttle_until: Option<Instant>,
    /// Absolute device bit positions.
    flips: Vec<u64>,
    outcome: Outcome,
}

impl Faults {
    fn new(plan: FaultPlan) -> Result<Faults, Error> {
        plan.validate()?;
        let log_file = match &plan.log_file {
            None => None,
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| Error::LogFile {
                        path: path.clone(),
                        source,
                    })?,
            ),
        };
        let start = Instant::now();
        Ok(Faults(Arc::new(Shared {
            start,
            state: Mutex::new(State {
                rules: plan
                    .rules
                    .into_iter()
                    .map(|rule| RuleState {
                        rule,
                        seen: 0,
                        fired: 0,
                    })
                    .collect(),
                rng: SplitMix64::new(plan.seed),
                armed: true,
                crashed: false,
                bandwidth: plan.bandwidth,
                next_free: start,
                op_index: 0,
                next_handle: 1,
                stats: Stats::default(),
                log: Vec::new(),
                log_file,
            }),
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent
        // counters; carry on with them.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every injection so far, in order (at most the first 100,000).
    pub fn log(&self) -> Vec<Injection> {
        self.state().log.clone()
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.state().stats.clone()
    }

    /// How many times rule `rule` (its index in the plan) has fired; 0 for
    /// an index that does not exist.
    pub fn fired(&self, rule: usize) -> u64 {
        self.state().rules.get(rule).map_or(0, |r| r.fired)
    }

    /// How many operations rule `rule` has matched (fired or not).
    pub fn seen(&self, rule: usize) -> u64 {
        self.state().rules.get(rule).map_or(0, |r| r.seen)
    }

    /// Adds a rule at the end of the plan; returns its index. Its counts
    /// start now, but its [`after`](Rule::after) still counts from the
    /// wrapper's creation.
    pub fn add_rule(&self, rule: Rule) -> Result<usize, Error> {
        let mut s = self.state();
        let index = s.rules.len();
        rule.validate(index)?;
        s.rules.push(RuleState {
            rule,
            seen: 0,
            fired: 0,
        });
        Ok(index)
    }

    /// Suspends (`false`) or resumes (`true`) every rule: while suspended,
    /// rules neither count nor fire. The bandwidth cap and a crash stay in
    /// force. A new wrapper starts armed.
    pub fn set_armed(&self, armed: bool) {
        self.state().armed = armed;
    }

    /// Whether the rules are in force.
    pub fn armed(&self) -> bool {
        self.state().armed
    }

    /// Whether a crash made the device dead.
    pub fn crashed(&self) -> bool {
        self.state().crashed
    }

    /// Brings a crashed device back (a restarted process's view).
    pub fn revive(&self) {
        self.state().crashed = false;
    }

    /// Sets or removes the bandwidth cap (bytes per second).
    pub fn set_bandwidth(&self, bytes_per_second: Option<u64>) -> Result<(), Error> {
        if bytes_per_second == Some(0) {
            return Err(Error::Invalid {
                rule: usize::MAX,
                reason: "a bandwidth of 0 bytes/s never completes anything".into(),
            });
        }
        self.state().bandwidth = bytes_per_second;
        Ok(())
    }

    fn new_handle(&self) -> u32 {
        let mut s = self.state();
        let h = s.next_handle;
        s.next_handle = s.next_handle.wrapping_add(1);
        h
    }

    /// Decides what happens to one operation, counts and logs it.
    fn decide(&self, handle: u32, op: Op, offset: u64, len: usize, block: u32) -> Decision {
        let elapsed = self.0.start.elapsed();
        let mut guard = self.state();
        let s = &mut *guard;
        let op_index = s.op_index;
        s.op_index += 1;
        match op {
            Op::Read => s.stats.reads += 1,
            Op::Write => s.stats.writes += 1,
            Op::Flush => s.stats.flushes += 1,
        }
        let mut d = Decision {
            delay: Duration::ZERO,
            throttle_until: None,
            flips: Vec::new(),
            outcome: Outcome::Pass,
        };
        let mut injections = Vec::new();
        let entry = |rule, what| Injection {
            op_index,
            elapsed,
            handle,
            op,
            offset,
            len,
            rule,
            what,
        };
        if s.crashed {
            s.stats.dead += 1;
            d.outcome = Outcome::Dead;
            injections.push(entry(None, Injected::Dead));
        } else if s.armed {
            let blocks = (len / block.max(1) as usize) as u64;
            for (i, r) in s.rules.iter_mut().enumerate() {
                if !r.rule.matches(op, offset, len, elapsed) {
                    continue;
                }
                if matches!(r.rule.fault, Fault::Torn { .. }) && blocks < 2 {
                    continue;
                }
                r.seen += 1;
                if r.seen <= r.rule.skip || r.rule.times.is_some_and(|t| r.fired >= t) {
                    continue;
                }
                let outcome_taken = !matches!(d.outcome, Outcome::Pass);
                if r.rule.fault.is_outcome() && outcome_taken {
                    continue;
                }
                if !s.rng.chance(r.rule.probability) {
                    continue;
                }
                r.fired += 1;
                let what = match &r.rule.fault {
                    Fault::Latency(t) => {
                        d.delay += *t;
                        s.stats.delayed += 1;
                        Injected::Delayed(*t)
                    }
                    Fault::Flip { bits } => {
                        let (lo, hi) = match &r.rule.range {
                            Some(range) => (
                                offset.max(range.start),
                                offset.saturating_add(len as u64).min(range.end),
                            ),
                            None => (offset, offset.saturating_add(len as u64)),
                        };
                        let total = hi.saturating_sub(lo).saturating_mul(8);
                        let want = u64::from(*bits).min(total);
                        let mut chosen = BTreeSet::new();
                        while (chosen.len() as u64) < want {
                            chosen.insert(lo * 8 + s.rng.below(total));
                        }
                        let bits: Vec<u64> = chosen.into_iter().collect();
                        s.stats.flipped += 1;
                        s.stats.bits_flipped += bits.len() as u64;
                        d.flips.extend(&bits);
                        Injected::Flipped { bits }
                    }
                    Fault::Fail { errno } => {
                        s.stats.failed += 1;
                        d.outcome = Outcome::Fail(*errno);
                        Injected::Failed { errno: *errno }
                    }
                    Fault::Drop => {
                        s.stats.dropped += 1;
                        d.outcome = Outcome::Drop;
                        Injected::Dropped
                    }
                    Fault::Crash => {
                        s.stats.crashes += 1;
                        s.crashed = true;
                        d.outcome = Outcome::Fail(libc::EIO);
                        Injected::Crashed
                    }
                    Fault::Torn { keep, then } => {
                        let k = match keep {
                            Some(k) => u64::from(*k).min(blocks - 1),
                            None => s.rng.below(blocks),
                        };
                        let kept = k as usize * block as usize;
                        s.stats.torn += 1;
                        if *then == TornEnd::Crash {
                            s.stats.crashes += 1;
                            s.crashed = true;
                        }
                        d.outcome = Outcome::Torn { kept, then: *then };
                        Injected::Torn { kept, then: *then }
                    }
                };
                injections.push(entry(Some(i), what));
            }
        }
        let moves_data =
            op != Op::Flush && matches!(d.outcome, Outcome::Pass | Outcome::Torn { .. });
        if let (Some(rate), true) = (s.bandwidth, moves_data) {
            let now = Instant::now();
            let begin = s.next_free.max(now);
            let nanos = (len as u128 * 1_000_000_000 / u128::from(rate)).min(u128::from(u64::MAX));
            let end = begin + Duration::from_nanos(nanos as u64);
            s.next_free = end;
            s.stats.throttled += end - now;
            d.throttle_until = Some(end);
        }
        for inj in injections {
            if let Some(file) = &mut s.log_file {
                if writeln!(file, "{inj}").is_err() {
                    s.stats.log_file_errors += 1;
                }
            }
            if s.log.len() < LOG_CAP {
                s.log.push(inj);
            } else {
                s.stats.log_overflow += 1;
            }
        }
        d
    }
}

impl Decision {
    fn wait(&self) {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        if let Some(until) = self.throttle_until {
            let now = Instant::now();
            if until > now {
                std::thread::sleep(until - now);
            }
        }
    }
}

fn flip(buf: &mut [u8], offset: u64, bits: &[u64]) {
    for &b in bits {
        let byte = (b / 8)
            .checked_sub(offset)
            .and_then(|i| usize::try_from(i).ok());
        if let Some(x) = byte.and_then(|i| buf.get_mut(i)) {
            *x ^= 1 << (b % 8);
        }
    }
}

/// A [`BlockDevice`] that passes every operation to the device it wraps,
/// except that it injects the faults of its [`FaultPlan`].
///
/// Its handles ([`reopen`](BlockDevice::reopen)) share the plan, the
/// counters, the random generator, the crash state and the log
/// ([`Faults`]), as the threads of one process share one device: "the
/// third write" counts the writes of every handle, and a crash kills them
/// all. Block size, size, identity and location are the wrapped device's.
#[derive(Debug)]
pub struct FaultDevice {
    inner: Box<dyn BlockDevice>,
    faults: Faults,
    handle: u32,
}

impl FaultDevice {
    /// Wraps `inner` with `plan` (checked first; the plan's log file, if
    /// any, is opened for appending).
    pub fn new(inner: Box<dyn BlockDevice>, plan: FaultPlan) -> Result<FaultDevice, Error> {
        Ok(FaultDevice {
            inner,
            faults: Faults::new(plan)?,
            handle: 0,
        })
    }

    /// The shared plan state, counters and log.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// This handle's number in the log (0 for the first).
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The wrapped device.
    pub fn inner(&self) -> &dyn BlockDevice {
        self.inner.as_ref()
    }

    fn io_err(&self, op: &'static str, offset: u64, len: usize, errno: i32) -> fts_blockdev::Error {
        fts_blockdev::Error::Io {
            op,
            location: self.inner.location().to_owned(),
            offset,
            len,
            source: io::Error::from_raw_os_error(errno),
        }
    }
}

impl BlockDevice for FaultDevice {
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }

    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }

    fn identity(&self) -> &DeviceIdentity {
        self.inner.identity()
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), fts_blockdev::Error> {
        let d = self
            .faults
            .decide(self.handle, Op::Read, offset, buf.len(), self.block_size());
        d.wait();
        match d.outcome {
            Outcome::Fail(errno) => Err(self.io_err("read", offset, buf.len(), errno)),
            Outcome::Dead => Err(self.io_err("read", offset, buf.len(), libc::EIO)),
            Outcome::Pass | Outcome::Torn { .. } | Outcome::Drop => {
                self.inner.read_at(offset, buf)?;
                flip(buf, offset, &d.flips);
                Ok(())
            }
        }
    }

    fn write_at(
        &mut self,
        offset: u64,
        buf: &[u8],
        mode: WriteMode,
    ) -> Result<(), fts_blockdev::Error> {
        let d = self
            .faults
            .decide(self.handle, Op::Write, offset, buf.len(), self.block_size());
        d.wait();
        let flipped;
        let data = if d.flips.is_empty() {
            buf
        } else {
            let mut copy = AlignedBuf::new(buf.len())?;
            copy.copy_from_slice(buf);
            flip(&mut copy, offset, &d.flips);
            flipped = copy;
            &flipped[..]
        };
        match d.outcome {
            Outcome::Pass => self.inner.write_at(offset, data, mode),
            Outcome::Drop => Ok(()),
            Outcome::Fail(errno) => Err(self.io_err("write", offset, buf.len(), errno)),
            Outcome::Dead => Err(self.io_err("write", offset, buf.len(), libc::EIO)),
            Outcome::Torn { kept, then } => {
                if kept > 0 {
                    self.inner.write_at(offset, &data[..kept], mode)?;
                }
                match then {
                    TornEnd::Silent => Ok(()),
                    TornEnd::Error | TornEnd::Crash => {
                        Err(self.io_err("write", offset, buf.len(), libc::EIO))
                    }
                }
            }
        }
    }

    fn flush(&mut self) -> Result<(), fts_blockdev::Error> {
        let d = self
            .faults
            .decide(self.handle, Op::Flush, 0, 0, self.block_size());
        d.wait();
        let fail = |errno| fts_blockdev::Error::Flush {
            location: self.inner.location().to_owned(),
            source: io::Error::from_raw_os_error(errno),
        };
        match d.outcome {
            Outcome::Pass | Outcome::Torn { .. } => self.inner.flush(),
            Outcome::Drop => Ok(()),
            Outcome::Fail(errno) => Err(fail(errno)),
            Outcome::Dead => Err(fail(libc::EIO)),
        }
    }

    fn reopen(&self) -> Result<Box<dyn BlockDevice>, fts_blockdev::Error> {
        Ok(Box::new(FaultDevice {
            inner: self.inner.reopen()?,
            faults: self.faults.clone(),
            handle: self.faults.new_handle(),
        }))
    }

    fn location(&self) -> &str {
        self.inner.location()
    }
}
