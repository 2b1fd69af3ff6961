#!/usr/bin/env bash
# CPU instructions per operation on the monolith's hot paths, counted by valgrind's
# callgrind: unlike wall time, instruction counts barely move on a shared, noisy
# machine, so a change's effect shows as a ratio between two builds.
#
# `crates/bazaar/examples/hotpaths.rs` builds a fresh monolith in-process and drives
# its whole router (every layer `bazaar serve` has, minus the socket) through:
#   product    GET /api/v1/products/{id}
#   cart       POST /api/v1/cart/items
#   checkout   add to cart + POST /api/v1/orders (the saga that follows is not counted)
# callgrind counts only the request path: the calling thread while it is inside the
# example's `Counted` future (`--collect-atstart=no --toggle-collect`), not the
# runtime's other threads, whose background loops poll on timers and so grow with
# valgrind's slowdown, not with the operations. Work a request hands to another thread
# (SQLite statements on sqlx's connection threads) is not counted either. The script
# reports instructions per operation (Ir / count).
#
#   bench/callgrind.sh [--no-build] [--count N] [NAME=PATH ...]
#
# With no NAME=PATH the example is built from this tree (`current`). With several,
# each is measured in turn in the same run and the table gives each one's ratio to the
# first (e.g. `before=target/hotpaths-before current=target/release/examples/hotpaths`).
# Build an older commit's example with `git worktree` and
# `cargo build --release --example hotpaths -p bazaar` there.
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS="$*"   # kept for the report: the loop below consumes them
BUILD=yes
COUNT=200
BINS=()
while [ $# -gt 0 ]; do
  case $1 in
    --no-build) BUILD=no ;;
    --count) COUNT=$2; shift ;;
    *=*) BINS+=("$1") ;;
    *) echo "usage: bench/callgrind.sh [--no-build] [--count N] [NAME=PATH ...]" >&2; exit 2 ;;
  esac
  shift
done
command -v valgrind >/dev/null || { echo "valgrind is required" >&2; exit 2; }
if [ ${#BINS[@]} -eq 0 ]; then
  [ "$BUILD" = yes ] && cargo build --release -q --example hotpaths -p bazaar
  BINS=(current=target/release/examples/hotpaths)
fi
SCENARIOS=(product cart checkout)
# Checkouts are slower under valgrind (the saga, SQLite commits): fewer of them.
count_for() { if [ "$1" = checkout ]; then echo $(( (COUNT + 3) / 4 )); else echo "$COUNT"; fi; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ir BIN SCENARIO: instructions per operation
ir() {
  local out="$WORK/cg.$RANDOM" n
  n=$(count_for "$2")
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    --collect-atstart=no --toggle-collect='*Counted*poll*' \
    "$1" "$2" "$n" >"$WORK/log" 2>&1 || { cat "$WORK/log" >&2; return 1; }
  awk -v n="$n" '/^(summary|totals):/ { printf "%.0f", $2 / n; exit }' "$out"
}

echo "Command: bench/callgrind.sh ${ARGS} ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)); $(valgrind --version); count $COUNT (checkout $(count_for checkout))"
echo
header="| scenario |"; sep="|---|"
for b in "${BINS[@]}"; do header+=" ${b%%=*}, instructions/op |"; sep+="---|"; done
[ ${#BINS[@]} -gt 1 ] && for b in "${BINS[@]:1}"; do header+=" ${b%%=*} / ${BINS[0]%%=*} |"; sep+="---|"; done
echo "$header"; echo "$sep"
for s in "${SCENARIOS[@]}"; do
  row="| $s |"; first=
  ratios=""
  for b in "${BINS[@]}"; do
    v=$(ir "${b#*=}" "$s")
    row+=" $(printf "%'d" "$v") |"
    if [ -z "$first" ]; then first=$v; else ratios+=" $(awk -v a="$v" -v b="$first" 'BEGIN { printf "%.3f", a / b }') |"; fi
  done
  echo "$row$ratios"
done
