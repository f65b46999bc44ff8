//! Firmware: each BMC's FirmwareInventory (read with discovery, kept in
//! the inventory) and staged updates across many BMCs.
//!
//! An update job names an artifact under `boot.artifacts_dir` and a set of
//! BMCs. At most `maxParallel` BMCs are updated at once (a flash can take a
//! BMC off the network for minutes; a cluster's worth at once is an
//! outage). Each BMC is sent `SimpleUpdate` with an `ImageURI` on the node
//! listener, at the address the appliance itself uses to reach that BMC
//! (`boot::base`, as a node is sent the address it reached us at), or,
//! where SimpleUpdate is absent, the image as a multipart push; then its
//! task monitor is read every second until the task ends or the job's
//! timeout passes. Each BMC ends `Completed`, `Exception` (with the BMC's
//! message), `TimedOut` or `Failed` (never started: no credentials, no
//! UpdateService, refused). A BMC that completed has its inventory re-read.
//! The update request is sent once, never retried: a BMC that answered
//! badly may have begun flashing.
//!
//! Not every BMC that accepts an update hands back a task that can be
//! followed: some answer `204` without one, some name a task monitor that
//! answers `404` (Redfish lets a service drop a monitor once its task
//! ended). (sushy-tools' emulator names a fixed sample task that always
//! reads `Completed`; its update is done before it answers, so that holds.)
//! An accepted request proves only that the BMC took it, so the result is
//! not guessed: the BMC's FirmwareInventory, read just before the update,
//! is read again every second, and the update counts as `Completed` when a
//! watched member's `Version` changes (the members the update targeted,
//! else the updateable ones), with a message saying so; `TimedOut` when
//! nothing changed by the timeout; and `Accepted` at once when the BMC has
//! no FirmwareInventory either, leaving the operator to confirm the version
//! on the BMC.
//!
//! Jobs live in memory (the BMCs hold the outcome; the inventory the new
//! versions), like discovery jobs.

pub mod plan;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::boot::base::NodeBase;
use crate::ca::secret::SecretBox;
use crate::discover::{credentials, targets as addr};
use crate::inventory::model::{BmcFirmware, FirmwareItem, RedfishEndpoint};
use crate::inventory::{DomainError, Snapshot, Store};
use crate::redfish::{self, Bmc, Credentials, Transport};
use plan::Delivery;

/// How often a task monitor is read.
const POLL: Duration = Duration::from_secs(1);
/// Jobs kept, the oldest finished dropped first.
const MAX_JOBS: usize = 100;

/// `POST /firmware/v1/updates`.
///
/// Keys are matched without regard to case (the API folds them).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct UpdateRequest {
    /// A file under `boot.artifacts_dir` (as served at `/artifacts/`).
    pub image: String,
    /// Node or BMC xnames; a node stands for its BMC.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Every member of this group (nodes or BMCs).
    #[serde(default)]
    pub group: Option<String>,
    /// BMCs updated at once; default 4.
    #[serde(rename = "maxparallel", alias = "maxParallel", default)]
    #[schemars(rename = "maxParallel")]
    pub max_parallel: Option<usize>,
    /// Seconds each BMC's update may take; default 1800.
    #[serde(rename = "timeoutsecs", alias = "timeoutSecs", default)]
    #[schemars(rename = "timeoutSecs")]
    pub timeout_secs: Option<u64>,
    /// FirmwareInventory members to update (paths or Ids); default: the
    /// BMC chooses (what the image is for).
    #[serde(default)]
    pub components: Vec<String>,
}

/// One BMC of a job.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BmcUpdate {
    pub xname: String,
    /// `Pending`, `Updating`, `Completed`, `Accepted` (taken, with nothing
    /// to confirm it by), `Exception`, `TimedOut`, `Failed`.
    pub status: String,
    /// `SimpleUpdate` or `MultipartHttpPush`, once started.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub method: String,
    /// The BMC's task monitor.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub task: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent_complete: Option<u64>,
    /// The BMC's latest message, or why the update did not start.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// An update job.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateJob {
    pub id: String,
    pub image: String,
    pub max_parallel: usize,
    pub timeout_secs: u64,
    /// `running` or `completed`.
    pub state: String,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// BMCs by result.
    pub counts: BTreeMap<String, usize>,
    pub bmcs: Vec<BmcUpdate>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The firmware service.
pub struct Firmware {
    store: Store,
    secrets: Arc<SecretBox>,
    transport: Transport,
    node_base: NodeBase,
    artifacts: PathBuf,
    jobs: Mutex<BTreeMap<String, UpdateJob>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// Reads a BMC's FirmwareInventory, or `None` (logged) when it will not
/// show it.
pub async fn read_inventory(bmc: &Bmc) -> Option<Vec<FirmwareItem>> {
    match redfish::firmware::inventory(bmc).await {
        Ok(items) => Some(
            items
                .into_iter()
                .map(|f| FirmwareItem {
                    id: f.id,
                    name: f.name,
                    version: f.version,
                    updateable: f.updateable,
                    software_id: f.software_id,
                    odata_id: f.path,
                })
                .collect(),
        ),
        Err(e) => {
            tracing::info!(bmc = %bmc.addr(), error = %e, "no firmware inventory");
            None
        }
    }
}

/// Records a BMC's FirmwareInventory.
pub async fn store_inventory(store: &Store, bmc: &str, items: Vec<FirmwareItem>) {
    let bmc = bmc.to_string();
    let r = store
        .write(move |t| {
            let collected = t.now();
            t.put_bmc_firmware(BmcFirmware {
                bmc,
                collected,
                items,
            });
            Ok(())
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot record a firmware inventory");
    }
}

/// The local address this host uses toward `peer` (no packet is sent).
fn local_toward(peer: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match peer {
        IpAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        IpAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(SocketAddr::new(peer, 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

impl Firmware {
    pub fn new(
        store: Store,
        secrets: Arc<SecretBox>,
        transport: Transport,
        node_base: NodeBase,
        artifacts: PathBuf,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Firmware {
        Firmware {
            store,
            secrets,
            transport,
            node_base,
            artifacts,
            jobs: Mutex::new(BTreeMap::new()),
            tasks,
            shutdown,
        }
    }

    fn credentials(&self, snap: &Snapshot, ep: &RedfishEndpoint) -> Option<Credentials> {
        let mut names = vec![ep.id.clone(), ep.address().to_string()];
        names.extend(addr::ip_of(ep.address()).map(|i| i.to_string()));
        if !ep.mac_addr.is_empty() {
            names.push(ep.mac_addr.clone());
        }
        credentials::resolve(snap, &self.secrets, &names, Some(ep), None)
    }

    pub fn jobs(&self) -> Vec<UpdateJob> {
        self.jobs
            .lock()
            .map(|j| j.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn job(&self, id: &str) -> Option<UpdateJob> {
        self.jobs.lock().ok()?.get(id).cloned()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut UpdateJob)) {
        if let Ok(mut j) = self.jobs.lock()
            && let Some(job) = j.get_mut(id)
        {
            f(job);
            let mut counts = BTreeMap::new();
            for b in &job.bmcs {
                *counts.entry(b.status.clone()).or_insert(0) += 1;
            }
            job.counts = counts;
        }
    }

    fn set_bmc(&self, id: &str, xname: &str, f: impl FnOnce(&mut BmcUpdate)) {
        self.update(id, |j| {
            if let Some(b) = j.bmcs.iter_mut().find(|b| b.xname == xname) {
                f(b);
            }
        });
    }

    /// Checks a request and starts its job.
    pub fn start(self: &Arc<Self>, req: UpdateRequest) -> Result<UpdateJob, DomainError> {
        let image = plan::check_image(&req.image)
            .map_err(DomainError::Invalid)?
            .to_string();
        if self.artifacts.as_os_str().is_empty() {
            return Err(DomainError::Invalid(
                "no artifacts directory is configured (boot.artifacts_dir)".into(),
            ));
        }
        if !self.artifacts.join(&image).is_file() {
            return Err(DomainError::Invalid(format!(
                "no artifact {image} under {}",
                self.artifacts.display()
            )));
        }
        let snap = self.store.snapshot();
        let mut names = req.targets.clone();
        if let Some(g) = &req.group {
            let group = snap
                .groups
                .get(g)
                .ok_or_else(|| DomainError::NotFound(format!("no group {g}")))?;
            names.extend(group.members.ids.iter().cloned());
        }
        let bmcs = plan::targets(&snap, &names).map_err(DomainError::Invalid)?;
        if bmcs.is_empty() {
            return Err(DomainError::Invalid(
                "name the BMCs to update (targets or group)".into(),
            ));
        }
        let max_parallel = req.max_parallel.unwrap_or(4);
        if max_parallel == 0 {
            return Err(DomainError::Invalid(
                "maxParallel must be at least 1".into(),
            ));
        }
        let timeout_secs = req.timeout_secs.unwrap_or(1800).max(1);
        let job = UpdateJob {
            id: uuid::Uuid::new_v4().to_string(),
            image: image.clone(),
            max_parallel,
            timeout_secs,
            state: "running".into(),
            created: now(),
            finished: None,
            counts: BTreeMap::from([(plan::PENDING.to_string(), bmcs.len())]),
            bmcs: bmcs
                .iter()
                .map(|x| BmcUpdate {
                    xname: x.clone(),
                    status: plan::PENDING.into(),
                    method: String::new(),
                    task: String::new(),
                    percent_complete: None,
                    message: String::new(),
                })
                .collect(),
        };
        if let Ok(mut j) = self.jobs.lock() {
            while j.len() >= MAX_JOBS {
                let oldest = j
                    .values()
                    .filter(|x| x.state != "running")
                    .min_by(|a, b| a.created.cmp(&b.created))
                    .map(|x| x.id.clone());
                match oldest {
                    Some(id) => j.remove(&id),
                    None => break,
                };
            }
            j.insert(job.id.clone(), job.clone());
        }
        let me = self.clone();
        let id = job.id.clone();
        let components = req.components.clone();
        let span = tracing::info_span!("firmware", job = %id, image = %image);
        self.tasks.spawn(
            async move {
                tracing::info!(bmcs = bmcs.len(), max_parallel, "firmware update started");
                let timeout = Duration::from_secs(timeout_secs);
                futures_util::stream::iter(bmcs)
                    .for_each_concurrent(max_parallel, |x| {
                        let (me, id, image, components) = (&me, &id, &image, &components);
                        async move { me.one(id, &x, image, components, timeout).await }
                    })
                    .await;
                me.update(&id, |j| {
                    j.state = "completed".into();
                    j.finished = Some(now());
                });
                tracing::info!("firmware update ended");
            }
            .instrument(span),
        );
        Ok(job)
    }

    /// One BMC, start to end.
    async fn one(
        &self,
        id: &str,
        xname: &str,
        image: &str,
        components: &[String],
        timeout: Duration,
    ) {
        let fail = |status: &str, msg: String| {
            let status = status.to_string();
            self.set_bmc(id, xname, move |b| {
                b.status = status;
                b.message = msg;
            })
        };
        let snap = self.store.snapshot();
        let Some(ep) = snap.redfish_endpoints.get(xname).cloned() else {
            return fail(plan::FAILED, "no Redfish endpoint".into());
        };
        let Some(creds) = self.credentials(&snap, &ep) else {
            return fail(plan::FAILED, format!("no credentials for BMC {xname}"));
        };
        drop(snap);
        let bmc = Bmc::new(&self.transport, ep.address(), creds);
        if let Err(e) = bmc.login().await {
            bmc.logout().await;
            return fail(plan::FAILED, e.to_string());
        }
        let (status, msg) = self
            .run(id, xname, &bmc, &ep, image, components, timeout)
            .await;
        if status == plan::COMPLETED
            && let Some(items) = read_inventory(&bmc).await
        {
            store_inventory(&self.store, xname, items).await;
        }
        bmc.logout().await;
        tracing::info!(bmc = xname, status, message = %msg, "firmware update of a BMC ended");
        fail(status, msg);
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        id: &str,
        xname: &str,
        bmc: &Bmc,
        ep: &RedfishEndpoint,
        image: &str,
        components: &[String],
        timeout: Duration,
    ) -> (&'static str, String) {
        let svc = match redfish::firmware::update_service(bmc).await {
            Ok(s) => s,
            Err(e) => return (plan::FAILED, e.to_string()),
        };
        // Targets: inventory paths, as given or by Id.
        let fw = self.store.snapshot().bmc_firmware.get(xname).cloned();
        let targets: Vec<String> = components
            .iter()
            .map(|c| {
                fw.as_ref()
                    .and_then(|f| f.items.iter().find(|i| i.id == *c))
                    .map_or_else(|| c.clone(), |i| i.odata_id.clone())
            })
            .collect();
        // What the BMC runs now, to tell an update landed where it gives
        // no task to follow.
        let before = match redfish::firmware::inventory(bmc).await {
            Ok(items) => items,
            Err(e) => {
                tracing::debug!(bmc = xname, error = %e, "no firmware inventory before the update");
                Vec::new()
            }
        };
        let started = match plan::delivery(svc.simple_update, svc.multipart) {
            None => {
                return (
                    plan::FAILED,
                    "the BMC offers neither SimpleUpdate nor a multipart push".into(),
                );
            }
            Some(Delivery::Simple(target)) => {
                let local = addr::ip_of(ep.address()).and_then(local_toward);
                let base = match (local, self.node_base.fixed()) {
                    (Some(ip), _) => self.node_base.for_local(ip),
                    (None, Some(f)) => f.to_string(),
                    (None, None) => {
                        return (
                            plan::FAILED,
                            "no address of this appliance the BMC can reach (set node.advertise)"
                                .into(),
                        );
                    }
                };
                let uri = format!("{base}/artifacts/{image}");
                self.set_bmc(id, xname, |b| {
                    b.method = "SimpleUpdate".into();
                    b.status = plan::UPDATING.into();
                    b.message = format!("ImageURI {uri}");
                });
                redfish::firmware::simple_update(bmc, &target, &uri, &targets).await
            }
            Some(Delivery::Multipart(uri)) => {
                let bytes = match tokio::fs::read(self.artifacts.join(image)).await {
                    Ok(b) => bytes::Bytes::from(b),
                    Err(e) => return (plan::FAILED, format!("cannot read {image}: {e}")),
                };
                self.set_bmc(id, xname, |b| {
                    b.method = "MultipartHttpPush".into();
                    b.status = plan::UPDATING.into();
                });
                let name = image.rsplit('/').next().unwrap_or(image);
                redfish::firmware::multipart_update(bmc, &uri, name, bytes, &targets).await
            }
        };
        let mut follow = match started {
            Ok(m) => m,
            Err(e) => return (plan::FAILED, e.to_string()),
        };
        match &follow {
            Some(m) => self.set_bmc(id, xname, |b| b.task = m.clone()),
            None => self.set_bmc(id, xname, |b| {
                b.message = "accepted; the BMC gives no task to follow".into();
            }),
        }
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    return (plan::FAILED, "the appliance stopped while the update ran".into());
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            match follow.clone() {
                Some(monitor) => match redfish::firmware::task_progress(bmc, &monitor).await {
                    Ok(p) => {
                        if let Some(m) = p.messages.last() {
                            last = m.clone();
                        }
                        let (pct, msg) = (p.percent, last.clone());
                        self.set_bmc(id, xname, |b| {
                            b.percent_complete = pct.or(b.percent_complete);
                            b.message = msg;
                        });
                        if let Some(done) = plan::outcome(&p.state) {
                            return (done, last);
                        }
                    }
                    Err(e) if e.is_auth() => return (plan::FAILED, e.to_string()),
                    Err(e) if matches!(e.kind, redfish::ErrorKind::Status(404 | 410, _)) => {
                        // Never there, or dropped: Redfish lets a service
                        // delete a task monitor once the task has ended.
                        tracing::info!(bmc = xname, task = %monitor, "task monitor gone");
                        follow = None;
                        self.set_bmc(id, xname, |b| {
                            b.message =
                                format!("accepted; the BMC's task {monitor} is gone (HTTP 404)");
                        });
                        continue;
                    }
                    Err(e) => tracing::debug!(bmc = xname, error = %e, "task monitor read failed"),
                },
                None if before.is_empty() => {
                    return (
                        plan::ACCEPTED,
                        "accepted; the BMC gives no task to follow and no FirmwareInventory \
                         to check: confirm the version on the BMC"
                            .into(),
                    );
                }
                None => match redfish::firmware::inventory(bmc).await {
                    Ok(now) => {
                        if let Some(msg) = plan::version_change(&before, &now, &targets) {
                            return (plan::COMPLETED, msg);
                        }
                    }
                    Err(e) if e.is_auth() => return (plan::FAILED, e.to_string()),
                    Err(e) => tracing::debug!(bmc = xname, error = %e, "inventory read failed"),
                },
            }
            if Instant::now() >= deadline {
                let msg = if follow.is_some() {
                    format!("no end after {} s; last: {last}", timeout.as_secs())
                } else {
                    format!(
                        "accepted, but the BMC gives no task to follow and no firmware \
                         version changed in {} s",
                        timeout.as_secs()
                    )
                };
                return (plan::TIMED_OUT, msg);
            }
        }
    }
}
