//! The simulated BMCs' field-replaceable units: Processors (CPUs and GPUs),
//! Memory, a Storage controller with Drives, PCIe devices and functions,
//! and the Chassis' power supplies, laid out as rack servers' BMCs lay them
//! out (DMTF's public rack-mount mockups: `Systems/{id}/Processors/CPU1`,
//! `Memory/DIMM1`, `Storage/1/Drives/Disk.Bay.0`, `PCIeDevices/{id}` with
//! `PCIeFunctions`, `Chassis/1/Power` with inline `PowerSupplies`). The data
//! is made up.
//!
//! Units are swappable: [`State::swap`] exchanges what two slots hold
//! (across BMCs too), so a re-collect sees a DIMM or GPU that moved. A
//! collection can be withheld per BMC ([`State::omit`]): still linked, but
//! answering 404, as BMCs that advertise more than they serve.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde_json::{Value, json};

/// How many units each simulated System has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareConfig {
    pub cpus: usize,
    pub dimms: usize,
    pub gpus: usize,
    pub drives: usize,
    pub power_supplies: usize,
}

impl Default for HardwareConfig {
    /// 2 CPUs, 16 DIMMs, 4 GPUs, 4 drives, 2 power supplies.
    fn default() -> Self {
        HardwareConfig {
            cpus: 2,
            dimms: 16,
            gpus: 4,
            drives: 4,
            power_supplies: 2,
        }
    }
}

/// A collection a BMC can withhold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    Processors,
    Memory,
    Storage,
    PCIeDevices,
    Power,
}

/// A unit's slot: BMC, System, kind and index from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    pub bmc: usize,
    pub system: usize,
    pub kind: Unit,
    pub index: usize,
}

/// What kind of unit a [`Slot`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Cpu,
    Dimm,
    Gpu,
    Drive,
}

/// Swaps and omissions, shared by every simulated BMC.
#[derive(Debug, Default)]
pub struct State {
    /// Slot → the slot whose original unit it now holds.
    holds: Mutex<HashMap<Slot, Slot>>,
    omitted: Mutex<HashSet<(usize, Collection)>>,
}

impl State {
    /// Exchanges the units in two slots (of one kind).
    pub fn swap(&self, a: Slot, b: Slot) {
        if let Ok(mut h) = self.holds.lock() {
            let ua = h.get(&a).copied().unwrap_or(a);
            let ub = h.get(&b).copied().unwrap_or(b);
            h.insert(a, ub);
            h.insert(b, ua);
        }
    }

    /// BMC `bmc` stops (`on`) or resumes serving a collection.
    pub fn omit(&self, bmc: usize, c: Collection, on: bool) {
        if let Ok(mut o) = self.omitted.lock() {
            if on {
                o.insert((bmc, c));
            } else {
                o.remove(&(bmc, c));
            }
        }
    }

    fn omitted(&self, bmc: usize, c: Collection) -> bool {
        self.omitted.lock().is_ok_and(|o| o.contains(&(bmc, c)))
    }

    /// The serial number of the unit in `slot`: its original slot's.
    pub fn serial(&self, slot: Slot) -> String {
        let orig = self
            .holds
            .lock()
            .ok()
            .and_then(|h| h.get(&slot).copied())
            .unwrap_or(slot);
        let tag = match orig.kind {
            Unit::Cpu => "C",
            Unit::Dimm => "D",
            Unit::Gpu => "G",
            Unit::Drive => "S",
        };
        format!("{tag}{:06}{:02}{:03}", orig.bmc, orig.system, orig.index)
    }
}

fn link(path: &str) -> Value {
    json!({ "@odata.id": path })
}

fn collection(path: &str, members: Vec<String>) -> Value {
    json!({
        "@odata.id": path,
        "Members@odata.count": members.len(),
        "Members": members.iter().map(|m| link(m)).collect::<Vec<_>>(),
    })
}

fn status() -> Value {
    json!({"State": "Enabled", "Health": "OK"})
}

/// Links a System document gains.
pub fn system_links(path: &str, v: &mut Value) {
    v["Processors"] = link(&format!("{path}/Processors"));
    v["Memory"] = link(&format!("{path}/Memory"));
    v["Storage"] = link(&format!("{path}/Storage"));
    v["PCIeDevices"] = link(&format!("{path}/PCIeDevices"));
}

/// Links the Chassis document gains.
pub fn chassis_links(path: &str, v: &mut Value) {
    v["Power"] = link(&format!("{path}/Power"));
}

/// The hardware resources under `/redfish/v1/`: `parts` is the path split
/// at `/`, `system` says which System an id names (None: not one).
pub fn resource(
    cfg: &HardwareConfig,
    state: &State,
    bmc: usize,
    path: &str,
    parts: &[&str],
    system: impl Fn(&str) -> Option<usize>,
) -> Option<Value> {
    let slot = |system: usize, kind: Unit, index: usize| Slot {
        bmc,
        system,
        kind,
        index,
    };
    let off = |c: Collection| state.omitted(bmc, c);
    match parts {
        ["Systems", id, "Processors"] if !off(Collection::Processors) => {
            system(id)?;
            let mut m: Vec<String> = (1..=cfg.cpus).map(|k| format!("{path}/CPU{k}")).collect();
            m.extend((1..=cfg.gpus).map(|k| format!("{path}/GPU{k}")));
            Some(collection(path, m))
        }
        ["Systems", id, "Processors", p] if !off(Collection::Processors) => {
            let s = system(id)?;
            if let Some(k) = index(p, "CPU", cfg.cpus) {
                return Some(json!({
                    "@odata.id": path,
                    "@odata.type": "#Processor.v1_11_0.Processor",
                    "Id": p, "Name": "Processor", "Socket": format!("CPU {}", k + 1),
                    "ProcessorType": "CPU", "ProcessorArchitecture": "x86", "InstructionSet": "x86-64",
                    "Manufacturer": "Intel(R) Corporation", "Model": "Sim Xeon 6338 @ 2.00GHz",
                    "MaxSpeedMHz": 3200, "TotalCores": 32, "TotalThreads": 64,
                    "PartNumber": "SIM-CPU-6338", "SerialNumber": state.serial(slot(s, Unit::Cpu, k)),
                    "ProcessorId": {"VendorId": "GenuineIntel", "IdentificationRegisters": "0x000606A6"},
                    "Status": status(),
                }));
            }
            let k = index(p, "GPU", cfg.gpus)?;
            Some(json!({
                "@odata.id": path,
                "@odata.type": "#Processor.v1_11_0.Processor",
                "Id": p, "Name": "GPU", "Socket": format!("PCIe Slot {}", k + 1),
                "ProcessorType": "GPU", "ProcessorArchitecture": "x86",
                "Manufacturer": "NVIDIA", "Model": "Sim A100-SXM4-80GB",
                "MaxSpeedMHz": 1410, "TotalCores": 108,
                "PartNumber": "SIM-GPU-A100-80", "SerialNumber": state.serial(slot(s, Unit::Gpu, k)),
                "Status": status(),
            }))
        }
        ["Systems", id, "Memory"] if !off(Collection::Memory) => {
            system(id)?;
            Some(collection(
                path,
                (1..=cfg.dimms).map(|k| format!("{path}/DIMM{k}")).collect(),
            ))
        }
        ["Systems", id, "Memory", d] if !off(Collection::Memory) => {
            let s = system(id)?;
            let k = index(d, "DIMM", cfg.dimms)?;
            let per_cpu = cfg.dimms.div_ceil(cfg.cpus.max(1)).max(1);
            let channel = (k % per_cpu) / 2;
            Some(json!({
                "@odata.id": path,
                "@odata.type": "#Memory.v1_10_0.Memory",
                "Id": d, "Name": format!("DIMM {}", k + 1),
                "DeviceLocator": format!("CPU{} DIMM {}{}", k / per_cpu + 1, (b'A' + channel as u8) as char, k % 2 + 1),
                "MemoryLocation": {"Socket": k / per_cpu + 1, "MemoryController": 1, "Channel": channel + 1, "Slot": k % 2 + 1},
                "CapacityMiB": 32768, "MemoryDeviceType": "DDR4", "MemoryType": "DRAM",
                "BaseModuleType": "RDIMM", "OperatingSpeedMhz": 3200, "RankCount": 2,
                "DataWidthBits": 64, "BusWidthBits": 72, "ErrorCorrection": "MultiBitECC",
                "Manufacturer": "Hynix", "PartNumber": "HMA84GR7AFR4N-XN",
                "SerialNumber": state.serial(slot(s, Unit::Dimm, k)),
                "Status": status(),
            }))
        }
        ["Systems", id, "Storage"] if !off(Collection::Storage) => {
            system(id)?;
            Some(collection(path, vec![format!("{path}/1")]))
        }
        ["Systems", id, "Storage", "1"] if !off(Collection::Storage) => {
            system(id)?;
            Some(json!({
                "@odata.id": path,
                "@odata.type": "#Storage.v1_9_0.Storage",
                "Id": "1", "Name": "Storage Controller",
                "StorageControllers": [{
                    "@odata.id": format!("{path}#/StorageControllers/0"),
                    "MemberId": "0", "Name": "Sim RAID 9460-8i", "Manufacturer": "Broadcom",
                    "Model": "Sim 9460-8i", "PartNumber": "SIM-RAID-9460", "SerialNumber": format!("R{bmc:06}{id}"),
                    "FirmwareVersion": "51.16.0", "Status": status(),
                }],
                "Drives": (0..cfg.drives).map(|k| link(&format!("{path}/Drives/Disk.Bay.{k}"))).collect::<Vec<_>>(),
            }))
        }
        ["Systems", id, "Storage", "1", "Drives", d] if !off(Collection::Storage) => {
            let s = system(id)?;
            let k: usize = d.strip_prefix("Disk.Bay.")?.parse().ok()?;
            (k < cfg.drives).then_some(())?;
            Some(json!({
                "@odata.id": path,
                "@odata.type": "#Drive.v1_9_0.Drive",
                "Id": d, "Name": format!("NVMe SSD {k}"),
                "Manufacturer": "Samsung", "Model": "Sim PM1733", "PartNumber": "SIM-NVME-3T84",
                "SerialNumber": state.serial(slot(s, Unit::Drive, k)), "SKU": "",
                "CapacityBytes": 3_840_755_982_336_u64, "Protocol": "NVMe", "MediaType": "SSD",
                "BlockSizeBytes": 512, "CapableSpeedGbs": 32, "NegotiatedSpeedGbs": 32,
                "FailurePredicted": false, "PredictedMediaLifeLeftPercent": 100,
                "Status": status(),
            }))
        }
        ["Systems", id, "PCIeDevices"] if !off(Collection::PCIeDevices) => {
            system(id)?;
            let mut m = vec![format!("{path}/NIC1")];
            m.extend((1..=cfg.gpus).map(|k| format!("{path}/GPU{k}")));
            Some(collection(path, m))
        }
        ["Systems", id, "PCIeDevices", dev] if !off(Collection::PCIeDevices) => {
            let s = system(id)?;
            let (name, class, vendor, serial) = if *dev == "NIC1" {
                (
                    "Sim ConnectX-6",
                    "NetworkController",
                    "0x15b3",
                    format!("N{bmc:06}{s:02}"),
                )
            } else {
                let k = index(dev, "GPU", cfg.gpus)?;
                (
                    "Sim A100-SXM4-80GB",
                    "DisplayController",
                    "0x10de",
                    state.serial(slot(s, Unit::Gpu, k)),
                )
            };
            Some(json!({
                "@odata.id": path,
                "@odata.type": "#PCIeDevice.v1_5_0.PCIeDevice",
                "Id": dev, "Name": name, "Manufacturer": if vendor == "0x10de" { "NVIDIA" } else { "Mellanox" },
                "Model": name, "PartNumber": "", "SerialNumber": serial, "DeviceType": "SingleFunction",
                "PCIeFunctions": link(&format!("{path}/PCIeFunctions")),
                "Status": status(),
                "Oem": {"Sim": {"DeviceClass": class, "VendorId": vendor}},
            }))
        }
        ["Systems", id, "PCIeDevices", dev, "PCIeFunctions"] if !off(Collection::PCIeDevices) => {
            system(id)?;
            (*dev == "NIC1" || index(dev, "GPU", cfg.gpus).is_some()).then_some(())?;
            Some(collection(path, vec![format!("{path}/0")]))
        }
        ["Systems", id, "PCIeDevices", dev, "PCIeFunctions", "0"]
            if !off(Collection::PCIeDevices) =>
        {
            system(id)?;
            let (class, vendor, device) = if *dev == "NIC1" {
                ("NetworkController", "0x15b3", "0x101b")
            } else {
                index(dev, "GPU", cfg.gpus)?;
                ("DisplayController", "0x10de", "0x20b2")
            };
            Some(json!({
                "@odata.id": path, "Id": "0", "FunctionType": "Physical",
                "DeviceClass": class, "VendorId": vendor, "DeviceId": device,
            }))
        }
        ["Chassis", "1", "Power"] if !off(Collection::Power) => Some(json!({
            "@odata.id": path,
            "@odata.type": "#Power.v1_6_0.Power",
            "Id": "Power", "Name": "Power",
            "PowerSupplies": (0..cfg.power_supplies).map(|k| json!({
                "@odata.id": format!("{path}#/PowerSupplies/{k}"),
                "MemberId": k.to_string(), "Name": format!("PSU{}", k + 1),
                "PowerSupplyType": "AC", "PowerCapacityWatts": 2000,
                "Manufacturer": "Delta", "Model": "Sim DPS-2000AB", "PartNumber": "SIM-PSU-2000",
                "SerialNumber": format!("P{bmc:06}{k:02}"), "FirmwareVersion": "1.2.0",
                "Status": status(),
            })).collect::<Vec<_>>(),
        })),
        _ => None,
    }
}

/// `CPU3` → 2 when there are at least 3.
fn index(id: &str, prefix: &str, count: usize) -> Option<usize> {
    let k: usize = id.strip_prefix(prefix)?.parse().ok()?;
    (k >= 1 && k <= count).then(|| k - 1)
}
