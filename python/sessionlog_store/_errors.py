"""The exceptions of sessionlog, one per error of the Rust engine.

Every exception raised by a store carries the Rust error's message
unchanged. They all derive from :class:`Error`; the ones caused by bad
arguments are also :class:`ValueError`, and :class:`IoError` is also an
:class:`OSError` (with ``errno`` set when the operating system gave one).
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "Error",
    "InvalidIdError",
    "InvalidOwnerError",
    "TooLargeError",
    "ConflictError",
    "NotAStoreError",
    "UnsupportedVersionError",
    "CorruptError",
    "IoError",
    "PoisonedError",
    "InvalidOptionError",
    "BackendError",
    "SerializationError",
    "UnsafeError",
    "BusyError",
    "ServerTimeoutError",
    "QuotaExceededError",
    "RandomSourceError",
    "KeyMissingError",
    "UndecryptableError",
    "BadKeysError",
]


class Error(Exception):
    """Base class of every sessionlog error."""


class InvalidIdError(Error, ValueError):
    """A session id that is empty, longer than 128 characters, or has a
    character outside ``A-Z a-z 0-9 - _ ,``. Nothing was read or written."""


class InvalidOwnerError(Error, ValueError):
    """An owner that is empty, longer than 255 bytes of UTF-8, or has a
    control character. Nothing was read or written; the message never shows
    the owner."""


class TooLargeError(Error, ValueError):
    """Session data over the store's ``max_session_size``. Nothing was
    written. ``size`` and ``limit`` are in bytes."""

    size: Optional[int] = None
    limit: Optional[int] = None


class ConflictError(Error):
    """A conditional save found another version stored (or, for a new
    session, an existing one). Nothing was written: reload and retry.
    ``expected`` is the version the save expected, ``found`` the stored one
    (0: none)."""

    expected: Optional[int] = None
    found: Optional[int] = None


class NotAStoreError(Error):
    """The file exists but is not a sessionlog store; it was left untouched."""


class UnsupportedVersionError(Error):
    """The store was written by a format version this build cannot read."""

    found: Optional[int] = None


class CorruptError(Error):
    """Damage in the middle of a store file (``offset`` says where); run
    ``sessionlog check --repair`` or open with ``repair=True``."""

    offset: Optional[int] = None


class IoError(Error, OSError):
    """An I/O error from the operating system, naming the file."""


class PoisonedError(Error):
    """An earlier write or sync failed; writes are refused until the store
    is reopened (loads still work)."""


class InvalidOptionError(Error, ValueError):
    """An option out of range."""


class BackendError(Error):
    """A database or cache server failed or could not be reached."""


class SerializationError(Error, TypeError):
    """A session could not be pickled (or serialised), or stored bytes could
    not be unpickled. The original exception is the ``__cause__``."""


class UnsafeError(Error):
    """A file or directory of the store is not one it can trust: a directory
    other users can write, a symbolic or hard link, a file of another owner
    or readable by others. Nothing was read from it or written to it."""


class BusyError(Error):
    """Another holder of the store's write lock (stopped or hung?) or another
    compaction is in the way; nothing was changed. Try again later."""


class ServerTimeoutError(Error, TimeoutError):
    """A database or cache server did not answer within the deadline."""


class QuotaExceededError(Error):
    """A save would take the store past the quota it records
    (``max_sessions`` or ``max_bytes``); nothing was written. ``limit`` is
    the quota, ``used`` what the store would hold with the save."""

    limit: Optional[int] = None
    used: Optional[int] = None


class RandomSourceError(Error):
    """The operating system's random source failed."""


class KeyMissingError(Error):
    """A session's record is encrypted under a key the store's
    ``encryption_keys`` lack; the message names the key id it needs. No
    data was returned: add that key (as a retired one) and retry."""


class UndecryptableError(Error):
    """A session's record did not decrypt: tampered with, moved from another
    session or store, written under another key of the same id, or
    plaintext in a store not opened with ``encryption_accept_plaintext``.
    No data was returned."""


class BadKeysError(Error, ValueError):
    """A key file or an ``encryption_keys`` entry is malformed (the message
    names the file or entry and line, never the key)."""
