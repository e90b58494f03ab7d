"""Guards the Python stores against stores other users made or can reach
(issue 25): a store that belongs to another user is never unpickled from,
whatever the process opened it with (another user, uid 65534, plants a
pickle that would run code here; the test forks a child that becomes that
user); and every opt-in that an error message names is a keyword argument
the store accepts.
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
import shutil
import tempfile
import traceback
from pathlib import Path

import pytest

import sessionlog_store

NOBODY = 65534


class _Plant:
    """A pickle that creates a file when loaded: code execution."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _opt_ins(message: str) -> set:
    """The options an error message names: `name(true)`."""
    return set(re.findall(r"`([a-z_]+)\(true\)`", message))


def _keywords(cls) -> set:
    return set(inspect.signature(cls.__init__).parameters)


def test_every_opt_in_an_error_names_is_a_keyword(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    named = []
    with pytest.raises(sessionlog_store.UnsafeError) as info:
        sessionlog_store.LogSessionStore(shared / "s.db")
    assert _opt_ins(str(info.value)) == {"allow_others_to_write_directory"}
    named.append((sessionlog_store.LogSessionStore, shared / "s.db", info.value))
    with pytest.raises(sessionlog_store.UnsafeError) as info:
        sessionlog_store.DirSessionStore(shared)
    assert _opt_ins(str(info.value)) == {"allow_others_to_write_directory"}
    named.append((sessionlog_store.DirSessionStore, shared, info.value))

    listable = tmp_path / "listable"
    listable.mkdir()
    listable.chmod(0o755)
    with pytest.raises(sessionlog_store.UnsafeError) as info:
        sessionlog_store.DirSessionStore(listable)
    assert "0755" in str(info.value)
    assert _opt_ins(str(info.value)) == {"allow_others_to_read_directory"}
    named.append((sessionlog_store.DirSessionStore, listable, info.value))

    for cls, path, error in named:
        for opt in _opt_ins(str(error)):
            assert opt in _keywords(cls), f"{cls.__name__} lacks {opt}"
            store = cls(path, **{opt: True})  # the opt-in works as named
            store.save_session(_Session("x", n=1))
            assert store.load_session("x").n == 1


class _Session:
    def __init__(self, id: str, **attrs) -> None:
        self.id = id
        self.__dict__.update(attrs)


def _plant_as_nobody(kind: str, path: str, sid: str, marker: str) -> None:
    """Forks a child that becomes uid 65534 and makes a store at `path`
    holding, as session `sid`, a pickle that creates `marker` when loaded."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            if kind == "log":
                store = sessionlog_store.LogSessionStore(path, background=False, sync="always")
            else:
                store = sessionlog_store.DirSessionStore(path, sync="always")
            store.native.save(sid, pickle.dumps(_Plant(marker)))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child planted its store"


@pytest.fixture
def traversable_tmp():
    """A temporary directory uid 65534 can traverse (pytest's own are under
    a 0700 directory of root's)."""
    path = Path(tempfile.mkdtemp(prefix="sessionlog-owner-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="acts as uid 65534: needs root (CI runs as root)")
@pytest.mark.parametrize("kind", ["log", "dir"])
def test_a_store_of_another_user_is_never_unpickled(kind, traversable_tmp):
    tmp_path = traversable_tmp
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    path = str(home / ("sessions.db" if kind == "log" else "sessions"))
    marker = str(tmp_path / "code-ran")
    sid = sessionlog_store.generate_id()
    _plant_as_nobody(kind, path, sid, marker)
    assert os.stat(path).st_uid == NOBODY

    # Opened as any process would open its store: refused.
    cls = sessionlog_store.LogSessionStore if kind == "log" else sessionlog_store.DirSessionStore
    with pytest.raises(sessionlog_store.UnsafeError) as info:
        cls(path).load_session(sid)
    assert f"uid {NOBODY}" in str(info.value)
    assert "maintain_as_owner(true)" in str(info.value)
    assert not os.path.exists(marker), "the planted pickle ran"

    # Root's stated maintenance opens it, and still never unpickles.
    store = cls(path, maintain_as_owner=True)
    assert store.native.owner_uid == NOBODY
    assert store.has_session(sid)
    with pytest.raises(sessionlog_store.UnsafeError) as info:
        store.load_session(sid)
    assert "refusing to unpickle" in str(info.value)
    with pytest.raises(sessionlog_store.UnsafeError):
        list(store.iter_sessions())
    deleted = store.delete_old_sessions(0)
    assert deleted == ((1, 0) if kind == "dir" else 1)
    assert not os.path.exists(marker), "the planted pickle ran"


def test_a_store_of_this_user_is_unpickled(tmp_path):
    store = sessionlog_store.DirSessionStore(tmp_path / "d")
    assert store.native.owner_uid == os.geteuid()
    store.save_session(_Session("mine", n=2))
    assert store.load_session("mine").n == 2
    assert sessionlog_store.MemorySessionStore().native.owner_uid is None
