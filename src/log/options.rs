//! `LogOptions`, the builder that opens a `LogStore`, and `SyncPolicy`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SharedClock, system_clock};
use crate::error::{Error, Result};
use crate::log::LogStore;
use crate::log::format::MAX_RECORD_DATA;
use crate::log::hook::IoHook;
use crate::memory::DEFAULT_MAX_SESSION_SIZE;

/// When saves reach stable storage. A process crash never loses an
/// acknowledged save under any policy (written data is in the kernel); the
/// policy decides what a power loss or kernel crash may take. See DESIGN.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every save, touch and delete is on stable storage when it returns.
    /// Concurrent savers share one flush (group commit). `LogStore` writes
    /// back only the new records' range (`RWF_DSYNC`), one I/O per flush.
    /// `DirStore` syncs the session's file and its directory.
    Always,
    /// A background thread calls `fdatasync` this often when something was
    /// written: a power loss can take at most about this much recent work.
    Interval(Duration),
    /// Never `fdatasync` on its own: the operating system writes back when
    /// it likes (within about 30 s on Linux). `LogStore::sync` still works.
    Never,
}

impl Default for SyncPolicy {
    /// `Interval(1 s)`.
    fn default() -> Self {
        SyncPolicy::Interval(Duration::from_secs(1))
    }
}

/// Options for opening a [`LogStore`]; start from [`LogStore::options`].
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
    pub(crate) repair: bool,
    pub(crate) hook: Option<Arc<dyn IoHook>>,
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
            repair: false,
            hook: None,
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
    pub fn max_idle(mut self, max_idle: Duration) -> Self {
        self.max_idle = Some(max_idle);
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

    /// Opens a log damaged in the middle by salvaging every record that
    /// passes its checksum, keeping a copy of the damaged file beside it
    /// (`<path>.damaged-<ms>`); `LogStore::stats().recovery` says what was
    /// dropped. Default: off (damage is an `Error::Corrupt`).
    pub fn repair(mut self, on: bool) -> Self {
        self.repair = on;
        self
    }

    /// Installs an I/O hook that sees (and may fail) every write, sync and
    /// rename after opening. For fault-injection tests.
    #[doc(hidden)]
    pub fn io_hook(mut self, hook: Arc<dyn IoHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Opens (or creates) the store at `path`.
    pub fn open(self, path: impl AsRef<Path>) -> Result<LogStore> {
        self.validate()?;
        LogStore::open_with(path.as_ref(), self)
    }

    fn validate(&self) -> Result<()> {
        if self.max_session_size == 0 || self.max_session_size > MAX_RECORD_DATA {
            return Err(Error::InvalidOption(format!(
                "max_session_size must be between 1 and {MAX_RECORD_DATA} bytes, not {}",
                self.max_session_size
            )));
        }
        if let SyncPolicy::Interval(d) = self.sync
            && d.is_zero()
        {
            return Err(Error::InvalidOption(
                "SyncPolicy::Interval needs a non-zero interval (use Always to sync every save)"
                    .into(),
            ));
        }
        if !(self.compact_garbage_ratio > 0.0 && self.compact_garbage_ratio <= 1.0) {
            return Err(Error::InvalidOption(format!(
                "compact_garbage_ratio must be in (0, 1], not {}",
                self.compact_garbage_ratio
            )));
        }
        if self.compact_check_interval.is_zero() {
            return Err(Error::InvalidOption(
                "compact_check_interval must be non-zero".into(),
            ));
        }
        Ok(())
    }
}
