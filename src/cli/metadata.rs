//! `openchami metadata …`: cloud-init cluster defaults, groups, instance
//! info, phone-home records, and a preview of what a node gets.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::Client;
use super::commands::enc;
use super::output::{Format, render, table};
use crate::metadata::template;

const BASE: &str = "/cloud-init/admin";

#[derive(Subcommand, Debug)]
pub enum MetadataCmd {
    /// Cluster-wide defaults (cluster-name, short-name, base-url, keys, ...)
    #[command(subcommand)]
    Defaults(DefaultsCmd),
    /// cloud-init groups: meta-data and a cloud-config file per SMD group
    #[command(subcommand)]
    Group(GroupCmd),
    /// Per-node overrides and instance IDs
    #[command(subcommand)]
    Instance(InstanceCmd),
    /// WireGuard peers (metadata-service WireGuardPeer resources; stored,
    /// not applied: the appliance runs no WireGuard device)
    #[command(subcommand)]
    Peer(PeerCmd),
    /// Profiles: a group's template and meta-data changed, until an expiry,
    /// for the nodes whose instance info names the profile
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Phone-home reports nodes sent when cloud-init finished
    PhoneHome {
        /// Only this node
        node: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DefaultsCmd {
    /// List the ClusterDefaults resource (-o json|yaml: metadata-service's shape)
    List,
    /// Create the ClusterDefaults from a metadata-service spec document
    /// (base_url, cluster_name, short_name, nid_length, public_keys, …)
    Add {
        /// The document (YAML or JSON; `name` optional); - for standard input
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Show the cluster defaults
    Show,
    /// Merge a YAML or JSON document into the defaults (its non-empty keys)
    Set {
        /// The document; - for standard input
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Clear the cluster defaults
    Delete,
}

/// How a group body is given: a document, and flags that override it.
#[derive(Args, Debug, Default)]
pub struct GroupBody {
    /// A group document (YAML or JSON: description, meta-data, file); - for standard input
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The group's description
    #[arg(long)]
    pub description: Option<String>,
    /// The group's cloud-config file (served as <group>.yaml); - for standard input
    #[arg(long = "file-content", value_name = "FILE")]
    pub file_content: Option<PathBuf>,
    /// How to send --file-content [default: plain for text, base64 otherwise]
    #[arg(long, value_parser = ["plain", "base64"])]
    pub encoding: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// List cloud-init groups (-o json|yaml: metadata-service Group resources)
    List,
    /// Show one group, its file decoded
    Show { name: String },
    /// Add a group (fails if it exists)
    Add {
        name: String,
        #[command(flatten)]
        body: GroupBody,
    },
    /// Change an existing group: what is given replaces what it had
    Set {
        name: String,
        #[command(flatten)]
        body: GroupBody,
    },
    /// Delete a group
    Delete { name: String },
    /// Print the documents a node gets, the group's file rendered if it is a Jinja template
    Render {
        group: String,
        /// Node xname
        node: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum InstanceCmd {
    /// List InstanceInfo resources (-o json|yaml: metadata-service's shape)
    List,
    /// Remove a node's overrides (its instance ID stays)
    Delete { node: String },
    /// Show a node's overrides and instance ID
    Show { node: String },
    /// Replace a node's overrides with a YAML or JSON document (-f), or
    /// change the fields given (e.g. --profile)
    Set {
        node: String,
        /// The document; - for standard input
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        #[command(flatten)]
        fields: InstanceArgs,
    },
}

/// InstanceInfo fields `instance set` changes through metadata-service.
#[derive(Args, Debug, Default)]
pub struct InstanceArgs {
    /// The profile the node follows (instance info's default_profile)
    #[arg(long, conflicts_with = "file")]
    pub profile: Option<String>,
    /// Follow no profile
    #[arg(long, conflicts_with_all = ["file", "profile"])]
    pub no_profile: bool,
    #[arg(long, conflicts_with = "file")]
    pub hostname: Option<String>,
    #[arg(long, conflicts_with = "file")]
    pub local_hostname: Option<String>,
    /// Where the node fetches its group files (cloud_init_base_url)
    #[arg(long, conflicts_with = "file")]
    pub base_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum PeerCmd {
    /// Add a peer
    Add {
        /// Name (metadata.name)
        name: String,
        #[command(flatten)]
        spec: PeerArgs,
    },
    /// List peers
    List,
    /// Show a peer (uid or name)
    Show { id: String },
    /// Change what is given of a peer's spec (uid or name)
    Set {
        id: String,
        #[command(flatten)]
        spec: PeerArgs,
    },
    /// Delete peers (uids or names)
    #[command(arg_required_else_help = true)]
    Delete { ids: Vec<String> },
}

#[derive(Args, Debug, Default)]
pub struct PeerArgs {
    /// A spec document (YAML or JSON: public_key, allowed_ip, description); - for standard input
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The peer's WireGuard public key (base64)
    #[arg(long)]
    pub public_key: Option<String>,
    /// The peer's tunnel network, CIDR (10.42.1.1/32)
    #[arg(long)]
    pub allowed_ip: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ProfileCmd {
    /// Add a profile of a group
    Add {
        /// Name (metadata.name; what instance info's default_profile names)
        name: String,
        #[command(flatten)]
        spec: ProfileArgs,
    },
    /// List profiles, expiry as of now
    List,
    /// Show a profile (uid or name)
    Show { id: String },
    /// Change what is given of a profile's spec (uid or name)
    Set {
        id: String,
        #[command(flatten)]
        spec: ProfileArgs,
    },
    /// Delete profiles (uids or names)
    #[command(arg_required_else_help = true)]
    Delete { ids: Vec<String> },
}

#[derive(Args, Debug, Default)]
pub struct ProfileArgs {
    /// A spec document (YAML or JSON: groupRef, parentProfile, template, metaData, expires_at, ttl_seconds); - for standard input
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// The group whose template and meta-data the profile changes
    #[arg(long)]
    pub group: Option<String>,
    /// A profile to inherit template and meta-data from
    #[arg(long)]
    pub parent: Option<String>,
    /// Inherit from no profile
    #[arg(long, conflicts_with = "parent")]
    pub no_parent: bool,
    /// A cloud-config template replacing the group's (Jinja variables as in group templates); - for standard input
    #[arg(long, value_name = "FILE")]
    pub template: Option<PathBuf>,
    /// How to send --template
    #[arg(long, value_parser = ["plain", "base64"], requires = "template")]
    pub encoding: Option<String>,
    /// Meta-data added over the group's (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Meta-data keys to drop from the profile (set only; repeatable)
    #[arg(long = "unset-meta", value_name = "KEY")]
    pub unset_meta: Vec<String>,
    /// When the profile stops applying (RFC 3339, e.g. 2026-12-31T18:00:00Z)
    #[arg(long, conflicts_with = "ttl")]
    pub expires_at: Option<String>,
    /// Stop applying this long after the write (90s, 15m, 12h, 7d)
    #[arg(long)]
    pub ttl: Option<String>,
    /// Never expire (drops expires_at and ttl_seconds)
    #[arg(long, conflicts_with_all = ["expires_at", "ttl"])]
    pub no_expiry: bool,
}

/// Reads a file, or standard input for `-`.
fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("reading standard input")?;
        Ok(b)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

fn shown(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "standard input".into()
    } else {
        path.display().to_string()
    }
}

/// A YAML or JSON mapping from a file or standard input. A `.json` file is
/// read as strict JSON; anything else as YAML, of which JSON is a subset.
pub fn read_doc(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let bytes = read_input(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| anyhow!("{} is not text", shown(path)))?;
    let v: Value = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_str(text).map_err(|e| anyhow!("{} is not valid JSON: {e}", shown(path)))?
    } else {
        serde_yaml_ng::from_str(text)
            .map_err(|e| anyhow!("{} is not valid YAML or JSON: {e}", shown(path)))?
    };
    match v {
        Value::Object(m) => Ok(m),
        _ => bail!("{} must hold a mapping", shown(path)),
    }
}

/// The group body `b` describes, on top of `base` (an existing group).
fn group_body(name: &str, mut base: Map<String, Value>, b: &GroupBody) -> anyhow::Result<Value> {
    if b.file.as_deref().is_some_and(|f| f.as_os_str() == "-")
        && b.file_content
            .as_deref()
            .is_some_and(|f| f.as_os_str() == "-")
    {
        bail!("only one of -f and --file-content can read standard input");
    }
    if let Some(f) = &b.file {
        for (k, v) in read_doc(f)? {
            if k == "name" {
                match v.as_str() {
                    Some(n) if n.eq_ignore_ascii_case(name) => {}
                    _ => bail!("{} names group {v} but the command names {name}", shown(f)),
                }
                continue;
            }
            base.insert(k, v);
        }
    }
    if let Some(d) = &b.description {
        base.insert("description".into(), json!(d));
    }
    if let Some(path) = &b.file_content {
        let bytes = read_input(path)?;
        let filename = if path.as_os_str() == "-" {
            String::new()
        } else {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let text = std::str::from_utf8(&bytes).ok();
        let file = match (b.encoding.as_deref(), text) {
            (Some("plain"), None) => bail!("{} is not text; use --encoding base64", shown(path)),
            (Some("plain") | None, Some(t)) => {
                json!({"content": t, "filename": filename, "encoding": "plain"})
            }
            _ => json!({
                "content": base64::engine::general_purpose::STANDARD.encode(&bytes),
                "filename": filename,
                "encoding": "base64",
            }),
        };
        base.insert("file".into(), file);
    } else if b.encoding.is_some() {
        bail!("--encoding applies to --file-content");
    }
    base.insert("name".into(), json!(name));
    Ok(Value::Object(base))
}

/// A group's file content as text, decoded.
fn file_text(g: &Value) -> Option<String> {
    let f = g.get("file")?;
    let content = f.get("content")?.as_str()?;
    if f.get("encoding").and_then(Value::as_str) == Some("base64") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(content)
            .ok()?;
        Some(
            String::from_utf8(bytes)
                .unwrap_or_else(|e| format!("<{} bytes of binary content>", e.into_bytes().len())),
        )
    } else {
        Some(content.to_string())
    }
}

fn key_values(v: &Value) -> String {
    let rows: Vec<Value> = v
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect()
        })
        .unwrap_or_default();
    table(&[("KEY", "/key"), ("VALUE", "/value")], &rows)
}

/// metadata-service's collections.
const V2: &str = "/metadata-service";
const DEFAULTS: &str = "/metadata-service/clusterdefaultss";
const INSTANCES: &str = "/metadata-service/instanceinfos";
const PEERS: &str = "/metadata-service/wireguardpeers";
const PROFILES: &str = "/metadata-service/profiles";

const UID: (&str, &str) = ("UID", "/metadata/uid");
const NAME: (&str, &str) = ("NAME", "/metadata/name");

/// A v0.2 collection: a table of `columns`, or the resources as served.
async fn list(
    client: &Client,
    format: Format,
    path: &str,
    columns: &[(&str, &str)],
) -> anyhow::Result<String> {
    let items = client.get(path).await?;
    let rows = items.as_array().cloned().unwrap_or_default();
    Ok(render(format, columns, &rows, &items))
}

/// One resource: as served with -o json|yaml, else as YAML.
fn one(format: Format, v: &Value) -> anyhow::Result<String> {
    if format == Format::Table {
        return Ok(serde_yaml_ng::to_string(v)?);
    }
    Ok(render(format, &[], &[], v))
}

/// What a write prints: the resource with -o json|yaml, else a line.
fn wrote(format: Format, verb: &str, v: &Value) -> anyhow::Result<String> {
    if format != Format::Table {
        return one(format, v);
    }
    Ok(format!(
        "{verb} {} {} ({})\n",
        v["kind"].as_str().unwrap_or("resource"),
        v["metadata"]["name"].as_str().unwrap_or(""),
        v["metadata"]["uid"].as_str().unwrap_or("")
    ))
}

async fn delete_all(client: &Client, path: &str, ids: &[String]) -> anyhow::Result<String> {
    let mut out = String::new();
    for id in ids {
        let v = client
            .send(Method::DELETE, &format!("{path}/{}", enc(id)), None)
            .await?;
        out.push_str(&format!("deleted {}\n", v["uid"].as_str().unwrap_or(id)));
    }
    Ok(out)
}

/// The spec keys of a document given with -f (on `add`, its `name`, if
/// any, must be the command's).
fn spec_doc(file: Option<&Path>, name: Option<&str>) -> anyhow::Result<Map<String, Value>> {
    let Some(f) = file else {
        return Ok(Map::new());
    };
    let mut doc = read_doc(f)?;
    if let Some(spec) = doc.remove("spec") {
        // An envelope: its spec is what counts here.
        return match spec {
            Value::Object(m) => Ok(m),
            _ => bail!("{}: spec must be a mapping", shown(f)),
        };
    }
    if let (Some(n), Some(name)) = (doc.remove("name"), name)
        && n.as_str() != Some(name)
    {
        bail!("{} names {n} but the command names {name}", shown(f));
    }
    Ok(doc)
}

fn peer_spec(name: Option<&str>, a: &PeerArgs) -> anyhow::Result<Map<String, Value>> {
    let mut spec = spec_doc(a.file.as_deref(), name)?;
    for (k, v) in [
        ("public_key", &a.public_key),
        ("allowed_ip", &a.allowed_ip),
        ("description", &a.description),
    ] {
        if let Some(v) = v {
            spec.insert(k.into(), json!(v));
        }
    }
    Ok(spec)
}

fn profile_spec(name: Option<&str>, a: &ProfileArgs) -> anyhow::Result<Map<String, Value>> {
    let update = name.is_none();
    let mut spec = spec_doc(a.file.as_deref(), name)?;
    if let Some(g) = &a.group {
        spec.insert("groupRef".into(), json!(g));
    }
    if let Some(p) = &a.parent {
        spec.insert("parentProfile".into(), json!(p));
    }
    if a.no_parent {
        spec.insert("parentProfile".into(), Value::Null);
    }
    if let Some(path) = &a.template {
        let bytes = read_input(path)?;
        let text = String::from_utf8(bytes).map_err(|_| anyhow!("{} is not text", shown(path)))?;
        if a.encoding.as_deref() == Some("base64") {
            spec.insert(
                "template".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(text.as_bytes())),
            );
            spec.insert("templateEncoding".into(), json!("base64"));
        } else {
            spec.insert("template".into(), json!(text));
        }
    }
    let mut meta = Map::new();
    for kv in &a.meta {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| anyhow!("--meta {kv:?}: use KEY=VALUE"))?;
        meta.insert(k.trim().to_string(), json!(v));
    }
    if !a.unset_meta.is_empty() && !update {
        bail!("--unset-meta applies to profile set");
    }
    for k in &a.unset_meta {
        meta.insert(k.clone(), Value::Null);
    }
    if !meta.is_empty() {
        match spec.get_mut("metaData") {
            Some(Value::Object(m)) => m.extend(meta),
            _ => {
                spec.insert("metaData".into(), Value::Object(meta));
            }
        }
    }
    if let Some(t) = &a.expires_at {
        chrono::DateTime::parse_from_rfc3339(t).map_err(|e| {
            anyhow!("--expires-at {t:?} is not RFC 3339 (like 2026-12-31T18:00:00Z): {e}")
        })?;
        spec.insert("expires_at".into(), json!(t));
        if update {
            spec.insert("ttl_seconds".into(), Value::Null);
        }
    }
    if let Some(t) = &a.ttl {
        let secs = super::commands::parse_duration(t)?.as_secs();
        spec.insert("ttl_seconds".into(), json!(secs));
        if update {
            spec.insert("expires_at".into(), Value::Null);
        }
    }
    if a.no_expiry {
        spec.insert("expires_at".into(), Value::Null);
        spec.insert("ttl_seconds".into(), Value::Null);
    }
    Ok(spec)
}

/// `add`: POST the envelope; `set`: a merge patch of what was given.
async fn add_or_set(
    client: &Client,
    format: Format,
    path: &str,
    id: &str,
    spec: Map<String, Value>,
    add: bool,
) -> anyhow::Result<String> {
    if add {
        let body = json!({"metadata": {"name": id}, "spec": spec});
        let v = client.send(Method::POST, path, Some(&body)).await?;
        return wrote(format, "created", &v);
    }
    if spec.is_empty() {
        bail!("nothing to change: give the fields to set (see --help)");
    }
    let v = client
        .send(
            Method::PATCH,
            &format!("{path}/{}", enc(id)),
            Some(&Value::Object(spec)),
        )
        .await?;
    wrote(format, "updated", &v)
}

/// `instance set NODE --profile …`: a merge patch of the node's
/// InstanceInfo, created when it has none.
async fn instance_fields(
    client: &Client,
    format: Format,
    node: &str,
    a: &InstanceArgs,
) -> anyhow::Result<String> {
    let mut spec = Map::new();
    for (k, v) in [
        ("default_profile", &a.profile),
        ("hostname", &a.hostname),
        ("local_hostname", &a.local_hostname),
        ("cloud_init_base_url", &a.base_url),
    ] {
        if let Some(v) = v {
            spec.insert(k.into(), json!(v));
        }
    }
    if a.no_profile {
        spec.insert("default_profile".into(), Value::Null);
    }
    if spec.is_empty() {
        bail!("give -f FILE (the whole record) or the fields to change (see --help)");
    }
    if let Some(p) = &a.profile {
        // The API takes a name of a profile still to come; a person
        // typing one most likely means an existing profile.
        let (status, _) = client
            .send_raw(Method::GET, &format!("{PROFILES}/{}", enc(p)), None)
            .await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            bail!("no profile {p} (create it with `openchami metadata profile add {p} --group …`)");
        }
    }
    let path = format!("{INSTANCES}/{}", enc(node));
    let body = Value::Object(spec.clone());
    let (status, v) = client.send_raw(Method::PATCH, &path, Some(&body)).await?;
    if status != reqwest::StatusCode::NOT_FOUND {
        return wrote(
            format,
            "updated",
            &Client::result(&Method::PATCH, &path, status, v)?,
        );
    }
    // No InstanceInfo yet: create it.
    spec.retain(|_, v| !v.is_null());
    add_or_set(client, format, INSTANCES, node, spec, true).await
}

async fn peer(client: &Client, format: Format, cmd: PeerCmd) -> anyhow::Result<String> {
    match cmd {
        PeerCmd::Add { name, spec } => {
            let spec = peer_spec(Some(&name), &spec)?;
            add_or_set(client, format, PEERS, &name, spec, true).await
        }
        PeerCmd::List => {
            let cols = [
                UID,
                NAME,
                ("PUBLIC-KEY", "/spec/public_key"),
                ("ALLOWED-IP", "/spec/allowed_ip"),
                ("DESCRIPTION", "/spec/description"),
            ];
            list(client, format, PEERS, &cols).await
        }
        PeerCmd::Show { id } => one(format, &client.get(&format!("{PEERS}/{}", enc(&id))).await?),
        PeerCmd::Set { id, spec } => {
            let spec = peer_spec(None, &spec)?;
            add_or_set(client, format, PEERS, &id, spec, false).await
        }
        PeerCmd::Delete { ids } => delete_all(client, PEERS, &ids).await,
    }
}

async fn profile(client: &Client, format: Format, cmd: ProfileCmd) -> anyhow::Result<String> {
    match cmd {
        ProfileCmd::Add { name, spec } => {
            let spec = profile_spec(Some(&name), &spec)?;
            add_or_set(client, format, PROFILES, &name, spec, true).await
        }
        ProfileCmd::List => {
            let cols = [
                UID,
                NAME,
                ("GROUP", "/spec/groupRef"),
                ("PARENT", "/spec/parentProfile"),
                ("EXPIRES", "/status/expires_at"),
                ("EXPIRED", "/status/expired"),
            ];
            list(client, format, PROFILES, &cols).await
        }
        ProfileCmd::Show { id } => one(
            format,
            &client.get(&format!("{PROFILES}/{}", enc(&id))).await?,
        ),
        ProfileCmd::Set { id, spec } => {
            let spec = profile_spec(None, &spec)?;
            add_or_set(client, format, PROFILES, &id, spec, false).await
        }
        ProfileCmd::Delete { ids } => delete_all(client, PROFILES, &ids).await,
    }
}

pub async fn run(client: &Client, format: Format, cmd: MetadataCmd) -> anyhow::Result<String> {
    match cmd {
        MetadataCmd::Defaults(DefaultsCmd::List) => {
            let cols = [
                UID,
                NAME,
                ("CLUSTER", "/spec/cluster_name"),
                ("BASE-URL", "/spec/base_url"),
            ];
            list(client, format, DEFAULTS, &cols).await
        }
        MetadataCmd::Defaults(DefaultsCmd::Delete) => {
            let items = client.get(DEFAULTS).await?;
            let uids: Vec<String> = items
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["metadata"]["uid"].as_str().map(str::to_string))
                .collect();
            if uids.is_empty() {
                bail!("no cluster defaults are set");
            }
            delete_all(client, DEFAULTS, &uids).await
        }
        MetadataCmd::Instance(InstanceCmd::List) => {
            let cols = [
                UID,
                ("NODE", "/metadata/name"),
                ("INSTANCE-ID", "/spec/instance_id"),
                ("HOSTNAME", "/spec/local_hostname"),
                ("PROFILE", "/spec/default_profile"),
            ];
            list(client, format, INSTANCES, &cols).await
        }
        MetadataCmd::Instance(InstanceCmd::Delete { node }) => {
            delete_all(client, INSTANCES, &[node]).await
        }
        MetadataCmd::Peer(cmd) => peer(client, format, cmd).await,
        MetadataCmd::Profile(cmd) => profile(client, format, cmd).await,
        MetadataCmd::Defaults(DefaultsCmd::Show) => {
            let d = client.get(&format!("{BASE}/cluster-defaults")).await?;
            if format == Format::Table {
                return Ok(key_values(&d));
            }
            Ok(render(format, &[], &[], &d))
        }
        MetadataCmd::Defaults(DefaultsCmd::Set { file }) => {
            let body = Value::Object(read_doc(&file)?);
            client
                .send(
                    Method::POST,
                    &format!("{BASE}/cluster-defaults"),
                    Some(&body),
                )
                .await?;
            Ok("cluster defaults updated\n".into())
        }
        MetadataCmd::Group(cmd) => group(client, format, cmd).await,
        MetadataCmd::Instance(InstanceCmd::Show { node }) => {
            let v = client
                .get(&format!("{BASE}/instance-info/{}", enc(&node)))
                .await?;
            if format == Format::Table {
                return Ok(key_values(&v));
            }
            Ok(render(format, &[], &[], &v))
        }
        MetadataCmd::Instance(InstanceCmd::Set {
            node,
            file: None,
            fields,
        }) => instance_fields(client, format, &node, &fields).await,
        MetadataCmd::Defaults(DefaultsCmd::Add { file }) => {
            let mut spec = read_doc(&file)?;
            let name = spec
                .remove("name")
                .and_then(|n| n.as_str().map(str::to_string))
                .unwrap_or_default();
            let body = json!({"metadata": {"name": name}, "spec": spec});
            let v = client.send(Method::POST, DEFAULTS, Some(&body)).await?;
            wrote(format, "created", &v)
        }
        MetadataCmd::Instance(InstanceCmd::Set {
            node,
            file: Some(file),
            ..
        }) => {
            let body = Value::Object(read_doc(&file)?);
            client
                .send(
                    Method::PUT,
                    &format!("{BASE}/instance-info/{}", enc(&node)),
                    Some(&body),
                )
                .await?;
            Ok(format!("instance info of {node} replaced\n"))
        }
        MetadataCmd::PhoneHome { node } => {
            let v = match &node {
                Some(n) => client.get(&format!("{BASE}/phone-home/{}", enc(n))).await?,
                None => client.get(&format!("{BASE}/phone-home")).await?,
            };
            let rows = match &v {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            Ok(render(
                format,
                &[
                    ("NODE", "/node"),
                    ("RECEIVED", "/received"),
                    ("ADDRESS", "/address"),
                    ("INSTANCE-ID", "/instance_id"),
                    ("HOSTNAME", "/hostname"),
                    ("FQDN", "/fqdn"),
                ],
                &rows,
                &v,
            ))
        }
    }
}

async fn group(client: &Client, format: Format, cmd: GroupCmd) -> anyhow::Result<String> {
    match cmd {
        GroupCmd::List if format != Format::Table => {
            let groups = client.get(&format!("{V2}/groups")).await?;
            Ok(render(format, &[], &[], &groups))
        }
        GroupCmd::List => {
            let groups = client.get(&format!("{BASE}/groups")).await?;
            let rows: Vec<Value> = groups
                .as_object()
                .map(|m| {
                    m.values()
                        .map(|g| {
                            let keys: Vec<&String> = g
                                .get("meta-data")
                                .and_then(Value::as_object)
                                .map(|m| m.keys().collect())
                                .unwrap_or_default();
                            let file = g
                                .get("file")
                                .map(|f| {
                                    let text = file_text(g).unwrap_or_default();
                                    let kind = if template::is_jinja(&text) {
                                        "jinja"
                                    } else {
                                        "static"
                                    };
                                    format!(
                                        "{} ({kind}, {} bytes)",
                                        f.get("filename")
                                            .and_then(Value::as_str)
                                            .filter(|s| !s.is_empty())
                                            .unwrap_or("-"),
                                        text.len()
                                    )
                                })
                                .unwrap_or_default();
                            json!({"name": g["name"], "description": g.get("description"),
                                   "keys": keys, "file": file})
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(render(
                format,
                &[
                    ("NAME", "/name"),
                    ("DESCRIPTION", "/description"),
                    ("META-DATA", "/keys"),
                    ("FILE", "/file"),
                ],
                &rows,
                &groups,
            ))
        }
        GroupCmd::Show { name } => {
            let g = client.get(&format!("{BASE}/groups/{}", enc(&name))).await?;
            if format != Format::Table {
                return Ok(render(format, &[], &[], &g));
            }
            let mut shown = g.clone();
            if let (Some(text), Some(f)) = (file_text(&g), shown.get_mut("file")) {
                f["content"] = json!(text);
                f["encoding"] = json!(format!(
                    "{} (shown decoded)",
                    f["encoding"].as_str().unwrap_or("plain")
                ));
            }
            Ok(serde_yaml_ng::to_string(&shown)?)
        }
        GroupCmd::Add { name, body } => {
            let body = group_body(&name, Map::new(), &body)?;
            client
                .send(Method::POST, &format!("{BASE}/groups"), Some(&body))
                .await?;
            Ok(format!(
                "created cloud-init group {}\n",
                body["name"].as_str().unwrap_or(&name).to_lowercase()
            ))
        }
        GroupCmd::Set { name, body } => {
            let path = format!("{BASE}/groups/{}", enc(&name));
            let (status, current) = client.send_raw(Method::GET, &path, None).await?;
            if status == reqwest::StatusCode::NOT_FOUND {
                bail!("no cloud-init group {name} (create it with `openchami metadata group add`)");
            }
            let current = Client::result(&Method::GET, &path, status, current)?;
            let base = current.as_object().cloned().unwrap_or_default();
            let body = group_body(&name, base, &body)?;
            client.send(Method::PUT, &path, Some(&body)).await?;
            Ok(format!(
                "updated cloud-init group {}\n",
                name.to_lowercase()
            ))
        }
        GroupCmd::Delete { name } => {
            client
                .send(
                    Method::DELETE,
                    &format!("{BASE}/groups/{}", enc(&name)),
                    None,
                )
                .await?;
            Ok(format!("deleted cloud-init group {name}\n"))
        }
        GroupCmd::Render { group, node } => render_node(client, format, &group, &node).await,
    }
}

/// What `node` gets, through the impersonation routes; a Jinja group file
/// is rendered here against the node's meta-data.
async fn render_node(
    client: &Client,
    format: Format,
    group: &str,
    node: &str,
) -> anyhow::Result<String> {
    let base = format!("{BASE}/impersonation/{}", enc(node));
    // The group file first: an unknown group or node fails before the
    // meta-data fetch, which assigns a new node its instance ID.
    let file_name = format!("{}.yaml", group.trim_end_matches(".yaml"));
    let file = client
        .get_text(&format!("{base}/{}", enc(&file_name)))
        .await?;
    let meta = client.get_text(&format!("{base}/meta-data")).await?;
    let user = client.get_text(&format!("{base}/user-data")).await?;
    let vendor = client.get_text(&format!("{base}/vendor-data")).await?;
    let meta_value: Value = serde_yaml_ng::from_str(&meta)
        .map_err(|e| anyhow!("the meta-data of {node} is not YAML: {e}"))?;
    let jinja = template::is_jinja(&file);
    let rendered = if jinja {
        Some(
            template::render(&file, &meta_value)
                .map_err(|e| anyhow!("{file_name} does not render for {node}: {e}"))?,
        )
    } else {
        None
    };
    if format != Format::Table {
        let v = json!({
            "meta-data": meta_value,
            "user-data": user,
            "vendor-data": vendor,
            "file": {"name": file_name, "template": jinja, "served": file, "rendered": rendered},
        });
        return Ok(render(format, &[], &[], &v));
    }
    let mut out = String::new();
    let mut section = |title: &str, body: &str| {
        out.push_str(&format!("==> {title} <==\n{body}"));
        if !body.ends_with('\n') {
            out.push('\n');
        }
    };
    section("meta-data", &meta);
    section("user-data", &user);
    section("vendor-data", &vendor);
    match rendered {
        Some(r) => section(
            &format!("{file_name} (Jinja template, rendered here as cloud-init will on the node)"),
            &r,
        ),
        None => section(&file_name, &file),
    }
    Ok(out)
}
