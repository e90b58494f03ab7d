//! `SessionUpdate`: the conflict-safe axum extractor.

use std::collections::HashMap;
use std::time::SystemTime;

use axum_core::extract::{FromRef, FromRequestParts};
use axum_core::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::tower::LOAD_TOKEN;
use super::tower::session_id;
use super::{Failure, TowerStore, clamp_time, decode_map, encode_map};
use crate::SessionStore;

/// A session's data as tower-sessions keeps it: JSON values by key.
pub type Data = HashMap<String, serde_json::Value>;

/// How many times [`SessionUpdate::update`] reloads after a conflict
/// before giving up with [`UpdateError::Contended`]. Every conflict means
/// another writer's update went through, so this is only reached when
/// very many requests write one session at the same moment.
const ATTEMPTS: usize = 100;

/// An axum extractor for conflict-safe changes to the current session.
///
/// [`update`](SessionUpdate::update) loads the stored data, runs the
/// closure on it and saves the result only if no one else saved the
/// session in between (by its version,
/// [`SessionStore::save_session_if_unchanged`]); otherwise it reloads and
/// runs the closure again. The closure may therefore run more than once:
/// keep it free of side effects other than on the data.
///
/// It needs tower-sessions' `SessionManagerLayer` over a [`TowerStore`]
/// and that same store in the router's state (`TowerStore<S>:
/// FromRef<State>`). Without a session cookie, or when the session expired
/// or was deleted (a logout in another request), the update starts a new
/// session under a new id through tower-sessions (which then sets the
/// cookie), from empty data: nothing of the old session is carried over,
/// and the old id stays dead.
///
/// The update bypasses the `tower_sessions::Session` of the same request:
/// if the handler read the session through it first, that copy is stale
/// afterwards. Mixing both ways of writing in one handler is not
/// conflict-safe.
pub struct SessionUpdate<S> {
    session: tower_sessions_core::Session,
    store: TowerStore<S>,
}

impl<St, S> FromRequestParts<St> for SessionUpdate<S>
where
    St: Send + Sync,
    S: SessionStore + 'static,
    TowerStore<S>: FromRef<St>,
{
    type Rejection = <tower_sessions_core::Session as FromRequestParts<St>>::Rejection;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &St,
    ) -> Result<Self, Self::Rejection> {
        let session = tower_sessions_core::Session::from_request_parts(parts, state).await?;
        Ok(SessionUpdate {
            session,
            store: TowerStore::from_ref(state),
        })
    }
}

impl<S: SessionStore + 'static> SessionUpdate<S> {
    /// Runs `f` on the session's stored data and saves what it leaves,
    /// retrying on conflict; returns `f`'s result from the run that was
    /// saved. Data left unchanged is not written.
    pub async fn update<T, F>(&self, mut f: F) -> Result<T, UpdateError>
    where
        F: FnMut(&mut Data) -> T,
    {
        for _ in 0..ATTEMPTS {
            let Some(id) = self.session.id() else {
                return self.create(f).await;
            };
            let key = session_id(id.to_string())?;
            let expires = clamp_time(SystemTime::from(self.session.expiry_date()));
            let loaded = self
                .store
                .runner()
                .run(move |s| s.load_session(&key))
                .await?;
            let Some(mut stored) = loaded else {
                // Gone since the request started (logout, expiry): a new
                // session under a new id, from empty data. `flush` drops
                // whatever this request's `Session` loaded before the
                // logout, so none of it reaches the new session.
                self.session.flush().await.map_err(session_error)?;
                return self.create(f).await;
            };
            let mut data: Data = decode_map(&stored.data)?;
            let out = f(&mut data);
            let bytes = encode_map(&data, Some(LOAD_TOKEN))?;
            if bytes == stored.data {
                return Ok(out);
            }
            stored.data = bytes;
            stored.expires = Some(expires);
            if let Some(owner) = self.store.owner_of(&data) {
                stored.owner = owner;
            }
            let r = self
                .store
                .runner()
                .run(move |s| s.save_session_if_unchanged(&mut stored))
                .await;
            // A conditional save at the version loaded: a delete since
            // then is a conflict too, and the next round sees it gone.
            // The request's `Session` keeps its own load token, so its
            // end-of-request save of data it loaded before this update
            // is a touch and does not undo the update.
            match r {
                Ok(()) => return Ok(out),
                Err(e) if e.is_conflict() => tokio::task::yield_now().await,
                Err(e) => return Err(e.into()),
            }
        }
        Err(UpdateError::Contended)
    }

    /// [`update`](SessionUpdate::update) of one value: `f` gets the value
    /// stored under `key` (`None` if absent) and returns the new one,
    /// which is stored and returned. A stored value that does not
    /// deserialize as `T` is an error and nothing is written.
    pub async fn update_value<T, F>(&self, key: &str, mut f: F) -> Result<T, UpdateError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        self.update(|data| -> Result<T, UpdateError> {
            let old = match data.get(key) {
                Some(v) => Some(T::deserialize(v).map_err(|_| {
                    UpdateError::Data(format!("the value under {key:?} has another type"))
                })?),
                None => None,
            };
            let new = f(old);
            let value = serde_json::to_value(&new)
                .map_err(|_| UpdateError::Data("the new value is not JSON".into()))?;
            data.insert(key.to_owned(), value);
            Ok(new)
        })
        .await?
    }

    /// The `tower_sessions::Session` of this request.
    pub fn session(&self) -> &tower_sessions_core::Session {
        &self.session
    }

    /// No stored session: build the data from empty and let tower-sessions
    /// create the session (a fresh id, saved only if free, and the cookie).
    async fn create<T, F>(&self, mut f: F) -> Result<T, UpdateError>
    where
        F: FnMut(&mut Data) -> T,
    {
        let mut data = Data::new();
        let out = f(&mut data);
        if data.is_empty() {
            return Ok(out);
        }
        for (k, v) in data {
            self.session
                .insert_value(&k, v)
                .await
                .map_err(session_error)?;
        }
        self.session.save().await.map_err(session_error)?;
        Ok(out)
    }
}

fn session_error(e: tower_sessions_core::session::Error) -> UpdateError {
    UpdateError::Session(e.to_string())
}

/// Why [`SessionUpdate::update`] failed. As a response: 503 for
/// `Contended`, 500 otherwise, with a generic body (the details are for
/// logs; they never contain a session id or data).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The backend failed.
    #[error("session store: {0}")]
    Store(String),
    /// tower-sessions failed (creating the session).
    #[error("session: {0}")]
    Session(String),
    /// The data could not be encoded or decoded.
    #[error("session data: {0}")]
    Data(String),
    /// Too many concurrent writers kept winning: nothing was saved.
    #[error("the session kept changing concurrently; nothing was saved")]
    Contended,
}

impl From<Failure> for UpdateError {
    fn from(f: Failure) -> UpdateError {
        match f {
            Failure::Encode(_) | Failure::Decode(_) => UpdateError::Data(f.to_string()),
            Failure::Contended => UpdateError::Contended,
            _ => UpdateError::Store(f.to_string()),
        }
    }
}

impl IntoResponse for UpdateError {
    fn into_response(self) -> Response {
        match self {
            UpdateError::Contended => (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "the session is busy, try again",
            )
                .into_response(),
            _ => (
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "session storage failed",
            )
                .into_response(),
        }
    }
}
