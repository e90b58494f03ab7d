"""session2's store interface: LogSessionStore, DirSessionStore,
MemorySessionStore, and how bad input is refused."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import sessionlog_store
from sessionlog_store import session_version

from conftest import wait_for


class Session:
    """A session2-style session: an object with an id and attributes."""

    def __init__(self, id: str, **attrs) -> None:
        self.id = id
        self.__dict__.update(attrs)


@pytest.fixture(params=["log", "dir", "memory"])
def store(request, tmp_path):
    return make_store(request.param, tmp_path)


def make_store(kind, tmp_path, **options):
    if kind == "log":
        return sessionlog_store.LogSessionStore(tmp_path / "sessions.db", **options)
    if kind == "dir":
        return sessionlog_store.DirSessionStore(tmp_path / "sessions", **options)
    return sessionlog_store.MemorySessionStore(**options)


# -- the interface -----------------------------------------------------------


def test_class_attributes():
    assert sessionlog_store.LogSessionStore.is_multiprocess_safe is True
    assert sessionlog_store.LogSessionStore.is_thread_safe is True
    assert sessionlog_store.DirSessionStore.is_multiprocess_safe is True
    assert sessionlog_store.DirSessionStore.is_thread_safe is True
    assert sessionlog_store.MemorySessionStore.is_multiprocess_safe is False
    assert sessionlog_store.MemorySessionStore.is_thread_safe is True


def test_class_attributes_match_the_engine(store):
    assert type(store).is_multiprocess_safe == store.native.is_multiprocess_safe
    assert type(store).is_thread_safe == store.native.is_thread_safe


def test_native_path_is_what_the_stub_declares(tmp_path):
    # _native.pyi: ``path -> Optional[pathlib.Path]`` (stubtest cannot see a
    # property's runtime type, so this holds the stub to it).
    log = sessionlog_store.LogSessionStore(tmp_path / "s.db")
    assert log.native.path == tmp_path / "s.db" and isinstance(log.native.path, Path)
    directory = sessionlog_store.DirSessionStore(tmp_path / "d")
    assert directory.native.path == tmp_path / "d" and isinstance(directory.native.path, Path)
    assert sessionlog_store.MemorySessionStore().native.path is None


def test_save_load_roundtrip(store):
    store.setup()
    s = Session("alice", user="alice", cart=[1, 2, 3], blob=bytes(range(256)))
    store.save_session(s)
    loaded = store.load_session("alice")
    assert loaded is not s
    assert (loaded.id, loaded.user, loaded.cart, loaded.blob) == ("alice", "alice", [1, 2, 3], bytes(range(256)))
    store.setup()  # idempotent: never destroys sessions
    assert store.load_session("alice").user == "alice"


def test_load_missing_gives_default(store):
    assert store.load_session("nobody") is None
    marker = object()
    assert store.load_session("nobody", marker) is marker
    assert store.load_session("nobody", default=marker) is marker


def test_has_delete(store):
    store.save_session(Session("bob"))
    assert store.has_session("bob") is True
    assert store.has_session("carol") is False
    assert store.delete_session(Session("bob")) is True
    assert store.has_session("bob") is False
    assert store.load_session("bob") is None
    assert store.delete_session("bob") is False  # an id works too


def test_last_write_wins_and_versions(store):
    s = Session("v", n=1)
    assert session_version(s) == 0
    store.save_session(s)
    assert session_version(s) == 1
    s.n = 2
    store.save_session(s)
    assert session_version(s) == 2
    other = Session("v", n=3)  # never loaded: an unconditional save replaces
    store.save_session(other)
    loaded = store.load_session("v")
    assert loaded.n == 3 and session_version(loaded) == 3


def test_iter_sessions(store):
    for name in ["a", "b", "c"]:
        store.save_session(Session(name, name=name))
    got = {sid: s.name for sid, s in store.iter_sessions()}
    assert got == {"a": "a", "b": "b", "c": "c"}


def test_delete_old_sessions(store):
    store.save_session(Session("old1"))
    store.save_session(Session("old2"))
    result = store.delete_old_sessions(60)  # nothing is an hour old
    deleted = result[0] if isinstance(result, tuple) else result
    assert deleted == 0
    assert store.has_session("old1")
    result = store.delete_old_sessions(0)  # everything is 0 minutes old
    deleted = result[0] if isinstance(result, tuple) else result
    assert deleted == 2
    assert not store.has_session("old1") and not store.has_session("old2")


def test_dir_store_delete_old_returns_deleted_and_remaining(tmp_path):
    store = sessionlog_store.DirSessionStore(tmp_path / "d")
    store.save_session(Session("x"))
    assert store.delete_old_sessions(60) == (0, 1)
    assert store.delete_old_sessions(0) == (1, 0)


# -- conditional saves ------------------------------------------------------


def test_conditional_save_refuses_a_lost_update(store):
    store.save_session(Session("c", n=0))
    first = store.load_session("c")
    second = store.load_session("c")
    first.n += 1
    store.save_session(first, if_unchanged=True)
    second.n += 1
    with pytest.raises(sessionlog_store.ConflictError) as info:
        store.save_session(second, if_unchanged=True)
    assert info.value.expected == 1 and info.value.found == 2
    assert "changed concurrently" in str(info.value)
    assert store.load_session("c").n == 1  # nothing was written
    # Reload and retry succeeds.
    again = store.load_session("c")
    again.n += 1
    store.save_session(again, if_unchanged=True)
    assert store.load_session("c").n == 2


def test_conditional_create_only_if_absent(store):
    store.save_session(Session("taken"))
    with pytest.raises(sessionlog_store.ConflictError) as info:
        store.save_session(Session("taken", x=1), if_unchanged=True)
    assert info.value.expected == 0
    store.save_session(Session("free"), if_unchanged=True)
    assert store.has_session("free")


def test_conditional_save_after_delete_is_a_conflict(store):
    store.save_session(Session("gone"))
    s = store.load_session("gone")
    store.delete_session(s)
    with pytest.raises(sessionlog_store.ConflictError) as info:
        store.save_session(s, if_unchanged=True)
    assert info.value.found == 0
    assert not store.has_session("gone")


def test_conditional_option_makes_every_save_conditional(tmp_path):
    store = sessionlog_store.LogSessionStore(tmp_path / "s.db", conditional=True)
    store.save_session(Session("k", n=0))
    a, b = store.load_session("k"), store.load_session("k")
    store.save_session(a)
    with pytest.raises(sessionlog_store.ConflictError):
        store.save_session(b)
    store.save_session(b, if_unchanged=False)  # explicit override
    assert session_version(store.load_session("k")) == 3


def test_threads_lose_no_increment(tmp_path):
    store = sessionlog_store.LogSessionStore(tmp_path / "s.db")
    store.save_session(Session("counter", n=0))
    threads, per_thread = 8, 50

    def work() -> None:
        for _ in range(per_thread):
            while True:
                s = store.load_session("counter")
                s.n += 1
                try:
                    store.save_session(s, if_unchanged=True)
                    break
                except sessionlog_store.ConflictError:
                    continue

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert store.load_session("counter").n == threads * per_thread


# -- expiry --------------------------------------------------------------------


def test_expires_deadline(store):
    store.save_session(Session("later"), expires=dt.timedelta(hours=1))
    store.save_session(Session("past"), expires=time.time() - 10)
    assert store.has_session("later")
    assert store.load_session("past") is None and not store.has_session("past")
    assert "past" not in dict(store.iter_sessions())
    # The deadline sticks to the object: a later save keeps it.
    s = store.load_session("later")
    deadline = getattr(s, sessionlog_store._stores.EXPIRES_ATTR)
    assert abs(deadline / 1000 - (time.time() + 3600)) < 60
    store.save_session(s)
    assert getattr(store.load_session("later"), sessionlog_store._stores.EXPIRES_ATTR) == deadline
    aware = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    store.save_session(s, expires=aware)
    assert not store.has_session("later")


def test_max_idle(tmp_path):
    store = sessionlog_store.LogSessionStore(tmp_path / "s.db", max_idle=dt.timedelta(milliseconds=200))
    store.save_session(Session("idle"))
    wait_for(lambda: not store.has_session("idle"), timeout=10, what="the idle session to vanish")
    assert store.load_session("idle") is None


# -- bad input never crashes the interpreter ------------------------------


def test_not_a_store_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is a text file, not a session store\n" * 100)
    with pytest.raises(sessionlog_store.NotAStoreError) as info:
        sessionlog_store.LogSessionStore(path)
    assert "not a sessionlog store" in str(info.value)
    assert str(path) in str(info.value)
    assert path.read_bytes().startswith(b"this is a text file")  # untouched


def test_a_directory_others_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(sessionlog_store.UnsafeError) as info:
        sessionlog_store.LogSessionStore(shared / "s.db")
    assert "writable by every user" in str(info.value)
    assert not (shared / "s.db").exists()
    with pytest.raises(sessionlog_store.UnsafeError):
        sessionlog_store.DirSessionStore(shared)


def test_corrupt_store_and_repair(tmp_path):
    path = tmp_path / "s.db"
    store = sessionlog_store.LogSessionStore(path, sync="always")
    for i in range(20):
        store.save_session(Session(f"id{i}", blob=b"x" * 500))
    store.sync()
    del store
    raw = bytearray(path.read_bytes())
    at = raw.find(b"id5")
    assert at > 0
    raw[at + 100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(sessionlog_store.CorruptError) as info:
        sessionlog_store.LogSessionStore(path)
    assert "corrupt data at byte offset" in str(info.value)
    assert info.value.offset is not None and info.value.offset <= at
    repaired = sessionlog_store.LogSessionStore(path, repair=True)
    ids = {sid for sid, _ in repaired.iter_sessions()}
    assert "id5" not in ids and len(ids) == 19


def test_unpicklable_session(store):
    store.save_session(Session("u", ok=True))
    bad = Session("u", lock=threading.Lock(), secret="hunter2")
    with pytest.raises(sessionlog_store.SerializationError) as info:
        store.save_session(bad)
    assert isinstance(info.value, TypeError)
    assert "hunter2" not in str(info.value) and "could not be pickled" in str(info.value)
    assert isinstance(info.value.__cause__, Exception)
    assert store.load_session("u").ok is True  # unchanged


def test_undecodable_stored_bytes(store):
    store.native.save("raw", b"\x80\x05 not a pickle")
    with pytest.raises(sessionlog_store.SerializationError):
        store.load_session("raw")


@pytest.mark.parametrize("bad", ["", "a.b", "../etc/passwd", "x" * 129, "caf\u00e9", "a b", "nul\x00"])
def test_invalid_ids(store, bad):
    for call in (
        lambda: store.load_session(bad),
        lambda: store.has_session(bad),
        lambda: store.save_session(Session(bad)),
        lambda: store.delete_session(bad),
        lambda: store.touch_session(bad),
    ):
        with pytest.raises(sessionlog_store.InvalidIdError) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert "invalid session id" in str(info.value)


def test_non_str_ids_are_type_errors(store):
    with pytest.raises(TypeError):
        store.load_session(42)
    with pytest.raises(TypeError):
        store.save_session(Session(b"bytes-id"))
    with pytest.raises(TypeError):
        store.save_session(object())


def test_oversized_session(tmp_path):
    store = sessionlog_store.LogSessionStore(tmp_path / "s.db", max_session_size=1000)
    secret = "SECRET-" + "z" * 2000
    with pytest.raises(sessionlog_store.TooLargeError) as info:
        store.save_session(Session("big", payload=secret))
    err = info.value
    assert err.limit == 1000 and err.size > 1000
    assert str(err) == f"session data is {err.size} bytes, over this store's limit of 1000 bytes"
    assert "SECRET" not in str(err) and "big" not in str(err)
    assert not store.has_session("big")


@pytest.mark.parametrize(
    "options",
    [
        {"sync": "sometimes"},
        {"sync_interval": 0},
        {"max_idle": -1},
        {"max_idle": float("nan")},
        {"max_session_size": 0},
        {"max_session_size": 1 << 40},
        {"max_sessions_per_owner": 0},
        {"max_sessions_per_owner": -1},
    ],
)
def test_invalid_options(tmp_path, options):
    with pytest.raises(sessionlog_store.InvalidOptionError) as info:
        sessionlog_store.LogSessionStore(tmp_path / "s.db", **options)
    assert str(info.value).startswith("invalid option: ")


def test_io_error_is_an_oserror(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(sessionlog_store.IoError) as info:
        sessionlog_store.LogSessionStore(blocker / "sub" / "s.db")
    assert isinstance(info.value, OSError)
    assert info.value.errno is not None
    assert str(blocker) in str(info.value)


def test_reprs_carry_no_session_ids(tmp_path):
    store = sessionlog_store.LogSessionStore(tmp_path / "s.db")
    store.save_session(Session("secret-id-123"))
    assert "secret-id-123" not in repr(store)
    assert str(tmp_path / "s.db") in repr(store)


def test_generate_id():
    ids = {sessionlog_store.generate_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 22 and sessionlog_store.is_valid_id(i) for i in ids)
    assert not sessionlog_store.is_valid_id("a/b")


# -- the GIL is released ----------------------------------------------------


GIL_SCRIPT = r"""
import fcntl, sys, threading, time
import sessionlog_store

path = sys.argv[1]
sessionlog_store.LogSessionStore(path)            # create the store, then close it
lock = open(path + ".lock", "r+b")
fcntl.flock(lock, fcntl.LOCK_EX)            # hold the store's open lock
opened = []
t = threading.Thread(target=lambda: opened.append(sessionlog_store.LogSessionStore(path)))
t.start()

def in_flock():
    with open(f"/proc/self/task/{t.native_id}/syscall") as f:
        return f.read().split()[0] == "73"   # flock(2) on x86-64

# This loop runs Python code while the other thread waits inside the
# engine's open: only possible if the extension released the GIL.
deadline = time.monotonic() + 30
while not in_flock():
    assert time.monotonic() < deadline, "the opener never reached flock"
    time.sleep(0.01)
spins = sum(i for i in range(100000))
fcntl.flock(lock, fcntl.LOCK_UN)
t.join(30)
assert not t.is_alive() and len(opened) == 1
print("released", spins)
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="reads the x86-64 syscall number")
def test_gil_released_during_store_calls(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", GIL_SCRIPT, str(tmp_path / "s.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("released")


# -- several processes ---------------------------------------------------------


INCREMENT_SCRIPT = r"""
import sys, pickle
sys.path.insert(0, sys.argv[3])
import sessionlog_store
from test_session2 import Session
store = sessionlog_store.LogSessionStore(sys.argv[1])
for _ in range(int(sys.argv[2])):
    while True:
        s = store.load_session("shared")
        s.n += 1
        try:
            store.save_session(s, if_unchanged=True)
            break
        except sessionlog_store.ConflictError:
            pass
"""


def test_processes_lose_no_increment(tmp_path, processes):
    path = tmp_path / "s.db"
    store = sessionlog_store.LogSessionStore(path)
    store.save_session(Session("shared", n=0))
    here = str(Path(__file__).parent)
    procs = [
        processes.start([sys.executable, "-c", INCREMENT_SCRIPT, str(path), "200", here]) for _ in range(4)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    assert store.load_session("shared").n == 800


def test_fork_child_reopens_the_store(tmp_path):
    store = sessionlog_store.LogSessionStore(tmp_path / "s.db")
    store.save_session(Session("parent", n=1))
    pid = os.fork()
    if pid == 0:  # the child: use the inherited store object
        code = 1
        try:
            s = store.load_session("parent")
            store.save_session(Session("child", n=s.n + 1))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.load_session("child").n == 2
    store.save_session(Session("parent", n=3))
    assert store.load_session("parent").n == 3


def test_pickle_protocol_option(tmp_path):
    store = sessionlog_store.LogSessionStore(tmp_path / "s.db", pickle_protocol=2)
    store.save_session(Session("p", n=1))
    data = store.native.load("p")[0]
    assert data[:2] == b"\x80\x02"
    assert pickle.loads(data).n == 1


@pytest.mark.parametrize("kind", ["log", "dir"])
def test_hashed_ids_keep_every_id_out_of_the_store(kind, tmp_path):
    """With hashed_ids, neither the stored names nor the pickles hold the
    id, even where the session repeats it; loading puts it back."""
    store = make_store(kind, tmp_path, hashed_ids=True, sync="always")
    sid = sessionlog_store.generate_id()
    store.save_session(Session(sid, user="ada", seen=[sid, "other"]))
    loaded = store.load_session(sid)
    assert (loaded.id, loaded.user, loaded.seen) == (sid, "ada", [sid, "other"])
    assert session_version(loaded) == 1
    (digest, session), = list(store.iter_sessions())
    assert digest.startswith("h,") and session.id == digest and session.user == "ada"

    on_disk = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    names = " ".join(str(p) for p in tmp_path.rglob("*"))
    assert sid.encode() not in on_disk and sid not in names


def test_hashed_ids_read_a_store_written_without_them(tmp_path):
    path = tmp_path / "sessions.db"
    sessionlog_store.LogSessionStore(path).save_session(Session("before-hashing", n=1))
    store = sessionlog_store.LogSessionStore(path, hashed_ids=True)
    old = store.load_session("before-hashing")
    assert old.n == 1
    old.n = 2
    store.save_session(old)  # moves it under its digest
    assert store.load_session("before-hashing").n == 2
    assert [sid for sid, _ in store.iter_sessions()] != ["before-hashing"]
    assert not sessionlog_store.LogSessionStore(path).has_session("before-hashing")


# -- issue 28: owners ---------------------------------------------------------


@pytest.mark.parametrize(
    "kind,hashed", [("log", False), ("log", True), ("dir", False), ("dir", True), ("memory", False)]
)
def test_owners_list_log_out_everywhere_and_erase(kind, hashed, tmp_path):
    store = make_store(kind, tmp_path, hashed_ids=True) if hashed else make_store(kind, tmp_path)
    store.setup()
    for sid in ["laptop", "phone", "tablet"]:
        store.save_session(Session(sid, n=1), owner=42)  # an int primary key
    store.save_session(Session("other", n=1), owner="7")
    store.save_session(Session("anon", n=1))
    listed = store.sessions_of("42")
    assert len(listed) == 3 and all(isinstance(o, sessionlog_store.OwnedSession) for o in listed)
    assert listed[0].modified_ms >= listed[-1].modified_ms and listed[0].size > 0
    # the owner sticks to a loaded session and stays out of its pickle
    phone = store.load_session("phone")
    phone.n = 2
    store.save_session(phone)
    assert len(store.sessions_of(42)) == 3
    if not hashed:
        assert "_sessionlog_owner" not in pickle.loads(store.native.load("phone")[0]).__dict__
    # log out everywhere but here
    assert store.delete_sessions_of(42, keep="laptop") == 2
    assert store.has_session("laptop") and not store.has_session("phone")
    # owner=None clears it
    laptop = store.load_session("laptop")
    store.save_session(laptop, owner=None)
    assert store.sessions_of(42) == []
    assert store.erase_sessions_of("7") == 1 and not store.has_session("other")
    assert store.has_session("anon") and store.has_session("laptop")
    with pytest.raises(sessionlog_store.InvalidOwnerError) as e:
        store.save_session(Session("x"), owner="bad\nowner")
    assert "bad" not in str(e.value)



@pytest.mark.parametrize("kind", ["log", "dir", "memory"])
def test_max_sessions_per_owner_keeps_the_newest(kind, tmp_path):
    store = make_store(kind, tmp_path, max_sessions_per_owner=2)
    assert store.max_sessions_per_owner == 2
    for sid in ["first", "second", "third"]:
        store.save_session(Session(sid, n=1), owner=9)
        time.sleep(0.002)  # distinct modification times, so "oldest" is one session
    store.save_session(Session("other", n=1), owner=8)
    assert {o.id for o in store.sessions_of(9)} == {"second", "third"}
    assert not store.has_session("first") and store.has_session("other")
    with pytest.raises(TypeError):
        make_store(kind, tmp_path, max_sessions_per_owner=True)


# Saves `count` new sessions of owner "u" in a store capped at 3 per owner.
LOGIN_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[4])
import sessionlog_store
from test_session2 import Session
store = sessionlog_store.LogSessionStore(sys.argv[1], max_sessions_per_owner=3)
for i in range(int(sys.argv[3])):
    store.save_session(Session(f"{sys.argv[2]}-{i}", n=i), owner="u")
"""


def test_max_sessions_per_owner_holds_across_processes(tmp_path, processes):
    """Issue 28: two processes log one user in 300 times each at once; the
    store's limit (3) is decided under its write lock, in the same append
    as each save, so a third process watching the store all along never
    sees the user with more than 3 sessions, and 3 remain."""
    path = tmp_path / "s.db"
    watcher = sessionlog_store.LogSessionStore(path)
    here = str(Path(__file__).parent)
    procs = [
        processes.start([sys.executable, "-c", LOGIN_SCRIPT, str(path), name, "300", here])
        for name in ("a", "b")
    ]
    seen = []
    while any(p.poll() is None for p in procs):
        seen.append(len(watcher.sessions_of("u")))
    for p in procs:
        assert p.wait(timeout=120) == 0
    assert len(watcher.sessions_of("u")) == 3
    assert seen and max(seen) <= 3, f"the watcher saw {max(seen)} sessions of one user"
