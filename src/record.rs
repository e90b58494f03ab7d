//! The record codec: how one session change is framed as bytes. Shared by
//! the log (`engine::format`, which salts every record's CRC with its
//! file's salt) and by `DirStore`'s session files (unsalted).
//!
//! ```text
//! record := 40-byte record header, id, owner, data, zero padding to 8 bytes
//! ```
//!
//! The byte layout is `crate::layout::record` (re-exported here). This
//! module depends on nothing but the id rules and the layouts.

use crate::id::{MAX_ID_LEN, check_id_bytes};

pub use crate::layout::record::*;

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
    pub(crate) fn from_byte(b: u8) -> Option<Kind> {
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
    /// The session's owner (UTF-8 without control characters, checked),
    /// empty for none; always empty on touches and deletes.
    pub owner: &'a [u8],
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
    Some(record_len_owned(
        buf[R_ID_LEN] as usize,
        buf[R_OWNER_LEN] as usize,
        data_len,
    ))
}

/// The owner of the record at the start of `buf` (empty for none), read
/// without checking the CRC (for the owner index; a listing decodes the
/// record fully).
pub fn peek_owner(buf: &[u8]) -> Option<&[u8]> {
    let id_len = *buf.get(R_ID_LEN)? as usize;
    let owner_len = *buf.get(R_OWNER_LEN)? as usize;
    let at = RECORD_HEADER + id_len;
    buf.get(at..at + owner_len)
}

/// For a touch record at the start of `buf`, the offset of its put, read
/// without checking the CRC.
pub fn peek_touch_target(buf: &[u8]) -> Option<u64> {
    if buf.len() < RECORD_HEADER + TOUCH_DATA_LEN || buf[R_KIND] != Kind::Touch as u8 {
        return None;
    }
    let at = RECORD_HEADER + buf[R_ID_LEN] as usize + buf[R_OWNER_LEN] as usize;
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// Bytes a record with this id and data and no owner occupies, padding
/// included.
#[cfg_attr(
    not(any(test, feature = "unstable-internals")),
    expect(dead_code, reason = "for the tests, through `internals`")
)]
pub const fn record_len(id_len: usize, data_len: usize) -> usize {
    record_len_owned(id_len, 0, data_len)
}

/// Bytes a record with this id, owner and data occupies, padding included.
pub const fn record_len_owned(id_len: usize, owner_len: usize, data_len: usize) -> usize {
    (RECORD_HEADER + id_len + owner_len + data_len).next_multiple_of(RECORD_ALIGN)
}

/// Whether `owner` is a valid stored owner: at most 255 bytes of UTF-8
/// without control characters (empty: none).
fn owner_ok(owner: &[u8]) -> bool {
    // Most sessions have none: that answer costs no call.
    owner.is_empty()
        || owner.len() <= 255
            && std::str::from_utf8(owner).is_ok_and(|s| !s.chars().any(char::is_control))
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
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
    /// The owner (already validated), empty for none; puts only.
    pub owner: &'a [u8],
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
    debug_assert!(r.owner.len() <= 255 && (r.owner.is_empty() || r.kind == Kind::Put));
    let start = out.len();
    let padded = record_len_owned(r.id.len(), r.owner.len(), r.data.len());
    out.reserve(padded);
    out.extend_from_slice(&[0u8; 4]);
    // Lossless: data.len() <= MAX_RECORD_DATA < u32::MAX, id.len() <= 128.
    out.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
    out.push(r.kind as u8);
    out.push(r.id.len() as u8);
    // Lossless: owners are at most 255 bytes.
    out.push(r.owner.len() as u8);
    out.extend_from_slice(&[0u8; 5]);
    out.extend_from_slice(&r.version.to_le_bytes());
    out.extend_from_slice(&r.modified_ms.to_le_bytes());
    out.extend_from_slice(&r.expires_ms.to_le_bytes());
    out.extend_from_slice(r.id);
    out.extend_from_slice(r.owner);
    out.extend_from_slice(r.data);
    let crc = crc32(&out[start + R_DATA_LEN..]) ^ RECORD_CRC_XOR ^ salt;
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + padded, 0);
    padded
}

/// Decodes the record at the start of `buf`, which must extend at least to
/// the end of the record (the rest is ignored), written with `salt`.
/// Checks the length fields before anything else, then the CRC, then
/// every field.
pub fn decode_record_salted(buf: &[u8], salt: u32) -> Result<RecordRef<'_>, DecodeError> {
    decode_inner(buf, Some(salt), None)
}

/// [`decode_record_salted`] for a record looked up by `id`, an id already
/// validated: a record that holds that id is not checked against the id
/// alphabet again (the same result, fewer instructions on every load).
pub fn decode_record_of<'a>(
    buf: &'a [u8],
    salt: u32,
    id: &[u8],
) -> Result<RecordRef<'a>, DecodeError> {
    decode_inner(buf, Some(salt), Some(id))
}

/// Like [`decode_record_salted`] but without the CRC check: every length
/// and field is still checked. Only for bytes whose CRC another thread is
/// verifying at the same time (parallel replay on open).
pub fn decode_record_unchecked(buf: &[u8]) -> Result<RecordRef<'_>, DecodeError> {
    decode_inner(buf, None, None)
}

/// CRC-32 (IEEE) of `bytes`, as `crc32fast::hash` computes it, without
/// the CPU feature detection that repeats on every call there: the hasher
/// it picks is made once and copied (about 30 instructions a record).
fn crc32(bytes: &[u8]) -> u32 {
    static PROTO: std::sync::LazyLock<crc32fast::Hasher> =
        std::sync::LazyLock::new(crc32fast::Hasher::new);
    let mut h = PROTO.clone();
    h.update(bytes);
    h.finalize()
}

/// `valid_id`: an id known to be valid; a record holding it skips the
/// alphabet check.
fn decode_inner<'a>(
    buf: &'a [u8],
    salt: Option<u32>,
    valid_id: Option<&[u8]>,
) -> Result<RecordRef<'a>, DecodeError> {
    if buf.len() < RECORD_HEADER {
        return Err(DecodeError::Truncated);
    }
    let data_len = u32_at(buf, R_DATA_LEN) as usize;
    let id_len = buf[R_ID_LEN] as usize;
    let owner_len = buf[R_OWNER_LEN] as usize;
    if data_len > MAX_RECORD_DATA {
        // A length this large is never written: treat like a bad checksum.
        return Err(DecodeError::Checksum);
    }
    let unpadded = RECORD_HEADER + id_len + owner_len + data_len;
    let padded = record_len_owned(id_len, owner_len, data_len);
    if buf.len() < padded {
        return Err(DecodeError::Truncated);
    }
    if let Some(salt) = salt {
        let stored = u32_at(buf, R_CRC);
        if crc32(&buf[R_DATA_LEN..unpadded]) ^ RECORD_CRC_XOR ^ salt != stored {
            return Err(DecodeError::Checksum);
        }
    }
    let kind = Kind::from_byte(buf[R_KIND]).ok_or(DecodeError::Malformed("unknown kind"))?;
    if buf[R_RESERVED..R_VERSION].iter().any(|&b| b != 0) {
        return Err(DecodeError::Malformed("reserved bytes are not zero"));
    }
    let id = &buf[RECORD_HEADER..RECORD_HEADER + id_len];
    if valid_id != Some(id) {
        check_id_bytes(id).map_err(|_| DecodeError::Malformed("invalid session id"))?;
    }
    let data_at = RECORD_HEADER + id_len + owner_len;
    let owner = &buf[RECORD_HEADER + id_len..data_at];
    if owner_len != 0 && kind != Kind::Put {
        return Err(DecodeError::Malformed("only a put record carries an owner"));
    }
    if !owner_ok(owner) {
        return Err(DecodeError::Malformed("invalid session owner"));
    }
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
        data: &buf[data_at..unpadded],
        version: u64_at(buf, R_VERSION),
        modified_ms: u64_at(buf, R_MODIFIED),
        expires_ms: u64_at(buf, R_EXPIRES),
        owner,
        padded_len: padded,
    })
}
