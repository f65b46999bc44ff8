//! Appliance-wide routes: health, readiness, the CA root, keys, the API
//! document and metrics.

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::problem::ApiError;
use super::routes::{Access, Listeners, Route, route};
use super::state::AppState;

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    vec![
        route(
            Method::GET,
            "/healthz",
            "appliance",
            Anonymous,
            Both,
            "Liveness: the process answers",
            healthz,
        ),
        route(
            Method::GET,
            "/readyz",
            "appliance",
            Anonymous,
            Api,
            "Readiness: the store answers",
            readyz,
        ),
        route(
            Method::GET,
            "/ca/root.pem",
            "appliance",
            Anonymous,
            Both,
            "The root certificate of the appliance CA",
            root_pem,
        ),
        route(
            Method::GET,
            "/roots.pem",
            "appliance",
            Anonymous,
            Api,
            "The root certificate (step-ca path)",
            root_pem,
        ),
        route(
            Method::GET,
            "/.well-known/jwks.json",
            "appliance",
            Anonymous,
            Api,
            "Public keys that verify tokens",
            jwks,
        ),
        route(
            Method::GET,
            "/.well-known/openid-configuration",
            "appliance",
            Anonymous,
            Api,
            "Issuer and JWKS location",
            openid_configuration,
        ),
        route(
            Method::GET,
            "/openapi.json",
            "appliance",
            Anonymous,
            Api,
            "This API document",
            openapi,
        ),
        route(
            Method::GET,
            "/metrics",
            "appliance",
            Token,
            Api,
            "Prometheus metrics",
            metrics,
        ),
    ]
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(st): State<AppState>) -> Response {
    let check = if st.store.writer_is_stopped() {
        Err(crate::inventory::StoreError::Closed)
    } else {
        st.store.ping().await
    };
    match check {
        Ok(()) => Json200(json!({"status": "ready", "checks": {"db": "ok"}})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not ready", "checks": {"db": e.to_string()}})),
        )
            .into_response(),
    }
}

/// 200 with a JSON body.
pub struct Json200(pub serde_json::Value);

impl IntoResponse for Json200 {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

async fn root_pem(State(st): State<AppState>) -> Response {
    let mut r = st.root_pem.clone().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    r
}

async fn jwks(State(st): State<AppState>) -> Response {
    axum::Json(st.tokens.jwks()).into_response()
}

async fn openid_configuration(State(st): State<AppState>) -> Response {
    axum::Json(json!({
        "issuer": st.issuer,
        "jwks_uri": format!("{}/.well-known/jwks.json", st.issuer),
        "id_token_signing_alg_values_supported": ["ES256"],
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

async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    let snap = st.store.snapshot();
    let gauges = [
        (
            "openchami_inventory_generation",
            "Committed inventory write batches since start.",
            snap.generation as f64,
        ),
        (
            "openchami_inventory_components",
            "Components in the inventory.",
            snap.components.len() as f64,
        ),
        (
            "openchami_inventory_ethernet_interfaces",
            "Ethernet interfaces in the inventory.",
            snap.interfaces.len() as f64,
        ),
        (
            "openchami_inventory_redfish_endpoints",
            "Redfish endpoints in the inventory.",
            snap.redfish_endpoints.len() as f64,
        ),
        (
            "openchami_inventory_groups",
            "Groups in the inventory.",
            snap.groups.len() as f64,
        ),
        (
            "openchami_uptime_seconds",
            "Seconds since the appliance started.",
            st.started.elapsed().as_secs_f64(),
        ),
    ];
    let mut r = st.metrics.render(&gauges).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(r)
}
