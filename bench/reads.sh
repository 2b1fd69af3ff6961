#!/usr/bin/env bash
# Start-up time, idle RSS, and GET /api/v1/products/{id} throughput next to the bare
# axum baseline, measured side by side in one run. Prints a Markdown report.
#
#   bench/reads.sh [seconds-per-run]        (needs wrk: apt-get install wrk)
#
# Pinning: the server under test gets core 0, wrk gets core 1 (when there are two),
# so the load generator does not steal the server's CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=32
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 2; }
cargo build --release -q -p bazaar -p baseline
BIN=target/release
PIN_SERVER=(); PIN_LOAD=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0); PIN_LOAD=(taskset -c 1)
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 scripts/free_ports.py; }
now_ms() { date +%s%3N; }
wait_ready() { # url, max seconds
  local deadline=$(( $(now_ms) + $2 * 1000 ))
  until curl -fs -o /dev/null "$1"; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "not ready: $1" >&2; return 1; }
    sleep 0.005
  done
}
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

start_bazaar() { # data dir, port -> pid in $PID
  BAZAAR_LOG_FILTER=warn BAZAAR_RATE_LIMIT_PER_SECOND=0 BAZAAR_AUTH_RATE_LIMIT_PER_SECOND=0 BAZAAR_SEED_PRODUCTS=1000 \
    "${PIN_SERVER[@]}" "$BIN/bazaar" serve --data-dir "$1" --http-addr "127.0.0.1:$2" \
    >/dev/null 2>&1 &
  PID=$!; PIDS+=("$PID")
}

# 1. Start-up: fresh data dir (create databases, migrate, seed 1,000 products) and
#    warm (existing data), five of each; the median is reported.
fresh=(); warm=()
for i in 1 2 3 4 5; do
  dir="$WORK/start-$i"; port=$(free_port)
  t0=$(now_ms); start_bazaar "$dir" "$port"; wait_ready "http://127.0.0.1:$port/health/ready" 30
  fresh+=( $(( $(now_ms) - t0 )) ); kill "$PID"; wait "$PID" 2>/dev/null || true
  t0=$(now_ms); start_bazaar "$dir" "$port"; wait_ready "http://127.0.0.1:$port/health/ready" 30
  warm+=( $(( $(now_ms) - t0 )) ); kill "$PID"; wait "$PID" 2>/dev/null || true
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }

# 2. Idle RSS after start-up and a short rest.
port=$(free_port); start_bazaar "$WORK/serve" "$port"; BZ_PID=$PID
wait_ready "http://127.0.0.1:$port/health/ready" 30
sleep 2
idle_rss=$(rss_mb "$BZ_PID")
ID=$(curl -fs "http://127.0.0.1:$port/api/v1/products?limit=1" | python3 -c 'import json,sys;print(json.load(sys.stdin)["items"][0]["id"])')

bport=$(free_port)
"${PIN_SERVER[@]}" "$BIN/baseline" "127.0.0.1:$bport" >/dev/null 2>&1 & BASE_PID=$!; PIDS+=("$BASE_PID")
wait_ready "http://127.0.0.1:$bport/api/v1/products/x" 10

# 3. Throughput, alternating baseline and bazaar twice so drift on this shared machine
#    hits both alike. wrk is closed-loop: $CONNS connections, one request in flight each.
rps() { "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$1" | awk '
  /Requests\/sec/ {r=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {printf "%s %s %s", r, p50, p99}'; }
declare -a B Z
for round in 1 2; do
  read -r b50 bp50 bp99 <<<"$(rps "http://127.0.0.1:$bport/api/v1/products/$ID")"
  read -r z50 zp50 zp99 <<<"$(rps "http://127.0.0.1:$port/api/v1/products/$ID")"
  B+=("$b50"); Z+=("$z50")
  echo "round $round: baseline $b50 req/s (p50 $bp50, p99 $bp99); bazaar $z50 req/s (p50 $zp50, p99 $zp99)" >&2
  last_b="$bp50 / $bp99"; last_z="$zp50 / $zp99"
done
loaded_rss=$(rss_mb "$BZ_PID")
avg() { python3 -c "import sys;v=[float(x) for x in sys.argv[1:]];print(f'{sum(v)/len(v):.0f}')" "$@"; }
b=$(avg "${B[@]}"); z=$(avg "${Z[@]}")
ratio=$(python3 -c "print(f'{$z/$b*100:.0f}')")

cat <<MD
| measurement | value | aim |
|---|---|---|
| start-up to ready, fresh data dir (migrate + seed 1,000 products), median of 5 | $(median "${fresh[@]}") ms | < 300 ms |
| start-up to ready, existing data dir, median of 5 | $(median "${warm[@]}") ms | |
| idle RSS after start-up | ${idle_rss} MB | < 30 MB |
| RSS after the read runs | ${loaded_rss} MB | |
| bare axum handler, GET product (mean of 2 × ${DURATION} s, $CONNS conns) | ${b} req/s (p50/p99 of last run: ${last_b}) | |
| bazaar monolith, GET /api/v1/products/{id} (same) | ${z} req/s (p50/p99 of last run: ${last_z}) | |
| bazaar / bare | ${ratio} % | ≥ 50 % |

Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB; server pinned to core 0 and wrk to core 1: $([ ${#PIN_SERVER[@]} -gt 0 ] && echo yes || echo no). Command: \`bench/reads.sh $DURATION\`, $(date -u +%Y-%m-%d).
MD
