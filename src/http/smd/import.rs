//! `POST /inventory/v1/import`: a cluster file applied in one transaction.

use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;
use crate::http::json::ApiJson;
use crate::http::problem::ApiError;
use crate::http::routes::{Access, Listeners, Route, route};
use crate::inventory::import::{self, ClusterIn};

pub fn routes() -> Vec<Route> {
    vec![route(
        Method::POST,
        "/inventory/v1/import",
        "inventory",
        Access::Token,
        Listeners::Api,
        "Apply a cluster file (ochami static-discovery format) atomically and idempotently",
        post,
    )]
}

async fn post(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<ClusterIn>,
) -> Result<Response, ApiError> {
    let summary = st.store.write(move |t| import::apply(t, &body)).await?;
    // The parsed file and the previous model are gone by now: return their
    // memory before answering (see crate::mem).
    let _ = tokio::task::spawn_blocking(crate::mem::trim).await;
    Ok(axum::Json(summary).into_response())
}
