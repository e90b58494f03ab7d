//! Making appends durable: group commit. One thread syncs at a time;
//! threads that arrive meanwhile wait and are usually covered by the next
//! sync. The background thread's interval syncs come through here too.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::engine::format::{self, HEADER_SIZE};
use crate::engine::hook::{Hooks, IoEvent};
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

/// The log a sync works on: what group commit reads, reports and poisons.
pub(crate) struct Log<'a> {
    pub path: &'a Path,
    pub state: &'a StateLock,
    pub poison: &'a Poison,
    pub hooks: &'a Hooks,
    /// Keeps each sync's latency.
    pub meters: &'a Meters,
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
}

/// Counts a writing thread as in flight while it lives, for the group
/// commit of `SyncPolicy::Always` (other policies have no sync to gather
/// for, and skip the shared counter).
pub(crate) struct InFlight<'a>(&'a GroupCommit);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
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
            }),
            done: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            dirty: AtomicBool::new(dirty),
        }
    }

    /// Marks the calling thread as about to append, until the guard drops.
    pub fn enter(&self) -> Option<InFlight<'_>> {
        if self.policy != SyncPolicy::Always {
            return None;
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(InFlight(self))
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

    /// The store moved to another file (a compaction's swap), durable up
    /// to `synced`.
    pub fn switch_file(&self, generation: u64, synced: u64) {
        let mut s = self.synced.lock();
        s.generation = generation;
        s.synced = synced;
    }

    /// Returns once `end` in file `generation` is on stable storage (and,
    /// for [`SyncKind::Full`], the header too).
    pub fn sync_to(&self, log: &Log<'_>, generation: u64, end: u64, kind: SyncKind) -> Result<()> {
        let mut s = self.synced.lock();
        loop {
            let covered =
                s.generation > generation || (s.generation == generation && s.synced >= end);
            if covered && (kind == SyncKind::Range || !s.header_behind) {
                return Ok(());
            }
            if log.poison.is_set() {
                drop(s);
                return log.poison.check(log.path);
            }
            if s.running {
                self.done.wait(&mut s);
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
                let st = log.state.read();
                (Arc::clone(&st.file), st.applied)
            };
            self.dirty.store(false, Ordering::Release);
            let timer = log.meters.start();
            let result = match kind {
                SyncKind::Full => log
                    .hooks
                    .before(IoEvent::Sync { path: &file.path })
                    .and_then(|()| file.sync_data()),
                SyncKind::Range => {
                    // Everything below the synced word is durable already
                    // (whichever process synced it).
                    let from = file.synced().unwrap_or(HEADER_SIZE).min(upto);
                    log.hooks
                        .before(IoEvent::SyncRange {
                            path: &file.path,
                            start: from,
                            end: upto,
                        })
                        .and_then(|()| file.sync_range(from, upto))
                }
            };
            log.meters.synced(timer);
            if result.is_ok() {
                file.set_synced(upto);
                if let Some(w) = file.synced() {
                    log.hooks
                        .word(&file.path, format::H_SYNCED, format::encode_offset(w));
                }
            }
            s = self.synced.lock();
            s.running = false;
            self.done.notify_all();
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
                    log.poison.set("fsync", &e);
                    drop(s);
                    return Err(Error::io(log.path, "fsync", e));
                }
            }
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
