"""A Django session backend over a sessionlog store.

Settings::

    SESSION_ENGINE = "sessionlog_store.django"
    SESSIONLOG_PATH = BASE_DIR / "sessions.db"     # required: the store file
    SESSIONLOG_OPTIONS = {"sync": "interval"}       # optional, as LogSessionStore
    SESSIONLOG_CONDITIONAL = False                  # optional, see below

``SESSIONLOG_OPTIONS`` takes every option of ``LogSessionStore``; e.g.
``{"encryption_keys": "/etc/myapp/session-keys"}`` keeps session data
encrypted at rest (a key file, or a list of ``KEY_ID:BASE64`` strings, the
first the current key).

Every worker process opens the one store file; a session saved by one is
seen by all. Session data is serialised with ``SESSION_SERIALIZER`` (JSON by
default) and stored with its deadline from ``get_expiry_age()``, so the
engine never returns an expired session. ``manage.py clearsessions``
removes expired sessions from the file (a compaction).

Saves follow Django's database backend: ``save(must_create=True)`` raises
``CreateError`` if the key exists; ``save()`` raises ``UpdateError`` if the
session was deleted since it was loaded (a logout in one request is not
undone by a concurrent one; the middleware turns it into
``SessionInterrupted``). Between two concurrent requests that both change
a live session, the last save wins, as in every Django backend, unless
``SESSIONLOG_CONDITIONAL = True``: then the later save raises
:class:`SessionConflict` (an ``UpdateError``, so the request gets a 400 and
nothing is lost silently), and the client can retry. A view that wants to
merge instead calls :func:`update_session`, which re-runs its change on the
newer data (as Rust's ``SessionUpdate`` does).

Sessions know their user: every save records the logged-in user's id
(``_auth_user_id``, what ``django.contrib.auth.login`` stores) as the
session's owner, with no setting, so that::

    from sessionlog_store.django import sessions_of, delete_sessions_of, erase_sessions_of

    sessions_of(user)              # the user's live sessions, newest first
    delete_sessions_of(user, keep=request.session.session_key)  # log out elsewhere
    erase_sessions_of(user)        # on account deletion: no byte remains

``user`` is a user object or its primary key. Logging a user out of every
other browser after a password change takes two lines where the password
changes (Django's ``PasswordChangeView`` keeps the current session through
``update_session_auth_hash``; the others would only fail their hash check
on their next request, and stay stored until then)::

    class PasswordChange(PasswordChangeView):
        def form_valid(self, form):
            response = super().form_valid(form)
            delete_sessions_of(self.request.user, keep=self.request.session.session_key)
            return response

``SESSIONLOG_MAX_SESSIONS_PER_USER = n`` lets each user keep at most ``n``
sessions: a login beyond it logs out that user's least recently used
sessions (the newest login wins). It is the store's own
``max_sessions_per_owner`` option (which ``SESSIONLOG_OPTIONS`` may give
instead): the save and the deletions are one append under the store's
write lock, so the limit holds however many worker processes log the same
user in at once.

What the store counts (loads, saves, conflicts, errors by kind, latencies,
compactions) is :func:`metrics` (a dict), or, for a Prometheus scrape, the
view :func:`metrics_view`::

    path("metrics", sessionlog_store.django.metrics_view)
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Tuple, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from . import _metrics, _native
from ._errors import ConflictError
from ._stores import LogSessionStore

__all__ = [
    "SessionStore",
    "SessionConflict",
    "get_store",
    "UserSession",
    "sessions_of",
    "delete_sessions_of",
    "erase_sessions_of",
    "update_session",
]

T = TypeVar("T")

#: Where ``django.contrib.auth`` keeps the logged-in user's id in a session.
AUTH_USER_KEY = "_auth_user_id"


class UserSession(NamedTuple):
    """One of a user's sessions, as :func:`sessions_of` lists it."""

    #: The session key (the cookie's value).
    session_key: str
    #: When it was last saved, an aware UTC datetime.
    modified: _dt.datetime
    #: When it expires, an aware UTC datetime (or None).
    expiry: Optional[_dt.datetime]


def _user_owner(user: Any) -> str:
    """The owner a user's sessions are saved with: the primary key as
    ``django.contrib.auth.login`` stores it."""
    meta = getattr(user, "_meta", None)
    if meta is not None and getattr(meta, "pk", None) is not None:
        return str(meta.pk.value_to_string(user))
    return str(user)


def _utc(ms: Optional[int]) -> Optional[_dt.datetime]:
    if ms is None:
        return None
    return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc)


def sessions_of(user: Any) -> List[UserSession]:
    """The user's live sessions (a user object or its primary key), most
    recently saved first."""
    rows = _configured()[1].native.sessions_of(_user_owner(user))
    out = []
    for sid, modified, expires, _version, _size in rows:
        out.append(UserSession(sid, _utc(modified) or _dt.datetime.now(_dt.timezone.utc), _utc(expires)))
    return out


def delete_sessions_of(user: Any, keep: Optional[str] = None) -> int:
    """Log the user out of every session but ``keep`` (a session key, e.g.
    ``request.session.session_key``); returns how many were deleted."""
    return _configured()[1].native.delete_sessions_of(_user_owner(user), keep)


def erase_sessions_of(user: Any) -> int:
    """Delete every session of the user so that no byte of them remains in
    the store's file (for an account's deletion); returns how many."""
    return _configured()[1].native.erase_sessions_of(_user_owner(user))


class SessionConflict(UpdateError):
    """With ``SESSIONLOG_CONDITIONAL``: another request saved this session
    after this one loaded it; this request's changes were not saved."""


_lock = threading.Lock()
_stores: Dict[Tuple[Any, ...], LogSessionStore] = {}
_config: Optional[Tuple[Tuple[Any, ...], LogSessionStore, bool]] = None


def _reset(*, setting: str = "", **kwargs: Any) -> None:
    global _config
    if setting.startswith("SESSIONLOG_"):
        _config = None


setting_changed.connect(_reset)


def get_store() -> LogSessionStore:
    """The process's store for the current settings (opened once, and again
    in a forked child)."""
    return _configured()[1]


def _configured() -> Tuple[Tuple[Any, ...], LogSessionStore, bool]:
    global _config
    cfg = _config
    if cfg is not None:
        return cfg
    path = getattr(settings, "SESSIONLOG_PATH", None)
    if not path:
        raise ImproperlyConfigured("SESSION_ENGINE 'sessionlog_store.django' needs SESSIONLOG_PATH (the store file)")
    options = dict(getattr(settings, "SESSIONLOG_OPTIONS", {}) or {})
    limit = getattr(settings, "SESSIONLOG_MAX_SESSIONS_PER_USER", None)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ImproperlyConfigured("SESSIONLOG_MAX_SESSIONS_PER_USER must be a positive int")
        given = options.get("max_sessions_per_owner")
        if given is not None and given != limit:
            raise ImproperlyConfigured(
                "SESSIONLOG_MAX_SESSIONS_PER_USER and SESSIONLOG_OPTIONS['max_sessions_per_owner'] "
                "differ; set one of them"
            )
        # The store's own limit: decided under its write lock, in the same
        # append as the save, across every process.
        options["max_sessions_per_owner"] = limit
    conditional = bool(getattr(settings, "SESSIONLOG_CONDITIONAL", False))
    # Lists (encryption_keys) become tuples: the key must be hashable.
    key = (
        str(path),
        tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items())),
    )
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = LogSessionStore(path, **options)
        cfg = _config = (key, store, conditional)
    return cfg


class SessionStore(SessionBase):
    """Django's ``SessionBase`` over a sessionlog ``LogStore``."""

    def __init__(self, session_key: Optional[str] = None) -> None:
        # The stored version this object loaded or last saved (0: none).
        self._sessionlog_version = 0
        super().__init__(session_key)

    if TYPE_CHECKING:
        # Private members of SessionBase that Django's own backends use and
        # django-stubs does not declare.
        _session_cache: Dict[str, Any]

        def _get_new_session_key(self) -> str: ...
        def _get_session(self, no_load: bool = False) -> Dict[str, Any]: ...
        def _get_or_create_session_key(self) -> str: ...

    @staticmethod
    def _engine() -> _native.Store:
        return _configured()[1].native

    def _validate_session_key(self, key: Any) -> bool:
        # Cookie values are untrusted: anything the engine would reject as
        # an id is no key at all.
        valid = super()._validate_session_key(key)  # type: ignore[misc]  # private, not in django-stubs
        return bool(valid) and isinstance(key, str) and _native.is_valid_id(key)

    # -- the SessionBase contract -------------------------------------------

    def load(self) -> Dict[str, Any]:
        found = self._engine().load(self.session_key) if self.session_key else None
        if found is None:
            self._session_key = None
            self._sessionlog_version = 0
            return {}
        data, version, _expires, _modified = found
        self._sessionlog_version = version
        try:
            loaded = self.serializer().loads(data)
        except Exception:
            # As Django's own decode(): unreadable data is an empty session.
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def exists(self, session_key: Optional[str]) -> bool:
        if not session_key or not _native.is_valid_id(session_key):
            return False
        return self._engine().has(session_key)

    def create(self) -> None:
        while True:
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        data = self._get_session(no_load=must_create)
        payload = self.serializer().dumps(data)
        user = data.get(AUTH_USER_KEY)
        owner = None if user is None or user == "" else str(user)
        expires_ms = int((time.time() + self.get_expiry_age()) * 1000)
        key = self._get_or_create_session_key()
        engine = self._engine()
        if must_create:
            try:
                version, _ = engine.save(key, payload, expires_ms, 0, True, owner)
            except ConflictError:
                raise CreateError from None
            self._sessionlog_version = version
            return
        conditional = _configured()[2]
        version = self._sessionlog_version
        for _attempt in range(16):
            if version == 0:
                # Nothing loaded under this key: update only what exists.
                found = engine.load(key)
                if found is None:
                    raise UpdateError
                version = found[1]
            try:
                new_version, _ = engine.save(key, payload, expires_ms, version, True, owner)
            except ConflictError as e:
                if not e.found:
                    raise UpdateError from None
                if conditional:
                    raise SessionConflict(
                        "the session was saved by another request after this one loaded it"
                    ) from None
                version = e.found  # last write wins, but never resurrects
                continue
            self._sessionlog_version = new_version
            return
        raise UpdateError

    def delete(self, session_key: Optional[str] = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        if _native.is_valid_id(session_key):
            self._engine().delete(session_key)
        if session_key == self.session_key:
            self._sessionlog_version = 0

    @classmethod
    def clear_expired(cls) -> None:
        cls._engine().delete_expired()

    # -- async variants -------------------------------------------------------
    # The engine answers in microseconds with the GIL released, so the
    # coroutines call it directly, except under sync="always", where a save
    # waits for the disk and runs in a worker thread instead.

    @staticmethod
    def _blocking() -> bool:
        return _configured()[1]._options.get("sync") == "always"

    async def aload(self) -> Dict[str, Any]:
        return self.load()

    async def aexists(self, session_key: Optional[str]) -> bool:
        return self.exists(session_key)

    async def acreate(self) -> None:
        if self._blocking():
            return await sync_to_async(self.create, thread_sensitive=False)()
        return self.create()

    async def asave(self, must_create: bool = False) -> None:
        if self._blocking():
            return await sync_to_async(self.save, thread_sensitive=False)(must_create)
        return self.save(must_create)

    async def adelete(self, session_key: Optional[str] = None) -> None:
        if self._blocking():
            return await sync_to_async(self.delete, thread_sensitive=False)(session_key)
        return self.delete(session_key)

    @classmethod
    async def aclear_expired(cls) -> None:
        await sync_to_async(cls.clear_expired, thread_sensitive=False)()


def update_session(request: Any, change: Callable[[Dict[str, Any]], T], *, attempts: int = 16) -> T:
    """Applies ``change`` to ``request.session``'s stored data and saves the
    result only if no other request saved the session in between; on such a
    conflict it reloads the newer data and runs ``change`` again (the
    Python side of Rust's ``SessionUpdate``). Two requests incrementing one
    counter both count, with or without ``SESSIONLOG_CONDITIONAL``.

    ``change`` gets the stored data as a dict, changes it in place, and may
    return a value, which ``update_session`` returns. It may run more than
    once, so it must have no other effect. A session that does not exist
    yet is created first (the middleware sets its cookie). Afterwards
    ``request.session`` holds what was stored; make every change of the
    request inside ``change``, since earlier unsaved changes are replaced.

    Raises :class:`SessionConflict` after ``attempts`` conflicts in a row,
    and ``UpdateError`` if the session was deleted meanwhile (a logout in
    another request: it is not brought back)."""
    session = request.session
    if not isinstance(session, SessionStore):
        raise ImproperlyConfigured("update_session needs SESSION_ENGINE = 'sessionlog_store.django'")
    engine = session._engine()
    created = False
    if session.session_key is None or engine.load(session.session_key) is None:
        session.create()  # a fresh key, saved with the data loaded so far
        created = True
    key = session.session_key
    assert key is not None
    for _attempt in range(attempts):
        found = engine.load(key)
        if found is None:
            raise UpdateError
        data_bytes, version, _expires, _modified = found
        try:
            data = session.serializer().loads(data_bytes)
        except Exception:
            data = {}
        result = change(data)
        payload = session.serializer().dumps(data)
        expires_ms = int((time.time() + session.get_expiry_age()) * 1000)
        user = data.get(AUTH_USER_KEY) if isinstance(data, dict) else None
        owner = None if user is None or user == "" else str(user)
        try:
            new_version, _ = engine.save(key, payload, expires_ms, version, True, owner)
        except ConflictError as e:
            if not e.found:
                raise UpdateError from None
            continue  # saved meanwhile: run the change on the newer data
        session._session_cache = data
        session._sessionlog_version = new_version
        # A new session still needs its cookie (the middleware saves the
        # same data again at this version); an existing one is stored.
        session.modified = created
        return result
    raise SessionConflict(f"the session kept changing concurrently; gave up after {attempts} attempts")


def metrics() -> Dict[str, List[Dict[str, Any]]]:
    """The counters, gauges and latencies of every store of this process
    (:func:`sessionlog_store.metrics`), the session store's among them."""
    return _metrics.metrics()


def metrics_view(request: Any) -> Any:
    """A view answering with :func:`sessionlog_store.metrics_text`: the
    Prometheus text format. Route it where your scraper looks, behind
    whatever protects your other internal endpoints."""
    from django.http import HttpResponse

    return HttpResponse(_metrics.metrics_text(), content_type=_metrics.CONTENT_TYPE)
