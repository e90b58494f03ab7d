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


# -- update_session: the merge helper (issue 26) -----------------------------


def merge_route(app):
    @app.route("/merge/")
    def merge():
        from flask import request

        race = int(request.args.get("race", "0"))
        calls = []

        def change(data):
            calls.append(1)
            if race and len(calls) == 1:
                # Another request's save lands while this attempt runs.
                sid = session.sid
                stored = native(app).load(sid)
                body = app.session_interface.serializer.loads(stored[0].decode())
                body["count"] = body.get("count", 0) + race
                payload = app.session_interface.serializer.dumps(body).encode()
                native(app).save(sid, payload, None, stored[1], True)
            data["count"] = data.get("count", 0) + 1
            return data["count"]

        n = sessionlog.flask.update_session(change)
        return {"count": n, "attempts": len(calls)}


@pytest.mark.parametrize("conditional", [False, True])
def test_update_session_merges_a_concurrent_save(tmp_path, conditional):
    app = create_app(str(tmp_path / "m.db"), conditional=conditional)
    app.config["TESTING"] = True
    merge_route(app)
    c = app.test_client()
    assert c.get("/count/").json["count"] == 1
    r = c.get("/merge/?race=10")
    assert r.status_code == 200
    assert r.json == {"count": 12, "attempts": 2}
    assert c.get("/whoami/").json["count"] == 12


def test_update_session_creates_a_new_session_with_its_cookie(app):
    merge_route(app)
    c = app.test_client()
    assert c.get("/merge/").json == {"count": 1, "attempts": 1}
    assert c.get_cookie("session") is not None
    assert c.get("/whoami/").json["count"] == 1


def test_update_session_does_not_bring_back_a_deleted_session(app):
    @app.route("/merge-after-logout/")
    def merge_after_logout():
        def change(data):
            native(app).delete(session.sid)  # a logout lands meanwhile
            data["count"] = 1

        sessionlog.flask.update_session(change)
        return "unreachable"

    c = app.test_client()
    c.get("/count/")
    sid = sid_of(app, c)
    with pytest.raises(LookupError):
        c.get("/merge-after-logout/")
    assert not native(app).has(sid)


# -- Flask-Session's configuration names (issue 26) ---------------------------


def flask_app(tmp_path, **config):
    from flask import Flask

    app = Flask(__name__)
    app.secret_key = "flask-session-names-test-secret-0123456789"
    app.config["SESSIONLOG_PATH"] = str(tmp_path / "fs.db")
    app.config.update(config)
    app.config["TESTING"] = True
    return app


def test_missing_path_is_a_value_error(tmp_path):
    app = flask_app(tmp_path)
    del app.config["SESSIONLOG_PATH"]
    with pytest.raises(ValueError, match="SESSIONLOG_PATH"):
        sessionlog.flask.init_app(app)
    with pytest.raises(RuntimeError):  # what it raised before: still caught
        sessionlog.flask.init_app(app)


def test_session_type_of_another_backend_is_refused(tmp_path):
    with pytest.raises(ValueError, match="SESSION_TYPE"):
        sessionlog.flask.init_app(flask_app(tmp_path, SESSION_TYPE="redis"))
    sessionlog.flask.init_app(flask_app(tmp_path, SESSION_TYPE="sessionlog"))


@pytest.mark.parametrize(
    "config",
    [
        {"SESSION_KEY_PREFIX": "session:"},  # ':' is not in a sessionlog id
        {"SESSION_ID_LENGTH": 8},  # fewer than 128 bits
        {"SESSION_ID_LENGTH": "32"},
        {"SESSION_KEY_PREFIX": "p" * 100, "SESSION_ID_LENGTH": 64},  # too long
    ],
)
def test_unusable_flask_session_values_are_value_errors(tmp_path, config):
    with pytest.raises(ValueError):
        sessionlog.flask.init_app(flask_app(tmp_path, **config))


def test_key_prefix_and_id_length(tmp_path):
    app = flask_app(tmp_path, SESSION_KEY_PREFIX="shop_", SESSION_ID_LENGTH=32)
    sessionlog.flask.init_app(app)

    @app.route("/set/")
    def set_():
        session["x"] = 1
        return "ok"

    @app.route("/get/")
    def get():
        return {"x": session.get("x")}

    c = app.test_client()
    c.get("/set/")
    sid = sid_of(app, c)
    assert len(sid) == 43  # token_urlsafe(32)
    assert native(app).has("shop_" + sid)
    assert not native(app).has(sid)
    assert c.get("/get/").json == {"x": 1}


@pytest.mark.parametrize("permanent", [True, False])
def test_session_permanent(tmp_path, permanent):
    app = flask_app(tmp_path, SESSION_PERMANENT=permanent)
    sessionlog.flask.init_app(app)

    @app.route("/set/")
    def set_():
        session["x"] = 1
        return "ok"

    @app.route("/nothing/")
    def nothing():
        return "ok"

    c = app.test_client()
    r = c.get("/nothing/")
    assert "Set-Cookie" not in r.headers  # nothing stored for an unused session
    r = c.get("/set/")
    assert ("Expires=" in r.headers["Set-Cookie"]) is permanent
