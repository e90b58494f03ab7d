//! The time source of a store, replaceable so that expiry can be tested
//! without waiting.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::session::{duration_millis, from_millis, to_millis};

/// A source of wall-clock time for stamping and expiring sessions.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; clones share one time. For tests
/// and simulations.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock stopped at `start` (millisecond precision).
    pub fn new(start: SystemTime) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(to_millis(start))))
    }

    /// A clock stopped at an arbitrary fixed date (2030-01-01 UTC).
    pub fn fixed() -> ManualClock {
        ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_893_456_000))
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(duration_millis(d), Ordering::SeqCst);
    }

    /// Sets the clock to `t`, which may be earlier than now.
    pub fn set(&self, t: SystemTime) {
        self.0.store(to_millis(t), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        from_millis(self.0.load(Ordering::SeqCst))
    }
}

/// The clock type stores hold.
pub(crate) type SharedClock = Arc<dyn Clock>;

/// The default clock.
pub(crate) fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// When a store's sessions expire: its clock and idle limit.
#[derive(Clone, Debug)]
pub(crate) struct Expiry {
    pub clock: SharedClock,
    /// Sessions not saved or touched for this long are gone, in a store
    /// whose file records no policy (one of an earlier build).
    pub max_idle_ms: Option<u64>,
}

impl Expiry {
    /// The store's time, in milliseconds since the epoch.
    pub fn now_ms(&self) -> u64 {
        to_millis(self.clock.now())
    }

    /// Whether a session with these times is gone at `now_ms`, under the
    /// idle limit its store records (`recorded`: in ms, 0 for none; `None`
    /// when the store records no policy, and then this handle's own).
    pub fn expired(
        &self,
        recorded: Option<u64>,
        modified_ms: u64,
        expires_ms: u64,
        now_ms: u64,
    ) -> bool {
        crate::session::is_expired(modified_ms, expires_ms, self.idle(recorded), now_ms)
    }

    /// [`expired`](Self::expired) at the clock's time, which is read only
    /// when the answer depends on it: for a session with a deadline, or
    /// under an idle limit (a load of a session with neither reads no
    /// clock).
    pub fn expired_now(&self, recorded: Option<u64>, modified_ms: u64, expires_ms: u64) -> bool {
        let idle = self.idle(recorded);
        if expires_ms == 0 && idle.is_none() {
            return false;
        }
        crate::session::is_expired(modified_ms, expires_ms, idle, self.now_ms())
    }

    /// The idle limit in force, in ms, under what the store records.
    fn idle(&self, recorded: Option<u64>) -> Option<u64> {
        match recorded {
            Some(0) => None,
            Some(ms) => Some(ms),
            None => self.max_idle_ms,
        }
    }
}
