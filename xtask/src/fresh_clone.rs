//! `cargo xtask fresh-clone-test [--keep]`: clone the repository into a
//! temporary directory and run `CI=true bash .ci/run` there, as CI does.
//! Only what is committed is tested.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::util;

/// Variables `cargo run` sets for us that a real CI shell would not have.
const CARGO_RUN_VARS: &[&str] = &[
    "CARGO",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_PKG_NAME",
    "CARGO_PKG_VERSION",
    "CARGO_PKG_VERSION_MAJOR",
    "CARGO_PKG_VERSION_MINOR",
    "CARGO_PKG_VERSION_PATCH",
    "CARGO_PKG_VERSION_PRE",
    "CARGO_PKG_AUTHORS",
    "CARGO_PKG_DESCRIPTION",
    "CARGO_PKG_HOMEPAGE",
    "CARGO_PKG_REPOSITORY",
    "CARGO_PKG_LICENSE",
    "CARGO_PKG_LICENSE_FILE",
    "CARGO_PKG_README",
    "CARGO_PKG_RUST_VERSION",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
];

pub fn cmd(args: &[String]) -> Result<()> {
    let mut keep = false;
    for arg in args {
        match arg.as_str() {
            "--keep" => keep = true,
            other => bail!("fresh-clone-test: unknown argument `{other}` (expected --keep)"),
        }
    }
    let root = util::root();
    if let Some(status) = util::probe(util::cmd("git").args(["status", "--porcelain"])) {
        if !status.is_empty() {
            eprintln!(
                "fresh-clone-test: WARNING: the work tree has uncommitted changes; \
                 they are NOT part of the clone:\n{status}"
            );
        }
    }
    let tmp = temp_dir()?;
    let clone = tmp.join("fts");
    eprintln!("fresh-clone-test: cloning into {}", clone.display());
    let res = (|| {
        util::run(
            util::cmd("git")
                .args(["clone", "-q"])
                .arg(&root)
                .arg(&clone),
        )?;
        let mut run = util::cmd("bash");
        run.current_dir(&clone).env("CI", "true").arg(".ci/run");
        for var in CARGO_RUN_VARS {
            run.env_remove(var);
        }
        util::run(&mut run)
    })();
    match &res {
        Ok(()) if !keep => {
            eprintln!("fresh-clone-test: passed; removing {}", tmp.display());
            std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        Ok(()) => eprintln!(
            "fresh-clone-test: passed; clone kept at {}",
            clone.display()
        ),
        Err(_) => eprintln!(
            "fresh-clone-test: FAILED; clone kept for inspection at {} (remove it when done)",
            clone.display()
        ),
    }
    res.context("fresh-clone-test failed")
}

/// A new, empty, uniquely named directory under the system temp dir.
fn temp_dir() -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("fts-fresh-clone-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
