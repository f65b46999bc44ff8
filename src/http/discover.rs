//! Discovery (`/discovery/v1`): start scan and collect jobs, follow their
//! progress, cancel them, and keep BMC credentials.
//!
//! Jobs run inside the appliance; these handlers only start them and report.
//! Passwords go in and never come out: the credential list shows keys and
//! user names only.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::{ApiJson, QueryPairs};
use super::problem::ApiError;
use super::routes::{Access, Listeners, Route, route};
use super::state::AppState;
use crate::discover::credentials;
use crate::discover::{CollectRequest, Job, ScanRequest};
use crate::inventory::model::BmcCredential;

const JOBS: &str = "/discovery/v1/jobs";

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    vec![
        route(
            Method::POST,
            "/discovery/v1/scan",
            "discovery",
            Token,
            Api,
            "Start a scan for BMCs (CIDRs, addresses)",
            scan,
        ),
        route(
            Method::POST,
            "/discovery/v1/collect",
            "discovery",
            Token,
            Api,
            "Start crawling BMCs into the inventory",
            collect,
        ),
        route(
            Method::GET,
            JOBS,
            "discovery",
            Token,
            Api,
            "Discovery jobs",
            jobs,
        ),
        route(
            Method::GET,
            "/discovery/v1/jobs/{id}",
            "discovery",
            Token,
            Api,
            "One discovery job with its progress and BMCs",
            job,
        ),
        route(
            Method::DELETE,
            "/discovery/v1/jobs/{id}",
            "discovery",
            Token,
            Api,
            "Cancel a discovery job",
            cancel,
        ),
        route(
            Method::GET,
            "/discovery/v1/credentials",
            "discovery",
            Token,
            Api,
            "Stored BMC credentials (keys and user names only)",
            list_credentials,
        ),
        route(
            Method::PUT,
            "/discovery/v1/credentials/{key}",
            "discovery",
            Token,
            Api,
            "Store the BMC credential for default, an xname, an IP or a MAC",
            put_credential,
        ),
        route(
            Method::DELETE,
            "/discovery/v1/credentials/{key}",
            "discovery",
            Token,
            Api,
            "Delete a stored BMC credential",
            delete_credential,
        ),
    ]
}

fn accepted(job: &Job) -> Response {
    let mut r = (StatusCode::ACCEPTED, axum::Json(job.to_json())).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{JOBS}/{}", job.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn scan(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<ScanRequest>,
) -> Result<Response, ApiError> {
    let job = st.discovery.start_scan(req)?;
    Ok(accepted(&job))
}

async fn collect(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<CollectRequest>,
) -> Result<Response, ApiError> {
    let job = st.discovery.start_collect(req)?;
    Ok(accepted(&job))
}

async fn jobs(State(st): State<AppState>) -> Response {
    let list: Vec<Value> = st.discovery.jobs().iter().map(|j| j.json(false)).collect();
    axum::Json(json!({ "jobs": list })).into_response()
}

/// `?bmcs=false` leaves out the per-BMC list (progress polling).
async fn job(
    State(st): State<AppState>,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let j = st
        .discovery
        .job(&id)
        .ok_or_else(|| ApiError::not_found(format!("no discovery job {id}")))?;
    let bmcs = !q
        .first("bmcs")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "false" | "0" | "no"));
    Ok(axum::Json(j.json(bmcs)).into_response())
}

async fn cancel(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let j = st
        .discovery
        .job(&id)
        .ok_or_else(|| ApiError::not_found(format!("no discovery job {id}")))?;
    j.cancel();
    Ok((StatusCode::ACCEPTED, axum::Json(j.to_json())).into_response())
}

async fn list_credentials(State(st): State<AppState>) -> Response {
    let snap = st.store.snapshot();
    let items: Vec<Value> = snap
        .bmc_credentials
        .values()
        .map(|c| json!({"key": c.key, "username": c.username}))
        .collect();
    axum::Json(json!({ "credentials": items })).into_response()
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CredentialIn {
    username: String,
    password: String,
}

async fn put_credential(
    State(st): State<AppState>,
    Path(key): Path<String>,
    ApiJson(c): ApiJson<CredentialIn>,
) -> Result<Response, ApiError> {
    let key = credentials::key(&key)?;
    if c.username.is_empty() || c.password.is_empty() {
        return Err(ApiError::bad_request(
            "username and password must not be empty",
        ));
    }
    let sealed = st.secrets.seal(&c.password).map_err(|e| {
        tracing::error!(error = %e, "cannot seal a BMC password");
        ApiError::internal("the BMC password could not be stored securely")
    })?;
    let rec = BmcCredential {
        key: key.clone(),
        username: c.username.clone(),
        password: sealed,
    };
    st.store
        .write(move |t| {
            t.put_bmc_credential(rec);
            Ok(())
        })
        .await?;
    Ok(axum::Json(json!({"key": key, "username": c.username})).into_response())
}

async fn delete_credential(
    State(st): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let key = credentials::key(&key)?;
    let k = key.clone();
    st.store
        .write(move |t| {
            t.delete_bmc_credential(&k).map(|_| ()).ok_or_else(|| {
                crate::inventory::DomainError::NotFound(format!("no BMC credential {k}"))
            })
        })
        .await?;
    Ok(
        axum::Json(json!({"code": 0, "message": format!("deleted credential {key}")}))
            .into_response(),
    )
}
