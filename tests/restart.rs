//! What must survive a restart on the same state directory: the inventory,
//! the CA root, the token signing key and the API certificate.

mod common;

use std::time::Duration;

use common::{Harness, four_nodes};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_and_keys_survive_a_restart() {
    let mut h = Harness::start().await;
    h.api
        .post("/hsm/v2/State/Components", &four_nodes())
        .await
        .status(204);
    h.api
        .post(
            "/hsm/v2/groups",
            &json!({"label": "compute", "description": "compute nodes", "tags": ["t"],
                    "members": {"ids": ["x1000c0s0b0n0", "x1000c0s1b0n0"]}}),
        )
        .await
        .status(201);
    h.api
        .post(
            "/hsm/v2/partitions",
            &json!({"name": "p1", "members": {"ids": ["x1000c0s2b0n0"]}}),
        )
        .await
        .status(201);
    h.api
        .post(
            "/hsm/v2/Defaults/NodeMaps",
            &json!({"NodeMaps": [{"ID": "x1000c0s9b0n0", "NID": 90}]}),
        )
        .await
        .ok();

    let components = h.api.get_json("/hsm/v2/State/Components").await;
    let groups = h.api.get_json("/hsm/v2/groups").await;
    let partitions = h.api.get_json("/hsm/v2/partitions").await;
    let node_maps = h.api.get_json("/hsm/v2/Defaults/NodeMaps").await;
    let root = h.root_pem();
    let fingerprint = h.app().state.root_fingerprint.clone();
    let jwks = h.anon.get_json("/.well-known/jwks.json").await;
    let leaf = h.anon.get("/healthz").await.ok().peer_cert.expect("leaf");
    let server_crt = std::fs::read(h.state_dir().join("ca/server.crt")).unwrap();
    let old_token = h.token_with("before", Duration::from_secs(3600), &[]);

    h.restart().await;

    assert_eq!(h.api.get_json("/hsm/v2/State/Components").await, components);
    assert_eq!(h.api.get_json("/hsm/v2/groups").await, groups);
    assert_eq!(h.api.get_json("/hsm/v2/partitions").await, partitions);
    assert_eq!(h.api.get_json("/hsm/v2/Defaults/NodeMaps").await, node_maps);
    assert_eq!(
        h.api.get_json("/hsm/v2/State/Components/ByNID/3").await["ID"],
        "x1000c0s2b0n0",
        "the NID index is rebuilt"
    );
    assert_eq!(
        h.api.get_json("/hsm/v2/memberships/x1000c0s0b0n0").await,
        json!({"id": "x1000c0s0b0n0", "groupLabels": ["compute"], "partitionName": ""})
    );

    // Same root, so clients that trusted it still do (the harness built its
    // new clients from the new root; check they are the same).
    assert_eq!(h.root_pem(), root);
    assert_eq!(h.app().state.root_fingerprint, fingerprint);
    assert_eq!(h.anon.get("/ca/root.pem").await.ok().text(), root);
    // A client holding the old root talks to the restarted appliance.
    common::Http::https(&h.api_base(), &root, Some(old_token.clone()))
        .get("/hsm/v2/groups")
        .await
        .ok();

    // Same signing key: a token issued before the restart is still good,
    // and the published keys are the same.
    h.api_with(Some(&old_token))
        .get("/hsm/v2/groups/compute")
        .await
        .ok();
    assert_eq!(h.anon.get_json("/.well-known/jwks.json").await, jwks);

    // Same server certificate.
    assert_eq!(
        std::fs::read(h.state_dir().join("ca/server.crt")).unwrap(),
        server_crt
    );
    assert_eq!(
        h.anon.get("/healthz").await.ok().peer_cert.expect("leaf"),
        leaf
    );

    // Writes continue from the stored state: the next NID follows on.
    h.api
        .post(
            "/hsm/v2/State/Components",
            &json!({"Components": [{"ID": "x1000c0s5b0n0", "State": "Ready"}]}),
        )
        .await
        .status(204);
    assert_eq!(
        h.api
            .get_json("/hsm/v2/State/Components/x1000c0s5b0n0")
            .await["NID"],
        5
    );
    h.api
        .post("/hsm/v2/groups", &json!({"label": "compute"}))
        .await
        .problem(409);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_leaves_nothing_behind_after_restart() {
    let mut h = Harness::start().await;
    h.api
        .post("/hsm/v2/State/Components", &four_nodes())
        .await
        .status(204);
    // The second component's NID clashes, so neither is written.
    h.api
        .post(
            "/hsm/v2/State/Components",
            &json!({"Components": [{"ID": "x1000c0s7b0n0", "State": "Ready", "NID": 70},
                                   {"ID": "x1000c0s8b0n0", "State": "Ready", "NID": 1}]}),
        )
        .await
        .problem(409);
    h.restart().await;
    h.api
        .get("/hsm/v2/State/Components/x1000c0s7b0n0")
        .await
        .problem(404);
    let all = h.api.get_json("/hsm/v2/State/Components").await;
    assert_eq!(all["Components"].as_array().unwrap().len(), 5);
    h.stop().await;
}
