//! The quota check of a save (DESIGN.md §9): cheap while the index, which
//! still holds expired sessions, is under the quota; a walk of the index
//! counting only live sessions when it is not.

use std::sync::atomic::Ordering;

use crate::engine::format::{self, Policy};
use crate::engine::index::live_len;
use crate::engine::policy::{self, LiveTotals};
use crate::engine::read::decode_at;
use crate::engine::shared::Inner;
use crate::engine::state::State;
use crate::error::{Error, Result};
use crate::id::SessionId;

/// What a save may do under the store's quota.
pub(crate) enum Quota {
    /// It fits.
    Fits,
    /// It is past the quota; `victim` is the live session saved or touched
    /// least recently (other than the one being saved), if any.
    Over {
        error: Error,
        victim: Option<SessionId>,
    },
}

/// Checks a save of `id` whose record takes `new_len` bytes, under the
/// write lock with `st` fresh. When only expired sessions make the store
/// look full, the save fits and a compaction is asked of the background
/// thread, which gives their room back.
pub(crate) fn check(inner: &Inner, st: &State, id: &[u8], new_len: u64, now: u64) -> Result<Quota> {
    let Some(p) = st.file.policy.filter(policy::has_quota) else {
        return Ok(Quota::Fits);
    };
    let view = st.view();
    let old = st.index.get(&view, id);
    let old_len = old.map_or(0, |o| live_len(&view, o));
    // An upper bound: the index still counts expired sessions.
    let sessions = st.index.len() as u64 + u64::from(old.is_none());
    let bytes = (st.index.live_bytes() + new_len).saturating_sub(old_len);
    if policy::over(&p, sessions, bytes).is_none() {
        return Ok(Quota::Fits);
    }
    let recorded = st.file.recorded_idle();
    let dead = |off: u64| {
        format::peek_times(view.tail(off))
            .is_none_or(|(m, e)| inner.expiry.expired(recorded, m, e, now))
    };
    let (live, live_bytes) = live_totals(inner, st, now);
    // This save replaces the session's own record, if that is live.
    let own = old.filter(|&o| !dead(o));
    let n = live - u64::from(own.is_some()) + 1;
    let b = (live_bytes + new_len).saturating_sub(own.map_or(0, |o| live_len(&view, o)));
    match policy::over(&p, n, b) {
        None => {
            // Expired sessions hold the room: have them compacted away.
            inner.compact_wanted.store(true, Ordering::Release);
            inner.stop.wake();
            Ok(Quota::Fits)
        }
        Some((what, limit, used)) => {
            // The session saved or touched least recently, other than this
            // one: looked for only where the store evicts.
            let mut oldest: Option<(u64, u64)> = None;
            if p.evict {
                for off in st.index.offsets() {
                    if Some(off) == old || dead(off) {
                        continue;
                    }
                    if let Some((modified, _)) = format::peek_times(view.tail(off))
                        && oldest.is_none_or(|(m, _)| modified < m)
                    {
                        oldest = Some((modified, off));
                    }
                }
            }
            let victim = match oldest {
                Some((_, off)) => SessionId::from_stored(decode_at(&view, off)?.id),
                None => None,
            };
            Ok(Quota::Over {
                error: Error::QuotaExceeded {
                    path: inner.path.clone(),
                    what,
                    limit,
                    used,
                },
                victim,
            })
        }
    }
}

/// Live sessions and their bytes in `st` at `now`, from the last walk of
/// the index if nothing changed since (see `LiveTotals`).
fn live_totals(inner: &Inner, st: &State, now: u64) -> (u64, u64) {
    let mut cache = inner.live_totals.lock();
    if let Some(c) = *cache
        && c.generation == st.file.header.generation
        && c.applied == st.applied
        && now < c.until_ms
    {
        return (c.sessions, c.bytes);
    }
    let view = st.view();
    let recorded = st.file.recorded_idle();
    let idle = match recorded {
        Some(0) => None,
        Some(ms) => Some(ms),
        None => inner.expiry.max_idle_ms,
    };
    let (mut n, mut b, mut until) = (0u64, 0u64, u64::MAX);
    for off in st.index.offsets() {
        let Some((modified, expires)) = format::peek_times(view.tail(off)) else {
            continue;
        };
        if inner.expiry.expired(recorded, modified, expires, now) {
            continue;
        }
        n += 1;
        b += live_len(&view, off);
        if expires != 0 {
            until = until.min(expires);
        }
        if let Some(idle) = idle {
            until = until.min(modified.saturating_add(idle));
        }
    }
    *cache = Some(LiveTotals {
        generation: st.file.header.generation,
        applied: st.applied,
        until_ms: until,
        sessions: n,
        bytes: b,
    });
    (n, b)
}

/// Whether `p` evicts rather than refuses.
pub(crate) fn evicts(p: Option<Policy>) -> bool {
    p.is_some_and(|p| p.evict)
}
