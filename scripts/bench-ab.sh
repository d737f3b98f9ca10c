#!/usr/bin/env bash
# Two builds of the server side by side, alternating runs on this machine, one load
# generator for both (B's `conclave loadtest`): for checking that a change leaves the
# figures of docs/benchmarks.md within noise.
#
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
#
# Scenarios (64-byte payloads, rate limits lifted): hot-room 1000 members at 100/s
# (conclave dev), many-rooms 200 x 10 at 20/s (dev), idle-hold 10,000 (dev), the relay hop
# (gateway + node, 2-member echo at 200/s), and hot-room 300 x 100/s through gateway +
# node. Reports go to $OUT; the summary table to stdout.
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [ROUNDS]" >&2; exit 2; }
declare -A BIN=([A]=$1 [B]=$2)
ROUNDS=${3:-2}
LT=$2
OUT=${OUT:-target/bench-ab}
mkdir -p "$OUT"
NOLIMIT=(--messages-per-second 1000000 --message-burst 1000000)
port=${PORT:-21000}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null' EXIT

start_dev() { # variant
  port=$((port + 1)); DATA=$(mktemp -d)
  "${BIN[$1]}" dev --port $port --data-dir "$DATA" "${NOLIMIT[@]}" >"$OUT/server.log" 2>&1 &
  SERVER=$!; pids=($SERVER); sleep 1
}
start_cluster() { # variant
  port=$((port + 3)); DATA=$(mktemp -d)
  "${BIN[$1]}" node --id a --relay-listen 127.0.0.1:$((port + 1)) --http-listen 127.0.0.1:$((port + 2)) \
    --data-dir "$DATA" >"$OUT/node.log" 2>&1 &
  NODE=$!
  "${BIN[$1]}" gateway --port $port --nodes a=http://127.0.0.1:$((port + 1)) "${NOLIMIT[@]}" >"$OUT/gateway.log" 2>&1 &
  GATEWAY=$!; pids=($NODE $GATEWAY); sleep 1
}
stop() { kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null; rm -rf "$DATA"; }
load() { # report name, scenario args...
  local name=$1; shift
  "$LT" loadtest "$@" --url "ws://127.0.0.1:$port/parties/main/{room}" --json "$OUT/$name.json" >/dev/null 2>&1 \
    || echo "run $name failed" >&2
}

for round in $(seq 1 "$ROUNDS"); do
  for v in A B; do
    start_dev $v
    load "hot-$v-$round" hot-room --members 1000 --rate 100 --secs 20 --server-pid $SERVER; stop
    start_dev $v
    load "many-$v-$round" many-rooms --rooms 200 --members 10 --rate 20 --secs 15 --server-pid $SERVER; stop
    start_cluster $v
    load "hop-$v-$round" hot-room --room-prefix "echo-$round" --members 1 --rate 200 --secs 20
    load "chot-$v-$round" hot-room --room-prefix "hot-$round" --members 300 --rate 100 --secs 15 --server-pid $NODE,$GATEWAY
    stop
  done
done
for v in A B; do
  start_dev $v
  load "idle-$v" idle-hold --connections 10000 --hold-secs 10 --server-pid $SERVER; stop
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, os, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def get(name, key):
    try:
        return json.load(open(os.path.join(out, name + ".json")))[key]
    except (OSError, KeyError, ValueError):
        return None
def fmt(v):
    return "–" if v is None else (f"{v:,.0f}" if v >= 1000 else f"{v:.3g}")
rows = [
    ("hot-room 1000 × 100/s (dev): server µs/delivery", "hot", "server_cpu_us_per_delivery"),
    ("hot-room 1000 × 100/s (dev): p99 ms", "hot", "latency_p99_ms"),
    ("many-rooms 200 × 10 @ 20/s (dev): server µs/delivery", "many", "server_cpu_us_per_delivery"),
    ("many-rooms 200 × 10 @ 20/s (dev): p99 ms", "many", "latency_p99_ms"),
    ("relay hop, echo @ 200/s (gateway + node): p50 ms", "hop", "latency_p50_ms"),
    ("relay hop, echo @ 200/s (gateway + node): p99 ms", "hop", "latency_p99_ms"),
    ("hot-room 300 × 100/s (gateway + node): server µs/delivery", "chot", "server_cpu_us_per_delivery"),
]
print("| figure | A (runs) | B (runs) |\n| --- | --- | --- |")
for label, scen, key in rows:
    cells = [" / ".join(fmt(get(f"{scen}-{v}-{r}", key)) for r in range(1, rounds + 1)) for v in "AB"]
    print(f"| {label} | {cells[0]} | {cells[1]} |")
print(f"| idle-hold 10,000 (dev): server RSS bytes per connection | "
      f"{fmt(get('idle-A', 'server_rss_per_connection_bytes'))} | {fmt(get('idle-B', 'server_rss_per_connection_bytes'))} |")
PY
