//! Validated session ids.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use crate::error::{Error, Result};

/// Longest accepted id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// A validated session id: 1 to 128 ASCII characters from
/// `A-Z a-z 0-9 - _ ,`.
///
/// That alphabet covers hex, base64url and PHP-style ids, and contains no
/// `/`, `.` or NUL, so an id can never name a path outside a store's
/// directory or one of a store's own files.
///
/// An id of up to 46 bytes (every id sites generate: 22 base64url, 32 hex,
/// 43 base64url of 256 bits) is held inline, without a heap allocation;
/// longer ones are boxed. Equality, ordering and hashing are the id
/// string's, whichever way it is held.
#[derive(Clone)]
pub struct SessionId(Repr);

/// Longest id held inline: 46 bytes and a length byte fill the 48 bytes
/// the boxed form (16 bytes, 8-aligned) and the enum's tag round up to.
const INLINE_CAP: usize = 46;

/// How an id is held. Invariant: the bytes are a valid id (so ASCII), and
/// `Inline` is used exactly for ids of at most [`INLINE_CAP`] bytes.
#[derive(Clone)]
enum Repr {
    /// The id is `bytes[..len]`; the rest is zero.
    Inline { len: u8, bytes: [u8; INLINE_CAP] },
    /// An id longer than [`INLINE_CAP`].
    Heap(Box<str>),
}

/// True for the bytes an id may contain, by arithmetic rather than a table
/// lookup, so that a loop over a fixed block of bytes vectorizes.
#[inline(always)]
fn id_byte_ok(b: u8) -> bool {
    // `b | 0x20` maps A-Z onto a-z and nothing else onto a-z.
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'_')
        | (b == b',')
}

/// Whether every byte of `block` may be in an id (branch-free: an OR of
/// 16 lanes, one SSE2 compare sequence).
#[inline(always)]
fn id_block_ok(bytes: &[u8], at: usize) -> bool {
    let Some(block) = bytes.get(at..at + 16) else {
        return false;
    };
    block
        .iter()
        .fold(0u8, |bad, &b| bad | u8::from(!id_byte_ok(b)))
        == 0
}

/// Why an id with a byte outside its alphabet was refused.
const BAD_BYTE: &str = "only A-Z a-z 0-9 - _ , are allowed";

/// Checks `bytes` against the id rules; `Err` carries the reason.
pub(crate) fn check_id_bytes(bytes: &[u8]) -> std::result::Result<(), &'static str> {
    if bytes.is_empty() {
        return Err("it is empty");
    }
    if bytes.len() > MAX_ID_LEN {
        return Err("it is longer than 128 characters");
    }
    // Ids are checked on every load and every decode: 16 bytes at a time,
    // the last block overlapping the one before it (a short id padded with
    // a valid byte).
    let ok = match bytes.len().checked_sub(16) {
        None => {
            let mut block = [b'a'; 16];
            block[..bytes.len()].copy_from_slice(bytes);
            id_block_ok(&block, 0)
        }
        Some(last) => {
            // Leaving at the first bad block also keeps the compiler from
            // vectorizing across blocks, which is larger and slower here.
            let mut at = 0;
            while at < last {
                if !id_block_ok(bytes, at) {
                    return Err(BAD_BYTE);
                }
                at += 16;
            }
            id_block_ok(bytes, last)
        }
    };
    if !ok {
        return Err(BAD_BYTE);
    }
    Ok(())
}

impl SessionId {
    /// Validates `s` as a session id. Takes any string form (`&str`,
    /// `String`, `Cow<str>`, ...) without allocating for an id of up to 46
    /// bytes.
    pub fn new(s: impl AsRef<str>) -> Result<SessionId> {
        let s = s.as_ref();
        match check_id_bytes(s.as_bytes()) {
            Ok(()) => Ok(SessionId::from_valid(s.as_bytes())),
            Err(reason) => Err(Error::InvalidId {
                id: s.chars().take(160).collect(),
                reason,
            }),
        }
    }

    /// A new random id: 128 bits from the operating system's random source,
    /// encoded as 22 base64url characters (no padding).
    ///
    /// # Panics
    /// Only if the operating system cannot supply random bytes, in which
    /// case no secure id can be made at all.
    pub fn generate() -> SessionId {
        Self::try_generate().expect("the operating system's random source failed")
    }

    /// Like [`SessionId::generate`], but returns the error instead of
    /// panicking when the random source fails.
    pub fn try_generate() -> Result<SessionId> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(Error::random)?;
        let mut bytes = [0u8; INLINE_CAP];
        let mut len = 0;
        base64url_each(&raw, |c| {
            bytes[len] = c;
            len += 1;
        });
        Ok(SessionId(Repr::Inline {
            len: len as u8,
            bytes,
        }))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => inline_str(&bytes[..usize::from(*len)]),
            Repr::Heap(s) => s,
        }
    }

    /// The id's bytes (ASCII), as [`SessionId::as_str`] without the UTF-8
    /// view: what the engines key and compare on.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// A short, stable digest of the id for messages and logs: the first 8
    /// hex digits of a SHA-256 of the id. It tells two ids apart in a log
    /// without revealing anything usable about either (32 bits of a one-way
    /// hash of a 128-bit random value).
    pub fn digest_hint(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"sessionlog id hint\0");
        h.update(self.as_bytes());
        let d = h.finalize();
        d[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Builds an id from bytes read from disk, re-validating them.
    pub(crate) fn from_stored(bytes: &[u8]) -> Option<SessionId> {
        check_id_bytes(bytes).ok()?;
        Some(SessionId::from_valid(bytes))
    }

    /// Holds `bytes`, which passed [`check_id_bytes`].
    fn from_valid(bytes: &[u8]) -> SessionId {
        if bytes.len() <= INLINE_CAP {
            let mut inline = [0u8; INLINE_CAP];
            inline[..bytes.len()].copy_from_slice(bytes);
            return SessionId(Repr::Inline {
                len: bytes.len() as u8,
                bytes: inline,
            });
        }
        SessionId(Repr::Heap(inline_str(bytes).into()))
    }
}

/// `bytes`, a valid id's, as a `str`.
fn inline_str(bytes: &[u8]) -> &str {
    // Never the default: a valid id is ASCII.
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// Unpadded base64url (RFC 4648 section 5).
pub(crate) fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    base64url_each(bytes, |c| out.push(char::from(c)));
    out
}

/// Unpadded base64url of `bytes`, one output byte at a time.
fn base64url_each(bytes: &[u8], mut push: impl FnMut(u8)) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
        }
    }
}

/// Equal exactly when the id strings are (as `Borrow<str>` requires).
impl PartialEq for SessionId {
    fn eq(&self, other: &SessionId) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for SessionId {}

/// Hashes as the id's `str` does, so that a map keyed by `SessionId` can be
/// searched with a `&str`.
impl Hash for SessionId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// Orders as the id strings do (bytewise).
impl Ord for SessionId {
    fn cmp(&self, other: &SessionId) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl PartialOrd for SessionId {
    fn partial_cmp(&self, other: &SessionId) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for SessionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<SessionId> {
        SessionId::new(s)
    }
}

impl TryFrom<&str> for SessionId {
    type Error = Error;
    fn try_from(s: &str) -> Result<SessionId> {
        SessionId::new(s)
    }
}

impl TryFrom<String> for SessionId {
    type Error = Error;
    fn try_from(s: String) -> Result<SessionId> {
        SessionId::new(s)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shows a short digest, never the id: an id is a credential, and `Debug`
/// output ends up in logs. `Display` (and [`SessionId::as_str`]) give the
/// id itself, for cookies and admin tools.
impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(#{})", self.digest_hint())
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "0123456789abcdef", "A-Z_a,z", &"x".repeat(128)] {
            assert_eq!(SessionId::new(ok).expect("valid").as_str(), ok);
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "x".repeat(129);
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            "a.b",
            "a b",
            "é",
            "a\0b",
            &long,
            ".lock",
        ] {
            let err = SessionId::new(bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidId { .. }), "{bad:?}: {err}");
        }
        assert!("a b".parse::<SessionId>().is_err());
    }

    #[test]
    fn generated_ids_are_128_bits_url_safe_and_distinct() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_eq!(a.as_str().len(), 22);
        assert!(SessionId::new(a.as_str()).is_ok());
        assert_ne!(a, b);
    }

    #[test]
    fn digest_hints_are_short_stable_and_reveal_no_id() {
        let a = id_of("secret-session-id-AAAA");
        let b = id_of("secret-session-id-AAAB");
        let (ha, hb) = (a.digest_hint(), b.digest_hint());
        assert_eq!(ha.len(), 8);
        assert!(ha.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(ha, a.digest_hint(), "stable");
        assert_ne!(ha, hb, "tells ids apart");
        assert!(!a.as_str().contains(&ha) && !ha.contains("secret"));
    }

    fn id_of(s: &str) -> SessionId {
        SessionId::new(s).expect("valid")
    }

    /// Ids around the inline limit, and the longest.
    fn boundary_ids() -> Vec<String> {
        let mut out = Vec::new();
        for len in [1, 21, 22, 32, 43, 45, 46, 47, 48, 64, 127, 128] {
            // Distinct ids of each length, with a shared prefix so that
            // ordering depends on length as well as on bytes.
            out.push("a".repeat(len));
            out.push(format!("{}Z", "a".repeat(len - 1)));
            out.push(format!("{}-", "_".repeat(len - 1)));
        }
        out
    }

    #[test]
    fn inline_and_boxed_ids_round_trip_at_every_length() {
        assert!(matches!(
            id_of(&"x".repeat(INLINE_CAP)).0,
            Repr::Inline { .. }
        ));
        assert!(matches!(
            id_of(&"x".repeat(INLINE_CAP + 1)).0,
            Repr::Heap(_)
        ));
        assert!(matches!(
            SessionId::generate().0,
            Repr::Inline { len: 22, .. }
        ));
        for s in boundary_ids() {
            let id = id_of(&s);
            assert_eq!(id.as_str(), s);
            assert_eq!(id.as_bytes(), s.as_bytes());
            assert_eq!(id.to_string(), s);
            assert_eq!(AsRef::<str>::as_ref(&id), s);
            // Every way in builds the same id.
            let owned = SessionId::new(s.clone()).expect("valid");
            let parsed: SessionId = s.parse().expect("valid");
            let stored = SessionId::from_stored(s.as_bytes()).expect("valid");
            let cow = SessionId::new(std::borrow::Cow::Borrowed(s.as_str())).expect("valid");
            for other in [owned, parsed, stored, cow, id.clone()] {
                assert_eq!(other, id);
                assert_eq!(other.cmp(&id), Ordering::Equal);
            }
        }
        assert!(SessionId::from_stored(&[b'x'; MAX_ID_LEN + 1]).is_none());
        assert!(SessionId::from_stored(b"a.b").is_none());
    }

    #[test]
    fn equality_order_and_hash_are_the_strings() {
        use std::hash::BuildHasher;
        let state = std::collections::hash_map::RandomState::new();
        let strs = boundary_ids();
        let ids: Vec<SessionId> = strs.iter().map(|s| id_of(s)).collect();
        for (a, sa) in ids.iter().zip(&strs) {
            assert_eq!(state.hash_one(a), state.hash_one(sa.as_str()), "{sa}");
            for (b, sb) in ids.iter().zip(&strs) {
                assert_eq!(a == b, sa == sb, "{sa} {sb}");
                assert_eq!(a.cmp(b), sa.cmp(sb), "{sa} {sb}");
                assert_eq!(a.partial_cmp(b), sa.partial_cmp(sb), "{sa} {sb}");
            }
        }
        let mut sorted = ids.clone();
        sorted.sort();
        let mut sorted_strs = strs.clone();
        sorted_strs.sort();
        let as_strs: Vec<&str> = sorted.iter().map(SessionId::as_str).collect();
        assert_eq!(as_strs, sorted_strs);
    }

    #[test]
    fn maps_keyed_by_ids_are_searched_by_str() {
        let strs = boundary_ids();
        let map: std::collections::HashMap<SessionId, usize> = strs
            .iter()
            .enumerate()
            .map(|(i, s)| (id_of(s), i))
            .collect();
        let set: std::collections::BTreeSet<SessionId> = strs.iter().map(|s| id_of(s)).collect();
        assert_eq!(map.len(), strs.len());
        for (i, s) in strs.iter().enumerate() {
            assert_eq!(map.get(s.as_str()), Some(&i), "{s}");
            assert!(set.contains(s.as_str()), "{s}");
        }
        assert_eq!(map.get("a".repeat(129).as_str()), None);
        assert_eq!(map.get("b"), None);
    }

    #[test]
    fn debug_shows_a_digest_inline_or_boxed() {
        for s in ["inline-secret", &"boxed-secret".repeat(8)] {
            let id = id_of(s);
            let shown = format!("{id:?}");
            assert_eq!(shown, format!("SessionId(#{})", id.digest_hint()));
            assert!(!shown.contains("secret"));
        }
    }

    #[test]
    fn an_id_is_at_most_48_bytes() {
        assert_eq!(std::mem::size_of::<SessionId>(), 48);
        assert_eq!(std::mem::size_of::<Option<SessionId>>(), 48);
    }

    #[test]
    fn the_byte_check_is_the_documented_alphabet_at_every_position() {
        for b in 0..=255u8 {
            let allowed = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b',';
            assert_eq!(id_byte_ok(b), allowed, "{b:#x}");
            // In a full block, a partial one and after a full one.
            for len in [1, 5, 16, 17, 31, 32, 33, 128] {
                for at in [0, len / 2, len - 1] {
                    let mut id = vec![b'a'; len];
                    id[at] = b;
                    assert_eq!(
                        check_id_bytes(&id).is_ok(),
                        allowed,
                        "{b:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
