//! The limits and the peers: fio, libiscsi (iscsi-perf and our own
//! iscsi-rw), an sshd on loopback for scp and rsync, a TCP copy; and the
//! plumbing: timed processes, test data, the machine's description.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::cleanup::{CreatedDir, Journal, Proc};

pub const MIB: u64 = 1 << 20;

/// Runs `cmd` to completion, capturing its output, killing it after
/// `timeout`. Returns how long it ran (spawn to exit) and its output;
/// fails with the last line of its stderr if it exited unsuccessfully.
pub fn timed(cmd: &mut Command, timeout: Duration) -> Result<(Duration, Output)> {
    // A command wrapped to join a cgroup (`sh -c '...' sh PROG ARGS`) is
    // named after PROG.
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let prog = match (cmd.get_program().to_str(), args.first().map(String::as_str)) {
        (Some("sh"), Some("-c")) if args.len() > 3 => args[3].clone(),
        _ => cmd.get_program().to_string_lossy().into_owned(),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("could not start {prog}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((Instant::now(), out));
    });
    let (end, out) = match rx.recv_timeout(timeout) {
        Ok(v) => v,
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = rx.recv_timeout(Duration::from_secs(10));
            bail!("{prog} did not finish within {}s", timeout.as_secs());
        }
    };
    let out = out.with_context(|| format!("waiting for {prog}"))?;
    if !out.status.success() {
        bail!("{}", failure_text(&prog, &out));
    }
    Ok((end - start, out))
}

/// The most telling line of a failed command's output.
pub fn failure_text(prog: &str, out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    let text = err
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .or_else(|| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let name = Path::new(prog)
        .file_name()
        .map_or_else(|| prog.to_string(), |n| n.to_string_lossy().into_owned());
    let text = text
        .strip_prefix("fts: error: ")
        .unwrap_or(&text)
        .to_string();
    format!("{name} ({}): {text}", out.status)
}

/// MiB/s of `bytes` in `d`.
pub fn rate(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64().max(1e-9)
}

/// Writes `size` bytes of pseudo-random data (xorshift64*, incompressible
/// for ssh's and anyone's purposes) to `path`, durably.
pub fn random_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut x = seed | 1;
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            chunk.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(MIB) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(())
}

/// Copies `src` over `dst` from byte 0, repeated until `len` bytes (fills
/// a device or a LUN's backing file with real data, so that reads are not
/// of holes).
pub fn fill_from(dst: &Path, src: &Path, len: u64) -> Result<()> {
    let mut out = fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .with_context(|| format!("opening {}", dst.display()))?;
    let mut done = 0;
    let mut buf = vec![0u8; 4 * MIB as usize];
    while done < len {
        let mut inp = File::open(src)?;
        loop {
            let n = inp.read(&mut buf)?;
            if n == 0 || done >= len {
                break;
            }
            let n = (n as u64).min(len - done) as usize;
            out.write_all(&buf[..n])?;
            done += n as u64;
        }
    }
    out.sync_all()?;
    Ok(())
}

// ---------------------------------------------------------------- fio

fn fio(args: &[String], timeout: Duration) -> Result<Value> {
    let mut c = Command::new("fio");
    c.arg("--output-format=json").args(args);
    let (_, out) = timed(&mut c, timeout)?;
    // fio may print warnings before the JSON.
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find('{').context("fio printed no JSON")?;
    let v: Value = serde_json::from_str(&text[start..]).context("parsing fio's JSON")?;
    for j in v["jobs"].as_array().context("fio JSON without jobs")? {
        if j["error"].as_i64().unwrap_or(0) != 0 {
            bail!("fio job {} failed with error {}", j["jobname"], j["error"]);
        }
    }
    Ok(v)
}

fn fio_timeout(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / (5 * MIB))
}

/// Writes `size` bytes at `offset` of `dev` (direct, 8 × 1 MiB in flight),
/// so that later reads there read data.
pub fn fio_prefill(dev: &str, offset: u64, size: u64) -> Result<()> {
    fio(
        &[
            "--name=prefill".into(),
            format!("--filename={dev}"),
            "--rw=write".into(),
            "--bs=1M".into(),
            "--iodepth=8".into(),
            "--ioengine=libaio".into(),
            "--direct=1".into(),
            format!("--offset={offset}"),
            format!("--size={size}"),
        ],
        fio_timeout(size),
    )?;
    Ok(())
}

/// The put limit of a device, from two fio measurements (MiB/s).
#[derive(Debug, Clone, Copy)]
pub struct PutLimit {
    /// The three jobs at once: what the machine did doing all of a put's
    /// work together (a lower estimate of the limit: fio's own processes
    /// compete for the cores too).
    pub concurrent: f64,
    /// The slowest of the three jobs, each run alone: no put can beat it
    /// (an upper bound).
    pub alone: f64,
}

/// What a put has to do, as fast as the machine can do it: write `size`
/// bytes to `dev` at 0 ‖ read `size` bytes from `dev` at `read_at` ‖ write
/// `size` bytes to the local file `local` and fsync it; 8 × 1 MiB in flight
/// each (the local file buffered, as fts writes it). Measured with the
/// three jobs at once (the size over the slowest job's time) and with each
/// alone (the size over the slowest job's time alone).
pub fn fio_put_limit(dev: &str, read_at: u64, local: &Path, size: u64) -> Result<PutLimit> {
    let common: Vec<String> = vec![
        "--bs=1M".into(),
        "--iodepth=8".into(),
        "--ioengine=libaio".into(),
    ];
    let jobs: [Vec<String>; 3] = [
        vec![
            "--name=device-write".into(),
            format!("--filename={dev}"),
            "--rw=write".into(),
            "--direct=1".into(),
            "--offset=0".into(),
            format!("--size={size}"),
        ],
        vec![
            "--name=device-read".into(),
            format!("--filename={dev}"),
            "--rw=read".into(),
            "--direct=1".into(),
            format!("--offset={read_at}"),
            format!("--size={size}"),
        ],
        vec![
            "--name=local-write-fsync".into(),
            format!("--filename={}", local.display()),
            "--rw=write".into(),
            "--direct=0".into(),
            "--end_fsync=1".into(),
            "--fallocate=none".into(),
            format!("--size={size}"),
        ],
    ];
    let slowest = |args: Vec<String>, n: u64| -> Result<f64> {
        let _ = fs::remove_file(local);
        let v = fio(&args, fio_timeout(n * size))?;
        let _ = fs::remove_file(local);
        let mut slowest_ms = 0.0f64;
        for j in v["jobs"].as_array().into_iter().flatten() {
            let ms = j["job_runtime"]
                .as_f64()
                .context("fio job without job_runtime")?;
            let moved = j["read"]["io_bytes"].as_u64().unwrap_or(0)
                + j["write"]["io_bytes"].as_u64().unwrap_or(0);
            if moved != size {
                bail!("fio job {} moved {moved} bytes, not {size}", j["jobname"]);
            }
            slowest_ms = slowest_ms.max(ms);
        }
        Ok(rate(size, Duration::from_secs_f64(slowest_ms / 1000.0)))
    };
    let mut all = common.clone();
    for j in &jobs {
        all.extend(j.iter().cloned());
    }
    let concurrent = slowest(all, 3)?;
    let mut alone = f64::INFINITY;
    for j in &jobs {
        let mut args = common.clone();
        args.extend(j.iter().cloned());
        alone = alone.min(slowest(args, 1)?);
    }
    Ok(PutLimit { concurrent, alone })
}

/// Median latency in ms of 4 KiB O_DIRECT `write`s or `read`s, one in
/// flight, at random places of `[offset, offset + size)` of `dev`, for
/// `secs` seconds.
pub fn fio_latency(dev: &str, write: bool, offset: u64, size: u64, secs: u32) -> Result<f64> {
    let v = fio(
        &[
            "--name=latency".into(),
            format!("--filename={dev}"),
            format!("--rw={}", if write { "randwrite" } else { "randread" }),
            "--bs=4k".into(),
            "--iodepth=1".into(),
            "--ioengine=psync".into(),
            "--direct=1".into(),
            format!("--offset={offset}"),
            format!("--size={size}"),
            format!("--runtime={secs}"),
            "--time_based".into(),
        ],
        Duration::from_secs(60 + u64::from(secs)),
    )?;
    let dir = if write { "write" } else { "read" };
    let ns = v["jobs"][0][dir]["clat_ns"]["percentile"]["50.000000"]
        .as_f64()
        .context("fio JSON without the median completion latency")?;
    Ok(ns / 1e6)
}

// ---------------------------------------------------------------- libiscsi

const ISCSI_RW_C: &str = include_str!("iscsi_rw.c");

/// Builds `iscsi-rw` (libiscsi's own write rate; iscsi-perf only reads)
/// into `dir`.
pub fn build_iscsi_rw(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("iscsi_rw.c");
    let bin = dir.join("iscsi-rw");
    fs::write(&src, ISCSI_RW_C)?;
    let mut c = Command::new("cc");
    c.args(["-O2", "-o"]).arg(&bin).arg(&src).arg("-liscsi");
    timed(&mut c, Duration::from_secs(120))
        .context("building iscsi-rw (needs cc and libiscsi-dev)")?;
    Ok(bin)
}

/// One `iscsi-rw` result.
#[derive(Debug, Clone, Copy)]
pub struct IscsiRw {
    pub secs: f64,
    pub p50_ms: f64,
}

/// One `iscsi-rw` run (see `iscsi_rw.c`).
#[derive(Debug, Clone, Copy)]
pub struct RwJob<'a> {
    pub url: &'a str,
    pub write: bool,
    /// Requests in flight.
    pub depth: u32,
    /// Bytes per request.
    pub req: u64,
    pub total: u64,
    /// Byte offset on the LUN.
    pub offset: u64,
    pub initiator: &'a str,
}

impl RwJob<'_> {
    /// Runs it; how long it took (by its own clock) and its median latency.
    pub fn run(&self, bin: &Path) -> Result<IscsiRw> {
        let mut c = Command::new(bin);
        c.arg(self.url)
            .arg(if self.write { "write" } else { "read" })
            .arg(self.depth.to_string())
            .arg(self.req.to_string())
            .arg(self.total.to_string())
            .arg(self.offset.to_string())
            .arg(self.initiator);
        let t = Duration::from_secs(120 + self.total / (5 * MIB));
        let (_, out) = timed(&mut c, t)?;
        parse_iscsi_rw(&out)
    }
}

fn parse_iscsi_rw(out: &Output) -> Result<IscsiRw> {
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Result<f64> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("iscsi-rw printed no {name}: {text:?}"))
    };
    Ok(IscsiRw {
        secs: field("secs")?,
        p50_ms: field("p50_us")? / 1000.0,
    })
}

/// `iscsi-perf`'s sequential 1 MiB reads for `secs` seconds with `depth`
/// in flight, in MiB/s (its average IOPS times the request size).
pub fn iscsi_perf(url: &str, depth: u32, block: u32, secs: u32, initiator: &str) -> Result<f64> {
    let blocks = (MIB / u64::from(block)).to_string();
    let mut c = Command::new("iscsi-perf");
    c.args([
        "-i",
        initiator,
        "-m",
        &depth.to_string(),
        "-b",
        &blocks,
        "-t",
        &secs.to_string(),
        url,
    ]);
    let (_, out) = timed(&mut c, Duration::from_secs(60 + u64::from(secs)))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The final "iops average N (M MB/s)" (progress lines end in \r).
    let last = text
        .rsplit("iops average ")
        .next()
        .filter(|_| text.contains("iops average "))
        .context("iscsi-perf printed no average")?;
    let iops: f64 = last
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("cannot read iscsi-perf's average in {last:?}"))?;
    Ok(iops)
}

// ---------------------------------------------------------------- ssh

/// An sshd on 127.0.0.1 with its own host key, config and port, and a
/// client key it accepts.
#[derive(Debug)]
pub struct Sshd {
    pub port: u16,
    pub key: PathBuf,
    _proc: Proc,
    _privsep: CreatedDir,
}

impl Sshd {
    pub fn start(journal: &Journal, dir: &Path) -> Result<Sshd> {
        fs::create_dir_all(dir)?;
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .context("no sshd (apt-get install openssh-server, or cargo xtask setup --bench)")?;
        for k in ["host_key", "client_key"] {
            let mut c = Command::new("ssh-keygen");
            c.args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(k));
            timed(&mut c, Duration::from_secs(30)).context("ssh-keygen")?;
        }
        fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let port = free_port()?;
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 Subsystem sftp internal-sftp\n",
                d = dir.display()
            ),
        )?;
        let privsep = CreatedDir::ensure(journal, Path::new("/run/sshd"))?;
        let log = File::create(dir.join("sshd.log"))?;
        let mut c = Command::new(sshd);
        c.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut proc = Proc::spawn(journal, &mut c, "sshd")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if proc.exited() || Instant::now() > deadline {
                bail!(
                    "sshd did not start: {}",
                    fs::read_to_string(dir.join("sshd.log"))
                        .unwrap_or_default()
                        .trim()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Sshd {
            port,
            key: dir.join("client_key"),
            _proc: proc,
            _privsep: privsep,
        })
    }

    /// The ssh options every client command uses.
    pub fn ssh_opts(&self) -> Vec<String> {
        vec![
            "-i".into(),
            self.key.display().to_string(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]
    }

    /// `user@127.0.0.1:path`.
    pub fn remote(&self, path: &Path) -> String {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                crate::util::probe(Command::new("id").arg("-un")).unwrap_or_else(|| "root".into())
            });
        format!("{user}@127.0.0.1:{}", path.display())
    }

    /// scp `src` to `dst` over this sshd, then fsync `dst` (fts's put is
    /// durable; scp alone is not). Returns the time of both.
    pub fn scp(&self, src: &Path, dst: &Path, timeout: Duration) -> Result<Duration> {
        let _ = fs::remove_file(dst);
        let mut c = Command::new("scp");
        c.arg("-q")
            .args(self.ssh_opts())
            .args(["-P", &self.port.to_string()])
            .arg(src)
            .arg(self.remote(dst));
        let start = Instant::now();
        timed(&mut c, timeout)?;
        sync_file(dst)?;
        Ok(start.elapsed())
    }

    /// rsync `src` to `dst` over ssh to this sshd, then fsync `dst`.
    pub fn rsync(&self, src: &Path, dst: &Path, timeout: Duration) -> Result<Duration> {
        let _ = fs::remove_file(dst);
        let mut e = format!("ssh -p {}", self.port);
        for o in self.ssh_opts() {
            e.push(' ');
            e.push_str(&o);
        }
        let mut c = Command::new("rsync");
        c.arg("-e").arg(e).arg(src).arg(self.remote(dst));
        let start = Instant::now();
        timed(&mut c, timeout)?;
        sync_file(dst)?;
        Ok(start.elapsed())
    }
}

fn sync_file(p: &Path) -> Result<()> {
    File::open(p)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsync {}", p.display()))
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).context("binding a TCP port")?;
    Ok(l.local_addr()?.port())
}

/// Copies `src` to `dst` through a TCP connection on loopback, in this
/// process (sendfile and splice where std uses them), and fsyncs `dst`.
pub fn tcp_copy(src: &Path, dst: &Path) -> Result<Duration> {
    let _ = fs::remove_file(dst);
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let addr = listener.local_addr()?;
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let rx = s.spawn(move || -> Result<()> {
            let (mut sock, _) = listener.accept()?;
            let mut out = File::create(dst)?;
            std::io::copy(&mut sock, &mut out)?;
            out.sync_all()?;
            Ok(())
        });
        let mut sock = TcpStream::connect(addr)?;
        let mut inp = File::open(src)?;
        std::io::copy(&mut inp, &mut sock)?;
        sock.shutdown(std::net::Shutdown::Write)?;
        match rx.join() {
            Ok(r) => r,
            Err(_) => bail!("the TCP receiver panicked"),
        }
    })?;
    let took = start.elapsed();
    let (a, b) = (fs::metadata(src)?.len(), fs::metadata(dst)?.len());
    if a != b {
        bail!("TCP copy wrote {b} bytes of {a}");
    }
    Ok(took)
}

// ---------------------------------------------------------------- machine

/// Where the run happened.
pub fn machine(work: &Path) -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let ram_kib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let probe = |c: &mut Command| crate::util::probe(c).unwrap_or_default();
    let date = probe(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]));
    let root = crate::util::root();
    let commit = probe(
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["rev-parse", "HEAD"]),
    );
    let dirty = !probe(Command::new("git").arg("-C").arg(&root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_empty();
    let disk = probe(
        Command::new("findmnt")
            .args(["-n", "-o", "SOURCE,FSTYPE", "--target"])
            .arg(work),
    );
    let os = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    serde_json::json!({
        "cpu": cpu,
        "cores": cores,
        "ram_bytes": ram_kib * 1024,
        "kernel": kernel,
        "os": os,
        "local_disk": disk,
        "date": date,
        "git_commit": commit,
        "git_dirty": dirty,
        "load_average_at_start": load_average(),
    })
}

/// The 1, 5 and 15 minute load averages, e.g. "2.10 1.50 1.20".
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lines of a child's stdout, through a thread, so reads can time out.
pub fn line_reader(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
