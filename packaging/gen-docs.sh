#!/usr/bin/env bash
# Writes the man pages and shell completions of berth-agent and berth, as
# the built binaries make them from their own clap definitions
# (`NAME man DIR`, `NAME completions SHELL`; agent/src/cli_docs.rs).
#
#   packaging/gen-docs.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds the built `berth-agent` and `berth`. For NAME in both,
# replaces OUT_DIR/NAME/ with:
#   man/NAME.1.gz, man/NAME-SUBCOMMAND….1.gz   one page per command (gzip -9n)
#   completions/NAME.bash, completions/_NAME, completions/NAME.fish
# The pages are dated by SOURCE_DATE_EPOCH when set (build-packages.sh sets
# it to the last commit's time), else today.
#
# Exit codes: 0 ok, 1 a step failed (named), 2 bad usage.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
fail() {
    echo "gen-docs.sh: step '$1' failed: $2" >&2
    exit 1
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
esac
if [ $# -ne 2 ]; then
    echo "gen-docs.sh: expected BIN_DIR and OUT_DIR, got $# arguments" >&2
    usage >&2
    exit 2
fi
bin_dir=$1
out=$2
if [ -z "$bin_dir" ] || [ -z "$out" ]; then
    echo "gen-docs.sh: BIN_DIR and OUT_DIR must not be empty" >&2
    exit 2
fi

for name in berth-agent berth; do
    bin=$bin_dir/$name
    [ -x "$bin" ] || fail "find $name" "$bin is missing or not executable (build it first: cargo build --release --bin $name)"
    dir=$out/$name
    rm -rf "$dir"
    mkdir -p "$dir/man" "$dir/completions" || fail "create $dir" "cannot create $dir"

    "$bin" man "$dir/man" >/dev/null || fail "man pages of $name" "$bin man $dir/man failed (see above)"
    shopt -s nullglob
    pages=("$dir"/man/*.1)
    shopt -u nullglob
    [ ${#pages[@]} -gt 0 ] || fail "man pages of $name" "$bin man wrote no page into $dir/man"
    gzip -9 -n -f "${pages[@]}" || fail "gzip man pages of $name" "gzip failed in $dir/man"

    for shell in bash zsh fish; do
        case $shell in
            bash) file=$dir/completions/$name.bash ;;
            zsh) file=$dir/completions/_$name ;;
            fish) file=$dir/completions/$name.fish ;;
        esac
        "$bin" completions "$shell" >"$file" || fail "$shell completions of $name" "$bin completions $shell failed (see above)"
        [ -s "$file" ] || fail "$shell completions of $name" "$bin completions $shell printed nothing"
    done
    echo "gen-docs.sh: $name: ${#pages[@]} man pages and 3 completion scripts in $dir" >&2
done
