//! The connection commands: `serve`, `put`, `get`, `dir`, `shell`, `status`
//! and `demo`.

use std::io::{BufRead, IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
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
    /// This host's key (`--key-file`).
    pub key_file: Option<PathBuf>,
    /// The servers a client trusts (`--known-servers`).
    pub known_servers: Option<PathBuf>,
    /// Client: ask for sealed segments (`--encrypt`).
    pub encrypt: bool,
    /// Where to look for the layout's secondary devices (`--secondary`).
    pub secondaries: Vec<String>,
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
    /// The client's credentials, if it has a key.
    fn client_auth(&self) -> Result<Option<fts_session::ClientAuth>> {
        let Some(path) = &self.key_file else {
            if self.encrypt {
                return Err(fail(
                    Code::Usage,
                    "--encrypt needs --key-file: the segment keys come from the authenticated handshake (make a key with `fts keygen FILE`)",
                ));
            }
            if let Some(k) = &self.known_servers {
                return Err(fail(
                    Code::Usage,
                    format!(
                        "--known-servers {} needs --key-file: a client proves its own key too",
                        k.display()
                    ),
                ));
            }
            return Ok(None);
        };
        Ok(Some(fts_session::ClientAuth {
            key: fts_session::SecretKey::load(path)?,
            known_servers: self.known_servers.clone(),
            encrypt: self.encrypt,
        }))
    }

    fn shared(&self) -> Result<Shared> {
        let dev = open_device(&self.device, &self.opts)?;
        Shared::open(dev).with_context(|| format!("{} is not a usable fts device", self.device))
    }

    /// Finds the layout's secondary devices (by id) among `--secondary`
    /// and the paths recorded at format: only the commands that move data
    /// (`serve`, the clients) need them.
    fn attach_secondaries(&self, shared: &mut Shared) {
        let opts = self.opts.clone();
        let found =
            shared.attach_secondaries(&self.secondaries, &mut |p| open_device(p, &opts).ok());
        if std::env::var_os("FTS_VERBOSE").is_some() {
            for f in found {
                eprintln!("fts: {}: {f}", self.device);
            }
        }
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

/// The process's stop request: SIGINT, SIGTERM or SIGHUP raise `flag` and
/// record which signal came in `signal`. A second signal while the first
/// is still being handled ends the process at once (exit 130).
struct Stop {
    flag: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl Stop {
    fn raised(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The signal's name, e.g. "SIGINT".
    fn name(&self) -> &'static str {
        match i32::try_from(self.signal.load(Ordering::SeqCst)) {
            Ok(signal_hook::consts::SIGINT) => "SIGINT",
            Ok(signal_hook::consts::SIGTERM) => "SIGTERM",
            Ok(signal_hook::consts::SIGHUP) => "SIGHUP",
            _ => "a signal",
        }
    }

    /// Only Ctrl-C (an interactive shell goes back to its prompt for it).
    fn is_sigint(&self) -> bool {
        self.signal.load(Ordering::SeqCst) == signal_hook::consts::SIGINT as usize
    }

    /// Handled: the next signal is a first one again.
    fn clear(&self) {
        self.flag.store(false, Ordering::SeqCst);
        self.signal.store(0, Ordering::SeqCst);
    }

    /// The error (exit 130) for `what` interrupted by the signal.
    fn error(&self, what: &str) -> anyhow::Error {
        fail(
            Code::Interrupted,
            format!("{what}: interrupted by {}", self.name()),
        )
    }
}

/// The stop request of this process, with its signal handlers installed on
/// first use (by the connection commands).
fn stop() -> &'static Stop {
    static STOP: OnceLock<Stop> = OnceLock::new();
    STOP.get_or_init(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let stop = Stop {
            flag: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(AtomicUsize::new(0)),
        };
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            // The order matters: the shutdown check runs before this
            // signal raises the flag, so only a second signal exits.
            let r = signal_hook::flag::register_conditional_shutdown(sig, 130, stop.flag.clone())
                .and_then(|_| {
                    signal_hook::flag::register_usize(sig, stop.signal.clone(), sig as usize)
                })
                .and_then(|_| signal_hook::flag::register(sig, stop.flag.clone()));
            if let Err(e) = r {
                eprintln!("fts: warning: cannot install a handler for signal {sig}: {e}");
            }
        }
        stop
    })
}

/// `open server`, `f`, `close`, with this process's stop request; `what`
/// names the command in an interruption's message.
fn with_client<R>(
    ctx: &Ctx,
    server: &str,
    what: &str,
    f: impl FnOnce(&mut Client<'_>) -> Result<R, fts_session::Error>,
) -> Result<R> {
    let stop = stop();
    let me = Identity::unix(&ctx.name)?;
    let auth = ctx.client_auth()?;
    let mut opened = ctx.open(&me)?;
    ctx.attach_secondaries(&mut opened.shared);
    let mut lock = (opened.locks)()?;
    let shared = &mut opened.shared;
    let t = ClientTimeouts {
        connect: ctx.connect_timeout,
        lock: Ctx::lock_timeout(shared),
    };
    match fts_session::with_client(
        shared,
        lock.as_mut(),
        &me,
        server,
        t,
        auth.as_ref(),
        &stop.flag,
        f,
    ) {
        Ok(r) => Ok(r),
        // The temporary is gone (a --resume partial kept), the lease is
        // closed and the entry freed: exit 130.
        Err(fts_session::Error::Interrupted) => Err(stop.error(what)),
        Err(e) if stop.raised() => Err(stop.error(&format!("{what}: {e}"))),
        Err(e) => Err(e.into()),
    }
}

/// `fts keygen FILE`.
pub fn keygen(file: &Path, comment: Option<&str>, force: bool) -> Result<()> {
    let comment = match comment {
        Some(c) => c.to_string(),
        None => {
            let user = std::env::var("USER").unwrap_or_else(|_| "fts".into());
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            format!("{user}@{host}")
        }
    };
    let public = fts_session::keygen(file, &comment, force)?;
    println!(
        "wrote the secret key to {} (mode 0600) and its public half to {}:",
        file.display(),
        fts_session::pub_path(file).display()
    );
    println!("{public} {comment}");
    Ok(())
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

/// `--max-partial-age`: seconds, or a number with a unit `s`, `m`, `h`,
/// `d` (e.g. `90m`, `24h`), up to 100 years.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an age such as 3600, 90m, 24h or 7d"))?;
    let unit_secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} in {s:?}: use s, m, h or d")),
    };
    let secs = n
        .checked_mul(unit_secs)
        .filter(|&v| v <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("{s:?} is longer than 100 years"))?;
    Ok(Duration::from_secs(secs))
}

/// `fts serve`. SIGINT, SIGTERM or SIGHUP stop it gracefully: no new
/// connections; each open one ends at once (its client is told through its
/// lease), with its temporary removed and its entry freed; exit 130.
pub fn serve(
    ctx: &Ctx,
    root: &Path,
    max_partial_age: Duration,
    authorized_keys: Option<&Path>,
    encrypt: bool,
) -> Result<()> {
    let stop = stop();
    let auth = match &ctx.key_file {
        Some(path) => {
            let auth = fts_session::ServerAuth {
                key: fts_session::SecretKey::load(path)?,
                authorized_keys: authorized_keys.map(Path::to_path_buf),
                require_encrypt: encrypt,
            };
            // A list that cannot be read is an error now, not at the
            // first client.
            auth.check_list()?;
            Some(Arc::new(auth))
        }
        None if authorized_keys.is_some() || encrypt => {
            return Err(fail(
                Code::Usage,
                "--authorized-keys and --encrypt need --key-file: the server proves its own key to its clients (make one with `fts keygen FILE`)",
            ))
        }
        None => None,
    };
    let root = match std::fs::canonicalize(root) {
        Ok(r) if r.is_dir() => r,
        Ok(_) => {
            return Err(fail(
                Code::Usage,
                format!("--root {}: not a directory", root.display()),
            ))
        }
        Err(e) => return Err(fail(Code::Usage, format!("--root {}: {e}", root.display()))),
    };
    let me = Identity::unix(&ctx.name)?;
    let mut opened = ctx.open(&me)?;
    ctx.attach_secondaries(&mut opened.shared);
    let locks = Arc::clone(&opened.locks);
    let shared = &mut opened.shared;
    let opts = fts_session::ServeOptions {
        root,
        lock_timeout: Ctx::lock_timeout(shared),
        max_partial_age,
        auth: auth.clone(),
    };
    match &auth {
        Some(a) => eprintln!(
            "fts: server key {}; admitting {}{}",
            a.key.public(),
            match &a.authorized_keys {
                Some(p) => format!("the keys in {}", p.display()),
                None => "clients that hold this same key".into(),
            },
            if a.require_encrypt {
                "; every connection sealed"
            } else {
                ""
            }
        ),
        None => eprintln!(
            "fts: warning: serving without authentication: any host that can write {} can connect under any name (make a key with `fts keygen FILE` and pass --key-file)",
            ctx.device
        ),
    }
    let log = |m: String| eprintln!("fts: {m}");
    fts_session::serve(shared, locks, &me, &opts, &stop.flag, &log)?;
    if stop.raised() {
        return Err(stop.error(&format!("server {:?}", ctx.name)));
    }
    Ok(())
}

/// How a copy went, for the summary line: size, time, and for a resumed
/// transfer where it started and how much was sent.
fn summary(what: &str, t: &fts_session::Transferred, secs: f64) -> String {
    let mut line = format!("{what}: {} in {secs:.3}s", human(t.size));
    if t.offset > 0 {
        line.push_str(&format!(
            " (resumed at byte {}, {} bytes sent)",
            t.offset, t.sent
        ));
    }
    line
}

/// Runs one file copy on a fresh connection and reports size and time.
fn timed_copy(
    ctx: &Ctx,
    server: &str,
    text: bool,
    what: String,
    copy: impl FnOnce(&mut Client<'_>) -> Result<fts_session::Transferred, fts_session::Error>,
) -> Result<()> {
    let t = Instant::now();
    let done = with_client(ctx, server, &what, |c| {
        c.set_text(text);
        copy(c)
    })?;
    eprintln!("{}", summary(&what, &done, t.elapsed().as_secs_f64()));
    Ok(())
}

/// Refuses what cannot work before connecting: `--resume` with `--text`, a
/// LOCAL that is not a regular file or is the shared device.
fn precheck(ctx: &Ctx, local: &Path, writing: bool, text: bool, resume: bool) -> Result<()> {
    if resume && text {
        return Err(fail(
            Code::Usage,
            "--resume works in binary mode only (not with --text)",
        ));
    }
    fts_session::check_local(local, &ctx.device, writing)?;
    Ok(())
}

/// `fts put SERVER LOCAL REMOTE`.
pub fn put(
    ctx: &Ctx,
    server: &str,
    local: &Path,
    remote: &str,
    opts: fts_session::CopyOptions,
    text: bool,
) -> Result<()> {
    precheck(ctx, local, false, text, opts.resume)?;
    let what = format!("put {} -> {server}:{remote}", local.display());
    timed_copy(ctx, server, text, what, |c| c.put(local, remote, opts))
}

/// `fts get SERVER REMOTE LOCAL`.
pub fn get(
    ctx: &Ctx,
    server: &str,
    remote: &str,
    local: &Path,
    opts: fts_session::CopyOptions,
    text: bool,
) -> Result<()> {
    precheck(ctx, local, true, text, opts.resume)?;
    let what = format!("get {server}:{remote} -> {}", local.display());
    timed_copy(ctx, server, text, what, |c| c.get(remote, local, opts))
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
            printable(&e.name)
        );
    }
}

/// `fts dir SERVER [PATH]`.
pub fn dir(ctx: &Ctx, server: &str, path: Option<&str>) -> Result<()> {
    let what = format!("dir {server}:{}", path.unwrap_or(""));
    let entries = with_client(ctx, server, &what, |c| c.dir(path))?;
    print_listing(&entries);
    Ok(())
}

const HELP: &str = "commands: open SERVER | get REMOTE [LOCAL] | put LOCAL [REMOTE] | \
reget REMOTE [LOCAL] | reput LOCAL [REMOTE] | replace | dir [PATH] | cd DIR | \
lcd DIR | pwd | text | binary | close | quit | help";

/// Lines of standard input, read on a thread of their own so that the
/// shell notices a signal while it waits for input.
struct Lines {
    rx: mpsc::Receiver<std::io::Result<String>>,
}

/// Why [`Lines::next`] returned no line.
enum NoLine {
    /// End of input.
    Eof,
    /// A signal came while waiting.
    Stopped,
    /// Reading failed.
    Io(std::io::Error),
}

impl Lines {
    fn spawn() -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx }
    }

    fn next(&self, stop: &Stop) -> Result<String, NoLine> {
        loop {
            if stop.raised() {
                return Err(NoLine::Stopped);
            }
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(line)) => return Ok(line),
                Ok(Err(e)) => return Err(NoLine::Io(e)),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(NoLine::Eof),
            }
        }
    }
}

/// What a new connection of the shell restores after an interrupted one:
/// the remote directory and the transfer mode.
#[derive(Debug, Default, Clone)]
struct Carry {
    cwd: Option<String>,
    text: bool,
}

/// `fts shell [SERVER]`: Appendix A interactively, or a script on stdin
/// (stops at the first error with a non-zero exit).
///
/// Ctrl-C in an interactive shell abandons the command under way (its
/// temporary removed, a `reget`/`reput` partial kept), closes that
/// connection cleanly, opens a new one to the same server (same remote
/// directory and mode) and returns to the prompt; at an idle prompt it is
/// ignored. SIGTERM or SIGHUP, or Ctrl-C of a script, close the connection
/// and exit 130.
pub fn shell(ctx: &Ctx, server: Option<&str>) -> Result<()> {
    let stop = stop();
    let interactive = std::io::stdin().is_terminal();
    let lines = Lines::spawn();
    let mut pending_open = server.map(str::to_string);
    let mut carry = Carry::default();
    let mut lcd: PathBuf = std::env::current_dir()?;
    let prompt = |p: &str| {
        if interactive {
            print!("{p}> ");
            let _ = std::io::stdout().flush();
        }
    };
    // A signal at an idle prompt: Ctrl-C is ignored interactively,
    // anything else ends the shell.
    let idle_signal = || -> Result<()> {
        if interactive && stop.is_sigint() {
            stop.clear();
            println!();
            Ok(())
        } else {
            Err(stop.error("shell"))
        }
    };
    loop {
        let target = match pending_open.take() {
            Some(s) => s,
            None => {
                prompt("fts");
                let line = match lines.next(stop) {
                    Ok(l) => l,
                    Err(NoLine::Eof) => return Ok(()),
                    Err(NoLine::Stopped) => {
                        idle_signal()?;
                        continue;
                    }
                    Err(NoLine::Io(e)) => return Err(e.into()),
                };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    [] => continue,
                    ["open", s] => {
                        carry = Carry::default();
                        s.to_string()
                    }
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
        let mut signalled = false;
        let what = format!("shell connection to {target}");
        let r = with_client(ctx, &target, &what, |c| {
            println!("connected to {target}");
            c.set_text(carry.text);
            // `pwd` paths are relative to the server's root, written "/a/b".
            let back = carry.cwd.clone().unwrap_or_default();
            let back = back.trim_start_matches('/');
            if !back.is_empty() {
                carry.cwd = Some(c.cd(back)?);
            }
            loop {
                prompt(&target);
                let line = match lines.next(stop) {
                    Ok(l) => l,
                    Err(NoLine::Eof) => {
                        quit = true;
                        return Ok(());
                    }
                    Err(NoLine::Stopped) if interactive && stop.is_sigint() => {
                        stop.clear();
                        println!();
                        continue;
                    }
                    // Close cleanly, then exit 130.
                    Err(NoLine::Stopped) => {
                        signalled = true;
                        return Ok(());
                    }
                    Err(NoLine::Io(e)) => {
                        return Err(fts_session::Error::Protocol(format!("stdin: {e}")))
                    }
                };
                let words: Vec<&str> = line.split_whitespace().collect();
                let local = |p: &str| lcd.join(p);
                let base = |p: &str| {
                    Path::new(p)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| p.to_string())
                };
                let plain = fts_session::CopyOptions::default();
                let resume = fts_session::CopyOptions {
                    resume: true,
                    ..plain
                };
                let sent = |t: fts_session::Transferred| shell_summary("sent", &t);
                let received = |t: fts_session::Transferred| shell_summary("received", &t);
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
                        carry.text = true;
                        Ok(())
                    }
                    ["binary"] => {
                        c.set_text(false);
                        carry.text = false;
                        Ok(())
                    }
                    ["get", r] => c.get(r, &local(&base(r)), plain).map(received),
                    ["get", r, l] => c.get(r, &local(l), plain).map(received),
                    ["reget", r] => c.get(r, &local(&base(r)), resume).map(received),
                    ["reget", r, l] => c.get(r, &local(l), resume).map(received),
                    ["put", l] => c.put(&local(l), &base(l), plain).map(sent),
                    ["put", l, r] => c.put(&local(l), r, plain).map(sent),
                    ["reput", l] => c.put(&local(l), &base(l), resume).map(sent),
                    ["reput", l, r] => c.put(&local(l), r, resume).map(sent),
                    ["dir"] | ["ls"] => c.dir(None).map(|e| print_listing(&e)),
                    ["dir", p] | ["ls", p] => c.dir(Some(p)).map(|e| print_listing(&e)),
                    ["cd", d] => c.cd(d).map(|p| {
                        println!("{}", printable(&p));
                        carry.cwd = Some(p);
                    }),
                    ["pwd"] => c.pwd().map(|p| println!("{}", printable(&p))),
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
                            | fts_session::Error::LocalRefused { .. }
                            | fts_session::Error::Local { .. }
                            | fts_session::Error::Protocol(_)
                    );
                    if !recoverable {
                        return Err(e);
                    }
                    if interactive {
                        eprintln!("fts: {}", printable(&e.to_string()));
                    } else {
                        failure = Some(anyhow::Error::new(e));
                        quit = true;
                        return Ok(());
                    }
                }
            }
        });
        match r {
            Ok(()) => {}
            // Ctrl-C in an interactive shell: the connection was closed
            // cleanly; open a new one and go back to the prompt.
            Err(e)
                if interactive
                    && stop.is_sigint()
                    && crate::exit::code_of(&e) == Code::Interrupted =>
            {
                eprintln!("fts: {e}; reconnecting to {target}");
                stop.clear();
                pending_open = Some(target);
                continue;
            }
            Err(e) => return Err(e),
        }
        if signalled {
            return Err(stop.error("shell"));
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if quit {
            return Ok(());
        }
    }
}

/// The shell's line for a put or get: `sent N bytes`, and where a resumed
/// transfer started.
fn shell_summary(verb: &str, t: &fts_session::Transferred) {
    if t.offset > 0 {
        println!(
            "{verb} {} bytes (resumed at byte {} of {})",
            t.sent, t.offset, t.size
        );
    } else {
        println!("{verb} {} bytes", t.sent);
    }
}

/// `fts status`: the Process Id Table as an operator sees it: the
/// registered servers, then the connections.
pub fn status(ctx: &Ctx, json: bool) -> Result<()> {
    let mut shared = ctx.shared()?;
    let slots = shared.read_slots()?;
    let lease_timeout = Duration::from_millis(u64::from(shared.mcb().lease_timeout_ms));
    let now = crate::layout::now_ns();
    let secs = |ns: u64| (now.saturating_sub(ns) as f64 / 1e8).round() / 10.0;
    let mut rows = Vec::new();
    for slot in &slots {
        let e = match slot {
            fts_session::Slot::Entry(e) if e.is_free() => continue,
            // Registrations are listed with the servers, not as connections.
            fts_session::Slot::Entry(e) if e.is_server() => continue,
            fts_session::Slot::Entry(e) => e,
            fts_session::Slot::Damaged { slot, error, .. } => {
                rows.push(serde_json::json!({
                    "slot": slot, "state": "damaged", "problem": error.to_string(),
                    "requestor": "", "requestee": "", "generation": null, "age_s": null,
                    "leases": {}, "dead": true,
                }));
                continue;
            }
        };
        let state = if e.is_refused() {
            "refused"
        } else if e.is_processing() {
            "connected"
        } else {
            "requested"
        };
        // Lease ages compare the writer's wall clock with ours: a hint for
        // people; fts itself judges liveness by counters on its own clock.
        let mut leases = serde_json::Map::new();
        let mut alive = false;
        for role in fts_layout::Role::BOTH {
            let v = match fts_session::read_lease(&mut shared, e.pro_process_id, role) {
                Ok(l) if l.generation == e.pro_generation => {
                    let age = secs(l.timestamp);
                    let open = l.state == fts_layout::LEASE_ALIVE;
                    alive |= open && age <= lease_timeout.as_secs_f64();
                    serde_json::json!({
                        "state": if open { "alive" } else { "closed" },
                        "counter": l.counter, "age_s": age,
                    })
                }
                _ => serde_json::Value::Null,
            };
            leases.insert(role.to_string(), v);
        }
        rows.push(serde_json::json!({
            "slot": e.pro_process_id, "requestor": e.pro_requestor, "requestee": e.pro_requestee,
            "state": state, "generation": e.pro_generation, "age_s": secs(e.pro_alloc_time),
            "leases": leases, "dead": !alive,
        }));
    }
    let servers: Vec<serde_json::Value> = fts_session::registrations(&mut shared)?
        .iter()
        .map(|r| server_row(r, now, lease_timeout))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "servers": servers,
                "connections": rows,
                "max_connections": slots.len(),
                "lease_timeout_s": lease_timeout.as_secs_f64(),
            }))?
        );
        return Ok(());
    }
    print_servers(&servers);
    println!(
        "{:>5}  {:<32} {:<32} {:<10} {:>8} {:>10} {:>10}",
        "slot", "requestor", "requestee", "state", "age", "lease ini", "lease con"
    );
    let lease = |r: &serde_json::Value, role: &str| match &r["leases"][role] {
        serde_json::Value::Null => "-".to_string(),
        l if l["state"] == "closed" => "closed".to_string(),
        l => format!("{}s", l["age_s"]),
    };
    for r in &rows {
        let text = |k: &str| printable(r[k].as_str().unwrap_or(""));
        let mut line = format!(
            "{:>5}  {:<32} {:<32} {:<10} {:>7}s {:>10} {:>10}",
            r["slot"].to_string(),
            text("requestor"),
            text("requestee"),
            text("state"),
            r["age_s"].to_string(),
            lease(r, "initiator"),
            lease(r, "connector"),
        );
        if r["state"] == "damaged" {
            line = format!(
                "{:>5}  damaged: {}",
                r["slot"].to_string(),
                printable(r["problem"].as_str().unwrap_or(""))
            );
        } else if r["dead"] == true {
            line.push_str("  DEAD? (no live lease; reclaimed after a lease timeout)");
        }
        println!("{line}");
    }
    let registered = match servers.len() {
        0 => String::new(),
        1 => "; 1 more entry holds a server registration".to_string(),
        n => format!("; {n} more entries hold server registrations"),
    };
    println!(
        "{} of {} connections in use{registered} (lease timeout {:.1}s; lease ages use the writers' clocks)",
        rows.len(),
        slots.len(),
        lease_timeout.as_secs_f64()
    );
    Ok(())
}

/// One registered server for `status`: who, where, since when, and whether
/// its lease looks alive (by the writer's clock against ours: a hint; a
/// starting `serve` judges by the counter on its own clock).
fn server_row(r: &fts_session::Registered, now: u64, lease_timeout: Duration) -> serde_json::Value {
    let age = r
        .lease_age(now)
        .map(|a| (a.as_secs_f64() * 10.0).round() / 10.0);
    let state = match (r.closed(), age) {
        (true, _) => "closed",
        (false, Some(a)) if a <= lease_timeout.as_secs_f64() => "alive",
        _ => "dead?",
    };
    serde_json::json!({
        "slot": r.slot, "name": r.name, "host": r.host.to_string(), "pid": r.pid(),
        "generation": r.generation, "since": r.since_utc(), "since_ns": r.since_ns,
        "lease_age_s": age, "counter": r.lease.as_ref().map(|l| l.counter),
        "state": state, "alive": state == "alive",
    })
}

/// The registered servers, names escaped.
fn print_servers(servers: &[serde_json::Value]) {
    if servers.is_empty() {
        println!("no registered servers");
        return;
    }
    println!(
        "{:>5}  {:<32} {:<36} {:>8}  {:<23} {:>9}  state",
        "slot", "server", "host", "pid", "since", "lease age"
    );
    for r in servers {
        let age = match r["lease_age_s"].as_f64() {
            Some(a) => format!("{a:.1}s"),
            None => "-".to_string(),
        };
        let pid = r["pid"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |p| p.to_string());
        let mut line = format!(
            "{:>5}  {:<32} {:<36} {:>8}  {:<23} {:>9}  {}",
            r["slot"].to_string(),
            printable(r["name"].as_str().unwrap_or("")),
            r["host"].as_str().unwrap_or(""),
            pid,
            r["since"].as_str().unwrap_or(""),
            age,
            r["state"].as_str().unwrap_or(""),
        );
        if r["state"] == "dead?" {
            line.push_str(" (no live lease; its name is reclaimed after a lease timeout)");
        }
        println!("{line}");
    }
    println!();
}

/// `s` with control characters (terminal escapes among them) shown as
/// `\u{..}`, so a name from another host cannot reach the terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\u{{{:x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
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
    let spec = crate::format::run(&fa)?;
    println!("{}", crate::format::summary(&spec));
    let server_root = dir.path().join("server");
    let client_dir = dir.path().join("client");
    std::fs::create_dir_all(&server_root)?;
    std::fs::create_dir_all(&client_dir)?;
    // One key for both sides (the simplest authenticated setup); the
    // connection is sealed.
    let key = dir.path().join("demo.key");
    fts_session::keygen(&key, "fts demo", false)?;
    println!("made a key for both sides: {}", key.display());
    let exe = std::env::current_exe()?;
    let _server = Child(
        std::process::Command::new(exe)
            .args(["-d", &dev_s, "-n", "demo-server", "--key-file"])
            .arg(&key)
            .args(["serve", "--encrypt", "--root"])
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
        key_file: Some(key.clone()),
        known_servers: None,
        encrypt: true,
        secondaries: Vec::new(),
    };
    let back = client_dir.join("payload.back");
    let (tput, tget) = with_client(&ctx, "demo-server", "demo", |c| {
        let plain = fts_session::CopyOptions::default();
        let t = Instant::now();
        c.put(&src, "payload.bin", plain)?;
        let tput = t.elapsed();
        let t = Instant::now();
        c.get("payload.bin", &back, plain)?;
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
