//! What the threads of one `LogStore` handle share: the lock file, this
//! process's view of the log, its writer mutex, group commit, poisoning
//! and the options. The facade, the write path, compaction and the
//! background thread all work through it; it knows none of them.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use crossbeam_utils::sync::ShardedLockWriteGuard;
use parking_lot::Mutex;

use crate::clock::Expiry;
use crate::engine::commit::{GroupCommit, Log};
use crate::engine::compact::Handles;
use crate::engine::file::Site;
use crate::engine::follow::Follow;
use crate::engine::format::{self, HEADER_SIZE};
use crate::engine::hook::Hooks;
use crate::engine::index::live_len;
use crate::engine::lock::LockFile;
use crate::engine::options::LogOptions;
use crate::engine::pending::Pending;
use crate::engine::policy::LiveTotals;
use crate::engine::policy::StorePolicy;
use crate::engine::reserve;
use crate::engine::state::{State, StateLock};
use crate::engine::stats::{BackgroundError, CompactStats, RecoveryReport, Stats};
use crate::engine::writeback::Writeback;
use crate::error::Result;
use crate::observe::Meters;
use crate::poison::Poison;
use crate::session::from_millis;
use crate::stop::StopSignal;

/// Everything the store's threads share.
///
/// Lock order, always: `writer` (in-process) → the file lock (between
/// processes) → `state`. Readers take only `state`, shared.
pub(crate) struct Inner {
    pub path: PathBuf,
    pub opts: LogOptions,
    pub expiry: Expiry,
    pub hooks: Hooks,
    pub lock: LockFile,
    /// This process's view.
    pub state: StateLock,
    /// Serializes this process's writers (before the file lock) and holds
    /// the buffer records are encoded into.
    pub writer: Mutex<Vec<u8>>,
    /// Serializes this process's compactions.
    pub compacting: Mutex<()>,
    /// One thread at a time builds the index of a file a compaction
    /// swapped in (see `Follow::fresh`).
    pub switching: Mutex<()>,
    /// The read-ahead of another process's compaction hint.
    pub pending: Pending,
    pub commit: GroupCommit,
    pub poison: Poison,
    /// Records replayed on open were never synced: the background thread
    /// syncs them once, whatever the policy.
    pub open_sync_pending: AtomicBool,
    /// Raised to stop the background thread; woken for an early round.
    pub stop: StopSignal,
    /// Wakes (and stops) the writeback thread.
    pub writeback: Writeback,
    pub recovery: Mutex<RecoveryReport>,
    /// Set when a save found expired sessions holding the quota's room:
    /// the background thread compacts at its next tick.
    pub compact_wanted: AtomicBool,
    /// The quota check's last count of live sessions (under the writer
    /// mutex and the write lock, like every use of it).
    pub live_totals: Mutex<Option<LiveTotals>>,
    /// Writes through this handle, for the periodic lock-file check.
    pub writes: std::sync::atomic::AtomicU64,
    /// The log's directory (opened once for the handle's life) and name.
    pub site: Site,
    /// What the store reports (metrics, traces).
    pub meters: Meters,
}

impl Inner {
    /// The store's time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.expiry.now_ms()
    }

    /// How this handle follows other processes.
    pub fn follow(&self) -> Follow<'_> {
        Follow {
            path: &self.path,
            site: &self.site,
            lock: &self.lock,
            writer: &self.writer,
            commit: &self.commit,
            state: &self.state,
            switching: &self.switching,
            pending: &self.pending,
            hooks: &self.hooks,
        }
    }

    /// What group commit works on.
    pub fn log(&self) -> Log<'_> {
        Log {
            path: &self.path,
            state: &self.state,
            poison: &self.poison,
            hooks: &self.hooks,
            meters: &self.meters,
            lock: &self.lock,
            site: &self.site,
        }
    }

    /// What a compaction works with.
    pub fn compaction(&self) -> Handles<'_> {
        Handles {
            path: &self.path,
            site: &self.site,
            follow: self.follow(),
            state: &self.state,
            compacting: &self.compacting,
            expiry: &self.expiry,
            hooks: &self.hooks,
            poison: &self.poison,
            reserve: self.opts.space_reserve,
            policy: self.opts.policy(),
            meters: &self.meters,
        }
    }

    /// The state, locked for writing and up to date with the file (a new
    /// file's index built without the lock: see `Follow::fresh`).
    pub fn fresh(&self) -> Result<ShardedLockWriteGuard<'_, State>> {
        self.follow().fresh()
    }

    /// Poisons the handle unless its lock file is still the store's (see
    /// `LockFile::is_current`).
    pub fn check_lock_file(&self) -> Result<()> {
        if !self.lock.is_current()? {
            self.poison.set_cause(format!(
                "check of the lock file: {} was removed or replaced while the store was open, \
                 so writes through this handle would no longer exclude other processes; \
                 reopen the store",
                self.lock.path().display()
            ));
        }
        self.poison.check(&self.path)
    }

    /// Poisons the handle for reads too if the log file is shorter than
    /// what this process has read of it: something truncated it under the
    /// map, and touching the lost pages would raise SIGBUS.
    pub fn check_file_len(&self) -> Result<()> {
        let (file, applied) = {
            let st = self.state.read();
            (std::sync::Arc::clone(&st.file), st.applied)
        };
        let len = file.file_len()?;
        if len < applied {
            self.poison.set_fatal(format!(
                "check of the file's length: the log was truncated to {len} bytes under the \
                 store (it holds {applied}); reopen the store, and find what truncated it"
            ));
        }
        self.poison.check_read(&self.path)
    }

    /// Syncs everything appended so far and records that in the header.
    pub fn sync_all(&self) -> Result<()> {
        self.commit.sync_all(&self.log())
    }

    /// Runs `f` on a view that includes every save completed before the
    /// call: the shared lock when nothing changed (no system call), else
    /// the exclusive lock after catching up.
    pub fn with_fresh<R>(&self, f: impl Fn(&State) -> Result<R>) -> Result<R> {
        self.poison.check_read(&self.path)?;
        {
            let st = self.state.read();
            self.pending.watch(&st.file, self.lock.owner, &self.hooks);
            if st.is_fresh() {
                return f(&st);
            }
        }
        let st = self.fresh()?;
        f(&st)
    }

    /// The store's figures from `st`, this handle's view (up to date for
    /// `LogStore::stats`; as it is, under the shared lock, for the
    /// background thread's gauges).
    pub fn stats_of(&self, st: &State) -> Result<Stats> {
        let inner = self;
        let now = inner.now_ms();
        let view = st.view();
        let mut expired = 0u64;
        let mut used_bytes = 0u64;
        for off in st.index.offsets() {
            if let Some((modified, expires)) = format::peek_times(view.tail(off))
                && inner
                    .expiry
                    .expired(st.file.recorded_idle(), modified, expires, now)
            {
                expired += 1;
            } else {
                used_bytes += live_len(&view, off);
            }
        }
        let log_bytes = st.applied - HEADER_SIZE;
        let live = st.index.live_bytes();
        let h = st.file.header;
        let policy =
            StorePolicy::from_format(&st.file.policy.unwrap_or_else(|| inner.opts.policy()));
        Ok(Stats {
            policy,
            used_bytes,
            policy_recorded: st.file.policy.is_some(),
            reserve_bytes: reserve::held(&inner.site),
            reserve_target: inner.opts.space_reserve,
            free_bytes: reserve::free_bytes(&inner.site),
            sessions: st.index.len() as u64,
            expired,
            live_bytes: live,
            log_bytes,
            file_bytes: st.file.file_len()?,
            garbage_ratio: if log_bytes == 0 {
                0.0
            } else {
                log_bytes.saturating_sub(live) as f64 / log_bytes as f64
            },
            generation: h.generation,
            index_bytes: st.index.heap_bytes(),
            recovery: inner.recovery.lock().clone(),
            last_compaction: (h.generation > 1).then(|| CompactStats {
                kept: h.compact_kept,
                dropped: h.compact_dropped,
                bytes_before: h.compact_source_bytes,
                bytes_after: h.compact_result_bytes,
                generation: h.generation,
                finished: from_millis(h.created_ms),
            }),
            last_background_error: inner.lock.status().map(|(at, message)| BackgroundError {
                at: from_millis(at),
                message,
            }),
        })
    }

    /// Sets the store's gauges from `st` (as it is), if a recorder keeps
    /// them: the background thread's refresh.
    pub fn publish_gauges(&self) {
        if !self.meters.is_recording() {
            return;
        }
        let stats = {
            let st = self.state.read();
            self.stats_of(&st)
        };
        match stats {
            Ok(s) => self.meters.gauges(&s.gauges()),
            Err(e) => self.meters.background_error("gauge refresh", &e),
        }
    }
}
