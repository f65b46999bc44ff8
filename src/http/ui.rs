//! The status page (`/ui`): a cluster view an operator can leave open.
//!
//! The page is hand-written HTML, CSS and JavaScript modules under `ui/`,
//! embedded in the binary with `include_bytes!`: no front-end toolchain, so
//! no built output to keep in step with its source, and nothing fetched at
//! build or run time. Every page answer carries a strict
//! Content-Security-Policy (no inline script or style, nothing from another
//! origin).
//!
//! Its data comes from a few read-only JSON routes under `/ui/api`, each a
//! view over one snapshot (plus the in-memory boot-step record), and one
//! power route. They take the page's session cookie (see `ui_session`) or
//! a bearer token. `/ui/api/events` is a server-sent event stream driven by
//! the store's and the boot-step record's change notifications, coalesced
//! to at most [`COALESCE`]⁻¹ messages a second: the page fetches the cluster
//! view again when told, and never polls.
//!
//! Nothing here is served on the node listener.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::json::{ApiJson, QueryPairs};
use super::problem::ApiError;
use super::routes::{Access, Listeners, Route, route};
use super::state::AppState;
use super::ui_session::{self, SessionInfo};
use crate::inventory::components::parse_xname;
use crate::inventory::model::{Component, EthernetInterface, PhoneHome};

/// The policy every page answer carries.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Least time between two change messages of one event stream.
pub const COALESCE: Duration = Duration::from_millis(250);
/// Event streams open at once, all pages together.
const MAX_STREAMS: usize = 256;
/// Console lines a node page may ask for.
const MAX_CONSOLE_LINES: i64 = 2000;

/// The embedded files: name, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/views.js"),
    ),
    (
        "grid.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/grid.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/api.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/style.css"),
    ),
];
const INDEX: &[u8] = include_bytes!("../../ui/index.html");

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    vec![
        route(
            Method::GET,
            "/ui",
            "ui",
            Anonymous,
            Api,
            "The status page (HTML; its data needs a sign-in)",
            index,
        ),
        route(
            Method::GET,
            "/ui/static/{file}",
            "ui",
            Anonymous,
            Api,
            "The status page's scripts and style sheet",
            static_file,
        ),
        route(
            Method::POST,
            ui_session::SESSION_PATH,
            "ui",
            Anonymous,
            Api,
            "Sign in to the status page: a token for a session cookie",
            ui_session::sign_in,
        ),
        route(
            Method::GET,
            ui_session::SESSION_PATH,
            "ui",
            Session,
            Api,
            "The signed-in status page session and its CSRF token",
            ui_session::whoami,
        ),
        route(
            Method::DELETE,
            ui_session::SESSION_PATH,
            "ui",
            Session,
            Api,
            "Sign out of the status page",
            ui_session::sign_out,
        ),
        route(
            Method::GET,
            "/ui/api/cluster",
            "ui",
            Session,
            Api,
            "Every node in one compact row: state, groups, addresses, boot step",
            cluster,
        ),
        route(
            Method::GET,
            "/ui/api/events",
            "ui",
            Session,
            Api,
            "Server-sent events: the inventory or the boot steps changed",
            events,
        ),
        route(
            Method::GET,
            "/ui/api/nodes/{xname}",
            "ui",
            Session,
            Api,
            "One node: identity, interfaces, groups, boot, steps, power",
            node,
        ),
        route(
            Method::GET,
            "/ui/api/nodes/{xname}/console",
            "ui",
            Session,
            Api,
            "The last lines of a node's console log",
            console_tail,
        ),
        route(
            Method::GET,
            "/ui/api/discovery",
            "ui",
            Session,
            Api,
            "Discovery jobs with their BMCs",
            discovery,
        ),
        route(
            Method::GET,
            "/ui/api/dhcp",
            "ui",
            Session,
            Api,
            "DHCP leases and pool use",
            dhcp,
        ),
        route(
            Method::POST,
            "/ui/api/power",
            "ui",
            Session,
            Api,
            "Power nodes on, off or restart them (a PCS transition)",
            power,
        ),
    ]
}

/// Headers of every page file: the policy, no sniffing, no framing.
fn page(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn static_file(Path(file): Path<String>) -> Result<Response, ApiError> {
    FILES
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, ct, body)| page(ct, body))
        .ok_or_else(|| ApiError::not_found(format!("no status page file {file:?}")))
}

/// JSON that no cache keeps.
fn fresh<T: Serialize>(v: T) -> Response {
    let mut r = axum::Json(v).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

// ------------------------------------------------------------------ cluster

/// One node of the cluster view. Empty members are left out: 10,000 rows
/// travel on every change.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct NodeRow {
    pub xname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nid: Option<i64>,
    /// The component State (`On`, `Off`, `Ready`, `Populated`, ...).
    pub state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub role: String,
    /// False when the component is disabled.
    pub enabled: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// The furthest boot step of the node's current boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<crate::boot::steps::Step>,
    /// When the node was last seen by a boot step (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seen_ms: Option<i64>,
}

/// `GET /ui/api/cluster`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ClusterView {
    /// The inventory generation the rows are from.
    pub generation: u64,
    /// Node components in xname order.
    pub nodes: Vec<NodeRow>,
}

/// The rows of every node component of a snapshot.
pub fn cluster_rows(
    snap: &crate::inventory::Snapshot,
    steps: &std::collections::HashMap<String, (crate::boot::steps::Step, i64)>,
) -> Vec<NodeRow> {
    snap.components
        .values()
        .filter(|c| c.kind == "Node")
        .map(|c| {
            let ifaces = snap.interfaces_of(&c.id);
            let step = steps.get(&c.id);
            NodeRow {
                xname: c.id.clone(),
                nid: c.nid,
                state: c.state.clone(),
                role: c.role.clone().unwrap_or_default(),
                enabled: c.enabled.unwrap_or(true),
                groups: snap
                    .group_labels_of(&c.id)
                    .map(|l| l.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default(),
                macs: ifaces.iter().map(|i| i.mac_address.clone()).collect(),
                ips: ifaces
                    .iter()
                    .flat_map(|i| i.ip_addresses.iter().map(|a| a.ip_address.clone()))
                    .collect(),
                step: step.map(|s| s.0),
                seen_ms: step.map(|s| s.1),
            }
        })
        .collect()
}

async fn cluster(State(st): State<AppState>) -> Response {
    let snap = st.store.snapshot();
    let steps = st.boot_steps.last_steps();
    fresh(ClusterView {
        generation: snap.generation,
        nodes: cluster_rows(&snap, &steps),
    })
}

// ------------------------------------------------------------------- events

/// Counts an open event stream while it lives.
struct StreamSlot(AppState);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.ui.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one change message says: follow it with `GET /ui/api/cluster`.
#[derive(Serialize)]
struct Changed {
    generation: u64,
    steps: u64,
    discovery: u64,
}

struct Follow {
    store: tokio::sync::watch::Receiver<u64>,
    steps: tokio::sync::watch::Receiver<u64>,
    discovery: tokio::sync::watch::Receiver<u64>,
    first: bool,
    slot: StreamSlot,
}

async fn events(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let wants_stream = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if !wants_stream {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "this is an event stream: send Accept: text/event-stream",
        ));
    }
    if st.ui.streams.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        st.ui.streams.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::unavailable("too many status pages are open"));
    }
    let follow = Follow {
        store: st.store.subscribe(),
        steps: st.boot_steps.subscribe(),
        discovery: st.discovery.subscribe(),
        first: true,
        slot: StreamSlot(st.clone()),
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        let stop = f.slot.0.ui.shutdown.clone();
        if !f.first {
            tokio::select! {
                _ = stop.cancelled() => return None,
                r = f.store.changed() => r.ok()?,
                r = f.steps.changed() => r.ok()?,
                r = f.discovery.changed() => r.ok()?,
            }
            // Whatever else changes meanwhile rides on this message.
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(COALESCE) => {}
            }
        }
        f.first = false;
        let msg = Changed {
            generation: *f.store.borrow_and_update(),
            steps: *f.steps.borrow_and_update(),
            discovery: *f.discovery.borrow_and_update(),
        };
        let ev = Event::default()
            .event("changed")
            .json_data(msg)
            .unwrap_or_else(|_| Event::default().event("changed"));
        Some((Ok::<Event, Infallible>(ev), f))
    });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

// --------------------------------------------------------------------- node

/// A power transition as it concerns one node.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct NodeTransition {
    pub id: String,
    pub operation: String,
    pub created: String,
    /// The transition's status.
    pub status: String,
    /// This node's task status, description and error.
    pub task_status: String,
    pub description: String,
    pub error: String,
}

/// What a node boots (the configuration's other members stay with the
/// boot APIs).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct NodeBoot {
    /// The configuration's key (the boot-service `uid`).
    pub id: String,
    pub kernel: String,
    pub initrd: String,
    pub params: String,
}

/// `GET /ui/api/nodes/{xname}`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct NodeView {
    pub component: Component,
    pub interfaces: Vec<EthernetInterface>,
    pub groups: Vec<String>,
    pub partition: Option<String>,
    /// The configuration it boots with (BSS or boot-service), if any.
    pub boot: Option<NodeBoot>,
    /// Its current boot's steps, if any were seen.
    pub steps: Option<crate::boot::steps::NodeSteps>,
    /// Its latest power transitions, newest first (at most 10).
    pub transitions: Vec<NodeTransition>,
    pub phone_home: Option<PhoneHome>,
    /// Whether a console is kept for it (`/ui/api/nodes/{xname}/console`).
    pub console: bool,
}

async fn node(State(st): State<AppState>, Path(xname): Path<String>) -> Result<Response, ApiError> {
    let (x, _) = parse_xname(&xname)?;
    let snap = st.store.snapshot();
    let c = snap
        .components
        .get(&x)
        .ok_or_else(|| ApiError::not_found(format!("no component {x}")))?;
    let mac = crate::boot::params::first_mac(&snap, &x);
    let boot = crate::boot::params::config_for(&snap, c, mac.as_deref()).map(|b| NodeBoot {
        id: b.id.clone(),
        kernel: b.kernel.clone(),
        initrd: b.initrd.clone(),
        params: b.params.clone(),
    });
    let mut transitions: Vec<NodeTransition> = st
        .power
        .transitions()
        .into_iter()
        .rev()
        .filter_map(|t| {
            let task = t.tasks.iter().find(|k| k.xname == x)?;
            Some(NodeTransition {
                id: t.id.clone(),
                operation: t.operation.clone(),
                created: t.create_time.clone(),
                status: t.status.clone(),
                task_status: task.status.clone(),
                description: task.description.clone(),
                error: task.error.clone(),
            })
        })
        .collect();
    transitions.truncate(10);
    let view = NodeView {
        component: Component::clone(c),
        interfaces: snap.interfaces_of(&x).into_iter().cloned().collect(),
        groups: snap
            .group_labels_of(&x)
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default(),
        partition: snap.partition_of(&x).map(|p| p.name.clone()),
        boot,
        steps: st.boot_steps.of(&x),
        transitions,
        phone_home: snap.phone_home.get(&x).cloned(),
        console: st.consoles.get(&x).is_some(),
    };
    Ok(fresh(view))
}

async fn console_tail(
    State(st): State<AppState>,
    Path(xname): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let (x, _) = parse_xname(&xname)?;
    let lines = match q.first("lines") {
        None | Some("") => 100,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_CONSOLE_LINES).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "lines must be a whole number from 1 to {MAX_CONSOLE_LINES}"
                ))
            })?,
    };
    let hub = st
        .consoles
        .get(&x)
        .ok_or_else(|| ApiError::not_found(format!("no console for {x}")))?;
    let tail = hub.tail(lines, false).map_err(|e| {
        tracing::warn!(node = x, error = %e, "cannot read a console log");
        ApiError::internal("the console log cannot be read")
    })?;
    let text = String::from_utf8_lossy(&tail.data.unwrap_or_default()).into_owned();
    let mut r = text.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

// ------------------------------------------------------- discovery and DHCP

async fn discovery(State(st): State<AppState>) -> Response {
    let jobs: Vec<serde_json::Value> = st.discovery.jobs().iter().map(|j| j.json(true)).collect();
    fresh(serde_json::json!({ "jobs": jobs }))
}

/// A DHCP subnet's pool and how much of it is leased.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PoolUse {
    pub subnet: String,
    /// `first-last`.
    pub pool: String,
    pub size: u64,
    /// Unexpired pool leases in the range.
    pub used: u64,
}

/// `GET /ui/api/dhcp`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DhcpView {
    pub enabled: bool,
    pub pools: Vec<PoolUse>,
    pub leases: Vec<super::dhcp::LeaseView>,
}

async fn dhcp(State(st): State<AppState>) -> Response {
    let leases = super::dhcp::lease_views(&st);
    let settings = crate::dhcp::settings::Settings::from_config(
        &st.config.dhcp,
        st.node_base.clone(),
        &st.config.cluster_name,
    );
    let pools = settings
        .map(|s| {
            s.subnets
                .iter()
                .filter_map(|sub| {
                    let (first, last) = sub.pool?;
                    let used = leases
                        .iter()
                        .filter(|l| l.kind == "pool" && !l.expired)
                        .filter_map(|l| l.ip.parse::<std::net::Ipv4Addr>().ok())
                        .filter(|ip| (first..=last).contains(ip))
                        .count();
                    Some(PoolUse {
                        subnet: sub.cidr.to_string(),
                        pool: format!("{first}-{last}"),
                        size: u64::from(u32::from(last) - u32::from(first)) + 1,
                        used: used as u64,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    fresh(DhcpView {
        enabled: st.config.dhcp.enabled,
        pools,
        leases,
    })
}

// -------------------------------------------------------------------- power

/// `POST /ui/api/power`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerIn {
    /// `on`, `off` or `restart`.
    pub operation: String,
    pub xnames: Vec<String>,
}

/// The page's three actions as PCS operations.
pub fn pcs_operation(op: &str) -> Option<&'static str> {
    match op {
        "on" => Some("on"),
        "off" => Some("soft-off"),
        "restart" => Some("soft-restart"),
        _ => None,
    }
}

async fn power(
    State(st): State<AppState>,
    Extension(who): Extension<SessionInfo>,
    ApiJson(req): ApiJson<PowerIn>,
) -> Result<Response, ApiError> {
    let op = pcs_operation(&req.operation).ok_or_else(|| {
        ApiError::bad_request(format!(
            "operation {:?} is not one of on, off, restart",
            req.operation
        ))
    })?;
    if req.xnames.is_empty() {
        return Err(ApiError::bad_request("xnames lists no node"));
    }
    let t = st
        .power
        .start_transition(crate::power::TransitionRequest {
            operation: op.into(),
            deadline_minutes: None,
            location: req
                .xnames
                .iter()
                .map(|x| crate::power::Location {
                    xname: x.clone(),
                    deputy_key: None,
                })
                .collect(),
        })
        .await?;
    tracing::info!(
        sub = who.sub,
        operation = op,
        transition = t.id,
        nodes = req.xnames.len(),
        "power action from the status page"
    );
    Ok(fresh(
        serde_json::json!({"transitionID": t.id, "operation": t.operation}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_operations_map_to_pcs() {
        let cases = [
            ("on", Some("on")),
            ("off", Some("soft-off")),
            ("restart", Some("soft-restart")),
            ("init", None),
            ("", None),
        ];
        for (op, want) in cases {
            assert_eq!(pcs_operation(op), want, "{op}");
        }
    }

    #[test]
    fn every_file_has_a_policy() {
        for (name, ct, body) in FILES {
            let r = page(ct, body);
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP, "{name}");
        }
        let html = std::str::from_utf8(INDEX).unwrap();
        assert!(!html.contains("<script>"), "no inline script");
        assert!(!html.contains("style="), "no inline style");
    }
}
