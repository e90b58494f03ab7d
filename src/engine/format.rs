//! The on-disk format of a log file: the header, and records framed by the
//! crate's record codec (`crate::record`, re-exported here) with this
//! file's salt.
//!
//! This module depends on nothing else in the crate but the record codec
//! and the layouts (`crate::layout::log`, re-exported here, has the header's
//! byte layout); it only turns values into bytes and back. DESIGN.md §2
//! describes the same layout for people.

pub use crate::layout::log::*;
pub use crate::record::*;

/// Whether this build reads files of format `version`.
pub const fn reads_version(version: u32) -> bool {
    version >= MIN_FORMAT_VERSION && version <= FORMAT_VERSION
}

/// The store's expiry policy and quota as its file records them: every
/// process, the command-line tool and compaction apply these, whatever
/// the options they opened with (DESIGN.md §2.1, §9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Sessions not saved or touched for this many milliseconds are gone;
    /// 0 for no idle limit.
    pub max_idle_ms: u64,
    /// Most live sessions; 0 for no limit.
    pub max_sessions: u64,
    /// Most bytes of live session data and ids; 0 for no limit.
    pub max_bytes: u64,
    /// Over a quota, evict the least recently used sessions rather than
    /// refuse the save.
    pub evict: bool,
}

/// Writes `p` into bytes `H_POLICY..H_POLICY_END` of a header page.
pub fn encode_policy(p: &Policy, page: &mut [u8]) {
    page[H_POLICY..H_POLICY_SESSIONS].copy_from_slice(&p.max_idle_ms.to_le_bytes());
    page[H_POLICY_SESSIONS..H_POLICY_BYTES].copy_from_slice(&p.max_sessions.to_le_bytes());
    page[H_POLICY_BYTES..H_POLICY_FLAGS].copy_from_slice(&p.max_bytes.to_le_bytes());
    let flags = POLICY_RECORDED | if p.evict { POLICY_EVICT } else { 0 };
    page[H_POLICY_FLAGS..H_POLICY_CRC].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32fast::hash(&page[H_POLICY..H_POLICY_CRC]) ^ POLICY_CRC_XOR;
    page[H_POLICY_CRC..H_POLICY_END].copy_from_slice(&crc.to_le_bytes());
}

/// The policy a header page records: `None` if the bytes are all zero (a
/// file of an earlier build, which records none), damage if they are not
/// a policy whose CRC checks out.
pub fn decode_policy(page: &[u8]) -> Result<Option<Policy>, HeaderError> {
    let Some(b) = page.get(..H_POLICY_END) else {
        return Err(HeaderError::Corrupt(
            page.len() as u64,
            "the file ends inside the header",
        ));
    };
    if b[H_POLICY..].iter().all(|&x| x == 0) {
        return Ok(None);
    }
    if crc32fast::hash(&b[H_POLICY..H_POLICY_CRC]) ^ POLICY_CRC_XOR != u32_at(b, H_POLICY_CRC) {
        return Err(HeaderError::Corrupt(
            H_POLICY as u64,
            "the recorded policy's checksum does not match",
        ));
    }
    let flags = u32_at(b, H_POLICY_FLAGS);
    if flags & POLICY_RECORDED == 0 || flags & !(POLICY_RECORDED | POLICY_EVICT) != 0 {
        return Err(HeaderError::Corrupt(
            H_POLICY_FLAGS as u64,
            "the recorded policy has unknown flags",
        ));
    }
    Ok(Some(Policy {
        max_idle_ms: u64_at(b, H_POLICY),
        max_sessions: u64_at(b, H_POLICY_SESSIONS),
        max_bytes: u64_at(b, H_POLICY_BYTES),
        evict: flags & POLICY_EVICT != 0,
    }))
}

/// The largest generation a log file may carry. A compaction a
/// millisecond would take 8,900 years to reach it, so only a damaged or
/// crafted header holds more: such a header is refused as damage (repair
/// renumbers the store), and every `+ 1` on a generation read from disk
/// stays far from `u64::MAX` and from wrapping to 0.
pub const MAX_GENERATION: u64 = (1 << 48) - 1;

/// The generation of the file that replaces one of generation `g`, or
/// `None` when `g` is at [`MAX_GENERATION`] (only a crafted header gets
/// there: compaction refuses, and repair starts the count again).
pub fn next_generation(g: u64) -> Option<u64> {
    g.checked_add(1).filter(|&n| n <= MAX_GENERATION)
}

/// The pending word's value for the file with this generation and salt:
/// never 0 (generations start at 1).
pub fn pending_token(generation: u64, salt: u32) -> u64 {
    ((generation << 32) ^ u64::from(salt)) | (1 << 63)
}

/// The static part of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticHeader {
    /// The file's format version ([`FORMAT_VERSION`] for every file this
    /// build writes; a version-1 file read keeps its 1).
    pub version: u32,
    /// 1 for a new store, +1 per compaction.
    pub generation: u64,
    /// When this file was written, ms since the epoch.
    pub created_ms: u64,
    /// Sessions kept by the compaction that wrote this file.
    pub compact_kept: u64,
    /// Sessions dropped by that compaction.
    pub compact_dropped: u64,
    /// Committed bytes of the file that compaction replaced (0: none).
    pub compact_source_bytes: u64,
    /// This file's committed bytes when that compaction finished (0: none).
    pub compact_result_bytes: u64,
    /// XORed into every record CRC of this file.
    pub salt: u32,
}

/// Why a header was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a sessionlog file at all.
    NotAStore(&'static str),
    /// A version this build does not read.
    Version(u32),
    /// Damaged: (byte offset, reason).
    Corrupt(u64, &'static str),
}

/// Encodes a complete header page with the shared words set to a fresh
/// file's values: committed and synced at `HEADER_SIZE`, not superseded.
pub fn encode_header(h: &StaticHeader, committed: u64) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_SIZE as usize];
    b[H_MAGIC..H_VERSION].copy_from_slice(&MAGIC);
    b[H_VERSION..H_HEADER_SIZE].copy_from_slice(&h.version.to_le_bytes());
    b[H_HEADER_SIZE..H_GENERATION].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    b[H_GENERATION..H_CREATED].copy_from_slice(&h.generation.to_le_bytes());
    b[H_CREATED..H_COMPACT_KEPT].copy_from_slice(&h.created_ms.to_le_bytes());
    b[H_COMPACT_KEPT..H_COMPACT_DROPPED].copy_from_slice(&h.compact_kept.to_le_bytes());
    b[H_COMPACT_DROPPED..H_COMPACT_SOURCE_BYTES].copy_from_slice(&h.compact_dropped.to_le_bytes());
    b[H_COMPACT_SOURCE_BYTES..H_COMPACT_RESULT_BYTES]
        .copy_from_slice(&h.compact_source_bytes.to_le_bytes());
    b[H_COMPACT_RESULT_BYTES..H_SALT].copy_from_slice(&h.compact_result_bytes.to_le_bytes());
    b[H_SALT..H_CRC].copy_from_slice(&h.salt.to_le_bytes());
    let crc = header_crc(&b[..H_CRC]);
    b[H_CRC..H_STATIC_END].copy_from_slice(&crc.to_le_bytes());
    let word = encode_offset(committed);
    b[H_COMMITTED..H_SYNCED].copy_from_slice(&word.to_le_bytes());
    b[H_SYNCED..H_SUPERSEDED].copy_from_slice(&word.to_le_bytes());
    b
}

/// Checks the static part of a header (the first `H_STATIC_END` bytes or
/// fewer, if the file is that short).
pub fn decode_static_header(b: &[u8]) -> Result<StaticHeader, HeaderError> {
    if b.is_empty() {
        return Err(HeaderError::NotAStore("the file is empty"));
    }
    let m = b.len().min(MAGIC.len());
    if b[..m] != MAGIC[..m] {
        // A header whose magic alone was damaged checks out once the
        // magic is put back: damage, not a foreign file.
        if b.len() >= H_STATIC_END {
            let mut fixed = [0u8; H_CRC];
            fixed.copy_from_slice(&b[..H_CRC]);
            fixed[..MAGIC.len()].copy_from_slice(&MAGIC);
            if header_crc(&fixed) == u32_at(b, H_CRC) {
                return Err(HeaderError::Corrupt(H_MAGIC as u64, "the magic is damaged"));
            }
        }
        return Err(HeaderError::NotAStore(
            "it does not start with the sessionlog magic",
        ));
    }
    if b.len() < H_STATIC_END {
        return Err(HeaderError::Corrupt(
            b.len() as u64,
            "the file ends inside the header",
        ));
    }
    let version = u32_at(b, H_VERSION);
    if !reads_version(version) {
        // A header of a version this build reads whose version field alone
        // was damaged checks out once the field is put back: that is
        // damage, which repair can mend, not a future format (whose writer
        // computed its CRC over the version it wrote).
        if header_crc(&b[..H_CRC]) != u32_at(b, H_CRC) {
            for known in MIN_FORMAT_VERSION..=FORMAT_VERSION {
                let mut as_known = [0u8; H_CRC];
                as_known.copy_from_slice(&b[..H_CRC]);
                as_known[H_VERSION..H_HEADER_SIZE].copy_from_slice(&known.to_le_bytes());
                if header_crc(&as_known) == u32_at(b, H_CRC) {
                    return Err(HeaderError::Corrupt(
                        H_VERSION as u64,
                        "the version field is damaged",
                    ));
                }
            }
        }
        return Err(HeaderError::Version(version));
    }
    if header_crc(&b[..H_CRC]) != u32_at(b, H_CRC) {
        return Err(HeaderError::Corrupt(
            H_MAGIC as u64,
            "header checksum mismatch",
        ));
    }
    if u64::from(u32_at(b, H_HEADER_SIZE)) != HEADER_SIZE {
        return Err(HeaderError::Corrupt(
            H_HEADER_SIZE as u64,
            "unexpected header size",
        ));
    }
    if u64_at(b, H_GENERATION) > MAX_GENERATION {
        return Err(HeaderError::Corrupt(
            H_GENERATION as u64,
            "the generation is out of range",
        ));
    }
    Ok(StaticHeader {
        version,
        generation: u64_at(b, H_GENERATION),
        created_ms: u64_at(b, H_CREATED),
        compact_kept: u64_at(b, H_COMPACT_KEPT),
        compact_dropped: u64_at(b, H_COMPACT_DROPPED),
        compact_source_bytes: u64_at(b, H_COMPACT_SOURCE_BYTES),
        compact_result_bytes: u64_at(b, H_COMPACT_RESULT_BYTES),
        salt: u32_at(b, H_SALT),
    })
}

/// The CRC of a header's first `H_CRC` bytes, as stored at `H_CRC`.
fn header_crc(b: &[u8]) -> u32 {
    crc32fast::hash(b) ^ HEADER_CRC_XOR
}

/// The static header of a version-1 header whose static part has exactly
/// one flipped bit (the CRC included), mended; `None` if no single bit
/// mends it. A CRC-32 tells every single-bit error in these 576 bits from
/// every other (its minimum distance is at least 3 at this length), so
/// the bit found is the one that flipped whenever one did; damage to more
/// bits may, rarely, look like another single flip, which is why repair
/// then checks the result against the records (the salt must verify them).
pub fn mend_static_header(b: &[u8]) -> Option<StaticHeader> {
    let b = b.get(..H_STATIC_END)?;
    let mut t = [0u8; H_STATIC_END];
    for bit in 0..H_STATIC_END * 8 {
        t.copy_from_slice(b);
        t[bit / 8] ^= 1 << (bit % 8);
        if let Ok(h) = decode_static_header(&t) {
            return Some(h);
        }
    }
    None
}

/// If a record written with some salt starts at `buf`, that salt and the
/// record's padded length: the salt is the one value that makes the
/// record's stored CRC check out, and every field but the CRC is checked.
/// Repair uses it to find a file's salt when the header lost it.
pub fn salt_of_record(buf: &[u8]) -> Option<(u32, usize)> {
    let r = decode_record_unchecked(buf).ok()?;
    let unpadded = RECORD_HEADER + r.id.len() + r.data.len();
    let body = buf.get(R_DATA_LEN..unpadded)?;
    let stored = u32::from_le_bytes(buf.get(R_CRC..R_DATA_LEN)?.try_into().ok()?);
    Some((
        stored ^ crc32fast::hash(body) ^ RECORD_CRC_XOR,
        r.padded_len,
    ))
}

/// Largest offset a shared word can hold (2^48 - 1 bytes, 256 TiB).
pub const MAX_OFFSET: u64 = (1 << 48) - 1;

/// Packs an offset and a CRC-16 of it into one u64, so that it is written
/// by a single atomic store (never torn) and any damaged bit or byte is
/// detected on open.
pub fn encode_offset(offset: u64) -> u64 {
    debug_assert!(offset <= MAX_OFFSET);
    let offset = offset & MAX_OFFSET;
    offset | u64::from(crc16(&offset.to_le_bytes()[..6])) << 48
}

/// The offset in a shared word, or `None` if its check bits do not match.
pub fn decode_offset(word: u64) -> Option<u64> {
    let offset = word & MAX_OFFSET;
    (encode_offset(offset) == word).then_some(offset)
}

/// CRC-16/CCITT-FALSE. Detects every burst error of up to 16 bits, so every
/// single flipped bit and every overwritten byte of a shared word.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                crc << 1 ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(kind: Kind, id: &'a [u8], data: &'a [u8]) -> RecordFields<'a> {
        RecordFields {
            owner: &[],
            kind,
            id,
            data,
            version: 7,
            modified_ms: 1_700_000_000_123,
            expires_ms: 0,
        }
    }

    #[test]
    fn record_round_trips_and_pads_to_eight() {
        for data_len in [0usize, 1, 7, 8, 1024] {
            let data = vec![0xAB; data_len];
            let mut out = Vec::new();
            let n = encode_record(&mut out, &sample(Kind::Put, b"abc", &data));
            assert_eq!(n, out.len());
            assert_eq!(n % RECORD_ALIGN, 0);
            let r = decode_record(&out).expect("decodes");
            assert_eq!(
                (r.kind, r.id, r.data, r.version),
                (Kind::Put, &b"abc"[..], &data[..], 7)
            );
            assert_eq!(r.padded_len, n);
        }
    }

    #[test]
    fn every_prefix_of_a_record_is_truncated() {
        let mut out = Vec::new();
        encode_record(&mut out, &sample(Kind::Put, b"id", b"hello world"));
        for cut in 0..out.len() {
            assert_eq!(
                decode_record(&out[..cut]),
                Err(DecodeError::Truncated),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn zeros_are_not_a_record() {
        assert_eq!(decode_record(&[0u8; 64]), Err(DecodeError::Checksum));
    }

    #[test]
    fn every_bit_flip_in_a_record_is_detected_or_in_padding() {
        let mut out = Vec::new();
        let n = encode_record(&mut out, &sample(Kind::Put, b"id", b"data!"));
        let unpadded = RECORD_HEADER + 2 + 5;
        for bit in 0..n * 8 {
            let mut b = out.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let r = decode_record(&b);
            if bit / 8 >= unpadded {
                assert!(r.is_ok(), "padding flip at bit {bit}");
            } else {
                assert!(r.is_err(), "undetected flip at bit {bit}");
            }
        }
    }

    #[test]
    fn shared_words_detect_every_bit_flip_and_byte_overwrite() {
        for offset in [HEADER_SIZE, 123_456_789, MAX_OFFSET] {
            let w = encode_offset(offset);
            assert_eq!(decode_offset(w), Some(offset));
            for bit in 0..64 {
                assert_eq!(decode_offset(w ^ 1 << bit), None, "bit {bit}");
            }
            let bytes = w.to_le_bytes();
            for pos in 0..8 {
                for v in 0..=255u8 {
                    if v == bytes[pos] {
                        continue;
                    }
                    let mut b = bytes;
                    b[pos] = v;
                    assert_eq!(decode_offset(u64::from_le_bytes(b)), None, "byte {pos}={v}");
                }
            }
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = StaticHeader {
            version: FORMAT_VERSION,
            generation: 3,
            created_ms: 42,
            compact_kept: 5,
            compact_dropped: 6,
            compact_source_bytes: 7,
            compact_result_bytes: 8,
            salt: 0xDEAD_BEEF,
        };
        let b = encode_header(&h, HEADER_SIZE);
        assert_eq!(decode_static_header(&b), Ok(h));
        assert_eq!(
            decode_static_header(b"hello"),
            Err(HeaderError::NotAStore(
                "it does not start with the sessionlog magic"
            ))
        );
        let mut v2 = b.clone();
        v2[H_VERSION] = 3;
        // Its own checksum: a future file. Without: a damaged version 2.
        assert_eq!(
            decode_static_header(&v2),
            Err(HeaderError::Corrupt(
                H_VERSION as u64,
                "the version field is damaged"
            ))
        );
        let crc = header_crc(&v2[..H_CRC]);
        v2[H_CRC..H_STATIC_END].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_static_header(&v2), Err(HeaderError::Version(3)));
        // A version-1 file (records without owners) is read.
        let mut v1 = b.clone();
        v1[H_VERSION] = 1;
        let crc = header_crc(&v1[..H_CRC]);
        v1[H_CRC..H_STATIC_END].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_static_header(&v1),
            Ok(StaticHeader { version: 1, ..h })
        );
        for bit in (H_HEADER_SIZE * 8)..(H_STATIC_END * 8) {
            let mut d = b.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode_static_header(&d), Err(HeaderError::Corrupt(..))),
                "bit {bit}"
            );
        }
    }

    fn sample_header() -> StaticHeader {
        StaticHeader {
            version: FORMAT_VERSION,
            generation: 12,
            created_ms: 1_700_000_000_000,
            compact_kept: 5,
            compact_dropped: 6,
            compact_source_bytes: 7,
            compact_result_bytes: 8,
            salt: 0x1234_5678,
        }
    }

    /// Every single flipped bit of the static part, magic and version
    /// included, is damage (never a foreign file or a future version,
    /// which a repair would not touch), and is mended exactly.
    #[test]
    fn every_single_bit_flip_of_the_static_part_is_damage_and_is_mended() {
        let h = sample_header();
        let b = encode_header(&h, HEADER_SIZE);
        for bit in 0..H_STATIC_END * 8 {
            let mut d = b.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode_static_header(&d), Err(HeaderError::Corrupt(..))),
                "bit {bit}: {:?}",
                decode_static_header(&d)
            );
            assert_eq!(mend_static_header(&d), Some(h), "bit {bit}");
        }
        // Two flipped bits are detected, and not mended into a header
        // that passes for this one.
        let mut d = b.clone();
        d[H_GENERATION] ^= 1;
        d[H_SALT] ^= 1;
        assert!(decode_static_header(&d).is_err());
        assert_ne!(mend_static_header(&d), Some(h));
    }

    /// A future format writes its own CRC over its own version: still
    /// `Version`, never taken for damage.
    #[test]
    fn a_future_version_with_its_own_checksum_is_a_version_error() {
        let mut b = encode_header(&sample_header(), HEADER_SIZE);
        b[H_VERSION..H_HEADER_SIZE].copy_from_slice(&3u32.to_le_bytes());
        let crc = header_crc(&b[..H_CRC]);
        b[H_CRC..H_STATIC_END].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_static_header(&b), Err(HeaderError::Version(3)));
        assert_eq!(mend_static_header(&b), None);
    }

    /// A generation past `MAX_GENERATION` (a crafted header with a valid
    /// checksum) is refused, so `+ 1` on any accepted one cannot wrap.
    #[test]
    fn a_generation_out_of_range_is_refused_and_the_last_has_no_successor() {
        for g in [MAX_GENERATION + 1, u64::MAX] {
            let b = encode_header(
                &StaticHeader {
                    generation: g,
                    ..sample_header()
                },
                HEADER_SIZE,
            );
            assert_eq!(
                decode_static_header(&b),
                Err(HeaderError::Corrupt(
                    H_GENERATION as u64,
                    "the generation is out of range"
                ))
            );
        }
        assert_eq!(next_generation(1), Some(2));
        assert_eq!(next_generation(MAX_GENERATION - 1), Some(MAX_GENERATION));
        assert_eq!(next_generation(MAX_GENERATION), None);
        assert_eq!(next_generation(u64::MAX), None);
    }

    #[test]
    fn the_salt_of_a_record_is_found_from_its_checksum() {
        let mut out = Vec::new();
        let n = encode_record_salted(&mut out, &sample(Kind::Put, b"id", b"data"), 0xCAFE_F00D);
        assert_eq!(salt_of_record(&out), Some((0xCAFE_F00D, n)));
        assert_eq!(salt_of_record(&[0u8; 64]), None);
        assert_eq!(salt_of_record(&out[..n - 8]), None);
    }
}
