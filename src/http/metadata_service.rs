//! metadata-service (`/metadata-service`, OpenCHAMI v0.2) adapters: the node
//! documents and the fabrica-style admin resources `ochami` v0.10 manages.
//!
//! Every route here reads and writes the records the legacy `/cloud-init`
//! API serves (`metadata::v2` translates); callers are identified exactly
//! as there (TCP peer, `X-Forwarded-For` only from trusted proxies).
//! WireGuardPeers and Profiles have no legacy record and live only here
//! (`metadata::peer`, `metadata::profile`); a node's unexpired profile
//! changes its group documents on these routes, not on `/cloud-init`.
//! No WireGuard device runs, so `/wg-init` is not served (404).
//! Errors carry upstream's `{"error","code"}` beside the problem members,
//! so `ochami` shows the message and other clients get RFC 7807.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::{MatchedPath, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::AppState;
use super::cloud_init::{base, meta_data_doc, peer_address, step, with_instance_id};
use super::problem::{ApiError, PROBLEM_JSON};
use super::routes::{Access, Listeners, Route, route};
use super::server::{Local, Peer};
use crate::boot::steps::Step;
use crate::inventory::groups::parse_label;
use crate::inventory::model::{CloudInitResource, ClusterDefaults, InstanceInfo, MetadataRecord};
use crate::inventory::{DomainError, Snapshot};
use crate::metadata::document;
use crate::metadata::v2::{self, Kind};
use crate::metadata::{identify, peer, profile, rules};

const S: &str = "metadata-service";

pub fn routes() -> Vec<Route> {
    let mut t = table();
    for r in t
        .iter_mut()
        .filter(|r| r.path == "/metadata-service/{group}")
    {
        r.handler = std::mem::take(&mut r.handler).fallback(other_method);
    }
    t
}

/// Other methods on `/metadata-service/<name>`: 405, except upstream's
/// WireGuard enrolment `POST /wg-init`, which is not built (no WireGuard
/// device runs here) and answers 404 as upstream does without WireGuard.
async fn other_method(method: Method, uri: axum::http::Uri) -> Response {
    if uri.path().trim_end_matches('/').ends_with("/wg-init") {
        return fail(ApiError::not_found(
            "/wg-init is not served: this appliance runs no WireGuard device",
        ));
    }
    let mut r = fail(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    ));
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
    r
}

fn table() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    use Method as M;
    vec![
        route(
            M::GET,
            "/metadata-service/health",
            S,
            Anonymous,
            Both,
            "metadata-service health",
            health,
        ),
        route(
            M::GET,
            "/metadata-service/meta-data",
            S,
            Anonymous,
            Both,
            "The caller's meta-data (YAML); 404 for an unknown caller",
            meta_data,
        ),
        route(
            M::GET,
            "/metadata-service/user-data",
            S,
            Anonymous,
            Both,
            "user-data: #cloud-config",
            user_data,
        ),
        route(
            M::GET,
            "/metadata-service/vendor-data",
            S,
            Anonymous,
            Both,
            "#include of the caller's templated groups",
            vendor_data,
        ),
        route(
            M::GET,
            "/metadata-service/network-config",
            S,
            Anonymous,
            Both,
            "The caller's network configuration (version 2) from its inventory interfaces",
            network_config,
        ),
        route(
            M::GET,
            "/metadata-service/{group}",
            S,
            Anonymous,
            Both,
            "<group>.yaml: a group template rendered for the caller",
            group_file,
        ),
        route(
            M::POST,
            "/metadata-service/phone-home/{id}",
            S,
            Anonymous,
            Both,
            "Record the caller's phone-home (form)",
            phone_home,
        ),
        route(
            M::GET,
            "/metadata-service/clusterdefaultss",
            S,
            Token,
            Api,
            "ClusterDefaults resources (zero or one)",
            list,
        ),
        route(
            M::POST,
            "/metadata-service/clusterdefaultss",
            S,
            Token,
            Api,
            "Create the ClusterDefaults (409 if set)",
            create,
        ),
        route(
            M::GET,
            "/metadata-service/clusterdefaultss/{uid}",
            S,
            Token,
            Api,
            "The ClusterDefaults",
            get_one,
        ),
        route(
            M::PUT,
            "/metadata-service/clusterdefaultss/{uid}",
            S,
            Token,
            Api,
            "Replace the ClusterDefaults spec",
            update,
        ),
        route(
            M::PATCH,
            "/metadata-service/clusterdefaultss/{uid}",
            S,
            Token,
            Api,
            "Patch the ClusterDefaults spec (merge or JSON Patch)",
            patch,
        ),
        route(
            M::DELETE,
            "/metadata-service/clusterdefaultss/{uid}",
            S,
            Token,
            Api,
            "Clear the ClusterDefaults",
            delete,
        ),
        route(
            M::GET,
            "/metadata-service/groups",
            S,
            Token,
            Api,
            "Group resources",
            list,
        ),
        route(
            M::POST,
            "/metadata-service/groups",
            S,
            Token,
            Api,
            "Create a Group (template checked; 409 on a taken name)",
            create,
        ),
        route(
            M::GET,
            "/metadata-service/groups/{uid}",
            S,
            Token,
            Api,
            "A Group",
            get_one,
        ),
        route(
            M::PUT,
            "/metadata-service/groups/{uid}",
            S,
            Token,
            Api,
            "Replace a Group's spec",
            update,
        ),
        route(
            M::PATCH,
            "/metadata-service/groups/{uid}",
            S,
            Token,
            Api,
            "Patch a Group's spec (merge or JSON Patch)",
            patch,
        ),
        route(
            M::DELETE,
            "/metadata-service/groups/{uid}",
            S,
            Token,
            Api,
            "Delete a Group",
            delete,
        ),
        route(
            M::GET,
            "/metadata-service/instanceinfos",
            S,
            Token,
            Api,
            "InstanceInfo resources",
            list,
        ),
        route(
            M::POST,
            "/metadata-service/instanceinfos",
            S,
            Token,
            Api,
            "Create a node's InstanceInfo (name = xname)",
            create,
        ),
        route(
            M::GET,
            "/metadata-service/instanceinfos/{uid}",
            S,
            Token,
            Api,
            "An InstanceInfo",
            get_one,
        ),
        route(
            M::PUT,
            "/metadata-service/instanceinfos/{uid}",
            S,
            Token,
            Api,
            "Replace an InstanceInfo's spec",
            update,
        ),
        route(
            M::PATCH,
            "/metadata-service/instanceinfos/{uid}",
            S,
            Token,
            Api,
            "Patch an InstanceInfo's spec (merge or JSON Patch)",
            patch,
        ),
        route(
            M::DELETE,
            "/metadata-service/instanceinfos/{uid}",
            S,
            Token,
            Api,
            "Delete an InstanceInfo (the node keeps its instance ID)",
            delete,
        ),
        route(
            M::GET,
            "/metadata-service/wireguardpeers",
            S,
            Token,
            Api,
            "WireGuardPeer resources",
            list,
        ),
        route(
            M::POST,
            "/metadata-service/wireguardpeers",
            S,
            Token,
            Api,
            "Create a WireGuardPeer (stored only: no WireGuard device runs here)",
            create,
        ),
        route(
            M::GET,
            "/metadata-service/wireguardpeers/{uid}",
            S,
            Token,
            Api,
            "A WireGuardPeer",
            get_one,
        ),
        route(
            M::PUT,
            "/metadata-service/wireguardpeers/{uid}",
            S,
            Token,
            Api,
            "Replace a WireGuardPeer's spec",
            update,
        ),
        route(
            M::PATCH,
            "/metadata-service/wireguardpeers/{uid}",
            S,
            Token,
            Api,
            "Patch a WireGuardPeer's spec (merge or JSON Patch)",
            patch,
        ),
        route(
            M::DELETE,
            "/metadata-service/wireguardpeers/{uid}",
            S,
            Token,
            Api,
            "Delete a WireGuardPeer",
            delete,
        ),
        route(
            M::GET,
            "/metadata-service/profiles",
            S,
            Token,
            Api,
            "Profile resources, expiry as of now",
            list,
        ),
        route(
            M::POST,
            "/metadata-service/profiles",
            S,
            Token,
            Api,
            "Create a Profile (groupRef must name a Group)",
            create,
        ),
        route(
            M::GET,
            "/metadata-service/profiles/{uid}",
            S,
            Token,
            Api,
            "A Profile",
            get_one,
        ),
        route(
            M::PUT,
            "/metadata-service/profiles/{uid}",
            S,
            Token,
            Api,
            "Replace a Profile's spec",
            update,
        ),
        route(
            M::PATCH,
            "/metadata-service/profiles/{uid}",
            S,
            Token,
            Api,
            "Patch a Profile's spec (merge or JSON Patch)",
            patch,
        ),
        route(
            M::DELETE,
            "/metadata-service/profiles/{uid}",
            S,
            Token,
            Api,
            "Delete a Profile (409 while another inherits from it)",
            delete,
        ),
    ]
}

/// An error as both upstream's `{"error","code"}` and a problem document.
fn fail(e: ApiError) -> Response {
    let status = e.status;
    let body = json!({
        "error": e.detail,
        "code": status.as_u16(),
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": e.detail,
    });
    if status.is_server_error() {
        tracing::warn!(%status, detail = e.detail, "metadata-service request failed");
    }
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(fail)
}

fn typed(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<axum::body::Body>,
) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn resource(status: StatusCode, v: &Value) -> Response {
    typed(status, "application/json", v.to_string())
}

/// 404 on a node route (upstream: plain text; here a problem document, as
/// every error the appliance sends, with upstream's text as `error`).
fn node_not_found(msg: &str) -> Response {
    fail(ApiError::not_found(msg))
}

async fn health() -> Response {
    resource(
        StatusCode::OK,
        &json!({"status": "healthy", "service": "github.com/openchami/metadata-service"}),
    )
}

/// The calling node, or `None` for an address no node has.
fn caller_in(snap: &Snapshot, ip: IpAddr) -> Option<String> {
    identify::node_by_address(snap, ip, chrono::Utc::now().timestamp()).map(|(c, _)| c.id.clone())
}

async fn meta_data(
    State(st): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    local: Option<axum::Extension<Local>>,
    headers: HeaderMap,
) -> Response {
    let ip = peer_address(&st, peer, &headers);
    let snap = st.store.snapshot();
    step(&st, &snap, ip, Step::MetaData, "meta-data");
    let Some(node) = caller_in(&snap, ip) else {
        return node_not_found("node not found");
    };
    let doc = async {
        let snap = with_instance_id(&st, snap, &node).await?;
        let overrides = profile::overrides(&snap, &node, chrono::Utc::now());
        meta_data_doc(&st, &snap, &node, &base(&st, &local), Some(&overrides))
    }
    .await;
    match doc {
        Ok(d) => typed(StatusCode::OK, "application/x-yaml", d),
        Err(e) => fail(e),
    }
}

async fn user_data(
    State(st): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    let ip = peer_address(&st, peer, &headers);
    if caller_in(&st.store.snapshot(), ip).is_none() {
        return node_not_found("node not found");
    }
    typed(StatusCode::OK, "text/cloud-config", document::user_data())
}

/// Where a node's group files are: the instance's base URL, else the
/// cluster's, else this service on the address the node reached.
fn node_base_url(snap: &Snapshot, node: &str, node_base: &str) -> String {
    let info = snap
        .instance_info
        .get(node)
        .map(|i| i.cloud_init_base_url.as_str())
        .unwrap_or("");
    let set = [info, snap.cloud_init_defaults.base_url.as_str()]
        .into_iter()
        .find(|v| !v.is_empty());
    match set {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!("{node_base}/metadata-service"),
    }
}

async fn vendor_data(
    State(st): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    local: Option<axum::Extension<Local>>,
    headers: HeaderMap,
) -> Response {
    let ip = peer_address(&st, peer, &headers);
    let snap = st.store.snapshot();
    let Some(node) = caller_in(&snap, ip) else {
        return node_not_found("node not found");
    };
    let url = node_base_url(&snap, &node, &base(&st, &local));
    let overrides = profile::overrides(&snap, &node, chrono::Utc::now());
    let mut out = String::from("#include\n");
    for label in snap.group_labels_of(&node).into_iter().flatten() {
        let templated = overrides
            .get(label.as_str())
            .or_else(|| snap.cloud_init_groups.get(label.as_str()))
            .is_some_and(|g| !v2::group_template(g).trim().is_empty());
        if templated {
            out.push_str(&format!("{url}/{label}.yaml\n"));
        }
    }
    typed(StatusCode::OK, "text/plain; charset=utf-8", out)
}

/// The node's interfaces with a MAC, in inventory order, each with its
/// first IPv4 address and the configured subnet holding it.
fn nics(st: &AppState, snap: &Snapshot, node: &str) -> Vec<v2::Nic> {
    snap.interfaces_of(node)
        .into_iter()
        .filter_map(|i| {
            let mac = crate::inventory::mac::normalize(&i.mac_address).ok()?;
            let ip = i
                .ip_addresses
                .iter()
                .find_map(|a| a.ip_address.parse::<std::net::Ipv4Addr>().ok());
            let subnet = ip.and_then(|ip| {
                st.config.dhcp.subnets.iter().find_map(|s| {
                    v2::in_cidr(ip, &s.cidr).map(|prefix| v2::SubnetFacts {
                        prefix,
                        routers: s.routers.iter().map(|r| r.to_string()).collect(),
                        dns: s.dns.iter().map(|r| r.to_string()).collect(),
                        domain: s.domain.clone(),
                    })
                })
            });
            Some(v2::Nic {
                mac,
                ip: ip.map(|i| i.to_string()).unwrap_or_default(),
                subnet,
            })
        })
        .collect()
}

async fn network_config(
    State(st): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    let ip = peer_address(&st, peer, &headers);
    let snap = st.store.snapshot();
    let Some(node) = caller_in(&snap, ip) else {
        return node_not_found("node not found");
    };
    typed(
        StatusCode::OK,
        "text/cloud-config",
        v2::network_config(&nics(&st, &snap, &node)),
    )
}

/// What a group template sees of `node`.
fn node_facts(st: &AppState, snap: &Snapshot, node: &str, url: String) -> v2::NodeFacts {
    let c = snap.components.get(node);
    let list = nics(st, snap, node);
    let interfaces = snap
        .interfaces_of(node)
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            json!({
                "name": format!("eth{i}"),
                "mac": crate::inventory::mac::normalize(&n.mac_address).unwrap_or_default(),
                "description": n.description,
                "ip": n.ip_addresses.first().map(|a| a.ip_address.clone()).unwrap_or_default(),
            })
        })
        .collect();
    v2::NodeFacts {
        xname: node.to_string(),
        nid: c
            .and_then(|c| c.nid)
            .map(|n| n.to_string())
            .unwrap_or_default(),
        role: c.and_then(|c| c.role.clone()).unwrap_or_default(),
        mac: list.first().map(|n| n.mac.clone()).unwrap_or_default(),
        ip: list
            .iter()
            .map(|n| n.ip.clone())
            .find(|i| !i.is_empty())
            .unwrap_or_default(),
        base_url: url,
        interfaces,
    }
}

async fn group_file(
    State(st): State<AppState>,
    Path(file): Path<String>,
    peer: Option<axum::Extension<Peer>>,
    local: Option<axum::Extension<Local>>,
    headers: HeaderMap,
) -> Response {
    let Some(label) = file.strip_suffix(".yaml").and_then(|g| parse_label(g).ok()) else {
        return node_not_found(&format!("{file} is not a group file (<group>.yaml)"));
    };
    let ip = peer_address(&st, peer, &headers);
    let snap = st.store.snapshot();
    let Some(node) = caller_in(&snap, ip) else {
        return node_not_found("node not found");
    };
    let member = snap
        .group_labels_of(&node)
        .is_some_and(|l| l.iter().any(|x| *x == label));
    if !member {
        return node_not_found(&format!("node {node} is not a member of group {label}"));
    }
    let now = chrono::Utc::now();
    let Some(g) = profile::overrides(&snap, &node, now)
        .remove(&label)
        .or_else(|| snap.cloud_init_groups.get(&label).cloned())
    else {
        return typed(StatusCode::OK, "text/cloud-config", document::user_data());
    };
    let text = v2::group_template(&g);
    if text.trim().is_empty() {
        return typed(StatusCode::OK, "text/cloud-config", document::user_data());
    }
    let node_base = base(&st, &local);
    let doc = match with_instance_id(&st, snap, &node).await {
        Ok(snap) => {
            let overrides = profile::overrides(&snap, &node, now);
            meta_data_doc(&st, &snap, &node, &node_base, Some(&overrides)).map(|d| (snap, d))
        }
        Err(e) => Err(e),
    };
    let (snap, doc) = match doc {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let md: Value = serde_yaml_ng::from_slice(&doc).unwrap_or(Value::Null);
    let facts = node_facts(&st, &snap, &node, node_base_url(&snap, &node, &node_base));
    let ctx = v2::template_context(&md, &facts, &g.meta_data);
    match v2::render_group(&text, &ctx) {
        Ok(out) => typed(StatusCode::OK, "text/cloud-config", out),
        Err(e) => fail(ApiError::internal(format!(
            "group {label}: template render error: {e}"
        ))),
    }
}

async fn phone_home(
    st: State<AppState>,
    id: Path<String>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ip = peer_address(&st, peer, &headers);
    if caller_in(&st.store.snapshot(), ip).is_none() {
        return node_not_found("node not found");
    }
    match super::cloud_init::phone_home(st, id, peer, headers, body).await {
        Ok(s) => s.into_response(),
        Err(e) => fail(e),
    }
}

// ---- admin resources ----

fn kind_of(path: &MatchedPath) -> Kind {
    let p = path.as_str();
    if p.contains("/clusterdefaultss") {
        Kind::ClusterDefaults
    } else if p.contains("/instanceinfos") {
        Kind::InstanceInfo
    } else if p.contains("/wireguardpeers") {
        Kind::WireGuardPeer
    } else if p.contains("/profiles") {
        Kind::Profile
    } else {
        Kind::Group
    }
}

/// `Accept`/`Content-Type: …;version=v1` is the one version; another is 406.
fn check_version(headers: &HeaderMap) -> Result<(), Response> {
    for h in [header::ACCEPT, header::CONTENT_TYPE] {
        for v in headers.get_all(&h).iter().filter_map(|v| v.to_str().ok()) {
            for part in v.split([';', ',']) {
                let Some((k, val)) = part.split_once('=') else {
                    continue;
                };
                let val = val.trim().trim_matches('"');
                if k.trim().eq_ignore_ascii_case("version") && val != "v1" {
                    let body = json!({
                        "error": "Unsupported version", "requested": val, "supported": ["v1"],
                        "type": "about:blank", "title": "Not Acceptable", "status": 406,
                        "detail": format!("API version {val} is not served; v1 is"),
                    });
                    return Err(typed(
                        StatusCode::NOT_ACCEPTABLE,
                        PROBLEM_JSON,
                        body.to_string(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every resource of `kind` in `snap`.
fn all(snap: &Snapshot, kind: Kind) -> Vec<Value> {
    match kind {
        Kind::ClusterDefaults => {
            let d = snap.cloud_init_defaults.as_ref();
            if v2::defaults_exist(d) {
                vec![v2::defaults_resource(d)]
            } else {
                Vec::new()
            }
        }
        Kind::Group => snap
            .cloud_init_groups
            .values()
            .map(v2::group_resource)
            .collect(),
        Kind::InstanceInfo => snap
            .instance_info
            .values()
            .filter(|i| i.resource.is_some())
            .map(v2::instance_resource)
            .collect(),
        Kind::WireGuardPeer | Kind::Profile => {
            let now = chrono::Utc::now();
            records(snap, kind).map(|r| shown(kind, r, now)).collect()
        }
    }
}

/// The stored records of a kind without a legacy counterpart.
fn records(model: &crate::inventory::Model, kind: Kind) -> impl Iterator<Item = &MetadataRecord> {
    model
        .metadata_resources
        .values()
        .filter(move |r| r.kind == kind.name())
}

/// A stored peer or profile as its resource (a profile's expiry as of `now`).
fn shown(kind: Kind, r: &MetadataRecord, now: chrono::DateTime<chrono::Utc>) -> Value {
    match kind {
        Kind::Profile => profile::resource(r, now),
        _ => peer::peer_resource(r),
    }
}

/// The name of the resource of `kind` with this uid (its name is accepted
/// too), or 404.
fn resolve(snap: &Snapshot, kind: Kind, uid: &str) -> Result<String, ApiError> {
    let names: Vec<String> = match kind {
        Kind::ClusterDefaults => {
            let d = snap.cloud_init_defaults.as_ref();
            if v2::defaults_exist(d) {
                vec![v2::defaults_name(d).to_string()]
            } else {
                Vec::new()
            }
        }
        Kind::Group => snap.cloud_init_groups.keys().cloned().collect(),
        Kind::InstanceInfo => snap
            .instance_info
            .values()
            .filter(|i| i.resource.is_some())
            .map(|i| i.id.clone())
            .collect(),
        Kind::WireGuardPeer | Kind::Profile => {
            // uids are derived from names: one lookup either way.
            return [uid.to_string(), v2::uid(kind, uid)]
                .iter()
                .find_map(|u| snap.metadata_resources.get(u))
                .filter(|r| r.kind == kind.name())
                .map(|r| r.meta.name.clone())
                .ok_or_else(|| ApiError::not_found(format!("{} not found: {uid}", kind.name())));
        }
    };
    names
        .iter()
        .find(|n| v2::uid(kind, n) == uid)
        .or_else(|| names.iter().find(|n| n.as_str() == uid))
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("{} not found: {uid}", kind.name())))
}

fn one(snap: &Snapshot, kind: Kind, name: &str) -> Value {
    match kind {
        Kind::ClusterDefaults => v2::defaults_resource(&snap.cloud_init_defaults),
        Kind::Group => snap
            .cloud_init_groups
            .get(name)
            .map(v2::group_resource)
            .unwrap_or(Value::Null),
        Kind::InstanceInfo => snap
            .instance_info
            .get(name)
            .map(v2::instance_resource)
            .unwrap_or(Value::Null),
        Kind::WireGuardPeer | Kind::Profile => snap
            .metadata_resources
            .get(&v2::uid(kind, name))
            .map(|r| shown(kind, r, chrono::Utc::now()))
            .unwrap_or(Value::Null),
    }
}

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

async fn list(State(st): State<AppState>, path: MatchedPath, headers: HeaderMap) -> Response {
    if let Err(r) = check_version(&headers) {
        return r;
    }
    let snap = st.store.snapshot();
    resource(StatusCode::OK, &Value::Array(all(&snap, kind_of(&path))))
}

async fn get_one(
    State(st): State<AppState>,
    path: MatchedPath,
    Path(uid): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_version(&headers) {
        return r;
    }
    let kind = kind_of(&path);
    let snap = st.store.snapshot();
    respond(resolve(&snap, kind, &uid).map(|n| resource(StatusCode::OK, &one(&snap, kind, &n))))
}

/// The envelope fields a write sets: labels and annotations merged over
/// the old ones, the spec's extra fields replaced when a spec was given.
fn merged_meta(
    old: Option<&CloudInitResource>,
    req: &v2::Request,
    extra: Option<BTreeMap<String, String>>,
    now: &str,
) -> CloudInitResource {
    let mut m = rules::stamp(old, now);
    m.labels.extend(req.labels.clone());
    m.annotations.extend(req.annotations.clone());
    if let Some(e) = extra {
        m.extra = e;
    }
    m
}

/// Writes `req` as the resource `name` of `kind`: `create` = POST (the
/// name must be free), else PUT/PATCH of an existing one (`spec` None
/// keeps the spec). Returns the resource as stored.
fn write(
    t: &mut crate::inventory::Txn<'_>,
    kind: Kind,
    name: &str,
    req: &v2::Request,
    create: bool,
) -> Result<Value, DomainError> {
    let now = rules::now(t);
    match kind {
        Kind::ClusterDefaults => {
            let cur = t.model().cloud_init_defaults.as_ref().clone();
            if create && v2::defaults_exist(&cur) {
                return Err(DomainError::Conflict(format!(
                    "the cluster defaults exist as {}: change them with PUT",
                    v2::uid(Kind::ClusterDefaults, v2::defaults_name(&cur))
                )));
            }
            let (mut d, extra) = match &req.spec {
                Some(spec) => {
                    let (d, extra) = v2::defaults_from_spec(spec, &cur)?;
                    (rules::check_defaults(&d)?, Some(extra))
                }
                None => (cur.clone(), None),
            };
            let mut meta = merged_meta(cur.resource.as_ref(), req, extra, &now);
            if !req.name.is_empty() {
                meta.name = req.name.trim().to_string();
            } else if meta.name.is_empty() {
                meta.name = name.to_string();
            }
            d.resource = Some(meta);
            t.put_cloud_init_defaults(d);
            Ok(v2::defaults_resource(&t.model().cloud_init_defaults))
        }
        Kind::Group => {
            let old = t.model().cloud_init_groups.get(name).cloned();
            if create && old.is_some() {
                return Err(DomainError::Conflict(format!(
                    "a Group named {name} exists as {}",
                    v2::uid(Kind::Group, name)
                )));
            }
            let (gin, extra) = match (&req.spec, &old) {
                (Some(spec), _) => {
                    let (g, e) = v2::group_from_spec(name, spec)?;
                    (Some(g), Some(e))
                }
                (None, Some(_)) => (None, None),
                (None, None) => return Err(DomainError::Invalid("spec is required".into())),
            };
            let mut g = match (gin, old.clone()) {
                (Some(gin), _) => rules::check_group(None, &gin)?,
                (None, Some(o)) => o,
                (None, None) => return Err(DomainError::Invalid("spec is required".into())),
            };
            g.resource = Some(merged_meta(
                old.as_ref().and_then(|o| o.resource.as_ref()),
                req,
                extra,
                &now,
            ));
            let out = v2::group_resource(&g);
            t.put_cloud_init_group(g);
            Ok(out)
        }
        Kind::InstanceInfo => {
            let node = rules::known_node(t.model(), name).map_err(|e| {
                DomainError::Invalid(format!("InstanceInfo name must be a node xname: {e}"))
            })?;
            let old = t.model().instance_info.get(&node).cloned();
            let exists = old.as_ref().is_some_and(|o| o.resource.is_some());
            if create && exists {
                return Err(DomainError::Conflict(format!(
                    "an InstanceInfo for {node} exists as {}",
                    v2::uid(Kind::InstanceInfo, &node)
                )));
            }
            let (info, extra) = match &req.spec {
                Some(spec) => {
                    let (mut i, e) = v2::instance_from_spec(&node, spec)?;
                    if let Some(o) = &old {
                        v2::keep_legacy_only(&mut i, o);
                    }
                    (i, Some(e))
                }
                None => (
                    old.clone().unwrap_or(InstanceInfo {
                        id: node.clone(),
                        ..Default::default()
                    }),
                    None,
                ),
            };
            rules::put_instance_info(t, &node, &info)?;
            let mut stored = t
                .model()
                .instance_info
                .get(&node)
                .cloned()
                .ok_or_else(|| DomainError::NotFound(format!("no node {node}")))?;
            stored.resource = Some(merged_meta(
                old.as_ref().and_then(|o| o.resource.as_ref()),
                req,
                extra,
                &now,
            ));
            let out = v2::instance_resource(&stored);
            t.put_instance_info(stored);
            Ok(out)
        }
        Kind::WireGuardPeer | Kind::Profile => write_record(t, kind, name, req, create, &now),
    }
}

/// [`write`] for a peer or a profile: one record keyed by the uid its name
/// gives.
fn write_record(
    t: &mut crate::inventory::Txn<'_>,
    kind: Kind,
    name: &str,
    req: &v2::Request,
    create: bool,
    now: &str,
) -> Result<Value, DomainError> {
    let id = v2::uid(kind, name);
    let old = t.model().metadata_resources.get(&id).cloned();
    if let Some(o) = &old {
        if o.kind != kind.name() || o.meta.name != name {
            return Err(DomainError::Conflict(format!(
                "the name {name} cannot be used: its uid {id} is taken by {} {}",
                o.kind, o.meta.name
            )));
        }
        if create {
            return Err(DomainError::Conflict(format!(
                "a {} named {name} exists as {id}",
                kind.name()
            )));
        }
    }
    let (spec, expires_at) = match (&req.spec, &old) {
        (Some(spec), _) if kind == Kind::WireGuardPeer => {
            let spec = peer::peer_spec(spec)?;
            let key = peer::public_key(&spec);
            if let Some(other) =
                records(t.model(), kind).find(|r| r.uid != id && peer::public_key(&r.spec) == key)
            {
                return Err(DomainError::Conflict(format!(
                    "WireGuardPeer {} has public key {key}",
                    other.meta.name
                )));
            }
            (spec, String::new())
        }
        (Some(spec), _) => {
            let c = profile::check(t.model(), name, spec, old.as_ref(), req.renews_ttl, t.now())?;
            (c.spec, c.expires_at)
        }
        (None, Some(o)) => (o.spec.clone(), o.expires_at.clone()),
        (None, None) => return Err(DomainError::Invalid("spec is required".into())),
    };
    let mut meta = merged_meta(old.as_ref().map(|o| &o.meta), req, None, now);
    meta.name = name.to_string();
    let record = MetadataRecord {
        uid: id,
        kind: kind.name().to_string(),
        meta,
        generation: old.as_ref().map_or(0, |o| o.generation) + u64::from(req.spec.is_some()),
        spec,
        expires_at,
    };
    let out = shown(kind, &record, t.now());
    t.put_metadata_record(record);
    Ok(out)
}

async fn create(
    State(st): State<AppState>,
    path: MatchedPath,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_version(&headers) {
        return r;
    }
    let kind = kind_of(&path);
    let result = async {
        let req = v2::request(&body_json(&body)?, true)?;
        let name = req.name.trim().to_string();
        let name = match kind {
            Kind::ClusterDefaults if name.is_empty() => v2::DEFAULTS_NAME.to_string(),
            Kind::Group => parse_label(&name).map_err(|e| {
                ApiError::bad_request(format!("metadata.name must be a group label: {e}"))
            })?,
            _ if name.is_empty() => return Err(ApiError::bad_request("metadata.name is required")),
            Kind::WireGuardPeer | Kind::Profile => record_name(&name)?,
            _ => name,
        };
        let v = st
            .store
            .write(move |t| write(t, kind, &name, &req, true))
            .await?;
        Ok(resource(StatusCode::CREATED, &v))
    }
    .await;
    respond(result)
}

/// A peer's or profile's name: what a uid is derived from and, for a
/// profile, what `parentProfile` and `default_profile` say.
fn record_name(name: &str) -> Result<String, ApiError> {
    let ok = name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if !ok {
        return Err(ApiError::bad_request(format!(
            "metadata.name {name:?} must be letters, digits and - . _ (at most 253)"
        )));
    }
    Ok(name.to_string())
}

/// The request a PUT body or a patched spec makes, checked against the
/// resource's name: the name is the join key, so it cannot change.
fn same_name(kind: Kind, name: &str, req: &v2::Request) -> Result<(), ApiError> {
    let given = req.name.trim();
    let differs = match kind {
        Kind::ClusterDefaults => false,
        Kind::Group => !given.is_empty() && parse_label(given).ok().as_deref() != Some(name),
        Kind::InstanceInfo => {
            !given.is_empty()
                && crate::inventory::xname::normalize(given).ok().as_deref() != Some(name)
        }
        Kind::WireGuardPeer | Kind::Profile => !given.is_empty() && given != name,
    };
    if differs {
        return Err(ApiError::bad_request(format!(
            "{} {name} cannot be renamed to {given}: the name is what nodes are matched by",
            kind.name()
        )));
    }
    Ok(())
}

async fn update(
    State(st): State<AppState>,
    path: MatchedPath,
    Path(uid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_version(&headers) {
        return r;
    }
    let kind = kind_of(&path);
    let result = async {
        let name = resolve(&st.store.snapshot(), kind, &uid)?;
        let req = v2::request(&body_json(&body)?, false)?;
        same_name(kind, &name, &req)?;
        let v = st
            .store
            .write(move |t| write(t, kind, &name, &req, false))
            .await?;
        Ok(resource(StatusCode::OK, &v))
    }
    .await;
    respond(result)
}

async fn patch(
    State(st): State<AppState>,
    path: MatchedPath,
    Path(uid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_version(&headers) {
        return r;
    }
    let kind = kind_of(&path);
    let json_patch = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json-patch+json"));
    let result = async {
        let snap = st.store.snapshot();
        let name = resolve(&snap, kind, &uid)?;
        let patch = body_json(&body)?;
        let mut spec = Value::Object(v2::spec_of(&one(&snap, kind, &name)));
        if json_patch {
            spec = v2::json_patch(&spec, &patch)
                .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.0))?;
        } else {
            v2::merge_patch(&mut spec, &patch);
        }
        let Value::Object(spec) = spec else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the patched spec is not an object",
            ));
        };
        let renews_ttl = if json_patch {
            patch.as_array().is_some_and(|ops| {
                ops.iter().any(|op| {
                    ["path", "from"].iter().any(|k| {
                        op.get(*k)
                            .and_then(Value::as_str)
                            .is_some_and(|p| p.trim_start_matches('/').starts_with("ttl_seconds"))
                    })
                })
            })
        } else {
            patch.get("ttl_seconds").is_some()
        };
        let req = v2::Request {
            spec: Some(spec),
            renews_ttl: Some(renews_ttl),
            ..Default::default()
        };
        let v = st
            .store
            .write(move |t| write(t, kind, &name, &req, false))
            .await?;
        Ok(resource(StatusCode::OK, &v))
    }
    .await;
    respond(result)
}

async fn delete(
    State(st): State<AppState>,
    path: MatchedPath,
    Path(uid): Path<String>,
) -> Response {
    let kind = kind_of(&path);
    let result = async {
        let name = resolve(&st.store.snapshot(), kind, &uid)?;
        let id = v2::uid(kind, &name);
        st.store
            .write(move |t| {
                match kind {
                    Kind::ClusterDefaults => t.put_cloud_init_defaults(ClusterDefaults::default()),
                    Kind::Group => {
                        rules::delete_group(t, &name)?;
                    }
                    Kind::InstanceInfo => {
                        // The node keeps its instance ID: only the overrides go.
                        let iid = t
                            .model()
                            .instance_info
                            .get(&name)
                            .map(|i| i.instance_id.clone())
                            .unwrap_or_default();
                        t.put_instance_info(InstanceInfo {
                            id: name.clone(),
                            instance_id: iid,
                            ..Default::default()
                        });
                    }
                    Kind::WireGuardPeer | Kind::Profile => {
                        let heirs = if kind == Kind::Profile {
                            profile::children(t.model(), &name)
                        } else {
                            Vec::new()
                        };
                        if !heirs.is_empty() {
                            return Err(DomainError::Conflict(format!(
                                "profile {name} is the parentProfile of {}: delete or change them first",
                                heirs.join(", ")
                            )));
                        }
                        t.delete_metadata_record(&v2::uid(kind, &name));
                    }
                }
                Ok(())
            })
            .await?;
        Ok(resource(
            StatusCode::OK,
            &json!({"message": format!("{} deleted successfully", kind.name()), "uid": id}),
        ))
    }
    .await;
    respond(result)
}
