//! SMD's rules for RedfishEndpoints and ComponentEndpoints, including the
//! OpenCHAMI "V2" discovery payload.
//!
//! `magellan send` and `ochami discover static` build a whole BMC (its
//! components, nodes, NIDs, MACs and reset targets) with one POST of the V2
//! payload. Upstream applies it piecemeal and can stop half-way, leaving a
//! node without the MACs DHCP needs; here every endpoint of a request and all
//! its effects are applied inside one write, so a request either lands
//! completely or not at all.
//!
//! The payload comes from collectors that follow the BMC's own, often
//! sloppy, JSON: a field a vendor fills with `null` or the wrong type must
//! not cost the operator a whole discovery run. It is therefore decoded by
//! hand from a [`Value`], strictly only where a wrong value would create the
//! wrong records (IDs, addresses, URIs, MACs, reset actions, links) and
//! leniently everywhere else.
//!
//! Passwords are sealed by the caller before they reach these functions, so
//! the inventory never handles a clear-text credential or any cryptography.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::components::{self, Matcher, normalize_each, parse_xname};
use super::enums::HmsType;
use super::interfaces;
use super::model::{
    Actions, Component, ComponentEndpoint, DiscoveryInfo, EthernetNicInfo, RedfishEndpoint,
    RedfishResourceInfo, ResetAction, ServiceEndpoint,
};
use super::store::{Model, Txn};
use super::{DomainError, enclosures, mac, xname};

/// Where RedfishEndpoints live, for `URI` replies.
pub const BASE: &str = "/hsm/v2/Inventory/RedfishEndpoints";

/// Discovery status of an endpoint nobody has crawled yet, as upstream.
pub const NOT_YET_QUERIED: &str = "NotYetQueried";
/// Discovery status once a V2 payload described the endpoint.
pub const DISCOVER_OK: &str = "DiscoverOK";

/// A RedfishEndpoint as a client sends it (plain or V2). `None` = absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointIn {
    pub id: Option<String>,
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub domain: Option<String>,
    pub fqdn: Option<String>,
    pub enabled: Option<bool>,
    pub uuid: Option<String>,
    pub user: Option<String>,
    /// As sent by the client until the HTTP layer replaces it with the
    /// sealed form; stored as is. Empty means "no password given".
    pub password: Option<String>,
    pub use_ssdp: Option<bool>,
    pub mac_required: Option<bool>,
    pub mac_addr: Option<String>,
    pub ip_address: Option<String>,
    pub rediscover_on_update: Option<bool>,
    pub template_id: Option<String>,
    /// Present when `SchemaVersion` ≥ 1: the V2 Systems and Managers.
    pub inventory: Option<Inventory>,
}

/// The Systems and Managers of a V2 payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    pub managers: Vec<ResourceIn>,
    pub systems: Vec<ResourceIn>,
    /// The payload's own description of them, kept as `Details`.
    pub details: Map<String, Value>,
    /// The BMC's Redfish services (`Services`: `type`, `uri`, `uuid`), as
    /// the appliance's own discovery sends them; magellan sends none.
    pub services: Vec<ServiceEndpoint>,
    /// The BMC's Chassis (`Chassis`), as the appliance's own discovery
    /// sends them; magellan sends none (see `enclosures`).
    pub chassis: Vec<enclosures::ChassisIn>,
}

/// One V2 System or Manager.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceIn {
    /// The Redfish path (`uri` reduced to its path).
    pub path: String,
    pub uuid: String,
    pub name: String,
    /// `system_type` of a System, `type` (ManagerType) of a Manager.
    pub subtype: String,
    /// ResetType allowable values.
    pub actions: Vec<String>,
    pub nics: Vec<NicIn>,
    /// First chassis in `links`, as a path.
    pub chassis: Option<String>,
}

/// One NIC of a V2 System or Manager.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NicIn {
    pub path: String,
    /// Colon form; `None` if the collector saw no MAC.
    pub mac: Option<String>,
    /// Canonical form; `None` if the NIC had no address.
    pub ip: Option<String>,
    pub description: String,
}

/// Reduces an absolute URL (`https://10.0.0.1:443/redfish/v1/Systems/1`) to
/// its path, as upstream does; anything else is returned as given.
pub fn reduce_uri(u: &str) -> String {
    let t = u.trim();
    if let Some((scheme, rest)) = t.split_once("://") {
        let mut chars = scheme.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if valid {
            let rest = rest.split(['?', '#']).next().unwrap_or("");
            return match rest.find('/') {
                Some(k) => rest.get(k..).unwrap_or("").to_string(),
                None => String::new(),
            };
        }
    }
    t.to_string()
}

/// Looks a key up as Go's decoder does: exact spelling first, then any case.
fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn wrong(key: &str, what: &str) -> DomainError {
    DomainError::Invalid(format!("{key} must be {what}"))
}

/// A string field; `null` is absent. A wrong type is a 400 only if `strict`.
fn string(
    obj: &Map<String, Value>,
    key: &str,
    strict: bool,
) -> Result<Option<String>, DomainError> {
    match get(obj, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) if strict => Err(wrong(key, "a string")),
        Some(_) => Ok(None),
    }
}

fn boolean(obj: &Map<String, Value>, key: &str, strict: bool) -> Result<Option<bool>, DomainError> {
    match get(obj, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) if strict => Err(wrong(key, "true or false")),
        Some(_) => Ok(None),
    }
}

fn strings(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, DomainError> {
    match get(obj, key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| wrong(key, "a list of strings"))
            })
            .collect(),
        Some(_) => Err(wrong(key, "a list of strings")),
    }
}

fn nic(v: &Value) -> Result<NicIn, DomainError> {
    let o = v
        .as_object()
        .ok_or_else(|| wrong("ethernet_interfaces", "a list of objects"))?;
    let mac = match string(o, "mac", true)?.filter(|s| !s.trim().is_empty()) {
        Some(m) => Some(interfaces::parse_mac(&m)?),
        None => None,
    };
    let ip = match string(o, "ip", true)?.filter(|s| !s.trim().is_empty()) {
        Some(a) => Some(interfaces::parse_ip(&a)?),
        None => None,
    };
    Ok(NicIn {
        path: string(o, "uri", true)?
            .map(|u| reduce_uri(&u))
            .unwrap_or_default(),
        mac,
        ip,
        description: string(o, "description", false)?.unwrap_or_default(),
    })
}

/// The first chassis of `links` (a path or `{"@odata.id": path}`).
fn first_chassis(o: &Map<String, Value>) -> Result<Option<String>, DomainError> {
    let links = match get(o, "links") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(l)) => l,
        Some(_) => return Err(wrong("links", "an object")),
    };
    match get(links, "chassis") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(a
            .first()
            .and_then(|c| {
                c.as_str()
                    .or_else(|| c.get("@odata.id").and_then(Value::as_str))
            })
            .map(reduce_uri)),
        Some(_) => Err(wrong("links.chassis", "a list")),
    }
}

/// One System or Manager, and the object kept as its details.
fn resource(o: &Map<String, Value>, subtype_key: &str) -> Result<(ResourceIn, Value), DomainError> {
    let path = string(o, "uri", true)?
        .map(|u| reduce_uri(&u))
        .unwrap_or_default();
    let nics = match get(o, "ethernet_interfaces") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(nic).collect::<Result<_, _>>()?,
        Some(_) => return Err(wrong("ethernet_interfaces", "a list")),
    };
    let r = ResourceIn {
        uuid: string(o, "uuid", true)?.unwrap_or_default(),
        name: string(o, "name", false)?.unwrap_or_default(),
        subtype: string(o, subtype_key, false)?.unwrap_or_default(),
        actions: strings(o, "actions")?,
        nics,
        chassis: first_chassis(o)?,
        path: path.clone(),
    };
    let mut detail = o.clone();
    if let Some(uri) = detail
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case("uri"))
    {
        *uri.1 = Value::String(path);
    }
    Ok((r, Value::Object(detail)))
}

fn schema_version(obj: &Map<String, Value>) -> Result<f64, DomainError> {
    match get(obj, "SchemaVersion") {
        None | Some(Value::Null) => Ok(0.0),
        Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(0.0)),
        Some(_) => Err(wrong("SchemaVersion", "a number")),
    }
}

fn inventory(obj: &Map<String, Value>) -> Result<Inventory, DomainError> {
    let list = |key: &str| -> Vec<&Map<String, Value>> {
        match get(obj, key) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_object).collect(),
            _ => Vec::new(),
        }
    };
    let mut inv = Inventory::default();
    let mut kept = Vec::new();
    for o in list("Managers") {
        let (r, d) = resource(o, "type")?;
        inv.managers.push(r);
        kept.push(d);
    }
    if !kept.is_empty() {
        inv.details
            .insert("Managers".into(), Value::Array(std::mem::take(&mut kept)));
    }
    for o in list("Systems") {
        let (r, d) = resource(o, "system_type")?;
        inv.systems.push(r);
        kept.push(d);
    }
    if !kept.is_empty() {
        inv.details.insert("Systems".into(), Value::Array(kept));
    }
    inv.chassis = enclosures::decode(get(obj, "Chassis"));
    // Leniently: a service entry without a type or a path is skipped.
    for o in list("Services") {
        let text = |k: &str| get(o, k).and_then(Value::as_str).unwrap_or("").trim();
        let (kind, path) = (text("type"), reduce_uri(text("uri")));
        if !kind.is_empty()
            && path.starts_with('/')
            && !inv.services.iter().any(|s| s.redfish_type == kind)
        {
            inv.services.push(ServiceEndpoint {
                redfish_type: kind.to_string(),
                uuid: text("uuid").to_string(),
                odata_id: path,
                info: match get(o, "info") {
                    Some(v @ Value::Object(_)) => v.clone(),
                    _ => Value::Null,
                },
            });
        }
    }
    Ok(inv)
}

/// `DELETE Inventory/ServiceEndpoints/{service}/RedfishEndpoints/{xname}`.
pub fn delete_service(txn: &mut Txn<'_>, service: &str, id: &str) -> Result<(), DomainError> {
    let (id, _) = parse_xname(id)?;
    let missing = || DomainError::NotFound("no such service under redfish endpoint.".into());
    let mut ep = txn
        .model()
        .redfish_endpoint(&id)
        .cloned()
        .ok_or_else(missing)?;
    let before = ep.services.len();
    ep.services
        .retain(|s| !s.redfish_type.eq_ignore_ascii_case(service));
    if ep.services.len() == before {
        return Err(missing());
    }
    txn.put_redfish_endpoint(ep);
    Ok(())
}

/// `DELETE Inventory/ServiceEndpoints`: forgets every service; how many.
pub fn delete_all_services(txn: &mut Txn<'_>) -> usize {
    let with: Vec<RedfishEndpoint> = txn
        .model()
        .redfish_endpoints
        .values()
        .filter(|e| !e.services.is_empty())
        .map(|e| RedfishEndpoint::clone(e))
        .collect();
    let mut n = 0;
    for mut ep in with {
        n += ep.services.len();
        ep.services.clear();
        txn.put_redfish_endpoint(ep);
    }
    n
}

/// Decodes one RedfishEndpoint object (plain, or V2 if `SchemaVersion` ≥ 1).
/// A plain body is decoded strictly; a V2 body leniently, except for the
/// fields that identify what gets created.
pub fn decode(v: &Value) -> Result<EndpointIn, DomainError> {
    let obj = v
        .as_object()
        .ok_or_else(|| DomainError::Invalid("a RedfishEndpoint must be a JSON object".into()))?;
    let v2 = schema_version(obj)? >= 1.0;
    let strict = !v2;
    Ok(EndpointIn {
        id: string(obj, "ID", true)?,
        fqdn: string(obj, "FQDN", true)?,
        name: string(obj, "Name", strict)?,
        hostname: string(obj, "Hostname", strict)?,
        domain: string(obj, "Domain", strict)?,
        enabled: boolean(obj, "Enabled", strict)?,
        uuid: string(obj, "UUID", strict)?,
        user: string(obj, "User", strict)?,
        password: string(obj, "Password", strict)?,
        use_ssdp: boolean(obj, "UseSSDP", strict)?,
        mac_required: boolean(obj, "MACRequired", strict)?,
        mac_addr: string(obj, "MACAddr", strict)?,
        ip_address: string(obj, "IPAddress", strict)?,
        rediscover_on_update: boolean(obj, "RediscoverOnUpdate", strict)?,
        template_id: string(obj, "TemplateID", strict)?,
        inventory: if v2 { Some(inventory(obj)?) } else { None },
    })
}

/// Decodes a PATCH body. Fields that cannot be patched (`ID`, `Type`, a V2
/// inventory) are dropped unread, so they can never cause a 400.
pub fn decode_patch(v: &Value) -> Result<EndpointIn, DomainError> {
    let mut v = v.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.retain(|k, _| {
            !["ID", "Type", "SchemaVersion", "Systems", "Managers"]
                .iter()
                .any(|f| k.eq_ignore_ascii_case(f))
        });
    }
    decode(&v)
}

/// Decodes a POST body: one endpoint, or `{"RedfishEndpoints": [...]}`.
pub fn decode_post(v: &Value) -> Result<Vec<EndpointIn>, DomainError> {
    if let Some(obj) = v.as_object()
        && let Some(list) = get(obj, "RedfishEndpoints")
        && !list.is_null()
    {
        let list = list
            .as_array()
            .ok_or_else(|| wrong("RedfishEndpoints", "a list"))?;
        return list
            .iter()
            .enumerate()
            .map(|(k, e)| {
                decode(e)
                    .map_err(|err| DomainError::Invalid(format!("RedfishEndpoints[{k}]: {err}")))
            })
            .collect();
    }
    decode(v).map(|e| vec![e])
}

/// Normalises an endpoint ID; it must name a controller (400 otherwise).
pub fn endpoint_id(raw: &str) -> Result<(String, HmsType), DomainError> {
    let (id, kind) = parse_xname(raw).map_err(|_| {
        DomainError::Invalid(format!(
            "couldn't validate endpoint data: {} is not a valid locational xname ID",
            raw.trim()
        ))
    })?;
    if !kind.is_controller() {
        return Err(DomainError::Invalid(format!(
            "{id} is a {}, which cannot be a RedfishEndpoint",
            kind.as_str()
        )));
    }
    Ok((id, kind))
}

/// The derived address fields of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    hostname: String,
    domain: String,
    fqdn: String,
    ip_address: String,
}

fn trim_name(s: &str) -> &str {
    s.trim_matches(|c| c == '.' || c == '/' || c == ' ')
}

fn as_ip(s: &str) -> Option<String> {
    s.trim()
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|a| a.to_string())
}

/// Upstream's derivation: FQDN from Hostname + Domain or the other way
/// round, the ID standing in for a missing host name, and the IP address
/// taken from a host name that is one. Inconsistent input is a 400.
fn address(
    id: &str,
    hostname: Option<&str>,
    domain: Option<&str>,
    fqdn: Option<&str>,
    ip: Option<&str>,
) -> Result<Address, DomainError> {
    let mut domain = domain.map(trim_name).unwrap_or("").to_string();
    let mut host = String::new();
    let mut host_is_ip = false;
    if let Some(h) = hostname.map(trim_name).filter(|h| !h.is_empty()) {
        if let Some(a) = as_ip(h) {
            host = a;
            host_is_ip = true;
        } else if h.contains('.') {
            return Err(DomainError::Invalid(format!(
                "Hostname {h:?} is neither a base name nor an IP address"
            )));
        } else {
            host = h.to_string();
        }
    }
    let fqdn = fqdn.map(str::trim).filter(|f| !f.is_empty());
    if let Some(f) = fqdn {
        let f_ip = as_ip(f);
        if let Some(a) = &f_ip
            && host.is_empty()
        {
            host = a.clone();
            host_is_ip = true;
        }
        let (f_host, f_domain) = match f.split_once('.') {
            Some((h, d)) => (trim_name(h), trim_name(d)),
            None => (trim_name(f), ""),
        };
        if host.is_empty() {
            host = f_host.to_string();
        }
        if domain.is_empty() && host == f_host {
            domain = f_domain.to_string();
        }
    }
    if host.is_empty() {
        host = id.to_string();
    }
    let derived = if domain.is_empty() || host_is_ip {
        host.clone()
    } else {
        format!("{host}.{domain}")
    };
    if let Some(f) = fqdn {
        let given = as_ip(f).unwrap_or_else(|| f.to_string());
        if !derived.eq_ignore_ascii_case(&given) {
            return Err(DomainError::Invalid(format!(
                "Hostname and Domain give {derived:?}, which conflicts with FQDN {given:?}"
            )));
        }
    }
    let ip_address = match ip.map(str::trim).filter(|s| !s.is_empty()) {
        Some(raw) => {
            let a = as_ip(raw).ok_or_else(|| {
                DomainError::Invalid(format!("IPAddress {raw:?} is not an IP address"))
            })?;
            if host_is_ip && a != host {
                return Err(DomainError::Invalid(format!(
                    "IPAddress {a} conflicts with the host address {host}"
                )));
            }
            a
        }
        None if host_is_ip => host.clone(),
        None => String::new(),
    };
    if host_is_ip {
        domain.clear();
    }
    Ok(Address {
        hostname: host,
        domain,
        fqdn: derived,
        ip_address,
    })
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|p| !p.is_empty())
}

/// A full endpoint record from input (POST, PUT). What the input does not
/// carry is reset to its default, except the password (kept if not given),
/// the discovery info and, for a plain body, the details.
fn build(
    txn: &Txn<'_>,
    id: &str,
    kind: HmsType,
    e: &EndpointIn,
    old: Option<&RedfishEndpoint>,
) -> Result<RedfishEndpoint, DomainError> {
    let a = address(
        id,
        e.hostname.as_deref(),
        e.domain.as_deref(),
        e.fqdn.as_deref(),
        e.ip_address.as_deref(),
    )?;
    let discovery_info = match (&e.inventory, old) {
        (Some(_), _) => DiscoveryInfo {
            last_discovery_attempt: interfaces::timestamp(txn.now()),
            last_discovery_status: DISCOVER_OK.into(),
            redfish_version: old
                .map(|o| o.discovery_info.redfish_version.clone())
                .unwrap_or_default(),
        },
        (None, Some(o)) => o.discovery_info.clone(),
        (None, None) => DiscoveryInfo {
            last_discovery_status: NOT_YET_QUERIED.into(),
            ..Default::default()
        },
    };
    let details = match (&e.inventory, old) {
        (Some(inv), _) => inv.details.clone(),
        (None, Some(o)) => o.details.clone(),
        (None, None) => Map::new(),
    };
    let services = match (&e.inventory, old) {
        (Some(inv), _) => inv.services.clone(),
        (None, Some(o)) => o.services.clone(),
        (None, None) => Vec::new(),
    };
    Ok(RedfishEndpoint {
        id: id.to_string(),
        kind: kind.as_str().to_string(),
        name: e.name.clone().unwrap_or_default(),
        hostname: a.hostname,
        domain: a.domain,
        fqdn: a.fqdn,
        enabled: e.enabled.unwrap_or(true),
        uuid: e.uuid.clone().unwrap_or_default(),
        user: e.user.clone().unwrap_or_default(),
        password: nonempty(&e.password)
            .map(str::to_string)
            .or_else(|| old.map(|o| o.password.clone()))
            .unwrap_or_default(),
        use_ssdp: e.use_ssdp.unwrap_or(false),
        mac_required: e.mac_required.unwrap_or(false),
        mac_addr: e.mac_addr.clone().unwrap_or_default(),
        ip_address: a.ip_address,
        rediscover_on_update: e.rediscover_on_update.unwrap_or(false),
        template_id: e.template_id.clone().unwrap_or_default(),
        discovery_info,
        details,
        services,
    })
}

/// 409 if another endpoint already has this (derived) FQDN.
fn check_fqdn(m: &Model, ep: &RedfishEndpoint) -> Result<(), DomainError> {
    match m
        .redfish_endpoints
        .values()
        .find(|o| o.id != ep.id && o.fqdn.eq_ignore_ascii_case(&ep.fqdn))
    {
        Some(o) => Err(DomainError::Conflict(format!(
            "FQDN {} of {} is already used by RedfishEndpoint {}",
            ep.fqdn, ep.id, o.id
        ))),
        None => Ok(()),
    }
}

/// `POST Inventory/RedfishEndpoints`: creates every endpoint and applies
/// its V2 effects; 409 if an ID or derived FQDN exists. Returns the IDs.
pub fn post(txn: &mut Txn<'_>, eps: &[EndpointIn]) -> Result<Vec<String>, DomainError> {
    let mut ids = Vec::with_capacity(eps.len());
    for e in eps {
        let raw = nonempty(&e.id)
            .ok_or_else(|| DomainError::Invalid("RedfishEndpoint ID is required".into()))?;
        let (id, kind) = endpoint_id(raw)?;
        if txn.model().redfish_endpoints.contains_key(&id) {
            // Upstream's words, which its tests compare.
            return Err(DomainError::Conflict(
                "operation would conflict with an existing resource that has the same FQDN or xname ID."
                    .into(),
            ));
        }
        let ep = build(txn, &id, kind, e, None)?;
        check_fqdn(txn.model(), &ep)?;
        txn.put_redfish_endpoint(ep.clone());
        if let Some(inv) = &e.inventory {
            apply_inventory(txn, &ep, inv, false)?;
        }
        ids.push(id);
    }
    Ok(ids)
}

/// `PUT …/{xname}`: creates or replaces the endpoint and (re)applies its V2
/// effects, moving MACs that now belong elsewhere.
pub fn put(
    txn: &mut Txn<'_>,
    path_id: &str,
    e: &EndpointIn,
) -> Result<RedfishEndpoint, DomainError> {
    let (id, kind) = endpoint_id(path_id)?;
    if let Some(body_id) = nonempty(&e.id) {
        let (body_id, _) = parse_xname(body_id)?;
        if body_id != id {
            return Err(DomainError::Invalid(format!(
                "body ID {body_id} does not match path {id}"
            )));
        }
    }
    let old = txn.model().redfish_endpoint(&id).cloned();
    let ep = build(txn, &id, kind, e, old.as_ref())?;
    check_fqdn(txn.model(), &ep)?;
    txn.put_redfish_endpoint(ep.clone());
    if let Some(inv) = &e.inventory {
        apply_inventory(txn, &ep, inv, true)?;
    }
    Ok(ep)
}

/// `PATCH …/{xname}`: changes only what the body carries; `ID`, `Type` and
/// a V2 inventory are ignored, an empty password keeps the stored one.
pub fn patch(
    txn: &mut Txn<'_>,
    path_id: &str,
    e: &EndpointIn,
) -> Result<RedfishEndpoint, DomainError> {
    let (id, _) = parse_xname(path_id)?;
    let old = txn
        .model()
        .redfish_endpoints
        .get(&id)
        .cloned()
        .ok_or_else(|| DomainError::NotFound(format!("no RedfishEndpoint {id}")))?;
    let mut ep = RedfishEndpoint::clone(&old);
    let set = |target: &mut String, v: &Option<String>| {
        if let Some(v) = v {
            *target = v.clone();
        }
    };
    set(&mut ep.name, &e.name);
    set(&mut ep.uuid, &e.uuid);
    set(&mut ep.user, &e.user);
    set(&mut ep.mac_addr, &e.mac_addr);
    set(&mut ep.template_id, &e.template_id);
    if let Some(p) = nonempty(&e.password) {
        ep.password = p.to_string();
    }
    ep.enabled = e.enabled.unwrap_or(ep.enabled);
    ep.use_ssdp = e.use_ssdp.unwrap_or(ep.use_ssdp);
    ep.mac_required = e.mac_required.unwrap_or(ep.mac_required);
    ep.rediscover_on_update = e.rediscover_on_update.unwrap_or(ep.rediscover_on_update);
    let moves = e.fqdn.is_some() || e.hostname.is_some() || e.domain.is_some();
    if moves || e.ip_address.is_some() {
        let (h, d, f) = if e.fqdn.is_some() {
            (e.hostname.clone(), e.domain.clone(), e.fqdn.clone())
        } else if moves {
            (
                e.hostname.clone().or_else(|| Some(old.hostname.clone())),
                e.domain.clone().or_else(|| Some(old.domain.clone())),
                None,
            )
        } else {
            (
                Some(old.hostname.clone()),
                Some(old.domain.clone()),
                Some(old.fqdn.clone()),
            )
        };
        // An address derived from the old FQDN goes with it.
        let ip = e.ip_address.clone().or_else(|| {
            (old.ip_address != old.hostname && old.ip_address != old.fqdn)
                .then(|| old.ip_address.clone())
        });
        let a = address(&id, h.as_deref(), d.as_deref(), f.as_deref(), ip.as_deref())?;
        ep.hostname = a.hostname;
        ep.domain = a.domain;
        ep.fqdn = a.fqdn;
        ep.ip_address = a.ip_address;
        check_fqdn(txn.model(), &ep)?;
    }
    if ep != *old {
        txn.put_redfish_endpoint(ep.clone());
    }
    Ok(ep)
}

/// A component that lost its endpoint: upstream marks it `Empty`.
fn set_empty(txn: &mut Txn<'_>, id: &str) {
    if let Some(c) = txn.model().component(id)
        && (c.state != "Empty" || c.flag != "OK")
    {
        let mut c = c.clone();
        c.state = "Empty".into();
        c.flag = "OK".into();
        txn.put_component(c);
    }
}

fn component_endpoints_of(m: &Model, endpoint: &str) -> Vec<String> {
    m.component_endpoints
        .values()
        .filter(|c| c.redfish_endpoint_id == endpoint)
        .map(|c| c.id.clone())
        .collect()
}

/// `DELETE …/{xname}`: the endpoint, its ComponentEndpoints, and its
/// components marked `Empty`.
pub fn delete(txn: &mut Txn<'_>, raw_id: &str) -> Result<(), DomainError> {
    // Upstream's words, which its tests compare.
    let (id, _) = parse_xname(raw_id)
        .map_err(|_| DomainError::Invalid("Argument was not a valid xname ID".into()))?;
    txn.delete_redfish_endpoint(&id)
        .ok_or_else(|| DomainError::NotFound("no such xname.".into()))?;
    for ce in component_endpoints_of(txn.model(), &id) {
        txn.delete_component_endpoint(&ce);
        set_empty(txn, &ce);
    }
    Ok(())
}

/// `DELETE Inventory/RedfishEndpoints`; returns how many were removed.
pub fn delete_all(txn: &mut Txn<'_>) -> usize {
    let ids: Vec<String> = txn.model().redfish_endpoints.keys().cloned().collect();
    for id in &ids {
        let _ = delete(txn, id);
    }
    ids.len()
}

/// `DELETE Inventory/ComponentEndpoints/{xname}`; its component becomes
/// `Empty`, as upstream.
pub fn delete_component_endpoint(txn: &mut Txn<'_>, raw_id: &str) -> Result<(), DomainError> {
    let (id, _) = parse_xname(raw_id)
        .map_err(|_| DomainError::Invalid("Argument was not a valid xname ID".into()))?;
    txn.delete_component_endpoint(&id)
        .ok_or_else(|| DomainError::NotFound("no such xname.".into()))?;
    set_empty(txn, &id);
    Ok(())
}

/// `DELETE Inventory/ComponentEndpoints`; returns how many were removed.
pub fn delete_all_component_endpoints(txn: &mut Txn<'_>) -> usize {
    let ids: Vec<String> = txn.model().component_endpoints.keys().cloned().collect();
    for id in &ids {
        txn.delete_component_endpoint(id);
        set_empty(txn, id);
    }
    ids.len()
}

/// The node a System becomes: its path's last segment if that is a node
/// xname under the BMC, else `None` (named `<ID>n<k>` later).
fn node_from_path(bmc: &str, path: &str) -> Option<String> {
    let seg = path.trim_end_matches('/').rsplit('/').next()?;
    let (id, kind) = parse_xname(seg).ok()?;
    (kind == HmsType::Node && xname::parent(&id).as_deref() == Some(bmc)).then_some(id)
}

/// Distinct Systems (by UUID, else path) with their node xnames.
fn name_nodes<'a>(
    bmc: &str,
    systems: &'a [ResourceIn],
) -> Result<Vec<(String, &'a ResourceIn)>, DomainError> {
    let mut keys = HashSet::new();
    let distinct: Vec<&ResourceIn> = systems
        .iter()
        .enumerate()
        .filter(|(k, s)| {
            let key = if !s.uuid.is_empty() {
                format!("uuid:{}", s.uuid.to_lowercase())
            } else if !s.path.is_empty() {
                format!("path:{}", s.path)
            } else {
                format!("index:{k}")
            };
            keys.insert(key)
        })
        .map(|(_, s)| s)
        .collect();
    let mut used = HashSet::new();
    let named: Vec<Option<String>> = distinct
        .iter()
        .map(|s| node_from_path(bmc, &s.path).filter(|n| used.insert(n.clone())))
        .collect();
    let mut out = Vec::with_capacity(distinct.len());
    for (k, (s, name)) in distinct.into_iter().zip(named).enumerate() {
        let name = match name {
            Some(n) => n,
            None => {
                let mut j = k;
                let candidate = loop {
                    let c = format!("{bmc}n{j}");
                    if !used.contains(&c) {
                        break c;
                    }
                    j += 1;
                };
                match parse_xname(&candidate) {
                    Ok((n, HmsType::Node)) => {
                        used.insert(n.clone());
                        n
                    }
                    _ => {
                        return Err(DomainError::Invalid(format!(
                            "cannot name a node for System {:?} under {bmc}: \
                             its URI does not end in a node xname under it",
                            s.path
                        )));
                    }
                }
            }
        };
        out.push((name, s));
    }
    Ok(out)
}

/// The component a discovered resource stands for. A new one gets
/// upstream's defaults and `state`; an existing one keeps everything
/// (NID, Role, SubRole, Flag, Enabled), but is marked present again if it
/// was `Unknown`, `Empty` or `Populated`.
fn present(m: &Model, id: &str, kind: HmsType, state: &str) -> Component {
    match m.component(id) {
        Some(c) => {
            let mut c = c.clone();
            if matches!(c.state.as_str(), "Unknown" | "Empty" | "Populated") {
                c.state = state.to_string();
            }
            c
        }
        None => {
            let mut c = Component::new(id.to_string(), kind.as_str().to_string());
            c.state = state.to_string();
            c.enabled = Some(true);
            c.net_type = Some("Sling".into());
            c.arch = Some("X86".into());
            c.class = Some("River".into());
            let mapped_role = m.node_maps.get(id).is_some_and(|nm| !nm.role.is_empty());
            if kind.is_node() && !mapped_role {
                c.role = Some("Compute".into());
            }
            c
        }
    }
}

fn nic_info(nics: &[NicIn]) -> Vec<EthernetNicInfo> {
    nics.iter()
        .map(|n| EthernetNicInfo {
            redfish_id: n
                .path
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string(),
            odata_id: n.path.clone(),
            description: n.description.clone(),
            mac_address: n.mac.clone().unwrap_or_default(),
        })
        .collect()
}

fn reset(path: &str, action: &str, allowed: &[String]) -> Option<ResetAction> {
    (!path.is_empty()).then(|| ResetAction {
        target: format!("{path}/Actions/{action}"),
        allowable_values: allowed.to_vec(),
    })
}

fn manager_endpoint(ep: &RedfishEndpoint, m: &ResourceIn) -> ComponentEndpoint {
    let manager_reset = reset(&m.path, "Manager.Reset", &m.actions);
    ComponentEndpoint {
        id: ep.id.clone(),
        kind: ep.kind.clone(),
        domain: ep.domain.clone(),
        fqdn: ep.fqdn.clone(),
        redfish_type: "Manager".into(),
        redfish_subtype: m.subtype.clone(),
        uuid: m.uuid.clone(),
        odata_id: m.path.clone(),
        redfish_endpoint_id: ep.id.clone(),
        redfish_endpoint_fqdn: ep.fqdn.clone(),
        redfish_url: format!("{}{}", ep.fqdn, m.path),
        enabled: true,
        component_endpoint_type: "ComponentEndpointManager".into(),
        redfish_system_info: None,
        redfish_chassis_info: None,
        redfish_manager_info: Some(RedfishResourceInfo {
            name: m.name.clone(),
            actions: manager_reset.map(|r| Actions {
                manager_reset: Some(r),
                ..Default::default()
            }),
            ethernet_nic_info: nic_info(&m.nics),
            power_url: String::new(),
        }),
    }
}

fn system_endpoint(ep: &RedfishEndpoint, node: &str, s: &ResourceIn) -> ComponentEndpoint {
    let system_reset = reset(&s.path, "ComputerSystem.Reset", &s.actions);
    ComponentEndpoint {
        id: node.to_string(),
        kind: HmsType::Node.as_str().into(),
        domain: String::new(),
        fqdn: String::new(),
        redfish_type: "ComputerSystem".into(),
        redfish_subtype: s.subtype.clone(),
        uuid: s.uuid.clone(),
        odata_id: s.path.clone(),
        redfish_endpoint_id: ep.id.clone(),
        redfish_endpoint_fqdn: ep.fqdn.clone(),
        redfish_url: s.path.clone(),
        enabled: true,
        component_endpoint_type: "ComponentEndpointComputerSystem".into(),
        redfish_system_info: Some(RedfishResourceInfo {
            name: s.name.clone(),
            actions: system_reset.map(|r| Actions {
                computer_system_reset: Some(r),
                ..Default::default()
            }),
            ethernet_nic_info: nic_info(&s.nics),
            power_url: s
                .chassis
                .as_deref()
                .filter(|c| !c.is_empty())
                .map(|c| format!("{}/Power", c.trim_end_matches('/')))
                .unwrap_or_default(),
        }),
        redfish_manager_info: None,
        redfish_chassis_info: None,
    }
}

/// The V2 effects of one endpoint (§3.3): components, ComponentEndpoints
/// (replacing the endpoint's old ones) and interfaces. `allow_move` lets a
/// MAC bound to another component move here (PUT).
fn apply_inventory(
    txn: &mut Txn<'_>,
    ep: &RedfishEndpoint,
    inv: &Inventory,
    allow_move: bool,
) -> Result<(), DomainError> {
    let (_, bmc_kind) = endpoint_id(&ep.id)?;
    let nodes = name_nodes(&ep.id, &inv.systems)?;

    let mut comps = Vec::with_capacity(nodes.len() + 1);
    if !inv.managers.is_empty() {
        comps.push(present(txn.model(), &ep.id, bmc_kind, "Ready"));
    }
    for (node, _) in &nodes {
        comps.push(present(txn.model(), node, HmsType::Node, "On"));
    }
    let linked = inv.systems.first().and_then(|s| s.chassis.as_deref());
    let chassis = enclosures::tracked(&ep.id, bmc_kind, &inv.chassis, nodes.len(), linked);
    for (id, t, c) in &chassis {
        comps.push(enclosures::component(txn.model().component(id), id, *t, c));
    }
    components::put_all(txn, comps)?;

    for ce in component_endpoints_of(txn.model(), &ep.id) {
        txn.delete_component_endpoint(&ce);
    }
    if let Some(m) = inv.managers.first() {
        txn.put_component_endpoint(manager_endpoint(ep, m));
    }
    for (node, s) in &nodes {
        txn.put_component_endpoint(system_endpoint(ep, node, s));
    }
    for (id, t, c) in &chassis {
        txn.put_component_endpoint(enclosures::endpoint(ep, id, *t, c));
    }

    // Several BMCs reached on different ports of one address (port
    // forwarding, simulators) all report that address: it identifies none
    // of them, so no NIC is bound to it (the endpoint keeps it).
    let shared: Option<std::net::IpAddr> = [ep.fqdn.as_str(), ep.ip_address.as_str()]
        .iter()
        .find_map(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip());
    // A MAC listed twice in one payload is bound where it first appears.
    let mut seen = HashSet::new();
    let owners = inv
        .managers
        .iter()
        .map(|m| (ep.id.as_str(), m))
        .chain(nodes.iter().map(|(n, s)| (n.as_str(), *s)));
    for (owner, r) in owners {
        for n in &r.nics {
            if let Some(m) = &n.mac
                && seen.insert(m.clone())
            {
                let ip = n.ip.as_deref().filter(|ip| {
                    shared.is_none_or(|s| ip.parse::<std::net::IpAddr>().ok() != Some(s))
                });
                interfaces::bind(txn, m, owner, ip, &n.description, allow_move)?;
            }
        }
    }
    Ok(())
}

fn xname_value(v: &str) -> Result<String, DomainError> {
    parse_xname(v).map(|(x, _)| x)
}

fn mac_value(v: &str) -> String {
    mac::normalize(v).unwrap_or_else(|_| v.to_lowercase())
}

/// Filters of `GET Inventory/RedfishEndpoints`.
#[derive(Debug, Clone, Default)]
pub struct EndpointFilter {
    pub id: Matcher,
    pub fqdn: Matcher,
    pub kind: Matcher,
    pub uuid: Matcher,
    pub mac: Matcher,
    pub ip: Matcher,
    pub status: Matcher,
}

impl EndpointFilter {
    /// From lower-cased query keys; IDs, MACs and IPs are normalised.
    pub fn from_query(get: impl Fn(&str) -> Vec<String>) -> Result<EndpointFilter, DomainError> {
        // Upstream's messages for values no endpoint can have.
        let bad = |what: &str| {
            DomainError::Invalid(format!("bad query param: Argument was not a valid {what}"))
        };
        let ids = normalize_each(get("id"), xname_value).map_err(|_| bad("xname ID"))?;
        for t in get("type") {
            if HmsType::parse(t.strip_prefix('!').unwrap_or(&t)).is_none() {
                return Err(bad("HMS Type"));
            }
        }
        Ok(EndpointFilter {
            id: Matcher::new(ids),
            fqdn: Matcher::new(get("fqdn")),
            kind: Matcher::new(get("type")),
            uuid: Matcher::new(get("uuid")),
            mac: Matcher::new(normalize_each(get("macaddr"), |v| Ok(mac_value(v)))?),
            ip: Matcher::new(normalize_each(get("ipaddress"), |v| {
                Ok(as_ip(v).unwrap_or_else(|| v.to_string()))
            })?),
            status: Matcher::new(get("laststatus")),
        })
    }

    pub fn matches(&self, e: &RedfishEndpoint) -> bool {
        self.id.matches(Some(&e.id))
            && self.fqdn.matches(Some(&e.fqdn))
            && self.kind.matches(Some(&e.kind))
            && self.uuid.matches(Some(&e.uuid))
            && self.mac.matches(Some(&mac_value(&e.mac_addr)))
            && self.ip.matches(Some(&e.ip_address))
            && self
                .status
                .matches(Some(&e.discovery_info.last_discovery_status))
    }
}

/// Filters of `GET Inventory/ComponentEndpoints`.
#[derive(Debug, Clone, Default)]
pub struct ComponentEndpointFilter {
    pub id: Matcher,
    pub redfish_ep: Matcher,
    pub kind: Matcher,
    pub redfish_type: Matcher,
}

impl ComponentEndpointFilter {
    pub fn from_query(
        get: impl Fn(&str) -> Vec<String>,
    ) -> Result<ComponentEndpointFilter, DomainError> {
        Ok(ComponentEndpointFilter {
            id: Matcher::new(normalize_each(get("id"), xname_value)?),
            redfish_ep: Matcher::new(normalize_each(get("redfish_ep"), xname_value)?),
            kind: Matcher::new(get("type")),
            redfish_type: Matcher::new(get("redfish_type")),
        })
    }

    pub fn matches(&self, c: &ComponentEndpoint) -> bool {
        self.id.matches(Some(&c.id))
            && self.redfish_ep.matches(Some(&c.redfish_endpoint_id))
            && self.kind.matches(Some(&c.kind))
            && self.redfish_type.matches(Some(&c.redfish_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Store, WriteError};
    use serde_json::json;

    /// The §3.3 example, plus a second System to exercise both naming rules.
    fn v2() -> Value {
        json!({"ID":"x1000c0s0b0","Type":"","Name":"","FQDN":"172.16.0.101","User":"admin","MACRequired":true,
            "MACAddr":"52:54:00:be:ee:01","SchemaVersion":1,
            "Managers":[{"uri":"https://172.16.0.101:443/redfish/v1/Managers/bmc","type":"BMC","serial_console":null,
                "command_shell":null,"ethernet_interfaces":[{"mac":"52:54:00:be:ee:01","ip":"172.16.0.101"}]}],
            "Systems":[{"uri":"https://172.16.0.101:443/redfish/v1/Systems/1","uuid":"u-1","name":"node1",
                "manufacturer":"QEMU","memory_total":{"odd":"shape"},"serial_console":{"x":1},
                "actions":["On","ForceOff","GracefulShutdown"],
                "ethernet_interfaces":[{"mac":"52:54:00:be:ef:01","ip":"172.16.0.1"}]}]})
    }

    fn one(v: &Value) -> Vec<EndpointIn> {
        decode_post(v).unwrap()
    }

    async fn post_v(store: &Store, v: Value) -> Result<Vec<String>, WriteError> {
        let eps = one(&v);
        store.write(move |t| post(t, &eps)).await
    }

    async fn put_v(store: &Store, id: &str, v: Value) -> Result<RedfishEndpoint, WriteError> {
        let e = decode(&v).unwrap();
        let id = id.to_string();
        store.write(move |t| put(t, &id, &e)).await
    }

    #[test]
    fn uris_are_reduced_to_paths() {
        assert_eq!(
            reduce_uri("https://172.16.0.101:443/redfish/v1/Systems/1"),
            "/redfish/v1/Systems/1"
        );
        assert_eq!(reduce_uri("http://h/a?b#c"), "/a");
        assert_eq!(reduce_uri("/redfish/v1/Systems/1"), "/redfish/v1/Systems/1");
        assert_eq!(reduce_uri("https://host"), "");
    }

    #[test]
    fn derivations() {
        let a = address("x0c0s0b0", None, None, None, None).unwrap();
        assert_eq!(
            (a.fqdn.as_str(), a.hostname.as_str()),
            ("x0c0s0b0", "x0c0s0b0")
        );
        assert_eq!(a.ip_address, "");
        let a = address("x0c0s0b0", None, None, Some("172.16.0.101"), None).unwrap();
        assert_eq!(a.fqdn, "172.16.0.101");
        assert_eq!(a.hostname, "172.16.0.101");
        assert_eq!(a.ip_address, "172.16.0.101");
        assert_eq!(a.domain, "");
        let a = address("x0c0s0b0", None, None, Some("bmc1.example.com"), None).unwrap();
        assert_eq!(
            (a.hostname.as_str(), a.domain.as_str()),
            ("bmc1", "example.com")
        );
        let a = address("x0c0s0b0", None, Some("example.com"), None, None).unwrap();
        assert_eq!(a.fqdn, "x0c0s0b0.example.com");
        assert!(address("x0c0s0b0", Some("a"), Some("b"), Some("c.d"), None).is_err());
        assert!(address("x0c0s0b0", None, None, Some("10.0.0.1"), Some("10.0.0.2")).is_err());
        assert!(address("x0c0s0b0", None, None, None, Some("nope")).is_err());
    }

    #[tokio::test]
    async fn v2_post_creates_everything() {
        let store = Store::open_in_memory().unwrap();
        let ids = post_v(&store, v2()).await.unwrap();
        assert_eq!(ids, vec!["x1000c0s0b0"]);
        let s = store.snapshot();

        let ep = &s.redfish_endpoints["x1000c0s0b0"];
        assert_eq!(ep.kind, "NodeBMC");
        assert_eq!(
            (
                ep.fqdn.as_str(),
                ep.hostname.as_str(),
                ep.ip_address.as_str()
            ),
            ("172.16.0.101", "172.16.0.101", "172.16.0.101")
        );
        assert_eq!(ep.mac_addr, "52:54:00:be:ee:01");
        assert!(ep.mac_required);
        assert_eq!(ep.discovery_info.last_discovery_status, DISCOVER_OK);
        assert!(!ep.discovery_info.last_discovery_attempt.is_empty());
        assert_eq!(ep.details["Systems"][0]["manufacturer"], "QEMU");
        assert_eq!(ep.details["Systems"][0]["uri"], "/redfish/v1/Systems/1");

        let bmc = &s.components["x1000c0s0b0"];
        assert_eq!(
            (bmc.kind.as_str(), bmc.state.as_str(), bmc.enabled),
            ("NodeBMC", "Ready", Some(true))
        );
        let node = &s.components["x1000c0s0b0n0"];
        assert_eq!(
            (node.kind.as_str(), node.state.as_str(), node.enabled),
            ("Node", "On", Some(true))
        );
        assert_eq!(node.nid, Some(1));

        let ce = &s.component_endpoints["x1000c0s0b0n0"];
        assert_eq!(ce.redfish_type, "ComputerSystem");
        assert_eq!(
            ce.component_endpoint_type,
            "ComponentEndpointComputerSystem"
        );
        assert_eq!(ce.redfish_url, "/redfish/v1/Systems/1");
        assert_eq!(ce.odata_id, "/redfish/v1/Systems/1");
        assert_eq!(ce.redfish_endpoint_id, "x1000c0s0b0");
        let info = ce.redfish_system_info.as_ref().unwrap();
        let r = info
            .actions
            .as_ref()
            .unwrap()
            .computer_system_reset
            .as_ref()
            .unwrap();
        assert_eq!(
            r.target,
            "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
        );
        assert_eq!(
            r.allowable_values,
            vec!["On", "ForceOff", "GracefulShutdown"]
        );
        assert_eq!(info.ethernet_nic_info[0].mac_address, "52:54:00:be:ef:01");

        let mce = &s.component_endpoints["x1000c0s0b0"];
        assert_eq!(mce.redfish_type, "Manager");
        assert_eq!(mce.redfish_url, "172.16.0.101/redfish/v1/Managers/bmc");
        let mr = mce
            .redfish_manager_info
            .as_ref()
            .unwrap()
            .actions
            .as_ref()
            .unwrap()
            .manager_reset
            .as_ref()
            .unwrap();
        assert_eq!(mr.target, "/redfish/v1/Managers/bmc/Actions/Manager.Reset");

        let nic = &s.interfaces["525400beef01"];
        assert_eq!(nic.component_id, "x1000c0s0b0n0");
        assert_eq!(nic.kind, "Node");
        assert_eq!(nic.ip_addresses[0].ip_address, "172.16.0.1");
        assert_eq!(nic.ip_addresses[0].network, "");
        let bnic = &s.interfaces["525400beee01"];
        assert_eq!(
            (bnic.component_id.as_str(), bnic.kind.as_str()),
            ("x1000c0s0b0", "NodeBMC")
        );
    }

    #[tokio::test]
    async fn node_names_from_path_or_index() {
        let store = Store::open_in_memory().unwrap();
        let mut v = v2();
        v["Systems"] = json!([
            {"uri":"/redfish/v1/Systems/X1000C0S0B0N1","uuid":"a",
             "ethernet_interfaces":[{"mac":"52:54:00:00:00:01"}]},
            {"uri":"/redfish/v1/Systems/Self","uuid":"b"},
            {"uri":"/redfish/v1/Systems/Self2","uuid":"b"},
            {"uri":"/redfish/v1/Systems/x9c0s0b0n0","uuid":"c"}
        ]);
        post_v(&store, v).await.unwrap();
        let s = store.snapshot();
        let mut nodes: Vec<&str> = s
            .components
            .values()
            .filter(|c| c.is_node())
            .map(|c| c.id.as_str())
            .collect();
        nodes.sort();
        // n1 from its path; "Self" is k = 1, taken, so n2; a duplicate UUID is
        // skipped; a node xname under another BMC is not used (k = 2 → n3).
        assert_eq!(
            nodes,
            vec!["x1000c0s0b0n1", "x1000c0s0b0n2", "x1000c0s0b0n3"]
        );
        assert_eq!(s.interfaces["525400000001"].component_id, "x1000c0s0b0n1");
        let mut nids: Vec<i64> = s.nids.keys().copied().collect();
        nids.sort();
        assert_eq!(nids, vec![1, 2, 3], "NIDs unique across the batch");
    }

    #[tokio::test]
    async fn repeat_post_conflicts_and_changes_nothing() {
        let store = Store::open_in_memory().unwrap();
        post_v(&store, v2()).await.unwrap();
        let generation = store.snapshot().generation;
        let err = post_v(&store, v2()).await.unwrap_err();
        assert!(matches!(err, WriteError::Domain(DomainError::Conflict(_))));
        // Another ID with the same derived FQDN is a conflict too.
        let mut other = v2();
        other["ID"] = json!("x1000c0s1b0");
        let err = post_v(&store, other).await.unwrap_err();
        assert!(matches!(err, WriteError::Domain(DomainError::Conflict(_))));
        assert_eq!(store.snapshot().generation, generation);
    }

    #[tokio::test]
    async fn put_repost_keeps_nids_and_roles_and_moves_macs() {
        let store = Store::open_in_memory().unwrap();
        post_v(&store, v2()).await.unwrap();
        store
            .write(|t| {
                let mut c = t.model().component("x1000c0s0b0n0").unwrap().clone();
                c.nid = Some(42);
                c.role = Some("Service".into());
                c.sub_role = Some("Master".into());
                c.state = "Ready".into();
                components::put_all(t, vec![c]).map(|_| ())
            })
            .await
            .unwrap();

        // A second BMC claims the node's MAC: refused on POST, moved on PUT.
        let mut b1 = v2();
        b1["ID"] = json!("x1000c0s1b0");
        b1["FQDN"] = json!("172.16.0.102");
        b1["Managers"] = json!([]);
        b1["Systems"][0]["uuid"] = json!("u-2");
        let err = post_v(&store, b1.clone()).await.unwrap_err();
        assert!(matches!(err, WriteError::Domain(DomainError::Conflict(_))));
        assert!(
            !store
                .snapshot()
                .redfish_endpoints
                .contains_key("x1000c0s1b0")
        );

        let ep = put_v(&store, "x1000c0s1b0", b1).await.unwrap();
        assert_eq!(ep.id, "x1000c0s1b0");
        let s = store.snapshot();
        assert_eq!(s.interfaces["525400beef01"].component_id, "x1000c0s1b0n0");
        assert_eq!(s.components["x1000c0s1b0n0"].nid, Some(43));

        // Re-posting the first BMC keeps NID, role and state, and moves the MAC back.
        put_v(&store, "x1000c0s0b0", v2()).await.unwrap();
        let s = store.snapshot();
        let n = &s.components["x1000c0s0b0n0"];
        assert_eq!(n.nid, Some(42));
        assert_eq!(n.role.as_deref(), Some("Service"));
        assert_eq!(n.sub_role.as_deref(), Some("Master"));
        assert_eq!(n.state, "Ready");
        assert_eq!(s.interfaces["525400beef01"].component_id, "x1000c0s0b0n0");
        assert_eq!(
            s.component_endpoints
                .values()
                .filter(|c| c.redfish_endpoint_id == "x1000c0s0b0")
                .count(),
            2
        );
    }

    #[tokio::test]
    async fn chassis_become_the_node_enclosure_once() {
        let store = Store::open_in_memory().unwrap();
        let mut v = v2();
        v["Systems"][0]["links"] = json!({"chassis": ["/redfish/v1/Chassis/Enc"]});
        v["Chassis"] = json!([
            {"uri": "https://172.16.0.101:443/redfish/v1/Chassis/Card", "chassis_type": "Card"},
            {"uri": "https://172.16.0.101:443/redfish/v1/Chassis/Other", "chassis_type": "RackMount"},
            {"uri": "https://172.16.0.101:443/redfish/v1/Chassis/Enc", "chassis_type": "Enclosure",
             "name": "Enclosure 1", "power_state": "On", "state": "Enabled",
             "health": "OK", "reset": {"target": "/redfish/v1/Chassis/Enc/Actions/Chassis.Reset",
             "allowed": ["On", "ForceOff"]}},
            {"no": "uri"}
        ]);
        post_v(&store, v.clone()).await.unwrap();
        let first = store.snapshot();
        let ce = &first.component_endpoints["x1000c0s0e0"];
        let got = serde_json::to_value(ce).unwrap();
        assert_eq!(
            got,
            json!({"ID": "x1000c0s0e0", "Type": "NodeEnclosure", "Domain": "", "FQDN": "",
                "RedfishType": "Chassis", "RedfishSubtype": "Enclosure",
                "OdataID": "/redfish/v1/Chassis/Enc", "RedfishEndpointID": "x1000c0s0b0",
                "RedfishEndpointFQDN": "172.16.0.101",
                "RedfishURL": "172.16.0.101/redfish/v1/Chassis/Enc", "Enabled": true,
                "ComponentEndpointType": "ComponentEndpointChassis",
                "RedfishChassisInfo": {"Name": "Enclosure 1", "Actions": {"#Chassis.Reset": {
                    "target": "/redfish/v1/Chassis/Enc/Actions/Chassis.Reset",
                    "ResetType@Redfish.AllowableValues": ["On", "ForceOff"]}}}})
        );
        let c = &first.components["x1000c0s0e0"];
        assert_eq!(
            (c.kind.as_str(), c.state.as_str(), c.flag.as_str()),
            ("NodeEnclosure", "On", "OK")
        );
        assert_eq!(
            first
                .component_endpoints
                .values()
                .filter(|c| c.redfish_endpoint_id == "x1000c0s0b0")
                .count(),
            3,
            "BMC, node and one enclosure"
        );
        // Re-discovery changes nothing.
        put_v(&store, "x1000c0s0b0", v.clone()).await.unwrap();
        let again = store.snapshot();
        assert_eq!(again.component_endpoints, first.component_endpoints);
        assert_eq!(
            again.components["x1000c0s0e0"],
            first.components["x1000c0s0e0"]
        );
        // Without Chassis (magellan's payload) there is no enclosure.
        v["Chassis"] = json!([]);
        put_v(&store, "x1000c0s0b0", v).await.unwrap();
        assert!(
            !store
                .snapshot()
                .component_endpoints
                .contains_key("x1000c0s0e0")
        );
    }

    #[tokio::test]
    async fn put_replaces_component_endpoints() {
        let store = Store::open_in_memory().unwrap();
        post_v(&store, v2()).await.unwrap();
        let mut v = v2();
        v["Systems"][0]["uri"] = json!("/redfish/v1/Systems/x1000c0s0b0n5");
        put_v(&store, "X1000C0S0B0", v).await.unwrap();
        let s = store.snapshot();
        assert!(!s.component_endpoints.contains_key("x1000c0s0b0n0"));
        assert!(s.component_endpoints.contains_key("x1000c0s0b0n5"));
        assert_eq!(s.interfaces["525400beef01"].component_id, "x1000c0s0b0n5");
    }

    #[tokio::test]
    async fn password_is_kept_when_not_given() {
        let store = Store::open_in_memory().unwrap();
        let mut v = v2();
        v["Password"] = json!("sealed-1");
        post_v(&store, v).await.unwrap();
        put_v(&store, "x1000c0s0b0", v2()).await.unwrap();
        assert_eq!(
            store.snapshot().redfish_endpoints["x1000c0s0b0"].password,
            "sealed-1"
        );
        let e = decode(&json!({"Password": "", "Name": "bmc"})).unwrap();
        let ep = store
            .write(move |t| patch(t, "x1000c0s0b0", &e))
            .await
            .unwrap();
        assert_eq!(ep.password, "sealed-1");
        assert_eq!(ep.name, "bmc");
        assert_eq!(ep.public().password, "");
    }

    #[tokio::test]
    async fn patch_rederives_addresses() {
        let store = Store::open_in_memory().unwrap();
        post_v(&store, v2()).await.unwrap();
        let e = decode_patch(&json!({"FQDN": "bmc1.example.com", "Type": 7, "ID": 9,
            "SchemaVersion": "x", "Systems": [{"uri": 1}]}))
        .unwrap();
        assert!(e.inventory.is_none() && e.id.is_none());
        let ep = store
            .write(move |t| patch(t, "x1000c0s0b0", &e))
            .await
            .unwrap();
        assert_eq!(ep.kind, "NodeBMC", "Type and ID are ignored");
        assert_eq!(
            (
                ep.hostname.as_str(),
                ep.domain.as_str(),
                ep.ip_address.as_str()
            ),
            ("bmc1", "example.com", "")
        );
        let missing = decode(&json!({"Name": "x"})).unwrap();
        let err = store
            .write(move |t| patch(t, "x1000c0s9b0", &missing))
            .await
            .unwrap_err();
        assert!(matches!(err, WriteError::Domain(DomainError::NotFound(_))));
    }

    #[tokio::test]
    async fn delete_empties_components() {
        let store = Store::open_in_memory().unwrap();
        post_v(&store, v2()).await.unwrap();
        store.write(|t| delete(t, "x1000c0s0b0")).await.unwrap();
        let s = store.snapshot();
        assert!(s.redfish_endpoints.is_empty());
        assert!(s.component_endpoints.is_empty());
        assert_eq!(s.components["x1000c0s0b0"].state, "Empty");
        assert_eq!(s.components["x1000c0s0b0n0"].state, "Empty");
        assert_eq!(s.components["x1000c0s0b0n0"].nid, Some(1));
        // Discovering it again makes it present again, with the same NID.
        post_v(&store, v2()).await.unwrap();
        let s = store.snapshot();
        assert_eq!(s.components["x1000c0s0b0n0"].state, "On");
        assert_eq!(s.components["x1000c0s0b0n0"].nid, Some(1));
        assert_eq!(s.components["x1000c0s0b0"].state, "Ready");
    }

    #[tokio::test]
    async fn a_failing_record_changes_nothing() {
        let store = Store::open_in_memory().unwrap();
        let mut bad = v2();
        bad["ID"] = json!("x1000c0s1b0");
        bad["FQDN"] = json!("172.16.0.102");
        bad["Systems"][0]["ethernet_interfaces"][0]["mac"] = json!("52:54:00:be:ef:02");
        bad["Systems"][0]["uuid"] = json!("u-2");
        bad["Managers"][0]["ethernet_interfaces"][0]["mac"] = json!("52:54:00:be:ee:02");
        // The third endpoint repeats the first one's FQDN.
        let mut clash = bad.clone();
        clash["ID"] = json!("x1000c0s2b0");
        clash["FQDN"] = json!("172.16.0.101");
        clash["Managers"] = json!([]);
        clash["Systems"] = json!([]);
        let body = json!({"RedfishEndpoints": [v2(), bad, clash]});
        let eps = decode_post(&body).unwrap();
        assert_eq!(eps.len(), 3);
        let err = store.write(move |t| post(t, &eps)).await.unwrap_err();
        assert!(matches!(err, WriteError::Domain(DomainError::Conflict(_))));
        let s = store.snapshot();
        assert_eq!(s.generation, 0);
        assert!(s.components.is_empty() && s.interfaces.is_empty());
        assert!(s.redfish_endpoints.is_empty() && s.component_endpoints.is_empty());

        // A non-controller ID is refused outright.
        let mut node = v2();
        node["ID"] = json!("x1000c0s0b0n0");
        let err = post_v(&store, node).await.unwrap_err();
        assert!(matches!(err, WriteError::Domain(DomainError::Invalid(_))));
    }

    #[test]
    fn lenient_v2_decoding() {
        let mut v = v2();
        v["User"] = json!(5);
        v["MACRequired"] = json!("yes");
        v["Systems"][0]["name"] = json!(["not", "a", "name"]);
        v["Systems"][0]["links"] = json!({"chassis": ["https://h/redfish/v1/Chassis/1"]});
        v["Managers"][0]["type"] = json!(null);
        let e = decode(&v).unwrap();
        assert_eq!(e.user, None);
        assert_eq!(e.mac_required, None);
        let inv = e.inventory.unwrap();
        assert_eq!(inv.systems[0].name, "");
        assert_eq!(
            inv.systems[0].chassis.as_deref(),
            Some("/redfish/v1/Chassis/1")
        );

        for (path, bad) in [
            ("/ID", json!(1)),
            ("/FQDN", json!(false)),
            ("/SchemaVersion", json!("1")),
            ("/Systems/0/uri", json!(3)),
            ("/Systems/0/uuid", json!({})),
            ("/Systems/0/actions", json!("On")),
            ("/Systems/0/ethernet_interfaces", json!({})),
            ("/Systems/0/ethernet_interfaces/0/mac", json!("zz")),
            ("/Systems/0/links", json!([])),
        ] {
            let mut v = v2();
            let (parent, key) = path.rsplit_once('/').unwrap();
            v.pointer_mut(parent).unwrap()[key] = bad;
            assert!(decode(&v).is_err(), "{path}");
        }

        // A plain body is decoded strictly and has no inventory.
        let plain = json!({"ID": "x0c0s0b0", "User": "root"});
        assert!(decode(&plain).unwrap().inventory.is_none());
        assert!(decode(&json!({"ID": "x0c0s0b0", "User": 5})).is_err());
    }

    #[tokio::test]
    async fn plain_post_has_no_side_effects() {
        let store = Store::open_in_memory().unwrap();
        post_v(&store, json!({"ID": "x0c0s0b0", "Type": "Node"}))
            .await
            .unwrap();
        let s = store.snapshot();
        let ep = &s.redfish_endpoints["x0c0s0b0"];
        assert_eq!(ep.kind, "NodeBMC");
        assert_eq!(ep.fqdn, "x0c0s0b0");
        assert_eq!(ep.discovery_info.last_discovery_status, NOT_YET_QUERIED);
        assert!(ep.enabled);
        assert!(s.components.is_empty() && s.component_endpoints.is_empty());
    }

    #[tokio::test]
    async fn filters() {
        let store = Store::open_in_memory().unwrap();
        post_v(&store, v2()).await.unwrap();
        post_v(&store, json!({"ID": "x0c0s0b0"})).await.unwrap();
        let s = store.snapshot();
        let f = |k: &'static str, v: &'static str| {
            EndpointFilter::from_query(|q| if q == k { vec![v.to_string()] } else { vec![] })
                .unwrap()
        };
        let count = |f: EndpointFilter| {
            s.redfish_endpoints
                .values()
                .filter(|e| f.matches(e))
                .count()
        };
        assert_eq!(count(f("macaddr", "52-54-00-BE-EE-01")), 1);
        assert_eq!(count(f("laststatus", "discoverok")), 1);
        assert_eq!(count(f("id", "!X0C0S0B0")), 1);
        assert_eq!(count(f("type", "nodebmc")), 2);
        let cf = ComponentEndpointFilter::from_query(|q| match q {
            "redfish_type" => vec!["computersystem".into()],
            _ => vec![],
        })
        .unwrap();
        let ids: Vec<&str> = s
            .component_endpoints
            .values()
            .filter(|c| cf.matches(c))
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, vec!["x1000c0s0b0n0"]);
    }
}
