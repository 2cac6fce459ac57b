//! The fts multi-host test rig.
//!
//! **For**: the multi-host test rig that `cargo xtask hil` drives (see
//! `TESTING.md`), and the real iSCSI target the workspace's tests use.
//!
//! - [`tgt`]: a real userspace iSCSI target (`tgtd` from tgt 1.0.85) with
//!   file-backed LUNs, one daemon per test on its own ports (or inside a
//!   rig namespace), with the controls multi-host tests need: resetting a
//!   LU (PR state and mode pages are gone, data stays), listing I_T
//!   nexuses, and dropping an initiator's connections as a network failure
//!   would.
//! - [`lio`]: the LIO/targetcli target for hosts with configfs: generated
//!   (and unit-tested) targetcli command lists with per-host ACLs.
//! - [`netns`]: hosts as network namespaces with veth links to a SAN
//!   namespace running tgtd; every fts process its own initiator.
//! - [`vm`]: hosts as qemu guests with `scsi-block` passthrough, so fts's
//!   SG_IO transport runs for real inside them.
//! - [`scenario`]: all-pairs, contention, holder-crash, link-flap, destage;
//!   [`report`]: what each scenario reports and the summary table.
//! - [`observer`]: an independent initiator (libiscsi's own API) that
//!   samples the LUN's PR keys, holder and RESERVE(6) state, and judges a
//!   holder crash from that timeline alone.
//! - [`rig`]: the [`Target`] and [`Host`] traits every target and host
//!   kind implements.
//! - [`skip`]: how every test that needs a component skips (loudly,
//!   counted by `cargo xtask ci`) or, under `CI`, fails.
//!
//! **Not for**: anything a production fts host runs.
//!
//! A test that needs a target:
//!
//! ```no_run
//! #[test]
//! fn talks_to_a_real_target() {
//!     let Some(mut tgtd) = hil::start_or_skip("talks_to_a_real_target") else {
//!         return; // tgt missing or not root, outside CI: a loud SKIPPED line
//!     };
//!     let lun = tgtd.add_lun(16 << 20, 4096).expect("add_lun");
//!     // ... open lun.url (iscsi://127.0.0.1:PORT/IQN/1) with an initiator ...
//! } // the daemon is torn down here
//! ```
//!
//! With the environment variable `CI` set, a missing tgt fails the test
//! instead of skipping it (see [`skip`]).
#![deny(missing_docs)]

mod error;
pub mod lio;
pub mod netns;
pub mod observer;
mod proc;
pub mod relay;
pub mod report;
pub mod rig;
pub mod scenario;
pub mod skip;
pub mod tgt;
pub mod vm;

pub use error::Error;
pub use report::{summary_table, ScenarioReport};
pub use rig::{Host, HostOutput, Target, TgtTarget};
pub use tgt::{available, start_or_skip, Lun, Nexus, Tgtd, TgtdOptions};
