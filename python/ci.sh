#!/usr/bin/env bash
# CI for the sessionlog_store Python package (PyPI: sessionlog-store): lints
# the extension; builds the abi3 manylinux wheel and checks its tag with
# auditwheel; builds the sdist and a wheel from it; installs the wheel into
# a fresh virtual environment with the pinned test dependencies; type-checks
# the package (mypy --strict) and the native module's stub (stubtest);
# imports the wheel on the other CPythons found (abi3); builds the Rust peer
# and runs the pytest suites (session2 interface, Django, Flask, gunicorn
# with 4 workers, Rust peer) against the installed wheel.
# Runs from a fresh clone; needs python3 (>= 3.10), cargo, and PyPI.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never
export PIP_DISABLE_PIP_VERSION_CHECK=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# The tests run here, made afresh each run: the test requirements and the
# wheel, nothing else (bench/run.sh uses it too).
VENV="${SESSIONLOG_VENV:-$PWD/.venv}"
# maturin and auditwheel; kept between runs.
BUILD_VENV="$PWD/.venv-build"
# The manylinux tag the wheel must carry. The floor is glibc 2.34 when
# linking against the host's glibc (Debian 12: 2.36): since 2.34 the
# pthread functions carry GLIBC_2.34 versions. The engine itself needs
# 2.30 (pthread_mutex_clocklock, gettid). A wheel needing a newer glibc
# fails the build instead of silently getting a narrower tag.
MANYLINUX=manylinux_2_34

step() { printf '\n=== python: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "build tools at $BUILD_VENV"
python3 -m venv "$BUILD_VENV"
"$BUILD_VENV/bin/python" -m pip install -q -r requirements-build.txt

# README.md is PyPI's long description, where a link relative to the
# repository leads nowhere.
step "README.md links only to absolute URLs"
if grep -nP '\]\((?!https?://|#)[^)]*\)|^\[[^]]+\]:\s*(?!https?://|#)' README.md; then
    echo "README.md: the links above are relative: PyPI shows this file; use absolute URLs" >&2
    exit 1
fi

step "cargo fmt --check (extension, peer)"
cargo fmt --check
cargo fmt --check --manifest-path tests/peer/Cargo.toml

step "cargo clippy (extension, peer)"
cargo clippy --release --all-targets -- -D warnings
cargo clippy --release --manifest-path tests/peer/Cargo.toml --all-targets -- -D warnings

step "build the wheel (maturin, abi3, $MANYLINUX)"
rm -rf dist
"$BUILD_VENV/bin/maturin" build --release --interpreter "$BUILD_VENV/bin/python" \
    --compatibility "$MANYLINUX" --auditwheel check --out dist
wheel=$(echo dist/*.whl)
case "$wheel" in
    *-cp310-abi3-"$MANYLINUX"_x86_64.whl) echo "built $wheel" ;;
    *) echo "unexpected wheel name: $wheel" >&2; exit 1 ;;
esac

step "auditwheel show"
"$BUILD_VENV/bin/auditwheel" show "$wheel" | tee dist/auditwheel.txt
tr -s ' \n' ' ' < dist/auditwheel.txt | grep -q "consistent with the following platform tag: \"${MANYLINUX}_x86_64\"" \
    || { echo "auditwheel does not report $MANYLINUX for $wheel" >&2; exit 1; }

step "sdist, and a wheel built from it"
"$BUILD_VENV/bin/maturin" sdist --out dist
sdist=$(echo dist/*.tar.gz)
tar tzf "$sdist" > dist/sdist-files.txt
for f in pyproject.toml python/Cargo.toml python/Cargo.lock python/src/lib.rs \
    sessionlog_store/__init__.py sessionlog_store/_native.pyi sessionlog_store/py.typed \
    Cargo.toml src/lib.rs LICENSE-MIT LICENSE-APACHE; do
    grep -qx "sessionlog_store-[0-9.]*/$f" dist/sdist-files.txt || { echo "$sdist lacks $f" >&2; exit 1; }
done
if grep -E '/(target|\.venv[^/]*|dist)/' dist/sdist-files.txt; then
    echo "$sdist holds build output (above)" >&2; exit 1
fi
# pip unpacks the sdist elsewhere and runs maturin's PEP 517 backend on
# it: only the two sessionlog crates compile again (CARGO_TARGET_DIR is
# shared), which is what proves the sdist complete.
PATH="$BUILD_VENV/bin:$PATH" "$BUILD_VENV/bin/python" -m pip wheel -q --no-build-isolation --no-deps -w dist/from-sdist "$sdist"
ls dist/from-sdist

# Opens a log store, saves and loads a session, with the package installed
# in the virtual environment whose python is $1 (from /, so that the
# source in this directory is not what gets imported).
smoke() {
    (cd / && "$1" -) <<'EOF'
import sys, tempfile
import sessionlog_store

class S:
    def __init__(self, id):
        self.id = id

with tempfile.TemporaryDirectory() as d:
    store = sessionlog_store.LogSessionStore(d + "/s.db", sync="always")
    s = S(sessionlog_store.generate_id())
    s.n = 7
    store.save_session(s)
    assert store.load_session(s.id).n == 7
    print(f"Python {sys.version.split()[0]}: {sessionlog_store.__file__}: save and load ok")
EOF
}

step "the wheel built from the sdist works"
python3 -m venv --clear "$CARGO_TARGET_DIR/venv-sdist"
"$CARGO_TARGET_DIR/venv-sdist/bin/python" -m pip install -q --no-deps dist/from-sdist/*.whl
smoke "$CARGO_TARGET_DIR/venv-sdist/bin/python"

step "fresh virtual environment at $VENV: test requirements and the wheel"
python3 -m venv --clear "$VENV"
"$VENV/bin/python" -m pip install -q -r requirements-test.txt "$wheel"
"$VENV/bin/python" --version

step "abi3: the wheel on the oldest and newest CPython found"
# A CPython of version $1 (on PATH, or installed by pyenv), if any.
find_python() {
    local p
    for p in "$(command -v "python$1" || true)" "$(pyenv root 2> /dev/null || echo /nonexistent)"/versions/"$1".*/bin/"python$1"; do
        if [ -x "$p" ] && "$p" -c pass 2> /dev/null; then echo "$p"; return; fi
    done
}
smoke "$VENV/bin/python"
for version in 3.10 3.13 3.14; do
    py=$(find_python "$version")
    if [ -n "$py" ]; then
        "$py" -m venv --clear "$CARGO_TARGET_DIR/venv-abi3"
        "$CARGO_TARGET_DIR/venv-abi3/bin/python" -m pip install -q --no-deps "$wheel"
        smoke "$CARGO_TARGET_DIR/venv-abi3/bin/python"
    else
        echo "Python $version: not installed here, not tried"
    fi
done

step "mypy --strict (the package; settings in pyproject.toml)"
"$VENV/bin/python" -m mypy --cache-dir "$CARGO_TARGET_DIR/mypy-cache" sessionlog_store

step "stubtest (the installed native module against _native.pyi)"
# From tests/, so that the installed package is the one checked.
(cd tests && "$VENV/bin/python" -m mypy.stubtest --mypy-config-file ../pyproject.toml sessionlog_store._native)

step "build the Rust peer"
cargo build --release --manifest-path tests/peer/Cargo.toml

step "pytest (against the installed wheel)"
cd tests
"$VENV/bin/python" -c 'import sessionlog_store, sys; assert sessionlog_store.__file__.startswith(sys.prefix), sessionlog_store.__file__'
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -ra
