//! Reading ahead the hint of a compaction that another process is still
//! running, and following its new file up to the swap, so that moving to
//! that file costs a replay of the few records written since the last
//! look instead of a read of the whole hint and of every record after it.
//!
//! A compactor writes the hint of its new file before it takes the write
//! lock for the swap, then sets the old file's pending word to the new
//! file's token (`format::H_PENDING`). Every load and save compares that
//! word with the token this handle last saw (one atomic load from the
//! header's shared cache line); a new token starts a thread that reads and
//! checks the hint, then maps the compactor's new file (still at its
//! temporary path) and follows it: it fills in the mapping's page tables
//! as the file grows, and replays into the hint's table the records the
//! compactor has written past the hint's end (up to the temporary file's
//! committed word, which the compactor raises after each write). When the
//! swap comes, [`Pending::take`] stops the thread (one step's wait, or the
//! rest of a hint still being read) and hands over the table and the
//! mapping. The switch checks both against the new file, the table like
//! any hint plus the inode its records were replayed from, the mapping by
//! inode ([`LogFile::adopt`]): a read-ahead can only save time. Without
//! it, the switch's replay after the hint faulted in a page for nearly
//! every record, and then still had what the compactor copied while
//! others read the hint (DESIGN.md §8 has the figures).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::engine::file::{LogFile, Premapped, Site};
use crate::engine::format::{self, StaticHeader};
use crate::engine::hint::{self, Checked};
use crate::engine::hook::{Hooks, IoEvent};
use crate::engine::recovery;
use crate::pace::Pace;
use crate::trust::Owner;

/// Page tables are filled in steps of this many bytes, so that a swap
/// that comes meanwhile waits for one step at most (about 25 µs here, a
/// few milliseconds when the step meets the disk), and the thread gives
/// the CPU up between steps (`crate::pace`).
const POPULATE_STEP: u64 = 1 << 20;
/// Records are replayed ahead in steps of about this many bytes (a few
/// hundred records, well under a millisecond even at 10M sessions).
const REPLAY_STEP: u64 = 128 << 10;
/// How often a read-ahead with nothing to do looks again (the compactor
/// writes what it caught up every 5 ms while others read the hint).
const POLL: Duration = Duration::from_millis(2);
/// A read-ahead stops after this long without anything new to replay (a
/// compactor that died, or was stopped), and after `FOLLOW_MAX` in all:
/// the switch replays whatever it did not.
const IDLE_STOP: Duration = Duration::from_secs(2);
const FOLLOW_MAX: Duration = Duration::from_secs(30);

/// A handle's read-ahead of pending hints.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The last token seen in the pending word (0: none).
    seen: AtomicU64,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    slot: Mutex<Slot>,
    /// Signalled when a read-ahead hands over what it read.
    done: Condvar,
    /// Signalled when a read-ahead is told to stop.
    wake: Condvar,
    /// The token whose read-ahead should stop: its swap came, or another
    /// token replaced it.
    stop: AtomicU64,
}

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Empty,
    /// A thread is reading the hint with this token, or following its file.
    Working(u64),
    /// What the thread read for this token: the hint (`None`: it was
    /// missing or unusable), extended with the records replayed ahead,
    /// and the mapping of its file. Kept until the swap to its file, or
    /// until the pending word is cleared or names another token (a
    /// compaction that failed).
    Read {
        token: u64,
        hint: Option<Checked>,
        map: Option<Premapped>,
    },
}

impl Pending {
    /// Starts reading the pending hint if `file`'s pending word names one
    /// this handle has not seen, and lets go of what was read ahead if the
    /// word was cleared. `file` is the view's current file: a hint
    /// describes at most as many bytes of records as it holds.
    #[inline]
    pub fn watch(&self, file: &LogFile, owner: Owner, hooks: &Hooks) {
        // Inline, the check every load and save makes; the rest is rare.
        let token = file.pending();
        let seen = self.seen.load(Ordering::Relaxed);
        if token != seen {
            self.watch_changed(file, owner, hooks, token, seen);
        }
    }

    /// [`Pending::watch`] when the pending word is not the one last seen.
    #[cold]
    #[inline(never)]
    fn watch_changed(&self, file: &LogFile, owner: Owner, hooks: &Hooks, token: u64, seen: u64) {
        if token == 0 {
            // The compaction is over: moved past, or failed.
            if self.seen.swap(0, Ordering::Relaxed) != 0 {
                self.shared.stop.store(seen, Ordering::Relaxed);
                let old = std::mem::take(&mut *self.shared.slot.lock());
                self.shared.wake.notify_all();
                self.shared.done.notify_all();
                let_go(old);
            }
            return;
        }
        let before = self.seen.swap(token, Ordering::Relaxed);
        if before == token {
            return; // another thread of this handle started it
        }
        // A read-ahead for another token was of a compaction that failed.
        self.shared.stop.store(before, Ordering::Relaxed);
        // Records of the old file, re-encoded, are what the hint indexes:
        // the new file up to the hint's end is no longer than the old one.
        let limit = file.file_len().unwrap_or(file.mapped_file_len);
        let old = std::mem::replace(&mut *self.shared.slot.lock(), Slot::Working(token));
        self.shared.wake.notify_all();
        let_go(old);
        let shared = Arc::clone(&self.shared);
        let log = file.site.clone();
        let hooks = hooks.clone();
        let read = move || read_ahead(&shared, &log, limit, owner, &hooks, token);
        if std::thread::Builder::new()
            .name("sessionlog-hint".into())
            .spawn(read)
            .is_err()
        {
            // No thread: the switch reads the hint itself, as without a
            // pending word.
            *self.shared.slot.lock() = Slot::Empty;
            self.shared.done.notify_all();
        }
    }

    /// Marks `token` as seen, for the compactor's own handle (it has the
    /// new file's index already).
    pub fn mark_seen(&self, token: u64) {
        self.seen.store(token, Ordering::Relaxed);
    }

    /// The hint (with the records replayed ahead) and the mapping read
    /// ahead for the file with header `header`, if they were read or are
    /// being read for it: stops the read-ahead and waits for it to hand
    /// them over (one step, or the rest of a hint being read).
    pub fn take(&self, header: &StaticHeader) -> (Option<Checked>, Option<Premapped>) {
        let want = format::pending_token(header.generation, header.salt);
        let mut slot = self.shared.slot.lock();
        loop {
            match std::mem::take(&mut *slot) {
                Slot::Working(t) if t == want => {
                    self.shared.stop.store(t, Ordering::Relaxed);
                    self.shared.wake.notify_all();
                    *slot = Slot::Working(t);
                    self.shared.done.wait(&mut slot);
                }
                Slot::Read { token, hint, map } if token == want => return (hint, map),
                other => {
                    *slot = other;
                    return (None, None);
                }
            }
        }
    }
}

/// Drops what was read ahead for a compaction that is over, on a thread
/// of its own: a hint of a large store and a mapping with its page tables
/// take milliseconds to free.
fn let_go(slot: Slot) {
    if matches!(slot, Slot::Read { .. }) {
        crate::engine::state::retire(slot);
    }
}

/// The read-ahead thread for `token`: reads and checks the hint, then maps
/// the new file and follows it ([`follow`]), and hands both over.
fn read_ahead(shared: &Shared, log: &Site, limit: u64, owner: Owner, hooks: &Hooks, token: u64) {
    let mut hint = hint::read(log, limit, owner, hooks)
        .ok()
        .filter(|c| c.token() == token);
    let mut map = None;
    if let Some(hint) = &mut hint
        && !stopped(shared, token)
    {
        let tmp = log.sibling(".compact");
        map = hooks
            .before(IoEvent::Premap { path: &tmp.path })
            .ok()
            .and_then(|()| Premapped::open(&tmp, owner));
        if let Some(pre) = &map {
            follow(shared, pre, hint, &tmp, hooks, token);
        }
    }
    let mut slot = shared.slot.lock();
    if matches!(*slot, Slot::Working(t) if t == token) {
        *slot = Slot::Read { token, hint, map };
        shared.done.notify_all();
    }
    // Otherwise the compaction is over (it failed, or another replaced
    // it): what was read is dropped here, off the request path.
}

fn stopped(shared: &Shared, token: u64) -> bool {
    shared.stop.load(Ordering::Relaxed) == token
}

/// Follows the compaction's file `pre` (at `tmp`) until told to stop:
/// fills in its page tables as far as it has grown, and replays into
/// `hint` the records the compactor has written past the hint's end, in
/// steps, each time it raises the file's committed word. Stops early once
/// the file at `tmp` is another (renamed over the log, or the compaction
/// failed) and nothing is left to replay, or when nothing came for
/// `IDLE_STOP`; and for good at a record that fails its check (this is
/// then not the file of `hint`, or it is damaged: the switch finds out).
fn follow(
    shared: &Shared,
    pre: &Premapped,
    hint: &mut Checked,
    tmp: &Site,
    hooks: &Hooks,
    token: u64,
) {
    let started = Instant::now();
    let mut idle_since = started;
    let (mut populated, mut populating) = (0, true);
    let mut replaying = true;
    let mut moved = false;
    let salt = hint.salt();
    let mut pace = Pace::new();
    while !stopped(shared, token) && started.elapsed() < FOLLOW_MAX {
        pace.chunk();
        let len = pre.file_len();
        if populating && populated < len {
            let to = len.min(populated + POPULATE_STEP);
            populating = pre.populate(populated, to);
            populated = to;
            continue;
        }
        if replaying
            && let Some(written) = pre.written()
            && written.end() > hint.end()
        {
            let (from, to) = (hint.end(), written.end().min(hint.end() + REPLAY_STEP));
            if hooks
                .before(IoEvent::ReplayAhead {
                    path: &tmp.path,
                    from,
                    to,
                })
                .is_err()
            {
                replaying = false;
                continue;
            }
            hint.extend(pre.ino(), |index, from| {
                let done = recovery::replay_records(&written, salt, from, to, index);
                replaying &= done.error.is_none();
                done.stop
            });
            idle_since = Instant::now();
            continue;
        }
        if moved || idle_since.elapsed() >= IDLE_STOP {
            return;
        }
        if !pre.is_at(tmp) {
            // One more look at the word, which the compactor raised for
            // the last time before its rename.
            moved = true;
            continue;
        }
        let mut slot = shared.slot.lock();
        if !stopped(shared, token) {
            shared.wake.wait_for(&mut slot, POLL);
        }
    }
}
