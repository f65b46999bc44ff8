//! The `[dns]` section, checked once and turned into typed values.
//!
//! Config load calls [`Settings::from_config`], so `serve --check-config`
//! refuses a bad name, network, upstream or record by name before anything
//! binds port 53; the server then never re-parses a string.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::Config;
use crate::dhcp::rules::{self, Rule};

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    /// `addr/len`, host bits cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Net {
        let addr = match addr {
            IpAddr::V4(a) => {
                let p = prefix.min(32);
                let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
            }
            IpAddr::V6(a) => {
                let p = prefix.min(128);
                let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
            }
        };
        Net { addr, prefix }
    }

    /// `a.b.c.d/n` or `x::/n`; host bits set is an error.
    pub fn parse(s: &str) -> Result<Net, String> {
        let (a, p) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (address/length)"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{s:?}: prefix must be 0 to {max}"))?;
        let n = Net::new(addr, prefix);
        if n.addr != addr {
            return Err(format!("{s:?} has host bits set (network is {})", n.addr));
        }
        Ok(n)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && Net::new(ip, self.prefix).addr == self.addr
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A static record from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Static {
    Addr(String, IpAddr),
    Cname(String, String),
    Txt(String, String),
}

/// Everything the DNS server needs besides the inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub interfaces: Vec<String>,
    pub port: u16,
    /// The zone apex, lower case, no trailing dot.
    pub domain: String,
    pub head_names: Vec<String>,
    pub ttl: u32,
    /// DHCP subnets and `dns.networks`: reverse names answered here,
    /// clients allowed to recurse.
    pub networks: Vec<Net>,
    /// DHCP subnets with their domain (the `rule=` global domain).
    pub subnet_domains: Vec<(Net, String)>,
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    pub cache_size: u64,
    pub rrl_per_sec: u32,
    pub rrl_slip: u32,
    pub records: Vec<Static>,
    /// DHCP's `rule=` lines: host names of BMCs and nodes.
    pub rules: Vec<Rule>,
    /// The configured cluster name (last fallback of the host name rule).
    pub cluster_name: String,
}

/// A domain name as the zone stores it: lower case, no trailing dot,
/// labels of letters, digits, `-` and `_` (1 to 63 bytes, 253 in all).
pub fn normalize(name: &str) -> Result<String, String> {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if n.is_empty() || n.len() > 253 {
        return Err(format!("{name:?} is not a domain name"));
    }
    for label in n.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!("{name:?} is not a domain name"));
        }
    }
    Ok(n)
}

/// `name` is `zone` or below it.
pub fn in_zone(name: &str, zone: &str) -> bool {
    name == zone
        || (name.len() > zone.len()
            && name.ends_with(zone)
            && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
}

impl Settings {
    pub fn from_config(c: &Config) -> Result<Settings, String> {
        let d = &c.dns;
        let domain = normalize(&d.domain).map_err(|e| format!("dns.domain: {e}"))?;
        let mut head_names = Vec::new();
        for h in &d.head_names {
            let n = normalize(h).map_err(|e| format!("dns.head_names: {e}"))?;
            if !in_zone(&n, &domain) || n == domain {
                return Err(format!(
                    "dns.head_names: {h:?} is not inside dns.domain {domain:?}"
                ));
            }
            head_names.push(n);
        }
        if d.ttl_secs == 0 {
            return Err("dns.ttl_secs must be positive".into());
        }
        if d.upstream_timeout_ms == 0 {
            return Err("dns.upstream_timeout_ms must be positive".into());
        }
        let mut networks = Vec::new();
        let mut subnet_domains = Vec::new();
        for s in &c.dhcp.subnets {
            // The DHCP section checks its own CIDRs.
            if let Ok(n) = Net::parse(&s.cidr) {
                networks.push(n);
                subnet_domains.push((n, s.domain.trim().trim_start_matches('.').to_string()));
            }
        }
        for (i, s) in d.networks.iter().enumerate() {
            networks.push(Net::parse(s).map_err(|e| format!("dns.networks[{i}]: {e}"))?);
        }
        let upstreams = d
            .upstreams
            .iter()
            .map(|u| {
                u.parse::<SocketAddr>()
                    .or_else(|_| u.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("dns.upstreams: {u:?} is not an address or address:port"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut records = Vec::new();
        for (i, r) in d.records.iter().enumerate() {
            let at = |m: String| format!("dns.records[{i}]: {m}");
            let name = normalize(&r.name).map_err(at)?;
            if !in_zone(&name, &domain) || name == domain {
                return Err(at(format!("{name:?} is not inside dns.domain {domain:?}")));
            }
            if head_names.contains(&name) {
                return Err(at(format!("{name:?} is a head name")));
            }
            let v = r.value.trim();
            let rec = match r.kind.to_ascii_uppercase().as_str() {
                "A" => Static::Addr(
                    name,
                    IpAddr::V4(
                        v.parse()
                            .map_err(|_| at(format!("{v:?} is not an IPv4 address")))?,
                    ),
                ),
                "AAAA" => Static::Addr(
                    name,
                    IpAddr::V6(
                        v.parse()
                            .map_err(|_| at(format!("{v:?} is not an IPv6 address")))?,
                    ),
                ),
                "CNAME" => Static::Cname(name, normalize(v).map_err(at)?),
                "TXT" if v.len() <= 255 => Static::Txt(name, v.to_string()),
                "TXT" => return Err(at("a TXT value is at most 255 bytes".into())),
                other => return Err(at(format!("type {other:?} is not A, AAAA, CNAME or TXT"))),
            };
            records.push(rec);
        }
        let cnames: Vec<&String> = records
            .iter()
            .filter_map(|r| match r {
                Static::Cname(n, _) => Some(n),
                _ => None,
            })
            .collect();
        for r in &records {
            let n = match r {
                Static::Addr(n, _) | Static::Txt(n, _) => n,
                Static::Cname(..) => continue,
            };
            if cnames.contains(&n) {
                return Err(format!("dns.records: {n:?} has a CNAME and other records"));
            }
        }
        for (i, n) in cnames.iter().enumerate() {
            if cnames[..i].contains(n) {
                return Err(format!("dns.records: {n:?} has two CNAMEs"));
            }
        }
        for name in &d.interfaces {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                return Err(format!("dns.interfaces: {name:?} is not an interface name"));
            }
        }
        // The DHCP section reports bad rules by their own index.
        let rules = c
            .dhcp
            .rules
            .iter()
            .filter_map(|r| rules::parse(r).ok())
            .collect();
        Ok(Settings {
            interfaces: d.interfaces.clone(),
            port: d.port,
            domain,
            head_names,
            ttl: d.ttl_secs,
            networks,
            subnet_domains,
            upstreams,
            upstream_timeout: Duration::from_millis(d.upstream_timeout_ms),
            cache_size: d.cache_size,
            rrl_per_sec: d.rrl_per_sec,
            rrl_slip: d.rrl_slip,
            records,
            rules,
            cluster_name: c.cluster_name.clone(),
        })
    }

    /// A served network holds `ip`.
    pub fn serves(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "t").map_err(|e| e.to_string())
    }

    #[test]
    fn networks_hold_their_addresses() {
        let n = Net::parse("172.16.0.0/22").unwrap();
        assert!(n.contains("172.16.3.9".parse().unwrap()));
        assert!(n.contains("::ffff:172.16.3.9".parse().unwrap()));
        assert!(!n.contains("172.16.4.0".parse().unwrap()));
        assert!(!n.contains("fd00::1".parse().unwrap()));
        let v6 = Net::parse("fd00:1::/64").unwrap();
        assert!(v6.contains("fd00:1::5".parse().unwrap()));
        assert!(!v6.contains("fd00:2::5".parse().unwrap()));
        for bad in [
            "10.0.0.1/24",
            "10.0.0.0/33",
            "fd00::/129",
            "x/8",
            "10.0.0.0",
        ] {
            assert!(Net::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_normalized_and_checked() {
        assert_eq!(normalize("Nid0001.Cluster.").unwrap(), "nid0001.cluster");
        for bad in ["", ".", "a..b", "a b", &"x".repeat(64)] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
        assert!(in_zone("a.cluster", "cluster"));
        assert!(in_zone("cluster", "cluster"));
        assert!(!in_zone("acluster", "cluster"));
    }

    #[test]
    fn the_section_is_checked_by_name() {
        let ok = parse(
            "[dns]\nenabled = true\nupstreams = [\"10.0.0.1\", \"10.0.0.2:5353\"]\nnetworks = [\"fd00::/64\"]\n[[dns.records]]\nname = \"s3.cluster\"\ntype = \"cname\"\nvalue = \"openchami.cluster\"\n",
        )
        .unwrap();
        let s = Settings::from_config(&ok).unwrap();
        assert_eq!(s.upstreams[0], "10.0.0.1:53".parse().unwrap());
        assert_eq!(s.upstreams[1].port(), 5353);
        assert_eq!(s.head_names, vec!["openchami.cluster".to_string()]);
        for (text, says) in [
            ("[dns]\ndomain = \"a b\"\n", "dns.domain"),
            (
                "[dns]\nhead_names = [\"head.example.org\"]\n",
                "dns.head_names",
            ),
            ("[dns]\nupstreams = [\"resolver\"]\n", "dns.upstreams"),
            ("[dns]\nnetworks = [\"10.0.0.1/8\"]\n", "dns.networks[0]"),
            ("[dns]\nttl_secs = 0\n", "ttl_secs"),
            ("[dns]\nenable = true\n", "enable"),
            (
                "[[dns.records]]\nname = \"x.cluster\"\ntype = \"MX\"\nvalue = \"y\"\n",
                "dns.records[0]",
            ),
            (
                "[[dns.records]]\nname = \"x.example\"\ntype = \"A\"\nvalue = \"10.0.0.1\"\n",
                "not inside",
            ),
            (
                "[[dns.records]]\nname = \"x.cluster\"\ntype = \"A\"\nvalue = \"fd00::1\"\n",
                "IPv4",
            ),
            (
                "[[dns.records]]\nname = \"x.cluster\"\ntype = \"A\"\nvalue = \"10.0.0.1\"\n[[dns.records]]\nname = \"x.cluster\"\ntype = \"CNAME\"\nvalue = \"y.cluster\"\n",
                "CNAME and other",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
