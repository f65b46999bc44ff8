//! BSS boot parameters: which configuration a target is bound to, and which
//! one a booting node gets.
//!
//! A configuration is bound to targets (node xnames or tags, MACs, NIDs);
//! each target has at most one. Writes keep that invariant in one
//! transaction, and lookups follow one documented order, so what
//! `openchami boot script` shows is exactly what the node receives.

use serde::Deserialize;

use crate::inventory::model::{BootConfig, BootTarget, Component, ResourceMeta};
use crate::inventory::{DomainError, Model, Txn, enums, mac, xname};

/// A `bootparameters` body; keys are matched case-insensitively.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct BootParamsIn {
    pub hosts: Vec<String>,
    pub macs: Vec<String>,
    pub nids: Vec<i64>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub params: Option<String>,
    #[serde(rename = "cloud-init")]
    #[schemars(with = "Option<CloudInitSchema>")]
    pub cloud_init: Option<serde_json::Value>,
}

/// The `cloud-init` member's shape (upstream's `bssTypes.CloudInit`), as
/// [`check_cloud_init`] accepts and stores it; for the API's schema.
#[derive(schemars::JsonSchema)]
pub struct CloudInitSchema {
    /// Free-form: the node's meta-data document, served as written.
    #[serde(rename = "meta-data", default)]
    pub meta_data: Option<serde_json::Map<String, serde_json::Value>>,
    /// Free-form: the node's user-data document, served as written.
    #[serde(rename = "user-data", default)]
    pub user_data: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(rename = "phone-home", default)]
    pub phone_home: Option<PhoneHomeSchema>,
}

/// The `phone-home` member of [`CloudInitSchema`].
#[derive(schemars::JsonSchema)]
pub struct PhoneHomeSchema {
    #[serde(default)]
    pub pub_key_dsa: Option<String>,
    #[serde(default)]
    pub pub_key_rsa: Option<String>,
    #[serde(default)]
    pub pub_key_ecdsa: Option<String>,
    #[serde(default)]
    pub pub_key_ed25519: Option<String>,
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub fqdn: Option<String>,
}

/// The members of `phone-home` upstream's `bssTypes.PhoneHome` declares;
/// each is a string.
const PHONE_HOME_KEYS: [&str; 7] = [
    "pub_key_dsa",
    "pub_key_rsa",
    "pub_key_ecdsa",
    "pub_key_ed25519",
    "instance_id",
    "hostname",
    "fqdn",
];

/// Checks a `cloud-init` member against upstream's `bssTypes.CloudInit`
/// (`meta-data` and `user-data` objects, `phone-home` an object of strings;
/// `null` allowed everywhere) and returns it as upstream would store it:
/// member names in their declared spelling (matched case-insensitively, as
/// Go's decoder does), undeclared members dropped, the documents under
/// `meta-data` and `user-data` kept exactly as sent. Upstream refuses other
/// types with a 400 too; storing them would hand clients data their
/// decoders cannot read back.
pub fn check_cloud_init(v: &serde_json::Value) -> Result<serde_json::Value, DomainError> {
    use serde_json::{Map, Value};
    let Value::Object(members) = v else {
        return match v {
            Value::Null => Ok(Value::Null),
            other => Err(DomainError::Invalid(format!(
                "cloud-init must be an object, got {}",
                json_type(other)
            ))),
        };
    };
    let mut out = Map::new();
    for (k, val) in members {
        let key = k.to_ascii_lowercase();
        match key.as_str() {
            "meta-data" | "user-data" => match val {
                Value::Object(_) | Value::Null => {
                    out.insert(key, val.clone());
                }
                other => {
                    return Err(DomainError::Invalid(format!(
                        "cloud-init {key} must be an object, got {}",
                        json_type(other)
                    )));
                }
            },
            "phone-home" => match val {
                Value::Null => {
                    out.insert(key, Value::Null);
                }
                Value::Object(ph) => {
                    let mut kept = Map::new();
                    for (pk, pv) in ph {
                        let pk = pk.to_ascii_lowercase();
                        if !PHONE_HOME_KEYS.contains(&pk.as_str()) {
                            continue;
                        }
                        match pv {
                            Value::String(_) | Value::Null => {
                                kept.insert(pk, pv.clone());
                            }
                            other => {
                                return Err(DomainError::Invalid(format!(
                                    "cloud-init phone-home {pk} must be a string, got {}",
                                    json_type(other)
                                )));
                            }
                        }
                    }
                    out.insert(key, Value::Object(kept));
                }
                other => {
                    return Err(DomainError::Invalid(format!(
                        "cloud-init phone-home must be an object, got {}",
                        json_type(other)
                    )));
                }
            },
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

fn json_type(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The tag every node falls back to.
pub const DEFAULT_TAG: &str = "Default";
/// Stored only, never used for lookups (as upstream).
pub const GLOBAL_TAG: &str = "Global";

/// Upstream keeps parameters per kernel or initrd path when a body names no
/// host, MAC or NID (image parameters): stored under these IDs, listed by
/// GET, never bound to a node.
const KERNEL_IMAGE: &str = "kernel:";
const INITRD_IMAGE: &str = "initrd:";

/// Whether `cfg` holds image parameters rather than a node's configuration.
pub fn is_image(cfg: &BootConfig) -> bool {
    (cfg.id.starts_with(KERNEL_IMAGE) || cfg.id.starts_with(INITRD_IMAGE))
        && cfg.hosts.is_empty()
        && cfg.macs.is_empty()
        && cfg.nids.is_empty()
}

/// The image a target-less body names: its kernel, else its initrd.
fn image_config(b: &BootParamsIn) -> Result<Option<BootConfig>, DomainError> {
    let kernel = checked_url(b.kernel.as_ref(), "kernel")?.filter(|k| !k.is_empty());
    let initrd = checked_url(b.initrd.as_ref(), "initrd")?.filter(|i| !i.is_empty());
    let (id, kernel, initrd) = match (kernel, initrd) {
        (Some(k), _) => (format!("{KERNEL_IMAGE}{k}"), k, String::new()),
        (None, Some(i)) => (format!("{INITRD_IMAGE}{i}"), String::new(), i),
        (None, None) => return Ok(None),
    };
    Ok(Some(BootConfig {
        id,
        hosts: Vec::new(),
        macs: Vec::new(),
        nids: Vec::new(),
        kernel,
        initrd,
        params: checked_params(b.params.as_ref())?.unwrap_or_default(),
        cloud_init: serde_json::Value::Null,
        // A BSS record: it selects no node through boot-service.
        bound: true,
        groups: Vec::new(),
        profile: String::new(),
        priority: 0,
        meta: ResourceMeta::default(),
        status: serde_json::Value::Null,
    }))
}

/// The image parameters a body's `kernel` and `initrd` name, as stored.
pub fn images<'m>(model: &'m Model, b: &BootParamsIn) -> Vec<&'m BootConfig> {
    let ids = [
        b.kernel
            .as_deref()
            .map(|k| format!("{KERNEL_IMAGE}{}", k.trim())),
        b.initrd
            .as_deref()
            .map(|i| format!("{INITRD_IMAGE}{}", i.trim())),
    ];
    ids.into_iter()
        .flatten()
        .filter_map(|id| model.boot_configs.get(&id))
        .filter(|c| is_image(c))
        .collect()
}

/// Canonical form of a `hosts` entry: a node xname, or a tag.
pub fn parse_host(model: &Model, s: &str) -> Result<String, DomainError> {
    let t = s.trim();
    if let Ok((x, kind)) = xname::parse(t) {
        if kind.is_node() {
            return Ok(x);
        }
        return Err(DomainError::Invalid(format!(
            "{x} is a {}, not a node",
            kind.as_str()
        )));
    }
    if t.eq_ignore_ascii_case(DEFAULT_TAG) {
        return Ok(DEFAULT_TAG.into());
    }
    if t.eq_ignore_ascii_case(GLOBAL_TAG) {
        return Ok(GLOBAL_TAG.into());
    }
    if let Some(arch) = t
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("unknown-"))
        .map(|_| &t[8..])
        && !arch.is_empty()
        && arch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Ok(format!("Unknown-{arch}"));
    }
    // A Role tag: a known role, or one some component carries.
    if let Some(role) = enums::ROLES.iter().find(|r| r.eq_ignore_ascii_case(t)) {
        return Ok((*role).to_string());
    }
    if let Some(role) = model
        .components
        .values()
        .filter_map(|c| c.role.as_deref())
        .find(|r| r.eq_ignore_ascii_case(t))
    {
        return Ok(role.to_string());
    }
    Err(DomainError::Invalid(format!(
        "{t:?} is neither a node xname nor a tag (Default, Global, Unknown-<arch>, a Role)"
    )))
}

/// The targets a body names, validated and normalised, without repeats.
pub fn targets(model: &Model, b: &BootParamsIn) -> Result<Vec<BootTarget>, DomainError> {
    let mut out = Vec::new();
    for h in &b.hosts {
        out.push(BootTarget::Host(parse_host(model, h)?));
    }
    for m in &b.macs {
        out.push(BootTarget::Mac(
            mac::normalize(m).map_err(|e| DomainError::Invalid(e.to_string()))?,
        ));
    }
    for n in &b.nids {
        if *n < 0 {
            return Err(DomainError::Invalid(format!("NID {n} is negative")));
        }
        out.push(BootTarget::Nid(*n));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|t| seen.insert(t.clone()));
    Ok(out)
}

fn describe(t: &BootTarget) -> String {
    match t {
        BootTarget::Host(h) => h.clone(),
        BootTarget::Mac(m) => m.clone(),
        BootTarget::Nid(n) => format!("NID {n}"),
    }
}

fn set_targets(cfg: &mut BootConfig, targets: &[BootTarget]) {
    cfg.hosts.clear();
    cfg.macs.clear();
    cfg.nids.clear();
    for t in targets {
        match t {
            BootTarget::Host(h) => cfg.hosts.push(h.clone()),
            BootTarget::Mac(m) => cfg.macs.push(m.clone()),
            BootTarget::Nid(n) => cfg.nids.push(*n),
        }
    }
}

/// A resource timestamp as boot-service writes them (RFC 3339, nanoseconds).
pub fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A new configuration ID, unique in the model.
fn new_id(model: &Model) -> String {
    loop {
        let id = uuid::Uuid::new_v4().to_string();
        if !model.boot_configs.contains_key(&id) {
            return id;
        }
    }
}

fn checked_url(v: Option<&String>, what: &str) -> Result<Option<String>, DomainError> {
    match v.map(|s| s.trim()) {
        None => Ok(None),
        Some(s) if s.chars().any(char::is_whitespace) || s.chars().any(char::is_control) => Err(
            DomainError::Invalid(format!("{what} must be one URL without spaces, got {s:?}")),
        ),
        Some(s) => Ok(Some(s.to_string())),
    }
}

fn checked_params(v: Option<&String>) -> Result<Option<String>, DomainError> {
    match v {
        None => Ok(None),
        Some(p) if p.chars().any(|c| c == '\n' || c == '\r') => {
            Err(DomainError::Invalid("params must be one line".into()))
        }
        Some(p) => Ok(Some(p.split_whitespace().collect::<Vec<_>>().join(" "))),
    }
}

/// Removes targets from whatever configuration holds them; configurations
/// left without targets vanish.
fn unbind(txn: &mut Txn<'_>, targets: &[BootTarget]) -> usize {
    let mut n = 0;
    for t in targets {
        let Some(id) = txn.model().boot_targets.get(t).cloned() else {
            continue;
        };
        let Some(mut cfg) = txn.model().boot_configs.get(&id).cloned() else {
            continue;
        };
        let remaining: Vec<BootTarget> = cfg.targets().into_iter().filter(|x| x != t).collect();
        n += 1;
        if remaining.is_empty() {
            txn.delete_boot_config(&id);
        } else {
            set_targets(&mut cfg, &remaining);
            txn.put_boot_config(cfg);
        }
    }
    n
}

fn new_config(
    txn: &Txn<'_>,
    b: &BootParamsIn,
    targets: &[BootTarget],
) -> Result<BootConfig, DomainError> {
    let mut cfg = BootConfig {
        id: new_id(txn.model()),
        hosts: Vec::new(),
        macs: Vec::new(),
        nids: Vec::new(),
        kernel: checked_url(b.kernel.as_ref(), "kernel")?.unwrap_or_default(),
        initrd: checked_url(b.initrd.as_ref(), "initrd")?.unwrap_or_default(),
        params: checked_params(b.params.as_ref())?.unwrap_or_default(),
        cloud_init: match &b.cloud_init {
            Some(c) => check_cloud_init(c)?,
            None => serde_json::Value::Null,
        },
        bound: true,
        groups: Vec::new(),
        profile: String::new(),
        priority: 0,
        meta: ResourceMeta {
            created_at: stamp(txn.now()),
            updated_at: stamp(txn.now()),
            ..Default::default()
        },
        status: serde_json::Value::Null,
    };
    set_targets(&mut cfg, targets);
    Ok(cfg)
}

fn require_targets(t: &[BootTarget]) -> Result<(), DomainError> {
    if t.is_empty() {
        return Err(DomainError::Invalid(
            "name at least one target in hosts, macs or nids".into(),
        ));
    }
    Ok(())
}

/// POST: a new configuration for targets that have none (409 otherwise).
pub fn post(txn: &mut Txn<'_>, b: &BootParamsIn) -> Result<(), DomainError> {
    let t = targets(txn.model(), b)?;
    if t.is_empty()
        && let Some(img) = image_config(b)?
    {
        if txn.model().boot_configs.contains_key(&img.id) {
            return Err(DomainError::Conflict(format!(
                "{} already has boot parameters (use PUT to replace or PATCH to change them)",
                img.id
            )));
        }
        txn.put_boot_config(img);
        return Ok(());
    }
    require_targets(&t)?;
    if let Some(bound) = t.iter().find(|x| txn.model().boot_targets.contains_key(*x)) {
        return Err(DomainError::Conflict(format!(
            "{} already has boot parameters (use PUT to replace or PATCH to change them)",
            describe(bound)
        )));
    }
    let cfg = new_config(txn, b, &t)?;
    txn.put_boot_config(cfg);
    Ok(())
}

/// PUT: the targets move to this new configuration.
pub fn put(txn: &mut Txn<'_>, b: &BootParamsIn) -> Result<(), DomainError> {
    let t = targets(txn.model(), b)?;
    if t.is_empty()
        && let Some(img) = image_config(b)?
    {
        txn.put_boot_config(img);
        return Ok(());
    }
    require_targets(&t)?;
    let cfg = new_config(txn, b, &t)?;
    unbind(txn, &t);
    txn.put_boot_config(cfg);
    Ok(())
}

/// PATCH: merge the given fields into each target's configuration; a
/// configuration shared with targets not named is copied first.
pub fn patch(txn: &mut Txn<'_>, b: &BootParamsIn) -> Result<(), DomainError> {
    let t = targets(txn.model(), b)?;
    if t.is_empty()
        && let Some(mut img) = image_config(b)?
    {
        // As upstream: an image's parameters are set, created if absent.
        if b.params.is_none()
            && let Some(old) = txn.model().boot_configs.get(&img.id)
        {
            img.params = old.params.clone();
        }
        txn.put_boot_config(img);
        return Ok(());
    }
    require_targets(&t)?;
    let kernel = checked_url(b.kernel.as_ref(), "kernel")?;
    let initrd = checked_url(b.initrd.as_ref(), "initrd")?;
    let params = checked_params(b.params.as_ref())?;
    let cloud_init = b.cloud_init.as_ref().map(check_cloud_init).transpose()?;
    // Group the named targets by the configuration that holds them.
    let mut by_config: std::collections::BTreeMap<String, Vec<BootTarget>> = Default::default();
    for x in &t {
        let id = txn.model().boot_targets.get(x).cloned().ok_or_else(|| {
            DomainError::NotFound(format!("{} has no boot parameters", describe(x)))
        })?;
        by_config.entry(id).or_default().push(x.clone());
    }
    for (id, named) in by_config {
        let Some(old) = txn.model().boot_configs.get(&id).cloned() else {
            continue;
        };
        let mut cfg = old.clone();
        if let Some(k) = &kernel {
            cfg.kernel = k.clone();
        }
        if let Some(i) = &initrd {
            cfg.initrd = i.clone();
        }
        if let Some(p) = &params {
            cfg.params = p.clone();
        }
        if let Some(c) = &cloud_init {
            cfg.cloud_init = c.clone();
        }
        cfg.meta.updated_at = stamp(txn.now());
        if named.len() == old.targets().len() {
            txn.put_boot_config(cfg);
        } else {
            unbind(txn, &named);
            cfg.id = new_id(txn.model());
            set_targets(&mut cfg, &named);
            txn.put_boot_config(cfg);
        }
    }
    Ok(())
}

/// DELETE: unbind the named targets (400 if none of them is bound, as
/// upstream), and drop the parameters of the named kernel and initrd
/// images (no error when there are none, as upstream).
pub fn delete(txn: &mut Txn<'_>, b: &BootParamsIn) -> Result<(), DomainError> {
    let t = targets(txn.model(), b)?;
    let image_ids: Vec<String> = images(txn.model(), b)
        .into_iter()
        .map(|c| c.id.clone())
        .collect();
    let names_image = [&b.kernel, &b.initrd]
        .into_iter()
        .any(|p| p.as_deref().is_some_and(|p| !p.trim().is_empty()));
    if t.is_empty() && names_image {
        for id in image_ids {
            txn.delete_boot_config(&id);
        }
        return Ok(());
    }
    require_targets(&t)?;
    if unbind(txn, &t) == 0 {
        return Err(DomainError::Invalid(
            "none of the named targets has boot parameters".into(),
        ));
    }
    for id in image_ids {
        txn.delete_boot_config(&id);
    }
    Ok(())
}

/// GET: the configurations holding the named targets (all when none is
/// named), each once; 404 if a named target has none.
pub fn query<'m>(
    model: &'m Model,
    named: &[BootTarget],
) -> Result<Vec<&'m BootConfig>, DomainError> {
    if named.is_empty() {
        return Ok(all(model));
    }
    let mut out: Vec<&BootConfig> = Vec::new();
    for t in named {
        let cfg = model
            .boot_targets
            .get(t)
            .and_then(|id| model.boot_configs.get(id))
            .ok_or_else(|| {
                DomainError::NotFound(format!("{} has no boot parameters", describe(t)))
            })?;
        if !out.iter().any(|c| c.id == cfg.id) {
            out.push(cfg);
        }
    }
    Ok(out)
}

/// Every configuration, each once: bound ones in the order of their first
/// target (hosts and tags, then MACs, then NIDs), then the others by name,
/// so listings are stable; the internal IDs are random.
pub fn all(model: &Model) -> Vec<&BootConfig> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<&BootConfig> = model
        .boot_targets
        .values()
        .filter(|id| seen.insert(id.as_str()))
        .filter_map(|id| model.boot_configs.get(id))
        .collect();
    // The rest (selecting configurations, whose IDs are random too) by name.
    let mut rest: Vec<&BootConfig> = model
        .boot_configs
        .values()
        .filter(|c| !seen.contains(c.id.as_str()))
        .collect();
    rest.sort_by(|a, b| (&a.meta.name, &a.id).cmp(&(&b.meta.name, &b.id)));
    out.extend(rest);
    out
}

fn bound(model: &Model, t: BootTarget) -> Option<&BootConfig> {
    model
        .boot_targets
        .get(&t)
        .and_then(|id| model.boot_configs.get(id))
}

/// The configuration a component boots with, whichever API wrote it:
/// first its own BSS bindings (xname, then the requesting MAC, then NID),
/// then the best configuration that selects it (`boot::select`: MACs,
/// NIDs, hosts, inventory groups, by score and priority), then its Role
/// tag, then `Default`. Only configurations with a kernel count. With only
/// BSS records the selection step finds nothing, so BSS's order stands.
pub fn config_for<'m>(
    model: &'m Model,
    c: &Component,
    mac: Option<&str>,
) -> Option<&'m BootConfig> {
    config_in_profile(model, c, mac, None)
}

/// [`config_for`], with selection limited to one boot-service profile.
pub fn config_in_profile<'m>(
    model: &'m Model,
    c: &Component,
    mac: Option<&str>,
    profile: Option<&str>,
) -> Option<&'m BootConfig> {
    let with_kernel = |o: Option<&'m BootConfig>| o.filter(|b| !b.kernel.is_empty());
    with_kernel(bound(model, BootTarget::Host(c.id.clone())))
        .or_else(|| mac.and_then(|m| with_kernel(bound(model, BootTarget::Mac(m.to_string())))))
        .or_else(|| {
            c.nid
                .and_then(|n| with_kernel(bound(model, BootTarget::Nid(n))))
        })
        .or_else(|| {
            if model.boot_selectors.is_empty() {
                return None;
            }
            let facts = super::select::NodeFacts::of(model, c, mac);
            super::select::best(model, &facts, profile).map(|(cfg, _)| cfg)
        })
        .or_else(|| {
            c.role
                .as_ref()
                .and_then(|r| with_kernel(bound(model, BootTarget::Host(r.clone()))))
        })
        .or_else(|| with_kernel(bound(model, BootTarget::Host(DEFAULT_TAG.into()))))
}

/// A node that may boot: an enabled Node whose State is not `Empty` and
/// whose ComponentEndpoint, if it has one, is enabled.
pub fn bootable(model: &Model, c: &Component) -> bool {
    c.is_node()
        && c.enabled != Some(false)
        && c.state != "Empty"
        && model
            .component_endpoints
            .get(&c.id)
            .is_none_or(|e| e.enabled)
}

/// The component an interface MAC belongs to.
pub fn component_of_mac<'m>(model: &'m Model, mac_colon: &str) -> Option<&'m Component> {
    let id = mac::id_of(mac_colon).ok()?;
    let iface = model.interfaces.get(&id)?;
    model.component(&iface.component_id)
}

/// The first MAC the inventory has for a node (for `BOOTIF=` and retries).
pub fn first_mac(model: &Model, xname: &str) -> Option<String> {
    model
        .interfaces_of(xname)
        .first()
        .map(|i| i.mac_address.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Store;
    use crate::inventory::components::{ComponentArrayIn, ComponentIn};

    async fn store_with_nodes() -> Store {
        let store = Store::open_in_memory().unwrap();
        let comps = (0..3)
            .map(|i| ComponentIn {
                id: Some(format!("x0c0s{i}b0n0")),
                state: Some("Ready".into()),
                nid: Some(i + 1),
                role: Some("Compute".into()),
                ..Default::default()
            })
            .collect();
        store
            .write(move |t| {
                crate::inventory::components::post(
                    t,
                    &ComponentArrayIn {
                        components: comps,
                        force: false,
                    },
                )
            })
            .await
            .unwrap();
        store
    }

    fn body(hosts: &[&str], kernel: &str) -> BootParamsIn {
        BootParamsIn {
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            kernel: Some(kernel.into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn post_binds_once_put_rebinds_patch_copies_on_write() {
        let store = store_with_nodes().await;
        store
            .write(|t| post(t, &body(&["x0c0s0b0n0", "X0C0S1B0N0"], "k1")))
            .await
            .unwrap();
        let err = store
            .write(|t| post(t, &body(&["x0c0s1b0n0"], "k2")))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            crate::inventory::WriteError::Domain(DomainError::Conflict(_))
        ));
        // PATCH one of two targets: the shared configuration is copied.
        store
            .write(|t| patch(t, &body(&["x0c0s1b0n0"], "k3")))
            .await
            .unwrap();
        let s = store.snapshot();
        assert_eq!(s.boot_configs.len(), 2);
        let k = |x: &str| {
            bound(&s, BootTarget::Host(x.into()))
                .unwrap()
                .kernel
                .clone()
        };
        assert_eq!(
            (k("x0c0s0b0n0"), k("x0c0s1b0n0")),
            ("k1".into(), "k3".into())
        );
        // PUT moves x0c0s0b0n0 away; its old configuration is orphaned and vanishes.
        store
            .write(|t| put(t, &body(&["x0c0s0b0n0", "x0c0s1b0n0"], "k4")))
            .await
            .unwrap();
        let s = store.snapshot();
        assert_eq!(s.boot_configs.len(), 1);
        store
            .write(|t| delete(t, &body(&["x0c0s0b0n0", "x0c0s1b0n0"], "")))
            .await
            .unwrap();
        assert!(store.snapshot().boot_configs.is_empty());
    }

    #[tokio::test]
    async fn lookup_order_is_xname_mac_nid_role_default() {
        let store = store_with_nodes().await;
        store
            .write(|t| post(t, &body(&["Default"], "default")))
            .await
            .unwrap();
        store
            .write(|t| post(t, &body(&["compute"], "role")))
            .await
            .unwrap();
        let nid = BootParamsIn {
            nids: vec![2],
            kernel: Some("nid".into()),
            ..Default::default()
        };
        store.write(move |t| post(t, &nid)).await.unwrap();
        let m = BootParamsIn {
            macs: vec!["52-54-00-00-00-03".into()],
            kernel: Some("mac".into()),
            ..Default::default()
        };
        store.write(move |t| post(t, &m)).await.unwrap();
        store
            .write(|t| post(t, &body(&["x0c0s2b0n0"], "xname")))
            .await
            .unwrap();
        let s = store.snapshot();
        let k = |x: &str, mac: Option<&str>| {
            config_for(&s, &s.components[x], mac)
                .unwrap()
                .kernel
                .clone()
        };
        assert_eq!(k("x0c0s2b0n0", Some("52:54:00:00:00:03")), "xname");
        assert_eq!(k("x0c0s0b0n0", Some("52:54:00:00:00:03")), "mac");
        assert_eq!(k("x0c0s1b0n0", None), "nid");
        assert_eq!(k("x0c0s0b0n0", None), "role");
        let mut c = Component::clone(&s.components["x0c0s0b0n0"]);
        c.role = None;
        assert_eq!(config_for(&s, &c, None).unwrap().kernel, "default");
    }

    #[tokio::test]
    async fn bad_targets_are_refused_and_change_nothing() {
        let store = store_with_nodes().await;
        for b in [
            body(&["x0c0s0b0"], "k"),
            body(&["nonsense"], "k"),
            // No target and no image to key parameters by.
            BootParamsIn {
                params: Some("quiet".into()),
                ..Default::default()
            },
            BootParamsIn {
                macs: vec!["zz".into()],
                ..Default::default()
            },
            BootParamsIn {
                nids: vec![-1],
                ..Default::default()
            },
            body(&["x0c0s0b0n0"], "http://a b"),
        ] {
            let r = store.write(move |t| post(t, &b)).await;
            assert!(
                matches!(
                    r,
                    Err(crate::inventory::WriteError::Domain(DomainError::Invalid(
                        _
                    )))
                ),
                "{r:?}"
            );
        }
        assert_eq!(store.snapshot().generation, 1);
    }
}
