//! `openchami discover …`: find BMCs, crawl them into the inventory, and
//! keep their credentials. The appliance does the work; this waits and
//! shows progress, then a summary.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Client;
use super::output::{Format, render};
use super::progress::{POLL, Partial, bar};

#[derive(Subcommand, Debug)]
pub enum DiscoverCmd {
    /// Probe addresses for Redfish BMCs (TCP connect, then GET /redfish/v1/)
    Scan {
        /// CIDRs, addresses or address:port
        #[arg(required_unless_present = "include_leases")]
        targets: Vec<String>,
        #[command(flatten)]
        opts: ScanOpts,
    },
    /// Crawl BMCs into the inventory: the targets given (scanned first),
    /// else those the last scan found
    Collect {
        /// CIDRs, addresses or address:port
        targets: Vec<String>,
        #[command(flatten)]
        opts: ScanOpts,
        /// magellan's BMC→xname map (JSON, --bmc-id-map format); unlisted BMCs are skipped
        #[arg(long)]
        bmc_id_map: Option<PathBuf>,
        /// BMC user for this run where no per-BMC credential is stored
        #[arg(long, requires = "password_env")]
        username: Option<String>,
        /// Name of the environment variable holding that user's password
        #[arg(long, requires = "username")]
        password_env: Option<String>,
    },
    /// Recent discovery jobs
    Jobs,
    /// Stored BMC credentials (passwords are never shown)
    #[command(subcommand)]
    Credentials(CredentialsCmd),
}

#[derive(Args, Debug, Default)]
pub struct ScanOpts {
    /// Port for targets that name none [default: discovery.port of the appliance]
    #[arg(long)]
    port: Option<u16>,
    /// Also probe addresses the DHCP pool leased to unknown MACs
    #[arg(long)]
    include_leases: bool,
    /// Start the job and print its ID without waiting
    #[arg(long)]
    no_wait: bool,
}

#[derive(Subcommand, Debug)]
pub enum CredentialsCmd {
    /// Store the credential for `default`, an xname, an IP address or a MAC
    Set {
        key: String,
        #[arg(long)]
        username: String,
        /// Name of the environment variable holding the password
        #[arg(long, conflicts_with = "password_stdin")]
        password_env: Option<String>,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Keys and user names
    List,
    /// Forget a credential
    Delete { key: String },
}

const COLUMNS: &[(&str, &str)] = &[
    ("ADDRESS", "/address"),
    ("XNAME", "/xname"),
    ("STATUS", "/status"),
    ("SYSTEMS", "/systems"),
    ("MACS", "/macs"),
    ("REASON", "/reason"),
];

fn password_from_env(var: &str) -> anyhow::Result<String> {
    let p = std::env::var(var).map_err(|_| anyhow!("environment variable {var} is not set"))?;
    if p.is_empty() {
        bail!("environment variable {var} is empty");
    }
    Ok(p)
}

pub async fn run(client: &Client, format: Format, cmd: DiscoverCmd) -> anyhow::Result<String> {
    match cmd {
        DiscoverCmd::Scan { targets, opts } => {
            let body = json!({"targets": targets, "port": opts.port, "include_leases": opts.include_leases});
            let job = client
                .send(Method::POST, "/discovery/v1/scan", Some(&body))
                .await?;
            follow(client, format, job, opts.no_wait).await
        }
        DiscoverCmd::Collect {
            targets,
            opts,
            bmc_id_map,
            username,
            password_env,
        } => {
            let mut body = json!({"targets": targets, "port": opts.port, "include_leases": opts.include_leases});
            if let Some(path) = bmc_id_map {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let map: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?;
                body["bmc_id_map"] = map;
            }
            if let (Some(u), Some(var)) = (username, password_env) {
                body["username"] = json!(u);
                body["password"] = json!(password_from_env(&var)?);
            }
            let job = client
                .send(Method::POST, "/discovery/v1/collect", Some(&body))
                .await?;
            follow(client, format, job, opts.no_wait).await
        }
        DiscoverCmd::Jobs => {
            let v = client.get("/discovery/v1/jobs").await?;
            let rows = v["jobs"].as_array().cloned().unwrap_or_default();
            Ok(render(
                format,
                &[
                    ("ID", "/id"),
                    ("KIND", "/kind"),
                    ("STATUS", "/status"),
                    ("STARTED", "/started"),
                    ("FOUND", "/found"),
                    ("COLLECTED", "/collected"),
                    ("FAILED", "/failed"),
                ],
                &rows,
                &v,
            ))
        }
        DiscoverCmd::Credentials(c) => credentials(client, format, c).await,
    }
}

async fn credentials(
    client: &Client,
    format: Format,
    cmd: CredentialsCmd,
) -> anyhow::Result<String> {
    match cmd {
        CredentialsCmd::Set {
            key,
            username,
            password_env,
            password_stdin,
        } => {
            let password = match (password_env, password_stdin) {
                (Some(var), _) => password_from_env(&var)?,
                (None, true) => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("reading the password from standard input")?;
                    let p = line.trim_end_matches(['\r', '\n']).to_string();
                    if p.is_empty() {
                        bail!("no password on standard input");
                    }
                    p
                }
                (None, false) => bail!("give --password-env VAR or --password-stdin"),
            };
            let path = format!("/discovery/v1/credentials/{key}");
            let v = client
                .send(
                    Method::PUT,
                    &path,
                    Some(&json!({"username": username, "password": password})),
                )
                .await?;
            Ok(render(
                format,
                &[("KEY", "/key"), ("USERNAME", "/username")],
                std::slice::from_ref(&v),
                &v,
            ))
        }
        CredentialsCmd::List => {
            let v = client.get("/discovery/v1/credentials").await?;
            let rows = v["credentials"].as_array().cloned().unwrap_or_default();
            Ok(render(
                format,
                &[("KEY", "/key"), ("USERNAME", "/username")],
                &rows,
                &v,
            ))
        }
        CredentialsCmd::Delete { key } => {
            client
                .send(
                    Method::DELETE,
                    &format!("/discovery/v1/credentials/{key}"),
                    None,
                )
                .await?;
            Ok(String::new())
        }
    }
}

/// Polls the job until it ends, with a bar; then the summary.
async fn follow(
    client: &Client,
    format: Format,
    job: Value,
    no_wait: bool,
) -> anyhow::Result<String> {
    let id = job["id"].as_str().unwrap_or("").to_string();
    if no_wait {
        return Ok(match format {
            Format::Table => format!("{id}\n"),
            _ => render(format, &[], &[], &job),
        });
    }
    let path = format!("/discovery/v1/jobs/{id}");
    // Polls read the counts only; the BMC list is fetched once at the end.
    let poll = format!("{path}?bmcs=false");
    let scan_bar = bar(0, "scanning");
    let mut collect_bar = None;
    loop {
        let v = client.get(&poll).await?;
        let phase = v["phase"].as_str().unwrap_or("");
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        if phase == "scan" {
            scan_bar.set_length(n("addresses"));
            scan_bar.set_position(n("scanned"));
            scan_bar.set_message(if n("done") > 0 {
                format!("{} found, {} collected", n("found"), n("collected"))
            } else {
                format!("{} found", n("found"))
            });
        } else if phase == "collect" {
            if !scan_bar.is_finished() {
                scan_bar.finish_and_clear();
            }
            let b = collect_bar.get_or_insert_with(|| bar(n("total"), "collecting"));
            b.set_length(n("total"));
            b.set_position(n("done"));
            b.set_message(format!(
                "{} collected, {} failed",
                n("collected"),
                n("failed")
            ));
        }
        if v["status"] != "running" {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let done = client.get(&path).await?;
    scan_bar.finish_and_clear();
    if let Some(b) = collect_bar {
        b.finish_and_clear();
    }
    let rows = done["bmcs"].as_array().cloned().unwrap_or_default();
    let mut out = render(format, COLUMNS, &rows, &done);
    let n = |k: &str| done[k].as_u64().unwrap_or(0);
    if format == Format::Table {
        out.push_str(&format!(
            "found {}, collected {}, failed {}, skipped {}\n",
            n("found"),
            n("collected"),
            n("failed"),
            n("skipped")
        ));
    }
    if done["status"] == "cancelled" {
        return Err(Partial {
            output: out,
            message: format!("discovery job {id} was cancelled"),
        }
        .into());
    }
    // A scan that reached nothing is almost always a wrong range, port or
    // a BMC (simulator) that is not up: say so instead of a quiet "found 0".
    if done["kind"] == "scan" && n("found") == 0 {
        return Err(Partial {
            output: out,
            message: format!(
                "no BMC answered Redfish at any of the {} addresses probed: check the targets, --port, and that the BMCs are up",
                n("addresses")
            ),
        }
        .into());
    }
    if n("failed") > 0 {
        return Err(Partial {
            output: out,
            message: format!("{} of {} BMCs failed", n("failed"), n("total")),
        }
        .into());
    }
    Ok(out)
}
