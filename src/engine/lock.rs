//! The lock file `<log>.lock`: how processes sharing a store take turns.
//!
//! The file holds one page, mapped shared by every process that has the
//! store open. It carries a process-shared, *robust* mutex (the writer
//! lock): uncontended, locking and unlocking it is two atomic instructions
//! in user space, where an `flock` pair costs two system calls (a fifth to
//! a third of a save; DESIGN.md §5.1 has the measurement, made with
//! `benches/peers --lock-probe`). If its holder dies, the kernel marks
//! it and hands it to the next locker, as `flock` does when its holder's
//! descriptors close.
//!
//! A mutex left in a file can outlive every process (a power loss, or a
//! crash of the machine, leaves a locked one on disk), so the mutex is
//! initialised afresh by the first process to open the store. Who is first
//! is decided with `flock` on the same file, taken once per handle: every
//! open handle holds it shared for its whole life; an opener that gets it
//! exclusively (non-blocking) knows nobody else has the store open. It
//! writes the page anew, recovers the log alone (only it can see what a
//! power loss left, and nobody may append before it has looked), and then
//! converts its lock to shared. Nobody touches the mutex without holding
//! the shared lock, so re-initialising under the exclusive lock can never
//! pull it from under a holder. Compaction never replaces this file.

use std::fs::{self, File};
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

use crate::engine::file::Site;
use crate::error::{Error, Remedy, Result};
use crate::layout::lock::{
    L_FLUSH_MAGIC, L_FLUSH_MUTEXES, L_FLUSH_SEQ, L_FLUSH_WRITERS, L_HEAD_END, L_MAGIC, L_MUTEX,
    L_MUTEX_LAYOUT, L_RESERVED, L_STATUS, L_STATUS_LEN, L_STATUS_MESSAGE, L_VERSION,
    LOCK_FILE_SIZE, LOCK_FLUSH_MAGIC, LOCK_LIBC_NAME, LOCK_MAGIC, LOCK_MUTEX_LAYOUT,
    LOCK_STATUS_MESSAGE, LOCK_VERSION,
};
use crate::trust::{Create, Owner};

/// How many flushes may run at once for the whole store: one, so that
/// each covers every process waiting. The page holds a second turn
/// (`L_FLUSH_MUTEXES`), initialised and unused: a disk whose flushes
/// complete much faster when two are in flight may want two (DESIGN.md §6
/// has the measurements), and a build that takes both shares the page with
/// one that takes one.
const FLUSH_TURNS: usize = 1;

/// This build's C library, as recorded in the lock page.
const LIBC: &[u8] = if cfg!(target_env = "musl") {
    b"musl"
} else if cfg!(target_env = "gnu") {
    b"glibc"
} else {
    b"other"
};

fn layout_record() -> [u8; LOCK_MUTEX_LAYOUT] {
    let mut r = [0u8; LOCK_MUTEX_LAYOUT];
    r[..LIBC.len()].copy_from_slice(LIBC);
    r[LOCK_LIBC_NAME..].copy_from_slice(&(size_of::<libc::pthread_mutex_t>() as u32).to_le_bytes());
    r
}

const _: () = assert!(LIBC.len() <= LOCK_LIBC_NAME);
const _: () = assert!(L_MUTEX + size_of::<libc::pthread_mutex_t>() <= L_STATUS);
const _: () = assert!(L_FLUSH_MUTEXES[0] + size_of::<libc::pthread_mutex_t>() <= L_FLUSH_MAGIC);
const _: () =
    assert!(L_FLUSH_MUTEXES[1] + size_of::<libc::pthread_mutex_t>() <= LOCK_FILE_SIZE as usize);
const _: () = assert!(FLUSH_TURNS >= 1 && FLUSH_TURNS <= L_FLUSH_MUTEXES.len());

/// The lock file, mapped. One handle per store handle: `flock` locks belong
/// to the open file description.
#[derive(Debug)]
pub(crate) struct LockFile {
    /// Holds the `flock`: exclusive from the first open until
    /// [`LockFile::share`], then shared while the handle lives.
    file: File,
    path: PathBuf,
    /// The lock file's directory and name.
    site: Site,
    map: MmapRaw,
    /// No other handle had the store open when this one was opened: the
    /// lock file was initialised afresh, and this handle holds the
    /// exclusive `flock` (nobody else can open the store) until `share`.
    pub first: bool,
    /// The store's owner: every file of the store must be theirs.
    pub owner: Owner,
    /// Longest wait for the writer lock before `Error::Busy`.
    timeout: Duration,
    /// Device and inode of the lock file this handle locks with.
    ino: (u64, u64),
    /// The page carries the flush turn (`LOCK_FLUSH_MAGIC`): durable saves are
    /// flushed by one process for all.
    shared_flush: bool,
}

/// Holds the writer lock until dropped. Not `Send`: a robust mutex must be
/// unlocked by the thread that locked it.
#[must_use]
pub(crate) struct LockGuard<'a> {
    lock: &'a LockFile,
    _not_send: PhantomData<*const ()>,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the mutex was initialised by the first opener before any
        // process could hold the shared flock that this handle holds, the
        // mapping outlives the guard (it borrows the `LockFile`), and this
        // thread locked it (the guard is not `Send`). Unlocking a mutex one
        // holds cannot fail.
        unsafe {
            libc::pthread_mutex_unlock(self.lock.mutex());
        }
    }
}

impl LockFile {
    /// Opens (creating, mode 0600) and maps the lock file. If this is the
    /// only handle on the store, initialises it and keeps the exclusive
    /// `flock` (`first`): the caller recovers the log alone, then calls
    /// [`LockFile::share`].
    pub fn open(site: Site, owner: Owner, timeout: Duration) -> Result<LockFile> {
        let path = site.path.clone();
        let file = site.open(Create::IfMissing, owner)?;
        let meta = file.metadata().map_err(|e| Error::io(&path, "stat", e))?;
        let ino = (meta.dev(), meta.ino());
        let first = match file.try_lock() {
            Ok(()) => {
                init(&path, &file)?;
                true
            }
            Err(fs::TryLockError::WouldBlock) => {
                file.lock_shared()
                    .map_err(|e| Error::io(&path, "lock shared", e))?;
                false
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, "lock", e)),
        };
        check(&path, &file)?;
        let map = MmapOptions::new()
            .len(LOCK_FILE_SIZE as usize)
            .map_raw(&file)
            .map_err(|e| Error::io(&path, "mmap", e))?;
        // Written by the initialiser under the exclusive flock, before
        // this handle could take its shared one: it cannot change while
        // the handle lives.
        let mut magic = [0u8; 8];
        file.read_exact_at(&mut magic, L_FLUSH_MAGIC as u64)
            .map_err(|e| Error::io(&path, "read", e))?;
        Ok(LockFile {
            shared_flush: magic == LOCK_FLUSH_MAGIC,
            file,
            path,
            site,
            map,
            first,
            owner,
            timeout,
            ino,
        })
    }

    /// Lets other handles open the store: converts the first opener's
    /// exclusive `flock` to shared. Converting may drop the lock for an
    /// instant, in which another opener may find itself first and
    /// initialise the page again: harmless, since this handle has released
    /// the mutex (nobody uses it without the shared lock, which this handle
    /// does not hold in that instant) and left the log consistent.
    pub fn share(&self) -> Result<()> {
        if self.first {
            self.file
                .lock_shared()
                .map_err(|e| Error::io(&self.path, "lock shared", e))?;
        }
        Ok(())
    }

    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        // SAFETY: the mapping is LOCK_FILE_SIZE bytes, page-aligned, so the
        // mutex (L_MUTEX, 64-byte aligned, size checked above) is in
        // bounds and aligned.
        unsafe { self.map.as_mut_ptr().add(L_MUTEX).cast() }
    }

    /// Waits until this thread holds the writer lock (against every other
    /// thread and process), at most the handle's timeout: a holder that is
    /// stopped (`SIGSTOP`) or hung gives `Error::Busy` naming the store,
    /// not a frozen caller.
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        // Uncontended, a trylock is the whole cost: no clock read, no
        // timed wait.
        if let Some(guard) = self.try_lock()? {
            return Ok(guard);
        }
        let rc = timed_lock(self.mutex(), self.timeout);
        if rc == libc::ETIMEDOUT {
            return Err(Error::Busy {
                path: self.path.clone(),
                what: format!(
                    "another process has held the store's write lock for more than {:?} \
                     (stopped or hung?)",
                    self.timeout
                ),
            });
        }
        self.locked(rc)?
            .ok_or_else(|| Error::io(&self.path, "lock", io::Error::from_raw_os_error(rc)))
    }

    /// Whether the lock file at the path is still the one this handle
    /// locks with. If someone removed or replaced it (a `/tmp` cleaner, an
    /// admin clearing a "stale lock"), the next opener makes a new mutex
    /// and writes through this handle would no longer exclude it.
    pub fn is_current(&self) -> Result<bool> {
        Ok(self.site.stat()?.is_some_and(|f| f.ino() == self.ino))
    }

    /// The longest wait for a lock of the store (the writer lock, a
    /// compaction's) before `Error::Busy`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn status_word(&self) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: L_STATUS is 8-aligned and in bounds of the mapped
        // page (checked above); the word is only accessed atomically.
        unsafe { &*self.map.as_mut_ptr().add(L_STATUS).cast() }
    }

    /// Records a background failure for every process to see (`stats`).
    /// Several processes may write at once; the message is diagnostic and
    /// read back as lossy UTF-8 of a bounded length, never trusted.
    pub fn set_status(&self, at_ms: u64, message: &str) {
        use std::sync::atomic::Ordering;
        let msg = &message.as_bytes()[..message.len().min(LOCK_STATUS_MESSAGE)];
        let word = self.status_word();
        word.store(0, Ordering::Release);
        // SAFETY: the range lies in the mapped page after the status word
        // (checked above); other processes read it only as plain bytes.
        unsafe {
            let page = self.map.as_mut_ptr();
            std::ptr::copy_nonoverlapping(
                (msg.len() as u32).to_le_bytes().as_ptr(),
                page.add(L_STATUS_LEN),
                4,
            );
            std::ptr::copy_nonoverlapping(msg.as_ptr(), page.add(L_STATUS_MESSAGE), msg.len());
        }
        word.store(at_ms.max(1), Ordering::Release);
    }

    /// The last recorded background failure: (time in ms, message).
    pub fn status(&self) -> Option<(u64, String)> {
        use std::sync::atomic::Ordering;
        let at = self.status_word().load(Ordering::Acquire);
        if at == 0 {
            return None;
        }
        let mut len = [0u8; 4];
        let mut msg = vec![0u8; LOCK_STATUS_MESSAGE];
        // SAFETY: as in `set_status`; the copies are of plain bytes.
        unsafe {
            let page = self.map.as_ptr();
            std::ptr::copy_nonoverlapping(page.add(L_STATUS_LEN), len.as_mut_ptr(), 4);
            std::ptr::copy_nonoverlapping(
                page.add(L_STATUS_MESSAGE),
                msg.as_mut_ptr(),
                LOCK_STATUS_MESSAGE,
            );
        }
        msg.truncate((u32::from_le_bytes(len) as usize).min(LOCK_STATUS_MESSAGE));
        Some((at, String::from_utf8_lossy(&msg).into_owned()))
    }

    /// Takes the writer lock if nobody holds it.
    pub fn try_lock(&self) -> Result<Option<LockGuard<'_>>> {
        // SAFETY: as in `lock`.
        let rc = unsafe { libc::pthread_mutex_trylock(self.mutex()) };
        self.locked(rc)
    }

    /// The guard for a lock call's result: `None` if the lock is busy.
    fn locked(&self, rc: i32) -> Result<Option<LockGuard<'_>>> {
        let guard = || LockGuard {
            lock: self,
            _not_send: PhantomData,
        };
        match rc {
            0 => Ok(Some(guard())),
            libc::EBUSY => Ok(None),
            libc::EOWNERDEAD => {
                // The previous holder died inside its critical section. What
                // the lock protects is published with single atomic stores
                // (the committed end of the log), so there is nothing half
                // done to roll back: bytes a dead writer left past the
                // committed end are overwritten by the next append.
                // SAFETY: this thread holds the mutex (EOWNERDEAD means it
                // was acquired), as `pthread_mutex_consistent` requires.
                let rc = unsafe { libc::pthread_mutex_consistent(self.mutex()) };
                if rc != 0 {
                    return Err(Error::io(
                        &self.path,
                        "recover the lock of a dead process",
                        io::Error::from_raw_os_error(rc),
                    ));
                }
                Ok(Some(guard()))
            }
            e => Err(Error::io(
                &self.path,
                "lock",
                io::Error::from_raw_os_error(e),
            )),
        }
    }
}

/// The flush turn: while held, this thread flushes for every process's
/// durable saves (DESIGN.md §6). Dropping it lets the turn go and wakes
/// every process waiting for a flush. Not `Send`: a robust mutex must be
/// unlocked by the thread that locked it.
#[must_use]
pub(crate) struct FlushTurn<'a> {
    lock: &'a LockFile,
    slot: usize,
    _not_send: PhantomData<*const ()>,
}

impl Drop for FlushTurn<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `LockGuard::drop`, for the flush turn's mutex,
        // which this thread holds (the turn is not `Send`).
        unsafe {
            libc::pthread_mutex_unlock(self.lock.flush_mutex(self.slot));
        }
        // After the unlock: a waiter that found the turn taken read the
        // sequence before trying it, so it either sees this increment
        // (its wait returns at once) or is woken by the wake below, and
        // then finds the turn free.
        let seq = self.lock.flush_seq_word();
        seq.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        futex_wake_all(seq);
    }
}

impl LockFile {
    /// Whether durable saves on this store may share flushes between
    /// processes: the page carries the flush turn (written by this build
    /// or a later one; a page an earlier build initialised does not, and
    /// then every process flushes for itself, as that build does).
    pub fn shares_flush(&self) -> bool {
        self.shared_flush
    }

    fn flush_mutex(&self, slot: usize) -> *mut libc::pthread_mutex_t {
        // SAFETY: in bounds and aligned (checked above), as in `mutex`;
        // `slot` is below FLUSH_TURNS (the array index checks it too).
        unsafe { self.map.as_mut_ptr().add(L_FLUSH_MUTEXES[slot]).cast() }
    }

    fn word32(&self, offset: usize) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: the offsets passed are 4-aligned and in bounds of the
        // mapped page (checked above); the words are only accessed
        // atomically, by every process.
        unsafe { &*self.map.as_mut_ptr().add(offset).cast() }
    }

    fn flush_seq_word(&self) -> &std::sync::atomic::AtomicU32 {
        self.word32(L_FLUSH_SEQ)
    }

    /// How many flush turns have ended (wrapping): read before trying the
    /// turn, and passed to [`LockFile::wait_flush`].
    pub fn flush_seq(&self) -> u32 {
        self.flush_seq_word()
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Takes the flush turn if nobody holds it. A turn whose holder died
    /// (killed in the middle of its flush) passes to the caller: the
    /// synced word it protects moves only after a flush succeeded, so
    /// there is nothing to repair. Only if [`LockFile::shares_flush`].
    pub fn try_flush_turn(&self) -> Result<Option<FlushTurn<'_>>> {
        debug_assert!(self.shared_flush);
        for slot in 0..FLUSH_TURNS {
            if let Some(turn) = self.try_flush_slot(slot)? {
                return Ok(Some(turn));
            }
        }
        Ok(None)
    }

    fn try_flush_slot(&self, slot: usize) -> Result<Option<FlushTurn<'_>>> {
        // SAFETY: the mutex was initialised by the first opener (the magic
        // says so) before any process could hold the shared flock that
        // this handle holds; the mapping lives as long as `self`.
        let rc = unsafe { libc::pthread_mutex_trylock(self.flush_mutex(slot)) };
        let turn = || FlushTurn {
            lock: self,
            slot,
            _not_send: PhantomData,
        };
        match rc {
            0 => Ok(Some(turn())),
            libc::EBUSY => Ok(None),
            libc::EOWNERDEAD => {
                // SAFETY: this thread holds the mutex (EOWNERDEAD means it
                // was acquired), as `pthread_mutex_consistent` requires.
                let rc = unsafe { libc::pthread_mutex_consistent(self.flush_mutex(slot)) };
                if rc != 0 {
                    return Err(Error::io(
                        &self.path,
                        "take over the flush of a dead process",
                        io::Error::from_raw_os_error(rc),
                    ));
                }
                Ok(Some(turn()))
            }
            e => Err(Error::io(
                &self.path,
                "flush turn",
                io::Error::from_raw_os_error(e),
            )),
        }
    }

    /// Sleeps until a flush turn ends after `seen` was read from
    /// [`LockFile::flush_seq`], or `max` passed (or a spurious wake-up):
    /// the caller looks again either way. A holder that died never ends
    /// its turn; the caller's next try of the turn takes it over.
    pub fn wait_flush(&self, seen: u32, max: Duration) {
        futex_wait(self.flush_seq_word(), seen, max);
    }

    /// Counts a durable writer of this process as inside a write (see
    /// `L_FLUSH_WRITERS`) until [`LockFile::leave_durable_write`].
    pub fn enter_durable_write(&self) {
        self.word32(L_FLUSH_WRITERS)
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Undoes [`LockFile::enter_durable_write`].
    pub fn leave_durable_write(&self) {
        self.word32(L_FLUSH_WRITERS)
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Durable writers of every process inside a write now (plus any that
    /// a killed process left counted).
    pub fn durable_writers(&self) -> u32 {
        self.word32(L_FLUSH_WRITERS)
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Sleeps while `word` holds `expected`, at most `max` (`FUTEX_WAIT` on a
/// shared mapping: not the private variant, which only sees the threads
/// of one process).
fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32, max: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(max.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(max.subsec_nanos() as i32),
    };
    // SAFETY: `word` is an aligned u32 that lives for the call (in the
    // lock page's mapping); FUTEX_WAIT reads it and sleeps, the timeout is
    // a valid relative timespec on the stack, the other arguments are
    // ignored by FUTEX_WAIT. Every result (woken, value changed, timed
    // out, interrupted) means "look again", so it is not examined.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every process sleeping in `futex_wait` on `word`.
fn futex_wake_all(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: `word` is an aligned u32 in a live mapping; FUTEX_WAKE only
    // wakes sleepers on it and ignores the later arguments. A failure
    // cannot leave anyone stuck: sleepers wait with a timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Writes the page anew: magic, version, the unlocked robust mutexes of
/// the write lock and the flush turn. Only under the exclusive flock.
fn init(path: &Path, file: &File) -> Result<()> {
    let io = |op, e| Error::io(path, op, e);
    file.set_len(0)
        .and_then(|()| file.set_len(LOCK_FILE_SIZE))
        .map_err(|e| io("size", e))?;
    let map = MmapOptions::new()
        .len(LOCK_FILE_SIZE as usize)
        .map_raw(file)
        .map_err(|e| io("mmap", e))?;
    for offset in [L_MUTEX, L_FLUSH_MUTEXES[0], L_FLUSH_MUTEXES[1]] {
        // SAFETY: every offset is in bounds and 64-byte aligned (checked
        // in `layout::lock` and above), as in `LockFile::mutex`.
        let m: *mut libc::pthread_mutex_t = unsafe { map.as_mut_ptr().add(offset).cast() };
        init_mutex(m).map_err(|e| io("initialise the lock", e))?;
    }
    file.write_all_at(&LOCK_FLUSH_MAGIC, L_FLUSH_MAGIC as u64)
        .map_err(|e| io("write", e))?;
    let mut head = [0u8; L_HEAD_END];
    head[L_MAGIC..L_VERSION].copy_from_slice(&LOCK_MAGIC);
    head[L_VERSION..L_RESERVED].copy_from_slice(&LOCK_VERSION.to_le_bytes());
    head[L_MUTEX_LAYOUT..].copy_from_slice(&layout_record());
    file.write_all_at(&head, 0).map_err(|e| io("write", e))
}

/// Initialises the zeroed `m` as a process-shared, robust mutex.
fn init_mutex(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    // SAFETY: `attr` is initialised by `pthread_mutexattr_init` before use
    // and destroyed after; `m` points at zeroed, mapped, aligned memory
    // that no thread uses (the caller holds the exclusive flock, and users
    // hold the shared one).
    let rc = unsafe {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        let mut rc = libc::pthread_mutexattr_init(attr.as_mut_ptr());
        if rc == 0 {
            rc =
                libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            if rc == 0 {
                rc = libc::pthread_mutexattr_setrobust(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_MUTEX_ROBUST,
                );
            }
            if rc == 0 {
                rc = libc::pthread_mutex_init(m, attr.as_ptr());
            }
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        }
        rc
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Checks that the page was written by this protocol.
fn check(path: &Path, file: &File) -> Result<()> {
    let mut head = [0u8; L_HEAD_END];
    let len = file
        .metadata()
        .map_err(|e| Error::io(path, "stat", e))?
        .len();
    if len < LOCK_FILE_SIZE {
        return Err(Error::corrupt_in(
            path,
            len,
            "the lock file is too short",
            Remedy::RemoveLockFile,
        ));
    }
    file.read_exact_at(&mut head, 0)
        .map_err(|e| Error::io(path, "read", e))?;
    if head[L_MAGIC..L_VERSION] != LOCK_MAGIC {
        return Err(Error::corrupt_in(
            path,
            0,
            "not a sessionlog lock file",
            Remedy::RemoveLockFile,
        ));
    }
    let version = u32::from_le_bytes([
        head[L_VERSION],
        head[L_VERSION + 1],
        head[L_VERSION + 2],
        head[L_VERSION + 3],
    ]);
    if version != LOCK_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_owned(),
            found: version,
            supported: LOCK_VERSION,
        });
    }
    if head[L_MUTEX_LAYOUT..] != layout_record() {
        let name_end = head[L_MUTEX_LAYOUT..L_MUTEX_LAYOUT + LOCK_LIBC_NAME]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(LOCK_LIBC_NAME);
        let theirs = String::from_utf8_lossy(&head[L_MUTEX_LAYOUT..L_MUTEX_LAYOUT + name_end]);
        return Err(Error::Unsafe {
            path: path.to_owned(),
            reason: format!(
                "the store is open in a process whose C library ({theirs}) lays out its \
                 mutex differently from this one's ({}): the two cannot share a lock",
                String::from_utf8_lossy(LIBC)
            ),
        });
    }
    Ok(())
}

// SAFETY: the declaration matches glibc's prototype
// `int pthread_mutex_clocklock(pthread_mutex_t *restrict, clockid_t,
// const struct timespec *restrict)` (pthread.h, glibc 2.30 and later), so
// calls through it pass arguments as the C function expects them.
#[cfg(target_env = "gnu")]
unsafe extern "C" {
    /// glibc 2.30 and later: `pthread_mutex_timedlock` with a deadline on
    /// the clock given (the libc crate does not declare it yet).
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// `now + timeout` as a timespec of the clock `now` was read from.
fn timespec_after(now: Duration, timeout: Duration) -> libc::timespec {
    let at = now.saturating_add(timeout);
    libc::timespec {
        tv_sec: libc::time_t::try_from(at.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(at.subsec_nanos() as i32),
    }
}

/// Waits for `mutex` at most `timeout` measured on the monotonic clock: a
/// step of the wall clock (back, by an administrator or NTP) neither
/// stretches nor cuts the wait. Returns the lock call's result code.
///
/// The mutex must be one `LockFile::mutex` returns, with the shared flock
/// held (see `LockGuard::drop`).
#[cfg(target_env = "gnu")]
fn timed_lock(mutex: *mut libc::pthread_mutex_t, timeout: Duration) -> libc::c_int {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let now = Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    );
    let deadline = timespec_after(now, timeout);
    // SAFETY: the mutex is initialised, shared and robust, and mapped
    // while its `LockFile` lives (the caller's promise); `deadline` is a
    // valid timespec on the stack for the whole call.
    unsafe { pthread_mutex_clocklock(mutex, libc::CLOCK_MONOTONIC, &deadline) }
}

/// As above, for C libraries without `pthread_mutex_clocklock`: waits in
/// slices of at most 20 ms against the wall clock, the whole wait
/// measured on the monotonic clock (`Instant`), so a step of the wall
/// clock stretches only the slice it falls in.
#[cfg(not(target_env = "gnu"))]
fn timed_lock(mutex: *mut libc::pthread_mutex_t, timeout: Duration) -> libc::c_int {
    const SLICE: Duration = Duration::from_millis(20);
    let until = std::time::Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return libc::ETIMEDOUT;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let deadline = timespec_after(now, left.min(SLICE));
        // SAFETY: as for the glibc version.
        let rc = unsafe { libc::pthread_mutex_timedlock(mutex, &deadline) };
        if rc != libc::ETIMEDOUT {
            return rc;
        }
    }
}
