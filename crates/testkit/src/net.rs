//! Loopback ports for processes a test starts and tells where to listen.
//!
//! Why not `bind(0)`: the kernel answers from its ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`, 32768–60999 by default), the same range
//! it takes a local port from for every outgoing connection. Between "this port was
//! free" and the child binding it, any connection on the machine (the split's own
//! services dialling PostgreSQL and NATS, a parallel test) may take it, and the child
//! fails with "Address already in use" (a CI run was lost to exactly that). So ports
//! are handed out from below the ephemeral range, where only listeners live: a
//! per-process cursor (never the same port twice in one test binary) starting at an
//! offset drawn per process (two test processes rarely meet), each candidate checked
//! by binding it.

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

use rand::Rng;

/// Lowest port handed out: above the registered ports of the servers this machine
/// runs (PostgreSQL 5432, NATS 4222, Redis 6379, RabbitMQ 5672/15672).
const FLOOR: u16 = 16_000;

/// A free loopback port outside the ephemeral range.
pub fn free_port() -> u16 {
    free_port_run(1)
}

/// An address on 127.0.0.1 nobody listens on (just now): for "peer unreachable"
/// tests.
pub fn closed_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A port `p` such that `p..p + count` are all free on 127.0.0.1 (services that are
/// given consecutive ports), outside the ephemeral range.
pub fn free_port_run(count: u16) -> u16 {
    static CURSOR: Mutex<Option<u16>> = Mutex::new(None);
    let ceiling = ephemeral_floor();
    let span = ceiling - FLOOR;
    assert!(
        count > 0 && count < span,
        "a run of {count} ports does not fit"
    );
    let mut cursor = CURSOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut next = cursor.unwrap_or_else(|| FLOOR + rand::thread_rng().gen_range(0..span));
    // Every start in the range is tried at most once before giving up.
    for _ in 0..span {
        if next + count > ceiling {
            next = FLOOR;
        }
        let first = next;
        next = first + count;
        if (first..first + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            *cursor = Some(next);
            return first;
        }
    }
    panic!("no run of {count} free ports below {ceiling}");
}

/// The first port of the kernel's ephemeral range; 32768 (Linux's default) where it
/// cannot be read.
fn ephemeral_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&floor| floor > FLOOR + 1_000)
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_free_ports_can_be_bound() {
        let first = free_port_run(4);
        for port in first..first + 4 {
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_never_twice() {
        let floor = ephemeral_floor();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let port = free_port();
            assert!(
                (FLOOR..floor).contains(&port),
                "{port} is outside {FLOOR}..{floor}"
            );
            assert!(seen.insert(port), "{port} was handed out twice");
        }
    }
}
