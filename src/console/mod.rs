//! Serial consoles: for every node whose BMC serves one (see `targets`), a
//! session kept open while the node is in the inventory, its output written
//! to a rotating per-node log (`log`) and fanned out to any number of
//! viewers; at most one viewer writes. Sessions reconnect with back-off
//! (`session`); the backends are adapters behind them, chosen per BMC
//! (`targets`): SSH (`ssh`) and IPMI serial-over-LAN (`ipmi`), both seen
//! by the session task as a [`Link`] that yields output, takes keystrokes
//! and closes.
//!
//! Where several heads share the store, a BMC's console session is opened
//! by one head only, the holder of its lease (`console/<bmc>`); the others
//! list the console as `elsewhere`, naming the head that holds it, and keep
//! trying to claim it, so one of them takes the session over when that head
//! is gone. Logs and viewers are per head: a viewer attaches to the head
//! that holds the session.
//!
//! Each node has a `Hub`. Appending to the log and publishing to viewers
//! happen under one lock, and a viewer that wants the log's tail and then
//! live output reads the tail and subscribes under the same lock, so it
//! sees every byte once. Viewers get output as it arrives; the log keeps it
//! in memory and one task writes every log out each [`LOG_FLUSH`] (a session
//! writes its own out when it ends), so a thousand consoles cost a few
//! writes a second each rather than one per SSH packet. For the same
//! reason an SSH console nobody watches is read in batches, a [`PACE`]
//! apart (`pace`): its output is only wanted in the log; a viewer
//! attaching makes it read at once again.

pub mod ipmi;
pub mod log;
pub mod pace;
pub mod session;
pub mod ssh;
pub mod targets;
pub mod view;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ca::secret::SecretBox;
use crate::config::ConsoleConfig;
use crate::discover::{credentials, targets as addr};
use crate::inventory::leases::Held;
use crate::inventory::model::ConsoleHostKey;
use crate::inventory::{Snapshot, Store};
use crate::redfish::Credentials;
use session::{Failure, Phase, Session};
use targets::{Backend, Target};

/// An open console, whatever the protocol.
pub enum Link {
    Ssh(ssh::Link),
    Ipmi(ipmi::Link),
}

impl Link {
    /// The next output; `None` when the console closed. SSH hands its
    /// output to the hub itself as it arrives, so for SSH this only waits
    /// for the end.
    pub async fn recv(&mut self) -> Option<Bytes> {
        match self {
            Link::Ssh(l) => {
                l.ended().await;
                None
            }
            Link::Ipmi(l) => l.recv().await,
        }
    }

    pub async fn send(&mut self, data: Bytes) -> Result<(), Failure> {
        match self {
            Link::Ssh(l) => l.send(data).await,
            Link::Ipmi(l) => l.send(data).await,
        }
    }

    /// Ends the session politely (a BMC counts open sessions).
    pub async fn close(self) {
        match self {
            Link::Ssh(l) => l.close().await,
            Link::Ipmi(l) => l.close().await,
        }
    }
}

/// What viewers receive.
#[derive(Debug, Clone)]
pub enum Event {
    Output(Bytes),
    /// The session dropped; the appliance is reconnecting.
    Reconnecting,
    /// The node left the inventory (or the appliance is stopping).
    Gone,
}

/// Chunks a slow viewer may fall behind before it misses output.
const FANOUT: usize = 1024;
/// Keystrokes queued for a session.
const INPUT_QUEUE: usize = 256;
/// How long console output may wait in memory before it is in the log file.
pub const LOG_FLUSH: Duration = Duration::from_secs(1);
/// How long an unwatched SSH console's socket is left alone once a read
/// has drained it (see `pace`): the log flush's period, so an unwatched
/// console costs about one read a second, and what it printed is in its
/// log file within two of them. Short beside the link's keepalive (a
/// silent BMC is pinged after 30 s and given 60 s to answer).
pub const PACE: Duration = LOG_FLUSH;

struct HubState {
    log: log::ConsoleLog,
    session: Session,
    /// Throttles log-write error lines to one per failure streak.
    log_failing: bool,
}

impl HubState {
    fn log_result(&mut self, r: std::io::Result<()>) {
        match r {
            Ok(()) => self.log_failing = false,
            Err(e) => {
                if !self.log_failing {
                    tracing::error!(path = %self.log.path().display(), error = %e, "cannot write console log");
                }
                self.log_failing = true;
            }
        }
    }
}

/// One node's console.
pub struct Hub {
    target: Mutex<Target>,
    state: Mutex<HubState>,
    events: broadcast::Sender<Event>,
    input: mpsc::Sender<Bytes>,
    input_rx: Mutex<Option<mpsc::Receiver<Bytes>>>,
    writer: AtomicBool,
    /// Counts the viewers; the SSH backend reads the console at once while
    /// there are any, in batches while not.
    watch: Arc<pace::Watch>,
    stop: Mutex<CancellationToken>,
    /// Cuts a reconnection wait short (an operator fixed the cause).
    wake: tokio::sync::Notify,
    /// The head holding the session, when it is another one.
    holder: Mutex<Option<String>>,
}

/// A log tail: the bytes (`None`: no log yet) and, when following, the
/// output that comes after them.
pub struct Tail {
    pub data: Option<Vec<u8>>,
    pub live: Option<broadcast::Receiver<Event>>,
}

/// A row of `GET /consoles`.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleInfo {
    pub target: Target,
    pub phase: Phase,
    pub error: Option<String>,
    pub viewers: usize,
    pub writer: bool,
    /// The head that holds the session, when it is another one.
    pub holder: Option<String>,
}

/// A viewer's hold on the write side; released on drop.
pub struct WriteLease(Arc<Hub>);

impl Drop for WriteLease {
    fn drop(&mut self) {
        self.0.writer.store(false, Ordering::Release);
    }
}

impl WriteLease {
    /// Sends keystrokes; they are dropped while the session is down.
    pub fn send(&self, data: Bytes) {
        let _ = self.0.input.try_send(data);
    }
}

/// Counts a viewer while it is attached.
pub struct ViewerGuard(Arc<Hub>);

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.0.watch.detach();
    }
}

impl Hub {
    fn new(target: Target, cfg: &ConsoleConfig, dir: &std::path::Path) -> Arc<Hub> {
        let (events, _) = broadcast::channel(FANOUT);
        let (input, rx) = mpsc::channel(INPUT_QUEUE);
        Arc::new(Hub {
            state: Mutex::new(HubState {
                log: log::ConsoleLog::new(dir, &target.node, cfg.log_max_bytes, cfg.log_keep),
                session: Session::new(
                    Duration::from_secs(cfg.backoff_min_secs),
                    Duration::from_secs(cfg.backoff_max_secs),
                ),
                log_failing: false,
            }),
            target: Mutex::new(target),
            events,
            input,
            input_rx: Mutex::new(Some(rx)),
            writer: AtomicBool::new(false),
            watch: Arc::new(pace::Watch::default()),
            stop: Mutex::new(CancellationToken::new()),
            wake: tokio::sync::Notify::new(),
            holder: Mutex::new(None),
        })
    }

    pub fn target(&self) -> Target {
        lock(&self.target).clone()
    }

    fn output(&self, data: &[u8]) {
        let mut st = lock(&self.state);
        let r = st.log.append(data);
        st.log_result(r);
        // Subscribing takes the same lock, so no viewer misses this.
        if self.events.receiver_count() > 0 {
            let _ = self
                .events
                .send(Event::Output(Bytes::copy_from_slice(data)));
        }
    }

    /// Writes the log's waiting bytes out.
    fn flush_log(&self) {
        let mut st = lock(&self.state);
        if !st.log.unflushed().is_empty() {
            let r = st.log.flush();
            st.log_result(r);
        }
    }

    fn update(&self, f: impl FnOnce(&mut Session) -> Duration) -> Duration {
        f(&mut lock(&self.state).session)
    }

    pub fn info(&self) -> ConsoleInfo {
        let st = lock(&self.state);
        ConsoleInfo {
            target: self.target(),
            phase: st.session.phase,
            error: st
                .session
                .last_error
                .as_ref()
                .map(|f| f.message().to_string()),
            viewers: self.watch.viewers(),
            writer: self.writer.load(Ordering::Acquire),
            holder: (st.session.phase == Phase::Elsewhere)
                .then(|| lock(&self.holder).clone())
                .flatten(),
        }
    }

    /// Attaches a viewer; a session reading in batches reads at once from
    /// now on.
    pub fn view(self: &Arc<Self>) -> ViewerGuard {
        self.watch.attach();
        ViewerGuard(self.clone())
    }

    /// Takes the write side; `None` while another viewer holds it.
    pub fn take_writer(self: &Arc<Self>) -> Option<WriteLease> {
        self.writer
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| WriteLease(self.clone()))
    }

    /// Live output from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        let _st = lock(&self.state);
        self.events.subscribe()
    }

    /// The log's tail (`lines` > 0: that many lines; else the whole current
    /// file), and, when `follow`, a subscription starting right after it.
    pub fn tail(&self, lines: i64, follow: bool) -> std::io::Result<Tail> {
        let st = lock(&self.state);
        let data = if lines > 0 {
            st.log
                .read_last_lines(usize::try_from(lines).unwrap_or(usize::MAX))?
        } else {
            st.log.read_all()?
        };
        let live = follow.then(|| self.events.subscribe());
        Ok(Tail { data, live })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The lease of the head that holds a BMC's console session.
fn lease_name(bmc: &str) -> String {
    format!("console/{bmc}")
}

/// The console service.
pub struct Consoles {
    store: Store,
    secrets: Arc<SecretBox>,
    config: ConsoleConfig,
    dir: PathBuf,
    /// `config.bmcs` by normalised xname.
    overrides: BTreeMap<String, targets::Override>,
    hubs: RwLock<BTreeMap<String, Arc<Hub>>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// When the set of consoles last changed (`/health`'s `hardwareupdate`).
    changed: Mutex<chrono::DateTime<chrono::Utc>>,
}

impl Consoles {
    pub fn new(
        store: Store,
        secrets: Arc<SecretBox>,
        config: ConsoleConfig,
        state_dir: &std::path::Path,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Consoles> {
        let overrides = config
            .bmcs
            .iter()
            .map(|(k, v)| {
                let k = crate::inventory::xname::normalize(k).unwrap_or_else(|_| k.clone());
                (k, v.clone())
            })
            .collect();
        Arc::new(Consoles {
            store,
            secrets,
            overrides,
            config,
            dir: state_dir.join("consoles"),
            hubs: RwLock::new(BTreeMap::new()),
            tasks,
            shutdown,
            changed: Mutex::new(chrono::Utc::now()),
        })
    }

    /// Starts watching the inventory (when consoles are enabled).
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let me = self.clone();
        self.tasks.spawn(async move { me.watch().await });
        let me = self.clone();
        self.tasks.spawn(async move { me.flush_logs().await });
        Ok(())
    }

    /// Writes every console's waiting log bytes out each [`LOG_FLUSH`]
    /// (sessions write theirs when they end, so stopping loses nothing).
    async fn flush_logs(self: Arc<Self>) {
        let mut tick = tokio::time::interval(LOG_FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let hubs: Vec<Arc<Hub>> = self
                .hubs
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            for hub in hubs {
                hub.flush_log();
            }
        }
    }

    async fn watch(self: Arc<Self>) {
        let every = Duration::from_secs(self.config.refresh_secs);
        loop {
            self.reconcile();
            self.note_holders().await;
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        let hubs = std::mem::take(&mut *self.hubs.write().unwrap_or_else(|e| e.into_inner()));
        for hub in hubs.values() {
            lock(&hub.stop).cancel();
            let _ = hub.events.send(Event::Gone);
        }
    }

    /// Shared store: which head holds each console this head does not.
    async fn note_holders(&self) {
        let leases = self.store.leases();
        if !leases.shared() {
            return;
        }
        let Ok(rows) = leases.list().await else {
            return;
        };
        let hubs: Vec<Arc<Hub>> = self
            .hubs
            .read()
            .map(|h| h.values().cloned().collect())
            .unwrap_or_default();
        for hub in hubs {
            let name = lease_name(&hub.target().bmc);
            *lock(&hub.holder) = rows
                .iter()
                .find(|r| r.name == name && r.holder != leases.holder())
                .map(|r| r.holder.clone());
        }
    }

    /// Shared store: waits until this head holds the console's lease;
    /// `None` once stopped.
    async fn claim(&self, hub: &Hub, stop: &CancellationToken) -> Option<Held> {
        let leases = self.store.leases();
        loop {
            match leases.claim(&lease_name(&hub.target().bmc)).await {
                Ok(Some(h)) => {
                    *lock(&hub.holder) = None;
                    return Some(h);
                }
                Ok(None) => {
                    hub.update(|s| {
                        s.phase = Phase::Elsewhere;
                        Duration::ZERO
                    });
                }
                Err(e) => tracing::debug!(error = %e, "cannot claim a console's lease"),
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(leases.renew_every()) => {}
            }
        }
    }

    /// Starts sessions for new consoles, restarts moved ones, stops the
    /// ones whose node or BMC left.
    fn reconcile(self: &Arc<Self>) {
        let snap = self.store.snapshot();
        let want = targets::targets(
            &snap,
            targets::Defaults {
                ssh_port: self.config.ssh_port,
                command: &self.config.command,
                overrides: &self.overrides,
            },
        );
        let mut hubs = self.hubs.write().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        hubs.retain(|node, hub| {
            let keep = want.contains_key(node);
            if !keep {
                tracing::info!(node = %node, "console removed: node or BMC left the inventory");
                lock(&hub.stop).cancel();
                let _ = hub.events.send(Event::Gone);
                changed = true;
            }
            keep
        });
        for (node, t) in want {
            match hubs.get(&node) {
                Some(hub) if hub.target() == t => {}
                Some(hub) => {
                    tracing::info!(node = %node, host = %t.host, port = t.port, backend = t.backend.as_str(), "console moved; reconnecting");
                    *lock(&hub.target) = t;
                    let fresh = self.shutdown.child_token();
                    std::mem::replace(&mut *lock(&hub.stop), fresh).cancel();
                    self.spawn_session(hub.clone());
                    changed = true;
                }
                None => {
                    let hub = Hub::new(t, &self.config, &self.dir);
                    *lock(&hub.stop) = self.shutdown.child_token();
                    hubs.insert(node, hub.clone());
                    self.spawn_session(hub);
                    changed = true;
                }
            }
        }
        if changed {
            *lock(&self.changed) = chrono::Utc::now();
        }
    }

    fn spawn_session(self: &Arc<Self>, hub: Arc<Hub>) {
        let me = self.clone();
        let stop = lock(&hub.stop).clone();
        self.tasks
            .spawn(async move { me.run_session(hub, stop).await });
    }

    /// One console's life: connect, pump, back off, until stopped.
    async fn run_session(self: Arc<Self>, hub: Arc<Hub>, stop: CancellationToken) {
        // The keystroke queue belongs to whichever session task runs; a
        // restarted task waits for its predecessor to hand it back.
        let mut input = loop {
            if let Some(rx) = lock(&hub.input_rx).take() {
                break rx;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        };
        let timeout = Duration::from_secs(self.config.connect_timeout_secs);
        let shared = self.store.leases().shared();
        while !stop.is_cancelled() {
            // On a shared store the session runs while this head holds the
            // console's lease; losing it stops the session, and this head
            // goes back to waiting for it.
            let held = if shared {
                match self.claim(&hub, &stop).await {
                    Some(h) => Some(h),
                    None => break,
                }
            } else {
                None
            };
            let halt = stop.child_token();
            if let Some(h) = &held {
                let (lost, halt) = (h.lost(), halt.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = lost.cancelled() => halt.cancel(),
                        _ = halt.cancelled() => {}
                    }
                });
            }
            self.pump(&hub, &halt, &mut input, timeout).await;
            halt.cancel();
            if let Some(h) = held {
                h.release().await;
            }
            if !shared {
                break;
            }
        }
        hub.update(|s| {
            s.stopped();
            Duration::ZERO
        });
        hub.flush_log();
        *lock(&hub.input_rx) = Some(input);
    }

    /// Connects, pumps and reconnects with back-off until `stop`.
    async fn pump(
        &self,
        hub: &Arc<Hub>,
        stop: &CancellationToken,
        input: &mut mpsc::Receiver<Bytes>,
        timeout: Duration,
    ) {
        loop {
            hub.update(|s| {
                s.connecting();
                Duration::ZERO
            });
            let t = hub.target();
            let outcome = tokio::select! {
                _ = stop.cancelled() => break,
                r = self.connect(hub, &t, timeout) => r,
            };
            let failure = match outcome {
                Err(f) => f,
                Ok(mut link) => {
                    hub.update(|s| {
                        s.connected();
                        Duration::ZERO
                    });
                    tracing::info!(node = %t.node, bmc = %t.bmc, backend = t.backend.as_str(), "console connected");
                    while input.try_recv().is_ok() {}
                    // One wait for the stop, not one per packet.
                    let stopped = stop.cancelled();
                    tokio::pin!(stopped);
                    let end = loop {
                        tokio::select! {
                            _ = &mut stopped => break None,
                            out = link.recv() => match out {
                                Some(data) => hub.output(&data),
                                None => break Some(Failure::Transport("the console closed".into())),
                            },
                            Some(keys) = input.recv() => {
                                if let Err(f) = link.send(keys).await {
                                    break Some(f);
                                }
                            }
                        }
                    };
                    link.close().await;
                    hub.flush_log();
                    match end {
                        Some(f) => f,
                        None => break,
                    }
                }
            };
            let wait = hub.update(|s| s.failed(failure.clone()));
            tracing::warn!(node = %t.node, bmc = %t.bmc, error = failure.message(), retry_in = ?wait, "console session down");
            let _ = hub.events.send(Event::Reconnecting);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = hub.wake.notified() => {}
            }
        }
    }

    /// One attempt: credentials, then the target's backend.
    async fn connect(
        &self,
        hub: &Arc<Hub>,
        t: &Target,
        timeout: Duration,
    ) -> Result<Link, Failure> {
        let snap = self.store.snapshot();
        let creds = self
            .credentials(&snap, &t.bmc)
            .ok_or_else(|| Failure::Credentials(format!("no credentials for BMC {}", t.bmc)))?;
        match t.backend {
            Backend::Ssh => self
                .connect_ssh(&snap, hub, t, &creds, timeout)
                .await
                .map(Link::Ssh),
            Backend::Ipmi => ipmi::connect(
                t,
                &creds,
                timeout,
                &self.config.ipmitool,
                self.config.ipmi_cipher_suite,
            )
            .await
            .map(Link::Ipmi),
        }
    }

    /// SSH, checked against the pinned host key; pins the key on first use.
    async fn connect_ssh(
        &self,
        snap: &Snapshot,
        hub: &Arc<Hub>,
        t: &Target,
        creds: &Credentials,
        timeout: Duration,
    ) -> Result<ssh::Link, Failure> {
        let pinned = snap.console_host_keys.get(&t.bmc).map(|k| k.key.clone());
        let sink = hub.clone();
        let out: ssh::Output = Arc::new(move |data: &[u8]| sink.output(data));
        let link = ssh::connect(
            t,
            creds,
            pinned.as_deref(),
            timeout,
            self.config.pty,
            out,
            hub.watch.clone(),
        )
        .await?;
        if pinned.is_none() {
            let pin = ConsoleHostKey {
                bmc: t.bmc.clone(),
                key: link.key.openssh.clone(),
                fingerprint: link.key.fingerprint.clone(),
                address: format!("{}:{}", t.host, t.port),
                pinned_at: chrono::Utc::now(),
            };
            tracing::info!(bmc = %t.bmc, fingerprint = %pin.fingerprint, "pinned console host key on first use");
            let r = self
                .store
                .write(move |txn| {
                    // A pin written meanwhile wins; this connection goes on.
                    if txn.model().console_host_keys.get(&pin.bmc).is_none() {
                        txn.put_console_host_key(pin);
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = r {
                link.close().await;
                return Err(Failure::Transport(format!(
                    "cannot store the host key pin: {e}"
                )));
            }
        }
        Ok(link)
    }

    fn credentials(&self, snap: &Snapshot, bmc: &str) -> Option<Credentials> {
        let ep = snap.redfish_endpoint(bmc)?;
        let mut names = vec![ep.id.clone(), ep.address().to_string()];
        names.extend(addr::ip_of(ep.address()).map(|i| i.to_string()));
        if !ep.mac_addr.is_empty() {
            names.push(ep.mac_addr.clone());
        }
        credentials::resolve(snap, &self.secrets, &names, Some(ep), None)
    }

    pub fn get(&self, node: &str) -> Option<Arc<Hub>> {
        self.hubs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    }

    pub fn list(&self) -> Vec<ConsoleInfo> {
        let hubs: Vec<Arc<Hub>> = self
            .hubs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        hubs.iter().map(|h| h.info()).collect()
    }

    /// Every pinned host key.
    pub fn host_keys(&self) -> Vec<ConsoleHostKey> {
        self.store
            .snapshot()
            .console_host_keys
            .values()
            .cloned()
            .collect()
    }

    /// Forgets a BMC's pinned host key (the BMC was replaced or re-keyed):
    /// the next connection pins what it is shown. `NotFound` when none.
    pub async fn forget_host_key(
        &self,
        bmc: &str,
    ) -> Result<ConsoleHostKey, crate::inventory::WriteError> {
        let bmc = bmc.to_string();
        let old = self
            .store
            .write(move |t| {
                t.delete_console_host_key(&bmc).ok_or_else(|| {
                    crate::inventory::DomainError::NotFound(format!(
                        "no console host key is pinned for {bmc}"
                    ))
                })
            })
            .await?;
        tracing::info!(bmc = %old.bmc, fingerprint = %old.fingerprint, "console host key pin deleted");
        let hubs = self.hubs.read().unwrap_or_else(|e| e.into_inner());
        for hub in hubs.values().filter(|h| h.target().bmc == old.bmc) {
            hub.wake.notify_one();
        }
        Ok(old)
    }

    /// The log file of `node`'s console, when it has one.
    pub fn log_path(&self, node: &str) -> Option<PathBuf> {
        let hubs = self.hubs.read().unwrap_or_else(|e| e.into_inner());
        let hub = hubs.get(node)?;
        Some(lock(&hub.state).log.path().to_path_buf())
    }

    pub fn last_change(&self) -> chrono::DateTime<chrono::Utc> {
        *lock(&self.changed)
    }
}
