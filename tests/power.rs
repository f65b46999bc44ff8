//! Power transitions, power status and discovery sessions against the
//! simulated BMCs of `openchami::redfish::sim` (which, unlike the emulator
//! of tests/redfish.rs, has a SessionService and counts open sessions, can
//! ignore a graceful shutdown and can be slow on purpose). Everything runs on
//! loopback in this process, plus the CLI binary for the user-facing commands.

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use openchami::redfish::sim::{SimBmcs, SimConfig, system_mac};
use serde_json::{Value, json};

async fn harness() -> Harness {
    Harness::start_with(|c| {
        c.power.poll_interval_secs = 1;
        c.power.escalation_secs = 5;
        c.power.sample_interval_secs = 0;
    })
    .await
}

async fn sims(f: impl FnOnce(&mut SimConfig)) -> SimBmcs {
    let mut c = SimConfig::loopback(2);
    f(&mut c);
    SimBmcs::start(c, None).await.expect("simulated BMCs")
}

fn addrs(s: &SimBmcs) -> Vec<String> {
    s.addrs().iter().map(|a| a.to_string()).collect()
}

async fn wait_job(h: &Harness, job: &Value) -> Value {
    h.wait_job(job, Duration::from_secs(120)).await
}

/// Collects the sims with the default credential; two BMCs share
/// 127.0.0.1, so a BMC ID map names them.
async fn collect(h: &Harness, s: &SimBmcs) -> Value {
    h.api
        .put(
            "/discovery/v1/credentials/default",
            &json!({"username": "admin", "password": "password"}),
        )
        .await
        .ok();
    let map: serde_json::Map<String, Value> = addrs(s)
        .iter()
        .enumerate()
        .map(|(k, a)| (a.clone(), json!(format!("x1000c0s{k}b0"))))
        .collect();
    let job = h
        .api
        .post(
            "/discovery/v1/collect",
            &json!({"targets": addrs(s), "bmc_id_map": {"map_key": "bmc-ip-addr", "id_map": map}}),
        )
        .await
        .status(202)
        .json();
    wait_job(h, &job).await
}

async fn start_transition(h: &Harness, op: &str, deadline: f64, xnames: &[&str]) -> String {
    let loc: Vec<Value> = xnames.iter().map(|x| json!({"xname": x})).collect();
    let r = h
        .api
        .post(
            "/transitions",
            &json!({"operation": op, "taskDeadlineMinutes": deadline, "location": loc}),
        )
        .await
        .ok();
    assert_eq!(
        r.header("location")
            .map(|l| l.starts_with("/power-control/v1/transitions/")),
        Some(true)
    );
    r.json()["transitionID"].as_str().expect("id").to_string()
}

async fn wait_transition(h: &Harness, id: &str) -> Value {
    h.wait_transition(id, Duration::from_secs(120)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_deleted_after_every_piece_of_work() {
    let s = sims(|_| {}).await;
    let h = harness().await;
    let done = collect(&h, &s).await;
    assert_eq!(done["collected"], 2, "{done}");
    let check = |what: &str| {
        for k in 0..2 {
            assert!(s.sessions_created(k) > 0, "{what}: BMC {k} had a session");
            assert_eq!(s.open_sessions(k), 0, "{what}: BMC {k} session left open");
        }
    };
    check("collect");
    // The node MACs came through the session-authenticated crawl.
    let snap = h.app().state.store.snapshot();
    assert_eq!(
        snap.interfaces[&system_mac(1, 0).replace(':', "")].component_id,
        "x1000c0s1b0n0"
    );
    drop(snap);

    let id = start_transition(&h, "on", 1.0, &["x1000c0s0b0n0", "x1000c0s1b0n0"]).await;
    let t = wait_transition(&h, &id).await;
    assert_eq!(t["taskCounts"]["succeeded"], 2, "{t}");
    assert!(s.power(0, 0) && s.power(1, 0));
    check("power on");

    let st = h
        .api
        .post(
            "/power-control/v1/power-status",
            &json!({"xname": ["x1000c0s0b0n0"]}),
        )
        .await
        .ok()
        .json();
    assert_eq!(st["status"][0]["powerState"], "on", "{st}");
    check("power status");

    // A crawl cancelled half-way still logs out.
    let slow = sims(|c| c.latency = Duration::from_millis(700)).await;
    let job = h
        .api
        .post("/discovery/v1/collect", &json!({"targets": addrs(&slow)}))
        .await
        .status(202)
        .json();
    let deadline = Instant::now() + Duration::from_secs(30);
    while slow.sessions_created(0) == 0 || slow.sessions_created(1) == 0 {
        assert!(Instant::now() < deadline, "no login on the slow BMCs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.api
        .delete(&format!(
            "/discovery/v1/jobs/{}",
            job["id"].as_str().unwrap()
        ))
        .await
        .status(202);
    let done = wait_job(&h, &job).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    for k in 0..2 {
        assert_eq!(
            slow.open_sessions(k),
            0,
            "cancelled crawl left a session open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_escalates_to_force_off_at_the_deadline() {
    let s = sims(|c| {
        c.ignore_graceful_shutdown = true;
        c.power_on = true;
    })
    .await;
    let h = harness().await;
    assert_eq!(collect(&h, &s).await["collected"], 2);
    // soft-off never escalates: the deadline passes and the task fails.
    let id = start_transition(&h, "soft-off", 0.05, &["x1000c0s1b0n0"]).await;
    let t = wait_transition(&h, &id).await;
    assert_eq!(t["tasks"][0]["taskStatus"], "failed", "{t}");
    assert_eq!(
        t["tasks"][0]["taskStatusDescription"],
        "Failed to achieve transition"
    );
    assert!(
        t["tasks"][0]["error"]
            .as_str()
            .unwrap()
            .contains("deadline reached"),
        "{t}"
    );
    assert!(s.power(1, 0));
    // off sends ForceOff at the deadline.
    let id = start_transition(&h, "off", 0.05, &["x1000c0s0b0n0"]).await;
    let t = wait_transition(&h, &id).await;
    assert_eq!(t["tasks"][0]["taskStatus"], "succeeded", "{t}");
    assert_eq!(
        t["tasks"][0]["taskStatusDescription"],
        "Transition confirmed, forceoff"
    );
    assert_eq!(s.resets(0), vec!["GracefulShutdown", "ForceOff"]);
    assert!(!s.power(0, 0));
    // Unknown xnames fail their task; bad ones and bad operations are 400s.
    let id = start_transition(&h, "on", 1.0, &["x9c0s0b0n0"]).await;
    let t = wait_transition(&h, &id).await;
    assert_eq!(t["tasks"][0]["taskStatus"], "failed");
    assert_eq!(t["taskCounts"]["failed"], 1);
    h.api
        .post(
            "/transitions",
            &json!({"operation": "reboot", "location": [{"xname": "x1000c0s0b0n0"}]}),
        )
        .await
        .problem(400);
    h.api
        .post(
            "/transitions",
            &json!({"operation": "on", "location": [{"xname": "bogus"}]}),
        )
        .await
        .problem(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_abort_and_a_restart_ends_them() {
    let s = sims(|c| c.ignore_graceful_shutdown = true).await;
    let mut h = harness().await;
    assert_eq!(collect(&h, &s).await["collected"], 2);
    s.set_power(0, 0, true);
    // No deadline: waits for a shutdown that never comes, until aborted.
    let id = start_transition(&h, "soft-off", -1.0, &["x1000c0s0b0n0"]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.resets(0).is_empty() {
        assert!(Instant::now() < deadline, "no reset sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = h
        .api
        .delete(&format!("/power-control/v1/transitions/{id}"))
        .await
        .status(202)
        .json();
    assert_eq!(r["abortStatus"], "Accepted - abort initiated");
    let t = wait_transition(&h, &id).await;
    assert_eq!(t["transitionStatus"], "aborted", "{t}");
    assert_eq!(t["tasks"][0]["taskStatusDescription"], "Aborted");
    assert_eq!(t["tasks"][0]["error"], "Transition aborted");
    h.api
        .delete(&format!("/power-control/v1/transitions/{id}"))
        .await
        .problem(400);
    h.api
        .delete("/power-control/v1/transitions/00000000-0000-4000-8000-000000000000")
        .await
        .problem(404);
    for k in 0..2 {
        assert_eq!(s.open_sessions(k), 0);
    }

    // A transition running when the appliance stops is aborted, and stays
    // so (persisted) after the restart.
    s.set_power(1, 0, true);
    let id = start_transition(&h, "soft-off", -1.0, &["x1000c0s1b0n0"]).await;
    while s.resets(1).is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.restart().await;
    let t = h
        .api
        .get_json(&format!("/power-control/v1/transitions/{id}"))
        .await;
    assert_eq!(t["transitionStatus"], "aborted", "{t}");
    assert_eq!(t["tasks"][0]["taskStatus"], "failed", "{t}");
    let list = h.api.get_json("/power-control/v1/transitions").await;
    assert_eq!(list["transitions"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_keeps_component_state_current() {
    let s = sims(|_| {}).await;
    let h = Harness::start_with(|c| {
        c.power.poll_interval_secs = 1;
        c.power.sample_interval_secs = 1;
    })
    .await;
    assert_eq!(collect(&h, &s).await["collected"], 2);
    let state = |h: &Harness| {
        h.app().state.store.snapshot().components["x1000c0s0b0n0"]
            .state
            .clone()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while state(&h) != "Off" {
        assert!(Instant::now() < deadline, "state stays {}", state(&h));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.set_power(0, 0, true);
    while state(&h) != "On" {
        assert!(Instant::now() < deadline, "state stays {}", state(&h));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = h
        .api
        .get_json("/power-status?powerStateFilter=off&managementStateFilter=available")
        .await;
    let xs: Vec<&str> = st["status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["xname"].as_str().unwrap())
        .collect();
    assert_eq!(xs, vec!["x1000c0s1b0n0"], "{st}");
    h.api
        .get("/power-status?powerStateFilter=sideways")
        .await
        .problem(400);
}

async fn cli(h: &Harness, args: &[&str]) -> std::process::Output {
    let mut c = h.cli_command(args);
    c.env("SIM_PW", "password");
    common::output_within(c, Duration::from_secs(120)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_discovers_and_powers() {
    let s = sims(|c| c.addrs.truncate(1)).await;
    let h = harness().await;
    let a = addrs(&s)[0].clone();
    let out = cli(
        &h,
        &[
            "discover",
            "credentials",
            "set",
            "default",
            "--username",
            "admin",
            "--password-env",
            "SIM_PW",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("password"), "{stdout}");
    let out = cli(&h, &["discover", "collect", &a]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "no bar off a terminal: {out:?}");
    assert!(
        stdout.contains("x4064c0s0b1") && stdout.contains("collected"),
        "{stdout}"
    );
    assert!(
        stdout.contains("found 1, collected 1, failed 0, skipped 0"),
        "{stdout}"
    );

    let out = cli(&h, &["power", "on", "x4064c0s0b1n0"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("succeeded") && stdout.contains("Transition confirmed, on"),
        "{stdout}"
    );
    assert!(s.power(0, 0));

    let out = cli(&h, &["power", "status", "x4064c0s0b1n0", "-o", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["status"][0]["powerState"], "on");

    let out = cli(
        &h,
        &["power", "off", "--force", "--no-wait", "x4064c0s0b1n0"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let t = wait_transition(&h, &id).await;
    assert_eq!(t["operation"], "Force-Off");
    assert_eq!(t["tasks"][0]["taskStatus"], "succeeded");

    // A node without a BMC: the table is printed, the exit code says failed.
    let out = cli(&h, &["power", "on", "x9c0s0b0n0"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "openchami: 1 of 1 nodes failed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Missing xname"));
    let out = cli(&h, &["power", "on"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "openchami: name nodes (xnames) or --group"
    );
}

/// Upstream PCS's shapes and words, which its clients and black-box tests
/// read: transition members, task texts, unknown and powerless targets,
/// transition IDs, power-status of absent components, health. A confirmed
/// transition writes the component State at once (the sampler is off here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_and_status_follow_upstream_pcs() {
    let s = sims(|_| {}).await;
    let h = harness().await;
    assert_eq!(collect(&h, &s).await["collected"], 2);
    let n0 = "x1000c0s0b0n0";
    let state = |h: &Harness| h.app().state.store.snapshot().components[n0].state.clone();
    let task = |t: &Value| {
        (
            t["tasks"][0]["taskStatus"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            t["tasks"][0]["taskStatusDescription"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            t["tasks"][0]["error"].as_str().unwrap_or("").to_string(),
        )
    };
    // (operation, target, task status, description, error, State after)
    let table = [
        (
            "on",
            n0,
            "succeeded",
            "Transition confirmed, on",
            "",
            Some("On"),
        ),
        (
            "on",
            n0,
            "succeeded",
            "Component already in desired state",
            "",
            Some("On"),
        ),
        (
            "off",
            n0,
            "succeeded",
            "Transition confirmed, gracefulshutdown",
            "",
            Some("Off"),
        ),
        (
            "off",
            n0,
            "succeeded",
            "Component already in desired state",
            "",
            Some("Off"),
        ),
        (
            "on",
            "x9999c7s9b9n9",
            "failed",
            "Failed to achieve transition",
            "Missing xname",
            None,
        ),
        (
            "on",
            "x1000c0s0b0",
            "unsupported",
            "Component does not support the specified transition operation, On",
            "Unsupported for transition operation",
            None,
        ),
    ];
    for (op, x, status, desc, error, after) in table {
        let id = start_transition(&h, op, 1.0, &[x]).await;
        let t = wait_transition(&h, &id).await;
        assert_eq!(
            task(&t),
            (status.into(), desc.into(), error.into()),
            "{op} {x}: {t}"
        );
        if let Some(after) = after {
            assert_eq!(state(&h), after, "{op} {x}");
        }
        // Exactly upstream's members; integers stay integers.
        let mut keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "automaticExpirationTime",
                "createTime",
                "operation",
                "taskCounts",
                "tasks",
                "transitionID",
                "transitionStatus"
            ]
        );
        assert!(t["taskCounts"]["total"].is_u64(), "{t}");
        let counted = if status == "unsupported" {
            "un-supported"
        } else {
            status
        };
        assert_eq!(t["taskCounts"][counted], 1, "{t}");
    }
    let list = h.api.get_json("/transitions").await;
    for t in list["transitions"].as_array().unwrap() {
        assert!(
            t.get("taskDeadlineMinutes").is_none() && t.get("tasks").is_none(),
            "{t}"
        );
    }

    // Transition IDs are checked as upstream checks UUIDs.
    for (id, status, detail) in [
        ("FAKE", 400, "invalid UUID length: 4"),
        (
            "9z99z999-999z-999z-z9zz-zz9z99z9zzzz",
            400,
            "invalid UUID format",
        ),
        ("00000000-0000-4000-8000-000000000000", 404, ""),
    ] {
        let path = format!("/power-control/v1/transitions/{id}");
        for p in [
            h.api.get(&path).await.problem(status),
            h.api.delete(&path).await.problem(status),
        ] {
            if !detail.is_empty() {
                assert_eq!(p["detail"], detail, "{id}");
            }
        }
    }

    // power-status: an absent component, and upstream's refusals.
    let st = h.api.get_json("/power-status?xname=x9999c7s9b9n9").await;
    assert_eq!(
        st,
        json!({"status": [{"xname": "x9999c7s9b9n9", "powerState": "", "managementState": "",
            "error": "Component not found in component map.", "supportedPowerTransitions": [],
            "lastUpdated": ""}]})
    );
    for (path, detail) in [
        ("/power-status?xname=FAKE", "invalid xnames detected: FAKE"),
        (
            "/power-status?powerStateFilter=FAKE",
            "invalid powerStateFilter type: FAKE",
        ),
        (
            "/power-status?managementStateFilter=FAKE",
            "invalid ManagementStateFilter type: FAKE",
        ),
    ] {
        assert_eq!(
            h.api.get(path).await.problem(400)["detail"],
            detail,
            "{path}"
        );
    }
    assert_eq!(
        h.api
            .post("/power-status", &json!({"xname": ["FAKE"]}))
            .await
            .problem(400)["detail"],
        "invalid xnames detected: FAKE"
    );
    assert_eq!(
        h.anon.get_json("/health").await,
        json!({"KvStore": "connected, responsive", "DistLocking": "connected, responsive",
               "StateManager": "connected, responsive", "Vault": "connected, responsive",
               "TaskRunner": "connected, responsive, local mode"})
    );
}

/// Discovery records the services each BMC's root links as SMD
/// ServiceEndpoints; a BMC without some of them simply has fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_records_service_endpoints() {
    // BMC 0 offers a SessionService, BMC 1 does not.
    let s = sims(|_| {}).await;
    let plain = sims(|c| {
        c.sessions = false;
        c.addrs.truncate(1);
    })
    .await;
    let h = harness().await;
    assert_eq!(collect(&h, &s).await["collected"], 2);
    const SE: &str = "/hsm/v2/Inventory/ServiceEndpoints";
    let kinds = |v: &Value, bmc: &str| -> Vec<String> {
        let mut k: Vec<String> = v["ServiceEndpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["RedfishEndpointID"] == bmc)
            .map(|e| e["RedfishType"].as_str().unwrap().to_string())
            .collect();
        k.sort();
        k
    };
    // The BMC without a SessionService, in an appliance of its own (the
    // simulators' MACs repeat across sets).
    let h2 = harness().await;
    assert_eq!(collect(&h2, &plain).await["collected"], 1);
    assert_eq!(
        kinds(&h2.api.get_json(SE).await, "x1000c0s0b0"),
        ["AccountService", "EventService", "UpdateService"]
    );
    let all = h.api.get_json(SE).await;
    assert_eq!(
        kinds(&all, "x1000c0s0b0"),
        [
            "AccountService",
            "EventService",
            "SessionService",
            "UpdateService"
        ]
    );

    let one = h
        .api
        .get_json(&format!("{SE}/AccountService/RedfishEndpoints/x1000c0s0b0"))
        .await;
    let fqdn = one["RedfishEndpointFQDN"].as_str().unwrap().to_string();
    assert_eq!(
        one,
        json!({"RedfishEndpointID": "x1000c0s0b0", "RedfishType": "AccountService",
               "UUID": "5ee1b3c0-0000-4000-8000-000000000000",
               "OdataID": "/redfish/v1/AccountService", "RedfishEndpointFQDN": fqdn,
               "RedfishURL": format!("{fqdn}/redfish/v1/AccountService"),
               "ServiceInfo": {"ServiceEnabled": true}})
    );
    for (path, n) in [
        (format!("{SE}/SessionService"), 2),
        (
            format!("{SE}?service=UpdateService&service=AccountService"),
            4,
        ),
        (format!("{SE}?redfish_ep=x1000c0s1b0"), 4),
        (format!("{SE}?service=TaskService"), 0),
    ] {
        let v = h.api.get_json(&path).await;
        assert_eq!(v["ServiceEndpoints"].as_array().unwrap().len(), n, "{path}");
    }
    // As upstream: an absent pairing is a 404, a malformed xname a 400 on
    // GET; DELETE answers 404 for both.
    let missing = format!("{SE}/TaskService/RedfishEndpoints/x1000c0s0b0");
    for p in [
        h.api.get(&missing).await.problem(404),
        h.api.delete(&missing).await.problem(404),
        h.api
            .delete(&format!("{SE}/AccountService/RedfishEndpoints/FAKE"))
            .await
            .problem(404),
    ] {
        assert_eq!(p["detail"], "no such service under redfish endpoint.");
    }
    h.api
        .get(&format!(
            "{SE}/AccountService/RedfishEndpoints/x1025000c7s4b4"
        ))
        .await
        .problem(400);
    let one = format!("{SE}/AccountService/RedfishEndpoints/x1000c0s0b0");
    assert_eq!(
        h.api.delete(&one).await.ok().json(),
        json!({"code": 0, "message": "deleted 1 entry"})
    );
    h.api.get(&one).await.problem(404);
    // Not part of the RedfishEndpoint's own shape.
    let ep = h
        .api
        .get_json("/hsm/v2/Inventory/RedfishEndpoints/x1000c0s0b0")
        .await;
    assert!(ep.get("ServiceEndpoints").is_none(), "{ep}");
    h.api.delete(SE).await.ok();
    h.api.delete(SE).await.problem(404);
    // A re-collect records them again.
    assert_eq!(collect(&h, &s).await["collected"], 2);
    let v = h
        .api
        .get_json(&format!("{SE}?redfish_ep=x1000c0s0b0"))
        .await;
    assert_eq!(v["ServiceEndpoints"].as_array().unwrap().len(), 4);
}
