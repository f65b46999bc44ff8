//! Redfish discovery inside the appliance: scan for BMCs, crawl them, and
//! write what they hold into the inventory (replaces magellan).
//!
//! Discovery runs here rather than in the CLI so that it uses the appliance's
//! stored credentials without ever handing them out, survives the operator's
//! terminal going away, and writes through the inventory's own V2 code. An
//! API call starts a job; the job reports progress that the CLI polls.
//!
//! A BMC is written only after its whole crawl succeeded, all or nothing: a
//! BMC that fails half-way leaves nothing behind. Re-running is idempotent:
//! known BMCs keep their xnames and are re-applied with PUT.
//!
//! Where several heads share the store, a job is leased to the head running
//! it (`discovery/<id>`) and its request is stored (`StoredDiscoveryJob`, the
//! run's password sealed) until it ends; when that head stops or dies,
//! another head claims the lease and runs the job again under the same ID
//! (a collect of the last scan's BMCs names them as targets, so it scans
//! them again first). Progress stays with the head running the job. On one
//! head jobs live in memory only, as before.
//!
//! At scale the work is CPU, not waiting: a BMC is crawled as soon as the
//! scan finds it (the scan's waves overlap the crawls), and BMCs that finish
//! together share one store write (see [`write_groups`]), because a write
//! copies every part of the inventory it touches.

pub mod credentials;
pub mod hardware;
pub mod naming;
pub mod payload;
pub mod targets;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::ca::secret::SecretBox;
use crate::config::DiscoveryConfig;
use crate::inventory::endpoints::EndpointIn;
use crate::inventory::leases::Held;
use crate::inventory::model::StoredDiscoveryJob;
use crate::inventory::{DomainError, Store, StoreError, Txn, WriteError, endpoints};
use crate::redfish::{self, Bmc, Credentials, Transport};

/// Jobs kept for `GET jobs` after they end.
const KEEP_JOBS: usize = 32;

/// `POST /discovery/v1/scan`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CollectRequest {
    /// Scanned first when given; else the BMCs of the last scan, else every
    /// known RedfishEndpoint.
    pub targets: Vec<String>,
    pub port: Option<u16>,
    pub include_leases: bool,
    /// Free-form: magellan's `--bmc-id-map` document.
    pub bmc_id_map: Option<Value>,
    /// Credentials for this run, used where no per-BMC ones are stored.
    pub username: Option<String>,
    pub password: Option<String>,
}

/// One BMC in a job's report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, schemars::JsonSchema)]
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
    /// Hardware inventory locations (nodes, processors, accelerators,
    /// memory, drives, enclosure, power supplies) written for this BMC.
    pub fru_locations: usize,
    /// What the BMC did not let the crawl read (a collection missing or
    /// answering an error): collected without it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
struct Progress {
    /// `scan`, `collect`, `done`, `cancelled`.
    phase: String,
    addresses: usize,
    scanned: usize,
    total: usize,
    done: usize,
    finished: String,
    bmcs: Vec<BmcReport>,
    /// Address → position in `bmcs`.
    #[serde(skip)]
    index: std::collections::HashMap<String, usize>,
}

impl Progress {
    /// Adds a BMC's report or replaces the one for the same address.
    fn put(&mut self, report: BmcReport) {
        match self.index.get(&report.address) {
            Some(&k) if k < self.bmcs.len() => self.bmcs[k] = report,
            _ => {
                self.index.insert(report.address.clone(), self.bmcs.len());
                self.bmcs.push(report);
            }
        }
    }
}

/// A discovery run.
pub struct Job {
    pub id: String,
    pub kind: &'static str,
    started: String,
    cancel: CancellationToken,
    /// Cancelled by the operator, not by a shutdown or a lost lease.
    by_operator: std::sync::atomic::AtomicBool,
    progress: Mutex<Progress>,
    /// Shared with `Discovery::subscribe`: bumped on every progress change.
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Job {
    fn update(&self, f: impl FnOnce(&mut Progress)) {
        if let Ok(mut p) = self.progress.lock() {
            f(&mut p);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The job as the API shows it.
    pub fn to_json(&self) -> Value {
        self.json(true)
    }

    /// The job with its BMC list (`bmcs`) or only the counts: a client
    /// following a run of thousands of BMCs polls the counts.
    pub fn json(&self, bmcs: bool) -> Value {
        let Ok(p) = self.progress.lock() else {
            return Value::Null;
        };
        let (mut collected, mut failed, mut skipped) = (0, 0, 0);
        for b in &p.bmcs {
            match b.status.as_str() {
                "collected" => collected += 1,
                "failed" => failed += 1,
                "skipped" => skipped += 1,
                _ => {}
            }
        }
        let mut v = serde_json::json!({
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
            "found": p.bmcs.len(),
            "collected": collected,
            "failed": failed,
            "skipped": skipped,
        });
        if bmcs && let Some(o) = v.as_object_mut() {
            o.insert("bmcs".into(), serde_json::json!(p.bmcs));
        }
        v
    }

    fn running(&self) -> bool {
        self.progress
            .lock()
            .map(|p| !matches!(p.phase.as_str(), "done" | "cancelled"))
            .unwrap_or(false)
    }

    pub fn cancel(&self) {
        self.by_operator.store(true, Ordering::Relaxed);
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
    /// Counts progress changes of every job, for readers that follow runs
    /// (the status page's event stream) without polling.
    changed: Arc<tokio::sync::watch::Sender<u64>>,
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
            changed: Arc::new(tokio::sync::watch::Sender::new(0)),
            last_scan: Mutex::new(Vec::new()),
            tasks,
            shutdown,
        }
    }

    pub fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().ok()?.iter().find(|j| j.id == id).cloned()
    }

    /// Wakes after a job starts or its progress changes (several changes in
    /// between wake it once).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn jobs(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().map(|j| j.clone()).unwrap_or_default()
    }

    fn new_job(&self, kind: &'static str, id: Option<String>) -> Arc<Job> {
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if let Ok(mut jobs) = self.jobs.lock() {
            // An earlier run of a job taken back over.
            jobs.retain(|j| j.id != id);
        }
        let job = Arc::new(Job {
            id,
            kind,
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            cancel: self.shutdown.child_token(),
            by_operator: std::sync::atomic::AtomicBool::new(false),
            progress: Mutex::new(Progress {
                phase: "scan".into(),
                ..Default::default()
            }),
            changed: self.changed.clone(),
        });
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.push(job.clone());
            while jobs.len() > KEEP_JOBS {
                match jobs.iter().position(|j| !j.running()) {
                    Some(k) => {
                        jobs.remove(k);
                    }
                    None => break,
                }
            }
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
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
        self.start_scan_as(req, None, None)
    }

    /// Starts a scan job, under `id` and `held` when taken over.
    fn start_scan_as(
        self: &Arc<Self>,
        req: ScanRequest,
        id: Option<String>,
        held: Option<Held>,
    ) -> Result<Arc<Job>, DomainError> {
        if req.targets.is_empty() && !req.include_leases {
            return Err(DomainError::Invalid(
                "give scan targets (CIDR, address or address:port) or include_leases".into(),
            ));
        }
        let addrs = self.scan_addresses(&req.targets, req.port, req.include_leases)?;
        let job = self.new_job("scan", id);
        let record = StoredDiscoveryJob {
            id: job.id.clone(),
            kind: "scan".into(),
            started: job.started.clone(),
            targets: req.targets.clone(),
            port: req.port,
            include_leases: req.include_leases,
            bmc_id_map: None,
            username: None,
            password_sealed: None,
        };
        let (me, j) = (self.clone(), job.clone());
        let span = tracing::info_span!("discovery", job = %job.id, kind = job.kind);
        self.tasks.spawn(
            async move {
                let held = me.hold(&j, record, held).await;
                tracing::info!(addresses = addrs.len(), "discovery job started");
                let found = me.scan(&j, addrs, |_| {}).await;
                if let Ok(mut last) = me.last_scan.lock() {
                    *last = found;
                }
                me.finish(&j);
                me.let_go(&j, held).await;
            }
            .instrument(span),
        );
        Ok(job)
    }

    /// Shared store: claims the job's lease (unless taken over with it)
    /// and stores its request; a lost lease stops the job.
    async fn hold(
        &self,
        job: &Arc<Job>,
        record: StoredDiscoveryJob,
        held: Option<Held>,
    ) -> Option<Held> {
        let leases = self.store.leases();
        if !leases.shared() {
            return None;
        }
        let held = match held {
            Some(h) => h,
            None => match leases.claim(&format!("discovery/{}", job.id)).await {
                Ok(Some(h)) => h,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot lease the discovery job; no other head can take it over");
                    return None;
                }
            },
        };
        if let Err(e) = self
            .store
            .write(move |t| {
                t.put_discovery_job(record);
                Ok(())
            })
            .await
        {
            tracing::warn!(error = %e, "cannot store the discovery job; no other head can take it over");
        }
        let (lost, cancel) = (held.lost(), job.cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = lost.cancelled() => cancel.cancel(),
                _ = cancel.cancelled() => {}
            }
        });
        Some(held)
    }

    /// Ends a job's lease: its record is deleted unless the job was cut
    /// short by a shutdown or a lost lease (then another head runs it).
    async fn let_go(&self, job: &Job, held: Option<Held>) {
        let Some(held) = held else {
            return;
        };
        let handed_over = job.cancel.is_cancelled() && !job.by_operator.load(Ordering::Relaxed);
        if !handed_over {
            let id = job.id.clone();
            if let Err(e) = self
                .store
                .write(move |t| {
                    t.delete_discovery_job(&id);
                    Ok(())
                })
                .await
            {
                tracing::warn!(error = %e, "cannot delete the ended discovery job's record");
            }
        } else {
            tracing::info!("discovery job left for another head");
        }
        held.release().await;
    }

    /// Shared store: every renewal interval, runs again the stored jobs
    /// whose head no longer holds their lease.
    pub async fn take_over(self: Arc<Self>) {
        let leases = self.store.leases();
        if !leases.shared() {
            return;
        }
        loop {
            let stored: Vec<StoredDiscoveryJob> = self
                .store
                .snapshot()
                .discovery_jobs
                .values()
                .filter(|r| self.job(&r.id).is_none_or(|j| !j.running()))
                .cloned()
                .collect();
            for r in stored {
                match leases.claim(&format!("discovery/{}", r.id)).await {
                    Ok(Some(held)) => {
                        tracing::info!(job = %r.id, "running a discovery job again whose head is gone");
                        if let Err(e) = self.rerun(r, held) {
                            tracing::warn!(error = %e, "cannot run a discovery job again");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, "cannot claim a discovery job"),
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(leases.renew_every()) => {}
            }
        }
    }

    fn rerun(self: &Arc<Self>, r: StoredDiscoveryJob, held: Held) -> Result<Arc<Job>, DomainError> {
        if r.kind == "scan" {
            let req = ScanRequest {
                targets: r.targets,
                port: r.port,
                include_leases: r.include_leases,
            };
            return self.start_scan_as(req, Some(r.id), Some(held));
        }
        let password = r.password_sealed.as_deref().and_then(|p| match self.secrets.open(p) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(error = %e, "the job's password is sealed with another key; running with stored credentials only");
                None
            }
        });
        let username = r.username.filter(|_| password.is_some());
        let req = CollectRequest {
            targets: r.targets,
            port: r.port,
            include_leases: r.include_leases,
            bmc_id_map: r.bmc_id_map,
            username,
            password,
        };
        self.start_collect_as(req, Some(r.id), Some(held))
    }

    /// Starts a collect job.
    pub fn start_collect(self: &Arc<Self>, req: CollectRequest) -> Result<Arc<Job>, DomainError> {
        self.start_collect_as(req, None, None)
    }

    /// Starts a collect job, under `id` and `held` when taken over.
    fn start_collect_as(
        self: &Arc<Self>,
        req: CollectRequest,
        id: Option<String>,
        held: Option<Held>,
    ) -> Result<Arc<Job>, DomainError> {
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
        // Without targets, only what a scan found: re-crawling every
        // endpoint ever recorded would probe addresses (an imported
        // cluster file's BMCs) nobody asked to contact now.
        let previous = if scan {
            Vec::new()
        } else {
            self.previous_targets()
        };
        if !scan && previous.is_empty() {
            return Err(DomainError::Invalid(
                "no scan has found BMCs since the appliance started: give collect its targets \
                 (CIDR, address or address:port), or run `openchami discover scan` first"
                    .into(),
            ));
        }
        let job = self.new_job("collect", id);
        let record = StoredDiscoveryJob {
            id: job.id.clone(),
            kind: "collect".into(),
            started: job.started.clone(),
            targets: if scan {
                req.targets.clone()
            } else {
                previous.iter().map(|t| t.addr.clone()).collect()
            },
            port: req.port,
            include_leases: req.include_leases,
            bmc_id_map: req.bmc_id_map.clone(),
            username: req.username.clone(),
            password_sealed: req
                .password
                .as_deref()
                .and_then(|p| self.secrets.seal(p).ok()),
        };
        let (me, j) = (self.clone(), job.clone());
        let span = tracing::info_span!("discovery", job = %job.id, kind = job.kind);
        self.tasks.spawn(
            async move {
                let held = me.hold(&j, record, held).await;
                tracing::info!(addresses = addrs.len(), "discovery job started");
                // A BMC is crawled as soon as the scan finds it: the scan's last
                // wave and the first crawls overlap instead of adding up.
                let (tx, rx) = mpsc::unbounded_channel::<Target>();
                let feed = async {
                    if scan {
                        me.scan(&j, addrs, |t| {
                            j.update(|p| p.total += 1);
                            let _ = tx.send(t);
                        })
                        .await;
                    } else {
                        j.update(|p| p.total = previous.len());
                        for t in previous {
                            let _ = tx.send(t);
                        }
                    }
                    j.update(|p| p.phase = "collect".into());
                    drop(tx);
                };
                let targets = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|t| (t, rx))
                });
                futures_util::join!(feed, me.collect(&j, targets, map, run_default));
                me.finish(&j);
                me.let_go(&j, held).await;
            }
            .instrument(span),
        );
        Ok(job)
    }

    /// The BMCs the last scan found.
    fn previous_targets(&self) -> Vec<Target> {
        self.last_scan.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn finish(&self, job: &Job) {
        let cancelled = job.cancel.is_cancelled();
        job.update(|p| {
            p.phase = if cancelled { "cancelled" } else { "done" }.into();
            p.finished = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        });
        tracing::info!(
            outcome = if cancelled { "cancelled" } else { "done" },
            "discovery job ended"
        );
    }

    /// Probes every address; `on_found` sees each BMC as soon as it answers.
    async fn scan(
        &self,
        job: &Job,
        addrs: Vec<(SocketAddr, Option<String>)>,
        on_found: impl Fn(Target),
    ) -> Vec<Target> {
        job.update(|p| {
            p.phase = "scan".into();
            p.addresses = addrs.len();
        });
        let on_found = &on_found;
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
                            p.put(BmcReport {
                                address: addr.clone(),
                                status: "found".into(),
                                redfish_version: root.redfish_version.clone(),
                                ..Default::default()
                            })
                        });
                        let t = Target {
                            addr,
                            ip: Some(a.ip()),
                            lease_mac,
                        };
                        on_found(t.clone());
                        Some(t)
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

    /// Crawls and writes each BMC as `targets` yields it.
    async fn collect(
        &self,
        job: &Job,
        targets: impl futures_util::Stream<Item = Target>,
        map: Option<naming::IdMap>,
        run_default: Option<Credentials>,
    ) {
        let map = map.as_ref();
        let run_default = run_default.as_ref();
        let (writes, queue) = mpsc::unbounded_channel::<Write>();
        let crawls = async move {
            let writes = &writes;
            targets
                .for_each_concurrent(self.config.collect_concurrency, |t| async move {
                    let report = self.collect_one(job, &t, map, run_default, writes).await;
                    tracing::info!(
                        address = %report.address, xname = %report.xname, status = %report.status,
                        reason = %report.reason, "discovery"
                    );
                    job.update(|p| {
                        p.done += 1;
                        p.put(report);
                    });
                })
                .await;
        };
        futures_util::join!(crawls, write_groups(&self.store, queue));
    }

    async fn collect_one(
        &self,
        job: &Job,
        t: &Target,
        map: Option<&naming::IdMap>,
        run_default: Option<&Credentials>,
        writes: &mpsc::UnboundedSender<Write>,
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
            .and_then(|x| snap.redfish_endpoint(x))
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
        // The login is never cancelled half-way: a session the BMC opened
        // but whose token never arrived could not be deleted.
        let crawled = match bmc.login().await {
            Err(e) => Some(Err(e)),
            Ok(()) => tokio::select! {
                r = redfish::crawl(&bmc) => Some(r),
                _ = job.cancel.cancelled() => None,
            },
        };
        // The firmware inventory rides along; a BMC that will not show it
        // is collected without it.
        let firmware = match &crawled {
            Some(Ok(_)) => crate::firmware::read_inventory(&bmc).await,
            _ => None,
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
        report.notes = hardware::Found::notes(&crawl);
        let found = Arc::new(hardware::Found::from_crawl(&crawl));

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
        match self
            .write(writes, &xname, &doc, &creds.password, found)
            .await
        {
            Ok(n) => {
                if let Some(items) = firmware {
                    crate::firmware::store_inventory(&self.store, &xname, items).await;
                }
                report.status = "collected".into();
                report.fru_locations = n;
                report
            }
            Err(e) => fail(report, "failed", format!("inventory refused it: {e}")),
        }
    }

    /// Writes one V2 payload exactly as `POST` (new BMC) or `PUT` (known
    /// BMC) on `/hsm/v2/Inventory/RedfishEndpoints` would, storing the
    /// working password sealed. Decoding and sealing happen here, on the
    /// crawl's task; only applying waits for the writer.
    async fn write(
        &self,
        writes: &mpsc::UnboundedSender<Write>,
        xname: &str,
        doc: &Value,
        password: &str,
        hardware: Arc<hardware::Found>,
    ) -> Result<usize, WriteError> {
        let mut e = endpoints::decode(doc)?;
        let sealed = self.secrets.seal(password).map_err(|err| {
            DomainError::Invalid(format!("the BMC password cannot be sealed: {err}"))
        })?;
        e.password = Some(sealed);
        let (reply, answer) = oneshot::channel();
        writes
            .send(Write {
                id: xname.to_string(),
                endpoint: e,
                hardware,
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// One crawled BMC waiting to be written.
struct Write {
    id: String,
    endpoint: EndpointIn,
    hardware: Arc<hardware::Found>,
    /// Answered with the number of hardware locations written.
    reply: oneshot::Sender<Result<usize, WriteError>>,
}

/// Crawled BMCs written per store write, at most.
const WRITE_GROUP_MAX: usize = 128;

/// Applies finished crawls in groups: whatever queued while the previous
/// group was written goes into one store write. A write copies the parts of
/// the inventory it changes (persistent maps share the rest), so neighbours
/// written together are copied once instead of once per BMC.
async fn write_groups(store: &Store, mut queue: mpsc::UnboundedReceiver<Write>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < WRITE_GROUP_MAX {
            match queue.try_recv() {
                Ok(w) => group.push(w),
                Err(_) => break,
            }
        }
        write_group(store, group).await;
    }
}

/// Writes a group all-or-nothing. A BMC the inventory refuses is answered
/// with its error and the rest are written again without it, so each BMC
/// ends exactly as if it had been written alone, in queue order.
async fn write_group(store: &Store, group: Vec<Write>) {
    type Item = (String, EndpointIn, Arc<hardware::Found>);
    let (mut items, mut replies): (Vec<Item>, Vec<_>) = group
        .into_iter()
        .map(|w| ((w.id, w.endpoint, w.hardware), w.reply))
        .unzip();
    while !items.is_empty() {
        let shared = Arc::new(std::mem::take(&mut items));
        let failed_at = Arc::new(AtomicUsize::new(usize::MAX));
        let (group, at) = (shared.clone(), failed_at.clone());
        let r = store
            .write(move |t| {
                let mut written = Vec::with_capacity(group.len());
                for (k, (id, e, hw)) in group.iter().enumerate() {
                    let n = apply(t, id, e, hw).inspect_err(|_| at.store(k, Ordering::Relaxed))?;
                    written.push(n);
                }
                Ok(written)
            })
            .await;
        items = Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone());
        let k = failed_at.load(Ordering::Relaxed);
        match r {
            Ok(written) => {
                for (reply, n) in replies.drain(..).zip(written) {
                    let _ = reply.send(Ok(n));
                }
                return;
            }
            Err(WriteError::Domain(e)) if k < items.len() => {
                items.remove(k);
                let _ = replies.remove(k).send(Err(WriteError::Domain(e)));
            }
            // Not one BMC's fault (storage, or a failure no BMC claimed):
            // each BMC is written alone and gets its own answer.
            Err(_) => {
                for ((id, e, hw), reply) in items.drain(..).zip(replies.drain(..)) {
                    let r = store.write(move |t| apply(t, &id, &e, &hw)).await;
                    let _ = reply.send(r);
                }
                return;
            }
        }
    }
}

/// `PUT` for a known BMC, `POST` for a new one, then its hardware
/// inventory; returns the number of hardware locations.
fn apply(
    t: &mut Txn<'_>,
    id: &str,
    e: &EndpointIn,
    hw: &hardware::Found,
) -> Result<usize, DomainError> {
    if t.model().redfish_endpoints.contains_key(id) {
        endpoints::put(t, id, e)?;
    } else {
        endpoints::post(t, std::slice::from_ref(e))?;
    }
    Ok(hw.apply(t, id).locations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redfish::{ManagerInfo, Nic, SystemInfo};

    /// The V2 write of BMC `k` (xname `x1c0s{k}b0`), whose node has MAC
    /// `02:00:00:00:00:0k`.
    fn crawled(k: usize) -> (Write, oneshot::Receiver<Result<usize, WriteError>>) {
        let crawl = redfish::Crawl {
            redfish_version: "1.6.0".into(),
            systems: vec![SystemInfo {
                path: "/redfish/v1/Systems/1".into(),
                uuid: format!("uuid-{k}"),
                power_state: "On".into(),
                nics: vec![Nic {
                    path: "/redfish/v1/Systems/1/EthernetInterfaces/1".into(),
                    mac: format!("02:00:00:00:00:0{k}"),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            managers: vec![ManagerInfo {
                path: "/redfish/v1/Managers/BMC".into(),
                manager_type: "BMC".into(),
                nics: vec![Nic {
                    path: "/redfish/v1/Managers/BMC/EthernetInterfaces/1".into(),
                    mac: format!("02:01:00:00:00:0{k}"),
                    ipv4: vec![format!("10.0.0.{k}")],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let id = format!("x1c0s{k}b0");
        let addr = format!("10.0.0.{k}");
        let doc = payload::v2(&id, &addr, "root", "", &crawl);
        let (reply, answer) = oneshot::channel();
        let endpoint = endpoints::decode(&doc).unwrap();
        (
            Write {
                id,
                endpoint,
                hardware: Arc::new(hardware::Found::from_crawl(&crawl)),
                reply,
            },
            answer,
        )
    }

    #[tokio::test]
    async fn a_refused_bmc_leaves_nothing_and_the_rest_of_its_group_is_written() {
        let store = Store::open_in_memory().unwrap();
        // BMC 2's node MAC already belongs to another node: its POST fails
        // after the endpoint and components were put.
        store
            .write(|t| {
                crate::inventory::interfaces::bind(
                    t,
                    "02:00:00:00:00:02",
                    "x9c0s0b0n0",
                    None,
                    "",
                    true,
                )
            })
            .await
            .unwrap();
        let (writes, answers): (Vec<_>, Vec<_>) = (1..=4).map(crawled).unzip();
        write_group(&store, writes).await;
        let mut verdicts = Vec::new();
        for a in answers {
            verdicts.push(a.await.unwrap());
        }
        assert!(verdicts[0].is_ok() && verdicts[2].is_ok() && verdicts[3].is_ok());
        assert!(
            matches!(&verdicts[1], Err(WriteError::Domain(DomainError::Conflict(m))) if m.contains("x9c0s0b0n0")),
            "{:?}",
            verdicts[1]
        );
        let s = store.snapshot();
        for k in [1, 3, 4] {
            assert!(s.redfish_endpoints.contains_key(&format!("x1c0s{k}b0")));
            assert!(s.components.contains_key(&format!("x1c0s{k}b0n0")));
        }
        assert!(!s.redfish_endpoints.contains_key("x1c0s2b0"));
        assert!(!s.components.contains_key("x1c0s2b0"));
        assert!(!s.components.contains_key("x1c0s2b0n0"));
        assert!(!s.interfaces.contains_key("020100000002"));
        assert_eq!(s.interfaces["020000000002"].component_id, "x9c0s0b0n0");
        // Each BMC's node got its own NID, as if written one by one.
        let mut nids: Vec<i64> = [1, 3, 4]
            .iter()
            .filter_map(|k| s.components[&format!("x1c0s{k}b0n0")].nid)
            .collect();
        nids.dedup();
        assert_eq!(nids.len(), 3);
    }

    #[test]
    fn progress_keeps_one_report_per_address() {
        let mut p = Progress::default();
        let r = |a: &str, s: &str| BmcReport {
            address: a.into(),
            status: s.into(),
            ..Default::default()
        };
        p.put(r("a", "found"));
        p.put(r("b", "found"));
        p.put(r("a", "collected"));
        assert_eq!(p.bmcs.len(), 2);
        assert_eq!(p.bmcs[0].status, "collected");
    }
}
