#!/usr/bin/env bash
# CI for the sessionlog Python package: lints the extension, builds the
# abi3 wheel, installs it into a fresh virtual environment with the pinned
# test dependencies, builds the Rust peer, and runs the pytest suites
# (session2 interface, Django, Flask, gunicorn with 4 workers, Rust peer).
# Runs from a fresh clone; needs python3 (>= 3.9), cargo, and PyPI.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never
export PIP_DISABLE_PIP_VERSION_CHECK=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
VENV="${SESSIONLOG_VENV:-$PWD/.venv}"

step() { printf '\n=== python: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "virtual environment at $VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -r requirements-test.txt
"$VENV/bin/python" --version

step "cargo fmt --check (extension, peer)"
cargo fmt --check
cargo fmt --check --manifest-path tests/peer/Cargo.toml

step "cargo clippy (extension, peer)"
cargo clippy --release --all-targets -- -D warnings
cargo clippy --release --manifest-path tests/peer/Cargo.toml --all-targets -- -D warnings

step "build the wheel (maturin, abi3)"
rm -rf dist
"$VENV/bin/maturin" build --release --interpreter "$VENV/bin/python" --out dist
"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps dist/*.whl

step "build the Rust peer"
cargo build --release --manifest-path tests/peer/Cargo.toml

step "pytest"
cd tests
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -ra
