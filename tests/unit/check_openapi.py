#!/usr/bin/env python3
"""check_openapi: schemas/openapi.yaml and rollwave-api's route table
describe the same API. Runs `rollwave-api --routes` (one "METHOD PATH ROLE"
per line, straight from the table that drives dispatch) and fails naming
every route served but not described, every path and method described but
not served, and every minimum role (x-rollwave-role) that differs.

usage: check_openapi.py ROOT BIN_DIR
"""
import pathlib
import subprocess
import sys

import yaml

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def main():
    root = pathlib.Path(sys.argv[1])
    binary = pathlib.Path(sys.argv[2]) / "rollwave-api"
    doc = yaml.safe_load((root / "schemas" / "openapi.yaml").read_text())
    described = {}
    for path, item in (doc.get("paths") or {}).items():
        for method, op in item.items():
            if method in METHODS:
                described[(method.upper(), path)] = op.get("x-rollwave-role")
    out = subprocess.run([str(binary), "--routes"], check=True,
                         capture_output=True, text=True).stdout
    served = {}
    for line in out.splitlines():
        method, path, role = line.split()
        served[(method, path)] = role
    problems = []
    for key in sorted(served.keys() - described.keys()):
        problems.append("served but not in openapi.yaml: %s %s" % key)
    for key in sorted(described.keys() - served.keys()):
        problems.append("in openapi.yaml but not served: %s %s" % key)
    for key in sorted(served.keys() & described.keys()):
        if served[key] != described[key]:
            problems.append("%s %s: served for %s, openapi.yaml says %s" %
                            (key + (served[key], described[key])))
    if not served:
        problems.append("rollwave-api --routes printed no route")
    for p in problems:
        print("check_openapi: " + p, file=sys.stderr)
    if problems:
        return 1
    print("check_openapi: %d routes agree" % len(served))
    return 0


if __name__ == "__main__":
    sys.exit(main())
