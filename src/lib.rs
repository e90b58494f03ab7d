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
//!
//! # Cargo features
//!
//! None is on by default; the engine, [`DirStore`], [`MemoryStore`] and
//! [`HashedIds`] need none.
//!
//! | feature | what it adds |
//! |---|---|
//! | `postgres` | `PostgresStore`: PostgreSQL through `tokio-postgres`, driven synchronously |
//! | `mysql` | `MySqlStore`: MySQL and MariaDB through the `mysql` client |
//! | `redis` | `RedisStore`: Redis through the sync `redis` client |
//! | `postgres-tls`, `mysql-tls`, `redis-tls` | TLS (rustls, ring) for that server store; each turns on its store |
//! | `tower-sessions` | `web::TowerStore` for tower-sessions 0.15 (axum), and the conflict-safe extractor `web::SessionUpdate` |
//! | `tower-sessions-014` | `web::TowerStore` also implements tower-sessions-core 0.14's traits (axum-login 0.18) |
//! | `actix-session` | `web::ActixStore` for actix-session 0.11 (actix-web) |
//! | `metrics` | counters, gauges and histograms named `sessionlog_*` through the `metrics` facade (the application installs the recorder); [`Stats::gauges`] names the gauges |
//! | `tracing` | spans (open, recovery, compaction and its phases, repair, server calls) and an event for every background error, through the `tracing` facade; no field holds a session id or data |
//! | `unstable-internals` | the on-disk format and the I/O hook, for this project's own tests, fuzzing and benchmarks: not part of the API, may change in any release |
//!
//! # Design
//!
//! The file format byte by byte, the protocol between processes, what
//! survives which crash, compaction, the threat model, and which test holds
//! each promise: see
//! [DESIGN.md](https://docs.rs/crate/sessionlog/latest/source/DESIGN.md)
//! (in the package and at the root of the repository). The server stores are
//! described in
//! [SERVERS.md](https://docs.rs/crate/sessionlog/latest/source/SERVERS.md).
#![deny(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "sessionlog builds only on Linux: LogStore relies on Linux's memory maps, \
     robust process-shared mutexes, RWF_DSYNC and SEEK_DATA"
);

mod clock;
mod copy;
mod dir;
mod encrypted;
mod engine;
mod error;
mod fs_identity;
mod hashed;
mod id;
mod layout;
mod memory;
mod observe;
mod options;
mod owner;
mod pace;
mod pid;
mod poison;
mod record;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]
mod server;
mod session;
mod stop;
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
pub use copy::{CopyOptions, CopyReport, copy_sessions};
pub use dir::{DirOptions, DirRestoreReport, DirStore};
pub use encrypted::{Encrypted, Keyring, RekeyReport};
pub use engine::{
    BackgroundError, BackupReport, CheckReport, CompactStats, Damage, GaugeReading, LogOptions,
    LogStore, RecordCounts, RecoveryReport, Stats, StorePolicy, TornTail, WhenFull, check,
    check_with,
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
pub use session::{SaveMode, Session, SessionRef};
pub use store::{SessionIter, SessionStore, Touch};

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

#[cfg(test)]
mod tests {
    /// Every feature Cargo.toml documents (a `##` comment above it) is named
    /// in the table of features on the crate's front page, above.
    #[test]
    fn front_page_lists_every_documented_feature() {
        let manifest = include_str!("../Cargo.toml");
        let front_page: String = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .collect();
        let features = manifest
            .split_once("\n[features]\n")
            .map(|(_, rest)| rest.split("\n[").next().unwrap_or(rest))
            .expect("Cargo.toml has a [features] table");
        let mut documented = false;
        let mut checked = 0;
        for line in features.lines() {
            if line.starts_with("##") {
                documented = true;
            } else if let Some((name, _)) = line.split_once(" = ") {
                if documented {
                    let quoted = format!("`{}`", name.trim());
                    assert!(
                        front_page.contains(&quoted),
                        "lib.rs's feature table lacks {quoted}"
                    );
                    checked += 1;
                }
                documented = false;
            } else if !line.starts_with('#') {
                documented = false;
            }
        }
        assert!(checked >= 10, "found only {checked} documented features");
    }
}

/// The README's examples, compiled as doctests (with the web features, which
/// two of them need).
#[cfg(all(doctest, feature = "tower-sessions", feature = "actix-session"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
