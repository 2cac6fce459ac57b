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

/// Bindings to generate.
const BINDINGS: &[Binding] = &[
    // SG_IO: the sg_io_hdr structure and the SG_* ioctl numbers and flags.
    // The layout assertions bindgen emits (size, alignment and every field
    // offset, as compile-time `const` checks) are kept: they pin the
    // committed struct to the C layout of the generating host (x86_64, LP64;
    // aarch64 is identical). `--rust-target` is the workspace MSRV.
    Binding {
        header: "/usr/include/scsi/sg.h",
        output: "fts-scsi/src/sg/bindings.rs",
        args: &[
            "--allowlist-type",
            "sg_io_hdr",
            "--allowlist-var",
            "SG_.*",
            "--use-core",
            "--rust-target",
            "1.80",
            "--raw-line",
            "// Generated from <scsi/sg.h> by bindgen-cli 0.72.1 (the sg entry of the BINDINGS",
            "--raw-line",
            "// table in xtask/src/bindgen.rs). Do not edit: regenerate with `cargo xtask bindgen`.",
            "--raw-line",
            "// The `const _` block at the end checks the size, alignment and field offsets",
            "--raw-line",
            "// against the C layout on the generating host (x86_64, LP64) at every build.",
        ],
        clang_args: &[],
    },
    // libiscsi, loaded at run time (dlopen) so a default build needs neither
    // libclang nor libiscsi-dev. The wrapper pulls in scsi-lowlevel.h for
    // `struct scsi_task`; the allowlists name exactly what
    // `fts_scsi::iscsi` calls, and `--dynamic-link-require-all` makes
    // `LibIscsi::new` fail (instead of a later call panicking) when a symbol
    // is missing.
    Binding {
        header: "libiscsi-sys/wrapper.h",
        output: "libiscsi-sys/src/bindings.rs",
        args: &[
            "--dynamic-loading",
            "LibIscsi",
            "--dynamic-link-require-all",
            "--no-prepend-enum-name",
            "--allowlist-function",
            "iscsi_(create_context|destroy_context|get_error|set_targetname|set_session_type|\
             set_header_digest|set_isid_random|set_noautoreconnect|set_timeout|\
             full_connect_async|logout_async|get_fd|which_events|service|is_logged_in|\
             scsi_command_async|task_mgmt_lun_reset_async)",
            "--allowlist-function",
            "scsi_(create_task|free_scsi_task|task_add_data_in_buffer)",
            "--allowlist-type",
            "scsi_status|scsi_xfer_dir|scsi_residual|iscsi_session_type|iscsi_header_digest",
            "--rust-target",
            "1.80",
            "--raw-line",
            "// Generated from libiscsi-sys/wrapper.h (libiscsi 1.19 headers) by bindgen-cli 0.72.1",
            "--raw-line",
            "// (the libiscsi entry of the BINDINGS table in xtask/src/bindgen.rs). Do not edit:",
            "--raw-line",
            "// regenerate with `cargo xtask bindgen`.",
        ],
        clang_args: &[],
    },
];

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
