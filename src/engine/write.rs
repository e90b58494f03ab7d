//! The write path: every save, restore, touch and delete holds the write
//! locks, catches up with the file, decides and encodes one record under
//! the shared state lock, appends it with no state lock held, then
//! publishes it and applies it to the index under the exclusive one; then,
//! under `SyncPolicy::Always`, waits for group commit.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::engine::commit::SyncKind;
use crate::engine::compact;
use crate::engine::file::LogFile;
use crate::engine::format::{self, Kind, MAX_OFFSET, RecordFields};
use crate::engine::hook::IoEvent;
use crate::engine::quota::{self, Quota};
use crate::engine::read::{Owned, latest, live, owned_live};
use crate::engine::reserve;
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

/// Runs `f` holding every write lock with a fresh view, for at most one
/// append: `f` decides from the view, and encodes the record to append
/// into the buffer (for the view's file, `State::encode`) or leaves it
/// empty, and says whether the record may use the space reserve (a
/// delete, a touch that shortens a deadline: `reserve::release`). The
/// record is written with only the write locks held, and
/// published and applied under the state lock afterwards: this process's
/// loads wait for a pointer's worth of work, never for the write, which
/// can block in the kernel for tens of milliseconds (a page of the map
/// whose extent the journal must convert, writeback of that page).
fn write<R>(
    inner: &Inner,
    f: impl FnOnce(&State, &mut Vec<u8>, u64, &mut bool) -> Result<R>,
) -> Result<(R, Appended)> {
    inner.poison.check(&inner.path)?;
    let _busy = inner.commit.enter(&inner.lock);
    let (mut buf, _lock) = loop {
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
                break (buf, lock);
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
    // From here until the locks are let go, the view cannot change: other
    // writers of this process wait for the mutex, other processes' for the
    // file lock, so no record is appended and no compaction swaps; readers
    // that refresh find it fresh.
    let now = inner.now_ms();
    buf.clear();
    let mut may_use_reserve = false;
    let (r, file, off, file_len) = {
        let st = inner.state.read();
        let r = f(&st, &mut buf, now, &mut may_use_reserve)?;
        (r, Arc::clone(&st.file), st.applied, st.file_len)
    };
    if buf.is_empty() {
        let at = Appended {
            generation: file.header.generation,
            end: off,
        };
        return Ok((r, at));
    }
    let (end, file_len) = append(inner, &file, off, file_len, &buf, may_use_reserve)?;
    let mut st = inner.state.write();
    st.file_len = file_len;
    st.applied_word = st.file.set_committed(end);
    inner
        .hooks
        .word(&st.file.path, format::H_COMMITTED, st.applied_word);
    st.applied = end;
    inner.commit.mark_dirty();
    st.map_to(end)?;
    let (index, view) = st.index_and_view();
    // One record, or (a save over an owner's limit, `delete_sessions_of`)
    // several, applied in order.
    let mut pos = 0usize;
    while pos < buf.len() {
        let at = off + pos as u64;
        let (kind, id, padded_len) = encoded(&buf[pos..])
            .ok_or_else(|| Error::corrupt(&inner.path, at, "a record just encoded is cut short"))?;
        match kind {
            Kind::Put | Kind::Touch => {
                index.insert(&view, id, at);
            }
            Kind::Delete => {
                index.remove(&view, id);
            }
        }
        pos += padded_len;
    }
    let at = Appended {
        generation: st.file.header.generation,
        end,
    };
    drop(st);
    // Published: the thread, if this woke it, sees the record.
    inner.writeback.appended(off, end, file_len);
    Ok((r, at))
}

/// The kind, id and padded length of the record at the start of `buf`,
/// which `encode` just wrote there: read back without decoding and
/// checking it again (that took 6 % of a save's instructions).
fn encoded(buf: &[u8]) -> Option<(Kind, &[u8], usize)> {
    let kind = Kind::from_byte(*buf.get(format::R_KIND)?)?;
    let len = format::peek_len(buf)?;
    (len > 0 && len <= buf.len()).then_some(())?;
    Some((kind, format::peek_id(buf)?, len))
}

/// Writes the encoded record in `buf` at `off` of `file` (growing the file
/// first if it must), past the committed end where no reader looks.
/// Returns the record's end and the file's length.
fn append(
    inner: &Inner,
    file: &LogFile,
    off: u64,
    mut file_len: u64,
    buf: &[u8],
    may_use_reserve: bool,
) -> Result<(u64, u64)> {
    let path = &inner.path;
    let end = off + buf.len() as u64;
    if end > MAX_OFFSET {
        return Err(Error::io(
            path,
            "append",
            io::Error::from(io::ErrorKind::FileTooLarge),
        ));
    }
    let prefer_pwrite = !copies_into_map(inner.opts.sync);
    if end > file_len {
        file_len = file.file_len()?;
        if end > file_len {
            inner
                .hooks
                .before(IoEvent::Grow { path, len: end })
                .map_err(|e| Error::io(path, "grow file", e))?;
        }
        file_len = grow(inner, file, end, file_len, may_use_reserve)?;
    }
    let written = inner
        .hooks
        .before(IoEvent::Write {
            path,
            offset: off,
            bytes: buf,
        })
        .and_then(|()| file.write_record(buf, off, file_len, prefer_pwrite));
    if let Err(e) = written {
        inner.poison.set("write", &e);
        return Err(Error::io(path, "write", e));
    }
    Ok((end, file_len))
}

/// Whether records are copied into the map (where the file's blocks are
/// reserved) rather than written with `pwrite`: only in a log that is
/// never synced. A sync write-protects the pages it writes back, and the
/// next copy into such a page faults and can wait in the kernel for
/// milliseconds (16 ms measured, with nothing else running), where a
/// `pwrite` does not (DESIGN.md §4). The handle's I/O thread faults the
/// pages in ahead of such copies (`writeback.rs`).
pub(crate) fn copies_into_map(sync: SyncPolicy) -> bool {
    sync == SyncPolicy::Never
}

/// Grows `file` (now `current` long) to hold `end`: a chunk, or, on a full
/// disk, the least that holds the record. A record that may use the space
/// reserve gives the reserve back when even that does not fit; any other
/// is refused while the reserve is given back and the disk holds less
/// than the reserve besides the growth (DESIGN.md §6).
fn grow(
    inner: &Inner,
    file: &LogFile,
    end: u64,
    current: u64,
    may_use_reserve: bool,
) -> Result<u64> {
    let path = &inner.site;
    let durable = inner.opts.sync == SyncPolicy::Always;
    let want = inner.opts.space_reserve;
    let whole =
        want == 0 || reserve::held(path) >= want || reserve::ensure(path, inner.lock.owner, want);

    if !whole && !may_use_reserve {
        let free = reserve::free_bytes(path).unwrap_or(u64::MAX);
        if free < (end - current).saturating_add(want) {
            return Err(reserve::refusal(path, free, want));
        }
    }
    // While the reserve is given back, the log grows by no more than the
    // record needs: a chunk would hand the reserve's space to saves.
    if whole {
        match file.ensure_len(end, current, durable, false) {
            Err(e) if reserve::is_full(&e) => {}
            other => return other,
        }
    }
    match file.ensure_len(end, current, durable, true) {
        Err(e) if may_use_reserve && reserve::is_full(&e) && reserve::release(path) > 0 => {
            file.ensure_len(end, current, durable, true)
        }
        other => other,
    }
}

/// Encodes a record for `st`'s file into `buf`: the one way a write
/// reaches the log (`write` appends it, publishes it and applies it).
fn encode(st: &State, buf: &mut Vec<u8>, fields: &RecordFields<'_>) {
    buf.clear();
    encode_more(st, buf, fields);
}

/// Encodes one more record after those in `buf`, appended with them.
fn encode_more(st: &State, buf: &mut Vec<u8>, fields: &RecordFields<'_>) {
    format::encode_record_salted(buf, fields, st.file.header.salt);
}

/// A delete record for the owned session `o`, after those in `buf`.
fn encode_delete(st: &State, buf: &mut Vec<u8>, o: &Owned<'_>, now: u64) {
    encode_more(
        st,
        buf,
        &RecordFields {
            kind: Kind::Delete,
            id: o.latest.rec.id,
            data: &[],
            version: o.latest.rec.version,
            modified_ms: now,
            expires_ms: 0,
            owner: &[],
        },
    );
}

/// Whether the file of `st` may not hold a record with an owner: a
/// version-1 file, which older builds may still read (`save` compacts it
/// into a version-2 file first).
fn needs_upgrade(st: &State, owner: &[u8]) -> bool {
    !owner.is_empty() && st.file.header.version < 2
}

/// Compacts a version-1 log into a version-2 one, so that it may hold
/// owners.
fn upgrade(inner: &Inner) -> Result<()> {
    compact::compact(&inner.compaction(), None, None).map(|_| ())
}

/// How many times a save with an owner compacts a version-1 file before
/// it gives up (only a process of an older build compacting it back again
/// and again gets there).
const UPGRADE_TRIES: usize = 3;

/// The owned sessions over the limit once `keep_id` is saved for them:
/// the least recently modified first. Sessions modified in the same
/// millisecond (three logins in a row) go in the order their latest
/// records (a put, or a touch) were appended: the earlier is the older,
/// which the ids, random, do not say. A compaction copies latest records in
/// file order, so the order survives it.
fn over_limit<'a>(mut others: Vec<Owned<'a>>, keep_id: &[u8], limit: usize) -> Vec<Owned<'a>> {
    others.retain(|o| o.latest.rec.id != keep_id);
    let excess = (others.len() + 1).saturating_sub(limit);
    others.sort_unstable_by_key(|o| (o.latest.rec.modified_ms, o.latest.offset));
    others.truncate(excess);
    others
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

/// Most sessions one save evicts under `WhenFull::EvictOldest` before it
/// gives up and is refused.
const MAX_EVICTIONS: usize = 64;

/// `save_session` and `save_session_if_unchanged`. With an owner and
/// `max_sessions_per_owner`, the same append deletes the owner's least
/// recently modified sessions over the limit.
pub(crate) fn save(inner: &Inner, session: &mut Session, mode: SaveMode) -> Result<()> {
    check_size(session, inner.opts.max_session_size)?;
    let mut evicted = 0;
    loop {
        match save_once(inner, session, mode)? {
            None => return Ok(()),
            Some((_, Some(victim))) if evicted < MAX_EVICTIONS => {
                delete(inner, &victim)?;
                evicted += 1;
            }
            Some((error, _)) => return Err(error),
        }
    }
}

/// The session's owner as a record stores it (empty: none).
fn owner_bytes(session: &Session) -> &[u8] {
    session
        .owner
        .as_ref()
        .map_or(&[], |o| o.as_str().as_bytes())
}

/// One try of a save: `None` once it is written, or the quota's refusal
/// and, if the store evicts, the session to evict before the next try.
fn save_once(
    inner: &Inner,
    session: &mut Session,
    mode: SaveMode,
) -> Result<Option<(Error, Option<SessionId>)>> {
    let expires_ms = expires_millis(session.expires);
    let id = session.id.as_bytes();
    let owner = owner_bytes(session);
    for _ in 0..UPGRADE_TRIES {
        let (saved, at) = write(inner, |st, buf, now, _| {
            if needs_upgrade(st, owner) {
                return Ok(None);
            }
            // A new session of an owner adds an entry to the owner index:
            // its cache miss now overlaps the id index's just below.
            st.index.warm_owner(owner);
            let found = live(st, &inner.expiry, &session.id, now)?.map_or(0, |l| l.rec.version);
            let version = next_version(session, found, mode)?;
            encode(
                st,
                buf,
                &RecordFields {
                    kind: Kind::Put,
                    id,
                    data: &session.data,
                    version,
                    modified_ms: now,
                    expires_ms,
                    owner,
                },
            );
            if let Quota::Over { error, victim } =
                quota::check(inner, st, id, buf.len() as u64, now)?
            {
                buf.clear();
                let victim = victim.filter(|_| quota::evicts(st.file.policy));
                return Ok(Some(Err((error, victim))));
            }
            let mut evicted = false;
            if let Some(limit) = inner.opts.max_sessions_per_owner
                && !owner.is_empty()
            {
                let others = owned_live(st, &inner.expiry, owner, now)?;
                for o in over_limit(others, id, limit) {
                    encode_delete(st, buf, &o, now);
                    evicted = true;
                }
            }
            Ok(Some(Ok((version, now, evicted))))
        })?;
        match saved {
            None => {
                upgrade(inner)?;
                continue;
            }
            Some(Ok((version, now, evicted))) => {
                session.mark_saved(from_millis(now), version);
                if evicted {
                    // The put and its deletes are one append: synced, so
                    // that a torn tail cannot keep the put and lose the
                    // deletes.
                    inner.sync_all()?;
                } else {
                    after_write(inner, at)?;
                }
                return Ok(None);
            }
            Some(Err(refused)) => return Ok(Some(refused)),
        }
    }
    Err(upgrade_failed(inner))
}

fn upgrade_failed(inner: &Inner) -> Error {
    Error::Busy {
        path: inner.path.clone(),
        what: "the log stays in format version 1 (another process of an older build keeps \
               compacting it), so it cannot hold a session's owner"
            .into(),
    }
}

/// `delete_sessions_of`: one append of a delete record for each live
/// session of `owner` but `keep`, decided under the write lock, and synced
/// before it returns whatever the sync policy (as everything before it): a
/// torn tail after a power loss could otherwise keep some of the deletes
/// and lose the others.
pub(crate) fn delete_owned(inner: &Inner, owner: &[u8], keep: Option<&[u8]>) -> Result<usize> {
    let (n, _at) = write(inner, |st, buf, now, _| {
        let mut n = 0;
        for o in owned_live(st, &inner.expiry, owner, now)? {
            if Some(o.latest.rec.id) != keep {
                encode_delete(st, buf, &o, now);
                n += 1;
            }
        }
        Ok(n)
    })?;
    // Also with nothing deleted: the call then says every earlier write is
    // durable, as after a compaction.
    inner.sync_all()?;
    Ok(n)
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
    let id = session.id.as_bytes();
    let owner = owner_bytes(session);
    for _ in 0..UPGRADE_TRIES {
        let (written, at) = write(inner, |st, buf, now, _| {
            if needs_upgrade(st, owner) {
                return Ok(false);
            }
            encode(
                st,
                buf,
                &RecordFields {
                    kind: Kind::Put,
                    id,
                    data: &session.data,
                    version: session.version().max(1),
                    modified_ms: session.modified().map_or(now, to_millis),
                    expires_ms: expires_millis(session.expires),
                    owner,
                },
            );
            Ok(true)
        })?;
        if !written {
            upgrade(inner)?;
            continue;
        }
        return after_write(inner, at);
    }
    Err(upgrade_failed(inner))
}

/// `touch_session` (`expires` `None`: the deadline stays) and
/// `touch_session_until` (`Some(ms)`, 0 for none): a touch record pointing
/// at the session's put, carrying the session's deadline. No data is
/// written again.
pub(crate) fn touch(inner: &Inner, id: &SessionId, expires: Option<u64>) -> Result<bool> {
    let (touched, at) = write(inner, |st, buf, now, may_use_reserve| {
        let Some(l) = live(st, &inner.expiry, id, now)? else {
            return Ok(false);
        };
        let target = l.put_offset.to_le_bytes();
        let (version, expires_ms) = (l.rec.version, expires.unwrap_or(l.rec.expires_ms));
        // A deadline brought forward ends a session sooner, as a logout does.
        *may_use_reserve =
            expires_ms != 0 && (l.rec.expires_ms == 0 || expires_ms < l.rec.expires_ms);
        encode(
            st,
            buf,
            &RecordFields {
                kind: Kind::Touch,
                id: id.as_bytes(),
                data: &target,
                version,
                modified_ms: now,
                expires_ms,
                owner: &[],
            },
        );
        Ok(true)
    })?;
    if touched {
        after_write(inner, at)?;
    }
    Ok(touched)
}

/// `delete_session`: a delete record, if the id has any record.
pub(crate) fn delete(inner: &Inner, id: &SessionId) -> Result<bool> {
    let (existed, at) = write(inner, |st, buf, now, may_use_reserve| {
        *may_use_reserve = true;
        let Some((version, is_live)) = latest(&st.index, &st.view(), id.as_bytes())?.map(|l| {
            (
                l.rec.version,
                !inner.expiry.expired(
                    st.file.recorded_idle(),
                    l.rec.modified_ms,
                    l.rec.expires_ms,
                    now,
                ),
            )
        }) else {
            return Ok(None);
        };
        encode(
            st,
            buf,
            &RecordFields {
                kind: Kind::Delete,
                id: id.as_bytes(),
                data: &[],
                version,
                modified_ms: now,
                expires_ms: 0,
                owner: &[],
            },
        );
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
