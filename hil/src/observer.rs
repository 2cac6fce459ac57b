//! An independent witness of the shared LUN's reservations.
//!
//! **For**: scenario evidence that does not come from fts. A thread logs
//! in to the target as an initiator of its own, through libiscsi's own
//! synchronous API (`iscsi_persistent_reserve_in_sync`, parsed by
//! libiscsi's `scsi_datain_unmarshall`, and `iscsi_testunitready_sync`),
//! and samples every few milliseconds: the registered PR keys, the PR
//! holder and its type, and whether TEST UNIT READY meets a RESERVATION
//! CONFLICT (a SCSI-2 RESERVE(6) held by another nexus). None of fts's
//! CDB builders or decoders is involved.
//!
//! [`judge_takeover`] then reads the timeline of a holder crash: who held
//! the lock before the crash, that the dead holder kept it for a while,
//! when it changed hands (as this witness saw it), and that nothing was
//! left at the end.
//!
//! **Not for**: anything fts itself runs. The witness is read-only: it
//! never registers, reserves or writes.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Error;

/// What one sample saw of the LU's reservation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// When the sample's first command was sent.
    pub from: Instant,
    /// When the sample was complete.
    pub at: Instant,
    /// The registered PR keys (READ KEYS), in the target's order.
    pub keys: Vec<u64>,
    /// The PR holder's key and type (READ RESERVATION), if any.
    pub holder: Option<(u64, u8)>,
    /// What TEST UNIT READY returned.
    pub unit: Unit,
}

/// The result of the witness's TEST UNIT READY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// GOOD: no RESERVE(6) of another nexus blocks the LU.
    Ready,
    /// RESERVATION CONFLICT: another nexus holds a RESERVE(6).
    Conflict,
    /// CHECK CONDITION (e.g. the unit attention 29/00 after a LUN reset).
    CheckCondition,
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.holder {
            Some((key, ty)) => write!(f, "PR holder {key:#018x} (type {ty})")?,
            None => write!(f, "no PR holder")?,
        }
        let keys: Vec<String> = self.keys.iter().map(|k| format!("{k:#018x}")).collect();
        write!(f, ", registered [{}]", keys.join(", "))?;
        match self.unit {
            Unit::Ready => write!(f, ", TEST UNIT READY good"),
            Unit::Conflict => write!(
                f,
                ", TEST UNIT READY: RESERVATION CONFLICT (RESERVE(6) held)"
            ),
            Unit::CheckCondition => write!(f, ", TEST UNIT READY: CHECK CONDITION"),
        }
    }
}

/// Where the witness logs in.
#[derive(Debug, Clone)]
pub struct ObserverOptions {
    /// Run the witness's socket inside this network namespace
    /// (`/var/run/netns/NAME`), or in the caller's.
    pub netns: Option<String>,
    /// The LUN's URL, `iscsi://HOST:PORT/IQN/LUN`.
    pub url: String,
    /// The witness's own initiator name (a nexus of its own).
    pub initiator: String,
    /// Time between samples.
    pub interval: Duration,
}

/// A running witness; stop it with [`Observer::stop`] (or drop it).
#[derive(Debug)]
pub struct Observer {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Log {
    samples: Vec<Observation>,
    /// The last failure (login, a command that could not be delivered).
    error: Option<String>,
}

fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

impl Observer {
    /// Starts the witness and waits (at most 15 s) for its first sample.
    pub fn start(opts: ObserverOptions) -> Result<Observer, Error> {
        let (portal, target, lun) = parse_url(&opts.url)?;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let thread = {
            let stop = Arc::clone(&stop);
            let log = Arc::clone(&log);
            let opts = opts.clone();
            std::thread::Builder::new()
                .name("hil-observer".into())
                .spawn(move || watch(&opts, &portal, &target, lun, &stop, &log))
                .map_err(|source| Error::Spawn {
                    command: "the observer thread".into(),
                    source,
                })?
        };
        let observer = Observer {
            stop,
            log,
            thread: Some(thread),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            {
                let log = lock(&observer.log);
                if !log.samples.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::Provision {
                        what: format!(
                            "the independent observer got no sample of {} within 15 s: {}",
                            opts.url,
                            log.error.as_deref().unwrap_or("no error reported")
                        ),
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(observer)
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<Observation> {
        lock(&self.log).samples.clone()
    }

    /// The first sample begun at or after `after`, waiting up to 5 s for
    /// it.
    pub fn sample_after(&self, after: Instant) -> Result<Observation, String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            {
                let log = lock(&self.log);
                if let Some(o) = log.samples.iter().find(|o| o.from >= after) {
                    return Ok(o.clone());
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "the independent observer took no sample for 5 s: {}",
                        log.error.as_deref().unwrap_or("no error reported")
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the witness and returns its timeline.
    pub fn stop(mut self) -> Vec<Observation> {
        self.halt();
        std::mem::take(&mut lock(&self.log).samples)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// `iscsi://HOST:PORT/IQN/LUN` → (`HOST:PORT`, IQN, LUN).
fn parse_url(url: &str) -> Result<(String, String, i32), Error> {
    let bad = || Error::InvalidArgument {
        what: format!("{url:?} is not iscsi://HOST:PORT/IQN/LUN"),
    };
    let rest = url.strip_prefix("iscsi://").ok_or_else(bad)?;
    let mut parts = rest.splitn(3, '/');
    let portal = parts.next().filter(|s| !s.is_empty()).ok_or_else(bad)?;
    let iqn = parts.next().filter(|s| !s.is_empty()).ok_or_else(bad)?;
    let lun = parts
        .next()
        .and_then(|l| l.parse::<i32>().ok())
        .ok_or_else(bad)?;
    Ok((portal.to_owned(), iqn.to_owned(), lun))
}

/// The witness thread: (re)connects, samples, until stopped.
fn watch(
    opts: &ObserverOptions,
    portal: &str,
    target: &str,
    lun: i32,
    stop: &AtomicBool,
    log: &Mutex<Log>,
) {
    let fail = |e: String| lock(log).error = Some(e);
    if let Some(ns) = &opts.netns {
        if let Err(e) = enter_netns(ns) {
            fail(e);
            return;
        }
    }
    let lib = match Lib::load() {
        Ok(l) => l,
        Err(e) => {
            fail(e);
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let session = match Session::login(&lib, &opts.initiator, portal, target, lun) {
            Ok(s) => s,
            Err(e) => {
                fail(e);
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            match session.sample() {
                Ok(o) => lock(log).samples.push(o),
                Err(e) => {
                    fail(e);
                    break; // log in again
                }
            }
            std::thread::sleep(opts.interval);
        }
    }
}

/// Moves the calling thread into the named network namespace.
fn enter_netns(ns: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: `f` is an open namespace file for the whole call; setns only
    // changes the calling thread's network namespace (this thread's alone:
    // CLONE_NEWNET does not affect the process's other threads).
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!(
            "setns({path}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

// ---- libiscsi, loaded at run time ------------------------------------------

/// Opaque `struct iscsi_context`.
#[repr(C)]
struct Ctx {
    _private: [u8; 0],
}

/// The head of `struct scsi_task` (libiscsi 1.19 `scsi-lowlevel.h`): its
/// first member is `int status`. Only that member is read.
#[repr(C)]
struct TaskHead {
    status: c_int,
}

/// `struct scsi_persistent_reserve_in_read_keys`.
#[repr(C)]
struct ReadKeys {
    prgeneration: u32,
    additional_length: u32,
    num_keys: c_int,
    keys: [u64; 0],
}

/// `struct scsi_persistent_reserve_in_read_reservation`.
#[repr(C)]
struct ReadReservation {
    prgeneration: u32,
    additional_length: u32,
    reserved: c_int,
    reservation_key: u64,
    pr_scope: u8,
    pr_type: u8,
}

const SESSION_NORMAL: c_int = 2;
const STATUS_GOOD: c_int = 0;
const STATUS_CHECK_CONDITION: c_int = 2;
const STATUS_RESERVATION_CONFLICT: c_int = 0x18;
const PR_READ_KEYS: c_int = 0;
const PR_READ_RESERVATION: c_int = 1;

type CreateContext = unsafe extern "C" fn(*const c_char) -> *mut Ctx;
type SetString = unsafe extern "C" fn(*mut Ctx, *const c_char) -> c_int;
type SetInt = unsafe extern "C" fn(*mut Ctx, c_int) -> c_int;
type SetFlag = unsafe extern "C" fn(*mut Ctx, c_int);
type FullConnect = unsafe extern "C" fn(*mut Ctx, *const c_char, c_int) -> c_int;
type CtxOnly = unsafe extern "C" fn(*mut Ctx) -> c_int;
type GetError = unsafe extern "C" fn(*mut Ctx) -> *const c_char;
type Tur = unsafe extern "C" fn(*mut Ctx, c_int) -> *mut TaskHead;
type PrIn = unsafe extern "C" fn(*mut Ctx, c_int, c_int, u16) -> *mut TaskHead;
type Unmarshall = unsafe extern "C" fn(*mut TaskHead) -> *mut c_void;
type FreeTask = unsafe extern "C" fn(*mut TaskHead);

/// The libiscsi functions the witness calls.
struct Lib {
    _lib: libloading::Library,
    create_context: CreateContext,
    destroy_context: CtxOnly,
    set_targetname: SetString,
    set_session_type: SetInt,
    set_timeout: SetInt,
    set_noautoreconnect: SetFlag,
    full_connect_sync: FullConnect,
    logout_sync: CtxOnly,
    get_error: GetError,
    testunitready_sync: Tur,
    persistent_reserve_in_sync: PrIn,
    datain_unmarshall: Unmarshall,
    free_scsi_task: FreeTask,
}

impl Lib {
    fn load() -> Result<Lib, String> {
        let mut tried = Vec::new();
        for name in ["libiscsi.so.7", "libiscsi.so"] {
            // SAFETY: loading libiscsi runs its ELF initialisers, which only
            // set up library state. Each symbol below is declared with the
            // signature of libiscsi 1.19's `iscsi.h`/`scsi-lowlevel.h`, and
            // the `Library` is kept in the returned value, so the function
            // pointers never outlive the mapping.
            let lib = match unsafe { libloading::Library::new(name) } {
                Ok(l) => l,
                Err(e) => {
                    tried.push(format!("{name}: {e}"));
                    continue;
                }
            };
            macro_rules! sym {
                ($name:literal) => {
                    // SAFETY: see above: the type matches the C prototype.
                    *unsafe { lib.get($name) }
                        .map_err(|e| format!("{name}: {}: {e}", String::from_utf8_lossy($name)))?
                };
            }
            return Ok(Lib {
                create_context: sym!(b"iscsi_create_context"),
                destroy_context: sym!(b"iscsi_destroy_context"),
                set_targetname: sym!(b"iscsi_set_targetname"),
                set_session_type: sym!(b"iscsi_set_session_type"),
                set_timeout: sym!(b"iscsi_set_timeout"),
                set_noautoreconnect: sym!(b"iscsi_set_noautoreconnect"),
                full_connect_sync: sym!(b"iscsi_full_connect_sync"),
                logout_sync: sym!(b"iscsi_logout_sync"),
                get_error: sym!(b"iscsi_get_error"),
                testunitready_sync: sym!(b"iscsi_testunitready_sync"),
                persistent_reserve_in_sync: sym!(b"iscsi_persistent_reserve_in_sync"),
                datain_unmarshall: sym!(b"scsi_datain_unmarshall"),
                free_scsi_task: sym!(b"scsi_free_scsi_task"),
                _lib: lib,
            });
        }
        Err(format!(
            "libiscsi could not be loaded (apt-get install libiscsi7): {}",
            tried.join("; ")
        ))
    }
}

/// One logged-in witness session; logged out when dropped.
struct Session<'a> {
    lib: &'a Lib,
    ctx: *mut Ctx,
    lun: c_int,
}

impl<'a> Session<'a> {
    fn login(
        lib: &'a Lib,
        initiator: &str,
        portal: &str,
        target: &str,
        lun: i32,
    ) -> Result<Session<'a>, String> {
        let cstr = |s: &str| CString::new(s).map_err(|_| format!("{s:?} contains NUL"));
        let (initiator, portal, target) = (cstr(initiator)?, cstr(portal)?, cstr(target)?);
        // SAFETY: `initiator` is a NUL-terminated string that outlives the
        // call; libiscsi copies it. A null result is handled below.
        let ctx = unsafe { (lib.create_context)(initiator.as_ptr()) };
        if ctx.is_null() {
            return Err("iscsi_create_context failed".into());
        }
        // From here on `Drop` destroys the context.
        let s = Session { lib, ctx, lun };
        // SAFETY: `ctx` is a live context used by this thread only; the
        // strings are NUL-terminated and outlive the calls (libiscsi copies
        // them).
        let rcs = unsafe {
            [
                (lib.set_targetname)(ctx, target.as_ptr()),
                (lib.set_session_type)(ctx, SESSION_NORMAL),
            ]
        };
        // SAFETY: as above (it returns nothing).
        unsafe { (lib.set_noautoreconnect)(ctx, 1) };
        // SAFETY: as above. It returns the previous timeout, not a status.
        unsafe { (lib.set_timeout)(ctx, 5) };
        if rcs.iter().any(|&rc| rc != 0) {
            return Err(format!("configuring the observer's context: {}", s.error()));
        }
        // SAFETY: as above.
        if unsafe { (lib.full_connect_sync)(ctx, portal.as_ptr(), lun) } != 0 {
            return Err(format!(
                "observer login to {}: {}",
                portal.to_string_lossy(),
                s.error()
            ));
        }
        Ok(s)
    }

    fn error(&self) -> String {
        // SAFETY: `ctx` is live; the returned string belongs to the context
        // and is copied before the next libiscsi call.
        let p = unsafe { (self.lib.get_error)(self.ctx) };
        if p.is_null() {
            return "unknown libiscsi error".into();
        }
        // SAFETY: libiscsi returns a NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    fn sample(&self) -> Result<Observation, String> {
        let from = Instant::now();
        let keys = self.read_keys()?;
        let holder = self.read_reservation()?;
        let unit = self.test_unit_ready()?;
        Ok(Observation {
            from,
            at: Instant::now(),
            keys,
            holder,
            unit,
        })
    }

    /// Runs `f` on a finished task and frees it; None for a command that
    /// was not delivered.
    fn task<T>(
        &self,
        what: &str,
        task: *mut TaskHead,
        f: impl FnOnce(*mut TaskHead, c_int) -> Result<T, String>,
    ) -> Result<T, String> {
        if task.is_null() {
            return Err(format!("{what}: {}", self.error()));
        }
        // SAFETY: a non-null task returned by a *_sync call is complete and
        // ours until freed; `status` is its first member.
        let status = unsafe { (*task).status };
        let out = f(task, status);
        // SAFETY: freed exactly once, after its last use inside `f`.
        unsafe { (self.lib.free_scsi_task)(task) };
        out
    }

    fn read_keys(&self) -> Result<Vec<u64>, String> {
        // SAFETY: live context, this thread only.
        let t = unsafe {
            (self.lib.persistent_reserve_in_sync)(self.ctx, self.lun, PR_READ_KEYS, 4096)
        };
        self.task("PR IN READ KEYS", t, |t, status| {
            if status != STATUS_GOOD {
                return Err(format!("PR IN READ KEYS: status {status:#x}"));
            }
            // SAFETY: the task is complete with GOOD status; libiscsi's
            // unmarshaller returns memory owned by the task (freed with it)
            // laid out as `ReadKeys`, or null.
            let p = unsafe { (self.lib.datain_unmarshall)(t) }.cast::<ReadKeys>();
            if p.is_null() {
                return Err("PR IN READ KEYS: libiscsi could not parse the reply".into());
            }
            // SAFETY: `p` points at a `ReadKeys` followed by `num_keys`
            // keys, all inside the task's memory.
            let keys = unsafe {
                let n = usize::try_from((*p).num_keys).unwrap_or(0);
                let first = std::ptr::addr_of!((*p).keys).cast::<u64>();
                std::slice::from_raw_parts(first, n).to_vec()
            };
            Ok(keys)
        })
    }

    fn read_reservation(&self) -> Result<Option<(u64, u8)>, String> {
        // SAFETY: live context, this thread only.
        let t = unsafe {
            (self.lib.persistent_reserve_in_sync)(self.ctx, self.lun, PR_READ_RESERVATION, 4096)
        };
        self.task("PR IN READ RESERVATION", t, |t, status| {
            if status != STATUS_GOOD {
                return Err(format!("PR IN READ RESERVATION: status {status:#x}"));
            }
            // SAFETY: as in `read_keys`, laid out as `ReadReservation`.
            let p = unsafe { (self.lib.datain_unmarshall)(t) }.cast::<ReadReservation>();
            if p.is_null() {
                return Err("PR IN READ RESERVATION: libiscsi could not parse the reply".into());
            }
            // SAFETY: `p` points at a complete `ReadReservation`.
            let r = unsafe { &*p };
            // libiscsi sets `reserved` to 1 when the target reports a
            // reservation (it leaves `additional_length` zero).
            let _ = (r.prgeneration, r.additional_length, r.pr_scope);
            Ok((r.reserved != 0).then_some((r.reservation_key, r.pr_type)))
        })
    }

    fn test_unit_ready(&self) -> Result<Unit, String> {
        // SAFETY: live context, this thread only.
        let t = unsafe { (self.lib.testunitready_sync)(self.ctx, self.lun) };
        self.task("TEST UNIT READY", t, |_, status| match status {
            STATUS_GOOD => Ok(Unit::Ready),
            STATUS_RESERVATION_CONFLICT => Ok(Unit::Conflict),
            STATUS_CHECK_CONDITION => Ok(Unit::CheckCondition),
            other => Err(format!("TEST UNIT READY: status {other:#x}")),
        })
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // SAFETY: `ctx` is live and used by nothing else; it is not used
        // after this.
        unsafe {
            (self.lib.logout_sync)(self.ctx);
            (self.lib.destroy_context)(self.ctx);
        }
    }
}

// ---- judging a holder crash -------------------------------------------------

/// Whose lock the scenario crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Victim {
    /// A persistent-reservation holder with this key.
    Key(u64),
    /// A SCSI-2 RESERVE(6) holder (no key: seen as a RESERVATION CONFLICT
    /// on the witness's TEST UNIT READY).
    Reserve6,
}

impl Victim {
    /// Whether `o` still shows the victim's lock.
    pub fn holds(self, o: &Observation) -> bool {
        match self {
            Victim::Key(k) => o.holder.map(|h| h.0) == Some(k) || o.keys.contains(&k),
            Victim::Reserve6 => o.unit == Unit::Conflict,
        }
    }
}

impl fmt::Display for Victim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Victim::Key(k) => write!(f, "key {k:#018x}"),
            Victim::Reserve6 => write!(f, "RESERVE(6)"),
        }
    }
}

/// What the witness saw of a holder crash, as [`judge_takeover`] found it.
#[derive(Debug, Clone)]
pub struct Takeover {
    /// Whose lock was taken over.
    pub victim: Victim,
    /// The last sample before the crash (the victim holds the lock).
    pub before: Observation,
    /// Samples after the crash in which the dead victim still held it.
    pub during: usize,
    /// The first sample after the crash without the victim's lock.
    pub after: Observation,
    /// From the crash to `after`.
    pub took: Duration,
}

impl fmt::Display for Takeover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "before the crash: {}; during: the dead holder's {} stayed for {} samples; after: taken over {:.2}s after the crash: {}",
            self.before,
            self.victim,
            self.during,
            self.took.as_secs_f64(),
            self.after
        )
    }
}

/// Judges a holder crash from the witness's timeline alone: the victim
/// must hold the lock right before `crash`, keep it (dead) for at least
/// one sample after it, and lose it no sooner than `earliest` and no later
/// than `latest` after the crash. The sampling interval only ever makes
/// the takeover look later, never earlier, so the lower bound is sound.
pub fn judge_takeover(
    samples: &[Observation],
    crash: Instant,
    victim: Victim,
    earliest: Duration,
    latest: Duration,
) -> Result<Takeover, String> {
    let before = samples
        .iter()
        .rev()
        .find(|o| o.at < crash)
        .ok_or("the witness took no sample before the crash")?;
    if !victim.holds(before) {
        return Err(format!(
            "right before the crash the witness did not see the victim's {victim}: {before}"
        ));
    }
    let after_crash: Vec<&Observation> = samples.iter().filter(|o| o.at >= crash).collect();
    let lost = after_crash
        .iter()
        .position(|o| !victim.holds(o))
        .ok_or_else(|| {
            format!(
                "the victim's {victim} was never taken over ({} samples after the crash)",
                after_crash.len()
            )
        })?;
    if lost == 0 {
        return Err(format!(
            "the witness saw no sample in which the dead holder still held its {victim}: \
             the crash released it (or it was broken at once): {}",
            after_crash[0]
        ));
    }
    let after = after_crash[lost];
    let took = after.at.duration_since(crash);
    if took < earliest {
        return Err(format!(
            "the dead holder's {victim} was taken over {:.2}s after the crash, sooner than the \
             {:.2}s the lock allows: {after}",
            took.as_secs_f64(),
            earliest.as_secs_f64()
        ));
    }
    if took > latest {
        return Err(format!(
            "the dead holder's {victim} was taken over only {:.2}s after the crash (limit {:.2}s)",
            took.as_secs_f64(),
            latest.as_secs_f64()
        ));
    }
    Ok(Takeover {
        victim,
        before: before.clone(),
        during: lost,
        after: after.clone(),
        took,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const K: u64 = 0xfeed_0000_0000_0001;

    fn timeline(crash: Instant, points: &[(i64, Option<u64>, Unit)]) -> Vec<Observation> {
        points
            .iter()
            .map(|&(ms, holder, unit)| Observation {
                from: at(crash, ms - 3),
                at: at(crash, ms),
                keys: holder.into_iter().collect(),
                holder: holder.map(|k| (k, 5)),
                unit,
            })
            .collect()
    }

    fn at(crash: Instant, ms: i64) -> Instant {
        if ms < 0 {
            crash - Duration::from_millis(ms.unsigned_abs())
        } else {
            crash + Duration::from_millis(ms.unsigned_abs())
        }
    }

    fn bounds() -> (Duration, Duration) {
        (Duration::from_secs(2), Duration::from_secs(10))
    }

    #[test]
    fn a_takeover_after_the_lock_timeout_passes() {
        let crash = Instant::now() + Duration::from_secs(60);
        let t = timeline(
            crash,
            &[
                (-50, Some(K), Unit::Ready),
                (100, Some(K), Unit::Ready),
                (2100, Some(K), Unit::Ready),
                (2150, None, Unit::Ready),
            ],
        );
        let (lo, hi) = bounds();
        let got = judge_takeover(&t, crash, Victim::Key(K), lo, hi).unwrap();
        assert_eq!(got.during, 2);
        assert_eq!(got.took, Duration::from_millis(2150));
        assert!(got.to_string().contains("0xfeed000000000001"), "{got}");
    }

    #[test]
    fn a_broken_lock_that_ignores_the_timeout_fails() {
        let crash = Instant::now() + Duration::from_secs(60);
        let t = timeline(
            crash,
            &[
                (-50, Some(K), Unit::Ready),
                (100, Some(K), Unit::Ready),
                (400, Some(0x77), Unit::Ready),
            ],
        );
        let (lo, hi) = bounds();
        let e = judge_takeover(&t, crash, Victim::Key(K), lo, hi).unwrap_err();
        assert!(e.contains("sooner than"), "{e}");
    }

    #[test]
    fn a_crash_that_releases_the_lock_at_once_is_no_crash() {
        let crash = Instant::now() + Duration::from_secs(60);
        let t = timeline(
            crash,
            &[(-50, None, Unit::Conflict), (30, None, Unit::Ready)],
        );
        let (lo, hi) = bounds();
        let e = judge_takeover(&t, crash, Victim::Reserve6, lo, hi).unwrap_err();
        assert!(e.contains("no sample in which the dead holder"), "{e}");
    }

    #[test]
    fn no_holder_before_the_crash_fails() {
        let crash = Instant::now() + Duration::from_secs(60);
        let t = timeline(
            crash,
            &[(-50, Some(0x77), Unit::Ready), (3000, None, Unit::Ready)],
        );
        let (lo, hi) = bounds();
        assert!(judge_takeover(&t, crash, Victim::Key(K), lo, hi).is_err());
    }

    #[test]
    fn a_holder_never_taken_over_or_too_late_fails() {
        let crash = Instant::now() + Duration::from_secs(60);
        let (lo, hi) = bounds();
        let stuck = timeline(
            crash,
            &[(-50, None, Unit::Conflict), (5000, None, Unit::Conflict)],
        );
        assert!(judge_takeover(&stuck, crash, Victim::Reserve6, lo, hi)
            .unwrap_err()
            .contains("never taken over"));
        let late = timeline(
            crash,
            &[
                (-50, None, Unit::Conflict),
                (5000, None, Unit::Conflict),
                (11_000, None, Unit::CheckCondition),
            ],
        );
        assert!(judge_takeover(&late, crash, Victim::Reserve6, lo, hi)
            .unwrap_err()
            .contains("only"));
    }

    #[test]
    fn urls_parse() {
        let (p, t, l) = parse_url("iscsi://10.231.0.1:3260/iqn.2026-11.x:y/1").unwrap();
        assert_eq!(
            (p.as_str(), t.as_str(), l),
            ("10.231.0.1:3260", "iqn.2026-11.x:y", 1)
        );
        assert!(parse_url("iscsi://h/iqn").is_err());
        assert!(parse_url("/dev/sda").is_err());
    }
}
