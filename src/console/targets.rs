//! Which nodes have a console and how it is reached, from the inventory:
//! an enabled node whose BMC (its parent xname) is a known, enabled
//! RedfishEndpoint. A BMC serves one console session: when several nodes
//! share a BMC, the first by xname gets it. Pure over the model.
//!
//! How a BMC's console is reached is decided per BMC, first match wins:
//! the operator's `[console.bmcs.<xname>]` entry, field by field; what the
//! last crawl recorded on the endpoint (`redfish::console`); the
//! `[console]` defaults (SSH on `ssh_port`, running `command`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inventory::Model;
use crate::inventory::model::RedfishEndpoint;
use crate::inventory::xname;
use crate::redfish::console::{ConsoleProtocol, console_offer};

/// The protocol a console session speaks to the BMC.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SSH (`console::ssh`).
    #[default]
    Ssh,
    /// IPMI v2 serial-over-LAN (`console::ipmi`).
    Ipmi,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Ssh => "ssh",
            Backend::Ipmi => "ipmi",
        }
    }
}

/// IPMI's RMCP+ port.
pub const IPMI_PORT: u16 = 623;

/// An operator's choice for one BMC (`[console.bmcs.<xname>]`); each field
/// left out falls back to discovery, then to the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub backend: Option<Backend>,
    pub port: Option<u16>,
    /// SSH only: run this instead of a shell; `""` for the shell.
    pub command: Option<String>,
}

/// The `[console]` settings targets depend on.
#[derive(Debug, Clone, Copy)]
pub struct Defaults<'a> {
    pub ssh_port: u16,
    pub command: &'a str,
    /// By BMC xname, normalised.
    pub overrides: &'a BTreeMap<String, Override>,
}

/// How to reach one node's console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub node: String,
    pub bmc: String,
    /// The BMC's IP address, else its FQDN.
    pub host: String,
    pub port: u16,
    /// Run instead of a shell; empty = shell (SSH only).
    pub command: String,
    pub backend: Backend,
}

/// The console blocks the endpoint's last crawl recorded (its `Details`:
/// `Systems[].serial_console`, `Managers[].serial_console` and
/// `command_shell`, as discovery's payload names them).
fn discovered(ep: &RedfishEndpoint) -> Option<crate::redfish::console::ConsoleOffer> {
    fn list<'a>(ep: &'a RedfishEndpoint, key: &str) -> Vec<&'a Value> {
        ep.details
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }
    fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
        crate::redfish::json::get(v, key).unwrap_or(&Value::Null)
    }
    let systems = list(ep, "Systems");
    let managers = list(ep, "Managers");
    console_offer(
        systems.iter().map(|s| field(s, "serial_console")),
        managers
            .iter()
            .map(|m| (field(m, "serial_console"), field(m, "command_shell"))),
    )
}

/// How BMC `ep` is reached, by the rules in the module doc.
fn reach(bmc: &str, ep: &RedfishEndpoint, d: Defaults<'_>) -> (Backend, u16, String) {
    let found = discovered(ep);
    let mut backend = match found.as_ref().map(|o| o.protocol) {
        Some(ConsoleProtocol::Ipmi) => Backend::Ipmi,
        _ => Backend::Ssh,
    };
    let mut port = found.as_ref().and_then(|o| o.port);
    let mut command = found.and_then(|o| o.command);
    if let Some(o) = d.overrides.get(bmc) {
        if let Some(b) = o.backend
            && b != backend
        {
            // Another protocol: what discovery said of this one is moot.
            backend = b;
            port = None;
            command = None;
        }
        port = o.port.or(port);
        command = o.command.clone().or(command);
    }
    match backend {
        Backend::Ssh => (
            backend,
            port.unwrap_or(d.ssh_port),
            command.unwrap_or_else(|| d.command.to_string()),
        ),
        Backend::Ipmi => (backend, port.unwrap_or(IPMI_PORT), String::new()),
    }
}

/// Every console target, by node xname.
pub fn targets(m: &Model, d: Defaults<'_>) -> BTreeMap<String, Target> {
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
        let (backend, port, command) = reach(&bmc, ep, d);
        by_bmc.insert(
            bmc.clone(),
            Target {
                node: id.clone(),
                bmc,
                host: ep.address().to_string(),
                port,
                command,
                backend,
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
        let none = BTreeMap::new();
        let d = Defaults {
            ssh_port: 2200,
            command: "",
            overrides: &none,
        };
        let t = targets(&m, d);
        assert_eq!(t.keys().collect::<Vec<_>>(), ["x1c0s0b0n0"]);
        let one = &t["x1c0s0b0n0"];
        assert_eq!(
            (one.bmc.as_str(), one.host.as_str(), one.port),
            ("x1c0s0b0", "10.0.0.1", 2200)
        );
    }

    fn ov(backend: Option<Backend>, port: Option<u16>, command: Option<&str>) -> Override {
        Override {
            backend,
            port,
            command: command.map(str::to_string),
        }
    }

    #[test]
    fn discovery_then_override_then_defaults() {
        let ssh_cli = serde_json::json!({"Systems": [{"serial_console": {
            "SSH": {"ServiceEnabled": true, "Port": 22, "SharedWithManagerCLI": true,
                    "ConsoleEntryCommand": "console -f"},
            "IPMI": {"ServiceEnabled": true, "Port": 1623}}}]});
        let ipmi_only = serde_json::json!({"Managers": [{"serial_console":
            {"ServiceEnabled": true, "ConnectTypesSupported": ["IPMI"]}}]});
        let nothing = serde_json::json!({});
        use Backend::{Ipmi, Ssh};
        type Case<'a> = (
            &'a str,
            &'a serde_json::Value,
            Option<Override>,
            (Backend, u16, &'a str),
        );
        let table: Vec<Case> = vec![
            ("defaults", &nothing, None, (Ssh, 2200, "start")),
            (
                "discovered SSH via the CLI",
                &ssh_cli,
                None,
                (Ssh, 22, "console -f"),
            ),
            ("discovered IPMI", &ipmi_only, None, (Ipmi, 623, "")),
            (
                "override to IPMI drops SSH's port and command",
                &ssh_cli,
                Some(ov(Some(Ipmi), None, None)),
                (Ipmi, 623, ""),
            ),
            (
                "override of one field keeps the rest",
                &ssh_cli,
                Some(ov(None, Some(2222), None)),
                (Ssh, 2222, "console -f"),
            ),
            (
                "override to the shell",
                &ssh_cli,
                Some(ov(Some(Ssh), None, Some(""))),
                (Ssh, 22, ""),
            ),
            (
                "override to SSH on a BMC that offers IPMI",
                &ipmi_only,
                Some(ov(Some(Ssh), None, None)),
                (Ssh, 2200, "start"),
            ),
            (
                "IPMI on another port",
                &nothing,
                Some(ov(Some(Ipmi), Some(9623), Some("ignored"))),
                (Ipmi, 9623, ""),
            ),
        ];
        for (what, details, o, want) in table {
            let mut ep = bmc("x1c0s0b0", "10.0.0.1", true);
            ep.details = details.as_object().cloned().unwrap_or_default();
            let overrides: BTreeMap<String, Override> =
                o.into_iter().map(|o| ("x1c0s0b0".to_string(), o)).collect();
            let d = Defaults {
                ssh_port: 2200,
                command: "start",
                overrides: &overrides,
            };
            let (b, p, c) = reach("x1c0s0b0", &ep, d);
            assert_eq!((b, p, c.as_str()), want, "{what}");
        }
    }
}
