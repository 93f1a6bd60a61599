#!/usr/bin/env python3
"""check_state_writers: every state column (run_targets.state,
run_chunks.state, run_waves.state, deployment_runs.status) is written by common/rw_state.c
alone. Joins the C string literals of each statement, finds every UPDATE of
those tables and fails naming each one outside rw_state.c whose SET clause
assigns the state. Tests may write states to build fixtures: tests/ is not
checked.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                    pathlib.Path(__file__).resolve().parents[2])
DIRS = ["common", "producer", "worker", "poller", "ctl", "api", "bench",
        "tools"]
ALLOWED = {"common/rw_state.c"}
LITERAL = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
UPDATE = re.compile(
    r"UPDATE\s+(run_targets|run_chunks|run_waves|deployment_runs)\b(?:\s+(?:AS\s+)?\w+)?"
    r"\s+SET\s+(.*?)(?=\bWHERE\b|\bFROM\b|\bRETURNING\b|$)",
    re.I | re.S)
ASSIGN = re.compile(r"(?:^|,)\s*(?:\w+\.)?(state|status)\s*=", re.I)


def sql_of(text):
    """Each C statement's string literals joined, with its line number."""
    for m in re.finditer(r"[^;{}]*;", text, re.S):
        parts = LITERAL.findall(m.group(0))
        if parts:
            line = text.count("\n", 0, m.start()) + 1
            yield line, " ".join(parts)


def main():
    found = []
    writers_seen = 0
    for d in DIRS:
        for path in sorted((ROOT / d).rglob("*.[ch]")):
            rel = path.relative_to(ROOT).as_posix()
            for line, sql in sql_of(path.read_text(errors="replace")):
                for m in UPDATE.finditer(sql):
                    if not ASSIGN.search(m.group(2)):
                        continue
                    if rel in ALLOWED:
                        writers_seen += 1
                    else:
                        found.append(f"{rel}:{line}: UPDATE {m.group(1)} "
                                     f"SET {m.group(2).strip()[:60]}")
    if found:
        print("state columns written outside common/rw_state.c:",
              file=sys.stderr)
        print("\n".join(found), file=sys.stderr)
        return 1
    if writers_seen < 4:
        print(f"check_state_writers: found {writers_seen} writers in "
              "rw_state.c, expected one per machine at least: the pattern "
              "no longer matches", file=sys.stderr)
        return 1
    print(f"state columns written only by common/rw_state.c "
          f"({writers_seen} statements)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
