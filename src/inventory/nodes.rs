//! A node with its interfaces and groups, written in one transaction.
//!
//! SMD spreads a node over three collections (component, Ethernet
//! interfaces, groups), so a client that adds a node with several requests
//! leaves a half-made node behind when a later request is refused (a MAC
//! that belongs to another node). `openchami node add` and `node set
//! --mac/--ip` go through these functions instead: everything or nothing,
//! under the identity rules of [`super::identity`].

use serde::Deserialize;

use super::DomainError;
use super::components::{self, ComponentArrayIn, ComponentIn, parse_xname};
use super::groups::{self, GroupIn, MemberIn, parse_label};
use super::identity::{self, Allow};
use super::interfaces::{parse_id, parse_ip, parse_mac, timestamp};
use super::model::{Component, EthernetInterface, IpAddressMapping};
use super::store::Txn;
use super::xname;

/// `POST /inventory/v1/nodes` body.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct NodeAddIn {
    pub xname: String,
    pub nid: Option<i64>,
    /// Boot MAC first; one interface each.
    pub macs: Vec<String>,
    /// The first MAC's address.
    pub ip: Option<String>,
    pub role: Option<String>,
    pub subrole: Option<String>,
    /// Groups to join (created if missing).
    pub groups: Vec<String>,
    pub state: Option<String>,
    /// Take MACs and addresses other nodes hold.
    pub move_macs: bool,
}

/// `PATCH /inventory/v1/nodes/{xname}` body.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct NodeSetIn {
    /// The node's MACs, boot MAC first: interfaces not named are removed.
    pub macs: Option<Vec<String>>,
    /// The boot interface's address (replaces its addresses).
    pub ip: Option<String>,
    pub move_macs: bool,
}

fn node_id(raw: &str) -> Result<String, DomainError> {
    let (id, kind) = parse_xname(raw)?;
    if !kind.is_node() {
        return Err(DomainError::Invalid(format!(
            "{id} is a {}, not a node",
            kind.as_str()
        )));
    }
    Ok(id)
}

/// Adds a node, its interfaces and its group memberships; 409 if the node
/// exists or a MAC/address belongs to another node (unless `move_macs`).
pub fn add(txn: &mut Txn<'_>, input: &NodeAddIn) -> Result<Component, DomainError> {
    let id = node_id(&input.xname)?;
    if txn.model().component(&id).is_some() {
        return Err(DomainError::Conflict(format!(
            "{id} already exists; change it with `openchami node set` or delete it first"
        )));
    }
    if input.ip.is_some() && input.macs.is_empty() {
        return Err(DomainError::Invalid(
            "an IP address needs a MAC to bind it to".into(),
        ));
    }
    components::post(
        txn,
        &ComponentArrayIn {
            components: vec![ComponentIn {
                id: Some(id.clone()),
                kind: Some("Node".into()),
                state: Some(input.state.clone().unwrap_or_else(|| "Ready".into())),
                enabled: Some(true),
                role: input.role.clone(),
                subrole: input.subrole.clone(),
                nid: input.nid,
                ..Default::default()
            }],
            force: false,
        },
    )?;
    set_interfaces(
        txn,
        &id,
        &NodeSetIn {
            macs: Some(input.macs.clone()),
            ip: input.ip.clone(),
            move_macs: input.move_macs,
        },
    )?;
    for g in &input.groups {
        let label = parse_label(g)?;
        if !txn.model().groups.contains_key(&label) {
            groups::create_group(
                txn,
                &GroupIn {
                    label: Some(label.clone()),
                    ..Default::default()
                },
            )?;
        }
        groups::add_member(
            txn,
            &label,
            &MemberIn {
                id: Some(id.clone()),
            },
        )?;
    }
    txn.model()
        .component(&id)
        .cloned()
        .ok_or_else(|| DomainError::NotFound(format!("no node {id}")))
}

/// Sets a node's MACs and boot address; returns its interfaces, boot MAC
/// first. `macs` replaces the node's interfaces (those kept keep their
/// addresses); `ip` alone needs a node with exactly one interface.
pub fn set_interfaces(
    txn: &mut Txn<'_>,
    raw: &str,
    input: &NodeSetIn,
) -> Result<Vec<EthernetInterface>, DomainError> {
    let id = node_id(raw)?;
    if txn.model().component(&id).is_none() {
        return Err(DomainError::NotFound(format!("no node {id}")));
    }
    let ip = input.ip.as_deref().map(parse_ip).transpose()?;
    let current: Vec<EthernetInterface> = txn
        .model()
        .interfaces_of(&id)
        .into_iter()
        .cloned()
        .collect();
    let macs: Vec<String> = match &input.macs {
        Some(list) => {
            let mut out: Vec<String> = Vec::with_capacity(list.len());
            for m in list {
                let m = parse_mac(m)?;
                if !out.contains(&m) {
                    out.push(m);
                }
            }
            out
        }
        None if ip.is_none() => return Ok(current),
        None => match current.as_slice() {
            [one] => vec![one.mac_address.clone()],
            [] => {
                return Err(DomainError::Invalid(format!(
                    "{id} has no interface to give {} to; name its MAC too",
                    ip.unwrap_or_default()
                )));
            }
            many => {
                return Err(DomainError::Invalid(format!(
                    "{id} has {} interfaces; name the one to give the address to by its MAC",
                    many.len()
                )));
            }
        },
    };
    if ip.is_some() && macs.is_empty() {
        return Err(DomainError::Invalid(
            "an IP address needs a MAC to bind it to".into(),
        ));
    }
    let ids = macs
        .iter()
        .map(|m| parse_id(m))
        .collect::<Result<Vec<_>, _>>()?;
    // Interfaces the node no longer has go first, freeing their addresses.
    if input.macs.is_some() {
        for old in current.iter().filter(|i| !ids.contains(&i.id)) {
            txn.delete_interface(&old.id);
        }
    }
    let allow = Allow::moving(input.move_macs);
    let kind = xname::type_of(&id)
        .map(|t| t.as_str().to_string())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(macs.len());
    for (k, (mac, iid)) in macs.iter().zip(&ids).enumerate() {
        let old = txn.model().interface(iid).cloned();
        let mut want = old.clone().unwrap_or_else(|| EthernetInterface {
            id: iid.clone(),
            description: format!("{id} interface {k}"),
            mac_address: mac.clone(),
            last_update: String::new(),
            component_id: String::new(),
            kind: String::new(),
            ip_addresses: Vec::new(),
        });
        if want.component_id != id {
            // A MAC that moves does not take its old node's addresses along.
            if !want.component_id.is_empty() {
                want.ip_addresses.clear();
            }
            want.component_id = id.clone();
            want.kind = kind.clone();
        }
        if k == 0
            && let Some(ip) = &ip
        {
            let network = want
                .ip_addresses
                .first()
                .map(|m| m.network.clone())
                .unwrap_or_default();
            want.ip_addresses = vec![IpAddressMapping {
                ip_address: ip.clone(),
                network,
            }];
        }
        if old.as_ref() != Some(&want) {
            want.last_update = timestamp(txn.now());
            identity::put(txn, want.clone(), allow)?;
        }
        out.push(want);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Store;

    fn add_in(xname: &str, macs: &[&str], ip: Option<&str>) -> NodeAddIn {
        NodeAddIn {
            xname: xname.into(),
            macs: macs.iter().map(|m| m.to_string()).collect(),
            ip: ip.map(String::from),
            groups: vec!["compute".into()],
            ..Default::default()
        }
    }

    /// Each case starts from x0c0s0b0n0 with 02:…:01 at 10.0.0.1 in group
    /// compute; a refused write must leave exactly that.
    #[tokio::test]
    async fn add_and_set_are_all_or_nothing() {
        enum Op {
            Add(NodeAddIn),
            Set(&'static str, NodeSetIn),
        }
        let set = |macs: Option<&[&str]>, ip: Option<&str>, move_macs: bool| NodeSetIn {
            macs: macs.map(|l| l.iter().map(|m| m.to_string()).collect()),
            ip: ip.map(String::from),
            move_macs,
        };
        // (case, operation, Ok(holder of 02:…:01, holders of 10.0.0.1) or words of the refusal)
        #[allow(clippy::type_complexity)]
        let table: Vec<(&str, Op, Result<(&str, &str), &[&str]>)> = vec![
            (
                "new node, new MAC",
                Op::Add(add_in(
                    "x0c0s1b0n0",
                    &["02:00:00:00:00:02"],
                    Some("10.0.0.2"),
                )),
                Ok(("x0c0s0b0n0", "x0c0s0b0n0")),
            ),
            (
                "MAC of another node",
                Op::Add(add_in("x0c0s1b0n0", &["02:00:00:00:00:01"], None)),
                Err(&["02:00:00:00:00:01", "belongs to x0c0s0b0n0"]),
            ),
            (
                "address of another node",
                Op::Add(add_in(
                    "x0c0s1b0n0",
                    &["02:00:00:00:00:02"],
                    Some("10.0.0.1"),
                )),
                Err(&["10.0.0.1", "held by x0c0s0b0n0"]),
            ),
            (
                "existing node",
                Op::Add(add_in("x0c0s0b0n0", &[], None)),
                Err(&["x0c0s0b0n0 already exists"]),
            ),
            (
                "MAC moved on request",
                Op::Add(NodeAddIn {
                    move_macs: true,
                    ..add_in("x0c0s1b0n0", &["02:00:00:00:00:01"], Some("10.0.0.1"))
                }),
                Ok(("x0c0s1b0n0", "x0c0s1b0n0")),
            ),
            (
                "set a new boot MAC, address kept elsewhere",
                Op::Set(
                    "x0c0s0b0n0",
                    set(Some(&["02:00:00:00:00:09"]), Some("10.0.0.1"), false),
                ),
                Ok(("", "x0c0s0b0n0")),
            ),
            (
                "set the address alone",
                Op::Set("x0c0s0b0n0", set(None, Some("10.0.0.7"), false)),
                Ok(("x0c0s0b0n0", "")),
            ),
            (
                "set another node's MAC",
                Op::Set("x0c0s0b0n0", set(Some(&["02:00:00:00:00:05"]), None, false)),
                Err(&["belongs to x0c0s5b0n0"]),
            ),
            (
                "set on a missing node",
                Op::Set("x0c0s8b0n0", set(None, Some("10.0.0.8"), false)),
                Err(&["no node x0c0s8b0n0"]),
            ),
        ];
        for (case, op, expect) in table {
            let store = Store::open_in_memory().unwrap();
            store
                .write(|t| {
                    add(
                        t,
                        &add_in("x0c0s0b0n0", &["02:00:00:00:00:01"], Some("10.0.0.1")),
                    )?;
                    add(
                        t,
                        &NodeAddIn {
                            groups: vec![],
                            ..add_in("x0c0s5b0n0", &["02:00:00:00:00:05"], None)
                        },
                    )
                })
                .await
                .unwrap();
            let before = store.snapshot().generation;
            let got = store
                .write(move |t| match &op {
                    Op::Add(a) => add(t, a).map(|_| ()),
                    Op::Set(x, s) => set_interfaces(t, x, s).map(|_| ()),
                })
                .await;
            let s = store.snapshot();
            match (expect, got) {
                (Ok((mac_holder, ip_holder)), Ok(())) => {
                    let holder = s
                        .interface("020000000001")
                        .map(|i| i.component_id.clone())
                        .unwrap_or_default();
                    assert_eq!(holder, mac_holder, "{case}");
                    let ip: Vec<_> = s
                        .interfaces_with_ip("10.0.0.1".parse().unwrap())
                        .iter()
                        .map(|i| i.component_id.clone())
                        .collect();
                    assert_eq!(ip.join(","), ip_holder, "{case}");
                }
                (Err(words), Err(e)) => {
                    let msg = e.to_string();
                    for w in words {
                        assert!(msg.contains(w), "{case}: {msg:?} lacks {w:?}");
                    }
                    assert_eq!(s.generation, before, "{case}: a refusal wrote nothing");
                    assert!(s.component("x0c0s1b0n0").is_none(), "{case}");
                }
                (e, g) => panic!("{case}: expected {e:?}, got {g:?}"),
            }
        }
    }
}
