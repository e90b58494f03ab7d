//! The store's directory, held open for the life of the store: every file
//! operation is made relative to this one descriptor (`openat`,
//! `renameat`, `unlinkat`, `statat`, `fsync`), so that swapping the
//! directory's path for a symbolic link after it was opened redirects
//! nothing (DESIGN.md §11, "The directory").
//!
//! Opening checks the directory once, through the descriptor: its owner
//! must be this process's user unless the caller maintains another user's
//! store by name, and it must grant its group and other users nothing
//! unless the caller opts in by name (DESIGN.md §11, §14).

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::error::{Error, Result};
use crate::trust::{self, Create, Owner};

/// What the caller accepts of a directory beyond the default (owned by
/// this user, mode 0700 or stricter).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Acceptance {
    /// Group or others may list or traverse it (`mode & 0o055`).
    pub others_read: bool,
    /// Group or others may write it (implies `others_read`).
    pub others_write: bool,
    /// It may belong to another user when this process is root
    /// (maintenance).
    pub other_owner: bool,
}

/// An open store directory.
#[derive(Debug)]
pub(crate) struct DirHandle {
    fd: OwnedFd,
    /// The path the caller gave, for messages only.
    path: PathBuf,
    /// The directory's owner: every file in it must be theirs, and files
    /// this process creates are given to them.
    owner: Owner,
}

fn from_rustix(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

impl DirHandle {
    /// Opens the directory `path` (a symbolic link given by the caller is
    /// resolved once, then never followed again) and checks it.
    pub fn open(path: &Path, accept: Acceptance) -> Result<DirHandle> {
        let real =
            std::fs::canonicalize(path).map_err(|e| Error::io(path, "resolve directory", e))?;
        let fd = rustix::fs::open(
            &real,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP => trust::refusal(
                path,
                "the directory was replaced by a symbolic link while it was opened",
            ),
            rustix::io::Errno::NOTDIR => trust::refusal(path, "not a directory"),
            e => Error::io(path, "open directory", from_rustix(e)),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(path, "stat", from_rustix(e)))?;
        let owner = Owner {
            uid: st.st_uid,
            gid: st.st_gid,
        };
        check(path, owner.uid, st.st_mode & 0o7777, accept)?;
        Ok(DirHandle {
            fd,
            path: path.to_path_buf(),
            owner,
        })
    }

    /// Whether `path` still names this directory (a restore may have
    /// swapped another in since it was opened).
    pub fn is_at(&self, path: &Path) -> Result<bool> {
        let here = rustix::fs::fstat(&self.fd)
            .map_err(|e| Error::io(&self.path, "stat", from_rustix(e)))?;
        match rustix::fs::stat(path) {
            Ok(there) => Ok((there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(Error::io(path, "stat", from_rustix(e))),
        }
    }

    /// The path the caller gave.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's owner.
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// The path of `name` in the directory, for messages.
    pub fn at(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the store's file `name` for reading and writing, never
    /// through a symbolic link, and checks it (`trust::check_file`). A file
    /// this call creates (mode 0600) is given to the directory's owner
    /// first, and removed again if that is not possible.
    pub fn open_file(&self, name: &str, create: Create) -> Result<File> {
        if create == Create::IfMissing {
            match self.open_file(name, Create::New) {
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                    return self.open_file(name, Create::No);
                }
                other => return other,
            }
        }
        let mut flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if create == Create::New {
            flags |= OFlags::CREATE | OFlags::EXCL;
        }
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| self.open_error(name, e))?;
        let file = File::from(fd);
        if create == Create::New {
            self.adopt(name, &file)?;
        }
        trust::check_file(&self.at(name), &file, self.owner.uid)?;
        Ok(file)
    }

    /// Gives a file this process just created to the directory's owner.
    fn adopt(&self, name: &str, file: &File) -> Result<()> {
        if self.owner.uid == trust::euid() {
            return Ok(());
        }
        let uid = rustix::fs::Uid::from_raw(self.owner.uid);
        let gid = rustix::fs::Gid::from_raw(self.owner.gid);
        if let Err(e) = rustix::fs::fchown(file, Some(uid), Some(gid)) {
            let _ = self.remove(name);
            return Err(trust::refusal(
                &self.at(name),
                format!(
                    "this user (uid {}) cannot give a new file to the store's owner (uid {}): \
                     {}; run this as the store's owner or as root",
                    trust::euid(),
                    self.owner.uid,
                    from_rustix(e)
                ),
            ));
        }
        Ok(())
    }

    /// Opens the store's file `name` for reading only, never through a
    /// symbolic link, and checks it; `None` if it does not exist.
    pub fn open_read(&self, name: &str) -> Result<Option<File>> {
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(self.open_error(name, e)),
        };
        let file = File::from(fd);
        trust::check_file(&self.at(name), &file, self.owner.uid)?;
        Ok(Some(file))
    }

    fn open_error(&self, name: &str, e: rustix::io::Errno) -> Error {
        let path = self.at(name);
        if e == rustix::io::Errno::LOOP {
            trust::refusal(
                &path,
                "a symbolic link where the store keeps a file of its own",
            )
        } else {
            Error::io(&path, "open", from_rustix(e))
        }
    }

    /// Renames `from` to `to`, both in this directory.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| Error::io(self.at(to), "rename", from_rustix(e)))
    }

    /// Removes `name`; false if there was none.
    pub fn remove(&self, name: &str) -> Result<bool> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(Error::io(self.at(name), "remove", from_rustix(e))),
        }
    }

    /// The length of the entry `name` (a symbolic link is not followed),
    /// if it exists.
    pub fn len(&self, name: &str) -> Option<u64> {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .and_then(|st| u64::try_from(st.st_size).ok())
    }

    /// Whether an entry `name` exists (a symbolic link is not followed).
    pub fn exists(&self, name: &str) -> Result<bool> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(Error::io(self.at(name), "stat", from_rustix(e))),
        }
    }

    /// When the entry `name` was last modified, if it exists.
    pub fn modified(&self, name: &str) -> Option<SystemTime> {
        let st = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        let secs = u64::try_from(st.st_mtime).ok()?;
        SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))
    }

    /// The names in the directory (names that are not UTF-8 are skipped:
    /// this store never makes one).
    pub fn names(&self) -> Result<impl Iterator<Item = Result<String>> + '_> {
        let dir = rustix::fs::Dir::read_from(&self.fd)
            .map_err(|e| Error::io(&self.path, "read directory", from_rustix(e)))?;
        Ok(dir.filter_map(move |entry| match entry {
            Ok(e) => match e.file_name().to_str() {
                Ok("." | "..") | Err(_) => None,
                Ok(name) => Some(Ok(name.to_owned())),
            },
            Err(e) => Some(Err(Error::io(&self.path, "read directory", from_rustix(e)))),
        }))
    }

    /// Makes the directory's entries durable.
    pub fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd).map_err(|e| Error::io(&self.path, "fsync", from_rustix(e)))
    }

    /// Makes the file `name` durable; nothing to do if it is gone.
    pub fn sync_file(&self, name: &str) -> Result<()> {
        match self.open_read(name) {
            Ok(Some(f)) => f
                .sync_all()
                .map_err(|e| Error::io(self.at(name), "fsync", e)),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Refuses a directory of owner `uid` and permission bits `mode` unless
/// the caller accepts it.
fn check(path: &Path, uid: u32, mode: u32, accept: Acceptance) -> Result<()> {
    let me = trust::euid();
    if uid != me && me != 0 {
        return Err(trust::refusal(
            path,
            format!("the directory belongs to uid {uid}, not to this user (uid {me})"),
        ));
    }
    if uid != me && !accept.other_owner {
        return Err(trust::refusal(
            path,
            format!(
                "the directory belongs to uid {uid}, not to this process's user (uid {me}): \
                 a store someone else made would be given this process's sessions; run as \
                 uid {uid}, or to maintain that user's store opt in with \
                 `maintain_as_owner(true)`"
            ),
        ));
    }
    if accept.others_write {
        return Ok(());
    }
    if mode & 0o022 != 0 {
        let who = if mode & 0o002 != 0 {
            "every user"
        } else {
            "its group"
        };
        return Err(trust::refusal(
            path,
            format!(
                "the directory is writable by {who} (mode {mode:04o}): another user could \
                 plant, replace or link the store's files; `chmod 700` it, or opt in with \
                 `allow_others_to_write_directory(true)`"
            ),
        ));
    }
    if mode & 0o077 != 0 && !accept.others_read {
        return Err(trust::refusal(
            path,
            format!(
                "the directory grants other users access (mode {mode:04o}): they could list \
                 the session files; `chmod 700` it, or opt in with \
                 `allow_others_to_read_directory(true)`"
            ),
        ));
    }
    Ok(())
}
