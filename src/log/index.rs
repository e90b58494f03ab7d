//! The in-memory index: session id to the place and metadata of its live
//! record, enough to answer expiry and version checks without the file.

use std::collections::HashMap;

use crate::id::SessionId;
use crate::log::format::{Kind, RecordRef};

/// Where a session's live `Put` record lies, and its current metadata
/// (`modified_ms` may come from a later `Touch` record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Offset of the `Put` record in the file.
    pub offset: u64,
    /// Padded length of that record.
    pub len: u32,
    /// Session version.
    pub version: u64,
    /// Last save or touch, ms since the epoch.
    pub modified_ms: u64,
    /// Deadline, ms since the epoch, 0 for none.
    pub expires_ms: u64,
}

/// Id → entry, plus the byte accounting compaction decisions need.
#[derive(Debug, Default)]
pub(crate) struct Index {
    map: HashMap<SessionId, Entry>,
    live_bytes: u64,
}

impl Index {
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.map.get(id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes of the records the index points at.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SessionId, &Entry)> {
        self.map.iter()
    }

    /// Applies one decoded record found at `offset`.
    pub fn apply(&mut self, offset: u64, rec: &RecordRef<'_>) {
        // The decoder validated the id, so this only fails on a bug.
        let Ok(id) = std::str::from_utf8(rec.id) else {
            return;
        };
        match rec.kind {
            Kind::Put => {
                let entry = Entry {
                    offset,
                    // Lossless: records are at most MAX_RECORD_DATA + 176 bytes.
                    len: rec.padded_len as u32,
                    version: rec.version,
                    modified_ms: rec.modified_ms,
                    expires_ms: rec.expires_ms,
                };
                self.insert_entry(id, entry);
            }
            Kind::Touch => {
                if let Some(e) = self.map.get_mut(id) {
                    e.modified_ms = rec.modified_ms;
                }
            }
            Kind::Delete => {
                self.remove(id);
            }
        }
    }

    /// Inserts or replaces an entry.
    pub fn insert_entry(&mut self, id: &str, entry: Entry) {
        if let Some(old) = self.map.get_mut(id) {
            self.live_bytes -= u64::from(old.len);
            *old = entry;
        } else if let Some(key) = SessionId::from_stored(id.as_bytes()) {
            self.map.insert(key, entry);
        } else {
            return;
        }
        self.live_bytes += u64::from(entry.len);
    }

    /// Updates the modification time of an existing entry.
    pub fn touch(&mut self, id: &str, modified_ms: u64) {
        if let Some(e) = self.map.get_mut(id) {
            e.modified_ms = modified_ms;
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<Entry> {
        let old = self.map.remove(id)?;
        self.live_bytes -= u64::from(old.len);
        Some(old)
    }

    /// Approximate heap bytes the index uses.
    pub fn heap_bytes(&self) -> u64 {
        let slots = self.map.capacity() as u64;
        let per_slot = (size_of::<SessionId>() + size_of::<Entry>() + 1) as u64;
        let ids: u64 = self.map.keys().map(|k| k.as_str().len() as u64).sum();
        slots * per_slot + ids
    }
}
