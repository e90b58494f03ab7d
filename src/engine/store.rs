//! `LogStore`: the facade. It opens a store (recovery, repair, the
//! background thread) and turns the `SessionStore` calls into the read
//! path, the write path and compaction; it holds no mechanism of its own.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::Expiry;
use crate::engine::backup::{self, BackupReport};
use crate::engine::commit::GroupCommit;
use crate::engine::file::Site;
use crate::engine::file::View;
use crate::engine::format::{self, HEADER_SIZE};
use crate::engine::lock::LockFile;
use crate::engine::options::LogOptions;
use crate::engine::pending::Pending;
use crate::engine::policy::StorePolicy;
use crate::engine::read::{decode_at, latest, latest_at, live, owned_live, put_of};
use crate::engine::recovery::{self, Opened, SyncAfterReplay};
use crate::engine::reserve;
use crate::engine::shared::Inner;
use crate::engine::state::{State, StateLock};
use crate::engine::stats::{CompactStats, RecoveryReport, Stats};
use crate::engine::writeback::Writeback;
use crate::engine::{background, compact, write};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::observe::{self, Backend, Meters, Op};
use crate::options::SyncPolicy;
use crate::owner::{Owner, SessionInfo, newest_first};
use crate::poison::Poison;
use crate::session::{
    SaveMode, Session, SessionRef, duration_millis, expires_from_millis, expires_millis,
    from_millis, to_millis,
};
use crate::stop::StopSignal;
use crate::store::{SessionIter, SessionStore, Touch};
use crate::store_dir::{self, StoreDir};
use crate::trust;

/// The log-structured session store: one append-only, checksummed log file
/// shared by every process that opens it, an in-memory index, and reads
/// served from a memory map. See DESIGN.md.
///
/// A handle belongs to the process that opened it. In a child after
/// `fork()` (where its background thread and in-process locks did not
/// follow, and its file locks are shared with the parent) every call
/// returns [`Error::OtherProcess`] without touching anything, and dropping
/// it there does nothing (no join, no flush, no file written or unlocked):
/// open the store again in the child.
pub struct LogStore {
    inner: Arc<Inner>,
    background: Option<JoinHandle<()>>,
    /// The thread that writes back behind the writers.
    writeback: Option<JoinHandle<()>>,
    /// The process that opened the handle.
    pid: u32,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl LogOptions {
    /// Opens (or creates) the store at `path`.
    pub fn open(self, path: impl AsRef<Path>) -> Result<LogStore> {
        self.validate()?;
        LogStore::open_with(path.as_ref(), self)
    }
}

/// The refusal of an open whose options contradict the store's policy.
fn policy_mismatch(path: &Path, what: &str, asked: &str, recorded: &str) -> Error {
    let what_no_limit = |v: &str| {
        if v == "none" && what == "max_idle" {
            "no idle limit".to_owned()
        } else {
            v.to_owned()
        }
    };
    Error::InvalidOption(format!(
        "{}: opened with {what} {}, but the store records {}, which every process applies; \
         open without {what} to follow the store, or change it with LogStore::set_policy or \
         set_max_idle (`sessionlog policy`)",
        path.display(),
        what_no_limit(asked),
        what_no_limit(recorded)
    ))
}

impl LogStore {
    /// Opens (or creates) the store at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<LogStore> {
        LogOptions::default().open(path)
    }

    /// A builder for the options of a store.
    pub fn options() -> LogOptions {
        LogOptions::default()
    }

    fn open_with(path: &Path, opts: LogOptions) -> Result<LogStore> {
        // The lock, the temporary files and compaction's rename follow the
        // file, not the name it was opened by.
        let path = &trust::resolve(path)?;
        let meters = if opts.observed {
            Meters::for_path(Backend::Log, path)
        } else {
            Meters::silent(Backend::Log, path)
        };
        let _span = meters.span("open");
        let name = path
            .file_name()
            .ok_or_else(|| trust::refusal(path, "not a file name"))?
            .to_owned();
        // The directory is opened once: every file of the store is reached
        // through this descriptor from here on (DESIGN.md §14).
        let dir = StoreDir::open(trust::parent(path))?;
        dir.check_mode(opts.allow_others_to_write_directory)?;
        let found = dir.stat(&name).map_err(|e| Error::io(path, "stat", e))?;
        let owner = store_dir::claim(&dir, found, path, opts.maintain_as_owner)?;
        let site = Site::new(Arc::new(dir.acting_as(owner)), name);
        // Reject a file that is not a store before creating anything beside it.
        recovery::precheck(&site, opts.repair)?;
        let lock = LockFile::open(site.sibling(".lock"), owner, opts.lock_timeout)?;
        let mut report = RecoveryReport::default();
        let now = to_millis(opts.clock.now());
        let when = if opts.background {
            SyncAfterReplay::Later
        } else {
            SyncAfterReplay::Now
        };
        let recovering = observe::step_span("recovery");
        let opened = recovery::open_log(
            &site,
            &lock,
            &mut report,
            now,
            when,
            &opts.hooks,
            &opts.policy(),
        )?;
        drop(recovering);
        let (state, sync_pending) = match opened {
            // A file at the last generation cannot be compacted: repair
            // numbers the store's files from 1 again.
            Opened::Ready { state, .. }
                if opts.repair
                    && format::next_generation(state.file.header.generation).is_none() =>
            {
                drop(state);
                (compact::repair(&site, &lock, &mut report, now)?, false)
            }
            Opened::Ready {
                state,
                sync_pending,
            } => (state, sync_pending),
            Opened::Damaged(offset, reason) if !opts.repair => {
                return Err(Error::corrupt(path, offset, reason));
            }
            Opened::Damaged(..) => (compact::repair(&site, &lock, &mut report, now)?, false),
        };
        if let Some(recorded) = state.file.policy
            && let Some((what, asked, has)) = opts.contradicts(&recorded)
        {
            return Err(policy_mismatch(path, what, &asked, &has));
        }
        // Best effort: a store on a full disk still opens (`stats` shows
        // a reserve that is missing).
        reserve::ensure(&site, lock.owner, opts.space_reserve);
        lock.share()?;
        let commit = GroupCommit::new(
            opts.sync,
            state.file.header.generation,
            state.file.synced().unwrap_or(HEADER_SIZE),
            sync_pending,
        );
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            site,
            expiry: Expiry {
                clock: Arc::clone(&opts.clock),
                max_idle_ms: opts.max_idle.map(duration_millis),
            },
            hooks: opts.hooks.clone(),
            lock,
            state: StateLock::new(state),
            writer: Mutex::new(Vec::new()),
            compacting: Mutex::new(()),
            switching: Mutex::new(()),
            pending: Pending::default(),
            commit,
            poison: Poison::default(),
            open_sync_pending: AtomicBool::new(sync_pending),
            stop: StopSignal::default(),
            // Under `Always` the log grows by chunks written with zeros
            // and synced, which only a writer holding the lock may do.
            writeback: if opts.background && opts.sync != SyncPolicy::Always {
                Writeback::new(
                    opts.writeback_every,
                    true,
                    write::copies_into_map(opts.sync),
                )
            } else {
                Writeback::new(0, false, false)
            },
            recovery: Mutex::new(report),
            writes: std::sync::atomic::AtomicU64::new(0),
            compact_wanted: AtomicBool::new(false),
            live_totals: Mutex::new(None),
            meters,
            opts,
        });
        inner.publish_gauges();
        let background = if inner.opts.background {
            Some(background::spawn(Arc::clone(&inner))?)
        } else {
            None
        };
        let writeback = if inner.writeback.is_on() {
            Some(background::spawn_writeback(Arc::clone(&inner))?)
        } else {
            None
        };
        Ok(LogStore {
            inner,
            background,
            writeback,
            pid: crate::pid::current(),
        })
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// `Error::OtherProcess` unless this is the process that opened the
    /// handle (a child after `fork()` is not).
    fn in_this_process(&self) -> Result<()> {
        // Not `std::process::id()`: a system call on every load and save
        // (see `crate::pid`).
        let current = crate::pid::current();
        if current == self.pid {
            return Ok(());
        }
        Err(Error::OtherProcess {
            path: self.inner.path.clone(),
            opened_by: self.pid,
            current,
        })
    }

    /// Makes every save acknowledged so far durable (one `fdatasync`).
    pub fn sync(&self) -> Result<()> {
        self.in_this_process()?;
        self.inner.sync_all()
    }

    /// Writes `session` exactly as given (data, deadline, modification time
    /// and version), replacing any stored session with this id. For admin
    /// tools restoring a backup (`sessionlog import`); web servers save with
    /// `save_session`. A session never saved (version 0, no modification
    /// time) is written as version 1 at the store's time.
    pub fn restore_session(&self, session: &Session) -> Result<()> {
        self.in_this_process()?;
        self.inner
            .meters
            .call(Op::Save, || write::restore(&self.inner, session))
    }

    /// The rules every process applies to this store: the ones it records
    /// (DESIGN.md §9), or, for a store an earlier build wrote that records
    /// none yet, this handle's options (until its next compaction records
    /// them).
    pub fn policy(&self) -> Result<StorePolicy> {
        Ok(self.stats()?.policy)
    }

    /// The idle limit every process applies to this store (see
    /// [`policy`](LogStore::policy)).
    pub fn max_idle(&self) -> Result<Option<Duration>> {
        Ok(self.policy()?.max_idle)
    }

    /// Records new rules in the store. A compaction writes them into the
    /// new file's header, and every process applies them from its next
    /// operation on, whatever options it was opened with. Sessions idle
    /// past the old or the new limit are dropped: a longer limit does not
    /// bring back what the old one ended. A lower quota removes nothing:
    /// saves are refused (or evict) until the store is under it.
    pub fn set_policy(&self, policy: StorePolicy) -> Result<CompactStats> {
        self.in_this_process()?;
        crate::options::Validate::max_idle(policy.max_idle)?;
        if policy.max_sessions == Some(0) || policy.max_bytes == Some(0) {
            return Err(Error::InvalidOption(
                "max_sessions and max_bytes must be at least 1 (None for no quota)".into(),
            ));
        }
        self.inner.check_lock_file()?;
        let c = compact::compact(&self.inner.compaction(), None, Some(policy.to_format()))?;
        self.inner.publish_gauges();
        Ok(c)
    }

    /// Records a new idle limit in the store (`None`: none), keeping the
    /// rest of its policy: see [`set_policy`](LogStore::set_policy).
    pub fn set_max_idle(&self, max_idle: Option<Duration>) -> Result<CompactStats> {
        let policy = self.policy()?;
        self.set_policy(StorePolicy { max_idle, ..policy })
    }

    /// Rewrites the live sessions into a new file and swaps it in, dropping
    /// expired and idle sessions (see DESIGN.md). Waits for a compaction
    /// running in this or another process to finish first, at most the
    /// lock timeout ([`LogOptions::lock_timeout`](crate::LogOptions::lock_timeout)):
    /// then [`Error::Busy`], nothing changed.
    pub fn compact(&self) -> Result<CompactStats> {
        self.in_this_process()?;
        self.inner.check_lock_file()?;
        let c = compact::compact(&self.inner.compaction(), None, None)?;
        self.inner.publish_gauges();
        Ok(c)
    }

    /// Runs `f` while this handle holds the store's write lock (the
    /// in-process mutex and the file lock): every other writer, in any
    /// process, waits. For crash tests; not part of the stable API.
    #[cfg(feature = "unstable-internals")]
    #[doc(hidden)]
    pub fn with_write_lock<R>(&self, f: impl FnOnce() -> R) -> Result<R> {
        self.in_this_process()?;
        let _writer = self.inner.writer.lock();
        let _lock = self.inner.lock.lock()?;
        Ok(f())
    }

    /// Writes a compacted, fsynced copy of the store to `dest` (mode
    /// 0600) while other handles and processes keep writing: it holds
    /// every write acknowledged before the call took the write lock (held
    /// only to read the committed end), and no later one, each record
    /// whole. The copy is checked before it gets its name; an existing
    /// `dest` is refused unless `overwrite`. Expired sessions are dropped
    /// by the copy's compaction. See DESIGN.md, "Online backup".
    pub fn backup_to(&self, dest: impl AsRef<Path>, overwrite: bool) -> Result<BackupReport> {
        self.in_this_process()?;
        let maintain = self.inner.opts.maintain_as_owner;
        backup::backup(&self.inner, dest.as_ref(), overwrite, |tmp| {
            let copy = LogStore::options()
                .unobserved()
                .background(false)
                .maintain_as_owner(maintain)
                .open(tmp)?;
            copy.compact()?;
            copy.sync()
        })
    }

    /// Size and health figures of the store, as this process sees it.
    /// With the `metrics` feature, also sets the store's gauges
    /// ([`Stats::gauges`]).
    pub fn stats(&self) -> Result<Stats> {
        self.in_this_process()?;
        let inner = &self.inner;
        inner.check_file_len()?;
        let st = inner.fresh()?;
        let stats = inner.stats_of(&st)?;
        drop(st);
        inner.meters.gauges(&stats.gauges());
        Ok(stats)
    }
}

impl LogStore {
    /// Calls `f` with the session with this id, if it exists and has not
    /// expired, and returns what `f` returned. The data `f` sees is a slice
    /// of the log's memory map, checked against its record's checksum:
    /// nothing is copied, so a caller that decodes the session (a web
    /// framework's map of values) needs no intermediate `Vec`.
    ///
    /// No lock of the store is held while `f` runs (the mapped file is kept
    /// alive by a reference count, even if a compaction replaces it
    /// meanwhile), so `f` may take its time and may call the store; what it
    /// sees is the session as it was when the call looked it up.
    /// [`load_session`](SessionStore::load_session) copies the data while
    /// holding a read lock instead, and skips the reference count.
    pub fn load_with<R>(
        &self,
        id: &SessionId,
        f: impl FnOnce(SessionRef<'_>) -> R,
    ) -> Result<Option<R>> {
        self.in_this_process()?;
        self.inner
            .meters
            .call(Op::Load, || self.load_with_unmetered(id, f))
    }

    fn load_with_unmetered<R>(
        &self,
        id: &SessionId,
        f: impl FnOnce(SessionRef<'_>) -> R,
    ) -> Result<Option<R>> {
        let key = id.as_bytes();
        // Under the read lock, only the index lookup; the record is decoded
        // and checked after the lock is released.
        let found = self.inner.with_fresh(|st| {
            Ok(st
                .index
                .get(&st.view(), key)
                .map(|offset| (Arc::clone(&st.file), st.applied, offset)))
        })?;
        let Some((file, end, offset)) = found else {
            return Ok(None);
        };
        // SAFETY: `end` is the committed end the state this process read it
        // with had applied, checked then against the file's length; records
        // below a committed end are never rewritten, and `file` (with its
        // map) lives as long as this view.
        let view = unsafe { View::new(&file, end) };
        let l = latest_at(&view, offset, key)?;
        if self
            .inner
            .expiry
            .expired_now(file.recorded_idle(), l.rec.modified_ms, l.rec.expires_ms)
        {
            self.inner.meters.expired_on_read();
            return Ok(None);
        }
        let put = put_of(&view, &l)?;
        let owner = stored_owner(put.owner);
        Ok(Some(f(SessionRef::new(
            id,
            put.data,
            expires_from_millis(l.rec.expires_ms),
            from_millis(l.rec.modified_ms),
            l.rec.version,
        )
        .with_owner(owner.as_ref()))))
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        if crate::pid::current() != self.pid {
            // Inherited through fork(): the background thread does not
            // exist here (joining it would wait forever or panic), a mutex
            // may have been held by a thread of the parent at the fork,
            // and the file locks are the parent's. Touch nothing; the
            // thread's share of `inner` keeps the rest from being dropped.
            for h in [self.background.take(), self.writeback.take()]
                .into_iter()
                .flatten()
            {
                std::mem::forget(h);
            }
            return;
        }
        self.inner.stop.stop();
        self.inner.writeback.signal.stop();
        for h in [self.background.take(), self.writeback.take()]
            .into_iter()
            .flatten()
        {
            let _ = h.join();
        }
        if self.inner.opts.sync != SyncPolicy::Never && !self.inner.poison.is_set() {
            // Errors cannot be returned from drop (they are counted and
            // traced); a failed sync poisons nothing that outlives this
            // handle.
            if let Err(e) = self.inner.sync_all() {
                self.inner.meters.background_error("sync on close", &e);
            }
            // Likewise: without the hint, the next open replays the log.
            if let Err(e) = compact::hint_on_close(&self.inner.compaction()) {
                self.inner.meters.background_error("hint on close", &e);
            }
        }
    }
}

/// Reads a live session from a fresh view.
fn read_session(inner: &Inner, st: &State, id: &SessionId, now: u64) -> Result<Option<Session>> {
    let Some(l) = latest(&st.index, &st.view(), id.as_bytes())? else {
        return Ok(None);
    };
    if inner.expiry.expired(
        st.file.recorded_idle(),
        l.rec.modified_ms,
        l.rec.expires_ms,
        now,
    ) {
        inner.meters.expired_on_read();
        return Ok(None);
    }
    let put = put_of(&st.view(), &l)?;
    let mut s = Session::restore(
        id.clone(),
        put.data.to_vec(),
        expires_from_millis(l.rec.expires_ms),
        from_millis(l.rec.modified_ms),
        l.rec.version,
    );
    s.owner = stored_owner(put.owner);
    Ok(Some(s))
}

/// The owner of a put record (checked when it was decoded), `None` for none.
fn stored_owner(bytes: &[u8]) -> Option<Owner> {
    if bytes.is_empty() {
        None
    } else {
        Owner::from_stored(bytes)
    }
}

impl SessionStore for LogStore {
    fn setup(&self) -> Result<()> {
        self.in_this_process()?;
        self.inner
            .meters
            .call(Op::Setup, || self.inner.with_fresh(|_| Ok(())))
    }

    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        self.in_this_process()?;
        self.inner.meters.call(Op::Load, || {
            let now = self.inner.now_ms();
            self.inner
                .with_fresh(|st| read_session(&self.inner, st, id, now))
        })
    }

    fn load_session_with(&self, id: &SessionId, f: &mut dyn FnMut(SessionRef<'_>)) -> Result<bool> {
        Ok(self.load_with(id, f)?.is_some())
    }

    fn save(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        self.in_this_process()?;
        self.inner
            .meters
            .call(Op::Save, || write::save(&self.inner, session, mode))
    }

    /// Keeps the session's modification time and version
    /// ([`LogStore::restore_session`]). Without `overwrite`, the check for
    /// a live session and the write are two steps: a save made here in
    /// between is replaced.
    fn copy_in(&self, session: &Session, overwrite: bool) -> Result<bool> {
        if !overwrite && self.has_session(&session.id)? {
            return Ok(false);
        }
        LogStore::restore_session(self, session)?;
        Ok(true)
    }

    fn touch(&self, id: &SessionId, touch: Touch) -> Result<bool> {
        self.in_this_process()?;
        let expires = match touch {
            Touch::Idle => None,
            Touch::Until(expires) => Some(expires_millis(expires)),
        };
        self.inner
            .meters
            .call(Op::Touch, || write::touch(&self.inner, id, expires))
    }

    fn delete_session(&self, id: &SessionId) -> Result<bool> {
        self.in_this_process()?;
        self.inner
            .meters
            .call(Op::Delete, || write::delete(&self.inner, id))
    }

    /// Only under `SyncPolicy::Always`, where a write waits for the flush.
    fn may_block(&self) -> bool {
        self.inner.opts.sync == SyncPolicy::Always
    }

    fn has_session(&self, id: &SessionId) -> Result<bool> {
        self.in_this_process()?;
        self.inner.meters.call(Op::Has, || {
            let now = self.inner.now_ms();
            self.inner
                .with_fresh(|st| Ok(live(st, &self.inner.expiry, id, now)?.is_some()))
        })
    }

    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        self.in_this_process()?;
        let now = self.inner.now_ms();
        let ids: Vec<SessionId> = self.inner.with_fresh(|st| {
            let view = st.view();
            let mut ids = Vec::with_capacity(st.index.len());
            for off in st.index.offsets() {
                let rec = decode_at(&view, off)?;
                if !self.inner.expiry.expired(
                    st.file.recorded_idle(),
                    rec.modified_ms,
                    rec.expires_ms,
                    now,
                ) && let Some(id) = SessionId::from_stored(rec.id)
                {
                    ids.push(id);
                }
            }
            Ok(ids)
        })?;
        Ok(Box::new(
            ids.into_iter()
                .filter_map(move |id| self.load_session(&id).transpose()),
        ))
    }

    /// From the owner index: costs what the owner has, not what the store
    /// holds.
    fn sessions_of(&self, owner: &Owner) -> Result<Vec<SessionInfo>> {
        self.in_this_process()?;
        let now = self.inner.now_ms();
        // Ties of `modified` go by the order of the appends, as for the
        // owner limit.
        let list = self.inner.with_fresh(|st| {
            let owned = owned_live(st, &self.inner.expiry, owner.as_str().as_bytes(), now)?;
            Ok(owned
                .iter()
                .filter_map(|o| {
                    let id = SessionId::from_stored(o.latest.rec.id)?;
                    let info = SessionInfo::new(
                        id,
                        Some(owner.clone()),
                        from_millis(o.latest.rec.modified_ms),
                        expires_from_millis(o.latest.rec.expires_ms),
                        o.latest.rec.version,
                        o.put.data.len(),
                    );
                    Some((info, o.latest.offset))
                })
                .collect::<Vec<_>>())
        })?;
        Ok(newest_first(list))
    }

    /// One append of a delete record per session, decided under the write
    /// lock: a session saved for `owner` by any process before this call
    /// takes the lock is deleted, one saved after survives.
    fn delete_sessions_of(&self, owner: &Owner, keep: Option<&SessionId>) -> Result<usize> {
        self.in_this_process()?;
        self.inner.meters.call(Op::Owner, || {
            write::delete_owned(
                &self.inner,
                owner.as_str().as_bytes(),
                keep.map(|k| k.as_str().as_bytes()),
            )
        })
    }

    /// A compaction that leaves out every session of `owner` (and every
    /// older record of theirs), swapped in by a rename: see DESIGN.md §9.1
    /// for what remains where, and why a crash leaves them all there or
    /// all erased.
    fn erase_sessions_of(&self, owner: &Owner) -> Result<usize> {
        self.in_this_process()?;
        self.inner.meters.call(Op::Owner, || {
            self.inner.check_lock_file()?;
            compact::compact_erasing(&self.inner.compaction(), owner.as_str().as_bytes())
        })
    }

    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize> {
        self.in_this_process()?;
        let stats = self.inner.meters.call(Op::Expire, || {
            compact::compact(
                &self.inner.compaction(),
                Some(duration_millis(max_idle)),
                None,
            )
        })?;
        self.inner.publish_gauges();
        Ok(usize::try_from(stats.dropped).unwrap_or(usize::MAX))
    }

    fn is_thread_safe(&self) -> bool {
        true
    }

    fn is_multiprocess_safe(&self) -> bool {
        true
    }
}
