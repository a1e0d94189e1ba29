#!/usr/bin/env python3
"""scripts/check-deploy.py: static checks of deploy/ that need no Docker or cluster.

Parses every YAML and JSON file under deploy/ and checks what a typo would break silently:
  - compose.yaml: the stack's services exist, and every file it mounts exists;
  - k8s/: every object has apiVersion, kind and metadata.name; every Deployment's containers
    have liveness (/healthz) and readiness (/readyz) probes and resource requests; the
    kustomization lists only files that exist;
  - grafana/: dashboards are JSON with unique uids, every query panel has targets on the
    provisioned Prometheus datasource (uid "prometheus").
promtool / amtool validate the Prometheus and Alertmanager files (see .ci/run), and a Rust test
compares the metric names used here with a real scrape of kpiflow. Exit code 1 on a problem.
"""
import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
problems = []


def problem(path, msg):
    problems.append(f"{path.relative_to(ROOT)}: {msg}")


def load_yaml(path):
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        problem(path, f"not valid YAML: {e}")
        return []


for path in sorted(DEPLOY.rglob("*.y*ml")):
    load_yaml(path)

# compose
compose_path = DEPLOY / "compose.yaml"
compose = load_yaml(compose_path)[0]
services = compose.get("services", {})
for name in ["kafka", "kpiflow-processor", "kpiflow-sink", "prometheus", "alertmanager", "grafana"]:
    if name not in services:
        problem(compose_path, f"service {name!r} is missing")
for name, svc in services.items():
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith("."):
            if not (DEPLOY / src).exists():
                problem(compose_path, f"service {name!r} mounts {src}, which does not exist")
if "KAFKA_PROCESS_ROLES" not in services.get("kafka", {}).get("environment", {}):
    problem(compose_path, "kafka must run in KRaft mode (KAFKA_PROCESS_ROLES)")

# kubernetes
k8s = DEPLOY / "k8s"
kustomization = load_yaml(k8s / "kustomization.yaml")[0]
for res in kustomization.get("resources", []):
    if not (k8s / res).exists():
        problem(k8s / "kustomization.yaml", f"resource {res} does not exist")
deployments = 0
for path in sorted(k8s.glob("*.yaml")):
    if path.name == "kustomization.yaml":
        continue
    for doc in load_yaml(path):
        for key in ["apiVersion", "kind"]:
            if key not in doc:
                problem(path, f"an object has no {key}")
        if not doc.get("metadata", {}).get("name"):
            problem(path, f"a {doc.get('kind')} has no metadata.name")
        if doc.get("kind") != "Deployment":
            continue
        deployments += 1
        pod = doc["spec"]["template"]
        for c in pod["spec"]["containers"]:
            where = f"{doc['metadata']['name']}/{c['name']}"
            for probe, want in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
                got = c.get(probe, {}).get("httpGet", {}).get("path")
                if got != want:
                    problem(path, f"{where}: {probe} must GET {want}, has {got!r}")
            req = c.get("resources", {}).get("requests", {})
            if not ("cpu" in req and "memory" in req):
                problem(path, f"{where}: resources.requests needs cpu and memory")
        if pod["metadata"].get("annotations", {}).get("prometheus.io/scrape") != "true":
            problem(path, f"{doc['metadata']['name']}: pods lack prometheus.io/scrape")
if deployments < 2:
    problem(k8s, f"expected the processor and sink Deployments, found {deployments}")

# grafana
uids = {}
for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
    try:
        board = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        problem(path, f"not valid JSON: {e}")
        continue
    uid = board.get("uid")
    if not uid or uid in uids:
        problem(path, f"uid {uid!r} is missing or also used by {uids.get(uid)}")
    uids[uid] = path.name
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            continue
        if not panel.get("targets"):
            problem(path, f"panel {panel.get('title')!r} has no query")
        if panel.get("datasource", {}).get("uid") != "prometheus":
            problem(path, f"panel {panel.get('title')!r} is not on the provisioned datasource")
if len(uids) < 6:
    problem(DEPLOY / "grafana", f"expected 6 dashboards (overview, 4 teams, breaches), found {len(uids)}")

for p in problems:
    print(f"check-deploy: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"check-deploy: OK ({deployments} Deployments, {len(uids)} dashboards, compose services: {len(services)})")
