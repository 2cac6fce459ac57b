//! A real userspace iSCSI target (tgt: `tgtd` + `tgtadm`) on loopback, with
//! file-backed LUNs, for tests.
//!
//! ```no_run
//! let Some(mut tgtd) = hil::start_or_skip("my_test") else { return Ok(()) };
//! let lun = tgtd.add_lun(64 << 20, 4096)?;
//! // ... connect an initiator to `lun.url` ...
//! tgtd.reset_lun(&lun)?; // forget PR state and mode pages, keep the data
//! # Ok::<(), hil::Error>(())
//! ```
//!
//! Each [`Tgtd`] is its own daemon with its own control port (`tgtd -C N`)
//! and its own TCP portal, so tests may run in parallel without serialising.
//! Dropping it deletes its targets (forcibly, closing sessions), stops the
//! daemon and waits for it; a daemon that will not stop is killed with
//! `SIGKILL`.
//!
//! Facts about tgt 1.0.85 the rig relies on or works around:
//!
//! - `tgtd -f` ignores `SIGTERM`; it stops on `tgtadm --op delete --mode
//!   system`, which it refuses while any target exists.
//! - When the portal port is taken, `tgtd` does **not** exit: it listens on
//!   `0.0.0.0:3260` and `[::]:3260` instead. [`Tgtd::start`] checks the portal
//!   list and retries on another port.
//! - The control port is not a TCP port: it names the Unix socket
//!   `/var/run/tgtd/socket.N` and its lock file `socket.N.lock` (`N` is a C
//!   `short`). A second daemon on the same `N` exits at once.
//! - `--params scsi_id=...,scsi_sn=...` is refused by `--op new --mode
//!   logicalunit`; it is accepted by `--op update`. VPD page 0x83 then carries
//!   the id as a T10 designator, an NAA-6 designator made from the id's *hex
//!   digits* (the rig's ids are all hex, so it is unique too) and an NAA-3
//!   designator `tid << 32 | lun` that cannot be changed (equal on every
//!   daemon for target 1, LUN 1).
//! - `delete --mode target --force` closes the target's sessions but fails
//!   with "this logical unit is still active" while a command is in flight;
//!   the rig closes connections first and retries.
//! - The "I_T nexus information" of `--op show --mode target` is written
//!   once at login and names only the leading connection;
//!   `--op show --mode conn --tid T` lists the live connections, so
//!   [`Tgtd::nexuses`] takes connections from there.
//! - `--op delete --mode conn` closes the TCP connection; with error
//!   recovery level 0 the session (I_T nexus) goes with it.

use std::fs::{self, File, OpenOptions};
use std::net::{IpAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Error;

/// How long [`Tgtd::start`] waits for a daemon to answer `tgtadm`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `tgtadm` may take in normal operation.
const TGTADM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `tgtadm` may take during teardown.
const TEARDOWN_TGTADM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long teardown retries deleting busy targets before giving up.
const TEARDOWN_RETRY: Duration = Duration::from_secs(5);
/// How long teardown waits for `tgtd` to exit before `SIGKILL`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long [`Tgtd::reset_lun`] retries deleting a busy LU.
const RESET_RETRY: Duration = Duration::from_secs(5);
/// How long [`Tgtd::drop_connections`] waits for tgt to forget the connections.
const DROP_WAIT: Duration = Duration::from_secs(5);
/// How many daemons [`Tgtd::start`] tries when ports collide.
const START_ATTEMPTS: u32 = 8;
/// Control ports are picked in this range (`-C` is a C `short`; other tools
/// and engineers tend to use small numbers).
const CONTROL_PORTS: std::ops::Range<u16> = 10_000..32_000;
/// Where tgt keeps its control sockets (`TGT_IPC_SOCKET` is removed from the
/// environment of every command the rig runs, so this always holds).
const IPC_DIR: &str = "/var/run/tgtd";
/// Prefix of every IQN the rig creates (the `.invalid` domain owns nothing).
pub const IQN_PREFIX: &str = "iqn.2026-11.invalid.fts-hil";
/// At most this much of the daemon's log goes into error messages.
const LOG_TAIL: usize = 4096;

/// Options for [`Tgtd::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TgtdOptions {
    /// The address the iSCSI portal listens on (default `127.0.0.1`). An
    /// IPv6 address (`::1`) is accepted; portals are then written `[::1]:PORT`.
    pub portal_addr: String,
    /// Where backing files go. Default (`None`): a temporary directory owned
    /// by the [`Tgtd`] and removed with it. A directory given here is created
    /// if needed and its backing files are left in place.
    pub work_dir: Option<PathBuf>,
    /// Run the daemon inside this network namespace (`ip netns exec`), so
    /// its portal is on an address of a namespace the rig created. The
    /// portal port is then the iSCSI default, 3260: the namespace is the
    /// rig's own, so nothing else can hold it. The control socket is a
    /// file, so `tgtadm` still works from outside.
    pub netns: Option<String>,
}

impl Default for TgtdOptions {
    fn default() -> Self {
        TgtdOptions {
            portal_addr: "127.0.0.1".to_owned(),
            work_dir: None,
            netns: None,
        }
    }
}

/// One running `tgtd`, listening on its own portal and control port.
///
/// Dropping it tears it down (see the [module docs](self)); [`Tgtd::stop`]
/// does the same and reports failures. Neither ever panics.
#[derive(Debug)]
pub struct Tgtd {
    child: Child,
    tgtadm: PathBuf,
    control_port: u16,
    portal_ip: IpAddr,
    portal_port: u16,
    /// Holds the log and, by default, the backing files; removed on drop,
    /// after the daemon has stopped.
    _state_dir: tempfile::TempDir,
    log_path: PathBuf,
    work_dir: PathBuf,
    /// Targets created and not yet deleted: (tid, IQN).
    targets: Vec<(u32, String)>,
    next_tid: u32,
    /// Makes LU identities unique across daemons that reuse a pid and port.
    nonce: u64,
    stopped: bool,
}

/// A target with one file-backed logical unit (LUN 1), made by
/// [`Tgtd::add_lun`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lun {
    /// The target id within its daemon (1, 2, ...).
    pub tid: u32,
    /// The target's IQN, `iqn.2026-11.invalid.fts-hil:<pid>-<ctlport>-t<tid>`.
    pub iqn: String,
    /// The libiscsi URL of the LU, `iscsi://127.0.0.1:PORT/IQN/1`.
    pub url: String,
    /// The sparse backing file.
    pub backing: PathBuf,
    /// The LU's size in bytes (a multiple of `block_size`).
    pub size_bytes: u64,
    /// The LU's logical block size.
    pub block_size: u32,
    /// The LU's `scsi_id`: 32 hex digits, unique per LUN (VPD page 0x83).
    pub scsi_id: String,
    /// The LU's `scsi_sn`: unique per LUN (VPD page 0x80).
    pub scsi_sn: String,
}

/// One I_T nexus (iSCSI session) of a target, as tgt reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nexus {
    /// tgt's nexus id, which is the session's TSIH (1, 2, ... per daemon).
    ///
    /// tgt 1.0.85 puts the TSIH in the login response in host byte order,
    /// so on x86 an initiator sees it byte-swapped (nexus 1 as TSIH 256).
    pub sid: u64,
    /// The initiator's IQN.
    pub initiator: String,
    /// The ids (CIDs) of the session's live connections.
    pub connections: Vec<u32>,
}

/// One target in the output of `tgtadm --op show --mode target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// The target id.
    pub tid: u32,
    /// The target's IQN.
    pub iqn: String,
    /// Its I_T nexuses, connections as written at login (see the
    /// [module docs](self)).
    pub nexuses: Vec<Nexus>,
    /// Its logical units, LUN 0 (the controller) included.
    pub lus: Vec<LuInfo>,
}

/// One logical unit in the output of `tgtadm --op show --mode target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuInfo {
    /// The LUN.
    pub lun: u64,
    /// The device type, e.g. `disk` or `controller`.
    pub device_type: String,
    /// The SCSI ID (VPD 0x83), e.g. `IET     00010001` when not set.
    pub scsi_id: String,
    /// The SCSI serial number (VPD 0x80).
    pub scsi_sn: String,
    /// The logical block size.
    pub block_size: u32,
    /// The backing file, `None` for LUN 0.
    pub backing_path: Option<PathBuf>,
}

/// One connection in the output of `tgtadm --op show --mode conn --tid T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The session (TSIH, the nexus id).
    pub sid: u64,
    /// The connection id.
    pub cid: u32,
    /// The initiator's IQN.
    pub initiator: String,
    /// The peer, e.g. `IP Address: 127.0.0.1`, with the prefix removed.
    pub address: String,
}

/// Checks whether real-tgt tests can run here: `tgtd` and `tgtadm` are
/// installed and we are root.
///
/// Returns why not otherwise. Tests pass the result to
/// [`crate::skip::require`] (as [`start_or_skip`] does), which skips loudly
/// outside CI and fails the test, saying CI allows no skips, under it.
pub fn available() -> Result<(), String> {
    let mut problems = Vec::new();
    for program in ["tgtd", "tgtadm"] {
        if crate::proc::find_program(program).is_none() {
            problems.push(format!(
                "`{program}` is not installed (apt-get install tgt)"
            ));
        }
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        problems.push(format!(
            "not root (euid {euid}); tgtd needs root for /var/run/tgtd"
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "tgt test harness unavailable: {}",
        problems.join("; ")
    ))
}

/// Starts a [`Tgtd`] with default options for the test `test_name`, or skips.
///
/// When [`available`] fails: outside CI, [`crate::skip::skip`] prints a loud
/// `SKIPPED` banner on the real standard error (`cargo test` shows it),
/// records the skip for `cargo xtask ci`'s count, and this returns `None`
/// (the caller returns); with `CI` set, it panics so that the test fails.
/// Panics, failing the test, when tgt is available but will not start.
#[track_caller]
pub fn start_or_skip(test_name: &str) -> Option<Tgtd> {
    if !crate::skip::require(test_name, available()) {
        return None;
    }
    match Tgtd::start(TgtdOptions::default()) {
        Ok(tgtd) => Some(tgtd),
        Err(e) => panic!("{test_name}: cannot start tgtd: {e}"),
    }
}

impl Tgtd {
    /// Starts a `tgtd` on a free control port and a free portal port of
    /// `opts.portal_addr`, and waits (at most 10 s) until it answers `tgtadm`
    /// and listens on that portal.
    ///
    /// Ports are found by probing (the control port's lock file; binding TCP
    /// port 0), so another process can still take them first; such a
    /// collision is detected and the start retried on other ports, up to 8
    /// times.
    pub fn start(opts: TgtdOptions) -> Result<Tgtd, Error> {
        let portal_ip: IpAddr = opts
            .portal_addr
            .parse()
            .map_err(|_| Error::InvalidArgument {
                what: format!("portal_addr {:?} is not an IP address", opts.portal_addr),
            })?;
        let tgtd = crate::proc::find_program("tgtd").ok_or(Error::ProgramNotFound {
            program: "tgtd",
            package: "tgt",
        })?;
        let tgtadm = crate::proc::find_program("tgtadm").ok_or(Error::ProgramNotFound {
            program: "tgtadm",
            package: "tgt",
        })?;
        let state_dir = tempfile::Builder::new()
            .prefix("fts-hil-tgtd-")
            .tempdir()
            .map_err(|source| Error::Io {
                action: "create a temporary directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        let work_dir = match opts.work_dir {
            Some(dir) => {
                fs::create_dir_all(&dir).map_err(|source| Error::Io {
                    action: "create work directory",
                    path: dir.clone(),
                    source,
                })?;
                dir
            }
            None => state_dir.path().to_path_buf(),
        };
        let nonce = unique_nonce();

        let mut last = None;
        for attempt in 0..START_ATTEMPTS {
            let control_port = pick_control_port(nonce, attempt);
            let portal_port = match &opts.netns {
                Some(_) => 3260,
                None => pick_portal_port(portal_ip)?,
            };
            let log_path = state_dir.path().join(format!("tgtd-{control_port}.log"));
            match spawn_ready(
                &tgtd,
                opts.netns.as_deref(),
                &tgtadm,
                &log_path,
                control_port,
                portal_ip,
                portal_port,
            ) {
                Ok(child) => {
                    return Ok(Tgtd {
                        child,
                        tgtadm,
                        control_port,
                        portal_ip,
                        portal_port,
                        _state_dir: state_dir,
                        log_path,
                        work_dir,
                        targets: Vec::new(),
                        next_tid: 1,
                        nonce,
                        stopped: false,
                    });
                }
                Err(e) if e.is_start_collision() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(Error::StartFailed {
            attempts: START_ATTEMPTS,
            last: Box::new(last.unwrap_or(Error::InvalidArgument {
                what: "no start attempt was made".to_owned(),
            })),
        })
    }

    /// The iSCSI portal, `127.0.0.1:PORT` (`[::1]:PORT` for IPv6).
    pub fn portal(&self) -> String {
        portal_string(self.portal_ip, self.portal_port)
    }

    /// The portal's TCP port.
    pub fn portal_port(&self) -> u16 {
        self.portal_port
    }

    /// The control port (`tgtd -C N`, `tgtadm -C N`), for running `tgtadm`
    /// by hand while debugging.
    pub fn control_port(&self) -> u16 {
        self.control_port
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where backing files go.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The daemon's log so far (its stdout and stderr; tgt logs every
    /// connection it closes there). Empty if it cannot be read.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Creates a new target (tid 1, 2, ...) with LUN 1 backed by a new sparse
    /// file of `size_bytes`, logical block size `block_size`, a unique
    /// `scsi_id`/`scsi_sn`, and open to all initiators.
    ///
    /// `block_size` must be a power of two from 512 to 65536 and divide
    /// `size_bytes`, which must not be zero.
    pub fn add_lun(&mut self, size_bytes: u64, block_size: u32) -> Result<Lun, Error> {
        if !(512..=65536).contains(&block_size) || !block_size.is_power_of_two() {
            return Err(Error::InvalidArgument {
                what: format!("block size {block_size} is not a power of two in 512..=65536"),
            });
        }
        if size_bytes == 0 || size_bytes % u64::from(block_size) != 0 {
            return Err(Error::InvalidArgument {
                what: format!(
                    "LUN size {size_bytes} is not a positive multiple of the block size {block_size}"
                ),
            });
        }
        let tid = self.next_tid;
        self.next_tid += 1;
        let pid = std::process::id();
        let iqn = format!("{IQN_PREFIX}:{pid}-{}-t{tid}", self.control_port);
        let backing = self
            .work_dir
            .join(format!("tgtd-{pid}-{}-t{tid}.img", self.control_port));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&backing)
            .map_err(|source| Error::Io {
                action: "create backing file",
                path: backing.clone(),
                source,
            })?;
        file.set_len(size_bytes).map_err(|source| Error::Io {
            action: "set the size of backing file",
            path: backing.clone(),
            source,
        })?;
        drop(file);
        let (scsi_id, scsi_sn) = lu_identity(pid, self.control_port, tid, self.nonce);
        let lun = Lun {
            tid,
            url: format!("iscsi://{}/{iqn}/1", self.portal()),
            iqn,
            backing,
            size_bytes,
            block_size,
            scsi_id,
            scsi_sn,
        };

        let tid_s = tid.to_string();
        self.tgtadm(&[
            "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", &tid_s, "-T", &lun.iqn,
        ])?;
        self.targets.push((tid, lun.iqn.clone()));
        self.create_lu(&lun)?;
        self.tgtadm(&[
            "--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", &tid_s, "-I", "ALL",
        ])?;
        Ok(lun)
    }

    /// Deletes LUN 1 of `lun`'s target and creates it again on the same
    /// backing file with the same identity, as a target reboot would: the
    /// data stays, persistent reservations, registrations and mode pages
    /// (which tgt keeps only in memory) are gone. The target and its
    /// sessions stay; initiators see a unit attention.
    ///
    /// Retries for up to 5 s while the LU has commands in flight.
    pub fn reset_lun(&mut self, lun: &Lun) -> Result<(), Error> {
        self.check_lun(lun)?;
        let tid_s = lun.tid.to_string();
        let args = [
            "--lld",
            "iscsi",
            "--op",
            "delete",
            "--mode",
            "logicalunit",
            "--tid",
            &tid_s,
            "--lun",
            "1",
        ];
        let start = Instant::now();
        loop {
            match self.tgtadm(&args) {
                Ok(_) => break,
                Err(e) if e.is_tgtadm_refusal("still active") && start.elapsed() < RESET_RETRY => {
                    sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
        self.create_lu(lun)
    }

    /// The I_T nexuses (sessions) of `lun`'s target, with their live
    /// connections.
    pub fn nexuses(&self, lun: &Lun) -> Result<Vec<Nexus>, Error> {
        self.check_lun(lun)?;
        let target = self
            .targets()?
            .into_iter()
            .find(|t| t.tid == lun.tid && t.iqn == lun.iqn)
            .ok_or_else(|| self.unknown(lun))?;
        let conns = self.connections(lun.tid)?;
        Ok(merge_connections(target.nexuses, &conns))
    }

    /// Closes every connection of `lun`'s target whose initiator IQN contains
    /// `initiator_contains` (`""` matches all), as a network failure would,
    /// and waits (at most 5 s) until tgt no longer lists them. Returns how
    /// many were closed.
    ///
    /// The initiator sees its TCP connection closed and may log in again (a
    /// new session, with a new sid).
    pub fn drop_connections(&self, lun: &Lun, initiator_contains: &str) -> Result<usize, Error> {
        let tid_s = lun.tid.to_string();
        let mut dropped = Vec::new();
        for nexus in self.nexuses(lun)? {
            if !nexus.initiator.contains(initiator_contains) {
                continue;
            }
            for cid in nexus.connections {
                let sid_s = nexus.sid.to_string();
                let cid_s = cid.to_string();
                let args = [
                    "--lld", "iscsi", "--op", "delete", "--mode", "conn", "--tid", &tid_s, "--sid",
                    &sid_s, "--cid", &cid_s,
                ];
                match self.tgtadm(&args) {
                    Ok(_) => dropped.push((nexus.sid, cid)),
                    // Gone in the meantime: not ours to count.
                    Err(e)
                        if e.is_tgtadm_refusal("can't find the session")
                            || e.is_tgtadm_refusal("can't find the connection") => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let start = Instant::now();
        loop {
            let conns = self.connections(lun.tid)?;
            let left: Vec<_> = dropped
                .iter()
                .filter(|(sid, cid)| conns.iter().any(|c| c.sid == *sid && c.cid == *cid))
                .collect();
            if left.is_empty() {
                return Ok(dropped.len());
            }
            if start.elapsed() > DROP_WAIT {
                return Err(Error::Timeout {
                    what: format!(
                        "tgtd (control port {}) to close connections (sid, cid) {left:?} of target {}",
                        self.control_port, lun.tid
                    ),
                    waited: start.elapsed(),
                });
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// All targets of this daemon, parsed from `tgtadm --op show --mode target`.
    pub fn targets(&self) -> Result<Vec<TargetInfo>, Error> {
        let args = ["--lld", "iscsi", "--op", "show", "--mode", "target"];
        let out = self.tgtadm(&args)?;
        parse_show_target(&out).map_err(|detail| Error::Parse {
            command: self.command_line(&args),
            detail,
            output: out,
        })
    }

    /// The live connections of target `tid`, parsed from
    /// `tgtadm --op show --mode conn --tid T`.
    pub fn connections(&self, tid: u32) -> Result<Vec<ConnInfo>, Error> {
        let tid_s = tid.to_string();
        let args = [
            "--lld", "iscsi", "--op", "show", "--mode", "conn", "--tid", &tid_s,
        ];
        let out = self.tgtadm(&args)?;
        parse_show_conn(&out).map_err(|detail| Error::Parse {
            command: self.command_line(&args),
            detail,
            output: out,
        })
    }

    /// Runs `tgtadm -C <control port> ARGS...` against this daemon and
    /// returns its standard output. For anything the rig does not wrap.
    pub fn tgtadm(&self, args: &[&str]) -> Result<String, Error> {
        run_tgtadm(&self.tgtadm, self.control_port, args, TGTADM_TIMEOUT)
    }

    /// Tears the daemon down like `Drop` does, but reports what went wrong:
    /// the daemon had died, a target would not go, it had to be killed.
    /// The daemon is gone when this returns, whatever it returns.
    pub fn stop(mut self) -> Result<(), Error> {
        self.teardown()
    }

    /// `lun` must be one of this daemon's targets.
    fn check_lun(&self, lun: &Lun) -> Result<(), Error> {
        if self
            .targets
            .iter()
            .any(|(tid, iqn)| *tid == lun.tid && *iqn == lun.iqn)
        {
            Ok(())
        } else {
            Err(self.unknown(lun))
        }
    }

    fn unknown(&self, lun: &Lun) -> Error {
        Error::UnknownTarget {
            tid: lun.tid,
            iqn: lun.iqn.clone(),
            control_port: self.control_port,
        }
    }

    fn create_lu(&self, lun: &Lun) -> Result<(), Error> {
        let tid_s = lun.tid.to_string();
        let bs = lun.block_size.to_string();
        let backing = lun.backing.to_string_lossy();
        self.tgtadm(&[
            "--lld",
            "iscsi",
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            &tid_s,
            "--lun",
            "1",
            "-b",
            &backing,
            "--blocksize",
            &bs,
        ])?;
        // `--params` is refused by `--op new`; `--op update` takes it.
        let params = format!("scsi_id={},scsi_sn={}", lun.scsi_id, lun.scsi_sn);
        self.tgtadm(&[
            "--lld",
            "iscsi",
            "--op",
            "update",
            "--mode",
            "logicalunit",
            "--tid",
            &tid_s,
            "--lun",
            "1",
            "--params",
            &params,
        ])?;
        Ok(())
    }

    fn command_line(&self, args: &[&str]) -> String {
        command_line(&self.tgtadm, self.control_port, args)
    }

    /// Deletes targets, stops and reaps the daemon (killing it if need be)
    /// and removes its control socket. Idempotent.
    fn teardown(&mut self) -> Result<(), Error> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut graceful = match self.child.try_wait() {
            Ok(Some(status)) => Err(self.exited(status)),
            _ => self.delete_everything(),
        };
        if graceful.is_err() {
            // tgtadm fails when the daemon has died (or is dying); say so.
            if let Ok(Some(status)) =
                crate::proc::wait_timeout(&mut self.child, Duration::from_millis(100))
            {
                graceful = Err(self.exited(status));
            }
        }
        // A daemon whose teardown failed will not exit by itself.
        let grace = if graceful.is_ok() {
            EXIT_TIMEOUT
        } else {
            Duration::ZERO
        };
        let exited = self.wait_or_kill(grace);
        remove_ipc_files(self.control_port);
        graceful.and(exited)
    }

    fn exited(&self, status: ExitStatus) -> Error {
        Error::DaemonExited {
            control_port: self.control_port,
            status,
            log: log_tail(&self.log_path),
        }
    }

    fn delete_everything(&mut self) -> Result<(), Error> {
        let start = Instant::now();
        let adm = |args: &[&str]| {
            run_tgtadm(
                &self.tgtadm,
                self.control_port,
                args,
                TEARDOWN_TGTADM_TIMEOUT,
            )
        };
        for (tid, _) in &self.targets {
            let tid_s = tid.to_string();
            loop {
                // Close connections first: commands in flight make the LU
                // "still active" and `--force` does not override that.
                if let Ok(out) = adm(&[
                    "--lld", "iscsi", "--op", "show", "--mode", "conn", "--tid", &tid_s,
                ]) {
                    for c in parse_show_conn(&out).unwrap_or_default() {
                        let (sid, cid) = (c.sid.to_string(), c.cid.to_string());
                        let _ = adm(&[
                            "--lld", "iscsi", "--op", "delete", "--mode", "conn", "--tid", &tid_s,
                            "--sid", &sid, "--cid", &cid,
                        ]);
                    }
                }
                match adm(&[
                    "--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", &tid_s,
                    "--force",
                ]) {
                    Ok(_) => break,
                    Err(e) if e.is_tgtadm_refusal("can't find the target") => break,
                    Err(e)
                        if e.is_tgtadm_refusal("still active")
                            && start.elapsed() < TEARDOWN_RETRY =>
                    {
                        sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.targets.clear();
        adm(&["--op", "delete", "--mode", "system"]).map(drop)
    }

    /// Waits up to `grace` for the daemon to exit, then kills it.
    fn wait_or_kill(&mut self, grace: Duration) -> Result<(), Error> {
        let command = format!("tgtd -f -C {}", self.control_port);
        if let Ok(Some(_)) = crate::proc::wait_timeout(&mut self.child, grace) {
            return Ok(());
        }
        // Last resort. Errors here mean it is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err(Error::Timeout {
            what: format!("{command} (pid {}) to exit; it was killed", self.child.id()),
            waited: grace,
        })
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("hil: tearing down tgtd: {e}");
        }
        // `state_dir` (log, default backing files) is removed after this.
    }
}

// ---------------------------------------------------------------------------
// Starting the daemon.

/// Spawns `tgtd` and waits until it is ready on `control_port` and listens on
/// the portal. On failure the child is killed and reaped.
fn spawn_ready(
    tgtd: &Path,
    netns: Option<&str>,
    tgtadm: &Path,
    log_path: &Path,
    control_port: u16,
    ip: IpAddr,
    portal_port: u16,
) -> Result<Child, Error> {
    let portal = portal_string(ip, portal_port);
    let log = File::create(log_path).map_err(|source| Error::Io {
        action: "create log file",
        path: log_path.to_path_buf(),
        source,
    })?;
    let log2 = log.try_clone().map_err(|source| Error::Io {
        action: "duplicate the descriptor of log file",
        path: log_path.to_path_buf(),
        source,
    })?;
    let args = [
        "-f".to_owned(),
        "-C".to_owned(),
        control_port.to_string(),
        "--iscsi".to_owned(),
        format!("portal={portal}"),
    ];
    // `ip netns exec` execs the program, so the child's pid is tgtd's.
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(tgtd);
            c
        }
        None => Command::new(tgtd),
    };
    let mut child = command
        .args(&args)
        .env_remove("TGT_IPC_SOCKET")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|source| Error::Spawn {
            command: format!("{} {}", tgtd.display(), args.join(" ")),
            source,
        })?;
    match wait_ready(&mut child, tgtadm, log_path, control_port, &portal) {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

fn wait_ready(
    child: &mut Child,
    tgtadm: &Path,
    log_path: &Path,
    control_port: u16,
    portal: &str,
) -> Result<(), Error> {
    let start = Instant::now();
    let exited = |status| Error::DaemonExited {
        control_port,
        status,
        log: log_tail(log_path),
    };
    let try_wait = |child: &mut Child| {
        child.try_wait().map_err(|source| Error::Spawn {
            command: format!("wait for tgtd -C {control_port}"),
            source,
        })
    };
    loop {
        if let Some(status) = try_wait(child)? {
            return Err(exited(status));
        }
        match run_tgtadm(
            tgtadm,
            control_port,
            &["--op", "show", "--mode", "system"],
            TEARDOWN_TGTADM_TIMEOUT,
        ) {
            Ok(_) => break,
            Err(e) if start.elapsed() > READY_TIMEOUT => {
                return Err(Error::NotReady {
                    control_port,
                    waited: start.elapsed(),
                    last_error: e.to_string(),
                    log: log_tail(log_path),
                })
            }
            Err(_) => sleep(Duration::from_millis(10)),
        }
    }
    // The socket that answered must be our daemon's, not that of another
    // daemon that won the race for this control port.
    let holder = lock_holder(control_port);
    if let Some(status) = try_wait(child)? {
        return Err(exited(status));
    }
    if holder != i32::try_from(child.id()).ok() {
        return Err(Error::ControlPortTaken {
            control_port,
            holder,
            ours: child.id(),
        });
    }
    let args = ["--lld", "iscsi", "--op", "show", "--mode", "portal"];
    let out = run_tgtadm(tgtadm, control_port, &args, TGTADM_TIMEOUT)?;
    let listed = parse_show_portals(&out);
    if !listed.iter().any(|p| p == portal) {
        return Err(Error::PortalNotBound {
            control_port,
            expected: portal.to_owned(),
            listed,
            log: log_tail(log_path),
        });
    }
    Ok(())
}

/// A control port whose lock file nobody holds, starting from a
/// pseudo-random point of [`CONTROL_PORTS`].
fn pick_control_port(nonce: u64, attempt: u32) -> u16 {
    let span = u64::from(CONTROL_PORTS.end - CONTROL_PORTS.start);
    let mut x = nonce ^ (u64::from(std::process::id()) << 20) ^ (u64::from(attempt) << 48);
    // splitmix64 finaliser: spreads nearby seeds apart.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let first = x % span;
    let port_at = |i: u64| {
        // `span` fits in a u16, so the sum does too.
        CONTROL_PORTS.start + u16::try_from((first + i) % span).unwrap_or(0)
    };
    (0..span)
        .map(port_at)
        .find(|&p| lock_holder(p).is_none())
        .unwrap_or_else(|| port_at(0))
}

/// A TCP port that was free on `ip` a moment ago.
fn pick_portal_port(ip: IpAddr) -> Result<u16, Error> {
    let io_err = |source| Error::Io {
        action: "bind a TCP port on",
        path: PathBuf::from(ip.to_string()),
        source,
    };
    let listener = TcpListener::bind((ip, 0)).map_err(io_err)?;
    Ok(listener.local_addr().map_err(io_err)?.port())
}

/// The pid holding `/var/run/tgtd/socket.N.lock`, if any.
fn lock_holder(control_port: u16) -> Option<i32> {
    let file = File::open(lock_path(control_port)).ok()?;
    let mut fl = lock_region(libc::F_WRLCK);
    // SAFETY: `fl` is a valid, initialised `struct flock` that outlives the
    // call, and the descriptor is open.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl as *mut libc::flock) };
    if rc != 0 || fl.l_type == libc::F_UNLCK as libc::c_short {
        None
    } else {
        Some(fl.l_pid)
    }
}

/// Removes the control socket and lock file of a daemon that has exited
/// (tgtd leaves both behind), unless another daemon has taken the port.
fn remove_ipc_files(control_port: u16) {
    let lock = lock_path(control_port);
    let Ok(file) = OpenOptions::new().write(true).open(&lock) else {
        return;
    };
    let fl = lock_region(libc::F_WRLCK);
    // SAFETY: as in `lock_holder`; F_SETLK only reads `fl`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl as *const libc::flock) };
    if rc == 0 {
        // Holding the lock, no tgtd can be starting on this port.
        let _ = fs::remove_file(Path::new(IPC_DIR).join(format!("socket.{control_port}")));
        let _ = fs::remove_file(&lock);
    }
    // Closing `file` releases the lock.
}

/// The region `lockf(fd, F_TLOCK, 1)` locks at offset 0, as tgtd does.
fn lock_region(l_type: libc::c_int) -> libc::flock {
    // SAFETY: `struct flock` is plain data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 1;
    fl
}

fn lock_path(control_port: u16) -> PathBuf {
    Path::new(IPC_DIR).join(format!("socket.{control_port}.lock"))
}

// ---------------------------------------------------------------------------
// Helpers.

fn portal_string(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// Distinct per call within a process and, through the clock, across
/// processes.
fn unique_nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed) << 32)
}

/// The `scsi_id` and `scsi_sn` of a LU.
///
/// The id is 32 hex digits because tgt builds the NAA-6 designator of VPD
/// page 0x83 from the id's hex digits (replacing the first with the NAA
/// type); non-hex characters would count as 0 and make it collide. Both
/// fit tgt's 36-character fields.
fn lu_identity(pid: u32, control_port: u16, tid: u32, nonce: u64) -> (String, String) {
    let id = format!(
        "f{pid:08x}{control_port:04x}{:04x}{:015x}",
        tid & 0xffff,
        nonce & 0x0fff_ffff_ffff_ffff
    );
    let sn = format!("HIL{}", &id[1..]);
    (id, sn)
}

fn command_line(tgtadm: &Path, control_port: u16, args: &[&str]) -> String {
    format!("{} -C {control_port} {}", tgtadm.display(), args.join(" "))
}

/// Runs `tgtadm -C PORT ARGS...`, killing it after `timeout` (it blocks if
/// the daemon is wedged).
fn run_tgtadm(
    tgtadm: &Path,
    control_port: u16,
    args: &[&str],
    timeout: Duration,
) -> Result<String, Error> {
    let mut cmd = Command::new(tgtadm);
    cmd.arg("-C")
        .arg(control_port.to_string())
        .args(args)
        .env_remove("TGT_IPC_SOCKET");
    crate::proc::run_capture(&mut cmd, timeout)
}

/// The last [`LOG_TAIL`] bytes of the daemon's log.
fn log_tail(path: &Path) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    if text.len() <= LOG_TAIL {
        return text;
    }
    let mut cut = text.len() - LOG_TAIL;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("[...]{}", &text[cut..])
}

// ---------------------------------------------------------------------------
// Parsing `tgtadm --op show` output (pure functions).

/// Parses the output of `tgtadm --lld iscsi --op show --mode target`.
///
/// Lines the parser does not know (e.g. `Nop interval:`, account and ACL
/// details) are ignored; a known line with a malformed value is an error,
/// as is text before the first `Target N: IQN` line.
pub fn parse_show_target(text: &str) -> Result<Vec<TargetInfo>, String> {
    #[derive(PartialEq)]
    enum Section {
        Other,
        Nexus,
        Lun,
    }
    let mut targets: Vec<TargetInfo> = Vec::new();
    let mut section = Section::Other;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}: {raw:?}", n + 1);
        if let Some(rest) = raw.strip_prefix("Target ") {
            let (tid, iqn) = rest
                .split_once(": ")
                .ok_or_else(|| bad("expected `Target N: IQN`"))?;
            targets.push(TargetInfo {
                tid: tid.parse().map_err(|_| bad("bad target id"))?,
                iqn: iqn.trim().to_owned(),
                nexuses: Vec::new(),
                lus: Vec::new(),
            });
            section = Section::Other;
            continue;
        }
        let target = targets
            .last_mut()
            .ok_or_else(|| bad("text before the first target"))?;
        if line.ends_with("information:") {
            section = match line {
                "I_T nexus information:" => Section::Nexus,
                "LUN information:" => Section::Lun,
                _ => Section::Other,
            };
            continue;
        }
        match section {
            Section::Nexus => {
                if let Some(v) = line.strip_prefix("I_T nexus: ") {
                    target.nexuses.push(Nexus {
                        sid: v.parse().map_err(|_| bad("bad nexus id"))?,
                        initiator: String::new(),
                        connections: Vec::new(),
                    });
                } else if let Some(v) = line.strip_prefix("Initiator: ") {
                    let nexus = target
                        .nexuses
                        .last_mut()
                        .ok_or_else(|| bad("initiator outside a nexus"))?;
                    let iqn = v.split_once(" alias: ").map_or(v, |(iqn, _)| iqn);
                    nexus.initiator = iqn.to_owned();
                } else if let Some(v) = line.strip_prefix("Connection: ") {
                    let nexus = target
                        .nexuses
                        .last_mut()
                        .ok_or_else(|| bad("connection outside a nexus"))?;
                    nexus
                        .connections
                        .push(v.parse().map_err(|_| bad("bad connection id"))?);
                }
            }
            Section::Lun => {
                if let Some(v) = line.strip_prefix("LUN: ") {
                    target.lus.push(LuInfo {
                        lun: v.parse().map_err(|_| bad("bad LUN"))?,
                        device_type: String::new(),
                        scsi_id: String::new(),
                        scsi_sn: String::new(),
                        block_size: 0,
                        backing_path: None,
                    });
                    continue;
                }
                let lu = target
                    .lus
                    .last_mut()
                    .ok_or_else(|| bad("LU detail outside a LUN"))?;
                // Values are taken from the untrimmed line: a default SCSI
                // ID contains runs of spaces (`IET     00010001`).
                let value = |key: &str| {
                    raw.trim_start()
                        .strip_prefix(key)
                        .map(|v| v.trim_end().to_owned())
                };
                if let Some(v) = value("Type: ") {
                    lu.device_type = v;
                } else if let Some(v) = value("SCSI ID: ") {
                    lu.scsi_id = v;
                } else if let Some(v) = value("SCSI SN: ") {
                    lu.scsi_sn = v;
                } else if let Some(v) = value("Size: ") {
                    let bs = v
                        .split_once("Block size: ")
                        .ok_or_else(|| bad("expected `Size: ..., Block size: N`"))?
                        .1;
                    lu.block_size = bs.parse().map_err(|_| bad("bad block size"))?;
                } else if let Some(v) = value("Backing store path: ") {
                    lu.backing_path = (v != "None").then(|| PathBuf::from(v));
                }
            }
            Section::Other => {}
        }
    }
    Ok(targets)
}

/// Parses the output of `tgtadm --lld iscsi --op show --mode conn --tid T`.
pub fn parse_show_conn(text: &str) -> Result<Vec<ConnInfo>, String> {
    let mut conns: Vec<ConnInfo> = Vec::new();
    let mut sid = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let bad = |what: &str| format!("line {}: {what}: {raw:?}", n + 1);
        if line.is_empty() {
            continue;
        } else if let Some(v) = line.strip_prefix("Session: ") {
            sid = Some(v.parse().map_err(|_| bad("bad session id"))?);
        } else if let Some(v) = line.strip_prefix("Connection: ") {
            conns.push(ConnInfo {
                sid: sid.ok_or_else(|| bad("connection outside a session"))?,
                cid: v.parse().map_err(|_| bad("bad connection id"))?,
                initiator: String::new(),
                address: String::new(),
            });
        } else if let Some(v) = line.strip_prefix("Initiator: ") {
            let c = conns
                .last_mut()
                .ok_or_else(|| bad("initiator outside a connection"))?;
            c.initiator = v.to_owned();
        } else if let Some(v) = line.strip_prefix("IP Address: ") {
            let c = conns
                .last_mut()
                .ok_or_else(|| bad("address outside a connection"))?;
            c.address = v.to_owned();
        }
    }
    Ok(conns)
}

/// Parses the output of `tgtadm --lld iscsi --op show --mode portal`
/// (`Portal: 127.0.0.1:3260,1`) into `ADDR:PORT` strings (IPv6 in
/// brackets), without the portal group tag.
pub fn parse_show_portals(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Portal: "))
        .map(|p| {
            p.rsplit_once(',')
                .map_or(p, |(addr, _tpgt)| addr)
                .to_owned()
        })
        .collect()
}

/// Replaces the connections of each nexus (as written at login) with the
/// live ones from `conns`, and adds sessions that only `conns` lists
/// (logged in between the two `tgtadm` calls).
pub fn merge_connections(mut nexuses: Vec<Nexus>, conns: &[ConnInfo]) -> Vec<Nexus> {
    for nexus in &mut nexuses {
        nexus.connections = conns
            .iter()
            .filter(|c| c.sid == nexus.sid)
            .map(|c| c.cid)
            .collect();
        nexus.connections.sort_unstable();
    }
    for c in conns {
        match nexuses.iter_mut().find(|n| n.sid == c.sid) {
            Some(_) => {}
            None => nexuses.push(Nexus {
                sid: c.sid,
                initiator: c.initiator.clone(),
                connections: vec![c.cid],
            }),
        }
    }
    nexuses
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tgtadm --lld iscsi --op show --mode target` from tgt 1.0.85 with one
    /// target and two sessions (`iscsi-perf -i ...:init-b`, then `init-a`),
    /// captured on the development machine.
    const SHOW_TWO_SESSIONS: &str = "\
Target 1: iqn.2026-11.invalid.fts-hil:test-t1
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 1
            Initiator: iqn.2026-11.invalid.fts-hil:init-b alias: none
            Connection: 0
                IP Address: 127.0.0.1
        I_T nexus: 2
            Initiator: iqn.2026-11.invalid.fts-hil:init-a alias: none
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            SCSI SN: beaf10
            Size: 0 MB, Block size: 1
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: null
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            SCSI ID: ftshil-1
            SCSI SN: FTSHIL0001
            Size: 67 MB, Block size: 4096
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: rdwr
            Backing store path: /tmp/tgtexp/lun1.img
            Backing store flags: 
    Account information:
    ACL information:
        ALL
";

    /// `tgtadm --lld iscsi --op show --mode target` from tgt 1.0.85 with two
    /// targets and no sessions: the first with a LU identified as the rig
    /// does, the second without LUs and with `nop_interval`/`nop_count` set
    /// (which adds `Nop` lines), captured on the development machine.
    const SHOW_TWO_TARGETS: &str = "\
Target 1: iqn.2026-11.invalid.fts-hil:4242-20001-t1
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            SCSI SN: beaf10
            Size: 0 MB, Block size: 1
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: null
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            SCSI ID: f000010924e2100010123456789abcde
            SCSI SN: HIL000010924e2100010123456789abcde
            Size: 1 MB, Block size: 512
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: rdwr
            Backing store path: /tmp/tgtexp/a.img
            Backing store flags: 
    Account information:
    ACL information:
        ALL
Target 2: iqn.2026-11.invalid.fts-hil:4242-20001-t2
    System information:
        Driver: iscsi
        State: ready
        Nop interval: 5
        Nop count: 3
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00020000
            SCSI SN: beaf20
            Size: 0 MB, Block size: 1
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: null
            Backing store path: None
            Backing store flags: 
    Account information:
    ACL information:
";

    /// `tgtadm --lld iscsi --op show --mode conn --tid 1` from tgt 1.0.85
    /// with two sessions (newest first, as tgt lists them).
    const SHOW_CONN: &str = "\
Session: 2
    Connection: 0
        Initiator: iqn.2026-11.invalid.fts-hil:init-b
        IP Address: 127.0.0.1
Session: 1
    Connection: 0
        Initiator: iqn.2026-11.invalid.fts-hil:init-a
        IP Address: 127.0.0.1
";

    #[test]
    fn parses_real_show_with_two_sessions() {
        let targets = parse_show_target(SHOW_TWO_SESSIONS).unwrap();
        assert_eq!(targets.len(), 1);
        let t = &targets[0];
        assert_eq!(t.tid, 1);
        assert_eq!(t.iqn, "iqn.2026-11.invalid.fts-hil:test-t1");
        assert_eq!(
            t.nexuses,
            vec![
                Nexus {
                    sid: 1,
                    initiator: "iqn.2026-11.invalid.fts-hil:init-b".into(),
                    connections: vec![0],
                },
                Nexus {
                    sid: 2,
                    initiator: "iqn.2026-11.invalid.fts-hil:init-a".into(),
                    connections: vec![0],
                },
            ]
        );
        assert_eq!(t.lus.len(), 2);
        assert_eq!(
            t.lus[0],
            LuInfo {
                lun: 0,
                device_type: "controller".into(),
                scsi_id: "IET     00010000".into(),
                scsi_sn: "beaf10".into(),
                block_size: 1,
                backing_path: None,
            }
        );
        assert_eq!(
            t.lus[1],
            LuInfo {
                lun: 1,
                device_type: "disk".into(),
                scsi_id: "ftshil-1".into(),
                scsi_sn: "FTSHIL0001".into(),
                block_size: 4096,
                backing_path: Some("/tmp/tgtexp/lun1.img".into()),
            }
        );
    }

    #[test]
    fn parses_two_targets_without_sessions() {
        let targets = parse_show_target(SHOW_TWO_TARGETS).unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].tid, 1);
        assert_eq!(targets[1].tid, 2);
        assert!(targets.iter().all(|t| t.nexuses.is_empty()));
        assert_eq!(targets[0].lus[1].block_size, 512);
        assert_eq!(
            targets[0].lus[1].backing_path.as_deref(),
            Some(Path::new("/tmp/tgtexp/a.img"))
        );
        assert_eq!(targets[1].iqn, "iqn.2026-11.invalid.fts-hil:4242-20001-t2");
        assert_eq!(targets[1].lus.len(), 1);
        assert_eq!(targets[1].lus[0].scsi_id, "IET     00020000");
        assert_eq!(
            targets[0].lus[1].scsi_id,
            "f000010924e2100010123456789abcde"
        );
        assert_eq!(
            targets[0].lus[1].scsi_sn,
            "HIL000010924e2100010123456789abcde"
        );
    }

    #[test]
    fn empty_show_is_no_targets() {
        assert_eq!(parse_show_target("").unwrap(), vec![]);
    }

    #[test]
    fn malformed_show_is_an_error() {
        assert!(parse_show_target("tgtadm: can't send the request to the tgt daemon, Transport endpoint is not connected\n").is_err());
        let bad_nexus = SHOW_TWO_SESSIONS.replace("I_T nexus: 2", "I_T nexus: two");
        let err = parse_show_target(&bad_nexus).unwrap_err();
        assert!(err.contains("line 10"), "{err}");
        assert!(parse_show_target("Target x: iqn.a\n").is_err());
        let bad_bs = SHOW_TWO_SESSIONS.replace("Block size: 4096", "Block size: big");
        assert!(parse_show_target(&bad_bs).is_err());
    }

    #[test]
    fn parses_real_show_conn() {
        let conns = parse_show_conn(SHOW_CONN).unwrap();
        assert_eq!(
            conns,
            vec![
                ConnInfo {
                    sid: 2,
                    cid: 0,
                    initiator: "iqn.2026-11.invalid.fts-hil:init-b".into(),
                    address: "127.0.0.1".into(),
                },
                ConnInfo {
                    sid: 1,
                    cid: 0,
                    initiator: "iqn.2026-11.invalid.fts-hil:init-a".into(),
                    address: "127.0.0.1".into(),
                },
            ]
        );
        assert_eq!(parse_show_conn("").unwrap(), vec![]);
        assert!(parse_show_conn("    Connection: 0\n").is_err());
        assert!(parse_show_conn("Session: x\n").is_err());
    }

    #[test]
    fn parses_portals_including_tgts_fallback() {
        assert_eq!(
            parse_show_portals("Portal: 127.0.0.1:13260,1\n"),
            vec!["127.0.0.1:13260"]
        );
        // What tgtd listens on when it cannot bind the portal it was given.
        assert_eq!(
            parse_show_portals("Portal: [::]:3260,1\nPortal: 0.0.0.0:3260,1\n"),
            vec!["[::]:3260", "0.0.0.0:3260"]
        );
    }

    #[test]
    fn merge_takes_live_connections() {
        let nexuses = parse_show_target(SHOW_TWO_SESSIONS)
            .unwrap()
            .remove(0)
            .nexuses;
        // Session 1 gained a second connection, session 2 lost its only
        // one, session 3 logged in after the target was shown.
        let conns = [
            ConnInfo {
                sid: 1,
                cid: 3,
                initiator: "b".into(),
                address: String::new(),
            },
            ConnInfo {
                sid: 1,
                cid: 0,
                initiator: "b".into(),
                address: String::new(),
            },
            ConnInfo {
                sid: 3,
                cid: 0,
                initiator: "iqn.c".into(),
                address: String::new(),
            },
        ];
        let merged = merge_connections(nexuses, &conns);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0].connections, vec![0, 3]);
        assert_eq!(merged[1].connections, Vec::<u32>::new());
        assert_eq!(
            merged[2],
            Nexus {
                sid: 3,
                initiator: "iqn.c".into(),
                connections: vec![0],
            }
        );
    }

    #[test]
    fn lu_identities_are_hex_unique_and_fit() {
        let (id1, sn1) = lu_identity(4242, 20001, 1, 0x0123_4567_89ab_cdef);
        let (id2, sn2) = lu_identity(4242, 20001, 2, 0x0123_4567_89ab_cdef);
        let (id3, _) = lu_identity(4242, 20001, 1, 0x0123_4567_89ab_cdee);
        assert_eq!(id1.len(), 32);
        assert!(id1.chars().all(|c| c.is_ascii_hexdigit()), "{id1}");
        assert!(sn1.len() <= 36 && id1.len() <= 36);
        assert_ne!(id1, id2);
        assert_ne!(sn1, sn2);
        assert_ne!(id1, id3);
        // The NAA-6 designator uses all but the first digit: those differ too.
        assert_ne!(id1[1..], id2[1..]);
    }

    #[test]
    fn portal_strings() {
        assert_eq!(
            portal_string("127.0.0.1".parse().unwrap(), 3260),
            "127.0.0.1:3260"
        );
        assert_eq!(portal_string("::1".parse().unwrap(), 3260), "[::1]:3260");
    }

    /// `(tgtd, tgtadm)` when real-tgt tests can run; see [`available`].
    fn programs_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
        if !crate::skip::require(test, available()) {
            return None;
        }
        // available() found both.
        Some((
            crate::proc::find_program("tgtd").expect("tgtd"),
            crate::proc::find_program("tgtadm").expect("tgtadm"),
        ))
    }

    #[test]
    fn taken_portal_is_detected_as_a_collision() {
        let Some((tgtd, tgtadm)) = programs_or_skip("taken_portal_is_detected_as_a_collision")
        else {
            return;
        };
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let ctl = pick_control_port(unique_nonce(), 0);
        let ip = "127.0.0.1".parse().unwrap();
        let err = spawn_ready(&tgtd, None, &tgtadm, &dir.path().join("log"), ctl, ip, port)
            .expect_err("the portal is taken");
        // tgtd keeps running on its fallback portals; the rig notices.
        assert!(matches!(err, Error::PortalNotBound { .. }), "{err}");
        assert!(err.is_start_collision());
        assert!(lock_holder(ctl).is_none(), "the daemon was killed");
        remove_ipc_files(ctl);
    }

    #[test]
    fn taken_control_port_is_detected_as_a_collision() {
        let Some((tgtd, tgtadm)) =
            programs_or_skip("taken_control_port_is_detected_as_a_collision")
        else {
            return;
        };
        let first = Tgtd::start(TgtdOptions::default()).unwrap();
        let ctl = first.control_port();
        let dir = tempfile::tempdir().unwrap();
        let ip = "127.0.0.1".parse().unwrap();
        let port = pick_portal_port(ip).unwrap();
        let err = spawn_ready(&tgtd, None, &tgtadm, &dir.path().join("log"), ctl, ip, port)
            .expect_err("the control port is taken");
        // Either it exited at once or it was caught answering for the first.
        assert!(
            matches!(
                err,
                Error::DaemonExited { .. } | Error::ControlPortTaken { .. }
            ),
            "{err}"
        );
        assert!(err.is_start_collision(), "{err}");
        assert_eq!(lock_holder(ctl), i32::try_from(first.pid()).ok());
        assert_eq!(first.targets().unwrap(), vec![]);
    }

    #[test]
    fn log_tail_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        fs::write(&p, "x".repeat(LOG_TAIL) + "END").unwrap();
        let t = log_tail(&p);
        assert!(t.starts_with("[...]") && t.ends_with("END"));
        assert!(log_tail(&dir.path().join("missing")).contains("cannot read"));
    }
}
