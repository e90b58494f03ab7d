//! The local backends the web tests run the adapters over (tests/web.rs,
//! tests/web_overlap.rs): each store on the test's clock, at the
//! framework's defaults otherwise.

use sessionlog::{DirStore, LogStore, MemoryStore};

use super::conformance::{Backend, Config};

/// A `MemoryStore`.
pub struct Memory;
impl Backend for Memory {
    type Store = MemoryStore;
    const PERSISTENT: bool = false;
    fn new_location() -> Self {
        Memory
    }
    fn open(&self, cfg: &Config) -> MemoryStore {
        MemoryStore::options()
            .clock(cfg.clock.clone())
            .open()
            .expect("valid options")
    }
}

/// A `LogStore` in a temporary directory.
pub struct Log(tempfile::TempDir);
impl Backend for Log {
    type Store = LogStore;
    const PERSISTENT: bool = true;
    fn new_location() -> Self {
        Log(tempfile::tempdir().expect("temp dir"))
    }
    fn open(&self, cfg: &Config) -> LogStore {
        LogStore::options()
            .clock(cfg.clock.clone())
            .open(self.0.path().join("sessions.db"))
            .expect("open log store")
    }
}

/// A `DirStore` in a temporary directory.
pub struct Dir(tempfile::TempDir);
impl Backend for Dir {
    type Store = DirStore;
    const PERSISTENT: bool = true;
    fn new_location() -> Self {
        Dir(tempfile::tempdir().expect("temp dir"))
    }
    fn open(&self, cfg: &Config) -> DirStore {
        DirStore::options()
            .clock(cfg.clock.clone())
            .open(self.0.path().join("sessions"))
            .expect("open DirStore")
    }
}
