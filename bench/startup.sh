#!/usr/bin/env bash
# Start-up to ready and idle RSS of the monolith (issue 16's "keep" row): five starts
# on a fresh data dir (create the databases, migrate, seed 1,000 products) and five
# on the same dir again, medians reported; then the RSS of a started server after a
# 2-s rest (VmRSS) and its peak so far (VmHWM). No load generator needed.
#
#   bench/startup.sh [BAZAAR_BINARY]     (default: target/release/bazaar, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/bazaar}
[ -x "$BIN" ] || cargo build --release -q -p bazaar --bin bazaar
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 scripts/free_ports.py; }
now_ms() { date +%s%3N; }
wait_ready() { # url: up to 30 s
  local deadline=$(( $(now_ms) + 30000 ))
  until curl -fs -o /dev/null "$1"; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "not ready: $1" >&2; exit 1; }
    sleep 0.005
  done
}
start() { # data dir, port: starts the server, waits until ready; ms taken in $TOOK
  local t0; t0=$(now_ms)
  BAZAAR_LOG_FILTER=warn BAZAAR_SEED_PRODUCTS=1000 \
    "$BIN" serve --data-dir "$1" --http-addr "127.0.0.1:$2" >/dev/null 2>&1 &
  PID=$!
  wait_ready "http://127.0.0.1:$2/health/ready"
  TOOK=$(( $(now_ms) - t0 ))
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
status_mb() { awk -v k="$2:" '$1 == k {printf "%.1f", $2/1024}' "/proc/$1/status"; }

fresh=(); warm=()
for i in 1 2 3 4 5; do
  port=$(free_port)
  start "$WORK/d$i" "$port"; fresh+=( "$TOOK" ); stop
  start "$WORK/d$i" "$port"; warm+=( "$TOOK" ); stop
done
port=$(free_port); start "$WORK/idle" "$port"; sleep 2
echo "Command: bench/startup.sh $BIN ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), load average $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "| figure | measured | aim |"
echo "|---|---|---|"
echo "| start-up to ready, fresh data dir, median of 5 (${fresh[*]} ms) | $(median "${fresh[@]}") ms | ≤ 300 ms |"
echo "| start-up to ready, existing data dir, median of 5 (${warm[*]} ms) | $(median "${warm[@]}") ms | |"
echo "| idle RSS 2 s after ready (VmRSS) / peak so far (VmHWM) | $(status_mb "$PID" VmRSS) / $(status_mb "$PID" VmHWM) MB | ≤ 30 MB |"
