#!/usr/bin/env bash
# One fault scenario on the monolith (SQLite): payments hangs for a while, then
# recovers. Three phases of equal length, each with two wrk instances at once on their
# own routes (product reads and checkouts), so the run shows what the fault costs the
# route that depends on payments and what it must not cost the one that does not:
#
#   before   healthy
#   during   fault `payments.charge` = {"hang": true}   (PUT /api/v1/admin/faults/payments.charge)
#   after    fault removed                               (DELETE, same path)
#
# Per route and phase: requests/s, p50/p99, the share of non-2xx; for checkouts also
# the answers by class (201 confirmed, 201 failed, 202 pending, 4xx, 5xx, counted by
# bench/checkout_status.lua). At the end of each phase: the payments breaker from
# GET /api/v1/admin/resilience and the phase's payments calls by outcome (/metrics).
# After the last phase: `bazaar audit --json --stuck-after-secs 0` polled (≤ 30 s)
# until clean, i.e. until no order is still pending and every invariant holds, and
# the orders by final status. Prints Markdown.
#
#   bench/faults.sh [phase-seconds] [connections]        (defaults 10 and 8; needs wrk,
#                                                         curl, python3)
#
# The server runs with fault_admin on, no rate limit, log filter warn, a short
# payments policy so the breaker acts within a phase
# ({payments = {timeout_ms = 500, breaker_failures = 5, breaker_cool_down_ms = 2000}})
# and checkout_wait_ms = 1000. Each wrk instance gets `connections` connections.
# Pinning: with taskset and at least 2 cores, bazaar gets core 0 and both wrk core 1.
# KEEP_WORK=1 keeps the work dir (logs, wrk outputs) when the run fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PHASE=${1:-10}
CONNS=${2:-8}
for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 2; }
done
[[ "$PHASE" =~ ^[1-9][0-9]*$ && "$CONNS" =~ ^[1-9][0-9]*$ ]] \
  || { echo "usage: bench/faults.sh [phase-seconds] [connections]" >&2; exit 2; }

log() { echo "[faults] ${SECONDS}s: $*" >&2; }

# What decides the topology and the scenario comes from this script alone.
for var in $(compgen -e | grep -E '^BAZAAR_(DATABASE_URL|NATS_URL|NATS_PREFIX|ONLY|PEER_|HTTP_ADDR|DATA_DIR|CONFIG|FAULTS|FAULT_ADMIN|DEPENDENCIES|CHECKOUT_WAIT_MS|RATE_LIMIT_PER_SECOND|AUTH_RATE_LIMIT_PER_SECOND|LOG_FILTER|MAX_IN_FLIGHT_REQUESTS|PAYMENT_)' || true); do
  unset "$var"
done


PIN_SERVER=(); PIN_LOAD=(); PINNED=no
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0); PIN_LOAD=(taskset -c 1); PINNED=yes
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bazaar-faults.XXXXXX")
mkdir -p "$WORK/logs"
RESULTS=$WORK/results.tsv
BREAKERS=$WORK/breakers.tsv
: >"$RESULTS"; : >"$BREAKERS"
SERVER_PID=""
BUILD_PID=""
WRK_PIDS=()

stop_server() { # SIGTERM, up to 10 s to drain, then SIGKILL
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    log "bazaar (pid $SERVER_PID) ignored SIGTERM for 10 s, killing"
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "$BUILD_PID" "${WRK_PIDS[@]:-}"; do
    [ -n "$p" ] && { kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; }
  done
  stop_server
  if [ "$rc" -ne 0 ] && [ -s "$WORK/logs/server.log" ]; then
    echo "---- tail of the server log" >&2
    tail -n 25 "$WORK/logs/server.log" >&2
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
json() { python3 -c "import json,sys;d=json.load(sys.stdin);print($1)"; }

log "building (cargo build --release -p bazaar)"
# In the background, so that a signal stops the script (and the build) at once.
cargo build --release -q -p bazaar &
BUILD_PID=$!
wait "$BUILD_PID" || fail "cargo build"
BUILD_PID=""
BIN=$ROOT/target/release/bazaar

PORT=$(python3 scripts/free_ports.py)
URL="http://127.0.0.1:$PORT"
# /metrics answers only its scrape credential.
METRICS_TOKEN=bench-faults-metrics-token-0000000000
DATA=$WORK/data
DEPENDENCIES='{payments = {timeout_ms = 500, breaker_failures = 5, breaker_cool_down_ms = 2000}}'
SERVER_ENV=(
  BAZAAR_DATA_DIR="$DATA"
  BAZAAR_HTTP_ADDR="127.0.0.1:$PORT"
  BAZAAR_LOG_FILTER=warn
  BAZAAR_RATE_LIMIT_PER_SECOND=0
  BAZAAR_AUTH_RATE_LIMIT_PER_SECOND=0
  BAZAAR_SEED_PRODUCTS=100
  BAZAAR_ADMIN_EMAIL=bench-admin@example.com
  BAZAAR_ADMIN_PASSWORD=bench-password
  BAZAAR_FAULT_ADMIN=true
  BAZAAR_DEPENDENCIES="$DEPENDENCIES"
  BAZAAR_CHECKOUT_WAIT_MS=1000
  BAZAAR_METRICS_TOKEN="$METRICS_TOKEN"
)

log "starting bazaar (monolith, SQLite) on $URL"
# env and taskset exec, so $! is the bazaar process itself.
env "${SERVER_ENV[@]}" "${PIN_SERVER[@]}" "$BIN" serve >"$WORK/logs/server.log" 2>&1 </dev/null &
SERVER_PID=$!
deadline=$(( $(date +%s) + 60 ))
until curl -fs -o /dev/null "$URL/health/ready"; do
  kill -0 "$SERVER_PID" 2>/dev/null || fail "bazaar exited before it was ready"
  [ "$(date +%s)" -lt "$deadline" ] || fail "bazaar not ready at $URL after 60 s"
  sleep 0.05
done

ADMIN=$(curl -fsS -XPOST "$URL/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"email":"bench-admin@example.com","password":"bench-password"}' | json 'd["token"]') \
  || fail "admin login"
TOKEN=$(curl -fsS -XPOST "$URL/api/v1/auth/register" -H 'content-type: application/json' \
  -d '{"email":"buyer@example.com","password":"bench-password","name":"Buyer"}' | json 'd["token"]') \
  || fail "buyer registration"
ALL_IDS=$(curl -fsS "$URL/api/v1/products?limit=100" | json '",".join(p["id"] for p in d["items"])') \
  || fail "product list"
[ -n "$ALL_IDS" ] || fail "no products listed"
CHECKOUT_IDS=$(tr ',' '\n' <<<"$ALL_IDS" | head -n 20 | paste -sd, -)
for id in ${CHECKOUT_IDS//,/ }; do
  curl -fsS -o /dev/null -XPUT "$URL/api/v1/products/$id/stock" -H "authorization: Bearer $ADMIN" \
    -H 'content-type: application/json' -d '{"stock":1000000}' || fail "raising the stock of $id"
done
# The faults routes exist only with fault_admin; fail now rather than mid-run.
curl -fsS -o /dev/null "$URL/api/v1/admin/faults" -H "authorization: Bearer $ADMIN" \
  || fail "GET /api/v1/admin/faults (is fault_admin on?)"

admin_call() { # method path [body]: the admin token, status checked
  local args=(-fsS -X "$1" "$URL$2" -H "authorization: Bearer $ADMIN")
  [ $# -ge 3 ] && args+=(-H 'content-type: application/json' -d "$3")
  curl "${args[@]}"
}

metrics_snapshot() { # file: the payments dependency_calls_total and _retries_total series
  curl -fsS -H "Authorization: Bearer $METRICS_TOKEN" "$URL/metrics" | grep -E '^dependency_(calls|retries)_total\{' | grep 'dependency="payments"' >"$1" || true
}

# run_phase NAME FAULT-DESCRIPTION: both wrk at once, then the breaker and the calls.
run_phase() {
  local phase=$1 fault=$2
  local reads_out=$WORK/logs/wrk-reads-$phase.txt checkouts_out=$WORK/logs/wrk-checkouts-$phase.txt
  log "phase $phase ($fault): two wrk, ${PHASE}s, $CONNS connections each"
  metrics_snapshot "$WORK/metrics-$phase-start"
  PRODUCTS=$ALL_IDS "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"${PHASE}s" --timeout 10s --latency \
    -s "$ROOT/bench/reads.lua" "$URL" >"$reads_out" 2>&1 &
  WRK_PIDS=("$!")
  TOKEN=$TOKEN PRODUCTS=$CHECKOUT_IDS BENCH_DIR="$ROOT/bench" "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" \
    -d"${PHASE}s" --timeout 10s --latency -s "$ROOT/bench/checkout_status.lua" "$URL" \
    >"$checkouts_out" 2>&1 &
  WRK_PIDS+=("$!")
  local rc_reads=0 rc_checkouts=0
  wait "${WRK_PIDS[0]}" || rc_reads=$?
  wait "${WRK_PIDS[1]}" || rc_checkouts=$?
  WRK_PIDS=()
  [ "$rc_reads" -eq 0 ] || { cat "$reads_out" >&2; fail "wrk (reads, $phase)"; }
  [ "$rc_checkouts" -eq 0 ] || { cat "$checkouts_out" >&2; fail "wrk (checkouts, $phase)"; }
  kill -0 "$SERVER_PID" 2>/dev/null || fail "bazaar exited during phase $phase"
  local resilience
  resilience=$(admin_call GET /api/v1/admin/resilience) || fail "GET /api/v1/admin/resilience"
  echo "$resilience" >"$WORK/logs/resilience-$phase.json"
  metrics_snapshot "$WORK/metrics-$phase-end"
  local route out
  for route in reads checkouts; do
    out=$WORK/logs/wrk-$route-$phase.txt
    printf '%s\t%s\t%s\n' "$route" "$phase" "$out" >>"$RESULTS"
  done
  printf '%s\t%s\t%s\t%s\t%s\n' "$phase" "$fault" "$WORK/logs/resilience-$phase.json" \
    "$WORK/metrics-$phase-start" "$WORK/metrics-$phase-end" >>"$BREAKERS"
}

FAULT_TARGET=payments.charge
FAULT_BODY='{"hang": true}'

run_phase before "none"
admin_call PUT "/api/v1/admin/faults/$FAULT_TARGET" "$FAULT_BODY" >"$WORK/logs/fault-put.json" \
  || fail "PUT /api/v1/admin/faults/$FAULT_TARGET"
run_phase during "\`$FAULT_TARGET\` = \`$FAULT_BODY\`"
admin_call DELETE "/api/v1/admin/faults/$FAULT_TARGET" >/dev/null \
  || fail "DELETE /api/v1/admin/faults/$FAULT_TARGET"
[ "$(admin_call GET /api/v1/admin/faults | json 'len(d["items"])')" = 0 ] \
  || fail "a fault is still listed after the DELETE"
run_phase after "none (deleted)"

# Drain: the audit with --stuck-after-secs 0 counts every order still in flight as a
# violation, so a clean report means no order is pending and every invariant holds.
audit_report() {
  BAZAAR_LOG_FILTER=error "$BIN" --data-dir "$DATA" audit --json --stuck-after-secs 0 \
    2>>"$WORK/logs/audit.log" || true
}
audit_verdict() { # report on stdin -> one line: "clean" or "NOT clean: ..."
  python3 -c '
import json, sys
text = sys.stdin.read()
start = text.find("{")
try:
    d = json.loads(text[start:] if start >= 0 else text)
except Exception:
    print("no report (see the audit log)"); sys.exit()
stuck = "every order reaches a terminal state"
bad = []
for c in d["checks"]:
    if c["ok"]:
        continue
    v = c["violations"]
    if c["name"] == stuck:
        bad.append("%s%d order(s) still pending, e.g. %s" % (">= " if len(v) >= 20 else "", len(v), v[0]))
    else:
        bad.append(c["name"] + ": " + (v[0] if v else "?") + (" (+%d more)" % (len(v) - 1) if len(v) > 1 else ""))
print("clean, %d orders" % d["orders"] if d["ok"] else "NOT clean (%d orders): %s" % (d["orders"], "; ".join(bad)))
'
}
log "waiting for every order to settle (audit, up to 30 s)"
DRAIN_START=$(date +%s.%N)
DRAIN_DEADLINE=$(( $(date +%s) + 30 ))
while :; do
  REPORT=$(audit_report)
  AUDIT=$(audit_verdict <<<"$REPORT")
  [[ "$AUDIT" == clean* ]] && break
  [ "$(date +%s)" -lt "$DRAIN_DEADLINE" ] || { log "audit after 30 s: $AUDIT"; break; }
  sleep 1
done
DRAIN_SECS=$(python3 -c "import time;print(f'{time.time() - $DRAIN_START:.1f}')")
echo "$REPORT" >"$WORK/logs/audit-last.json"
FINAL_RESILIENCE=$(admin_call GET /api/v1/admin/resilience || echo '{}')

# The buyer's orders by final status (and failure reason), paged through the API.
ORDERS_BY_STATUS=$(python3 - "$URL" "$TOKEN" <<'PY'
import collections, json, sys, urllib.parse, urllib.request
url, token = sys.argv[1], sys.argv[2]
counts, cursor = collections.Counter(), None
while True:
    q = {"limit": 100}
    if cursor:
        q["cursor"] = cursor
    req = urllib.request.Request(url + "/api/v1/orders?" + urllib.parse.urlencode(q),
                                 headers={"authorization": "Bearer " + token})
    page = json.load(urllib.request.urlopen(req, timeout=30))
    for o in page["items"]:
        key = o["status"] + (" (" + o["failure_reason"] + ")" if o.get("failure_reason") else "")
        counts[key] += 1
    cursor = page.get("next_cursor")
    if not cursor:
        break
print(", ".join(f"{k}: {v}" for k, v in counts.most_common()) or "none")
PY
) || ORDERS_BY_STATUS="(could not list the orders)"

log "stopping bazaar"
stop_server
log "report"

# Report.
COMMIT=$(git describe --always --dirty 2>/dev/null || echo unknown)
EXTRA_ENV=$(env | grep '^BAZAAR_' | cut -d= -f1 | paste -sd' ' - || true)
python3 - "$RESULTS" "$BREAKERS" "$PHASE" "$FINAL_RESILIENCE" <<'PY'
import json, re, sys
results, breakers, duration, final = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]

def ms(s):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("m", 60e3), ("s", 1e3)):
        if s.endswith(unit):
            return float(s[: -len(unit)]) * f
    return float(s)

def fmt_ms(v):
    return f"{v * 1000:.0f} µs" if v < 1 else (f"{v:.1f} ms" if v < 100 else f"{v:,.0f} ms")

def wrk(path):
    text = open(path).read()
    m = re.search(r"^\s*(\d+) requests in", text, re.M)
    total = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    sockerr = "-" if not m else ", ".join(f"{k} {v}" for k, v in zip(("connect", "read", "write", "timeout"), m.groups()) if v != "0") or "-"
    p = {q: fmt_ms(ms(v)) for q, v in re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M)}
    m = re.search(r"^STATUS (.*)$", text, re.M)
    status = dict(re.findall(r"(\w+)=(\d+)", m.group(1))) if m else {}
    return total, non2xx, sockerr, p.get("50", "?"), p.get("99", "?"), status

print("| route | phase | req/s | p50 | p99 | non-2xx | socket errors | 201 confirmed | 201 failed | 202 pending | 4xx / 5xx |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for line in open(results):
    route, phase, path = line.rstrip("\n").split("\t")
    total, non2xx, sockerr, p50, p99, st = wrk(path)
    share = f"{non2xx / total:.1%}" if total else "n/a"
    name = "product reads" if route == "reads" else "checkouts"
    if route == "checkouts":
        g = lambda k: st.get(k, "?")
        other = int(st.get("201_other", 0)) + int(st.get("other", 0))
        extra = f"| {g('201_confirmed')} | {g('201_failed')}{f' (+{other} other)' if other else ''} | {g('202')} | {g('4xx')} / {g('5xx')} |"
    else:
        extra = "| - | - | - | - |"
    print(f"| {name} | {phase} | {total / duration:,.0f} | {p50} | {p99} | {share} ({non2xx}) | {sockerr} {extra}")

def payments(doc):
    try:
        items = json.loads(doc)["items"]
    except Exception:
        return None
    return next((i for i in items if i["name"] == "payments"), None)

def series(path):
    out = {}
    for line in open(path):
        m = re.match(r"dependency_(calls|retries)_total\{(.*)\}\s+(\S+)", line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        key = (labels.get("method", "?"), labels.get("outcome", "?") if m.group(1) == "calls" else "(retries)")
        out[key] = out.get(key, 0) + float(m.group(3))
    return out

print()
print("| phase | fault in force | payments breaker at the end of the phase | consecutive failures | in flight | payments calls in the phase (method: final outcome count; retries inside the guard) |")
print("|---|---|---|---|---|---|")
for line in open(breakers):
    phase, fault, res_path, m0, m1 = line.rstrip("\n").split("\t")
    p = payments(open(res_path).read())
    a, b = series(m0), series(m1)
    calls = ", ".join(f"{k[0]}: {k[1]} {int(b[k] - a.get(k, 0))}" for k in sorted(b) if b[k] - a.get(k, 0) > 0) or "none"
    if p:
        print(f"| {phase} | {fault} | **{p['breaker']}** | {p['consecutive_failures']} | {p['in_flight']} / {p['max_concurrent']} | {calls} |")
    else:
        print(f"| {phase} | {fault} | ? (no payments dependency listed) | | | {calls} |")
p = payments(final)
print()
print(f"Payments breaker once the orders had settled: **{p['breaker'] if p else '?'}**.")
PY
cat <<MD

Audit after the last phase (\`bazaar audit --json --stuck-after-secs 0\`, polled until clean, ≤ 30 s; waited ${DRAIN_SECS} s): **${AUDIT}**.
Orders by final status: ${ORDERS_BY_STATUS}.

Monolith (SQLite), started fresh (100 seeded products), \`BAZAAR_FAULT_ADMIN=true BAZAAR_RATE_LIMIT_PER_SECOND=0
BAZAAR_LOG_FILTER=warn BAZAAR_CHECKOUT_WAIT_MS=1000 BAZAAR_DEPENDENCIES='${DEPENDENCIES}'\`.
Three phases of ${PHASE} s; in each, two wrk at once (1 thread, ${CONNS} connections each, closed loop, --timeout 10s):
product reads = \`GET /api/v1/products/{id}\` round-robin over the 100 ids (\`bench/reads.lua\`); checkouts =
\`bench/checkout_status.lua\` (\`bench/checkout.lua\`'s one-line \`tok_visa\` orders over 20 products with stock
1,000,000, by one user, answers tallied by class: 201 = terminal within \`checkout_wait_ms\`, confirmed or failed; 202 =
still pending). req/s = all answers / ${PHASE} s; non-2xx = 4xx + 5xx (a 202 is a 2xx). The fault was set with
\`PUT /api/v1/admin/faults/${FAULT_TARGET}\` \`${FAULT_BODY}\` before the second phase and removed with \`DELETE\` before the
third; the breaker is \`GET /api/v1/admin/resilience\` right after each phase's wrk ended, the calls are deltas of
\`dependency_calls_total{dependency="payments"}\` (one per call, by its final outcome) and
\`dependency_retries_total{dependency="payments"}\` over the phase.
Server pinned to core 0 and both wrk to core 1: ${PINNED}.
Command: \`bench/faults.sh $PHASE $CONNS\`, $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), commit ${COMMIT}$([ -n "$EXTRA_ENV" ] && echo ", with $EXTRA_ENV set in the environment").
MD
