#!/usr/bin/env bash
# test.sh: the whole test run, from any directory: installs missing
# packages, builds build/ (RelWithDebInfo), build-asan/ (ASan + UBSan) and
# build-tsan/ (ThreadSanitizer), brings a private local stack up with
# build/'s binaries, runs ctest in build/ and then in build-asan/, then in
# build-tsan/ the unit tests and two scenarios whose daemons run their
# threads (the HTTP server, librdkafka's), tears the stack down (also on
# failure or interrupt) and ends with one line "N passed, N failed" over
# all runs. Exits non-zero if a build or any test failed.
#
#   scripts/test.sh [--no-asan] [--no-tsan] [--unit]
#     --no-asan   skip the ASan + UBSan build and pass
#     --no-tsan   skip the ThreadSanitizer build and pass
#     --unit      unit tests only (ctest -L unit); no stack needed
#
# RW_FORMAT_CHECK=1 (the default) first runs scripts/format.sh --check;
# 0 skips it.
# It does not run the benchmarks.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ASAN=1
TSAN=1
UNIT_ONLY=0
RW_FORMAT_CHECK=${RW_FORMAT_CHECK:-1}
for arg in "$@"; do
    case $arg in
    --no-asan) ASAN=0 ;;
    --no-tsan) TSAN=0 ;;
    --unit) UNIT_ONLY=1 ;;
    -h | --help)
        sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "test.sh: unknown option '$arg' (see --help)" >&2
        exit 2
        ;;
    esac
done

step() { printf '\n== %s\n' "$*"; }
# Build jobs; a machine shared with other work may ask for fewer.
JOBS=${JOBS:-2}
PASSED=0
FAILED=0
STATUS=0

# ctest survives a Ctrl-C (it only stops the test in hand), so the flag
# is checked after each ctest run; the EXIT trap then takes the stack down.
INTERRUPTED=0
trap 'INTERRUPTED=1' INT TERM
stop_if_interrupted() {
    if [ "$INTERRUPTED" -eq 1 ]; then
        printf '\ninterrupted: %d passed, %d failed so far\n' \
            "$PASSED" "$FAILED"
        exit 130
    fi
}

step "dependencies"
"$ROOT/scripts/deps.sh"

if [ "$RW_FORMAT_CHECK" = 1 ]; then
    # Cheapest check first: a formatting slip fails in seconds (clang-format
    # comes with the dependencies).
    step "format"
    "$ROOT/scripts/format.sh" --check
fi

build() {
    local dir=$1
    shift
    step "build $(basename "$dir")"
    mkdir -p "$dir"
    # Configure output only matters when it fails.
    cmake -S "$ROOT" -B "$dir" "$@" >"$dir/configure.log" 2>&1 || {
        cat "$dir/configure.log" >&2
        return 1
    }
    cmake --build "$dir" -j"$JOBS"
}

build "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "$ASAN" -eq 1 ]; then
    build "$ROOT/build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DRW_SANITIZE=ON
fi
if [ "$TSAN" -eq 1 ]; then
    build "$ROOT/build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRW_TSAN=ON
fi

if [ "$UNIT_ONLY" -eq 0 ]; then
    # A private stack directory per run, so a stack someone keeps up with
    # `scripts/stack.sh up` is never touched and runs do not collide.
    export ROLLWAVE_STACK_DIR=${ROLLWAVE_STACK_DIR:-$ROOT/.stack/test-$$}
    stack_down() {
        BUILD_DIR="$ROOT/build" "$ROOT/scripts/stack.sh" down || true
        rmdir "$ROOT/.stack" 2>/dev/null || true
    }
    trap 'stack_down' EXIT
    # A closed stdout must still end through the teardown.
    trap '' PIPE
    step "stack up"
    BUILD_DIR="$ROOT/build" "$ROOT/scripts/stack.sh" up
    eval "$(BUILD_DIR="$ROOT/build" "$ROOT/scripts/stack.sh" env)"
fi

# Two tests at a time: scenarios share the stack (each fleet has its own
# database, simulator and prefixes); the ones that restart or wipe shared
# servers, or time things, are RUN_SERIAL (tests/integration/CMakeLists.txt).
CTEST_ARGS=(--output-on-failure -j "$JOBS")
if [ "$UNIT_ONLY" -eq 1 ]; then
    CTEST_ARGS+=(-L unit)
fi

# Runs ctest in one build dir (further arguments go to ctest after
# CTEST_ARGS) and adds its counts to the totals.
run_ctest() {
    local dir=$1 log rc ctest_pid tail_pid total failed
    shift
    log=$(mktemp)
    step "ctest $(basename "$dir")${*:+ $*}"
    # ctest runs in the background so a Ctrl-C (which ctest survives, only
    # the test in hand dies) can stop it: wait returns early on a trapped
    # signal, and ctest is then terminated. tail shows its output live.
    (cd "$dir" && exec ctest "${CTEST_ARGS[@]}" "$@") >"$log" 2>&1 &
    ctest_pid=$!
    tail -n +1 -f --pid="$ctest_pid" "$log" &
    tail_pid=$!
    while :; do
        rc=0
        wait "$ctest_pid" || rc=$?
        if [ "$INTERRUPTED" -eq 1 ] && kill -0 "$ctest_pid" 2>/dev/null; then
            kill -TERM "$ctest_pid" 2>/dev/null || true
            continue
        fi
        break
    done
    wait "$tail_pid" || true
    total=$(sed -n 's/.*tests failed out of \([0-9][0-9]*\).*/\1/p' "$log" |
        tail -n1)
    failed=$(sed -n 's/.* \([0-9][0-9]*\) tests failed out of.*/\1/p' \
        "$log" | tail -n1)
    if [ -z "$total" ]; then
        # No summary line (no tests, or ctest was stopped): count the
        # result lines it did print.
        total=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#' "$log" || true)
        failed=$((total - $(grep -cE '^ *[0-9]+/[0-9]+ Test +#.* Passed ' \
            "$log" || true)))
        if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
            echo "test.sh: ctest in $dir failed without a summary" >&2
            total=$((total + 1))
            failed=1
        fi
    fi
    rm -f "$log"
    PASSED=$((PASSED + total - failed))
    FAILED=$((FAILED + failed))
    if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
        STATUS=1
    fi
    stop_if_interrupted
}

run_ctest "$ROOT/build"
if [ "$ASAN" -eq 1 ]; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_ctest "$ROOT/build-asan"
fi
if [ "$TSAN" -eq 1 ]; then
    # Races in system libraries that are not built with TSan are listed,
    # each with its reason, in the suppressions file; rollwave's never.
    TSAN_OPTIONS="halt_on_error=1"
    TSAN_OPTIONS+=":suppressions=$ROOT/tests/tsan/suppressions.txt"
    export TSAN_OPTIONS
    run_ctest "$ROOT/build-tsan" -L unit
    if [ "$UNIT_ONLY" -eq 0 ]; then
        # /healthz on the HTTP thread against the main loop (health flags),
        # and a whole rollout through worker and poller with librdkafka's
        # threads. The daemons inherit TSAN_OPTIONS; a report makes one
        # exit 66, which the fleet check fails on.
        RW_ITEST_FILTER=test_metrics_and_health \
            run_ctest "$ROOT/build-tsan" -R '^integration\.test_operations$'
        RW_ITEST_FILTER=test_poll_sequence_to_success \
            run_ctest "$ROOT/build-tsan" -R '^integration\.test_pipeline$'
    fi
    unset TSAN_OPTIONS
fi

printf '\n%d passed, %d failed\n' "$PASSED" "$FAILED"
exit "$STATUS"
