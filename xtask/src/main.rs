//! Project automation for fts, run as `cargo xtask <command>`.
//!
//! Deliberately dependency-light (only `anyhow`), in the spirit of
//! rust-analyzer's xtask: arguments are parsed by hand and every child
//! process is run with inherited stdio from the workspace root.

mod bench;
mod bindgen;
mod campaign;
mod ci;
mod fresh_clone;
mod fuzz;
mod hil;
mod setup;
mod util;

use std::process::ExitCode;

use anyhow::{bail, Result};

const HELP: &str = "\
cargo xtask <COMMAND> [ARGS...]

Commands:
  help                          Show this message.
  setup [--vm] [--fuzz] [--bench]
                                Install missing system packages (apt-get, needs root)
                                and rustup components. --vm adds QEMU and busybox;
                                --fuzz adds g++ and cargo-fuzz; --bench adds fio,
                                openssh-server, rsync and libiscsi-bin.
  ci [--quick]                  The full CI run (what .ci/run executes): setup, fmt,
                                clippy, tests, fuzz smoke run, hil, bench --quick.
                                --quick skips fuzz, hil --vm and the bench.
  bindgen                       Regenerate the committed bindgen output with a pinned
                                bindgen-cli (0.72.1).
  fuzz [TARGET] [--time SECS] [--keep-corpus] [--seed-corpus]
                                Run every fuzz target (or just TARGET) for SECS
                                seconds each (default 60) from the committed seeds and
                                print executions and coverage per target;
                                --seed-corpus regenerates the seeds (root, tgt).
  bench [--quick] [--only GROUP...]
                                fts next to the machine's limits (fio, libiscsi) and to
                                scp, rsync and a TCP copy, in one run: prints a table,
                                writes target/bench/report.json (docs/PERFORMANCE.md).
                                Groups: disk cache iscsi peers encrypt devices. Needs
                                root; installs what `setup --bench` does. --quick: 1
                                repetition, smaller sizes (under 2 minutes).
  bench --micro [ARGS...]       The criterion benchmarks: `cargo bench --workspace ARGS...`.
  hil [ARGS...]                 Multi-host test rig (not implemented yet).
  crash-campaign [--kills N] [--seed S]
                                Random SIGKILLs of fts clients and servers during puts
                                and gets (default 60): no wrong file, every transfer
                                completes with --resume, no leaked entry or temporary.
  fresh-clone-test [--keep]     `git clone` HEAD into a temp dir and run
                                `CI=true bash .ci/run` there. Only committed changes
                                are tested. --keep keeps the clone.

Environment:
  FTS_CI_HIL=0                  Make `ci` skip the hil step.
  FTS_CI_BENCH=0                Make `ci` skip `bench --quick`.
";

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        print!("{HELP}");
        bail!("no command given");
    };
    let rest: Vec<String> = args.collect();
    match cmd.as_str() {
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        "setup" => setup::cmd(&rest),
        "ci" => ci::cmd(&rest),
        "bindgen" => bindgen::cmd(&rest),
        "fuzz" => fuzz::cmd(&rest),
        "bench" => bench::cmd(&rest),
        "hil" => hil::cmd(&rest),
        "crash-campaign" => campaign::cmd(&rest),
        "fresh-clone-test" => fresh_clone::cmd(&rest),
        other => {
            print!("{HELP}");
            bail!("unknown command `{other}`")
        }
    }
}
