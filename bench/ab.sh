#!/usr/bin/env bash
# A/B of two bazaar binaries on one `bazaar loadgen` mix against the monolith (SQLite,
# rate limits off), in interleaved rounds (A, B, A, B, …) of one run, so the shared,
# noisy machine weighs on both alike. Each round starts the server on a fresh data dir.
# Prints per round and the medians: checkout p50, confirmed orders/s, and server CPU per
# answered request; then B/A as ratios. Issue 16's rule: a change is kept only if it
# measures better.
#
#   bench/ab.sh A=target/ab/bazaar-before B=target/ab/bazaar-after \
#       [--mix checkout] [--users 16] [--seconds 15] [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A BIN=()
mix=checkout users=16 seconds=15 rounds=3
while [[ $# -gt 0 ]]; do
    case $1 in
        A=* | B=*) BIN[${1%%=*}]=${1#*=} ;;
        --mix) mix=$2; shift ;;
        --users) users=$2; shift ;;
        --seconds) seconds=$2; shift ;;
        --rounds) rounds=$2; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
[[ -x ${BIN[A]:-} && -x ${BIN[B]:-} ]] || { echo "give A=<bazaar> and B=<bazaar>" >&2; exit 2; }
work=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
url=http://127.0.0.1:$port

for round in $(seq 1 "$rounds"); do
    for variant in A B; do
        rm -rf "$work/data"
        BAZAAR_LOG_FILTER=warn BAZAAR_RATE_LIMIT_PER_SECOND=0 BAZAAR_AUTH_RATE_LIMIT_PER_SECOND=0 \
            "${BIN[$variant]}" serve --data-dir "$work/data" --http-addr "127.0.0.1:$port" >/dev/null 2>&1 &
        pid=$!
        for _ in $(seq 1 600); do curl -fs -o /dev/null "$url/health/ready" && break; sleep 0.05; done
        # The load generator is A's binary both times: only the server differs.
        "${BIN[A]}" loadgen --target "$url" --mix "$mix" --users "$users" --duration "${seconds}s" \
            --warmup 3s --seed 42 --cpu-pid "server=$pid" --json "$work/$variant-$round.json" >/dev/null
        kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    done
done

python3 - "$work" "$rounds" "$mix" <<'PY'
import json, statistics, sys
work, rounds, mix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def figures(path):
    d = json.load(open(path))
    op = d["operations"].get("checkout", d["total"])
    cpu = d["cpu"]["groups"]["server"]["per_request_us"]
    orders = d.get("orders") or {}
    return {
        "p50 ms": op["latency_us"]["p50"] / 1000,
        "req/s": d["total"]["rate"],
        "confirmed/s": orders.get("confirmed_per_sec", 0.0),
        "server µs/req": cpu,
    }
rows = {v: [figures(f"{work}/{v}-{r}.json") for r in range(1, rounds + 1)] for v in "AB"}
keys = list(rows["A"][0])
print(f"| variant, round | " + " | ".join(keys) + " |")
print("|---" * (len(keys) + 1) + "|")
for r in range(rounds):
    for v in "AB":
        print(f"| {v} {r + 1} | " + " | ".join(f"{rows[v][r][k]:,.2f}" for k in keys) + " |")
med = {v: {k: statistics.median(x[k] for x in rows[v]) for k in keys} for v in "AB"}
for v in "AB":
    print(f"| {v} median | " + " | ".join(f"{med[v][k]:,.2f}" for k in keys) + " |")
print("| B/A | " + " | ".join(f"{med['B'][k] / med['A'][k]:.3f}" if med['A'][k] else "-" for k in keys) + " |")
print(f"\n{mix} mix, {rounds} interleaved rounds")
PY
