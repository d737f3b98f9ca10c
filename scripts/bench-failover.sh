#!/usr/bin/env bash
# Time from `kill -9` of a room's owner to the room serving again, with the default
# liveness timing (heartbeat 500 ms, TTL 2 s): for a new HTTP request through the gateway,
# and for a WebSocket client held open across every kill (it sends right after the kill;
# the time is until its reply; the socket must never close). A dynamic
# cluster on this machine: redis-server, PostgreSQL, one placement replica, nodes a and b,
# one gateway. Needs redis-server and PostgreSQL installed (scripts/test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
cargo build --release --locked -q
B=$PWD/target/release/conclave
W=$(mktemp -d)
chmod 755 "$W"
PIDS=()
cleanup() { kill -9 "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

redis-server --port 16379 --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
PIDS+=($!)
source scripts/lib/postgres.sh
start_postgres "$W/pg" 15432
PIDS+=("$PG_PID")

REDIS=redis://127.0.0.1:16379
PLACEMENT=http://127.0.0.1:17300
$B placement --listen 127.0.0.1:17300 --redis-url $REDIS >/dev/null 2>&1 &
PIDS+=($!)
NODE_PID=
start_node() { # id relay-port http-port; sets NODE_PID
  $B node --id "$1" --relay-listen "127.0.0.1:$2" --http-listen "127.0.0.1:$3" --redis-url $REDIS \
    --placement $PLACEMENT --postgres-url $PG --data-dir "$W/$1" >/dev/null 2>&1 &
  NODE_PID=$!
  PIDS+=($!)
}
start_node a 17101 17102
A=$NODE_PID
start_node b 17201 17202
$B gateway --port 17999 --placement $PLACEMENT >/dev/null 2>&1 &
PIDS+=($!)
GW=http://127.0.0.1:17999

rooms_on_a() { curl -s http://127.0.0.1:17102/metrics | awk '/^conclave_rooms_(active|hibernated)[ {]/{s+=$NF} END{print s+0}'; }
now_ms() { date +%s%3N; }

# Wait until both nodes serve, then find a room the ring places on node a.
until [ "$(curl -s -o /dev/null -w '%{http_code}' $GW/parties/counter/probe)" = 200 ]; do sleep 0.1; done
sleep 1
ROOM=""
for i in $(seq 0 200); do
  before=$(rooms_on_a)
  curl -sf -o /dev/null "$GW/parties/counter/f$i"
  if [ "$(rooms_on_a)" != "$before" ]; then ROOM=f$i; break; fi
done
[ -n "$ROOM" ] || { echo "no room found on node a" >&2; exit 1; }
echo "room counter/$ROOM is on node a"

[ -d tests/compat/node_modules/ws ] || (cd tests/compat && npm ci --silent)
coproc WS { node scripts/failover-client.mjs "ws://127.0.0.1:17999/parties/counter/$ROOM"; }
PIDS+=("$WS_PID")
read -r opened <&"${WS[0]}"
[ "$opened" = open ] || { echo "the held client did not connect" >&2; exit 1; }
echo go >&"${WS[1]}"; read -r _ <&"${WS[0]}"

TIMES=()
WS_TIMES=()
for run in $(seq 1 "$RUNS"); do
  curl -sf -o /dev/null "$GW/parties/counter/$ROOM"
  t0=$(now_ms)
  kill -9 "$A"
  echo go >&"${WS[1]}"
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$GW/parties/counter/$ROOM")" = 200 ]; do sleep 0.02; done
  t1=$(now_ms)
  TIMES+=($((t1 - t0)))
  read -r t_ws <&"${WS[0]}" || { echo "the held client's socket closed" >&2; exit 1; }
  WS_TIMES+=($((t_ws - t0)))
  wait "$A" 2>/dev/null || true
  echo "run $run: HTTP served again after $((t1 - t0)) ms; held socket answered after $((t_ws - t0)) ms"
  start_node a 17101 17102
  A=$NODE_PID
  # Let a rejoin the ring and take its rooms back before the next kill.
  sleep 3
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$GW/parties/counter/$ROOM")" = 200 ]; do sleep 0.05; done
done
summary() { sort -n | awk '{a[NR]=$1} END{printf "median %d ms, worst %d ms over %d runs\n", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2), a[NR], NR}'; }
echo "HTTP: $(printf '%s\n' "${TIMES[@]}" | summary)"
echo "held socket: $(printf '%s\n' "${WS_TIMES[@]}" | summary)"
