"""A Rust process and a Python process on one store see each other's
sessions (tests/peer is a small Rust program over the sessionlog crate)."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import pytest
from django.test import override_settings

import sessionlog_store
from sessionlog_store import session_version

from test_session2 import Session

PYTHON_DIR = Path(__file__).resolve().parent.parent
PEER_MANIFEST = Path(__file__).resolve().parent / "peer" / "Cargo.toml"


@pytest.fixture(scope="module")
def peer_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", PYTHON_DIR / "target"))
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--manifest-path", str(PEER_MANIFEST)],
        check=True,
        env={**os.environ, "CARGO_TARGET_DIR": str(target)},
        timeout=900,
    )
    binary = target / "release" / "sessionlog-peer"
    assert binary.exists()
    return binary


class Peer:
    def __init__(self, proc) -> None:
        self.proc = proc
        assert self.proc.stdout.readline().strip() == "ready"

    def ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().strip()
        assert reply, "the Rust peer exited"
        return reply


@pytest.fixture
def peer(peer_binary, store_path, processes) -> Peer:
    proc = processes.start(
        [str(peer_binary), store_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    p = Peer(proc)
    yield p
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def test_python_and_rust_see_each_other(peer, store_path):
    store = sessionlog_store.LogSessionStore(store_path)  # open at the same time as the peer

    # Python saves, Rust reads the pickled bytes.
    store.save_session(Session("from-python", user="py", n=1))
    kind, version, hexdata = peer.ask("get from-python").split(" ")
    assert (kind, version) == ("found", "1")
    assert pickle.loads(bytes.fromhex(hexdata)).user == "py"

    # Rust saves, Python reads: a pickle, and raw bytes byte for byte.
    pickled = pickle.dumps(Session("from-rust", user="rust"))
    assert peer.ask(f"put from-rust {pickled.hex()}") == "ok 1"
    loaded = store.load_session("from-rust")
    assert loaded.user == "rust" and session_version(loaded) == 1
    assert peer.ask(f"put raw {bytes(range(256)).hex()}") == "ok 1"
    assert store.native.load("raw")[0] == bytes(range(256))

    # A Rust save between a Python load and a conditional save is a conflict.
    mine = store.load_session("from-python")
    assert peer.ask(f"put from-python {pickle.dumps(Session('from-python', user='rust-wins')).hex()}") == "ok 2"
    with pytest.raises(sessionlog_store.ConflictError) as info:
        store.save_session(mine, if_unchanged=True)
    assert (info.value.expected, info.value.found) == (1, 2)
    assert store.load_session("from-python").user == "rust-wins"

    # Deletes, both ways.
    assert peer.ask("del from-rust") == "deleted true"
    assert not store.has_session("from-rust")
    assert store.delete_session("from-python")
    assert peer.ask("get from-python") == "none"
    assert peer.ask("list") == "ids raw"
    assert [row[0] for row in store.native.sessions()] == ["raw"]


def test_django_session_is_readable_from_rust(peer, store_path):
    from sessionlog_store.django import SessionStore

    with override_settings(SESSIONLOG_PATH=store_path):
        s = SessionStore()
        s["user"] = "django-user"
        s.save()
        kind, _version, hexdata = peer.ask(f"get {s.session_key}").split(" ")
        assert kind == "found"
        assert b'"user":"django-user"' in bytes.fromhex(hexdata)
        assert peer.ask(f"del {s.session_key}") == "deleted true"
        assert SessionStore(s.session_key).load() == {}


def test_rust_errors_on_bad_input(peer):
    assert peer.ask("get a.b").startswith("error invalid session id")


def test_hashed_ids_agree_with_rust_and_keep_no_id_in_the_file(peer_binary, store_path, processes):
    """A Python store and a Rust ``HashedIds`` on one file find each other's
    sessions by the ids themselves, and the file holds only digests."""
    store = sessionlog_store.LogSessionStore(store_path, hashed_ids=True, sync="always")
    assert store.native.hashed_ids
    py_id, rust_id = sessionlog_store.generate_id(), sessionlog_store.generate_id()
    store.save_session(Session(py_id, user="py"))

    proc = processes.start(
        [str(peer_binary), store_path, "--hashed"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    peer = Peer(proc)
    kind, _version, hexdata = peer.ask(f"get {py_id}").split(" ")
    assert kind == "found"
    assert py_id.encode() not in bytes.fromhex(hexdata), "the pickle refers to the id, never holds it"
    assert peer.ask(f"put {rust_id} {b'from-rust'.hex()}") == "ok 1"
    listed = peer.ask("list")  # digests hold a comma: compare the whole line
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0

    assert store.native.load(rust_id)[0] == b"from-rust"
    loaded = store.load_session(py_id)
    assert (loaded.id, loaded.user) == (py_id, "py")
    stored = sorted(row[0] for row in store.native.sessions())
    assert len(stored) == 2 and listed == "ids " + ",".join(stored)
    assert all(i.startswith("h,") and len(i) == 45 for i in stored), stored
    store.native.sync()
    raw = Path(store_path).read_bytes()
    assert py_id.encode() not in raw and rust_id.encode() not in raw

    # without hashed_ids the same file finds neither id in the clear
    clear = sessionlog_store.LogSessionStore(store_path)
    assert clear.load_session(py_id) is None and not clear.has_session(rust_id)
    assert sorted(row[0] for row in clear.native.sessions()) == stored
