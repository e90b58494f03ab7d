//! The in-memory index: session id to the offset of the session's latest
//! record (a `Put`, or a `Touch` that points at its `Put`).
//!
//! The index does not keep ids. Its table maps a 64-bit keyed hash of the
//! id to an offset, 16 bytes a slot; the id is compared against the record
//! in the file. Ids whose hash collides with a different id's (about once
//! in 2^64/n lookups, with a per-process random key) go to a small side
//! table keyed by the id itself. Invariant: every side entry's hash is also
//! a key of the main table.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use crate::log::format::{self, Kind, RecordRef};

/// The bytes of the records at and after an offset: a mapped log file, or
/// a file being written by compaction.
pub(crate) trait Records {
    /// Bytes from `offset` to the end of what is readable.
    fn from(&self, offset: u64) -> &[u8];
}

/// A hasher for keys that already are hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Id → offset of the session's latest record, plus live-byte accounting.
#[derive(Debug, Default)]
pub(crate) struct Index {
    table: HashMap<u64, u64, BuildHasherDefault<PassThrough>>,
    side: HashMap<Box<[u8]>, u64>,
    keys: foldhash::fast::RandomState,
    live_bytes: u64,
    /// Tests only: every id hashes alike, so every second id collides.
    #[cfg(test)]
    all_collide: bool,
}

impl std::fmt::Debug for PassThrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassThrough")
    }
}

fn id_at(src: &dyn Records, offset: u64) -> Option<&[u8]> {
    format::peek_id(src.from(offset))
}

/// Bytes a session's latest record at `offset` keeps alive: the record,
/// plus its put when it is a touch. Read without checking CRCs (the
/// accounting only steers compaction).
fn live_len(src: &dyn Records, offset: u64) -> u64 {
    let b = src.from(offset);
    let own = format::peek_len(b).unwrap_or(0) as u64;
    match format::peek_touch_target(b) {
        Some(put) => own + format::peek_len(src.from(put)).unwrap_or(0) as u64,
        None => own,
    }
}

impl Index {
    fn hash(&self, id: &[u8]) -> u64 {
        #[cfg(test)]
        if self.all_collide {
            return 42;
        }
        self.keys.hash_one(id)
    }

    /// Sizes the table for about `n` sessions.
    pub fn reserve(&mut self, n: usize) {
        self.table.reserve(n);
    }

    /// Offset of the latest record of `id`.
    pub fn get(&self, src: &dyn Records, id: &[u8]) -> Option<u64> {
        let off = *self.table.get(&self.hash(id))?;
        if id_at(src, off) == Some(id) {
            return Some(off);
        }
        self.side.get(id).copied()
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.table.len() + self.side.len()
    }

    /// Bytes of the records the index keeps alive.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Offsets of every session's latest record.
    pub fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.table.values().chain(self.side.values()).copied()
    }

    /// Points `id` at the record at `offset`, which must already be in
    /// `src`. Returns the previous offset.
    pub fn insert(&mut self, src: &dyn Records, id: &[u8], offset: u64) -> Option<u64> {
        let h = self.hash(id);
        let old = match self.table.entry(h) {
            Entry::Vacant(slot) => {
                slot.insert(offset);
                None
            }
            Entry::Occupied(mut slot) if id_at(src, *slot.get()) == Some(id) => {
                Some(slot.insert(offset))
            }
            Entry::Occupied(_) => self.side.insert(id.into(), offset),
        };
        if let Some(o) = old {
            self.live_bytes -= live_len(src, o).min(self.live_bytes);
        }
        self.live_bytes += live_len(src, offset);
        old
    }

    /// Removes `id`, returning the offset it pointed at.
    pub fn remove(&mut self, src: &dyn Records, id: &[u8]) -> Option<u64> {
        let h = self.hash(id);
        let old = match self.table.get(&h) {
            Some(&off) if id_at(src, off) == Some(id) => {
                self.table.remove(&h);
                // Keep the invariant: promote a side entry with this hash.
                let promote = self.side.keys().find(|k| self.hash(k) == h).cloned();
                if let Some(k) = promote
                    && let Some(v) = self.side.remove(&k)
                {
                    self.table.insert(h, v);
                }
                Some(off)
            }
            Some(_) => self.side.remove(id),
            None => None,
        }?;
        self.live_bytes -= live_len(src, old).min(self.live_bytes);
        Some(old)
    }

    /// Applies one decoded record found at `offset` of `src`.
    pub fn apply(&mut self, src: &dyn Records, offset: u64, rec: &RecordRef<'_>) {
        match rec.kind {
            Kind::Put => {
                self.insert(src, rec.id, offset);
            }
            Kind::Touch => {
                if self.get(src, rec.id).is_some() {
                    self.insert(src, rec.id, offset);
                }
            }
            Kind::Delete => {
                self.remove(src, rec.id);
            }
        }
    }

    /// Heap bytes the index uses (hashbrown: one control byte per slot).
    pub fn heap_bytes(&self) -> u64 {
        let slot = (size_of::<(u64, u64)>() + 1) as u64;
        let side: u64 = self.side.keys().map(|k| k.len() as u64 + 40).sum();
        self.table.capacity() as u64 * slot + side
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::{RecordFields, encode_record};

    struct Buf(Vec<u8>);
    impl Records for Buf {
        fn from(&self, offset: u64) -> &[u8] {
            &self.0[offset as usize..]
        }
    }

    fn put(buf: &mut Buf, id: &str) -> u64 {
        let off = buf.0.len() as u64;
        encode_record(
            &mut buf.0,
            &RecordFields {
                kind: Kind::Put,
                id: id.as_bytes(),
                data: b"data",
                version: 1,
                modified_ms: 1,
                expires_ms: 0,
            },
        );
        off
    }

    #[test]
    fn colliding_hashes_are_told_apart_by_the_stored_id() {
        let mut buf = Buf(Vec::new());
        let ids = ["alpha", "beta", "gamma", "delta"];
        let offs: Vec<u64> = ids.iter().map(|id| put(&mut buf, id)).collect();
        let mut ix = Index {
            all_collide: true,
            ..Index::default()
        };
        for (id, &off) in ids.iter().zip(&offs) {
            assert_eq!(ix.insert(&buf, id.as_bytes(), off), None);
        }
        assert_eq!((ix.len(), ix.table.len(), ix.side.len()), (4, 1, 3));
        for (id, &off) in ids.iter().zip(&offs) {
            assert_eq!(ix.get(&buf, id.as_bytes()), Some(off), "{id}");
        }
        assert_eq!(ix.get(&buf, b"epsilon"), None);
        // removing the one in the main table promotes a colliding one
        assert_eq!(ix.remove(&buf, b"alpha"), Some(offs[0]));
        assert_eq!((ix.table.len(), ix.side.len()), (1, 2));
        for (id, &off) in ids.iter().zip(&offs).skip(1) {
            assert_eq!(ix.get(&buf, id.as_bytes()), Some(off), "{id}");
        }
        assert_eq!(ix.get(&buf, b"alpha"), None);
        assert_eq!(ix.remove(&buf, b"gamma"), Some(offs[2]));
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn live_bytes_follow_inserts_and_removes() {
        let mut buf = Buf(Vec::new());
        let a1 = put(&mut buf, "a");
        let a2 = put(&mut buf, "a");
        let mut ix = Index::default();
        ix.insert(&buf, b"a", a1);
        let one = ix.live_bytes();
        assert!(one > 0);
        assert_eq!(ix.insert(&buf, b"a", a2), Some(a1));
        assert_eq!(ix.live_bytes(), one);
        assert_eq!(ix.remove(&buf, b"a"), Some(a2));
        assert_eq!((ix.live_bytes(), ix.len()), (0, 0));
    }
}
