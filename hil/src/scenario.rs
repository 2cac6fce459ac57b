//! The rig's scenarios on network-namespace hosts ([`crate::netns`]).
//!
//! Each scenario formats the shared LUN afresh (after resetting the LU, so
//! no PR state of an earlier scenario is left), runs real `fts` processes
//! in the hosts' namespaces, checks what they did from the outside, and
//! returns a [`ScenarioReport`] with a line of figures.
//!
//! | scenario | what it proves |
//! |---|---|
//! | `all-pairs` | every host puts a distinct random file to every other host at once; all arrive byte-identical |
//! | `contention` | hosts open and close connections to each other in a tight loop; an independent reader of the Process Id Table never sees one entry generation owned by two requestors, nor one requestor in two entries |
//! | `holder-crash` | once per lock kind (pr, scsi2): a host holding the table lock crashes (link down first, then SIGKILL: the target keeps its session); an independent witness ([`crate::observer`]) sees the dead holder keep the lock, then lose it no sooner than the lock timeout allows and within fts's patience; a put that waited completes intact; nothing is left on the LU |
//! | `link-flap` | a host's link goes down for 1.5 s once more than 4 MiB of its file has arrived; the file arrives intact, or the transfer fails cleanly with nothing (or only an intact file) under the target name and a re-run succeeds |
//! | `destage` | a server runs with `--destage-off`: WCE 0 → 1 (seen from a third host while it serves a transfer), restored to 0 when it is stopped |
//! | `secondary` | the layout gets a second LUN as a secondary device (`format --secondary iscsi://…`); every host finds it by id at the recorded URL, every host puts to every other at once, all arrive byte-identical, and both LUNs' backing files hold data segments (the rings are striped over both) |

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::proc::{self, Running};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::{NetnsHost, NetnsRig};
use crate::observer::{judge_takeover, Observer, ObserverOptions, Unit, Victim};
use crate::ScenarioReport;

/// Every scenario, in the order they run.
pub const ALL: &[&str] = &[
    "all-pairs",
    "contention",
    "holder-crash",
    "link-flap",
    "destage",
    "secondary",
];

/// What a scenario name runs: `holder-crash` runs once per lock kind that
/// tgt supports (`holder-crash-pr`, `holder-crash-scsi2`, which can also be
/// named alone).
pub fn expand(name: &str) -> Vec<&str> {
    match name {
        "holder-crash" => vec!["holder-crash-pr", "holder-crash-scsi2"],
        other => vec![other],
    }
}

/// Format options every scenario uses (small segments and rings keep the
/// LUN small; the lease and lock timeouts keep failure detection quick).
const FORMAT: &[&str] = &[
    "--segment-size",
    "256K",
    "--ring-entries",
    "32",
    "--batch",
    "8",
    "--lease-timeout-ms",
    "4000",
    "--lock-timeout-ms",
    "2000",
];

/// How long any one fts command of a scenario may take before the rig
/// kills it and fails the scenario: a hung fts must not hang the run.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// The on-disk lock and lease timeouts of [`FORMAT`].
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);
const LEASE_TIMEOUT: Duration = Duration::from_secs(4);

/// Runs the named scenarios (all of [`ALL`] when `names` is empty). A
/// scenario that panics is reported as failed; the others still run.
pub fn run_netns(rig: &mut NetnsRig, names: &[String]) -> Vec<ScenarioReport> {
    let names: Vec<&str> = if names.is_empty() {
        ALL.iter().flat_map(|n| expand(n)).collect()
    } else {
        names.iter().flat_map(|n| expand(n)).collect()
    };
    let mut reports = Vec::new();
    for name in names {
        let start = Instant::now();
        let mut bytes = 0u64;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            prepare(rig).and_then(|()| match name {
                "all-pairs" => all_pairs(rig, &mut bytes),
                "contention" => contention(rig),
                "holder-crash-pr" => holder_crash(rig, "pr", &mut bytes),
                "holder-crash-scsi2" => holder_crash(rig, "scsi2", &mut bytes),
                "link-flap" => link_flap(rig, &mut bytes),
                "destage" => destage(rig, &mut bytes),
                "secondary" => secondary(rig, &mut bytes),
                other => Err(format!(
                    "unknown scenario {other:?} (known: {})",
                    ALL.join(", ")
                )),
            })
        }))
        .unwrap_or_else(|_| Err("the scenario panicked".into()));
        // Whatever happened, no host process outlives its scenario.
        let mut survivors = Vec::new();
        for h in &rig.hosts {
            if !rig.kill_host(h) {
                survivors.push(h.name.clone());
            }
            let _ = rig.set_link(h, true);
        }
        let result = match result {
            Ok(_) if !survivors.is_empty() => Err(format!(
                "processes of {} survived SIGKILL",
                survivors.join(", ")
            )),
            r => r,
        };
        let report = ScenarioReport {
            name: name.to_owned(),
            hosts: rig.hosts.len(),
            bytes,
            elapsed: start.elapsed(),
            result,
        };
        println!("{report}");
        reports.push(report);
    }
    reports
}

fn prepare(rig: &mut NetnsRig) -> Result<(), String> {
    rig.reset_lun()
        .map_err(|e| format!("resetting the LUN: {e}"))?;
    rig.format(FORMAT)
        .map_err(|e| format!("formatting the LUN: {e}"))?;
    for h in &rig.hosts {
        let root = h.dir.join("root");
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    }
    Ok(())
}

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

fn spawn(mut c: Command) -> Result<Running, String> {
    proc::spawn(&mut c).map_err(|e| e.to_string())
}

/// Waits for `child` for at most [`COMMAND_DEADLINE`]; kills it and fails
/// after that.
fn finish(child: Running, what: &str) -> Result<Output, String> {
    child
        .finish(COMMAND_DEADLINE)
        .map_err(|e| format!("{what}: {e}"))
}

/// Runs a command to completion within [`COMMAND_DEADLINE`].
fn output(mut c: Command) -> Result<Output, String> {
    proc::run_output(&mut c, COMMAND_DEADLINE).map_err(|e| e.to_string())
}

/// Started servers: killed when dropped, whatever path the scenario takes.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `hosts`' servers and waits until each has opened the device.
fn start_servers(rig: &NetnsRig, hosts: &[&NetnsHost], extra: &[&str]) -> Result<Servers, String> {
    let mut servers = Servers(Vec::new());
    for h in hosts {
        servers
            .0
            .push(rig.serve(h, extra).map_err(|e| e.to_string())?);
    }
    for h in hosts {
        wait_serving(h)?;
    }
    Ok(servers)
}

/// Waits until `host`'s server (started with [`NetnsRig::serve`]) says it
/// is serving.
fn wait_serving(host: &NetnsHost) -> Result<(), String> {
    let log = host.dir.join("serve.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if fs::read_to_string(&log).is_ok_and(|l| l.contains("serving as")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "server {} did not start within 30s: {}",
                host.name,
                fs::read_to_string(&log).unwrap_or_default().trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn put(
    rig: &NetnsRig,
    from: &NetnsHost,
    client: &str,
    to: &NetnsHost,
    src: &Path,
    remote: &str,
    replace: bool,
) -> Command {
    let mut c = rig.fts(from, client);
    c.args(["put", &to.name])
        .arg(src)
        .arg(remote)
        .args(["--timeout", "60"]);
    if replace {
        c.arg("--replace");
    }
    c
}

fn same_file(a: &Path, b: &Path) -> Result<(), String> {
    let x = fs::read(a).map_err(|e| format!("{}: {e}", a.display()))?;
    let y = fs::read(b).map_err(|e| format!("{}: {e}", b.display()))?;
    if x != y {
        return Err(format!(
            "{} ({} bytes) differs from {} ({} bytes)",
            b.display(),
            y.len(),
            a.display(),
            x.len()
        ));
    }
    Ok(())
}

/// Scenario 1.
fn all_pairs(rig: &NetnsRig, bytes: &mut u64) -> Result<String, String> {
    const SIZE: usize = 3 << 20;
    let hosts: Vec<&NetnsHost> = rig.hosts.iter().collect();
    let servers = start_servers(rig, &hosts, &[])?;
    let start = Instant::now();
    let mut clients = Vec::new();
    for (i, from) in hosts.iter().enumerate() {
        for (j, to) in hosts.iter().enumerate() {
            if i == j {
                continue;
            }
            let src = from.dir.join(format!("to-{}.bin", to.name));
            fs::write(&src, random_bytes((i * 100 + j) as u64, SIZE + i * 7 + j))
                .map_err(|e| format!("{}: {e}", src.display()))?;
            let client = format!("{}-to-{}", from.name, to.name);
            let remote = format!("from-{}.bin", from.name);
            let child = spawn(put(rig, from, &client, to, &src, &remote, false))?;
            clients.push((src, to.dir.join("root").join(&remote), client, child));
        }
    }
    let mut failures = Vec::new();
    let n = clients.len();
    for (src, dst, client, child) in clients {
        let out = finish(child, &client)?;
        if !out.status.success() {
            failures.push(format!(
                "{client}: exit {:?}: {}",
                out.status.code(),
                text(&out)
            ));
            continue;
        }
        match same_file(&src, &dst) {
            Ok(()) => *bytes += fs::metadata(&src).map_or(0, |m| m.len()),
            Err(e) => failures.push(format!("{client}: {e}")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(servers);
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    Ok(format!(
        "{n} concurrent transfers, all byte-identical, {:.1} MiB/s aggregate",
        *bytes as f64 / (1 << 20) as f64 / secs
    ))
}

/// Data segment headers (`FSEG` at the start of an LB) in `path`.
fn segment_headers(path: &Path) -> Result<usize, String> {
    let data = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(data
        .chunks(4096)
        .filter(|lb| lb.starts_with(b"FSEG"))
        .count())
}

/// Scenario 6: a secondary device over iSCSI.
fn secondary(rig: &mut NetnsRig, bytes: &mut u64) -> Result<String, String> {
    const SECONDARY_BYTES: u64 = 512 << 20;
    let Some(lun) = rig
        .secondary_lun(SECONDARY_BYTES)
        .map_err(|e| format!("adding the secondary LUN: {e}"))?
    else {
        return Err("the rig has no target to add a secondary LUN to".into());
    };
    let mut args: Vec<&str> = FORMAT.to_vec();
    args.extend(["--secondary", &lun.url]);
    rig.format(&args)
        .map_err(|e| format!("formatting with a secondary device: {e}"))?;
    let before = segment_headers(&lun.backing)?;
    let line = all_pairs(rig, bytes)?;
    let on_master = segment_headers(&rig.lun.backing)?;
    let on_secondary = segment_headers(&lun.backing)?;
    if on_secondary <= before || on_master == 0 {
        return Err(format!(
            "segments were not striped over both LUNs: {on_master} segment headers on the master, {on_secondary} on the secondary ({before} before)"
        ));
    }
    Ok(format!(
        "{line}; segment headers: {on_master} on the master, {on_secondary} on the secondary LUN"
    ))
}

/// Stops the reader thread when dropped, on every path.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Scenario 2.
fn contention(rig: &NetnsRig) -> Result<String, String> {
    const ROUNDS: usize = 12;
    let hosts: Vec<&NetnsHost> = rig.hosts.iter().collect();
    let servers = start_servers(rig, &hosts, &[])?;
    // The independent reader: its own initiator, polling the table.
    let stop_reader = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop_reader = Arc::clone(&stop_reader);
        let mut cmd = rig.fts(hosts[0], "reader");
        cmd.args(["status", "--json"]);
        let program = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        std::thread::spawn(move || reader_loop(&program, &args, &stop_reader))
    };
    let stop_guard = StopOnDrop(Arc::clone(&stop_reader));
    let start = Instant::now();
    let mut shells = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let mut script = String::new();
        for r in 0..ROUNDS {
            let peer = hosts[(i + 1 + r % (hosts.len() - 1)) % hosts.len()];
            script.push_str(&format!("open {}\nclose\n", peer.name));
        }
        script.push_str("quit\n");
        let script_path = h.dir.join("contention.script");
        fs::write(&script_path, script).map_err(|e| format!("{}: {e}", script_path.display()))?;
        let stdin =
            fs::File::open(&script_path).map_err(|e| format!("{}: {e}", script_path.display()))?;
        let mut c = rig.fts(h, &format!("{}-shell", h.name));
        c.args(["shell", "--timeout", "60"]);
        let child = proc::spawn_with_stdin(&mut c, Stdio::from(stdin))
            .map_err(|e| format!("shell on {}: {e}", h.name))?;
        shells.push((h.name.clone(), child));
    }
    let mut failures = Vec::new();
    let mut opened = 0;
    for (name, child) in shells {
        let out = finish(child, &name)?;
        let connects = String::from_utf8_lossy(&out.stdout)
            .matches("connected to")
            .count();
        opened += connects;
        if !out.status.success() || connects != ROUNDS {
            failures.push(format!(
                "{name}: {connects}/{ROUNDS} connections, exit {:?}: {}",
                out.status.code(),
                text(&out)
            ));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(stop_guard);
    let seen = reader
        .join()
        .map_err(|_| "the reader thread panicked".to_string())?;
    drop(servers);
    let (snapshots, generations) = seen?;
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    // The reader must actually have watched the contention.
    if snapshots < 5 || generations < hosts.len() {
        return Err(format!(
            "the reader saw too little to prove anything: {snapshots} snapshots, {generations} entry generations"
        ));
    }
    Ok(format!(
        "{opened} connections opened and closed in {secs:.1}s ({:.0}/s); reader took {snapshots} snapshots, saw {generations} entry generations, each with one owner",
        opened as f64 / secs,
    ))
}

/// Polls `status --json`; fails if one (slot, generation) is seen with two
/// requestors, or one requestor holds two entries at once. Returns
/// (snapshots, distinct generations seen).
fn reader_loop(
    program: &std::ffi::OsStr,
    args: &[std::ffi::OsString],
    stop: &AtomicBool,
) -> Result<(usize, usize), String> {
    let mut owners: HashMap<(u64, u64), String> = HashMap::new();
    let mut snapshots = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut c = Command::new(program);
        c.args(args);
        let out = output(c).map_err(|e| format!("reader: {e}"))?;
        if !out.status.success() {
            return Err(format!("reader: status failed: {}", text(&out)));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("reader: bad JSON: {e}"))?;
        let entries = v["connections"]
            .as_array()
            .ok_or("reader: no \"connections\" array in status --json")?;
        snapshots += 1;
        let mut in_use: HashMap<String, u64> = HashMap::new();
        for e in entries {
            let field = |k: &str| {
                e[k].as_u64()
                    .ok_or(format!("reader: entry without {k}: {e}"))
            };
            let slot = field("slot")?;
            let generation = field("generation")?;
            let who = e["requestor"]
                .as_str()
                .ok_or(format!("reader: entry without requestor: {e}"))?
                .to_owned();
            if let Some(prev) = owners.get(&(slot, generation)) {
                if *prev != who {
                    return Err(format!(
                        "slot {slot} generation {generation} owned by both {prev} and {who}"
                    ));
                }
            }
            owners.insert((slot, generation), who.clone());
            if let Some(other) = in_use.insert(who.clone(), slot) {
                return Err(format!("{who} holds slots {other} and {slot} at once"));
            }
        }
    }
    Ok((snapshots, owners.len()))
}

/// Waits for a line containing `needle` on a child's stdout.
fn wait_line(child: &mut Child, needle: &str, timeout: Duration) -> Result<(), String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(()),
            Ok(_) => {}
            Err(_) => return Err(format!("no {needle:?} within {timeout:?}")),
        }
    }
}

/// A lock kind of `fts --lock` that tgt supports, with how long fts lets a
/// holder make no visible progress before it breaks it: one lock timeout
/// when it can read the lock record (PR), three when the RESERVE(6) hides
/// the record (SCSI-2; see fts-lock).
fn lock_patience(lock: &str) -> Duration {
    match lock {
        "scsi2" => LOCK_TIMEOUT * 3,
        _ => LOCK_TIMEOUT,
    }
}

/// Scenario 3, once per lock kind (`pr`, `scsi2`): a host holding the
/// Process Id Table lock crashes (link down first, then SIGKILL: the
/// target keeps its session); a transfer that was already waiting for the
/// lock must take it over no sooner than the lock allows and complete.
/// The evidence comes from an independent witness (libiscsi's own API,
/// its own nexus): the holder before the crash, the dead holder keeping
/// it, when it changed hands, and nothing left at the end; tgtadm shows
/// the dead session still on the target.
fn holder_crash(rig: &NetnsRig, lock: &str, bytes: &mut u64) -> Result<String, String> {
    let victim = &rig.hosts[0];
    let server = &rig.hosts[1];
    let client_host = rig.hosts.get(2).unwrap_or(server);
    let witness = Observer::start(ObserverOptions {
        netns: Some(rig.san_namespace().to_owned()),
        url: rig.lun.url.clone(),
        initiator: "iqn.2026-11.invalid.fts-hil:witness".into(),
        interval: Duration::from_millis(20),
    })
    .map_err(|e| e.to_string())?;
    let idle = witness.sample_after(Instant::now())?;
    if idle.holder.is_some() || !idle.keys.is_empty() || idle.unit == Unit::Conflict {
        return Err(format!("the LU is not idle before the scenario: {idle}"));
    }
    // The server runs before the crash, as a production server would.
    let lock_arg = ["--lock", lock];
    let servers = start_servers(rig, &[server], &lock_arg)?;
    // A raw child: its stdout is read line by line.
    let mut holder = rig
        .fts(victim, "holder")
        .args(["--lock", lock, "hold-lock", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the lock holder: {e}"))?;
    let held = wait_line(
        &mut holder,
        "holding the Process Id Table lock",
        Duration::from_secs(20),
    );
    if let Err(e) = held {
        let _ = holder.kill();
        let _ = holder.wait();
        return Err(e);
    }
    // Only the victim runs fts now: what the witness sees held is its lock.
    let seen = witness.sample_after(Instant::now())?;
    let dead = match (lock, seen.holder) {
        ("scsi2", _) if seen.unit == Unit::Conflict => Victim::Reserve6,
        ("pr", Some((key, _))) if seen.keys.contains(&key) => Victim::Key(key),
        _ => {
            let _ = holder.kill();
            let _ = holder.wait();
            return Err(format!(
                "the victim says it holds the {lock} lock, but the witness sees: {seen}"
            ));
        }
    };
    // A put starts while the victim is alive: it must wait for the lock
    // the live victim keeps showing progress in.
    let src = client_host.dir.join("after-crash.bin");
    fs::write(&src, random_bytes(42, 1 << 20)).map_err(|e| e.to_string())?;
    let mut survivor = put(
        rig,
        client_host,
        "survivor",
        server,
        &src,
        "after-crash.bin",
        false,
    );
    survivor.args(lock_arg);
    let survivor = spawn(survivor)?;
    std::thread::sleep(Duration::from_secs(1));
    let alive = witness.sample_after(Instant::now())?;
    if !dead.holds(&alive) {
        return Err(format!(
            "the live victim lost its {dead} before the crash: {alive}"
        ));
    }
    // The host dies: its link goes first (no FIN), then every process.
    let crash = Instant::now();
    crate::rig::Host::crash(&mut victim.clone())
        .map_err(|e| format!("crashing {}: {e}", victim.name))?;
    let _ = holder.wait();
    let victim_iqn = NetnsRig::initiator(victim, "holder");
    let session_kept = |when: &str| -> Result<(), String> {
        let sessions = rig.sessions().map_err(|e| e.to_string())?;
        if sessions.iter().any(|c| c.initiator == victim_iqn) {
            Ok(())
        } else {
            Err(format!(
                "the target dropped the dead holder's session {when}: the crash was not a crash \
                 (sessions: {:?})",
                sessions.iter().map(|c| &c.initiator).collect::<Vec<_>>()
            ))
        }
    };
    session_kept("right after the crash")?;
    let out = finish(survivor, "the survivor's put")?;
    let recovered = crash.elapsed();
    session_kept("during the takeover")?;
    drop(servers);
    let end = witness.sample_after(Instant::now())?;
    let timeline = witness.stop();
    if !out.status.success() {
        return Err(format!("the survivors did not carry on: {}", text(&out)));
    }
    same_file(&src, &server.dir.join("root").join("after-crash.bin"))?;
    *bytes += 1 << 20;
    let slack = Duration::from_secs(6);
    // A live holder shows progress every quarter lock timeout (`fts
    // hold-lock`), so its last progress was at most that long before the
    // crash: a lock that honours its timeout cannot be taken over sooner
    // than the rest of it after the crash.
    let earliest = LOCK_TIMEOUT - LOCK_TIMEOUT / 4;
    let takeover = judge_takeover(
        &timeline,
        crash,
        dead,
        earliest,
        lock_patience(lock) + slack,
    )?;
    if end.holder.is_some() || !end.keys.is_empty() || end.unit == Unit::Conflict {
        return Err(format!("something is left on the LU at the end: {end}"));
    }
    Ok(format!(
        "lock {lock}: {} crashed holding the lock ({dead}); witness {takeover}; the dead session \
         stayed on the target throughout; at the end: {end}; a 1 MiB put that waited for the lock \
         completed {:.1}s after the crash (lock timeout {:.1}s, fts waits {:.1}s of no progress)",
        victim.name,
        recovered.as_secs_f64(),
        LOCK_TIMEOUT.as_secs_f64(),
        lock_patience(lock).as_secs_f64(),
    ))
}

/// Bytes of the largest file in `dir` (the server's temporary file while a
/// transfer is under way).
fn arrived(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Scenario 4.
fn link_flap(rig: &NetnsRig, bytes: &mut u64) -> Result<String, String> {
    const SIZE: usize = 48 << 20;
    let from = &rig.hosts[0];
    let to = &rig.hosts[1];
    let servers = start_servers(rig, &[to], &[])?;
    let src = from.dir.join("flap.bin");
    fs::write(&src, random_bytes(7, SIZE)).map_err(|e| e.to_string())?;
    let root = to.dir.join("root");
    let dst = root.join("flap.bin");
    let mut child = spawn(put(rig, from, "flapper", to, &src, "flap.bin", false))?;
    // Take the link down once more than 4 MiB have arrived while the
    // transfer still runs, for 1.5 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let at = loop {
        let at = arrived(&root);
        if at > 4 << 20 {
            break at;
        }
        if Instant::now() > deadline || child.has_exited() {
            child.kill();
            let _ = child.finish(COMMAND_DEADLINE);
            return Err(format!(
                "the transfer never got under way ({at} bytes arrived)"
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    rig.set_link(from, false).map_err(|e| e.to_string())?;
    if child.has_exited() || at >= SIZE as u64 {
        return Err(format!(
            "the {} MiB transfer finished before the link went down: the flap proved nothing",
            SIZE >> 20
        ));
    }
    std::thread::sleep(Duration::from_millis(1500));
    rig.set_link(from, true).map_err(|e| e.to_string())?;
    let out = finish(child, "flapper")?;
    let outcome = if out.status.success() {
        same_file(&src, &dst)?;
        *bytes += SIZE as u64;
        "completed intact across the flap".to_string()
    } else {
        // A failed transfer may have committed just before the client gave
        // up: an intact file is fine, a partial one is not. Let the server
        // notice the dead client first (lease timeout).
        std::thread::sleep(LEASE_TIMEOUT + Duration::from_secs(1));
        if dst.exists() {
            same_file(&src, &dst).map_err(|e| {
                format!(
                    "the transfer failed ({}) and left a partial file under the target name: {e}",
                    text(&out)
                )
            })?;
        }
        let again = output(put(rig, from, "flapper2", to, &src, "flap.bin", true))?;
        if !again.status.success() {
            return Err(format!("the re-run failed: {}", text(&again)));
        }
        same_file(&src, &dst)?;
        *bytes += SIZE as u64;
        format!(
            "failed cleanly (exit {:?}; nothing partial under the target name), re-run intact",
            out.status.code()
        )
    };
    drop(servers);
    Ok(format!(
        "{} MiB put, link down for 1.5 s after {:.1} MiB had arrived: {outcome}",
        SIZE >> 20,
        at as f64 / (1 << 20) as f64
    ))
}

fn wce(rig: &NetnsRig, host: &NetnsHost) -> Result<bool, String> {
    let out = output({
        let mut c = rig.fts(host, "cache-reader");
        c.args(["scsi", "cache"]);
        c
    })?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.lines()
        .find(|l| l.starts_with("current"))
        .map(|l| l.contains("WCE=1"))
        .ok_or_else(|| format!("no caching page: {}", text(&out)))
}

/// Scenario 5.
fn destage(rig: &NetnsRig, bytes: &mut u64) -> Result<String, String> {
    const SIZE: usize = 8 << 20;
    let from = &rig.hosts[0];
    let to = &rig.hosts[1];
    let observer = rig.hosts.get(2).unwrap_or(from);
    let out = output({
        let mut c = rig.fts(from, "cache-admin");
        c.args(["scsi", "cache", "--set", "wce=off"]);
        c
    })?;
    if !out.status.success() || wce(rig, observer)? {
        return Err(format!("cannot set WCE=0 first: {}", text(&out)));
    }
    let mut servers = start_servers(rig, &[to], &["--destage-off"])?;
    // The server applied the setting when it started.
    let before = wce(rig, observer)?;
    let src = from.dir.join("destage.bin");
    fs::write(&src, random_bytes(5, SIZE)).map_err(|e| e.to_string())?;
    let out = output(put(rig, from, "destager", to, &src, "destage.bin", false))?;
    let after_transfer = wce(rig, observer)?;
    // SIGTERM: the server restores the page before it exits.
    let server = servers.0.pop().ok_or("no server")?;
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let mut server = server;
    let stopped = proc::wait_deadline(&mut server, COMMAND_DEADLINE, "destage server")
        .map_err(|e| e.to_string())?;
    let after = wce(rig, observer)?;
    if !out.status.success() {
        return Err(format!("transfer failed: {}", text(&out)));
    }
    same_file(&src, &to.dir.join("root").join("destage.bin"))?;
    *bytes += SIZE as u64;
    if !before || !after_transfer || after {
        return Err(format!(
            "WCE with the server running {before}, after its transfer {after_transfer}, after it stopped {after} (expected true, true, false)"
        ));
    }
    if stopped.code() != Some(130) {
        return Err(format!(
            "the server exited {:?} on SIGTERM, not 130",
            stopped.code()
        ));
    }
    let log = fs::read_to_string(to.dir.join("serve.log")).unwrap_or_default();
    let report = log
        .lines()
        .find(|l| l.contains("destaging off"))
        .and_then(|l| l.split(": destaging off for this command: ").nth(1))
        .unwrap_or("?")
        .to_owned();
    Ok(format!(
        "WCE 0 -> 1 while the server ran with --destage-off and served a transfer (seen from {}), restored to 0 on SIGTERM; server said: {report}",
        observer.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_deterministic_and_distinct() {
        assert_eq!(random_bytes(1, 100), random_bytes(1, 100));
        assert_ne!(random_bytes(1, 100), random_bytes(2, 100));
        assert_eq!(random_bytes(3, 13).len(), 13);
    }
}
