//! tower-sessions 0.15: `MemoryStore`, the name the upstream tests use,
//! made a `TowerStore` over the chosen backend.

use std::sync::Arc;

use sessionlog::web::TowerStore;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{ExpiredDeletion, Result, SessionStore};

adapters!(Tower, TowerStore);

/// What the upstream tests call `MemoryStore`: sessionlog's `TowerStore`
/// over the backend `SESSIONLOG_UPSTREAM_BACKEND` names, fresh per
/// `default()` (the server backends share one table per process).
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Tower,
    _tmp: Option<Arc<tempfile::TempDir>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        let (inner, _tmp) = fresh!(Tower);
        MemoryStore { inner, _tmp }
    }
}

#[async_trait::async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, record: &mut Record) -> Result<()> {
        each!(Tower, &self.inner, s => s.create(record).await)
    }
    async fn save(&self, record: &Record) -> Result<()> {
        each!(Tower, &self.inner, s => s.save(record).await)
    }
    async fn load(&self, id: &Id) -> Result<Option<Record>> {
        each!(Tower, &self.inner, s => s.load(id).await)
    }
    async fn delete(&self, id: &Id) -> Result<()> {
        each!(Tower, &self.inner, s => s.delete(id).await)
    }
}

#[async_trait::async_trait]
impl ExpiredDeletion for MemoryStore {
    async fn delete_expired(&self) -> Result<()> {
        each!(Tower, &self.inner, s => s.delete_expired().await)
    }
}
