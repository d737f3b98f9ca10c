#!/usr/bin/env bash
# The instructions `conclave dev` executes per connection in a connect storm, counted by
# callgrind (valgrind), which a machine without hardware performance counters (most VMs)
# can still count: unlike CPU time, the count moves little from run to run (about ±3 %
# here), so changes of a few percent to the connection path show. Each run: a fresh server
# under callgrind, 100 connections to warm it, then the counters zeroed, N connections
# (50 in flight) opened and closed, and the counters dumped. Prints instructions per
# connection; the dumps stay in $OUT for callgrind_annotate.
#   scripts/bench-storm-instructions.sh [BINARY] [N] [RUNS]
# BINARY defaults to a release build of this checkout. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/callgrind.sh
B=$(conclave_binary "${1:-}")
N=${2:-1000}
RUNS=${3:-3}
OUT=${OUT:-target/bench/instructions}
mkdir -p "$OUT"
PORT=18999
for run in $(seq 1 "$RUNS"); do
  DUMP="$OUT/storm-$run.callgrind"
  start_dev_under_callgrind "$DUMP" "$OUT/server-$run.log"
  "$B" loadtest connect-storm --url "ws://127.0.0.1:$PORT/parties/main/warm{room}" \
    --connections 100 --concurrency 20 >/dev/null
  sleep 1
  callgrind_control -z "$SERVER_PID" >/dev/null 2>&1
  "$B" loadtest connect-storm --url "ws://127.0.0.1:$PORT/parties/main/{room}" \
    --connections "$N" --concurrency 50 >"$OUT/storm-$run.txt"
  sleep 2
  callgrind_control -d "$SERVER_PID" >/dev/null 2>&1
  sleep 1
  stop_dev
  total=$(counted_instructions "$DUMP.1")
  echo "run $run: $((total / N)) instructions per connection ($total for $N connections; $DUMP.1)"
done
