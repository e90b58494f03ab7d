//! Who a session belongs to: [`Owner`], and [`SessionInfo`], what
//! [`SessionStore::sessions_of`](crate::SessionStore::sessions_of) lists.

use std::fmt;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::id::SessionId;

/// Longest accepted owner, in bytes of UTF-8.
pub const MAX_OWNER_LEN: usize = 255;

/// Who a session belongs to, typically the user's id: a validated opaque
/// string of 1 to 255 bytes of UTF-8 without control characters.
///
/// Stores index sessions by owner, so that an application can list a
/// user's sessions and log them out everywhere
/// ([`SessionStore::sessions_of`](crate::SessionStore::sessions_of) and
/// the methods beside it). An owner is personal data: its `Debug` shows a
/// short digest, never the owner, and error messages never contain it;
/// [`HashedIds`](crate::HashedIds) keeps a digest of it in the store.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(Box<str>);

/// Checks `s` against the owner rules; `Err` carries the reason.
fn check_owner(s: &str) -> std::result::Result<(), &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    if s.len() > MAX_OWNER_LEN {
        return Err("it is longer than 255 bytes");
    }
    if s.chars().any(char::is_control) {
        return Err("it contains a control character");
    }
    Ok(())
}

impl Owner {
    /// Validates `s` as an owner. The error says why it was rejected and
    /// how long it was, never the owner itself.
    pub fn new(s: impl Into<String>) -> Result<Owner> {
        let s: String = s.into();
        match check_owner(&s) {
            Ok(()) => Ok(Owner(s.into_boxed_str())),
            Err(reason) => Err(Error::InvalidOwner {
                len: s.len(),
                reason,
            }),
        }
    }

    /// The owner as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short, stable digest of the owner for messages and logs: the first
    /// 8 hex digits of a SHA-256 of it.
    pub fn digest_hint(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"sessionlog owner hint\0");
        h.update(self.0.as_bytes());
        let d = h.finalize();
        d[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Builds an owner from bytes read from storage, re-validating them.
    #[allow(dead_code, reason = "the stores' decoders use it")]
    pub(crate) fn from_stored(bytes: &[u8]) -> Option<Owner> {
        let s = std::str::from_utf8(bytes).ok()?;
        check_owner(s).ok()?;
        Some(Owner(s.into()))
    }
}

/// Shows a short digest, never the owner: an owner is personal data, and
/// `Debug` output ends up in logs.
impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner(#{})", self.digest_hint())
    }
}

impl std::str::FromStr for Owner {
    type Err = Error;
    fn from_str(s: &str) -> Result<Owner> {
        Owner::new(s)
    }
}

impl TryFrom<&str> for Owner {
    type Error = Error;
    fn try_from(s: &str) -> Result<Owner> {
        Owner::new(s)
    }
}

impl TryFrom<String> for Owner {
    type Error = Error;
    fn try_from(s: String) -> Result<Owner> {
        Owner::new(s)
    }
}

impl AsRef<str> for Owner {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// One live session as listed by
/// [`SessionStore::sessions_of`](crate::SessionStore::sessions_of): its id
/// and metadata, without its data.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session's id (for [`HashedIds`](crate::HashedIds): the stored
    /// digest, which `delete_session` does not accept; use
    /// `delete_sessions_of` with `keep` to spare one).
    pub id: SessionId,
    /// The session's owner, as the caller named it.
    pub owner: Option<Owner>,
    /// Time of the last save or touch, at millisecond precision.
    pub modified: SystemTime,
    /// The absolute deadline, if any.
    pub expires: Option<SystemTime>,
    /// The stored version.
    pub version: u64,
    /// The length of the session's data, in bytes.
    pub size: usize,
}

impl SessionInfo {
    /// A listing entry. For store implementations.
    pub fn new(
        id: SessionId,
        owner: Option<Owner>,
        modified: SystemTime,
        expires: Option<SystemTime>,
        version: u64,
        size: usize,
    ) -> SessionInfo {
        SessionInfo {
            id,
            owner,
            modified,
            expires,
            version,
            size,
        }
    }
}

/// Sorts a listing most recently modified first; ties by id, so that the
/// order is the same on every backend. For listings whose store cannot
/// tell which of two sessions modified in one millisecond came later;
/// [`newest_first`] is for those that can.
pub(crate) fn sort_newest_first(list: &mut [SessionInfo]) {
    list.sort_unstable_by(|a, b| b.modified.cmp(&a.modified).then_with(|| a.id.cmp(&b.id)));
}

/// A listing most recently modified first, where each entry comes with
/// the store's order of modification (`later` greater for the later save
/// or touch: a sequence, an offset in a log): among sessions modified in
/// the same millisecond (three logins in a row) the later one is listed
/// first, as the owner limit would keep it. Ties left after that go by id.
pub(crate) fn newest_first<K: Ord>(mut list: Vec<(SessionInfo, K)>) -> Vec<SessionInfo> {
    list.sort_unstable_by(|(a, a_later), (b, b_later)| {
        b.modified
            .cmp(&a.modified)
            .then_with(|| b_later.cmp(a_later))
            .then_with(|| a.id.cmp(&b.id))
    });
    list.into_iter().map(|(info, _)| info).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_utf8_up_to_255_bytes() {
        for ok in [
            "42",
            "alice@example.com",
            "Zoë 😀",
            &"x".repeat(255),
            &"é".repeat(127),
        ] {
            assert_eq!(
                Owner::new(ok)
                    .map(|o| o.as_str().to_owned())
                    .ok()
                    .as_deref(),
                Some(ok)
            );
        }
    }

    #[test]
    fn rejects_empty_long_and_control_characters_without_echoing_them() {
        for bad in [
            "",
            &"x".repeat(256),
            &"é".repeat(128),
            "a\nb",
            "a\0b",
            "\u{7f}",
            "a\u{85}b",
        ] {
            let err = Owner::new(bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidOwner { .. }), "{bad:?}: {err}");
            if bad.len() > 2 {
                assert!(!err.to_string().contains(bad), "{err}");
            }
        }
    }

    #[test]
    fn debug_shows_a_digest_not_the_owner() {
        let o = Owner::new("alice@example.com").expect("valid");
        let shown = format!("{o:?}");
        assert!(!shown.contains("alice"), "{shown}");
        assert_eq!(shown, format!("Owner(#{})", o.digest_hint()));
        assert_ne!(
            o.digest_hint(),
            Owner::new("bob").expect("valid").digest_hint()
        );
    }

    #[test]
    fn stored_bytes_are_revalidated() {
        assert_eq!(
            Owner::from_stored(b"42")
                .map(|o| o.as_str().to_owned())
                .as_deref(),
            Some("42")
        );
        assert!(Owner::from_stored(b"").is_none());
        assert!(Owner::from_stored(b"\xff").is_none());
        assert!(Owner::from_stored(b"a\x1b").is_none());
    }
}
