//! `ActixStore`: an actix-session session store over any backend.

use std::collections::HashMap;
use std::time::Duration;

use actix_session::storage::{LoadError, SaveError, SessionKey, UpdateError};
use actix_web::cookie::time::Duration as TtlDuration;

use super::{Blocking, Failure, Runner, Saved, deadline, decode_map, encode_map, save_live};
use crate::{Owner, Session, SessionId, SessionStore};

/// How many fresh ids `save` draws before giving up (a collision of
/// 128-bit random ids does not happen by chance).
const CREATE_ATTEMPTS: usize = 8;

/// The session state actix-session hands to its stores.
type State = HashMap<String, String>;

/// The entry of the session state where [`ActixStore`] puts the id the
/// state was loaded under, as a JSON string (the way actix-session keeps
/// values), so that a handler knows which session is its own:
/// [`actix_session_id`] reads it. actix-session gives handlers no other way
/// to learn their session's key. The entry is never stored (a save leaves
/// it out) and a load always sets it to the key it loaded from, so no
/// request and no stored state can plant another. Applications must not
/// use this key.
pub const ACTIX_SESSION_ID: &str = "__sessionlog.id";

/// The id of the session this request loaded, the `keep` of
/// [`SessionStore::delete_sessions_of`] for "log out my other devices"
/// (see `examples/actix_app.rs`). `None` for a request that came without a
/// live session, and once the handler has called `renew`, `purge` or
/// `clear` (the id it loaded no longer names the session the response
/// will carry). Needs the session's store to be an [`ActixStore`].
pub fn actix_session_id(session: &actix_session::Session) -> Option<SessionId> {
    use actix_session::SessionStatus;
    if matches!(
        session.status(),
        SessionStatus::Renewed | SessionStatus::Purged
    ) {
        return None;
    }
    let id = session.get::<String>(ACTIX_SESSION_ID).ok()??;
    SessionId::new(id).ok()
}

/// A function from a session's state to its owner.
type OwnerFn = std::sync::Arc<dyn Fn(&State) -> Option<Owner> + Send + Sync>;

/// An [actix-session](https://docs.rs/actix-session) session store over
/// any sessionlog backend `S`, for actix-web.
///
/// - `save` draws a random 128-bit id ([`SessionId::generate`], 22
///   characters) and saves only if no live session has it: it never
///   overwrites another session.
/// - `load` of a key that is not a valid [`SessionId`] (actix-session
///   hands any cookie value up to 4064 bytes to the store), or of an
///   expired or absent session, is `None`: actix-session starts a fresh
///   session, never an error page.
/// - `update` replaces the state of a live session (last writer wins, as
///   actix-session's own stores) and never creates one: if the session
///   was deleted (a logout in another request) or expired since this
///   request loaded it, nothing is written and the state is dropped. It
///   returns a fresh key that names no session, so the response's cookie
///   leads to a new, empty session; the request's stale state is stored
///   neither under the old key nor under a new one (actix-session's Redis
///   store saves it under a new key, which hands a logged-out user's
///   state to whoever sent the stale request).
/// - `update_ttl` moves only the deadline
///   ([`SessionStore::touch_session_until`]) and never creates a session.
/// - `save` is the only call that creates a session.
///
/// The state is stored as MessagePack (keys sorted). A loaded state also
/// holds its own id under [`ACTIX_SESSION_ID`] (never stored), which
/// [`actix_session_id`] reads. Clones share the backend.
///
/// Who a session belongs to: [`ActixStore::with_owner`] takes a function
/// that reads the owner from the session's state, and every save records
/// it, so that [`SessionStore::sessions_of`] and
/// [`SessionStore::delete_sessions_of`] on the backend
/// ([`ActixStore::store`]) list a user's sessions and log the user out of
/// the others; a handler finds its own session's id, to keep it, with
/// [`actix_session_id`].
pub struct ActixStore<S> {
    runner: Runner<S>,
    /// The owner of a session's state, if the application said how to find it.
    owner: Option<OwnerFn>,
}

impl<S> Clone for ActixStore<S> {
    fn clone(&self) -> Self {
        ActixStore {
            runner: self.runner.clone(),
            owner: self.owner.clone(),
        }
    }
}

impl<S> std::fmt::Debug for ActixStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActixStore")
            .field("backend", &std::any::type_name::<S>())
            .field("blocking_pool", &self.runner.pool)
            .field("records_owner", &self.owner.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: SessionStore + 'static> ActixStore<S> {
    /// Wraps `store`. Its calls run where [`Blocking::Auto`] says.
    pub fn new(store: S) -> ActixStore<S> {
        ActixStore {
            runner: Runner::new(store),
            owner: None,
        }
    }

    /// Records an owner with every session: `owner` is given the session's
    /// state (actix-session keeps each value as JSON: a user id `"7"`
    /// inserted with `session.insert("user_id", "7")` is the string
    /// `"\"7\""`) and returns whom it belongs to (`None`: no one, e.g.
    /// logged out; a save then clears the owner). Without it, sessions are
    /// saved without owner.
    pub fn with_owner(
        mut self,
        owner: impl Fn(&HashMap<String, String>) -> Option<Owner> + Send + Sync + 'static,
    ) -> ActixStore<S> {
        self.owner = Some(std::sync::Arc::new(owner));
        self
    }

    /// Chooses where the backend's calls run (default [`Blocking::Auto`]).
    pub fn with_blocking(mut self, blocking: Blocking) -> ActixStore<S> {
        self.runner.set_blocking(blocking);
        self
    }

    /// Whether calls run on the blocking pool (true) or inline (false).
    pub fn uses_blocking_pool(&self) -> bool {
        self.runner.pool
    }

    /// The backend.
    pub fn store(&self) -> &S {
        &self.runner.store
    }

    async fn create(&self, state: &State, ttl: &TtlDuration) -> Result<SessionKey, Failure> {
        // After `renew` the state still holds the old id: never stored.
        let bytes = encode_map(state, Some(ACTIX_SESSION_ID))?;
        let expires = deadline(ttl_duration(ttl));
        let owner = self.owner.as_ref().and_then(|f| f(state));
        for _ in 0..CREATE_ATTEMPTS {
            let id = SessionId::try_generate()?;
            let data = bytes.clone();
            let sid = id.clone();
            let owner = owner.clone();
            let r = self
                .runner
                .run(move |s| {
                    let mut session = Session::new(sid, data).with_expires(expires);
                    session.owner = owner;
                    s.save_session_if_unchanged(&mut session)
                })
                .await;
            match r {
                Ok(()) => return key(id),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Failure::Task(
            "no free session id after several random draws: the random source is broken".into(),
        ))
    }

    /// Replaces the state of the live session `id` ([`save_live`]): `Some(key)`
    /// once saved, `None` if no live session has the id (nothing written).
    async fn replace(
        &self,
        id: SessionId,
        state: &State,
        ttl: &TtlDuration,
    ) -> Result<Option<SessionKey>, Failure> {
        let bytes = encode_map(state, Some(ACTIX_SESSION_ID))?;
        let expires = deadline(ttl_duration(ttl));
        let sid = id.clone();
        // Derived from the state: unchanged state keeps the stored owner.
        let owner = self.owner.as_ref().map(|f| f(state));
        let saved = self
            .runner
            .run(move |s| save_live(s, &sid, bytes, expires, None, owner))
            .await?;
        match saved {
            Saved::Written | Saved::Touched => key(id).map(Some),
            Saved::Gone => Ok(None),
            Saved::Contended => Err(Failure::Contended),
        }
    }
}

/// A cookie value as a session id, or `None` if it cannot be one.
fn parse(key: &SessionKey) -> Option<SessionId> {
    SessionId::new(key.as_ref()).ok()
}

fn key(id: SessionId) -> Result<SessionKey, Failure> {
    SessionKey::try_from(id.as_str().to_owned())
        .map_err(|_| Failure::Task("a session id was refused as a session key".into()))
}

/// actix-session's TTL as a std duration; a negative one is zero.
fn ttl_duration(ttl: &TtlDuration) -> Duration {
    let ms = u64::try_from(ttl.whole_milliseconds()).unwrap_or(if ttl.is_negative() {
        0
    } else {
        u64::MAX
    });
    Duration::from_millis(ms)
}

fn other(f: Failure) -> anyhow::Error {
    anyhow::Error::msg(f.to_string())
}

impl<S: SessionStore + 'static> actix_session::storage::SessionStore for ActixStore<S> {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<State>, LoadError> {
        let Some(id) = parse(session_key) else {
            return Ok(None);
        };
        // Decoded straight from the store's bytes (for the LogStore, its
        // memory map), with no copy into a `Vec` first.
        let own = serde_json::Value::from(id.as_str()).to_string();
        let loaded = self
            .runner
            .run(move |s| {
                let mut out = None;
                s.load_session_with(&id, &mut |view| out = Some(decode_map(view.data())))?;
                Ok(out)
            })
            .await
            .map_err(|f| LoadError::Other(other(f)))?;
        match loaded {
            None => Ok(None),
            Some(decoded) => decoded
                .map(|mut state: State| {
                    state.insert(ACTIX_SESSION_ID.to_owned(), own);
                    Some(state)
                })
                .map_err(|f| LoadError::Deserialization(other(f))),
        }
    }

    async fn save(&self, state: State, ttl: &TtlDuration) -> Result<SessionKey, SaveError> {
        self.create(&state, ttl).await.map_err(|f| match f {
            Failure::Encode(_) => SaveError::Serialization(other(f)),
            _ => SaveError::Other(other(f)),
        })
    }

    async fn update(
        &self,
        session_key: SessionKey,
        state: State,
        ttl: &TtlDuration,
    ) -> Result<SessionKey, UpdateError> {
        let to_update = |f: Failure| match f {
            Failure::Encode(_) => UpdateError::Serialization(other(f)),
            _ => UpdateError::Other(other(f)),
        };
        if let Some(id) = parse(&session_key)
            && let Some(key) = self.replace(id, &state, ttl).await.map_err(to_update)?
        {
            return Ok(key);
        }
        // Deleted (a logout in another request) or expired since this
        // request loaded it: the state is dropped, never stored under the
        // old key or a new one. The cookie gets a fresh key that names no
        // session, so the next request starts afresh.
        SessionId::try_generate()
            .map_err(Failure::Store)
            .and_then(key)
            .map_err(to_update)
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &TtlDuration) -> anyhow::Result<()> {
        let Some(id) = parse(session_key) else {
            return Ok(());
        };
        let expires = deadline(ttl_duration(ttl));
        self.runner
            .run(move |s| s.touch_session_until(&id, Some(expires)))
            .await
            .map(|_| ())
            .map_err(other)
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        let Some(id) = parse(session_key) else {
            return Ok(());
        };
        self.runner
            .run(move |s| s.delete_session(&id))
            .await
            .map(|_| ())
            .map_err(other)
    }
}
