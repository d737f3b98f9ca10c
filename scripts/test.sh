#!/usr/bin/env bash
# Runs the whole test suite: Rust unit/integration/doc tests, the FoundationDB backend on
# the FoundationDB test double (scripts/test-fdb.sh), the deployment files
# (scripts/check-deploy.sh), then the PartySocket compatibility suite (real npm clients
# against real `conclave dev` processes).
# Needs cargo; installs Node.js, npm and PostgreSQL when missing (scripts/test-deps.sh) and
# the npm test clients.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh

cargo build --workspace --locked
(cd tests/compat && npm ci --no-audit --no-fund --loglevel=error)
cargo test --workspace --locked
# The cluster suites again with mutual TLS on every internal link.
CONCLAVE_TEST_MTLS=1 cargo test --locked --test cluster --test failover --test regions --test partitions
scripts/test-fdb.sh
scripts/check-deploy.sh
scripts/fuzz.sh 30
(cd tests/compat && npm test)
