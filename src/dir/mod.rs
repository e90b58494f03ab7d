//! `DirStore`: one file per session in a directory.
//!
//! Every write builds the complete new file under a temporary name and
//! renames it over the old one, so a reader (which takes no lock) sees the
//! old file or the new one, whole, never a truncated or half-written file.
//! Writers serialize on an in-process mutex and then on an exclusive
//! `flock` of the directory's `.lock` file, so that a version check and the
//! write that follows are atomic across threads and processes.
//!
//! The file layout is described in `dir/file.rs`; every file operation
//! goes through the directory opened once (`dir/handle.rs`).

mod backup;
mod file;
mod handle;
mod migrate;
mod quota;

use std::collections::HashSet;
use std::fs::{DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, MutexGuard};

use crate::clock::{Clock, SharedClock, system_clock};
use crate::error::{Error, Remedy, Result};
use crate::id::SessionId;
use crate::observe::{Backend, Meters, Op};
use crate::options::DEFAULT_MAX_SESSION_SIZE;
use crate::options::{SyncPolicy, Validate};
use crate::owner::{Owner as SessionOwner, SessionInfo, newest_first};
use crate::poison::Poison;
use crate::session::{
    SaveMode, Session, check_size, duration_millis, expires_from_millis, expires_millis,
    from_millis, is_expired, next_version, to_millis,
};
use crate::stop::StopSignal;
use crate::store::{SessionIter, SessionStore, Touch};
use crate::trust::{self, Create};

use file::{
    LOCK_NAME, MARKER_NAME, MAX_FILE_LEN, Stamp, Stored, TEMP_PREFIX, decode_file, decode_named,
    encode_file, file_name, is_session_name, temp_name,
};
use handle::{Acceptance, DirHandle};

pub use backup::DirRestoreReport;

/// A temporary file this old belongs to a writer that died (live writers
/// rename theirs while holding the lock, within one write).
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);
/// Beyond this many files awaiting sync, forget their names and sync every
/// session file instead (bounds memory under `SyncPolicy::Never`).
const MAX_PENDING_NAMES: usize = 4096;

/// Settings for [`DirStore`], built with [`DirStore::options`].
#[derive(Clone, Debug)]
pub struct DirOptions {
    sync: SyncPolicy,
    max_idle: Option<Duration>,
    max_session_size: usize,
    max_sessions_per_owner: Option<usize>,
    clock: SharedClock,
    accept: Acceptance,
    max_sessions: Option<u64>,
    max_bytes: Option<u64>,
}

impl Default for DirOptions {
    fn default() -> Self {
        DirOptions {
            sync: SyncPolicy::Interval(Duration::from_secs(1)),
            max_idle: None,
            max_session_size: DEFAULT_MAX_SESSION_SIZE,
            max_sessions_per_owner: None,
            clock: system_clock(),
            accept: Acceptance::default(),
            max_sessions: None,
            max_bytes: None,
        }
    }
}

impl DirOptions {
    /// When writes reach stable storage. Default:
    /// `SyncPolicy::Interval(1 s)`.
    ///
    /// - `Always`: each session file is fsynced before it is renamed into
    ///   place and the directory is fsynced after every rename or unlink,
    ///   before the call returns: a write that returned survives a crash.
    /// - `Interval(d)`: nothing is fsynced inline. The store remembers what
    ///   it wrote and syncs it (the files, then the directory) at most about
    ///   `d` later, from a background thread (or during a write that comes
    ///   first), on [`DirStore::sync`], and when the store is dropped. A crash of the
    ///   machine (not just the process) can lose writes not yet synced,
    ///   and a session file replaced shortly before it may read back as
    ///   [`Error::Corrupt`]; saving or deleting that session repairs it.
    /// - `Never`: no fsync unless [`DirStore::sync`] is called; the
    ///   operating system writes back when it likes. Same crash caveats.
    ///
    /// Under every policy a crash of the process alone loses nothing that
    /// was returned as saved, and a reader never sees a partial file.
    pub fn sync(mut self, policy: SyncPolicy) -> DirOptions {
        self.sync = policy;
        self
    }

    /// Sessions not saved or touched for this long are treated as absent.
    /// Default: no limit.
    pub fn max_idle(mut self, max_idle: Duration) -> DirOptions {
        self.max_idle = Some(max_idle);
        self
    }

    /// Largest accepted session data in bytes. Default:
    /// [`DEFAULT_MAX_SESSION_SIZE`]
    /// (16 MiB). `open` rejects 0 and anything above 1 GiB.
    pub fn max_session_size(mut self, bytes: usize) -> DirOptions {
        self.max_session_size = bytes;
        self
    }

    /// At most `n` live sessions per owner: a save that would give an owner
    /// more deletes that owner's least recently modified others, under the
    /// directory's lock (so atomically across processes). The newest login
    /// wins. Each save with an owner then reads every session file. Default:
    /// no limit; `open` rejects 0.
    pub fn max_sessions_per_owner(mut self, n: usize) -> DirOptions {
        self.max_sessions_per_owner = Some(n);
        self
    }

    /// The clock used to stamp and expire sessions. Default: the system
    /// clock.
    pub fn clock(mut self, clock: impl Clock + 'static) -> DirOptions {
        self.clock = Arc::new(clock);
        self
    }

    /// A quota: at most this many live sessions; a save past it fails with
    /// [`Error::QuotaExceeded`] and writes nothing. Expired sessions never
    /// count (a save that finds them removes them). Every save then walks
    /// the directory (a `stat` a file, and a read of each when the quota is
    /// near): meant for the small stores DirStore suits. An option of this
    /// handle, not recorded in the directory: every process should set the
    /// same. Default: none.
    pub fn max_sessions(mut self, n: u64) -> DirOptions {
        self.max_sessions = Some(n);
        self
    }

    /// A quota: at most this many bytes of live session files (as
    /// [`max_sessions`](DirOptions::max_sessions)). Default: none.
    pub fn max_bytes(mut self, bytes: u64) -> DirOptions {
        self.max_bytes = Some(bytes);
        self
    }

    /// Opens a store whose directory other users may write (group- or
    /// world-writable), giving up the protection against them: such a user
    /// can remove, rename or link session files (DESIGN.md, the threat
    /// model). Implies [`DirOptions::allow_others_to_read_directory`].
    /// Default: off, and such a directory is refused with
    /// [`Error::Unsafe`].
    pub fn allow_others_to_write_directory(mut self, on: bool) -> DirOptions {
        self.accept.others_write = on;
        self
    }

    /// Opens a store whose directory grants its group or other users any
    /// access (read or search: `mode & 0o077` not zero), letting them see
    /// how many sessions there are and when each changed (the names are
    /// digests and the files mode 0600, so no session id or data).
    /// Default: off, and such a directory is refused with
    /// [`Error::Unsafe`]; a directory the store creates is 0700.
    pub fn allow_others_to_read_directory(mut self, on: bool) -> DirOptions {
        self.accept.others_read = on;
        self
    }

    /// Lets root open a store whose directory belongs to another user:
    /// maintenance (expiry, cleanup) of that user's store. Files the store
    /// creates are given to the directory's owner, and every operation is
    /// relative to the directory opened once, so the owner cannot redirect
    /// it by replacing the directory. Default: off, and a directory whose
    /// owner is not this process's effective user is refused with
    /// [`Error::Unsafe`], so that a process never adopts a store another
    /// user made at its path (such a user would read every session saved
    /// to it and could plant the sessions it serves). A process other than
    /// root opens only a directory of its own user, opted in or not.
    pub fn maintain_as_owner(mut self, on: bool) -> DirOptions {
        self.accept.other_owner = on;
        self
    }

    /// Opens the store in `dir`, creating the directory (mode 0700) if it
    /// is missing. A store written by an older version, whose files are
    /// named by the ids themselves, has them renamed to digest names first
    /// (once; see DESIGN.md §11).
    pub fn open(self, dir: impl AsRef<Path>) -> Result<DirStore> {
        Validate::max_session_size(self.max_session_size)?;
        Validate::sync(self.sync)?;
        Validate::max_idle(self.max_idle)?;
        if self.max_sessions == Some(0) || self.max_bytes == Some(0) {
            return Err(Error::InvalidOption(
                "max_sessions and max_bytes must be at least 1 (leave them unset for no quota)"
                    .into(),
            ));
        }
        if self.max_sessions_per_owner == Some(0) {
            return Err(Error::InvalidOption(
                "max_sessions_per_owner must be at least 1".into(),
            ));
        }
        let path = dir.as_ref();
        let meters = Arc::new(Meters::for_path(Backend::Dir, path));
        let _span = meters.span("open");
        let (dir, lock_file, open_lock) = loop {
            create_dir(path)?;
            let dir = Arc::new(DirHandle::open(path, self.accept)?);
            let lock_file = dir.open_file(LOCK_NAME, Create::IfMissing)?;
            if migrate::needed(&dir)? {
                lock_file
                    .lock()
                    .map_err(|e| Error::io(dir.at(LOCK_NAME), "lock", e))?;
                let done = if migrate::needed(&dir)? {
                    migrate::run(&dir).map(drop)
                } else {
                    Ok(())
                };
                let _ = lock_file.unlock();
                done?;
            }
            // Held shared while the store is open, so that a restore can
            // tell (dir/backup.rs); it waits while a restore runs. If the
            // restore swapped the directory meanwhile, open the new one.
            let open_lock = dir.open_file(MARKER_NAME, Create::No)?;
            open_lock
                .lock_shared()
                .map_err(|e| Error::io(dir.at(MARKER_NAME), "lock", e))?;
            if dir.is_at(path)? {
                break (dir, lock_file, open_lock);
            }
        };
        let state = Arc::new(Mutex::new(WriteState {
            pending: Pending::default(),
            last_sync: Instant::now(),
            poison: Poison::default(),
            last_written: SystemTime::UNIX_EPOCH,
        }));
        let flusher = match self.sync {
            SyncPolicy::Interval(d) => Some(Flusher::spawn(
                Arc::clone(&dir),
                Arc::clone(&state),
                Arc::clone(&meters),
                d,
            )?),
            _ => None,
        };
        Ok(DirStore {
            dir,
            lock_file,
            _open_lock: open_lock,
            state,
            flusher,
            sync: self.sync,
            clock: self.clock,
            max_idle_ms: self.max_idle.map(duration_millis),
            max_session_size: self.max_session_size,
            max_sessions: self.max_sessions,
            max_bytes: self.max_bytes,
            max_sessions_per_owner: self.max_sessions_per_owner,
            meters,
        })
    }
}

/// A store keeping each session in its own file in one directory: the
/// session2 `DirectorySessionStore`, done right.
///
/// Files are written to a temporary name and renamed into place (never
/// truncated in place), fsynced as the [`SyncPolicy`] says, created with
/// mode 0600 in a 0700 directory, and named by a digest of the id (the
/// one [`HashedIds`](crate::HashedIds) uses), so that listing the
/// directory reveals no id. The directory must belong to this process's
/// user and grant no one else access, unless the caller opts in by name
/// ([`DirOptions`]); it is opened once and every file operation is made
/// relative to it. Writers lock the directory, so several processes may
/// share it. A damaged file is reported as [`Error::Corrupt`]; other
/// sessions are unaffected.
///
/// ```
/// use sessionlog::{DirStore, Session, SessionId, SessionStore, SyncPolicy};
/// # fn main() -> sessionlog::Result<()> {
/// # let tmp = tempfile::tempdir().expect("tempdir");
/// # let dir = tmp.path().join("sessions");
/// let store = DirStore::options().sync(SyncPolicy::Always).open(&dir)?;
/// let mut s = Session::new(SessionId::generate(), b"user=42".to_vec());
/// store.save_session(&mut s)?;
/// let loaded = store.load_session(&s.id)?.expect("just saved");
/// assert_eq!((loaded.version(), loaded.data), (1, b"user=42".to_vec()));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DirStore {
    /// The directory, open for the store's life, and its owner.
    dir: Arc<DirHandle>,
    /// Open for the store's life; writers `flock` it (one handle per store).
    lock_file: File,
    /// `.hashed-names`, `flock`ed shared for the store's life: a restore
    /// takes it exclusively to know that no process has the store open.
    _open_lock: File,
    state: Arc<Mutex<WriteState>>,
    /// Makes `SyncPolicy::Interval` writes durable when no write comes.
    flusher: Option<Flusher>,
    sync: SyncPolicy,
    clock: SharedClock,
    max_idle_ms: Option<u64>,
    max_session_size: usize,
    max_sessions: Option<u64>,
    max_bytes: Option<u64>,
    max_sessions_per_owner: Option<usize>,
    /// What the store reports (metrics, traces).
    meters: Arc<Meters>,
}

/// The thread that syncs pending writes under `SyncPolicy::Interval`.
#[derive(Debug)]
struct Flusher {
    stop: Arc<StopSignal>,
    handle: Option<JoinHandle<()>>,
}

impl Flusher {
    fn spawn(
        dir: Arc<DirHandle>,
        state: Arc<Mutex<WriteState>>,
        meters: Arc<Meters>,
        every: Duration,
    ) -> Result<Flusher> {
        let stop = Arc::new(StopSignal::default());
        let signal = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("sessionlog-dir-sync".into())
            .spawn(move || {
                while !signal.wait(every) {
                    let mut st = state.lock();
                    if !st.poison.is_set()
                        && !st.pending.is_empty()
                        && st.last_sync.elapsed() >= every
                    {
                        // A failure poisons the store; writers then report
                        // it. Counted and traced here.
                        if let Err(e) = flush(&dir, &mut st, &meters) {
                            meters.background_error("interval sync", &e);
                        }
                    }
                }
            })
            .map_err(|e| {
                Error::io(
                    std::path::Path::new("sessionlog-dir-sync"),
                    "spawn thread",
                    e,
                )
            })?;
        Ok(Flusher {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What writers share, behind the in-process mutex.
#[derive(Debug)]
struct WriteState {
    /// Written but not yet fsynced.
    pending: Pending,
    /// When pending writes were last made durable.
    last_sync: Instant,
    /// Set when an fsync after a rename or unlink failed: the kernel may
    /// have dropped the pages, so the store refuses writes.
    poison: Poison,
    /// The modification time this store value last gave a session file.
    last_written: SystemTime,
}

/// Changes not yet known to be on stable storage.
#[derive(Debug, Default)]
struct Pending {
    /// Session files renamed into place but not fsynced.
    names: HashSet<String>,
    /// Too many names to track: sync every session file.
    all: bool,
    /// The directory itself changed (rename or unlink).
    dir: bool,
}

impl Pending {
    fn note(&mut self, name: Option<&str>) {
        self.dir = true;
        if let Some(name) = name
            && !self.all
        {
            self.names.insert(name.to_owned());
            if self.names.len() > MAX_PENDING_NAMES {
                self.all = true;
                self.names.clear();
            }
        }
    }

    fn is_empty(&self) -> bool {
        !self.dir && !self.all && self.names.is_empty()
    }
}

/// Holds both write locks; the file lock is released first.
struct WriteGuard<'a> {
    state: MutexGuard<'a, WriteState>,
    lock_file: &'a File,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // Closing the store's handle would release it too; an error here
        // leaves nothing to repair.
        let _ = self.lock_file.unlock();
    }
}

/// Creates the store's directory (mode 0700) if it is missing, and makes
/// the new entry durable in its parent.
fn create_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, "create directory", e))?;
    let parent = trust::parent(dir);
    File::open(parent)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(parent, "fsync", e))
}

/// Creates the new directory `dir` (mode 0700; an existing one is an
/// error) for a copy of a store.
fn create_dir_private(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, "create directory", e))
}

/// The bytes of the session file `name` in `dir` (a store's or a
/// backup's) and its modification time (the epoch if the file system gives
/// none); `None` if absent. A file longer than any session file can be is
/// refused as damaged, unread.
fn read_session_file(dir: &DirHandle, name: &str) -> Result<Option<(Vec<u8>, SystemTime)>> {
    let path = dir.at(name);
    let Some(mut f) = dir.open_read(name)? else {
        return Ok(None);
    };
    let meta = f.metadata().map_err(|e| Error::io(&path, "stat", e))?;
    let written = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let len = meta.len();
    if len > MAX_FILE_LEN {
        return Err(Error::corrupt_in(
            &path,
            MAX_FILE_LEN,
            "the file is longer than any session file can be",
            Remedy::ReplaceSessionFile,
        ));
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.read_to_end(&mut buf)
        .map_err(|e| Error::io(&path, "read", e))?;
    Ok(Some((buf, written)))
}

fn to_session(id: SessionId, s: Stored) -> Session {
    let mut session = Session::restore(
        id,
        s.data,
        expires_from_millis(s.stamp.expires_ms),
        from_millis(s.stamp.modified_ms),
        s.stamp.version,
    );
    session.owner = s.owner;
    session
}

impl DirStore {
    /// Opens the store in `dir` with default options (see [`DirOptions`]),
    /// creating the directory (mode 0700) if it is missing.
    pub fn open(dir: impl AsRef<Path>) -> Result<DirStore> {
        DirOptions::default().open(dir)
    }

    /// Options to open a store with, starting from the defaults.
    pub fn options() -> DirOptions {
        DirOptions::default()
    }

    /// The store's directory, as given to `open`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The user id the store's directory belongs to: every file of the
    /// store must belong to it too. This process's effective user unless
    /// the store was opened with [`DirOptions::maintain_as_owner`].
    pub fn owner_uid(&self) -> u32 {
        self.dir.owner().uid
    }

    /// Makes every write of this store value that is not yet durable
    /// durable now (files, then the directory), whatever the sync policy.
    pub fn sync(&self) -> Result<()> {
        let mut state = self.state.lock();
        self.flush(&mut state)
    }

    /// Whether writes of this store value are waiting for an fsync. For
    /// tests of the sync policies; not part of the stable API.
    #[doc(hidden)]
    pub fn has_unsynced_writes(&self) -> bool {
        !self.state.lock().pending.is_empty()
    }

    fn now_ms(&self) -> u64 {
        to_millis(self.clock.now())
    }

    fn live(&self, s: &Stored, now: u64) -> bool {
        !is_expired(
            s.stamp.modified_ms,
            s.stamp.expires_ms,
            self.max_idle_ms,
            now,
        )
    }

    /// Takes the in-process mutex, then the directory's file lock.
    fn write_lock(&self) -> Result<WriteGuard<'_>> {
        let state = self.state.lock();
        state.poison.check(self.dir.path())?;
        self.lock_file
            .lock()
            .map_err(|e| Error::io(self.dir.at(LOCK_NAME), "lock", e))?;
        Ok(WriteGuard {
            state,
            lock_file: &self.lock_file,
        })
    }

    /// The session's file as stored, expired or not; `None` if absent.
    fn read(&self, id: &SessionId) -> Result<Option<Stored>> {
        let name = file_name(id);
        let Some(buf) = self.read_bytes(&name)? else {
            return Ok(None);
        };
        decode_file(&self.dir.at(&name), id, buf).map(Some)
    }

    /// The file `name` (a session file's name) as stored, whichever
    /// session it holds; `None` if absent.
    fn read_named(&self, name: &str) -> Result<Option<(SessionId, Stored)>> {
        Ok(self.read_written(name)?.map(|(id, s, _)| (id, s)))
    }

    /// As [`read_named`](Self::read_named), with the file's modification
    /// time: the order of the writes of sessions saved or touched in one
    /// millisecond (see `write_temp`).
    fn read_written(&self, name: &str) -> Result<Option<(SessionId, Stored, SystemTime)>> {
        let Some((buf, written)) = self.read_file(name)? else {
            return Ok(None);
        };
        let (id, s) = decode_named(&self.dir.at(name), name, buf)?;
        Ok(Some((id, s, written)))
    }

    /// The bytes of the store's file `name`; `None` if absent.
    fn read_bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read_file(name)?.map(|(buf, _)| buf))
    }

    /// The bytes of the store's file `name` and its modification time
    /// ([`read_session_file`]); `None` if absent.
    fn read_file(&self, name: &str) -> Result<Option<(Vec<u8>, SystemTime)>> {
        read_session_file(&self.dir, name)
    }

    /// Writes `bytes` to a new temporary file (fsynced under `Always`)
    /// modified at `written`; its name.
    ///
    /// The file format has no room for the order of writes, and `modified`
    /// is in whole milliseconds; the file's own modification time, set here
    /// to the nanosecond, tells which of two sessions saved or touched in
    /// one millisecond was written later. The kernel's own stamp would not:
    /// it ticks with the scheduler, every few milliseconds.
    fn write_temp(&self, bytes: &[u8], written: SystemTime) -> Result<String> {
        let mut attempts = 0;
        let (name, mut f) = loop {
            let name = temp_name()?;
            match self.dir.open_file(&name, Create::New) {
                Ok(f) => break (name, f),
                Err(Error::Io { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists && attempts < 3 =>
                {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let path = self.dir.at(&name);
        let written = f
            .write_all(bytes)
            .map_err(|e| Error::io(&path, "write", e))
            .and_then(|()| {
                f.set_times(std::fs::FileTimes::new().set_modified(written))
                    .map_err(|e| Error::io(&path, "set the modification time", e))
            });
        let synced = written.and_then(|()| match self.sync {
            SyncPolicy::Always => f.sync_data().map_err(|e| Error::io(&path, "fsync", e)),
            SyncPolicy::Interval(_) | SyncPolicy::Never => Ok(()),
        });
        if let Err(e) = synced {
            // The old file is untouched; this one is discarded.
            let _ = self.dir.remove(&name);
            return Err(e);
        }
        Ok(name)
    }

    /// Replaces the session's file with one holding `data` and `stamp`.
    fn replace(
        &self,
        state: &mut WriteState,
        id: &SessionId,
        data: &[u8],
        stamp: Stamp,
        owner: Option<&SessionOwner>,
    ) -> Result<()> {
        let name = file_name(id);
        // Later than any file this store value wrote before, even if the
        // clock did not move on; other processes write under the same
        // lock, and so later on the clock.
        let written = SystemTime::now().max(state.last_written + Duration::from_nanos(1));
        state.last_written = written;
        let tmp = self.write_temp(&encode_file(id, data, stamp, owner), written)?;
        if let Err(e) = self.dir.rename(&tmp, &name) {
            let _ = self.dir.remove(&tmp);
            return Err(e);
        }
        self.after_change(state, Some(&name))
    }

    /// Removes the session's file; false if there was none.
    fn unlink(&self, state: &mut WriteState, id: &SessionId) -> Result<bool> {
        if !self.dir.remove(&file_name(id))? {
            return Ok(false);
        }
        self.after_change(state, None)?;
        Ok(true)
    }

    /// Applies the sync policy after a rename (`Some(name)`) or unlink.
    fn after_change(&self, state: &mut WriteState, name: Option<&str>) -> Result<()> {
        match self.sync {
            SyncPolicy::Always => {
                let t = self.meters.start();
                let r = self.dir.sync();
                self.meters.synced(t);
                r.map_err(|e| poison(state, e))
            }
            SyncPolicy::Interval(d) => {
                state.pending.note(name);
                if state.last_sync.elapsed() >= d {
                    self.flush(state)?;
                }
                Ok(())
            }
            SyncPolicy::Never => {
                state.pending.note(name);
                Ok(())
            }
        }
    }

    /// Fsyncs pending files and the directory.
    fn flush(&self, state: &mut WriteState) -> Result<()> {
        flush(&self.dir, state, &self.meters)
    }

    /// Removes temporary files left by writers that died. Call with the
    /// write lock held, so that no cooperating writer is mid-write.
    fn remove_stale_temps(&self) -> Result<()> {
        let now = SystemTime::now();
        for name in self.dir.names()? {
            let name = name?;
            if !name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let stale = self
                .dir
                .modified(&name)
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= STALE_TEMP_AGE);
            if stale {
                self.dir.remove(&name)?;
            }
        }
        Ok(())
    }

    /// A new modification time (and, if given, deadline in ms, 0 for none)
    /// for a live session; data and version unchanged.
    fn touch_as(&self, id: &SessionId, expires_ms: Option<u64>) -> Result<bool> {
        let mut guard = self.write_lock()?;
        let now = self.now_ms();
        let Some(s) = self.read(id)?.filter(|s| self.live(s, now)) else {
            return Ok(false);
        };
        let stamp = Stamp {
            modified_ms: now,
            expires_ms: expires_ms.unwrap_or(s.stamp.expires_ms),
            ..s.stamp
        };
        self.replace(&mut guard.state, id, &s.data, stamp, s.owner.as_ref())?;
        Ok(true)
    }

    fn save_as(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        check_size(session, self.max_session_size)?;
        let mut guard = self.write_lock()?;
        let now = self.now_ms();
        let found = match self.read(&session.id) {
            Ok(s) => s
                .filter(|s| self.live(s, now))
                .map_or(0, |s| s.stamp.version),
            // An unconditional save replaces a damaged file.
            Err(Error::Corrupt { .. }) if mode == SaveMode::Overwrite => 0,
            Err(e) => return Err(e),
        };
        let stamp = Stamp {
            version: next_version(session, found, mode)?,
            modified_ms: now,
            expires_ms: expires_millis(session.expires),
        };
        self.check_quota(&mut guard.state, &session.id, &session.data, stamp, now)?;
        self.replace(
            &mut guard.state,
            &session.id,
            &session.data,
            stamp,
            session.owner.as_ref(),
        )?;
        if let (Some(limit), Some(owner)) = (self.max_sessions_per_owner, &session.owner) {
            // Least recently modified first; sessions modified in one
            // millisecond in the order their files were written, not by
            // their random ids.
            let mut others: Vec<((u64, SystemTime), SessionId)> = self
                .owned(owner, now)?
                .into_iter()
                .filter(|(id, _, _)| *id != session.id)
                .map(|(id, s, written)| ((s.stamp.modified_ms, written), id))
                .collect();
            others.sort_unstable_by_key(|(order, _)| *order);
            let excess = (others.len() + 1).saturating_sub(limit);
            for (_, id) in others.into_iter().take(excess) {
                self.unlink(&mut guard.state, &id)?;
            }
        }
        session.mark_saved(from_millis(now), stamp.version);
        Ok(())
    }

    /// The sessions of `owner` live at `now` (every one if `now` is 0): a
    /// read of every session file (DirStore keeps no owner index; see
    /// DESIGN.md §11), each with its file's modification time. Call with
    /// the write lock held to decide on them.
    fn owned(
        &self,
        owner: &SessionOwner,
        now: u64,
    ) -> Result<Vec<(SessionId, Stored, SystemTime)>> {
        let mut out = Vec::new();
        for name in self.dir.names()? {
            let name = name?;
            if !is_session_name(&name) {
                continue;
            }
            match self.read_written(&name) {
                Ok(Some((id, s, written)))
                    if s.owner.as_ref() == Some(owner) && (now == 0 || self.live(&s, now)) =>
                {
                    out.push((id, s, written));
                }
                Ok(_) => {}
                // A damaged file is nobody's session.
                Err(Error::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Under the write lock: unlinks every live session of `owner` but
    /// `keep`; with `erase`, also its expired ones and every temporary file
    /// (under the lock no writer is mid-write, so each is a dead writer's),
    /// and syncs the directory. Returns how many live sessions went.
    fn delete_owned(
        &self,
        owner: &SessionOwner,
        keep: Option<&SessionId>,
        erase: bool,
    ) -> Result<usize> {
        let mut guard = self.write_lock()?;
        // Files still named by their ids are given digest names first, so
        // that each session is one file, found and removed by its id.
        migrate::run(&self.dir)?;
        let now = self.now_ms();
        let mut n = 0;
        for (id, s, _) in self.owned(owner, if erase { 0 } else { now })? {
            if Some(&id) != keep && self.unlink(&mut guard.state, &id)? && self.live(&s, now) {
                n += 1;
            }
        }
        if erase {
            let temps: Vec<String> = self
                .dir
                .names()?
                .filter(|n| n.as_ref().map_or(true, |n| n.starts_with(TEMP_PREFIX)))
                .collect::<Result<_>>()?;
            for name in temps {
                self.dir.remove(&name)?;
            }
            // The unlinks are durable when this returns.
            self.dir.sync().map_err(|e| poison(&mut guard.state, e))?;
        }
        Ok(n)
    }
}

/// Fsyncs the pending files of the store in `dir`, then `dir`.
fn flush(dir: &DirHandle, state: &mut WriteState, meters: &Meters) -> Result<()> {
    state.poison.check(dir.path())?;
    if !state.pending.is_empty() {
        let t = meters.start();
        let synced = sync_pending(dir, &state.pending);
        meters.synced(t);
        synced.map_err(|e| poison(state, e))?;
        state.pending = Pending::default();
    }
    state.last_sync = Instant::now();
    Ok(())
}

fn sync_pending(dir: &DirHandle, pending: &Pending) -> Result<()> {
    if pending.all {
        for entry in dir.names()? {
            let name = entry?;
            if is_session_name(&name) {
                dir.sync_file(&name)?;
            }
        }
    } else {
        for name in &pending.names {
            dir.sync_file(name)?;
        }
    }
    dir.sync()
}

fn poison(state: &mut WriteState, e: Error) -> Error {
    state.poison.set_cause(e.to_string());
    e
}

impl Drop for DirStore {
    fn drop(&mut self) {
        drop(self.flusher.take());
        let mut state = self.state.lock();
        if !state.poison.is_set() && !state.pending.is_empty() {
            // Nowhere to return a failure (it is counted and traced);
            // `sync` is the way to see it.
            if let Err(e) = self.flush(&mut state) {
                self.meters.background_error("sync on close", &e);
            }
        }
    }
}

impl SessionStore for DirStore {
    /// Renames files an older version named by the id to digest names
    /// (see [`DirOptions::open`]) and removes temporary files that writers
    /// which died left more than an hour ago. The directory was created by
    /// `open`.
    fn setup(&self) -> Result<()> {
        let _guard = self.write_lock()?;
        migrate::run(&self.dir)?;
        self.remove_stale_temps()
    }

    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        self.meters.call(Op::Load, || {
            let now = self.now_ms();
            let Some(s) = self.read(id)? else {
                return Ok(None);
            };
            if !self.live(&s, now) {
                self.meters.expired_on_read();
                return Ok(None);
            }
            Ok(Some(to_session(id.clone(), s)))
        })
    }

    /// Replaces the stored session. A file that fails to decode as
    /// [`Error::Corrupt`] is overwritten by an unconditional save (the
    /// version restarts at 1); a conditional one gives [`Error::Corrupt`]
    /// and leaves it as it is.
    fn save(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        self.meters.call(Op::Save, || self.save_as(session, mode))
    }

    /// Rewrites the file with a new modification time (and deadline), same
    /// data and version.
    fn touch(&self, id: &SessionId, touch: Touch) -> Result<bool> {
        let expires_ms = match touch {
            Touch::Idle => None,
            Touch::Until(expires) => Some(expires_millis(expires)),
        };
        self.meters
            .call(Op::Touch, || self.touch_as(id, expires_ms))
    }

    /// Removes the session's file. A damaged file is removed too, and
    /// counts as no live session (returns false).
    fn delete_session(&self, id: &SessionId) -> Result<bool> {
        self.meters.call(Op::Delete, || {
            let mut guard = self.write_lock()?;
            let now = self.now_ms();
            let live = match self.read(id) {
                Ok(None) => return Ok(false),
                Ok(Some(s)) => self.live(&s, now),
                Err(Error::Corrupt { .. }) => false,
                Err(e) => return Err(e),
            };
            Ok(self.unlink(&mut guard.state, id)? && live)
        })
    }

    /// The sessions as their files hold them: each with the id it was
    /// saved under (which its file's name is a digest of), so through
    /// [`HashedIds`](crate::HashedIds), the stored ids.
    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        let now = self.now_ms();
        let names = self.dir.names()?;
        Ok(Box::new(names.filter_map(move |name| {
            let name = match name {
                Ok(name) if is_session_name(&name) => name,
                Ok(_) => return None,
                Err(e) => return Some(Err(e)),
            };
            match self.read_named(&name) {
                Ok(Some((id, s))) if self.live(&s, now) => Some(Ok(to_session(id, s))),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        })))
    }

    /// Checks each session without the lock, then locks only to remove a
    /// candidate after checking it again, so writers wait for one file at a
    /// time. Files that fail to decode are left for inspection. Also
    /// renames old-style files and removes stale temporary files, like
    /// `setup`.
    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize> {
        let idle = Some(duration_millis(max_idle));
        let old = |s: &Stored, now: u64| {
            is_expired(s.stamp.modified_ms, s.stamp.expires_ms, idle, now) || !self.live(s, now)
        };
        {
            let _guard = self.write_lock()?;
            migrate::run(&self.dir)?;
        }
        let mut removed = 0;
        for name in self.dir.names()? {
            let name = name?;
            if !is_session_name(&name) {
                continue;
            }
            let now = self.now_ms();
            let id = match self.read_named(&name) {
                Ok(Some((id, s))) if old(&s, now) => id,
                _ => continue,
            };
            let mut guard = self.write_lock()?;
            let now = self.now_ms();
            if matches!(self.read(&id), Ok(Some(s)) if old(&s, now))
                && self.unlink(&mut guard.state, &id)?
            {
                removed += 1;
            }
        }
        let _guard = self.write_lock()?;
        self.remove_stale_temps()?;
        Ok(removed)
    }

    /// A read of every session file: DirStore keeps no owner index, since
    /// other processes change the directory (DESIGN.md §11).
    fn sessions_of(&self, owner: &SessionOwner) -> Result<Vec<SessionInfo>> {
        let now = self.now_ms();
        let list = self
            .owned(owner, now)?
            .into_iter()
            .map(|(id, s, written)| {
                let info = SessionInfo::new(
                    id,
                    s.owner,
                    from_millis(s.stamp.modified_ms),
                    expires_from_millis(s.stamp.expires_ms),
                    s.stamp.version,
                    s.data.len(),
                );
                (info, written)
            })
            .collect();
        Ok(newest_first(list))
    }

    /// Decided under the directory's lock: atomic with respect to saves of
    /// any process.
    fn delete_sessions_of(&self, owner: &SessionOwner, keep: Option<&SessionId>) -> Result<usize> {
        self.delete_owned(owner, keep, false)
    }

    /// Unlinks the owner's files (expired ones too) and every temporary
    /// file, then syncs the directory: no file of the store holds a byte of
    /// theirs. A crash in the middle may leave some unlinked and others
    /// not: DirStore has no single file to swap (DESIGN.md §11).
    fn erase_sessions_of(&self, owner: &SessionOwner) -> Result<usize> {
        self.delete_owned(owner, None, true)
    }

    fn is_thread_safe(&self) -> bool {
        true
    }

    fn is_multiprocess_safe(&self) -> bool {
        true
    }
}
