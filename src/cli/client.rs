//! A small REST client of the appliance API.
//!
//! It trusts only the appliance CA (from `--cacert` or the state dir), sends a
//! bearer token, and turns problem+json answers into one-line errors.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::Global;
use crate::ca::token::TokenKeys;
use crate::config::Config;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The CA file trusted, for messages.
    ca: Option<PathBuf>,
}

impl Client {
    /// Builds a client from flags, environment and the config file.
    pub fn from_global(g: &Global, config: &Config) -> anyhow::Result<Client> {
        let base = match &g.url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("https://localhost:{}", config.api.listen.port()),
        };
        let ca_path = g
            .cacert
            .clone()
            .unwrap_or_else(|| config.state_dir.join("ca").join("root.crt"));
        let http = build_http(&base, &ca_path)?;
        let token = resolve_token(g, config);
        Ok(Client {
            http,
            base,
            token,
            ca: Some(ca_path),
        })
    }

    /// A client for tests and tools that already hold the pieces.
    pub fn new(
        base: &str,
        root_pem: Option<&str>,
        token: Option<String>,
    ) -> anyhow::Result<Client> {
        let mut b = http_builder();
        if let Some(pem) = root_pem {
            b = b.use_preconfigured_tls(tls_config(pem.as_bytes())?);
        }
        Ok(Client {
            http: b.build()?,
            base: base.trim_end_matches('/').to_string(),
            token,
            ca: None,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; 2xx gives the JSON body (Null when empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, v) = self.send_raw(method.clone(), path, body).await?;
        Self::result(&method, path, status, v)
    }

    /// A 2xx answer's body, or a one-line error naming the request.
    pub fn result(
        method: &Method,
        path: &str,
        status: StatusCode,
        v: Value,
    ) -> anyhow::Result<Value> {
        if status.is_success() {
            return Ok(v);
        }
        let detail = v
            .get("detail")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        let mut msg = format!("{method} {path}: {} ({detail})", status.as_u16());
        if status == StatusCode::UNAUTHORIZED {
            msg.push_str("; set OPENCHAMI_ACCESS_TOKEN, e.g. export OPENCHAMI_ACCESS_TOKEN=$(openchami token issue)");
        }
        Err(anyhow!(msg))
    }

    /// Sends a request and returns the status with the JSON body, whatever it is.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the response")?;
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, v))
    }

    /// POSTs a form without the bearer token (the token endpoint is
    /// anonymous); the status with the JSON body, whatever it is.
    pub async fn post_form(
        &self,
        path: &str,
        form: &[(&str, String)],
    ) -> anyhow::Result<(StatusCode, Value)> {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let resp = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the response")?;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, v))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::GET, path, None).await
    }

    /// Why a request got no answer, and what to do, in one line.
    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        anyhow!(explain(
            &self.base,
            &crate::root_cause(e),
            self.ca.as_deref()
        ))
    }

    /// Opens a WebSocket at `path` (with its query) over HTTP/1.1.
    pub async fn websocket(
        &self,
        path: &str,
    ) -> anyhow::Result<tokio_tungstenite::WebSocketStream<reqwest::Upgraded>> {
        use base64::Engine as _;
        use reqwest::header::{CONNECTION, UPGRADE};
        let url = format!("{}{}", self.base, path);
        let key = base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes());
        let mut req = self
            .http
            .get(&url)
            .version(reqwest::Version::HTTP_11)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", key);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let bytes = resp.bytes().await.context("reading the response")?;
            let v = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            Self::result(&Method::GET, path, status, v)?;
            bail!(
                "GET {path}: {} without a WebSocket upgrade",
                status.as_u16()
            );
        }
        let upgraded = resp.upgrade().await.context("WebSocket upgrade")?;
        Ok(tokio_tungstenite::WebSocketStream::from_raw_socket(
            upgraded,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await)
    }

    /// GET of a document that is not JSON (YAML, cloud-config): its text.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the response")?;
        if status.is_success() {
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Self::result(&Method::GET, path, status, v).map(|_| String::new())
    }
}

/// A transport failure as an operator can act on it: what the peer at
/// `base` turned out to be, and the flag to change. The raw cause (a parser
/// or TLS alert name) stays at the end for searching.
pub fn explain(base: &str, cause: &str, ca: Option<&Path>) -> String {
    let lower = cause.to_ascii_lowercase();
    let https = base.starts_with("https://");
    let hint = if !https && lower.contains("invalid http version") {
        format!(
            "it answers in TLS, not plain HTTP: the API is HTTPS, use --url {}",
            base.replacen("http://", "https://", 1)
        )
    } else if https
        && (lower.contains("invalidcontenttype")
            || lower.contains("corrupt message")
            || lower.contains("wrong version number"))
    {
        format!(
            "it answers plain HTTP, not TLS: that is the node listener (default port 27778); the API is HTTPS on port 8443, e.g. --url https://{}:8443",
            host_of(base)
        )
    } else if https
        && (lower.contains("badsignature")
            || lower.contains("unknownissuer")
            || lower.contains("invalid peer certificate"))
    {
        let ca = ca.map_or_else(|| "the CA given".to_string(), |p| p.display().to_string());
        format!(
            "its certificate is not signed by {ca}: pass --cacert with this appliance's <state dir>/ca/root.crt (check it with `openchami ca fingerprint` on the head node)"
        )
    } else if lower.contains("connection refused") {
        "nothing listens there: is `openchami serve` running, and are the host and port right (--url)?".to_string()
    } else {
        return format!("cannot reach {base}: {cause}");
    };
    format!("cannot reach {base}: {hint} ({cause})")
}

fn host_of(base: &str) -> &str {
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    if let Some(end) = hostport.find(']') {
        return &hostport[..=end];
    }
    hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
}

fn tls_config(pem: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.context("invalid PEM certificate")?)?;
    }
    if roots.is_empty() {
        bail!("no certificate in the CA file");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Every HTTP client starts here. Host names are resolved by hickory, in
/// Rust, from `/etc/hosts` and `/etc/resolv.conf` (`localhost` never leaves
/// the process): the binary is statically linked, and glibc's resolver would
/// dlopen NSS modules that may not match the host's glibc.
fn http_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .hickory_dns(true)
}

fn build_http(base: &str, ca_path: &Path) -> anyhow::Result<reqwest::Client> {
    let mut b = http_builder();
    if base.starts_with("https://") {
        let pem = std::fs::read(ca_path).with_context(|| {
            format!(
                "cannot read the appliance CA {} (pass --cacert, or fetch /ca/root.pem and check its fingerprint)",
                ca_path.display()
            )
        })?;
        let tls = tls_config(&pem).with_context(|| {
            format!(
                "{} is not the appliance CA (pass --cacert with its <state dir>/ca/root.crt)",
                ca_path.display()
            )
        })?;
        b = b.use_preconfigured_tls(tls);
    }
    Ok(b.build()?)
}

/// `--token`, `$OPENCHAMI_ACCESS_TOKEN`, `$<CLUSTER>_ACCESS_TOKEN`, else a
/// short-lived token minted from the signing key when this user can read it
/// (root on the head node).
fn resolve_token(g: &Global, config: &Config) -> Option<String> {
    if let Some(t) = &g.token {
        return Some(t.clone());
    }
    let cluster_var = format!("{}_ACCESS_TOKEN", env_name(&config.cluster_name));
    for var in ["OPENCHAMI_ACCESS_TOKEN", cluster_var.as_str()] {
        if let Ok(t) = std::env::var(var)
            && !t.trim().is_empty()
        {
            return Some(t.trim().to_string());
        }
    }
    let key: PathBuf = config.state_dir.join("ca").join("token.key");
    if std::fs::File::open(&key).is_ok() {
        let keys = TokenKeys::load_or_create(&config.state_dir).ok()?;
        let now = chrono::Utc::now().timestamp();
        return keys
            .issue(
                "cli",
                &config.issuer(),
                &config.auth.audience,
                std::time::Duration::from_secs(300),
                &[],
                now,
            )
            .ok();
    }
    None
}

/// `demo-cluster` → `DEMO_CLUSTER`, as ochami names its token variable.
pub fn env_name(cluster: &str) -> String {
    cluster
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}
