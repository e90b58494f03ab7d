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

/// One figure of [`Stats`] as a gauge: what `sessionlog stats --format
/// prometheus` prints and what the `metrics` feature sets, under the same
/// name.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct GaugeReading {
    /// The metric's name (`sessionlog_*`, Prometheus style: base units,
    /// `_bytes`, `_ratio`, `_seconds`).
    pub name: &'static str,
    /// One line saying what it measures.
    pub help: &'static str,
    /// Its value.
    pub value: f64,
}

impl Stats {
    /// The figures as gauges: sessions, bytes, garbage ratio, the space
    /// reserve, and the quota's limits and use when the store has one.
    /// The names are stable; a gauge that does not apply (a quota the
    /// store does not have, free space the system did not report) is left
    /// out.
    pub fn gauges(&self) -> Vec<GaugeReading> {
        let g = |name, help, value: f64| GaugeReading { name, help, value };
        let live = self.sessions.saturating_sub(self.expired);
        let mut out = vec![
            g(
                "sessionlog_live_sessions",
                "Sessions that are live (not expired).",
                live as f64,
            ),
            g(
                "sessionlog_expired_sessions",
                "Expired sessions still in the log, dropped at the next compaction.",
                self.expired as f64,
            ),
            g(
                "sessionlog_used_bytes",
                "Bytes of the live sessions' records (what the byte quota counts).",
                self.used_bytes as f64,
            ),
            g(
                "sessionlog_log_bytes",
                "Bytes of records in the log, live or not.",
                self.log_bytes as f64,
            ),
            g(
                "sessionlog_file_bytes",
                "Size of the log file, with the space kept for appends.",
                self.file_bytes as f64,
            ),
            g(
                "sessionlog_garbage_ratio",
                "Share of the log's bytes that compaction would reclaim.",
                self.garbage_ratio,
            ),
            g(
                "sessionlog_generation",
                "The log file's generation: 1 for a new store, +1 per compaction.",
                self.generation as f64,
            ),
            g(
                "sessionlog_index_bytes",
                "Approximate heap bytes of this process's index.",
                self.index_bytes as f64,
            ),
            g(
                "sessionlog_reserve_bytes",
                "Bytes the space reserve holds now.",
                self.reserve_bytes as f64,
            ),
            g(
                "sessionlog_reserve_target_bytes",
                "The space reserve's size when whole.",
                self.reserve_target as f64,
            ),
        ];
        if let Some(free) = self.free_bytes {
            out.push(g(
                "sessionlog_free_bytes",
                "Bytes free on the store's filesystem.",
                free as f64,
            ));
        }
        if let Some(max) = self.policy.max_sessions {
            out.push(g(
                "sessionlog_quota_max_sessions",
                "The store's quota of live sessions.",
                max as f64,
            ));
            out.push(g(
                "sessionlog_quota_sessions_ratio",
                "Share of the session quota in use.",
                live as f64 / max.max(1) as f64,
            ));
        }
        if let Some(max) = self.policy.max_bytes {
            out.push(g(
                "sessionlog_quota_max_bytes",
                "The store's quota of bytes of live sessions' records.",
                max as f64,
            ));
            out.push(g(
                "sessionlog_quota_bytes_ratio",
                "Share of the byte quota in use.",
                self.used_bytes as f64 / max.max(1) as f64,
            ));
        }
        if let Some(c) = &self.last_compaction {
            let at = c
                .finished
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            out.push(g(
                "sessionlog_last_compaction_timestamp_seconds",
                "When the compaction that wrote the current file finished (Unix time).",
                at,
            ));
        }
        out
    }
}
