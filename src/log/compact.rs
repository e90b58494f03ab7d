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
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::log::file::{self, LockFile, LogFile};
use crate::log::format::{self, HEADER_SIZE, Kind, RecordFields, StaticHeader};
use crate::log::index::{Entry, Index};
use crate::log::recovery::{self, State};
use crate::log::stats::{CompactStats, RecoveryReport};
use crate::log::store::Inner;
use crate::session::{from_millis, is_expired};

/// The temporary file a compaction writes, locked by its compactor.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    /// Opens and locks `<log>.compact`. With `wait` false, returns `None`
    /// if another compaction holds it.
    fn acquire(log: &Path, wait: bool) -> Result<Option<TempFile>> {
        let path = file::sibling(log, ".compact");
        loop {
            let file = file::open_rw(&path, true)?;
            if wait {
                file.lock().map_err(|e| Error::io(&path, "lock", e))?;
            } else {
                match file.try_lock() {
                    Ok(()) => {}
                    Err(fs::TryLockError::WouldBlock) => return Ok(None),
                    Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, "lock", e)),
                }
            }
            // The previous holder may have renamed this inode into place or
            // another opener removed it: only the file still at the path counts.
            let mine = file.metadata().map_err(|e| Error::io(&path, "stat", e))?;
            match fs::symlink_metadata(&path) {
                Ok(m) if m.ino() == mine.ino() && m.dev() == mine.dev() => {
                    file.set_len(0)
                        .map_err(|e| Error::io(&path, "truncate", e))?;
                    return Ok(Some(TempFile { path, file }));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, "stat", e)),
            }
        }
    }
}

/// Writes records into the new file after its header.
struct Writer {
    out: BufWriter<File>,
    pos: u64,
    index: Index,
    buf: Vec<u8>,
    path: PathBuf,
}

impl Writer {
    fn new(tmp: &TempFile) -> Result<Writer> {
        let mut f = tmp
            .file
            .try_clone()
            .map_err(|e| Error::io(&tmp.path, "dup", e))?;
        f.seek(SeekFrom::Start(HEADER_SIZE))
            .map_err(|e| Error::io(&tmp.path, "seek", e))?;
        Ok(Writer {
            out: BufWriter::with_capacity(1 << 20, f),
            pos: HEADER_SIZE,
            index: Index::default(),
            buf: Vec::new(),
            path: tmp.path.clone(),
        })
    }

    /// Re-encodes a `Put` for `id` with the entry's current metadata.
    fn put(&mut self, id: &str, e: &Entry, data: &[u8]) -> Result<()> {
        self.buf.clear();
        let len = format::encode_record(
            &mut self.buf,
            &RecordFields {
                kind: Kind::Put,
                id: id.as_bytes(),
                data,
                version: e.version,
                modified_ms: e.modified_ms,
                expires_ms: e.expires_ms,
            },
        );
        self.out
            .write_all(&self.buf)
            .map_err(|err| Error::io(&self.path, "write", err))?;
        self.index.insert_entry(
            id,
            Entry {
                offset: self.pos,
                len: len as u32,
                ..*e
            },
        );
        self.pos += len as u64;
        Ok(())
    }

    /// Copies an already valid record verbatim and applies it.
    fn raw(&mut self, bytes: &[u8], rec: &format::RecordRef<'_>) -> Result<()> {
        self.out
            .write_all(&bytes[..rec.padded_len])
            .map_err(|err| Error::io(&self.path, "write", err))?;
        self.index.apply(self.pos, rec);
        self.pos += rec.padded_len as u64;
        Ok(())
    }

    /// Flushes, writes the header and fsyncs. Returns the file and index.
    fn finish(mut self, header: &StaticHeader) -> Result<(File, Index, u64)> {
        self.out
            .flush()
            .map_err(|e| Error::io(&self.path, "write", e))?;
        let f = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.path, "write", e.into_error()))?;
        let head = format::encode_header(header, self.pos);
        f.write_all_at(&head, 0)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(&self.path, "write and fsync", e))?;
        Ok((f, self.index, self.pos))
    }
}

fn read_put<'a>(file: &'a LogFile, id: &str, e: &Entry) -> Result<&'a [u8]> {
    let rec = format::decode_record(file.bytes(e.offset, e.offset + u64::from(e.len)))
        .map_err(|err| Error::corrupt(&file.path, e.offset, err.to_string()))?;
    if rec.kind != Kind::Put || rec.id != id.as_bytes() {
        return Err(Error::corrupt(
            &file.path,
            e.offset,
            "the index points at another record",
        ));
    }
    Ok(rec.data)
}

/// Compacts, waiting for any other compaction to finish first.
pub(crate) fn compact(inner: &Inner, idle_cutoff_ms: Option<u64>) -> Result<CompactStats> {
    let _local = inner.compacting.lock();
    let tmp = TempFile::acquire(&inner.path, true)?.ok_or_else(|| {
        Error::io(
            &inner.path,
            "compact",
            io::Error::other("temporary file busy"),
        )
    })?;
    run(inner, tmp, idle_cutoff_ms)
}

/// Compacts unless a compaction is already running somewhere.
pub(crate) fn try_compact(inner: &Inner) -> Result<Option<CompactStats>> {
    let Some(_local) = inner.compacting.try_lock() else {
        return Ok(None);
    };
    match TempFile::acquire(&inner.path, false)? {
        Some(tmp) => run(inner, tmp, None).map(Some),
        None => Ok(None),
    }
}

fn run(inner: &Inner, tmp: TempFile, idle_cutoff_ms: Option<u64>) -> Result<CompactStats> {
    let result = run_locked(inner, &tmp, idle_cutoff_ms);
    if result.is_err() {
        // Leave no half-written file behind; the lock dies with `tmp`.
        let _ = fs::remove_file(&tmp.path);
    }
    result
}

fn run_locked(inner: &Inner, tmp: &TempFile, idle_cutoff_ms: Option<u64>) -> Result<CompactStats> {
    // Phase 1: snapshot the index and copy without the write lock.
    let (src, snapshot_end, mut entries) = {
        let mut st = inner.state.write();
        inner.refresh(&mut st)?;
        let entries: Vec<(SessionId, Entry)> =
            st.index.iter().map(|(k, e)| (k.clone(), *e)).collect();
        (Arc::clone(&st.file), st.applied, entries)
    };
    entries.sort_unstable_by_key(|(_, e)| e.offset);
    let now = inner.now_ms();
    let dead = |e: &Entry| {
        inner.is_expired(e, now)
            || idle_cutoff_ms.is_some_and(|idle| is_expired(e.modified_ms, 0, Some(idle), now))
    };
    let mut w = Writer::new(tmp)?;
    let mut dropped: HashMap<SessionId, Entry> = HashMap::new();
    for (id, e) in entries {
        if dead(&e) {
            dropped.insert(id, e);
            continue;
        }
        let data = read_put(&src, id.as_str(), &e)?;
        w.put(id.as_str(), &e, data)?;
    }

    // Phase 2: under the write lock, copy what was appended meanwhile.
    let _writer = inner.writer.lock();
    let _flock = inner.lock.lock()?;
    let mut st = inner.state.write();
    inner.refresh(&mut st)?;
    if st.file.ino != src.ino {
        return Err(Error::io(
            &inner.path,
            "compact",
            io::Error::other("the log was replaced during compaction"),
        ));
    }
    let end = st.applied;
    let mut off = snapshot_end;
    while off < end {
        let bytes = st.file.bytes(off, end);
        let rec = format::decode_record(bytes)
            .map_err(|err| Error::corrupt(&inner.path, off, err.to_string()))?;
        let id = std::str::from_utf8(rec.id).unwrap_or_default();
        match rec.kind {
            Kind::Put => {
                dropped.remove(id);
                w.raw(bytes, &rec)?;
            }
            Kind::Touch if w.index.get(id).is_none() => {
                // Touched after phase 1 judged it idle: it lives after all.
                if let Some(mut e) = dropped.remove(id) {
                    let data = read_put(&st.file, id, &e)?;
                    e.modified_ms = rec.modified_ms;
                    w.put(id, &e, data)?;
                }
            }
            Kind::Touch => w.raw(bytes, &rec)?,
            Kind::Delete => {
                dropped.remove(id);
                if w.index.get(id).is_some() {
                    w.raw(bytes, &rec)?;
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
    };
    let (new_file, index, new_end) = w.finish(&header)?;

    // The swap. Mark first, so that a process that sees the mark either
    // finds the new file at the path or (while we hold the lock) keeps
    // reading the old one, which no one can change meanwhile.
    st.file.set_superseded(true);
    if let Err(e) = fs::rename(&tmp.path, &inner.path) {
        st.file.set_superseded(false);
        return Err(Error::io(&inner.path, "rename compacted file", e));
    }
    let dir_synced = file::sync_parent_dir(&inner.path);
    let new_log = Arc::new(LogFile::from_file(&inner.path, new_file)?);
    let word = new_log.committed_word();
    *st = State {
        file: new_log,
        index,
        applied: new_end,
        applied_word: word,
        file_len: new_end,
    };
    {
        let mut s = inner.sync.lock();
        s.generation = header.generation;
        s.synced = new_end;
    }
    if let Err(e) = dir_synced {
        if let Error::Io { source, .. } = &e {
            inner.poison("fsync of the directory after compaction", source);
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
    let _flock = lock.lock()?;
    let damaged = LogFile::open(path)?;
    let copy = file::sibling(path, &format!(".damaged-{now_ms}"));
    fs::copy(path, &copy).map_err(|e| Error::io(&copy, "copy damaged file", e))?;
    let end = format::decode_offset(damaged.committed_word())
        .unwrap_or(damaged.map_len())
        .min(damaged.map_len());
    let mut index = Index::default();
    let mut off = HEADER_SIZE;
    let mut bad_from: Option<u64> = None;
    let mut records = 0u64;
    while off < end {
        match format::decode_record(damaged.bytes(off, end)) {
            Ok(rec) => {
                if let Some(start) = bad_from.take() {
                    report.repaired_ranges.push((start, off - start));
                }
                index.apply(off, &rec);
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
        report.repaired_ranges.push((start, end - start));
    }
    let tmp = TempFile::acquire(path, true)?
        .ok_or_else(|| Error::io(path, "repair", io::Error::other("temporary file busy")))?;
    let mut w = Writer::new(&tmp)?;
    let mut entries: Vec<(&SessionId, &Entry)> = index.iter().collect();
    entries.sort_unstable_by_key(|(_, e)| e.offset);
    for (id, e) in entries {
        let data = read_put(&damaged, id.as_str(), e)?;
        w.put(id.as_str(), e, data)?;
    }
    let header = StaticHeader {
        generation: damaged.header.generation + 1,
        created_ms: now_ms,
        compact_kept: w.index.len() as u64,
        compact_dropped: 0,
        compact_source_bytes: end,
    };
    let (new_file, _, _) = w.finish(&header)?;
    damaged.set_superseded(true);
    fs::rename(&tmp.path, path).map_err(|e| Error::io(path, "rename repaired file", e))?;
    file::sync_parent_dir(path)?;
    report.records = records;
    report.damaged_copy = Some(copy);
    recovery::load_complete(Arc::new(LogFile::from_file(path, new_file)?))
}
