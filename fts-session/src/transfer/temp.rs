//! Temporary files of a receiver: where a file is written before its
//! digest is checked and it is renamed into place.
//!
//! Two kinds, both next to the target (same directory, so the rename is
//! atomic) and hidden (a leading dot):
//!
//! * `.NAME.fts-<pid>-<8 hex>`: a plain transfer's temporary, unique to one
//!   attempt, removed whenever the transfer fails or is interrupted.
//! * `.NAME.fts-partial-<16 hex>`: a resumable transfer's partial copy
//!   (`--resume`, `reput`, `reget`). The hex is the start of the BLAKE3 of
//!   the peer's fts name, a NUL byte and the target's absolute path, so one
//!   peer resuming one target finds it again and nobody else does. It is
//!   **kept** when the transfer fails or is interrupted (that is its
//!   point) and removed when the whole file's digest does not match, when
//!   the file is in place, when a plain transfer of the same target by the
//!   same peer succeeds, and by the server's sweep once older than
//!   `serve --max-partial-age`. While a transfer uses it, it holds an OFD
//!   lock on it (`fts_lock::OfdLock`), so two transfers never write one
//!   partial and the sweep leaves it alone.
//!
//! NAME is cut so that the whole name fits 255 bytes: a 250-byte target
//! name still gets a temporary.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek as _, SeekFrom};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fts_lock::OfdLock;

/// Longest file name most Unix file systems accept.
const NAME_MAX: usize = 255;

/// Which fts temporary a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TempKind {
    /// A plain transfer's temporary, written by process `pid`.
    Unique {
        /// The writer's process id (on the host that wrote it).
        pid: u32,
    },
    /// A resumable transfer's partial copy.
    Partial,
}

fn all_hex(b: &[u8]) -> bool {
    b.iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Recognises the names this module creates (and nothing else).
pub(crate) fn classify(name: &OsStr) -> Option<TempKind> {
    let b = name.as_bytes();
    if b.first() != Some(&b'.') {
        return None;
    }
    let at = b.windows(5).rposition(|w| w == b".fts-")?;
    if at < 2 {
        return None;
    }
    let rest = &b[at + 5..];
    if let Some(hex) = rest.strip_prefix(b"partial-") {
        return (hex.len() == 16 && all_hex(hex)).then_some(TempKind::Partial);
    }
    let dash = rest.iter().position(|&c| c == b'-')?;
    let (pid, hex) = (&rest[..dash], &rest[dash + 1..]);
    if pid.is_empty() || pid.len() > 10 || !pid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if hex.len() != 8 || !all_hex(hex) {
        return None;
    }
    let pid = std::str::from_utf8(pid).ok()?.parse().ok()?;
    Some(TempKind::Unique { pid })
}

/// `.NAME<suffix>` in `target`'s directory, NAME cut to fit [`NAME_MAX`].
fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target.file_name().map(OsStr::as_bytes).unwrap_or_default();
    let room = NAME_MAX.saturating_sub(1 + suffix.len());
    let mut out = Vec::with_capacity(NAME_MAX);
    out.push(b'.');
    out.extend_from_slice(&name[..name.len().min(room)]);
    out.extend_from_slice(suffix.as_bytes());
    dir.join(OsString::from_vec(out))
}

/// The partial copy's path for `peer` writing `target`.
pub(crate) fn partial_path(target: &Path, peer: &str) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(peer.as_bytes());
    h.update(&[0]);
    h.update(target.as_os_str().as_bytes());
    let d = h.finalize();
    let hex: String = d.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sibling(target, &format!(".fts-partial-{hex}"))
}

/// Why a temporary could not be had.
#[derive(Debug)]
pub(crate) enum TempError {
    /// The file system refused (no space, read-only, name too long, ...).
    Io(io::Error),
    /// Another transfer holds the partial copy.
    Busy,
    /// Something that is not a regular file sits at the partial's name.
    NotRegular,
}

/// A temporary file next to its target: removed when dropped unless it is
/// a partial copy (kept for a later resume) or was committed.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    file: File,
    partial: bool,
    /// The OFD lock that keeps other transfers off a partial copy; its
    /// guard was forgotten, so the lock lives as long as this descriptor.
    _lock: Option<OfdLock>,
    done: bool,
}

/// Takes the OFD lock of the partial copy at `path`, held until the
/// returned handle is dropped; `None` if another transfer holds it.
fn lock_partial(path: &Path) -> io::Result<Option<OfdLock>> {
    let mut lock = OfdLock::open(path).map_err(io::Error::other)?;
    let held = match lock.try_lock() {
        Ok(Some(guard)) => {
            // The lock belongs to `lock`'s open file description and dies
            // with it (also when the process dies): no explicit release.
            std::mem::forget(guard);
            true
        }
        Ok(None) => false,
        Err(e) => return Err(io::Error::other(e)),
    };
    Ok(held.then_some(lock))
}

impl TempFile {
    /// A fresh, unique temporary for one attempt.
    pub(crate) fn unique(target: &Path) -> io::Result<TempFile> {
        let path = sibling(
            target,
            &format!(".fts-{}-{:08x}", std::process::id(), rand::random::<u32>()),
        );
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(TempFile {
            path,
            file,
            partial: false,
            _lock: None,
            done: false,
        })
    }

    /// The partial copy of `peer` for `target`, created empty if absent,
    /// locked against other transfers.
    pub(crate) fn partial(target: &Path, peer: &str) -> Result<TempFile, TempError> {
        let path = partial_path(target, peer);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    TempError::NotRegular
                } else {
                    TempError::Io(e)
                }
            })?;
        if !file.metadata().map_err(TempError::Io)?.is_file() {
            return Err(TempError::NotRegular);
        }
        let lock = lock_partial(&path)
            .map_err(TempError::Io)?
            .ok_or(TempError::Busy)?;
        Ok(TempFile {
            path,
            file,
            partial: true,
            _lock: Some(lock),
            done: false,
        })
    }

    /// The open file.
    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Its current length.
    pub(crate) fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Cuts it to `len` bytes and positions writes there.
    pub(crate) fn truncate_to(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.seek(SeekFrom::Start(len))?;
        Ok(())
    }

    /// fsyncs and moves into place; without `replace`, never clobbers.
    pub(crate) fn commit(mut self, target: &Path, replace: bool) -> io::Result<()> {
        self.file.sync_all()?;
        if replace {
            std::fs::rename(&self.path, target)?;
        } else {
            std::fs::hard_link(&self.path, target)?;
            std::fs::remove_file(&self.path)?;
        }
        self.done = true;
        Ok(())
    }

    /// Removes it, also a partial copy (its bytes are not the file's).
    pub(crate) fn discard(mut self) {
        self.partial = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // An empty partial copy holds nothing to resume.
        let keep = self.partial && self.len().map(|n| n > 0).unwrap_or(false);
        if !keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// After a plain transfer of `target` by `peer` succeeded: removes that
/// peer's partial copy of it, if there is one and no transfer holds it.
pub(crate) fn remove_partial(target: &Path, peer: &str) {
    let path = partial_path(target, peer);
    if std::fs::symlink_metadata(&path).is_err() {
        return;
    }
    if let Ok(Some(_held)) = lock_partial(&path) {
        let _ = std::fs::remove_file(&path);
    }
}

/// What [`sweep`] did.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    /// Temporaries removed (paths relative to the swept root).
    pub(crate) removed: Vec<PathBuf>,
    /// Temporaries that could not be removed, and why.
    pub(crate) failed: Vec<(PathBuf, io::Error)>,
}

/// Deepest directory level [`sweep`] descends to.
const SWEEP_DEPTH: usize = 64;

/// Removes, under `root` (symbolic links are not followed), the fts
/// temporaries nobody will use again: plain temporaries whose writer is no
/// longer a process on this host, and every temporary or partial copy last
/// written more than `max_age` ago, unless a transfer holds it.
pub(crate) fn sweep(root: &Path, max_age: Duration) -> Swept {
    let mut out = Swept::default();
    let now = SystemTime::now();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in rd.flatten() {
            let Ok(ft) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if ft.is_dir() {
                if depth < SWEEP_DEPTH {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let Some(kind) = classify(&entry.file_name()) else {
                continue;
            };
            let old = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > max_age);
            let orphan = match kind {
                TempKind::Unique { pid } => !Path::new(&format!("/proc/{pid}")).exists(),
                TempKind::Partial => false,
            };
            if !(old || orphan) {
                continue;
            }
            // A partial copy a transfer holds stays; ours is held until removed.
            let _held = match kind {
                TempKind::Partial => match lock_partial(&path) {
                    Ok(Some(l)) => Some(l),
                    _ => continue, // in use, or gone meanwhile
                },
                TempKind::Unique { .. } => None,
            };
            let shown = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            match std::fs::remove_file(&path) {
                Ok(()) => out.removed.push(shown),
                Err(e) => out.failed.push((shown, e)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_through_classify() {
        let t = Path::new("/srv/a/report.pdf");
        let u = TempFile::unique(&std::env::temp_dir().join("fts-temp-test-x")).unwrap();
        assert_eq!(
            classify(u.path.file_name().unwrap()),
            Some(TempKind::Unique {
                pid: std::process::id()
            })
        );
        drop(u);
        let p = partial_path(t, "a");
        assert_eq!(p.parent(), Some(Path::new("/srv/a")));
        assert_eq!(classify(p.file_name().unwrap()), Some(TempKind::Partial));
        assert_ne!(p, partial_path(t, "b"), "the peer is part of the name");
        assert_ne!(p, partial_path(Path::new("/srv/a/other"), "a"));
        for plain in [
            "report.pdf",
            ".report.pdf",
            ".fts-1-0000000a",
            ".x.fts-partial-0123",
            ".x.fts-12-0000000g",
            ".x.fts-1x-0000000a",
            "x.fts-1-0000000a",
        ] {
            assert_eq!(classify(OsStr::new(plain)), None, "{plain}");
        }
    }

    #[test]
    fn long_names_are_cut_to_fit() {
        let name = "n".repeat(250);
        let p = partial_path(&Path::new("/d").join(&name), "peer");
        assert_eq!(p.file_name().unwrap().len(), NAME_MAX);
        assert_eq!(classify(p.file_name().unwrap()), Some(TempKind::Partial));
        let u = sibling(&Path::new("/d").join(&name), ".fts-4294967295-ffffffff");
        assert_eq!(u.file_name().unwrap().len(), NAME_MAX);
        assert!(matches!(
            classify(u.file_name().unwrap()),
            Some(TempKind::Unique { pid: 4_294_967_295 })
        ));
    }
}
