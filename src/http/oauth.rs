//! TokenSmith's token endpoint, `POST /oauth/token`: a one-time bootstrap
//! token (RFC 8693 exchange) or a refresh token (RFC 6749 §6) for an access
//! token and a new refresh token.
//!
//! Refresh tokens are opaque, `<family id>.<secret>`: the family id finds
//! the record (`inventory::tokens`) without storing the token, which is
//! kept only as a SHA-256, so a copy of the database hands out nothing.
//! Every refresh rotates the token; a rotated-out one coming back revokes
//! its family.
//!
//! Errors share one description per grant whatever the cause (unknown,
//! expired, used), as TokenSmith's do, so an answer tells a guesser
//! nothing; the cause is logged. Failed grants count per caller address
//! ([`Failures`]) and a caller with too many is turned away for a while.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AppState;
use super::peer::caller_ip;
use super::problem::PROBLEM_JSON;
use super::routes::{Access, Listeners, Route, route};
use super::server::Peer;
use crate::ca::token::Claims;
use crate::inventory::tokens::{self, Refresh, RefreshFamily};
use crate::inventory::{DomainError, WriteError};

const S: &str = "tokens";

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const REFRESH: &str = "refresh_token";
pub const BOOTSTRAP_TYPE: &str = "urn:openchami:params:oauth:token-type:bootstrap-token";
pub const ACCESS_TYPE: &str = "urn:ietf:params:oauth:token-type:access-token";

/// Failed grants from one address within [`WINDOW`] before it is refused.
pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered at once; beyond, the one whose
/// last failure is oldest is forgotten.
pub const MAX_ADDRESSES: usize = 4096;

const BAD_BOOTSTRAP: &str = "The provided token is invalid or has already been used";
const BAD_REFRESH: &str = "The provided refresh token is invalid or has expired";
const INTERNAL: &str = "An internal server error occurred";

pub fn routes() -> Vec<Route> {
    use Access::*;
    use Listeners::*;
    const SUMMARY: &str = "A bootstrap token (RFC 8693 exchange) or a refresh token for an access token and a new refresh token";
    vec![
        route(
            Method::POST,
            "/oauth/token",
            S,
            Anonymous,
            Api,
            SUMMARY,
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

/// Recent failed grants per caller address, bounded in memory.
pub struct Failures {
    max: usize,
    window: Duration,
    cap: usize,
    table: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Default for Failures {
    fn default() -> Self {
        Failures::new(MAX_FAILURES, WINDOW, MAX_ADDRESSES)
    }
}

impl Failures {
    pub fn new(max: usize, window: Duration, cap: usize) -> Failures {
        Failures {
            max: max.max(1),
            window,
            cap: cap.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` must wait, if it has had `max` failures in the window.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let recent: Vec<&Instant> = t
            .get(&ip)?
            .iter()
            .filter(|at| now.duration_since(**at) < self.window)
            .collect();
        if recent.len() < self.max {
            return None;
        }
        let first = recent.first()?;
        Some(self.window.saturating_sub(now.duration_since(**first)))
    }

    /// Counts a failure of `ip`; true when that makes it blocked.
    pub fn record(&self, ip: IpAddr, now: Instant) -> bool {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !t.contains_key(&ip) && t.len() >= self.cap {
            let window = self.window;
            t.retain(|_, v| {
                v.back()
                    .is_some_and(|last| now.duration_since(*last) < window)
            });
            if t.len() >= self.cap
                && let Some(oldest) = t
                    .iter()
                    .min_by_key(|(_, v)| v.back().copied())
                    .map(|(k, _)| *k)
            {
                t.remove(&oldest);
            }
        }
        let v = t.entry(ip).or_default();
        while v
            .front()
            .is_some_and(|at| now.duration_since(*at) >= self.window)
        {
            v.pop_front();
        }
        v.push_back(now);
        while v.len() > self.max {
            v.pop_front();
        }
        v.len() == self.max
    }

    /// Addresses remembered now.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A refused grant: status, OAuth error code, description.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
}

fn refuse(status: StatusCode, error: &'static str, description: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error,
        description: description.into(),
    }
}

fn invalid_request(d: &str) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "invalid_request", d)
}

fn invalid_grant(d: &str) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "invalid_grant", d)
}

fn server_error() -> Refusal {
    refuse(StatusCode::INTERNAL_SERVER_ERROR, "server_error", INTERNAL)
}

fn no_store(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// An OAuth error (RFC 6749 §5.2) that is also a problem document.
fn oauth_error(f: &Refusal) -> Response {
    let body = json!({
        "error": f.error,
        "error_description": f.description,
        "type": "about:blank",
        "title": f.status.canonical_reason().unwrap_or("Error"),
        "status": f.status.as_u16(),
        "detail": f.description,
    });
    let mut r = (f.status, body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    no_store(&mut r);
    r
}

/// The form's fields; a field given twice (RFC 6749 §3.2) or a body that
/// is not UTF-8 is refused.
fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, Refusal> {
    if std::str::from_utf8(body).is_err() {
        return Err(invalid_request("Failed to parse request"));
    }
    let mut form = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if form
            .insert(k.clone().into_owned(), v.into_owned())
            .is_some()
        {
            return Err(invalid_request(&format!(
                "Parameter {k} must not be repeated"
            )));
        }
    }
    Ok(form)
}

/// `POST /oauth/token`.
async fn token_endpoint(
    State(st): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer_ip = peer
        .map(|p| p.0.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let ip = caller_ip(peer_ip, &headers, &st.config.http.trusted_proxies);
    let failures = &st.trusted.failures;
    if let Some(wait) = failures.blocked(ip, Instant::now()) {
        // Logged once, when the address became blocked; the access line
        // records each refusal.
        tracing::debug!(client = %ip, "token request refused: too many failed attempts");
        let mut r = oauth_error(&refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "Too many failed token exchange attempts from this address",
        ));
        let secs = wait.as_secs().max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let outcome = match parse_form(&body) {
        Err(f) => Err(f),
        Ok(form) => {
            let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
            match get("grant_type").trim() {
                "" => Err(invalid_request("Missing grant_type parameter")),
                TOKEN_EXCHANGE => {
                    exchange(&st, get("subject_token"), get("subject_token_type"), ip).await
                }
                REFRESH => refresh(&st, get("refresh_token"), ip).await,
                other => Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    format!(
                        "Grant type '{}' is not supported",
                        other.chars().take(64).collect::<String>()
                    ),
                )),
            }
        }
    };
    match outcome {
        Ok(r) => r,
        Err(f) => {
            if f.error == "invalid_grant" && failures.record(ip, Instant::now()) {
                tracing::warn!(
                    client = %ip,
                    failures = MAX_FAILURES,
                    window_secs = WINDOW.as_secs(),
                    "too many failed token grants; the address is refused for a while"
                );
            }
            tracing::debug!(client = %ip, error = f.error, description = f.description, "token request refused");
            oauth_error(&f)
        }
    }
}

/// 32 random bytes as hex (`n` bytes in general).
fn random_hex(n: usize) -> Result<String, Refusal> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| {
            tracing::error!("no randomness for a refresh token");
            server_error()
        })?;
    Ok(hex::encode(buf))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

const FAMILY_HEX: usize = 32;
const SECRET_HEX: usize = 64;

/// A refresh token's family id, if it has the shape of one of ours.
fn family_of(token: &str) -> Option<&str> {
    let (id, secret) = token.split_once('.')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, FAMILY_HEX) && hex(secret, SECRET_HEX)).then_some(id)
}

/// A new refresh token of family `id` and its hash.
fn new_refresh(id: &str) -> Result<(String, String), Refusal> {
    let token = format!("{id}.{}", random_hex(SECRET_HEX / 2)?);
    let hash = sha256_hex(&token);
    Ok((token, hash))
}

/// Signs an access token for what a family (or bootstrap token) grants.
fn access_token(
    st: &AppState,
    sub: &str,
    aud: &[String],
    roles: &[String],
    scope: &[String],
    now: i64,
) -> Result<(String, i64), Refusal> {
    let ttl = i64::try_from(st.config.auth.exchange_ttl_secs).unwrap_or(3600);
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let claims = Claims {
        sub: sub.to_string(),
        iss: st.issuer.clone(),
        aud: aud.to_vec(),
        exp: now.saturating_add(ttl),
        iat: now,
        nbf: Some(now),
        roles: roles.to_vec(),
        scope: scope.to_vec(),
        jti: Some(format!("st-{nanos}")),
        token_use: None,
    };
    let token = st.tokens.sign(&claims).map_err(|e| {
        tracing::error!(error = %e, "cannot sign an access token");
        server_error()
    })?;
    Ok((token, ttl))
}

fn granted(access: &str, expires_in: i64, refresh: &str, f: &RefreshFamily, now: i64) -> Response {
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "refresh_token": refresh,
        "refresh_expires_in": f.expires_at.saturating_sub(now).max(0),
        "issued_token_type": ACCESS_TYPE,
    });
    if !f.scope.is_empty() {
        body["scope"] = json!(f.scope.join(" "));
    }
    let mut r = axum::Json(body).into_response();
    no_store(&mut r);
    r
}

fn store_failure(e: WriteError) -> Refusal {
    tracing::error!(error = %e, "cannot record a token grant");
    server_error()
}

/// The bootstrap-token exchange: one time per `jti`, across restarts.
async fn exchange(
    st: &AppState,
    subject: &str,
    subject_type: &str,
    ip: IpAddr,
) -> Result<Response, Refusal> {
    if subject_type != BOOTSTRAP_TYPE {
        return Err(invalid_request("Invalid subject_token_type parameter"));
    }
    if subject.trim().is_empty() {
        return Err(invalid_request("Missing or empty subject_token parameter"));
    }
    let now = chrono::Utc::now().timestamp();
    let claims = st
        .tokens
        .verify(subject, &st.issuer, &st.config.auth.audience, now)
        .map_err(|e| {
            tracing::info!(client = %ip, error = %e, "bootstrap token refused");
            invalid_grant(BAD_BOOTSTRAP)
        })?;
    let jti = match (&claims.token_use, &claims.jti) {
        (Some(u), Some(j)) if u == "bootstrap" && !j.is_empty() => j.clone(),
        _ => {
            tracing::info!(client = %ip, sub = claims.sub, "not a bootstrap token");
            return Err(invalid_grant(BAD_BOOTSTRAP));
        }
    };
    let (access, expires_in) = access_token(
        st,
        &claims.sub,
        &claims.aud,
        &claims.roles,
        &claims.scope,
        now,
    )?;
    let id = random_hex(FAMILY_HEX / 2)?;
    let (refresh, hash) = new_refresh(&id)?;
    let ttl = i64::try_from(st.config.auth.refresh_ttl_secs).unwrap_or(86400);
    let family = RefreshFamily {
        id,
        current: hash,
        sub: claims.sub.clone(),
        aud: claims.aud.clone(),
        roles: claims.roles.clone(),
        scope: claims.scope.clone(),
        issued_at: now,
        expires_at: now.saturating_add(ttl),
        last_used: now,
        uses: 0,
        revoked_at: None,
    };
    let record = family.clone();
    let exp = claims.exp;
    let used = jti.clone();
    match st
        .store
        .write(move |t| {
            tokens::consume_bootstrap(t, &used, exp, now)?;
            tokens::start_family(t, record)
        })
        .await
    {
        Ok(()) => {}
        Err(WriteError::Domain(DomainError::Invalid(why))) => {
            tracing::warn!(client = %ip, sub = claims.sub, jti, "bootstrap token refused: {why}");
            return Err(invalid_grant(BAD_BOOTSTRAP));
        }
        Err(e) => return Err(store_failure(e)),
    }
    tracing::info!(client = %ip, sub = family.sub, family = family.id, "bootstrap token exchanged");
    Ok(granted(&access, expires_in, &refresh, &family, now))
}

/// The refresh grant: rotates the token; an old one revokes the family.
async fn refresh(st: &AppState, token: &str, ip: IpAddr) -> Result<Response, Refusal> {
    if token.trim().is_empty() {
        return Err(invalid_request("Missing or empty refresh_token parameter"));
    }
    let Some(id) = family_of(token) else {
        tracing::info!(client = %ip, "refresh token of no known shape");
        return Err(invalid_grant(BAD_REFRESH));
    };
    let now = chrono::Utc::now().timestamp();
    // What a family grants never changes, so the access token can be
    // signed before the rotation is recorded; the write decides.
    let Some(f) = st.store.snapshot().refresh_families.get(id).cloned() else {
        tracing::info!(client = %ip, family = id, "refresh token of an unknown family");
        return Err(invalid_grant(BAD_REFRESH));
    };
    let (access, expires_in) = access_token(st, &f.sub, &f.aud, &f.roles, &f.scope, now)?;
    let (next, next_hash) = new_refresh(id)?;
    let (fid, presented) = (id.to_string(), sha256_hex(token));
    let outcome = st
        .store
        .write(move |t| Ok(tokens::rotate(t, &fid, &presented, &next_hash, now)))
        .await
        .map_err(store_failure)?;
    match outcome {
        Refresh::Rotated(f) => {
            tracing::info!(client = %ip, sub = f.sub, family = f.id, uses = f.uses, "refresh token rotated");
            Ok(granted(&access, expires_in, &next, &f, now))
        }
        Refresh::Replayed => {
            tracing::warn!(client = %ip, sub = f.sub, family = f.id, "a rotated-out refresh token was presented; its family is revoked");
            Err(invalid_grant(BAD_REFRESH))
        }
        other => {
            tracing::info!(client = %ip, family = f.id, outcome = ?other, "refresh token refused");
            Err(invalid_grant(BAD_REFRESH))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn failures_block_within_the_window_only() {
        let f = Failures::new(5, WINDOW, 16);
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(!f.record(ip(1), t0 + Duration::from_secs(i)));
        }
        assert_eq!(f.blocked(ip(1), t0 + Duration::from_secs(5)), None);
        assert!(f.record(ip(1), t0 + Duration::from_secs(5)));
        let wait = f.blocked(ip(1), t0 + Duration::from_secs(6)).unwrap();
        assert_eq!(wait, Duration::from_secs(54));
        // Another address is not affected.
        assert_eq!(f.blocked(ip(2), t0 + Duration::from_secs(6)), None);
        // The oldest failure leaves the window: one short again.
        assert_eq!(f.blocked(ip(1), t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn the_table_is_capped_and_forgets_the_oldest() {
        let f = Failures::new(5, WINDOW, 4);
        let t0 = Instant::now();
        for n in 1..=4u8 {
            for _ in 0..5 {
                f.record(ip(n), t0 + Duration::from_millis(u64::from(n)));
            }
        }
        assert!(f.blocked(ip(1), t0 + Duration::from_secs(1)).is_some());
        f.record(ip(9), t0 + Duration::from_secs(1));
        assert_eq!(f.len(), 4);
        // 127.0.0.1 had the oldest last failure and was forgotten.
        assert!(f.blocked(ip(1), t0 + Duration::from_secs(1)).is_none());
        assert!(f.blocked(ip(4), t0 + Duration::from_secs(1)).is_some());
        // Past the window, stale entries go first.
        for n in 10..200u8 {
            f.record(
                ip(n),
                t0 + Duration::from_secs(120) + Duration::from_millis(u64::from(n)),
            );
        }
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn refresh_token_shape() {
        let id = "0".repeat(FAMILY_HEX);
        let good = format!("{id}.{}", "a".repeat(SECRET_HEX));
        assert_eq!(family_of(&good), Some(id.as_str()));
        for bad in [
            "",
            ".",
            "abc",
            &format!("{id}.{}", "a".repeat(SECRET_HEX - 1)),
            &format!("{id}.{}", "g".repeat(SECRET_HEX)),
            &format!("{id}x.{}", "a".repeat(SECRET_HEX)),
            &format!("{good}.x"),
            "é.é",
        ] {
            assert_eq!(family_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn forms_with_repeats_or_bad_bytes_are_refused() {
        assert!(parse_form(b"a=1&b=2").is_ok());
        assert!(parse_form(b"a=1&a=2").is_err());
        assert!(parse_form(b"a=\xff").is_err());
        assert!(parse_form(b"").unwrap().is_empty());
    }
}
