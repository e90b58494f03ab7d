//! Reading ahead the hint of a compaction that another process is still
//! running, so that moving to its new file costs a replay of the few
//! records after the hint instead of a read of the whole hint.
//!
//! A compactor writes the hint of its new file before it takes the write
//! lock for the swap, then sets the old file's pending word to the new
//! file's token (`format::H_PENDING`). Every load and save compares that
//! word with the token this handle last saw (one atomic load from the
//! header's shared cache line); a new token starts a thread that reads and
//! checks the hint. When the swap comes, [`Pending::take`] hands the
//! checked hint over, waiting for the thread if it is still reading (it
//! started seconds earlier, so that wait is short), and the switch checks
//! it against the new file like any hint: a read-ahead can only save time.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::engine::file::LogFile;
use crate::engine::format::{self, StaticHeader};
use crate::engine::hint::{self, Checked};
use crate::engine::hook::Hooks;
use crate::trust::Owner;

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
}

#[derive(Debug, Default)]
enum Slot {
    #[default]
    Empty,
    /// A thread is reading the hint with this token.
    Reading(u64),
    /// The hint read for this token (`None`: it was missing or unusable).
    /// Kept until the swap to its file, or until another token replaces
    /// it (a compaction that failed leaves one here until the next).
    Read(u64, Option<Checked>),
}

impl Pending {
    /// Starts reading the pending hint if `file`'s pending word names one
    /// this handle has not seen. `file` is the view's current file: a
    /// hint describes at most as many bytes of records as it holds.
    pub fn watch(&self, file: &LogFile, owner: Owner, hooks: &Hooks) {
        let token = file.pending();
        if token == 0 || token == self.seen.load(Ordering::Relaxed) {
            return;
        }
        if self.seen.swap(token, Ordering::Relaxed) == token {
            return; // another thread of this handle started it
        }
        // Records of the old file, re-encoded, are what the hint indexes:
        // the new file up to the hint's end is no longer than the old one.
        let limit = file.file_len().unwrap_or(file.mapped_file_len);
        *self.shared.slot.lock() = Slot::Reading(token);
        let shared = Arc::clone(&self.shared);
        let log = file.path.clone();
        let hooks = hooks.clone();
        let read = move || {
            let checked = read_ahead(&log, limit, owner, &hooks, token);
            let mut slot = shared.slot.lock();
            if matches!(*slot, Slot::Reading(t) if t == token) {
                *slot = Slot::Read(token, checked);
            }
            shared.done.notify_all();
        };
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

    /// The hint read ahead for the file with header `header`, if one was
    /// read or is being read for it: waits for a read in progress.
    pub fn take(&self, header: &StaticHeader) -> Option<Checked> {
        let want = format::pending_token(header.generation, header.salt);
        let mut slot = self.shared.slot.lock();
        loop {
            match std::mem::take(&mut *slot) {
                Slot::Reading(t) if t == want => {
                    *slot = Slot::Reading(t);
                    self.shared.done.wait(&mut slot);
                }
                Slot::Read(t, checked) if t == want => return checked,
                other => {
                    *slot = other;
                    return None;
                }
            }
        }
    }
}

/// Reads and checks the hint, if it is the one `token` names.
fn read_ahead(log: &Path, limit: u64, owner: Owner, hooks: &Hooks, token: u64) -> Option<Checked> {
    let checked = hint::read(log, limit, owner, hooks).ok()?;
    (checked.token() == token).then_some(checked)
}
