//! `cargo xtask setup [--vm] [--fuzz] [--bench]`: make sure the machine has what the
//! build and tests need. A fresh Debian 12 machine has none of it.

use std::process::Command;

use anyhow::{bail, Result};

use crate::util;

/// System packages every build/test needs.
/// util-linux provides losetup; tgt is the iSCSI target used by the tests.
pub const BASE_PACKAGES: &[&str] = &[
    "tgt",
    "libiscsi-dev",
    "libclang-dev",
    "pkg-config",
    "iproute2",
    "util-linux",
];

/// Extra system packages for the VM-based hil rig (`--vm`).
pub const VM_PACKAGES: &[&str] = &["qemu-system-x86", "qemu-block-extra", "busybox-static"];

/// Extra system packages for fuzzing (`--fuzz`): libfuzzer-sys compiles
/// libFuzzer's C++ sources.
pub const FUZZ_PACKAGES: &[&str] = &["g++"];

/// Extra system packages for `cargo xtask bench` (`--bench`): fio for the
/// device limits, sshd, scp and rsync for the peers, iscsi-perf
/// (libiscsi-bin) and a C compiler for the iSCSI limits.
pub const BENCH_PACKAGES: &[&str] = &[
    "fio",
    "openssh-server",
    "openssh-client",
    "rsync",
    "libiscsi-bin",
    "gcc",
];

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub vm: bool,
    pub fuzz: bool,
}

/// [`Options`] and whether to add [`BENCH_PACKAGES`] (a separate flag so
/// that callers building `Options` stay as they are).
#[derive(Debug, Clone, Copy, Default)]
struct Wanted {
    opts: Options,
    bench: bool,
}

impl Wanted {
    /// The command-line flags that select these options, e.g. ` --vm`.
    fn flags(self) -> String {
        let Wanted { opts: o, bench } = self;
        let mut s = String::new();
        if o.vm {
            s.push_str(" --vm");
        }
        if o.fuzz {
            s.push_str(" --fuzz");
        }
        if bench {
            s.push_str(" --bench");
        }
        s
    }
}

pub fn cmd(args: &[String]) -> Result<()> {
    let mut opts = Options::default();
    let mut bench = false;
    for arg in args {
        match arg.as_str() {
            "--vm" => opts.vm = true,
            "--fuzz" => opts.fuzz = true,
            "--bench" => bench = true,
            other => bail!("setup: unknown argument `{other}` (expected --vm, --fuzz, --bench)"),
        }
    }
    setup_with(Wanted { opts, bench })
}

pub fn setup(opts: Options) -> Result<()> {
    setup_with(Wanted { opts, bench: false })
}

/// What `cargo xtask bench` needs besides the build's packages.
pub fn setup_bench() -> Result<()> {
    setup_with(Wanted {
        opts: Options::default(),
        bench: true,
    })
}

fn setup_with(w: Wanted) -> Result<()> {
    let opts = w.opts;
    let mut wanted: Vec<&str> = BASE_PACKAGES.to_vec();
    if opts.vm {
        wanted.extend(VM_PACKAGES);
    }
    if opts.fuzz {
        wanted.extend(FUZZ_PACKAGES);
    }
    if w.bench {
        wanted.extend(BENCH_PACKAGES);
    }
    ensure_packages(&wanted, w)?;
    ensure_rustup_components()?;
    if opts.fuzz {
        ensure_cargo_fuzz()?;
    }
    Ok(())
}

/// `dpkg-query` says "install ok installed" for an installed package.
fn is_installed(pkg: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output();
    match out {
        // Exit status 1 and "no packages found" on stderr for unknown names.
        Ok(out) => Ok(out.status.success()
            && String::from_utf8_lossy(&out.stdout).trim() == "install ok installed"),
        Err(e) => bail!("could not run dpkg-query ({e}); this needs a Debian-based system"),
    }
}

fn ensure_packages(wanted: &[&str], opts: Wanted) -> Result<()> {
    eprintln!("setup: checking system packages: {}", wanted.join(" "));
    let mut missing = Vec::new();
    for &pkg in wanted {
        if is_installed(pkg)? {
            eprintln!("setup:   {pkg}: installed");
        } else {
            eprintln!("setup:   {pkg}: MISSING");
            missing.push(pkg);
        }
    }
    if missing.is_empty() {
        eprintln!("setup: all system packages present");
        return Ok(());
    }
    if !util::is_root() {
        bail!(
            "missing system packages: {list}\n\
             not running as root; install them with:\n    \
             sudo apt-get update && sudo env DEBIAN_FRONTEND=noninteractive \
             apt-get install -y --no-install-recommends {list}\n\
             or run this as root: cargo xtask setup{flags}",
            list = missing.join(" "),
            flags = opts.flags(),
        );
    }
    eprintln!("setup: installing: {}", missing.join(" "));
    util::run(util::cmd("apt-get").arg("update"))?;
    util::run(
        util::cmd("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    let still: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| !matches!(is_installed(p), Ok(true)))
        .collect();
    if !still.is_empty() {
        bail!(
            "apt-get succeeded but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(())
}

/// rustfmt and clippy come as rustup components; minimal profiles lack them.
fn ensure_rustup_components() -> Result<()> {
    let mut missing = Vec::new();
    if util::probe(util::cargo().args(["fmt", "--version"])).is_none() {
        missing.push("rustfmt");
    }
    if util::probe(util::cargo().args(["clippy", "--version"])).is_none() {
        missing.push("clippy");
    }
    if missing.is_empty() {
        eprintln!("setup: rustfmt and clippy present");
        return Ok(());
    }
    if util::probe(Command::new("rustup").arg("--version")).is_none() {
        bail!(
            "missing Rust components ({}) and no rustup to install them",
            missing.join(", ")
        );
    }
    util::run(
        util::cmd("rustup")
            .args(["component", "add"])
            .args(&missing),
    )
}

/// Installs cargo-fuzz unless `cargo fuzz --version` already works.
pub fn ensure_cargo_fuzz() -> Result<()> {
    if let Some(v) = util::probe(util::cargo().args(["fuzz", "--version"])) {
        eprintln!("setup: {v} present");
        return Ok(());
    }
    eprintln!("setup: cargo-fuzz missing, installing it");
    util::run(util::cargo().args(["install", "cargo-fuzz", "--locked"]))
}
