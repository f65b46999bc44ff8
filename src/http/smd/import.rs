//! `POST /inventory/v1/import`: a cluster file applied in one transaction.

use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;
use crate::http::json::{ApiJson, QueryPairs};
use crate::http::problem::ApiError;
use crate::http::routes::{Access, Listeners, Route, route};
use crate::inventory::import;

pub fn routes() -> Vec<Route> {
    vec![route(
        Method::POST,
        "/inventory/v1/import",
        "inventory",
        Access::Token,
        Listeners::Api,
        "Apply a cluster file (ochami static-discovery format) atomically and idempotently; ?move_macs moves MACs and addresses other nodes hold",
        post,
    )]
}

async fn post(
    State(st): State<AppState>,
    q: QueryPairs,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let move_macs = q.flag("move_macs");
    let body = import::parse(&body)?;
    let summary = st
        .store
        .write(move |t| import::apply(t, &body, move_macs))
        .await?;
    // The parsed file and the previous model are gone by now: return their
    // memory before answering (see crate::mem).
    let _ = tokio::task::spawn_blocking(crate::mem::trim).await;
    Ok(axum::Json(summary).into_response())
}
