//! Which node is calling, from its address alone.
//!
//! No request parameter names the node: a node gets its own data and never
//! another's. The address (the TCP peer, or what a trusted proxy says, see
//! `http::peer`) is looked up in the live snapshot: first among inventory
//! interface addresses, then among DHCP leases (address → MAC → interface),
//! so a node that got a pool address is still recognised.

use std::net::IpAddr;

use crate::inventory::model::Component;
use crate::inventory::{Model, mac};

/// How a caller was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An inventory interface carries the address.
    Interface,
    /// A DHCP lease of the address names a MAC of the node.
    Lease,
}

/// The node whose address `ip` is, if any. `now` (Unix seconds) decides
/// whether a lease has expired.
pub fn node_by_address(model: &Model, ip: IpAddr, now: i64) -> Option<(&Component, Via)> {
    let by_interface = model
        .interfaces_with_ip(ip)
        .into_iter()
        .filter_map(|i| model.component(&i.component_id))
        .find(|c| c.is_node());
    if let Some(c) = by_interface {
        return Some((c, Via::Interface));
    }
    let lease = model.leases.get(&ip)?;
    if lease.expires.is_some_and(|e| e.timestamp() <= now) {
        return None;
    }
    let id = mac::id_of(&lease.mac).ok()?;
    let iface = model.interfaces.get(&id)?;
    model
        .component(&iface.component_id)
        .filter(|c| c.is_node())
        .map(|c| (c, Via::Lease))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Store;
    use crate::inventory::model::{EthernetInterface, IpAddressMapping, Lease};

    fn iface(mac: &str, comp: &str, ip: &str) -> EthernetInterface {
        EthernetInterface {
            id: mac::id_of(mac).unwrap(),
            description: String::new(),
            mac_address: mac.into(),
            last_update: String::new(),
            component_id: comp.into(),
            kind: String::new(),
            ip_addresses: if ip.is_empty() {
                Vec::new()
            } else {
                vec![IpAddressMapping {
                    ip_address: ip.into(),
                    network: String::new(),
                }]
            },
        }
    }

    #[tokio::test]
    async fn interface_then_lease() {
        let store = Store::open_in_memory().unwrap();
        store
            .write(|t| {
                let mut n = Component::new("x0c0s0b0n0".into(), "Node".into());
                n.nid = Some(1);
                t.put_component(n);
                t.put_component(Component::new("x0c0s1b0".into(), "NodeBMC".into()));
                t.put_component(Component::new("x0c0s1b0n0".into(), "Node".into()));
                t.put_interface(iface("02:00:00:00:00:01", "x0c0s0b0n0", "10.0.0.1"));
                t.put_interface(iface("02:00:00:00:00:02", "x0c0s1b0", "10.0.0.2"));
                t.put_interface(iface("02:00:00:00:00:03", "x0c0s1b0n0", ""));
                t.put_lease(Lease {
                    ip: "10.0.9.3".parse().unwrap(),
                    mac: "02:00:00:00:00:03".into(),
                    expires: None,
                });
                t.put_lease(Lease {
                    ip: "10.0.9.4".parse().unwrap(),
                    mac: "02:00:00:00:00:03".into(),
                    expires: chrono::DateTime::from_timestamp(1000, 0),
                });
                Ok(())
            })
            .await
            .unwrap();
        let s = store.snapshot();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (c, via) = node_by_address(&s, ip("10.0.0.1"), 0).unwrap();
        assert_eq!((c.id.as_str(), via), ("x0c0s0b0n0", Via::Interface));
        assert!(
            node_by_address(&s, ip("10.0.0.2"), 0).is_none(),
            "a BMC is not a node"
        );
        let (c, via) = node_by_address(&s, ip("10.0.9.3"), 0).unwrap();
        assert_eq!((c.id.as_str(), via), ("x0c0s1b0n0", Via::Lease));
        assert!(node_by_address(&s, ip("10.0.9.4"), 999).is_some());
        assert!(
            node_by_address(&s, ip("10.0.9.4"), 1000).is_none(),
            "expired"
        );
        assert!(node_by_address(&s, ip("10.0.0.99"), 0).is_none());
    }
}
