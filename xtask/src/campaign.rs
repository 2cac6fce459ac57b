//! `cargo xtask crash-campaign [--kills N] [--seed S]`: random SIGKILLs of
//! clients and servers in the middle of puts and gets, with real `fts`
//! processes on a file-backed shared device, and what must hold after
//! each one:
//!
//! - no wrong or partial file under a target name, ever (checked after
//!   every kill, byte for byte, independently of fts);
//! - every interrupted transfer completes with `--resume`, and the result
//!   is byte-identical;
//! - once the leases have expired, no Process Id Table entry is in use
//!   (`fts status --json`);
//! - after the servers restart, no fts temporary or partial copy is left;
//! - `fts check` finds the device consistent at the end.
//!
//! It prints the figures (kills, resumed transfers and from where, wrong
//! files, leaked entries, detection times) and fails if any rule broke.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util;

/// Lease timeout formatted for the campaign (ms): detection is quick.
const LEASE_MS: u64 = 1500;
/// How long a client waits for a server to accept (`--timeout`): a server
/// killed before it accepted is indistinguishable from a slow one until
/// then.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
/// Files to move, and their sizes (random, up to this).
const FILES: usize = 6;
const MAX_SIZE: usize = 24 << 20;

struct Opts {
    kills: usize,
    seed: u64,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        kills: 60,
        seed: 0x5eed,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("crash-campaign: {name} needs a value"))
        };
        match a.as_str() {
            "--kills" => o.kills = value("--kills")?.parse().context("--kills N")?,
            "--seed" => o.seed = value("--seed")?.parse().context("--seed S")?,
            other => {
                bail!("crash-campaign: unknown argument `{other}` (expected --kills N, --seed S)")
            }
        }
    }
    if o.kills == 0 || o.kills > 10_000 {
        bail!("crash-campaign: --kills must be 1..=10000");
    }
    Ok(o)
}

/// xorshift64*: reproducible from the seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Kills and reaps on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Rig {
    fts: PathBuf,
    dir: PathBuf,
    dev: String,
    servers: BTreeMap<String, Option<Proc>>,
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

impl Rig {
    fn fts(&self, name: &str) -> Command {
        let mut c = Command::new(&self.fts);
        c.args(["-d", &self.dev, "-n", name])
            .env_remove("FTS_DEVICE")
            .env_remove("FTS_NAME");
        c
    }

    fn root(&self, server: &str) -> PathBuf {
        self.dir.join(server)
    }

    fn start_server(&mut self, name: &str) -> Result<()> {
        let root = self.root(name);
        std::fs::create_dir_all(&root)?;
        let log = self.dir.join(format!("{name}.log"));
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = self
            .fts(name)
            .args(["serve", "--root"])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .with_context(|| format!("starting server {name}"))?;
        self.servers.insert(name.to_owned(), Some(Proc(child)));
        Ok(())
    }

    fn kill_server(&mut self, name: &str) {
        if let Some(slot) = self.servers.get_mut(name) {
            drop(slot.take());
        }
    }

    /// SIGTERM and wait: a graceful stop, which frees the server's
    /// registration (a SIGKILL leaves it to the next reaper).
    fn stop_server(&mut self, name: &str) -> Result<()> {
        if let Some(mut p) = self.servers.get_mut(name).and_then(Option::take) {
            let st = Command::new("kill")
                .args(["-TERM", &p.0.id().to_string()])
                .status()?;
            if !st.success() {
                bail!("kill -TERM server {name} failed");
            }
            let until = Instant::now() + Duration::from_secs(20);
            while p.0.try_wait()?.is_none() {
                if Instant::now() > until {
                    bail!("server {name} did not stop within 20 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn status(&self) -> Result<serde_json::Value> {
        let o = self
            .fts("campaign-status")
            .args(["status", "--json"])
            .output()?;
        if !o.status.success() {
            bail!("fts status failed: {}", text(&o));
        }
        Ok(serde_json::from_slice(&o.stdout)?)
    }

    fn entries_of(&self, requestor: &str) -> Result<usize> {
        Ok(self.status()?["connections"].as_array().map_or(0, |a| {
            a.iter().filter(|e| e["requestor"] == requestor).count()
        }))
    }

    fn in_use(&self) -> Result<usize> {
        Ok(self.status()?["connections"].as_array().map_or(0, Vec::len))
    }
}

/// Every fts temporary or partial copy under `dir`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".fts-") {
                out.push(e.path());
            }
        }
    }
    out
}

/// Whatever is under `target` is absent or exactly `want`.
fn intact_or_absent(target: &Path, want: &[u8]) -> Result<(), String> {
    match std::fs::read(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", target.display())),
        Ok(got) if got == want => Ok(()),
        Ok(got) => Err(format!(
            "{} holds {} bytes that are not the file ({} bytes)",
            target.display(),
            got.len(),
            want.len()
        )),
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub fn cmd(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    util::run(util::cargo().args(["build", "-p", "fts-cli", "--bin", "fts"]))?;
    let tmp = std::env::temp_dir().join(format!("fts-campaign-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let result = run(&o, &tmp);
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(_) => eprintln!("crash-campaign: kept {} for a look", tmp.display()),
    }
    result
}

fn run(o: &Opts, tmp: &Path) -> Result<()> {
    let mut rng = Rng(o.seed | 1);
    let mut rig = Rig {
        fts: util::root().join("target/debug/fts"),
        dir: tmp.to_path_buf(),
        dev: tmp.join("shared.img").display().to_string(),
        servers: BTreeMap::new(),
    };
    let f = rig
        .fts("campaign")
        .args([
            "format",
            "--size",
            "96M",
            "--segment-size",
            "64K",
            "--ring-entries",
            "32",
            "--batch",
            "4",
            "--max-connections",
            "8",
            "--lock-timeout-ms",
            "1000",
            "--lease-timeout-ms",
        ])
        .arg(LEASE_MS.to_string())
        .output()?;
    if !f.status.success() {
        bail!("format: {}", text(&f));
    }
    let local = tmp.join("local");
    std::fs::create_dir_all(&local)?;
    let mut files = Vec::new();
    for i in 0..FILES {
        let len = rng.below(MAX_SIZE as u64) as usize + 1;
        let mut data = Vec::with_capacity(len + 8);
        while data.len() < len {
            data.extend_from_slice(&rng.next().to_le_bytes());
        }
        data.truncate(len);
        let name = format!("f{i}.bin");
        std::fs::write(local.join(&name), &data)?;
        files.push((name, data));
    }
    let servers = ["s1", "s2"];
    for s in servers {
        rig.start_server(s)?;
    }
    std::thread::sleep(Duration::from_millis(300));

    let mut kills = 0usize;
    let mut client_kills = 0usize;
    let mut server_kills = 0usize;
    let mut resumed_from_middle = 0usize;
    let mut rounds = 0usize;
    let mut completed_before_kill = 0usize;
    let mut violations: Vec<String> = Vec::new();
    let mut client_freed: Vec<Duration> = Vec::new();
    let mut server_noticed: Vec<Duration> = Vec::new();
    let start = Instant::now();
    while kills < o.kills {
        rounds += 1;
        let (name, data) = &files[rng.below(FILES as u64) as usize];
        let server = servers[rng.below(2) as usize];
        let client = format!("c{rounds}");
        let is_put = rng.below(2) == 0;
        let remote = format!("r-{name}");
        // A get needs the file on the server first.
        if !is_put {
            std::fs::write(rig.root(server).join(&remote), data)?;
        }
        let target = if is_put {
            rig.root(server).join(&remote)
        } else {
            local.join(format!("got-{server}-{name}"))
        };
        if is_put {
            let _ = std::fs::remove_file(&target);
        }
        let transfer = |rig: &Rig, client: &str| -> Command {
            let mut c = rig.fts(client);
            if is_put {
                c.args(["put", server]).arg(local.join(name)).arg(&remote);
            } else {
                c.args(["get", server, &remote]).arg(&target);
            }
            c.args(["--resume", "--replace", "--timeout"])
                .arg(CONNECT_TIMEOUT.as_secs().to_string());
            c
        };
        let mut child = Proc(
            transfer(&rig, &client)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?,
        );
        // Kill somewhere in the transfer: right away, or after it has run a bit.
        std::thread::sleep(Duration::from_millis(rng.below(250)));
        if !matches!(child.0.try_wait(), Ok(None)) {
            // Finished before the kill: no crash to count; the file must be right.
            drop(child);
            if let Err(v) = intact_or_absent(&target, data) {
                violations.push(format!("round {rounds}, completed: {v}"));
            }
            completed_before_kill += 1;
            continue;
        }
        let kill_server = rng.below(3) == 0;
        let killed_at = Instant::now();
        if kill_server {
            rig.kill_server(server);
            server_kills += 1;
            // The client must notice within a lease timeout (or, if the
            // server died before accepting, its connect timeout).
            let limit =
                CONNECT_TIMEOUT + Duration::from_millis(3 * LEASE_MS) + Duration::from_secs(5);
            match child.0.wait_with_output_timeout(limit) {
                Some(_) => server_noticed.push(killed_at.elapsed()),
                None => violations.push(format!(
                    "round {rounds}: the client did not notice the dead server {server} within {limit:?}"
                )),
            }
            rig.start_server(server)?;
        } else {
            drop(child);
            client_kills += 1;
            // The server (or reaper) must free the dead client's entry.
            loop {
                if rig.entries_of(&client)? == 0 {
                    client_freed.push(killed_at.elapsed());
                    break;
                }
                if killed_at.elapsed() > Duration::from_millis(6 * LEASE_MS + 5000) {
                    violations.push(format!(
                        "round {rounds}: {client}'s entry still in use {:.1}s after it was killed",
                        killed_at.elapsed().as_secs_f64()
                    ));
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        kills += 1;
        if let Err(v) = intact_or_absent(&target, data) {
            violations.push(format!("round {rounds}, after the kill: {v}"));
        }
        // Resume until it completes (a restarted server may need a moment).
        let mut done = false;
        for attempt in 0..8 {
            // The same fts name: a partial copy belongs to its peer.
            let out = transfer(&rig, &client).output()?;
            if out.status.success() {
                let said = text(&out);
                let from = said
                    .split("resumed at byte ")
                    .nth(1)
                    .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                if from > 0 {
                    resumed_from_middle += 1;
                }
                done = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            if attempt == 7 {
                violations.push(format!(
                    "round {rounds}: the resumed {} did not complete: {}",
                    if is_put { "put" } else { "get" },
                    text(&out)
                ));
            }
        }
        if done {
            match std::fs::read(&target) {
                Ok(got) if got == *data => {}
                Ok(got) => violations.push(format!(
                    "round {rounds}: after the resume {} has {} bytes, not the file's {}",
                    target.display(),
                    got.len(),
                    data.len()
                )),
                Err(e) => violations.push(format!("round {rounds}: {}: {e}", target.display())),
            }
        }
        if !violations.is_empty() && violations.len() > 10 {
            break;
        }
    }
    // Leases expire; the servers' reapers free whatever is left.
    let drained = Instant::now();
    let mut leaked = rig.in_use()?;
    while leaked > 0 && drained.elapsed() < Duration::from_millis(4 * LEASE_MS + 2000) {
        std::thread::sleep(Duration::from_millis(100));
        leaked = rig.in_use()?;
    }
    if leaked > 0 {
        violations.push(format!(
            "{leaked} entries still in use after the leases expired: {}",
            rig.status()?
        ));
    }
    // Restart the servers; then no temporaries may be left anywhere.
    for s in servers {
        rig.kill_server(s);
        rig.start_server(s)?;
    }
    std::thread::sleep(Duration::from_millis(1500));
    let mut left = temporaries(&local);
    for s in servers {
        left.extend(temporaries(&rig.root(s)));
    }
    if !left.is_empty() {
        violations.push(format!(
            "{} temporaries left after the servers restarted: {left:?}",
            left.len()
        ));
    }
    // Stopped as an operator stops them: their registrations are freed,
    // and `check` must then find nothing.
    for s in servers {
        rig.stop_server(s)?;
    }
    let check = rig.fts("campaign").arg("check").output()?;
    let check_ok = check.status.success();
    if !check_ok {
        violations.push(format!("fts check at the end: {}", text(&check)));
    }
    let elapsed = start.elapsed();
    println!(
        "crash campaign (seed {}): {rounds} rounds in {:.0}s",
        o.seed,
        elapsed.as_secs_f64()
    );
    println!(
        "  SIGKILLs during a transfer: {kills} ({client_kills} clients, {server_kills} servers); {completed_before_kill} transfers finished before their kill"
    );
    println!(
        "  interrupted transfers completed with --resume: {}, {resumed_from_middle} of them continuing a partial copy",
        kills
    );
    println!(
        "  dead client's entry freed after: median {:.2}s, max {:.2}s (lease timeout {:.1}s)",
        median(&mut client_freed).as_secs_f64(),
        client_freed
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_secs_f64(),
        LEASE_MS as f64 / 1000.0
    );
    println!(
        "  dead server noticed by its client after: median {:.2}s, max {:.2}s (a server killed before it accepted: at the {}s connect timeout)",
        median(&mut server_noticed).as_secs_f64(),
        server_noticed.iter().max().copied().unwrap_or_default().as_secs_f64(),
        CONNECT_TIMEOUT.as_secs()
    );
    println!(
        "  wrong or partial files under a target name: {}",
        violations
            .iter()
            .filter(|v| v.contains("not the file"))
            .count()
    );
    println!("  entries in use once the leases expired: {leaked}");
    println!("  temporaries after the restart: {}", left.len());
    println!(
        "  fts check at the end: {}",
        if check_ok { "consistent" } else { "PROBLEMS" }
    );
    if !violations.is_empty() {
        bail!(
            "crash campaign: {} rule(s) broken:\n  {}",
            violations.len(),
            violations.join("\n  ")
        );
    }
    Ok(())
}

/// Waiting for a child with a deadline (std has none).
trait WaitTimeout {
    fn wait_with_output_timeout(&mut self, limit: Duration) -> Option<()>;
}

impl WaitTimeout for Child {
    fn wait_with_output_timeout(&mut self, limit: Duration) -> Option<()> {
        let t0 = Instant::now();
        loop {
            match self.try_wait() {
                Ok(Some(_)) => return Some(()),
                Ok(None) if t0.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }
}
