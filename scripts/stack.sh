#!/usr/bin/env bash
# stack.sh: a throwaway local stack for the demo, the integration tests and
# the benchmarks: Postgres, Redis, the development Kafka broker
# (rollwave-devbroker) and the Lagoon simulator (rollwave-lagoon-sim), all on
# free loopback ports, all state under one directory.
#
#   scripts/stack.sh up       start what is not running yet (idempotent)
#   scripts/stack.sh env      print `export` lines for the ROLLWAVE_* endpoints
#   scripts/stack.sh status   show each service up or down
#   scripts/stack.sh down     stop every process it started, remove its files
#
# Environment:
#   ROLLWAVE_STACK_DIR       state directory (default: <repo>/.stack)
#   BUILD_DIR                build tree with bin/ (default: build, relative
#                            to the repository root)
#   ROLLWAVE_STACK_SERVICES  subset to run (default: "pg redis kafka lagoon")
#   ROLLWAVE_SIM_*           passed through to rollwave-lagoon-sim
#
# Files in the stack directory that other code reads (keep them stable):
#   pg.base (Postgres files: data/ with the socket, pg.log), pg.port,
#   redis.port, redis.pid, redis.log, redis/ (dir), kafka.bootstrap,
#   kafka.pid, sim.port, sim.pid, sim.token. The fault tests restart Redis
#   and Postgres from these with the same command lines as below.
#
# It is not a production setup: Postgres runs with fsync off and trust
# authentication on loopback, Redis without persistence, and Kafka is
# librdkafka's in-memory mock cluster.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${ROLLWAVE_STACK_DIR:-$ROOT/.stack}
case $STACK_DIR in
/*) ;;
*) STACK_DIR=$PWD/$STACK_DIR ;;
esac
BUILD_DIR=${BUILD_DIR:-build}
case $BUILD_DIR in
/*) ;;
*) BUILD_DIR=$ROOT/$BUILD_DIR ;;
esac
BIN=$BUILD_DIR/bin
SERVICES=${ROLLWAVE_STACK_SERVICES:-pg redis kafka lagoon}
KAFKA_PARTITIONS=6

# Progress output must never abort a teardown (stdout may be a closed pipe).
say() { printf 'stack: %s\n' "$*" 2>/dev/null || true; }
die() {
    printf 'stack: %s\n' "$*" >&2
    exit 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
wants() { [[ " $SERVICES " == *" $1 "* ]]; }

# A process is ours if its pid is alive and its command line names the
# program we started: a recycled pid must never be signalled.
pid_alive() {
    local pid=$1 name=$2 cmd
    [ -n "$pid" ] || return 1
    cmd=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || return 1
    [[ $cmd == *"$name"* ]]
}

pidfile_alive() {
    local file=$1 name=$2
    [ -s "$file" ] && pid_alive "$(head -n1 "$file")" "$name"
}

# Stops a pid with SIGTERM, then SIGKILL after about 10 s.
stop_pid() {
    local pid=$1 name=$2 i
    pid_alive "$pid" "$name" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" "$name" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.1
}

port_in_use() {
    [ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]
}

# A random free loopback port in 20000-60000 (no python needed).
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40001))
        if ! port_in_use "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found in 20000-60000"
}

# Whether a child we just started still runs. Not by name: until it
# has exec'd, its command line is still this script's.
child_alive() {
    local state
    state=$({ sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1; } \
        2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

wait_file() {
    local file=$1 pid=$2 name=$3 log=$4 i
    for ((i = 0; i < 300; i++)); do
        [ -s "$file" ] && return 0
        if ! child_alive "$pid"; then
            tail -n 20 "$log" >&2 || true
            die "$name exited before writing $(basename "$file")"
        fi
        sleep 0.1
    done
    tail -n 20 "$log" >&2 || true
    die "$name did not write $(basename "$file") within 30 s"
}

random_hex() {
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

# --- Postgres -------------------------------------------------------------

pg_bindir() {
    local d
    d=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then
        echo "$d"
        return 0
    fi
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    [ -n "$d" ] && [ -x "$d/initdb" ] || die "no Postgres server binaries" \
        "(run scripts/deps.sh)"
    echo "$d"
}

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# initdb and postgres refuse to run as root: as root they run as the
# `postgres` system user. cd / first so no inaccessible cwd gets in the way.
as_pg() {
    if [ "$IS_ROOT" -eq 1 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# Where the Postgres files live: <stack>/pg unless the postgres user cannot
# reach it or the socket path would exceed the unix socket limit; then a
# directory under /tmp named after the stack directory. Recorded in
# <stack>/pg.base so `down` finds it.
pg_base() {
    if [ -s "$STACK_DIR/pg.base" ]; then
        cat "$STACK_DIR/pg.base"
        return 0
    fi
    local base=$STACK_DIR/pg
    mkdir -p "$base"
    if [ "$IS_ROOT" -eq 1 ]; then
        chown postgres:postgres "$base"
    fi
    if ! as_pg test -w "$base" ||
        [ "${#base}" -gt 80 ]; then
        rmdir "$base"
        base=/tmp/rollwave-stack-$(printf '%s' "$STACK_DIR" | sha1sum |
            cut -c1-12)/pg
        mkdir -p "$base"
        chmod 755 "$(dirname "$base")"
        if [ "$IS_ROOT" -eq 1 ]; then
            chown postgres:postgres "$base"
        fi
    fi
    echo "$base" >"$STACK_DIR/pg.base"
    echo "$base"
}

pg_running() {
    [ -s "$STACK_DIR/pg.base" ] || return 1
    local data
    data=$(cat "$STACK_DIR/pg.base")/data
    [ -s "$data/postmaster.pid" ] &&
        pid_alive "$(head -n1 "$data/postmaster.pid")" postgres
}

pg_up() {
    local bindir base data port
    if pg_running; then
        say "postgres already up on port $(cat "$STACK_DIR/pg.port")"
        return 0
    fi
    bindir=$(pg_bindir)
    base=$(pg_base)
    data=$base/data
    if [ ! -s "$data/PG_VERSION" ]; then
        as_pg "$bindir/initdb" -D "$data" -U rollwave --auth=trust \
            -E UTF8 --locale=C --no-sync >"$STACK_DIR/pg.initdb.log" 2>&1 ||
            {
                cat "$STACK_DIR/pg.initdb.log" >&2
                die "initdb failed"
            }
        # A test stack: durability is traded for speed (fsync off), and
        # trust authentication is safe only because it listens on loopback.
        as_pg tee -a "$data/postgresql.conf" >/dev/null <<EOF
# rollwave test stack (scripts/stack.sh): not a production configuration
listen_addresses = '127.0.0.1'
unix_socket_directories = '$data'
shared_preload_libraries = 'pg_stat_statements'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
log_min_messages = warning
EOF
        as_pg tee "$data/pg_hba.conf" >/dev/null <<EOF
# rollwave test stack: trust on loopback and the private socket only
local all all trust
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
EOF
    fi
    for _ in 1 2 3; do
        port=$(free_port)
        if as_pg "$bindir/pg_ctl" -D "$data" -l "$base/pg.log" -w -t 30 \
            -o "-p $port" start >/dev/null 2>&1; then
            echo "$port" >"$STACK_DIR/pg.port"
            break
        fi
        port=
    done
    if [ -z "$port" ]; then
        tail -n 20 "$base/pg.log" >&2 || true
        die "postgres did not start"
    fi
    if ! "$bindir/psql" -h 127.0.0.1 -p "$port" -U rollwave -d postgres \
        -qtAc "SELECT 1 FROM pg_database WHERE datname = 'rollwave'" |
        grep -q 1; then
        "$bindir/createdb" -h 127.0.0.1 -p "$port" -U rollwave rollwave
    fi
    "$bindir/psql" -h 127.0.0.1 -p "$port" -U rollwave -d rollwave -qc \
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    say "postgres up on port $port"
}

pg_down() {
    local base data pid
    [ -s "$STACK_DIR/pg.base" ] || return 0
    base=$(cat "$STACK_DIR/pg.base")
    data=$base/data
    if pg_running; then
        as_pg "$(pg_bindir)/pg_ctl" -D "$data" -m fast -w -t 30 stop \
            >/dev/null 2>&1 || true
        if pg_running; then
            pid=$(head -n1 "$data/postmaster.pid")
            stop_pid "$pid" postgres
        fi
        say "postgres stopped"
    fi
    rm -rf "$base"
    case $base in
    /tmp/rollwave-stack-*) rmdir "$(dirname "$base")" 2>/dev/null || true ;;
    esac
    rm -f "$STACK_DIR/pg.base" "$STACK_DIR/pg.port" \
        "$STACK_DIR/pg.initdb.log"
}

# --- Redis ----------------------------------------------------------------

redis_running() {
    pidfile_alive "$STACK_DIR/redis.pid" redis-server
}

redis_up() {
    local port i
    if redis_running; then
        say "redis already up on port $(cat "$STACK_DIR/redis.port")"
        return 0
    fi
    mkdir -p "$STACK_DIR/redis"
    for _ in 1 2 3; do
        port=$(free_port)
        rm -f "$STACK_DIR/redis.pid"
        redis-server --port "$port" --bind 127.0.0.1 --save '' \
            --appendonly no --daemonize yes \
            --pidfile "$STACK_DIR/redis.pid" \
            --logfile "$STACK_DIR/redis.log" \
            --dir "$STACK_DIR/redis" >/dev/null
        for ((i = 0; i < 50; i++)); do
            if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = \
                PONG ]; then
                echo "$port" >"$STACK_DIR/redis.port"
                say "redis up on port $port"
                return 0
            fi
            sleep 0.1
        done
        [ -s "$STACK_DIR/redis.pid" ] &&
            stop_pid "$(cat "$STACK_DIR/redis.pid")" redis-server
    done
    tail -n 20 "$STACK_DIR/redis.log" >&2 || true
    die "redis did not start"
}

redis_down() {
    if redis_running; then
        stop_pid "$(cat "$STACK_DIR/redis.pid")" redis-server
        say "redis stopped"
    fi
    rm -rf "$STACK_DIR/redis"
    rm -f "$STACK_DIR/redis.pid" "$STACK_DIR/redis.port" \
        "$STACK_DIR/redis.log"
}

# --- Kafka (rollwave-devbroker) -------------------------------------------

kafka_running() {
    pidfile_alive "$STACK_DIR/kafka.pid" rollwave-devbroker
}

kafka_up() {
    if kafka_running; then
        say "kafka (devbroker) already up at" \
            "$(cat "$STACK_DIR/kafka.bootstrap")"
        return 0
    fi
    rm -f "$STACK_DIR/kafka.bootstrap"
    # setsid: a Ctrl-C meant for the caller must not reach the services;
    # only `down` stops them. (A background job is no group leader, so
    # setsid does not fork and $! stays the service's pid.)
    setsid nohup "$BIN/rollwave-devbroker" \
        --bootstrap-file "$STACK_DIR/kafka.bootstrap" \
        --partitions "$KAFKA_PARTITIONS" </dev/null \
        >"$STACK_DIR/kafka.log" 2>&1 &
    echo $! >"$STACK_DIR/kafka.pid"
    wait_file "$STACK_DIR/kafka.bootstrap" $! rollwave-devbroker \
        "$STACK_DIR/kafka.log"
    say "kafka (devbroker) up at $(cat "$STACK_DIR/kafka.bootstrap")"
}

kafka_down() {
    if kafka_running; then
        stop_pid "$(cat "$STACK_DIR/kafka.pid")" rollwave-devbroker
        say "kafka (devbroker) stopped"
    fi
    rm -f "$STACK_DIR/kafka.pid" "$STACK_DIR/kafka.bootstrap" \
        "$STACK_DIR/kafka.log"
}

# --- Lagoon (rollwave-lagoon-sim) -----------------------------------------

lagoon_running() {
    pidfile_alive "$STACK_DIR/sim.pid" rollwave-lagoon-sim
}

lagoon_up() {
    local token
    if lagoon_running; then
        say "lagoon-sim already up on port $(cat "$STACK_DIR/sim.port")"
        return 0
    fi
    rm -f "$STACK_DIR/sim.port"
    token=$(random_hex 16)
    (umask 077 && printf '%s\n' "$token" >"$STACK_DIR/sim.token")
    # ROLLWAVE_SIM_* variables of the caller reach the sim through the
    # inherited environment. The token goes the same way (the sim reads
    # ROLLWAVE_SIM_TOKEN like --token) so ps does not show it.
    ROLLWAVE_SIM_TOKEN=$token setsid nohup "$BIN/rollwave-lagoon-sim" \
        --port 0 \
        --port-file "$STACK_DIR/sim.port" </dev/null \
        >"$STACK_DIR/sim.log" 2>&1 &
    echo $! >"$STACK_DIR/sim.pid"
    wait_file "$STACK_DIR/sim.port" $! rollwave-lagoon-sim \
        "$STACK_DIR/sim.log"
    say "lagoon-sim up on port $(cat "$STACK_DIR/sim.port")"
}

lagoon_down() {
    if lagoon_running; then
        stop_pid "$(cat "$STACK_DIR/sim.pid")" rollwave-lagoon-sim
        say "lagoon-sim stopped"
    fi
    rm -f "$STACK_DIR/sim.pid" "$STACK_DIR/sim.port" "$STACK_DIR/sim.log" \
        "$STACK_DIR/sim.token"
}

# --- commands -------------------------------------------------------------

cmd_up() {
    local t0 all_up=1 missing=()
    t0=$(now_ms)
    wants pg && ! pg_running && all_up=0
    wants redis && ! redis_running && all_up=0
    wants kafka && ! kafka_running && all_up=0
    wants lagoon && ! lagoon_running && all_up=0
    if [ "$all_up" -eq 1 ] && [ -d "$STACK_DIR" ]; then
        say "already up in $STACK_DIR"
        return 0
    fi
    wants kafka && [ ! -x "$BIN/rollwave-devbroker" ] &&
        missing+=(rollwave-devbroker)
    wants lagoon && [ ! -x "$BIN/rollwave-lagoon-sim" ] &&
        missing+=(rollwave-lagoon-sim)
    if [ "${#missing[@]}" -gt 0 ]; then
        printf 'stack: %s not found in %s; build first:\n' \
            "${missing[*]}" "$BIN" >&2
        printf '  cmake -S %s -B %s && cmake --build %s -j2\n' \
            "$ROOT" "$BUILD_DIR" "$BUILD_DIR" >&2
        exit 1
    fi
    mkdir -p "$STACK_DIR"
    say "bringing the stack up in $STACK_DIR"
    # A half-started stack is worse than none: tear down on failure.
    trap 'rc=$?; if [ "$rc" -ne 0 ]; then
        say "start failed, tearing down" >&2; cmd_down >&2; fi' EXIT
    if wants pg; then pg_up; fi
    if wants redis; then redis_up; fi
    if wants kafka; then kafka_up; fi
    if wants lagoon; then lagoon_up; fi
    trap - EXIT
    say "up in $(($(now_ms) - t0)) ms; use: eval \"\$(scripts/stack.sh env)\""
}

cmd_env() {
    local any=0
    if pg_running; then
        echo "export ROLLWAVE_PG_DSN=postgresql://rollwave@127.0.0.1:$(cat \
            "$STACK_DIR/pg.port")/rollwave"
        any=1
    fi
    if redis_running; then
        echo "export ROLLWAVE_REDIS_URL=redis://127.0.0.1:$(cat \
            "$STACK_DIR/redis.port")/0"
        any=1
    fi
    if kafka_running; then
        echo "export ROLLWAVE_KAFKA_BROKERS=$(tr -d ' \n' \
            <"$STACK_DIR/kafka.bootstrap")"
        any=1
    fi
    if lagoon_running; then
        local port
        port=$(tr -d ' \n' <"$STACK_DIR/sim.port")
        echo "export ROLLWAVE_LAGOON_URL=http://127.0.0.1:$port/graphql"
        echo "export ROLLWAVE_LAGOON_TOKEN=$(cat "$STACK_DIR/sim.token")"
        echo "export ROLLWAVE_SIM_ADMIN_URL=http://127.0.0.1:$port"
        any=1
    fi
    [ "$any" -eq 1 ] || die "not up (run: scripts/stack.sh up)"
    printf 'export ROLLWAVE_STACK_DIR=%q\n' "$STACK_DIR"
}

cmd_status() {
    local rc=0
    show() {
        if "$2"; then
            printf '  %-12s up    %s\n' "$1" "$3"
        else
            printf '  %-12s down\n' "$1"
            rc=1
        fi
    }
    echo "stack dir: $STACK_DIR"
    wants pg && show postgres pg_running \
        "port $(cat "$STACK_DIR/pg.port" 2>/dev/null)"
    wants redis && show redis redis_running \
        "port $(cat "$STACK_DIR/redis.port" 2>/dev/null)"
    wants kafka && show kafka kafka_running \
        "$(cat "$STACK_DIR/kafka.bootstrap" 2>/dev/null)"
    wants lagoon && show lagoon-sim lagoon_running \
        "port $(cat "$STACK_DIR/sim.port" 2>/dev/null)"
    return "$rc"
}

cmd_down() {
    # Every service, whatever ROLLWAVE_STACK_SERVICES says: down leaves
    # nothing behind.
    lagoon_down
    kafka_down
    redis_down
    pg_down
    if [ -d "$STACK_DIR" ]; then
        rmdir "$STACK_DIR" 2>/dev/null ||
            say "left $STACK_DIR (holds files stack.sh did not make)"
    fi
    say "down"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
status) cmd_status ;;
*)
    echo "usage: $0 up|down|env|status" >&2
    exit 2
    ;;
esac
