//! Hint files: a snapshot of a log file's index, written by the compaction
//! that wrote the file, so that a process moving to the new file (and an
//! open of the store) rebuilds its index by reading one file instead of
//! replaying every record.
//!
//! A hint only ever saves time. It names the log file it describes (its
//! generation, creation time and salt) and the offset up to which it
//! reflects it; it is checksummed, written to a temporary file, synced and
//! renamed into place. A hint that is missing, damaged, of another file or
//! past what the file holds is ignored, and the index is rebuilt by a
//! replay. The byte layout is `crate::layout::hint`; DESIGN.md §2.3 has it
//! for people.
//!
//! ```text
//! hint := head (HINT_HEAD = 80 bytes) slot* crc (4 bytes) zero (4 bytes)
//! slot := hash (u64) offset (u64), offset 0 for an empty slot
//! ```

use std::os::unix::fs::FileExt;

use crate::engine::file::{LogFile, Site};
use crate::engine::format::{self, HEADER_SIZE, RECORD_ALIGN, StaticHeader};
use crate::engine::hook::{Hooks, IoEvent};
use crate::engine::index::{Index, RawIndex};
use crate::error::{Error, Result};
use crate::layout::hint::{
    HINT_CRC_XOR, HINT_FLAG_OWNERS, HINT_HEAD, HINT_MAGIC, HINT_SLOT, HINT_TAIL, HINT_VERSION,
    I_CREATED, I_FLAGS, I_GENERATION, I_LEN, I_LIVE, I_LOG_END, I_MAGIC, I_SALT, I_SEED, I_SLOTS,
    I_VERSION,
};
use crate::pace::Pace;
use crate::trust::{Create, Owner};

/// `<log>.hint`.
pub fn site(log: &Site) -> Site {
    log.sibling(".hint")
}

/// `<log>.hint.tmp`, where a hint is written before its rename.
pub fn tmp_site(log: &Site) -> Site {
    log.sibling(".hint.tmp")
}

/// The bytes of a hint for the file with header `header`, whose `index`
/// reflects its records up to `end`.
pub fn encode(header: &StaticHeader, end: u64, index: &Index) -> Vec<u8> {
    let slots = index.raw_slots();
    let n = slots.len();
    let mut b = Vec::with_capacity(HINT_HEAD + n * HINT_SLOT + HINT_TAIL);
    let (seed, len, live) = index.raw_header();
    b.extend_from_slice(&HINT_MAGIC);
    b.extend_from_slice(&HINT_VERSION.to_le_bytes());
    let flags = if index.has_owners() {
        HINT_FLAG_OWNERS
    } else {
        0
    };
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&header.generation.to_le_bytes());
    b.extend_from_slice(&header.created_ms.to_le_bytes());
    b.extend_from_slice(&header.salt.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&end.to_le_bytes());
    b.extend_from_slice(&seed.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&live.to_le_bytes());
    b.extend_from_slice(&(n as u64).to_le_bytes());
    debug_assert_eq!(b.len(), HINT_HEAD);
    let mut pace = Pace::new();
    for (i, (hash, offset)) in slots.enumerate() {
        pace.at(i);
        b.extend_from_slice(&hash.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
    }
    let crc = crc_paced(&b, &mut pace) ^ HINT_CRC_XOR;
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b
}

/// Writes the hint for `log`'s next file (header `header`) crash-safely:
/// to the temporary file, synced, then renamed over `<log>.hint`. The
/// caller fsyncs the directory (the log's own rename needs it too). Only a
/// holder of the compaction's temporary-file lock calls this.
pub fn write(
    log: &Site,
    header: &StaticHeader,
    end: u64,
    index: &Index,
    hooks: &Hooks,
    owner: Owner,
) -> Result<()> {
    let bytes = encode(header, end, index);
    let tmp = tmp_site(log);
    let f = tmp.open(Create::IfMissing, owner)?;
    f.set_len(0)
        .map_err(|e| Error::io(&tmp.path, "truncate", e))?;
    hooks
        .before(IoEvent::Write {
            path: &tmp.path,
            offset: 0,
            bytes: &bytes,
        })
        .and_then(|()| write_paced(&f, &bytes))
        .and_then(|()| hooks.before(IoEvent::Sync { path: &tmp.path }))
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io(&tmp.path, "write hint", e))?;
    let to = site(log);
    hooks
        .before(IoEvent::Rename {
            from: &tmp.path,
            to: &to.path,
        })
        .and_then(|()| tmp.rename_to(&to))
        .map_err(|e| Error::io(&to.path, "rename hint", e))
}

/// Hints are read, written and checksummed in pieces of this size, with a
/// [`Pace`] between them: a hint of a million sessions is 32 MiB, and one
/// `read` or `write` of it keeps a CPU for milliseconds.
const PIECE: usize = 1 << 20;

/// `f.write_all_at(bytes, 0)`, a piece at a time.
fn write_paced(f: &std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    let mut pace = Pace::new();
    for (i, piece) in bytes.chunks(PIECE).enumerate() {
        f.write_all_at(piece, (i * PIECE) as u64)?;
        pace.chunk();
    }
    Ok(())
}

/// The CRC-32 of `b`, a piece at a time.
fn crc_paced(b: &[u8], pace: &mut Pace) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    for piece in b.chunks(PIECE) {
        crc.update(piece);
        pace.chunk();
    }
    crc.finalize()
}

/// The end of the hint beside `log` if its head names the file with
/// `header` (the CRC is not checked: this only decides whether writing a
/// new hint is worth it), else `None`.
pub fn covered(log: &Site, header: &StaticHeader, owner: Owner) -> Option<u64> {
    let f = site(log).open_read(owner).ok()??;
    let mut b = [0u8; HINT_HEAD];
    f.read_exact_at(&mut b, 0).ok()?;
    (b[I_MAGIC..I_VERSION] == HINT_MAGIC
        && u32_at(&b, I_VERSION) == HINT_VERSION
        && names(
            header,
            u64_at(&b, I_GENERATION),
            u64_at(&b, I_CREATED),
            u32_at(&b, I_SALT),
        ))
    .then(|| u64_at(&b, I_LOG_END))
}

/// Whether a hint naming the file of this generation, creation time and
/// salt describes the file with `header`.
fn names(header: &StaticHeader, generation: u64, created_ms: u64, salt: u32) -> bool {
    generation == header.generation && created_ms == header.created_ms && salt == header.salt
}

/// Removes `<log>.hint` (best effort: a hint that stays is checked
/// against its file before any use).
pub fn remove(log: &Site) {
    let _ = site(log).remove();
}

/// Why a hint was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unused {
    /// No hint file (or it could not be read).
    Missing,
    /// Not a hint, another version, or the wrong length.
    Malformed,
    /// The CRC does not match.
    Damaged,
    /// A hint of another file (generation, creation time or salt differ).
    Stale,
    /// It reflects the file past `limit` (what the file is known to hold).
    Ahead,
    /// The table is not one a lookup can trust.
    BadTable,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// A hint checked on its own: its CRC and its table, but not yet against
/// the file it names (which may still be a compaction's temporary file).
#[derive(Debug)]
pub struct Checked {
    generation: u64,
    created_ms: u64,
    salt: u32,
    end: u64,
    index: Index,
    /// Device and inode of the file that records past the hint's own end
    /// were replayed from ([`Checked::extend`]), if any were.
    extended_from: Option<(u64, u64)>,
}

impl Checked {
    /// The pending-word token of the file this hint describes.
    pub fn token(&self) -> u64 {
        format::pending_token(self.generation, self.salt)
    }

    /// The generation, creation time and salt of the file this hint
    /// describes (repair rebuilds a damaged header from them).
    pub fn identity(&self) -> (u64, u64, u32) {
        (self.generation, self.created_ms, self.salt)
    }

    /// Where the records that the table does not reflect begin.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The salt of the file the hint describes, which its records' CRCs
    /// are checked with.
    pub fn salt(&self) -> u32 {
        self.salt
    }

    /// Applies records past [`Checked::end`], read from the file with
    /// device and inode `ino`: `replay` applies them to the table from
    /// that end and returns where it stopped, the new end. If it applied
    /// any, the table is from then on only good for that very file: [`Checked::into_index`]
    /// refuses it for any other.
    pub fn extend(&mut self, ino: (u64, u64), replay: impl FnOnce(&mut Index, u64) -> u64) {
        debug_assert!(self.extended_from.is_none_or(|i| i == ino));
        let end = replay(&mut self.index, self.end);
        if end != self.end {
            self.end = end;
            self.extended_from = Some(ino);
        }
    }

    /// The index and its end, if this is a hint of the file with header
    /// `header` and device and inode `ino`, which holds valid records up
    /// to `limit`.
    pub fn into_index(
        self,
        header: &StaticHeader,
        ino: (u64, u64),
        limit: u64,
    ) -> std::result::Result<(Index, u64), Unused> {
        if !names(header, self.generation, self.created_ms, self.salt) {
            return Err(Unused::Stale);
        }
        if self.extended_from.is_some_and(|i| i != ino) {
            return Err(Unused::Stale);
        }
        if self.end > limit {
            return Err(Unused::Ahead);
        }
        Ok((self.index, self.end))
    }
}

/// Checks the bytes of a hint against `header` (of the log file it must
/// describe) and `limit` (the hint may reflect the file up to there, no
/// further), and rebuilds its index. Returns the index and the offset it
/// reflects the file up to. Never panics, whatever the bytes.
#[cfg(test)]
pub fn decode(
    b: &[u8],
    header: &StaticHeader,
    limit: u64,
) -> std::result::Result<(Index, u64), Unused> {
    // A hint just checked was not extended: any file's inode will do.
    check(b)?.into_index(header, (0, 0), limit)
}

/// Checks the bytes of a hint on their own and rebuilds its index. Never
/// panics, whatever the bytes.
pub fn check(b: &[u8]) -> std::result::Result<Checked, Unused> {
    if b.len() < HINT_HEAD + HINT_TAIL
        || b[I_MAGIC..I_VERSION] != HINT_MAGIC
        || u32_at(b, I_VERSION) != HINT_VERSION
    {
        return Err(Unused::Malformed);
    }
    let n = u64_at(b, I_SLOTS);
    let body = (b.len() - HINT_HEAD - HINT_TAIL) as u64;
    if n.checked_mul(HINT_SLOT as u64) != Some(body) {
        return Err(Unused::Malformed);
    }
    let crc_at = b.len() - HINT_TAIL;
    let mut pace = Pace::new();
    let crc = crc_paced(&b[..crc_at], &mut pace) ^ HINT_CRC_XOR;
    if crc != u32_at(b, crc_at)
        || u32_at(b, crc_at + 4) != 0
        || u32_at(b, I_FLAGS) & !HINT_FLAG_OWNERS != 0
    {
        return Err(Unused::Damaged);
    }
    let end = u64_at(b, I_LOG_END);
    if end < HEADER_SIZE {
        return Err(Unused::Malformed);
    }
    // `n` slots are exactly the body (checked above), within the file.
    let mut slots = Vec::with_capacity(usize::try_from(n).map_err(|_| Unused::Malformed)?);
    for piece in b[HINT_HEAD..crc_at].chunks(PIECE) {
        slots.extend(
            piece
                .chunks_exact(HINT_SLOT)
                .map(|c| (u64_at(c, 0), u64_at(c, 8))),
        );
        pace.chunk();
    }
    let raw = RawIndex {
        seed: u64_at(b, I_SEED),
        len: u64_at(b, I_LEN),
        live_bytes: u64_at(b, I_LIVE),
        slots,
    };
    let mut index = Index::from_raw(raw, HEADER_SIZE, end, RECORD_ALIGN as u64)
        .map_err(|_| Unused::BadTable)?;
    if u32_at(b, I_FLAGS) & HINT_FLAG_OWNERS != 0 {
        index.mark_owners_stale();
    }
    Ok(Checked {
        generation: u64_at(b, I_GENERATION),
        created_ms: u64_at(b, I_CREATED),
        salt: u32_at(b, I_SALT),
        end,
        index,
        extended_from: None,
    })
}

/// For the fuzzer: checks `b` as a hint and, if it is accepted, whether
/// encoding what was decoded gives back the same bytes (`None`: refused).
/// A hint is accepted only as the exact encoding of a table a lookup can
/// trust, so anything else is a bug in the check.
#[cfg(feature = "unstable-internals")]
pub fn check_round_trip(b: &[u8]) -> Option<bool> {
    let c = check(b).ok()?;
    let header = StaticHeader {
        version: format::FORMAT_VERSION,
        generation: c.generation,
        created_ms: c.created_ms,
        compact_kept: 0,
        compact_dropped: 0,
        compact_source_bytes: 0,
        compact_result_bytes: 0,
        salt: c.salt,
    };
    Some(encode(&header, c.end, &c.index) == b)
}

/// Reads and checks `<log>.hint` for `file`, which holds valid records up
/// to `limit`.
pub fn load(
    file: &LogFile,
    limit: u64,
    owner: Owner,
    hooks: &Hooks,
) -> std::result::Result<(Index, u64), Unused> {
    read(&file.site, limit, owner, hooks)?.into_index(&file.header, file.ino, limit)
}

/// Reads and checks `<log>.hint` on its own, for a file that holds at
/// most `limit` bytes of records.
///
/// The file must pass the store's checks (no link, the owner's, 0600), and
/// is read only up to the largest hint `limit` bytes of records can need
/// (16 bytes a slot, at most four slots per 48-byte record, and a header):
/// a planted or sparse file of any size costs no more memory than that.
pub fn read(
    log: &Site,
    limit: u64,
    owner: Owner,
    hooks: &Hooks,
) -> std::result::Result<Checked, Unused> {
    let p = site(log);
    if hooks.before(IoEvent::ReadHint { path: &p.path }).is_err() {
        return Err(Unused::Missing);
    }
    let f = match p.open_read(owner) {
        Ok(Some(f)) => f,
        _ => return Err(Unused::Missing),
    };
    let most = limit.saturating_mul(4 * HINT_SLOT as u64) / 48 + 4096;
    let len = f.metadata().map_err(|_| Unused::Missing)?.len();
    if len > most {
        return Err(Unused::Malformed);
    }
    // One allocation of the right size (a hint of a million sessions is
    // 32 MiB), zeroed by the kernel as its pages are first written, read
    // into a piece at a time. The hint is never written in place (a new
    // one is renamed over it), so this file keeps the length it had.
    let len = usize::try_from(len).map_err(|_| Unused::Malformed)?;
    let mut b = vec![0u8; len];
    let mut at = 0;
    let mut pace = Pace::new();
    while at < len {
        let to = len.min(at + PIECE);
        match f.read_at(&mut b[at..to], at as u64) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Unused::Missing),
        }
        pace.chunk();
    }
    b.truncate(at);
    check(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> StaticHeader {
        StaticHeader {
            version: format::FORMAT_VERSION,
            generation: 7,
            created_ms: 1234,
            compact_kept: 0,
            compact_dropped: 0,
            compact_source_bytes: 0,
            compact_result_bytes: 0,
            salt: 0xABCD,
        }
    }

    /// An index of `n` sessions whose records (never read here) would lie
    /// at 8-aligned offsets past the header.
    fn index(n: u64) -> Index {
        struct Ids;
        impl crate::engine::index::Records for Ids {
            fn from(&self, _offset: u64) -> &[u8] {
                &[]
            }
        }
        // A fixed key: the tests that move slots know where they are.
        let mut ix = Index::with_seed(42);
        for i in 0..n {
            // Distinct ids cannot be compared (no records): every insert
            // is new because `find` reads no id and finds nothing.
            ix.insert(&Ids, format!("id{i}").as_bytes(), HEADER_SIZE + 64 * i);
        }
        ix
    }

    #[test]
    fn a_hint_round_trips() {
        let ix = index(1000);
        let end = HEADER_SIZE + 64 * 1000;
        let b = encode(&header(), end, &ix);
        let (got, got_end) = decode(&b, &header(), end).expect("valid hint");
        assert_eq!(got_end, end);
        assert_eq!(got.len(), 1000);
        let mut a: Vec<u64> = ix.offsets().collect();
        let mut g: Vec<u64> = got.offsets().collect();
        a.sort_unstable();
        g.sort_unstable();
        assert_eq!(a, g);
    }

    #[test]
    fn every_damaged_byte_is_refused() {
        let ix = index(20);
        let end = HEADER_SIZE + 64 * 20;
        let b = encode(&header(), end, &ix);
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x40;
            assert!(decode(&d, &header(), end).is_err(), "byte {i}");
        }
        for cut in 0..b.len() {
            assert!(decode(&b[..cut], &header(), end).is_err(), "cut at {cut}");
        }
    }

    /// Crafted counters (README's table of attacks): a live-bytes counter
    /// past what the file can hold (with a valid CRC: a crafted hint) is
    /// refused, so that no later save adds to it and overflows.
    #[test]
    fn a_live_bytes_counter_past_the_file_is_refused() {
        let ix = index(5);
        let end = HEADER_SIZE + 64 * 5;
        let good = encode(&header(), end, &ix);
        for live in [end - HEADER_SIZE + 1, u64::MAX] {
            let mut b = good.clone();
            b[I_LIVE..I_LIVE + 8].copy_from_slice(&live.to_le_bytes());
            let crc_at = b.len() - HINT_TAIL;
            let crc = crc32fast::hash(&b[..crc_at]) ^ HINT_CRC_XOR;
            b[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(check(&b).err(), Some(Unused::BadTable), "live bytes {live}");
        }
    }

    #[test]
    fn a_hint_of_another_file_or_past_the_end_is_refused() {
        let ix = index(5);
        let end = HEADER_SIZE + 64 * 5;
        let b = encode(&header(), end, &ix);
        for other in [
            StaticHeader {
                generation: 8,
                ..header()
            },
            StaticHeader {
                salt: 1,
                ..header()
            },
            StaticHeader {
                created_ms: 1,
                ..header()
            },
        ] {
            assert_eq!(decode(&b, &other, end).err(), Some(Unused::Stale));
        }
        assert_eq!(decode(&b, &header(), end - 8).err(), Some(Unused::Ahead));
    }

    /// A table extended with records of one file is refused for any
    /// other, even of the same header; one the replay added nothing to is
    /// still the hint's own.
    #[test]
    fn a_table_extended_from_one_file_is_refused_for_another() {
        let ix = index(5);
        let end = HEADER_SIZE + 64 * 5;
        let b = encode(&header(), end, &ix);
        let (mine, other) = ((1, 10), (1, 11));
        let mut c = check(&b).expect("valid");
        c.extend(mine, |_, from| from);
        assert!(
            c.into_index(&header(), other, end).is_ok(),
            "nothing replayed"
        );
        let mut c = check(&b).expect("valid");
        c.extend(mine, |_, from| from + 64);
        assert_eq!(c.end(), end + 64);
        assert_eq!(
            c.into_index(&header(), other, end + 64).err(),
            Some(Unused::Stale)
        );
        let mut c = check(&b).expect("valid");
        c.extend(mine, |_, from| from + 64);
        assert_eq!(
            c.into_index(&header(), mine, end).err(),
            Some(Unused::Ahead)
        );
        let mut c = check(&b).expect("valid");
        c.extend(mine, |_, from| from + 64);
        let (_, at) = c
            .into_index(&header(), mine, end + 64)
            .expect("its own file");
        assert_eq!(at, end + 64);
    }

    #[test]
    fn a_table_with_an_unreachable_slot_is_refused() {
        // A valid CRC over a table whose slot sits past an empty slot from
        // its home: a lookup would miss it, so the hint must not be used.
        let ix = index(3);
        let end = HEADER_SIZE + 64 * 3;
        let mut b = encode(&header(), end, &ix);
        let slots = (b.len() - HINT_HEAD - HINT_TAIL) / HINT_SLOT;
        let occupied: Vec<usize> = (0..slots)
            .filter(|i| u64_at(&b, HINT_HEAD + i * HINT_SLOT + 8) != 0)
            .collect();
        // Move a slot one place back from its home (cyclically), to where
        // a lookup starting at the home never looks.
        let before_home = |i: usize| {
            let hash = u64_at(&b, HINT_HEAD + i * HINT_SLOT);
            ((hash.rotate_left(32) as usize & (slots - 1)) + slots - 1) & (slots - 1)
        };
        let from = *occupied
            .iter()
            .find(|&&i| u64_at(&b, HINT_HEAD + before_home(i) * HINT_SLOT + 8) == 0)
            .expect("with this key, some slot has a free one before its home");
        let to = before_home(from);
        {
            let entry: Vec<u8> =
                b[HINT_HEAD + from * HINT_SLOT..HINT_HEAD + from * HINT_SLOT + HINT_SLOT].to_vec();
            b[HINT_HEAD + from * HINT_SLOT..HINT_HEAD + from * HINT_SLOT + HINT_SLOT].fill(0);
            b[HINT_HEAD + to * HINT_SLOT..HINT_HEAD + to * HINT_SLOT + HINT_SLOT]
                .copy_from_slice(&entry);
            let crc_at = b.len() - HINT_TAIL;
            let crc = crc32fast::hash(&b[..crc_at]) ^ HINT_CRC_XOR;
            b[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(decode(&b, &header(), end).err(), Some(Unused::BadTable));
        }
    }
}
