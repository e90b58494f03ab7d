//! DirStore's quota (`DirOptions::max_sessions`, `max_bytes`): checked by
//! every save under the directory's lock, by a walk of the directory.
//! Expired sessions never count; the walk removes those it finds, which
//! gives their room back at once (DirStore has no compaction).

use crate::error::{Error, Result};
use crate::id::SessionId;

use super::file::{Stamp, encode_file, file_name, is_session_name};
use super::{DirStore, WriteState};

impl DirStore {
    /// Refuses (`Error::QuotaExceeded`) a save of `id` with `data` and
    /// `stamp` that would take the store past its quota. A stat of each
    /// session file first; only if that is over, each file is read, and
    /// expired ones are removed.
    pub(super) fn check_quota(
        &self,
        state: &mut WriteState,
        id: &SessionId,
        data: &[u8],
        stamp: Stamp,
        now: u64,
    ) -> Result<()> {
        if self.max_sessions.is_none() && self.max_bytes.is_none() {
            return Ok(());
        }
        let own = file_name(id);
        let new_len = encode_file(id, data, stamp, None).len() as u64;
        let over = |n: u64, bytes: u64| -> Option<(&'static str, u64, u64)> {
            if let Some(max) = self.max_sessions.filter(|&m| n > m) {
                return Some(("sessions", max, n));
            }
            self.max_bytes
                .filter(|&m| bytes > m)
                .map(|max| ("bytes", max, bytes))
        };
        // Every other session file, live or not: an upper bound.
        let mut others = Vec::new();
        let (mut n, mut bytes) = (1u64, new_len);
        for name in self.dir.names()? {
            let name = name?;
            if name == own || !is_session_name(&name) {
                continue;
            }
            let len = self.dir.len(&name).unwrap_or(0);
            n += 1;
            bytes += len;
            others.push((name, len));
        }
        if over(n, bytes).is_none() {
            return Ok(());
        }
        let (mut n, mut bytes) = (1u64, new_len);
        for (name, len) in others {
            match self.read_named(&name) {
                Ok(Some((other, s))) if !self.live(&s, now) => {
                    self.unlink(state, &other)?;
                }
                Ok(None) => {}
                // A live or damaged file keeps its room.
                _ => {
                    n += 1;
                    bytes += len;
                }
            }
        }
        match over(n, bytes) {
            None => Ok(()),
            Some((what, limit, used)) => Err(Error::QuotaExceeded {
                path: self.dir.path().to_path_buf(),
                what,
                limit,
                used,
            }),
        }
    }
}
