//! A crawl as the OpenCHAMI "V2" RedfishEndpoint payload, the JSON
//! `magellan collect` produces and `magellan send` posts.
//!
//! Discovery writes by decoding this very document with the code behind
//! `POST /hsm/v2/Inventory/RedfishEndpoints`, so a BMC discovered here lands
//! in the inventory exactly as if magellan had sent it.

use serde_json::{Map, Value, json};

use crate::inventory::mac;
use crate::redfish::{Crawl, Nic, base_url};

/// The payload for BMC `id` at `addr`, crawled as `user`. The password is
/// not part of it: the caller seals it into the decoded endpoint.
pub fn v2(id: &str, addr: &str, user: &str, mac_addr: &str, c: &Crawl) -> Value {
    let base = base_url(addr);
    let nics = |list: &[Nic]| -> Vec<Value> {
        list.iter()
            // A vendor's garbled MAC would fail the whole payload; a NIC
            // without a usable MAC is of no use to DHCP anyway.
            .filter(|n| mac::normalize(&n.mac).is_ok())
            .map(|n| {
                json!({
                    "uri": format!("{base}{}", n.path),
                    "mac": n.mac,
                    "ip": n.ipv4.first().cloned().unwrap_or_default(),
                    "description": n.description,
                })
            })
            .collect()
    };
    let managers: Vec<Value> = c
        .managers
        .iter()
        .map(|m| {
            let mut o = Map::new();
            o.insert("uri".into(), json!(format!("{base}{}", m.path)));
            o.insert("uuid".into(), json!(m.uuid));
            o.insert("name".into(), json!(m.name));
            o.insert("type".into(), json!(m.manager_type));
            o.insert("firmware_version".into(), json!(m.firmware_version));
            o.insert("model".into(), json!(m.model));
            o.insert("serial_console".into(), m.serial_console.clone());
            o.insert("command_shell".into(), m.command_shell.clone());
            if let Some(r) = &m.reset
                && !r.allowed.is_empty()
            {
                o.insert("actions".into(), json!(r.allowed));
            }
            o.insert("ethernet_interfaces".into(), json!(nics(&m.nics)));
            Value::Object(o)
        })
        .collect();
    let systems: Vec<Value> = c
        .systems
        .iter()
        .map(|s| {
            let chassis = s
                .chassis
                .first()
                .and_then(|p| c.chassis.iter().find(|ch| &ch.path == p));
            let mut o = Map::new();
            o.insert("uri".into(), json!(format!("{base}{}", s.path)));
            o.insert("uuid".into(), json!(s.uuid));
            o.insert("name".into(), json!(s.name));
            o.insert("system_type".into(), json!(s.system_type));
            o.insert("manufacturer".into(), json!(s.manufacturer));
            o.insert("model".into(), json!(s.model));
            o.insert("serial".into(), json!(s.serial));
            o.insert("sku".into(), json!(s.sku));
            o.insert("bios_version".into(), json!(s.bios_version));
            o.insert("power".into(), json!(s.power_state));
            o.insert("processor_count".into(), json!(s.processor_count));
            o.insert("processor_model".into(), json!(s.processor_model));
            o.insert("memory_total".into(), json!(s.memory_gib));
            if let Some(ch) = chassis {
                o.insert("chassis_sku".into(), json!(ch.sku));
                o.insert("chassis_serial".into(), json!(ch.serial));
                o.insert("chassis_asset_tag".into(), json!(ch.asset_tag));
                o.insert("chassis_type".into(), json!(ch.chassis_type));
                o.insert("chassis_manufacturer".into(), json!(ch.manufacturer));
                o.insert("chassis_model".into(), json!(ch.model));
            }
            if let Some(r) = &s.reset
                && !r.allowed.is_empty()
            {
                o.insert("actions".into(), json!(r.allowed));
            }
            o.insert("serial_console".into(), s.serial_console.clone());
            o.insert("ethernet_interfaces".into(), json!(nics(&s.nics)));
            o.insert(
                "links".into(),
                json!({"chassis": s.chassis, "managers": s.managers}),
            );
            Value::Object(o)
        })
        .collect();
    let services: Vec<Value> = c
        .services
        .iter()
        .map(|sv| {
            json!({"type": sv.kind, "uri": format!("{base}{}", sv.path), "uuid": c.uuid,
                   "info": sv.info})
        })
        .collect();
    // Not part of magellan's payload: the Chassis upstream's own discovery
    // turns into enclosure ComponentEndpoints (`inventory::enclosures`).
    let chassis: Vec<Value> = c
        .chassis
        .iter()
        .map(|ch| {
            let mut o = Map::new();
            o.insert("uri".into(), json!(format!("{base}{}", ch.path)));
            o.insert("name".into(), json!(ch.name));
            o.insert("chassis_type".into(), json!(ch.chassis_type));
            o.insert("manufacturer".into(), json!(ch.manufacturer));
            o.insert("power_state".into(), json!(ch.power_state));
            o.insert("state".into(), json!(ch.state));
            o.insert("health".into(), json!(ch.health));
            if let Some(r) = &ch.reset {
                o.insert(
                    "reset".into(),
                    json!({"target": r.target, "allowed": r.allowed}),
                );
            }
            Value::Object(o)
        })
        .collect();
    json!({
        "ID": id,
        "Type": "",
        "Name": "",
        "FQDN": addr,
        "User": user,
        "MACRequired": true,
        "MACAddr": mac_addr,
        "SchemaVersion": 1,
        "Managers": managers,
        "Systems": systems,
        "Services": services,
        "Chassis": chassis,
    })
}

/// `MACAddr`: the manager NIC carrying the BMC's own address.
pub fn bmc_mac(c: &Crawl, ip: &str) -> Option<String> {
    c.managers
        .iter()
        .flat_map(|m| &m.nics)
        .find(|n| n.ipv4.iter().any(|a| a == ip))
        .and_then(|n| mac::normalize(&n.mac).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::endpoints;
    use crate::redfish::{ManagerInfo, ResetInfo, ServiceLink, SystemInfo};

    fn crawl() -> Crawl {
        Crawl {
            redfish_version: "1.6.0".into(),
            uuid: String::new(),
            systems: vec![SystemInfo {
                path: "/redfish/v1/Systems/1".into(),
                uuid: "u1".into(),
                name: "node1".into(),
                power_state: "On".into(),
                reset: Some(ResetInfo {
                    target: "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset".into(),
                    allowed: vec!["On".into(), "ForceOff".into()],
                }),
                nics: vec![
                    Nic {
                        path: "/redfish/v1/Systems/1/EthernetInterfaces/1".into(),
                        mac: "52:54:00:12:34:56".into(),
                        ipv4: vec![],
                        description: "eth0".into(),
                    },
                    Nic {
                        path: "/redfish/v1/Systems/1/EthernetInterfaces/2".into(),
                        mac: "not a mac".into(),
                        ..Default::default()
                    },
                ],
                serial_console: serde_json::json!({"IPMI": {"ServiceEnabled": true, "Port": 623}}),
                ..Default::default()
            }],
            managers: vec![ManagerInfo {
                path: "/redfish/v1/Managers/BMC".into(),
                manager_type: "BMC".into(),
                nics: vec![Nic {
                    path: "/redfish/v1/Managers/BMC/EthernetInterfaces/1".into(),
                    mac: "02:01:00:00:00:01".into(),
                    ipv4: vec!["10.0.0.1".into()],
                    description: "bmc".into(),
                }],
                ..Default::default()
            }],
            chassis: vec![],
            services: vec![ServiceLink {
                kind: "AccountService".into(),
                path: "/redfish/v1/AccountService".into(),
                info: serde_json::json!({"ServiceEnabled": true}),
            }],
        }
    }

    #[test]
    fn decodes_as_a_v2_payload() {
        let c = crawl();
        let mac = bmc_mac(&c, "10.0.0.1").unwrap();
        assert_eq!(mac, "02:01:00:00:00:01");
        let p = v2("x1c0s0b1", "10.0.0.1:8443", "admin", &mac, &c);
        assert_eq!(
            p["Systems"][0]["uri"],
            "https://10.0.0.1:8443/redfish/v1/Systems/1"
        );
        let e = endpoints::decode(&p).unwrap();
        let inv = e.inventory.unwrap();
        assert_eq!(inv.systems.len(), 1);
        assert_eq!(inv.systems[0].path, "/redfish/v1/Systems/1");
        assert_eq!(inv.systems[0].actions, vec!["On", "ForceOff"]);
        assert_eq!(inv.systems[0].nics.len(), 1, "the unusable MAC is left out");
        assert_eq!(inv.managers[0].nics[0].ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(e.mac_addr.as_deref(), Some("02:01:00:00:00:01"));
        // The services travel as paths, like every other uri.
        assert_eq!(inv.services.len(), 1);
        assert_eq!(inv.services[0].redfish_type, "AccountService");
        assert_eq!(inv.services[0].odata_id, "/redfish/v1/AccountService");
        assert_eq!(inv.services[0].info["ServiceEnabled"], true);
        // The consoles on offer are kept on the endpoint for console::targets.
        assert_eq!(
            inv.details["Systems"][0]["serial_console"]["IPMI"]["Port"],
            623
        );
    }
}
