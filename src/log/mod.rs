//! The log-structured engine, [`LogStore`], in layers:
//!
//! - `format`: bytes of the header and the records (depends on nothing);
//! - `index`: the in-memory map from id to record;
//! - `file`: the log file, its memory map and appends;
//! - `lock`: the lock file, which processes share to take turns writing;
//! - `recovery`: replaying the log on open and following other processes;
//! - `compact`: rewriting live sessions into a new file (and expiry);
//! - `sync`: group commit and the background thread;
//! - `store`: the `LogStore` facade and its `SessionStore` implementation.

pub mod check;
mod compact;
mod file;
pub mod format;
#[doc(hidden)]
pub mod hook;
mod index;
mod lock;
mod options;
mod recovery;
mod stats;
mod store;
mod sync;

pub use check::{CheckReport, check};
pub use options::{LogOptions, SyncPolicy};
pub use stats::{CompactStats, RecoveryReport, Stats};
pub use store::LogStore;
