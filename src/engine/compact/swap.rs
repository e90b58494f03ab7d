//! Phase 2 of a compaction: under the write lock, the last records copied,
//! the new file finished and swapped in for the old one.

use std::sync::Arc;

use crate::engine::file::View;
use crate::engine::format::{self, StaticHeader};
use crate::engine::hook::IoEvent;
use crate::engine::reserve;
use crate::engine::state::{self, State};
use crate::engine::stats::CompactStats;
use crate::error::{Error, Result};
use crate::session::from_millis;

use super::Handles;
use super::copy::Copy;
use super::temp::TempFile;
use super::writer::sync_all;

/// The header of the new file of `generation`, created at `now`, holding
/// what `c` copied from the old file up to `source_end`.
pub(super) fn header(c: &Copy<'_>, generation: u64, now: u64, source_end: u64) -> StaticHeader {
    StaticHeader {
        version: format::FORMAT_VERSION,
        generation,
        created_ms: now,
        compact_kept: c.w.index.len() as u64,
        compact_dropped: c.dropped.len() as u64,
        compact_source_bytes: source_end,
        compact_result_bytes: 0,
        salt: 0,
    }
}

/// Under the write lock (no process appends), copies what was appended
/// since the last catch-up, finishes the new file (of this `generation`,
/// created at `now`, whose header was written before the last catch-up)
/// and swaps it in: this process's
/// view first, then the old file's mark and the rename. The state lock is
/// taken only to catch up and to publish the new view.
///
/// What is synced where (DESIGN.md §8, the swap): the new file was fsynced
/// before the lock with its header and every record copied until then
/// (`Copy::synced_from`). The records copied since are fsynced under the
/// lock only if one of them was durable in the old file already (the old
/// file's synced word is past `synced_from`: acknowledged under
/// `SyncPolicy::Always`, or synced by an interval sync), since after the
/// rename the old file is gone. Otherwise they, and the directory holding
/// the rename, are fsynced after the write lock is let go, while saves
/// append to the new file: a crash before then leaves the old file at the
/// path (its records all there) or the new one with a tail that was
/// never synced anywhere. Until the directory is synced, no sync of this
/// process completes (`GroupCommit::begin_switch`), and other processes
/// sync the directory themselves before their first sync of the new file
/// counts (`GroupCommit::follow_file`). Under `SyncPolicy::Always` the
/// whole swap stays under the lock, as durable saves wait for syncs anyway.
pub(super) fn swap(
    h: &Handles<'_>,
    tmp: &TempFile,
    mut c: Copy<'_>,
    generation: u64,
    now: u64,
) -> Result<CompactStats> {
    let writer = h.follow.writer.lock();
    let mut locks = Some((writer, h.follow.lock.lock()?));
    let (old_file, end) = {
        let st = h.follow.fresh()?;
        if st.file.ino != c.src.ino {
            return Err(Error::Busy {
                path: h.path.to_owned(),
                what: "another process compacted the log meanwhile".into(),
            });
        }
        (Arc::clone(&st.file), st.applied)
    };
    if end < c.copied {
        return Err(Error::Busy {
            path: h.path.to_owned(),
            what: "the log was cut back during the compaction".into(),
        });
    }
    // SAFETY: `end` is this process's applied end of the file, and under
    // the write lock nobody appends or cuts.
    c.rest(&unsafe { View::new(&old_file, end) })?;
    if c.erase.as_ref().is_some_and(|e| e.copied_then_owned) {
        return Err(Error::Busy {
            path: h.path.to_owned(),
            what: "a session was given to the owner being erased during the copy".into(),
        });
    }
    // The figures of the swap, for `CompactStats`. The file's header keeps
    // those of step 3's fsync: rewriting it here would leave a header
    // write unsynced in a file already at the path.
    let header = header(&c, generation, now, end);
    let strict = h.follow.commit.is_always();
    let moved_durable = old_file.synced().is_some_and(|s| s > c.synced_from);
    let synced_now = strict || moved_durable;
    if synced_now {
        c.w.sync_all()?;
    }
    let (written, index, new_end) = c.w.into_parts()?;
    // The mapping the compaction read the new file back through stays:
    // unmapping it here, its page tables filled in by the id comparisons,
    // held every writer for milliseconds (DESIGN.md §8, the swap).
    let new_log = Arc::new(written.with_header_read_again()?);
    let word = new_log.committed_word();

    // The swap. This process's view moves to the new file first (it is
    // complete, and nobody can append meanwhile): its readers never see
    // the mark below, so never wait for a switch. Then the mark, so that a
    // process that sees it either finds the new file at the path or
    // (while we hold the lock) keeps reading the old one, which no one can
    // change meanwhile. Syncs of this process wait from here until the
    // directory is synced.
    if !strict {
        h.follow.commit.begin_switch();
    }
    let previous = std::mem::replace(
        &mut *h.state.write(),
        State {
            file: Arc::clone(&new_log),
            index,
            applied: new_end,
            applied_word: word,
            file_len: new_end,
        },
    );
    old_file.set_superseded(true);
    let renamed = tmp
        .check_before_rename(h.site, old_file.ino)
        .and_then(|()| {
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
        h.follow.commit.cancel_switch();
        return Err(e);
    }
    if !strict {
        // Saves go on into the new file from here.
        locks = None;
    }
    let finished = if synced_now {
        Ok(())
    } else {
        sync_all(&new_log, h.path, h.hooks, new_end)
    }
    .and_then(|()| {
        h.hooks
            .before(IoEvent::SyncDir { path: h.path })
            .map_err(|e| Error::io(h.path, "fsync directory", e))
            .and_then(|()| h.site.sync_dir())
    });
    if let Err(e) = finished {
        if let Error::Io { source, .. } = &e {
            h.poison
                .set("fsync of the compacted file or its directory", source);
        }
        h.follow.commit.fail_switch(header.generation);
        return Err(e);
    }
    h.follow.commit.switch_file(header.generation, new_end);
    let _ = tmp.file.unlock();
    drop(locks);
    if h.reserve > 0 && reserve::held(h.site) < h.reserve {
        // The space reserve was given back (a full disk): drop the old
        // file here, so that its blocks are free (unless another process
        // still maps it) when `run` makes the reserve again.
        drop(previous);
    } else {
        state::retire(previous);
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
