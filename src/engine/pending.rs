//! Reading ahead the hint of a compaction that another process is still
//! running, so that moving to its new file costs a replay of the few
//! records after the hint instead of a read of the whole hint.
//!
//! A compactor writes the hint of its new file before it takes the write
//! lock for the swap, then sets the old file's pending word to the new
//! file's token (`format::H_PENDING`). Every load and save compares that
//! word with the token this handle last saw (one atomic load from the
//! header's shared cache line); a new token starts a thread that reads and
//! checks the hint, then maps the compactor's new file (still at its
//! temporary path) and fills in the mapping's page tables. When the swap
//! comes, [`Pending::take`] hands both over, waiting for the thread if it
//! is still reading the hint (it started seconds earlier, so that wait is
//! short) and stopping it if it is still filling in page tables. The
//! switch checks both against the new file, the hint like any hint and
//! the mapping by inode ([`LogFile::adopt`]): a read-ahead can only save
//! time. Without the mapping, the switch's replay of the records after the
//! hint faults in a page of the new file for nearly every record (60 ms at
//! 10M sessions).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::engine::file::{self, LogFile, Premapped};
use crate::engine::format::{self, StaticHeader};
use crate::engine::hint::{self, Checked};
use crate::engine::hook::{Hooks, IoEvent};
use crate::trust::Owner;

/// Page tables are filled in steps of this many bytes, so that a swap
/// that comes meanwhile waits for one step at most (about 0.1 ms here).
const POPULATE_STEP: u64 = 4 << 20;

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
    done: Condvar,
    /// The token whose read-ahead should stop filling in page tables: its
    /// swap came, or another token replaced it.
    stop: AtomicU64,
}

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Empty,
    /// A thread is reading the hint with this token.
    Reading(u64),
    /// The hint read for this token (`None`: it was missing or unusable),
    /// and the mapping of its file. Kept until the swap to its file, or
    /// until the pending word is cleared or names another token (a
    /// compaction that failed).
    Read {
        token: u64,
        hint: Option<Checked>,
        map: Mapping,
    },
}

#[derive(Debug, Default)]
enum Mapping {
    /// The thread is still filling in its page tables.
    Populating,
    Ready(Premapped),
    #[default]
    None,
}

impl Pending {
    /// Starts reading the pending hint if `file`'s pending word names one
    /// this handle has not seen, and lets go of what was read ahead if the
    /// word was cleared. `file` is the view's current file: a hint
    /// describes at most as many bytes of records as it holds.
    pub fn watch(&self, file: &LogFile, owner: Owner, hooks: &Hooks) {
        let token = file.pending();
        let seen = self.seen.load(Ordering::Relaxed);
        if token == seen {
            return;
        }
        if token == 0 {
            // The compaction is over: moved past, or failed.
            if self.seen.swap(0, Ordering::Relaxed) != 0 {
                self.shared.stop.store(seen, Ordering::Relaxed);
                let old = std::mem::take(&mut *self.shared.slot.lock());
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
        let old = std::mem::replace(&mut *self.shared.slot.lock(), Slot::Reading(token));
        let_go(old);
        let shared = Arc::clone(&self.shared);
        let log = file.path.clone();
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

    /// The hint and the mapping read ahead for the file with header
    /// `header`, if they were read or are being read for it: waits for a
    /// read of the hint in progress, and stops the filling in of page
    /// tables (one step's wait).
    pub fn take(&self, header: &StaticHeader) -> (Option<Checked>, Option<Premapped>) {
        let want = format::pending_token(header.generation, header.salt);
        let mut slot = self.shared.slot.lock();
        loop {
            match std::mem::take(&mut *slot) {
                Slot::Reading(t) if t == want => {
                    *slot = Slot::Reading(t);
                    self.shared.done.wait(&mut slot);
                }
                Slot::Read {
                    token,
                    hint,
                    map: Mapping::Populating,
                } if token == want => {
                    self.shared.stop.store(token, Ordering::Relaxed);
                    *slot = Slot::Read {
                        token,
                        hint,
                        map: Mapping::Populating,
                    };
                    self.shared.done.wait(&mut slot);
                }
                Slot::Read { token, hint, map } if token == want => {
                    let map = match map {
                        Mapping::Ready(m) => Some(m),
                        Mapping::Populating | Mapping::None => None,
                    };
                    return (hint, map);
                }
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

/// The read-ahead thread for `token`: reads and checks the hint, publishes
/// it, then maps the new file and fills in its page tables.
fn read_ahead(shared: &Shared, log: &Path, limit: u64, owner: Owner, hooks: &Hooks, token: u64) {
    let checked = hint::read(log, limit, owner, hooks)
        .ok()
        .filter(|c| c.token() == token);
    let usable = checked.is_some();
    {
        let mut slot = shared.slot.lock();
        if !matches!(*slot, Slot::Reading(t) if t == token) {
            return;
        }
        *slot = Slot::Read {
            token,
            hint: checked,
            map: if usable {
                Mapping::Populating
            } else {
                Mapping::None
            },
        };
        shared.done.notify_all();
    }
    if !usable {
        return;
    }
    let tmp = file::sibling(log, ".compact");
    let pre = hooks
        .before(IoEvent::Premap { path: &tmp })
        .ok()
        .and_then(|()| Premapped::open(&tmp, owner));
    if let Some(pre) = &pre {
        populate(shared, pre, token);
    }
    let mut slot = shared.slot.lock();
    if let Slot::Read {
        token: t,
        map: map @ Mapping::Populating,
        ..
    } = &mut *slot
        && *t == token
    {
        *map = pre.map_or(Mapping::None, Mapping::Ready);
    }
    shared.done.notify_all();
}

/// Fills in `pre`'s page tables up to the file's length, again as far as
/// it grew meanwhile, until it stops growing or `token`'s read-ahead is
/// told to stop.
fn populate(shared: &Shared, pre: &Premapped, token: u64) {
    let mut from = 0;
    loop {
        let to = pre.file_len();
        if to <= from {
            return;
        }
        while from < to {
            if shared.stop.load(Ordering::Relaxed) == token {
                return;
            }
            let step = (to - from).min(POPULATE_STEP);
            if !pre.populate(from, from + step) {
                return;
            }
            from += step;
        }
    }
}
