//! The space reserve: `<log>.reserve`, a file beside the log whose blocks
//! are allocated ahead (`fallocate`) and given back to the filesystem when
//! the disk is full, so that a delete (a logout), a touch that shortens a
//! deadline and a compaction's start still find room (DESIGN.md §6).
//!
//! A save never uses it: while the reserve is given back, a save that must
//! grow the log is refused unless as much space as the reserve stays free.
//! It is made again when there is room for it twice over: at open, after
//! a compaction, and when a save grows the log.

use std::io;

use crate::engine::file::{self, Site};
use crate::error::{Error, Result};
use crate::trust::{Create, Owner};

/// The reserve's default size: about 40,000 delete records of a typical
/// id, and a compaction's start (a header, the first chunk, a hint).
pub(crate) const DEFAULT_RESERVE: u64 = 4 << 20;

/// The largest reserve an option may ask for.
pub(crate) const MAX_RESERVE: u64 = 1 << 30;

/// `<log>.reserve`.
fn site(log: &Site) -> Site {
    log.sibling(".reserve")
}

/// Bytes free to this user on the store's filesystem, if known
/// (`fstatvfs` of the directory, one system call).
pub(crate) fn free_bytes(log: &Site) -> Option<u64> {
    log.dir.free_bytes()
}

/// Bytes the reserve holds now: 0 if it is missing (or is not a regular
/// file, which is never counted and never written).
pub(crate) fn held(log: &Site) -> u64 {
    match site(log).stat() {
        Ok(Some(f)) if f.is_file => f.len,
        _ => 0,
    }
}

/// Makes the reserve `bytes` long if it is shorter and at least twice what
/// it lacks is free; returns whether it is whole. Best effort: a reserve
/// that cannot be made leaves the store working (`stats` shows it).
pub(crate) fn ensure(log: &Site, owner: Owner, bytes: u64) -> bool {
    if bytes == 0 {
        return true;
    }
    let have = held(log);
    if have >= bytes {
        return true;
    }
    let lack = bytes - have;
    if free_bytes(log).is_none_or(|free| free < lack.saturating_mul(2)) {
        return false;
    }
    let reserve = site(log);
    let Ok(f) = reserve.open(Create::IfMissing, owner) else {
        return false;
    };
    match file::allocate(&f, 0, bytes) {
        Ok(true) => true,
        // A filesystem without `fallocate` only extends the file: that
        // reserves nothing, so keep no file that would pretend to.
        Ok(false) | Err(_) => {
            let _ = reserve.remove();
            false
        }
    }
}

/// Gives the reserve's space back to the filesystem; returns how many
/// bytes it held (0 if there was none).
pub(crate) fn release(log: &Site) -> u64 {
    let n = held(log);
    if n > 0 && site(log).remove().is_ok() {
        n
    } else {
        0
    }
}

/// Whether `e` says the disk (or the user's disk quota) is full.
pub(crate) fn is_full(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
}

/// The refusal of a save that would eat into the reserve.
pub(crate) fn refusal(log: &Site, free: u64, reserve: u64) -> Error {
    Error::io(
        &log.path,
        "grow file",
        io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "{free} bytes free, of which {reserve} are kept for deletes and compaction \
                 (the space reserve); a compaction or `sessionlog expire` may free space"
            ),
        ),
    )
}

/// Checks a reserve size given as an option.
pub(crate) fn validate(bytes: u64) -> Result<()> {
    if bytes > MAX_RESERVE {
        return Err(Error::InvalidOption(format!(
            "space_reserve must be at most {MAX_RESERVE} bytes, not {bytes}"
        )));
    }
    Ok(())
}
