#!/usr/bin/env bash
# Runs the web frameworks' own test suites, unchanged, against sessionlog's
# adapters on every backend:
#   - tower-sessions 0.15.0: the `route_tests!` of tests/integration-tests.rs
#     and the middleware tests of src/service.rs (TowerStore, feature
#     `tower-sessions`);
#   - tower-sessions 0.14.0: the same two suites (feature `tower-sessions-014`);
#   - axum-login 0.18.0: its unit tests (the registry's crate) and its
#     integration test, which drives the example apps `example-sqlite` and
#     `example-permissions` over HTTP (the project's git tag v0.18.0:
#     AXUM_LOGIN_GIT, default its GitHub repository);
#   - actix-session 0.11.0: `test_helpers::acceptance_test_suite` (ActixStore).
# Backends: log, hashed (HashedIds<LogStore>), dir, memory, postgres, mysql,
# redis (the servers of .ci/servers.sh must answer).
#
# How: each upstream crate, as the registry ships it, is copied into a
# temporary directory (nothing is copied into this repository, nothing is
# built inside it except under target/upstream). In the copy only the
# store the tests construct is replaced:
#   - tower-sessions: the `MemoryStore` the tests import (from
#     tower-sessions-memory-store or tower_sessions) becomes
#     `sessionlog_upstream_harness::tower{,014}::MemoryStore`, a TowerStore
#     over the backend named by SESSIONLOG_UPSTREAM_BACKEND
#     (.ci/upstream/harness). The tests' code is otherwise untouched.
#   - axum-login: its tests' and example apps' session stores (tower-sessions
#     0.14's MemoryStore, tower-sessions-sqlx-store's SqliteStore) become
#     `sessionlog_upstream_harness::tower014::MemoryStore`; the SQLite user
#     database of the apps and tests stays.
#   - actix-session: .ci/upstream/actix_acceptance.rs is appended to the
#     copy's src/lib.rs as a `#[path]` module; it calls the crate's own
#     `acceptance_test_suite` with an ActixStore (see the file for why a
#     trait bridge is needed).
# Each `sed` is checked: a pattern that no longer matches fails the script.
#
# A sanity check that the suites really run on sessionlog's adapters:
# BACKENDS=bogus makes every test that opens a store fail (the harness
# panics on an unknown backend); only axum-login's 9 backend tests, which use
# no session store, still pass.
#
# Cost: the first run builds each upstream crate's dev-dependencies (about
# 10 minutes on 2 busy cores, under target/upstream); then the whole matrix
# runs in about 10 minutes, most of it the 20 repeats and axum-login's apps
# (each started with `cargo run`). A bounded subset for CI:
#   BACKENDS="log memory postgres" RUNS=5 bash .ci/upstream.sh tower015 repeat actix
#
# Usage: bash .ci/upstream.sh [suite...]   (suites: tower015 tower014
#        axum-login axum-login-examples actix repeat; default all)
# Env:   BACKENDS="log hashed ..." (default all seven), RUNS=20 (repeats of
#        the timing-sensitive always-save tests per backend).
set -euo pipefail
shopt -s inherit_errexit  # a failed patch inside $(...) stops the script

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=$ROOT/.ci/upstream/harness
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sessionlog-upstream.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export CARGO_TARGET_DIR=${UPSTREAM_TARGET:-$ROOT/target/upstream}
BACKENDS=${BACKENDS:-"log hashed dir memory postgres mysql redis"}
RUNS=${RUNS:-20}
SUITES=${*:-"tower015 tower014 axum-login axum-login-examples actix repeat"}
AXUM_LOGIN_GIT=${AXUM_LOGIN_GIT:-https://github.com/maxcountryman/axum-login}
SUMMARY=$WORK/summary

# source NAME VERSION: the registry's unpacked source of NAME VERSION,
# fetched by cargo (an ordinary dependency of a scratch crate) if absent.
source_of() {
    local name=$1 version=$2 dir
    dir=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$name-$version" 2>/dev/null | head -1 || true)
    if [ -z "$dir" ]; then
        mkdir -p "$WORK/fetch-$name/src"
        touch "$WORK/fetch-$name/src/lib.rs"
        printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n[workspace]\n' \
            "$name" "$version" >"$WORK/fetch-$name/Cargo.toml"
        cargo fetch --manifest-path "$WORK/fetch-$name/Cargo.toml" >&2
        dir=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$name-$version" | head -1)
    fi
    echo "$dir"
}

# patch FILE FROM TO: replaces the literal FROM by TO, failing if absent.
patch_file() {
    local file=$1 from=$2 to=$3
    python3 - "$file" "$from" "$to" <<'PY'
import sys
path, old, new = sys.argv[1:]
s = open(path).read()
if old not in s:
    sys.exit(f"upstream.sh: {path}: pattern not found: {old!r}")
open(path, "w").write(s.replace(old, new))
PY
}

# copy NAME VERSION FEATURE: the crate copied to $WORK/NAME-VERSION with the
# harness as a dev-dependency (harness feature FEATURE); prints the path.
copy_crate() {
    local name=$1 version=$2 feature=$3 src dst
    src=$(source_of "$name" "$version")
    dst=$WORK/$name-$version
    cp -r "$src" "$dst"
    chmod -R u+w "$dst"
    rm -f "$dst/Cargo.toml.orig"
    # This repository's lock file: the versions sessionlog is tested with
    # (the upstream lock pins some that no longer build with them); cargo
    # adds what the upstream dev-dependencies need.
    cp "$ROOT/Cargo.lock" "$dst/Cargo.lock"
    cat >>"$dst/Cargo.toml" <<TOML

[dev-dependencies.sessionlog-upstream-harness]
path = "$HARNESS"
features = ["$feature"]

[workspace]
TOML
    echo "$dst"
}

# run_suite LABEL DIR ARGS...: runs `cargo test ARGS` in DIR for each
# backend and records the passed/failed counts.
run_suite() {
    local label=$1 dir=$2
    shift 2
    (cd "$dir" && nice cargo test "$@" --no-run -q 2>&1 | tail -3) >&2
    local b out passed failed
    for b in $BACKENDS; do
        out=$(cd "$dir" && SESSIONLOG_UPSTREAM_BACKEND=$b cargo test -q "$@" 2>&1) || true
        passed=$(grep -o '[0-9]* passed' <<<"$out" | awk '{s+=$1} END {print s+0}')
        failed=$(grep -o '[0-9]* failed' <<<"$out" | awk '{s+=$1} END {print s+0}')
        printf '%-34s %-9s passed %3d  failed %3d\n' "$label" "$b" "$passed" "$failed" | tee -a "$SUMMARY"
        if [ "$failed" != 0 ] || ! grep -q 'test result: ok' <<<"$out"; then
            echo "$out" | grep -E '^test .*FAILED|panicked|error' | head -20 >&2
        fi
    done
}

tower_copy() {
    local version=$1 feature=$2 module=$3 dst
    dst=$(copy_crate tower-sessions "$version" "$feature")
    patch_file "$dst/src/service.rs" \
        "use tower_sessions_memory_store::MemoryStore;" \
        "use sessionlog_upstream_harness::$module::MemoryStore;"
    patch_file "$dst/tests/integration-tests.rs" \
        "use tower_sessions::{MemoryStore, SessionManagerLayer};" \
        "use sessionlog_upstream_harness::$module::MemoryStore;
    use tower_sessions::SessionManagerLayer;"
    echo "$dst"
}

for suite in $SUITES; do
    case $suite in
    tower015 | repeat)
        [ -d "$WORK/tower-sessions-0.15.0" ] || tower_copy 0.15.0 tower015 tower >/dev/null
        if [ "$suite" = tower015 ]; then
            run_suite "tower-sessions 0.15.0 service.rs" "$WORK/tower-sessions-0.15.0" \
                --features signed,private --lib
            run_suite "tower-sessions 0.15.0 route_tests" "$WORK/tower-sessions-0.15.0" \
                --features signed,private --test integration-tests
        else
            # The two always-save tests that read the stored expiry of two
            # back-to-back requests, RUNS times per backend.
            dir=$WORK/tower-sessions-0.15.0
            (cd "$dir" && nice cargo test --features signed,private --lib --no-run -q 2>&1 |
                tail -3) >&2
            for b in $BACKENDS; do
                ok=0
                for ((i = 0; i < RUNS; i++)); do
                    if (cd "$dir" && SESSIONLOG_UPSTREAM_BACKEND=$b cargo test -q --features signed,private --lib always_save \
                        >/dev/null 2>&1); then
                        ok=$((ok + 1))
                    fi
                done
                printf '%-34s %-9s %d runs of %d passed\n' "tower-sessions 0.15.0 always_save" "$b" "$ok" "$RUNS" |
                    tee -a "$SUMMARY"
            done
        fi
        ;;
    tower014)
        dst=$(tower_copy 0.14.0 tower014 tower014)
        run_suite "tower-sessions 0.14.0 service.rs" "$dst" --features signed,private --lib
        run_suite "tower-sessions 0.14.0 route_tests" "$dst" --features signed,private \
            --test integration-tests
        ;;
    axum-login)
        dst=$(copy_crate axum-login 0.18.0 tower014)
        patch_file "$dst/src/session.rs" \
            "use tower_sessions::MemoryStore;" \
            "use sessionlog_upstream_harness::tower014::MemoryStore;"
        patch_file "$dst/src/middleware.rs" \
            "let session_store = SqliteStore::new(pool.clone());
            session_store.migrate().await.unwrap();" \
            "let session_store = sessionlog_upstream_harness::tower014::MemoryStore::default();"
        run_suite "axum-login 0.18.0 unit tests" "$dst" --lib
        ;;
    axum-login-examples)
        dst=$WORK/axum-login-git
        git clone -q --depth 1 --branch v0.18.0 "$AXUM_LOGIN_GIT" "$dst" 2>/dev/null ||
            git clone -q --branch v0.18.0 "$AXUM_LOGIN_GIT" "$dst"
        cp "$ROOT/Cargo.lock" "$dst/Cargo.lock"
        # Only the crate and the two apps its integration test starts.
        patch_file "$dst/Cargo.toml" 'members = ["axum-login", "examples/*"]' \
            'members = ["axum-login", "examples/sqlite", "examples/permissions"]'
        for app in sqlite permissions; do
            printf '\n[dependencies.sessionlog-upstream-harness]\npath = "%s"\nfeatures = ["tower014"]\n' \
                "$HARNESS" >>"$dst/examples/$app/Cargo.toml"
        done
        patch_file "$dst/examples/sqlite/src/web/app.rs" \
            "let session_store = SqliteStore::new(self.db.clone());
        session_store.migrate().await?;" \
            "let session_store = sessionlog_upstream_harness::tower014::MemoryStore::default();"
        patch_file "$dst/examples/permissions/src/web/app.rs" \
            "let session_store = MemoryStore::default();" \
            "let session_store = sessionlog_upstream_harness::tower014::MemoryStore::default();"
        (cd "$dst" && nice cargo build -q -p example-sqlite -p example-permissions 2>&1 | tail -3) >&2
        # The test starts each app with `cargo run` and serves on port 3000.
        run_suite "axum-login 0.18.0 example apps" "$dst" -p axum-login --test integration-test
        ;;
    actix)
        dst=$(copy_crate actix-session 0.11.0 actix)
        printf '\n#[cfg(test)]\n#[path = "%s"]\nmod sessionlog_acceptance;\n' \
            "$ROOT/.ci/upstream/actix_acceptance.rs" >>"$dst/src/lib.rs"
        run_suite "actix-session 0.11.0 acceptance" "$dst" --lib sessionlog_acceptance
        ;;
    *)
        echo "upstream.sh: unknown suite $suite" >&2
        exit 2
        ;;
    esac
done

echo
echo "== summary"
cat "$SUMMARY"
if grep -qE 'failed +[1-9]|passed +0 ' "$SUMMARY"; then
    exit 1
fi
awk '/runs of/ { if ($(NF-4) != $(NF-1)) bad = 1 } END { exit bad }' "$SUMMARY"
