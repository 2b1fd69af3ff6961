#!/usr/bin/env bash
# What tracing and metrics cost on the hottest path: GET /api/v1/products/{id} (the
# cached product read) against the monolith in three configurations, measured side by
# side in one run, interleaved (A B C A B C ...) so drift on a shared machine falls on
# all of them alike:
#
#   on        the default: every request traced into the in-memory trace buffer,
#             RED metrics recorded (no OTLP export: that is the collector's cost)
#   no-trace  OTEL_SDK_DISABLED=true: no tracing layer at all
#   off       no tracing and BAZAAR_METRICS_ENABLED=false: no recorder, no RED
#             middleware
#
# Load: `bazaar loadgen --mix product`, closed loop, N users, each run on a fresh
# server. Reports requests/s, p50/p99 and server CPU-microseconds per request (from
# /proc, by loadgen's --cpu-pid), then the cost of `on` relative to `off`.
#
#   bench/telemetry.sh [seconds-per-run] [users] [rounds]     (defaults 10, 32, 2)
#
# Pinning: with taskset and 2+ cores the server gets core 0 and loadgen core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
USERS=${2:-32}
ROUNDS=${3:-2}
[[ "$DURATION" =~ ^[0-9]+$ && "$USERS" =~ ^[0-9]+$ && "$ROUNDS" =~ ^[0-9]+$ ]] \
  || { echo "usage: bench/telemetry.sh [seconds] [users] [rounds]" >&2; exit 2; }
for tool in python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 2; }
done
cargo build --release -q -p bazaar
BIN=target/release/bazaar
PIN_SERVER=(); PIN_LOAD=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0); PIN_LOAD=(taskset -c 1)
fi
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 scripts/free_ports.py; }
wait_ready() {
  for _ in $(seq 1 400); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.025
  done
  echo "not ready: $1" >&2; return 1
}

run() { # config round
  local config=$1 round=$2 port dir env=()
  port=$(free_port); dir="$WORK/$config-$round"
  case $config in
    on) ;;
    no-trace) env=(OTEL_SDK_DISABLED=true) ;;
    off) env=(OTEL_SDK_DISABLED=true BAZAAR_METRICS_ENABLED=false) ;;
  esac
  env "${env[@]}" BAZAAR_LOG_FILTER=warn BAZAAR_RATE_LIMIT_PER_SECOND=0 BAZAAR_AUTH_RATE_LIMIT_PER_SECOND=0 \
    BAZAAR_SEED_PRODUCTS=1000 BAZAAR_MAX_IN_FLIGHT_REQUESTS=0 \
    "${PIN_SERVER[@]}" "$BIN" serve --data-dir "$dir" --http-addr "127.0.0.1:$port" \
    >"$WORK/$config-$round.log" 2>&1 &
  PID=$!
  wait_ready "http://127.0.0.1:$port/health/ready"
  "${PIN_LOAD[@]}" "$BIN" loadgen --target "http://127.0.0.1:$port" --mix product \
    --users "$USERS" --duration "${DURATION}s" --warmup 2s --no-progress \
    --cpu-pid "bazaar=$PID" --json "$WORK/$config-$round.json" >/dev/null
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  echo "[telemetry] $config round $round done" >&2
}

for round in $(seq 1 "$ROUNDS"); do
  for config in on no-trace off; do run "$config" "$round"; done
done

python3 - "$WORK" "$ROUNDS" "$DURATION" "$USERS" <<'EOF'
import json, sys, statistics
work, rounds, duration, users = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = {}
for config in ["on", "no-trace", "off"]:
    runs = [json.load(open(f"{work}/{config}-{r}.json")) for r in range(1, rounds + 1)]
    rate = statistics.median(r["total"]["rate"] for r in runs)
    p50 = statistics.median(r["total"]["latency_us"]["p50"] for r in runs)
    p99 = statistics.median(r["total"]["latency_us"]["p99"] for r in runs)
    cpu = statistics.median(r["cpu"]["groups"]["bazaar"]["per_request_us"] for r in runs)
    errors = sum(r["total"]["status"]["4xx"] + r["total"]["status"]["5xx"] + r["total"]["status"]["transport"] for r in runs)
    rows[config] = (rate, p50, p99, cpu, errors)
print(f"GET /api/v1/products/{{id}}, monolith (SQLite), {users} users closed loop, "
      f"{duration}s per run, median of {rounds} interleaved rounds\n")
print("| configuration | requests/s | p50 ms | p99 ms | server CPU µs/request | errors |")
print("|---|---:|---:|---:|---:|---:|")
for config, (rate, p50, p99, cpu, errors) in rows.items():
    print(f"| {config} | {rate:,.0f} | {p50/1000:.2f} | {p99/1000:.2f} | {cpu:.1f} | {errors} |")
on, nt, off = rows["on"], rows["no-trace"], rows["off"]
print()
print(f"Tracing + metrics vs off: CPU per request x{on[3]/off[3]:.2f}, throughput x{on[0]/off[0]:.2f}; "
      f"tracing alone: CPU x{on[3]/nt[3]:.2f}; metrics alone: CPU x{nt[3]/off[3]:.2f}.")
EOF
