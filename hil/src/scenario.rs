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
//! | `holder-crash` | a host dies (SIGKILL + link down) holding the table lock; the others break its reservation after the lock timeout and carry on |
//! | `link-flap` | a host's link goes down mid-transfer and comes back; the file arrives intact, or the transfer fails cleanly with nothing under the target name and a re-run succeeds |
//! | `destage` | the Caching page is set for a transfer (WCE 0 → 1 seen from a third host) and restored afterwards |

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::{NetnsHost, NetnsRig};
use crate::ScenarioReport;

/// Every scenario, in the order they run.
pub const ALL: &[&str] = &[
    "all-pairs",
    "contention",
    "holder-crash",
    "link-flap",
    "destage",
];

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

/// Runs the named scenarios (all of [`ALL`] when `names` is empty).
pub fn run_netns(rig: &mut NetnsRig, names: &[String]) -> Vec<ScenarioReport> {
    let names: Vec<&str> = if names.is_empty() {
        ALL.to_vec()
    } else {
        names.iter().map(String::as_str).collect()
    };
    let mut reports = Vec::new();
    for name in names {
        let start = Instant::now();
        let mut bytes = 0u64;
        let result = prepare(rig).and_then(|()| match name {
            "all-pairs" => all_pairs(rig, &mut bytes),
            "contention" => contention(rig),
            "holder-crash" => holder_crash(rig, &mut bytes),
            "link-flap" => link_flap(rig, &mut bytes),
            "destage" => destage(rig, &mut bytes),
            other => Err(format!(
                "unknown scenario {other:?} (known: {})",
                ALL.join(", ")
            )),
        });
        // Whatever happened, no host process outlives its scenario.
        for h in &rig.hosts {
            rig.kill_host(h);
            let _ = rig.set_link(h, true);
        }
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

fn spawn(mut c: std::process::Command) -> Result<Child, String> {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {c:?}: {e}"))
}

fn finish(child: Child, what: &str) -> Result<Output, String> {
    child
        .wait_with_output()
        .map_err(|e| format!("{what}: waiting: {e}"))
}

fn start_servers(
    rig: &NetnsRig,
    hosts: &[&NetnsHost],
    extra: &[&str],
) -> Result<Vec<Child>, String> {
    let mut servers = Vec::new();
    for h in hosts {
        servers.push(rig.serve(h, extra).map_err(|e| e.to_string())?);
    }
    Ok(servers)
}

fn stop(children: Vec<Child>) {
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn put(
    rig: &NetnsRig,
    from: &NetnsHost,
    client: &str,
    to: &NetnsHost,
    src: &Path,
    remote: &str,
) -> std::process::Command {
    let mut c = rig.fts(from, client);
    c.args(["put", &to.name])
        .arg(src)
        .arg(remote)
        .args(["--timeout", "60"]);
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
            let child = spawn(put(rig, from, &client, to, &src, &remote))?;
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
    stop(servers);
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    Ok(format!(
        "{n} concurrent transfers, all byte-identical, {:.1} MiB/s aggregate",
        *bytes as f64 / (1 << 20) as f64 / secs
    ))
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
    let start = Instant::now();
    let mut shells = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let mut script = String::new();
        for r in 0..ROUNDS {
            let peer = hosts[(i + 1 + r % (hosts.len() - 1)) % hosts.len()];
            script.push_str(&format!("open {}\nclose\n", peer.name));
        }
        script.push_str("quit\n");
        let mut c = rig.fts(h, &format!("{}-shell", h.name));
        c.args(["shell"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| format!("shell on {}: {e}", h.name))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("shell on {}: {e}", h.name))?;
        }
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
    stop_reader.store(true, Ordering::Relaxed);
    let seen = reader
        .join()
        .map_err(|_| "the reader thread panicked".to_string())?;
    stop(servers);
    let seen = seen?;
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    Ok(format!(
        "{opened} connections opened and closed in {secs:.1}s ({:.0}/s); reader took {} snapshots, saw {} entry generations, each with one owner",
        opened as f64 / secs,
        seen.0,
        seen.1
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
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("reader: {e}"))?;
        if !out.status.success() {
            return Err(format!("reader: status failed: {}", text(&out)));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("reader: bad JSON: {e}"))?;
        snapshots += 1;
        let mut in_use: HashMap<String, u64> = HashMap::new();
        for e in v["connections"].as_array().into_iter().flatten() {
            let slot = e["slot"].as_u64().unwrap_or(0);
            let generation = e["generation"].as_u64().unwrap_or(0);
            let who = e["requestor"].as_str().unwrap_or("").to_owned();
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

/// Scenario 3.
fn holder_crash(rig: &NetnsRig, bytes: &mut u64) -> Result<String, String> {
    let victim = &rig.hosts[0];
    let server = &rig.hosts[1];
    let client_host = rig.hosts.get(2).unwrap_or(server);
    let mut holder = spawn({
        let mut c = rig.fts(victim, "holder");
        c.args(["hold-lock", "600"]);
        c
    })?;
    wait_line(
        &mut holder,
        "holding the Process Id Table lock",
        Duration::from_secs(20),
    )?;
    // The host dies holding the lock: its processes are killed and its
    // link goes down.
    let crash = Instant::now();
    crate::rig::Host::crash(&mut victim.clone());
    let _ = holder.wait();
    let servers = start_servers(rig, &[server], &[])?;
    let src = client_host.dir.join("after-crash.bin");
    fs::write(&src, random_bytes(42, 1 << 20)).map_err(|e| e.to_string())?;
    let out = put(
        rig,
        client_host,
        "survivor",
        server,
        &src,
        "after-crash.bin",
    )
    .output()
    .map_err(|e| e.to_string())?;
    let recovered = crash.elapsed();
    stop(servers);
    if !out.status.success() {
        return Err(format!("the survivors did not carry on: {}", text(&out)));
    }
    same_file(&src, &server.dir.join("root").join("after-crash.bin"))?;
    *bytes += 1 << 20;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let broke = if stderr.contains("preempting") || stderr.contains("LOGICAL UNIT RESET") {
        "holder preempted"
    } else {
        "lock taken"
    };
    // Lock timeout 2 s on disk: recovery must come soon after it.
    if recovered > Duration::from_secs(15) {
        return Err(format!("recovery took {recovered:?}"));
    }
    Ok(format!(
        "{} killed while holding the lock; {broke}, transfer done {:.1}s after the crash (lock timeout 2.0s)",
        victim.name,
        recovered.as_secs_f64()
    ))
}

/// Scenario 4.
fn link_flap(rig: &NetnsRig, bytes: &mut u64) -> Result<String, String> {
    const SIZE: usize = 48 << 20;
    let from = &rig.hosts[0];
    let to = &rig.hosts[1];
    let servers = start_servers(rig, &[to], &[])?;
    let src = from.dir.join("flap.bin");
    fs::write(&src, random_bytes(7, SIZE)).map_err(|e| e.to_string())?;
    let dst = to.dir.join("root").join("flap.bin");
    let mut child = spawn(put(rig, from, "flapper", to, &src, "flap.bin"))?;
    // Take the link down once data is arriving (the server's temporary
    // file exists) and the transfer is still running, for 1.5 s.
    let root = to.dir.join("root");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let arriving = fs::read_dir(&root).is_ok_and(|mut d| d.next().is_some());
        if arriving {
            break;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            stop(servers);
            return Err("the transfer never got under way".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    rig.set_link(from, false).map_err(|e| e.to_string())?;
    if child.try_wait().ok().flatten().is_some() {
        stop(servers);
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
        if dst.exists() {
            return Err(format!(
                "the transfer failed ({}) but left {} under the target name",
                text(&out),
                dst.display()
            ));
        }
        let again = put(rig, from, "flapper2", to, &src, "flap.bin")
            .output()
            .map_err(|e| e.to_string())?;
        if !again.status.success() {
            stop(servers);
            return Err(format!("the re-run failed: {}", text(&again)));
        }
        same_file(&src, &dst)?;
        *bytes += SIZE as u64;
        format!(
            "failed cleanly (exit {:?}, nothing under the target name), re-run intact",
            out.status.code()
        )
    };
    stop(servers);
    Ok(format!(
        "{} MiB put with a 1.5 s link flap: {outcome}",
        SIZE >> 20
    ))
}

fn wce(rig: &NetnsRig, host: &NetnsHost) -> Result<bool, String> {
    let out = rig
        .fts(host, "cache-reader")
        .args(["scsi", "cache"])
        .output()
        .map_err(|e| e.to_string())?;
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
    let out = rig
        .fts(from, "cache-admin")
        .args(["scsi", "cache", "--set", "wce=off"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() || wce(rig, observer)? {
        return Err(format!("cannot set WCE=0 first: {}", text(&out)));
    }
    let mut server = rig
        .serve(to, &["--destage-off"])
        .map_err(|e| e.to_string())?;
    // The server applies the setting when it starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !wce(rig, observer)? {
        if Instant::now() > deadline {
            let _ = server.kill();
            return Err("WCE never became 1 while the server ran with --destage-off".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let src = from.dir.join("destage.bin");
    fs::write(&src, random_bytes(5, SIZE)).map_err(|e| e.to_string())?;
    let out = put(rig, from, "destager", to, &src, "destage.bin")
        .output()
        .map_err(|e| e.to_string())?;
    let during = wce(rig, observer)?;
    // SIGTERM: the server restores the page before it exits.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let after = wce(rig, observer)?;
    if !out.status.success() {
        return Err(format!("transfer failed: {}", text(&out)));
    }
    same_file(&src, &to.dir.join("root").join("destage.bin"))?;
    *bytes += SIZE as u64;
    if !during || after {
        return Err(format!(
            "WCE during the transfer {during}, after {after} (expected true, false)"
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
        "WCE 0 -> 1 for the transfer (seen from {}), restored to 0 on SIGTERM; server said: {report}",
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
