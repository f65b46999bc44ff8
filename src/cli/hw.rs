//! `openchami hw …`: the hardware inventory of a component and the history
//! of a location or FRU, read from SMD's `Inventory/Hardware*` routes.

use clap::Subcommand;
use serde_json::Value;

use super::client::Client;
use super::output::{Format, render};

#[derive(Subcommand, Debug)]
pub enum HwCmd {
    /// What sits at and under an xname (a node: its CPUs, GPUs, DIMMs, drives)
    Show {
        /// A node, slot, chassis, ... (`s0` for everything)
        xname: String,
    },
    /// Where a FRU has been, or what has been at a location
    History {
        /// A location's xname or a FRU ID (`Memory.Hynix.HMA84GR7AFR4N.1234`)
        target: String,
    },
}

const SHOW: &[(&str, &str)] = &[
    ("XNAME", "/ID"),
    ("TYPE", "/Type"),
    ("MANUFACTURER", "/Manufacturer"),
    ("MODEL", "/Model"),
    ("PART", "/PartNumber"),
    ("SERIAL", "/SerialNumber"),
    ("FRUID", "/FRUID"),
];

const HISTORY: &[(&str, &str)] = &[
    ("TIME", "/Timestamp"),
    ("EVENT", "/EventType"),
    ("XNAME", "/ID"),
    ("FRUID", "/FRUID"),
];

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// One table row per location: its FRU's identity flattened.
fn row(loc: &Value) -> Value {
    let fru = &loc["PopulatedFRU"];
    let info = fru
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.ends_with("FRUInfo")))
        .map(|(_, v)| v.clone())
        .unwrap_or(Value::Null);
    serde_json::json!({
        "ID": loc["ID"],
        "Type": loc["Type"],
        "Manufacturer": info["Manufacturer"],
        "Model": info["Model"],
        "PartNumber": info["PartNumber"],
        "SerialNumber": info["SerialNumber"],
        "FRUID": fru["FRUID"],
    })
}

/// Is `s` an xname rather than a FRU ID? FRU IDs start with a type name
/// and hold dots; xnames never do.
fn is_xname(s: &str) -> bool {
    crate::inventory::xname::parse(s).is_ok()
}

pub async fn run(client: &Client, format: Format, cmd: HwCmd) -> anyhow::Result<String> {
    match cmd {
        HwCmd::Show { xname } => {
            let found = client
                .get(&format!(
                    "/hsm/v2/Inventory/Hardware/Query/{}?format=FullyFlat",
                    enc(&xname)
                ))
                .await?;
            let mut rows: Vec<Value> = found
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, v)| v.as_array())
                .flatten()
                .map(row)
                .collect();
            rows.sort_by(|a, b| a["ID"].as_str().cmp(&b["ID"].as_str()));
            Ok(render(format, SHOW, &rows, &found))
        }
        HwCmd::History { target } => {
            let path = if is_xname(&target) {
                format!("/hsm/v2/Inventory/Hardware/History/{}", enc(&target))
            } else {
                format!("/hsm/v2/Inventory/HardwareByFRU/History/{}", enc(&target))
            };
            let found = client.get(&path).await?;
            let rows = found["History"].as_array().cloned().unwrap_or_default();
            Ok(render(format, HISTORY, &rows, &found))
        }
    }
}
