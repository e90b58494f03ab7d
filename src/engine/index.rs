//! The in-memory index: session id to the offset of the session's latest
//! record (a `Put`, or a `Touch` that points at its `Put`).
//!
//! The index does not keep ids. It is one open-addressing table of 16-byte
//! slots, each a 64-bit keyed hash of an id and the offset of its latest
//! record; the id itself is compared against the record in the file. A
//! lookup reads one cache line of the table (linear probing, at most three
//! quarters full) and then the record: hashbrown, used before, kept its
//! control bytes and its slots in two arrays, two cache misses where this
//! takes one. Ids whose hashes collide simply occupy two slots with the same
//! hash, told apart by the ids in their records. Removal shifts the
//! following slots back (no tombstones), and growth rehashes from the
//! stored hashes without reading the file.

use std::hash::BuildHasher;

use crate::engine::format::{self, Kind, RecordRef};

/// The bytes of the records at and after an offset: a mapped log file, or
/// a file being written by compaction.
pub(crate) trait Records {
    /// Bytes from `offset` to the end of what is readable.
    fn from(&self, offset: u64) -> &[u8];
}

/// One slot. `offset` 0 marks an empty slot: no record starts at 0 (the
/// file header is there).
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    hash: u64,
    offset: u64,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.offset == 0
    }
}

/// Id → offset of the session's latest record, plus live-byte accounting.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// A power of two long (or empty), at most three quarters full.
    slots: Vec<Slot>,
    len: usize,
    keys: foldhash::fast::RandomState,
    live_bytes: u64,
    /// Tests only: every id hashes alike.
    #[cfg(test)]
    all_collide: bool,
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

/// Slots for `n` entries at most three quarters full.
fn capacity_for(n: usize) -> usize {
    (n.saturating_mul(4) / 3 + 1).next_power_of_two().max(16)
}

impl Index {
    fn hash(&self, id: &[u8]) -> u64 {
        #[cfg(test)]
        if self.all_collide {
            return 42;
        }
        self.keys.hash_one(id)
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot where `hash` would be placed if nothing were in the way.
    fn home(&self, hash: u64) -> usize {
        // The high bits first: foldhash mixes them best.
        hash.rotate_left(32) as usize & self.mask()
    }

    /// The slot holding `id`, if any.
    fn find(&self, src: &dyn Records, id: &[u8], h: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.home(h);
        loop {
            let s = self.slots[i];
            if s.is_empty() {
                return None;
            }
            if s.hash == h && id_at(src, s.offset) == Some(id) {
                return Some(i);
            }
            i = (i + 1) & self.mask();
        }
    }

    /// Places an entry known to be absent.
    fn place(&mut self, slot: Slot) {
        let mut i = self.home(slot.hash);
        while !self.slots[i].is_empty() {
            i = (i + 1) & self.mask();
        }
        self.slots[i] = slot;
    }

    /// Rebuilds the table with `cap` slots, from the stored hashes.
    fn resize(&mut self, cap: usize) {
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); cap]);
        for s in old.into_iter().filter(|s| !s.is_empty()) {
            self.place(s);
        }
    }

    /// Sizes the table for about `n` sessions.
    pub fn reserve(&mut self, n: usize) {
        let cap = capacity_for(self.len + n);
        if cap > self.slots.len() {
            self.resize(cap);
        }
    }

    /// Offset of the latest record of `id`.
    pub fn get(&self, src: &dyn Records, id: &[u8]) -> Option<u64> {
        let i = self.find(src, id, self.hash(id))?;
        Some(self.slots[i].offset)
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the records the index keeps alive.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Offsets of every session's latest record.
    pub fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.offset)
    }

    /// Points `id` at the record at `offset`, which must already be in
    /// `src` (and is never 0). Returns the previous offset.
    pub fn insert(&mut self, src: &dyn Records, id: &[u8], offset: u64) -> Option<u64> {
        debug_assert!(offset != 0);
        let h = self.hash(id);
        let old = match self.find(src, id, h) {
            Some(i) => Some(std::mem::replace(&mut self.slots[i].offset, offset)),
            None => {
                if capacity_for(self.len + 1) > self.slots.len() {
                    self.resize(capacity_for(self.len + 1));
                }
                self.place(Slot { hash: h, offset });
                self.len += 1;
                None
            }
        };
        if let Some(o) = old {
            self.live_bytes -= live_len(src, o).min(self.live_bytes);
        }
        self.live_bytes += live_len(src, offset);
        old
    }

    /// Removes `id`, returning the offset it pointed at.
    pub fn remove(&mut self, src: &dyn Records, id: &[u8]) -> Option<u64> {
        let mut i = self.find(src, id, self.hash(id))?;
        let old = self.slots[i].offset;
        // Shift back the slots after the hole that may move into it: those
        // whose home is not cyclically within (hole, their place].
        let mask = self.mask();
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s.is_empty() {
                break;
            }
            let k = self.home(s.hash);
            let stays = if i <= j {
                i < k && k <= j
            } else {
                i < k || k <= j
            };
            if !stays {
                self.slots[i] = s;
                i = j;
            }
        }
        self.slots[i] = Slot::default();
        self.len -= 1;
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

    /// Heap bytes the index uses.
    pub fn heap_bytes(&self) -> u64 {
        (self.slots.capacity() * size_of::<Slot>()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::{RecordFields, encode_record};

    struct Buf(Vec<u8>);
    impl Records for Buf {
        fn from(&self, offset: u64) -> &[u8] {
            &self.0[offset as usize..]
        }
    }

    fn put(buf: &mut Buf, id: &str) -> u64 {
        if buf.0.is_empty() {
            // No record starts at 0 in a log (the header is there).
            buf.0.resize(8, 0);
        }
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
        assert_eq!(ix.len(), 4);
        for (id, &off) in ids.iter().zip(&offs) {
            assert_eq!(ix.get(&buf, id.as_bytes()), Some(off), "{id}");
        }
        assert_eq!(ix.get(&buf, b"epsilon"), None);
        // removing the first of the run shifts the others back
        assert_eq!(ix.remove(&buf, b"alpha"), Some(offs[0]));
        for (id, &off) in ids.iter().zip(&offs).skip(1) {
            assert_eq!(ix.get(&buf, id.as_bytes()), Some(off), "{id}");
        }
        assert_eq!(ix.get(&buf, b"alpha"), None);
        assert_eq!(ix.remove(&buf, b"gamma"), Some(offs[2]));
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.get(&buf, b"delta"), Some(offs[3]));
        assert_eq!(ix.get(&buf, b"beta"), Some(offs[1]));
    }

    /// Against a HashMap, through growth, removals that shift runs back
    /// (including runs that wrap around the end of the table) and
    /// re-insertions.
    #[test]
    fn matches_a_hashmap_through_growth_and_removals() {
        let mut buf = Buf(Vec::new());
        let mut ix = Index::default();
        let mut model = std::collections::HashMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = format!("id{}", x % 3000);
            if x.is_multiple_of(5) {
                assert_eq!(ix.remove(&buf, id.as_bytes()), model.remove(&id), "{step}");
            } else {
                let off = put(&mut buf, &id);
                assert_eq!(ix.insert(&buf, id.as_bytes(), off), model.insert(id, off));
            }
            assert_eq!(ix.len(), model.len());
        }
        for (id, &off) in &model {
            assert_eq!(ix.get(&buf, id.as_bytes()), Some(off));
        }
        let mut got: Vec<u64> = ix.offsets().collect();
        let mut want: Vec<u64> = model.values().copied().collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
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
