//! The write path: every save, restore, touch and delete holds the write
//! locks, catches up with the file, appends one record, publishes it and
//! applies it to the index; then, under `SyncPolicy::Always`, waits for
//! group commit.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::engine::commit::SyncKind;
use crate::engine::format::{self, Kind, MAX_OFFSET, RecordFields};
use crate::engine::hook::IoEvent;
use crate::engine::read::{latest, live};
use crate::engine::shared::Inner;
use crate::engine::state::State;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::options::SyncPolicy;
use crate::session::{
    SaveMode, Session, check_size, expires_millis, from_millis, next_version, to_millis,
};

/// How many writes may pass between two checks that the lock file is
/// still the store's (a `stat`, about 1 µs).
const LOCK_CHECK_EVERY: u64 = 256;

/// Where an append left the log: what group commit must make durable.
struct Appended {
    generation: u64,
    end: u64,
}

/// Runs `f` holding every write lock with a fresh view, for one append.
fn write<R>(
    inner: &Inner,
    f: impl FnOnce(&mut State, &mut Vec<u8>, u64) -> Result<R>,
) -> Result<(R, Appended)> {
    inner.poison.check(&inner.path)?;
    let _busy = inner.commit.enter();
    let (mut buf, _lock, mut st) = loop {
        let buf = inner.writer.lock();
        let lock = inner.lock.lock()?;
        // One `stat` every LOCK_CHECK_EVERY writes (and the background
        // thread's every tick) notices a lock file removed or replaced.
        if inner
            .writes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(LOCK_CHECK_EVERY)
        {
            inner.check_lock_file()?;
        }
        match inner.follow().fresh_or_switch()? {
            Ok(st) => {
                inner
                    .pending
                    .watch(&st.file, inner.lock.owner, &inner.hooks);
                break (buf, lock, st);
            }
            Err(switch) => {
                // A compaction swapped files: build the new file's index
                // without holding the write lock, then start over.
                drop(lock);
                drop(buf);
                inner.follow().switch_to(switch)?;
            }
        }
    };
    let now = inner.now_ms();
    let r = f(&mut st, &mut buf, now)?;
    let at = Appended {
        generation: st.file.header.generation,
        end: st.applied,
    };
    Ok((r, at))
}

/// Appends the encoded record in `buf` and publishes it.
fn append(inner: &Inner, st: &mut State, buf: &[u8]) -> Result<u64> {
    let path = &inner.path;
    let off = st.applied;
    let end = off + buf.len() as u64;
    if end > MAX_OFFSET {
        return Err(Error::io(
            path,
            "append",
            io::Error::from(io::ErrorKind::FileTooLarge),
        ));
    }
    let durable = inner.opts.sync == SyncPolicy::Always;
    if end > st.file_len {
        st.file_len = st.file.file_len()?;
        if end > st.file_len {
            inner
                .hooks
                .before(IoEvent::Grow { path, len: end })
                .map_err(|e| Error::io(path, "grow file", e))?;
        }
        st.file_len = st.file.ensure_len(end, st.file_len, durable)?;
    }
    let written = inner
        .hooks
        .before(IoEvent::Write {
            path,
            offset: off,
            bytes: buf,
        })
        .and_then(|()| st.file.write_record(buf, off, st.file_len, durable));
    if let Err(e) = written {
        inner.poison.set("write", &e);
        return Err(Error::io(path, "write", e));
    }
    st.applied_word = st.file.set_committed(end);
    inner
        .hooks
        .word(&st.file.path, format::H_COMMITTED, st.applied_word);
    st.applied = end;
    inner.commit.mark_dirty();
    if end > st.file.map_len() {
        // Unmapping the old mapping takes long: not under the lock.
        let bigger = Arc::new(st.file.remapped()?);
        let old = std::mem::replace(&mut st.file, bigger);
        crate::engine::state::retire(old);
    }
    Ok(off)
}

/// Encodes a record for the current file, appends it, publishes it and
/// applies it to the index: the one way a write reaches the log.
fn append_record(
    inner: &Inner,
    st: &mut State,
    buf: &mut Vec<u8>,
    fields: &RecordFields<'_>,
) -> Result<u64> {
    buf.clear();
    format::encode_record_salted(buf, fields, st.file.header.salt);
    let offset = append(inner, st, buf)?;
    let (index, view) = st.index_and_view();
    match fields.kind {
        Kind::Put | Kind::Touch => {
            index.insert(&view, fields.id, offset);
        }
        Kind::Delete => {
            index.remove(&view, fields.id);
        }
    }
    Ok(offset)
}

/// Under `SyncPolicy::Always`, waits until the append is durable.
fn after_write(inner: &Inner, at: Appended) -> Result<()> {
    if inner.opts.sync == SyncPolicy::Always {
        inner
            .commit
            .sync_to(&inner.log(), at.generation, at.end, SyncKind::Range)?;
    }
    Ok(())
}

/// `save_session` and `save_session_if_unchanged`.
pub(crate) fn save(inner: &Inner, session: &mut Session, mode: SaveMode) -> Result<()> {
    check_size(session, inner.opts.max_session_size)?;
    let expires_ms = expires_millis(session.expires);
    let id = session.id.as_str().as_bytes();
    let ((version, now), at) = write(inner, |st, buf, now| {
        let found = live(st, &inner.expiry, &session.id, now)?.map_or(0, |l| l.rec.version);
        let version = next_version(session, found, mode)?;
        append_record(
            inner,
            st,
            buf,
            &RecordFields {
                kind: Kind::Put,
                id,
                data: &session.data,
                version,
                modified_ms: now,
                expires_ms,
            },
        )?;
        Ok((version, now))
    })?;
    session.mark_saved(from_millis(now), version);
    after_write(inner, at)
}

/// `LogStore::restore_session`: the session exactly as given.
pub(crate) fn restore(inner: &Inner, session: &Session) -> Result<()> {
    check_size(session, inner.opts.max_session_size)?;
    if session.version() == u64::MAX {
        // The next save could not write a larger version.
        return Err(Error::InvalidOption(format!(
            "session {}: version {} is out of range (at most {})",
            session.id.digest_hint(),
            u64::MAX,
            u64::MAX - 1
        )));
    }
    let id = session.id.as_str().as_bytes();
    let ((), at) = write(inner, |st, buf, now| {
        append_record(
            inner,
            st,
            buf,
            &RecordFields {
                kind: Kind::Put,
                id,
                data: &session.data,
                version: session.version().max(1),
                modified_ms: session.modified().map_or(now, to_millis),
                expires_ms: expires_millis(session.expires),
            },
        )?;
        Ok(())
    })?;
    after_write(inner, at)
}

/// `touch_session` (`expires` `None`: the deadline stays) and
/// `touch_session_until` (`Some(ms)`, 0 for none): a touch record pointing
/// at the session's put, carrying the session's deadline. No data is
/// written again.
pub(crate) fn touch(inner: &Inner, id: &SessionId, expires: Option<u64>) -> Result<bool> {
    let (touched, at) = write(inner, |st, buf, now| {
        let Some(l) = live(st, &inner.expiry, id, now)? else {
            return Ok(false);
        };
        let target = l.put_offset.to_le_bytes();
        let (version, expires_ms) = (l.rec.version, expires.unwrap_or(l.rec.expires_ms));
        append_record(
            inner,
            st,
            buf,
            &RecordFields {
                kind: Kind::Touch,
                id: id.as_str().as_bytes(),
                data: &target,
                version,
                modified_ms: now,
                expires_ms,
            },
        )?;
        Ok(true)
    })?;
    if touched {
        after_write(inner, at)?;
    }
    Ok(touched)
}

/// `delete_session`: a delete record, if the id has any record.
pub(crate) fn delete(inner: &Inner, id: &SessionId) -> Result<bool> {
    let (existed, at) = write(inner, |st, buf, now| {
        let Some((version, is_live)) =
            latest(&st.index, &st.view(), id.as_str().as_bytes())?.map(|l| {
                (
                    l.rec.version,
                    !inner
                        .expiry
                        .expired(l.rec.modified_ms, l.rec.expires_ms, now),
                )
            })
        else {
            return Ok(None);
        };
        append_record(
            inner,
            st,
            buf,
            &RecordFields {
                kind: Kind::Delete,
                id: id.as_str().as_bytes(),
                data: &[],
                version,
                modified_ms: now,
                expires_ms: 0,
            },
        )?;
        Ok(Some(is_live))
    })?;
    match existed {
        Some(is_live) => {
            after_write(inner, at)?;
            Ok(is_live)
        }
        None => Ok(false),
    }
}
