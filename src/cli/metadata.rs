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
    /// Phone-home reports nodes sent when cloud-init finished
    PhoneHome {
        /// Only this node
        node: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DefaultsCmd {
    /// Show the cluster defaults
    Show,
    /// Merge a YAML or JSON document into the defaults (its non-empty keys)
    Set {
        /// The document; - for standard input
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
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
    /// List cloud-init groups
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
    /// Show a node's overrides and instance ID
    Show { node: String },
    /// Replace a node's overrides with a YAML or JSON document
    Set {
        node: String,
        /// The document; - for standard input
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
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

pub async fn run(client: &Client, format: Format, cmd: MetadataCmd) -> anyhow::Result<String> {
    match cmd {
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
        MetadataCmd::Instance(InstanceCmd::Set { node, file }) => {
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
