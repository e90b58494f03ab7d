//! Catching up with other processes: applying what they appended since
//! this process last looked, and following a compaction's swap to the new
//! file. Every reader and writer calls [`refresh`] before trusting its view
//! (readers only when the no-syscall freshness check says so).

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::engine::commit::GroupCommit;
use crate::engine::file::LogFile;
use crate::engine::format::{self, HEADER_SIZE};
use crate::engine::lock::LockFile;
use crate::engine::recovery::{self, Replayed};
use crate::engine::state::State;
use crate::error::{Error, Result};

/// What a view follows: the store's path, its lock file and this
/// process's writer mutex (to tell a live swap from a dead compactor's
/// mark), and group commit (which must learn of a new file).
pub(crate) struct Follow<'a> {
    pub path: &'a Path,
    pub lock: &'a LockFile,
    pub writer: &'a Mutex<Vec<u8>>,
    pub commit: &'a GroupCommit,
}

impl Follow<'_> {
    /// Brings `st` up to date with the file: follows a compaction's swap,
    /// applies what other processes appended.
    pub fn refresh(&self, st: &mut State) -> Result<()> {
        if st.file.superseded() {
            self.follow_swap(st)?;
        }
        let word = st.file.committed_word();
        if word == st.applied_word {
            return Ok(());
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
            return Ok(());
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
        if end > st.file.map_len() {
            st.file = Arc::new(st.file.remapped()?);
        }
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
        Ok(())
    }

    /// The file was marked superseded: switch to the file now at the path
    /// if a compaction renamed one there; clear the mark if its compactor
    /// died before the rename.
    fn follow_swap(&self, st: &mut State) -> Result<()> {
        let current = LogFile::open(self.path, self.lock.owner)?;
        if current.ino != st.file.ino {
            self.switch(st, current)?;
            return Ok(());
        }
        // Still the current file: a compaction is between marking and
        // renaming (it holds the lock), or died there. Only a holder of the
        // lock may tell, and this thread must not block while holding
        // `state`: try both locks, in order.
        if let Some(_w) = self.writer.try_lock()
            && let Some(_g) = self.lock.try_lock()?
        {
            let again = LogFile::open(self.path, self.lock.owner)?;
            if again.ino == st.file.ino {
                st.file.set_superseded(false);
            } else {
                self.switch(st, again)?;
            }
        }
        Ok(())
    }

    /// Replaces the view with one of `file`, the store's new file.
    fn switch(&self, st: &mut State, file: LogFile) -> Result<()> {
        *st = recovery::load_complete(Arc::new(file))?;
        self.commit.switch_file(
            st.file.header.generation,
            st.file.synced().unwrap_or(HEADER_SIZE),
        );
        Ok(())
    }
}
