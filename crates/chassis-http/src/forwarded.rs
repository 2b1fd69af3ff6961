//! Who the client is behind proxies: `X-Forwarded-For`, believed only from the
//! proxies the deployment names.
//!
//! A load balancer or ingress in front of bazaar connects to it itself, so the TCP
//! peer is the proxy, and the client is in the `X-Forwarded-For` the proxy appends
//! to. Anyone can send that header, so it is read only as far as the proxies the
//! deployment trusts (`trusted_proxies`, CIDRs; none by default): walking the chain
//! from the right (the nearest hop), every address inside a trusted range is a proxy
//! and the one before it is who it saw; the first address outside them is the client.
//! With no trusted proxies the client is the TCP peer, whatever the header says.

use std::net::IpAddr;

use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// A comma-separated list of CIDRs (`10.0.0.0/8, 192.168.1.7/32`); a bare address
    /// is its own /32 or /128. Empty: none.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{item}` is not a CIDR (10.0.0.0/8) or an IP address"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        // An IPv4 peer may show up IPv4-mapped on a dual-stack socket.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer` (the address that connected, or the last hop a
    /// trusted process recorded), given the request's `X-Forwarded-For` values.
    pub fn client(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            // Unparseable: the chain cannot be followed past it.
            let Ok(ip) = hop.parse::<IpAddr>() else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_cidrs_and_addresses_and_refuses_the_rest() {
        let trusted = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7,fd00::/8 ,").unwrap();
        assert!(trusted.trusts(ip("10.1.2.3")));
        assert!(trusted.trusts(ip("192.168.1.7")));
        assert!(!trusted.trusts(ip("192.168.1.8")));
        assert!(trusted.trusts(ip("fd12::1")));
        assert!(trusted.trusts(ip("::ffff:10.9.9.9")));
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
    }

    #[test]
    fn by_default_the_header_is_ignored() {
        let none = TrustedProxies::default();
        let h = headers(&["203.0.113.7"]);
        assert_eq!(none.client(ip("10.0.0.2"), &h), ip("10.0.0.2"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = headers(&["203.0.113.7"]);
        assert_eq!(trusted.client(ip("198.51.100.1"), &h), ip("198.51.100.1"));
    }

    #[test]
    fn the_chain_is_followed_through_trusted_hops_only() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // The client forged the first entry; the ingress (10.0.0.9) appended the
        // real client, then the load balancer (10.0.0.2) connected.
        let h = headers(&["1.2.3.4, 203.0.113.7", "10.0.0.9"]);
        assert_eq!(trusted.client(ip("10.0.0.2"), &h), ip("203.0.113.7"));
        // Only proxies in the chain: the leftmost is the best there is.
        let h = headers(&["10.0.0.5"]);
        assert_eq!(trusted.client(ip("10.0.0.2"), &h), ip("10.0.0.5"));
        // No header: the proxy itself.
        assert_eq!(
            trusted.client(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
        // Garbage stops the walk at the last address believed.
        let h = headers(&["203.0.113.7, garbage, 10.0.0.9"]);
        assert_eq!(trusted.client(ip("10.0.0.2"), &h), ip("10.0.0.9"));
    }
}
