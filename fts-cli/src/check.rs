//! `fts check [--repair]`: list every problem of a layout like fsck, and
//! with `--repair` mend what the surviving copy and the geometry rebuild.
//!
//! What to write comes from `fts_layout::check::repair_plan` (pure); this
//! module does the I/O: the layout records (MCB, Secondary Device Table,
//! LB 4) first, then, under the Process Id Table lock taken as every other
//! command takes it, the entries and their records from a plan computed on
//! bytes read under the lock. Dead connections are confirmed on this
//! host's clock first: their entries and leases must not change for a
//! lease timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use fts_blockdev::{BlockDevice, OpenOptions, WriteMode};
use fts_layout::check::{self, Problem, Repair, RepairPlan};
use fts_layout::{Role, LB, MCB_LB};
use fts_session::{Identity, Shared};

use crate::exit::{fail, Code};
use crate::layout::{self, Loaded};
use crate::out::outln;

/// What `fts check` needs.
#[derive(Debug, Clone)]
pub struct CheckArgs {
    /// The master device.
    pub device: String,
    /// Device open options.
    pub opts: OpenOptions,
    /// Where else to look for secondary devices.
    pub secondaries: Vec<String>,
    /// Mend what can be rebuilt.
    pub repair: bool,
    /// The Process Id Table lock backend (for `--repair`).
    pub lock: fts_lock::LockKind,
    /// Our fts name (the lock holder's name, for `--repair`).
    pub name: String,
}

/// Problems of the secondary devices: each found by identity (layout and
/// device uuid), never trusted by path.
fn secondary_problems(args: &CheckArgs, loaded: &Loaded) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, e) in loaded.sdt.iter().enumerate().skip(1) {
        let mut paths: Vec<String> = args.secondaries.clone();
        paths.push(e.sec_path.clone());
        let mut found = false;
        for p in paths {
            let Ok(mut sdev) = layout::open_device(&p, &args.opts) else {
                continue;
            };
            let mut lb5 = vec![0u8; LB];
            if sdev.read_at(MCB_LB * LB as u64, &mut lb5).is_err() {
                continue;
            }
            match fts_layout::Mcb::decode(&lb5) {
                Ok(m) if m.blk5_device_uuid == e.sec_dev_id => {
                    problems.extend(check::check_secondary(&lb5, &loaded.mcb, &loaded.sdt, i));
                    found = true;
                    break;
                }
                _ => continue,
            }
        }
        if !found {
            problems.push(Problem {
                device: i,
                lb: MCB_LB,
                offset_in_lb: 0,
                record: format!("secondary device {}", i + 1),
                what: format!(
                    "not found: no device with id {} (recorded at {}); pass --secondary PATH",
                    e.sec_dev_id, e.sec_path
                ),
            });
        }
    }
    problems
}

/// `fts check [--repair]`.
pub fn run(args: &CheckArgs) -> Result<()> {
    let (mut dev, transport) = layout::open_device_and_nexus(&args.device, &args.opts)?;
    let loaded = layout::load(dev.as_mut())?;
    let mut problems = loaded.problems.clone();
    problems.extend(secondary_problems(args, &loaded));
    if !args.repair || problems.is_empty() {
        return report(dev.as_ref(), &loaded, &problems, 0);
    }
    let done = repair(args, dev.as_mut(), transport, &loaded)?;
    let loaded = layout::load(dev.as_mut())?;
    let mut problems = loaded.problems.clone();
    problems.extend(secondary_problems(args, &loaded));
    report(dev.as_ref(), &loaded, &problems, done)
}

fn report(
    dev: &dyn BlockDevice,
    loaded: &Loaded,
    problems: &[Problem],
    repaired: usize,
) -> Result<()> {
    let after = if repaired > 0 {
        format!(" after {repaired} repair(s)")
    } else {
        String::new()
    };
    if problems.is_empty() {
        outln!(
            "{}: fts layout {} is consistent{after} ({} connections, {} segments)",
            dev.location(),
            loaded.mcb.blk5_layout_uuid,
            loaded.mcb.blk5_max_connections,
            loaded.mcb.blk5_tot_seg_num
        );
        return Ok(());
    }
    for p in problems {
        outln!("{p}");
    }
    let hint = if repaired > 0 {
        String::new()
    } else {
        format!("; `fts -d {} check --repair` mends what the surviving copy and the geometry can rebuild", dev.location())
    };
    Err(fail(
        Code::CheckProblems,
        format!(
            "{}: {} problem(s) found{after}{hint}",
            dev.location(),
            problems.len()
        ),
    ))
}

fn write(dev: &mut dyn BlockDevice, r: &Repair) -> Result<()> {
    dev.write_at(r.lb * LB as u64, &r.data, WriteMode::Fua)
        .with_context(|| format!("repairing LB {} of {}", r.lb, dev.location()))?;
    outln!("repaired: {}", r.what);
    Ok(())
}

/// The bytes of every LB of `slot` whose change shows life: the entry
/// record's LB and both lease LBs.
fn life(dev: &mut dyn BlockDevice, g: &fts_layout::Geometry, slot: u32) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(3 * LB);
    for lb in [
        g.pid_entry_lb(slot),
        g.lease_lb(slot, Role::Initiator),
        g.lease_lb(slot, Role::Connector),
    ] {
        let mut buf = vec![0u8; LB];
        dev.read_at(lb * LB as u64, &mut buf)?;
        out.extend_from_slice(&buf);
    }
    Ok(out)
}

/// Mends what `repair_plan` can; returns how many writes it did.
fn repair(
    args: &CheckArgs,
    dev: &mut dyn BlockDevice,
    transport: Option<fts_scsi::SharedTransport>,
    loaded: &Loaded,
) -> Result<usize> {
    let plan = check::repair_plan(&loaded.master.image(Some(layout::now_ns())), &[])?;
    let mut done = 0;
    // 1. What only format writes: no lock (a format running meanwhile is
    //    operator error either way).
    for r in plan.layout() {
        write(dev, r)?;
        done += 1;
    }
    dev.flush()?;
    let loaded = layout::load(dev)?;
    let Ok(g) = loaded.geometry.clone() else {
        print_left(&plan);
        return Ok(done);
    };
    // 2. Dead connections: confirmed when neither the entry nor a lease
    //    changes for a lease timeout (+ a heartbeat) on this host's clock.
    let mut watched: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for d in &loaded.dead {
        watched.insert(d.slot, life(dev, &g, d.slot)?);
    }
    if !watched.is_empty() {
        let wait = Duration::from_millis(
            u64::from(loaded.mcb.lease_timeout_ms) + u64::from(loaded.mcb.heartbeat_ms),
        );
        let slots: Vec<String> = watched.keys().map(u32::to_string).collect();
        eprintln!(
            "fts: {}: confirming that Process Id Table entr{} {} {} dead: watching {} leases for {:.1} s (the lease timeout)",
            args.device,
            if slots.len() == 1 { "y" } else { "ies" },
            slots.join(", "),
            if slots.len() == 1 { "is" } else { "are" },
            if slots.len() == 1 { "its" } else { "their" },
            wait.as_secs_f64()
        );
        std::thread::sleep(wait);
        let mut still = BTreeMap::new();
        for (slot, before) in watched {
            if life(dev, &g, slot)? == before {
                still.insert(slot, before);
            } else {
                outln!("not repaired: Process Id Table entry {slot}: it or a lease changed while watched (a side is alive, or another process freed it): left alone");
            }
        }
        watched = still;
    }
    // 3. The Process Id Table and its records, under the lock, from bytes
    //    read under it.
    let dead: Vec<u32> = watched.keys().copied().collect();
    let table_plan = check::repair_plan(
        &layout::load(dev)?.master.image(Some(layout::now_ns())),
        &dead,
    )?;
    if table_plan.table().next().is_none() {
        print_left(&table_plan);
        return Ok(done);
    }
    let shared = Shared::open(dev.reopen()?)
        .with_context(|| format!("{} is not a usable fts device", args.device))?;
    let me = Identity::unix(&args.name)?;
    let (locks, _) = crate::scsi::lock_factory(args.lock, &args.device, &shared, transport, &me)?;
    let mut lock = locks()?;
    let lock_timeout = Duration::from_millis(u64::from(shared.mcb().lock_timeout_ms))
        .saturating_mul(3)
        .max(Duration::from_secs(10));
    let guard = lock.lock(lock_timeout)?;
    let mut confirmed = Vec::new();
    for (slot, before) in &watched {
        if life(dev, &g, *slot)? == *before {
            confirmed.push(*slot);
        } else {
            outln!("not repaired: Process Id Table entry {slot}: it or a lease changed before the lock was taken: left alone");
        }
    }
    let under_lock = check::repair_plan(
        &layout::load(dev)?.master.image(Some(layout::now_ns())),
        &confirmed,
    )?;
    for r in under_lock.table() {
        guard.still_held()?;
        write(dev, r)?;
        done += 1;
    }
    dev.flush()?;
    guard.release()?;
    print_left(&under_lock);
    Ok(done)
}

fn print_left(plan: &RepairPlan) {
    for l in &plan.left {
        outln!("not repaired: {l}");
    }
}
