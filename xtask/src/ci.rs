//! `cargo xtask ci [--quick]`: everything CI checks, in order, failing fast:
//! setup, fmt, clippy, tests, doctests, fuzz, the multi-host rig on
//! namespaces and on VMs (`FTS_CI_HIL=0` / `FTS_CI_HIL_VM=0` skip them).
//! `.ci/run` runs exactly this.

use anyhow::{bail, Result};

use crate::{fuzz, hil, setup, util};

pub fn cmd(args: &[String]) -> Result<()> {
    let mut quick = false;
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            other => bail!("ci: unknown argument `{other}` (expected --quick)"),
        }
    }
    let mut steps = util::Steps::new();
    let res = run_steps(&mut steps, quick);
    steps.summary();
    res
}

fn run_steps(steps: &mut util::Steps, quick: bool) -> Result<()> {
    // cargo-fuzz (and g++) are only needed when fuzzing.
    let want_fuzz = !quick && !fuzz::discover()?.is_empty();
    // The VM rig needs qemu, qemu-block-extra and busybox-static.
    let want_vm = !quick && std::env::var("FTS_CI_HIL_VM").as_deref() != Ok("0");
    steps.step("setup", || {
        setup::setup(setup::Options {
            vm: want_vm,
            fuzz: want_fuzz,
        })
    })?;
    steps.step("fmt", || {
        util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    steps.step("clippy", || {
        util::run(util::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]))?;
        // fts-scsi also builds without its optional libiscsi transport.
        util::run(util::cargo().args(["clippy", "-p", "fts-scsi", "--", "-D", "warnings"]))
    })?;
    steps.step("test", || {
        util::run(util::cargo().args(["test", "--workspace", "--all-targets", "--all-features"]))
    })?;
    steps.step("doctest", || {
        util::run(util::cargo().args(["test", "--workspace", "--doc", "--all-features"]))
    })?;
    if quick {
        steps.skip("fuzz", "skipped by --quick");
    } else if !want_fuzz {
        steps.skip(
            "fuzz",
            "no */fuzz/Cargo.toml in the workspace, nothing to fuzz",
        );
    } else {
        steps.step("fuzz", || {
            fuzz::build_and_run(None, fuzz::CI_SECS).map(|_| ())
        })?;
    }
    if !hil::IMPLEMENTED {
        steps.skip("hil", "not implemented yet");
    } else if std::env::var("FTS_CI_HIL").as_deref() == Ok("0") {
        steps.skip("hil", "skipped because FTS_CI_HIL=0");
    } else {
        steps.step("hil", || hil::run(&[]))?;
        if want_vm {
            steps.step("hil --vm", || hil::run(&["--vm".to_string()]))?;
        } else {
            steps.skip("hil --vm", "skipped by --quick or FTS_CI_HIL_VM=0");
        }
    }
    Ok(())
}
