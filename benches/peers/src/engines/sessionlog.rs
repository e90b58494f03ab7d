//! sessionlog's own stores: `LogStore`, and `DirStore` (a file per
//! session) through the same `SessionStore` adapter.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sessionlog::{
    DirStore, Encrypted, Keyring, LogStore, Owner, Session, SessionId, SessionStore, SyncPolicy,
};

use super::{Engine, Mode, Result};

/// Sessions an owner has, on average, in the `sl-owner` engine.
pub const PER_OWNER: u64 = 10;

/// How many owners the `sl-owner` engine's sessions are spread over.
static OWNERS: AtomicU64 = AtomicU64::new(1);

/// Spreads the `sl-owner` engine's sessions over owners of `PER_OWNER`
/// sessions each, for a store of `sessions` sessions.
pub fn set_owned_sessions(sessions: usize) {
    OWNERS.store((sessions as u64 / PER_OWNER).max(1), Ordering::Relaxed);
}

/// The owner of the session `id` in the `sl-owner` engine, fixed by the id:
/// its first 16 hex characters (random) modulo the number of owners, so
/// that an overwrite keeps the owner, as a logged-in user's requests do.
/// Built on every save, as an application builds it from its user's id.
fn owner_of(id: &str) -> Result<Owner> {
    let bits = id
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or("sl-owner: ids must start with 16 hex characters")?;
    Ok(Owner::new(format!(
        "user-{}",
        bits % OWNERS.load(Ordering::Relaxed)
    ))?)
}

/// Any `SessionStore` as an engine; `compact` runs if one is given.
pub struct StoreEngine<S> {
    store: S,
    compact: Option<fn(&S) -> Result<()>>,
    /// Whether every save carries an owner (`owner_of`).
    owned: bool,
}

impl<S: SessionStore> StoreEngine<S> {
    pub fn new(store: S) -> Self {
        StoreEngine {
            store,
            compact: None,
            owned: false,
        }
    }
}

impl<S: SessionStore> Engine for StoreEngine<S> {
    fn save(&self, id: &str, data: &[u8]) -> Result<()> {
        // As a web application does: the id arrives as a string (cookie).
        let mut s = Session::new(SessionId::new(id)?, data.to_vec());
        if self.owned {
            s.owner = Some(owner_of(id)?);
        }
        self.store.save_session(&mut s)?;
        Ok(())
    }

    fn load(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .store
            .load_session(&SessionId::new(id)?)?
            .map(|s| s.data))
    }

    fn load_into(&self, id: &str, buf: &mut Vec<u8>) -> Result<bool> {
        buf.clear();
        Ok(self
            .store
            .load_session_with(&SessionId::new(id)?, &mut |v| {
                buf.extend_from_slice(v.data())
            })?)
    }

    fn touch(&self, id: &str) -> Result<bool> {
        Ok(self.store.touch_session(&SessionId::new(id)?)?)
    }

    fn delete(&self, id: &str) -> Result<()> {
        self.store.delete_session(&SessionId::new(id)?)?;
        Ok(())
    }

    fn compact(&mut self) -> Result<bool> {
        match self.compact {
            Some(f) => f(&self.store).map(|()| true),
            None => Ok(false),
        }
    }
    fn compact_concurrent(&self) -> Option<Result<()>> {
        self.compact.map(|f| f(&self.store))
    }
}

fn policy(mode: Mode) -> SyncPolicy {
    match mode {
        Mode::Buffered => SyncPolicy::Never,
        Mode::Durable => SyncPolicy::Always,
    }
}

/// `LogStore` with `SyncPolicy::Never` or `Always`, otherwise as shipped:
/// the background thread on (it may compact during a phase, as it would in
/// production, and it syncs what a reopen replayed).
pub fn open_log(dir: &Path, mode: Mode) -> Result<Box<dyn Engine>> {
    let store = LogStore::options()
        .sync(policy(mode))
        .open(dir.join("sessions.log"))?;
    Ok(Box::new(StoreEngine {
        store,
        compact: Some(|s: &LogStore| s.compact().map(drop).map_err(Into::into)),
        owned: false,
    }))
}

/// `open_log`'s store, every save carrying an owner: owners of
/// `PER_OWNER` sessions on average, each session's fixed by its id.
pub fn open_log_owned(dir: &Path, mode: Mode) -> Result<Box<dyn Engine>> {
    let store = LogStore::options()
        .sync(policy(mode))
        .open(dir.join("sessions.log"))?;
    Ok(Box::new(StoreEngine {
        store,
        compact: Some(|s: &LogStore| s.compact().map(drop).map_err(Into::into)),
        owned: true,
    }))
}

/// `open_log`'s store wrapped in `Encrypted`: every save
/// encrypts, every load decrypts (AES-256-GCM under a per-process key derived from a fixed key).
pub fn open_log_encrypted(dir: &Path, mode: Mode) -> Result<Box<dyn Engine>> {
    let store = LogStore::options()
        .sync(policy(mode))
        .open(dir.join("sessions.log"))?;
    let keys = Keyring::new("bench", [7; 32])?;
    Ok(Box::new(StoreEngine {
        store: Encrypted::new(store, keys),
        compact: Some(|s: &Encrypted<LogStore>| s.inner().compact().map(drop).map_err(Into::into)),
        owned: false,
    }))
}

/// `DirStore` with `SyncPolicy::Never` or `Always`; nothing to compact
/// (every write replaces or removes its file).
pub fn open_dir(dir: &Path, mode: Mode) -> Result<Box<dyn Engine>> {
    let store = DirStore::options()
        .sync(policy(mode))
        .open(dir.join("sessions"))?;
    Ok(Box::new(StoreEngine {
        store,
        compact: None,
        owned: false,
    }))
}
