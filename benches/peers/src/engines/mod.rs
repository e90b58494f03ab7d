//! One small trait per engine: the operations a session store needs, and
//! how each engine is opened for the two durability classes.

mod floor;
mod kv;
mod redis;
mod servers;
mod sessionlog;
mod sqlite;

use std::cell::Cell;
use std::path::Path;

pub use self::sessionlog::set_owned_sessions;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// The two durability classes; numbers are only compared within a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No fsync per operation: a save is in the kernel (or the engine's own
    /// buffer) when it returns.
    Buffered,
    /// Every save is on stable storage before it returns.
    Durable,
}

/// A session store as the workload sees it. Values are the session data;
/// engines that need a modification time keep it beside the data.
pub trait Engine: Send + Sync {
    /// Inserts or replaces a session.
    fn save(&self, id: &str, data: &[u8]) -> Result<()>;
    /// The session's data, copied out (an application keeps it past the call).
    fn load(&self, id: &str) -> Result<Option<Vec<u8>>>;
    /// Copies the session's data into `buf` (cleared first, its allocation
    /// reused); false if absent. This is what the load phases time: every
    /// in-process engine overrides it to copy the bytes once, from where it
    /// keeps them, into the caller's buffer (sessionlog from its map through
    /// `load_session_with`, the HashMap from under its read lock, redb, LMDB,
    /// fjall and sled from their borrowed or returned value), so that a
    /// load compares lookup plus one copy, and no engine pays the allocator
    /// while another does not. The default (SQLite and the servers) goes
    /// through `load`.
    fn load_into(&self, id: &str, buf: &mut Vec<u8>) -> Result<bool> {
        buf.clear();
        match self.load(id)? {
            Some(v) => {
                buf.extend_from_slice(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    /// Saves `data` under every id, untimed, in the engine's fastest way
    /// (the key-value peers batch many saves in one transaction); the scale
    /// phase builds its stores with it.
    fn fill(&self, ids: &[String], data: &[u8]) -> Result<()> {
        ids.iter().try_for_each(|id| self.save(id, data))
    }
    /// Refreshes the session's modification time; false if absent.
    fn touch(&self, id: &str) -> Result<bool>;
    /// Removes the session.
    fn delete(&self, id: &str) -> Result<()>;
    /// Reclaims the space of dead records the way the engine documents;
    /// `Ok(false)` when the engine has no such operation.
    fn compact(&mut self) -> Result<bool> {
        Ok(false)
    }
    /// Compacts while other threads go on loading and saving through
    /// `&self`; `None` when the engine's compaction needs the handle to
    /// itself (`compact(&mut self)`), which the stall phase then runs
    /// behind a write lock, as an application would have to.
    fn compact_concurrent(&self) -> Option<Result<()>> {
        None
    }
    /// Removes whatever the engine keeps outside its directory (Redis keys).
    fn cleanup(&self) -> Result<()> {
        Ok(())
    }
}

/// What the harness knows about one engine.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Column name in the results table.
    pub name: &'static str,
    /// Whether it keeps its data in files in the directory it is given
    /// (reopen, compaction and file size apply).
    pub on_disk: bool,
    /// Whether it can make each save durable before returning.
    pub durable: bool,
    /// Whether it runs the phases without fsync (every engine but the
    /// durable-only variants).
    pub buffered: bool,
    open: fn(&Path, Mode) -> Result<Box<dyn Engine>>,
}

impl Spec {
    pub fn open(&self, dir: &Path, mode: Mode) -> Result<Box<dyn Engine>> {
        (self.open)(dir, mode)
    }
}

/// Every engine, sessionlog first (the ratios are taken against it).
pub fn all() -> Vec<Spec> {
    vec![
        Spec {
            name: "sessionlog",
            on_disk: true,
            durable: true,
            buffered: true,
            open: sessionlog::open_log,
        },
        Spec {
            name: "sl-encrypted",
            on_disk: true,
            durable: true,
            buffered: true,
            open: sessionlog::open_log_encrypted,
        },
        // The same store with an owner on every save (the owner index's
        // aim, DESIGN.md §3.1: at least 0.9x the saves of the column
        // before).
        Spec {
            name: "sl-owner",
            on_disk: true,
            durable: true,
            buffered: true,
            open: sessionlog::open_log_owned,
        },
        Spec {
            name: "redb",
            on_disk: true,
            durable: true,
            buffered: true,
            open: kv::open_redb,
        },
        Spec {
            name: "lmdb",
            on_disk: true,
            durable: true,
            buffered: true,
            open: kv::open_lmdb,
        },
        Spec {
            name: "sqlite",
            on_disk: true,
            durable: true,
            buffered: true,
            open: sqlite::open,
        },
        Spec {
            name: "sled",
            on_disk: true,
            durable: true,
            buffered: true,
            open: kv::open_sled,
        },
        Spec {
            name: "fjall",
            on_disk: true,
            durable: true,
            buffered: true,
            open: kv::open_fjall,
        },
        // The local server persists as configured there (see README);
        // one request per operation, so never "durable" from here.
        Spec {
            name: "redis",
            on_disk: false,
            durable: false,
            buffered: true,
            open: redis::open,
        },
        Spec {
            name: "dirstore",
            on_disk: true,
            durable: true,
            buffered: true,
            open: sessionlog::open_dir,
        },
        Spec {
            name: "write(2)",
            on_disk: true,
            durable: true,
            buffered: true,
            open: floor::open,
        },
        // The plain log preallocated: durable phases only.
        Spec {
            name: "write(2) prealloc",
            on_disk: true,
            durable: true,
            buffered: false,
            open: floor::open_prealloc,
        },
        Spec {
            name: "hashmap",
            on_disk: false,
            durable: false,
            buffered: true,
            open: floor::open_hashmap,
        },
        // The ceiling with the check every sessionlog load makes: a CRC-32
        // of the value computed and compared before the copy (issue 32.4).
        Spec {
            name: "hashmap+crc",
            on_disk: false,
            durable: false,
            buffered: true,
            open: floor::open_checked_hashmap,
        },
        // sessionlog's server-backed stores, each at its server's default
        // durability in every phase (servers.rs).
        Spec {
            name: "sl-postgres",
            on_disk: false,
            durable: false,
            buffered: true,
            open: servers::open_postgres,
        },
        Spec {
            name: "sl-mysql",
            on_disk: false,
            durable: false,
            buffered: true,
            open: servers::open_mysql,
        },
        Spec {
            name: "sl-redis",
            on_disk: false,
            durable: false,
            buffered: true,
            open: servers::open_redis,
        },
    ]
}

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// How many worker threads the harness runs at most; engines that need a
/// connection per thread (SQLite, Redis) open this many.
pub const MAX_THREADS: usize = 4;

/// Called by the harness at the start of each worker thread.
pub fn set_slot(slot: usize) {
    SLOT.with(|s| s.set(slot % MAX_THREADS));
}

/// This worker thread's index, for per-thread connections.
pub fn slot() -> usize {
    SLOT.with(Cell::get)
}

/// Milliseconds since the epoch, for the modification time kept beside
/// the data by the key-value peers.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Key-value peers store `modified_ms (8 bytes LE) ++ data`.
pub fn encode_value(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + data.len());
    v.extend_from_slice(&now_ms().to_le_bytes());
    v.extend_from_slice(data);
    v
}

pub fn decode_value(v: &[u8]) -> Vec<u8> {
    v.get(8..).unwrap_or_default().to_vec()
}

/// Copies the data of a stored value (after its modification time) into
/// `buf`, cleared first.
pub fn decode_value_into(v: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(v.get(8..).unwrap_or_default());
}
