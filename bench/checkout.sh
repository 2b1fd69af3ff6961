#!/usr/bin/env bash
# Checkout throughput on the monolith (confirmed orders/s, p50/p99) next to the raw
# SQLite commit rate of this machine, measured in the same run. Prints Markdown.
#
#   bench/checkout.sh [seconds] [connections]        (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=${2:-16}
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 2; }
cargo build --release -q -p bazaar -p baseline
BIN=target/release
PIN_SERVER=(); PIN_LOAD=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0); PIN_LOAD=(taskset -c 1)
fi
WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
PORT=$(python3 scripts/free_ports.py)
URL="http://127.0.0.1:$PORT"
json() { python3 -c "import json,sys;d=json.load(sys.stdin);print($1)"; }

for sync in ${BENCH_SYNC_MODES:-normal full}; do
  rm -rf "$WORK/data"
  BAZAAR_SQLITE_SYNCHRONOUS=$sync BAZAAR_LOG_FILTER=warn BAZAAR_RATE_LIMIT_PER_SECOND=0 BAZAAR_AUTH_RATE_LIMIT_PER_SECOND=0 BAZAAR_SEED_PRODUCTS=100 \
  BAZAAR_ADMIN_EMAIL=bench-admin@example.com BAZAAR_ADMIN_PASSWORD=bench-password \
    "${PIN_SERVER[@]}" "$BIN/bazaar" serve --data-dir "$WORK/data" --http-addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do curl -fs -o /dev/null "$URL/health/ready" && break; sleep 0.05; done
  ADMIN=$(curl -fs -XPOST "$URL/api/v1/auth/login" -H 'content-type: application/json' \
    -d '{"email":"bench-admin@example.com","password":"bench-password"}' | json 'd["token"]')
  TOKEN=$(curl -fs -XPOST "$URL/api/v1/auth/register" -H 'content-type: application/json' \
    -d '{"email":"buyer@example.com","password":"bench-password","name":"Buyer"}' | json 'd["token"]')
  PRODUCTS=$(curl -fs "$URL/api/v1/products?limit=20" | json '",".join(p["id"] for p in d["items"])')
  for id in ${PRODUCTS//,/ }; do
    curl -fs -o /dev/null -XPUT "$URL/api/v1/products/$id/stock" -H "authorization: Bearer $ADMIN" \
      -H 'content-type: application/json' -d '{"stock":1000000}'
  done
  OUT=$(TOKEN=$TOKEN PRODUCTS=$PRODUCTS "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
    -s bench/checkout.lua "$URL")
  total=$(awk '/requests in/ {print $1}' <<<"$OUT")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$OUT"); non2xx=${non2xx:-0}
  p50=$(awk '/^ +50%/ {print $2}' <<<"$OUT"); p99=$(awk '/^ +99%/ {print $2}' <<<"$OUT")
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  # Count what the store says, not what the client saw.
  AUDIT=$("$BIN/bazaar" --data-dir "$WORK/data" audit --json 2>/dev/null || true)
  orders=$(json 'd["orders"]' <<<"$AUDIT"); audit_ok=$(json 'd["ok"]' <<<"$AUDIT")
  rate=$(python3 -c "print(f'{($total - $non2xx) / $DURATION:.0f}')")
  commits=$("${PIN_SERVER[@]}" "$BIN/sqlite_commits" 5 "$sync" 4 | awk '{print $1}')
  ROWS+="| $sync | $rate | $p50 / $p99 | $non2xx | $orders | $audit_ok | $commits |"$'\n'
done

cat <<MD
| sqlite synchronous | confirmed orders/s | p50 / p99 | non-2xx | orders in store | audit clean | raw SQLite commits/s (4 tasks) |
|---|---|---|---|---|---|---|
$ROWS
Each order: one line, \`tok_visa\`, placed by one user over $CONNS connections for $DURATION s (wrk, closed loop); the
response is 201 only once the saga has reserved, charged and confirmed. Machine: $(nproc) cores, server pinned to core 0 and
wrk to core 1: $([ ${#PIN_SERVER[@]} -gt 0 ] && echo yes || echo no). Command: \`bench/checkout.sh $DURATION $CONNS\`, $(date -u +%Y-%m-%d).
MD
