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
//!
//! Everything happens relative to a descriptor of the target's directory
//! (on the server one opened beneath the root, see [`crate::Root::open_new`]):
//! the temporary is created, locked, renamed into place and removed with
//! `openat`/`renameat`/`linkat`/`unlinkat` and a plain name, and opened with
//! `O_NOFOLLOW`, so no symbolic link swapped into the tree redirects any of
//! it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Seek as _, SeekFrom};
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use fts_lock::OfdLock;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

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

/// `.NAME<suffix>`, NAME (the target's name) cut to fit [`NAME_MAX`].
fn sibling(name: &OsStr, suffix: &str) -> OsString {
    let name = name.as_bytes();
    let room = NAME_MAX.saturating_sub(1 + suffix.len());
    let mut out = Vec::with_capacity(NAME_MAX);
    out.push(b'.');
    out.extend_from_slice(&name[..name.len().min(room)]);
    out.extend_from_slice(suffix.as_bytes());
    OsString::from_vec(out)
}

/// The name of the partial copy for `peer` writing the target whose
/// absolute path (the key) is `key`; it sits next to the target.
pub(crate) fn partial_name(key: &Path, peer: &str) -> OsString {
    let mut h = blake3::Hasher::new();
    h.update(peer.as_bytes());
    h.update(&[0]);
    h.update(key.as_os_str().as_bytes());
    let d = h.finalize();
    let hex: String = d.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = key.file_name().unwrap_or_default();
    sibling(name, &format!(".fts-partial-{hex}"))
}

/// A local path's directory, opened (`O_PATH`), and its name in it: where
/// a client writes a received file. A path that ends in `/` names a
/// directory, which a file cannot be.
pub(crate) fn local_parent(path: &Path) -> io::Result<(OwnedFd, OsString)> {
    let name = match path.file_name() {
        Some(name) if !path.as_os_str().as_bytes().ends_with(b"/") => name,
        _ => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(dir, flags, Mode::empty())?;
    Ok((fd, name.to_owned()))
}

/// Opens the existing file `name` in `dir` read-write without following a
/// symbolic link or blocking (a FIFO), for taking its lock.
fn open_existing(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    Ok(File::from(fd))
}

/// Read and write for everyone, less the umask (as `File::create`).
const FILE_MODE: u32 = 0o666;

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
    /// The directory it and its target are in.
    dir: OwnedFd,
    /// Its name there.
    name: OsString,
    file: File,
    partial: bool,
    /// The OFD lock that keeps other transfers off a partial copy; its
    /// guard was forgotten, so the lock lives as long as this descriptor.
    _lock: Option<OfdLock>,
    done: bool,
}

/// Takes the OFD lock of the partial copy open as `file` (named `name` in
/// errors), held until the returned handle is dropped; `None` if another
/// transfer holds it.
fn lock_partial(file: File, name: &OsStr) -> io::Result<Option<OfdLock>> {
    let mut lock = OfdLock::from_file(file, PathBuf::from(name));
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
    /// A fresh, unique temporary for one attempt at the target `target`
    /// in `dir`.
    pub(crate) fn unique(dir: BorrowedFd<'_>, target: &OsStr) -> io::Result<TempFile> {
        let name = sibling(
            target,
            &format!(".fts-{}-{:08x}", std::process::id(), rand::random::<u32>()),
        );
        // O_EXCL: never an existing file, never through a symbolic link.
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(dir, &name, flags, Mode::from_raw_mode(FILE_MODE))?;
        Ok(TempFile {
            dir: dir.try_clone_to_owned()?,
            name,
            file: File::from(fd),
            partial: false,
            _lock: None,
            done: false,
        })
    }

    /// The partial copy of `peer` for the target `target` in `dir` whose
    /// absolute path is `key`, created empty if absent, locked against
    /// other transfers.
    pub(crate) fn partial(
        dir: BorrowedFd<'_>,
        key: &Path,
        peer: &str,
    ) -> Result<TempFile, TempError> {
        let name = partial_name(key, peer);
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd =
            rustix::fs::openat(dir, &name, flags, Mode::from_raw_mode(FILE_MODE)).map_err(|e| {
                if e == rustix::io::Errno::LOOP {
                    TempError::NotRegular
                } else {
                    TempError::Io(e.into())
                }
            })?;
        let file = File::from(fd);
        if !file.metadata().map_err(TempError::Io)?.is_file() {
            return Err(TempError::NotRegular);
        }
        // The lock belongs to the open file description, which the clone
        // shares: no second lookup of the name.
        let lock = lock_partial(file.try_clone().map_err(TempError::Io)?, &name)
            .map_err(TempError::Io)?
            .ok_or(TempError::Busy)?;
        Ok(TempFile {
            dir: dir.try_clone_to_owned().map_err(TempError::Io)?,
            name,
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

    /// fsyncs and moves into place as `target` in its directory; without
    /// `replace`, never clobbers. A symbolic link at `target` is replaced
    /// (or, without `replace`, counts as existing), never followed.
    pub(crate) fn commit(mut self, target: &OsStr, replace: bool) -> io::Result<()> {
        self.file.sync_all()?;
        let dir = self.dir.as_fd();
        if replace {
            rustix::fs::renameat(dir, &self.name, dir, target)?;
        } else {
            rustix::fs::linkat(dir, &self.name, dir, target, AtFlags::empty())?;
            rustix::fs::unlinkat(dir, &self.name, AtFlags::empty())?;
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
            let _ = rustix::fs::unlinkat(self.dir.as_fd(), &self.name, AtFlags::empty());
        }
    }
}

/// After a plain transfer of the target `key` (its absolute path) in `dir`
/// by `peer` succeeded: removes that peer's partial copy of it, if there is
/// one and no transfer holds it.
pub(crate) fn remove_partial(dir: BorrowedFd<'_>, key: &Path, peer: &str) {
    let name = partial_name(key, peer);
    let Ok(file) = open_existing(dir, &name) else {
        return;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return;
    }
    if let Ok(Some(_held)) = lock_partial(file, &name) {
        let _ = rustix::fs::unlinkat(dir, &name, AtFlags::empty());
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

/// Removes, under the directory `root` (symbolic links are not followed:
/// every directory is opened with `O_NOFOLLOW` relative to its parent's
/// descriptor, every file removed relative to its directory's), the fts
/// temporaries nobody will use again: plain temporaries whose writer is no
/// longer a process on this host, and every temporary or partial copy last
/// written more than `max_age` ago, unless a transfer holds it.
pub(crate) fn sweep(root: BorrowedFd<'_>, max_age: Duration) -> Swept {
    let mut out = Swept::default();
    let now = SystemTime::now();
    let list = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // Directories still to visit: their parent, their name there, their
    // path relative to the root (for the report), their depth. A parent
    // stays open only while children of it wait.
    let mut stack: Vec<(Rc<OwnedFd>, OsString, PathBuf, usize)> = Vec::new();
    let mut visit = |dir: OwnedFd, rel: &Path, depth: usize, stack: &mut Vec<_>| {
        let dir = Rc::new(dir);
        for (name, ft) in entries(&dir) {
            let shown = rel.join(&name);
            if ft == FileType::Directory {
                if depth < SWEEP_DEPTH {
                    stack.push((dir.clone(), name, shown, depth + 1));
                }
                continue;
            }
            if ft != FileType::RegularFile {
                continue;
            }
            let Some(kind) = classify(&name) else {
                continue;
            };
            let old = rustix::fs::statat(dir.as_fd(), &name, AtFlags::SYMLINK_NOFOLLOW)
                .ok()
                .and_then(|st| crate::beneath::mtime(&st))
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
                TempKind::Partial => {
                    match open_existing(dir.as_fd(), &name).and_then(|f| lock_partial(f, &name)) {
                        Ok(Some(l)) => Some(l),
                        _ => continue, // in use, or gone meanwhile
                    }
                }
                TempKind::Unique { .. } => None,
            };
            match rustix::fs::unlinkat(dir.as_fd(), &name, AtFlags::empty()) {
                Ok(()) => out.removed.push(shown),
                Err(e) => out.failed.push((shown, e.into())),
            }
        }
    };
    if let Ok(dir) = rustix::fs::openat(root, ".", list, Mode::empty()) {
        visit(dir, Path::new(""), 0, &mut stack);
    }
    while let Some((parent, name, rel, depth)) = stack.pop() {
        let Ok(dir) = rustix::fs::openat(parent.as_fd(), &name, list, Mode::empty()) else {
            continue; // gone, replaced by a symbolic link, unreadable
        };
        drop(parent);
        visit(dir, &rel, depth, &mut stack);
    }
    out
}

/// The entries of the directory `dir` (not `.` and `..`) and their types
/// (from `d_type`, or `lstat` where the file system leaves it unknown).
fn entries(dir: &OwnedFd) -> Vec<(OsString, FileType)> {
    let Ok(mut rd) = rustix::fs::Dir::read_from(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some(Ok(entry)) = rd.read() {
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let ft = match entry.file_type() {
            FileType::Unknown => {
                match rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(_) => continue,
                }
            }
            ft => ft,
        };
        out.push((name.to_owned(), ft));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn open_dir(p: &Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn names_round_trip_through_classify() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(tmp.path());
        let u = TempFile::unique(dir.as_fd(), OsStr::new("fts-temp-test-x")).unwrap();
        assert_eq!(
            classify(&u.name),
            Some(TempKind::Unique {
                pid: std::process::id()
            })
        );
        let made = tmp.path().join(&u.name);
        assert!(made.is_file(), "{made:?}");
        drop(u);
        assert!(!made.exists(), "a dropped temporary is removed");
        let t = Path::new("/srv/a/report.pdf");
        let p = partial_name(t, "a");
        assert!(
            p.as_bytes().starts_with(b".report.pdf.fts-partial-"),
            "{p:?}"
        );
        assert_eq!(classify(&p), Some(TempKind::Partial));
        assert_ne!(p, partial_name(t, "b"), "the peer is part of the name");
        assert_ne!(p, partial_name(Path::new("/srv/b/report.pdf"), "a"));
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
        let p = partial_name(&Path::new("/d").join(&name), "peer");
        assert_eq!(p.len(), NAME_MAX);
        assert_eq!(classify(&p), Some(TempKind::Partial));
        let u = sibling(OsStr::new(&name), ".fts-4294967295-ffffffff");
        assert_eq!(u.len(), NAME_MAX);
        assert!(matches!(
            classify(&u),
            Some(TempKind::Unique { pid: 4_294_967_295 })
        ));
    }

    /// The directory's path is swapped for a symlink to another directory
    /// after the temporary was made: the commit still lands in the
    /// directory the temporary is in, nothing appears in the other one.
    #[test]
    fn commit_stays_in_the_directory_it_was_opened_in() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, elsewhere, moved) = (
            tmp.path().join("d"),
            tmp.path().join("elsewhere"),
            tmp.path().join("moved"),
        );
        std::fs::create_dir(&d).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        let dir = open_dir(&d);
        for replace in [false, true] {
            let mut t = TempFile::unique(dir.as_fd(), OsStr::new("f")).unwrap();
            std::io::Write::write_all(t.file(), b"data").unwrap();
            std::fs::rename(&d, &moved).unwrap();
            std::os::unix::fs::symlink(&elsewhere, &d).unwrap();
            t.commit(OsStr::new("f"), replace).unwrap();
            assert_eq!(std::fs::read(moved.join("f")).unwrap(), b"data");
            assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
            std::fs::remove_file(&d).unwrap();
            std::fs::rename(&moved, &d).unwrap();
            std::fs::remove_file(d.join("f")).unwrap();
        }
        // Without replace, an existing symbolic link counts as existing
        // and is not followed.
        let target = elsewhere.join("t");
        std::os::unix::fs::symlink(&target, d.join("f")).unwrap();
        let t = TempFile::unique(dir.as_fd(), OsStr::new("f")).unwrap();
        let e = t.commit(OsStr::new("f"), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(!target.exists());
    }

    /// A partial copy's name taken by a symbolic link is refused, not
    /// followed; two transfers never hold one partial copy.
    #[test]
    fn partial_copies_are_locked_and_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(tmp.path());
        let key = tmp.path().join("f");
        let a = TempFile::partial(dir.as_fd(), &key, "peer").unwrap();
        assert!(matches!(
            TempFile::partial(dir.as_fd(), &key, "peer"),
            Err(TempError::Busy)
        ));
        drop(a); // empty: removed
        let name = partial_name(&key, "peer");
        assert!(!tmp.path().join(&name).exists());
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::os::unix::fs::symlink(&victim, tmp.path().join(&name)).unwrap();
        assert!(matches!(
            TempFile::partial(dir.as_fd(), &key, "peer"),
            Err(TempError::NotRegular)
        ));
        assert!(!victim.exists());
    }

    /// The sweep removes orphaned temporaries below the root, follows no
    /// symbolic link to a directory, and reports paths relative to the root.
    #[test]
    fn sweep_removes_orphans_beneath_and_nothing_through_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        // pid 0 is never a process of ours: an orphan.
        let orphan = ".x.fts-0-0000abcd";
        for dir in [root.join("a/b"), outside.clone()] {
            std::fs::write(dir.join(orphan), b"t").unwrap();
            std::fs::write(dir.join("x"), b"keep").unwrap();
        }
        std::os::unix::fs::symlink(&outside, root.join("a/link")).unwrap();
        let swept = sweep(open_dir(&root).as_fd(), Duration::from_secs(3600));
        assert_eq!(swept.removed, vec![PathBuf::from("a/b").join(orphan)]);
        assert!(swept.failed.is_empty(), "{:?}", swept.failed);
        assert!(!root.join("a/b").join(orphan).exists());
        assert!(root.join("a/b/x").exists());
        assert!(outside.join(orphan).exists(), "the sweep followed a link");
    }
}
