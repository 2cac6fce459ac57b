//! The LIO target of the rig: the Linux kernel SCSI target, configured with
//! `targetcli` (targetcli-fb), exporting one LUN over iSCSI to every rig
//! host, each through its own ACL.
//!
//! **For**: rig hosts that have configfs (`/sys/kernel/config`) and
//! `targetcli`. Where they are missing (as on the development machines and
//! CI), [`available`] says so and [`LioTarget::start`] fails with that
//! message before running anything: use the tgt target ([`crate::tgt`],
//! `--target tgt`) there.
//!
//! **Not for**: anything that must survive the process. The rig never runs
//! `saveconfig`; its objects live in configfs only and are deleted when the
//! [`LioTarget`] is dropped.
//!
//! The configuration is a pure function of a [`LioPlan`]:
//! [`LioPlan::setup_commands`], [`LioPlan::reset_commands`] and
//! [`LioPlan::teardown_commands`] return the `targetcli` command lines, so
//! they are unit-tested here without LIO. [`LioTarget`] runs them, one
//! `targetcli` process per command (targetcli-fb's one-shot mode: the
//! arguments are joined with spaces and run as one shell line; it exits
//! non-zero on any error, 0 otherwise, and does not save the configuration).
//!
//! ```no_run
//! use hil::lio::{Backstore, LioPlan, LioTarget};
//!
//! let plan = LioPlan::new(
//!     Backstore::FileIo { path: "/var/tmp/fts-lun.img".into(), size_bytes: 64 << 20 },
//!     vec!["iqn.2026-11.invalid.fts-hil:host-a".into(), "iqn.2026-11.invalid.fts-hil:host-b".into()],
//! );
//! plan.validate()?;
//! let mut lio = LioTarget::start(plan)?; // Err(Error::Provision) without configfs
//! // ... every host logs in to lio.url() ...
//! lio.reset_lun()?; // between scenarios: PR state gone, data kept
//! # Ok::<(), hil::Error>(())
//! ```
//!
//! # What the commands were checked against
//!
//! Debian 12 ships targetcli-fb 2.1.53, python3-rtslib-fb 2.1.75 and
//! python3-configshell-fb 1.1.28. The command syntax was read from those
//! sources (tags `v2.1.53` of open-iscsi/targetcli-fb, `v2.1.75` of
//! open-iscsi/rtslib-fb, `v1.1.28`–`v1.1.30` of open-iscsi/configshell-fb),
//! and every generated command line was run through configshell-fb 1.1.28's
//! own parser and matched against the targetcli 2.1.53 method it calls:
//!
//! - **One-shot mode** (`scripts/targetcli`, `main`): `targetcli ARGS...`
//!   runs `" ".join(ARGS)` as one line with `shell.run_cmdline`, prints any
//!   exception and exits 1, else exits 0, and only saves on exit in
//!   interactive mode. Commands go to the `targetclid` daemon only when the
//!   preference `auto_use_daemon` is set, which a fresh `TARGETCLI_HOME`
//!   does not. Because the arguments are joined with spaces, no
//!   name, path or IQN may contain white space ([`LioPlan::validate`]).
//! - **Line grammar** (configshell `ConfigShell.__init__`):
//!   `[PATH] COMMAND [PPARAM]* [KEY=VALUE]*`; a value is a word of
//!   letters, digits and `?;&*$!#,=_\+/.<>()~@:-%[]`. A path is letters,
//!   digits and `:_.[]-/`. The plan's characters are kept within both.
//! - **Preferences** live in `$TARGETCLI_HOME/prefs.bin` (default
//!   `~/.targetcli`) and `set global` writes them at once (configshell
//!   `Prefs.__setitem__` with `autosave`). [`LioTarget`] gives every run a
//!   private, temporary `TARGETCLI_HOME`, so the `set global` of the setup
//!   changes nobody else's preferences.
//! - `/backstores/fileio create name= file_or_dev= size= write_back=`
//!   (`UIFileIOBackstore.ui_command_create(name, file_or_dev, size=None,
//!   write_back=None, sparse=None, wwn=None)`): `size` is parsed by
//!   `human_to_bytes` (plain digits are bytes); an existing file keeps its
//!   own size; a missing one is created. `write_back=true` sets the
//!   attribute `emulate_write_cache=1` (WCE=1) and the control
//!   `fd_buffered_io=1` (rtslib `FileIOStorageObject._configure`), which can
//!   only be chosen at creation.
//! - `/backstores/block create name= dev= readonly=` (`UIBlockBackstore.
//!   ui_command_create(name, dev, readonly=None, wwn=None)`): no
//!   `write_back`; the kernel takes WCE from the device's own cache
//!   (iblock's `get_write_cache`) and refuses `emulate_write_cache=1`
//!   (`target_core_configfs.c`, `emulate_write_cache_store`).
//! - `wwn=` sets the unit serial (VPD page 80h, and the NAA designator of
//!   page 83h is made from it): [`LioPlan::unit_serial`] derives a fixed one
//!   so that the LUN keeps its identity across [`LioTarget::reset_lun`].
//! - `/backstores/KIND/NAME set attribute k=v ...` (`UIRTSLibNode.
//!   ui_setgroup_attribute`, configshell `ui_command_set(group,
//!   **parameter)`: several at once). The kernel refuses a new
//!   `block_size` once the device is exported (`block_size_store`: "Unable
//!   to change SE Device block_size while export_count is ..."; 512, 1024,
//!   2048 or 4096 only), so the attributes are set before the LUN exists.
//!   `emulate_tpu=1` is refused without discard support
//!   (`emulate_tpu_store`).
//! - `/iscsi create IQN` (`UIFabricModule.ui_command_create(wwn)`) makes
//!   the target and its TPG `tpg1`; with the default preferences it also
//!   enables the TPG and adds a portal on `0.0.0.0:3260`
//!   (`UIMultiTPGTarget.ui_command_create`). The rig turns both
//!   preferences off (`auto_enable_tpgt=false`,
//!   `auto_add_default_portal=false`) instead of deleting that portal
//!   afterwards: when something else (e.g. Debian's `tgt` service) holds
//!   port 3260, targetcli skips the default portal with only a log line,
//!   and a later `portals delete 0.0.0.0 3260` would then fail. The TPG is
//!   enabled last, once every ACL exists.
//! - IQNs are lower-cased by rtslib (`utils._cleanse_wwn`) and must match
//!   `iqn\.[0-9]{4}-[0-1][0-9]\..*\..*` with no space or `_`
//!   (`utils.normalize_wwn`); [`LioPlan::validate`] insists on lower case so
//!   that the paths the rig builds are the ones targetcli shows.
//! - `/iscsi/IQN/tpg1 set attribute authentication=0 generate_node_acls=0
//!   demo_mode_write_protect=0 prod_mode_write_protect=0`
//!   (`UITPG.ui_desc_attributes`).
//! - `/iscsi/IQN/tpg1/portals create IP PORT` (`UIPortals.
//!   ui_command_create(ip_address, ip_port)`; an address without `.` is
//!   put in brackets as IPv6; link-local IPv6 is not supported).
//! - `/iscsi/IQN/tpg1/luns create /backstores/KIND/NAME lun=0
//!   add_mapped_luns=false` (`UILUNs.ui_command_create(storage_object,
//!   lun=None, add_mapped_luns=None)`).
//! - `/iscsi/IQN/tpg1/acls create INITIATOR add_mapped_luns=false`
//!   (`UINodeACLs.ui_command_create(wwn, add_mapped_luns=None)`; without
//!   the parameter the global `auto_add_mapped_luns` decides).
//! - `/iscsi/IQN/tpg1/acls/INITIATOR create mapped_lun=0
//!   tpg_lun_or_backstore=lun0 write_protect=0`
//!   (`UINodeACL.ui_command_create(mapped_lun, tpg_lun_or_backstore,
//!   write_protect=None)`). `write_protect` reaches rtslib as a raw string
//!   and is read as `int(write_protect) > 0` (`MappedLUN._configure`), so
//!   `0`/`1` is the form that means what it says; `false` only works
//!   because `int("false")` raises and the `except` falls back to "not
//!   protected".
//! - `/iscsi/IQN/tpg1 enable` (`UITPG.ui_command_enable`).
//! - `/iscsi delete IQN` deletes the target recursively (TPG, LUNs, ACLs,
//!   mapped LUNs, portals; rtslib `Target.delete`), and `/backstores/KIND
//!   delete NAME` the storage object and any LUN still using it
//!   (`UIBackstore.ui_command_delete(name, save=None)`; `save` defaults to
//!   false, the backing file is left alone). Nothing else is touched.
//!
//! # LIO facts that matter to fts
//!
//! From the kernel's `drivers/target` sources (LIO was not run here; see
//! `shared/notes/scsi-targets.md`):
//!
//! - COMPARE AND WRITE is supported (`emulate_caw=1`, the default), one
//!   block at most.
//! - READ/WRITE with FUA (and DPO) are refused with ILLEGAL REQUEST 24/00
//!   unless the LUN is write-back (WCE=1: a fileio backstore with
//!   `write_back=true`) *and* `emulate_fua_write=1`. A block backstore on a
//!   device without a volatile cache is write-through, so FUA is refused
//!   there.
//! - The caching mode page's changeable mask (MODE SENSE PC=1) is all zero:
//!   WCE cannot be changed by MODE SELECT, which is accepted only when
//!   identical to the current page (otherwise 26/00). Choose write-back or
//!   write-through with [`LioPlan::write_back`] instead.
//! - PERSISTENT RESERVE OUT PREEMPT AND ABORT is supported (tgt refuses it),
//!   as are APTPL, SPEC_I_PT, ALL_TG_PT, READ FULL STATUS and RESERVE(10).
//! - An unregistered host's RESERVE(6) is refused while a persistent
//!   reservation is held (tgt wrongly grants it).
//!
//! # Resetting the LUN
//!
//! LIO keeps PR registrations and reservations (and the SPC-2 reservation)
//! on the device (`se_device`), not on the LUN or the mapping. Deleting and
//! re-creating only the mapped LUNs frees a node ACL's registrations only
//! as long as `core_disable_device_list_for_node` calls
//! `core_scsi3_free_pr_reg_from_nacl`, which a 2022 target-devel series
//! ("target: core: undepend PR registrant of nacl") removes, making
//! registrations independent of the node ACL; it is a kernel-version
//! detail the rig should not depend on. So [`LioTarget::reset_lun`] deletes the storage object itself (which
//! frees all PR state with the device) and re-creates it on the same file or
//! device with the same unit serial, attributes, LUN and mappings: the data
//! stays, the identity (VPD 80h/83h) stays, PR state is gone. With APTPL
//! the kernel also keeps registrations in `DBROOT/pr/aptpl_UNIT_SERIAL`
//! (DBROOT from `/sys/kernel/config/target/dbroot`, `/etc/target` or
//! `/var/target`), which rtslib would load back when the object is
//! re-created (`StorageObject._config_pr_aptpl`); the rig removes that file
//! for its own unit serial. Hosts logged in during a reset lose LUN 0 for a
//! moment and then get unit attentions; reset between scenarios, with the
//! hosts logged out.
#![deny(missing_docs)]

use std::fs::{self};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Error;

/// How long one `targetcli` command may take (it is a Python program that
/// reads the whole configfs tree at start).
const TARGETCLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `targetcli` command may take during teardown.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The configfs directory of the kernel target (present once
/// `target_core_mod` is loaded and configfs mounted).
const CONFIGFS_TARGET: &str = "/sys/kernel/config/target";
/// Where configfs is mounted.
const CONFIGFS: &str = "/sys/kernel/config";
/// Where the kernel target keeps APTPL files when `dbroot` cannot be read.
const DEFAULT_DBROOT: &str = "/var/target";
/// RFC 3720 3.2.6.1: an iSCSI name is at most 223 bytes.
const MAX_IQN_LEN: usize = 223;
/// The longest backstore name the rig accepts.
const MAX_NAME_LEN: usize = 128;
/// The only TPG the rig uses (targetcli creates `tpg1` with the target).
const TPG: &str = "tpg1";

/// What the exported LUN is stored on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backstore {
    /// A regular file (`/backstores/fileio`). targetcli creates it with
    /// `size_bytes` when it does not exist; [`LioTarget::start`] refuses an
    /// existing file of another size (targetcli would silently use the
    /// file's size) and removes the file on drop if it created it.
    FileIo {
        /// Absolute path of the backing file.
        path: PathBuf,
        /// Its size, a multiple of [`LioPlan::block_size`].
        size_bytes: u64,
    },
    /// A block device (`/backstores/block`, the kernel's iblock). Its write
    /// cache decides WCE; [`LioPlan::block_size`] must not be smaller than
    /// the device's logical block size.
    Block {
        /// Absolute path of the device, e.g. `/dev/loop0`.
        device: PathBuf,
    },
}

impl Backstore {
    /// The targetcli backstore directory: `fileio` or `block`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backstore::FileIo { .. } => "fileio",
            Backstore::Block { .. } => "block",
        }
    }
}

/// The emulation attributes of the backstore that fts depends on.
///
/// Each becomes `emulate_NAME=1|0` in `set attribute` on the backstore.
/// The default is what fts expects of LIO: COMPARE AND WRITE on, FUA
/// writes honoured (they still need write-back, see the module docs), thin
/// provisioning UNMAP off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LioEmulation {
    /// `emulate_caw`: COMPARE AND WRITE (kernel default on).
    pub caw: bool,
    /// `emulate_fua_write`: honour FUA on writes (kernel default on);
    /// effective only with WCE=1.
    pub fua_write: bool,
    /// `emulate_tpu`: UNMAP (kernel default off; the kernel refuses `1`
    /// without discard support).
    pub tpu: bool,
}

impl Default for LioEmulation {
    fn default() -> Self {
        LioEmulation {
            caw: true,
            fua_write: true,
            tpu: false,
        }
    }
}

/// Everything needed to export one LUN through LIO to the rig's hosts.
///
/// Build one with [`LioPlan::new`] (defaults for one process on loopback)
/// or field by field; check it with [`LioPlan::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LioPlan {
    /// The target's IQN, lower case, e.g.
    /// `iqn.2026-11.invalid.fts-hil:lio-<pid>`.
    pub target_iqn: String,
    /// The storage object's name, `[A-Za-z0-9_-]`, e.g. `fts-hil-<pid>`.
    /// LIO also reports its first 15 characters as the INQUIRY product id
    /// (targetcli's `export_backstore_name_as_model`, on by default).
    pub backstore_name: String,
    /// What the LUN is stored on.
    pub backstore: Backstore,
    /// The logical block size the LUN reports: 512 or 4096 (attribute
    /// `block_size`).
    pub block_size: u32,
    /// The one portal, `(ip, port)`; the IP written canonically (as Rust
    /// prints it). No `0.0.0.0:3260` default portal is created.
    pub portal: (String, u16),
    /// The rig hosts' initiator IQNs: one ACL each, LUN 0 mapped read-write.
    pub initiators: Vec<String>,
    /// Fileio only: write-back (WCE=1, buffered I/O in the kernel) instead of
    /// write-through; for the destage scenario and for FUA.
    pub write_back: bool,
    /// The emulation attributes fts cares about.
    pub emulate: LioEmulation,
}

impl LioPlan {
    /// A plan with this process's names: target
    /// `iqn.2026-11.invalid.fts-hil:lio-<pid>`, backstore `fts-hil-<pid>`,
    /// 4096-byte blocks, portal `127.0.0.1:3260`, write-through, default
    /// emulation.
    pub fn new(backstore: Backstore, initiators: Vec<String>) -> LioPlan {
        let pid = std::process::id();
        LioPlan {
            target_iqn: format!("{}:lio-{pid}", crate::tgt::IQN_PREFIX),
            backstore_name: format!("fts-hil-{pid}"),
            backstore,
            block_size: 4096,
            portal: ("127.0.0.1".to_string(), 3260),
            initiators,
            write_back: false,
            emulate: LioEmulation::default(),
        }
    }

    /// The `targetcli` commands that create the export, in order, each a
    /// full argv starting with `targetcli`.
    ///
    /// 1. `set global` (in the private `TARGETCLI_HOME`, see the module
    ///    docs): no automatic mapped LUNs, no default portal, no automatic
    ///    TPG enable, no save on exit;
    /// 2. the backstore, then its attributes (before it is exported);
    /// 3. the target, its TPG attributes, its portal, LUN 0;
    /// 4. for each initiator, its ACL and its mapped LUN 0;
    /// 5. enabling the TPG.
    pub fn setup_commands(&self) -> Vec<Vec<String>> {
        self.setup_steps().into_iter().map(|s| s.argv).collect()
    }

    /// The `targetcli` commands that delete what
    /// [`setup_commands`](Self::setup_commands) created: the target
    /// (recursively: TPG, LUN, ACLs, portal) and then the storage object.
    /// Neither touches any other target or storage object, the global
    /// preferences or the backing file.
    pub fn teardown_commands(&self) -> Vec<Vec<String>> {
        vec![self.delete_target_cmd(), self.delete_backstore_cmd()]
    }

    /// The `targetcli` commands of [`LioTarget::reset_lun`]: delete the
    /// storage object (and with it LUN 0 and the mapped LUNs), then
    /// re-create it with the same unit serial and attributes, LUN 0 and every
    /// initiator's mapped LUN 0. The target, portal, ACLs and sessions'
    /// TPG stay.
    pub fn reset_commands(&self) -> Vec<Vec<String>> {
        let mut cmds = vec![self.delete_backstore_cmd()];
        cmds.extend(self.backstore_steps().into_iter().map(|s| s.argv));
        cmds.push(self.lun_create_cmd());
        cmds.extend(self.initiators.iter().map(|i| self.mapped_lun_cmd(i)));
        cmds
    }

    /// The initiators' URL of the LUN: `iscsi://IP:PORT/IQN/0` (an IPv6
    /// address in brackets).
    pub fn url(&self) -> String {
        let (ip, port) = &self.portal;
        if ip.contains(':') {
            format!("iscsi://[{ip}]:{port}/{}/0", self.target_iqn)
        } else {
            format!("iscsi://{ip}:{port}/{}/0", self.target_iqn)
        }
    }

    /// The T10 unit serial given to the storage object (`wwn=`): a fixed
    /// function of the target IQN and backstore name, in the UUID form
    /// rtslib itself generates, so that the LUN keeps its VPD 80h/83h
    /// identity when [`LioTarget::reset_lun`] re-creates it.
    pub fn unit_serial(&self) -> String {
        let a = fnv1a(
            0xcbf2_9ce4_8422_2325,
            &[&self.target_iqn, &self.backstore_name],
        );
        let b = fnv1a(
            a ^ 0x9e37_79b9_7f4a_7c15,
            &[&self.backstore_name, &self.target_iqn],
        );
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    /// Checks the plan, so that every generated command is one targetcli
    /// accepts and means what the plan says.
    ///
    /// Fails with [`Error::InvalidArgument`] naming the field and value:
    /// IQNs not of the form `iqn.YYYY-MM.naming.authority[:anything]` in
    /// lower case (`[a-z0-9.:-]`, at most 223 bytes, a `.` after the date as
    /// rtslib demands); a backstore name outside `[A-Za-z0-9_-]` or longer
    /// than 128; a path that is not absolute or has characters outside
    /// `[A-Za-z0-9/._-]` (targetcli joins its arguments with spaces, and
    /// rtslib passes the file name to the kernel in a comma-separated
    /// control string); a size of 0 or not a multiple of the block size; a
    /// block size other than 512 or 4096; `write_back` on a block backstore;
    /// a portal IP that is not an address in canonical form, an IPv6
    /// link-local or IPv4-mapped address, or port 0; no initiator, or the
    /// same initiator twice.
    pub fn validate(&self) -> Result<(), Error> {
        check_iqn(&self.target_iqn)
            .map_err(|why| invalid(format!("target_iqn {:?}: {why}", self.target_iqn)))?;
        check_name(&self.backstore_name)
            .map_err(|why| invalid(format!("backstore_name {:?}: {why}", self.backstore_name)))?;
        if self.block_size != 512 && self.block_size != 4096 {
            return Err(invalid(format!(
                "block_size {}: must be 512 or 4096",
                self.block_size
            )));
        }
        match &self.backstore {
            Backstore::FileIo { path, size_bytes } => {
                check_path(path)
                    .map_err(|why| invalid(format!("fileio path {}: {why}", path.display())))?;
                if *size_bytes == 0 || size_bytes % u64::from(self.block_size) != 0 {
                    return Err(invalid(format!(
                        "fileio size_bytes {size_bytes}: must be a positive multiple of block_size {}",
                        self.block_size
                    )));
                }
            }
            Backstore::Block { device } => {
                check_path(device)
                    .map_err(|why| invalid(format!("block device {}: {why}", device.display())))?;
                if self.write_back {
                    return Err(invalid(
                        "write_back on a block backstore: LIO takes the write cache (WCE) of a block backstore from the device and refuses emulate_write_cache=1; use a fileio backstore for write-back"
                            .to_string(),
                    ));
                }
            }
        }
        let (ip, port) = &self.portal;
        check_portal(ip, *port)
            .map_err(|why| invalid(format!("portal {ip:?} port {port}: {why}")))?;
        if self.initiators.is_empty() {
            return Err(invalid(
                "initiators: at least one initiator IQN is needed (each rig host gets its own ACL)"
                    .to_string(),
            ));
        }
        for (n, init) in self.initiators.iter().enumerate() {
            check_iqn(init).map_err(|why| invalid(format!("initiator {init:?}: {why}")))?;
            if self.initiators[..n].contains(init) {
                return Err(invalid(format!(
                    "initiator {init:?} is listed twice (one ACL per host)"
                )));
            }
        }
        Ok(())
    }

    // -- command builders --------------------------------------------------

    fn backstore_path(&self) -> String {
        format!(
            "/backstores/{}/{}",
            self.backstore.kind(),
            self.backstore_name
        )
    }

    fn tpg_path(&self) -> String {
        format!("/iscsi/{}/{TPG}", self.target_iqn)
    }

    /// Everything `setup_commands` returns, with what each creates.
    fn setup_steps(&self) -> Vec<Step> {
        let tpg = self.tpg_path();
        let mut steps = vec![Step::plain(targetcli(&[
            "set",
            "global",
            "auto_add_mapped_luns=false",
            "auto_add_default_portal=false",
            "auto_enable_tpgt=false",
            "auto_save_on_exit=false",
        ]))];
        steps.extend(self.backstore_steps());
        steps.push(Step {
            creates: Creates::Target,
            argv: targetcli(&["/iscsi", "create", &self.target_iqn]),
        });
        steps.push(Step::plain(targetcli(&[
            &tpg,
            "set",
            "attribute",
            "authentication=0",
            "generate_node_acls=0",
            "demo_mode_write_protect=0",
            "prod_mode_write_protect=0",
        ])));
        let (ip, port) = &self.portal;
        steps.push(Step::plain(targetcli(&[
            &format!("{tpg}/portals"),
            "create",
            ip,
            &port.to_string(),
        ])));
        steps.push(Step::plain(self.lun_create_cmd()));
        for init in &self.initiators {
            steps.push(Step::plain(targetcli(&[
                &format!("{tpg}/acls"),
                "create",
                init,
                "add_mapped_luns=false",
            ])));
            steps.push(Step::plain(self.mapped_lun_cmd(init)));
        }
        steps.push(Step::plain(targetcli(&[&tpg, "enable"])));
        steps
    }

    /// The storage object's creation and attributes.
    fn backstore_steps(&self) -> Vec<Step> {
        let kind_dir = format!("/backstores/{}", self.backstore.kind());
        let name = format!("name={}", self.backstore_name);
        let wwn = format!("wwn={}", self.unit_serial());
        let create = match &self.backstore {
            Backstore::FileIo { path, size_bytes } => targetcli(&[
                &kind_dir,
                "create",
                &name,
                &format!("file_or_dev={}", path.display()),
                &format!("size={size_bytes}"),
                &format!("write_back={}", self.write_back),
                &wwn,
            ]),
            Backstore::Block { device } => targetcli(&[
                &kind_dir,
                "create",
                &name,
                &format!("dev={}", device.display()),
                "readonly=false",
                &wwn,
            ]),
        };
        let flag = |on: bool| if on { 1 } else { 0 };
        let attrs = targetcli(&[
            &self.backstore_path(),
            "set",
            "attribute",
            &format!("block_size={}", self.block_size),
            &format!("emulate_caw={}", flag(self.emulate.caw)),
            &format!("emulate_fua_write={}", flag(self.emulate.fua_write)),
            &format!("emulate_tpu={}", flag(self.emulate.tpu)),
        ]);
        vec![
            Step {
                creates: Creates::Backstore,
                argv: create,
            },
            Step::plain(attrs),
        ]
    }

    fn lun_create_cmd(&self) -> Vec<String> {
        targetcli(&[
            &format!("{}/luns", self.tpg_path()),
            "create",
            &self.backstore_path(),
            "lun=0",
            "add_mapped_luns=false",
        ])
    }

    fn mapped_lun_cmd(&self, initiator: &str) -> Vec<String> {
        targetcli(&[
            &format!("{}/acls/{initiator}", self.tpg_path()),
            "create",
            "mapped_lun=0",
            "tpg_lun_or_backstore=lun0",
            "write_protect=0",
        ])
    }

    fn delete_target_cmd(&self) -> Vec<String> {
        targetcli(&["/iscsi", "delete", &self.target_iqn])
    }

    fn delete_backstore_cmd(&self) -> Vec<String> {
        targetcli(&[
            &format!("/backstores/{}", self.backstore.kind()),
            "delete",
            &self.backstore_name,
        ])
    }
}

/// What a setup command creates, so that a failed setup deletes only what
/// it made (never a same-named object that was there before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Creates {
    Nothing,
    Backstore,
    Target,
}

#[derive(Debug, Clone)]
struct Step {
    creates: Creates,
    argv: Vec<String>,
}

impl Step {
    fn plain(argv: Vec<String>) -> Step {
        Step {
            creates: Creates::Nothing,
            argv,
        }
    }
}

fn targetcli(args: &[&str]) -> Vec<String> {
    std::iter::once("targetcli")
        .chain(args.iter().copied())
        .map(str::to_string)
        .collect()
}

fn invalid(what: String) -> Error {
    Error::InvalidArgument {
        what: format!("LIO plan: {what}"),
    }
}

/// FNV-1a over the parts, each followed by a NUL.
fn fnv1a(seed: u64, parts: &[&str]) -> u64 {
    let mut h = seed;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// `iqn.YYYY-MM.authority[:rest]`, as rtslib and RFC 3720 accept it, in
/// lower case.
fn check_iqn(iqn: &str) -> Result<(), String> {
    const FORM: &str = "an IQN is iqn.YYYY-MM.reversed.domain[:anything]";
    if iqn.len() > MAX_IQN_LEN {
        return Err(format!("longer than {MAX_IQN_LEN} bytes"));
    }
    let Some(rest) = iqn.strip_prefix("iqn.") else {
        return Err(format!("does not start with \"iqn.\"; {FORM}"));
    };
    let b = rest.as_bytes();
    let date_ok = b.len() > 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && matches!(
            &rest[5..7],
            "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "12"
        )
        && b[7] == b'.';
    if !date_ok {
        return Err(format!("no valid date YYYY-MM after \"iqn.\"; {FORM}"));
    }
    let name = &rest[8..];
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | ':' | '-')))
    {
        return Err(format!(
            "character {bad:?} not allowed (lower-case letters, digits, '.', ':', '-' only: rtslib lower-cases IQNs and refuses '_' and spaces)"
        ));
    }
    if !name.contains('.') {
        return Err(format!(
            "no '.' in the naming authority after the date (rtslib requires one); {FORM}"
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NAME_LEN} characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return Err(format!(
            "character {bad:?} not allowed (A-Z, a-z, 0-9, '_', '-' only)"
        ));
    }
    Ok(())
}

fn check_path(path: &Path) -> Result<(), String> {
    let Some(s) = path.to_str() else {
        return Err("not UTF-8".to_string());
    };
    if !s.starts_with('/') || s.len() < 2 {
        return Err("must be an absolute path to a file or device".to_string());
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-')))
    {
        return Err(format!(
            "character {bad:?} not allowed (A-Z, a-z, 0-9, '/', '.', '_', '-' only: targetcli joins its arguments with spaces and rtslib hands the path to the kernel in a comma-separated string)"
        ));
    }
    Ok(())
}

fn check_portal(ip: &str, port: u16) -> Result<(), String> {
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| "not an IPv4 or IPv6 address".to_string())?;
    if addr.to_string() != ip {
        return Err(format!("write the address canonically, as {addr}"));
    }
    if let IpAddr::V6(v6) = addr {
        if v6.segments()[0] & 0xffc0 == 0xfe80 {
            return Err("link-local IPv6 portals are not supported by targetcli".to_string());
        }
        if ip.contains('.') {
            return Err(
                "IPv4-mapped IPv6 address (targetcli would take it for IPv4); use the IPv4 address"
                    .to_string(),
            );
        }
    }
    if port == 0 {
        return Err("port 0".to_string());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Availability.

/// Whether LIO can run here: configfs (`/sys/kernel/config/target`, or
/// configfs mountable, which rtslib mounts and loads itself), `targetcli`
/// installed (on `PATH` or in the sbin directories), and root.
///
/// Returns the message of [`unavailable_reason`] otherwise, e.g. on a
/// machine without configfs nor targetcli: "LIO needs /sys/kernel/config
/// (configfs) and targetcli; this machine has neither: use --target tgt".
pub fn available() -> Result<(), String> {
    let configfs = configfs_present();
    let targetcli = crate::proc::find_program("targetcli").is_some();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    match unavailable_reason(configfs, targetcli, root) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// The message [`available`] gives for what this machine has: `None` when
/// it has configfs, `targetcli` and root.
pub fn unavailable_reason(configfs: bool, targetcli: bool, root: bool) -> Option<String> {
    const NEEDS: &str = "LIO needs /sys/kernel/config (configfs) and targetcli";
    const INSTEAD: &str = "use --target tgt";
    let lacks = match (configfs, targetcli) {
        (false, false) => Some("this machine has neither".to_string()),
        (false, true) => Some(
            "this machine has no configfs (no /sys/kernel/config, and configfs is not in /proc/filesystems)"
                .to_string(),
        ),
        (true, false) => {
            Some("this machine has no targetcli (Debian package targetcli-fb)".to_string())
        }
        (true, true) => None,
    };
    match (lacks, root) {
        (Some(lacks), _) => Some(format!("{NEEDS}; {lacks}: {INSTEAD}")),
        (None, false) => Some(format!(
            "LIO needs root to configure the kernel target (targetcli refuses its privileged commands otherwise): run as root or {INSTEAD}"
        )),
        (None, true) => None,
    }
}

fn configfs_present() -> bool {
    if Path::new(CONFIGFS_TARGET).is_dir() || Path::new(CONFIGFS).is_dir() {
        return true;
    }
    fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("configfs"))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// The running target.

/// A LUN exported through LIO, configured by [`LioTarget::start`].
///
/// Dropping it runs the plan's [`teardown_commands`](LioPlan::teardown_commands)
/// for the objects it created (never a same-named object it found), removes
/// the APTPL file of its unit serial and the backing file if it created it;
/// failures are printed, never panicked on. [`LioTarget::stop`] does the same
/// and reports them.
#[derive(Debug)]
pub struct LioTarget {
    plan: LioPlan,
    targetcli: PathBuf,
    /// The private `TARGETCLI_HOME` (preferences, history, log).
    home: tempfile::TempDir,
    target_created: bool,
    backstore_created: bool,
    /// The fileio backing file, when targetcli created it for us.
    created_file: Option<PathBuf>,
}

impl LioTarget {
    /// Validates `plan`, checks [`available`], and runs the plan's
    /// [`setup_commands`](LioPlan::setup_commands).
    ///
    /// Fails before running anything with [`Error::InvalidArgument`] for a
    /// bad plan or an existing fileio file whose size is not the plan's,
    /// and with [`Error::Provision`] carrying the message of [`available`]
    /// where LIO cannot run (no configfs, no targetcli, not root). A
    /// command that fails gives [`Error::Command`] (or
    /// [`Error::CommandTimeout`]) after what was created so far has been
    /// deleted again.
    pub fn start(plan: LioPlan) -> Result<LioTarget, Error> {
        plan.validate()?;
        available().map_err(|what| Error::Provision { what })?;
        let targetcli = crate::proc::find_program("targetcli").ok_or(Error::ProgramNotFound {
            program: "targetcli",
            package: "targetcli-fb",
        })?;
        let mut created_file = None;
        if let Backstore::FileIo { path, size_bytes } = &plan.backstore {
            match fs::metadata(path) {
                Ok(m) if m.is_file() && m.len() == *size_bytes => {}
                Ok(m) => {
                    return Err(invalid(format!(
                        "fileio path {} exists and is not a {size_bytes}-byte regular file ({} bytes): targetcli would export it as it is",
                        path.display(),
                        m.len()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => created_file = Some(path.clone()),
                Err(source) => {
                    return Err(Error::Io {
                        action: "inspect the fileio backing file",
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        let home = tempfile::Builder::new()
            .prefix("fts-hil-targetcli-")
            .tempdir()
            .map_err(|source| Error::Io {
                action: "create a private TARGETCLI_HOME",
                path: std::env::temp_dir(),
                source,
            })?;
        let mut lio = LioTarget {
            plan,
            targetcli,
            home,
            target_created: false,
            backstore_created: false,
            created_file,
        };
        for step in lio.plan.setup_steps() {
            if let Err(e) = lio.run(&step.argv, TARGETCLI_TIMEOUT) {
                // Our own creations only; the error of the step is the one to report.
                if let Err(cleanup) = lio.teardown() {
                    eprintln!("hil: cleaning up after a failed LIO setup: {cleanup}");
                }
                return Err(e);
            }
            match step.creates {
                Creates::Target => lio.target_created = true,
                Creates::Backstore => lio.backstore_created = true,
                Creates::Nothing => {}
            }
        }
        Ok(lio)
    }

    /// The initiators' URL: `iscsi://IP:PORT/IQN/0`.
    pub fn url(&self) -> String {
        self.plan.url()
    }

    /// The plan this target was started with.
    pub fn plan(&self) -> &LioPlan {
        &self.plan
    }

    /// Clears all SCSI-2 and persistent reservation state of the LUN,
    /// keeping its data and identity: deletes the storage object, removes its
    /// APTPL file, and re-creates it with its LUN and mappings (the plan's
    /// [`reset_commands`](LioPlan::reset_commands); see the module docs for
    /// why the mappings alone are not enough). Do it with the hosts logged
    /// out.
    pub fn reset_lun(&mut self) -> Result<(), Error> {
        let mut cmds = self.plan.reset_commands().into_iter();
        if let Some(delete) = cmds.next() {
            self.run(&delete, TARGETCLI_TIMEOUT)?;
            self.backstore_created = false;
        }
        self.remove_aptpl_file()?;
        for (n, argv) in cmds.enumerate() {
            self.run(&argv, TARGETCLI_TIMEOUT)?;
            if n == 0 {
                self.backstore_created = true;
            }
        }
        Ok(())
    }

    /// Tears down like `Drop` does, but reports the first failure. Every
    /// step is attempted whatever fails.
    pub fn stop(mut self) -> Result<(), Error> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), Error> {
        let mut first_err = None;
        let [delete_target, delete_backstore] = [
            self.plan.delete_target_cmd(),
            self.plan.delete_backstore_cmd(),
        ];
        if self.target_created {
            match self.run(&delete_target, TEARDOWN_TIMEOUT) {
                Ok(_) => self.target_created = false,
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        if self.backstore_created {
            match self.run(&delete_backstore, TEARDOWN_TIMEOUT) {
                Ok(_) => {
                    self.backstore_created = false;
                    if let Err(e) = self.remove_aptpl_file() {
                        first_err = first_err.or(Some(e));
                    }
                }
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        // Only once nothing of ours uses it any more.
        if !self.backstore_created {
            if let Some(path) = self.created_file.take() {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => {
                        first_err = first_err.or(Some(Error::Io {
                            action: "remove the fileio backing file",
                            path,
                            source,
                        }))
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Removes `DBROOT/pr/aptpl_UNIT_SERIAL`, where the kernel keeps APTPL
    /// registrations of our storage object.
    fn remove_aptpl_file(&self) -> Result<(), Error> {
        let dbroot = fs::read_to_string(format!("{CONFIGFS_TARGET}/dbroot"))
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| s.starts_with('/'))
            .unwrap_or_else(|| DEFAULT_DBROOT.to_string());
        let path = Path::new(&dbroot)
            .join("pr")
            .join(format!("aptpl_{}", self.plan.unit_serial()));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                action: "remove the APTPL file",
                path,
                source,
            }),
        }
    }

    /// Runs one argv of the plan (`argv[0]` is `targetcli`).
    fn run(&self, argv: &[String], timeout: Duration) -> Result<String, Error> {
        run_targetcli(&self.targetcli, self.home.path(), argv, timeout)
    }
}

impl Drop for LioTarget {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("hil: tearing down LIO target {}: {e}", self.plan.target_iqn);
        }
    }
}

/// Runs `targetcli ARGS...` (`argv[1..]`) with `TARGETCLI_HOME=home`,
/// killing it after `timeout`.
fn run_targetcli(
    targetcli: &Path,
    home: &Path,
    argv: &[String],
    timeout: Duration,
) -> Result<String, Error> {
    let mut cmd = Command::new(targetcli);
    cmd.args(argv.iter().skip(1)).env("TARGETCLI_HOME", home);
    crate::proc::run_capture(&mut cmd, timeout)
}
