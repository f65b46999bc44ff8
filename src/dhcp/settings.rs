//! The `[dhcp]` section: as written in the file ([`DhcpConfig`], which
//! `config` embeds), checked once and turned into typed values.
//!
//! The section's shape lives here, with its checks, so `config` depends on
//! the DHCP service and never the other way round. Config load calls [`Settings::check`] so `serve --check-config` refuses a
//! bad subnet, pool or rule by name before anything binds port 67; the
//! server then works on the typed form and never re-parses a string.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::rules::{self, Rule};
use crate::boot::base::NodeBase;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhcpConfig {
    /// Off until subnets are configured: a stray DHCP server takes down a
    /// site network.
    pub enabled: bool,
    /// Interfaces served, by name (e.g. a lab bridge). Empty: every interface
    /// with an IPv4 address inside a configured subnet, and no other.
    pub interfaces: Vec<String>,
    /// UDP port (67; another port only for tests behind a relay).
    pub port: u16,
    /// Answer only MACs in the inventory; unknown ones get silence.
    pub known_only: bool,
    /// proxyDHCP: boot options only (no addresses), for sites that keep
    /// their own DHCP server; also answers on UDP 4011.
    pub proxy: bool,
    /// Lease of an inventory (reserved) address, in seconds.
    pub lease_secs: u32,
    /// Lease of a pool address given to an unknown MAC, in seconds.
    pub pool_lease_secs: u32,
    /// `siaddr`/option 66 for boot files; empty: our address facing the client.
    pub next_server: String,
    /// coresmd `rule=` lines, evaluated in order (e.g. `type:Node,hostname:nid{04d}`).
    pub rules: Vec<String>,
    pub subnets: Vec<DhcpSubnet>,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        DhcpConfig {
            enabled: false,
            interfaces: Vec::new(),
            port: 67,
            known_only: false,
            proxy: false,
            lease_secs: 3600,
            pool_lease_secs: 300,
            next_server: String::new(),
            rules: Vec::new(),
            subnets: Vec::new(),
        }
    }
}

/// One IPv4 subnet served directly or through relays (`[[dhcp.subnets]]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhcpSubnet {
    /// e.g. `172.16.0.0/24`.
    pub cidr: String,
    /// Addresses for unknown MACs, `first-last`; empty: no pool.
    pub pool: String,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: String,
    /// Overrides `dhcp.lease_secs` here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u32>,
    /// Overrides `dhcp.pool_lease_secs` here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_lease_secs: Option<u32>,
}

/// An IPv4 network: address with host bits cleared, and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// `a.b.c.d/n`; host bits set is an error (a typo more often than not).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/len)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: prefix must be 0 to 32"))?;
        let c = Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask_bits(prefix)),
            prefix,
        };
        if c.network != addr {
            return Err(format!(
                "{s:?} has host bits set (network is {})",
                c.network
            ));
        }
        Ok(c)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask_bits(self.prefix) == u32::from(self.network)
    }

    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_bits(self.prefix))
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask_bits(self.prefix))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

pub fn mask_bits(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// One served subnet.
#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub cidr: Cidr,
    /// First and last pool address, inclusive.
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: String,
    pub lease_secs: u32,
    pub pool_lease_secs: u32,
}

impl Subnet {
    pub fn in_pool(&self, ip: Ipv4Addr) -> bool {
        self.pool
            .is_some_and(|(a, b)| (u32::from(a)..=u32::from(b)).contains(&u32::from(ip)))
    }
}

/// Everything the policy needs besides the inventory and the lease table.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub subnets: Vec<Subnet>,
    pub interfaces: Vec<String>,
    pub known_only: bool,
    /// proxyDHCP: boot options only.
    pub proxy: bool,
    pub next_server: Option<Ipv4Addr>,
    pub rules: Vec<Rule>,
    /// How nodes reach the node listener, for iPXE's boot script URL.
    pub node_base: NodeBase,
    /// The configured cluster name (last fallback of the host name rule).
    pub cluster_name: String,
    /// The cluster domain when this appliance serves DNS: subnets that name
    /// no DNS server get ours (option 6), and no domain, this one (15).
    pub dns_domain: Option<String>,
    /// Several head nodes answer from one shared store (see `records`):
    /// pool searches start at a point derived from the MAC, and every pool
    /// ACK is committed (no lease caching). Set by the server, not the file.
    pub several_heads: bool,
    /// Which clients this head answers among several (see `balance`). Set
    /// by the server as heads come and go, not by the file.
    pub share: super::balance::Share,
}

/// Group whose members get no answer at all (per-node disable).
pub const IGNORE_GROUP: &str = "dhcp-ignore";

impl Settings {
    /// Validates the section without building anything else.
    pub fn check(c: &DhcpConfig) -> Result<(), String> {
        Self::from_config(c, NodeBase::new("", ([0, 0, 0, 0], 0).into()), "").map(|_| ())
    }

    pub fn from_config(
        c: &DhcpConfig,
        node_base: NodeBase,
        cluster_name: &str,
    ) -> Result<Settings, String> {
        if c.lease_secs == 0 || c.pool_lease_secs == 0 {
            return Err("dhcp.lease_secs and dhcp.pool_lease_secs must be positive".into());
        }
        let next_server = match c.next_server.trim() {
            "" => None,
            s => Some(
                s.parse()
                    .map_err(|_| format!("dhcp.next_server: {s:?} is not an IPv4 address"))?,
            ),
        };
        let mut subnets: Vec<Subnet> = Vec::new();
        for (i, s) in c.subnets.iter().enumerate() {
            let at = |m: String| format!("dhcp.subnets[{i}]: {m}");
            let cidr = Cidr::parse(&s.cidr).map_err(at)?;
            let pool = match s.pool.trim() {
                "" => None,
                p => Some(parse_pool(p, &cidr).map_err(at)?),
            };
            for r in s.routers.iter().chain(&s.dns) {
                if r.is_unspecified() || r.is_broadcast() {
                    return Err(at(format!("{r} is not a usable address")));
                }
            }
            let lease_secs = s.lease_secs.unwrap_or(c.lease_secs);
            let pool_lease_secs = s.pool_lease_secs.unwrap_or(c.pool_lease_secs);
            if lease_secs == 0 || pool_lease_secs == 0 {
                return Err(at("lease times must be positive".into()));
            }
            if let Some(other) = subnets
                .iter()
                .find(|o| o.cidr.contains(cidr.network) || cidr.contains(o.cidr.network))
            {
                return Err(at(format!("{cidr} overlaps {}", other.cidr)));
            }
            subnets.push(Subnet {
                cidr,
                pool,
                routers: s.routers.clone(),
                dns: s.dns.clone(),
                domain: s.domain.trim().trim_start_matches('.').to_string(),
                lease_secs,
                pool_lease_secs,
            });
        }
        let rules = c
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| rules::parse(r).map_err(|e| format!("dhcp.rules[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        for name in &c.interfaces {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                return Err(format!(
                    "dhcp.interfaces: {name:?} is not an interface name"
                ));
            }
        }
        Ok(Settings {
            subnets,
            interfaces: c.interfaces.clone(),
            known_only: c.known_only,
            proxy: c.proxy,
            next_server,
            rules,
            node_base,
            cluster_name: cluster_name.to_string(),
            dns_domain: None,
            several_heads: false,
            share: Default::default(),
        })
    }

    /// The subnet holding `ip`.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.cidr.contains(ip))
    }
}

/// `first-last`, both inside the subnet and neither its network nor its
/// broadcast address.
fn parse_pool(p: &str, cidr: &Cidr) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let (a, b) = p
        .split_once('-')
        .ok_or_else(|| format!("pool {p:?} must be first-last"))?;
    let ip = |s: &str| -> Result<Ipv4Addr, String> {
        s.trim()
            .parse()
            .map_err(|_| format!("pool {p:?}: {s:?} is not an IPv4 address"))
    };
    let (a, b) = (ip(a)?, ip(b)?);
    if u32::from(a) > u32::from(b) {
        return Err(format!("pool {p:?}: first is after last"));
    }
    for x in [a, b] {
        if !cidr.contains(x) {
            return Err(format!("pool {p:?}: {x} is outside {cidr}"));
        }
        if cidr.prefix < 31 && (x == cidr.network || x == cidr.broadcast()) {
            return Err(format!(
                "pool {p:?}: {x} is the network or broadcast address"
            ));
        }
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(advertise: &str) -> NodeBase {
        NodeBase::new(advertise, ([0, 0, 0, 0], 27778).into())
    }

    fn cfg(subnets: Vec<DhcpSubnet>) -> DhcpConfig {
        DhcpConfig {
            subnets,
            ..DhcpConfig::default()
        }
    }

    fn subnet(cidr: &str, pool: &str) -> DhcpSubnet {
        DhcpSubnet {
            cidr: cidr.into(),
            pool: pool.into(),
            ..DhcpSubnet::default()
        }
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("172.16.0.0/22").unwrap();
        assert!(c.contains("172.16.3.255".parse().unwrap()));
        assert!(!c.contains("172.16.4.0".parse().unwrap()));
        assert_eq!(c.mask(), Ipv4Addr::new(255, 255, 252, 0));
        assert!(Cidr::parse("172.16.0.1/24").is_err());
        assert!(Cidr::parse("172.16.0.0/33").is_err());
        assert!(Cidr::parse("172.16.0.0").is_err());
        assert_eq!(
            Cidr::parse("0.0.0.0/0").unwrap().mask(),
            Ipv4Addr::UNSPECIFIED
        );
    }

    #[test]
    fn subnets_are_checked() {
        let ok = cfg(vec![subnet("10.0.0.0/24", "10.0.0.100-10.0.0.199")]);
        let s = Settings::from_config(&ok, base("http://h:27778/"), "demo").unwrap();
        assert_eq!(s.subnets[0].lease_secs, 3600);
        assert_eq!(s.subnets[0].pool_lease_secs, 300);
        assert_eq!(s.node_base.fixed(), Some("http://h:27778"));
        for bad in [
            cfg(vec![subnet("10.0.0.0/24", "10.0.1.1-10.0.1.9")]),
            cfg(vec![subnet("10.0.0.0/24", "10.0.0.9-10.0.0.1")]),
            cfg(vec![subnet("10.0.0.0/24", "10.0.0.0-10.0.0.9")]),
            cfg(vec![subnet("10.0.0.0/24", "10.0.0.1")]),
            cfg(vec![subnet("10.0.0.0/24", ""), subnet("10.0.0.0/16", "")]),
            cfg(vec![subnet("10.0.0.7/24", "")]),
        ] {
            assert!(Settings::check(&bad).is_err(), "{bad:?}");
        }
        let mut c = ok.clone();
        c.rules = vec!["type:Node,colour:red".into()];
        let e = Settings::check(&c).unwrap_err();
        assert!(e.contains("colour"), "{e}");
    }
}
