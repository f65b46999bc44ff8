//! Sign-in for the status page: a token pasted once becomes a session
//! cookie that authorises only `/ui/api/*`.
//!
//! A browser cannot keep a bearer token out of reach of scripts unless the
//! server holds it, so the page exchanges the token for a random session ID
//! in an `HttpOnly; Secure; SameSite=Strict` cookie, scoped to `/ui/api`.
//! Every other route keeps accepting bearer tokens only (and upstream's
//! `jwt` cookie), so the session can never reach a route that does not
//! check its CSRF token. Every request under `/ui/api` that changes state
//! must carry the session's CSRF token in `X-CSRF-Token` (the page reads it
//! from `GET /ui/api/session`, which a cross-site page cannot read). A
//! request with a bearer token instead is checked like any API request.
//!
//! Sessions live in memory: a restart signs everyone out, which is the safe
//! direction. A session ends at its token's expiry or after [`MAX_AGE`],
//! whichever is first, and on sign-out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::problem::ApiError;
use super::state::AppState;

/// The session cookie's name (not `jwt`, which other routes accept).
pub const COOKIE: &str = "openchami_ui";
/// The header carrying the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The longest a session lasts, whatever its token's expiry.
pub const MAX_AGE: Duration = Duration::from_secs(8 * 3600);
/// Sessions held at most; the one ending soonest goes first.
const MAX_SESSIONS: usize = 4096;

#[derive(Debug, Clone)]
struct Session {
    sub: String,
    write: bool,
    csrf: String,
    ends: Instant,
    /// Unix seconds, for the page.
    ends_unix: i64,
}

/// The status page's server side: sessions, and the token that ends its
/// event streams at shutdown.
pub struct UiState {
    sessions: Mutex<HashMap<String, Session>>,
    rng: SystemRandom,
    pub shutdown: CancellationToken,
    /// Event streams open now.
    pub streams: std::sync::atomic::AtomicUsize,
}

impl Default for UiState {
    fn default() -> Self {
        Self::new(CancellationToken::new())
    }
}

impl UiState {
    pub fn new(shutdown: CancellationToken) -> UiState {
        UiState {
            sessions: Mutex::new(HashMap::new()),
            rng: SystemRandom::new(),
            shutdown,
            streams: Default::default(),
        }
    }

    fn random(&self) -> Result<String, ApiError> {
        let mut b = [0u8; 32];
        self.rng
            .fill(&mut b)
            .map_err(|_| ApiError::internal("no randomness for a session"))?;
        Ok(hex::encode(b))
    }

    /// Opens a session; returns its cookie value and CSRF token.
    fn open(
        &self,
        sub: &str,
        write: bool,
        token_exp: i64,
        now_unix: i64,
    ) -> Result<(String, Session), ApiError> {
        let id = self.random()?;
        let left = (token_exp - now_unix).clamp(0, MAX_AGE.as_secs() as i64);
        let s = Session {
            sub: sub.to_string(),
            write,
            csrf: self.random()?,
            ends: Instant::now() + Duration::from_secs(left as u64),
            ends_unix: now_unix + left,
        };
        let mut m = self
            .sessions
            .lock()
            .map_err(|_| ApiError::internal("session table unavailable"))?;
        let now = Instant::now();
        m.retain(|_, s| s.ends > now);
        while m.len() >= MAX_SESSIONS {
            let Some(k) = m.iter().min_by_key(|(_, s)| s.ends).map(|(k, _)| k.clone()) else {
                break;
            };
            m.remove(&k);
        }
        m.insert(id.clone(), s.clone());
        Ok((id, s))
    }

    fn get(&self, id: &str) -> Option<Session> {
        let m = self.sessions.lock().ok()?;
        m.get(id).filter(|s| s.ends > Instant::now()).cloned()
    }

    fn close(&self, id: &str) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(id);
        }
    }
}

/// Who is calling a `/ui/api` route (set by [`require_session`]).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SessionInfo {
    /// The token's subject.
    pub sub: String,
    /// Whether power actions are allowed.
    pub write: bool,
    /// To send back in `X-CSRF-Token` on every state-changing request;
    /// empty for a bearer-token caller, which needs none.
    pub csrf: String,
    /// When the session ends (Unix seconds); 0 for a bearer-token caller.
    pub expires: i64,
    #[serde(skip)]
    #[schemars(skip)]
    id: Option<String>,
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(str::to_string)
        .next()
}

/// The bearer token of the `Authorization` header only: the `jwt` cookie
/// other routes accept would be sent by the browser on its own.
fn header_bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_string())
}

fn same(a: &str, b: &str) -> bool {
    // Every byte compared, whatever differs first.
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The check every `Access::Session` route passes: a bearer token, or a
/// session cookie plus, unless the method is safe, its CSRF token. Writing
/// needs a token with a writing role, except to sign out.
pub async fn require_session(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    let info = if let Some(token) = header_bearer(req.headers()) {
        let now = chrono::Utc::now().timestamp();
        let c = super::auth::verify(&st, &token, now).await?;
        SessionInfo {
            write: super::auth::may_write(&c),
            sub: c.claims.sub,
            csrf: String::new(),
            expires: 0,
            id: None,
        }
    } else if let Some(id) = cookie_value(req.headers()) {
        let s = st
            .ui
            .get(&id)
            .ok_or_else(|| ApiError::unauthorized("the session has ended: sign in again"))?;
        if !safe {
            let sent = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !same(sent, &s.csrf) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a state-changing request of the status page needs its X-CSRF-Token",
                ));
            }
        }
        SessionInfo {
            sub: s.sub,
            write: s.write,
            csrf: s.csrf,
            expires: s.ends_unix,
            id: Some(id),
        }
    } else {
        return Err(ApiError::unauthorized(
            "sign in first: a bearer token or the status page's session is required",
        ));
    };
    let sign_out = req.uri().path() == SESSION_PATH;
    if !safe && !sign_out && !info.write {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token for {} has no role or scope that may change state",
                info.sub
            ),
        ));
    }
    req.extensions_mut().insert(info);
    Ok(next.run(req).await)
}

pub const SESSION_PATH: &str = "/ui/api/session";

/// `POST /ui/api/session`'s body.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// An access token (a JWT the API accepts).
    pub token: String,
}

fn set_cookie(value: &str, max_age: i64) -> String {
    format!("{COOKIE}={value}; Path=/ui/api; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict")
}

/// Signs in: checks the token as any API request's, opens a session.
/// Anonymous in the route table (the token in the body is the credential).
/// A cross-site page cannot sign a browser in with its own token: only an
/// `application/json` body is read, and a browser sends one cross-site only
/// after a CORS preflight this appliance never grants.
pub async fn sign_in(
    State(st): State<AppState>,
    headers: HeaderMap,
    super::json::ExactJson(body): super::json::ExactJson<SignIn>,
) -> Result<Response, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "sign-in takes an application/json body: {\"token\": \"...\"}",
        ));
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "sign-in is accepted only from the status page itself",
        ));
    }
    let now = chrono::Utc::now().timestamp();
    let c = super::auth::verify(&st, body.token.trim(), now).await?;
    let write = super::auth::may_write(&c);
    let (id, s) = st.ui.open(&c.claims.sub, write, c.claims.exp, now)?;
    tracing::info!(sub = s.sub, write, "status page sign-in");
    let info = SessionInfo {
        sub: s.sub,
        write,
        csrf: s.csrf,
        expires: s.ends_unix,
        id: None,
    };
    let mut r = axum::response::IntoResponse::into_response(axum::Json(info));
    if let Ok(v) = set_cookie(&id, s.ends_unix - now).parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// Who is signed in, with the CSRF token the page sends back.
pub async fn whoami(
    axum::Extension(info): axum::Extension<SessionInfo>,
) -> axum::Json<SessionInfo> {
    axum::Json(info)
}

/// Signs out: forgets the session and clears the cookie.
pub async fn sign_out(
    State(st): State<AppState>,
    axum::Extension(info): axum::Extension<SessionInfo>,
) -> Response {
    if let Some(id) = &info.id {
        st.ui.close(id);
    }
    let mut r = axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT);
    if let Ok(v) = set_cookie("", 0).parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_read_by_exact_name() {
        let cases = [
            ("openchami_ui=abc", Some("abc")),
            ("a=1; openchami_ui=xyz; b=2", Some("xyz")),
            ("openchami_uix=abc", None),
            ("jwt=abc", None),
            ("", None),
        ];
        for (cookie, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, cookie.parse().unwrap());
            assert_eq!(cookie_value(&h).as_deref(), want, "{cookie}");
        }
    }

    #[test]
    fn sessions_end_and_are_capped() {
        let ui = UiState::default();
        let (id, s) = ui.open("a", true, 2_000_000_000, 1_000).unwrap();
        assert_eq!(s.ends_unix, 1_000 + MAX_AGE.as_secs() as i64);
        assert!(ui.get(&id).is_some());
        ui.close(&id);
        assert!(ui.get(&id).is_none());
        // A token already past its expiry gives a session that has ended.
        let (id, _) = ui.open("b", false, 500, 1_000).unwrap();
        assert!(ui.get(&id).is_none());
        for _ in 0..MAX_SESSIONS + 10 {
            ui.open("c", false, 2_000_000_000, 1_000).unwrap();
        }
        assert!(ui.sessions.lock().unwrap().len() <= MAX_SESSIONS);
    }

    #[test]
    fn bearer_comes_only_from_the_header() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "jwt=abc".parse().unwrap());
        assert_eq!(header_bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer t1".parse().unwrap());
        assert_eq!(header_bearer(&h).as_deref(), Some("t1"));
    }
}
