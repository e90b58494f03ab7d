//! `TowerStore`: a tower-sessions session store over any backend.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::{
    Blocking, Failure, Runner, Saved, clamp_time, decode_map, encode_map, save_live, touch_live,
};
use crate::session::to_millis;
use crate::{Owner, Session, SessionId, SessionStore};

/// How many fresh ids `create` draws before giving up; a collision of
/// 128-bit random ids does not happen by chance, so more than one retry
/// means a broken random source.
const CREATE_ATTEMPTS: usize = 8;

/// Entries of the exact-deadline table before it is cleared: bounds its
/// memory (about 60 bytes an entry) on a server with many sessions. A
/// cleared entry only means a deadline read back to the millisecond.
const EXACT_LIMIT: usize = 100_000;

/// The entry of a tower-sessions record's data under which [`TowerStore`]
/// keeps the record's load token: `[version, digest]`, the version of the
/// stored session this request loaded (or created) and a keyed digest of
/// its data. It lives only in the request's record, in memory: it is
/// never stored, and a stored entry of that name is replaced on load.
/// Applications must not use this key.
pub const LOAD_TOKEN: &str = "__sessionlog.loaded";

/// A [tower-sessions](https://docs.rs/tower-sessions) session store over
/// any sessionlog backend `S`, for axum and other tower servers.
///
/// It implements `SessionStore` and `ExpiredDeletion` of tower-sessions
/// 0.15 (feature `tower-sessions`) and of tower-sessions-core 0.14
/// (feature `tower-sessions-014`). A record maps to one [`Session`]: the
/// id as its 22-character text, the data as MessagePack (keys sorted), the
/// `expiry_date` as `expires` (stores keep it to the millisecond; the
/// adapter gives back the exact deadline of this process's own last save
/// while the stored one still matches it, so two saves within a
/// millisecond read back in order).
///
/// Who may create, and what a stale save does:
///
/// - `create` is the only call that makes a session. It always stores
///   the record under a freshly drawn random id (tower-sessions lets a
///   store change the id), and only if no live session has that id
///   ([`SessionStore::save_session_if_unchanged`] at version 0): it never
///   overwrites another session, and an id that once named a session
///   (say, one a logout deleted) is never given a session again.
/// - `save` updates only a live session; it never creates one. If the
///   session was deleted (a logout in another request) or expired since
///   this request loaded it, the save writes nothing: the logout wins, and
///   the cookie the response carries names no session.
/// - Whether a save changes the data is decided per request: `load` (and
///   `create`) put a load token ([`LOAD_TOKEN`]: the version loaded and a
///   digest of the data) into the record, and a `save` whose data are
///   still the ones this request loaded only moves the deadline
///   ([`SessionStore::touch_session_until`]). So
///   `with_always_save(true)` does not rewrite every session on every
///   request, and a read-only request never undoes what another request
///   or process saved after it loaded, however long it ran.
/// - A `save` of changed data is conditional on the version this request
///   loaded; if another request saved in between, the live session's data
///   are replaced (last writer wins, as with every tower-sessions store).
///   [`SessionUpdate`](super::SessionUpdate) is the conflict-safe path.
/// - `load` returns `None` for an expired or absent session, so
///   tower-sessions starts a fresh one (it never sees a forged id as an
///   error: its cookie parser drops ids that are not 16 base64url bytes).
/// - `delete_expired` runs the backend's own cleanup
///   ([`SessionStore::delete_old_sessions`]; for LogStore a compaction),
///   always on tokio's blocking pool, never on the async worker. If
///   another compaction holds the store for longer than the lock timeout
///   it returns `Ok` (that compaction drops the expired sessions too; an
///   error would stop tower-sessions' deletion task for good).
///
/// Who a session belongs to: [`TowerStore::with_owner`] takes a function
/// of the record's data that says so on every save, so that
/// [`SessionStore::sessions_of`] and
/// [`SessionStore::delete_sessions_of`] ("log out my other devices") work
/// on the backend ([`TowerStore::store`]). [`axum_login_owner`] reads
/// axum-login's user id.
///
/// Clones share the backend.
pub struct TowerStore<S> {
    runner: Runner<S>,
    /// Keys the data digests of load tokens (random per store, shared by
    /// its clones).
    hasher: foldhash::quality::RandomState,
    /// The owner of a record's data, if the application said how to find it.
    owner: Option<OwnerFn>,
    exact: Arc<Exact>,
}

/// The exact deadline (tower-sessions' `expiry_date`, to the nanosecond)
/// of the last create, save or touch this process made, per session.
/// Stores keep deadlines to the millisecond; `load` returns the exact one
/// while the store's deadline is still that one truncated, so that two
/// saves within one millisecond read back in order. Another process's
/// saves read back to the millisecond.
#[derive(Default)]
struct Exact {
    map: Mutex<HashMap<SessionId, SystemTime, foldhash::fast::RandomState>>,
}

impl Exact {
    fn set(&self, id: SessionId, at: SystemTime) {
        let mut map = self.map.lock();
        if map.len() >= EXACT_LIMIT && !map.contains_key(&id) {
            map.clear();
        }
        map.insert(id, at);
    }

    fn forget(&self, id: &SessionId) {
        self.map.lock().remove(id);
    }

    /// `stored` (the store's deadline, whole milliseconds), or the exact
    /// deadline this process saved if that is what `stored` came from.
    fn refine(&self, id: &SessionId, stored: SystemTime) -> SystemTime {
        match self.map.lock().get(id) {
            Some(&exact) if to_millis(exact) == to_millis(stored) => exact,
            _ => stored,
        }
    }
}

/// A function from a record's data to its owner.
type OwnerFn = std::sync::Arc<dyn Fn(&Data) -> Option<Owner> + Send + Sync>;

impl<S> Clone for TowerStore<S> {
    fn clone(&self) -> Self {
        TowerStore {
            runner: self.runner.clone(),
            hasher: self.hasher.clone(),
            exact: Arc::clone(&self.exact),
            owner: self.owner.clone(),
        }
    }
}

/// Where axum-login 0.18 keeps its data in a session: `{"user_id": ...,
/// "auth_hash": ...}`.
pub const AXUM_LOGIN_DATA_KEY: &str = "auth_data";

/// The owner axum-login 0.18 records in a session: the `user_id` under
/// [`AXUM_LOGIN_DATA_KEY`], as text (a string id as it is, a number in
/// decimal). `None` when no one is logged in, or for an id that is no
/// valid [`Owner`]. Give it to [`TowerStore::with_owner`].
pub fn axum_login_owner(data: &HashMap<String, serde_json::Value>) -> Option<Owner> {
    match data.get(AXUM_LOGIN_DATA_KEY)?.get("user_id")? {
        serde_json::Value::String(s) => Owner::new(s.as_str()).ok(),
        serde_json::Value::Number(n) => Owner::new(n.to_string()).ok(),
        _ => None,
    }
}

impl<S> std::fmt::Debug for TowerStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerStore")
            .field("backend", &std::any::type_name::<S>())
            .field("blocking_pool", &self.runner.pool)
            .finish_non_exhaustive()
    }
}

/// A record's data as tower-sessions keeps it.
type Data = HashMap<String, serde_json::Value>;

/// What a request loaded: the stored version and a digest of its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token {
    version: u64,
    digest: u64,
}

impl Token {
    fn to_value(self) -> serde_json::Value {
        serde_json::Value::from(vec![self.version, self.digest])
    }

    /// The token in `data`, if a well-formed one is there.
    fn of(data: &Data) -> Option<Token> {
        match data.get(LOAD_TOKEN)?.as_array()?.as_slice() {
            [v, d] => Some(Token {
                version: v.as_u64()?,
                digest: d.as_u64()?,
            }),
            _ => None,
        }
    }
}

impl<S: SessionStore + 'static> TowerStore<S> {
    /// Wraps `store`. Its calls run where [`Blocking::Auto`] says.
    pub fn new(store: S) -> TowerStore<S> {
        TowerStore {
            runner: Runner::new(store),
            hasher: foldhash::quality::RandomState::default(),
            exact: Arc::default(),
            owner: None,
        }
    }

    /// Records an owner with every session: `owner` is given the record's
    /// data on each create and save and returns who the session belongs
    /// to (`None`: no one, e.g. logged out). [`axum_login_owner`] is the
    /// one for axum-login. Without it, sessions are saved without owner.
    pub fn with_owner(
        mut self,
        owner: impl Fn(&HashMap<String, serde_json::Value>) -> Option<Owner> + Send + Sync + 'static,
    ) -> TowerStore<S> {
        self.owner = Some(std::sync::Arc::new(owner));
        self
    }

    /// Chooses where the backend's calls run (default [`Blocking::Auto`]).
    pub fn with_blocking(mut self, blocking: Blocking) -> TowerStore<S> {
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

    /// The owner of `data` by the application's function: `None` if it
    /// gave none (keep the stored owner), else `Some(owner)`.
    #[cfg(feature = "tower-sessions")]
    pub(crate) fn owner_of(&self, data: &Data) -> Option<Option<Owner>> {
        self.owner.as_ref().map(|f| f(data))
    }

    #[cfg(feature = "tower-sessions")]
    pub(crate) fn runner(&self) -> &Runner<S> {
        &self.runner
    }

    /// Saves a new session only if `id` is free. `Ok(None)`: taken;
    /// `Ok(Some(token))`: saved, and what the record now holds.
    async fn create_raw(
        &self,
        id: SessionId,
        data: &Data,
        expires: SystemTime,
    ) -> Result<Option<Token>, Failure> {
        let bytes = encode_map(data, Some(LOAD_TOKEN))?;
        let digest = self.hasher.hash_one(&bytes);
        let sid = id.clone();
        let owner = self.owner.as_ref().and_then(|f| f(data));
        let r = self
            .runner
            .run(move |s| {
                let mut session = Session::new(sid, bytes).with_expires(expires);
                session.owner = owner;
                s.save_session_if_unchanged(&mut session)
                    .map(|()| session.version())
            })
            .await;
        match r {
            Ok(version) => {
                self.exact.set(id, expires);
                Ok(Some(Token { version, digest }))
            }
            Err(e) if e.is_conflict() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves a record: a touch if its data are what its token says this
    /// request loaded, else [`save_live`]. Never creates a session.
    async fn save_raw(
        &self,
        id: SessionId,
        data: &Data,
        expires: SystemTime,
    ) -> Result<(), Failure> {
        let token = Token::of(data);
        let bytes = encode_map(data, Some(LOAD_TOKEN))?;
        let unchanged = token.is_some_and(|t| t.digest == self.hasher.hash_one(&bytes));
        let sid = id.clone();
        // Derived from the data: unchanged data keep the stored owner.
        let owner = self.owner.as_ref().map(|f| f(data));
        let saved = self
            .runner
            .run(move |s| {
                if unchanged {
                    touch_live(s, &sid, expires)
                } else {
                    save_live(s, &sid, bytes, expires, token.map(|t| t.version), owner)
                }
            })
            .await?;
        match saved {
            Saved::Written | Saved::Touched => self.exact.set(id, expires),
            Saved::Gone => self.exact.forget(&id),
            Saved::Contended => {}
        }
        match saved {
            // Gone: a logout or expiry since this request loaded wins.
            Saved::Written | Saved::Touched | Saved::Gone => Ok(()),
            Saved::Contended => Err(Failure::Contended),
        }
    }

    async fn load_raw(&self, id: SessionId) -> Result<Option<(Data, SystemTime)>, Failure> {
        let hasher = self.hasher.clone();
        let sid = id.clone();
        // Decoded and digested straight from the store's bytes (for the
        // LogStore, its memory map), with no copy into a `Vec` first.
        let loaded = self
            .runner
            .run(move |s| {
                let mut out = None;
                s.load_session_with(&sid, &mut |view| {
                    let token = Token {
                        version: view.version(),
                        digest: hasher.hash_one(view.data()),
                    };
                    out = Some((decode_map(view.data()), token, view.expires()));
                })?;
                Ok(out)
            })
            .await?;
        let Some((data, token, expires)) = loaded else {
            self.exact.forget(&id);
            return Ok(None);
        };
        let mut data: Data = data?;
        data.insert(LOAD_TOKEN.to_owned(), token.to_value());
        // A session saved without a deadline (by another client of the
        // store) gets a nominal one: tower-sessions recomputes the
        // cookie's expiry from its own configuration anyway.
        let expires = match expires {
            Some(t) => self.exact.refine(&id, t),
            None => super::deadline(Duration::from_secs(365 * 24 * 3600)),
        };
        Ok(Some((data, clamp_time(expires))))
    }

    async fn delete_raw(&self, id: SessionId) -> Result<(), Failure> {
        self.exact.forget(&id);
        self.runner
            .run(move |s| s.delete_session(&id).map(|_| ()))
            .await
    }

    async fn delete_expired_raw(&self) -> Result<(), Failure> {
        // `Duration::MAX` idle: only what already expired goes. Always on
        // the blocking pool: a compaction may take seconds, and waits (at
        // most the store's lock timeout) for one running elsewhere.
        let r = self
            .runner
            .run_on_pool(|s| s.delete_old_sessions(Duration::MAX).map(|_| ()))
            .await;
        match r {
            // Another compaction holds the store (it drops the expired
            // sessions too), or its lock timed out: the next period tries
            // again. An error would end tower-sessions' deletion task.
            Err(Failure::Store(crate::Error::Busy { .. })) => Ok(()),
            other => other,
        }
    }
}

/// The id of a tower-sessions `Id`, from its text form (22 base64url
/// characters, always a valid `SessionId`).
pub(crate) fn session_id(text: String) -> Result<SessionId, Failure> {
    SessionId::new(text).map_err(Failure::Store)
}

/// Implements one tower-sessions-core version's traits for `TowerStore`.
macro_rules! impl_tower_store {
    ($core:ident) => {
        impl From<Failure> for $core::session_store::Error {
            fn from(f: Failure) -> Self {
                match f {
                    Failure::Encode(_) => $core::session_store::Error::Encode(f.to_string()),
                    Failure::Decode(_) => $core::session_store::Error::Decode(f.to_string()),
                    _ => $core::session_store::Error::Backend(f.to_string()),
                }
            }
        }

        #[async_trait::async_trait]
        impl<S: SessionStore + 'static> $core::SessionStore for TowerStore<S> {
            async fn create(
                &self,
                record: &mut $core::session::Record,
            ) -> $core::session_store::Result<()> {
                let expires = SystemTime::from(record.expiry_date);
                for _ in 0..CREATE_ATTEMPTS {
                    // Always a fresh id: the record may carry one that
                    // named a session before (tower-sessions' `flush`
                    // keeps it), and that session's cookie must stay dead.
                    record.id = $core::session::Id::default();
                    let id = session_id(record.id.to_string())?;
                    if let Some(token) = self.create_raw(id, &record.data, expires).await? {
                        // A later save in this request is judged against
                        // what was just stored.
                        record.data.insert(LOAD_TOKEN.to_owned(), token.to_value());
                        return Ok(());
                    }
                }
                Err($core::session_store::Error::Backend(
                    "no free session id after several random draws: the random source is broken"
                        .into(),
                ))
            }

            async fn save(
                &self,
                record: &$core::session::Record,
            ) -> $core::session_store::Result<()> {
                let id = session_id(record.id.to_string())?;
                let expires = SystemTime::from(record.expiry_date);
                Ok(self.save_raw(id, &record.data, expires).await?)
            }

            async fn load(
                &self,
                id: &$core::session::Id,
            ) -> $core::session_store::Result<Option<$core::session::Record>> {
                let sid = session_id(id.to_string())?;
                Ok(self
                    .load_raw(sid)
                    .await?
                    .map(|(data, expires)| $core::session::Record {
                        id: *id,
                        data,
                        expiry_date: expires.into(),
                    }))
            }

            async fn delete(&self, id: &$core::session::Id) -> $core::session_store::Result<()> {
                Ok(self.delete_raw(session_id(id.to_string())?).await?)
            }
        }

        #[async_trait::async_trait]
        impl<S: SessionStore + 'static> $core::ExpiredDeletion for TowerStore<S> {
            async fn delete_expired(&self) -> $core::session_store::Result<()> {
                Ok(self.delete_expired_raw().await?)
            }
        }
    };
}

#[cfg(feature = "tower-sessions")]
impl_tower_store!(tower_sessions_core);
#[cfg(feature = "tower-sessions-014")]
impl_tower_store!(tower_sessions_core_014);
