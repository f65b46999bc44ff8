//! Who is calling: the TCP peer, or the client a trusted proxy names.
//!
//! Node routes identify the caller by address (a node gets its own boot
//! parameters and metadata, never another's), so `X-Forwarded-For` is only
//! believed when the peer itself is a configured trusted proxy, and read from
//! the right, where the proxies we trust appended it.

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
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok().map(canon))
        .collect();
    let mut caller = peer;
    for hop in hops.into_iter().rev() {
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
}
