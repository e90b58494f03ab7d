"""session2's store interface over the sessionlog engine.

``LogSessionStore``, ``DirSessionStore`` and ``MemorySessionStore`` keep
pickled session objects (anything with an ``id`` attribute), as session2's
stores do, and add what the engine brings: expiry, a size limit, and
conditional saves that refuse to overwrite a session another request or
process saved in the meantime.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import pickle
import threading
import time
import weakref
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from . import _native
from ._errors import BadKeysError, InvalidOptionError, SerializationError, UnsafeError

__all__ = [
    "SessionStore",
    "LogSessionStore",
    "DirSessionStore",
    "MemorySessionStore",
    "session_version",
    "OwnedSession",
]

Seconds = Union[int, float, _dt.timedelta]
#: ``encryption_keys=``: a key file's path, or ``KEY_ID:BASE64`` entries.
EncryptionKeys = Union[str, "os.PathLike[str]", Sequence[str]]
Deadline = Union[int, float, _dt.datetime, _dt.timedelta]

#: Attribute on a loaded or saved session holding the stored version.
VERSION_ATTR = "_sessionlog_version"
#: Attribute on a loaded or saved session holding its deadline (ms) or None.
EXPIRES_ATTR = "_sessionlog_expires"
#: Attribute on a loaded or saved session holding its owner, or None. It is
#: never pickled into the session's data (the store keeps the owner beside
#: it, as a digest with ``hashed_ids``).
OWNER_ATTR = "_sessionlog_owner"

#: ``save_session``'s default for ``owner``: the owner the object was
#: loaded or last saved with.
_KEEP: Any = object()


def _owner_str(owner: Any) -> Optional[str]:
    """An owner as the store keeps it: a string (a user's primary key may be
    an int or a UUID), or None."""
    if owner is None:
        return None
    return owner if isinstance(owner, str) else str(owner)

class OwnedSession(NamedTuple):
    """One of an owner's sessions, as ``sessions_of`` lists it."""

    #: The session's id (with ``hashed_ids``: its stored digest).
    id: str
    #: Last save or touch, in milliseconds since the Unix epoch.
    modified_ms: int
    #: The deadline in milliseconds since the Unix epoch, or None.
    expires_ms: Optional[int]
    #: The stored version.
    version: int
    #: The length of the stored data in bytes.
    size: int


# Stores opened by this process, reopened lazily in a child after fork():
# the engine's handle (its background thread, its locks) belongs to the
# process that opened it.
_open_stores: "weakref.WeakSet[SessionStore]" = weakref.WeakSet()
_open_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _open_lock
    _open_lock = threading.Lock()  # another thread may have held it at fork()
    for store in list(_open_stores):
        store._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _seconds(name: str, value: Optional[Seconds]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, not {type(value).__name__}")
    return float(value)


def _per_owner(value: Optional[int]) -> Optional[int]:
    """``max_sessions_per_owner`` checked: None, or an int of at least 1
    (a bool is refused, though Python counts it as an int)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_sessions_per_owner must be an int, not {type(value).__name__}")
    if value < 1:
        raise InvalidOptionError("invalid option: max_sessions_per_owner must be at least 1")
    return value


def _encryption(keys: Optional[EncryptionKeys]) -> Dict[str, Any]:
    """The native options for ``encryption_keys=``: a path (a str or a
    path-like) names a key file, which the engine reads and checks as
    ``Keyring::from_file`` does; a list or tuple holds ``KEY_ID:BASE64``
    entries, the first the current key, the others retired."""
    if keys is None:
        return {}
    if isinstance(keys, (str, os.PathLike)):
        path = os.fspath(keys)
        if isinstance(path, str) and "/" not in path and ":" in path and not os.path.lexists(path):
            # Most likely a key given where a path was expected: say so
            # without quoting it.
            raise BadKeysError(
                "encryption_keys: a str is the path of a key file, and no such file exists; "
                "give KEY_ID:BASE64 entries as a list"
            )
        return {"encryption_key_file": path}
    if isinstance(keys, (list, tuple)) and all(isinstance(k, str) for k in keys):
        return {"encryption_keys": list(keys)}
    raise TypeError(
        "encryption_keys must be a key file's path or a list of 'KEY_ID:BASE64' strings, "
        f"not {type(keys).__name__}"
    )


def _deadline_ms(expires: Deadline) -> int:
    """Milliseconds since the epoch for a deadline given as a datetime, a
    Unix timestamp in seconds, or a timedelta from now."""
    if isinstance(expires, _dt.datetime):
        ts = expires.timestamp()
    elif isinstance(expires, _dt.timedelta):
        ts = time.time() + expires.total_seconds()
    elif isinstance(expires, (int, float)) and not isinstance(expires, bool):
        ts = float(expires)
    else:
        raise TypeError(
            f"expires must be a datetime, a timedelta or a Unix timestamp, not {type(expires).__name__}"
        )
    if ts != ts or ts in (float("inf"), float("-inf")):
        raise ValueError("expires must be finite")
    return max(1, int(ts * 1000))


def session_version(session: Any) -> int:
    """The stored version this session object was loaded or last saved at
    (0 for a session never saved or loaded)."""
    return getattr(session, VERSION_ATTR, 0)


def _session_id(session: Any) -> str:
    try:
        sid = session.id
    except AttributeError:
        raise TypeError("a session must have an 'id' attribute") from None
    if not isinstance(sid, str):
        raise TypeError(f"session.id must be a str, not {type(sid).__name__}")
    return sid


class SessionStore:
    """Base of the sessionlog stores: session2's ``SessionStore`` API.

    Subclasses open a native engine in ``_open()``. Every method is safe to
    call from many threads at once; the engine releases the GIL.
    """

    #: Several processes may use one store at once (tested).
    is_multiprocess_safe = False
    #: One store object may be shared by many threads (tested).
    is_thread_safe = True

    def __init__(self, *, pickle_protocol: int = pickle.HIGHEST_PROTOCOL, conditional: bool = False) -> None:
        self.pickle_protocol = pickle_protocol
        #: Whether ``save_session`` is conditional unless told otherwise.
        self.conditional = conditional
        self._native: Optional[_native.Store] = self._open()
        with _open_lock:
            _open_stores.add(self)

    # -- engine handle -------------------------------------------------

    def _open(self) -> _native.Store:  # pragma: no cover - abstract
        raise NotImplementedError

    def _forget_after_fork(self) -> None:
        # The native value refuses to tear down the parent's engine in the
        # child; drop our reference and open our own on first use.
        self._native = None

    @property
    def max_sessions_per_owner(self) -> Optional[int]:
        """The limit of live sessions per owner this store was opened with
        (``max_sessions_per_owner``), or None."""
        return getattr(self, "_options", {}).get("max_sessions_per_owner")

    @property
    def native(self) -> _native.Store:
        """The engine handle (``sessionlog_store._native.Store``), opened again
        after a fork."""
        n = self._native
        if n is None:
            n = self._native = self._open()
        return n

    # -- session2's API ---------------------------------------------------

    def setup(self) -> None:
        """Create what the store needs. Idempotent: never destroys sessions."""
        self.native.setup()

    def load_session(self, id: str, default: Any = None) -> Any:
        """The session with this id, or ``default`` if there is none (or it
        expired). The returned object remembers the stored version, for a
        later conditional save."""
        found = self.native.load_owned(id)
        if found is None:
            return default
        data, version, expires, _modified, owner = found
        session = self._unpickle(data, id)
        _set_meta(session, version, expires, owner)
        return session

    def save_session(
        self,
        session: Any,
        if_unchanged: Optional[bool] = None,
        expires: Optional[Deadline] = None,
        owner: Any = _KEEP,
    ) -> None:
        """Pickle and store ``session`` under ``session.id``.

        ``if_unchanged`` (default: the store's ``conditional`` option) makes
        the save conditional: it only happens if the stored session is still
        the version this object was loaded (or last saved) at, or, for a
        session never saved, only if no session has this id; otherwise
        :class:`sessionlog_store.ConflictError` is raised and nothing is written.

        ``expires`` sets an absolute deadline (a datetime, a Unix timestamp,
        or a timedelta from now) after which the session no longer exists;
        it sticks to the object for later saves. Without it, the deadline
        the object was loaded with (if any) is kept.

        ``owner`` names who the session belongs to, typically the user's id
        (a string, or anything ``str()`` makes one of, such as an int
        primary key; ``None``: no one), so that :meth:`sessions_of` lists it
        and :meth:`delete_sessions_of` can log the user out everywhere. It
        sticks to the object; without it, the owner the object was loaded
        or last saved with is kept.
        """
        sid = _session_id(session)
        conditional = self.conditional if if_unchanged is None else bool(if_unchanged)
        expires_ms = _deadline_ms(expires) if expires is not None else getattr(session, EXPIRES_ATTR, None)
        version = getattr(session, VERSION_ATTR, 0) if conditional else 0
        who = getattr(session, OWNER_ATTR, None) if owner is _KEEP else _owner_str(owner)
        data = self._pickle(session, sid)
        new_version, _modified = self.native.save(sid, data, expires_ms, version, conditional, who)
        _set_meta(session, new_version, expires_ms, who)

    def delete_session(self, session: Any) -> bool:
        """Delete the session (an object with ``id``, or the id itself);
        true if a live session existed."""
        sid = session if isinstance(session, str) else _session_id(session)
        return self.native.delete(sid)

    def has_session(self, id: str) -> bool:
        """Whether a live session with this id exists."""
        return self.native.has(id)

    def iter_sessions(self) -> Iterator[Tuple[str, Any]]:
        """Every live session as ``(id, session)`` pairs (for admin tools).
        A snapshot taken when called; sessions are unpickled as you go."""
        snapshot = self.native.sessions()

        def gen() -> Iterator[Tuple[str, Any]]:
            for sid, data, version, expires, _modified in snapshot:
                session = self._unpickle(data, sid)
                _set_meta(session, version, expires)
                yield sid, session

        return gen()

    def delete_old_sessions(self, minutes: Union[int, float]) -> int:
        """Delete every session not saved or touched for ``minutes`` minutes
        (and every expired one); returns how many were deleted."""
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
            raise TypeError(f"minutes must be a number, not {type(minutes).__name__}")
        return self.native.delete_old(float(minutes) * 60.0)

    # -- beyond session2 ----------------------------------------------------

    def sessions_of(self, owner: Any) -> List[OwnedSession]:
        """The live sessions of ``owner`` (as given to ``save_session``),
        most recently modified first, without their data: a list of
        :class:`OwnedSession`. With ``hashed_ids`` the ids listed are the
        stored digests (give the session's own id as ``keep``)."""
        return [OwnedSession(*row) for row in self.native.sessions_of(_owner_str(owner) or "")]

    def delete_sessions_of(self, owner: Any, keep: Any = None) -> int:
        """Delete every live session of ``owner`` but ``keep`` (a session
        or its id, e.g. the current request's): "log out everywhere else".
        Returns how many were deleted."""
        if keep is not None and not isinstance(keep, str):
            keep = _session_id(keep)
        return self.native.delete_sessions_of(_owner_str(owner) or "", keep)

    def erase_sessions_of(self, owner: Any) -> int:
        """Delete every session of ``owner`` so that, when it returns, no
        byte of their ids, data or owner remains in the store's files (a
        user's erasure). Returns how many were live."""
        return self.native.erase_sessions_of(_owner_str(owner) or "")

    def touch_session(self, id: str) -> bool:
        """Refresh the session's idle timer without rewriting it; false if
        it does not exist."""
        return self.native.touch(id)

    def delete_expired_sessions(self) -> int:
        """Delete only sessions past their deadline or the store's
        ``max_idle``; returns how many."""
        return self.native.delete_expired()

    def sync(self) -> None:
        """Make every acknowledged save durable now, whatever the policy."""
        self.native.sync()

    # -- pickling -------------------------------------------------------------

    def _pickle(self, session: Any, sid: str) -> bytes:
        # The owner is kept beside the data, never in the pickle.
        state = getattr(session, "__dict__", None)
        owner = state.pop(OWNER_ATTR, None) if isinstance(state, dict) else None
        try:
            return self._pickle_state(session, sid)
        finally:
            if owner is not None and isinstance(state, dict):
                state[OWNER_ATTR] = owner

    def _pickle_state(self, session: Any, sid: str) -> bytes:
        try:
            if not self.native.hashed_ids:
                return pickle.dumps(session, self.pickle_protocol)
            # The session object holds its own id: with hashed_ids the
            # pickle must not, or the file would hold every id after all.
            out = io.BytesIO()
            _IdFreePickler(out, self.pickle_protocol, sid).dump(session)
            return out.getvalue()
        except Exception as e:  # pickling raises many types
            # The pickling error's own text may quote session data: only its
            # type goes into the message; the error itself is __cause__.
            raise SerializationError(
                f"the session could not be pickled ({type(e).__name__}; see __cause__)"
            ) from e

    def _check_owner(self) -> None:
        """Refuses to unpickle from a store another user owns: whoever can
        write a store can plant a pickle in it, and unpickling runs code."""
        owner = self.native.owner_uid
        euid = os.geteuid()
        if owner is not None and owner != euid:
            raise UnsafeError(
                f"{self.native.path}: refusing to unpickle a session from a store that belongs "
                f"to uid {owner}, not to this process's user (uid {euid}): whoever can write "
                f"it could run code in this process; run as uid {owner}"
            )

    def _unpickle(self, data: bytes, sid: str) -> Any:
        self._check_owner()
        try:
            if not self.native.hashed_ids:
                return pickle.loads(data)
            return _IdFreeUnpickler(io.BytesIO(data), sid).load()
        except Exception as e:
            raise SerializationError(
                f"stored session data could not be unpickled ({type(e).__name__}; see __cause__)"
            ) from e

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.native!r}>"


#: Stands for the session's id in a pickle written with ``hashed_ids``.
_ID_REF = "sessionlog.id"


class _IdFreePickler(pickle.Pickler):
    """Pickles a session with every string equal to its id written as a
    reference, so that the pickle does not contain the id."""

    def __init__(self, file: io.BytesIO, protocol: int, sid: str) -> None:
        super().__init__(file, protocol)
        self._sid = sid

    def persistent_id(self, obj: Any) -> Optional[str]:
        if type(obj) is str and obj == self._sid:
            return _ID_REF
        return None


class _IdFreeUnpickler(pickle.Unpickler):
    """Reads what :class:`_IdFreePickler` wrote (or any plain pickle),
    putting back the id the session was looked up by."""

    def __init__(self, file: io.BytesIO, sid: str) -> None:
        super().__init__(file)
        self._sid = sid

    def persistent_load(self, pid: Any) -> Any:
        if pid == _ID_REF:
            return self._sid
        raise pickle.UnpicklingError("unknown persistent reference in a stored session")


def _set_meta(session: Any, version: int, expires_ms: Optional[int], owner: Any = _KEEP) -> None:
    try:
        setattr(session, VERSION_ATTR, version)
        setattr(session, EXPIRES_ATTR, expires_ms)
        if owner is not _KEEP:
            setattr(session, OWNER_ATTR, owner)
    except (AttributeError, TypeError):
        # Objects without a __dict__ cannot carry a version: their saves
        # can only be unconditional (or create-only).
        pass


class LogSessionStore(SessionStore):
    """Sessions in one sessionlog ``LogStore`` file, shared by every process
    that opens it (pre-fork workers included).

    Options (all keyword-only):

    - ``sync``: ``"interval"`` (default), ``"always"`` or ``"never"``: when
      saves reach stable storage. A process crash loses no acknowledged save
      under any policy; the policy decides what a power loss may take.
    - ``sync_interval``: seconds (or a timedelta) between background syncs
      under ``"interval"``; default 1.
    - ``max_idle``: sessions not saved or touched for this long (seconds or
      a timedelta) no longer exist; default none.
    - ``max_session_size``: largest pickled session in bytes; default 16 MiB.
    - ``repair``: salvage a store damaged in the middle (a copy of the
      damaged file is kept); default off.
    - ``background``: the background sync and compaction thread; default on.
    - ``hashed_ids``: store only a digest of each session id (Rust's
      ``HashedIds``), so that a leaked file or backup holds no id a browser
      could present; callers keep using the ids themselves. The pickle of
      a session refers to its id instead of holding it, and loading puts
      back the id asked for. :meth:`iter_sessions` yields the digests, and
      sessions whose ``id`` is the digest (save those back only by their
      own id). Every process sharing the store must set it alike. A store
      written without it stays readable: each session moves to its digest
      at its next save. Default off.
    - ``allow_others_to_write_directory``: open a store whose directory
      other users may write (Rust's option of that name), giving up the
      protection against them. Default off: such a directory is refused
      with :class:`sessionlog_store.UnsafeError`.
    - ``maintain_as_owner``: as root, open a store that belongs to another
      user (maintenance: ``delete_old_sessions``, ``compact``), working as
      that user; its sessions are never unpickled. Default off: refused.
    - ``max_sessions``, ``max_bytes``: a quota of live sessions, or of bytes
      of their records; a save past it raises ``QuotaExceededError`` and
      writes nothing (or, with ``when_full="evict-oldest"``, deletes the
      sessions used least recently; default ``"refuse"``). Expired sessions
      never count. Default none.
    - ``max_idle`` and the quota are recorded in the store when it is made
      and applied by every process; opening it with other values raises
      ``InvalidOptionError`` (leave them unset to follow the store; change
      them with ``sessionlog policy``).
    - ``max_sessions_per_owner``: at most this many live sessions per owner
      (Rust's option of that name): a save with an owner that would give it
      more deletes that owner's least recently modified other sessions, in
      the same append as the save and under the store's write lock, so the
      limit holds however many processes log the same user in at once; the
      newest login wins. An option of this handle, not recorded in the
      store: give every process the same. Default none.
    - ``encryption_keys``: encrypt every session's data (Rust's
      ``Encrypted``; ciphertext bound to the session and the key id) under
      these keys: the path of a key file (one ``KEY_ID:BASE64`` line per
      key, mode 0600, as ``sessionlog keygen`` prints; Rust's
      ``Keyring::from_file``), or a list of such strings. The first key
      encrypts; the others are retired keys, which only decrypt. A record
      under a key not given raises :class:`sessionlog_store.KeyMissingError`
      naming its key id; a tampered or moved one
      :class:`sessionlog_store.UndecryptableError`. Default none.
    - ``encryption_accept_plaintext``: with ``encryption_keys``, read
      sessions saved before the store was encrypted (each is encrypted at
      its next save); for that migration only. Default off.
    - ``pickle_protocol``: default ``pickle.HIGHEST_PROTOCOL``.

    Sessions are unpickled only from a store that belongs to this
    process's effective user (:class:`sessionlog_store.UnsafeError` otherwise).
    - ``conditional``: make every ``save_session`` conditional by default.
    """

    is_multiprocess_safe = True
    is_thread_safe = True

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        sync: str = "interval",
        sync_interval: Seconds = 1.0,
        max_idle: Optional[Seconds] = None,
        max_session_size: Optional[int] = None,
        repair: bool = False,
        background: bool = True,
        hashed_ids: bool = False,
        allow_others_to_write_directory: bool = False,
        maintain_as_owner: bool = False,
        max_sessions: Optional[int] = None,
        max_bytes: Optional[int] = None,
        when_full: Optional[str] = None,
        pickle_protocol: int = pickle.HIGHEST_PROTOCOL,
        conditional: bool = False,
        encryption_keys: Optional[EncryptionKeys] = None,
        encryption_accept_plaintext: bool = False,
        max_sessions_per_owner: Optional[int] = None,
    ) -> None:
        self.path = os.fspath(path)
        self._options = dict(
            sync=sync,
            sync_interval=_seconds("sync_interval", sync_interval),
            max_idle=_seconds("max_idle", max_idle),
            max_session_size=max_session_size,
            max_sessions_per_owner=_per_owner(max_sessions_per_owner),
            repair=repair,
            background=background,
            hashed_ids=bool(hashed_ids),
            allow_others_to_write_directory=bool(allow_others_to_write_directory),
            maintain_as_owner=bool(maintain_as_owner),
            max_sessions=max_sessions,
            max_bytes=max_bytes,
            when_full=when_full,
            encryption_accept_plaintext=bool(encryption_accept_plaintext),
            **_encryption(encryption_keys),
        )
        super().__init__(pickle_protocol=pickle_protocol, conditional=conditional)

    def _open(self) -> _native.Store:
        return _native.Store.log(self.path, **self._options)

    def compact(self) -> Dict[str, int]:
        """Rewrite the live sessions into a new file now (the background
        thread does this when worthwhile); returns what it did."""
        return self.native.compact()


class DirSessionStore(SessionStore):
    """One file per session in a directory (session2's
    ``DirectorySessionStore``), created mode 0700 if missing, each file
    named by a digest of its session's id. Options: ``sync``,
    ``sync_interval``, ``max_idle``, ``max_session_size``, ``hashed_ids``,
    ``allow_others_to_write_directory``, ``pickle_protocol``,
    ``conditional``, ``encryption_keys``, ``encryption_accept_plaintext``,
    ``max_sessions_per_owner`` as for :class:`LogSessionStore` (here
    decided under the directory's lock, and each save with an owner then
    reads every session file), and (Rust's ``DirOptions`` of the same
    names):

    - ``allow_others_to_read_directory``: open a directory that grants its
      group or other users any access (they see how many sessions there
      are and when each changed). Default off: refused with
      :class:`sessionlog_store.UnsafeError`.
    - ``maintain_as_owner``: as root, open a directory that belongs to
      another user (maintenance: ``delete_old_sessions``, ``setup``). Sessions of
      such a store are never unpickled (:class:`sessionlog_store.UnsafeError`).
      Default off: such a directory is refused.
    - ``max_sessions``, ``max_bytes``: a quota of live sessions, or of bytes
      of their files (Rust's ``DirOptions`` of the same names, options of
      this handle, not recorded in the directory): a save that would pass
      it raises :class:`sessionlog_store.QuotaExceededError` and writes nothing;
      expired sessions never count (a save that finds them removes them).
    """

    is_multiprocess_safe = True
    is_thread_safe = True

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        sync: str = "interval",
        sync_interval: Seconds = 1.0,
        max_idle: Optional[Seconds] = None,
        max_session_size: Optional[int] = None,
        hashed_ids: bool = False,
        allow_others_to_read_directory: bool = False,
        allow_others_to_write_directory: bool = False,
        maintain_as_owner: bool = False,
        pickle_protocol: int = pickle.HIGHEST_PROTOCOL,
        conditional: bool = False,
        encryption_keys: Optional[EncryptionKeys] = None,
        encryption_accept_plaintext: bool = False,
        max_sessions: Optional[int] = None,
        max_bytes: Optional[int] = None,
        max_sessions_per_owner: Optional[int] = None,
    ) -> None:
        self.path = os.fspath(path)
        self._options = dict(
            sync=sync,
            sync_interval=_seconds("sync_interval", sync_interval),
            max_idle=_seconds("max_idle", max_idle),
            max_session_size=max_session_size,
            max_sessions_per_owner=_per_owner(max_sessions_per_owner),
            hashed_ids=bool(hashed_ids),
            allow_others_to_read_directory=bool(allow_others_to_read_directory),
            allow_others_to_write_directory=bool(allow_others_to_write_directory),
            maintain_as_owner=bool(maintain_as_owner),
            encryption_accept_plaintext=bool(encryption_accept_plaintext),
            max_sessions=max_sessions,
            max_bytes=max_bytes,
            **_encryption(encryption_keys),
        )
        super().__init__(pickle_protocol=pickle_protocol, conditional=conditional)

    def _open(self) -> _native.Store:
        return _native.Store.dir(self.path, **self._options)

    def delete_old_sessions(self, minutes: Union[int, float]) -> Tuple[int, int]:  # type: ignore[override]
        """As session2's ``DirectorySessionStore``: deletes sessions idle for
        ``minutes`` minutes and returns ``(n_deleted, n_remaining)``."""
        deleted = super().delete_old_sessions(minutes)
        return deleted, len(self.native.sessions())


class MemorySessionStore(SessionStore):
    """Sessions in this process's memory (lost when it exits; a forked child
    gets a copy). Options: ``max_idle``, ``max_session_size``,
    ``pickle_protocol``, ``conditional``, ``encryption_keys``,
    ``max_sessions_per_owner`` (as for :class:`LogSessionStore`)."""

    is_multiprocess_safe = False
    is_thread_safe = True

    def __init__(
        self,
        *,
        max_idle: Optional[Seconds] = None,
        max_session_size: Optional[int] = None,
        pickle_protocol: int = pickle.HIGHEST_PROTOCOL,
        conditional: bool = False,
        encryption_keys: Optional[EncryptionKeys] = None,
        max_sessions_per_owner: Optional[int] = None,
    ) -> None:
        self._options = dict(
            max_idle=_seconds("max_idle", max_idle),
            max_session_size=max_session_size,
            max_sessions_per_owner=_per_owner(max_sessions_per_owner),
            **_encryption(encryption_keys),
        )
        super().__init__(pickle_protocol=pickle_protocol, conditional=conditional)

    def _open(self) -> _native.Store:
        return _native.Store.memory(**self._options)

    def _forget_after_fork(self) -> None:
        # The child keeps its copy of the parent's sessions, like a dict.
        pass
