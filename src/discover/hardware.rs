//! A crawl's field-replaceable units as SMD hardware-inventory locations.
//!
//! Naming follows upstream's xname rules under each node: processors
//! `p<k>`, accelerators `a<k>`, memory `d<k>`, drives `g<storage>k<k>`,
//! numbered in the BMC's member order; the node's enclosure is `e<b>` of its
//! slot for BMC `b<b>`, with power supplies `e<b>t<k>`. PCIe devices and storage controllers
//! have no xname of their own upstream and ride in the node's location
//! details (`PCIeDevices`, `StorageControllers`).

use serde_json::{Map, Value, json};

use crate::inventory::enums::HmsType;
use crate::inventory::hwinv::{self, FruIn, LocIn};
use crate::inventory::{Txn, enclosures, xname};
use crate::redfish::hardware::{Part, PartKind};
use crate::redfish::{ChassisInfo, Crawl, SystemInfo};

/// What a crawl found, kept until its BMC is written.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// System path → its location list (relative to the node), plus the
    /// node's own location.
    systems: Vec<(String, SystemInfo)>,
    enclosure: Option<(Map<String, Value>, Map<String, Value>)>,
    power_supplies: Vec<Part>,
}

impl Found {
    pub fn from_crawl(c: &Crawl) -> Found {
        let systems: Vec<(String, SystemInfo)> = c
            .systems
            .iter()
            .map(|s| (s.path.clone(), s.clone()))
            .collect();
        // The Chassis the enclosure's ComponentEndpoint describes (see
        // `inventory::enclosures`), else the first System's, else the first.
        let linked = c
            .systems
            .first()
            .and_then(|s| s.chassis.first())
            .and_then(|p| c.chassis.iter().find(|ch| &ch.path == p));
        let qualifies = |ch: &&ChassisInfo| {
            enclosures::hms_type(
                HmsType::NodeBMC,
                &ch.chassis_type,
                &ch.manufacturer,
                c.systems.len(),
            ) == Some(HmsType::NodeEnclosure)
        };
        let first_chassis = linked
            .filter(qualifies)
            .or_else(|| c.chassis.iter().find(qualifies))
            .or(linked)
            .or(c.chassis.first());
        let enclosure = first_chassis.map(|ch| {
            let mut loc = Map::new();
            loc.insert("Id".into(), json!(ch.path.rsplit('/').next().unwrap_or("")));
            loc.insert("Name".into(), json!(ch.name));
            loc.insert("Description".into(), json!(""));
            loc.insert("HostName".into(), json!(""));
            let mut fru = Map::new();
            fru.insert("AssetTag".into(), json!(ch.asset_tag));
            fru.insert("ChassisType".into(), json!(ch.chassis_type));
            fru.insert("Model".into(), json!(ch.model));
            fru.insert("Manufacturer".into(), json!(ch.manufacturer));
            fru.insert("PartNumber".into(), json!(ch.part_number));
            fru.insert("SerialNumber".into(), json!(ch.serial));
            fru.insert("SKU".into(), json!(ch.sku));
            (loc, fru)
        });
        Found {
            systems,
            enclosure,
            power_supplies: c
                .chassis
                .iter()
                .flat_map(|ch| ch.hardware.power_supplies.iter().cloned())
                .collect(),
        }
    }

    /// What could not be read, for the BMC's report.
    pub fn notes(c: &Crawl) -> Vec<String> {
        c.systems
            .iter()
            .flat_map(|s| s.hardware.notes.iter().cloned())
            .chain(
                c.chassis
                    .iter()
                    .flat_map(|ch| ch.hardware.notes.iter().cloned()),
            )
            .collect()
    }

    /// The locations, named under the nodes the endpoint write gave the
    /// Systems of BMC `bmc` (its ComponentEndpoints).
    pub fn locations(&self, t: &Txn<'_>, bmc: &str) -> Vec<LocIn> {
        let m = t.model();
        let mut out = Vec::new();
        for (path, s) in &self.systems {
            let Some(node) = m
                .component_endpoints
                .values()
                .find(|ce| ce.redfish_endpoint_id == bmc && ce.odata_id == *path)
                .map(|ce| ce.id.clone())
            else {
                continue;
            };
            out.extend(node_loc(&node, s));
            let (mut p, mut a) = (0, 0);
            for part in &s.hardware.processors {
                let id = match part.kind {
                    PartKind::Accelerator => {
                        a += 1;
                        format!("{node}a{}", a - 1)
                    }
                    _ => {
                        p += 1;
                        format!("{node}p{}", p - 1)
                    }
                };
                out.extend(part_loc(&id, part));
            }
            for (k, part) in s.hardware.memory.iter().enumerate() {
                out.extend(part_loc(&format!("{node}d{k}"), part));
            }
            let mut per_group: std::collections::HashMap<usize, usize> = Default::default();
            for part in &s.hardware.drives {
                let k = per_group.entry(part.group).or_default();
                out.extend(part_loc(&format!("{node}g{}k{k}", part.group), part));
                *k += 1;
            }
        }
        if let Some(slot) = xname::parent(bmc)
            && xname::type_of(&slot) == Some(HmsType::ComputeModule)
            && let Some((loc, fru)) = &self.enclosure
        {
            // One enclosure per BMC: BMCs sharing a slot (`b0`, `b1`) each
            // report their own chassis, so `b<k>` gets `e<k>`.
            let k = bmc.rsplit('b').next().unwrap_or("0");
            let enc = format!("{slot}e{k}");
            out.extend(LocIn::new(
                &enc,
                loc.clone(),
                Some(FruIn {
                    subtype: String::new(),
                    fru_info: fru.clone(),
                }),
            ));
            for (k, part) in self.power_supplies.iter().enumerate() {
                out.extend(part_loc(&format!("{enc}t{k}"), part));
            }
        }
        out
    }

    /// Writes the locations for BMC `bmc` (after its endpoint).
    pub fn apply(&self, t: &mut Txn<'_>, bmc: &str) -> hwinv::Collected {
        let locs = self.locations(t, bmc);
        hwinv::collect(t, bmc, &locs)
    }
}

fn node_loc(node: &str, s: &SystemInfo) -> Option<LocIn> {
    let mut loc = Map::new();
    loc.insert("Id".into(), json!(s.path.rsplit('/').next().unwrap_or("")));
    loc.insert("Name".into(), json!(s.name));
    loc.insert("Description".into(), json!(""));
    loc.insert("HostName".into(), json!(""));
    loc.insert(
        "ProcessorSummary".into(),
        json!({"Count": s.processor_count, "Model": s.processor_model}),
    );
    loc.insert(
        "MemorySummary".into(),
        json!({"TotalSystemMemoryGiB": s.memory_gib}),
    );
    if !s.hardware.pcie.is_empty() {
        let devs: Vec<Value> = s
            .hardware
            .pcie
            .iter()
            .map(|d| {
                let mut o = d.info.clone();
                o.insert("PCIeFunctions".into(), json!(d.functions));
                Value::Object(o)
            })
            .collect();
        loc.insert("PCIeDevices".into(), Value::Array(devs));
    }
    if !s.hardware.storage_controllers.is_empty() {
        loc.insert(
            "StorageControllers".into(),
            json!(s.hardware.storage_controllers),
        );
    }
    let mut fru = Map::new();
    fru.insert("AssetTag".into(), json!(""));
    fru.insert("BiosVersion".into(), json!(s.bios_version));
    fru.insert("Model".into(), json!(s.model));
    fru.insert("Manufacturer".into(), json!(s.manufacturer));
    fru.insert("PartNumber".into(), json!(""));
    fru.insert("SerialNumber".into(), json!(s.serial));
    fru.insert("SKU".into(), json!(s.sku));
    fru.insert("SystemType".into(), json!(s.system_type));
    fru.insert("UUID".into(), json!(s.uuid));
    LocIn::new(
        node,
        loc,
        Some(FruIn {
            subtype: String::new(),
            fru_info: fru,
        }),
    )
}

fn part_loc(id: &str, p: &Part) -> Option<LocIn> {
    LocIn::new(
        id,
        p.location.clone(),
        Some(FruIn {
            subtype: String::new(),
            fru_info: p.fru.clone(),
        }),
    )
}
