#!/usr/bin/env bash
# Peak resident memory of the monolith under the load that grew it most (issue 16):
# password hashing. Each allocator variant runs on a fresh server, in turn, in one run:
#
#   glibc         the system allocator, untuned (the default build)
#   glibc-tuned   the same binary with MALLOC_MMAP_THRESHOLD_=131072 and
#                 MALLOC_ARENA_MAX=2 (a fixed mmap threshold turns off glibc's
#                 dynamic one, which otherwise keeps freed large blocks in the arenas)
#   jemalloc      built with `--features jemalloc` (tikv-jemallocator)
#   mimalloc      built with `--features mimalloc`
#   NAME=PATH     any other bazaar binary (e.g. a build of an older commit, `before`)
#
# Phases, each reporting the peak RSS (VmHWM, reset through /proc/PID/clear_refs
# before the phase) and the RSS left after it (VmRSS):
#   idle          start-up to ready, then 2 s idle
#   register      70 registrations, 16 at once
#   wrong-logins  300 logins with a wrong password, 64 at once (the login throttle is
#                 opened up for the run so every one is hashed)
# and the answers' status counts (a 503 is a login shed because no hashing slot came
# free within `password_hash_wait_ms`).
#
#   bench/memory.sh [--no-build] [--debug] [variant ...]   (default: glibc glibc-tuned jemalloc mimalloc)
#
# --debug measures the dev profile (quicker to build; dependencies, argon2 among them,
# are optimised in it too).
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS="$*"
BUILD=yes
PROFILE=release
while [ $# -gt 0 ]; do
  case $1 in
    --no-build) BUILD=no ;;
    --debug) PROFILE=debug ;;
    *) break ;;
  esac
  shift
done
VARIANTS=("$@")
[ ${#VARIANTS[@]} -gt 0 ] || VARIANTS=(glibc glibc-tuned jemalloc mimalloc)
for tool in python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 2; }
done
OUT=target/memory-bench
mkdir -p "$OUT"

# One binary per allocator feature, copied aside (each build overwrites
# target/release/bazaar).
binary() { # feature ("" for the system allocator)
  local name=${1:-system}-$PROFILE
  if [ "$BUILD" = yes ]; then
    if [ "$PROFILE" = release ]; then
      cargo build --release -q -p bazaar ${1:+--features "$1"} >&2
    else
      cargo build -q -p bazaar ${1:+--features "$1"} >&2
    fi
    cp "target/$PROFILE/bazaar" "$OUT/bazaar-$name"
  fi
  echo "$OUT/bazaar-$name"
}

WORK=$(mktemp -d)
PID=
cleanup() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; fi; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 scripts/free_ports.py; }
kib() { awk -v k="$1" '/^'"$1"'/ { print $2 }' "/proc/$PID/status"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

# drive URL register|wrong-logins: the phase's requests; prints the status counts.
drive() {
  python3 - "$1" "$2" <<'EOF'
import collections, concurrent.futures, json, sys, urllib.request, urllib.error
base, phase = sys.argv[1], sys.argv[2]
def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
if phase == "register":
    n, at_once = 70, 16
    work = lambda i: post("/api/v1/auth/register",
                          {"email": f"user{i}@example.com", "password": "password123", "name": f"User {i}"})
else:
    n, at_once = 300, 64
    work = lambda i: post("/api/v1/auth/login",
                          {"email": f"user{i % 70}@example.com", "password": "wrong-password"})
with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
    counts = collections.Counter(pool.map(work, range(n)))
print(" ".join(f"{k}x{v}" for k, v in sorted(counts.items())))
EOF
}

declare -A BIN ENVS
for v in "${VARIANTS[@]}"; do
  case $v in
    glibc) BIN[$v]=$(binary "") ;;
    glibc-tuned) BIN[$v]=$(binary ""); ENVS[$v]="MALLOC_MMAP_THRESHOLD_=131072 MALLOC_ARENA_MAX=2" ;;
    jemalloc|mimalloc) BIN[$v]=$(binary "$v") ;;
    *=*) BIN[${v%%=*}]=${v#*=} ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
done

echo "Command: bench/memory.sh $ARGS ($PROFILE profile; $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)); $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| allocator | idle peak, MB | 70 registrations: peak / after, MB | 300 wrong logins (64 at once): peak / after, MB | answers |"
echo "|---|---|---|---|---|"
for v in "${VARIANTS[@]}"; do
  name=${v%%=*}
  port=$(free_port)
  # shellcheck disable=SC2086 # ENVS holds VAR=value words
  env ${ENVS[$name]:-} BAZAAR_LOG_FILTER=warn BAZAAR_RATE_LIMIT_PER_SECOND=0 BAZAAR_AUTH_RATE_LIMIT_PER_SECOND=0 \
    BAZAAR_LOGIN_FREE_ATTEMPTS=1000000 \
    "${BIN[$name]}" serve --data-dir "$WORK/$name" --http-addr "127.0.0.1:$port" \
    >"$WORK/$name.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 400); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/health/ready" && break
    sleep 0.025
  done
  sleep 2
  idle=$(mb "$(kib VmHWM)")
  echo 5 >"/proc/$PID/clear_refs"
  drive "http://127.0.0.1:$port" register >"$WORK/answers-register"
  reg="$(mb "$(kib VmHWM)") / $(mb "$(kib VmRSS)")"
  echo 5 >"/proc/$PID/clear_refs"
  answers=$(drive "http://127.0.0.1:$port" wrong-logins)
  logins="$(mb "$(kib VmHWM)") / $(mb "$(kib VmRSS)")"
  echo "| $name | $idle | $reg | $logins | registrations $(cat "$WORK/answers-register"); logins $answers |"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
done
