//! Catching up with other processes: applying what they appended since
//! this process last looked, and following a compaction's swap to the new
//! file. Every reader and writer calls [`Follow::fresh`] (or
//! [`Follow::fresh_or_switch`]) before trusting its view (readers only when
//! the no-syscall freshness check says so).

use std::path::Path;
use std::sync::Arc;

use crossbeam_utils::sync::ShardedLockWriteGuard;
use parking_lot::Mutex;

use crate::engine::commit::GroupCommit;
use crate::engine::file::{LogFile, Site};
use crate::engine::format::{self, HEADER_SIZE};
use crate::engine::hook::Hooks;
use crate::engine::lock::LockFile;
use crate::engine::pending::Pending;
use crate::engine::recovery::{self, Replayed};
use crate::engine::state::{State, StateLock};
use crate::error::{Error, Result};

/// What a view follows: the store's path, its lock file and this
/// process's writer mutex (to tell a live swap from a dead compactor's
/// mark), group commit (which must learn of a new file), the state it
/// keeps up to date, and the mutex that lets one thread at a time build
/// the index of a new file.
pub(crate) struct Follow<'a> {
    pub path: &'a Path,
    /// The log's directory and name.
    pub site: &'a Site,
    pub lock: &'a LockFile,
    pub writer: &'a Mutex<Vec<u8>>,
    pub commit: &'a GroupCommit,
    pub state: &'a StateLock,
    pub switching: &'a Mutex<()>,
    /// The hint of a pending swap, read ahead.
    pub pending: &'a Pending,
    pub hooks: &'a Hooks,
}

/// A move to a new file that a writer left for after it let go of the
/// write lock.
pub(crate) struct Switch {
    old: (u64, u64),
    next: LogFile,
}

/// What a refresh under the state lock found.
enum Found {
    /// The view is up to date.
    Fresh,
    /// A compaction swapped in this file: its index must be built (without
    /// the state lock) before the view can be.
    NewFile(Box<LogFile>),
}

impl<'a> Follow<'a> {
    /// The state, locked for writing and up to date with the file. When a
    /// compaction swapped in a new file, its index is built with the state
    /// lock released (other threads go on reading the old view meanwhile,
    /// or wait for the build if they need the new one), and published with
    /// a pointer swap.
    pub fn fresh(&self) -> Result<ShardedLockWriteGuard<'a, State>> {
        let state: &'a StateLock = self.state;
        loop {
            let mut st = state.write();
            match self.refresh_found(&mut st)? {
                Found::Fresh => return Ok(st),
                Found::NewFile(next) => {
                    let old = st.file.ino;
                    drop(st);
                    self.switch(old, *next)?;
                }
            }
        }
    }

    /// Like [`Follow::fresh`] for a caller that holds the write lock: if a
    /// compaction swapped in a new file, returns it instead of building its
    /// index, so that the caller can let go of the write lock (other
    /// processes' writers would wait for the build) and call
    /// [`Follow::switch_to`].
    pub fn fresh_or_switch(
        &self,
    ) -> Result<std::result::Result<ShardedLockWriteGuard<'a, State>, Switch>> {
        let state: &'a StateLock = self.state;
        let mut st = state.write();
        Ok(match self.refresh_found(&mut st)? {
            Found::Fresh => Ok(st),
            Found::NewFile(next) => Err(Switch {
                old: st.file.ino,
                next: *next,
            }),
        })
    }

    /// Moves the view to the new file found by [`Follow::fresh_or_switch`].
    pub fn switch_to(&self, s: Switch) -> Result<()> {
        self.switch(s.old, s.next)
    }

    fn refresh_found(&self, st: &mut State) -> Result<Found> {
        if st.file.superseded()
            && let Some(next) = self.follow_swap(st)?
        {
            return Ok(Found::NewFile(Box::new(next)));
        }
        let word = st.file.committed_word();
        if word == st.applied_word {
            return Ok(Found::Fresh);
        }
        let end = format::decode_offset(word).ok_or_else(|| {
            Error::corrupt(
                self.path,
                format::H_COMMITTED as u64,
                "the committed-length word is damaged",
            )
        })?;
        if end < st.applied {
            // Another process cut a torn tail we had not read: start over.
            *st = recovery::load_complete(Arc::clone(&st.file))?;
            return Ok(Found::Fresh);
        }
        if end > st.file_len {
            st.file_len = st.file.file_len()?;
            if end > st.file_len {
                return Err(Error::corrupt(
                    self.path,
                    end,
                    "committed length beyond the end of the file",
                ));
            }
        }
        st.map_to(end)?;
        // SAFETY: `end` is the committed end, checked against the length.
        let view = unsafe { crate::engine::file::View::new(&st.file, end) };
        let Replayed { stop, error, .. } = recovery::replay(&view, st.applied, &mut st.index);
        if let Some(e) = error {
            st.applied = stop;
            st.applied_word = format::encode_offset(stop);
            return Err(Error::corrupt(self.path, stop, e.to_string()));
        }
        st.applied = end;
        st.applied_word = word;
        Ok(Found::Fresh)
    }

    /// The file was marked superseded: returns the file now at the path if
    /// a compaction renamed one there; clears the mark if its compactor
    /// died before the rename.
    fn follow_swap(&self, st: &mut State) -> Result<Option<LogFile>> {
        let current = LogFile::open(self.site, self.lock.owner)?;
        if current.ino != st.file.ino {
            return Ok(Some(current));
        }
        // Still the current file: a compaction is between marking and
        // renaming (it holds the lock), or died there. Only a holder of the
        // lock may tell, and this thread must not block while holding
        // `state`: try both locks, in order.
        if let Some(_w) = self.writer.try_lock()
            && let Some(_g) = self.lock.try_lock()?
        {
            let again = LogFile::open(self.site, self.lock.owner)?;
            if again.ino == st.file.ino {
                st.file.set_superseded(false);
            } else {
                return Ok(Some(again));
            }
        }
        Ok(None)
    }

    /// Moves the view from the file `old` to `next`, the store's new file:
    /// builds `next`'s view (from its hint, read ahead if the compactor
    /// announced it, or by a replay) holding only the `switching` mutex,
    /// then swaps it in under the state lock. The
    /// old view is dropped on a thread of its own (the caller may hold the
    /// write lock, and unmapping a large file takes long).
    fn switch(&self, old: (u64, u64), mut next: LogFile) -> Result<()> {
        let _one = self.switching.lock();
        if self.state.read().file.ino != old {
            // Another thread moved the view meanwhile.
            return Ok(());
        }
        let (ahead, premapped) = self.pending.take(&next.header);
        if let Some(pre) = premapped {
            // The mapping not taken is dropped off the request path: if
            // it was the one made ahead, its page tables are filled in.
            crate::engine::state::retire(next.adopt(pre));
        }
        let built = recovery::load_indexed(Arc::new(next), self.lock.owner, self.hooks, ahead)?;
        let previous = {
            let mut st = self.state.write();
            if st.file.ino != old {
                return Ok(());
            }
            let previous = std::mem::replace(&mut *st, built);
            self.switched(&st);
            previous
        };
        crate::engine::state::retire(previous);
        Ok(())
    }

    /// Tells group commit that the view moved to another process's file.
    fn switched(&self, st: &State) {
        self.commit.follow_file(
            st.file.header.generation,
            st.file.synced().unwrap_or(HEADER_SIZE),
        );
    }
}
