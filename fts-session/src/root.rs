//! Server-side path confinement: every remote path is resolved inside a
//! root directory, and opened beneath it.
//!
//! Remote paths are **relative to the server's current directory** (itself
//! relative to the root, initially the root). Absolute remote paths are
//! refused with [`RootError::OutsideRoot`]; so is any path whose `..`
//! components would climb above the root lexically (checked before touching
//! the file system, so probing outside the root reveals nothing), and any
//! path that after `canonicalize` (which resolves symlinks) does not lie
//! inside the canonical root. A `..` that stays inside the root is fine.
//! Paths containing NUL bytes are refused with [`RootError::InvalidName`].
//!
//! Error messages name the remote path as the client gave it, never the
//! server's absolute root.
//!
//! **Checking is not opening.** The resolution above (`resolve_existing`,
//! `resolve_new`) is a check at one point in time; the tree may change
//! before the file is used, e.g. a symbolic link to `/etc/shadow` renamed
//! over a file that was just checked. So every use goes through a
//! descriptor: [`Root::new`] opens the root directory once, and
//! [`Root::open`], [`Root::open_new`] and [`Root::cd`] open the checked,
//! canonical path *beneath that descriptor* with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, which the kernel
//! refuses (`EXDEV`) if any symlink met on the way, swapped in whenever,
//! leads out; where the kernel lacks `openat2` (`ENOSYS`), the path is
//! walked one component at a time with `O_NOFOLLOW` (see [`Confinement`]).
//! A path that changed that way is refused ([`RootError::OutsideRoot`],
//! [`RootError::Changed`]); it never yields a file outside the root.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};

use crate::beneath;
use crate::proto::{ErrorCode, Response};

/// A confined view of a directory tree with a current directory.
///
/// Clones share the root's directory descriptor (and each has its own
/// current directory).
#[derive(Debug, Clone)]
pub struct Root {
    /// Canonical absolute root.
    root: PathBuf,
    /// The root directory, opened once: everything is opened beneath it.
    dir: Arc<OwnedFd>,
    /// Current directory, relative to `root`, canonical (no `.`/`..`/symlinks).
    cwd: PathBuf,
    confinement: Confinement,
}

/// How [`Root`] opens paths beneath its directory descriptor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Confinement {
    /// `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: a symbolic link
    /// is followed while it stays beneath the root; one that leads out
    /// (absolute, or `..` above the root) fails. Where the kernel has no
    /// `openat2` (`ENOSYS`, before Linux 5.6), [`Confinement::Walk`] is used
    /// instead, from then on.
    #[default]
    Openat2,
    /// Each component opened relative to the previous one with `O_NOFOLLOW`
    /// (directories also with `O_DIRECTORY`): no symbolic link is followed
    /// at all, so one that appears after the check is refused even if it
    /// stays inside.
    Walk,
}

/// What [`Root::open`] opens an existing path for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// A handle only (`O_PATH`), for `fstat`: opening it has no effect on
    /// a device node and does not block on a FIFO.
    Inspect,
    /// Reading (`O_RDONLY | O_NONBLOCK | O_NOCTTY`): never blocks on a FIFO
    /// and never becomes the controlling terminal. Check the type on the
    /// descriptor.
    Read,
    /// Listing a directory (`O_RDONLY | O_DIRECTORY`).
    List,
    /// A directory handle (`O_PATH | O_DIRECTORY`), to create, rename or
    /// inspect names in it with the `*at` calls.
    Directory,
}

impl Access {
    fn flags(self) -> OFlags {
        match self {
            Access::Inspect => OFlags::PATH,
            Access::Read => OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
            Access::List => OFlags::RDONLY | OFlags::DIRECTORY,
            Access::Directory => OFlags::PATH | OFlags::DIRECTORY,
        }
    }
}

/// The target of a put, from [`Root::open_new`]: the directory it goes in,
/// opened beneath the root, and its name there. Create, rename and link
/// relative to [`NewTarget::dir`] (`openat`, `renameat`, `linkat` with a
/// plain name), and no later change to the tree can move the file out of
/// the root.
#[derive(Debug)]
pub struct NewTarget {
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
}

impl NewTarget {
    /// The target's directory (an `O_PATH` descriptor).
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// The target's name in [`NewTarget::dir`]: one plain component.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// The canonical absolute path the check resolved the target to
    /// (server side only, e.g. as a key; never send it).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why a remote path was refused or could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootError {
    /// The path (or its parent, for [`Root::resolve_new`]) does not exist.
    #[error("{path:?}: no such file or directory")]
    NotFound {
        /// The remote path.
        path: String,
    },
    /// The path is absolute, escapes with `..`, or resolves (via a symlink)
    /// outside the root.
    #[error("{path:?}: outside the served directory")]
    OutsideRoot {
        /// The remote path.
        path: String,
    },
    /// A directory was required.
    #[error("{path:?}: not a directory")]
    NotADirectory {
        /// The remote path.
        path: String,
    },
    /// A file name was required, but the path is the root directory (a put
    /// to a symbolic link to the root).
    #[error("{path:?}: is a directory")]
    IsADirectory {
        /// The remote path.
        path: String,
    },
    /// The path passed its check, but by the time it was opened a symbolic
    /// link had appeared in it (one [`Confinement::Walk`] does not follow),
    /// or a symlink loop or a `/proc` magic link. Refused: it might lead
    /// outside the root.
    #[error("{path:?}: a symbolic link appeared in it while it was being opened; refused")]
    Changed {
        /// The remote path.
        path: String,
    },
    /// Permission denied.
    #[error("{path:?}: permission denied")]
    Permission {
        /// The remote path.
        path: String,
    },
    /// The path is not acceptable as written (NUL byte, or for
    /// [`Root::resolve_new`] a final component that is empty, `.` or `..`).
    #[error("{path:?}: {reason}")]
    InvalidName {
        /// The remote path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Other I/O failure. The message carries only the OS error text.
    #[error("{path:?}: {source}")]
    Io {
        /// The remote path.
        path: String,
        /// The underlying error (its text never contains a path).
        source: io::Error,
    },
}

impl RootError {
    /// The protocol error class for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            RootError::NotFound { .. } => ErrorCode::NotFound,
            RootError::OutsideRoot { .. } => ErrorCode::OutsideRoot,
            RootError::NotADirectory { .. } => ErrorCode::NotADirectory,
            RootError::IsADirectory { .. } => ErrorCode::IsADirectory,
            RootError::Changed { .. } => ErrorCode::OutsideRoot,
            RootError::Permission { .. } => ErrorCode::Permission,
            RootError::InvalidName { .. } => ErrorCode::BadRequest,
            RootError::Io { .. } => ErrorCode::Io,
        }
    }

    /// The [`Response::Error`] to send to the client.
    pub fn to_response(&self) -> Response {
        Response::Error {
            code: self.code(),
            message: self.to_string(),
        }
    }

    fn from_io(path: &str, err: io::Error) -> Self {
        let path = path.to_owned();
        match err.kind() {
            io::ErrorKind::NotFound => RootError::NotFound { path },
            io::ErrorKind::PermissionDenied => RootError::Permission { path },
            _ if err.raw_os_error() == Some(libc::ENOTDIR) => RootError::NotADirectory { path },
            _ => RootError::Io { path, source: err },
        }
    }

    /// An error of an open beneath the root (after the path's check
    /// passed): `EXDEV` is a way out, `ELOOP` a link that appeared.
    fn from_open(path: &str, err: io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::EXDEV) => RootError::OutsideRoot {
                path: path.to_owned(),
            },
            Some(libc::ELOOP) => RootError::Changed {
                path: path.to_owned(),
            },
            _ => RootError::from_io(path, err),
        }
    }
}

impl From<RootError> for Response {
    fn from(err: RootError) -> Self {
        err.to_response()
    }
}

impl Root {
    /// Serves `dir` (canonicalized; must be a directory), which is opened
    /// here once: everything is opened beneath this descriptor, also if
    /// the directory is renamed later. The current directory starts at the
    /// root.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Root> {
        let root = std::fs::canonicalize(dir)?;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = match rustix::fs::open(&root, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOTDIR) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "fts root must be a directory",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Root {
            root,
            dir: Arc::new(dir),
            cwd: PathBuf::new(),
            confinement: Confinement::default(),
        })
    }

    /// The same root, opening paths the `confinement` way (the default is
    /// [`Confinement::Openat2`]).
    pub fn with_confinement(mut self, confinement: Confinement) -> Root {
        self.confinement = confinement;
        self
    }

    /// How this root opens paths.
    pub fn confinement(&self) -> Confinement {
        self.confinement
    }

    /// The root directory's descriptor (`O_PATH`).
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// The canonical absolute root (server side only; never send it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The current directory relative to the root (empty at the root).
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Opens a path that must exist (get, dir) for `access`, beneath the
    /// root's descriptor: [`Root::resolve_existing`] checks it and maps
    /// what is wrong with it to an error, then its canonical form is opened
    /// beneath the root. A symbolic link swapped in after the check never
    /// leads out of the root: [`RootError::OutsideRoot`] or
    /// [`RootError::Changed`].
    pub fn open(&self, remote: &str, access: Access) -> Result<OwnedFd, RootError> {
        let real = self.resolve_existing(remote)?;
        let rel = self.relative(remote, &real)?;
        self.open_beneath(remote, rel, access.flags())
    }

    /// The target of a put, checked by [`Root::resolve_new`], with its
    /// directory opened beneath the root's descriptor. The caller decides
    /// what an existing file or directory of that name means (`Exists`,
    /// `IsADirectory`), asking relative to [`NewTarget::dir`].
    pub fn open_new(&self, remote: &str) -> Result<NewTarget, RootError> {
        let path = self.resolve_new(remote)?;
        let rel = self.relative(remote, &path)?;
        // A symlink to the root itself has no name in a parent.
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(RootError::IsADirectory {
                path: remote.to_owned(),
            });
        };
        let name = name.to_owned();
        let dir = self.open_beneath(remote, parent, Access::Directory.flags())?;
        Ok(NewTarget { dir, name, path })
    }

    /// Checks a path that must exist (get, dir, cd). Returns the canonical
    /// absolute path, inside the root. The empty string (and `.`) names
    /// the current directory. Do not open the result by path: see
    /// [`Root::open`].
    pub fn resolve_existing(&self, remote: &str) -> Result<PathBuf, RootError> {
        let joined = self.join_checked(remote)?;
        self.canonical_inside(remote, &joined)
    }

    /// Checks the target of a put: the parent must exist and be a
    /// directory inside the root, and the final component must be a plain
    /// name (not empty, `.` or `..`; a trailing `/` leaves it empty). Do
    /// not create the result by path: see [`Root::open_new`].
    ///
    /// If the target already exists as a symlink, the symlink's canonical
    /// target is returned when it lies inside the root; a symlink pointing
    /// outside, or dangling, is refused with [`RootError::OutsideRoot`]. The
    /// caller decides what an existing file or directory at the result
    /// means (`Exists`, `IsADirectory`).
    pub fn resolve_new(&self, remote: &str) -> Result<PathBuf, RootError> {
        check_nul(remote)?;
        let (parent, name) = match remote.rsplit_once('/') {
            Some((parent, name)) => (if parent.is_empty() { "/" } else { parent }, name),
            None => ("", remote),
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(RootError::InvalidName {
                path: remote.to_owned(),
                reason: "the last component must be a plain file name",
            });
        }
        // Absolute paths ("/x") keep a "/" parent and are refused there.
        let parent_joined = self.join_checked_as(parent, remote)?;
        let parent_dir = self.canonical_inside(remote, &parent_joined)?;
        match std::fs::metadata(&parent_dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(RootError::NotADirectory {
                    path: remote.to_owned(),
                })
            }
            Err(err) => return Err(RootError::from_io(remote, err)),
        }
        let target = parent_dir.join(name);
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() => match std::fs::canonicalize(&target) {
                Ok(real) if real.starts_with(&self.root) => Ok(real),
                Err(_) if !self.escapes(&target, MAX_SYMLINK_HOPS) => Err(RootError::InvalidName {
                    path: remote.to_owned(),
                    reason: "is a dangling symbolic link",
                }),
                _ => Err(RootError::OutsideRoot {
                    path: remote.to_owned(),
                }),
            },
            Ok(_) => Ok(target),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(target),
            Err(err) => Err(RootError::from_io(remote, err)),
        }
    }

    /// Changes the current directory; the target must be a directory
    /// inside the root, and is opened beneath the root's descriptor to
    /// make sure.
    pub fn cd(&mut self, remote: &str) -> Result<(), RootError> {
        let dir = self.resolve_existing(remote)?;
        let rel = self.relative(remote, &dir)?.to_path_buf();
        self.open_beneath(remote, &rel, Access::Directory.flags())?;
        self.cwd = rel;
        Ok(())
    }

    /// The current directory as a `/`-style path relative to the root
    /// (`"/"` at the root, e.g. `"/a/b"` below it).
    pub fn pwd(&self) -> String {
        let mut out = String::new();
        for comp in self.cwd.components() {
            out.push('/');
            out.push_str(&comp.as_os_str().to_string_lossy());
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// A canonical path inside the root, relative to it.
    fn relative<'p>(&self, remote: &str, real: &'p Path) -> Result<&'p Path, RootError> {
        real.strip_prefix(&self.root)
            .map_err(|_| RootError::OutsideRoot {
                path: remote.to_owned(),
            })
    }

    /// Opens `rel` (relative to the root) beneath the root's descriptor.
    fn open_beneath(&self, remote: &str, rel: &Path, flags: OFlags) -> Result<OwnedFd, RootError> {
        let walk = self.confinement == Confinement::Walk;
        beneath::open(self.dir.as_fd(), rel, flags, Mode::empty(), walk)
            .map_err(|e| RootError::from_open(remote, e))
    }

    fn join_checked(&self, remote: &str) -> Result<PathBuf, RootError> {
        self.join_checked_as(remote, remote)
    }

    /// Joins `rel` onto root/cwd after lexical checks; errors name `shown`.
    fn join_checked_as(&self, rel: &str, shown: &str) -> Result<PathBuf, RootError> {
        check_nul(shown)?;
        let outside = || RootError::OutsideRoot {
            path: shown.to_owned(),
        };
        let mut depth = self.cwd.components().count();
        for comp in Path::new(rel).components() {
            match comp {
                Component::Normal(_) => depth += 1,
                Component::CurDir => {}
                Component::ParentDir => depth = depth.checked_sub(1).ok_or_else(outside)?,
                Component::RootDir | Component::Prefix(_) => return Err(outside()),
            }
        }
        Ok(self.root.join(&self.cwd).join(rel))
    }

    /// Canonicalizes `joined` and requires the result to be inside the root.
    /// On failure, the nearest existing ancestor (following dangling
    /// symlinks) is checked first so that a symlink pointing outside is
    /// reported as `OutsideRoot`, not as `NotFound` (which would reveal what
    /// exists outside).
    fn canonical_inside(&self, remote: &str, joined: &Path) -> Result<PathBuf, RootError> {
        match std::fs::canonicalize(joined) {
            Ok(real) if real.starts_with(&self.root) => Ok(real),
            Ok(_) => Err(RootError::OutsideRoot {
                path: remote.to_owned(),
            }),
            Err(_) if self.escapes(joined, MAX_SYMLINK_HOPS) => Err(RootError::OutsideRoot {
                path: remote.to_owned(),
            }),
            Err(err) => Err(RootError::from_io(remote, err)),
        }
    }

    /// For a path that does not canonicalize: does its nearest existing
    /// prefix, or a dangling symlink along it (followed up to `hops` times),
    /// lead outside the root? Symlink loops count as inside (they fail with
    /// an I/O error instead).
    fn escapes(&self, path: &Path, hops: u32) -> bool {
        for ancestor in path.ancestors() {
            if let Ok(real) = std::fs::canonicalize(ancestor) {
                return !real.starts_with(&self.root);
            }
            let is_link = std::fs::symlink_metadata(ancestor)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            if is_link {
                let Some(next_hops) = hops.checked_sub(1) else {
                    return false;
                };
                let Ok(target) = std::fs::read_link(ancestor) else {
                    return false;
                };
                let next = match ancestor.parent() {
                    Some(parent) => parent.join(target),
                    None => target,
                };
                return self.escapes(&next, next_hops);
            }
        }
        true
    }
}

/// Bound on dangling-symlink chains followed by [`Root::escapes`] (as Linux's
/// `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: u32 = 40;

fn check_nul(remote: &str) -> Result<(), RootError> {
    if remote.contains('\0') {
        return Err(RootError::InvalidName {
            path: remote.to_owned(),
            reason: "path contains a NUL byte",
        });
    }
    Ok(())
}
