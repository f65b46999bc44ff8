//! Who may call the API: the appliance's own tokens, tokens of issuers the
//! site trusts (its identity provider, by JWKS), and TokenSmith's RFC 8693
//! exchange of one-time bootstrap tokens for access tokens (`/oauth/token`).
//!
//! `ca::token` checks signatures and claims and fetches nothing; the JWKS
//! of a trusted issuer is read or downloaded here and handed to it, and
//! read again when a token names a key it does not know (a rotation at the
//! issuer), at most once every [`REFRESH_MIN`] per issuer so a flood of
//! made-up `kid`s cannot turn into a flood of fetches.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::AppState;
use super::problem::{ApiError, PROBLEM_JSON};
use super::routes::{Access, Listeners, Route, route};
use crate::ca::token::{self, Claims, ExternalKeys, TokenError};
use crate::config::TrustedIssuer;

const S: &str = "tokens";

/// Least time between two JWKS reads of one issuer.
pub const REFRESH_MIN: Duration = Duration::from_secs(30);

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const BOOTSTRAP_TYPE: &str = "urn:openchami:params:oauth:token-type:bootstrap-token";
const ACCESS_TYPE: &str = "urn:ietf:params:oauth:token-type:access-token";

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    vec![
        route(
            Method::POST,
            "/oauth/token",
            S,
            Anonymous,
            Api,
            "RFC 8693 exchange of a bootstrap token for an access token",
            token_endpoint,
        ),
        route(
            Method::POST,
            "/token",
            S,
            Anonymous,
            Api,
            "Alias of /oauth/token (TokenSmith)",
            token_endpoint,
        ),
        route(
            Method::POST,
            "/tokensmith/oauth/token",
            S,
            Anonymous,
            Api,
            "/oauth/token under TokenSmith's prefix",
            token_endpoint,
        ),
    ]
}

struct Issuer {
    cfg: TrustedIssuer,
    keys: ArcSwapOption<ExternalKeys>,
    last_read: Mutex<Option<Instant>>,
}

/// The trusted issuers and their current keys.
#[derive(Default)]
pub struct Trusted {
    issuers: Vec<Issuer>,
    /// `jti`s of bootstrap tokens already exchanged, with their expiry.
    used_bootstrap: Mutex<HashMap<String, i64>>,
}

impl Trusted {
    /// Reads every issuer's keys once; one that cannot be read is logged
    /// and tried again when a token of it arrives.
    pub async fn load(cfgs: &[TrustedIssuer]) -> Trusted {
        let t = Trusted {
            issuers: cfgs
                .iter()
                .map(|c| Issuer {
                    cfg: c.clone(),
                    keys: ArcSwapOption::empty(),
                    last_read: Mutex::new(None),
                })
                .collect(),
            used_bootstrap: Mutex::new(HashMap::new()),
        };
        for i in &t.issuers {
            read_into(i).await;
        }
        t
    }
}

async fn read_jwks(cfg: &TrustedIssuer) -> Result<ExternalKeys, String> {
    let bytes = if !cfg.jwks_file.is_empty() {
        tokio::fs::read(&cfg.jwks_file)
            .await
            .map_err(|e| format!("{}: {e}", cfg.jwks_file))?
    } else {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .hickory_dns(true)
            .no_proxy();
        if cfg.jwks_url.starts_with("https://") {
            let ca = if cfg.ca_file.is_empty() {
                "/etc/ssl/certs/ca-certificates.crt"
            } else {
                cfg.ca_file.as_str()
            };
            b = b.use_preconfigured_tls(tls_config(ca)?);
        }
        let client = b.build().map_err(|e| e.to_string())?;
        let resp = client
            .get(&cfg.jwks_url)
            .send()
            .await
            .map_err(|e| format!("{}: {e}", cfg.jwks_url))?;
        if !resp.status().is_success() {
            return Err(format!("{}: HTTP {}", cfg.jwks_url, resp.status()));
        }
        resp.bytes()
            .await
            .map_err(|e| format!("{}: {e}", cfg.jwks_url))?
            .to_vec()
    };
    ExternalKeys::from_jwks(&bytes)
}

fn tls_config(ca: &str) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(ca).map_err(|e| format!("{ca}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("{ca}: no CA certificate"));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Reads the issuer's keys again for a token naming an unknown key, unless
/// such a read happened within [`REFRESH_MIN`]. Returns whether it read.
async fn refresh(i: &Issuer) -> bool {
    {
        let Ok(mut last) = i.last_read.lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < REFRESH_MIN) {
            return false;
        }
        *last = Some(Instant::now());
    }
    read_into(i).await;
    true
}

async fn read_into(i: &Issuer) {
    match read_jwks(&i.cfg).await {
        Ok(k) => {
            tracing::info!(
                issuer = i.cfg.issuer,
                keys = k.len(),
                "trusted issuer keys read"
            );
            i.keys.store(Some(std::sync::Arc::new(k)));
        }
        Err(e) => tracing::warn!(
            issuer = i.cfg.issuer,
            error = e,
            "cannot read trusted issuer keys"
        ),
    }
}

/// A verified caller.
pub struct Caller {
    pub claims: Claims,
    /// Signed by a trusted issuer rather than the appliance.
    pub external: bool,
}

/// Checks a bearer token: the appliance's own, or a trusted issuer's.
pub async fn verify(st: &AppState, token: &str, now: i64) -> Result<Caller, ApiError> {
    let bad = |e: TokenError| ApiError::unauthorized(format!("invalid token: {e}"));
    let claimed = token::claimed_issuer(token).unwrap_or_default();
    let issuer = st
        .trusted
        .issuers
        .iter()
        .find(|i| i.cfg.issuer == claimed && claimed != st.issuer);
    let (claims, external) = match issuer {
        None => (
            st.tokens
                .verify(token, &st.issuer, &st.config.auth.audience, now)
                .map_err(bad)?,
            false,
        ),
        Some(i) => {
            let check = |keys: Option<std::sync::Arc<ExternalKeys>>| match keys {
                Some(k) => k.verify(token, &i.cfg.issuer, &i.cfg.audience, now),
                None => Err(TokenError::UnknownKey),
            };
            let claims = match check(i.keys.load_full()) {
                Err(TokenError::UnknownKey) if refresh(i).await => check(i.keys.load_full()),
                r => r,
            }
            .map_err(bad)?;
            (claims, true)
        }
    };
    if claims.token_use.as_deref() == Some("bootstrap") {
        return Err(ApiError::unauthorized(
            "a bootstrap token is only good for exchange at /oauth/token",
        ));
    }
    Ok(Caller { claims, external })
}

/// May this caller change state? Roles `admin`, `operator`, `service`, or
/// a scope `write`/`admin` (also as `<service>:write`), TokenSmith's
/// vocabulary, allow it. The appliance's own tokens without roles or scopes
/// are full tokens, as before; another issuer's must say so.
pub fn may_write(c: &Caller) -> bool {
    let claims = &c.claims;
    if claims.roles.is_empty() && claims.scope.is_empty() {
        return !c.external;
    }
    claims
        .roles
        .iter()
        .any(|r| matches!(r.as_str(), "admin" | "operator" | "service"))
        || claims.scope.iter().any(|s| {
            let s = s.rsplit(':').next().unwrap_or(s);
            matches!(s, "write" | "admin")
        })
}

/// An OAuth error (RFC 6749 §5.2) that is also a problem document.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": description,
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": description,
    });
    tracing::debug!(error, description, "token request refused");
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    r
}

/// `POST /oauth/token`: a bootstrap token (one-time, signed by the
/// appliance, `token_use: bootstrap`) for an access token carrying its
/// subject, roles and scopes.
async fn token_endpoint(State(st): State<AppState>, body: Bytes) -> Response {
    let mut form: HashMap<String, String> = HashMap::new();
    for (k, v) in form_urlencoded::parse(&body) {
        form.insert(k.into_owned(), v.into_owned());
    }
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let bad = |e: &str, d: &str| oauth_error(StatusCode::BAD_REQUEST, e, d);
    match get("grant_type") {
        TOKEN_EXCHANGE => {}
        "" => return bad("invalid_request", "grant_type is required"),
        other => {
            return bad(
                "unsupported_grant_type",
                &format!("grant_type {other} is not supported; use {TOKEN_EXCHANGE}"),
            );
        }
    }
    if get("subject_token_type") != BOOTSTRAP_TYPE {
        return bad(
            "invalid_request",
            &format!("subject_token_type must be {BOOTSTRAP_TYPE}"),
        );
    }
    let subject = get("subject_token");
    if subject.is_empty() {
        return bad("invalid_request", "subject_token is required");
    }
    let now = chrono::Utc::now().timestamp();
    let claims = match st
        .tokens
        .verify(subject, &st.issuer, &st.config.auth.audience, now)
    {
        Ok(c) => c,
        Err(e) => {
            return bad(
                "invalid_grant",
                &format!("the bootstrap token is not valid: {e}"),
            );
        }
    };
    let jti = match (&claims.token_use, &claims.jti) {
        (Some(u), Some(j)) if u == "bootstrap" && !j.is_empty() => j.clone(),
        _ => {
            return bad(
                "invalid_grant",
                "the subject token is not a bootstrap token",
            );
        }
    };
    {
        let Ok(mut used) = st.trusted.used_bootstrap.lock() else {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error",
            );
        };
        used.retain(|_, exp| *exp + 60 > now);
        if used.contains_key(&jti) {
            return bad("invalid_grant", "the bootstrap token was already used");
        }
        used.insert(jti, claims.exp);
    }
    let ttl = i64::try_from(st.config.auth.exchange_ttl_secs).unwrap_or(3600);
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let access = Claims {
        sub: claims.sub.clone(),
        iss: st.issuer.clone(),
        aud: claims.aud.clone(),
        exp: now.saturating_add(ttl),
        iat: now,
        nbf: Some(now),
        roles: claims.roles.clone(),
        scope: claims.scope.clone(),
        jti: Some(format!("st-{nanos}")),
        token_use: None,
    };
    let token = match st.tokens.sign(&access) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot sign an access token");
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "cannot sign the token",
            );
        }
    };
    tracing::info!(sub = access.sub, "bootstrap token exchanged");
    let mut r = axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": access.scope.join(" "),
        "issued_token_type": ACCESS_TYPE,
    }))
    .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
