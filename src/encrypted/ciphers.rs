//! The AES keys an [`Encrypted`](crate::Encrypted) store uses: its own
//! writer key, and the keys of the writers whose records it reads.
//!
//! A writer is one `Encrypted` in one process. It draws a random salt,
//! derives its AES-256-GCM key from the keyring's current key and the salt
//! (`envelope::subkey`), and numbers its seals: seal `n` uses nonce `n`.
//! No two seals under one derived key share a nonce, with no state shared
//! between processes, and neither a syscall for randomness nor a key
//! schedule per save. A fork gives the child a writer of its own (the
//! process id is checked on every seal), so parent and child never count
//! under one key (the id is read from memory, not asked of the kernel:
//! `crate::pid`).
//!
//! Reading a record needs the key of the writer that sealed it: derived
//! once per (key, salt) and kept in a bounded table.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use ring::aead::LessSafeKey;

use super::Keyring;
use super::envelope::{self, NONCE_LEN, SALT_LEN};
use crate::error::{Error, Result};

/// Writer keys kept for reading at most; past that the table starts over
/// (each process lifetime that saved a live session has one).
const MAX_READ_KEYS: usize = 4096;
/// A writer that has sealed this many records draws a new salt (never
/// reached in practice; keeps the count far from wrapping).
const MAX_SEALS: u64 = 1 << 62;

/// This process's writer: its salt, its key, and its count of seals.
struct Writer {
    pid: u32,
    salt: [u8; SALT_LEN],
    key: Arc<LessSafeKey>,
    seals: AtomicU64,
}

/// Derived keys by (position of the key in the keyring, writer's salt).
/// Hashed with foldhash, seeded at random per table, rather than SipHash:
/// the key is 24 bytes of which 16 are a writer's random salt, and the
/// hash was a fifth of a load's own cost around the cipher. Someone who
/// can write the store can choose salts, but not see the seed, and the
/// table never holds more than [`MAX_READ_KEYS`].
type ReadKeys = HashMap<(usize, u128), Arc<LessSafeKey>, foldhash::fast::RandomState>;

/// The keys in use by one `Encrypted` (shared by its clones' threads).
#[derive(Default)]
pub(crate) struct Ciphers {
    writer: RwLock<Option<Arc<Writer>>>,
    read: RwLock<ReadKeys>,
}

impl Ciphers {
    /// Runs `f` with the writer key of this process for the keyring's
    /// current key, the salt to record and the next nonce under that key
    /// (never used under it before). The key is used under the writer's
    /// read lock, not cloned out of it: a save writes no shared reference
    /// count.
    pub fn with_seal_key<R>(
        &self,
        keys: &Keyring,
        f: impl FnOnce(&LessSafeKey, &[u8; SALT_LEN], [u8; NONCE_LEN]) -> R,
    ) -> Result<R> {
        let pid = crate::pid::current();
        loop {
            if let Some(w) = self.writer.read().as_ref().filter(|w| w.pid == pid) {
                let n = w.seals.fetch_add(1, Ordering::Relaxed);
                if n < MAX_SEALS {
                    return Ok(f(&w.key, &w.salt, envelope::nonce_of(n)));
                }
            }
            let mut slot = self.writer.write();
            let stale = slot
                .as_ref()
                .is_none_or(|w| w.pid != pid || w.seals.load(Ordering::Relaxed) >= MAX_SEALS);
            if stale {
                let mut salt = [0u8; SALT_LEN];
                getrandom::fill(&mut salt).map_err(Error::random)?;
                let key = Arc::new(envelope::subkey(&keys.current().key, &salt));
                *slot = Some(Arc::new(Writer {
                    pid,
                    salt,
                    key: Arc::clone(&key),
                    seals: AtomicU64::new(0),
                }));
                self.remember(0, salt, key);
            }
        }
    }

    /// Runs `f` with the key of the writer that sealed with `salt` under
    /// the keyring's key at `position`; `None` if the keyring has no key
    /// there. A key already derived is used under the table's read lock,
    /// not cloned out of it: a load then writes no shared reference count.
    pub fn with_read_key<R>(
        &self,
        keys: &Keyring,
        position: usize,
        salt: &[u8; SALT_LEN],
        f: impl FnOnce(&LessSafeKey) -> R,
    ) -> Option<R> {
        if let Some(k) = self
            .read
            .read()
            .get(&(position, u128::from_le_bytes(*salt)))
        {
            return Some(f(k));
        }
        let key = Arc::new(envelope::subkey(&keys.at(position)?.key, salt));
        let r = f(&key);
        self.remember(position, *salt, key);
        Some(r)
    }

    fn remember(&self, position: usize, salt: [u8; SALT_LEN], key: Arc<LessSafeKey>) {
        let mut read = self.read.write();
        if read.len() >= MAX_READ_KEYS {
            read.clear();
        }
        read.insert((position, u128::from_le_bytes(salt)), key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encrypted::envelope::{Parsed, open, parse, seal, subkey};

    fn keyring() -> Keyring {
        Keyring::new("cur", [1; 32])
            .and_then(|k| k.with_retired("old", [2; 32]))
            .expect("keyring")
    }

    /// A record of the writer with `salt` under the key at `position`.
    fn record(position: usize, salt: &[u8; SALT_LEN], n: u64) -> Vec<u8> {
        let (id, master) = [("cur", [1; 32]), ("old", [2; 32])][position];
        seal(
            &subkey(&master, salt),
            id,
            salt,
            envelope::nonce_of(n),
            "sid",
            b"data",
        )
    }

    /// Whether `c` opens `sealed` with the key it keeps (or derives) for
    /// `position`; `None` if the keyring has no key there.
    fn opens(c: &Ciphers, keys: &Keyring, position: usize, sealed: &[u8]) -> Option<bool> {
        let Ok(Parsed::Sealed(s)) = parse(sealed) else {
            panic!("an envelope")
        };
        c.with_read_key(keys, position, &s.salt, |k| open(k, &s, "sid").is_some())
    }

    /// The table tells writers apart by every byte of their salt and by the
    /// key's position, whether the key is derived on the spot or found.
    #[test]
    fn read_keys_are_told_apart_by_position_and_salt() {
        let keys = keyring();
        let c = Ciphers::default();
        let mut salts = vec![[7u8; SALT_LEN]];
        for at in [0, 7, 8, 15] {
            let mut s = [7u8; SALT_LEN];
            s[at] ^= 1;
            salts.push(s);
        }
        for round in 0..3 {
            for position in 0..2 {
                for salt in &salts {
                    let sealed = record(position, salt, round);
                    assert_eq!(opens(&c, &keys, position, &sealed), Some(true));
                    assert_eq!(opens(&c, &keys, 1 - position, &sealed), Some(false));
                    let mut other = *salt;
                    other[3] ^= 0x80;
                    let Ok(Parsed::Sealed(s)) = parse(&sealed) else {
                        panic!("an envelope")
                    };
                    let moved =
                        c.with_read_key(&keys, position, &other, |k| open(k, &s, "sid").is_some());
                    assert_eq!(moved, Some(false), "another salt's key");
                }
            }
        }
        assert_eq!(opens(&c, &keys, 2, &record(0, &salts[0], 0)), None);
        // Each (position, salt) and (position, altered salt) once.
        assert_eq!(c.read.read().len(), 2 * 2 * salts.len());
    }

    /// The table starts over when full and derives again what it dropped.
    #[test]
    fn a_full_table_starts_over() {
        let keys = keyring();
        let c = Ciphers::default();
        let salt_of = |i: usize| u128::to_le_bytes(i as u128 * 0x9E37_79B9_7F4A_7C15);
        let first = record(0, &salt_of(0), 0);
        for i in 0..MAX_READ_KEYS + 10 {
            let salt = salt_of(i);
            assert!(c.with_read_key(&keys, 0, &salt, |_| ()).is_some());
            assert!(c.read.read().len() <= MAX_READ_KEYS);
        }
        assert!(c.read.read().len() < MAX_READ_KEYS, "started over");
        assert_eq!(opens(&c, &keys, 0, &first), Some(true));
    }

    /// The writer's key is in the read table from its first seal, and its
    /// nonces count up from 0.
    #[test]
    fn a_writer_counts_its_nonces_and_reads_its_own_records() {
        let keys = keyring();
        let c = Ciphers::default();
        let mut salt = None;
        for n in 0..3 {
            let sealed = c
                .with_seal_key(&keys, |key, s, nonce| {
                    assert_eq!(nonce, envelope::nonce_of(n));
                    assert_eq!(*salt.get_or_insert(*s), *s, "one salt");
                    seal(key, "cur", s, nonce, "sid", b"data")
                })
                .expect("seal");
            assert_eq!(c.read.read().len(), 1, "the writer's key, derived once");
            assert_eq!(opens(&c, &keys, 0, &sealed), Some(true));
        }
    }
}
