#!/usr/bin/env python3
"""Runs docker-compose.yml's cluster without a container runtime, as far as one machine
allows, and walks through what docs/operations.md tells an operator to try.

Each service gets a loopback address of its own (127.0.3.N) that stands in for its
container: its command, environment, healthcheck and the balancer's config are the
files' own, with only service names (and 0.0.0.0) replaced by those addresses. Redis,
PostgreSQL, every Conclave role and both HAProxy balancers run for real; Prometheus and
Grafana do not (their targets are scraped here instead).

Then, through the two regions' balancers: a room shared across regions, a gateway drained
behind its balancer while clients keep connecting, and a node drained while a client
keeps talking.

Usage: compose_local.py CONCLAVE_BINARY
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
SECRET = "a-cluster-secret-for-compose-local"
processes = []


def log(msg):
    print(f"compose-local: {msg}", flush=True)


def wait_for(what, check, within=30.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"compose-local: {what} not within {within}s")


class Compose:
    def __init__(self, conclave, workdir):
        self.conclave = conclave
        self.workdir = workdir
        self.spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        self.services = self.spec["services"]
        self.addr = {name: f"127.0.3.{i + 1}" for i, name in enumerate(self.services)}
        self.running = {}

    def local(self, text):
        """Service names and 0.0.0.0 in `text` → the services' loopback addresses."""
        # The any-address alone, not inside a network such as 10.0.0.0/8.
        text = re.sub(r"(?<![\d.])0\.0\.0\.0(?![\d/])", "{self}", str(text))
        for name in sorted(self.services, key=len, reverse=True):
            text = re.sub(rf"(?<![\w-]){re.escape(name)}(?=:\d)", self.addr[name], text)
        return text

    def env(self, name):
        env = {}
        for key, value in (self.services[name].get("environment") or {}).items():
            value = re.sub(r"\$\{CONCLAVE_CLUSTER_SECRET[^}]*\}", SECRET, str(value))
            env[key] = self.local(value).replace("{self}", self.addr[name])
        return env

    def spawn(self, name, argv, env, user=None):
        out = open(self.workdir / f"{name}.log", "w")
        full_env = {"PATH": os.environ["PATH"], **env}
        if user and os.geteuid() == 0:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]
        p = subprocess.Popen(argv, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                             cwd=self.workdir, start_new_session=True)
        processes.append(p)
        self.running[name] = p
        return p

    def healthy(self, name):
        """The service's own compose healthcheck, run against its address."""
        test = self.services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", test
        argv = [self.local(a).replace("127.0.0.1", self.addr[name]) for a in test[1:]]
        if argv[0] == "conclave":
            argv[0] = self.conclave
        if argv[0] == "redis-cli":
            argv[1:1] = ["-h", self.addr[name]]
        if argv[0] == "pg_isready":
            argv += ["-h", self.addr[name]]
        return subprocess.run(argv, capture_output=True, env=os.environ).returncode == 0

    def start_redis(self):
        cmd = self.services["redis"]["command"]
        self.spawn("redis", [*cmd, "--bind", self.addr["redis"], "--port", "6379"], {})
        wait_for("redis healthy", lambda: self.healthy("redis"))

    def start_postgres(self):
        env = self.services["postgres"]["environment"]
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        data = self.workdir / "pg"
        data.mkdir()
        user = "postgres" if os.geteuid() == 0 else None
        if user:
            shutil.chown(data, "postgres", "postgres")
        pw = self.workdir / "pgpass"
        pw.write_text(env["POSTGRES_PASSWORD"])
        os.chmod(pw, 0o644)
        init = [str(bindir / "initdb"), "-D", str(data / "data"), "-U", env["POSTGRES_USER"],
                "--pwfile", str(pw), "-A", "scram-sha-256", "--no-sync"]
        if user:
            init = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *init]
        subprocess.run(init, check=True, capture_output=True)
        self.spawn("postgres", [str(bindir / "postgres"), "-D", str(data / "data"), "-k", str(data),
                                "-c", f"listen_addresses={self.addr['postgres']}", "-p", "5432",
                                "-c", "fsync=off"], {}, user=user)
        wait_for("postgres healthy", lambda: self.healthy("postgres"))
        subprocess.run(["psql", "-h", str(data), "-U", env["POSTGRES_USER"], "-d", "postgres",
                        "-c", f"CREATE DATABASE {env['POSTGRES_DB']}"],
                       check=True, capture_output=True,
                       env={**os.environ, "PGPASSWORD": env["POSTGRES_PASSWORD"]})

    def start_conclave(self, name):
        svc = self.services[name]
        argv = [self.conclave, *(self.local(a).replace("{self}", self.addr[name]) for a in svc["command"])]
        env = self.env(name)
        self.spawn(name, argv, env)
        wait_for(f"{name} healthy", lambda: self.healthy(name), within=40)

    def start_balancer(self, name):
        cfg = (ROOT / "deploy/haproxy/haproxy.cfg").read_text()
        env = {k: str(v) for k, v in self.services[name]["environment"].items()}
        # The config names gateway-${REGION}-N: expand it as HAProxy would, then localize.
        cfg = cfg.replace("${REGION}", env["REGION"])
        cfg = re.sub(r"bind :(\d+)", rf"bind {self.addr[name]}:\1", self.local(cfg))
        path = self.workdir / f"{name}.cfg"
        path.write_text(cfg)
        self.spawn(name, ["haproxy", "-db", "-f", str(path)], env)
        wait_for(f"{name} healthy", lambda: self.healthy_balancer(name))

    def healthy_balancer(self, name):
        test = self.services[name]["healthcheck"]["test"]
        script = test[-1].replace("127.0.0.1", self.addr[name])
        return subprocess.run(["bash", "-c", script], capture_output=True).returncode == 0

    def url(self, name, port, path):
        return f"http://{self.addr[name]}:{port}{path}"


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()


def status_of(url):
    try:
        return get(url)[0]
    except urllib.error.HTTPError as e:
        return e.code


def owner(c, room):
    """The node a room's ring names, from a gateway's admin API (docs/operations.md)."""
    token = c.services["gateway-us-2"]["environment"]["CONCLAVE_ADMIN_TOKEN"]
    path = room.replace("/parties/", "/admin/rooms/")
    request = urllib.request.Request(c.url("gateway-us-2", 7400, path),
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as r:
        return json.loads(r.read())["ring_owner"]


def walkthrough(c):
    us, eu = f"ws://{c.addr['lb-us']}:1999", f"ws://{c.addr['lb-eu']}:1999"
    room = "/parties/main/walkthrough"

    log("a room shared by a client in each region, through the balancers")
    with connect(f"{us}{room}?_pk=alice", open_timeout=10) as alice, \
            connect(f"{eu}{room}?_pk=bob", open_timeout=10) as bob:
        alice.send("hello from us")
        assert bob.recv(timeout=10) == "hello from us"
        bob.send("hello from eu")
        assert alice.recv(timeout=10) == "hello from eu"

    log("every Prometheus target serves its metrics")
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    for job in prometheus["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, port = target.rsplit(":", 1)
                status, body = get(c.url(host, port, "/metrics"))
                prefix = "haproxy_" if job["job_name"] == "balancer" else "conclave_"
                assert status == 200 and prefix in body, (target, status)

    log("draining gateway-us-1 behind lb-us: new clients keep connecting")
    with connect(f"{us}{room}?_pk=carol", open_timeout=10) as carol:
        c.running["gateway-us-1"].send_signal(signal.SIGTERM)
        wait_for("gateway-us-1 /readyz failing", lambda: status_of(c.url("gateway-us-1", 1999, "/readyz")) == 503, 5)
        deadline = time.monotonic() + 6
        opened = 0
        while time.monotonic() < deadline:
            with connect(f"{us}{room}?_pk=dave{opened}", open_timeout=10) as s:
                s.send("ping")
            opened += 1
            time.sleep(0.2)
        try:
            carol.send("still talking")  # on gateway-us-2: open
        except ConnectionClosed as e:  # on gateway-us-1: closed with 1001, to reconnect
            assert e.rcvd is not None and e.rcvd.code == 1001, e
    assert c.running["gateway-us-1"].wait(timeout=20) == 0, "gateway-us-1 did not exit cleanly"
    log(f"  {opened} connections opened through lb-us while gateway-us-1 drained, none refused")

    log("draining node-a: a client of one of its rooms keeps talking")
    room = next(r for r in (f"/parties/main/on-a-{i}" for i in range(100)) if owner(c, r) == "a")
    with connect(f"{us}{room}?_pk=erin", open_timeout=10) as erin, \
            connect(f"{eu}{room}?_pk=frank", open_timeout=10) as frank:
        c.running["node-a"].send_signal(signal.SIGTERM)
        for i in range(20):
            erin.send(f"message {i}")
            assert frank.recv(timeout=15) == f"message {i}"
            time.sleep(0.1)
    assert c.running["node-a"].wait(timeout=50) == 0, "node-a did not exit cleanly"

    log("losing region eu (node-c killed): its rooms refuse, us rooms still serve")
    eu_room = "/parties/main/homed-in-eu"
    with connect(f"{eu}{eu_room}?_pk=gina", open_timeout=10) as gina:
        gina.send("homed in eu")
    c.running["node-c"].kill()
    def eu_room_refused():
        try:
            connect(f"{eu}{eu_room}?_pk=hal", open_timeout=10).close()
            return False
        except InvalidStatus as e:
            return e.response.status_code == 503
    wait_for("an eu room refused with 503", eu_room_refused, 15)
    # Until the heartbeat TTL drops node-c from the ring, eu gateways may still ask it.
    def us_room_through_lb_eu():
        with connect(f"{eu}/parties/main/fresh-after-eu-loss?_pk=ivy", open_timeout=10) as ivy, \
                connect(f"{us}/parties/main/fresh-after-eu-loss?_pk=jo", open_timeout=10) as jo:
            ivy.send("us still serves")
            return jo.recv(timeout=10) == "us still serves"
    started = time.monotonic()
    wait_for("rooms served through lb-eu after the loss of region eu", us_room_through_lb_eu, 15)
    log(f"  lb-eu served rooms again {time.monotonic() - started:.1f} s after the eu room was refused")
    assert eu_room_refused(), "the eu room came back without an eu node"


def main():
    conclave = str(Path(sys.argv[1]).resolve())
    workdir = Path(tempfile.mkdtemp(prefix="conclave-compose-"))
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
        os.chmod(workdir, 0o777)
    c = Compose(conclave, workdir)
    ok = False
    try:
        c.start_redis()
        c.start_postgres()
        roles = [n for n, s in c.services.items() if s.get("image") == "conclave"]
        for prefix in ["placement", "node", "gateway"]:
            for name in roles:
                if name.startswith(prefix):
                    c.start_conclave(name)
        for name in c.services:
            if c.services[name].get("image", "").startswith("haproxy"):
                c.start_balancer(name)
        log(f"running {', '.join(c.running)}")
        walkthrough(c)
        ok = True
        log("the compose cluster ran and passed the walkthrough")
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            for f in sorted(workdir.glob("*.log")):
                print(f"--- {f.name} (last lines)", file=sys.stderr)
                print("".join(f.read_text().splitlines(True)[-15:]), file=sys.stderr)


if __name__ == "__main__":
    main()
