//! The log-structured engine, [`LogStore`], in layers. Data flows one way,
//! down this list; no module imports one above it.
//!
//! - `store`: the `LogStore` facade and its `SessionStore` implementation;
//! - `backup`: an online copy of the store as of one instant
//!   (`LogStore::backup_to`);
//! - `write`: the write path (save, restore, touch, delete);
//! - `quota`: the quota check of a save;
//! - `background`: the thread that syncs on an interval and compacts, and
//!   the one that writes back behind the writers;
//! - `shared`: what a handle's threads share (`Inner`), and the handles a
//!   compaction gets from it;
//! - `compact`: rewriting live sessions into a new file (and expiry),
//!   and repair;
//! - `follow`: catching up with other processes' appends and swaps;
//! - `commit`: group commit (making appends durable);
//! - `writeback`: starting writeback of what writers appended, behind them;
//! - `pending`: reading ahead the hint of another process's compaction;
//! - `recovery`: replaying the log on open, cutting a torn tail;
//! - `salvage`: what repair reads from a damaged header;
//! - `read`: decoding a session's latest record from the map;
//! - `state`: a process's view (the mapped file and its index);
//! - `hint`: the index snapshot a compaction writes beside its file;
//! - `lock`: the lock file, which processes share to take turns writing;
//! - `reserve`: the space kept for deletes and compaction on a full disk;
//! - `file`: the log file, its memory map and appends, and `Site`, a file
//!   of the store reached by name only through the store's directory
//!   descriptor (`crate::store_dir`, opened once per handle);
//! - `index`: the in-memory map from id to record (built from any source
//!   of records: `file`'s views are one), and beside it `owners`, from
//!   owner to the ids' hashes;
//! - `format`: bytes of the header, and records (depends on nothing);
//!
//! beside them `options`, `policy` (the rules a store records), `stats`,
//! `hook` (the I/O seam) and `check` (the offline verifier, which reads the
//! file with `format` and `file`). `.ci/layers.sh` checks this order in CI.

mod background;
mod backup;
mod check;
mod commit;
pub(crate) mod compact;
mod file;
mod follow;
pub mod format;
pub(crate) mod hint;
pub mod hook;
mod index;
mod lock;
mod options;
mod owners;
mod pending;
mod policy;
mod quota;
mod read;
mod recovery;
mod reserve;
mod salvage;
mod shared;
mod state;
mod stats;
mod store;
mod write;
mod writeback;

pub use backup::BackupReport;
pub use check::{CheckReport, Damage, RecordCounts, TornTail, check, check_with};
pub use options::LogOptions;
pub use policy::{StorePolicy, WhenFull};
pub use stats::{BackgroundError, CompactStats, GaugeReading, RecoveryReport, Stats};
pub use store::LogStore;
