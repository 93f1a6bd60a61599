#!/usr/bin/env bash
# bench.sh: the rollout benchmark on a private stack. Brings Postgres,
# Redis, the devbroker and the Lagoon simulator up with scripts/stack.sh in
# a directory of its own (the simulator at zero build time, so the figures
# are rollwave's own cost, not Lagoon's), runs rollwave-bench-rollout with
# the given arguments and takes the stack down again, also on failure or
# Ctrl-C. It prints figures; it does not judge them. With --throttle it
# runs rollwave-bench-throttle instead (the fleet throttle against fixed
# build times; it sets the simulator's timings itself). With
# --due-selection it runs rollwave-bench-due: the scheduler's tick over
# fleets of growing size with the same due set (only the producer runs).
# The rollout benchmark ends with the bulk-write ceiling of this Postgres
# and rollwave's run_targets writes as a share of it (--ceiling-rows).
#
#   scripts/bench.sh [rollwave-bench-rollout options]
#   scripts/bench.sh --instances 10000 --workers 2
#   scripts/bench.sh --instances 1000000      # peak RSS at a million
#   scripts/bench.sh --throttle [rollwave-bench-throttle options]
#   scripts/bench.sh --throttle --instances 5000 --build-ms 2000 \
#       --max-in-flight 100 --workers 2 --pollers 2
#   scripts/bench.sh --due-selection [rollwave-bench-due options]
#   scripts/bench.sh --due-selection --fleets 10000,1000000 --due 1000
#
# Environment:
#   BUILD_DIR            build tree with bin/ (default: build, relative to
#                        the repository root); it is not built here
#   ROLLWAVE_STACK_DIR   stack state directory (default: a new directory
#                        under $TMPDIR)
#   ROLLWAVE_SIM_*       simulator settings; the timings default to 0
#
# It does not build, and it never touches a stack it did not start.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-build}
case $BUILD_DIR in
/*) ;;
*) BUILD_DIR=$ROOT/$BUILD_DIR ;;
esac
export BUILD_DIR
BIN=$BUILD_DIR/bin

# --throttle or --due-selection picks the program; every other argument
# is the program's
PROGRAM=rollwave-bench-rollout
args=()
for arg in "$@"; do
    case $arg in
    --throttle) PROGRAM=rollwave-bench-throttle ;;
    --due-selection) PROGRAM=rollwave-bench-due ;;
    *) args+=("$arg") ;;
    esac
done
set -- "${args[@]+"${args[@]}"}"

for arg in "$@"; do
    if [ "$arg" = --help ]; then
        sed -n '2,31p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        echo
        [ -x "$BIN/$PROGRAM" ] && exec "$BIN/$PROGRAM" --help
        exit 0
    fi
done

missing=()
for b in "$PROGRAM" rollwave-producer rollwave-worker \
    rollwave-poller rollwave-devbroker rollwave-lagoon-sim; do
    [ -x "$BIN/$b" ] || missing+=("$b")
done
if [ "${#missing[@]}" -gt 0 ]; then
    printf 'bench: %s not found in %s; build first:\n' "${missing[*]}" \
        "$BIN" >&2
    printf '  cmake -S %s -B %s -DCMAKE_BUILD_TYPE=RelWithDebInfo && ' \
        "$ROOT" "$BUILD_DIR" >&2
    printf 'cmake --build %s -j2\n' "$BUILD_DIR" >&2
    exit 1
fi

if [ -n "${ROLLWAVE_STACK_DIR:-}" ]; then
    STACK_DIR=$ROLLWAVE_STACK_DIR
    # a stack that is already up belongs to someone else: refuse it
    if [ -e "$STACK_DIR" ]; then
        echo "bench: $STACK_DIR exists; give a new directory" >&2
        exit 1
    fi
else
    STACK_DIR=$(mktemp -u "${TMPDIR:-/tmp}/rollwave-bench-stack.XXXXXX")
fi
export ROLLWAVE_STACK_DIR=$STACK_DIR

# Zero build time: rows appear at once and builds finish at once, so the
# pipeline itself is what is measured. Callers may override each one.
export ROLLWAVE_SIM_ROWS_DELAY_MS=${ROLLWAVE_SIM_ROWS_DELAY_MS:-0}
export ROLLWAVE_SIM_BUILD_MIN_MS=${ROLLWAVE_SIM_BUILD_MIN_MS:-0}
export ROLLWAVE_SIM_BUILD_MAX_MS=${ROLLWAVE_SIM_BUILD_MAX_MS:-0}
export ROLLWAVE_SIM_PHASE_MS=${ROLLWAVE_SIM_PHASE_MS:-0}
export ROLLWAVE_SIM_LOG_LEVEL=${ROLLWAVE_SIM_LOG_LEVEL:-warn}

# shellcheck disable=SC2317  # called by the EXIT trap
teardown() {
    "$ROOT/scripts/stack.sh" down >/dev/null 2>&1 || true
}
trap teardown EXIT
trap 'exit 130' INT TERM

"$ROOT/scripts/stack.sh" up >&2
eval "$("$ROOT/scripts/stack.sh" env)"

rc=0
"$BIN/$PROGRAM" "$@" || rc=$?
exit "$rc"
