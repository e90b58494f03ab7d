//! The background thread of a store handle: syncs on the policy's interval,
//! writes the header page behind durable saves' range syncs, and compacts
//! when dead and expired records are a large enough share of the log.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::engine::compact;
use crate::engine::file::LogFile;
use crate::engine::format::{self, HEADER_SIZE};
use crate::engine::hook::IoEvent;
use crate::engine::reserve;
use crate::engine::shared::Inner;
use crate::engine::writeback::{self, Prefaulted, Progress};
use crate::error::{Error, Result};
use crate::options::SyncPolicy;

/// How often, at most, the background thread writes the header page
/// behind durable saves' range syncs.
const HEADER_SYNC_EVERY: Duration = Duration::from_secs(1);

/// How often, at least, the thread checks that the lock file is still the
/// store's and that the log was not truncated under the map.
const CHECK_FILES_EVERY: Duration = Duration::from_secs(1);

/// After `n` failed compactions in a row the next try waits
/// `compact_check_interval * 2^min(n, MAX_BACKOFF_DOUBLINGS)`.
const MAX_BACKOFF_DOUBLINGS: u32 = 6;

/// Starts the thread that grows the log ahead of the writers and writes
/// back behind them (`writeback.rs`): woken by a writer near the file's
/// end, and every `writeback_every` bytes appended.
pub(crate) fn spawn_writeback(inner: Arc<Inner>) -> Result<JoinHandle<()>> {
    let path = inner.path.clone();
    thread::Builder::new()
        .name("sessionlog-wb".into())
        .spawn(move || write_back(&inner))
        .map_err(|e| Error::io(path, "spawn writeback thread", e))
}

fn write_back(inner: &Inner) {
    let mut progress = Progress::default();
    let mut prefaulted = Prefaulted::default();
    let mut reported = false;
    let mut grow_reported = false;
    let mut prefault_reported = false;
    let mut last_chunk = 0;
    while !inner.writeback.signal.wait(writeback::IDLE) {
        if inner.poison.is_set() {
            continue;
        }
        let (file, end) = {
            let st = inner.state.read();
            (Arc::clone(&st.file), st.applied)
        };
        let grown = if inner.writeback.grows() {
            match grow_ahead(inner, &file, end) {
                Ok(len) => Some(len),
                Err(e) => {
                    // The writers grow the file themselves, and report
                    // what fails there; this is traced once.
                    if !grow_reported {
                        inner.meters.background_error("growing the log ahead", &e);
                        grow_reported = true;
                    }
                    None
                }
            }
        } else {
            None
        };
        // After the growth, which may give the pages ahead a file to be in,
        // up to the length it left (its `fstat` serves both). A failure
        // only leaves the faults to the writers; traced once.
        if inner.writeback.prefaults()
            && let Err(e) = grown.map_or_else(|| file.file_len(), Ok).and_then(|len| {
                prefaulted
                    .step(&inner.hooks, &file, end, len)
                    .map_err(|e| Error::io(&file.path, "fault in the pages ahead", e))
            })
            && !prefault_reported
        {
            inner
                .meters
                .background_error("faulting in the pages ahead", &e);
            prefault_reported = true;
        }
        // Writeback goes a chunk at a time: a wake to grow alone, before
        // the next chunk boundary, starts none.
        let Some(chunk) = inner.writeback.chunk_of(end).filter(|&c| c != last_chunk) else {
            continue;
        };
        last_chunk = chunk;
        if let Err(e) = progress.step(&inner.hooks, &file.path, &file.file, file.ino, end) {
            // A write error seen here is seen once (the kernel reports it
            // to one waiter of this descriptor): the data may be lost, so
            // the store is poisoned as after a failed sync. Anything else
            // (a file system without the call) only ends the hints.
            let lost = matches!(
                e.raw_os_error(),
                Some(libc::EIO | libc::ENOSPC | libc::EDQUOT)
            );
            if lost {
                inner.poison.set("write back", &e);
            }
            if lost || !reported {
                inner
                    .meters
                    .background_error("writeback", &Error::io(&inner.path, "write back", e));
                reported = true;
            }
        }
    }
}

/// Starts the thread that syncs (`SyncPolicy::Interval`) and compacts.
pub(crate) fn spawn(inner: Arc<Inner>) -> Result<JoinHandle<()>> {
    let path = inner.path.clone();
    thread::Builder::new()
        .name("sessionlog-bg".into())
        .spawn(move || run(&inner))
        .map_err(|e| Error::io(path, "spawn background thread", e))
}

fn run(inner: &Inner) {
    let check = inner.opts.compact_check_interval;
    let tick = match inner.opts.sync {
        SyncPolicy::Interval(d) => d.min(check),
        SyncPolicy::Always => HEADER_SYNC_EVERY.min(check),
        SyncPolicy::Never => check,
    }
    .min(CHECK_FILES_EVERY);
    let mut next_check = Instant::now() + check;
    let mut failures = 0u32;
    // Every failure here is counted and traced (`Meters::background_error`)
    // as well as handled.
    let report = |what, r: Result<()>| {
        if let Err(e) = r {
            inner.meters.background_error(what, &e);
        }
    };
    if inner.open_sync_pending.swap(false, Ordering::AcqRel) {
        // A failure poisons the store; writers then report it.
        report("sync after recovery", inner.sync_all());
    }
    let mut checked_files = true;
    while !inner.stop.wait(tick) {
        // A failure poisons the handle; writers (and, for a truncated
        // file, readers) then report it. Traced once, not every tick.
        let files = inner
            .check_lock_file()
            .and_then(|()| inner.check_file_len());
        if checked_files && files.is_err() {
            report("check of the lock file and the log's length", files);
            checked_files = false;
        }
        if matches!(inner.opts.sync, SyncPolicy::Interval(_))
            && inner.commit.is_dirty()
            && !inner.poison.is_set()
        {
            // A failure poisons the store; writers then report it.
            report("interval sync", inner.sync_all());
        }
        if inner.opts.sync == SyncPolicy::Always
            && inner.commit.header_behind()
            && !inner.poison.is_set()
        {
            // Durable saves leave the header page to this: one full sync a
            // second at most brings the synced word on disk up to date.
            report("header sync", inner.sync_all());
        }
        // A save that found expired sessions holding the quota's room asks
        // for a compaction now (unless compactions are failing).
        let wanted = inner.compact_wanted.swap(false, Ordering::AcqRel) && failures == 0;
        if (wanted || Instant::now() >= next_check) && !inner.poison.is_set() {
            let mut wait = check;
            if wanted || worth_compacting(inner) {
                match compact::try_compact(&inner.compaction()) {
                    Ok(_) => failures = 0,
                    Err(e) => {
                        inner.meters.background_error("background compaction", &e);
                        // Visible to every process (`stats`), and retried
                        // later and later: a directory that cannot be
                        // written or a full disk must not make the thread
                        // rewrite the log in a loop.
                        inner
                            .lock
                            .set_status(inner.now_ms(), &format!("background compaction: {e}"));
                        failures += 1;
                        wait = check.saturating_mul(1 << failures.min(MAX_BACKOFF_DOUBLINGS));
                    }
                }
            }
            next_check = Instant::now() + wait;
            // The gauges, as often as the check (with a recorder only).
            inner.publish_gauges();
        }
    }
}

/// Grows `file` (appended up to `end`) by a growth step when `end` is
/// within [`writeback::grow_headroom`] of its end, without the write lock:
/// `fallocate` only reserves blocks and never shortens the file or touches
/// written data, so it cannot race a writer's own growth or append.
/// Nothing is grown while the space reserve is given back (a disk near
/// full): then each save grows the file by what it needs, as `write.rs`
/// decides. A full disk here is no error: the writer that needs the
/// space finds out. Returns the file's length as this left it (another
/// process may have grown it further since: files never shrink).
fn grow_ahead(inner: &Inner, file: &LogFile, end: u64) -> Result<u64> {
    let len = file.file_len()?;
    if end.saturating_add(writeback::grow_headroom(len)) <= len {
        return Ok(len);
    }
    let want = inner.opts.space_reserve;
    if want > 0 && reserve::held(&inner.site) < want {
        return Ok(len);
    }
    inner
        .hooks
        .before(IoEvent::Grow {
            path: &file.path,
            len: len + 1,
        })
        .map_err(|e| Error::io(&file.path, "grow file", e))?;
    match file.ensure_len(len + 1, len, false, false) {
        Err(e) if reserve::is_full(&e) => Ok(len),
        other => other,
    }
}

/// Whether dead and expired records are a large enough share of the log.
fn worth_compacting(inner: &Inner) -> bool {
    let st = inner.state.read();
    let log_bytes = st.applied - HEADER_SIZE;
    if log_bytes < inner.opts.compact_min_bytes {
        return false;
    }
    let now = inner.now_ms();
    let view = st.view();
    let expired: u64 = st
        .index
        .offsets()
        .filter_map(|off| {
            let b = view.tail(off);
            let (modified, expires) = format::peek_times(b)?;
            inner
                .expiry
                .expired(st.file.recorded_idle(), modified, expires, now)
                .then(|| format::peek_len(b).unwrap_or(0) as u64)
        })
        .sum();
    let garbage = log_bytes.saturating_sub(st.index.live_bytes()) + expired;
    garbage as f64 >= inner.opts.compact_garbage_ratio * log_bytes as f64
}
