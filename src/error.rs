//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use crate::id::SessionId;

/// The result type of every fallible operation in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, with enough context to act on it.
///
/// Messages name the file (or server) and say what to do. The enum is
/// `#[non_exhaustive]`: match the variants you handle and keep a fallback arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A session id that is empty, too long, or has a character outside
    /// `A-Z a-z 0-9 - _ ,`. Nothing was read or written.
    #[error("invalid session id {id:?}: {reason}")]
    InvalidId {
        /// The rejected id (truncated to 160 characters for display).
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A session owner that is empty, longer than 255 bytes, or contains a
    /// control character. Nothing was read or written. The message gives
    /// the owner's length, never the owner (personal data).
    #[error("invalid session owner ({len} bytes): {reason}")]
    InvalidOwner {
        /// The rejected owner's length in bytes.
        len: usize,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// Session data larger than the store's limit. Nothing was written.
    #[error("session data is {size} bytes, over this store's limit of {limit} bytes")]
    TooLarge {
        /// Size of the rejected data in bytes.
        size: usize,
        /// The store's limit in bytes.
        limit: usize,
    },

    /// `save_session_if_unchanged` found another version stored (or, for a
    /// new session, an existing one). Nothing was written: reload and retry.
    ///
    /// The message names the session by [`SessionId::digest_hint`], never by
    /// the id itself: an id is a login credential, and messages end up in
    /// logs.
    #[error(
        "session {hint} was changed concurrently (expected version {expected}, found {found}); reload it and try again",
        hint = .id.digest_hint()
    )]
    Conflict {
        /// The session id (kept for the caller; not printed by `Display`).
        id: SessionId,
        /// The version the caller expected to replace (0: none).
        expected: u64,
        /// The version actually stored (0: none).
        found: u64,
    },

    /// A save would take the store past the quota it records
    /// (`StorePolicy::max_sessions` or `max_bytes`). Nothing was written.
    /// Expired sessions never count: the save went through if they were
    /// what filled the quota (and a compaction was asked for).
    #[error(
        "{path}: the store's quota of {limit} {what} is reached ({used} with this save); nothing was written; delete sessions or raise the quota (`sessionlog policy`)",
        path = .path.display()
    )]
    QuotaExceeded {
        /// The store.
        path: PathBuf,
        /// Which quota: `"sessions"` or `"bytes"`.
        what: &'static str,
        /// The quota.
        limit: u64,
        /// What the store would hold with the save.
        used: u64,
    },

    /// The file exists but is not a sessionlog store. It was left untouched.
    #[error("{path}: not a sessionlog store ({reason}); the file was left untouched", path = .path.display())]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },

    /// The store was written by a format version this build cannot read.
    /// It was left untouched.
    #[error(
        "{path}: store format version {found} is not supported (this build reads version {supported}); use a newer sessionlog", path = .path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// Damage in the middle of a file: a record or header fails its
    /// checksum or is malformed where valid data was expected.
    #[error(
        "{path}: corrupt data at byte offset {offset}: {reason} ({remedy})", path = .path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the damaged record or field.
        offset: u64,
        /// What is wrong there.
        reason: String,
        /// What to do about it, for this kind of file.
        remedy: Remedy,
    },

    /// An I/O error from the operating system.
    #[error("{path}: {op} failed: {source}", path = .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`open`, `write`, `fsync`, ...).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An earlier write or sync failed, so the on-disk state is uncertain;
    /// the store refuses writes until it is reopened (loads still work).
    #[error(
        "{path}: an earlier {cause} failed; writes are refused until the store is reopened", path = .path.display()
    )]
    Poisoned {
        /// The file.
        path: PathBuf,
        /// The failed operation and its error.
        cause: String,
    },

    /// An option passed to a builder is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// Another holder of a store's resource (a compaction, the write lock)
    /// is in the way; nothing was changed. Try again later.
    #[error("{path}: busy: {what}; nothing was changed, try again later", path = .path.display())]
    Busy {
        /// The store.
        path: PathBuf,
        /// What is busy.
        what: String,
    },

    /// A file or directory of the store is not one it can trust: a
    /// directory other users can write, a symbolic or hard link, a file of
    /// another owner or readable by others (DESIGN.md, the threat model).
    /// Nothing was read from it or written to it.
    #[error("{path}: refused: {reason}", path = .path.display())]
    Unsafe {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        reason: String,
    },

    /// A `LogStore` handle used in a process other than the one that
    /// opened it: a child after `fork()`, where the handle's background
    /// thread and in-process locks did not follow and its file locks are
    /// the parent's. Nothing was read or written; open the store again in
    /// this process.
    #[error(
        "{path}: this handle was opened by process {opened_by} and cannot be used in process {current} (it was inherited through fork()); nothing was done: open the store again in this process", path = .path.display()
    )]
    OtherProcess {
        /// The store.
        path: PathBuf,
        /// The process that opened the handle.
        opened_by: u32,
        /// The process that tried to use it.
        current: u32,
    },

    /// The operating system's random source failed (no session id or
    /// temporary name can be drawn without it).
    #[error("the operating system's random source failed: {0}")]
    Random(String),

    /// A session's record is encrypted under a key the
    /// [`Keyring`](crate::Keyring) does not hold. Nothing was returned or
    /// written; add the key (a retired one is enough) to read the session.
    #[error(
        "session {session}: its record is encrypted under key {key_id:?}, which this keyring does not hold; add that key (as a retired key) to read it"
    )]
    KeyMissing {
        /// The session, by [`SessionId::digest_hint`].
        session: String,
        /// The id of the key the record needs (key ids are not secret).
        key_id: String,
    },

    /// A session's record did not decrypt: it was tampered with, moved
    /// from another session or store, written under another key of the
    /// same id, is not an envelope this build reads, or is plaintext that
    /// the store does not accept. Nothing was returned or written.
    #[error("session {session}: the record was not used: {reason}")]
    Undecryptable {
        /// The session, by [`SessionId::digest_hint`].
        session: String,
        /// The key id the record names, if it names one.
        key_id: Option<String>,
        /// What failed, and what to do.
        reason: String,
    },

    /// A key file or key variable that cannot be used: malformed, a key of
    /// the wrong length, a repeated key id. The message never holds a key.
    #[error("{source_name}: {reason}")]
    BadKeys {
        /// The file (and line) or environment variable.
        source_name: String,
        /// What is wrong.
        reason: String,
    },

    /// A database or cache server failed or could not be reached.
    #[error("{backend} at {target}: {message}")]
    Backend {
        /// Which kind of server (`postgres`, `mysql`, `redis`).
        backend: &'static str,
        /// The server, without credentials.
        target: String,
        /// What went wrong and what to do.
        message: String,
        /// The underlying client error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },

    /// A database or cache server did not answer within the client-side
    /// deadline (`connect_timeout` for a new connection, `io_timeout` for a
    /// request). The connection was discarded; whether a write that timed
    /// out took effect on the server is unknown.
    #[error(
        "{backend} at {target}: {operation} timed out after {after:?}: check that the server is running, reachable and not overloaded"
    )]
    Timeout {
        /// Which kind of server (`postgres`, `mysql`, `redis`).
        backend: &'static str,
        /// The server, without credentials.
        target: String,
        /// What was being done (`connect`, `load`, `save`, ...).
        operation: String,
        /// The deadline that passed.
        after: std::time::Duration,
    },
}

/// What to do about damage, which depends on the file that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Remedy {
    /// A `LogStore`'s log: `sessionlog check --repair` salvages every other
    /// record (or open it with `LogOptions::repair(true)`).
    RepairLog,
    /// A `DirStore` session file: only that session is affected; saving or
    /// deleting the session replaces the file.
    ReplaceSessionFile,
    /// A `LogStore`'s lock file: it holds no session; remove it while no
    /// process has the store open, and the next open makes a new one.
    RemoveLockFile,
}

impl std::fmt::Display for Remedy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Remedy::RepairLog => "run `sessionlog check --repair` to salvage the rest",
            Remedy::ReplaceSessionFile => {
                "only this session is affected; saving or deleting it replaces the file"
            }
            Remedy::RemoveLockFile => {
                "the lock file holds no session: remove it while no process has the store open"
            }
        })
    }
}

impl Error {
    /// Builds an [`Error::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            op,
            source,
        }
    }

    /// Builds an [`Error::Corrupt`] in a store's log file.
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Self::corrupt_in(path, offset, reason, Remedy::RepairLog)
    }

    /// Builds an [`Error::Corrupt`] with the remedy for that file.
    pub(crate) fn corrupt_in(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
        remedy: Remedy,
    ) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
            remedy,
        }
    }

    /// Builds an [`Error::Random`].
    pub(crate) fn random(e: impl std::fmt::Display) -> Self {
        Error::Random(e.to_string())
    }

    /// True for [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}
