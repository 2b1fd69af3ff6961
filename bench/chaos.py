#!/usr/bin/env python3
"""The chaos harness (bench/chaos.sh runs it): the split under load, faults on a seeded
schedule, then the invariants. Python 3 standard library only; needs root (network
namespaces, iptables, tc; PostgreSQL's initdb runs as the `postgres` user) and
openssl (the Ed25519 service keys).

What it builds, all private to the run and removed at the end:
  - PostgreSQL (initdb on a free port, fsync on);
  - a 3-node NATS JetStream cluster (file storage, sync_interval: always), the
    streams R3 (BAZAAR_NATS_STREAM_REPLICAS=3);
  - the split: two replicas of each of the eight modules and the gateway, each a
    `bazaar serve --only <module>` process this harness starts, kills and restarts,
    set up as a deployment is (ADR 0008, docs/operations.md): each module connects
    as its own PostgreSQL role `bazaar_<module>` (password authentication), made
    first by its migration step (`bazaar migrate` with the superuser's URL as
    BAZAAR_DATABASE_ADMIN_URL, which no server gets); each process signs its
    service-to-service calls with its own Ed25519 key (BAZAAR_SERVICE_KEYS_DIR:
    its private key and every public key), no shared service secret.
    The orders replicas run in one network namespace, the payments replicas in
    another, both on a bridge with the host: the network faults sit between them.

Load: two `bazaar loadgen` (shop and checkout mixes, open loop) against the gateway
for the whole run, each writing a --trace of every answer.

Faults (one at a time; each kind at least once, the rest drawn from the seed):
  kill_process   kill -9 of one bazaar process (each module and the gateway at
                 least once), restarted after a delay
  nats_one       kill -9 of one NATS node, restarted after a delay
  nats_all       kill -9 of all three NATS nodes, restarted after a delay
  pg_restart     pg_ctl stop -m immediate, started again after a delay
  net_slow       orders <-> payments: netem delay when the kernel has it, else an
                 HTB rate limit (queueing delay)
  net_loss       orders <-> payments: netem loss when the kernel has it, else
                 iptables `statistic` drops, 30% of packets each way
  net_partition  orders <-> payments: every packet dropped (iptables), both ways
  payments_slow  the payments.charge fault (PUT /api/v1/admin/faults): +latency
  payments_fail  the payments.charge fault: every call fails (503)

Then: faults healed, load stopped, quiescence awaited, and the invariants checked
(see `check_invariants`). Exit status: 0 when every invariant holds, 1 on a
violation, 2 when the harness itself could not run.
"""

import argparse
import base64
import bisect
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

# Ports from below the ephemeral range, shared with scripts/schemathesis.sh.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from free_ports import free_port  # noqa: E402

MODULES = ["identity", "catalog", "cart", "payments", "orders", "notifications", "analytics", "storefront"]
GATEWAY = "gateway"
# The topics each consumer subscribes to (crates/<consumer>/src/events.rs, `topics`):
# each of these events in the producer's outbox must be in the consumer's inbox.
CONSUMES = {
    "cart": ["orders.OrderConfirmed"],
    "notifications": ["identity.UserRegistered", "orders.OrderConfirmed", "orders.OrderFailed",
                      "orders.OrderCancelled"],
    "analytics": ["orders.OrderConfirmed", "orders.OrderCancelled", "orders.OrderFailed",
                  "payments.PaymentCaptured", "payments.PaymentRefunded", "payments.PaymentDeclined"],
}
# The two modules the network faults sit between, each in its own namespace.
NET_A, NET_B = "orders", "payments"
PG_BIN = "/usr/lib/postgresql/15/bin"
KINDS = ["kill_process", "nats_one", "nats_all", "pg_restart", "net_slow", "net_loss",
         "net_partition", "payments_slow", "payments_fail"]
# How long an accepted order may take, after the load stops, to reach a terminal state.
TERMINAL_WITHIN_SECS = 120
# How long the system gets after a heal to be whole again (every process ready).
RECOVER_WITHIN_SECS = 90
ADMIN_EMAIL = "chaos-admin@example.com"
ADMIN_PASSWORD = "chaos-admin-password"


def log(msg):
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*cmd, check=True, quiet=False, **kw):
    r = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
    if not quiet and r.returncode != 0:
        log(f"(ignored) {' '.join(cmd)}: {r.stderr.strip()[-200:]}")
    return r


def http(method, url, body=None, token=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception:
        return None, b""


class Postgres:
    def __init__(self, root, host):
        self.dir = os.path.join(root, "pgdata")
        self.sock = os.path.join(root, "pgsock")
        self.log = os.path.join(root, "postgres.log")
        self.port = free_port()
        self.host = host
        self.as_pg = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]

    def init(self):
        os.makedirs(self.sock, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(os.path.dirname(self.dir), "postgres")
            shutil.chown(self.sock, "postgres")
        sh(*self.as_pg, f"{PG_BIN}/initdb", "-D", self.dir, "-U", "postgres", "--auth=trust",
           "-E", "UTF8", "--no-instructions")
        # The bazaar processes connect over the bridge (the namespaced ones must): the
        # modules as their own roles, with their passwords; the migration steps and
        # `bazaar audit` as the superuser.
        subnet = f"{self.host.rsplit('.', 1)[0]}.0/24"
        with open(os.path.join(self.dir, "pg_hba.conf"), "a") as f:
            f.write(f"host all postgres {subnet} trust\n"
                    f"host all all {subnet} scram-sha-256\n")
        self.start()
        self.psql("postgres", "CREATE DATABASE bazaar")

    def start(self):
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses='127.0.0.1,{self.host}' "
                "-c max_connections=600 -c fsync=on -c synchronous_commit=on")
        sh(*self.as_pg, f"{PG_BIN}/pg_ctl", "-D", self.dir, "-l", self.log, "-w", "-t", "60",
           "-o", opts, "start")

    def stop_immediate(self):
        sh(*self.as_pg, f"{PG_BIN}/pg_ctl", "-D", self.dir, "-m", "immediate", "stop", check=False)

    def stop(self):
        sh(*self.as_pg, f"{PG_BIN}/pg_ctl", "-D", self.dir, "-m", "fast", "-w", "stop",
           check=False, quiet=True)

    def ready(self):
        return sh(f"{PG_BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1",
                  check=False, quiet=True).returncode == 0

    def psql(self, db, sql):
        r = sh("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-X",
               "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql)
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def url(self, role="postgres", password=None):
        user = f"{role}:{password}" if password else role
        return f"postgres://{user}@{self.host}:{self.port}/bazaar"


class Nats:
    """Three nats-server nodes in one JetStream cluster."""

    def __init__(self, root, host, binary):
        self.root, self.host, self.binary = root, host, binary
        self.nodes = []
        for i in range(3):
            self.nodes.append({"name": f"n{i + 1}", "client": free_port(), "route": free_port(),
                               "monitor": free_port(), "proc": None})
        for n in self.nodes:
            routes = ", ".join(f"nats-route://127.0.0.1:{m['route']}" for m in self.nodes if m is not n)
            store = os.path.join(root, "nats", n["name"])
            os.makedirs(store, exist_ok=True)
            conf = os.path.join(root, f"nats-{n['name']}.conf")
            with open(conf, "w") as f:
                f.write(f"""server_name: {n['name']}
listen: "{host}:{n['client']}"
http: "127.0.0.1:{n['monitor']}"
jetstream {{
  store_dir: "{store}"
  sync_interval: always
}}
cluster {{
  name: bazaar-chaos
  listen: "127.0.0.1:{n['route']}"
  routes: [{routes}]
}}
""")
            n["conf"] = conf

    def url(self):
        return ",".join(f"nats://{self.host}:{n['client']}" for n in self.nodes)

    def start(self, n):
        out = open(os.path.join(self.root, f"nats-{n['name']}.log"), "a")
        n["proc"] = subprocess.Popen([self.binary, "-c", n["conf"]], stdout=out, stderr=out,
                                     start_new_session=True)

    def kill(self, n):
        if n["proc"] and n["proc"].poll() is None:
            n["proc"].kill()
            n["proc"].wait()

    def healthy(self, n):
        status, _ = http("GET", f"http://127.0.0.1:{n['monitor']}/healthz", timeout=2)
        return status == 200

    def all_healthy(self):
        return all(n["proc"] and n["proc"].poll() is None and self.healthy(n) for n in self.nodes)


class Network:
    """A bridge with the host and one namespace per faulted module."""

    def __init__(self, tag):
        self.tag = tag
        octet = 20 + os.getpid() % 200
        self.prefix = f"10.213.{octet}"
        self.bridge = f"bzc{tag}"
        self.host = f"{self.prefix}.1"
        self.ns = {NET_A: f"bzc{tag}-a", NET_B: f"bzc{tag}-b"}
        self.ip = {NET_A: f"{self.prefix}.2", NET_B: f"{self.prefix}.3"}
        self.veth = {NET_A: f"bzc{tag}a", NET_B: f"bzc{tag}b"}
        self.netem = False
        self.made = False

    def up(self):
        self.made = True
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.host}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for m in (NET_A, NET_B):
            ns, veth = self.ns[m], self.veth[m]
            sh("ip", "netns", "add", ns)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "i")
            sh("ip", "link", "set", veth + "i", "netns", ns)
            sh("ip", "link", "set", veth, "master", self.bridge)
            sh("ip", "link", "set", veth, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.ip[m]}/24", "dev", veth + "i")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", veth + "i", "up")
        # netem is a kernel module some kernels lack (this VM's does): probe it once.
        probe = self.exec(NET_A, "tc", "qdisc", "add", "dev", self.veth[NET_A] + "i", "root",
                          "netem", "delay", "1ms", check=False, quiet=True)
        self.netem = probe.returncode == 0
        if self.netem:
            self.exec(NET_A, "tc", "qdisc", "del", "dev", self.veth[NET_A] + "i", "root")
        log(f"network: bridge {self.bridge} {self.host}/24, {NET_A} at {self.ip[NET_A]}, "
            f"{NET_B} at {self.ip[NET_B]}, netem {'available' if self.netem else 'MISSING (HTB and iptables instead)'}")

    def down(self):
        if not self.made:
            return
        for m in (NET_A, NET_B):
            sh("ip", "netns", "del", self.ns[m], check=False, quiet=True)
            sh("ip", "link", "del", self.veth[m], check=False, quiet=True)
        sh("ip", "link", "del", self.bridge, check=False, quiet=True)

    def exec(self, module, *cmd, check=True, quiet=False):
        return sh("ip", "netns", "exec", self.ns[module], *cmd, check=check, quiet=quiet)

    def pairs(self):
        return [(NET_A, self.ip[NET_B]), (NET_B, self.ip[NET_A])]

    def slow(self):
        for m, other in self.pairs():
            dev = self.veth[m] + "i"
            self.exec(m, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "20")
            self.exec(m, "tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:20", "htb",
                      "rate", "10gbit", "quantum", "60000")
            if self.netem:
                self.exec(m, "tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
                          "rate", "10gbit", "quantum", "60000")
                self.exec(m, "tc", "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:",
                          "netem", "delay", "200ms", "50ms")
            else:
                # No netem: a narrow pipe, whose queue is the delay (~80 ms per KB).
                self.exec(m, "tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
                          "rate", "100kbit", "ceil", "100kbit")
            self.exec(m, "tc", "filter", "add", "dev", dev, "protocol", "ip", "parent", "1:", "prio", "1",
                      "u32", "match", "ip", "dst", f"{other}/32", "flowid", "1:10")

    def loss(self, share=0.3):
        for m, other in self.pairs():
            if self.netem:
                dev = self.veth[m] + "i"
                self.exec(m, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "20")
                self.exec(m, "tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:20", "htb",
                          "rate", "10gbit", "quantum", "60000")
                self.exec(m, "tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
                          "rate", "10gbit", "quantum", "60000")
                self.exec(m, "tc", "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:",
                          "netem", "loss", f"{share * 100:.0f}%")
                self.exec(m, "tc", "filter", "add", "dev", dev, "protocol", "ip", "parent", "1:",
                          "prio", "1", "u32", "match", "ip", "dst", f"{other}/32", "flowid", "1:10")
            else:
                self.exec(m, "iptables", "-A", "OUTPUT", "-d", other, "-m", "statistic", "--mode",
                          "random", "--probability", str(share), "-j", "DROP")

    def partition(self):
        for m, other in self.pairs():
            self.exec(m, "iptables", "-A", "OUTPUT", "-d", other, "-j", "DROP")
            self.exec(m, "iptables", "-A", "INPUT", "-s", other, "-j", "DROP")

    def heal(self):
        for m, _ in self.pairs():
            self.exec(m, "tc", "qdisc", "del", "dev", self.veth[m] + "i", "root", check=False, quiet=True)
            self.exec(m, "iptables", "-F", "OUTPUT")
            self.exec(m, "iptables", "-F", "INPUT")


class Service:
    def __init__(self, module, label, ip, port, netns):
        self.module, self.label, self.ip, self.port, self.netns = module, label, ip, port, netns
        self.proc = None

    def url(self):
        return f"http://{self.ip}:{self.port}"


class Cluster:
    def __init__(self, args, work, net, pg, nats):
        self.args, self.work, self.net, self.pg, self.nats = args, work, net, pg, nats
        self.services = []
        for m in MODULES:
            for r in (1, 2):
                netns = net.ns.get(m)
                ip = net.ip.get(m, net.host)
                self.services.append(Service(m, f"{m}-{r}", ip, free_port(), netns))
        self.gateway = Service(GATEWAY, GATEWAY, "127.0.0.1", free_port(), None)
        self.services.append(self.gateway)
        secret = lambda: base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        # A role per module, each with a password of its own (ADR 0008).
        self.database_urls = {m: pg.url(f"bazaar_{m}", secret()) for m in MODULES}
        self.keys = self.service_keys()
        self.common = {
            "BAZAAR_NATS_URL": nats.url(),
            "BAZAAR_NATS_PREFIX": "chaos",
            "BAZAAR_NATS_STREAM_REPLICAS": "3",
            "BAZAAR_JWT_SECRET": secret(),
            "BAZAAR_METRICS_TOKEN": secret(),
            "BAZAAR_FAULT_ADMIN": "true",
            "BAZAAR_RATE_LIMIT_PER_SECOND": "0",
            "BAZAAR_AUTH_RATE_LIMIT_PER_SECOND": "0",
            "BAZAAR_LOG_FILTER": os.environ.get("CHAOS_LOG_FILTER", "warn"),
            "BAZAAR_ADMIN_EMAIL": ADMIN_EMAIL,
            "BAZAAR_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "BAZAAR_SEED_PRODUCTS": "200",
            # loadgen signs its users in once and does not refresh: tokens that outlive
            # the longest run keep its carts and checkouts from turning into 401s.
            "BAZAAR_TOKEN_TTL_SECS": "7200",
        }

    def env(self, s):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("BAZAAR_") and k not in ("RUST_LOG",)}
        env.update(self.common)
        env["BAZAAR_HTTP_ADDR"] = f"{s.ip}:{s.port}"
        env["BAZAAR_DATA_DIR"] = os.path.join(self.work, "data", s.label)
        env["BAZAAR_SERVICE_KEYS_DIR"] = os.path.join(self.keys, s.module)
        if s.module in self.database_urls:
            env["BAZAAR_DATABASE_URL"] = self.database_urls[s.module]
        for m in MODULES:
            if m != s.module:
                env[f"BAZAAR_PEER_{m.upper()}"] = ",".join(
                    x.url() for x in self.services if x.module == m)
        return env

    def service_keys(self):
        """An Ed25519 key pair per service, laid out as a deployment mounts them (what
        `chassis::auth::provision_service_keys` writes): `<root>/<service>/` holds its
        own private key (PKCS#8 PEM) and every service's public key (SPKI PEM)."""
        root = os.path.join(self.work, "service-keys")
        pairs = os.path.join(root, "pairs")
        os.makedirs(pairs, mode=0o700, exist_ok=True)
        names = MODULES + [GATEWAY]
        for n in names:
            key, pub = (os.path.join(pairs, f"{n}.{ext}") for ext in ("key", "pub"))
            sh("openssl", "genpkey", "-algorithm", "ed25519", "-out", key, quiet=True)
            sh("openssl", "pkey", "-in", key, "-pubout", "-out", pub, quiet=True)
        for n in names:
            own = os.path.join(root, n)
            os.makedirs(own, mode=0o700, exist_ok=True)
            files = [f"{n}.key"] + [f"{m}.pub" for m in names]
            for f in files:
                shutil.copyfile(os.path.join(pairs, f), os.path.join(own, f))
                os.chmod(os.path.join(own, f), 0o600)
        return root

    def migrate(self):
        """Each module's migration step, before any server starts: as the superuser
        (BAZAAR_DATABASE_ADMIN_URL) it makes the module's role the owner of its schema,
        then migrates the schema as that role. The servers get only their role's URL."""
        for m in MODULES:
            s = next(x for x in self.services if x.module == m)
            os.makedirs(os.path.join(self.work, "data", s.label), exist_ok=True)
            env = self.env(s)
            env["BAZAAR_ONLY"] = m
            env["BAZAAR_DATABASE_ADMIN_URL"] = self.pg.url()
            with open(os.path.join(self.work, "logs", f"migrate-{m}.log"), "a") as out:
                r = subprocess.run([self.args.bin, "migrate"], env=env, stdout=out, stderr=out,
                                   stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise RuntimeError(f"the migration of {m} failed; see logs/migrate-{m}.log")
        log("migrated: every module's role and schema")

    def start(self, s):
        os.makedirs(os.path.join(self.work, "data", s.label), exist_ok=True)
        cmd = [self.args.bin, "serve", "--only", s.module]
        if s.netns:
            # `ip netns exec` execs the command: the child's pid is bazaar's.
            cmd = ["ip", "netns", "exec", s.netns] + cmd
        out = open(os.path.join(self.work, "logs", f"{s.label}.log"), "a")
        s.proc = subprocess.Popen(cmd, env=self.env(s), stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                  start_new_session=True)

    def kill(self, s):
        if s.proc and s.proc.poll() is None:
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait()

    def ready(self, s):
        if s.proc is None or s.proc.poll() is not None:
            return False
        status, _ = http("GET", s.url() + "/health/ready", timeout=2)
        return status == 200

    def wait_ready(self, services, limit):
        deadline = time.time() + limit
        pending = list(services)
        while pending and time.time() < deadline:
            pending = [s for s in pending if not self.ready(s)]
            if pending:
                time.sleep(0.25)
        return pending

    def boot(self):
        self.migrate()
        # First replicas in module order, then the second ones, then the gateway.
        for batch in ([s for s in self.services if s.label.endswith("-1")],
                      [s for s in self.services if s.label.endswith("-2")], [self.gateway]):
            for s in batch:
                self.start(s)
                deadline = time.time() + 120
                while not self.ready(s) and s.proc.poll() is None and time.time() < deadline:
                    time.sleep(0.25)
                # Alive as well as answering: a process that exited cannot be the one
                # answering on its port.
                if s.proc.poll() is not None or not self.ready(s):
                    raise RuntimeError(f"{s.label} did not become ready; see logs/{s.label}.log")
            log("ready: " + ", ".join(s.label for s in batch))

    def ensure_running(self):
        for s in self.services:
            if s.proc is None or s.proc.poll() is not None:
                log(f"{s.label} is not running (exit {s.proc.poll() if s.proc else '-'}): restarting")
                self.start(s)


class Loadgen:
    def __init__(self, args, work, target, mix, rate, seed):
        self.trace = os.path.join(work, f"trace-{mix}.jsonl")
        self.log = os.path.join(work, "logs", f"loadgen-{mix}.log")
        self.cmd = [args.bin, "loadgen", "--target", target, "--mix", mix, "--rate", str(rate),
                    "--duration", "3600s", "--timeout", "10s", "--users-pool", "10", "--seed", str(seed),
                    "--no-progress", "--settle", "0s", "--trace", self.trace]
        self.proc = None

    def start(self):
        out = open(self.log, "a")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAZAAR_")}
        env["BAZAAR_LOG_FILTER"] = "error"
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=out, env=env, start_new_session=True)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def lines(self):
        out = []
        try:
            with open(self.trace) as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass  # the last line, cut by the kill
        except FileNotFoundError:
            pass
        return out


class Chaos:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.events = []  # dicts: kind, target, start, heal, ready
        self.admin_token = None

    # --- the schedule ---------------------------------------------------------------
    def plan(self):
        """Every kind once (every bazaar module and the gateway killed once), shuffled;
        the run then continues with draws from the seed until its duration is spent."""
        kinds = self.args.kinds
        cover = [("kill_process", m) for m in MODULES + [GATEWAY]] if "kill_process" in kinds else []
        cover += [(k, None) for k in KINDS if k != "kill_process" and k in kinds]
        self.rng.shuffle(cover)
        return cover

    def draw(self):
        kinds = self.args.kinds
        kind = self.rng.choice(kinds + (["kill_process"] * 3 if "kill_process" in kinds else []))
        return (kind, self.rng.choice(MODULES + [GATEWAY]) if kind == "kill_process" else None)

    def hold(self, lo, hi):
        return round(self.rng.uniform(lo, hi), 1)

    # --- the faults -------------------------------------------------------------------
    def fault_plan(self, kind, target):
        """(hold range in s, what it hits, how to break it, how to heal it) of a fault."""
        c, n, pg, net = self.cluster, self.nats, self.pg, self.net
        if kind == "kill_process":
            s = self.rng.choice([s for s in c.services if s.module == target])
            return (2, 6), s.label, lambda: c.kill(s), lambda: c.start(s)
        if kind == "nats_one":
            node = self.rng.choice(n.nodes)
            return (4, 10), node["name"], lambda: n.kill(node), lambda: n.start(node)
        if kind == "nats_all":
            return ((3, 8), None, lambda: [n.kill(x) for x in n.nodes],
                    lambda: [n.start(x) for x in n.nodes])
        if kind == "pg_restart":
            return (3, 8), None, pg.stop_immediate, pg.start
        if kind in ("net_slow", "net_loss", "net_partition"):
            brk = {"net_slow": net.slow, "net_loss": net.loss, "net_partition": net.partition}[kind]
            return (8, 15), f"{NET_A}<->{NET_B}", brk, net.heal
        body = {"latency_ms": 2500} if kind == "payments_slow" else {"error_rate": 1.0}
        return ((8, 15), "payments.charge " + json.dumps(body), lambda: self.fault("PUT", body),
                lambda: self.fault("DELETE", None))

    def inject(self, kind, target):
        ev = {"kind": kind, "target": target, "start": time.time()}
        (lo, hi), label, brk, heal = self.fault_plan(kind, target)
        ev["target"] = label
        ev["hold"] = self.hold(lo, hi)
        brk()
        time.sleep(ev["hold"])
        ev["heal"] = time.time()
        heal()
        self.events.append(ev)
        return ev

    def admin(self):
        if self.admin_token is None:
            status, body = http("POST", self.gw + "/api/v1/auth/login",
                                {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, timeout=10)
            if status != 200:
                raise RuntimeError(f"admin login: {status} {body[:200]!r}")
            self.admin_token = json.loads(body)["token"]
        return self.admin_token

    def fault(self, method, body):
        # The gateway fans the faults routes out to every module process.
        for attempt in range(10):
            status, text = http(method, self.gw + "/api/v1/admin/faults/payments.charge", body,
                                token=self.admin(), timeout=10)
            if status is not None and 200 <= status < 300:
                return
            if status == 401:
                # The admin's access token outlives no long run: sign in again.
                self.admin_token = None
            log(f"{method} fault: {status} {text[:200]!r}; retrying")
            time.sleep(1)
        raise RuntimeError(f"cannot {method} the payments.charge fault")

    def wait_whole(self, ev):
        """After a heal: when every process, every NATS node and PostgreSQL are up."""
        deadline = ev["heal"] + RECOVER_WITHIN_SECS
        while time.time() < deadline:
            if (self.pg.ready() and self.nats.all_healthy()
                    and not self.cluster.wait_ready(self.cluster.services, 0.01)):
                ev["ready"] = time.time()
                return True
            self.cluster.ensure_running()
            time.sleep(0.5)
        ev["ready"] = None
        return False

    # --- the run ------------------------------------------------------------------------
    def run(self):
        a = self.args
        self.work = a.out or tempfile.mkdtemp(prefix="bazaar-chaos-")
        os.makedirs(os.path.join(self.work, "logs"), exist_ok=True)
        # initdb runs as `postgres`, who must be able to reach its directory.
        pgroot = tempfile.mkdtemp(prefix="bazaar-chaos-pg-")
        os.chmod(pgroot, 0o755)
        log(f"work dir {self.work}, seed {a.seed}, duration {a.duration}s, bazaar {a.bin}")
        tag = str(os.getpid() % 10000)
        self.net = Network(tag)
        self.pg = Postgres(pgroot, self.net.host)
        self.nats = None
        self.cluster = None
        self.loads = []
        try:
            self.net.up()
            self.pg.init()
            log(f"PostgreSQL {self.pg.port} ({pgroot})")
            self.nats = Nats(self.work, self.net.host, a.nats_server)
            for node in self.nats.nodes:
                self.nats.start(node)
            t = time.time()
            while not self.nats.all_healthy():
                if time.time() - t > 60:
                    raise RuntimeError("the NATS cluster did not become healthy")
                time.sleep(0.3)
            log(f"NATS cluster {self.nats.url()}")
            self.cluster = Cluster(a, self.work, self.net, self.pg, self.nats)
            self.cluster.boot()
            self.gw = self.cluster.gateway.url()
            self.admin()
            self.loads = [Loadgen(a, self.work, self.gw, "shop", a.shop_rate, a.seed),
                          Loadgen(a, self.work, self.gw, "checkout", a.checkout_rate, a.seed + 1)]
            for l in self.loads:
                l.start()
            self.load_start = time.time()
            time.sleep(a.calm)
            t0 = time.time()
            queue = self.plan()
            whole = True
            while queue or time.time() - t0 < a.duration:
                kind, target = queue.pop(0) if queue else self.draw()
                log(f"inject {kind} {target or ''}")
                ev = self.inject(kind, target)
                if not self.wait_whole(ev):
                    log(f"NOT whole {RECOVER_WITHIN_SECS}s after healing {kind}")
                    whole = False
                    break
                log(f"  {ev['target'] or ''} held {ev['hold']}s, whole {ev['ready'] - ev['heal']:.1f}s after the heal")
                time.sleep(a.calm)
            self.schedule_end = time.time()
            for l in self.loads:
                l.stop()
            log(f"load stopped after {self.schedule_end - self.load_start:.0f}s, {len(self.events)} faults")
            result = self.check_invariants(whole)
            report = self.report(result)
            with open(os.path.join(self.work, "report.md"), "w") as f:
                f.write(report)
            print(report, flush=True)
            ok = all(v["ok"] for v in result.values())
            log(("all invariants hold" if ok else "INVARIANTS VIOLATED") + f"; logs in {self.work}")
            return 0 if ok else 1
        finally:
            for l in self.loads:
                l.stop()
            if self.cluster:
                for s in self.cluster.services:
                    self.cluster.kill(s)
            if self.nats:
                for node in self.nats.nodes:
                    self.nats.kill(node)
            self.pg.stop()
            self.net.down()
            shutil.rmtree(pgroot, ignore_errors=True)

    # --- the invariants -----------------------------------------------------------------
    def schemas(self):
        return [r[0] for r in self.pg.psql("bazaar", "SELECT schema_name FROM information_schema.schemata")]

    def settled(self, accepted):
        """What still moves: accepted orders not terminal, unsent outbox rows, events a
        consumer has neither applied nor dead-lettered."""
        ids = ",".join("'" + i.replace("'", "") + "'" for i in accepted) or "''"
        open_orders = self.pg.psql("bazaar", f"SELECT id, status FROM orders.orders WHERE id IN ({ids}) "
                                             "AND (saga_open <> 0 OR status = 'pending')")
        found = {r[0] for r in self.pg.psql("bazaar", f"SELECT id FROM orders.orders WHERE id IN ({ids})")}
        missing = sorted(set(accepted) - found)
        unsent = {}
        for m in MODULES:
            n = int(self.pg.psql("bazaar", f"SELECT count(*) FROM {m}.outbox WHERE sent_at IS NULL")[0][0])
            if n:
                unsent[m] = n
        unapplied = {}
        for consumer, topics in CONSUMES.items():
            for topic in topics:
                p = topic.split(".")[0]
                rows = self.pg.psql("bazaar", f"SELECT o.id, o.topic FROM {p}.outbox o WHERE o.topic = '{topic}' "
                                              f"AND NOT EXISTS (SELECT 1 FROM {consumer}.inbox i "
                                              f"WHERE i.consumer = '{consumer}' AND i.event_id = o.id)")
                if rows:
                    unapplied[f"{topic}->{consumer}"] = rows
        return open_orders, missing, unsent, unapplied

    def check_invariants(self, whole):
        a = self.args
        res = {}
        lines = [l for load in self.loads for l in load.lines()]
        accepted = sorted({l["order"] for l in lines
                           if l["op"] == "checkout" and l.get("status") in (201, 202) and l.get("order")})
        # Quiescence: every process up, then wait for what still moves.
        self.cluster.ensure_running()
        self.cluster.wait_ready(self.cluster.services, 60)
        t = time.time()
        while True:
            open_orders, missing, unsent, unapplied = self.settled(accepted)
            if not (open_orders or unsent or unapplied) or time.time() - t > TERMINAL_WITHIN_SECS:
                break
            time.sleep(2)
        quiet_after = time.time() - t
        log(f"quiescence after {quiet_after:.1f}s: {len(open_orders)} open, {len(missing)} missing, "
            f"unsent {unsent}, unapplied {sum(len(v) for v in unapplied.values())}")
        res["accepted orders terminal"] = {
            "ok": not open_orders and not missing,
            "detail": f"{len(accepted)} accepted (201/202); terminal within {quiet_after:.0f}s of the load's end "
                      f"(bound {TERMINAL_WITHIN_SECS}s)" if not open_orders and not missing else
                      f"{len(open_orders)} not terminal after {TERMINAL_WITHIN_SECS}s (e.g. {open_orders[:3]}), "
                      f"{len(missing)} accepted but absent from the orders store (e.g. {missing[:3]})"}
        # bazaar audit: every module's store, read directly (the monolith's view of PG).
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAZAAR_")}
        env.update({"BAZAAR_DATABASE_URL": self.pg.url(), "BAZAAR_LOG_FILTER": "error",
                    "BAZAAR_DATA_DIR": os.path.join(self.work, "data", "audit")})
        r = subprocess.run([a.bin, "audit", "--json", "--stuck-after-secs", "0"], env=env,
                           capture_output=True, text=True)
        with open(os.path.join(self.work, "audit.json"), "w") as f:
            f.write(r.stdout + r.stderr)
        try:
            audit = json.loads(r.stdout[r.stdout.find("{"):])
            bad = [f"{c['name']}: {c['violations'][:3]}" for c in audit["checks"] if not c["ok"]]
            res["bazaar audit"] = {"ok": audit["ok"] and r.returncode == 0,
                                   "detail": f"{audit['orders']} orders, {len(audit['checks'])} checks clean"
                                   if audit["ok"] else "; ".join(bad)}
        except (ValueError, KeyError):
            res["bazaar audit"] = {"ok": False, "detail": f"exit {r.returncode}: {r.stderr.strip()[-300:]}"}
        twice = self.pg.psql("bazaar", "SELECT order_id, count(*) FROM payments.payments GROUP BY order_id "
                                       "HAVING count(*) > 1")
        twice += self.pg.psql("bazaar", "SELECT order_id, count(*) FROM payments.ledger WHERE kind = 'capture' "
                                        "GROUP BY order_id HAVING count(*) > 1")
        charges = self.pg.psql("bazaar", "SELECT count(*) FROM payments.payments")[0][0]
        res["no order charged twice"] = {"ok": not twice,
                                         "detail": f"{charges} payments, one per order" if not twice
                                         else f"{len(twice)} orders charged more than once: {twice[:3]}"}
        dead = {}
        for m in CONSUMES:
            n = int(self.pg.psql("bazaar", f"SELECT count(*) FROM {m}.dead_letters")[0][0])
            if n:
                dead[m] = n
        published = {}
        for t in sorted({t for ts in CONSUMES.values() for t in ts}):
            n = int(self.pg.psql("bazaar", f"SELECT count(*) FROM {t.split('.')[0]}.outbox "
                                           f"WHERE topic = '{t}'")[0][0])
            if n:
                published[t] = n
        applied = {c: int(self.pg.psql("bazaar", f"SELECT count(*) FROM {c}.inbox")[0][0]) for c in CONSUMES}
        ok = not unsent and not unapplied and not dead
        res["no event lost (outboxes vs inboxes)"] = {
            "ok": ok,
            "detail": (f"published (consumed topics) {published}; every one in each subscriber's inbox once (inbox rows {applied})" if ok else
                       f"unsent {unsent}; not applied {dict((k, len(v)) for k, v in unapplied.items())} "
                       f"(e.g. {[(k, v[:2]) for k, v in unapplied.items()][:2]}); dead-lettered {dead}")}
        unhealthy = []
        for s in self.cluster.services:
            r = subprocess.run([a.bin, "health", "--url", s.url() + "/health/ready"], capture_output=True,
                               text=True, env=env)
            if r.returncode != 0:
                unhealthy.append(f"{s.label}: {r.stderr.strip()[-120:]}")
        unhealthy += [f"nats {n['name']}" for n in self.nats.nodes if not self.nats.healthy(n)]
        if not self.pg.ready():
            unhealthy.append("postgresql")
        res["every process healthy"] = {
            "ok": not unhealthy and whole,
            "detail": (f"{len(self.cluster.services)} bazaar processes ready (`bazaar health`), 3 NATS nodes, "
                       "PostgreSQL" if not unhealthy else "; ".join(unhealthy)) +
                      ("" if whole else f"; the system was not whole {RECOVER_WITHIN_SECS}s after a heal")}
        self.lines = lines
        self.accepted = accepted
        return res

    # --- the report ---------------------------------------------------------------------
    def report(self, result):
        # A request belongs to the moment it was sent (its answer's end less its
        # latency): one sent during a fault and answered after the heal counts there.
        for l in self.lines:
            l["sent"] = l["at_ms"] / 1000 - l["latency_us"] / 1e6
        lines = sorted(self.lines, key=lambda l: l["sent"])
        times = [l["sent"] for l in lines]

        def window(lo, hi):
            return lines[bisect.bisect_left(times, lo):bisect.bisect_left(times, hi)]

        def failed(l):
            return l.get("status") is None or l["status"] >= 500

        def p99(ws):
            if not ws:
                return None
            lat = sorted(l["latency_us"] for l in ws)
            return lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000

        def recovery(ev):
            """From the heal to the start of the first 3 s with answers and none failed."""
            t = ev["heal"]
            end = ev.get("ready") or t
            limit = t + RECOVER_WITHIN_SECS
            while t < limit:
                ws = window(t, t + 3)
                if ws and not any(failed(l) for l in ws):
                    return max(t, end) - ev["heal"]
                t += 0.5
            return None

        def row_of(ev):
            # The gateway is the one process without a second replica (nothing balances
            # in front of it here): its kills are a row of their own.
            if ev["kind"] == "kill_process":
                return "kill_process (gateway)" if ev["target"] == GATEWAY else "kill_process (a module replica)"
            return ev["kind"]

        per_kind = {}
        for ev in self.events:
            ws = window(ev["start"], ev["heal"])
            ev["requests"] = len(ws)
            ev["failed"] = sum(failed(l) for l in ws)
            ev["p99_ms"] = p99(ws)
            ev["recover_s"] = recovery(ev)
            per_kind.setdefault(row_of(ev), []).append(ev)
        out = []
        out.append(f"Chaos run: seed {self.args.seed}, {self.schedule_end - self.load_start:.0f}s of load "
                   f"(shop {self.args.shop_rate}/s + checkout {self.args.checkout_rate}/s, open loop), "
                   f"{len(self.events)} faults, {len(lines)} answers, {len(self.accepted)} orders accepted; "
                   f"netem {'available' if self.net.netem else 'not in this kernel (HTB rate limit and iptables drops instead)'}.")
        out.append("")
        out.append("| fault | injected | held (s, mean) | requests during | error rate during (5xx + transport) "
                   "| p99 during | time to recover (mean / max) | targets |")
        out.append("|---|---|---|---|---|---|---|---|")
        for kind in ["kill_process (a module replica)", "kill_process (gateway)"] + KINDS[1:]:
            evs = per_kind.get(kind, [])
            if not evs:
                out.append(f"| {kind} | 0 | | | | | | |")
                continue
            req = sum(e["requests"] for e in evs)
            fail = sum(e["failed"] for e in evs)
            allw = [l for e in evs for l in window(e["start"], e["heal"])]
            rec = [e["recover_s"] for e in evs if e["recover_s"] is not None]
            never = sum(1 for e in evs if e["recover_s"] is None)
            p = p99(allw)
            targets = sorted({e["target"] for e in evs if e["target"]})
            out.append(
                f"| {kind} | {len(evs)} | {sum(e['hold'] for e in evs) / len(evs):.1f} | {req} | "
                f"{fail / req:.1%} ({fail}) | {f'{p:,.0f} ms' if p is not None else '-'} | "
                + (f"{sum(rec) / len(rec):.1f} s / {max(rec):.1f} s" if rec else "-")
                + (f" ({never} never within {RECOVER_WITHIN_SECS}s)" if never else "")
                + f" | {', '.join(targets) if len(targets) <= 4 else f'{len(targets)} distinct'} |")
        faulted = [(e["start"], e["heal"] + (e["recover_s"] or 0) + 3) for e in self.events]
        in_fault = set()
        for lo, hi in faulted:
            in_fault.update(range(bisect.bisect_left(times, lo), bisect.bisect_left(times, hi)))
        calm = [l for i, l in enumerate(lines)
                if i not in in_fault and times[i] >= self.load_start + 5]
        cf = sum(failed(l) for l in calm)
        cp = p99(calm)
        out.append(f"| (no fault) | - | - | {len(calm)} | {cf / max(len(calm), 1):.1%} ({cf}) | "
                   f"{f'{cp:,.0f} ms' if cp is not None else '-'} | - | |")
        out.append("")
        out.append("| invariant | holds | detail |")
        out.append("|---|---|---|")
        for name, v in result.items():
            out.append(f"| {name} | {'yes' if v['ok'] else '**NO**'} | {v['detail']} |")
        out.append("")
        out.append("Time to recover: from the heal (process or node restarted, PostgreSQL started, "
                   "network or payments fault removed) to the start of the first 3 s in which answers came "
                   "and none failed, and no earlier than every process being ready again.")
        with open(os.path.join(self.work, "events.json"), "w") as f:
            json.dump(self.events, f, indent=1)
        with open(os.path.join(self.work, "invariants.json"), "w") as f:
            json.dump(result, f, indent=1)
        return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=300, help="seconds of faults (at least every kind once)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bin", default="target/debug/bazaar")
    p.add_argument("--nats-server", required=True)
    p.add_argument("--out", help="work dir for logs and traces (default: a fresh temp dir)")
    p.add_argument("--shop-rate", type=float, default=10)
    p.add_argument("--checkout-rate", type=float, default=3)
    p.add_argument("--calm", type=float, default=4, help="seconds of calm between faults")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help="comma-separated fault kinds to inject (default: all; fewer is for debugging)")
    a = p.parse_args()
    a.kinds = [k for k in a.kinds.split(",") if k]
    unknown = set(a.kinds) - set(KINDS)
    if unknown or not a.kinds:
        p.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    a.bin = os.path.abspath(a.bin)
    if a.out:
        a.out = os.path.abspath(a.out)
        os.makedirs(a.out, exist_ok=True)
    if os.geteuid() != 0:
        print("chaos: needs root (network namespaces, iptables, tc)", file=sys.stderr)
        return 2
    for tool in ("ip", "tc", "iptables", "psql", "openssl", f"{PG_BIN}/initdb"):
        if not shutil.which(tool):
            print(f"chaos: {tool} is missing", file=sys.stderr)
            return 2
    # SIGTERM (CI's timeout, a developer's kill) unwinds like Ctrl-C: the processes,
    # PostgreSQL and the network namespaces are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    try:
        return Chaos(a).run()
    except RuntimeError as e:
        log(f"harness failed: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
