//! `StorePolicy`: the rules a store records in its file for every process
//! (its idle limit and its quota), and how a save is checked against the
//! quota (DESIGN.md §9).

use std::time::Duration;

use crate::engine::format::{self, Policy};
use crate::session::duration_millis;

/// What a save does when the store's quota is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// The save fails with [`Error::QuotaExceeded`](crate::Error::QuotaExceeded)
    /// and nothing is written. The default: a flood of new visitors then
    /// cannot push out the sessions of users who are logged in.
    #[default]
    Refuse,
    /// The sessions saved or touched least recently are deleted until the
    /// save fits (at most 64 for one save; past that it is refused).
    EvictOldest,
}

/// The rules a `LogStore` records in its file, so that every process, the
/// command-line tool and compaction apply the same ones: set when the store
/// is made (from the options of its first open) and changed only by
/// [`LogStore::set_policy`](crate::LogStore::set_policy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorePolicy {
    /// Sessions not saved or touched for this long are gone. `None`: no
    /// idle limit.
    pub max_idle: Option<Duration>,
    /// Most live sessions (expired ones do not count). `None`: no limit.
    pub max_sessions: Option<u64>,
    /// Most bytes of live sessions' records (id, data and framing; expired
    /// ones do not count). `None`: no limit.
    pub max_bytes: Option<u64>,
    /// What a save does once a quota is reached.
    pub when_full: WhenFull,
}

impl StorePolicy {
    /// As the file records it.
    pub(crate) fn to_format(self) -> Policy {
        Policy {
            max_idle_ms: self.max_idle.map_or(0, duration_millis),
            max_sessions: self.max_sessions.unwrap_or(0),
            max_bytes: self.max_bytes.unwrap_or(0),
            evict: self.when_full == WhenFull::EvictOldest,
        }
    }

    /// From what the file records.
    pub(crate) fn from_format(p: &Policy) -> StorePolicy {
        let some = |n: u64| (n != 0).then_some(n);
        StorePolicy {
            max_idle: some(p.max_idle_ms).map(Duration::from_millis),
            max_sessions: some(p.max_sessions),
            max_bytes: some(p.max_bytes),
            when_full: if p.evict {
                WhenFull::EvictOldest
            } else {
                WhenFull::Refuse
            },
        }
    }
}

/// Whether a store holding `sessions` sessions of `bytes` bytes is within
/// `p`'s quota; if not, which quota it passes, its limit and the use.
pub(crate) fn over(p: &Policy, sessions: u64, bytes: u64) -> Option<(&'static str, u64, u64)> {
    if p.max_sessions != 0 && sessions > p.max_sessions {
        return Some(("sessions", p.max_sessions, sessions));
    }
    if p.max_bytes != 0 && bytes > p.max_bytes {
        return Some(("bytes", p.max_bytes, bytes));
    }
    None
}

/// Whether `p` sets any quota.
pub(crate) fn has_quota(p: &Policy) -> bool {
    p.max_sessions != 0 || p.max_bytes != 0
}

/// What the quota check's walk of the index found live (`quota.rs`), kept until the log changes (a
/// record appended, a compaction's new file) or the first of those
/// sessions expires: a flood of saves that are refused appends nothing, so
/// each costs a lookup, not a walk (DESIGN.md §9 has the figures).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LiveTotals {
    pub generation: u64,
    pub applied: u64,
    /// The earliest time one of the sessions counted expires.
    pub until_ms: u64,
    pub sessions: u64,
    pub bytes: u64,
}

const _: () = assert!(format::POLICY_EVICT != format::POLICY_RECORDED);
