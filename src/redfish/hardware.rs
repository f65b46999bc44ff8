//! Reading a System's field-replaceable units: Processors (GPUs and other
//! accelerators among them), Memory, Storage controllers and their Drives,
//! PCIe devices and functions, and, per Chassis, its power supplies.
//!
//! Each part keeps what SMD's hardware inventory splits into location and
//! FRU details: where it sits (Id, Name, Socket, MemoryLocation, ...) and
//! what it is (Manufacturer, Model, PartNumber, SerialNumber, ...).
//!
//! BMCs differ most here: many omit a collection, answer 404 or 500 for one,
//! or send members without serial numbers. None of that fails the crawl:
//! what could not be read is listed in `notes` for the BMC's report. The
//! crawl's all-or-nothing rule still holds for a BMC that stops answering
//! (a connection error or timeout fails the whole crawl), so a BMC that
//! goes away half-way never leaves half an inventory.

use futures_util::future::try_join_all;
use serde_json::{Map, Value};

use super::client::Bmc;
use super::error::{Error, ErrorKind};
use super::json::{at, clean, get, link, list, members, str_of};

/// What kind of unit a [`Part`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    Processor,
    /// A Processor whose ProcessorType is GPU, Accelerator, FPGA, ...
    Accelerator,
    Memory,
    Drive,
    PowerSupply,
}

/// One unit: where it is and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub kind: PartKind,
    pub path: String,
    /// Location details (SMD's `<Type>LocationInfo`).
    pub location: Map<String, Value>,
    /// Durable details (SMD's `<Type>FRUInfo`), including Manufacturer,
    /// Model, PartNumber and SerialNumber.
    pub fru: Map<String, Value>,
    /// For drives: the position of their Storage resource.
    pub group: usize,
}

/// A PCIe device with its functions.
#[derive(Debug, Clone, PartialEq)]
pub struct PcieDevice {
    pub path: String,
    /// Id, Name, Manufacturer, Model, PartNumber, SerialNumber, DeviceType.
    pub info: Map<String, Value>,
    /// Each function's Id, FunctionType, DeviceClass, VendorId, DeviceId.
    pub functions: Vec<Map<String, Value>>,
}

/// A System's units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemHardware {
    pub processors: Vec<Part>,
    pub memory: Vec<Part>,
    pub drives: Vec<Part>,
    /// Storage controllers (Id, Name, Manufacturer, Model, ...), one entry
    /// per Storage resource's controller.
    pub storage_controllers: Vec<Map<String, Value>>,
    pub pcie: Vec<PcieDevice>,
    /// What could not be read (a collection answering 404 or an error,
    /// a member that failed): for the report, never fatal.
    pub notes: Vec<String>,
}

/// A Chassis' power supplies (and what could not be read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChassisHardware {
    pub power_supplies: Vec<Part>,
    pub notes: Vec<String>,
}

/// A GET where only a BMC that stopped answering is an error: any HTTP
/// status (404 included) or unreadable JSON becomes a note and `None`.
async fn tolerant(bmc: &Bmc, path: &str, notes: &mut Vec<String>) -> Result<Option<Value>, Error> {
    if path.is_empty() {
        return Ok(None);
    }
    match bmc.get(path).await {
        Ok(v) => Ok(Some(v)),
        Err(e) => match &e.kind {
            ErrorKind::Status(code, _) | ErrorKind::Auth(code, _) => {
                notes.push(format!("{path}: HTTP {code}"));
                Ok(None)
            }
            ErrorKind::Decode(why) => {
                notes.push(format!("{path}: {why}"));
                Ok(None)
            }
            _ => Err(e),
        },
    }
}

/// The members of the collection `owner` links under `key`, each read.
async fn collection(
    bmc: &Bmc,
    owner: &Value,
    key: &str,
) -> Result<(Vec<(String, Value)>, Vec<String>), Error> {
    let mut notes = Vec::new();
    let path = link(owner, key);
    let Some(col) = tolerant(bmc, path, &mut notes).await? else {
        return Ok((Vec::new(), notes));
    };
    read_all(bmc, members(&col), notes).await
}

async fn read_all(
    bmc: &Bmc,
    paths: Vec<String>,
    notes: Vec<String>,
) -> Result<(Vec<(String, Value)>, Vec<String>), Error> {
    let got = try_join_all(paths.into_iter().map(|p| async move {
        let mut n = Vec::new();
        let v = tolerant(bmc, &p, &mut n).await?;
        Ok::<_, Error>((clean(&p), v, n))
    }))
    .await?;
    let mut notes = notes;
    let mut out = Vec::new();
    for (p, v, n) in got {
        notes.extend(n);
        if let Some(v) = v {
            out.push((p, v));
        }
    }
    Ok((out, notes))
}

fn pick(v: &Value, keys: &[&str]) -> Map<String, Value> {
    let mut m = Map::new();
    for k in keys {
        let x = get(v, k).cloned().unwrap_or(Value::String(String::new()));
        m.insert((*k).to_string(), x);
    }
    m
}

fn absent(v: &Value) -> bool {
    at(v, &["Status", "State"])
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("Absent"))
}

const LOCATION: &[&str] = &["Id", "Name", "Description"];

fn processor(path: String, v: &Value) -> Part {
    let ty = str_of(v, "ProcessorType");
    let accel =
        !ty.is_empty() && !ty.eq_ignore_ascii_case("CPU") && !ty.eq_ignore_ascii_case("Core");
    let mut location = pick(v, LOCATION);
    location.insert(
        "Socket".into(),
        get(v, "Socket")
            .cloned()
            .unwrap_or(Value::String(String::new())),
    );
    Part {
        kind: if accel {
            PartKind::Accelerator
        } else {
            PartKind::Processor
        },
        path,
        location,
        fru: pick(
            v,
            &[
                "InstructionSet",
                "Manufacturer",
                "MaxSpeedMHz",
                "Model",
                "SerialNumber",
                "PartNumber",
                "ProcessorArchitecture",
                "ProcessorId",
                "ProcessorType",
                "TotalCores",
                "TotalThreads",
            ],
        ),
        group: 0,
    }
}

fn memory(path: String, v: &Value) -> Part {
    let mut location = pick(v, LOCATION);
    location.insert(
        "MemoryLocation".into(),
        get(v, "MemoryLocation")
            .cloned()
            .unwrap_or(Value::Object(Map::new())),
    );
    if let Some(d) = get(v, "DeviceLocator") {
        location.insert("DeviceLocator".into(), d.clone());
    }
    Part {
        kind: PartKind::Memory,
        path,
        location,
        fru: pick(
            v,
            &[
                "BaseModuleType",
                "BusWidthBits",
                "CapacityMiB",
                "DataWidthBits",
                "ErrorCorrection",
                "Manufacturer",
                "MemoryType",
                "MemoryDeviceType",
                "OperatingSpeedMhz",
                "PartNumber",
                "RankCount",
                "SerialNumber",
            ],
        ),
        group: 0,
    }
}

fn drive(path: String, v: &Value, group: usize) -> Part {
    Part {
        kind: PartKind::Drive,
        path,
        location: pick(v, LOCATION),
        fru: pick(
            v,
            &[
                "Manufacturer",
                "SerialNumber",
                "PartNumber",
                "Model",
                "SKU",
                "CapacityBytes",
                "Protocol",
                "MediaType",
                "RotationSpeedRPM",
                "BlockSizeBytes",
                "CapableSpeedGbs",
                "FailurePredicted",
                "EncryptionAbility",
                "EncryptionStatus",
                "NegotiatedSpeedGbs",
                "PredictedMediaLifeLeftPercent",
            ],
        ),
        group,
    }
}

fn power_supply(path: String, v: &Value) -> Part {
    let mut fru = pick(
        v,
        &[
            "Manufacturer",
            "SerialNumber",
            "Model",
            "PartNumber",
            "PowerSupplyType",
        ],
    );
    for k in ["PowerCapacityWatts", "PowerInputWatts", "PowerOutputWatts"] {
        fru.insert(k.into(), get(v, k).cloned().unwrap_or(Value::from(0)));
    }
    Part {
        kind: PartKind::PowerSupply,
        path,
        location: pick(v, &["Name", "FirmwareVersion"]),
        fru,
        group: 0,
    }
}

/// Reads the units of the System document `sys`.
pub async fn system(bmc: &Bmc, sys: &Value) -> Result<SystemHardware, Error> {
    let (procs, mem, storage, pcie) = futures_util::try_join!(
        collection(bmc, sys, "Processors"),
        collection(bmc, sys, "Memory"),
        storage(bmc, sys),
        pcie_devices(bmc, sys),
    )?;
    let mut hw = SystemHardware::default();
    hw.notes.extend(procs.1);
    hw.notes.extend(mem.1);
    for (p, v) in procs.0 {
        if !absent(&v) {
            hw.processors.push(processor(p, &v));
        }
    }
    for (p, v) in mem.0 {
        if !absent(&v) {
            hw.memory.push(memory(p, &v));
        }
    }
    let (drives, controllers, notes) = storage;
    hw.drives = drives;
    hw.storage_controllers = controllers;
    hw.notes.extend(notes);
    hw.pcie = pcie.0;
    hw.notes.extend(pcie.1);
    Ok(hw)
}

type StorageOut = (Vec<Part>, Vec<Map<String, Value>>, Vec<String>);

/// Storage resources, their controllers (inline `StorageControllers` or a
/// `Controllers` collection) and Drives (links in `Drives`).
async fn storage(bmc: &Bmc, sys: &Value) -> Result<StorageOut, Error> {
    let (stores, mut notes) = collection(bmc, sys, "Storage").await?;
    let mut drives = Vec::new();
    let mut controllers = Vec::new();
    let read = try_join_all(stores.iter().enumerate().map(|(g, (_, s))| async move {
        let mut ctl: Vec<Map<String, Value>> = match get(s, "StorageControllers") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|c| {
                    pick(
                        c,
                        &[
                            "MemberId",
                            "Name",
                            "Manufacturer",
                            "Model",
                            "PartNumber",
                            "SerialNumber",
                            "FirmwareVersion",
                        ],
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut n = Vec::new();
        if ctl.is_empty() && !link(s, "Controllers").is_empty() {
            let (c, cn) = collection(bmc, s, "Controllers").await?;
            n.extend(cn);
            ctl = c
                .iter()
                .map(|(_, c)| {
                    pick(
                        c,
                        &[
                            "Id",
                            "Name",
                            "Manufacturer",
                            "Model",
                            "PartNumber",
                            "SerialNumber",
                            "FirmwareVersion",
                        ],
                    )
                })
                .collect();
        }
        let (d, dn) = read_all(bmc, list(get(s, "Drives")), Vec::new()).await?;
        n.extend(dn);
        let parts: Vec<Part> = d
            .into_iter()
            .filter(|(_, v)| !absent(v))
            .map(|(p, v)| drive(p, &v, g))
            .collect();
        Ok::<_, Error>((parts, ctl, n))
    }))
    .await?;
    for (d, c, n) in read {
        drives.extend(d);
        controllers.extend(c);
        notes.extend(n);
    }
    Ok((drives, controllers, notes))
}

/// PCIe devices: the `PCIeDevices` collection (Redfish 2019.4 on) or the
/// older array of links, each with its functions (a `PCIeFunctions`
/// collection under the device, or the System's `PCIeFunctions` links).
async fn pcie_devices(bmc: &Bmc, sys: &Value) -> Result<(Vec<PcieDevice>, Vec<String>), Error> {
    let (devices, notes) = match get(sys, "PCIeDevices") {
        Some(Value::Array(a)) => {
            let paths = list(Some(&Value::Array(a.clone())));
            read_all(bmc, paths, Vec::new()).await?
        }
        Some(_) => collection(bmc, sys, "PCIeDevices").await?,
        None => (Vec::new(), Vec::new()),
    };
    let mut notes = notes;
    let read = try_join_all(devices.into_iter().map(|(p, d)| async move {
        let f = match at(&d, &["Links", "PCIeFunctions"]) {
            Some(Value::Array(_)) => {
                read_all(bmc, list(at(&d, &["Links", "PCIeFunctions"])), Vec::new()).await?
            }
            _ => collection(bmc, &d, "PCIeFunctions").await?,
        };
        let dev = PcieDevice {
            path: p,
            info: pick(
                &d,
                &[
                    "Id",
                    "Name",
                    "Manufacturer",
                    "Model",
                    "PartNumber",
                    "SerialNumber",
                    "DeviceType",
                ],
            ),
            functions: f
                .0
                .iter()
                .map(|(_, v)| {
                    pick(
                        v,
                        &["Id", "FunctionType", "DeviceClass", "VendorId", "DeviceId"],
                    )
                })
                .collect(),
        };
        Ok::<_, Error>((dev, f.1))
    }))
    .await?;
    let mut out = Vec::new();
    for (d, n) in read {
        out.push(d);
        notes.extend(n);
    }
    Ok((out, notes))
}

/// Reads a Chassis' power supplies: `PowerSubsystem/PowerSupplies`
/// (Redfish 2020.4 on) or the legacy `Power` resource's inline array.
pub async fn chassis(bmc: &Bmc, ch: &Value) -> Result<ChassisHardware, Error> {
    let mut hw = ChassisHardware::default();
    let sub = link(ch, "PowerSubsystem");
    if !sub.is_empty()
        && let Some(s) = tolerant(bmc, sub, &mut hw.notes).await?
    {
        let (ps, n) = collection(bmc, &s, "PowerSupplies").await?;
        hw.notes.extend(n);
        hw.power_supplies = ps
            .into_iter()
            .filter(|(_, v)| !absent(v))
            .map(|(p, v)| power_supply(p, &v))
            .collect();
        return Ok(hw);
    }
    let power = link(ch, "Power");
    if let Some(p) = tolerant(bmc, power, &mut hw.notes).await?
        && let Some(Value::Array(list)) = get(&p, "PowerSupplies")
    {
        hw.power_supplies = list
            .iter()
            .enumerate()
            .filter(|(_, v)| !absent(v))
            .map(|(k, v)| {
                let path = match v.get("@odata.id").and_then(Value::as_str) {
                    Some(id) => clean(id),
                    None => format!("{}#/PowerSupplies/{k}", clean(power)),
                };
                power_supply(path, v)
            })
            .collect();
    }
    Ok(hw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gpus_are_accelerators_and_fields_default() {
        let cpu = processor(
            "/p/1".into(),
            &json!({"Id": "CPU1", "ProcessorType": "CPU", "Manufacturer": "AMD"}),
        );
        assert_eq!(cpu.kind, PartKind::Processor);
        assert_eq!(cpu.fru["Manufacturer"], "AMD");
        assert_eq!(cpu.fru["SerialNumber"], "");
        let gpu = processor(
            "/p/2".into(),
            &json!({"Id": "GPU1", "ProcessorType": "GPU"}),
        );
        assert_eq!(gpu.kind, PartKind::Accelerator);
        assert!(absent(&json!({"Status": {"State": "Absent"}})));
        assert!(!absent(&json!({"Status": null})));
    }
}
