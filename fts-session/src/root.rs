//! Server-side path confinement: every remote path is resolved inside a
//! root directory.
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
//! Resolution is a check at a point in time: a server that wants to be
//! robust against concurrent local changes to the tree (symlink swaps)
//! should still open the result with `O_NOFOLLOW` where appropriate.

use std::io;
use std::path::{Component, Path, PathBuf};

use crate::proto::{ErrorCode, Response};

/// A confined view of a directory tree with a current directory.
#[derive(Debug, Clone)]
pub struct Root {
    /// Canonical absolute root.
    root: PathBuf,
    /// Current directory, relative to `root`, canonical (no `.`/`..`/symlinks).
    cwd: PathBuf,
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
}

impl From<RootError> for Response {
    fn from(err: RootError) -> Self {
        err.to_response()
    }
}

impl Root {
    /// Serves `dir` (canonicalized; must be a directory). The current
    /// directory starts at the root.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Root> {
        let root = std::fs::canonicalize(dir)?;
        if !std::fs::metadata(&root)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fts root must be a directory",
            ));
        }
        Ok(Root {
            root,
            cwd: PathBuf::new(),
        })
    }

    /// The canonical absolute root (server side only; never send it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The current directory relative to the root (empty at the root).
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Resolves a path that must exist (get, dir, cd). Returns the
    /// canonical absolute path, inside the root. The empty string (and `.`)
    /// names the current directory.
    pub fn resolve_existing(&self, remote: &str) -> Result<PathBuf, RootError> {
        let joined = self.join_checked(remote)?;
        self.canonical_inside(remote, &joined)
    }

    /// Resolves the target of a put: the parent must exist and be a
    /// directory inside the root, and the final component must be a plain
    /// name (not empty, `.` or `..`; a trailing `/` leaves it empty).
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
    /// inside the root.
    pub fn cd(&mut self, remote: &str) -> Result<(), RootError> {
        let dir = self.resolve_existing(remote)?;
        let meta = std::fs::metadata(&dir).map_err(|e| RootError::from_io(remote, e))?;
        if !meta.is_dir() {
            return Err(RootError::NotADirectory {
                path: remote.to_owned(),
            });
        }
        let rel = dir
            .strip_prefix(&self.root)
            .map_err(|_| RootError::OutsideRoot {
                path: remote.to_owned(),
            })?;
        self.cwd = rel.to_path_buf();
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
