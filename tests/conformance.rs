//! Runs the conformance suite (tests/common/conformance.rs) against every
//! backend: each backend is one `conformance!` line.

#[macro_use]
mod common;
use common::conformance;
use common::conformance::{Backend, Config, Enc, Hashed};

use sessionlog::{DirStore, MemoryStore};

struct Memory;
impl Backend for Memory {
    type Store = MemoryStore;
    const PERSISTENT: bool = false;
    fn new_location() -> Self {
        Memory
    }
    fn open(&self, cfg: &Config) -> MemoryStore {
        let mut o = MemoryStore::options()
            .clock(cfg.clock.clone())
            .max_session_size(cfg.max_session_size);
        if let Some(idle) = cfg.max_idle {
            o = o.max_idle(idle);
        }
        if let Some(n) = cfg.max_sessions_per_owner {
            o = o.max_sessions_per_owner(n);
        }
        o.open().expect("valid options")
    }
}

conformance!(memory, Memory);

struct Log(tempfile::TempDir);
impl Backend for Log {
    type Store = sessionlog::LogStore;
    const PERSISTENT: bool = true;
    fn new_location() -> Self {
        Log(tempfile::tempdir().expect("temp dir"))
    }
    fn open(&self, cfg: &Config) -> sessionlog::LogStore {
        let mut o = sessionlog::LogStore::options()
            .clock(cfg.clock.clone())
            .max_session_size(cfg.max_session_size);
        if let Some(idle) = cfg.max_idle {
            o = o.max_idle(idle);
        }
        if let Some(n) = cfg.max_sessions_per_owner {
            o = o.max_sessions_per_owner(n);
        }
        o.open(self.0.path().join("sessions.db"))
            .expect("open log store")
    }
}

conformance!(log, Log);

/// A `DirStore` in a fresh temporary directory; `open` points it at a
/// subdirectory that does not exist yet, so opening must create it.
struct Dir(tempfile::TempDir);
impl Backend for Dir {
    type Store = DirStore;
    const PERSISTENT: bool = true;
    fn new_location() -> Self {
        Dir(tempfile::tempdir().expect("temporary directory"))
    }
    fn open(&self, cfg: &Config) -> DirStore {
        let mut o = DirStore::options()
            .clock(cfg.clock.clone())
            .max_session_size(cfg.max_session_size);
        if let Some(idle) = cfg.max_idle {
            o = o.max_idle(idle);
        }
        if let Some(n) = cfg.max_sessions_per_owner {
            o = o.max_sessions_per_owner(n);
        }
        o.open(self.0.path().join("sessions"))
            .expect("open DirStore")
    }
}

conformance!(dir, Dir);

#[cfg(feature = "postgres")]
conformance!(postgres, common::servers::Postgres);
#[cfg(feature = "mysql")]
conformance!(mysql, common::servers::MySql);
#[cfg(feature = "redis")]
conformance!(redis, common::servers::Redis);

// The same suite through `HashedIds` (ids stored as digests), every backend.
conformance!(hashed_memory, Hashed<Memory>);
conformance!(hashed_log, Hashed<Log>);
conformance!(hashed_dir, Hashed<Dir>);
#[cfg(feature = "postgres")]
conformance!(hashed_postgres, Hashed<common::servers::Postgres>);
#[cfg(feature = "mysql")]
conformance!(hashed_mysql, Hashed<common::servers::MySql>);
#[cfg(feature = "redis")]
conformance!(hashed_redis, Hashed<common::servers::Redis>);

// The same suite through `Encrypted` (data encrypted), every backend, and
// with `HashedIds` in both orders.
conformance!(encrypted_memory, Enc<Memory>);
conformance!(encrypted_log, Enc<Log>);
conformance!(encrypted_dir, Enc<Dir>);
conformance!(hashed_encrypted_log, Hashed<Enc<Log>>);
conformance!(encrypted_hashed_log, Enc<Hashed<Log>>);
conformance!(hashed_encrypted_dir, Hashed<Enc<Dir>>);
conformance!(encrypted_hashed_memory, Enc<Hashed<Memory>>);
#[cfg(feature = "postgres")]
conformance!(encrypted_postgres, Enc<common::servers::Postgres>);
#[cfg(feature = "mysql")]
conformance!(encrypted_mysql, Enc<common::servers::MySql>);
#[cfg(feature = "redis")]
conformance!(encrypted_redis, Enc<common::servers::Redis>);
#[cfg(feature = "postgres")]
conformance!(
    hashed_encrypted_postgres,
    Hashed<Enc<common::servers::Postgres>>
);
#[cfg(feature = "redis")]
conformance!(hashed_encrypted_redis, Hashed<Enc<common::servers::Redis>>);
