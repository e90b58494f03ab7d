"""Django requests/s under gunicorn (4 sync workers) for each session
backend: the same app (tests/apps/djapp), the same load generator (wrk,
with a Lua script that sends one of 200 logged-in session cookies at
random), the same endpoint (/count/: load the session, change it, save it).

    python http_bench.py [--duration 10] [--connections 16] [BACKEND ...]

BACKEND: sessionlog | db-sqlite | db-postgres | redis | file (default: all).
Loopback only; every server started is stopped; the PostgreSQL database
and the Redis keys it creates are removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
APPS = HERE.parent / "tests" / "apps"
PG_DB = "sessionlog_bench"
REDIS_URL = "redis://127.0.0.1:6379/9"

BACKENDS = {
    "sessionlog": {"DJAPP_SESSION_ENGINE": "sessionlog_store.django"},
    "db-sqlite": {"DJAPP_SESSION_ENGINE": "django.contrib.sessions.backends.db", "DJAPP_DB": "sqlite"},
    "db-postgres": {"DJAPP_SESSION_ENGINE": "django.contrib.sessions.backends.db", "DJAPP_DB": "postgres"},
    "redis": {"DJAPP_SESSION_ENGINE": "django.contrib.sessions.backends.cache", "DJAPP_REDIS": REDIS_URL},
    "file": {"DJAPP_SESSION_ENGINE": "django.contrib.sessions.backends.file"},
}

LUA = """
local cookies = {}
for line in io.lines(os.getenv("BENCH_COOKIES")) do cookies[#cookies + 1] = line end
request = function()
  return wrk.format("GET", "/count/", {["Cookie"] = cookies[math.random(#cookies)]})
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited")
        try:
            if requests.get(base + "/whoami/", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gunicorn did not become ready")


def pg_database(create: bool) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DB}")
        if create:
            conn.execute(f"CREATE DATABASE {PG_DB}")


def redis_cleanup() -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter("slbench*"))
    if keys:
        r.delete(*keys)


def run_backend(name: str, args, tmp: Path) -> dict:
    env = dict(os.environ)
    env.update(BACKENDS[name])
    env.update(
        PYTHONPATH=str(APPS),
        DJANGO_SETTINGS_MODULE="djapp.settings",
        DJAPP_SESSIONLOG_PATH=str(tmp / "sessions.db"),
        DJAPP_SQLITE=str(tmp / "db.sqlite3"),
        DJAPP_SESSION_FILE_PATH=str(tmp / "files"),
        DJAPP_REDIS_PREFIX="slbench",
    )
    (tmp / "files").mkdir(exist_ok=True)
    if name == "db-postgres":
        pg_database(create=True)
    if name.startswith("db-"):
        subprocess.run([sys.executable, "-m", "django", "migrate", "sessions", "-v", "0"], env=env, check=True,
                       cwd=APPS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp / f"gunicorn-{name}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "4", "--bind", f"127.0.0.1:{port}", "--chdir", str(APPS),
         "djapp.wsgi:application"],
        env=env, stdout=log, stderr=log, start_new_session=True,
    )
    try:
        wait_ready(base, proc)
        cookies = []
        for i in range(200):
            c = requests.Session()
            r = c.get(f"{base}/login/?user=user{i}", timeout=30)
            r.raise_for_status()
            cookies.append("; ".join(f"{k}={v}" for k, v in c.cookies.items()))
        (tmp / "cookies.txt").write_text("\n".join(cookies) + "\n")
        (tmp / "bench.lua").write_text(LUA)
        wrk_env = dict(os.environ, BENCH_COOKIES=str(tmp / "cookies.txt"))
        out = subprocess.run(
            ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s", "--latency",
             "-s", str(tmp / "bench.lua"), base + "/count/"],
            env=wrk_env, capture_output=True, text=True, timeout=args.duration + 60, check=True,
        ).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        sock_errors = re.search(r"Socket errors: (.*)", out)
        p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)
        p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
        return {
            "backend": name,
            "rps": rps,
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sock_errors.group(1) if sock_errors else "",
            "p50": p50,
            "p99": p99,
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if name == "db-postgres":
            pg_database(create=False)
        if name == "redis":
            redis_cleanup()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("backends", nargs="*", default=list(BACKENDS))
    args = ap.parse_args()
    results = []
    for name in args.backends:
        tmp = Path(tempfile.mkdtemp(prefix=f"sessionlog-http-{name}-"))
        try:
            res = run_backend(name, args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(res, flush=True)
        results.append(res)
    print()
    print("| backend | requests/s | non-2xx | p50 | p99 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['backend']} | {r['rps']:.0f} | {r['non2xx']} | {r['p50']} | {r['p99']} |")


if __name__ == "__main__":
    main()
