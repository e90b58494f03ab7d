//! `LogOptions`, the builder that opens a `LogStore` (its `open` is with
//! the facade, which this module does not know).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SharedClock, system_clock};
use crate::engine::format::Policy;
use crate::engine::hook::Hooks;
use crate::engine::policy::{StorePolicy, WhenFull};
use crate::engine::reserve;
use crate::engine::writeback;
use crate::error::{Error, Result};
use crate::options::{DEFAULT_MAX_SESSION_SIZE, SyncPolicy, Validate};
use crate::session::duration_millis;

/// Options for opening a [`LogStore`](crate::LogStore); start from
/// [`LogStore::options`](crate::LogStore::options), finish with
/// [`open`](LogOptions::open).
#[derive(Clone, Debug)]
pub struct LogOptions {
    pub(crate) sync: SyncPolicy,
    pub(crate) max_idle: Option<Duration>,
    pub(crate) max_session_size: usize,
    pub(crate) clock: SharedClock,
    pub(crate) background: bool,
    pub(crate) compact_garbage_ratio: f64,
    pub(crate) compact_min_bytes: u64,
    pub(crate) compact_check_interval: Duration,
    pub(crate) writeback_every: u64,
    pub(crate) repair: bool,
    pub(crate) allow_others_to_write_directory: bool,
    pub(crate) maintain_as_owner: bool,
    pub(crate) lock_timeout: Duration,
    pub(crate) space_reserve: u64,
    pub(crate) max_sessions: Option<u64>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) when_full: Option<WhenFull>,
    pub(crate) max_sessions_per_owner: Option<usize>,
    pub(crate) hooks: Hooks,
    /// Whether the store reports metrics (false for a store the
    /// application never sees: a backup's working copy).
    pub(crate) observed: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            sync: SyncPolicy::default(),
            max_idle: None,
            max_session_size: DEFAULT_MAX_SESSION_SIZE,
            clock: system_clock(),
            background: true,
            compact_garbage_ratio: 0.5,
            compact_min_bytes: 4 << 20,
            compact_check_interval: Duration::from_secs(10),
            writeback_every: writeback::DEFAULT_EVERY,
            repair: false,
            allow_others_to_write_directory: false,
            maintain_as_owner: false,
            lock_timeout: Duration::from_secs(5),
            space_reserve: reserve::DEFAULT_RESERVE,
            max_sessions: None,
            max_bytes: None,
            when_full: None,
            max_sessions_per_owner: None,
            hooks: Hooks::default(),
            observed: true,
        }
    }
}

impl LogOptions {
    /// When saves reach stable storage. Default: `SyncPolicy::Interval(1 s)`.
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }

    /// Sessions not saved or touched for this long are treated as absent
    /// and dropped by compaction. Default: no idle limit.
    ///
    /// Recorded in a new store, which every process then applies (see
    /// [`StorePolicy`]); opening a store that records another limit fails
    /// with [`Error::InvalidOption`]: leave it unset to follow the store.
    pub fn max_idle(mut self, max_idle: Duration) -> Self {
        self.max_idle = Some(max_idle);
        self
    }

    /// At most `n` live sessions per owner: a save that would give an owner
    /// more deletes that owner's least recently modified others, in the
    /// same append as the save, under the write lock (so atomically, also
    /// across processes sharing the store). The newest login wins. Each
    /// process applies the limit it was opened with. Default: no limit;
    /// `open` rejects 0.
    pub fn max_sessions_per_owner(mut self, n: usize) -> Self {
        self.max_sessions_per_owner = Some(n);
        self
    }

    /// Largest accepted session data in bytes. Default: 16 MiB; at most 1 GiB.
    pub fn max_session_size(mut self, bytes: usize) -> Self {
        self.max_session_size = bytes;
        self
    }

    /// The time source for stamping and expiry. Default: the system clock.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Whether a background thread syncs (for `SyncPolicy::Interval`) and
    /// compacts when worthwhile. Default: on.
    pub fn background(mut self, on: bool) -> Self {
        self.background = on;
        self
    }

    /// Background compaction runs when dead and expired bytes reach this
    /// fraction of the log. Default: 0.5.
    pub fn compact_garbage_ratio(mut self, ratio: f64) -> Self {
        self.compact_garbage_ratio = ratio;
        self
    }

    /// Background compaction leaves logs smaller than this alone.
    /// Default: 4 MiB.
    pub fn compact_min_bytes(mut self, bytes: u64) -> Self {
        self.compact_min_bytes = bytes;
        self
    }

    /// How often the background thread checks whether to compact.
    /// Default: 10 s.
    pub fn compact_check_interval(mut self, every: Duration) -> Self {
        self.compact_check_interval = every;
        self
    }

    /// A thread of the handle starts writeback of the log each time
    /// writers appended this many bytes, so that its dirty pages stay a
    /// few MiB instead of the gigabytes the kernel lets pile up before it
    /// writes them back in bursts (DESIGN.md §6). It starts writeback,
    /// nothing more: durability is still the sync policy's. Only with
    /// [`background`](LogOptions::background) on, and not under
    /// `SyncPolicy::Always` (whose saves write their own range back).
    /// 0 leaves writeback to the kernel. Default: 0 (measured on ext4,
    /// 4 MiB made saves wait in `pwrite` more often, not less: §6).
    pub fn writeback_every(mut self, bytes: u64) -> Self {
        self.writeback_every = bytes;
        self
    }

    /// Opens a log damaged in the middle by salvaging every record that
    /// passes its checksum, keeping a copy of the damaged file beside it
    /// (`<path>.damaged-<ms>`); `LogStore::stats().recovery` says what was
    /// dropped. Default: off (damage is an `Error::Corrupt`).
    pub fn repair(mut self, on: bool) -> Self {
        self.repair = on;
        self
    }

    /// Opens a store whose directory other users may write (group- or
    /// world-writable, like `/tmp`), giving up the protection against
    /// them: such a user can plant, replace or link the store's files
    /// (DESIGN.md, the threat model). Default: off, and such a directory is
    /// refused with [`Error::Unsafe`].
    pub fn allow_others_to_write_directory(mut self, on: bool) -> Self {
        self.allow_others_to_write_directory = on;
        self
    }

    /// Lets a process running as root open a store that belongs to another
    /// user, for maintenance (compaction, expiry, repair, an admin
    /// command): every file of the store is then created, renamed and
    /// removed under that user's filesystem identity (`setfsuid` on the
    /// working thread), so root never does in that user's directory what
    /// the user could not. Without it, a store whose owner (the log's, or
    /// for a new store the directory's) is not this process's user is
    /// refused with [`Error::Unsafe`]: a store
    /// planted at a path must not be adopted. It changes nothing for a
    /// process that is not root, which can never open another user's
    /// store. The `sessionlog` command's maintenance commands set it.
    /// Default: off. See DESIGN.md §14.
    pub fn maintain_as_owner(mut self, on: bool) -> Self {
        self.maintain_as_owner = on;
        self
    }

    /// Longest a write (or a compaction) waits for the store's write lock,
    /// and an explicit compaction (`compact`, `delete_old_sessions`) for
    /// another compaction to finish, before it fails with [`Error::Busy`]
    /// naming the store: a holder that is stopped or hung must not freeze
    /// every process. Default: 5 s.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// A quota: at most this many live sessions (expired ones do not
    /// count); a save past it fails with
    /// [`Error::QuotaExceeded`], or evicts
    /// (see [`when_full`](LogOptions::when_full)). Recorded in a new store
    /// as `max_idle` is. Default: none.
    pub fn max_sessions(mut self, n: u64) -> Self {
        self.max_sessions = Some(n);
        self
    }

    /// A quota: at most this many bytes of live sessions' records (id,
    /// data, 40 bytes of framing, padding to 8). Recorded as `max_idle`
    /// is. Default: none.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// What a save does once a quota is reached. Recorded as `max_idle`
    /// is. Default: [`WhenFull::Refuse`].
    pub fn when_full(mut self, when: WhenFull) -> Self {
        self.when_full = Some(when);
        self
    }

    /// Bytes kept allocated beside the log (`<log>.reserve`) and given back
    /// to the filesystem when the disk is full, so that deletes (logouts),
    /// touches that shorten a deadline and a compaction's start still find
    /// room; while it is given back, a save that must grow the log is
    /// refused unless this much stays free (DESIGN.md §6). 0 keeps no
    /// reserve. Default: 4 MiB; at most 1 GiB.
    pub fn space_reserve(mut self, bytes: u64) -> Self {
        self.space_reserve = bytes;
        self
    }

    /// Installs an I/O hook that sees (and may fail) every write, sync and
    /// rename after opening. For fault-injection tests.
    #[cfg(feature = "unstable-internals")]
    #[doc(hidden)]
    pub fn io_hook(mut self, hook: Arc<dyn crate::engine::hook::IoHook>) -> Self {
        self.hooks = Hooks(Some(hook));
        self
    }

    /// The policy these options ask a new store to record (DESIGN.md §9).
    /// A store that reports no metrics (its spans still name it).
    pub(crate) fn unobserved(mut self) -> Self {
        self.observed = false;
        self
    }

    pub(crate) fn policy(&self) -> Policy {
        StorePolicy {
            max_idle: self.max_idle,
            max_sessions: self.max_sessions,
            max_bytes: self.max_bytes,
            when_full: self.when_full.unwrap_or_default(),
        }
        .to_format()
    }

    /// What of the store's recorded `policy` these options contradict
    /// (a value they set to something else), named for a message.
    pub(crate) fn contradicts(&self, recorded: &Policy) -> Option<(&'static str, String, String)> {
        let rec = StorePolicy::from_format(recorded);
        let show =
            |v: Option<u64>, unit: &str| v.map_or("none".to_owned(), |n| format!("{n}{unit}"));
        let ms = |d: Option<Duration>| d.map(duration_millis);
        if self.max_idle.is_some() && self.max_idle != rec.max_idle {
            return Some((
                "max_idle",
                show(ms(self.max_idle), " ms"),
                show(ms(rec.max_idle), " ms"),
            ));
        }
        if self.max_sessions.is_some() && self.max_sessions != rec.max_sessions {
            return Some((
                "max_sessions",
                show(self.max_sessions, ""),
                show(rec.max_sessions, ""),
            ));
        }
        if self.max_bytes.is_some() && self.max_bytes != rec.max_bytes {
            return Some((
                "max_bytes",
                show(self.max_bytes, ""),
                show(rec.max_bytes, ""),
            ));
        }
        if let Some(w) = self.when_full
            && w != rec.when_full
        {
            return Some((
                "when_full",
                format!("{w:?}"),
                format!("{:?}", rec.when_full),
            ));
        }
        None
    }

    /// Checks every option; `open` calls this first.
    pub(crate) fn validate(&self) -> Result<()> {
        Validate::max_session_size(self.max_session_size)?;
        Validate::sync(self.sync)?;
        Validate::max_idle(self.max_idle)?;
        if !(self.compact_garbage_ratio > 0.0 && self.compact_garbage_ratio <= 1.0) {
            return Err(Error::InvalidOption(format!(
                "compact_garbage_ratio must be in (0, 1], not {}",
                self.compact_garbage_ratio
            )));
        }
        if self.max_sessions_per_owner == Some(0) {
            return Err(Error::InvalidOption(
                "max_sessions_per_owner must be at least 1".into(),
            ));
        }
        Validate::period("lock_timeout", self.lock_timeout)?;
        reserve::validate(self.space_reserve)?;
        if self.max_sessions == Some(0) || self.max_bytes == Some(0) {
            return Err(Error::InvalidOption(
                "max_sessions and max_bytes must be at least 1 (leave them unset for no quota)"
                    .into(),
            ));
        }
        Validate::period("compact_check_interval", self.compact_check_interval)
    }
}
