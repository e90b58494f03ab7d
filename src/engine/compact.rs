//! Compaction: rewrite the live sessions into a new file and swap it in.
//! Compaction is also expiry: expired and idle sessions are not copied.
//! Repair mode reuses the same writer to salvage a damaged log.
//!
//! Phase 1 copies the log up to a known offset without the write lock
//! (loads and saves go on). Phase 2 takes the write lock, copies what was
//! appended meanwhile, fsyncs, marks the old file superseded, renames the
//! new file over it and fsyncs the directory.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::clock::Expiry;
use crate::engine::file::{self, LogFile, View};
use crate::engine::follow::Follow;
use crate::engine::format::{self, HEADER_SIZE, Kind, RecordFields, RecordRef, StaticHeader};
use crate::engine::hook::{Hooks, IoEvent};
use crate::engine::index::{Index, Records};
use crate::engine::lock::LockFile;
use crate::engine::read::{decode_at, session_at};
use crate::engine::recovery;
use crate::engine::state::{State, StateLock};
use crate::engine::stats::{CompactStats, RecoveryReport};
use crate::error::{Error, Result};
use crate::poison::Poison;
use crate::session::{from_millis, is_expired};
use crate::trust::{self, Create, Owner};

/// What a compaction works with: the store's file, locks and view, and
/// nothing else of the handle.
pub(crate) struct Handles<'a> {
    pub path: &'a Path,
    /// Catching up with the file (and the lock file, the writer mutex and
    /// group commit that the swap needs).
    pub follow: Follow<'a>,
    pub state: &'a StateLock,
    /// Serializes this process's compactions.
    pub compacting: &'a Mutex<()>,
    pub expiry: &'a Expiry,
    pub hooks: &'a Hooks,
    pub poison: &'a Poison,
}

/// The temporary file a compaction writes, locked by its compactor.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    /// Opens and locks `<log>.compact`, waiting for a compaction in another
    /// process to finish with it.
    fn wait(log: &Path, owner: Owner) -> Result<TempFile> {
        loop {
            if let Some(t) = Self::open_locked(log, owner, true)? {
                return Ok(t);
            }
        }
    }

    /// Opens and locks `<log>.compact`, or `None` if another compaction
    /// holds it.
    fn try_acquire(log: &Path, owner: Owner) -> Result<Option<TempFile>> {
        loop {
            match Self::open_locked(log, owner, false) {
                Ok(None) => continue,
                Err(Error::Busy { .. }) => return Ok(None),
                other => return other,
            }
        }
    }

    /// One attempt: `None` if the file locked was not the one at the path
    /// any more (the previous holder renamed or removed it): try again.
    ///
    /// The name is fixed, since its `flock` is what serializes compactions
    /// between processes; it is opened without following a link and must
    /// be a regular file of one link owned by the store's owner, so that a
    /// planted link or file is refused, never truncated or looped on.
    fn open_locked(log: &Path, owner: Owner, wait: bool) -> Result<Option<TempFile>> {
        let path = file::sibling(log, ".compact");
        let file = trust::open(&path, Create::IfMissing, owner)?;
        if wait {
            file.lock().map_err(|e| Error::io(&path, "lock", e))?;
        } else {
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
        }
        let mine = file.metadata().map_err(|e| Error::io(&path, "stat", e))?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.ino() == mine.ino() && m.dev() == mine.dev() => {
                file.set_len(0)
                    .map_err(|e| Error::io(&path, "truncate", e))?;
                Ok(Some(TempFile { path, file }))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, "stat", e)),
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

impl Records for Out {
    fn from(&self, offset: u64) -> &[u8] {
        if offset >= self.flushed {
            let start = usize::try_from(offset - self.flushed).unwrap_or(usize::MAX);
            self.buf.get(start..).unwrap_or(&[])
        } else {
            // SAFETY: the new file is this compaction's alone (it holds the
            // temporary file's lock; nobody else maps it), bytes below
            // `flushed` were written and are never written again (`finish`
            // writes only the header), and `flushed` is within its length.
            unsafe { self.log.bytes(offset, self.flushed) }
        }
    }
}

impl Out {
    fn push(&mut self, bytes: &[u8]) -> Result<u64> {
        if !self.buf.is_empty() && self.buf.len() + bytes.len() > FLUSH_AT {
            self.flush()?;
        }
        let off = self.pos;
        self.buf.extend_from_slice(bytes);
        self.pos += bytes.len() as u64;
        Ok(off)
    }

    fn flush(&mut self) -> Result<()> {
        self.hooks
            .before(IoEvent::Write {
                path: &tmp_path(&self.log),
                offset: self.flushed,
                bytes: &self.buf,
            })
            .and_then(|()| self.log.write_at(&self.buf, self.flushed))
            .map_err(|e| Error::io(&self.log.path, "write", e))?;
        self.flushed = self.pos;
        self.buf.clear();
        if self.flushed > self.log.map_len() {
            self.log = self.log.remapped()?;
        }
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
    fn new(tmp: &TempFile, path: &Path, hooks: Hooks) -> Result<Writer> {
        let f = tmp
            .file
            .try_clone()
            .map_err(|e| Error::io(&tmp.path, "dup", e))?;
        let placeholder = StaticHeader {
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
        let log = LogFile::from_file(path, f)?;
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
    fn put(
        &mut self,
        id: &[u8],
        version: u64,
        modified_ms: u64,
        expires_ms: u64,
        data: &[u8],
    ) -> Result<()> {
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
            },
            self.salt,
        );
        let off = self.out.push(&self.scratch)?;
        self.index.apply(&self.out, off, rec);
        Ok(())
    }

    /// Flushes, writes the header and fsyncs. Returns the file and index.
    fn finish(mut self, header: &StaticHeader) -> Result<(File, Index, u64)> {
        self.out.flush()?;
        let end = self.out.pos;
        let head = format::encode_header(
            &StaticHeader {
                salt: self.salt,
                compact_result_bytes: end,
                ..*header
            },
            end,
        );
        let out = self.out;
        let log = &out.log;
        out.hooks
            .before(IoEvent::Write {
                path: &tmp_path(log),
                offset: 0,
                bytes: &head,
            })
            .and_then(|()| log.write_at(&head, 0))
            .and_then(|()| {
                out.hooks.before(IoEvent::Sync {
                    path: &tmp_path(log),
                })
            })
            .and_then(|()| log.file.sync_all())
            .map_err(|e| Error::io(&log.path, "write and fsync", e))?;
        Ok((out.log.file, self.index, end))
    }
}

/// The temporary file's path (the `LogFile` of the file being written
/// carries the log's path for its error messages).
fn tmp_path(log: &LogFile) -> PathBuf {
    file::sibling(&log.path, ".compact")
}

/// Compacts, waiting for any other compaction to finish first.
pub(crate) fn compact(h: &Handles<'_>, idle_cutoff_ms: Option<u64>) -> Result<CompactStats> {
    let _local = h.compacting.lock();
    let tmp = TempFile::wait(h.path, h.follow.lock.owner)?;
    run(h, tmp, idle_cutoff_ms)
}

/// Compacts unless a compaction is already running somewhere.
pub(crate) fn try_compact(h: &Handles<'_>) -> Result<Option<CompactStats>> {
    let Some(_local) = h.compacting.try_lock() else {
        return Ok(None);
    };
    match TempFile::try_acquire(h.path, h.follow.lock.owner)? {
        Some(tmp) => run(h, tmp, None).map(Some),
        None => Ok(None),
    }
}

fn run(h: &Handles<'_>, tmp: TempFile, idle_cutoff_ms: Option<u64>) -> Result<CompactStats> {
    let result = run_locked(h, &tmp, idle_cutoff_ms);
    if result.is_err() {
        // Leave no half-written file behind; the lock dies with `tmp`.
        let _ = fs::remove_file(&tmp.path);
    }
    result
}

fn run_locked(
    h: &Handles<'_>,
    tmp: &TempFile,
    idle_cutoff_ms: Option<u64>,
) -> Result<CompactStats> {
    // Phase 1: snapshot the index and copy without the write lock.
    let (src, snapshot_end, mut offsets, live) = {
        let mut st = h.state.write();
        h.follow.refresh(&mut st)?;
        let offsets: Vec<u64> = st.index.offsets().collect();
        (
            Arc::clone(&st.file),
            st.applied,
            offsets,
            st.index.live_bytes(),
        )
    };
    offsets.sort_unstable();
    check_free_space(h.path, HEADER_SIZE + live)?;
    let now = h.expiry.now_ms();
    let dead = |modified: u64, expires: u64| {
        h.expiry.expired(modified, expires, now)
            || idle_cutoff_ms.is_some_and(|idle| is_expired(modified, 0, Some(idle), now))
    };
    let mut w = Writer::new(tmp, h.path, h.hooks.clone())?;
    w.index.reserve(offsets.len());
    // Sessions not copied, by id, with their latest offset in the old file.
    let mut dropped: HashMap<Vec<u8>, u64> = HashMap::new();
    {
        // SAFETY: `snapshot_end` was this process's applied end of `src`:
        // committed records, never rewritten, within the file.
        let view = unsafe { View::new(&src, snapshot_end) };
        for off in offsets {
            let (rec, data) = session_at(&view, off)?;
            if dead(rec.modified_ms, rec.expires_ms) {
                dropped.insert(rec.id.to_vec(), off);
                continue;
            }
            w.put(rec.id, rec.version, rec.modified_ms, rec.expires_ms, data)?;
        }
    }

    // Phase 2: under the write lock, copy what was appended meanwhile.
    let _writer = h.follow.writer.lock();
    let _lock = h.follow.lock.lock()?;
    let mut st = h.state.write();
    h.follow.refresh(&mut st)?;
    if st.file.ino != src.ino {
        return Err(Error::Busy {
            path: h.path.to_owned(),
            what: "another process compacted the log meanwhile".into(),
        });
    }
    let end = st.applied;
    let view = st.view();
    let mut off = snapshot_end;
    while off < end {
        let rec = decode_at(&view, off)?;
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
                        let (_, data) = session_at(&view, old)?;
                        w.put(rec.id, rec.version, rec.modified_ms, rec.expires_ms, data)?;
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
        off += rec.padded_len as u64;
    }
    let header = StaticHeader {
        generation: st.file.header.generation + 1,
        created_ms: now,
        compact_kept: w.index.len() as u64,
        compact_dropped: dropped.len() as u64,
        compact_source_bytes: end,
        compact_result_bytes: 0,
        salt: 0,
    };
    let (new_file, index, new_end) = w.finish(&header)?;

    // The swap. Mark first, so that a process that sees the mark either
    // finds the new file at the path or (while we hold the lock) keeps
    // reading the old one, which no one can change meanwhile.
    st.file.set_superseded(true);
    let renamed = h
        .hooks
        .before(IoEvent::Rename {
            from: &tmp.path,
            to: h.path,
        })
        .and_then(|()| fs::rename(&tmp.path, h.path));
    if let Err(e) = renamed {
        st.file.set_superseded(false);
        return Err(Error::io(h.path, "rename compacted file", e));
    }
    let dir_synced = h
        .hooks
        .before(IoEvent::SyncDir { path: h.path })
        .map_err(|e| Error::io(h.path, "fsync directory", e))
        .and_then(|()| file::sync_parent_dir(h.path));
    let new_log = Arc::new(LogFile::from_file(h.path, new_file)?);
    let word = new_log.committed_word();
    *st = State {
        file: new_log,
        index,
        applied: new_end,
        applied_word: word,
        file_len: new_end,
    };
    h.follow.commit.switch_file(header.generation, new_end);
    if let Err(e) = dir_synced {
        if let Error::Io { source, .. } = &e {
            h.poison
                .set("fsync of the directory after compaction", source);
        }
        return Err(e);
    }
    let _ = tmp.file.unlock();
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
/// damaged in the middle, keeps a copy of the damaged file, and swaps in a
/// clean file. Runs at open, under the write lock.
pub(crate) fn repair(
    path: &Path,
    lock: &LockFile,
    report: &mut RecoveryReport,
    now_ms: u64,
) -> Result<State> {
    let _lock = lock.lock()?;
    let damaged = LogFile::open(path, lock.owner)?;
    let copy = file::sibling(path, &format!(".damaged-{now_ms}"));
    keep_copy(path, &copy, lock.owner)?;
    let end = format::decode_offset(damaged.committed_word())
        .unwrap_or(damaged.map_len())
        .min(damaged.map_len());
    let end = end.min(damaged.mapped_file_len);
    // SAFETY: under the write lock and before any reader of this handle
    // exists; `end` is capped at the file's length. Other processes read
    // only below their applied ends, which no repair rewrites (the file is
    // replaced, not changed).
    let view = unsafe { View::new(&damaged, end) };
    let mut index = Index::default();
    let mut off = HEADER_SIZE;
    let mut bad_from: Option<u64> = None;
    let mut records = 0u64;
    while off < end {
        match format::decode_record_salted(view.tail(off), damaged.header.salt) {
            Ok(rec) => {
                if let Some(start) = bad_from.take() {
                    report.repaired_ranges.push((start, off - start));
                }
                index.apply(&view, off, &rec);
                records += 1;
                off += rec.padded_len as u64;
            }
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
    let tmp = TempFile::wait(path, lock.owner)?;
    let mut w = Writer::new(&tmp, path, Hooks::default())?;
    let mut offsets: Vec<u64> = index.offsets().collect();
    offsets.sort_unstable();
    for off in offsets {
        // A session whose put was lost to the damage cannot be salvaged.
        if let Ok((rec, data)) = session_at(&view, off) {
            w.put(rec.id, rec.version, rec.modified_ms, rec.expires_ms, data)?;
        }
    }
    let header = StaticHeader {
        generation: damaged.header.generation + 1,
        created_ms: now_ms,
        compact_kept: w.index.len() as u64,
        compact_dropped: 0,
        compact_source_bytes: end,
        compact_result_bytes: 0,
        salt: 0,
    };
    let (new_file, _, _) = w.finish(&header)?;
    damaged.set_superseded(true);
    fs::rename(&tmp.path, path).map_err(|e| Error::io(path, "rename repaired file", e))?;
    file::sync_parent_dir(path)?;
    report.records = records;
    report.damaged_copy = Some(copy);
    recovery::load_complete(Arc::new(LogFile::from_file(path, new_file)?))
}

/// Keeps a copy of the damaged log at `copy` (a new file, created with
/// `O_EXCL` and never through a link), durable before the log is replaced.
fn keep_copy(path: &Path, copy: &Path, owner: Owner) -> Result<()> {
    let mut out = trust::open(copy, Create::New, owner)?;
    let copied = File::open(path)
        .and_then(|mut src| io::copy(&mut src, &mut out))
        .and_then(|_| out.sync_all());
    if let Err(e) = copied {
        let _ = fs::remove_file(copy);
        return Err(Error::io(copy, "copy damaged file", e));
    }
    file::sync_parent_dir(copy)
}

/// Refuses to start a compaction that would fill the disk: the new file
/// needs about `estimate` bytes (what is live), and a tenth more plus
/// 16 MiB is left free besides. `statvfs` is one system call.
fn check_free_space(log: &Path, estimate: u64) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let dir = trust::parent(log);
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return Ok(());
    };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs
    // that the call fills in; it is read only if the call succeeded.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Ok(()); // no figure: let the writes report a full disk
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let need = estimate
        .saturating_add(estimate / 10)
        .saturating_add(16 << 20);
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
