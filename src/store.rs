//! The trait every backend implements.

use std::time::{Duration, SystemTime};

use crate::error::Result;
use crate::id::SessionId;
use crate::session::{Session, SessionRef};

/// An iterator over the live sessions of a store, for admin tools.
pub type SessionIter<'a> = Box<dyn Iterator<Item = Result<Session>> + 'a>;

/// A place to keep web sessions, modelled on session2's session store API.
///
/// Every method is safe to call from many threads at once. Expiry is
/// enforced on read: a session whose `expires` has passed, or (for a store
/// opened with a `max_idle`) whose last save or touch is older than that, is
/// absent for `load_session`, `has_session`, `touch_session` and
/// `iter_sessions`, whether or not any cleanup has run.
pub trait SessionStore: Send + Sync {
    /// Creates what the store needs (tables, directories, the file).
    /// Idempotent; never destroys existing sessions.
    fn setup(&self) -> Result<()>;

    /// The session with this id, or `None` if it does not exist or expired.
    fn load_session(&self, id: &SessionId) -> Result<Option<Session>>;

    /// Calls `f` with the session with this id, borrowed, if it exists and
    /// has not expired, and returns whether it did. The bytes are valid only
    /// during the call: this is how to decode a session without first
    /// copying it into a `Vec`.
    ///
    /// The default loads the session with `load_session` and lends it;
    /// [`LogStore`](crate::LogStore) overrides it with a slice of its
    /// memory map, checked against the record's checksum, copied nowhere.
    /// `f` runs with no lock of the store held, so it may call the store.
    fn load_session_with(&self, id: &SessionId, f: &mut dyn FnMut(SessionRef<'_>)) -> Result<bool> {
        match self.load_session(id)? {
            Some(s) => match SessionRef::of(&s) {
                Some(view) => {
                    f(view);
                    Ok(true)
                }
                // A store returns saved sessions only; one that does not is
                // lent with the time of the call as its modification time.
                None => {
                    f(SessionRef::new(
                        &s.id,
                        &s.data,
                        s.expires,
                        SystemTime::now(),
                        s.version(),
                    ));
                    Ok(true)
                }
            },
            None => Ok(false),
        }
    }

    /// Stores `session`, replacing any stored version (last write wins).
    /// On success stamps the store's `modified` time and the new version
    /// into `session`.
    fn save_session(&self, session: &mut Session) -> Result<()>;

    /// Stores `session` only if the stored version still equals
    /// `session.version()` (for version 0: only if no live session has this
    /// id); otherwise returns [`Error::Conflict`](crate::Error::Conflict) and
    /// writes nothing. This is how two concurrent requests avoid silently
    /// overwriting each other.
    fn save_session_if_unchanged(&self, session: &mut Session) -> Result<()>;

    /// Refreshes the session's `modified` time (a sliding idle timeout)
    /// without changing its data or version. Returns false if it is absent.
    ///
    /// The default loads and re-saves the session, which also increments
    /// its version; backends override it with something cheaper.
    fn touch_session(&self, id: &SessionId) -> Result<bool> {
        match self.load_session(id)? {
            Some(mut s) => match self.save_session_if_unchanged(&mut s) {
                Ok(()) => Ok(true),
                Err(e) if e.is_conflict() => Ok(self.has_session(id)?),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }

    /// Sets the session's absolute deadline to `expires` and refreshes its
    /// `modified` time, without changing its data. Returns false (and
    /// writes nothing) if no live session has this id: it never creates
    /// one. This is the sliding expiry of a web framework that re-sends
    /// the cookie with a later deadline on every request (tower-sessions'
    /// always-save, actix-session's `update_ttl`).
    ///
    /// Every backend in this crate writes only the deadline and `modified`
    /// and keeps the version, so that a touch never makes a concurrent
    /// [`save_session_if_unchanged`](Self::save_session_if_unchanged)
    /// conflict. The default, for backends that cannot, loads the session
    /// and re-saves it conditionally with the new deadline (which rewrites
    /// the data and increments the version), reloading and retrying if a
    /// concurrent save got in between.
    fn touch_session_until(&self, id: &SessionId, expires: Option<SystemTime>) -> Result<bool> {
        // Each retry follows a save that another writer completed, so a
        // bounded number only gives up under extreme contention, and then
        // the concurrent save has refreshed the session anyway.
        for _ in 0..16 {
            let Some(mut s) = self.load_session(id)? else {
                return Ok(false);
            };
            s.expires = expires;
            match self.save_session_if_unchanged(&mut s) {
                Ok(()) => return Ok(true),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        self.has_session(id)
    }

    /// True if a call may wait on slow I/O (a server round trip, a disk
    /// flush, many small files), so that an async runtime should run it on
    /// a blocking thread pool rather than on one of its workers. False for
    /// backends whose calls take microseconds. The default is true.
    fn may_block(&self) -> bool {
        true
    }

    /// Deletes the session; true if a live session existed.
    fn delete_session(&self, id: &SessionId) -> Result<bool>;

    /// Whether a live session with this id exists.
    fn has_session(&self, id: &SessionId) -> Result<bool> {
        Ok(self.load_session(id)?.is_some())
    }

    /// Every live session, in no particular order.
    fn iter_sessions(&self) -> Result<SessionIter<'_>>;

    /// Removes every session not modified for `max_idle` or longer (and any
    /// already expired), returning how many were removed. Meant for a
    /// maintenance job.
    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize>;

    /// True if one store value may be shared by many threads (tested).
    fn is_thread_safe(&self) -> bool;

    /// True if several processes may open the same store at once (tested).
    fn is_multiprocess_safe(&self) -> bool;
}

impl<S: SessionStore + ?Sized> SessionStore for Box<S> {
    fn setup(&self) -> Result<()> {
        (**self).setup()
    }
    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        (**self).load_session(id)
    }
    fn load_session_with(&self, id: &SessionId, f: &mut dyn FnMut(SessionRef<'_>)) -> Result<bool> {
        (**self).load_session_with(id, f)
    }
    fn save_session(&self, session: &mut Session) -> Result<()> {
        (**self).save_session(session)
    }
    fn save_session_if_unchanged(&self, session: &mut Session) -> Result<()> {
        (**self).save_session_if_unchanged(session)
    }
    fn touch_session(&self, id: &SessionId) -> Result<bool> {
        (**self).touch_session(id)
    }
    fn touch_session_until(&self, id: &SessionId, expires: Option<SystemTime>) -> Result<bool> {
        (**self).touch_session_until(id, expires)
    }
    fn may_block(&self) -> bool {
        (**self).may_block()
    }
    fn delete_session(&self, id: &SessionId) -> Result<bool> {
        (**self).delete_session(id)
    }
    fn has_session(&self, id: &SessionId) -> Result<bool> {
        (**self).has_session(id)
    }
    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        (**self).iter_sessions()
    }
    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize> {
        (**self).delete_old_sessions(max_idle)
    }
    fn is_thread_safe(&self) -> bool {
        (**self).is_thread_safe()
    }
    fn is_multiprocess_safe(&self) -> bool {
        (**self).is_multiprocess_safe()
    }
}
