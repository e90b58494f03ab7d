//! Repair: salvaging a damaged log into a clean file with the compaction's
//! writer, keeping a copy of the damaged one.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use crate::engine::file::{LogFile, Site, View};
use crate::engine::format::{self, HEADER_SIZE, StaticHeader};
use crate::engine::hint;
use crate::engine::hook::Hooks;
use crate::engine::index::Index;
use crate::engine::lock::LockFile;
use crate::engine::read::session_at;
use crate::engine::recovery;
use crate::engine::salvage;
use crate::engine::state::State;
use crate::engine::stats::RecoveryReport;
use crate::error::{Error, Result};
use crate::observe;
use crate::trust::{Create, Owner};

use super::temp::TempFile;
use super::writer::{self, Writer};

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
    let mut damaged = LogFile::open_damaged(log, lock.owner, writer::placeholder())?;
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
    let (index, records) = scan(&view, damaged.header.salt, end, report);
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
    tmp.check_before_rename(log, damaged.ino)?;
    tmp.site
        .rename_to(log)
        .map_err(|e| Error::io(&log.path, "rename repaired file", e))?;
    log.sync_dir()?;
    report.records = records;
    report.damaged_copy = Some(copy.path);
    recovery::load_complete(Arc::new(new_file.with_header_read_again()?))
}

/// Indexes every record of `view` (a damaged file, records salted with
/// `salt`) that passes its checksum, reporting the ranges that do not in
/// `report`. Below `end` (the committed end, or the file's) a bad record
/// is stepped over; past it, only an unbroken run of complete records is
/// taken. Returns the index and how many records it read.
fn scan(view: &View<'_>, salt: u32, end: u64, report: &mut RecoveryReport) -> (Index, u64) {
    let file_len = view.end();
    let mut index = Index::default();
    let mut off = HEADER_SIZE;
    let mut bad_from: Option<u64> = None;
    let mut records = 0u64;
    while off < file_len && (off < end || bad_from.is_none()) {
        match format::decode_record_salted(view.tail(off), salt) {
            Ok(rec) => {
                if let Some(start) = bad_from.take() {
                    report.repaired_ranges.push((start, off - start));
                }
                index.apply(view, off, &rec);
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
    (index, records)
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
