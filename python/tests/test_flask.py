"""The Flask session interface through Flask's test client."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from flask import session
from itsdangerous import Signer

import sessionlog
from sessionlog.flask import SessionlogSessionInterface

from flaskapp import create_app


@pytest.fixture
def app(tmp_path):
    app = create_app(str(tmp_path / "flask.db"), conditional=False)
    app.config["TESTING"] = True
    return app


def sid_of(app, client) -> str:
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    iface = app.session_interface
    return iface._signer(app).unsign(cookie.value).decode()


def native(app):
    return app.session_interface.store.native


def test_counter_login_logout(app):
    c = app.test_client()
    assert c.get("/whoami/").json["user"] is None
    assert c.get_cookie("session") is None  # nothing stored for an empty session
    assert [c.get("/count/").json["count"] for _ in range(3)] == [1, 2, 3]
    anon = sid_of(app, c)
    r = c.get("/login/?user=alice")
    assert r.json == {"pid": r.json["pid"], "user": "alice", "count": 3}
    logged_in = sid_of(app, c)
    assert logged_in != anon  # regenerated on login
    assert not native(app).has(anon)  # the old id is gone
    assert native(app).has(logged_in)
    assert c.get("/count/").json["count"] == 4
    r = c.get("/logout/")
    assert r.json["user"] is None
    assert not native(app).has(logged_in)
    assert c.get_cookie("session") is None
    # Replaying the logged-in cookie gives an anonymous session.
    replay = app.test_client()
    replay.set_cookie("session", Signer(app.secret_key, salt="sessionlog.flask", key_derivation="hmac",
                                        digest_method=SessionlogSessionInterface.digest_method).sign(logged_in).decode())
    assert replay.get("/whoami/").json["user"] is None


def test_cookie_holds_only_a_signed_id(app):
    c = app.test_client()
    c.get("/login/?user=secretuser")
    value = c.get_cookie("session").value
    assert "secretuser" not in value
    sid = sid_of(app, c)
    assert sessionlog.is_valid_id(sid) and len(sid) == 22
    data = native(app).load(sid)[0]
    assert b"secretuser" in data


def test_tampered_or_unsigned_cookie_is_a_new_session(app):
    c = app.test_client()
    c.get("/login/?user=alice")
    sid = sid_of(app, c)
    for forged in [sid, sid + ".AAAA", "garbage", "../../etc.passwd"]:
        other = app.test_client()
        other.set_cookie("session", forged)
        assert other.get("/whoami/").json["user"] is None


def test_secret_key_rotation(app):
    c = app.test_client()
    c.get("/login/?user=alice")
    app.config["SECRET_KEY_FALLBACKS"] = [app.secret_key]
    app.secret_key = "a-new-secret-key-for-rotation-0123456789"
    assert c.get("/whoami/").json["user"] == "alice"


def test_expiry_is_stored(app):
    app.permanent_session_lifetime = dt.timedelta(minutes=5)
    c = app.test_client()
    c.get("/login/?user=alice&permanent=1")
    sid = sid_of(app, c)
    expires_ms = native(app).load(sid)[2]
    assert abs(expires_ms / 1000 - (time.time() + 300)) < 30
    cookie = c.get_cookie("session")
    assert cookie.expires is not None  # a permanent session's cookie expires


def test_expired_session_is_gone(app):
    app.permanent_session_lifetime = dt.timedelta(seconds=-1)
    c = app.test_client()
    c.get("/login/?user=alice")
    assert c.get("/whoami/").json["user"] is None


def test_save_never_resurrects_a_deleted_session(app):
    @app.route("/delete-then-touch/")
    def delete_then_touch():
        session.get("user")
        native(app).delete(session.sid)  # a logout in a concurrent request
        session["count"] = 99
        return "ok"

    c = app.test_client()
    c.get("/login/?user=alice")
    sid = sid_of(app, c)
    assert c.get("/delete-then-touch/").status_code == 200
    assert not native(app).has(sid)
    assert c.get("/whoami/").json["user"] is None


def test_concurrent_change_last_write_wins_by_default(app):
    @app.route("/race/")
    def race():
        native(app).save(session.sid, b'{"count":50}', None, 0, False)  # another request's save
        session["count"] = session.get("count", 0) + 1
        return "ok"

    c = app.test_client()
    c.get("/count/")
    c.get("/race/")
    assert c.get("/whoami/").json["count"] == 2


def test_conditional_refuses_a_lost_update(tmp_path):
    app = create_app(str(tmp_path / "f.db"), conditional=True)
    app.config["TESTING"] = True

    @app.route("/race/")
    def race():
        native(app).save(session.sid, b'{"count":50}', None, 0, False)
        session["count"] = session.get("count", 0) + 1
        return "ok"

    c = app.test_client()
    c.get("/count/")
    with pytest.raises(sessionlog.ConflictError):
        c.get("/race/")
    assert c.get("/whoami/").json["count"] == 50  # the other save stands


def test_no_secret_key_means_no_session(tmp_path):
    app = create_app(str(tmp_path / "f.db"))
    app.secret_key = None
    app.config["TESTING"] = True
    with pytest.raises(RuntimeError, match="secret key"):
        app.test_client().get("/count/")
