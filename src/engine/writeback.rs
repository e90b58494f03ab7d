//! The I/O a handle's writers leave to a thread of its own (DESIGN.md §6):
//!
//! - growing the log ahead of them: when an append comes within half a
//!   growth step of the file's end, the thread reserves the next step
//!   (`fallocate`, which on ext4 waited 4–32 ms for block bitmaps here),
//!   so that a save rarely grows the file itself;
//! - under `SyncPolicy::Never`, where writers copy records into the map,
//!   faulting in the pages ahead of them (`MADV_POPULATE_WRITE`): the
//!   first copy into a page of the file faulted, and the kernel allocated,
//!   zeroed and dirtied the page there, about two thirds of a save's time
//!   (DESIGN.md §4);
//! - with `LogOptions::writeback_every`, writeback behind them: it starts
//!   writeback of what was appended, a chunk at a time, so that the log's
//!   dirty pages stay a few MiB instead of the gigabytes the kernel lets
//!   pile up before its flusher starts (and before it makes writers wait).
//!
//! Writers only compare offsets: one that crosses a boundary wakes the
//! thread, which does every system call.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::engine::file;
use crate::engine::format::HEADER_SIZE;
use crate::engine::hook::{Hooks, IoEvent};
use crate::pace::Pace;
use crate::stop::StopSignal;

/// Default of `LogOptions::writeback_every`: off, until it is shown to
/// help (DESIGN.md §6: on this project's ext4 it made saves wait in
/// `pwrite` more often, not less).
pub(crate) const DEFAULT_EVERY: u64 = 0;

/// How far behind the newest chunk the thread waits for writeback to
/// finish: at most this much (and a chunk) is in flight at a time, so that
/// the disk's queue never holds hundreds of MiB ahead of other I/O.
const WAIT_BEHIND: u64 = 16 << 20;

/// The thread works only when a writer wakes it (a trickle of saves that
/// never fills a chunk threatens no burst: the kernel writes it back on
/// its own), or when the handle is dropped; this bounds its sleep.
pub(crate) const IDLE: Duration = Duration::from_secs(3600);

/// Pages are this long at least; only whole pages are written back.
const PAGE: u64 = 4096;

/// Writers wake the thread each time their appends cross a multiple of
/// this, and it faults in the pages up to `PREFAULT_AHEAD` past the log's
/// end: a burst of saves finds a few hundred pages ready, and little of
/// the file is dirtied ahead of a trickle.
const PREFAULT_EVERY: u64 = 256 << 10;

/// How far past the log's end the thread faults pages in.
const PREFAULT_AHEAD: u64 = 1 << 20;

/// The pieces it faults them in by.
const PREFAULT_PIECE: u64 = 256 << 10;

/// What writers share with the thread.
#[derive(Debug, Default)]
pub(crate) struct Writeback {
    /// Bytes appended between two writebacks; 0: none.
    every: u64,
    /// Whether the thread grows the log ahead of the writers.
    grow: bool,
    /// Whether the thread faults in the pages ahead of the writers.
    prefault: bool,
    /// The largest file length for which a writer asked for growth.
    asked: AtomicU64,
    /// Wakes the thread, or stops it.
    pub signal: StopSignal,
}

impl Writeback {
    /// A signal for a thread that writes back every `every` bytes (0:
    /// never), with `grow` grows the log ahead of the writers, and with
    /// `prefault` faults in the pages ahead of them (only where they write
    /// through the map).
    pub fn new(every: u64, grow: bool, prefault: bool) -> Writeback {
        Writeback {
            every,
            grow,
            prefault,
            asked: AtomicU64::new(0),
            signal: StopSignal::default(),
        }
    }

    /// Whether a thread runs for this handle.
    pub fn is_on(&self) -> bool {
        self.every != 0 || self.grow
    }

    /// The writeback chunk `end` lies in; `None` if the thread writes
    /// nothing back.
    pub fn chunk_of(&self, end: u64) -> Option<u64> {
        end.checked_div(self.every)
    }

    /// Whether the thread grows the log ahead.
    pub fn grows(&self) -> bool {
        self.grow
    }

    /// Whether the thread faults in the pages ahead of the writers.
    pub fn prefaults(&self) -> bool {
        self.prefault
    }

    /// A writer appended `[off, end)` to a file `file_len` long: wakes the
    /// thread when that crossed a writeback chunk's boundary or a multiple
    /// of `PREFAULT_EVERY`, or came within [`grow_headroom`] of the end
    /// (once per length).
    #[inline]
    pub fn appended(&self, off: u64, end: u64, file_len: u64) {
        let chunk = self.every != 0 && off / self.every != end / self.every;
        let prefault = self.prefault && off / PREFAULT_EVERY != end / PREFAULT_EVERY;
        let near = self.grow
            && end.saturating_add(grow_headroom(file_len)) > file_len
            && self.asked.fetch_max(file_len, Ordering::Relaxed) < file_len;
        if chunk || prefault || near {
            self.signal.wake();
        }
    }
}

/// How close to the end of a file `file_len` long an append wakes the
/// thread to grow it: half the next growth step.
pub(crate) fn grow_headroom(file_len: u64) -> u64 {
    file::growth_step(file_len, false) / 2
}

/// Where the thread got to in one file.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// The file (device, inode) the offsets are of.
    ino: (u64, u64),
    /// Writeback was started for `[HEADER_SIZE, started)`.
    started: u64,
    /// Writeback finished (or was waited for) below this.
    waited: u64,
}

impl Progress {
    /// Starts writeback of the whole pages of `file` (device and inode
    /// `ino`) below `end`, its committed end, past what was started
    /// before, and waits for the writeback started `WAIT_BEHIND` before
    /// them. The header page is never included: writers store the
    /// committed word into it through the map, and a page written back is
    /// write-protected until its next fault. Nor is the page `end` lies
    /// in: appends still fill it. Pages below a committed end are never
    /// written again, so cleaning them costs writers nothing.
    pub fn step(
        &mut self,
        hooks: &Hooks,
        path: &Path,
        file: &File,
        ino: (u64, u64),
        end: u64,
    ) -> io::Result<()> {
        if self.ino != ino {
            *self = Progress {
                ino,
                started: HEADER_SIZE,
                waited: HEADER_SIZE,
            };
        }
        let to = end / PAGE * PAGE;
        if to <= self.started {
            return Ok(());
        }
        range(hooks, path, file, self.started, to, false)?;
        self.started = to;
        let behind = to.saturating_sub(WAIT_BEHIND);
        if behind > self.waited {
            range(hooks, path, file, self.waited, behind, true)?;
            self.waited = behind;
        }
        Ok(())
    }
}

/// How far the thread faulted in pages ahead of the writers in one file.
#[derive(Debug, Default)]
pub(crate) struct Prefaulted {
    /// The file (device, inode) the offset is of.
    ino: (u64, u64),
    /// Pages below this were faulted in (or written) already.
    upto: u64,
}

impl Prefaulted {
    /// Faults in the pages of `file` from the log's end `end` to
    /// `PREFAULT_AHEAD` past it, within the file (`file_len` long) and its
    /// map, past what was faulted in before. Touches no byte: a writer
    /// copying into the page the end lies in, or a reader of the pages
    /// below it, sees only the kernel map in what was already there.
    pub fn step(
        &mut self,
        hooks: &Hooks,
        file: &crate::engine::file::LogFile,
        end: u64,
        file_len: u64,
    ) -> io::Result<()> {
        if self.ino != file.ino {
            *self = Prefaulted {
                ino: file.ino,
                upto: 0,
            };
        }
        let from = self.upto.max(end / PAGE * PAGE);
        let to = end
            .saturating_add(PREFAULT_AHEAD)
            .min(file_len)
            .min(file.map_len())
            / PAGE
            * PAGE;
        if to <= from {
            return Ok(());
        }
        hooks.before(IoEvent::Prefault {
            path: &file.path,
            start: from,
            end: to,
        })?;
        // In pieces, giving the CPU up between them (`crate::pace`): a
        // fault can take long when it meets the disk.
        let mut pace = Pace::new();
        let mut at = from;
        while at < to {
            let piece = to.min(at + PREFAULT_PIECE);
            file.prefault(at, piece)?;
            self.upto = piece;
            at = piece;
            pace.chunk();
        }
        Ok(())
    }
}

/// `sync_file_range(2)` over `[from, to)` of `file`: starts its writeback,
/// and with `wait` also waits for it (and for what was started before).
/// Also the compaction's write-behind of its new file. A wait reports a
/// writeback error to this file description once (a later `fsync` of it
/// then does not): callers fail on it.
pub(crate) fn range(
    hooks: &Hooks,
    path: &Path,
    file: &File,
    from: u64,
    to: u64,
    wait: bool,
) -> io::Result<()> {
    hooks.before(IoEvent::Writeback {
        path,
        start: from,
        end: to,
        wait,
    })?;
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    let (Ok(start), Ok(len)) = (
        libc::off64_t::try_from(from),
        libc::off64_t::try_from(to - from),
    ) else {
        return Ok(());
    };
    // SAFETY: sync_file_range only reads its integer arguments; the
    // descriptor is owned by `file`, borrowed for the call.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), start, len, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
