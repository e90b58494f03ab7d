"""Guards ``encryption_keys=`` (issue 29) on the three stores and through
``SESSIONLOG_OPTIONS`` for Django and Flask: a marker saved through an
encrypted store is in none of the store's files, yet loads back; a record
under a key the store lacks, or under another key of the same id, raises
the typed error and returns no data; keys come from a 0600 key file or a
list, the first current and the others retired; a malformed key is a
``BadKeysError`` that does not quote it; a store written before it was
encrypted is read only with ``encryption_accept_plaintext``.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from django.test import override_settings

import sessionlog_store
import sessionlog_store.django as django_backend
import sessionlog_store.flask

MARKER = "marker-5b1f0c9e-secret-cart"


class Session:
    """A session2-style session: an object with an id and attributes."""

    def __init__(self, id: str, **attrs) -> None:
        self.id = id
        self.__dict__.update(attrs)


def entry(key_id: str, seed: int) -> str:
    return f"{key_id}:{base64.b64encode(bytes([seed]) * 32).decode()}"


def key_file(path: Path, *entries: str, mode: int = 0o600) -> Path:
    path.write_text("# session keys\n" + "\n".join(entries) + "\n")
    path.chmod(mode)
    return path


def files_of(path: Path) -> bytes:
    """Every byte of every file under ``path`` (or of the file itself)."""
    if path.is_file():
        return path.read_bytes()
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def open_store(kind: str, tmp_path: Path, **options):
    if kind == "log":
        return sessionlog_store.LogSessionStore(tmp_path / "s.db", sync="always", **options), tmp_path / "s.db"
    return sessionlog_store.DirSessionStore(tmp_path / "s", sync="always", **options), tmp_path / "s"


@pytest.mark.parametrize("kind", ["log", "dir"])
@pytest.mark.parametrize("hashed", [False, True])
def test_marker_is_in_no_file_and_loads_back(kind, hashed, tmp_path):
    store, where = open_store(kind, tmp_path, hashed_ids=hashed, encryption_keys=[entry("k1", 1)])
    assert store.native.encrypted and store.native.hashed_ids == hashed
    store.save_session(Session("sid-plain-1", cart=MARKER))
    store.sync()
    assert store.load_session("sid-plain-1").cart == MARKER
    raw = files_of(where)
    assert raw, "the store wrote nothing"
    assert MARKER.encode() not in raw
    assert b"cart" not in raw  # the pickle's attribute names are encrypted too
    assert (b"sid-plain-1" in raw) == (not hashed)
    # Through a store without the keys the bytes are an envelope, not a
    # pickle: nothing of the session comes back.
    del store
    plain, _ = open_store(kind, tmp_path, hashed_ids=hashed)
    with pytest.raises(sessionlog_store.SerializationError):
        plain.load_session("sid-plain-1")


def test_memory_store_encrypts_and_round_trips():
    store = sessionlog_store.MemorySessionStore(encryption_keys=[entry("k1", 1)])
    assert store.native.encrypted
    store.save_session(Session("m1", cart=MARKER))
    assert store.load_session("m1").cart == MARKER
    assert [sid for sid, _ in store.iter_sessions()] == ["m1"]


@pytest.mark.parametrize("kind", ["log", "dir"])
def test_a_missing_or_wrong_key_raises_the_typed_error(kind, tmp_path):
    store, _ = open_store(kind, tmp_path, encryption_keys=[entry("k1", 1)])
    store.save_session(Session("victim", cart=MARKER))
    store.sync()
    del store

    other, _ = open_store(kind, tmp_path, encryption_keys=[entry("k2", 2)])
    with pytest.raises(sessionlog_store.KeyMissingError) as info:
        other.load_session("victim")
    assert "k1" in str(info.value)
    assert "victim" not in str(info.value) and MARKER not in str(info.value)
    del other

    forged, _ = open_store(kind, tmp_path, encryption_keys=[entry("k1", 3)])
    with pytest.raises(sessionlog_store.UndecryptableError) as info:
        forged.load_session("victim")
    assert "victim" not in str(info.value) and entry("k1", 3).split(":")[1] not in str(info.value)
    del forged

    # With k1 retired behind a new current key, it decrypts again.
    rotated, _ = open_store(kind, tmp_path, encryption_keys=[entry("k2", 2), entry("k1", 1)])
    assert rotated.load_session("victim").cart == MARKER


def test_key_file_first_line_current_others_retired(tmp_path):
    old = key_file(tmp_path / "old.keys", entry("2026-06", 6))
    store, where = open_store("log", tmp_path, encryption_keys=old)
    store.save_session(Session("s1", cart=MARKER))
    del store
    both = key_file(tmp_path / "new.keys", entry("2026-12", 12), entry("2026-06", 6))
    store, where = open_store("log", tmp_path, encryption_keys=str(both))
    assert store.load_session("s1").cart == MARKER
    store.save_session(Session("s2", cart=MARKER))
    del store
    # s2 was written under the current key: the new key alone reads it.
    only_new, _ = open_store("log", tmp_path, encryption_keys=[entry("2026-12", 12)])
    assert only_new.load_session("s2").cart == MARKER
    with pytest.raises(sessionlog_store.KeyMissingError) as info:
        only_new.load_session("s1")
    assert "2026-06" in str(info.value)


def test_key_file_readable_by_others_is_refused(tmp_path):
    loose = key_file(tmp_path / "loose.keys", entry("k1", 1), mode=0o644)
    with pytest.raises(sessionlog_store.UnsafeError):
        sessionlog_store.LogSessionStore(tmp_path / "s.db", encryption_keys=loose)
    link = tmp_path / "link.keys"
    link.symlink_to(key_file(tmp_path / "ok.keys", entry("k1", 1)))
    with pytest.raises(sessionlog_store.UnsafeError):
        sessionlog_store.LogSessionStore(tmp_path / "s.db", encryption_keys=link)


@pytest.mark.parametrize(
    "keys, want",
    [
        ([], "no key"),
        (["k1"], "KEY_ID:BASE64"),
        ([f"k1:{base64.b64encode(b'x' * 16).decode()}"], "16 bytes"),
        ([entry("k1", 1), entry("k1", 2)], "twice"),
        ([entry("k1", 1) + "\n" + entry("k2", 2)], "line break"),
        (entry("k1", 1), "as a list"),
    ],
)
def test_malformed_keys_are_bad_keys_errors_that_do_not_quote_them(keys, want, tmp_path):
    with pytest.raises(sessionlog_store.BadKeysError) as info:
        sessionlog_store.LogSessionStore(tmp_path / "s.db", encryption_keys=keys)
    assert isinstance(info.value, ValueError)
    assert want in str(info.value)
    for k in ([keys] if isinstance(keys, str) else keys):
        if ":" in k:
            assert k.split(":", 1)[1].split("\n")[0] not in str(info.value)


def test_wrong_types_are_type_errors(tmp_path):
    with pytest.raises(TypeError):
        sessionlog_store.LogSessionStore(tmp_path / "s.db", encryption_keys=[b"k1:AAAA"])
    with pytest.raises(TypeError):
        sessionlog_store.LogSessionStore(tmp_path / "s.db", encryption_keys=42)


def test_plaintext_store_is_read_only_when_accepted_and_encrypted_on_save(tmp_path):
    path = tmp_path / "s.db"
    plain = sessionlog_store.LogSessionStore(path, sync="always")
    plain.save_session(Session("old", cart=MARKER))
    del plain
    keys = [entry("k1", 1)]
    strict = sessionlog_store.LogSessionStore(path, sync="always", encryption_keys=keys)
    with pytest.raises(sessionlog_store.UndecryptableError):
        strict.load_session("old")
    del strict
    migrating = sessionlog_store.LogSessionStore(path, sync="always", encryption_keys=keys, encryption_accept_plaintext=True)
    session = migrating.load_session("old")
    assert session.cart == MARKER
    migrating.save_session(session)
    migrating.compact()
    assert MARKER.encode() not in path.read_bytes()
    del migrating
    strict = sessionlog_store.LogSessionStore(path, encryption_keys=keys)
    assert strict.load_session("old").cart == MARKER


def test_django_sessionlog_options_encrypt(tmp_path):
    path = tmp_path / "django.db"
    keys = key_file(tmp_path / "django.keys", entry("dj1", 7))
    for options in ({"encryption_keys": str(keys), "sync": "always"}, {"encryption_keys": [entry("dj1", 7)]}):
        with override_settings(SESSIONLOG_PATH=str(path), SESSIONLOG_OPTIONS=options):
            assert django_backend.get_store().native.encrypted
            s = django_backend.SessionStore()
            s["cart"] = MARKER
            s.save()
            assert django_backend.SessionStore(s.session_key).load() == {"cart": MARKER}
            django_backend.get_store().sync()
            assert MARKER.encode() not in path.read_bytes()
    with override_settings(SESSIONLOG_PATH=str(path), SESSIONLOG_OPTIONS={"encryption_keys": [entry("dj2", 8)]}):
        with pytest.raises(sessionlog_store.KeyMissingError):
            django_backend.get_store().load_session(s.session_key)


def test_flask_sessionlog_options_encrypt(tmp_path):
    from flask import Flask, session

    path = tmp_path / "flask.db"
    app = Flask(__name__)
    app.secret_key = "flask-encrypted-test-secret-0123456789"
    app.config.update(
        SESSIONLOG_PATH=str(path),
        SESSIONLOG_OPTIONS={"encryption_keys": [entry("fl1", 9)], "sync": "always"},
        TESTING=True,
    )

    @app.route("/put/")
    def put():
        session["cart"] = MARKER
        return "ok"

    @app.route("/get/")
    def get():
        return session.get("cart", "")

    iface = sessionlog_store.flask.init_app(app)
    assert iface.store.native.encrypted
    client = app.test_client()
    assert client.get("/put/").status_code == 200
    assert client.get("/get/").text == MARKER
    iface.store.sync()
    assert MARKER.encode() not in path.read_bytes()
