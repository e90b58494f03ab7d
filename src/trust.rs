//! Which files and directories a store trusts, and how it opens them.
//!
//! The threat model (DESIGN.md §14): the store's owner and root are
//! trusted; other local users, and other names for the store's files
//! (symbolic links, hard links), are not. So a store refuses a directory
//! that others can write (they could plant, replace or link its files,
//! OpenSSH's StrictModes refuses the same), opens every file with
//! `O_NOFOLLOW`, and checks that what it opened is a regular file with one
//! link, owned by the store's owner, that no other user can read or write.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Who owns a store: every file of it must belong to this user, and
/// files the store creates are given to it (root doing maintenance on
/// another user's store must not leave files that user cannot open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The owner of the existing file at `path`, or this process's user
    /// for a store about to be created.
    #[cfg(test)]
    pub fn of(path: &Path) -> Result<Owner> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(Owner {
                uid: m.uid(),
                gid: m.gid(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Owner {
                uid: euid(),
                // SAFETY: getegid has no preconditions and cannot fail.
                gid: unsafe { libc::getegid() },
            }),
            Err(e) => Err(Error::io(path, "stat", e)),
        }
    }
}

/// This process's effective user id.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The refusal of `path` for `reason`.
pub(crate) fn refusal(path: &Path, reason: impl Into<String>) -> Error {
    Error::Unsafe {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The directory holding `path` (`.` for a bare name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Resolves a store path given by a caller to the file it names: a
/// symbolic link is followed to its target (so that the lock, the
/// temporary files and a compaction's rename follow the file, not the
/// name); a missing file resolves through its directory.
pub(crate) fn resolve(path: &Path) -> Result<PathBuf> {
    match fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let name = path
                .file_name()
                .ok_or_else(|| refusal(path, "not a file name"))?;
            if fs::symlink_metadata(path).is_ok() {
                return Err(refusal(
                    path,
                    "a symbolic link to a file that does not exist",
                ));
            }
            let dir = parent(path);
            let dir =
                fs::canonicalize(dir).map_err(|e| Error::io(path, "find the directory of", e))?;
            Ok(dir.join(name))
        }
        Err(e) => Err(Error::io(path, "resolve", e)),
    }
}

/// How to open a store's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Create {
    /// It must exist.
    No,
    /// Create it (mode 0600) if missing.
    IfMissing,
    /// It must not exist (`O_EXCL`): a temporary file of a random name.
    New,
}

/// Checks an open file of the store: a regular file with one link, owned
/// by `owner`, mode 0600 or stricter.
pub(crate) fn check_file(path: &Path, file: &File, owner: u32) -> Result<()> {
    let meta = file.metadata().map_err(|e| Error::io(path, "stat", e))?;
    if !meta.file_type().is_file() {
        return Err(refusal(path, "not a regular file"));
    }
    if meta.nlink() > 1 {
        return Err(refusal(
            path,
            format!(
                "the file has {} hard links: another name would reach the store without its lock",
                meta.nlink()
            ),
        ));
    }
    if meta.uid() != owner {
        return Err(refusal(
            path,
            format!(
                "the file belongs to uid {}, not to the store's owner (uid {owner})",
                meta.uid()
            ),
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refusal(
            path,
            format!("mode {mode:04o} lets other users read or write sessions; `chmod 600` it"),
        ));
    }
    Ok(())
}

/// A random hexadecimal suffix for a temporary file's name.
pub(crate) fn random_suffix() -> Result<String> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(Error::random)?;
    Ok(format!("{:016x}", u64::from_le_bytes(raw)))
}
