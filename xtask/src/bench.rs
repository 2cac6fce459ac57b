//! `cargo xtask bench [--quick] [--only GROUP...]`: fts's speed next to the
//! machine's limits and to the usual tools, in one run on one machine.
//!
//! Groups (all by default; `--only` picks some):
//!
//! - `disk`: a file device on the local disk. Limit: fio, 8 × 1 MiB in
//!   flight each, writing the device ‖ reading it ‖ writing a local file
//!   and fsyncing it (what a put or a get has to do); the I/O floor of a
//!   round trip from fio's 4 KiB O_DIRECT write and read latencies. fts:
//!   put, get, round trip (`dir` on one `fts shell` connection), 4 KiB put,
//!   idle `serve` CPU, 4 and 16 concurrent puts.
//! - `cache`: the same on a loop device over tmpfs (the array's cache).
//! - `iscsi`: a LUN on tmpfs behind tgt. Limits: libiscsi's own rates
//!   (`iscsi-perf` reads at 16 and 1 in flight; `iscsi-rw`, built from
//!   `bench/iscsi_rw.c`, writing ‖ reading at 8 × 1 MiB on two sessions,
//!   and its 4 KiB latencies). fts: put, get, round trip over `iscsi://`.
//! - `peers`: scp and rsync over an sshd on loopback that the bench starts,
//!   and a TCP copy on loopback; each followed by an fsync of the copy, as
//!   fts's put is durable.
//! - `encrypt`: put and get with `--encrypt` (rows say "not available" when
//!   the fts binary has no `keygen`).
//! - `devices`: 1, 2 and 3 devices (`format --secondary`), each a loop
//!   device over tmpfs capped by a blkio cgroup, fts in that cgroup.
//!
//! Every figure is the median of 3 repetitions (1 with `--quick`). A figure
//! that fails is reported as `fails: <message>` and the bench goes on.
//! The table goes to stdout and `target/bench/report.md`, everything to
//! `target/bench/report.json`. See docs/PERFORMANCE.md.
//!
//! `cargo xtask bench --micro [ARGS...]` runs the criterion benchmarks
//! (`cargo bench --workspace ARGS...`) instead.

mod cleanup;
mod fts;
mod report;
mod tools;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::{setup, util};
use cleanup::{Cgroup, Journal, LoopDev, Tmpfs, Watchdog, WorkDir};
use fts::Fts;
use report::{Outcome, Ratio, Results, RowSpec, Unit};
use tools::MIB;

const GROUPS: &[&str] = &["disk", "cache", "iscsi", "peers", "encrypt", "devices"];

#[derive(Debug)]
struct Opts {
    quick: bool,
    only: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        quick: false,
        only: Vec::new(),
    };
    let mut in_only = false;
    for a in args {
        match a.as_str() {
            "--quick" => {
                o.quick = true;
                in_only = false;
            }
            "--only" => in_only = true,
            g if in_only && !g.starts_with('-') => {
                for g in g.split(',').filter(|g| !g.is_empty()) {
                    if !GROUPS.contains(&g) {
                        bail!("bench: unknown group `{g}` (groups: {})", GROUPS.join(", "));
                    }
                    o.only.push(g.to_string());
                }
            }
            other => bail!(
                "bench: unknown argument `{other}` (expected --quick, --only GROUP..., \
                 or --micro [cargo bench args])"
            ),
        }
    }
    if in_only && o.only.is_empty() {
        bail!(
            "bench: --only needs at least one group ({})",
            GROUPS.join(", ")
        );
    }
    Ok(o)
}

/// Sizes and counts of one run.
#[derive(Debug)]
struct Plan {
    quick: bool,
    /// Bytes of one transfer.
    size: u64,
    reps: usize,
    /// Size of each device (sparse): room for the default geometry.
    dev_size: u64,
    rt_ops: usize,
    small_ops: usize,
    idle_secs: f64,
    streams: Vec<usize>,
    streams_on_disk: bool,
    /// Per-device cap and the transfer size of the capped-device rows.
    cap: u64,
    cap_size: u64,
    floor_secs: u32,
    perf_secs: u32,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                size: 256 * MIB,
                reps: 1,
                dev_size: 2048 * MIB,
                rt_ops: 50,
                small_ops: 20,
                idle_secs: 3.0,
                streams: vec![4, 16],
                streams_on_disk: false,
                cap: 64 * MIB,
                cap_size: 96 * MIB,
                floor_secs: 1,
                perf_secs: 1,
            }
        } else {
            Plan {
                quick,
                size: 1024 * MIB,
                reps: 3,
                dev_size: 2048 * MIB,
                rt_ops: 200,
                small_ops: 50,
                idle_secs: 10.0,
                streams: vec![4, 16],
                streams_on_disk: true,
                cap: 64 * MIB,
                cap_size: 512 * MIB,
                floor_secs: 2,
                perf_secs: 3,
            }
        }
    }

    fn size_label(&self) -> String {
        human(self.size)
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

pub fn cmd(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("--micro") => {
            return util::run(
                util::cargo()
                    .args(["bench", "--workspace"])
                    .args(&args[1..]),
            )
        }
        Some("--watchdog") => return cleanup::watchdog(&args[1..]),
        _ => {}
    }
    let opts = parse(args)?;
    let started = Instant::now();
    setup::setup_bench()?;
    util::run(util::cargo().args(["build", "--release", "-p", "fts-cli", "--bin", "fts"]))?;
    let built = started.elapsed();
    let fts_bin = util::target_dir().join("release/fts");
    let help = util::probe(Command::new(&fts_bin).arg("--help")).unwrap_or_default();
    let has_keygen = help
        .lines()
        .any(|l| l.split_whitespace().next() == Some("keygen"));
    let out_dir = util::target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;

    let plan = Plan::new(opts.quick);
    let groups: Vec<&str> = GROUPS
        .iter()
        .copied()
        .filter(|g| opts.only.is_empty() || opts.only.iter().any(|o| o == g))
        .collect();
    let pid = std::process::id();
    let base = std::env::temp_dir();
    // Created first, dropped last (after every guard below).
    let watchdog = Watchdog::start(&base.join(format!("fts-bench-{pid}.journal")))?;
    let work = WorkDir::create(watchdog.journal(), &base.join(format!("fts-bench-{pid}")))?;
    let machine = tools::machine(work.path());
    eprintln!("bench: {machine}");
    let mut b = Bench {
        plan: &plan,
        journal: watchdog.journal().clone(),
        work: work.path().to_path_buf(),
        fts: fts_bin,
        results: Results::default(),
        has_keygen,
        data_files: BTreeMap::new(),
        iscsi_rw: None,
        concurrent: Default::default(),
    };
    let run_start = Instant::now();
    for g in &groups {
        eprintln!();
        eprintln!("==> bench: {g}");
        let t = Instant::now();
        let r = match *g {
            "disk" => b.disk(),
            "cache" => b.cache(),
            "iscsi" => b.iscsi(),
            "peers" => b.peers(),
            "encrypt" => b.encrypt(),
            "devices" => b.devices(),
            _ => Ok(()),
        };
        if let Err(e) = r {
            eprintln!("bench: {g}: {e:#}");
            b.results
                .fill(&keys(g, &plan), &Outcome::Failed(format!("{e:#}")));
        }
        eprintln!("<== bench: {g} in {}", util::fmt_duration(t.elapsed()));
    }
    let ran = run_start.elapsed();
    let specs = rows(&plan);
    let t = report::table(&specs, &b.results);
    let md = report::markdown(&t);
    let mut machine = machine;
    machine["load_average_at_end"] = json!(tools::load_average());
    let m = &machine;
    let machine_line = format!(
        "{} ({} cores), {} GiB RAM, Linux {}, local disk {}; {}, commit {}{}; \
         load average {} at the start, {} at the end{}",
        m["cpu"].as_str().unwrap_or(""),
        m["cores"],
        m["ram_bytes"].as_u64().unwrap_or(0) >> 30,
        m["kernel"].as_str().unwrap_or(""),
        m["local_disk"].as_str().unwrap_or(""),
        m["date"].as_str().unwrap_or(""),
        m["git_commit"]
            .as_str()
            .unwrap_or("")
            .get(..10)
            .unwrap_or(""),
        if m["git_dirty"].as_bool() == Some(true) {
            " (with uncommitted changes)"
        } else {
            ""
        },
        m["load_average_at_start"].as_str().unwrap_or(""),
        m["load_average_at_end"].as_str().unwrap_or(""),
        if plan.quick { "; --quick" } else { "" },
    );
    let skipped = skipped(&plan);
    let doc = json!({
        "machine": machine,
        "options": {
            "quick": plan.quick,
            "groups": groups,
            "transfer_bytes": plan.size,
            "repetitions": plan.reps,
            "device_bytes": plan.dev_size,
            "cap_bytes_per_second": plan.cap,
            "capped_transfer_bytes": plan.cap_size,
        },
        "skipped": skipped,
        "build_seconds": built.as_secs_f64(),
        "run_seconds": ran.as_secs_f64(),
        "rows": t.json,
        "figures": b.results.json(),
    });
    drop(b);
    drop(work);
    drop(watchdog);
    let json_path = out_dir.join("report.json");
    fs::write(&json_path, serde_json::to_string_pretty(&doc)? + "\n")?;
    let mut text = format!("{machine_line}\n\n{md}");
    for s in &skipped {
        text.push_str(&format!("\nSkipped: {s}"));
    }
    text.push('\n');
    fs::write(out_dir.join("report.md"), &text)?;
    println!();
    print!("{text}");
    println!(
        "\nbench: ran in {} (plus {} to build); wrote {}",
        util::fmt_duration(ran),
        util::fmt_duration(built),
        json_path.display()
    );
    Ok(())
}

/// What `--quick` leaves out.
fn skipped(plan: &Plan) -> Vec<String> {
    if !plan.quick {
        return Vec::new();
    }
    vec![
        "--quick: 1 repetition, 256 MiB transfers, 96 MiB on capped devices".into(),
        "--quick: concurrent streams on the cache device only (not on the disk)".into(),
        "--quick: idle CPU over 3 s, 50 round trips, 20 small puts, 1 s latency and iscsi-perf runs"
            .into(),
    ]
}

/// Every key a group sets (to mark them failed when the group fails).
fn keys(group: &str, plan: &Plan) -> Vec<String> {
    let dev = |p: &str, extra: bool| {
        let mut v: Vec<String> = ["put", "get", "limit", "floor", "rt"]
            .iter()
            .map(|k| format!("{p}.{k}"))
            .collect();
        if extra {
            v.push(format!("{p}.small"));
            v.push(format!("{p}.limit_concurrent"));
            if p == "disk" {
                v.push(format!("{p}.idle"));
            }
            if p == "cache" || plan.streams_on_disk {
                for n in &plan.streams {
                    v.push(format!("{p}.s{n}"));
                }
            }
        }
        v
    };
    match group {
        "disk" => dev("disk", true),
        "cache" => dev("cache", true),
        "iscsi" => {
            let mut v = dev("iscsi", false);
            v.extend(["iscsi.perf16".into(), "iscsi.perf1".into()]);
            v
        }
        "peers" => vec!["peers.scp".into(), "peers.rsync".into(), "peers.tcp".into()],
        "encrypt" => vec!["encrypt.put".into(), "encrypt.get".into()],
        "devices" => (1..=3).map(|n| format!("devices.n{n}")).collect(),
        _ => Vec::new(),
    }
}

/// The table's rows.
fn rows(plan: &Plan) -> Vec<RowSpec> {
    let s = plan.size_label();
    let row = |figure: String,
               fts: Option<&str>,
               reference: Option<(String, Option<&str>)>,
               ratio| RowSpec {
        figure,
        fts: fts.map(str::to_string),
        extra: Vec::new(),
        reference: reference.map(|(l, k)| (l, k.map(str::to_string))),
        ratio,
    };
    let limit =
        "fio, 8 × 1 MiB in flight: the slowest alone of device write, device read, local file write + fsync";
    let same = "the same limit";
    let floor = "I/O floor: 2 × (4 KiB O_DIRECT write + read), fio, 1 in flight";
    let mut v = Vec::new();
    for (p, what) in [
        ("disk", "file device on the local disk"),
        ("cache", "loop device over tmpfs (the array's cache)"),
    ] {
        v.push(row(
            format!("put {s}, {what}"),
            Some(&format!("{p}.put")),
            Some((limit.into(), Some(&format!("{p}.limit")))),
            Ratio::Percent,
        ));
        v.push(row(
            format!("get {s}, same device"),
            Some(&format!("{p}.get")),
            Some((same.into(), Some(&format!("{p}.limit")))),
            Ratio::Percent,
        ));
        v.push(row(
            format!("put {s}, same device, vs the three at once"),
            Some(&format!("{p}.put")),
            Some((
                "fio: device write ‖ device read ‖ local file write + fsync, at once".into(),
                Some(&format!("{p}.limit_concurrent")),
            )),
            Ratio::Percent,
        ));
    }
    v.push(row(
        format!("put {s} over iscsi:// on tgt (LUN on tmpfs)"),
        Some("iscsi.put"),
        Some((
            "libiscsi write ‖ read, 8 in flight each, two sessions, best of 64 KiB, 256 KiB, 1 MiB requests (iscsi-rw)".into(),
            Some("iscsi.limit"),
        )),
        Ratio::Percent,
    ));
    v.push(row(
        format!("get {s} over iscsi://"),
        Some("iscsi.get"),
        Some(("the same libiscsi write ‖ read".into(), Some("iscsi.limit"))),
        Ratio::Percent,
    ));
    v.push(row(
        "iSCSI sequential 1 MiB reads, 16 in flight".into(),
        None,
        Some(("iscsi-perf".into(), Some("iscsi.perf16"))),
        Ratio::None,
    ));
    v.push(row(
        "iSCSI sequential 1 MiB reads, 1 in flight".into(),
        None,
        Some(("iscsi-perf".into(), Some("iscsi.perf1"))),
        Ratio::None,
    ));
    let peer = "over an sshd on loopback, + fsync";
    v.push(row(
        format!("put {s} (disk device) vs scp"),
        Some("disk.put"),
        Some((format!("scp {peer}"), Some("peers.scp"))),
        Ratio::Times,
    ));
    v.push(row(
        format!("put {s} (cache device) vs scp"),
        Some("cache.put"),
        Some((format!("scp {peer}"), Some("peers.scp"))),
        Ratio::Times,
    ));
    v.push(row(
        format!("put {s} (disk device) vs rsync"),
        Some("disk.put"),
        Some((format!("rsync {peer}"), Some("peers.rsync"))),
        Ratio::Times,
    ));
    v.push(row(
        format!("put {s} (cache device) vs a TCP copy"),
        Some("cache.put"),
        Some((
            "file → TCP on loopback → file + fsync, one process".into(),
            Some("peers.tcp"),
        )),
        Ratio::Times,
    ));
    v.push(row(
        format!("put {s} --encrypt (disk device) vs scp"),
        Some("encrypt.put"),
        Some((format!("scp {peer}"), Some("peers.scp"))),
        Ratio::Times,
    ));
    v.push(row(
        format!("get {s} --encrypt (disk device) vs scp"),
        Some("encrypt.get"),
        Some((format!("scp {peer}"), Some("peers.scp"))),
        Ratio::Times,
    ));
    for (p, what) in [("disk", "disk"), ("cache", "cache"), ("iscsi", "iSCSI")] {
        v.push(row(
            format!("round trip (`dir`, one `fts shell` connection), {what}"),
            Some(&format!("{p}.rt")),
            Some((floor.into(), Some(&format!("{p}.floor")))),
            Ratio::TimesFloor,
        ));
    }
    for (p, what) in [("disk", "disk"), ("cache", "cache")] {
        v.push(row(
            format!("4 KiB put, durable, one connection, {what}"),
            Some(&format!("{p}.small")),
            None,
            Ratio::None,
        ));
    }
    v.push(row(
        "idle `serve` (disk device)".into(),
        Some("disk.idle"),
        Some(("target ≤ 1% of a core".into(), None)),
        Ratio::None,
    ));
    for (p, what) in [("disk", "disk"), ("cache", "cache")] {
        v.push(row(
            format!("1 stream, {what} (the put above)"),
            Some(&format!("{p}.put")),
            Some((same.into(), Some(&format!("{p}.limit")))),
            Ratio::Percent,
        ));
        for n in &plan.streams {
            let mut r = row(
                format!(
                    "{n} concurrent puts of {} each, {what}",
                    human(plan.size / *n as u64)
                ),
                Some(&format!("{p}.s{n}")),
                Some((same.into(), Some(&format!("{p}.limit")))),
                Ratio::Percent,
            );
            r.extra = vec![
                ("min", format!("{p}.s{n}.min")),
                ("mean", format!("{p}.s{n}.mean")),
            ];
            v.push(r);
        }
    }
    let cap = human(plan.cap);
    let cs = human(plan.cap_size);
    v.push(row(
        format!("put {cs}, 1 device capped at {cap}/s (blkio cgroup on a loop device over tmpfs)"),
        Some("devices.n1"),
        Some((format!("{cap}/s cap"), Some("devices.cap"))),
        Ratio::Percent,
    ));
    for n in [2, 3] {
        v.push(row(
            format!("put {cs}, {n} devices capped at {cap}/s each (format --secondary)"),
            Some(&format!("devices.n{n}")),
            Some(("1 capped device".into(), Some("devices.n1"))),
            Ratio::Times,
        ));
    }
    v
}

struct Bench<'a> {
    plan: &'a Plan,
    journal: Journal,
    work: PathBuf,
    fts: PathBuf,
    results: Results,
    has_keygen: bool,
    /// Random files by size.
    data_files: BTreeMap<u64, PathBuf>,
    iscsi_rw: Option<Result<PathBuf, String>>,
    /// The put limits' concurrent fio figures, kept by the limit closure
    /// until the group records them.
    concurrent: std::rc::Rc<std::cell::RefCell<Vec<f64>>>,
}

/// What kind of master device a group runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Disk,
    Cache,
    Iscsi,
}

impl Bench<'_> {
    /// A random file of `size` bytes on the local disk (made once).
    fn data(&mut self, size: u64) -> Result<PathBuf> {
        if let Some(p) = self.data_files.get(&size) {
            return Ok(p.clone());
        }
        let p = self.work.join(format!("data-{size}.bin"));
        eprintln!(
            "bench: writing {} of random data to {}",
            human(size),
            p.display()
        );
        tools::random_file(&p, size, size ^ 0x9e37_79b9_7f4a_7c15)?;
        self.data_files.insert(size, p.clone());
        Ok(p)
    }

    /// Runs `f` once per repetition and records the samples under `key`;
    /// on failure records it and returns false.
    fn measure(
        &mut self,
        key: &str,
        unit: Unit,
        reps: usize,
        mut f: impl FnMut(usize) -> Result<f64>,
    ) -> bool {
        let mut v = Vec::new();
        for i in 0..reps {
            match f(i) {
                Ok(x) => {
                    eprintln!("bench: {key} #{}: {x:.3} {}", i + 1, unit.as_str());
                    v.push(x);
                }
                Err(e) => {
                    self.results.set(key, Outcome::Failed(format!("{e:#}")));
                    return false;
                }
            }
        }
        self.results.measured(key, v, unit);
        true
    }

    fn disk(&mut self) -> Result<()> {
        let s = self.plan.size;
        // The limit runs on a device of its own on the same disk, between
        // fts's repetitions (fio would overwrite fts's layout).
        let lim = self.work.join("disk-limit.img");
        fs::File::create(&lim)?.set_len(2 * s)?;
        let lim = lim.display().to_string();
        let dev = self.work.join("disk.img");
        fs::File::create(&dev)?.set_len(self.plan.dev_size)?;
        let dev = dev.display().to_string();
        let mut limit = self.fio_limit("disk", &lim);
        let r = self.fts_figures("disk", &dev, Kind::Disk, &mut limit);
        self.record_concurrent("disk");
        r
    }

    fn cache(&mut self) -> Result<()> {
        let s = self.plan.size;
        let mnt = Tmpfs::mount(
            &self.journal,
            &self.work.join("cache"),
            self.plan.dev_size + 2 * s + 64 * MIB,
        )?;
        let lim_file = mnt.path().join("limit.img");
        fs::File::create(&lim_file)?.set_len(2 * s)?;
        let lim = LoopDev::attach(&self.journal, &lim_file)?;
        let file = mnt.path().join("dev.img");
        fs::File::create(&file)?.set_len(self.plan.dev_size)?;
        let lo = LoopDev::attach(&self.journal, &file)?;
        let mut limit = self.fio_limit("cache", lim.dev());
        let r = self.fts_figures("cache", lo.dev(), Kind::Cache, &mut limit);
        self.record_concurrent("cache");
        r
    }

    /// Fills the second half of the limit device `dev` (2 × size) with
    /// data, measures the round-trip floor there, and returns the put
    /// limit's measurement for [`Bench::fts_figures`] to run between its
    /// repetitions.
    fn fio_limit(&mut self, p: &str, dev: &str) -> impl FnMut() -> Result<f64> {
        let s = self.plan.size;
        eprintln!("bench: {p}: writing {} where fio will read", human(s));
        let pre = tools::fio_prefill(dev, s, s).map_err(|e| format!("{e:#}"));
        let secs = self.plan.floor_secs;
        let floors = pre.clone().map_err(anyhow::Error::msg).and_then(|()| {
            Ok((
                tools::fio_latency(dev, true, 0, s, secs)?,
                tools::fio_latency(dev, false, s, s, secs)?,
            ))
        });
        self.floors(p, floors);
        let local = self.work.join("fio-local.bin");
        let dev = dev.to_string();
        let concurrent = self.concurrent.clone();
        move || match &pre {
            Ok(()) => {
                let l = tools::fio_put_limit(&dev, s, &local, s)?;
                eprintln!(
                    "bench: fio: the three jobs at once {:.0} MiB/s, the slowest alone {:.0} MiB/s",
                    l.concurrent, l.alone
                );
                concurrent.borrow_mut().push(l.concurrent);
                Ok(l.alone)
            }
            Err(e) => bail!("{e}"),
        }
    }

    /// Records the concurrent fio figures the last limit closure kept.
    fn record_concurrent(&mut self, p: &str) {
        let v: Vec<f64> = self.concurrent.borrow_mut().drain(..).collect();
        if !v.is_empty() {
            self.results
                .measured(&format!("{p}.limit_concurrent"), v, Unit::MiBps);
        }
    }

    /// Records the round-trip floor from a 4 KiB write and read latency.
    fn floors(&mut self, p: &str, wr: Result<(f64, f64)>) {
        match wr {
            Ok((w, r)) => {
                self.results
                    .measured(&format!("{p}.floor_write"), vec![w], Unit::Ms);
                self.results
                    .measured(&format!("{p}.floor_read"), vec![r], Unit::Ms);
                self.results
                    .measured(&format!("{p}.floor"), vec![2.0 * (w + r)], Unit::Ms);
            }
            Err(e) => self
                .results
                .set(&format!("{p}.floor"), Outcome::Failed(format!("{e:#}"))),
        }
    }

    /// Format, serve, and every fts figure of one master device.
    ///
    /// Each repetition runs `limit`, a put and a get in turn, so that the
    /// ratios compare figures taken moments apart on a machine whose load
    /// may change.
    fn fts_figures(
        &mut self,
        p: &str,
        dev: &str,
        kind: Kind,
        limit: &mut dyn FnMut() -> Result<f64>,
    ) -> Result<()> {
        let size = self.plan.size;
        let reps = self.plan.reps;
        let data = self.data(size)?;
        let small = self.work.join("small.bin");
        tools::random_file(&small, 4096, 7)?;
        let streams: Vec<(usize, PathBuf)> = if kind == Kind::Cache
            || (kind == Kind::Disk && self.plan.streams_on_disk)
        {
            let mut v = Vec::new();
            for n in self.plan.streams.clone() {
                v.push((n, self.data(size / n as u64)?));
            }
            v
        } else {
            if kind == Kind::Disk {
                for n in &self.plan.streams {
                    let o =
                        Outcome::Skipped("--quick runs streams on the cache device only".into());
                    self.results.set(&format!("{p}.s{n}"), o);
                }
            }
            Vec::new()
        };
        let fts_bin = self.fts.clone();
        let fts = Fts {
            bin: &fts_bin,
            dev: dev.to_string(),
            cgroup: None,
            extra: Vec::new(),
        };
        // 16 streams and the server's registration entry; the geometry is
        // otherwise what `format` chooses by itself.
        let said = fts.format(&["--max-connections", "17"])?;
        eprintln!("bench: {p}: {}", said.replace('\n', "\n        "));
        let root = self.work.join(format!("{p}-root"));
        let serve = fts.serve(
            &self.journal,
            &root,
            &self.work.join(format!("{p}-serve.log")),
        )?;
        // A file to get, put there directly.
        fs::copy(&data, root.join("src.bin"))?;
        fs::create_dir_all(root.join("rt"))?;
        fs::write(root.join("rt/x"), b"")?;

        let got = self.work.join("got.bin");
        let mut lim = Series::new(&format!("{p}.limit"), Unit::MiBps);
        let mut put = Series::new(&format!("{p}.put"), Unit::MiBps);
        let mut get = Series::new(&format!("{p}.get"), Unit::MiBps);
        for i in 0..reps {
            lim.run(&mut *limit);
            put.run(|| {
                let name = format!("put-{i}");
                let d = fts.put("bench-cli", &data, &name, &[])?;
                let got = fs::metadata(root.join(&name)).map(|m| m.len()).unwrap_or(0);
                let _ = fs::remove_file(root.join(&name));
                if got != size {
                    bail!("the server has {got} bytes, not {size}");
                }
                Ok(tools::rate(size, d))
            });
            get.run(|| {
                let d = fts.get("bench-cli", "src.bin", &got, size, &[])?;
                let _ = fs::remove_file(&got);
                Ok(tools::rate(size, d))
            });
        }
        for series in [lim, put, get] {
            series.finish(&mut self.results);
        }
        let rt_ops = self.plan.rt_ops;
        // `dir` of a directory holding one empty file: the listing is one
        // line the bench can wait for (an empty one prints nothing).
        self.measure(&format!("{p}.rt"), Unit::Ms, reps, |_| {
            fts::shell_median(&fts, "bench-sh", rt_ops, |_| "dir rt".into())
        });
        if kind != Kind::Iscsi {
            let ops = self.plan.small_ops;
            let small_s = small.display().to_string();
            self.measure(&format!("{p}.small"), Unit::Ms, reps, |r| {
                let v = fts::shell_median(&fts, "bench-sh", ops, |i| {
                    format!("put {small_s} small-{r}-{i}")
                });
                clear_root(&root);
                v
            });
        }
        if kind == Kind::Disk {
            // Time to back off from the last transfer's hot polling.
            std::thread::sleep(Duration::from_secs(2));
            let secs = self.plan.idle_secs;
            match fts::cpu_percent(serve.pid(), secs) {
                Ok(v) => self
                    .results
                    .measured(&format!("{p}.idle"), vec![v], Unit::PctCore),
                Err(e) => self
                    .results
                    .set(&format!("{p}.idle"), Outcome::Failed(format!("{e:#}"))),
            }
        }
        for (n, file) in &streams {
            let locals = vec![file.clone(); *n];
            let key = format!("{p}.s{n}");
            let (mut agg, mut min, mut mean) = (Vec::new(), Vec::new(), Vec::new());
            let mut failed = None;
            for r in 0..reps {
                let res = fts::streams(&fts, &locals, &format!("s{n}-{r}"));
                clear_root(&root);
                match res {
                    Ok((a, lo, me)) => {
                        eprintln!(
                            "bench: {key} #{}: {a:.0} MiB/s (min {lo:.0}, mean {me:.0})",
                            r + 1
                        );
                        agg.push(a);
                        min.push(lo);
                        mean.push(me);
                    }
                    Err(e) => {
                        failed = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            match failed {
                Some(m) => self.results.set(&key, Outcome::Failed(m)),
                None => {
                    self.results.measured(&key, agg, Unit::MiBps);
                    self.results
                        .measured(&format!("{key}.min"), min, Unit::MiBps);
                    self.results
                        .measured(&format!("{key}.mean"), mean, Unit::MiBps);
                }
            }
        }
        drop(serve);
        Ok(())
    }

    fn iscsi(&mut self) -> Result<()> {
        let s = self.plan.size;
        let reps = self.plan.reps;
        let data = self.data(s)?;
        let bin = self.iscsi_rw();
        // Declared before the daemon, so dropped after it.
        let mnt = Tmpfs::mount(
            &self.journal,
            &self.work.join("iscsi"),
            self.plan.dev_size + 2 * s + 64 * MIB,
        )?;
        let mut tgtd = hil::Tgtd::start(hil::TgtdOptions {
            work_dir: Some(mnt.path().to_path_buf()),
            ..hil::TgtdOptions::default()
        })
        .context("starting tgtd")?;
        cleanup::note_tgtd(&self.journal, tgtd.control_port(), tgtd.pid());
        let block = 4096;
        // fts's LUN, and one for libiscsi's own figures on the same daemon
        // and tmpfs (they would overwrite fts's layout).
        let lun = tgtd
            .add_lun(self.plan.dev_size, block)
            .context("adding a LUN")?;
        let lim = tgtd.add_lun(2 * s, block).context("adding a LUN")?;
        eprintln!("bench: iscsi: filling the limit LUN's backing file with data");
        tools::fill_from(&lim.backing, &data, 2 * s)?;
        let ini = |w: &str| format!("iqn.2026-11.invalid.fts-bench:{w}");
        let secs = self.plan.perf_secs;
        for depth in [16, 1] {
            self.measure(&format!("iscsi.perf{depth}"), Unit::MiBps, reps, |_| {
                tools::iscsi_perf(&lim.url, depth, block, secs, &ini("perf"))
            });
        }
        let url = lim.url.clone();
        let job = |write: bool, depth: u32, req: u64, total: u64, offset: u64, who: &str| {
            let initiator = ini(who);
            let url = url.clone();
            let bin = bin.clone();
            move || -> Result<tools::IscsiRw> {
                let bin = bin.map_err(anyhow::Error::msg)?;
                tools::RwJob {
                    url: &url,
                    write,
                    depth,
                    req,
                    total,
                    offset,
                    initiator: &initiator,
                }
                .run(&bin)
            }
        };
        let lat = |write: bool| -> Result<f64> {
            let at = if write { 0 } else { s };
            Ok(job(write, 1, 4096, 2000 * 4096, at, "lat")()?.p50_ms)
        };
        let floors = lat(true).and_then(|w| Ok((w, lat(false)?)));
        self.floors("iscsi", floors);
        // libiscsi writing 0..s ‖ reading s..2s, two sessions (as a put's
        // two sides), 8 requests in flight each; the best of three request
        // sizes (tgt writes 64 KiB requests faster than 1 MiB ones).
        let mut limit = || -> Result<f64> {
            let mut best = 0.0f64;
            for req in [64 * 1024, 256 * 1024, MIB] {
                let (w, r) = std::thread::scope(|sc| {
                    let w = sc.spawn(job(true, 8, req, s, 0, "w"));
                    let r = sc.spawn(job(false, 8, req, s, s, "r"));
                    (w.join(), r.join())
                });
                let secs = |x: std::thread::Result<Result<tools::IscsiRw>>| -> Result<f64> {
                    Ok(x.map_err(|_| anyhow::anyhow!("iscsi-rw thread panicked"))??
                        .secs)
                };
                let (w, r) = (secs(w)?, secs(r)?);
                let v = tools::rate(s, Duration::from_secs_f64(w.max(r)));
                eprintln!(
                    "bench: iscsi: libiscsi {} KiB requests: write {:.0} ‖ read {:.0} MiB/s",
                    req / 1024,
                    tools::rate(s, Duration::from_secs_f64(w)),
                    tools::rate(s, Duration::from_secs_f64(r)),
                );
                best = best.max(v);
            }
            Ok(best)
        };
        let r = self.fts_figures("iscsi", &lun.url, Kind::Iscsi, &mut limit);
        drop(tgtd);
        drop(mnt);
        r
    }

    /// Builds iscsi-rw once; the error as text, kept for every use.
    fn iscsi_rw(&mut self) -> Result<PathBuf, String> {
        if self.iscsi_rw.is_none() {
            self.iscsi_rw = Some(tools::build_iscsi_rw(&self.work).map_err(|e| format!("{e:#}")));
        }
        self.iscsi_rw
            .clone()
            .unwrap_or_else(|| Err("iscsi-rw not built".into()))
    }

    fn peers(&mut self) -> Result<()> {
        let s = self.plan.size;
        let reps = self.plan.reps;
        let data = self.data(s)?;
        let dst = self.work.join("peer-copy.bin");
        let t = Duration::from_secs(120 + s / (5 * MIB));
        self.measure("peers.tcp", Unit::MiBps, reps, |_| {
            Ok(tools::rate(s, tools::tcp_copy(&data, &dst)?))
        });
        let sshd = tools::Sshd::start(&self.journal, &self.work.join("ssh"));
        match sshd {
            Ok(sshd) => {
                self.measure("peers.scp", Unit::MiBps, reps, |_| {
                    Ok(tools::rate(s, sshd.scp(&data, &dst, t)?))
                });
                self.measure("peers.rsync", Unit::MiBps, reps, |_| {
                    Ok(tools::rate(s, sshd.rsync(&data, &dst, t)?))
                });
            }
            Err(e) => {
                let o = Outcome::Failed(format!("{e:#}"));
                self.results
                    .fill(&["peers.scp".into(), "peers.rsync".into()], &o);
            }
        }
        let _ = fs::remove_file(&dst);
        Ok(())
    }

    fn encrypt(&mut self) -> Result<()> {
        if !self.has_keygen {
            let o = Outcome::Unavailable(
                "not available in this build (`fts --help` lists no keygen)".into(),
            );
            self.results
                .fill(&["encrypt.put".into(), "encrypt.get".into()], &o);
            return Ok(());
        }
        let s = self.plan.size;
        let reps = self.plan.reps;
        let data = self.data(s)?;
        let dev = self.work.join("encrypt.img");
        fs::File::create(&dev)?.set_len(self.plan.dev_size)?;
        let key = self.work.join("bench.key");
        let fts_bin = self.fts.clone();
        let mut fts = Fts {
            bin: &fts_bin,
            dev: dev.display().to_string(),
            cgroup: None,
            extra: Vec::new(),
        };
        fts.format(&[])?;
        let k = key.display().to_string();
        tools::timed(
            &mut fts.cmd("bench-cli", &["keygen", &k]),
            Duration::from_secs(30),
        )
        .context("fts keygen")?;
        fts.extra = vec!["--key-file".into(), k];
        let root = self.work.join("encrypt-root");
        let serve = fts.serve(&self.journal, &root, &self.work.join("encrypt-serve.log"))?;
        fs::copy(&data, root.join("src.bin"))?;
        self.measure("encrypt.put", Unit::MiBps, reps, |i| {
            let name = format!("put-{i}");
            let d = fts.put("bench-cli", &data, &name, &["--encrypt"])?;
            let _ = fs::remove_file(root.join(&name));
            Ok(tools::rate(s, d))
        });
        let got = self.work.join("got.bin");
        self.measure("encrypt.get", Unit::MiBps, reps, |_| {
            let d = fts.get("bench-cli", "src.bin", &got, s, &["--encrypt"])?;
            let _ = fs::remove_file(&got);
            Ok(tools::rate(s, d))
        });
        drop(serve);
        Ok(())
    }

    fn devices(&mut self) -> Result<()> {
        let plan = self.plan;
        self.results
            .measured("devices.cap", vec![(plan.cap / MIB) as f64], Unit::MiBps);
        let data = self.data(plan.cap_size)?;
        let cg = Cgroup::create(&self.journal, &format!("fts-bench-{}", std::process::id()))?;
        let mnt = Tmpfs::mount(
            &self.journal,
            &self.work.join("capped"),
            3 * plan.dev_size + 64 * MIB,
        )?;
        let mut loops = Vec::new();
        for i in 0..3 {
            let f = mnt.path().join(format!("dev{i}.img"));
            fs::File::create(&f)?.set_len(plan.dev_size)?;
            let lo = LoopDev::attach(&self.journal, &f)?;
            cg.throttle(&lo.major_minor()?, plan.cap)?;
            loops.push(lo);
        }
        let fts_bin = self.fts.clone();
        for n in 1..=3usize {
            let key = format!("devices.n{n}");
            let fts = Fts {
                bin: &fts_bin,
                dev: loops[0].dev().to_string(),
                cgroup: Some(&cg),
                extra: Vec::new(),
            };
            let mut args = Vec::new();
            for lo in &loops[1..n] {
                args.extend(["--secondary", lo.dev()]);
            }
            let root = self.work.join(format!("devices-root-{n}"));
            let setup = fts.format(&args).and_then(|_| {
                fts.serve(
                    &self.journal,
                    &root,
                    &self.work.join(format!("devices-serve-{n}.log")),
                )
            });
            let serve = match setup {
                Ok(s) => s,
                Err(e) => {
                    self.results.set(&key, Outcome::Failed(format!("{e:#}")));
                    continue;
                }
            };
            let size = plan.cap_size;
            self.measure(&key, Unit::MiBps, plan.reps, |i| {
                let name = format!("put-{i}");
                let d = fts.put("bench-cli", &data, &name, &[])?;
                let _ = fs::remove_file(root.join(&name));
                Ok(tools::rate(size, d))
            });
            drop(serve);
        }
        drop(loops);
        drop(mnt);
        drop(cg);
        Ok(())
    }
}

/// The samples of one figure, taken one repetition at a time (between
/// other figures' repetitions).
#[derive(Debug)]
struct Series {
    key: String,
    unit: Unit,
    samples: Vec<f64>,
    failed: Option<String>,
}

impl Series {
    fn new(key: &str, unit: Unit) -> Series {
        Series {
            key: key.to_string(),
            unit,
            samples: Vec::new(),
            failed: None,
        }
    }

    /// One more sample, unless an earlier one failed.
    fn run(&mut self, f: impl FnOnce() -> Result<f64>) {
        if self.failed.is_some() {
            return;
        }
        match f() {
            Ok(x) => {
                eprintln!(
                    "bench: {} #{}: {x:.3} {}",
                    self.key,
                    self.samples.len() + 1,
                    self.unit.as_str()
                );
                self.samples.push(x);
            }
            Err(e) => {
                eprintln!("bench: {}: fails: {e:#}", self.key);
                self.failed = Some(format!("{e:#}"));
            }
        }
    }

    fn finish(self, r: &mut Results) {
        match self.failed {
            Some(m) => r.set(&self.key, Outcome::Failed(m)),
            None => r.measured(&self.key, self.samples, self.unit),
        }
    }
}

/// Removes every regular file at the top of a server root except the get
/// source.
fn clear_root(root: &Path) {
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            let keep = e.file_name() == "src.bin";
            if !keep && e.file_type().is_ok_and(|t| t.is_file()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_only_and_quick() {
        let o = parse(&args(&["--only", "disk", "cache,iscsi", "--quick"])).expect("parse");
        assert!(o.quick);
        assert_eq!(o.only, ["disk", "cache", "iscsi"]);
        assert!(parse(&args(&["--only", "nope"])).is_err());
        assert!(parse(&args(&["--only"])).is_err());
        assert!(parse(&args(&["--fast"])).is_err());
    }

    #[test]
    fn every_row_key_belongs_to_a_group() {
        let plan = Plan::new(false);
        let mut all: Vec<String> = GROUPS.iter().flat_map(|g| keys(g, &plan)).collect();
        all.push("devices.cap".into());
        for r in rows(&plan) {
            for k in r
                .fts
                .iter()
                .chain(r.reference.iter().filter_map(|(_, k)| k.as_ref()))
            {
                assert!(
                    all.contains(k),
                    "row {:?} uses key {k} that no group sets",
                    r.figure
                );
            }
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(human(1 << 30), "1 GiB");
        assert_eq!(human(256 << 20), "256 MiB");
        let q = Plan::new(true);
        assert!(q.size < Plan::new(false).size && q.reps == 1);
    }
}
