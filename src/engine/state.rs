//! A process's view of the log: the mapped file and the index built from it,
//! behind the lock that readers share and writers take alone.

use std::sync::Arc;

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use parking_lot::{Mutex, MutexGuard};

use crate::engine::file::{LogFile, View};
use crate::engine::index::Index;
use crate::error::Result;

/// This process's view of the log: the file, and the index built from it
/// up to `applied`.
#[derive(Debug)]
pub(crate) struct State {
    pub index: Index,
    pub file: Arc<LogFile>,
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
///
/// The thread runs at the lowest priority (nice 19): it is started at a
/// swap, when every process of the store retires its old view at once and
/// the followers build their new one, and its 15-30 ms of unmapping (a
/// million sessions) would otherwise take the CPU from the threads serving
/// requests. The unmap goes in pieces, pacing (`file::Mapping`). Not
/// `SCHED_IDLE`, which would take the CPU from it at once for any woken
/// thread: on a busy machine the old file's last close, where the kernel
/// frees the deleted file's page cache (gigabytes at ten million sessions,
/// much of it dirty under `SyncPolicy::Never`), then waited, and with it
/// the memory.
pub(crate) fn retire<T: Send + 'static>(old: T) {
    // If the thread cannot start, the closure (and the state in it) is
    // dropped right here, with the error.
    let _ = std::thread::Builder::new()
        .name("sessionlog-retire".into())
        .spawn(move || {
            // On Linux the nice value is per thread (`None`: this one).
            // If it cannot be lowered, the drop runs at normal priority.
            let _ = rustix::process::setpriority_process(None, RETIRE_NICE);
            drop(old)
        });
}

/// The nice value of the thread that drops retired views.
const RETIRE_NICE: i32 = 19;

/// The lock around a process's `State`. Sharded: a reader locks one shard
/// (no cache line shared between reading threads), a writer locks them all.
///
/// The shards are `std` locks, which do not hand the lock to a waiting
/// writer: a reader that lets go and locks again at once (a compaction
/// walking the index in turns) wins the race against the writer it just
/// woke, turn after turn. A writer therefore holds `turnstile` from before
/// it asks for the lock until it has it, and [`StateLock::read_turn`] goes
/// through the turnstile too: with a writer waiting, the next turn waits
/// for that writer. DESIGN.md §8 (step 2, the copy) has what a save
/// waited without it.
pub(crate) struct StateLock<T = State> {
    lock: ShardedLock<T>,
    turnstile: Mutex<()>,
}

impl<T> StateLock<T> {
    pub fn new(state: T) -> StateLock<T> {
        StateLock {
            lock: ShardedLock::new(state),
            turnstile: Mutex::new(()),
        }
    }

    /// Shared access. A panic while writing cannot leave the state half
    /// updated in a way a reader would trust: every reader re-checks the
    /// records it reads, so a poisoned lock is used as is.
    pub fn read(&self) -> ShardedLockReadGuard<'_, T> {
        self.lock
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Shared access for one of many short turns: waits for any writer
    /// that is waiting for the lock (see the type's documentation).
    pub fn read_turn(&self) -> ShardedLockReadGuard<'_, T> {
        let t = self.turnstile.lock();
        let g = self.read();
        // Fair: a writer parked on the turnstile gets it before this
        // thread's next turn can.
        MutexGuard::unlock_fair(t);
        g
    }

    /// Exclusive access.
    pub fn write(&self) -> ShardedLockWriteGuard<'_, T> {
        self.write_next(|| ())
    }

    /// [`StateLock::write`], calling `next` once this thread is the next
    /// writer (it holds the turnstile) and before it waits for readers.
    fn write_next(&self, next: impl FnOnce()) -> ShardedLockWriteGuard<'_, T> {
        let _t = self.turnstile.lock();
        next();
        self.lock
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

    use super::{RETIRE_NICE, StateLock, retire};

    /// What a retired view's drop sees: the thread it runs on, at the
    /// lowest priority.
    #[test]
    fn a_retired_view_is_dropped_on_a_thread_of_its_own_at_the_lowest_priority() {
        struct Seen(std::sync::mpsc::Sender<(std::thread::ThreadId, Option<String>, i32)>);
        impl Drop for Seen {
            fn drop(&mut self) {
                let t = std::thread::current();
                let nice = rustix::process::getpriority_process(None).expect("getpriority");
                let _ = self.0.send((t.id(), t.name().map(str::to_owned), nice));
            }
        }
        let ours = rustix::process::getpriority_process(None).expect("getpriority");
        let (tx, rx) = std::sync::mpsc::channel();
        retire(Seen(tx));
        let (id, name, nice) = rx.recv().expect("dropped");
        assert_ne!(id, std::thread::current().id());
        assert_eq!(name.as_deref(), Some("sessionlog-retire"));
        assert_eq!(nice, RETIRE_NICE);
        // This thread's priority is untouched.
        assert_eq!(
            rustix::process::getpriority_process(None).expect("getpriority"),
            ours
        );
    }

    /// A reader taking the lock in turns, as fast as it can, lets a
    /// waiting writer in after the turn it is in: it takes no turn while
    /// the writer waits.
    #[test]
    fn a_waiting_writer_gets_the_lock_before_the_next_turn() {
        let lock = StateLock::new(0u64);
        let waiting = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let (turns, turns_seen_waiting) = (AtomicU64::new(0), AtomicU64::new(0));
        let most = std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(SeqCst) {
                    let g = lock.read_turn();
                    turns.fetch_add(1, SeqCst);
                    if waiting.load(SeqCst) && turns_seen_waiting.fetch_add(1, SeqCst) == 1000 {
                        // The writer starves: stop so that it gets in
                        // and the test fails rather than hangs.
                        break;
                    }
                    drop(g);
                }
            });
            let mut most = 0;
            for round in 1..=50u64 {
                // Let the reader get going (and come round again).
                let before = turns.load(SeqCst);
                while turns.load(SeqCst) < before + 100 && !stop.load(SeqCst) {
                    std::hint::spin_loop();
                }
                let mut g = lock.write_next(|| waiting.store(true, SeqCst));
                let seen = turns_seen_waiting.swap(0, SeqCst);
                waiting.store(false, SeqCst);
                *g = round;
                drop(g);
                most = most.max(seen);
                if seen > 1 {
                    break;
                }
            }
            stop.store(true, SeqCst);
            most
        });
        // The turn under way when the writer came may see it waiting; no
        // later one may.
        assert!(most <= 1, "{most} turns taken while a writer waited");
    }
}
