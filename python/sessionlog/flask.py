"""Server-side Flask sessions in a sessionlog store.

::

    from flask import Flask
    import sessionlog.flask

    app = Flask(__name__)
    app.secret_key = ...
    app.config["SESSIONLOG_PATH"] = "/var/lib/app/sessions.db"
    sessionlog.flask.init_app(app)

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
later save raises :class:`sessionlog.ConflictError` (the request fails with
a 500 and its changes are not saved; nothing is lost silently).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Optional

from flask import Flask, Request, Response
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadSignature, Signer
from werkzeug.datastructures import CallbackDict

from . import _native
from ._errors import ConflictError
from ._stores import LogSessionStore, SessionStore

__all__ = ["ServerSession", "SessionlogSessionInterface", "init_app"]


class ServerSession(CallbackDict, SessionMixin):  # type: ignore[type-arg]
    """A Flask session stored server-side. ``sid`` is its id (``None``
    until first saved); ``new`` is true until it has been stored."""

    def __init__(self, initial: Any = None, sid: Optional[str] = None, version: int = 0) -> None:
        def on_update(self: "ServerSession") -> None:
            self.modified = True

        super().__init__(initial, on_update)
        self.sid = sid
        self.version = version
        self.new = sid is None
        self.modified = False
        self._retired: list = []

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

    ``store`` is a :class:`sessionlog.LogSessionStore` (or any sessionlog
    store), or give ``path`` (and ``LogSessionStore`` options) to open one.
    """

    session_class = ServerSession
    serializer = TaggedJSONSerializer()
    salt = "sessionlog.flask"
    digest_method = staticmethod(hashlib.sha256)

    def __init__(
        self,
        store: Optional[SessionStore] = None,
        *,
        path: Optional[str] = None,
        conditional: bool = False,
        **options: Any,
    ) -> None:
        if store is None:
            if path is None:
                raise TypeError("SessionlogSessionInterface needs a store or a path")
            store = LogSessionStore(path, **options)
        elif path is not None or options:
            raise TypeError("give either a store or a path with options, not both")
        self.store = store
        self.conditional = conditional

    # -- signing -------------------------------------------------------------

    def _signer(self, app: Flask) -> Optional[Signer]:
        if not app.secret_key:
            return None
        keys: list = list(app.config.get("SECRET_KEY_FALLBACKS") or [])
        keys.append(app.secret_key)  # the current key last
        return Signer(keys, salt=self.salt, key_derivation="hmac", digest_method=self.digest_method)

    # -- SessionInterface ------------------------------------------------------

    def open_session(self, app: Flask, request: Request) -> Optional[ServerSession]:
        signer = self._signer(app)
        if signer is None:
            return None  # Flask's null session: "no secret key was set"
        cookie = request.cookies.get(self.get_cookie_name(app))
        if not cookie:
            return self.session_class()
        try:
            sid = signer.unsign(cookie).decode("ascii")
        except (BadSignature, UnicodeDecodeError):
            return self.session_class()
        if not _native.is_valid_id(sid):
            return self.session_class()
        found = self.store.native.load(sid)
        if found is None:
            return self.session_class()  # expired or deleted: a new session
        data, version, _expires, _modified = found
        try:
            initial = self.serializer.loads(data.decode("utf-8"))
        except Exception:
            initial = None
        if not isinstance(initial, dict):
            return self.session_class()
        return self.session_class(initial, sid=sid, version=version)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, ServerSession)
        native = self.store.native
        name = self.get_cookie_name(app)
        cookie = dict(
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
            native.delete(old)
        session._retired.clear()

        if not session:
            # Emptied (logout): delete it everywhere, and the cookie.
            if session.modified:
                if session.sid is not None:
                    native.delete(session.sid)
                response.delete_cookie(name, **cookie)
                response.vary.add("Cookie")
            return

        if not self.should_set_cookie(app, session):
            return

        lifetime = app.permanent_session_lifetime.total_seconds()
        expires_ms = int((time.time() + lifetime) * 1000)
        payload = self.serializer.dumps(dict(session)).encode("utf-8")

        if session.sid is None:
            while True:
                sid = _native.generate_id()
                try:
                    session.version, _ = native.save(sid, payload, expires_ms, 0, True)
                except ConflictError:
                    continue  # an id collision: astronomically unlikely
                session.sid = sid
                session.new = False
                break
        elif not self._update(native, session, payload, expires_ms):
            # Deleted meanwhile (a logout elsewhere): do not resurrect it.
            response.delete_cookie(name, **cookie)
            response.vary.add("Cookie")
            return

        signer = self._signer(app)
        assert signer is not None  # open_session returned a real session
        response.set_cookie(
            name,
            signer.sign(session.sid).decode("ascii"),
            expires=self.get_expiration_time(app, session),
            **cookie,
        )
        response.vary.add("Cookie")

    def _update(self, native: _native.Store, session: ServerSession, payload: bytes, expires_ms: int) -> bool:
        """Saves a session that exists; false if it was deleted meanwhile."""
        sid = session.sid
        assert sid is not None
        version = session.version
        for _attempt in range(16):
            try:
                session.version, _ = native.save(sid, payload, expires_ms, version, True)
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


def init_app(app: Flask, store: Optional[SessionStore] = None) -> SessionlogSessionInterface:
    """Installs server-side sessions on ``app``: the given store, or a
    ``LogSessionStore`` at ``app.config["SESSIONLOG_PATH"]`` with
    ``app.config.get("SESSIONLOG_OPTIONS", {})``. ``SESSIONLOG_CONDITIONAL``
    makes concurrent changes to one session raise instead of overwrite."""
    conditional = bool(app.config.get("SESSIONLOG_CONDITIONAL", False))
    if store is None:
        path = app.config.get("SESSIONLOG_PATH")
        if not path:
            raise RuntimeError("sessionlog.flask.init_app needs app.config['SESSIONLOG_PATH'] or a store")
        store = LogSessionStore(path, **dict(app.config.get("SESSIONLOG_OPTIONS") or {}))
    interface = SessionlogSessionInterface(store, conditional=conditional)
    app.session_interface = interface
    return interface
