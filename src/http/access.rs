//! One access line, one span and one latency sample per HTTP request.
//!
//! The outermost layer of both routers, so what it sees is what the client
//! got: 404s of unknown paths, 413s, 503s of the deadline and the in-flight
//! cap included. Each request gets an ID, returned as `X-Request-Id` and
//! carried by a `tracing` span, so every line a handler logs (a store
//! failure, a Redfish error) names the request it belongs to. The line is
//! info-level and rate-limited per kind (see [`crate::logging`]); the
//! counter and the histogram are never limited.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::routes::Listener;
use super::server::Peer;
use super::state::AppState;
use crate::logging::{self, Access};

/// Request IDs: unique within a process, short enough to grep for.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The route template a request matched, handed from the router (where it
/// is known) out to [`access`] on the response.
#[derive(Clone)]
struct Route(MatchedPath);

/// Inner half: records the matched route on the response.
pub async fn note_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let mut resp = next.run(req).await;
    if let Some(r) = route {
        resp.extensions_mut().insert(Route(r));
    }
    resp
}

/// Outer half: ID, span, counter, histogram and the access line.
pub async fn access(
    State((st, listener)): State<(AppState, Listener)>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = format!("{:x}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    let peer: Option<SocketAddr> = req.extensions().get::<Peer>().map(|p| p.0);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let listener = match listener {
        Listener::Api => "api",
        Listener::Node => "node",
    };
    let span = tracing::info_span!("http", id = %id);
    let mut resp = next.run(req).instrument(span.clone()).await;
    let took = started.elapsed();
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let route = resp.extensions().get::<Route>().map(|r| r.0.clone());
    let route = route.as_ref().map_or("unmatched", |r| r.as_str());
    let status = resp.status();
    st.metrics.add(
        "openchami_http_requests_total",
        "HTTP requests answered, by route, method and status.",
        &[
            ("route", route),
            ("method", method.as_str()),
            ("status", status.as_str()),
        ],
        1,
    );
    st.metrics.observe(
        "openchami_http_request_duration_seconds",
        "Time from request to response head, by listener, route and method.",
        &[
            ("listener", listener),
            ("route", route),
            ("method", method.as_str()),
        ],
        took,
    );
    if logging::access_allowed(Access::Http) {
        use axum::body::HttpBody;
        let bytes = resp.body().size_hint().exact();
        let _in = span.enter();
        tracing::info!(
            listener,
            peer = peer.map(tracing::field::display),
            %method,
            path,
            status = status.as_u16(),
            bytes,
            ms = took.as_secs_f64() * 1000.0,
            "request"
        );
    }
    resp
}
