#!/usr/bin/env bash
# A/B of two bazaar binaries on one `bazaar loadgen` mix against the monolith (SQLite,
# rate limits off), or with --split against the split topology (`bazaar dev --split`:
# the gateway and every module as processes, on PostgreSQL + NATS JetStream), in
# interleaved rounds (A, B, A, B, …) of one run, so the shared, noisy machine weighs on
# both alike. Each round starts the server on a fresh data dir (split: also a fresh
# database and NATS prefix, both removed after). Prints per round and the medians:
# checkout p50, confirmed orders/s, and server CPU per answered request (split: every
# bazaar process; PostgreSQL's and nats-server's CPU per request in columns of their
# own); then B/A as ratios. Issue 16's rule: a change is kept only if it measures better.
#
#   bench/ab.sh A=target/ab/bazaar-before B=target/ab/bazaar-after \
#       [--mix checkout] [--users 16] [--seconds 15] [--rounds 3] [--split]
#
# --split needs PostgreSQL at BENCH_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/postgres, an admin URL) and NATS JetStream at
# BENCH_NATS_URL (default nats://127.0.0.1:4222).
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A BIN=()
mix=checkout users=16 seconds=15 rounds=3 split=""
while [[ $# -gt 0 ]]; do
    case $1 in
        A=* | B=*) BIN[${1%%=*}]=${1#*=} ;;
        --mix) mix=$2; shift ;;
        --users) users=$2; shift ;;
        --seconds) seconds=$2; shift ;;
        --rounds) rounds=$2; shift ;;
        --split) split=1 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
[[ -x ${BIN[A]:-} && -x ${BIN[B]:-} ]] || { echo "give A=<bazaar> and B=<bazaar>" >&2; exit 2; }
work=$(mktemp -d)
pid="" db=""
admin_url=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
nats_url=${BENCH_NATS_URL:-nats://127.0.0.1:4222}
drop_db() { [[ -n $db ]] && psql "$admin_url" -q -c "DROP DATABASE IF EXISTS $db" || true; db=""; }
cleanup() { [[ -n $pid ]] && kill -INT "$pid" 2>/dev/null; wait 2>/dev/null || true; drop_db; rm -rf "$work"; }
trap cleanup EXIT
# From below the ephemeral range (scripts/free_ports.py says why); the split's eight
# modules take the ports after the gateway's.
ports=1
[[ -n $split ]] && ports=9
port=$(python3 scripts/free_ports.py "$ports")
url=http://127.0.0.1:$port

for round in $(seq 1 "$rounds"); do
    for variant in A B; do
        rm -rf "$work/data"
        export BAZAAR_LOG_FILTER=warn BAZAAR_RATE_LIMIT_PER_SECOND=0 BAZAAR_AUTH_RATE_LIMIT_PER_SECOND=0
        if [[ -n $split ]]; then
            db=bench_ab_${variant,,}_${round}_$$
            psql "$admin_url" -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
            BAZAAR_NATS_PREFIX=benchab$$${variant}${round} "${BIN[$variant]}" dev --split \
                --data-dir "$work/data" --http-addr "127.0.0.1:$port" \
                --database-url "${admin_url%/*}/$db" --nats-url "$nats_url" >"$work/dev.log" 2>&1 &
        else
            "${BIN[$variant]}" serve --data-dir "$work/data" --http-addr "127.0.0.1:$port" >/dev/null 2>&1 &
        fi
        pid=$!
        for _ in $(seq 1 600); do curl -fs -o /dev/null "$url/health/ready" && break; sleep 0.05; done
        watch=(--cpu-pid "server=$pid")
        if [[ -n $split ]]; then
            watch=()
            for p in $(pgrep -P "$pid"); do watch+=(--cpu-pid "server=$p"); done
            for p in $(pgrep -x postgres); do watch+=(--cpu-pid "postgres=$p"); done
            for p in $(pgrep -x nats-server); do watch+=(--cpu-pid "nats=$p"); done
        fi
        # The load generator is A's binary both times: only the server differs.
        "${BIN[A]}" loadgen --target "$url" --mix "$mix" --users "$users" --duration "${seconds}s" \
            --warmup 3s --seed 42 "${watch[@]}" --json "$work/$variant-$round.json" >/dev/null
        kill -INT "$pid"; wait "$pid" 2>/dev/null || true; pid=""
        [[ -n $split ]] && drop_db
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
        **{f"{g} µs/req": d["cpu"]["groups"][g]["per_request_us"]
           for g in ("postgres", "nats") if g in d["cpu"]["groups"]},
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
