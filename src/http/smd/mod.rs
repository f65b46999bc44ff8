//! SMD (`/hsm/v2`) adapters: decode, call `inventory`, encode as upstream.

mod components;
mod endpoints;
mod groups;
mod hardware;
mod import;
mod interfaces;
mod nodes;

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::routes::{Access, Listeners, Route, route};
use crate::inventory::enums;

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    let mut t = vec![
        route(
            Method::GET,
            "/hsm/v2/service/ready",
            "smd",
            Anonymous,
            Api,
            "SMD readiness",
            ready,
        ),
        route(
            Method::GET,
            "/hsm/v2/service/liveness",
            "smd",
            Anonymous,
            Api,
            "SMD liveness",
            liveness,
        ),
        route(
            Method::GET,
            "/hsm/v2/service/values",
            "smd",
            Anonymous,
            Api,
            "All enumeration values",
            values,
        ),
        route(
            Method::GET,
            "/hsm/v2/service/values/{key}",
            "smd",
            Anonymous,
            Api,
            "One enumeration's values",
            value,
        ),
    ];
    // Upstream routes not implemented yet answer 501 rather than 404 or
    // 405, for every method, so a client can tell "not here yet" from "no
    // such thing".
    for path in [
        "/hsm/v2/Inventory/Discover",
        "/hsm/v2/Inventory/DiscoveryStatus",
        "/hsm/v2/Inventory/DiscoveryStatus/{id}",
        "/hsm/v2/Subscriptions/SCN",
        "/hsm/v2/Subscriptions/SCN/{id}",
        "/hsm/v2/locks/status",
        "/hsm/v2/locks/lock",
        "/hsm/v2/locks/unlock",
        "/hsm/v2/locks/disable",
        "/hsm/v2/locks/repair",
        "/hsm/v2/locks/reservations",
        "/hsm/v2/locks/reservations/remove",
        "/hsm/v2/locks/reservations/release",
        "/hsm/v2/locks/service/reservations",
        "/hsm/v2/locks/service/reservations/renew",
        "/hsm/v2/locks/service/reservations/release",
        "/hsm/v2/locks/service/reservations/check",
        "/hsm/v2/sysinfo/powermaps",
        "/hsm/v2/sysinfo/powermaps/{xname}",
    ] {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            t.push(route(
                method,
                path,
                "smd",
                Token,
                Api,
                super::routes::NOT_IMPLEMENTED,
                not_implemented,
            ));
        }
    }
    t.extend(components::routes());
    t.extend(interfaces::routes());
    t.extend(endpoints::routes());
    t.extend(groups::routes());
    t.extend(hardware::routes());
    t.extend(import::routes());
    t.extend(nodes::routes());
    t
}

async fn ready(axum::extract::State(st): axum::extract::State<super::AppState>) -> Response {
    match st.store.ping().await {
        Ok(()) => axum::Json(json!({"code": 0, "message": "HSM is healthy"})).into_response(),
        Err(e) => {
            super::problem::ApiError::unavailable(format!("store unavailable: {e}")).into_response()
        }
    }
}

async fn not_implemented(uri: axum::http::Uri) -> super::problem::ApiError {
    super::problem::ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!("{} is not implemented by this appliance", uri.path()),
    )
}

async fn liveness() -> StatusCode {
    StatusCode::NO_CONTENT
}

fn all_values() -> serde_json::Value {
    let types: Vec<&str> = enums::HmsType::all().iter().map(|t| t.as_str()).collect();
    json!({
        "Arch": enums::ARCHES,
        "Class": enums::CLASSES,
        "Flag": enums::FLAGS,
        "NetType": enums::NET_TYPES,
        "Role": enums::ROLES,
        "SubRole": enums::SUB_ROLES,
        "State": enums::STATES,
        "Type": types,
    })
}

async fn values() -> Response {
    axum::Json(all_values()).into_response()
}

async fn value(
    axum::extract::Path(key): axum::extract::Path<String>,
) -> Result<Response, super::problem::ApiError> {
    let all = all_values();
    let obj = all.as_object().cloned().unwrap_or_default();
    let (k, v) = obj
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&key))
        .ok_or_else(|| super::problem::ApiError::not_found(format!("no enumeration {key}")))?;
    Ok(axum::Json(json!({ k: v })).into_response())
}

/// 201 with upstream's `[{"URI": …}]` array and a `Location`.
pub fn created(uris: &[String], collection: &str) -> Response {
    if uris.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let body: Vec<_> = uris.iter().map(|u| json!({ "URI": u })).collect();
    let location = if uris.len() == 1 {
        uris[0].as_str()
    } else {
        collection
    };
    let mut r = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// 201 with a single `{"URI": …}` object and a `Location`.
pub fn created_one(uri: &str) -> Response {
    let mut r = (StatusCode::CREATED, axum::Json(json!({ "URI": uri }))).into_response();
    if let Ok(v) = HeaderValue::from_str(uri) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// SMD's `{"code":0,"message":…}` reply.
pub fn message(msg: impl Into<String>) -> Response {
    axum::Json(json!({"code": 0, "message": msg.into()})).into_response()
}

/// "deleted 1 entry" / "deleted 3 entries".
/// One record as JSON, or a 404 naming what is missing.
pub fn found<T: serde::Serialize>(
    record: Option<&T>,
    missing: impl FnOnce() -> String,
) -> Result<Response, super::problem::ApiError> {
    record
        .map(|r| axum::Json(r).into_response())
        .ok_or_else(|| super::problem::ApiError::not_found(missing()))
}

/// The answer to a DELETE of a whole collection: upstream's 404 when there
/// was nothing to delete.
pub fn deleted_all(n: usize) -> Result<Response, super::problem::ApiError> {
    if n == 0 {
        return Err(super::problem::ApiError::not_found("no entries to delete"));
    }
    // Always plural here, as upstream.
    Ok(message(format!("deleted {n} entries")))
}

pub fn deleted(n: usize) -> Response {
    message(format!(
        "deleted {n} {}",
        if n == 1 { "entry" } else { "entries" }
    ))
}
