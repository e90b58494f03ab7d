#!/usr/bin/env bash
# The package's benchmarks (not part of CI; a few minutes; loopback only):
# per-operation cost from Python, then Django requests/s under gunicorn,
# for sessionlog_store.django and Django's own db (SQLite, PostgreSQL), cache
# (Redis) and file backends. Needs the local PostgreSQL (127.0.0.1:5432,
# trust) and Redis (127.0.0.1:6379), and the virtual environment made by
# ../ci.sh (or SESSIONLOG_VENV). Installs wrk from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${SESSIONLOG_VENV:-$(cd .. && pwd)/.venv}"
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "no virtual environment at $VENV: run python/ci.sh first" >&2; exit 1; }
"$PY" -m pip install -q -r requirements-bench.txt
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

echo "== per operation (µs), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
"$PY" - <<'PY'
import psycopg
with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as c:
    c.execute("DROP DATABASE IF EXISTS sessionlog_bench")
    c.execute("CREATE DATABASE sessionlog_bench")
PY
for b in native session2 sessionlog redis file db-sqlite db-postgres; do
    "$PY" per_op.py "$b"
done
"$PY" - <<'PY'
import psycopg
with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as c:
    c.execute("DROP DATABASE IF EXISTS sessionlog_bench")
PY

echo "== Django under gunicorn (4 workers), wrk, /count/ (load + change + save)"
"$PY" http_bench.py "$@"
