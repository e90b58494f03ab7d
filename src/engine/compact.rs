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

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::clock::Expiry;
use crate::engine::file::{self, LogFile, Site, View};
use crate::engine::follow::Follow;
use crate::engine::format::{
    self, HEADER_SIZE, Kind, Policy, RecordFields, RecordRef, StaticHeader,
};
use crate::engine::hint;
use crate::engine::hook::{Hooks, IoEvent};
use crate::engine::index::{Index, Records};
use crate::engine::lock::LockFile;
use crate::engine::read::{decode_at, session_at};
use crate::engine::recovery;
use crate::engine::reserve;
use crate::engine::salvage;
use crate::engine::state::{State, StateLock};
use crate::engine::stats::{CompactStats, RecoveryReport};
use crate::error::{Error, Result};
use crate::observe::{self, Meters};
use crate::poison::Poison;
use crate::session::{from_millis, is_expired};
use crate::trust::{Create, Owner};

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

/// The temporary file a compaction writes, locked by its compactor.
struct TempFile {
    path: PathBuf,
    site: Site,
    file: File,
}

impl TempFile {
    /// Opens and locks `<log>.compact`, waiting until `deadline` at most
    /// for a compaction in another process to finish with it, then
    /// `Error::Busy`. `flock` has no timed wait: the lock is tried again
    /// after pauses that grow from 1 ms to 50 ms.
    fn wait(log: &Site, owner: Owner, hooks: &Hooks, deadline: Instant) -> Result<TempFile> {
        let mut pause = Duration::from_millis(1);
        loop {
            match Self::open_locked(log, owner, hooks) {
                Ok(Some(t)) => return Ok(t),
                Ok(None) => {}
                Err(Error::Busy { path, .. }) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Busy {
                            path,
                            what: "another compaction held the temporary file for longer \
                                   than the lock timeout"
                                .into(),
                        });
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens and locks `<log>.compact`, or `None` if another compaction
    /// holds it.
    fn try_acquire(log: &Site, owner: Owner, hooks: &Hooks) -> Result<Option<TempFile>> {
        loop {
            match Self::open_locked(log, owner, hooks) {
                Ok(None) => continue,
                Err(Error::Busy { .. }) => return Ok(None),
                other => return other,
            }
        }
    }

    /// One attempt: `None` if the file locked was not the one at the path
    /// any more (the previous holder renamed or removed it): try again;
    /// `Error::Busy` if another compaction holds it.
    ///
    /// The name is fixed, since its `flock` is what serializes compactions
    /// between processes; it is opened without following a link and must
    /// be a regular file of one link owned by the store's owner, so that a
    /// planted link or file is refused, never truncated or looped on.
    fn open_locked(log: &Site, owner: Owner, hooks: &Hooks) -> Result<Option<TempFile>> {
        let site = log.sibling(".compact");
        let path = site.path.clone();
        let file = site.open(Create::IfMissing, owner)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Busy {
                    path,
                    what: "another compaction holds the temporary file".into(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, "lock", e)),
        }
        let mine = file.metadata().map_err(|e| Error::io(&path, "stat", e))?;
        let mine_ino = (mine.dev(), mine.ino());
        match site.stat()? {
            Some(m) if m.ino() == mine_ino && mine.len() == 0 => {
                Ok(Some(TempFile { path, site, file }))
            }
            Some(m) if m.ino() == mine_ino => {
                // A dead compactor's file. Other processes may have mapped
                // it ahead of a swap that never came, and a file anyone
                // may have mapped is never shortened (a read of theirs
                // past its new end would raise SIGBUS): remove it, and
                // start on a new one.
                remove_temp(hooks, &site)
                    .map_err(|e| Error::io(&path, "remove stale temporary file", e))?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

/// The new file being written: records are buffered and written in large
/// `pwrite`s; what was written is read back through a mapping (the index
/// compares ids against records it already holds).
struct Out {
    log: LogFile,
    hooks: Hooks,
    /// Bytes `[HEADER_SIZE, flushed)` are in the file.
    flushed: u64,
    /// Bytes `[flushed, pos)`.
    buf: Vec<u8>,
    pos: u64,
}

const FLUSH_AT: usize = 1 << 20;
/// How far behind the writing the writeback of the new file may lag.
const WRITE_BEHIND: u64 = 8 << 20;

impl Records for Out {
    fn from(&self, offset: u64) -> &[u8] {
        if offset >= self.flushed {
            let start = usize::try_from(offset - self.flushed).unwrap_or(usize::MAX);
            self.buf.get(start..).unwrap_or(&[])
        } else {
            // SAFETY: only this compaction writes the new file (it holds the
            // temporary file's lock; other processes may map it ahead of
            // the swap, see `pending.rs`, but write nothing through that
            // mapping, and after the swap append only past its end), bytes
            // below `flushed` were written and are never written again
            // (`finish` writes only the header), and `flushed` is within
            // its length, which nothing shortens while this compaction
            // holds the lock.
            unsafe { self.log.bytes(offset, self.flushed) }
        }
    }
}

impl Out {
    /// Starts writeback of `[from, to)` (just written) and waits for the
    /// writeback of what was written `WRITE_BEHIND` bytes before it: the
    /// new file reaches the disk as it is written, a few MiB in flight at
    /// a time, instead of in one burst at the final fsync that would queue
    /// the foreground's writes behind hundreds of MiB. Only a hint to the
    /// kernel: durability still comes from the fsync.
    fn write_behind(&self, from: u64, to: u64) {
        use std::os::fd::AsRawFd;
        let fd = self.log.file.as_raw_fd();
        let (Ok(start), Ok(len)) = (
            libc::off64_t::try_from(from),
            libc::off64_t::try_from(to - from),
        ) else {
            return;
        };
        // SAFETY: sync_file_range only reads its integer arguments; the
        // descriptor is owned by `self.log.file`. Errors only mean the
        // hint was not taken.
        unsafe {
            libc::sync_file_range(fd, start, len, libc::SYNC_FILE_RANGE_WRITE);
        }
        let back = from.saturating_sub(WRITE_BEHIND);
        if back > HEADER_SIZE
            && let (Ok(start), Ok(len)) = (
                libc::off64_t::try_from(back),
                libc::off64_t::try_from(to - from),
            )
        {
            // SAFETY: as above.
            unsafe {
                libc::sync_file_range(
                    fd,
                    start,
                    len,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Result<u64> {
        if !self.buf.is_empty() && self.buf.len() + bytes.len() > FLUSH_AT {
            self.flush()?;
        }
        let off = self.pos;
        self.buf.extend_from_slice(bytes);
        self.pos += bytes.len() as u64;
        Ok(off)
    }

    /// Writes what is buffered, then raises the file's committed word to
    /// the end of it: other processes replay the new file ahead of the
    /// swap up to that word (see `pending.rs`).
    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.hooks
            .before(IoEvent::Write {
                path: &tmp_path(&self.log),
                offset: self.flushed,
                bytes: &self.buf,
            })
            .and_then(|()| self.log.write_at(&self.buf, self.flushed))
            .map_err(|e| Error::io(&self.log.path, "write", e))?;
        self.write_behind(self.flushed, self.pos);
        self.flushed = self.pos;
        self.buf.clear();
        if self.flushed > self.log.map_len() {
            self.log = self.log.remapped()?;
        }
        let word = self.log.set_committed(self.flushed);
        self.hooks
            .word(&tmp_path(&self.log), format::H_COMMITTED, word);
        Ok(())
    }
}

/// Writes the new file: a placeholder header, then records, then the real
/// header.
struct Writer {
    out: Out,
    index: Index,
    scratch: Vec<u8>,
    /// The new file's salt: every record is re-encoded with it.
    salt: u32,
}

impl Writer {
    fn new(tmp: &TempFile, log: &Site, hooks: Hooks) -> Result<Writer> {
        let f = tmp
            .file
            .try_clone()
            .map_err(|e| Error::io(&tmp.path, "dup", e))?;
        let placeholder = StaticHeader {
            version: format::FORMAT_VERSION,
            generation: 0,
            created_ms: 0,
            compact_kept: 0,
            compact_dropped: 0,
            compact_source_bytes: 0,
            compact_result_bytes: 0,
            salt: 0,
        };
        f.write_all_at(&format::encode_header(&placeholder, HEADER_SIZE), 0)
            .map_err(|e| Error::io(&tmp.path, "write", e))?;
        let log = LogFile::from_file(log, f)?;
        Ok(Writer {
            out: Out {
                log,
                hooks,
                flushed: HEADER_SIZE,
                buf: Vec::with_capacity(FLUSH_AT + (64 << 10)),
                pos: HEADER_SIZE,
            },
            index: Index::default(),
            scratch: Vec::new(),
            salt: file::new_salt(),
        })
    }

    /// Writes a put for `id` with the given state.
    fn put(&mut self, rec: &RecordRef<'_>, data: &[u8]) -> Result<()> {
        let RecordRef {
            id,
            version,
            modified_ms,
            expires_ms,
            owner,
            ..
        } = *rec;
        self.scratch.clear();
        format::encode_record_salted(
            &mut self.scratch,
            &RecordFields {
                kind: Kind::Put,
                id,
                data,
                version,
                modified_ms,
                expires_ms,
                owner,
            },
            self.salt,
        );
        let off = self.out.push(&self.scratch)?;
        self.index.insert(&self.out, id, off);
        Ok(())
    }

    /// Re-targets a touch at the session's put in the new file.
    fn touch(&mut self, rec: &RecordRef<'_>, current: u64) -> Result<()> {
        let put = format::peek_touch_target(self.out.from(current))
            .unwrap_or(current)
            .to_le_bytes();
        self.scratch.clear();
        format::encode_record_salted(
            &mut self.scratch,
            &RecordFields {
                kind: Kind::Touch,
                id: rec.id,
                data: &put,
                version: rec.version,
                modified_ms: rec.modified_ms,
                expires_ms: rec.expires_ms,
                owner: &[],
            },
            self.salt,
        );
        let off = self.out.push(&self.scratch)?;
        self.index.insert(&self.out, rec.id, off);
        Ok(())
    }

    /// Re-encodes a put or delete with the new file's salt and applies it.
    fn copy(&mut self, rec: &RecordRef<'_>) -> Result<()> {
        self.scratch.clear();
        format::encode_record_salted(
            &mut self.scratch,
            &RecordFields {
                kind: rec.kind,
                id: rec.id,
                data: rec.data,
                version: rec.version,
                modified_ms: rec.modified_ms,
                expires_ms: rec.expires_ms,
                owner: rec.owner,
            },
            self.salt,
        );
        let off = self.out.push(&self.scratch)?;
        self.index.apply(&self.out, off, rec);
        Ok(())
    }

    /// Flushes, writes the header and fsyncs. Returns the file (with the
    /// mapping it was read back through) and its index.
    fn finish(
        mut self,
        header: &StaticHeader,
        policy: Option<&Policy>,
    ) -> Result<(LogFile, Index, u64)> {
        self.out.flush()?;
        let end = self.out.pos;
        let mut head = format::encode_header(
            &StaticHeader {
                salt: self.salt,
                compact_result_bytes: end,
                ..*header
            },
            end,
        );
        let out = self.out;
        let log = &out.log;
        // Only the static part is written over the placeholder: the shared
        // words are stores through the mapping, since other processes may
        // be reading the committed word through theirs (`flush` already
        // raised it to `end`; the other words stay as the placeholder set
        // them, synced aside). The page is then `encode_header(.., end)`.
        if let Some(p) = policy {
            format::encode_policy(p, &mut head);
        }
        let static_part = &head[..format::H_POLICY_END];
        log.set_synced(end);
        out.hooks
            .word(&tmp_path(log), format::H_SYNCED, format::encode_offset(end));
        out.hooks
            .before(IoEvent::Write {
                path: &tmp_path(log),
                offset: 0,
                bytes: static_part,
            })
            .and_then(|()| log.write_at(static_part, 0))
            .and_then(|()| {
                out.hooks.before(IoEvent::Sync {
                    path: &tmp_path(log),
                })
            })
            .and_then(|()| log.file.sync_all())
            .map_err(|e| Error::io(&log.path, "write and fsync", e))?;
        Ok((out.log, self.index, end))
    }
}

/// The temporary file's path (the `LogFile` of the file being written
/// carries the log's path for its error messages).
fn tmp_path(log: &LogFile) -> PathBuf {
    file::sibling(&log.path, ".compact")
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

/// A hint written on close must save the next open the replay of at least
/// this many bytes (and an eighth of the log).
const CLOSE_HINT_MIN: u64 = 16 << 20;

/// Whether a close of a log applied up to offset `applied`, whose hint
/// reflects it up to `covered`, is worth a new hint: the next open would
/// replay at least 16 MiB (`CLOSE_HINT_MIN`) and an eighth of the log.
pub fn close_writes_hint(applied: u64, covered: u64) -> bool {
    applied.saturating_sub(covered) >= CLOSE_HINT_MIN.max(applied / 8)
}

/// On close: writes a hint for the current file if the next open would
/// otherwise replay much of it (a log that grew by overwrites since its
/// compaction), so that reopening costs what is live, not what was
/// written. Skipped, returning false, when a compaction runs (it writes
/// its own), when records past the synced end exist (a hint may only
/// stand for synced records), or when the existing hint covers nearly
/// all of the file.
pub(crate) fn hint_on_close(h: &Handles<'_>) -> Result<bool> {
    let owner = h.follow.lock.owner;
    let worth = |st: &State| {
        let covered = hint::covered(h.site, &st.file.header, owner).unwrap_or(HEADER_SIZE);
        close_writes_hint(st.applied, covered)
    };
    // Most closes stop here, touching no file.
    if !worth(&h.state.read()) {
        return Ok(false);
    }
    let Some(_local) = h.compacting.try_lock() else {
        return Ok(false);
    };
    let Some(tmp) = TempFile::try_acquire(h.site, owner, h.hooks)? else {
        return Ok(false);
    };
    // Holding the compaction's file: the view, followed to the current
    // file, stays current while the hint is written.
    let written = (|| {
        let st = h.follow.fresh()?;
        if st.file.synced() != Some(st.applied) || !worth(&st) {
            return Ok(false);
        }
        hint::write(
            h.site,
            &st.file.header,
            st.applied,
            &st.index,
            h.hooks,
            owner,
        )?;
        Ok(true)
    })();
    let _ = remove_temp(h.hooks, &tmp.site);
    written
}

/// Removes the compaction's temporary file, which the caller has locked.
fn remove_temp(hooks: &Hooks, tmp: &Site) -> io::Result<()> {
    hooks
        .before(IoEvent::Remove { path: &tmp.path })
        .and_then(|()| tmp.remove())
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
        // now if the reserve was missing: see the end of `run_locked`).
        reserve::ensure(h.site, h.follow.lock.owner, h.reserve);
    }
    if result.is_err() {
        // Leave no half-written file behind; the lock dies with `tmp`.
        let _ = remove_temp(h.hooks, &tmp.site);
        // Nor an invitation to read its hint (a file still current).
        h.state.read().file.set_pending(0);
    }
    result
}

/// How long, per byte of hint, a compaction waits after announcing its
/// hint before it swaps, so that other processes read the hint ahead
/// instead of with a request waiting (reading and checking it went at
/// about 300 MB/s here, slower while the compaction runs): 8 ns a byte,
/// 256 ms for a million sessions, 2.6 s for ten million.
/// It catches up meanwhile, so the swap's own work stays small.
const READ_AHEAD_NS_PER_BYTE: u64 = 8;
/// The wait is skipped when shorter than a step, and capped.
const LEAD_STEP: Duration = Duration::from_millis(5);
const LEAD_MAX: Duration = Duration::from_secs(5);

/// Slots of the index copied per turn of the state lock in phase 1.
const SNAPSHOT_SLOTS: usize = 1 << 15;
/// Phase 1 takes the index in parts this many times before it takes it
/// whole (a store removing sessions fast keeps moving slots).
const SNAPSHOT_TRIES: usize = 8;
/// Catch-up passes without the lock stop when fewer bytes than this were
/// appended during the last one: the rest is copied under the lock.
const CATCH_UP_UNTIL: u64 = 256 << 10;
const CATCH_UP_PASSES: usize = 8;

/// The offsets of every session's latest record, without holding the state
/// lock for more than a few thousand slots at a time. Returns them with
/// `from`, an applied end such that the offsets hold every session's
/// latest record as of `from` or later, and `upto`, an applied end past
/// every offset (both of the same file, `src`).
///
/// Why parts are enough: between two parts, writers only append (at or
/// past `from`) and change the index accordingly. A slot that changes in
/// place or is added holds a record at or past `from`, which the catch-up
/// from `from` copies again anyway; only a change that moves slots
/// (a removal's shift, a growth) can hide a session from the walk, and
/// the index counts those: the walk starts over if one happened.
fn snapshot(h: &Handles<'_>) -> (Arc<LogFile>, u64, u64, Vec<u64>) {
    for _ in 0..SNAPSHOT_TRIES {
        let (src, from, moves, slots) = {
            let st = h.state.read_turn();
            (
                Arc::clone(&st.file),
                st.applied,
                st.index.moves(),
                st.index.slot_count(),
            )
        };
        let mut offsets = Vec::with_capacity(slots / 2 + 16);
        let mut at = 0;
        let mut upto = from;
        let complete = loop {
            let st = h.state.read_turn();
            if st.file.ino != src.ino || st.index.moves() != moves {
                break false;
            }
            if at >= slots {
                upto = st.applied;
                break true;
            }
            st.index.offsets_in(at..at + SNAPSHOT_SLOTS, &mut offsets);
            at += SNAPSHOT_SLOTS;
        };
        if complete {
            // `src` may map less than `upto` if the file grew meanwhile.
            let st = h.state.read_turn();
            if st.file.ino == src.ino {
                return (Arc::clone(&st.file), from, upto.max(from), offsets);
            }
        }
    }
    let st = h.state.read_turn();
    let offsets = st.index.offsets().collect();
    (Arc::clone(&st.file), st.applied, st.applied, offsets)
}

/// Copies the records of `view` in `[from, to)` into the new file: puts
/// and deletes re-encoded, touches re-aimed at their session's put in the
/// new file (a touch of a session that phase 1 judged idle brings it back).
/// An erasing compaction leaves out the puts of its owner and the touches
/// and deletes of the sessions it left out.
fn copy_range(
    w: &mut Writer,
    view: &View<'_>,
    from: u64,
    to: u64,
    dropped: &mut HashMap<Vec<u8>, u64>,
    erase: &mut Option<Erase>,
) -> Result<()> {
    let mut off = from;
    while off < to {
        let rec = decode_at(view, off)?;
        off += rec.padded_len as u64;
        if let Some(e) = erase.as_mut() {
            if rec.kind == Kind::Put && rec.owner == e.owner.as_slice() {
                dropped.remove(rec.id);
                if w.index.get(&w.out, rec.id).is_some() {
                    e.copied_then_owned = true;
                }
                e.ids.insert(rec.id.to_vec());
                continue;
            }
            if e.ids.contains(rec.id) {
                if rec.kind == Kind::Put {
                    // Saved anew for another owner: it lives on as theirs.
                    e.ids.remove(rec.id);
                } else {
                    continue;
                }
            }
        }
        match rec.kind {
            Kind::Put => {
                dropped.remove(rec.id);
                w.copy(&rec)?;
            }
            Kind::Touch => match w.index.get(&w.out, rec.id) {
                Some(current) => w.touch(&rec, current)?,
                None => {
                    // Touched after phase 1 judged it idle: it lives after all.
                    if let Some(old) = dropped.remove(rec.id) {
                        let (put, data) = session_at(view, old)?;
                        let revived = RecordRef {
                            owner: put.owner,
                            ..rec
                        };
                        if erase
                            .as_ref()
                            .is_some_and(|e| put.owner == e.owner.as_slice())
                        {
                            continue;
                        }
                        w.put(&revived, data)?;
                    }
                }
            },
            Kind::Delete => {
                dropped.remove(rec.id);
                if w.index.get(&w.out, rec.id).is_some() {
                    w.copy(&rec)?;
                }
            }
        }
    }
    Ok(())
}

/// Copies what was appended to `src` since `copied`, in passes, until a
/// pass finds less than `CATCH_UP_UNTIL` bytes new. Returns the end copied.
fn catch_up(
    h: &Handles<'_>,
    w: &mut Writer,
    src: &mut Arc<LogFile>,
    mut copied: u64,
    dropped: &mut HashMap<Vec<u8>, u64>,
    erase: &mut Option<Erase>,
) -> Result<u64> {
    for _ in 0..CATCH_UP_PASSES {
        let end = committed_now(h.path, src)?;
        if end < copied {
            break; // a torn tail was cut: phase 2 finds out under the lock
        }
        // SAFETY: `end` is the committed end of `src`, within its mapping
        // and the file (checked by `committed_now`).
        let view = unsafe { View::new(src, end) };
        copy_range(w, &view, copied, end, dropped, erase)?;
        let appended = end - copied;
        copied = end;
        if appended < CATCH_UP_UNTIL {
            break;
        }
    }
    Ok(copied)
}

/// The committed end of `src` as any process may read it now, with a
/// mapping of `src` that covers it.
fn committed_now(path: &Path, src: &mut Arc<LogFile>) -> Result<u64> {
    let end = format::decode_offset(src.committed_word()).ok_or_else(|| {
        Error::corrupt(
            path,
            format::H_COMMITTED as u64,
            "the committed-length word is damaged",
        )
    })?;
    if end > src.mapped_file_len {
        let len = src.file_len()?;
        if end > len {
            return Err(Error::corrupt(
                path,
                end,
                "committed length beyond the end of the file",
            ));
        }
        if end > src.map_len() {
            *src = Arc::new(src.remapped()?);
        }
    }
    Ok(end)
}

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
    let (mut src, from, upto, mut offsets) = snapshot(h);
    let generation = format::next_generation(src.header.generation).ok_or_else(|| {
        Error::corrupt(
            h.path,
            format::H_GENERATION as u64,
            "the generation is at its largest value, so a compaction cannot number its file \
             (`sessionlog check --repair` numbers the store's files from 1 again)",
        )
    })?;
    offsets.sort_unstable();
    let now = h.expiry.now_ms();
    // The policy the new file records: the one being set, else the
    // store's, else (a file of an earlier build) this handle's options'.
    let policy = set.or(src.policy).unwrap_or(h.policy);
    let recorded = src.recorded_idle();
    // A session gone under the store's rule stays gone: a longer idle
    // limit being set does not bring back what the old one ended.
    let new_idle = set.map(|p| p.max_idle_ms).filter(|&ms| ms != 0);
    let dead = |modified: u64, expires: u64| {
        h.expiry.expired(recorded, modified, expires, now)
            || idle_cutoff_ms.is_some_and(|idle| is_expired(modified, 0, Some(idle), now))
            || new_idle.is_some_and(|idle| is_expired(modified, 0, Some(idle), now))
    };
    {
        // SAFETY: as for the copy below.
        let view = unsafe { View::new(&src, upto) };
        make_room(h.site, copy_estimate(&view, &offsets, dead))?;
    }
    let mut w = Writer::new(tmp, h.site, h.hooks.clone())?;
    w.index.reserve(offsets.len());
    // Sessions not copied, by id, with their latest offset in the old file.
    let mut dropped: HashMap<Vec<u8>, u64> = HashMap::new();
    {
        // SAFETY: `upto` was this process's applied end of `src`:
        // committed records, never rewritten, within the file.
        let view = unsafe { View::new(&src, upto) };
        for off in offsets {
            let (rec, data) = session_at(&view, off)?;
            if let Some(e) = erase.as_mut()
                && rec.owner == e.owner.as_slice()
            {
                // Expired or not, nothing of it is copied; only the live
                // ones count as erased.
                if !dead(rec.modified_ms, rec.expires_ms) {
                    e.ids.insert(rec.id.to_vec());
                }
                continue;
            }
            if dead(rec.modified_ms, rec.expires_ms) {
                dropped.insert(rec.id.to_vec(), off);
                continue;
            }
            w.put(&rec, data)?;
        }
    }

    drop(phase);
    // Catch up without the lock: copy what was appended since `from`, in
    // passes, until a pass finds little new; make it durable; write the
    // hint; catch up once more. Records below the committed end are never
    // rewritten, so they can be read without any lock. Under the lock
    // only the records appended during the last pass remain to be copied
    // and synced.
    let phase = observe::step_span("catch_up");
    let mut copied = from;
    let mut hint_written = false;
    let mut announced = None;
    for round in 0..3 {
        if round == 1
            && let Some((at, lead)) = announced
        {
            // Give other processes the time to read the hint ahead (see
            // `READ_AHEAD_NS_PER_BYTE`), catching up meanwhile.
            while let Some(left) = Duration::checked_sub(lead, Instant::elapsed(&at)) {
                std::thread::sleep(left.min(LEAD_STEP));
                copied = catch_up(h, &mut w, &mut src, copied, &mut dropped, erase)?;
                // Written out at once, for other processes to replay
                // ahead of the swap.
                w.out.flush()?;
            }
        }
        copied = catch_up(h, &mut w, &mut src, copied, &mut dropped, erase)?;
        if round == 2 {
            w.out.flush()?;
            break;
        }
        w.out.flush()?;
        h.hooks
            .before(IoEvent::Sync {
                path: &tmp_path(&w.out.log),
            })
            .and_then(|()| w.out.log.file.sync_data())
            .map_err(|e| Error::io(&tmp.path, "fsync", e))?;
        if !hint_written {
            hint_written = true;
            let header = StaticHeader {
                version: format::FORMAT_VERSION,
                generation,
                created_ms: now,
                compact_kept: 0,
                compact_dropped: 0,
                compact_source_bytes: 0,
                compact_result_bytes: 0,
                salt: w.salt,
            };
            if hint::write(
                h.site,
                &header,
                w.out.pos,
                &w.index,
                h.hooks,
                h.follow.lock.owner,
            )
            .is_err()
            {
                // A compaction does not need a hint: without one, others replay.
                hint::remove(h.site);
            } else {
                // Invite other processes to read the hint now, before the
                // swap, rather than after it with a request waiting.
                let token = format::pending_token(header.generation, header.salt);
                h.follow.pending.mark_seen(token);
                src.set_pending(token);
                let bytes = (w.index.slot_count() as u64).saturating_mul(16);
                let lead = Duration::from_nanos(bytes.saturating_mul(READ_AHEAD_NS_PER_BYTE))
                    .min(LEAD_MAX);
                if lead >= LEAD_STEP {
                    announced = Some((Instant::now(), lead));
                }
            }
        }
    }
    drop(phase);
    // Phase 2: under the write lock (no process appends), copy what was
    // appended since the catch-up. The state lock is taken only to catch
    // up and, at the end, to publish the new view.
    let _phase = observe::step_span("swap");
    let _writer = h.follow.writer.lock();
    let _lock = h.follow.lock.lock()?;
    let (old_file, end) = {
        let st = h.follow.fresh()?;
        if st.file.ino != src.ino {
            return Err(Error::Busy {
                path: h.path.to_owned(),
                what: "another process compacted the log meanwhile".into(),
            });
        }
        (Arc::clone(&st.file), st.applied)
    };
    if end < copied {
        return Err(Error::Busy {
            path: h.path.to_owned(),
            what: "the log was cut back during the compaction".into(),
        });
    }
    {
        // SAFETY: `end` is this process's applied end of the file, and
        // under the write lock nobody appends or cuts.
        let view = unsafe { View::new(&old_file, end) };
        copy_range(&mut w, &view, copied, end, &mut dropped, erase)?;
    }
    if erase.as_ref().is_some_and(|e| e.copied_then_owned) {
        return Err(Error::Busy {
            path: h.path.to_owned(),
            what: "a session was given to the owner being erased during the copy".into(),
        });
    }
    let header = StaticHeader {
        version: format::FORMAT_VERSION,
        generation,
        created_ms: now,
        compact_kept: w.index.len() as u64,
        compact_dropped: dropped.len() as u64,
        compact_source_bytes: end,
        compact_result_bytes: 0,
        salt: 0,
    };
    let (written, index, new_end) = w.finish(&header, Some(&policy))?;
    // The mapping the compaction read the new file back through stays:
    // unmapping it here, its page tables filled in by the id comparisons,
    // held every writer for 11 ms at ten million sessions (1-3 ms at one
    // million).
    let new_log = Arc::new(written.with_header_read_again()?);
    let word = new_log.committed_word();

    // The swap. This process's view moves to the new file first (it is
    // complete, and nobody can append meanwhile): its readers never see
    // the mark below, so never wait for a switch. Then the mark, so that a
    // process that sees it either finds the new file at the path or
    // (while we hold the lock) keeps reading the old one, which no one can
    // change meanwhile.
    let previous = std::mem::replace(
        &mut *h.state.write(),
        State {
            file: new_log,
            index,
            applied: new_end,
            applied_word: word,
            file_len: new_end,
        },
    );
    old_file.set_superseded(true);
    let renamed = check_before_rename(&tmp.site, &tmp.file, h.site, old_file.ino).and_then(|()| {
        h.hooks
            .before(IoEvent::Rename {
                from: &tmp.path,
                to: h.path,
            })
            .and_then(|()| tmp.site.rename_to(h.site))
            .map_err(|e| Error::io(h.path, "rename compacted file", e))
    });
    if let Err(e) = renamed {
        old_file.set_superseded(false);
        *h.state.write() = previous;
        return Err(e);
    }
    let dir_synced = h
        .hooks
        .before(IoEvent::SyncDir { path: h.path })
        .map_err(|e| Error::io(h.path, "fsync directory", e))
        .and_then(|()| h.site.sync_dir());
    h.follow.commit.switch_file(header.generation, new_end);
    if let Err(e) = dir_synced {
        if let Error::Io { source, .. } = &e {
            h.poison
                .set("fsync of the directory after compaction", source);
        }
        return Err(e);
    }
    let _ = tmp.file.unlock();
    drop(_lock);
    drop(_writer);
    if h.reserve > 0 && reserve::held(h.site) < h.reserve {
        // The space reserve was given back (a full disk): drop the old
        // file here, so that its blocks are free (unless another process
        // still maps it) when `run` makes the reserve again.
        drop(previous);
    } else {
        crate::engine::state::retire(previous);
    }
    Ok(CompactStats {
        kept: header.compact_kept,
        dropped: header.compact_dropped,
        bytes_before: end,
        bytes_after: new_end,
        generation: header.generation,
        finished: from_millis(now),
    })
}

/// Repair mode: salvages every record that passes its checksum from a log
/// damaged in the middle or in its header, keeps a copy of the damaged
/// file, and swaps in a clean file. Runs at open, under the write lock.
///
/// A damaged header is read as `salvage` says: mended if one bit flipped,
/// else rebuilt from the records' salt and the hint. Without a committed
/// word the scan runs to the end of the file; with one, it goes on past
/// it while complete records follow, as the first opener does (§6).
pub(crate) fn repair(
    log: &Site,
    lock: &LockFile,
    report: &mut RecoveryReport,
    now_ms: u64,
) -> Result<State> {
    let _span = observe::step_span("repair");
    let _lock = lock.lock()?;
    let (src, head, len) = read_head(log, lock.owner)?;
    let copy = log.sibling(&format!(".damaged-{now_ms}"));
    keep_copy(&src, &copy, lock.owner)?;
    // The hint helps only to name the generation of a rebuilt header; it
    // is read as for a file of at least 64 MiB, so that one of a file cut
    // short is still read, and one of any size costs bounded memory.
    let hint = hint::read(log, len.max(64 << 20), lock.owner, &Hooks::default())
        .ok()
        .map(|c| c.identity());
    let placeholder = StaticHeader {
        version: format::FORMAT_VERSION,
        generation: 0,
        created_ms: 0,
        compact_kept: 0,
        compact_dropped: 0,
        compact_source_bytes: 0,
        compact_result_bytes: 0,
        salt: 0,
    };
    let mut damaged = LogFile::open_damaged(log, lock.owner, placeholder)?;
    let file_len = damaged.mapped_file_len;
    let found = {
        // SAFETY: under the write lock, and the file is being replaced,
        // never changed; `file_len` is its length.
        let all = unsafe { View::new(&damaged, file_len) };
        salvage::header(&head, all.range(HEADER_SIZE, file_len), hint)
    };
    damaged.header = found.header;
    report.header_repair = found.fix.describe().map(str::to_owned);
    let end = found.committed.unwrap_or(file_len).min(file_len);
    // SAFETY: under the write lock and before any reader of this handle
    // exists; `file_len` is the file's length. Other processes read only
    // below their applied ends, which no repair rewrites (the file is
    // replaced, not changed).
    let view = unsafe { View::new(&damaged, file_len) };
    let mut index = Index::default();
    let mut off = HEADER_SIZE;
    let mut bad_from: Option<u64> = None;
    let mut records = 0u64;
    // Past `end`, only an unbroken run of complete records is taken.
    while off < file_len && (off < end || bad_from.is_none()) {
        match format::decode_record_salted(view.tail(off), damaged.header.salt) {
            Ok(rec) => {
                if let Some(start) = bad_from.take() {
                    report.repaired_ranges.push((start, off - start));
                }
                index.apply(&view, off, &rec);
                records += 1;
                if off >= end {
                    report.records_past_committed += 1;
                }
                off += rec.padded_len as u64;
            }
            Err(_) if off >= end => break,
            Err(_) => {
                bad_from.get_or_insert(off);
                off += format::RECORD_ALIGN as u64;
            }
        }
    }
    if let Some(start) = bad_from {
        // Zeros after the last record are space reserved for appends (when
        // the committed word was lost, the scan runs to the end of the file).
        if view.range(start, end).iter().any(|&b| b != 0) {
            report.repaired_ranges.push((start, end - start));
        }
    }
    let hooks = Hooks::default();
    let tmp = TempFile::wait(log, lock.owner, &hooks, Instant::now() + lock.timeout())?;
    let mut w = Writer::new(&tmp, log, hooks)?;
    let mut offsets: Vec<u64> = index.offsets().collect();
    offsets.sort_unstable();
    for off in offsets {
        // A session whose put was lost to the damage cannot be salvaged.
        if let Ok((rec, data)) = session_at(&view, off) {
            w.put(&rec, data)?;
        }
    }
    let header = StaticHeader {
        version: format::FORMAT_VERSION,
        // At the last generation (only a crafted header gets there) the
        // count starts again.
        generation: format::next_generation(damaged.header.generation).unwrap_or(1),
        created_ms: now_ms,
        compact_kept: w.index.len() as u64,
        compact_dropped: 0,
        compact_source_bytes: end,
        compact_result_bytes: 0,
        salt: 0,
    };
    // The policy the damaged file recorded, if that part of it is intact;
    // else none, and the next compaction records the opener's.
    let policy = format::decode_policy(&head).ok().flatten();
    let (new_file, _, _) = w.finish(&header, policy.as_ref())?;
    if file_len >= HEADER_SIZE {
        // Processes that have the damaged file open move to the new one.
        damaged.set_superseded(true);
    }
    check_before_rename(&tmp.site, &tmp.file, log, damaged.ino)?;
    tmp.site
        .rename_to(log)
        .map_err(|e| Error::io(&log.path, "rename repaired file", e))?;
    log.sync_dir()?;
    report.records = records;
    report.damaged_copy = Some(copy.path);
    recovery::load_complete(Arc::new(new_file.with_header_read_again()?))
}

/// The log, opened without trusting its header, its first bytes up to a
/// header's worth (fewer if the file is shorter), and its length.
fn read_head(log: &Site, owner: Owner) -> Result<(File, Vec<u8>, u64)> {
    let f = log.open(Create::No, owner)?;
    let len = f
        .metadata()
        .map_err(|e| Error::io(&log.path, "stat", e))?
        .len();
    let mut head = vec![0u8; len.min(HEADER_SIZE) as usize];
    f.read_exact_at(&mut head, 0)
        .map_err(|e| Error::io(&log.path, "read header", e))?;
    Ok((f, head, len))
}

/// Keeps a copy of the damaged log (open as `src`) at `copy` (a new file,
/// created with `O_EXCL` and never through a link), durable before the
/// log is replaced.
fn keep_copy(src: &File, copy: &Site, owner: Owner) -> Result<()> {
    let mut out = copy.open(Create::New, owner)?;
    let copied = src
        .try_clone()
        .and_then(|s| io::copy(&mut PositionedReader(s, 0), &mut out))
        .and_then(|_| out.sync_all());
    if let Err(e) = copied {
        let _ = copy.remove();
        return Err(Error::io(&copy.path, "copy damaged file", e));
    }
    copy.sync_dir()
}

/// Reads a file from an offset with positioned reads (a shared descriptor's
/// file offset is left alone).
struct PositionedReader(File, u64);

impl io::Read for PositionedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read_at(buf, self.1)?;
        self.1 += n as u64;
        Ok(n)
    }
}

/// Checks, through the directory's descriptor, that the temporary file
/// `tmp` (open as `file`) and the log `log` (the file `log_ino`) are still
/// the files at their names, just before the rename that puts one in the
/// other's place: a rename must never replace a file this compaction did
/// not read, nor move one it did not write.
fn check_before_rename(tmp: &Site, file: &File, log: &Site, log_ino: (u64, u64)) -> Result<()> {
    let m = file
        .metadata()
        .map_err(|e| Error::io(&tmp.path, "stat", e))?;
    if !tmp.holds((m.dev(), m.ino())) {
        return Err(Error::Busy {
            path: tmp.path.clone(),
            what: "the compaction's temporary file was replaced or removed during the compaction"
                .into(),
        });
    }
    if !log.holds(log_ino) {
        return Err(Error::Busy {
            path: log.path.clone(),
            what: "the log was replaced or removed during the compaction".into(),
        });
    }
    Ok(())
}

/// What the new file and its hint will take for the sessions at `offsets`
/// (latest records in `view`) that the copy keeps: those neither expired
/// nor idle, each as one put (a touched session's put, with its data).
/// Sessions that will be dropped take nothing: a disk filled by sessions
/// that then expired must still let the compaction that frees it start.
/// Reads only record headers; an unreadable one counts as kept (the copy
/// reports it).
fn copy_estimate(view: &View<'_>, offsets: &[u64], dead: impl Fn(u64, u64) -> bool) -> u64 {
    let mut bytes = HEADER_SIZE;
    let mut kept = 0u64;
    for &off in offsets {
        let rec = view.tail(off);
        if format::peek_times(rec).is_some_and(|(modified, expires)| dead(modified, expires)) {
            continue;
        }
        let put = format::peek_touch_target(rec).map_or(rec, |p| view.tail(p));
        bytes = bytes.saturating_add(format::peek_len(put).unwrap_or(0) as u64);
        kept += 1;
    }
    // The hint: a 96-byte frame and 16 bytes a slot, at most 3/4 full.
    let slots = (kept.saturating_mul(4) / 3 + 1).next_power_of_two().max(16);
    bytes
        .saturating_add(96)
        .saturating_add(slots.saturating_mul(16))
}

/// Checks that the compaction fits (`check_free_space`), giving the space
/// reserve back if the disk has room with it and not without: a disk
/// filled by sessions that then expired, to the last byte, still lets the
/// compaction that frees it start.
fn make_room(log: &Site, estimate: u64) -> Result<()> {
    let refused = match check_free_space(log, estimate) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let held = reserve::held(log);
    let free = reserve::free_bytes(log).unwrap_or(0);
    if held == 0 || free.saturating_add(held) < estimate.saturating_add(estimate / 10) {
        return Err(refused);
    }
    reserve::release(log);
    Ok(())
}

/// Refuses to start a compaction that would fill the disk: the new file
/// and its hint need about `estimate` bytes (what will be copied), and a
/// tenth more is left free besides, for what is appended meanwhile (the
/// margin scales with the copy: a fixed one refused to free a small disk
/// that expired sessions had filled). `fstatvfs` of the directory is one
/// system call.
fn check_free_space(log: &Site, estimate: u64) -> Result<()> {
    let dir = log.dir.path();
    let Some(free) = log.dir.free_bytes() else {
        return Ok(()); // no figure: let the writes report a full disk
    };
    let need = estimate.saturating_add(estimate / 10);
    if free < need {
        return Err(Error::io(
            dir,
            "compact",
            io::Error::new(
                io::ErrorKind::StorageFull,
                format!("{free} bytes free, a compaction needs about {need}; not started"),
            ),
        ));
    }
    Ok(())
}
