#!/usr/bin/env bash
# Installs what building and checking the packages needs, when missing.
# Idempotent and quick when everything is there (no network then).
#
#   packaging/install-build-deps.sh [--check] [--build-only]
#
# - cargo-deb and cargo-generate-rpm (cargo install --locked, pinned
#   versions; a few minutes on 2 cores the first time);
# - Debian packages: binutils (strip) to build; rpm (rpm -qlp to read the
#   .rpm), shellcheck (the scripts' lint) and groff-base (the man pages'
#   lint) to check — left out with --build-only (what build-packages.sh asks
#   for). The man pages and completions come from the binaries themselves.
#
# Runs apt-get as root (or through sudo), serialised with a lock so that
# parallel callers do not collide. With --check it installs nothing and
# exits 1 listing what is missing. Exits 1 naming the step that failed.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

step() { echo "==> build-deps: $*"; }
fail() {
    echo "install-build-deps.sh: step '$1' failed: $2" >&2
    exit 1
}

check_only=0
build_only=0
for arg in "$@"; do
    case "$arg" in
        --check) check_only=1 ;;
        --build-only) build_only=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
            exit 0
            ;;
        *)
            echo "install-build-deps.sh: unknown argument '$arg' (see --help)" >&2
            exit 2
            ;;
    esac
done

missing_apt=()
if [ "$build_only" -eq 0 ]; then
    command -v rpm >/dev/null 2>&1 || missing_apt+=(rpm)
    command -v shellcheck >/dev/null 2>&1 || missing_apt+=(shellcheck)
    command -v groff >/dev/null 2>&1 || missing_apt+=(groff-base)
fi
command -v strip >/dev/null 2>&1 || missing_apt+=(binutils)

missing_cargo=()
cargo deb --version >/dev/null 2>&1 || missing_cargo+=("cargo-deb@$CARGO_DEB_VERSION")
cargo generate-rpm --version >/dev/null 2>&1 || missing_cargo+=("cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION")

if [ ${#missing_apt[@]} -eq 0 ] && [ ${#missing_cargo[@]} -eq 0 ]; then
    exit 0
fi
if [ "$check_only" -eq 1 ]; then
    echo "install-build-deps.sh: missing: ${missing_apt[*]} ${missing_cargo[*]}" >&2
    exit 1
fi

if [ ${#missing_apt[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 ||
        fail "install ${missing_apt[*]}" "apt-get not found: install ${missing_apt[*]} with your package manager"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 ||
            fail "install ${missing_apt[*]}" "not root and no sudo: run as root or install ${missing_apt[*]} by hand"
        sudo=(sudo)
    fi
    step "apt-get install ${missing_apt[*]}"
    (
        # Other scripts (scripts/test-image.sh) may run apt-get meanwhile.
        if command -v flock >/dev/null 2>&1; then
            flock 9
        fi
        export DEBIAN_FRONTEND=noninteractive
        if ! "${sudo[@]}" apt-get install -y -q "${missing_apt[@]}" >/dev/null; then
            "${sudo[@]}" apt-get update -q >/dev/null || exit 1
            "${sudo[@]}" apt-get install -y -q "${missing_apt[@]}" >/dev/null || exit 1
        fi
    ) 9>/tmp/berth-apt.lock || fail "install ${missing_apt[*]}" "apt-get install ${missing_apt[*]} failed"
fi

if [ ${#missing_cargo[@]} -gt 0 ]; then
    command -v cargo >/dev/null 2>&1 || fail "install ${missing_cargo[*]}" "cargo not found: install Rust (rustup) first"
    step "cargo install --locked ${missing_cargo[*]} (a few minutes the first time)"
    # Its own target dir: never the workspace's, whose lock a running
    # `cargo test` may hold.
    build_dir=$(mktemp -d "${TMPDIR:-/tmp}/berth-cargo-install.XXXXXX")
    trap 'rm -rf "$build_dir"' EXIT
    CARGO_TARGET_DIR=$build_dir cargo install --locked --quiet "${missing_cargo[@]}" ||
        fail "install ${missing_cargo[*]}" "cargo install failed (is crates.io reachable?)"
fi
step "done"
