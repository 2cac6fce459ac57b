//! Fuzzing with cargo-fuzz. Fuzz crates live in `<crate>/fuzz/` (outside the
//! workspace) and are found by scanning for `*/fuzz/Cargo.toml`.
//!
//! cargo-fuzz needs nightly-only rustc flags (`-Zsanitizer=...`); we run it
//! on the stable toolchain with `RUSTC_BOOTSTRAP=1` so CI needs no nightly.
//!
//! Each target runs on two corpus directories: a scratch directory under
//! `target/fuzz-corpus/<crate>/<target>/` (git-ignored; emptied before each
//! run unless `--keep-corpus`), where libFuzzer writes what it finds, and
//! the committed seed corpus `<crate>/fuzz/seeds/<target>/`, which it only
//! reads. The seeds are real records and control areas cut from devices
//! that `fts format` and real transfers wrote, and real SCSI responses of
//! tgtd; `cargo xtask fuzz --seed-corpus` regenerates them. Without them
//! libFuzzer starts from nothing and, for a whole-master target, never gets
//! past the length check. Crashers are kept as named regression inputs in
//! `<crate>/fuzz/regressions/<target>/`, replayed by `cargo test`
//! (`<crate>/tests/fuzz_regressions.rs`).
//!
//! Every run ends with a table per target: executions, coverage (libFuzzer's
//! `cov`, covered edges, and `ft`, features) after loading the seeds and at
//! the end, corpus size and crashes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{setup, util};

/// Seconds per target for `cargo xtask fuzz` without `--time`.
const DEFAULT_SECS: u64 = 60;
/// Seconds per target for the run in `cargo xtask ci` (times [`TIME_SCALE`]).
/// From the seed corpus every record and SCSI target reaches 99% of the
/// edges (`cov`) of a 60-second run within 10 s, `check_master` 98.7% within
/// 30 s (`fts-layout/fuzz/README.md` has the numbers): about 2.5 minutes
/// of fuzzing for the 13 targets.
pub const CI_SECS: u64 = 10;

/// Targets that get a multiple of the time per target: `check_master` runs
/// whole control areas (52-72 KiB) and is ~25 times slower per input than
/// the record targets, and keeps finding edges for longer.
const TIME_SCALE: &[(&str, u64)] = &[("check_master", 3)];

/// libFuzzer's `-max_len` for a target not listed in [`MAX_LEN`].
const DEFAULT_MAX_LEN: usize = 4096;
/// `-max_len` per target: what the target reads, with room to grow.
/// `check_master` reads a master's whole control area (LB 0 to the end of
/// the pointer tables) and its two backup LBs: 60 KiB for the smallest
/// geometry `fts format` accepts (1 connection, 2 ring entries), 80 KiB for
/// the 2-connection seeds; 128 KiB leaves room for up to 4 connections. The record targets
/// read one 512-byte record (the MCB target also up to 8 device sizes after
/// it); longer inputs would only be ignored bytes.
const MAX_LEN: &[(&str, usize)] = &[
    ("check_master", 128 << 10),
    ("mcb", 1024),
    ("cmd_area", 1024),
    ("lease", 1024),
    ("lock_record", 1024),
    ("pid_entry", 1024),
    ("ptr_chunk", 1024),
    ("sdt_entry", 1024),
    ("seg_header", 512),
];

/// A crate directory that has a `fuzz/` sub-directory with a Cargo.toml.
#[derive(Debug)]
pub struct FuzzCrate {
    /// Crate directory, e.g. `<root>/fts-layout`.
    pub dir: PathBuf,
    /// Crate directory name, e.g. `fts-layout`.
    pub name: String,
}

impl FuzzCrate {
    /// The committed seed corpus of `target`.
    pub fn seeds(&self, target: &str) -> PathBuf {
        self.dir.join("fuzz").join("seeds").join(target)
    }

    /// Where libFuzzer writes what it finds for `target` (git-ignored).
    fn scratch(&self, target: &str) -> PathBuf {
        util::root()
            .join("target")
            .join("fuzz-corpus")
            .join(&self.name)
            .join(target)
    }

    /// Where cargo-fuzz has libFuzzer write crashing inputs of `target`.
    fn artifacts(&self, target: &str) -> PathBuf {
        self.dir.join("fuzz").join("artifacts").join(target)
    }
}

/// All `*/fuzz/Cargo.toml` under the workspace root, sorted by name.
pub fn discover() -> Result<Vec<FuzzCrate>> {
    let root = util::root();
    let mut found = Vec::new();
    for entry in fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
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
    let text =
        fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
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

/// Seconds `target` runs for when each target gets `secs`.
fn target_secs(target: &str, secs: u64) -> u64 {
    TIME_SCALE
        .iter()
        .find(|(t, _)| *t == target)
        .map_or(secs, |(_, k)| secs.saturating_mul(*k))
}

fn max_len(target: &str) -> usize {
    MAX_LEN
        .iter()
        .find(|(t, _)| *t == target)
        .map_or(DEFAULT_MAX_LEN, |(_, n)| *n)
}

/// What one fuzz run of one target did, from libFuzzer's output.
#[derive(Debug, Clone, Default)]
pub struct TargetStats {
    /// Fuzz crate, e.g. `fts-layout`.
    pub krate: String,
    /// Target name.
    pub target: String,
    /// Wall time of the run, build check included.
    pub secs: f64,
    /// `-max_len` given.
    pub max_len: usize,
    /// Seed files given (the committed corpus).
    pub seeds: usize,
    /// `stat::number_of_executed_units`.
    pub execs: Option<u64>,
    /// `stat::average_exec_per_sec`.
    pub execs_per_sec: Option<u64>,
    /// `cov:` and `ft:` once the seeds were loaded (libFuzzer's `INITED` line).
    pub cov_inited: Option<u64>,
    pub ft_inited: Option<u64>,
    /// `cov:` and `ft:` at the end.
    pub cov: Option<u64>,
    pub ft: Option<u64>,
    /// `corp:` at the end: units and bytes in libFuzzer's in-memory corpus.
    pub corpus_units: Option<u64>,
    pub corpus_bytes: Option<u64>,
    /// `stat::new_units_added`.
    pub new_units: Option<u64>,
    /// Crashing inputs libFuzzer wrote (crash-*, leak-*, timeout-*, oom-*).
    pub crashes: Vec<PathBuf>,
    /// The run's whole output.
    pub log: PathBuf,
    /// Whether `cargo fuzz run` exited successfully.
    pub ok: bool,
}

/// The number after `key` (e.g. `cov: `) in `line`; `corp: 12/3456b` gives 12.
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `corp: 12/3456b` (or `.../34Kb`, `.../3Mb`): units and bytes.
fn corp(line: &str) -> Option<(u64, u64)> {
    let rest = line[line.find("corp:")? + 5..].trim_start();
    let word = rest.split_whitespace().next()?;
    let (units, size) = word.split_once('/')?;
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let scale = match &size[digits.len()..] {
        "b" => 1,
        "Kb" => 1 << 10,
        "Mb" => 1 << 20,
        _ => return None,
    };
    Some((units.parse().ok()?, digits.parse::<u64>().ok()? * scale))
}

/// Fills the counters of `s` from libFuzzer's output `log`.
fn parse_log(log: &str, s: &mut TargetStats) {
    for line in log.lines() {
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            s.execs = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            s.execs_per_sec = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("stat::new_units_added:") {
            s.new_units = v.trim().parse().ok();
        } else if line.starts_with('#') && line.contains(" cov: ") {
            if line.contains("INITED") {
                s.cov_inited = field(line, "cov:");
                s.ft_inited = field(line, "ft:");
            }
            s.cov = field(line, "cov:");
            s.ft = field(line, "ft:");
            if let Some((units, bytes)) = corp(line) {
                s.corpus_units = Some(units);
                s.corpus_bytes = Some(bytes);
            }
        }
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

/// Runs `target` for `secs` seconds ([`TIME_SCALE`] applied) from its seed
/// corpus and returns what libFuzzer reported. A crash is reported in the
/// stats, not as `Err`.
pub fn run_target(
    krate: &FuzzCrate,
    target: &str,
    secs: u64,
    keep_corpus: bool,
) -> Result<TargetStats> {
    let secs = target_secs(target, secs);
    let seeds = krate.seeds(target);
    let seed_files = files_in(&seeds).len();
    if seed_files == 0 {
        eprintln!(
            "fuzz: WARNING: no seed corpus in {} (cargo xtask fuzz --seed-corpus makes it); \
             {target} starts from nothing",
            seeds.display()
        );
        fs::create_dir_all(&seeds).with_context(|| format!("creating {}", seeds.display()))?;
    }
    let scratch = krate.scratch(target);
    if !keep_corpus && scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("emptying {}", scratch.display()))?;
    }
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let artifacts = krate.artifacts(target);
    let before = files_in(&artifacts);
    let log_path = scratch.with_extension("log");
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let log_err = log.try_clone()?;

    let len = max_len(target);
    let mut c = cargo_fuzz(krate, "run");
    c.arg("-O")
        .arg(target)
        .arg(&scratch)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-max_len={len}"))
        .arg("-print_final_stats=1")
        .arg("-timeout=10");
    eprintln!(
        "fuzz: {}: {target} for {secs}s, {seed_files} seeds, -max_len={len} (output in {})",
        krate.name,
        log_path.display()
    );
    eprintln!("$ {}", util::display(&c));
    let started = Instant::now();
    let status = c
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .status()
        .with_context(|| format!("could not start `{}`", util::display(&c)))?;
    let mut s = TargetStats {
        krate: krate.name.clone(),
        target: target.to_string(),
        secs: started.elapsed().as_secs_f64(),
        max_len: len,
        seeds: seed_files,
        log: log_path.clone(),
        ok: status.success(),
        ..TargetStats::default()
    };
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    parse_log(&text, &mut s);
    s.crashes = files_in(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if !s.ok {
        eprintln!(
            "fuzz: {}/{target} failed ({status}); the end of its output:",
            krate.name
        );
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("    {l}");
        }
    }
    Ok(s)
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

/// A byte count for the table: `812b`, `13.4K`, `26.0M`.
fn bytes(v: Option<u64>) -> String {
    match v {
        None => "?".to_string(),
        Some(b) if b < 1 << 10 => format!("{b}b"),
        Some(b) if b < 1 << 20 => format!("{:.1}K", b as f64 / 1024.0),
        Some(b) => format!("{:.1}M", b as f64 / (1024.0 * 1024.0)),
    }
}

/// The per-target table: target, time, executions, coverage, corpus, crashes.
pub fn table(stats: &[TargetStats]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:>5} {:>7} {:>10} {:>8} {:>13} {:>13} {:>6} {:>13} {:>7}",
        "target",
        "secs",
        "max_len",
        "execs",
        "exec/s",
        "cov seed→end",
        "ft seed→end",
        "seeds",
        "corpus",
        "crashes"
    );
    for s in stats {
        let _ = writeln!(
            out,
            "{:<26} {:>5.0} {:>7} {:>10} {:>8} {:>13} {:>13} {:>6} {:>13} {:>7}",
            format!("{}/{}", s.krate, s.target),
            s.secs,
            s.max_len,
            opt(s.execs),
            opt(s.execs_per_sec),
            format!("{}→{}", opt(s.cov_inited), opt(s.cov)),
            format!("{}→{}", opt(s.ft_inited), opt(s.ft)),
            s.seeds,
            format!("{}/{}", opt(s.corpus_units), bytes(s.corpus_bytes)),
            if s.ok || !s.crashes.is_empty() {
                s.crashes.len().to_string()
            } else {
                "FAILED".to_string()
            },
        );
    }
    let execs: u64 = stats.iter().filter_map(|s| s.execs).sum();
    let secs: f64 = stats.iter().map(|s| s.secs).sum();
    let _ = writeln!(
        out,
        "{} target(s), {secs:.0}s, {execs} executions, {} crash(es)",
        stats.len(),
        stats.iter().map(|s| s.crashes.len()).sum::<usize>()
    );
    out
}

/// Builds every fuzz crate, then runs each target for `secs` seconds
/// ([`TIME_SCALE`] applied; only `only` if given), prints the per-target table and fails if a
/// target crashed or could not run. Returns the stats of every target.
pub fn build_and_run(only: Option<&str>, secs: u64) -> Result<Vec<TargetStats>> {
    run_all(only, secs, false)
}

fn run_all(only: Option<&str>, secs: u64, keep_corpus: bool) -> Result<Vec<TargetStats>> {
    let crates = discover()?;
    if crates.is_empty() {
        eprintln!("fuzz: no */fuzz/Cargo.toml in the workspace, nothing to do");
        return Ok(Vec::new());
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
    // Sequential on purpose: one libFuzzer process per core would halve
    // every target's executions on a small CI machine anyway.
    let mut stats = Vec::new();
    for (krate, targets) in plan {
        for target in targets {
            let s = run_target(krate, &target, secs, keep_corpus)
                .with_context(|| format!("fuzz target {}/{target}", krate.name))?;
            eprintln!(
                "fuzz: {}/{target}: {} execs, cov {}, ft {}, {} crash(es)",
                krate.name,
                opt(s.execs),
                opt(s.cov),
                opt(s.ft),
                s.crashes.len()
            );
            stats.push(s);
        }
    }
    eprintln!();
    eprint!("{}", table(&stats));
    let bad: Vec<&TargetStats> = stats
        .iter()
        .filter(|s| !s.ok || !s.crashes.is_empty())
        .collect();
    if !bad.is_empty() {
        let mut msg = String::new();
        for s in &bad {
            let _ = write!(
                msg,
                "\n  {}/{} (output: {})",
                s.krate,
                s.target,
                s.log.display()
            );
            for c in &s.crashes {
                let _ = write!(msg, "\n    crashing input: {}", c.display());
            }
        }
        bail!(
            "fuzz: {} target(s) crashed or failed:{msg}\n\
             Keep each crasher as a regression: copy it to \
             <crate>/fuzz/regressions/<target>/<what-it-is>, fix the bug, then \
             `FTS_FUZZ_BLESS=1 cargo test -p <crate> --test fuzz_regressions` records \
             its expected outcome next to it.",
            bad.len()
        );
    }
    Ok(stats)
}

/// `cargo xtask fuzz [TARGET] [--time SECS] [--keep-corpus] [--seed-corpus]`.
pub fn cmd(args: &[String]) -> Result<()> {
    let mut target: Option<&str> = None;
    let mut secs = DEFAULT_SECS;
    let mut keep_corpus = false;
    let mut seed_corpus = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--time" => {
                let v = it.next().context("fuzz: --time needs a value (seconds)")?;
                secs = parse_secs(v)?;
            }
            "--keep-corpus" => keep_corpus = true,
            "--seed-corpus" => seed_corpus = true,
            a if a.starts_with('-') => match a.strip_prefix("--time=") {
                Some(v) => secs = parse_secs(v)?,
                None => bail!(
                    "fuzz: unknown option `{a}` (expected --time SECS, --keep-corpus, --seed-corpus)"
                ),
            },
            a => {
                if let Some(prev) = target {
                    bail!("fuzz: more than one target given (`{prev}`, `{a}`)");
                }
                target = Some(a);
            }
        }
    }
    if seed_corpus {
        return seeds::generate();
    }
    if discover()?.is_empty() {
        eprintln!("fuzz: no */fuzz/Cargo.toml in the workspace, nothing to do");
        return Ok(());
    }
    setup::setup(setup::Options {
        vm: false,
        fuzz: true,
    })?;
    let stats = run_all(target, secs, keep_corpus)?;
    eprintln!(
        "fuzz: ran {} target(s) for {secs}s each ({})",
        stats.len(),
        TIME_SCALE
            .iter()
            .map(|(t, k)| format!("{t}: {}s", secs * k))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn parse_secs(v: &str) -> Result<u64> {
    v.parse()
        .with_context(|| format!("fuzz: --time expects whole seconds, got `{v}`"))
}

/// `cargo xtask fuzz --seed-corpus`: the committed seed corpora.
///
/// fts-layout: `fts format` writes small master devices (files), real `fts`
/// processes move files through them, and every record is cut out of
/// snapshots taken when formatted, while connections are open and after
/// they closed, at the offsets docs/FORMAT.md gives (read from each
/// snapshot's own MCB). A master held by `fts hold-lock` on a tgtd LUN
/// gives a held lock record. fts-scsi: the ignored test
/// `fts-scsi/tests/fuzz_seeds.rs` captures responses of a real tgtd.
/// Needs root and tgt (`cargo xtask setup`). Each target's seed directory
/// is replaced as a whole; records carry fresh UUIDs and times every run.
mod seeds {
    use super::*;

    const LB: usize = 4096;
    const REC: usize = 512;
    /// Waits for `fts` processes: generous, a debug build on a busy machine.
    const WAIT: Duration = Duration::from_secs(60);

    /// Seed files per target, deduplicated by content.
    #[derive(Debug, Default)]
    struct Corpus {
        targets: BTreeMap<String, Vec<(String, Vec<u8>)>>,
    }

    impl Corpus {
        fn add(&mut self, target: &str, name: String, bytes: &[u8]) {
            let files = self.targets.entry(target.to_string()).or_default();
            if !files.iter().any(|(_, b)| b == bytes) {
                files.push((name, bytes.to_vec()));
            }
        }

        fn write(&self, krate: &FuzzCrate) -> Result<()> {
            for (target, files) in &self.targets {
                let dir = krate.seeds(target);
                if dir.exists() {
                    fs::remove_dir_all(&dir)
                        .with_context(|| format!("emptying {}", dir.display()))?;
                }
                fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                for (name, bytes) in files {
                    let p = dir.join(name);
                    fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
                }
                let total: usize = files.iter().map(|(_, b)| b.len()).sum();
                eprintln!(
                    "seeds: {}/{target}: {} file(s), {total} bytes",
                    krate.name,
                    files.len()
                );
            }
            Ok(())
        }
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        b.get(off..off + 4)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        b.get(off..off + 8)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    }

    /// Bytes `off..off + len` of LB `lb` of `image`.
    fn at(image: &[u8], lb: u64, off: usize, len: usize) -> Result<&[u8]> {
        let start = usize::try_from(lb)? * LB + off;
        image
            .get(start..start + len)
            .with_context(|| format!("the image ends before LB {lb} +{off}"))
    }

    /// Where a master's structures are, from its MCB (docs/FORMAT.md).
    #[derive(Debug)]
    struct Map {
        connections: u32,
        entrynum: usize,
        ptr_start: u64,
        ptr_table_lbs: u64,
        chunks_per_table: u32,
        seg_start: u64,
        seg_lbs: u64,
    }

    impl Map {
        fn read(image: &[u8]) -> Result<Map> {
            let mcb = at(image, 5, 0, REC)?;
            if &mcb[..4] != b"FMCB" {
                bail!("no MCB at LB 5");
            }
            let ring = u32_at(mcb, 128);
            Ok(Map {
                connections: u32_at(mcb, 84),
                entrynum: u32_at(mcb, 104) as usize,
                ptr_start: u64_at(mcb, 112),
                ptr_table_lbs: u64::from(u32_at(mcb, 172)),
                chunks_per_table: ring.div_ceil(15),
                seg_start: u64_at(mcb, 120),
                seg_lbs: u64::from(u32_at(mcb, 68)),
            })
        }

        /// End of the pointer tables: what `check_master` reads.
        fn control_end(&self) -> u64 {
            self.ptr_start + 2 * u64::from(self.connections) * self.ptr_table_lbs
        }
    }

    /// Cuts every record out of a master `image` (and the LB 5 of its
    /// `secondaries`), naming each seed `<tag>-<where>`.
    fn cut(c: &mut Corpus, tag: &str, image: &[u8], secondaries: &[Vec<u8>]) -> Result<()> {
        let m = Map::read(image)?;
        let end = usize::try_from(m.control_end())? * LB;
        // What a check reads: LB 0 to the end of the pointer tables, then
        // the two backup LBs of a v1.1 layout (sdt_backup_ptr, MCB +440).
        let mut master = image
            .get(..end)
            .context("image shorter than its control area")?
            .to_vec();
        let backup_lb = u64_at(at(image, 5, 0, REC)?, 440);
        if backup_lb > 0 {
            master.extend_from_slice(at(image, backup_lb, 0, 2 * LB)?);
        }
        c.add("check_master", tag.to_string(), &master);
        // With connections in the table, also as a checker an hour later
        // sees it (its clock in LB 0's first 8 bytes, which fts never
        // writes): the connections show no life, so check reports them
        // dead and repair_plan frees them.
        let allocated = (1..=m.connections)
            .any(|s| u32_at(&image[(8 + 3 * (s as usize - 1)) * LB..], 28) & 1 != 0);
        if allocated {
            let later = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos() as u64
                + 3_600_000_000_000;
            master[..8].copy_from_slice(&(later & !1).to_le_bytes());
            c.add("check_master", format!("{tag}-an-hour-later"), &master);
        }
        // The MCB followed by every device's size, as the mcb target reads it.
        let sizes: Vec<u8> = (0..m.entrynum)
            .map(|i| at(image, 7, i * REC + 56, 8))
            .collect::<Result<Vec<_>>>()?
            .concat();
        c.add(
            "mcb",
            format!("{tag}-master"),
            &[at(image, 5, 0, REC)?, &sizes].concat(),
        );
        for (i, s) in secondaries.iter().enumerate() {
            let copy = [at(s, 5, 0, REC)?, &sizes].concat();
            c.add("mcb", format!("{tag}-secondary{}", i + 2), &copy);
        }
        c.add("lock_record", tag.to_string(), at(image, 6, 0, REC)?);
        for i in 0..m.entrynum {
            c.add(
                "sdt_entry",
                format!("{tag}-entry{}", i + 1),
                at(image, 7, i * REC, REC)?,
            );
        }
        for slot in 1..=m.connections {
            let lb = 8 + 3 * u64::from(slot - 1);
            c.add(
                "pid_entry",
                format!("{tag}-slot{slot}"),
                at(image, lb, 0, REC)?,
            );
            for (d, role) in ["initiator", "connector"].iter().enumerate() {
                let side = lb + 1 + d as u64;
                let name = format!("{tag}-slot{slot}-{role}");
                c.add("lease", name.clone(), at(image, side, 0, REC)?);
                c.add("cmd_area", name.clone(), at(image, side, REC, REC)?);
                let table = m.ptr_start + (u64::from(slot - 1) * 2 + d as u64) * m.ptr_table_lbs;
                for chunk in 0..m.chunks_per_table {
                    let rec = at(
                        image,
                        table + u64::from(chunk) / 8,
                        (chunk % 8) as usize * REC,
                        REC,
                    )?;
                    c.add("ptr_chunk", format!("{name}-chunk{chunk}"), rec);
                }
            }
        }
        // Segment headers of the data segments that were written; a few of
        // each snapshot are enough (they differ in seq, flags and length).
        let mut found = 0;
        let mut seg = 0u64;
        while let Ok(h) = at(image, m.seg_start + seg * m.seg_lbs, 0, 64) {
            if &h[..4] == b"FSEG" && found < 6 {
                c.add("seg_header", format!("{tag}-seg{}", seg + 1), h);
                found += 1;
            }
            seg += 1;
        }
        Ok(())
    }

    /// A child process that is killed (by its pid) if still running when
    /// dropped, so no path leaves an `fts` behind.
    struct Kid {
        child: Child,
        what: String,
    }

    impl Kid {
        fn spawn(c: &mut Command, what: &str, out: &Path) -> Result<Kid> {
            let log = File::create(out)?;
            let err = log.try_clone()?;
            let child = c
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(err))
                .spawn()
                .with_context(|| format!("starting {what}"))?;
            Ok(Kid {
                child,
                what: what.to_string(),
            })
        }

        fn stdin(&mut self) -> Result<&mut ChildStdin> {
            self.child
                .stdin
                .as_mut()
                .with_context(|| format!("{} has no stdin", self.what))
        }

        /// Closes stdin and waits (bounded) for a successful exit.
        fn finish(mut self) -> Result<()> {
            drop(self.child.stdin.take());
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(st) = self.child.try_wait()? {
                    if !st.success() {
                        bail!("{} failed: {st}", self.what);
                    }
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("{} did not exit within {WAIT:?}", self.what);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    impl Drop for Kid {
        fn drop(&mut self) {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while !ready() {
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Result<TempDir> {
            let p = std::env::temp_dir().join(format!("fts-fuzz-seeds-{}", std::process::id()));
            if p.exists() {
                fs::remove_dir_all(&p)?;
            }
            fs::create_dir_all(&p)?;
            Ok(TempDir(p))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    struct Fts {
        bin: PathBuf,
        dir: PathBuf,
        /// Global options for every command (`--block-size 4096`).
        globals: Vec<String>,
    }

    impl Fts {
        fn cmd(&self, device: &str, name: &str) -> Command {
            let mut c = Command::new(&self.bin);
            c.current_dir(&self.dir)
                .args(["-d", device, "-n", name])
                .args(&self.globals)
                .stdin(Stdio::null());
            c
        }

        fn run(&self, device: &str, args: &[&str]) -> Result<()> {
            let mut c = self.cmd(device, "seed");
            c.args(args);
            util::read(&mut c).map(|_| ())
        }

        fn read(&self, file: &str) -> Result<Vec<u8>> {
            let p = self.dir.join(file);
            fs::read(&p).with_context(|| format!("reading {}", p.display()))
        }

        fn serve(&self, device: &str, name: &str) -> Result<Kid> {
            let root = self.dir.join(format!("root-{name}"));
            fs::create_dir_all(&root)?;
            let mut c = self.cmd(device, name);
            c.arg("serve").arg("--root").arg(&root);
            Kid::spawn(
                &mut c,
                "fts serve",
                &self.dir.join(format!("serve-{name}.log")),
            )
        }

        /// `fts shell SERVER` reading its commands from a pipe kept open.
        fn shell(&self, device: &str, name: &str, server: &str) -> Result<(Kid, PathBuf)> {
            let out = self.dir.join(format!("shell-{name}.log"));
            let mut c = self.cmd(device, name);
            c.args(["shell", server]).stdin(Stdio::piped());
            Ok((Kid::spawn(&mut c, "fts shell", &out)?, out))
        }

        /// Writes a file of `len` pseudo-random bytes named `name`.
        fn payload(&self, name: &str, len: usize, seed: u32) -> Result<()> {
            let mut x = seed.wrapping_mul(2_654_435_761) | 1;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            fs::write(self.dir.join(name), bytes)?;
            Ok(())
        }
    }

    /// The shell's output ends with the `pwd` answer `/`: every command
    /// before it has completed.
    fn shell_idle(out: &Path, pwds: usize) -> bool {
        fs::read_to_string(out)
            .map(|s| s.lines().filter(|l| *l == "/").count() >= pwds)
            .unwrap_or(false)
    }

    fn layout(fts: &Fts, c: &mut Corpus) -> Result<()> {
        // c1: the smallest geometry fts accepts: 1 connection, 2 ring
        // entries, 4 KiB segments (the control area is 13 LBs, 52 KiB).
        fts.run(
            "c1.img",
            &[
                "format",
                "--size",
                "1M",
                "--max-connections",
                "1",
                "--ring-entries",
                "2",
                "--batch",
                "1",
                "--segment-size",
                "4K",
            ],
        )?;
        cut(c, "c1-formatted", &fts.read("c1.img")?, &[])?;
        fts.payload("p1.bin", 30_000, 1)?;
        {
            let _server = fts.serve("c1.img", "b")?;
            let (mut shell, out) = fts.shell("c1.img", "a", "b")?;
            writeln!(
                shell.stdin()?,
                "put p1.bin p1.bin\nget p1.bin back.bin\ndir\npwd"
            )?;
            wait_for("the c1 transfer", || shell_idle(&out, 1))?;
            cut(c, "c1-connected", &fts.read("c1.img")?, &[])?;
            writeln!(shell.stdin()?, "quit")?;
            shell.finish()?;
            cut(c, "c1-closed", &fts.read("c1.img")?, &[])?;
        }

        // c2: two connections at once on an emulated 4Kn device, 17 ring
        // entries (2 pointer chunks per table, the second partly used),
        // 8 KiB segments, batch 4.
        {
            let fts = &Fts {
                globals: vec!["--block-size".into(), "4096".into()],
                bin: fts.bin.clone(),
                dir: fts.dir.clone(),
            };
            fts.run(
                "c2.img",
                &[
                    "format",
                    "--size",
                    "1M",
                    "--max-connections",
                    "2",
                    "--ring-entries",
                    "17",
                    "--batch",
                    "4",
                    "--segment-size",
                    "8K",
                ],
            )?;
            cut(c, "c2-formatted", &fts.read("c2.img")?, &[])?;
            fts.payload("p2.bin", 100_000, 2)?;
            let text: String = (0..200)
                .map(|i| format!("line {i} of a text file\n"))
                .collect();
            fs::write(fts.dir.join("p3.txt"), text)?;
            {
                let dev = "c2.img";
                let _server = fts.serve(dev, "b")?;
                let (mut a, out_a) = fts.shell(dev, "a", "b")?;
                let (mut z, out_z) = fts.shell(dev, "z", "b")?;
                writeln!(a.stdin()?, "put p2.bin p2.bin\nget p2.bin back2.bin\npwd")?;
                writeln!(z.stdin()?, "text\nput p3.txt p3.txt\ndir\npwd")?;
                wait_for("the c2 transfers", || {
                    shell_idle(&out_a, 1) && shell_idle(&out_z, 1)
                })?;
                cut(c, "c2-connected", &fts.read(dev)?, &[])?;
                writeln!(a.stdin()?, "quit")?;
                a.finish()?;
                cut(c, "c2-one-closed", &fts.read(dev)?, &[])?;
                writeln!(z.stdin()?, "quit")?;
                z.finish()?;
                cut(c, "c2-closed", &fts.read(dev)?, &[])?;
            }
        }

        // sec: a master with two secondary devices (3 SDT entries, MCB
        // copies on the secondaries).
        for (f, size) in [("s2.img", 1u64 << 20), ("s3.img", 2 << 20)] {
            File::create(fts.dir.join(f))?.set_len(size)?;
        }
        fts.run(
            "sec.img",
            &[
                "format",
                "--size",
                "1M",
                "--max-connections",
                "1",
                "--ring-entries",
                "2",
                "--batch",
                "1",
                "--segment-size",
                "8K",
                "--secondary",
                "s2.img",
                "--secondary",
                "s3.img",
            ],
        )?;
        let secs = [fts.read("s2.img")?, fts.read("s3.img")?];
        cut(c, "sec-formatted", &fts.read("sec.img")?, &secs)?;

        check_master_geometries(c);
        Ok(())
    }

    /// Inputs for check_master's other mode (first byte odd): bytes 1-7
    /// choose a geometry that the target formats in memory (byte 3 bit 7:
    /// v1.0), then 6-byte patches (offset u32 into the control area and
    /// the backups, xor, reseal) corrupt it. See
    /// `fts-layout/fuzz/fuzz_targets/common.rs`.
    fn check_master_geometries(c: &mut Corpus) {
        let patch = |off: u32, xor: u8, reseal: u8| {
            let mut p = off.to_le_bytes().to_vec();
            p.extend([xor, reseal]);
            p
        };
        let lb = |n: u32, off: u32| n * LB as u32 + off;
        let smallest = vec![1u8, 0, 0, 0, 0, 0, 0, 0];
        c.add("check_master", "geometry-smallest".into(), &smallest);
        let mut two = vec![1u8, 3, 15, 2, 3, 1, 1, 4];
        two.extend(patch(lb(8, 28), 0x03, 1)); // PID 1: ALLOCATED|PROCESSING
        two.extend(patch(lb(8, 72), b'a', 1)); // pro_requestor "a"
        two.extend(patch(lb(8, 104), b'b', 1)); // pro_requestee "b"
        two.extend(patch(lb(9, 24), 0x03, 1)); // lease role 1 → 2
        c.add(
            "check_master",
            "geometry-secondaries-pid-in-use".into(),
            &two,
        );
        let mut bad = vec![1u8, 1, 20, 0, 1, 3, 3, 7];
        bad.extend(patch(lb(5, 84), 0x01, 1)); // MCB connections changed
        bad.extend(patch(lb(7, 48), 0x10, 1)); // SDT segment count
        c.add("check_master", "geometry-inconsistent-mcb".into(), &bad);
        c.add(
            "check_master",
            "geometry-v1.0".into(),
            &[1u8, 0, 0, 0x80, 0, 0, 0, 0],
        );
        // The smallest geometry: 13 LBs of control area, then the backup
        // SDT and MCB. A damaged primary MCB (read from its backup), and a
        // damaged backup MCB.
        let mut primary = vec![1u8, 0, 0, 0, 0, 0, 0, 0];
        primary.extend(patch(lb(5, 100), 0xff, 0));
        c.add("check_master", "geometry-mcb-damaged".into(), &primary);
        let mut backup = vec![1u8, 0, 0, 0, 0, 0, 0, 0];
        backup.extend(patch(lb(14, 84), 0x02, 1));
        c.add(
            "check_master",
            "geometry-backup-mcb-damaged".into(),
            &backup,
        );
    }

    /// A held lock record and a 4096-byte-block master, from `fts
    /// hold-lock` with a persistent reservation on a tgtd LUN.
    fn iscsi(fts: &Fts, c: &mut Corpus) -> Result<()> {
        if let Err(why) = ::hil::tgt::available() {
            bail!("seeds need tgt: {why}");
        }
        let mut tgt =
            ::hil::tgt::Tgtd::start(::hil::tgt::TgtdOptions::default()).context("starting tgtd")?;
        let lun = tgt.add_lun(4 << 20, 4096).context("adding a LUN")?;
        fts.run(
            &lun.url,
            &[
                "--lock",
                "pr",
                "format",
                "--max-connections",
                "1",
                "--ring-entries",
                "2",
                "--batch",
                "1",
                "--segment-size",
                "4K",
            ],
        )?;
        let out = fts.dir.join("hold.log");
        let mut hold = fts.cmd(&lun.url, "holder");
        hold.args(["--lock", "pr", "hold-lock", "5"]);
        let holder = Kid::spawn(&mut hold, "fts hold-lock", &out)?;
        wait_for("fts hold-lock to hold", || {
            fs::read_to_string(&out).is_ok_and(|s| s.contains("holding"))
        })?;
        let image =
            fs::read(&lun.backing).with_context(|| format!("reading {}", lun.backing.display()))?;
        cut(c, "iscsi4k-lock-held", &image, &[])?;
        holder.finish()?;
        let image = fs::read(&lun.backing)?;
        cut(c, "iscsi4k-lock-released", &image, &[])?;
        tgt.stop().context("stopping tgtd")?;
        Ok(())
    }

    pub fn generate() -> Result<()> {
        let crates = discover()?;
        let find = |name: &str| {
            crates
                .iter()
                .find(|k| k.name == name)
                .with_context(|| format!("no {name}/fuzz"))
        };
        let (layout_crate, scsi_crate) = (find("fts-layout")?, find("fts-scsi")?);
        util::run(util::cargo().args(["build", "-p", "fts-cli", "--bin", "fts"]))?;
        let tmp = TempDir::new()?;
        let fts = Fts {
            bin: util::root().join("target/debug/fts"),
            dir: tmp.0.clone(),
            globals: Vec::new(),
        };
        let mut corpus = Corpus::default();
        layout(&fts, &mut corpus)?;
        iscsi(&fts, &mut corpus)?;
        corpus.write(layout_crate)?;

        // fts-scsi: real tgtd responses, captured by the crate's own
        // transport in an ignored test that writes the seed directories.
        let out = scsi_crate.dir.join("fuzz").join("seeds");
        if out.exists() {
            fs::remove_dir_all(&out).with_context(|| format!("emptying {}", out.display()))?;
        }
        util::run(
            util::cargo()
                .args([
                    "test",
                    "-p",
                    "fts-scsi",
                    "--features",
                    "iscsi",
                    "--test",
                    "fuzz_seeds",
                    "--",
                    "--ignored",
                    "--nocapture",
                ])
                .env("FTS_FUZZ_SEEDS_OUT", &out),
        )?;
        for t in list_dirs(&out) {
            eprintln!(
                "seeds: fts-scsi/{}: {} file(s)",
                t.file_name().unwrap_or_default().to_string_lossy(),
                files_in(&t).len()
            );
        }
        Ok(())
    }

    fn list_dirs(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.retain(|p| p.is_dir());
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libfuzzer_output() {
        let log = "\
INFO: Seed: 123
#2\tINITED cov: 105 ft: 300 corp: 40/1200Kb exec/s: 0 rss: 40Mb
#4096\tpulse  cov: 110 ft: 320 corp: 44/1210Kb lim: 4096 exec/s: 2048 rss: 50Mb
#9000\tDONE   cov: 115 ft: 350 corp: 48/1300b lim: 4096 exec/s: 450 rss: 60Mb
Done 9000 runs in 21 second(s)
stat::number_of_executed_units: 9000
stat::average_exec_per_sec:     428
stat::new_units_added:          8
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              60
";
        let mut s = TargetStats::default();
        parse_log(log, &mut s);
        assert_eq!(s.execs, Some(9000));
        assert_eq!(s.execs_per_sec, Some(428));
        assert_eq!(s.new_units, Some(8));
        assert_eq!((s.cov_inited, s.ft_inited), (Some(105), Some(300)));
        assert_eq!((s.cov, s.ft), (Some(115), Some(350)));
        assert_eq!((s.corpus_units, s.corpus_bytes), (Some(48), Some(1300)));
    }

    #[test]
    fn max_len_covers_whole_masters() {
        // The smallest geometry fts formats: 13 LBs of control area and 2
        // backup LBs.
        assert!(max_len("check_master") >= 15 * 4096);
        assert_eq!(max_len("sense"), DEFAULT_MAX_LEN);
    }

    #[test]
    fn byte_counts() {
        assert_eq!(bytes(Some(812)), "812b");
        assert_eq!(bytes(Some(13_721)), "13.4K");
        assert_eq!(bytes(Some(27_262_976)), "26.0M");
        assert_eq!(bytes(None), "?");
    }

    #[test]
    fn check_master_gets_more_time() {
        assert_eq!(target_secs("check_master", 10), 30);
        assert_eq!(target_secs("mcb", 10), 10);
    }
}
