//! Validated session ids.

use std::fmt;
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
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Box<str>);

/// True for the bytes an id may contain.
pub(crate) const fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b','
}

/// `ID_BYTE[b]` is true for the bytes an id may contain.
static ID_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = is_id_byte(b as u8);
        b += 1;
    }
    t
};

/// Checks `bytes` against the id rules; `Err` carries the reason.
pub(crate) fn check_id_bytes(bytes: &[u8]) -> std::result::Result<(), &'static str> {
    if bytes.is_empty() {
        return Err("it is empty");
    }
    if bytes.len() > MAX_ID_LEN {
        return Err("it is longer than 128 characters");
    }
    // Branch-free over the bytes: ids are checked on every decode.
    if !bytes.iter().fold(true, |ok, &b| ok & ID_BYTE[b as usize]) {
        return Err("only A-Z a-z 0-9 - _ , are allowed");
    }
    Ok(())
}

impl SessionId {
    /// Validates `s` as a session id.
    pub fn new(s: impl Into<String>) -> Result<SessionId> {
        let s: String = s.into();
        match check_id_bytes(s.as_bytes()) {
            Ok(()) => Ok(SessionId(s.into_boxed_str())),
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
        Ok(SessionId(base64url(&raw).into_boxed_str()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short, stable digest of the id for messages and logs: the first 8
    /// hex digits of a SHA-256 of the id. It tells two ids apart in a log
    /// without revealing anything usable about either (32 bits of a one-way
    /// hash of a 128-bit random value).
    pub fn digest_hint(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"sessionlog id hint\0");
        h.update(self.0.as_bytes());
        let d = h.finalize();
        d[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Builds an id from bytes read from disk, re-validating them.
    pub(crate) fn from_stored(bytes: &[u8]) -> Option<SessionId> {
        check_id_bytes(bytes).ok()?;
        // Every byte is ASCII, so this cannot fail.
        let s = std::str::from_utf8(bytes).ok()?;
        Some(SessionId(s.into()))
    }
}

/// Unpadded base64url (RFC 4648 section 5).
pub(crate) fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
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
        f.write_str(&self.0)
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
        &self.0
    }
}

impl std::borrow::Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        &self.0
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

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
