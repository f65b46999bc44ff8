//! `openchami dhcp …`: what the DHCP server has handed out.

use clap::Subcommand;
use serde_json::Value;

use super::client::Client;
use super::output::{Format, render};

#[derive(Subcommand, Debug)]
pub enum DhcpCmd {
    /// List leases: pool leases of unknown MACs and reserved (inventory) ones
    Leases {
        /// Only `pool` or only `reserved` leases
        #[arg(long, value_parser = ["pool", "reserved"])]
        kind: Option<String>,
        /// Include leases that have expired and not been swept yet
        #[arg(long)]
        all: bool,
    },
}

const COLUMNS: &[(&str, &str)] = &[
    ("IP", "/ip"),
    ("MAC", "/mac"),
    ("KIND", "/kind"),
    ("XNAME", "/xname"),
    ("EXPIRES", "/expires"),
];

pub async fn run(client: &Client, format: Format, cmd: DhcpCmd) -> anyhow::Result<String> {
    match cmd {
        DhcpCmd::Leases { kind, all } => {
            let found = client.get("/dhcp/v1/leases").await?;
            let rows: Vec<Value> = found
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| kind.as_deref().is_none_or(|k| r["kind"] == k))
                .filter(|r| all || r["expired"] != true)
                .collect();
            let raw = Value::Array(rows.clone());
            Ok(render(format, COLUMNS, &rows, &raw))
        }
    }
}
