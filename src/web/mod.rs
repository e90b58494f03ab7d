//! sessionlog inside web frameworks: session stores for tower-sessions
//! (axum) and actix-session (actix-web), and conflict-safe updates.
//!
//! Every adapter is generic over any [`SessionStore`] — [`LogStore`](crate::LogStore),
//! [`DirStore`](crate::DirStore), [`MemoryStore`](crate::MemoryStore) and
//! the server stores — and each is behind its own cargo feature:
//!
//! | feature | type | framework |
//! | --- | --- | --- |
//! | `tower-sessions` | [`TowerStore`] (+ [`SessionUpdate`]) | tower-sessions 0.15 (axum 0.8) |
//! | `tower-sessions-014` | [`TowerStore`] | tower-sessions-core 0.14 (axum-login 0.18, …) |
//! | `actix-session` | [`ActixStore`] | actix-session 0.11 (actix-web 4) |
//!
//! Both tower-sessions features may be on at once: the one `TowerStore`
//! then implements both versions' traits.
//!
//! # What the stores guarantee
//!
//! - Only creating makes a session (tower-sessions' `create`,
//!   actix-session's `save`): under a freshly drawn random id, saved only
//!   if no live session has it. A new session never overwrites a live one,
//!   and an adapter never gives an id that named a session once a session
//!   again.
//! - A save updates only a live session. A logout stays a logout: a
//!   request that loaded the session before another request deleted it
//!   (or before it expired) writes nothing when it ends, whatever it
//!   changed, and the cookie it sends back names no session.
//! - Whether a save changed the data is judged against what *this*
//!   request loaded (tower-sessions: a load token in the request's record,
//!   [`LOAD_TOKEN`]); an unchanged save only moves the deadline, so a slow
//!   read-only request never undoes what others saved while it ran.
//! - Loading never returns an expired session: the backend's own expiry
//!   decides.
//! - A cookie that is not a session id of this store (forged, malformed,
//!   oversized, expired) is simply "no session": the framework starts a
//!   fresh one. It is never an error page.
//! - A save that changes only the expiry (tower-sessions'
//!   `with_always_save(true)`, actix-session's `update_ttl`) does not
//!   rewrite the data: it is a [`SessionStore::touch_session_until`].
//! - A save of changed data over a concurrent change of a live session is
//!   last-writer-wins, as in the frameworks' own stores; [`SessionUpdate`]
//!   (axum) is the conflict-safe path.
//! - Error messages never contain a session id or session data.
//! - Calls that may wait on slow I/O run on tokio's blocking pool, the
//!   others inline on the runtime's worker: see [`Blocking`].
//!   Maintenance (tower-sessions' `delete_expired`: a LogStore
//!   compaction, a DirStore sweep, a server table's sweep) always runs on
//!   the blocking pool, whatever [`Blocking`] says.
//!
//! # A minimal axum app
//!
//! ```no_run
//! # #[cfg(feature = "tower-sessions")]
//! # mod app {
//! use axum::{Router, routing::get};
//! use sessionlog::LogStore;
//! use sessionlog::web::TowerStore;
//! use tower_sessions::{Session, SessionManagerLayer};
//!
//! async fn visits(session: Session) -> String {
//!     let n: u64 = session.get("visits").await.ok().flatten().unwrap_or(0);
//!     // Last writer wins, as with every tower-sessions store; see
//!     // `SessionUpdate` for the conflict-safe version.
//!     let _ = session.insert("visits", n + 1).await;
//!     format!("visit {}", n + 1)
//! }
//!
//! pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let store = TowerStore::new(LogStore::open("sessions.db")?);
//!     let app = Router::new()
//!         .route("/", get(visits))
//!         .layer(SessionManagerLayer::new(store).with_secure(false));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! # }
//! # fn main() {}
//! ```
//!
//! # Conflict-safe updates from an axum handler
//!
//! tower-sessions (like actix-session and Django) is last-writer-wins: two
//! concurrent requests that read, change and save one session lose one of
//! the changes. [`SessionUpdate`] is an axum extractor whose
//! [`update`](SessionUpdate::update) runs a closure on the stored data and
//! saves the result only if nobody saved in between
//! ([`SessionStore::save_session_if_unchanged`]); on a conflict it reloads
//! and runs the closure again. Two clients hammering one counter end at
//! exactly the sum of their increments, across threads and processes.
//!
//! ```no_run
//! # #[cfg(feature = "tower-sessions")]
//! # mod app {
//! use axum::{Router, extract::FromRef, routing::post};
//! use sessionlog::LogStore;
//! use sessionlog::web::{SessionUpdate, TowerStore, UpdateError};
//! use tower_sessions::SessionManagerLayer;
//!
//! #[derive(Clone)]
//! struct AppState {
//!     sessions: TowerStore<LogStore>,
//! }
//!
//! impl FromRef<AppState> for TowerStore<LogStore> {
//!     fn from_ref(state: &AppState) -> Self {
//!         state.sessions.clone()
//!     }
//! }
//!
//! /// Increments the session's counter; the closure is retried on conflict.
//! async fn increment(update: SessionUpdate<LogStore>) -> Result<String, UpdateError> {
//!     let n = update
//!         .update_value("count", |n: Option<u64>| n.unwrap_or(0) + 1)
//!         .await?;
//!     Ok(n.to_string())
//! }
//!
//! pub fn app(sessions: TowerStore<LogStore>) -> Router {
//!     Router::new()
//!         .route("/count", post(increment))
//!         // The layer and the extractor must use the same store.
//!         .layer(SessionManagerLayer::new(sessions.clone()))
//!         .with_state(AppState { sessions })
//! }
//! # }
//! # fn main() {}
//! ```
//!
//! # A minimal actix-web app
//!
//! ```no_run
//! # #[cfg(feature = "actix-session")]
//! # mod app {
//! use actix_session::{Session, SessionMiddleware};
//! use actix_web::cookie::Key;
//! use actix_web::{App, HttpServer, get};
//! use sessionlog::LogStore;
//! use sessionlog::web::ActixStore;
//!
//! #[get("/")]
//! async fn visits(session: Session) -> actix_web::Result<String> {
//!     let n = session.get::<u64>("visits")?.unwrap_or(0) + 1;
//!     session.insert("visits", n)?;
//!     Ok(format!("visit {n}"))
//! }
//!
//! pub async fn main() -> std::io::Result<()> {
//!     let store = ActixStore::new(LogStore::open("sessions.db").map_err(std::io::Error::other)?);
//!     // Use one persistent key in production: it signs the cookies.
//!     let key = Key::generate();
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(SessionMiddleware::new(store.clone(), key.clone()))
//!             .service(visits)
//!     })
//!     .bind("127.0.0.1:8080")?
//!     .run()
//!     .await
//! }
//! # }
//! # fn main() {}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Session, SessionId, SessionStore};

#[cfg(feature = "actix-session")]
mod actix;
#[cfg(feature = "tower-sessions")]
mod axum;
#[cfg(any(feature = "tower-sessions", feature = "tower-sessions-014"))]
mod tower;
#[cfg(feature = "tower-sessions")]
pub mod tower_import;

#[cfg(feature = "actix-session")]
pub use actix::{ACTIX_SESSION_ID, ActixStore, actix_session_id};
#[cfg(feature = "tower-sessions")]
pub use axum::{Data, SessionUpdate, UpdateError};
#[cfg(any(feature = "tower-sessions", feature = "tower-sessions-014"))]
pub use tower::{AXUM_LOGIN_DATA_KEY, LOAD_TOKEN, TowerStore, axum_login_owner};

/// Where an adapter runs the backend's (synchronous) calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Blocking {
    /// Ask the backend: [`SessionStore::may_block`]. LogStore (unless
    /// `SyncPolicy::Always`) and MemoryStore run inline; DirStore, the
    /// server stores and LogStore with `SyncPolicy::Always` on the pool.
    #[default]
    Auto,
    /// Always on the runtime's worker thread: lowest latency for calls
    /// that take microseconds, but a slow call stalls every request
    /// scheduled on that worker.
    Inline,
    /// Always on tokio's blocking thread pool (`spawn_blocking`).
    Pool,
}

/// Why an adapter call failed, before it is turned into the framework's
/// error type. No variant carries a session id or session data.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The backend failed.
    Store(Error),
    /// The blocking task panicked or was cancelled.
    Task(String),
    /// Session data could not be encoded.
    Encode(String),
    /// Stored session data could not be decoded.
    Decode(String),
    /// Other requests kept saving the session: nothing was saved.
    Contended,
}

impl Failure {
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, Failure::Store(e) if e.is_conflict())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Store(e) => f.write_str(&describe(e)),
            Failure::Task(m) => write!(f, "session store task failed: {m}"),
            Failure::Encode(m) => write!(f, "cannot encode session data: {m}"),
            Failure::Decode(m) => write!(f, "cannot decode stored session data: {m}"),
            Failure::Contended => {
                f.write_str("the session kept changing concurrently; nothing was saved, try again")
            }
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Store(e)
    }
}

/// The message of a store error without the secrets some variants carry
/// (the session id of a conflict or of an invalid id).
pub(crate) fn describe(e: &Error) -> String {
    match e {
        Error::Conflict { .. } => {
            "the session was changed concurrently; reload it and try again".to_owned()
        }
        Error::InvalidId { reason, .. } => format!("invalid session id: {reason}"),
        other => other.to_string(),
    }
}

/// A backend shared by the clones of an adapter, with the decision where
/// its calls run.
pub(crate) struct Runner<S> {
    pub(crate) store: Arc<S>,
    pub(crate) pool: bool,
}

impl<S> Clone for Runner<S> {
    fn clone(&self) -> Self {
        Runner {
            store: Arc::clone(&self.store),
            pool: self.pool,
        }
    }
}

impl<S: SessionStore + 'static> Runner<S> {
    pub(crate) fn new(store: S) -> Runner<S> {
        let pool = store.may_block();
        Runner {
            store: Arc::new(store),
            pool,
        }
    }

    pub(crate) fn set_blocking(&mut self, b: Blocking) {
        self.pool = match b {
            Blocking::Auto => self.store.may_block(),
            Blocking::Inline => false,
            Blocking::Pool => true,
        };
    }

    /// Runs `f` on the store, inline or on the blocking pool. Outside a
    /// tokio runtime (no pool to use) it runs inline.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&S) -> crate::Result<T> + Send + 'static,
    {
        self.run_where(self.pool, f).await
    }

    /// Runs `f` on the blocking pool whatever [`Blocking`] says: for
    /// maintenance (a compaction, a sweep of a server table), which may
    /// take seconds or wait for another process's compaction. Only
    /// tower-sessions' adapter has a maintenance call (`delete_expired`).
    #[cfg(any(feature = "tower-sessions", feature = "tower-sessions-014"))]
    pub(crate) async fn run_on_pool<T, F>(&self, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&S) -> crate::Result<T> + Send + 'static,
    {
        self.run_where(true, f).await
    }

    async fn run_where<T, F>(&self, pool: bool, f: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&S) -> crate::Result<T> + Send + 'static,
    {
        if pool && let Ok(handle) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(&self.store);
            return match handle.spawn_blocking(move || f(&store)).await {
                Ok(r) => r.map_err(Failure::Store),
                Err(e) => Err(Failure::Task(e.to_string())),
            };
        }
        f(&self.store).map_err(Failure::Store)
    }
}

/// Encodes a session's map as MessagePack with the keys sorted, so that
/// equal maps always give equal bytes (a `HashMap`'s order is random),
/// leaving out the entry `skip` (an adapter's own bookkeeping, which is
/// never stored).
pub(crate) fn encode_map<V: Serialize>(
    map: &HashMap<String, V>,
    skip: Option<&str>,
) -> Result<Vec<u8>, Failure> {
    let sorted: BTreeMap<&str, &V> = map
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    // The serializer's messages can quote values: keep only the kind.
    rmp_serde::to_vec(&sorted).map_err(|_| Failure::Encode("MessagePack encoding failed".into()))
}

/// The inverse of [`encode_map`].
pub(crate) fn decode_map<V: DeserializeOwned>(bytes: &[u8]) -> Result<HashMap<String, V>, Failure> {
    rmp_serde::from_slice(bytes).map_err(|_| {
        Failure::Decode(format!(
            "{} bytes are not a MessagePack map of this framework's values",
            bytes.len()
        ))
    })
}

/// How many times [`save_live`] reloads after a concurrent save got in
/// between. Every conflict means another writer's save went through, so
/// this is only reached when very many requests write one session at once.
const SAVE_ATTEMPTS: usize = 32;

/// What [`save_live`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Saved {
    /// The data were written.
    Written,
    /// The stored data already were these: only the deadline moved.
    Touched,
    /// No live session has the id (it was deleted or expired since it was
    /// loaded): nothing was written, and nothing was created.
    Gone,
    /// Other writers kept winning: nothing was written.
    Contended,
}

/// Replaces the data and deadline of the live session `id`; never creates
/// a session. This is how an adapter saves a session a request loaded:
/// a logout (delete) or expiry that happened meanwhile wins, and the
/// stale copy is dropped rather than stored under the old id again.
///
/// `loaded` is the version the request loaded, if it knows it: the first
/// try is a save conditional on it, which also fails, writing nothing, if
/// the session is no longer there. After a conflict it reloads the
/// session: gone means [`Saved::Gone`]; the same data means a touch of the
/// deadline; other data are replaced (last writer wins among live
/// sessions) by a save conditional on the version just read, so a delete
/// between the reload and the save still wins.
///
/// `owner`: `Some(o)` saves the session with owner `o` (`None`: no one);
/// `None` keeps the stored owner where the session is reloaded, and saves
/// none otherwise (what a store without an owner function always did).
pub(crate) fn save_live<S: SessionStore + ?Sized>(
    store: &S,
    id: &SessionId,
    data: Vec<u8>,
    expires: SystemTime,
    loaded: Option<u64>,
    owner: Option<Option<crate::Owner>>,
) -> crate::Result<Saved> {
    let mut attempt = match loaded {
        // The modification time is stamped by the store on save.
        Some(v) if v > 0 => {
            let mut s = Session::restore(id.clone(), data, Some(expires), SystemTime::now(), v);
            s.owner = owner.clone().flatten();
            s
        }
        _ => match store.load_session(id)? {
            None => return Ok(Saved::Gone),
            Some(mut current) => {
                if current.data == data && owner.as_ref().is_none_or(|o| *o == current.owner) {
                    return touch_live(store, id, expires);
                }
                current.data = data;
                current.expires = Some(expires);
                if let Some(o) = &owner {
                    current.owner.clone_from(o);
                }
                current
            }
        },
    };
    for _ in 0..SAVE_ATTEMPTS {
        match store.save_session_if_unchanged(&mut attempt) {
            Ok(()) => return Ok(Saved::Written),
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e),
        }
        let Some(mut current) = store.load_session(id)? else {
            return Ok(Saved::Gone);
        };
        if current.data == attempt.data && owner.as_ref().is_none_or(|o| *o == current.owner) {
            return touch_live(store, id, expires);
        }
        current.data = std::mem::take(&mut attempt.data);
        current.expires = Some(expires);
        if let Some(o) = &owner {
            current.owner.clone_from(o);
        }
        attempt = current;
    }
    Ok(Saved::Contended)
}

/// Moves the deadline of the live session `id`; never creates one.
pub(crate) fn touch_live<S: SessionStore + ?Sized>(
    store: &S,
    id: &SessionId,
    expires: SystemTime,
) -> crate::Result<Saved> {
    Ok(if store.touch_session_until(id, Some(expires))? {
        Saved::Touched
    } else {
        Saved::Gone
    })
}

/// The latest instant the frameworks' date types can hold (the end of
/// year 9999): stored deadlines beyond it are clamped to it.
const LATEST: Duration = Duration::from_secs(253_402_300_799);

/// `t` clamped to what `time::OffsetDateTime` represents.
pub(crate) fn clamp_time(t: SystemTime) -> SystemTime {
    t.min(UNIX_EPOCH + LATEST)
}

/// `now + ttl`, saturating at [`LATEST`].
pub(crate) fn deadline(ttl: Duration) -> SystemTime {
    clamp_time(
        SystemTime::now()
            .checked_add(ttl)
            .unwrap_or(UNIX_EPOCH + LATEST),
    )
}
