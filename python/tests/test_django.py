"""The Django backend: SessionBase's contract, and the real middleware
through Django's test client."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.core.management import call_command
from django.test import Client, override_settings

import sessionlog_store
import sessionlog_store.django as backend
from sessionlog_store.django import SessionConflict, SessionStore


@pytest.fixture(autouse=True)
def own_store(tmp_path):
    with override_settings(SESSIONLOG_PATH=str(tmp_path / "django.db")):
        yield


def test_engine_setting_is_the_module():
    from django.conf import settings

    assert settings.SESSION_ENGINE == "sessionlog_store.django"


def test_create_saves_a_unique_key_before_returning():
    s = SessionStore()
    s.create()
    key = s.session_key
    assert key and len(key) == 32
    assert SessionStore().exists(key)
    assert backend.get_store().has_session(key)
    other = SessionStore()
    other.create()
    assert other.session_key != key


def test_save_load_roundtrip():
    s = SessionStore()
    s["user"] = "alice"
    s["cart"] = [1, 2]
    s.save()
    again = SessionStore(s.session_key)
    assert again["user"] == "alice" and again["cart"] == [1, 2]
    assert again.session_key == s.session_key


def test_must_create_on_existing_key_raises_create_error():
    s = SessionStore()
    s["a"] = 1
    s.save()
    clash = SessionStore(s.session_key)
    clash._session_cache = {"b": 2}
    with pytest.raises(CreateError):
        clash.save(must_create=True)
    assert SessionStore(s.session_key)["a"] == 1  # untouched


def test_save_of_a_session_deleted_meanwhile_raises_update_error():
    s = SessionStore()
    s["user"] = "alice"
    s.save()
    request_a = SessionStore(s.session_key)
    assert request_a["user"] == "alice"  # loaded
    SessionStore().delete(s.session_key)  # a logout in another request
    request_a["count"] = 1
    with pytest.raises(UpdateError):
        request_a.save()
    assert not SessionStore().exists(s.session_key)  # not resurrected


def test_changing_a_missing_key_starts_a_new_session():
    s = SessionStore("abcdefgh12345678abcdefgh12345678")
    s["x"] = 1  # load finds nothing, so the key is dropped...
    assert s.session_key is None
    s.save()  # ...and save creates a fresh one
    assert s.session_key and SessionStore().exists(s.session_key)


def test_load_missing_or_expired_gives_empty_session_and_drops_key():
    missing = SessionStore("doesnotexist0000doesnotexist0000")
    assert missing.load() == {}
    assert missing.session_key is None
    s = SessionStore()
    s["user"] = "bob"
    s.set_expiry(-1)  # already expired
    s.save()
    key = s.session_key
    assert not SessionStore().exists(key)
    late = SessionStore(key)
    assert late.load() == {}
    assert late.session_key is None


def test_expiry_age_becomes_the_stored_deadline():
    s = SessionStore()
    s["u"] = 1
    s.set_expiry(600)
    s.save()
    _data, _version, expires_ms, _modified = backend.get_store().native.load(s.session_key)
    assert abs(expires_ms / 1000 - (time.time() + 600)) < 30


def test_invalid_cookie_keys_are_no_key():
    for bad in ["short", "../../etc/passwd", "a" * 200, "key with spaces 1234", None]:
        s = SessionStore(bad)
        assert s.session_key is None
        assert s.load() == {}
        assert not s.exists(bad)
        s.delete(bad)  # no error


def test_delete_and_flush():
    s = SessionStore()
    s["x"] = 1
    s.save()
    key = s.session_key
    s.flush()
    assert s.session_key is None
    assert not SessionStore().exists(key)


def test_cycle_key_keeps_data_and_retires_old_key():
    s = SessionStore()
    s["user"] = "carol"
    s.save()
    old = s.session_key
    s.cycle_key()
    assert s.session_key != old
    assert not SessionStore().exists(old)
    assert SessionStore(s.session_key)["user"] == "carol"


def test_concurrent_updates_last_write_wins_by_default():
    s = SessionStore()
    s["n"] = 0
    s.save()
    a, b = SessionStore(s.session_key), SessionStore(s.session_key)
    a["n"] = a["n"] + 1
    b["n"] = b["n"] + 10
    a.save()
    b.save()
    assert SessionStore(s.session_key)["n"] == 10


def test_conditional_setting_raises_session_conflict():
    with override_settings(SESSIONLOG_CONDITIONAL=True):
        s = SessionStore()
        s["n"] = 0
        s.save()
        a, b = SessionStore(s.session_key), SessionStore(s.session_key)
        a["n"] = a["n"] + 1
        b["n"] = b["n"] + 10
        a.save()
        with pytest.raises(SessionConflict) as info:
            b.save()
        assert isinstance(info.value, UpdateError)
        assert SessionStore(s.session_key)["n"] == 1
        a["n"] = 2  # a's own second save is fine: it has the latest version
        a.save()
        assert SessionStore(s.session_key)["n"] == 2


def test_clear_expired_and_clearsessions():
    live = SessionStore()
    live["x"] = 1
    live.save()
    dead = SessionStore()
    dead["x"] = 2
    dead.set_expiry(-1)
    dead.save()
    path = backend.get_store().path
    with open(path, "rb") as f:
        assert dead.session_key.encode() in f.read()  # still in the log
    SessionStore.clear_expired()
    call_command("clearsessions")
    assert SessionStore().exists(live.session_key)
    keys = [row[0] for row in backend.get_store().native.sessions()]
    assert keys == [live.session_key]
    with open(path, "rb") as f:
        raw = f.read()
    assert dead.session_key.encode() not in raw  # compacted away
    assert live.session_key.encode() in raw


def test_async_variants():
    async def scenario():
        s = SessionStore()
        await s.acreate()
        key = s.session_key
        assert await SessionStore().aexists(key)
        await s.aset("user", "dave")
        await s.asave()
        again = SessionStore(key)
        assert await again.aget("user") == "dave"
        assert (await again.aload())["user"] == "dave"
        with pytest.raises(CreateError):
            await again.asave(must_create=True)
        await again.adelete()
        assert not await SessionStore().aexists(key)
        s2 = SessionStore(key)
        s2._session_cache = {"user": "dave"}
        s2._sessionlog_version = 1
        with pytest.raises(UpdateError):
            await s2.asave()
        await SessionStore.aclear_expired()
        await s.acycle_key()
        assert await SessionStore().aexists(s.session_key)

    asyncio.run(scenario())


def test_async_variants_under_sync_always(tmp_path):
    async def scenario():
        s = SessionStore()
        await s.aset("user", "erin")
        await s.asave()  # from a worker thread: the save waits for the disk
        assert await SessionStore().aexists(s.session_key)
        again = SessionStore(s.session_key)
        assert await again.aget("user") == "erin"
        await again.adelete()
        assert not await SessionStore().aexists(s.session_key)

    with override_settings(SESSIONLOG_PATH=str(tmp_path / "always.db"), SESSIONLOG_OPTIONS={"sync": "always"}):
        assert backend.get_store()._options["sync"] == "always"
        asyncio.run(scenario())


def test_hashed_ids_option_keeps_session_keys_out_of_the_file(tmp_path):
    path = tmp_path / "hashed.db"
    with override_settings(SESSIONLOG_PATH=str(path), SESSIONLOG_OPTIONS={"hashed_ids": True, "sync": "always"}):
        s = SessionStore()
        s["user"] = "frank"
        s.save()
        assert SessionStore(s.session_key).load() == {"user": "frank"}
        stored = [row[0] for row in backend.get_store().native.sessions()]
        assert len(stored) == 1 and stored[0].startswith("h,") and stored[0] != s.session_key
        assert s.session_key.encode() not in path.read_bytes()
        s.delete()
        assert not SessionStore().exists(s.session_key)


def test_missing_path_setting_is_improperly_configured():
    from django.core.exceptions import ImproperlyConfigured

    with override_settings(SESSIONLOG_PATH=None):
        with pytest.raises(ImproperlyConfigured):
            SessionStore().create()


def test_a_non_store_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "not-a-store"
    bad.write_bytes(b"hello" * 1000)
    with override_settings(SESSIONLOG_PATH=str(bad)):
        with pytest.raises(sessionlog_store.NotAStoreError):
            SessionStore().create()


# -- the real middleware through Django's test client -----------------------


def test_client_login_counter_logout():
    c = Client()
    r = c.get("/login/?user=erin")
    assert r.status_code == 200 and r.json()["user"] == "erin"
    first_key = c.cookies["sessionid"].value
    assert [c.get("/count/").json()["count"] for _ in range(3)] == [1, 2, 3]
    assert c.get("/whoami/").json() == {"pid": r.json()["pid"], "user": "erin", "count": 3}
    # Login again: a new key (cycle_key), the old one gone.
    c.get("/login/?user=erin")
    assert c.cookies["sessionid"].value != first_key
    assert not SessionStore().exists(first_key)
    key = c.cookies["sessionid"].value
    r = c.get("/logout/")
    assert r.json()["user"] is None
    assert not SessionStore().exists(key)
    assert c.get("/whoami/").json()["user"] is None
    # A replayed old cookie is an anonymous session.
    replay = Client()
    replay.cookies["sessionid"] = key
    assert replay.get("/whoami/").json()["user"] is None


def test_client_save_after_concurrent_delete_is_session_interrupted():
    c = Client()
    c.get("/login/?user=frank")
    key = c.cookies["sessionid"].value
    r = c.get("/delete-then-touch/")
    assert r.status_code == 400  # SessionInterrupted
    assert not SessionStore().exists(key)


def test_client_tampered_cookie_is_a_fresh_session():
    c = Client()
    c.cookies["sessionid"] = "../../../etc/passwd"
    r = c.get("/count/")
    assert r.status_code == 200 and r.json()["count"] == 1
    assert c.cookies["sessionid"].value != "../../../etc/passwd"


# -- update_session: the merge helper (issue 26) -----------------------------


def test_client_update_session_merges_a_concurrent_save():
    for conditional in (False, True):
        with override_settings(SESSIONLOG_CONDITIONAL=conditional):
            c = Client()
            assert c.get("/count/").json()["count"] == 1
            r = c.get("/merge-count/?race=10")
            assert r.status_code == 200
            # 1, then another request's +10, then this one's +1 re-run on it.
            assert r.json() == {"count": 12, "attempts": 2}
            assert c.get("/whoami/").json()["count"] == 12


def test_client_update_session_creates_a_new_session_with_its_cookie():
    c = Client()
    r = c.get("/merge-count/")
    assert r.json() == {"count": 1, "attempts": 1}
    assert "sessionid" in c.cookies
    assert c.get("/whoami/").json()["count"] == 1


def test_update_session_does_not_bring_back_a_deleted_session():
    s = SessionStore()
    s["n"] = 1
    s.save()
    request = type("Request", (), {})()
    request.session = SessionStore(s.session_key)
    request.session.load()

    def change(data):
        SessionStore().delete(s.session_key)  # a logout lands meanwhile
        data["n"] += 1

    with pytest.raises(UpdateError):
        backend.update_session(request, change)
    assert not SessionStore().exists(s.session_key)


def test_update_session_gives_up_with_session_conflict():
    s = SessionStore()
    s["n"] = 0
    s.save()
    request = type("Request", (), {})()
    request.session = SessionStore(s.session_key)

    def change(data):
        other = SessionStore(s.session_key)
        other["n"] = other["n"] + 100  # someone saves before every attempt ends
        other.save()
        data["n"] += 1

    with pytest.raises(SessionConflict):
        backend.update_session(request, change, attempts=3)
    assert SessionStore(s.session_key)["n"] == 300
# -- issue 28: sessions that know their user ---------------------------------


def test_two_browsers_one_call_logs_the_other_out():
    """Two logged-in browsers of user 42 (and one of user 7): one call from
    the first logs the second out, and only it."""
    first, second, someone_else = Client(), Client(), Client()
    assert first.get("/auth-login/?user=42").json()["user"] == "42"
    assert second.get("/auth-login/?user=42").json()["user"] == "42"
    assert someone_else.get("/auth-login/?user=7").json()["user"] == "7"
    keys = {c.cookies["sessionid"].value for c in (first, second)}
    assert {s.session_key for s in backend.sessions_of(42)} == keys, "the owner is recorded on save"
    listed = backend.sessions_of("42")
    assert listed[0].modified >= listed[1].modified and listed[0].expiry is not None

    r = first.get("/logout-others/").json()
    assert r["deleted"] == 1 and r["user"] == "42"
    assert second.get("/whoami/").json()["user"] is None, "the other browser is logged out"
    assert first.get("/whoami/").json()["user"] == "42"
    assert someone_else.get("/whoami/").json()["user"] == "7"
    assert [s.session_key for s in backend.sessions_of(42)] == [first.cookies["sessionid"].value]


def test_user_objects_keep_and_erase():
    class Pk:
        def value_to_string(self, obj):
            return str(obj.id)

    class Meta:
        pk = Pk()

    class User:
        _meta = Meta()

        def __init__(self, id):
            self.id = id

    sessions = []
    for _ in range(3):
        s = SessionStore()
        s["_auth_user_id"] = "5"
        s.save()
        sessions.append(s.session_key)
    anon = SessionStore()
    anon["cart"] = [1]
    anon.save()
    assert len(backend.sessions_of(User(5))) == 3
    assert backend.delete_sessions_of(User(5), keep=sessions[0]) == 2
    assert [s.session_key for s in backend.sessions_of(5)] == [sessions[0]]
    # Logging out (a flush) or saving without a user clears the owner.
    s = SessionStore(sessions[0])
    del s["_auth_user_id"]
    s.save()
    assert backend.sessions_of(5) == []
    s["_auth_user_id"] = "5"
    s.save()
    assert backend.erase_sessions_of(User(5)) == 1
    assert not SessionStore().exists(sessions[0])
    assert SessionStore().exists(anon.session_key)


def test_max_sessions_per_user_logs_out_the_oldest():
    with override_settings(SESSIONLOG_MAX_SESSIONS_PER_USER=2):
        browsers = [Client() for _ in range(3)]
        for b in browsers:
            b.get("/auth-login/?user=9")
        assert browsers[0].get("/whoami/").json()["user"] is None, "the oldest login is gone"
        assert browsers[1].get("/whoami/").json()["user"] == "9"
        assert browsers[2].get("/whoami/").json()["user"] == "9"
        assert len(backend.sessions_of(9)) == 2
        # The store's own limit (atomic across processes), not a trim after.
        assert backend.get_store().max_sessions_per_owner == 2
    from django.core.exceptions import ImproperlyConfigured

    for bad in (0, "2", True):
        with override_settings(SESSIONLOG_MAX_SESSIONS_PER_USER=bad), pytest.raises(ImproperlyConfigured):
            backend.get_store()
    with override_settings(
        SESSIONLOG_MAX_SESSIONS_PER_USER=2, SESSIONLOG_OPTIONS={"max_sessions_per_owner": 3}
    ), pytest.raises(ImproperlyConfigured):
        backend.get_store()
    with override_settings(SESSIONLOG_OPTIONS={"max_sessions_per_owner": 3}):
        assert backend.get_store().max_sessions_per_owner == 3
