//! Driving the release `fts` binary: format, serve, timed puts and gets,
//! a shell on one connection for round trips, idle CPU, concurrent
//! streams.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cleanup::{Cgroup, Journal, Proc};
use super::report::median;
use super::tools::{self, timed, MIB};

/// The server's fts name.
pub const SERVER: &str = "bench-srv";

/// `fts` on one master device.
#[derive(Debug, Clone)]
pub struct Fts<'a> {
    pub bin: &'a Path,
    pub dev: String,
    /// Run every process in this cgroup (the capped devices).
    pub cgroup: Option<&'a Cgroup>,
    /// Arguments added after the subcommand of serve, put and get
    /// (`--key-file K`).
    pub extra: Vec<String>,
}

impl Fts<'_> {
    /// `fts -d DEV -n NAME ARGS...`, with nothing from the environment.
    pub fn cmd(&self, name: &str, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin);
        c.args(["-d", &self.dev, "-n", name])
            .args(args)
            .env_remove("FTS_DEVICE")
            .env_remove("FTS_NAME")
            .env_remove("FTS_LOCK")
            .env_remove("FTS_INITIATOR")
            .env_remove("FTS_FAULT_PLAN")
            .env_remove("FTS_KEY_FILE")
            .env_remove("FTS_KNOWN_SERVERS")
            .env_remove("FTS_AUTHORIZED_KEYS")
            .env_remove("FTS_SECONDARY");
        match self.cgroup {
            Some(cg) => cg.wrap(&c),
            None => c,
        }
    }

    /// `format --force ARGS...`; returns what format printed.
    pub fn format(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["format", "--force"];
        a.extend_from_slice(args);
        let (_, out) = timed(&mut self.cmd(SERVER, &a), Duration::from_secs(120))
            .with_context(|| format!("fts format on {}", self.dev))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `serve --root ROOT`, logging to `log`; waits until it is serving.
    pub fn serve(&self, journal: &Journal, root: &Path, log: &Path) -> Result<Proc> {
        fs::create_dir_all(root)?;
        let logf = fs::File::create(log)?;
        let root_s = root.display().to_string();
        let mut a = vec!["serve"];
        a.extend(self.extra.iter().map(String::as_str));
        a.extend(["--root", &root_s]);
        let mut c = self.cmd(SERVER, &a);
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(logf);
        let mut p = Proc::spawn(journal, &mut c, "fts serve")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = fs::read_to_string(log).unwrap_or_default();
            if text.contains("serving as") {
                return Ok(p);
            }
            if p.exited() || Instant::now() > deadline {
                bail!(
                    "fts serve did not start: {}",
                    text.lines().last().unwrap_or("no output")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn transfer_timeout(bytes: u64) -> Duration {
        Duration::from_secs(120 + bytes / (5 * MIB))
    }

    /// One timed `put` of `local` as `remote`, as client `name`.
    pub fn put(&self, name: &str, local: &Path, remote: &str, extra: &[&str]) -> Result<Duration> {
        let size = fs::metadata(local)?.len();
        let l = local.display().to_string();
        let mut a = vec!["put"];
        a.extend(self.extra.iter().map(String::as_str));
        a.extend_from_slice(extra);
        a.extend([SERVER, &l, remote]);
        let (d, _) = timed(&mut self.cmd(name, &a), Self::transfer_timeout(size))?;
        Ok(d)
    }

    /// One timed `get` of `remote` into `local`.
    pub fn get(
        &self,
        name: &str,
        remote: &str,
        local: &Path,
        size: u64,
        extra: &[&str],
    ) -> Result<Duration> {
        let _ = fs::remove_file(local);
        let l = local.display().to_string();
        let mut a = vec!["get"];
        a.extend(self.extra.iter().map(String::as_str));
        a.extend_from_slice(extra);
        a.extend([SERVER, remote, &l]);
        let (d, _) = timed(&mut self.cmd(name, &a), Self::transfer_timeout(size))?;
        let got = fs::metadata(local).map(|m| m.len()).unwrap_or(0);
        if got != size {
            bail!("get wrote {got} bytes, not {size}");
        }
        Ok(d)
    }

    /// `fts shell SERVER` on one connection.
    pub fn shell(&self, name: &str) -> Result<Shell> {
        let mut c = self.cmd(name, &["shell", SERVER]);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().context("starting fts shell")?;
        let stdin = child.stdin.take().context("shell stdin")?;
        let lines = tools::line_reader(child.stdout.take().context("shell stdout")?);
        let errs = tools::line_reader(child.stderr.take().context("shell stderr")?);
        let mut sh = Shell {
            child: Some(child),
            stdin: Some(stdin),
            lines,
            errs,
        };
        let first = sh.line(Duration::from_secs(20))?;
        if !first.starts_with("connected to") {
            bail!("fts shell said {first:?} instead of connecting");
        }
        Ok(sh)
    }
}

/// A running `fts shell`: send a command, wait for its line.
#[derive(Debug)]
pub struct Shell {
    child: Option<std::process::Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    errs: Receiver<String>,
}

impl Shell {
    fn line(&mut self, timeout: Duration) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(_) => {
                let err: Vec<String> = self.errs.try_iter().collect();
                let err = err
                    .iter()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map_or("no output", |l| l.trim());
                bail!("fts shell: no answer ({err})")
            }
        }
    }

    /// Sends `cmd` and waits for one line of output; returns the time
    /// from sending to the line.
    pub fn timed(&mut self, cmd: &str) -> Result<Duration> {
        let stdin = self.stdin.as_mut().context("shell closed")?;
        let start = Instant::now();
        stdin.write_all(cmd.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        self.line(Duration::from_secs(30))?;
        Ok(start.elapsed())
    }

    /// Says `quit` and waits for the shell to exit.
    pub fn quit(mut self) -> Result<()> {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"quit\n");
        }
        let mut child = self.child.take().context("shell gone")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait()? {
                if !st.success() {
                    bail!("fts shell exited with {st}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("fts shell did not quit");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Median ms of `ops` commands on one shell connection; each must print
/// exactly one line. `cmd(i)` is the i-th command.
pub fn shell_median(
    fts: &Fts<'_>,
    name: &str,
    ops: usize,
    cmd: impl Fn(usize) -> String,
) -> Result<f64> {
    let mut sh = fts.shell(name)?;
    // One warm-up command: the first one pays for page faults and caches.
    sh.timed(&cmd(ops))?;
    let mut v = Vec::with_capacity(ops);
    for i in 0..ops {
        v.push(sh.timed(&cmd(i))?.as_secs_f64() * 1000.0);
    }
    sh.quit()?;
    median(&v).context("no samples")
}

/// Percent of a core `pid` used (user + system, all threads) over `secs`.
pub fn cpu_percent(pid: u32, secs: f64) -> Result<f64> {
    let ticks = || -> Result<u64> {
        let s = fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        let rest = s.rsplit_once(')').map(|(_, r)| r).context("odd stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3; utime is field 14, stime 15.
        let u: u64 = f.get(11).and_then(|v| v.parse().ok()).context("utime")?;
        let st: u64 = f.get(12).and_then(|v| v.parse().ok()).context("stime")?;
        Ok(u + st)
    };
    let hz: f64 = crate::util::probe(Command::new("getconf").arg("CLK_TCK"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100.0);
    let t0 = ticks()?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let t1 = ticks()?;
    let wall = start.elapsed().as_secs_f64();
    Ok((t1 - t0) as f64 / hz / wall * 100.0)
}

/// `n` concurrent puts of `local` (each `local` is one stream's file).
/// Returns the aggregate MiB/s (all bytes over the wall time) and the
/// slowest and mean stream's MiB/s.
pub fn streams(fts: &Fts<'_>, locals: &[PathBuf], tag: &str) -> Result<(f64, f64, f64)> {
    let sizes: Vec<u64> = locals
        .iter()
        .map(|l| fs::metadata(l).map(|m| m.len()))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let results: Vec<Result<Duration>> = std::thread::scope(|s| {
        let hs: Vec<_> = locals
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let fts = fts.clone();
                s.spawn(move || fts.put(&format!("bench-c{i}"), l, &format!("{tag}-{i}"), &[]))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("stream thread panicked")))
            })
            .collect()
    });
    let wall = start.elapsed();
    let mut per = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let d = r.with_context(|| format!("stream {i} of {}", locals.len()))?;
        per.push(tools::rate(sizes[i], d));
    }
    let total: u64 = sizes.iter().sum();
    let min = per.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = per.iter().sum::<f64>() / per.len() as f64;
    Ok((tools::rate(total, wall), min, mean))
}
