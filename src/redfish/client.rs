//! Connections, sessions and requests to one BMC.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};

use super::error::{Error, ErrorKind};
use super::json::{self, get, str_of};

/// How the client treats every BMC it talks to.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// PEM roots BMC certificates must chain to; `None` accepts any
    /// certificate (BMCs ship self-signed ones), as magellan does.
    pub ca_pem: Option<String>,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Extra attempts for a request that failed transiently.
    pub retries: u32,
    /// Requests in flight per BMC.
    pub max_in_flight: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ca_pem: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retries: 2,
            max_in_flight: 4,
        }
    }
}

/// The HTTP machinery every [`Bmc`] shares: one connection pool (keyed by
/// host and port, so each BMC still gets its own connections) and one TLS
/// configuration. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    pub(super) http: reqwest::Client,
    opts: Arc<ClientOptions>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub fn new(opts: ClientOptions) -> Result<Transport, String> {
        let tls = tls_config(opts.ca_pem.as_deref())?;
        // Host names resolve through hickory (see cli/client.rs: the binary
        // is static and must not load glibc's NSS modules). Proxies from the
        // environment are ignored: BMCs sit on a management network.
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(opts.request_timeout)
            .connect_timeout(opts.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(opts.max_in_flight)
            .no_proxy()
            .hickory_dns(true)
            .build()
            .map_err(|e| format!("cannot build the Redfish HTTP client: {e}"))?;
        Ok(Transport {
            http,
            opts: Arc::new(opts),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }
}

fn tls_config(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut cfg = tls_config_for(ca_pem)?;
    // rustls keeps 256 sessions by default; a cluster has thousands of BMCs,
    // and a resumed session saves the certificate exchange on reconnects.
    cfg.resumption = rustls::client::Resumption::in_memory_sessions(16_384);
    Ok(cfg)
}

fn tls_config_for(ca_pem: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    match ca_pem {
        None => Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()),
        Some(pem) => {
            use rustls_pki_types::CertificateDer;
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("BMC CA file: {e}"))?;
                roots.add(cert).map_err(|e| format!("BMC CA file: {e}"))?;
            }
            if roots.is_empty() {
                return Err("BMC CA file holds no certificate".into());
            }
            Ok(builder.with_root_certificates(roots).with_no_client_auth())
        }
    }
}

/// Accepts any certificate chain, still checking that the server holds the
/// key of the certificate it presents.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A user name and password for a BMC. Debug output never shows the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// `https://<addr>`: an IPv6 literal gets brackets; `host:port` is kept.
pub fn base_url(addr: &str) -> String {
    let a = addr.trim().trim_end_matches('/');
    if a.contains("://") {
        a.to_string()
    } else if a.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("https://[{a}]")
    } else {
        format!("https://{a}")
    }
}

#[derive(Debug, Clone)]
enum Auth {
    /// Not logged in yet.
    None,
    /// No SessionService: every request carries the credentials.
    Basic,
    Session {
        token: String,
        location: String,
    },
}

/// One BMC: its address, credentials, session and request limit.
///
/// Call [`Bmc::login`] first and [`Bmc::logout`] when done; a `Bmc` dropped
/// with a session open deletes it in the background.
pub struct Bmc {
    addr: String,
    base: String,
    http: reqwest::Client,
    opts: Arc<ClientOptions>,
    creds: Credentials,
    permits: Semaphore,
    auth: Mutex<Auth>,
    /// The service root as read at login, so a crawl need not read it again.
    root: Mutex<Option<Value>>,
}

impl fmt::Debug for Bmc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bmc")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The service root's facts a caller may want.
pub const ROOT: &str = "/redfish/v1/";
const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

impl Bmc {
    pub fn new(transport: &Transport, addr: &str, creds: Credentials) -> Bmc {
        Bmc {
            addr: addr.to_string(),
            base: base_url(addr),
            http: transport.http.clone(),
            opts: transport.opts.clone(),
            creds,
            permits: Semaphore::new(transport.opts.max_in_flight.max(1)),
            auth: Mutex::new(Auth::None),
            root: Mutex::new(None),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The absolute URL of a Redfish path on this BMC.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Opens a session (POST to the SessionService) or, where the BMC has
    /// none, settles for Basic authentication. Refused credentials are an
    /// [`ErrorKind::Auth`] error; nothing is retried then.
    pub async fn login(&self) -> Result<(), Error> {
        let (root, _) = self.request(Method::GET, ROOT, None, false).await?;
        *self.root.lock().await = Some(root.clone());
        let sessions = {
            let from_links = json::link(get(&root, "Links").unwrap_or(&Value::Null), "Sessions");
            if !from_links.is_empty() {
                from_links.to_string()
            } else if get(&root, "SessionService").is_some() {
                SESSIONS.to_string()
            } else {
                String::new()
            }
        };
        let mut auth = self.auth.lock().await;
        if sessions.is_empty() {
            // Refused credentials show on the first authenticated request.
            *auth = Auth::Basic;
            return Ok(());
        }
        let body = json!({"UserName": self.creds.username, "Password": self.creds.password});
        let what = format!("login (POST {sessions})");
        let _permit = self.permits.acquire().await;
        let resp = self
            .http
            .post(self.url(&sessions))
            .json(&body)
            .send()
            .await
            .map_err(|e| self.transport_error(&what, &e))?;
        let status = resp.status();
        if matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
        ) {
            *auth = Auth::Basic;
            return Ok(());
        }
        let token = resp
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_json(resp).await;
        if !status.is_success() {
            return Err(Error::new(&self.addr, what, status_error(status, &body)));
        }
        let token = token.ok_or_else(|| {
            Error::new(
                &self.addr,
                what.clone(),
                ErrorKind::Decode("no X-Auth-Token in the answer".into()),
            )
        })?;
        let location = location
            .map(|l| path_of(&l))
            .or_else(|| {
                let id = str_of(&body, "@odata.id");
                (!id.is_empty()).then(|| id.to_string())
            })
            .unwrap_or_default();
        *auth = Auth::Session { token, location };
        Ok(())
    }

    /// Deletes the session, if one is open. Errors are logged: a session
    /// that cannot be deleted now times out on the BMC.
    pub async fn logout(&self) {
        let old = std::mem::replace(&mut *self.auth.lock().await, Auth::None);
        if let Auth::Session { token, location } = old {
            if location.is_empty() {
                return;
            }
            let r = self
                .http
                .delete(self.url(&location))
                .header("X-Auth-Token", token)
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => {
                    tracing::warn!(bmc = %self.addr, status = %resp.status(), "session delete refused")
                }
                Err(e) => tracing::warn!(bmc = %self.addr, error = %e, "session delete failed"),
            }
        }
    }

    /// The service root read by the last [`Bmc::login`].
    pub async fn cached_root(&self) -> Option<Value> {
        self.root.lock().await.clone()
    }

    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.request(Method::GET, path, None, true)
            .await
            .map(|r| r.0)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.request(Method::POST, path, Some(body), true)
            .await
            .map(|r| r.0)
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.request(Method::PATCH, path, Some(body), true)
            .await
            .map(|r| r.0)
    }

    /// A POST whose answer may name a task monitor: the body and the path
    /// of its `Location` header. Sent once: it starts an action the BMC may
    /// have begun before it failed to answer (a firmware update), which a
    /// retry could start a second time.
    pub async fn post_located_once(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<(Value, Option<String>), Error> {
        self.once(Method::POST, path, Some(body), true).await
    }

    /// A `multipart/form-data` POST (Redfish's `MultipartHttpPushUri`):
    /// `UpdateParameters` as JSON and `UpdateFile` as the image. Not
    /// retried: the image may be large and the BMC may have started.
    pub async fn post_multipart(
        &self,
        path: &str,
        parameters: &Value,
        file_name: &str,
        image: bytes::Bytes,
    ) -> Result<(Value, Option<String>), Error> {
        let what = format!("POST {path} (multipart)");
        let boundary = format!("openchami-{:016x}", rand_suffix());
        let mut body = Vec::with_capacity(image.len() + 512);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"UpdateParameters\"\r\n\
                 Content-Type: application/json\r\n\r\n{parameters}\r\n--{boundary}\r\n\
                 Content-Disposition: form-data; name=\"UpdateFile\"; filename=\"{}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n",
                file_name.replace(['"', '\r', '\n'], "_")
            )
            .as_bytes(),
        );
        body.extend_from_slice(&image);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let auth = self.auth.lock().await.clone();
        let mut req = self.http.post(self.url(path)).header(
            reqwest::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        );
        req = match auth {
            Auth::Session { token, .. } => req.header("X-Auth-Token", token),
            _ => req.basic_auth(&self.creds.username, Some(&self.creds.password)),
        };
        let _permit = self.permits.acquire().await;
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(&what, &e))?;
        let status = resp.status();
        let location = location_of(&resp);
        let body = read_json(resp).await;
        if status.is_success() {
            Ok((body, location))
        } else {
            Err(Error::new(&self.addr, what, status_error(status, &body)))
        }
    }

    /// A request with retries for transient failures and one new session
    /// when the current one has expired.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        authenticated: bool,
    ) -> Result<(Value, Option<String>), Error> {
        let mut relogged = false;
        let mut attempt = 0;
        loop {
            let r = self.once(method.clone(), path, body, authenticated).await;
            match r {
                Err(e) if e.retryable() && attempt < self.opts.retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250 * (1 << attempt))).await;
                }
                Err(e) if e.is_auth() && authenticated && !relogged && self.has_session().await => {
                    relogged = true;
                    *self.auth.lock().await = Auth::None;
                    Box::pin(self.login()).await?;
                }
                other => return other,
            }
        }
    }

    async fn has_session(&self) -> bool {
        matches!(*self.auth.lock().await, Auth::Session { .. })
    }

    async fn once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        authenticated: bool,
    ) -> Result<(Value, Option<String>), Error> {
        let what = format!("{method} {path}");
        let auth = if authenticated {
            self.auth.lock().await.clone()
        } else {
            Auth::None
        };
        let mut req = self.http.request(method, self.url(path));
        match auth {
            Auth::Basic => {
                req = req.basic_auth(&self.creds.username, Some(&self.creds.password));
            }
            Auth::Session { token, .. } => req = req.header("X-Auth-Token", token),
            Auth::None if authenticated => {
                req = req.basic_auth(&self.creds.username, Some(&self.creds.password));
            }
            Auth::None => {}
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let _permit = self.permits.acquire().await;
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(&what, &e))?;
        let status = resp.status();
        let location = location_of(&resp);
        let body = read_json(resp).await;
        if status.is_success() {
            Ok((body, location))
        } else {
            Err(Error::new(&self.addr, what, status_error(status, &body)))
        }
    }

    fn transport_error(&self, what: &str, e: &reqwest::Error) -> Error {
        let kind = if e.is_timeout() {
            ErrorKind::Timeout(self.opts.request_timeout.as_secs())
        } else {
            ErrorKind::Connect(super::root_cause(e))
        };
        Error::new(&self.addr, what, kind)
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        let auth = std::mem::replace(self.auth.get_mut(), Auth::None);
        if let Auth::Session { token, location } = auth
            && !location.is_empty()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let req = self
                .http
                .delete(self.url(&location))
                .header("X-Auth-Token", token);
            let addr = self.addr.clone();
            rt.spawn(async move {
                if let Err(e) = req.send().await {
                    tracing::warn!(bmc = %addr, error = %e, "session delete failed");
                }
            });
        }
    }
}

/// The path of a `Location` header.
fn location_of(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(path_of)
        .filter(|p| !p.is_empty())
}

/// A boundary suffix that differs between calls.
fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The body as JSON; empty or unreadable bodies are `Null`.
async fn read_json(resp: reqwest::Response) -> Value {
    match resp.bytes().await {
        Ok(b) if !b.is_empty() => serde_json::from_slice(&b).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// The Redfish error message of a body, if it has one.
fn redfish_message(body: &Value) -> String {
    let err = get(body, "error").unwrap_or(&Value::Null);
    let extended = json::at(err, &["@Message.ExtendedInfo"])
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .map(|m| str_of(m, "Message"))
        .unwrap_or("");
    let msg = if extended.is_empty() {
        str_of(err, "message")
    } else {
        extended
    };
    msg.chars().take(200).collect()
}

fn status_error(status: StatusCode, body: &Value) -> ErrorKind {
    let msg = redfish_message(body);
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Auth(status.as_u16(), msg),
        s => ErrorKind::Status(s.as_u16(), msg),
    }
}

/// The path of an absolute or relative URL.
fn path_of(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map(|k| rest[k..].to_string())
            .unwrap_or_default(),
        None => url.to_string(),
    }
}

/// Why an address is not a BMC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Nothing accepted a TCP connection.
    #[error("port closed: {0}")]
    Closed(String),
    /// Something answers, but not as a Redfish service.
    #[error("not a Redfish service: {0}")]
    NotRedfish(String),
}

/// What an unauthenticated look at a service root tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootInfo {
    pub redfish_version: String,
    pub uuid: String,
    pub vendor: String,
}

/// Is there a BMC at `addr`? A TCP connect (bounded by the connect
/// timeout), then an unauthenticated `GET /redfish/v1/` that must answer
/// 200 with a JSON service root.
pub async fn probe(transport: &Transport, addr: SocketAddr) -> Result<RootInfo, ProbeError> {
    let connect = transport.opts.connect_timeout;
    match tokio::time::timeout(connect, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(ProbeError::Closed(e.to_string())),
        Err(_) => {
            return Err(ProbeError::Closed(format!(
                "no answer within {} s",
                connect.as_secs()
            )));
        }
    }
    let url = format!("{}{ROOT}", base_url(&addr.to_string()));
    let resp = transport
        .http
        .get(url)
        .timeout(transport.opts.request_timeout.min(Duration::from_secs(10)))
        .send()
        .await
        .map_err(|e| ProbeError::NotRedfish(super::root_cause(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(ProbeError::NotRedfish(format!(
            "GET {ROOT} answered {status}"
        )));
    }
    let root = read_json(resp).await;
    let is_root = str_of(&root, "@odata.type").contains("ServiceRoot")
        || !str_of(&root, "RedfishVersion").is_empty();
    if !is_root {
        return Err(ProbeError::NotRedfish(format!(
            "GET {ROOT} is not a Redfish service root"
        )));
    }
    Ok(RootInfo {
        redfish_version: str_of(&root, "RedfishVersion").to_string(),
        uuid: str_of(&root, "UUID").to_string(),
        vendor: str_of(&root, "Vendor").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(base_url("10.0.0.1"), "https://10.0.0.1");
        assert_eq!(base_url("10.0.0.1:8443"), "https://10.0.0.1:8443");
        assert_eq!(base_url("::1"), "https://[::1]");
        assert_eq!(base_url("[::1]:8443"), "https://[::1]:8443");
        assert_eq!(base_url("bmc.example"), "https://bmc.example");
        assert_eq!(path_of("https://a:1/redfish/v1/S/1"), "/redfish/v1/S/1");
        assert_eq!(path_of("/redfish/v1/S/1"), "/redfish/v1/S/1");
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let c = Credentials {
            username: "root".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn redfish_errors_are_read() {
        let body = serde_json::json!({"error": {"code": "x", "message": "general",
            "@Message.ExtendedInfo": [{"Message": "ResetType Foo is not supported"}]}});
        assert_eq!(redfish_message(&body), "ResetType Foo is not supported");
        assert_eq!(
            status_error(StatusCode::UNAUTHORIZED, &Value::Null),
            ErrorKind::Auth(401, String::new())
        );
    }
}
