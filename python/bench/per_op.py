"""Per-operation cost of Django session backends from Python (one backend
per process: `python per_op.py BACKEND`), printed as one JSON line.

BACKEND: sessionlog | redis | db-sqlite | db-postgres | file | session2 |
native (session2: sessionlog's LogSessionStore with a pickled object;
native: the extension's bytes-in, bytes-out Store, no serialisation).

Each operation is timed over BENCH_ROUNDS rounds (at most 3 s each) on 200 sessions of a
typical logged-in payload (about 300 bytes of JSON):
- load: a new SessionStore(key) and its load()
- save: change one key of a loaded session and save()
- load+save: a request that loads, changes and saves
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import time

BACKEND = sys.argv[1]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3000"))
SESSIONS = 200
TMP = tempfile.mkdtemp(prefix="sessionlog-perop-")
atexit.register(shutil.rmtree, TMP, ignore_errors=True)

PAYLOAD = {
    "_auth_user_id": "4242",
    "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
    "_auth_user_hash": "f" * 64,
    "cart": [{"sku": f"SKU-{i}", "qty": i} for i in range(5)],
    "count": 0,
}


def configure() -> None:
    from django.conf import settings

    engine = {
        "sessionlog": "sessionlog_store.django",
        "redis": "django.contrib.sessions.backends.cache",
        "db-sqlite": "django.contrib.sessions.backends.db",
        "db-postgres": "django.contrib.sessions.backends.db",
        "file": "django.contrib.sessions.backends.file",
        "session2": "sessionlog_store.django",
        "native": "sessionlog_store.django",
    }[BACKEND]
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(TMP, "db.sqlite3")}}
    if BACKEND == "db-postgres":
        databases = {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": os.environ.get("BENCH_PG_DB", "sessionlog_bench"),
                "USER": "postgres",
                "HOST": "127.0.0.1",
                "PORT": "5432",
                "CONN_MAX_AGE": None,
            }
        }
    settings.configure(
        SECRET_KEY="bench-secret-key-0123456789abcdefghijklmnop",
        INSTALLED_APPS=["django.contrib.sessions"],
        SESSION_ENGINE=engine,
        SESSIONLOG_PATH=os.path.join(TMP, "sessions.db"),
        SESSION_FILE_PATH=TMP,
        DATABASES=databases,
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/9"),
                "KEY_PREFIX": "slbench",
            }
        },
        USE_TZ=True,
    )
    import django

    django.setup()
    if BACKEND.startswith("db-"):
        from django.core.management import call_command

        call_command("migrate", "sessions", verbosity=0)


def timed(fn, rounds: int, budget: float = 3.0) -> float:
    """Mean µs per call over `rounds` calls, or as many as fit in `budget`
    seconds (at least 20) for the slow backends."""
    start = time.perf_counter()
    done = 0
    while done < rounds:
        fn(done)
        done += 1
        if done >= 20 and time.perf_counter() - start > budget:
            break
    return (time.perf_counter() - start) / done * 1e6


def django_ops() -> dict:
    from importlib import import_module

    from django.conf import settings

    Store = import_module(settings.SESSION_ENGINE).SessionStore
    keys = []
    for _ in range(SESSIONS):
        s = Store()
        s.update(PAYLOAD)
        s.save()
        keys.append(s.session_key)
    loaded = [Store(k) for k in keys]
    for s in loaded:
        s.load()
        s._session_cache = s.load()

    def load(i: int) -> None:
        Store(keys[i % SESSIONS]).load()

    def save(i: int) -> None:
        s = loaded[i % SESSIONS]
        s["count"] = i
        s.save()

    def load_save(i: int) -> None:
        s = Store(keys[i % SESSIONS])
        s["count"] = s.get("count", 0) + 1
        s.save()

    for fn in (load, save, load_save):  # warm up
        timed(fn, 100)
    result = {"load": timed(load, ROUNDS), "save": timed(save, ROUNDS), "load+save": timed(load_save, ROUNDS)}
    for k in keys:
        Store().delete(k)
    return result


class Session:
    """A session2-style session object."""

    def __init__(self, id: str) -> None:
        self.id = id
        self.__dict__.update(PAYLOAD)


def session2_ops() -> dict:
    import sessionlog_store

    store = sessionlog_store.LogSessionStore(os.path.join(TMP, "session2.db"))
    ids = [sessionlog_store.generate_id() for _ in range(SESSIONS)]
    for sid in ids:
        store.save_session(Session(sid))
    loaded = [store.load_session(sid) for sid in ids]

    def load(i: int) -> None:
        store.load_session(ids[i % SESSIONS])

    def save(i: int) -> None:
        s = loaded[i % SESSIONS]
        s.count = i
        store.save_session(s)

    def load_save(i: int) -> None:
        s = store.load_session(ids[i % SESSIONS])
        s.count += 1
        store.save_session(s, if_unchanged=True)

    for fn in (load, save, load_save):
        timed(fn, 100)
    return {"load": timed(load, ROUNDS), "save": timed(save, ROUNDS), "load+save": timed(load_save, ROUNDS)}


def native_ops() -> dict:
    import sessionlog_store

    store = sessionlog_store.LogSessionStore(os.path.join(TMP, "native.db")).native
    ids = [sessionlog_store.generate_id() for _ in range(SESSIONS)]
    data = json.dumps(PAYLOAD).encode()
    for sid in ids:
        store.save(sid, data)

    def load(i: int) -> None:
        store.load(ids[i % SESSIONS])

    def save(i: int) -> None:
        store.save(ids[i % SESSIONS], data)

    def load_save(i: int) -> None:
        sid = ids[i % SESSIONS]
        _data, version, _e, _m = store.load(sid)
        store.save(sid, data, None, version, True)

    for fn in (load, save, load_save):
        timed(fn, 100)
    return {"load": timed(load, ROUNDS), "save": timed(save, ROUNDS), "load+save": timed(load_save, ROUNDS)}


if __name__ == "__main__":
    configure()
    ops = {"session2": session2_ops, "native": native_ops}.get(BACKEND, django_ops)
    result = ops()
    print(json.dumps({"backend": BACKEND, **{k: round(v, 1) for k, v in result.items()}}))
