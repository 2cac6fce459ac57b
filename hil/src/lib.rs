//! The fts multi-host test rig.
//!
//! **For**: provisioning a shared iSCSI LUN for tests and tearing it down.
//! Implemented: [`tgt`], a real userspace iSCSI target (`tgtd` from tgt
//! 1.0.85) on loopback with file-backed LUNs, one daemon per test on its own
//! ports, with the controls multi-host tests need: resetting a LU (PR state
//! and mode pages are gone, data stays), listing I_T nexuses, and dropping an
//! initiator's connections as a network failure would. Planned (issue 5):
//! LIO/targetcli where configfs exists, several hosts that see the LUN
//! (network namespaces with veth; qemu guests with `scsi-block` passthrough),
//! multi-host scenarios, and `cargo xtask hil` as its command-line front end.
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
//! instead of skipping it.
#![deny(missing_docs)]

mod error;
pub mod tgt;

pub use error::Error;
pub use tgt::{available, start_or_skip, Lun, Nexus, Tgtd, TgtdOptions};
