#!/usr/bin/env bash
# deps.sh: installs the Debian (bookworm) packages rollwave needs to build,
# test and run its local stack. Idempotent and quiet when everything is
# already there; runs `apt-get update` at most once, only when something is
# missing. It does not start, stop or configure any service.
#
#   scripts/deps.sh                 every package below
#   scripts/deps.sh clang-format    only the ones named (of the list below)
set -euo pipefail

PACKAGES=(
    # toolchain
    build-essential cmake pkg-config clang clang-format
    # libFuzzer runtime for the fuzz targets (clang only recommends it)
    libclang-rt-14-dev
    # libraries the code links
    librdkafka-dev libhiredis-dev libcurl4-openssl-dev libpq-dev
    libcmocka-dev libjansson-dev libmicrohttpd-dev libssl-dev
    # servers of the local stack (scripts/stack.sh)
    postgresql postgresql-contrib redis-server
    # tools the scripts and tests use (kcat is bookworm's kafkacat)
    curl ca-certificates python3 python3-yaml kcat iproute2 util-linux
    procps coreutils
    # the dashboard's browser test (headless, driven over WebDriver)
    chromium chromium-driver
)

# named packages: only those, and only ones of the list
if [ "$#" -gt 0 ]; then
    for want in "$@"; do
        known=0
        for pkg in "${PACKAGES[@]}"; do
            [ "$pkg" = "$want" ] && known=1
        done
        if [ "$known" -eq 0 ]; then
            echo "deps.sh: '$want' is not one of rollwave's packages" >&2
            exit 2
        fi
    done
    PACKAGES=("$@")
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null ||
        true)
    if [ "$status" != "installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "deps.sh: missing packages: ${missing[*]}" >&2
    echo "deps.sh: not root and no sudo; install them and rerun" >&2
    exit 1
fi

echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# On machines without systemd installing postgresql and redis-server starts
# nothing; where a service does start it keeps its default port and is left
# alone: the local stack runs its own servers on free ports.
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" </dev/null
echo "deps.sh: done"
