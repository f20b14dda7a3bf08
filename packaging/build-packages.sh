#!/usr/bin/env bash
# Builds the berth-agent and berth-server packages, .deb and .rpm.
#
#   packaging/build-packages.sh [--profile release|debug] [--no-build]
#                               [--bin-dir DIR] [--out DIR] [--fast]
#
#   --profile P   cargo profile to build and package (default release)
#   --no-build    package the binaries already built for that profile
#   --bin-dir D   package the `berth-agent` and `berth` found in D (no build)
#   --out D       where the packages go (default target/packages, or
#                 $CARGO_TARGET_DIR/packages)
#   --fast        quicker, larger compression (for tests)
#
# Steps: install missing build tools (packaging/install-build-deps.sh
# --build-only: cargo-deb, cargo-generate-rpm, strip); cargo build
# (incremental: reuses target/release); stage stripped copies of the
# binaries; let them write their man pages and completions
# (packaging/gen-docs.sh, into the staging dir's release/docs/); then
# cargo-deb and cargo-generate-rpm with the [package.metadata.deb] and
# [package.metadata.generate-rpm] sections of agent/Cargo.toml and
# control/Cargo.toml. Prints the package paths, one a line, at the end.
#
# Exit codes: 0 ok, 1 a step failed (named, with the fix), 2 bad usage.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
step() { echo "==> build-packages: $*" >&2; }
fail() {
    echo "build-packages.sh: step '$1' failed: $2" >&2
    exit 1
}
bad_usage() {
    echo "build-packages.sh: $*" >&2
    echo "run 'packaging/build-packages.sh --help' for the options" >&2
    exit 2
}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

profile=release
build=1
bin_dir=
out=
fast=0
while [ $# -gt 0 ]; do
    case "$1" in
        --profile)
            [ $# -ge 2 ] || bad_usage "--profile needs a value (release or debug)"
            profile=$2
            shift 2
            ;;
        --profile=*) profile=${1#*=}; shift ;;
        --no-build) build=0; shift ;;
        --bin-dir)
            [ $# -ge 2 ] || bad_usage "--bin-dir needs a directory"
            bin_dir=$2
            build=0
            shift 2
            ;;
        --bin-dir=*) bin_dir=${1#*=}; build=0; shift ;;
        --out)
            [ $# -ge 2 ] || bad_usage "--out needs a directory"
            out=$2
            shift 2
            ;;
        --out=*) out=${1#*=}; shift ;;
        --fast) fast=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) bad_usage "unknown option '$1'" ;;
    esac
done
case "$profile" in
    release) profile_dir=release; cargo_profile=(--release) ;;
    debug | dev) profile_dir=debug; cargo_profile=() ;;
    *) bad_usage "--profile '$profile': expected release or debug" ;;
esac

target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir=$root/$target_dir ;; esac
out=${out:-$target_dir/packages}
mkdir -p "$out" "$target_dir" || fail "create output dir" "cannot create $out"
out=$(cd "$out" && pwd)

# One build at a time: the staging dir is shared.
exec 9>"$target_dir/.berth-packaging.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

step "build tools"
"$root/packaging/install-build-deps.sh" --build-only >&2 ||
    fail "install build tools" "see the message above; or install cargo-deb and cargo-generate-rpm by hand"

if [ "$build" -eq 1 ]; then
    step "cargo build --locked ${cargo_profile[*]} --bin berth-agent --bin berth"
    cargo build --locked "${cargo_profile[@]}" --bin berth-agent --bin berth >&2 ||
        fail "cargo build" "the build failed (see above)"
fi
bin_dir=${bin_dir:-$target_dir/$profile_dir}
for b in berth-agent berth; do
    [ -x "$bin_dir/$b" ] || fail "find binaries" "$bin_dir/$b is missing: build it (cargo build ${cargo_profile[*]} --bin $b) or drop --no-build"
done

# cargo-deb and cargo-generate-rpm both read the binaries from
# <target dir>/release/ (the `target/release/` of the metadata): point them at
# a staging dir holding stripped copies of the binaries chosen above, and the
# man pages and completions under release/docs/.
stage=$target_dir/packaging-stage
step "stage stripped binaries from $bin_dir"
rm -rf "$stage"
mkdir -p "$stage/release"
for b in berth-agent berth; do
    cp "$bin_dir/$b" "$stage/release/$b"
    strip --strip-unneeded "$stage/release/$b" || fail "strip $b" "strip failed (apt-get install binutils)"
done

# Reproducible timestamps (packages and man pages): the last commit's, when
# there is one.
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && epoch=$(git -C "$root" log -1 --format=%ct 2>/dev/null) && [ -n "$epoch" ]; then
    export SOURCE_DATE_EPOCH=$epoch
fi

step "man pages and shell completions (the binaries' man and completions)"
"$root/packaging/gen-docs.sh" "$stage/release" "$stage/release/docs" >&2 ||
    fail "generate docs" "packaging/gen-docs.sh failed (see above)"

rm -f "$out"/berth-agent_*.deb "$out"/berth-server_*.deb "$out"/berth-agent-*.rpm "$out"/berth-server-*.rpm

deb_flags=(--no-build --locked --output "$out")
rpm_flags=(--target-dir "$stage" --profile release --output "$out/")
if [ "$fast" -eq 1 ]; then
    deb_flags+=(--fast)
    rpm_flags+=(--payload-compress gzip)
fi
for pkg in agent:berth-agent control:berth-control; do
    dir=${pkg%%:*}
    crate=${pkg#*:}
    step "cargo deb -p $crate"
    CARGO_TARGET_DIR=$stage cargo deb -p "$crate" "${deb_flags[@]}" >&2 ||
        fail "deb $crate" "cargo deb -p $crate failed (see above)"
    step "cargo generate-rpm -p $dir"
    cargo generate-rpm -p "$dir" "${rpm_flags[@]}" >&2 ||
        fail "rpm $crate" "cargo generate-rpm -p $dir failed (see above)"
done

shopt -s nullglob
packages=("$out"/berth-agent_*.deb "$out"/berth-server_*.deb "$out"/berth-agent-*.rpm "$out"/berth-server-*.rpm)
[ ${#packages[@]} -eq 4 ] || fail "collect packages" "expected 4 packages in $out, found ${#packages[@]}: ${packages[*]}"
step "done: ${#packages[@]} packages in $out"
printf '%s\n' "${packages[@]}"
