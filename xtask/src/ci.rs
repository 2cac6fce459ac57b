//! `cargo xtask ci [--quick]`: everything CI checks, in order, failing fast:
//! setup, fmt, clippy, tests, doctests, fuzz, a crash campaign of 50
//! SIGKILLs, the multi-host rig on namespaces and on VMs (`FTS_CI_HIL=0` / `FTS_CI_HIL_VM=0` skip them),
//! and `cargo xtask bench --quick` (`FTS_CI_BENCH=0` skips it).
//! `.ci/run` runs exactly this.
//!
//! Tests that need a component the machine lacks skip through `hil::skip`
//! and record themselves in a skip log; the test steps get a fresh one
//! (`FTS_SKIP_LOG`), and the run ends with the number of skipped tests and
//! their reasons. With `CI` set a skip is already a test failure, and any
//! skip still recorded fails the run.

use std::path::{Path, PathBuf};

use ::hil::skip::Skipped;
use anyhow::{bail, Context, Result};

use crate::{campaign, fuzz, hil, setup, util};

pub fn cmd(args: &[String]) -> Result<()> {
    let mut quick = false;
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            other => bail!("ci: unknown argument `{other}` (expected --quick)"),
        }
    }
    let skip_log = fresh_skip_log()?;
    let mut steps = util::Steps::new();
    let res = run_steps(&mut steps, quick, &skip_log);
    steps.summary();
    eprintln!();
    eprintln!("==> skipped tests");
    let verdict = match ::hil::skip::read_log(&skip_log) {
        Ok(skips) => {
            let (text, verdict) = skipped_tests(&skips, ::hil::skip::in_ci());
            eprint!("{text}");
            verdict
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot count the skipped tests: reading {}",
                skip_log.display()
            )
        }),
    };
    // A failed step is the first thing to report.
    res.and(verdict)
}

/// `target/ci-skipped-tests.log`, emptied.
fn fresh_skip_log() -> Result<PathBuf> {
    let log = util::target_dir().join("ci-skipped-tests.log");
    match std::fs::remove_file(&log) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("emptying the skip log {}", log.display()))
        }
    }
    Ok(log)
}

/// The end of the run: "N tests skipped" and one line per skip; an error
/// when any test skipped while `CI` is set (`ci`).
fn skipped_tests(skips: &[Skipped], ci: bool) -> (String, Result<()>) {
    let n = skips.len();
    let mut text = format!(
        "    {n} test{} skipped{}\n",
        if n == 1 { "" } else { "s" },
        if n == 0 {
            ""
        } else {
            " (nothing of them ran):"
        }
    );
    for s in skips {
        text.push_str(&format!("      {}: {}\n", s.test, s.why));
    }
    let verdict = if n > 0 && ci {
        Err(anyhow::anyhow!(
            "{n} test{} skipped although CI is set: {}",
            if n == 1 { "" } else { "s" },
            skips
                .iter()
                .map(|s| s.test.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        Ok(())
    };
    (text, verdict)
}

fn run_steps(steps: &mut util::Steps, quick: bool, skip_log: &Path) -> Result<()> {
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
        util::run(util::cargo().env(::hil::skip::LOG_ENV, skip_log).args([
            "test",
            "--workspace",
            "--all-targets",
            "--all-features",
        ]))
    })?;
    steps.step("doctest", || {
        util::run(util::cargo().env(::hil::skip::LOG_ENV, skip_log).args([
            "test",
            "--workspace",
            "--doc",
            "--all-features",
        ]))
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
    if quick {
        steps.skip("crash-campaign", "skipped by --quick");
    } else {
        steps.step("crash-campaign", || {
            campaign::cmd(&["--kills".to_string(), "50".to_string()])
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
    // The bench's short run: every limit, peer and fts figure still
    // measures (a failing figure is reported in its row, not fatal);
    // speed goals are read from its table, never asserted here.
    if quick || std::env::var("FTS_CI_BENCH").as_deref() == Ok("0") {
        steps.skip("bench --quick", "skipped by --quick or FTS_CI_BENCH=0");
    } else {
        steps.step("bench --quick", || {
            crate::bench::cmd(&["--quick".to_string()])
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip(test: &str, why: &str) -> Skipped {
        Skipped {
            test: test.into(),
            why: why.into(),
        }
    }

    #[test]
    fn no_skips_is_said_and_fine() {
        let (text, verdict) = skipped_tests(&[], true);
        assert_eq!(text, "    0 tests skipped\n");
        assert!(verdict.is_ok());
    }

    #[test]
    fn skips_are_counted_and_listed() {
        let skips = [
            skip("loop_device_with_4096_byte_sectors", "no losetup"),
            skip("ipv6_portal", "no IPv6 loopback"),
        ];
        let (text, verdict) = skipped_tests(&skips, false);
        assert_eq!(
            text,
            "    2 tests skipped (nothing of them ran):\n\
             \x20     loop_device_with_4096_byte_sectors: no losetup\n\
             \x20     ipv6_portal: no IPv6 loopback\n"
        );
        assert!(verdict.is_ok(), "outside CI a skip does not fail the run");
        let (text, _) = skipped_tests(&skips[..1], false);
        assert!(text.starts_with("    1 test skipped"), "{text}");
    }

    #[test]
    fn a_skip_under_ci_fails_the_run() {
        let (_, verdict) = skipped_tests(&[skip("ipv6_portal", "no IPv6 loopback")], true);
        let err = verdict.expect_err("CI is set").to_string();
        assert!(
            err.contains("1 test skipped") && err.contains("ipv6_portal"),
            "{err}"
        );
    }
}
