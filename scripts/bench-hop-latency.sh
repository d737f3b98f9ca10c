#!/usr/bin/env bash
# What the gateway→node hop costs: a 2-member relay echo (one publisher, one receiver) at
# 200 msg/s through `conclave dev` (in-process relay) and through a gateway + node pair
# (gRPC relay over loopback). Reports go to $OUT. The gateway and the node run one runtime
# worker each, as in scripts/bench-side-by-side.sh (they share 2 cores with `conclave dev`
# and the load generator); CLUSTER_WORKERS=N sets another number, CLUSTER_WORKERS= leaves
# tokio's default (one per CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench}
mkdir -p "$OUT"
cargo build --release --locked -q
DATA=$(mktemp -d)
B=./target/release/conclave
NOLIMIT=(--messages-per-second 1000000 --message-burst 1000000)
CLUSTER_WORKERS=${CLUSTER_WORKERS-1}
WORKERS=(env ${CLUSTER_WORKERS:+TOKIO_WORKER_THREADS=$CLUSTER_WORKERS})
$B dev --port 18999 --data-dir "$DATA/dev" "${NOLIMIT[@]}" >"$OUT/dev.log" 2>&1 &
P1=$!
"${WORKERS[@]}" $B node --id a --relay-listen 127.0.0.1:18100 --http-listen 127.0.0.1:18101 --data-dir "$DATA/a" >"$OUT/node.log" 2>&1 &
P2=$!
"${WORKERS[@]}" $B gateway --port 18998 --nodes a=http://127.0.0.1:18100 "${NOLIMIT[@]}" >"$OUT/gateway.log" 2>&1 &
P3=$!
trap 'kill $P1 $P2 $P3 2>/dev/null; rm -rf "$DATA"' EXIT
sleep 1
for run in 1 2 3; do
  for target in dev:18999 cluster:18998; do
    name=${target%%:*}
    port=${target##*:}
    echo "== $name run $run"
    $B loadtest hot-room --url "ws://127.0.0.1:$port/parties/main/{room}" --room-prefix "echo-$name-$run" \
      --members 1 --rate 200 --secs 20 --json "$OUT/hop-$name-$run.json" | grep -E "latency|delivered_ratio"
  done
done
