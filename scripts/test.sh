#!/usr/bin/env bash
# Runs the whole test suite: Rust unit/integration/doc tests, then the PartySocket
# compatibility suite (real npm clients against real `conclave dev` processes).
# Needs: cargo, node >= 18 with npm. Installs the npm test clients itself.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --locked
(cd tests/compat && npm ci --no-audit --no-fund --loglevel=error)
cargo test --workspace --locked
(cd tests/compat && npm test)
