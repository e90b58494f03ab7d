#!/usr/bin/env bash
# Makes sure the three servers the server-backend tests need are up:
# PostgreSQL, Redis and MariaDB on 127.0.0.1. Starts any that does not
# answer, waits (bounded) until each answers, and fails loudly otherwise.
# Also creates the `test` databases and raises MariaDB's max_allowed_packet
# so that 16 MiB sessions fit. Idempotent; never drops data.
set -euo pipefail

WAIT_SECS=${WAIT_SECS:-30}

pg_ok() { pg_isready -q -h 127.0.0.1; }
redis_ok() { [ "$(redis-cli -h 127.0.0.1 ping 2>/dev/null)" = PONG ]; }
maria_ok() { mariadb -uroot -h127.0.0.1 -e 'select 1' >/dev/null 2>&1; }

start_pg() {
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
}
start_redis() {
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
}
start_maria() {
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
}

# wait_for NAME CHECK: polls CHECK once a second for up to WAIT_SECS.
wait_for() {
    local name=$1 check=$2 i
    for ((i = 0; i < WAIT_SECS; i++)); do
        if "$check"; then
            echo "servers.sh: $name answers"
            return 0
        fi
        sleep 1
    done
    echo "servers.sh: ERROR: $name did not answer within ${WAIT_SECS}s" >&2
    return 1
}

ensure() {
    local name=$1 check=$2 start=$3
    if ! "$check"; then
        echo "servers.sh: $name does not answer; starting it"
        "$start" || echo "servers.sh: starting $name returned $? (waiting anyway)" >&2
    fi
}

ensure PostgreSQL pg_ok start_pg
ensure Redis redis_ok start_redis
ensure MariaDB maria_ok start_maria

failed=0
wait_for PostgreSQL pg_ok || failed=1
wait_for Redis redis_ok || failed=1
wait_for MariaDB maria_ok || failed=1
if [ "$failed" -ne 0 ]; then
    echo "servers.sh: FAILED: a server is down; see SERVERS.md for how to start it by hand" >&2
    exit 1
fi

# The databases the tests' default URLs name.
if [ "$(psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname = 'test'")" != 1 ]; then
    createdb -h 127.0.0.1 -U postgres test
fi
mariadb -uroot -h127.0.0.1 -e 'CREATE DATABASE IF NOT EXISTS test'
# 16 MiB of session data plus the statement must fit in one packet.
mariadb -uroot -h127.0.0.1 -e 'SET GLOBAL max_allowed_packet = 67108864'

pg_isready -h 127.0.0.1
redis-cli -h 127.0.0.1 ping
mariadb -uroot -h127.0.0.1 -e 'select 1' test >/dev/null
echo "servers.sh: all three servers answer"
