//! The trait every backend implements.

use std::time::{Duration, SystemTime};

use crate::error::Result;
use crate::id::SessionId;
use crate::owner::{Owner, SessionInfo, sort_newest_first};
use crate::session::{SaveMode, Session, SessionRef};

/// What a touch does to a session: the mode of [`SessionStore::touch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// Refreshes the session's `modified` time (a sliding idle timeout)
    /// and keeps its deadline ([`SessionStore::touch_session`]).
    Idle,
    /// Sets the session's absolute deadline (`None`: none) and refreshes
    /// its `modified` time ([`SessionStore::touch_session_until`]).
    Until(Option<SystemTime>),
}

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
                    f(
                        SessionRef::new(&s.id, &s.data, s.expires, SystemTime::now(), s.version())
                            .with_owner(s.owner.as_ref()),
                    );
                    Ok(true)
                }
            },
            None => Ok(false),
        }
    }

    /// Stores `session` as `mode` says; on success stamps the store's
    /// `modified` time and the new version into `session`. The one save a
    /// backend implements: [`save_session`](Self::save_session) and
    /// [`save_session_if_unchanged`](Self::save_session_if_unchanged), the
    /// names session2's interface uses, call it.
    fn save(&self, session: &mut Session, mode: SaveMode) -> Result<()>;

    /// Stores `session`, replacing any stored version (last write wins).
    /// On success stamps the store's `modified` time and the new version
    /// into `session`.
    fn save_session(&self, session: &mut Session) -> Result<()> {
        self.save(session, SaveMode::Overwrite)
    }

    /// Stores `session` only if the stored version still equals
    /// `session.version()` (for version 0: only if no live session has this
    /// id); otherwise returns [`Error::Conflict`](crate::Error::Conflict) and
    /// writes nothing. This is how two concurrent requests avoid silently
    /// overwriting each other.
    fn save_session_if_unchanged(&self, session: &mut Session) -> Result<()> {
        self.save(session, SaveMode::IfUnchanged)
    }

    /// Touches the session `id` as `touch` says, without changing its
    /// data; false (and nothing written) if no live session has this id:
    /// a touch never creates one. The one touch a backend implements:
    /// [`touch_session`](Self::touch_session) and
    /// [`touch_session_until`](Self::touch_session_until) call it.
    ///
    /// Every backend in this crate writes only the deadline and `modified`
    /// and keeps the version, so that a touch never makes a concurrent
    /// [`save_session_if_unchanged`](Self::save_session_if_unchanged)
    /// conflict. The default, for backends that cannot, loads the session
    /// and re-saves it conditionally (which rewrites the data and
    /// increments the version), reloading and retrying if a concurrent
    /// save got in between.
    fn touch(&self, id: &SessionId, touch: Touch) -> Result<bool> {
        // Each retry follows a save that another writer completed, so a
        // bounded number only gives up under extreme contention, and then
        // the concurrent save has refreshed the session anyway.
        for _ in 0..16 {
            let Some(mut s) = self.load_session(id)? else {
                return Ok(false);
            };
            if let Touch::Until(expires) = touch {
                s.expires = expires;
            }
            match self.save_session_if_unchanged(&mut s) {
                Ok(()) => return Ok(true),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        self.has_session(id)
    }

    /// Refreshes the session's `modified` time (a sliding idle timeout)
    /// without changing its data. Returns false if it is absent.
    fn touch_session(&self, id: &SessionId) -> Result<bool> {
        self.touch(id, Touch::Idle)
    }

    /// Sets the session's absolute deadline to `expires` and refreshes its
    /// `modified` time, without changing its data. Returns false (and
    /// writes nothing) if no live session has this id: it never creates
    /// one. This is the sliding expiry of a web framework that re-sends
    /// the cookie with a later deadline on every request (tower-sessions'
    /// always-save, actix-session's `update_ttl`).
    fn touch_session_until(&self, id: &SessionId, expires: Option<SystemTime>) -> Result<bool> {
        self.touch(id, Touch::Until(expires))
    }

    /// True if a call may wait on slow I/O (a server round trip, a disk
    /// flush, many small files), so that an async runtime should run it on
    /// a blocking thread pool rather than on one of its workers. False for
    /// backends whose calls take microseconds. The default is true.
    fn may_block(&self) -> bool {
        true
    }

    /// The id this store keeps the session `id`'s record under, after
    /// every wrapper in between: `id` itself, or for
    /// [`HashedIds`](crate::HashedIds) its digest. It is the id
    /// [`iter_sessions`](Self::iter_sessions) names the record by, and the
    /// one [`Encrypted`](crate::Encrypted) binds each ciphertext to. A
    /// wrapper that renames sessions overrides it; the default is `id`.
    fn stored_id_of(&self, id: &SessionId) -> SessionId {
        id.clone()
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

    /// The live sessions of `owner`, most recently modified first (of
    /// sessions modified in the same millisecond, the later save or touch
    /// first where the store records the order, as the backends in this
    /// crate do; otherwise by id), without their data. Expired or idle sessions never appear,
    /// whether or not any cleanup has run.
    ///
    /// The default scans [`iter_sessions`](Self::iter_sessions), which
    /// costs what the store holds; the backends in this crate override it
    /// with an index, so that it costs what the owner has.
    fn sessions_of(&self, owner: &Owner) -> Result<Vec<SessionInfo>> {
        let mut list = Vec::new();
        for s in self.iter_sessions()? {
            let s = s?;
            if s.owner.as_ref() == Some(owner)
                && let Some(view) = SessionRef::of(&s)
            {
                list.push(view.info());
            }
        }
        sort_newest_first(&mut list);
        Ok(list)
    }

    /// Deletes every live session of `owner` except the one with id `keep`
    /// ("log out everywhere but here"), returning how many were deleted.
    /// A session saved for `owner` concurrently, once this call has begun,
    /// may survive it: the call takes effect at one moment.
    ///
    /// The default lists the sessions and deletes them one by one, so that
    /// a session concurrently saved under another owner between the two
    /// steps may be deleted too; the backends in this crate override it
    /// with one that decides under their write lock.
    fn delete_sessions_of(&self, owner: &Owner, keep: Option<&SessionId>) -> Result<usize> {
        let mut deleted = 0;
        for info in self.sessions_of(owner)? {
            if Some(&info.id) != keep && self.delete_session(&info.id)? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes every live session of `owner`, as
    /// [`delete_sessions_of`](Self::delete_sessions_of), and, when it
    /// returns, no byte of their ids, data or owner remains in any file the
    /// store keeps (for a `LogStore`: the log, its hint and temporary
    /// files; for a `DirStore`: the session files and temporary files).
    /// Returns how many were deleted. For a `LogStore`, after a crash in the
    /// middle the sessions are either all still there or all erased (one
    /// file is swapped for another); a `DirStore` unlinks one file after
    /// another, so a crash may leave some: call it again. A server store can
    /// only ask its server to delete the rows: SERVERS.md says what the
    /// server itself may keep.
    ///
    /// The default deletes, for stores whose delete leaves nothing behind.
    fn erase_sessions_of(&self, owner: &Owner) -> Result<usize> {
        self.delete_sessions_of(owner, None)
    }

    /// Writes `session`, read from another store, under its own id: for
    /// [`copy_sessions`](crate::copy_sessions). Keeps its data, deadline
    /// and owner; a backend that can also keeps its modification time (the
    /// idle clock) and version. With `overwrite` false, an id already live
    /// here is left alone and `Ok(false)` returned; otherwise `Ok(true)`.
    ///
    /// The default saves it as a new session (a conditional save over "no
    /// session", so a live one is never replaced unless `overwrite`): its
    /// modification time is this store's now and its version this store's
    /// next. The `LogStore` keeps both.
    fn copy_in(&self, session: &Session, overwrite: bool) -> Result<bool> {
        let mut fresh = Session::new(session.id.clone(), session.data.clone());
        fresh.expires = session.expires;
        fresh.owner = session.owner.clone();
        if overwrite {
            self.save_session(&mut fresh)?;
            return Ok(true);
        }
        match self.save_session_if_unchanged(&mut fresh) {
            Ok(()) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

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
    fn save(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        (**self).save(session, mode)
    }
    fn touch(&self, id: &SessionId, touch: Touch) -> Result<bool> {
        (**self).touch(id, touch)
    }
    fn may_block(&self) -> bool {
        (**self).may_block()
    }
    fn stored_id_of(&self, id: &SessionId) -> SessionId {
        (**self).stored_id_of(id)
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
    fn sessions_of(&self, owner: &Owner) -> Result<Vec<SessionInfo>> {
        (**self).sessions_of(owner)
    }
    fn delete_sessions_of(&self, owner: &Owner, keep: Option<&SessionId>) -> Result<usize> {
        (**self).delete_sessions_of(owner, keep)
    }
    fn erase_sessions_of(&self, owner: &Owner) -> Result<usize> {
        (**self).erase_sessions_of(owner)
    }
    fn copy_in(&self, session: &Session, overwrite: bool) -> Result<bool> {
        (**self).copy_in(session, overwrite)
    }
    fn is_thread_safe(&self) -> bool {
        (**self).is_thread_safe()
    }
    fn is_multiprocess_safe(&self) -> bool {
        (**self).is_multiprocess_safe()
    }
}
