#!/usr/bin/env bash
# Conclave's JavaScript runtime next to PartyKit's own dev server, on the same TypeScript
# relay party (scripts/partykit-relay): `conclave dev --project scripts/partykit-relay`,
# `conclave dev` with the built-in Rust relay for reference, and `partykit dev`. Server CPU
# per delivered message in one hot room, and memory per active room. Writes its section
# of docs/benchmarks.md. Not part of the test run; about 4 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export SYSTEMS=${SYSTEMS:-"js dev partykit"}
export SCENARIOS=${SCENARIOS:-"hot-100 hot-1000 rooms-10 rooms-1000"}
export OUT=${OUT:-$PWD/target/bench/js}
export BENCH_SECTION=js-parties
export BENCH_SCRIPT=scripts/bench-js.sh
export BENCH_SYSTEMS="js=conclave dev, TypeScript relay (QuickJS)|dev=conclave dev, Rust relay|partykit=PartyKit dev, TypeScript relay"
export BENCH_INTRO="JavaScript parties: the same TypeScript party on Conclave and on PartyKit
Servers: \`conclave dev --project scripts/partykit-relay\` (the party bundled with esbuild, run by Conclave's QuickJS workers), \`conclave dev\` with its built-in Rust relay for reference, and \`partykit dev\` (npm partykit 0.0.115, workerd) on the same project. A fresh server per scenario; load generator and servers on one machine over loopback. Server CPU and RSS sum every process of a system. Ratios are ÷ PartyKit: below 1 is better for CPU, memory and latency. The relay party does not hibernate, so each room keeps its server instance while it has a connection."
exec scripts/bench-side-by-side.sh
