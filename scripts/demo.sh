#!/usr/bin/env bash
# demo.sh: shows rollwave's foundation working end to end on this machine:
# installs missing packages, builds build/, brings a local stack up (under
# .demo/), applies the database migrations, lists the Kafka topics, fires
# one bulk redeploy of three environments at the Lagoon simulator through
# its GraphQL API and follows it until every deployment is terminal, prints
# the simulator's counters, and takes the stack down again.
#
#   scripts/demo.sh [--keep]
#     --keep   leave the stack up afterwards and print how to use it
#
# It never prints the Lagoon token. It does not touch a stack started with
# plain `scripts/stack.sh up` (that one lives in .stack/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEEP=0
for arg in "$@"; do
    case $arg in
    --keep) KEEP=1 ;;
    -h | --help)
        sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "demo.sh: unknown option '$arg' (see --help)" >&2
        exit 2
        ;;
    esac
done

export BUILD_DIR=$ROOT/build
export ROLLWAVE_STACK_DIR=${ROLLWAVE_STACK_DIR:-$ROOT/.demo/stack}
STACK=$ROOT/scripts/stack.sh
BIN=$BUILD_DIR/bin
WORK=$ROOT/.demo
T0=$(date +%s)
POLL_LIMIT_S=${DEMO_POLL_LIMIT_S:-180}

step() { printf '\n[%3ds] == %s\n' "$(($(date +%s) - T0))" "$*"; }
die() {
    printf 'demo: %s\n' "$*" >&2
    exit 1
}

# Short simulated builds so the demo finishes in seconds; any
# ROLLWAVE_SIM_* the caller set wins.
export ROLLWAVE_SIM_ROWS_DELAY_MS=${ROLLWAVE_SIM_ROWS_DELAY_MS:-1000}
export ROLLWAVE_SIM_BUILD_MIN_MS=${ROLLWAVE_SIM_BUILD_MIN_MS:-2000}
export ROLLWAVE_SIM_BUILD_MAX_MS=${ROLLWAVE_SIM_BUILD_MAX_MS:-6000}

step "dependencies"
"$ROOT/scripts/deps.sh"

step "build (build/)"
mkdir -p "$BUILD_DIR" "$WORK"
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    >"$WORK/configure.log" 2>&1 || {
    cat "$WORK/configure.log" >&2
    die "cmake configure failed"
}
echo "  compiling (log: .demo/build.log)"
cmake --build "$BUILD_DIR" -j2 >"$WORK/build.log" 2>&1 || {
    tail -n 40 "$WORK/build.log" >&2
    die "build failed"
}
for b in rollwavectl rollwave-devbroker rollwave-lagoon-sim; do
    [ -x "$BIN/$b" ] || die "$b did not build"
done

cleanup() {
    rm -f "$WORK/auth.header"
    if [ "$KEEP" -eq 0 ]; then
        step "stack down" 2>/dev/null || true
        "$STACK" down || true
        rm -f "$WORK/configure.log" "$WORK/build.log"
        rmdir "$WORK" 2>/dev/null || true
    fi
}
trap cleanup EXIT
# A closed stdout (demo.sh | head) must end the demo through cleanup, not
# kill it silently with the stack left running.
trap '' PIPE
trap 'exit 130' INT
trap 'exit 143' TERM

step "stack up"
"$STACK" up
eval "$("$STACK" env)"

step "rollwavectl migrate"
"$BIN/rollwavectl" migrate

step "Kafka topics on $ROLLWAVE_KAFKA_BROKERS"
KCAT=$(command -v kcat || command -v kafkacat || true)
[ -n "$KCAT" ] || die "kcat not found (scripts/deps.sh installs it)"
prefix=${ROLLWAVE_KAFKA_TOPIC_PREFIX:-rollwave.}
"$KCAT" -L -b "$ROLLWAVE_KAFKA_BROKERS" -m 10 |
    grep -F "topic \"$prefix" | sed 's/^ */  /' || die "no rollwave topics"

# The token goes to curl in a private header file, never on a command line
# where ps would show it, and never to the terminal.
(umask 077 && printf 'Authorization: Bearer %s\n' \
    "$ROLLWAVE_LAGOON_TOKEN" >"$WORK/auth.header")

# POST a GraphQL document with variables (JSON on stdin) to the simulator.
graphql() {
    curl -fsS --max-time 10 -H @"$WORK/auth.header" \
        -H 'Content-Type: application/json' --data-binary @- \
        "$ROLLWAVE_LAGOON_URL"
}

json() { python3 -c "$1"; }

step "bulkDeployEnvironmentLatest for 3 environments"
resp=$(json '
import json
envs = [("demo-shop-%d" % i, "main") for i in (1, 2, 3)]
print(json.dumps({
    "query": "mutation ($input: BulkDeploymentLatestInput!) "
             "{ bulkDeployEnvironmentLatest(input: $input) }",
    "variables": {"input": {
        "name": "rollwave demo",
        "buildVariables": [],
        "environments": [{"environment": {"name": e, "project": {"name": p}}}
                         for p, e in envs],
    }},
}))' | graphql) || die "bulk deploy request failed"
bulk_id=$(printf '%s' "$resp" | json '
import json, sys
doc = json.load(sys.stdin)
if doc.get("errors") or not (doc.get("data") or {}).get(
        "bulkDeployEnvironmentLatest"):
    sys.exit("demo: bulk deploy refused: %s" % doc.get("errors"))
print(doc["data"]["bulkDeployEnvironmentLatest"])')
echo "  bulk id: $bulk_id"

step "deploymentsByBulkId, every second, until all 3 are terminal"
query=$(BULK_ID=$bulk_id json '
import json, os
print(json.dumps({
    "query": "query ($bulkId: String!) { deploymentsByBulkId(bulkId: $bulkId)"
             " { id name status environment { name project { name } } } }",
    "variables": {"bulkId": os.environ["BULK_ID"]},
}))')
done_=0
for ((i = 1; i <= POLL_LIMIT_S; i++)); do
    sleep 1
    resp=$(printf '%s' "$query" | graphql) || {
        echo "  t=${i}s: request failed, retrying"
        continue
    }
    line=$(printf '%s' "$resp" | json '
import collections, json, sys
doc = json.load(sys.stdin)
if doc.get("errors"):
    print("errors: %s" % doc["errors"])
    sys.exit(0)
rows = (doc.get("data") or {}).get("deploymentsByBulkId") or []
count = collections.Counter(r["status"] for r in rows)
terminal = sum(count[s] for s in ("complete", "failed", "cancelled"))
print("%d/3 rows, %d terminal: %s%s" % (
    len(rows), terminal,
    " ".join("%s=%d" % kv for kv in sorted(count.items())) or "-",
    " DONE" if len(rows) == 3 and terminal == 3 else ""))')
    echo "  t=${i}s: $line"
    if [[ $line == *" DONE" ]]; then
        done_=1
        break
    fi
done
[ "$done_" -eq 1 ] || die "deployments not terminal after ${POLL_LIMIT_S}s"

step "simulator counters (/sim/stats)"
curl -fsS --max-time 10 -H @"$WORK/auth.header" \
    "$ROLLWAVE_SIM_ADMIN_URL/sim/stats" | python3 -m json.tool

if [ "$KEEP" -eq 1 ]; then
    step "stack left up"
    cat <<EOF
  Use it from this shell:
    export ROLLWAVE_STACK_DIR=$ROLLWAVE_STACK_DIR
    eval "\$(scripts/stack.sh env)"
    build/bin/rollwavectl --help
  Take it down:
    ROLLWAVE_STACK_DIR=$ROLLWAVE_STACK_DIR scripts/stack.sh down
EOF
fi
step "demo finished in $(($(date +%s) - T0))s"
