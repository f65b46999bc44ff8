//! `openchami boot …`: boot parameters and the script a node will get.

use anyhow::bail;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Client;
use super::output::{Format, render};

#[derive(Subcommand, Debug)]
pub enum BootCmd {
    /// Boot parameters (kernel, initrd, command line) per target
    #[command(subcommand)]
    Params(ParamsCmd),
    /// boot-service configurations that select nodes (by group, MAC, NID,
    /// xname or glob) and compete by score and priority
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print exactly the iPXE script a node gets
    Script {
        /// Node xname or MAC address
        node: String,
        /// iPXE ${buildarch}, for unknown MACs
        #[arg(long)]
        arch: Option<String>,
        /// Print upstream's json=1 form
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ParamsCmd {
    /// Bind targets to a configuration (replacing what they had)
    Set {
        #[command(flatten)]
        targets: Targets,
        #[arg(long)]
        kernel: String,
        #[arg(long)]
        initrd: Option<String>,
        /// Kernel command line
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        params: String,
    },
    /// Show configurations (all, or the targets')
    Show {
        #[command(flatten)]
        targets: Targets,
    },
    /// Unbind targets
    Delete {
        #[command(flatten)]
        targets: Targets,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Create a configuration (e.g. `--group compute --kernel …`)
    Add {
        /// Name (metadata.name)
        name: String,
        #[command(flatten)]
        sel: Selectors,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// List every configuration (BSS-written ones included)
    List,
    /// Show one configuration (uid or name)
    Show { id: String },
    /// Replace a configuration's spec (uid or name)
    Set {
        id: String,
        #[command(flatten)]
        sel: Selectors,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Delete configurations (uids or names)
    #[command(arg_required_else_help = true)]
    Delete { ids: Vec<String> },
}

/// Which nodes a boot-service configuration selects (none: every node).
#[derive(Args, Debug, Default)]
pub struct Selectors {
    /// Inventory groups
    #[arg(long = "group", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Node xnames or globs (x1000c0*)
    #[arg(short = 'x', long = "xname", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// MAC addresses
    #[arg(long = "mac", value_delimiter = ',')]
    pub macs: Vec<String>,
    /// NIDs
    #[arg(long = "nid", value_delimiter = ',')]
    pub nids: Vec<i64>,
}

#[derive(Args, Debug)]
pub struct SpecArgs {
    #[arg(long)]
    pub kernel: String,
    #[arg(long)]
    pub initrd: Option<String>,
    /// Kernel command line
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub params: String,
    /// 0–100: wins between configurations that select a node equally well
    #[arg(long, default_value_t = 0)]
    pub priority: i64,
    /// boot-service profile
    #[arg(long)]
    pub profile: Option<String>,
}

fn spec_body(sel: &Selectors, spec: &SpecArgs) -> Value {
    let mut v = json!({"kernel": spec.kernel, "params": spec.params, "priority": spec.priority});
    for (k, list) in [
        ("groups", &sel.groups),
        ("hosts", &sel.hosts),
        ("macs", &sel.macs),
    ] {
        if !list.is_empty() {
            v[k] = json!(list);
        }
    }
    if !sel.nids.is_empty() {
        v["nids"] = json!(sel.nids);
    }
    if let Some(i) = &spec.initrd {
        v["initrd"] = json!(i);
    }
    if let Some(p) = &spec.profile {
        v["profile"] = json!(p);
    }
    v
}

const CONFIGS: &str = "/boot-service/bootconfigurations";

const CONFIG_COLUMNS: &[(&str, &str)] = &[
    ("UID", "/metadata/uid"),
    ("NAME", "/metadata/name"),
    ("GROUPS", "/spec/groups"),
    ("HOSTS", "/spec/hosts"),
    ("MACS", "/spec/macs"),
    ("NIDS", "/spec/nids"),
    ("PRIORITY", "/spec/priority"),
    ("KERNEL", "/spec/kernel"),
];

/// The uid of a configuration named by uid or by a unique name.
async fn resolve(client: &Client, id: &str) -> anyhow::Result<String> {
    let all = client.get(CONFIGS).await?;
    let items = all.as_array().cloned().unwrap_or_default();
    if items.iter().any(|c| c["metadata"]["uid"] == id) {
        return Ok(id.to_string());
    }
    let named: Vec<&Value> = items
        .iter()
        .filter(|c| c["metadata"]["name"] == id)
        .collect();
    match named.as_slice() {
        [one] => Ok(one["metadata"]["uid"].as_str().unwrap_or(id).to_string()),
        [] => bail!("no boot configuration has uid or name {id}"),
        _ => bail!(
            "{} boot configurations are named {id}; give a uid",
            named.len()
        ),
    }
}

async fn run_config(client: &Client, format: Format, cmd: ConfigCmd) -> anyhow::Result<String> {
    let one = |v: Value| render(format, CONFIG_COLUMNS, std::slice::from_ref(&v), &v);
    match cmd {
        ConfigCmd::Add { name, sel, spec } => {
            let body = json!({"metadata": {"name": name}, "spec": spec_body(&sel, &spec)});
            Ok(one(client.send(Method::POST, CONFIGS, Some(&body)).await?))
        }
        ConfigCmd::List => {
            let all = client.get(CONFIGS).await?;
            let rows = all.as_array().cloned().unwrap_or_default();
            Ok(render(format, CONFIG_COLUMNS, &rows, &all))
        }
        ConfigCmd::Show { id } => {
            let uid = resolve(client, &id).await?;
            Ok(one(client
                .get(&format!("{CONFIGS}/{}", super::commands::enc(&uid)))
                .await?))
        }
        ConfigCmd::Set { id, sel, spec } => {
            let uid = resolve(client, &id).await?;
            let body = json!({"spec": spec_body(&sel, &spec)});
            let path = format!("{CONFIGS}/{}", super::commands::enc(&uid));
            Ok(one(client.send(Method::PUT, &path, Some(&body)).await?))
        }
        ConfigCmd::Delete { ids } => {
            let mut out = String::new();
            for id in ids {
                let uid = resolve(client, &id).await?;
                let path = format!("{CONFIGS}/{}", super::commands::enc(&uid));
                client.send(Method::DELETE, &path, None).await?;
                out.push_str(&format!("deleted {uid}\n"));
            }
            Ok(out)
        }
    }
}

/// Who a boot configuration is for.
#[derive(Args, Debug, Default)]
pub struct Targets {
    /// Node xnames
    #[arg(short = 'x', long = "xname", value_delimiter = ',')]
    pub xnames: Vec<String>,
    /// Every member of these groups
    #[arg(long = "group", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// MAC addresses
    #[arg(long = "mac", value_delimiter = ',')]
    pub macs: Vec<String>,
    /// NIDs
    #[arg(long = "nid", value_delimiter = ',')]
    pub nids: Vec<i64>,
    /// Tags: Default, a Role (Compute, ...), Unknown-<arch>
    #[arg(long = "tag", value_delimiter = ',')]
    pub tags: Vec<String>,
}

impl Targets {
    fn is_empty(&self) -> bool {
        self.xnames.is_empty()
            && self.groups.is_empty()
            && self.macs.is_empty()
            && self.nids.is_empty()
            && self.tags.is_empty()
    }

    /// The BSS body naming these targets, groups expanded to their members.
    async fn body(&self, client: &Client) -> anyhow::Result<Value> {
        let mut hosts: Vec<String> = self
            .xnames
            .iter()
            .chain(self.tags.iter())
            .cloned()
            .collect();
        for g in &self.groups {
            let members = client
                .get(&format!(
                    "/hsm/v2/groups/{}/members",
                    super::commands::enc(g)
                ))
                .await?;
            let ids = members["ids"].as_array().cloned().unwrap_or_default();
            if ids.is_empty() {
                bail!("group {g} has no members");
            }
            hosts.extend(ids.iter().filter_map(|v| v.as_str().map(String::from)));
        }
        Ok(json!({"hosts": hosts, "macs": self.macs, "nids": self.nids}))
    }
}

const COLUMNS: &[(&str, &str)] = &[
    ("HOSTS", "/hosts"),
    ("MACS", "/macs"),
    ("NIDS", "/nids"),
    ("KERNEL", "/kernel"),
    ("INITRD", "/initrd"),
    ("PARAMS", "/params"),
];

pub async fn run(client: &Client, format: Format, cmd: BootCmd) -> anyhow::Result<String> {
    match cmd {
        BootCmd::Config(c) => run_config(client, format, c).await,
        BootCmd::Params(ParamsCmd::Set {
            targets,
            kernel,
            initrd,
            params,
        }) => {
            if targets.is_empty() {
                bail!("name targets with -x, --group, --mac, --nid or --tag");
            }
            let mut body = targets.body(client).await?;
            body["kernel"] = json!(kernel);
            body["params"] = json!(params);
            if let Some(i) = initrd {
                body["initrd"] = json!(i);
            }
            client
                .send(Method::PUT, "/boot/v1/bootparameters", Some(&body))
                .await?;
            Ok("boot parameters set\n".into())
        }
        BootCmd::Params(ParamsCmd::Show { targets }) => {
            let found = if targets.is_empty() {
                client.get("/boot/v1/bootparameters").await?
            } else {
                let body = targets.body(client).await?;
                client
                    .send(Method::GET, "/boot/v1/bootparameters", Some(&body))
                    .await?
            };
            let rows = found.as_array().cloned().unwrap_or_default();
            Ok(render(format, COLUMNS, &rows, &found))
        }
        BootCmd::Params(ParamsCmd::Delete { targets }) => {
            if targets.is_empty() {
                bail!("name targets with -x, --group, --mac, --nid or --tag");
            }
            let body = targets.body(client).await?;
            client
                .send(Method::DELETE, "/boot/v1/bootparameters", Some(&body))
                .await?;
            Ok("boot parameters deleted\n".into())
        }
        BootCmd::Script { node, arch, json } => {
            let sel = if crate::inventory::mac::parse(&node).is_ok() {
                "mac"
            } else {
                "name"
            };
            let mut path = format!("/boot/v1/bootscript?{sel}={}", super::commands::enc(&node));
            if let Some(a) = arch {
                path.push_str(&format!("&arch={}", super::commands::enc(&a)));
            }
            if json {
                path.push_str("&json=1");
                let v = client.get(&path).await?;
                return Ok(format!("{}\n", serde_json::to_string_pretty(&v)?));
            }
            match client.get(&path).await? {
                Value::String(s) => Ok(s),
                other => Ok(other.to_string()),
            }
        }
    }
}
