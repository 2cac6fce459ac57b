//! Opening a relative path beneath a directory descriptor so that nothing
//! swapped into the tree (a symbolic link, a `..` trick, a magic link in
//! `/proc`) can make the open land outside that directory, however the
//! tree changes during the lookup.
//!
//! The kernel does it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! (Linux ≥ 5.6): symbolic links are followed only while they stay beneath
//! the directory, an absolute one or a `..` that climbs out fails with
//! `EXDEV`. Where the kernel lacks `openat2` (`ENOSYS`), the path is
//! walked one component at a time with `O_NOFOLLOW` (directories also
//! `O_DIRECTORY`), so no symbolic link is followed at all: meeting one
//! fails with `ELOOP`. Either way the result is a descriptor of something
//! beneath the directory, or an error.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Set once `openat2` turned out to be missing: later opens walk at once.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// How often an `openat2` that reports a concurrent rename (`EAGAIN`, which
/// `RESOLVE_BENEATH` may return when a `..` races with a rename) is retried.
const EAGAIN_RETRIES: u32 = 32;

/// Opens `rel` beneath `dir` with `flags` (`O_CLOEXEC` is added) and
/// `mode` (for `O_CREAT`; otherwise empty). `rel` must be relative; empty
/// names `dir` itself. `walk` forces the component walk even where
/// `openat2` exists.
///
/// Errors are the OS errors of the open, plus `EXDEV` for a path that
/// would leave `dir` (`openat2`) and `ELOOP` for a symbolic link met by the
/// walk.
pub(crate) fn open(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    mode: Mode,
    walk: bool,
) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC;
    if rel.is_absolute() {
        return Err(Errno::XDEV.into());
    }
    if walk || OPENAT2_MISSING.load(Ordering::Relaxed) {
        return open_walk(dir, rel, flags, mode);
    }
    let path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let mut retries = EAGAIN_RETRIES;
    loop {
        match rustix::fs::openat2(dir, path, flags, mode, resolve) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOSYS) => {
                OPENAT2_MISSING.store(true, Ordering::Relaxed);
                return open_walk(dir, rel, flags, mode);
            }
            Err(Errno::AGAIN | Errno::INTR) if retries > 0 => retries -= 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The fallback of [`open`]: every directory component opened with
/// `O_PATH | O_DIRECTORY | O_NOFOLLOW` relative to the previous one, the
/// last with `flags | O_NOFOLLOW`. `.` is skipped; `..` and absolute
/// components fail with `EXDEV` (a checked path has none).
fn open_walk(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let mut names: Vec<&OsStr> = Vec::new();
    for comp in rel.components() {
        match comp {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Errno::XDEV.into())
            }
        }
    }
    let Some((last, parents)) = names.split_last() else {
        return Ok(retry_intr(|| rustix::fs::openat(dir, ".", flags, mode))?);
    };
    let mut held: Option<OwnedFd> = None;
    for name in parents {
        let at = held.as_ref().map_or(dir, |fd| fd.as_fd());
        let step = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let next = retry_intr(|| rustix::fs::openat(at, *name, step, Mode::empty()))
            .map_err(|e| symlink_is_loop(at, name, e))?;
        held = Some(next);
    }
    let at = held.as_ref().map_or(dir, |fd| fd.as_fd());
    let fd = retry_intr(|| rustix::fs::openat(at, *last, flags | OFlags::NOFOLLOW, mode))
        .map_err(|e| symlink_is_loop(at, last, e))?;
    // O_PATH | O_NOFOLLOW opens a symbolic link itself instead of failing.
    if flags.contains(OFlags::PATH) && is_symlink(rustix::fs::fstat(&fd)?.st_mode) {
        return Err(Errno::LOOP.into());
    }
    Ok(fd)
}

/// A walk step failed: `ENOTDIR` (what `O_DIRECTORY | O_NOFOLLOW` gives for
/// a symbolic link) or `ELOOP` at a symbolic link is reported as `ELOOP`,
/// anything else as it is.
fn symlink_is_loop(at: BorrowedFd<'_>, name: &OsStr, e: Errno) -> io::Error {
    if e == Errno::NOTDIR || e == Errno::LOOP {
        let link = rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| is_symlink(st.st_mode));
        if link {
            return Errno::LOOP.into();
        }
    }
    e.into()
}

fn is_symlink(mode: u32) -> bool {
    FileType::from_raw_mode(mode) == FileType::Symlink
}

/// When the file of `st` was last written.
// The types of `st_mtime` and `st_mtime_nsec` differ between targets.
#[allow(clippy::useless_conversion)]
pub(crate) fn mtime(st: &rustix::fs::Stat) -> Option<SystemTime> {
    let secs = i64::from(st.st_mtime);
    let nanos = u64::from(st.st_mtime_nsec);
    let whole = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }?;
    whole.checked_add(Duration::from_nanos(nanos))
}

fn retry_intr<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    fn root_fd(p: &Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    fn read(fd: OwnedFd) -> Vec<u8> {
        use std::io::Read as _;
        let mut out = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut out).unwrap();
        out
    }

    fn errno(r: io::Result<OwnedFd>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    /// `<tmp>/secret`, `<tmp>/root/{a/f, in -> a/f, out -> ../secret,
    /// abs -> <tmp>/secret, d -> <tmp>, ad -> a}`.
    fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/f"), b"inside").unwrap();
        std::fs::write(tmp.path().join("secret"), b"secret").unwrap();
        symlink("a/f", root.join("in")).unwrap();
        symlink("../secret", root.join("out")).unwrap();
        symlink(tmp.path().join("secret"), root.join("abs")).unwrap();
        symlink(tmp.path(), root.join("d")).unwrap();
        symlink("a", root.join("ad")).unwrap();
        (tmp, root)
    }

    #[test]
    fn both_ways_open_plain_paths_and_never_leave_the_directory() {
        let (_tmp, root) = tree();
        let dir = root_fd(&root);
        for walk in [false, true] {
            let open = |rel: &str| {
                open(
                    dir.as_fd(),
                    Path::new(rel),
                    OFlags::RDONLY,
                    Mode::empty(),
                    walk,
                )
            };
            assert_eq!(read(open("a/f").unwrap()), b"inside", "walk {walk}");
            assert_eq!(read(open("./a/./f").unwrap()), b"inside", "walk {walk}");
            assert!(open("").is_ok() && open(".").is_ok(), "walk {walk}");
            for escape in ["out", "abs", "d/secret", "../secret", "a/../../secret"] {
                let e = errno(open(escape));
                assert!(
                    e == Some(libc::EXDEV) || e == Some(libc::ELOOP),
                    "walk {walk}: {escape} gave {e:?}"
                );
            }
            assert_eq!(errno(open("/etc/passwd")), Some(libc::EXDEV));
            assert_eq!(errno(open("a/missing")), Some(libc::ENOENT));
            assert_eq!(errno(open("a/f/x")), Some(libc::ENOTDIR));
        }
    }

    #[test]
    fn only_openat2_follows_links_that_stay_beneath() {
        let (_tmp, root) = tree();
        let dir = root_fd(&root);
        let rd = |rel: &str, walk| {
            open(
                dir.as_fd(),
                Path::new(rel),
                OFlags::RDONLY,
                Mode::empty(),
                walk,
            )
        };
        if !OPENAT2_MISSING.load(Ordering::Relaxed) {
            assert_eq!(read(rd("in", false).unwrap()), b"inside");
            assert_eq!(read(rd("ad/f", false).unwrap()), b"inside");
        }
        // The walk follows no link at all, neither last nor in the middle.
        assert_eq!(errno(rd("in", true)), Some(libc::ELOOP));
        assert_eq!(errno(rd("ad/f", true)), Some(libc::ELOOP));
        // O_PATH would open the link itself; the walk refuses it too.
        let p = open(
            dir.as_fd(),
            Path::new("abs"),
            OFlags::PATH,
            Mode::empty(),
            true,
        );
        assert_eq!(errno(p), Some(libc::ELOOP));
    }
}
