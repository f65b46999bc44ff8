//! boot-service (`/boot-service`, OpenCHAMI v0.2) adapters: decode, ask
//! `boot::service`, encode. The records are BSS's (`/boot/v1`): one store
//! behind both APIs.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::json::{ApiJson, ExactJson, QueryPairs};
use super::peer::caller_ip;
use super::problem::{ApiError, PROBLEM_JSON};
use super::routes::{Access, Listeners, Route, route};
use super::server::Peer;
use crate::boot::service::{self, EnvelopeIn, Ident, Kind, LegacyParamsIn, ParamFilter, PatchKind};
use crate::boot::steps::{self, Step};
use crate::inventory::mac;

const CONFIG: u8 = 0;
const NODE: u8 = 1;
const BMC: u8 = 2;

fn kind(k: u8) -> Kind {
    match k {
        NODE => Kind::Node,
        BMC => Kind::Bmc,
        _ => Kind::BootConfiguration,
    }
}

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    const BC: &str = "/boot-service/bootconfigurations";
    const BCI: &str = "/boot-service/bootconfigurations/{uid}";
    const BCS: &str = "/boot-service/bootconfigurations/{uid}/status";
    const N: &str = "/boot-service/nodes";
    const NI: &str = "/boot-service/nodes/{uid}";
    const NS: &str = "/boot-service/nodes/{uid}/status";
    const B: &str = "/boot-service/bmcs";
    const BI: &str = "/boot-service/bmcs/{uid}";
    const BS: &str = "/boot-service/bmcs/{uid}/status";
    const S: &str = "boot-service";
    vec![
        route(
            Method::GET,
            "/boot-service/health",
            S,
            Anonymous,
            Api,
            "boot-service health",
            health,
        ),
        route(
            Method::GET,
            "/boot-service/bootscript",
            S,
            Anonymous,
            Both,
            "The iPXE script a node boots (host, mac or nid; selection by score)",
            bootscript,
        ),
        route(
            Method::GET,
            "/boot-service/bootparameters",
            S,
            Token,
            Api,
            "Boot configurations in BSS's shape (host, mac, nid, name filters)",
            bootparameters,
        ),
        route(
            Method::POST,
            "/boot-service/bootparameters",
            S,
            Token,
            Api,
            "Create a selecting configuration from a BSS-shaped body",
            bootparameters_post,
        ),
        route(
            Method::PUT,
            "/boot-service/bootparameters",
            S,
            Token,
            Api,
            "Rewrite the first configuration naming a host, MAC or NID",
            bootparameters_put,
        ),
        route(
            Method::DELETE,
            "/boot-service/bootparameters",
            S,
            Token,
            Api,
            "Delete the configurations naming a host, MAC or NID (query)",
            bootparameters_delete,
        ),
        route(
            Method::GET,
            "/boot-service/service/status",
            S,
            Anonymous,
            Api,
            "boot-service status",
            svc_status,
        ),
        route(
            Method::GET,
            "/boot-service/service/version",
            S,
            Anonymous,
            Api,
            "boot-service version",
            svc_version,
        ),
        route(
            Method::GET,
            BC,
            S,
            Token,
            Api,
            "Boot configurations (BSS-written ones included)",
            list::<CONFIG>,
        ),
        route(
            Method::POST,
            BC,
            S,
            Token,
            Api,
            "Create a boot configuration (selects nodes by MAC, NID, host, group)",
            create::<CONFIG>,
        ),
        route(
            Method::GET,
            BCI,
            S,
            Token,
            Api,
            "One boot configuration",
            get::<CONFIG>,
        ),
        route(
            Method::PUT,
            BCI,
            S,
            Token,
            Api,
            "Replace a boot configuration's spec",
            replace::<CONFIG>,
        ),
        route(
            Method::PATCH,
            BCI,
            S,
            Token,
            Api,
            "Patch a boot configuration's spec (merge or JSON Patch)",
            patch::<CONFIG>,
        ),
        route(
            Method::DELETE,
            BCI,
            S,
            Token,
            Api,
            "Delete a boot configuration",
            delete::<CONFIG>,
        ),
        route(
            Method::PUT,
            BCS,
            S,
            Token,
            Api,
            "Replace a boot configuration's status",
            put_status::<CONFIG>,
        ),
        route(
            Method::PATCH,
            BCS,
            S,
            Token,
            Api,
            "Patch a boot configuration's status",
            patch_status::<CONFIG>,
        ),
        route(
            Method::GET,
            N,
            S,
            Token,
            Api,
            "Nodes (inventory nodes and posted ones)",
            list::<NODE>,
        ),
        route(
            Method::POST,
            N,
            S,
            Token,
            Api,
            "Create a Node resource",
            create::<NODE>,
        ),
        route(Method::GET, NI, S, Token, Api, "One node", get::<NODE>),
        route(
            Method::PUT,
            NI,
            S,
            Token,
            Api,
            "Replace a posted Node's spec",
            replace::<NODE>,
        ),
        route(
            Method::PATCH,
            NI,
            S,
            Token,
            Api,
            "Patch a posted Node's spec",
            patch::<NODE>,
        ),
        route(
            Method::DELETE,
            NI,
            S,
            Token,
            Api,
            "Delete a posted Node",
            delete::<NODE>,
        ),
        route(
            Method::PUT,
            NS,
            S,
            Token,
            Api,
            "Replace a posted Node's status",
            put_status::<NODE>,
        ),
        route(
            Method::PATCH,
            NS,
            S,
            Token,
            Api,
            "Patch a posted Node's status",
            patch_status::<NODE>,
        ),
        route(Method::GET, B, S, Token, Api, "BMC resources", list::<BMC>),
        route(
            Method::POST,
            B,
            S,
            Token,
            Api,
            "Create a BMC resource",
            create::<BMC>,
        ),
        route(
            Method::GET,
            BI,
            S,
            Token,
            Api,
            "One BMC resource",
            get::<BMC>,
        ),
        route(
            Method::PUT,
            BI,
            S,
            Token,
            Api,
            "Replace a BMC resource's spec",
            replace::<BMC>,
        ),
        route(
            Method::PATCH,
            BI,
            S,
            Token,
            Api,
            "Patch a BMC resource's spec",
            patch::<BMC>,
        ),
        route(
            Method::DELETE,
            BI,
            S,
            Token,
            Api,
            "Delete a BMC resource",
            delete::<BMC>,
        ),
        route(
            Method::PUT,
            BS,
            S,
            Token,
            Api,
            "Replace a BMC resource's status",
            put_status::<BMC>,
        ),
        route(
            Method::PATCH,
            BS,
            S,
            Token,
            Api,
            "Patch a BMC resource's status",
            patch_status::<BMC>,
        ),
    ]
}

/// `;version=` on `Accept` or `Content-Type`: only `v1` exists. Anything
/// else is upstream's 406 (its fields kept beside the problem members).
pub struct Versioned;

fn requested_version(headers: &HeaderMap) -> Option<String> {
    [header::ACCEPT, header::CONTENT_TYPE]
        .iter()
        .filter_map(|h| headers.get(h).and_then(|v| v.to_str().ok()))
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("version")
                .then(|| v.trim().trim_matches('"').to_string())
        })
        .find(|v| v != service::VERSION)
}

impl<S: Send + Sync> FromRequestParts<S> for Versioned {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        match requested_version(&parts.headers) {
            None => Ok(Versioned),
            Some(v) => {
                let body = json!({
                    "type": "about:blank",
                    "title": "Not Acceptable",
                    "status": 406,
                    "detail": format!("API version {v:?} is not supported; supported: v1"),
                    "error": "Unsupported version",
                    "requested": v,
                    "supported": [service::VERSION],
                });
                let mut r = (StatusCode::NOT_ACCEPTABLE, body.to_string()).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
                Err(r)
            }
        }
    }
}

fn ok(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

async fn health(_: Versioned) -> Response {
    ok(
        StatusCode::OK,
        json!({"status": "ok", "service": "boot-service"}),
    )
}

async fn svc_status(State(st): State<AppState>, _: Versioned) -> Response {
    let storage = if st.store.ping().await.is_ok() {
        "connected"
    } else {
        "error"
    };
    ok(
        StatusCode::OK,
        json!({
            "service_name": "boot-script-service",
            "service_version": env!("CARGO_PKG_VERSION"),
            "service_status": "running",
            "details": {"storage": {"name": "sqlite", "status": storage}, "inventory": "local"},
        }),
    )
}

async fn svc_version(_: Versioned) -> Response {
    ok(
        StatusCode::OK,
        json!({
            "service_name": "boot-script-service",
            "service_version": env!("CARGO_PKG_VERSION"),
            "build_date": "",
            "git_commit": "",
        }),
    )
}

async fn list<const K: u8>(State(st): State<AppState>, _: Versioned) -> Response {
    let snap = st.store.snapshot();
    ok(StatusCode::OK, Value::Array(service::list(&snap, kind(K))))
}

async fn get<const K: u8>(
    State(st): State<AppState>,
    _: Versioned,
    Path(uid): Path<String>,
) -> Result<Response, ApiError> {
    let snap = st.store.snapshot();
    Ok(ok(StatusCode::OK, service::get(&snap, kind(K), &uid)?))
}

async fn create<const K: u8>(
    State(st): State<AppState>,
    _: Versioned,
    ExactJson(body): ExactJson<Value>,
) -> Result<Response, ApiError> {
    let e = EnvelopeIn::parse(&body)?;
    if e.spec.is_none() {
        return Err(ApiError::bad_request("validation failed: spec is required"));
    }
    let v = st
        .store
        .write(move |t| service::create(t, kind(K), &e))
        .await?;
    Ok(ok(StatusCode::CREATED, v))
}

async fn replace<const K: u8>(
    State(st): State<AppState>,
    _: Versioned,
    Path(uid): Path<String>,
    ExactJson(body): ExactJson<Value>,
) -> Result<Response, ApiError> {
    let e = EnvelopeIn::parse(&body)?;
    let v = st
        .store
        .write(move |t| service::replace(t, kind(K), &uid, &e))
        .await?;
    Ok(ok(StatusCode::OK, v))
}

async fn patch<const K: u8>(
    State(st): State<AppState>,
    _: Versioned,
    Path(uid): Path<String>,
    headers: HeaderMap,
    ExactJson(body): ExactJson<Value>,
) -> Result<Response, ApiError> {
    let pk = PatchKind::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let v = st
        .store
        .write(move |t| service::patch(t, kind(K), &uid, pk, &body))
        .await?;
    Ok(ok(StatusCode::OK, v))
}

async fn delete<const K: u8>(
    State(st): State<AppState>,
    _: Versioned,
    Path(uid): Path<String>,
) -> Result<Response, ApiError> {
    let v = st
        .store
        .write(move |t| service::delete(t, kind(K), &uid))
        .await?;
    Ok(ok(StatusCode::OK, v))
}

async fn put_status<const K: u8>(
    State(st): State<AppState>,
    _: Versioned,
    Path(uid): Path<String>,
    ExactJson(body): ExactJson<Value>,
) -> Result<Response, ApiError> {
    let v = st
        .store
        .write(move |t| service::set_status(t, kind(K), &uid, None, &body))
        .await?;
    Ok(ok(StatusCode::OK, v))
}

async fn patch_status<const K: u8>(
    State(st): State<AppState>,
    _: Versioned,
    Path(uid): Path<String>,
    headers: HeaderMap,
    ExactJson(body): ExactJson<Value>,
) -> Result<Response, ApiError> {
    let pk = PatchKind::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let v = st
        .store
        .write(move |t| service::set_status(t, kind(K), &uid, Some(pk), &body))
        .await?;
    Ok(ok(StatusCode::OK, v))
}

async fn bootscript(
    State(st): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    local: Option<axum::Extension<crate::http::server::Local>>,
    headers: HeaderMap,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let id = Ident::parse(q.first("host"), q.first("mac"), q.first("nid"))
        .map_err(ApiError::bad_request)?;
    let profile = q.first("profile").map(str::trim).filter(|p| !p.is_empty());
    let retry = match q.first("retry").map(str::trim) {
        None | Some("") => 0,
        Some(r) => r
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("retry must be a number, got {r:?}")))?
            .clamp(0, crate::boot::script::MAX_RETRY as i64) as u32,
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let now = now_ms.div_euclid(1000);
    let snap = st.store.snapshot();
    let base = st.node_base_for(local.as_ref().map(|l| &l.0));
    let (script, who) =
        service::bootscript(&snap, &id, profile, &base, retry, super::boot::jitter());
    st.boot_history.record(&who, "bootscript", now);
    let mac = match &id {
        Ident::Mac(m) => Some(m.as_str()),
        _ => None,
    };
    let ip = peer.map(|p| caller_ip(p.0.0.ip(), &headers, &st.config.http.trusted_proxies));
    let caller = steps::caller(&snap, mac, ip, now);
    st.boot_steps
        .record(&caller, Step::Script, "boot-service/bootscript", now_ms);
    Ok(super::boot::text(script))
}

fn param_filter(q: &QueryPairs) -> Result<ParamFilter, ApiError> {
    let list = |k: &str| -> Vec<String> {
        q.all(k)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let mut f = ParamFilter {
        hosts: list("host"),
        names: list("name"),
        ..Default::default()
    };
    for m in list("mac") {
        f.macs
            .push(mac::normalize(&m).map_err(|e| ApiError::bad_request(e.to_string()))?);
    }
    for n in list("nid") {
        f.nids.push(
            n.parse()
                .map_err(|_| ApiError::bad_request(format!("nid must be a number, got {n:?}")))?,
        );
    }
    Ok(f)
}

async fn bootparameters(State(st): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let f = param_filter(&q)?;
    let snap = st.store.snapshot();
    Ok(ok(StatusCode::OK, service::bootparameters(&snap, &f)))
}

async fn bootparameters_post(
    State(st): State<AppState>,
    ApiJson(b): ApiJson<LegacyParamsIn>,
) -> Result<Response, ApiError> {
    let v = st
        .store
        .write(move |t| service::bootparameters_post(t, &b))
        .await?;
    Ok(ok(StatusCode::CREATED, v))
}

async fn bootparameters_put(
    State(st): State<AppState>,
    ApiJson(b): ApiJson<LegacyParamsIn>,
) -> Result<Response, ApiError> {
    let v = st
        .store
        .write(move |t| service::bootparameters_put(t, &b))
        .await?;
    Ok(ok(StatusCode::OK, v))
}

async fn bootparameters_delete(
    State(st): State<AppState>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let f = param_filter(&q)?;
    let v = st
        .store
        .write(move |t| service::bootparameters_delete(t, &f))
        .await?;
    Ok(ok(StatusCode::OK, v))
}
