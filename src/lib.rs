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

mod clock;
mod dir;
mod error;
mod id;
pub mod log;
mod memory;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]
mod server;
mod session;
mod store;
#[cfg(any(
    feature = "tower-sessions",
    feature = "tower-sessions-014",
    feature = "actix-session"
))]
pub mod web;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dir::{DirOptions, DirStore};
pub use error::{Error, Result};
pub use id::{MAX_ID_LEN, SessionId};
pub use log::{
    CheckReport, CompactStats, LogOptions, LogStore, RecoveryReport, Stats, SyncPolicy, check,
};
pub use memory::{DEFAULT_MAX_SESSION_SIZE, MemoryStore};
#[cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]
pub use server::ClockOffset;
#[cfg(feature = "mysql")]
pub use server::mysql::{MySqlOptions, MySqlStore};
#[cfg(feature = "postgres")]
pub use server::postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "redis")]
pub use server::redis::{RedisOptions, RedisStore};
pub use session::Session;
pub use store::{SessionIter, SessionStore};
