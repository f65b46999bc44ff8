//! Serial consoles end to end against a real OpenSSH server standing in for
//! a BMC: sshd on loopback, in its own mount and PID namespaces (so a
//! private /etc/shadow gives root a known password and killing it ends
//! every session it forked), with a forced command that prints a banner,
//! echoes each input line and bursts lines on request.
//!
//! Covered: pin on first use, interactive round trip, one writer (409),
//! read-only tokens refused the keyboard (403), tail, follow with many
//! viewers, log rotation, reconnection after the BMC side restarts, a
//! changed host key refused, wrong credentials, node removal closing
//! viewers, and the CLI's `console list` and `--tail`.
//!
//! Needs root and /usr/sbin/sshd (Debian openssh-server); without either it
//! is skipped, saying why. Bounded: every wait has a deadline, the whole
//! test 60 s.
//!
//! IPMI serial-over-LAN runs against OpenIPMI's `ipmi_sim` (one LAN
//! channel on loopback, its SOL wired to a TCP echo port of this process)
//! through `ipmitool`: interactive round trip (ipmitool's escape typed as
//! text), tail, reconnection after the simulator restarts, wrong
//! credentials, and `openchami console <xname>` on a pseudo-terminal (raw
//! mode, a line echoed, Ctrl-] leaves with exit 0). Missing tools skip it
//! outside CI and fail it in CI.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Harness;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_openchami");
const NODE: &str = "x1000c0s0b0n0";
const BMC: &str = "x1000c0s0b0";
const PASSWORD: &str = "console-secret";
const WAIT: Duration = Duration::from_secs(15);

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (mount and PID namespaces for sshd)".into());
    }
    for tool in ["/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/bin/openssl"] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "needs {tool} (openssh-server, openssh-client, openssl)"
            ));
        }
    }
    None
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a setup tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An sshd playing a BMC console; killed (with its sessions) on drop.
struct FakeBmc {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl FakeBmc {
    fn new(dir: &Path) -> FakeBmc {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        for key in ["key_a", "key_b"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key)));
        }
        let hash = run(Command::new("openssl").args(["passwd", "-6", PASSWORD]));
        std::fs::write(
            dir.join("shadow"),
            format!("root:{}:19000:0:99999:7:::\n", hash.trim()),
        )
        .expect("shadow");
        // sshd runs the forced command through the user's login shell; root's
        // (bash reading ~/.bashrc) is the host's business, so the namespace
        // sees a passwd whose root logs in with /bin/sh.
        let passwd: String = std::fs::read_to_string("/etc/passwd")
            .expect("/etc/passwd")
            .lines()
            .map(|l| match l.strip_prefix("root:") {
                Some(_) => "root:x:0:0:root:/root:/bin/sh\n".to_string(),
                None => format!("{l}\n"),
            })
            .collect();
        std::fs::write(dir.join("passwd"), passwd).expect("passwd");
        let script = dir.join("console.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'console ready'\nwhile IFS= read -r line; do\n  case \"$line\" in\n    burst*) n=${line#burst }; i=0; while [ $i -lt $n ]; do echo \"line $i of the burst\"; i=$((i+1)); done ;;\n    *) echo \"echo: $line\" ;;\n  esac\ndone\n",
        )
        .expect("script");
        run(Command::new("chmod").arg("755").arg(&script));
        std::fs::create_dir_all("/run/sshd").expect("sshd privilege separation directory");
        FakeBmc {
            dir: dir.to_path_buf(),
            port,
            child: None,
        }
    }

    /// (Re)starts sshd presenting `key` and waits until it accepts.
    fn start(&mut self, key: &str) {
        self.stop();
        let cfg = self.dir.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {key}\nPidFile none\nUsePAM no\n\
                 PermitRootLogin yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication no\nStrictModes no\nAuthorizedKeysFile none\nLogLevel VERBOSE\n\
                 ForceCommand {script}\n",
                port = self.port,
                key = self.dir.join(key).display(),
                script = self.dir.join("console.sh").display(),
            ),
        )
        .expect("sshd_config");
        let inner = format!(
            "mount --bind {} /etc/shadow && mount --bind {} /etc/passwd && exec /usr/sbin/sshd -D -e -f {}",
            self.dir.join("shadow").display(),
            self.dir.join("passwd").display(),
            cfg.display()
        );
        let child = Command::new("timeout")
            .args([
                "90",
                "unshare",
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",
                "--propagation",
                "private",
                "sh",
                "-c",
            ])
            .arg(inner)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join("sshd.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sshd did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // timeout passes SIGTERM to unshare, whose death sends SIGKILL
            // to its child, the PID namespace's init: every sshd process
            // in the namespace goes with it.
            if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let _ = c.wait();
            let deadline = std::time::Instant::now() + WAIT;
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                assert!(std::time::Instant::now() < deadline, "sshd did not stop");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for FakeBmc {
    fn drop(&mut self) {
        self.stop();
    }
}

type Ws = WebSocketStream<reqwest::Upgraded>;

/// Opens the console WebSocket; `Err(status, body)` when refused.
async fn ws(h: &Harness, token: &str, query: &str) -> Result<Ws, (u16, String)> {
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(common::tls_config(&h.root_pem()))
        .no_proxy()
        .build()
        .expect("client");
    let resp = client
        .get(format!(
            "{}/remote-console/consoles/{NODE}{query}",
            h.api_base()
        ))
        .version(reqwest::Version::HTTP_11)
        .bearer_auth(token)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("request");
    if resp.status() != 101 {
        let s = resp.status().as_u16();
        return Err((s, resp.text().await.unwrap_or_default()));
    }
    let up = resp.upgrade().await.expect("upgrade");
    Ok(WebSocketStream::from_raw_socket(
        up,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await)
}

async fn boot_steps_point_to_the_console(h: &Harness, log_path: &Path) {
    use openchami::boot::steps::{Caller, Step};
    let steps = &h.app().state.boot_steps;
    let now = chrono::Utc::now().timestamp_millis();
    let caller = |name: &str| Caller {
        name: Some(name.into()),
        mac: None,
        ip: None,
    };
    let other = "x1000c0s9b0n0";
    steps.record(&caller(NODE), Step::Dhcp, "DISCOVER", now);
    steps.record(&caller(NODE), Step::Kernel, "/artifacts/vmlinuz", now + 1);
    steps.record(&caller(other), Step::Kernel, "/artifacts/vmlinuz", now);
    let recs = h.api.get_json("/boot/v1/boot-steps").await;
    let rec = |name: &str| {
        recs.as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no record of {name}: {recs}"))
    };
    let mine = rec(NODE);
    assert_eq!(
        mine["console"]["tail"],
        format!("/remote-console/consoles/{NODE}?mode=tail&lines=100"),
        "{mine}"
    );
    assert_eq!(
        mine["console"]["log"],
        log_path.display().to_string(),
        "{mine}"
    );
    assert!(
        rec(other).get("console").is_none(),
        "no console, no pointer: {recs}"
    );
    steps.record(&caller(NODE), Step::PhoneHome, "/phone-home", now + 2);
    let done = h
        .api
        .get_json(&format!("/boot/v1/boot-steps?name={NODE}"))
        .await;
    assert!(done[0].get("console").is_none(), "phoned home: {done}");
}

/// Reads frames until their text (binary or text frames) contains
/// `needle`; returns everything read.
async fn read_until(w: &mut Ws, needle: &str) -> String {
    let mut seen = String::new();
    let r = tokio::time::timeout(WAIT, async {
        while let Some(m) = w.next().await {
            match m.expect("frame") {
                Message::Text(t) => seen.push_str(&t),
                Message::Binary(b) => seen.push_str(&String::from_utf8_lossy(&b)),
                Message::Close(f) => panic!("closed ({f:?}) before {needle:?}; saw {seen:?}"),
                _ => {}
            }
            if seen.contains(needle) {
                return;
            }
        }
        panic!("stream ended before {needle:?}; saw {seen:?}");
    })
    .await;
    assert!(r.is_ok(), "no {needle:?} in time; saw {seen:?}");
    seen
}

/// Reads text frames to the close; returns them and the close code/reason.
async fn read_to_close(w: &mut Ws) -> (Vec<String>, u16, String) {
    let mut frames = Vec::new();
    let r = tokio::time::timeout(WAIT, async {
        while let Some(m) = w.next().await {
            match m.expect("frame") {
                Message::Text(t) => frames.push(t.to_string()),
                Message::Close(Some(f)) => return (u16::from(f.code), f.reason.to_string()),
                Message::Close(None) => return (1005, String::new()),
                _ => {}
            }
        }
        (1006, String::new())
    })
    .await
    .expect("closed in time");
    (frames, r.0, r.1)
}

async fn console_row(h: &Harness) -> Value {
    let v = h.api.get_json("/remote-console/consoles").await;
    v["consoles"]
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or(Value::Null)
}

async fn wait_state(h: &Harness, state: &str, error_part: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let row = console_row(h).await;
        if row["state"] == state && row["error"].as_str().unwrap_or("").contains(error_part) {
            return row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "console never {state} with {error_part:?}: {row}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn set_password(h: &Harness, password: &str) {
    let r = h
        .api
        .put(
            "/discovery/v1/credentials/default",
            &json!({"username": "root", "password": password}),
        )
        .await;
    assert!(r.status < 300, "credentials: {} {}", r.status, r.text());
}

fn cli(h: &Harness, token: &str, args: &[&str]) -> String {
    let ca = h.state_dir().join("ca").join("root.crt");
    let out = Command::new(BIN)
        .arg("--url")
        .arg(h.api_base())
        .arg("--cacert")
        .arg(&ca)
        .arg("--token")
        .arg(token)
        .args(args)
        .output()
        .expect("run the CLI");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_console_end_to_end() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mut bmc = FakeBmc::new(tmp.path());
    bmc.start("key_a");
    let port = bmc.port;
    let r = tokio::time::timeout(Duration::from_secs(60), scenario(&mut bmc, port)).await;
    assert!(r.is_ok(), "the console scenario took longer than 60 s");
}

async fn scenario(bmc: &mut FakeBmc, port: u16) {
    let mut h = Harness::start_with(|c| {
        c.console.enabled = true;
        c.console.ssh_port = port;
        c.console.refresh_secs = 1;
        c.console.backoff_min_secs = 1;
        c.console.backoff_max_secs = 1;
        c.console.log_max_bytes = 4096;
        c.console.log_keep = 2;
        // A plain stream: in containers whose /dev/ptmx and /dev/pts
        // disagree, sshd's PTY child can end up on another terminal.
        c.console.pty = false;
    })
    .await;
    let admin = h.token.clone();
    set_password(&h, PASSWORD).await;
    let r = h
        .api
        .post(
            "/hsm/v2/State/Components",
            &json!({"Components": [{"ID": NODE, "Type": "Node", "State": "On", "Enabled": true}]}),
        )
        .await;
    assert!(r.status < 300, "component: {} {}", r.status, r.text());
    let r = h
        .api
        .post("/hsm/v2/Inventory/RedfishEndpoints", &json!({"ID": BMC, "IPAddress": "127.0.0.1", "Enabled": true, "RediscoverOnUpdate": false}))
        .await;
    assert!(r.status < 300, "endpoint: {} {}", r.status, r.text());

    // Health and the list, anonymous and with a token.
    let health = h.anon.get_json("/remote-console/health").await;
    assert!(health["hardwareupdate"].is_string(), "{health}");
    assert_eq!(h.anon.get("/remote-console/consoles").await.status, 401);

    // Connects and pins the host key on first use.
    let row = wait_state(&h, "connected", "").await;
    // Keystrokes sent before the BMC's console program runs may be flushed
    // by its terminal set-up: type once its banner is in the log.
    let log_path = h
        .state_dir()
        .join("consoles")
        .join(format!("console.{NODE}"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("console ready")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no banner in the log {}: {:?}; sshd said: {}",
            log_path.display(),
            std::fs::read_to_string(&log_path),
            std::fs::read_to_string(bmc.dir.join("sshd.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (row["id"].as_str(), row["connectionType"].as_str()),
        (Some(NODE), Some("ssh"))
    );
    assert_eq!(row["connectionPort"], port);
    let pin = h
        .app()
        .state
        .store
        .snapshot()
        .console_host_keys
        .get(BMC)
        .cloned()
        .expect("host key pinned");
    assert!(pin.fingerprint.starts_with("SHA256:"), "{pin:?}");

    // Boot-step records of a boot that stopped point to the console log,
    // only for a node with a console and only until it phones home.
    boot_steps_point_to_the_console(&h, &log_path).await;

    // Interactive round trip; one writer at a time; read-only tokens only watch.
    let mut w = ws(&h, &admin, "").await.expect("interactive");
    w.send(Message::Text("hello console\n".into()))
        .await
        .expect("send");
    read_until(&mut w, "echo: hello console").await;
    let Err(second) = ws(&h, &admin, "?mode=interactive").await else {
        panic!("a second writer was let in");
    };
    assert_eq!(second.0, 409, "{second:?}");
    assert!(second.1.contains("already in use"), "{second:?}");
    let viewer = h.token_with("watcher", Duration::from_secs(600), &["viewer"]);
    assert_eq!(ws(&h, &viewer, "").await.err().map(|e| e.0), Some(403));
    for (q, want) in [
        ("?mode=bogus", 400),
        ("?mode=tail&follow=maybe", 400),
        ("?mode=tail&lines=x", 400),
    ] {
        assert_eq!(
            ws(&h, &admin, q).await.err().map(|e| e.0),
            Some(want),
            "{q}"
        );
    }

    // Tail of the whole log, then of its last line.
    let mut t = ws(&h, &viewer, "?mode=tail").await.expect("tail");
    let (frames, code, _) = read_to_close(&mut t).await;
    assert_eq!(code, 1000);
    assert!(
        frames.iter().any(|f| f.contains("console ready")),
        "{frames:?}"
    );
    assert!(
        frames.iter().all(|f| f.ends_with('\n')),
        "one line per frame: {frames:?}"
    );
    let mut t = ws(&h, &viewer, "?mode=tail&lines=1").await.expect("tail 1");
    let (frames, _, _) = read_to_close(&mut t).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(frames[0].contains("echo: hello console"), "{frames:?}");

    // The status page's node view reads the same log (`/ui/api` takes a
    // bearer token as well as the page's session cookie).
    for (query, status, says) in [
        ("?lines=1", 200, "echo: hello console"),
        ("", 200, "console ready"),
        ("?lines=0", 400, "lines must be"),
        ("?lines=x", 400, "lines must be"),
    ] {
        let r = h
            .api
            .get(&format!("/ui/api/nodes/{NODE}/console{query}"))
            .await
            .status(status);
        assert!(r.text().contains(says), "{query}: {}", r.text());
        if status == 200 {
            assert_eq!(r.header("cache-control"), Some("no-store"), "{query}");
        }
    }
    let lines = h
        .api
        .get(&format!("/ui/api/nodes/{NODE}/console?lines=1"))
        .await
        .text();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    h.api
        .get("/ui/api/nodes/x1000c0s9b0n0/console")
        .await
        .status(404);

    // Many followers see what the writer causes.
    let mut followers = Vec::new();
    for _ in 0..8 {
        followers.push(
            ws(&h, &viewer, "?mode=tail&follow=true&lines=1")
                .await
                .expect("follow"),
        );
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while console_row(&h).await["viewers"] != 9 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "viewers: {}",
            console_row(&h).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.send(Message::Text("for everyone\n".into()))
        .await
        .expect("send");
    for f in followers.iter_mut() {
        read_until(f, "echo: for everyone").await;
    }
    drop(followers);

    // Rotation: bursts past log_max_bytes leave console.<node>.1 and .2, no .3.
    for _ in 0..4 {
        w.send(Message::Text("burst 150\n".into()))
            .await
            .expect("send");
        read_until(&mut w, "line 149 of the burst").await;
    }
    let logs = h.state_dir().join("consoles");
    let log = |s: &str| logs.join(format!("console.{NODE}{s}"));
    assert!(log("").exists() && log(".1").exists() && log(".2").exists());
    assert!(!log(".3").exists());
    assert!(std::fs::metadata(log("")).expect("log").len() <= 4096);

    // The CLI: list and tail.
    let token = admin.clone();
    let listed = tokio::task::block_in_place(|| cli(&h, &token, &["console", "list"]));
    let tailed = tokio::task::block_in_place(|| {
        cli(&h, &token, &["console", NODE, "--tail", "--lines", "2"])
    });
    assert!(
        listed.contains(NODE) && listed.contains("connected"),
        "{listed}"
    );
    assert_eq!(tailed.lines().count(), 2, "{tailed}");
    assert!(tailed.contains("line 149 of the burst"), "{tailed}");

    // The BMC restarts: the viewer is told, the session comes back, typing works again.
    bmc.start("key_a");
    read_until(&mut w, &format!("[Reconnecting to {NODE}...]")).await;
    read_until(&mut w, "console ready").await;
    wait_state(&h, "connected", "").await;
    w.send(Message::Text("after restart\n".into()))
        .await
        .expect("send");
    read_until(&mut w, "echo: after restart").await;

    // A changed host key is refused and named, until the pin is forgotten.
    bmc.start("key_b");
    wait_state(&h, "waiting", "host key").await;
    assert_eq!(ws(&h, &viewer, "").await.err().map(|e| e.0), Some(403));
    let forgot =
        tokio::task::block_in_place(|| cli(&h, &token, &["console", NODE, "--forget-host-key"]));
    assert!(forgot.contains(&pin.fingerprint), "{forgot}");
    wait_state(&h, "connected", "").await;
    let keys = h.api.get_json("/remote-console/hostkeys").await;
    let new_pin = keys["hostkeys"][0]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        new_pin.starts_with("SHA256:") && new_pin != pin.fingerprint,
        "{keys}"
    );
    let listed = tokio::task::block_in_place(|| cli(&h, &token, &["console", "hostkeys"]));
    assert!(listed.contains(&new_pin), "{listed}");
    assert_eq!(
        h.api
            .delete("/remote-console/hostkeys/x9c0s0b0")
            .await
            .status,
        404
    );
    // Wrong credentials are refused and named (at the next connection).
    set_password(&h, "not-the-password").await;
    bmc.start("key_b");
    wait_state(&h, "waiting", "refused user").await;
    set_password(&h, PASSWORD).await;
    wait_state(&h, "connected", "").await;

    // The node leaves: viewers are closed, the console disappears.
    let r = h
        .api
        .delete(&format!("/hsm/v2/State/Components/{NODE}"))
        .await;
    assert!(r.status < 300, "{}", r.status);
    let (_, code, reason) = read_to_close(&mut w).await;
    assert_eq!((code, reason.as_str()), (1000, "node no longer exists"));
    assert_eq!(console_row(&h).await, Value::Null);
    assert_eq!(ws(&h, &admin, "").await.err().map(|e| e.0), Some(404));
    h.stop().await;
}

// --- IPMI serial-over-LAN against OpenIPMI's BMC simulator ---------------

const IPMI_USER: &str = "admin";

/// The serial port behind the simulated BMC: a TCP server ipmi_sim's `sol`
/// line connects to, echoing each line it is sent. Threads of the test
/// process; every connection a restarted simulator makes is served.
struct SerialPort {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SerialPort {
    fn start() -> SerialPort {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("serial port listener");
        let port = listener.local_addr().expect("address").port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut line = Vec::new();
                    let mut buf = [0u8; 1024];
                    // Terminals end lines with CR; ipmi_sim passes bytes as typed.
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        for &b in &buf[..n] {
                            if b != b'\r' && b != b'\n' {
                                line.push(b);
                                continue;
                            }
                            if line.is_empty() {
                                continue;
                            }
                            let mut msg = b"echo: ".to_vec();
                            msg.append(&mut line);
                            msg.extend_from_slice(b"\r\n");
                            if conn.write_all(&msg).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        SerialPort { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// OpenIPMI's `ipmi_sim` as a BMC with one LAN channel on loopback and its
/// SOL wired to a [`SerialPort`]; killed on drop.
struct IpmiSim {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl IpmiSim {
    fn new(dir: &Path, serial: u16) -> IpmiSim {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free UDP port")
            .port();
        std::fs::write(
            dir.join("lan.conf"),
            format!(
                "name \"openchami-test\"\nset_working_mc 0x20\n\
                 startlan 1\n  addr 127.0.0.1 {port}\n  priv_limit admin\n\
                 allowed_auths_callback md5\n  allowed_auths_user md5\n\
                 allowed_auths_operator md5\n  allowed_auths_admin md5\n\
                 guid a123456789abcdefa123456789abcdef\nendlan\n\
                 sol \"tcp:127.0.0.1:{serial}\" 115200\n\
                 user 2 true \"{IPMI_USER}\" \"{PASSWORD}\" admin 10 md5\n"
            ),
        )
        .expect("lan.conf");
        std::fs::write(
            dir.join("bmc.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n",
        )
        .expect("bmc.emu");
        std::fs::create_dir_all(dir.join("state")).expect("state dir");
        IpmiSim {
            dir: dir.to_path_buf(),
            port,
            child: None,
        }
    }

    /// (Re)starts the simulator and waits until it has its UDP port and
    /// has connected its serial port.
    fn start(&mut self, serial: &SerialPort) {
        self.stop();
        let before = serial.connections();
        let child = Command::new("timeout")
            .arg("90")
            .arg(common::host::which("ipmi_sim").expect("ipmi_sim"))
            .arg("-c")
            .arg(self.dir.join("lan.conf"))
            .arg("-f")
            .arg(self.dir.join("bmc.emu"))
            .arg("-s")
            .arg(self.dir.join("state"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join("ipmi_sim.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("start ipmi_sim");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::UdpSocket::bind(("127.0.0.1", self.port)).is_ok()
            || serial.connections() == before
        {
            assert!(
                std::time::Instant::now() < deadline,
                "ipmi_sim did not start: {}",
                std::fs::read_to_string(self.dir.join("ipmi_sim.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // timeout hands SIGTERM on to ipmi_sim.
            if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let _ = c.wait();
            let deadline = std::time::Instant::now() + WAIT;
            while std::net::UdpSocket::bind(("127.0.0.1", self.port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "ipmi_sim did not stop"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_console_end_to_end() {
    if !common::host::prerequisites(
        "IPMI console tests need",
        &[("ipmi_sim", "openipmi"), ("ipmitool", "ipmitool")],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let serial = SerialPort::start();
    let mut sim = IpmiSim::new(tmp.path(), serial.port);
    sim.start(&serial);
    let r = tokio::time::timeout(Duration::from_secs(60), ipmi_scenario(&mut sim, &serial)).await;
    assert!(r.is_ok(), "the IPMI console scenario took longer than 60 s");
}

async fn set_ipmi_password(h: &Harness, password: &str) {
    let r = h
        .api
        .put(
            "/discovery/v1/credentials/default",
            &json!({"username": IPMI_USER, "password": password}),
        )
        .await;
    assert!(r.status < 300, "credentials: {} {}", r.status, r.text());
}

async fn ipmi_scenario(sim: &mut IpmiSim, serial: &SerialPort) {
    let port = sim.port;
    let mut h = Harness::start_with(|c| {
        c.console.enabled = true;
        c.console.refresh_secs = 1;
        c.console.backoff_min_secs = 1;
        c.console.backoff_max_secs = 1;
        // The BMC is chosen to speak IPMI here; discovery would say so on hardware.
        c.console.bmcs.insert(
            BMC.into(),
            openchami::console::targets::Override {
                backend: Some(openchami::console::targets::Backend::Ipmi),
                port: Some(port),
                command: None,
            },
        );
    })
    .await;
    let admin = h.token.clone();
    set_ipmi_password(&h, PASSWORD).await;
    let r = h
        .api
        .post(
            "/hsm/v2/State/Components",
            &json!({"Components": [{"ID": NODE, "Type": "Node", "State": "On", "Enabled": true}]}),
        )
        .await;
    assert!(r.status < 300, "component: {} {}", r.status, r.text());
    let r = h
        .api
        .post("/hsm/v2/Inventory/RedfishEndpoints", &json!({"ID": BMC, "IPAddress": "127.0.0.1", "Enabled": true, "RediscoverOnUpdate": false}))
        .await;
    assert!(r.status < 300, "endpoint: {} {}", r.status, r.text());

    let row = wait_state(&h, "connected", "").await;
    assert_eq!(
        (
            row["connectionType"].as_str(),
            row["connectionPort"].as_u64()
        ),
        (Some("ipmi"), Some(u64::from(port))),
        "{row}"
    );

    let token = admin.clone();
    let listed = tokio::task::block_in_place(|| cli(&h, &token, &["console", "list"]));
    let row = listed
        .lines()
        .find(|l| l.contains(NODE))
        .unwrap_or_default();
    assert!(
        row.contains("ipmi") && row.contains("connected"),
        "{listed}"
    );

    // Interactive round trip through ipmitool, ipmi_sim and the serial port.
    let mut w = ws(&h, &admin, "").await.expect("interactive");
    w.send(Message::Text("hello sol\r".into()))
        .await
        .expect("send");
    read_until(&mut w, "echo: hello sol").await;
    // ipmitool's escape at the start of a line reaches the console as typed.
    w.send(Message::Text("~.still here\r".into()))
        .await
        .expect("send");
    read_until(&mut w, "echo: ~.still here").await;

    // Tail: the last line of the log.
    let viewer = h.token_with("watcher", Duration::from_secs(600), &["viewer"]);
    let mut t = ws(&h, &viewer, "?mode=tail&lines=1").await.expect("tail");
    let (frames, code, _) = read_to_close(&mut t).await;
    assert_eq!(code, 1000);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(frames[0].contains("echo: ~.still here"), "{frames:?}");

    // The BMC restarts: ipmitool notices at the next keystroke, the session
    // comes back, and typing works again.
    sim.start(serial);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = String::new();
    while !seen.contains(&format!("[Reconnecting to {NODE}...]")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnection after the BMC restarted; saw {seen:?}"
        );
        w.send(Message::Text("anyone\r".into()))
            .await
            .expect("send");
        if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(1), w.next()).await {
            match m {
                Message::Text(t) => seen.push_str(&t),
                Message::Binary(b) => seen.push_str(&String::from_utf8_lossy(&b)),
                _ => {}
            }
        }
    }
    wait_state(&h, "connected", "").await;
    w.send(Message::Text("after restart\r".into()))
        .await
        .expect("send");
    read_until(&mut w, "echo: after restart").await;

    // Wrong credentials are refused and named, then fixed.
    set_ipmi_password(&h, "not-the-password").await;
    sim.start(serial);
    w.send(Message::Text("knock\r".into())).await.expect("send");
    wait_state(&h, "waiting", "refused user").await;
    set_ipmi_password(&h, PASSWORD).await;
    wait_state(&h, "connected", "").await;

    // The CLI, interactive on a terminal: raw mode, a line typed and its
    // echo read, Ctrl-] leaves with exit 0 and the terminal restored.
    drop(w);
    let (status, screen) = tokio::task::block_in_place(|| cli_on_terminal(&h, &token));
    assert!(
        status.success(),
        "{status:?}; the terminal showed {screen:?}"
    );
    h.stop().await;
}

/// Reads the terminal until it shows `what` (bounded; kills the CLI and
/// fails when it does not).
fn await_screen(master: &mut std::fs::File, screen: &mut String, what: &str, child: &mut Child) {
    use std::io::Read;
    let deadline = std::time::Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    while !screen.contains(what) {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the terminal never showed {what:?}: {screen:?}");
        }
        match master.read(&mut buf) {
            Ok(n) if n > 0 => screen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Runs `openchami console <node>` on a pseudo-terminal as an operator
/// would: waits until it has the terminal in raw mode, types a line, reads
/// the echo, then presses Ctrl-]. Returns its exit status and the screen.
fn cli_on_terminal(h: &Harness, token: &str) -> (std::process::ExitStatus, String) {
    use rustix::termios::{LocalModes, tcgetattr};
    use std::io::{Read, Write};
    let flags = rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY;
    let master = rustix::pty::openpt(flags).expect("openpt");
    rustix::pty::grantpt(&master).expect("grantpt");
    rustix::pty::unlockpt(&master).expect("unlockpt");
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)
        .or_else(|_| {
            let name = rustix::pty::ptsname(&master, Vec::new())?;
            rustix::fs::open(
                name.as_c_str(),
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
                rustix::fs::Mode::empty(),
            )
        })
        .expect("terminal");
    rustix::io::ioctl_fionbio(&master, true).expect("non-blocking");
    let mut master = std::fs::File::from(master);
    let io = || Stdio::from(slave.try_clone().expect("dup"));
    let ca = h.state_dir().join("ca").join("root.crt");
    let mut child = Command::new("timeout")
        .arg("30")
        .arg(BIN)
        .arg("--url")
        .arg(h.api_base())
        .arg("--cacert")
        .arg(&ca)
        .arg("--token")
        .arg(token)
        .args(["console", NODE])
        .stdin(io())
        .stdout(io())
        .stderr(io())
        .spawn()
        .expect("run the CLI");
    let mut screen = String::new();
    await_screen(&mut master, &mut screen, "[connected to", &mut child);
    let deadline = std::time::Instant::now() + WAIT;
    while tcgetattr(&slave)
        .map(|t| {
            t.local_modes
                .intersects(LocalModes::ICANON | LocalModes::ECHO)
        })
        .unwrap_or(true)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the CLI never put the terminal in raw mode"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    master.write_all(b"typed at the terminal\r").expect("type");
    await_screen(
        &mut master,
        &mut screen,
        "echo: typed at the terminal",
        &mut child,
    );
    master.write_all(&[0x1d]).expect("Ctrl-]");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the CLI did not leave on Ctrl-]: {screen:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = master.read(&mut buf) {
        screen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let restored = tcgetattr(&slave).expect("termios");
    assert!(
        restored.local_modes.contains(LocalModes::ICANON),
        "the terminal was left in raw mode"
    );
    (status, screen)
}
