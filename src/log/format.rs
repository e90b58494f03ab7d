//! The on-disk format of a log file: the header and the records.
//!
//! This module depends on nothing else in the crate but the id rules; it
//! only turns values into bytes and back. DESIGN.md describes the same
//! layout for people.
//!
//! ```text
//! file    := header (HEADER_SIZE bytes) record* unused-space
//! header  := static part (64 bytes, CRC-protected) + shared words (atomic)
//! record  := 40-byte record header, id, data, zero padding to 8 bytes
//! ```
//!
//! All integers are little-endian.

use crate::id::{MAX_ID_LEN, check_id_bytes};

/// First bytes of every log file. The high-bit byte catches 7-bit
/// transfers; CR LF catches line-ending conversion; 0x1A stops `type`.
pub const MAGIC: [u8; 8] = [0x89, b'S', b'L', b'O', b'G', b'\r', b'\n', 0x1A];
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes reserved for the header; records start here. One page, so the
/// shared words never share a page with record data.
pub const HEADER_SIZE: u64 = 4096;

// ---- static header fields, written once when the file is created ----
/// Offset of the magic.
pub const H_MAGIC: usize = 0;
/// Offset of the format version (u32).
pub const H_VERSION: usize = H_MAGIC + MAGIC.len();
/// Offset of the header size (u32), equal to `HEADER_SIZE`.
pub const H_HEADER_SIZE: usize = H_VERSION + 4;
/// Offset of the generation (u64): 1 for a new store, +1 per compaction.
pub const H_GENERATION: usize = H_HEADER_SIZE + 4;
/// Offset of the creation time of this file (u64 ms since the epoch).
pub const H_CREATED: usize = H_GENERATION + 8;
/// Offset of the number of sessions the compaction that wrote this file kept.
pub const H_COMPACT_KEPT: usize = H_CREATED + 8;
/// Offset of the number of sessions that compaction dropped.
pub const H_COMPACT_DROPPED: usize = H_COMPACT_KEPT + 8;
/// Offset of the committed length of the file that compaction replaced.
pub const H_COMPACT_SOURCE_BYTES: usize = H_COMPACT_DROPPED + 8;
/// Offset of this file's committed length when that compaction finished.
pub const H_COMPACT_RESULT_BYTES: usize = H_COMPACT_SOURCE_BYTES + 8;
/// Offset of the file's salt (u32): a random number drawn when the file is
/// written, XORed into every record CRC of this file. Record-shaped bytes
/// that did not come from this file (inside session data, or left over
/// from another file) fail their check, so a rescan cannot be fooled.
pub const H_SALT: usize = H_COMPACT_RESULT_BYTES + 8;
/// Offset of the CRC32 of bytes `[0, H_CRC)`, XORed with `HEADER_CRC_XOR`.
pub const H_CRC: usize = H_SALT + 4;
/// End of the static part.
pub const H_STATIC_END: usize = H_CRC + 4;

// ---- shared words, updated in place through the shared mapping ----
/// Offset of the committed word: end of the last complete record. The
/// shared words start a cache line of their own, apart from the static part
/// that every load does not need.
pub const H_COMMITTED: usize = 128;
/// Offset of the synced word: everything before it is on stable storage.
pub const H_SYNCED: usize = H_COMMITTED + 8;
/// Offset of the superseded word: `SUPERSEDED` once a compaction has
/// replaced this file, 0 before.
pub const H_SUPERSEDED: usize = H_SYNCED + 8;
/// End of the shared words.
pub const H_SHARED_END: usize = H_SUPERSEDED + 8;

const _: () = assert!(H_STATIC_END == 72);
const _: () = assert!(H_COMMITTED.is_multiple_of(8) && H_SHARED_END as u64 <= HEADER_SIZE);

/// XORed into the header CRC so that a zeroed header never checks out.
pub const HEADER_CRC_XOR: u32 = 0x5E55_10C0;
/// XORed into record CRCs so that a run of zeros never checks out.
pub const RECORD_CRC_XOR: u32 = 0xA5E5_5105;
/// Value of the superseded word once the file has been replaced.
pub const SUPERSEDED: u64 = u64::from_le_bytes(*b"SUPERSED");

// ---- records ----
/// Offset of the record CRC: CRC32 of bytes `[4, unpadded length)`.
pub const R_CRC: usize = 0;
/// Offset of the data length (u32).
pub const R_DATA_LEN: usize = R_CRC + 4;
/// Offset of the kind byte.
pub const R_KIND: usize = R_DATA_LEN + 4;
/// Offset of the id length byte (1 to 128).
pub const R_ID_LEN: usize = R_KIND + 1;
/// Offset of six reserved bytes, zero in version 1.
pub const R_RESERVED: usize = R_ID_LEN + 1;
/// Offset of the session version (u64).
pub const R_VERSION: usize = R_RESERVED + 6;
/// Offset of the modification time (u64 ms since the epoch).
pub const R_MODIFIED: usize = R_VERSION + 8;
/// Offset of the deadline (u64 ms since the epoch, 0 for none).
pub const R_EXPIRES: usize = R_MODIFIED + 8;
/// Size of the record header; the id follows, then the data.
pub const RECORD_HEADER: usize = R_EXPIRES + 8;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Largest data length any record may declare (1 GiB); a larger length is
/// damage, rejected before anything is read or allocated.
pub const MAX_RECORD_DATA: usize = 1 << 30;

/// What a record does to its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The session's full state: data, times and version.
    Put = 1,
    /// A new modification time for the session; data and version unchanged.
    Touch = 2,
    /// The session is gone.
    Delete = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Put),
            2 => Some(Kind::Touch),
            3 => Some(Kind::Delete),
            _ => None,
        }
    }
}

/// A decoded record, borrowing its id and data from the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// What the record does.
    pub kind: Kind,
    /// The session id (validated).
    pub id: &'a [u8],
    /// The session data (for a touch, the offset of its put, 8 bytes;
    /// empty for a delete).
    pub data: &'a [u8],
    /// The session version.
    pub version: u64,
    /// Modification time, ms since the epoch.
    pub modified_ms: u64,
    /// Deadline, ms since the epoch, 0 for none.
    pub expires_ms: u64,
    /// Bytes the record occupies including padding.
    pub padded_len: usize,
}

/// Why bytes are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ends before the record does.
    Truncated,
    /// The checksum does not match: a torn or damaged record.
    Checksum,
    /// The checksum matches but a field is impossible.
    Malformed(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("record is cut short"),
            DecodeError::Checksum => f.write_str("record checksum mismatch"),
            DecodeError::Malformed(why) => write!(f, "malformed record: {why}"),
        }
    }
}

/// Data length of a `Touch` record: the offset (u64) of the `Put` record
/// whose session it refreshes, so that an index entry pointing at a touch
/// still reaches the data.
pub const TOUCH_DATA_LEN: usize = 8;

impl RecordRef<'_> {
    /// For a `Touch` record, the offset of the `Put` it refreshes.
    pub fn touch_target(&self) -> Option<u64> {
        if self.kind != Kind::Touch {
            return None;
        }
        let b: [u8; 8] = self.data.try_into().ok()?;
        Some(u64::from_le_bytes(b))
    }
}

/// The id of the record at the start of `buf`, read without checking the
/// CRC (for comparing ids in the index; the record is verified when used).
pub fn peek_id(buf: &[u8]) -> Option<&[u8]> {
    let id_len = *buf.get(R_ID_LEN)? as usize;
    buf.get(RECORD_HEADER..RECORD_HEADER + id_len)
}

/// The modification time and deadline of the record at the start of
/// `buf`, read without checking the CRC (for estimates such as whether to
/// compact; decisions about a session decode it fully).
pub fn peek_times(buf: &[u8]) -> Option<(u64, u64)> {
    if buf.len() < RECORD_HEADER {
        return None;
    }
    Some((u64_at(buf, R_MODIFIED), u64_at(buf, R_EXPIRES)))
}

/// The padded length of the record at the start of `buf`, unchecked.
pub fn peek_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < RECORD_HEADER {
        return None;
    }
    let data_len = (u32_at(buf, R_DATA_LEN) as usize).min(MAX_RECORD_DATA);
    Some(record_len(buf[R_ID_LEN] as usize, data_len))
}

/// For a touch record at the start of `buf`, the offset of its put, read
/// without checking the CRC.
pub fn peek_touch_target(buf: &[u8]) -> Option<u64> {
    if buf.len() < RECORD_HEADER + TOUCH_DATA_LEN || buf[R_KIND] != Kind::Touch as u8 {
        return None;
    }
    let at = RECORD_HEADER + buf[R_ID_LEN] as usize;
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// Bytes a record with this id and data occupies, padding included.
pub const fn record_len(id_len: usize, data_len: usize) -> usize {
    (RECORD_HEADER + id_len + data_len).next_multiple_of(RECORD_ALIGN)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// The fields of a record to encode.
#[derive(Clone, Copy, Debug)]
pub struct RecordFields<'a> {
    /// What the record does.
    pub kind: Kind,
    /// The session id (already validated).
    pub id: &'a [u8],
    /// The data (for a touch, the put's offset; empty for a delete).
    pub data: &'a [u8],
    /// The session version.
    pub version: u64,
    /// Modification time, ms.
    pub modified_ms: u64,
    /// Deadline, ms, 0 for none.
    pub expires_ms: u64,
}

/// Appends the encoded record to `out` with salt 0 (the salt of DirStore
/// files), returning its padded length.
pub fn encode_record(out: &mut Vec<u8>, r: &RecordFields<'_>) -> usize {
    encode_record_salted(out, r, 0)
}

/// Decodes a record written with salt 0. See [`decode_record_salted`].
pub fn decode_record(buf: &[u8]) -> Result<RecordRef<'_>, DecodeError> {
    decode_record_salted(buf, 0)
}

/// Appends the encoded record to `out`, its CRC XORed with `salt`,
/// returning its padded length.
///
/// The caller guarantees `1 <= id.len() <= 128` and
/// `data.len() <= MAX_RECORD_DATA`.
pub fn encode_record_salted(out: &mut Vec<u8>, r: &RecordFields<'_>, salt: u32) -> usize {
    debug_assert!(!r.id.is_empty() && r.id.len() <= MAX_ID_LEN);
    debug_assert!(r.data.len() <= MAX_RECORD_DATA);
    let start = out.len();
    let padded = record_len(r.id.len(), r.data.len());
    out.reserve(padded);
    out.extend_from_slice(&[0u8; 4]);
    // Lossless: data.len() <= MAX_RECORD_DATA < u32::MAX, id.len() <= 128.
    out.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
    out.push(r.kind as u8);
    out.push(r.id.len() as u8);
    out.extend_from_slice(&[0u8; 6]);
    out.extend_from_slice(&r.version.to_le_bytes());
    out.extend_from_slice(&r.modified_ms.to_le_bytes());
    out.extend_from_slice(&r.expires_ms.to_le_bytes());
    out.extend_from_slice(r.id);
    out.extend_from_slice(r.data);
    let crc = crc32fast::hash(&out[start + R_DATA_LEN..]) ^ RECORD_CRC_XOR ^ salt;
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + padded, 0);
    padded
}

/// Decodes the record at the start of `buf`, which must extend at least to
/// the end of the record (the rest is ignored), written with `salt`.
/// Checks the length fields before anything else, then the CRC, then
/// every field.
pub fn decode_record_salted(buf: &[u8], salt: u32) -> Result<RecordRef<'_>, DecodeError> {
    decode_inner(buf, Some(salt))
}

/// Like [`decode_record_salted`] but without the CRC check: every length
/// and field is still checked. Only for bytes whose CRC another thread is
/// verifying at the same time (parallel replay on open).
pub fn decode_record_unchecked(buf: &[u8]) -> Result<RecordRef<'_>, DecodeError> {
    decode_inner(buf, None)
}

fn decode_inner(buf: &[u8], salt: Option<u32>) -> Result<RecordRef<'_>, DecodeError> {
    if buf.len() < RECORD_HEADER {
        return Err(DecodeError::Truncated);
    }
    let data_len = u32_at(buf, R_DATA_LEN) as usize;
    let id_len = buf[R_ID_LEN] as usize;
    if data_len > MAX_RECORD_DATA {
        // A length this large is never written: treat like a bad checksum.
        return Err(DecodeError::Checksum);
    }
    let unpadded = RECORD_HEADER + id_len + data_len;
    let padded = record_len(id_len, data_len);
    if buf.len() < padded {
        return Err(DecodeError::Truncated);
    }
    if let Some(salt) = salt {
        let stored = u32_at(buf, R_CRC);
        if crc32fast::hash(&buf[R_DATA_LEN..unpadded]) ^ RECORD_CRC_XOR ^ salt != stored {
            return Err(DecodeError::Checksum);
        }
    }
    let kind = Kind::from_byte(buf[R_KIND]).ok_or(DecodeError::Malformed("unknown kind"))?;
    if buf[R_RESERVED..R_VERSION].iter().any(|&b| b != 0) {
        return Err(DecodeError::Malformed("reserved bytes are not zero"));
    }
    let id = &buf[RECORD_HEADER..RECORD_HEADER + id_len];
    check_id_bytes(id).map_err(|_| DecodeError::Malformed("invalid session id"))?;
    match kind {
        Kind::Put => {}
        Kind::Touch if data_len != TOUCH_DATA_LEN => {
            return Err(DecodeError::Malformed(
                "touch record without its put offset",
            ));
        }
        Kind::Delete if data_len != 0 => {
            return Err(DecodeError::Malformed("delete record carries data"));
        }
        Kind::Touch | Kind::Delete => {}
    }
    Ok(RecordRef {
        kind,
        id,
        data: &buf[RECORD_HEADER + id_len..unpadded],
        version: u64_at(buf, R_VERSION),
        modified_ms: u64_at(buf, R_MODIFIED),
        expires_ms: u64_at(buf, R_EXPIRES),
        padded_len: padded,
    })
}

/// The static part of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticHeader {
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
    b[H_VERSION..H_HEADER_SIZE].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[H_HEADER_SIZE..H_GENERATION].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    b[H_GENERATION..H_CREATED].copy_from_slice(&h.generation.to_le_bytes());
    b[H_CREATED..H_COMPACT_KEPT].copy_from_slice(&h.created_ms.to_le_bytes());
    b[H_COMPACT_KEPT..H_COMPACT_DROPPED].copy_from_slice(&h.compact_kept.to_le_bytes());
    b[H_COMPACT_DROPPED..H_COMPACT_SOURCE_BYTES].copy_from_slice(&h.compact_dropped.to_le_bytes());
    b[H_COMPACT_SOURCE_BYTES..H_COMPACT_RESULT_BYTES]
        .copy_from_slice(&h.compact_source_bytes.to_le_bytes());
    b[H_COMPACT_RESULT_BYTES..H_SALT].copy_from_slice(&h.compact_result_bytes.to_le_bytes());
    b[H_SALT..H_CRC].copy_from_slice(&h.salt.to_le_bytes());
    let crc = crc32fast::hash(&b[..H_CRC]) ^ HEADER_CRC_XOR;
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
    if version != FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    if crc32fast::hash(&b[..H_CRC]) ^ HEADER_CRC_XOR != u32_at(b, H_CRC) {
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
    Ok(StaticHeader {
        generation: u64_at(b, H_GENERATION),
        created_ms: u64_at(b, H_CREATED),
        compact_kept: u64_at(b, H_COMPACT_KEPT),
        compact_dropped: u64_at(b, H_COMPACT_DROPPED),
        compact_source_bytes: u64_at(b, H_COMPACT_SOURCE_BYTES),
        compact_result_bytes: u64_at(b, H_COMPACT_RESULT_BYTES),
        salt: u32_at(b, H_SALT),
    })
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
        v2[H_VERSION] = 2;
        assert_eq!(decode_static_header(&v2), Err(HeaderError::Version(2)));
        for bit in (H_HEADER_SIZE * 8)..(H_STATIC_END * 8) {
            let mut d = b.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode_static_header(&d), Err(HeaderError::Corrupt(..))),
                "bit {bit}"
            );
        }
    }
}
