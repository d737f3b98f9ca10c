#!/usr/bin/env bash
# The FoundationDB backend, run for real: the storage conformance suite (tests/storage.rs)
# and a two-node cluster through a kill -9 of the owner (tests/failover.rs, `on_foundationdb`)
# in a `--features fdb` build.
#
# With FDB_CLUSTER_FILE set, against that cluster (libfdb_c from the system). Otherwise
# against the FoundationDB test double (fdbsim/): its libfdb_c is built and linked in, its
# server runs inside each test, and both run twice, the second time with seeded fault
# injection in every client (FDBSIM_FAULT_SEED, default 1; FDBSIM_FAULT_RATE, default 0.05).
set -euo pipefail
cd "$(dirname "$0")/.."

run() { cargo test --locked --features fdb "$@"; }
# The fdb build replaces target/debug/conclave with a binary that needs libfdb_c; put the
# default build's back afterwards (cached: a copy, no compile).
trap 'cargo build --locked --quiet --bin conclave' EXIT

if [ -n "${FDB_CLUSTER_FILE:-}" ]; then
  run --test storage
  run --test failover on_foundationdb
  exit 0
fi

cargo build --locked -p conclave-fdbsim-client
mkdir -p target/fdbsim
cp target/debug/libfdb_c.so target/fdbsim/libfdb_c.so
export LD_LIBRARY_PATH="$PWD/target/fdbsim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

run --test storage
run --test failover on_foundationdb
seed=${FDBSIM_FAULT_SEED:-1}
echo "again with fault injection on the FoundationDB test double (FDBSIM_FAULT_SEED=$seed)"
FDBSIM_FAULT_SEED=$seed run --test storage
FDBSIM_FAULT_SEED=$seed run --test failover on_foundationdb
