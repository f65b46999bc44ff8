//! `/inventory/v1/nodes`: a node with its interfaces and groups in one write.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::AppState;
use crate::http::json::ApiJson;
use crate::http::problem::ApiError;
use crate::http::routes::{Access, Listeners, Route, route};
use crate::inventory::nodes::{self, NodeAddIn, NodeSetIn};

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    vec![
        route(
            Method::POST,
            "/inventory/v1/nodes",
            "inventory",
            Token,
            Api,
            "Add a node with its interfaces and groups, all or nothing",
            add,
        ),
        route(
            Method::PATCH,
            "/inventory/v1/nodes/{xname}",
            "inventory",
            Token,
            Api,
            "Set a node's MACs and boot address in one write",
            set,
        ),
    ]
}

async fn add(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<NodeAddIn>,
) -> Result<Response, ApiError> {
    let c = st.store.write(move |t| nodes::add(t, &body)).await?;
    Ok((StatusCode::CREATED, axum::Json(c)).into_response())
}

async fn set(
    State(st): State<AppState>,
    Path(xname): Path<String>,
    ApiJson(body): ApiJson<NodeSetIn>,
) -> Result<Response, ApiError> {
    let i = st
        .store
        .write(move |t| nodes::set_interfaces(t, &xname, &body))
        .await?;
    Ok(axum::Json(i).into_response())
}
