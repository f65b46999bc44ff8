//! PCS-compatible power control: transitions, power status, and a sampler
//! that keeps the inventory's power state current (replaces PCS).
//!
//! A transition is persisted when it is accepted and as its tasks progress
//! (at most once a second, so a thousand-node transition is not a thousand
//! rewrites of a thousand-task record), and once more when it ends.
//!
//! On one head (SQLite) the appliance is the only writer, so after a restart
//! any transition still marked running was cut short: it is ended
//! `aborted`. Where several heads share the store, a transition is driven by
//! the head holding its lease (`power-transition/<id>`, claimed before the
//! record is written). A head that stops or dies leaves it running in the
//! store; another head claims the lease once it is released or expired and
//! continues the tasks not yet ended (each re-reads the node's power state
//! and plans from there, so a task cut short is simply planned again; its
//! deadline counts from the takeover). A head that cannot renew the lease
//! stops driving its BMCs before the lease can expire, so two heads never
//! drive one transition. An abort asked of a head that does not drive the
//! transition is recorded in the store; the driving head sees it within a
//! second and aborts. The sampler runs on the head holding `power-sampler`.
//!
//! Each BMC gets one session per transition or sample, shared by its nodes,
//! and the session is deleted when that work ends, however it ends.

pub mod cap;
mod caps;
pub mod plan;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::ca::secret::SecretBox;
use crate::config::PowerConfig;
use crate::discover::{credentials, targets};
use crate::inventory::components::parse_xname;
use crate::inventory::leases::Held;
use crate::inventory::model::{
    Component, ComponentEndpoint, PowerTask, PowerTransition, RedfishEndpoint,
};
use crate::inventory::{DomainError, Snapshot, Store, WriteError};
use crate::redfish::{self, Bmc, Credentials, Transport};
use plan::{Operation, Phase};

/// The lease of the head that drives a transition.
fn lease_name(id: &str) -> String {
    format!("power-transition/{id}")
}

/// The lease of the head that samples power states.
const SAMPLER_LEASE: &str = "power-sampler";

/// Statuses of a transition not yet ended.
fn unfinished(status: &str) -> bool {
    matches!(status, plan::NEW | plan::IN_PROGRESS | plan::ABORT_SIGNALED)
}

/// How long finished transitions are kept.
const KEEP: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// `POST transitions`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct TransitionRequest {
    pub operation: String,
    /// Minutes; absent = 5, 0 = do not wait, -1 = no deadline. Fractions
    /// are accepted (PCS takes whole minutes).
    #[serde(rename = "taskdeadlineminutes", alias = "taskDeadlineMinutes", default)]
    #[schemars(rename = "taskDeadlineMinutes")]
    pub deadline_minutes: Option<f64>,
    #[serde(default)]
    pub location: Vec<Location>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct Location {
    pub xname: String,
    #[serde(rename = "deputykey", alias = "deputyKey", default)]
    #[schemars(rename = "deputyKey")]
    pub deputy_key: Option<String>,
}

/// What the sampler (or a transition) last learnt about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePower {
    /// `on`, `off` or `undefined`.
    pub power: String,
    pub available: bool,
    pub error: String,
    pub supported: Vec<&'static str>,
    /// RFC 3339.
    pub last_updated: String,
    at: Instant,
}

struct Running {
    cancel: CancellationToken,
    live: Arc<Mutex<PowerTransition>>,
}

/// The power service.
pub struct Power {
    store: Store,
    secrets: Arc<SecretBox>,
    transport: Transport,
    config: PowerConfig,
    running: Mutex<HashMap<String, Running>>,
    status: Mutex<HashMap<String, NodePower>>,
    /// Power-capping tasks (`caps.rs`).
    caps: caps::CapTasks,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A node's reset target and where its BMC is.
#[derive(Debug, Clone)]
struct NodeRoute {
    xname: String,
    system: String,
    target: String,
    allowed: Vec<String>,
}

/// Nodes grouped by the endpoint that controls them.
type ByBmc = BTreeMap<String, (RedfishEndpoint, Vec<NodeRoute>)>;

/// Why a component cannot be powered.
enum NoRoute {
    /// Not in the inventory (upstream: "Missing xname").
    Missing,
    /// In the inventory, but nothing here controls its power.
    NoControl(String),
}

impl std::fmt::Display for NoRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoRoute::Missing => f.write_str("Missing xname"),
            NoRoute::NoControl(e) => f.write_str(e),
        }
    }
}

/// A task's end (or progress) as PCS reports it.
struct Outcome {
    status: &'static str,
    description: String,
    error: String,
}

impl Outcome {
    fn succeeded(description: String) -> Outcome {
        Outcome {
            status: plan::SUCCEEDED,
            description,
            error: String::new(),
        }
    }
    fn failed(error: impl Into<String>) -> Outcome {
        Outcome {
            status: plan::FAILED,
            description: "Failed to achieve transition".into(),
            error: error.into(),
        }
    }
    /// Upstream's words (its tests compare them); the reason goes to the
    /// log.
    fn unsupported(op: Operation, why: impl Into<String>) -> Outcome {
        tracing::info!(reason = %why.into(), operation = op.as_str(), "power transition unsupported");
        Outcome {
            status: plan::UNSUPPORTED,
            description: format!(
                "Component does not support the specified transition operation, {}",
                op.as_str()
            ),
            error: "Unsupported for transition operation".into(),
        }
    }
}

fn route_of(snap: &Snapshot, xname: &str) -> Result<(RedfishEndpoint, NodeRoute), NoRoute> {
    if !snap.components.contains_key(xname) {
        return Err(NoRoute::Missing);
    }
    let ce: &ComponentEndpoint = snap
        .component_endpoints
        .get(xname)
        .filter(|c| c.redfish_type == "ComputerSystem")
        .ok_or_else(|| {
            NoRoute::NoControl(format!(
                "{xname} has no Redfish ComputerSystem endpoint (discover its BMC first)"
            ))
        })?;
    let ep = snap
        .redfish_endpoints
        .get(&ce.redfish_endpoint_id)
        .ok_or_else(|| {
            NoRoute::NoControl(format!(
                "the RedfishEndpoint {} of {xname} is gone",
                ce.redfish_endpoint_id
            ))
        })?;
    let reset = ce
        .redfish_system_info
        .as_ref()
        .and_then(|i| i.actions.as_ref())
        .and_then(|a| a.computer_system_reset.clone())
        .unwrap_or_default();
    Ok((
        RedfishEndpoint::clone(ep),
        NodeRoute {
            xname: xname.to_string(),
            system: ce.odata_id.clone(),
            target: reset.target,
            allowed: reset.allowable_values,
        },
    ))
}

impl Power {
    pub fn new(
        store: Store,
        secrets: Arc<SecretBox>,
        transport: Transport,
        config: PowerConfig,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Power {
        Power {
            store,
            secrets,
            transport,
            config,
            running: Mutex::new(HashMap::new()),
            status: Mutex::new(HashMap::new()),
            caps: caps::CapTasks::default(),
            tasks,
            shutdown,
        }
    }

    /// Ends transitions a previous run left running (one head), or starts
    /// looking for transitions whose head is gone (shared store); starts the
    /// sampler.
    pub async fn start(self: &Arc<Self>) -> Result<(), WriteError> {
        if self.store.leases().shared() {
            let me = self.clone();
            self.tasks.spawn(async move { me.take_over().await });
            let me = self.clone();
            self.tasks.spawn(async move { me.sampler().await });
            return Ok(());
        }
        self.store
            .write(|t| {
                let stale: Vec<PowerTransition> = t
                    .model()
                    .power_transitions
                    .values()
                    .filter(|p| {
                        matches!(
                            p.status.as_str(),
                            plan::NEW | plan::IN_PROGRESS | plan::ABORT_SIGNALED
                        )
                    })
                    .cloned()
                    .collect();
                for mut p in stale {
                    p.status = plan::ABORTED.into();
                    for task in &mut p.tasks {
                        if matches!(task.status.as_str(), plan::NEW | plan::IN_PROGRESS) {
                            task.status = plan::FAILED.into();
                            task.description = "Failed to achieve transition".into();
                            task.error = "the appliance restarted during the transition".into();
                        }
                    }
                    t.put_power_transition(p);
                }
                Ok(())
            })
            .await?;
        let me = self.clone();
        self.tasks.spawn(async move { me.sampler().await });
        Ok(())
    }

    /// Shared store: every renewal interval, claims the transitions left
    /// running by a head that no longer holds their lease, and continues
    /// them.
    async fn take_over(self: Arc<Self>) {
        let leases = self.store.leases();
        loop {
            let snap = self.store.snapshot();
            let orphans: Vec<PowerTransition> = snap
                .power_transitions
                .values()
                .filter(|t| unfinished(&t.status))
                .filter(|t| self.running.lock().is_ok_and(|r| !r.contains_key(&t.id)))
                .cloned()
                .collect();
            drop(snap);
            for t in orphans {
                match leases.claim(&lease_name(&t.id)).await {
                    Ok(Some(held)) => {
                        tracing::info!(transition = %t.id, "taking over a power transition whose head is gone");
                        if let Some(op) = Operation::parse(&t.operation) {
                            self.launch(op, t, held);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, "cannot claim a power transition"),
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(leases.renew_every()) => {}
            }
        }
    }

    /// Every `sample_interval_secs`: read every node's power state (on the
    /// head holding the sampler's lease), and delete expired transitions.
    async fn sampler(self: Arc<Self>) {
        let every = self.config.sample_interval_secs;
        let leases = self.store.leases();
        let mut held: Option<Held> = None;
        loop {
            if held.as_ref().is_some_and(|h| h.lost().is_cancelled()) {
                held = None;
            }
            if every > 0 && held.is_none() {
                match leases.claim(SAMPLER_LEASE).await {
                    Ok(h) => held = h,
                    Err(e) => tracing::debug!(error = %e, "cannot claim the sampler's lease"),
                }
            }
            if every > 0
                && let Some(h) = &held
            {
                let lost = h.lost();
                tokio::select! {
                    _ = self.sample(None) => {}
                    _ = lost.cancelled() => {}
                }
            }
            self.expire().await;
            let mut pause = Duration::from_secs(if every > 0 { every } else { 3600 });
            if every > 0 && held.is_none() {
                // Ready to take over soon after the sampling head is gone.
                pause = pause.min(leases.renew_every());
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    if let Some(h) = held {
                        h.release().await;
                    }
                    return;
                }
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn expire(&self) {
        let cutoff = chrono::Utc::now();
        let r = self
            .store
            .write(move |t| {
                let old: Vec<String> = t
                    .model()
                    .power_transitions
                    .values()
                    .filter(|p| {
                        chrono::DateTime::parse_from_rfc3339(&p.expiration_time)
                            .is_ok_and(|e| e < cutoff)
                            && matches!(p.status.as_str(), plan::COMPLETED | plan::ABORTED)
                    })
                    .map(|p| p.id.clone())
                    .collect();
                for id in old {
                    t.delete_power_transition(&id);
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot delete expired power transitions");
        }
    }

    fn credentials(&self, snap: &Snapshot, ep: &RedfishEndpoint) -> Option<Credentials> {
        let mut names = vec![ep.id.clone(), ep.address().to_string()];
        names.extend(targets::ip_of(ep.address()).map(|i| i.to_string()));
        if !ep.mac_addr.is_empty() {
            names.push(ep.mac_addr.clone());
        }
        credentials::resolve(snap, &self.secrets, &names, Some(ep), None)
    }

    // ------------------------------------------------------------ transitions

    /// Accepts a transition and starts it.
    pub async fn start_transition(
        self: &Arc<Self>,
        req: TransitionRequest,
    ) -> Result<PowerTransition, WriteError> {
        let op = Operation::parse(&req.operation).ok_or_else(|| {
            DomainError::Invalid(format!(
                "operation {:?} is not one of on, off, soft-off, soft-restart, hard-restart, init, force-off",
                req.operation
            ))
        })?;
        let deadline = req.deadline_minutes.unwrap_or(5.0);
        if !deadline.is_finite() {
            return Err(DomainError::Invalid("taskDeadlineMinutes must be a number".into()).into());
        }
        let mut xnames: Vec<String> = Vec::new();
        for l in &req.location {
            let (x, _) = parse_xname(&l.xname)?;
            if !xnames.contains(&x) {
                xnames.push(x);
            }
        }
        if xnames.is_empty() {
            return Err(DomainError::Invalid("location lists no xname".into()).into());
        }
        let now = chrono::Utc::now();
        let fmt =
            |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let tr = PowerTransition {
            id: uuid::Uuid::new_v4().to_string(),
            operation: op.as_str().into(),
            deadline_minutes: deadline,
            create_time: fmt(now),
            expiration_time: fmt(now + KEEP),
            status: plan::NEW.into(),
            tasks: xnames
                .iter()
                .map(|x| PowerTask {
                    xname: x.clone(),
                    status: plan::NEW.into(),
                    description: String::new(),
                    error: String::new(),
                })
                .collect(),
        };
        // Claimed before the record exists, so no other head takes it up.
        let held = self
            .store
            .leases()
            .claim(&lease_name(&tr.id))
            .await?
            .ok_or_else(|| {
                WriteError::Store(crate::inventory::StoreError::Sql(format!(
                    "the lease of the new transition {} is held by another head",
                    tr.id
                )))
            })?;
        // Listed as running before it is stored: this head's takeover
        // never mistakes it for an orphan.
        let running = self.prepare(&tr);
        let stored = tr.clone();
        if let Err(e) = self
            .store
            .write(move |t| {
                t.put_power_transition(stored);
                Ok(())
            })
            .await
        {
            if let Ok(mut r) = self.running.lock() {
                r.remove(&tr.id);
            }
            held.release().await;
            return Err(e);
        }
        tracing::debug!(nodes = xnames.len(), "power transition accepted");
        self.spawn_run(op, running, held);
        Ok(tr)
    }

    /// Lists `tr` as running on this head and returns its handles.
    fn prepare(&self, tr: &PowerTransition) -> (CancellationToken, Arc<Mutex<PowerTransition>>) {
        // One head: a shutdown ends the transition (as aborted). Shared:
        // a shutdown hands it over, so only an abort cancels it.
        let cancel = if self.store.leases().shared() {
            CancellationToken::new()
        } else {
            self.shutdown.child_token()
        };
        let live = Arc::new(Mutex::new(tr.clone()));
        if let Ok(mut r) = self.running.lock() {
            r.insert(
                tr.id.clone(),
                Running {
                    cancel: cancel.clone(),
                    live: live.clone(),
                },
            );
        }
        (cancel, live)
    }

    /// Continues a stored transition whose lease this head now holds.
    fn launch(self: &Arc<Self>, op: Operation, tr: PowerTransition, held: Held) {
        let running = self.prepare(&tr);
        if tr.status == plan::ABORT_SIGNALED {
            running.0.cancel();
        }
        self.spawn_run(op, running, held);
    }

    fn spawn_run(
        self: &Arc<Self>,
        op: Operation,
        (cancel, live): (CancellationToken, Arc<Mutex<PowerTransition>>),
        held: Held,
    ) {
        let (id, deadline, nodes) = match live.lock() {
            Ok(t) => (t.id.clone(), t.deadline_minutes, t.tasks.len()),
            Err(_) => return,
        };
        // Driving stops when the lease is lost and, on a shared store, when
        // this head shuts down: another head continues.
        let stop = if self.store.leases().shared() {
            let stop = self.shutdown.child_token();
            let (lost, s) = (held.lost(), stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = lost.cancelled() => s.cancel(),
                    _ = s.cancelled() => {}
                }
            });
            stop
        } else {
            held.lost()
        };
        let me = self.clone();
        let span = tracing::info_span!("power", transition = %id, operation = op.as_str());
        self.tasks.spawn(
            async move {
                tracing::info!(nodes, "power transition started");
                let watch = live.clone();
                me.run(op, deadline, live, cancel, stop.clone()).await;
                if stop.is_cancelled() {
                    tracing::info!("power transition handed over to another head");
                } else {
                    let status = watch.lock().map(|t| t.status.clone()).unwrap_or_default();
                    tracing::info!(status, "power transition ended");
                }
                held.release().await;
            }
            .instrument(span),
        );
    }

    /// The transition as stored, or as it stands now if it is running.
    pub fn transition(&self, id: &str) -> Option<PowerTransition> {
        if let Ok(r) = self.running.lock()
            && let Some(run) = r.get(id)
            && let Ok(live) = run.live.lock()
        {
            return Some(live.clone());
        }
        self.store.snapshot().power_transitions.get(id).cloned()
    }

    pub fn transitions(&self) -> Vec<PowerTransition> {
        let snap = self.store.snapshot();
        let mut out: Vec<PowerTransition> = snap.power_transitions.values().cloned().collect();
        for t in &mut out {
            if let Some(live) = self.transition_live(&t.id) {
                *t = live;
            }
        }
        out.sort_by(|a, b| a.create_time.cmp(&b.create_time).then(a.id.cmp(&b.id)));
        out
    }

    fn transition_live(&self, id: &str) -> Option<PowerTransition> {
        let r = self.running.lock().ok()?;
        let live = r.get(id)?.live.lock().ok()?;
        Some(live.clone())
    }

    /// `DELETE transitions/{id}`.
    pub fn abort(&self, id: &str) -> Result<(), DomainError> {
        if let Ok(r) = self.running.lock()
            && let Some(run) = r.get(id)
        {
            if let Ok(mut live) = run.live.lock() {
                if matches!(live.status.as_str(), plan::COMPLETED | plan::ABORTED) {
                    return Err(DomainError::Invalid(format!(
                        "transition {id} is complete and cannot be aborted"
                    )));
                }
                live.status = plan::ABORT_SIGNALED.into();
            }
            run.cancel.cancel();
            return Ok(());
        }
        match self.store.snapshot().power_transitions.get(id) {
            None => Err(DomainError::NotFound(format!("no transition {id}"))),
            Some(t) if unfinished(&t.status) && self.store.leases().shared() => Ok(()),
            Some(_) => Err(DomainError::Invalid(format!(
                "transition {id} is complete and cannot be aborted"
            ))),
        }
    }

    /// Shared store: an abort of a transition another head drives is
    /// recorded in the store, where that head (or the next) sees it.
    pub async fn abort_elsewhere(&self, id: &str) -> Result<(), WriteError> {
        if self.transition_live(id).is_some() || !self.store.leases().shared() {
            return Ok(());
        }
        let id = id.to_string();
        self.store
            .write(move |t| {
                if let Some(tr) = t.model().power_transitions.get(&id)
                    && matches!(tr.status.as_str(), plan::NEW | plan::IN_PROGRESS)
                {
                    let mut tr = tr.clone();
                    tr.status = plan::ABORT_SIGNALED.into();
                    t.put_power_transition(tr);
                }
                Ok(())
            })
            .await
    }

    async fn flush(&self, live: &Mutex<PowerTransition>) {
        let Ok(doc) = live.lock().map(|t| t.clone()) else {
            return;
        };
        if let Err(e) = self
            .store
            .write(move |t| {
                let mut doc = doc;
                // An abort recorded by another head is kept until this one
                // has acted on it.
                if t.model()
                    .power_transitions
                    .get(&doc.id)
                    .is_some_and(|s| s.status == plan::ABORT_SIGNALED)
                    && matches!(doc.status.as_str(), plan::NEW | plan::IN_PROGRESS)
                {
                    doc.status = plan::ABORT_SIGNALED.into();
                }
                t.put_power_transition(doc);
                Ok(())
            })
            .await
        {
            tracing::warn!(error = %e, "cannot store power transition progress");
        }
    }

    async fn run(
        self: Arc<Self>,
        op: Operation,
        deadline: f64,
        live: Arc<Mutex<PowerTransition>>,
        cancel: CancellationToken,
        stop: CancellationToken,
    ) {
        // Tasks already ended (by a head that drove it before) stay ended.
        let (id, xnames) = match live.lock() {
            Ok(mut t) => {
                if t.status != plan::ABORT_SIGNALED {
                    t.status = plan::IN_PROGRESS.into();
                }
                (
                    t.id.clone(),
                    t.tasks
                        .iter()
                        .filter(|k| matches!(k.status.as_str(), plan::NEW | plan::IN_PROGRESS))
                        .map(|k| k.xname.clone())
                        .collect::<Vec<_>>(),
                )
            }
            Err(_) => return,
        };
        let set = |xname: &str, outcome: Outcome| {
            if let Ok(mut t) = live.lock()
                && let Some(task) = t.tasks.iter_mut().find(|k| k.xname == xname)
            {
                task.status = outcome.status.into();
                task.description = outcome.description;
                task.error = outcome.error;
            }
        };
        let snap = self.store.snapshot();
        let mut by_bmc: ByBmc = BTreeMap::new();
        for x in &xnames {
            match route_of(&snap, x) {
                Ok((ep, route)) => by_bmc
                    .entry(ep.id.clone())
                    .or_insert_with(|| (ep, Vec::new()))
                    .1
                    .push(route),
                Err(NoRoute::Missing) => set(x, Outcome::failed("Missing xname")),
                Err(NoRoute::NoControl(e)) => set(x, Outcome::unsupported(op, e)),
            }
        }
        let deadline_at =
            (deadline > 0.0).then(|| Instant::now() + Duration::from_secs_f64(deadline * 60.0));

        // Progress reaches the store once a second while tasks run; an
        // abort another head recorded is picked up as often.
        let flusher = {
            let (me, live, stop) = (self.clone(), live.clone(), stop.child_token());
            let (s, abort) = (stop.clone(), cancel.clone());
            let h = tokio::spawn(
                async move {
                    let mut last = None;
                    loop {
                        tokio::select! {
                            _ = s.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        let id = live.lock().map(|t| t.id.clone()).unwrap_or_default();
                        if me
                            .store
                            .snapshot()
                            .power_transitions
                            .get(&id)
                            .is_some_and(|t| t.status == plan::ABORT_SIGNALED)
                        {
                            abort.cancel();
                        }
                        let now = live.lock().ok().map(|t| t.tasks.clone());
                        if now != last {
                            me.flush(&live).await;
                            last = now;
                        }
                    }
                }
                .in_current_span(),
            );
            (stop, h)
        };

        let work = futures_util::stream::iter(by_bmc.into_values()).for_each_concurrent(
            self.config.concurrency,
            |(ep, nodes)| {
                let (me, snap, set, cancel, stop) = (&self, &snap, &set, &cancel, &stop);
                async move {
                    let Some(creds) = me.credentials(snap, &ep) else {
                        for n in &nodes {
                            set(
                                &n.xname,
                                Outcome::failed(format!("no credentials for BMC {}", ep.id)),
                            );
                        }
                        return;
                    };
                    let bmc = Bmc::new(&me.transport, ep.address(), creds);
                    // Never cancelled half-way: a session the BMC opened but
                    // whose token never arrived could not be deleted.
                    let login = bmc.login().await;
                    if let Err(e) = login {
                        for n in &nodes {
                            set(&n.xname, Outcome::failed(e.to_string()));
                        }
                        bmc.logout().await;
                        return;
                    }
                    futures_util::future::join_all(nodes.iter().map(|n| async {
                        set(
                            &n.xname,
                            Outcome {
                                status: plan::IN_PROGRESS,
                                description: "Gathering data".into(),
                                error: String::new(),
                            },
                        );
                        let outcome = tokio::select! {
                            biased;
                            _ = cancel.cancelled() => Some(Outcome {
                                status: plan::FAILED,
                                description: "Aborted".into(),
                                error: "Transition aborted".into(),
                            }),
                            // Handed over: the next head runs the task again.
                            _ = stop.cancelled() => None,
                            r = me.run_task(&bmc, n, op, deadline, deadline_at) => Some(r),
                        };
                        if let Some(outcome) = outcome {
                            set(&n.xname, outcome);
                        }
                    }))
                    .await;
                    bmc.logout().await;
                }
            },
        );
        work.await;

        flusher.0.cancel();
        let _ = flusher.1.await;
        if stop.is_cancelled() && !cancel.is_cancelled() {
            // Left running in the store for the head that takes it over.
            if let Ok(mut r) = self.running.lock() {
                r.remove(&id);
            }
            return;
        }
        if let Ok(mut t) = live.lock() {
            t.status = if cancel.is_cancelled() {
                plan::ABORTED
            } else {
                plan::COMPLETED
            }
            .into();
        }
        self.flush(&live).await;
        if let Ok(mut r) = self.running.lock() {
            r.remove(&id);
        }
    }

    /// One node: read its state, plan, reset, confirm. Returns the task's
    /// outcome in upstream PCS's words.
    async fn run_task(
        &self,
        bmc: &Bmc,
        n: &NodeRoute,
        op: Operation,
        deadline: f64,
        deadline_at: Option<Instant>,
    ) -> Outcome {
        let state = match redfish::system_state(bmc, &n.system).await {
            Ok(s) => s,
            Err(e) => return Outcome::failed(e.to_string()),
        };
        let (target, allowed) = match &state.reset {
            Some(r) if !r.target.is_empty() => (
                r.target.clone(),
                if r.allowed.is_empty() {
                    n.allowed.clone()
                } else {
                    r.allowed.clone()
                },
            ),
            _ => (n.target.clone(), n.allowed.clone()),
        };
        let on = plan::is_on(&state.power_state);
        let phases = match plan::plan(op, &allowed, on) {
            Ok(p) => p,
            Err(e) => return Outcome::unsupported(op, e),
        };
        if phases.is_empty() {
            self.remember(&n.xname, on, &allowed, "");
            if let Some(on) = on {
                self.record_states(vec![(n.xname.clone(), on)]).await;
            }
            return Outcome::succeeded("Component already in desired state".into());
        }
        if target.is_empty() {
            return Outcome::unsupported(op, "no #ComputerSystem.Reset action known for this node");
        }
        let last = phases.len() - 1;
        for (k, phase) in phases.iter().enumerate() {
            let action = phase.reset.to_ascii_lowercase();
            if let Err(e) = self.reset(bmc, &target, &phase.reset).await {
                return Outcome {
                    status: plan::FAILED,
                    description: format!("Failed to apply transition, {action}"),
                    error: e.to_string(),
                };
            }
            if deadline == 0.0 && k == last {
                return Outcome::succeeded(format!(
                    "Transition applied, {action}. Not confirming."
                ));
            }
            match self.confirm(bmc, n, &target, phase, deadline_at).await {
                Ok(confirmed) => {
                    // The inventory learns the confirmed state now, not at
                    // the next sample.
                    self.remember(&n.xname, Some(phase.want_on), &allowed, "");
                    self.record_states(vec![(n.xname.clone(), phase.want_on)])
                        .await;
                    if k == last {
                        let action = confirmed.unwrap_or(action);
                        return Outcome::succeeded(format!("Transition confirmed, {action}"));
                    }
                }
                Err(e) => {
                    self.remember(&n.xname, Some(!phase.want_on), &allowed, "");
                    return Outcome::failed(e);
                }
            }
        }
        Outcome::succeeded("Component already in desired state".into())
    }

    async fn reset(&self, bmc: &Bmc, target: &str, reset: &str) -> Result<(), redfish::Error> {
        bmc.post(target, &json!({ "ResetType": reset }))
            .await
            .map(|_| ())
    }

    /// Polls until the power is as the phase wants; at the deadline sends
    /// the escalation (if any) and polls a little longer.
    async fn confirm(
        &self,
        bmc: &Bmc,
        n: &NodeRoute,
        target: &str,
        phase: &Phase,
        deadline_at: Option<Instant>,
    ) -> Result<Option<String>, String> {
        let poll = Duration::from_secs(self.config.poll_interval_secs);
        let mut escalated_until: Option<Instant> = None;
        loop {
            tokio::time::sleep(poll).await;
            match redfish::system_state(bmc, &n.system).await {
                Ok(s)
                    if plan::is_on(&s.power_state) == Some(phase.want_on)
                        && !s.power_state.to_ascii_lowercase().starts_with("powering") =>
                {
                    // The action that got it there, when it was the escalation.
                    return Ok(escalated_until
                        .and(phase.escalate.as_ref())
                        .map(|f| f.to_ascii_lowercase()));
                }
                Ok(_) => {}
                Err(e) if e.is_auth() => return Err(e.to_string()),
                Err(e) => tracing::debug!(node = %n.xname, error = %e, "power state poll failed"),
            }
            let now = Instant::now();
            if let Some(until) = escalated_until {
                if now >= until {
                    return Err(format!(
                        "still {} after {} at the deadline",
                        if phase.want_on { "off" } else { "on" },
                        phase.escalate.as_deref().unwrap_or("")
                    ));
                }
                continue;
            }
            if deadline_at.is_some_and(|d| now >= d) {
                match &phase.escalate {
                    Some(force) => {
                        tracing::info!(node = %n.xname, reset = %force, "deadline reached; escalating");
                        if let Err(e) = bmc.post(target, &json!({"ResetType": force})).await {
                            return Err(format!("deadline reached; {force} failed: {e}"));
                        }
                        escalated_until =
                            Some(now + Duration::from_secs(self.config.escalation_secs));
                    }
                    None => {
                        return Err(format!(
                            "deadline reached; power is still {}",
                            if phase.want_on { "off" } else { "on" }
                        ));
                    }
                }
            }
        }
    }

    fn remember(&self, xname: &str, on: Option<bool>, allowed: &[String], error: &str) {
        if let Ok(mut s) = self.status.lock() {
            s.insert(
                xname.to_string(),
                NodePower {
                    power: match on {
                        Some(true) => "on",
                        Some(false) => "off",
                        None => "undefined",
                    }
                    .into(),
                    available: error.is_empty(),
                    error: error.to_string(),
                    supported: plan::supported(allowed),
                    last_updated: now_rfc3339(),
                    at: Instant::now(),
                },
            );
        }
    }

    // ------------------------------------------------------------ status

    /// Reads the power state of `only` (else every node with a Redfish
    /// endpoint) and writes changed Component States.
    pub async fn sample(&self, only: Option<&[String]>) {
        let snap = self.store.snapshot();
        let mut by_bmc: ByBmc = BTreeMap::new();
        let nodes: Vec<String> = match only {
            Some(list) => list.to_vec(),
            None => snap
                .component_endpoints
                .values()
                .filter(|c| c.redfish_type == "ComputerSystem")
                .map(|c| c.id.clone())
                .collect(),
        };
        for x in &nodes {
            match route_of(&snap, x) {
                Ok((ep, r)) => by_bmc
                    .entry(ep.id.clone())
                    .or_insert_with(|| (ep, Vec::new()))
                    .1
                    .push(r),
                Err(e) => self.remember(x, None, &[], &e.to_string()),
            }
        }
        let seen: Mutex<Vec<(String, bool)>> = Mutex::new(Vec::new());
        futures_util::stream::iter(by_bmc.into_values())
            .for_each_concurrent(self.config.concurrency, |(ep, routes)| {
                let (snap, seen) = (&snap, &seen);
                async move {
                    let Some(creds) = self.credentials(snap, &ep) else {
                        for r in &routes {
                            self.remember(&r.xname, None, &r.allowed, "no credentials for its BMC");
                        }
                        return;
                    };
                    let bmc = Bmc::new(&self.transport, ep.address(), creds);
                    let login = bmc.login().await;
                    for r in &routes {
                        let st = match &login {
                            Ok(()) => redfish::system_state(&bmc, &r.system).await,
                            Err(e) => Err(e.clone()),
                        };
                        match st {
                            Ok(s) => {
                                let on = plan::is_on(&s.power_state);
                                let allowed = s
                                    .reset
                                    .map(|x| x.allowed)
                                    .filter(|a| !a.is_empty())
                                    .unwrap_or_else(|| r.allowed.clone());
                                self.remember(&r.xname, on, &allowed, "");
                                if let (Some(on), Ok(mut v)) = (on, seen.lock()) {
                                    v.push((r.xname.clone(), on));
                                }
                            }
                            Err(e) => self.remember(&r.xname, None, &r.allowed, &e.to_string()),
                        }
                    }
                    bmc.logout().await;
                }
            })
            .await;
        let seen = seen.into_inner().unwrap_or_default();
        self.record_states(seen).await;
    }

    /// Writes Component States for observed power states (`On`/`Off` as
    /// `plan::component_state` allows).
    async fn record_states(&self, seen: Vec<(String, bool)>) {
        if seen.is_empty() {
            return;
        }
        let r = self
            .store
            .write(move |t| {
                for (x, on) in seen {
                    if let Some(c) = t.model().components.get(&x)
                        && let Some(new) = plan::component_state(&c.state, on)
                    {
                        let mut c = Component::clone(c);
                        c.state = new.into();
                        t.put_component(c);
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot record sampled power states");
        }
    }

    /// PCS `power-status` entries for `xnames` (all nodes with an endpoint if
    /// empty). Entries older than two sample intervals are read live first.
    pub async fn status(&self, xnames: &[String]) -> Vec<Value> {
        let snap = self.store.snapshot();
        let wanted: Vec<String> = if xnames.is_empty() {
            snap.component_endpoints
                .values()
                .filter(|c| c.redfish_type == "ComputerSystem")
                .map(|c| c.id.clone())
                .collect()
        } else {
            xnames.to_vec()
        };
        let fresh = Duration::from_secs(2 * self.config.sample_interval_secs);
        let stale: Vec<String> = {
            let s = self.status.lock().map(|s| s.clone()).unwrap_or_default();
            wanted
                .iter()
                .filter(|x| {
                    s.get(*x)
                        .is_none_or(|p| fresh.is_zero() || p.at.elapsed() > fresh)
                })
                .cloned()
                .collect()
        };
        if !stale.is_empty() {
            self.sample(Some(&stale)).await;
        }
        let s = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        wanted
            .iter()
            .map(|x| match s.get(x) {
                // Upstream's entry for a component the inventory lacks.
                _ if !snap.components.contains_key(x) => json!({
                    "xname": x, "powerState": "", "managementState": "",
                    "error": "Component not found in component map.",
                    "supportedPowerTransitions": [], "lastUpdated": "",
                }),
                Some(p) => json!({
                    "xname": x,
                    "powerState": p.power,
                    "managementState": if p.available { "available" } else { "unavailable" },
                    "error": p.error,
                    "supportedPowerTransitions": p.supported,
                    "lastUpdated": p.last_updated,
                }),
                None => json!({
                    "xname": x, "powerState": "undefined", "managementState": "unavailable",
                    "error": "not sampled", "supportedPowerTransitions": [], "lastUpdated": "",
                }),
            })
            .collect()
    }
}

/// A transition as PCS shows it: with `taskCounts`, and with or without its
/// tasks.
pub fn transition_json(t: &PowerTransition, with_tasks: bool) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        // Kept for the run, not part of upstream's transition object.
        o.remove("taskDeadlineMinutes");
        o.insert(
            "taskCounts".into(),
            plan::task_counts(t.tasks.iter().map(|k| k.status.as_str())),
        );
        if !with_tasks {
            o.remove("tasks");
        }
    }
    v
}
