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
use crate::engine::owners::{self, OwnerIndex};
use crate::pace::{Pace, let_go};

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

/// The table's storage. A table of a million sessions is 32 MiB: it is
/// allocated zeroed (for so large a block the allocator hands over fresh
/// pages, which the kernel zeroes as they are first touched, where
/// `vec![Slot::default(); n]` wrote every byte first: 3.8 ms of a CPU in one
/// run, ahead of a compaction's copy), and when dropped its pages are let
/// go in pieces, pacing (`crate::pace`), before the allocator unmaps it
/// (that unmap held a CPU for 3 ms on the retire thread).
#[derive(Debug, Default)]
struct Slots(Vec<Slot>);

/// How many slots a hint's checks go through between two looks at the
/// clock (`Pace`).
const PACE_SLOTS: usize = 16 << 10;

/// Tables from this size on let their pages go ahead of the free.
const RELEASE_FROM: usize = 8 << 20;

impl Slots {
    /// `n` empty slots.
    fn empty(n: usize) -> Slots {
        let Ok(layout) = std::alloc::Layout::array::<Slot>(n) else {
            // Too large for any allocation: fails as `vec!` does.
            return Slots(vec![Slot::default(); n]);
        };
        if layout.size() == 0 {
            return Slots(Vec::new());
        }
        // SAFETY: the layout has a non-zero size (checked above).
        let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Slot>();
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `p` was allocated by the global allocator with the layout
        // of `n` slots (which `Vec` frees it with), and its `n` slots are
        // initialised: all-zero bytes are a valid `Slot`, the empty one.
        Slots(unsafe { Vec::from_raw_parts(p, n, n) })
    }
}

impl std::ops::Deref for Slots {
    type Target = Vec<Slot>;

    fn deref(&self) -> &Vec<Slot> {
        &self.0
    }
}

impl std::ops::DerefMut for Slots {
    fn deref_mut(&mut self) -> &mut Vec<Slot> {
        &mut self.0
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        let bytes = self.0.capacity() * size_of::<Slot>();
        if bytes < RELEASE_FROM {
            return;
        }
        let page = rustix::param::page_size();
        let start = self.0.as_mut_ptr().cast::<u8>();
        // Whole pages inside the allocation only.
        let first = start.align_offset(page);
        let end = bytes.saturating_sub(first) / page * page + first;
        // SAFETY: `[first, end)` is whole pages inside this vector's
        // allocation, which it owns and nothing borrows (this is its drop).
        // MADV_DONTNEED leaves them reading as zeros (private memory) or as
        // they were (shared): nothing reads them again before the
        // allocator frees them, and any bookkeeping of the allocator lies
        // outside the bytes it handed over, or is written by the free that
        // follows.
        unsafe { let_go(start.add(first), end - first) };
    }
}

/// Id → offset of the session's latest record, plus live-byte accounting.
#[derive(Debug)]
pub(crate) struct Index {
    /// A power of two long (or empty), at most three quarters full.
    slots: Slots,
    len: usize,
    /// The hash key: random for each index built, and kept with the table
    /// when it is written to a hint file (the table is only valid with the
    /// key that placed its slots).
    seed: u64,
    keys: foldhash::fast::FixedState,
    live_bytes: u64,
    /// Which sessions have which owner (`owners`): kept exact by `insert`
    /// and `remove`, rebuilt by `rebuild_owners` for a table read from a
    /// hint.
    owners: OwnerIndex,
    /// The table came from a hint that records owned sessions but not the
    /// owner index: `owners` is incomplete until `rebuild_owners`.
    owners_stale: bool,
    /// Counts the changes that move slots (removals shift slots back,
    /// growth rehashes): a walk of the slots in parts, with the lock
    /// released between parts, is complete only if it did not change.
    moves: u64,
    /// Tests only: every id hashes alike.
    #[cfg(test)]
    all_collide: bool,
}

impl Default for Index {
    fn default() -> Index {
        let mut b = [0u8; 8];
        let seed = match getrandom::fill(&mut b) {
            Ok(()) => u64::from_le_bytes(b),
            // No random source: a per-process key is the best left.
            Err(_) => {
                std::hash::BuildHasher::hash_one(&foldhash::fast::RandomState::default(), 0u64)
            }
        };
        Index::with_seed(seed)
    }
}

/// An index's table as raw parts, to write into and read from a hint file.
pub(crate) struct RawIndex {
    pub seed: u64,
    pub len: u64,
    pub live_bytes: u64,
    /// `(hash, offset)` per slot, offset 0 for an empty slot.
    pub slots: Vec<(u64, u64)>,
}

/// Why raw parts are not a valid table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawError {
    /// Not a power of two, or too full for its length.
    Shape,
    /// An offset outside `[min, end)` or not aligned.
    Offset(usize),
    /// A slot that a lookup from its hash's home slot would not reach.
    Unreachable(usize),
    /// The number of occupied slots is not `len`.
    Count,
}

fn id_at<R: Records + ?Sized>(src: &R, offset: u64) -> Option<&[u8]> {
    format::peek_id(src.from(offset))
}

/// The owner of the session whose latest record is at `offset` (for a
/// touch: its put's), empty for none. Read without checking CRCs: the
/// record was checked when it was applied, and a listing checks it again.
fn owner_at(src: &dyn Records, offset: u64) -> &[u8] {
    let b = src.from(offset);
    let put = match format::peek_touch_target(b) {
        Some(put) => src.from(put),
        None => b,
    };
    format::peek_owner(put).unwrap_or(&[])
}

/// Whether the record at `offset` is a touch (which never changes the
/// session's owner).
fn is_touch(src: &dyn Records, offset: u64) -> bool {
    src.from(offset).get(format::R_KIND) == Some(&(Kind::Touch as u8))
}

/// Bytes a session's latest record at `offset` keeps alive: the record,
/// plus its put when it is a touch. Read without checking CRCs (the
/// accounting only steers compaction).
pub(crate) fn live_len(src: &dyn Records, offset: u64) -> u64 {
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
    /// An empty index keyed with `seed`.
    pub fn with_seed(seed: u64) -> Index {
        Index {
            slots: Slots::default(),
            len: 0,
            seed,
            keys: foldhash::fast::FixedState::with_seed(seed),
            live_bytes: 0,
            owners: OwnerIndex::default(),
            owners_stale: false,
            moves: 0,
            #[cfg(test)]
            all_collide: false,
        }
    }

    /// The table, to write to a hint file.
    pub fn raw_slots(&self) -> impl ExactSizeIterator<Item = (u64, u64)> + '_ {
        self.slots.iter().map(|s| (s.hash, s.offset))
    }

    /// Seed, entries and live bytes, to write with the table.
    pub fn raw_header(&self) -> (u64, u64, u64) {
        (self.seed, self.len as u64, self.live_bytes)
    }

    /// Rebuilds an index from raw parts (a hint file's), checking that they
    /// make a table every lookup can trust to be complete: a power of two
    /// long and at most three quarters full, every offset in `[min, end)`
    /// and a multiple of `align`, every occupied slot reachable from its
    /// home slot without crossing an empty one, and `len` occupied slots.
    /// Offsets are not checked against the file: a read checks the record
    /// it finds, as it always does.
    pub fn from_raw(raw: RawIndex, min: u64, end: u64, align: u64) -> Result<Index, RawError> {
        let n = raw.slots.len();
        let len = usize::try_from(raw.len).map_err(|_| RawError::Count)?;
        if (n != 0 && !n.is_power_of_two()) || len.saturating_mul(4) > n.saturating_mul(3) {
            return Err(RawError::Shape);
        }
        let mut ix = Index::with_seed(raw.seed);
        // Millions of slots (a hint being read): the checks below yield
        // the CPU to request threads between pieces of `PACE_SLOTS` (a
        // yield looked for in the loops themselves slowed them by half).
        let mut pace = Pace::new();
        // In place (same layout): one pass over memory just read.
        ix.slots = Slots(
            raw.slots
                .into_iter()
                .map(|(hash, offset)| Slot { hash, offset })
                .collect(),
        );
        let mut count = 0usize;
        for (p, piece) in ix.slots.chunks(PACE_SLOTS).enumerate() {
            for (j, s) in piece.iter().enumerate() {
                if s.is_empty() {
                    continue;
                }
                if s.offset < min || s.offset >= end || !s.offset.is_multiple_of(align) {
                    return Err(RawError::Offset(p * PACE_SLOTS + j));
                }
                count += 1;
            }
            pace.chunk();
        }
        // Live bytes are bytes of records in `[min, end)`: a counter read
        // from disk is bounded before anything adds to it.
        if count != len || (len > 0 && len == n) || raw.live_bytes > end.saturating_sub(min) {
            return Err(RawError::Count);
        }
        // Reachability: walking back from each occupied slot to its home
        // must meet no empty slot. One pass: the distance back to the last
        // empty slot, cyclically (there is one: the table is not full).
        if n > 0 {
            let mask = n - 1;
            let last_empty = (0..n).rev().find(|&i| ix.slots[i].is_empty()).unwrap_or(0);
            let mut run_start = (last_empty + 1) & mask;
            for base in (0..n).step_by(PACE_SLOTS) {
                for k in base..n.min(base + PACE_SLOTS) {
                    let i = (last_empty + 1 + k) & mask;
                    let s = ix.slots[i];
                    if s.is_empty() {
                        run_start = (i + 1) & mask;
                        continue;
                    }
                    let home = ix.home(s.hash);
                    // `home` must lie cyclically within [run_start, i].
                    let dist_home = i.wrapping_sub(home) & mask;
                    let dist_run = i.wrapping_sub(run_start) & mask;
                    if dist_home > dist_run {
                        return Err(RawError::Unreachable(i));
                    }
                }
                pace.chunk();
            }
        }
        ix.len = len;
        ix.live_bytes = raw.live_bytes;
        Ok(ix)
    }

    /// Slots in the table (occupied or not).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Changes so far that moved slots (see `moves`).
    pub fn moves(&self) -> u64 {
        self.moves
    }

    /// Offsets held by slots `range` of the table, into `out`.
    pub fn offsets_in(&self, range: std::ops::Range<usize>, out: &mut Vec<u64>) {
        let end = range.end.min(self.slots.len());
        let start = range.start.min(end);
        out.extend(
            self.slots[start..end]
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.offset),
        );
    }

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
    fn find<R: Records + ?Sized>(&self, src: &R, id: &[u8], h: u64) -> Option<usize> {
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
        self.moves += 1;
        let old = std::mem::replace(&mut self.slots, Slots::empty(cap));
        for &s in old.iter().filter(|s| !s.is_empty()) {
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

    /// The owner tag of the session whose latest record is at `offset`.
    fn owner_tag_at(&self, src: &dyn Records, offset: u64) -> Option<u32> {
        let owner = owner_at(src, offset);
        (!owner.is_empty()).then(|| owners::tag(self.keys.hash_one(owner)))
    }

    /// Rebuilds the owner index from the records (for a table read from a
    /// hint, which does not hold it): one look at each session's record.
    pub fn rebuild_owners(&mut self, src: &dyn Records) {
        let mut owners = OwnerIndex::default();
        for s in self.slots.iter().filter(|s| !s.is_empty()) {
            if let Some(t) = self.owner_tag_at(src, s.offset) {
                owners.add(t, (s.hash >> 32) as u32);
            }
        }
        self.owners = owners;
        self.owners_stale = false;
    }

    /// Marks the owner index incomplete (a table read from a hint whose
    /// sessions have owners).
    pub fn mark_owners_stale(&mut self) {
        self.owners_stale = true;
    }

    /// Whether any session may have an owner: the owner index holds one,
    /// or is yet to be rebuilt.
    pub fn has_owners(&self) -> bool {
        self.owners.len() > 0 || self.owners_stale
    }

    /// Rebuilds the owner index if a hint left it incomplete.
    pub fn complete_owners(&mut self, src: &dyn Records) {
        if self.owners_stale {
            self.rebuild_owners(src);
        }
    }

    /// Starts loading where the owner index keeps `owner`'s entries (a
    /// random place in a table of 10.7 to 14.2 bytes a session): a save
    /// with an owner calls it before it looks its id up, so that the two
    /// cache misses overlap rather than follow each other.
    pub fn warm_owner(&self, owner: &[u8]) {
        if !owner.is_empty() && self.owners.len() > 0 {
            self.owners.warm(owners::tag(self.keys.hash_one(owner)));
        }
    }

    /// Offsets of the latest records of the sessions whose owner is
    /// `owner` (non-empty), into `out`, each once, in no order. Costs what
    /// the owner has: a walk of its entries in the owner index, and of the
    /// id index's runs those point at.
    pub fn owned_by(&self, src: &dyn Records, owner: &[u8], out: &mut Vec<u64>) {
        if self.owners.len() == 0 || self.slots.is_empty() || owner.is_empty() {
            return;
        }
        let mut halves = Vec::new();
        self.owners
            .ids_of(owners::tag(self.keys.hash_one(owner)), &mut halves);
        halves.sort_unstable();
        halves.dedup();
        for hi in halves {
            // An id's home slot depends on the high half of its hash only.
            let mut i = self.home(u64::from(hi) << 32);
            loop {
                let s = self.slots[i];
                if s.is_empty() {
                    break;
                }
                if (s.hash >> 32) as u32 == hi && owner_at(src, s.offset) == owner {
                    out.push(s.offset);
                }
                i = (i + 1) & self.mask();
            }
        }
    }

    /// Offset of the latest record of `id`.
    /// Generic, so that a load's lookup in a `View` calls no `dyn` method.
    pub fn get<R: Records + ?Sized>(&self, src: &R, id: &[u8]) -> Option<u64> {
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
        self.live_bytes = self.live_bytes.saturating_add(live_len(src, offset));
        // A touch keeps the owner; a put may set, move or clear it. With no
        // owned session in the index, the old record has no owner to read.
        if !is_touch(src, offset) {
            let new_tag = self.owner_tag_at(src, offset);
            let old_tag = match old {
                Some(o) if self.owners.len() > 0 => self.owner_tag_at(src, o),
                _ => None,
            };
            if old_tag != new_tag {
                let hi = (h >> 32) as u32;
                if let Some(t) = old_tag {
                    self.owners.remove(t, hi);
                }
                if let Some(t) = new_tag {
                    self.owners.add(t, hi);
                }
            }
        }
        old
    }

    /// Removes `id`, returning the offset it pointed at.
    pub fn remove(&mut self, src: &dyn Records, id: &[u8]) -> Option<u64> {
        let h = self.hash(id);
        let mut i = self.find(src, id, h)?;
        self.moves += 1;
        let old = self.slots[i].offset;
        if self.owners.len() > 0
            && let Some(t) = self.owner_tag_at(src, old)
        {
            self.owners.remove(t, (h >> 32) as u32);
        }
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
        (self.slots.capacity() * size_of::<Slot>()) as u64 + self.owners.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::{RecordFields, encode_record};

    /// A table too large for the heap's arenas is allocated empty, and one
    /// let go in pieces leaves the allocator sound: tables allocated after
    /// it, of every size, are empty again and hold what is written.
    #[test]
    fn large_tables_are_allocated_empty_and_let_go_in_pieces() {
        let n = 5 * (4 << 20) / size_of::<Slot>() + 3;
        for round in 0..4u64 {
            let mut t = Slots::empty(n + round as usize);
            assert_eq!(t.len(), n + round as usize);
            assert!(t.iter().all(Slot::is_empty));
            for (i, s) in t.iter_mut().enumerate().step_by(97) {
                *s = Slot {
                    hash: round,
                    offset: i as u64 + 1,
                };
            }
            let small = Slots::empty(1000);
            assert!(small.iter().all(Slot::is_empty));
            drop(t);
            let again = Slots::empty(n);
            assert!(again.iter().all(Slot::is_empty));
        }
    }

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
                owner: &[],
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
