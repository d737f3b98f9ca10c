#!/usr/bin/env python3
"""Offline checks of everything in deploy/ and docker-compose.yml (scripts/check-deploy.sh
installs the tools and runs this):

- docker-compose.yml against the Compose specification's schema;
- the load balancer's config with HAProxy's own check, for every region compose runs;
- every Kubernetes overlay rendered with kustomize, then validated against Kubernetes'
  schemas (strict: unknown fields are errors);
- every Conclave container in both, with its exact command and environment (config maps,
  secrets and $(VAR) references resolved), run through `conclave <role> --check-config`;
- Prometheus scrapes each role on the port that role serves /metrics on, and every
  Conclave metric the Grafana dashboard plots is one the code exports.

Usage: check_deploy.py CONCLAVE_BINARY KUBECTL
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# What the checks give secrets and other values an operator supplies.
PLACEHOLDERS = {
    "CONCLAVE_CLUSTER_SECRET": "a-cluster-secret-of-32-bytes-len",
    "cluster-secret": "a-cluster-secret-of-32-bytes-len",
    "redis-url": "redis://redis.internal:6379",
    "postgres-url": "postgres://conclave:pw@postgres.internal:5432/conclave",
    "admin-token": "an-admin-token",
}
failures = []


def fail(what):
    failures.append(what)
    print(f"FAIL {what}", file=sys.stderr)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def check_config(conclave, where, args, env, files=None):
    """`conclave ARGS --check-config` with exactly ENV (plus PATH) must succeed."""
    env = dict(env)
    with tempfile.TemporaryDirectory() as tmp:
        # Files the container would have mounted (e.g. the config map's conclave.toml).
        for path, text in (files or {}).items():
            local = Path(tmp) / Path(path).name
            local.write_text(text)
            env = {k: (str(local) if v == path else v) for k, v in env.items()}
        env["PATH"] = os.environ["PATH"]
        r = run([conclave, *args, "--check-config"], env=env)
    if r.returncode != 0:
        fail(f"{where}: conclave {' '.join(args)} --check-config: {r.stderr.strip()}")
    else:
        print(f"ok   {where}: conclave {args[0]} --check-config")


def compose_env_value(value):
    """A compose value with ${VAR:?message} interpolation filled in as compose would."""
    def sub(m):
        name = m.group(1)
        return PLACEHOLDERS.get(name, os.environ.get(name, ""))
    return re.sub(r"\$\{([A-Z_]+)[^}]*\}", sub, str(value))


def check_compose(conclave):
    path = ROOT / "docker-compose.yml"
    r = run(["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)])
    if r.returncode != 0:
        fail(f"docker-compose.yml against the Compose schema: {r.stdout}{r.stderr}")
    else:
        print("ok   docker-compose.yml against the Compose schema")
    compose = yaml.safe_load(path.read_text())
    services = compose["services"]
    roles = 0
    for name, svc in services.items():
        for mount in svc.get("volumes", []):
            if isinstance(mount, str) and mount.startswith("./"):
                source = ROOT / mount.split(":")[0]
                if not source.exists():
                    fail(f"compose {name}: mounts {source}, which does not exist")
        image = svc.get("image", "")
        if image == "conclave":
            env = {k: compose_env_value(v) for k, v in (svc.get("environment") or {}).items()}
            check_config(conclave, f"compose {name}", svc["command"], env)
            roles += 1
            dockerfile = svc.get("build", {}).get("dockerfile")
            if dockerfile and not (ROOT / dockerfile).exists():
                fail(f"compose {name}: builds {dockerfile}, which does not exist")
        elif image.startswith("haproxy"):
            env = dict(os.environ, **(svc.get("environment") or {}))
            r = run(["haproxy", "-c", "-f", str(DEPLOY / "haproxy/haproxy.cfg")], env=env)
            # Gateway names resolve only inside compose's network: those are warnings.
            if r.returncode != 0:
                fail(f"compose {name}: haproxy -c: {r.stdout}{r.stderr}")
            else:
                print(f"ok   compose {name}: haproxy -c (REGION={env.get('REGION')})")
    if roles < 9:
        fail(f"compose runs {roles} Conclave roles; expected 2 placement, 3 nodes, 4 gateways")
    return services


def check_prometheus(compose_services):
    """Each scrape target is a compose service, on the port its role serves /metrics on."""
    prometheus = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    metrics_port = {"gateway": "7400", "node": "7101", "placement": "7301", "balancer": "8404"}
    for job in prometheus["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, port = target.rsplit(":", 1)
                if host not in compose_services:
                    fail(f"prometheus job {job['job_name']}: {host} is no compose service")
                if metrics_port.get(job["job_name"]) != port:
                    fail(f"prometheus job {job['job_name']}: {target} is not its /metrics port")
    print("ok   prometheus.yml scrapes compose services on their /metrics ports")


def exported_metrics():
    """The metric names the code records (in the metrics macros, or constants for them)."""
    source = ""
    for crate in ["gateway", "node", "placement", "proto", "src"]:
        for f in (ROOT / crate).rglob("*.rs"):
            source += f.read_text()
    macros = re.findall(r'(?:counter|gauge|histogram)!\(\s*"(conclave_[a-z_]+)"', source)
    constants = re.findall(r'const [A-Z_]+: &str = "(conclave_[a-z_]+)"', source)
    return set(macros) | set(constants)


def check_metrics_doc():
    """docs/metrics.md lists exactly the metrics the code records."""
    documented = set(re.findall(r"^\| `(conclave_[a-z_]+)`", (ROOT / "docs/metrics.md").read_text(), re.M))
    exported = exported_metrics()
    for name in sorted(exported - documented):
        fail(f"docs/metrics.md does not list {name}")
    for name in sorted(documented - exported):
        fail(f"docs/metrics.md lists {name}, which the code does not record")
    print(f"ok   docs/metrics.md lists the {len(exported)} metrics the code records")


def check_dashboard():
    """Every conclave_* series the dashboard plots is exported by the code."""
    exported = exported_metrics()
    dashboard = json.loads((DEPLOY / "grafana/dashboards/conclave.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for metric in re.findall(r"\b(conclave_[a-z_]+)", target["expr"]):
                base = re.sub(r"_(bucket|sum|count)$", "", metric)
                if base not in exported:
                    fail(f"dashboard panel {panel['title']!r}: {metric} is not exported")
    print(f"ok   grafana dashboard: {len(dashboard['panels'])} panels, every metric exported")


def expand(value, env):
    """Kubernetes' $(VAR) expansion from the variables defined before."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def check_kubernetes(conclave, kubectl):
    overlays = sorted(p for p in (DEPLOY / "k8s/overlays").iterdir() if p.is_dir())
    if len(overlays) < 2:
        fail("fewer than two Kubernetes overlays (one per region)")
    for overlay in overlays:
        region = overlay.name
        r = run([kubectl, "kustomize", str(overlay)])
        if r.returncode != 0:
            fail(f"kustomize {overlay}: {r.stderr}")
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as rendered:
            rendered.write(r.stdout)
            rendered.flush()
            v = run(["kubernetes-validate", "--strict", "--quiet", "--no-warn", rendered.name])
            if v.returncode != 0:
                fail(f"overlay {region} against Kubernetes' schemas: {v.stdout}{v.stderr}")
            else:
                print(f"ok   overlay {region}: kustomize and Kubernetes' schemas (strict)")
        docs = [d for d in yaml.safe_load_all(r.stdout) if d]
        config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
        kinds = {d["kind"] for d in docs}
        for wanted in ["Deployment", "StatefulSet", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]:
            if wanted not in kinds:
                fail(f"overlay {region}: no {wanted}")
        for d in docs:
            if d["kind"] not in ("Deployment", "StatefulSet"):
                continue
            pod = d["spec"]["template"]["spec"]
            name = d["metadata"]["name"]
            # Mounted config maps: path in the container → file text.
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for c in pod["containers"]:
                if c["image"].split(":")[0] != "conclave":
                    continue
                files = {}
                for m in c.get("volumeMounts", []):
                    cm = volumes[m["name"]].get("configMap")
                    if cm:
                        for key, text in config_maps[cm["name"]].items():
                            files[f"{m['mountPath']}/{key}"] = text
                env = {}
                for src in c.get("envFrom", []):
                    env.update(config_maps[src["configMapRef"]["name"]])
                for e in c.get("env", []):
                    if "value" in e:
                        env[e["name"]] = expand(e["value"], env)
                        continue
                    ref = e["valueFrom"]
                    if "configMapKeyRef" in ref:
                        k = ref["configMapKeyRef"]
                        env[e["name"]] = config_maps[k["name"]][k["key"]]
                    elif "secretKeyRef" in ref:
                        env[e["name"]] = PLACEHOLDERS[ref["secretKeyRef"]["key"]]
                    elif "fieldRef" in ref:
                        field = ref["fieldRef"]["fieldPath"]
                        env[e["name"]] = {"metadata.name": f"{name}-0",
                                          "metadata.namespace": d["metadata"]["namespace"]}[field]
                if env.get("CONCLAVE_REGION") != region:
                    fail(f"overlay {region} {name}: CONCLAVE_REGION is {env.get('CONCLAVE_REGION')!r}")
                check_config(conclave, f"overlay {region} {name}", c["args"], env, files)
                term = pod.get("terminationGracePeriodSeconds", 30)
                if name == "node" and term < 45:
                    fail(f"overlay {region} node: grace period {term}s is shorter than a drain")


def main():
    conclave, kubectl = sys.argv[1], sys.argv[2]
    services = check_compose(conclave)
    check_prometheus(services)
    check_dashboard()
    check_metrics_doc()
    check_kubernetes(conclave, kubectl)
    if failures:
        print(f"{len(failures)} deploy check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("deploy/ and docker-compose.yml: every check passed")


if __name__ == "__main__":
    main()
