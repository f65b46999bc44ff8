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
    cleaned(Command::new(BIN))
}

fn cleaned(mut c: Command) -> Command {
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
        Self::start_cmd(setup, openchami())
    }

    /// `serve` with at most `nofile` open files (soft and hard).
    fn start_with_nofile(setup: &Setup, nofile: u64) -> Server {
        let mut c = cleaned(Command::new("prlimit"));
        c.arg(format!("--nofile={nofile}:{nofile}")).arg(BIN);
        Self::start_cmd(setup, c)
    }

    fn start_cmd(setup: &Setup, mut cmd: Command) -> Server {
        let mut child = cmd
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
    let out = openchami()
        .arg("--config")
        .arg(setup.config())
        .args(["token", "issue", "--ttl", "1h"])
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
}

/// Raises this process's soft limit on open files to the hard limit.
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Opens up to `n` connections to `to` from the loopback addresses
/// `from`, each sending the start of a request head and nothing more.
/// Bounded in time: stops at `within`.
async fn half_open(
    to: SocketAddr,
    from: &[std::net::IpAddr],
    n: usize,
    within: Duration,
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let deadline = tokio::time::Instant::now() + within;
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let sock = match from[i % from.len()] {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .expect("socket");
        sock.bind(SocketAddr::new(from[i % from.len()], 0))
            .expect("bind a loopback address");
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_millis(500), sock.connect(to)).await
        else {
            continue;
        };
        let _ = s
            .write_all(b"GET /boot/v1/bootscript?mac=02:00:00:00:00:01 HTTP/1.1\r\nHost: x\r\n")
            .await;
        held.push(s);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_the_node_listener_leaves_the_api_usable() {
    const FLOOD: usize = 5000;
    assert!(
        raise_fd_limit() >= FLOOD as u64 + 512,
        "this test needs {} open files",
        FLOOD + 512
    );
    let setup = Setup::new();
    // Fewer descriptors than the flood has connections: without budgets,
    // the node listener takes them all and the API cannot accept.
    let server = Server::start_with_nofile(&setup, 4096);
    let token = issue_token(&setup);
    let api = server.api_client(&setup, Some(token));
    // Spread over 50 addresses, so the listener's cap (not only the
    // per-address share) is what holds.
    let from: Vec<std::net::IpAddr> = (0..50)
        .map(|i| std::net::IpAddr::from([127, 0, 2, i + 1]))
        .collect();
    let held = half_open(server.node, &from, FLOOD, Duration::from_secs(60)).await;
    assert!(held.len() > 4096, "only {} connections opened", held.len());

    let within = Duration::from_secs(1);
    let get = tokio::time::timeout(within, api.get("/hsm/v2/State/Components")).await;
    assert!(
        get.is_ok_and(|r| r.status == 200),
        "the API did not answer a GET within {within:?} during the flood; log:\n{}",
        server.log()
    );
    let write = tokio::time::timeout(
        within,
        api.post(
            "/hsm/v2/State/Components",
            &json!({"Components": [{"ID": "x3000c0s1b0n0", "State": "Ready", "NID": 7}]}),
        ),
    )
    .await;
    assert!(
        write.is_ok_and(|r| r.status == 204),
        "the API did not take a write within {within:?} during the flood"
    );
    let metrics = api.get("/metrics").await.ok().text();
    assert!(
        metrics.contains(
            "openchami_http_connections_shed_total{listener=\"node\",reason=\"listener_full\"}"
        ),
        "{metrics}"
    );
    drop(held);
    // From one address, a flood gets its share of the node listener and no
    // more: other nodes are still served.
    let one = [std::net::IpAddr::from([127, 0, 3, 1])];
    let held = half_open(server.node, &one, 1000, Duration::from_secs(30)).await;
    let node = server.node_client();
    let r = tokio::time::timeout(within * 5, node.get("/healthz")).await;
    assert!(
        r.is_ok_and(|r| r.status == 200),
        "the node listener refused another address during a one-address flood"
    );
    let metrics = api.get("/metrics").await.ok().text();
    assert!(metrics.contains("reason=\"peer_share\""), "{metrics}");
    drop(held);
    assert!(
        !server.log().contains("Too many open files"),
        "{}",
        server.log()
    );
}
