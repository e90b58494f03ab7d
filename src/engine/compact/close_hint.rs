//! The hint a close writes, so that reopening a log that grew by
//! overwrites since its compaction costs what is live, not what was
//! written.

use crate::engine::format::HEADER_SIZE;
use crate::engine::hint;
use crate::engine::state::State;
use crate::error::Result;

use super::Handles;
use super::temp::TempFile;

/// A hint written on close must save the next open the replay of at least
/// this many bytes (and an eighth of the log).
const CLOSE_HINT_MIN: u64 = 16 << 20;

/// Whether a close of a log applied up to offset `applied`, whose hint
/// reflects it up to `covered`, is worth a new hint: the next open would
/// replay at least 16 MiB (`CLOSE_HINT_MIN`) and an eighth of the log.
pub fn close_writes_hint(applied: u64, covered: u64) -> bool {
    applied.saturating_sub(covered) >= CLOSE_HINT_MIN.max(applied / 8)
}

/// On close: writes a hint for the current file if the next open would
/// otherwise replay much of it (a log that grew by overwrites since its
/// compaction), so that reopening costs what is live, not what was
/// written. Skipped, returning false, when a compaction runs (it writes
/// its own), when records past the synced end exist (a hint may only
/// stand for synced records), or when the existing hint covers nearly
/// all of the file.
pub(crate) fn hint_on_close(h: &Handles<'_>) -> Result<bool> {
    let owner = h.follow.lock.owner;
    let worth = |st: &State| {
        let covered = hint::covered(h.site, &st.file.header, owner).unwrap_or(HEADER_SIZE);
        close_writes_hint(st.applied, covered)
    };
    // Most closes stop here, touching no file.
    if !worth(&h.state.read()) {
        return Ok(false);
    }
    let Some(_local) = h.compacting.try_lock() else {
        return Ok(false);
    };
    let Some(tmp) = TempFile::try_acquire(h.site, owner, h.hooks)? else {
        return Ok(false);
    };
    // Holding the compaction's file: the view, followed to the current
    // file, stays current while the hint is written.
    let written = (|| {
        let st = h.follow.fresh()?;
        if st.file.synced() != Some(st.applied) || !worth(&st) {
            return Ok(false);
        }
        hint::write(
            h.site,
            &st.file.header,
            st.applied,
            &st.index,
            h.hooks,
            owner,
        )?;
        Ok(true)
    })();
    let _ = tmp.remove(h.hooks);
    written
}
