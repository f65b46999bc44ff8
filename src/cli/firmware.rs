//! `openchami firmware list|update`: BMC firmware inventories, and update
//! jobs waited for with a progress bar.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Client;
use super::output::{Format, render};
use super::progress::{POLL, Partial, bar};

#[derive(Subcommand, Debug)]
pub enum FirmwareCmd {
    /// Firmware versions of every BMC, or of one (a node names its BMC)
    List { xname: Option<String> },
    /// Update BMCs from an artifact, a few at a time
    Update(Update),
}

#[derive(Args, Debug)]
pub struct Update {
    /// The image: a file under the appliance's boot.artifacts_dir
    #[arg(long)]
    pub image: String,
    /// Node or BMC xnames (comma lists allowed), or a group's name
    #[arg(long, value_delimiter = ',', required = true)]
    pub targets: Vec<String>,
    /// BMCs updated at once
    #[arg(long, default_value_t = 4)]
    pub max_parallel: usize,
    /// Seconds each BMC's update may take
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Start the job and print its ID without waiting
    #[arg(long)]
    pub no_wait: bool,
}

pub async fn run(client: &Client, format: Format, cmd: FirmwareCmd) -> anyhow::Result<String> {
    match cmd {
        FirmwareCmd::List { xname } => {
            let v = match &xname {
                Some(x) => {
                    let one = client.get(&format!("/firmware/v1/inventory/{x}")).await?;
                    json!({ "bmcs": [one] })
                }
                None => client.get("/firmware/v1/inventory").await?,
            };
            let mut rows = Vec::new();
            for b in v["bmcs"].as_array().into_iter().flatten() {
                for i in b["items"].as_array().into_iter().flatten() {
                    rows.push(json!({
                        "bmc": b["bmc"], "id": i["Id"], "name": i["Name"],
                        "version": i["Version"], "updateable": i["Updateable"],
                    }));
                }
            }
            Ok(render(
                format,
                &[
                    ("BMC", "/bmc"),
                    ("ID", "/id"),
                    ("NAME", "/name"),
                    ("VERSION", "/version"),
                    ("UPDATEABLE", "/updateable"),
                ],
                &rows,
                &v,
            ))
        }
        FirmwareCmd::Update(u) => update(client, format, u).await,
    }
}

/// A lone name that is no xname is a group.
fn body(u: &Update) -> Value {
    let is_xname = |t: &str| {
        let t = t.trim();
        t.starts_with('x') && t[1..].chars().next().is_some_and(|c| c.is_ascii_digit())
    };
    let (targets, groups): (Vec<&String>, Vec<&String>) =
        u.targets.iter().partition(|t| is_xname(t));
    let mut b = json!({
        "image": u.image, "targets": targets, "maxParallel": u.max_parallel,
        "timeoutSecs": u.timeout,
    });
    if let Some(g) = groups.first() {
        b["group"] = json!(g);
    }
    b
}

async fn update(client: &Client, format: Format, u: Update) -> anyhow::Result<String> {
    let started = client
        .send(Method::POST, "/firmware/v1/updates", Some(&body(&u)))
        .await?;
    let id = started["id"].as_str().unwrap_or("").to_string();
    if u.no_wait {
        return Ok(match format {
            Format::Table => format!("{id}\n"),
            _ => render(format, &[], &[], &started),
        });
    }
    let total = started["bmcs"].as_array().map_or(0, Vec::len) as u64;
    let pb = bar(total, "firmware");
    let path = format!("/firmware/v1/updates/{id}");
    let done = loop {
        let v = client.get(&path).await?;
        let c = &v["counts"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        pb.set_position(
            n("Completed") + n("Accepted") + n("Exception") + n("TimedOut") + n("Failed"),
        );
        pb.set_message(format!("{} updating", n("Updating")));
        if v["state"] == "completed" {
            break v;
        }
        tokio::time::sleep(POLL).await;
    };
    pb.finish_and_clear();
    let rows = done["bmcs"].as_array().cloned().unwrap_or_default();
    let out = render(
        format,
        &[
            ("BMC", "/xname"),
            ("RESULT", "/status"),
            ("METHOD", "/method"),
            ("PERCENT", "/percentComplete"),
            ("MESSAGE", "/message"),
        ],
        &rows,
        &done,
    );
    let count = |pred: &dyn Fn(&Value) -> bool| rows.iter().filter(|r| pred(&r["status"])).count();
    let accepted = count(&|s| s == "Accepted");
    let bad = count(&|s| s != "Completed" && s != "Accepted");
    if bad + accepted > 0 {
        let mut message = format!("{bad} of {} BMCs were not updated", rows.len());
        if accepted > 0 {
            message.push_str(&format!(
                "; {accepted} accepted the update with nothing to confirm it by"
            ));
        }
        return Err(Partial {
            output: out,
            message,
        }
        .into());
    }
    Ok(out)
}
