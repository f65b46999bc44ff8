//! RFC 7807 errors for every status ≥ 400, wherever it came from.
//!
//! Handlers return [`ApiError`]; axum itself answers some requests (405, a
//! rejected body, the body limit). A last middleware turns all of them into
//! the same `application/problem+json` shape, so clients parse one error
//! format. The members are exactly upstream's (`type`, `title`, `detail`,
//! `status`): upstream never sends `instance`, and its black-box tests
//! compare error bodies member for member.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::inventory::{DomainError, StoreError, WriteError};

/// An error a handler returns; rendered as problem+json.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
}

/// Carries the detail from [`ApiError`] to the rendering middleware.
#[derive(Debug, Clone)]
struct Detail(String);

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(m) => ApiError::bad_request(m),
            DomainError::NotFound(m) => ApiError::not_found(m),
            DomainError::Conflict(m) => ApiError::conflict(m),
            DomainError::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            DomainError::Unprocessable(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        match e {
            StoreError::Closed => ApiError::unavailable("the store is not accepting writes"),
            StoreError::Full(_) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "the disk holding the database is full; nothing was changed",
            ),
            _ => ApiError::internal("the store could not complete the request"),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Domain(d) => d.into(),
            WriteError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = self.status;
        r.extensions_mut().insert(Detail(self.detail));
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    /// The v0.2 services' clients (fabrica-generated) read only `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// Path prefixes of the OpenCHAMI v0.2 services, whose errors also carry
/// the `error` member their clients print.
const V2_PREFIXES: &[&str] = &["/boot-service/", "/metadata-service/", "/remote-console/"];

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Longest body of a framework error kept as `detail`.
const MAX_DETAIL: usize = 1024;

/// Renders every error response as problem+json.
pub async fn render_problems(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status();
    if status.as_u16() < 400 {
        return resp;
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let detail = match parts.extensions.remove::<Detail>() {
        Some(Detail(d)) => d,
        None => {
            let bytes = axum::body::to_bytes(body, MAX_DETAIL * 4)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            if text.is_empty() {
                default_detail(status, &method, &path)
            } else {
                text.chars().take(MAX_DETAIL).collect()
            }
        }
    };
    if status.is_server_error() {
        tracing::warn!(%status, %method, path, detail, "request failed");
    } else {
        tracing::debug!(%status, %method, path, detail, "request refused");
    }
    let title = status.canonical_reason().unwrap_or("Error");
    let body = serde_json::to_vec(&Problem {
        kind: "about:blank",
        title,
        status: status.as_u16(),
        detail: &detail,
        error: V2_PREFIXES
            .iter()
            .any(|p| path.starts_with(p))
            .then_some(detail.as_str()),
    })
    .unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

fn default_detail(status: StatusCode, method: &axum::http::Method, path: &str) -> String {
    match status {
        StatusCode::NOT_FOUND => format!("no route for {path}"),
        StatusCode::METHOD_NOT_ALLOWED => format!("{method} is not allowed on {path}"),
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".into(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    }
}

/// The fallback for paths no route matches.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route for {}", req.uri().path()))
}
