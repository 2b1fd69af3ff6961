#!/usr/bin/env bash
# The crate graph's rules that the compiler does not check (docs/adr/0012):
#
#   - contracts compiles no I/O: none of NATS, SQL, OpenTelemetry, JWT, HTTP (client or
#     server) or the async runtime reaches it, only chassis-core;
#   - chassis-core likewise, whatever depends on it;
#   - the chassis crates depend only downward and on no module (a cycle would not
#     build; a module dependency would);
#   - no module crate depends on another module crate.
#
# Reads `cargo tree` (normal dependencies only: dev-dependencies may test with the real
# thing). Exits non-zero, naming the offending crate, when a rule is broken.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# No-I/O crates and what must never be compiled into them.
forbidden='^(async-nats|sqlx|sqlx-[a-z-]+|opentelemetry|opentelemetry_sdk|opentelemetry-[a-z-]+|tracing-opentelemetry|jsonwebtoken|reqwest|hyper|axum|tokio|tower)$'
modules='^(identity|catalog|cart|orders|payments|notifications|analytics|storefront|gateway|bazaar)$'

status=0
deps() {
    cargo tree -p "$1" -e normal --prefix none --format '{p}' |
        awk '{print $1}' | sort -u
}

for crate in contracts chassis-core; do
    found=$(deps "$crate" | grep -E "$forbidden" || true)
    if [[ -n $found ]]; then
        echo "check-deps: $crate must compile no I/O, but depends on: $(echo $found)" >&2
        status=1
    fi
done

for crate in chassis-core chassis-telemetry chassis-store chassis-http chassis-messaging \
    chassis-resilience chassis; do
    found=$(deps "$crate" | grep -E "$modules" || true)
    if [[ -n $found ]]; then
        echo "check-deps: $crate is platform, but depends on modules: $(echo $found)" >&2
        status=1
    fi
done

# Each chassis crate only on those below it (the order of the list).
layers=(chassis-core chassis-telemetry chassis-store chassis-http chassis-messaging chassis-resilience)
for i in "${!layers[@]}"; do
    crate=${layers[$i]}
    above=("${layers[@]:$((i + 1))}" chassis)
    pattern="^($(IFS='|'; echo "${above[*]}"))$"
    found=$(deps "$crate" | grep -v "^$crate\$" | grep -E "$pattern" || true)
    if [[ -n $found ]]; then
        echo "check-deps: $crate depends on a crate above it: $(echo $found)" >&2
        status=1
    fi
done

# A module reaches another only through contracts (docs/adr/0002).
for crate in identity catalog cart orders payments notifications analytics storefront; do
    found=$(deps "$crate" | grep -v "^$crate\$" | grep -E "$modules" || true)
    if [[ -n $found ]]; then
        echo "check-deps: module $crate depends on another module: $(echo $found)" >&2
        status=1
    fi
done

if [[ $status -eq 0 ]]; then
    echo "check-deps: contracts and chassis-core compile no I/O; the chassis crates depend only downward; no module depends on another"
fi
exit $status
