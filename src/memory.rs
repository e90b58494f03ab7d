//! `MemoryStore`: sessions in a hash map, gone when the process exits.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use parking_lot::RwLock;

use crate::clock::{Clock, SharedClock, system_clock};
use crate::error::Result;
use crate::id::SessionId;
use crate::observe::{Backend, Meters, Op};
use crate::options::{DEFAULT_MAX_SESSION_SIZE, Validate};
use crate::owner::{Owner, SessionInfo, newest_first};
use crate::session::{
    SaveMode, Session, check_size, duration_millis, expires_from_millis, expires_millis,
    from_millis, is_expired, next_version, to_millis,
};
use crate::store::{SessionIter, SessionStore, Touch};

#[derive(Clone)]
struct Stored {
    data: Vec<u8>,
    expires_ms: u64,
    modified_ms: u64,
    /// The store's count of saves and touches when this one was last saved
    /// or touched: orders the modifications that fall in one millisecond,
    /// which `modified_ms` cannot.
    seq: u64,
    version: u64,
    owner: Option<Owner>,
}

/// The sessions, and beside them which ids each owner has, kept exact by
/// every change going through `insert` and `remove`.
#[derive(Default)]
struct Sessions {
    by_id: HashMap<SessionId, Stored>,
    by_owner: HashMap<Owner, HashSet<SessionId>>,
    /// Saves and touches so far, under the write lock: the next `seq`.
    modifications: u64,
}

impl Sessions {
    fn unlink(&mut self, id: &SessionId, owner: &Owner) {
        if let Some(ids) = self.by_owner.get_mut(owner) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }

    fn insert(&mut self, id: SessionId, s: Stored) {
        let old_owner = self.by_id.get(&id).and_then(|o| o.owner.clone());
        if old_owner != s.owner {
            if let Some(o) = &old_owner {
                self.unlink(&id, o);
            }
            if let Some(o) = &s.owner {
                self.by_owner
                    .entry(o.clone())
                    .or_default()
                    .insert(id.clone());
            }
        }
        self.by_id.insert(id, s);
    }

    fn remove(&mut self, id: &SessionId) -> Option<Stored> {
        let s = self.by_id.remove(id)?;
        if let Some(o) = &s.owner {
            self.unlink(id, o);
        }
        Some(s)
    }

    /// The next modification's place in the store's order.
    fn next_seq(&mut self) -> u64 {
        self.modifications += 1;
        self.modifications
    }

    /// The ids `owner` has, expired or not.
    fn ids_of(&self, owner: &Owner) -> Vec<SessionId> {
        self.by_owner
            .get(owner)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A volatile, in-process store (session2's `VolatileSessionStore`):
/// thread-safe, not shared between processes, lost on exit.
pub struct MemoryStore {
    map: RwLock<Sessions>,
    clock: SharedClock,
    max_idle_ms: Option<u64>,
    max_session_size: usize,
    max_sessions_per_owner: Option<usize>,
    meters: Meters,
}

/// Shows the settings and how many sessions are held, never an id (ids
/// are credentials).
impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.map.read().by_id.len())
            .field("max_idle_ms", &self.max_idle_ms)
            .field("max_session_size", &self.max_session_size)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("len", &self.data.len())
            .field("version", &self.version)
            .finish()
    }
}

/// Settings for [`MemoryStore`], built with [`MemoryStore::options`].
#[derive(Clone, Debug)]
pub struct MemoryOptions {
    max_idle: Option<Duration>,
    max_session_size: usize,
    max_sessions_per_owner: Option<usize>,
    clock: SharedClock,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            max_idle: None,
            max_session_size: DEFAULT_MAX_SESSION_SIZE,
            max_sessions_per_owner: None,
            clock: system_clock(),
        }
    }
}

impl MemoryOptions {
    /// Sessions not saved or touched for this long are treated as absent.
    /// Default: no limit.
    pub fn max_idle(mut self, max_idle: Duration) -> MemoryOptions {
        self.max_idle = Some(max_idle);
        self
    }

    /// Largest accepted session data in bytes. Default:
    /// [`DEFAULT_MAX_SESSION_SIZE`] (16 MiB); `open` rejects 0 and anything
    /// above 1 GiB.
    pub fn max_session_size(mut self, bytes: usize) -> MemoryOptions {
        self.max_session_size = bytes;
        self
    }

    /// At most `n` live sessions per owner: a save that would give an owner
    /// more deletes that owner's least recently modified others, under the
    /// same lock as the save. The newest login wins. Default: no limit;
    /// `open` rejects 0.
    pub fn max_sessions_per_owner(mut self, n: usize) -> MemoryOptions {
        self.max_sessions_per_owner = Some(n);
        self
    }

    /// The clock used to stamp and expire sessions. Default: the system
    /// clock.
    pub fn clock(mut self, clock: impl Clock + 'static) -> MemoryOptions {
        self.clock = std::sync::Arc::new(clock);
        self
    }

    /// An empty store with these settings.
    pub fn open(self) -> Result<MemoryStore> {
        Validate::max_session_size(self.max_session_size)?;
        Validate::max_idle(self.max_idle)?;
        if self.max_sessions_per_owner == Some(0) {
            return Err(crate::Error::InvalidOption(
                "max_sessions_per_owner must be at least 1".into(),
            ));
        }
        Ok(MemoryStore {
            map: RwLock::new(Sessions::default()),
            clock: self.clock,
            max_idle_ms: self.max_idle.map(duration_millis),
            max_session_size: self.max_session_size,
            max_sessions_per_owner: self.max_sessions_per_owner,
            meters: memory_meters(),
        })
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
            map: RwLock::new(Sessions::default()),
            clock: system_clock(),
            max_idle_ms: None,
            max_session_size: DEFAULT_MAX_SESSION_SIZE,
            max_sessions_per_owner: None,
            meters: memory_meters(),
        }
    }

    /// A builder for a store with an idle limit, a size limit or a clock
    /// of its own.
    pub fn options() -> MemoryOptions {
        MemoryOptions::default()
    }

    fn now_ms(&self) -> u64 {
        to_millis(self.clock.now())
    }

    fn live<'a>(&self, s: &'a Stored, now: u64) -> Option<&'a Stored> {
        (!is_expired(s.modified_ms, s.expires_ms, self.max_idle_ms, now)).then_some(s)
    }

    fn save_as(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        check_size(session, self.max_session_size)?;
        let mut map = self.map.write();
        let now = self.now_ms();
        let found = map
            .by_id
            .get(&session.id)
            .and_then(|s| self.live(s, now))
            .map_or(0, |s| s.version);
        let version = next_version(session, found, mode)?;
        let seq = map.next_seq();
        map.insert(
            session.id.clone(),
            Stored {
                data: session.data.clone(),
                expires_ms: expires_millis(session.expires),
                modified_ms: now,
                seq,
                version,
                owner: session.owner.clone(),
            },
        );
        if let (Some(limit), Some(owner)) = (self.max_sessions_per_owner, &session.owner) {
            // Least recently modified first; logins within one millisecond
            // in the order they were made (`seq`), not by their random ids.
            let mut others: Vec<((u64, u64), SessionId)> = map
                .ids_of(owner)
                .into_iter()
                .filter(|id| *id != session.id)
                .filter_map(|id| {
                    let s = map.by_id.get(&id).and_then(|s| self.live(s, now))?;
                    Some(((s.modified_ms, s.seq), id))
                })
                .collect();
            others.sort_unstable_by_key(|(order, _)| *order);
            let excess = (others.len() + 1).saturating_sub(limit);
            for (_, id) in others.into_iter().take(excess) {
                map.remove(&id);
            }
        }
        session.mark_saved(from_millis(now), version);
        Ok(())
    }

    /// The live sessions of `owner`, from the owner index, each with its
    /// place in the order of modifications.
    fn owned(&self, map: &Sessions, owner: &Owner, now: u64) -> Vec<(SessionInfo, u64)> {
        map.ids_of(owner)
            .into_iter()
            .filter_map(|id| {
                let s = map.by_id.get(&id).and_then(|s| self.live(s, now))?;
                let info = SessionInfo::new(
                    id,
                    Some(owner.clone()),
                    from_millis(s.modified_ms),
                    expires_from_millis(s.expires_ms),
                    s.version,
                    s.data.len(),
                );
                Some((info, s.seq))
            })
            .collect()
    }
}

/// A MemoryStore has no path: every one is labelled `store="memory"`.
fn memory_meters() -> Meters {
    Meters::new(Backend::Memory, "memory")
}

fn to_session(id: &SessionId, s: &Stored) -> Session {
    let mut session = Session::restore(
        id.clone(),
        s.data.clone(),
        expires_from_millis(s.expires_ms),
        from_millis(s.modified_ms),
        s.version,
    );
    session.owner = s.owner.clone();
    session
}

impl SessionStore for MemoryStore {
    fn setup(&self) -> Result<()> {
        Ok(())
    }

    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        self.meters.call(Op::Load, || {
            let now = self.now_ms();
            let map = self.map.read();
            let Some(s) = map.by_id.get(id) else {
                return Ok(None);
            };
            match self.live(s, now) {
                Some(s) => Ok(Some(to_session(id, s))),
                None => {
                    self.meters.expired_on_read();
                    Ok(None)
                }
            }
        })
    }

    fn save(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        self.meters.call(Op::Save, || self.save_as(session, mode))
    }

    fn touch(&self, id: &SessionId, touch: Touch) -> Result<bool> {
        self.meters.call(Op::Touch, || {
            let now = self.now_ms();
            let mut map = self.map.write();
            let live = map.by_id.get(id).and_then(|s| self.live(s, now)).is_some();
            let seq = map.next_seq();
            if live && let Some(s) = map.by_id.get_mut(id) {
                s.modified_ms = now;
                s.seq = seq;
                if let Touch::Until(expires) = touch {
                    s.expires_ms = expires_millis(expires);
                }
            }
            Ok(live)
        })
    }

    fn may_block(&self) -> bool {
        false
    }

    fn delete_session(&self, id: &SessionId) -> Result<bool> {
        self.meters.call(Op::Delete, || {
            let now = self.now_ms();
            let removed = self.map.write().remove(id);
            Ok(removed.is_some_and(|s| self.live(&s, now).is_some()))
        })
    }

    fn has_session(&self, id: &SessionId) -> Result<bool> {
        let now = self.now_ms();
        Ok(self
            .map
            .read()
            .by_id
            .get(id)
            .and_then(|s| self.live(s, now))
            .is_some())
    }

    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        let now = self.now_ms();
        let snapshot: Vec<Session> = self
            .map
            .read()
            .by_id
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
        let old: Vec<SessionId> = map
            .by_id
            .iter()
            .filter(|(_, s)| {
                is_expired(s.modified_ms, s.expires_ms, idle, now) || self.live(s, now).is_none()
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &old {
            map.remove(id);
        }
        Ok(old.len())
    }

    fn sessions_of(&self, owner: &Owner) -> Result<Vec<SessionInfo>> {
        let now = self.now_ms();
        Ok(newest_first(self.owned(&self.map.read(), owner, now)))
    }

    /// Decided under the store's lock: atomic with respect to saves.
    fn delete_sessions_of(&self, owner: &Owner, keep: Option<&SessionId>) -> Result<usize> {
        let now = self.now_ms();
        let mut map = self.map.write();
        let mut n = 0;
        for (info, _) in self.owned(&map, owner, now) {
            if Some(&info.id) != keep {
                map.remove(&info.id);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Also the owner's expired sessions. Their memory is freed (not
    /// overwritten: the allocator may hand it out again before anyone
    /// writes it).
    fn erase_sessions_of(&self, owner: &Owner) -> Result<usize> {
        let now = self.now_ms();
        let mut map = self.map.write();
        let n = self.owned(&map, owner, now).len();
        for id in map.ids_of(owner) {
            map.remove(&id);
        }
        Ok(n)
    }

    fn is_thread_safe(&self) -> bool {
        true
    }

    fn is_multiprocess_safe(&self) -> bool {
        false
    }
}
