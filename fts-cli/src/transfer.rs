//! The connection commands: `serve`, `put`, `get`, `dir`, `shell`, `status`
//! and `demo`.

use std::io::{BufRead, IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fts_lock::LockKind;
use fts_session::{Client, ClientTimeouts, Identity, LockFactory, Shared};

use crate::exit::{fail, Code};
use crate::layout::{open_device, open_device_and_nexus};
use crate::size::human;

/// What every connection command needs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Device location.
    pub device: String,
    /// Our fts name.
    pub name: String,
    /// Device open options.
    pub opts: fts_blockdev::OpenOptions,
    /// How long to wait for a server to accept.
    pub connect_timeout: Duration,
    /// The Process Id Table lock backend.
    pub lock: LockKind,
    /// Turn the array's cache destaging off while the command runs.
    pub destage_off: bool,
}

/// An opened fts device with what the commands need around it.
struct Opened {
    shared: Shared,
    locks: LockFactory,
    /// Restores the Caching mode page when dropped (if `--destage-off`).
    cache: Option<crate::scsi::CacheSlot>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(slot) = &self.cache {
            crate::scsi::restore(slot);
        }
    }
}

impl Ctx {
    fn shared(&self) -> Result<Shared> {
        let dev = open_device(&self.device, &self.opts)?;
        Shared::open(dev).with_context(|| format!("{} is not a usable fts device", self.device))
    }

    /// Opens the device, chooses the lock backend and applies the cache
    /// setting.
    fn open(&self, me: &Identity) -> Result<Opened> {
        let (dev, transport) = open_device_and_nexus(&self.device, &self.opts)?;
        if let (Some(t), fts_lock::LockKind::Scsi2) = (&transport, self.lock) {
            // Until the MCB is read its lock timeout is unknown: a dead
            // holder's RESERVE(6) blocking the read is broken after three
            // default lock timeouts (the lock backend then sets the MCB's).
            let default = Duration::from_millis(u64::from(fts_layout::DEFAULT_LOCK_TIMEOUT_MS));
            t.set_reserve_break(Some(default * 3));
        }
        let shared = Shared::open(dev)
            .with_context(|| format!("{} is not a usable fts device", self.device))?;
        let (locks, what) =
            crate::scsi::lock_factory(self.lock, &self.device, &shared, transport.clone(), me)?;
        if std::env::var_os("FTS_VERBOSE").is_some() || transport.is_some() {
            eprintln!("fts: {}: Process Id Table lock: {what}", self.device);
        }
        let cache = match (self.destage_off, transport) {
            (true, Some(t)) => Some(crate::scsi::destage_off(t, &self.device)?),
            (true, None) => {
                eprintln!(
                    "fts: {}: --destage-off ignored: not a SCSI device (no Caching mode page)",
                    self.device
                );
                None
            }
            (false, _) => None,
        };
        Ok(Opened {
            shared,
            locks,
            cache,
        })
    }

    /// How long to wait for the Process Id Table lock: longer than the
    /// MCB's lock timeout, which is how long a holder may make no progress
    /// before a waiter breaks it; otherwise a waiter would give up at the
    /// very moment it may break a dead holder.
    fn lock_timeout(shared: &Shared) -> Duration {
        let dead_after = Duration::from_millis(u64::from(shared.mcb().lock_timeout_ms));
        (dead_after * 3).max(Duration::from_secs(10))
    }
}

fn with_client<R>(
    ctx: &Ctx,
    server: &str,
    f: impl FnOnce(&mut Client<'_>) -> Result<R, fts_session::Error>,
) -> Result<R> {
    let me = Identity::unix(&ctx.name)?;
    let mut opened = ctx.open(&me)?;
    let mut lock = (opened.locks)()?;
    let shared = &mut opened.shared;
    let t = ClientTimeouts {
        connect: ctx.connect_timeout,
        lock: Ctx::lock_timeout(shared),
    };
    Ok(fts_session::with_client(
        shared,
        lock.as_mut(),
        &me,
        server,
        t,
        f,
    )?)
}

/// `fts hold-lock SECONDS`.
pub fn hold_lock(ctx: &Ctx, seconds: f64) -> Result<()> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(fail(
            Code::Usage,
            "hold-lock: SECONDS must be a non-negative number",
        ));
    }
    // Anything beyond a year is "until killed" (and keeps Duration sane).
    let hold = Duration::from_secs_f64(seconds.min(365.0 * 86_400.0));
    let me = Identity::unix(&ctx.name)?;
    let opened = ctx.open(&me)?;
    let mut lock = (opened.locks)()?;
    let guard = lock.lock(Ctx::lock_timeout(&opened.shared))?;
    println!("holding the Process Id Table lock of {}", ctx.device);
    std::io::stdout().flush()?;
    // A live holder shows progress (as a holder doing a long table update
    // would), so waiters break it only once it really stops: when the
    // host dies or hangs.
    let beat = Duration::from_millis(u64::from(opened.shared.mcb().lock_timeout_ms) / 4)
        .max(Duration::from_millis(10));
    let until = Instant::now() + hold;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(beat));
        guard.still_held()?;
    }
    guard.release()?;
    println!("released");
    Ok(())
}

/// `fts serve`.
pub fn serve(ctx: &Ctx, root: &Path) -> Result<()> {
    let me = Identity::unix(&ctx.name)?;
    let mut opened = ctx.open(&me)?;
    let locks = Arc::clone(&opened.locks);
    let shared = &mut opened.shared;
    let lt = Ctx::lock_timeout(shared);
    let stop = AtomicBool::new(false);
    eprintln!(
        "fts: serving as {:?} on {} from {}",
        ctx.name,
        ctx.device,
        root.display()
    );
    let log = |m: String| eprintln!("fts: {m}");
    fts_session::serve(shared, locks, &me, root, lt, &stop, &log)?;
    Ok(())
}

/// Runs one file copy on a fresh connection and reports size and time.
fn timed_copy(
    ctx: &Ctx,
    server: &str,
    text: bool,
    what: String,
    copy: impl FnOnce(&mut Client<'_>) -> Result<u64, fts_session::Error>,
) -> Result<()> {
    let t = Instant::now();
    let n = with_client(ctx, server, |c| {
        c.set_text(text);
        copy(c)
    })?;
    eprintln!("{what}: {} in {:.3}s", human(n), t.elapsed().as_secs_f64());
    Ok(())
}

/// `fts put SERVER LOCAL REMOTE`.
pub fn put(
    ctx: &Ctx,
    server: &str,
    local: &Path,
    remote: &str,
    replace: bool,
    text: bool,
) -> Result<()> {
    let what = format!("put {} -> {server}:{remote}", local.display());
    timed_copy(ctx, server, text, what, |c| c.put(local, remote, replace))
}

/// `fts get SERVER REMOTE LOCAL`.
pub fn get(
    ctx: &Ctx,
    server: &str,
    remote: &str,
    local: &Path,
    replace: bool,
    text: bool,
) -> Result<()> {
    let what = format!("get {server}:{remote} -> {}", local.display());
    timed_copy(ctx, server, text, what, |c| c.get(remote, local, replace))
}

fn print_listing(entries: &[fts_session::DirEntry]) {
    for e in entries {
        let kind = match e.kind {
            fts_session::EntryKind::File => "-",
            fts_session::EntryKind::Dir => "d",
            fts_session::EntryKind::Symlink => "l",
            fts_session::EntryKind::Other => "?",
        };
        println!(
            "{kind} {:>14} {:>20} {}",
            e.size,
            e.mtime_ns / 1_000_000_000,
            e.name
        );
    }
}

/// `fts dir SERVER [PATH]`.
pub fn dir(ctx: &Ctx, server: &str, path: Option<&str>) -> Result<()> {
    let entries = with_client(ctx, server, |c| c.dir(path))?;
    print_listing(&entries);
    Ok(())
}

const HELP: &str = "commands: open SERVER | get REMOTE [LOCAL] | put LOCAL [REMOTE] | replace | dir [PATH] | cd DIR | \
lcd DIR | pwd | text | binary | close | quit | help";

/// `fts shell [SERVER]`: Appendix A interactively, or a script on stdin
/// (stops at the first error with a non-zero exit).
pub fn shell(ctx: &Ctx, server: Option<&str>) -> Result<()> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut lines = stdin.lock().lines();
    let mut pending_open = server.map(str::to_string);
    let mut lcd: PathBuf = std::env::current_dir()?;
    let prompt = |p: &str| {
        if interactive {
            print!("{p}> ");
            let _ = std::io::stdout().flush();
        }
    };
    loop {
        let target = match pending_open.take() {
            Some(s) => s,
            None => {
                prompt("fts");
                let Some(line) = lines.next() else {
                    return Ok(());
                };
                let line = line?;
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    [] => continue,
                    ["open", s] => s.to_string(),
                    ["quit"] | ["bye"] | ["exit"] => return Ok(()),
                    ["help"] => {
                        println!("{HELP}");
                        continue;
                    }
                    ["lcd", d] => {
                        lcd = lcd.join(d);
                        continue;
                    }
                    _ => {
                        let e = fail(
                            Code::Usage,
                            format!("not connected: {line:?} (use open SERVER first)"),
                        );
                        if interactive {
                            eprintln!("fts: {e}");
                            continue;
                        }
                        return Err(e);
                    }
                }
            }
        };
        let mut quit = false;
        let mut failure: Option<anyhow::Error> = None;
        let r = with_client(ctx, &target, |c| {
            println!("connected to {target}");
            loop {
                prompt(&target);
                let Some(line) = lines.next() else {
                    quit = true;
                    return Ok(());
                };
                let line = line.map_err(|e| fts_session::Error::Protocol(format!("stdin: {e}")))?;
                let words: Vec<&str> = line.split_whitespace().collect();
                let local = |p: &str| lcd.join(p);
                let base = |p: &str| {
                    Path::new(p)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| p.to_string())
                };
                let res: Result<(), fts_session::Error> = match words.as_slice() {
                    [] => Ok(()),
                    ["close"] => return Ok(()),
                    ["quit"] | ["bye"] | ["exit"] => {
                        quit = true;
                        return Ok(());
                    }
                    ["help"] => {
                        println!("{HELP}");
                        Ok(())
                    }
                    ["replace"] => {
                        c.set_replace();
                        Ok(())
                    }
                    ["text"] | ["ascii"] => {
                        c.set_text(true);
                        Ok(())
                    }
                    ["binary"] => {
                        c.set_text(false);
                        Ok(())
                    }
                    ["get", r] => c
                        .get(r, &local(&base(r)), false)
                        .map(|n| println!("received {n} bytes")),
                    ["get", r, l] => c
                        .get(r, &local(l), false)
                        .map(|n| println!("received {n} bytes")),
                    ["put", l] => c
                        .put(&local(l), &base(l), false)
                        .map(|n| println!("sent {n} bytes")),
                    ["put", l, r] => c
                        .put(&local(l), r, false)
                        .map(|n| println!("sent {n} bytes")),
                    ["dir"] | ["ls"] => c.dir(None).map(|e| print_listing(&e)),
                    ["dir", p] | ["ls", p] => c.dir(Some(p)).map(|e| print_listing(&e)),
                    ["cd", d] => c.cd(d).map(|p| println!("{p}")),
                    ["pwd"] => c.pwd().map(|p| println!("{p}")),
                    ["lcd", d] => {
                        lcd = lcd.join(d);
                        Ok(())
                    }
                    _ => Err(fts_session::Error::Protocol(format!(
                        "unknown command {line:?}; {HELP}"
                    ))),
                };
                if let Err(e) = res {
                    // Far-side and local refusals leave the connection usable:
                    // an interactive user carries on, a script stops here.
                    let recoverable = matches!(
                        e,
                        fts_session::Error::Remote { .. }
                            | fts_session::Error::LocalExists { .. }
                            | fts_session::Error::Local { .. }
                            | fts_session::Error::Protocol(_)
                    );
                    if !recoverable {
                        return Err(e);
                    }
                    if interactive {
                        eprintln!("fts: {e}");
                    } else {
                        failure = Some(anyhow::Error::new(e));
                        quit = true;
                        return Ok(());
                    }
                }
            }
        });
        r?;
        if let Some(e) = failure {
            return Err(e);
        }
        if quit {
            return Ok(());
        }
    }
}

/// `fts status`: the Process Id Table as an operator sees it.
pub fn status(ctx: &Ctx, json: bool) -> Result<()> {
    let mut shared = ctx.shared()?;
    let table = shared.read_table()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rows = Vec::new();
    for e in table.iter().filter(|e| !e.is_free()) {
        let state = if e.is_refused() {
            "refused"
        } else if e.is_processing() {
            "connected"
        } else {
            "requested"
        };
        let age = now.saturating_sub(e.pro_alloc_time) as f64 / 1e9;
        rows.push(serde_json::json!({
            "slot": e.pro_process_id, "requestor": e.pro_requestor, "requestee": e.pro_requestee,
            "state": state, "generation": e.pro_generation, "age_s": (age * 10.0).round() / 10.0,
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "connections": rows, "max_connections": table.len() })
            )?
        );
    } else {
        println!(
            "{:>5}  {:<32} {:<32} {:<10} {:>8}",
            "slot", "requestor", "requestee", "state", "age"
        );
        for r in &rows {
            println!(
                "{:>5}  {:<32} {:<32} {:<10} {:>7}s",
                r["slot"],
                r["requestor"].as_str().unwrap_or(""),
                r["requestee"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
                r["age_s"]
            );
        }
        println!("{} of {} connections in use", rows.len(), table.len());
    }
    Ok(())
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `fts demo`: a temporary file-backed device, a server process and a
/// client moving a generated file both ways.
pub fn demo(size: u64) -> Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dev = dir.path().join("shared.img");
    let dev_s = dev.display().to_string();
    let mut fa = crate::format::FormatArgs::new(dev_s.clone());
    fa.size = Some(256 << 20);
    fa.max_connections = 4;
    fa.ring_entries = 96;
    fa.segment_bytes = 256 << 10;
    fa.batch = 16;
    let spec = crate::format::run(&fa)?;
    println!("{}", crate::format::summary(&spec));
    let server_root = dir.path().join("server");
    let client_dir = dir.path().join("client");
    std::fs::create_dir_all(&server_root)?;
    std::fs::create_dir_all(&client_dir)?;
    let exe = std::env::current_exe()?;
    let _server = Child(
        std::process::Command::new(exe)
            .args(["-d", &dev_s, "-n", "demo-server", "serve", "--root"])
            .arg(&server_root)
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start the demo server process")?,
    );
    println!(
        "started server process \"demo-server\" with root {}",
        server_root.display()
    );
    let src = client_dir.join("payload.bin");
    let mut data = vec![0u8; size as usize];
    rand::Rng::fill(&mut rand::rng(), &mut data[..]);
    std::fs::write(&src, &data)?;
    let ctx = Ctx {
        device: dev_s,
        name: "demo-client".into(),
        opts: fts_blockdev::OpenOptions::default(),
        connect_timeout: Duration::from_secs(10),
        lock: LockKind::Auto,
        destage_off: false,
    };
    let back = client_dir.join("payload.back");
    let (tput, tget) = with_client(&ctx, "demo-server", |c| {
        let t = Instant::now();
        c.put(&src, "payload.bin", false)?;
        let tput = t.elapsed();
        let t = Instant::now();
        c.get("payload.bin", &back, false)?;
        Ok((tput, t.elapsed()))
    })?;
    let stored = std::fs::read(server_root.join("payload.bin"))?;
    let returned = std::fs::read(&back)?;
    if stored != data || returned != data {
        return Err(fail(Code::Failure, "demo: the file changed in transit"));
    }
    let mib = size as f64 / (1 << 20) as f64;
    println!(
        "put {} to demo-server: {:.3}s ({:.1} MiB/s)",
        human(size),
        tput.as_secs_f64(),
        mib / tput.as_secs_f64()
    );
    println!(
        "get {} back:           {:.3}s ({:.1} MiB/s)",
        human(size),
        tget.as_secs_f64(),
        mib / tget.as_secs_f64()
    );
    println!("both copies are byte-identical to the original");
    Ok(())
}
