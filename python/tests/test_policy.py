"""Guards the store's recorded policy and quotas from Python (issue 27, points 2 and
7): a quota refuses a save with QuotaExceededError and writes nothing, and
an open asking for another idle limit than the store records is refused."""

import pytest

from sessionlog_store import DirSessionStore, InvalidOptionError, LogSessionStore, QuotaExceededError


class Session:
    def __init__(self, id, n):
        self.id = id
        self.n = n


def test_a_save_past_the_quota_raises_and_writes_nothing(tmp_path):
    store = LogSessionStore(tmp_path / "s.db", max_sessions=2, background=False)
    store.save_session(Session("alice", 1))
    store.save_session(Session("bob", 2))
    with pytest.raises(QuotaExceededError) as e:
        store.save_session(Session("carol", 3))
    assert (e.value.limit, e.value.used) == (2, 3)
    assert store.load_session("carol") is None
    assert store.delete_session("alice")
    store.save_session(Session("carol", 3))
    assert store.load_session("carol").n == 3


def test_another_idle_limit_than_the_stores_is_refused(tmp_path):
    path = tmp_path / "s.db"
    LogSessionStore(path, max_idle=3600, background=False)
    with pytest.raises(InvalidOptionError, match="records 3600000 ms"):
        LogSessionStore(path, max_idle=60, background=False)
    LogSessionStore(path, background=False)


def test_a_dir_store_quota_raises_and_writes_nothing(tmp_path):
    store = DirSessionStore(tmp_path / "sessions", max_sessions=2)
    store.save_session(Session("alice", 1))
    store.save_session(Session("bob", 2))
    with pytest.raises(QuotaExceededError) as e:
        store.save_session(Session("carol", 3))
    assert (e.value.limit, e.value.used) == (2, 3)
    assert store.load_session("carol") is None
    assert store.delete_session("alice")
    store.save_session(Session("carol", 3))
    assert store.load_session("carol").n == 3
