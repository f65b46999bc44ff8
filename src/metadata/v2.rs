//! The metadata-service (OpenCHAMI v0.2) view of the cloud-init records.
//!
//! `ochami` v0.10 manages cloud-init data as fabrica resources (an envelope
//! of `metadata`, `spec`, `status`) at `/metadata-service`, while older
//! tooling uses `/cloud-init`. Both must see one set of records, so this
//! module only translates: a record plus its [`CloudInitResource`] becomes an
//! envelope, and a request's spec becomes the body the legacy rules
//! (`rules.rs`) already check and store. Nothing here is persisted on its
//! own.
//!
//! Names are the join keys (a Group's name is the SMD label, an
//! InstanceInfo's the node xname), and names are unique, so a uid is a
//! function of the name: `group-` and 8 hex digits of its SHA-256. It never
//! changes, needs no storage, and resolves by a scan of one map.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::rules::{FileIn, GroupIn, MAX_FIELD_BYTES, is_instance_id};
use super::template;
use crate::inventory::DomainError;
use crate::inventory::model::{CloudInitGroup, CloudInitResource, ClusterDefaults, InstanceInfo};

/// `apiVersion` of every resource here.
pub const API_VERSION: &str = "cloud-init.openchami.io/v1";

/// Shown for a record written before the envelope existed.
const EPOCH: &str = "1970-01-01T00:00:00Z";

/// The name the single cluster-defaults record goes by when none was given.
pub const DEFAULTS_NAME: &str = "default";

/// The resource kinds and their collection paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ClusterDefaults,
    Group,
    InstanceInfo,
    WireGuardPeer,
    Profile,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::ClusterDefaults => "ClusterDefaults",
            Kind::Group => "Group",
            Kind::InstanceInfo => "InstanceInfo",
            Kind::WireGuardPeer => "WireGuardPeer",
            Kind::Profile => "Profile",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::ClusterDefaults => "clusterdefaults",
            Kind::Group => "group",
            Kind::InstanceInfo => "instanceinfo",
            Kind::WireGuardPeer => "wireguardpeer",
            Kind::Profile => "profile",
        }
    }
}

/// The uid of the resource of `kind` named `name`.
pub fn uid(kind: Kind, name: &str) -> String {
    let h = Sha256::digest(name.as_bytes());
    format!("{}-{}", kind.prefix(), hex::encode(&h[..4]))
}

pub(super) fn invalid(msg: impl Into<String>) -> DomainError {
    DomainError::Invalid(msg.into())
}

/// A create or update body: `{"metadata":{…},"spec":{…},"labels","annotations"}`,
/// keys matched case-insensitively as Go's decoder does.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: Option<Map<String, Value>>,
    /// ochami's flat form (`{"name":…,<spec>}`) was sent instead of an
    /// envelope: the whole object is the spec.
    pub flat: bool,
    /// A patch that names `ttl_seconds` (a profile's countdown restarts);
    /// `None` for POST and PUT, where the spec saying it does.
    pub renews_ttl: Option<bool>,
}

/// The member of `obj` whose key equals `key` ignoring case (an exact match
/// first, as Go's decoder prefers it).
pub fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

pub(super) fn string_map(
    v: Option<&Value>,
    what: &str,
) -> Result<BTreeMap<String, String>, DomainError> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(invalid(format!("{what}.{k} must be a string"))),
            })
            .collect(),
        Some(_) => Err(invalid(format!("{what} must be an object of strings"))),
    }
}

pub(super) fn string_of(v: Option<&Value>, what: &str) -> Result<String, DomainError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid(format!("{what} must be a string"))),
    }
}

/// Decodes a request body. `require` = POST: `metadata` and `spec` must be
/// there (or the flat form with a `name`).
pub fn request(body: &Value, require: bool) -> Result<Request, DomainError> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("the request body must be a JSON object"))?;
    let metadata = get_ci(obj, "metadata");
    let spec = get_ci(obj, "spec");
    if metadata.is_none() && spec.is_none() && get_ci(obj, "name").is_some() {
        let mut spec = obj.clone();
        let name = string_of(get_ci(obj, "name"), "name")?;
        spec.retain(|k, _| !k.eq_ignore_ascii_case("name"));
        return Ok(Request {
            name,
            spec: Some(spec),
            flat: true,
            ..Default::default()
        });
    }
    if require && (metadata.is_none() || spec.is_none()) {
        return Err(invalid("metadata and spec are required"));
    }
    let mut r = Request::default();
    match metadata {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            r.name = string_of(get_ci(m, "name"), "metadata.name")?;
            r.labels = string_map(get_ci(m, "labels"), "metadata.labels")?;
            r.annotations = string_map(get_ci(m, "annotations"), "metadata.annotations")?;
        }
        Some(_) => return Err(invalid("metadata must be an object")),
    }
    // Top-level labels and annotations are merged over metadata's.
    r.labels
        .extend(string_map(get_ci(obj, "labels"), "labels")?);
    r.annotations
        .extend(string_map(get_ci(obj, "annotations"), "annotations")?);
    r.spec = match spec {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(invalid("spec must be an object")),
    };
    Ok(r)
}

/// The envelope of a resource.
pub(super) fn envelope(
    kind: Kind,
    name: &str,
    meta: Option<&CloudInitResource>,
    spec: Value,
    status: Value,
) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert("uid".into(), json!(uid(kind, name)));
    if let Some(r) = meta {
        if !r.labels.is_empty() {
            m.insert("labels".into(), json!(r.labels));
        }
        if !r.annotations.is_empty() {
            m.insert("annotations".into(), json!(r.annotations));
        }
    }
    let ts = |f: fn(&CloudInitResource) -> &str| {
        meta.map(f)
            .filter(|t| !t.is_empty())
            .unwrap_or(EPOCH)
            .to_string()
    };
    m.insert("createdAt".into(), json!(ts(|r| &r.created_at)));
    m.insert("updatedAt".into(), json!(ts(|r| &r.updated_at)));
    json!({
        "apiVersion": API_VERSION,
        "kind": kind.name(),
        "metadata": Value::Object(m),
        "spec": spec,
        "status": status,
    })
}

pub(super) fn put_nonempty(m: &mut Map<String, Value>, k: &str, v: &str) {
    if !v.is_empty() {
        m.insert(k.into(), json!(v));
    }
}

fn extra<'a>(meta: Option<&'a CloudInitResource>, k: &str) -> &'a str {
    meta.and_then(|m| m.extra.get(k))
        .map(String::as_str)
        .unwrap_or("")
}

/// Are the cluster defaults set at all (else the collection is empty)?
pub fn defaults_exist(d: &ClusterDefaults) -> bool {
    d.resource.is_some() || *d != ClusterDefaults::default()
}

pub fn defaults_name(d: &ClusterDefaults) -> &str {
    d.resource
        .as_ref()
        .map(|r| r.name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULTS_NAME)
}

/// The ClusterDefaults resource (spec keys in upstream's order).
pub fn defaults_resource(d: &ClusterDefaults) -> Value {
    let meta = d.resource.as_ref();
    let mut s = Map::new();
    put_nonempty(&mut s, "description", extra(meta, "description"));
    s.insert("base_url".into(), json!(d.base_url));
    put_nonempty(&mut s, "cloud_provider", &d.cloud_provider);
    put_nonempty(&mut s, "region", &d.region);
    put_nonempty(&mut s, "availability_zone", &d.availability_zone);
    s.insert("cluster_name".into(), json!(d.cluster_name));
    put_nonempty(&mut s, "short_name", &d.short_name);
    if d.nid_length != 0 {
        s.insert("nid_length".into(), json!(d.nid_length));
    }
    if !d.public_keys.is_empty() {
        s.insert("public_keys".into(), json!(d.public_keys));
    }
    envelope(
        Kind::ClusterDefaults,
        defaults_name(d),
        meta,
        Value::Object(s),
        json!({"ready": false}),
    )
}

/// The Group resource. `template` is the stored file, decoded.
pub fn group_resource(g: &CloudInitGroup) -> Value {
    let meta = g.resource.as_ref();
    let mut s = Map::new();
    put_nonempty(&mut s, "description", &g.description);
    s.insert("template".into(), json!(group_template(g)));
    if !g.meta_data.is_empty() {
        s.insert("metaData".into(), Value::Object(g.meta_data.clone()));
    }
    put_nonempty(&mut s, "osVersion", extra(meta, "osVersion"));
    envelope(Kind::Group, &g.name, meta, Value::Object(s), json!({}))
}

/// The group's file as text (base64 decoded), or empty.
pub fn group_template(g: &CloudInitGroup) -> String {
    match &g.file {
        Some(f) if f.encoding.eq_ignore_ascii_case("base64") => {
            base64::engine::general_purpose::STANDARD
                .decode(f.content.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default()
        }
        Some(f) => f.content.clone(),
        None => String::new(),
    }
}

/// The InstanceInfo resource of node `i.id`.
pub fn instance_resource(i: &InstanceInfo) -> Value {
    let meta = i.resource.as_ref();
    let mut s = Map::new();
    put_nonempty(&mut s, "description", extra(meta, "description"));
    s.insert("instance_id".into(), json!(i.instance_id));
    put_nonempty(&mut s, "local_hostname", &i.local_hostname);
    put_nonempty(&mut s, "hostname", &i.hostname);
    put_nonempty(&mut s, "cloud_init_base_url", &i.cloud_init_base_url);
    if !i.public_keys.is_empty() {
        s.insert("public_keys".into(), json!(i.public_keys));
    }
    put_nonempty(&mut s, "default_profile", extra(meta, "default_profile"));
    envelope(
        Kind::InstanceInfo,
        &i.id,
        meta,
        Value::Object(s),
        json!({"ready": false}),
    )
}

pub(super) fn spec_str(spec: &Map<String, Value>, key: &str) -> Result<String, DomainError> {
    let s = string_of(get_ci(spec, key), key)?;
    if s.len() > MAX_FIELD_BYTES {
        return Err(DomainError::TooLarge(format!(
            "{key} is longer than {MAX_FIELD_BYTES} bytes"
        )));
    }
    Ok(s.trim().to_string())
}

fn spec_strings(spec: &Map<String, Value>, key: &str) -> Result<Vec<String>, DomainError> {
    match get_ci(spec, key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("{key} must be an array of strings")))
            })
            .collect(),
        Some(_) => Err(invalid(format!("{key} must be an array of strings"))),
    }
}

pub(super) fn description(spec: &Map<String, Value>) -> Result<String, DomainError> {
    let d = spec_str(spec, "description")?;
    if d.chars().count() > 200 {
        return Err(invalid("description is longer than 200 characters"));
    }
    Ok(d)
}

/// The extra fields of an envelope, empty ones dropped.
fn extras(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// A ClusterDefaults spec as the legacy record (to be checked by
/// `rules::check_defaults`). The spec replaces the record's v0.2 fields
/// wholesale; `boot-subnet` and `wg-subnet`, which only the legacy API
/// has, are kept from `cur`.
pub fn defaults_from_spec(
    spec: &Map<String, Value>,
    cur: &ClusterDefaults,
) -> Result<(ClusterDefaults, BTreeMap<String, String>), DomainError> {
    let base_url = spec_str(spec, "base_url")?;
    let cluster_name = spec_str(spec, "cluster_name")?;
    if base_url.is_empty() || cluster_name.is_empty() {
        return Err(invalid("spec.base_url and spec.cluster_name are required"));
    }
    let nid_length = match get_ci(spec, "nid_length") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .filter(|n| (0..=10).contains(n))
            .ok_or_else(|| invalid("nid_length must be an integer from 0 to 10"))?,
    };
    let d = ClusterDefaults {
        cloud_provider: spec_str(spec, "cloud_provider")?,
        region: spec_str(spec, "region")?,
        availability_zone: spec_str(spec, "availability_zone")?,
        cluster_name,
        public_keys: spec_strings(spec, "public_keys")?,
        base_url,
        boot_subnet: cur.boot_subnet.clone(),
        wg_subnet: cur.wg_subnet.clone(),
        short_name: spec_str(spec, "short_name")?,
        nid_length,
        resource: None,
    };
    Ok((d, extras(&[("description", description(spec)?)])))
}

/// A spec's `template`, decoded as its `templateEncoding` (`plain`, the
/// default, or `base64`) says.
pub(super) fn spec_template(spec: &Map<String, Value>) -> Result<String, DomainError> {
    let template = string_of(get_ci(spec, "template"), "template")?;
    let encoding = spec_str(spec, "templateEncoding")?;
    match encoding.to_ascii_lowercase().as_str() {
        "" | "plain" => Ok(template),
        "base64" => {
            let compact: String = template
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|e| invalid(format!("template is not valid base64: {e}")))?;
            String::from_utf8(bytes).map_err(|_| invalid("template is not UTF-8 once decoded"))
        }
        other => Err(invalid(format!(
            "templateEncoding must be plain or base64, got {other:?}"
        ))),
    }
}

/// A Group spec as the legacy group body, after checking its template:
/// it must render (against a sample node) and the result must be YAML.
pub fn group_from_spec(
    name: &str,
    spec: &Map<String, Value>,
) -> Result<(GroupIn, BTreeMap<String, String>), DomainError> {
    let template = spec_template(spec)?;
    if template.trim().is_empty() {
        return Err(invalid("spec.template is required"));
    }
    let meta_data = match get_ci(spec, "metaData") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(invalid("metaData must be an object")),
    };
    check_template(&template, &meta_data)?;
    let g = GroupIn {
        name: Some(name.to_string()),
        description: Some(description(spec)?),
        meta_data: Some(Value::Object(meta_data)),
        file: Some(FileIn {
            content: Some(template),
            filename: None,
            encoding: Some("plain".into()),
        }),
    };
    Ok((g, extras(&[("osVersion", spec_str(spec, "osVersion")?)])))
}

/// The variables a group template sees, for a node described by
/// `meta_data` (its meta-data document, parsed) — upstream's flat keys,
/// the group's own `metaData` keys, and `ds`, `meta_data`, `vendor_data`.
pub fn template_context(
    meta_data: &Value,
    node: &NodeFacts,
    group_meta: &Map<String, Value>,
) -> Value {
    let v1 = meta_data
        .pointer("/instance_data/v1")
        .cloned()
        .unwrap_or(Value::Null);
    let vendor = v1.get("vendor_data").cloned().unwrap_or(Value::Null);
    let md = |k: &str| meta_data.get(k).cloned().unwrap_or(json!(""));
    let mut c = Map::new();
    for (k, v) in [
        ("cluster_name", md("cluster-name")),
        ("hostname", md("hostname")),
        ("local_hostname", md("local-hostname")),
        ("instance_id", md("instance-id")),
        ("nid", json!(node.nid)),
        ("role", json!(node.role)),
        ("mac", json!(node.mac)),
        ("ip", json!(node.ip)),
        ("xname", json!(node.xname)),
        ("base_url", json!(node.base_url)),
        ("region", v1.get("region").cloned().unwrap_or(json!(""))),
        (
            "availability_zone",
            v1.get("availability_zone").cloned().unwrap_or(json!("")),
        ),
        (
            "cloud_provider",
            v1.get("cloud_provider").cloned().unwrap_or(json!("")),
        ),
        (
            "ssh_keys",
            v1.get("public_keys").cloned().unwrap_or(json!([])),
        ),
        ("interfaces", json!(node.interfaces)),
    ] {
        c.insert(k.into(), v);
    }
    for (k, v) in group_meta {
        c.insert(k.clone(), v.clone());
    }
    c.insert("meta_data".into(), meta_data.clone());
    c.insert("vendor_data".into(), vendor);
    c.insert("ds".into(), json!({"meta_data": meta_data}));
    Value::Object(c)
}

/// What a group template knows of a node beyond its meta-data.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeFacts {
    pub xname: String,
    /// A string, as upstream passes it.
    pub nid: String,
    pub role: String,
    pub mac: String,
    pub ip: String,
    pub base_url: String,
    pub interfaces: Vec<Value>,
}

/// Renders a group's template for a node. A cloud-init Jinja file
/// (`## template: jinja`) is cloud-init's to render and is served as is.
pub fn render_group(template_text: &str, ctx: &Value) -> Result<String, String> {
    if template::is_jinja(template_text) {
        return Ok(template_text.to_string());
    }
    template::render_lenient(template_text, ctx)
}

/// Write-time check of a template: it renders against a sample node and
/// the result is YAML.
pub fn check_template(text: &str, group_meta: &Map<String, Value>) -> Result<(), DomainError> {
    let sample = json!({
        "instance-id": "i-00000000",
        "local-hostname": "nid0001",
        "hostname": "nid0001",
        "cluster-name": "cluster",
        "instance_data": {"v1": {
            "region": "region", "availability_zone": "az", "cloud_provider": "on-prem",
            "public_keys": ["ssh-ed25519 AAAA sample"],
            "vendor_data": {"groups": {}}
        }}
    });
    let node = NodeFacts {
        xname: "x0c0s0b0n0".into(),
        nid: "1".into(),
        role: "Compute".into(),
        mac: "02:00:00:00:00:01".into(),
        ip: "192.0.2.1".into(),
        base_url: "http://192.0.2.254:27778/metadata-service".into(),
        interfaces: Vec::new(),
    };
    let ctx = template_context(&sample, &node, group_meta);
    let body = if template::is_jinja(text) {
        // cloud-init renders it on the node, against data we only sample.
        template::render_lenient(
            text.trim_start().split_once('\n').map_or("", |(_, b)| b),
            &ctx,
        )
    } else {
        template::render_lenient(text, &ctx)
    }
    .map_err(|e| invalid(format!("template render error: {e}")))?;
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&body)
        .map_err(|e| invalid(format!("template YAML invalid after rendering: {e}")))?;
    Ok(())
}

/// An InstanceInfo spec as the legacy body for node `xname`. An
/// `instance_id` of the appliance's form (`i-` + 8 hex) is adopted by a
/// node that has none yet; any other is ignored, as the node keeps its
/// persisted ID.
pub fn instance_from_spec(
    xname: &str,
    spec: &Map<String, Value>,
) -> Result<(InstanceInfo, BTreeMap<String, String>), DomainError> {
    let given = spec_str(spec, "instance_id")?;
    let info = InstanceInfo {
        id: xname.to_string(),
        instance_id: if is_instance_id(&given) {
            given
        } else {
            String::new()
        },
        local_hostname: spec_str(spec, "local_hostname")?,
        hostname: spec_str(spec, "hostname")?,
        cloud_init_base_url: spec_str(spec, "cloud_init_base_url")?,
        public_keys: spec_strings(spec, "public_keys")?,
        ..Default::default()
    };
    Ok((
        info,
        extras(&[
            ("description", description(spec)?),
            ("default_profile", spec_str(spec, "default_profile")?),
        ]),
    ))
}

/// Copies to `new` the overrides of `old` that only the legacy API has
/// (`cluster-name`, `region`, `availability-zone`, `cloud-provider`,
/// `instance-type`): an InstanceInfo spec has no place for them, so a
/// write through it leaves them as they were, as the cluster defaults keep
/// `boot-subnet` and `wg-subnet`.
pub fn keep_legacy_only(new: &mut InstanceInfo, old: &InstanceInfo) {
    new.cluster_name.clone_from(&old.cluster_name);
    new.region.clone_from(&old.region);
    new.availability_zone.clone_from(&old.availability_zone);
    new.cloud_provider.clone_from(&old.cloud_provider);
    new.instance_type.clone_from(&old.instance_type);
}

/// The spec a resource shows, as an object (for patching).
pub fn spec_of(resource: &Value) -> Map<String, Value> {
    resource
        .get("spec")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Why a patch does not apply (422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError(pub String);

fn pointer_parts(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| PatchError(format!("path {path:?} must start with /")))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent_of<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError(format!("no member {p:?}")))?;
    }
    Ok(cur)
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let parts = pointer_parts(path)?;
    let (last, parent) = parts
        .split_last()
        .ok_or_else(|| PatchError("cannot remove the whole document".into()))?;
    match parent_of(doc, parent)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| PatchError(format!("no member {last:?}"))),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(PatchError(format!("no element {last:?}"))),
        },
        _ => Err(PatchError(format!("{path:?} is not in a container"))),
    }
}

fn add_at(doc: &mut Value, path: &str, v: Value) -> Result<(), PatchError> {
    let parts = pointer_parts(path)?;
    let Some((last, parent)) = parts.split_last() else {
        *doc = v;
        return Ok(());
    };
    match parent_of(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), v);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(v);
                return Ok(());
            }
            match last.parse::<usize>() {
                Ok(i) if i <= a.len() => {
                    a.insert(i, v);
                    Ok(())
                }
                _ => Err(PatchError(format!("bad array index {last:?}"))),
            }
        }
        _ => Err(PatchError(format!("{path:?} is not in a container"))),
    }
}

/// RFC 6902 JSON Patch (`add`, `remove`, `replace`, `move`, `copy`,
/// `test`), all or nothing.
pub fn json_patch(doc: &Value, ops: &Value) -> Result<Value, PatchError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| PatchError("a JSON Patch is an array of operations".into()))?;
    let mut out = doc.clone();
    for op in ops {
        let field = |k: &str| op.get(k).and_then(Value::as_str);
        let path = field("path").ok_or_else(|| PatchError("an operation needs a path".into()))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| PatchError(format!("{path}: value is required")))
        };
        match field("op").unwrap_or("") {
            "add" => add_at(&mut out, path, value()?)?,
            "remove" => {
                remove_at(&mut out, path)?;
            }
            "replace" => {
                remove_at(&mut out, path)?;
                add_at(&mut out, path, value()?)?;
            }
            "move" => {
                let from = field("from").ok_or_else(|| PatchError("move needs from".into()))?;
                let v = remove_at(&mut out, from)?;
                add_at(&mut out, path, v)?;
            }
            "copy" => {
                let from = field("from").ok_or_else(|| PatchError("copy needs from".into()))?;
                let v = out
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| PatchError(format!("no member at {from:?}")))?;
                add_at(&mut out, path, v)?;
            }
            "test" => {
                if out.pointer(path) != Some(&value()?) {
                    return Err(PatchError(format!("test failed at {path}")));
                }
            }
            other => return Err(PatchError(format!("unknown operation {other:?}"))),
        }
    }
    Ok(out)
}

/// cloud-init network configuration version 2 (netplan-like) for a
/// node's interfaces: one `ethernets` entry per interface with a MAC,
/// matched by MAC and named `eth<i>`, with its inventory address at the
/// prefix of the configured subnet that holds it (and that subnet's
/// routers and DNS), or DHCP when no configured subnet holds it.
pub fn network_config(nics: &[Nic]) -> String {
    let mut out = String::from("version: 2\n");
    if nics.is_empty() {
        out.push_str("ethernets: {}\n");
        return out;
    }
    out.push_str("ethernets:\n");
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    for (i, n) in nics.iter().enumerate() {
        let name = format!("eth{i}");
        out.push_str(&format!("  {name}:\n"));
        out.push_str(&format!("    match:\n      macaddress: {}\n", q(&n.mac)));
        out.push_str(&format!("    set-name: {name}\n"));
        match &n.subnet {
            Some(s) => {
                out.push_str(&format!(
                    "    addresses:\n    - {}\n",
                    q(&format!("{}/{}", n.ip, s.prefix))
                ));
                if let Some(gw) = s.routers.first() {
                    out.push_str(&format!(
                        "    routes:\n    - to: {}\n      via: {}\n",
                        q("0.0.0.0/0"),
                        q(gw)
                    ));
                }
                if !s.dns.is_empty() || !s.domain.is_empty() {
                    out.push_str("    nameservers:\n");
                    if !s.dns.is_empty() {
                        out.push_str("      addresses:\n");
                        for d in &s.dns {
                            out.push_str(&format!("      - {}\n", q(d)));
                        }
                    }
                    if !s.domain.is_empty() {
                        out.push_str(&format!("      search:\n      - {}\n", q(&s.domain)));
                    }
                }
            }
            None => out.push_str("    dhcp4: true\n"),
        }
    }
    out
}

/// One interface of a node, for [`network_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Lower-case, colon-separated.
    pub mac: String,
    pub ip: String,
    pub subnet: Option<SubnetFacts>,
}

/// The configured subnet an address is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetFacts {
    pub prefix: u8,
    pub routers: Vec<String>,
    pub dns: Vec<String>,
    pub domain: String,
}

/// Is `ip` inside `cidr` (`a.b.c.d/len`)? Returns the prefix length.
pub fn in_cidr(ip: std::net::Ipv4Addr, cidr: &str) -> Option<u8> {
    let (net, len) = cidr.split_once('/')?;
    let net: std::net::Ipv4Addr = net.trim().parse().ok()?;
    let len: u8 = len.trim().parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    (u32::from(ip) & mask == u32::from(net) & mask).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_stable_and_prefixed() {
        let a = uid(Kind::Group, "compute");
        assert_eq!(a, uid(Kind::Group, "compute"));
        assert!(
            a.starts_with("group-") && a.len() == "group-".len() + 8,
            "{a}"
        );
        assert_ne!(a, uid(Kind::Group, "io"));
    }

    #[test]
    fn requests_in_both_forms() {
        let r = request(
            &json!({"metadata":{"name":"c","uid":"","labels":{"a":"1"},"createdAt":"0001-01-01T00:00:00Z"},
                    "spec":{"template":"#cloud-config\n"},"labels":{"b":"2"}}),
            true,
        )
        .unwrap();
        assert_eq!(r.name, "c");
        assert_eq!(r.labels.len(), 2);
        assert!(!r.flat);
        let r = request(&json!({"name":"c","template":"x: 1"}), true).unwrap();
        assert!(r.flat);
        assert_eq!(r.spec.unwrap().len(), 1);
        for bad in [
            json!([]),
            json!({"spec":{}}),
            json!({"metadata":1,"spec":{}}),
        ] {
            assert!(request(&bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_are_checked() {
        let m = Map::new();
        for ok in [
            "#cloud-config\nhostname: {{ hostname }}\n",
            "#cloud-config\nx: {{ unknown.deeper }}\n",
            "## template: jinja\n#cloud-config\nh: {{ ds.meta_data.hostname }}\n",
        ] {
            assert!(check_template(ok, &m).is_ok(), "{ok}");
        }
        for bad in ["#cloud-config\n{% if %}\n", "#cloud-config\na: [b\n"] {
            assert!(check_template(bad, &m).is_err(), "{bad}");
        }
    }

    #[test]
    fn patches() {
        let mut v = json!({"a":1,"b":{"c":2}});
        merge_patch(&mut v, &json!({"a":null,"b":{"d":3}}));
        assert_eq!(v, json!({"b":{"c":2,"d":3}}));
        let v = json_patch(
            &json!({"a":[1],"b":1}),
            &json!([{"op":"add","path":"/a/-","value":2},{"op":"replace","path":"/b","value":5},
                    {"op":"test","path":"/b","value":5},{"op":"move","from":"/b","path":"/c"}]),
        )
        .unwrap();
        assert_eq!(v, json!({"a":[1,2],"c":5}));
        assert!(json_patch(&v, &json!([{"op":"remove","path":"/zz"}])).is_err());
        assert!(json_patch(&v, &json!([{"op":"test","path":"/c","value":6}])).is_err());
    }

    #[test]
    fn cidr_membership() {
        let ip = "172.16.0.9".parse().unwrap();
        assert_eq!(in_cidr(ip, "172.16.0.0/24"), Some(24));
        assert_eq!(in_cidr(ip, "172.16.1.0/24"), None);
        assert_eq!(in_cidr(ip, "junk"), None);
    }
}
