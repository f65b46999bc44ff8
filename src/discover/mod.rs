//! Redfish discovery inside the appliance: scan for BMCs, crawl them, and
//! write what they hold into the inventory (replaces magellan).
//!
//! Discovery runs here rather than in the CLI so that it uses the appliance's
//! stored credentials without ever handing them out, survives the operator's
//! terminal going away, and writes through the inventory's own V2 code. An
//! API call starts a job; the job reports progress that the CLI polls.
//!
//! A BMC is written only after its whole crawl succeeded, in one inventory
//! write: a BMC that fails half-way leaves nothing behind. Re-running is
//! idempotent: known BMCs keep their xnames and are re-applied with PUT.

pub mod credentials;
pub mod naming;
pub mod payload;
pub mod targets;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ca::secret::SecretBox;
use crate::config::DiscoveryConfig;
use crate::inventory::{DomainError, Store, WriteError, endpoints};
use crate::redfish::{self, Bmc, Credentials, Transport};

/// Jobs kept for `GET jobs` after they end.
const KEEP_JOBS: usize = 32;

/// `POST /discovery/v1/scan`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanRequest {
    /// CIDRs, addresses, `address:port`.
    pub targets: Vec<String>,
    /// Port for targets that name none [default: discovery.port].
    pub port: Option<u16>,
    /// Also probe addresses leased from the DHCP pool to unknown MACs.
    pub include_leases: bool,
}

/// `POST /discovery/v1/collect`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectRequest {
    /// Scanned first when given; else the BMCs of the last scan, else every
    /// known RedfishEndpoint.
    pub targets: Vec<String>,
    pub port: Option<u16>,
    pub include_leases: bool,
    /// magellan's `--bmc-id-map` document.
    pub bmc_id_map: Option<Value>,
    /// Credentials for this run, used where no per-BMC ones are stored.
    pub username: Option<String>,
    pub password: Option<String>,
}

/// One BMC in a job's report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BmcReport {
    pub address: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub xname: String,
    /// `found`, `collected`, `failed` or `skipped`.
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub redfish_version: String,
    pub systems: usize,
    pub macs: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Progress {
    /// `scan`, `collect`, `done`, `cancelled`.
    phase: String,
    addresses: usize,
    scanned: usize,
    total: usize,
    done: usize,
    finished: String,
    bmcs: Vec<BmcReport>,
}

/// A discovery run.
pub struct Job {
    pub id: String,
    pub kind: &'static str,
    started: String,
    cancel: CancellationToken,
    progress: Mutex<Progress>,
}

impl Job {
    fn update(&self, f: impl FnOnce(&mut Progress)) {
        if let Ok(mut p) = self.progress.lock() {
            f(&mut p);
        }
    }

    /// The job as the API shows it.
    pub fn to_json(&self) -> Value {
        let p = self.progress.lock().map(|p| p.clone()).unwrap_or_default();
        let count = |s: &str| p.bmcs.iter().filter(|b| b.status == s).count();
        let found = p.bmcs.len();
        serde_json::json!({
            "id": self.id,
            "kind": self.kind,
            "status": match p.phase.as_str() {
                "done" => "done",
                "cancelled" => "cancelled",
                _ => "running",
            },
            "phase": p.phase,
            "started": self.started,
            "finished": p.finished,
            "addresses": p.addresses,
            "scanned": p.scanned,
            "total": p.total,
            "done": p.done,
            "found": found,
            "collected": count("collected"),
            "failed": count("failed"),
            "skipped": count("skipped"),
            "bmcs": p.bmcs,
        })
    }

    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// A BMC to crawl.
#[derive(Debug, Clone)]
struct Target {
    /// `ip`, `ip:port` or a host name, as the endpoint records it.
    addr: String,
    ip: Option<IpAddr>,
    /// From a pool lease, when that is how it was found.
    lease_mac: Option<String>,
}

/// The discovery service: jobs, the last scan's findings.
pub struct Discovery {
    store: Store,
    secrets: Arc<SecretBox>,
    transport: Transport,
    config: DiscoveryConfig,
    jobs: Mutex<Vec<Arc<Job>>>,
    last_scan: Mutex<Vec<Target>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Discovery {
    pub fn new(
        store: Store,
        secrets: Arc<SecretBox>,
        transport: Transport,
        config: DiscoveryConfig,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Discovery {
        Discovery {
            store,
            secrets,
            transport,
            config,
            jobs: Mutex::new(Vec::new()),
            last_scan: Mutex::new(Vec::new()),
            tasks,
            shutdown,
        }
    }

    pub fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().ok()?.iter().find(|j| j.id == id).cloned()
    }

    pub fn jobs(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().map(|j| j.clone()).unwrap_or_default()
    }

    fn new_job(&self, kind: &'static str) -> Arc<Job> {
        let job = Arc::new(Job {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            cancel: self.shutdown.child_token(),
            progress: Mutex::new(Progress {
                phase: "scan".into(),
                ..Default::default()
            }),
        });
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.push(job.clone());
            let running = |j: &Arc<Job>| j.to_json()["status"] == "running";
            while jobs.len() > KEEP_JOBS {
                match jobs.iter().position(|j| !running(j)) {
                    Some(k) => {
                        jobs.remove(k);
                    }
                    None => break,
                }
            }
        }
        job
    }

    fn scan_addresses(
        &self,
        targets: &[String],
        port: Option<u16>,
        include_leases: bool,
    ) -> Result<Vec<(SocketAddr, Option<String>)>, DomainError> {
        let port = port.unwrap_or(self.config.port);
        let mut addrs: Vec<(SocketAddr, Option<String>)> = targets::expand(targets, port)
            .map_err(DomainError::Invalid)?
            .into_iter()
            .map(|a| (a, None))
            .collect();
        if include_leases {
            let snap = self.store.snapshot();
            for l in snap.leases.values() {
                let id = l.mac.replace(':', "");
                if !snap.interfaces.contains_key(&id) {
                    let a = SocketAddr::new(l.ip, port);
                    if !addrs.iter().any(|(x, _)| *x == a) {
                        addrs.push((a, Some(l.mac.clone())));
                    }
                }
            }
        }
        Ok(addrs)
    }

    /// Starts a scan job.
    pub fn start_scan(self: &Arc<Self>, req: ScanRequest) -> Result<Arc<Job>, DomainError> {
        if req.targets.is_empty() && !req.include_leases {
            return Err(DomainError::Invalid(
                "give scan targets (CIDR, address or address:port) or include_leases".into(),
            ));
        }
        let addrs = self.scan_addresses(&req.targets, req.port, req.include_leases)?;
        let job = self.new_job("scan");
        let (me, j) = (self.clone(), job.clone());
        self.tasks.spawn(async move {
            let found = me.scan(&j, addrs).await;
            if let Ok(mut last) = me.last_scan.lock() {
                *last = found;
            }
            me.finish(&j);
        });
        Ok(job)
    }

    /// Starts a collect job.
    pub fn start_collect(self: &Arc<Self>, req: CollectRequest) -> Result<Arc<Job>, DomainError> {
        let map = match &req.bmc_id_map {
            Some(v) => Some(naming::IdMap::parse(v).map_err(DomainError::Invalid)?),
            None => None,
        };
        let run_default = match (&req.username, &req.password) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.clone(),
                password: p.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(DomainError::Invalid(
                    "give both username and password, or neither".into(),
                ));
            }
        };
        let scan = !req.targets.is_empty() || req.include_leases;
        let addrs = if scan {
            self.scan_addresses(&req.targets, req.port, req.include_leases)?
        } else {
            Vec::new()
        };
        let job = self.new_job("collect");
        let (me, j) = (self.clone(), job.clone());
        self.tasks.spawn(async move {
            let targets = if scan {
                me.scan(&j, addrs).await
            } else {
                me.previous_targets()
            };
            if !j.cancel.is_cancelled() {
                me.collect(&j, targets, map, run_default).await;
            }
            me.finish(&j);
        });
        Ok(job)
    }

    /// The last scan's BMCs, else every known endpoint.
    fn previous_targets(&self) -> Vec<Target> {
        let last = self.last_scan.lock().map(|l| l.clone()).unwrap_or_default();
        if !last.is_empty() {
            return last;
        }
        self.store
            .snapshot()
            .redfish_endpoints
            .values()
            .filter(|e| e.enabled)
            .map(|e| Target {
                addr: e.address().to_string(),
                ip: targets::ip_of(e.address()),
                lease_mac: None,
            })
            .collect()
    }

    fn finish(&self, job: &Job) {
        let cancelled = job.cancel.is_cancelled();
        job.update(|p| {
            p.phase = if cancelled { "cancelled" } else { "done" }.into();
            p.finished = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        });
    }

    async fn scan(&self, job: &Job, addrs: Vec<(SocketAddr, Option<String>)>) -> Vec<Target> {
        job.update(|p| {
            p.phase = "scan".into();
            p.addresses = addrs.len();
        });
        let found: Vec<Target> = futures_util::stream::iter(addrs)
            .map(|(a, lease_mac)| async move {
                let r = tokio::select! {
                    r = redfish::probe(&self.transport, a) => Some(r),
                    _ = job.cancel.cancelled() => None,
                };
                job.update(|p| p.scanned += 1);
                match r {
                    Some(Ok(root)) => {
                        let addr = targets::address_string(a);
                        job.update(|p| {
                            p.bmcs.push(BmcReport {
                                address: addr.clone(),
                                status: "found".into(),
                                redfish_version: root.redfish_version.clone(),
                                ..Default::default()
                            })
                        });
                        Some(Target {
                            addr,
                            ip: Some(a.ip()),
                            lease_mac,
                        })
                    }
                    Some(Err(e)) => {
                        tracing::debug!(address = %a, error = %e, "not a BMC");
                        None
                    }
                    None => None,
                }
            })
            .buffer_unordered(self.config.scan_concurrency)
            .filter_map(|t| async move { t })
            .collect()
            .await;
        found
    }

    async fn collect(
        &self,
        job: &Job,
        targets: Vec<Target>,
        map: Option<naming::IdMap>,
        run_default: Option<Credentials>,
    ) {
        job.update(|p| {
            p.phase = "collect".into();
            p.total = targets.len();
        });
        let map = map.as_ref();
        let run_default = run_default.as_ref();
        futures_util::stream::iter(targets)
            .for_each_concurrent(self.config.collect_concurrency, |t| async move {
                let report = self.collect_one(job, &t, map, run_default).await;
                tracing::info!(
                    address = %report.address, xname = %report.xname, status = %report.status,
                    reason = %report.reason, "discovery"
                );
                job.update(|p| {
                    p.done += 1;
                    match p.bmcs.iter_mut().find(|b| b.address == report.address) {
                        Some(b) => *b = report,
                        None => p.bmcs.push(report),
                    }
                });
            })
            .await;
    }

    async fn collect_one(
        &self,
        job: &Job,
        t: &Target,
        map: Option<&naming::IdMap>,
        run_default: Option<&Credentials>,
    ) -> BmcReport {
        let mut report = BmcReport {
            address: t.addr.clone(),
            ..Default::default()
        };
        let fail = |mut r: BmcReport, status: &str, reason: String| {
            r.status = status.into();
            r.reason = reason;
            r
        };
        let snap = self.store.snapshot();
        // The name as far as it is known before the crawl (for credentials).
        let early = naming::choose(map, &snap, &t.addr, t.ip, t.lease_mac.as_deref()).ok();
        if map.is_some() && early.is_none() {
            return fail(report, "skipped", "not in the BMC ID map".into());
        }
        let endpoint = early
            .as_ref()
            .and_then(|x| snap.redfish_endpoints.get(x))
            .cloned();
        let mut names: Vec<String> = early.iter().cloned().collect();
        names.push(t.addr.clone());
        names.extend(t.ip.map(|i| i.to_string()));
        names.extend(t.lease_mac.clone());
        let Some(creds) =
            credentials::resolve(&snap, &self.secrets, &names, endpoint.as_ref(), run_default)
        else {
            return fail(
                report,
                "failed",
                "no credentials: store a default (openchami discover credentials set default) or pass --username".into(),
            );
        };
        drop(snap);

        let bmc = Bmc::new(&self.transport, &t.addr, creds.clone());
        let crawled = tokio::select! {
            r = async { bmc.login().await?; redfish::crawl(&bmc).await } => Some(r),
            _ = job.cancel.cancelled() => None,
        };
        bmc.logout().await;
        let crawl = match crawled {
            None => return fail(report, "failed", "cancelled".into()),
            Some(Err(e)) => return fail(report, "failed", e.to_string()),
            Some(Ok(c)) => c,
        };
        report.redfish_version = crawl.redfish_version.clone();
        report.systems = crawl.systems.len();
        report.macs = crawl
            .systems
            .iter()
            .map(|s| s.nics.len())
            .chain(crawl.managers.iter().map(|m| m.nics.len()))
            .sum();

        let ip = t.ip.map(|i| i.to_string()).unwrap_or_default();
        let mac = payload::bmc_mac(&crawl, &ip).or_else(|| t.lease_mac.clone());
        let snap = self.store.snapshot();
        let xname = match naming::choose(map, &snap, &t.addr, t.ip, mac.as_deref()) {
            Ok(x) => x,
            Err(naming::Unnamed::NotInMap) => {
                return fail(report, "skipped", "not in the BMC ID map".into());
            }
            Err(naming::Unnamed::NoRule) => {
                return fail(
                    report,
                    "failed",
                    "no xname for a BMC without an IPv4 address: give a BMC ID map".into(),
                );
            }
        };
        drop(snap);
        report.xname = xname.clone();
        let doc = payload::v2(
            &xname,
            &t.addr,
            &creds.username,
            mac.as_deref().unwrap_or(""),
            &crawl,
        );
        match self.write(&xname, &doc, &creds.password).await {
            Ok(()) => {
                report.status = "collected".into();
                report
            }
            Err(e) => fail(report, "failed", format!("inventory refused it: {e}")),
        }
    }

    /// Writes one V2 payload exactly as `POST` (new BMC) or `PUT` (known
    /// BMC) on `/hsm/v2/Inventory/RedfishEndpoints` would, storing the
    /// working password sealed.
    async fn write(&self, xname: &str, doc: &Value, password: &str) -> Result<(), WriteError> {
        let mut e = endpoints::decode(doc)?;
        let sealed = self.secrets.seal(password).map_err(|err| {
            DomainError::Invalid(format!("the BMC password cannot be sealed: {err}"))
        })?;
        e.password = Some(sealed);
        let id = xname.to_string();
        self.store
            .write(move |t| {
                if t.model().redfish_endpoints.contains_key(&id) {
                    endpoints::put(t, &id, &e).map(|_| ())
                } else {
                    endpoints::post(t, std::slice::from_ref(&e)).map(|_| ())
                }
            })
            .await
    }
}
