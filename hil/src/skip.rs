//! The one way a test says that it cannot run here.
//!
//! A test that needs a component the machine may lack (tgt, root, loop
//! devices, `/dev/shm`, IPv6 loopback, qemu, ...) asks for it and, when it
//! is missing, calls [`skip`] (or [`require`]) and returns:
//!
//! ```no_run
//! #[test]
//! fn needs_a_loop_device() {
//!     let lo = match attach_loop_device() {
//!         Ok(lo) => lo,
//!         Err(why) => return hil::skip::skip("needs_a_loop_device", &why),
//!     };
//!     // ... the real test ...
//! }
//! # fn attach_loop_device() -> Result<(), String> { Ok(()) }
//! ```
//!
//! - With the environment variable `CI` set (to anything), [`skip`] panics:
//!   on CI a missing component is a broken machine, and the test fails
//!   saying what is missing.
//! - Otherwise it writes a `SKIPPED` banner straight to the process's
//!   standard error (not through `eprintln!`, whose output the test harness
//!   captures and throws away for passing tests) and appends one line
//!   `TEST<TAB>WHY` to the skip log ([`log_path`]). `cargo xtask ci` points
//!   the log at a fresh file ([`LOG_ENV`]), reads it back with [`read_log`]
//!   and ends with the number of skipped tests.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::Error;

/// The environment variable naming the skip log (see [`log_path`]).
pub const LOG_ENV: &str = "FTS_SKIP_LOG";

/// The skip log's file name in the target directory when [`LOG_ENV`] is
/// not set.
pub const DEFAULT_LOG_NAME: &str = "fts-skips.log";

/// One skipped test, as recorded in the skip log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The test's name as the test gave it.
    pub test: String,
    /// Why it could not run (tabs and line breaks replaced by spaces).
    pub why: String,
}

/// Whether a missing component fails a test instead of skipping it: the
/// environment variable `CI` is set (to anything, as CI services set it).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Where skips are recorded: the file named by `$FTS_SKIP_LOG` if set and
/// not empty, else `fts-skips.log` in `$CARGO_TARGET_DIR`, else in this
/// workspace's `target` directory.
pub fn log_path() -> PathBuf {
    if let Some(p) = std::env::var_os(LOG_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            manifest.parent().unwrap_or(manifest).join("target")
        }
    };
    target.join(DEFAULT_LOG_NAME)
}

/// Skips the test `test` because of `why`, or fails it under CI.
///
/// With `CI` set, panics (failing the test) with `test`, `why` and the
/// fact that CI does not allow skips. Otherwise prints a `SKIPPED` banner
/// on the real standard error and appends `test<TAB>why` to [`log_path`];
/// the caller then returns. A log that cannot be written is reported in
/// the banner, not turned into a failure.
#[track_caller]
pub fn skip(test: &str, why: &str) {
    skip_with(test, why, in_ci(), &log_path(), &mut io::stderr());
}

/// `true` when `check` is `Ok` (run the test); otherwise [`skip`]s with
/// the error as the reason and returns `false` (or panics under CI).
///
/// ```no_run
/// # fn test() {
/// if !hil::skip::require("my_test", hil::tgt::available()) {
///     return;
/// }
/// # }
/// ```
#[track_caller]
pub fn require(test: &str, check: Result<(), String>) -> bool {
    match check {
        Ok(()) => true,
        Err(why) => {
            skip(test, &why);
            false
        }
    }
}

/// [`skip`] with its inputs explicit: whether CI is set, the log and where
/// the banner goes.
#[track_caller]
pub fn skip_with(test: &str, why: &str, ci: bool, log: &Path, banner_to: &mut dyn Write) {
    if ci {
        panic!(
            "{test}: cannot run here: {why}. CI is set, so this is a failure, not a skip: \
             provide what is missing (cargo xtask setup installs the system packages; \
             the tests run as root)"
        );
    }
    let recorded = match append(log, test, why) {
        Ok(()) => format!("recorded in {}", log.display()),
        Err(e) => format!("NOT recorded: {e}"),
    };
    let banner = format!(
        "\n\
         ************************************************************\n\
         SKIPPED: {test}: {why}\n\
         (nothing of this test ran; {recorded}; with CI set this fails)\n\
         ************************************************************\n\n"
    );
    // A banner that cannot be written has nowhere else to go.
    let _ = banner_to.write_all(banner.as_bytes());
    let _ = banner_to.flush();
}

/// Appends one `test<TAB>why` line (a single `write`, so lines of parallel
/// test processes do not interleave).
fn append(log: &Path, test: &str, why: &str) -> Result<(), Error> {
    let io_err = |action, source| Error::Io {
        action,
        path: log.to_path_buf(),
        source,
    };
    if let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| io_err("create the directory of the skip log", e))?;
    }
    let line = format!("{}\t{}\n", one_line(test), one_line(why));
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| io_err("open the skip log", e))?;
    f.write_all(line.as_bytes())
        .map_err(|e| io_err("append to the skip log", e))
}

fn one_line(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// The skips recorded in `log`, in order; none if the file does not exist.
pub fn read_log(log: &Path) -> Result<Vec<Skipped>, Error> {
    let text = match fs::read_to_string(log) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                action: "read the skip log",
                path: log.to_path_buf(),
                source,
            })
        }
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (test, why) = l.split_once('\t').unwrap_or((l, ""));
            Skipped {
                test: test.to_owned(),
                why: why.to_owned(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_ci_a_skip_is_shown_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sub").join("skips.log");
        let mut shown = Vec::new();
        skip_with("t1", "no\tlosetup\non PATH", false, &log, &mut shown);
        skip_with("t2", "not root", false, &log, &mut shown);
        let shown = String::from_utf8(shown).unwrap();
        assert!(
            shown.contains("SKIPPED: t1: no\tlosetup\non PATH"),
            "{shown}"
        );
        assert!(shown.contains("SKIPPED: t2: not root"), "{shown}");
        assert!(shown.contains(&log.display().to_string()), "{shown}");
        assert_eq!(
            read_log(&log).unwrap(),
            vec![
                Skipped {
                    test: "t1".into(),
                    why: "no losetup on PATH".into()
                },
                Skipped {
                    test: "t2".into(),
                    why: "not root".into()
                },
            ]
        );
    }

    #[test]
    fn under_ci_a_skip_fails_and_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips.log");
        let mut shown = Vec::new();
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            skip_with("t3", "tgtd is not installed", true, &log, &mut shown);
        }))
        .expect_err("a skip under CI panics");
        let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("t3") && msg.contains("tgtd is not installed") && msg.contains("CI"),
            "{msg}"
        );
        assert!(shown.is_empty());
        assert!(!log.exists());
        assert_eq!(read_log(&log).unwrap(), vec![]);
    }

    #[test]
    fn an_unwritable_log_is_reported_in_the_banner() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the log file should be.
        let mut shown = Vec::new();
        skip_with("t4", "why", false, dir.path(), &mut shown);
        let shown = String::from_utf8(shown).unwrap();
        assert!(shown.contains("NOT recorded"), "{shown}");
        assert!(read_log(dir.path()).is_err());
    }

    #[test]
    fn require_passes_ok_through() {
        // Ok never skips, so this holds with and without CI.
        assert!(require("t5", Ok(())));
    }

    #[test]
    fn the_log_is_the_environments_or_in_the_target_dir() {
        let nonempty = |k| std::env::var_os(k).filter(|v| !v.is_empty());
        let want = match (nonempty(LOG_ENV), nonempty("CARGO_TARGET_DIR")) {
            (Some(log), _) => PathBuf::from(log),
            (None, Some(target)) => PathBuf::from(target).join(DEFAULT_LOG_NAME),
            (None, None) => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join(DEFAULT_LOG_NAME),
        };
        let got = log_path();
        assert_eq!(
            got.file_name(),
            want.file_name(),
            "{} vs {}",
            got.display(),
            want.display()
        );
        assert_eq!(
            got.parent()
                .map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf())),
            want.parent()
                .map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf())),
        );
    }
}
