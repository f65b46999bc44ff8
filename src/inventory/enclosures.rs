//! Which of a BMC's Redfish Chassis SMD tracks, and as what.
//!
//! Upstream's own discovery turns a Chassis into a component and a
//! `ComponentEndpointChassis` only when it can name it: an `Enclosure` or
//! `RackMount` chassis (or a Gigabyte `StandAlone` one) behind a BMC with
//! Systems is the node enclosure (`x0c0s0b0` → `x0c0s0e0`); a
//! Cray-or-unknown-maker `Enclosure` behind a ChassisBMC is the chassis
//! itself (`x0c0b0` → `x0c0`), and behind a RouterBMC the switch board
//! (`x0c0r0b0` → `x0c0r0e0`). Every other Chassis (blades, sleds, zones,
//! backplanes, power supplies a vendor lists as Chassis) is left out, as
//! upstream leaves out what it has no xname for; so is a name whose type
//! does not match (a NodeEnclosure named under anything but a slot).
//!
//! Upstream gives every qualifying Chassis of a BMC the same xname and keeps
//! whichever it wrote last; here the first one wins, preferring the
//! Chassis the first System links to, so the ComponentEndpoint and the
//! hardware inventory's enclosure location describe the same Chassis.

use serde_json::{Map, Value};

use super::enums::HmsType;
use super::model::{Actions, Component, ComponentEndpoint, RedfishEndpoint, RedfishResourceInfo};
use super::{endpoints::reduce_uri, xname};

/// One Chassis of a V2 payload (`Chassis`, sent by the appliance's own
/// discovery; magellan sends none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChassisIn {
    pub path: String,
    pub name: String,
    pub chassis_type: String,
    pub manufacturer: String,
    pub power_state: String,
    /// `Status.State`, `Status.Health`.
    pub state: String,
    pub health: String,
    /// `#Chassis.Reset` target and ResetType values; `None`: no action.
    pub reset: Option<(String, Vec<String>)>,
}

fn text(o: &Map<String, Value>, k: &str) -> String {
    o.get(k)
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Decodes `Chassis` leniently: an entry without a usable `uri` is skipped.
pub fn decode(list: Option<&Value>) -> Vec<ChassisIn> {
    let Some(Value::Array(a)) = list else {
        return Vec::new();
    };
    a.iter()
        .filter_map(Value::as_object)
        .filter_map(|o| {
            let path = reduce_uri(&text(o, "uri"));
            if !path.starts_with('/') {
                return None;
            }
            let reset = o.get("reset").and_then(Value::as_object).map(|r| {
                let target = reduce_uri(&text(r, "target"));
                let allowed = match r.get("allowed") {
                    Some(Value::Array(v)) => v
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                    _ => Vec::new(),
                };
                (target, allowed)
            });
            Some(ChassisIn {
                name: text(o, "name"),
                chassis_type: text(o, "chassis_type"),
                manufacturer: text(o, "manufacturer"),
                power_state: text(o, "power_state"),
                state: text(o, "state"),
                health: text(o, "health"),
                reset,
                path,
            })
        })
        .collect()
}

/// Upstream's maker test on a `Manufacturer` string: `None` when it has no
/// letters or digits at all, else whether one of its words names `maker`.
fn made_by(manufacturer: &str, words: &[&str]) -> Option<bool> {
    if !manufacturer.chars().any(char::is_alphanumeric) {
        return None;
    }
    let lower = manufacturer.to_lowercase();
    Some(
        lower
            .split(|c: char| !c.is_alphabetic())
            .any(|w| words.contains(&w)),
    )
}

const CRAY: &[&str] = &["cray", "crayinc", "crayincorporated", "hpe"];

/// The type upstream gives a Chassis of `chassis_type` made by
/// `manufacturer` behind a BMC of `bmc`, which has `systems` Systems.
pub fn hms_type(
    bmc: HmsType,
    chassis_type: &str,
    manufacturer: &str,
    systems: usize,
) -> Option<HmsType> {
    let node_enclosure = || (systems > 0).then_some(HmsType::NodeEnclosure);
    match chassis_type {
        "Enclosure" => {
            if bmc == HmsType::ChassisBMC && made_by(manufacturer, CRAY) != Some(false) {
                Some(HmsType::Chassis)
            } else if bmc == HmsType::RouterBMC {
                Some(HmsType::HSNBoard)
            } else {
                node_enclosure()
            }
        }
        "RackMount" if made_by(manufacturer, &["foxconn"]) != Some(true) => node_enclosure(),
        "StandAlone" if made_by(manufacturer, &["gigabyte"]) == Some(true) => node_enclosure(),
        _ => None,
    }
}

/// The xname of a Chassis of type `t` behind BMC `bmc`, if upstream's rule
/// gives one of that type.
pub fn name(bmc: &str, t: HmsType) -> Option<String> {
    let (head, tail) = bmc.split_once('b')?;
    let id = match t {
        HmsType::NodeEnclosure | HmsType::HSNBoard => format!("{head}e{tail}"),
        HmsType::Chassis => head.to_string(),
        _ => return None,
    };
    (xname::type_of(&id) == Some(t)).then_some(id)
}

/// The Chassis upstream would track for this BMC, with its xname and type:
/// at most one per xname, the one `linked` (the first System's first
/// Chassis) names first.
pub fn tracked<'a>(
    bmc: &str,
    bmc_kind: HmsType,
    chassis: &'a [ChassisIn],
    systems: usize,
    linked: Option<&str>,
) -> Vec<(String, HmsType, &'a ChassisIn)> {
    let mut ordered: Vec<&ChassisIn> = chassis
        .iter()
        .filter(|c| Some(c.path.as_str()) == linked)
        .collect();
    ordered.extend(chassis.iter().filter(|c| Some(c.path.as_str()) != linked));
    let mut out: Vec<(String, HmsType, &ChassisIn)> = Vec::new();
    for c in ordered {
        let Some(t) = hms_type(bmc_kind, &c.chassis_type, &c.manufacturer, systems) else {
            continue;
        };
        if let Some(id) = name(bmc, t)
            && !out.iter().any(|(o, _, _)| *o == id)
        {
            out.push((id, t, c));
        }
    }
    out
}

/// Upstream's State and Flag for a discovered Chassis: `Empty` when
/// absent, else `On`/`Off` from its PowerState or `Populated` without one;
/// a powered chassis not `Enabled` or in `Warning` health is flagged
/// `Warning`, in `Critical` health `Alert`.
pub fn state_flag(c: &ChassisIn) -> (&'static str, &'static str) {
    if c.state == "Absent" {
        return ("Empty", "OK");
    }
    let state = match c.power_state.as_str() {
        "Off" | "PoweringOn" => "Off",
        "On" | "PoweringOff" => "On",
        _ => "Populated",
    };
    let flag = if state == "Populated" {
        "OK"
    } else if c.health == "Critical" {
        "Alert"
    } else if c.state != "Enabled" || c.health == "Warning" {
        "Warning"
    } else {
        "OK"
    };
    (state, flag)
}

/// The component a tracked Chassis stands for: `old` refreshed with the
/// discovered State and Flag, or a new one with upstream's defaults.
pub fn component(old: Option<&Component>, id: &str, t: HmsType, c: &ChassisIn) -> Component {
    let (state, flag) = state_flag(c);
    let mut comp = old.cloned().unwrap_or_else(|| {
        let mut n = Component::new(id.to_string(), t.as_str().to_string());
        n.enabled = Some(true);
        n.net_type = Some("Sling".into());
        n.arch = Some("X86".into());
        n.class = Some(
            if t == HmsType::Chassis {
                "Mountain"
            } else {
                "River"
            }
            .into(),
        );
        n
    });
    comp.state = state.into();
    comp.flag = flag.into();
    comp
}

/// The `ComponentEndpointChassis` of a tracked Chassis.
pub fn endpoint(ep: &RedfishEndpoint, id: &str, t: HmsType, c: &ChassisIn) -> ComponentEndpoint {
    ComponentEndpoint {
        id: id.to_string(),
        kind: t.as_str().into(),
        domain: String::new(),
        fqdn: String::new(),
        redfish_type: "Chassis".into(),
        redfish_subtype: c.chassis_type.clone(),
        // Upstream leaves a Chassis' UUID unset.
        uuid: String::new(),
        odata_id: c.path.clone(),
        redfish_endpoint_id: ep.id.clone(),
        redfish_endpoint_fqdn: ep.fqdn.clone(),
        redfish_url: format!("{}{}", ep.fqdn, c.path),
        enabled: true,
        component_endpoint_type: "ComponentEndpointChassis".into(),
        redfish_system_info: None,
        redfish_manager_info: None,
        redfish_chassis_info: Some(RedfishResourceInfo {
            name: c.name.clone(),
            actions: c.reset.as_ref().map(|(target, allowed)| Actions {
                chassis_reset: Some(super::model::ResetAction {
                    target: if target.is_empty() {
                        format!("{}/Actions/Chassis.Reset", c.path)
                    } else {
                        target.clone()
                    },
                    allowable_values: allowed.clone(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_types_and_names() {
        use HmsType::*;
        // (BMC, its type, ChassisType, Manufacturer, Systems) → xname.
        type Row = (&'static str, HmsType, &'static str, &'static str, usize);
        let table: &[(Row, Option<&str>)] = &[
            (
                ("x0c0s0b0", NodeBMC, "Enclosure", "Contoso", 1),
                Some("x0c0s0e0"),
            ),
            (
                ("x0c0s0b1", NodeBMC, "RackMount", "Dell Inc.", 2),
                Some("x0c0s0e1"),
            ),
            (("x0c0s0b0", NodeBMC, "RackMount", "", 0), None),
            (("x0c0s0b0", NodeBMC, "RackMount", "Foxconn", 1), None),
            (
                ("x0c0s0b0", NodeBMC, "StandAlone", "GIGABYTE", 1),
                Some("x0c0s0e0"),
            ),
            (("x0c0s0b0", NodeBMC, "StandAlone", "Contoso", 1), None),
            (("x0c0s0b0", NodeBMC, "Blade", "Cray Inc.", 1), None),
            (("x0c0s0b0", NodeBMC, "Sled", "", 1), None),
            (("x0c0s0b0", NodeBMC, "Drawer", "", 1), None),
            (
                ("x1c4b0", ChassisBMC, "Enclosure", "Cray Inc.", 0),
                Some("x1c4"),
            ),
            (("x1c4b0", ChassisBMC, "Enclosure", "", 0), Some("x1c4")),
            // A non-Cray enclosure behind a ChassisBMC would be a node
            // enclosure, which has no name there.
            (("x1c4b0", ChassisBMC, "Enclosure", "Contoso", 1), None),
            (
                ("x0c0r0b0", RouterBMC, "Enclosure", "HPE", 0),
                Some("x0c0r0e0"),
            ),
        ];
        for ((bmc, kind, ct, mfr, systems), want) in table {
            let got = hms_type(*kind, ct, mfr, *systems).and_then(|t| name(bmc, t));
            assert_eq!(got.as_deref(), *want, "{bmc} {ct} {mfr:?} {systems}");
        }
    }

    #[test]
    fn first_linked_wins_and_states() {
        let c = |p: &str, t: &str| ChassisIn {
            path: p.into(),
            chassis_type: t.into(),
            ..Default::default()
        };
        let list = [
            c("/redfish/v1/Chassis/A", "RackMount"),
            c("/redfish/v1/Chassis/B", "Enclosure"),
            c("/redfish/v1/Chassis/C", "Card"),
        ];
        let got = tracked(
            "x0c0s1b0",
            HmsType::NodeBMC,
            &list,
            1,
            Some("/redfish/v1/Chassis/B"),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "x0c0s1e0");
        assert_eq!(got[0].2.path, "/redfish/v1/Chassis/B");
        let got = tracked("x0c0s1b0", HmsType::NodeBMC, &list, 1, None);
        assert_eq!(got[0].2.path, "/redfish/v1/Chassis/A");

        let s = |power: &str, state: &str, health: &str| {
            state_flag(&ChassisIn {
                power_state: power.into(),
                state: state.into(),
                health: health.into(),
                ..Default::default()
            })
        };
        assert_eq!(s("On", "Enabled", "OK"), ("On", "OK"));
        assert_eq!(s("PoweringOn", "Enabled", "OK"), ("Off", "OK"));
        assert_eq!(s("", "Enabled", "Critical"), ("Populated", "OK"));
        assert_eq!(s("On", "StandbyOffline", "OK"), ("On", "Warning"));
        assert_eq!(s("On", "Enabled", "Critical"), ("On", "Alert"));
        assert_eq!(s("On", "Absent", "OK"), ("Empty", "OK"));
    }
}
