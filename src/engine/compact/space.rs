//! The space check a compaction makes before it starts: an estimate of
//! what it will write, weighed against the disk's free space and the
//! space reserve.

use std::io;

use crate::engine::file::{Site, View};
use crate::engine::format::{self, HEADER_SIZE};
use crate::engine::reserve;
use crate::error::{Error, Result};
use crate::pace::Pace;

/// What the new file and its hint will take for the sessions at `offsets`
/// (latest records in `view`) that the copy keeps: those neither expired
/// nor idle, each as one put (a touched session's put, with its data).
/// Sessions that will be dropped take nothing: a disk filled by sessions
/// that then expired must still let the compaction that frees it start.
/// Reads only record headers; an unreadable one counts as kept (the copy
/// reports it).
pub(super) fn copy_estimate(
    view: &View<'_>,
    offsets: &[u64],
    dead: impl Fn(u64, u64) -> bool,
) -> u64 {
    let mut bytes = HEADER_SIZE;
    let mut kept = 0u64;
    let mut pace = Pace::new();
    for (i, &off) in offsets.iter().enumerate() {
        pace.at(i);
        let rec = view.tail(off);
        if format::peek_times(rec).is_some_and(|(modified, expires)| dead(modified, expires)) {
            continue;
        }
        let put = format::peek_touch_target(rec).map_or(rec, |p| view.tail(p));
        bytes = bytes.saturating_add(format::peek_len(put).unwrap_or(0) as u64);
        kept += 1;
    }
    // The hint: a 96-byte frame and 16 bytes a slot, at most 3/4 full.
    let slots = (kept.saturating_mul(4) / 3 + 1).next_power_of_two().max(16);
    bytes
        .saturating_add(96)
        .saturating_add(slots.saturating_mul(16))
}

/// Checks that the compaction fits (`check_free_space`), giving the space
/// reserve back if the disk has room with it and not without: a disk
/// filled by sessions that then expired, to the last byte, still lets the
/// compaction that frees it start.
pub(super) fn make_room(log: &Site, estimate: u64) -> Result<()> {
    let refused = match check_free_space(log, estimate) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let held = reserve::held(log);
    let free = reserve::free_bytes(log).unwrap_or(0);
    if held == 0 || free.saturating_add(held) < estimate.saturating_add(estimate / 10) {
        return Err(refused);
    }
    reserve::release(log);
    Ok(())
}

/// Refuses to start a compaction that would fill the disk: the new file
/// and its hint need about `estimate` bytes (what will be copied), and a
/// tenth more is left free besides, for what is appended meanwhile (the
/// margin scales with the copy: a fixed one refused to free a small disk
/// that expired sessions had filled). `fstatvfs` of the directory is one
/// system call.
fn check_free_space(log: &Site, estimate: u64) -> Result<()> {
    let dir = log.dir.path();
    let Some(free) = log.dir.free_bytes() else {
        return Ok(()); // no figure: let the writes report a full disk
    };
    let need = estimate.saturating_add(estimate / 10);
    if free < need {
        return Err(Error::io(
            dir,
            "compact",
            io::Error::new(
                io::ErrorKind::StorageFull,
                format!("{free} bytes free, a compaction needs about {need}; not started"),
            ),
        ));
    }
    Ok(())
}
