#!/usr/bin/env bash
# The instructions `conclave dev` executes per client message over many small rooms,
# counted by callgrind (valgrind) as scripts/bench-storm-instructions.sh counts a
# connection's: a count moves little from run to run (about ±3 % here), where CPU time
# over many rooms moves by ±15 %. Each run: a fresh server under callgrind, ROOMS rooms of
# 10 members with one publisher each at 2 messages/s (slow enough for valgrind to keep
# up), 10 s to connect and settle, then the counters zeroed, WINDOW seconds counted, and
# the messages the gateway took in and wrote out over that window read from /metrics.
# Prints instructions per client message and per delivery; the dumps stay in $OUT.
#   scripts/bench-message-instructions.sh [BINARY] [ROOMS] [WINDOW] [RUNS]
# BINARY defaults to a release build of this checkout. Needs valgrind and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/callgrind.sh
B=$(conclave_binary "${1:-}")
ROOMS=${2:-100}
WINDOW=${3:-10}
RUNS=${4:-3}
OUT=${OUT:-target/bench/instructions}
mkdir -p "$OUT"
PORT=18999
metric() {
  curl -s "http://127.0.0.1:$PORT/metrics" | awk -v k="$1" '$1 == k { printf "%d", $2 }'
}
for run in $(seq 1 "$RUNS"); do
  DUMP="$OUT/messages-$run.callgrind"
  start_dev_under_callgrind "$DUMP" "$OUT/server-$run.log"
  "$B" loadtest many-rooms --url "ws://127.0.0.1:$PORT/parties/main/{room}" \
    --rooms "$ROOMS" --members 10 --rate 2 --secs $((WINDOW + 12)) --concurrency 20 \
    >"$OUT/messages-$run.txt" 2>&1 &
  LOAD=$!
  sleep 10
  callgrind_control -z "$SERVER_PID" >/dev/null 2>&1
  in0=$(metric conclave_gateway_messages_in_total)
  out0=$(metric conclave_gateway_messages_out_total)
  sleep "$WINDOW"
  callgrind_control -d "$SERVER_PID" >/dev/null 2>&1
  in1=$(metric conclave_gateway_messages_in_total)
  out1=$(metric conclave_gateway_messages_out_total)
  wait $LOAD || true
  stop_dev
  total=$(counted_instructions "$DUMP.1")
  messages=$((in1 - in0))
  deliveries=$((out1 - out0))
  echo "run $run: $((total / messages)) instructions per message, $((total / deliveries)) per delivery ($total for $messages messages, $deliveries deliveries; $DUMP.1)"
done
