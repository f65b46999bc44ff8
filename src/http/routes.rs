//! The route table: every route, its listener(s) and whether it needs a token.
//!
//! Both routers and the OpenAPI document are built from this one list, so a
//! route cannot be served without being documented, and cannot become
//! anonymous without a line here saying so.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter};
use tower::ServiceBuilder;
use tower_http::normalize_path::NormalizePathLayer;

use super::deadline::DeadlineLayer;
use super::problem::{self, ApiError};
use super::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Served to anyone. On the node listener this is the only kind.
    Anonymous,
    /// Needs a valid bearer token.
    Token,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listeners {
    /// The HTTPS API listener only.
    Api,
    /// Both listeners: the read-only routes firmware and nodes use.
    Both,
}

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// Which service the route belongs to (OpenAPI tag).
    pub service: &'static str,
    pub access: Access,
    pub listeners: Listeners,
    pub summary: &'static str,
    pub handler: MethodRouter<AppState>,
}

/// Builds a table entry; the method filter is derived from `method` so the
/// served method and the documented one cannot differ.
pub fn route<H, T>(
    method: Method,
    path: &'static str,
    service: &'static str,
    access: Access,
    listeners: Listeners,
    summary: &'static str,
    handler: H,
) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = if method == Method::GET {
        // GET routes answer HEAD too, as HTTP requires.
        MethodFilter::GET
    } else if method == Method::POST {
        MethodFilter::POST
    } else if method == Method::PUT {
        MethodFilter::PUT
    } else if method == Method::PATCH {
        MethodFilter::PATCH
    } else if method == Method::DELETE {
        MethodFilter::DELETE
    } else {
        MethodFilter::HEAD
    };
    Route {
        method,
        path,
        service,
        access,
        listeners,
        summary,
        handler: axum::routing::on(filter, handler),
    }
}

/// Every route the appliance serves.
pub fn table() -> Vec<Route> {
    let mut t = Vec::new();
    t.extend(super::common::routes());
    t.extend(super::auth::routes());
    t.extend(super::smd::routes());
    t.extend(super::boot::routes());
    t.extend(super::boot_service::routes());
    t.extend(super::cloud_init::routes());
    t.extend(super::metadata_service::routes());
    t.extend(super::dhcp::routes());
    t.extend(super::power::routes());
    t.extend(super::discover::routes());
    t
}

/// Path prefixes that upstream's gateway used, served as aliases.
const ALIASES: &[(&str, &str)] = &[
    ("/apis/smd/hsm/v2", "/hsm/v2"),
    ("/apis/bss/boot/v1", "/boot/v1"),
];

/// Rewrites alias prefixes to the canonical ones before routing.
async fn rewrite_aliases(mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if let Some((from, to)) = ALIASES.iter().find(|(from, _)| {
        path.starts_with(from) && matches!(path.as_bytes().get(from.len()), None | Some(b'/'))
    }) {
        let rest = &path[from.len()..];
        let pq = match req.uri().query() {
            Some(q) => format!("{to}{rest}?{q}"),
            None => format!("{to}{rest}"),
        };
        if let Ok(pq) = pq.parse::<axum::http::uri::PathAndQuery>() {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    next.run(req).await
}

/// Checks the bearer token (or upstream SMD's `jwt` cookie) and, when the
/// token carries roles, that they allow the method.
async fn require_token(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(&req).ok_or_else(|| ApiError::unauthorized("a bearer token is required"))?;
    let now = chrono::Utc::now().timestamp();
    let caller = super::auth::verify(&st, &token, now).await?;
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    if !read_only && !super::auth::may_write(&caller) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token for {} has no role or scope that may change state",
                caller.claims.sub
            ),
        ));
    }
    Ok(next.run(req).await)
}

fn bearer(req: &Request) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut it = v.splitn(2, ' ');
        let scheme = it.next().unwrap_or("");
        let token = it.next().unwrap_or("").trim();
        if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
            return Some(token.to_string());
        }
        return None;
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("jwt="))
        .map(str::to_string)
        .next()
}

/// A large body leaves large free blocks behind once sent: ask for a trim.
async fn note_large_body(resp: Response) -> Response {
    use axum::body::HttpBody;
    crate::mem::large_body_sent(resp.body().size_hint().lower());
    resp
}

/// Which listener a router is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Api,
    Node,
}

/// The router for one listener, with the layers every request passes.
pub fn router(state: AppState, listener: Listener) -> Router {
    let max_body = state.config.http.max_body_bytes;
    let timeout = Duration::from_secs(state.config.http.request_timeout_secs);
    let in_flight = state.config.http.max_in_flight;
    let mut r: Router<AppState> = Router::new();
    for route in table() {
        if listener == Listener::Node && route.listeners != Listeners::Both {
            continue;
        }
        let mut handler = route.handler;
        let anonymous_metrics = route.path == "/metrics" && state.config.metrics.anonymous;
        if route.access == Access::Token && !anonymous_metrics {
            handler =
                handler.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
        }
        r = r.route(route.path, handler);
    }
    let r = r
        .fallback(problem::not_found)
        .route_layer(middleware::from_fn(super::access::note_route))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state.clone());
    let r = Router::new().fallback_service(
        ServiceBuilder::new()
            .layer(NormalizePathLayer::trim_trailing_slash())
            .service(r),
    );
    r.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn_with_state(
                (state, listener),
                super::access::access,
            ))
            .layer(middleware::map_response(note_large_body))
            .layer(middleware::from_fn(problem::render_problems))
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(in_flight))
            .layer(DeadlineLayer::new(timeout))
            .layer(middleware::from_fn(rewrite_aliases)),
    )
}
