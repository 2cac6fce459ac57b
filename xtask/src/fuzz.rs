//! Fuzzing with cargo-fuzz. Fuzz crates live in `<crate>/fuzz/` (outside the
//! workspace) and are found by scanning for `*/fuzz/Cargo.toml`.
//!
//! cargo-fuzz needs nightly-only rustc flags (`-Zsanitizer=...`); we run it
//! on the stable toolchain with `RUSTC_BOOTSTRAP=1` so CI needs no nightly.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{setup, util};

/// Seconds per target for `cargo xtask fuzz` without `--time`.
const DEFAULT_SECS: u64 = 60;
/// Seconds per target for the smoke run in `cargo xtask ci`.
pub const CI_SECS: u64 = 5;

/// A crate directory that has a `fuzz/` sub-directory with a Cargo.toml.
#[derive(Debug)]
pub struct FuzzCrate {
    /// Crate directory, e.g. `<root>/fts-layout`.
    pub dir: PathBuf,
    /// Crate directory name, e.g. `fts-layout`.
    pub name: String,
}

/// All `*/fuzz/Cargo.toml` under the workspace root, sorted by name.
pub fn discover() -> Result<Vec<FuzzCrate>> {
    let root = util::root();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let entry = entry?;
        let dir = entry.path();
        if dir.join("fuzz").join("Cargo.toml").is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            found.push(FuzzCrate { dir, name });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// `cargo fuzz <sub> --fuzz-dir fuzz`, run from the crate directory.
fn cargo_fuzz(krate: &FuzzCrate, sub: &str) -> Command {
    let mut c = util::cargo();
    c.current_dir(&krate.dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", sub, "--fuzz-dir", "fuzz"]);
    c
}

/// The root `workspace.exclude` does not keep `<member>/fuzz` out of the
/// workspace: cargo treats anything below a member's directory as an explicit
/// member, and exclude loses. A fuzz crate must therefore be its own
/// workspace root; catch that early with a clear message.
fn check_own_workspace(krate: &FuzzCrate) -> Result<()> {
    let manifest = krate.dir.join("fuzz").join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    if !text.lines().any(|l| l.trim() == "[workspace]") {
        bail!(
            "{} has no `[workspace]` table; cargo would treat it as part of the main \
             workspace (the root's `exclude` does not apply below a member's directory). \
             Add an empty `[workspace]` table to it.",
            manifest.display()
        );
    }
    Ok(())
}

pub fn list_targets(krate: &FuzzCrate) -> Result<Vec<String>> {
    let out = util::read(&mut cargo_fuzz(krate, "list"))?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

pub fn build(krate: &FuzzCrate) -> Result<()> {
    check_own_workspace(krate)?;
    util::run(cargo_fuzz(krate, "build").arg("-O"))
}

pub fn run_target(krate: &FuzzCrate, target: &str, secs: u64) -> Result<()> {
    util::run(
        cargo_fuzz(krate, "run")
            .arg("-O")
            .arg(target)
            .arg("--")
            .arg(format!("-max_total_time={secs}")),
    )
}

/// Builds every fuzz crate, then runs each target for `secs` seconds
/// (only `only` if given). Returns how many targets ran.
pub fn build_and_run(only: Option<&str>, secs: u64) -> Result<usize> {
    let crates = discover()?;
    if crates.is_empty() {
        eprintln!("fuzz: no */fuzz/Cargo.toml in the workspace, nothing to do");
        return Ok(0);
    }
    let mut plan: Vec<(&FuzzCrate, Vec<String>)> = Vec::new();
    for krate in &crates {
        eprintln!("fuzz: {}: building", krate.name);
        build(krate)?;
        let targets: Vec<String> = list_targets(krate)?
            .into_iter()
            .filter(|t| only.is_none() || only == Some(t.as_str()))
            .collect();
        if !targets.is_empty() {
            plan.push((krate, targets));
        }
    }
    if plan.is_empty() {
        match only {
            Some(t) => bail!(
                "fuzz: no fuzz target named `{t}` in {}",
                crates
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => eprintln!("fuzz: the fuzz crates define no targets"),
        }
    }
    let mut ran = 0;
    for (krate, targets) in plan {
        for target in targets {
            eprintln!("fuzz: {}: running {target} for {secs}s", krate.name);
            run_target(krate, &target, secs)
                .with_context(|| format!("fuzz target {}/{target}", krate.name))?;
            ran += 1;
        }
    }
    Ok(ran)
}

/// `cargo xtask fuzz [TARGET] [--time SECS]`.
pub fn cmd(args: &[String]) -> Result<()> {
    let mut target: Option<&str> = None;
    let mut secs = DEFAULT_SECS;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--time" => {
                let v = it.next().context("fuzz: --time needs a value (seconds)")?;
                secs = parse_secs(v)?;
            }
            a if a.starts_with('-') => match a.strip_prefix("--time=") {
                Some(v) => secs = parse_secs(v)?,
                None => bail!("fuzz: unknown option `{a}`"),
            },
            a => {
                if let Some(prev) = target {
                    bail!("fuzz: more than one target given (`{prev}`, `{a}`)");
                }
                target = Some(a);
            }
        }
    }
    if discover()?.is_empty() {
        eprintln!("fuzz: no */fuzz/Cargo.toml in the workspace, nothing to do");
        return Ok(());
    }
    setup::setup(setup::Options {
        vm: false,
        fuzz: true,
    })?;
    let ran = build_and_run(target, secs)?;
    eprintln!("fuzz: ran {ran} target(s) for {secs}s each");
    Ok(())
}

fn parse_secs(v: &str) -> Result<u64> {
    v.parse()
        .with_context(|| format!("fuzz: --time expects whole seconds, got `{v}`"))
}
