#!/usr/bin/env bash
# fuzz.sh: builds the libFuzzer targets of tests/fuzz with clang into
# build-fuzz/ (configured once, then rebuilt incrementally, so a re-run
# costs little more than the fuzzing) and runs each target for a bounded
# time over its committed seed corpus. New inputs go to a temporary
# directory: the corpus in the repository changes only with
# --update-corpus. Exits non-zero when the build fails or a target finds a
# crash, leak, timeout or broken property; the input is kept under
# build-fuzz/artifacts/ (commit it under tests/fuzz/crashes/ and report it).
#
#   scripts/fuzz.sh [--seconds N] [--only TARGET] [--update-corpus]
#   scripts/fuzz.sh --replay
#     --seconds N       fuzz each target for N seconds (default 30)
#     --only TARGET     one target: codec, lagoon or redact
#     --update-corpus   merge the new inputs that add coverage into
#                       tests/fuzz/corpus/<target>/
#     --replay          run each input of tests/fuzz/crashes/ once against
#                       its target, with no known issue tolerated, and exit
#
# It does not install anything (scripts/deps.sh does) and never writes to
# the repository unless --update-corpus is given.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$ROOT/tests/fuzz
BUILD=$ROOT/build-fuzz
TARGETS=(codec lagoon redact)
SECONDS_PER_TARGET=30
UPDATE=0
REPLAY=0

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
    --seconds)
        [ $# -ge 2 ] || { echo "fuzz.sh: --seconds needs a value" >&2; exit 2; }
        SECONDS_PER_TARGET=$2
        shift
        ;;
    --seconds=*) SECONDS_PER_TARGET=${1#--seconds=} ;;
    --only)
        [ $# -ge 2 ] || { echo "fuzz.sh: --only needs a target" >&2; exit 2; }
        TARGETS=("$2")
        shift
        ;;
    --update-corpus) UPDATE=1 ;;
    --replay) REPLAY=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "fuzz.sh: unknown option '$1' (see --help)" >&2
        exit 2
        ;;
    esac
    shift
done

case $SECONDS_PER_TARGET in
'' | *[!0-9]* | 0)
    echo "fuzz.sh: --seconds wants a positive integer" >&2
    exit 2
    ;;
esac
for t in "${TARGETS[@]}"; do
    if [ ! -f "$SRC/fuzz_$t.c" ]; then
        echo "fuzz.sh: no target '$t' (have: codec lagoon redact)" >&2
        exit 2
    fi
done

mkdir -p "$BUILD"
# ctest runs this from more than one build tree, and people run it by
# hand: one run at a time per build-fuzz/, the next one waits.
exec 9>"$BUILD/.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

# ---- build ----------------------------------------------------------------

if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz.sh: clang not found (scripts/deps.sh installs it)" >&2
    exit 1
fi
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    # A missing libFuzzer runtime otherwise shows up as a link error deep
    # in the build log.
    probe=$(mktemp -d)
    printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n)\n%s\n' \
        '{ (void)d; (void)n; return 0; }' >"$probe/probe.c"
    if ! clang -fsanitize=fuzzer,address,undefined "$probe/probe.c" \
        -o "$probe/probe" >"$probe/log" 2>&1; then
        cat "$probe/log" >&2
        echo "fuzz.sh: clang cannot link libFuzzer; the runtime comes" \
            "with libclang-rt-14-dev (or libclang-rt-dev)" >&2
        rm -rf "$probe"
        exit 1
    fi
    rm -rf "$probe"
    if ! CC=clang cmake -S "$SRC" -B "$BUILD" \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$BUILD/configure.log" 2>&1; then
        cat "$BUILD/configure.log" >&2
        rm -f "$BUILD/CMakeCache.txt"
        exit 1
    fi
fi
if ! cmake --build "$BUILD" -j2 >"$BUILD/build.log" 2>&1; then
    cat "$BUILD/build.log" >&2
    echo "fuzz.sh: build failed" >&2
    exit 1
fi

# The targets bring their own ASan and UBSan: settings inherited from a
# sanitizer test pass must not change how they report.
export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# ---- replay ---------------------------------------------------------------

if [ "$REPLAY" -eq 1 ]; then
    status=0
    found=0
    for t in "${TARGETS[@]}"; do
        for f in "$SRC/crashes/$t"-*; do
            [ -f "$f" ] || continue
            found=$((found + 1))
            if RW_FUZZ_STRICT=1 "$BUILD/fuzz_$t" "$f" \
                >"$BUILD/replay.log" 2>&1; then
                echo "fixed:  ${f#"$ROOT"/}"
            else
                echo "FAILS:  ${f#"$ROOT"/}"
                grep -E 'property broken|ERROR: |SUMMARY' "$BUILD/replay.log" |
                    sed 's/^/        /' || true
                status=1
            fi
        done
    done
    echo "fuzz.sh: replayed $found input(s) from tests/fuzz/crashes/"
    exit "$status"
fi

# ---- fuzz -----------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rollwave-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$BUILD/artifacts" "$BUILD/logs"

# "#N DONE cov: C ft: F corp: K/..." -> "key value" pairs for the summary.
final_stat() {
    sed -n "s/.*$2: *\([0-9][0-9]*\).*/\1/p" "$1" | tail -n1 || true
}

status=0
for t in "${TARGETS[@]}"; do
    corpus=$SRC/corpus/$t
    fresh=$WORK/$t
    log=$BUILD/logs/fuzz_$t.log
    mkdir -p "$fresh"
    seeds=$(find "$corpus" -type f | wc -l)
    echo "== fuzz_$t: ${SECONDS_PER_TARGET}s over $seeds seeds"
    rc=0
    # The fresh directory comes first: libFuzzer writes new inputs there
    # and only reads the committed corpus.
    "$BUILD/fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=5 \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -dict="$SRC/$t.dict" -artifact_prefix="$BUILD/artifacts/${t}-" \
        "$fresh" "$corpus" >"$log" 2>&1 || rc=$?
    runs=$(final_stat "$log" 'stat::number_of_executed_units')
    rate=$(final_stat "$log" 'stat::average_exec_per_sec')
    # A target that fails at start-up prints no status line at all.
    cov=$({ grep -E '^#[0-9]+' "$log" || true; } | tail -n1 |
        awk '{ for (i = 1; i < NF; i++) if ($i ~ /^(cov|ft|corp):$/) {
                   printf "%s%s %s", sep, $i, $(i + 1); sep = ", " } }')
    added=$(find "$fresh" -type f | wc -l)
    echo "   ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-no coverage stats}," \
        "$added new inputs (log: ${log#"$ROOT"/})"
    if [ "$rc" -ne 0 ]; then
        status=1
        echo "fuzz.sh: fuzz_$t FAILED (exit $rc):" >&2
        grep -nE 'property broken|ERROR: |SUMMARY|Test unit written' "$log" |
            head -n 20 >&2 || true
        echo "--- last lines of $log" >&2
        tail -n 40 "$log" >&2
        echo "fuzz.sh: reproduce with $BUILD/fuzz_$t <artifact>; commit the" \
            "artifact under tests/fuzz/crashes/$t-<what> and report it" >&2
        continue
    fi
    if [ "$UPDATE" -eq 1 ] && [ "$added" -gt 0 ]; then
        before=$(find "$corpus" -type f | wc -l)
        "$BUILD/fuzz_$t" -merge=1 -timeout=5 -rss_limit_mb=2048 \
            "$corpus" "$fresh" >"$BUILD/logs/merge_$t.log" 2>&1
        after=$(find "$corpus" -type f | wc -l)
        echo "   corpus tests/fuzz/corpus/$t: $before -> $after files"
    fi
done
exit "$status"
