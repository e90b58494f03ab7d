//! actix-session 0.11: a store for `test_helpers::acceptance_test_suite`.

use std::sync::Arc;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration;
use sessionlog::web::ActixStore;

adapters!(Actix, ActixStore);

/// The registry's actix-session storage types, which sessionlog implements.
pub mod reg {
    pub use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
}

/// The state actix-session stores.
pub type State = std::collections::HashMap<String, String>;

/// sessionlog's `ActixStore` over the chosen backend, fresh per call (the
/// server backends share one table per process).
#[derive(Clone, Debug)]
pub struct Store {
    inner: Actix,
    _tmp: Option<Arc<tempfile::TempDir>>,
}

impl Store {
    /// A store for one test.
    pub fn fresh() -> Store {
        let (inner, _tmp) = fresh!(Actix);
        Store { inner, _tmp }
    }
}

impl SessionStore for Store {
    async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        each!(Actix, &self.inner, s => s.load(key).await)
    }
    async fn save(&self, state: State, ttl: &Duration) -> Result<SessionKey, SaveError> {
        each!(Actix, &self.inner, s => s.save(state, ttl).await)
    }
    async fn update(
        &self,
        key: SessionKey,
        state: State,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        each!(Actix, &self.inner, s => s.update(key, state, ttl).await)
    }
    async fn update_ttl(&self, key: &SessionKey, ttl: &Duration) -> Result<(), anyhow::Error> {
        each!(Actix, &self.inner, s => s.update_ttl(key, ttl).await)
    }
    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        each!(Actix, &self.inner, s => s.delete(key).await)
    }
}
