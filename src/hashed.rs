//! `HashedIds`: any store, keeping a digest of each session id instead of
//! the id itself (DESIGN.md §14.1).
//!
//! A session id is a login credential: whoever presents it is logged in.
//! A store that keeps ids in the clear hands every login to whoever reads
//! its file, backup, rows or keys. `HashedIds` stores each session under
//! [`HashedIds::stored_id`] of its id: a SHA-256 digest, which the server
//! recomputes from the cookie it receives, and which is useless as a
//! cookie itself (the server would hash it again).

use std::time::Duration;

use sha2::Digest as _;

use crate::error::{Error, Result};
use crate::id::{SessionId, base64url};
use crate::owner::{Owner, SessionInfo};
use crate::session::{SaveMode, Session};
use crate::store::{SessionIter, SessionStore, Touch};

/// What every stored digest starts with. A caller's id of the digest's
/// shape is never looked up in the clear (see [`HashedIds::is_digest`]).
const TAG: &str = "h,";
/// The tag and 43 base64url characters of a 32-byte digest.
const DIGEST_ID_LEN: usize = TAG.len() + 43;
/// Domain separation: these digests are of no other use, and a digest of
/// another scheme is not one of these.
const DOMAIN: &[u8] = b"sessionlog stored id v1\0";
/// Domain separation for owners' digests.
const OWNER_DOMAIN: &[u8] = b"sessionlog stored owner v1\0";

/// SHA-256 over `domain` and `bytes`.
fn raw_digest(domain: &[u8], bytes: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(domain);
    h.update(bytes);
    h.finalize().into()
}

/// `h,` and the base64url of SHA-256 over `domain` and `bytes`: 45
/// characters from the id alphabet.
fn digest_string(domain: &[u8], bytes: &[u8]) -> String {
    let digest = raw_digest(domain, bytes);
    let mut s = String::with_capacity(DIGEST_ID_LEN);
    s.push_str(TAG);
    s.push_str(&base64url(&digest));
    s
}

/// True if `s` has the shape of a digest: the tag, then 43 base64url
/// characters.
fn is_digest_str(s: &str) -> bool {
    s.len() == DIGEST_ID_LEN
        && s.starts_with(TAG)
        && s.bytes()
            .skip(TAG.len())
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A [`SessionStore`] that keeps, for every session, a digest of its id
/// instead of the id: in a `LogStore`'s records, a `DirStore`'s file
/// names, SQL rows, Redis keys and `sessionlog export` lines.
///
/// Callers use the ids they always did (the cookie's value): every method
/// maps the id to [`HashedIds::stored_id`], and `load_session` returns the
/// session with the caller's id. [`SessionStore::iter_sessions`] is the
/// admin's view: it yields the sessions as stored, each named by its
/// digest, which the `sessionlog` tools show and accept (`show`, `delete`
/// take a digest or a unique prefix of one).
///
/// ```no_run
/// use sessionlog::{HashedIds, LogStore, Session, SessionId, SessionStore};
/// # fn main() -> sessionlog::Result<()> {
/// let store = HashedIds::new(LogStore::open("sessions.db")?);
/// let id = SessionId::generate();
/// store.save_session(&mut Session::new(id.clone(), b"user=42".to_vec()))?;
/// assert_eq!(store.load_session(&id)?.map(|s| s.data), Some(b"user=42".to_vec()));
/// // the file holds HashedIds::stored_id(&id), never `id`
/// # Ok(()) }
/// ```
///
/// # Owners
///
/// A session's [`Owner`] (a user id, personal data) is stored as
/// [`HashedIds::stored_owner`], a digest, too. `sessions_of`,
/// `delete_sessions_of` and `erase_sessions_of` take the owner as the
/// application knows it and digest it before they look it up; the listing
/// gives that owner back, and names each session by its stored id.
/// `load_session` returns the stored owner (the digest), which a later save
/// keeps as it is.
///
/// # An existing store
///
/// Wrapping a store whose sessions were saved with clear ids keeps them:
/// a session not found under its digest is looked up under its clear id,
/// and the first save moves it (the session is saved under the digest at
/// version 1 and the clear copy deleted). Only a caller's id that could be
/// a clear one is looked up that way: an id of a digest's shape never is,
/// so a digest read from the file cannot be presented as a cookie to reach
/// the session it names. Sessions not yet moved keep their clear ids in
/// the store until saved, deleted or expired; run `sessionlog expire` (or
/// [`SessionStore::delete_old_sessions`]) to be rid of idle ones.
///
/// The digest is unkeyed: session ids from this crate and the web
/// frameworks it serves are 128 bits or more of randomness, which no one
/// can recover from a SHA-256 digest or guess. Ids with little entropy
/// (counters, user names) are not protected by any hash; don't use them.
pub struct HashedIds<S> {
    inner: S,
}

/// Shows the wrapped store; `HashedIds` holds nothing else.
impl<S: std::fmt::Debug> std::fmt::Debug for HashedIds<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashedIds")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S> HashedIds<S> {
    /// Wraps `inner`, which may be new or hold sessions with clear ids.
    pub fn new(inner: S) -> HashedIds<S> {
        HashedIds { inner }
    }

    /// The wrapped store, for its own methods (`stats`, `compact`, ...).
    /// Sessions reached through it are named by their digests.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The id a session with id `id` is stored under: `h,` and the
    /// base64url of SHA-256 over a domain-separation prefix and `id`,
    /// 45 characters in all. The same for every store and process, so
    /// that several servers, `export` and `import` agree on it.
    pub fn stored_id(id: &SessionId) -> SessionId {
        match SessionId::new(digest_string(DOMAIN, id.as_bytes())) {
            Ok(stored) => stored,
            // `h,` and base64url are within the id alphabet and 45 bytes
            // within its length: this arm cannot be reached.
            Err(_) => unreachable!("a digest id is a valid session id"),
        }
    }

    /// True if `id` has the shape of a [`HashedIds::stored_id`] (the tag,
    /// then 43 base64url characters). Such an id is only ever looked up
    /// hashed, never in the clear.
    pub fn is_digest(id: &SessionId) -> bool {
        is_digest_str(id.as_str())
    }

    /// The owner a session of `owner` is stored with: `h,` and the
    /// base64url of SHA-256 over a domain-separation prefix and the owner
    /// (another prefix than the ids'), 45 characters. An owner that already
    /// has that shape (one read back from the store) is kept as it is, so
    /// that a session loaded and saved again keeps its owner.
    pub fn stored_owner(owner: &Owner) -> Owner {
        if is_digest_str(owner.as_str()) {
            return owner.clone();
        }
        match Owner::new(digest_string(OWNER_DOMAIN, owner.as_str().as_bytes())) {
            Ok(stored) => stored,
            // 45 printable ASCII characters are a valid owner.
            Err(_) => unreachable!("a digest is a valid owner"),
        }
    }
}

/// The owner's listing as the caller asked for it: its stored digest
/// replaced by `owner`.
fn as_asked(mut list: Vec<SessionInfo>, owner: &Owner) -> Vec<SessionInfo> {
    for info in &mut list {
        info.owner = Some(owner.clone());
    }
    list
}

/// SHA-256 over the domain-separation prefix and `id`: what
/// [`HashedIds::stored_id`] encodes, and what a `DirStore` names a
/// session's file by.
pub(crate) fn id_digest(id: &SessionId) -> [u8; 32] {
    raw_digest(DOMAIN, id.as_bytes())
}

/// Whether a session with the caller's `id` may still be stored in the
/// clear from before the store was wrapped.
fn may_be_clear(id: &SessionId) -> bool {
    !HashedIds::<()>::is_digest(id)
}

/// An inner store's conflict names the stored id: give the caller theirs.
fn with_caller_id(e: Error, caller: &SessionId) -> Error {
    match e {
        Error::Conflict {
            expected, found, ..
        } => Error::Conflict {
            id: caller.clone(),
            expected,
            found,
        },
        other => other,
    }
}

fn renamed(mut s: Session, id: &SessionId) -> Session {
    s.id = id.clone();
    s
}

impl<S: SessionStore> HashedIds<S> {
    /// Runs `f` on `session` renamed to its stored id and owner, then
    /// gives it the caller's id and owner back (on failure too).
    fn as_stored<T>(
        &self,
        session: &mut Session,
        f: impl FnOnce(&S, &mut Session) -> Result<T>,
    ) -> Result<T> {
        let stored = Self::stored_id(&session.id);
        let stored_owner = session.owner.as_ref().map(Self::stored_owner);
        let caller = std::mem::replace(&mut session.id, stored);
        let caller_owner = std::mem::replace(&mut session.owner, stored_owner);
        let r = f(&self.inner, session);
        session.id = caller;
        session.owner = caller_owner;
        r.map_err(|e| with_caller_id(e, &session.id))
    }

    /// A conditional save through the digest, counting a live session
    /// still under the clear id as the one being replaced.
    fn save_if_unchanged(&self, session: &mut Session) -> Result<()> {
        // Creating: a live session under the clear id counts as existing.
        if session.version() == 0
            && may_be_clear(&session.id)
            && let Some(clear) = self.inner.load_session(&session.id)?
        {
            return Err(Error::Conflict {
                id: session.id.clone(),
                expected: 0,
                found: clear.version(),
            });
        }
        match self.as_stored(session, |inner, s| inner.save_session_if_unchanged(s)) {
            Ok(()) => self.drop_clear_copy(session),
            Err(Error::Conflict {
                expected, found: 0, ..
            }) if expected > 0 && may_be_clear(&session.id) => self.migrate(session, expected),
            Err(e) => Err(e),
        }
    }

    /// After a save that created the digest's record (version 1): the
    /// session may have been stored in the clear before; remove that copy.
    fn drop_clear_copy(&self, session: &Session) -> Result<()> {
        if session.version() == 1 && may_be_clear(&session.id) {
            self.inner.delete_session(&session.id)?;
        }
        Ok(())
    }

    /// A conditional save of a session loaded from its clear record (its
    /// digest has none): moves it to the digest if the clear record is
    /// still at the version the caller loaded.
    fn migrate(&self, session: &mut Session, expected: u64) -> Result<()> {
        let conflict = |found| Error::Conflict {
            id: session.id.clone(),
            expected,
            found,
        };
        let found = match self.inner.load_session(&session.id)? {
            Some(clear) => clear.version(),
            None => 0,
        };
        if found != expected {
            return Err(conflict(found));
        }
        let mut fresh = Session::new(
            Self::stored_id(&session.id),
            std::mem::take(&mut session.data),
        );
        fresh.expires = session.expires;
        fresh.owner = session.owner.as_ref().map(Self::stored_owner);
        let r = self.inner.save_session_if_unchanged(&mut fresh);
        session.data = std::mem::take(&mut fresh.data);
        match r {
            Ok(()) => {}
            Err(Error::Conflict { found, .. }) => return Err(conflict(found)),
            Err(e) => return Err(e),
        }
        if let Some(modified) = fresh.modified() {
            session.mark_saved(modified, fresh.version());
        }
        self.inner.delete_session(&session.id)?;
        Ok(())
    }
}

impl<S: SessionStore> SessionStore for HashedIds<S> {
    fn setup(&self) -> Result<()> {
        self.inner.setup()
    }

    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        let stored = Self::stored_id(id);
        if let Some(s) = self.inner.load_session(&stored)? {
            return Ok(Some(renamed(s, id)));
        }
        if !may_be_clear(id) {
            return Ok(None);
        }
        if let Some(s) = self.inner.load_session(id)? {
            return Ok(Some(s));
        }
        // A concurrent save may have moved the session from its clear id
        // to its digest between the two lookups: look once more.
        Ok(self.inner.load_session(&stored)?.map(|s| renamed(s, id)))
    }

    fn save(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        match mode {
            SaveMode::Overwrite => {
                self.as_stored(session, |inner, s| inner.save(s, mode))?;
                self.drop_clear_copy(session)
            }
            SaveMode::IfUnchanged => self.save_if_unchanged(session),
        }
    }

    fn touch(&self, id: &SessionId, touch: Touch) -> Result<bool> {
        if self.inner.touch(&Self::stored_id(id), touch)? {
            return Ok(true);
        }
        Ok(may_be_clear(id) && self.inner.touch(id, touch)?)
    }

    fn may_block(&self) -> bool {
        self.inner.may_block()
    }

    fn stored_id_of(&self, id: &SessionId) -> SessionId {
        self.inner.stored_id_of(&Self::stored_id(id))
    }

    fn delete_session(&self, id: &SessionId) -> Result<bool> {
        let hashed = self.inner.delete_session(&Self::stored_id(id))?;
        let clear = may_be_clear(id) && self.inner.delete_session(id)?;
        Ok(hashed || clear)
    }

    fn has_session(&self, id: &SessionId) -> Result<bool> {
        Ok(self.load_session(id)?.is_some())
    }

    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        self.inner.iter_sessions()
    }

    /// Forwards as it is: sessions listed by `iter_sessions` (what
    /// [`copy_sessions`](crate::copy_sessions) copies) carry their stored
    /// ids and owners already, digests that must not be hashed again.
    fn copy_in(&self, session: &Session, overwrite: bool) -> Result<bool> {
        self.inner.copy_in(session, overwrite)
    }

    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize> {
        self.inner.delete_old_sessions(max_idle)
    }

    /// Looks the owner up by its digest; the listing names each session by
    /// its stored id (a digest) and gives the owner back as asked.
    /// Sessions saved with the owner in the clear, before the store was
    /// wrapped, are listed too.
    fn sessions_of(&self, owner: &Owner) -> Result<Vec<SessionInfo>> {
        let stored = Self::stored_owner(owner);
        let mut list = self.inner.sessions_of(&stored)?;
        if stored != *owner {
            list.extend(self.inner.sessions_of(owner)?);
            // Stable: each list keeps the inner store's order among
            // sessions modified in one millisecond.
            list.sort_by_key(|info| std::cmp::Reverse(info.modified));
        }
        Ok(as_asked(list, owner))
    }

    /// `keep` is the caller's id (the cookie's value), as for every other
    /// method.
    fn delete_sessions_of(&self, owner: &Owner, keep: Option<&SessionId>) -> Result<usize> {
        let stored = Self::stored_owner(owner);
        let stored_keep = keep.map(Self::stored_id);
        let mut n = self
            .inner
            .delete_sessions_of(&stored, stored_keep.as_ref())?;
        if stored != *owner {
            n += self.inner.delete_sessions_of(owner, keep)?;
        }
        Ok(n)
    }

    fn erase_sessions_of(&self, owner: &Owner) -> Result<usize> {
        let stored = Self::stored_owner(owner);
        let mut n = self.inner.erase_sessions_of(&stored)?;
        if stored != *owner {
            n += self.inner.erase_sessions_of(owner)?;
        }
        Ok(n)
    }

    fn is_thread_safe(&self) -> bool {
        self.inner.is_thread_safe()
    }

    fn is_multiprocess_safe(&self) -> bool {
        self.inner.is_multiprocess_safe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn id(s: &str) -> SessionId {
        SessionId::new(s).expect("valid id")
    }

    #[test]
    fn stored_ids_are_digests_of_the_documented_shape() {
        let a = HashedIds::<()>::stored_id(&id("abc"));
        assert_eq!(a.as_str().len(), 45);
        assert!(a.as_str().starts_with("h,"));
        assert!(HashedIds::<()>::is_digest(&a));
        assert_eq!(a, HashedIds::<()>::stored_id(&id("abc")), "stable");
        assert_ne!(a, HashedIds::<()>::stored_id(&id("abd")));
        assert!(!HashedIds::<()>::is_digest(&id("abc")));
        assert!(!HashedIds::<()>::is_digest(&id(&format!(
            "x,{}",
            &a.as_str()[2..]
        ))));
        // a fixed vector: changing the scheme would orphan every stored session
        assert_eq!(
            HashedIds::<()>::stored_id(&id("abc")).as_str(),
            EXPECTED_ABC
        );
    }

    /// Python: `"h," + urlsafe_b64encode(sha256(b"sessionlog stored id v1\0abc").digest())`
    /// without the padding.
    const EXPECTED_ABC: &str = "h,JDSPiN86NJMMkKC0aRjbUeqlAzSGG7mnBFMjrSRAZc0";

    #[test]
    fn owners_are_stored_as_digests_and_listed_as_asked() {
        let store = HashedIds::new(MemoryStore::new());
        let alice = Owner::new("alice@example.com").expect("owner");
        let mut a = Session::new(id("alice-laptop-0001"), b"a".to_vec()).with_owner(alice.clone());
        let mut b = Session::new(id("alice-phone-00001"), b"b".to_vec()).with_owner(alice.clone());
        store.save_session(&mut a).expect("save a");
        store.save_session(&mut b).expect("save b");
        assert_eq!(
            a.owner.as_ref(),
            Some(&alice),
            "the caller's owner is given back"
        );
        let stored = HashedIds::<()>::stored_owner(&alice);
        assert_ne!(stored, alice);
        for s in store.inner().iter_sessions().expect("iter") {
            assert_eq!(s.expect("session").owner.as_ref(), Some(&stored));
        }
        let listed = store.sessions_of(&alice).expect("list");
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|i| i.owner.as_ref() == Some(&alice)));
        // a loaded session keeps its (stored) owner when saved again
        let mut again = store.load_session(&a.id).expect("load").expect("there");
        store.save_session(&mut again).expect("resave");
        assert_eq!(store.sessions_of(&alice).expect("list").len(), 2);
        assert_eq!(
            store
                .delete_sessions_of(&alice, Some(&a.id))
                .expect("delete"),
            1
        );
        assert!(store.has_session(&a.id).expect("has a"));
        assert!(!store.has_session(&b.id).expect("has b"));
        assert_eq!(store.erase_sessions_of(&alice).expect("erase"), 1);
        assert!(store.sessions_of(&alice).expect("list").is_empty());
    }

    #[test]
    fn a_digest_presented_as_an_id_reaches_nothing() {
        let store = HashedIds::new(MemoryStore::new());
        let mut s = Session::new(id("victim-session-id-0001"), b"admin".to_vec());
        store.save_session(&mut s).expect("save");
        let digest = HashedIds::<()>::stored_id(&s.id);
        assert_eq!(store.load_session(&digest).expect("load"), None);
        assert!(!store.has_session(&digest).expect("has"));
        assert!(!store.touch_session(&digest).expect("touch"));
        assert!(!store.delete_session(&digest).expect("delete"));
        assert!(store.has_session(&s.id).expect("still there"));
    }

    #[test]
    fn creating_over_a_live_clear_session_conflicts() {
        let raw = MemoryStore::new();
        let mut old = Session::new(id("from-before"), b"old".to_vec());
        raw.save_session(&mut old).expect("raw save");
        let store = HashedIds::new(raw);
        let mut new = Session::new(id("from-before"), b"new".to_vec());
        let err = store
            .save_session_if_unchanged(&mut new)
            .expect_err("exists");
        assert!(
            matches!(
                err,
                Error::Conflict {
                    expected: 0,
                    found: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            store
                .load_session(&old.id)
                .expect("load")
                .expect("kept")
                .data,
            b"old"
        );
    }

    #[test]
    fn a_conflict_names_the_callers_id() {
        let store = HashedIds::new(MemoryStore::new());
        let mut a = Session::new(id("caller-id"), b"1".to_vec());
        store.save_session(&mut a).expect("save");
        let mut b = Session::new(id("caller-id"), b"2".to_vec());
        match store.save_session_if_unchanged(&mut b) {
            Err(Error::Conflict { id: got, .. }) => assert_eq!(got, a.id),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(b.id, a.id, "the session keeps its id on failure");
    }
}
