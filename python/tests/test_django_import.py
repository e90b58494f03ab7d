"""``manage.py sessionlog_import``: a client logged in under Django's db,
file or cache session backend is still logged in, as the same user and
session key, once SESSION_ENGINE is switched to sessionlog_store.django; each
session keeps its expiry and its user as owner."""

from __future__ import annotations

import io
import time

import pytest
from django.contrib.sessions.models import Session as DbSession
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings

import sessionlog_store.django as backend

ENGINES = {
    "db": "django.contrib.sessions.backends.db",
    "file": "django.contrib.sessions.backends.file",
    "cache": "django.contrib.sessions.backends.cache",
}


@pytest.fixture(scope="module", autouse=True)
def session_table():
    call_command("migrate", "sessions", verbosity=0)


@pytest.fixture(autouse=True)
def own_store(tmp_path, session_table):
    from django.core.cache import caches

    # Each test starts with no session in any source.
    DbSession.objects.all().delete()
    caches["default"].clear()
    (tmp_path / "files").mkdir()
    with override_settings(
        SESSIONLOG_PATH=str(tmp_path / "django.db"),
        SESSION_FILE_PATH=str(tmp_path / "files"),
    ):
        yield


def run_import(*args: str) -> str:
    out = io.StringIO()
    call_command("sessionlog_import", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("source", sorted(ENGINES))
def test_a_logged_in_client_stays_logged_in_across_the_switch(source):
    engine = ENGINES[source]
    user = f"user-{source}"
    with override_settings(SESSION_ENGINE=engine):
        browser = Client()
        login_ms = int(time.time() * 1000)
        assert browser.get(f"/auth-login/?user={user}").json()["user"] == user
        key = browser.cookies["sessionid"].value
        assert browser.get("/whoami/").json()["user"] == user
        out = run_import()
    assert f"imported 1 sessions from {engine}" in out, out

    # The key, the owner, and the deadline as the source computed it.
    assert [s.session_key for s in backend.sessions_of(user)] == [key]
    found = backend.get_store().native.load(key)
    assert found is not None
    expires_ms = found[2]
    assert expires_ms is not None
    if source == "db":
        row = DbSession.objects.get(session_key=key)
        assert expires_ms == int(row.expire_date.timestamp() * 1000)
    else:
        from django.conf import settings

        age_ms = settings.SESSION_COOKIE_AGE * 1000
        # Counted from the login's save (a file's mtime may be whole seconds).
        assert login_ms - 1000 <= expires_ms - age_ms <= int(time.time() * 1000)

    # The servers restart with sessionlog's engine; the browser keeps its
    # cookie.
    with override_settings(SESSION_ENGINE="sessionlog_store.django"):
        after = Client()
        after.cookies = browser.cookies
        reply = after.get("/whoami/").json()
        assert reply["user"] == user, reply
        assert after.cookies["sessionid"].value == key
        assert after.get("/count/").json()["count"] == 1
        # A browser without the cookie is not logged in: the test can fail.
        assert Client().get("/whoami/").json()["user"] is None


def test_a_live_key_is_kept_unless_overwrite():
    with override_settings(SESSION_ENGINE=ENGINES["db"]):
        browser = Client()
        browser.get("/auth-login/?user=7")
        key = browser.cookies["sessionid"].value
        assert "imported 1 sessions" in run_import()
        assert "imported 0 sessions" in run_import()
        assert "skipped 1" in run_import()
        assert "imported 1 sessions" in run_import("--overwrite")
    assert backend.get_store().native.has(key)


def test_importing_from_sessionlog_itself_is_refused():
    with pytest.raises(CommandError, match="--engine"):
        run_import()
