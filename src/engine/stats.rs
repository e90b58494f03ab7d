//! What a `LogStore` reports about itself.

use std::time::SystemTime;

use crate::engine::policy::StorePolicy;

/// A snapshot of a store's size and health, from [`LogStore::stats`](crate::LogStore::stats).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Sessions in the index, including expired ones not yet compacted away.
    pub sessions: u64,
    /// Of those, how many are expired (invisible, dropped at compaction).
    pub expired: u64,
    /// Bytes of the records the index points at.
    pub live_bytes: u64,
    /// Bytes of records in the log (header excluded).
    pub log_bytes: u64,
    /// Size of the file on disk, including space reserved for appends.
    pub file_bytes: u64,
    /// Fraction of `log_bytes` that compaction would reclaim (dead records).
    pub garbage_ratio: f64,
    /// The file's generation: 1 for a new store, +1 per compaction.
    pub generation: u64,
    /// Approximate heap bytes of this process's index.
    pub index_bytes: u64,
    /// What recovery found when this handle opened the store.
    pub recovery: RecoveryReport,
    /// The compaction that wrote the current file, if any.
    pub last_compaction: Option<CompactStats>,
    /// The last failure of a background compaction in any process that has
    /// the store open (recorded in the lock file), if any.
    pub last_background_error: Option<BackgroundError>,
    /// The rules every process applies to this store: its idle limit and
    /// quota (DESIGN.md §9).
    pub policy: StorePolicy,
    /// Whether the store records its policy (false only for a file of an
    /// earlier build, until its next compaction records it: meanwhile each
    /// process applies its own `max_idle`).
    pub policy_recorded: bool,
    /// Bytes of the records of sessions that are not expired: what the
    /// byte quota counts.
    pub used_bytes: u64,
    /// Bytes the space reserve (`<log>.reserve`) holds now: less than
    /// `reserve_target` after a full disk made it give its space back.
    pub reserve_bytes: u64,
    /// The reserve's size when whole (`LogOptions::space_reserve`).
    pub reserve_target: u64,
    /// Bytes free on the store's filesystem, if known.
    pub free_bytes: Option<u64>,
}

/// A background compaction that failed (it is retried later and later).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackgroundError {
    /// When it failed.
    pub at: SystemTime,
    /// The error, as it would have been reported.
    pub message: String,
}

/// What recovery did when a store was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Records replayed.
    pub records: u64,
    /// Of those, records found complete past the committed end and kept
    /// (durable saves whose header update did not reach the disk before a
    /// power loss, or the append of a writer killed before it published).
    pub records_past_committed: u64,
    /// Offset of a torn tail that was cut off (the trace of a crash during
    /// an unsynced append), if any.
    pub torn_tail_offset: Option<u64>,
    /// Bytes cut off with that tail.
    pub torn_tail_bytes: u64,
    /// Leftover temporary files of an interrupted compaction, removed.
    pub removed_temp_files: u32,
    /// When the index was read from the hint file that the last compaction
    /// wrote: the offset it reflected the log up to (only the records after
    /// it were replayed, and counted in `records`).
    pub hint_end: Option<u64>,
    /// Damaged ranges skipped by repair mode, as (offset, length).
    pub repaired_ranges: Vec<(u64, u64)>,
    /// When repair mode found the header damaged: how it read the file
    /// all the same (a flipped bit put back, or the header rebuilt from
    /// the records and the hint).
    pub header_repair: Option<String>,
    /// Where repair mode kept a copy of the damaged file.
    pub damaged_copy: Option<std::path::PathBuf>,
}

/// The result of a compaction.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactStats {
    /// Sessions copied into the new file.
    pub kept: u64,
    /// Sessions dropped because they had expired or were idle too long.
    pub dropped: u64,
    /// Committed bytes of the old file.
    pub bytes_before: u64,
    /// Committed bytes of the new file when it replaced the old one.
    pub bytes_after: u64,
    /// Generation of the new file.
    pub generation: u64,
    /// When the new file was written.
    pub finished: SystemTime,
}
