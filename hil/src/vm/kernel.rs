//! The guest kernel: Debian's cloud kernel, fetched with `apt-get download`
//! and cached (kernel image plus the few modules the guest loads) under a
//! directory keyed by package name and version.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::proc::run_capture;
use crate::Error;

/// The metapackage whose dependency names the current cloud kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";

/// The modules the guest loads, in load order (the cloud kernel has them as
/// modules and ships no `modules.dep` in the initramfs, so `/init` insmods
/// them one by one): virtio PCI transport, the SCSI core, virtio-scsi and
/// the SCSI generic driver (`/dev/sgN`, what fts's SG_IO transport opens).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "scsi_common",
    "scsi_mod",
    "virtio_scsi",
    "sg",
];

/// Marks a cache directory as complete.
const COMPLETE: &str = ".complete";

/// How long apt may take for one command (a download of ~30 MB).
const APT_TIMEOUT: Duration = Duration::from_secs(600);

/// An extracted guest kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// The package and version, e.g. `linux-image-6.1.0-56-cloud-amd64_6.1.192-2`.
    pub key: String,
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// The uncompressed modules of [`GUEST_MODULES`], in load order.
    pub modules: Vec<PathBuf>,
}

/// Finds (in `cache_root`) or fetches the guest kernel.
///
/// Resolves the versioned package behind [`KERNEL_METAPACKAGE`] with
/// `apt-cache`, and uses `cache_root/<package>_<version>` if a previous run
/// completed it; otherwise downloads the package with `apt-get download`,
/// unpacks it with `dpkg -x` and keeps only the kernel image and
/// [`GUEST_MODULES`] (decompressing `.ko.xz`/`.ko.zst`). When apt cannot
/// resolve or download the package but an older complete cache exists, that
/// one is used.
pub fn guest_kernel(cache_root: &Path) -> Result<GuestKernel, Error> {
    fs::create_dir_all(cache_root).map_err(|source| Error::Io {
        action: "create the VM cache directory",
        path: cache_root.to_path_buf(),
        source,
    })?;
    let resolved = resolve_package();
    let (pkg, version) = match resolved {
        Ok(pv) => pv,
        Err(e) => return newest_cached(cache_root).ok_or(e),
    };
    let key = format!("{pkg}_{version}");
    let dir = cache_root.join(&key);
    if dir.join(COMPLETE).exists() {
        return load(&dir, &key);
    }
    match fetch(cache_root, &dir, &pkg, &version) {
        Ok(()) => load(&dir, &key),
        Err(e) => newest_cached(cache_root).ok_or(e),
    }
}

/// `(package, version)` of the kernel the metapackage depends on.
fn resolve_package() -> Result<(String, String), Error> {
    let mut cmd = Command::new("apt-cache");
    cmd.args(["depends", KERNEL_METAPACKAGE]);
    let out = run_capture(&mut cmd, APT_TIMEOUT)?;
    let pkg = parse_depends(&out).ok_or_else(|| Error::Parse {
        command: format!("apt-cache depends {KERNEL_METAPACKAGE}"),
        detail: "no `Depends: linux-image-...` line".to_owned(),
        output: out.clone(),
    })?;
    let mut cmd = Command::new("apt-cache");
    cmd.args(["show", "--no-all-versions", &pkg]);
    let out = run_capture(&mut cmd, APT_TIMEOUT)?;
    let version = out
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| Error::Parse {
            command: format!("apt-cache show --no-all-versions {pkg}"),
            detail: "no `Version:` line".to_owned(),
            output: out.clone(),
        })?;
    Ok((pkg, version))
}

/// The versioned kernel package in the output of `apt-cache depends`.
pub fn parse_depends(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_owned)
}

fn fetch(cache_root: &Path, dir: &Path, pkg: &str, version: &str) -> Result<(), Error> {
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(cache_root)
        .map_err(|source| Error::Io {
            action: "create a temporary directory in",
            path: cache_root.to_path_buf(),
            source,
        })?;
    let mut cmd = Command::new("apt-get");
    cmd.args([
        "download",
        "-q",
        "-o",
        "APT::Sandbox::User=root",
        &format!("{pkg}={version}"),
    ])
    .current_dir(tmp.path());
    run_capture(&mut cmd, APT_TIMEOUT)?;
    let deb = fs::read_dir(tmp.path())
        .map_err(|source| Error::Io {
            action: "list",
            path: tmp.path().to_path_buf(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| Error::InvalidArgument {
            what: format!(
                "apt-get download {pkg} left no .deb in {}",
                tmp.path().display()
            ),
        })?;
    let root = tmp.path().join("x");
    let mut cmd = Command::new("dpkg");
    cmd.arg("-x").arg(&deb).arg(&root);
    run_capture(&mut cmd, APT_TIMEOUT)?;

    let staging = tmp.path().join("out");
    let mkdir = |p: &Path| {
        fs::create_dir_all(p).map_err(|source| Error::Io {
            action: "create directory",
            path: p.to_path_buf(),
            source,
        })
    };
    mkdir(&staging.join("modules"))?;
    let vmlinuz =
        find_file(&root.join("boot"), &|n| n.starts_with("vmlinuz-"))?.ok_or_else(|| {
            Error::InvalidArgument {
                what: format!("{pkg} has no boot/vmlinuz-*"),
            }
        })?;
    copy(&vmlinuz, &staging.join("vmlinuz"))?;
    for m in GUEST_MODULES {
        let found = find_file(&root.join("lib/modules"), &|n| {
            n == format!("{m}.ko") || n == format!("{m}.ko.xz") || n == format!("{m}.ko.zst")
        })?
        .ok_or_else(|| Error::InvalidArgument {
            what: format!("{pkg} has no module {m}.ko"),
        })?;
        let dest = staging.join("modules").join(format!("{m}.ko"));
        let name = found.to_string_lossy().into_owned();
        if name.ends_with(".ko") {
            copy(&found, &dest)?;
        } else {
            let tool = if name.ends_with(".xz") { "xz" } else { "zstd" };
            let mut cmd = Command::new(tool);
            cmd.arg("-dc").arg(&found);
            let bytes = crate::proc::run_bytes(&mut cmd, APT_TIMEOUT)?;
            fs::write(&dest, bytes).map_err(|source| Error::Io {
                action: "write",
                path: dest.clone(),
                source,
            })?;
        }
    }
    fs::write(staging.join(COMPLETE), format!("{pkg} {version}\n")).map_err(|source| {
        Error::Io {
            action: "write",
            path: staging.join(COMPLETE),
            source,
        }
    })?;
    // Atomic publication; a concurrent run may have won the race, which is fine.
    if let Err(source) = fs::rename(&staging, dir) {
        if !dir.join(COMPLETE).exists() {
            return Err(Error::Io {
                action: "move the fetched kernel to",
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    Ok(())
}

fn load(dir: &Path, key: &str) -> Result<GuestKernel, Error> {
    let vmlinuz = dir.join("vmlinuz");
    let modules: Vec<PathBuf> = GUEST_MODULES
        .iter()
        .map(|m| dir.join("modules").join(format!("{m}.ko")))
        .collect();
    for p in std::iter::once(&vmlinuz).chain(&modules) {
        if !p.is_file() {
            return Err(Error::InvalidArgument {
                what: format!(
                    "cached guest kernel {} lacks {} (remove the directory to fetch it again)",
                    dir.display(),
                    p.display()
                ),
            });
        }
    }
    Ok(GuestKernel {
        key: key.to_owned(),
        vmlinuz,
        modules,
    })
}

/// The most recently completed cache entry, if any.
fn newest_cached(cache_root: &Path) -> Option<GuestKernel> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in fs::read_dir(cache_root).ok()?.filter_map(Result::ok) {
        let marker = e.path().join(COMPLETE);
        if let Ok(t) = fs::metadata(&marker).and_then(|m| m.modified()) {
            if best.as_ref().map_or(true, |(bt, _)| t > *bt) {
                best = Some((t, e.path()));
            }
        }
    }
    let (_, dir) = best?;
    let key = dir.file_name()?.to_string_lossy().into_owned();
    load(&dir, &key).ok()
}

fn find_file(root: &Path, pred: &dyn Fn(&str) -> bool) -> Result<Option<PathBuf>, Error> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                action: "list",
                path: root.to_path_buf(),
                source,
            })
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if let Some(found) = find_file(&p, pred)? {
                return Ok(Some(found));
            }
        } else if p.file_name().is_some_and(|n| pred(&n.to_string_lossy())) {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

fn copy(from: &Path, to: &Path) -> Result<(), Error> {
    fs::copy(from, to).map(drop).map_err(|source| Error::Io {
        action: "copy to",
        path: to.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_depends() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(parse_depends("linux-image-cloud-amd64\n"), None);
    }
}
