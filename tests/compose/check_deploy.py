#!/usr/bin/env python3
"""check_deploy: deploy/ refers only to what rollwave really has.

Usage: check_deploy.py SOURCE_DIR BIN_DIR

  * deploy/grafana/*.json parse, and every panel query names only metric
    families a daemon registers;
  * deploy/prometheus/*.yaml parse as rule files (groups of rules with an
    alert name, an expression and a severity), naming only such metrics;
  * deploy/k8s/*.yaml parse; kustomization.yaml lists files that exist;
    every container running a rollwave binary sets only ROLLWAVE_* keys
    that binary reads (env entries and the ConfigMaps it takes with
    envFrom, found in the same directory) and every key it requires;
    every Deployment of a daemon has readiness and liveness probes on
    /healthz at its metrics port, a termination grace period and a preStop
    hook; every KEDA ScaledObject scales an existing Deployment, uses that
    Deployment's consumer group and topic, and never more replicas than
    the topic's partitions (compose.yaml's topic list).

"Registers" means a string literal passed to rw_metrics_counter, _gauge or
_histogram in the daemons' sources (histograms add _bucket, _sum and
_count); the metrics scenario of test_operations checks that families
render. Nothing is started and no cluster is needed.
"""

import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_compose  # noqa: E402  (re-executes with PyYAML if needed)

yaml = check_compose.yaml

METRIC_CALL = re.compile(
    r'rw_metrics_(counter|gauge|histogram)\(\s*"(rollwave_[a-z0-9_]+)"')
METRIC_USE = re.compile(r"\b(rollwave_[a-z0-9_]+)\b")
TOPIC_SPEC = re.compile(r"\b(rollwave\.[a-z]+):(\d+)\b")
DAEMONS = ("rollwave-producer", "rollwave-worker", "rollwave-poller",
           "rollwave-api")

failures = []


def fail(where, why):
    failures.append("%s: %s" % (where, why))


def registered_metrics(src):
    names = set()
    for sub in ("common", "producer", "worker", "poller", "api"):
        for path in glob.glob(os.path.join(src, sub, "*.c")):
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            for kind, name in METRIC_CALL.findall(text):
                names.add(name)
                if kind == "histogram":
                    names.update(name + s for s in ("_bucket", "_sum",
                                                    "_count"))
    return names


def check_metrics(where, exprs, known):
    used = 0
    for expr in exprs:
        for name in METRIC_USE.findall(expr):
            used += 1
            if name not in known:
                fail(where, "metric %s is not registered by any daemon"
                     % name)
    if used == 0:
        fail(where, "names no rollwave metric at all")


def dashboard_exprs(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        for v in node.values():
            yield from dashboard_exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from dashboard_exprs(v)


def check_grafana(src, known):
    files = glob.glob(os.path.join(src, "deploy", "grafana", "*.json"))
    if not files:
        fail("deploy/grafana", "no dashboard")
    for path in files:
        where = os.path.relpath(path, src)
        try:
            with open(path, encoding="utf-8") as fh:
                dash = json.load(fh)
        except ValueError as e:
            fail(where, "not JSON: %s" % e)
            continue
        if not dash.get("panels"):
            fail(where, "no panels")
        check_metrics(where, list(dashboard_exprs(dash)), known)
        print("check %s: %d panels" % (where, len(dash.get("panels", []))))


def check_rules(src, known):
    files = glob.glob(os.path.join(src, "deploy", "prometheus", "*.yaml"))
    if not files:
        fail("deploy/prometheus", "no rule file")
    for path in files:
        where = os.path.relpath(path, src)
        try:
            with open(path, encoding="utf-8") as fh:
                doc = yaml.safe_load(fh)
        except yaml.YAMLError as e:
            fail(where, "not YAML: %s" % e)
            continue
        exprs, n = [], 0
        for group in (doc or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                name = rule.get("alert") or rule.get("record")
                if not name or not isinstance(rule.get("expr"), str):
                    fail(where, "a rule without a name or expression")
                    continue
                if rule.get("alert") and \
                        "severity" not in (rule.get("labels") or {}):
                    fail(where, "alert %s has no severity" % name)
                exprs.append(rule["expr"])
                n += 1
        if n == 0:
            fail(where, "no rules")
        check_metrics(where, exprs, known)
        print("check %s: %d rules" % (where, n))


def partitions(src):
    with open(os.path.join(src, "compose.yaml"), encoding="utf-8") as fh:
        return {t: int(n) for t, n in TOPIC_SPEC.findall(fh.read())}


def check_k8s(src, bin_dir):
    kdir = os.path.join(src, "deploy", "k8s")
    docs = []
    for path in sorted(glob.glob(os.path.join(kdir, "*.yaml"))):
        where = os.path.relpath(path, src)
        try:
            with open(path, encoding="utf-8") as fh:
                for d in yaml.safe_load_all(fh):
                    if d:
                        docs.append((where, d))
        except yaml.YAMLError as e:
            fail(where, "not YAML: %s" % e)
    kust = [d for _, d in docs if d.get("kind") == "Kustomization"]
    if not kust:
        fail("deploy/k8s", "no kustomization.yaml")
    for k in kust:
        for res in k.get("resources") or []:
            if not os.path.exists(os.path.join(kdir, res)):
                fail("deploy/k8s/kustomization.yaml",
                     "resource %s does not exist" % res)
    maps = {d["metadata"]["name"]: d.get("data") or {}
            for _, d in docs if d.get("kind") == "ConfigMap"}
    deployments = {}
    cache = {}
    for where, d in docs:
        spec = (d.get("spec") or {})
        if d.get("kind") == "Job":
            pod = spec["template"]["spec"]
        elif d.get("kind") == "Deployment":
            pod = spec["template"]["spec"]
            deployments[d["metadata"]["name"]] = (where, pod)
        else:
            continue
        for c in pod.get("containers") or []:
            check_container(where, c, pod, d.get("kind"), maps, bin_dir,
                            cache)
    parts = partitions(src)
    for where, d in docs:
        if d.get("kind") != "ScaledObject":
            continue
        name = d["metadata"]["name"]
        target = d["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            fail(where, "%s scales %s, which is no Deployment here"
                 % (name, target))
            continue
        env = container_env(deployments[target][1]["containers"][0], maps)
        for trig in d["spec"].get("triggers") or []:
            if trig.get("type") != "kafka":
                continue
            md = trig.get("metadata") or {}
            group = env.get("ROLLWAVE_KAFKA_GROUP")
            if md.get("consumerGroup") != group:
                fail(where, "%s watches group %s, the Deployment consumes "
                     "as %s" % (name, md.get("consumerGroup"), group))
            topic = md.get("topic")
            if topic not in parts:
                fail(where, "%s watches topic %s, not one compose.yaml "
                     "creates" % (name, topic))
            elif int(d["spec"].get("maxReplicaCount", 100)) > parts[topic]:
                fail(where, "%s may scale to %s replicas; %s has %d "
                     "partitions" % (name, d["spec"].get("maxReplicaCount"),
                                     topic, parts[topic]))
        print("check %s: ScaledObject %s" % (where, name))
    if not deployments:
        fail("deploy/k8s", "no Deployment")


def container_env(c, maps):
    env = {}
    for ref in c.get("envFrom") or []:
        cm = (ref.get("configMapRef") or {}).get("name")
        if cm is not None:
            env.update({k: str(v) for k, v in maps.get(cm, {}).items()})
    for e in c.get("env") or []:
        env[e["name"]] = e.get("value")
    return env


def check_container(where, c, pod, kind, maps, bin_dir, cache):
    binary, args = check_compose.service_binary({"command": c.get("command"),
                                                 "entrypoint": c.get("args")})
    if binary is None:
        return
    for ref in c.get("envFrom") or []:
        cm = (ref.get("configMapRef") or {}).get("name")
        if cm is not None and cm not in maps:
            fail(where, "ConfigMap %s is not defined" % cm)
        if ref.get("secretRef"):
            fail(where, "envFrom secretRef hides which keys are set; "
                 "use env with secretKeyRef")
    sub = check_compose.subcommand(args)
    what = " ".join([binary] + sub)
    if what not in cache:
        try:
            cache[what] = check_compose.help_keys(
                os.path.join(bin_dir, binary), binary, sub)
        except Exception as e:  # pylint: disable=broad-except
            cache[what] = e
    if isinstance(cache[what], Exception):
        fail(where, str(cache[what]))
        return
    allowed, required = cache[what]
    env = container_env(c, maps)
    keys = [k for k in env if k.startswith("ROLLWAVE_")]
    for k in sorted(set(keys) - allowed):
        fail(where, "%s is not a key of %s" % (k, what))
    for k in sorted(required - set(keys)):
        fail(where, "%s is required by %s but not set" % (k, what))
    if kind == "Deployment" and binary in DAEMONS:
        port = env.get("ROLLWAVE_METRICS_PORT")
        ports = {p.get("name"): str(p.get("containerPort"))
                 for p in c.get("ports") or []}
        for probe in ("readinessProbe", "livenessProbe"):
            get = (c.get(probe) or {}).get("httpGet") or {}
            p = str(get.get("port"))
            if get.get("path") != "/healthz" or \
                    ports.get(p, p) != str(port):
                fail(where, "%s of %s is not /healthz on the metrics "
                     "port %s" % (probe, binary, port))
        if not pod.get("terminationGracePeriodSeconds"):
            fail(where, "%s has no terminationGracePeriodSeconds" % binary)
        if not ((c.get("lifecycle") or {}).get("preStop")):
            fail(where, "%s has no preStop hook" % binary)
    print("check %s: %s, %d ROLLWAVE_* keys" % (where, what, len(keys)))


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: check_deploy.py SOURCE_DIR BIN_DIR\n")
        return 2
    src, bin_dir = argv[1], argv[2]
    known = registered_metrics(src)
    if not known:
        fail("sources", "no metric registrations found")
    check_grafana(src, known)
    check_rules(src, known)
    check_k8s(src, bin_dir)
    if failures:
        print("FAIL: %d problem(s)" % len(failures))
        for f in failures:
            print("  " + f)
        return 1
    print("OK: deploy/ checked against %d metric names" % len(known))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
