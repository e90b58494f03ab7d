//! The temporary file a compaction (or a repair, or a hint written on
//! close) writes: `<log>.compact`, whose `flock` serializes compactions
//! between processes.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::engine::file::Site;
use crate::engine::hook::{Hooks, IoEvent};
use crate::error::{Error, Result};
use crate::trust::{Create, Owner};

/// The temporary file a compaction writes, locked by its compactor.
pub(super) struct TempFile {
    pub path: PathBuf,
    pub site: Site,
    pub file: File,
}

impl TempFile {
    /// Opens and locks `<log>.compact`, waiting until `deadline` at most
    /// for a compaction in another process to finish with it, then
    /// `Error::Busy`. `flock` has no timed wait: the lock is tried again
    /// after pauses that grow from 1 ms to 50 ms.
    pub fn wait(log: &Site, owner: Owner, hooks: &Hooks, deadline: Instant) -> Result<TempFile> {
        let mut pause = Duration::from_millis(1);
        loop {
            match Self::open_locked(log, owner, hooks) {
                Ok(Some(t)) => return Ok(t),
                Ok(None) => {}
                Err(Error::Busy { path, .. }) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Busy {
                            path,
                            what: "another compaction held the temporary file for longer \
                                   than the lock timeout"
                                .into(),
                        });
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens and locks `<log>.compact`, or `None` if another compaction
    /// holds it.
    pub fn try_acquire(log: &Site, owner: Owner, hooks: &Hooks) -> Result<Option<TempFile>> {
        loop {
            match Self::open_locked(log, owner, hooks) {
                Ok(None) => continue,
                Err(Error::Busy { .. }) => return Ok(None),
                other => return other,
            }
        }
    }

    /// One attempt: `None` if the file locked was not the one at the path
    /// any more (the previous holder renamed or removed it): try again;
    /// `Error::Busy` if another compaction holds it.
    ///
    /// The name is fixed, since its `flock` is what serializes compactions
    /// between processes; it is opened without following a link and must
    /// be a regular file of one link owned by the store's owner, so that a
    /// planted link or file is refused, never truncated or looped on.
    fn open_locked(log: &Site, owner: Owner, hooks: &Hooks) -> Result<Option<TempFile>> {
        let site = log.sibling(".compact");
        let path = site.path.clone();
        let file = site.open(Create::IfMissing, owner)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Busy {
                    path,
                    what: "another compaction holds the temporary file".into(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, "lock", e)),
        }
        let mine = file.metadata().map_err(|e| Error::io(&path, "stat", e))?;
        let mine_ino = (mine.dev(), mine.ino());
        match site.stat()? {
            Some(m) if m.ino() == mine_ino && mine.len() == 0 => {
                Ok(Some(TempFile { path, site, file }))
            }
            Some(m) if m.ino() == mine_ino => {
                // A dead compactor's file. Other processes may have mapped
                // it ahead of a swap that never came, and a file anyone
                // may have mapped is never shortened (a read of theirs
                // past its new end would raise SIGBUS): remove it, and
                // start on a new one.
                remove(hooks, &site)
                    .map_err(|e| Error::io(&path, "remove stale temporary file", e))?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Removes the file (whose lock this handle holds, until it is
    /// dropped).
    pub fn remove(&self, hooks: &Hooks) -> io::Result<()> {
        remove(hooks, &self.site)
    }

    /// Checks, through the directory's descriptor, that this file and the
    /// log `log` (the file `log_ino`) are still the files at their names,
    /// just before the rename that puts one in the other's place: a rename
    /// must never replace a file this compaction did not read, nor move
    /// one it did not write.
    pub fn check_before_rename(&self, log: &Site, log_ino: (u64, u64)) -> Result<()> {
        let m = self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.site.path, "stat", e))?;
        if !self.site.holds((m.dev(), m.ino())) {
            return Err(Error::Busy {
                path: self.site.path.clone(),
                what: "the compaction's temporary file was replaced or removed during the \
                       compaction"
                    .into(),
            });
        }
        if !log.holds(log_ino) {
            return Err(Error::Busy {
                path: log.path.clone(),
                what: "the log was replaced or removed during the compaction".into(),
            });
        }
        Ok(())
    }
}

/// Removes the compaction's temporary file, which the caller has locked.
fn remove(hooks: &Hooks, tmp: &Site) -> io::Result<()> {
    hooks
        .before(IoEvent::Remove { path: &tmp.path })
        .and_then(|()| tmp.remove())
}
