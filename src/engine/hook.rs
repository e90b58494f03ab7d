//! The I/O seam: a hook that sees every write, growth, sync and rename the
//! engine makes to a store's files after opening (and the removal of the
//! compaction's temporary file), and may fail any of them. Tests use it to
//! inject failures at the N-th operation, to record what a power loss
//! would leave (what was synced, plus a prefix of what was not), and to
//! kill a process at a chosen step. Not part of the stable API.

use std::fmt;
use std::io;
use std::path::Path;

/// One I/O operation, reported before it is performed.
#[derive(Debug, Clone, Copy)]
// Only hooks read the fields, and only tests install hooks.
#[cfg_attr(not(feature = "unstable-internals"), allow(dead_code))]
pub enum IoEvent<'a> {
    /// `bytes` are about to be written at `offset` of `path` (a record, or
    /// one of the header's shared words).
    Write {
        /// The file.
        path: &'a Path,
        /// Where.
        offset: u64,
        /// What.
        bytes: &'a [u8],
    },
    /// `path` is about to grow to at least `len` bytes of zeros.
    Grow {
        /// The file.
        path: &'a Path,
        /// The length it needs.
        len: u64,
    },
    /// `path` is about to be synced (`fdatasync` or `fsync`).
    Sync {
        /// The file.
        path: &'a Path,
    },
    /// The committed bytes `[start, end)` of `path` are about to be
    /// written again, unchanged, with `RWF_DSYNC`: they (and nothing else
    /// of the file, the header page in particular) become durable.
    SyncRange {
        /// The file.
        path: &'a Path,
        /// First byte.
        start: u64,
        /// End of the range.
        end: u64,
    },
    /// Writeback of the committed bytes `[start, end)` of `path` is about
    /// to be started, behind the writers (`wait`: and waited for); a hint
    /// to the kernel, which makes nothing durable. A failure counts as the
    /// call's: an I/O error (`EIO`, `ENOSPC`, `EDQUOT`) poisons the handle,
    /// since the kernel reports a lost page to one waiter only.
    Writeback {
        /// The file.
        path: &'a Path,
        /// First byte (a page boundary, past the header page).
        start: u64,
        /// End of the range (a page boundary at or below the committed end).
        end: u64,
        /// Whether the call waits for the range's writeback to finish.
        wait: bool,
    },
    /// The pages of `[start, end)` of `path`, past the log's end, are about
    /// to be faulted in writable (`MADV_POPULATE_WRITE`) ahead of the
    /// writers that copy records into the map.
    Prefault {
        /// The file.
        path: &'a Path,
        /// First byte (a page boundary).
        start: u64,
        /// End of the range (a page boundary inside the file).
        end: u64,
    },
    /// `from` is about to be renamed over `to`.
    Rename {
        /// The new file.
        from: &'a Path,
        /// The path it replaces.
        to: &'a Path,
    },
    /// The directory holding `path` is about to be synced.
    SyncDir {
        /// A file in the directory.
        path: &'a Path,
    },
    /// On an open while other handles have the store open, the log file
    /// has just been mapped, `len` bytes long; its committed end is read
    /// next. Another handle may append meanwhile (tests grow the file
    /// here). A failure fails the open. A store's first opener, alone,
    /// reports no such event.
    Mapped {
        /// The log file.
        path: &'a Path,
        /// The file's length when it was mapped.
        len: u64,
    },
    /// A hint file is about to be read (on open, ahead of another
    /// process's swap, or on moving to a new file). A failure makes the
    /// hint unusable, as a read error would.
    ReadHint {
        /// The hint file.
        path: &'a Path,
    },
    /// Another process's compaction announced its new file, still at its
    /// temporary path `<log>.compact`, and this handle is about to map it
    /// ahead of the swap (on its read-ahead thread). A failure means no
    /// mapping is made: the switch maps the file itself.
    Premap {
        /// The compaction's temporary file.
        path: &'a Path,
    },
    /// This handle is about to replay the records `[from, to)` of another
    /// process's compaction file, still at its temporary path, into the
    /// hint it read ahead (on its read-ahead thread; `to` may fall inside
    /// a record, which is then replayed whole). A failure stops the replay
    /// ahead: the switch replays the rest.
    ReplayAhead {
        /// The compaction's temporary file.
        path: &'a Path,
        /// Where the replay starts: the end of what the hint reflects.
        from: u64,
        /// Where it stops, at most the compactor's committed word.
        to: u64,
    },
    /// The compaction's temporary file `<log>.compact` is about to be
    /// removed by its lock holder: a close after its hint (written or
    /// not), a compaction that failed, or a compaction that found a dead
    /// compactor's file there (it then starts a new file; failing this
    /// removal fails that compaction, which writes nothing). A failure
    /// leaves the file, which the next open or compaction removes.
    Remove {
        /// The temporary file.
        path: &'a Path,
    },
}

/// Sees (and may fail) the engine's I/O. Returning an error makes the
/// operation fail with it, without performing it; errors returned for
/// writes of the header's shared words are ignored (those are stores to
/// memory and cannot fail).
pub trait IoHook: Send + Sync + fmt::Debug {
    /// Called before each operation.
    fn before(&self, event: &IoEvent<'_>) -> io::Result<()>;
}

/// The hook a store was opened with, if any: every I/O site reports
/// through this.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hooks(pub Option<std::sync::Arc<dyn IoHook>>);

impl Hooks {
    /// Reports `event`; an error means the operation must not be done.
    pub fn before(&self, event: IoEvent<'_>) -> io::Result<()> {
        match &self.0 {
            Some(h) => h.before(&event),
            None => Ok(()),
        }
    }

    /// Reports a store to a shared header word of `path` (which cannot
    /// fail, so an error from the hook is ignored).
    pub fn word(&self, path: &Path, offset: usize, word: u64) {
        let _ = self.before(IoEvent::Write {
            path,
            offset: offset as u64,
            bytes: &word.to_le_bytes(),
        });
    }
}
