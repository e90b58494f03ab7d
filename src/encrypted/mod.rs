//! `Encrypted`: any store, keeping each session's data encrypted at rest.
//! The envelope's layout is in [`envelope`], the keys and the
//! key file format in [`keyring`]; DESIGN.md §14.2 is the threat model.

mod ciphers;
pub(crate) mod envelope;
mod keyring;

use std::cell::Cell;
use std::time::Duration;

pub use keyring::Keyring;

use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::owner::{Owner, SessionInfo};
use crate::session::{SaveMode, Session, SessionRef};
use crate::store::{SessionIter, SessionStore, Touch};
use ciphers::Ciphers;
use envelope::Parsed;

/// A [`SessionStore`] that encrypts every session's data before the
/// wrapped store sees it, with AES-256-GCM under a key of this process's
/// own derived from the keyring's (a random salt per process, a nonce
/// never reused under it), and associated data that binds the ciphertext to the key id
/// and to the session's stored id ([`SessionStore::stored_id_of`]): a
/// record copied to another session, or to a store with other keys, does
/// not decrypt. What the wrapped store keeps of a session is its (stored)
/// id, the envelope's size, the key id, the version and the times.
///
/// Loads that cannot decrypt fail with a typed error and never return
/// data: [`Error::KeyMissing`] names the key id a record needs that the
/// [`Keyring`] lacks; [`Error::Undecryptable`] is a record that does not
/// authenticate (tampered, moved, another key of the same id), is
/// malformed, or is plaintext the store does not accept.
/// Touches, deletes, expiry, versions and conditional saves pass through
/// to the wrapped store unchanged.
///
/// ```no_run
/// use sessionlog::{Encrypted, HashedIds, Keyring, LogStore, Session, SessionId, SessionStore};
/// # fn main() -> sessionlog::Result<()> {
/// let keys = Keyring::from_file("/etc/myapp/session-keys")?;
/// let store = HashedIds::new(Encrypted::new(LogStore::open("sessions.db")?, keys));
/// let id = SessionId::generate();
/// store.save_session(&mut Session::new(id.clone(), b"user=42".to_vec()))?;
/// assert_eq!(store.load_session(&id)?.map(|s| s.data), Some(b"user=42".to_vec()));
/// # Ok(()) }
/// ```
///
/// # With `HashedIds`
///
/// Either order works: the ciphertext is bound to the id the bottom store
/// keeps, which [`SessionStore::stored_id_of`] gives through any wrapper.
/// `HashedIds::new(Encrypted::new(store, keys))` is the recommended one:
/// the `sessionlog` tools, which see the stored ids, decrypt its records
/// with `--key-file`, and either wrapper may be added to an existing store
/// later. With the other order, a store of clear ids that was already
/// encrypted cannot be moved to digests (its records are bound to the
/// clear ids).
///
/// # An existing store of plaintext sessions
///
/// A record that is not an envelope is refused with
/// [`Error::Undecryptable`] unless the store was opened with
/// [`Encrypted::accept_plaintext`]`(true)`, the migration setting: then it
/// is returned as it is, and encrypted by its next save (or by
/// [`Encrypted::rekey`], `sessionlog rekey`). A record that starts with
/// the envelope's magic bytes is always an envelope and must decrypt:
/// plaintext is never a fallback for an envelope that fails. Whoever can
/// write the store can plant a plaintext session while plaintext is
/// accepted, so turn it off once every record is encrypted.
pub struct Encrypted<S> {
    inner: S,
    keys: Keyring,
    accept_plaintext: bool,
    ciphers: Ciphers,
}

/// Shows the wrapped store and the key ids; never a key.
impl<S: std::fmt::Debug> std::fmt::Debug for Encrypted<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encrypted")
            .field("inner", &self.inner)
            .field("keys", &self.keys)
            .field("accept_plaintext", &self.accept_plaintext)
            .finish()
    }
}

/// What [`Encrypted::rekey`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RekeyReport {
    /// Live records looked at.
    pub examined: usize,
    /// Records re-encrypted under the current key by the rekey.
    pub rekeyed: usize,
    /// Records already under the current key (saved since by a server).
    pub current: usize,
    /// Records deleted or expired before they could be re-encrypted.
    pub gone: usize,
    /// Records left under another key: a writer kept saving them under an
    /// old current key (a server not yet given the new keyring), or they
    /// could not be decrypted.
    pub left: usize,
    /// The first error that left a record, for the message.
    pub first_error: Option<String>,
}

impl<S> Encrypted<S> {
    /// Wraps `inner`: saves encrypt under `keys`' current key, loads
    /// decrypt under any of its keys. Plaintext records are refused (see
    /// [`Encrypted::accept_plaintext`]).
    pub fn new(inner: S, keys: Keyring) -> Encrypted<S> {
        Encrypted {
            inner,
            keys,
            accept_plaintext: false,
            ciphers: Ciphers::default(),
        }
    }

    /// Whether records saved before the store was encrypted are read as
    /// they are (and encrypted on their next save). Default false: such a
    /// record is [`Error::Undecryptable`]. For the migration of an
    /// existing store only; see [the type's documentation](Encrypted).
    pub fn accept_plaintext(mut self, accept: bool) -> Encrypted<S> {
        self.accept_plaintext = accept;
        self
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keys
    }

    /// The wrapped store, for its own methods (`stats`, `compact`, ...).
    /// Sessions reached through it hold envelopes.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The bytes an envelope under the current key adds to a session's
    /// data: 51 plus the key id's length, at most 83. The wrapped store's
    /// size limit applies to the envelope; raise it by this much to keep a
    /// limit on the data itself (a `TooLarge` error from the wrapped store
    /// is reported in data bytes, less this overhead).
    pub fn overhead(&self) -> usize {
        envelope::overhead(self.keys.current_key_id())
    }

    /// The key id a stored record's data is encrypted under: `Some`, or
    /// `None` for a plaintext record. For audits and tests; reads no key.
    pub fn key_id_of(data: &[u8]) -> Result<Option<String>> {
        match envelope::parse(data) {
            Ok(Parsed::Plain) => Ok(None),
            Ok(Parsed::Sealed(s)) => Ok(Some(s.key_id.to_owned())),
            Err(m) => Err(Error::Undecryptable {
                session: "?".into(),
                key_id: None,
                reason: m.to_string(),
            }),
        }
    }

    /// `data` encrypted under the current key for the record the bottom
    /// store keeps under `stored_id`: for tools that write records
    /// directly (`sessionlog import --key-file`).
    pub fn encrypt_record(&self, stored_id: &SessionId, data: &[u8]) -> Result<Vec<u8>> {
        self.seal(stored_id, data)
    }

    /// The data of a record the bottom store keeps under `stored_id`, as
    /// a load would return it (plaintext as [`Encrypted::accept_plaintext`]
    /// says): for tools that read records directly (`sessionlog show`).
    pub fn decrypt_record(&self, stored_id: &SessionId, data: &[u8]) -> Result<Vec<u8>> {
        self.open(stored_id, stored_id, data)
    }

    /// `plain` sealed under the current key for the record of `stored`.
    fn seal(&self, stored: &SessionId, plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.seal_into(stored, plain, &mut out)?;
        Ok(out)
    }

    /// [`Encrypted::seal`] into `out` (cleared first).
    fn seal_into(&self, stored: &SessionId, plain: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let key_id = self.keys.current_key_id();
        self.ciphers.with_seal_key(&self.keys, |key, salt, nonce| {
            envelope::seal_into(key, key_id, salt, nonce, stored.as_str(), plain, out)
        })
    }

    /// The data of the record of `stored` (named `shown` in errors), or
    /// the typed error; `accept_plaintext` as configured.
    fn open(&self, shown: &SessionId, stored: &SessionId, data: &[u8]) -> Result<Vec<u8>> {
        self.open_as(shown, stored, data, self.accept_plaintext)
    }

    fn open_as(
        &self,
        shown: &SessionId,
        stored: &SessionId,
        data: &[u8],
        accept_plaintext: bool,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_into(shown, stored, data, accept_plaintext, &mut out)?;
        Ok(out)
    }

    /// [`Encrypted::open_as`] into `out` (cleared first; left empty on an
    /// error, with nothing of the record's plaintext in it).
    fn open_into(
        &self,
        shown: &SessionId,
        stored: &SessionId,
        data: &[u8],
        accept_plaintext: bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        let undecryptable = |key_id: Option<&str>, reason: String| Error::Undecryptable {
            session: shown.digest_hint(),
            key_id: key_id.map(str::to_owned),
            reason,
        };
        match envelope::parse(data) {
            Ok(Parsed::Plain) if accept_plaintext => {
                out.extend_from_slice(data);
                Ok(())
            }
            Ok(Parsed::Plain) => Err(undecryptable(
                None,
                "it is not encrypted (saved before the store was): open the store with \
                 accept_plaintext(true) to read it, or run `sessionlog rekey`"
                    .into(),
            )),
            Err(m) => Err(undecryptable(None, m.to_string())),
            Ok(Parsed::Sealed(sealed)) => {
                let opened = self.keys.position(sealed.key_id).and_then(|at| {
                    self.ciphers
                        .with_read_key(&self.keys, at, &sealed.salt, |key| {
                            envelope::open_into(key, &sealed, stored.as_str(), out)
                        })
                });
                match opened {
                    Some(true) => Ok(()),
                    None => Err(Error::KeyMissing {
                        session: shown.digest_hint(),
                        key_id: sealed.key_id.to_owned(),
                    }),
                    Some(false) => Err(undecryptable(
                        Some(sealed.key_id),
                        format!(
                            "it does not authenticate under key {:?}: it was altered, moved from \
                             another session or store, or written under another key of that id",
                            sealed.key_id
                        ),
                    )),
                }
            }
        }
    }
}

impl<S: SessionStore> Encrypted<S> {
    /// Runs `f` on `session` with its data replaced by the envelope, then
    /// puts the caller's data back (on failure too).
    fn sealed_save(
        &self,
        session: &mut Session,
        f: impl FnOnce(&S, &mut Session) -> Result<()>,
    ) -> Result<()> {
        let stored = self.inner.stored_id_of(&session.id);
        // The envelope goes in the thread's buffer of the last save's: from
        // about 1 KiB of data an envelope is past the allocator's per-thread
        // cache (glibc's ends at 1032 bytes), and a fresh one took its slow
        // path twice a save.
        let mut sealed = SEALED.try_with(Cell::take).unwrap_or_default();
        self.seal_into(&stored, &session.data, &mut sealed)?;
        let plain = std::mem::replace(&mut session.data, sealed);
        let r = f(&self.inner, session);
        let sealed = std::mem::replace(&mut session.data, plain);
        if sealed.capacity() <= KEPT_SCRATCH {
            // Ciphertext only: nothing in it needs wiping. During the
            // thread's exit the slot may be gone; the buffer is then freed.
            let _ = SEALED.try_with(|s| s.set(sealed));
        }
        let overhead = self.overhead();
        r.map_err(|e| match e {
            Error::TooLarge { size, limit } => Error::TooLarge {
                size: size.saturating_sub(overhead),
                limit: limit.saturating_sub(overhead),
            },
            other => other,
        })
    }

    /// Re-encrypts every live record under the current key, online: each
    /// through a conditional save of the version it read, retried when a
    /// concurrent save got in between (which keeps that save: nothing is
    /// lost). Plaintext records are encrypted whatever
    /// [`Encrypted::accept_plaintext`] says. A rekey is a save: it
    /// increments each version and refreshes each session's idle time.
    ///
    /// For the wrapped store as it lists its records: use it on the
    /// bottom store (`Encrypted<LogStore>`, as `sessionlog rekey` does),
    /// where the listed ids are the stored ones.
    pub fn rekey(&self) -> Result<RekeyReport> {
        let mut report = RekeyReport::default();
        let ids: Vec<SessionId> = self
            .inner
            .iter_sessions()?
            .map(|r| r.map(|s| s.id))
            .collect::<Result<_>>()?;
        for id in ids {
            report.examined += 1;
            match self.rekey_one(&id) {
                Ok(Rekeyed::Done) => report.rekeyed += 1,
                Ok(Rekeyed::Current) => report.current += 1,
                Ok(Rekeyed::Gone) => report.gone += 1,
                Ok(Rekeyed::Contended) => {
                    report.left += 1;
                    report.first_error.get_or_insert_with(|| {
                        format!(
                            "session {} kept being saved under another key by a concurrent \
                             writer: give every server the new keyring, then rekey again",
                            id.digest_hint()
                        )
                    });
                }
                Err(e @ (Error::KeyMissing { .. } | Error::Undecryptable { .. })) => {
                    report.left += 1;
                    report.first_error.get_or_insert_with(|| e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    fn rekey_one(&self, stored: &SessionId) -> Result<Rekeyed> {
        const ATTEMPTS: usize = 64;
        for _ in 0..ATTEMPTS {
            let Some(mut raw) = self.inner.load_session(stored)? else {
                return Ok(Rekeyed::Gone);
            };
            if Self::key_id_of(&raw.data).ok().flatten().as_deref()
                == Some(self.keys.current_key_id())
            {
                return Ok(Rekeyed::Current);
            }
            let plain = zeroize::Zeroizing::new(self.open_as(stored, stored, &raw.data, true)?);
            raw.data = self.seal(stored, &plain)?;
            match self.inner.save_session_if_unchanged(&mut raw) {
                Ok(()) => return Ok(Rekeyed::Done),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Rekeyed::Contended)
    }
}

/// Largest buffer a thread keeps between loads for the plaintext that
/// [`SessionStore::load_session_with`] lends: a larger session's buffer is
/// wiped and freed after its load.
const KEPT_SCRATCH: usize = 64 * 1024;

thread_local! {
    /// Each thread's buffer for the plaintext `load_session_with` lends,
    /// reused so that a load allocates nothing. Taken out for the call
    /// (a nested load finds it empty and uses a new one) and always wiped
    /// before it is put back.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };

    /// Each thread's buffer for the envelope a save hands the wrapped
    /// store, reused from save to save (taken out for the call: a nested
    /// save finds it empty).
    static SEALED: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A thread's plaintext buffer, taken for one load; dropping it (after
/// the load, or in a panic of the caller's callback) wipes it and puts it
/// back for the thread's next load.
struct Scratch(Vec<u8>);

impl Scratch {
    fn take() -> Scratch {
        Scratch(SCRATCH.try_with(Cell::take).unwrap_or_default())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        // The plaintext lent to the callback does not outlive the call: a
        // fill kept by `black_box` (a memset) rather than `zeroize`'s
        // byte-by-byte volatile stores (DESIGN.md §14.2 has what those
        // cost a load).
        buf.fill(0);
        std::hint::black_box(&buf);
        buf.clear();
        if buf.capacity() <= KEPT_SCRATCH {
            // During the thread's exit the slot may be gone: the buffer,
            // already wiped, is then freed.
            let _ = SCRATCH.try_with(|s| s.set(buf));
        }
    }
}

impl<S: SessionStore> Encrypted<S> {
    /// Decrypts the session `id` into `out` and runs `then` with it and
    /// the wrapped store's view of the record (its times, version and
    /// owner, borrowed: nothing of them is copied), inside the wrapped
    /// store's callback; `None` if the session is absent (`out` then
    /// empty).
    fn load_into<R>(
        &self,
        id: &SessionId,
        out: &mut Vec<u8>,
        then: impl FnOnce(&[u8], SessionRef<'_>) -> R,
    ) -> Result<Option<R>> {
        let stored = self.inner.stored_id_of(id);
        let mut then = Some(then);
        let mut loaded = None;
        out.clear();
        self.inner.load_session_with(id, &mut |v| {
            // A store calls back at most once.
            if let Some(then) = then.take() {
                loaded = Some(
                    self.open_into(id, &stored, v.data(), self.accept_plaintext, out)
                        .map(|()| then(out.as_slice(), v)),
                );
            }
        })?;
        loaded.transpose()
    }
}

enum Rekeyed {
    Done,
    Current,
    Gone,
    Contended,
}

impl<S: SessionStore> SessionStore for Encrypted<S> {
    fn setup(&self) -> Result<()> {
        self.inner.setup()
    }

    fn load_session(&self, id: &SessionId) -> Result<Option<Session>> {
        // Decrypted in place in the buffer the caller gets.
        let mut data = Vec::new();
        let loaded = self.load_into(id, &mut data, |_, v| {
            (v.expires(), v.modified(), v.version(), v.owner().cloned())
        })?;
        Ok(loaded.map(|(expires, modified, version, owner)| {
            let mut s = Session::restore(id.clone(), data, expires, modified, version);
            s.owner = owner;
            s
        }))
    }

    fn load_session_with(&self, id: &SessionId, f: &mut dyn FnMut(SessionRef<'_>)) -> Result<bool> {
        let mut buf = Scratch::take();
        let loaded = self.load_into(id, &mut buf.0, |data, v| {
            f(
                SessionRef::new(id, data, v.expires(), v.modified(), v.version())
                    .with_owner(v.owner()),
            );
        })?;
        Ok(loaded.is_some())
    }

    fn save(&self, session: &mut Session, mode: SaveMode) -> Result<()> {
        self.sealed_save(session, |inner, s| inner.save(s, mode))
    }

    fn touch(&self, id: &SessionId, touch: Touch) -> Result<bool> {
        self.inner.touch(id, touch)
    }

    fn may_block(&self) -> bool {
        self.inner.may_block()
    }

    fn stored_id_of(&self, id: &SessionId) -> SessionId {
        self.inner.stored_id_of(id)
    }

    fn delete_session(&self, id: &SessionId) -> Result<bool> {
        self.inner.delete_session(id)
    }

    fn has_session(&self, id: &SessionId) -> Result<bool> {
        self.inner.has_session(id)
    }

    fn iter_sessions(&self) -> Result<SessionIter<'_>> {
        Ok(Box::new(self.inner.iter_sessions()?.map(move |r| {
            let mut s = r?;
            // Listed records are named by their stored ids.
            s.data = self.open(&s.id, &s.id, &s.data)?;
            Ok(s)
        })))
    }

    fn delete_old_sessions(&self, max_idle: Duration) -> Result<usize> {
        self.inner.delete_old_sessions(max_idle)
    }

    /// The wrapped store's listing (owners are not encrypted), each size
    /// that of the data, not of its envelope.
    fn sessions_of(&self, owner: &Owner) -> Result<Vec<SessionInfo>> {
        let overhead = self.overhead();
        let mut list = self.inner.sessions_of(owner)?;
        for info in &mut list {
            info.size = info.size.saturating_sub(overhead);
        }
        Ok(list)
    }

    fn delete_sessions_of(&self, owner: &Owner, keep: Option<&SessionId>) -> Result<usize> {
        self.inner.delete_sessions_of(owner, keep)
    }

    fn erase_sessions_of(&self, owner: &Owner) -> Result<usize> {
        self.inner.erase_sessions_of(owner)
    }

    fn is_thread_safe(&self) -> bool {
        self.inner.is_thread_safe()
    }

    fn is_multiprocess_safe(&self) -> bool {
        self.inner.is_multiprocess_safe()
    }
}
