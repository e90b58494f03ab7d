//! The owner index: which sessions belong to an owner, kept beside the
//! id index (`index`) so that `sessions_of` costs what the owner has.
//!
//! It keeps neither owners nor ids. Each entry is 8 bytes: a 32-bit tag
//! of the owner's keyed hash (its low bit forced to 1, so that no entry is
//! 0, the empty slot) and the high 32 bits of the session id's keyed hash,
//! the part of it that decides the session's home slot in the id index.
//! A lookup walks the run of entries from the owner's home slot (every
//! entry of one owner shares that home), and the caller finds each id's
//! slots in the id index and checks the owner in the record: tags and
//! hash halves that collide only add candidates that fail that check.
//! Linear probing, at most three quarters full, removal by shifting back
//! (no tombstones), as the id index does.
//!
//! Unlike the id index, the table is not a power of two long: it grows by
//! a third when three quarters full, so it is between 9/16 and 3/4 full,
//! 10.7 to 14.2 bytes a session whatever the count (a power-of-two table
//! would cost 10.7 to 21.3: 16.8 at 1M sessions). A home slot is the tag
//! scaled to the length (a multiply and a shift), not masked.

/// Slots once the table must hold `n` entries: 16/9 of them (9/16 full),
/// at least 16.
fn capacity_for(n: usize) -> usize {
    (n.saturating_mul(16) / 9 + 1).max(16)
}

/// Whether `n` entries fit `cap` slots at most three quarters full.
fn fits(n: usize, cap: usize) -> bool {
    n.saturating_mul(4) <= cap.saturating_mul(3)
}

/// Owner tag and id-hash half, one entry a session with an owner.
#[derive(Debug, Default, Clone)]
pub(crate) struct OwnerIndex {
    /// Empty, or at least 16 long and at most three quarters full; 0 marks
    /// an empty slot.
    slots: Vec<u64>,
    len: usize,
}

/// The entry's owner tag: the high half of the owner's hash, low bit set.
pub(crate) fn tag(owner_hash: u64) -> u32 {
    (owner_hash >> 32) as u32 | 1
}

fn entry(tag: u32, id_hi: u32) -> u64 {
    u64::from(tag) << 32 | u64::from(id_hi)
}

impl OwnerIndex {
    fn home(&self, tag: u32) -> usize {
        // Tags are the high bits of a keyed hash, already mixed: its 31
        // bits above the forced one, scaled to [0, len).
        ((u64::from(tag >> 1) * self.slots.len() as u64) >> 31) as usize
    }

    /// The slot after `i`, wrapping at the end.
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Records that a session whose id hashes to `id_hi` (high half)
    /// belongs to the owner with tag `tag`.
    pub fn add(&mut self, tag: u32, id_hi: u32) {
        if !fits(self.len + 1, self.slots.len()) {
            let old = std::mem::replace(&mut self.slots, vec![0; capacity_for(self.len + 1)]);
            for e in old.into_iter().filter(|&e| e != 0) {
                self.place(e);
            }
        }
        self.place(entry(tag, id_hi));
        self.len += 1;
    }

    fn place(&mut self, e: u64) {
        let mut i = self.home((e >> 32) as u32);
        while self.slots[i] != 0 {
            i = self.next(i);
        }
        self.slots[i] = e;
    }

    /// Loads the home slot of `tag` now, so that an `add` or `remove` for
    /// it soon after finds its cache line present: the load's miss then
    /// overlaps the caller's other misses instead of following them.
    pub fn warm(&self, tag: u32) {
        if !self.slots.is_empty() {
            std::hint::black_box(self.slots[self.home(tag)]);
        }
    }

    /// Removes one entry for (`tag`, `id_hi`); false if there was none.
    pub fn remove(&mut self, tag: u32, id_hi: u32) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let e = entry(tag, id_hi);
        let mut i = self.home(tag);
        loop {
            match self.slots[i] {
                0 => return false,
                x if x == e => break,
                _ => i = self.next(i),
            }
        }
        // Shift back the entries after the hole whose home is not
        // cyclically within (hole, their place].
        let mut j = i;
        loop {
            j = self.next(j);
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let k = self.home((s >> 32) as u32);
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
        self.slots[i] = 0;
        self.len -= 1;
        true
    }

    /// The id-hash halves of the sessions tagged `tag`, into `out`
    /// (possibly with repeats, and with other owners' that share the tag).
    pub fn ids_of(&self, tag: u32, out: &mut Vec<u32>) {
        if self.slots.is_empty() {
            return;
        }
        let mut i = self.home(tag);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return;
            }
            if (s >> 32) as u32 == tag {
                out.push(s as u32);
            }
            i = self.next(i);
        }
    }

    /// Heap bytes used.
    pub fn heap_bytes(&self) -> u64 {
        (self.slots.capacity() * size_of::<u64>()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_finds_and_removes_through_collisions_and_growth() {
        let mut ix = OwnerIndex::default();
        // Tags 3 and 5 share a home in a small table; tag 7 too.
        for i in 0..100u32 {
            ix.add(tag(u64::from(i % 3) << 33), i);
        }
        assert_eq!(ix.len(), 100);
        for t in 0..3u32 {
            let mut out = Vec::new();
            ix.ids_of(tag(u64::from(t) << 33), &mut out);
            out.sort_unstable();
            let want: Vec<u32> = (0..100).filter(|i| i % 3 == t).collect();
            assert_eq!(out, want, "tag {t}");
        }
        for i in (0..100u32).step_by(2) {
            assert!(ix.remove(tag(u64::from(i % 3) << 33), i));
        }
        assert!(!ix.remove(tag(0), 0), "already removed");
        for t in 0..3u32 {
            let mut out = Vec::new();
            ix.ids_of(tag(u64::from(t) << 33), &mut out);
            out.sort_unstable();
            let want: Vec<u32> = (0..100).filter(|i| i % 3 == t && i % 2 == 1).collect();
            assert_eq!(out, want, "tag {t} after removals");
        }
        assert_eq!(ix.len(), 50);
    }

    /// Against a multiset model, through growth to lengths that are no
    /// power of two, removals that shift runs back (also across the end of
    /// the table), and owners with many entries sharing one home.
    #[test]
    fn matches_a_model_through_growth_and_removals() {
        let mut ix = OwnerIndex::default();
        let mut model: std::collections::HashMap<u32, Vec<u32>> = Default::default();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..30_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // 500 owners with tags spread as a hash's are, one of them
            // (tag(0)) with a large share.
            let t = if x.is_multiple_of(7) {
                tag(0)
            } else {
                tag(((x >> 8) % 500).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            };
            let entries = model.entry(t).or_default();
            if x.is_multiple_of(3) && !entries.is_empty() {
                let k = (x >> 20) as usize % entries.len();
                let hi = entries.swap_remove(k);
                assert!(ix.remove(t, hi), "{step}");
            } else {
                let hi = (x >> 32) as u32;
                ix.add(t, hi);
                entries.push(hi);
            }
            assert_eq!(ix.len(), model.values().map(Vec::len).sum::<usize>());
        }
        for (&t, want) in &mut model {
            let mut got = Vec::new();
            ix.ids_of(t, &mut got);
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(&got, want, "tag {t:x}");
        }
    }

    /// The owner index's memory bound (DESIGN.md §3.1): at most 16 bytes an
    /// entry at every count (from 8 entries, the smallest table's 16
    /// slots), where a power-of-two table would take up to 21.3.
    #[test]
    fn costs_at_most_16_bytes_an_entry_at_every_count() {
        let mut ix = OwnerIndex::default();
        for n in 1..=200_000u32 {
            ix.add(tag(u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15)), n);
            if n >= 8 {
                assert!(
                    ix.heap_bytes() <= 16 * u64::from(n),
                    "{n}: {}",
                    ix.heap_bytes()
                );
            }
            assert!(
                fits(ix.len(), ix.slots.len()),
                "{n}: at most three quarters full"
            );
        }
    }

    #[test]
    fn a_repeated_entry_is_kept_twice_and_removed_once() {
        let mut ix = OwnerIndex::default();
        ix.add(9, 1);
        ix.add(9, 1);
        assert!(ix.remove(9, 1));
        let mut out = Vec::new();
        ix.ids_of(9, &mut out);
        assert_eq!(out, vec![1]);
    }
}
