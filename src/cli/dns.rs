//! `openchami dns …`: what the DNS server answers, asked over the API.

use clap::Subcommand;
use serde_json::Value;

use super::client::Client;
use super::output::{Format, render};

#[derive(Subcommand, Debug)]
pub enum DnsCmd {
    /// What a name or an address (PTR) resolves to
    Lookup {
        /// A name (`nid0001.cluster`) or an IPv4/IPv6 address
        name: String,
        /// Record type (A, AAAA, CNAME, PTR, NS, SOA, TXT, ANY); default A,
        /// or PTR for an address
        #[arg(long = "type", short = 't')]
        kind: Option<String>,
    },
    /// Every record served from the inventory and the configuration
    Zone,
}

const COLUMNS: &[(&str, &str)] = &[
    ("NAME", "/name"),
    ("TTL", "/ttl"),
    ("TYPE", "/type"),
    ("DATA", "/data"),
];

/// Records with their data as one string (an SOA's fields joined).
fn rows(records: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = records.as_array().cloned().unwrap_or_default();
    for r in &mut out {
        if let Some(o) = r["data"].as_object() {
            let s = ["mname", "rname", "serial", "minimum"]
                .iter()
                .map(|k| match &o.get(*k) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                })
                .collect::<Vec<_>>()
                .join(" ");
            r["data"] = Value::String(s);
        }
    }
    out
}

pub async fn run(client: &Client, format: Format, cmd: DnsCmd) -> anyhow::Result<String> {
    match cmd {
        DnsCmd::Lookup { name, kind } => {
            let mut path = format!(
                "/dns/v1/lookup?name={}",
                form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
            );
            if let Some(t) = kind {
                path.push_str("&type=");
                path.extend(form_urlencoded::byte_serialize(t.as_bytes()));
            }
            let found = client.get(&path).await?;
            if format != Format::Table {
                return Ok(render(format, COLUMNS, &[], &found));
            }
            let answers = rows(&found["answers"]);
            let rcode = found["rcode"].as_str().unwrap_or("");
            if answers.is_empty() {
                let why = match rcode {
                    "NXDOMAIN" => "no such name in the zone".to_string(),
                    "FORWARDED" => {
                        "not in the zone: forwarded to dns.upstreams (refused without them)".into()
                    }
                    _ => format!(
                        "the name has no {} records",
                        found["type"].as_str().unwrap_or("")
                    ),
                };
                return Ok(format!(
                    "{} {rcode}: {why}\n",
                    found["name"].as_str().unwrap_or("")
                ));
            }
            Ok(render(format, COLUMNS, &answers, &found))
        }
        DnsCmd::Zone => {
            let found = client.get("/dns/v1/zone").await?;
            let records = rows(&found["records"]);
            Ok(render(format, COLUMNS, &records, &found))
        }
    }
}
