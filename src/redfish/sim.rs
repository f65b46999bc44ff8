//! Simulated BMCs: many small Redfish services in one process.
//!
//! For scale work (a thousand BMCs with a quarter second per request) and
//! for anything that needs a BMC whose Reset does something: a
//! [`PowerHook`] is told of every accepted `ComputerSystem.Reset`, so a lab
//! can start and stop a VM per node. Correctness is tested against a real
//! emulator; this one only has to be plausible and cheap.
//!
//! Each BMC listens on its own address and serves a service root, a
//! SessionService (sessions are counted, so tests can check that clients
//! log out), Systems with Ethernet interfaces and a working Reset, a BMC
//! Manager whose NIC carries the BMC's address, and one Chassis.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use openchami::redfish::sim::{SimBmcs, SimConfig};
//! let cfg = SimConfig::loopback(3); // three BMCs on ephemeral loopback ports
//! let sims = SimBmcs::start(cfg, None).await?;
//! println!("first BMC at https://{}", sims.addrs()[0]);
//! sims.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod update;
pub use update::SimUpdates;

/// Told of every Reset a simulated BMC accepts.
pub trait PowerHook: Send + Sync + 'static {
    /// `reset_type` was accepted for system `system` of BMC `bmc` (indexes
    /// into [`SimConfig::addrs`] and from 0). An error refuses the Reset
    /// with a 500 carrying the message; the power state is then unchanged.
    fn reset(&self, bmc: usize, system: usize, reset_type: &str) -> Result<(), String>;

    /// The real power state, when the hook knows better than the simulator
    /// (a VM may have shut itself down). `None`: the simulator's own record.
    fn power_state(&self, _bmc: usize, _system: usize) -> Option<bool> {
        None
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One BMC per address; port 0 picks a free one.
    pub addrs: Vec<SocketAddr>,
    pub systems_per_bmc: usize,
    /// Added to every answer.
    pub latency: Duration,
    /// Share of requests answered 503 (0.0 to 1.0); session deletes never fail.
    pub failure_rate: f64,
    pub username: String,
    pub password: String,
    /// HTTPS with a self-signed certificate (as real BMCs), else plain HTTP.
    pub tls: bool,
    /// Offer a SessionService; without it clients must use Basic auth.
    pub sessions: bool,
    /// Accept `GracefulShutdown` but stay on, like an OS that ignores ACPI.
    pub ignore_graceful_shutdown: bool,
    /// Power state of every system at start.
    pub power_on: bool,
    /// Power limits and firmware updates (`sim/update.rs`).
    pub updates: SimUpdates,
    /// The port of the host serial console the BMC serves over SSH
    /// (`simssh`), advertised as Redfish's `SerialConsole`; `None`: none.
    pub ssh_console_port: Option<u16>,
    /// Field-replaceable units per System (`sim_hardware`); `None` serves
    /// only Systems, Managers, Chassis and NICs.
    pub hardware: Option<super::sim_hardware::HardwareConfig>,
}

impl SimConfig {
    /// `count` BMCs on ephemeral ports of 127.0.0.1, no latency, no failures,
    /// user `admin` / `password`.
    pub fn loopback(count: usize) -> SimConfig {
        SimConfig {
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], 0)); count],
            systems_per_bmc: 1,
            latency: Duration::ZERO,
            failure_rate: 0.0,
            username: "admin".into(),
            password: "password".into(),
            tls: true,
            sessions: true,
            ignore_graceful_shutdown: false,
            power_on: false,
            updates: SimUpdates::default(),
            ssh_console_port: None,
            hardware: None,
        }
    }

    /// `count` BMCs on consecutive IPv4 addresses from `first`, all on
    /// `port` (on Linux all of 127.0.0.0/8 is loopback, so a scan of a
    /// CIDR finds them as it would on a management network).
    pub fn consecutive(first: std::net::Ipv4Addr, port: u16, count: usize) -> SimConfig {
        let base = u32::from(first);
        let mut c = SimConfig::loopback(0);
        c.addrs = (0..count as u32)
            .map(|k| SocketAddr::from((std::net::Ipv4Addr::from(base.wrapping_add(k)), port)))
            .collect();
        c
    }
}

/// The MAC of system `system` of BMC `bmc`: `02:00:` then the BMC index in
/// three bytes and the system index in one.
pub fn system_mac(bmc: usize, system: usize) -> String {
    let b = bmc as u32;
    format!(
        "02:00:{:02x}:{:02x}:{:02x}:{:02x}",
        (b >> 16) & 0xff,
        (b >> 8) & 0xff,
        b & 0xff,
        system & 0xff
    )
}

/// The MAC of BMC `bmc`'s own NIC: `02:01:` then the index.
pub fn bmc_mac(bmc: usize) -> String {
    let b = bmc as u32;
    format!(
        "02:01:00:{:02x}:{:02x}:{:02x}",
        (b >> 16) & 0xff,
        (b >> 8) & 0xff,
        b & 0xff
    )
}

/// The UUID of system `system` of BMC `bmc`.
pub fn system_uuid(bmc: usize, system: usize) -> String {
    format!("5ee1b3c0-0000-4000-8000-{:08x}{:04x}", bmc, system)
}

const ALLOWED: [&str; 5] = [
    "On",
    "ForceOff",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
];

struct BmcState {
    addr: SocketAddr,
    power: Mutex<Vec<bool>>,
    sessions: Mutex<HashMap<String, u64>>,
    sessions_created: AtomicU64,
    requests: AtomicU64,
    resets: Mutex<Vec<String>>,
}

struct Shared {
    config: SimConfig,
    hook: Option<Arc<dyn PowerHook>>,
    bmcs: Vec<BmcState>,
    next_session: AtomicU64,
    rng: AtomicU64,
    updates: update::State,
    hardware: super::sim_hardware::State,
}

/// Running simulated BMCs.
pub struct SimBmcs {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl SimBmcs {
    /// Binds every address and starts serving.
    pub async fn start(
        config: SimConfig,
        hook: Option<Arc<dyn PowerHook>>,
    ) -> std::io::Result<SimBmcs> {
        let mut listeners = Vec::with_capacity(config.addrs.len());
        for a in &config.addrs {
            let l = TcpListener::bind(a)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))?;
            listeners.push(l);
        }
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<Result<Vec<_>, _>>()?;
        let tls = if config.tls {
            Some(tokio_rustls::TlsAcceptor::from(server_tls(&addrs)?))
        } else {
            None
        };
        let systems = config.systems_per_bmc.max(1);
        let bmcs = addrs
            .iter()
            .map(|a| BmcState {
                addr: *a,
                power: Mutex::new(vec![config.power_on; systems]),
                sessions: Mutex::new(HashMap::new()),
                sessions_created: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                resets: Mutex::new(Vec::new()),
            })
            .collect();
        let updates = update::State::new(addrs.len());
        let shared = Arc::new(Shared {
            config,
            updates,
            hook,
            bmcs,
            next_session: AtomicU64::new(1),
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            hardware: Default::default(),
        });
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            tasks.spawn(accept_loop(
                listener,
                index,
                shared.clone(),
                tls.clone(),
                stop.clone(),
            ));
        }
        tasks.close();
        Ok(SimBmcs {
            shared,
            addrs,
            stop,
            tasks,
        })
    }

    /// Where each BMC listens, in order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The power state of a system as the simulator records it.
    pub fn power(&self, bmc: usize, system: usize) -> bool {
        self.shared.power(bmc, system)
    }

    pub fn set_power(&self, bmc: usize, system: usize, on: bool) {
        if let Some(b) = self.shared.bmcs.get(bmc)
            && let Ok(mut p) = b.power.lock()
            && let Some(s) = p.get_mut(system)
        {
            *s = on;
        }
    }

    /// Sessions open now on a BMC.
    pub fn open_sessions(&self, bmc: usize) -> usize {
        self.shared
            .bmcs
            .get(bmc)
            .and_then(|b| b.sessions.lock().ok().map(|s| s.len()))
            .unwrap_or(0)
    }

    /// Sessions ever created on a BMC.
    pub fn sessions_created(&self, bmc: usize) -> u64 {
        self.shared
            .bmcs
            .get(bmc)
            .map_or(0, |b| b.sessions_created.load(Ordering::Relaxed))
    }

    /// Requests a BMC has answered.
    pub fn requests(&self, bmc: usize) -> u64 {
        self.shared
            .bmcs
            .get(bmc)
            .map_or(0, |b| b.requests.load(Ordering::Relaxed))
    }

    /// ResetTypes a BMC accepted, in order.
    pub fn resets(&self, bmc: usize) -> Vec<String> {
        self.shared
            .bmcs
            .get(bmc)
            .and_then(|b| b.resets.lock().ok().map(|r| r.clone()))
            .unwrap_or_default()
    }

    /// The field-replaceable units: swap them between slots, withhold a
    /// collection (see `sim_hardware`).
    pub fn hardware(&self) -> &super::sim_hardware::State {
        &self.shared.hardware
    }

    /// Stops every listener and closes open connections.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

impl Drop for SimBmcs {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn server_tls(addrs: &[SocketAddr]) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let err = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let mut names: Vec<String> = vec!["localhost".into()];
    for a in addrs.iter().take(16) {
        names.push(a.ip().to_string());
    }
    names.sort();
    names.dedup();
    let key = rcgen::KeyPair::generate().map_err(|e| err(&e))?;
    let params = rcgen::CertificateParams::new(names).map_err(|e| err(&e))?;
    let cert = params.self_signed(&key).map_err(|e| err(&e))?;
    let der =
        rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| err(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .map_err(|e| err(&e))?;
    // Every simulated BMC shares this configuration, but a real BMC keeps
    // its own session cache: with rustls' shared 256-entry cache a
    // thousand BMCs would refuse nearly every resumption a real one grants.
    // Session tickets (the default of OpenSSL-based BMCs) need no cache.
    cfg.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| err(&e))?;
    Ok(Arc::new(cfg))
}

async fn accept_loop(
    listener: TcpListener,
    index: usize,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, index, req).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let serve = async {
                match tls {
                    Some(acceptor) => {
                        if let Ok(Ok(s)) =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                                .await
                        {
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = serve => {}
            }
        });
    }
}

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: Option<Value>) -> Resp {
    let mut b = Response::builder().status(status);
    let bytes = match body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    b.body(Full::new(bytes))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error(status: StatusCode, message: &str) -> Resp {
    reply(
        status,
        Some(
            json!({"error": {"code": "Base.1.0.GeneralError", "message": message,
            "@Message.ExtendedInfo": [{"MessageId": "Base.1.0.GeneralError", "Message": message}]}}),
        ),
    )
}

fn link(path: &str) -> Value {
    json!({ "@odata.id": path })
}

fn collection(path: &str, members: Vec<String>) -> Value {
    json!({
        "@odata.id": path,
        "Members@odata.count": members.len(),
        "Members": members.iter().map(|m| link(m)).collect::<Vec<_>>(),
    })
}

impl Shared {
    fn power(&self, bmc: usize, system: usize) -> bool {
        if let Some(on) = self.hook.as_ref().and_then(|h| h.power_state(bmc, system)) {
            return on;
        }
        self.bmcs
            .get(bmc)
            .and_then(|b| b.power.lock().ok().and_then(|p| p.get(system).copied()))
            .unwrap_or(false)
    }

    /// xorshift: cheap, good enough to spread failures.
    fn chance(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn authorized(&self, bmc: &BmcState, req: &Request<Incoming>) -> bool {
        if let Some(t) = req
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
        {
            return bmc.sessions.lock().is_ok_and(|s| s.contains_key(t));
        }
        let Some(basic) = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
        else {
            return false;
        };
        let want = format!("{}:{}", self.config.username, self.config.password);
        base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .is_ok_and(|d| d == want.as_bytes())
    }
}

async fn handle(shared: &Shared, index: usize, req: Request<Incoming>) -> Resp {
    let Some(bmc) = shared.bmcs.get(index) else {
        return error(StatusCode::NOT_FOUND, "no such BMC");
    };
    bmc.requests.fetch_add(1, Ordering::Relaxed);
    if !shared.config.latency.is_zero() {
        tokio::time::sleep(shared.config.latency).await;
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    let is_logout = method == Method::DELETE && path.starts_with(SESSIONS);
    if !is_logout
        && shared.config.failure_rate > 0.0
        && shared.chance() < shared.config.failure_rate
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "simulated failure");
    }
    if path == "/redfish/v1" || path == "/redfish" {
        return reply(StatusCode::OK, Some(root(shared)));
    }
    if shared.config.sessions && method == Method::POST && path == SESSIONS {
        return login(shared, bmc, req).await;
    }
    if !shared.authorized(bmc, &req) {
        return error(StatusCode::UNAUTHORIZED, "authentication required");
    }
    if is_logout && shared.config.sessions {
        let id = path.rsplit('/').next().unwrap_or("");
        let removed = bmc.sessions.lock().is_ok_and(|mut s| {
            let before = s.len();
            s.retain(|_, v| v.to_string() != id);
            s.len() < before
        });
        return if removed {
            reply(StatusCode::NO_CONTENT, None)
        } else {
            error(StatusCode::NOT_FOUND, "no such session")
        };
    }
    if update::serves(&path) {
        return update::handle(shared, index, method, &path, req).await;
    }
    if method == Method::POST {
        let body = match req.into_body().collect().await {
            Ok(b) => serde_json::from_slice::<Value>(&b.to_bytes()).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        return post(shared, index, bmc, &path, &body);
    }
    if method != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    match resource(shared, index, bmc, &path) {
        Some(v) => reply(StatusCode::OK, Some(v)),
        None => error(StatusCode::NOT_FOUND, "resource not found"),
    }
}

const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

fn root(shared: &Shared) -> Value {
    let mut v = json!({
        "@odata.id": "/redfish/v1/",
        "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
        "Id": "RootService",
        "Name": "Simulated BMC",
        "RedfishVersion": "1.6.0",
        "UUID": "5ee1b3c0-0000-4000-8000-000000000000",
        "Vendor": "openchami-sim",
        "Systems": link("/redfish/v1/Systems"),
        "Managers": link("/redfish/v1/Managers"),
        "Chassis": link("/redfish/v1/Chassis"),
        "AccountService": link("/redfish/v1/AccountService"),
        "UpdateService": link("/redfish/v1/UpdateService"),
        "EventService": link("/redfish/v1/EventService"),
    });
    if shared.config.sessions {
        v["SessionService"] = link("/redfish/v1/SessionService");
        v["Links"] = json!({ "Sessions": link(SESSIONS) });
    }
    v
}

async fn login(shared: &Shared, bmc: &BmcState, req: Request<Incoming>) -> Resp {
    let body = match req.into_body().collect().await {
        Ok(b) => serde_json::from_slice::<Value>(&b.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let user = body.get("UserName").and_then(Value::as_str).unwrap_or("");
    let pass = body.get("Password").and_then(Value::as_str).unwrap_or("");
    if user != shared.config.username || pass != shared.config.password {
        return error(StatusCode::UNAUTHORIZED, "invalid credentials");
    }
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let token = format!("sim-{id:016x}-{:016x}", (shared.chance() * 1e15) as u64);
    if let Ok(mut s) = bmc.sessions.lock() {
        s.insert(token.clone(), id);
    }
    bmc.sessions_created.fetch_add(1, Ordering::Relaxed);
    let location = format!("{SESSIONS}/{id}");
    let body = json!({"@odata.id": location, "Id": id.to_string(), "UserName": user});
    Response::builder()
        .status(StatusCode::CREATED)
        .header("content-type", "application/json")
        .header("x-auth-token", token)
        .header("location", location)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// ComputerSystem `SerialConsole` (Redfish's HostSerialConsole): the host
/// console over SSH on `port` when there is one.
fn host_serial_console(port: Option<u16>) -> Value {
    match port {
        Some(p) => json!({
            "MaxConcurrentSessions": 1,
            "SSH": {"ServiceEnabled": true, "Port": p, "SharedWithManagerCLI": false},
            "IPMI": {"ServiceEnabled": false},
        }),
        None => json!({
            "MaxConcurrentSessions": 0,
            "SSH": {"ServiceEnabled": false},
            "IPMI": {"ServiceEnabled": false},
        }),
    }
}

/// Manager `SerialConsole` (Redfish's CommandShell shape).
fn manager_serial_console(port: Option<u16>) -> Value {
    match port {
        Some(_) => {
            json!({"ServiceEnabled": true, "MaxConcurrentSessions": 1, "ConnectTypesSupported": ["SSH"]})
        }
        None => {
            json!({"ServiceEnabled": false, "MaxConcurrentSessions": 0, "ConnectTypesSupported": []})
        }
    }
}

fn system_index(shared: &Shared, id: &str) -> Option<usize> {
    let k: usize = id.parse().ok()?;
    (k < shared.config.systems_per_bmc.max(1)).then_some(k)
}

fn resource(shared: &Shared, index: usize, bmc: &BmcState, path: &str) -> Option<Value> {
    let rest = path.strip_prefix("/redfish/v1/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let systems = shared.config.systems_per_bmc.max(1);
    match parts.as_slice() {
        ["AccountService"] => Some(json!({
            "@odata.id": "/redfish/v1/AccountService",
            "ServiceEnabled": true,
        })),
        ["EventService"] => Some(json!({
            "@odata.id": "/redfish/v1/EventService",
            "ServiceEnabled": false,
        })),
        ["SessionService"] => Some(json!({
            "@odata.id": "/redfish/v1/SessionService",
            "ServiceEnabled": shared.config.sessions,
            "Sessions": link(SESSIONS),
        })),
        ["SessionService", "Sessions"] if shared.config.sessions => {
            let ids: Vec<String> = bmc
                .sessions
                .lock()
                .map(|s| s.values().map(|id| format!("{SESSIONS}/{id}")).collect())
                .unwrap_or_default();
            Some(collection(SESSIONS, ids))
        }
        ["Systems"] => Some(collection(
            "/redfish/v1/Systems",
            (0..systems)
                .map(|k| format!("/redfish/v1/Systems/{k}"))
                .collect(),
        )),
        ["Systems", id] => {
            let k = system_index(shared, id)?;
            let on = shared.power(index, k);
            let mut v = json!({
                "@odata.id": path,
                "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem",
                "Id": id,
                "Name": format!("node{index}-{k}"),
                "UUID": system_uuid(index, k),
                "SystemType": "Physical",
                "Manufacturer": "openchami-sim",
                "Model": "SimNode 1",
                "SerialNumber": format!("SIM{index:06}{k:02}"),
                "BiosVersion": "1.0",
                "PowerState": if on { "On" } else { "Off" },
                "ProcessorSummary": {"Count": 2, "Model": "Sim CPU"},
                "MemorySummary": {"TotalSystemMemoryGiB": 64},
                "EthernetInterfaces": link(&format!("{path}/EthernetInterfaces")),
                "SerialConsole": host_serial_console(shared.config.ssh_console_port),
                "Links": {
                    "Chassis": [link("/redfish/v1/Chassis/1")],
                    "ManagedBy": [link("/redfish/v1/Managers/BMC")],
                },
                "Actions": {"#ComputerSystem.Reset": {
                    "target": format!("{path}/Actions/ComputerSystem.Reset"),
                    "ResetType@Redfish.AllowableValues": ALLOWED,
                }},
            });
            if shared.config.hardware.is_some() {
                super::sim_hardware::system_links(path, &mut v);
            }
            Some(v)
        }
        ["Systems", id, "EthernetInterfaces"] => {
            system_index(shared, id)?;
            Some(collection(path, vec![format!("{path}/1")]))
        }
        ["Systems", id, "EthernetInterfaces", "1"] => {
            let k = system_index(shared, id)?;
            Some(json!({
                "@odata.id": path,
                "Id": "1",
                "Name": "eth0",
                "Description": "eth0",
                "MACAddress": system_mac(index, k),
            }))
        }
        ["Managers"] => Some(collection(
            "/redfish/v1/Managers",
            vec!["/redfish/v1/Managers/BMC".into()],
        )),
        ["Managers", "BMC"] => Some(json!({
            "@odata.id": path,
            "Id": "BMC",
            "Name": "Simulated BMC",
            "ManagerType": "BMC",
            "FirmwareVersion": "sim-1.0",
            "Model": "SimBMC",
            "UUID": format!("5ee1b3c0-0000-4000-8001-{index:012x}"),
            "EthernetInterfaces": link("/redfish/v1/Managers/BMC/EthernetInterfaces"),
            "SerialConsole": manager_serial_console(shared.config.ssh_console_port),
            "CommandShell": {"ServiceEnabled": false},
            "Actions": {"#Manager.Reset": {
                "target": "/redfish/v1/Managers/BMC/Actions/Manager.Reset",
                "ResetType@Redfish.AllowableValues": ["GracefulRestart", "ForceRestart"],
            }},
        })),
        ["Managers", "BMC", "EthernetInterfaces"] => {
            Some(collection(path, vec![format!("{path}/1")]))
        }
        ["Managers", "BMC", "EthernetInterfaces", "1"] => {
            let ip = bmc.addr.ip();
            let v4 = match ip {
                IpAddr::V4(a) => vec![json!({"Address": a.to_string(), "AddressOrigin": "DHCP"})],
                IpAddr::V6(_) => Vec::new(),
            };
            Some(json!({
                "@odata.id": path,
                "Id": "1",
                "Name": "bmc0",
                "Description": "Management Network Interface",
                "MACAddress": bmc_mac(index),
                "IPv4Addresses": v4,
            }))
        }
        ["Chassis"] => Some(collection(
            "/redfish/v1/Chassis",
            vec!["/redfish/v1/Chassis/1".into()],
        )),
        ["Chassis", "1"] => {
            let mut v = json!({
            "@odata.id": path,
            "Id": "1",
            "ChassisType": "RackMount",
            "Manufacturer": "openchami-sim",
            "Model": "SimChassis",
            "SerialNumber": format!("CH{index:06}"),
            "SKU": "SIM-SKU",
            "AssetTag": format!("asset-{index}"),
            "Power": link("/redfish/v1/Chassis/1/Power"),
            "Controls": if shared.config.updates.legacy_power_only.contains(&index) {
                Value::Null
            } else {
                link("/redfish/v1/Chassis/1/Controls")
            },
            "Links": {"ComputerSystems": (0..systems)
                .map(|k| link(&format!("/redfish/v1/Systems/{k}")))
                .collect::<Vec<_>>()},
            });
            if shared.config.hardware.is_some() {
                super::sim_hardware::chassis_links(path, &mut v);
            }
            Some(v)
        }
        _ => shared.config.hardware.as_ref().and_then(|h| {
            super::sim_hardware::resource(h, &shared.hardware, index, path, &parts, |id| {
                system_index(shared, id)
            })
        }),
    }
}

fn post(shared: &Shared, index: usize, bmc: &BmcState, path: &str, body: &Value) -> Resp {
    let parts: Vec<&str> = path
        .strip_prefix("/redfish/v1/")
        .unwrap_or("")
        .split('/')
        .collect();
    let k = match parts.as_slice() {
        ["Systems", id, "Actions", "ComputerSystem.Reset"] => match system_index(shared, id) {
            Some(k) => k,
            None => return error(StatusCode::NOT_FOUND, "no such system"),
        },
        ["Managers", "BMC", "Actions", "Manager.Reset"] => {
            return reply(StatusCode::NO_CONTENT, None);
        }
        _ => return error(StatusCode::NOT_FOUND, "no such action"),
    };
    let reset = body.get("ResetType").and_then(Value::as_str).unwrap_or("");
    if !ALLOWED.contains(&reset) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("ResetType {reset:?} is not supported"),
        );
    }
    if let Some(h) = &shared.hook
        && let Err(e) = h.reset(index, k, reset)
    {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &e);
    }
    if let Ok(mut r) = bmc.resets.lock() {
        r.push(reset.to_string());
    }
    let new = match reset {
        "ForceOff" => Some(false),
        "GracefulShutdown" if !shared.config.ignore_graceful_shutdown => Some(false),
        "GracefulShutdown" => None,
        _ => Some(true),
    };
    if let Some(on) = new
        && let Ok(mut p) = bmc.power.lock()
        && let Some(s) = p.get_mut(k)
    {
        *s = on;
    }
    reply(StatusCode::NO_CONTENT, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redfish::{Bmc, ClientOptions, Credentials, Transport, crawl, system_state};

    struct Recorder(Mutex<Vec<(usize, usize, String)>>);

    impl PowerHook for Recorder {
        fn reset(&self, bmc: usize, system: usize, reset_type: &str) -> Result<(), String> {
            if reset_type == "ForceRestart" {
                return Err("the VM would not restart".into());
            }
            if let Ok(mut v) = self.0.lock() {
                v.push((bmc, system, reset_type.to_string()));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_client_crawls_and_resets_through_the_hook() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let hook = Arc::new(Recorder(Mutex::new(Vec::new())));
        let mut cfg = SimConfig::loopback(2);
        cfg.systems_per_bmc = 2;
        let sims = SimBmcs::start(cfg, Some(hook.clone())).await.unwrap();
        let t = Transport::new(ClientOptions::default()).unwrap();
        let creds = Credentials {
            username: "admin".into(),
            password: "password".into(),
        };
        let bmc = Bmc::new(&t, &sims.addrs()[1].to_string(), creds.clone());
        bmc.login().await.unwrap();
        assert_eq!(sims.open_sessions(1), 1);
        let c = crawl(&bmc).await.unwrap();
        assert_eq!(c.systems.len(), 2);
        assert_eq!(c.systems[1].nics[0].mac, system_mac(1, 1));
        assert_eq!(c.managers[0].nics[0].ipv4, vec!["127.0.0.1"]);
        assert_eq!(c.chassis[0].systems.len(), 2);
        let target = c.systems[1].reset.clone().unwrap().target;
        bmc.post(&target, &json!({"ResetType": "On"}))
            .await
            .unwrap();
        assert!(sims.power(1, 1) && !sims.power(1, 0));
        let st = system_state(&bmc, &c.systems[1].path).await.unwrap();
        assert_eq!(st.power_state, "On");
        let refused = bmc
            .post(&target, &json!({"ResetType": "ForceRestart"}))
            .await;
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("the VM would not restart")
        );
        assert_eq!(
            hook.0.lock().unwrap().clone(),
            vec![(1, 1, "On".to_string())]
        );
        bmc.logout().await;
        assert_eq!(sims.open_sessions(1), 0);

        // Wrong password: refused at login, no session.
        let bad = Bmc::new(
            &t,
            &sims.addrs()[0].to_string(),
            Credentials {
                username: "admin".into(),
                password: "nope".into(),
            },
        );
        assert!(bad.login().await.unwrap_err().is_auth());
        assert_eq!(sims.sessions_created(0), 0);

        // A session left open by a dropped Bmc is deleted in the background.
        let dropped = Bmc::new(&t, &sims.addrs()[0].to_string(), creds);
        dropped.login().await.unwrap();
        drop(dropped);
        for _ in 0..100 {
            if sims.open_sessions(0) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(sims.open_sessions(0), 0);
        sims.shutdown().await;
    }

    #[test]
    fn addresses_and_identities() {
        let c = SimConfig::consecutive("127.1.0.254".parse().unwrap(), 8443, 3);
        assert_eq!(
            c.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            vec!["127.1.0.254:8443", "127.1.0.255:8443", "127.1.1.0:8443"]
        );
        assert_eq!(system_mac(258, 1), "02:00:00:01:02:01");
        assert_eq!(bmc_mac(258), "02:01:00:00:01:02");
        assert_ne!(system_uuid(1, 0), system_uuid(0, 1));
    }
}
