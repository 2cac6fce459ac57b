//! `cargo xtask bindgen`: regenerate the committed bindgen output (for
//! `<scsi/sg.h>` and libiscsi) with a pinned bindgen-cli, so the generated
//! files only change when a header or this table changes. Needs libclang
//! (`libclang-dev`, part of `cargo xtask setup`).

use anyhow::{Context, Result};

use crate::util;

/// The bindgen-cli version used for all committed bindings.
const BINDGEN_VERSION: &str = "0.72.1";

/// One generated bindings file.
#[derive(Debug)]
struct Binding {
    /// Header to translate: an absolute system path, or a path relative to
    /// the workspace root (e.g. a wrapper header that `#include`s others).
    header: &'static str,
    /// Output file, relative to the workspace root.
    output: &'static str,
    /// Extra bindgen arguments (allowlists etc.), placed before `--`.
    args: &'static [&'static str],
    /// Extra clang arguments, placed after `--`.
    clang_args: &'static [&'static str],
}

/// Bindings to generate. Add entries here, e.g.:
///
/// ```text
/// Binding {
///     header: "/usr/include/scsi/sg.h",
///     output: "fts-scsi/src/sys/sg.rs",
///     args: &[
///         "--allowlist-type", "sg_io_hdr",
///         "--allowlist-var", "SG_.*",
///         "--no-layout-tests",
///         "--use-core",
///     ],
///     clang_args: &[],
/// },
/// Binding {
///     header: "/usr/include/iscsi/iscsi.h",
///     output: "fts-scsi/src/sys/libiscsi.rs",
///     args: &["--allowlist-function", "iscsi_.*", "--allowlist-type", "iscsi_.*|scsi_.*"],
///     clang_args: &["-I/usr/include/iscsi"],
/// },
/// ```
const BINDINGS: &[Binding] = &[];

pub fn cmd(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        anyhow::bail!("bindgen: takes no arguments, got `{a}`");
    }
    if BINDINGS.is_empty() {
        eprintln!(
            "bindgen: the BINDINGS table in xtask/src/bindgen.rs is empty, nothing to generate \
             (bindgen-cli {BINDGEN_VERSION} is installed on first use)"
        );
        return Ok(());
    }
    ensure_bindgen()?;
    let root = util::root();
    for b in BINDINGS {
        let out = root.join(b.output);
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        eprintln!("bindgen: {} -> {}", b.header, b.output);
        util::run(
            util::cmd("bindgen")
                .arg(b.header)
                .arg("--output")
                .arg(&out)
                .args(b.args)
                .arg("--")
                .args(b.clang_args),
        )?;
    }
    eprintln!(
        "bindgen: regenerated {} file(s); review and commit them",
        BINDINGS.len()
    );
    Ok(())
}

/// Installs bindgen-cli at [`BINDGEN_VERSION`] unless `bindgen --version`
/// already reports it.
fn ensure_bindgen() -> Result<()> {
    let current = util::probe(std::process::Command::new("bindgen").arg("--version"));
    if reports_version(current.as_deref()) {
        eprintln!("bindgen: bindgen {BINDGEN_VERSION} present");
        return Ok(());
    }
    eprintln!(
        "bindgen: need bindgen {BINDGEN_VERSION}, found {}; installing",
        current.as_deref().unwrap_or("none")
    );
    util::run(util::cargo().args([
        "install",
        "bindgen-cli",
        "--version",
        BINDGEN_VERSION,
        "--locked",
    ]))
}

/// `bindgen --version` prints e.g. `bindgen 0.72.1`.
fn reports_version(out: Option<&str>) -> bool {
    out.and_then(|s| s.split_whitespace().nth(1)) == Some(BINDGEN_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_check() {
        assert!(reports_version(Some("bindgen 0.72.1")));
        assert!(!reports_version(Some("bindgen 0.72.10")));
        assert!(!reports_version(Some("bindgen 0.71.1")));
        assert!(!reports_version(None));
    }
}
