#!/usr/bin/env bash
# What one checkout costs the stores, counted rather than timed (issue 16): the
# monolith (SQLite) places N orders one after another (each: add one item to the cart,
# then `POST /orders` from the cart with an Idempotency-Key, waiting for the answer),
# and this prints, per order, for each module's database:
#   - write transactions: commit frames appended to its WAL file (exact: every commit
#     writes one, read-only transactions none), and
#   - SQL statements sqlx ran (its `sqlx::query` debug log), by the tables they name:
#     the platform tables every store has (outbox, inbox, idempotency keys) on lines
#     of their own, summed over the databases.
# Transactions' BEGIN/COMMIT and sqlx's pool pings are not statements in that log, nor
# are the statements of units run by a store's SQLite writer thread (ADR 0019: the
# order append, the idempotency keys, catalog's reservations and payments' records,
# with their outbox rows); their commits are counted.
#
#   bench/writes.sh [target/release/bazaar] [orders (default 20)] [users (default 1)]
# With several users, each places its share of the orders at the same time as the
# others (what batching relays and consumers are for).
# (WRITES_SHOW=<database> also prints the log lines of that database's statements.)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/bazaar}
orders=${2:-20}
users=${3:-1}
work=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 scripts/free_ports.py)
BAZAAR_LOG_FILTER="warn,sqlx::query=debug" BAZAAR_RATE_LIMIT_PER_SECOND=0 \
    BAZAAR_AUTH_RATE_LIMIT_PER_SECOND=0 \
    "$bin" serve --data-dir "$work/data" --http-addr "127.0.0.1:$port" >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do curl -fs -o /dev/null "http://127.0.0.1:$port/health/ready" && break; sleep 0.05; done

python3 - "http://127.0.0.1:$port" "$work" "$orders" "$users" <<'PY'
import glob, json, os, struct, sys, threading, time, urllib.request
base, work, n, users = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def call(method, path, body=None, token=None, headers=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req) as r:
        return r.status, json.loads(r.read() or b"null")

def generations():
    """Per database: the WAL's current generation (its salt) and its commit frames."""
    out = {}
    for wal in glob.glob(os.path.join(work, "data", "*.db-wal")):
        data = open(wal, "rb").read()
        db = os.path.basename(wal)[:-7]
        if len(data) < 32:
            continue
        page = struct.unpack(">I", data[8:12])[0]
        salt = data[16:24]
        count, off = 0, 32
        while off + 24 + page <= len(data):
            frame = data[off:off + 24]
            if frame[8:16] != salt:
                break
            if struct.unpack(">I", frame[4:8])[0] != 0:
                count += 1
            off += 24 + page
        out[db] = (salt, count)
    return out

class Commits:
    """Commit frames per database, across checkpoints: a checkpoint restarts the WAL
    under a new salt, so the WAL is read every 10 ms and each generation's last count
    kept (a generation shorter than that could be missed: none is, at these rates)."""
    def __init__(self):
        self.seen, self.stop = {}, False
        self.sample()
        self.thread = threading.Thread(target=self.watch)
        self.thread.start()
    def watch(self):
        while not self.stop:
            self.sample()
            time.sleep(0.01)
    def sample(self):
        for db, (salt, count) in generations().items():
            gens = self.seen.setdefault(db, {})
            gens[salt] = max(gens.get(salt, 0), count)
    def total(self):
        return {db: sum(gens.values()) for db, gens in self.seen.items()}
    def finish(self):
        self.stop = True
        self.thread.join()
        self.sample()

def log_lines():
    return open(os.path.join(work, "log"), errors="replace").read().splitlines()

tokens = []
for u in range(users):
    _, session = call("POST", "/api/v1/auth/register",
                      {"email": f"writes{u}@example.com", "password": "password123", "name": "W"})
    tokens.append(session["token"])
_, products = call("GET", "/api/v1/products?limit=5")
product = products["items"][0]["id"]
address = {"name": "Ada Lovelace", "line1": "12 St James Square", "city": "London",
           "postal_code": "SW1Y 4JH", "country": "GB"}

def order(token, key):
    call("POST", "/api/v1/cart/items", {"product_id": product, "quantity": 1}, token)
    status, body = call("POST", "/api/v1/orders",
                        {"payment_token": "tok_visa", "shipping_address": address}, token,
                        {"idempotency-key": key})
    assert status == 201 and body["status"] == "confirmed", (status, body)

for u, token in enumerate(tokens):
    order(token, f"warm-{u}")  # first use of every statement, the welcome emails, ...
time.sleep(1.5)
watch = Commits()
before, lines_before = watch.total(), len(log_lines())
def shopper(u):
    for i in range(u, n, users):
        order(tokens[u], f"writes-{i}")
threads = [threading.Thread(target=shopper, args=(u,)) for u in range(users)]
for t in threads:
    t.start()
for t in threads:
    t.join()
time.sleep(1.5)  # relays and consumers finish
watch.finish()
after, lines = watch.total(), log_lines()[lines_before:]

TABLES = {
    "orders": ["order_events", "order_keys", "saga_leases", " orders"],
    "catalog": ["reservations", "reservation_lines", "products"],
    "payments": ["payments", "ledger"],
    "cart": ["cart_items"],
    "notifications": ["recipients", "notifications"],
    "analytics": ["sales_"],
    "identity": ["users", "refresh_tokens"],
}
SHARED = {"outbox": "outbox (relays, any module)", "inbox": "inbox (consumers)",
          "idempotency_keys": "idempotency keys (orders, payments)"}
statements = {}
for line in lines:
    try:
        record = json.loads(line)
    except ValueError:
        continue
    if record.get("target") != "sqlx::query":
        continue
    text = record["fields"].get("db.statement", "").lower()
    db = next((label for table, label in SHARED.items() if table in text), None)
    if db is None:
        db = next((name for name, tables in TABLES.items() if any(t in text for t in tables)),
                  "other")
    if os.environ.get("WRITES_SHOW") == db:
        print(" ".join(text.split()))
    statements[db] = statements.get(db, 0) + 1

print(f"{n} orders by {users} users at once (each with its add to cart); per order:")
print(f"{'database':<38}{'write transactions':>20}{'statements':>12}")
total_tx = total_st = 0
for db in sorted(set(after) | set(statements)):
    tx = (after.get(db, 0) - before.get(db, 0)) / n
    st = statements.get(db, 0) / n
    total_tx += tx
    total_st += st
    if tx or st:
        print(f"{db:<38}{tx:>20.2f}{st:>12.2f}")
print(f"{'total':<38}{total_tx:>20.2f}{total_st:>12.2f}")
PY
