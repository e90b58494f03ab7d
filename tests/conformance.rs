//! Runs the conformance suite (tests/common/conformance.rs) against every
//! backend: each backend is one `conformance!` line.

#[macro_use]
mod common;
use common::conformance;
use common::conformance::{Backend, Config};

use sessionlog::MemoryStore;

struct Memory;
impl Backend for Memory {
    type Store = MemoryStore;
    const PERSISTENT: bool = false;
    fn new_location() -> Self {
        Memory
    }
    fn open(&self, cfg: &Config) -> MemoryStore {
        let mut s = MemoryStore::new()
            .with_clock(cfg.clock.clone())
            .with_max_session_size(cfg.max_session_size);
        if let Some(idle) = cfg.max_idle {
            s = s.with_max_idle(idle);
        }
        s
    }
}

conformance!(memory, Memory);
#[cfg(feature = "postgres")]
conformance!(postgres, common::servers::Postgres);
#[cfg(feature = "mysql")]
conformance!(mysql, common::servers::MySql);
#[cfg(feature = "redis")]
conformance!(redis, common::servers::Redis);
