#!/usr/bin/env bash
# Makes sure the three servers the server-backend tests need are up:
# PostgreSQL, Redis and MariaDB on 127.0.0.1. Installs any that is missing
# from Debian's packages when run as root (or says exactly what to install
# otherwise), starts any that does not answer, waits (bounded) until each
# answers, and fails loudly otherwise. Also creates the `test` databases
# and raises MariaDB's max_allowed_packet so that 16 MiB sessions fit.
# Idempotent; never drops data. With all three answering it only checks.
set -euo pipefail

WAIT_SECS=${WAIT_SECS:-30}

# The commands this script and the tests use, each with the Debian package
# that has it: the servers and their clients, and openssl for the TLS
# tests' certificates.
PACKAGES=(
    "pg_ctlcluster:postgresql" "pg_isready:postgresql" "psql:postgresql" "createdb:postgresql"
    "redis-server:redis-server" "redis-cli:redis-server"
    "mariadb:mariadb-server" "/usr/sbin/mariadbd:mariadb-server" "mariadb-install-db:mariadb-server"
    "openssl:openssl"
)

# missing_packages: the packages of the commands above that are not there,
# once each, in order.
missing_packages() {
    local entry cmd pkg seen=" "
    for entry in "${PACKAGES[@]}"; do
        cmd=${entry%%:*}
        pkg=${entry#*:}
        if ! command -v "$cmd" >/dev/null 2>&1 && [[ $seen != *" $pkg "* ]]; then
            seen+="$pkg "
            printf '%s\n' "$pkg"
        fi
    done
}

# install_missing: as root, `apt-get install`s what is missing and sets the
# new servers up as the tests expect them (SERVERS.md): PostgreSQL trusts
# local TCP connections, MariaDB's root has no password over TCP. Not
# root: says what to install and fails. Nothing missing: does nothing.
install_missing() {
    local -a missing
    mapfile -t missing < <(missing_packages)
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "servers.sh: ERROR: missing: ${missing[*]} (Debian packages). As root, run:" >&2
        echo "    apt-get update && apt-get install -y ${missing[*]}" >&2
        echo "then this script again (it sets the new servers up as the tests expect; SERVERS.md)." >&2
        exit 1
    fi
    echo "servers.sh: installing ${missing[*]} (apt-get)"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    local still
    still=$(missing_packages | tr '\n' ' ')
    if [ -n "$still" ]; then
        echo "servers.sh: ERROR: still missing after apt-get install: $still" >&2
        exit 1
    fi
    case " ${missing[*]} " in *" postgresql "*) setup_new_pg ;; esac
    case " ${missing[*]} " in *" mariadb-server "*) setup_new_maria ;; esac
}

# A new cluster: local TCP connections trusted (the tests connect as
# `postgres` without a password), ahead of Debian's scram-sha-256 lines.
setup_new_pg() {
    local version hba
    version=$(ls /etc/postgresql)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
        sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    fi
    # Started below; a reload if the package's scripts started it already.
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null || true
}

# A new MariaDB: `root` from 127.0.0.1 without a password (the tests'
# URL), made over the Unix socket where Debian's root logs in as root.
setup_new_maria() {
    ensure MariaDB maria_socket_ok start_maria
    wait_for "MariaDB (socket)" maria_socket_ok
    mariadb -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
}
maria_socket_ok() { mariadb -uroot -e 'select 1' >/dev/null 2>&1; }

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
    # Its socket's directory, which only the service scripts make.
    install -d -o mysql -g mysql /run/mysqld 2>/dev/null || true
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

# The fast path: all three answer, nothing to install or start.
if ! { pg_ok && redis_ok && maria_ok; } 2>/dev/null; then
    install_missing
fi

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
