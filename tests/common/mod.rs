//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[macro_use]
pub mod conformance;
pub mod child;
pub mod disk;
pub mod power_loss;
pub mod root;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]
pub mod server_check;
pub mod servers;
pub mod web_backends;

use sessionlog::SessionId;

/// A session id from a string the test knows to be valid.
pub fn id(s: &str) -> SessionId {
    SessionId::new(s).expect("valid id")
}

/// Lowercase unpadded base32 (RFC 4648's alphabet in lowercase), as
/// DirStore names its files.
pub fn base32(bytes: &[u8]) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let (mut acc, mut bits, mut out) = (0u64, 0, String::new());
    for &b in bytes {
        acc = (acc << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(A[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(A[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The bytes of lowercase unpadded base32, or `None` for a character
/// outside its alphabet.
pub fn un_base32(s: &str) -> Option<Vec<u8>> {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let (mut acc, mut bits, mut out) = (0u64, 0, Vec::new());
    for c in s.bytes() {
        acc = (acc << 5) | A.iter().position(|&a| a == c)? as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}
