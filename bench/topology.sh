#!/usr/bin/env bash
# What the split costs, measured side by side in ONE run on this machine: the same
# mixes at the same rates, driven by `bazaar loadgen`, against
#
#   baseline                   the bare axum handler (crates/baseline): the HTTP stack's ceiling
#   monolith (SQLite)          bazaar serve                      (the default)
#   monolith (PostgreSQL)      bazaar serve + BAZAAR_DATABASE_URL (storage alone changes)
#   split (PostgreSQL + NATS)  8 x bazaar serve --only <module> + the gateway
#
# each started fresh. Mixes: product (product views; the only one the baseline
# serves), shop (the default shopper mix), checkout and web (the shop mix on the
# storefront's HTML pages, checkout form instead of checkout); each as an open loop at fixed
# arrival rates (the latency-vs-rate curve) and a closed loop of N users (throughput).
# Per run: throughput, p50/p99, errors, confirmed orders, CPU per request of every
# server process of the topology, of the PostgreSQL processes serving it and of
# nats-server (all over loadgen's measured window, from /proc), loadgen's own CPU, and
# peak RSS per process (VmHWM, reset before each run). Then `bazaar audit`.
#
#   bench/topology.sh [--quick] [--duration S] [--warmup S] [--no-pin]
#                     [--topologies baseline,monolith,monolith-pg,split]
#                     [--out DIR] [--no-docs] [--no-build]
#
# Writes DIR/topology.json (default bench/results), docs/topology-latency.png and the
# generated parts of docs/benchmarks.md (between the `topology:` markers), through
# target/release/bench-report. --quick: 2-s runs, one rate per mix (a smoke test,
# not numbers to publish). --no-build: use the release binaries already built.
#
# Needs psql, python3, curl; PostgreSQL at BENCH_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/postgres: an admin URL, used to create one fresh
# database per PostgreSQL topology, dropped at the end) and NATS JetStream at
# BENCH_NATS_URL (default nats://127.0.0.1:4222; streams go under a prefix unique to
# the run and are deleted at the end).
#
# Pinning (default with taskset and at least 2 cores; --no-pin to turn it off): every
# server process on the first half of the cores, loadgen on the rest, so the load
# generator does not steal the servers' CPU. PostgreSQL and NATS are system services
# and are not pinned; their CPU is reported in columns of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SCRIPT_START=$(date +%s.%N)
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')
COMMAND="bench/topology.sh${*:+ $*}"

DURATION=5
WARMUP=2
QUICK=no
PIN=auto
TOPOLOGIES=baseline,monolith,monolith-pg,split
OUT=$ROOT/bench/results
DOCS=yes
BUILD=yes
usage() { sed -n '/^#   bench\/topology.sh/,/^#   *\[--out/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=yes; DURATION=2; WARMUP=1 ;;
    --duration) DURATION=${2:?}; shift ;;
    --warmup) WARMUP=${2:?}; shift ;;
    --no-pin) PIN=no ;;
    --pin) PIN=yes ;;
    --topologies) TOPOLOGIES=${2:?}; shift ;;
    --out) OUT=${2:?}; shift ;;
    --no-docs) DOCS=no ;;
    --no-build) BUILD=no ;;
    *) usage ;;
  esac
  shift
done
[[ "$DURATION" =~ ^[0-9]+$ && "$WARMUP" =~ ^[0-9]+$ && "$DURATION" -gt 0 ]] || usage
for t in ${TOPOLOGIES//,/ }; do
  case "$t" in baseline|monolith|monolith-pg|split) ;; *) echo "unknown topology $t" >&2; usage ;; esac
done
wants() { [[ ",$TOPOLOGIES," == *",$1,"* ]]; }

# The workload: the same for every topology. Open-loop rates (arrivals/s) per mix,
# from light to past what the split sustains on one core, and the closed loop's users.
declare -A RATES=(
  [product]="1000 5000 15000"
  [shop]="200 1000 3000"
  [checkout]="50 200 500"
  [web]="200 1000 3000"
)
declare -A USERS=([product]=32 [shop]=32 [checkout]=16 [web]=32)
if [ "$QUICK" = yes ]; then
  RATES=([product]="2000" [shop]="300" [checkout]="50" [web]="300")
fi
MIXES=(product shop checkout web)
USERS_POOL=32          # registered per run; at least the largest closed-loop user count
REQUEST_TIMEOUT=5s     # per request; an overloaded open loop turns late answers into errors
MAX_IN_FLIGHT=2000     # open loop: arrivals beyond are counted as dropped
SETTLE=10s             # how long loadgen keeps reading orders that were pending when answered
SEED_PRODUCTS=100
SEED=42

ADMIN_DB_URL=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
NATS_URL=${BENCH_NATS_URL:-nats://127.0.0.1:4222}
for tool in python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 2; }
done
if wants monolith-pg || wants split; then
  command -v psql >/dev/null || { echo "psql is required for the PostgreSQL topologies" >&2; exit 2; }
fi

log() { echo "[topology $(date +%H:%M:%S)] $*" >&2; }

# What decides the topology comes from this script alone; tuning keys (e.g.
# BAZAAR_DB_MAX_CONNECTIONS) are passed through and named in the report.
for var in $(compgen -e | grep -E '^BAZAAR_(DATABASE_URL|NATS_URL|NATS_PREFIX|ONLY|PEER_|HTTP_ADDR|DATA_DIR|JWT_SECRET|SERVICE_SECRET|CONFIG)' || true); do
  unset "$var"
done

BUILD_START=$(date +%s.%N)
if [ "$BUILD" = yes ]; then
  log "building (cargo build --release -p bazaar -p baseline -p benchreport)"
  cargo build --release -q -p bazaar -p baseline -p benchreport
fi
BUILD_SECS=$(python3 -c "import time;print(round(time.time() - $BUILD_START, 1))")
BIN=$ROOT/target/release/bazaar
BASELINE_BIN=$ROOT/target/release/baseline
REPORT_BIN=$ROOT/target/release/bench-report

CORES=$(nproc)
PIN_SERVER=(); PIN_LOAD=(); PINNED=no; SERVER_CPUS=""; LOAD_CPUS=""
if [ "$PIN" != no ] && command -v taskset >/dev/null && [ "$CORES" -ge 2 ]; then
  half=$(( CORES / 2 ))
  SERVER_CPUS="0-$(( half - 1 ))"; LOAD_CPUS="$half-$(( CORES - 1 ))"
  PIN_SERVER=(taskset -c "$SERVER_CPUS"); PIN_LOAD=(taskset -c "$LOAD_CPUS"); PINNED=yes
elif [ "$PIN" = yes ]; then
  echo "--pin needs taskset and at least 2 cores" >&2; exit 2
fi

RUN_ID="$(date +%s)_$(python3 -c 'import secrets;print(secrets.token_hex(3))')"
NATS_PREFIX="bench_${RUN_ID}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bazaar-topology.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/runs" "$OUT"
RUNS=$WORK/runs.jsonl
TOPOS=$WORK/topologies.jsonl
: >"$RUNS"; : >"$TOPOS"

SERVER_PIDS=()   # the running topology's processes (earlier ones are stopped and reaped)
declare -A PROC_NAME=()  # pid -> process name in the RSS columns
DATABASES=()     # created, dropped at exit
USED_NATS=no

psql_admin() { psql "$ADMIN_DB_URL" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

# The admin URL with its database name replaced.
db_url() {
  python3 - "$ADMIN_DB_URL" "$1" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit((p.scheme, p.netloc, "/" + sys.argv[2], p.query, p.fragment)))
PY
}

# Deletes this run's JetStream streams (named "<PREFIX>_<SOURCE>") over the plain
# NATS protocol; prints how many.
delete_streams() {
  python3 - "$NATS_URL" "$NATS_PREFIX" <<'PY'
import json, socket, sys, urllib.parse as u
url, prefix = u.urlsplit(sys.argv[1]), sys.argv[2]
s = socket.create_connection((url.hostname or "127.0.0.1", url.port or 4222), timeout=5)
f = s.makefile("rb")
f.readline()  # INFO
connect = {"verbose": False, "pedantic": False, "headers": False}
if url.username:
    connect.update(user=u.unquote(url.username), **{"pass": u.unquote(url.password or "")})
s.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nSUB _INBOX.topology 1\r\n")
def call(subject, payload):
    data = json.dumps(payload).encode()
    s.sendall(b"PUB %s _INBOX.topology %d\r\n%s\r\n" % (subject.encode(), len(data), data))
    while True:
        line = f.readline()
        if not line:
            raise SystemExit("nats: connection closed")
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
        elif line.startswith(b"-ERR"):
            raise SystemExit("nats: " + line.decode().strip())
        elif line.startswith(b"MSG"):
            body = f.read(int(line.split()[-1]) + 2)[:-2]
            return json.loads(body)
names, offset = [], 0
while True:
    page = call("$JS.API.STREAM.NAMES", {"offset": offset})
    batch = page.get("streams") or []
    names += batch
    offset += len(batch)
    if not batch or offset >= page.get("total", 0):
        break
# Stream names are the prefix and source upper-cased: BENCH_<RUN>_ORDERS.
mine = [n for n in names if n.upper().startswith(prefix.upper() + "_")]
for name in mine:
    call("$JS.API.STREAM.DELETE." + name, {})
print(len(mine))
PY
}

stop_pids() { # pids...: SIGTERM, up to 10 s to drain, then SIGKILL
  local p i
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for i in $(seq 1 100); do
    local alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do
    kill -0 "$p" 2>/dev/null && { log "pid $p ignored SIGTERM for 10 s, killing"; kill -9 "$p" 2>/dev/null || true; }
    wait "$p" 2>/dev/null || true
  done
}

print_logs() {
  local f
  for f in "$WORK"/logs/*.log; do
    [ -s "$f" ] || continue
    echo "---- tail of $f" >&2
    tail -n 25 "$f" >&2
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ "$rc" -ne 0 ] && print_logs
  [ "${#SERVER_PIDS[@]}" -gt 0 ] && stop_pids "${SERVER_PIDS[@]}"
  local db
  for db in "${DATABASES[@]:-}"; do
    [ -n "$db" ] && { psql_admin "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 \
      || log "could not drop database $db"; }
  done
  if [ "$USED_NATS" = yes ]; then
    local n
    if n=$(delete_streams 2>&1); then
      log "deleted $n JetStream streams of prefix $NATS_PREFIX"
    else
      log "could not delete the JetStream streams of prefix $NATS_PREFIX: ${n##*$'\n'}"
    fi
  fi
  if [ "$rc" -ne 0 ] && [ -n "${KEEP_WORK:-}" ]; then
    log "work dir kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { log "FAILED: $*"; exit 1; }

free_port() { python3 scripts/free_ports.py; }
json() { python3 -c "import json,sys;d=json.load(sys.stdin);print($1)"; }

COMMON_ENV=(
  BAZAAR_LOG_FILTER=warn
  BAZAAR_RATE_LIMIT_PER_SECOND=0
  BAZAAR_AUTH_RATE_LIMIT_PER_SECOND=0
  BAZAAR_SEED_PRODUCTS=$SEED_PRODUCTS
  BAZAAR_ADMIN_EMAIL=bench-admin@example.com
  BAZAAR_ADMIN_PASSWORD=bench-password
)

# start_server NAME [VAR=value ...] -- command...   (pid appended to SERVER_PIDS)
start_server() {
  local name=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  # env and taskset exec, so $! is the server process itself.
  env "${COMMON_ENV[@]}" "${envs[@]}" "${PIN_SERVER[@]}" "$@" \
    >"$WORK/logs/$name.log" 2>&1 </dev/null &
  local pid=$!
  SERVER_PIDS+=("$pid")
  PROC_NAME[$pid]=$name
  LAST_PID=$pid
}

wait_ready() { # url pid name [seconds] [path]
  local deadline=$(( $(date +%s) + ${4:-60} ))
  until curl -fs -o /dev/null "$1${5:-/health/ready}"; do
    kill -0 "$2" 2>/dev/null || fail "$3 exited before it was ready"
    [ "$(date +%s)" -lt "$deadline" ] || fail "$3 not ready at $1 after ${4:-60} s"
    sleep 0.05
  done
}

# Is the NATS server this machine's own process? Then its CPU can be read.
NATS_PID=""
case "$NATS_URL" in
  *://127.0.0.1:*|*://localhost:*|*://127.0.0.1|*://localhost)
    NATS_PID=$(pgrep -x nats-server | head -n 1 || true) ;;
esac
PG_LOCAL=no
case "$ADMIN_DB_URL" in *@127.0.0.1[:/]*|*@localhost[:/]*) PG_LOCAL=yes ;; esac

# Raises the stock of every product of the running topology at $URL, so checkouts
# never fail for want of it (the mixes buy random products).
prepare_stock() {
  local admin ids id
  admin=$(curl -fsS -XPOST "$URL/api/v1/auth/login" -H 'content-type: application/json' \
    -d '{"email":"bench-admin@example.com","password":"bench-password"}' | json 'd["token"]') \
    || fail "admin login"
  ids=$(curl -fsS "$URL/api/v1/products?limit=100" | json '" ".join(p["id"] for p in d["items"])') \
    || fail "product list"
  for id in $ids; do
    curl -fsS -o /dev/null -XPUT "$URL/api/v1/products/$id/stock" -H "authorization: Bearer $admin" \
      -H 'content-type: application/json' -d '{"stock":1000000}' || fail "raising the stock of $id"
  done
}

# The --cpu-pid arguments for the running topology: every server process, the
# PostgreSQL processes serving the topology's database (its backends, and the WAL
# writer, checkpointer and background writer every commit leans on: shared with any
# other database's traffic) and, split only, nats-server (the whole process, shared).
cpu_args() { # database use_nats
  local p
  for p in "${SERVER_PIDS[@]}"; do printf -- '--cpu-pid\nserver=%s\n' "$p"; done
  if [ -n "$1" ] && [ "$PG_LOCAL" = yes ]; then
    for p in $(psql_admin "SELECT pid FROM pg_stat_activity WHERE datname = '$1'
        OR backend_type IN ('walwriter', 'checkpointer', 'background writer')"); do
      printf -- '--cpu-pid\npostgres=%s\n' "$p"
    done
  fi
  if [ "$2" = yes ] && [ -n "$NATS_PID" ]; then printf -- '--cpu-pid\nnats=%s\n' "$NATS_PID"; fi
}

# measure TOPOLOGY MIX MODE VALUE DATABASE USE_NATS: one loadgen run, one JSON line.
measure() {
  local topo=$1 mix=$2 mode=$3 value=$4 db=$5 use_nats=$6
  local tag="$topo-$mix-$mode-$value"
  local load=(--rate "$value"); [ "$mode" = closed ] && load=(--users "$value")
  local cpu=(); mapfile -t cpu < <(cpu_args "$db" "$use_nats")
  local p
  # Peak RSS per run: VmHWM is reset to the current RSS, read after the run.
  for p in "${SERVER_PIDS[@]}"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done
  log "$topo / $mix: ${mode} loop, $([ "$mode" = open ] && echo "$value/s" || echo "$value users")"
  "${PIN_LOAD[@]}" "$BIN" loadgen --target "$URL" --mix "$mix" "${load[@]}" \
    --duration "${DURATION}s" --warmup "${WARMUP}s" --users-pool "$USERS_POOL" \
    --timeout "$REQUEST_TIMEOUT" --max-in-flight "$MAX_IN_FLIGHT" --settle "$SETTLE" \
    --seed "$SEED" --no-progress --json "$WORK/runs/$tag.json" "${cpu[@]}" \
    >"$WORK/logs/loadgen-$tag.txt" 2>&1 || { cat "$WORK/logs/loadgen-$tag.txt" >&2; fail "loadgen ($tag)"; }
  local rss=()
  for p in "${SERVER_PIDS[@]}"; do
    [ "$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$p/stat" 2>/dev/null)" = Z ] && fail "${PROC_NAME[$p]} exited during the run"
    rss+=("${PROC_NAME[$p]}=$(awk '/^VmHWM/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)")
  done
  python3 - "$WORK/runs/$tag.json" "$topo" "$mix" "$mode" "$value" "${rss[@]}" >>"$RUNS" <<'PY'
import json, sys
path, topo, mix, mode, value, *rss = sys.argv[1:]
report = json.load(open(path))
print(json.dumps({
    "topology": topo, "mix": mix, "mode": mode,
    "rate": float(value) if mode == "open" else None,
    "users": int(value) if mode == "closed" else None,
    "peak_rss_kb": {k: int(v or 0) for k, v in (r.split("=", 1) for r in rss)},
    "report": report,
}))
PY
  python3 - "$WORK/runs/$tag.json" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1]))
t = r["total"]; s = t["status"]; cpu = (r.get("cpu") or {}).get("groups", {})
srv = cpu.get("server", {}); lg = cpu.get("loadgen", {})
o = r.get("orders")
print("    %9.0f req/s  p50 %7.2f ms  p99 %8.2f ms  errors %d  dropped %d  server %.1f µs/req (%.2f cores)  loadgen %.2f cores%s" % (
    t["rate"], t["latency_us"]["p50"] / 1e3, t["latency_us"]["p99"] / 1e3,
    s["4xx"] + s["5xx"] + s["transport"], r["dropped"], srv.get("per_request_us", 0),
    srv.get("cores", 0), lg.get("cores", 0),
    "  orders: %d confirmed (%.0f/s), %d failed, %d pending" % (o["confirmed"], o["confirmed_per_sec"], o["failed"], o["pending"]) if o else ""))
PY
}

run_mixes() { # topology database use_nats [mixes...]
  local topo=$1 db=$2 use_nats=$3; shift 3
  local mix r
  for mix in "$@"; do
    for r in ${RATES[$mix]}; do measure "$topo" "$mix" open "$r" "$db" "$use_nats"; done
    measure "$topo" "$mix" closed "${USERS[$mix]}" "$db" "$use_nats"
  done
}

# audit_poll VAR=value... -- audit-args...: runs `bazaar audit --json` until it is
# clean, for up to 20 s; sets AUDIT (a short verdict) and AUDIT_ORDERS.
audit_once() {
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  env "${envs[@]}" BAZAAR_LOG_FILTER=error "$BIN" "$@" audit --json 2>>"$WORK/logs/audit.log" || true
}
audit_verdict() { # report on stdin -> "clean" or "NOT clean: ..." ; orders count on stderr
  python3 -c '
import json, sys
text = sys.stdin.read()
start = text.find("{\n")
try:
    d = json.loads(text[start:] if start >= 0 else text)
except Exception:
    print("no report (see the audit log)"); print("-", file=sys.stderr); sys.exit()
print("clean" if d["ok"] else "NOT clean: " + "; ".join(
    c["name"] + ": " + (c["violations"][0] if c["violations"] else "?") +
    (" (+%d more)" % (len(c["violations"]) - 1) if len(c["violations"]) > 1 else "")
    for c in d["checks"] if not c["ok"]))
print(d["orders"], file=sys.stderr)
'
}
audit_poll() {
  local i report
  for i in $(seq 1 20); do
    report=$(audit_once "$@")
    AUDIT=$(audit_verdict <<<"$report" 2>"$WORK/audit-orders")
    AUDIT_ORDERS=$(cat "$WORK/audit-orders")
    [ "$AUDIT" = clean ] && return 0
    sleep 1
  done
  log "audit after 20 s: $AUDIT"
}

# finish_topology ID LABEL STORAGE [audit env -- audit args]: audits (bazaar only)
# while running and after SIGTERM, stops the processes, records the topology.
finish_topology() {
  local id=$1 label=$2 storage=$3; shift 3
  local verdict="-" running
  if [ $# -gt 0 ]; then
    audit_poll "$@"
    running="$AUDIT, $AUDIT_ORDERS orders"
  fi
  local procs=${#SERVER_PIDS[@]}
  log "$label: stopping"
  stop_pids "${SERVER_PIDS[@]}"
  SERVER_PIDS=()
  if [ $# -gt 0 ]; then
    audit_poll "$@"
    verdict=$running
    [ "$AUDIT, $AUDIT_ORDERS orders" != "$running" ] && verdict="$verdict; after stop: $AUDIT, $AUDIT_ORDERS orders"
  fi
  python3 -c 'import json,sys; print(json.dumps(dict(id=sys.argv[1], label=sys.argv[2], storage=sys.argv[3], processes=int(sys.argv[4]), audit=sys.argv[5])))' \
    "$id" "$label" "$storage" "$procs" "$verdict" >>"$TOPOS"
}

new_database() { # suffix -> NEW_DB (not in a subshell: DATABASES must remember it)
  NEW_DB="bench_${RUN_ID}_$1"
  DATABASES+=("$NEW_DB")
  psql_admin "CREATE DATABASE $NEW_DB" >/dev/null || fail "CREATE DATABASE $NEW_DB (at $ADMIN_DB_URL)"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# 1. The bare baseline: product views only.
if wants baseline; then
  log "baseline: starting"
  PORT=$(free_port); URL="http://127.0.0.1:$PORT"
  start_server baseline -- "$BASELINE_BIN" "127.0.0.1:$PORT"
  wait_ready "$URL" "$LAST_PID" baseline 30 /api/v1/products
  run_mixes baseline "" no product
  finish_topology baseline "bare axum baseline" none
fi

# 2. monolith (SQLite)
if wants monolith; then
  log "monolith (SQLite): starting"
  PORT=$(free_port); URL="http://127.0.0.1:$PORT"
  start_server bazaar BAZAAR_DATA_DIR="$WORK/mono-sqlite" BAZAAR_HTTP_ADDR="127.0.0.1:$PORT" -- "$BIN" serve
  wait_ready "$URL" "$LAST_PID" "monolith (SQLite)"
  prepare_stock
  run_mixes monolith "" no "${MIXES[@]}"
  finish_topology monolith "monolith (SQLite)" SQLite -- --data-dir "$WORK/mono-sqlite"
fi

# 3. monolith (PostgreSQL)
if wants monolith-pg; then
  new_database mono; DB_MONO=$NEW_DB; DB_MONO_URL=$(db_url "$DB_MONO")
  log "monolith (PostgreSQL): starting (database $DB_MONO)"
  PORT=$(free_port); URL="http://127.0.0.1:$PORT"
  start_server bazaar BAZAAR_DATA_DIR="$WORK/mono-pg" BAZAAR_HTTP_ADDR="127.0.0.1:$PORT" \
    BAZAAR_DATABASE_URL="$DB_MONO_URL" -- "$BIN" serve
  wait_ready "$URL" "$LAST_PID" "monolith (PostgreSQL)"
  prepare_stock
  run_mixes monolith-pg "$DB_MONO" no "${MIXES[@]}"
  finish_topology monolith-pg "monolith (PostgreSQL)" PostgreSQL \
    BAZAAR_DATABASE_URL="$DB_MONO_URL" -- --data-dir "$WORK/mono-pg"
fi

# 4. split (PostgreSQL + NATS): eight modules (the storefront for the web mix), then the gateway.
if wants split; then
  new_database split; DB_SPLIT=$NEW_DB; DB_SPLIT_URL=$(db_url "$DB_SPLIT")
  log "split: starting 8 processes (database $DB_SPLIT, NATS prefix $NATS_PREFIX)"
  MODULES=(identity catalog cart payments orders notifications analytics storefront)
  SECRET_JWT=$(python3 -c 'import secrets;print(secrets.token_urlsafe(36))')
  SECRET_SERVICE=$(python3 -c 'import secrets;print(secrets.token_urlsafe(36))')
  declare -A MODULE_PORT MODULE_PID
  SPLIT_ENV=(
    BAZAAR_DATABASE_URL="$DB_SPLIT_URL"
    BAZAAR_NATS_URL="$NATS_URL"
    BAZAAR_NATS_PREFIX="$NATS_PREFIX"
    BAZAAR_JWT_SECRET="$SECRET_JWT"
    BAZAAR_SERVICE_SECRET="$SECRET_SERVICE"
  )
  for m in "${MODULES[@]}"; do
    MODULE_PORT[$m]=$(free_port)
    SPLIT_ENV+=("BAZAAR_PEER_${m^^}=http://127.0.0.1:${MODULE_PORT[$m]}")
  done
  USED_NATS=yes
  for m in "${MODULES[@]}"; do
    start_server "$m" "${SPLIT_ENV[@]}" BAZAAR_HTTP_ADDR="127.0.0.1:${MODULE_PORT[$m]}" \
      BAZAAR_DATA_DIR="$WORK/split/$m" -- "$BIN" serve --only "$m"
    MODULE_PID[$m]=$LAST_PID
  done
  for m in "${MODULES[@]}"; do
    wait_ready "http://127.0.0.1:${MODULE_PORT[$m]}" "${MODULE_PID[$m]}" "split: $m"
  done
  PORT=$(free_port); URL="http://127.0.0.1:$PORT"
  start_server gateway "${SPLIT_ENV[@]}" BAZAAR_HTTP_ADDR="127.0.0.1:$PORT" \
    BAZAAR_DATA_DIR="$WORK/split/gateway" -- "$BIN" serve --only gateway
  wait_ready "$URL" "$LAST_PID" "split: gateway"
  prepare_stock
  run_mixes split "$DB_SPLIT" yes "${MIXES[@]}"
  finish_topology split "split (PostgreSQL + NATS)" "PostgreSQL + NATS" \
    BAZAAR_DATABASE_URL="$DB_SPLIT_URL" -- --data-dir "$WORK/split/audit"
fi

# The results file, then the chart and the docs from it.
RATES_JSON=$(for m in "${MIXES[@]}"; do echo "$m ${RATES[$m]}"; done)
USERS_JSON=$(for m in "${MIXES[@]}"; do echo "$m ${USERS[$m]}"; done)
EXTRA_ENV=$(env | grep '^BAZAAR_' | cut -d= -f1 | paste -sd' ' - || true)
python3 - "$RUNS" "$TOPOS" "$OUT/topology.json" <<PY
import json, platform, subprocess, sys, time
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
topologies = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
def first(path, key):
    try:
        for line in open(path):
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
def cmd(*args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return "unknown"
mem_kb = first("/proc/meminfo", "MemTotal").split()[0]
doc = {
    "schema": 1,
    "command": "$COMMAND",
    "started_at": "$STARTED_AT",
    "build_secs": $BUILD_SECS,
    "wall_secs": round(time.time() - $SCRIPT_START, 1),
    "commit": cmd("git", "describe", "--always", "--dirty"),
    "machine": {
        "cores": $CORES,
        "model": first("/proc/cpuinfo", "model name"),
        "kernel": platform.release(),
        "memory_gib": round(int(mem_kb) / 1048576, 1) if mem_kb.isdigit() else None,
        "load_avg_start": "$LOAD_START",
        "load_avg_end": " ".join(open("/proc/loadavg").read().split()[:3]),
        "rustc": cmd("rustc", "--version"),
    },
    "settings": {
        "duration_secs": $DURATION,
        "warmup_secs": $WARMUP,
        "quick": "$QUICK" == "yes",
        "pinned": "$PINNED" == "yes",
        "server_cpus": "$SERVER_CPUS" or None,
        "loadgen_cpus": "$LOAD_CPUS" or None,
        "rates": {l.split()[0]: [float(x) for x in l.split()[1:]] for l in """$RATES_JSON""".splitlines()},
        "users": {l.split()[0]: int(l.split()[1]) for l in """$USERS_JSON""".splitlines()},
        "users_pool": $USERS_POOL,
        "request_timeout": "$REQUEST_TIMEOUT",
        "max_in_flight": $MAX_IN_FLIGHT,
        "seed_products": $SEED_PRODUCTS,
        "postgres_cpu": "$PG_LOCAL" == "yes",
        "nats_cpu": bool("$NATS_PID"),
        "extra_env": "$EXTRA_ENV".split(),
    },
    "topologies": topologies,
    "runs": runs,
}
json.dump(doc, open(sys.argv[3], "w"), indent=1)
open(sys.argv[3], "a").write("\n")
PY
log "wrote $OUT/topology.json"
# The chart needs a TrueType font; bench-report finds DejaVu or Liberation Sans where
# distributions keep them, BENCH_FONT names another.
FONT=(); [ -n "${BENCH_FONT:-}" ] && FONT=(--font "$BENCH_FONT")
if [ "$DOCS" = yes ]; then
  "$REPORT_BIN" --input "$OUT/topology.json" --png "$ROOT/docs/topology-latency.png" \
    --docs "$ROOT/docs/benchmarks.md" "${FONT[@]}" || fail "bench-report (the results are in $OUT/topology.json)"
  log "wrote docs/topology-latency.png and docs/benchmarks.md"
else
  "$REPORT_BIN" --input "$OUT/topology.json" --png "$OUT/topology-latency.png" "${FONT[@]}" \
    || fail "bench-report (the results are in $OUT/topology.json)"
fi
log "done in $(python3 -c "import time;print(round(time.time() - $SCRIPT_START))") s (build $BUILD_SECS s)"
