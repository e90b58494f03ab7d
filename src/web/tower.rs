//! `TowerStore`: a tower-sessions session store over any backend.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::{Blocking, Failure, Runner, clamp_time, decode_map, encode_map};
use crate::{Session, SessionId, SessionStore};

/// Entries of the "last seen data" table before it is cleared: bounds its
/// memory (about 60 bytes an entry) on a server with many sessions. A
/// cleared entry only costs one full save instead of a touch.
const SEEN_LIMIT: usize = 100_000;

/// How many fresh ids `create` draws before giving up; a collision of
/// 128-bit random ids does not happen by chance, so more than one retry
/// means a broken random source.
const CREATE_ATTEMPTS: usize = 8;

/// A [tower-sessions](https://docs.rs/tower-sessions) session store over
/// any sessionlog backend `S`, for axum and other tower servers.
///
/// It implements `SessionStore` and `ExpiredDeletion` of tower-sessions
/// 0.15 (feature `tower-sessions`) and of tower-sessions-core 0.14
/// (feature `tower-sessions-014`). A record maps to one [`Session`]: the
/// id as its 22-character text, the data as MessagePack (keys sorted), the
/// `expiry_date` as `expires`.
///
/// - `create` saves only if no live session has the id
///   ([`SessionStore::save_session_if_unchanged`] at version 0) and draws
///   a new id on a collision: it never overwrites another session.
/// - `save` of data equal to what this store last loaded or saved for the
///   id only moves the deadline ([`SessionStore::touch_session_until`]),
///   so `with_always_save(true)` does not rewrite every session on every
///   request, and never undoes a change another request or process saved
///   meanwhile. Other saves are last-writer-wins, as with every
///   tower-sessions store; [`SessionUpdate`](super::SessionUpdate) is the
///   conflict-safe path.
/// - `load` returns `None` for an expired or absent session, so
///   tower-sessions starts a fresh one (it never sees a forged id as an
///   error: its cookie parser drops ids that are not 16 base64url bytes).
/// - `delete_expired` runs the backend's own cleanup
///   ([`SessionStore::delete_old_sessions`]; for LogStore a compaction).
///
/// Clones share the backend.
pub struct TowerStore<S> {
    runner: Runner<S>,
    seen: Arc<Seen>,
}

/// The hash of the encoded data this process last loaded or saved, per
/// session: how `save` tells a data change from an expiry-only save.
struct Seen {
    map: Mutex<HashMap<SessionId, u64, foldhash::fast::RandomState>>,
    hasher: foldhash::quality::RandomState,
}

impl<S> Clone for TowerStore<S> {
    fn clone(&self) -> Self {
        TowerStore {
            runner: self.runner.clone(),
            seen: Arc::clone(&self.seen),
        }
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

impl<S: SessionStore + 'static> TowerStore<S> {
    /// Wraps `store`. Its calls run where [`Blocking::Auto`] says.
    pub fn new(store: S) -> TowerStore<S> {
        TowerStore {
            runner: Runner::new(store),
            seen: Arc::new(Seen {
                map: Mutex::new(HashMap::default()),
                hasher: foldhash::quality::RandomState::default(),
            }),
        }
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

    #[cfg(feature = "tower-sessions")]
    pub(crate) fn runner(&self) -> &Runner<S> {
        &self.runner
    }

    fn hash(&self, bytes: &[u8]) -> u64 {
        self.seen.hasher.hash_one(bytes)
    }

    fn remember(&self, id: SessionId, hash: u64) {
        let mut map = self.seen.map.lock();
        if map.len() >= SEEN_LIMIT && !map.contains_key(&id) {
            map.clear();
        }
        map.insert(id, hash);
    }

    fn forget(&self, id: &SessionId) {
        self.seen.map.lock().remove(id);
    }

    /// Saves a new session only if `id` is free. `Ok(false)`: taken.
    async fn create_raw(
        &self,
        id: SessionId,
        data: &HashMap<String, serde_json::Value>,
        expires: SystemTime,
    ) -> Result<bool, Failure> {
        let bytes = encode_map(data)?;
        let hash = self.hash(&bytes);
        let sid = id.clone();
        let r = self
            .runner
            .run(move |s| {
                let mut session = Session::new(sid, bytes).with_expires(expires);
                s.save_session_if_unchanged(&mut session)
            })
            .await;
        match r {
            Ok(()) => {
                self.remember(id, hash);
                Ok(true)
            }
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn save_raw(
        &self,
        id: SessionId,
        data: &HashMap<String, serde_json::Value>,
        expires: SystemTime,
    ) -> Result<(), Failure> {
        let bytes = encode_map(data)?;
        let hash = self.hash(&bytes);
        let unchanged = self.seen.map.lock().get(&id) == Some(&hash);
        if unchanged {
            let sid = id.clone();
            let live = self
                .runner
                .run(move |s| s.touch_session_until(&sid, Some(expires)))
                .await?;
            if !live {
                // Deleted (logout elsewhere) or expired since it was
                // loaded: an unchanged save must not bring it back.
                self.forget(&id);
            }
            return Ok(());
        }
        let sid = id.clone();
        self.runner
            .run(move |s| {
                let mut session = Session::new(sid, bytes).with_expires(expires);
                s.save_session(&mut session)
            })
            .await?;
        self.remember(id, hash);
        Ok(())
    }

    async fn load_raw(
        &self,
        id: SessionId,
    ) -> Result<Option<(HashMap<String, serde_json::Value>, SystemTime)>, Failure> {
        let sid = id.clone();
        let seen = Arc::clone(&self.seen);
        // Decoded and hashed straight from the store's bytes (for the
        // LogStore, its memory map), with no copy into a `Vec` first.
        let loaded = self
            .runner
            .run(move |s| {
                let mut out = None;
                s.load_session_with(&sid, &mut |view| {
                    out = Some((
                        decode_map(view.data()),
                        seen.hasher.hash_one(view.data()),
                        view.expires(),
                    ));
                })?;
                Ok(out)
            })
            .await?;
        let Some((data, hash, expires)) = loaded else {
            self.forget(&id);
            return Ok(None);
        };
        let data = data?;
        self.remember(id, hash);
        // A session saved without a deadline (by another client of the
        // store) gets a nominal one: tower-sessions recomputes the
        // cookie's expiry from its own configuration anyway.
        let expires =
            expires.unwrap_or_else(|| super::deadline(Duration::from_secs(365 * 24 * 3600)));
        Ok(Some((data, clamp_time(expires))))
    }

    async fn delete_raw(&self, id: SessionId) -> Result<(), Failure> {
        self.forget(&id);
        self.runner
            .run(move |s| s.delete_session(&id).map(|_| ()))
            .await
    }

    async fn delete_expired_raw(&self) -> Result<(), Failure> {
        // `Duration::MAX` idle: only what already expired goes.
        self.runner
            .run(|s| s.delete_old_sessions(Duration::MAX).map(|_| ()))
            .await
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
                    let id = session_id(record.id.to_string())?;
                    if self.create_raw(id, &record.data, expires).await? {
                        return Ok(());
                    }
                    record.id = $core::session::Id::default();
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
