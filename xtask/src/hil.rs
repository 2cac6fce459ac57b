//! `cargo xtask hil [ARGS...]`: the multi-host test rig (iSCSI targets and
//! hosts as network namespaces or VMs).
//!
//! Not implemented yet. When it is, this module becomes the only place that
//! calls into the `hil` crate: add `hil.workspace = true` to xtask's
//! dependencies, set [`IMPLEMENTED`] to `true` and make [`run`] drive the rig.
//! `cargo xtask ci` then runs it (unless `FTS_CI_HIL=0`); if the rig needs
//! VMs, have `ci` call `setup` with `vm: true` as well.

use anyhow::{bail, Result};

/// Whether the rig exists; `ci` skips its hil step while this is `false`.
pub const IMPLEMENTED: bool = false;

/// `cargo xtask hil ARGS...`.
pub fn cmd(args: &[String]) -> Result<()> {
    run(args)
}

/// Runs the rig with command-line style `args` (`ci` passes none).
pub fn run(_args: &[String]) -> Result<()> {
    bail!("hil rig not implemented yet")
}
