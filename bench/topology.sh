#!/usr/bin/env bash
# What the split costs, measured side by side in one run on one machine: the same two
# workloads (product reads, checkouts) against three configurations, each started
# fresh:
#
#   monolith (SQLite)          bazaar serve                      (the default)
#   monolith (PostgreSQL)      bazaar serve + BAZAAR_DATABASE_URL (storage engine alone)
#   split (PostgreSQL + NATS)  8 x bazaar serve --only <module>, load on the gateway
#
# For each run: successful requests/s, p50/p99, non-2xx, and CPU-ms per successful
# request summed over every bazaar process of the configuration (/proc/<pid>/stat
# utime+stime before and after the wrk run); then the split/monolith ratios. After
# the checkouts, `bazaar audit` against the configuration's stores. Prints Markdown.
#
#   bench/topology.sh [seconds] [connections]        (defaults 10 and 16)
#
# Needs wrk (apt-get install wrk), psql, python3, curl; PostgreSQL at
# BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres: an admin
# URL, used to create one fresh database per PostgreSQL configuration, dropped at the
# end) and NATS JetStream at BENCH_NATS_URL (default nats://127.0.0.1:4222; streams
# go under a prefix unique to the run and are deleted at the end).
#
# Pinning: with taskset and at least 2 cores, every bazaar process gets core 0 and wrk
# core 1, so the load generator does not steal the servers' CPU. PostgreSQL and NATS
# are system services and are not pinned; their CPU is reported in its own column.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${1:-10}
CONNS=${2:-16}
ADMIN_DB_URL=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
NATS_URL=${BENCH_NATS_URL:-nats://127.0.0.1:4222}
for tool in wrk psql python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 2; }
done
[[ "$DURATION" =~ ^[0-9]+$ && "$CONNS" =~ ^[0-9]+$ ]] \
  || { echo "usage: bench/topology.sh [seconds] [connections]" >&2; exit 2; }

log() { echo "[topology] $*" >&2; }

# What decides the topology comes from this script alone; tuning keys (e.g.
# BAZAAR_DB_MAX_CONNECTIONS) are passed through and named in the report.
for var in $(compgen -e | grep -E '^BAZAAR_(DATABASE_URL|NATS_URL|NATS_PREFIX|ONLY|PEER_|HTTP_ADDR|DATA_DIR|JWT_SECRET|SERVICE_SECRET|CONFIG)' || true); do
  unset "$var"
done

log "building (cargo build --release -p bazaar)"
cargo build --release -q -p bazaar
BIN=$ROOT/target/release/bazaar

PIN_SERVER=(); PIN_LOAD=(); PINNED=no
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0); PIN_LOAD=(taskset -c 1); PINNED=yes
fi
CLK_TCK=$(getconf CLK_TCK)

RUN_ID="$(date +%s)_$(python3 -c 'import secrets;print(secrets.token_hex(3))')"
NATS_PREFIX="bench_${RUN_ID}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bazaar-topology.XXXXXX")
mkdir -p "$WORK/logs"
RESULTS=$WORK/results.tsv
: >"$RESULTS"

SERVER_PIDS=()   # the running configuration's processes (earlier ones are stopped and reaped)
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

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
json() { python3 -c "import json,sys;d=json.load(sys.stdin);print($1)"; }

COMMON_ENV=(
  BAZAAR_LOG_FILTER=warn
  BAZAAR_RATE_LIMIT_PER_SECOND=0
  BAZAAR_SEED_PRODUCTS=100
  BAZAAR_ADMIN_EMAIL=bench-admin@example.com
  BAZAAR_ADMIN_PASSWORD=bench-password
)

# start_server NAME [VAR=value ...] -- bazaar-args...   (pid appended to SERVER_PIDS)
start_server() {
  local name=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  # env and taskset exec, so $! is the bazaar process itself.
  env "${COMMON_ENV[@]}" "${envs[@]}" "${PIN_SERVER[@]}" "$BIN" "$@" \
    >"$WORK/logs/$name.log" 2>&1 </dev/null &
  local pid=$!
  SERVER_PIDS+=("$pid")
  LAST_PID=$pid
}

wait_ready() { # url pid name [seconds]
  local deadline=$(( $(date +%s) + ${4:-60} ))
  until curl -fs -o /dev/null "$1/health/ready"; do
    kill -0 "$2" 2>/dev/null || fail "$3 exited before it was ready"
    [ "$(date +%s)" -lt "$deadline" ] || {
      curl -s "$1/health/ready" >&2 || true; echo >&2
      fail "$3 not ready at $1 after ${4:-60} s"
    }
    sleep 0.05
  done
}

cpu_ticks() { # pids... -> utime+stime summed, in clock ticks
  local t=0 p state u s
  for p in "$@"; do
    # Field 3 (state), 14 and 15; the text after "pid (comm) " starts at field 3.
    read -r state u s < <(awk '{ sub(/^.*\) /, ""); print $1, $12, $13 }' "/proc/$p/stat") \
      || fail "process $p is gone"
    [ "$state" != Z ] || fail "process $p exited during the run"
    t=$(( t + u + s ))
  done
  echo "$t"
}

# CPU of what the bazaar processes lean on: the PostgreSQL backends connected to this
# configuration's database, and (split only) the local nats-server. One "key ticks"
# line each; backends that come and go within a run are missed.
infra_snapshot() { # database-name-or-empty use-nats
  local p
  if [ -n "$1" ]; then
    for p in $(psql_admin "SELECT pid FROM pg_stat_activity WHERE datname = '$1'"); do
      [ -r "/proc/$p/stat" ] && echo "pg$p $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)"
    done
  fi
  if [ "$2" = yes ] && [ -n "$NATS_PID" ] && [ -r "/proc/$NATS_PID/stat" ]; then
    echo "nats $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$NATS_PID/stat")"
  fi
  return 0
}
infra_delta() { # before-file after-file -> ticks
  awk 'NR == FNR { before[$1] = $2; next } { d += $2 - ($1 in before ? before[$1] : 0) } END { print d + 0 }' "$1" "$2"
}

# Is the NATS server this machine's own process? Then its CPU can be read.
NATS_PID=""
case "$NATS_URL" in
  *://127.0.0.1:*|*://localhost:*|*://127.0.0.1|*://localhost)
    NATS_PID=$(pgrep -x nats-server | head -n 1 || true) ;;
esac
PG_LOCAL=no
case "$ADMIN_DB_URL" in *@127.0.0.1[:/]*|*@localhost[:/]*) PG_LOCAL=yes ;; esac

# Prepares the running configuration at $URL: admin and buyer tokens, product ids,
# stock of the first 20 products raised to 1,000,000.
prepare() {
  ADMIN=$(curl -fsS -XPOST "$URL/api/v1/auth/login" -H 'content-type: application/json' \
    -d '{"email":"bench-admin@example.com","password":"bench-password"}' | json 'd["token"]') \
    || fail "admin login"
  TOKEN=$(curl -fsS -XPOST "$URL/api/v1/auth/register" -H 'content-type: application/json' \
    -d '{"email":"buyer@example.com","password":"bench-password","name":"Buyer"}' | json 'd["token"]') \
    || fail "buyer registration"
  ALL_IDS=$(curl -fsS "$URL/api/v1/products?limit=100" | json '",".join(p["id"] for p in d["items"])') \
    || fail "product list"
  local n; n=$(tr ',' '\n' <<<"$ALL_IDS" | grep -c .)
  [ "$n" -eq 100 ] || log "warning: $n products listed, expected the 100 seeded"
  CHECKOUT_IDS=$(tr ',' '\n' <<<"$ALL_IDS" | head -n 20 | paste -sd, -)
  local id
  for id in ${CHECKOUT_IDS//,/ }; do
    curl -fsS -o /dev/null -XPUT "$URL/api/v1/products/$id/stock" -H "authorization: Bearer $ADMIN" \
      -H 'content-type: application/json' -d '{"stock":1000000}' || fail "raising the stock of $id"
  done
}

# measure CONFIG WORKLOAD SCRIPT DATABASE USE_NATS: one wrk run, one results line.
measure() {
  local config=$1 workload=$2 script=$3 db=$4 use_nats=$5
  local tag; tag=$(tr -c 'a-zA-Z0-9\n' '-' <<<"$config-$workload")
  local out=$WORK/logs/wrk-$tag.txt
  local products=$ALL_IDS
  [ "$workload" = checkouts ] && products=$CHECKOUT_IDS
  log "$config / $workload: wrk ${DURATION}s, $CONNS connections"
  infra_snapshot "$db" "$use_nats" >"$WORK/infra-before"
  local t0; t0=$(cpu_ticks "${SERVER_PIDS[@]}")
  TOKEN=$TOKEN PRODUCTS=$products "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" \
    --timeout 10s --latency -s "$script" "$URL" >"$out" 2>&1 || { cat "$out" >&2; fail "wrk"; }
  local t1; t1=$(cpu_ticks "${SERVER_PIDS[@]}")
  infra_snapshot "$db" "$use_nats" >"$WORK/infra-after"
  local infra="-"
  if [ -n "$db" ] && [ "$PG_LOCAL" = yes ] || { [ "$use_nats" = yes ] && [ -n "$NATS_PID" ]; }; then
    infra=$(infra_delta "$WORK/infra-before" "$WORK/infra-after")
  fi
  local total non2xx p50 p99 sockerr
  total=$(awk '/requests in/ {print $1}' "$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' "$out"); non2xx=${non2xx:-0}
  p50=$(awk '/^ +50%/ {print $2}' "$out"); p99=$(awk '/^ +99%/ {print $2}' "$out")
  sockerr=$(awk '/Socket errors/ {gsub(",", ""); print "connect " $4 " read " $6 " write " $8 " timeout " $10}' "$out")
  [ -n "$total" ] && [ -n "$p50" ] || { cat "$out" >&2; fail "could not read wrk's output"; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$config" "$workload" "$total" "$non2xx" \
    "${sockerr:--}" "$p50" "$p99" "$((t1 - t0))" "$infra" "AUDIT" >>"$RESULTS"
  if [ "$non2xx" -gt 0 ] || [ -n "$sockerr" ]; then
    log "$config / $workload: $non2xx non-2xx responses${sockerr:+, socket errors: $sockerr}"
  fi
}

# audit_poll VAR=value... -- audit-args...: runs `bazaar audit --json` until it is
# clean, for up to 20 s; sets AUDIT (a short verdict) and AUDIT_ORDERS.
audit_once() {
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  env "${envs[@]}" BAZAAR_LOG_FILTER=error "$BIN" "$@" audit --json 2>>"$WORK/logs/audit.log" || true
}
audit_verdict() { # report on stdin -> "clean" or "NOT clean: ..." ; orders count on fd 3
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
  echo "$report" >"$WORK/logs/audit-last.json"
}

# After the checkouts: audit while running (the split's events must be consumed),
# stop, audit again; the verdict goes into the checkouts row.
finish_config() { # config, then audit env/args as for audit_once
  local config=$1; shift
  audit_poll "$@"
  local running=$AUDIT running_orders=$AUDIT_ORDERS
  cpu_ticks "${SERVER_PIDS[@]}" >/dev/null  # fails if one of them has exited
  log "$config: stopping"
  stop_pids "${SERVER_PIDS[@]}"
  SERVER_PIDS=()
  audit_poll "$@"
  local verdict="$running, $running_orders orders"
  if [ "$AUDIT" != "$running" ]; then
    verdict="$verdict; after stop: $AUDIT"
  fi
  python3 - "$RESULTS" "$config" "$verdict" <<'PY'
import sys
path, config, verdict = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(path)]
for r in rows:
    if r[0] == config:
        r[9] = verdict if r[1] == "checkouts" else "-"
open(path, "w").write("".join("\t".join(r) + "\n" for r in rows))
PY
}

run_workloads() { # config database use_nats
  prepare
  measure "$1" "product reads" "$ROOT/bench/reads.lua" "$2" "$3"
  measure "$1" checkouts "$ROOT/bench/checkout.lua" "$2" "$3"
}

new_database() { # suffix -> NEW_DB (not in a subshell: DATABASES must remember it)
  NEW_DB="bench_${RUN_ID}_$1"
  DATABASES+=("$NEW_DB")
  psql_admin "CREATE DATABASE $NEW_DB" >/dev/null || fail "CREATE DATABASE $NEW_DB (at $ADMIN_DB_URL)"
}

# 1. monolith (SQLite)
CONFIG="monolith (SQLite)"
log "$CONFIG: starting"
PORT=$(free_port); URL="http://127.0.0.1:$PORT"
start_server mono-sqlite BAZAAR_DATA_DIR="$WORK/mono-sqlite" BAZAAR_HTTP_ADDR="127.0.0.1:$PORT" -- serve
wait_ready "$URL" "$LAST_PID" "$CONFIG"
run_workloads "$CONFIG" "" no
finish_config "$CONFIG" -- --data-dir "$WORK/mono-sqlite"

# 2. monolith (PostgreSQL)
CONFIG="monolith (PostgreSQL)"
new_database mono; DB_MONO=$NEW_DB; DB_MONO_URL=$(db_url "$DB_MONO")
log "$CONFIG: starting (database $DB_MONO)"
PORT=$(free_port); URL="http://127.0.0.1:$PORT"
start_server mono-pg BAZAAR_DATA_DIR="$WORK/mono-pg" BAZAAR_HTTP_ADDR="127.0.0.1:$PORT" \
  BAZAAR_DATABASE_URL="$DB_MONO_URL" -- serve
wait_ready "$URL" "$LAST_PID" "$CONFIG"
run_workloads "$CONFIG" "$DB_MONO" no
finish_config "$CONFIG" BAZAAR_DATABASE_URL="$DB_MONO_URL" -- --data-dir "$WORK/mono-pg"

# 3. split (PostgreSQL + NATS): seven modules, then the gateway.
CONFIG="split (PostgreSQL + NATS)"
new_database split; DB_SPLIT=$NEW_DB; DB_SPLIT_URL=$(db_url "$DB_SPLIT")
log "$CONFIG: starting 8 processes (database $DB_SPLIT, NATS prefix $NATS_PREFIX)"
MODULES=(identity catalog cart payments orders notifications analytics)
SECRET_JWT=$(python3 -c 'import secrets;print(secrets.token_urlsafe(36))')
SECRET_SERVICE=$(python3 -c 'import secrets;print(secrets.token_urlsafe(36))')
declare -A MODULE_PORT
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
declare -A MODULE_PID
for m in "${MODULES[@]}"; do
  start_server "split-$m" "${SPLIT_ENV[@]}" BAZAAR_HTTP_ADDR="127.0.0.1:${MODULE_PORT[$m]}" \
    BAZAAR_DATA_DIR="$WORK/split/$m" -- serve --only "$m"
  MODULE_PID[$m]=$LAST_PID
done
for m in "${MODULES[@]}"; do
  wait_ready "http://127.0.0.1:${MODULE_PORT[$m]}" "${MODULE_PID[$m]}" "split: $m"
done
PORT=$(free_port); URL="http://127.0.0.1:$PORT"
start_server split-gateway "${SPLIT_ENV[@]}" BAZAAR_HTTP_ADDR="127.0.0.1:$PORT" \
  BAZAAR_DATA_DIR="$WORK/split/gateway" -- serve --only gateway
wait_ready "$URL" "$LAST_PID" "split: gateway"
run_workloads "$CONFIG" "$DB_SPLIT" yes
finish_config "$CONFIG" BAZAAR_DATABASE_URL="$DB_SPLIT_URL" -- --data-dir "$WORK/split/audit"

# Report.
INFRA_NOTE="PostgreSQL backends of the configuration's database"
[ -n "$NATS_PID" ] && INFRA_NOTE="$INFRA_NOTE, plus the whole nats-server process for the split (shared: other users' traffic counts too)"
[ "$PG_LOCAL" = yes ] || INFRA_NOTE="not measured (PostgreSQL is not on this machine)"
COMMIT=$(git describe --always --dirty 2>/dev/null || echo unknown)
EXTRA_ENV=$(env | grep '^BAZAAR_' | cut -d= -f1 | paste -sd' ' - || true)
python3 - "$RESULTS" "$DURATION" "$CLK_TCK" <<'PY'
import sys
path, duration, tck = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = [l.rstrip("\n").split("\t") for l in open(path)]

def ms(s):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("m", 60e3), ("s", 1e3)):
        if s.endswith(unit):
            return float(s[: -len(unit)]) * f
    return float(s)

def fmt_ms(v):
    return f"{v * 1000:.0f} µs" if v < 1 else (f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms")

res = {}
print("| configuration | workload | successful req/s | p50 / p99 | non-2xx | socket errors | bazaar CPU-ms / req | PG + NATS CPU-ms / req | audit |")
print("|---|---|---|---|---|---|---|---|---|")
for config, workload, total, non2xx, sockerr, p50, p99, ticks, infra, audit in rows:
    ok = int(total) - int(non2xx)
    cpu = int(ticks) / tck * 1000 / ok if ok else float("nan")
    inf = "-" if infra == "-" else (f"{int(infra) / tck * 1000 / ok:.3f}" if ok else "nan")
    res[(config, workload)] = (ms(p50), cpu)
    print(f"| {config} | {workload} | {ok / duration:,.0f} | {fmt_ms(ms(p50))} / {fmt_ms(ms(p99))} "
          f"| {non2xx} | {sockerr} | {cpu:.3f} | {inf} | {audit} |")
print()
S, M, P = "split (PostgreSQL + NATS)", "monolith (SQLite)", "monolith (PostgreSQL)"
print("| workload | p50: split / monolith (SQLite) | p50: split / monolith (PostgreSQL) "
      "| CPU per request: split / monolith (SQLite) | CPU per request: split / monolith (PostgreSQL) |")
print("|---|---|---|---|---|")
for w in ("product reads", "checkouts"):
    s, m, p = res[(S, w)], res[(M, w)], res[(P, w)]
    r = lambda a, b: f"{a / b:.2f}×" if b else "n/a"
    print(f"| {w} | {r(s[0], m[0])} | {r(s[0], p[0])} | {r(s[1], m[1])} | {r(s[1], p[1])} |")
PY
cat <<MD

Each configuration started fresh (100 seeded products), measured with wrk (1 thread, $CONNS connections,
closed loop, ${DURATION} s, --timeout 10s): product reads = \`GET /api/v1/products/{id}\` round-robin over the 100 ids
(\`bench/reads.lua\`); checkouts = \`bench/checkout.lua\` (one user, one-line \`tok_visa\` orders over 20 products
with stock 1,000,000; 201 only once the saga has confirmed). Successful req/s = (requests − non-2xx) / ${DURATION} s.
CPU per request = utime + stime of every bazaar process of the configuration (1, 1 and 8 processes) over the wrk
run, divided by the successful requests; the PG + NATS column is the CPU of ${INFRA_NOTE}, over the same window.
Audit: \`bazaar audit\` polled until clean (≤ 20 s) while running, then again after SIGTERM.
Server processes pinned to core 0 and wrk to core 1: ${PINNED}$([ "$PINNED" = yes ] && echo " (PostgreSQL and NATS are not pinned)").
Command: \`bench/topology.sh $DURATION $CONNS\`, $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), commit ${COMMIT}$([ -n "$EXTRA_ENV" ] && echo ", with $EXTRA_ENV set in the environment").
MD
