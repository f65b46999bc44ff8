//! The simulated BMCs' power limit and firmware update resources.
//!
//! Laid out as real servers lay them out: the chassis carries a power limit
//! both as a `Controls` member (`ControlType: Power`, `SetPoint`,
//! `AllowableMin`/`AllowableMax`) and in the legacy `Power` resource
//! (`PowerControl[0].PowerLimit.LimitInWatts`, with the range under `Oem`
//! and `PowerCapacityWatts`), two views of one limit. The UpdateService has
//! a `FirmwareInventory` (BMC, BIOS, a NIC that cannot be updated),
//! `SimpleUpdate` (the image is fetched from its `ImageURI`, as a BMC
//! would) and `MultipartHttpPushUri`; an update is a TaskService task whose
//! `PercentComplete` advances with time and which can be made to fail
//! half-way. The simulator records how many updates ran at once.
//!
//! Task state is derived from the clock when read, so nothing runs in the
//! background: a task's running interval is fixed when it starts, and the
//! most updates in flight is counted at each start (where it peaks).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{Resp, Shared, SimBmcs, collection, error, link, reply};

/// What the simulated power limits and firmware updates do.
#[derive(Debug, Clone)]
pub struct SimUpdates {
    /// How long an update runs once its image is in.
    pub duration: Duration,
    /// BMCs (indexes) whose updates fail half-way.
    pub fail: Vec<usize>,
    /// BMCs without `SimpleUpdate`: only multipart push.
    pub multipart_only: Vec<usize>,
    /// BMCs that take an update but give no task to follow: `204` with a
    /// `Location` that answers `404`, as a BMC that drops a task's monitor
    /// does. The update still runs and lands.
    pub no_task: Vec<usize>,
    /// BMCs whose UpdateService has no FirmwareInventory.
    pub no_inventory: Vec<usize>,
    /// BMCs whose chassis has no `Controls`: only the legacy `Power`.
    pub legacy_power_only: Vec<usize>,
    /// The range both power limit views advertise, in watts.
    pub limit_min: i64,
    pub limit_max: i64,
}

impl Default for SimUpdates {
    fn default() -> Self {
        SimUpdates {
            duration: Duration::from_secs(2),
            fail: Vec::new(),
            multipart_only: Vec::new(),
            no_task: Vec::new(),
            no_inventory: Vec::new(),
            legacy_power_only: Vec::new(),
            limit_min: 350,
            limit_max: 850,
        }
    }
}

struct Task {
    id: u64,
    start: Instant,
    duration: Duration,
    fail: bool,
    target: &'static str,
    version: String,
    applied: bool,
    /// Set when the image could not be had: the task is over at once.
    refused: Option<String>,
}

impl Task {
    fn end(&self) -> Instant {
        if self.refused.is_some() {
            self.start
        } else if self.fail {
            self.start + self.duration / 2
        } else {
            self.start + self.duration
        }
    }
}

struct Fw {
    limit: Option<i64>,
    bmc_version: String,
    bios_version: String,
    tasks: Vec<Task>,
}

/// Per-BMC state of these resources, and the counters tests read.
pub(super) struct State {
    bmcs: Vec<Mutex<Fw>>,
    next_task: AtomicU64,
    max_in_flight: AtomicUsize,
    started: AtomicU64,
    /// Fetches images; made on first use (a `Transport` needs the crypto
    /// provider, which a caller may install after starting the sims).
    http: std::sync::OnceLock<Option<reqwest::Client>>,
}

impl State {
    pub(super) fn new(count: usize) -> State {
        State {
            bmcs: (0..count)
                .map(|_| {
                    Mutex::new(Fw {
                        limit: None,
                        bmc_version: "sim-1.0".into(),
                        bios_version: "1.0".into(),
                        tasks: Vec::new(),
                    })
                })
                .collect(),
            next_task: AtomicU64::new(1),
            max_in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            http: std::sync::OnceLock::new(),
        }
    }
}

impl SimBmcs {
    /// The most firmware updates any moment saw running at once, over all
    /// BMCs.
    pub fn max_concurrent_updates(&self) -> usize {
        self.shared.updates.max_in_flight.load(Ordering::Relaxed)
    }

    /// Firmware updates started, over all BMCs.
    pub fn updates_started(&self) -> u64 {
        self.shared.updates.started.load(Ordering::Relaxed)
    }

    /// The BMC firmware version a BMC reports now.
    pub fn bmc_version(&self, bmc: usize) -> String {
        let Some(m) = self.shared.updates.bmcs.get(bmc) else {
            return String::new();
        };
        let Ok(mut fw) = m.lock() else {
            return String::new();
        };
        settle(&mut fw, Instant::now());
        fw.bmc_version.clone()
    }

    /// The power limit a BMC enforces (`None`: no limit).
    pub fn power_limit(&self, bmc: usize) -> Option<i64> {
        self.shared
            .updates
            .bmcs
            .get(bmc)
            .and_then(|m| m.lock().ok().and_then(|f| f.limit))
    }
}

/// Whether a path is one of these resources.
pub(super) fn serves(path: &str) -> bool {
    path.starts_with("/redfish/v1/UpdateService")
        || path.starts_with("/redfish/v1/TaskService")
        || path.starts_with("/redfish/v1/Chassis/1/Controls")
        || path == "/redfish/v1/Chassis/1/Power"
}

/// Applies finished updates.
fn settle(fw: &mut Fw, now: Instant) {
    let mut done: Vec<(&'static str, String)> = Vec::new();
    for t in &mut fw.tasks {
        if !t.applied && !t.fail && t.refused.is_none() && now >= t.end() {
            t.applied = true;
            done.push((t.target, t.version.clone()));
        }
    }
    for (target, version) in done {
        if target == "BIOS" {
            fw.bios_version = version;
        } else {
            fw.bmc_version = version;
        }
    }
}

fn task_json(t: &Task, now: Instant) -> Value {
    let path = format!("/redfish/v1/TaskService/Tasks/{}", t.id);
    let (state, status, percent, messages) = if let Some(why) = &t.refused {
        (
            "Exception",
            "Critical",
            0,
            vec![json!({"MessageId": "Update.1.0.TransferFailed", "Message": why})],
        )
    } else if now >= t.end() && t.fail {
        (
            "Exception",
            "Critical",
            50,
            vec![json!({"MessageId": "Update.1.0.ApplyFailed",
                "Message": format!("Flash write of {} failed at 50%", t.target)})],
        )
    } else if now >= t.end() {
        (
            "Completed",
            "OK",
            100,
            vec![json!({"MessageId": "Update.1.0.UpdateSuccessful",
                "Message": format!("{} updated to {}", t.target, t.version)})],
        )
    } else {
        let elapsed = now.saturating_duration_since(t.start).as_secs_f64();
        let pct = (elapsed / t.duration.as_secs_f64().max(0.001) * 100.0).min(99.0) as u64;
        (
            "Running",
            "OK",
            pct,
            vec![json!({"MessageId": "Update.1.0.ApplyingOnComponent",
                "Message": format!("Applying image to {}", t.target)})],
        )
    };
    json!({
        "@odata.id": path,
        "@odata.type": "#Task.v1_4_3.Task",
        "Id": t.id.to_string(),
        "Name": format!("Firmware update of {}", t.target),
        "TaskState": state,
        "TaskStatus": status,
        "PercentComplete": percent,
        "Messages": messages,
    })
}

async fn body_bytes(req: Request<Incoming>) -> Vec<u8> {
    match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    }
}

/// GET, PATCH and POST on these resources.
pub(super) async fn handle(
    shared: &Shared,
    index: usize,
    method: Method,
    path: &str,
    req: Request<Incoming>,
) -> Resp {
    let cfg = &shared.config.updates;
    let Some(m) = shared.updates.bmcs.get(index) else {
        return error(StatusCode::NOT_FOUND, "no such BMC");
    };
    let controls = !cfg.legacy_power_only.contains(&index);
    let simple = !cfg.multipart_only.contains(&index);
    let now = Instant::now();
    match (method.clone(), path) {
        (Method::GET, _) => {
            let Ok(mut fw) = m.lock() else {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "state lost");
            };
            settle(&mut fw, now);
            let mut found = get(cfg, &fw, path, controls, simple, now);
            if cfg.no_inventory.contains(&index) {
                if path.starts_with("/redfish/v1/UpdateService/FirmwareInventory") {
                    found = None;
                } else if let Some(Value::Object(svc)) = found.as_mut()
                    && path == "/redfish/v1/UpdateService"
                {
                    svc.remove("FirmwareInventory");
                }
            }
            // With FRU trees on, the legacy Power resource also lists the
            // power supplies (and is absent when that collection is withheld).
            if path == "/redfish/v1/Chassis/1/Power"
                && let Some(h) = &shared.config.hardware
            {
                let parts = ["Chassis", "1", "Power"];
                found = match (
                    found,
                    super::super::sim_hardware::resource(
                        h,
                        &shared.hardware,
                        index,
                        path,
                        &parts,
                        |_| None,
                    ),
                ) {
                    (Some(mut v), Some(hw)) => {
                        v["PowerSupplies"] = hw["PowerSupplies"].clone();
                        v["@odata.type"] = hw["@odata.type"].clone();
                        Some(v)
                    }
                    _ => None,
                };
            }
            match found {
                Some(v) => reply(StatusCode::OK, Some(v)),
                None => error(StatusCode::NOT_FOUND, "resource not found"),
            }
        }
        (Method::PATCH, "/redfish/v1/Chassis/1/Controls/NodePowerLimit") if controls => {
            let body: Value = serde_json::from_slice(&body_bytes(req).await).unwrap_or(Value::Null);
            let disabled = body.get("ControlMode").and_then(Value::as_str) == Some("Disabled");
            let value = body.get("SetPoint").and_then(Value::as_i64);
            set_limit(cfg, m, if disabled { None } else { value }, disabled)
        }
        (Method::PATCH, "/redfish/v1/Chassis/1/Power") => {
            let body: Value = serde_json::from_slice(&body_bytes(req).await).unwrap_or(Value::Null);
            let limit = body
                .get("PowerControl")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|c| c.get("PowerLimit"));
            match limit.and_then(|l| l.get("LimitInWatts")) {
                Some(Value::Null) => set_limit(cfg, m, None, true),
                Some(v) => set_limit(cfg, m, v.as_i64(), false),
                None => error(
                    StatusCode::BAD_REQUEST,
                    "PowerControl[0].PowerLimit missing",
                ),
            }
        }
        (Method::POST, "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate")
            if simple =>
        {
            let body: Value = serde_json::from_slice(&body_bytes(req).await).unwrap_or(Value::Null);
            let uri = body
                .get("ImageURI")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if uri.is_empty() {
                return error(StatusCode::BAD_REQUEST, "ImageURI is required");
            }
            let target = target_of(&body);
            let http = shared.updates.http.get_or_init(|| {
                crate::redfish::Transport::new(crate::redfish::ClientOptions::default())
                    .ok()
                    .map(|t| t.http.clone())
            });
            let Some(http) = http else {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "no HTTP client");
            };
            let refused = match http.get(&uri).send().await {
                Ok(r) if r.status().is_success() => match r.bytes().await {
                    Ok(_) => None,
                    Err(e) => Some(format!("cannot read image {uri}: {e}")),
                },
                Ok(r) => Some(format!("image {uri}: HTTP {}", r.status().as_u16())),
                Err(e) => Some(format!("cannot fetch image {uri}: {e}")),
            };
            start(shared, index, m, &uri, target, refused)
        }
        (Method::POST, "/redfish/v1/UpdateService/upload") => {
            let body = body_bytes(req).await;
            let text = String::from_utf8_lossy(&body);
            let name = text
                .split("filename=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string();
            if name.is_empty() {
                return error(StatusCode::BAD_REQUEST, "no UpdateFile part");
            }
            let params = text
                .split("name=\"UpdateParameters\"")
                .nth(1)
                .and_then(|r| r.split_once("\r\n\r\n"))
                .and_then(|(_, r)| r.split("\r\n--").next())
                .and_then(|j| serde_json::from_str::<Value>(j).ok())
                .unwrap_or(Value::Null);
            start(shared, index, m, &name, target_of(&params), None)
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

fn target_of(body: &Value) -> &'static str {
    let bios = body
        .get("Targets")
        .and_then(Value::as_array)
        .is_some_and(|t| {
            t.iter()
                .any(|x| x.as_str().is_some_and(|s| s.ends_with("/BIOS")))
        });
    if bios { "BIOS" } else { "BMC" }
}

fn set_limit(cfg: &SimUpdates, m: &Mutex<Fw>, value: Option<i64>, disable: bool) -> Resp {
    if !disable {
        match value {
            Some(v) if v >= cfg.limit_min && v <= cfg.limit_max => {}
            Some(v) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    Some(json!({"error": {"code": "Base.1.8.PropertyValueOutOfRange",
                        "message": format!("The value {v} is out of range {}..{}", cfg.limit_min, cfg.limit_max),
                        "@Message.ExtendedInfo": [{"MessageId": "Base.1.8.PropertyValueOutOfRange",
                            "Message": format!("The value {v} for the limit is not in the supported range {}..{}.", cfg.limit_min, cfg.limit_max)}]}})),
                );
            }
            None => return error(StatusCode::BAD_REQUEST, "the limit must be an integer"),
        }
    }
    if let Ok(mut fw) = m.lock() {
        fw.limit = value;
    }
    reply(StatusCode::NO_CONTENT, None)
}

fn start(
    shared: &Shared,
    index: usize,
    m: &Mutex<Fw>,
    image: &str,
    target: &'static str,
    refused: Option<String>,
) -> Resp {
    let now = Instant::now();
    let cfg = &shared.config.updates;
    // Running updates over every BMC, this one included.
    let mut running = 1;
    for (k, other) in shared.updates.bmcs.iter().enumerate() {
        if k == index {
            continue;
        }
        if let Ok(fw) = other.lock() {
            running += fw.tasks.iter().filter(|t| t.end() > now).count();
        }
    }
    let Ok(mut fw) = m.lock() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "state lost");
    };
    if fw.tasks.iter().any(|t| t.end() > now) {
        return error(StatusCode::CONFLICT, "an update is already running");
    }
    if refused.is_none() {
        shared
            .updates
            .max_in_flight
            .fetch_max(running, Ordering::Relaxed);
        shared.updates.started.fetch_add(1, Ordering::Relaxed);
    }
    let file = image.rsplit('/').next().unwrap_or(image);
    let version = file
        .rsplit_once('.')
        .map_or(file, |(stem, _)| stem)
        .to_string();
    let id = shared.updates.next_task.fetch_add(1, Ordering::Relaxed);
    let task = Task {
        id,
        start: now,
        duration: cfg.duration,
        fail: cfg.fail.contains(&index),
        target,
        version,
        applied: false,
        refused,
    };
    let body = task_json(&task, now);
    fw.tasks.push(task);
    if cfg.no_task.contains(&index) {
        return Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header(
                "location",
                format!("/redfish/v1/TaskService/Tasks/gone-{id}"),
            )
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap_or_else(|_| reply(StatusCode::NO_CONTENT, None));
    }
    let location = format!("/redfish/v1/TaskService/Tasks/{id}");
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header("content-type", "application/json")
        .header("location", location)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap_or_else(|_| reply(StatusCode::ACCEPTED, None))
}

fn get(
    cfg: &SimUpdates,
    fw: &Fw,
    path: &str,
    controls: bool,
    simple: bool,
    now: Instant,
) -> Option<Value> {
    let inv = "/redfish/v1/UpdateService/FirmwareInventory";
    let range = |v: &mut Value| {
        v["AllowableMin"] = json!(cfg.limit_min);
        v["AllowableMax"] = json!(cfg.limit_max);
        v["SettingRangeMin"] = json!(cfg.limit_min);
        v["SettingRangeMax"] = json!(cfg.limit_max);
    };
    match path {
        "/redfish/v1/UpdateService" => {
            let mut v = json!({
                "@odata.id": path,
                "@odata.type": "#UpdateService.v1_11_0.UpdateService",
                "Id": "UpdateService",
                "Name": "Update Service",
                "ServiceEnabled": true,
                "FirmwareInventory": link(inv),
                "MultipartHttpPushUri": "/redfish/v1/UpdateService/upload",
                "Actions": {},
            });
            if simple {
                v["Actions"]["#UpdateService.SimpleUpdate"] = json!({
                    "target": "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
                    "TransferProtocol@Redfish.AllowableValues": ["HTTP", "HTTPS"],
                });
            }
            Some(v)
        }
        "/redfish/v1/UpdateService/FirmwareInventory" => Some(collection(
            inv,
            ["BMC", "BIOS", "NIC"]
                .iter()
                .map(|m| format!("{inv}/{m}"))
                .collect(),
        )),
        p if p.starts_with(inv) => {
            let id = p.strip_prefix(inv)?.strip_prefix('/')?;
            let (name, version, updateable, software) = match id {
                "BMC" => ("BMC Firmware", fw.bmc_version.clone(), true, "sim-bmc"),
                "BIOS" => ("System BIOS", fw.bios_version.clone(), true, "sim-bios"),
                "NIC" => ("Onboard NIC", "22.31.6".to_string(), false, "sim-nic"),
                _ => return None,
            };
            Some(json!({
                "@odata.id": p,
                "@odata.type": "#SoftwareInventory.v1_5_0.SoftwareInventory",
                "Id": id,
                "Name": name,
                "Version": version,
                "Updateable": updateable,
                "SoftwareId": software,
                "Status": {"State": "Enabled", "Health": "OK"},
            }))
        }
        "/redfish/v1/TaskService" => Some(json!({
            "@odata.id": path,
            "Id": "TaskService",
            "ServiceEnabled": true,
            "Tasks": link("/redfish/v1/TaskService/Tasks"),
        })),
        "/redfish/v1/TaskService/Tasks" => Some(collection(
            path,
            fw.tasks
                .iter()
                .map(|t| format!("{path}/{}", t.id))
                .collect(),
        )),
        p if p.starts_with("/redfish/v1/TaskService/Tasks/") => {
            let id: u64 = p.rsplit('/').next()?.parse().ok()?;
            fw.tasks
                .iter()
                .find(|t| t.id == id)
                .map(|t| task_json(t, now))
        }
        "/redfish/v1/Chassis/1/Controls" if controls => {
            Some(collection(path, vec![format!("{path}/NodePowerLimit")]))
        }
        "/redfish/v1/Chassis/1/Controls/NodePowerLimit" if controls => {
            let mut v = json!({
                "@odata.id": path,
                "@odata.type": "#Control.v1_3_0.Control",
                "Id": "NodePowerLimit",
                "Name": "Node Power Limit",
                "ControlType": "Power",
                "PhysicalContext": "Chassis",
                "SetPointUnits": "W",
                "ControlMode": if fw.limit.is_some() { "Automatic" } else { "Disabled" },
                "SetPoint": fw.limit.unwrap_or(0),
                "Status": {"State": "Enabled", "Health": "OK"},
            });
            range(&mut v);
            Some(v)
        }
        "/redfish/v1/Chassis/1/Power" => Some(json!({
            "@odata.id": path,
            "@odata.type": "#Power.v1_5_0.Power",
            "Id": "Power",
            "Name": "Power",
            "PowerControl": [{
                "@odata.id": "/redfish/v1/Chassis/1/Power#/PowerControl/0",
                "MemberId": "0",
                "Name": "System Power Control",
                "PowerConsumedWatts": 412,
                "PowerCapacityWatts": cfg.limit_max,
                "PowerLimit": {
                    "LimitInWatts": fw.limit,
                    "LimitException": "LogEventOnly",
                    "CorrectionInMs": 1000,
                },
                "Oem": {"OpenCHAMISim": {"PowerLimit": {"Min": cfg.limit_min, "Max": cfg.limit_max}}},
            }],
        })),
        _ => None,
    }
}
