"""The Flask session interface through Flask's test client."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from flask import session
from itsdangerous import Signer

import sessionlog_store
from sessionlog_store.flask import SessionlogSessionInterface

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
    assert sessionlog_store.is_valid_id(sid) and len(sid) == 22
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
    with pytest.raises(sessionlog_store.ConflictError):
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

        n = sessionlog_store.flask.update_session(change)
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

        sessionlog_store.flask.update_session(change)
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
        sessionlog_store.flask.init_app(app)
    with pytest.raises(RuntimeError):  # what it raised before: still caught
        sessionlog_store.flask.init_app(app)


def test_session_type_of_another_backend_is_refused(tmp_path):
    with pytest.raises(ValueError, match="SESSION_TYPE"):
        sessionlog_store.flask.init_app(flask_app(tmp_path, SESSION_TYPE="redis"))
    sessionlog_store.flask.init_app(flask_app(tmp_path, SESSION_TYPE="sessionlog"))


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
        sessionlog_store.flask.init_app(flask_app(tmp_path, **config))


def test_key_prefix_and_id_length(tmp_path):
    app = flask_app(tmp_path, SESSION_KEY_PREFIX="shop_", SESSION_ID_LENGTH=32)
    sessionlog_store.flask.init_app(app)

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
    sessionlog_store.flask.init_app(app)

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


# -- sessions that know their user ---------------------------------------------


def owner_app(tmp_path, **config):
    """An app whose login stores Flask-Login's ``_user_id`` (as
    ``login_user`` does) and whose /others/ logs the user out elsewhere."""
    from flask import Flask, jsonify, request

    import sessionlog_store.flask as sf

    app = Flask(__name__)
    app.secret_key = "owner-test-secret-key-0123456789"
    app.config["SESSIONLOG_PATH"] = str(tmp_path / "owners.db")
    app.config["TESTING"] = True
    app.config.update(config)
    sf.init_app(app)

    @app.route("/login/")
    def login():
        session.regenerate()
        session["_user_id"] = request.args["user"]
        session["acct"] = request.args["user"].upper()
        return jsonify(user=session["_user_id"])

    @app.route("/whoami/")
    def whoami():
        return jsonify(user=session.get("_user_id"))

    @app.route("/others/")
    def others():
        return jsonify(deleted=sf.delete_sessions_of(session["_user_id"], keep=session))

    @app.route("/mine/")
    def mine():
        return jsonify(sids=[s.sid for s in sf.sessions_of(session["_user_id"])])

    return app


def test_one_call_logs_out_the_users_other_browsers(tmp_path):
    import sessionlog_store.flask as sf

    app = owner_app(tmp_path)
    laptop, phone, bob = app.test_client(), app.test_client(), app.test_client()
    laptop.get("/login/?user=7")
    phone.get("/login/?user=7")
    bob.get("/login/?user=8")
    ids = {sid_of(app, laptop), sid_of(app, phone)}
    with app.app_context():
        listed = sf.sessions_of("7")
        assert {s.sid for s in listed} == ids
        assert listed[0].modified >= listed[1].modified  # newest first
        assert listed[0].expiry > listed[0].modified
        assert [s.sid for s in sf.sessions_of("8")] == [sid_of(app, bob)]
    assert native(app).load_owned(sid_of(app, laptop))[4] == "7"
    assert set(phone.get("/mine/").json["sids"]) == ids

    assert phone.get("/others/").json == {"deleted": 1}
    assert laptop.get("/whoami/").json["user"] is None  # logged out
    assert phone.get("/whoami/").json["user"] == "7"  # kept
    assert bob.get("/whoami/").json["user"] == "8"  # another user: untouched
    with app.app_context():
        assert [s.sid for s in sf.sessions_of("7")] == [sid_of(app, phone)]
        assert sf.delete_sessions_of("7") == 1
    assert phone.get("/whoami/").json["user"] is None


def test_logout_clears_the_owner_and_a_user_object_works(tmp_path):
    import sessionlog_store.flask as sf

    class User:  # Flask-Login's UserMixin gives get_id()
        def get_id(self):
            return "7"

    app = owner_app(tmp_path)
    c = app.test_client()
    c.get("/login/?user=7")
    with app.app_context():
        assert len(sf.sessions_of(User())) == 1
    # A session that stays but loses its user loses its owner.
    with c.session_transaction() as s:
        del s["_user_id"]
    with app.app_context():
        assert sf.sessions_of(User()) == []


def test_owner_key_and_callable(tmp_path):
    import sessionlog_store.flask as sf

    (tmp_path / "a").mkdir(mode=0o700)
    app = owner_app(tmp_path / "a", SESSIONLOG_OWNER_KEY="acct")
    c = app.test_client()
    c.get("/login/?user=ann")
    with app.app_context():
        assert len(sf.sessions_of("ANN")) == 1 and sf.sessions_of("ann") == []

    (tmp_path / "b").mkdir(mode=0o700)
    app = owner_app(tmp_path / "b", SESSIONLOG_OWNER_KEY=lambda d: d.get("acct", "")[:1] or None)
    c = app.test_client()
    c.get("/login/?user=ann")
    with app.app_context():
        assert len(sf.sessions_of("A")) == 1

    with pytest.raises(sf.ConfigurationError):
        sf.SessionlogSessionInterface(path=str(tmp_path / "c.db"), owner_key=3)


def test_key_prefix_keep_and_erase(tmp_path):
    import sessionlog_store.flask as sf

    app = owner_app(tmp_path, SESSION_KEY_PREFIX="app1-")
    a, b, c = app.test_client(), app.test_client(), app.test_client()
    for client in (a, b, c):
        client.get("/login/?user=7")
    # Another app sharing the store with another prefix, same user id.
    native(app).save("app2-otherappsession0000", b"{}", None, 0, False, "7")
    with app.app_context():
        assert {s.sid for s in sf.sessions_of("7")} == {sid_of(app, x) for x in (a, b, c)}
        assert all(not s.sid.startswith("app1-") for s in sf.sessions_of("7"))
        # keep is the session's sid as the cookie holds it (or the session).
        assert sf.delete_sessions_of("7", keep=sid_of(app, b)) == 2
        assert [s.sid for s in sf.sessions_of("7")] == [sid_of(app, b)]
    assert native(app).has("app2-otherappsession0000")  # not this app's
    assert b.get("/whoami/").json["user"] == "7"
    assert a.get("/whoami/").json["user"] is None
    with app.app_context():
        assert sf.erase_sessions_of("7") == 2  # the whole store's: both apps
        assert sf.sessions_of("7") == []
    assert b.get("/whoami/").json["user"] is None


def test_max_sessions_per_user(tmp_path):
    import sessionlog_store.flask as sf

    app = owner_app(tmp_path, SESSIONLOG_MAX_SESSIONS_PER_USER=2)
    clients = [app.test_client() for _ in range(3)]
    for client in clients:
        client.get("/login/?user=7")
    # The newest login wins: one of the earlier browsers is logged out (the
    # least recently saved; two saves in one millisecond tie).
    users = [c.get("/whoami/").json["user"] for c in clients]
    assert users[2] == "7" and set(users[:2]) == {None, "7"}
    with app.app_context():
        assert len(sf.sessions_of("7")) == 2
    for bad in (0, "2", True):
        with pytest.raises(sf.ConfigurationError):
            sf.SessionlogSessionInterface(path=str(tmp_path / "x.db"), max_sessions_per_user=bad)
    # The limit is the store's own option: a given store must carry it.
    assert app.session_interface.store.max_sessions_per_owner == 2
    with pytest.raises(sf.ConfigurationError):
        sf.SessionlogSessionInterface(sessionlog_store.LogSessionStore(tmp_path / "y.db"), max_sessions_per_user=2)
    capped = sessionlog_store.LogSessionStore(tmp_path / "z.db", max_sessions_per_owner=2)
    assert sf.SessionlogSessionInterface(capped, max_sessions_per_user=2).store is capped
    with pytest.raises(sf.ConfigurationError):
        sf.SessionlogSessionInterface(path=str(tmp_path / "w.db"), max_sessions_per_user=2, max_sessions_per_owner=3)
