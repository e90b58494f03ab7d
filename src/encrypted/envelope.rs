//! The envelope: how an encrypted session's data is laid out in the
//! `data` field of the record the wrapped store keeps (DESIGN.md §14.2).
//!
//! ```text
//! offset     size    field
//! 0          4       MAGIC: FF 53 4C 45 ("\xFFSLE"; 0xFF never occurs in UTF-8)
//! 4          1       VERSION: 2
//! 5          1       FLAGS: 0 (reserved; a set bit is refused)
//! 6          1       k: length of the key id, 1..=32
//! 7          k       the key id: ASCII A-Z a-z 0-9 . _ -
//! 7+k        16      the writer's salt: its AES-256-GCM key is derived
//!                    from the named key and this salt (`subkey`)
//! 23+k       12      the nonce: the writer's count of its seals
//! 35+k       n+16    AES-256-GCM ciphertext of the n data bytes, then
//!                    its 16-byte tag
//! ```
//!
//! The associated data is [`AAD_DOMAIN`], the header (bytes 0 to 7+k),
//! the stored id's length as a little-endian u16 and the stored id: the
//! ciphertext authenticates only under the key it names, in the record of
//! the session it was written for. The salt and nonce need no place in it:
//! changing either changes the key or the keystream, and the tag fails.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::hkdf;

/// What every envelope starts with.
pub const MAGIC: [u8; 4] = [0xFF, b'S', b'L', b'E'];
/// The one envelope version this build writes and reads.
pub const VERSION: u8 = 2;
/// Offsets, each chained from the sizes before it.
const VERSION_AT: usize = MAGIC.len();
const FLAGS_AT: usize = VERSION_AT + 1;
const KEY_ID_LEN_AT: usize = FLAGS_AT + 1;
const KEY_ID_AT: usize = KEY_ID_LEN_AT + 1;
/// Size of the writer's salt.
pub const SALT_LEN: usize = 16;
/// Size of the nonce.
pub const NONCE_LEN: usize = 12;
/// Size of the tag.
pub const TAG_LEN: usize = 16;
/// The longest key id.
pub const MAX_KEY_ID_LEN: usize = 32;
/// Domain separation of the associated data: of no use to any other
/// scheme, and another scheme's is not one of these.
pub const AAD_DOMAIN: &[u8] = b"sessionlog encrypted session v2\0";
/// HKDF's salt for extracting from a keyring key, and the label of the
/// writer subkeys expanded from it.
const KDF_SALT: &[u8] = b"sessionlog keyring key v2";
const KDF_LABEL: &[u8] = b"sessionlog aes-256-gcm writer key v2";

/// Whether `id` is a key id an envelope may name.
pub fn valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The bytes an envelope naming `key_id` adds to the data.
pub fn overhead(key_id: &str) -> usize {
    KEY_ID_AT + key_id.len() + SALT_LEN + NONCE_LEN + TAG_LEN
}

/// The AES-256-GCM key of the writer whose salt is `salt`, under the
/// keyring key `key`: HKDF-SHA256 (extract with [`KDF_SALT`], expand with
/// [`KDF_LABEL`] and the salt). Each writer (an `Encrypted` in one
/// process) draws its salt at random and counts its nonces, so that no
/// two seals under one derived key share a nonce, however many processes
/// write and for however long.
pub fn subkey(key: &[u8; 32], salt: &[u8; SALT_LEN]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, KDF_SALT).extract(key);
    let info = [KDF_LABEL, &salt[..]];
    // Expanding fails only for an output longer than 255 hash blocks; an
    // AES-256 key is one.
    let okm = match prk.expand(&info, &AES_256_GCM) {
        Ok(okm) => okm,
        Err(_) => unreachable!("HKDF-SHA256 expands to 32 bytes"),
    };
    LessSafeKey::new(UnboundKey::from(okm))
}

/// A record's data, as far as it can be read without a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Does not start with [`MAGIC`]: data saved before encryption.
    Plain,
    /// An envelope: its key id, header, salt, nonce, and ciphertext with tag.
    Sealed(Sealed<'a>),
}

/// The parts of an envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Sealed<'a> {
    /// The key the data was encrypted under.
    pub key_id: &'a str,
    /// The writer's salt, which with the key gives the AES key.
    pub salt: [u8; SALT_LEN],
    header: &'a [u8],
    nonce: [u8; NONCE_LEN],
    /// The ciphertext, without its tag.
    body: &'a [u8],
    tag: [u8; TAG_LEN],
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
    /// Shorter than its header, salt, nonce and tag.
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

/// `N` bytes of `data` from `at`.
fn array<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N], Malformed> {
    data.get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or(Malformed::Truncated)
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
    let salt_at = KEY_ID_AT + k;
    let nonce_at = salt_at + SALT_LEN;
    let body_at = nonce_at + NONCE_LEN;
    let id_bytes = data.get(KEY_ID_AT..salt_at).ok_or(Malformed::Truncated)?;
    let key_id = std::str::from_utf8(id_bytes).map_err(|_| Malformed::KeyId)?;
    if !valid_key_id(key_id) {
        return Err(Malformed::KeyId);
    }
    let Some(tag_at) = data.len().checked_sub(TAG_LEN).filter(|&t| t >= body_at) else {
        return Err(Malformed::Truncated);
    };
    Ok(Parsed::Sealed(Sealed {
        key_id,
        salt: array(data, salt_at)?,
        header: &data[..salt_at],
        nonce: array(data, nonce_at)?,
        body: &data[body_at..tag_at],
        tag: array(data, tag_at)?,
    }))
}

/// The longest associated data built without the heap: the domain, the
/// longest header, the id's length and the longest session id.
const AAD_INLINE: usize = AAD_DOMAIN.len() + KEY_ID_AT + MAX_KEY_ID_LEN + 2 + crate::id::MAX_ID_LEN;

/// The associated data of one seal or open, built on the stack: every
/// header [`parse`] accepts and every [`SessionId`](crate::SessionId) fits
/// (a longer one, which no caller passes, goes to the heap rather than
/// failing).
enum AadBytes {
    Inline([u8; AAD_INLINE], usize),
    Heap(Vec<u8>),
}

impl AsRef<[u8]> for AadBytes {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        match self {
            AadBytes::Inline(buf, len) => &buf[..*len],
            AadBytes::Heap(v) => v,
        }
    }
}

/// The associated data of an envelope with `header` in the record of
/// `stored_id`. Inlined: built in its caller's frame, not moved there.
#[inline]
fn aad(header: &[u8], stored_id: &str) -> AadBytes {
    // Session ids are at most MAX_ID_LEN (far below 65536) bytes.
    let len = u16::try_from(stored_id.len()).unwrap_or(u16::MAX);
    let id = stored_id.as_bytes();
    let len_at = AAD_DOMAIN.len() + header.len();
    let id_at = len_at + 2;
    let end = id_at + id.len();
    if end > AAD_INLINE {
        return AadBytes::Heap([AAD_DOMAIN, header, &len.to_le_bytes(), id].concat());
    }
    let mut buf = AAD_START;
    buf[AAD_DOMAIN.len()..len_at].copy_from_slice(header);
    buf[len_at..id_at].copy_from_slice(&len.to_le_bytes());
    buf[id_at..end].copy_from_slice(id);
    AadBytes::Inline(buf, end)
}

/// The inline associated data before a header is added: the domain, then
/// room for the rest.
const AAD_START: [u8; AAD_INLINE] = {
    let mut b = [0u8; AAD_INLINE];
    let mut i = 0;
    while i < AAD_DOMAIN.len() {
        b[i] = AAD_DOMAIN[i];
        i += 1;
    }
    b
};

/// The nonce of a writer's seal number `count`.
pub fn nonce_of(count: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(&count.to_le_bytes());
    n
}

/// Encrypts `plain` under `key` (the subkey of the key named `key_id` for
/// `salt`), for the record of `stored_id`, with `nonce`, which must never
/// have sealed anything under that subkey. `key_id` must be
/// [`valid_key_id`].
#[cfg(any(test, feature = "unstable-internals"))]
pub fn seal(
    key: &LessSafeKey,
    key_id: &str,
    salt: &[u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    stored_id: &str,
    plain: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    seal_into(key, key_id, salt, nonce, stored_id, plain, &mut out);
    out
}

/// [`seal`] into `out` (cleared first; grown to the envelope's size if it
/// is smaller).
pub fn seal_into(
    key: &LessSafeKey,
    key_id: &str,
    salt: &[u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
    stored_id: &str,
    plain: &[u8],
    out: &mut Vec<u8>,
) {
    let salt_at = KEY_ID_AT + key_id.len();
    let body_at = salt_at + SALT_LEN + NONCE_LEN;
    out.clear();
    out.reserve_exact(body_at + plain.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0);
    // valid_key_id bounds the length by MAX_KEY_ID_LEN.
    out.push(u8::try_from(key_id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let aad = aad(&out[..salt_at], stored_id);
    let tag = match key.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut out[body_at..],
    ) {
        Ok(tag) => tag,
        // AES-GCM fails only past 64 GiB in one message; sessions are
        // capped far below that by every store's size limit.
        Err(_) => unreachable!("AES-256-GCM encrypts any session"),
    };
    out.extend_from_slice(tag.as_ref());
}

/// Decrypts `sealed` under `key` (the subkey for its key and salt) for the
/// record of `stored_id`: the data, or `None` if it does not authenticate.
#[cfg(any(test, feature = "unstable-internals"))]
pub fn open(key: &LessSafeKey, sealed: &Sealed<'_>, stored_id: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    open_into(key, sealed, stored_id, &mut out).then_some(out)
}

/// [`open`] into `out` (cleared first), decrypting in place there: `true`
/// with the data in `out`, or `false` with `out` zeroed and empty if it
/// does not authenticate. The tag is not copied into `out`, which then
/// needs only the data's length: a fresh buffer for 1 KiB of data stays
/// within the allocator's per-thread cache (glibc's ends at 1032 bytes).
pub fn open_into(
    key: &LessSafeKey,
    sealed: &Sealed<'_>,
    stored_id: &str,
    out: &mut Vec<u8>,
) -> bool {
    let aad = aad(sealed.header, stored_id);
    out.clear();
    out.extend_from_slice(sealed.body);
    match key.open_in_place_separate_tag(
        Nonce::assume_unique_for_key(sealed.nonce),
        Aad::from(aad),
        Tag::from(sealed.tag),
        out,
        0..,
    ) {
        Ok(_) => true,
        Err(_) => {
            out.fill(0);
            out.clear();
            false
        }
    }
}

/// For the fuzz target: decodes `data` as the record of session `sid`
/// under a fixed key `k1` (all bytes 1). Never panics; whatever opens
/// re-seals, with its own salt and nonce, to the same bytes.
#[cfg(feature = "unstable-internals")]
pub fn check_round_trip(data: &[u8]) {
    if let Ok(Parsed::Sealed(s)) = parse(data) {
        let key = subkey(&[1u8; 32], &s.salt);
        if let Some(plain) = open(&key, &s, "sid") {
            assert_eq!(seal(&key, s.key_id, &s.salt, s.nonce, "sid", &plain), data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; SALT_LEN] = [5; SALT_LEN];

    fn key(b: u8) -> LessSafeKey {
        subkey(&[b; 32], &SALT)
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let sealed = seal(&key(1), "k1", &SALT, nonce_of(7), "sid", b"abc");
        assert_eq!(&sealed[..4], b"\xFFSLE");
        assert_eq!(sealed[4], 2, "version");
        assert_eq!(sealed[5], 0, "flags");
        assert_eq!(sealed[6], 2, "key id length");
        assert_eq!(&sealed[7..9], b"k1");
        assert_eq!(&sealed[9..25], &SALT);
        assert_eq!(&sealed[25..37], &nonce_of(7));
        assert_eq!(sealed[25], 7, "the count, little-endian");
        assert_eq!(sealed.len(), 37 + 3 + TAG_LEN);
        assert_eq!(overhead("k1"), 37 + TAG_LEN);
        assert_eq!(overhead(&"k".repeat(MAX_KEY_ID_LEN)), 83);
        let Ok(Parsed::Sealed(s)) = parse(&sealed) else {
            panic!("parses")
        };
        assert_eq!(s.key_id, "k1");
        assert_eq!(s.salt, SALT);
        assert_eq!(open(&key(1), &s, "sid").as_deref(), Some(&b"abc"[..]));
        assert_eq!(open(&key(1), &s, "other"), None, "bound to the id");
        assert_eq!(open(&key(2), &s, "sid"), None, "bound to the key");
        let other_salt = subkey(&[1; 32], &[6; SALT_LEN]);
        assert_eq!(open(&other_salt, &s, "sid"), None, "bound to the salt");
    }

    /// The associated data is the documented concatenation, on the stack
    /// for every header and id there is, on the heap past that.
    #[test]
    fn the_associated_data_is_the_documented_one() {
        let short = b"\xFFSLE\x02\x00\x02k1".to_vec();
        let longest = [&MAGIC[..], &[VERSION, 0, 32], &[b'k'; MAX_KEY_ID_LEN]].concat();
        for header in [short, longest] {
            for len in [
                0,
                1,
                32,
                crate::id::MAX_ID_LEN,
                crate::id::MAX_ID_LEN + 1,
                70_000,
            ] {
                let id = "i".repeat(len);
                let n = u16::try_from(len).unwrap_or(u16::MAX);
                let expected = [AAD_DOMAIN, &header, &n.to_le_bytes(), id.as_bytes()].concat();
                let a = aad(&header, &id);
                assert_eq!(a.as_ref(), &expected[..], "id of {len} bytes");
                let inline = matches!(a, AadBytes::Inline(..));
                assert_eq!(inline, expected.len() <= AAD_INLINE, "id of {len} bytes");
                if header.len() == KEY_ID_AT + MAX_KEY_ID_LEN {
                    assert_eq!(inline, len <= crate::id::MAX_ID_LEN, "every id fits");
                }
            }
        }
    }

    /// An envelope as the first version-2 build sealed it (key, salt,
    /// nonce and id fixed): the layout, the key derivation and the
    /// associated data stay byte for byte what stored records hold.
    #[test]
    fn a_known_envelope_seals_and_opens_byte_for_byte() {
        const KNOWN: &str = "ff534c450200026b3105050505050505050505050505050505070000000000000000000000\
                             a7ecef840aa6c43dcb5f2050d1163b60e1b35d53620f4fa447a288ad736e5aa1a2a8";
        let known: Vec<u8> = (0..KNOWN.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&KNOWN[i..i + 2], 16).expect("hex"))
            .collect();
        let id = "0123456789abcdef0123456789abcdef";
        let plain = b"user=42;role=admin";
        let k = subkey(&[1; 32], &SALT);
        assert_eq!(seal(&k, "k1", &SALT, nonce_of(7), id, plain), known);
        let Ok(Parsed::Sealed(s)) = parse(&known) else {
            panic!("parses")
        };
        assert_eq!(open(&k, &s, id).as_deref(), Some(&plain[..]));
    }

    #[test]
    fn subkeys_differ_by_key_and_salt() {
        let seal_with = |k: &LessSafeKey| seal(k, "k1", &SALT, nonce_of(0), "sid", &[0; 32]);
        let a = seal_with(&subkey(&[1; 32], &SALT));
        assert_eq!(a, seal_with(&subkey(&[1; 32], &SALT)), "deterministic");
        assert_ne!(a, seal_with(&subkey(&[2; 32], &SALT)));
        assert_ne!(a, seal_with(&subkey(&[1; 32], &[6; SALT_LEN])));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let sealed = seal(&key(1), "k1", &SALT, nonce_of(3), "sid", b"data");
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            match parse(&bad) {
                Ok(Parsed::Sealed(s)) => {
                    let master = if s.key_id == "k1" { 1 } else { 9 };
                    let k = subkey(&[master; 32], &s.salt);
                    assert_eq!(open(&k, &s, "sid"), None, "bit {i}");
                }
                Ok(Parsed::Plain) | Err(_) => {}
            }
        }
    }

    #[test]
    fn malformed_envelopes_are_named() {
        assert_eq!(parse(b"plain"), Ok(Parsed::Plain));
        assert_eq!(parse(b"\xFFSLE"), Err(Malformed::Truncated));
        assert_eq!(parse(b"\xFFSLE\x01"), Err(Malformed::Version(1)));
        assert_eq!(parse(b"\xFFSLE\x02\x01"), Err(Malformed::Flags(1)));
        assert_eq!(parse(b"\xFFSLE\x02\x00\x00"), Err(Malformed::KeyId));
        assert_eq!(parse(b"\xFFSLE\x02\x00\x01 "), Err(Malformed::KeyId));
        assert_eq!(parse(b"\xFFSLE\x02\x00\x01k"), Err(Malformed::Truncated));
        let mut short = seal(&key(1), "k1", &SALT, nonce_of(0), "sid", b"");
        short.pop();
        assert_eq!(parse(&short), Err(Malformed::Truncated));
    }
}
