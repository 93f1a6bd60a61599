#!/usr/bin/env bash
# format.sh: clang-format over every tracked C file (*.c, *.h), with the
# .clang-format at the repository root.
#
#   scripts/format.sh           format them in place
#   scripts/format.sh --check   change nothing; list the files that are not
#                               formatted and exit 1 if there is any
#
# Only tracked files: build trees, the stack directory and scratch files
# are not the project's code.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHECK=0
for arg in "$@"; do
    case $arg in
    --check) CHECK=1 ;;
    -h | --help)
        sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "format.sh: unknown option '$arg' (see --help)" >&2
        exit 2
        ;;
    esac
done

CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
# a fresh machine has none: install Debian's (scripts/deps.sh, which needs
# root or sudo) rather than fail the check for a missing tool
if ! command -v "$CLANG_FORMAT" >/dev/null &&
    [ "$CLANG_FORMAT" = clang-format ]; then
    echo "format.sh: clang-format not found; installing it" >&2
    "$ROOT/scripts/deps.sh" clang-format >&2 || true
fi
if ! command -v "$CLANG_FORMAT" >/dev/null; then
    echo "format.sh: $CLANG_FORMAT not found (scripts/deps.sh clang-format," \
        "or apt-get install clang-format)" >&2
    exit 2
fi

cd "$ROOT"
mapfile -d '' FILES < <(git ls-files -z -- '*.c' '*.h')
if [ "${#FILES[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$CHECK" -eq 0 ]; then
    "$CLANG_FORMAT" -i -- "${FILES[@]}"
    exit 0
fi

# One run per file, so the list names exactly the files that differ
# (a single run's diagnostics would have to be parsed for names).
BAD=0
for f in "${FILES[@]}"; do
    if ! "$CLANG_FORMAT" --dry-run --Werror -- "$f" >/dev/null 2>&1; then
        echo "$f"
        BAD=$((BAD + 1))
    fi
done
if [ "$BAD" -ne 0 ]; then
    echo "format.sh: $BAD file(s) not formatted; run scripts/format.sh" >&2
    exit 1
fi
