//! Hosts as Linux network namespaces: the default rig.
//!
//! ```text
//!   ns ftshil-<pid>-san: bridge br0 10.231.0.1/24, tgtd (portal 10.231.0.1:3260)
//!          │ vs1          │ vs2          │ vs3        (veth ends, enslaved to br0)
//!          │              │              │
//!   ns ftshil-<pid>-h1   ftshil-<pid>-h2   ftshil-<pid>-h3
//!      vh 10.231.0.11     vh 10.231.0.12    vh 10.231.0.13
//! ```
//!
//! Every host is a namespace of its own with one veth link to the "SAN"
//! namespace, where tgtd serves the shared LUN; fts processes run in a
//! host's namespace with `ip netns exec`, each with its own iSCSI initiator
//! name (`iqn.2026-11.invalid.fts-hil:<host>.<fts name>`), so every process
//! is a separate I_T nexus as on separate machines. A host's link can be
//! taken down (link flap) and its processes killed (host crash). Only
//! addresses inside namespaces the rig creates are used.
//!
//! [`NetnsRig`]'s Drop tears everything down: processes in the rig's
//! namespaces are killed, tgtd stopped, namespaces deleted (which deletes
//! the veths), the work directory removed unless kept. A run that crashed
//! leaves namespaces named after its pid; [`cleanup_stale`] (called by
//! [`NetnsRig::provision`]) removes those whose pid is gone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proc;
use crate::rig::{HostOutput, Target, TgtTarget};
use crate::tgt::{Lun, Tgtd, TgtdOptions};
use crate::Error;

/// Prefix of every namespace the rig creates: `ftshil-<pid>-<role>`.
pub const PREFIX: &str = "ftshil-";

/// The SAN subnet (inside the rig's namespaces only).
const SAN_ADDR: &str = "10.231.0.1";

/// How to build a rig.
#[derive(Debug, Clone)]
pub struct NetnsOptions {
    /// Number of hosts (2..=200).
    pub hosts: usize,
    /// Keep the work directory (files, logs) after the run.
    pub keep: bool,
    /// The `fts` binary the hosts run.
    pub fts: PathBuf,
    /// Size of the shared LUN.
    pub lun_bytes: u64,
    /// Where files go (default: a temporary directory).
    pub work_dir: Option<PathBuf>,
}

/// One host of the rig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsHost {
    /// Host name, e.g. `h1`; also its fts server name.
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its address on the SAN link.
    pub addr: String,
    /// Its private directory (server root, source files).
    pub dir: PathBuf,
}

/// Ok when the machine can run the rig (root, `ip`, tgt); otherwise why not.
pub fn available() -> Result<(), String> {
    // SAFETY-free check of the effective uid through /proc.
    let uid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Err("the netns rig needs root (network namespaces, tgtd)".into());
    }
    if Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        return Err("`ip` (iproute2) is missing".into());
    }
    crate::tgt::available()
}

/// Deadline of every `ip` (and `kill`) the rig runs.
const IP_TIMEOUT: Duration = Duration::from_secs(30);

/// Deadline of a host-side fts command during provisioning (format, probe).
const FTS_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `ip ARGS...`; its standard output, or why it failed.
fn ip(args: &[&str]) -> Result<String, Error> {
    proc::run_capture(Command::new("ip").args(args), IP_TIMEOUT)
}

/// The rig's namespaces that exist now.
fn rig_namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills every process in a namespace (SIGKILL) and waits until they are
/// gone; false if some survived (e.g. stuck in uninterruptible sleep).
fn kill_namespace_processes(ns: &str) -> bool {
    for _ in 0..100 {
        let Ok(out) = ip(&["netns", "pids", ns]) else {
            return true;
        };
        let pids: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
        if pids.is_empty() {
            return true;
        }
        let _ = proc::run_output(Command::new("kill").arg("-9").args(&pids), IP_TIMEOUT);
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("hil: processes in namespace {ns} survived SIGKILL");
    false
}

/// Kills (SIGKILL) this process's direct children: the last-resort
/// teardown of qemu guests and tgtd daemons that live outside the rig's
/// namespaces (the VM rig).
fn kill_own_children() {
    let me = std::process::id().to_string();
    let Ok(dir) = fs::read_dir("/proc") else {
        return;
    };
    for e in dir.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            let _ = proc::run_output(Command::new("kill").args(["-9", &name]), IP_TIMEOUT);
        }
    }
}

/// Deletes this process's rig namespaces (killing what runs in them, tgtd
/// included): the teardown of last resort, for a run that is interrupted.
pub fn cleanup_own() -> Vec<String> {
    let own = format!("{PREFIX}{}-", std::process::id());
    let mut gone = Vec::new();
    // Hosts first, the SAN (tgtd) last.
    let mut mine: Vec<String> = rig_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&own))
        .collect();
    mine.sort_by_key(|n| n.ends_with("-san"));
    for ns in mine {
        kill_namespace_processes(&ns);
        let _ = ip(&["netns", "delete", &ns]);
        gone.push(ns);
    }
    gone
}

/// On SIGINT, SIGTERM or SIGHUP: kill this process's children (qemu
/// guests, tgtd daemons of the VM rig), tear down its namespaces
/// ([`cleanup_own`]) and exit 130, so an interrupted `cargo xtask hil`
/// leaves no namespace, veth, qemu or tgtd behind (temporary files and
/// tgtd's control socket files may remain). (Drop guards cover errors and
/// panics; a SIGKILLed run is cleaned up by the next one, see
/// [`cleanup_stale`].)
pub fn install_interrupt_handler() -> Result<(), Error> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|source| {
            Error::Io {
                action: "install signal handlers for",
                path: PathBuf::from("the rig"),
                source,
            }
        })?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("hil: interrupted (signal {sig}); tearing the rig down");
            kill_own_children();
            let gone = cleanup_own();
            eprintln!("hil: removed {}", gone.join(", "));
            std::process::exit(130);
        }
    });
    Ok(())
}

/// Deletes namespaces of earlier rig runs whose process is gone (a crashed
/// run), killing what still runs inside them (a tgtd, fts processes).
/// Returns the names deleted.
pub fn cleanup_stale() -> Vec<String> {
    let mut gone = Vec::new();
    for ns in rig_namespaces() {
        let pid = ns
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        // Our own pid cannot have a rig yet (pids get reused, e.g. in
        // containers): anything under it is stale too.
        if pid.is_some_and(|p| p != std::process::id() && pid_alive(p)) {
            continue;
        }
        kill_namespace_processes(&ns);
        let _ = ip(&["netns", "delete", &ns]);
        gone.push(ns);
    }
    gone
}

/// A provisioned rig: hosts, a SAN namespace with tgtd, one shared LUN.
#[derive(Debug)]
pub struct NetnsRig {
    /// The hosts, `h1`...
    pub hosts: Vec<NetnsHost>,
    /// The shared LUN as the hosts reach it.
    pub lun: Lun,
    /// Every host's view of the LUN's identity (VPD 0x83), all equal.
    pub identity: String,
    fts: PathBuf,
    san: String,
    namespaces: Vec<String>,
    target: Option<TgtTarget>,
    /// A second LUN for the `secondary` scenario, once added.
    secondary: Option<Lun>,
    work: PathBuf,
    keep: bool,
    _tmp: Option<tempfile::TempDir>,
}

impl NetnsRig {
    /// Creates the namespaces and links, starts tgtd in the SAN namespace,
    /// adds the LUN, and waits until every host sees it with the same
    /// identity. Anything created is removed again on failure.
    pub fn provision(opts: &NetnsOptions) -> Result<NetnsRig, Error> {
        if !(2..=200).contains(&opts.hosts) {
            return Err(Error::InvalidArgument {
                what: format!("hosts = {} (the rig needs 2 to 200)", opts.hosts),
            });
        }
        available().map_err(|what| Error::Provision { what })?;
        let stale = cleanup_stale();
        if !stale.is_empty() {
            eprintln!(
                "hil: removed namespaces left by a crashed run: {}",
                stale.join(", ")
            );
        }
        let (work, tmp) = match &opts.work_dir {
            Some(d) => {
                fs::create_dir_all(d).map_err(|source| Error::Io {
                    action: "create work directory",
                    path: d.clone(),
                    source,
                })?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("fts-hil-")
                    .tempdir()
                    .map_err(|source| Error::Io {
                        action: "create a temporary directory in",
                        path: std::env::temp_dir(),
                        source,
                    })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let base = format!("{PREFIX}{}", std::process::id());
        let san = format!("{base}-san");
        // The rig exists (for Drop) from the first namespace on.
        let mut rig = NetnsRig {
            hosts: Vec::new(),
            lun: Lun {
                tid: 0,
                iqn: String::new(),
                url: String::new(),
                backing: PathBuf::new(),
                size_bytes: 0,
                block_size: 0,
                scsi_id: String::new(),
                scsi_sn: String::new(),
            },
            identity: String::new(),
            fts: opts.fts.clone(),
            san: san.clone(),
            namespaces: Vec::new(),
            target: None,
            secondary: None,
            work: work.clone(),
            keep: opts.keep,
            _tmp: tmp,
        };
        rig.add_namespace(&san)?;
        ip(&["-n", &san, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &san,
            "addr",
            "add",
            &format!("{SAN_ADDR}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &san, "link", "set", "br0", "up"])?;
        ip(&["-n", &san, "link", "set", "lo", "up"])?;
        for i in 1..=opts.hosts {
            let name = format!("h{i}");
            let ns = format!("{base}-{name}");
            rig.add_namespace(&ns)?;
            let addr = format!("10.231.0.{}", 10 + i);
            let peer = format!("vs{i}");
            ip(&[
                "-n", &ns, "link", "add", "vh", "type", "veth", "peer", "name", &peer, "netns",
                &san,
            ])?;
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "vh"])?;
            ip(&["-n", &ns, "link", "set", "vh", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &san, "link", "set", &peer, "master", "br0"])?;
            ip(&["-n", &san, "link", "set", &peer, "up"])?;
            let dir = work.join(&name);
            fs::create_dir_all(dir.join("root")).map_err(|source| Error::Io {
                action: "create host directory",
                path: dir.clone(),
                source,
            })?;
            rig.hosts.push(NetnsHost {
                name,
                ns,
                addr,
                dir,
            });
        }
        let mut tgtd = Tgtd::start(TgtdOptions {
            portal_addr: SAN_ADDR.to_owned(),
            work_dir: Some(work.join("san")),
            netns: Some(san),
        })?;
        let lun = tgtd.add_lun(opts.lun_bytes, 4096)?;
        rig.lun = lun.clone();
        rig.target = Some(TgtTarget { tgtd, lun });
        rig.identity = rig.check_identity()?;
        Ok(rig)
    }

    fn add_namespace(&mut self, ns: &str) -> Result<(), Error> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        Ok(())
    }

    /// Every host asks the LUN for its identity (`fts scsi inquiry`); all
    /// must agree. Retries while links come up.
    fn check_identity(&self) -> Result<String, Error> {
        let mut seen: Vec<(String, String)> = Vec::new();
        for h in &self.hosts {
            let start = Instant::now();
            let id = loop {
                let out =
                    proc::run_raw(self.fts(h, "probe").args(["scsi", "inquiry"]), FTS_TIMEOUT);
                let text = out
                    .as_ref()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                if let Some(id) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("identity:"))
                    .map(|s| s.trim().to_owned())
                {
                    break id;
                }
                if start.elapsed() > Duration::from_secs(20) {
                    let why = match out {
                        Ok(o) => o.stderr,
                        Err(e) => e.to_string(),
                    };
                    return Err(Error::Provision {
                        what: format!(
                            "host {} does not see {}: {}",
                            h.name,
                            self.lun.url,
                            why.trim()
                        ),
                    });
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            seen.push((h.name.clone(), id));
        }
        let first = seen[0].1.clone();
        if let Some((name, id)) = seen.iter().find(|(_, id)| *id != first) {
            return Err(Error::Provision {
                what: format!(
                    "hosts see different LUNs: {} sees {first}, {name} sees {id}",
                    seen[0].0
                ),
            });
        }
        Ok(first)
    }

    /// The SAN namespace's name.
    pub fn san_namespace(&self) -> &str {
        &self.san
    }

    /// The rig's work directory.
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// The initiator name of fts process `name` on `host`.
    pub fn initiator(host: &NetnsHost, name: &str) -> String {
        format!(
            "iqn.2026-11.invalid.fts-hil:{}.{}",
            host.name,
            name.to_ascii_lowercase()
        )
    }

    /// `fts -d <LUN> -n NAME --initiator IQN` run inside `host`'s
    /// namespace; add the command and its arguments.
    pub fn fts(&self, host: &NetnsHost, name: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.ns])
            .arg(&self.fts)
            .args(["-d", &self.lun.url, "-n", name, "--initiator"])
            .arg(Self::initiator(host, name))
            .env_remove("FTS_DEVICE")
            .env_remove("FTS_NAME")
            .env_remove("FTS_INITIATOR")
            .env_remove("FTS_LOCK");
        c
    }

    /// Starts `host`'s server (fts name = host name) with root `host.dir/root`.
    pub fn serve(&self, host: &NetnsHost, extra: &[&str]) -> Result<Child, Error> {
        let log = host.dir.join("serve.log");
        let file = fs::File::create(&log).map_err(|source| Error::Io {
            action: "create",
            path: log.clone(),
            source,
        })?;
        let mut c = self.fts(host, &host.name);
        c.args(extra)
            .arg("serve")
            .arg("--root")
            .arg(host.dir.join("root"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        c.spawn().map_err(|source| Error::Spawn {
            command: format!("{c:?}"),
            source,
        })
    }

    /// Takes `host`'s link down or up.
    pub fn set_link(&self, host: &NetnsHost, up: bool) -> Result<(), Error> {
        ip(&[
            "-n",
            &host.ns,
            "link",
            "set",
            "vh",
            if up { "up" } else { "down" },
        ])
        .map(drop)
    }

    /// Kills every process of `host` (SIGKILL), as a crash would; false if
    /// some survived.
    pub fn kill_host(&self, host: &NetnsHost) -> bool {
        kill_namespace_processes(&host.ns)
    }

    /// The iSCSI connections the target has now (`tgtadm --op show --mode
    /// conn`): a crashed host's stay until the target notices.
    pub fn sessions(&self) -> Result<Vec<crate::tgt::ConnInfo>, Error> {
        match &self.target {
            Some(t) => t.tgtd.connections(t.lun.tid),
            None => Ok(Vec::new()),
        }
    }

    /// Resets the LUN (PR state and mode pages cleared; data kept) between
    /// scenarios: tgt keeps PR registrations of dead sessions.
    pub fn reset_lun(&mut self) -> Result<(), Error> {
        match &mut self.target {
            Some(t) => t.reset_lun(),
            None => Ok(()),
        }
    }

    /// A second LUN of the same target daemon, for a secondary device:
    /// added at the first call (of `bytes` bytes, 4 KiB blocks), the same
    /// LUN afterwards. `None` without a target (nothing to add it to).
    pub fn secondary_lun(&mut self, bytes: u64) -> Result<Option<Lun>, Error> {
        if let Some(l) = &self.secondary {
            return Ok(Some(l.clone()));
        }
        let Some(t) = &mut self.target else {
            return Ok(None);
        };
        let lun = t.tgtd.add_lun(bytes, 4096)?;
        self.secondary = Some(lun.clone());
        Ok(Some(lun))
    }

    /// Formats the LUN (from host 1) with the given extra `format` options.
    pub fn format(&self, extra: &[&str]) -> Result<(), Error> {
        let h = &self.hosts[0];
        proc::run_capture(
            self.fts(h, "hil-format")
                .args(["format", "--force", "--max-connections", "16"])
                .args(extra),
            FTS_TIMEOUT,
        )
        .map(drop)
    }
}

impl Drop for NetnsRig {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if *ns != self.san {
                kill_namespace_processes(ns);
            }
        }
        // tgtd lives in the SAN namespace: stop it properly first.
        drop(self.target.take());
        for ns in self.namespaces.iter().rev() {
            kill_namespace_processes(ns);
            let _ = ip(&["netns", "delete", ns]);
        }
        if self.keep {
            eprintln!("hil: kept {}", self.work.display());
            if let Some(t) = self._tmp.take() {
                let _ = t.keep();
            }
        }
    }
}

impl crate::rig::Host for NetnsHost {
    fn host_name(&self) -> &str {
        &self.name
    }

    fn run_shell(&mut self, command: &str, timeout: Duration) -> Result<HostOutput, Error> {
        let out = proc::run_output(
            Command::new("ip").args(["netns", "exec", &self.ns, "sh", "-c", command]),
            timeout,
        )?;
        Ok(HostOutput {
            status: out.status.code().unwrap_or(-1),
            text: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }

    fn crash(&mut self) -> Result<(), Error> {
        // Link first: the processes' sockets then die with nothing
        // reaching the target (no FIN, no RST), as in a power loss, and the
        // target keeps the session, its RESERVE(6) and its registrations.
        ip(&["-n", &self.ns, "link", "set", "vh", "down"])?;
        if !kill_namespace_processes(&self.ns) {
            return Err(Error::Provision {
                what: format!("processes of host {} survived SIGKILL", self.name),
            });
        }
        Ok(())
    }
}
