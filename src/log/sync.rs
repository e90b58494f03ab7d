//! Making appends durable: group commit for `SyncPolicy::Always`, and the
//! background thread that syncs on an interval and compacts when worth it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::log::compact;
use crate::log::format::{self, HEADER_SIZE};
use crate::log::hook::IoEvent;
use crate::log::index::Records;
use crate::log::options::SyncPolicy;
use crate::log::store::Inner;

/// What this process knows to be durable.
#[derive(Debug)]
pub(crate) struct SyncState {
    /// Generation of the file `synced` refers to.
    pub generation: u64,
    /// Everything before this offset is on stable storage.
    pub synced: u64,
    /// A thread is in `fdatasync` now; others wait for it.
    pub running: bool,
    /// The header's words on disk are behind: range syncs made records
    /// durable without writing the header page. The next full sync (the
    /// background thread's, `sync()`, close) writes it.
    pub header_behind: bool,
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

/// How often, at most, the background thread writes the header page
/// behind durable saves' range syncs.
const HEADER_SYNC_EVERY: Duration = Duration::from_secs(1);

/// Longest a sync leader waits for writers in flight to join its group.
const GATHER_FOR: Duration = Duration::from_micros(200);

impl Inner {
    /// Returns once `end` in file `generation` is on stable storage (and,
    /// for [`SyncKind::Full`], the header too). One thread syncs at a time;
    /// threads that arrive meanwhile wait and are usually covered by the
    /// next one (group commit).
    pub fn sync_to(&self, generation: u64, end: u64, kind: SyncKind) -> Result<()> {
        let mut s = self.sync.lock();
        loop {
            let covered =
                s.generation > generation || (s.generation == generation && s.synced >= end);
            if covered && (kind == SyncKind::Range || !s.header_behind) {
                return Ok(());
            }
            if self.is_poisoned() {
                drop(s);
                return self.sync_error();
            }
            if s.running {
                self.sync_done.wait(&mut s);
                continue;
            }
            s.running = true;
            if kind == SyncKind::Full {
                s.header_behind = false;
            }
            drop(s);
            if kind == SyncKind::Range {
                self.gather();
            }
            let (file, upto) = {
                let st = self.state.read();
                (Arc::clone(&st.file), st.applied)
            };
            self.dirty.store(false, Ordering::Release);
            let result = match kind {
                SyncKind::Full => self
                    .hook(IoEvent::Sync { path: &file.path })
                    .and_then(|()| file.sync_data()),
                SyncKind::Range => {
                    // Everything below the synced word is durable already
                    // (whichever process synced it).
                    let from = file.synced().unwrap_or(HEADER_SIZE).min(upto);
                    self.hook(IoEvent::SyncRange {
                        path: &file.path,
                        start: from,
                        end: upto,
                    })
                    .and_then(|()| file.sync_range(from, upto))
                }
            };
            if result.is_ok() {
                file.set_synced(upto, false);
                if let Some(w) = file.synced() {
                    self.hook_word(&file, format::H_SYNCED, format::encode_offset(w));
                }
            }
            s = self.sync.lock();
            s.running = false;
            self.sync_done.notify_all();
            match result {
                Ok(()) => {
                    if kind == SyncKind::Range {
                        s.header_behind = true;
                    }
                    let g = file.header.generation;
                    if g > s.generation {
                        s.generation = g;
                        s.synced = upto;
                    } else if g == s.generation {
                        s.synced = s.synced.max(upto);
                    }
                }
                Err(e) => {
                    self.poison("fsync", &e);
                    drop(s);
                    return Err(Error::io(&self.path, "fsync", e));
                }
            }
        }
    }

    fn sync_error(&self) -> Result<()> {
        Err(Error::Poisoned {
            path: self.path.clone(),
            cause: "fsync".into(),
        })
    }

    /// Syncs everything appended so far and records that in the header.
    pub fn sync_all(&self) -> Result<()> {
        let (generation, end) = {
            let st = self.state.read();
            (st.file.header.generation, st.applied)
        };
        self.sync_to(generation, end.max(HEADER_SIZE), SyncKind::Full)
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

/// Starts the thread that syncs (`SyncPolicy::Interval`) and compacts.
pub(crate) fn spawn_background(inner: Arc<Inner>) -> Result<JoinHandle<()>> {
    let path = inner.path.clone();
    thread::Builder::new()
        .name("sessionlog-bg".into())
        .spawn(move || background(&inner))
        .map_err(|e| Error::io(path, "spawn background thread", e))
}

fn background(inner: &Inner) {
    let check = inner.opts.compact_check_interval;
    let tick = match inner.opts.sync {
        SyncPolicy::Interval(d) => d.min(check),
        SyncPolicy::Always => HEADER_SYNC_EVERY.min(check),
        SyncPolicy::Never => check,
    };
    let mut next_check = Instant::now() + check;
    if inner.open_sync_pending.swap(false, Ordering::AcqRel) {
        // A failure poisons the store; writers then report it.
        let _ = inner.sync_all();
    }
    loop {
        {
            let mut stop = inner.stop.lock();
            if *stop {
                return;
            }
            inner.wake.wait_for(&mut stop, tick);
            if *stop {
                return;
            }
        }
        if matches!(inner.opts.sync, SyncPolicy::Interval(_))
            && inner.dirty.load(Ordering::Acquire)
            && !inner.is_poisoned()
        {
            // A failure poisons the store; writers then report it.
            let _ = inner.sync_all();
        }
        if inner.opts.sync == SyncPolicy::Always
            && inner.sync.lock().header_behind
            && !inner.is_poisoned()
        {
            // Durable saves leave the header page to this: one full sync a
            // second at most brings the synced word on disk up to date.
            let _ = inner.sync_all();
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + check;
            if worth_compacting(inner) {
                let _ = compact::try_compact(inner);
            }
        }
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
            let b = view.from(off);
            let (modified, expires) = format::peek_times(b)?;
            inner
                .expired(modified, expires, now)
                .then(|| format::peek_len(b).unwrap_or(0) as u64)
        })
        .sum();
    let garbage = log_bytes.saturating_sub(st.index.live_bytes()) + expired;
    garbage as f64 >= inner.opts.compact_garbage_ratio * log_bytes as f64
}
