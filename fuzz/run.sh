#!/usr/bin/env bash
# Runs every fuzz target for a bounded time; exits non-zero if any crashes.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]          (default 20)
#   FUZZ_SANITIZER=none fuzz/run.sh 20        (skip AddressSanitizer)
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, coverage
# instrumentation); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# New inputs go to target/work/<target>, never into the committed corpus,
# which is only read. A crash leaves its input in artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-20}"
sanitizer="${FUZZ_SANITIZER:-address}"
targets=(frame_decode node_inputs slice)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# One build for all targets; the runs below reuse it.
cargo fuzz build -O --sanitizer "$sanitizer"

for target in "${targets[@]}"; do
    work="target/work/$target"
    mkdir -p "$work"
    echo "== $target: ${seconds}s"
    cargo fuzz run -O --sanitizer "$sanitizer" "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1
done
