#!/usr/bin/env bash
# The HTTP load test of issue 13: the same axum app and routes over each
# session store, loaded by wrk on loopback, one store after the other.
#   bash benches/web/run.sh            # DUR=10 CONNS=64 SESSIONS=1000 WRITE_PCT=20
# Needs the local Redis (bash .ci/servers.sh). Installs wrk if missing.
set -euo pipefail
cd "$(dirname "$0")"
DUR=${DUR:-10}; CONNS=${CONNS:-64}; SESSIONS=${SESSIONS:-1000}; WRITE_PCT=${WRITE_PCT:-20}
export WRITE_PCT
command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
cargo build --release -q
BIN=./target/release/sessionlog-web-bench
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
PORT=39170

wait_port() { # bounded poll until the server answers
    for _ in $(seq 300); do
        curl -s -o /dev/null "http://127.0.0.1:$1/counter" && return 0
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2; exit 1
}

# run NAME PROCS THREADS STORE [flags...]
run() {
    local name=$1 procs=$2 threads=$3 store=$4; shift 4
    PORT=$((PORT + 1))
    local ids="$WORK/$name.ids" path="$WORK/$name"
    local reuse=(); [ "$procs" -gt 1 ] && reuse=(--reuseport)
    [ "$procs" -eq 1 ] && [ "${REUSE1:-}" = 1 ] && reuse=(--reuseport)
    "$BIN" --store "$store" --addr "127.0.0.1:$PORT" --threads "$threads" --seed "$SESSIONS" \
        --ids "$ids" --path "$path" "${reuse[@]}" "$@" >/dev/null & PIDS+=($!)
    wait_port "$PORT"
    for _ in $(seq 2 "$procs"); do
        "$BIN" --store "$store" --addr "127.0.0.1:$PORT" --threads "$threads" \
            --path "$path" "${reuse[@]}" "$@" >/dev/null & PIDS+=($!)
    done
    [ "$procs" -gt 1 ] && sleep 1 # let the other processes bind (no port to poll per process)
    local r
    r=$(IDS="$ids" wrk -t2 -c"$CONNS" -d"${DUR}s" --latency -s load.lua "http://127.0.0.1:$PORT" | grep '^RESULT')
    read -r _ rps p50 p99 status io <<<"$r"
    printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$procs x $threads" "$rps" "$p50" "$p99" "$status/$io"
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    PIDS=()
}

echo "wrk -t2 -c$CONNS -d${DUR}s, $SESSIONS sessions, $WRITE_PCT% POST /counter, rest GET /counter; $(nproc) cores"
echo
echo '| store | processes x threads | req/s | p50 ms | p99 ms | non-2xx/io errors |'
echo '| --- | --- | ---: | ---: | ---: | ---: |'
run "tower-sessions MemoryStore"            1 2 ts-memory
run "tower-sessions-sqlx SqliteStore"       1 2 ts-sqlite
run "tower-sessions-redis RedisStore"       1 2 ts-redis
run "TowerStore<LogStore> interval"         1 2 log
run "TowerStore<LogStore> interval, always-save" 1 2 log --always-save
run "TowerStore<LogStore> interval, blocking pool" 1 2 log-pool
run "TowerStore<LogStore> SyncPolicy::Always (pool)" 1 2 log-always
run "TowerStore<RedisStore> (pool)"         1 2 redis
run "TowerStore<RedisStore> inline"         1 2 redis-inline
REUSE1=1 run "TowerStore<LogStore> 1 process"  1 1 log
run "TowerStore<LogStore> 4 processes"      4 1 log
