//! sessionlog: an embedded, log-structured storage engine for web sessions.
//!
//! A web server keeps one [`Session`] per logged-in browser. Every backend
//! implements the one [`SessionStore`] trait:
//!
//! - [`LogStore`]: the engine. One append-only, checksummed log file, an
//!   in-memory index, reads from a memory map; several processes may share
//!   it; compaction rewrites live sessions and drops expired ones.
//! - [`MemoryStore`]: volatile, in-process.
//! - [`DirStore`]: one file per session in a directory.
//!
//! [`HashedIds`] wraps any of them (and the server stores) to keep a digest
//! of each session id instead of the id, so that the store's files, rows
//! and backups hold no usable login. [`Encrypted`] wraps any of them to
//! keep each session's data encrypted under a [`Keyring`].
//!
//! ```no_run
//! use sessionlog::{LogStore, Session, SessionId, SessionStore};
//! # fn main() -> sessionlog::Result<()> {
//! let store = LogStore::open("sessions.db")?;
//! let mut s = Session::new(SessionId::generate(), b"user=42".to_vec());
//! store.save_session(&mut s)?;
//! assert_eq!(store.load_session(&s.id)?.map(|s| s.data), Some(b"user=42".to_vec()));
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "sessionlog builds only on Linux: LogStore relies on Linux's memory maps, \
     robust process-shared mutexes, RWF_DSYNC and SEEK_DATA"
);

mod clock;
mod dir;
mod encrypted;
mod engine;
mod error;
mod fs_identity;
mod hashed;
mod id;
mod memory;
mod options;
mod owner;
mod poison;
mod record;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]
mod server;
mod session;
mod store;
mod store_dir;
mod trust;
#[cfg(any(
    feature = "tower-sessions",
    feature = "tower-sessions-014",
    feature = "actix-session"
))]
pub mod web;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dir::{DirOptions, DirStore};
pub use encrypted::{Encrypted, Keyring, RekeyReport};
pub use engine::{
    BackgroundError, CheckReport, CompactStats, Damage, LogOptions, LogStore, RecordCounts,
    RecoveryReport, Stats, StorePolicy, TornTail, WhenFull, check, check_with,
};
pub use error::{Error, Remedy, Result};
pub use hashed::HashedIds;
pub use id::{MAX_ID_LEN, SessionId};
pub use memory::{MemoryOptions, MemoryStore};
pub use options::{DEFAULT_MAX_SESSION_SIZE, SyncPolicy};
pub use owner::{MAX_OWNER_LEN, Owner, SessionInfo};
#[cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]
pub use server::ClockOffset;
#[cfg(feature = "mysql")]
pub use server::mysql::{MySqlOptions, MySqlStore};
#[cfg(feature = "postgres")]
pub use server::postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "redis")]
pub use server::redis::{RedisOptions, RedisStore};
pub use session::{Session, SessionRef};
pub use store::{SessionIter, SessionStore};

/// The engine's on-disk format and I/O hook, for this project's own tests,
/// fuzzing and benchmarks (feature `unstable-internals`). Not part of the
/// public API: anything here may change in any release.
#[cfg(feature = "unstable-internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::engine::format;
    pub use crate::engine::hook;
    /// When a close writes a hint, for the crash tests of that path.
    pub mod compact {
        pub use crate::engine::compact::close_writes_hint;
    }
    /// The encrypted envelope's decoder, for its fuzz target.
    pub mod envelope {
        pub use crate::encrypted::envelope::check_round_trip;
    }
    /// The hint file's decoder, for its fuzz target.
    pub mod hint {
        pub use crate::engine::hint::check_round_trip;
    }
}

/// The README's examples, compiled as doctests (with the web features, which
/// two of them need).
#[cfg(all(doctest, feature = "tower-sessions", feature = "actix-session"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
