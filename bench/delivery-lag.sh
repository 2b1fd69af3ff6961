#!/usr/bin/env bash
# How far event delivery lags behind checkouts in the monolith: runs `bazaar loadgen`'s
# checkout mix against a fresh server (SQLite, rate limits off), then reads from the
# data dir, per `OrderConfirmed`, the delay from its orders outbox row's insert to its
# stamp (relayed) and to cart's inbox record (applied). Prints the loadgen order
# counts (placed, confirmed, failed, confirmed/s) and the delays' average and maximum
# in ms. A lag past a shopper's time between checkouts shows as orders that buy lines
# again and fail out_of_stock (docs/benchmarks.md, "the delivery cliff").
#
#   bench/delivery-lag.sh <bazaar> [users=16] [seconds=10] [warmup=2]
set -euo pipefail
bin=${1:?give the bazaar binary}
users=${2:-16} seconds=${3:-10} warmup=${4:-2}
work=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill -INT "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export BAZAAR_LOG_FILTER=warn BAZAAR_RATE_LIMIT_PER_SECOND=0 BAZAAR_AUTH_RATE_LIMIT_PER_SECOND=0
port=$(python3 "$(dirname "$0")/../scripts/free_ports.py")
url=http://127.0.0.1:$port
"$bin" serve --data-dir "$work/data" --http-addr "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do curl -fs -o /dev/null "$url/health/ready" && break; sleep 0.05; done
"$bin" loadgen --target "$url" --mix checkout --users "$users" --duration "${seconds}s" \
    --warmup "${warmup}s" --seed 42 --cpu-pid "server=$pid" --json "$work/report.json" >/dev/null
sleep 1 # the last confirmations' delivery
kill -INT "$pid"; wait "$pid" 2>/dev/null || true; pid=""
python3 - "$work/report.json" "$work/data" <<'PY'
import json, sqlite3, sys
o = json.load(open(sys.argv[1]))["orders"]
print(f"placed {o['placed']}, confirmed {o['confirmed']}, failed {o['failed']}, "
      f"{o['confirmed_per_sec']:.0f} confirmed/s")
db = sqlite3.connect(f"{sys.argv[2]}/orders.db")
db.execute("ATTACH ? AS c", (f"{sys.argv[2]}/cart.db",))
n, stamp_avg, stamp_max, inbox_avg, inbox_max = db.execute("""
    WITH o AS (SELECT created_at, sent_at, json_extract(envelope, '$.id') AS eid
               FROM outbox WHERE topic = 'orders.OrderConfirmed')
    SELECT count(*), avg(o.sent_at - o.created_at) / 1000.0, max(o.sent_at - o.created_at) / 1000.0,
           avg(i.processed_at - o.created_at) / 1000.0, max(i.processed_at - o.created_at) / 1000.0
    FROM o JOIN c.inbox i ON i.event_id = o.eid""").fetchone()
print(f"OrderConfirmed: {n}; to its stamp avg {stamp_avg:.1f} / max {stamp_max:.1f} ms; "
      f"to cart inbox avg {inbox_avg:.1f} / max {inbox_max:.1f} ms")
PY
