//! The envelope: how an encrypted session's data is laid out in the
//! `data` field of the record the wrapped store keeps (DESIGN.md §14.2).
//!
//! ```text
//! offset     size    field
//! 0          4       MAGIC: FF 53 4C 45 ("\xFFSLE"; 0xFF never occurs in UTF-8)
//! 4          1       VERSION: 1
//! 5          1       FLAGS: 0 (reserved; a set bit is refused)
//! 6          1       k: length of the key id, 1..=32
//! 7          k       the key id: ASCII A-Z a-z 0-9 . _ -
//! 7+k        24      the nonce, drawn at random for every save
//! 31+k       n+16    XChaCha20-Poly1305 ciphertext of the n data bytes,
//!                    then its 16-byte tag
//! ```
//!
//! The associated data is [`AAD_DOMAIN`], the header (bytes 0 to 7+k),
//! the stored id's length as a little-endian u16 and the stored id: the
//! ciphertext authenticates only under the key it names, in the record of
//! the session it was written for.

use chacha20poly1305::aead::AeadInPlace as _;
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

/// What every envelope starts with.
pub const MAGIC: [u8; 4] = [0xFF, b'S', b'L', b'E'];
/// The one envelope version this build writes and reads.
pub const VERSION: u8 = 1;
/// Offsets, each chained from the sizes before it.
const VERSION_AT: usize = MAGIC.len();
const FLAGS_AT: usize = VERSION_AT + 1;
const KEY_ID_LEN_AT: usize = FLAGS_AT + 1;
const KEY_ID_AT: usize = KEY_ID_LEN_AT + 1;
/// Size of the nonce.
pub const NONCE_LEN: usize = 24;
/// Size of the tag.
pub const TAG_LEN: usize = 16;
/// The longest key id.
pub const MAX_KEY_ID_LEN: usize = 32;
/// Domain separation of the associated data: of no use to any other
/// scheme, and another scheme's is not one of these.
pub const AAD_DOMAIN: &[u8] = b"sessionlog encrypted session v1\0";

/// Whether `id` is a key id an envelope may name.
pub fn valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The bytes an envelope naming `key_id` adds to the data.
pub fn overhead(key_id: &str) -> usize {
    KEY_ID_AT + key_id.len() + NONCE_LEN + TAG_LEN
}

/// A record's data, as far as it can be read without a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Does not start with [`MAGIC`]: data saved before encryption.
    Plain,
    /// An envelope: its key id, header, nonce, and ciphertext with tag.
    Sealed(Sealed<'a>),
}

/// The parts of an envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Sealed<'a> {
    /// The key the data was encrypted under.
    pub key_id: &'a str,
    header: &'a [u8],
    nonce: &'a [u8],
    body: &'a [u8],
}

/// Why bytes that start with [`MAGIC`] are not an envelope this build reads.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    /// A version other than [`VERSION`].
    Version(u8),
    /// Reserved flag bits set.
    Flags(u8),
    /// A key id of a length or character an envelope never has.
    KeyId,
    /// Shorter than its header, nonce and tag.
    Truncated,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Version(v) => write!(
                f,
                "envelope version {v} is not supported (this build reads version {VERSION}); use a newer sessionlog"
            ),
            Malformed::Flags(b) => write!(f, "envelope flags {b:#04x} are not supported"),
            Malformed::KeyId => f.write_str("the envelope's key id is malformed"),
            Malformed::Truncated => f.write_str("the envelope is truncated"),
        }
    }
}

/// Splits `data` into its parts; reads no key.
pub fn parse(data: &[u8]) -> Result<Parsed<'_>, Malformed> {
    if !data.starts_with(&MAGIC) {
        return Ok(Parsed::Plain);
    }
    let byte = |at: usize| data.get(at).copied().ok_or(Malformed::Truncated);
    let version = byte(VERSION_AT)?;
    if version != VERSION {
        return Err(Malformed::Version(version));
    }
    let flags = byte(FLAGS_AT)?;
    if flags != 0 {
        return Err(Malformed::Flags(flags));
    }
    let k = usize::from(byte(KEY_ID_LEN_AT)?);
    let nonce_at = KEY_ID_AT + k;
    let body_at = nonce_at + NONCE_LEN;
    let id_bytes = data.get(KEY_ID_AT..nonce_at).ok_or(Malformed::Truncated)?;
    let key_id = std::str::from_utf8(id_bytes).map_err(|_| Malformed::KeyId)?;
    if !valid_key_id(key_id) {
        return Err(Malformed::KeyId);
    }
    if data.len() < body_at + TAG_LEN {
        return Err(Malformed::Truncated);
    }
    Ok(Parsed::Sealed(Sealed {
        key_id,
        header: &data[..nonce_at],
        nonce: &data[nonce_at..body_at],
        body: &data[body_at..],
    }))
}

/// The associated data of an envelope with `header` in the record of
/// `stored_id`.
fn aad(header: &[u8], stored_id: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_DOMAIN.len() + header.len() + 2 + stored_id.len());
    a.extend_from_slice(AAD_DOMAIN);
    a.extend_from_slice(header);
    // Session ids are at most MAX_ID_LEN (far below 65536) bytes.
    let len = u16::try_from(stored_id.len()).unwrap_or(u16::MAX);
    a.extend_from_slice(&len.to_le_bytes());
    a.extend_from_slice(stored_id.as_bytes());
    a
}

/// Encrypts `plain` under `cipher`, named `key_id`, for the record of
/// `stored_id`, with `nonce`. `key_id` must be [`valid_key_id`].
pub fn seal(
    cipher: &XChaCha20Poly1305,
    key_id: &str,
    stored_id: &str,
    nonce: &[u8; NONCE_LEN],
    plain: &[u8],
) -> Vec<u8> {
    let nonce_at = KEY_ID_AT + key_id.len();
    let body_at = nonce_at + NONCE_LEN;
    let mut out = Vec::with_capacity(body_at + plain.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0);
    // valid_key_id bounds the length by MAX_KEY_ID_LEN.
    out.push(u8::try_from(key_id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(plain);
    let aad = aad(&out[..nonce_at], stored_id);
    let (head, body) = out.split_at_mut(body_at);
    let tag =
        match cipher.encrypt_in_place_detached(XNonce::from_slice(&head[nonce_at..]), &aad, body) {
            Ok(tag) => tag,
            // XChaCha20 fails only past 256 GiB of data; sessions are capped
            // far below that by every store's size limit.
            Err(_) => unreachable!("XChaCha20-Poly1305 encrypts any session"),
        };
    out.extend_from_slice(&tag);
    out
}

/// Decrypts `sealed` under `cipher` for the record of `stored_id`: the
/// data, or `None` if it does not authenticate.
pub fn open(cipher: &XChaCha20Poly1305, sealed: &Sealed<'_>, stored_id: &str) -> Option<Vec<u8>> {
    let aad = aad(sealed.header, stored_id);
    let split = sealed.body.len() - TAG_LEN;
    let (ciphertext, tag) = sealed.body.split_at(split);
    let mut plain = ciphertext.to_vec();
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(sealed.nonce),
            &aad,
            &mut plain,
            Tag::from_slice(tag),
        )
        .ok()?;
    Some(plain)
}

/// For the fuzz target: decodes `data` as the record of session `sid`
/// under a fixed key `k1` (all bytes 1). Never panics; whatever opens
/// re-seals, with its own nonce, to the same bytes.
#[cfg(feature = "unstable-internals")]
pub fn check_round_trip(data: &[u8]) {
    use chacha20poly1305::KeyInit as _;
    let cipher = XChaCha20Poly1305::new(&[1u8; 32].into());
    if let Ok(Parsed::Sealed(s)) = parse(data)
        && let Some(plain) = open(&cipher, &s, "sid")
    {
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(s.nonce);
        assert_eq!(seal(&cipher, s.key_id, "sid", &nonce, &plain), data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::KeyInit as _;

    fn cipher(b: u8) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&[b; 32].into())
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let sealed = seal(&cipher(1), "k1", "sid", &[7; NONCE_LEN], b"abc");
        assert_eq!(&sealed[..4], b"\xFFSLE");
        assert_eq!(sealed[4], 1, "version");
        assert_eq!(sealed[5], 0, "flags");
        assert_eq!(sealed[6], 2, "key id length");
        assert_eq!(&sealed[7..9], b"k1");
        assert_eq!(&sealed[9..33], &[7; NONCE_LEN]);
        assert_eq!(sealed.len(), 33 + 3 + TAG_LEN);
        assert_eq!(overhead("k1"), 33 + TAG_LEN);
        assert_eq!(overhead(&"k".repeat(MAX_KEY_ID_LEN)), 79);
        let Ok(Parsed::Sealed(s)) = parse(&sealed) else {
            panic!("parses")
        };
        assert_eq!(s.key_id, "k1");
        assert_eq!(open(&cipher(1), &s, "sid").as_deref(), Some(&b"abc"[..]));
        assert_eq!(open(&cipher(1), &s, "other"), None, "bound to the id");
        assert_eq!(open(&cipher(2), &s, "sid"), None, "bound to the key");
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let sealed = seal(&cipher(1), "k1", "sid", &[7; NONCE_LEN], b"data");
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            match parse(&bad) {
                Ok(Parsed::Sealed(s)) => {
                    let c = if s.key_id == "k1" {
                        cipher(1)
                    } else {
                        cipher(9)
                    };
                    assert_eq!(open(&c, &s, "sid"), None, "bit {i}");
                }
                Ok(Parsed::Plain) | Err(_) => {}
            }
        }
    }

    #[test]
    fn malformed_envelopes_are_named() {
        assert_eq!(parse(b"plain"), Ok(Parsed::Plain));
        assert_eq!(parse(b"\xFFSLE"), Err(Malformed::Truncated));
        assert_eq!(parse(b"\xFFSLE\x02"), Err(Malformed::Version(2)));
        assert_eq!(parse(b"\xFFSLE\x01\x01"), Err(Malformed::Flags(1)));
        assert_eq!(parse(b"\xFFSLE\x01\x00\x00"), Err(Malformed::KeyId));
        assert_eq!(parse(b"\xFFSLE\x01\x00\x01 "), Err(Malformed::KeyId));
        assert_eq!(parse(b"\xFFSLE\x01\x00\x01k"), Err(Malformed::Truncated));
    }
}
