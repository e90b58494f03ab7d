//! The new file's hint, written before the swap and announced to other
//! processes so that they read it ahead (see `pending.rs`) instead of
//! after the swap with a request waiting.

use std::time::{Duration, Instant};

use crate::engine::format::{self, StaticHeader};
use crate::engine::hint;
use crate::error::Result;

use super::Handles;
use super::copy::Copy;

/// How long, per byte of hint, a compaction waits after announcing its
/// hint before it swaps, so that other processes read the hint ahead
/// instead of with a request waiting (DESIGN.md §8 has the reading rate
/// this allows for): 8 ns a byte, 256 ms for a million sessions, 2.6 s
/// for ten million.
/// It catches up meanwhile, so the swap's own work stays small.
const READ_AHEAD_NS_PER_BYTE: u64 = 8;
/// The wait is skipped when shorter than a step, and capped.
const LEAD_STEP: Duration = Duration::from_millis(5);
const LEAD_MAX: Duration = Duration::from_secs(5);

/// The time other processes are given to read the announced hint.
pub(super) struct Lead {
    at: Instant,
    lead: Duration,
}

/// Writes the hint of what `c` copied so far (synced: the hint may only
/// stand for synced records) for the new file of this `generation`,
/// created at `now`, and invites other processes to read it. Returns the
/// time to give them, if worth waiting for. A compaction does not need a
/// hint: if writing it fails, there is none, and others replay.
pub(super) fn announce(h: &Handles<'_>, c: &Copy<'_>, generation: u64, now: u64) -> Option<Lead> {
    let header = StaticHeader {
        version: format::FORMAT_VERSION,
        generation,
        created_ms: now,
        compact_kept: 0,
        compact_dropped: 0,
        compact_source_bytes: 0,
        compact_result_bytes: 0,
        salt: c.w.salt,
    };
    if hint::write(
        h.site,
        &header,
        c.w.out.pos,
        &c.w.index,
        h.hooks,
        h.follow.lock.owner,
    )
    .is_err()
    {
        hint::remove(h.site);
        return None;
    }
    // Invite other processes to read the hint now, before the swap,
    // rather than after it with a request waiting.
    let token = format::pending_token(header.generation, header.salt);
    h.follow.pending.mark_seen(token);
    c.src.set_pending(token);
    let bytes = (c.w.index.slot_count() as u64).saturating_mul(16);
    let lead = Duration::from_nanos(bytes.saturating_mul(READ_AHEAD_NS_PER_BYTE)).min(LEAD_MAX);
    (lead >= LEAD_STEP).then(|| Lead {
        at: Instant::now(),
        lead,
    })
}

impl Lead {
    /// Waits out the lead, catching up meanwhile: what is copied is
    /// written out at once, for other processes to replay ahead of the
    /// swap.
    pub fn wait(self, h: &Handles<'_>, c: &mut Copy<'_>) -> Result<()> {
        while let Some(left) = Duration::checked_sub(self.lead, Instant::elapsed(&self.at)) {
            std::thread::sleep(left.min(LEAD_STEP));
            c.catch_up(h)?;
            c.w.out.flush()?;
        }
        Ok(())
    }
}
