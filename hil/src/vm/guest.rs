//! One qemu guest: its command line, its console and the commands it runs.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use super::init::{parse_marker, Marker};
use crate::Error;

/// Where Debian's qemu keeps qboot, the minimal firmware the guests boot
/// with (SeaBIOS stalls ~5 s probing a reserved LUN; qboot probes nothing).
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";

/// The kernel command line of every guest.
pub const KERNEL_CMDLINE: &str = "console=ttyS0 loglevel=3 panic=-1 edd=off rdinit=/init";

/// How many lines of the console log go into error messages.
const LOG_TAIL_LINES: usize = 40;

/// Everything the qemu command line of one guest depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuSpec {
    /// The guest kernel (bzImage).
    pub kernel: PathBuf,
    /// The guest's initramfs (newc archive).
    pub initrd: PathBuf,
    /// The firmware, normally [`QBOOT`].
    pub bios: PathBuf,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The kernel command line, normally [`KERNEL_CMDLINE`].
    pub append: String,
    /// The iSCSI portal, `127.0.0.1:PORT`.
    pub portal: String,
    /// The target's IQN.
    pub target_iqn: String,
    /// The LUN.
    pub lun: u32,
    /// This guest's initiator IQN: each guest is its own I_T nexus.
    pub initiator_name: String,
}

/// The `-blockdev` JSON of the shared LUN: QEMU's libiscsi driver (from
/// `qemu-block-extra`) with a per-guest initiator name.
pub fn iscsi_blockdev_json(spec: &QemuSpec) -> String {
    serde_json::json!({
        "driver": "iscsi",
        "node-name": "lun0",
        "transport": "tcp",
        "portal": spec.portal,
        "target": spec.target_iqn,
        "lun": spec.lun,
        "initiator-name": spec.initiator_name,
        "cache": { "direct": true, "no-flush": false },
    })
    .to_string()
}

/// The arguments of `qemu-system-x86_64` for one guest.
///
/// TCG (no KVM here), qboot, no default devices, the serial console on
/// stdio (the host's only channel to the guest), `-no-reboot` so a guest
/// that panics or gives up exits, and the shared LUN on virtio-scsi as
/// `scsi-block`: SCSI passthrough, so RESERVE, PERSISTENT RESERVE and
/// everything else the guest's sg driver sends reach the target. (`scsi-hd`
/// would emulate the disk and answer RESERVE/RELEASE itself: a false pass.)
pub fn qemu_args(spec: &QemuSpec) -> Vec<String> {
    let s = |x: &str| x.to_owned();
    vec![
        s("-nodefaults"),
        s("-no-user-config"),
        s("-accel"),
        s("tcg"),
        s("-cpu"),
        s("max"),
        s("-smp"),
        s("1"),
        s("-m"),
        spec.memory_mib.to_string(),
        s("-bios"),
        spec.bios.display().to_string(),
        s("-kernel"),
        spec.kernel.display().to_string(),
        s("-initrd"),
        spec.initrd.display().to_string(),
        s("-append"),
        spec.append.clone(),
        s("-display"),
        s("none"),
        s("-serial"),
        s("stdio"),
        s("-no-reboot"),
        s("-blockdev"),
        iscsi_blockdev_json(spec),
        s("-device"),
        s("virtio-scsi-pci,id=scsi0"),
        s("-device"),
        s("scsi-block,drive=lun0,bus=scsi0.0,channel=0,scsi-id=0,lun=0"),
    ]
}

/// What a guest command printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOutput {
    /// The command as sent.
    pub command: String,
    /// Its exit status (-1: unknown).
    pub status: i32,
    /// Its output lines (stdout and stderr interleaved).
    pub lines: Vec<String>,
}

impl CmdOutput {
    /// Ok when it exited 0; otherwise a message with its output.
    pub fn ok(self, guest: &str) -> Result<CmdOutput, String> {
        if self.status == 0 {
            Ok(self)
        } else {
            Err(format!(
                "{guest}: `{}` exited {}: {}",
                self.command,
                self.status,
                self.lines.join(" | ")
            ))
        }
    }
}

/// A running qemu guest. Dropping it kills (SIGKILL) and reaps qemu.
#[derive(Debug)]
pub struct Guest {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    rx: Receiver<Marker>,
    markers: Vec<Marker>,
    disconnected: bool,
    log_path: PathBuf,
    next_id: u64,
    commands: Vec<(u64, String)>,
    spawned: Instant,
    /// The guest's path to the target, pulled by a crash.
    cable: Option<crate::relay::Cable>,
}

impl Guest {
    /// Starts `qemu` with `args`; the console goes to `log_dir/<name>.console.log`
    /// (each line stamped with seconds since spawn) and qemu's own stderr
    /// to `log_dir/<name>.qemu.log`.
    pub fn spawn(name: &str, qemu: &Path, args: &[String], log_dir: &Path) -> Result<Guest, Error> {
        let log_path = log_dir.join(format!("{name}.console.log"));
        let err_path = log_dir.join(format!("{name}.qemu.log"));
        let mut log = File::create(&log_path).map_err(|source| Error::Io {
            action: "create",
            path: log_path.clone(),
            source,
        })?;
        let err = File::create(&err_path).map_err(|source| Error::Io {
            action: "create",
            path: err_path.clone(),
            source,
        })?;
        let mut cmd = Command::new(qemu);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err);
        let _ = writeln!(log, "# {}", crate::proc::describe(&cmd));
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            command: crate::proc::describe(&cmd),
            source,
        })?;
        let spawned = Instant::now();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\r', '\n']);
                let _ = writeln!(log, "[{:8.3}] {line}", spawned.elapsed().as_secs_f64());
                if let Some(m) = parse_marker(line) {
                    if tx.send(m).is_err() {
                        break;
                    }
                }
            }
            let _ = log.flush();
        });
        Ok(Guest {
            name: name.to_owned(),
            child: Some(child),
            stdin,
            rx,
            markers: Vec::new(),
            disconnected: false,
            log_path,
            next_id: 1,
            commands: Vec::new(),
            spawned,
            cable: None,
        })
    }

    /// Gives the guest the cable its qemu reaches the target through
    /// (see [`crate::relay`]); [`crate::Host::crash`] pulls it.
    pub fn attach_cable(&mut self, cable: crate::relay::Cable) {
        self.cable = Some(cable);
    }

    /// Pulls the guest's cable (nothing passes, nothing is closed), then
    /// kills qemu: a crash as the target sees one, with the session left
    /// hanging. Fails if the guest has no cable.
    pub fn crash(&mut self) -> Result<(), Error> {
        let cable = self.cable.as_ref().ok_or_else(|| Error::InvalidArgument {
            what: format!("guest {} has no cable to pull", self.name),
        })?;
        cable.cut();
        self.kill();
        Ok(())
    }

    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When qemu was started.
    pub fn spawned(&self) -> Instant {
        self.spawned
    }

    /// The console log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of the console log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines[start..].join("\n")
    }

    /// Every marker received so far.
    pub fn markers(&mut self) -> &[Marker] {
        self.drain();
        &self.markers
    }

    fn drain(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(m) => self.markers.push(m),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.disconnected = true;
                    break;
                }
            }
        }
    }

    /// Waits until a marker satisfies `pred` (markers already received
    /// count), for at most `timeout`; `what` names it in errors.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Marker) -> Option<T>,
    ) -> Result<T, Error> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            self.drain();
            for m in &self.markers[seen..] {
                if let Some(t) = pred(m) {
                    return Ok(t);
                }
                if let Marker::Fatal(why) = m {
                    return Err(self.failed(&format!("gave up ({why}) while waiting for {what}")));
                }
            }
            seen = self.markers.len();
            if self.disconnected {
                return Err(self.failed(&format!("qemu exited while waiting for {what}")));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "{what} on guest {} (console {}):\n{}",
                        self.name,
                        self.log_path.display(),
                        self.log_tail()
                    ),
                    waited: timeout,
                });
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(m) => self.markers.push(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.disconnected = true,
            }
        }
    }

    fn failed(&self, what: &str) -> Error {
        Error::Guest {
            guest: self.name.clone(),
            what: what.to_owned(),
            console: format!("{}:\n{}", self.log_path.display(), self.log_tail()),
        }
    }

    /// Starts `command` (one line of `sh`) in the background in the guest;
    /// returns its id for [`Guest::wait_exit`].
    pub fn start(&mut self, command: &str) -> Result<u64, Error> {
        if command.contains('\n') {
            return Err(Error::InvalidArgument {
                what: format!("guest command spans lines: {command:?}"),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        let line = format!("HIL-RUN {id} {command}\n");
        let stdin = self.stdin.as_mut().ok_or_else(|| Error::Guest {
            guest: self.name.clone(),
            what: "console input is closed".to_owned(),
            console: String::new(),
        })?;
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|source| Error::Io {
                action: "write a command to the console of",
                path: PathBuf::from(&self.name),
                source,
            })?;
        self.commands.push((id, command.to_owned()));
        Ok(id)
    }

    /// The output of command `id` so far.
    pub fn output(&mut self, id: u64) -> Vec<String> {
        self.drain();
        self.markers
            .iter()
            .filter_map(|m| match m {
                Marker::Out(i, l) if *i == id => Some(l.clone()),
                _ => None,
            })
            .collect()
    }

    /// Waits (at most `timeout`) for command `id` to finish.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Result<CmdOutput, Error> {
        let command = self
            .commands
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        let status = self.wait_for(&format!("command {id} `{command}`"), timeout, |m| match m {
            Marker::Exit(i, rc) if *i == id => Some(*rc),
            _ => None,
        })?;
        Ok(CmdOutput {
            command,
            status,
            lines: self.output(id),
        })
    }

    /// Runs `command` and waits for it.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<CmdOutput, Error> {
        let id = self.start(command)?;
        self.wait_exit(id, timeout)
    }

    /// Kills qemu with SIGKILL (as a host crash would) and reaps it.
    pub fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether qemu is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}
