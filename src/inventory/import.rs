//! Loading a whole cluster description in one transaction.
//!
//! The file format is `ochami discover static`'s, in both its shapes, so
//! sites migrate their files as they are: the current one (BMCs listed once
//! under a top-level `bmcs:`, nodes referring to theirs with `bmc:`, group
//! memberships as `groups:` lists) and the deprecated one (each node carrying
//! its BMC's `bmc_mac`/`bmc_ip`/`bmc_fqdn` and a `group`). The shape is
//! recognised from the file itself: a `bmcs:` list or a node's `bmc:` key
//! means the current one, and then the deprecated per-node BMC keys are
//! refused rather than half-applied. Where ochami makes hundreds of requests,
//! each of which can fail half-way, this applies the file atomically and
//! idempotently: records already as described are left alone, so a second
//! run reports that nothing changed.

use serde::{Deserialize, Serialize};

use super::components::parse_xname;
use super::enums::{self, HmsType};
use super::groups::parse_label;
use super::identity::{self, Allow};
use super::model::{
    Component, EthernetInterface, Group, IpAddressMapping, Members, RedfishEndpoint,
};
use super::store::Txn;
use super::{DomainError, mac, xname};

/// The keys each level of the file may hold; anything else is a typo that
/// would otherwise be ignored (a misspelt `bmc_mac` silently drops the BMC).
const TOP_KEYS: &[&str] = &["nodes", "bmcs"];
const BMC_KEYS: &[&str] = &["xname", "name", "mac", "ip", "fqdn"];
/// Node keys of the current format (`bmcs:` at the top).
const NODE_KEYS: &[&str] = &[
    "name",
    "nid",
    "xname",
    "bmc",
    "groups",
    "role",
    "subrole",
    "interfaces",
];
/// Node keys of the deprecated format (each node describes its BMC).
const OLD_NODE_KEYS: &[&str] = &[
    "name",
    "nid",
    "xname",
    "bmc_mac",
    "bmc_ip",
    "bmc_fqdn",
    "bmc_xname",
    "group",
    "groups",
    "role",
    "subrole",
    "interfaces",
];
const INTERFACE_KEYS: &[&str] = &["mac_addr", "description", "ip_addrs"];
/// `network` is the deprecated spelling of `name`.
const IP_KEYS: &[&str] = &["name", "network", "ip_addr"];

/// Which of ochami's two static-discovery shapes a file has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// `bmcs:` at the top, nodes referring to them with `bmc:`.
    #[default]
    Current,
    /// Only `nodes:`, each with its BMC's `bmc_mac`, `bmc_ip`, ….
    Deprecated,
}

impl Format {
    /// A `bmcs:` list or any node's `bmc:` key means the current format.
    pub fn of(v: &serde_json::Value) -> Format {
        let has_bmcs = v.get("bmcs").is_some();
        let refers = v
            .get("nodes")
            .and_then(|n| n.as_array())
            .is_some_and(|n| n.iter().any(|n| n.get("bmc").is_some()));
        if has_bmcs || refers {
            Format::Current
        } else {
            Format::Deprecated
        }
    }
}

fn unknown_keys(
    v: &serde_json::Value,
    known: &[&str],
    at: &str,
    hint: &str,
) -> Result<(), DomainError> {
    let Some(map) = v.as_object() else {
        return Err(DomainError::Invalid(format!("{at}: expected a mapping")));
    };
    if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(DomainError::Invalid(format!(
            "{at}: unknown key {k:?}{hint} (known keys: {})",
            known.join(", ")
        )));
    }
    Ok(())
}

/// Where an entry sits, for messages: `nodes[2] (x1000c1s7b2n0)`.
fn entry(list: &str, k: usize, v: &serde_json::Value) -> String {
    let name = v
        .get("xname")
        .and_then(|x| x.as_str())
        .filter(|x| !x.trim().is_empty())
        .map(str::to_string)
        .or_else(|| {
            v.get("name")
                .and_then(|x| x.as_str())
                .map(|n| format!("name {n}, no xname"))
        })
        .unwrap_or_else(|| "no xname".into());
    format!("{list}[{k}] ({name})")
}

/// Checks a cluster file's shape (keys folded to lower case) and decodes
/// it. Every refusal names the entry by its index and xname.
pub fn parse(v: &serde_json::Value) -> Result<ClusterIn, DomainError> {
    unknown_keys(v, TOP_KEYS, "cluster file", "")?;
    let format = Format::of(v);
    for list in TOP_KEYS {
        let Some(items) = v.get(*list).filter(|x| !x.is_null()) else {
            continue;
        };
        let Some(items) = items.as_array() else {
            return Err(DomainError::Invalid(format!("{list}: expected a list")));
        };
        for (k, item) in items.iter().enumerate() {
            let at = entry(list, k, item);
            let (known, hint) = match (*list, format) {
                ("nodes", Format::Current) => (
                    NODE_KEYS,
                    " in a file with bmcs: (a node's BMC belongs in bmcs:, its groups in groups:)",
                ),
                ("nodes", Format::Deprecated) => (OLD_NODE_KEYS, ""),
                _ => (BMC_KEYS, ""),
            };
            // The hint only helps for the deprecated format's own keys.
            let old_key = item.as_object().is_some_and(|m| {
                m.keys()
                    .any(|k| !known.contains(&k.as_str()) && OLD_NODE_KEYS.contains(&k.as_str()))
            });
            unknown_keys(item, known, &at, if old_key { hint } else { "" })?;
            if item
                .get("xname")
                .and_then(|x| x.as_str())
                .is_none_or(|x| x.trim().is_empty())
            {
                return Err(DomainError::Invalid(format!("{at}: xname is required")));
            }
            let ifaces = item.get("interfaces").and_then(|x| x.as_array());
            for (j, i) in ifaces.into_iter().flatten().enumerate() {
                let at = format!("{at} interfaces[{j}]");
                unknown_keys(i, INTERFACE_KEYS, &at, "")?;
                let ips = i.get("ip_addrs").and_then(|x| x.as_array());
                for (n, ip) in ips.into_iter().flatten().enumerate() {
                    let at = format!("{at} ip_addrs[{n}]");
                    unknown_keys(ip, IP_KEYS, &at, "")?;
                    if ip.get("name").is_some() && ip.get("network").is_some() {
                        return Err(DomainError::Invalid(format!(
                            "{at}: both name and network (network is the old spelling of name)"
                        )));
                    }
                }
            }
            // Decode the entry alone, so a wrong type is reported here too.
            let decoded = if *list == "nodes" {
                serde_json::from_value::<NodeIn>(item.clone()).map(|_| ())
            } else {
                serde_json::from_value::<BmcIn>(item.clone()).map(|_| ())
            };
            decoded.map_err(|e| DomainError::Invalid(format!("{at}: {e}")))?;
        }
    }
    let mut cluster: ClusterIn = serde_json::from_value(v.clone())
        .map_err(|e| DomainError::Invalid(format!("cluster file: {e}")))?;
    cluster.format = format;
    Ok(cluster)
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ClusterIn {
    pub bmcs: Vec<BmcIn>,
    pub nodes: Vec<NodeIn>,
    /// Set by [`parse`] from the file's keys.
    #[serde(skip)]
    pub format: Format,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct BmcIn {
    pub xname: String,
    pub name: Option<String>,
    pub mac: Option<String>,
    pub ip: Option<String>,
    /// Defaults to the IP address, else the xname.
    pub fqdn: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct NodeIn {
    pub name: Option<String>,
    pub nid: Option<i64>,
    pub xname: String,
    /// A `bmcs[]` entry's `name` or `xname` (current format).
    pub bmc: Option<String>,
    pub bmc_mac: Option<String>,
    pub bmc_ip: Option<String>,
    pub bmc_fqdn: Option<String>,
    pub bmc_xname: Option<String>,
    pub group: Option<String>,
    pub groups: Vec<String>,
    pub role: Option<String>,
    pub subrole: Option<String>,
    pub interfaces: Vec<InterfaceIn>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct InterfaceIn {
    pub mac_addr: String,
    pub description: Option<String>,
    pub ip_addrs: Vec<IpIn>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct IpIn {
    #[serde(alias = "network")]
    pub name: Option<String>,
    pub ip_addr: String,
}

/// What an import did, per kind of record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Counts {
    pub components: usize,
    pub interfaces: usize,
    pub endpoints: usize,
    pub groups: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Summary {
    pub nodes: usize,
    pub created: Counts,
    pub updated: Counts,
    /// Records created or updated; 0 means the inventory already matched.
    pub changed: usize,
}

fn ip(s: &str, what: &str) -> Result<String, DomainError> {
    s.trim()
        .parse::<std::net::IpAddr>()
        .map(|a| a.to_string())
        .map_err(|_| DomainError::Invalid(format!("{what}: invalid IP address {s:?}")))
}

fn mac_of(s: &str, what: &str) -> Result<String, DomainError> {
    mac::normalize(s).map_err(|e| DomainError::Invalid(format!("{what}: {e}")))
}

enum Outcome {
    Created,
    Updated,
    Same,
}

fn tally(o: Outcome, created: &mut usize, updated: &mut usize) {
    match o {
        Outcome::Created => *created += 1,
        Outcome::Updated => *updated += 1,
        Outcome::Same => {}
    }
}

/// Puts an interface unless an equal one (ignoring `LastUpdate`) exists,
/// under the identity rules (a MAC or address held by another node is a
/// conflict unless `allow` moves it).
fn put_interface(
    txn: &mut Txn<'_>,
    mut want: EthernetInterface,
    allow: Allow,
) -> Result<Outcome, DomainError> {
    let old = txn.model().interfaces.get(&want.id).cloned();
    if let Some(old) = &old {
        let mut cmp = want.clone();
        cmp.last_update = old.last_update.clone();
        if cmp == **old {
            return Ok(Outcome::Same);
        }
    }
    want.last_update = txn.now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    identity::put(txn, want, allow)?;
    Ok(if old.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    })
}

/// A BMC to create or update: from `bmcs:` or from a node's old-format keys.
struct BmcRow {
    xname: String,
    name: Option<String>,
    mac: Option<String>,
    ip: Option<String>,
    fqdn: Option<String>,
}

/// Applies a cluster description; all of it or, on any error, nothing.
/// A MAC or address that belongs to another node is refused unless
/// `move_macs`, which moves it to the node the file names.
pub fn apply(
    txn: &mut Txn<'_>,
    input: &ClusterIn,
    move_macs: bool,
) -> Result<Summary, DomainError> {
    let allow = Allow::moving(move_macs);
    let mut s = Summary {
        nodes: input.nodes.len(),
        ..Default::default()
    };
    // BMCs: the explicit list, then those implied by nodes.
    let mut bmcs: Vec<BmcRow> = Vec::new();
    // bmcs[].name and .xname → xname, for nodes' `bmc:` references.
    let mut refs: std::collections::HashMap<String, String> = Default::default();
    for (k, b) in input.bmcs.iter().enumerate() {
        let (id, kind) = parse_xname(&b.xname)?;
        if !kind.is_controller() {
            return Err(DomainError::Invalid(format!(
                "bmcs[{k}] ({id}): a {}, not a controller",
                kind.as_str()
            )));
        }
        if bmcs.iter().any(|r| r.xname == id) {
            return Err(DomainError::Invalid(format!(
                "bmcs[{k}] ({id}): listed twice"
            )));
        }
        if let Some(n) = b.name.as_deref().filter(|n| !n.trim().is_empty())
            && let Some(other) = refs.insert(n.to_string(), id.clone())
            && other != id
        {
            return Err(DomainError::Invalid(format!(
                "bmcs[{k}] ({id}): name {n:?} is also {other}'s"
            )));
        }
        refs.insert(id.clone(), id.clone());
        bmcs.push(BmcRow {
            xname: id,
            name: b.name.clone(),
            mac: b.mac.clone(),
            ip: b.ip.clone(),
            fqdn: b.fqdn.clone(),
        });
    }
    let mut bmc_ids: std::collections::HashSet<String> =
        bmcs.iter().map(|b| b.xname.clone()).collect();
    let mut nodes = Vec::with_capacity(input.nodes.len());
    for (k, n) in input.nodes.iter().enumerate() {
        let (id, kind) = parse_xname(&n.xname)?;
        if !kind.is_node() {
            return Err(DomainError::Invalid(format!(
                "node {id} is a {}, not a node",
                kind.as_str()
            )));
        }
        let at = || format!("nodes[{k}] ({id})");
        let parent = xname::parent(&id);
        // A node's BMC is its parent in the xname hierarchy; a reference
        // or an old-format bmc_xname may only confirm it.
        let named = match (&n.bmc, &n.bmc_xname) {
            (Some(r), _) => Some(refs.get(r.trim()).cloned().ok_or_else(|| {
                DomainError::Invalid(format!("{}: bmc {r:?} is not in bmcs:", at()))
            })?),
            (None, Some(x)) => Some(parse_xname(x)?.0),
            (None, None) => None,
        };
        if let Some(named) = &named
            && parent.as_ref() != Some(named)
        {
            return Err(DomainError::Invalid(format!(
                "{}: its BMC is {}, not {named} (a node's BMC is its parent xname)",
                at(),
                parent.as_deref().unwrap_or("none")
            )));
        }
        if n.bmc_mac.is_some() || n.bmc_ip.is_some() || n.bmc_fqdn.is_some() {
            let bmc = parent
                .clone()
                .ok_or_else(|| DomainError::Invalid(format!("node {id} has no BMC xname")))?;
            if bmc_ids.insert(bmc.clone()) {
                bmcs.push(BmcRow {
                    xname: bmc,
                    name: n.name.clone(),
                    mac: n.bmc_mac.clone(),
                    ip: n.bmc_ip.clone(),
                    fqdn: n.bmc_fqdn.clone(),
                });
            }
        }
        nodes.push((id, n));
    }

    // FQDN (lower case) → endpoint, to refuse clashes without a scan per BMC.
    let mut fqdns: std::collections::HashMap<String, String> = txn
        .model()
        .redfish_endpoints
        .values()
        .map(|e| (e.fqdn.to_lowercase(), e.id.clone()))
        .collect();
    let mut comps = Vec::new();
    for BmcRow {
        xname: id,
        name,
        mac: bmac,
        ip: bip,
        fqdn,
    } in &bmcs
    {
        let kind = xname::type_of(id).unwrap_or(HmsType::NodeBMC);
        let comp = match txn.model().component(id) {
            Some(c) if c.enabled == Some(true) => None,
            Some(c) => Some((
                Component {
                    enabled: Some(true),
                    ..c.clone()
                },
                false,
            )),
            None => {
                let mut c = Component::new(id.clone(), kind.as_str().into());
                c.state = "Ready".into();
                Some((c, true))
            }
        };
        if let Some((c, new)) = comp {
            tally(
                if new {
                    Outcome::Created
                } else {
                    Outcome::Updated
                },
                &mut s.created.components,
                &mut s.updated.components,
            );
            comps.push(c);
        }
        let bip = bip.as_deref().map(|a| ip(a, id)).transpose()?;
        let bmac = bmac.as_deref().map(|m| mac_of(m, id)).transpose()?;
        let old = txn.model().redfish_endpoint(id).cloned();
        let mut ep = old.clone().unwrap_or_else(|| RedfishEndpoint {
            id: id.clone(),
            kind: kind.as_str().into(),
            name: String::new(),
            hostname: String::new(),
            domain: String::new(),
            fqdn: String::new(),
            enabled: true,
            uuid: String::new(),
            user: String::new(),
            password: String::new(),
            use_ssdp: false,
            mac_required: false,
            mac_addr: String::new(),
            ip_address: String::new(),
            rediscover_on_update: false,
            template_id: String::new(),
            discovery_info: Default::default(),
            details: Default::default(),
            services: Vec::new(),
        });
        if let Some(n) = name {
            ep.name = n.clone();
        }
        if let Some(a) = &bip {
            ep.fqdn = a.clone();
            ep.hostname = a.clone();
            ep.ip_address = a.clone();
        }
        if let Some(f) = fqdn.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            ep.fqdn = f.to_string();
            ep.hostname = f.to_string();
        }
        if let Some(m) = &bmac {
            ep.mac_addr = m.clone();
        }
        if ep.fqdn.is_empty() {
            ep.fqdn = id.clone();
            ep.hostname = id.clone();
        }
        let fqdn_key = ep.fqdn.to_lowercase();
        if let Some(other) = fqdns.get(&fqdn_key).filter(|other| **other != ep.id) {
            return Err(DomainError::Conflict(format!(
                "{}: FQDN {} is already used by {other}",
                ep.id, ep.fqdn
            )));
        }
        if let Some(old) = &old {
            fqdns.remove(&old.fqdn.to_lowercase());
        }
        fqdns.insert(fqdn_key, ep.id.clone());
        if old.as_ref() != Some(&ep) {
            tally(
                if old.is_some() {
                    Outcome::Updated
                } else {
                    Outcome::Created
                },
                &mut s.created.endpoints,
                &mut s.updated.endpoints,
            );
            txn.put_redfish_endpoint(ep);
        }
        if let Some(m) = bmac {
            let want = EthernetInterface {
                id: mac::id_of(&m).map_err(|e| DomainError::Invalid(e.to_string()))?,
                description: format!("{id} BMC"),
                mac_address: m,
                last_update: String::new(),
                component_id: id.clone(),
                kind: kind.as_str().into(),
                ip_addresses: bip
                    .iter()
                    .map(|a| IpAddressMapping {
                        ip_address: a.clone(),
                        network: String::new(),
                    })
                    .collect(),
            };
            let o = put_interface(txn, want, allow)?;
            tally(o, &mut s.created.interfaces, &mut s.updated.interfaces);
        }
    }

    for (id, n) in &nodes {
        let role = match n.role.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => Some(
                enums::canonical_role(r)
                    .ok_or_else(|| DomainError::Invalid(format!("{id}: invalid role {r:?}")))?,
            ),
            None => None,
        };
        let sub_role = match n.subrole.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => Some(
                enums::canonical_sub_role(r)
                    .ok_or_else(|| DomainError::Invalid(format!("{id}: invalid subrole {r:?}")))?,
            ),
            None => None,
        };
        if let Some(nid) = n.nid
            && nid < 0
        {
            return Err(DomainError::Invalid(format!("{id}: NID {nid} is negative")));
        }
        match txn.model().component(id) {
            Some(old) => {
                let mut c = old.clone();
                if n.nid.is_some() {
                    c.nid = n.nid;
                }
                if role.is_some() {
                    c.role = role;
                }
                if sub_role.is_some() {
                    c.sub_role = sub_role;
                }
                if c != *old {
                    s.updated.components += 1;
                    comps.push(c);
                }
            }
            None => {
                let mut c = Component::new(id.clone(), HmsType::Node.as_str().into());
                c.state = "Ready".into();
                c.nid = n.nid;
                c.role = role.or_else(|| Some("Compute".into()));
                c.sub_role = sub_role;
                c.net_type = Some("Sling".into());
                c.arch = Some("X86".into());
                c.class = Some("River".into());
                s.created.components += 1;
                comps.push(c);
            }
        }
    }
    super::components::put_all(txn, comps)?;

    // Group label → nodes this file puts in it.
    let mut wanted: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (id, n) in &nodes {
        for (k, i) in n.interfaces.iter().enumerate() {
            let m = mac_of(&i.mac_addr, id)?;
            let ips = i
                .ip_addrs
                .iter()
                .map(|a| {
                    Ok(IpAddressMapping {
                        ip_address: ip(&a.ip_addr, id)?,
                        network: a.name.clone().unwrap_or_default(),
                    })
                })
                .collect::<Result<Vec<_>, DomainError>>()?;
            let description = i.description.clone().unwrap_or_else(|| match &n.name {
                Some(name) => format!("{name} interface {k}"),
                None => format!("{id} interface {k}"),
            });
            let want = EthernetInterface {
                id: mac::id_of(&m).map_err(|e| DomainError::Invalid(e.to_string()))?,
                description,
                mac_address: m,
                last_update: String::new(),
                component_id: id.clone(),
                kind: HmsType::Node.as_str().into(),
                ip_addresses: ips,
            };
            let o = put_interface(txn, want, allow)?;
            tally(o, &mut s.created.interfaces, &mut s.updated.interfaces);
        }
        for label in n
            .group
            .iter()
            .chain(n.groups.iter())
            .filter(|g| !g.trim().is_empty())
        {
            wanted
                .entry(parse_label(label)?)
                .or_default()
                .push(id.clone());
        }
    }
    // Each group is merged once, however many nodes join it.
    for (label, ids) in wanted {
        match txn.model().groups.get(&label).cloned() {
            Some(mut g) => {
                let before = g.members.ids.len();
                g.members.ids.extend(ids);
                g.members.ids.sort();
                g.members.ids.dedup();
                if g.members.ids.len() != before {
                    s.updated.groups += 1;
                    txn.put_group(g);
                }
            }
            None => {
                let mut ids = ids;
                ids.sort();
                ids.dedup();
                s.created.groups += 1;
                txn.put_group(Group {
                    label,
                    description: String::new(),
                    tags: Vec::new(),
                    exclusive_group: String::new(),
                    members: Members { ids },
                });
            }
        }
    }
    let c = &s.created;
    let u = &s.updated;
    s.changed = c.components
        + c.interfaces
        + c.endpoints
        + c.groups
        + u.components
        + u.interfaces
        + u.endpoints
        + u.groups;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Store;

    fn cluster() -> ClusterIn {
        serde_json::from_value(serde_json::json!({
            "nodes": [
                {"name": "node01", "nid": 1, "xname": "x1000c1s7b0n0", "bmc_mac": "de:ca:fc:0f:ee:ee",
                 "bmc_ip": "172.16.0.101", "group": "compute",
                 "interfaces": [{"mac_addr": "de:ad:be:ee:ee:f1", "ip_addrs": [{"name": "internal", "ip_addr": "172.16.0.1"}]}]},
                {"name": "node02", "nid": 2, "xname": "x1000c1s7b1n0", "bmc_mac": "de:ca:fc:0f:ee:ef",
                 "bmc_ip": "172.16.0.102", "group": "compute",
                 "interfaces": [{"mac_addr": "de:ad:be:ee:ee:f2", "ip_addrs": [{"name": "internal", "ip_addr": "172.16.0.2"}]}]}
            ]
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn import_is_idempotent() {
        let store = Store::open_in_memory().unwrap();
        let first = store.write(|t| apply(t, &cluster(), false)).await.unwrap();
        assert_eq!(first.created.components, 4, "two nodes and two BMCs");
        assert_eq!(first.created.interfaces, 4);
        assert_eq!(first.created.endpoints, 2);
        assert_eq!(first.created.groups, 1);
        assert_eq!(first.updated, Counts::default(), "nothing existed before");
        assert_eq!(first.changed, 11);
        let generation = store.snapshot().generation;
        let second = store.write(|t| apply(t, &cluster(), false)).await.unwrap();
        assert_eq!(second.changed, 0, "{second:?}");
        assert_eq!(
            store.snapshot().generation,
            generation,
            "nothing was written"
        );
        let s = store.snapshot();
        assert_eq!(
            s.groups["compute"].members.ids,
            vec!["x1000c1s7b0n0", "x1000c1s7b1n0"]
        );
        assert_eq!(s.interfaces["deadbeeeeef1"].component_id, "x1000c1s7b0n0");
    }

    #[tokio::test]
    async fn a_bad_record_changes_nothing() {
        let store = Store::open_in_memory().unwrap();
        let mut c = cluster();
        c.nodes[1].interfaces[0].mac_addr = "not-a-mac".into();
        assert!(store.write(move |t| apply(t, &c, false)).await.is_err());
        assert!(store.snapshot().components.is_empty());
        let mut c = cluster();
        c.nodes[1].nid = Some(1);
        assert!(
            store.write(move |t| apply(t, &c, false)).await.is_err(),
            "duplicate NID"
        );
        assert!(store.snapshot().components.is_empty());
    }

    /// Files refused before anything is written, and what the refusal names.
    #[test]
    fn the_file_shape_is_checked_by_entry() {
        use serde_json::json;
        let node = |extra: serde_json::Value| {
            let mut n = json!({"xname": "x1000c1s7b0n0", "nid": 1});
            for (k, v) in extra.as_object().unwrap() {
                n[k] = v.clone();
            }
            n
        };
        let table = [
            ("fine", json!({"nodes": [node(json!({}))]}), ""),
            (
                "unknown top-level key",
                json!({"nodes": [], "node": []}),
                "cluster file: unknown key \"node\"",
            ),
            (
                "misspelt node key",
                json!({"nodes": [node(json!({})), node(json!({"xname": "x1000c1s7b1n0", "bmc_macc": "x"}))]}),
                "nodes[1] (x1000c1s7b1n0): unknown key \"bmc_macc\"",
            ),
            (
                "misspelt xname",
                json!({"nodes": [{"name": "node01", "x_name": "x1000c1s7b0n0"}]}),
                "nodes[0] (name node01, no xname): unknown key \"x_name\"",
            ),
            (
                "missing xname",
                json!({"nodes": [{"name": "node01"}]}),
                "nodes[0] (name node01, no xname): xname is required",
            ),
            (
                "misspelt interface key",
                json!({"nodes": [node(json!({"interfaces": [{"mac": "x"}]}))]}),
                "nodes[0] (x1000c1s7b0n0) interfaces[0]: unknown key \"mac\"",
            ),
            (
                "misspelt address key",
                json!({"nodes": [node(json!({"interfaces": [{"mac_addr": "02:00:00:00:00:01", "ip_addrs": [{"ip": "10.0.0.1"}]}]}))]}),
                "nodes[0] (x1000c1s7b0n0) interfaces[0] ip_addrs[0]: unknown key \"ip\"",
            ),
            (
                "wrong type",
                json!({"nodes": [node(json!({"nid": "one"}))]}),
                "nodes[0] (x1000c1s7b0n0): invalid type",
            ),
            (
                "misspelt BMC key",
                json!({"bmcs": [{"xname": "x1000c1s7b0", "ipaddr": "10.0.0.1"}]}),
                "bmcs[0] (x1000c1s7b0): unknown key \"ipaddr\"",
            ),
            (
                "current format",
                json!({"bmcs": [{"name": "b0", "xname": "x1000c1s7b0", "fqdn": "b0.lab"}],
                       "nodes": [node(json!({"bmc": "b0", "groups": ["compute"]}))]}),
                "",
            ),
            (
                "current format, a node's bmc: alone",
                json!({"nodes": [node(json!({"bmc": "x1000c1s7b0"}))]}),
                "",
            ),
            (
                "deprecated format with every BMC key",
                json!({"nodes": [node(json!({"bmc_mac": "02:00:00:00:00:01", "bmc_ip": "10.0.0.1",
                       "bmc_fqdn": "b0.lab", "bmc_xname": "x1000c1s7b0", "group": "compute"}))]}),
                "",
            ),
            (
                "deprecated key in a file with bmcs:",
                json!({"bmcs": [], "nodes": [node(json!({})), node(json!({"xname": "x1000c1s7b1n0", "bmc_ip": "10.0.0.1"}))]}),
                "nodes[1] (x1000c1s7b1n0): unknown key \"bmc_ip\" in a file with bmcs:",
            ),
            (
                "group (a string) next to a bmc: reference",
                json!({"nodes": [node(json!({"bmc": "x1000c1s7b0", "group": "compute"}))]}),
                "nodes[0] (x1000c1s7b0n0): unknown key \"group\" in a file with bmcs:",
            ),
            (
                "network is name's old spelling",
                json!({"nodes": [node(json!({"interfaces": [{"mac_addr": "02:00:00:00:00:01",
                       "ip_addrs": [{"network": "internal", "ip_addr": "10.0.0.1"}]}]}))]}),
                "",
            ),
            (
                "both name and network",
                json!({"nodes": [node(json!({"interfaces": [{"mac_addr": "02:00:00:00:00:01",
                       "ip_addrs": [{"name": "a", "network": "b", "ip_addr": "10.0.0.1"}]}]}))]}),
                "nodes[0] (x1000c1s7b0n0) interfaces[0] ip_addrs[0]: both name and network",
            ),
            (
                "groups not a list",
                json!({"bmcs": [], "nodes": [node(json!({"groups": "compute"}))]}),
                "nodes[0] (x1000c1s7b0n0): invalid type",
            ),
        ];
        for (case, file, want) in table {
            match parse(&file) {
                Ok(_) => assert_eq!(want, "", "{case}: accepted"),
                Err(e) => {
                    assert!(!want.is_empty(), "{case}: {e}");
                    assert!(e.to_string().starts_with(want), "{case}: {e}");
                }
            }
        }
    }

    fn yaml_file(path: &str) -> serde_json::Value {
        let dir = env!("CARGO_MANIFEST_DIR");
        let text = std::fs::read_to_string(format!("{dir}/{path}")).unwrap();
        serde_yaml_ng::from_str(&text).unwrap()
    }

    /// The example in the current format and the same cluster in the
    /// deprecated one give one inventory, and each is a no-op after the other.
    #[tokio::test]
    async fn both_formats_give_one_inventory() {
        let current = parse(&yaml_file("examples/cluster.yaml")).unwrap();
        let old = parse(&yaml_file("tests/fixtures/cluster-deprecated.yaml")).unwrap();
        assert_eq!(current.format, Format::Current);
        assert_eq!(old.format, Format::Deprecated);
        let mut views = Vec::new();
        for (first, second) in [(&current, &old), (&old, &current)] {
            let store = Store::open_in_memory().unwrap();
            let (a, b) = (first.clone(), second.clone());
            let s = store.write(move |t| apply(t, &a, false)).await.unwrap();
            assert_eq!(s.created.components, 8, "{:?}", first.format);
            assert_eq!(s.created.interfaces, 9);
            assert_eq!(s.created.endpoints, 4);
            assert_eq!(s.created.groups, 2);
            let again = store.write(move |t| apply(t, &b, false)).await.unwrap();
            // Only the endpoints' names differ (bmcs[].name or the node's).
            assert_eq!(again.changed, again.updated.endpoints, "{again:?}");
            let m = store.snapshot();
            let mut ifaces: Vec<_> = m
                .interfaces
                .values()
                .map(|i| (i.id.clone(), i.component_id.clone(), i.ip_addresses.clone()))
                .collect();
            ifaces.sort_by(|a, b| a.0.cmp(&b.0));
            let groups: Vec<_> = m
                .groups
                .values()
                .map(|g| (g.label.clone(), g.members.ids.clone()))
                .collect();
            let eps: Vec<_> = m
                .redfish_endpoints
                .values()
                .map(|e| (e.id.clone(), e.fqdn.clone(), e.mac_addr.clone()))
                .collect();
            views.push(format!("{ifaces:?}\n{groups:?}\n{eps:?}"));
        }
        assert_eq!(views[0], views[1]);
    }

    /// References that do not hold, refused before anything is written.
    #[tokio::test]
    async fn bmc_references_are_checked() {
        use serde_json::json;
        let table = [
            (
                "unknown reference",
                json!({"bmcs": [{"name": "b0", "xname": "x1000c1s7b0"}],
                       "nodes": [{"xname": "x1000c1s7b0n0", "bmc": "b9"}]}),
                "nodes[0] (x1000c1s7b0n0): bmc \"b9\" is not in bmcs:",
            ),
            (
                "another node's BMC",
                json!({"bmcs": [{"name": "b1", "xname": "x1000c1s7b1"}],
                       "nodes": [{"xname": "x1000c1s7b0n0", "bmc": "b1"}]}),
                "nodes[0] (x1000c1s7b0n0): its BMC is x1000c1s7b0, not x1000c1s7b1",
            ),
            (
                "old bmc_xname not the parent",
                json!({"nodes": [{"xname": "x1000c1s7b0n0", "bmc_xname": "x1000c1s7b1", "bmc_ip": "10.0.0.1"}]}),
                "nodes[0] (x1000c1s7b0n0): its BMC is x1000c1s7b0, not x1000c1s7b1",
            ),
            (
                "BMC listed twice",
                json!({"bmcs": [{"xname": "x1000c1s7b0"}, {"xname": "x1000c1s7b0"}]}),
                "bmcs[1] (x1000c1s7b0): listed twice",
            ),
            (
                "one name for two BMCs",
                json!({"bmcs": [{"name": "b", "xname": "x1000c1s7b0"}, {"name": "b", "xname": "x1000c1s7b1"}]}),
                "bmcs[1] (x1000c1s7b1): name \"b\" is also x1000c1s7b0's",
            ),
            (
                "a node under bmcs:",
                json!({"bmcs": [{"xname": "x1000c1s7b0n0"}]}),
                "bmcs[0] (x1000c1s7b0n0): a Node, not a controller",
            ),
        ];
        for (case, file, want) in table {
            let store = Store::open_in_memory().unwrap();
            let c = parse(&file).unwrap_or_else(|e| panic!("{case}: {e}"));
            let err = store
                .write(move |t| apply(t, &c, false))
                .await
                .expect_err(case)
                .to_string();
            assert!(err.starts_with(want), "{case}: {err}");
            assert!(store.snapshot().components.is_empty(), "{case}");
        }
    }

    /// A BMC's FQDN: given, else its address, else its xname.
    #[tokio::test]
    async fn bmc_fqdn_defaults() {
        let file = serde_json::json!({
            "bmcs": [
                {"xname": "x1000c1s7b0", "ip": "10.0.0.1", "fqdn": "b0.lab"},
                {"xname": "x1000c1s7b1", "ip": "10.0.0.2"},
                {"xname": "x1000c1s7b2"}
            ],
            "nodes": [{"xname": "x1000c1s7b3n0", "bmc_fqdn": "b3.lab"}]
        });
        let store = Store::open_in_memory().unwrap();
        // A file mixing both is refused; apply the two halves separately.
        assert!(parse(&file).is_err());
        let mut current = file.clone();
        current.as_object_mut().unwrap().remove("nodes");
        let current = parse(&current).unwrap();
        store
            .write(move |t| apply(t, &current, false))
            .await
            .unwrap();
        let old = parse(&serde_json::json!({"nodes": file["nodes"]})).unwrap();
        store.write(move |t| apply(t, &old, false)).await.unwrap();
        let m = store.snapshot();
        let fqdn = |id: &str| m.redfish_endpoints[id].fqdn.clone();
        assert_eq!(fqdn("x1000c1s7b0"), "b0.lab");
        assert_eq!(m.redfish_endpoints["x1000c1s7b0"].ip_address, "10.0.0.1");
        assert_eq!(fqdn("x1000c1s7b1"), "10.0.0.2");
        assert_eq!(fqdn("x1000c1s7b2"), "x1000c1s7b2");
        assert_eq!(fqdn("x1000c1s7b3"), "b3.lab");
    }

    /// A MAC or address the file gives to another node than holds it.
    #[tokio::test]
    async fn identity_moves_only_when_asked() {
        let store = Store::open_in_memory().unwrap();
        store.write(|t| apply(t, &cluster(), false)).await.unwrap();
        // (case, node index and field changed, move_macs, refusal words or "" for success)
        #[allow(clippy::type_complexity)]
        let table: [(&str, fn(&mut ClusterIn), bool, &[&str]); 5] = [
            (
                "MAC given to another node",
                |c| c.nodes[1].interfaces[0].mac_addr = "de:ad:be:ee:ee:f1".into(),
                false,
                &[
                    "de:ad:be:ee:ee:f1",
                    "belongs to x1000c1s7b0n0",
                    "x1000c1s7b1n0",
                ],
            ),
            (
                "address given to another node",
                |c| c.nodes[1].interfaces[0].ip_addrs[0].ip_addr = "172.16.0.1".into(),
                false,
                &["172.16.0.1", "held by x1000c1s7b0n0"],
            ),
            (
                "two entries with one MAC",
                |c| {
                    let i = c.nodes[0].interfaces[0].clone();
                    c.nodes[1].interfaces.push(i);
                },
                false,
                &["belongs to x1000c1s7b0n0"],
            ),
            (
                "BMC address reused by a node",
                |c| c.nodes[1].interfaces[0].ip_addrs[0].ip_addr = "172.16.0.101".into(),
                false,
                &["172.16.0.101", "held by x1000c1s7b0"],
            ),
            (
                "MAC moved on request",
                |c| {
                    c.nodes[0].interfaces.clear();
                    c.nodes[1].interfaces[0].mac_addr = "de:ad:be:ee:ee:f1".into();
                    c.nodes[1].interfaces[0].ip_addrs[0].ip_addr = "172.16.0.1".into();
                },
                true,
                &[],
            ),
        ];
        for (case, change, move_macs, words) in table {
            let mut c = cluster();
            change(&mut c);
            let before = store.snapshot().generation;
            let got = store.write(move |t| apply(t, &c, move_macs)).await;
            match got {
                Ok(_) => {
                    assert!(words.is_empty(), "{case}: accepted");
                    let s = store.snapshot();
                    assert_eq!(s.interfaces["deadbeeeeef1"].component_id, "x1000c1s7b1n0");
                    let holders = s.interfaces_with_ip("172.16.0.1".parse().unwrap());
                    assert_eq!(holders.len(), 1, "{case}");
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(!words.is_empty(), "{case}: {msg}");
                    for w in words {
                        assert!(msg.contains(w), "{case}: {msg:?} lacks {w:?}");
                    }
                    assert_eq!(store.snapshot().generation, before, "{case}");
                }
            }
        }
    }
}
