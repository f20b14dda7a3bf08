#!/usr/bin/env bash
# The test command: prepares the machine, checks formatting and lints
# (cargo fmt --check, clippy -D warnings), builds every binary, runs every
# unit, integration and end-to-end test.
#
#   scripts/test.sh [CARGO TEST ARGS…]
#
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh -- --nocapture`,
# or `scripts/test.sh -p berth-e2e --test tasks` (with -p/--package the run
# covers those packages instead of the whole workspace). Every test binary
# runs even when an earlier one fails (--no-fail-fast). A whole-workspace run
# then scans every log of the end-to-end suite for the secrets it used
# (tests/src/capture.rs), replays the fuzz regressions and fuzzes each target for
# $BERTH_FUZZ_SECONDS (default 20; 0 skips) with scripts/fuzz.sh.
#
# The taskdef tests read the ECS API model from the Python virtualenv that
# setup.sh makes (target/test-venv, or $BERTH_TEST_VENV), exported here as
# BERTH_BOTOCORE_DATA.
#
# The e2e tests (tests/) run the binaries built here (target/debug/berth,
# target/debug/berth-agent) against the local Docker Engine.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUST_BACKTRACE=1

scope=(--workspace)
for arg in "$@"; do
    case $arg in
        --) break ;;
        -p | -p?* | --package | --package=*) scope=() ;;
    esac
done

echo "==> test: scripts/setup.sh"
scripts/setup.sh

# The ECS API model that taskdef/tests/api_model.rs checks COMPATIBILITY.md
# against: botocore's data directory in the test virtualenv setup.sh made.
venv=${BERTH_TEST_VENV:-$PWD/target/test-venv}
BERTH_BOTOCORE_DATA=$("$venv/bin/python" -c 'import botocore, os; print(os.path.join(os.path.dirname(botocore.__file__), "data"))')
export BERTH_BOTOCORE_DATA

# Style gates first: a formatting slip or a lint fails the run before the
# long suites start.
echo "==> test: cargo fmt --all --check"
cargo fmt --all --check
echo "==> test: cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz crate is not a workspace member: check it compiles here, before
# the long suites, rather than at the end when the fuzzers are built.
echo "==> test: cargo check --manifest-path fuzz/Cargo.toml"
cargo check --manifest-path fuzz/Cargo.toml

echo "==> test: cargo build --workspace --bins --locked"
cargo build --workspace --bins --locked

# A whole-workspace run captures every log of the end-to-end suite and every
# secret the harness hands out, then scans the logs for the secrets
# (tests/src/capture.rs).
capture=
if [ ${#scope[@]} -gt 0 ]; then
    capture=$PWD/target/e2e-capture
    rm -rf "$capture"
    export BERTH_E2E_CAPTURE=$capture
fi

echo "==> test: cargo test ${scope[*]:+${scope[*]} }--locked --no-fail-fast $*"
cargo test "${scope[@]}" --locked --no-fail-fast "$@"

# The service suites again with the control plane's store on PostgreSQL
# (BERTH_E2E_STORE, tests/src/fixture.rs): the scheduler on both backends.
if [ ${#scope[@]} -gt 0 ]; then
    echo "==> test: BERTH_E2E_STORE=postgres cargo test -p berth-e2e --test services --test placement"
    BERTH_E2E_STORE=postgres cargo test -p berth-e2e --locked --no-fail-fast --test services --test placement
fi

if [ -n "$capture" ]; then
    echo "==> test: secret scan of the end-to-end suite's logs"
    cargo run -q --locked -p berth-e2e --bin berth-e2e-secret-scan -- "$capture"
fi

# The whole-workspace run also fuzzes every untrusted input for a bounded
# time (fuzz/README.md): known crashes must stay fixed, and a short run on the
# kept corpus must find no new one. BERTH_FUZZ_SECONDS=0 skips it.
fuzz_seconds=${BERTH_FUZZ_SECONDS:-20}
if [ ${#scope[@]} -gt 0 ] && [ "$fuzz_seconds" != 0 ]; then
    echo "==> test: scripts/fuzz.sh --regressions"
    scripts/fuzz.sh --regressions
    echo "==> test: scripts/fuzz.sh $fuzz_seconds (every target)"
    scripts/fuzz.sh "$fuzz_seconds"
fi
