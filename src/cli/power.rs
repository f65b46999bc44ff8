//! `openchami power on|off|reset|cycle|status`: PCS transitions by xname or
//! group, waited for with a progress bar unless `--no-wait`.

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Client;
use super::output::{Format, render};
use super::progress::{POLL, Partial, bar};

#[derive(Subcommand, Debug)]
pub enum PowerCmd {
    /// Power nodes on
    On(Transition),
    /// Shut nodes down (graceful, ForceOff at the deadline); --force: ForceOff now
    Off(Transition),
    /// Restart nodes (graceful restart where the BMC has one); --force: off, then on
    Reset(Transition),
    /// Power-cycle nodes: off (graceful, then forced at the deadline), then on
    Cycle(Transition),
    /// Power state of nodes (all nodes with a BMC when none are named)
    Status(Nodes),
    /// Power capping: `cap show <xnames|--group g>`, `cap set <xnames> --watts N`
    #[command(subcommand)]
    Cap(super::powercap::CapCmd),
}

#[derive(Args, Debug)]
pub struct Nodes {
    /// Node xnames (comma lists allowed)
    #[arg(value_delimiter = ',')]
    pub xnames: Vec<String>,
    /// Every member of this group
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Args, Debug)]
pub struct Transition {
    #[command(flatten)]
    pub nodes: Nodes,
    /// See each command
    #[arg(long)]
    pub force: bool,
    /// Start the transition and print its ID without waiting
    #[arg(long)]
    pub no_wait: bool,
    /// Minutes each node gets (PCS taskDeadlineMinutes); -1: no deadline
    #[arg(long, default_value_t = 5.0, allow_hyphen_values = true)]
    pub deadline: f64,
}

pub(super) async fn resolve(
    client: &Client,
    nodes: &Nodes,
    required: bool,
) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = nodes
        .xnames
        .iter()
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect();
    if let Some(g) = &nodes.group {
        let v = client.get(&format!("/hsm/v2/groups/{g}/members")).await?;
        let ids = v["ids"]
            .as_array()
            .ok_or_else(|| anyhow!("group {g} lists no members"))?;
        out.extend(ids.iter().filter_map(Value::as_str).map(str::to_string));
    }
    out.dedup();
    if required && out.is_empty() {
        bail!("name nodes (xnames) or --group");
    }
    Ok(out)
}

pub async fn run(client: &Client, format: Format, cmd: PowerCmd) -> anyhow::Result<String> {
    let (op, t) = match cmd {
        PowerCmd::Status(nodes) => return status(client, format, &nodes).await,
        PowerCmd::Cap(cmd) => return super::powercap::run(client, format, cmd).await,
        PowerCmd::On(t) => ("on", t),
        PowerCmd::Off(t) if t.force => ("force-off", t),
        PowerCmd::Off(t) => ("off", t),
        PowerCmd::Reset(t) if t.force => ("hard-restart", t),
        PowerCmd::Reset(t) => ("soft-restart", t),
        PowerCmd::Cycle(t) => ("hard-restart", t),
    };
    let xnames = resolve(client, &t.nodes, true).await?;
    let body = json!({
        "operation": op,
        "taskDeadlineMinutes": t.deadline,
        "location": xnames.iter().map(|x| json!({"xname": x})).collect::<Vec<_>>(),
    });
    let started = client
        .send(Method::POST, "/power-control/v1/transitions", Some(&body))
        .await?;
    let id = started["transitionID"].as_str().unwrap_or("").to_string();
    if t.no_wait {
        return Ok(match format {
            Format::Table => format!("{id}\n"),
            _ => render(format, &[], &[], &started),
        });
    }
    let path = format!("/power-control/v1/transitions/{id}");
    let pb = bar(xnames.len() as u64, op);
    let done = loop {
        let v = client.get(&path).await?;
        let c = &v["taskCounts"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        pb.set_position(n("succeeded") + n("failed") + n("un-supported"));
        pb.set_message(format!("{} failed", n("failed") + n("un-supported")));
        if matches!(
            v["transitionStatus"].as_str(),
            Some("completed" | "aborted")
        ) {
            break v;
        }
        tokio::time::sleep(POLL).await;
    };
    pb.finish_and_clear();
    let rows = done["tasks"].as_array().cloned().unwrap_or_default();
    let out = render(
        format,
        &[
            ("XNAME", "/xname"),
            ("STATUS", "/taskStatus"),
            ("DETAIL", "/taskStatusDescription"),
            ("ERROR", "/error"),
        ],
        &rows,
        &done,
    );
    let c = &done["taskCounts"];
    let bad = c["failed"].as_u64().unwrap_or(0) + c["un-supported"].as_u64().unwrap_or(0);
    if done["transitionStatus"] == "aborted" {
        return Err(Partial {
            output: out,
            message: format!("transition {id} was aborted"),
        }
        .into());
    }
    if bad > 0 {
        return Err(Partial {
            output: out,
            message: format!("{bad} of {} nodes failed", rows.len()),
        }
        .into());
    }
    Ok(out)
}

async fn status(client: &Client, format: Format, nodes: &Nodes) -> anyhow::Result<String> {
    let xnames = resolve(client, nodes, false).await?;
    let v = client
        .send(
            Method::POST,
            "/power-control/v1/power-status",
            Some(&json!({"xname": xnames})),
        )
        .await?;
    let rows = v["status"].as_array().cloned().unwrap_or_default();
    Ok(render(
        format,
        &[
            ("XNAME", "/xname"),
            ("POWER", "/powerState"),
            ("MANAGEMENT", "/managementState"),
            ("ERROR", "/error"),
        ],
        &rows,
        &v,
    ))
}
