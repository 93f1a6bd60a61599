#!/usr/bin/env bash
# demo.sh: a whole rollout on this machine. Installs missing packages, builds
# build/, brings a local stack up (under .demo/), applies the migrations,
# lists the Kafka topics, seeds a fleet (about 2,000 instances over several
# store apps, with beta groups, trials, ineligible instances and instances
# without a Lagoon target; one store app rolls out in canary waves with a
# short bake), starts two workers and a poller, runs one scheduler tick,
# shows the rollout's progress live (waves included) until every run is
# final, then prints the run summary, the canary run's waves, the topic lag
# and the simulator's counters, and takes everything down again.
# rollwave-api runs alongside: the dashboard's URL and a viewer token are
# printed before the rollout, so it can be watched in a browser.
#
#   scripts/demo.sh [--keep]
#     --keep   leave the stack and the API up afterwards (the dashboard
#              stays browsable) and print how to use and stop them
#
# DEMO_INSTANCES (default 2000) sets the fleet size, DEMO_MAX_IN_FLIGHT
# (default 200) the fleet throttle's cap on builds in flight and
# DEMO_TRIGGER_RATE (default 3000/min) its trigger rate. It never prints the
# Lagoon token. It does not touch a stack started with plain
# `scripts/stack.sh up` (that one lives in .stack/). DEMO_API_PORT (default
# 8080) is the dashboard's port.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEEP=0
for arg in "$@"; do
    case $arg in
    --keep) KEEP=1 ;;
    -h | --help)
        sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
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
POLL_LIMIT_S=${DEMO_POLL_LIMIT_S:-300}
DEMO_INSTANCES=${DEMO_INSTANCES:-2000}
DEMO_MAX_IN_FLIGHT=${DEMO_MAX_IN_FLIGHT:-200}
DEMO_TRIGGER_RATE=${DEMO_TRIGGER_RATE:-3000/min}
DEMO_API_PORT=${DEMO_API_PORT:-8080}
API_PID=

step() { printf '\n[%3ds] == %s\n' "$(($(date +%s) - T0))" "$*"; }
die() {
    printf 'demo: %s\n' "$*" >&2
    exit 1
}

# Short simulated builds so the demo finishes in seconds; any
# ROLLWAVE_SIM_* the caller set wins.
export ROLLWAVE_SIM_ROWS_DELAY_MS=${ROLLWAVE_SIM_ROWS_DELAY_MS:-1000}
export ROLLWAVE_SIM_BUILD_MIN_MS=${ROLLWAVE_SIM_BUILD_MIN_MS:-1000}
export ROLLWAVE_SIM_BUILD_MAX_MS=${ROLLWAVE_SIM_BUILD_MAX_MS:-3000}
# a few failed builds, so the summary shows partial failures
export ROLLWAVE_SIM_FAIL_RATE=${ROLLWAVE_SIM_FAIL_RATE:-0.02}

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
for b in rollwavectl rollwave-devbroker rollwave-lagoon-sim rollwave-producer \
    rollwave-worker rollwave-poller rollwave-api; do
    [ -x "$BIN/$b" ] || die "$b did not build"
done

PIDS=()
stop_daemons() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
cleanup() {
    stop_daemons
    if [ "$KEEP" -eq 0 ]; then
        if [ -n "$API_PID" ]; then
            kill -TERM "$API_PID" 2>/dev/null || true
            wait "$API_PID" 2>/dev/null || true
        fi
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

PG() { psql "$ROLLWAVE_PG_DSN" -X -q -A -t -c "$1"; }

step "seed a fleet of ${DEMO_INSTANCES} instances"
"$BIN/rollwavectl" seed --instances "$DEMO_INSTANCES" --store-apps 5 \
    --beta-pct 10 --trial-pct 5 --ineligible-pct 5 --no-target-pct 2

# The first store app rolls out in waves: its beta instances and the most
# outdated first (10), then a quarter, then the rest, each after a 3 s
# bake; more than 10% failures in a wave would pause its run.
CANARY_APP=$(PG "SELECT min(id) FROM store_apps")
PG "UPDATE store_apps SET strategy = '{\"waves\": [\"10\", \"25%\",
    \"100%\"], \"bake\": \"3s\", \"max_failures_wave\": \"10%\"}'
    WHERE id = $CANARY_APP"
echo "  store app $CANARY_APP: waves 10, 25%, 100%, bake 3s, max failures 10% a wave"

# One tick takes every due instance; short polls for a short demo.
export ROLLWAVE_MAX_PER_RUN=100000 ROLLWAVE_BULK_CHUNK_SIZE=50
export ROLLWAVE_FIRST_POLL_DELAY_S=1 ROLLWAVE_POLL_INTERVAL_S=1

step "fleet throttle: at most $DEMO_MAX_IN_FLIGHT builds in flight, $DEMO_TRIGGER_RATE"
"$BIN/rollwavectl" throttle --max-in-flight "$DEMO_MAX_IN_FLIGHT" \
    --rate "$DEMO_TRIGGER_RATE" --by demo | sed 's/^/  /'

step "start 2 workers and a poller (logs in .demo/logs)"
mkdir -p "$WORK/logs"
export ROLLWAVE_KAFKA_SESSION_TIMEOUT_MS=6000 ROLLWAVE_METRICS_PORT=0
PIDS=()
for role in worker worker poller; do
    n=${#PIDS[@]}
    "$BIN/rollwave-$role" >"$WORK/logs/$role-$n.log" 2>&1 &
    PIDS+=($!)
    echo "  rollwave-$role pid $!"
done

step "scheduler tick (rollwave-producer --once)"
"$BIN/rollwave-producer" --once 2>&1 | grep -E 'event=(tick|run_created)' |
    sed 's/^[^ ]* [a-z]* /  /'

step "start the producer daemon: its leader runs the recovery sweep"
# Its own scheduler tick finds nothing due now (every instance is in a
# run); the sweep repairs what a crash would leave (see README) and
# releases the canary app's next wave once its bake is over.
ROLLWAVE_TICK_INTERVAL_S=86400 ROLLWAVE_SWEEP_INTERVAL_S=1 \
    "$BIN/rollwave-producer" \
    >"$WORK/logs/producer.log" 2>&1 &
PIDS+=($!)
echo "  rollwave-producer pid $!"

step "rollwave-api: the dashboard (log in .demo/logs/api.log)"
ROLLWAVE_API_PORT=$DEMO_API_PORT ROLLWAVE_API_BIND=127.0.0.1 \
    ROLLWAVE_METRICS_PORT=0 "$BIN/rollwave-api" >"$WORK/logs/api.log" 2>&1 &
API_PID=$!
# a token from an earlier --keep run is replaced, not duplicated
"$BIN/rollwavectl" token revoke demo-viewer >/dev/null 2>&1 || true
VIEWER_TOKEN=$("$BIN/rollwavectl" token create --name demo-viewer \
    --role viewer --by demo 2>/dev/null) || die "cannot create a token"
for ((i = 0; i < 50; i++)); do
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$DEMO_API_PORT/" &&
        break
    kill -0 "$API_PID" 2>/dev/null ||
        die "rollwave-api exited (port $DEMO_API_PORT busy? set DEMO_API_PORT)"
    sleep 0.1
done
echo "  dashboard     http://127.0.0.1:$DEMO_API_PORT/  (rollwave-api pid $API_PID)"
echo "  viewer token  $VIEWER_TOKEN"

step "rollout in progress (builds in flight / throttle cap, targets by state, runs by status)"
SQL_FLIGHT="SELECT rw_throttle_in_flight() || '/' ||
             LEAST(max_in_flight, effective_limit) FROM fleet_throttle"
SQL_TARGETS="SELECT COALESCE(string_agg(state || ' ' || n, '  '
               ORDER BY array_position(ARRAY['pending','claimed','triggered',
               'deploying','succeeded','failed','timed_out','skipped',
               'cancelled'], state)), '-')
             FROM (SELECT state, count(*) n FROM run_targets GROUP BY state) x"
SQL_WAVES="SELECT COALESCE(string_agg('wave ' || w.wave || '/' || n.waves
               || ' ' || w.state, ', '), 'done')
           FROM run_waves w JOIN deployment_runs r ON r.id = w.run_id
           CROSS JOIN LATERAL (SELECT max(x.wave) AS waves FROM run_waves x
                                WHERE x.run_id = w.run_id) n
           WHERE r.store_app_id = $CANARY_APP AND n.waves > 1
             AND w.state IN ('running', 'baking', 'awaiting_promotion')"
SQL_OPEN="SELECT count(*) FROM deployment_runs
          WHERE status IN ('pending', 'running', 'paused')"
SQL_RUNS="SELECT string_agg(status || ' ' || n, '  ' ORDER BY status)
          FROM (SELECT status, count(*) n FROM deployment_runs
                GROUP BY status) x"
done_=0
last=""
peak=0
for ((i = 1; i <= POLL_LIMIT_S; i++)); do
    flight=$(PG "$SQL_FLIGHT")
    [ "${flight%%/*}" -gt "$peak" ] && peak=${flight%%/*}
    line="in flight $flight | targets: $(PG "$SQL_TARGETS") | runs: $(PG "$SQL_RUNS") | canary: $(PG "$SQL_WAVES")"
    if [ -t 1 ]; then
        printf '\r\033[K  %3ds  %s' "$i" "$line"
    elif [ "$line" != "$last" ]; then
        printf '  %3ds  %s\n' "$i" "$line"
    fi
    last=$line
    if [ "$(PG "$SQL_OPEN")" = "0" ]; then
        done_=1
        break
    fi
    sleep 1
done
[ -t 1 ] && echo
[ "$done_" -eq 1 ] || die "runs not final after ${POLL_LIMIT_S}s"

step "runs"
"$BIN/rollwavectl" runs

step "the canary app's run, wave by wave"
CANARY_RUN=$(PG "SELECT uuid FROM deployment_runs
                 WHERE store_app_id = $CANARY_APP ORDER BY id LIMIT 1")
"$BIN/rollwavectl" run show "$CANARY_RUN" |
    awk '/^waves /{on=1} on&&/^$/{exit} on{print "  " $0}'

# The poller fetches a failed build's log after its poll's commit and
# redacts it before storing it (ROLLWAVE_LOG_FETCH=failed, the default);
# the simulator plants a bearer token and a deploy key in every log.
step "a failed build's log, redacted when stored (rollwavectl run logs --failed)"
LOGGED=
for ((i = 0; i < 100; i++)); do
    LOGGED=$(PG "SELECT r.uuid || ' ' || t.instance_id FROM target_logs l
                 JOIN run_targets t ON t.id = l.target_id
                 JOIN deployment_runs r ON r.id = l.run_id
                 WHERE l.state = 'stored' ORDER BY l.id LIMIT 1")
    [ -n "$LOGGED" ] && break
    sleep 0.1
done
if [ -n "$LOGGED" ]; then
    read -r LOG_RUN LOG_INSTANCE <<<"$LOGGED"
    echo "  rollwavectl run logs $LOG_RUN --instance $LOG_INSTANCE --failed"
    "$BIN/rollwavectl" run logs "$LOG_RUN" --instance "$LOG_INSTANCE" \
        --failed | awk 'NR <= 3 || /Bearer|REDACTED|ERROR:|Build failed/ {
            print "  " $0; gap = 0; next } !gap { print "  ..."; gap = 1 }'
else
    echo "  no stored log yet (ROLLWAVE_LOG_FETCH=${ROLLWAVE_LOG_FETCH:-failed})"
fi

step "fleet throttle after the rollout (peak seen in flight: $peak)"
"$BIN/rollwavectl" throttle | sed 's/^/  /'

step "Kafka consumer lag"
"$BIN/rollwavectl" lag --interval 0 \
    --group "rollwave-worker" --topic "${prefix}batches"
"$BIN/rollwavectl" lag --interval 0 \
    --group "rollwave-poller" --topic "${prefix}poll"

step "simulator counters"
curl -fsS --max-time 10 "$ROLLWAVE_SIM_ADMIN_URL/sim/stats?triggers=false" |
    CAP=$DEMO_MAX_IN_FLIGHT python3 -c '
import json, os, sys
d = json.load(sys.stdin)
cap = int(os.environ["CAP"])
print("  bulk calls %d, environments triggered %d, most per call %d, "
      "environments triggered twice %d" % (
          d["bulk_calls"], d["environments_triggered"],
          d["max_envs_per_call"], d["duplicate_triggers"]))
peak = d["peak_in_progress_builds"]
print("  peak concurrent builds %d against a cap of %d (%s); API latency "
      "mean %.1f ms, p95 %.1f ms" % (
          peak, cap, "within the cap" if peak <= cap else "OVER THE CAP",
          d["api_latency_ms"]["mean"], d["api_latency_ms"]["p95"]))'

step "stop the daemons (SIGTERM: drain, then exit)"
stop_daemons
if [ "$KEEP" -eq 1 ]; then
    step "stack left up"
    cat <<EOF
  Use it from this shell:
    export ROLLWAVE_STACK_DIR=$ROLLWAVE_STACK_DIR
    eval "\$(scripts/stack.sh env)"
    build/bin/rollwavectl --help
  The dashboard stays at http://127.0.0.1:$DEMO_API_PORT/ (viewer token
  above; an operator's: build/bin/rollwavectl token create --name NAME
  --role operator).
  Take it down:
    kill $API_PID
    ROLLWAVE_STACK_DIR=$ROLLWAVE_STACK_DIR scripts/stack.sh down
EOF
fi
step "demo finished in $(($(date +%s) - T0))s"
