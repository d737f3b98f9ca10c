#!/usr/bin/env bash
# Conclave next to its peers, one run, same load generator, same machine: `conclave dev`,
# a local 3-node Conclave cluster (static ring: one gateway, three nodes sharing one
# PostgreSQL), PartyKit's own dev server (npm partykit, offline) serving a party that
# relays like Conclave's `main`, and the fastest peer, a uWebSockets.js relay
# (scripts/uws-relay). Each system gets the same scenarios; the figures and every system's
# ratios to uWebSockets.js replace the side-by-side section of docs/benchmarks.md.
#
# Not part of the test run. Needs Node.js/npm (scripts/test-deps.sh) and python3.
# Takes about 14 minutes. SCENARIOS=hot-100 (space-separated) runs a subset.
#
# The systems take turns within each scenario, so a slow spell of a shared machine falls
# on all of them rather than on whichever ran then. ROUNDS=3 repeats every scenario three
# times (turns again each round) and reports each figure's median over the rounds: on a
# 2-core VM the same server's CPU per delivery varies by up to a third between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/target/bench/side-by-side}
SCENARIOS=${SCENARIOS:-"connect-storm idle-hold-10k hot-100 hot-1000 many-rooms-200x10 many-rooms-1000x10 all-to-all-50x10"}
SYSTEMS=${SYSTEMS:-"dev cluster partykit uws"} # also: js (scripts/bench-js.sh)
ROUNDS=${ROUNDS:-1}
mkdir -p "$OUT"
rm -f "$OUT"/*.r[0-9]*.json "$OUT"/*.r[0-9]*.txt # rounds of an earlier run
cargo build --release --locked -q
B=$ROOT/target/release/conclave
W=$(mktemp -d)
PIDS=()
# Every server runs in its own session: killing its process group takes its children too
# (PartyKit's workerd), and the next server waits until the ports are free.
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for _ in $(seq 1 100); do ss -ltn | grep -qE ':2(199[5-9]|1[123]0[12]) ' || break; sleep 0.1; done
  rm -rf "$W"
}
trap cleanup EXIT

(cd scripts/partykit-relay && [ -d node_modules/partykit ] || npm install --no-audit --no-fund --silent)
(cd scripts/uws-relay && [ -d node_modules/@trufflesuite ] || npm install --no-audit --no-fund --silent)

NOLIMIT=(--messages-per-second 1000000 --message-burst 1000000)
wait_http() { for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
descendants() { local p=$1; echo "$p"; for c in $(pgrep -P "$p" || true); do descendants "$c"; done; }
pids_csv() { descendants "$1" | paste -sd, -; }

start_dev() {
  setsid $B dev --port 21999 --data-dir "$W/dev" "${NOLIMIT[@]}" >"$OUT/dev.log" 2>&1 &
  SERVER=$!; PIDS+=($!)
  wait_http http://127.0.0.1:21999/healthz
  URL="ws://127.0.0.1:21999/parties/main/{room}"
  SERVER_PIDS=$(pids_csv "$SERVER")
}

source scripts/lib/postgres.sh
# The cluster's four processes share this machine's cores with PostgreSQL and the load
# generator: each gets one runtime worker (README, "one worker per process" on a shared
# machine); CLUSTER_WORKERS=N sets another number, CLUSTER_WORKERS= leaves tokio's default
# (one per CPU).
CLUSTER_WORKERS=${CLUSTER_WORKERS-1}
start_cluster() {
  local list="a=http://127.0.0.1:21101,b=http://127.0.0.1:21201,c=http://127.0.0.1:21301"
  local all=()
  # The nodes of a cluster share one store: a fresh PostgreSQL with every cluster.
  start_postgres "$W/pg" 21432
  PIDS+=("$PG_PID")
  for n in a:211 b:212 c:213; do
    local id=${n%%:*} p=${n##*:}
    setsid env ${CLUSTER_WORKERS:+TOKIO_WORKER_THREADS=$CLUSTER_WORKERS} $B node --id "$id" --nodes a,b,c --relay-listen "127.0.0.1:${p}01" --http-listen "127.0.0.1:${p}02" \
      --postgres-url "$PG" >"$OUT/node-$id.log" 2>&1 &
    PIDS+=($!); all+=($!)
    wait_http "http://127.0.0.1:${p}02/healthz"
  done
  setsid env ${CLUSTER_WORKERS:+TOKIO_WORKER_THREADS=$CLUSTER_WORKERS} $B gateway --port 21998 --nodes "$list" "${NOLIMIT[@]}" >"$OUT/gateway.log" 2>&1 &
  PIDS+=($!); all+=($!)
  wait_http http://127.0.0.1:21998/healthz
  URL="ws://127.0.0.1:21998/parties/main/{room}"
  SERVER_PIDS=$(IFS=,; echo "${all[*]}")
}

# The same TypeScript party PartyKit runs, on Conclave's JavaScript runtime.
start_js() {
  setsid $B dev --port 21996 --data-dir "$W/js" --project scripts/partykit-relay "${NOLIMIT[@]}" >"$OUT/js.log" 2>&1 &
  SERVER=$!; PIDS+=($!)
  wait_http http://127.0.0.1:21996/healthz
  URL="ws://127.0.0.1:21996/parties/main/{room}"
  SERVER_PIDS=$(pids_csv "$SERVER")
}

start_partykit() {
  (cd scripts/partykit-relay && NO_UPDATE_NOTIFIER=1 CI=1 exec setsid npx partykit dev --port 21997 --no-hotkeys \
     --disable-request-cf-fetch --persist false) >"$OUT/partykit.log" 2>&1 &
  SERVER=$!; PIDS+=($!)
  for _ in $(seq 1 600); do grep -aq "Ready on" "$OUT/partykit.log" 2>/dev/null && break; sleep 0.1; done
  if grep -aq "Address already in use" "$OUT/partykit.log"; then echo "PartyKit could not bind its port" >&2; exit 1; fi
  wait_http http://127.0.0.1:21997/parties/main/probe || true
  sleep 2
  URL="ws://127.0.0.1:21997/parties/main/{room}"
  SERVER_PIDS=$(pids_csv "$SERVER")
}

start_uws() {
  setsid node scripts/uws-relay/server.mjs 21995 >"$OUT/uws.log" 2>&1 &
  SERVER=$!; PIDS+=($!)
  wait_http http://127.0.0.1:21995/healthz
  URL="ws://127.0.0.1:21995/parties/main/{room}"
  SERVER_PIDS=$(pids_csv "$SERVER")
}

stop_all() { cleanup; PIDS=(); W=$(mktemp -d); }

run_scenario() { # system scenario round
  local json="$OUT/$1-$2.r$3.json"
  echo "== $1 $2 (round $3 of $ROUNDS)"
  case $2 in
    connect-storm) $B loadtest connect-storm --url "$URL" --connections 5000 --concurrency 200 --json "$json" ;;
    idle-hold-10k) $B loadtest idle-hold --url "$URL" --connections 10000 --hold-secs 10 --server-pid "$SERVER_PIDS" --json "$json" ;;
    rooms-1000) $B loadtest idle-hold --url "$URL" --connections 1000 --rooms 1000 --hold-secs 10 --server-pid "$SERVER_PIDS" --json "$json" ;;
    rooms-10) $B loadtest idle-hold --url "$URL" --connections 1000 --rooms 10 --hold-secs 10 --server-pid "$SERVER_PIDS" --json "$json" ;;
    hot-100) $B loadtest hot-room --url "$URL" --members 100 --rate 100 --secs 15 --room-prefix "h100-$1" --server-pid "$SERVER_PIDS" --json "$json" ;;
    hot-1000) $B loadtest hot-room --url "$URL" --members 1000 --rate 100 --secs 15 --room-prefix "h1000-$1" --server-pid "$SERVER_PIDS" --json "$json" ;;
    many-rooms-200x10) $B loadtest many-rooms --url "$URL" --rooms 200 --members 10 --rate 20 --secs 15 --room-prefix "many200-$1" --server-pid "$SERVER_PIDS" --json "$json" ;;
    many-rooms-1000x10) $B loadtest many-rooms --url "$URL" --rooms 1000 --members 10 --rate 2 --secs 15 --room-prefix "many-$1" --server-pid "$SERVER_PIDS" --json "$json" ;;
    all-to-all-50x10) $B loadtest all-to-all --url "$URL" --rooms 50 --members 10 --rate 20 --secs 15 --room-prefix "a2a-$1" --server-pid "$SERVER_PIDS" --json "$json" ;;
  esac | tee "$OUT/$1-$2.r$3.txt" || echo "(failed)"
  sleep 2
}

for round in $(seq 1 "$ROUNDS"); do
  for scenario in $SCENARIOS; do
    for system in $SYSTEMS; do
      # A fresh server per scenario: no scenario inherits another's connections or memory.
      "start_$system"
      run_scenario "$system" "$scenario" "$round"
      stop_all
    done
  done
done

ROUNDS=$ROUNDS CLUSTER_WORKERS=$CLUSTER_WORKERS python3 scripts/side_by_side_report.py "$OUT" "$SCENARIOS" docs/benchmarks.md
echo "docs/benchmarks.md updated"
