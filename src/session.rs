//! The session value that every store saves and loads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::id::SessionId;
use crate::owner::{Owner, SessionInfo};

/// One web session: an id, the application's opaque data, an optional
/// absolute deadline, and the metadata a store stamps on every save.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The session's id.
    pub id: SessionId,
    /// The application's serialized state, stored byte for byte.
    pub data: Vec<u8>,
    /// An absolute deadline after which the session no longer exists, or
    /// `None`. Stores keep it at millisecond precision: a save truncates it.
    pub expires: Option<SystemTime>,
    /// Who the session belongs to (typically the logged-in user's id), or
    /// `None`. Saving a session with another owner moves it to that owner;
    /// saving it with `None` clears it.
    pub owner: Option<Owner>,
    modified: Option<SystemTime>,
    version: u64,
}

/// Shows the id as a digest and the data's length, never the data: both
/// are secrets, and `Debug` output ends up in logs.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("data_len", &self.data.len())
            .field("expires", &self.expires)
            .field("owner", &self.owner)
            .field("modified", &self.modified)
            .field("version", &self.version)
            .finish()
    }
}

impl Session {
    /// A new, never saved session (version 0, no modification time).
    pub fn new(id: SessionId, data: impl Into<Vec<u8>>) -> Session {
        Session {
            id,
            data: data.into(),
            expires: None,
            owner: None,
            modified: None,
            version: 0,
        }
    }

    /// Sets the absolute deadline (builder style).
    pub fn with_expires(mut self, expires: SystemTime) -> Session {
        self.expires = Some(expires);
        self
    }

    /// Sets the owner (builder style).
    pub fn with_owner(mut self, owner: Owner) -> Session {
        self.owner = Some(owner);
        self
    }

    /// Time of the last save (or touch), at millisecond precision, as
    /// stamped by the store; `None` before the first save.
    pub fn modified(&self) -> Option<SystemTime> {
        self.modified
    }

    /// The stored version: 0 before the first save, then incremented by
    /// the store on every save.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Rebuilds a session read back from storage (without an owner: set
    /// [`Session::owner`] after). For store implementations; applications
    /// get sessions from `load_session`.
    pub fn restore(
        id: SessionId,
        data: Vec<u8>,
        expires: Option<SystemTime>,
        modified: SystemTime,
        version: u64,
    ) -> Session {
        Session {
            id,
            data,
            expires,
            owner: None,
            modified: Some(modified),
            version,
        }
    }

    /// Records a successful save: the store's timestamp and new version,
    /// and `expires` truncated to what the store keeps. For store
    /// implementations.
    pub fn mark_saved(&mut self, modified: SystemTime, version: u64) {
        self.modified = Some(modified);
        self.version = version;
        self.expires = self.expires.map(|t| from_millis(to_millis(t)));
    }
}

/// A loaded session's bytes and metadata, borrowed from the store for the
/// length of a call to
/// [`SessionStore::load_session_with`](crate::SessionStore::load_session_with)
/// or [`LogStore::load_with`](crate::LogStore::load_with). For the
/// `LogStore` the data is a slice of the log's memory map, checked against
/// its record's checksum before it is handed out: nothing is copied.
#[derive(Clone, Copy)]
pub struct SessionRef<'a> {
    id: &'a SessionId,
    data: &'a [u8],
    expires: Option<SystemTime>,
    owner: Option<&'a Owner>,
    modified: SystemTime,
    version: u64,
}

/// Shows the id as a digest and the data's length, never the data.
impl std::fmt::Debug for SessionRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRef")
            .field("id", self.id)
            .field("data_len", &self.data.len())
            .field("expires", &self.expires)
            .field("owner", &self.owner)
            .field("modified", &self.modified)
            .field("version", &self.version)
            .finish()
    }
}

impl<'a> SessionRef<'a> {
    /// A view of a stored session's fields, without an owner (add one with
    /// [`SessionRef::with_owner`]). For store implementations.
    pub fn new(
        id: &'a SessionId,
        data: &'a [u8],
        expires: Option<SystemTime>,
        modified: SystemTime,
        version: u64,
    ) -> SessionRef<'a> {
        SessionRef {
            id,
            data,
            expires,
            owner: None,
            modified,
            version,
        }
    }

    /// The same view with `owner` as the session's owner (builder style).
    /// For store implementations.
    pub fn with_owner(mut self, owner: Option<&'a Owner>) -> SessionRef<'a> {
        self.owner = owner;
        self
    }

    /// A view of a saved `session` (`None` if it was never saved).
    pub fn of(session: &'a Session) -> Option<SessionRef<'a>> {
        Some(
            SessionRef::new(
                &session.id,
                &session.data,
                session.expires,
                session.modified?,
                session.version,
            )
            .with_owner(session.owner.as_ref()),
        )
    }

    /// The session's id.
    pub fn id(&self) -> &'a SessionId {
        self.id
    }

    /// The application's serialized state, as stored.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The absolute deadline, if any.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }

    /// Time of the last save or touch, at millisecond precision.
    pub fn modified(&self) -> SystemTime {
        self.modified
    }

    /// The stored version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Who the session belongs to, if anyone.
    pub fn owner(&self) -> Option<&'a Owner> {
        self.owner
    }

    /// An owned copy (what `load_session` returns).
    pub fn to_session(&self) -> Session {
        let mut s = Session::restore(
            self.id.clone(),
            self.data.to_vec(),
            self.expires,
            self.modified,
            self.version,
        );
        s.owner = self.owner.cloned();
        s
    }

    /// The session's listing entry: its id and metadata, without its data.
    pub fn info(&self) -> SessionInfo {
        SessionInfo::new(
            self.id.clone(),
            self.owner.cloned(),
            self.modified,
            self.expires,
            self.version,
            self.data.len(),
        )
    }
}

/// `Error::TooLarge` if `session`'s data is over `limit` bytes: every
/// backend checks this before writing anything.
pub(crate) fn check_size(session: &Session, limit: usize) -> crate::Result<()> {
    if session.data.len() > limit {
        return Err(crate::Error::TooLarge {
            size: session.data.len(),
            limit,
        });
    }
    Ok(())
}

/// Whether a save may replace whatever version is stored: the mode of
/// [`SessionStore::save`](crate::SessionStore::save).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveMode {
    /// Last write wins
    /// ([`save_session`](crate::SessionStore::save_session)).
    Overwrite,
    /// Only over the version the caller loaded
    /// ([`save_session_if_unchanged`](crate::SessionStore::save_session_if_unchanged)).
    IfUnchanged,
}

/// The version a save of `session` writes over a stored `found` (0 when
/// none is live): `found + 1`. For [`SaveMode::IfUnchanged`],
/// `Error::Conflict` unless `found` is the version the caller loaded. The
/// local backends decide this under their write lock; the server backends
/// in one statement.
pub(crate) fn next_version(session: &Session, found: u64, mode: SaveMode) -> crate::Result<u64> {
    if mode == SaveMode::IfUnchanged && found != session.version() {
        return Err(crate::Error::Conflict {
            id: session.id.clone(),
            expected: session.version(),
            found,
        });
    }
    found.checked_add(1).ok_or_else(|| {
        crate::Error::InvalidOption(format!(
            "session {} is at the largest version ({found}) and cannot be saved again; \
             delete it and save it anew",
            session.id.digest_hint()
        ))
    })
}

/// Milliseconds since the Unix epoch, saturating; times before the epoch
/// become 1 ms so that 0 can mean "none" in the file formats.
pub(crate) fn to_millis(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
        Err(_) => 1,
    }
}

/// The inverse of [`to_millis`].
pub(crate) fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `expires` in milliseconds, 0 for none.
pub(crate) fn expires_millis(expires: Option<SystemTime>) -> u64 {
    expires.map_or(0, to_millis)
}

/// `expires` back from milliseconds, 0 meaning none.
pub(crate) fn expires_from_millis(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| from_millis(ms))
}

/// Saturating conversion of a duration to milliseconds.
pub(crate) fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a session with these times is gone at `now_ms`: its deadline
/// passed, or it has been idle for `max_idle_ms` or longer.
pub(crate) fn is_expired(
    modified_ms: u64,
    expires_ms: u64,
    max_idle_ms: Option<u64>,
    now_ms: u64,
) -> bool {
    if expires_ms != 0 && expires_ms <= now_ms {
        return true;
    }
    match max_idle_ms {
        Some(idle) => modified_ms.saturating_add(idle) <= now_ms,
        None => false,
    }
}
