//! Black-box tests of the built binary: start-up, the log lines operators
//! and scripts read, signals, durability across `kill -9`, config checking.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Http;
use serde_json::json;

/// Start-up of a debug build on a busy machine can be slow; be generous.
const STARTUP: Duration = Duration::from_secs(90);
const EXIT: Duration = Duration::from_secs(60);

const BIN: &str = env!("CARGO_BIN_EXE_openchami");

/// A command for the binary with the caller's environment cleaned of
/// anything that would change its behaviour.
fn openchami() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("OPENCHAMI_") || k.ends_with("_ACCESS_TOKEN") || k == "NOTIFY_SOCKET" {
            c.env_remove(&k);
        }
    }
    c.env("RUST_LOG", "info");
    c
}

/// A test directory with a config file using ports 0 and a state dir in it.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("openchami-bin-")
            .tempdir()
            .expect("temp dir");
        let s = Setup { dir };
        std::fs::write(
            s.config(),
            format!(
                "state_dir = {:?}\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n[node]\nlisten = \"127.0.0.1:0\"\n\n[http]\nshutdown_grace_secs = 5\n",
                s.state_dir().display().to_string()
            ),
        )
        .expect("write config");
        s
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// A running `openchami serve`; killed on drop, whatever happened.
struct Server {
    child: Child,
    api: SocketAddr,
    node: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_addr(line: &str, what: &str) -> Option<SocketAddr> {
    let marker = format!("listening for {what} on ");
    let at = line.find(&marker)?;
    line[at + marker.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Server {
    fn start(setup: &Setup) -> Server {
        let mut child = openchami()
            .arg("serve")
            .arg("--config")
            .arg(setup.config())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openchami serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let sink = log.clone();
        // Keep draining stderr for the life of the process, so the server
        // never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("log lock").push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            api: SocketAddr::from(([0, 0, 0, 0], 0)),
            node: SocketAddr::from(([0, 0, 0, 0], 0)),
            log,
        };
        let deadline = Instant::now() + STARTUP;
        let (mut api, mut node) = (None, None);
        while api.is_none() || node.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    api = api.or_else(|| listening_addr(&line, "api (https)"));
                    node = node.or_else(|| listening_addr(&line, "node (http)"));
                }
                Err(_) => {
                    let status = server.child.try_wait().ok().flatten();
                    panic!(
                        "no listening lines within {STARTUP:?} (exit: {status:?}); log:\n{}",
                        server.log()
                    );
                }
            }
        }
        server.api = api.expect("api address");
        server.node = node.expect("node address");
        server
    }

    fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit, at most [`EXIT`].
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {EXIT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn api_client(&self, setup: &Setup, token: Option<String>) -> Http {
        let root = std::fs::read_to_string(setup.state_dir().join("ca/root.crt"))
            .expect("root.crt after start-up");
        Http::https(&format!("https://{}", self.api), &root, token)
    }

    fn node_client(&self) -> Http {
        Http::plain(&format!("http://{}", self.node))
    }
}

/// `openchami token issue` with the signing key in the state dir.
fn issue_token(setup: &Setup) -> String {
    issue_token_with(setup, &[])
}

fn issue_token_with(setup: &Setup, extra: &[&str]) -> String {
    let out = openchami()
        .arg("--config")
        .arg(setup.config())
        .args(["token", "issue", "--ttl", "1h"])
        .args(extra)
        .output()
        .expect("run token issue");
    assert!(
        out.status.success(),
        "token issue: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    token
}

#[tokio::test]
async fn serve_answers_and_stops_cleanly_on_sigterm() {
    let setup = Setup::new();
    let mut server = Server::start(&setup);
    assert!(server.api.ip().is_loopback() && server.api.port() != 0);
    assert!(server.node.ip().is_loopback() && server.node.port() != 0);
    assert_ne!(server.api, server.node);

    let anon = server.api_client(&setup, None);
    assert_eq!(anon.get("/healthz").await.ok().text(), "ok");
    assert_eq!(
        anon.get_json("/hsm/v2/service/ready").await,
        json!({"code": 0, "message": "HSM is healthy"})
    );
    assert_eq!(server.node_client().get("/healthz").await.ok().text(), "ok");
    // The first start created the CA and said where.
    assert!(
        server.log().contains("created the appliance CA"),
        "{}",
        server.log()
    );
    let token = issue_token(&setup);
    server
        .api_client(&setup, Some(token))
        .get_json("/hsm/v2/groups")
        .await;
    // A bootstrap token from the CLI, exchanged as TokenSmith's clients do.
    let bootstrap = issue_token_with(&setup, &["--bootstrap", "--sub", "svc", "--scope", "read"]);
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", bootstrap.as_str()),
            (
                "subject_token_type",
                "urn:openchami:params:oauth:token-type:bootstrap-token",
            ),
        ])
        .finish();
    let r = anon
        .send(
            anon.raw
                .post(anon.url("/oauth/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
        .ok()
        .json();
    assert_eq!(r["scope"], "read", "{r}");
    let access = r["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    server
        .api_client(&setup, Some(access))
        .get_json("/hsm/v2/groups")
        .await;

    server.signal("TERM");
    let status = server.wait_exit();
    assert!(
        status.success(),
        "exit after SIGTERM: {status:?}; log:\n{}",
        server.log()
    );
    // The log of the stop, after the thread has read the rest.
    let deadline = Instant::now() + EXIT;
    while !server.log().contains("stopped") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.log().contains("stopped"), "{}", server.log());
}

#[tokio::test]
async fn acknowledged_write_survives_kill_9() {
    let setup = Setup::new();
    let mut server = Server::start(&setup);
    let token = issue_token(&setup);
    let api = server.api_client(&setup, Some(token.clone()));
    api.post(
        "/hsm/v2/State/Components",
        &json!({"Components": [{"ID": "x3000c0s1b0n0", "State": "Ready", "NID": 42}]}),
    )
    .await
    .status(204);
    api.post(
        "/hsm/v2/groups",
        &json!({"label": "survivors", "members": {"ids": ["x3000c0s1b0n0"]}}),
    )
    .await
    .status(201);

    server.signal("KILL");
    let status = server.wait_exit();
    assert!(!status.success(), "killed: {status:?}");
    drop(server);

    let server = Server::start(&setup);
    let api = server.api_client(&setup, Some(token));
    let c = api.get_json("/hsm/v2/State/Components/x3000c0s1b0n0").await;
    assert_eq!(c["NID"], 42, "{c}");
    assert_eq!(
        api.get_json("/hsm/v2/groups/survivors/members").await,
        json!({"ids": ["x3000c0s1b0n0"]})
    );
    // Not a new CA either.
    assert!(
        !server.log().contains("created the appliance CA"),
        "{}",
        server.log()
    );
}

fn check_config(config: &Path) -> std::process::Output {
    openchami()
        .arg("serve")
        .arg("--check-config")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run serve --check-config")
}

#[test]
fn check_config_names_an_unknown_key() {
    let setup = Setup::new();
    let out = check_config(&setup.config());
    assert!(
        out.status.success(),
        "valid file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
    assert!(
        !setup.state_dir().exists(),
        "checking the configuration creates no state"
    );

    let bad = setup.dir.path().join("bad.toml");
    std::fs::write(&bad, "[dhcp]\nenable = true\n").unwrap();
    let out = check_config(&bad);
    assert!(!out.status.success(), "unknown key accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("enable"), "stderr names the key: {stderr}");
    assert!(
        stderr.contains("bad.toml"),
        "stderr names the file: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let out = check_config(&setup.dir.path().join("missing.toml"));
    assert!(!out.status.success(), "a missing --config file is an error");

    // Valid keys whose combination cannot boot a node: each named.
    let minimal = include_str!("../examples/config-dhcp.toml");
    let combo = setup.dir.path().join("combo.toml");
    std::fs::write(
        &combo,
        format!("{minimal}\n[node]\nadvertise = \"http://head:27778\"\n[tftp]\nenabled = false\n"),
    )
    .unwrap();
    let out = check_config(&combo);
    assert!(!out.status.success(), "unbootable combination accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["tftp.enabled", "node.advertise"] {
        assert!(stderr.contains(key), "names {key}: {stderr}");
    }
}
