//! A BMC's UpdateService: its FirmwareInventory, starting an update
//! (`SimpleUpdate` with an `ImageURI` the BMC fetches, or a multipart push
//! to `MultipartHttpPushUri` where SimpleUpdate is absent) and reading the
//! task monitor the BMC hands back (`Location`, else the Task in the body).

use futures_util::future::try_join_all;
use serde_json::{Value, json};

use super::client::{Bmc, ROOT};
use super::error::{Error, ErrorKind};
use super::json::{at, clean, get, link, members, str_of};

/// One FirmwareInventory member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firmware {
    pub path: String,
    pub id: String,
    pub name: String,
    pub version: String,
    pub updateable: bool,
    pub software_id: String,
}

/// How a BMC takes an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateService {
    /// The SimpleUpdate action's target, if it has one.
    pub simple_update: Option<String>,
    /// `MultipartHttpPushUri`, if it has one.
    pub multipart: Option<String>,
}

/// A task's progress as its monitor shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskProgress {
    /// Redfish `TaskState`: New, Starting, Running, Pending, Completed,
    /// Exception, Killed, Cancelled, ...
    pub state: String,
    pub percent: Option<u64>,
    pub messages: Vec<String>,
}

async fn service(bmc: &Bmc) -> Result<Option<Value>, Error> {
    let root = match bmc.cached_root().await {
        Some(r) if !link(&r, "UpdateService").is_empty() => r,
        _ => bmc.get(ROOT).await?,
    };
    let path = clean(link(&root, "UpdateService"));
    if path.is_empty() {
        return Ok(None);
    }
    match bmc.get(&path).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if matches!(e.kind, ErrorKind::Status(404, _)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The FirmwareInventory; empty when the BMC has no UpdateService.
pub async fn inventory(bmc: &Bmc) -> Result<Vec<Firmware>, Error> {
    let Some(svc) = service(bmc).await? else {
        return Ok(Vec::new());
    };
    let col = clean(link(&svc, "FirmwareInventory"));
    if col.is_empty() {
        return Ok(Vec::new());
    }
    let col = bmc.get(&col).await?;
    try_join_all(members(&col).into_iter().map(|p| async move {
        let v = bmc.get(&p).await?;
        Ok::<_, Error>(Firmware {
            path: clean(&p),
            id: str_of(&v, "Id").into(),
            name: str_of(&v, "Name").into(),
            version: str_of(&v, "Version").into(),
            updateable: get(&v, "Updateable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            software_id: str_of(&v, "SoftwareId").into(),
        })
    }))
    .await
}

/// How the BMC takes images.
pub async fn update_service(bmc: &Bmc) -> Result<UpdateService, Error> {
    let Some(svc) = service(bmc).await? else {
        return Ok(UpdateService::default());
    };
    let simple = at(&svc, &["Actions", "#UpdateService.SimpleUpdate"])
        .map(|a| clean(str_of(a, "target")))
        .filter(|t| !t.is_empty());
    let multipart = Some(clean(str_of(&svc, "MultipartHttpPushUri"))).filter(|p| !p.is_empty());
    Ok(UpdateService {
        simple_update: simple,
        multipart,
    })
}

/// The task monitor the BMC named (`Location`, else a Task body), if any.
fn monitor(body: &Value, location: Option<String>) -> Option<String> {
    if let Some(l) = location.filter(|l| !l.trim().is_empty()) {
        return Some(clean(&l));
    }
    let id = str_of(body, "@odata.id");
    (!id.is_empty() && get(body, "TaskState").is_some()).then(|| clean(id))
}

/// `SimpleUpdate`; returns the task monitor's path, `None` when the BMC
/// accepted the update without naming one.
pub async fn simple_update(
    bmc: &Bmc,
    target: &str,
    image_uri: &str,
    targets: &[String],
) -> Result<Option<String>, Error> {
    let mut body = json!({"ImageURI": image_uri});
    if image_uri.starts_with("http://") {
        body["TransferProtocol"] = json!("HTTP");
    }
    if !targets.is_empty() {
        body["Targets"] = json!(targets);
    }
    let (v, location) = bmc.post_located_once(target, &body).await?;
    Ok(monitor(&v, location))
}

/// A multipart push; returns the task monitor's path, if the BMC named one.
pub async fn multipart_update(
    bmc: &Bmc,
    uri: &str,
    file_name: &str,
    image: bytes::Bytes,
    targets: &[String],
) -> Result<Option<String>, Error> {
    let params = json!({"Targets": targets, "@Redfish.OperationApplyTime": "Immediate"});
    let (v, location) = bmc.post_multipart(uri, &params, file_name, image).await?;
    Ok(monitor(&v, location))
}

/// Reads a task monitor (or Task).
pub async fn task_progress(bmc: &Bmc, monitor: &str) -> Result<TaskProgress, Error> {
    let v = bmc.get(monitor).await?;
    let messages = get(&v, "Messages")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .map(|x| str_of(x, "Message").to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Ok(TaskProgress {
        state: str_of(&v, "TaskState").to_string(),
        percent: get(&v, "PercentComplete").and_then(Value::as_u64),
        messages,
    })
}
