//! Loopback ports.

use std::net::{SocketAddr, TcpListener};

/// A free loopback port: bind port 0, read the port, let it go.
pub fn free_port() -> u16 {
    closed_addr().port()
}

/// An address on 127.0.0.1 nobody listens on (just now): for "peer unreachable"
/// tests.
pub fn closed_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A port `p` such that `p..p + count` are all free on 127.0.0.1 (services that are
/// given consecutive ports).
pub fn free_port_run(count: u16) -> u16 {
    for _ in 0..200 {
        let first = free_port();
        let Some(last) = first.checked_add(count) else {
            continue;
        };
        if (first..last).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return first;
        }
    }
    panic!("no run of {count} free ports found");
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
}
