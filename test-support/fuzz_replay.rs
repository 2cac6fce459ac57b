// Shared body of `fts-layout/tests/fuzz_regressions.rs` and
// `fts-scsi/tests/fuzz_regressions.rs`, pulled in with `include!` after each
// declares `mod common` (its crate's fuzz target bodies): replays the kept
// regressions and the committed seeds of that crate's fuzz targets.
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use common::{Body, Outcome, TARGETS};

const EXPECTED: &str = "expected";

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn body(target: &str) -> Option<Body> {
    TARGETS.iter().find(|(t, _)| *t == target).map(|(_, b)| *b)
}

/// The input files under `dir/<target>/`, sorted; `.expected` files left out.
fn inputs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let Ok(targets) = fs::read_dir(dir) else {
        return found;
    };
    for t in targets {
        let t = t.unwrap();
        let target = t.file_name().to_string_lossy().into_owned();
        assert!(
            body(&target).is_some(),
            "{}: no fuzz target named {target:?} (known: {:?})",
            t.path().display(),
            TARGETS.iter().map(|(t, _)| *t).collect::<Vec<_>>()
        );
        for f in fs::read_dir(t.path()).unwrap() {
            let path = f.unwrap().path();
            if path.extension().is_some_and(|e| e == EXPECTED) {
                continue;
            }
            found.push((target.clone(), path));
        }
    }
    found.sort();
    found
}

fn run(target: &str, path: &Path) -> Result<Outcome, String> {
    let data = fs::read(path).unwrap();
    let f = body(target).unwrap();
    catch_unwind(AssertUnwindSafe(|| f(&data))).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{}: {target} panicked: {msg}", path.display())
    })
}

#[test]
fn regressions_give_their_expected_outcome() {
    let bless = std::env::var_os("FTS_FUZZ_BLESS").is_some();
    let mut failures = Vec::new();
    let all = inputs(&fuzz_dir().join("regressions"));
    for (target, path) in &all {
        let outcome = match run(target, path) {
            Ok(o) => o,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let expected_path = path.with_extension(EXPECTED);
        if bless {
            fs::write(&expected_path, format!("{}\n", outcome.text)).unwrap();
            continue;
        }
        match fs::read_to_string(&expected_path) {
            Ok(want) if want.trim_end() == outcome.text => {}
            Ok(want) => failures.push(format!(
                "{}: outcome changed\n--- expected\n{}\n--- got\n{}",
                path.display(),
                want.trim_end(),
                outcome.text
            )),
            Err(_) => failures.push(format!(
                "{}: no {} (FTS_FUZZ_BLESS=1 writes it); outcome:\n{}",
                path.display(),
                expected_path.display(),
                outcome.text
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn seeds_run_clean_and_reach_every_target() {
    let seeds = fuzz_dir().join("seeds");
    let all = inputs(&seeds);
    let mut failures = Vec::new();
    for (target, _) in TARGETS {
        let mine: Vec<_> = all.iter().filter(|(t, _)| t == target).collect();
        let mut reached = 0;
        for (_, path) in &mine {
            match run(target, path) {
                Ok(o) => reached += usize::from(o.reached),
                Err(e) => failures.push(e),
            }
        }
        if reached == 0 {
            failures.push(format!(
                "{}/{target}: {} seed(s), none gets past the first checks",
                seeds.display(),
                mine.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
