//! PCS (`/power-control/v1`, and the same routes at the root, where ochami
//! looks by default): transitions, power status, power capping and PCS's
//! health probes.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::{ApiJson, QueryPairs};
use super::problem::ApiError;
use super::routes::{Access, Listeners, Route, route};
use super::state::AppState;
use crate::inventory::components::parse_xname;
use crate::power::cap::{self, PatchRequest, SnapshotRequest};
use crate::power::{TransitionRequest, transition_json};

/// Every PCS route under both prefixes.
pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    let mut out = Vec::new();
    // (prefixed, root) pairs: the table needs static paths.
    let paths: [(&'static str, &'static str); 6] = [
        ("/power-control/v1/transitions", "/transitions"),
        ("/power-control/v1/transitions/{id}", "/transitions/{id}"),
        ("/power-control/v1/power-status", "/power-status"),
        ("/power-control/v1/liveness", "/liveness"),
        ("/power-control/v1/readiness", "/readiness"),
        ("/power-control/v1/health", "/health"),
    ];
    for (k, (prefixed, root)) in paths.into_iter().enumerate() {
        for p in [prefixed, root] {
            match k {
                0 => {
                    out.push(route(
                        Method::POST,
                        p,
                        "pcs",
                        Token,
                        Api,
                        "Start a power transition",
                        create,
                    ));
                    out.push(route(
                        Method::GET,
                        p,
                        "pcs",
                        Token,
                        Api,
                        "List power transitions (without tasks)",
                        list,
                    ));
                }
                1 => {
                    out.push(route(
                        Method::GET,
                        p,
                        "pcs",
                        Token,
                        Api,
                        "One power transition with its tasks",
                        get_one,
                    ));
                    out.push(route(
                        Method::DELETE,
                        p,
                        "pcs",
                        Token,
                        Api,
                        "Abort a power transition",
                        abort,
                    ));
                }
                2 => {
                    out.push(route(
                        Method::GET,
                        p,
                        "pcs",
                        Token,
                        Api,
                        "Power state of nodes (xname repeatable)",
                        status_get,
                    ));
                    out.push(route(
                        Method::POST,
                        p,
                        "pcs",
                        Token,
                        Api,
                        "Power state of nodes (xname list in the body)",
                        status_post,
                    ));
                }
                3 => out.push(route(
                    Method::GET,
                    p,
                    "pcs",
                    Anonymous,
                    Api,
                    "PCS liveness",
                    liveness,
                )),
                4 => out.push(route(
                    Method::GET,
                    p,
                    "pcs",
                    Anonymous,
                    Api,
                    "PCS readiness: the store answers",
                    readiness,
                )),
                _ => out.push(route(
                    Method::GET,
                    p,
                    "pcs",
                    Anonymous,
                    Api,
                    "PCS health of its parts",
                    health,
                )),
            }
        }
    }
    // Power capping (`power::cap`, `power::caps`).
    for (prefixed, root) in [
        ("/power-control/v1/power-cap", "/power-cap"),
        (
            "/power-control/v1/power-cap/snapshot",
            "/power-cap/snapshot",
        ),
        ("/power-control/v1/power-cap/{id}", "/power-cap/{id}"),
    ] {
        for p in [prefixed, root] {
            if p.ends_with("/snapshot") {
                out.push(route(
                    Method::POST,
                    p,
                    "pcs",
                    Token,
                    Api,
                    "Snapshot the power limits of nodes (a power-capping task)",
                    cap_snapshot,
                ));
            } else if p.ends_with("{id}") {
                out.push(route(
                    Method::GET,
                    p,
                    "pcs",
                    Token,
                    Api,
                    "One power-capping task with its components",
                    cap_get,
                ));
            } else {
                out.push(route(
                    Method::GET,
                    p,
                    "pcs",
                    Token,
                    Api,
                    "List power-capping tasks (without components)",
                    cap_list,
                ));
                out.push(route(
                    Method::PATCH,
                    p,
                    "pcs",
                    Token,
                    Api,
                    "Set power limits of nodes (a power-capping task)",
                    cap_patch,
                ));
            }
        }
    }
    out
}

async fn create(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<TransitionRequest>,
) -> Result<Response, ApiError> {
    let t = st.power.start_transition(req).await?;
    let mut r = axum::Json(json!({"transitionID": t.id, "operation": t.operation})).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/power-control/v1/transitions/{}", t.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

async fn list(State(st): State<AppState>) -> Response {
    let items: Vec<Value> = st
        .power
        .transitions()
        .iter()
        .map(|t| transition_json(t, false))
        .collect();
    axum::Json(json!({ "transitions": items })).into_response()
}

/// A transition ID as upstream's `uuid.Parse` checks it, with its messages
/// (upstream's tests compare them); the canonical form.
fn transition_id(id: &str) -> Result<String, ApiError> {
    if ![32, 36, 38, 45].contains(&id.len()) {
        return Err(ApiError::bad_request(format!(
            "invalid UUID length: {}",
            id.len()
        )));
    }
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::bad_request("invalid UUID format"))
}

async fn get_one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = transition_id(&id)?;
    let t = st
        .power
        .transition(&id)
        .ok_or_else(|| ApiError::not_found(format!("no transition {id}")))?;
    Ok(axum::Json(transition_json(&t, true)).into_response())
}

async fn abort(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = transition_id(&id)?;
    st.power.abort(&id)?;
    st.power.abort_elsewhere(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"abortStatus": "Accepted - abort initiated"})),
    )
        .into_response())
}

/// `powerStateFilter` / `managementStateFilter` as PCS reads them.
fn keep(entry: &Value, power: Option<&str>, mgmt: Option<&str>) -> bool {
    let ps = entry["powerState"].as_str().unwrap_or("");
    let power_ok = match power.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => true,
        // Nothing here is ever caught mid-change: a transition reports
        // those as in-progress tasks, the sampler sees the settled state.
        Some("poweringon") | Some("poweringoff") => false,
        Some(p) => ps == p,
    };
    let mgmt_ok = match mgmt.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => true,
        Some(m) => entry["managementState"].as_str() == Some(m),
    };
    power_ok && mgmt_ok
}

fn check_filters(power: Option<&str>, mgmt: Option<&str>) -> Result<(), ApiError> {
    if let Some(p) = power.filter(|p| !p.is_empty())
        && !["on", "off", "undefined", "poweringon", "poweringoff"]
            .contains(&p.to_ascii_lowercase().as_str())
    {
        return Err(ApiError::bad_request(format!(
            "invalid powerStateFilter type: {p}"
        )));
    }
    if let Some(m) = mgmt.filter(|m| !m.is_empty())
        && !["available", "unavailable"].contains(&m.to_ascii_lowercase().as_str())
    {
        return Err(ApiError::bad_request(format!(
            "invalid ManagementStateFilter type: {m}"
        )));
    }
    Ok(())
}

async fn status(
    st: &AppState,
    raw: Vec<String>,
    power: Option<&str>,
    mgmt: Option<&str>,
) -> Result<Response, ApiError> {
    check_filters(power, mgmt)?;
    let mut xnames = Vec::new();
    let mut bad = Vec::new();
    for x in raw
        .iter()
        .flat_map(|x| x.split(','))
        .filter(|x| !x.trim().is_empty())
    {
        match parse_xname(x) {
            Ok((x, _)) if !xnames.contains(&x) => xnames.push(x),
            Ok(_) => {}
            Err(_) => bad.push(x.trim().to_string()),
        }
    }
    if !bad.is_empty() {
        // Upstream's message, which its tests compare.
        return Err(ApiError::bad_request(format!(
            "invalid xnames detected: {}",
            bad.join(" ")
        )));
    }
    let entries: Vec<Value> = st
        .power
        .status(&xnames)
        .await
        .into_iter()
        .filter(|e| keep(e, power, mgmt))
        .collect();
    Ok(axum::Json(json!({ "status": entries })).into_response())
}

async fn status_get(State(st): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let power = q.first("powerstatefilter").map(str::to_string);
    let mgmt = q.first("managementstatefilter").map(str::to_string);
    status(&st, q.all("xname"), power.as_deref(), mgmt.as_deref()).await
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(default)]
struct StatusBody {
    xname: Vec<String>,
    powerstatefilter: Option<String>,
    managementstatefilter: Option<String>,
}

async fn status_post(
    State(st): State<AppState>,
    ApiJson(b): ApiJson<StatusBody>,
) -> Result<Response, ApiError> {
    status(
        &st,
        b.xname,
        b.powerstatefilter.as_deref(),
        b.managementstatefilter.as_deref(),
    )
    .await
}

async fn liveness() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn readiness(State(st): State<AppState>) -> StatusCode {
    match st.store.ping().await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn health(State(st): State<AppState>) -> Response {
    // Upstream's wording: every part here lives in this process and answers
    // when the store does (locks, sealed secrets and the task runner
    // included; the runner is local).
    let store = if st.store.ping().await.is_ok() {
        "connected, responsive"
    } else {
        "connected, not responsive"
    };
    axum::Json(json!({
        "KvStore": store,
        "DistLocking": store,
        "StateManager": store,
        "Vault": store,
        "TaskRunner": format!("{store}, local mode"),
    }))
    .into_response()
}

fn cap_created(id: String) -> Response {
    let mut r = axum::Json(json!({ "taskID": id })).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/power-control/v1/power-cap/{id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn cap_snapshot(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<SnapshotRequest>,
) -> Result<Response, ApiError> {
    Ok(cap_created(st.power.cap_snapshot(req)?))
}

async fn cap_patch(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<PatchRequest>,
) -> Result<Response, ApiError> {
    Ok(cap_created(st.power.cap_patch(req)?))
}

async fn cap_list(State(st): State<AppState>) -> Response {
    let tasks: Vec<Value> = st
        .power
        .cap_tasks()
        .iter()
        .map(|t| cap::task_json(t, false))
        .collect();
    axum::Json(json!({ "tasks": tasks })).into_response()
}

async fn cap_get(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = transition_id(&id)?;
    let t = st
        .power
        .cap_task(&id)
        .ok_or_else(|| ApiError::not_found("TaskID does not exist"))?;
    Ok(axum::Json(cap::task_json(&t, true)).into_response())
}
