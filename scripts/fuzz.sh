#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 30, as CI does;
# scripts/fuzz.sh 600 for the ten-minute runs docs/benchmarks.md reports), starting from
# and adding to its corpus in fuzz/corpus/<target>. A crash, a panic, a leak or a process
# over 2 GB resident fails the run. Single allocations are not limited: yrs reserves room
# for counts a message declares, fallibly and without touching it, and frees it when the
# decode fails (allocator_may_return_null makes a refused one fail as it does in a server);
# the counts that made it write memory are checked before (parties/yjs/bounds.rs); the input that did it is left in
# fuzz/artifacts/<target>/ (replay it: RUSTC_BOOTSTRAP=1 cargo fuzz run -O TARGET FILE).
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]
#
# Built as released (-O: optimized, no debug assertions): yrs debug-asserts that client ids
# fit 53 bits, which a release build does not check and a client may break.
# cargo-fuzz builds with AddressSanitizer (-Zsanitizer), which needs a nightly rustc;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept it, whose sysroot ships the runtime.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
export RUSTC_BOOTSTRAP=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-allocator_may_return_null=1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz --version 0.13.2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build -O
mkdir -p fuzz/artifacts
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    log="fuzz/artifacts/$target.log"
    echo "fuzz: $target for ${seconds}s"
    if ! cargo fuzz run -O "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -seed="${FUZZ_SEED:-1}" -rss_limit_mb=2048 -malloc_limit_mb=1048576 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::peak_rss_mb)' "$log" || true
done
