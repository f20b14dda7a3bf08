#!/usr/bin/env bash
# The test command: prepares the machine, builds every binary, runs every
# unit, integration and end-to-end test.
#
#   scripts/test.sh [CARGO TEST ARGS…]     e.g. scripts/test.sh -p berth-e2e --test tasks
#
# The e2e tests (tests/) run the binaries built here (target/debug/berth,
# target/debug/berth-agent) against the local Docker Engine.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUST_BACKTRACE=1

echo "==> test: scripts/setup.sh"
scripts/setup.sh

echo "==> test: cargo build --workspace --bins --locked"
cargo build --workspace --bins --locked

echo "==> test: cargo test --workspace --locked $*"
cargo test --workspace --locked "$@"
