//! VM mode of the rig: several qemu guests (TCG, no KVM needed) share one
//! iSCSI LUN served by a real `tgtd`, each through its own I_T nexus.
//!
//! Each guest attaches the LUN with QEMU's libiscsi block driver
//! (`qemu-block-extra`), a per-guest initiator name, `virtio-scsi-pci` and
//! `scsi-block`, i.e. SCSI passthrough: the guest kernel's `sg` driver and
//! fts's SG_IO transport run for real, and RESERVE / PERSISTENT RESERVE
//! conflicts between guests happen on the target.
//!
//! The guests run Debian's cloud kernel (fetched once with `apt-get
//! download` and cached, see [`kernel`]) and an initramfs written by the rig
//! ([`cpio`]) holding busybox (`busybox-static`), a statically linked fts
//! ([`build_static_fts`]), the kernel modules and an `/init` ([`init`]) that
//! takes commands from the host over the serial console. qboot replaces
//! SeaBIOS (which stalls seconds probing a reserved LUN).
//!
//! [`run`] boots a fresh set of guests for every scenario (one scenario's
//! dead or wedged guests cannot spoil the next), with the LU reset (PR state
//! gone: tgt keeps it past a killed guest) and reformatted from the host
//! in between:
//!
//! - **all-pairs**: every guest serves and puts a distinct random file to
//!   every other guest at once; every digest must match.
//! - **contention**: every guest serves, and clients on every guest open
//!   and close connections to the others in tight loops, while the host
//!   reads the Process Id Table without locking (`fts status --json` over
//!   libiscsi) and checks every snapshot (see [`check_snapshot`]).
//! - **holder-crash** (with `--lock pr`; see [`expand`] for why not scsi2):
//!   guest 0 takes the Process Id Table lock and holds it, showing
//!   progress; guest 1 serves and starts a put that waits for the lock;
//!   the host pulls guest 0's cable to the target and kills its qemu (the
//!   target keeps the session); the put must complete, and an independent
//!   witness on the host sees the lock change hands no sooner than the
//!   on-disk lock timeout (2 s) allows.

pub mod cpio;
pub mod guest;
pub mod init;
pub mod kernel;
use crate::proc;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::observer::{judge_takeover, Observer, ObserverOptions, Unit, Victim};
use crate::relay::Cable;
use crate::tgt::{Lun, Tgtd, TgtdOptions};
use crate::{Error, ScenarioReport};
pub use guest::{qemu_args, CmdOutput, Guest, QemuSpec, KERNEL_CMDLINE, QBOOT};
use init::Marker;

/// Every scenario, in the order [`run`] runs them.
pub const SCENARIOS: &[&str] = &["all-pairs", "contention", "holder-crash"];

/// What a scenario name runs on guests: `holder-crash` with persistent
/// reservations only. A guest cannot break a SCSI-2 RESERVE(6): QEMU's
/// virtio-scsi answers a LOGICAL UNIT RESET by resetting its emulated
/// device and never sends it to the target (a real HBA does).
pub fn expand(name: &str) -> Vec<&str> {
    match name {
        "holder-crash" => vec!["holder-crash-pr"],
        other => vec![other],
    }
}

/// The target triple of the static guest fts.
pub const GUEST_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Size of the shared LUN.
const LUN_BYTES: u64 = 128 << 20;
/// Logical block size of the shared LUN.
const LUN_BLOCK: u32 = 4096;
/// Guest memory (the initramfs, busybox, fts and the payloads live in RAM).
const GUEST_MEMORY_MIB: u32 = 384;
/// Bytes of each file in all-pairs (one file per ordered pair of guests).
const PAIR_BYTES: u64 = 4 << 20;
/// Connections per client loop in contention.
const CONTENTION_LOOPS: u32 = 12;
/// Client loops per ordered pair of guests in contention.
const CONTENTION_WORKERS: usize = 2;
/// How many "table full" refusals one client loop tolerates.
const MAX_FULL: u32 = 1000;
/// Bytes of the file guest 1 moves in holder-crash.
const CRASH_BYTES: u64 = 1 << 20;
/// Lock and lease timeouts formatted for holder-crash (ms).
const CRASH_LOCK_TIMEOUT_MS: u64 = 2000;
const CRASH_LEASE_TIMEOUT_MS: u64 = 3000;
/// How long one guest command that moves data may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a quick guest command (mkdir, sha256sum) may take.
const QUICK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one host-side fts command may take.
const HOST_FTS_TIMEOUT: Duration = Duration::from_secs(60);
/// Where the qemu modules of Debian's qemu live.
const QEMU_MODULE_DIRS: [&str; 2] = ["/usr/lib/x86_64-linux-gnu/qemu", "/usr/lib/qemu"];
/// What the host's and guests' fts print once `hold-lock` holds.
const HOLDING: &str = "holding the Process Id Table lock";

/// Options for [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmOptions {
    /// How many guests (at least 2).
    pub hosts: usize,
    /// Keep the work directory (initramfs images, console logs, tgtd log)
    /// and print where it is.
    pub keep: bool,
    /// The host-side fts (dynamically linked; dlopens libiscsi for the
    /// `iscsi://` URL): formats the LUN and reads it during contention.
    pub host_fts: PathBuf,
    /// The statically linked fts that goes into the guests
    /// ([`build_static_fts`]).
    pub guest_fts: PathBuf,
    /// Parent of the work directory (default: the system's temporary
    /// directory).
    pub work_dir: Option<PathBuf>,
    /// How long a guest may take from qemu's start to `HIL-READY`.
    pub boot_timeout: Duration,
}

impl VmOptions {
    /// Two hosts, nothing kept, a 60 s boot timeout.
    pub fn new(host_fts: PathBuf, guest_fts: PathBuf) -> VmOptions {
        VmOptions {
            hosts: 2,
            keep: false,
            host_fts,
            guest_fts,
            work_dir: None,
            boot_timeout: Duration::from_secs(60),
        }
    }
}

/// Checks whether the VM rig can run here: `qemu-system-x86_64` with the
/// libiscsi block driver (`qemu-system-x86`, `qemu-block-extra`), qboot,
/// a statically linked busybox (`busybox-static`), tgt, and root.
///
/// As [`crate::tgt::available`], the message says that CI must fix rather
/// than skip this when the environment variable `CI` is set.
pub fn available() -> Result<(), String> {
    let mut problems = Vec::new();
    if find_in_path("qemu-system-x86_64").is_none() {
        problems.push(
            "`qemu-system-x86_64` is not installed (apt-get install qemu-system-x86)".to_owned(),
        );
    }
    if qemu_iscsi_module().is_none() {
        problems.push(
            "QEMU's iSCSI block driver (block-iscsi.so) is not installed (apt-get install qemu-block-extra)"
                .to_owned(),
        );
    }
    if !Path::new(QBOOT).is_file() {
        problems.push(format!(
            "{QBOOT} is missing (apt-get install qemu-system-x86)"
        ));
    }
    match static_busybox() {
        Ok(_) => {}
        Err(why) => problems.push(why),
    }
    if let Err(why) = crate::tgt::available() {
        problems.push(why);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        problems.push(format!("not root (euid {euid})"));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let msg = format!("VM rig unavailable: {}", problems.join("; "));
    if std::env::var_os("CI").is_some() {
        Err(format!(
            "{msg}. CI is set, so this is a failure, not a skip: run `cargo xtask setup --vm` as root"
        ))
    } else {
        Err(msg)
    }
}

/// The directory where the guest kernel is cached: `$FTS_HIL_VM_CACHE`, else
/// `$CARGO_TARGET_DIR/hil-vm-cache`, else `target/hil-vm-cache` of this
/// workspace.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FTS_HIL_VM_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d).join("hil-vm-cache");
    }
    workspace_root().join("target").join("hil-vm-cache")
}

/// The workspace this crate was built in.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Builds the statically linked fts for the guests:
/// `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p
/// fts-cli --target x86_64-unknown-linux-gnu --target-dir target/hil-static`
/// (the explicit `--target` keeps RUSTFLAGS away from build scripts and
/// proc macros), without debug info and stripped, so that the initramfs
/// stays small. Returns the binary, checked to have no ELF interpreter.
pub fn build_static_fts(workspace_root: &Path) -> Result<PathBuf, Error> {
    let target_dir = workspace_root.join("target").join("hil-static");
    let mut cmd = cargo(workspace_root);
    cmd.args([
        "build",
        "--release",
        "-p",
        "fts-cli",
        "--bin",
        "fts",
        "--target",
        GUEST_TRIPLE,
    ])
    .arg("--target-dir")
    .arg(&target_dir)
    .env("RUSTFLAGS", "-C target-feature=+crt-static");
    proc::run_capture(&mut cmd, Duration::from_secs(1800))?;
    let bin = target_dir.join(GUEST_TRIPLE).join("release").join("fts");
    match elf_is_static(&bin) {
        Ok(true) => Ok(bin),
        Ok(false) => Err(Error::Provision {
            what: format!(
                "{} is dynamically linked despite +crt-static",
                bin.display()
            ),
        }),
        Err(why) => Err(Error::Provision { what: why }),
    }
}

/// Builds the host-side fts (dynamically linked, as users run it) into
/// `target/hil-static/release/fts` with the same profile settings as
/// [`build_static_fts`], so the two builds share build-script outputs and
/// neither waits for a lock on the workspace's main target directory (which
/// `cargo test` may hold while tests run).
pub fn build_host_fts(workspace_root: &Path) -> Result<PathBuf, Error> {
    let target_dir = workspace_root.join("target").join("hil-static");
    let mut cmd = cargo(workspace_root);
    cmd.args(["build", "--release", "-p", "fts-cli", "--bin", "fts"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS");
    proc::run_capture(&mut cmd, Duration::from_secs(1800))?;
    Ok(target_dir.join("release").join("fts"))
}

fn cargo(workspace_root: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    cmd
}

/// Whether the ELF file at `path` has no program interpreter (`PT_INTERP`),
/// i.e. runs without a dynamic loader.
pub fn elf_is_static(path: &Path) -> Result<bool, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = || format!("{} is not a 64-bit little-endian ELF file", path.display());
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err(bad());
    }
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(bad)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(bad)?);
    for i in 0..phnum {
        const PT_INTERP: u32 = 3;
        if u32_at(phoff + i * phentsize).ok_or_else(bad)? == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn qemu_iscsi_module() -> Option<PathBuf> {
    QEMU_MODULE_DIRS
        .iter()
        .map(|d| Path::new(d).join("block-iscsi.so"))
        .find(|p| p.is_file())
}

/// The statically linked busybox (`busybox-static` installs it as
/// `/bin/busybox`; the dynamic `busybox` package would not run in the
/// guest).
fn static_busybox() -> Result<PathBuf, String> {
    let bb = find_in_path("busybox")
        .ok_or("`busybox` is not installed (apt-get install busybox-static)")?;
    match elf_is_static(&bb) {
        Ok(true) => Ok(bb),
        Ok(false) => Err(format!(
            "{} is dynamically linked (apt-get install busybox-static)",
            bb.display()
        )),
        Err(why) => Err(why),
    }
}

/// The initramfs of guest `name`: busybox, fts, the modules and `/init`.
pub fn initramfs(name: &str, busybox: &[u8], fts: &[u8], modules: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut a = cpio::Newc::new();
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "srv",
        "lib",
        "lib/modules",
    ] {
        a.dir(d, 0o755);
    }
    a.char_dev("dev/console", 0o600, 5, 1);
    a.file("bin/busybox", 0o755, busybox);
    a.file("bin/fts", 0o755, fts);
    for (m, bytes) in modules {
        a.file(&format!("lib/modules/{m}.ko"), 0o644, bytes);
    }
    let script = init::init_script(&init::InitConfig {
        name: name.to_owned(),
        modules: modules.iter().map(|(m, _)| m.clone()).collect(),
        device_wait_s: 30,
    });
    a.file("init", 0o755, script.as_bytes());
    a.finish()
}

/// The guest names: `g0`, `g1`, ...
pub fn guest_name(i: usize) -> String {
    format!("g{i}")
}

/// The initiator IQN of guest `name` (each guest is its own I_T nexus).
pub fn guest_initiator(name: &str) -> String {
    format!("{}:vm-{name}", crate::tgt::IQN_PREFIX)
}

/// Boots the guests, runs `scenarios` (empty: all of [`SCENARIOS`]) and
/// returns one report per scenario, printing each as it finishes.
///
/// Starts its own `tgtd` with one LUN. Before each scenario the LU is reset
/// (its PR state forgotten) and formatted from the host, and `hosts` fresh
/// guests are booted; each must see the LUN with the host's VPD 0x83
/// identity. A scenario that fails is reported as failed and the next one
/// runs; an `Err` means the rig itself could not be set up. Every qemu is
/// killed and reaped and tgtd stopped on every path, panics included.
pub fn run(opts: &VmOptions, scenarios: &[&str]) -> Result<Vec<ScenarioReport>, Error> {
    if opts.hosts < 2 {
        return Err(Error::InvalidArgument {
            what: format!("--hosts {}: the VM rig needs at least 2", opts.hosts),
        });
    }
    let scenarios: Vec<&str> = if scenarios.is_empty() {
        SCENARIOS.to_vec()
    } else {
        scenarios.to_vec()
    };
    let scenarios: Vec<&str> = scenarios.into_iter().flat_map(expand).collect();
    if scenarios.contains(&"holder-crash-scsi2") {
        return Err(Error::InvalidArgument {
            what: "holder-crash-scsi2 cannot run on guests: QEMU answers a guest's LOGICAL UNIT \
                   RESET itself (virtio-scsi resets its emulated device) and never sends it to the \
                   target, so a dead holder's RESERVE(6) cannot be broken from inside a guest; the \
                   namespace rig runs it"
                .into(),
        });
    }
    let known: Vec<&str> = SCENARIOS.iter().flat_map(|s| expand(s)).collect();
    if let Some(bad) = scenarios.iter().find(|s| !known.contains(s)) {
        return Err(Error::InvalidArgument {
            what: format!(
                "unknown VM scenario {bad:?} (known: {})",
                SCENARIOS.join(", ")
            ),
        });
    }
    available().map_err(|what| Error::Provision { what })?;
    let mut rig = Rig::new(opts)?;
    let mut reports = Vec::new();
    for (i, name) in scenarios.iter().enumerate() {
        let report = rig.scenario(name, i > 0);
        println!("{report}");
        reports.push(report);
    }
    rig.finish();
    Ok(reports)
}

/// The rig's state across scenarios.
struct Rig<'a> {
    opts: &'a VmOptions,
    qemu: PathBuf,
    kernel: kernel::GuestKernel,
    initrds: Vec<PathBuf>,
    // Field order is drop order: guests (held by the scenarios) are gone
    // before tgtd stops, and tgtd before the work directory goes.
    tgtd: Tgtd,
    lun: Lun,
    host_identity: String,
    host_designators: Vec<String>,
    work: Option<tempfile::TempDir>,
    work_path: PathBuf,
}

impl<'a> Rig<'a> {
    fn new(opts: &'a VmOptions) -> Result<Rig<'a>, Error> {
        let qemu = find_in_path("qemu-system-x86_64").ok_or(Error::ProgramNotFound {
            program: "qemu-system-x86_64",
            package: "qemu-system-x86",
        })?;
        match elf_is_static(&opts.guest_fts) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Provision {
                    what: format!(
                    "guest fts {} is dynamically linked; build it with hil::vm::build_static_fts",
                    opts.guest_fts.display()
                ),
                })
            }
            Err(what) => return Err(Error::Provision { what }),
        }
        let parent = opts.work_dir.clone().unwrap_or_else(std::env::temp_dir);
        fs::create_dir_all(&parent).map_err(|source| Error::Io {
            action: "create work directory",
            path: parent.clone(),
            source,
        })?;
        let work = tempfile::Builder::new()
            .prefix("fts-hil-vm-")
            .tempdir_in(&parent)
            .map_err(|source| Error::Io {
                action: "create a temporary directory in",
                path: parent.clone(),
                source,
            })?;
        let work_path = work.path().to_path_buf();

        let kernel = kernel::guest_kernel(&cache_dir())?;
        let read = |p: &Path| {
            fs::read(p).map_err(|source| Error::Io {
                action: "read",
                path: p.to_path_buf(),
                source,
            })
        };
        let busybox = read(&static_busybox().map_err(|what| Error::Provision { what })?)?;
        let fts = read(&opts.guest_fts)?;
        let mut modules = Vec::new();
        for (m, p) in kernel::GUEST_MODULES.iter().zip(&kernel.modules) {
            modules.push(((*m).to_owned(), read(p)?));
        }
        let mut initrds = Vec::new();
        for i in 0..opts.hosts {
            let name = guest_name(i);
            let path = work_path.join(format!("{name}.initrd"));
            fs::write(&path, initramfs(&name, &busybox, &fts, &modules)).map_err(|source| {
                Error::Io {
                    action: "write",
                    path: path.clone(),
                    source,
                }
            })?;
            initrds.push(path);
        }

        let mut tgtd = Tgtd::start(TgtdOptions::default())?;
        let lun = tgtd.add_lun(LUN_BYTES, LUN_BLOCK)?;
        let mut rig = Rig {
            opts,
            qemu,
            kernel,
            initrds,
            tgtd,
            lun,
            host_identity: String::new(),
            host_designators: Vec::new(),
            work: Some(work),
            work_path,
        };
        let inq = rig.host_fts("hil-fmt", &["scsi", "inquiry"])?;
        let lines: Vec<String> = inq.lines().map(str::to_owned).collect();
        rig.host_identity = init::inquiry_identity(&lines).ok_or_else(|| Error::Provision {
            what: format!("the host's `fts scsi inquiry` printed no identity:\n{inq}"),
        })?;
        rig.host_designators = init::inquiry_designators(&lines);
        Ok(rig)
    }

    /// Runs the host fts as `name` on the LUN.
    fn host_fts(&self, name: &str, args: &[&str]) -> Result<String, Error> {
        let mut cmd = Command::new(&self.opts.host_fts);
        cmd.args(["-d", &self.lun.url, "--name", name]).args(args);
        proc::run_capture(&mut cmd, HOST_FTS_TIMEOUT)
    }

    fn format(&self, extra: &[&str]) -> Result<(), Error> {
        let mut args = vec![
            "format",
            "--force",
            "--max-connections",
            "8",
            "--ring-entries",
            "32",
        ];
        args.extend_from_slice(extra);
        self.host_fts("hil-fmt", &args).map(drop)
    }

    fn spec(&self, i: usize) -> QemuSpec {
        QemuSpec {
            kernel: self.kernel.vmlinuz.clone(),
            initrd: self.initrds[i].clone(),
            bios: PathBuf::from(QBOOT),
            memory_mib: GUEST_MEMORY_MIB,
            append: KERNEL_CMDLINE.to_owned(),
            portal: self.tgtd.portal(),
            target_iqn: self.lun.iqn.clone(),
            lun: 1,
            initiator_name: guest_initiator(&guest_name(i)),
        }
    }

    /// Boots every guest in a directory of its own and waits until each is
    /// ready and sees the host's LUN. Returns the guests and the slowest
    /// boot (qemu start to `HIL-READY`).
    fn boot(&self, dir: &Path) -> Result<(Vec<Guest>, Duration), Error> {
        fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "create directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let mut guests = Vec::new();
        for i in 0..self.opts.hosts {
            // Each guest reaches tgtd through a cable of its own, which a
            // crash pulls (see `crate::relay`).
            let cable = Cable::new(&self.tgtd.portal())?;
            let mut spec = self.spec(i);
            spec.portal = cable.local();
            let mut guest = Guest::spawn(&guest_name(i), &self.qemu, &qemu_args(&spec), dir)?;
            guest.attach_cable(cable);
            guests.push(guest);
        }
        let mut slowest = Duration::ZERO;
        let mut initiators: Vec<(String, String)> = Vec::new();
        for g in &mut guests {
            let left = self.opts.boot_timeout.saturating_sub(g.spawned().elapsed());
            g.wait_for("HIL-READY", left, |m| {
                matches!(m, Marker::Ready).then_some(())
            })?;
            slowest = slowest.max(g.spawned().elapsed());
            let inq: Vec<String> = g
                .markers()
                .iter()
                .filter_map(|m| match m {
                    Marker::Inquiry(l) => Some(l.clone()),
                    _ => None,
                })
                .collect();
            let identity = init::inquiry_identity(&inq);
            let designators = init::inquiry_designators(&inq);
            if identity.as_deref() != Some(self.host_identity.as_str())
                || designators != self.host_designators
            {
                return Err(Error::Provision {
                    what: format!(
                        "guest {} sees identity {identity:?} {designators:?}, the host sees {:?} {:?}; its inquiry:\n{}",
                        g.name(),
                        self.host_identity,
                        self.host_designators,
                        inq.join("\n")
                    ),
                });
            }
            // fts's SG_IO initiator name (from the host name) makes its PR
            // key: two guests with one name would preempt each other.
            let initiator = inq
                .iter()
                .find_map(|l| l.trim().strip_prefix("initiator:"))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default();
            if let Some((other, _)) = initiators.iter().find(|(_, i)| *i == initiator) {
                return Err(Error::Provision {
                    what: format!(
                        "guests {other} and {} have the same fts initiator {initiator:?} (hence the same PR key)",
                        g.name()
                    ),
                });
            }
            initiators.push((g.name().to_owned(), initiator));
        }
        Ok((guests, slowest))
    }

    fn scenario(&mut self, name: &str, reset: bool) -> ScenarioReport {
        let mut report = ScenarioReport {
            name: name.to_owned(),
            hosts: self.opts.hosts,
            bytes: 0,
            elapsed: Duration::ZERO,
            result: Err(String::new()),
        };
        let extra: Vec<String> = match name {
            "holder-crash-pr" => vec![
                "--lock-timeout-ms".into(),
                CRASH_LOCK_TIMEOUT_MS.to_string(),
                "--lease-timeout-ms".into(),
                CRASH_LEASE_TIMEOUT_MS.to_string(),
            ],
            _ => Vec::new(),
        };
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let prepared = (|| {
            if reset {
                self.tgtd.reset_lun(&self.lun)?;
            }
            self.format(&extra)?;
            self.boot(&self.work_path.join(name))
        })();
        let (mut guests, boot) = match prepared {
            Ok(x) => x,
            Err(e) => {
                report.result = Err(format!("provisioning failed: {e}"));
                return report;
            }
        };
        let start = Instant::now();
        let outcome = match name {
            "all-pairs" => all_pairs(&mut guests),
            "contention" => contention(&mut guests, self),
            _ => holder_crash(&mut guests, self, "pr"),
        };
        report.elapsed = start.elapsed();
        drop(guests);
        let boot = format!("boot {:.1}s", boot.as_secs_f64());
        match outcome {
            Ok(o) => {
                report.bytes = o.bytes;
                report.result = Ok(format!("{}; {boot}", o.figures));
            }
            Err(why) => {
                report.bytes = 0;
                report.result = Err(format!(
                    "{why} ({boot}; consoles in {}{})",
                    self.work_path.join(name).display(),
                    if self.opts.keep {
                        ""
                    } else {
                        ", removed: use keep"
                    }
                ));
            }
        }
        report
    }

    fn finish(mut self) {
        if self.opts.keep {
            let _ = fs::write(self.work_path.join("tgtd.log"), self.tgtd.log());
            if let Some(w) = self.work.take() {
                let p = w.keep();
                println!("hil vm: kept {}", p.display());
            }
        }
    }
}

/// What a passing scenario moved and measured.
struct Outcome {
    bytes: u64,
    figures: String,
}

fn s(e: Error) -> String {
    e.to_string()
}

/// Starts the fts server of every guest (root `/srv/in`); returns the ids.
fn start_servers(guests: &mut [Guest]) -> Result<Vec<u64>, String> {
    guests
        .iter_mut()
        .map(|g| {
            let name = g.name().to_owned();
            g.start(&format!(
                "mkdir -p /srv/in && exec fts -d \"$DEV\" -n {name} serve --root /srv/in"
            ))
            .map_err(s)
        })
        .collect()
}

/// Fails if a server has exited.
fn check_servers(guests: &mut [Guest], ids: &[u64]) -> Result<(), String> {
    for (g, &id) in guests.iter_mut().zip(ids) {
        let exited = g
            .markers()
            .iter()
            .any(|m| matches!(m, Marker::Exit(i, _) if *i == id));
        if exited {
            let out = g.output(id).join(" | ");
            return Err(format!("the server on {} exited: {out}", g.name()));
        }
    }
    Ok(())
}

/// The sha256 digests printed by `sha256sum`: file name → digest.
fn digests(lines: &[String]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let d = w.next()?;
            let f = w.next()?;
            (d.len() == 64).then(|| (f.rsplit('/').next().unwrap_or(f).to_owned(), d.to_owned()))
        })
        .collect()
}

/// all-pairs: every guest puts a distinct random file to every other
/// guest, all at once.
fn all_pairs(guests: &mut [Guest]) -> Result<Outcome, String> {
    let n = guests.len();
    let names: Vec<String> = guests.iter().map(|g| g.name().to_owned()).collect();
    let servers = start_servers(guests)?;
    // Payloads: /tmp/to-<peer> on each guest, made at once on all guests.
    let mut ids = Vec::new();
    for (k, g) in guests.iter_mut().enumerate() {
        let files: Vec<String> = (0..n)
            .filter(|&j| j != k)
            .map(|j| format!("/tmp/to-{}", names[j]))
            .collect();
        let mut cmd = String::new();
        for f in &files {
            cmd.push_str(&format!("head -c {PAIR_BYTES} /dev/urandom >{f} && "));
        }
        cmd.push_str(&format!("sha256sum {}", files.join(" ")));
        ids.push(g.start(&cmd).map_err(s)?);
    }
    let mut sent: BTreeMap<(usize, usize), String> = BTreeMap::new();
    for (k, (g, id)) in guests.iter_mut().zip(ids).enumerate() {
        let out = g.wait_exit(id, QUICK_TIMEOUT).map_err(s)?.ok(&names[k])?;
        let d = digests(&out.lines);
        for j in (0..n).filter(|&j| j != k) {
            let digest = d.get(&format!("to-{}", names[j])).ok_or_else(|| {
                format!(
                    "{}: no digest of to-{}: {:?}",
                    names[k], names[j], out.lines
                )
            })?;
            sent.insert((k, j), digest.clone());
        }
    }
    let t = Instant::now();
    let mut puts = Vec::new();
    for (k, g) in guests.iter_mut().enumerate() {
        for j in (0..n).filter(|&j| j != k) {
            let cmd = format!(
                "fts -d \"$DEV\" -n {me}-to-{peer} put {peer} /tmp/to-{peer} from-{me} --timeout 120",
                me = names[k],
                peer = names[j]
            );
            puts.push((k, g.start(&cmd).map_err(s)?));
        }
    }
    let mut failures = Vec::new();
    for (k, id) in puts {
        match guests[k]
            .wait_exit(id, CMD_TIMEOUT)
            .map_err(s)
            .and_then(|o| o.ok(&names[k]))
        {
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    }
    let transfer = t.elapsed();
    if !failures.is_empty() {
        check_servers(guests, &servers)?;
        return Err(failures.join("; "));
    }
    let mut checked = 0;
    for (j, g) in guests.iter_mut().enumerate() {
        let out = g
            .run("cd /srv/in && sha256sum from-*", QUICK_TIMEOUT)
            .map_err(s)?
            .ok(&names[j])?;
        let got = digests(&out.lines);
        for k in (0..n).filter(|&k| k != j) {
            let want = &sent[&(k, j)];
            match got.get(&format!("from-{}", names[k])) {
                Some(d) if d == want => checked += 1,
                Some(d) => {
                    return Err(format!(
                        "{} -> {}: digest {d} received, {want} sent",
                        names[k], names[j]
                    ))
                }
                None => return Err(format!("{} -> {}: file missing", names[k], names[j])),
            }
        }
    }
    check_servers(guests, &servers)?;
    let bytes = PAIR_BYTES * (n * (n - 1)) as u64;
    Ok(Outcome {
        bytes,
        figures: format!(
            "{checked} transfers of {} KiB at once, all digests match, {:.1}s for all, {:.2} MiB/s aggregate",
            PAIR_BYTES >> 10,
            transfer.as_secs_f64(),
            bytes as f64 / (1 << 20) as f64 / transfer.as_secs_f64().max(1e-9)
        ),
    })
}

/// What the host's unlocked reader saw during contention.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollStats {
    /// Snapshots read and checked.
    pub snapshots: u64,
    /// `fts status` runs that failed.
    pub errors: u64,
    /// The most entries in use in one snapshot.
    pub max_in_use: usize,
    /// Distinct claims seen: (slot, generation) pairs.
    pub claims: usize,
    /// Every inconsistency found (empty: pass).
    pub violations: Vec<String>,
}

/// Checks one `fts status --json` snapshot of the Process Id Table against
/// the rules of the contention scenario and against what earlier snapshots
/// showed:
///
/// 1. every in-use entry belongs to a known client and is addressed to the
///    one server that client talks to (`expected`: requestor → requestee);
///    a mix-up means two claims wrote one entry;
/// 2. no requestor occupies two entries at once (each client loop has one
///    connection at a time, so a second entry is a double claim or a leak);
/// 3. one claim, (slot, generation), has one owner over the whole run
///    (`owners`), since every claim increments the slot's generation: two
///    requestors under one generation are two owners of one entry;
/// 4. a slot's generation never goes backwards (`last_gen`): a stale
///    rewrite of the table would.
///
/// Returns the violations found in this snapshot.
pub fn check_snapshot(
    json: &serde_json::Value,
    expected: &HashMap<String, String>,
    owners: &mut HashMap<(u64, u64), String>,
    last_gen: &mut HashMap<u64, u64>,
) -> Vec<String> {
    let mut v = Vec::new();
    let Some(conns) = json.get("connections").and_then(|c| c.as_array()) else {
        return vec![format!("snapshot without a connections array: {json}")];
    };
    let mut seen_requestors: HashMap<&str, u64> = HashMap::new();
    for c in conns {
        let slot = c.get("slot").and_then(|x| x.as_u64());
        let generation = c.get("generation").and_then(|x| x.as_u64());
        let requestor = c.get("requestor").and_then(|x| x.as_str());
        let requestee = c.get("requestee").and_then(|x| x.as_str());
        let (Some(slot), Some(generation), Some(requestor), Some(requestee)) =
            (slot, generation, requestor, requestee)
        else {
            v.push(format!("malformed entry {c}"));
            continue;
        };
        match expected.get(requestor) {
            None => v.push(format!("slot {slot}: unknown requestor {requestor:?}")),
            Some(want) if want != requestee => v.push(format!(
                "slot {slot} gen {generation}: {requestor} addresses {requestee:?}, not {want:?} (mixed claims)"
            )),
            Some(_) => {}
        }
        if let Some(other) = seen_requestors.insert(requestor, slot) {
            v.push(format!(
                "{requestor} occupies slots {other} and {slot} at once"
            ));
        }
        match owners.get(&(slot, generation)) {
            Some(o) if o != requestor => v.push(format!(
                "slot {slot} generation {generation} owned by {o} and by {requestor}"
            )),
            Some(_) => {}
            None => {
                owners.insert((slot, generation), requestor.to_owned());
            }
        }
        let last = last_gen.entry(slot).or_insert(generation);
        if generation < *last {
            v.push(format!(
                "slot {slot}: generation went back from {last} to {generation}"
            ));
        } else {
            *last = generation;
        }
    }
    v
}

/// Polls the table through the host's initiator until `stop`.
fn poll_table(
    host_fts: PathBuf,
    url: String,
    expected: HashMap<String, String>,
    stop: Arc<AtomicBool>,
) -> PollStats {
    let mut stats = PollStats::default();
    let mut owners = HashMap::new();
    let mut last_gen = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let mut cmd = Command::new(&host_fts);
        cmd.args(["-d", &url, "--name", "hil-reader", "status", "--json"]);
        let json = proc::run_capture(&mut cmd, HOST_FTS_TIMEOUT)
            .map_err(|e| e.to_string())
            .and_then(|out| {
                serde_json::from_str::<serde_json::Value>(&out).map_err(|e| e.to_string())
            });
        match json {
            Ok(j) => {
                stats.snapshots += 1;
                let in_use = j
                    .get("connections")
                    .and_then(|c| c.as_array())
                    .map_or(0, Vec::len);
                stats.max_in_use = stats.max_in_use.max(in_use);
                for e in check_snapshot(&j, &expected, &mut owners, &mut last_gen) {
                    if stats.violations.len() < 20 {
                        stats.violations.push(e);
                    }
                }
            }
            Err(e) => {
                stats.errors += 1;
                if stats.errors <= 3 {
                    stats.violations.push(format!("reader failed: {e}"));
                }
            }
        }
    }
    stats.claims = owners.len();
    stats
}

/// contention: clients on every guest connect to every other guest's
/// server in tight loops while the host reads the table.
fn contention(guests: &mut [Guest], rig: &Rig<'_>) -> Result<Outcome, String> {
    let n = guests.len();
    let names: Vec<String> = guests.iter().map(|g| g.name().to_owned()).collect();
    let servers = start_servers(guests)?;
    let mut expected = HashMap::new();
    let mut plan = Vec::new();
    for k in 0..n {
        for j in (0..n).filter(|&j| j != k) {
            for w in 0..CONTENTION_WORKERS {
                let client = format!("{}-c{w}-{}", names[k], names[j]);
                expected.insert(client.clone(), names[j].clone());
                plan.push((k, client, names[j].clone()));
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Stops the reader on every way out, panics included.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_guard = StopOnDrop(Arc::clone(&stop));
    let poller = {
        let (fts, url, exp, stop) = (
            rig.opts.host_fts.clone(),
            rig.lun.url.clone(),
            expected.clone(),
            Arc::clone(&stop),
        );
        thread::spawn(move || poll_table(fts, url, exp, stop))
    };
    let t = Instant::now();
    let mut workers = Vec::new();
    let mut failures = Vec::new();
    for (k, client, peer) in &plan {
        // Exit status 12 is "Process Id Table full": with more client
        // loops than entries that is expected; count it and try again.
        let cmd = format!(
            "i=0; full=0; while [ $i -lt {CONTENTION_LOOPS} ]; do \
             fts -d \"$DEV\" -n {client} dir {peer} --timeout 60 >/dev/null 2>/tmp/{client}.err; rc=$?; \
             if [ $rc = 0 ]; then i=$((i + 1)); \
             elif [ $rc = 12 ] && [ $full -lt {MAX_FULL} ]; then full=$((full + 1)); \
             else echo \"connection $i failed ($rc):\"; cat /tmp/{client}.err; exit 1; fi; \
             done; echo \"connections=$i full=$full\""
        );
        match guests[*k].start(&cmd) {
            Ok(id) => workers.push((*k, id)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let mut full = 0u64;
    for (k, id) in workers {
        match guests[k]
            .wait_exit(id, CMD_TIMEOUT)
            .map_err(s)
            .and_then(|o| o.ok(&names[k]))
        {
            Ok(o) => {
                full += o
                    .lines
                    .iter()
                    .filter_map(|l| l.split_once("full=")?.1.trim().parse::<u64>().ok())
                    .sum::<u64>();
            }
            Err(e) => failures.push(e),
        }
    }
    let busy = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let stats = poller
        .join()
        .map_err(|_| "the table reader panicked".to_owned())?;
    check_servers(guests, &servers)?;
    // Every client closed: nothing may be left in the table.
    let left = rig
        .host_fts("hil-reader", &["status", "--json"])
        .map_err(s)
        .and_then(|out| {
            serde_json::from_str::<serde_json::Value>(&out).map_err(|e| e.to_string())
        })?;
    let leftover = left
        .get("connections")
        .and_then(|c| c.as_array())
        .map_or(0, Vec::len);
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    if !stats.violations.is_empty() {
        return Err(format!(
            "table inconsistencies seen by the reader ({} snapshots): {}",
            stats.snapshots,
            stats.violations.join("; ")
        ));
    }
    if leftover != 0 {
        return Err(format!(
            "{leftover} entries left in the table after every client closed: {left}"
        ));
    }
    // The reader must actually have watched the contention (the same
    // thresholds as the namespace rig).
    if stats.snapshots < 5 || stats.claims < guests.len() {
        return Err(format!(
            "the host reader saw too little to prove anything: {} snapshots, {} entry generations",
            stats.snapshots, stats.claims
        ));
    }
    let connections = plan.len() as u64 * u64::from(CONTENTION_LOOPS);
    Ok(Outcome {
        bytes: 0,
        figures: format!(
            "{connections} connections by {} client loops in {:.1}s ({:.1}/s), {full} refused as table full and retried; reader: {} snapshots, {} claims seen, up to {} entries in use, 0 inconsistencies",
            plan.len(),
            busy.as_secs_f64(),
            connections as f64 / busy.as_secs_f64().max(1e-9),
            stats.snapshots,
            stats.claims,
            stats.max_in_use,
        ),
    })
}

/// holder-crash, once per lock kind: guest 0 holds the table lock (a live
/// holder showing progress) while guest 1 serves and starts a put that
/// waits for the lock; guest 0 then crashes (its cable to the target is
/// pulled, then qemu killed: the target keeps its session). The put must
/// complete with the same bytes, and the takeover must be seen by an
/// independent witness on the host (libiscsi, its own nexus) no sooner
/// than the lock allows, with nothing left on the LU at the end.
fn holder_crash(guests: &mut [Guest], rig: &Rig<'_>, lock: &str) -> Result<Outcome, String> {
    let (a, rest) = guests.split_first_mut().ok_or("no guests")?;
    let b = rest.first_mut().ok_or("holder-crash needs two guests")?;
    let (an, bn) = (a.name().to_owned(), b.name().to_owned());
    let lock_timeout = Duration::from_millis(CRASH_LOCK_TIMEOUT_MS);
    let witness = Observer::start(ObserverOptions {
        netns: None,
        url: rig.lun.url.clone(),
        initiator: "iqn.2026-11.invalid.fts-hil:witness".into(),
        interval: Duration::from_millis(20),
    })
    .map_err(s)?;
    let idle = witness.sample_after(Instant::now())?;
    if idle.holder.is_some() || !idle.keys.is_empty() || idle.unit == Unit::Conflict {
        return Err(format!("the LU is not idle before the scenario: {idle}"));
    }
    let out = b
        .run(
            &format!("mkdir -p /srv/in && head -c {CRASH_BYTES} /dev/urandom >/tmp/f && sha256sum /tmp/f"),
            QUICK_TIMEOUT,
        )
        .map_err(s)?
        .ok(&bn)?;
    let want = digests(&out.lines)
        .remove("f")
        .ok_or_else(|| format!("{bn}: no digest: {:?}", out.lines))?;
    let serve = b
        .start(&format!(
            "exec fts -d \"$DEV\" -n {bn} --lock {lock} serve --root /srv/in"
        ))
        .map_err(s)?;
    b.wait_for("the server", QUICK_TIMEOUT, |m| match m {
        Marker::Out(i, l) if *i == serve && l.contains("serving as") => Some(Ok(())),
        Marker::Exit(i, rc) if *i == serve => Some(Err(*rc)),
        _ => None,
    })
    .map_err(s)?
    .map_err(|rc| format!("{bn}: serve exited {rc}: {}", b.output(serve).join(" | ")))?;
    let hold = a
        .start(&format!(
            "exec fts -d \"$DEV\" -n {an} --lock {lock} hold-lock 600"
        ))
        .map_err(s)?;
    a.wait_for("hold-lock holding", QUICK_TIMEOUT, |m| match m {
        Marker::Out(i, l) if *i == hold && l.contains(HOLDING) => Some(Ok(())),
        Marker::Exit(i, rc) if *i == hold => Some(Err(*rc)),
        _ => None,
    })
    .map_err(s)?
    .map_err(|rc| {
        format!(
            "{an}: hold-lock exited {rc} before holding: {}",
            a.output(hold).join(" | ")
        )
    })?;
    let seen = witness.sample_after(Instant::now())?;
    let dead = match (lock, seen.holder) {
        ("scsi2", _) if seen.unit == Unit::Conflict => Victim::Reserve6,
        ("pr", Some((key, _))) if seen.keys.contains(&key) => Victim::Key(key),
        _ => {
            return Err(format!(
                "{an} says it holds the {lock} lock, but the witness sees: {seen}"
            ))
        }
    };
    let put = b
        .start(&format!(
            "fts -d \"$DEV\" -n {bn}-cli --lock {lock} put {bn} /tmp/f x --timeout 120"
        ))
        .map_err(s)?;
    thread::sleep(Duration::from_secs(1));
    let alive = witness.sample_after(Instant::now())?;
    if !dead.holds(&alive) {
        return Err(format!(
            "the live holder {an} lost its {dead} before the crash: {alive}"
        ));
    }
    let crash = Instant::now();
    crate::rig::Host::crash(a).map_err(|e| format!("crashing {an}: {e}"))?;
    let dead_iqn = guest_initiator(&an);
    let session_kept = |when: &str| -> Result<(), String> {
        let conns = rig.tgtd.connections(rig.lun.tid).map_err(s)?;
        if conns.iter().any(|c| c.initiator == dead_iqn) {
            Ok(())
        } else {
            Err(format!(
                "the target dropped {an}'s session {when}: the crash was not a crash"
            ))
        }
    };
    session_kept("right after the crash")?;
    let put_out = b.wait_exit(put, CMD_TIMEOUT).map_err(s)?;
    let recovery = crash.elapsed();
    session_kept("during the takeover")?;
    put_out
        .ok(&bn)
        .map_err(|e| format!("{e}; server: {}", b.output(serve).join(" | ")))?;
    let out = b
        .run("sha256sum /srv/in/x", QUICK_TIMEOUT)
        .map_err(s)?
        .ok(&bn)?;
    let got = digests(&out.lines).remove("x").unwrap_or_default();
    if got != want {
        return Err(format!("digest {got} received, {want} sent"));
    }
    let end = witness.sample_after(Instant::now())?;
    let timeline = witness.stop();
    // As in the namespace rig: the live holder's last progress was at most
    // a quarter lock timeout before the crash.
    let earliest = lock_timeout - lock_timeout / 4;
    let patience = if lock == "scsi2" {
        lock_timeout * 3
    } else {
        lock_timeout
    };
    let takeover = judge_takeover(
        &timeline,
        crash,
        dead,
        earliest,
        patience + Duration::from_secs(8),
    )?;
    if end.holder.is_some() || !end.keys.is_empty() || end.unit == Unit::Conflict {
        return Err(format!("something is left on the LU at the end: {end}"));
    }
    Ok(Outcome {
        bytes: CRASH_BYTES,
        figures: format!(
            "lock {lock}: {an} crashed holding the lock ({dead}); witness {takeover}; its session stayed on the target; at the end: {end}; {bn}'s {} KiB put completed {:.1}s after the crash (lock timeout {:.1}s)",
            CRASH_BYTES >> 10,
            recovery.as_secs_f64(),
            lock_timeout.as_secs_f64(),
        ),
    })
}
