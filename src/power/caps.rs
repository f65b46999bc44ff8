//! Running PCS power-capping tasks: each target screened against the
//! inventory (`cap::screen`), its BMC's limits read live
//! (`redfish::powercap`), a patch planned against them (`cap::plan_patch`)
//! and written. One session per BMC per task, shared by its nodes.
//!
//! Tasks live in memory for `CAP_KEEP` (at most `CAP_MAX_TASKS`, oldest
//! finished first out): a task is a few requests long and records nothing
//! the BMC does not hold itself. Deliberate difference: upstream keeps them
//! in its store across restarts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tracing::Instrument;

use super::cap::{self, CapOp, CapTask, PatchControl, PatchRequest, SnapshotRequest, Target};
use super::{NoRoute, Power, route_of};
use crate::inventory::components::parse_xname;
use crate::inventory::{DomainError, Snapshot};
use crate::redfish::{Bmc, powercap};

/// How long a task is kept (upstream's default expiry: 24 hours).
const CAP_KEEP: chrono::TimeDelta = chrono::TimeDelta::hours(24);
const CAP_MAX_TASKS: usize = 1000;

/// The capping tasks, by ID.
#[derive(Default)]
pub struct CapTasks(Mutex<BTreeMap<String, CapTask>>);

fn target_of(snap: &Snapshot, xname: &str) -> Target {
    let Some(c) = snap.components.get(xname) else {
        return Target::Missing;
    };
    if !c.kind.eq_ignore_ascii_case("Node") {
        return Target::NotNode(c.kind.clone());
    }
    if c.role
        .as_deref()
        .is_some_and(|r| r.eq_ignore_ascii_case("Management"))
    {
        return Target::Management;
    }
    match route_of(snap, xname) {
        Ok(_) => Target::Node,
        Err(NoRoute::Missing) => Target::Missing,
        Err(NoRoute::NoControl(_)) => Target::NoEndpoint,
    }
}

impl Power {
    /// The Redfish transport, for other services that talk to the same BMCs.
    pub fn redfish_transport(&self) -> crate::redfish::Transport {
        self.transport.clone()
    }

    /// `POST power-cap/snapshot`.
    pub fn cap_snapshot(self: &Arc<Self>, req: SnapshotRequest) -> Result<String, DomainError> {
        if req.xnames.is_empty() {
            return Err(DomainError::Invalid(
                "Xname list is empty. A list of xnames is required".into(),
            ));
        }
        let work = req.xnames.into_iter().map(|x| (x, None)).collect();
        Ok(self.cap_start("snapshot", work))
    }

    /// `PATCH power-cap`.
    pub fn cap_patch(self: &Arc<Self>, req: PatchRequest) -> Result<String, DomainError> {
        cap::check_patch(&req).map_err(DomainError::Invalid)?;
        // One entry per xname, its controls in order, a later value of a
        // control replacing an earlier one.
        let mut work: Vec<(String, Option<Vec<PatchControl>>)> = Vec::new();
        for c in req.components {
            let k = match work.iter().position(|(x, _)| *x == c.xname) {
                Some(k) => k,
                None => {
                    work.push((c.xname.clone(), Some(Vec::new())));
                    work.len() - 1
                }
            };
            if let Some(list) = work[k].1.as_mut() {
                for ctl in c.controls {
                    match list.iter_mut().find(|o| o.name == ctl.name) {
                        Some(o) => o.value = ctl.value,
                        None => list.push(ctl),
                    }
                }
            }
        }
        Ok(self.cap_start("patch", work))
    }

    pub fn cap_tasks(&self) -> Vec<CapTask> {
        self.cap_expire();
        let mut v: Vec<CapTask> = self
            .caps
            .0
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.create_time.cmp(&b.create_time).then(a.id.cmp(&b.id)));
        v
    }

    pub fn cap_task(&self, id: &str) -> Option<CapTask> {
        self.cap_expire();
        self.caps.0.lock().ok()?.get(id).cloned()
    }

    fn cap_expire(&self) {
        let now = super::now_rfc3339();
        if let Ok(mut m) = self.caps.0.lock() {
            m.retain(|_, t| t.expiration_time > now || t.status != cap::TASK_COMPLETED);
            while m.len() > CAP_MAX_TASKS {
                let oldest = m
                    .values()
                    .filter(|t| t.status == cap::TASK_COMPLETED)
                    .min_by(|a, b| a.create_time.cmp(&b.create_time))
                    .map(|t| t.id.clone());
                match oldest {
                    Some(id) => {
                        m.remove(&id);
                    }
                    None => break,
                }
            }
        }
    }

    fn cap_update(&self, id: &str, f: impl FnOnce(&mut CapTask)) {
        if let Ok(mut m) = self.caps.0.lock()
            && let Some(t) = m.get_mut(id)
        {
            f(t);
        }
    }

    fn cap_start(
        self: &Arc<Self>,
        kind: &'static str,
        work: Vec<(String, Option<Vec<PatchControl>>)>,
    ) -> String {
        self.cap_expire();
        let now = chrono::Utc::now();
        let fmt =
            |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let id = uuid::Uuid::new_v4().to_string();
        let task = CapTask {
            id: id.clone(),
            kind,
            create_time: fmt(now),
            expiration_time: fmt(now + CAP_KEEP),
            status: cap::TASK_NEW,
            ops: Vec::new(),
        };
        if let Ok(mut m) = self.caps.0.lock() {
            m.insert(id.clone(), task);
        }
        let me = self.clone();
        let span = tracing::info_span!("power_cap", task = %id, kind);
        let tid = id.clone();
        self.tasks.spawn(
            async move {
                tracing::info!(components = work.len(), "power capping task started");
                me.cap_run(&tid, work).await;
                me.cap_update(&tid, |t| t.status = cap::TASK_COMPLETED);
                tracing::info!("power capping task completed");
            }
            .instrument(span),
        );
        id
    }

    async fn cap_run(&self, id: &str, work: Vec<(String, Option<Vec<PatchControl>>)>) {
        let snap = self.store.snapshot();
        let mut ops: Vec<CapOp> = Vec::new();
        let mut by_bmc: super::ByBmc = BTreeMap::new();
        let mut asked: BTreeMap<String, Option<Vec<PatchControl>>> = BTreeMap::new();
        for (x, patch) in work {
            let xname = match parse_xname(&x) {
                Ok((canon, _)) => canon,
                Err(_) => {
                    ops.push(CapOp::failed(&x, "Invalid xname"));
                    continue;
                }
            };
            if let Some(done) = cap::screen(&xname, &target_of(&snap, &xname), patch.as_deref()) {
                ops.extend(done);
                continue;
            }
            if let Ok((ep, route)) = route_of(&snap, &xname) {
                by_bmc
                    .entry(ep.id.clone())
                    .or_insert_with(|| (ep, Vec::new()))
                    .1
                    .push(route);
                asked.insert(xname, patch);
            }
        }
        let pending = by_bmc.values().map(|(_, n)| n.len()).sum::<usize>();
        self.cap_update(id, |t| {
            t.status = if pending > 0 {
                cap::TASK_IN_PROGRESS
            } else {
                cap::TASK_NEW
            };
            t.ops = ops;
        });
        if pending == 0 {
            return;
        }
        let asked = &asked;
        futures_util::stream::iter(by_bmc.into_values())
            .for_each_concurrent(self.config.concurrency, |(ep, nodes)| {
                let snap = &snap;
                async move {
                    let Some(creds) = self.credentials(snap, &ep) else {
                        let e = format!("no credentials for BMC {}", ep.id);
                        let done = nodes.iter().map(|n| CapOp::failed(&n.xname, &e)).collect();
                        self.cap_update(id, |t| t.ops.extend::<Vec<_>>(done));
                        return;
                    };
                    let bmc = Bmc::new(&self.transport, ep.address(), creds);
                    let login = bmc.login().await;
                    for n in &nodes {
                        let patch = asked.get(&n.xname).cloned().flatten();
                        let done = match &login {
                            Err(e) => vec![CapOp::failed(&n.xname, e.to_string())],
                            Ok(()) => cap_node(&bmc, &n.xname, &n.system, patch.as_deref()).await,
                        };
                        self.cap_update(id, |t| t.ops.extend(done));
                    }
                    bmc.logout().await;
                }
            })
            .await;
    }
}

/// One node: read its limits; for a patch, plan and write.
async fn cap_node(
    bmc: &Bmc,
    xname: &str,
    system: &str,
    patch: Option<&[PatchControl]>,
) -> Vec<CapOp> {
    let limits = match powercap::power_limits(bmc, system).await {
        Ok(l) => l,
        Err(e) => return vec![CapOp::failed(xname, e.to_string())],
    };
    let Some(ctls) = patch else {
        return vec![cap::snapshot(xname, &limits)];
    };
    let plan = cap::plan_patch(xname, &limits, ctls);
    let mut out = plan.refused;
    let Some(mut op) = plan.op else {
        return out;
    };
    if !plan.writes.is_empty() {
        op.status = cap::OP_SUCCEEDED;
        for (k, watts) in plan.writes {
            if let Err(e) = powercap::set_power_limit(bmc, &limits[k].at, watts).await {
                op.status = cap::OP_FAILED;
                if !op.component.error.is_empty() {
                    op.component.error.push_str("; ");
                }
                op.component.error.push_str(&e.to_string());
            }
        }
    }
    out.push(op);
    out
}
