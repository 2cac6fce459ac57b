//! The fts multi-host test rig.
//!
//! **For** (to be filled by issue 5): provisioning a shared iSCSI LUN (tgt on
//! any Linux; LIO/targetcli where configfs exists) and several hosts that see
//! it (network namespaces with veth; qemu guests with `scsi-block`
//! passthrough), running multi-host scenarios, and tearing everything down.
//! `cargo xtask hil` is its command-line front end.
//!
//! **Not for**: anything a production fts host runs.
//!
//! Nothing is implemented yet; this crate is a documented skeleton.
#![deny(missing_docs)]
