//! `LogStore`: the facade that ties the layers together and implements
//! `SessionStore`.
//!
//! Lock order, always: `writer` (in-process) → the file lock (between
//! processes) → `state`. Readers take only `state`, shared.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::log::compact;
use crate::log::file::{self, LogFile, View};
use crate::log::format::{self, HEADER_SIZE, Kind, MAX_OFFSET, RecordFields, RecordRef};
use crate::log::hook::IoEvent;
use crate::log::index::Records;
use crate::log::lock::LockFile;
use crate::log::options::{LogOptions, SyncPolicy};
use crate::log::recovery::{self, Opened, State, SyncAfterReplay};
use crate::log::stats::{CompactStats, RecoveryReport, Stats};
use crate::log::sync::{self, SyncKind, SyncState};
use crate::session::{
    Session, check_size, duration_millis, expires_from_millis, expires_millis, from_millis,
    is_expired, next_version, to_millis,
};

/// The lock around a process's `State`.
pub(crate) struct StateLock(ShardedLock<State>);

impl StateLock {
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

/// Counts a writing thread as in flight while it lives, for the group
/// commit of `SyncPolicy::Always` (other policies have no sync to gather
/// for, and skip the shared counter).
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> Option<InFlight<'a>> {
        if inner.opts.sync != SyncPolicy::Always {
            return None;
        }
        inner.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(InFlight(inner))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A session's latest record (a put, or a touch of one) and its put.
pub(crate) struct Latest<'a> {
    /// Offset of the latest record.
    pub offset: u64,
    /// The latest record: its version, modified and expires are current.
    pub rec: RecordRef<'a>,
    /// Offset of the put holding the data.
    pub put_offset: u64,
}

/// Finds and checks the latest record of `id` in `view`.
pub(crate) fn latest<'a>(
    index: &crate::log::index::Index,
    view: &View<'a>,
    id: &[u8],
) -> Result<Option<Latest<'a>>> {
    let Some(offset) = index.get(view, id) else {
        return Ok(None);
    };
    let rec = decode_at(view, offset)?;
    if rec.id != id || rec.kind == Kind::Delete {
        return Err(Error::corrupt(
            &view.file.path,
            offset,
            "the index points at another record",
        ));
    }
    let put_offset = rec.touch_target().unwrap_or(offset);
    if put_offset > offset || put_offset < HEADER_SIZE {
        return Err(Error::corrupt(
            &view.file.path,
            offset,
            "a touch points at no put",
        ));
    }
    Ok(Some(Latest {
        offset,
        rec,
        put_offset,
    }))
}

/// Decodes the record at `offset` of `view`, as a typed error if damaged.
pub(crate) fn decode_at<'a>(view: &View<'a>, offset: u64) -> Result<RecordRef<'a>> {
    let file: &'a LogFile = view.file;
    let bytes = file.bytes(offset, view.end);
    warm(bytes);
    format::decode_record_salted(bytes, file.header.salt)
        .map_err(|e| Error::corrupt(&file.path, offset, e.to_string()))
}

/// Reads one byte of every cache line of the record at the start of
/// `bytes`, so that the memory system fetches them all at once (the loads
/// are independent) rather than one after another as the CRC walks them.
fn warm(bytes: &[u8]) {
    let Some(len) = format::peek_len(bytes) else {
        return;
    };
    let rec = &bytes[..len.min(bytes.len())];
    // Every 64-byte window of the record holds one of these points, so
    // every cache line inside it is read; the last byte covers the line
    // the record ends in.
    let mut x = rec.last().copied().unwrap_or(0);
    for i in (64..rec.len()).step_by(64) {
        x ^= rec[i];
    }
    std::hint::black_box(x);
}

/// The data of a session from its put (checked to be the right one).
pub(crate) fn put_data<'a>(view: &View<'a>, l: &Latest<'a>) -> Result<&'a [u8]> {
    if l.put_offset == l.offset {
        return Ok(l.rec.data);
    }
    let put = decode_at(view, l.put_offset)?;
    if put.kind != Kind::Put || put.id != l.rec.id {
        return Err(Error::corrupt(
            &view.file.path,
            l.put_offset,
            "a touch points at another record",
        ));
    }
    Ok(put.data)
}
use crate::store::{SessionIter, SessionStore};

/// The log-structured session store: one append-only, checksummed log file
/// shared by every process that opens it, an in-memory index, and reads
/// served from a memory map. See DESIGN.md.
pub struct LogStore {
    inner: Arc<Inner>,
    background: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// Everything the store's threads share.
pub(crate) struct Inner {
    pub path: PathBuf,
    pub opts: LogOptions,
    pub lock: LockFile,
    /// This process's view. Sharded: a reader locks one shard (no cache
    /// line shared between reading threads), a writer locks them all.
    pub state: StateLock,
    /// Serializes this process's writers (before the file lock) and holds
    /// the buffer records are encoded into.
    pub writer: Mutex<Vec<u8>>,
    /// Serializes this process's compactions.
    pub compacting: Mutex<()>,
    pub sync: Mutex<SyncState>,
    pub sync_done: Condvar,
    /// Threads between entering a write and finishing its append: a sync
    /// leader gives them a moment to join its group.
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// Set when something was appended since the last sync.
    pub dirty: AtomicBool,
    /// Records replayed on open were never synced: the background thread
    /// syncs them once, whatever the policy.
    pub open_sync_pending: AtomicBool,
    poisoned: AtomicBool,
    poison_cause: Mutex<String>,
    pub stop: Mutex<bool>,
    pub wake: Condvar,
    recovery: Mutex<RecoveryReport>,
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

    pub(crate) fn open_with(path: &Path, opts: LogOptions) -> Result<LogStore> {
        // Reject a file that is not a store before creating anything beside it.
        recovery::precheck(path)?;
        let lock = LockFile::open(file::sibling(path, ".lock"))?;
        let mut report = RecoveryReport::default();
        let now = to_millis(opts.clock.now());
        let mut sync_pending = false;
        let sync = if opts.background {
            SyncAfterReplay::Later(&mut sync_pending)
        } else {
            SyncAfterReplay::Now
        };
        let state = match recovery::open_log(path, &lock, &mut report, now, sync)? {
            Opened::Ready(state) => state,
            Opened::Damaged(offset, reason) if !opts.repair => {
                return Err(Error::corrupt(path, offset, reason));
            }
            Opened::Damaged(..) => compact::repair(path, &lock, &mut report, now)?,
        };
        lock.share()?;
        let sync = SyncState {
            generation: state.file.header.generation,
            synced: state.file.synced().unwrap_or(HEADER_SIZE),
            running: false,
            header_behind: false,
        };
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            lock,
            state: StateLock(ShardedLock::new(state)),
            writer: Mutex::new(Vec::new()),
            compacting: Mutex::new(()),
            sync: Mutex::new(sync),
            sync_done: Condvar::new(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            dirty: AtomicBool::new(sync_pending),
            open_sync_pending: AtomicBool::new(sync_pending),
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(String::new()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            recovery: Mutex::new(report),
            opts,
        });
        let background = if inner.opts.background {
            Some(sync::spawn_background(Arc::clone(&inner))?)
        } else {
            None
        };
        Ok(LogStore { inner, background })
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Makes every save acknowledged so far durable (one `fdatasync`).
    pub fn sync(&self) -> Result<()> {
        self.inner.sync_all()
    }

    /// Writes `session` exactly as given (data, deadline, modification time
    /// and version), replacing any stored session with this id. For admin
    /// tools restoring a backup (`sessionlog import`); web servers save with
    /// `save_session`. A session never saved (version 0, no modification
    /// time) is written as version 1 at the store's time.
    pub fn restore_session(&self, session: &Session) -> Result<()> {
        self.inner.restore(session)
    }

    /// Rewrites the live sessions into a new file and swaps it in, dropping
    /// expired and idle sessions (see DESIGN.md). Waits for a compaction
    /// running in another process to finish first.
    pub fn compact(&self) -> Result<CompactStats> {
        compact::compact(&self.inner, None)
    }

    /// Runs `f` while this handle holds the store's write lock (the
    /// in-process mutex and the file lock): every other writer, in any
    /// process, waits. For crash tests; not part of the stable API.
    #[doc(hidden)]
    pub fn with_write_lock<R>(&self, f: impl FnOnce() -> R) -> Result<R> {
        let _writer = self.inner.writer.lock();
        let _lock = self.inner.lock.lock()?;
        Ok(f())
    }

    /// Size and health figures of the store, as this process sees it.
    pub fn stats(&self) -> Result<Stats> {
        let inner = &self.inner;
        let mut st = inner.state.write();
        inner.refresh(&mut st)?;
        let now = inner.now_ms();
        let view = st.view();
        let mut expired = 0u64;
        for off in st.index.offsets() {
            if let Some((modified, expires)) = format::peek_times(view.from(off))
                && inner.expired(modified, expires, now)
            {
                expired += 1;
            }
        }
        let log_bytes = st.applied - HEADER_SIZE;
        let live = st.index.live_bytes();
        let h = st.file.header;
        Ok(Stats {
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
        })
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        *self.inner.stop.lock() = true;
        self.inner.wake.notify_all();
        if let Some(h) = self.background.take() {
            let _ = h.join();
        }
        if self.inner.opts.sync != SyncPolicy::Never && !self.inner.is_poisoned() {
            // Errors cannot be reported from drop; a failed sync poisons
            // nothing that outlives this handle.
            let _ = self.inner.sync_all();
        }
    }
}

impl Inner {
    pub fn now_ms(&self) -> u64 {
        to_millis(self.opts.clock.now())
    }

    pub fn max_idle_ms(&self) -> Option<u64> {
        self.opts.max_idle.map(duration_millis)
    }

    /// Whether a session with these times is gone at `now`.
    pub fn expired(&self, modified_ms: u64, expires_ms: u64, now: u64) -> bool {
        is_expired(modified_ms, expires_ms, self.max_idle_ms(), now)
    }

    /// The latest record of `id` if the session is live at `now`.
    fn live<'a>(&self, st: &'a State, id: &SessionId, now: u64) -> Result<Option<Latest<'a>>> {
        Ok(latest(&st.index, &st.view(), id.as_str().as_bytes())?
            .filter(|l| !self.expired(l.rec.modified_ms, l.rec.expires_ms, now)))
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Refuses all further writes: the on-disk state after a failed write
    /// or sync is unknown (the kernel may have dropped dirty pages).
    pub fn poison(&self, what: &str, err: &io::Error) {
        let mut cause = self.poison_cause.lock();
        if !self.is_poisoned() {
            *cause = format!("{what} ({err})");
            self.poisoned.store(true, Ordering::Release);
        }
    }

    fn check_poison(&self) -> Result<()> {
        if self.is_poisoned() {
            return Err(Error::Poisoned {
                path: self.path.clone(),
                cause: self.poison_cause.lock().clone(),
            });
        }
        Ok(())
    }

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
                &self.path,
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
                    &self.path,
                    end,
                    "committed length beyond the end of the file",
                ));
            }
        }
        if end > st.file.map_len() {
            st.file = Arc::new(st.file.remapped()?);
        }
        let mut records = 0;
        let (stop, err) = recovery::replay(&st.file, st.applied, end, &mut st.index, &mut records);
        if let Some(e) = err {
            st.applied = stop;
            st.applied_word = format::encode_offset(stop);
            return Err(Error::corrupt(&self.path, stop, e.to_string()));
        }
        st.applied = end;
        st.applied_word = word;
        Ok(())
    }

    /// The file was marked superseded: switch to the file now at the path
    /// if a compaction renamed one there; clear the mark if its compactor
    /// died before the rename.
    fn follow_swap(&self, st: &mut State) -> Result<()> {
        let current = LogFile::open(&self.path)?;
        if current.ino != st.file.ino {
            *st = recovery::load_complete(Arc::new(current))?;
            let mut s = self.sync.lock();
            s.generation = st.file.header.generation;
            s.synced = st.file.synced().unwrap_or(HEADER_SIZE);
            return Ok(());
        }
        // Still the current file: a compaction is between marking and
        // renaming (it holds the lock), or died there. Only a holder of the
        // lock may tell, and this thread must not block while holding
        // `state`: try both locks, in order.
        if let Some(_w) = self.writer.try_lock()
            && let Some(_g) = self.lock.try_lock()?
        {
            let again = LogFile::open(&self.path)?;
            if again.ino == st.file.ino {
                st.file.set_superseded(false);
            } else {
                *st = recovery::load_complete(Arc::new(again))?;
            }
        }
        Ok(())
    }

    /// Runs `f` holding every write lock with a fresh view, for one append.
    fn write<R>(
        &self,
        f: impl FnOnce(&Self, &mut State, &mut Vec<u8>, u64) -> Result<R>,
    ) -> Result<(R, u64, u64)> {
        self.check_poison()?;
        let _busy = InFlight::enter(self);
        let mut buf = self.writer.lock();
        let _lock = self.lock.lock()?;
        let mut st = self.state.write();
        self.refresh(&mut st)?;
        let now = self.now_ms();
        let r = f(self, &mut st, &mut buf, now)?;
        Ok((r, st.file.header.generation, st.applied))
    }

    /// Appends the encoded record in `buf` and publishes it.
    fn append(&self, st: &mut State, buf: &[u8]) -> Result<u64> {
        let off = st.applied;
        let end = off + buf.len() as u64;
        if end > MAX_OFFSET {
            return Err(Error::io(
                &self.path,
                "append",
                io::Error::from(io::ErrorKind::FileTooLarge),
            ));
        }
        if end > st.file_len {
            st.file_len = st.file.file_len()?;
            if end > st.file_len {
                self.hook(IoEvent::Grow {
                    path: &self.path,
                    len: end,
                })
                .map_err(|e| Error::io(&self.path, "grow file", e))?;
            }
            let zero_fill = self.opts.sync == SyncPolicy::Always;
            st.file_len = st.file.ensure_len(end, st.file_len, zero_fill)?;
        }
        let written = self
            .hook(IoEvent::Write {
                path: &self.path,
                offset: off,
                bytes: buf,
            })
            .and_then(|()| {
                let durable = self.opts.sync == SyncPolicy::Always;
                st.file.write_record(buf, off, st.file_len, durable)
            });
        if let Err(e) = written {
            self.poison("write", &e);
            return Err(Error::io(&self.path, "write", e));
        }
        st.applied_word = st.file.set_committed(end);
        self.hook_word(&st.file, format::H_COMMITTED, st.applied_word);
        st.applied = end;
        self.dirty.store(true, Ordering::Release);
        if end > st.file.map_len() {
            st.file = Arc::new(st.file.remapped()?);
        }
        Ok(off)
    }

    /// Encodes a record for the current file, appends it, publishes it and
    /// applies it to the index: the one way a write reaches the log.
    fn append_record(
        &self,
        st: &mut State,
        buf: &mut Vec<u8>,
        fields: &RecordFields<'_>,
    ) -> Result<u64> {
        buf.clear();
        format::encode_record_salted(buf, fields, st.file.header.salt);
        let offset = self.append(st, buf)?;
        let view = View {
            file: &st.file,
            end: st.applied,
        };
        match fields.kind {
            Kind::Put | Kind::Touch => {
                st.index.insert(&view, fields.id, offset);
            }
            Kind::Delete => {
                st.index.remove(&view, fields.id);
            }
        }
        Ok(offset)
    }

    /// Reports `event` to the I/O hook, if one is installed.
    pub fn hook(&self, event: IoEvent<'_>) -> io::Result<()> {
        match &self.opts.hook {
            Some(h) => h.before(&event),
            None => Ok(()),
        }
    }

    /// Reports a store to a shared header word.
    pub fn hook_word(&self, file: &LogFile, offset: usize, word: u64) {
        let _ = self.hook(IoEvent::Write {
            path: &file.path,
            offset: offset as u64,
            bytes: &word.to_le_bytes(),
        });
    }

    fn after_write(&self, generation: u64, end: u64) -> Result<()> {
        if self.opts.sync == SyncPolicy::Always {
            self.sync_to(generation, end, SyncKind::Range)?;
        }
        Ok(())
    }

    fn save(&self, session: &mut Session, check: bool) -> Result<()> {
        check_size(session, self.opts.max_session_size)?;
        let expires_ms = expires_millis(session.expires);
        let id = session.id.as_str().as_bytes();
        let ((version, now), generation, end) = self.write(|inner, st, buf, now| {
            let found = inner
                .live(st, &session.id, now)?
                .map_or(0, |l| l.rec.version);
            let version = next_version(
                session,
                found,
                if check {
                    crate::session::SaveMode::IfUnchanged
                } else {
                    crate::session::SaveMode::Overwrite
                },
            )?;
            inner.append_record(
                st,
                buf,
                &RecordFields {
                    kind: Kind::Put,
                    id,
                    data: &session.data,
                    version,
                    modified_ms: now,
                    expires_ms,
                },
            )?;
            Ok((version, now))
        })?;
        session.mark_saved(from_millis(now), version);
        self.after_write(generation, end)
    }

    fn restore(&self, session: &Session) -> Result<()> {
        check_size(session, self.opts.max_session_size)?;
        let id = session.id.as_str().as_bytes();
        let ((), generation, end) = self.write(|inner, st, buf, now| {
            inner.append_record(
                st,
                buf,
                &RecordFields {
                    kind: Kind::Put,
                    id,
                    data: &session.data,
                    version: session.version().max(1),
                    modified_ms: session.modified().map_or(now, to_millis),
                    expires_ms: expires_millis(session.expires),
                },
            )?;
            Ok(())
        })?;
        self.after_write(generation, end)
    }

    fn touch(&self, id: &SessionId) -> Result<bool> {
        let (touched, generation, end) = self.write(|inner, st, buf, now| {
            let Some(l) = inner.live(st, id, now)? else {
                return Ok(false);
            };
            let target = l.put_offset.to_le_bytes();
            inner.append_record(
                st,
                buf,
                &RecordFields {
                    kind: Kind::Touch,
                    id: id.as_str().as_bytes(),
                    data: &target,
                    version: l.rec.version,
                    modified_ms: now,
                    expires_ms: l.rec.expires_ms,
                },
            )?;
            Ok(true)
        })?;
        if touched {
            self.after_write(generation, end)?;
        }
        Ok(touched)
    }

    fn delete(&self, id: &SessionId) -> Result<bool> {
        let (existed, generation, end) = self.write(|inner, st, buf, now| {
            let Some((version, live)) =
                latest(&st.index, &st.view(), id.as_str().as_bytes())?.map(|l| {
                    (
                        l.rec.version,
                        !inner.expired(l.rec.modified_ms, l.rec.expires_ms, now),
                    )
                })
            else {
                return Ok(None);
            };
            inner.append_record(
                st,
                buf,
                &RecordFields {
                    kind: Kind::Delete,
                    id: id.as_str().as_bytes(),
                    data: &[],
                    version,
                    modified_ms: now,
                    expires_ms: 0,
                },
            )?;
            Ok(Some(live))
        })?;
        match existed {
            Some(live) => {
                self.after_write(generation, end)?;
                Ok(live)
            }
            None => Ok(false),
        }
    }

    /// Reads a session from a fresh view.
    fn read_session(&self, st: &State, id: &SessionId, now: u64) -> Result<Option<Session>> {
        let Some(l) = self.live(st, id, now)? else {
            return Ok(None);
        };
        let data = put_data(&st.view(), &l)?;
        Ok(Some(Session::restore(
            id.clone(),
            data.to_vec(),
            expires_from_millis(l.rec.expires_ms),
            from_millis(l.rec.modified_ms),
            l.rec.version,
        )))
    }

    /// Runs `f` on a view that includes every save completed before the
    /// call: the shared lock when nothing changed (no system call), else
    /// the exclusive lock after catching up.
    pub fn with_fresh<R>(&self, f: impl Fn(&State) -> Result<R>) -> Result<R> {
        {
            let st = self.state.read();
            if st.is_fresh() {
                return f(&st);
            }
        }
        let mut st = self.state.write();
        self.refresh(&mut st)?;
        f(&st)
    }
}

impl SessionStore for LogStore {
    fn setup(&self) -> Result<()> {
        self.inner.with_fresh(|_| Ok(()))
    }

    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        let now = self.inner.now_ms();
        self.inner
            .with_fresh(|st| self.inner.read_session(st, id, now))
    }

    fn save_session(&self, session: &mut Session) -> Result<()> {
        self.inner.save(session, false)
    }

    fn save_session_if_unchanged(&self, session: &mut Session) -> Result<()> {
        self.inner.save(session, true)
    }

    fn touch_session(&self, id: &SessionId) -> Result<bool> {
        self.inner.touch(id)
    }

    fn delete_session(&self, id: &SessionId) -> Result<bool> {
        self.inner.delete(id)
    }

    fn has_session(&self, id: &SessionId) -> Result<bool> {
        let now = self.inner.now_ms();
        self.inner
            .with_fresh(|st| Ok(self.inner.live(st, id, now)?.is_some()))
    }

    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        let now = self.inner.now_ms();
        let ids: Vec<SessionId> = self.inner.with_fresh(|st| {
            let view = st.view();
            let mut ids = Vec::with_capacity(st.index.len());
            for off in st.index.offsets() {
                let rec = decode_at(&view, off)?;
                if !self.inner.expired(rec.modified_ms, rec.expires_ms, now)
                    && let Some(id) = SessionId::from_stored(rec.id)
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

    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize> {
        let stats = compact::compact(&self.inner, Some(duration_millis(max_idle)))?;
        Ok(usize::try_from(stats.dropped).unwrap_or(usize::MAX))
    }

    fn is_thread_safe(&self) -> bool {
        true
    }

    fn is_multiprocess_safe(&self) -> bool {
        true
    }
}
