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
    command(BIN)
}

/// A command for `program` with the same cleaned environment.
fn command(program: &str) -> Command {
    cleaned(Command::new(program))
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
        let mut cmd = openchami();
        cmd.arg("serve").arg("--config").arg(setup.config());
        Server::spawn(cmd)
    }

    /// `serve` with at most `nofile` open files (soft and hard).
    fn start_with_nofile(setup: &Setup, nofile: u64) -> Server {
        let mut c = command("prlimit");
        c.arg(format!("--nofile={nofile}:{nofile}"))
            .arg(BIN)
            .arg("serve")
            .arg("--config")
            .arg(setup.config());
        Server::spawn(c)
    }

    /// Starts `cmd` (a `serve`, however wrapped) and reads its listening
    /// addresses from its log.
    fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd
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
    let r = server
        .api_client(&setup, Some(token))
        .get("/hsm/v2/groups")
        .await
        .ok();
    // One access line per request, in the span of its ID.
    let id = r.header("x-request-id").expect("a request ID").to_string();
    let deadline = Instant::now() + EXIT;
    let line = loop {
        let log = server.log();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains(&format!("http{{id={id}}}")))
        {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no access line for {id}:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for want in [
        "INFO",
        "listener=\"api\"",
        "method=GET",
        "path=\"/hsm/v2/groups\"",
        "status=200",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
    // A bootstrap token from the CLI, exchanged and refreshed with the CLI
    // as TokenSmith's clients do.
    let bootstrap = issue_token_with(&setup, &["--bootstrap", "--sub", "svc", "--scope", "read"]);
    let url = format!("https://{}", server.api);
    let grant = |args: &[&str], stdin: &str, env: Option<(&str, &str)>| {
        use std::io::Write;
        let mut cmd = openchami();
        cmd.arg("--config")
            .arg(setup.config())
            .args(["--url", url.as_str(), "token"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run token");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("token output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = grant(&["exchange", "--bootstrap", "-"], &bootstrap, None);
    assert!(ok, "token exchange: {stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).expect("JSON reply");
    assert_eq!(r["scope"], "read", "{r}");
    let first = r["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    let (ok, _, stderr) = grant(&["exchange", "--bootstrap", "-"], &bootstrap, None);
    assert!(!ok && stderr.contains("invalid_grant"), "{stderr}");
    let (ok, stdout, stderr) = grant(
        &["refresh"],
        "",
        Some(("OPENCHAMI_REFRESH_TOKEN", first.as_str())),
    );
    assert!(ok, "token refresh: {stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).expect("JSON reply");
    assert_ne!(r["refresh_token"], first.as_str());
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

/// Runs `cmd` for at most `within`: its exit status (None if it was still
/// running and has been killed) and its stderr.
fn run_bounded(mut cmd: Command, within: Duration) -> (Option<ExitStatus>, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, reader.join().unwrap_or_default())
}

fn serve_command(setup: &Setup) -> Command {
    let mut c = openchami();
    c.arg("serve").arg("--config").arg(setup.config());
    c
}

/// `serve` inside a private mount namespace, after `mount_script` (sh, with
/// `$D` the state directory) has run: a read-only or tiny file system
/// without touching the host's mounts. None unless root with unshare.
fn serve_in_mount_namespace(setup: &Setup, mount_script: &str) -> Option<Command> {
    if !rustix::process::geteuid().is_root()
        || Command::new("unshare").arg("--help").output().is_err()
    {
        return None;
    }
    let mut c = command("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("{mount_script} && exec \"$@\""))
        .arg("sh")
        .arg(BIN)
        .arg("serve")
        .arg("--config")
        .arg(setup.config())
        .env("D", setup.state_dir());
    Some(c)
}

/// A state directory that has served once: CA, keys and a database with a
/// row in it, and no server running.
async fn served_once() -> Setup {
    let setup = Setup::new();
    let mut server = Server::start(&setup);
    let api = server.api_client(&setup, Some(issue_token(&setup)));
    api.post(
        "/hsm/v2/State/Components",
        &json!({"Components": [{"ID": "x3000c0s1b0n0", "State": "Ready", "NID": 1}]}),
    )
    .await
    .status(204);
    server.signal("TERM");
    assert!(server.wait_exit().success(), "{}", server.log());
    setup
}

#[tokio::test]
async fn a_second_server_on_the_same_state_dir_is_refused() {
    let setup = Setup::new();
    let server = Server::start(&setup);
    let (status, stderr) = run_bounded(serve_command(&setup), STARTUP);
    let status = status.unwrap_or_else(|| panic!("the second server kept running: {stderr}"));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("PID {}", server.pid())) && stderr.contains("in use"),
        "names the holder: {stderr}"
    );
    // The first one is untouched.
    server.api_client(&setup, None).get("/readyz").await.ok();
}

/// State an operator can break between two starts; each refused at start
/// with a message naming the file and the fix.
#[tokio::test]
async fn a_broken_state_dir_is_refused_at_start() {
    type Break = fn(&Setup) -> Option<Command>;
    let cases: &[(&str, Break, &[&str])] = &[
        (
            "damaged database",
            |s| {
                use std::io::{Seek, SeekFrom, Write};
                let db = s.state_dir().join("openchami.db");
                // Everything into the main file first, so the damage is
                // not hidden behind newer copies of the pages in the WAL.
                rusqlite::Connection::open(&db)
                    .and_then(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)"))
                    .expect("checkpoint");
                let len = std::fs::metadata(&db).expect("db").len();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&db)
                    .expect("open db");
                f.seek(SeekFrom::Start(4096)).expect("seek");
                f.write_all(&vec![0xa5; (len - 4096) as usize])
                    .expect("overwrite pages");
                Some(serve_command(s))
            },
            &["openchami.db", "damaged", "backup"],
        ),
        (
            "private key readable by others",
            |s| {
                use std::os::unix::fs::PermissionsExt;
                let key = s.state_dir().join("ca/root.key");
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))
                    .expect("chmod");
                Some(serve_command(s))
            },
            &["root.key", "chmod 600"],
        ),
        (
            "read-only state directory",
            |s| {
                serve_in_mount_namespace(
                    s,
                    r#"mount --bind "$D" "$D" && mount -o remount,bind,ro "$D""#,
                )
            },
            &["not writable", "read-write"],
        ),
        (
            "read-only database file",
            |s| {
                serve_in_mount_namespace(
                    s,
                    r#"mount --bind "$D/openchami.db" "$D/openchami.db" && mount -o remount,bind,ro "$D/openchami.db""#,
                )
            },
            &["openchami.db", "read-only"],
        ),
    ];
    for (what, break_it, want) in cases {
        let setup = served_once().await;
        let Some(cmd) = break_it(&setup) else {
            eprintln!("{what}: skipped (needs root and unshare)");
            continue;
        };
        let (status, stderr) = run_bounded(cmd, STARTUP);
        let status = status.unwrap_or_else(|| panic!("{what}: started anyway: {stderr}"));
        assert!(!status.success(), "{what}: {stderr}");
        for w in *want {
            assert!(stderr.contains(w), "{what}: no {w:?} in: {stderr}");
        }
    }
}

/// A write the disk has no room for is 507, changes nothing, and the
/// appliance goes on serving reads and (once there is room) writes.
#[tokio::test]
async fn a_full_disk_answers_507() {
    let setup = Setup::new();
    std::fs::create_dir_all(setup.state_dir()).expect("state dir");
    let Some(cmd) = serve_in_mount_namespace(&setup, r#"mount -t tmpfs -o size=2m tmpfs "$D""#)
    else {
        eprintln!("skipped: needs root and unshare");
        return;
    };
    let server = Server::spawn(cmd);
    // The state lives on the namespace's tmpfs; reach it through the
    // process's view of the file system.
    let inside = PathBuf::from(format!("/proc/{}/root", server.pid()))
        .join(setup.state_dir().strip_prefix("/").expect("absolute"));
    let root = std::fs::read_to_string(inside.join("ca/root.crt")).expect("root.crt");
    let out = openchami()
        .arg("--config")
        .arg(setup.config())
        .arg("--state-dir")
        .arg(&inside)
        .args(["token", "issue", "--ttl", "1h"])
        .output()
        .expect("token issue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let api = Http::https(&format!("https://{}", server.api), &root, Some(token));
    let big = "x".repeat(64 * 1024);
    let mut full = None;
    for i in 0..200 {
        let r = api
            .post(
                "/hsm/v2/groups",
                &json!({"label": format!("g{i}"), "description": big}),
            )
            .await;
        if r.status != 201 {
            full = Some((i, r));
            break;
        }
    }
    let (i, r) = full.expect("the 2 MiB file system filled up");
    let p = r.problem(507);
    assert!(p["detail"].as_str().unwrap_or("").contains("full"), "{p}");
    assert!(i > 0, "the first write already failed");
    api.get(&format!("/hsm/v2/groups/g{}", i - 1)).await.ok();
    api.get(&format!("/hsm/v2/groups/g{i}")).await.problem(404);
    api.get("/healthz").await.ok();
}

/// Where stderr goes when it stops taking writes.
#[derive(Debug, Clone, Copy)]
enum BrokenStderr {
    /// A pipe whose reader has gone away (EPIPE).
    ClosedPipe,
    /// A disk with no space left (ENOSPC).
    DevFull,
}

/// Logging into a broken stderr costs log lines, never the writer: a store
/// error logged into it leaves later writes working.
#[tokio::test]
async fn a_broken_stderr_never_stops_writes() {
    for sink in [BrokenStderr::ClosedPipe, BrokenStderr::DevFull] {
        let setup = Setup::new();
        let (mut child, api_addr) = match sink {
            BrokenStderr::ClosedPipe => {
                let mut child = serve_command(&setup)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn");
                let stderr = child.stderr.take().expect("stderr");
                // Read until the appliance is ready, then close the pipe.
                let reader = std::thread::spawn(move || {
                    let mut api = None;
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        api = api.or_else(|| listening_addr(&line, "api (https)"));
                        if line.contains("appliance ready") {
                            break;
                        }
                    }
                    api
                });
                let api = reader
                    .join()
                    .expect("reader")
                    .expect("api address in the log");
                (child, api)
            }
            BrokenStderr::DevFull => {
                let port = || {
                    std::net::TcpListener::bind("127.0.0.1:0")
                        .and_then(|l| l.local_addr())
                        .expect("free port")
                };
                let (api, node) = (port(), port());
                std::fs::write(
                    setup.config(),
                    format!(
                        "state_dir = {:?}\n\n[api]\nlisten = \"{api}\"\n\n[node]\nlisten = \"{node}\"\n",
                        setup.state_dir().display().to_string()
                    ),
                )
                .expect("config");
                let full = std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .expect("/dev/full");
                let child = serve_command(&setup)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(full)
                    .spawn()
                    .expect("spawn");
                (child, api)
            }
        };
        let _kill = KillOnDrop(child.id());
        let root = |s: &Setup| std::fs::read_to_string(s.state_dir().join("ca/root.crt"));
        let deadline = Instant::now() + STARTUP;
        let anon = loop {
            if let Ok(pem) = root(&setup) {
                let c = Http::https(&format!("https://{api_addr}"), &pem, None);
                if c.request(reqwest::Method::GET, "/healthz")
                    .send()
                    .await
                    .is_ok()
                {
                    break c;
                }
            }
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "{sink:?}: exited at start"
            );
            assert!(
                Instant::now() < deadline,
                "{sink:?}: no answer within {STARTUP:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let api = anon.with_token(Some(&issue_token(&setup)));
        let write = |n: i64| json!({"Components": [{"ID": format!("x3000c0s{n}b0n0"), "State": "Ready", "NID": n}]});
        api.post("/hsm/v2/State/Components", &write(1))
            .await
            .status(204);

        // Another process holds the write lock: the store's write fails
        // after its busy timeout and is logged as an error.
        let db =
            rusqlite::Connection::open(setup.state_dir().join("openchami.db")).expect("open db");
        db.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        let r = api.post("/hsm/v2/State/Components", &write(2)).await;
        assert!(r.status >= 500, "{sink:?}: {}", r.status);
        drop(db);

        api.post("/hsm/v2/State/Components", &write(3))
            .await
            .status(204);
        api.get("/readyz").await.ok();
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "{sink:?}: still running"
        );
        let m = api.get("/metrics").await.ok().text();
        let failures = m
            .lines()
            .find_map(|l| l.strip_prefix("openchami_log_write_failures_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{sink:?}: no failure counter: {m}"));
        assert!(failures > 0.0, "{sink:?}: {m}");
    }
}

/// Kills a process by id when dropped.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.0.to_string())
            .status();
    }
}

/// A flood of requests is a bounded number of log lines: every request is
/// either written or counted in a summary line, and at most the limit per
/// second is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_are_limited_under_a_flood() {
    use futures_util::StreamExt;
    const REQUESTS: usize = 2000;
    const LIMIT: usize = openchami::logging::ACCESS_LINES_PER_SEC as usize;
    let setup = Setup::new();
    let server = Server::start(&setup);
    let node = server.node_client();
    let started = Instant::now();
    futures_util::stream::iter(0..REQUESTS)
        .for_each_concurrent(32, |_| {
            let node = &node;
            async move {
                node.get("/healthz").await.ok();
            }
        })
        .await;
    let took = started.elapsed();
    // A request in a later window brings out the last window's summary.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    node.get("/ca/root.pem").await.ok();

    let count = |log: &str| {
        let written = log
            .lines()
            .filter(|l| l.contains("request listener=\"node\"") && l.contains("path=\"/healthz\""))
            .count();
        let suppressed: usize = log
            .lines()
            .filter(|l| l.contains("access log:") && l.contains("kind=\"http\""))
            .filter_map(|l| {
                l.split("suppressed=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum();
        (written, suppressed)
    };
    let deadline = Instant::now() + EXIT;
    loop {
        let (written, suppressed) = count(&server.log());
        if written + suppressed >= REQUESTS {
            eprintln!("{written} written, {suppressed} suppressed in {took:?}");
            assert_eq!(
                written + suppressed,
                REQUESTS,
                "every request accounted for once"
            );
            let windows = took.as_secs() as usize + 2;
            assert!(
                written <= LIMIT * windows,
                "{written} lines in {took:?} (limit {LIMIT}/s)"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{written} written + {suppressed} suppressed of {REQUESTS}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
/// `from`, each sending the start of a request head and nothing more; a
/// connection not up within `connect` is given up. Bounded in time: stops
/// at `within`.
async fn half_open(
    to: SocketAddr,
    from: &[std::net::IpAddr],
    n: usize,
    connect: Duration,
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
        let Ok(Ok(mut s)) = tokio::time::timeout(connect, sock.connect(to)).await else {
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
    let held = half_open(
        server.node,
        &from,
        FLOOD,
        Duration::from_millis(500),
        Duration::from_secs(60),
    )
    .await;
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
    // more (its SYNs are dropped once it has it, so its connects time
    // out): other nodes are still served.
    let one = [std::net::IpAddr::from([127, 0, 3, 1])];
    let held = half_open(
        server.node,
        &one,
        300,
        Duration::from_millis(100),
        Duration::from_secs(30),
    )
    .await;
    let node = server.node_client();
    let r = tokio::time::timeout(within * 5, node.get("/healthz")).await;
    assert!(
        r.is_ok_and(|r| r.status == 200),
        "the node listener refused another address during a one-address flood"
    );
    let metrics = api.get("/metrics").await.ok().text();
    // Refused after accept (`peer_share`) or by the listener's filter
    // (`peer_share_syn`), as the race between the two goes.
    assert!(metrics.contains("reason=\"peer_share"), "{metrics}");
    drop(held);
    assert!(
        !server.log().contains("Too many open files"),
        "{}",
        server.log()
    );
}
