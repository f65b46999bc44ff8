//! cloud-init writes: what is accepted, how it is normalised, and the rules
//! that keep instance IDs stable and unique. Each function runs inside one
//! store transaction, so a refused request changes nothing.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::inventory::groups::parse_label;
use crate::inventory::model::{
    CloudInitFile, CloudInitGroup, CloudInitResource, ClusterDefaults, InstanceInfo, PhoneHome,
};
use crate::inventory::{DomainError, Model, Txn, xname};

/// Largest group file, after base64 decoding.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Largest group meta-data, as compact JSON. It is copied into the meta-data
/// of every member, so it is meant to be small.
pub const MAX_META_DATA_BYTES: usize = 64 * 1024;
/// Largest one-line value (names, URLs, keys, descriptions).
pub const MAX_FIELD_BYTES: usize = 16 * 1024;

/// A group body (`admin/groups`), §5.3.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
#[schemars(rename = "CloudInitGroupIn")]
pub struct GroupIn {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Free-form: the group's meta-data (a mapping), the operator's own
    /// keys.
    #[serde(rename = "meta-data")]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub meta_data: Option<Value>,
    pub file: Option<FileIn>,
}

/// A group's file as sent: `content` in `encoding` (`plain` or `base64`).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct FileIn {
    pub content: Option<String>,
    pub filename: Option<String>,
    pub encoding: Option<String>,
}

fn invalid(msg: impl Into<String>) -> DomainError {
    DomainError::Invalid(msg.into())
}

/// A one-line value: no control characters, bounded.
fn one_line(v: &str, what: &str) -> Result<String, DomainError> {
    let v = v.trim();
    if v.len() > MAX_FIELD_BYTES {
        return Err(DomainError::TooLarge(format!(
            "{what} is longer than {MAX_FIELD_BYTES} bytes"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(format!("{what} must be one line, got {v:?}")));
    }
    Ok(v.to_string())
}

/// An http(s) URL without spaces; a trailing `/` is dropped.
fn base_url(v: &str, what: &str) -> Result<String, DomainError> {
    let v = one_line(v, what)?;
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(char::is_whitespace) => {
            Ok(v.trim_end_matches('/').to_string())
        }
        _ => Err(invalid(format!(
            "{what} must be an http:// or https:// URL, got {v:?}"
        ))),
    }
}

/// `a.b.c.d/len` or an IPv6 prefix.
fn cidr(v: &str, what: &str) -> Result<String, DomainError> {
    let v = one_line(v, what)?;
    let ok = v.split_once('/').is_some_and(|(ip, len)| {
        ip.parse::<std::net::IpAddr>()
            .ok()
            .zip(len.parse::<u8>().ok())
            .is_some_and(|(ip, len)| len <= if ip.is_ipv4() { 32 } else { 128 })
    });
    if ok {
        Ok(v)
    } else {
        Err(invalid(format!("{what} must be a CIDR prefix, got {v:?}")))
    }
}

/// A host name: letters, digits, `-` and (unless `label_only`) dots.
fn host_name(v: &str, what: &str, label_only: bool) -> Result<String, DomainError> {
    let v = one_line(v, what)?;
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || (!label_only && c == '.'));
    if ok {
        Ok(v)
    } else {
        Err(invalid(format!(
            "{what} must be a host name (letters, digits, -{}), got {v:?}",
            if label_only { "" } else { " and ." }
        )))
    }
}

fn keys(v: &[String], what: &str) -> Result<Vec<String>, DomainError> {
    v.iter()
        .map(|k| one_line(k, what))
        .filter(|k| !matches!(k, Ok(k) if k.is_empty()))
        .collect()
}

/// Checks the non-empty fields of a cluster-defaults body and normalises them.
pub fn check_defaults(d: &ClusterDefaults) -> Result<ClusterDefaults, DomainError> {
    let opt = |v: &str, f: &dyn Fn(&str) -> Result<String, DomainError>| {
        if v.trim().is_empty() {
            Ok(String::new())
        } else {
            f(v)
        }
    };
    if !(0..=18).contains(&d.nid_length) {
        return Err(invalid(format!(
            "nid-length must be between 1 and 18, got {}",
            d.nid_length
        )));
    }
    Ok(ClusterDefaults {
        cloud_provider: opt(&d.cloud_provider, &|v| one_line(v, "cloud_provider"))?,
        region: opt(&d.region, &|v| one_line(v, "region"))?,
        availability_zone: opt(&d.availability_zone, &|v| one_line(v, "availability-zone"))?,
        cluster_name: opt(&d.cluster_name, &|v| one_line(v, "cluster-name"))?,
        public_keys: keys(&d.public_keys, "public-keys")?,
        base_url: opt(&d.base_url, &|v| base_url(v, "base-url"))?,
        boot_subnet: opt(&d.boot_subnet, &|v| cidr(v, "boot-subnet"))?,
        wg_subnet: opt(&d.wg_subnet, &|v| cidr(v, "wg-subnet"))?,
        short_name: opt(&d.short_name, &|v| host_name(v, "short-name", true))?,
        nid_length: d.nid_length,
        resource: None,
    })
}

/// POST `admin/cluster-defaults`: the body's non-empty fields replace the
/// stored ones (upstream's merge). Returns whether anything changed.
pub fn merge_defaults(txn: &mut Txn<'_>, input: &ClusterDefaults) -> Result<bool, DomainError> {
    let i = check_defaults(input)?;
    let cur = txn.model().cloud_init_defaults.as_ref().clone();
    let pick = |new: String, old: &String| if new.is_empty() { old.clone() } else { new };
    let merged = ClusterDefaults {
        cloud_provider: pick(i.cloud_provider, &cur.cloud_provider),
        region: pick(i.region, &cur.region),
        availability_zone: pick(i.availability_zone, &cur.availability_zone),
        cluster_name: pick(i.cluster_name, &cur.cluster_name),
        public_keys: if i.public_keys.is_empty() {
            cur.public_keys.clone()
        } else {
            i.public_keys
        },
        base_url: pick(i.base_url, &cur.base_url),
        boot_subnet: pick(i.boot_subnet, &cur.boot_subnet),
        wg_subnet: pick(i.wg_subnet, &cur.wg_subnet),
        short_name: pick(i.short_name, &cur.short_name),
        nid_length: if i.nid_length == 0 {
            cur.nid_length
        } else {
            i.nid_length
        },
        resource: cur.resource.clone(),
    };
    if merged == cur {
        return Ok(false);
    }
    let mut merged = merged;
    merged.resource = Some(stamp(cur.resource.as_ref(), &now(txn)));
    txn.put_cloud_init_defaults(merged);
    Ok(true)
}

/// Does `text` start as cloud-init recognises a cloud-config part?
fn is_cloud_config(text: &str) -> bool {
    text.trim_start()
        .get(..13)
        .is_some_and(|p| p.eq_ignore_ascii_case("#cloud-config"))
}

/// The file of a group body, checked: a known encoding, base64 that decodes,
/// a size limit, and a `#cloud-config` that is a YAML mapping.
fn check_file(f: &FileIn) -> Result<Option<CloudInitFile>, DomainError> {
    let content = f.content.as_deref().unwrap_or("");
    let encoding = f
        .encoding
        .as_deref()
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "plain".into());
    let filename = one_line(f.filename.as_deref().unwrap_or(""), "file.filename")?;
    if filename.len() > 255 {
        return Err(invalid("file.filename is longer than 255 bytes"));
    }
    let (stored, decoded) = match encoding.as_str() {
        "plain" => (content.to_string(), content.as_bytes().to_vec()),
        "base64" => {
            let compact: String = content
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            if compact.len() / 4 * 3 > MAX_FILE_BYTES + 3 {
                return Err(too_large_file());
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|e| invalid(format!("file.content is not valid base64: {e}")))?;
            (compact, bytes)
        }
        other => {
            return Err(invalid(format!(
                "file.encoding must be plain or base64, got {other:?}"
            )));
        }
    };
    if decoded.len() > MAX_FILE_BYTES {
        return Err(too_large_file());
    }
    if decoded.is_empty() {
        return Ok(None);
    }
    if let Ok(text) = std::str::from_utf8(&decoded)
        && is_cloud_config(text)
    {
        match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
            Ok(serde_yaml_ng::Value::Mapping(_) | serde_yaml_ng::Value::Null) => {}
            Ok(_) => return Err(invalid("the #cloud-config file is not a YAML mapping")),
            Err(e) => {
                return Err(invalid(format!(
                    "the #cloud-config file is not valid YAML: {e}"
                )));
            }
        }
    }
    Ok(Some(CloudInitFile {
        content: stored,
        filename,
        encoding,
    }))
}

fn too_large_file() -> DomainError {
    DomainError::TooLarge(format!(
        "file.content is larger than {MAX_FILE_BYTES} bytes decoded"
    ))
}

/// A group body, checked and normalised. `path_name` is the `{name}` of a
/// PUT; the body's `name` may be absent but must not contradict it.
pub fn check_group(path_name: Option<&str>, g: &GroupIn) -> Result<CloudInitGroup, DomainError> {
    let body_name = g
        .name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .map(parse_label)
        .transpose()?;
    let name = match (path_name.map(parse_label).transpose()?, body_name) {
        (Some(p), Some(b)) if p != b => {
            return Err(invalid(format!(
                "the body names group {b:?} but the path names {p:?}"
            )));
        }
        (Some(p), _) => p,
        (None, Some(b)) => b,
        (None, None) => return Err(invalid("name is required")),
    };
    let meta_data = match &g.meta_data {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => {
            let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
            if size > MAX_META_DATA_BYTES {
                return Err(DomainError::TooLarge(format!(
                    "meta-data is larger than {MAX_META_DATA_BYTES} bytes"
                )));
            }
            m.clone()
        }
        Some(_) => return Err(invalid("meta-data must be a mapping")),
    };
    Ok(CloudInitGroup {
        name,
        description: one_line(g.description.as_deref().unwrap_or(""), "description")?,
        meta_data,
        file: g.file.as_ref().map(check_file).transpose()?.flatten(),
        resource: None,
    })
}

/// POST `admin/groups`: 409 if the group exists.
pub fn add_group(txn: &mut Txn<'_>, mut g: CloudInitGroup) -> Result<(), DomainError> {
    if txn.model().cloud_init_groups.contains_key(&g.name) {
        return Err(DomainError::Conflict(format!(
            "cloud-init group {} already exists",
            g.name
        )));
    }
    let mut meta = stamp(None, &now(txn));
    if let Some(given) = g.resource.take() {
        meta.labels = given.labels;
        meta.annotations = given.annotations;
        meta.extra = given.extra;
    }
    g.resource = Some(meta);
    txn.put_cloud_init_group(g);
    Ok(())
}

/// PUT `admin/groups/{name}`: creates or replaces. The envelope (and the
/// spec fields only the metadata-service view has) is kept.
pub fn put_group(txn: &mut Txn<'_>, mut g: CloudInitGroup) {
    let old = txn.model().cloud_init_groups.get(&g.name).cloned();
    g.resource = old.as_ref().and_then(|o| o.resource.clone());
    if old.as_ref() != Some(&g) || g.resource.is_none() {
        g.resource = Some(stamp(g.resource.as_ref(), &now(txn)));
        txn.put_cloud_init_group(g);
    }
}

/// The time a write happens, as the metadata-service envelope shows it.
pub fn now(txn: &Txn<'_>) -> String {
    txn.now()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The envelope after a write at `now`: created once, updated every time.
pub fn stamp(old: Option<&CloudInitResource>, now: &str) -> CloudInitResource {
    let mut m = old.cloned().unwrap_or_default();
    if m.created_at.is_empty() {
        m.created_at = now.to_string();
    }
    m.updated_at = now.to_string();
    m
}

/// DELETE `admin/groups/{name}`: 404 if absent.
pub fn delete_group(txn: &mut Txn<'_>, name: &str) -> Result<(), DomainError> {
    let name = parse_label(name)?;
    let profiles = super::profile::of_group(txn.model(), &name);
    if !profiles.is_empty() {
        return Err(DomainError::Conflict(format!(
            "group {name} is the groupRef of profile(s) {}: delete or change them first",
            profiles.join(", ")
        )));
    }
    txn.delete_cloud_init_group(&name)
        .map(|_| ())
        .ok_or_else(|| DomainError::NotFound(format!("no cloud-init group {name}")))
}

/// `i-` and 8 lower-case hex digits.
pub fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-")
        .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A fresh instance ID no node has.
fn new_instance_id(model: &Model) -> String {
    loop {
        let bits = uuid::Uuid::new_v4().as_u128() as u32;
        let id = format!("i-{bits:08x}");
        if !model.instance_ids.contains_key(&id) {
            return id;
        }
    }
}

/// The node's instance ID, assigned (and persisted) on first use.
pub fn ensure_instance_id(txn: &mut Txn<'_>, node: &str) -> String {
    let cur = txn.model().instance_info.get(node).cloned();
    match cur {
        Some(i) if !i.instance_id.is_empty() => i.instance_id,
        cur => {
            let id = new_instance_id(txn.model());
            let mut info = cur.unwrap_or_default();
            info.id = node.to_string();
            info.instance_id = id.clone();
            txn.put_instance_info(info);
            id
        }
    }
}

/// Does the node still need an instance ID (a write) before its meta-data?
pub fn needs_instance_id(model: &Model, node: &str) -> bool {
    model
        .instance_info
        .get(node)
        .is_none_or(|i| i.instance_id.is_empty())
}

/// The xname of a node the inventory has, or 404.
pub fn known_node(model: &Model, id: &str) -> Result<String, DomainError> {
    let x = xname::normalize(id).map_err(|e| DomainError::NotFound(format!("{id}: {e}")))?;
    match model.components.get(&x) {
        Some(c) if c.is_node() => Ok(x),
        _ => Err(DomainError::NotFound(format!("no node {x}"))),
    }
}

/// PUT `admin/instance-info/{id}`: replaces the node's overrides; the stored
/// instance ID is kept (one given is adopted only if the node has none).
pub fn put_instance_info(
    txn: &mut Txn<'_>,
    id: &str,
    input: &InstanceInfo,
) -> Result<(), DomainError> {
    let node = known_node(txn.model(), id)?;
    if !input.id.trim().is_empty() && xname::normalize(input.id.trim()).ok() != Some(node.clone()) {
        return Err(invalid(format!(
            "the body names {:?} but the path names {node}",
            input.id
        )));
    }
    let opt = |v: &str, f: &dyn Fn(&str) -> Result<String, DomainError>| {
        if v.trim().is_empty() {
            Ok(String::new())
        } else {
            f(v)
        }
    };
    let stored = txn
        .model()
        .instance_info
        .get(&node)
        .map(|i| i.instance_id.clone())
        .filter(|i| !i.is_empty());
    let given = input.instance_id.trim();
    let instance_id = match stored {
        Some(s) => s,
        None if given.is_empty() => new_instance_id(txn.model()),
        None if !is_instance_id(given) => {
            return Err(invalid(format!(
                "instance-id must be i- and 8 hex digits, got {given:?}"
            )));
        }
        None if txn.model().instance_ids.contains_key(given) => {
            return Err(DomainError::Conflict(format!(
                "instance-id {given} belongs to another node"
            )));
        }
        None => given.to_string(),
    };
    let info = InstanceInfo {
        id: node.clone(),
        instance_id,
        local_hostname: opt(&input.local_hostname, &|v| {
            host_name(v, "local-hostname", false)
        })?,
        hostname: opt(&input.hostname, &|v| host_name(v, "hostname", false))?,
        cluster_name: opt(&input.cluster_name, &|v| one_line(v, "cluster-name"))?,
        region: opt(&input.region, &|v| one_line(v, "region"))?,
        availability_zone: opt(&input.availability_zone, &|v| {
            one_line(v, "availability-zone")
        })?,
        cloud_provider: opt(&input.cloud_provider, &|v| one_line(v, "cloud-provider"))?,
        instance_type: opt(&input.instance_type, &|v| one_line(v, "instance-type"))?,
        cloud_init_base_url: opt(&input.cloud_init_base_url, &|v| {
            base_url(v, "cloud-init-base-url")
        })?,
        public_keys: keys(&input.public_keys, "public-keys")?,
        resource: txn
            .model()
            .instance_info
            .get(&node)
            .and_then(|i| i.resource.clone()),
    };
    if txn.model().instance_info.get(&node) != Some(&info) || info.resource.is_none() {
        let mut info = info;
        info.resource = Some(stamp(info.resource.as_ref(), &now(txn)));
        txn.put_instance_info(info);
    }
    Ok(())
}

/// POST `phone-home/{id}`: the node's latest report replaces the previous.
pub fn record_phone_home(txn: &mut Txn<'_>, p: PhoneHome) -> Result<(), DomainError> {
    for (what, v) in [
        ("id", &p.id),
        ("instance_id", &p.instance_id),
        ("hostname", &p.hostname),
        ("fqdn", &p.fqdn),
        ("pub_key_rsa", &p.pub_key_rsa),
        ("pub_key_ecdsa", &p.pub_key_ecdsa),
        ("pub_key_ed25519", &p.pub_key_ed25519),
    ] {
        if v.len() > MAX_FIELD_BYTES {
            return Err(DomainError::TooLarge(format!(
                "{what} is longer than {MAX_FIELD_BYTES} bytes"
            )));
        }
    }
    txn.put_phone_home(p);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(v: Value) -> Result<CloudInitGroup, DomainError> {
        let g: GroupIn = serde_json::from_value(v).unwrap();
        check_group(None, &g)
    }

    #[test]
    fn groups_are_checked() {
        let g = group(json!({"name": "Compute", "meta-data": {"a-b": 1},
            "file": {"content": "I2Nsb3VkLWNvbmZpZwpydW5jbWQ6IFtsc10K", "encoding": "base64"}}))
        .unwrap();
        assert_eq!(g.name, "compute");
        assert_eq!(g.file.unwrap().encoding, "base64");
        let g = group(json!({"name": "c", "file": {"content": "#cloud-config\n"}})).unwrap();
        assert_eq!(g.file.unwrap().encoding, "plain", "plain by default");
        let g = group(json!({"name": "c", "file": {"content": null, "filename": ""}})).unwrap();
        assert!(g.file.is_none(), "an empty file is no file");

        let bad = |v: Value| group(v).unwrap_err();
        assert!(matches!(bad(json!({})), DomainError::Invalid(_)));
        assert!(matches!(
            bad(json!({"name": "a b"})),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            bad(json!({"name": "c", "meta-data": [1]})),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            bad(json!({"name": "c", "file": {"content": "not base64!", "encoding": "base64"}})),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            bad(json!({"name": "c", "file": {"content": "x", "encoding": "gzip"}})),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            bad(json!({"name": "c", "file": {"content": "#cloud-config\nruncmd: [\n"}})),
            DomainError::Invalid(_)
        ));
        assert!(matches!(
            bad(json!({"name": "c", "file": {"content": "#cloud-config\n- a\n"}})),
            DomainError::Invalid(_)
        ));
        let big = "#cloud-config\n".to_string() + &"#".repeat(MAX_FILE_BYTES);
        assert!(matches!(
            bad(json!({"name": "c", "file": {"content": big}})),
            DomainError::TooLarge(_)
        ));
        let big = json!({"k": "v".repeat(MAX_META_DATA_BYTES)});
        assert!(matches!(
            bad(json!({"name": "c", "meta-data": big})),
            DomainError::TooLarge(_)
        ));
        // Scripts and templates are served as given.
        group(json!({"name": "c", "file": {"content": "#!/bin/sh\necho {\n"}})).unwrap();
        group(json!({"name": "c", "file": {"content": "## template: jinja\n#cloud-config\n{% if x %}\n"}}))
            .unwrap();
        // Path and body must agree.
        let g: GroupIn = serde_json::from_value(json!({"name": "a"})).unwrap();
        assert!(check_group(Some("b"), &g).is_err());
        assert_eq!(check_group(Some("A"), &g).unwrap().name, "a");
    }

    #[test]
    fn defaults_are_checked() {
        let d = |v: Value| check_defaults(&serde_json::from_value(v).unwrap());
        let ok = d(
            json!({"base-url": "http://head:8081/cloud-init/", "cloud-provider": "x",
                          "boot-subnet": "172.16.0.0/24", "nid-length": 3}),
        )
        .unwrap();
        assert_eq!(ok.base_url, "http://head:8081/cloud-init");
        assert_eq!(ok.cloud_provider, "x", "the hyphenated alias is accepted");
        assert!(d(json!({"base-url": "ftp://x"})).is_err());
        assert!(d(json!({"boot-subnet": "172.16.0.0"})).is_err());
        assert!(d(json!({"nid-length": -1})).is_err());
        assert!(d(json!({"short-name": "a.b"})).is_err());
        assert!(d(json!({"cluster-name": "a\nb"})).is_err());
    }

    #[test]
    fn instance_ids() {
        assert!(is_instance_id("i-3f2a9c1d"));
        assert!(!is_instance_id("i-3F2A9C1D"));
        assert!(!is_instance_id("i-3f2a9c1"));
        let m = Model::default();
        assert!(is_instance_id(&new_instance_id(&m)));
    }
}
