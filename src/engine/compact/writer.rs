//! Writing the new file: a placeholder header, then records (each encoded
//! with the new file's salt and appended by [`Writer::append`]), then the
//! real header, and the fsyncs.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::engine::file::{self, LogFile, Site};
use crate::engine::format::{
    self, HEADER_SIZE, Kind, Policy, RecordFields, RecordRef, StaticHeader,
};
use crate::engine::hook::{Hooks, IoEvent};
use crate::engine::index::{Index, Records};
use crate::engine::writeback;
use crate::error::{Error, Result};

use super::temp::TempFile;

/// The new file being written: records are buffered and written in large
/// `pwrite`s; what was written is read back through a mapping (the index
/// compares ids against records it already holds).
pub(super) struct Out {
    pub log: LogFile,
    hooks: Hooks,
    /// Bytes `[HEADER_SIZE, flushed)` are in the file.
    flushed: u64,
    /// Bytes `[flushed, pos)`.
    buf: Vec<u8>,
    pub pos: u64,
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
    ///
    /// A failure fails the compaction (the live file stays): a wait takes
    /// a writeback error of the file description off the final fsync's
    /// report, since the kernel reports a lost page to one waiter only.
    fn write_behind(&self, from: u64, to: u64) -> Result<()> {
        let path = tmp_path(&self.log);
        let fail = |e| Error::io(&path, "write back", e);
        writeback::range(&self.hooks, &path, &self.log.file, from, to, false).map_err(fail)?;
        let back = from.saturating_sub(WRITE_BEHIND);
        if back > HEADER_SIZE {
            writeback::range(
                &self.hooks,
                &path,
                &self.log.file,
                back,
                back + (to - from),
                true,
            )
            .map_err(fail)?;
        }
        Ok(())
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
    pub fn flush(&mut self) -> Result<()> {
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
        self.write_behind(self.flushed, self.pos)?;
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

/// The header a new file starts with, until `Writer::finish` writes the
/// real one.
pub(super) fn placeholder() -> StaticHeader {
    StaticHeader {
        version: format::FORMAT_VERSION,
        generation: 0,
        created_ms: 0,
        compact_kept: 0,
        compact_dropped: 0,
        compact_source_bytes: 0,
        compact_result_bytes: 0,
        salt: 0,
    }
}

/// Writes the new file: a placeholder header, then records, then the real
/// header.
pub(super) struct Writer {
    pub out: Out,
    pub index: Index,
    scratch: Vec<u8>,
    /// The new file's salt: every record is re-encoded with it.
    pub salt: u32,
}

impl Writer {
    pub fn new(tmp: &TempFile, log: &Site, hooks: Hooks) -> Result<Writer> {
        let f = tmp
            .file
            .try_clone()
            .map_err(|e| Error::io(&tmp.path, "dup", e))?;
        let head = format::encode_header(&placeholder(), HEADER_SIZE);
        hooks
            .before(IoEvent::Write {
                path: &tmp.path,
                offset: 0,
                bytes: &head,
            })
            .and_then(|()| f.write_all_at(&head, 0))
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

    /// Encodes a record with the new file's salt and appends it: the one
    /// way every record reaches the new file. Returns its offset.
    fn append(&mut self, rec: &RecordFields<'_>) -> Result<u64> {
        self.scratch.clear();
        format::encode_record_salted(&mut self.scratch, rec, self.salt);
        self.out.push(&self.scratch)
    }

    /// Writes a put for `id` with the given state.
    pub fn put(&mut self, rec: &RecordRef<'_>, data: &[u8]) -> Result<()> {
        let off = self.append(&RecordFields {
            kind: Kind::Put,
            id: rec.id,
            data,
            version: rec.version,
            modified_ms: rec.modified_ms,
            expires_ms: rec.expires_ms,
            owner: rec.owner,
        })?;
        self.index.insert(&self.out, rec.id, off);
        Ok(())
    }

    /// Re-targets a touch at the session's put in the new file.
    pub fn touch(&mut self, rec: &RecordRef<'_>, current: u64) -> Result<()> {
        let put = format::peek_touch_target(self.out.from(current))
            .unwrap_or(current)
            .to_le_bytes();
        let off = self.append(&RecordFields {
            kind: Kind::Touch,
            id: rec.id,
            data: &put,
            version: rec.version,
            modified_ms: rec.modified_ms,
            expires_ms: rec.expires_ms,
            owner: &[],
        })?;
        self.index.insert(&self.out, rec.id, off);
        Ok(())
    }

    /// Re-encodes a put or delete with the new file's salt and applies it.
    pub fn copy(&mut self, rec: &RecordRef<'_>) -> Result<()> {
        let off = self.append(&RecordFields {
            kind: rec.kind,
            id: rec.id,
            data: rec.data,
            version: rec.version,
            modified_ms: rec.modified_ms,
            expires_ms: rec.expires_ms,
            owner: rec.owner,
        })?;
        self.index.apply(&self.out, off, rec);
        Ok(())
    }

    /// Writes out what is buffered, fsyncs the file's data (`fdatasync`:
    /// the header page too, as far as it was written) and raises its
    /// synced word to its end.
    pub fn sync_data(&mut self) -> Result<()> {
        self.out.flush()?;
        let path = tmp_path(&self.out.log);
        self.out
            .hooks
            .before(IoEvent::Sync { path: &path })
            .and_then(|()| self.out.log.file.sync_data())
            .map_err(|e| Error::io(&path, "fsync", e))?;
        raise_synced(&self.out.log, &path, &self.out.hooks, self.out.pos);
        Ok(())
    }

    /// Flushes and writes the static part of the header (`header` with
    /// this file's salt and end, and `policy`) over the placeholder, not
    /// yet synced. A compaction writes it once, before its last fsync
    /// outside the write lock, so that the file is a valid store once that
    /// fsync returns, whatever follows.
    pub fn write_header(&mut self, header: &StaticHeader, policy: Option<&Policy>) -> Result<()> {
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
        let log = &self.out.log;
        // Only the static part is written over the placeholder: the shared
        // words are stores through the mapping, since other processes may
        // be reading the committed word through theirs (`flush` already
        // raised it to `end`; the synced word is raised only by what
        // synced). The page is then `encode_header(.., end)` but for the
        // synced word.
        if let Some(p) = policy {
            format::encode_policy(p, &mut head);
        }
        let static_part = &head[..format::H_POLICY_END];
        self.out
            .hooks
            .before(IoEvent::Write {
                path: &tmp_path(log),
                offset: 0,
                bytes: static_part,
            })
            .and_then(|()| log.write_at(static_part, 0))
            .map_err(|e| Error::io(&log.path, "write", e))
    }

    /// Writes out what is buffered, fsyncs the whole file (data, header
    /// and length) and raises its synced word to its end.
    pub fn sync_all(&mut self) -> Result<()> {
        self.out.flush()?;
        let path = tmp_path(&self.out.log);
        sync_all(&self.out.log, &path, &self.out.hooks, self.out.pos)
    }

    /// The file (with the mapping it was read back through), its index and
    /// its end; what is still buffered is written out first.
    pub fn into_parts(mut self) -> Result<(LogFile, Index, u64)> {
        self.out.flush()?;
        Ok((self.out.log, self.index, self.out.pos))
    }

    /// Flushes, writes the header and fsyncs. Returns the file (with the
    /// mapping it was read back through), its index and its end.
    pub fn finish(
        mut self,
        header: &StaticHeader,
        policy: Option<&Policy>,
    ) -> Result<(LogFile, Index, u64)> {
        self.write_header(header, policy)?;
        self.sync_all()?;
        self.into_parts()
    }
}

/// Fsyncs `log`, the new file, now at `path` (the temporary file's, or the
/// log's after the rename), then raises its synced word to `end`, which
/// the fsync made durable. The word is raised after the fsync, never
/// before: a crash in between must not leave a header that calls unsynced
/// records synced.
pub(super) fn sync_all(log: &LogFile, path: &Path, hooks: &Hooks, end: u64) -> Result<()> {
    hooks
        .before(IoEvent::Sync { path })
        .and_then(|()| log.file.sync_all())
        .map_err(|e| Error::io(&log.path, "fsync", e))?;
    raise_synced(log, path, hooks, end);
    Ok(())
}

/// Raises the synced word of `log` (at `path`) to `end`, which a sync just
/// made durable.
fn raise_synced(log: &LogFile, path: &Path, hooks: &Hooks, end: u64) {
    log.set_synced(end);
    hooks.word(path, format::H_SYNCED, format::encode_offset(end));
}

/// The temporary file's path (the `LogFile` of the file being written
/// carries the log's path for its error messages).
fn tmp_path(log: &LogFile) -> PathBuf {
    file::sibling(&log.path, ".compact")
}
