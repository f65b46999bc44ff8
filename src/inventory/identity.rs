//! Which node a MAC or an address identifies: at most one.
//!
//! DHCP answers a MAC with its node's reservation, and cloud-init and the boot
//! scripts recognise a caller by its address. If a MAC could silently change
//! hands or two interfaces could hold one address on one network, the node a
//! request is answered for would depend on write order or map iteration, and
//! a node would boot as another. So every path that writes an interface —
//! the SMD routes, discovery payloads, `import`, `node add/set` — asks these
//! rules first: a MAC bound to one node moves to another only when the caller
//! says so, and an address held by another interface on the same network is
//! refused (or, when moving, taken from it). Every refusal names the node
//! that holds what was asked for, which is what an operator needs to decide.
//!
//! Networks: a mapping's `Network` names the network its address lives on.
//! Two named, different networks may reuse an address (isolated fabrics);
//! an unnamed mapping could be on any network, so it collides with every
//! mapping of the same address.

use std::net::IpAddr;

use super::DomainError;
use super::model::{EthernetInterface, IpAddressMapping};
use super::store::{Model, Txn};

/// Who holds something: a component's xname, or the interface's MAC when the
/// interface belongs to no component.
fn holder(i: &EthernetInterface) -> String {
    if i.component_id.is_empty() {
        format!("unbound interface {}", i.mac_address)
    } else {
        i.component_id.clone()
    }
}

/// Whether two mappings of one address are on the same network.
pub fn same_network(a: &str, b: &str) -> bool {
    a.is_empty() || b.is_empty() || a.eq_ignore_ascii_case(b)
}

fn network_text(n: &str) -> String {
    if n.is_empty() {
        String::new()
    } else {
        format!(" on network {n}")
    }
}

/// What a write may take from other interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allow {
    /// Rebind a MAC that belongs to another component.
    pub mac: bool,
    /// Take addresses other interfaces hold on the same network.
    pub ips: bool,
}

impl Allow {
    /// Nothing moves: every clash is a 409.
    pub const NONE: Allow = Allow {
        mac: false,
        ips: false,
    };
    /// The caller asked to move (`move_macs`): the MAC and its addresses.
    pub const MOVE: Allow = Allow {
        mac: true,
        ips: true,
    };

    pub fn moving(flag: bool) -> Allow {
        if flag { Allow::MOVE } else { Allow::NONE }
    }
}

/// An address that moves from one interface to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The interface that loses the address.
    pub from: String,
    pub ip: String,
}

/// Checks `want` (an interface about to be written) against the model.
///
/// Refused (409) unless `allow` says otherwise: its MAC bound to another
/// component; any of its addresses held by another interface on the same
/// network. Allowed, the MAC moves and the addresses are taken from their
/// holders (returned, for [`put`] to remove). An interface bound to no component may
/// always be claimed: that is how a discovered or leased NIC gets its node.
pub fn check(
    model: &Model,
    want: &EthernetInterface,
    allow: Allow,
) -> Result<Vec<Taken>, DomainError> {
    if let Some(old) = model.interface(&want.id)
        && !old.component_id.is_empty()
        && old.component_id != want.component_id
        && !allow.mac
    {
        let to = if want.component_id.is_empty() {
            "no component".to_string()
        } else {
            want.component_id.clone()
        };
        return Err(DomainError::Conflict(format!(
            "MAC address {} belongs to {}, not {to}: remove it from {} first, or move it with --move-macs (API: move_macs=true)",
            want.mac_address, old.component_id, old.component_id
        )));
    }
    let mut taken = Vec::new();
    for (k, m) in want.ip_addresses.iter().enumerate() {
        let Ok(ip) = m.ip_address.parse::<IpAddr>() else {
            continue;
        };
        if want.ip_addresses[..k].iter().any(|o| {
            o.ip_address.parse::<IpAddr>().ok() == Some(ip) && same_network(&o.network, &m.network)
        }) {
            continue;
        }
        for other in model.interfaces_with_ip(ip) {
            if other.id == want.id {
                continue;
            }
            let clash = other.ip_addresses.iter().any(|o| {
                o.ip_address.parse::<IpAddr>().ok() == Some(ip)
                    && same_network(&o.network, &m.network)
            });
            if !clash {
                continue;
            }
            if !allow.ips {
                return Err(DomainError::Conflict(format!(
                    "IP address {ip}{} is held by {} (interface {}): one address per network belongs to one interface; free it there first, or move it with --move-macs (API: move_macs=true)",
                    network_text(&m.network),
                    holder(other),
                    other.mac_address
                )));
            }
            taken.push(Taken {
                from: other.id.clone(),
                ip: m.ip_address.clone(),
            });
        }
    }
    Ok(taken)
}

/// Writes `want` after [`check`], taking moved addresses from their holders.
pub fn put(txn: &mut Txn<'_>, want: EthernetInterface, allow: Allow) -> Result<(), DomainError> {
    let taken = check(txn.model(), &want, allow)?;
    for t in taken {
        if let Some(old) = txn.model().interface(&t.from).cloned() {
            let mut o = old;
            o.ip_addresses.retain(|m| {
                m.ip_address.parse::<IpAddr>().ok() != t.ip.parse::<IpAddr>().ok()
                    || !same_network(&m.network, network_of(&want, &t.ip))
            });
            o.last_update = super::interfaces::timestamp(txn.now());
            txn.put_interface(o);
        }
    }
    txn.put_interface(want);
    Ok(())
}

fn network_of<'a>(i: &'a EthernetInterface, ip: &str) -> &'a str {
    i.ip_addresses
        .iter()
        .find(|m| m.ip_address == ip)
        .map_or("", |m: &IpAddressMapping| m.network.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Store;

    fn iface(mac: &str, node: &str, ips: &[(&str, &str)]) -> EthernetInterface {
        EthernetInterface {
            id: mac.replace(':', ""),
            description: String::new(),
            mac_address: mac.into(),
            last_update: String::new(),
            component_id: node.into(),
            kind: String::new(),
            ip_addresses: ips
                .iter()
                .map(|(ip, net)| IpAddressMapping {
                    ip_address: (*ip).into(),
                    network: (*net).into(),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn one_mac_one_node_and_one_address_per_network() {
        let store = Store::open_in_memory().unwrap();
        store
            .write(|t| {
                t.put_interface(iface(
                    "02:00:00:00:00:01",
                    "x0c0s0b0n0",
                    &[("10.0.0.1", "internal")],
                ));
                t.put_interface(iface("02:00:00:00:00:02", "", &[("10.0.0.2", "")]));
                Ok::<_, DomainError>(())
            })
            .await
            .unwrap();
        let s = store.snapshot();
        // (case, interface to write, allow_move, Ok(taken) or the words the refusal must hold)
        #[allow(clippy::type_complexity)]
        let table: &[(&str, EthernetInterface, bool, Result<Vec<&str>, &[&str]>)] = &[
            (
                "same record again",
                iface(
                    "02:00:00:00:00:01",
                    "x0c0s0b0n0",
                    &[("10.0.0.1", "internal")],
                ),
                false,
                Ok(vec![]),
            ),
            (
                "MAC of another node",
                iface("02:00:00:00:00:01", "x0c0s1b0n0", &[]),
                false,
                Err(&["02:00:00:00:00:01", "belongs to x0c0s0b0n0", "x0c0s1b0n0"]),
            ),
            (
                "MAC of another node, moved",
                iface("02:00:00:00:00:01", "x0c0s1b0n0", &[]),
                true,
                Ok(vec![]),
            ),
            (
                "unbound MAC is claimed",
                iface("02:00:00:00:00:02", "x0c0s1b0n0", &[("10.0.0.2", "")]),
                false,
                Ok(vec![]),
            ),
            (
                "address on the same network",
                iface(
                    "02:00:00:00:00:03",
                    "x0c0s1b0n0",
                    &[("10.0.0.1", "internal")],
                ),
                false,
                Err(&["10.0.0.1", "network internal", "held by x0c0s0b0n0"]),
            ),
            (
                "address without a network",
                iface("02:00:00:00:00:03", "x0c0s1b0n0", &[("10.0.0.1", "")]),
                false,
                Err(&["10.0.0.1", "held by x0c0s0b0n0"]),
            ),
            (
                "address on another named network",
                iface("02:00:00:00:00:03", "x0c0s1b0n0", &[("10.0.0.1", "hsn")]),
                false,
                Ok(vec![]),
            ),
            (
                "address of an unbound interface",
                iface(
                    "02:00:00:00:00:03",
                    "x0c0s1b0n0",
                    &[("10.0.0.2", "internal")],
                ),
                false,
                Err(&["10.0.0.2", "unbound interface 02:00:00:00:00:02"]),
            ),
            (
                "address taken when moving",
                iface("02:00:00:00:00:03", "x0c0s1b0n0", &[("10.0.0.1", "")]),
                true,
                Ok(vec!["020000000001"]),
            ),
        ];
        for (case, want, allow_move, expect) in table {
            let got = check(&s, want, Allow::moving(*allow_move));
            match (expect, got) {
                (Ok(from), Ok(taken)) => assert_eq!(
                    taken.iter().map(|t| t.from.as_str()).collect::<Vec<_>>(),
                    *from,
                    "{case}"
                ),
                (Err(words), Err(DomainError::Conflict(msg))) => {
                    for w in *words {
                        assert!(msg.contains(w), "{case}: {msg:?} lacks {w:?}");
                    }
                }
                (e, g) => panic!("{case}: expected {e:?}, got {g:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_moved_address_leaves_its_holder() {
        let store = Store::open_in_memory().unwrap();
        store
            .write(|t| {
                t.put_interface(iface(
                    "02:00:00:00:00:01",
                    "x0c0s0b0n0",
                    &[("10.0.0.1", ""), ("10.1.0.1", "hsn")],
                ));
                put(
                    t,
                    iface("02:00:00:00:00:03", "x0c0s1b0n0", &[("10.0.0.1", "")]),
                    Allow::MOVE,
                )
            })
            .await
            .unwrap();
        let s = store.snapshot();
        let old = s.interface("020000000001").unwrap();
        assert_eq!(old.ip_addresses.len(), 1);
        assert_eq!(old.ip_addresses[0].ip_address, "10.1.0.1");
        let holders: Vec<_> = s
            .interfaces_with_ip("10.0.0.1".parse().unwrap())
            .iter()
            .map(|i| i.component_id.clone())
            .collect();
        assert_eq!(holders, vec!["x0c0s1b0n0"]);
    }
}
