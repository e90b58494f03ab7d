#!/usr/bin/env bash
# Bounded fuzzing: runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS
# (default 30) each and fails if one crashes, hangs or leaks. Fuzzing needs
# nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them. A crash input lands in fuzz/artifacts/<target>/: copy it to
# tests/fuzz-regressions/<target>/ so that `cargo test` replays it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-30}"
export RUSTC_BOOTSTRAP=1

# Pinned, so that a new cargo-fuzz release cannot change CI by itself.
CARGO_FUZZ_VERSION=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

targets=$(cargo fuzz list)
cargo fuzz build

failed=()
for t in $targets; do
    # The run mutates a scratch copy: the committed corpus stays as it is.
    work="$(mktemp -d)"
    mkdir -p "corpus/$t"
    echo "--- fuzz $t for ${seconds}s"
    if cargo fuzz run "$t" "$work" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 2>"$work.log"; then
        grep -E '^(stat::number_of_executed_units|#[0-9]+ +DONE)' "$work.log" || true
    else
        tail -n 60 "$work.log"
        failed+=("$t")
    fi
    rm -rf "$work" "$work.log"
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzzing passed:" $targets
