//! BSS (`/boot/v1`) adapters and boot artifacts.

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::AppState;
use super::json::{QueryPairs, decode_top_folded};
use super::peer::caller_ip;
use super::problem::ApiError;
use super::routes::{Access, Listeners, Route, route};
use super::server::{Local, Peer};
use crate::boot::answer::{self, Answer, ScriptRequest, Selector};
use crate::boot::params::{self, BootParamsIn};
use crate::boot::steps::{self, Step};
use crate::inventory::model::{BootConfig, Component};
use crate::inventory::{DomainError, Model, mac, xname};

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    const P: &str = "/boot/v1/bootparameters";
    vec![
        route(
            Method::GET,
            P,
            "bss",
            Token,
            Api,
            "Boot configurations (mac, name, nid filters)",
            get_params,
        ),
        route(
            Method::POST,
            P,
            "bss",
            Token,
            Api,
            "Bind a configuration to unbound targets",
            post_params,
        ),
        route(
            Method::PUT,
            P,
            "bss",
            Token,
            Api,
            "Rebind targets to a new configuration",
            put_params,
        ),
        route(
            Method::PATCH,
            P,
            "bss",
            Token,
            Api,
            "Change the targets' configuration",
            patch_params,
        ),
        route(
            Method::DELETE,
            P,
            "bss",
            Token,
            Api,
            "Unbind targets",
            delete_params,
        ),
        route(
            Method::GET,
            "/boot/v1/bootscript",
            "bss",
            Anonymous,
            Both,
            "The iPXE script a node boots",
            bootscript,
        ),
        route(
            Method::GET,
            "/boot/v1/bootparams",
            "bss",
            Anonymous,
            Both,
            "What a kexec helper loads next (caller by address)",
            kexec,
        ),
        route(
            Method::GET,
            "/boot/v1/hosts",
            "bss",
            Anonymous,
            Api,
            "Nodes as BSS sees them",
            hosts,
        ),
        route(
            Method::POST,
            "/boot/v1/hosts",
            "bss",
            Token,
            Api,
            "No-op (the inventory is live)",
            hosts_post,
        ),
        route(
            Method::GET,
            "/boot/v1/dumpstate",
            "bss",
            Token,
            Api,
            "Nodes and configurations",
            dumpstate,
        ),
        route(
            Method::GET,
            "/boot/v1/endpoint-history",
            "bss",
            Anonymous,
            Api,
            "Last boot script fetch per node",
            history,
        ),
        route(
            Method::GET,
            "/boot/v1/boot-steps",
            "bss",
            Token,
            Api,
            "Where each node got to in its boot: last time each step was seen (name = xname, MAC or address)",
            boot_steps,
        ),
        route(
            Method::GET,
            "/boot/v1/service/status",
            "bss",
            Anonymous,
            Api,
            "BSS status",
            svc_status,
        ),
        route(
            Method::GET,
            "/boot/v1/service/version",
            "bss",
            Anonymous,
            Api,
            "BSS version",
            svc_version,
        ),
        route(
            Method::GET,
            "/boot/v1/service/hsm",
            "bss",
            Anonymous,
            Api,
            "Inventory connection",
            svc_hsm,
        ),
        route(
            Method::GET,
            "/boot/v1/service/storage/status",
            "bss",
            Anonymous,
            Api,
            "Storage status",
            svc_storage,
        ),
        route(
            Method::GET,
            "/boot/v1/service/status/all",
            "bss",
            Anonymous,
            Api,
            "All statuses",
            svc_all,
        ),
        route(
            Method::GET,
            "/artifacts/{*path}",
            "bss",
            Anonymous,
            Both,
            "Boot artifacts (HEAD, Range)",
            artifacts,
        ),
    ]
}

/// A configuration in BSS's wire shape (no internal ID, empty fields
/// omitted); a boot-service configuration's groups are listed with its
/// hosts, as upstream's BSS adapter does.
pub fn wire(b: &BootConfig) -> Value {
    let mut v = serde_json::Map::new();
    if params::is_image(b) {
        // Upstream's image entries: the path and its parameters only.
        if !b.params.is_empty() {
            v.insert("params".into(), json!(b.params));
        }
        for (k, p) in [("kernel", &b.kernel), ("initrd", &b.initrd)] {
            if !p.is_empty() {
                v.insert(k.into(), json!(p));
            }
        }
        return Value::Object(v);
    }
    if !b.hosts.is_empty() || !b.groups.is_empty() {
        let hosts: Vec<&String> = b.hosts.iter().chain(b.groups.iter()).collect();
        v.insert("hosts".into(), json!(hosts));
    }
    if !b.macs.is_empty() {
        v.insert("macs".into(), json!(b.macs));
    }
    if !b.nids.is_empty() {
        v.insert("nids".into(), json!(b.nids));
    }
    v.insert("kernel".into(), json!(b.kernel));
    if !b.initrd.is_empty() {
        v.insert("initrd".into(), json!(b.initrd));
    }
    v.insert("params".into(), json!(b.params));
    if !b.cloud_init.is_null() {
        v.insert("cloud-init".into(), b.cloud_init.clone());
    }
    Value::Object(v)
}

fn body_or_default(bytes: &Bytes) -> Result<BootParamsIn, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(BootParamsIn::default())
    } else {
        decode_params(bytes)
    }
}

/// A `bootparameters` body: top-level keys matched case-insensitively; the
/// documents under `cloud-init` keep their keys as sent (they are the
/// node's data), its own members are matched by `params::check_cloud_init`.
fn decode_params(bytes: &[u8]) -> Result<BootParamsIn, ApiError> {
    decode_top_folded(bytes)
}

/// Upstream BSS answers every stored write for hosts, MACs or NIDs with a
/// fresh `BSS-Referral-Token` (image parameters get none).
fn with_referral(status: StatusCode, b: &BootParamsIn) -> Response {
    let mut r = status.into_response();
    if !(b.hosts.is_empty() && b.macs.is_empty() && b.nids.is_empty())
        && let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
    {
        r.headers_mut().insert("BSS-Referral-Token", v);
    }
    r
}

async fn get_params(
    State(st): State<AppState>,
    q: QueryPairs,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut b = body_or_default(&body)?;
    b.macs.extend(q.all("mac"));
    b.hosts.extend(q.all("name"));
    for n in q.all("nid") {
        b.nids.push(
            n.parse()
                .map_err(|_| ApiError::bad_request(format!("nid must be a number, got {n:?}")))?,
        );
    }
    let snap = st.store.snapshot();
    // As upstream, a name or MAC that cannot be a target has no boot
    // parameters (404); a malformed NID stays a 400.
    let named = params::targets(&snap, &b).map_err(|e| match e {
        DomainError::Invalid(m) if b.nids.iter().all(|n| *n >= 0) => {
            ApiError::not_found(format!("Cannot find boot parameters: {m}"))
        }
        other => other.into(),
    })?;
    let images = params::images(&snap, &b);
    let names_image = b.kernel.is_some() || b.initrd.is_some();
    if named.is_empty() && names_image {
        if images.is_empty() {
            return Err(ApiError::not_found(
                "Cannot find boot parameters for requested kernel or initrd",
            ));
        }
        return Ok(axum::Json(images.into_iter().map(wire).collect::<Vec<_>>()).into_response());
    }
    let found = params::query(&snap, &named)?;
    Ok(axum::Json(found.into_iter().map(wire).collect::<Vec<_>>()).into_response())
}

async fn post_params(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let b: BootParamsIn = decode_params(&body)?;
    let b2 = b.clone();
    st.store.write(move |t| params::post(t, &b2)).await?;
    Ok(with_referral(StatusCode::CREATED, &b))
}

async fn put_params(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let b: BootParamsIn = decode_params(&body)?;
    let b2 = b.clone();
    st.store.write(move |t| params::put(t, &b2)).await?;
    Ok(with_referral(StatusCode::OK, &b))
}

async fn patch_params(State(st): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let b: BootParamsIn = decode_params(&body)?;
    st.store.write(move |t| params::patch(t, &b)).await?;
    Ok(StatusCode::OK)
}

async fn delete_params(State(st): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let b: BootParamsIn = decode_params(&body)?;
    st.store.write(move |t| params::delete(t, &b)).await?;
    Ok(StatusCode::OK)
}

pub(crate) fn text(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

fn encode(a: Answer) -> Response {
    match a {
        Answer::Script(s) => text(s),
        Answer::Json(v) => axum::Json(v).into_response(),
        Answer::NotFound(m) => ApiError::not_found(m).into_response(),
    }
}

/// A cheap jitter source: retries need spread, not secrecy.
pub(crate) fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos % 1_000_000) as f64 / 1_000_000.0
}

async fn bootscript(
    State(st): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    local: Option<axum::Extension<Local>>,
    headers: HeaderMap,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let req = ScriptRequest::parse(
        q.first("mac"),
        q.first("name"),
        q.first("nid"),
        q.first("arch"),
        q.first("retry"),
        q.first("json"),
    )
    .map_err(ApiError::bad_request)?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let now = now_ms.div_euclid(1000);
    let snap = st.store.snapshot();
    let base = st.node_base_for(local.as_ref().map(|l| &l.0));
    let out = answer::bootscript(&snap, &req, &base, now, jitter());
    st.boot_history.record(&out.who, "bootscript", now);
    let mac = match &req.selector {
        Selector::Mac(m) => Some(m.as_str()),
        _ => None,
    };
    let ip = peer.map(|p| caller_ip(p.0.0.ip(), &headers, &st.config.http.trusted_proxies));
    let who = steps::caller(&snap, mac, ip, now);
    st.boot_steps
        .record(&who, Step::Script, "bootscript", now_ms);
    Ok(encode(out.answer))
}

/// The component the caller is: `?mac=`, `?name=`, else by its address.
fn caller_component<'m>(
    model: &'m Model,
    q: &QueryPairs,
    ip: IpAddr,
) -> Result<(&'m Component, Option<String>), ApiError> {
    if let Some(m) = q.first("mac") {
        let m = mac::normalize(m).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let c = params::component_of_mac(model, &m)
            .ok_or_else(|| ApiError::not_found(format!("{m} is not in the inventory")))?;
        return Ok((c, Some(m)));
    }
    if let Some(n) = q.first("name") {
        let x = xname::normalize(n).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let c = model
            .components
            .get(&x)
            .ok_or_else(|| ApiError::not_found(format!("{x} is not in the inventory")))?;
        return Ok((c, None));
    }
    for iface in model.interfaces_with_ip(ip) {
        if let Some(c) = model
            .components
            .get(&iface.component_id)
            .filter(|c| c.is_node())
        {
            return Ok((c, Some(iface.mac_address.clone())));
        }
    }
    Err(ApiError::not_found(format!("no node has address {ip}")))
}

async fn kexec(
    State(st): State<AppState>,
    q: QueryPairs,
    peer: Option<axum::Extension<Peer>>,
    local: Option<axum::Extension<Local>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let peer_ip = peer
        .map(|p| p.0.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let ip = caller_ip(peer_ip, &headers, &st.config.http.trusted_proxies);
    let snap = st.store.snapshot();
    let (c, m) = caller_component(&snap, &q, ip)?;
    let base = st.node_base_for(local.as_ref().map(|l| &l.0));
    Ok(encode(answer::kexec(&snap, c, m.as_deref(), &base)))
}

fn host_entry(model: &Model, c: &Component) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    let ep = model.component_endpoints.get(&c.id);
    v["FQDN"] = json!(ep.map(|e| e.fqdn.clone()).unwrap_or_default());
    v["MAC"] = json!(
        model
            .interfaces_of(&c.id)
            .iter()
            .map(|i| i.mac_address.clone())
            .collect::<Vec<_>>()
    );
    v["EndpointEnabled"] = json!(ep.is_none_or(|e| e.enabled));
    v
}

async fn hosts(State(st): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let snap = st.store.snapshot();
    let mut out: Vec<Value> = Vec::new();
    let filtered = q.has("mac") || q.has("name") || q.has("nid");
    if !filtered {
        out = snap
            .components
            .values()
            .filter(|c| c.is_node())
            .map(|c| host_entry(&snap, c))
            .collect();
    }
    for m in q.all("mac") {
        let m = mac::normalize(&m).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let c = params::component_of_mac(&snap, &m)
            .ok_or_else(|| ApiError::not_found(format!("no host with MAC {m}")))?;
        out.push(host_entry(&snap, c));
    }
    for n in q.all("name") {
        let x = xname::normalize(&n).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let c = snap
            .components
            .get(&x)
            .ok_or_else(|| ApiError::not_found(format!("no host {x}")))?;
        out.push(host_entry(&snap, c));
    }
    for n in q.all("nid") {
        let nid: i64 = n
            .parse()
            .map_err(|_| ApiError::bad_request(format!("nid must be a number, got {n:?}")))?;
        let c = snap
            .component_by_nid(nid)
            .ok_or_else(|| ApiError::not_found(format!("no host with NID {nid}")))?;
        out.push(host_entry(&snap, c));
    }
    Ok(axum::Json(out).into_response())
}

async fn hosts_post() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn dumpstate(State(st): State<AppState>) -> Response {
    let snap = st.store.snapshot();
    let comps: Vec<Value> = snap
        .components
        .values()
        .filter(|c| c.is_node())
        .map(|c| host_entry(&snap, c))
        .collect();
    let params: Vec<Value> = params::all(&snap).into_iter().map(wire).collect();
    axum::Json(json!({"Components": comps, "Params": params})).into_response()
}

async fn boot_steps(State(st): State<AppState>, q: QueryPairs) -> Response {
    let mut recs = st.boot_steps.query(q.first("name"));
    for r in recs.iter_mut().filter(|r| r.wants_console()) {
        let log = st.consoles.log_path(&r.name);
        r.point_to_console(log.as_deref());
    }
    axum::Json(recs).into_response()
}

async fn history(State(st): State<AppState>, q: QueryPairs) -> Response {
    axum::Json(st.boot_history.query(q.first("name"), q.first("endpoint"))).into_response()
}

fn status() -> Value {
    json!({"bss-status": "running"})
}

async fn svc_status() -> Response {
    axum::Json(status()).into_response()
}

async fn svc_version() -> Response {
    axum::Json(json!({"bss-version": env!("CARGO_PKG_VERSION")})).into_response()
}

async fn svc_hsm() -> Response {
    axum::Json(json!({"bss-status-hsm": "connected"})).into_response()
}

async fn svc_storage(State(st): State<AppState>) -> Response {
    let status = if st.store.ping().await.is_ok() {
        "connected"
    } else {
        "error"
    };
    axum::Json(json!({"bss-storage-backend": {"name": "sqlite", "status": status}})).into_response()
}

async fn svc_all(State(st): State<AppState>) -> Response {
    let storage = if st.store.ping().await.is_ok() {
        "connected"
    } else {
        "error"
    };
    axum::Json(json!({
        "bss-status": "running",
        "bss-version": env!("CARGO_PKG_VERSION"),
        "bss-status-hsm": "connected",
        "bss-storage-backend": {"name": "sqlite", "status": storage},
    }))
    .into_response()
}

/// Files under `boot.artifacts_dir`; `ServeDir` handles HEAD, Range,
/// Content-Length and refuses paths that leave the directory. Directories
/// are 404: neither listed nor redirected (`ServeDir` would redirect to the
/// path without the `/artifacts` prefix).
async fn artifacts(State(st): State<AppState>, req: Request) -> Response {
    let dir = &st.config.boot.artifacts_dir;
    if dir.as_os_str().is_empty() {
        return ApiError::not_found("no artifacts directory is configured (boot.artifacts_dir)")
            .into_response();
    }
    if req.method() == Method::GET
        && let Some(peer) = req.extensions().get::<Peer>()
    {
        let ip = caller_ip(peer.0.ip(), req.headers(), &st.config.http.trusted_proxies);
        let snap = st.store.snapshot();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let who = steps::caller(&snap, None, Some(ip), now_ms / 1000);
        let path = req.uri().path();
        let step = steps::artifact_step(&snap, &who, path);
        st.boot_steps.record(&who, step, path, now_ms);
    }
    let (mut parts, body) = req.into_parts();
    let rest = parts
        .uri
        .path()
        .strip_prefix("/artifacts")
        .unwrap_or("/")
        .to_string();
    if rest.split('/').any(|seg| seg == "..") {
        return ApiError::bad_request("path escapes the artifacts directory").into_response();
    }
    match rest.parse::<axum::http::Uri>() {
        Ok(u) => parts.uri = u,
        Err(_) => return ApiError::bad_request("invalid path").into_response(),
    }
    // ServeDir follows symlinks; one inside the directory may still point
    // out of it (as TFTP refuses, so does this).
    if let Some(outside) = resolves_outside(dir, &rest).await {
        tracing::info!(path = %rest, target = %outside.display(), "artifacts: refused a path resolving outside the directory");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "path resolves outside the artifacts directory",
        )
        .into_response();
    }
    let req = Request::from_parts(parts, body);
    match tower_http::services::ServeDir::new(dir)
        .append_index_html_on_directories(false)
        .oneshot(req)
        .await
    {
        Ok(r) => r.map(Body::new),
        Err(e) => ApiError::internal(format!("cannot read artifact: {e}")).into_response(),
    }
}

/// Where the request path `rest` (percent-encoded, relative to `dir`)
/// really leads, when that is outside `dir`. Paths that do not resolve are
/// left to `ServeDir` (a 404).
async fn resolves_outside(dir: &std::path::Path, rest: &str) -> Option<std::path::PathBuf> {
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8_lossy()
        .to_string();
    let rel = std::path::PathBuf::from(decoded.trim_start_matches('/'));
    // `..` and the like are ServeDir's to refuse.
    if !rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let root = dir.canonicalize().ok()?;
        let target = dir.join(rel).canonicalize().ok()?;
        (!target.starts_with(&root)).then_some(target)
    })
    .await
    .ok()
    .flatten()
}
