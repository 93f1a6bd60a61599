#!/usr/bin/env python3
"""check_compose: compose.yaml sets only ROLLWAVE_* keys its binaries read.

Usage: check_compose.py COMPOSE_FILE BIN_DIR

For every service built from this repository (the ones with a `build:` or a
`rollwave` image) it finds the rollwave binary in `entrypoint`/`command`,
runs `BIN_DIR/<binary> [subcommand] --help` (the subcommand being the words
before the first option, as in `rollwavectl migrate`), and checks that

  * the binary exists and its --help succeeds;
  * every ROLLWAVE_* variable the service sets (environment as a map or a
    list, env_file entries, anchors and merge keys resolved by PyYAML) is a
    key that binary lists;
  * every key the binary marks "(required)" is set by the service.

The daemons list their keys as lines "  ROLLWAVE_KEY  type default: ...".
Tools (rollwave-lagoon-sim, rollwave-devbroker) document environment
equivalents of their flags: ROLLWAVE_SIM_<FLAG> / ROLLWAVE_DEVBROKER_<FLAG>,
either spelled out in --help or derived from each --flag-name.

Services running other images (kafka, postgres, redis, ...) are skipped.
It does not start any container and does not validate compose semantics.
"""

import os
import re
import subprocess
import sys

try:
    import yaml
except ImportError:
    # A python3 earlier on PATH (a version manager's) may lack PyYAML while
    # the distribution's, with python3-yaml, has it.
    SYSTEM_PY = "/usr/bin/python3"
    if os.path.exists(SYSTEM_PY) and \
            os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PY):
        os.execv(SYSTEM_PY, [SYSTEM_PY] + sys.argv)
    sys.stderr.write("check_compose: PyYAML missing (scripts/deps.sh)\n")
    sys.exit(2)

KEY_LINE = re.compile(r"^  (ROLLWAVE_[A-Z0-9_]+)\s+\S+\s+default:\s*(.*)$")
ANY_KEY = re.compile(r"\b(ROLLWAVE_[A-Z0-9_]+)\b")
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
TOOL_PREFIX = {
    "rollwave-lagoon-sim": "ROLLWAVE_SIM_",
    "rollwave-devbroker": "ROLLWAVE_DEVBROKER_",
}


def words(value):
    """entrypoint/command as a flat list of words (string or list form)."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    out = []
    for item in value:
        out.extend(str(item).split())
    return out


def service_binary(svc):
    """(binary, args) of the first rollwave* word of entrypoint + command."""
    ws = words(svc.get("entrypoint")) + words(svc.get("command"))
    for i, w in enumerate(ws):
        base = os.path.basename(w.strip("'\""))
        if base.startswith("rollwave"):
            return base, ws[i + 1:]
    return None, []


def is_ours(svc):
    if "build" in svc:
        return True
    image = str(svc.get("image", ""))
    return os.path.basename(image.split(":")[0]).startswith("rollwave")


def env_keys(svc, compose_dir):
    """Names of the variables a service sets."""
    keys = []
    env = svc.get("environment") or {}
    if isinstance(env, dict):
        keys.extend(str(k) for k in env)
    else:
        for item in env:
            keys.append(str(item).split("=", 1)[0])
    files = svc.get("env_file") or []
    if isinstance(files, (str, dict)):
        files = [files]
    for f in files:
        path = f["path"] if isinstance(f, dict) else f
        full = os.path.join(compose_dir, path)
        if not os.path.exists(full):
            continue
        with open(full, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    keys.append(line.split("=", 1)[0].strip())
    return keys


def subcommand(args):
    """The leading words of args that are not options."""
    out = []
    for a in args:
        if a.startswith("-"):
            break
        out.append(a)
    return out


def help_keys(path, binary, sub):
    """(allowed keys, required keys) from `binary [sub] --help`."""
    res = subprocess.run([path] + sub + ["--help"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=30, check=False,
                         stdin=subprocess.DEVNULL)
    text = res.stdout.decode("utf-8", "replace")
    if res.returncode != 0:
        raise RuntimeError("%s --help exited %d: %s"
                           % (" ".join([binary] + sub), res.returncode,
                              text.strip()[:300]))
    allowed, required = set(), set()
    for line in text.splitlines():
        m = KEY_LINE.match(line)
        if m:
            allowed.add(m.group(1))
            if m.group(2).startswith("(required)"):
                required.add(m.group(1))
    prefix = TOOL_PREFIX.get(binary)
    if prefix:
        allowed.update(k for k in ANY_KEY.findall(text)
                       if k.startswith(prefix))
        for flag in FLAG.findall(text):
            if flag != "help":
                allowed.add(prefix + flag.upper().replace("-", "_"))
    if not allowed:
        raise RuntimeError("%s --help lists no ROLLWAVE_* key"
                           % " ".join([binary] + sub))
    return allowed, required


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: check_compose.py COMPOSE_FILE BIN_DIR\n")
        return 2
    compose_path, bin_dir = argv[1], argv[2]
    with open(compose_path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    services = (doc or {}).get("services") or {}
    if not services:
        print("FAIL: %s has no services" % compose_path)
        return 1
    compose_dir = os.path.dirname(os.path.abspath(compose_path))

    failures = []
    cache = {}
    checked = 0
    for name, svc in services.items():
        svc = svc or {}
        if not is_ours(svc):
            print("skip  %-14s image %s" % (name, svc.get("image", "?")))
            continue
        binary, args = service_binary(svc)
        if binary is None:
            failures.append((name, "no rollwave binary in entrypoint/command"))
            continue
        path = os.path.join(bin_dir, binary)
        if not os.access(path, os.X_OK):
            failures.append((name, "binary %s not found in %s"
                             % (binary, bin_dir)))
            continue
        sub = subcommand(args)
        what = " ".join([binary] + sub)
        if what not in cache:
            try:
                cache[what] = help_keys(path, binary, sub)
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                cache[what] = e
        if isinstance(cache[what], Exception):
            failures.append((name, str(cache[what])))
            continue
        allowed, required = cache[what]
        keys = [k for k in env_keys(svc, compose_dir)
                if k.startswith("ROLLWAVE_")]
        bad = sorted(set(k for k in keys if k not in allowed))
        for k in bad:
            failures.append((name, "%s is not a key of %s" % (k, what)))
        for k in sorted(required - set(keys)):
            failures.append((name, "%s is required by %s but not set"
                             % (k, what)))
        checked += 1
        print("check %-14s %s: %d ROLLWAVE_* keys, %d unknown, "
              "%d required missing"
              % (name, what, len(keys), len(bad),
                 len(required - set(keys))))

    if checked == 0 and not failures:
        failures.append(("-", "no rollwave service found"))
    if failures:
        print("FAIL: %d problem(s) in %s" % (len(failures), compose_path))
        for svc, why in failures:
            print("  service %s: %s" % (svc, why))
        return 1
    print("OK: %d rollwave service(s) checked" % checked)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
