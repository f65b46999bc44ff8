//! What `discover scan` probes: CIDRs, addresses and `address:port`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The most addresses one scan may cover (a /16).
pub const MAX_ADDRESSES: usize = 65_536;

/// Expands targets into socket addresses, in order and without repeats.
/// `10.0.0.0/24` (network and broadcast skipped for prefixes below /31),
/// `10.0.0.5`, `10.0.0.5:8443`, `[fd00::5]:443`, `fd00::5`; `port` where a
/// target names none.
pub fn expand(targets: &[String], port: u16) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in targets {
        for a in expand_one(t.trim(), port)? {
            if seen.insert(a) {
                out.push(a);
                if out.len() > MAX_ADDRESSES {
                    return Err(format!(
                        "targets cover more than {MAX_ADDRESSES} addresses; scan in parts"
                    ));
                }
            }
        }
    }
    Ok(out)
}

fn expand_one(t: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if t.is_empty() {
        return Err("empty scan target".into());
    }
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Ok(vec![sa]);
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let bad = || format!("{t:?} is not an IP address, address:port or CIDR");
    let (net, len) = t.split_once('/').ok_or_else(bad)?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    match net.parse::<IpAddr>().map_err(|_| bad())? {
        IpAddr::V4(a) => {
            if len > 32 {
                return Err(bad());
            }
            if len < 16 {
                return Err(format!(
                    "{t}: prefixes shorter than /16 are refused; scan in parts"
                ));
            }
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let first = u32::from(a) & mask;
            let size = 1u64 << (32 - len);
            let (lo, hi) = if len >= 31 { (0, size) } else { (1, size - 1) };
            Ok((lo..hi)
                .map(|k| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(first + k as u32)), port))
                .collect())
        }
        IpAddr::V6(a) => {
            if !(112..=128).contains(&len) {
                return Err(format!("{t}: IPv6 scans need a prefix of /112 or longer"));
            }
            let mask = if len == 128 {
                u128::MAX
            } else {
                u128::MAX << (128 - len)
            };
            let first = u128::from(a) & mask;
            let size = 1u128 << (128 - len);
            Ok((0..size)
                .map(|k| SocketAddr::new(IpAddr::V6((first + k).into()), port))
                .collect())
        }
    }
}

/// How an address is written in the inventory and in URLs: the IP alone on
/// HTTPS's port 443, else `ip:port` (`[ip]:port` for IPv6).
pub fn address_string(a: SocketAddr) -> String {
    if a.port() == 443 {
        a.ip().to_string()
    } else {
        a.to_string()
    }
}

/// The IP of an address string (`10.0.0.1`, `10.0.0.1:8443`, `[::1]:443`), if
/// it is one.
pub fn ip_of(addr: &str) -> Option<IpAddr> {
    addr.parse::<IpAddr>()
        .ok()
        .or_else(|| addr.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn expands_cidrs_hosts_and_ports() {
        let a = expand(&s(&["10.0.0.0/30", "10.0.0.1", "10.0.0.9:8443"]), 443).unwrap();
        let got: Vec<String> = a.iter().map(|x| x.to_string()).collect();
        assert_eq!(got, vec!["10.0.0.1:443", "10.0.0.2:443", "10.0.0.9:8443"]);
        assert_eq!(expand(&s(&["10.0.0.0/24"]), 443).unwrap().len(), 254);
        assert_eq!(expand(&s(&["10.0.0.7/32"]), 443).unwrap().len(), 1);
        assert_eq!(expand(&s(&["[::1]:8443", "::1"]), 443).unwrap().len(), 2);
        assert!(expand(&s(&["10.0.0.0/8"]), 443).is_err());
        assert!(expand(&s(&["bmc.example"]), 443).is_err());
        assert!(expand(&s(&["10.0.0.0/33"]), 443).is_err());
    }

    #[test]
    fn address_strings() {
        let a: SocketAddr = "10.0.0.1:443".parse().unwrap();
        assert_eq!(address_string(a), "10.0.0.1");
        let b: SocketAddr = "10.0.0.1:8443".parse().unwrap();
        assert_eq!(address_string(b), "10.0.0.1:8443");
        assert_eq!(ip_of("10.0.0.1:8443"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(ip_of("[::1]:1"), Some("::1".parse().unwrap()));
        assert_eq!(ip_of("bmc"), None);
    }
}
