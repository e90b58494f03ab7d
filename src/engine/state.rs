//! A process's view of the log: the mapped file and the index built from it,
//! behind the lock that readers share and writers take alone.

use std::sync::Arc;

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};

use crate::engine::file::{LogFile, View};
use crate::engine::index::Index;
use crate::error::Result;

/// This process's view of the log: the file, and the index built from it
/// up to `applied`.
#[derive(Debug)]
pub(crate) struct State {
    pub file: Arc<LogFile>,
    pub index: Index,
    /// Offset up to which `index` reflects the file.
    pub applied: u64,
    /// The committed word that `applied` was read from: comparing it with
    /// the file's current word is the no-syscall freshness check.
    pub applied_word: u64,
    /// File length last seen (it only grows).
    pub file_len: u64,
}

impl State {
    /// True if nothing changed in the file since this view was built.
    pub fn is_fresh(&self) -> bool {
        self.file.committed_word() == self.applied_word && !self.file.superseded()
    }

    /// The records this view has applied.
    pub fn view(&self) -> View<'_> {
        // SAFETY: `applied` is a committed end this process read from the
        // file and checked against its length; records below it are never
        // rewritten.
        unsafe { View::new(&self.file, self.applied) }
    }

    /// Maps the file again if `end` (within the file) lies past the
    /// mapping, and drops the old mapping on a thread of its own (see
    /// [`retire`]): the caller holds the state lock.
    pub fn map_to(&mut self, end: u64) -> Result<()> {
        if end > self.file.map_len() {
            let bigger = Arc::new(self.file.remapped()?);
            retire(std::mem::replace(&mut self.file, bigger));
        }
        Ok(())
    }

    /// The index, to change, and the records it may compare ids against.
    pub fn index_and_view(&mut self) -> (&mut Index, View<'_>) {
        // SAFETY: as for `view`.
        let view = unsafe { View::new(&self.file, self.applied) };
        (&mut self.index, view)
    }
}

/// Drops what a view replaced (a compaction's old file and its index, or a
/// mapping outgrown by its file) on a thread of its own: unmapping a file
/// of a gigabyte takes most of a second here, and the thread that replaced
/// the view may hold the write lock, or be serving a request. If no thread
/// can be started, drops it here.
pub(crate) fn retire<T: Send + 'static>(old: T) {
    // If the thread cannot start, the closure (and the state in it) is
    // dropped right here, with the error.
    let _ = std::thread::Builder::new()
        .name("sessionlog-retire".into())
        .spawn(move || drop(old));
}

/// The lock around a process's `State`. Sharded: a reader locks one shard
/// (no cache line shared between reading threads), a writer locks them all.
pub(crate) struct StateLock(ShardedLock<State>);

impl StateLock {
    pub fn new(state: State) -> StateLock {
        StateLock(ShardedLock::new(state))
    }

    /// Shared access. A panic while writing cannot leave the state half
    /// updated in a way a reader would trust: every reader re-checks the
    /// records it reads, so a poisoned lock is used as is.
    pub fn read(&self) -> ShardedLockReadGuard<'_, State> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Exclusive access.
    pub fn write(&self) -> ShardedLockWriteGuard<'_, State> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
