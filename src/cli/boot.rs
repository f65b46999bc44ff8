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
