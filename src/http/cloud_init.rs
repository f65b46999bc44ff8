//! cloud-init (`/cloud-init`) adapters: node documents, phone-home, and the
//! token-protected admin routes (defaults, groups, instance info,
//! impersonation, phone-home records).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::AppState;
use super::json::{decode_exact, decode_folded};
use super::peer::caller_ip;
use super::problem::ApiError;
use super::routes::{Access, Listeners, Route, route};
use super::server::{Local, Peer};
use crate::boot::steps::{self, Step};
use crate::inventory::model::{CloudInitGroup, ClusterDefaults, InstanceInfo, PhoneHome};
use crate::inventory::{Snapshot, groups::parse_label};
use crate::metadata::document::{self, Settings};
use crate::metadata::identify;
use crate::metadata::rules::{self, GroupIn};

const S: &str = "cloud-init";

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    vec![
        route(
            Method::GET,
            "/cloud-init/meta-data",
            S,
            Anonymous,
            Both,
            "The caller's meta-data (YAML), caller by address",
            meta_data,
        ),
        route(
            Method::GET,
            "/cloud-init/user-data",
            S,
            Anonymous,
            Both,
            "user-data: #cloud-config",
            user_data,
        ),
        route(
            Method::GET,
            "/cloud-init/vendor-data",
            S,
            Anonymous,
            Both,
            "#include of the caller's group files",
            vendor_data,
        ),
        route(
            Method::GET,
            "/cloud-init/{group}",
            S,
            Anonymous,
            Both,
            "<group>.yaml: a group file of the caller's",
            group_file,
        ),
        route(
            Method::POST,
            "/cloud-init/phone-home/{id}",
            S,
            Anonymous,
            Both,
            "Record the caller's phone-home (form)",
            phone_home,
        ),
        route(
            Method::GET,
            "/cloud-init/version",
            S,
            Anonymous,
            Api,
            "cloud-init service version",
            version,
        ),
        route(
            Method::GET,
            "/cloud-init/openapi.json",
            S,
            Anonymous,
            Api,
            "This API document (where ochami looks)",
            openapi,
        ),
        route(
            Method::GET,
            "/cloud-init/admin/cluster-defaults",
            S,
            Token,
            Api,
            "Cluster defaults",
            get_defaults,
        ),
        route(
            Method::POST,
            "/cloud-init/admin/cluster-defaults",
            S,
            Token,
            Api,
            "Merge the non-empty fields into the cluster defaults",
            post_defaults,
        ),
        route(
            Method::GET,
            "/cloud-init/admin/groups",
            S,
            Token,
            Api,
            "cloud-init groups, keyed by name",
            get_groups,
        ),
        route(
            Method::POST,
            "/cloud-init/admin/groups",
            S,
            Token,
            Api,
            "Add a cloud-init group (409 if present)",
            post_group,
        ),
        route(
            Method::GET,
            "/cloud-init/admin/groups/{name}",
            S,
            Token,
            Api,
            "One cloud-init group",
            get_group,
        ),
        route(
            Method::PUT,
            "/cloud-init/admin/groups/{name}",
            S,
            Token,
            Api,
            "Create or replace a cloud-init group",
            put_group,
        ),
        route(
            Method::DELETE,
            "/cloud-init/admin/groups/{name}",
            S,
            Token,
            Api,
            "Delete a cloud-init group",
            delete_group,
        ),
        route(
            Method::GET,
            "/cloud-init/admin/instance-info/{id}",
            S,
            Token,
            Api,
            "A node's overrides and instance ID",
            get_instance_info,
        ),
        route(
            Method::PUT,
            "/cloud-init/admin/instance-info/{id}",
            S,
            Token,
            Api,
            "Replace a node's overrides (its instance ID is kept)",
            put_instance_info,
        ),
        route(
            Method::GET,
            "/cloud-init/admin/impersonation/{id}/meta-data",
            S,
            Token,
            Api,
            "The meta-data node {id} gets",
            imp_meta_data,
        ),
        route(
            Method::GET,
            "/cloud-init/admin/impersonation/{id}/user-data",
            S,
            Token,
            Api,
            "The user-data node {id} gets",
            imp_user_data,
        ),
        route(
            Method::GET,
            "/cloud-init/admin/impersonation/{id}/vendor-data",
            S,
            Token,
            Api,
            "The vendor-data node {id} gets",
            imp_vendor_data,
        ),
        route(
            Method::GET,
            "/cloud-init/admin/impersonation/{id}/{group}",
            S,
            Token,
            Api,
            "The <group>.yaml node {id} gets",
            imp_group_file,
        ),
        route(
            Method::GET,
            "/cloud-init/admin/phone-home",
            S,
            Token,
            Api,
            "Last phone-home of every node",
            get_phone_homes,
        ),
        route(
            Method::GET,
            "/cloud-init/admin/phone-home/{id}",
            S,
            Token,
            Api,
            "Last phone-home of a node",
            get_phone_home,
        ),
    ]
}

/// A JSON object body (keys case-insensitive when `fold`, as upstream's Go
/// decoders; exact for groups, whose meta-data is free-form).
fn object_body<T: serde::de::DeserializeOwned>(bytes: &[u8], fold: bool) -> Result<T, ApiError> {
    let v: Value = if fold {
        decode_folded(bytes)?
    } else {
        decode_exact(bytes)?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// 200 `text/plain`, the documents cloud-init reads.
pub(super) fn text(body: impl Into<axum::body::Body>) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn settings<'a>(st: &'a AppState, node_base: &'a str) -> Settings<'a> {
    Settings {
        cluster_name: &st.config.cluster_name,
        node_base,
    }
}

/// The node base URL for a request that came in at `local`.
pub(super) fn base(st: &AppState, local: &Option<axum::Extension<Local>>) -> String {
    st.node_base_for(local.as_ref().map(|l| &l.0))
}

pub(super) fn peer_address(
    st: &AppState,
    peer: Option<axum::Extension<Peer>>,
    headers: &HeaderMap,
) -> IpAddr {
    let peer_ip = peer
        .map(|p| p.0.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    caller_ip(peer_ip, headers, &st.config.http.trusted_proxies)
}

fn unknown_caller(ip: IpAddr) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("no node in the inventory has address {ip}"),
    )
}

/// The calling node, by address; 422 when no node has it (as upstream).
fn caller(
    st: &AppState,
    peer: Option<axum::Extension<Peer>>,
    headers: &HeaderMap,
) -> Result<(Arc<Snapshot>, String, IpAddr), ApiError> {
    let ip = peer_address(st, peer, headers);
    let snap = st.store.snapshot();
    let (node, _) = identify_in(&snap, ip)?;
    Ok((snap, node, ip))
}

/// Notes a boot step of the caller at `ip` (known or not: an unknown
/// caller's attempt is worth seeing too).
pub(super) fn step(st: &AppState, snap: &Snapshot, ip: IpAddr, step: Step, detail: &str) {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let who = steps::caller(snap, None, Some(ip), now_ms / 1000);
    st.boot_steps.record(&who, step, detail, now_ms);
}

fn identify_in(snap: &Snapshot, ip: IpAddr) -> Result<(String, identify::Via), ApiError> {
    let now = chrono::Utc::now().timestamp();
    identify::node_by_address(snap, ip, now)
        .map(|(c, via)| (c.id.clone(), via))
        .ok_or_else(|| unknown_caller(ip))
}

/// The node named by an admin route's `{id}`; 404 if the inventory has none.
fn named(st: &AppState, id: &str) -> Result<(Arc<Snapshot>, String), ApiError> {
    let snap = st.store.snapshot();
    let x = rules::known_node(&snap, id)?;
    Ok((snap, x))
}

/// The snapshot in which `node` has its instance ID: a write the first time
/// only (concurrent first requests agree: the write is idempotent).
pub(super) async fn with_instance_id(
    st: &AppState,
    snap: Arc<Snapshot>,
    node: &str,
) -> Result<Arc<Snapshot>, ApiError> {
    if !rules::needs_instance_id(&snap, node) {
        return Ok(snap);
    }
    let x = node.to_string();
    st.store
        .write(move |t| {
            rules::known_node(t.model(), &x)?;
            rules::ensure_instance_id(t, &x);
            Ok(())
        })
        .await?;
    Ok(st.store.snapshot())
}

pub(super) fn meta_data_doc(
    st: &AppState,
    snap: &Snapshot,
    node: &str,
    node_base: &str,
    overrides: Option<&BTreeMap<String, CloudInitGroup>>,
) -> Result<Bytes, ApiError> {
    let c = snap
        .components
        .get(node)
        .ok_or_else(|| ApiError::not_found(format!("no node {node}")))?;
    let facts = document::gather_with(snap, c, settings(st, node_base), overrides);
    Ok(Bytes::from(document::meta_data(&facts)))
}

fn render_vendor_data(
    st: &AppState,
    snap: &Snapshot,
    node: &str,
    node_base: &str,
) -> Result<Response, ApiError> {
    let c = snap
        .components
        .get(node)
        .ok_or_else(|| ApiError::not_found(format!("no node {node}")))?;
    let facts = document::gather(snap, c, settings(st, node_base));
    Ok(text(document::vendor_data(&facts)))
}

/// `<group>.yaml` for `node`: 404 unless the node is a member.
fn render_group_file(snap: &Snapshot, node: &str, file: &str) -> Result<Response, ApiError> {
    let label = file
        .strip_suffix(".yaml")
        .and_then(|g| parse_label(g).ok())
        .ok_or_else(|| {
            ApiError::not_found(format!("{file:?} is not a group file (<group>.yaml)"))
        })?;
    let member = snap
        .group_labels_of(node)
        .is_some_and(|l| l.iter().any(|x| *x == label));
    if !member {
        return Err(ApiError::not_found(format!(
            "node {node} is not a member of group {label}"
        )));
    }
    Ok(text(document::group_file(
        snap.cloud_init_groups.get(&label),
    )))
}

/// The hot route: one snapshot read, and for a caller at an inventory
/// address whose document this snapshot already rendered, a memoised copy.
async fn meta_data(
    State(st): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    local: Option<axum::Extension<Local>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ip = peer_address(&st, peer, &headers);
    let mut snap = st.store.snapshot();
    step(&st, &snap, ip, Step::MetaData, "meta-data");
    if let Some(doc) = st.meta_cache.get(snap.generation, ip) {
        return Ok(text(doc));
    }
    let (mut node, mut via) = identify_in(&snap, ip)?;
    if rules::needs_instance_id(&snap, &node) {
        snap = with_instance_id(&st, snap, &node).await?;
        // Identify again in the snapshot the document comes from.
        (node, via) = identify_in(&snap, ip)?;
        snap = with_instance_id(&st, snap, &node).await?;
    }
    let doc = meta_data_doc(&st, &snap, &node, &base(&st, &local), None)?;
    // Cached by caller address: a node's address reaches one of ours, so
    // the base URL in the document is the same for every hit.
    if via == identify::Via::Interface {
        st.meta_cache.put(snap.generation, ip, doc.clone());
    }
    Ok(text(doc))
}

async fn user_data(
    State(st): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller(&st, peer, &headers)?;
    Ok(text(document::user_data()))
}

async fn vendor_data(
    State(st): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    local: Option<axum::Extension<Local>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (snap, node, _) = caller(&st, peer, &headers)?;
    render_vendor_data(&st, &snap, &node, &base(&st, &local))
}

async fn group_file(
    State(st): State<AppState>,
    Path(file): Path<String>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !file.ends_with(".yaml") {
        return Err(ApiError::not_found(format!(
            "{file:?} is not a group file (<group>.yaml)"
        )));
    }
    let (snap, node, _) = caller(&st, peer, &headers)?;
    render_group_file(&snap, &node, &file)
}

pub(super) async fn phone_home(
    State(st): State<AppState>,
    Path(id): Path<String>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let (snap, node, ip) = caller(&st, peer, &headers)?;
    step(&st, &snap, ip, Step::PhoneHome, &id);
    let mut p = PhoneHome {
        node,
        id,
        address: ip.to_string(),
        ..Default::default()
    };
    for (k, v) in form_urlencoded::parse(&body) {
        let slot = match k.as_ref() {
            "instance_id" => &mut p.instance_id,
            "hostname" => &mut p.hostname,
            "fqdn" => &mut p.fqdn,
            "pub_key_rsa" => &mut p.pub_key_rsa,
            "pub_key_ecdsa" => &mut p.pub_key_ecdsa,
            "pub_key_ed25519" => &mut p.pub_key_ed25519,
            _ => continue,
        };
        *slot = v.trim().to_string();
    }
    st.store
        .write(move |t| {
            p.received = t.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            rules::record_phone_home(t, p)
        })
        .await?;
    Ok(StatusCode::OK)
}

async fn version(State(st): State<AppState>) -> Response {
    axum::Json(json!({
        "process_name": "openchami",
        "build_info": format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "uptime": format!("{:.3}s", st.started.elapsed().as_secs_f64()),
        "runtime_host": crate::config::host_name(),
    }))
    .into_response()
}

async fn openapi() -> Response {
    let mut r = super::openapi::document_text().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn get_defaults(State(st): State<AppState>) -> Response {
    let snap = st.store.snapshot();
    let mut d = snap.cloud_init_defaults.as_ref().clone();
    d.resource = None;
    axum::Json(d).into_response()
}

async fn post_defaults(State(st): State<AppState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let d: ClusterDefaults = object_body(&body, true)?;
    st.store
        .write(move |t| rules::merge_defaults(t, &d))
        .await?;
    Ok(StatusCode::CREATED)
}

async fn get_groups(State(st): State<AppState>) -> Response {
    let snap = st.store.snapshot();
    let mut out = Map::new();
    for (name, g) in &snap.cloud_init_groups {
        out.insert(
            name.clone(),
            serde_json::to_value(legacy_group(g)).unwrap_or_default(),
        );
    }
    axum::Json(Value::Object(out)).into_response()
}

/// A group as the legacy API shows it: without the metadata-service envelope.
fn legacy_group(
    g: &crate::inventory::model::CloudInitGroup,
) -> crate::inventory::model::CloudInitGroup {
    let mut g = g.clone();
    g.resource = None;
    g
}

fn created(name: &str) -> Response {
    let mut r = StatusCode::CREATED.into_response();
    // Upstream's Location, relative to its own root.
    if let Ok(v) = HeaderValue::from_str(&format!("/groups/{name}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn post_group(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let g: GroupIn = object_body(&body, false)?;
    let g = rules::check_group(None, &g)?;
    let name = g.name.clone();
    st.store.write(move |t| rules::add_group(t, g)).await?;
    Ok(created(&name))
}

async fn get_group(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let label = parse_label(&name)
        .map_err(|_| ApiError::not_found(format!("no cloud-init group {name}")))?;
    let snap = st.store.snapshot();
    let g = snap
        .cloud_init_groups
        .get(&label)
        .ok_or_else(|| ApiError::not_found(format!("no cloud-init group {label}")))?;
    Ok(axum::Json(legacy_group(g)).into_response())
}

async fn put_group(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let g: GroupIn = object_body(&body, false)?;
    let g = rules::check_group(Some(&name), &g)?;
    let name = g.name.clone();
    st.store
        .write(move |t| {
            rules::put_group(t, g);
            Ok(())
        })
        .await?;
    Ok(created(&name))
}

async fn delete_group(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.store
        .write(move |t| rules::delete_group(t, &name))
        .await?;
    Ok(StatusCode::OK)
}

async fn get_instance_info(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (snap, node) = named(&st, &id)?;
    let info = snap
        .instance_info
        .get(&node)
        .cloned()
        .unwrap_or(InstanceInfo {
            id: node,
            ..Default::default()
        });
    let info = InstanceInfo {
        resource: None,
        ..info
    };
    Ok(axum::Json(info).into_response())
}

async fn put_instance_info(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let info: InstanceInfo = object_body(&body, true)?;
    st.store
        .write(move |t| rules::put_instance_info(t, &id, &info))
        .await?;
    Ok(StatusCode::CREATED)
}

async fn imp_meta_data(
    State(st): State<AppState>,
    Path(id): Path<String>,
    local: Option<axum::Extension<Local>>,
) -> Result<Response, ApiError> {
    let (snap, node) = named(&st, &id)?;
    let snap = with_instance_id(&st, snap, &node).await?;
    Ok(text(meta_data_doc(
        &st,
        &snap,
        &node,
        &base(&st, &local),
        None,
    )?))
}

async fn imp_user_data(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    named(&st, &id)?;
    Ok(text(document::user_data()))
}

async fn imp_vendor_data(
    State(st): State<AppState>,
    Path(id): Path<String>,
    local: Option<axum::Extension<Local>>,
) -> Result<Response, ApiError> {
    let (snap, node) = named(&st, &id)?;
    render_vendor_data(&st, &snap, &node, &base(&st, &local))
}

async fn imp_group_file(
    State(st): State<AppState>,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (snap, node) = named(&st, &id)?;
    render_group_file(&snap, &node, &file)
}

async fn get_phone_homes(State(st): State<AppState>) -> Response {
    let snap = st.store.snapshot();
    axum::Json(snap.phone_home.values().collect::<Vec<_>>()).into_response()
}

async fn get_phone_home(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (snap, node) = named(&st, &id)?;
    let p = snap
        .phone_home
        .get(&node)
        .ok_or_else(|| ApiError::not_found(format!("no phone-home from {node} yet")))?;
    Ok(axum::Json(p).into_response())
}
