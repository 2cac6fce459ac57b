//! SCSI devices in the CLI: opening `iscsi://`, `/dev/sgN` and `/dev/sdX`
//! locations, choosing the lock backend, the cache-destage setting, and the
//! operator commands of `fts scsi`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use fts_lock::{Holder, LockKind, ScsiLockConfig, ScsiLocks, ScsiMethod, TableLock};
use fts_scsi::cache::{CacheRequest, CacheSetting};
use fts_scsi::mode::PageControl;
use fts_scsi::pr::{PrOutParams, PrOutServiceAction, PrType};
use fts_scsi::{is_unsupported, lock_transport, Commands, IoPolicy, ScsiDevice, SharedTransport};
use fts_session::{Identity, LockFactory, Shared};

use crate::exit::{fail, Code};
use crate::out::outln;

/// How this process reaches SCSI devices; set once from the command line.
#[derive(Debug, Clone)]
pub struct ScsiConfig {
    /// iSCSI initiator name.
    pub initiator: String,
    /// Per-command timeout.
    pub timeout: Duration,
}

static CONFIG: OnceLock<ScsiConfig> = OnceLock::new();

/// Records the SCSI settings for this run (first call wins).
pub fn configure(cfg: ScsiConfig) {
    let _ = CONFIG.set(cfg);
}

fn config() -> ScsiConfig {
    CONFIG.get().cloned().unwrap_or_else(|| ScsiConfig {
        initiator: fts_scsi::initiator::default_iqn("localhost", "fts"),
        timeout: Duration::from_secs(10),
    })
}

/// The default initiator name for this host and fts name.
pub fn default_initiator(name: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    fts_scsi::initiator::default_iqn(if host.is_empty() { "localhost" } else { host }, name)
}

static NEXUSES: Mutex<Vec<SharedTransport>> = Mutex::new(Vec::new());

/// Claims `iqn` towards the target of `location` for this process on this
/// host (the I_T nexus is the pair). Two processes with one initiator name
/// would share the ISID and the reservation key: on tgt
/// they become two parallel sessions whose persistent-reservation
/// registrations the lock cannot tell apart (and a conforming target would
/// kick the first off). The claim is an OFD lock on a file named after the
/// IQN, held until the process exits.
fn claim_initiator(iqn: &str, location: &str) -> Result<()> {
    let dir = ["/run/lock", "/tmp"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .unwrap_or("/tmp");
    // The target: the URL without the LUN (all LUNs of a target share the
    // nexus).
    let target = location.rsplit_once('/').map_or(location, |(t, _)| t);
    // Each command may open the device more than once (the shell does per
    // connection); the claim is per process.
    static CLAIMED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    let key = format!("{iqn} {target}");
    if claimed.contains(&key) {
        return Ok(());
    }
    let path = std::path::PathBuf::from(format!(
        "{dir}/fts-initiator-{:016x}.lock",
        fts_scsi::initiator::pr_key_for(&format!("{iqn} {target}"))
    ));
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let lock: &'static mut fts_lock::OfdLock = Box::leak(Box::new(fts_lock::OfdLock::open(&path)?));
    match lock.try_lock()? {
        // Held until the process exits (the descriptor is never closed).
        Some(guard) => {
            std::mem::forget(guard);
            claimed.push(key);
        }
        None => {
            return Err(fail(
                Code::Usage,
                format!(
                    "another fts process on this host already uses initiator name {iqn} with \
                     {target}; give each process its own --name (or --initiator)"
                ),
            ))
        }
    }
    Ok(())
}

/// Opens a SCSI location as a block device on its own nexus.
pub fn open(location: &str) -> Result<ScsiDevice> {
    let cfg = config();
    if location.starts_with("iscsi://") {
        claim_initiator(&cfg.initiator, location)?;
    }
    let opts = fts_scsi::ScsiOptions {
        initiator: cfg.initiator.clone(),
        timeout: cfg.timeout,
    };
    let t = fts_scsi::open_transport(location, &opts).with_context(|| {
        if location.starts_with("iscsi://") {
            format!(
                "cannot open device {location} as initiator {}",
                cfg.initiator
            )
        } else {
            format!("cannot open device {location}")
        }
    })?;
    let policy = IoPolicy {
        io_timeout: cfg.timeout,
        ..IoPolicy::default()
    };
    let nexus = fts_scsi::Nexus::shared(t);
    NEXUSES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::clone(&nexus));
    ScsiDevice::with_shared(nexus, policy).with_context(|| format!("cannot open device {location}"))
}

/// The lock factory for `shared`, whose device was opened by
/// [`crate::transfer::Ctx`]; `transport` is its nexus when it is a SCSI
/// device. Returns the factory and a description of the backend chosen.
pub fn lock_factory(
    kind: LockKind,
    location: &str,
    shared: &Shared,
    transport: Option<SharedTransport>,
    me: &Identity,
) -> Result<(LockFactory, String)> {
    let Some(transport) = transport else {
        let loc = location.to_owned();
        let probe = fts_lock::open_lock(kind, &loc)?;
        let what = probe.describe();
        drop(probe);
        let f: LockFactory = Arc::new(move || fts_lock::open_lock(kind, &loc));
        return Ok((f, what));
    };
    let mcb = shared.mcb();
    let cfg = ScsiLockConfig {
        transport,
        record_offset: fts_layout::LOCK_LB * fts_layout::LB as u64,
        stamp: mcb.stamp_record(0),
        expect: mcb.expect_record(0),
        lock_timeout: Duration::from_millis(u64::from(mcb.lock_timeout_ms)),
        holder: Holder {
            host: me.host,
            name: me.name.clone(),
            pid: std::process::id(),
        },
        // Over SG_IO all processes of this host share one nexus.
        host_lock: (!location.starts_with("iscsi://")).then(|| location.into()),
    };
    let (locks, why) = match kind {
        LockKind::Auto => {
            let (l, why) = ScsiLocks::auto(cfg)?;
            (l, format!(" (auto: {why})"))
        }
        LockKind::Scsi2 => (ScsiLocks::new(ScsiMethod::Reserve6, cfg)?, String::new()),
        LockKind::Pr => (ScsiLocks::new(ScsiMethod::Persistent, cfg)?, String::new()),
        LockKind::Caw => (ScsiLocks::new(ScsiMethod::CompareAndWrite, cfg)?, String::new()),
        LockKind::File => {
            return Err(fts_lock::Error::Unsupported {
                kind,
                location: location.to_owned(),
                reason: "an OFD file lock cannot exclude other hosts on a SCSI device; use scsi2, pr, caw or auto",
            }
            .into())
        }
    };
    let what = format!("{}{why}", locks.describe());
    let f: LockFactory = Arc::new(move || Ok(Box::new(locks.handle()?) as Box<dyn TableLock>));
    Ok((f, what))
}

/// A cache setting in force, restorable from the signal handler too.
pub type CacheSlot = Arc<Mutex<Option<CacheSetting>>>;

static CACHE_SLOTS: Mutex<Vec<CacheSlot>> = Mutex::new(Vec::new());

/// Applies "destaging off" on `transport` and reports what happened.
pub fn destage_off(transport: SharedTransport, location: &str) -> Result<CacheSlot> {
    let (setting, report) = CacheSetting::apply(transport, &CacheRequest::destage_off())
        .with_context(|| format!("cannot read the Caching mode page of {location}"))?;
    eprintln!("fts: {location}: destaging off for this command: {report}");
    let slot: CacheSlot = Arc::new(Mutex::new(Some(setting)));
    CACHE_SLOTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::clone(&slot));
    Ok(slot)
}

/// Restores a cache setting (once), reporting failures.
pub fn restore(slot: &CacheSlot) {
    let setting = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(mut s) = setting.filter(CacheSetting::changed) {
        match s.restore() {
            Ok(()) => eprintln!("fts: Caching mode page restored"),
            Err(e) => eprintln!("fts: restoring the Caching mode page failed: {e}"),
        }
    }
}

/// On SIGINT/SIGTERM/SIGHUP: gives up whatever this process may hold on
/// its SCSI devices (a RESERVE(6), a persistent-reservation registration
/// and reservation of its key), so other hosts need not wait out the lock
/// timeout to break it. Best effort: errors are ignored, the process is
/// exiting.
pub fn release_all() {
    let nexuses: Vec<SharedTransport> = NEXUSES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    for n in &nexuses {
        let key = {
            let mut t = lock_transport(n);
            let _ = t.release6();
            fts_scsi::initiator::pr_key_for(&t.initiator())
        };
        let _ = fts_lock::clear_key(n, key);
    }
}

/// Restores every cache setting still in force: called on SIGINT/SIGTERM.
pub fn restore_all() {
    let slots: Vec<CacheSlot> = CACHE_SLOTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    for s in &slots {
        restore(s);
    }
}

/// `fts scsi` operations.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ScsiCmd {
    /// Standard INQUIRY and the device identifiers (VPD 0x80, 0x83).
    Inquiry,
    /// READ CAPACITY(16).
    Capacity,
    /// Persistent reservation keys and holder; whether a SCSI-2 reservation blocks us.
    Reservations,
    /// The Caching mode page (current and changeable); --set changes it persistently.
    Cache {
        /// e.g. wce=on or wce=off.
        #[arg(long)]
        set: Option<String>,
    },
    /// Register this initiator's reservation key.
    Register,
    /// Release any reservation this initiator holds and unregister its key.
    Release,
    /// Remove another host's key (and its reservation): for a host known to be dead.
    Preempt {
        /// The key to preempt, hex (default: the current reservation holder's).
        key: Option<String>,
    },
}

const PR_TYPE: PrType = PrType::WriteExclusiveRegistrantsOnly;

/// How this initiator registers its key: whatever it was registered with
/// before (possibly by an earlier session), replace it.
const REGISTER: &str = "PR OUT REGISTER AND IGNORE EXISTING KEY";

fn pr_out(
    t: &SharedTransport,
    action: PrOutServiceAction,
    ty: Option<PrType>,
    key: u64,
    sark: u64,
) -> fts_scsi::Result<()> {
    lock_transport(t).pr_out(
        action,
        ty,
        &PrOutParams {
            reservation_key: key,
            service_action_reservation_key: sark,
            ..PrOutParams::default()
        },
    )
}

/// Runs `fts scsi OP`.
pub fn run(location: &str, op: &ScsiCmd) -> Result<()> {
    use fts_blockdev::BlockDevice as _;
    let dev = open(location)?;
    let t = dev.transport();
    let initiator = lock_transport(&t).initiator();
    let key = fts_scsi::initiator::pr_key_for(&initiator);
    let scsi = |what: &str, e: fts_scsi::Error| {
        anyhow::Error::new(e).context(format!("{what} on {location}"))
    };
    match op {
        ScsiCmd::Inquiry => {
            let mut g = lock_transport(&t);
            let inq = g.inquiry().map_err(|e| scsi("INQUIRY", e))?;
            outln!("vendor:    {}", inq.vendor);
            outln!("product:   {}", inq.product);
            outln!("revision:  {}", inq.revision);
            outln!(
                "type:      0x{:02x}{}",
                inq.peripheral_device_type,
                if inq.is_disk() { " (disk)" } else { "" }
            );
            outln!("identity:  {}", dev.identity());
            if let Ok(sn) = g.unit_serial_number() {
                outln!("serial:    {}", sn.serial);
            }
            if let Ok(ids) = g.device_identification() {
                for d in &ids.designators {
                    if let Some(s) = d.to_id_string() {
                        outln!(
                            "designator: {:?} {:?} {s}",
                            d.association,
                            d.designator_type
                        );
                    }
                }
            }
            outln!("initiator: {initiator}");
        }
        ScsiCmd::Capacity => {
            outln!(
                "{} bytes, {} logical blocks of {} bytes",
                dev.size_bytes(),
                dev.size_bytes() / u64::from(dev.block_size()),
                dev.block_size()
            );
        }
        ScsiCmd::Reservations => {
            let mut g = lock_transport(&t);
            outln!("this initiator: {initiator}, key 0x{key:016x}");
            match g.pr_read_keys() {
                Ok(k) => {
                    outln!(
                        "PR generation {}; {} registered key(s)",
                        k.generation,
                        k.keys.len()
                    );
                    for k in &k.keys {
                        outln!(
                            "  key 0x{k:016x}{}",
                            if *k == key { " (this initiator)" } else { "" }
                        );
                    }
                }
                Err(e) if is_unsupported(&e) => outln!("persistent reservations: not supported"),
                Err(e) => return Err(scsi("PR IN READ KEYS", e)),
            }
            match g.pr_read_reservation() {
                Ok(r) => match r.reservation {
                    Some(res) => outln!(
                        "reservation: key 0x{:016x}, type {}",
                        res.key,
                        res.pr_type().map_or_else(
                            || format!("0x{:x}", res.type_code),
                            |t| t.abbrev().to_string()
                        )
                    ),
                    None => outln!("reservation: none"),
                },
                Err(e) if is_unsupported(&e) => {}
                Err(e) => return Err(scsi("PR IN READ RESERVATION", e)),
            }
            match g.test_unit_ready() {
                Err(fts_scsi::Error::ReservationConflict) => {
                    outln!("TEST UNIT READY: RESERVATION CONFLICT (another initiator holds a reservation that blocks this one)")
                }
                Ok(()) => outln!("TEST UNIT READY: GOOD (no reservation blocks this initiator)"),
                Err(e) => outln!("TEST UNIT READY: {e}"),
            }
        }
        ScsiCmd::Cache { set } => {
            if let Some(s) = set {
                let wce = match s.to_ascii_lowercase().as_str() {
                    "wce=on" | "wce=1" => true,
                    "wce=off" | "wce=0" => false,
                    other => {
                        return Err(fail(
                            Code::Usage,
                            format!("--set {other:?}: expected wce=on or wce=off"),
                        ))
                    }
                };
                let mut g = lock_transport(&t);
                let mut page = g
                    .caching_page(PageControl::Current)
                    .map_err(|e| scsi("MODE SENSE", e))?;
                let mask = g
                    .caching_page(PageControl::Changeable)
                    .map_err(|e| scsi("MODE SENSE", e))?;
                if !mask.wce {
                    return Err(fail(
                        Code::Device,
                        format!("{location}: WCE is not changeable on this device (changeable mask has WCE=0)"),
                    ));
                }
                page.wce = wce;
                g.set_caching_page(&page)
                    .map_err(|e| scsi("MODE SELECT", e))?;
            }
            let mut g = lock_transport(&t);
            for (name, pc) in [
                ("current", PageControl::Current),
                ("changeable", PageControl::Changeable),
            ] {
                match g.caching_page(pc) {
                    Ok(p) => outln!(
                        "{name:10}: WCE={} RCD={} write retention priority={} demand read retention priority={}",
                        u8::from(p.wce),
                        u8::from(p.rcd),
                        p.write_retention_priority,
                        p.demand_read_retention_priority
                    ),
                    Err(e) => outln!("{name:10}: {e}"),
                }
            }
        }
        ScsiCmd::Register => {
            pr_out(
                &t,
                PrOutServiceAction::RegisterAndIgnoreExistingKey,
                None,
                0,
                key,
            )
            .map_err(|e| scsi(REGISTER, e))?;
            outln!("registered key 0x{key:016x} for {initiator}");
        }
        ScsiCmd::Release => {
            // A RELEASE(6) from a non-holder does nothing, so it is safe.
            let _ = lock_transport(&t).release6();
            fts_lock::clear_key(&t, key)?;
            outln!("released: no reservation or registration of {initiator} remains");
        }
        ScsiCmd::Preempt { key: victim } => {
            let victim = match victim {
                Some(k) => u64::from_str_radix(k.trim_start_matches("0x"), 16)
                    .map_err(|e| fail(Code::Usage, format!("key {k:?} is not hex: {e}")))?,
                None => match lock_transport(&t)
                    .pr_read_reservation()
                    .map_err(|e| scsi("PR IN READ RESERVATION", e))?
                    .reservation
                {
                    Some(r) => r.key,
                    None => {
                        return Err(fail(
                            Code::Failure,
                            format!("{location}: no persistent reservation to preempt; pass KEY"),
                        ))
                    }
                },
            };
            pr_out(
                &t,
                PrOutServiceAction::RegisterAndIgnoreExistingKey,
                None,
                0,
                key,
            )
            .map_err(|e| scsi(REGISTER, e))?;
            let r = pr_out(
                &t,
                PrOutServiceAction::PreemptAndAbort,
                Some(PR_TYPE),
                key,
                victim,
            );
            let how = match r {
                Ok(()) => "PREEMPT AND ABORT",
                Err(e) if is_unsupported(&e) => {
                    pr_out(&t, PrOutServiceAction::Preempt, Some(PR_TYPE), key, victim)
                        .map_err(|e| scsi("PR OUT PREEMPT", e))?;
                    "PREEMPT (the device has no PREEMPT AND ABORT)"
                }
                Err(e) => return Err(scsi("PR OUT PREEMPT AND ABORT", e)),
            };
            // Leave nothing of ours behind.
            let _ = pr_out(&t, PrOutServiceAction::Release, Some(PR_TYPE), key, 0);
            pr_out(&t, PrOutServiceAction::Register, None, key, 0)
                .map_err(|e| scsi("PR OUT REGISTER (unregister)", e))?;
            outln!("preempted key 0x{victim:016x} with {how}");
        }
    }
    Ok(())
}
