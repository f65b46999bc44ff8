//! The base URL a node is sent to for the node listener.
//!
//! Booting firmware has no name resolution worth the name: iPXE resolves a
//! host name only through the DNS server DHCP gave it, and a head node's
//! own name is in no DNS a fresh cluster network has. So every URL handed
//! to a node (DHCP's iPXE boot file, the script's retry `chain`,
//! `ds=nocloud-net;s=…`, the vendor-data `#include`, `autoexec.ipxe`) is
//! built from an address the node has just shown it can reach: the
//! address of the interface its DHCP request arrived on, or the local
//! address of the TCP connection or UDP exchange it is talking over. The
//! answer is per request, so a head node serving several networks sends
//! each node its own side's address. A node listener bound to one specific
//! address is sent as that address; `node.advertise` overrides both (a
//! reverse proxy, a DNS name the site does serve).
//!
//! Pure: the adapters pass the local address in.

use std::net::{IpAddr, SocketAddr};

/// How nodes reach the node listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBase {
    /// `node.advertise` (without a trailing slash), else the listener's
    /// own specific address; `None`: per request.
    fixed: Option<String>,
    /// The node listener's port.
    port: u16,
}

impl NodeBase {
    /// From `node.advertise` (empty: derive) and the main node listener's
    /// bound address.
    pub fn new(advertise: &str, listen: SocketAddr) -> NodeBase {
        let a = advertise.trim().trim_end_matches('/');
        let fixed = if !a.is_empty() {
            Some(a.to_string())
        } else if !listen.ip().is_unspecified() {
            Some(url(listen.ip(), listen.port()))
        } else {
            None
        };
        NodeBase {
            fixed,
            port: listen.port(),
        }
    }

    /// The URL every node is sent, when it does not depend on the node.
    pub fn fixed(&self) -> Option<&str> {
        self.fixed.as_deref()
    }

    /// The node listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base URL for a node that reached us at `local` (the address of
    /// our interface or socket facing it).
    pub fn for_local(&self, local: IpAddr) -> String {
        match &self.fixed {
            Some(f) => f.clone(),
            None => url(local, self.port),
        }
    }
}

fn url(ip: IpAddr, port: u16) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => format!("http://{v4}:{port}"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Why `advertise` cannot be reached by a booting node, if it cannot:
/// a host name (no DNS at boot) or a loopback or unspecified address.
pub fn unreachable_advertise(advertise: &str) -> Option<String> {
    let rest = advertise
        .split_once("://")
        .map_or(advertise, |(_, r)| r)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.rsplit_once(':').map_or(rest, |(h, _)| h),
    };
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() || ip.is_unspecified() => Some(format!(
            "{ip} is not an address a node can reach; use the head node's address on the node network"
        )),
        Ok(_) => None,
        Err(_) => Some(format!(
            "{host:?} is a host name, and booting nodes resolve no names; use the head node's IP address on the node network (or leave node.advertise unset)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_follows_the_local_address_unless_advertised() {
        let v4: IpAddr = "10.1.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.0.1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:27778".parse().unwrap();
        let one: SocketAddr = "10.9.0.1:8080".parse().unwrap();
        for (advertise, listen, local, want) in [
            ("", any, v4, "http://10.1.0.1:27778"),
            ("", any, mapped, "http://10.1.0.1:27778"),
            ("", any, v6, "http://[fd00::1]:27778"),
            ("  ", any, v4, "http://10.1.0.1:27778"),
            ("", one, v4, "http://10.9.0.1:8080"),
            (
                "http://172.16.0.254:8081/",
                any,
                v4,
                "http://172.16.0.254:8081",
            ),
            (
                "http://172.16.0.254:8081",
                one,
                v4,
                "http://172.16.0.254:8081",
            ),
        ] {
            assert_eq!(
                NodeBase::new(advertise, listen).for_local(local),
                want,
                "{advertise:?} {listen} {local}"
            );
        }
    }

    #[test]
    fn advertised_names_and_loopback_are_unreachable() {
        for (advertise, bad) in [
            ("http://172.16.0.254:27778", false),
            ("http://[fd00::1]:27778/", false),
            ("http://head:27778", true),
            ("http://head.cluster.example", true),
            ("http://127.0.0.1:27778", true),
            ("http://0.0.0.0:27778", true),
            ("http://[::1]:27778", true),
        ] {
            assert_eq!(
                unreachable_advertise(advertise).is_some(),
                bad,
                "{advertise}"
            );
        }
    }
}
