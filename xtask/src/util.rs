//! Small helpers: workspace root, running child processes, timing steps.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The workspace root: the parent of this crate's directory.
pub fn root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `target` in the
/// workspace root.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// A `Command` for `prog`, to be run from the workspace root.
pub fn cmd(prog: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(prog);
    c.current_dir(root());
    c
}

/// A `Command` for the cargo that runs us (`$CARGO`), from the workspace root.
pub fn cargo() -> Command {
    cmd(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Renders `c` as a shell-like line: `(cd DIR && ENV=val prog args...)`.
pub fn display(c: &Command) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            parts.push(format!(
                "{}={}",
                k.to_string_lossy(),
                quote(&v.to_string_lossy())
            ));
        }
    }
    parts.push(quote(&c.get_program().to_string_lossy()));
    parts.extend(c.get_args().map(|a| quote(&a.to_string_lossy())));
    let line = parts.join(" ");
    match c.get_current_dir() {
        Some(dir) if dir != root() => format!("(cd {} && {line})", quote(&dir.to_string_lossy())),
        _ => line,
    }
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_=./:,+@%".contains(ch));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `c` with inherited stdio; fails with the command line and exit status.
pub fn run(c: &mut Command) -> Result<()> {
    let line = display(c);
    eprintln!("$ {line}");
    let status = c
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("command `{line}` failed: {status}");
    }
    Ok(())
}

/// Runs `c` quietly and returns its trimmed stdout if it succeeded, `None` if
/// it could not be started or exited unsuccessfully.
pub fn probe(c: &mut Command) -> Option<String> {
    let out = c.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `c` capturing stdout (stderr inherited); fails like [`run`].
pub fn read(c: &mut Command) -> Result<String> {
    let line = display(c);
    eprintln!("$ {line}");
    let out = c
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        bail!("command `{line}` failed: {}", out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// Whether the current user is root (`id -u` prints 0).
pub fn is_root() -> bool {
    probe(Command::new("id").arg("-u")).as_deref() == Some("0")
}

pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:04.1}s", (secs / 60.0).floor(), secs % 60.0)
    }
}

/// Runs named steps with a header and timing each, failing fast with the
/// step name; prints a summary table at the end (also on failure).
#[derive(Debug)]
pub struct Steps {
    done: Vec<(String, Duration, &'static str)>,
    started: Instant,
}

impl Steps {
    pub fn new() -> Self {
        Self {
            done: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn step(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        eprintln!();
        eprintln!("==> {name}");
        let t = Instant::now();
        let res = f();
        let took = t.elapsed();
        let verdict = if res.is_ok() { "ok" } else { "FAILED" };
        eprintln!("<== {name}: {verdict} in {}", fmt_duration(took));
        self.done.push((name.to_string(), took, verdict));
        res.with_context(|| format!("step `{name}` failed"))
    }

    /// Records a step that was skipped, with the reason.
    pub fn skip(&mut self, name: &str, why: &str) {
        eprintln!();
        eprintln!("==> {name}");
        eprintln!("{name}: {why}");
        eprintln!("<== {name}: skipped");
        self.done
            .push((name.to_string(), Duration::ZERO, "skipped"));
    }

    pub fn summary(&self) {
        eprintln!();
        eprintln!("==> summary");
        let width = self.done.iter().map(|(n, ..)| n.len()).max().unwrap_or(0);
        for (name, took, verdict) in &self.done {
            eprintln!(
                "    {name:<width$}  {verdict:<7}  {:>9}",
                fmt_duration(*took)
            );
        }
        let total = fmt_duration(self.started.elapsed());
        eprintln!("    {:<width$}  {:<7}  {total:>9}", "total", "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("cargo"), "cargo");
        assert_eq!(quote("-max_total_time=5"), "-max_total_time=5");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn display_includes_env_and_dir() {
        let mut c = Command::new("cargo");
        c.args(["fuzz", "build"])
            .env("RUSTC_BOOTSTRAP", "1")
            .current_dir("/x y");
        assert_eq!(
            display(&c),
            "(cd '/x y' && RUSTC_BOOTSTRAP=1 cargo fuzz build)"
        );
    }

    #[test]
    fn root_has_workspace_manifest() {
        assert!(root().join("Cargo.toml").is_file());
        assert!(root().join("xtask").is_dir());
    }

    #[test]
    fn target_dir_is_under_the_root_unless_set() {
        match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
            Some(d) => assert_eq!(target_dir(), root().join(d)),
            None => assert_eq!(target_dir(), root().join("target")),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_secs(125)), "2m05.0s");
    }
}
