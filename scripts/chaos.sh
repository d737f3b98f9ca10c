#!/usr/bin/env bash
# The chaos test (tests/chaos.rs) again and again: each run a fresh cluster and the six
# faults (stall past the TTL, drain, kill -9, store partition, Redis restart, Redis
# partition) in an order its seed picks. Prints each run's seed and result, then writes
# the longest wait per fault, the increments applied twice and the closed sockets over
# all runs into docs/reliability.md. Not part of the test run. RUNS=20 (about 12
# minutes); SEED=first seed (default: random, printed).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
SEED=${SEED:-$((RANDOM * 32768 + RANDOM + 1))}
OUT=${OUT:-target/chaos}
mkdir -p "$OUT"
rm -f "$OUT"/run-*.json
cargo test --locked --test chaos --no-run -q
echo "runs: $RUNS, seeds $SEED..$((SEED + RUNS - 1))"
failed=0
for i in $(seq 0 $((RUNS - 1))); do
  seed=$((SEED + i))
  if CHAOS_SEED=$seed CHAOS_REPORT="$OUT/run-$seed.json" \
     cargo test --locked -q --test chaos -- --nocapture >"$OUT/run-$seed.log" 2>&1; then
    echo "seed $seed: ok $(cat "$OUT/run-$seed.json")"
  else
    failed=$((failed + 1))
    echo "seed $seed: FAILED (see $OUT/run-$seed.log)"
  fi
done
python3 scripts/chaos_report.py "$OUT" docs/reliability.md "$RUNS" "$failed"
echo "docs/reliability.md updated"
[ "$failed" -eq 0 ]
