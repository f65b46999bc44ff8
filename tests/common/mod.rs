//! The in-process test harness: the whole appliance on ephemeral ports with a
//! temporary state directory, and typed clients for each way in.
//!
//! Every integration test binary includes this module; not every binary uses
//! every helper.
#![allow(dead_code)]

pub mod host;
pub mod postgres;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openchami::app::App;
use openchami::config::Config;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// Generous: the test machine may be busy building other things.
pub const TIMEOUT: Duration = Duration::from_secs(30);

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Installs the process-wide rustls provider (once; later calls are no-ops).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running appliance and clients for it.
pub struct Harness {
    app: Option<App>,
    /// The state directory (database, CA, keys); removed on drop.
    pub dir: tempfile::TempDir,
    /// The configuration the appliance was started with (ports as given, 0).
    pub config: Config,
    /// HTTPS to the API listener, trusting the appliance root, with a token.
    pub api: Http,
    /// HTTPS to the API listener without a token.
    pub anon: Http,
    /// Plain HTTP to the (first) node listener.
    pub node: Http,
    /// The token `api` sends: full access, one hour.
    pub token: String,
}

impl Harness {
    /// Polls a discovery job until it is no longer running; fails the test
    /// after `within`.
    pub async fn wait_job(&self, job: &Value, within: Duration) -> Value {
        let id = job["id"].as_str().expect("job id");
        let deadline = std::time::Instant::now() + within;
        loop {
            let v = self.api.get_json(&format!("/discovery/v1/jobs/{id}")).await;
            if v["status"] != "running" {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "job did not end: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls a power transition until it is completed or aborted; fails the
    /// test after `within`.
    pub async fn wait_transition(&self, id: &str, within: Duration) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let v = self
                .api
                .get_json(&format!("/power-control/v1/transitions/{id}"))
                .await;
            if matches!(
                v["transitionStatus"].as_str(),
                Some("completed" | "aborted")
            ) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "transition did not end: {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    /// Starts with the test configuration, changed by `f` first.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Harness {
        init_crypto();
        let dir = tempfile::Builder::new()
            .prefix("openchami-test-")
            .tempdir()
            .expect("temp dir");
        let mut config = test_config(dir.path());
        f(&mut config);
        // Heads of one test database share its key-encryption key, as an
        // operator copies it to every head.
        if !config.store.url.is_empty() && config.store.kek_file.is_empty() {
            config.store.kek_file = postgres::kek_for(&config.store.url).display().to_string();
        }
        let app = start_app(config.clone()).await;
        let (api, anon, node, token) = clients(&app);
        Harness {
            app: Some(app),
            dir,
            config,
            api,
            anon,
            node,
            token,
        }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("the appliance is running")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.app().api_addr.expect("API listener enabled")
    }

    pub fn node_addr(&self) -> SocketAddr {
        self.app().node_addrs[0]
    }

    /// `https://127.0.0.1:PORT`
    pub fn api_base(&self) -> String {
        format!("https://{}", self.api_addr())
    }

    /// The binary's CLI pointed at this appliance (URL, CA, token, an empty
    /// client config), with the caller's `OPENCHAMI_*` and `*_ACCESS_TOKEN`
    /// variables removed so the host's settings cannot leak in.
    pub fn cli_command(&self, args: &[&str]) -> tokio::process::Command {
        let cfg = self.state_dir().join("client.toml");
        std::fs::write(&cfg, "").expect("client config");
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_openchami"));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("OPENCHAMI_") || k.ends_with("_ACCESS_TOKEN") {
                c.env_remove(&k);
            }
        }
        c.arg("--url")
            .arg(self.api_base())
            .arg("--cacert")
            .arg(self.state_dir().join("ca/root.crt"))
            .arg("--token")
            .arg(&self.token)
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .kill_on_drop(true);
        c
    }

    /// Runs `cli_command(args)` to its end within `limit`.
    pub async fn cli(&self, args: &[&str], limit: Duration) -> std::process::Output {
        output_within(self.cli_command(args), limit).await
    }

    /// The root certificate clients trust, PEM.
    pub fn root_pem(&self) -> String {
        self.app().state.root_pem.clone()
    }

    /// The generation of the current inventory snapshot; unchanged means
    /// nothing was written.
    pub fn generation(&self) -> u64 {
        self.app().state.store.snapshot().generation
    }

    /// A token signed by the appliance for `sub`, valid from now for `ttl`.
    pub fn token_with(&self, sub: &str, ttl: Duration, roles: &[&str]) -> String {
        self.token_at(sub, ttl, roles, now())
    }

    /// A token issued at `issued_at` (Unix seconds), e.g. in the past.
    pub fn token_at(&self, sub: &str, ttl: Duration, roles: &[&str], issued_at: i64) -> String {
        let st = &self.app().state;
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        st.tokens
            .issue(
                sub,
                &st.issuer,
                &st.config.auth.audience,
                ttl,
                &roles,
                issued_at,
            )
            .expect("issue token")
    }

    /// An HTTPS client of the API listener that sends `token` (if any).
    pub fn api_with(&self, token: Option<&str>) -> Http {
        Http::https(
            &self.api_base(),
            &self.root_pem(),
            token.map(str::to_string),
        )
    }

    /// Stops the appliance and waits for its tasks; the state dir stays.
    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown();
            tokio::time::timeout(TIMEOUT, app.wait())
                .await
                .expect("the appliance stops in time");
        }
    }

    /// Stops and starts again on the same state directory (new ports);
    /// clients are rebuilt, the token is re-issued.
    pub async fn restart(&mut self) {
        self.stop().await;
        let app = start_app(self.config.clone()).await;
        let (api, anon, node, token) = clients(&app);
        self.app = Some(app);
        self.api = api;
        self.anon = anon;
        self.node = node;
        self.token = token;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(app) = &self.app {
            app.shutdown();
        }
    }
}

/// Every listener on an ephemeral loopback port, state in `dir`.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config {
        state_dir: dir.to_path_buf(),
        ..Config::default()
    };
    c.api.listen = "127.0.0.1:0".parse().expect("addr");
    c.node.listen = "127.0.0.1:0".parse().expect("addr");
    c.http.shutdown_grace_secs = 5;
    // Test inventories name BMCs that do not exist; tests/console.rs turns
    // consoles on against its own SSH server.
    c.console.enabled = false;
    c
}

async fn start_app(config: Config) -> App {
    tokio::time::timeout(TIMEOUT, App::start(config))
        .await
        .expect("the appliance starts in time")
        .expect("the appliance starts")
}

fn clients(app: &App) -> (Http, Http, Http, String) {
    let st = &app.state;
    let token = st
        .tokens
        .issue(
            "test",
            &st.issuer,
            &st.config.auth.audience,
            Duration::from_secs(3600),
            &[],
            now(),
        )
        .expect("issue token");
    let base = format!("https://{}", app.api_addr.expect("API listener enabled"));
    let api = Http::https(&base, &st.root_pem, Some(token.clone()));
    let anon = Http::https(&base, &st.root_pem, None);
    let node = Http::plain(&format!("http://{}", app.node_addrs[0]));
    (api, anon, node, token)
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A rustls client configuration trusting only `pem`.
pub fn tls_config(pem: &str) -> rustls::ClientConfig {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.expect("PEM certificate")).expect("root");
    }
    assert!(!roots.is_empty(), "no certificate in the root PEM");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A client of one listener: base URL, optional token.
#[derive(Clone)]
pub struct Http {
    /// The underlying client, for requests the helpers do not cover.
    pub raw: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

/// A response, read completely.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// What was asked, for assertion messages.
    pub what: String,
    /// The DER certificate the server presented (HTTPS only).
    pub peer_cert: Option<Vec<u8>>,
}

impl Http {
    pub fn https(base: &str, root_pem: &str, token: Option<String>) -> Http {
        init_crypto();
        let raw = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(root_pem))
            .tls_info(true)
            .no_proxy()
            .timeout(TIMEOUT)
            .build()
            .expect("HTTPS client");
        Http {
            raw,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    pub fn plain(base: &str) -> Http {
        init_crypto();
        let raw = reqwest::Client::builder()
            .no_proxy()
            .timeout(TIMEOUT)
            .build()
            .expect("HTTP client");
        Http {
            raw,
            base: base.trim_end_matches('/').to_string(),
            token: None,
        }
    }

    /// The same listener with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Http {
        Http {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request builder with the token applied.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.raw.request(method, self.url(path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// Sends a prepared request and reads the whole answer.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let req = req.build().expect("request");
        let what = format!("{} {}", req.method(), req.url());
        let resp = self
            .raw
            .execute(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let peer_cert = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .map(<[u8]>::to_vec);
        let body = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e:?}"));
        Resp {
            status,
            headers,
            body,
            what,
            peer_cert,
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let mut r = self.request(method, path);
        if let Some(b) = body {
            r = r.json(b);
        }
        self.send(r).await
    }

    /// Sends `body` as is, labelled as JSON.
    pub async fn call_raw(&self, method: Method, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        let r = self
            .request(method, path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.into());
        self.send(r).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path, None).await
    }

    /// GET that must answer 200 with JSON; returns the JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.ok().json()
    }
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {}", self.what, self.text()))
    }

    /// Asserts the status; returns self for chaining.
    #[track_caller]
    pub fn status(self, want: u16) -> Resp {
        assert_eq!(
            self.status,
            want,
            "{}: wanted {want}, got {}: {}",
            self.what,
            self.status,
            self.text()
        );
        self
    }

    #[track_caller]
    pub fn ok(self) -> Resp {
        self.status(200)
    }

    /// Asserts an RFC 7807 answer with this status and returns its JSON.
    #[track_caller]
    pub fn problem(self, want: u16) -> Value {
        let r = self.status(want);
        assert!(
            r.content_type().starts_with(PROBLEM_JSON),
            "{}: content-type {:?}, want {PROBLEM_JSON}",
            r.what,
            r.content_type()
        );
        let v = r.json();
        assert_eq!(v["status"], want, "{}: {v}", r.what);
        assert!(
            v["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}: no detail: {v}",
            r.what
        );
        // Exactly upstream's members: its black-box tests compare strictly.
        // The v0.2 services add `error` (= detail), which their clients print.
        let v2 = ["/boot-service/", "/metadata-service/"]
            .iter()
            .any(|p| r.what.contains(p));
        let mut keys: Vec<&str> = v
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        if v2 {
            assert_eq!(v["error"], v["detail"], "{}: {v}", r.what);
            keys.retain(|k| *k != "error");
        }
        assert_eq!(
            keys,
            ["detail", "status", "title", "type"],
            "{}: members of {v}",
            r.what
        );
        assert!(v["title"].is_string(), "{}: no title: {v}", r.what);
        v
    }
}

/// Polls `f` until it returns `Some`, for at most [`TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A small fixed inventory: four nodes (NIDs 1-4) and their BMC types mixed
/// in, posted with `Force`.
pub fn four_nodes() -> Value {
    serde_json::json!({
        "Components": [
            {"ID": "x1000c0s0b0n0", "State": "Ready", "Role": "Compute", "NID": 1},
            {"ID": "x1000c0s1b0n0", "State": "Ready", "Role": "Compute", "NID": 2},
            {"ID": "x1000c0s2b0n0", "State": "Off", "Role": "Service", "SubRole": "Worker", "NID": 3},
            {"ID": "x1000c0s3b0n0", "State": "On", "Role": "Compute", "NID": 4, "Enabled": false},
            {"ID": "x1000c0s0b0", "State": "Ready"}
        ],
        "Force": true
    })
}

/// A command's output, failing the test if it runs past `limit`.
pub async fn output_within(
    mut c: tokio::process::Command,
    limit: Duration,
) -> std::process::Output {
    tokio::time::timeout(limit, c.output())
        .await
        .expect("CLI in time")
        .expect("CLI runs")
}
