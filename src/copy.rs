//! [`copy_sessions`]: every live session of one store written into another,
//! keeping what lets its user stay logged in.

use std::time::SystemTime;

use crate::error::Result;
use crate::store::SessionStore;

/// The progress callback: called with the counts so far.
type Progress<'a> = Box<dyn FnMut(&CopyReport) + 'a>;

/// How [`copy_sessions`] treats ids already live at the destination, and
/// whom it tells about its progress.
#[derive(Default)]
pub struct CopyOptions<'a> {
    overwrite: bool,
    progress: Option<Progress<'a>>,
}

impl std::fmt::Debug for CopyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("overwrite", &self.overwrite)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl<'a> CopyOptions<'a> {
    /// The defaults: a session already live at the destination is left
    /// alone (and counted as skipped); no progress callback.
    pub fn new() -> CopyOptions<'a> {
        CopyOptions::default()
    }

    /// Replace sessions already live at the destination with the source's.
    pub fn overwrite(mut self, yes: bool) -> CopyOptions<'a> {
        self.overwrite = yes;
        self
    }

    /// Called after each session looked at, with the counts so far.
    pub fn progress(mut self, f: impl FnMut(&CopyReport) + 'a) -> CopyOptions<'a> {
        self.progress = Some(Box::new(f));
        self
    }
}

/// What [`copy_sessions`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Sessions written to the destination.
    pub copied: u64,
    /// Sessions left alone because their id was already live at the
    /// destination (only without `overwrite`).
    pub skipped: u64,
    /// Sessions the source listed whose deadline had passed by the time
    /// they were to be written: not copied.
    pub expired: u64,
}

/// Copies every live session of `from` into `to`, one at a time, with
/// [`SessionStore::copy_in`]: each keeps its id, data, absolute deadline
/// and owner, so nobody is logged out by a move. A `LogStore` destination
/// also keeps each session's modification time (its idle clock) and
/// version; the other backends stamp their own time and start their own
/// version count, so an idle timeout restarts from the copy (a session
/// lives longer, never shorter). A destination that does not keep owners
/// (the `LogStore` today) drops them.
///
/// Sessions go as `iter_sessions` lists them: from a `HashedIds` store,
/// under their stored ids (digests), which a `HashedIds` destination keeps
/// as they are; from an `Encrypted` store, decrypted, which an `Encrypted`
/// destination encrypts under its current key.
///
/// Run it before the application writes to the destination: a session
/// saved at the source after it was read is not copied again. Returns
/// the counts; stops at the first error, with the sessions copied so far
/// left in place (running it again skips them).
pub fn copy_sessions(
    from: &dyn SessionStore,
    to: &dyn SessionStore,
    options: &mut CopyOptions<'_>,
) -> Result<CopyReport> {
    copy_iter(from.iter_sessions()?, to, options)
}

/// [`copy_sessions`]'s loop over any source of sessions.
pub(crate) fn copy_iter(
    sessions: impl IntoIterator<Item = Result<crate::Session>>,
    to: &dyn SessionStore,
    options: &mut CopyOptions<'_>,
) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    for session in sessions {
        let session = session?;
        if session.expires.is_some_and(|t| t <= SystemTime::now()) {
            report.expired += 1;
        } else if to.copy_in(&session, options.overwrite)? {
            report.copied += 1;
        } else {
            report.skipped += 1;
        }
        if let Some(f) = options.progress.as_mut() {
            f(&report);
        }
    }
    Ok(report)
}
