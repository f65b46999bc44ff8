//! PCS power capping against the simulated BMCs: one offering its limit as
//! a `Controls` member, one only through the legacy `Power` resource.
//! Upstream's power-cap API behaviour (its handlers and `test/ct` Tavern
//! tests) is reproduced as a table of requests.

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use openchami::redfish::sim::{SimBmcs, SimConfig};
use reqwest::Method;
use serde_json::{Value, json};

const N0: &str = "x1000c0s0b0n0";
const N1: &str = "x1000c0s1b0n0";

/// Two BMCs, the second without `Controls`, collected.
async fn setup() -> (Harness, SimBmcs) {
    let mut c = SimConfig::loopback(2);
    c.updates.legacy_power_only = vec![1];
    let s = SimBmcs::start(c, None).await.expect("simulated BMCs");
    let h = Harness::start_with(|c| c.power.sample_interval_secs = 0).await;
    h.api
        .put(
            "/discovery/v1/credentials/default",
            &json!({"username": "admin", "password": "password"}),
        )
        .await
        .ok();
    let addrs: Vec<String> = s.addrs().iter().map(|a| a.to_string()).collect();
    let map: serde_json::Map<String, Value> = addrs
        .iter()
        .enumerate()
        .map(|(k, a)| (a.clone(), json!(format!("x1000c0s{k}b0"))))
        .collect();
    let job = h
        .api
        .post(
            "/discovery/v1/collect",
            &json!({"targets": addrs, "bmc_id_map": {"map_key": "bmc-ip-addr", "id_map": map}}),
        )
        .await
        .status(202)
        .json();
    let done = h.wait_job(&job, Duration::from_secs(120)).await;
    assert_eq!(done["collected"], 2, "{done}");
    (h, s)
}

/// Starts a task, checks its creation reply, and waits for it to complete.
async fn run(h: &Harness, method: Method, path: &str, body: Value) -> Value {
    let r = h.api.call(method, path, Some(&body)).await.ok();
    let id = r.json()["taskID"].as_str().expect("taskID").to_string();
    assert_eq!(
        r.header("location"),
        Some(format!("/power-control/v1/power-cap/{id}").as_str())
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = h.api.get_json(&format!("/power-cap/{id}")).await;
        if t["taskStatus"] == "completed" {
            assert_eq!(t["taskID"], id.as_str());
            return t;
        }
        assert!(Instant::now() < deadline, "task never completed: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn snapshot(h: &Harness, xnames: &[&str]) -> Value {
    run(
        h,
        Method::POST,
        "/power-control/v1/power-cap/snapshot",
        json!({ "xnames": xnames }),
    )
    .await
}

async fn patch(h: &Harness, xname: &str, name: &str, value: i64) -> Value {
    run(
        h,
        Method::PATCH,
        "/power-cap",
        json!({"components": [{"xname": xname, "controls": [{"name": name, "value": value}]}]}),
    )
    .await
}

fn component<'a>(t: &'a Value, xname: &str) -> &'a Value {
    t["components"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["xname"] == xname))
        .unwrap_or_else(|| panic!("no {xname} in {t}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_are_set_read_back_and_checked_against_the_advertised_range() {
    let (h, s) = setup().await;

    // Both views of a limit: Controls (BMC 0) and legacy PowerControl (BMC 1).
    let t = snapshot(&h, &[N0, N1]).await;
    assert_eq!(t["type"], "snapshot");
    assert_eq!(t["taskCounts"]["succeeded"], 2, "{t}");
    let names = [(N0, "Node Power Limit"), (N1, "System Power Control")];
    for (x, name) in names {
        let c = component(&t, x);
        assert_eq!(
            c["powerCapLimits"],
            json!([{"name": name, "currentValue": 0, "maximumValue": 850, "minimumValue": 350}]),
            "{x}"
        );
        assert_eq!(
            c["limits"],
            json!({"hostLimitMax": 850, "hostLimitMin": 350})
        );
    }

    // Set and read back, through either view.
    for (k, (x, name)) in names.into_iter().enumerate() {
        let t = patch(&h, x, name, 500 + k as i64).await;
        assert_eq!(t["type"], "patch");
        assert_eq!(t["taskCounts"]["succeeded"], 1, "{t}");
        assert_eq!(
            component(&t, x)["powerCapLimits"][0]["currentValue"],
            500 + k as i64
        );
        assert_eq!(s.power_limit(k), Some(500 + k as i64));
    }
    let t = snapshot(&h, &[N0, N1]).await;
    assert_eq!(component(&t, N0)["powerCapLimits"][0]["currentValue"], 500);
    assert_eq!(component(&t, N1)["powerCapLimits"][0]["currentValue"], 501);

    // Out of range: refused per component, in upstream's words, the limit
    // unchanged; the BMC is never asked.
    let cases = [
        (
            1234567,
            "Control (Node Power Limit) value (1234567) is more than maximum (850)",
        ),
        (
            1,
            "Control (Node Power Limit) value (1) is less than minimum (350)",
        ),
    ];
    for (value, error) in cases {
        let t = patch(&h, N0, "Node Power Limit", value).await;
        assert_eq!(t["taskCounts"]["failed"], 1, "{t}");
        assert_eq!(component(&t, N0)["error"], error);
        assert_eq!(s.power_limit(0), Some(500));
    }

    // 0 removes the limit.
    let t = patch(&h, N1, "System Power Control", 0).await;
    assert_eq!(t["taskCounts"]["succeeded"], 1, "{t}");
    assert_eq!(s.power_limit(1), None);

    // The list has every task, without components.
    let all = h.api.get_json("/power-control/v1/power-cap").await;
    let tasks = all["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 7);
    assert!(tasks.iter().all(|t| t.get("components").is_none()));
    for k in 0..2 {
        assert_eq!(s.open_sessions(k), 0, "BMC {k} session left open");
    }
}

/// Upstream's power-cap API behaviour (test/ct `test_power-cap_negative`
/// and the handlers' checks) as a table: request → status and, for tasks,
/// the one component's error and the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_power_cap_behaviour() {
    let (h, _s) = setup().await;
    let bmc = "x1000c0s0b0";
    let npl = |x: &str| json!({"components": [{"xname": x, "controls": [{"name": "Node Power Limit", "value": 0}]}]});
    // (method, path, body, task component error, counted as)
    let tasks: Vec<(Method, &str, Value, String, &str)> = vec![
        (
            Method::POST,
            "/power-cap/snapshot",
            json!({"xnames": ["x9999c7s9b9n9"]}),
            "Xname not found in HSM".into(),
            "failed",
        ),
        (
            Method::POST,
            "/power-cap/snapshot",
            json!({"xnames": [bmc]}),
            "Type, NodeBMC unsupported for power capping".into(),
            "un-supported",
        ),
        (
            Method::POST,
            "/power-cap/snapshot",
            json!({"xnames": ["FAKE"]}),
            "Invalid xname".into(),
            "failed",
        ),
        (
            Method::PATCH,
            "/power-cap",
            npl("x9999c7s9b9n9"),
            "Xname not found in HSM".into(),
            "failed",
        ),
        (
            Method::PATCH,
            "/power-cap",
            npl(bmc),
            "Skipping undefined control 'Node Power Limit'".into(),
            "failed",
        ),
        (
            Method::PATCH,
            "/power-cap",
            npl("FAKE"),
            "Invalid xname".into(),
            "failed",
        ),
        (
            Method::PATCH,
            "/power-cap",
            json!({"components": [{"xname": N0, "controls": [{"name": "GPU0 Power Limit", "value": 400}]}]}),
            "Skipping undefined control 'GPU0 Power Limit'".into(),
            "failed",
        ),
    ];
    for (method, path, body, error, counted) in tasks {
        let t = run(&h, method.clone(), path, body.clone()).await;
        let what = format!("{method} {path} {body}");
        assert_eq!(t["taskStatus"], "completed", "{what}");
        let comps = t["components"].as_array().expect("components");
        assert_eq!(comps.len(), 1, "{what}: {t}");
        assert_eq!(comps[0]["error"], error.as_str(), "{what}");
        assert_eq!(t["taskCounts"]["total"], 1, "{what}");
        assert_eq!(t["taskCounts"][counted], 1, "{what}: {t}");
        for key in ["taskCreateTime", "automaticExpirationTime"] {
            assert!(
                chrono::DateTime::parse_from_rfc3339(t[key].as_str().unwrap_or("")).is_ok(),
                "{what}: {key}"
            );
        }
    }

    // Refused before any task: (method, path, body, status, detail).
    let refused: Vec<(Method, &str, Option<Value>, u16, &str)> = vec![
        (Method::PUT, "/power-cap", None, 405, ""),
        (Method::DELETE, "/power-cap", None, 405, ""),
        (
            Method::GET,
            "/power-cap/99z9zz99-z999-99z9-99z9-99z99z9z99z9",
            None,
            400,
            "invalid UUID format",
        ),
        (
            Method::GET,
            "/power-cap/FAKE",
            None,
            400,
            "invalid UUID length: 4",
        ),
        (
            Method::GET,
            "/power-control/v1/power-cap/0b0e0d1c-4bd1-4c5c-9d3e-6f7a8b9c0d1e",
            None,
            404,
            "TaskID does not exist",
        ),
        (
            Method::POST,
            "/power-cap/snapshot",
            Some(json!({"xnames": []})),
            400,
            "Xname list is empty. A list of xnames is required",
        ),
        (
            Method::PATCH,
            "/power-cap",
            Some(
                json!({"components": [{"xname": N0, "controls": [{"name": "Node Power Limit", "value": -5}]}]}),
            ),
            400,
            "Invalid control parameters for xnames detected x1000c0s0b0n0 ",
        ),
        (
            Method::PATCH,
            "/power-cap",
            Some(json!({"components": [{"xname": N0, "controls": [{"name": "", "value": 5}]}]})),
            400,
            "Invalid control parameters for xnames detected x1000c0s0b0n0 ",
        ),
        (
            Method::PATCH,
            "/power-cap",
            Some(
                json!({"components": [{"xname": N0, "controls": [{"name": "Node Power Limit", "value": "FAKE"}]}]}),
            ),
            400,
            "",
        ),
    ];
    let before = h.api.get_json("/power-cap").await["tasks"]
        .as_array()
        .map_or(0, Vec::len);
    for (method, path, body, status, detail) in refused {
        let p = h
            .api
            .call(method.clone(), path, body.as_ref())
            .await
            .problem(status);
        if !detail.is_empty() {
            assert_eq!(p["detail"], detail, "{method} {path}");
        }
    }
    let after = h.api.get_json("/power-cap").await["tasks"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(before, after, "a refused request made a task");
}

async fn cli(h: &Harness, args: &[&str]) -> std::process::Output {
    h.cli(args, Duration::from_secs(120)).await
}

/// The CLI: `power cap set` then `power cap show`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sets_and_shows_caps() {
    let (h, s) = setup().await;
    let out = cli(
        &h,
        &[
            "power", "cap", "set", N0, "--watts", "600", "--output", "json",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.power_limit(0), Some(600));
    let out = cli(&h, &["power", "cap", "show", N0, "--output", "json"]).await;
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["components"][0]["powerCapLimits"][0]["currentValue"], 600);
    // Out of range: the error is shown and the command fails.
    let out = cli(&h, &["power", "cap", "set", N0, "--watts", "9000"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("more than maximum (850)"),
        "{out:?}"
    );
}
