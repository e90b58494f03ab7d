//! A store's directory, opened once: every later create, open, rename,
//! unlink, stat and fsync of a file of the store is done relative to that
//! descriptor, never by re-resolving a path that someone may have swapped
//! for a symbolic link meanwhile (DESIGN.md §14). When root works on
//! another user's store (an explicit opt-in), each such call runs under
//! that user's filesystem identity, so the kernel itself refuses anything
//! the user could not do.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::trust::{self, Create, Owner};

/// An open directory of a store.
#[derive(Debug)]
pub(crate) struct StoreDir {
    fd: OwnedFd,
    /// The path it was opened by, for messages only.
    path: PathBuf,
    stat: Stat,
    /// Whose filesystem identity every call by name runs under: set only
    /// when this process is root and the store belongs to another user.
    act_as: Option<Owner>,
}

/// What the directory holds under a name, not following a link.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
    pub dev: u64,
    pub ino: u64,
    pub uid: u32,
    pub gid: u32,
    /// Length in bytes.
    pub len: u64,
    /// A regular file (not a directory, link, FIFO, ...).
    pub is_file: bool,
}

impl Found {
    fn of(st: &Stat) -> Found {
        Found {
            dev: st.st_dev,
            ino: st.st_ino,
            uid: st.st_uid,
            gid: st.st_gid,
            len: u64::try_from(st.st_size).unwrap_or(0),
            is_file: rustix::fs::FileType::from_raw_mode(st.st_mode).is_file(),
        }
    }

    /// Device and inode.
    pub fn ino(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

impl StoreDir {
    /// Opens the directory at `path` (`O_DIRECTORY | O_NOFOLLOW`: its last
    /// component must not be a link).
    pub fn open(path: &Path) -> Result<StoreDir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => {
                trust::refusal(path, "not a directory (or a link to one)")
            }
            e => Error::io(path, "open directory", errno(e)),
        })?;
        let stat =
            rustix::fs::fstat(&fd).map_err(|e| Error::io(path, "stat directory", errno(e)))?;
        Ok(StoreDir {
            fd,
            path: path.to_owned(),
            stat,
            act_as: None,
        })
    }

    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` in this directory, for messages.
    pub fn join(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// The directory's owner.
    pub fn owner(&self) -> Owner {
        Owner {
            uid: self.stat.st_uid,
            gid: self.stat.st_gid,
        }
    }

    /// Refuses the directory if users other than its owner can write it,
    /// unless `allow_others` (the caller gives that protection up by name).
    pub fn check_mode(&self, allow_others: bool) -> Result<()> {
        let mode = self.stat.st_mode & 0o7777;
        if allow_others || mode & 0o022 == 0 {
            return Ok(());
        }
        let who = if mode & 0o002 != 0 {
            "every user"
        } else {
            "its group"
        };
        Err(trust::refusal(
            &self.path,
            format!(
                "the directory is writable by {who} (mode {mode:04o}): another user could \
                 plant, replace or link the store's files; `chmod go-w` it, or opt in with \
                 `allow_others_to_write_directory(true)` (the command line's \
                 `--allow-others-to-write-directory`)"
            ),
        ))
    }

    /// Runs every later call by name as `owner` if this process is root
    /// and `owner` is another user (see `StoreDir::as_owner`).
    pub fn acting_as(mut self, owner: Owner) -> StoreDir {
        if trust::euid() == 0 && owner.uid != 0 {
            self.act_as = Some(owner);
        }
        self
    }

    /// Runs `f` under the identity this directory acts as.
    fn as_owner<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self.act_as {
            None => f(),
            Some(owner) => {
                let _as = crate::fs_identity::AsUser::enter(owner)?;
                f()
            }
        }
    }

    /// What is at `name` (not following a link), or `None`.
    pub fn stat(&self, name: &OsStr) -> io::Result<Option<Found>> {
        match self.as_owner(|| {
            rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)
        }) {
            Ok(st) => Ok(Some(Found::of(&st))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_raw(&self, name: &OsStr, flags: OFlags) -> io::Result<File> {
        let fd = self.as_owner(|| {
            rustix::fs::openat(
                &self.fd,
                name,
                flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(errno)
        })?;
        Ok(File::from(fd))
    }

    /// Opens `name` for reading and writing, never through a link, checked
    /// by [`trust::check_file`]; a new file is `owner`'s, mode 0600.
    pub fn open_file(&self, name: &OsStr, create: Create, owner: Owner) -> Result<File> {
        let path = self.join(name);
        if create == Create::IfMissing {
            match self.open_file(name, Create::New, owner) {
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                    return self.open_file(name, Create::No, owner);
                }
                other => return other,
            }
        }
        let flags = match create {
            Create::No => OFlags::RDWR,
            _ => OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        };
        let file = self
            .open_raw(name, flags)
            .map_err(|e| link_refused(&path, e))?;
        if let Err(e) = trust::check_file(&path, &file, owner.uid) {
            if create == Create::New {
                let _ = self.unlink(name);
            }
            return Err(e);
        }
        Ok(file)
    }

    /// Opens `name` for reading only, checked as [`StoreDir::open_file`] does;
    /// `None` if it does not exist.
    pub fn open_read(&self, name: &OsStr, owner: Owner) -> Result<Option<File>> {
        let path = self.join(name);
        let file = match self.open_raw(name, OFlags::RDONLY) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(link_refused(&path, e)),
        };
        trust::check_file(&path, &file, owner.uid)?;
        Ok(Some(file))
    }

    /// Opens `name` for reading without any check but "not through a
    /// link" (and without blocking on a FIFO): for a look at a header
    /// before anything is trusted.
    pub fn open_unchecked(&self, name: &OsStr) -> io::Result<File> {
        self.open_raw(name, OFlags::RDONLY | OFlags::NONBLOCK)
    }

    /// Renames `from` to `to`, both in this directory.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        self.as_owner(|| rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(errno))
    }

    /// Removes the file `name`.
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        self.as_owner(|| rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(errno))
    }

    /// fsyncs the directory, making a create or rename in it durable.
    pub fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd).map_err(|e| Error::io(&self.path, "fsync directory", errno(e)))
    }

    /// Bytes free to this user on the directory's filesystem, if known.
    pub fn free_bytes(&self) -> Option<u64> {
        let st = rustix::fs::fstatvfs(&self.fd).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// An open error of a store's file, a link where one was named.
fn link_refused(path: &Path, e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        trust::refusal(
            path,
            "a symbolic link where the store keeps a file of its own",
        )
    } else {
        Error::io(path, "open", e)
    }
}

/// `name` followed by `suffix` (`sessions.db` + `.lock`).
pub(crate) fn with_suffix(name: &OsStr, suffix: &str) -> OsString {
    let mut s = OsString::from(name);
    s.push(suffix);
    s
}

/// Whose store this is, and whether this process may open it.
///
/// The store's owner is the log's owner, or for a new store the
/// directory's (this process's own user when the directory is root's).
/// The directory must belong to root or to the store's owner, and the
/// store's owner must be this process's user, unless this process is
/// root and `maintain_as_owner` (then it works as that user: see
/// [`StoreDir::acting_as`]).
pub(crate) fn claim(
    dir: &StoreDir,
    log: Option<Found>,
    log_path: &Path,
    maintain_as_owner: bool,
) -> Result<Owner> {
    let euid = trust::euid();
    let d = dir.owner();
    let owner = match log {
        Some(f) => Owner {
            uid: f.uid,
            gid: f.gid,
        },
        None if d.uid != 0 && d.uid != euid => d,
        None => Owner {
            uid: euid,
            gid: rustix::process::getegid().as_raw(),
        },
    };
    if d.uid != 0 && d.uid != owner.uid {
        let whose = if owner.uid == euid {
            format!("neither this user (uid {euid}) nor root")
        } else {
            format!("neither the store's owner (uid {}) nor root", owner.uid)
        };
        return Err(trust::refusal(
            dir.path(),
            format!(
                "the directory belongs to uid {}, {whose}: its owner could swap the store's files",
                d.uid
            ),
        ));
    }
    if owner.uid == euid {
        return Ok(owner);
    }
    let (what, at) = match log {
        Some(_) => ("the store", log_path),
        None => ("the directory", dir.path()),
    };
    if euid != 0 {
        return Err(trust::refusal(
            at,
            format!(
                "{what} belongs to uid {}, not to this user (uid {euid})",
                owner.uid
            ),
        ));
    }
    if !maintain_as_owner {
        return Err(trust::refusal(
            at,
            format!(
                "{what} belongs to uid {}, not to root: root adopts another user's store only \
                 for maintenance, when asked to with `maintain_as_owner(true)` (the \
                 `sessionlog` maintenance commands ask), and then works as that user",
                owner.uid
            ),
        ));
    }
    Ok(owner)
}
