//! Several head nodes on one PostgreSQL database: what one head commits
//! every other serves, every rule holds across heads, and a head that
//! missed notifications, or a database that restarted, loses nothing that
//! was acknowledged.

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
