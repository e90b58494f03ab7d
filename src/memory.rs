//! `MemoryStore`: sessions in a hash map, gone when the process exits.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::RwLock;

use crate::clock::{Clock, SharedClock, system_clock};
use crate::error::Result;
use crate::id::SessionId;
use crate::session::{
    Session, check_size, duration_millis, expires_from_millis, expires_millis, from_millis,
    is_expired, next_version, to_millis,
};
use crate::store::{SessionIter, SessionStore};

/// Default limit on session data, shared by every backend: 16 MiB.
pub const DEFAULT_MAX_SESSION_SIZE: usize = 16 << 20;

#[derive(Clone)]
struct Stored {
    data: Vec<u8>,
    expires_ms: u64,
    modified_ms: u64,
    version: u64,
}

/// A volatile, in-process store (session2's `VolatileSessionStore`):
/// thread-safe, not shared between processes, lost on exit.
#[derive(Debug)]
pub struct MemoryStore {
    map: RwLock<HashMap<SessionId, Stored>>,
    clock: SharedClock,
    max_idle_ms: Option<u64>,
    max_session_size: usize,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("len", &self.data.len())
            .field("version", &self.version)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store with no idle limit and a 16 MiB data limit.
    pub fn new() -> MemoryStore {
        MemoryStore {
            map: RwLock::new(HashMap::new()),
            clock: system_clock(),
            max_idle_ms: None,
            max_session_size: DEFAULT_MAX_SESSION_SIZE,
        }
    }

    /// Sessions idle this long are treated as absent (default: no limit).
    pub fn with_max_idle(mut self, max_idle: Duration) -> MemoryStore {
        self.max_idle_ms = Some(duration_millis(max_idle));
        self
    }

    /// Largest accepted session data in bytes (default 16 MiB).
    pub fn with_max_session_size(mut self, bytes: usize) -> MemoryStore {
        self.max_session_size = bytes;
        self
    }

    /// Uses `clock` instead of the system clock (for tests).
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> MemoryStore {
        self.clock = std::sync::Arc::new(clock);
        self
    }

    fn now_ms(&self) -> u64 {
        to_millis(self.clock.now())
    }

    fn live<'a>(&self, s: &'a Stored, now: u64) -> Option<&'a Stored> {
        (!is_expired(s.modified_ms, s.expires_ms, self.max_idle_ms, now)).then_some(s)
    }

    fn save(&self, session: &mut Session, check: bool) -> Result<()> {
        check_size(session, self.max_session_size)?;
        let mut map = self.map.write();
        let now = self.now_ms();
        let found = map
            .get(&session.id)
            .and_then(|s| self.live(s, now))
            .map_or(0, |s| s.version);
        let version = next_version(
            session,
            found,
            if check {
                crate::session::SaveMode::IfUnchanged
            } else {
                crate::session::SaveMode::Overwrite
            },
        )?;
        map.insert(
            session.id.clone(),
            Stored {
                data: session.data.clone(),
                expires_ms: expires_millis(session.expires),
                modified_ms: now,
                version,
            },
        );
        session.mark_saved(from_millis(now), version);
        Ok(())
    }
}

fn to_session(id: &SessionId, s: &Stored) -> Session {
    Session::restore(
        id.clone(),
        s.data.clone(),
        expires_from_millis(s.expires_ms),
        from_millis(s.modified_ms),
        s.version,
    )
}

impl SessionStore for MemoryStore {
    fn setup(&self) -> Result<()> {
        Ok(())
    }

    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        let now = self.now_ms();
        let map = self.map.read();
        Ok(map
            .get(id)
            .and_then(|s| self.live(s, now))
            .map(|s| to_session(id, s)))
    }

    fn save_session(&self, session: &mut Session) -> Result<()> {
        self.save(session, false)
    }

    fn save_session_if_unchanged(&self, session: &mut Session) -> Result<()> {
        self.save(session, true)
    }

    fn touch_session(&self, id: &SessionId) -> Result<bool> {
        let now = self.now_ms();
        let mut map = self.map.write();
        let live = map.get(id).and_then(|s| self.live(s, now)).is_some();
        if live && let Some(s) = map.get_mut(id) {
            s.modified_ms = now;
        }
        Ok(live)
    }

    fn delete_session(&self, id: &SessionId) -> Result<bool> {
        let now = self.now_ms();
        let removed = self.map.write().remove(id);
        Ok(removed.is_some_and(|s| self.live(&s, now).is_some()))
    }

    fn has_session(&self, id: &SessionId) -> Result<bool> {
        let now = self.now_ms();
        Ok(self
            .map
            .read()
            .get(id)
            .and_then(|s| self.live(s, now))
            .is_some())
    }

    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        let now = self.now_ms();
        let snapshot: Vec<Session> = self
            .map
            .read()
            .iter()
            .filter(|(_, s)| self.live(s, now).is_some())
            .map(|(id, s)| to_session(id, s))
            .collect();
        Ok(Box::new(snapshot.into_iter().map(Ok)))
    }

    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize> {
        let now = self.now_ms();
        let idle = Some(duration_millis(max_idle));
        let mut map = self.map.write();
        let before = map.len();
        map.retain(|_, s| {
            !is_expired(s.modified_ms, s.expires_ms, idle, now) && self.live(s, now).is_some()
        });
        Ok(before - map.len())
    }

    fn is_thread_safe(&self) -> bool {
        true
    }

    fn is_multiprocess_safe(&self) -> bool {
        false
    }
}
