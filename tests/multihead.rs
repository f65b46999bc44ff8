//! Several head nodes on one PostgreSQL database: what one head commits
//! every other serves, every rule holds across heads, and a head that
//! missed notifications, or a database that restarted, loses nothing that
//! was acknowledged. Once-only work (power transitions, the sampler) is
//! leased to one head and taken over by another when that head stops.

mod common;

use std::time::Duration;

use common::postgres::{self, Cluster};
use common::{Harness, TIMEOUT};
use serde_json::{Value, json};

const COMPONENTS: &str = "/hsm/v2/State/Components";
const IFACES: &str = "/hsm/v2/Inventory/EthernetInterfaces";

async fn head(url: &str) -> Harness {
    let url = url.to_string();
    Harness::start_with(move |c| c.store.url = url).await
}

/// Two heads on a fresh database of `cluster`.
async fn two_heads(cluster: &Cluster) -> (Harness, Harness) {
    let url = cluster.database();
    let a = head(&url).await;
    let b = head(&url).await;
    (a, b)
}

/// Polls `path` on `h` until `done` holds for its status and body.
async fn eventually(h: &Harness, path: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let r = h.api.get(path).await;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if done(r.status, &v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never got there: {} {v}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node(id: &str, nid: i64) -> Value {
    json!({"Components": [{"ID": id, "State": "Ready", "Type": "Node", "NID": nid}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_head_is_read_on_the_other() {
    let (a, b) = two_heads(postgres::shared()).await;
    a.api
        .post(COMPONENTS, &node("x1000c0s0b0n0", 1))
        .await
        .status(204);
    let v = eventually(&b, &format!("{COMPONENTS}/x1000c0s0b0n0"), |s, _| s == 200).await;
    assert_eq!(v["NID"], 1);
    // And back the other way, with a delete.
    b.api
        .delete(&format!("{COMPONENTS}/x1000c0s0b0n0"))
        .await
        .ok();
    eventually(&a, &format!("{COMPONENTS}/x1000c0s0b0n0"), |s, _| s == 404).await;
}

/// Writes that break a rule only together, sent to two heads at once:
/// exactly one is accepted, whichever head gets the lock first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_writes_on_two_heads_one_wins() {
    let (a, b) = two_heads(postgres::shared()).await;
    for round in 0..6i64 {
        let (x, y) = (
            format!("x1000c0s{round}b0n0"),
            format!("x1000c1s{round}b0n0"),
        );
        // (what, path, body on a, body on b, status when accepted)
        let cases = [
            (
                "the same NID",
                COMPONENTS,
                node(&x, 100 + round),
                node(&y, 100 + round),
                204,
            ),
            (
                "the same MAC",
                IFACES,
                json!({"MACAddress": format!("02:00:00:00:01:{round:02x}"), "ComponentID": x}),
                json!({"MACAddress": format!("02:00:00:00:01:{round:02x}"), "ComponentID": y}),
                201,
            ),
        ];
        for (what, path, on_a, on_b, accepted) in cases {
            let (ra, rb) = tokio::join!(a.api.post(path, &on_a), b.api.post(path, &on_b));
            let mut got = [ra.status, rb.status];
            got.sort();
            let mut want = [accepted, 409];
            want.sort();
            assert_eq!(got, want, "round {round}, {what}: {ra:?} {rb:?}");
        }
    }
    // Both heads end with the same view.
    let all_a = eventually(&a, IFACES, |_, _| true).await;
    eventually(&b, IFACES, |_, v| *v == all_a).await;
}

/// A head whose notification connection is cut (and so misses
/// notifications) still catches up, as does one that was stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_that_missed_notifications_catch_up() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let a = head(&url).await;
    let mut b = head(&url).await;
    // Every connection but the killer's, both heads' listeners included.
    cluster.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    );
    let mut written = 0;
    for i in 0..5 {
        // A pooled connection the server cut is found broken on use; the
        // next write gets a new one.
        if a.api
            .post(COMPONENTS, &node(&format!("x2000c0s{i}b0n0"), 200 + i))
            .await
            .status
            == 204
        {
            written += 1;
        }
    }
    assert!(written >= 4, "writes resume after the cut");
    for i in 0..5 {
        let path = format!("{COMPONENTS}/x2000c0s{i}b0n0");
        let on_a = a.api.get(&path).await.status;
        eventually(&b, &path, |s, _| s == on_a).await;
    }
    b.stop().await;
    for i in 0..5 {
        a.api
            .post(COMPONENTS, &node(&format!("x2001c0s{i}b0n0"), 300 + i))
            .await
            .status(204);
    }
    b.restart().await;
    let want = a.generation();
    assert_eq!(
        b.generation(),
        want,
        "a restarted head starts at the latest generation"
    );
    eventually(&b, &format!("{COMPONENTS}/x2001c0s4b0n0"), |s, _| s == 200).await;
}

/// The database restarts while two heads write: some writes fail, but
/// every acknowledged one is there afterwards, on both heads and in a head
/// started fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_database_restart() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let a = head(&url).await;
    let b = head(&url).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w, h) in [
        (0, a.api.with_token(Some(&a.token))),
        (1, b.api.with_token(Some(&b.token))),
    ] {
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 2000 {
                let id = format!("x3{w}00c0s{}b0n{}", i / 8, i % 8);
                if h.post(COMPONENTS, &node(&id, 10_000 * (w + 1) + i))
                    .await
                    .status
                    == 204
                {
                    acked.push(id);
                }
                i += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = std::thread::spawn(move || {
        cluster.restart();
        cluster
    });
    let cluster = tokio::task::spawn_blocking(move || c.join().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(!acked.is_empty());
    let fresh = head(&url).await;
    for h in [&a, &b, &fresh] {
        for id in &acked {
            eventually(h, &format!("{COMPONENTS}/{id}"), |s, _| s == 200).await;
        }
    }
    drop(cluster);
}

/// `openchami store migrate` copies a stopped SQLite appliance into an
/// empty database, which a head then serves; a second copy is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_state_migrates_into_postgres() {
    let mut old = Harness::start().await;
    for i in 0..3 {
        old.api
            .post(COMPONENTS, &node(&format!("x4000c0s{i}b0n0"), 400 + i))
            .await
            .status(204);
    }
    old.stop().await;
    let url = postgres::shared().database();
    let migrate = |url: String, dir: std::path::PathBuf| {
        std::process::Command::new(env!("CARGO_BIN_EXE_openchami"))
            .arg("--state-dir")
            .arg(dir)
            .args(["store", "migrate", "--to", &url])
            .output()
            .expect("run openchami")
    };
    let (u, d) = (url.clone(), old.state_dir());
    let out = tokio::task::spawn_blocking(move || migrate(u, d))
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("components") && said.contains(" 3"), "{said}");
    let (u, d) = (url.clone(), old.state_dir());
    let again = tokio::task::spawn_blocking(move || migrate(u, d))
        .await
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    // The keys were sealed with the old state directory's new KEK.
    let kek = old.state_dir().join("kek.key").display().to_string();
    let new = Harness::start_with(move |c| {
        c.store.url = url;
        c.store.kek_file = kek;
    })
    .await;
    for i in 0..3 {
        let v = new
            .api
            .get_json(&format!("{COMPONENTS}/x4000c0s{i}b0n0"))
            .await;
        assert_eq!(v["NID"], 400 + i);
    }
}

/// `GET /store/v1/status` names the backend; on a shared store a head
/// that has caught up shows no lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_status_shows_backend_and_lag() {
    let (a, b) = two_heads(postgres::shared()).await;
    a.api
        .post(COMPONENTS, &node("x5000c0s0b0n0", 500))
        .await
        .status(204);
    let want = a.generation();
    let v = eventually(&b, "/store/v1/status", |s, v| {
        s == 200 && v["generation"] == want
    })
    .await;
    assert_eq!(v["backend"], "postgres");
    assert_eq!(v["latest_generation"], want);
    assert_eq!(v["lag"], 0);
    let single = Harness::start().await;
    let v = single.api.get_json("/store/v1/status").await;
    assert_eq!(
        (v["backend"].as_str(), v["lag"].as_u64()),
        (Some("sqlite"), Some(0))
    );
    assert!(v.get("latest_generation").is_none(), "{v}");
}

/// A head for power work on `url`: short leases, quick polling.
async fn power_head(url: &str, sample_secs: u64) -> Harness {
    head_with(url, move |c| c.power.sample_interval_secs = sample_secs).await
}

/// A head on `url` with short leases and quick polling, changed by `f`.
/// The heads of one database share its keys (the harness gives them one
/// key-encryption key), so each can use the BMC credentials another stored.
async fn head_with(
    url: &str,
    f: impl FnOnce(&mut openchami::config::Config) + Send + 'static,
) -> Harness {
    let url = url.to_string();
    Harness::start_with(move |c| {
        c.store.url = url;
        c.store.lease_ttl_secs = 3;
        c.power.poll_interval_secs = 1;
        c.power.escalation_secs = 5;
        f(c);
    })
    .await
}

/// The leases `h` reports, as (name, holder).
async fn leases(h: &Harness) -> Vec<(String, String)> {
    let v = h.api.get_json("/store/v1/status").await;
    v["leases"]
        .as_array()
        .expect("test setup")
        .iter()
        .filter(|l| l["expires_in_ms"].as_i64().expect("test setup") > 0)
        .map(|l| {
            (
                l["name"].as_str().expect("test setup").to_string(),
                l["holder"].as_str().expect("test setup").to_string(),
            )
        })
        .collect()
}

async fn head_id(h: &Harness) -> String {
    h.api.get_json("/store/v1/status").await["head"]
        .as_str()
        .expect("test setup")
        .to_string()
}

/// A transition started on head A, whose head stops half-way, is finished
/// by head B against the same BMCs: B claims its lease and drives the
/// tasks A had not ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_transition_is_finished_by_another_head() {
    use openchami::redfish::sim::{SimBmcs, SimConfig};
    let mut sc = SimConfig::loopback(2);
    // The OS ignores the graceful shutdown: the transition waits for its
    // deadline and then forces the power off.
    sc.ignore_graceful_shutdown = true;
    sc.power_on = true;
    let sims = SimBmcs::start(sc, None).await.unwrap();
    let url = postgres::shared().database();
    let mut a = power_head(&url, 0).await;
    let b = power_head(&url, 0).await;
    let (head_a, head_b) = (head_id(&a).await, head_id(&b).await);
    assert_ne!(head_a, head_b);

    put_default_credentials(&a.api).await;
    let job = a
        .api
        .post("/discovery/v1/collect", &collect_body(&sims))
        .await
        .status(202)
        .json();
    assert_eq!(a.wait_job(&job, TIMEOUT).await["collected"], 2);

    let t = a
        .api
        .post(
            "/transitions",
            &json!({"operation": "off", "taskDeadlineMinutes": 0.1,
                    "location": [{"xname": "x1000c0s0b0n0"}, {"xname": "x1000c0s1b0n0"}]}),
        )
        .await
        .ok()
        .json();
    let id = t["transitionID"].as_str().unwrap().to_string();
    let lease = format!("power-transition/{id}");
    // A drives it: the BMCs were asked to shut down, and the lease is A's.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while sims.resets(0).is_empty() || sims.resets(1).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "A never reset the BMCs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(leases(&b).await.contains(&(lease.clone(), head_a.clone())));
    a.stop().await;
    // B takes it over and finishes it: the deadline passes, the power is
    // forced off and confirmed.
    let done = b.wait_transition(&id, TIMEOUT).await;
    assert_eq!(done["transitionStatus"], "completed", "{done}");
    assert_eq!(done["taskCounts"]["succeeded"], 2, "{done}");
    for k in 0..2 {
        assert!(!sims.power(k, 0), "BMC {k} is off");
        assert!(
            sims.resets(k).iter().any(|r| r == "ForceOff"),
            "BMC {k}: {:?}",
            sims.resets(k)
        );
    }
    // Done and released.
    assert!(!leases(&b).await.iter().any(|(n, _)| *n == lease));
    // A restarted head finds nothing left to do.
    a.restart().await;
    let again = a
        .api
        .get_json(&format!("/power-control/v1/transitions/{id}"))
        .await;
    assert_eq!(again["transitionStatus"], "completed");
}

/// Only one head samples power states: the sampler's lease has one holder,
/// the same seen from both heads, and the other head takes it over when
/// that head stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_head_samples_and_another_takes_over() {
    let url = postgres::shared().database();
    let mut a = power_head(&url, 1).await;
    let mut b = power_head(&url, 1).await;
    let sampler = |l: Vec<(String, String)>| -> Vec<String> {
        l.into_iter()
            .filter(|(n, _)| n == "power-sampler")
            .map(|(_, h)| h)
            .collect()
    };
    let deadline = std::time::Instant::now() + TIMEOUT;
    let holder = loop {
        let held = sampler(leases(&a).await);
        if held.len() == 1 {
            break held[0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "nobody samples");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sampler(leases(&b).await), vec![holder.clone()]);
    // `openchami store status` shows it too: this head, then the leases.
    let out = a.cli(&["store", "status"], TIMEOUT).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let head_a = head_id(&a).await;
    assert!(text.contains(&head_a), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("power-sampler") && l.contains(&holder)),
        "{text}"
    );
    let other = if holder == head_id(&a).await {
        a.stop().await;
        &b
    } else {
        b.stop().await;
        &a
    };
    let successor = head_id(other).await;
    assert_ne!(successor, holder);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while sampler(leases(other).await) != vec![successor.clone()] {
        assert!(
            std::time::Instant::now() < deadline,
            "nobody took the sampler over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A discovery job whose head is killed (SIGKILL, a separate `openchami
/// serve`) half-way is run again, under the same ID, by another head,
/// which writes the BMCs it finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_head_s_discovery_job_is_run_again_by_another() {
    use openchami::redfish::sim::{SimBmcs, SimConfig};
    let mut sc = SimConfig::loopback(2);
    // Slow enough that the first head is still crawling when it is killed.
    sc.latency = Duration::from_millis(300);
    let sims = SimBmcs::start(sc, None).await.expect("simulated BMCs");
    let url = postgres::shared().database();
    let b = power_head(&url, 0).await;
    let u = url.clone();
    let (a, a_api) = tokio::task::spawn_blocking(move || {
        let a = ServeProcess::start(&u);
        let api = a.api();
        (a, api)
    })
    .await
    .expect("started");
    put_default_credentials(&b.api).await;
    // A must see the credentials B stored before it crawls.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !String::from_utf8_lossy(&a_api.get("/discovery/v1/credentials").await.body)
        .contains("default")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "A never saw the credentials"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = a_api
        .post("/discovery/v1/collect", &collect_body(&sims))
        .await
        .status(202)
        .json();
    let id = job["id"].as_str().expect("id").to_string();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while sims.sessions_created(0) == 0 && sims.sessions_created(1) == 0 {
        assert!(std::time::Instant::now() < deadline, "A never logged in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a);
    // B runs it again under the same ID and collects both BMCs.
    let path = format!("/discovery/v1/jobs/{id}");
    let done = eventually(&b, &path, |s, v| s == 200 && v["status"] == "done").await;
    assert_eq!(done["collected"], 2, "{done}");
    for k in 0..2 {
        eventually(
            &b,
            &format!("/hsm/v2/Inventory/RedfishEndpoints/x1000c0s{k}b0"),
            |s, _| s == 200,
        )
        .await;
    }
    // Ended: its record and its lease go (just after the status says done).
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let record = !b.app().state.store.snapshot().discovery_jobs.is_empty();
        let lease = leases(&b)
            .await
            .iter()
            .any(|(n, _)| n.starts_with("discovery/"));
        if !record && !lease {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job record {record}, lease {lease} kept after the job ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A BMC's console session is opened by one head only; the other lists it
/// as held elsewhere, naming that head, and takes the session over when
/// that head stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_head_holds_a_console_and_another_takes_it_over() {
    use openchami::redfish::sim::{SimBmcs, SimConfig};
    use openchami::redfish::simssh::{ConsoleFeed, SshConsoles, SshSimConfig, host_key};
    // The console is reached at the BMC's IP, so the BMC answers on 443 of
    // a loopback address of its own (per test process).
    let pid = std::process::id();
    let ip = std::net::Ipv4Addr::new(127, 100 + (pid % 100) as u8, (pid / 100 % 250) as u8, 1);
    let (feed, _keys) = ConsoleFeed::new();
    let ssh = SshConsoles::start(
        SshSimConfig {
            addrs: vec![std::net::SocketAddr::from((ip, 0))],
            username: "admin".into(),
            password: "password".into(),
            host_key: host_key().expect("host key"),
        },
        vec![feed.clone()],
    )
    .await
    .expect("ssh console");
    let mut sc = SimConfig::consecutive(ip, 443, 1);
    sc.ssh_console_port = Some(ssh.addrs()[0].port());
    let sims = SimBmcs::start(sc, None).await.expect("simulated BMCs");
    let url = postgres::shared().database();
    let consoles = |c: &mut openchami::config::Config| {
        c.power.sample_interval_secs = 0;
        c.console.enabled = true;
        c.console.refresh_secs = 1;
    };
    let mut a = head_with(&url, consoles).await;
    let mut b = head_with(&url, consoles).await;
    put_default_credentials(&a.api).await;
    let target = ip.to_string();
    let job = a
        .api
        .post(
            "/discovery/v1/collect",
            &json!({"targets": [target.clone()], "bmc_id_map": {"map_key": "bmc-ip-addr",
                    "id_map": {target: "x1000c0s0b0"}}}),
        )
        .await
        .status(202)
        .json();
    assert_eq!(a.wait_job(&job, TIMEOUT).await["collected"], 1);

    // (state, heldBy) of the node's console as `h` lists it.
    async fn console(h: &Harness) -> (String, String) {
        let v = h.api.get_json("/remote-console/consoles").await;
        let c = v["consoles"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["id"] == "x1000c0s0b0n0"))
            .cloned()
            .unwrap_or(Value::Null);
        (
            c["state"].as_str().unwrap_or("").to_string(),
            c["heldBy"].as_str().unwrap_or("").to_string(),
        )
    }
    let (id_a, id_b) = (head_id(&a).await, head_id(&b).await);
    let deadline = std::time::Instant::now() + TIMEOUT;
    let holder_is_a = loop {
        let (on_a, on_b) = (console(&a).await, console(&b).await);
        if on_a.0 == "connected" && on_b == ("elsewhere".to_string(), id_a.clone()) {
            break true;
        }
        if on_b.0 == "connected" && on_a == ("elsewhere".to_string(), id_b.clone()) {
            break false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no single holder: {on_a:?} {on_b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // One SSH session to the BMC, whichever head holds it.
    for _ in 0..10 {
        assert_eq!(feed.output.receiver_count(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let other = if holder_is_a {
        a.stop().await;
        &b
    } else {
        b.stop().await;
        &a
    };
    let deadline = std::time::Instant::now() + TIMEOUT;
    while console(other).await.0 != "connected" || feed.output.receiver_count() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the console was not taken over: {:?}",
            console(other).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sims);
    ssh.shutdown().await;
}

/// A separate `openchami serve` on `url`, killed (SIGKILL) on drop.
struct ServeProcess {
    child: std::process::Child,
    dir: tempfile::TempDir,
    api: std::net::SocketAddr,
}

impl ServeProcess {
    /// Starts one with the database's key-encryption key and short leases.
    fn start(url: &str) -> ServeProcess {
        use std::io::BufRead;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("openchami-head-")
            .tempdir()
            .expect("temp dir");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("mode");
        let kek = postgres::kek_for(url);
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n[node]\nlisten = \"127.0.0.1:0\"\n\
                 [console]\nenabled = false\n\
                 [power]\npoll_interval_secs = 1\nescalation_secs = 5\nsample_interval_secs = 0\n\
                 [store]\nurl = {url:?}\nlease_ttl_secs = 3\nkek_file = {:?}\n",
                state.display().to_string(),
                kek.display().to_string()
            ),
        )
        .expect("config");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_openchami"))
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn openchami serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        // Drained for the life of the process: it never blocks on a pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let marker = "listening for api (https) on ";
        let mut server = ServeProcess {
            child,
            dir,
            api: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        loop {
            let line = rx
                .recv_timeout(TIMEOUT)
                .expect("openchami serve reports its API address");
            if let Some(at) = line.find(marker)
                && let Some(a) = line[at + marker.len()..].split_whitespace().next()
            {
                server.api = a.parse().expect("an address");
                return server;
            }
        }
    }

    /// An API client with a token the process's own key signed.
    fn api(&self) -> common::Http {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_openchami"))
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .args(["token", "issue", "--ttl", "1h"])
            .output()
            .expect("run token issue");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let pem = std::fs::read_to_string(self.dir.path().join("state/ca/root.crt"))
            .expect("root certificate");
        common::Http::https(&format!("https://{}", self.api), &pem, Some(token))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The strongest form: a separate `openchami serve` is killed with SIGKILL
/// in the middle of a power transition. It releases nothing; its lease
/// expires and the other head finishes the transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_head_s_power_transition_is_finished_by_another() {
    use openchami::redfish::sim::{SimBmcs, SimConfig};
    let mut sc = SimConfig::loopback(2);
    sc.ignore_graceful_shutdown = true;
    sc.power_on = true;
    let sims = SimBmcs::start(sc, None).await.expect("simulated BMCs");
    let url = postgres::shared().database();
    let b = power_head(&url, 0).await;
    let u = url.clone();
    let a = tokio::task::spawn_blocking(move || ServeProcess::start(&u))
        .await
        .expect("started");
    let a = tokio::task::spawn_blocking(move || {
        let api = a.api();
        (a, api)
    });
    let (a, a_api) = a.await.expect("a client");
    put_default_credentials(&b.api).await;
    let job = b
        .api
        .post("/discovery/v1/collect", &collect_body(&sims))
        .await
        .status(202)
        .json();
    assert_eq!(b.wait_job(&job, TIMEOUT).await["collected"], 2);
    // A serves what B collected, and starts the transition.
    eventually_on(&a_api, "/hsm/v2/State/Components/x1000c0s1b0n0").await;
    let t = a_api
        .post(
            "/transitions",
            &json!({"operation": "off", "taskDeadlineMinutes": 0.1,
                    "location": [{"xname": "x1000c0s0b0n0"}, {"xname": "x1000c0s1b0n0"}]}),
        )
        .await
        .ok()
        .json();
    let id = t["transitionID"].as_str().expect("id").to_string();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while sims.resets(0).is_empty() || sims.resets(1).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "A never reset the BMCs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(a);
    let done = b.wait_transition(&id, TIMEOUT).await;
    assert_eq!(done["transitionStatus"], "completed", "{done}");
    assert_eq!(done["taskCounts"]["succeeded"], 2, "{done}");
    for k in 0..2 {
        assert!(!sims.power(k, 0), "BMC {k} is off");
    }
}

/// Polls `path` through `api` until it answers 200.
async fn eventually_on(api: &common::Http, path: &str) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while api.get(path).await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An abort asked of a head that does not drive the transition reaches
/// the head that does, through the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_on_another_head_stops_the_transition() {
    use openchami::redfish::sim::{SimBmcs, SimConfig};
    let mut sc = SimConfig::loopback(1);
    sc.ignore_graceful_shutdown = true;
    sc.power_on = true;
    let sims = SimBmcs::start(sc, None).await.expect("simulated BMCs");
    let url = postgres::shared().database();
    let a = power_head(&url, 0).await;
    let b = power_head(&url, 0).await;
    put_default_credentials(&a.api).await;
    let target = sims.addrs()[0].to_string();
    let job = a
        .api
        .post(
            "/discovery/v1/collect",
            &json!({"targets": [target.clone()], "bmc_id_map": {"map_key": "bmc-ip-addr",
                    "id_map": {target: "x1000c0s0b0"}}}),
        )
        .await
        .status(202)
        .json();
    assert_eq!(a.wait_job(&job, TIMEOUT).await["collected"], 1);
    // soft-off without a deadline on an OS that ignores it: never ends by
    // itself.
    let t = a
        .api
        .post(
            "/transitions",
            &json!({"operation": "soft-off", "taskDeadlineMinutes": -1,
                    "location": [{"xname": "x1000c0s0b0n0"}]}),
        )
        .await
        .ok()
        .json();
    let id = t["transitionID"].as_str().expect("id").to_string();
    let path = format!("/power-control/v1/transitions/{id}");
    eventually(&b, &path, |s, v| {
        s == 200 && v["transitionStatus"] == "in-progress"
    })
    .await;
    b.api.delete(&path).await.status(202);
    let done = a.wait_transition(&id, TIMEOUT).await;
    assert_eq!(done["transitionStatus"], "aborted", "{done}");
    eventually(&b, &path, |_, v| v["transitionStatus"] == "aborted").await;
    // Ended: it can no longer be aborted, on either head.
    assert_eq!(b.api.delete(&path).await.status, 400);
}

/// Stores the default BMC credentials (the simulators' user) through `api`.
async fn put_default_credentials(api: &common::Http) {
    api.put(
        "/discovery/v1/credentials/default",
        &json!({"username": "admin", "password": "password"}),
    )
    .await
    .ok();
}

/// A discovery request for every simulated BMC, named `x1000c0s<k>b0` in
/// order.
fn collect_body(sims: &openchami::redfish::sim::SimBmcs) -> Value {
    let map: serde_json::Map<String, Value> = sims
        .addrs()
        .iter()
        .enumerate()
        .map(|(k, a)| (a.to_string(), json!(format!("x1000c0s{k}b0"))))
        .collect();
    json!({"targets": map.keys().collect::<Vec<_>>(),
           "bmc_id_map": {"map_key": "bmc-ip-addr", "id_map": map}})
}
