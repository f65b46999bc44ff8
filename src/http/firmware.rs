//! Firmware (`/firmware/v1`): each BMC's firmware inventory, and update
//! jobs across BMCs (`crate::firmware`).

use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::json::ApiJson;
use super::problem::ApiError;
use super::routes::{Access, Listeners, Route, route};
use super::state::AppState;
use crate::firmware::UpdateRequest;

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    vec![
        route(
            Method::GET,
            "/firmware/v1/inventory",
            "firmware",
            Token,
            Api,
            "Firmware inventories of every BMC",
            inventory,
        ),
        route(
            Method::GET,
            "/firmware/v1/inventory/{xname}",
            "firmware",
            Token,
            Api,
            "Firmware inventory of one BMC (a node names its BMC)",
            inventory_one,
        ),
        route(
            Method::POST,
            "/firmware/v1/updates",
            "firmware",
            Token,
            Api,
            "Start a firmware update across BMCs",
            start,
        ),
        route(
            Method::GET,
            "/firmware/v1/updates",
            "firmware",
            Token,
            Api,
            "Firmware update jobs",
            jobs,
        ),
        route(
            Method::GET,
            "/firmware/v1/updates/{id}",
            "firmware",
            Token,
            Api,
            "One firmware update job with each BMC's result",
            job,
        ),
    ]
}

async fn inventory(State(st): State<AppState>) -> Response {
    let snap = st.store.snapshot();
    let all: Vec<_> = snap.bmc_firmware.values().cloned().collect();
    axum::Json(json!({ "bmcs": all })).into_response()
}

async fn inventory_one(
    State(st): State<AppState>,
    Path(xname): Path<String>,
) -> Result<Response, ApiError> {
    let snap = st.store.snapshot();
    let bmcs = crate::firmware::plan::targets(&snap, std::slice::from_ref(&xname))
        .map_err(ApiError::bad_request)?;
    let bmc = bmcs.first().cloned().unwrap_or_default();
    let f = snap
        .bmc_firmware
        .get(&bmc)
        .ok_or_else(|| ApiError::not_found(format!("no firmware inventory of {bmc}")))?;
    Ok(axum::Json(f.clone()).into_response())
}

async fn start(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> Result<Response, ApiError> {
    let job = st.firmware.start(req)?;
    let mut r = (StatusCode::ACCEPTED, axum::Json(&job)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/firmware/v1/updates/{}", job.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

async fn jobs(State(st): State<AppState>) -> Response {
    axum::Json(json!({ "jobs": st.firmware.jobs() })).into_response()
}

async fn job(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let j = st
        .firmware
        .job(&id)
        .ok_or_else(|| ApiError::not_found(format!("no firmware update job {id}")))?;
    Ok(axum::Json(j).into_response())
}
