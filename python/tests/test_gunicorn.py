"""A real pre-fork deployment: the Django app and the Flask app under
gunicorn with 4 workers on one store, driven over HTTP with cookie jars."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest
import requests

import sessionlog_store

from conftest import wait_for

APPS = Path(__file__).resolve().parent / "apps"
WORKERS = 4
COOKIE = {"django": "sessionid", "flask": "session"}
# What a request whose session save lost a race answers.
CONFLICT_STATUS = {"django": 400, "flask": 500}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_pids(master: int) -> Set[int]:
    try:
        with open(f"/proc/{master}/task/{master}/children") as f:
            return {int(p) for p in f.read().split()}
    except FileNotFoundError:
        return set()


class Server:
    def __init__(self, kind: str, proc, port: int) -> None:
        self.kind = kind
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"
        self.cookie = COOKIE[kind]

    def get(self, client: requests.Session, path: str) -> requests.Response:
        return client.get(self.base + path, timeout=30)

    def workers(self) -> Set[int]:
        return worker_pids(self.proc.pid)


def start_server(
    kind: str, tmp_path: Path, processes, conditional: bool, max_sessions_per_user: Optional[int] = None
) -> Server:
    store = str(tmp_path / f"{kind}.db")
    env = dict(os.environ)
    limit = "" if max_sessions_per_user is None else str(max_sessions_per_user)
    env.update(
        DJAPP_SESSIONLOG_PATH=store,
        DJAPP_CONDITIONAL="1" if conditional else "",
        DJAPP_MAX_SESSIONS_PER_USER=limit,
        FLASKAPP_SESSIONLOG_PATH=store,
        FLASKAPP_CONDITIONAL="1" if conditional else "",
        FLASKAPP_MAX_SESSIONS_PER_USER=limit,
        PYTHONPATH=str(APPS),
    )
    app = "djapp.wsgi:application" if kind == "django" else "flaskapp:app"
    for _attempt in range(3):
        port = free_port()
        log = open(tmp_path / f"gunicorn-{port}.log", "wb")
        proc = processes.start(
            [sys.executable, "-m", "gunicorn", "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}",
             "--chdir", str(APPS), "--graceful-timeout", "5", app],
            env=env, stdout=log, stderr=log,
        )
        server = Server(kind, proc, port)

        def ready() -> bool:
            if proc.poll() is not None:
                return True
            try:
                ok = requests.get(server.base + "/whoami/", timeout=5).status_code == 200
            except requests.ConnectionError:
                return False
            return ok and len(server.workers()) == WORKERS

        wait_for(ready, timeout=60, what="gunicorn to serve with 4 workers")
        if proc.poll() is None:
            return server
    raise AssertionError("gunicorn did not start: " + (tmp_path / f"gunicorn-{port}.log").read_text())


@pytest.fixture(params=["django", "flask"])
def kind(request) -> str:
    return request.param


def clone(server: Server, client: requests.Session) -> requests.Session:
    """Another client holding the same session cookie."""
    other = requests.Session()
    other.cookies.set(server.cookie, client.cookies.get(server.cookie))
    return other


def spread(server: Server, client: requests.Session, path: str, want: Set[int], timeout: float = 60) -> List[dict]:
    """Sends concurrent bursts of `path` with `client`'s cookie until every
    pid in `want` has answered; returns every reply."""
    replies: List[dict] = []
    lock = threading.Lock()

    def burst() -> None:
        c = clone(server, client)
        for _ in range(10):
            r = server.get(c, path)
            assert r.status_code == 200, r.text
            with lock:
                replies.append(r.json())

    def seen_all() -> bool:
        threads = [threading.Thread(target=burst) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return want <= {r["pid"] for r in replies}

    wait_for(seen_all, timeout=timeout, what=f"replies from all of {sorted(want)}")
    return replies


def test_login_is_seen_by_every_worker_and_logout_everywhere(kind, tmp_path, processes):
    server = start_server(kind, tmp_path, processes, conditional=False)
    workers = server.workers()
    client = requests.Session()
    r = server.get(client, "/login/?user=alice")
    assert r.status_code == 200 and r.json()["user"] == "alice"
    logged_in = clone(server, client)
    replies = spread(server, client, "/whoami/", workers)
    assert {r["pid"] for r in replies} == workers
    assert all(r["user"] == "alice" for r in replies)
    r = server.get(client, "/logout/")
    assert r.status_code == 200 and r.json()["user"] is None
    assert client.cookies.get(server.cookie) is None  # the cookie was deleted
    # The old cookie, replayed on every worker, is logged out.
    replies = spread(server, logged_in, "/whoami/", workers)
    assert all(r["user"] is None for r in replies)


def test_no_lost_increments_with_conditional_saves(kind, tmp_path, processes):
    server = start_server(kind, tmp_path, processes, conditional=True)
    client = requests.Session()
    assert server.get(client, "/login/?user=bob").status_code == 200
    threads, per_thread = 8, 25
    acked: Dict[str, int] = {"ok": 0, "conflicts": 0}
    pids: Set[int] = set()
    lock = threading.Lock()

    def work() -> None:
        c = clone(server, client)
        done = 0
        while done < per_thread:
            r = server.get(c, "/count/")
            if r.status_code == 200:
                done += 1
                with lock:
                    acked["ok"] += 1
                    pids.add(r.json()["pid"])
            else:
                assert r.status_code == CONFLICT_STATUS[kind], r.text
                with lock:
                    acked["conflicts"] += 1

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    final = server.get(client, "/whoami/").json()
    assert acked["ok"] == threads * per_thread
    assert final["count"] == threads * per_thread, acked
    assert final["user"] == "bob"
    assert len(pids) >= 2  # several workers took part
    print(f"{kind}: {acked['ok']} increments acknowledged, {acked['conflicts']} refused and retried, "
          f"served by {len(pids)} workers")


def test_sigkill_of_workers_loses_no_acknowledged_session(kind, tmp_path, processes):
    server = start_server(kind, tmp_path, processes, conditional=False)
    client = requests.Session()
    assert server.get(client, "/login/?user=carol").json()["user"] == "carol"
    for i in range(1, 6):
        r = server.get(client, "/count/")
        assert r.status_code == 200 and r.json()["count"] == i
    last_pid = r.json()["pid"]
    old = server.workers()
    assert last_pid in old
    # Kill the worker that acknowledged the last save first, then the rest.
    for pid in [last_pid] + sorted(old - {last_pid}):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(server.workers() - old) == WORKERS, timeout=60, what="gunicorn to respawn the workers")

    def served_by_new_worker():
        try:
            r = server.get(client, "/whoami/")
        except requests.ConnectionError:
            return None
        return r.json() if r.status_code == 200 and r.json()["pid"] not in old else None

    reply = wait_for(served_by_new_worker, timeout=60, what="a respawned worker to answer")
    assert reply["user"] == "carol" and reply["count"] == 5
    assert server.get(client, "/count/").json()["count"] == 6


def test_django_one_call_logs_out_every_other_browser_on_every_worker(tmp_path, processes):
    """Issue 28: two browsers of one user on 4 gunicorn workers; one
    request logs the other out, whichever worker serves either."""
    server = start_server("django", tmp_path, processes, conditional=False)
    workers = server.workers()
    here, there = requests.Session(), requests.Session()
    assert server.get(here, "/auth-login/?user=42").json()["user"] == "42"
    assert server.get(there, "/auth-login/?user=42").json()["user"] == "42"
    assert all(r["user"] == "42" for r in spread(server, there, "/whoami/", workers))
    r = server.get(here, "/logout-others/").json()
    assert r["deleted"] == 1
    assert all(r["user"] is None for r in spread(server, there, "/whoami/", workers))
    assert all(r["user"] == "42" for r in spread(server, here, "/whoami/", workers))


def test_the_per_user_limit_holds_across_workers(kind, tmp_path, processes):
    """Issue 28: with SESSIONLOG_MAX_SESSIONS_PER_USER = 2, 8 browsers log
    one user in 5 times each, all at once, on 4 workers. The limit is the
    store's own, decided under its write lock in the same append as the
    save, so this process, watching the store all along, never sees the
    user with more than 2 sessions; 2 remain, and exactly the 2 browsers
    holding them are logged in."""
    limit = 2
    server = start_server(kind, tmp_path, processes, conditional=False, max_sessions_per_user=limit)
    login = "/auth-login/?user=77" if kind == "django" else "/login/?user=77"
    watcher = sessionlog_store.LogSessionStore(tmp_path / f"{kind}.db")
    clients: List[requests.Session] = []
    pids: Set[int] = set()
    lock = threading.Lock()

    def log_in() -> None:
        for _ in range(5):
            c = requests.Session()
            r = server.get(c, login)
            assert r.status_code == 200 and r.json()["user"] == "77", r.text
            with lock:
                clients.append(c)
                pids.add(r.json()["pid"])

    # A burst is served by whichever workers accept its connections: one
    # worker may take all of them. Bursts go on (at most 10) until at least
    # two workers have logged the user in; the limit must hold throughout.
    seen = []
    bursts = 0
    while bursts < 10 and len(pids) < 2:
        bursts += 1
        threads = [threading.Thread(target=log_in) for _ in range(8)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            seen.append(len(watcher.sessions_of("77")))
        for t in threads:
            t.join()
    assert len(clients) == 40 * bursts and len(pids) >= 2, f"{len(pids)} worker(s) in {bursts} bursts"
    assert seen and max(seen) <= limit, f"the watcher saw {max(seen)} sessions of one user"
    assert len(watcher.sessions_of("77")) == limit
    still_in = [c for c in clients if server.get(c, "/whoami/").json()["user"] == "77"]
    assert len(still_in) == limit
