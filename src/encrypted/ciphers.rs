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
type ReadKeys = HashMap<(usize, [u8; SALT_LEN]), Arc<LessSafeKey>>;

/// The keys in use by one `Encrypted` (shared by its clones' threads).
#[derive(Default)]
pub(crate) struct Ciphers {
    writer: RwLock<Option<Arc<Writer>>>,
    read: RwLock<ReadKeys>,
}

/// What a seal uses: the key, the salt to record and a nonce never used
/// under that key.
pub(crate) struct SealWith {
    pub key: Arc<LessSafeKey>,
    pub salt: [u8; SALT_LEN],
    pub nonce: [u8; NONCE_LEN],
}

impl Ciphers {
    /// The writer key of this process for the keyring's current key, and
    /// the next nonce under it.
    pub fn seal_with(&self, keys: &Keyring) -> Result<SealWith> {
        let pid = crate::pid::current();
        loop {
            if let Some(w) = self.writer.read().as_ref().filter(|w| w.pid == pid) {
                let n = w.seals.fetch_add(1, Ordering::Relaxed);
                if n < MAX_SEALS {
                    return Ok(SealWith {
                        key: Arc::clone(&w.key),
                        salt: w.salt,
                        nonce: envelope::nonce_of(n),
                    });
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
        if let Some(k) = self.read.read().get(&(position, *salt)) {
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
        read.insert((position, salt), key);
    }
}
