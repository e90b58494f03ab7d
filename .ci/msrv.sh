#!/usr/bin/env bash
# The MSRV check this machine can run. It has one Rust toolchain and can
# fetch no other, so an actual build with the declared `rust-version` is
# not possible here. Instead: (1) clippy's `incompatible_msrv` lint (on by
# default, denied by `-D warnings`) reads `rust-version` and rejects any
# standard-library API stabilised after it, in every CI clippy run; (2)
# this script fails if any dependency in Cargo.lock declares a
# `rust-version` newer than ours, which the MSRV-aware resolver (resolver
# 3) is meant to prevent.
set -euo pipefail
cd "$(dirname "$0")/.."
meta=$(mktemp)
trap 'rm -f "$meta"' EXIT
cargo metadata --locked --format-version 1 --all-features >"$meta"
python3 - "$meta" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
ours = next(p for p in meta["packages"] if p["name"] == "sessionlog")["rust_version"]
def key(v):
    return tuple(int(x) for x in (v.split(".") + ["0", "0"])[:3])
bad = [
    "%s %s needs Rust %s" % (p["name"], p["version"], p["rust_version"])
    for p in meta["packages"]
    if p.get("rust_version") and key(p["rust_version"]) > key(ours)
]
if bad:
    print("dependencies newer than our rust-version %s:" % ours, *bad, sep="\n  ")
    sys.exit(1)
print("msrv: every dependency declares Rust %s or older" % ours)
PY
