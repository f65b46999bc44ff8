//! Who is calling: the TCP peer, or the client a trusted proxy names.
//!
//! Node routes identify the caller by address (a node gets its own boot
//! parameters and metadata, never another's), so `X-Forwarded-For` is only
//! believed when the peer itself is a configured trusted proxy, and read from
//! the right, where the proxies we trust appended it. The walk stops at the
//! first hop that is not a bare IP address (`ip:port`, `[ip]`, `unknown`,
//! garbage): whatever lies left of it cannot be vouched for, so the caller
//! is the last hop that could be, the trusted proxy itself at worst.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// The address to identify the caller by.
pub fn caller_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let peer = canon(peer);
    if !trusted.iter().any(|t| canon(*t) == peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .flat_map(|v| v.split(','))
        .collect();
    let mut caller = peer;
    for hop in hops.into_iter().rev() {
        let Ok(hop) = hop.trim().parse::<IpAddr>().map(canon) else {
            break;
        };
        caller = hop;
        if !trusted.iter().any(|t| canon(*t) == hop) {
            break;
        }
    }
    caller
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(xff: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", xff.parse().unwrap());
        m
    }

    #[test]
    fn xff_counts_only_from_trusted_proxies() {
        let node: IpAddr = "172.16.0.1".parse().unwrap();
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        // A node naming another node is still itself.
        assert_eq!(caller_ip(node, &h("172.16.0.2"), &[proxy]), node);
        // Through the trusted proxy, the rightmost untrusted hop is the caller.
        assert_eq!(
            caller_ip(proxy, &h("6.6.6.6, 172.16.0.2"), &[proxy]),
            "172.16.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(caller_ip(proxy, &HeaderMap::new(), &[proxy]), proxy);
        let mapped: IpAddr = "::ffff:172.16.0.1".parse().unwrap();
        assert_eq!(caller_ip(mapped, &HeaderMap::new(), &[]), node);
    }

    #[test]
    fn a_hop_that_is_not_an_address_ends_the_walk() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let inner: IpAddr = "10.0.0.6".parse().unwrap();
        let trusted = [proxy, inner];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // (X-Forwarded-For as the trusted proxy sends it, the caller).
        for (xff, want) in [
            ("172.16.0.1, 172.16.0.50:4711", proxy),
            ("172.16.0.1, [172.16.0.50]", proxy),
            ("172.16.0.1, unknown", proxy),
            ("172.16.0.1, ", proxy),
            ("172.16.0.1, 172.16.0.50 x", proxy),
            ("172.16.0.1, [::1]:80", proxy),
            ("172.16.0.1, 10.0.0.6, 172.16.0.50:4711", proxy),
            ("172.16.0.1, garbage, 10.0.0.6", ip("10.0.0.6")),
            ("172.16.0.1, 172.16.0.50", ip("172.16.0.50")),
            ("172.16.0.1", ip("172.16.0.1")),
        ] {
            assert_eq!(caller_ip(proxy, &h(xff), &trusted), want, "{xff:?}");
        }
        // Two header lines read as one list, right to left.
        let mut m = h("172.16.0.1");
        m.append("x-forwarded-for", "172.16.0.50:4711".parse().unwrap());
        assert_eq!(caller_ip(proxy, &m, &trusted), proxy);
    }
}
