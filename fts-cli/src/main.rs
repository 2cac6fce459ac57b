//! `fts`: move files between hosts through a shared disk.
//!
//! The binary composes the fts crates: `fts-layout` (on-disk format),
//! `fts-blockdev` (device I/O), `fts-lock`, `fts-ring`, `fts-session` and
//! `fts-scsi`. It holds no protocol logic of its own: argument parsing,
//! printing, and the mapping of errors to messages and exit codes.

mod check;
mod exit;
mod format;
mod inspect;
mod layout;
mod out;
mod scsi;
mod size;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use fts_blockdev::OpenOptions;

use crate::exit::{code_of, fail, Code};
use crate::out::{out, outln};

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 other failure, 2 usage, 3 device I/O or open error, \
4 not formatted or unreadable layout, 5 check found problems, 6 refused to overwrite (use --force/--replace), \
7 geometry does not fit, 8 the server refused (no such file, outside the root, ...), 9 no server accepted in time, \
10 the peer died or closed, 11 end-to-end integrity check failed, 12 Process Id Table full, 13 the Process Id Table lock was lost or not obtained in time, \
14 authentication failed (the server refused this client's key, or the server did not prove its key), \
15 serve: another live server already holds the name, \
130 interrupted by SIGINT, SIGTERM or SIGHUP (after cleaning up), \
141 standard output was closed by its reader (e.g. piped into head; nothing else went wrong)";

#[derive(Debug, Parser)]
#[command(name = "fts", version, about = "File transfer between hosts through a shared disk (EMC WO 98/14871)", after_help = EXIT_CODES)]
struct Cli {
    /// The shared (master) device: a regular file or a block device.
    #[arg(short = 'd', long, env = "FTS_DEVICE", global = true)]
    device: Option<String>,
    /// This process's fts name (the patent's requestor/requestee name; 1-32 bytes).
    /// Default: the short host name.
    #[arg(short = 'n', long, env = "FTS_NAME", global = true, value_parser = parse_name)]
    name: Option<String>,
    /// Logical block size to use for a regular file (e.g. 4096 to emulate a 4Kn disk).
    #[arg(long, global = true, value_parser = parse_block_size)]
    block_size: Option<u32>,
    /// iSCSI initiator name (IQN) for iscsi:// devices. Default: derived from
    /// the host name and --name, so each fts name is its own initiator.
    #[arg(long, env = "FTS_INITIATOR", global = true)]
    initiator: Option<String>,
    /// Process Id Table lock: file (OFD lock; one host), scsi2 (RESERVE/RELEASE),
    /// pr (persistent reservation), caw (COMPARE AND WRITE), auto (the best the device has).
    #[arg(long, env = "FTS_LOCK", global = true, default_value = "auto")]
    lock: fts_lock::LockKind,
    /// Per-command SCSI timeout in seconds (SCSI devices), more than 0 and
    /// at most 3600.
    #[arg(long, global = true, default_value = "10", value_parser = parse_scsi_timeout)]
    scsi_timeout: Duration,
    /// Turn the array's cache destaging off while the command runs (the Caching
    /// mode page: WCE on, write retention high, as far as the device allows),
    /// and restore the page afterwards, also on Ctrl-C.
    #[arg(long, global = true)]
    destage_off: bool,
    /// This host's secret key (from `fts keygen`): a server admits only
    /// clients that prove a trusted key, a client talks only to a server
    /// that proves its key. The one-file setup: give the same key file to
    /// a server and its clients.
    #[arg(long, env = "FTS_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// Client: the servers it trusts, one `NAME fts-ed25519 KEY` line each
    /// (NAME may be `*`; the key is a server's .pub line). Default: a
    /// server that proves the client's own key.
    #[arg(long, env = "FTS_KNOWN_SERVERS", global = true)]
    known_servers: Option<PathBuf>,
    /// A secondary device (repeatable; FTS_SECONDARY takes a
    /// comma-separated list). `format` adds it to the layout for data
    /// segments; every other command looks for the layout's secondary
    /// devices here and at the paths recorded at format, and recognises
    /// each by its id (layout and device uuid), never by its path.
    #[arg(
        long = "secondary",
        env = "FTS_SECONDARY",
        value_delimiter = ',',
        global = true
    )]
    secondaries: Vec<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Lay out the fts control structures on the device (from LB 5; LB 4 zeroed).
    Format {
        /// Create (or extend) the file to this size first, e.g. 64M, 1GiB.
        #[arg(long, value_parser = size::parse_size)]
        size: Option<u64>,
        /// Data segment size (multiple of 4 KiB). Without --segment-size,
        /// --ring-entries or --batch, format chooses them from the device
        /// sizes and --max-connections (64K, 640 and 8 where they fit) and
        /// says what it chose.
        #[arg(long, value_parser = size::parse_size)]
        segment_size: Option<u64>,
        /// Maximum concurrent connections (Process Id Table entries).
        #[arg(long, default_value_t = fts_layout::DEFAULT_MAX_CONNECTIONS)]
        max_connections: u32,
        /// Entries per Process Segment Pointer Table (ring size); default:
        /// chosen from the device sizes.
        #[arg(long)]
        ring_entries: Option<u32>,
        /// Segments written or read per pointer-table update (one I/O);
        /// default: chosen from the device sizes.
        #[arg(long)]
        batch: Option<u32>,
        /// Lease timeout after which a silent peer is declared dead, e.g. 10000 (ms, 100 to 3600000).
        #[arg(long, default_value_t = fts_layout::DEFAULT_LEASE_TIMEOUT_MS, value_parser = parse_timeout_ms)]
        lease_timeout_ms: u32,
        /// Lock timeout after which a Process Id Table lock holder that makes no progress is broken (ms, 100 to 3600000).
        #[arg(long, default_value_t = fts_layout::DEFAULT_LOCK_TIMEOUT_MS, value_parser = parse_timeout_ms)]
        lock_timeout_ms: u32,
        /// Overwrite an existing fts layout or other data at LB 4-7.
        #[arg(long)]
        force: bool,
    },
    /// Decode and print every on-disk structure.
    Inspect {
        /// Print JSON (stable; see docs/CLI.md).
        #[arg(long)]
        json: bool,
        /// Include every pointer-table entry.
        #[arg(long)]
        entries: bool,
    },
    /// Validate the layout like fsck; list every problem; exit 5 if any.
    /// Also reports connections whose leases show no life.
    Check {
        /// Mend what can be rebuilt: the MCB and Secondary Device Table from
        /// their backup, damaged lock/lease/command-area/pointer-table
        /// records of free entries as format writes them; free damaged or
        /// forged entries and dead connections (under the table lock). One
        /// line per repair; exit 0 if the layout is then consistent.
        #[arg(long)]
        repair: bool,
    },
    /// Be the connector NAME: serve any number of connections, confined to --root.
    Serve {
        /// Every remote path is confined to this directory.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// At start, remove fts temporaries and --resume partial copies under
        /// the root last written longer ago than this (e.g. 3600, 90m, 24h, 7d).
        #[arg(long, value_parser = transfer::parse_age, default_value = "24h")]
        max_partial_age: Duration,
        /// The clients' keys it trusts, one `fts-ed25519 KEY [comment]`
        /// line each (their .pub files); re-read for every connection, so
        /// deleting a line revokes that client at once. Default: clients
        /// that prove the server's own key (--key-file).
        #[arg(long, env = "FTS_AUTHORIZED_KEYS")]
        authorized_keys: Option<PathBuf>,
        /// Seal every connection (AES-256-GCM under per-connection keys),
        /// whether its client asks (--encrypt) or not. Needs --key-file.
        #[arg(long)]
        encrypt: bool,
    },
    /// Write a new key to FILE (mode 0600) and its public half to FILE.pub.
    Keygen {
        /// Where to write the secret key.
        file: PathBuf,
        /// A comment for the .pub line (default: user@host).
        #[arg(long)]
        comment: Option<String>,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Interactive client (Appendix A commands); reads a script from stdin when not a terminal.
    Shell {
        /// Open a connection to this server first.
        server: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Copy a local file to SERVER.
    Put {
        /// The server's fts name.
        server: String,
        /// Local file.
        local: PathBuf,
        /// Remote path, relative to the server's root.
        remote: String,
        /// Overwrite an existing remote file.
        #[arg(long)]
        replace: bool,
        /// Continue an interrupted put: send only what the server's partial copy lacks.
        #[arg(long)]
        resume: bool,
        /// Text mode: convert line endings.
        #[arg(long)]
        text: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Copy a remote file from SERVER.
    Get {
        /// The server's fts name.
        server: String,
        /// Remote path, relative to the server's root.
        remote: String,
        /// Local file.
        local: PathBuf,
        /// Overwrite an existing local file.
        #[arg(long)]
        replace: bool,
        /// Continue an interrupted get: fetch only what the local partial copy lacks.
        #[arg(long)]
        resume: bool,
        /// Text mode: convert line endings.
        #[arg(long)]
        text: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// List a remote directory.
    Dir {
        /// The server's fts name.
        server: String,
        /// Remote directory (default: the server's root).
        path: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show the Process Id Table: slot, requestor, requestee, state, age.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take the Process Id Table lock and hold it for SECONDS, printing
    /// "holding" once held and showing progress in the lock record every
    /// quarter lock timeout, as a live holder does: for failover drills
    /// (the test rig crashes a host here).
    HoldLock {
        /// How long to hold it.
        seconds: f64,
    },
    /// SCSI operator commands on the device (iscsi://, /dev/sgN, /dev/sdX).
    Scsi {
        #[command(subcommand)]
        op: scsi::ScsiCmd,
    },
    /// Format a temporary device, run a server process and a client, move a file both ways.
    Demo {
        /// Size of the generated file.
        #[arg(long, value_parser = size::parse_size, default_value = "64M")]
        size: u64,
    },
}

#[derive(Debug, clap::Args)]
struct ConnArgs {
    /// How long to wait for the server to accept, in seconds (0 to 86400).
    #[arg(long, default_value = "10", value_parser = parse_connect_timeout)]
    timeout: Duration,
    /// Seal every segment and control message (AES-256-GCM under keys
    /// agreed in the authenticated handshake): no plaintext reaches the
    /// device. Needs --key-file.
    #[arg(long)]
    encrypt: bool,
}

/// Seconds as a [`Duration`], refused (clap's usage error, exit 2) unless
/// a number in `min..=max` (`min` itself excluded when `open_min`): no
/// NaN, no infinity, nothing `Duration` cannot hold.
fn parse_seconds(s: &str, min: f64, open_min: bool, max: f64) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    let low_ok = if open_min { v > min } else { v >= min };
    if !(v.is_finite() && low_ok && v <= max) {
        let from = if open_min { "more than" } else { "from" };
        return Err(format!(
            "{s} seconds is out of range: give {from} {min} to {max} seconds"
        ));
    }
    Duration::try_from_secs_f64(v).map_err(|e| format!("{s} seconds: {e}"))
}

fn parse_connect_timeout(s: &str) -> Result<Duration, String> {
    parse_seconds(s, 0.0, false, 86_400.0)
}

fn parse_scsi_timeout(s: &str) -> Result<Duration, String> {
    parse_seconds(s, 0.0, true, 3_600.0)
}

fn parse_timeout_ms(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of milliseconds"))?;
    if !(100..=3_600_000).contains(&v) {
        return Err(format!(
            "{v} ms is out of range: give 100 to 3600000 ms (0.1 s to 1 h)"
        ));
    }
    Ok(v)
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    let v = size::parse_size(s)?;
    match v {
        512 | 1024 | 2048 | 4096 => Ok(v as u32),
        _ => Err(format!(
            "block size {v} is not one of 512, 1024, 2048, 4096"
        )),
    }
}

fn parse_name(s: &str) -> Result<String, String> {
    fts_layout::validate_name(s)
        .map(|()| s.to_string())
        .map_err(|e| format!("invalid fts name {s:?}: {e}"))
}

fn ctx(cli: &Cli, conn: Option<&ConnArgs>) -> Result<transfer::Ctx> {
    Ok(transfer::Ctx {
        device: device(cli)?,
        name: name(cli)?,
        opts: open_opts(cli),
        connect_timeout: conn.map_or(Duration::from_secs(10), |c| c.timeout),
        lock: cli.lock,
        destage_off: cli.destage_off,
        key_file: cli.key_file.clone(),
        known_servers: cli.known_servers.clone(),
        encrypt: conn.is_some_and(|c| c.encrypt),
        secondaries: cli.secondaries.clone(),
    })
}

/// The fts name: `--name`, else the short host name (first label), cut to fit.
fn name(cli: &Cli) -> Result<String> {
    if let Some(n) = &cli.name {
        return Ok(n.clone());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(|e| {
        fail(
            Code::Usage,
            format!("no --name given and the host name is unreadable: {e}"),
        )
    })?;
    let short: String = host
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .take(fts_layout::NAME_MAX)
        .collect();
    parse_name(&short).map_err(|e| fail(Code::Usage, format!("{e}; pass --name")))
}

fn device(cli: &Cli) -> Result<String> {
    cli.device.clone().ok_or_else(|| {
        fail(
            Code::Usage,
            "no device given: use -d DEVICE or set FTS_DEVICE",
        )
    })
}

fn open_opts(cli: &Cli) -> OpenOptions {
    OpenOptions {
        block_size: cli.block_size,
        ..OpenOptions::default()
    }
}

/// Sets up SCSI access (initiator name, timeout) before any device is opened.
fn configure_scsi(cli: &Cli) -> Result<()> {
    let initiator = match &cli.initiator {
        Some(i) => {
            fts_scsi::initiator::validate_iqn(i)
                .map_err(|e| fail(Code::Usage, format!("--initiator {i:?}: {e}")))?;
            i.clone()
        }
        None => scsi::default_initiator(&name(cli).unwrap_or_else(|_| "fts".into())),
    };
    scsi::configure(scsi::ScsiConfig {
        initiator,
        timeout: cli.scsi_timeout,
    });
    Ok(())
}

/// For SCSI devices, on SIGINT/SIGTERM/SIGHUP: restore any Caching mode
/// page we changed, give up reservations and registrations this process may
/// hold, then exit 130 (the shell's code for an interrupted command).
fn install_signal_handler() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    eprintln!("fts: interrupted (signal {sig})");
                    scsi::restore_all();
                    scsi::release_all();
                    std::process::exit(130);
                }
            });
        }
        Err(e) => eprintln!("fts: warning: cannot install signal handlers: {e}"),
    }
}

fn run(cli: Cli) -> Result<()> {
    configure_scsi(&cli)?;
    // The transfer commands stop gracefully on a signal (their own
    // handler: connections closed, temporaries removed, entries freed, the
    // Caching page restored as the command unwinds); the others on a SCSI
    // device restore the page and release reservations here, then exit.
    let graceful = matches!(
        cli.cmd,
        Cmd::Serve { .. }
            | Cmd::Put { .. }
            | Cmd::Get { .. }
            | Cmd::Dir { .. }
            | Cmd::Shell { .. }
            | Cmd::Demo { .. }
    );
    if !graceful
        && cli
            .device
            .as_deref()
            .is_some_and(fts_scsi::is_scsi_location)
    {
        install_signal_handler();
    }
    match &cli.cmd {
        Cmd::Format {
            size,
            segment_size,
            max_connections,
            ring_entries,
            batch,
            lease_timeout_ms,
            lock_timeout_ms,
            force,
        } => {
            let mut a = format::FormatArgs::new(device(&cli)?);
            a.size = *size;
            a.segment_bytes = *segment_size;
            a.max_connections = *max_connections;
            a.ring_entries = *ring_entries;
            a.batch = *batch;
            a.lease_timeout_ms = *lease_timeout_ms;
            a.lock_timeout_ms = *lock_timeout_ms;
            a.secondaries = cli.secondaries.clone();
            a.force = *force;
            a.block_size = cli.block_size;
            let spec = format::run(&a)?;
            outln!("{}", format::summary(&spec));
            Ok(())
        }
        Cmd::Inspect { json, entries } => {
            let mut dev = layout::open_device(&device(&cli)?, &open_opts(&cli))?;
            let loaded = layout::load(dev.as_mut())?;
            if let Some(w) = loaded.warning(dev.location()) {
                eprintln!("fts: {w}");
            }
            let v = inspect::to_json(dev.as_ref(), &loaded, *entries);
            if *json {
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                out!("{}", inspect::to_text(&v));
            }
            Ok(())
        }
        Cmd::Check { repair } => check::run(&check::CheckArgs {
            device: device(&cli)?,
            opts: open_opts(&cli),
            secondaries: cli.secondaries.clone(),
            repair: *repair,
            lock: cli.lock,
            name: if *repair { name(&cli)? } else { String::new() },
        }),
        Cmd::Serve {
            root,
            max_partial_age,
            authorized_keys,
            encrypt,
        } => transfer::serve(
            &ctx(&cli, None)?,
            root,
            *max_partial_age,
            authorized_keys.as_deref(),
            *encrypt,
        ),
        Cmd::Keygen {
            file,
            comment,
            force,
        } => transfer::keygen(file, comment.as_deref(), *force),
        Cmd::Shell { server, conn } => transfer::shell(&ctx(&cli, Some(conn))?, server.as_deref()),
        Cmd::Put {
            server,
            local,
            remote,
            replace,
            resume,
            text,
            conn,
        } => transfer::put(
            &ctx(&cli, Some(conn))?,
            server,
            local,
            remote,
            fts_session::CopyOptions {
                replace: *replace,
                resume: *resume,
            },
            *text,
        ),
        Cmd::Get {
            server,
            remote,
            local,
            replace,
            resume,
            text,
            conn,
        } => transfer::get(
            &ctx(&cli, Some(conn))?,
            server,
            remote,
            local,
            fts_session::CopyOptions {
                replace: *replace,
                resume: *resume,
            },
            *text,
        ),
        Cmd::Dir { server, path, conn } => {
            transfer::dir(&ctx(&cli, Some(conn))?, server, path.as_deref())
        }
        Cmd::Status { json } => transfer::status(&ctx(&cli, None)?, *json),
        Cmd::Scsi { op } => scsi::run(&device(&cli)?, op),
        Cmd::HoldLock { seconds } => transfer::hold_lock(&ctx(&cli, None)?, *seconds),
        Cmd::Demo { size } => transfer::demo(*size),
    }
}

/// The error chain as one line, skipping causes whose text the previous
/// message already contains (library errors often embed their source).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        // Messages may carry text from another host (a server's error
        // reply, names from the device): no control character reaches
        // the terminal.
        let text = transfer::printable(&cause.to_string());
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn main() -> ExitCode {
    out::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Code::Usage as u8 } else { 0 });
        }
    };
    let result = run(cli);
    // Standard output closed by its reader: the command ends quietly, as
    // one killed by SIGPIPE would (after doing its work).
    let output = out::status();
    match (result, output) {
        (Err(e), _) => {
            eprintln!("fts: error: {}", message(&e));
            ExitCode::from(code_of(&e) as u8)
        }
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Ok(()), Err(None)) => ExitCode::from(out::CLOSED_EXIT),
        (Ok(()), Err(Some(why))) => {
            eprintln!("fts: error: cannot write to standard output: {why}");
            ExitCode::from(Code::Failure as u8)
        }
    }
}
