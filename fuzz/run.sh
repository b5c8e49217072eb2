#!/usr/bin/env bash
# Runs every fuzz target for a bounded time; exits non-zero if any crashes.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]           (default 15)
#   FUZZ_SANITIZER=address fuzz/run.sh 600     (with AddressSanitizer)
#
# Without a sanitizer by default: pslite-core forbids unsafe code, so ASan
# can only catch bugs in dependencies, while it doubles the build time and
# cuts executions per second three to six times. On 2 cores a clean build
# takes about 20 s without it and 45 s with it.
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, coverage
# instrumentation); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# New inputs go to target/work/<target>, never into the committed corpus,
# which is only read. A crash leaves its input in artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-15}"
sanitizer="${FUZZ_SANITIZER:-none}"
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
