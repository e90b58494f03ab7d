//! Making appends durable: group commit. One thread of a process syncs at
//! a time; threads that arrive meanwhile wait and are usually covered by
//! the next sync. Between processes, durable saves elect one flusher (the
//! flush turn in the lock file) that flushes every process's records, and
//! a process whose records another's flush covered does not flush again
//! (DESIGN.md §6). The background thread's interval syncs come through
//! here too.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::engine::file::{LogFile, Site};
use crate::engine::format::{self, HEADER_SIZE};
use crate::engine::hook::{Hooks, IoEvent};
use crate::engine::lock::LockFile;
use crate::engine::state::StateLock;
use crate::error::{Error, Result};
use crate::observe::Meters;
use crate::options::SyncPolicy;
use crate::poison::Poison;

/// What this process knows to be durable.
#[derive(Debug)]
struct Synced {
    /// Generation of the file `synced` refers to.
    generation: u64,
    /// Everything before this offset is on stable storage.
    synced: u64,
    /// A thread is in `fdatasync` now; others wait for it.
    running: bool,
    /// The header's words on disk are behind: range syncs made records
    /// durable without writing the header page. The next full sync (the
    /// background thread's, `sync()`, close) writes it.
    header_behind: bool,
    /// A compaction of this process swapped in a new file and is syncing
    /// it and its directory: no sync completes until it is done.
    switching: bool,
    /// The view moved to a file another process's compaction renamed into
    /// place, whose directory entry may not be durable yet: the next sync
    /// syncs the directory first.
    dir_pending: bool,
}

/// How a sync makes records durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncKind {
    /// Writes back only the records' range (`RWF_DSYNC`): one I/O per
    /// durable save. The header page (committed and synced words) stays in
    /// the page cache; recovery finds records past a stale committed word.
    Range,
    /// `fdatasync`: everything, the header page included.
    Full,
}

/// Longest a sync leader waits for writers in flight to join its group.
const GATHER_FOR: Duration = Duration::from_micros(200);

/// Longest a process waiting for another's flush sleeps before it looks
/// at the flush turn again: a flusher killed in its flush never wakes
/// anyone, and its turn passes to the first process that tries it.
const FLUSH_WAIT_SLICE: Duration = Duration::from_millis(10);

/// The log a sync works on: what group commit reads, reports and poisons.
pub(crate) struct Log<'a> {
    pub path: &'a Path,
    pub state: &'a StateLock,
    pub poison: &'a Poison,
    pub hooks: &'a Hooks,
    /// Keeps each sync's latency.
    pub meters: &'a Meters,
    /// The lock file: the flush turn shared with other processes.
    pub lock: &'a LockFile,
    /// The log's directory, synced after a move to another process's
    /// compacted file.
    pub site: &'a Site,
}

/// Group commit of one store handle.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    policy: SyncPolicy,
    synced: Mutex<Synced>,
    done: Condvar,
    /// Threads between entering a write and finishing its append: a sync
    /// leader gives them a moment to join its group.
    in_flight: AtomicUsize,
    /// Set when something was appended since the last sync.
    dirty: AtomicBool,
    /// Durable writers counted in the lock file that this process judged
    /// left behind by killed processes: an elected flusher gathers only
    /// while more than these are inside a write.
    stale_writers: AtomicU32,
}

/// Counts a writing thread as in flight while it lives, for the group
/// commit of `SyncPolicy::Always` (other policies have no sync to gather
/// for, and skip the shared counter).
/// The lock file, when durable writers are counted there too (for other
/// processes' flushers).
pub(crate) struct InFlight<'a>(&'a GroupCommit, Option<&'a LockFile>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(lock) = self.1 {
            lock.leave_durable_write();
        }
    }
}

impl GroupCommit {
    /// Group commit for a file of `generation` durable up to `synced`;
    /// `dirty` if records were appended that are not.
    pub fn new(policy: SyncPolicy, generation: u64, synced: u64, dirty: bool) -> GroupCommit {
        GroupCommit {
            policy,
            synced: Mutex::new(Synced {
                generation,
                synced,
                running: false,
                header_behind: false,
                switching: false,
                dir_pending: false,
            }),
            done: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            dirty: AtomicBool::new(dirty),
            stale_writers: AtomicU32::new(0),
        }
    }

    /// Marks the calling thread as about to append, until the guard drops:
    /// in this process, and in `lock` for other processes' flushers.
    pub fn enter<'a>(&'a self, lock: &'a LockFile) -> Option<InFlight<'a>> {
        if self.policy != SyncPolicy::Always {
            return None;
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let shared = lock.shares_flush().then(|| {
            lock.enter_durable_write();
            lock
        });
        Some(InFlight(self, shared))
    }

    /// Records that something was appended since the last sync.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Whether something was appended since the last sync.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Whether range syncs left the header page on disk behind.
    pub fn header_behind(&self) -> bool {
        self.synced.lock().header_behind
    }

    /// Whether every save waits for its sync (`SyncPolicy::Always`).
    pub fn is_always(&self) -> bool {
        self.policy == SyncPolicy::Always
    }

    /// This process's compaction is about to swap in a new file and will
    /// sync it and its directory after letting go of the write lock: until
    /// [`GroupCommit::switch_file`] (or `cancel_switch`, `fail_switch`), no
    /// sync starts, and one that ran across the swap counts for nothing in
    /// the new file.
    pub fn begin_switch(&self) {
        self.synced.lock().switching = true;
    }

    /// The swap did not happen: syncs go on as before.
    pub fn cancel_switch(&self) {
        let mut s = self.synced.lock();
        s.switching = false;
        self.done.notify_all();
    }

    /// The swap happened but syncing the new file or its directory failed
    /// (the handle is poisoned): nothing of file `generation` counts as
    /// durable, so every sync reports the poison.
    pub fn fail_switch(&self, generation: u64) {
        let mut s = self.synced.lock();
        s.generation = generation;
        s.synced = HEADER_SIZE;
        s.switching = false;
        s.dir_pending = true;
        self.done.notify_all();
    }

    /// This process's compaction moved the store to another file, durable
    /// up to `synced`, its directory entry too.
    pub fn switch_file(&self, generation: u64, synced: u64) {
        let mut s = self.synced.lock();
        s.generation = generation;
        s.synced = synced;
        s.switching = false;
        self.done.notify_all();
    }

    /// The view moved to another process's compacted file, durable up to
    /// `synced`; the rename that put it at the path may not be (that
    /// process syncs the directory after letting go of the write lock), so
    /// the next sync syncs the directory before anything counts as durable.
    pub fn follow_file(&self, generation: u64, synced: u64) {
        let mut s = self.synced.lock();
        s.generation = generation;
        s.synced = synced;
        s.dir_pending = true;
    }

    /// Returns once `end` in file `generation` is on stable storage (and,
    /// for [`SyncKind::Full`], the header too).
    pub fn sync_to(&self, log: &Log<'_>, generation: u64, end: u64, kind: SyncKind) -> Result<()> {
        let mut s = self.synced.lock();
        loop {
            let covered =
                s.generation > generation || (s.generation == generation && s.synced >= end);
            let settled = !s.switching && !s.dir_pending;
            if covered && settled && (kind == SyncKind::Range || !s.header_behind) {
                return Ok(());
            }
            if log.poison.is_set() {
                drop(s);
                return log.poison.check(log.path);
            }
            if s.running || s.switching {
                self.done.wait(&mut s);
                continue;
            }
            s.running = true;
            if kind == SyncKind::Full {
                s.header_behind = false;
            }
            let dir = std::mem::take(&mut s.dir_pending);
            drop(s);
            if dir && let Err(e) = sync_dir(log) {
                s = self.synced.lock();
                s.running = false;
                s.dir_pending = true;
                self.done.notify_all();
                log.poison.set("fsync of the directory", &e);
                drop(s);
                return Err(Error::io(log.path, "fsync directory", e));
            }
            if kind == SyncKind::Range {
                self.gather();
            }
            let (file, upto) = {
                let st = log.state.read();
                (Arc::clone(&st.file), st.applied)
            };
            self.dirty.store(false, Ordering::Release);
            let timer = log.meters.start();
            let result = match kind {
                SyncKind::Full => log
                    .hooks
                    .before(IoEvent::Sync { path: &file.path })
                    .and_then(|()| file.sync_data())
                    .map(|()| {
                        raise_synced(log, &file, upto);
                        upto
                    }),
                SyncKind::Range => self.flush_range(log, &file, upto),
            };
            log.meters.synced(timer);
            s = self.synced.lock();
            s.running = false;
            self.done.notify_all();
            match result {
                Ok(durable) => {
                    if kind == SyncKind::Range {
                        s.header_behind = true;
                    }
                    let g = file.header.generation;
                    // A sync that read the new file of a swap still being
                    // synced (`begin_switch`) counts for nothing there.
                    if g > s.generation && !s.switching {
                        s.generation = g;
                        s.synced = durable;
                    } else if g == s.generation {
                        s.synced = s.synced.max(durable);
                    }
                }
                Err(e) => {
                    log.poison.set("fsync", &e);
                    drop(s);
                    return Err(Error::io(log.path, "fsync", e));
                }
            }
        }
    }

    /// Makes `file` durable up to `end` at least, and returns the end that
    /// is durable now. With a lock file that carries the flush turn:
    ///
    /// - if the synced word says another process's flush covered `end`
    ///   already, nothing is flushed;
    /// - else the first to take the flush turn flushes from the synced
    ///   word to the log's committed end, every process's records up to
    ///   there, after giving durable writers inside a write a moment to
    ///   append (`gather_shared`); the others sleep until the turn ends,
    ///   then look at the synced word again;
    /// - a turn whose holder died passes to the next that tries it; a
    ///   holder that is stopped or hung is waited for at most the store's
    ///   lock timeout, then this process flushes for itself (as every
    ///   process does on a lock file without the turn).
    ///
    /// Why no save is acknowledged before its bytes are durable: the
    /// synced word moves only in `flush_from`, to the committed end read
    /// *before* its flush began, and the committed word is published only
    /// after the bytes below it were written (DESIGN.md §5). So the flush
    /// began after every byte below the new synced word was written, and
    /// `RWF_DSYNC` returns once they and everything written before are on
    /// stable storage (the range and a flush of the disk's cache). A save
    /// returns only when the synced word is at or past its end, in the
    /// file it appended to.
    fn flush_range(&self, log: &Log<'_>, file: &LogFile, end: u64) -> io::Result<u64> {
        if !log.lock.shares_flush() {
            return flush_from(log, file, end);
        }
        let patience = log.lock.timeout();
        let start = Instant::now();
        loop {
            if let Some(w) = file.synced().filter(|&w| w >= end) {
                return Ok(w);
            }
            let seen = log.lock.flush_seq();
            let turn = match log.lock.try_flush_turn() {
                Ok(turn) => turn,
                // Not a state the turn can be in; flushing alone is
                // always correct.
                Err(_) => return flush_from(log, file, end),
            };
            if let Some(turn) = turn {
                // The turn's last holder may have covered `end`.
                if let Some(w) = file.synced().filter(|&w| w >= end) {
                    return Ok(w);
                }
                self.gather_shared(log.lock, file);
                let upto = format::decode_offset(file.committed_word()).map_or(end, |c| c.max(end));
                let r = flush_from(log, file, upto);
                drop(turn);
                return r;
            }
            let waited = start.elapsed();
            if waited >= patience {
                return flush_from(log, file, end);
            }
            log.lock
                .wait_flush(seen, FLUSH_WAIT_SLICE.min(patience - waited));
        }
    }

    /// The flush turn's `gather`: gives the durable writers of every
    /// process that are inside a write (counted in the lock file) up to
    /// `GATHER_FOR` to append, so that this flush covers them. Without
    /// it, the processes a flush releases come back just after the next
    /// one started and wait a whole flush more. A count that stays up
    /// while the committed end does not move is taken as left by killed
    /// processes, and later gathers wait only for writers beyond it.
    fn gather_shared(&self, lock: &LockFile, file: &LogFile) {
        let start = Instant::now();
        let mut n = lock.durable_writers();
        let stale = self.stale_writers.load(Ordering::Relaxed);
        if n < stale {
            // Fewer than judged stale: some of those were live after all.
            self.stale_writers.store(n, Ordering::Relaxed);
        }
        let floor = stale.min(n);
        let committed = file.committed_word();
        while n > floor {
            if start.elapsed() >= GATHER_FOR {
                if file.committed_word() == committed {
                    self.stale_writers.store(n, Ordering::Relaxed);
                }
                return;
            }
            thread::yield_now();
            n = lock.durable_writers();
        }
    }

    /// Syncs everything appended so far and records that in the header.
    pub fn sync_all(&self, log: &Log<'_>) -> Result<()> {
        let (generation, end) = {
            let st = log.state.read();
            (st.file.header.generation, st.applied)
        };
        self.sync_to(log, generation, end.max(HEADER_SIZE), SyncKind::Full)
    }

    /// Before a durable save's sync: gives the threads that are inside a
    /// write (between entering it and finishing its append) a moment to
    /// finish, so that one sync covers them too. Without it, on a busy
    /// store the groups alternate: the threads a sync releases come back
    /// just after the next one started, and wait a whole sync more. The
    /// first yield lets threads that the last sync woke get to their write.
    fn gather(&self) {
        let start = Instant::now();
        thread::yield_now();
        while self.in_flight.load(Ordering::Acquire) > 0 && start.elapsed() < GATHER_FOR {
            thread::yield_now();
        }
    }
}

/// Syncs the directory of the log (after a move to a file another
/// process renamed into place).
fn sync_dir(log: &Log<'_>) -> io::Result<()> {
    log.hooks.before(IoEvent::SyncDir { path: log.path })?;
    log.site.sync_dir().map_err(|e| match e {
        Error::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })
}

/// Flushes `file` from its synced word to `upto` (`RWF_DSYNC`), then
/// raises the synced word to `upto`: everything below the synced word is
/// durable already, whichever process flushed it. The caller read `upto`
/// (a committed end) before calling, so the flush begins after every byte
/// below it was written.
fn flush_from(log: &Log<'_>, file: &LogFile, upto: u64) -> io::Result<u64> {
    let from = file.synced().unwrap_or(HEADER_SIZE).min(upto);
    log.hooks.before(IoEvent::SyncRange {
        path: &file.path,
        start: from,
        end: upto,
    })?;
    file.sync_range(from, upto)?;
    raise_synced(log, file, upto);
    Ok(upto)
}

/// Raises the synced word of `file` to `upto`, which a flush that began
/// after every byte below it was written has made durable.
fn raise_synced(log: &Log<'_>, file: &LogFile, upto: u64) {
    file.set_synced(upto);
    if let Some(w) = file.synced() {
        log.hooks
            .word(&file.path, format::H_SYNCED, format::encode_offset(w));
    }
}
