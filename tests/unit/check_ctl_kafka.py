#!/usr/bin/env python3
"""check_ctl_kafka: nothing under ctl/ includes librdkafka or uses its API
(rd_kafka_* functions and types, RD_KAFKA_* constants); rollwavectl reaches
Kafka through common/rw_kafka alone. Comments and string literals are
ignored, so prose may still name librdkafka's functions.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                    pathlib.Path(__file__).resolve().parents[2])
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]librdkafka/', re.M)
USE = re.compile(r"\b(rd_kafka_\w*|RD_KAFKA_\w*)")
STRIP = re.compile(
    r'/\*.*?\*/|//[^\n]*|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'', re.S)


def blank(m):
    """Keep line numbers: replace a comment or literal by its newlines."""
    return "\n" * m.group(0).count("\n")


def main():
    found = []
    files = sorted((ROOT / "ctl").rglob("*.[ch]"))
    if not files:
        print("check_ctl_kafka: no sources under %s/ctl" % ROOT)
        return 1
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in INCLUDE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append("%s:%d: includes librdkafka" % (rel, line))
        code = STRIP.sub(blank, text)
        for m in USE.finditer(code):
            line = code.count("\n", 0, m.start()) + 1
            found.append("%s:%d: uses %s" % (rel, line, m.group(1)))
    for f in found:
        print(f)
    if found:
        print("check_ctl_kafka: %d librdkafka use(s) under ctl/; go through "
              "common/rw_kafka instead" % len(found))
        return 1
    print("check_ctl_kafka: %d files under ctl/, no librdkafka" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
