//! `cargo xtask hil [--target tgt|lio] [--hosts N] [--vm] [--keep]
//! [--scenario NAME]...`: the multi-host test rig (see `TESTING.md`).
//!
//! Builds `fts`, provisions a shared iSCSI LUN and N hosts (network
//! namespaces by default, qemu guests with `--vm`), runs the scenarios,
//! prints a summary table, tears everything down (also when a scenario
//! fails or the run is interrupted) and fails if any scenario failed.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::util;

/// Whether the rig exists; `ci` runs it.
pub const IMPLEMENTED: bool = true;

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub target: String,
    pub hosts: usize,
    pub vm: bool,
    pub keep: bool,
    pub scenarios: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: "tgt".into(),
            hosts: 3,
            vm: false,
            keep: false,
            scenarios: Vec::new(),
        }
    }
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options::default();
    let mut hosts_given = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("hil: {name} needs a value"))
        };
        match a.as_str() {
            "--target" => o.target = value("--target")?,
            "--hosts" => {
                let v = value("--hosts")?;
                o.hosts = v
                    .parse()
                    .with_context(|| format!("hil: --hosts {v:?} is not a number"))?;
                hosts_given = true;
            }
            "--vm" => o.vm = true,
            "--keep" => o.keep = true,
            "--scenario" => o.scenarios.push(value("--scenario")?),
            other => bail!(
                "hil: unknown argument `{other}` (expected --target tgt|lio, --hosts N, --vm, --keep, --scenario NAME)"
            ),
        }
    }
    if o.vm && !hosts_given {
        o.hosts = 2;
    }
    if !(2..=32).contains(&o.hosts) {
        bail!("hil: --hosts {} (the rig needs 2 to 32 hosts)", o.hosts);
    }
    match o.target.as_str() {
        "tgt" => {}
        "lio" => {
            if let Err(why) = hil::lio::available() {
                bail!("hil: --target lio cannot run here: {why}");
            }
            bail!("hil: --target lio: the rig runs its scenarios on tgt only so far; LIO's targetcli commands are generated and unit-tested in hil::lio");
        }
        other => bail!("hil: unknown target {other:?} (expected tgt or lio)"),
    }
    let known: &[&str] = if o.vm {
        &["all-pairs", "contention", "holder-crash"]
    } else {
        hil::scenario::ALL
    };
    for s in &o.scenarios {
        let expand = if o.vm {
            hil::vm::expand
        } else {
            hil::scenario::expand
        };
        let named =
            known.contains(&s.as_str()) || known.iter().any(|k| expand(k).contains(&s.as_str()));
        if !named {
            bail!(
                "hil: unknown scenario {s:?} (known here: {})",
                known.join(", ")
            );
        }
    }
    Ok(o)
}

pub fn cmd(args: &[String]) -> Result<()> {
    run(args)
}

/// Builds the host-side `fts` (debug profile, as the tests use) and returns its path.
fn build_fts() -> Result<PathBuf> {
    util::run(util::cargo().args(["build", "-p", "fts-cli", "--bin", "fts"]))?;
    Ok(util::root().join("target/debug/fts"))
}

/// Runs the rig with command-line style `args` (`ci` passes none).
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    hil::netns::install_interrupt_handler().context("installing the rig's signal handler")?;
    let fts = build_fts()?;
    let reports = if o.vm {
        if let Err(why) = hil::vm::available() {
            bail!(
                "hil --vm cannot run here: {why} (cargo xtask setup --vm installs what it needs)"
            );
        }
        let guest_fts = hil::vm::build_static_fts(&util::root())
            .context("building the static fts for the guests")?;
        let opts = hil::vm::VmOptions {
            hosts: o.hosts,
            keep: o.keep,
            host_fts: fts,
            guest_fts,
            work_dir: None,
            boot_timeout: std::time::Duration::from_secs(60),
        };
        let names: Vec<&str> = o.scenarios.iter().map(String::as_str).collect();
        hil::vm::run(&opts, &names).context("the VM rig failed")?
    } else {
        if let Err(why) = hil::netns::available() {
            bail!("hil cannot run here: {why}");
        }
        let opts = hil::netns::NetnsOptions {
            hosts: o.hosts,
            keep: o.keep,
            fts,
            lun_bytes: 512 << 20,
            work_dir: None,
        };
        let mut rig = hil::netns::NetnsRig::provision(&opts).context("provisioning the rig")?;
        eprintln!(
            "hil: {} hosts ({}) share {} (identity {})",
            rig.hosts.len(),
            rig.hosts
                .iter()
                .map(|h| format!("{} {}", h.name, h.addr))
                .collect::<Vec<_>>()
                .join(", "),
            rig.lun.url,
            rig.identity
        );
        let reports = hil::scenario::run_netns(&mut rig, &o.scenarios);
        drop(rig);
        reports
    };
    println!("\n{}", hil::summary_table(&reports));
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "hil: {} scenario(s) failed: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn defaults_and_flags() {
        assert_eq!(parse(&[]).unwrap(), Options::default());
        let o = parse(&args(
            "--hosts 4 --keep --scenario all-pairs --scenario destage",
        ))
        .unwrap();
        assert_eq!(o.hosts, 4);
        assert!(o.keep);
        assert_eq!(o.scenarios, ["all-pairs", "destage"]);
        assert_eq!(parse(&args("--vm")).unwrap().hosts, 2);
    }

    #[test]
    fn bad_arguments_say_what() {
        let e = parse(&args("--hosts 1")).unwrap_err().to_string();
        assert!(e.contains("2 to 32"), "{e}");
        let e = parse(&args("--scenario nope")).unwrap_err().to_string();
        assert!(e.contains("unknown scenario"), "{e}");
        let e = parse(&args("--vm --scenario destage"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("known here"), "{e}");
        let e = parse(&args("--target lio")).unwrap_err().to_string();
        assert!(e.contains("lio"), "{e}");
        let e = parse(&args("--bogus")).unwrap_err().to_string();
        assert!(e.contains("unknown argument"), "{e}");
    }
}
