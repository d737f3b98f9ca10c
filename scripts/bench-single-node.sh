#!/usr/bin/env bash
# The single-node figures of docs/benchmarks.md: server RSS per idle connection at 10k
# connections, and server CPU per delivery for one room of 1000 members at 100 msg/s with
# 64-byte payloads. Server and load generator share this machine; reports go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench}
PORT=${PORT:-19999}
mkdir -p "$OUT"
cargo build --release --locked -q
DATA=$(mktemp -d)
# The per-connection rate limit would cap the publisher: lift it for the benchmark.
./target/release/conclave dev --port "$PORT" --data-dir "$DATA" \
  --messages-per-second 1000000 --message-burst 1000000 >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
sleep 1
URL="ws://127.0.0.1:$PORT/parties/main/{room}"
./target/release/conclave loadtest idle-hold --url "$URL" --connections 10000 --hold-secs 10 \
  --server-pid "$SERVER" --json "$OUT/idle-hold.json"
./target/release/conclave loadtest hot-room --url "$URL" --members 1000 --rate 100 --secs 20 \
  --payload-bytes 64 --server-pid "$SERVER" --json "$OUT/hot-room.json"
