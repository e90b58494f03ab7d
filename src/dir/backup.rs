//! Backup and restore of a `DirStore` directory.
//!
//! A backup is a directory like the store's own (0700, one file per live
//! session, 0600, and the `.hashed-names` marker), so that `DirStore::open`
//! opens it as it is. It is taken while other processes keep writing:
//!
//! - Under the write lock the backup lists the session files, and lets
//!   the lock go. Writers rename and unlink only under that lock, so the
//!   list holds every session acknowledged before the backup began (a
//!   directory read that races renames may miss an entry that moved).
//! - Each listed file is then read by name. A writer replaces a file by
//!   renaming a whole new one over it, so each read gives one version,
//!   whole: the one acknowledged before the backup began or a later one.
//!   A session deleted meanwhile is absent; one created after the list is
//!   not in the backup. Sessions are independent, so this is no single
//!   instant across sessions, unlike a `LogStore` backup.
//! - Each file is decoded (its checksum checked) before it is copied, the
//!   copies and the directory are fsynced, every copy is read back and
//!   decoded again, and only then does the directory get its name.
//!
//! Restore replaces the store's directory with a checked copy of a backup
//! by one `renameat2(RENAME_EXCHANGE)`, so that a process opening the
//! store sees the old directory or the new one, and keeps the old one
//! beside it. Every `DirStore` holds a shared `flock` on the store's
//! `.hashed-names` for as long as it is open (writers lock `.lock`, a
//! different file, exclusively); restore takes that lock exclusively
//! without waiting, so it is refused while any process of this version has
//! the store open, and an open that starts meanwhile waits for it and then
//! opens the directory now at the path.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{CWD, RenameFlags};

use crate::engine::BackupReport;
use crate::error::{Error, Result};
use crate::trust::{self, Create};

use super::file::{MARKER_NAME, decode_named, is_session_name};
use super::handle::{Acceptance, DirHandle};
use super::{DirStore, create_dir_private, read_session_file};

/// What [`DirStore::restore`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirRestoreReport {
    /// Live sessions in the restored store.
    pub sessions: u64,
    /// Where the replaced directory now is; `None` if there was none.
    pub kept: Option<PathBuf>,
}

/// `path` with `suffix` added to its name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn errno(e: rustix::io::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.raw_os_error())
}

/// Fsyncs the directory that holds `path`.
fn sync_parent(path: &Path) -> Result<()> {
    let parent = trust::parent(path);
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(parent, "fsync", e))
}

/// Removes a directory this module made (or swapped out), or a file.
fn remove_any(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, "stat", e)),
    };
    if meta.is_dir() {
        std::fs::remove_dir_all(path).map_err(|e| Error::io(path, "remove", e))
    } else {
        std::fs::remove_file(path).map_err(|e| Error::io(path, "remove", e))
    }
}

/// Copies session files from `read(name)` (bytes and modification time)
/// into the new directory `to`: each one is decoded first (a damaged one
/// fails the copy, naming its file), written 0600 with the original's
/// modification time (to the nanosecond: it orders sessions saved in one
/// millisecond, see `DirStore::write_temp`), fsynced; then the marker,
/// then the directory is fsynced, and every copy is read back and decoded
/// again. Returns the sessions copied and their bytes.
fn write_copy(
    names: &[String],
    read: impl Fn(&str) -> Result<Option<(Vec<u8>, SystemTime)>>,
    live: impl Fn(&super::file::Stored) -> bool,
    to: &Path,
) -> Result<(u64, u64)> {
    create_dir_private(to)?;
    let out = DirHandle::open(to, Acceptance::default())?;
    let mut written = Vec::new();
    let mut bytes = 0u64;
    for name in names {
        // Gone since the list was taken: deleted after the backup began.
        let Some((buf, modified)) = read(name)? else {
            continue;
        };
        let (_, stored) = decode_named(&out.at(name), name, buf.clone())?;
        if !live(&stored) {
            continue;
        }
        let mut f = out.open_file(name, Create::New)?;
        std::io::Write::write_all(&mut f, &buf).map_err(|e| Error::io(out.at(name), "write", e))?;
        f.set_times(std::fs::FileTimes::new().set_modified(modified))
            .map_err(|e| Error::io(out.at(name), "set the modification time", e))?;
        f.sync_all()
            .map_err(|e| Error::io(out.at(name), "fsync", e))?;
        bytes += buf.len() as u64;
        written.push(name.as_str());
    }
    drop(out.open_file(MARKER_NAME, Create::New)?);
    out.sync()?;
    for name in &written {
        let (buf, _) = read_session_file(&out, name)?
            .ok_or_else(|| Error::corrupt(out.at(name), 0, "a file of the copy vanished"))?;
        decode_named(&out.at(name), name, buf)?;
    }
    Ok((written.len() as u64, bytes))
}

/// Gives `tmp` the name `dest`: never replacing an existing `dest` unless
/// `overwrite`, in which case the two are exchanged and the old one
/// removed.
fn install(tmp: &Path, dest: &Path, overwrite: bool) -> Result<()> {
    match rustix::fs::renameat_with(CWD, tmp, CWD, dest, RenameFlags::NOREPLACE) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) if overwrite => {
            rustix::fs::renameat_with(CWD, tmp, CWD, dest, RenameFlags::EXCHANGE)
                .map_err(|e| Error::io(dest, "rename", errno(e)))?;
            remove_any(tmp)?;
        }
        Err(rustix::io::Errno::EXIST) => return Err(exists(dest)),
        Err(e) => return Err(Error::io(dest, "rename", errno(e))),
    }
    sync_parent(dest)
}

fn exists(dest: &Path) -> Error {
    Error::InvalidOption(format!(
        "{}: already exists (pass overwrite to replace it)",
        dest.display()
    ))
}

/// Cleans up after a failed copy into `tmp` and returns `result`.
fn or_remove<T>(tmp: &Path, result: Result<T>) -> Result<T> {
    if result.is_err() {
        let _ = remove_any(tmp);
    }
    result
}

impl DirStore {
    /// Writes a copy of the store to the new directory `dest` (mode 0700,
    /// files 0600), which [`DirStore::open`] opens as a store, while other
    /// handles and processes keep writing: it holds every session
    /// acknowledged before the call began (at that version or a later one)
    /// unless deleted since, each whole, and no expired one. The write
    /// lock is held only to list the files. Every file is checked before it
    /// is copied and read back after; an existing `dest` is refused unless
    /// `overwrite`. A damaged session file fails the backup, naming it.
    /// See DESIGN.md, "Online backup".
    pub fn backup_to(&self, dest: impl AsRef<Path>, overwrite: bool) -> Result<BackupReport> {
        let dest = dest.as_ref();
        if !overwrite && std::fs::symlink_metadata(dest).is_ok() {
            return Err(exists(dest));
        }
        let names: Vec<String> = {
            let _guard = self.write_lock()?;
            self.dir
                .names()?
                .filter(|n| n.as_ref().map_or(true, |n| is_session_name(n)))
                .collect::<Result<_>>()?
        };
        let tmp = beside(dest, ".partial");
        if std::fs::symlink_metadata(&tmp).is_ok() {
            return Err(Error::Busy {
                path: tmp,
                what: "another backup is writing here, or one that died left this: remove it"
                    .into(),
            });
        }
        let now = self.now_ms();
        let copied = write_copy(
            &names,
            |name| self.read_file(name),
            |s| self.live(s, now),
            &tmp,
        );
        let (sessions, bytes) = or_remove(&tmp, copied)?;
        or_remove(&tmp, install(&tmp, dest, overwrite))?;
        Ok(BackupReport {
            path: dest.to_owned(),
            source_bytes: bytes,
            sessions,
            bytes,
        })
    }

    /// Replaces the store in the directory `store` with a checked copy of
    /// the backup directory `backup` (one [`DirStore::backup_to`] wrote),
    /// keeping the replaced directory beside it as
    /// `STORE.before-restore-SECONDS`; creates `store` if it does not
    /// exist. Refused with [`Error::Busy`] while a `DirStore` has `store`
    /// open in any process (each holds a lock for as long as it is open;
    /// handles of versions before this one hold none and are not seen). An
    /// open that starts meanwhile waits, then opens the restored store.
    pub fn restore(backup: impl AsRef<Path>, store: impl AsRef<Path>) -> Result<DirRestoreReport> {
        let (backup, store) = (backup.as_ref(), store.as_ref());
        let src = DirHandle::open(backup, Acceptance::default())?;
        let names: Vec<String> = src
            .names()?
            .filter(|n| n.as_ref().map_or(true, |n| is_session_name(n)))
            .collect::<Result<_>>()?;
        // Hold the store's open lock exclusively until the swap is done.
        let existing = match std::fs::symlink_metadata(store) {
            Ok(_) => Some(DirHandle::open(store, Acceptance::default())?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(store, "stat", e)),
        };
        let _lock = match &existing {
            Some(dir) => Some(lock_out_openers(dir)?),
            None => None,
        };
        let tmp = beside(store, ".restore-partial");
        if std::fs::symlink_metadata(&tmp).is_ok() {
            return Err(Error::Busy {
                path: tmp,
                what: "another restore is writing here, or one that died left this: remove it"
                    .into(),
            });
        }
        let copied = write_copy(&names, |name| read_session_file(&src, name), |_| true, &tmp);
        let (sessions, _) = or_remove(&tmp, copied)?;
        let kept = match existing {
            None => {
                or_remove(&tmp, install(&tmp, store, false))?;
                None
            }
            Some(_) => {
                let swapped =
                    rustix::fs::renameat_with(CWD, &tmp, CWD, store, RenameFlags::EXCHANGE)
                        .map_err(|e| Error::io(store, "rename", errno(e)));
                or_remove(&tmp, swapped)?;
                let stamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let kept = beside(store, &format!(".before-restore-{stamp}"));
                rustix::fs::renameat_with(CWD, &tmp, CWD, &kept, RenameFlags::NOREPLACE)
                    .map_err(|e| Error::io(&kept, "rename", errno(e)))?;
                sync_parent(store)?;
                Some(kept)
            }
        };
        Ok(DirRestoreReport { sessions, kept })
    }
}

/// Takes the store's open lock exclusively, or fails with
/// [`Error::Busy`] if any process has the store open. A directory no
/// handle of this version has opened has no marker yet: nothing to lock.
fn lock_out_openers(dir: &DirHandle) -> Result<Option<File>> {
    let Some(marker) = dir.open_read(MARKER_NAME)? else {
        return Ok(None);
    };
    match marker.try_lock() {
        Ok(()) => Ok(Some(marker)),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy {
            path: dir.path().to_owned(),
            what: "the store is open in another process; stop it before restoring".into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(dir.at(MARKER_NAME), "lock", e)),
    }
}
