//! Who may call the API: the appliance's own tokens (among them those
//! `/oauth/token` hands out, see `oauth`) and tokens of issuers the site
//! trusts (its identity provider, by JWKS).
//!
//! `ca::token` checks signatures and claims and fetches nothing; the JWKS
//! of a trusted issuer is read or downloaded here and handed to it, and
//! read again when a token names a key it does not know (a rotation at the
//! issuer), at most once every [`REFRESH_MIN`] per issuer so a flood of
//! made-up `kid`s cannot turn into a flood of fetches.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::AppState;
use super::problem::ApiError;
use crate::ca::token::{self, Claims, ExternalKeys, TokenError};
use crate::config::TrustedIssuer;

/// Least time between two JWKS reads of one issuer.
pub const REFRESH_MIN: Duration = Duration::from_secs(30);

struct Issuer {
    cfg: TrustedIssuer,
    keys: ArcSwapOption<ExternalKeys>,
    last_read: Mutex<Option<Instant>>,
}

/// The trusted issuers and their current keys.
#[derive(Default)]
pub struct Trusted {
    issuers: Vec<Issuer>,
    /// Failed `/oauth/token` grants per caller address.
    pub failures: super::oauth::Failures,
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
            failures: Default::default(),
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
