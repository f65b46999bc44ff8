//! Reading a BMC's inventory: Systems (and Systems linked from Chassis),
//! Chassis, Managers and their Ethernet interfaces, each System's and
//! Chassis' field-replaceable units (`hardware`), and which of the
//! services SMD records (AccountService, SessionService, ...) it offers.
//!
//! A crawl is all or nothing: any request that fails (after its retries)
//! fails the crawl, so a BMC that stops answering half-way never yields half
//! an inventory. Only `404` on a member is read as "not there"; the
//! hardware units are read more leniently (see `hardware`).

use futures_util::future::try_join_all;
use serde_json::Value;

use super::client::{Bmc, ROOT};
use super::error::{Error, ErrorKind};
use super::hardware::{self, ChassisHardware, SystemHardware};
use super::json::{self, at, clean, get, link, members, number, str_of, strings};

/// Everything a crawl learnt about one BMC.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Crawl {
    pub redfish_version: String,
    pub uuid: String,
    pub systems: Vec<SystemInfo>,
    pub managers: Vec<ManagerInfo>,
    pub chassis: Vec<ChassisInfo>,
    /// The services the service root links, by type (SMD's
    /// ServiceEndpoints); a BMC without them has none.
    pub services: Vec<ServiceLink>,
}

/// A Redfish service the service root links.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceLink {
    /// `AccountService`, `SessionService`, ...
    pub kind: String,
    pub path: String,
    /// The service's own document (its `@odata` members dropped); `Null`
    /// when the BMC did not show it to this account.
    pub info: Value,
}

/// The services upstream SMD records for an endpoint.
pub const SERVICES: [&str; 5] = [
    "AccountService",
    "SessionService",
    "EventService",
    "TaskService",
    "UpdateService",
];

/// A reset action: where to POST and which `ResetType`s it takes (empty:
/// the BMC did not say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResetInfo {
    pub target: String,
    pub allowed: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nic {
    pub path: String,
    /// As the BMC wrote it.
    pub mac: String,
    pub ipv4: Vec<String>,
    pub description: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemInfo {
    pub path: String,
    pub uuid: String,
    pub name: String,
    pub system_type: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub sku: String,
    pub bios_version: String,
    pub power_state: String,
    pub processor_count: Option<f64>,
    pub processor_model: String,
    pub memory_gib: Option<f64>,
    pub reset: Option<ResetInfo>,
    pub chassis: Vec<String>,
    pub managers: Vec<String>,
    pub nics: Vec<Nic>,
    /// The system's `SerialConsole` block as the BMC wrote it (see
    /// `redfish::console`).
    pub serial_console: Value,
    /// Processors, Memory, Drives, PCIe devices (see `hardware`).
    pub hardware: SystemHardware,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagerInfo {
    pub path: String,
    pub uuid: String,
    pub name: String,
    pub manager_type: String,
    pub firmware_version: String,
    pub model: String,
    pub serial_console: Value,
    pub command_shell: Value,
    pub reset: Option<ResetInfo>,
    pub nics: Vec<Nic>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChassisInfo {
    pub path: String,
    pub chassis_type: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub sku: String,
    pub asset_tag: String,
    pub part_number: String,
    pub name: String,
    pub power_state: String,
    /// `Status.State` and `Status.Health` as the BMC wrote them.
    pub state: String,
    pub health: String,
    pub reset: Option<ResetInfo>,
    pub systems: Vec<String>,
    /// Power supplies (see `hardware`).
    pub hardware: ChassisHardware,
}

/// A GET where `404` means "absent".
async fn get_opt(bmc: &Bmc, path: &str) -> Result<Option<Value>, Error> {
    if path.is_empty() {
        return Ok(None);
    }
    match bmc.get(path).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if matches!(e.kind, ErrorKind::Status(404, _)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Crawls the BMC (logged in already). Chassis, Systems and Managers are
/// read side by side: with a slow BMC the crawl takes as long as its deepest
/// path (member, its NIC collection, a NIC), not the sum of all of them.
pub async fn crawl(bmc: &Bmc) -> Result<Crawl, Error> {
    // Some BMCs show a bare root to anonymous callers: reuse the login's
    // copy only if it links the Systems.
    let root = match bmc.cached_root().await {
        Some(r) if !link(&r, "Systems").is_empty() => r,
        _ => bmc.get(ROOT).await?,
    };
    let (systems, managers, chassis) = futures_util::try_join!(
        get_opt(bmc, link(&root, "Systems")),
        get_opt(bmc, link(&root, "Managers")),
        get_opt(bmc, link(&root, "Chassis")),
    )?;
    let member_paths = |c: &Option<Value>| c.as_ref().map(members).unwrap_or_default();
    let listed: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for p in member_paths(&systems) {
            let p = clean(&p);
            if !v.contains(&p) {
                v.push(p);
            }
        }
        v
    };
    let chassis_paths = member_paths(&chassis);
    let manager_paths = member_paths(&managers);
    let (chassis, fetched, managers) = futures_util::try_join!(
        try_join_all(chassis_paths.into_iter().map(|p| async move {
            let Some(v) = get_opt(bmc, &p).await? else {
                return Ok::<_, Error>(None);
            };
            let mut info = chassis_info(&p, &v);
            (info.hardware, info.reset) = futures_util::try_join!(
                hardware::chassis(bmc, &v),
                reset_info(bmc, &v, "#Chassis.Reset")
            )?;
            Ok(Some(info))
        })),
        try_join_all(listed.iter().map(|p| system(bmc, p))),
        try_join_all(manager_paths.iter().map(|p| manager(bmc, p))),
    )?;
    let chassis: Vec<ChassisInfo> = chassis.into_iter().flatten().collect();
    // Systems only a Chassis names come after those listed under /Systems,
    // which win on a duplicate UUID.
    let mut only_linked: Vec<String> = Vec::new();
    for p in chassis.iter().flat_map(|c| c.systems.iter()) {
        let p = clean(p);
        if !listed.contains(&p) && !only_linked.contains(&p) {
            only_linked.push(p);
        }
    }
    let linked = try_join_all(only_linked.iter().map(|p| system(bmc, p))).await?;
    let mut systems: Vec<SystemInfo> = Vec::new();
    for s in fetched.into_iter().chain(linked).flatten() {
        let dup =
            !s.uuid.is_empty() && systems.iter().any(|o| o.uuid.eq_ignore_ascii_case(&s.uuid));
        if !dup {
            systems.push(s);
        }
    }
    // Services the root links; a BMC without them has none. Their documents
    // follow the crawl's rules (a failure fails the crawl), except that a
    // service hidden from this account (401/403) is kept without them.
    let links: Vec<(String, String)> = SERVICES
        .iter()
        .map(|k| ((*k).to_string(), clean(link(&root, k))))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let services = try_join_all(links.into_iter().map(|(kind, path)| async move {
        let info = match get_opt(bmc, &path).await {
            Ok(Some(Value::Object(mut doc))) => {
                doc.retain(|k, _| !k.starts_with("@odata") || k == "@odata.type");
                Value::Object(doc)
            }
            Ok(_) => Value::Null,
            Err(e) if matches!(e.kind, ErrorKind::Auth(..)) => Value::Null,
            Err(e) => return Err(e),
        };
        Ok::<_, Error>(ServiceLink { kind, path, info })
    }))
    .await?;
    Ok(Crawl {
        redfish_version: str_of(&root, "RedfishVersion").to_string(),
        uuid: str_of(&root, "UUID").to_string(),
        services,
        systems,
        managers: managers.into_iter().flatten().collect(),
        chassis,
    })
}

fn chassis_info(path: &str, v: &Value) -> ChassisInfo {
    ChassisInfo {
        path: clean(path),
        chassis_type: str_of(v, "ChassisType").into(),
        manufacturer: str_of(v, "Manufacturer").into(),
        model: str_of(v, "Model").into(),
        serial: str_of(v, "SerialNumber").into(),
        sku: str_of(v, "SKU").into(),
        asset_tag: str_of(v, "AssetTag").into(),
        part_number: str_of(v, "PartNumber").into(),
        name: str_of(v, "Name").into(),
        power_state: str_of(v, "PowerState").into(),
        state: at(v, &["Status", "State"])
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        health: at(v, &["Status", "Health"])
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        reset: None,
        systems: json::list(at(v, &["Links", "ComputerSystems"])),
        hardware: ChassisHardware::default(),
    }
}

/// The reset action of a resource, reading its ActionInfo when the
/// allowable values are not inline.
async fn reset_info(bmc: &Bmc, v: &Value, action: &str) -> Result<Option<ResetInfo>, Error> {
    let Some(a) = at(v, &["Actions", action]) else {
        return Ok(None);
    };
    let mut info = ResetInfo {
        target: clean(str_of(a, "target")),
        allowed: strings(a, "ResetType@Redfish.AllowableValues"),
    };
    let action_info = str_of(a, "@Redfish.ActionInfo");
    if info.allowed.is_empty()
        && !action_info.is_empty()
        && let Some(ai) = get_opt(bmc, action_info).await?
        && let Some(Value::Array(params)) = get(&ai, "Parameters")
        && let Some(p) = params.iter().find(|p| str_of(p, "Name") == "ResetType")
    {
        info.allowed = strings(p, "AllowableValues");
    }
    Ok(Some(info))
}

async fn nics(bmc: &Bmc, owner: &Value) -> Result<Vec<Nic>, Error> {
    let Some(col) = get_opt(bmc, link(owner, "EthernetInterfaces")).await? else {
        return Ok(Vec::new());
    };
    let found = try_join_all(
        members(&col)
            .into_iter()
            .map(|p| async move { Ok::<_, Error>(get_opt(bmc, &p).await?.map(|v| nic(&p, &v))) }),
    )
    .await?;
    Ok(found.into_iter().flatten().collect())
}

fn nic(path: &str, v: &Value) -> Nic {
    let mut mac = str_of(v, "MACAddress");
    if mac.is_empty() {
        mac = str_of(v, "PermanentMACAddress");
    }
    let ipv4 = match get(v, "IPv4Addresses") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| str_of(x, "Address"))
            .filter(|s| !s.is_empty() && *s != "0.0.0.0")
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let mut description = str_of(v, "Description");
    if description.is_empty() {
        description = str_of(v, "Name");
    }
    Nic {
        path: clean(path),
        mac: mac.to_string(),
        ipv4,
        description: description.to_string(),
    }
}

async fn system(bmc: &Bmc, path: &str) -> Result<Option<SystemInfo>, Error> {
    let Some(v) = get_opt(bmc, path).await? else {
        return Ok(None);
    };
    let (reset, nics, hardware) = futures_util::try_join!(
        reset_info(bmc, &v, "#ComputerSystem.Reset"),
        nics(bmc, &v),
        hardware::system(bmc, &v)
    )?;
    Ok(Some(SystemInfo {
        path: clean(path),
        uuid: str_of(&v, "UUID").into(),
        name: str_of(&v, "Name").into(),
        system_type: str_of(&v, "SystemType").into(),
        manufacturer: str_of(&v, "Manufacturer").into(),
        model: str_of(&v, "Model").into(),
        serial: str_of(&v, "SerialNumber").into(),
        sku: str_of(&v, "SKU").into(),
        bios_version: str_of(&v, "BiosVersion").into(),
        power_state: str_of(&v, "PowerState").into(),
        processor_count: number(&v, &["ProcessorSummary", "Count"]),
        processor_model: at(&v, &["ProcessorSummary", "Model"])
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        memory_gib: number(&v, &["MemorySummary", "TotalSystemMemoryGiB"]),
        reset,
        chassis: json::list(at(&v, &["Links", "Chassis"])),
        managers: json::list(at(&v, &["Links", "ManagedBy"])),
        nics,
        serial_console: get(&v, "SerialConsole").cloned().unwrap_or(Value::Null),
        hardware,
    }))
}

async fn manager(bmc: &Bmc, path: &str) -> Result<Option<ManagerInfo>, Error> {
    let Some(v) = get_opt(bmc, path).await? else {
        return Ok(None);
    };
    let (reset, nics) =
        futures_util::try_join!(reset_info(bmc, &v, "#Manager.Reset"), nics(bmc, &v))?;
    Ok(Some(ManagerInfo {
        path: clean(path),
        uuid: str_of(&v, "UUID").into(),
        name: str_of(&v, "Name").into(),
        manager_type: str_of(&v, "ManagerType").into(),
        firmware_version: str_of(&v, "FirmwareVersion").into(),
        model: str_of(&v, "Model").into(),
        serial_console: get(&v, "SerialConsole").cloned().unwrap_or(Value::Null),
        command_shell: get(&v, "CommandShell").cloned().unwrap_or(Value::Null),
        reset,
        nics,
    }))
}

/// A System's power state and reset action, read live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemState {
    /// `On`, `Off`, `PoweringOn`, `PoweringOff`, or `""` if not reported.
    pub power_state: String,
    pub reset: Option<ResetInfo>,
}

/// Reads one System's `PowerState` (and its reset action).
pub async fn system_state(bmc: &Bmc, path: &str) -> Result<SystemState, Error> {
    let v = bmc.get(path).await?;
    Ok(SystemState {
        power_state: str_of(&v, "PowerState").to_string(),
        reset: reset_info(bmc, &v, "#ComputerSystem.Reset").await?,
    })
}
