//! Compaction: rewrite the live sessions into a new file and swap it in.
//! Compaction is also expiry: expired and idle sessions are not copied.
//! Repair mode reuses the same writer to salvage a damaged log.
//!
//! Phase 1 copies the log up to a known offset without the write lock
//! (loads and saves go on), catches up with what was appended meanwhile,
//! fsyncs what it wrote and writes the hint (the new file's index). Phase
//! 2 takes the write lock, copies the few records appended since, fsyncs
//! them and the header, publishes this process's new view with a pointer
//! swap, marks the old file superseded, renames the new file over it and
//! fsyncs the directory. No step holds the state lock for longer than a
//! catch-up of a few records or a pointer swap.
//!
//! `run_locked` below calls the phases in order. The parts, each importing
//! only parts below it in this list (`.ci/layers.sh` checks):
//!
//! - `swap`: phase 2, under the write lock: the last records copied, the
//!   new file finished and swapped in;
//! - `hint_ahead`: the new file's hint, written and announced to other
//!   processes before the swap;
//! - `copy`: the snapshot of the index, the copy of the live sessions and
//!   the catch-ups with what was appended since;
//! - `repair`: salvaging a damaged log with the same writer;
//! - `close_hint`: the hint a close writes;
//! - `writer`: the new file; every record reaches it through
//!   `Writer::append` (encoded with the new file's salt, appended);
//! - `space`: the free-space check before a compaction starts;
//! - `temp`: the temporary file, whose lock serializes compactions.

mod close_hint;
mod copy;
mod hint_ahead;
mod repair;
mod space;
mod swap;
mod temp;
mod writer;

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use parking_lot::Mutex;

use crate::clock::Expiry;
use crate::engine::file::Site;
use crate::engine::follow::Follow;
use crate::engine::format::{self, Policy};
use crate::engine::hook::Hooks;
use crate::engine::reserve;
use crate::engine::state::StateLock;
use crate::engine::stats::CompactStats;
use crate::error::{Error, Result};
use crate::observe::{self, Meters};
use crate::poison::Poison;
use crate::session::is_expired;

/// For the crash tests of the close hint (`sessionlog::internals`).
#[cfg(feature = "unstable-internals")]
pub use close_hint::close_writes_hint;
pub(crate) use close_hint::hint_on_close;
pub(crate) use repair::repair;

use copy::{Copy, Snapshot};
use temp::TempFile;
use writer::Writer;

/// What a compaction works with: the store's file, locks and view, and
/// nothing else of the handle.
pub(crate) struct Handles<'a> {
    pub path: &'a Path,
    /// The log's directory and name.
    pub site: &'a Site,
    /// Catching up with the file (and the lock file, the writer mutex and
    /// group commit that the swap needs).
    pub follow: Follow<'a>,
    pub state: &'a StateLock,
    /// Serializes this process's compactions.
    pub compacting: &'a Mutex<()>,
    pub expiry: &'a Expiry,
    pub hooks: &'a Hooks,
    pub poison: &'a Poison,
    /// The space reserve's size (`LogOptions::space_reserve`).
    pub reserve: u64,
    /// The policy this handle's options ask for: what a compaction records
    /// in a store whose file records none yet (one of an earlier build).
    pub policy: Policy,
    /// Counts compactions, their duration and bytes; names the spans.
    pub meters: &'a Meters,
}

/// Compacts, waiting for any other compaction (of this process or
/// another) to finish first, at most the store's lock timeout in all: then
/// `Error::Busy`, nothing changed. With `set`, the new file records that
/// policy instead of the store's.
pub(crate) fn compact(
    h: &Handles<'_>,
    idle_cutoff_ms: Option<u64>,
    set: Option<Policy>,
) -> Result<CompactStats> {
    let deadline = Instant::now() + h.follow.lock.timeout();
    let Some(_local) = h.compacting.try_lock_until(deadline) else {
        return Err(Error::Busy {
            path: h.path.to_owned(),
            what: "another compaction in this process ran for longer than the lock timeout".into(),
        });
    };
    let tmp = TempFile::wait(h.site, h.follow.lock.owner, h.hooks, deadline)?;
    run(h, tmp, idle_cutoff_ms, set, &mut None)
}

/// What an erasing compaction leaves out: every session whose owner is
/// `owner` when the new file is swapped in, and any record of theirs.
pub(crate) struct Erase {
    owner: Vec<u8>,
    /// The ids of the sessions left out.
    ids: HashSet<Vec<u8>>,
    /// A session copied before it was saved for `owner` (during the copy):
    /// its earlier record is in the new file, so this attempt cannot be
    /// swapped in.
    copied_then_owned: bool,
}

/// Compacts leaving out every session of `owner` (`erase_sessions_of`),
/// waiting for any other compaction to finish first (at most the store's
/// lock timeout, as `compact`). Returns how many sessions it left out. The
/// new file never holds a byte of theirs, and the old file is replaced by
/// a rename, so a crash leaves them either all there or all erased
/// (DESIGN.md §9.1). Tries again, a few times, if a session was given to
/// `owner` while the copy ran, or another process compacted meanwhile.
pub(crate) fn compact_erasing(h: &Handles<'_>, owner: &[u8]) -> Result<usize> {
    let deadline = Instant::now() + h.follow.lock.timeout();
    let Some(_local) = h.compacting.try_lock_until(deadline) else {
        return Err(Error::Busy {
            path: h.path.to_owned(),
            what: "another compaction in this process ran for longer than the lock timeout".into(),
        });
    };
    for _ in 0..8 {
        let deadline = Instant::now() + h.follow.lock.timeout();
        let tmp = TempFile::wait(h.site, h.follow.lock.owner, h.hooks, deadline)?;
        let mut erase = Some(Erase {
            owner: owner.to_vec(),
            ids: HashSet::new(),
            copied_then_owned: false,
        });
        match run(h, tmp, None, None, &mut erase) {
            Ok(_) => return Ok(erase.map_or(0, |e| e.ids.len())),
            Err(Error::Busy { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Busy {
        path: h.path.to_owned(),
        what: "sessions kept being saved for this owner during the erasure".into(),
    })
}

/// Compacts unless a compaction is already running somewhere.
pub(crate) fn try_compact(h: &Handles<'_>) -> Result<Option<CompactStats>> {
    let Some(_local) = h.compacting.try_lock() else {
        return Ok(None);
    };
    match TempFile::try_acquire(h.site, h.follow.lock.owner, h.hooks)? {
        Some(tmp) => run(h, tmp, None, None, &mut None).map(Some),
        None => Ok(None),
    }
}

fn run(
    h: &Handles<'_>,
    tmp: TempFile,
    idle_cutoff_ms: Option<u64>,
    set: Option<Policy>,
    erase: &mut Option<Erase>,
) -> Result<CompactStats> {
    let _span = h.meters.span("compaction");
    let timer = h.meters.start();
    let result = run_locked(h, &tmp, idle_cutoff_ms, set, erase);
    h.meters.compacted(
        timer,
        result.as_ref().map(|c| (c.bytes_before, c.bytes_after)),
    );
    if result.is_ok() {
        // With the space the compaction freed (the old file is dropped by
        // now if the reserve was missing: see the end of `swap`).
        reserve::ensure(h.site, h.follow.lock.owner, h.reserve);
    }
    if result.is_err() {
        // Leave no half-written file behind; the lock dies with `tmp`.
        let _ = tmp.remove(h.hooks);
        // Nor an invitation to read its hint (a file still current).
        h.state.read().file.set_pending(0);
    }
    result
}

/// The phases of a compaction, holding the temporary file `tmp`.
fn run_locked(
    h: &Handles<'_>,
    tmp: &TempFile,
    idle_cutoff_ms: Option<u64>,
    set: Option<Policy>,
    erase: &mut Option<Erase>,
) -> Result<CompactStats> {
    // Phase 1: snapshot the index and copy, without the write lock and
    // holding the state lock only in short turns (loads and saves go on).
    let phase = observe::step_span("copy");
    let snap = Snapshot::take(h);
    let generation = format::next_generation(snap.src.header.generation).ok_or_else(|| {
        Error::corrupt(
            h.path,
            format::H_GENERATION as u64,
            "the generation is at its largest value, so a compaction cannot number its file \
             (`sessionlog check --repair` numbers the store's files from 1 again)",
        )
    })?;
    let now = h.expiry.now_ms();
    // The policy the new file records: the one being set, else the
    // store's, else (a file of an earlier build) this handle's options'.
    let policy = set.or(snap.src.policy).unwrap_or(h.policy);
    let recorded = snap.src.recorded_idle();
    // A session gone under the store's rule stays gone: a longer idle
    // limit being set does not bring back what the old one ended.
    let new_idle = set.map(|p| p.max_idle_ms).filter(|&ms| ms != 0);
    let dead = |modified: u64, expires: u64| {
        h.expiry.expired(recorded, modified, expires, now)
            || idle_cutoff_ms.is_some_and(|idle| is_expired(modified, 0, Some(idle), now))
            || new_idle.is_some_and(|idle| is_expired(modified, 0, Some(idle), now))
    };
    space::make_room(
        h.site,
        space::copy_estimate(&snap.view(), &snap.offsets, dead),
    )?;
    let w = Writer::new(tmp, h.site, h.hooks.clone())?;
    let mut c = Copy::live(w, snap, dead, erase)?;
    drop(phase);

    // Catch up without the lock: copy what was appended since the
    // snapshot, in passes, until a pass finds little new; make it durable
    // and write the hint; catch up (while other processes read the hint
    // ahead) and make it durable again; catch up once more. Records below
    // the committed end are never rewritten, so they can be read without
    // any lock. Under the lock only the records appended during the last
    // pass remain to be copied and synced.
    let phase = observe::step_span("catch_up");
    c.catch_up(h)?;
    c.sync_data()?;
    if let Some(lead) = hint_ahead::announce(h, &c, generation, now) {
        lead.wait(h, &mut c)?;
    }
    c.catch_up(h)?;
    // The real header goes in before the last fsync outside the lock (its
    // compaction figures count what was copied until then), so that once
    // that fsync returns the new file is a valid store up to there, and
    // the swap need not fsync under the write lock (`swap.rs`).
    let head = swap::header(&c, generation, now, c.copied);
    c.w.write_header(&head, Some(&policy))?;
    c.sync_data()?;
    c.catch_up(h)?;
    c.w.out.flush()?;
    drop(phase);

    // Phase 2: under the write lock, the rest of the copy and the swap.
    let _phase = observe::step_span("swap");
    swap::swap(h, tmp, c, generation, now)
}
