//! `openchami power cap show|set`: PCS power-capping tasks (a snapshot or a
//! patch), waited for, shown per node and control.

use anyhow::bail;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Client;
use super::output::{Format, render};
use super::power::{Nodes, resolve};
use super::progress::{POLL, Partial};

#[derive(Subcommand, Debug)]
pub enum CapCmd {
    /// Power limits of nodes and the range their BMCs allow
    Show(Nodes),
    /// Set the power limit of nodes (0 removes it)
    Set(CapSet),
}

#[derive(Args, Debug)]
pub struct CapSet {
    #[command(flatten)]
    pub nodes: Nodes,
    /// The limit in watts; 0 removes the limit
    #[arg(long)]
    pub watts: u32,
    /// The control to set [default: each node's first control]
    #[arg(long)]
    pub control: Option<String>,
}

/// Starts a task and waits for it to complete.
async fn task(client: &Client, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
    let started = client.send(method, path, Some(&body)).await?;
    let id = started["taskID"].as_str().unwrap_or("");
    let path = format!("/power-control/v1/power-cap/{id}");
    loop {
        let v = client.get(&path).await?;
        if v["taskStatus"] == "completed" {
            return Ok(v);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One row per node and control.
fn rows(done: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for c in done["components"].as_array().into_iter().flatten() {
        let limits = c["powerCapLimits"].as_array().cloned().unwrap_or_default();
        if limits.is_empty() {
            out.push(json!({"xname": c["xname"], "error": c["error"]}));
        }
        for l in limits {
            out.push(json!({
                "xname": c["xname"], "control": l["name"], "watts": l["currentValue"],
                "min": l["minimumValue"], "max": l["maximumValue"], "error": c["error"],
            }));
        }
    }
    out
}

fn finish(format: Format, done: Value) -> anyhow::Result<String> {
    let rows = rows(&done);
    let out = render(
        format,
        &[
            ("XNAME", "/xname"),
            ("CONTROL", "/control"),
            ("WATTS", "/watts"),
            ("MIN", "/min"),
            ("MAX", "/max"),
            ("ERROR", "/error"),
        ],
        &rows,
        &done,
    );
    let c = &done["taskCounts"];
    let bad = c["failed"].as_u64().unwrap_or(0) + c["un-supported"].as_u64().unwrap_or(0);
    if bad > 0 {
        let errors: Vec<String> = done["components"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["error"].as_str().is_some_and(|e| !e.is_empty()))
            .map(|c| {
                format!(
                    "{}: {}",
                    c["xname"].as_str().unwrap_or(""),
                    c["error"].as_str().unwrap_or("")
                )
            })
            .collect();
        return Err(Partial {
            output: out,
            message: errors.join("; "),
        }
        .into());
    }
    Ok(out)
}

pub async fn run(client: &Client, format: Format, cmd: CapCmd) -> anyhow::Result<String> {
    match cmd {
        CapCmd::Show(nodes) => {
            let xnames = resolve(client, &nodes, true).await?;
            let done = task(
                client,
                Method::POST,
                "/power-control/v1/power-cap/snapshot",
                json!({ "xnames": xnames }),
            )
            .await?;
            finish(format, done)
        }
        CapCmd::Set(s) => {
            let xnames = resolve(client, &s.nodes, true).await?;
            let mut components = Vec::new();
            for x in &xnames {
                let name = match &s.control {
                    Some(c) => c.clone(),
                    None => {
                        // The node's first control, as a snapshot names it.
                        let snap = task(
                            client,
                            Method::POST,
                            "/power-control/v1/power-cap/snapshot",
                            json!({ "xnames": [x] }),
                        )
                        .await?;
                        let c = &snap["components"][0];
                        match c["powerCapLimits"][0]["name"].as_str() {
                            Some(n) => n.to_string(),
                            None => bail!(
                                "{x}: no power limit control ({})",
                                c["error"].as_str().unwrap_or("none offered")
                            ),
                        }
                    }
                };
                components
                    .push(json!({"xname": x, "controls": [{"name": name, "value": s.watts}]}));
            }
            let done = task(
                client,
                Method::PATCH,
                "/power-control/v1/power-cap",
                json!({ "components": components }),
            )
            .await?;
            finish(format, done)
        }
    }
}
