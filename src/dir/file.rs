//! What a `DirStore` directory holds: how files are named and what one
//! session file contains.
//!
//! ```text
//! directory := .lock  (empty; flock()ed by writers)
//!              .hashed-names  (empty; every file is named by its digest)
//!              h-<base32 of the id's digest>  (one per session)
//!              .tmp-<16 hex digits>  (a write in progress, renamed into place)
//!
//! session file := file header (DIR_HEADER bytes) + exactly one Put record
//! file header  := magic (8) | format version (u32) | reserved (4, zero)
//! ```
//!
//! The byte layout is `crate::layout::dir`. The record is the log's
//! record (`crate::record`, unsalted), so it carries its own
//! length fields and CRC. All integers are little-endian. Nothing follows
//! the record's padding.
//!
//! Names: `h-` and the lowercase unpadded base32 (RFC 4648 alphabet) of
//! the id's SHA-256 digest, the one `HashedIds::stored_id` encodes
//! (`crate::hashed::id_digest`): 54 characters, no `/` or `.`, no two that
//! differ only in case, and nothing in them that is a cookie. A name is
//! checked against the id the file holds. Stores written before digest
//! names (DESIGN.md §11, "Names") named files `s-<base32 of the id itself>`; opening such a store renames
//! them (`dir/migrate.rs`), then creates `.hashed-names`. Neither `.lock`,
//! `.hashed-names` nor `.tmp-*` starts with `h-` or `s-`.

use std::path::Path;

use crate::error::{Error, Remedy, Result};
use crate::hashed::id_digest;
use crate::id::{MAX_ID_LEN, SessionId};
use crate::layout::dir::{
    DIR_HEADER, DIR_MAGIC, DIR_PLAIN_VERSION, DIR_VERSION, F_MAGIC, F_RESERVED, F_VERSION,
};
use crate::owner::{MAX_OWNER_LEN, Owner as SessionOwner};
use crate::record::{
    self as format, DecodeError, Kind, MAX_RECORD_DATA, R_KIND, R_VERSION, RECORD_HEADER,
    RecordFields,
};

/// Largest session file that can be valid; a larger one is damage and is
/// rejected before it is read.
pub(crate) const MAX_FILE_LEN: u64 =
    (DIR_HEADER + format::record_len_owned(MAX_ID_LEN, MAX_OWNER_LEN, MAX_RECORD_DATA)) as u64;

/// Prefix of session file names.
pub(crate) const SESSION_PREFIX: &str = "h-";
/// Prefix of session file names before digest names: the id in base32.
pub(crate) const LEGACY_PREFIX: &str = "s-";
/// Present once every session file is named by its digest.
pub(crate) const MARKER_NAME: &str = ".hashed-names";
/// Prefix of temporary files.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";
/// Name of the lock file.
pub(crate) const LOCK_NAME: &str = ".lock";

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Lowercase unpadded base32 (RFC 4648 section 6 alphabet, lowercased).
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(BASE32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The inverse of [`base32`]; `None` unless `s` is exactly what `base32`
/// produces for some input (so names and ids correspond one to one).
fn unbase32(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in s {
        let v = BASE32.iter().position(|&a| a == c)?;
        acc = (acc << 5) | v as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 5 && acc == 0).then_some(out)
}

/// The file name of a session: its digest, never its id.
pub(crate) fn file_name(id: &SessionId) -> String {
    format!("{SESSION_PREFIX}{}", base32(&id_digest(id)))
}

/// True for a name [`file_name`] can give (checked again against the id
/// the file holds).
pub(crate) fn is_session_name(name: &str) -> bool {
    name.strip_prefix(SESSION_PREFIX)
        .is_some_and(|d| d.len() == DIGEST_CHARS && d.bytes().all(|b| BASE32.contains(&b)))
}

/// Base32 characters of a 32-byte digest.
const DIGEST_CHARS: usize = 52;

/// The name a session's file had before digest names (the id in base32).
#[cfg(test)]
pub(crate) fn legacy_name(id: &SessionId) -> String {
    format!("{LEGACY_PREFIX}{}", base32(id.as_bytes()))
}

/// The session an old-style file name belongs to, or `None` for any
/// other file.
pub(crate) fn id_from_legacy_name(name: &str) -> Option<SessionId> {
    let encoded = name.strip_prefix(LEGACY_PREFIX)?;
    SessionId::from_stored(&unbase32(encoded.as_bytes())?)
}

/// A temporary file name with 64 random bits.
pub(crate) fn temp_name() -> Result<String> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(Error::random)?;
    Ok(format!("{TEMP_PREFIX}{:016x}", u64::from_le_bytes(raw)))
}

/// What a store stamps on a session besides its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The session version, at least 1.
    pub version: u64,
    /// Last save or touch, ms since the epoch.
    pub modified_ms: u64,
    /// Deadline, ms since the epoch, 0 for none.
    pub expires_ms: u64,
}

/// One session as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub data: Vec<u8>,
    pub stamp: Stamp,
    pub owner: Option<SessionOwner>,
}

/// The complete contents of a session file.
pub(crate) fn encode_file(
    id: &SessionId,
    data: &[u8],
    s: Stamp,
    owner: Option<&SessionOwner>,
) -> Vec<u8> {
    let owner = owner.map_or(&[][..], |o| o.as_str().as_bytes());
    let mut out = Vec::with_capacity(
        DIR_HEADER + format::record_len_owned(id.as_str().len(), owner.len(), data.len()),
    );
    out.extend_from_slice(&DIR_MAGIC);
    let version = if owner.is_empty() {
        DIR_PLAIN_VERSION
    } else {
        DIR_VERSION
    };
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&[0u8; DIR_HEADER - F_RESERVED]);
    format::encode_record(
        &mut out,
        &RecordFields {
            kind: Kind::Put,
            id: id.as_bytes(),
            data,
            version: s.version,
            modified_ms: s.modified_ms,
            expires_ms: s.expires_ms,
            owner,
        },
    );
    out
}

/// Decodes the contents of the file `path`, which must hold session `id`.
pub(crate) fn decode_file(path: &Path, id: &SessionId, buf: Vec<u8>) -> Result<Stored> {
    let (found, stored) = decode(path, buf)?;
    if found != *id.as_bytes() {
        return Err(mismatch(path));
    }
    Ok(stored)
}

/// Decodes the contents of the file `path`, named `name`, whatever session
/// it holds: the session's id and the session. The name must be the
/// session's [`file_name`].
pub(crate) fn decode_named(path: &Path, name: &str, buf: Vec<u8>) -> Result<(SessionId, Stored)> {
    let (found, stored) = decode(path, buf)?;
    match SessionId::from_stored(&found) {
        Some(id) if file_name(&id) == name => Ok((id, stored)),
        _ => Err(mismatch(path)),
    }
}

fn mismatch(path: &Path) -> Error {
    Error::corrupt_in(
        path,
        (DIR_HEADER + RECORD_HEADER) as u64,
        "the record's session id does not match the file name",
        Remedy::ReplaceSessionFile,
    )
}

/// Decodes a session file: the id bytes it holds, and the session.
fn decode(path: &Path, mut buf: Vec<u8>) -> Result<(Vec<u8>, Stored)> {
    let corrupt = |offset: usize, reason: &str| {
        Error::corrupt_in(path, offset as u64, reason, Remedy::ReplaceSessionFile)
    };
    let m = buf.len().min(DIR_MAGIC.len());
    if buf[..m] != DIR_MAGIC[..m] {
        return Err(corrupt(
            F_MAGIC,
            "not a sessionlog session file (wrong magic)",
        ));
    }
    if buf.len() < DIR_HEADER {
        return Err(corrupt(buf.len(), "the file ends inside its header"));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&buf[F_VERSION..F_RESERVED]);
    let version = u32::from_le_bytes(version);
    if !(DIR_PLAIN_VERSION..=DIR_VERSION).contains(&version) {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: DIR_VERSION,
        });
    }
    if buf[F_RESERVED..DIR_HEADER].iter().any(|&b| b != 0) {
        return Err(corrupt(F_RESERVED, "reserved header bytes are not zero"));
    }
    let r = format::decode_record(&buf[DIR_HEADER..]).map_err(|e| match e {
        DecodeError::Truncated => corrupt(DIR_HEADER, "the session record is cut short"),
        e => corrupt(DIR_HEADER, &e.to_string()),
    })?;
    if r.kind != Kind::Put {
        return Err(corrupt(
            DIR_HEADER + R_KIND,
            "the record is not a put record",
        ));
    }
    if r.version == 0 {
        return Err(corrupt(DIR_HEADER + R_VERSION, "stored version is 0"));
    }
    let end = DIR_HEADER + r.padded_len;
    if buf.len() != end {
        return Err(corrupt(end, "unexpected bytes after the session record"));
    }
    let id = r.id.to_vec();
    let stamp = Stamp {
        version: r.version,
        modified_ms: r.modified_ms,
        expires_ms: r.expires_ms,
    };
    if version == DIR_PLAIN_VERSION && !r.owner.is_empty() {
        return Err(corrupt(
            DIR_HEADER + format::R_OWNER_LEN,
            "a version 1 file's record carries an owner",
        ));
    }
    // Checked by the record's decoder: UTF-8 without control characters.
    let owner = SessionOwner::from_stored(r.owner);
    let start = DIR_HEADER + RECORD_HEADER + r.id.len() + r.owner.len();
    let data_end = start + r.data.len();
    buf.truncate(data_end);
    buf.drain(..start);
    Ok((
        id,
        Stored {
            data: buf,
            stamp,
            owner,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SessionId {
        SessionId::new(s).expect("valid id")
    }

    #[test]
    fn base32_matches_rfc_4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(base32(raw.as_bytes()), enc);
            assert_eq!(unbase32(enc.as_bytes()).as_deref(), Some(raw.as_bytes()));
        }
    }

    #[test]
    fn non_canonical_base32_is_rejected() {
        for bad in ["m", "mzx", "mz", "mzxw6yr", "MZXQ", "mzx1", "mz.q"] {
            assert_eq!(unbase32(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn names_are_digests_that_never_clash() {
        let long = "Z".repeat(MAX_ID_LEN);
        for s in ["a", "A", "abc", "ABC", "a-b_c,d", &long] {
            let name = file_name(&id(s));
            assert_eq!(name.len(), 54, "{name}");
            assert!(is_session_name(&name), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            );
            assert!(!name.contains(&base32(s.as_bytes())), "no trace of the id");
            let old = legacy_name(&id(s));
            assert!(old.len() <= 207, "{old}");
            assert_eq!(id_from_legacy_name(&old), Some(id(s)));
            assert_eq!(id_from_legacy_name(&name), None);
        }
        assert_ne!(
            file_name(&id("abc")).to_ascii_lowercase(),
            file_name(&id("ABC")).to_ascii_lowercase()
        );
        // A fixed vector: the base32 of the digest HashedIds::stored_id
        // encodes in base64url (`h,JDSPiN86...`); changing it would lose
        // every session of every store.
        assert_eq!(
            file_name(&id("abc")),
            "h-eq2i7cg7hi2jgdequc2gsgg3khvkkazuqyn3tjyekmr22jcamxgq"
        );
        for other in [
            LOCK_NAME,
            MARKER_NAME,
            ".tmp-0123456789abcdef",
            "s-",
            "s-m",
            "README",
            "s-mzxw6.bak",
            "h-",
            "h-eq2i7cg7hi2jgdequc2gsgg3khvkkazuqyn3tjyekmr22jcamxg",
        ] {
            assert_eq!(id_from_legacy_name(other), None, "{other}");
            assert!(!is_session_name(other), "{other}");
        }
        assert!(temp_name().expect("random").starts_with(TEMP_PREFIX));
    }

    fn sample() -> Stored {
        Stored {
            data: b"hello".to_vec(),
            stamp: Stamp {
                version: 3,
                modified_ms: 1_700_000_000_000,
                expires_ms: 0,
            },
            owner: None,
        }
    }

    fn encode_sample(id: &SessionId) -> Vec<u8> {
        let s = sample();
        encode_file(id, &s.data, s.stamp, None)
    }

    #[test]
    fn file_round_trips() {
        let p = Path::new("x");
        let bytes = encode_sample(&id("abc"));
        assert_eq!(&bytes[..8], &DIR_MAGIC);
        assert_eq!(
            decode_file(p, &id("abc"), bytes).expect("decodes"),
            sample()
        );
    }

    #[test]
    fn damage_is_corrupt_or_unsupported_never_a_panic() {
        let p = Path::new("x");
        let good = encode_sample(&id("abc"));
        for cut in 0..good.len() {
            let r = decode_file(p, &id("abc"), good[..cut].to_vec());
            assert!(matches!(r, Err(Error::Corrupt { .. })), "cut {cut}: {r:?}");
        }
        let mut v3 = good.clone();
        v3[F_VERSION] = 3;
        assert!(matches!(
            decode_file(p, &id("abc"), v3),
            Err(Error::UnsupportedVersion { found: 3, .. })
        ));
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(matches!(
            decode_file(p, &id("abc"), longer),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            decode_file(p, &id("abd"), good.clone()),
            Err(Error::Corrupt { .. })
        ));
        for i in 0..DIR_HEADER + RECORD_HEADER + 3 + 5 {
            if (F_VERSION..F_RESERVED).contains(&i) {
                continue;
            }
            let mut d = good.clone();
            d[i] ^= 0x40;
            let r = decode_file(p, &id("abc"), d);
            assert!(matches!(r, Err(Error::Corrupt { .. })), "byte {i}: {r:?}");
        }
    }
}
