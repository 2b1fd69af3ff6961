#!/usr/bin/env python3
"""Loopback ports for processes a script starts and tells where to listen.

Not bind(0): the kernel answers from its ephemeral range, the range it also takes a
local port from for every outgoing connection, so between "free" and the child's
bind any connection on the machine (the split's services dialling PostgreSQL and
NATS) may take it and the child fails with "Address already in use". Ports come from
below that range, where only listeners live, the same way the Rust tests get theirs
(crates/testkit/src/net.rs): a cursor that never hands a port out twice in one
process, starting at a random offset, each candidate checked by binding it.

As a command: `free_ports.py 9 1` prints the first port of a run of 9 free ports and
then one more, disjoint from the first run.
"""

import random
import socket
import sys

FLOOR = 16_000  # above PostgreSQL, NATS, Redis and RabbitMQ's registered ports


def _ephemeral_floor():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            floor = int(f.read().split()[0])
        return floor if floor > FLOOR + 1_000 else 32_768
    except (OSError, ValueError, IndexError):
        return 32_768


_CEILING = _ephemeral_floor()
_next = FLOOR + random.randrange(_CEILING - FLOOR)


def _bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_run(count=1):
    """The first port p of a run p..p+count that is free now and not given before."""
    global _next
    for _ in range(_CEILING - FLOOR):
        if _next + count > _CEILING:
            _next = FLOOR
        first, _next = _next, _next + count
        if all(_bindable(p) for p in range(first, first + count)):
            return first
    sys.exit(f"no run of {count} free ports below {_CEILING}")


def free_port():
    return free_port_run(1)


if __name__ == "__main__":
    print(" ".join(str(free_port_run(int(n))) for n in (sys.argv[1:] or ["1"])))
