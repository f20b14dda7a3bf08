#!/usr/bin/env bash
# Coverage-guided fuzzing of berth's untrusted inputs (fuzz/README.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET…]     fuzz each target for SECONDS (default 20)
#   scripts/fuzz.sh --merge [SECONDS] [TARGET…]
#                                           the same, then fold what was new into fuzz/corpus/
#   scripts/fuzz.sh --regressions           replay fuzz/regressions/ (known crashes)
#   scripts/fuzz.sh --list                  the targets
#
# Installs cargo-fuzz when it is missing, builds every target once with
# AddressSanitizer and libFuzzer's coverage instrumentation on the stable
# toolchain (RUSTC_BOOTSTRAP=1 unlocks the -Z flags cargo-fuzz passes), then
# runs each target on its corpus in fuzz/corpus/<target>/. Inputs the run
# finds go to a temporary directory, so the work tree stays clean unless
# --merge is given. A crash, a panic, a leak, a timeout or running out of
# memory fails the run: the script goes on with the other targets, then
# prints each crashing input, a minimised copy, and the command that
# reproduces it, and exits 1.
#
# Environment: FUZZ_JOBS (targets fuzzed at once, default 1),
# FUZZ_SANITIZER (address, the default, or none: a faster build and runs,
# still coverage-guided, without AddressSanitizer), CARGO_TARGET_DIR
# (default fuzz/target).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
TARGETS=(taskdef_parse agent_message_decode server_message_decode certificate_request_decode)

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

mode=run
case ${1:-} in
    -h | --help) usage ;;
    --list) printf '%s\n' "${TARGETS[@]}"; exit 0 ;;
    --merge) mode=merge; shift ;;
    --regressions) mode=regressions; shift ;;
esac
seconds=20
if [[ ${1:-} =~ ^[0-9]+$ ]]; then
    seconds=$1
    shift
fi
if (($#)); then
    for t in "$@"; do
        [[ " ${TARGETS[*]} " == *" $t "* ]] || { echo "fuzz: unknown target $t (see --list)" >&2; exit 2; }
    done
    TARGETS=("$@")
fi
jobs=${FUZZ_JOBS:-1}
sanitizer=${FUZZ_SANITIZER:-address}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# cargo-fuzz passes -Zsanitizer=address and other unstable flags; the stable
# compiler accepts them with RUSTC_BOOTSTRAP=1 (it ships the sanitizer
# runtimes). No nightly toolchain is needed.
export RUSTC_BOOTSTRAP=1
export RUST_BACKTRACE=1
target_dir=${CARGO_TARGET_DIR:-fuzz/target}
bin_dir=$target_dir/x86_64-unknown-linux-gnu/release

echo "==> fuzz: cargo fuzz build (coverage instrumentation, sanitizer: $sanitizer)"
build_start=$SECONDS
cargo fuzz build --fuzz-dir fuzz --target-dir "$target_dir" --sanitizer "$sanitizer"
echo "==> fuzz: built in $((SECONDS - build_start)) s"

# Per-target libFuzzer options: inputs up to a little over the largest seed,
# the matching dictionary.
max_len() {
    case $1 in
        taskdef_parse | agent_message_decode) echo 8192 ;;
        server_message_decode) echo 16384 ;;
        *) echo 4096 ;;
    esac
}
dict() {
    case $1 in
        taskdef_parse) echo fuzz/dict/taskdef.dict ;;
        *) echo fuzz/dict/proto.dict ;;
    esac
}

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [[ $mode == regressions ]]; then
    failed=0
    for t in "${TARGETS[@]}"; do
        dir=fuzz/regressions/$t
        [[ -d $dir ]] || continue
        for input in "$dir"/*; do
            [[ -e $input ]] || continue # an empty folder
            if "$bin_dir/$t" -artifact_prefix="$work/" "$input" >"$work/replay.log" 2>&1; then
                echo "fixed:   $t $input (move it into fuzz/corpus/$t/)"
            else
                echo "crashes: $t $input: $(grep -A1 -m1 'panicked at' "$work/replay.log" | tail -1)"
                failed=1
            fi
        done
    done
    exit $failed
fi

# Runs one target; writes $work/<target>.status ("ok" or the artifact path).
fuzz_one() {
    local t=$1 log=$work/$1.log new=$work/$1.new artifacts=fuzz/artifacts/$1/
    mkdir -p "$new" "$artifacts"
    local start=$SECONDS rc=0
    # First directory: where new inputs go (temporary); second: the repo's
    # corpus, read only. -timeout: one input taking this long is a finding.
    "$bin_dir/$t" "$new" "fuzz/corpus/$t" \
        -max_total_time="$seconds" -max_len="$(max_len "$t")" -dict="$(dict "$t")" \
        -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts" \
        -print_final_stats=1 >"$log" 2>&1 || rc=$?
    local stats
    stats=$(grep -E '^#[0-9]+\s+DONE' "$log" | tail -1 | sed -E 's/^#([0-9]+)\s+DONE\s+/runs: \1 /' || true)
    if ((rc == 0)); then
        echo "ok" >"$work/$t.status"
        echo "==> fuzz: $t: no crash in $((SECONDS - start)) s; ${stats:-see log}; $(find "$new" -type f | wc -l) new inputs"
    else
        local artifact
        artifact=$(grep -oE 'Test unit written to \S+' "$log" | tail -1 | cut -d' ' -f5 || true)
        echo "${artifact:-none}" >"$work/$t.status"
        echo "==> fuzz: $t: FAILED after $((SECONDS - start)) s (exit $rc)"
        # from the panic or sanitizer report on, without libFuzzer's progress lines
        # (up to the fuzz target's frame: libFuzzer's own frames say nothing)
        awk '/panicked at|==[0-9]+== ?ERROR|ERROR: libFuzzer/ { on = 1 }
             on { print }
             /rust_fuzzer_test_input|LLVMFuzzerTestOneInput/ { on = 0 }' "$log" |
            grep -vE '^(#[0-9]+|INFO:)|NEW_FUNC' | head -60 >&2 || true
    fi
}

failed=()
running=0
for t in "${TARGETS[@]}"; do
    echo "==> fuzz: $t for $seconds s"
    if ((jobs > 1)); then
        fuzz_one "$t" &
        running=$((running + 1))
        if ((running >= jobs)); then
            wait -n || true
            running=$((running - 1))
        fi
    else
        fuzz_one "$t"
    fi
done
wait

for t in "${TARGETS[@]}"; do
    status=$(cat "$work/$t.status" 2>/dev/null || echo none)
    [[ $status == ok ]] && continue
    failed+=("$t")
    echo
    echo "==> fuzz: $t crashed"
    if [[ $status == none || ! -f $status ]]; then
        echo "    no crashing input was written; the log was:" >&2
        tail -40 "$work/$t.log" >&2 || true
        continue
    fi
    echo "    input:      $status ($(wc -c <"$status") bytes)"
    # libFuzzer's crash minimisation (what `cargo fuzz tmin` runs), bounded
    "$bin_dir/$t" -minimize_crash=1 -runs=2000 -max_total_time=120 -timeout=10 \
        -artifact_prefix="fuzz/artifacts/$t/" "$status" >"$work/$t.tmin.log" 2>&1 || true
    smallest=$(grep -oE 'failed to minimize beyond \S+' "$work/$t.tmin.log" | tail -1 | cut -d' ' -f5 || true)
    if [[ -n $smallest && -f $smallest && $smallest != "$status" ]]; then
        echo "    minimised:  $smallest ($(wc -c <"$smallest") bytes)"
    else
        smallest=$status
        echo "    minimised:  (libFuzzer found no smaller input that crashes)"
    fi
    echo "    reproduce:  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $t $smallest"
    echo "    keep it:    cp $smallest fuzz/regressions/$t/ (until fixed; then into fuzz/corpus/$t/)"
done

if [[ $mode == merge ]]; then
    for t in "${TARGETS[@]}"; do
        before=$(find "fuzz/corpus/$t" -type f | wc -l)
        # -use_counters=0: keep an input for new edges, not for new hit counts
        # of known ones (a third of the files for the same edge coverage)
        "$bin_dir/$t" -merge=1 -use_counters=0 "fuzz/corpus/$t" "$work/$t.new" \
            -max_len="$(max_len "$t")" -artifact_prefix="$work/" \
            >"$work/$t.merge.log" 2>&1 || { echo "fuzz: merging $t failed" >&2; tail -20 "$work/$t.merge.log" >&2; exit 1; }
        echo "==> fuzz: $t corpus: $before → $(find "fuzz/corpus/$t" -type f | wc -l) files"
    done
fi

if ((${#failed[@]})); then
    echo "==> fuzz: FAILED: ${failed[*]}"
    exit 1
fi
echo "==> fuzz: ${#TARGETS[@]} targets, $seconds s each: no crash"
