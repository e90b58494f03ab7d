//! Opening a log: replaying its records into an index and cutting a torn
//! tail left by a crash. Following what other processes append or swap in
//! later is `follow`'s job, with the same replay.

use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use crate::engine::file::{self, LogFile, Site, View};
use crate::engine::format::{
    self, DecodeError, H_COMMITTED, H_SYNCED, HEADER_SIZE, Policy, StaticHeader,
};
use crate::engine::hint;
use crate::engine::hook::{Hooks, IoEvent};
use crate::engine::index::{Index, Records};
use crate::engine::lock::LockFile;
use crate::engine::state::State;
use crate::engine::stats::RecoveryReport;
use crate::error::{Error, Result};
use crate::trust::{self, Owner};

/// What a replay did.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// Where replay stopped: the end asked for, unless `error`.
    pub stop: u64,
    /// Records applied to the index.
    pub records: u64,
    /// Why replay stopped before the end, if it did.
    pub error: Option<DecodeError>,
}

/// Replays the records of `view` from `from` to its end into `index`.
pub(crate) fn replay(view: &View<'_>, from: u64, index: &mut Index) -> Replayed {
    replay_records(view, view.file.header.salt, from, view.end(), index)
}

/// Replays the records of `src` (a file with salt `salt`) from `from` to
/// `to` into `index`.
pub(crate) fn replay_records(
    src: &dyn Records,
    salt: u32,
    from: u64,
    to: u64,
    index: &mut Index,
) -> Replayed {
    let mut off = from;
    let mut records = 0;
    while off < to {
        match format::decode_record_salted(src.from(off), salt) {
            Ok(rec) => {
                index.apply(src, off, &rec);
                records += 1;
                off += rec.padded_len as u64;
            }
            Err(e) => {
                return Replayed {
                    stop: off,
                    records,
                    error: Some(e),
                };
            }
        }
    }
    Replayed {
        stop: off,
        records,
        error: None,
    }
}

/// Most index entries reserved before replay finds them.
const MAX_RESERVE: usize = 4 << 20;

/// Logs shorter than this are replayed on one thread.
const PARALLEL_REPLAY_FROM: u64 = 32 << 20;

/// Replays like [`replay`], on two threads for a large range: one verifies
/// every record's CRC while this one builds the index from the same
/// records decoded without it. If the verifier finds damage, the index is
/// thrown away and the range replayed again on one thread, which stops at
/// the damage and says why.
pub(crate) fn replay_fast(view: &View<'_>, from: u64, index: &mut Index) -> Replayed {
    let to = view.end();
    if to.saturating_sub(from) < PARALLEL_REPLAY_FROM {
        return replay(view, from, index);
    }
    let salt = view.file.header.salt;
    let verify = || {
        let mut off = from;
        while off < to {
            match format::decode_record_salted(view.tail(off), salt) {
                Ok(rec) => off += rec.padded_len as u64,
                Err(_) => return false,
            }
        }
        true
    };
    let fast = std::thread::scope(|s| {
        let verifier = std::thread::Builder::new()
            .name("sessionlog-verify".into())
            .spawn_scoped(s, verify)
            .ok()?;
        let (mut off, mut n) = (from, 0u64);
        while off < to {
            let Ok(rec) = format::decode_record_unchecked(view.tail(off)) else {
                break;
            };
            index.apply(view, off, &rec);
            n += 1;
            off += rec.padded_len as u64;
        }
        let clean = verifier.join().unwrap_or(false) && off == to;
        clean.then_some(n)
    });
    match fast {
        Some(records) => Replayed {
            stop: to,
            records,
            error: None,
        },
        None => {
            *index = Index::default();
            replay(view, from, index)
        }
    }
}

fn committed_of(file: &LogFile) -> Result<(u64, u64)> {
    let word = file.committed_word();
    let end = format::decode_offset(word).ok_or_else(|| {
        Error::corrupt(
            &file.path,
            H_COMMITTED as u64,
            "the committed-length word is damaged",
        )
    })?;
    if end < HEADER_SIZE {
        return Err(Error::corrupt(
            &file.path,
            H_COMMITTED as u64,
            "committed length inside the header",
        ));
    }
    Ok((word, end))
}

/// `file` and its length as last seen, the length never past the mapping:
/// others may have appended (and grown the file) since it was mapped, so
/// a committed `end` past the length mapped asks the file again, and maps
/// it again if it outgrew the mapping. A length still short of `end` is for
/// the caller to judge.
fn covering(file: Arc<LogFile>, end: u64) -> Result<(Arc<LogFile>, u64)> {
    if end <= file.mapped_file_len {
        let len = file.mapped_file_len;
        return Ok((file, len));
    }
    let len = file.file_len()?;
    if len > file.map_len() {
        return Ok((Arc::new(file.remapped()?), len));
    }
    Ok((file, len))
}

/// Builds a fresh view of `file`, which must be complete (a file written
/// by compaction, or one whose tail was already checked).
pub(crate) fn load_complete(file: Arc<LogFile>) -> Result<State> {
    let (word, end) = committed_of(&file)?;
    let (file, file_len) = covering(file, end)?;
    if end > file_len {
        return Err(Error::corrupt(
            &file.path,
            file_len,
            "the file is shorter than its committed length",
        ));
    }
    let mut index = Index::default();
    // SAFETY: `end` is the committed end, checked against the file's length.
    let view = unsafe { View::new(&file, end) };
    let Replayed { stop, error, .. } = replay_fast(&view, HEADER_SIZE, &mut index);
    if let Some(e) = error {
        return Err(Error::corrupt(&file.path, stop, e.to_string()));
    }
    if stop < end {
        return Err(Error::corrupt(
            &file.path,
            stop,
            "the file is shorter than its committed length",
        ));
    }
    Ok(State {
        file,
        index,
        applied: end,
        applied_word: word,
        file_len,
    })
}

/// Builds a fresh view of `file` like [`load_complete`], from the file's
/// hint when it has a valid one (then only the records after the hint's
/// end are replayed), else by a replay of every record. Called without the
/// state lock: this is the slow part of following a swap.
///
/// `ahead` is the file's hint if it was read ahead (see `pending`): it is
/// checked against the file here, and read again if it does not match.
pub(crate) fn load_indexed(
    file: Arc<LogFile>,
    owner: Owner,
    hooks: &Hooks,
    ahead: Option<hint::Checked>,
) -> Result<State> {
    let (word, end) = committed_of(&file)?;
    let hinted = match ahead.map(|c| c.into_index(&file.header, file.ino, end)) {
        Some(Ok(found)) => Ok(found),
        _ => hint::load(&file, end, owner, hooks),
    };
    let Ok((mut index, from)) = hinted else {
        return load_complete(file);
    };
    let (file, file_len) = covering(file, end)?;
    if end > file_len {
        return load_complete(file);
    }
    // SAFETY: `end` is the committed end, checked against the file's length.
    let view = unsafe { View::new(&file, end) };
    let Replayed { stop, error, .. } = replay_fast(&view, from, &mut index);
    if error.is_some() || stop < end {
        // The hint's end is not where records continue: replay it all,
        // which reports any damage precisely.
        return load_complete(file);
    }
    index.complete_owners(&view);
    Ok(State {
        file,
        index,
        applied: end,
        applied_word: word,
        file_len,
    })
}

/// When to sync records that replay verified but that were never synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncAfterReplay {
    /// Before returning from open.
    Now,
    /// Soon, in the background thread: [`Opened::Ready`] says whether it
    /// has to.
    Later,
}

/// What opening found, before the caller decides what to do about damage.
pub(crate) enum Opened {
    /// A consistent view; with `sync_pending`, records that replay verified
    /// are not yet synced ([`SyncAfterReplay::Later`]).
    Ready { state: State, sync_pending: bool },
    /// Damage before the synced end, or with valid records after it: the
    /// offset and reason. Only repair mode goes on from here.
    Damaged(u64, String),
}

/// Opens the log at `path` (creating it if missing), replays it, and cuts
/// a torn tail under the write lock.
pub(crate) fn open_log(
    site: &Site,
    lock: &LockFile,
    report: &mut RecoveryReport,
    now_ms: u64,
    sync: SyncAfterReplay,
    hooks: &Hooks,
    policy: &Policy,
) -> Result<Opened> {
    let path = &site.path;
    create_if_missing(site, lock, now_ms, policy)?;
    report.removed_temp_files += remove_stale_temp(site)?;
    // Cleared if a replay that started at the hint's end found damage:
    // the next round replays every record, and reports the damage exactly.
    let mut use_hint = true;
    loop {
        let file = match LogFile::open(site, lock.owner) {
            Ok(f) => Arc::new(f),
            // A damaged header (not a foreign file, not a future version):
            // repair mode can rebuild it.
            Err(Error::Corrupt { offset, reason, .. }) => {
                return Ok(Opened::Damaged(offset, reason));
            }
            Err(e) => return Err(e),
        };
        if file.superseded() {
            // A compaction is swapping files (it holds the lock until the
            // rename is done) or died before its rename: wait for the lock,
            // and clear the mark if the file is still the current one.
            let _g = lock.lock()?;
            let again = LogFile::open(site, lock.owner)?;
            if again.ino == file.ino {
                again.set_superseded(false);
            }
            continue;
        }
        if !lock.first {
            // Other handles may be appending (a first opener is alone).
            hooks
                .before(IoEvent::Mapped {
                    path,
                    len: file.mapped_file_len,
                })
                .map_err(|e| Error::io(path, "map", e))?;
        }
        let (word, end) = match committed_of(&file) {
            Ok(c) => c,
            Err(Error::Corrupt { offset, reason, .. }) => {
                return Ok(Opened::Damaged(offset, reason));
            }
            Err(e) => return Err(e),
        };
        // Another process may have grown the file and committed records
        // past the length mapped above since it was mapped: judged by the
        // length mapped, the replay would stop short of the committed end
        // and take acknowledged records for a torn tail to cut.
        let (file, file_len) = covering(file, end)?;
        let Some(synced) = file.synced() else {
            return Ok(Opened::Damaged(
                H_SYNCED as u64,
                "the synced-length word is damaged".into(),
            ));
        };
        // A hint may stand for records up to the synced end only: those
        // can never be cut as a torn tail.
        let hinted = if use_hint {
            hint::load(&file, synced.min(end).min(file_len), lock.owner, hooks).ok()
        } else {
            None
        };
        let (mut index, from) = match hinted {
            Some((index, from)) => (index, from),
            None => {
                let mut index = Index::default();
                // Sized from what the file holds, at most 4M entries (64
                // MiB) up front: a sparse file of 1 TiB with a forged
                // committed word must not make open allocate for a billion
                // sessions. The index grows as records are really found.
                index.reserve(((end.min(file_len) / 1024) as usize).min(MAX_RESERVE));
                (index, HEADER_SIZE)
            }
        };
        // SAFETY: `end` is the committed end, capped at the file's length.
        let view = unsafe { View::new(&file, end.min(file_len)) };
        let Replayed {
            stop,
            records,
            error,
        } = replay_fast(&view, from, &mut index);
        if stop != end && from != HEADER_SIZE {
            use_hint = false;
            continue;
        }
        index.complete_owners(&view);
        report.hint_end = (from != HEADER_SIZE).then_some(from);
        if stop == end {
            report.records = records;
            if lock.first {
                return first_open_tail(file, index, word, synced, report, sync);
            }
            let mut sync_pending = false;
            if synced < end {
                // Every record up to `end` just passed its CRC: make them
                // durable and say so, so that later damage among them is
                // reported as damage, not cut as the tail of a crash.
                match sync {
                    SyncAfterReplay::Now => {
                        file.sync_data().map_err(|e| Error::io(path, "fsync", e))?;
                        file.set_synced(end);
                    }
                    SyncAfterReplay::Later => sync_pending = true,
                }
            }
            return Ok(Opened::Ready {
                state: State {
                    file,
                    index,
                    applied: end,
                    applied_word: word,
                    file_len,
                },
                sync_pending,
            });
        }
        // Replay ran into the end of a file shorter than its synced end.
        let cut_short =
            file_len < synced.min(end) && matches!(error, None | Some(DecodeError::Truncated));
        let reason = error.map_or_else(
            || "the file ends before its committed length".to_owned(),
            |e| e.to_string(),
        );
        if stop < synced.min(end) {
            if cut_short {
                // Not torn by a crash: records that had reached the disk
                // were cut off (a truncation, a copy that stopped short).
                return Ok(Opened::Damaged(
                    stop,
                    format!(
                        "the file ends at byte {file_len}, inside records that were already on \
                         disk (synced up to byte {synced}): it was cut short after they were \
                         written, so saves that had been acknowledged are lost"
                    ),
                ));
            }
            return Ok(Opened::Damaged(stop, reason));
        }
        // Bad bytes past the synced end: the trace of a crash during
        // unsynced appends. Cut there, under the lock, unless the tail
        // changed meanwhile (then look again).
        let _g = lock.lock()?;
        if file.committed_word() != word || file.superseded() {
            continue;
        }
        let new_word = file.set_committed(stop);
        // SAFETY: past the committed end, but under the write lock: only
        // this thread writes there, and no reader reads past its applied
        // end, which is at most `stop` (the records after it are torn).
        // `file_len` is the file's length.
        erase_after(&unsafe { View::new(&file, file_len) }, stop)?;
        file.sync_data()
            .map_err(|e| Error::io(path, "fsync after cutting a torn tail", e))?;
        file.set_synced(stop);
        report.records = records;
        report.torn_tail_offset = Some(stop);
        report.torn_tail_bytes = end - stop;
        return Ok(Opened::Ready {
            state: State {
                file,
                index,
                applied: stop,
                applied_word: new_word,
                file_len,
            },
            sync_pending: false,
        });
    }
}

/// The first opener's look past the committed end, alone (no other handle
/// exists, none can open meanwhile). `SyncPolicy::Always` makes a save
/// durable by writing back its record's range only, not the header page,
/// so after a power loss the committed word on disk may lag behind saves
/// that were acknowledged: every complete record that follows the committed
/// end is replayed and kept. Then whatever lies past the last complete
/// record (a torn append, or records written after a gap a power loss
/// left) is overwritten with zeros, so that no stale record can ever be
/// found there once new appends reach it.
fn first_open_tail(
    file: Arc<LogFile>,
    mut index: Index,
    word: u64,
    synced: u64,
    report: &mut RecoveryReport,
    sync: SyncAfterReplay,
) -> Result<Opened> {
    let end = format::decode_offset(word).unwrap_or(HEADER_SIZE);
    let file_len = file.mapped_file_len;
    // SAFETY: past the committed end, but this handle is the store's only
    // one (it holds the exclusive flock: nobody else can open the store,
    // so nobody writes), and `file_len` is the file's length.
    let view = unsafe { View::new(&file, file_len) };
    let Replayed {
        stop,
        records: adopted,
        ..
    } = replay(&view, end, &mut index);
    let erased = erase_after(&view, stop)?;
    report.records += adopted;
    report.records_past_committed = adopted;
    if erased > 0 {
        report.torn_tail_offset.get_or_insert(stop);
        report.torn_tail_bytes += erased;
    }
    let applied_word = if stop != end {
        file.set_committed(stop)
    } else {
        word
    };
    if erased > 0 {
        // The erasure must reach the disk before any append can.
        file.sync_data()
            .map_err(|e| Error::io(&file.path, "fsync after erasing a torn tail", e))?;
        file.set_synced(stop);
    }
    let mut sync_pending = false;
    if erased == 0 && stop > synced {
        // Every record up to `stop` passed its CRC: make them durable and
        // say so, so that later damage among them is reported as damage,
        // not cut as the tail of a crash.
        match sync {
            SyncAfterReplay::Now => {
                file.sync_data()
                    .map_err(|e| Error::io(&file.path, "fsync after recovery", e))?;
                file.set_synced(stop);
            }
            SyncAfterReplay::Later => sync_pending = true,
        }
    }
    Ok(Opened::Ready {
        state: State {
            file,
            index,
            applied: stop,
            applied_word,
            file_len,
        },
        sync_pending,
    })
}

/// Overwrites with zeros every non-zero byte of `view` from `from` on
/// (past its committed end, where nobody reads). Returns how many bytes
/// were zeroed (from `from` up to the last non-zero byte).
fn erase_after(view: &View<'_>, from: u64) -> Result<u64> {
    let file = view.file;
    let Some(last) = file
        .data_ranges(from, view.end())
        .into_iter()
        .filter_map(|(a, b)| last_nonzero(view.range(a, b)).map(|i| a + i as u64))
        .max()
    else {
        return Ok(0);
    };
    let len = last + 1 - from;
    file.write_zeros(from, len)
        .map_err(|e| Error::io(&file.path, "erase a torn tail", e))?;
    Ok(len)
}

/// The index of the last non-zero byte of `b`.
fn last_nonzero(b: &[u8]) -> Option<usize> {
    let words = b.len() / 8;
    let tail = b[words * 8..].iter().rposition(|&x| x != 0);
    if let Some(i) = tail {
        return Some(words * 8 + i);
    }
    let w = b[..words * 8]
        .chunks_exact(8)
        .rposition(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) != 0)?;
    let base = w * 8;
    b[base..base + 8]
        .iter()
        .rposition(|&x| x != 0)
        .map(|i| base + i)
}

/// If the log exists, checks its static header without modifying
/// anything, so that a foreign file gets `NotAStore` and nothing is
/// created beside it. In repair mode a damaged header passes: repair
/// rebuilds it.
pub(crate) fn precheck(log: &Site, repair: bool) -> Result<()> {
    let f = match log.dir.open_unchecked(&log.name) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(trust::refusal(
                &log.path,
                "a symbolic link where the store keeps its log",
            ));
        }
        Err(e) => return Err(Error::io(&log.path, "open", e)),
    };
    let mut head = Vec::with_capacity(format::H_STATIC_END);
    io::Read::take(&f, format::H_STATIC_END as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(&log.path, "read header", e))?;
    match file::check_header(&log.path, &head) {
        Err(Error::Corrupt { .. }) if repair => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Creates the store if its log does not exist, its first file recording
/// `policy`.
fn create_if_missing(log: &Site, lock: &LockFile, now_ms: u64, policy: &Policy) -> Result<()> {
    if log.stat()?.is_some() {
        return Ok(());
    }
    let _g = lock.lock()?;
    if log.stat()?.is_some() {
        return Ok(());
    }
    file::create_log(
        log,
        &StaticHeader {
            version: format::FORMAT_VERSION,
            generation: 1,
            created_ms: now_ms,
            compact_kept: 0,
            compact_dropped: 0,
            compact_source_bytes: 0,
            compact_result_bytes: 0,
            salt: file::new_salt(),
        },
        policy,
        lock.owner,
    )
}

/// Removes the temporary file of a compaction that died, if nobody holds
/// its lock. Returns how many files were removed (0 or 1).
pub(crate) fn remove_stale_temp(log: &Site) -> Result<u32> {
    let tmp = log.sibling(".compact");
    let f = match tmp.dir.open_unchecked(&tmp.name) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(trust::refusal(
                &tmp.path,
                "a symbolic link where the store keeps a file of its own",
            ));
        }
        Err(e) => return Err(Error::io(&tmp.path, "open", e)),
    };
    if f.try_lock().is_err() {
        return Ok(0); // a live compaction owns it
    }
    let same = f.metadata().is_ok_and(|m| tmp.holds((m.dev(), m.ino())));
    if !same {
        return Ok(0);
    }
    tmp.remove()
        .map_err(|e| Error::io(&tmp.path, "remove stale temporary file", e))?;
    Ok(1)
}
