//! boot-service (`/boot-service`, OpenCHAMI v0.2): its `BootConfiguration`,
//! `Node` and `BMC` resources as rules over the store's records.
//!
//! A BootConfiguration *is* a [`BootConfig`]: the record BSS binds,
//! serves and lists. Written here it selects nodes (`bound` false, chosen by
//! `boot::select`); a BSS record edited here stays bound, so BSS's one
//! binding per target still holds (a target bound elsewhere is a 409).
//! Nodes are the inventory's, shown as views; Node and BMC resources posted
//! here are kept as [`BootResource`] records so `ochami boot node|bmc`
//! round-trips, and a posted Node that is not in the inventory can still be
//! booted by selection.
//!
//! Envelope and verbs follow the fabrica conventions upstream generates:
//! POST merges top-level labels over `metadata`'s, PUT replaces the spec
//! wholesale and merges labels, PATCH changes the spec only (RFC 7386 or
//! RFC 6902, spec-relative), `status` has its own PUT/PATCH.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::params::{self, BootParamsIn, stamp};
use super::script::{self, BootSpec, Identity};
use super::select::{self, NodeFacts};
use crate::inventory::model::{BootConfig, BootResource, BootTarget, Component, ResourceMeta};
use crate::inventory::{DomainError, Model, Txn, mac, xname};

pub const API_VERSION: &str = "boot.openchami.io/v1";
/// The only version `;version=` may name.
pub const VERSION: &str = "v1";
/// What a timestamp nobody set reads as (Go's zero time).
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    BootConfiguration,
    Node,
    Bmc,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::BootConfiguration => "BootConfiguration",
            Kind::Node => "Node",
            Kind::Bmc => "BMC",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Kind::BootConfiguration => "bootconfiguration-",
            Kind::Node => "node-",
            Kind::Bmc => "bmc-",
        }
    }
}

/// How a PATCH body is to be read (from its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7386; also `application/json` and anything unknown, as upstream.
    Merge,
    /// RFC 6902.
    Json,
}

impl PatchKind {
    pub fn from_content_type(ct: Option<&str>) -> PatchKind {
        let base = ct
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if base == "application/json-patch+json" {
            PatchKind::Json
        } else {
            PatchKind::Merge
        }
    }
}

/// A POST or PUT body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvelopeIn {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: Option<Value>,
}

fn get_ci<'v>(m: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    m.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn string_map(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, String>, DomainError> {
    match v {
        None => Ok(BTreeMap::new()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| DomainError::Invalid(format!("{what} must be an object of strings"))),
    }
}

impl EnvelopeIn {
    /// Reads `{"metadata":{…},"spec":{…},"labels":{…},"annotations":{…}}`;
    /// client `uid`, timestamps, `apiVersion`, `kind` and `status` are
    /// ignored, keys match case-insensitively (as Go's decoder does).
    pub fn parse(body: &Value) -> Result<EnvelopeIn, DomainError> {
        let Value::Object(top) = body else {
            return Err(DomainError::Invalid(
                "the body must be a JSON object with metadata and spec".into(),
            ));
        };
        let mut e = EnvelopeIn::default();
        if let Some(meta) = get_ci(top, "metadata") {
            let Value::Object(meta) = meta else {
                return Err(DomainError::Invalid("metadata must be an object".into()));
            };
            if let Some(n) = get_ci(meta, "name") {
                e.name = n
                    .as_str()
                    .ok_or_else(|| DomainError::Invalid("metadata.name must be a string".into()))?
                    .trim()
                    .to_string();
            }
            e.labels = string_map(get_ci(meta, "labels"), "metadata.labels")?;
            e.annotations = string_map(get_ci(meta, "annotations"), "metadata.annotations")?;
        }
        e.labels
            .extend(string_map(get_ci(top, "labels"), "labels")?);
        e.annotations
            .extend(string_map(get_ci(top, "annotations"), "annotations")?);
        e.spec = get_ci(top, "spec").cloned();
        if let Some(s) = &e.spec
            && !s.is_object()
        {
            return Err(DomainError::Invalid("spec must be an object".into()));
        }
        Ok(e)
    }
}

/// Lower-cases object keys (recursively) and drops `null` members, so a
/// spec decodes as Go would decode it.
fn fold(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.to_ascii_lowercase(), fold(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(fold).collect()),
        other => other.clone(),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(spec: &Value, kind: Kind) -> Result<T, DomainError> {
    serde_json::from_value(fold(spec))
        .map_err(|e| DomainError::Invalid(format!("validation failed: {} spec: {e}", kind.name())))
}

fn invalid(msg: impl std::fmt::Display) -> DomainError {
    DomainError::Invalid(format!("validation failed: {msg}"))
}

// ---- BootConfiguration ------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
struct ConfigSpec {
    hosts: Vec<String>,
    macs: Vec<String>,
    nids: Vec<i64>,
    groups: Vec<String>,
    profile: String,
    kernel: String,
    initrd: String,
    params: String,
    priority: i64,
}

/// `http(s)://…` or an absolute path other than `/`, one token.
fn url_or_path(s: &str) -> bool {
    let ok_chars = !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    let lower = s.to_ascii_lowercase();
    let url = ["http://", "https://"]
        .iter()
        .any(|p| lower.starts_with(p) && lower.len() > p.len());
    ok_chars && (url || (s.starts_with('/') && s != "/"))
}

/// A selector `hosts` entry: `*`, `default`, a node xname, or an `x…*` glob.
fn checked_host(h: &str) -> Result<String, DomainError> {
    let h = h.trim();
    if h == "*" || h == "default" {
        return Ok(h.to_string());
    }
    if let Some(prefix) = h.strip_suffix('*') {
        let p = prefix.to_ascii_lowercase();
        if p.starts_with('x') && p.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(format!("{p}*"));
        }
    }
    match xname::parse(h) {
        Ok((x, kind)) if kind.is_node() => Ok(x),
        _ => Err(invalid(format!("invalid host XName format: {h}"))),
    }
}

/// Writes a validated spec into `cfg`. A bound (BSS) record keeps its
/// bindings rule: its hosts must be BSS targets and none may be bound to
/// another record; a bound record left without bindings selects instead.
fn set_config_spec(model: &Model, cfg: &mut BootConfig, spec: &Value) -> Result<(), DomainError> {
    let s: ConfigSpec = decode(spec, Kind::BootConfiguration)?;
    if s.kernel.trim().is_empty() {
        return Err(invalid("kernel field is required"));
    }
    if !url_or_path(s.kernel.trim()) {
        return Err(invalid(format!("invalid kernel URL or path: {}", s.kernel)));
    }
    if !s.initrd.trim().is_empty() && !url_or_path(s.initrd.trim()) {
        return Err(invalid(format!("invalid initrd URL or path: {}", s.initrd)));
    }
    if !(0..=100).contains(&s.priority) {
        return Err(invalid("priority must be between 0 and 100"));
    }
    if s.params.contains(['\n', '\r']) {
        return Err(invalid("params must be one line"));
    }
    let mut macs = Vec::new();
    for m in &s.macs {
        macs.push(
            mac::normalize(m).map_err(|_| invalid(format!("invalid MAC address format: {m}")))?,
        );
    }
    if let Some(n) = s.nids.iter().find(|n| **n < 0) {
        return Err(invalid(format!("NID {n} is negative")));
    }
    let mut groups = Vec::new();
    for g in &s.groups {
        let g = g.trim();
        if g.is_empty() {
            return Err(invalid("a group name is empty"));
        }
        if !groups.iter().any(|x: &String| x == g) {
            groups.push(g.to_string());
        }
    }
    let hosts = if cfg.bound {
        let body = BootParamsIn {
            hosts: s.hosts.clone(),
            macs: macs.clone(),
            nids: s.nids.clone(),
            ..Default::default()
        };
        let targets = params::targets(model, &body)?;
        if let Some((t, _)) = targets
            .iter()
            .filter_map(|t| model.boot_targets.get(t).map(|id| (t, id)))
            .find(|(_, id)| **id != cfg.id)
        {
            let what = match t {
                BootTarget::Host(h) => h.clone(),
                BootTarget::Mac(m) => m.clone(),
                BootTarget::Nid(n) => format!("NID {n}"),
            };
            return Err(DomainError::Conflict(format!(
                "{what} is bound to another configuration through /boot/v1"
            )));
        }
        if targets.is_empty() {
            cfg.bound = false;
        }
        body.hosts
            .iter()
            .map(|h| params::parse_host(model, h))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        s.hosts
            .iter()
            .map(|h| checked_host(h))
            .collect::<Result<Vec<_>, _>>()?
    };
    cfg.hosts = hosts;
    cfg.macs = macs;
    cfg.nids = s.nids;
    cfg.groups = groups;
    cfg.profile = s.profile.trim().to_string();
    cfg.kernel = s.kernel.trim().to_string();
    cfg.initrd = s.initrd.trim().to_string();
    cfg.params = s.params.split_whitespace().collect::<Vec<_>>().join(" ");
    cfg.priority = s.priority;
    Ok(())
}

/// The spec of a configuration as boot-service emits it (Go field order,
/// empty fields omitted except `kernel`).
pub fn config_spec(b: &BootConfig) -> Value {
    let mut m = Map::new();
    if !b.hosts.is_empty() {
        m.insert("hosts".into(), json!(b.hosts));
    }
    if !b.macs.is_empty() {
        m.insert("macs".into(), json!(b.macs));
    }
    if !b.nids.is_empty() {
        m.insert("nids".into(), json!(b.nids));
    }
    if !b.groups.is_empty() {
        m.insert("groups".into(), json!(b.groups));
    }
    if !b.profile.is_empty() {
        m.insert("profile".into(), json!(b.profile));
    }
    m.insert("kernel".into(), json!(b.kernel));
    if !b.initrd.is_empty() {
        m.insert("initrd".into(), json!(b.initrd));
    }
    if !b.params.is_empty() {
        m.insert("params".into(), json!(b.params));
    }
    if b.priority != 0 {
        m.insert("priority".into(), json!(b.priority));
    }
    Value::Object(m)
}

/// The spec with every field present, empty ones too: what a patch
/// applies to, so `replace /params` or `add /groups/-` work on a field that
/// happens to be empty (upstream patches the `omitempty` form and fails).
fn config_spec_full(b: &BootConfig) -> Value {
    json!({
        "hosts": b.hosts,
        "macs": b.macs,
        "nids": b.nids,
        "groups": b.groups,
        "profile": b.profile,
        "kernel": b.kernel,
        "initrd": b.initrd,
        "params": b.params,
        "priority": b.priority,
    })
}

fn metadata(meta: &ResourceMeta, uid: &str) -> Value {
    let mut m = Map::new();
    let name = if meta.name.is_empty() {
        uid
    } else {
        &meta.name
    };
    m.insert("name".into(), json!(name));
    m.insert("uid".into(), json!(uid));
    if !meta.labels.is_empty() {
        m.insert("labels".into(), json!(meta.labels));
    }
    if !meta.annotations.is_empty() {
        m.insert("annotations".into(), json!(meta.annotations));
    }
    let t = |s: &str| {
        if s.is_empty() {
            ZERO_TIME.to_string()
        } else {
            s.to_string()
        }
    };
    m.insert("createdAt".into(), json!(t(&meta.created_at)));
    m.insert("updatedAt".into(), json!(t(&meta.updated_at)));
    Value::Object(m)
}

fn envelope(kind: Kind, meta: &ResourceMeta, uid: &str, spec: Value, status: &Value) -> Value {
    let status = match (kind, status) {
        (_, Value::Object(_)) => status.clone(),
        (Kind::Bmc, _) => json!({"ready": false}),
        _ => json!({}),
    };
    json!({
        "apiVersion": API_VERSION,
        "kind": kind.name(),
        "metadata": metadata(meta, uid),
        "spec": spec,
        "status": status,
    })
}

/// A configuration as a boot-service resource.
pub fn config_resource(b: &BootConfig) -> Value {
    envelope(
        Kind::BootConfiguration,
        &b.meta,
        &b.id,
        config_spec(b),
        &b.status,
    )
}

/// Every configuration, BSS-written ones included, in `params::all` order.
pub fn list_configs(model: &Model) -> Vec<Value> {
    params::all(model)
        .into_iter()
        .map(config_resource)
        .collect()
}

fn new_uid(kind: Kind, taken: impl Fn(&str) -> bool) -> String {
    loop {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        let uid = format!("{}{}", kind.prefix(), &hex[..8]);
        if !taken(&uid) {
            return uid;
        }
    }
}

fn apply_meta(meta: &mut ResourceMeta, e: &EnvelopeIn) {
    if !e.name.is_empty() {
        meta.name = e.name.clone();
    }
    meta.labels.extend(e.labels.clone());
    meta.annotations.extend(e.annotations.clone());
}

fn not_found(kind: Kind, uid: &str) -> DomainError {
    DomainError::NotFound(format!("{} not found: {uid}", kind.name()))
}

// ---- Node and BMC ----------------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
struct IfaceSpec {
    mac: String,
    ip: String,
    #[serde(rename = "type")]
    kind: String,
}

impl IfaceSpec {
    fn to_value(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in [("mac", &self.mac), ("ip", &self.ip), ("type", &self.kind)] {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
struct NodeSpec {
    xname: String,
    nid: i64,
    bootmac: String,
    role: String,
    subrole: String,
    hostname: String,
    interfaces: Vec<IfaceSpec>,
    groups: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
struct BmcSpec {
    xname: String,
    description: String,
    interface: IfaceSpec,
}

/// Validates a Node or BMC spec and returns it as boot-service emits it.
fn normal_spec(kind: Kind, spec: &Value) -> Result<Value, DomainError> {
    match kind {
        Kind::Node => {
            let s: NodeSpec = decode(spec, kind)?;
            let x = match xname::parse(s.xname.trim()) {
                Ok((x, k)) if k.is_node() => x,
                _ => return Err(invalid(format!("invalid XName format: {}", s.xname))),
            };
            let mut m = Map::new();
            m.insert("xname".into(), json!(x));
            if s.nid != 0 {
                m.insert("nid".into(), json!(s.nid));
            }
            if !s.bootmac.is_empty() {
                let bm = mac::normalize(&s.bootmac)
                    .map_err(|_| invalid(format!("invalid BootMAC format: {}", s.bootmac)))?;
                m.insert("bootMac".into(), json!(bm));
            }
            for (k, v) in [
                ("role", &s.role),
                ("subRole", &s.subrole),
                ("hostname", &s.hostname),
            ] {
                if !v.is_empty() {
                    m.insert(k.into(), json!(v));
                }
            }
            if !s.interfaces.is_empty() {
                m.insert(
                    "interfaces".into(),
                    Value::Array(s.interfaces.iter().map(IfaceSpec::to_value).collect()),
                );
            }
            if !s.groups.is_empty() {
                m.insert("groups".into(), json!(s.groups));
            }
            Ok(Value::Object(m))
        }
        Kind::Bmc => {
            let s: BmcSpec = decode(spec, kind)?;
            if s.description.chars().count() > 200 {
                return Err(invalid("description is longer than 200 characters"));
            }
            let mut m = Map::new();
            if !s.xname.is_empty() {
                m.insert("xname".into(), json!(s.xname.trim()));
            }
            if !s.description.is_empty() {
                m.insert("description".into(), json!(s.description));
            }
            m.insert("interface".into(), s.interface.to_value());
            Ok(Value::Object(m))
        }
        Kind::BootConfiguration => Err(DomainError::Invalid("not a stored resource".into())),
    }
}

/// The uid an inventory node is shown under in `/nodes`.
pub fn node_view_uid(xname: &str) -> String {
    format!("node-{xname}")
}

/// An inventory node as a boot-service Node (a view; not writable here).
pub fn node_view(model: &Model, c: &Component) -> Value {
    let ifaces = model.interfaces_of(&c.id);
    let mut spec = Map::new();
    spec.insert("xname".into(), json!(c.id));
    if let Some(n) = c.nid {
        spec.insert("nid".into(), json!(n));
    }
    if let Some(i) = ifaces.first() {
        spec.insert("bootMac".into(), json!(i.mac_address));
    }
    if let Some(r) = &c.role {
        spec.insert("role".into(), json!(r));
    }
    if let Some(r) = c.sub_role.as_ref().filter(|r| !r.is_empty()) {
        spec.insert("subRole".into(), json!(r));
    }
    if !ifaces.is_empty() {
        let list: Vec<Value> = ifaces
            .iter()
            .map(|i| {
                IfaceSpec {
                    mac: i.mac_address.clone(),
                    ip: i
                        .ip_addresses
                        .first()
                        .map(|a| a.ip_address.clone())
                        .unwrap_or_default(),
                    kind: i.kind.clone(),
                }
                .to_value()
            })
            .collect();
        spec.insert("interfaces".into(), Value::Array(list));
    }
    let groups = NodeFacts::of(model, c, None).groups;
    if !groups.is_empty() {
        spec.insert("groups".into(), json!(groups));
    }
    let status = json!({"state": c.state});
    envelope(
        Kind::Node,
        &ResourceMeta {
            name: c.id.clone(),
            ..Default::default()
        },
        &node_view_uid(&c.id),
        Value::Object(spec),
        &status,
    )
}

fn stored_resource(r: &BootResource) -> Value {
    let kind = if r.kind == Kind::Bmc.name() {
        Kind::Bmc
    } else {
        Kind::Node
    };
    envelope(kind, &r.meta, &r.uid, r.spec.clone(), &r.status)
}

fn stored_of(model: &Model, kind: Kind) -> impl Iterator<Item = &BootResource> {
    model
        .boot_resources
        .values()
        .filter(move |r| r.kind == kind.name())
}

/// `GET /<plural>`: a bare array.
pub fn list(model: &Model, kind: Kind) -> Vec<Value> {
    match kind {
        Kind::BootConfiguration => list_configs(model),
        Kind::Bmc => stored_of(model, kind).map(stored_resource).collect(),
        Kind::Node => {
            let mut out: Vec<Value> = stored_of(model, kind).map(stored_resource).collect();
            let posted: std::collections::HashSet<&str> = stored_of(model, kind)
                .filter_map(|r| r.spec.get("xname").and_then(Value::as_str))
                .collect();
            out.extend(
                model
                    .components
                    .values()
                    .filter(|c| c.is_node() && !posted.contains(c.id.as_str()))
                    .map(|c| node_view(model, c)),
            );
            out
        }
    }
}

/// `GET /<plural>/<uid>`.
pub fn get(model: &Model, kind: Kind, uid: &str) -> Result<Value, DomainError> {
    match kind {
        Kind::BootConfiguration => model
            .boot_configs
            .get(uid)
            .map(config_resource)
            .ok_or_else(|| not_found(kind, uid)),
        _ => {
            if let Some(r) = model
                .boot_resources
                .get(uid)
                .filter(|r| r.kind == kind.name())
            {
                return Ok(stored_resource(r));
            }
            if kind == Kind::Node
                && let Some(c) = uid
                    .strip_prefix("node-")
                    .and_then(|x| model.component(x))
                    .filter(|c| c.is_node())
            {
                return Ok(node_view(model, c));
            }
            Err(not_found(kind, uid))
        }
    }
}

fn view_conflict(model: &Model, kind: Kind, uid: &str) -> Result<(), DomainError> {
    if kind == Kind::Node
        && uid
            .strip_prefix("node-")
            .and_then(|x| model.component(x))
            .is_some()
    {
        return Err(DomainError::Conflict(format!(
            "{uid} is an inventory node; change it through /hsm/v2"
        )));
    }
    Ok(())
}

/// `POST /<plural>`: the created resource.
pub fn create(txn: &mut Txn<'_>, kind: Kind, e: &EnvelopeIn) -> Result<Value, DomainError> {
    let spec = e.spec.clone().unwrap_or_else(|| json!({}));
    let now = stamp(txn.now());
    let mut meta = ResourceMeta {
        created_at: now.clone(),
        updated_at: now,
        ..Default::default()
    };
    apply_meta(&mut meta, e);
    match kind {
        Kind::BootConfiguration => {
            let id = new_uid(kind, |u| txn.model().boot_configs.contains_key(u));
            let mut cfg = BootConfig {
                id,
                hosts: Vec::new(),
                macs: Vec::new(),
                nids: Vec::new(),
                kernel: String::new(),
                initrd: String::new(),
                params: String::new(),
                cloud_init: Value::Null,
                bound: false,
                groups: Vec::new(),
                profile: String::new(),
                priority: 0,
                meta,
                status: Value::Null,
            };
            set_config_spec(txn.model(), &mut cfg, &spec)?;
            let out = config_resource(&cfg);
            txn.put_boot_config(cfg);
            Ok(out)
        }
        _ => {
            let r = BootResource {
                uid: new_uid(kind, |u| txn.model().boot_resources.contains_key(u)),
                kind: kind.name().into(),
                meta,
                spec: normal_spec(kind, &spec)?,
                status: Value::Null,
            };
            let out = stored_resource(&r);
            txn.put_boot_resource(r);
            Ok(out)
        }
    }
}

/// What a change does to a resource's spec.
enum SpecChange<'a> {
    Replace(&'a Value),
    Patch(PatchKind, &'a Value),
}

fn patched(current: &Value, kind: PatchKind, patch: &Value) -> Result<Value, DomainError> {
    let mut doc = current.clone();
    match kind {
        PatchKind::Merge => json_patch::merge(&mut doc, patch),
        PatchKind::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| DomainError::Invalid(format!("invalid JSON Patch document: {e}")))?;
            json_patch::patch(&mut doc, &p)
                .map_err(|e| DomainError::Unprocessable(format!("patch cannot be applied: {e}")))?;
        }
    }
    Ok(doc)
}

fn change_spec(
    txn: &mut Txn<'_>,
    kind: Kind,
    uid: &str,
    meta_in: Option<&EnvelopeIn>,
    change: SpecChange<'_>,
) -> Result<Value, DomainError> {
    view_conflict(txn.model(), kind, uid)?;
    let now = stamp(txn.now());
    match kind {
        Kind::BootConfiguration => {
            let mut cfg = txn
                .model()
                .boot_configs
                .get(uid)
                .cloned()
                .ok_or_else(|| not_found(kind, uid))?;
            let spec = match change {
                SpecChange::Replace(s) => s.clone(),
                SpecChange::Patch(k, p) => patched(&config_spec_full(&cfg), k, p)?,
            };
            set_config_spec(txn.model(), &mut cfg, &spec)?;
            if let Some(e) = meta_in {
                apply_meta(&mut cfg.meta, e);
            }
            cfg.meta.updated_at = now;
            let out = config_resource(&cfg);
            txn.put_boot_config(cfg);
            Ok(out)
        }
        _ => {
            let mut r = txn
                .model()
                .boot_resources
                .get(uid)
                .filter(|r| r.kind == kind.name())
                .cloned()
                .ok_or_else(|| not_found(kind, uid))?;
            let spec = match change {
                SpecChange::Replace(s) => s.clone(),
                SpecChange::Patch(k, p) => patched(&r.spec, k, p)?,
            };
            r.spec = normal_spec(kind, &spec)?;
            if let Some(e) = meta_in {
                apply_meta(&mut r.meta, e);
            }
            r.meta.updated_at = now;
            let out = stored_resource(&r);
            txn.put_boot_resource(r);
            Ok(out)
        }
    }
}

/// `PUT /<plural>/<uid>`: the spec replaced wholesale (a missing spec is
/// an empty one), the name replaced if given, labels merged.
pub fn replace(
    txn: &mut Txn<'_>,
    kind: Kind,
    uid: &str,
    e: &EnvelopeIn,
) -> Result<Value, DomainError> {
    let spec = e.spec.clone().unwrap_or_else(|| json!({}));
    change_spec(txn, kind, uid, Some(e), SpecChange::Replace(&spec))
}

/// `PATCH /<plural>/<uid>`: a patch of the spec.
pub fn patch(
    txn: &mut Txn<'_>,
    kind: Kind,
    uid: &str,
    pk: PatchKind,
    body: &Value,
) -> Result<Value, DomainError> {
    change_spec(txn, kind, uid, None, SpecChange::Patch(pk, body))
}

/// `PUT` (replace) or `PATCH` (`Some(kind)`) of `/<plural>/<uid>/status`.
pub fn set_status(
    txn: &mut Txn<'_>,
    kind: Kind,
    uid: &str,
    pk: Option<PatchKind>,
    body: &Value,
) -> Result<Value, DomainError> {
    view_conflict(txn.model(), kind, uid)?;
    let new_status = |old: &Value| -> Result<Value, DomainError> {
        let base = if old.is_object() {
            old.clone()
        } else {
            json!({})
        };
        let v = match pk {
            None => body.clone(),
            Some(k) => patched(&base, k, body)?,
        };
        if !v.is_object() {
            return Err(DomainError::Invalid("status must be an object".into()));
        }
        Ok(v)
    };
    let now = stamp(txn.now());
    match kind {
        Kind::BootConfiguration => {
            let mut cfg = txn
                .model()
                .boot_configs
                .get(uid)
                .cloned()
                .ok_or_else(|| not_found(kind, uid))?;
            cfg.status = new_status(&cfg.status)?;
            cfg.meta.updated_at = now;
            let out = config_resource(&cfg);
            txn.put_boot_config(cfg);
            Ok(out)
        }
        _ => {
            let mut r = txn
                .model()
                .boot_resources
                .get(uid)
                .filter(|r| r.kind == kind.name())
                .cloned()
                .ok_or_else(|| not_found(kind, uid))?;
            r.status = new_status(&r.status)?;
            r.meta.updated_at = now;
            let out = stored_resource(&r);
            txn.put_boot_resource(r);
            Ok(out)
        }
    }
}

/// `DELETE /<plural>/<uid>`: upstream's confirmation body.
pub fn delete(txn: &mut Txn<'_>, kind: Kind, uid: &str) -> Result<Value, DomainError> {
    view_conflict(txn.model(), kind, uid)?;
    let gone = match kind {
        Kind::BootConfiguration => txn.delete_boot_config(uid).is_some(),
        _ => {
            if txn
                .model()
                .boot_resources
                .get(uid)
                .is_some_and(|r| r.kind == kind.name())
            {
                txn.delete_boot_resource(uid).is_some()
            } else {
                false
            }
        }
    };
    if !gone {
        return Err(not_found(kind, uid));
    }
    Ok(json!({"message": format!("{} deleted successfully", kind.name()), "uid": uid}))
}

// ---- bootscript and bootparameters -------------------------------------

/// How a `/boot-service/bootscript` caller names its node (`host` > `mac`
/// > `nid`, the first one given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ident {
    Host(String),
    Mac(String),
    Nid(i64),
}

impl Ident {
    pub fn parse(
        host: Option<&str>,
        mac_q: Option<&str>,
        nid: Option<&str>,
    ) -> Result<Ident, String> {
        fn nonempty(o: Option<&str>) -> Option<&str> {
            o.map(str::trim).filter(|s| !s.is_empty())
        }
        if let Some(h) = nonempty(host) {
            return Ok(Ident::Host(h.to_string()));
        }
        if let Some(m) = nonempty(mac_q) {
            return Ok(Ident::Mac(mac::normalize(m).map_err(|e| e.to_string())?));
        }
        if let Some(n) = nonempty(nid) {
            return n
                .parse()
                .map(Ident::Nid)
                .map_err(|_| format!("nid must be a number, got {n:?}"));
        }
        Err("At least one node identifier (host, mac, or nid) must be provided".into())
    }
}

fn posted_node<'m>(model: &'m Model, id: &Ident) -> Option<&'m BootResource> {
    stored_of(model, Kind::Node).find(|r| {
        let s = |k: &str| r.spec.get(k).and_then(Value::as_str).unwrap_or("");
        match id {
            Ident::Host(h) => s("xname").eq_ignore_ascii_case(h) || s("hostname") == h,
            Ident::Mac(m) => s("bootMac").eq_ignore_ascii_case(m),
            Ident::Nid(n) => r.spec.get("nid").and_then(Value::as_i64) == Some(*n),
        }
    })
}

fn posted_facts(model: &Model, r: &BootResource, mac_q: Option<&str>) -> NodeFacts {
    let s = |k: &str| {
        r.spec
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let xname = s("xname");
    let mut macs: Vec<String> = mac_q.map(String::from).into_iter().collect();
    let boot = s("bootMac");
    if !boot.is_empty() && !macs.contains(&boot) {
        macs.push(boot);
    }
    let mut groups: Vec<String> = r
        .spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if let Some(labels) = model.groups_by_member.get(xname.as_str()) {
        for l in labels {
            if !groups.iter().any(|g| g == l.as_str()) {
                groups.push(l.to_string());
            }
        }
    }
    let hostname = s("hostname");
    NodeFacts {
        nid: r.spec.get("nid").and_then(Value::as_i64),
        xname,
        macs,
        hostname: (!hostname.is_empty()).then_some(hostname),
        groups,
    }
}

fn spec_of(b: &BootConfig) -> BootSpec {
    BootSpec {
        kernel: b.kernel.clone(),
        initrd: b.initrd.clone(),
        params: b.params.clone(),
    }
}

/// The script and the name to record it under. A failed boot chains back
/// here with `retry` counted, as on BSS's route.
pub fn bootscript(
    model: &Model,
    id: &Ident,
    profile: Option<&str>,
    node_base: &str,
    retry: u32,
    jitter: f64,
) -> (String, String) {
    let boot = |cfg: &BootConfig, who: &Identity| {
        script::boot_script_via(
            &spec_of(cfg),
            who,
            node_base,
            script::RetryRoute::BootService,
            retry,
            jitter,
        )
    };
    let mac_q = match id {
        Ident::Mac(m) => Some(m.as_str()),
        _ => None,
    };
    let component = match id {
        Ident::Host(h) => xname::normalize(h).ok().and_then(|x| model.component(&x)),
        Ident::Mac(m) => params::component_of_mac(model, m),
        Ident::Nid(n) => model.component_by_nid(*n),
    };
    if let Some(c) = component {
        if !params::bootable(model, c) {
            let why = format!("{} is not bootable (disabled, empty or not a node)", c.id);
            return (script::wait_and_reboot(&why, retry, jitter), c.id.clone());
        }
        return match params::config_in_profile(model, c, mac_q, profile) {
            Some(cfg) => {
                let who = Identity {
                    xname: Some(c.id.clone()),
                    nid: c.nid,
                    mac: mac_q
                        .map(String::from)
                        .or_else(|| params::first_mac(model, &c.id)),
                };
                (boot(cfg, &who), c.id.clone())
            }
            None => (
                script::wait_and_reboot(
                    &format!("{} has no boot configuration with a kernel", c.id),
                    retry,
                    jitter,
                ),
                c.id.clone(),
            ),
        };
    }
    if let Some(r) = posted_node(model, id) {
        let facts = posted_facts(model, r, mac_q);
        let who_name = facts.xname.clone();
        return match select::best(model, &facts, profile) {
            Some((cfg, _)) => {
                let who = Identity {
                    xname: Some(facts.xname.clone()),
                    nid: facts.nid,
                    mac: facts.macs.first().cloned(),
                };
                (boot(cfg, &who), who_name)
            }
            None => (
                script::wait_and_reboot(
                    &format!("{who_name} has no boot configuration with a kernel"),
                    retry,
                    jitter,
                ),
                who_name,
            ),
        };
    }
    let who = match id {
        Ident::Host(h) => h.clone(),
        Ident::Mac(m) => m.clone(),
        Ident::Nid(n) => format!("nid{n}"),
    };
    (
        script::wait_and_reboot(&format!("{who} is not a known node"), retry, jitter),
        who,
    )
}

/// A configuration in the BSS-shaped form of `/boot-service/bootparameters`
/// (groups appended to hosts, NIDs as strings).
pub fn bootparameters_item(b: &BootConfig) -> Value {
    let hosts: Vec<&String> = b.hosts.iter().chain(b.groups.iter()).collect();
    let nids: Vec<String> = b.nids.iter().map(|n| n.to_string()).collect();
    let cloud_init = if b.cloud_init.is_object() {
        b.cloud_init.clone()
    } else {
        json!({})
    };
    json!({
        "hosts": hosts,
        "macs": b.macs,
        "nids": nids,
        "params": b.params,
        "kernel": b.kernel,
        "initrd": b.initrd,
        "cloud-init": cloud_init,
        "meta": {
            "comment": "Converted from modern BootConfiguration",
            "created-at": b.meta.created_at,
            "modified-at": b.meta.updated_at,
        },
    })
}

/// `GET /boot-service/bootparameters` filters (comma lists, exact match).
#[derive(Debug, Clone, Default)]
pub struct ParamFilter {
    pub hosts: Vec<String>,
    pub macs: Vec<String>,
    pub nids: Vec<i64>,
    pub names: Vec<String>,
}

impl ParamFilter {
    fn is_empty(&self) -> bool {
        self.hosts.is_empty()
            && self.macs.is_empty()
            && self.nids.is_empty()
            && self.names.is_empty()
    }

    fn matches(&self, b: &BootConfig) -> bool {
        self.is_empty()
            || self
                .hosts
                .iter()
                .any(|h| b.hosts.contains(h) || b.groups.contains(h))
            || self
                .macs
                .iter()
                .any(|m| b.macs.iter().any(|x| x.eq_ignore_ascii_case(m)))
            || self.nids.iter().any(|n| b.nids.contains(n))
            || self.names.iter().any(|n| *n == b.meta.name || *n == b.id)
    }
}

/// `{"boot-parameters":[…]}` over every matching configuration.
pub fn bootparameters(model: &Model, f: &ParamFilter) -> Value {
    let items: Vec<Value> = params::all(model)
        .into_iter()
        .filter(|b| f.matches(b))
        .map(bootparameters_item)
        .collect();
    json!({"boot-parameters": items})
}

/// A `/boot-service/bootparameters` write body (BSS-shaped; NIDs are
/// strings there, as upstream's adapter reads them).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct LegacyParamsIn {
    pub hosts: Vec<String>,
    pub macs: Vec<String>,
    #[schemars(with = "Vec<String>")]
    pub nids: Vec<Value>,
    pub kernel: String,
    pub initrd: String,
    pub params: String,
    /// Free-form: kept as written (an object, or `null` for none).
    #[serde(rename = "cloud-init")]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub cloud_init: Option<Value>,
}

/// The `cloud-init` member of a `/boot-service/bootparameters` write: any
/// object, kept as written; anything else would be served back to BSS
/// clients that decode an object.
fn legacy_cloud_init(v: &Value) -> Result<Value, DomainError> {
    match v {
        Value::Object(_) | Value::Null => Ok(v.clone()),
        _ => Err(invalid("cloud-init must be an object")),
    }
}

impl LegacyParamsIn {
    fn nids(&self) -> Result<Vec<i64>, DomainError> {
        self.nids
            .iter()
            .map(|v| match v {
                Value::String(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("nid {s:?} is not a number"))),
                other => Err(invalid(format!(
                    "nids are strings here (\"1\"), got {other}"
                ))),
            })
            .collect()
    }

    fn filter(&self) -> Result<ParamFilter, DomainError> {
        Ok(ParamFilter {
            hosts: self.hosts.clone(),
            macs: self
                .macs
                .iter()
                .map(|m| mac::normalize(m).map_err(|_| invalid(format!("invalid MAC {m}"))))
                .collect::<Result<_, _>>()?,
            nids: self.nids()?,
            names: Vec::new(),
        })
    }
}

fn wrapped(items: Vec<Value>) -> Value {
    json!({"boot-parameters": items})
}

/// `POST /boot-service/bootparameters`: a new selecting configuration named
/// after its first identifier (`legacy-<host>`, `legacy-<mac>`,
/// `legacy-nid-<n>`).
pub fn bootparameters_post(txn: &mut Txn<'_>, b: &LegacyParamsIn) -> Result<Value, DomainError> {
    let nids = b.nids()?;
    let name = if let Some(h) = b.hosts.first() {
        format!("legacy-{}", h.replace('.', "-"))
    } else if let Some(m) = b.macs.first() {
        format!("legacy-{}", m.replace(':', "-"))
    } else if let Some(n) = nids.first() {
        format!("legacy-nid-{n}")
    } else {
        return Err(invalid("name at least one of hosts, macs or nids"));
    };
    let e = EnvelopeIn {
        name,
        spec: Some(json!({
            "hosts": b.hosts, "macs": b.macs, "nids": nids,
            "kernel": b.kernel, "initrd": b.initrd, "params": b.params,
        })),
        ..Default::default()
    };
    let v = create(txn, Kind::BootConfiguration, &e)?;
    let uid = v["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut cfg = txn
        .model()
        .boot_configs
        .get(&uid)
        .cloned()
        .ok_or_else(|| not_found(Kind::BootConfiguration, &uid))?;
    if let Some(c) = &b.cloud_init {
        cfg.cloud_init = legacy_cloud_init(c)?;
    }
    let out = wrapped(vec![bootparameters_item(&cfg)]);
    txn.put_boot_config(cfg);
    Ok(out)
}

/// `PUT /boot-service/bootparameters`: rewrites the first configuration
/// that names any given host, MAC or NID (its groups and priority kept).
pub fn bootparameters_put(txn: &mut Txn<'_>, b: &LegacyParamsIn) -> Result<Value, DomainError> {
    let f = b.filter()?;
    if f.is_empty() {
        return Err(invalid("name at least one of hosts, macs or nids"));
    }
    let Some(mut cfg) = params::all(txn.model())
        .into_iter()
        .find(|c| f.matches(c))
        .cloned()
    else {
        return Err(DomainError::NotFound(
            "no boot configuration names these hosts, MACs or NIDs".into(),
        ));
    };
    let spec = json!({
        "hosts": b.hosts, "macs": f.macs, "nids": f.nids, "groups": cfg.groups,
        "profile": cfg.profile, "kernel": b.kernel, "initrd": b.initrd,
        "params": b.params, "priority": cfg.priority,
    });
    set_config_spec(txn.model(), &mut cfg, &spec)?;
    if let Some(c) = &b.cloud_init {
        cfg.cloud_init = legacy_cloud_init(c)?;
    }
    cfg.meta.updated_at = stamp(txn.now());
    let out = wrapped(vec![bootparameters_item(&cfg)]);
    txn.put_boot_config(cfg);
    Ok(out)
}

/// `DELETE /boot-service/bootparameters?host=&mac=&nid=`: every matching
/// configuration; the deleted ones.
pub fn bootparameters_delete(txn: &mut Txn<'_>, f: &ParamFilter) -> Result<Value, DomainError> {
    if f.is_empty() {
        return Err(invalid("name at least one of host, mac or nid"));
    }
    let gone: Vec<BootConfig> = params::all(txn.model())
        .into_iter()
        .filter(|c| f.matches(c))
        .cloned()
        .collect();
    if gone.is_empty() {
        return Err(DomainError::NotFound(
            "no boot configuration names these hosts, MACs or NIDs".into(),
        ));
    }
    for c in &gone {
        txn.delete_boot_config(&c.id);
    }
    Ok(wrapped(gone.iter().map(bootparameters_item).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_kind_follows_the_content_type() {
        for (ct, want) in [
            (Some("application/json-patch+json"), PatchKind::Json),
            (
                Some("Application/JSON-Patch+JSON; charset=utf-8"),
                PatchKind::Json,
            ),
            (Some("application/merge-patch+json"), PatchKind::Merge),
            (Some("application/json;version=v1"), PatchKind::Merge),
            (Some("text/plain"), PatchKind::Merge),
            (None, PatchKind::Merge),
        ] {
            assert_eq!(PatchKind::from_content_type(ct), want, "{ct:?}");
        }
    }

    #[test]
    fn envelopes_merge_labels_and_ignore_server_fields() {
        let e = EnvelopeIn::parse(&json!({
            "apiVersion": "x", "kind": "y", "status": {"phase": "z"},
            "Metadata": {"NAME": " n ", "uid": "u", "labels": {"a": "1", "b": "1"}},
            "labels": {"b": "2"},
            "spec": {"kernel": "/k"},
        }))
        .unwrap();
        assert_eq!(e.name, "n");
        assert_eq!(e.labels.get("b").map(String::as_str), Some("2"));
        assert_eq!(e.labels.len(), 2);
        assert_eq!(e.spec, Some(json!({"kernel": "/k"})));
        for bad in [
            json!([]),
            json!({"metadata": 1}),
            json!({"spec": []}),
            json!({"labels": {"a": 1}}),
        ] {
            assert!(EnvelopeIn::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kernels_are_urls_or_absolute_paths() {
        for (k, ok) in [
            ("http://h/k", true),
            ("HTTPS://h/k", true),
            ("/boot/vmlinuz", true),
            ("/", false),
            ("http://", false),
            ("ftp://h/k", false),
            ("vmlinuz", false),
            ("http://h/a b", false),
        ] {
            assert_eq!(url_or_path(k), ok, "{k}");
        }
        for (h, ok) in [
            ("x1000c0s0b0n0", true),
            ("X1000C0S0B0N0", true),
            ("x1000c0*", true),
            ("*", true),
            ("default", true),
            ("x1000c0s0b0", false),
            ("compute", false),
            ("*x", false),
        ] {
            assert_eq!(checked_host(h).is_ok(), ok, "{h}");
        }
    }
}
