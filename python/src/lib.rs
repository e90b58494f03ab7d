//! `sessionlog_store._native`: the Rust half of the `sessionlog_store` Python package.
//!
//! One class, [`Store`], wraps a `LogStore` or `DirStore` (each optionally
//! through `HashedIds`) or a `MemoryStore` behind bytes-in, bytes-out
//! methods. The pure-Python half (`sessionlog_store`)
//! builds session2's store interface, the Django backend and the Flask
//! session interface on top of it; pickling and serialising happen there.
//!
//! Every store call runs with the GIL released, so threads of one process
//! use a store in parallel, and inside `catch_unwind`, so a panic in the
//! engine becomes a `sessionlog_store.Error` rather than an abort. Rust errors
//! become the exceptions defined in `sessionlog_store._errors`, with the Rust
//! error's message unchanged.

mod metrics;

use std::os::unix::fs::MetadataExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use sessionlog::{
    DirOptions, DirStore, Encrypted, Error, HashedIds, Keyring, LogStore, MemoryStore, Owner,
    Session, SessionId, SessionStore, SyncPolicy, WhenFull,
};

/// A store's result for Python: the engine's error, or a panic message.
enum Failure {
    /// An error returned by the engine.
    Store(Error),
    /// A panic caught at the boundary (a bug in sessionlog, never bad input).
    Panic(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Store(e)
    }
}

/// Runs `f` with the GIL released and panics caught, mapping failures to
/// Python exceptions.
fn run<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> Result<T, Error> + Send,
    T: Send,
{
    let outcome = py.detach(move || match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Store(e)),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(Failure::Panic(msg))
        }
    });
    outcome.map_err(|f| failure_to_py(py, f))
}

/// Builds the `sessionlog_store._errors` exception for `f`.
fn failure_to_py(py: Python<'_>, f: Failure) -> PyErr {
    match f {
        Failure::Store(e) => error_to_py(py, &e),
        Failure::Panic(msg) => make_error(
            py,
            "Error",
            format!("internal error in sessionlog (please report it): {msg}"),
            &[],
        ),
    }
}

/// An integer attribute to set on a raised exception.
type Attr = (&'static str, Option<u64>);

/// The Python exception for a Rust error: same message, class by variant,
/// a few numeric fields as attributes. Never adds ids or data.
fn error_to_py(py: Python<'_>, e: &Error) -> PyErr {
    let msg = e.to_string();
    let (class, attrs): (&str, Vec<Attr>) = match e {
        Error::InvalidId { .. } => ("InvalidIdError", vec![]),
        Error::InvalidOwner { .. } => ("InvalidOwnerError", vec![]),
        Error::TooLarge { size, limit } => (
            "TooLargeError",
            vec![("size", Some(*size as u64)), ("limit", Some(*limit as u64))],
        ),
        Error::Conflict {
            expected, found, ..
        } => (
            "ConflictError",
            vec![("expected", Some(*expected)), ("found", Some(*found))],
        ),
        Error::NotAStore { .. } => ("NotAStoreError", vec![]),
        Error::UnsupportedVersion { found, .. } => (
            "UnsupportedVersionError",
            vec![("found", Some(u64::from(*found)))],
        ),
        Error::Corrupt { offset, .. } => ("CorruptError", vec![("offset", Some(*offset))]),
        Error::Io { source, .. } => (
            "IoError",
            vec![(
                "errno",
                source.raw_os_error().and_then(|n| u64::try_from(n).ok()),
            )],
        ),
        Error::Poisoned { .. } => ("PoisonedError", vec![]),
        Error::InvalidOption(_) => ("InvalidOptionError", vec![]),
        Error::Backend { .. } => ("BackendError", vec![]),
        Error::Unsafe { .. } => ("UnsafeError", vec![]),
        Error::Busy { .. } => ("BusyError", vec![]),
        Error::Timeout { .. } => ("ServerTimeoutError", vec![]),
        Error::Random(_) => ("RandomSourceError", vec![]),
        Error::QuotaExceeded { limit, used, .. } => (
            "QuotaExceededError",
            vec![("limit", Some(*limit)), ("used", Some(*used))],
        ),
        Error::KeyMissing { .. } => ("KeyMissingError", vec![]),
        Error::Undecryptable { .. } => ("UndecryptableError", vec![]),
        Error::BadKeys { .. } => ("BadKeysError", vec![]),
        _ => ("Error", vec![]),
    };
    make_error(py, class, msg, &attrs)
}

/// Instantiates `sessionlog_store._errors.<class>(msg)` and sets `attrs` on it.
/// If even that fails (the module cannot be imported), that failure is
/// what the caller sees: still a Python exception, never a crash.
fn make_error(py: Python<'_>, class: &str, msg: String, attrs: &[Attr]) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = py.import("sessionlog_store._errors")?.getattr(class)?;
        let exc = cls.call1((msg,))?;
        for (name, value) in attrs {
            exc.setattr(*name, *value)?;
        }
        Ok(PyErr::from_value(exc))
    };
    match build() {
        Ok(e) | Err(e) => e,
    }
}

/// An `InvalidOptionError` raised before reaching the engine.
fn invalid_option(py: Python<'_>, msg: String) -> PyErr {
    error_to_py(py, &Error::InvalidOption(msg))
}

/// A duration from seconds given by Python; rejects negative, NaN and
/// infinite values.
fn seconds(py: Python<'_>, name: &str, secs: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        invalid_option(
            py,
            format!("{name} must be a finite, non-negative number of seconds, not {secs}"),
        )
    })
}

/// The sync policy named `sync` (`"always"`, `"interval"`, `"never"`).
fn sync_policy(py: Python<'_>, sync: &str, interval: f64) -> PyResult<SyncPolicy> {
    match sync {
        "always" => Ok(SyncPolicy::Always),
        "never" => Ok(SyncPolicy::Never),
        "interval" => Ok(SyncPolicy::Interval(seconds(
            py,
            "sync_interval",
            interval,
        )?)),
        other => Err(invalid_option(
            py,
            format!("sync must be \"always\", \"interval\" or \"never\", not {other:?}"),
        )),
    }
}

/// Validates a session id (the engine's message on failure).
fn session_id(py: Python<'_>, id: &str) -> PyResult<SessionId> {
    SessionId::new(id).map_err(|e| error_to_py(py, &e))
}

/// Milliseconds since the epoch of `t` (times before it become 0).
/// An owner from Python, checked; the error never shows it.
fn owner(py: Python<'_>, owner: &str) -> PyResult<Owner> {
    Owner::new(owner).map_err(|e| error_to_py(py, &e))
}

/// One session of `Store.sessions_of()`: `(id, modified_ms, expires_ms,
/// version, size)`.
type Owned = (String, u64, Option<u64>, u64, usize);

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The time `ms` milliseconds after the epoch, if representable.
fn from_millis(py: Python<'_>, ms: u64) -> PyResult<SystemTime> {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .ok_or_else(|| invalid_option(py, format!("expires_ms {ms} is out of range")))
}

/// A loaded session as Python sees it: `(data, version, expires_ms,
/// modified_ms)`.
type Loaded<'py> = (Bound<'py, PyBytes>, u64, Option<u64>, Option<u64>);

/// `Store.load_owned()`'s answer: `Loaded` and the owner.
type LoadedOwned<'py> = (
    Bound<'py, PyBytes>,
    u64,
    Option<u64>,
    Option<u64>,
    Option<String>,
);

/// One session of `Store.sessions()`: `(id, data, version, expires_ms,
/// modified_ms)`.
type Listed<'py> = (String, Bound<'py, PyBytes>, u64, Option<u64>, Option<u64>);

/// The engine behind a [`Store`].
enum Backend {
    /// A `LogStore` file.
    Log(Ids<LogStore>),
    /// A `DirStore` directory.
    Dir(Ids<DirStore>),
    /// An in-process `MemoryStore`.
    Memory(Ids<MemoryStore>),
}

/// A backend that keeps the ids it is given, or only their digests, and
/// the data as given or encrypted (`HashedIds` outside `Encrypted`, the
/// order DESIGN.md recommends).
enum Ids<S> {
    /// Ids stored as given.
    Clear(S),
    /// Ids stored as `HashedIds::stored_id` digests.
    Hashed(HashedIds<S>),
    /// Ids as given, data encrypted.
    Encrypted(Encrypted<S>),
    /// Digests of ids, data encrypted.
    HashedEncrypted(HashedIds<Encrypted<S>>),
}

/// The keys of `encryption_keys=`, and whether plaintext records (a store
/// written before it was encrypted) are read.
type Encryption = Option<(Keyring, bool)>;

impl<S: SessionStore> Ids<S> {
    fn new(store: S, hashed: bool, encryption: Encryption) -> Ids<S> {
        match (hashed, encryption) {
            (false, None) => Ids::Clear(store),
            (true, None) => Ids::Hashed(HashedIds::new(store)),
            (false, Some((keys, plain))) => {
                Ids::Encrypted(Encrypted::new(store, keys).accept_plaintext(plain))
            }
            (true, Some((keys, plain))) => Ids::HashedEncrypted(HashedIds::new(
                Encrypted::new(store, keys).accept_plaintext(plain),
            )),
        }
    }

    /// The backend itself, for what the wrappers do not change (its
    /// path, sync, compaction).
    fn raw(&self) -> &S {
        match self {
            Ids::Clear(s) => s,
            Ids::Hashed(h) => h.inner(),
            Ids::Encrypted(e) => e.inner(),
            Ids::HashedEncrypted(h) => h.inner().inner(),
        }
    }

    /// The store every session operation goes through.
    fn store(&self) -> &dyn SessionStore {
        match self {
            Ids::Clear(s) => s,
            Ids::Hashed(h) => h,
            Ids::Encrypted(e) => e,
            Ids::HashedEncrypted(h) => h,
        }
    }

    fn hashed(&self) -> bool {
        matches!(self, Ids::Hashed(_) | Ids::HashedEncrypted(_))
    }

    fn encrypted(&self) -> bool {
        matches!(self, Ids::Encrypted(_) | Ids::HashedEncrypted(_))
    }
}

/// The keyring of `encryption_key_file=` and `encryption_keys=` (the
/// file's keys first, then the list's), `None` if neither is given; keys
/// as `Keyring::from_file` and `Keyring::from_entries` read them.
fn encryption(
    py: Python<'_>,
    key_file: Option<PathBuf>,
    keys: Option<Vec<String>>,
    accept_plaintext: bool,
) -> PyResult<Encryption> {
    let from_list = match keys {
        Some(list) => Some(
            Keyring::from_entries("encryption_keys", list.iter().map(String::as_str))
                .map_err(|e| error_to_py(py, &e))?,
        ),
        None => None,
    };
    let ring = match (key_file, from_list) {
        (None, None) => return Ok(None),
        (None, Some(list)) => list,
        (Some(path), list) => {
            let file = run(py, move || Keyring::from_file(path))?;
            match list {
                Some(list) => file
                    .with_retired_keys(&list)
                    .map_err(|e| error_to_py(py, &e))?,
                None => file,
            }
        }
    };
    Ok(Some((ring, accept_plaintext)))
}

/// A session store opened from Python: `LogStore`, `DirStore` or
/// `MemoryStore`. Bytes in, bytes out; times in milliseconds since the
/// Unix epoch. Safe to share between threads; every call releases the GIL.
///
/// A store value belongs to the process that opened it: after `fork()` the
/// child must open its own (the Python wrappers do this by themselves). A
/// value inherited through `fork()` is never torn down in the child, whose
/// copy of the engine's background thread does not exist.
#[pyclass(frozen, module = "sessionlog_store._native", name = "Store")]
struct Store {
    /// The engine; `None` only while being dropped.
    backend: Option<Backend>,
    /// The user the store's files belong to (`None` for a memory store).
    owner: Option<u32>,
    /// The process that opened it.
    pid: u32,
    /// `"log"`, `"dir"` or `"memory"`.
    kind: &'static str,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(backend) = self.backend.take()
            && std::process::id() != self.pid
        {
            // Inherited through fork(): joining the parent's background
            // thread here would wait for a thread that does not exist.
            std::mem::forget(backend);
        }
    }
}

impl Store {
    fn new(backend: Backend, kind: &'static str, owner: Option<u32>) -> Store {
        Store {
            backend: Some(backend),
            owner,
            pid: std::process::id(),
            kind,
        }
    }

    /// The engine as the trait object every operation uses.
    fn engine(&self) -> Result<&dyn SessionStore, Error> {
        match &self.backend {
            Some(Backend::Log(s)) => Ok(s.store()),
            Some(Backend::Dir(s)) => Ok(s.store()),
            Some(Backend::Memory(s)) => Ok(s.store()),
            None => Err(Error::InvalidOption("the store is closed".into())),
        }
    }
}

#[pymethods]
impl Store {
    /// Opens (creating if missing) the `LogStore` file at `path`; with
    /// `hashed_ids`, through `HashedIds` (only digests of ids are stored).
    #[staticmethod]
    #[pyo3(signature = (path, *, sync="interval", sync_interval=1.0, max_idle=None,
        max_session_size=None, repair=false, background=true, hashed_ids=false,
        allow_others_to_write_directory=false, maintain_as_owner=false,
        max_sessions=None, max_bytes=None, when_full=None,
        encryption_key_file=None, encryption_keys=None, encryption_accept_plaintext=false,
        max_sessions_per_owner=None))]
    #[allow(clippy::too_many_arguments)]
    fn log(
        py: Python<'_>,
        path: PathBuf,
        sync: &str,
        sync_interval: f64,
        max_idle: Option<f64>,
        max_session_size: Option<usize>,
        repair: bool,
        background: bool,
        hashed_ids: bool,
        allow_others_to_write_directory: bool,
        maintain_as_owner: bool,
        max_sessions: Option<u64>,
        max_bytes: Option<u64>,
        when_full: Option<&str>,
        encryption_key_file: Option<PathBuf>,
        encryption_keys: Option<Vec<String>>,
        encryption_accept_plaintext: bool,
        max_sessions_per_owner: Option<usize>,
    ) -> PyResult<Store> {
        let keys = encryption(
            py,
            encryption_key_file,
            encryption_keys,
            encryption_accept_plaintext,
        )?;
        let mut opts = LogStore::options()
            .sync(sync_policy(py, sync, sync_interval)?)
            .repair(repair)
            .background(background)
            .allow_others_to_write_directory(allow_others_to_write_directory)
            .maintain_as_owner(maintain_as_owner);
        if let Some(idle) = max_idle {
            opts = opts.max_idle(seconds(py, "max_idle", idle)?);
        }
        if let Some(size) = max_session_size {
            opts = opts.max_session_size(size);
        }
        if let Some(n) = max_sessions {
            opts = opts.max_sessions(n);
        }
        if let Some(n) = max_bytes {
            opts = opts.max_bytes(n);
        }
        if let Some(n) = max_sessions_per_owner {
            opts = opts.max_sessions_per_owner(n);
        }
        match when_full {
            None => {}
            Some("refuse") => opts = opts.when_full(WhenFull::Refuse),
            Some("evict-oldest") => opts = opts.when_full(WhenFull::EvictOldest),
            Some(other) => {
                return Err(error_to_py(
                    py,
                    &Error::InvalidOption(format!(
                        "when_full must be \"refuse\" or \"evict-oldest\", not {other:?}"
                    )),
                ));
            }
        }
        let (store, owner) = run(py, move || {
            let store = opts.open(path)?;
            let owner = std::fs::metadata(store.path())
                .map_err(|source| Error::Io {
                    path: store.path().to_path_buf(),
                    op: "stat",
                    source,
                })?
                .uid();
            Ok((store, owner))
        })?;
        Ok(Store::new(
            Backend::Log(Ids::new(store, hashed_ids, keys)),
            "log",
            Some(owner),
        ))
    }

    /// Opens (creating if missing) the `DirStore` directory at `path`;
    /// `hashed_ids` as for [`Store::log`]; the opt-ins as `DirOptions`'.
    #[staticmethod]
    #[pyo3(signature = (path, *, sync="interval", sync_interval=1.0, max_idle=None,
        max_session_size=None, hashed_ids=false, allow_others_to_read_directory=false,
        allow_others_to_write_directory=false, maintain_as_owner=false,
        encryption_key_file=None, encryption_keys=None, encryption_accept_plaintext=false,
        max_sessions=None, max_bytes=None, max_sessions_per_owner=None))]
    #[allow(clippy::too_many_arguments)]
    fn dir(
        py: Python<'_>,
        path: PathBuf,
        sync: &str,
        sync_interval: f64,
        max_idle: Option<f64>,
        max_session_size: Option<usize>,
        hashed_ids: bool,
        allow_others_to_read_directory: bool,
        allow_others_to_write_directory: bool,
        maintain_as_owner: bool,
        encryption_key_file: Option<PathBuf>,
        encryption_keys: Option<Vec<String>>,
        encryption_accept_plaintext: bool,
        max_sessions: Option<u64>,
        max_bytes: Option<u64>,
        max_sessions_per_owner: Option<usize>,
    ) -> PyResult<Store> {
        let keys = encryption(
            py,
            encryption_key_file,
            encryption_keys,
            encryption_accept_plaintext,
        )?;
        let mut opts: DirOptions = DirStore::options()
            .sync(sync_policy(py, sync, sync_interval)?)
            .allow_others_to_read_directory(allow_others_to_read_directory)
            .allow_others_to_write_directory(allow_others_to_write_directory)
            .maintain_as_owner(maintain_as_owner);
        if let Some(idle) = max_idle {
            opts = opts.max_idle(seconds(py, "max_idle", idle)?);
        }
        if let Some(size) = max_session_size {
            opts = opts.max_session_size(size);
        }
        if let Some(n) = max_sessions {
            opts = opts.max_sessions(n);
        }
        if let Some(n) = max_bytes {
            opts = opts.max_bytes(n);
        }
        if let Some(n) = max_sessions_per_owner {
            opts = opts.max_sessions_per_owner(n);
        }
        let store = run(py, move || opts.open(path))?;
        let owner = store.owner_uid();
        Ok(Store::new(
            Backend::Dir(Ids::new(store, hashed_ids, keys)),
            "dir",
            Some(owner),
        ))
    }

    /// A new, empty in-process `MemoryStore`; `encryption_*` as for
    /// [`Store::log`].
    #[staticmethod]
    #[pyo3(signature = (*, max_idle=None, max_session_size=None,
        encryption_key_file=None, encryption_keys=None, max_sessions_per_owner=None))]
    fn memory(
        py: Python<'_>,
        max_idle: Option<f64>,
        max_session_size: Option<usize>,
        encryption_key_file: Option<PathBuf>,
        encryption_keys: Option<Vec<String>>,
        max_sessions_per_owner: Option<usize>,
    ) -> PyResult<Store> {
        let keys = encryption(py, encryption_key_file, encryption_keys, false)?;
        let mut options = MemoryStore::options();
        if let Some(idle) = max_idle {
            options = options.max_idle(seconds(py, "max_idle", idle)?);
        }
        if let Some(size) = max_session_size {
            options = options.max_session_size(size);
        }
        if let Some(n) = max_sessions_per_owner {
            options = options.max_sessions_per_owner(n);
        }
        let store = options.open().map_err(|e| error_to_py(py, &e))?;
        Ok(Store::new(
            Backend::Memory(Ids::new(store, false, keys)),
            "memory",
            None,
        ))
    }

    /// `"log"`, `"dir"` or `"memory"`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind
    }

    /// The store's file or directory (`None` for a memory store).
    #[getter]
    fn path(&self) -> Option<PathBuf> {
        match &self.backend {
            Some(Backend::Log(s)) => Some(s.raw().path().to_path_buf()),
            Some(Backend::Dir(s)) => Some(s.raw().path().to_path_buf()),
            _ => None,
        }
    }

    /// The user id the store's files belong to, as found when it was
    /// opened (`None` for a memory store). The Python stores unpickle only
    /// from a store of this process's effective user.
    #[getter]
    fn owner_uid(&self) -> Option<u32> {
        self.owner
    }

    /// True if the store keeps only digests of session ids (`hashed_ids`).
    #[getter]
    fn hashed_ids(&self) -> bool {
        match &self.backend {
            Some(Backend::Log(s)) => s.hashed(),
            Some(Backend::Dir(s)) => s.hashed(),
            Some(Backend::Memory(s)) => s.hashed(),
            None => false,
        }
    }

    /// True if session data is encrypted (`encryption_keys`).
    #[getter]
    fn encrypted(&self) -> bool {
        match &self.backend {
            Some(Backend::Log(s)) => s.encrypted(),
            Some(Backend::Dir(s)) => s.encrypted(),
            Some(Backend::Memory(s)) => s.encrypted(),
            None => false,
        }
    }

    /// True if one store value may be used by many threads at once.
    #[getter]
    fn is_thread_safe(&self) -> bool {
        self.engine().map(|e| e.is_thread_safe()).unwrap_or(false)
    }

    /// True if several processes may open the same store at once.
    #[getter]
    fn is_multiprocess_safe(&self) -> bool {
        self.engine()
            .map(|e| e.is_multiprocess_safe())
            .unwrap_or(false)
    }

    /// Creates what the store needs; idempotent, never destroys sessions.
    fn setup(&self, py: Python<'_>) -> PyResult<()> {
        run(py, || self.engine()?.setup())
    }

    /// The session `id` as `(data, version, expires_ms, modified_ms)`, or
    /// `None` if it does not exist or expired.
    fn load<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Option<Loaded<'py>>> {
        let id = session_id(py, id)?;
        let found = run(py, || self.engine()?.load_session(&id))?;
        Ok(found.map(|s| {
            let modified = s.modified().map(millis);
            let expires = s.expires.map(millis);
            (PyBytes::new(py, &s.data), s.version(), expires, modified)
        }))
    }

    /// As `load`, with the stored owner (or `None`) last: `(data, version,
    /// expires_ms, modified_ms, owner)`. Through `hashed_ids` the owner is
    /// its stored digest, which a later save keeps as it is.
    fn load_owned<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Option<LoadedOwned<'py>>> {
        let id = session_id(py, id)?;
        let found = run(py, || self.engine()?.load_session(&id))?;
        Ok(found.map(|s| {
            let modified = s.modified().map(millis);
            let expires = s.expires.map(millis);
            let owner = s.owner.as_ref().map(|o| o.as_str().to_owned());
            (
                PyBytes::new(py, &s.data),
                s.version(),
                expires,
                modified,
                owner,
            )
        }))
    }

    /// The live sessions of `owner`, most recently modified first, as
    /// `(id, modified_ms, expires_ms, version, size)`; through `hashed_ids`
    /// the ids are the stored digests.
    fn sessions_of(&self, py: Python<'_>, owner: &str) -> PyResult<Vec<Owned>> {
        let owner = self::owner(py, owner)?;
        let list = run(py, || self.engine()?.sessions_of(&owner))?;
        Ok(list
            .into_iter()
            .map(|i| {
                (
                    i.id.as_str().to_owned(),
                    millis(i.modified),
                    i.expires.map(millis),
                    i.version,
                    i.size,
                )
            })
            .collect())
    }

    /// Deletes every live session of `owner` except `keep`; how many.
    #[pyo3(signature = (owner, keep=None))]
    fn delete_sessions_of(
        &self,
        py: Python<'_>,
        owner: &str,
        keep: Option<&str>,
    ) -> PyResult<usize> {
        let owner = self::owner(py, owner)?;
        // A key that is no valid id names no session: nothing to keep.
        let keep = keep.and_then(|k| SessionId::new(k).ok());
        run(py, || {
            self.engine()?.delete_sessions_of(&owner, keep.as_ref())
        })
    }

    /// Deletes every session of `owner` so that no byte of them remains in
    /// the store's files; how many were live.
    fn erase_sessions_of(&self, py: Python<'_>, owner: &str) -> PyResult<usize> {
        let owner = self::owner(py, owner)?;
        run(py, || self.engine()?.erase_sessions_of(&owner))
    }

    /// Saves `data` as session `id`, returning `(version, modified_ms)`.
    ///
    /// With `if_unchanged`, saves only if the stored version is still
    /// `version` (0: only if no live session has this id), else raises
    /// `ConflictError` and writes nothing. Without it, last write wins.
    /// `owner`: who the session belongs to (`None`: no one).
    #[pyo3(signature = (id, data, expires_ms=None, version=0, if_unchanged=false, owner=None))]
    #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn save(
        &self,
        py: Python<'_>,
        id: &str,
        data: &[u8],
        expires_ms: Option<u64>,
        version: u64,
        if_unchanged: bool,
        owner: Option<&str>,
    ) -> PyResult<(u64, Option<u64>)> {
        let id = session_id(py, id)?;
        let expires = expires_ms.map(|ms| from_millis(py, ms)).transpose()?;
        let owner = owner.map(|o| self::owner(py, o)).transpose()?;
        let mut session = Session::restore(id, data.to_vec(), expires, UNIX_EPOCH, version);
        session.owner = owner;
        run(py, move || {
            let engine = self.engine()?;
            if if_unchanged {
                engine.save_session_if_unchanged(&mut session)?;
            } else {
                engine.save_session(&mut session)?;
            }
            Ok((session.version(), session.modified().map(millis)))
        })
    }

    /// Deletes session `id`; true if a live session existed.
    fn delete(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        let id = session_id(py, id)?;
        run(py, || self.engine()?.delete_session(&id))
    }

    /// Whether a live session `id` exists.
    fn has(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        let id = session_id(py, id)?;
        run(py, || self.engine()?.has_session(&id))
    }

    /// Refreshes session `id`'s modified time; false if it is absent.
    fn touch(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        let id = session_id(py, id)?;
        run(py, || self.engine()?.touch_session(&id))
    }

    /// Every live session as `(id, data, version, expires_ms, modified_ms)`.
    fn sessions<'py>(&self, py: Python<'py>) -> PyResult<Vec<Listed<'py>>> {
        let all = run(py, || {
            self.engine()?
                .iter_sessions()?
                .collect::<Result<Vec<Session>, Error>>()
        })?;
        Ok(all
            .into_iter()
            .map(|s| {
                let modified = s.modified().map(millis);
                let expires = s.expires.map(millis);
                let data = PyBytes::new(py, &s.data);
                (
                    s.id.as_str().to_owned(),
                    data,
                    s.version(),
                    expires,
                    modified,
                )
            })
            .collect())
    }

    /// Removes sessions idle for `max_idle` seconds or more (and expired
    /// ones); returns how many.
    fn delete_old(&self, py: Python<'_>, max_idle: f64) -> PyResult<usize> {
        let idle = seconds(py, "max_idle", max_idle)?;
        run(py, || self.engine()?.delete_old_sessions(idle))
    }

    /// Removes only sessions past their deadline (or the store's
    /// `max_idle`); returns how many.
    fn delete_expired(&self, py: Python<'_>) -> PyResult<usize> {
        run(py, || self.engine()?.delete_old_sessions(Duration::MAX))
    }

    /// Makes every acknowledged write durable now, whatever the policy.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        run(py, || match &self.backend {
            Some(Backend::Log(s)) => s.raw().sync(),
            Some(Backend::Dir(s)) => s.raw().sync(),
            _ => Ok(()),
        })
    }

    /// Compacts a log store; a dict of what it did (`{}` for others).
    fn compact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = run(py, || match &self.backend {
            Some(Backend::Log(s)) => s.raw().compact().map(Some),
            _ => Ok(None),
        })?;
        let d = PyDict::new(py);
        if let Some(st) = stats {
            d.set_item("kept", st.kept)?;
            d.set_item("dropped", st.dropped)?;
            d.set_item("bytes_before", st.bytes_before)?;
            d.set_item("bytes_after", st.bytes_after)?;
            d.set_item("generation", st.generation)?;
        }
        Ok(d)
    }

    /// The kind and path; never a session id.
    fn __repr__(&self) -> String {
        match self.path() {
            Some(p) => format!("<sessionlog_store._native.Store {} {:?}>", self.kind, p),
            None => format!("<sessionlog_store._native.Store {}>", self.kind),
        }
    }
}

/// A new random session id: 128 bits from the OS, 22 base64url characters.
#[pyfunction]
fn generate_id(py: Python<'_>) -> PyResult<String> {
    run(py, || {
        SessionId::try_generate().map(|id| id.as_str().to_owned())
    })
}

/// Whether `id` is a valid session id (1 to 128 of `A-Z a-z 0-9 - _ ,`).
#[pyfunction]
fn is_valid_id(id: &str) -> bool {
    SessionId::new(id).is_ok()
}

/// Every metric the stores of this process reported (the library's
/// `metrics` feature, through the recorder this module installs): a list
/// of `(kind, name, labels, count, value, help)`, `kind` one of
/// `"counter"`, `"gauge"`, `"histogram"`; a histogram's `count` is its
/// number of observations and `value` their sum, the others' `count` is
/// `None`. Empty if the program embedding Python installed a recorder of
/// its own first.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn metrics_samples<'py>(
    py: Python<'py>,
) -> PyResult<
    Vec<(
        &'static str,
        String,
        Bound<'py, PyDict>,
        Option<u64>,
        f64,
        Option<String>,
    )>,
> {
    let Some(registry) = metrics::registry() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for s in registry.samples() {
        let labels = PyDict::new(py);
        for (k, v) in &s.labels {
            labels.set_item(k, v)?;
        }
        let help = registry.help(&s.name);
        out.push((s.kind.name(), s.name, labels, s.count, s.value, help));
    }
    Ok(out)
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Before any store is opened: a store registers its metrics with the
    // recorder installed when it opens.
    metrics::registry();
    m.add_function(wrap_pyfunction!(metrics_samples, m)?)?;
    m.add_class::<Store>()?;
    m.add_function(wrap_pyfunction!(generate_id, m)?)?;
    m.add_function(wrap_pyfunction!(is_valid_id, m)?)?;
    m.add("MAX_ID_LEN", sessionlog::MAX_ID_LEN)?;
    m.add(
        "DEFAULT_MAX_SESSION_SIZE",
        sessionlog::DEFAULT_MAX_SESSION_SIZE,
    )?;
    Ok(())
}
