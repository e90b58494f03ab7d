//! What every backend's options share: the sync policy, the default size
//! limit, and the checks that every builder's `open` runs.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::record::MAX_RECORD_DATA;

/// Default limit on session data, shared by every backend: 16 MiB.
pub const DEFAULT_MAX_SESSION_SIZE: usize = 16 << 20;

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
    /// The interval must not be zero.
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

/// The checks every backend's builder runs in `open`, so that one option
/// means the same, and is refused the same way, everywhere.
pub(crate) struct Validate;

impl Validate {
    /// A sync interval of zero would make a background thread spin.
    pub fn sync(policy: SyncPolicy) -> Result<()> {
        if let SyncPolicy::Interval(d) = policy
            && d.is_zero()
        {
            return Err(Error::InvalidOption(
                "SyncPolicy::Interval needs a non-zero interval (use Always to sync every save)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The data limit must fit a record.
    pub fn max_session_size(bytes: usize) -> Result<()> {
        if bytes == 0 || bytes > MAX_RECORD_DATA {
            return Err(Error::InvalidOption(format!(
                "max_session_size must be between 1 and {MAX_RECORD_DATA} bytes, not {bytes}"
            )));
        }
        Ok(())
    }

    /// An idle limit of zero would expire every session as it is saved.
    pub fn max_idle(max_idle: Option<Duration>) -> Result<()> {
        if max_idle.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidOption(
                "max_idle must be non-zero (leave it unset for no idle limit)".into(),
            ));
        }
        Ok(())
    }

    /// A period of zero would make a background thread spin.
    pub fn period(name: &str, every: Duration) -> Result<()> {
        if every.is_zero() {
            return Err(Error::InvalidOption(format!("{name} must be non-zero")));
        }
        Ok(())
    }
}
