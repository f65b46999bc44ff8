//! SMD's rules for Ethernet interfaces (`Inventory/EthernetInterfaces`).
//!
//! An interface is the link DHCP, DNS and the boot scripts follow from a MAC
//! address to a component, so its key must not depend on how a client spelt
//! the MAC: every entry point reduces the MAC to the same ID, and a second
//! record for the same NIC is a conflict rather than a silent duplicate that
//! would make DHCP answer with whichever row it met first. The discovery
//! payloads of `Inventory/RedfishEndpoints` create interfaces through
//! [`bind`], so they obey the same rules as a client's POST.

use std::sync::Arc;

use std::net::IpAddr;

use serde::Deserialize;

use super::components::{Matcher, normalize_each, parse_xname};
use super::identity::{self, Allow};
use super::model::{EthernetInterface, IpAddressMapping};
use super::store::{Model, Txn};
use super::{DomainError, mac, xname};

/// Where interfaces live, for `URI` replies.
pub const BASE: &str = "/hsm/v2/Inventory/EthernetInterfaces";

/// `LastUpdate` as upstream writes it: RFC 3339, UTC, microseconds.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The interface ID for any accepted MAC spelling (400 otherwise).
pub fn parse_id(s: &str) -> Result<String, DomainError> {
    mac::id_of(s).map_err(|e| DomainError::Invalid(e.to_string()))
}

/// A MAC in the colon form SMD emits (400 if it is not one).
pub fn parse_mac(s: &str) -> Result<String, DomainError> {
    mac::normalize(s).map_err(|e| DomainError::Invalid(e.to_string()))
}

/// An IP address in its canonical text form (400 if it is not one).
pub fn parse_ip(s: &str) -> Result<String, DomainError> {
    s.trim()
        .parse::<IpAddr>()
        .map(|a| a.to_string())
        .map_err(|_| DomainError::Invalid(format!("invalid IP address {s:?}")))
}

/// The component ID normalised, or empty; 400 if it is not an xname.
fn parse_component(s: &str) -> Result<String, DomainError> {
    if s.trim().is_empty() {
        Ok(String::new())
    } else {
        parse_xname(s).map(|(id, _)| id)
    }
}

/// An interface's `Type` follows its component's xname.
fn type_of(component: &str) -> String {
    xname::type_of(component)
        .map(|t| t.as_str().to_string())
        .unwrap_or_default()
}

/// One IP mapping as a client sends it.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct IpIn {
    #[schemars(rename = "IPAddress")]
    pub ipaddress: Option<String>,
    #[schemars(rename = "Network")]
    pub network: Option<String>,
}

impl IpIn {
    fn to_mapping(&self) -> Result<IpAddressMapping, DomainError> {
        let ip = self
            .ipaddress
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| DomainError::Invalid("IPAddress is required".into()))?;
        Ok(IpAddressMapping {
            ip_address: parse_ip(ip)?,
            network: self.network.clone().unwrap_or_default(),
        })
    }
}

/// Checks a list of mappings; a repeated address keeps its first entry.
fn mappings(list: &[IpIn]) -> Result<Vec<IpAddressMapping>, DomainError> {
    let mut out: Vec<IpAddressMapping> = Vec::with_capacity(list.len());
    for m in list {
        let m = m.to_mapping()?;
        if !out.iter().any(|o| o.ip_address == m.ip_address) {
            out.push(m);
        }
    }
    Ok(out)
}

/// `POST Inventory/EthernetInterfaces` body. `ID`, `Type` and `LastUpdate`
/// are derived, whatever the client sent.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct InterfaceIn {
    #[schemars(rename = "Description")]
    pub description: Option<String>,
    #[schemars(rename = "MACAddress")]
    pub macaddress: Option<String>,
    #[schemars(rename = "ComponentID")]
    pub componentid: Option<String>,
    #[schemars(rename = "IPAddresses")]
    pub ipaddresses: Vec<IpIn>,
    /// SMD v1's single address, still accepted.
    #[schemars(rename = "IPAddress")]
    pub ipaddress: Option<String>,
}

/// `PATCH Inventory/EthernetInterfaces/{id}` body; other fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct InterfacePatchIn {
    #[schemars(rename = "Description")]
    pub description: Option<String>,
    #[schemars(rename = "ComponentID")]
    pub componentid: Option<String>,
    #[schemars(rename = "IPAddresses")]
    pub ipaddresses: Option<Vec<IpIn>>,
}

/// `PATCH …/IPAddresses/{ip}` body.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct IpPatchIn {
    #[schemars(rename = "Network")]
    pub network: Option<String>,
}

/// `POST`: creates an interface; 409 if its MAC is already known. Returns
/// the new ID.
pub fn create(txn: &mut Txn<'_>, input: &InterfaceIn) -> Result<String, DomainError> {
    let raw = input
        .macaddress
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| DomainError::Invalid("MACAddress is required".into()))?;
    let mac_address = parse_mac(raw)?;
    let id = parse_id(raw)?;
    let component_id = parse_component(input.componentid.as_deref().unwrap_or(""))?;
    let mut ips = input.ipaddresses.clone();
    if let Some(ip) = input.ipaddress.as_deref().filter(|s| !s.trim().is_empty()) {
        ips.push(IpIn {
            ipaddress: Some(ip.to_string()),
            network: None,
        });
    }
    let ip_addresses = mappings(&ips)?;
    if let Some(old) = txn.model().interface(&id) {
        let owner = if old.component_id.is_empty() {
            String::new()
        } else {
            format!(" (it belongs to {})", old.component_id)
        };
        return Err(DomainError::Conflict(format!(
            "an Ethernet interface with MAC address {mac_address} already exists{owner}; PATCH or delete it"
        )));
    }
    let kind = type_of(&component_id);
    let want = EthernetInterface {
        id: id.clone(),
        description: input.description.clone().unwrap_or_default(),
        mac_address,
        last_update: timestamp(txn.now()),
        component_id,
        kind,
        ip_addresses,
    };
    identity::put(txn, want, Allow::NONE)?;
    Ok(id)
}

fn existing(txn: &Txn<'_>, id: &str) -> Result<EthernetInterface, DomainError> {
    txn.model()
        .interface(id)
        .cloned()
        .ok_or_else(|| DomainError::NotFound(format!("no Ethernet interface {id}")))
}

/// `PATCH {id}`: description, component and the address list. As upstream,
/// `LastUpdate` moves only when the addresses are given.
pub fn patch(
    txn: &mut Txn<'_>,
    raw_id: &str,
    input: &InterfacePatchIn,
    move_ips: bool,
) -> Result<EthernetInterface, DomainError> {
    let id = parse_id(raw_id)?;
    let mut i = existing(txn, &id)?;
    if let Some(d) = &input.description {
        i.description = d.clone();
    }
    if let Some(c) = &input.componentid {
        i.component_id = parse_component(c)?;
        i.kind = type_of(&i.component_id);
    }
    if let Some(list) = &input.ipaddresses {
        i.ip_addresses = mappings(list)?;
        i.last_update = timestamp(txn.now());
    }
    // Naming a ComponentID is itself the request to move the MAC; addresses
    // held elsewhere move only when asked.
    let allow = Allow {
        mac: input.componentid.is_some(),
        ips: move_ips,
    };
    identity::put(txn, i.clone(), allow)?;
    Ok(i)
}

/// `DELETE {id}`.
pub fn delete(txn: &mut Txn<'_>, raw_id: &str) -> Result<(), DomainError> {
    let id = parse_id(raw_id)?;
    txn.delete_interface(&id)
        .map(|_| ())
        .ok_or_else(|| DomainError::NotFound("no such component ethernet interface.".into()))
}

/// `DELETE` the collection; returns how many were removed.
pub fn delete_all(txn: &mut Txn<'_>) -> usize {
    let ids: Vec<String> = txn.model().interfaces.keys().cloned().collect();
    for id in &ids {
        txn.delete_interface(id);
    }
    ids.len()
}

/// Looks an address up on an interface by value, whatever its spelling.
fn position(i: &EthernetInterface, ip: &str) -> Option<usize> {
    let want: IpAddr = ip.parse().ok()?;
    i.ip_addresses
        .iter()
        .position(|m| m.ip_address.parse::<IpAddr>().ok() == Some(want))
}

/// `POST {id}/IPAddresses`: adds one mapping; 409 if the interface has the
/// address already. Returns the address as stored.
pub fn add_ip(txn: &mut Txn<'_>, raw_id: &str, input: &IpIn) -> Result<String, DomainError> {
    let id = parse_id(raw_id)?;
    let m = input.to_mapping()?;
    let mut i = existing(txn, &id)?;
    if position(&i, &m.ip_address).is_some() {
        return Err(DomainError::Conflict(format!(
            "Ethernet interface {id} already has IP address {}",
            m.ip_address
        )));
    }
    let ip = m.ip_address.clone();
    i.ip_addresses.push(m);
    i.last_update = timestamp(txn.now());
    identity::put(txn, i, Allow::NONE)?;
    Ok(ip)
}

/// `PATCH {id}/IPAddresses/{ip}`: sets the network name.
pub fn patch_ip(
    txn: &mut Txn<'_>,
    raw_id: &str,
    raw_ip: &str,
    input: &IpPatchIn,
) -> Result<IpAddressMapping, DomainError> {
    let id = parse_id(raw_id)?;
    let ip = parse_ip(raw_ip)?;
    let mut i = existing(txn, &id)?;
    let k = position(&i, &ip)
        .ok_or_else(|| DomainError::NotFound(format!("Ethernet interface {id} has no IP {ip}")))?;
    let Some(m) = i.ip_addresses.get_mut(k) else {
        return Err(DomainError::NotFound(format!(
            "Ethernet interface {id} has no IP {ip}"
        )));
    };
    if let Some(n) = &input.network {
        m.network = n.clone();
    }
    let out = m.clone();
    i.last_update = timestamp(txn.now());
    identity::put(txn, i, Allow::NONE)?;
    Ok(out)
}

/// `DELETE {id}/IPAddresses/{ip}`.
pub fn delete_ip(txn: &mut Txn<'_>, raw_id: &str, raw_ip: &str) -> Result<(), DomainError> {
    let id = parse_id(raw_id)?;
    let ip = parse_ip(raw_ip)?;
    let mut i = existing(txn, &id)?;
    let k = position(&i, &ip)
        .ok_or_else(|| DomainError::NotFound(format!("Ethernet interface {id} has no IP {ip}")))?;
    i.ip_addresses.remove(k);
    i.last_update = timestamp(txn.now());
    txn.put_interface(i);
    Ok(())
}

/// Binds a discovered NIC to a component (the V2 RedfishEndpoint payload).
///
/// A MAC already bound to another component is a conflict unless
/// `allow_move` (a PUT re-post), in which case it moves. The address list
/// becomes `ip` (keeping the network name an operator gave it); without an
/// `ip`, the addresses stay as long as the component does. A record that
/// would not change is not rewritten, so re-posting the same payload leaves
/// `LastUpdate` alone.
pub fn bind(
    txn: &mut Txn<'_>,
    mac_address: &str,
    component_id: &str,
    ip: Option<&str>,
    description: &str,
    allow_move: bool,
) -> Result<(), DomainError> {
    let id = parse_id(mac_address)?;
    let mac_address = parse_mac(mac_address)?;
    let old = txn.model().interface(&id).cloned();
    let mut want = match &old {
        Some(o) => {
            if !o.component_id.is_empty() && o.component_id != component_id && !allow_move {
                return Err(DomainError::Conflict(format!(
                    "MAC address {mac_address} already belongs to {}; PUT the endpoint to move it",
                    o.component_id
                )));
            }
            o.clone()
        }
        None => EthernetInterface {
            id: id.clone(),
            description: String::new(),
            mac_address: mac_address.clone(),
            last_update: String::new(),
            component_id: String::new(),
            kind: String::new(),
            ip_addresses: Vec::new(),
        },
    };
    let moved = want.component_id != component_id;
    want.component_id = component_id.to_string();
    want.kind = type_of(component_id);
    if !description.is_empty() {
        want.description = description.to_string();
    }
    match ip {
        Some(ip) => {
            let network = position(&want, ip)
                .and_then(|k| want.ip_addresses.get(k))
                .map(|m| m.network.clone())
                .unwrap_or_default();
            want.ip_addresses = vec![IpAddressMapping {
                ip_address: ip.to_string(),
                network,
            }];
        }
        None if moved => want.ip_addresses.clear(),
        None => {}
    }
    if old.as_ref() == Some(&want) {
        return Ok(());
    }
    want.last_update = timestamp(txn.now());
    identity::put(txn, want, Allow::moving(allow_move))
}

/// Filters of `GET Inventory/EthernetInterfaces`.
#[derive(Debug, Clone, Default)]
pub struct InterfaceFilter {
    pub id: Matcher,
    pub mac: Matcher,
    pub ip: Matcher,
    pub network: Matcher,
    pub component: Matcher,
    pub kind: Matcher,
    pub older_than: Option<chrono::DateTime<chrono::Utc>>,
    pub newer_than: Option<chrono::DateTime<chrono::Utc>>,
}

fn parse_time(
    key: &str,
    v: Option<&String>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, DomainError> {
    v.map(|s| {
        chrono::DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| DomainError::Invalid(format!("{key} must be an RFC 3339 time, got {s:?}")))
    })
    .transpose()
}

/// Whether a multi-valued field passes: any value included, none excluded.
pub fn matches_any(m: &Matcher, values: &[String]) -> bool {
    if values.is_empty() {
        return m.matches(None);
    }
    let lower: Vec<String> = values.iter().map(|v| v.to_lowercase()).collect();
    (m.include.is_empty() || lower.iter().any(|v| m.include.contains(v)))
        && !lower.iter().any(|v| m.exclude.contains(v))
}

impl InterfaceFilter {
    /// Builds the filter from lower-cased query keys. MACs, IPs and xnames
    /// are normalised, so any spelling finds the record; a value that is
    /// none of them is a 400, as upstream.
    pub fn from_query(get: impl Fn(&str) -> Vec<String>) -> Result<InterfaceFilter, DomainError> {
        let kinds = normalize_each(get("type"), |t| {
            super::enums::HmsType::parse(t.trim())
                .map(|k| k.as_str().to_string())
                .ok_or_else(|| DomainError::Invalid(format!("invalid HMS type {t:?}")))
        })?;
        Ok(InterfaceFilter {
            id: Matcher::new(normalize_each(get("id"), |v| {
                Ok(mac::id_of(v).unwrap_or_else(|_| v.to_lowercase()))
            })?),
            mac: Matcher::new(normalize_each(get("macaddress"), |v| {
                Ok(mac::normalize(v).unwrap_or_else(|_| v.to_lowercase()))
            })?),
            ip: Matcher::new(normalize_each(get("ipaddress"), |v| {
                Ok(parse_ip(v).unwrap_or_else(|_| v.to_string()))
            })?),
            network: Matcher::new(get("network")),
            component: Matcher::new(
                normalize_each(get("componentid"), parse_component)
                    .map_err(|_| DomainError::Invalid("Invalid CompID.".into()))?,
            ),
            kind: Matcher::new(kinds),
            older_than: parse_time("OlderThan", get("olderthan").first())?,
            newer_than: parse_time("NewerThan", get("newerthan").first())?,
        })
    }

    pub fn matches(&self, i: &EthernetInterface) -> bool {
        let ips: Vec<String> = i
            .ip_addresses
            .iter()
            .map(|m| m.ip_address.clone())
            .collect();
        let networks: Vec<String> = i.ip_addresses.iter().map(|m| m.network.clone()).collect();
        let updated = chrono::DateTime::parse_from_rfc3339(&i.last_update)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc));
        self.id.matches(Some(&i.id))
            && self.mac.matches(Some(&i.mac_address))
            && matches_any(&self.ip, &ips)
            && matches_any(&self.network, &networks)
            && self.component.matches(Some(&i.component_id))
            && self.kind.matches(Some(&i.kind))
            && self
                .older_than
                .is_none_or(|t| updated.is_some_and(|u| u < t))
            && self
                .newer_than
                .is_none_or(|t| updated.is_some_and(|u| u > t))
    }

    /// The matching interfaces, in ID order.
    pub fn select<'m>(&self, m: &'m Model) -> Vec<&'m EthernetInterface> {
        m.interfaces
            .values()
            .map(Arc::as_ref)
            .filter(|i| self.matches(i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Store, WriteError};

    fn body(v: serde_json::Value) -> InterfaceIn {
        serde_json::from_value(v).unwrap()
    }

    async fn create_ok(store: &Store, v: serde_json::Value) -> Result<String, WriteError> {
        let input = body(v);
        store.write(move |t| create(t, &input)).await
    }

    #[tokio::test]
    async fn create_derives_id_type_and_time() {
        let store = Store::open_in_memory().unwrap();
        let id = create_ok(
            &store,
            serde_json::json!({"macaddress": "52-54-00-BE-EF-01", "description": "eth0",
                "componentid": "X1000C0S0B0N0",
                "ipaddresses": [{"ipaddress": "172.16.0.1", "network": "mgmt"}]}),
        )
        .await
        .unwrap();
        assert_eq!(id, "525400beef01");
        let s = store.snapshot();
        let i = &s.interfaces["525400beef01"];
        assert_eq!(i.mac_address, "52:54:00:be:ef:01");
        assert_eq!(i.component_id, "x1000c0s0b0n0");
        assert_eq!(i.kind, "Node");
        assert_eq!(i.last_update.len(), "2026-01-02T03:04:05.000000Z".len());
        assert!(i.last_update.ends_with('Z'));
        assert_eq!(i.ip_addresses[0].network, "mgmt");
    }

    #[tokio::test]
    async fn duplicate_mac_is_a_conflict() {
        let store = Store::open_in_memory().unwrap();
        create_ok(
            &store,
            serde_json::json!({"macaddress": "52:54:00:be:ef:01"}),
        )
        .await
        .unwrap();
        let err = create_ok(&store, serde_json::json!({"macaddress": "525400BEEF01"}))
            .await
            .unwrap_err();
        assert!(matches!(err, WriteError::Domain(DomainError::Conflict(_))));
    }

    #[tokio::test]
    async fn bad_input_is_invalid() {
        let store = Store::open_in_memory().unwrap();
        for v in [
            serde_json::json!({}),
            serde_json::json!({"macaddress": "nope"}),
            serde_json::json!({"macaddress": "525400beef01", "ipaddresses": [{"ipaddress": "1.2.3"}]}),
            serde_json::json!({"macaddress": "525400beef01", "componentid": "bogus"}),
        ] {
            let err = create_ok(&store, v).await.unwrap_err();
            assert!(
                matches!(err, WriteError::Domain(DomainError::Invalid(_))),
                "{err:?}"
            );
        }
        assert!(store.snapshot().interfaces.is_empty());
    }

    #[tokio::test]
    async fn ip_mappings_and_patch() {
        let store = Store::open_in_memory().unwrap();
        create_ok(
            &store,
            serde_json::json!({"macaddress": "52:54:00:be:ef:01"}),
        )
        .await
        .unwrap();
        store
            .write(|t| {
                add_ip(
                    t,
                    "52:54:00:be:ef:01",
                    &IpIn {
                        ipaddress: Some("10.0.0.5".into()),
                        network: None,
                    },
                )
            })
            .await
            .unwrap();
        let dup = store
            .write(|t| {
                add_ip(
                    t,
                    "525400beef01",
                    &IpIn {
                        ipaddress: Some("10.0.0.5".into()),
                        network: None,
                    },
                )
            })
            .await
            .unwrap_err();
        assert!(matches!(dup, WriteError::Domain(DomainError::Conflict(_))));
        let m = store
            .write(|t| {
                patch_ip(
                    t,
                    "525400beef01",
                    "10.0.0.5",
                    &IpPatchIn {
                        network: Some("hsn".into()),
                    },
                )
            })
            .await
            .unwrap();
        assert_eq!(m.network, "hsn");
        let i = store
            .write(|t| {
                patch(
                    t,
                    "525400BEEF01",
                    &InterfacePatchIn {
                        componentid: Some("x1000c0s0b0".into()),
                        ..Default::default()
                    },
                    false,
                )
            })
            .await
            .unwrap();
        assert_eq!(i.kind, "NodeBMC");
        store
            .write(|t| delete_ip(t, "525400beef01", "10.0.0.5"))
            .await
            .unwrap();
        assert!(
            store.snapshot().interfaces["525400beef01"]
                .ip_addresses
                .is_empty()
        );
        let gone = store
            .write(|t| delete_ip(t, "525400beef01", "10.0.0.5"))
            .await
            .unwrap_err();
        assert!(matches!(gone, WriteError::Domain(DomainError::NotFound(_))));
    }

    #[tokio::test]
    async fn filters() {
        let store = Store::open_in_memory().unwrap();
        create_ok(
            &store,
            serde_json::json!({"macaddress": "52:54:00:be:ef:01", "componentid": "x0c0s0b0n0",
                "ipaddresses": [{"ipaddress": "10.0.0.1", "network": "mgmt"}]}),
        )
        .await
        .unwrap();
        create_ok(
            &store,
            serde_json::json!({"macaddress": "52:54:00:be:ef:02", "componentid": "x0c0s0b0"}),
        )
        .await
        .unwrap();
        let s = store.snapshot();
        let q = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            InterfaceFilter::from_query(|k| {
                pairs
                    .iter()
                    .filter(|(pk, _)| pk == k)
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap()
            .select(&s)
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>()
        };
        assert_eq!(q(&[("type", "node")]), vec!["525400beef01"]);
        assert_eq!(q(&[("type", "!Node")]), vec!["525400beef02"]);
        assert_eq!(
            q(&[("macaddress", "52-54-00-BE-EF-02")]),
            vec!["525400beef02"]
        );
        assert_eq!(q(&[("ipaddress", "10.0.0.1")]), vec!["525400beef01"]);
        assert_eq!(q(&[("network", "MGMT")]), vec!["525400beef01"]);
        assert_eq!(
            q(&[("componentid", "X0C0S0B0N0"), ("componentid", "x0c0s0b0")]).len(),
            2
        );
        assert_eq!(q(&[("olderthan", "2000-01-01T00:00:00Z")]).len(), 0);
        assert_eq!(q(&[("newerthan", "2000-01-01T00:00:00Z")]).len(), 2);
        assert!(
            InterfaceFilter::from_query(|k| if k == "type" {
                vec!["nonsense".into()]
            } else {
                vec![]
            })
            .is_err()
        );
    }
}
