//! Firmware inventories and updates against the simulated BMCs: their
//! UpdateService fetches the image from the appliance's `/artifacts/` (or
//! takes it as a multipart push), runs a task whose PercentComplete
//! advances, can fail half-way, and counts how many updates ran at once.

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use openchami::redfish::sim::{SimBmcs, SimConfig};
use serde_json::{Value, json};

const IMAGE: &str = "bmc-2.0.bin";

async fn setup(f: impl FnOnce(&mut SimConfig)) -> (Harness, SimBmcs, tempfile::TempDir) {
    let mut c = SimConfig::loopback(4);
    c.updates.duration = Duration::from_millis(1500);
    f(&mut c);
    let s = SimBmcs::start(c, None).await.expect("simulated BMCs");
    let artifacts = tempfile::tempdir().expect("tempdir");
    std::fs::write(artifacts.path().join(IMAGE), vec![0x5a; 64 * 1024]).expect("image");
    let dir = artifacts.path().to_path_buf();
    let h = Harness::start_with(move |c| {
        c.power.sample_interval_secs = 0;
        c.boot.artifacts_dir = dir;
    })
    .await;
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
    assert_eq!(done["collected"], s.addrs().len(), "{done}");
    (h, s, artifacts)
}

async fn wait_update(h: &Harness, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = h.api.get_json(&format!("/firmware/v1/updates/{id}")).await;
        if j["state"] == "completed" {
            return j;
        }
        assert!(Instant::now() < deadline, "update never ended: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bmc_version(inv: &Value) -> &str {
    inv["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["Id"] == "BMC"))
        .and_then(|i| i["Version"].as_str())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_update_with_one_failure_keeps_to_the_cap() {
    let (h, s, _artifacts) = setup(|c| {
        c.updates.fail = vec![2];
        c.updates.multipart_only = vec![3];
    })
    .await;

    // Discovery collected every BMC's firmware inventory.
    let all = h.api.get_json("/firmware/v1/inventory").await;
    let bmcs = all["bmcs"].as_array().expect("bmcs");
    assert_eq!(bmcs.len(), 4, "{all}");
    for b in bmcs {
        assert_eq!(bmc_version(b), "sim-1.0");
        assert_eq!(b["items"].as_array().map(Vec::len), Some(3));
    }
    let nic = &h.api.get_json("/firmware/v1/inventory/x1000c0s1b0n0").await["items"][2];
    assert_eq!(
        *nic,
        json!({"Id": "NIC", "Name": "Onboard NIC", "Version": "22.31.6", "Updateable": false,
               "SoftwareId": "sim-nic", "@odata.id": "/redfish/v1/UpdateService/FirmwareInventory/NIC"})
    );

    h.api
        .post(
            "/hsm/v2/groups",
            &json!({"label": "fw", "members": {"ids": [
                "x1000c0s0b0n0", "x1000c0s1b0n0", "x1000c0s2b0n0", "x1000c0s3b0n0"]}}),
        )
        .await
        .status(201);
    let r = h
        .api
        .post(
            "/firmware/v1/updates",
            &json!({"image": IMAGE, "group": "fw", "maxParallel": 2}),
        )
        .await
        .status(202);
    let id = r.json()["id"].as_str().expect("id").to_string();
    assert_eq!(
        r.header("location"),
        Some(format!("/firmware/v1/updates/{id}").as_str())
    );
    let j = wait_update(&h, &id).await;
    // (BMC, result, method, message contains)
    let want = [
        (
            "x1000c0s0b0",
            "Completed",
            "SimpleUpdate",
            "BMC updated to bmc-2.0",
        ),
        (
            "x1000c0s1b0",
            "Completed",
            "SimpleUpdate",
            "BMC updated to bmc-2.0",
        ),
        (
            "x1000c0s2b0",
            "Exception",
            "SimpleUpdate",
            "Flash write of BMC failed at 50%",
        ),
        (
            "x1000c0s3b0",
            "Completed",
            "MultipartHttpPush",
            "BMC updated to bmc-2.0",
        ),
    ];
    for (bmc, status, method, message) in want {
        let b = j["bmcs"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["xname"] == bmc))
            .unwrap_or_else(|| panic!("no {bmc} in {j}"));
        assert_eq!(b["status"], status, "{bmc}: {b}");
        assert_eq!(b["method"], method, "{bmc}");
        assert!(
            b["message"].as_str().unwrap_or("").contains(message),
            "{bmc}: {b}"
        );
        assert!(
            b["task"]
                .as_str()
                .unwrap_or("")
                .starts_with("/redfish/v1/TaskService/Tasks/")
        );
    }
    assert_eq!(j["counts"], json!({"Completed": 3, "Exception": 1}));
    assert_eq!(s.updates_started(), 4);
    assert!(
        (1..=2).contains(&s.max_concurrent_updates()),
        "{} updates ran at once",
        s.max_concurrent_updates()
    );
    for (k, v) in [
        (0, "bmc-2.0"),
        (1, "bmc-2.0"),
        (2, "sim-1.0"),
        (3, "bmc-2.0"),
    ] {
        assert_eq!(s.bmc_version(k), v, "BMC {k}");
        // The inventory was re-read after a completed update.
        let inv = h
            .api
            .get_json(&format!("/firmware/v1/inventory/x1000c0s{k}b0"))
            .await;
        assert_eq!(bmc_version(&inv), v, "inventory of BMC {k}");
        assert_eq!(s.open_sessions(k), 0, "BMC {k} session left open");
    }
    let list = h.api.get_json("/firmware/v1/updates").await;
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1));

    // Refused before anything starts.
    let refused = [
        (
            json!({"image": "../etc/passwd", "targets": ["x1000c0s0b0"]}),
            400,
        ),
        (
            json!({"image": "missing.bin", "targets": ["x1000c0s0b0"]}),
            400,
        ),
        (json!({"image": IMAGE, "targets": ["x9999c0s0b0"]}), 400),
        (json!({"image": IMAGE, "targets": ["FAKE"]}), 400),
        (json!({"image": IMAGE}), 400),
        (
            json!({"image": IMAGE, "targets": ["x1000c0s0b0"], "maxParallel": 0}),
            400,
        ),
        (json!({"image": IMAGE, "group": "nosuch"}), 404),
    ];
    for (body, status) in refused {
        h.api
            .post("/firmware/v1/updates", &body)
            .await
            .problem(status);
    }
    assert_eq!(s.updates_started(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_outlasts_its_timeout_is_reported_timed_out() {
    let (h, s, _artifacts) = setup(|c| {
        c.addrs.truncate(1);
        c.updates.duration = Duration::from_secs(600);
    })
    .await;
    let r = h
        .api
        .post(
            "/firmware/v1/updates",
            &json!({"image": IMAGE, "targets": ["x1000c0s0b0n0"], "timeoutSecs": 1}),
        )
        .await
        .status(202);
    let j = wait_update(&h, r.json()["id"].as_str().expect("id")).await;
    assert_eq!(j["bmcs"][0]["status"], "TimedOut", "{j}");
    assert_eq!(s.bmc_version(0), "sim-1.0");
    assert_eq!(s.open_sessions(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_without_a_task_to_follow_is_judged_by_the_version() {
    // BMC 0 names a task that answers 404; BMC 1 does too and has no
    // FirmwareInventory to judge by.
    let (h, s, _artifacts) = setup(|c| {
        c.addrs.truncate(2);
        c.updates.no_task = vec![0, 1];
        c.updates.no_inventory = vec![1];
    })
    .await;
    let r = h
        .api
        .post(
            "/firmware/v1/updates",
            &json!({"image": IMAGE, "targets": ["x1000c0s0b0", "x1000c0s1b0"],
                    "timeoutSecs": 60}),
        )
        .await
        .status(202);
    let j = wait_update(&h, r.json()["id"].as_str().expect("id")).await;
    let bmc = |x: &str| {
        j["bmcs"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["xname"] == x))
            .cloned()
            .unwrap_or_else(|| panic!("no {x} in {j}"))
    };
    let b = bmc("x1000c0s0b0");
    assert_eq!(b["status"], "Completed", "{j}");
    assert_eq!(
        b["message"],
        "no task to follow; BMC Firmware is now bmc-2.0 (was sim-1.0)"
    );
    assert!(
        b["task"].as_str().unwrap_or("").contains("/gone-"),
        "the monitor the BMC named is kept: {b}"
    );
    let b = bmc("x1000c0s1b0");
    assert_eq!(b["status"], "Accepted", "{j}");
    assert!(
        b["message"]
            .as_str()
            .unwrap_or("")
            .contains("no task to follow and no FirmwareInventory"),
        "{b}"
    );
    assert_eq!(s.bmc_version(0), "bmc-2.0");
    let inv = h.api.get_json("/firmware/v1/inventory/x1000c0s0b0").await;
    assert_eq!(bmc_version(&inv), "bmc-2.0");
    for k in 0..2 {
        assert_eq!(s.open_sessions(k), 0, "BMC {k}");
    }
}

async fn cli(h: &Harness, args: &[&str]) -> std::process::Output {
    h.cli(args, Duration::from_secs(120)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_updates() {
    let (h, s, _artifacts) = setup(|c| c.addrs.truncate(2)).await;
    let out = cli(&h, &["firmware", "list", "-o", "json"]).await;
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["bmcs"].as_array().map(Vec::len), Some(2));
    let out = cli(
        &h,
        &[
            "firmware",
            "update",
            "--image",
            IMAGE,
            "--targets",
            "x1000c0s0b0n0,x1000c0s1b0",
            "--max-parallel",
            "1",
            "-o",
            "json",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["counts"], json!({"Completed": 2}), "{v}");
    assert_eq!(s.max_concurrent_updates(), 1);
    let out = cli(&h, &["firmware", "list", "x1000c0s1b0"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("bmc-2.0"),
        "{out:?}"
    );
}
