"""Server-side Flask sessions in a sessionlog store.

::

    from flask import Flask
    import sessionlog_store.flask

    app = Flask(__name__)
    app.secret_key = ...
    app.config["SESSIONLOG_PATH"] = "/var/lib/app/sessions.db"
    sessionlog_store.flask.init_app(app)

The cookie holds only the session id, signed with ``app.secret_key`` (and
``SECRET_KEY_FALLBACKS``) like Flask's own cookie; the data lives in the
store, serialised with Flask's tagged JSON (dicts, lists, str, bytes,
datetimes, tuples, UUIDs, Markup). Each session is stored with a deadline:
``permanent_session_lifetime`` from its last save (the cookie expires then
too for ``session.permanent``; otherwise it is a browser-session cookie).

Call ``session.regenerate()`` on login (and privilege changes): the session
keeps its data under a new id and the old id is deleted, so a session id
planted before login is worthless after it. ``session.clear()`` on logout
deletes the stored session and the cookie.

A save never brings back a session deleted meanwhile (a logout in a
concurrent request stays a logout). Between two concurrent requests that
both change a live session the last save wins, unless the interface is made
with ``conditional=True`` (or ``SESSIONLOG_CONDITIONAL = True``): then the
later save raises :class:`sessionlog_store.ConflictError` (the request fails with
a 500 and its changes are not saved; nothing is lost silently). A view that
wants to merge instead calls :func:`update_session`, which re-runs its
change on the newer data.

Flask-Session's configuration names are read where they make sense
(``SESSION_PERMANENT``, ``SESSION_KEY_PREFIX``, ``SESSION_ID_LENGTH``,
``SESSION_TYPE``); see python/README.md, "Moving from Flask-Session".

Sessions know their user: every save records the session's owner, by
default Flask-Login's ``_user_id`` (what ``login_user`` stores), so that::

    from sessionlog_store.flask import sessions_of, delete_sessions_of, erase_sessions_of

    sessions_of(current_user)      # the user's live sessions, newest first
    delete_sessions_of(current_user, keep=session)  # log out everywhere else
    erase_sessions_of(current_user)  # on account deletion: no byte remains

``SESSIONLOG_OWNER_KEY`` names another session key holding the owner, or is
a callable taking the session's data and returning the owner (or None).
``SESSIONLOG_MAX_SESSIONS_PER_USER = n`` lets each user keep at most ``n``
sessions (the newest login wins): it is the store's own
``max_sessions_per_owner`` option, atomic across worker processes.

What the store counts (loads, saves, conflicts, errors by kind, latencies,
compactions) is :func:`metrics` (a dict), or, for a Prometheus scrape,
:func:`metrics_response`::

    app.add_url_rule("/metrics", view_func=sessionlog_store.flask.metrics_response)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import secrets
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, TypedDict, TypeVar, Union

from flask import Flask, Request, Response
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadSignature, Signer
from werkzeug.datastructures import CallbackDict

from . import _metrics, _native
from ._errors import ConflictError
from ._stores import LogSessionStore, SessionStore

__all__ = [
    "ConfigurationError",
    "ServerSession",
    "SessionlogSessionInterface",
    "UserSession",
    "delete_sessions_of",
    "erase_sessions_of",
    "init_app",
    "sessions_of",
    "update_session",
]

T = TypeVar("T")

#: Flask-Session's ``SESSION_TYPE`` values that mean this interface.
_OUR_TYPES = ("sessionlog",)

#: Where Flask-Login keeps the logged-in user's id in a session.
LOGIN_USER_KEY = "_user_id"

#: The owner of a session: the session key holding it, or a function of the
#: session's data returning it (or None: no owner).
OwnerKey = Union[str, Callable[[Dict[str, Any]], Any]]


class _CookieOptions(TypedDict, total=False):
    """The session cookie's parameters that ``set_cookie`` and
    ``delete_cookie`` share."""

    domain: Optional[str]
    path: str
    secure: bool
    samesite: Optional[str]
    httponly: bool
    partitioned: bool


class UserSession(NamedTuple):
    """One of a user's sessions, as :func:`sessions_of` lists it."""

    #: The session's id, as ``session.sid`` holds it (without
    #: ``SESSION_KEY_PREFIX``).
    sid: str
    #: When it was last saved, an aware UTC datetime.
    modified: _dt.datetime
    #: When it expires, an aware UTC datetime (or None).
    expiry: Optional[_dt.datetime]


class ConfigurationError(ValueError, RuntimeError):
    """A missing or unusable configuration value. A ``ValueError``, as
    Flask-Session raises for its configuration, and a ``RuntimeError``, as
    this module raised before."""


class ServerSession(CallbackDict, SessionMixin):  # type: ignore[type-arg]
    """A Flask session stored server-side. ``sid`` is its id (``None``
    until first saved); ``new`` is true until it has been stored."""

    def __init__(
        self,
        initial: Any = None,
        sid: Optional[str] = None,
        version: int = 0,
        permanent: Optional[bool] = None,
    ) -> None:
        def on_update(self: "ServerSession") -> None:
            self.modified = True

        super().__init__(initial, on_update)
        if permanent is not None and sid is None:
            # SESSION_PERMANENT: a new session's default, not a change.
            self.permanent = permanent
        self.sid = sid
        self.version = version
        self.new = sid is None
        self.modified = False
        self._retired: List[str] = []

    def __bool__(self) -> bool:
        # A session holding only its ``permanent`` flag is empty: nothing
        # is stored for a visitor who never used the session.
        return bool(dict(self)) and self.keys() != {"_permanent"}

    def clear(self) -> None:
        """Empties the session (logout), keeping its ``permanent`` flag."""
        permanent = self.get("_permanent")
        super().clear()
        if permanent is not None:
            dict.__setitem__(self, "_permanent", permanent)

    def regenerate(self) -> None:
        """Give the session a new id at the next save and delete the old one
        (call it on login, against session fixation)."""
        if self.sid is not None:
            self._retired.append(self.sid)
        self.sid = None
        self.version = 0
        self.new = True
        self.modified = True


class SessionlogSessionInterface(SessionInterface):
    """Flask's ``SessionInterface`` over a sessionlog store.

    ``store`` is a :class:`sessionlog_store.LogSessionStore` (or any sessionlog
    store), or give ``path`` (and ``LogSessionStore`` options) to open one.
    ``max_sessions_per_user`` is the store's ``max_sessions_per_owner``: with
    ``path`` it opens the store with it; a given store must have been
    opened with it (:class:`ConfigurationError` otherwise).
    """

    session_class = ServerSession
    serializer = TaggedJSONSerializer()
    salt = "sessionlog_store.flask"
    digest_method = staticmethod(hashlib.sha256)

    def __init__(
        self,
        store: Optional[SessionStore] = None,
        *,
        path: Optional[str] = None,
        conditional: bool = False,
        permanent: Optional[bool] = None,
        key_prefix: str = "",
        sid_length: Optional[int] = None,
        owner_key: OwnerKey = LOGIN_USER_KEY,
        max_sessions_per_user: Optional[int] = None,
        **options: Any,
    ) -> None:
        if not (callable(owner_key) or (isinstance(owner_key, str) and owner_key)):
            raise ConfigurationError("SESSIONLOG_OWNER_KEY must be a session key (a str) or a callable")
        if max_sessions_per_user is not None and (
            isinstance(max_sessions_per_user, bool)
            or not isinstance(max_sessions_per_user, int)
            or max_sessions_per_user < 1
        ):
            raise ConfigurationError("SESSIONLOG_MAX_SESSIONS_PER_USER must be a positive int")
        if not isinstance(key_prefix, str) or (key_prefix and not _native.is_valid_id(key_prefix)):
            raise ConfigurationError(
                "SESSION_KEY_PREFIX must be made of A-Z a-z 0-9 - _ , (the characters of a "
                "sessionlog id) and leave room for the id"
            )
        if sid_length is not None:
            if isinstance(sid_length, bool) or not isinstance(sid_length, int) or sid_length < 16:
                raise ConfigurationError("SESSION_ID_LENGTH must be an int of at least 16 (bytes of entropy)")
            if len(key_prefix) + len(secrets.token_urlsafe(sid_length)) > _native.MAX_ID_LEN:
                raise ConfigurationError(
                    f"SESSION_KEY_PREFIX and SESSION_ID_LENGTH make ids longer than {_native.MAX_ID_LEN} characters"
                )
        if store is None:
            if path is None:
                raise TypeError("SessionlogSessionInterface needs a store or a path")
            if max_sessions_per_user is not None:
                options["max_sessions_per_owner"] = _same_limit(
                    max_sessions_per_user, options.get("max_sessions_per_owner")
                )
            store = LogSessionStore(path, **options)
        elif path is not None or options:
            raise TypeError("give either a store or a path with options, not both")
        elif max_sessions_per_user is not None and store.max_sessions_per_owner != max_sessions_per_user:
            # The limit is the store's own (atomic under its lock): a store
            # opened without it cannot apply it.
            raise ConfigurationError(
                f"SESSIONLOG_MAX_SESSIONS_PER_USER = {max_sessions_per_user} needs the store opened "
                f"with max_sessions_per_owner={max_sessions_per_user} (it has "
                f"{store.max_sessions_per_owner})"
            )
        self.store = store
        self.conditional = conditional
        self.permanent = permanent
        self.key_prefix = key_prefix
        self.sid_length = sid_length
        self.owner_key = owner_key
        self.max_sessions_per_user = max_sessions_per_user

    # -- owners --------------------------------------------------------------

    def owner_of(self, data: Dict[str, Any]) -> Optional[str]:
        """The owner a session with ``data`` is saved with (None: none)."""
        if callable(self.owner_key):
            user = self.owner_key(data)
        else:
            user = data.get(self.owner_key)
        return None if user is None or user == "" else str(user)

    # -- ids -----------------------------------------------------------------

    def _store_id(self, sid: str) -> str:
        """The id in the store of the session whose cookie holds ``sid``."""
        return self.key_prefix + sid

    def _new_sid(self) -> str:
        if self.sid_length is None:
            return _native.generate_id()
        return secrets.token_urlsafe(self.sid_length)

    def _new_session(self) -> ServerSession:
        return self.session_class(permanent=self.permanent)

    # -- signing -------------------------------------------------------------

    def _signer(self, app: Flask) -> Optional[Signer]:
        if not app.secret_key:
            return None
        # As bytes, the way itsdangerous reads a str key (UTF-8).
        keys = [_as_bytes(k) for k in app.config.get("SECRET_KEY_FALLBACKS") or []]
        keys.append(_as_bytes(app.secret_key))  # the current key last
        return Signer(keys, salt=self.salt, key_derivation="hmac", digest_method=self.digest_method)

    # -- SessionInterface ------------------------------------------------------

    def open_session(self, app: Flask, request: Request) -> Optional[ServerSession]:
        signer = self._signer(app)
        if signer is None:
            return None  # Flask's null session: "no secret key was set"
        cookie = request.cookies.get(self.get_cookie_name(app))
        if not cookie:
            return self._new_session()
        try:
            sid = signer.unsign(cookie).decode("ascii")
        except (BadSignature, UnicodeDecodeError):
            return self._new_session()
        if not _native.is_valid_id(self._store_id(sid)):
            return self._new_session()
        found = self.store.native.load(self._store_id(sid))
        if found is None:
            return self._new_session()  # expired or deleted: a new session
        data, version, _expires, _modified = found
        initial = self._decode(data)
        if initial is None:
            return self._new_session()
        return self.session_class(initial, sid=sid, version=version)

    def _decode(self, data: bytes) -> Optional[Dict[str, Any]]:
        """Stored bytes as a session dict, or None if they are not one."""
        try:
            initial = self.serializer.loads(data.decode("utf-8"))
        except Exception:
            return None
        return initial if isinstance(initial, dict) else None

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        native = self.store.native
        name = self.get_cookie_name(app)
        cookie = _CookieOptions(
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            samesite=self.get_cookie_samesite(app),
            httponly=self.get_cookie_httponly(app),
        )
        if hasattr(self, "get_cookie_partitioned"):
            cookie["partitioned"] = self.get_cookie_partitioned(app)
        if session.accessed:
            response.vary.add("Cookie")

        for old in session._retired:
            native.delete(self._store_id(old))
        session._retired.clear()

        if not session:
            # Emptied (logout): delete it everywhere, and the cookie.
            if session.modified:
                if session.sid is not None:
                    native.delete(self._store_id(session.sid))
                response.delete_cookie(name, **cookie)
                response.vary.add("Cookie")
            return

        if not self.should_set_cookie(app, session):
            return

        expires_ms = self._expires_ms(app)
        payload = self.serializer.dumps(dict(session)).encode("utf-8")
        owner = self.owner_of(dict(session))

        if session.sid is None:
            self._create(native, session, payload, expires_ms, owner)
        elif not self._update(native, session, payload, expires_ms, owner):
            # Deleted meanwhile (a logout elsewhere): do not resurrect it.
            response.delete_cookie(name, **cookie)
            response.vary.add("Cookie")
            return
        assert session.sid is not None

        signer = self._signer(app)
        assert signer is not None  # open_session returned a real session
        response.set_cookie(
            name,
            signer.sign(session.sid).decode("ascii"),
            expires=self.get_expiration_time(app, session),
            **cookie,
        )
        response.vary.add("Cookie")

    def _create(
        self,
        native: _native.Store,
        session: ServerSession,
        payload: bytes,
        expires_ms: int,
        owner: Optional[str] = None,
    ) -> None:
        """Stores a new session under a fresh id."""
        while True:
            sid = self._new_sid()
            try:
                session.version, _ = native.save(self._store_id(sid), payload, expires_ms, 0, True, owner)
            except ConflictError:
                continue  # an id collision: astronomically unlikely
            session.sid = sid
            session.new = False
            return

    def _expires_ms(self, app: Flask) -> int:
        return int((time.time() + app.permanent_session_lifetime.total_seconds()) * 1000)

    def _update(
        self,
        native: _native.Store,
        session: ServerSession,
        payload: bytes,
        expires_ms: int,
        owner: Optional[str] = None,
    ) -> bool:
        """Saves a session that exists; false if it was deleted meanwhile."""
        assert session.sid is not None
        sid = self._store_id(session.sid)
        version = session.version
        for _attempt in range(16):
            try:
                session.version, _ = native.save(sid, payload, expires_ms, version, True, owner)
                return True
            except ConflictError as e:
                if not e.found:
                    return False
                if self.conditional and session.modified:
                    raise
                if not session.modified:
                    return True  # only a refresh, and someone saved newer data
                version = e.found
        raise ConflictError("the session kept changing concurrently; giving up after 16 attempts")


def _same_limit(limit: Any, option: Any) -> int:
    """``SESSIONLOG_MAX_SESSIONS_PER_USER`` as the store's
    ``max_sessions_per_owner``, which the store's options may give too."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError("SESSIONLOG_MAX_SESSIONS_PER_USER must be a positive int")
    if option is not None and option != limit:
        raise ConfigurationError(
            "SESSIONLOG_MAX_SESSIONS_PER_USER and the store option max_sessions_per_owner differ; "
            "set one of them"
        )
    return limit


def init_app(app: Flask, store: Optional[SessionStore] = None) -> SessionlogSessionInterface:
    """Installs server-side sessions on ``app``: the given store, or a
    ``LogSessionStore`` at ``app.config["SESSIONLOG_PATH"]`` with
    ``app.config.get("SESSIONLOG_OPTIONS", {})``. ``SESSIONLOG_CONDITIONAL``
    makes concurrent changes to one session raise instead of overwrite.
    ``SESSIONLOG_OPTIONS`` takes every option of ``LogSessionStore``, e.g.
    ``{"encryption_keys": "/etc/myapp/session-keys"}`` to keep session data
    encrypted at rest.

    Flask-Session's names: ``SESSION_PERMANENT`` (new sessions' default
    ``permanent``; unset: Flask's default, False), ``SESSION_KEY_PREFIX``
    (prepended to the id in the store, so that apps can share one store;
    unset: none), ``SESSION_ID_LENGTH`` (bytes of entropy of new ids, at
    least 16; unset: sessionlog's 16-byte ids), ``SESSION_TYPE`` (unset or
    ``"sessionlog"``). ``SESSIONLOG_OWNER_KEY`` (the session key holding
    the owner, or a callable of the session's data; unset: Flask-Login's
    ``_user_id``) and ``SESSIONLOG_MAX_SESSIONS_PER_USER`` (unset: no
    limit): see :func:`sessions_of`. A missing or unusable value raises
    :class:`ConfigurationError` (a ``ValueError``, as in Flask-Session)."""
    cfg = app.config
    kind = cfg.get("SESSION_TYPE")
    if kind is not None and str(kind).lower() not in _OUR_TYPES:
        raise ConfigurationError(
            f"Unrecognized value for SESSION_TYPE: {kind!r}: sessionlog_store.flask keeps sessions in a "
            "sessionlog store; remove SESSION_TYPE or set it to 'sessionlog'"
        )
    conditional = bool(cfg.get("SESSIONLOG_CONDITIONAL", False))
    if store is None:
        path = cfg.get("SESSIONLOG_PATH")
        if not path:
            raise ConfigurationError("sessionlog_store.flask.init_app needs app.config['SESSIONLOG_PATH'] or a store")
        options = dict(cfg.get("SESSIONLOG_OPTIONS") or {})
        limit = cfg.get("SESSIONLOG_MAX_SESSIONS_PER_USER")
        if limit is not None:
            options["max_sessions_per_owner"] = _same_limit(limit, options.get("max_sessions_per_owner"))
        store = LogSessionStore(path, **options)
    permanent = cfg.get("SESSION_PERMANENT")
    interface = SessionlogSessionInterface(
        store,
        conditional=conditional,
        permanent=None if permanent is None else bool(permanent),
        key_prefix=cfg.get("SESSION_KEY_PREFIX") or "",
        sid_length=cfg.get("SESSION_ID_LENGTH"),
        owner_key=cfg.get("SESSIONLOG_OWNER_KEY") or LOGIN_USER_KEY,
        max_sessions_per_user=cfg.get("SESSIONLOG_MAX_SESSIONS_PER_USER"),
    )
    app.session_interface = interface
    return interface


def update_session(change: Callable[[Dict[str, Any]], T], *, attempts: int = 16) -> T:
    """Applies ``change`` to the current session's stored data and saves the
    result only if no other request saved the session in between; on such a
    conflict it reloads the newer data and runs ``change`` again (the
    Python side of Rust's ``SessionUpdate``). Two requests incrementing one
    counter both count, with or without ``SESSIONLOG_CONDITIONAL``.

    ``change`` gets the stored data as a dict, changes it in place, and may
    return a value, which ``update_session`` returns. It may run more than
    once, so it must have no other effect. A session that does not exist
    yet is created first (the response sets its cookie). Afterwards
    ``flask.session`` holds what was stored; make every change of the
    request inside ``change``, since earlier unsaved changes are replaced.

    Raises :class:`sessionlog_store.ConflictError` after ``attempts`` conflicts in
    a row, and ``LookupError`` if the session was deleted meanwhile (a
    logout in another request: it is not brought back)."""
    from flask import current_app
    from flask import session as current

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    interface = app.session_interface
    if not isinstance(interface, SessionlogSessionInterface):
        raise ConfigurationError("update_session needs sessionlog_store.flask's session interface on the app")
    session = current._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(session, ServerSession):
        raise RuntimeError("the session is unavailable because no secret key was set")
    native = interface.store.native
    created = False
    if session.sid is None or native.load(interface._store_id(session.sid)) is None:
        payload = interface.serializer.dumps(dict(session)).encode("utf-8")
        interface._create(native, session, payload, interface._expires_ms(app), interface.owner_of(dict(session)))
        created = True
    assert session.sid is not None
    sid = interface._store_id(session.sid)
    for _attempt in range(attempts):
        found = native.load(sid)
        if found is None:
            raise LookupError("the session was deleted by another request")
        data = interface._decode(found[0]) or {}
        result = change(data)
        payload = interface.serializer.dumps(data).encode("utf-8")
        try:
            version, _ = native.save(sid, payload, interface._expires_ms(app), found[1], True, interface.owner_of(data))
        except ConflictError as e:
            if not e.found:
                raise LookupError("the session was deleted by another request") from None
            continue  # saved meanwhile: run the change on the newer data
        dict.clear(session)
        dict.update(session, data)
        session.version = version
        # A new session still needs its cookie (save_session stores the
        # same data again at this version); an existing one is stored.
        session.modified = created
        return result
    raise ConflictError(f"the session kept changing concurrently; gave up after {attempts} attempts")


def _interface(app: Optional[Flask]) -> SessionlogSessionInterface:
    if app is None:
        from flask import current_app

        app = current_app._get_current_object()  # type: ignore[attr-defined]
    interface = app.session_interface
    if not isinstance(interface, SessionlogSessionInterface):
        raise ConfigurationError("sessionlog_store.flask's session interface is not installed on the app")
    return interface


def _user_owner(user: Any) -> str:
    """The owner a user's sessions are saved with: Flask-Login's
    ``get_id()`` for a user object, else the value itself as a str."""
    get_id = getattr(user, "get_id", None)
    if callable(get_id):
        user = get_id()
    return str(user)


def _utc(ms: Optional[int]) -> Optional[_dt.datetime]:
    if ms is None:
        return None
    return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc)


def _as_bytes(key: Union[str, bytes]) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


def _owned(interface: SessionlogSessionInterface, owner: str) -> List[Tuple[str, int, Optional[int], int, int]]:
    """The owner's sessions in the store that are this app's (their id
    starts with ``SESSION_KEY_PREFIX``), newest first."""
    rows = interface.store.native.sessions_of(owner)
    return [row for row in rows if row[0].startswith(interface.key_prefix)]


def sessions_of(user: Any, *, app: Optional[Flask] = None) -> List[UserSession]:
    """The user's live sessions (a Flask-Login user, or the owner as the
    session holds it, e.g. the user's id), most recently saved first.
    ``app``: the current app if not given."""
    interface = _interface(app)
    n = len(interface.key_prefix)
    out = []
    for sid, modified, expires, _version, _size in _owned(interface, _user_owner(user)):
        out.append(UserSession(sid[n:], _utc(modified) or _dt.datetime.now(_dt.timezone.utc), _utc(expires)))
    return out


def delete_sessions_of(user: Any, keep: Any = None, *, app: Optional[Flask] = None) -> int:
    """Log the user out of every session but ``keep`` (the current
    ``session``, or a session's ``sid``); returns how many were deleted.
    With ``SESSION_KEY_PREFIX`` only this app's sessions are deleted."""
    interface = _interface(app)
    if isinstance(keep, ServerSession):
        keep = keep.sid
    keep_id = None if keep is None else interface._store_id(str(keep))
    owner = _user_owner(user)
    native = interface.store.native
    if not interface.key_prefix:
        return native.delete_sessions_of(owner, keep_id)
    deleted = 0
    for row in _owned(interface, owner):
        if row[0] != keep_id and native.delete(row[0]):
            deleted += 1
    return deleted


def erase_sessions_of(user: Any, *, app: Optional[Flask] = None) -> int:
    """Delete every session of the user so that no byte of them remains in
    the store's file (for an account's deletion); returns how many. It acts
    on the whole store: with a store shared through ``SESSION_KEY_PREFIX``,
    the user's sessions of the other apps too."""
    return _interface(app).store.native.erase_sessions_of(_user_owner(user))


def metrics() -> Dict[str, List[Dict[str, Any]]]:
    """The counters, gauges and latencies of every store of this process
    (:func:`sessionlog_store.metrics`), the session interface's among them."""
    return _metrics.metrics()


def metrics_response() -> Response:
    """A response with :func:`sessionlog_store.metrics_text`: the Prometheus text
    format, for a ``/metrics`` route (behind whatever protects your other
    internal endpoints)."""
    return Response(_metrics.metrics_text(), content_type=_metrics.CONTENT_TYPE)
