//! Which nodes have a console and how it is reached, from the inventory:
//! an enabled node whose BMC (its parent xname) is a known, enabled
//! RedfishEndpoint. A BMC serves one console session: when several nodes
//! share a BMC, the first by xname gets it. Pure over the model.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::inventory::Model;
use crate::inventory::xname;

/// How to reach one node's console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub node: String,
    pub bmc: String,
    /// The BMC's IP address, else its FQDN.
    pub host: String,
    pub port: u16,
    /// Run instead of a shell; empty = shell.
    pub command: String,
}

/// Every console target, by node xname.
pub fn targets(m: &Model, port: u16, command: &str) -> BTreeMap<String, Target> {
    let mut by_bmc: BTreeMap<String, Target> = BTreeMap::new();
    for (id, c) in m.components.iter() {
        if !c.kind.eq_ignore_ascii_case("Node") || c.enabled == Some(false) {
            continue;
        }
        let Some(bmc) = xname::parent(id) else {
            continue;
        };
        let Some(ep) = m.redfish_endpoint(&bmc) else {
            continue;
        };
        if !ep.enabled || ep.address().is_empty() || by_bmc.contains_key(&bmc) {
            continue;
        }
        by_bmc.insert(
            bmc.clone(),
            Target {
                node: id.clone(),
                bmc,
                host: ep.address().to_string(),
                port,
                command: command.to_string(),
            },
        );
    }
    by_bmc.into_values().map(|t| (t.node.clone(), t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::model::{Component, RedfishEndpoint};

    fn node(id: &str, enabled: Option<bool>) -> Component {
        serde_json::from_value(serde_json::json!({
            "ID": id, "Type": "Node", "State": "On", "Flag": "OK", "Enabled": enabled
        }))
        .unwrap()
    }

    fn bmc(id: &str, ip: &str, enabled: bool) -> RedfishEndpoint {
        serde_json::from_value(serde_json::json!({
            "ID": id, "Type": "NodeBMC", "IPAddress": ip, "Enabled": enabled
        }))
        .unwrap()
    }

    #[test]
    fn nodes_with_an_enabled_bmc_get_one_console_per_bmc() {
        let mut m = Model::default();
        for (id, en) in [
            ("x1c0s0b0n0", Some(true)),
            ("x1c0s0b0n1", None),
            ("x1c0s1b0n0", None),
            ("x1c0s2b0n0", Some(false)),
            ("x1c0s3b0n0", None),
        ] {
            m.components.insert(id.into(), node(id, en).into());
        }
        for (id, ip, en) in [
            ("x1c0s0b0", "10.0.0.1", true),
            ("x1c0s1b0", "10.0.0.2", false),
            ("x1c0s2b0", "10.0.0.3", true),
        ] {
            m.redfish_endpoints
                .insert(id.into(), bmc(id, ip, en).into());
        }
        let t = targets(&m, 2200, "");
        assert_eq!(t.keys().collect::<Vec<_>>(), ["x1c0s0b0n0"]);
        let one = &t["x1c0s0b0n0"];
        assert_eq!(
            (one.bmc.as_str(), one.host.as_str(), one.port),
            ("x1c0s0b0", "10.0.0.1", 2200)
        );
    }
}
