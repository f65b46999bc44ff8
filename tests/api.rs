//! The HTTP API against a whole appliance: bad input is refused with
//! problem+json and changes nothing; the SMD behaviours clients rely on work.

mod common;

use std::time::Duration;

use common::{Harness, four_nodes};
use reqwest::Method;
use serde_json::{Value, json};

const COMPONENTS: &str = "/hsm/v2/State/Components";

/// IDs of a `{"Components":[…]}` answer, in order.
fn ids(v: &Value) -> Vec<String> {
    v["Components"]
        .as_array()
        .unwrap_or_else(|| panic!("no Components array: {v}"))
        .iter()
        .map(|c| c["ID"].as_str().expect("ID").to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn with_nodes() -> Harness {
    let h = Harness::start().await;
    h.api.post(COMPONENTS, &four_nodes()).await.status(204);
    h
}

async fn component(h: &Harness, id: &str) -> Value {
    h.api.get_json(&format!("{COMPONENTS}/{id}")).await
}

// ---------------------------------------------------------------- bad input

/// Sends a write that must be refused with `status` and asserts that the
/// inventory did not change.
async fn refused(h: &Harness, method: Method, path: &str, body: &str, status: u16) -> Value {
    let before = h.generation();
    let p = h
        .api
        .call_raw(method, path, body.as_bytes().to_vec())
        .await
        .problem(status);
    assert_eq!(h.generation(), before, "a refused write changed the store");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let h = with_nodes().await;
    let p = refused(
        &h,
        Method::POST,
        COMPONENTS,
        r#"{"Components":[{"ID":"#,
        400,
    )
    .await;
    assert_eq!(p["title"], "Bad Request");
    refused(&h, Method::POST, COMPONENTS, "", 400).await;
    refused(&h, Method::POST, "/hsm/v2/groups", "not json", 400).await;
    refused(&h, Method::POST, "/inventory/v1/import", "{", 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_are_400() {
    let h = with_nodes().await;
    let p = refused(
        &h,
        Method::POST,
        COMPONENTS,
        r#"{"Components":[{"ID":"x1000c0s9b0n0","State":"Ready","NID":"one"}]}"#,
        400,
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("invalid"),
        "detail names the problem: {p}"
    );
    refused(&h, Method::POST, COMPONENTS, r#"{"Components":{}}"#, 400).await;
    refused(
        &h,
        Method::PATCH,
        &format!("{COMPONENTS}/x1000c0s0b0n0/Enabled"),
        r#"{"Enabled":"yes"}"#,
        400,
    )
    .await;
    refused(
        &h,
        Method::POST,
        "/hsm/v2/groups",
        r#"{"label":"g","members":{"ids":"x1000c0s0b0n0"}}"#,
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_xnames_are_400() {
    let h = with_nodes().await;
    let p = refused(
        &h,
        Method::POST,
        COMPONENTS,
        r#"{"Components":[{"ID":"x1000q0","State":"Ready"}]}"#,
        400,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("x1000q0"), "{p}");
    // A Type that does not fit the xname.
    refused(
        &h,
        Method::POST,
        COMPONENTS,
        r#"{"Components":[{"ID":"x1000c0s0b0","Type":"Node","State":"Ready"}]}"#,
        400,
    )
    .await;
    refused(
        &h,
        Method::PUT,
        &format!("{COMPONENTS}/nonsense"),
        r#"{"Component":{"State":"Ready"}}"#,
        400,
    )
    .await;
    h.api
        .get(&format!("{COMPONENTS}/not-an-xname"))
        .await
        .problem(400);
    h.api
        .get(&format!("{COMPONENTS}?id=bogus"))
        .await
        .problem(400);
    // Members must be valid xnames too.
    refused(
        &h,
        Method::POST,
        "/hsm/v2/groups",
        r#"{"label":"g","members":{"ids":["zzz"]}}"#,
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_enumerations_are_400() {
    let h = with_nodes().await;
    let p = refused(
        &h,
        Method::POST,
        COMPONENTS,
        r#"{"Components":[{"ID":"x1000c0s9b0n0","State":"Bogus"}]}"#,
        400,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("Bogus"), "{p}");
    for body in [
        r#"{"Components":[{"ID":"x1000c0s9b0n0","State":"Ready","Flag":"Bogus"}]}"#,
        r#"{"Components":[{"ID":"x1000c0s9b0n0","State":"Ready","Arch":"Bogus"}]}"#,
        r#"{"Components":[{"ID":"x1000c0s9b0n0","State":"Ready","Class":"Bogus"}]}"#,
        r#"{"Components":[{"ID":"x1000c0s9b0n0","State":"Ready","NetType":"Bogus"}]}"#,
        r#"{"Components":[{"ID":"x1000c0s9b0n0","State":"Ready","Type":"Bogus"}]}"#,
        r#"{"Components":[{"ID":"x1000c0s9b0n0"}]}"#,
    ] {
        refused(&h, Method::POST, COMPONENTS, body, 400).await;
    }
    refused(
        &h,
        Method::PATCH,
        &format!("{COMPONENTS}/x1000c0s0b0n0/StateData"),
        r#"{"State":"Bogus","Force":true}"#,
        400,
    )
    .await;
    // Input is case-insensitive: `ready` is Ready.
    h.api
        .post(
            COMPONENTS,
            &json!({"Components":[{"ID":"x1000c0s9b0n0","State":"ready","Role":"compute"}]}),
        )
        .await
        .status(204);
    let c = component(&h, "x1000c0s9b0n0").await;
    assert_eq!(
        (c["State"].as_str(), c["Role"].as_str()),
        (Some("Ready"), Some("Compute"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_nid_is_409() {
    let h = with_nodes().await;
    let p = refused(
        &h,
        Method::POST,
        COMPONENTS,
        r#"{"Components":[{"ID":"x1000c0s9b0n0","State":"Ready","NID":1}]}"#,
        409,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("NID 1"), "{p}");
    refused(
        &h,
        Method::PATCH,
        &format!("{COMPONENTS}/x1000c0s1b0n0/NID"),
        r#"{"NID":1}"#,
        409,
    )
    .await;
    refused(
        &h,
        Method::PATCH,
        &format!("{COMPONENTS}/BulkNID"),
        r#"{"Components":[{"ID":"x1000c0s1b0n0","NID":3}]}"#,
        409,
    )
    .await;
    // Two new components with the same NID in one batch.
    refused(
        &h,
        Method::POST,
        COMPONENTS,
        r#"{"Components":[{"ID":"x1000c0s8b0n0","State":"Ready","NID":70},{"ID":"x1000c0s9b0n0","State":"Ready","NID":70}]}"#,
        409,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_group_label_is_409() {
    let h = with_nodes().await;
    h.api
        .post("/hsm/v2/groups", &json!({"label": "compute"}))
        .await
        .status(201);
    refused(
        &h,
        Method::POST,
        "/hsm/v2/groups",
        r#"{"label":"compute"}"#,
        409,
    )
    .await;
    // Labels are case-insensitive.
    refused(
        &h,
        Method::POST,
        "/hsm/v2/groups",
        r#"{"label":"COMPUTE"}"#,
        409,
    )
    .await;
    refused(
        &h,
        Method::POST,
        "/hsm/v2/groups",
        r#"{"label":"bad label!"}"#,
        400,
    )
    .await;
    // Adding a member twice.
    h.api
        .post(
            "/hsm/v2/groups/compute/members",
            &json!({"id": "x1000c0s0b0n0"}),
        )
        .await
        .status(201);
    refused(
        &h,
        Method::POST,
        "/hsm/v2/groups/compute/members",
        r#"{"id":"x1000c0s0b0n0"}"#,
        409,
    )
    .await;
    // Members must exist.
    refused(
        &h,
        Method::POST,
        "/hsm/v2/groups/compute/members",
        r#"{"id":"x1000c0s9b0n0"}"#,
        400,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() {
    let h = Harness::start_with(|c| c.http.max_body_bytes = 256).await;
    let before = h.generation();
    let comps: Vec<Value> = (0..50)
        .map(|i| json!({"ID": format!("x1000c0s{i}b0n0"), "State": "Ready"}))
        .collect();
    let body = json!({ "Components": comps });
    assert!(body.to_string().len() > 256);
    let p = h.api.post(COMPONENTS, &body).await.problem(413);
    assert_eq!(p["title"], "Payload Too Large");
    assert_eq!(h.generation(), before);
    assert_eq!(h.api.get_json(COMPONENTS).await, json!({"Components": []}));
    // Small bodies still pass.
    h.api
        .post(
            COMPONENTS,
            &json!({"Components":[{"ID":"x1000c0s0b0n0","State":"Ready"}]}),
        )
        .await
        .status(204);
}

// ------------------------------------------------------------------- tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_401_with_a_challenge() {
    let h = with_nodes().await;
    let before = h.generation();
    for (method, path) in [
        (Method::GET, "/hsm/v2/groups"),
        (Method::POST, COMPONENTS),
        (Method::DELETE, COMPONENTS),
        (Method::GET, "/metrics"),
    ] {
        let r = h
            .anon
            .call(method, path, Some(&json!({"Components": []})))
            .await;
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{}", r.what);
        r.problem(401);
    }
    // A scheme other than Bearer, or an empty token, is no token.
    let r = h
        .anon
        .send(
            h.anon
                .request(Method::GET, "/hsm/v2/groups")
                .header("authorization", format!("Basic {}", h.token)),
        )
        .await;
    r.problem(401);
    let r = h
        .anon
        .send(
            h.anon
                .request(Method::GET, "/hsm/v2/groups")
                .header("authorization", "Bearer "),
        )
        .await;
    r.problem(401);
    // Garbage is refused, not a 500.
    h.anon
        .with_token(Some("a.b.c"))
        .get("/hsm/v2/groups")
        .await
        .problem(401);
    // Upstream SMD's `jwt` cookie is accepted.
    let r = h
        .anon
        .send(
            h.anon
                .request(Method::GET, "/hsm/v2/groups")
                .header("cookie", format!("other=1; jwt={}", h.token)),
        )
        .await;
    r.ok();
    assert_eq!(h.generation(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_401() {
    let h = with_nodes().await;
    let before = h.generation();
    let two_hours_ago = common::now() - 7200;
    let old = h.token_at("old", Duration::from_secs(600), &[], two_hours_ago);
    let c = h.api_with(Some(&old));
    let p = c.get("/hsm/v2/groups").await.problem(401);
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    c.post(COMPONENTS, &four_nodes()).await.problem(401);
    // Not valid yet (issued an hour from now).
    let future = h.token_at(
        "future",
        Duration::from_secs(600),
        &[],
        common::now() + 3600,
    );
    h.api_with(Some(&future))
        .get("/hsm/v2/groups")
        .await
        .problem(401);
    assert_eq!(h.generation(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_a_foreign_key_is_401() {
    let h = with_nodes().await;
    let before = h.generation();
    let other = tempfile::tempdir().unwrap();
    let foreign = openchami::ca::token::TokenKeys::load_or_create(other.path()).unwrap();
    let st = &h.app().state;
    let token = foreign
        .issue(
            "mallory",
            &st.issuer,
            &st.config.auth.audience,
            Duration::from_secs(600),
            &[],
            common::now(),
        )
        .unwrap();
    let c = h.api_with(Some(&token));
    c.get("/hsm/v2/groups").await.problem(401);
    c.delete(COMPONENTS).await.problem(401);
    // Our header and claims with a foreign signature.
    let ours = h.token.clone();
    let (head_payload, _) = ours.rsplit_once('.').unwrap();
    let (_, foreign_sig) = token.rsplit_once('.').unwrap();
    let forged = format!("{head_payload}.{foreign_sig}");
    h.api_with(Some(&forged))
        .delete(COMPONENTS)
        .await
        .problem(401);
    assert_eq!(h.generation(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_audience_or_issuer_is_401() {
    let h = with_nodes().await;
    let before = h.generation();
    let st = &h.app().state;
    let wrong_aud = st
        .tokens
        .issue(
            "svc",
            &st.issuer,
            "someone-else",
            Duration::from_secs(600),
            &[],
            common::now(),
        )
        .unwrap();
    let p = h
        .api_with(Some(&wrong_aud))
        .get("/hsm/v2/groups")
        .await
        .problem(401);
    assert!(p["detail"].as_str().unwrap().contains("audience"), "{p}");
    let wrong_iss = st
        .tokens
        .issue(
            "svc",
            "https://elsewhere.example:8443",
            &st.config.auth.audience,
            Duration::from_secs(600),
            &[],
            common::now(),
        )
        .unwrap();
    h.api_with(Some(&wrong_iss))
        .post(COMPONENTS, &four_nodes())
        .await
        .problem(401);
    assert_eq!(h.generation(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_may_read_but_not_write() {
    let h = with_nodes().await;
    let before = h.generation();
    let viewer = h.api_with(Some(&h.token_with(
        "viewer",
        Duration::from_secs(600),
        &["viewer"],
    )));
    viewer.get("/hsm/v2/groups").await.ok();
    viewer
        .get(&format!("{COMPONENTS}/x1000c0s0b0n0"))
        .await
        .ok();
    let p = viewer
        .post("/hsm/v2/groups", &json!({"label": "g"}))
        .await
        .problem(403);
    assert!(p["detail"].as_str().unwrap().contains("viewer"), "{p}");
    viewer.delete(COMPONENTS).await.problem(403);
    viewer
        .patch(
            &format!("{COMPONENTS}/x1000c0s0b0n0/Enabled"),
            &json!({"Enabled": false}),
        )
        .await
        .problem(403);
    assert_eq!(h.generation(), before);

    let operator = h.api_with(Some(&h.token_with(
        "op",
        Duration::from_secs(600),
        &["viewer", "operator"],
    )));
    operator
        .post("/hsm/v2/groups", &json!({"label": "g"}))
        .await
        .status(201);
    assert_eq!(h.generation(), before + 1);
}

// -------------------------------------------------------- routing and errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_a_404_problem() {
    let h = Harness::start().await;
    let p = h.api.get("/hsm/v2/NoSuchThing").await.problem(404);
    assert_eq!(p["type"], "about:blank");
    h.anon.get("/nowhere").await.problem(404);
    h.node.get("/hsm/v2/groups").await.problem(404);
    h.node.get("/nowhere").await.problem(404);
    // An unknown PATCH kind under a component.
    h.api
        .patch(&format!("{COMPONENTS}/x1000c0s0b0n0/Nonsense"), &json!({}))
        .await
        .problem(404);
    // A component that does not exist.
    let p = h
        .api
        .get(&format!("{COMPONENTS}/x1000c0s0b0n9"))
        .await
        .problem(404);
    // Upstream's words, which its tests compare.
    assert_eq!(p["detail"], "no such xname.");
    h.api.get("/hsm/v2/groups/nope").await.problem(404);
    h.api.get("/hsm/v2/service/values/nope").await.problem(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_405_with_allow() {
    let h = Harness::start().await;
    let before = h.generation();
    let r = h
        .api
        .put("/hsm/v2/groups", &json!({"label": "compute"}))
        .await;
    let allow = r.header("allow").unwrap_or("").to_string();
    let p = r.problem(405);
    assert_eq!(p["title"], "Method Not Allowed");
    let mut methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    methods.sort();
    assert_eq!(methods, ["GET", "HEAD", "POST"], "Allow: {allow}");
    let r = h.anon.delete("/healthz").await;
    assert!(r.header("allow").is_some_and(|a| a.contains("GET")));
    r.problem(405);
    let r = h.node.post("/ca/root.pem", &json!({})).await;
    assert!(r.header("allow").is_some_and(|a| a.contains("GET")));
    r.problem(405);
    assert_eq!(h.generation(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_slash_and_alias_prefix() {
    let h = with_nodes().await;
    let plain = h.api.get_json(COMPONENTS).await;
    assert_eq!(h.api.get_json(&format!("{COMPONENTS}/")).await, plain);
    assert_eq!(
        h.api.get_json("/apis/smd/hsm/v2/State/Components").await,
        plain
    );
    assert_eq!(
        h.api
            .get_json("/apis/smd/hsm/v2/State/Components/?type=Node")
            .await,
        h.api.get_json(&format!("{COMPONENTS}?type=Node")).await
    );
    assert_eq!(
        h.api
            .get_json("/apis/smd/hsm/v2/State/Components/x1000c0s0b0n0/")
            .await["NID"],
        1
    );
    // Writes through the alias work too.
    h.api
        .post(
            "/apis/smd/hsm/v2/groups/",
            &json!({"label": "aliased", "members": {"ids": ["x1000c0s0b0n0"]}}),
        )
        .await
        .status(201);
    assert_eq!(
        h.api.get_json("/hsm/v2/groups/aliased/members").await,
        json!({"ids": ["x1000c0s0b0n0"]})
    );
    // A prefix that merely starts the same is not the alias.
    h.api
        .get("/apis/smd/hsm/v2x/State/Components")
        .await
        .problem(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_collections_are_empty_arrays() {
    let h = Harness::start().await;
    let stateonly = format!("{COMPONENTS}?type=Node&stateonly=true");
    for (path, want) in [
        (COMPONENTS, json!({"Components": []})),
        (stateonly.as_str(), json!({"Components": []})),
        ("/hsm/v2/groups", json!([])),
        ("/hsm/v2/groups/labels", json!([])),
        ("/hsm/v2/partitions", json!([])),
        ("/hsm/v2/partitions/names", json!([])),
        ("/hsm/v2/memberships", json!([])),
        ("/hsm/v2/Defaults/NodeMaps", json!({"NodeMaps": []})),
    ] {
        let r = h.api.get(path).await.ok();
        assert!(
            r.content_type().starts_with("application/json"),
            "{}: {}",
            r.what,
            r.content_type()
        );
        assert_eq!(r.json(), want, "{}", r.what);
    }
    // A group without members has an empty list, and a description.
    h.api
        .post("/hsm/v2/groups", &json!({"label": "empty"}))
        .await
        .status(201);
    assert_eq!(
        h.api.get_json("/hsm/v2/groups/empty").await,
        json!({"label": "empty", "description": "", "members": {"ids": []}})
    );
    assert_eq!(
        h.api.get_json("/hsm/v2/groups/empty/members").await,
        json!({"ids": []})
    );
}

// ----------------------------------------------------------------- components

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_round_trip_with_defaults() {
    let h = with_nodes().await;
    let c = component(&h, "x1000c0s2b0n0").await;
    assert_eq!(
        c,
        json!({"ID": "x1000c0s2b0n0", "Type": "Node", "State": "Off", "Flag": "OK", "Enabled": true,
               "Role": "Service", "SubRole": "Worker", "NID": 3, "NetType": "Sling", "Arch": "X86",
               "Class": "River"})
    );
    // xnames are normalised on the way in and in paths.
    h.api
        .post(
            COMPONENTS,
            &json!({"Components": [{"ID": " X1000C0S05B0N0 ", "State": "Ready"}]}),
        )
        .await
        .status(204);
    let c = component(&h, "X1000C0S5B0N0").await;
    assert_eq!(c["ID"], "x1000c0s5b0n0");
    assert_eq!(c["NID"], 5, "a new node without a NID gets highest + 1");
    // Keys are matched case-insensitively; unknown keys are ignored.
    h.api
        .post(
            COMPONENTS,
            &json!({"components": [{"id": "x1000c0s6b0n0", "state": "Ready", "nid": 60, "Colour": "blue"}]}),
        )
        .await
        .status(204);
    assert_eq!(component(&h, "x1000c0s6b0n0").await["NID"], 60);

    let all = h.api.get_json(COMPONENTS).await;
    assert_eq!(ids(&all).len(), 7);
    // The anonymous read gives the same.
    assert_eq!(h.anon.get_json(COMPONENTS).await, all);

    // Delete one, then all.
    let m = h
        .api
        .delete(&format!("{COMPONENTS}/x1000c0s6b0n0"))
        .await
        .ok()
        .json();
    assert_eq!(m, json!({"code": 0, "message": "deleted 1 entry"}));
    h.api
        .delete(&format!("{COMPONENTS}/x1000c0s6b0n0"))
        .await
        .problem(404);
    let m = h.api.delete(COMPONENTS).await.ok().json();
    assert_eq!(m, json!({"code": 0, "message": "deleted 6 entries"}));
    assert_eq!(h.api.get_json(COMPONENTS).await, json!({"Components": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_filters() {
    let h = with_nodes().await;
    let q = |query: &'static str| {
        let api = h.api.clone();
        async move { sorted(ids(&api.get_json(&format!("{COMPONENTS}?{query}")).await)) }
    };
    let nodes = [
        "x1000c0s0b0n0",
        "x1000c0s1b0n0",
        "x1000c0s2b0n0",
        "x1000c0s3b0n0",
    ];
    assert_eq!(q("type=Node").await, nodes);
    // Case-insensitive keys and values.
    assert_eq!(q("TYPE=node").await, nodes);
    // Repeated keys are OR-ed, as are comma lists.
    assert_eq!(
        q("type=NodeBMC&type=Node").await.len(),
        5,
        "repeat keys OR-ed"
    );
    assert_eq!(q("type=NodeBMC,Node").await.len(), 5);
    assert_eq!(
        q("state=Off&state=On").await,
        ["x1000c0s2b0n0", "x1000c0s3b0n0"]
    );
    // Negation.
    assert_eq!(
        q("type=Node&state=!Ready").await,
        ["x1000c0s2b0n0", "x1000c0s3b0n0"]
    );
    assert_eq!(q("type=!Node").await, ["x1000c0s0b0"]);
    assert_eq!(
        q("role=compute&enabled=true").await,
        ["x1000c0s0b0n0", "x1000c0s1b0n0"]
    );
    assert_eq!(q("subrole=worker").await, ["x1000c0s2b0n0"]);
    // NID ranges and NIDs.
    assert_eq!(
        q("nid_start=2&nid_end=3").await,
        ["x1000c0s1b0n0", "x1000c0s2b0n0"]
    );
    assert_eq!(q("nid_start=4").await, ["x1000c0s3b0n0"]);
    assert_eq!(q("nid=1&nid=4").await, ["x1000c0s0b0n0", "x1000c0s3b0n0"]);
    // IDs, normalised.
    assert_eq!(q("id=X1000C0S1B0N0").await, ["x1000c0s1b0n0"]);
    assert_eq!(q("id=!x1000c0s1b0n0&type=node").await.len(), 3);
    // Several keys are AND-ed.
    assert_eq!(
        q("type=Node&role=Service&state=Off").await,
        ["x1000c0s2b0n0"]
    );
    assert!(q("type=Node&role=Storage").await.is_empty());
    // Bad numbers are a 400.
    h.api
        .get(&format!("{COMPONENTS}?nid_start=one"))
        .await
        .problem(400);

    // stateonly and friends restrict fields.
    let v = h
        .api
        .get_json(&format!("{COMPONENTS}?id=x1000c0s2b0n0&stateonly=true"))
        .await;
    assert_eq!(
        v,
        json!({"Components": [{"ID": "x1000c0s2b0n0", "Type": "Node", "State": "Off", "Flag": "OK"}]})
    );
    let v = h
        .api
        .get_json(&format!("{COMPONENTS}?id=x1000c0s2b0n0&nidonly=true"))
        .await;
    assert_eq!(
        v,
        json!({"Components": [{"ID": "x1000c0s2b0n0", "Type": "Node", "NID": 3}]})
    );
    let v = h
        .api
        .get_json(&format!("{COMPONENTS}?id=x1000c0s2b0n0&roleonly"))
        .await;
    assert_eq!(
        v,
        json!({"Components": [{"ID": "x1000c0s2b0n0", "Type": "Node", "Role": "Service", "SubRole": "Worker"}]})
    );

    // Group and partition filters.
    h.api
        .post(
            "/hsm/v2/groups",
            &json!({"label": "blue", "members": {"ids": ["x1000c0s0b0n0", "x1000c0s3b0n0"]}}),
        )
        .await
        .status(201);
    h.api
        .post(
            "/hsm/v2/partitions",
            &json!({"name": "p1", "members": {"ids": ["x1000c0s1b0n0"]}}),
        )
        .await
        .status(201);
    assert_eq!(q("group=BLUE").await, ["x1000c0s0b0n0", "x1000c0s3b0n0"]);
    assert_eq!(
        q("group=!blue&type=node").await,
        ["x1000c0s1b0n0", "x1000c0s2b0n0"]
    );
    assert_eq!(q("partition=p1").await, ["x1000c0s1b0n0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_creates_and_keeps_an_existing_nid() {
    let h = with_nodes().await;
    let path = format!("{COMPONENTS}/x1000c0s0b0n0");
    h.api
        .put(
            &path,
            &json!({"Component": {"ID": "x1000c0s0b0n0", "State": "Ready", "NID": 99, "Role": "Service"}}),
        )
        .await
        .status(204);
    let c = component(&h, "x1000c0s0b0n0").await;
    assert_eq!(c["NID"], 1, "PUT keeps an existing NID");
    assert_eq!(c["Role"], "Service", "other fields change");
    // PUT of an absent component creates it, with the NID given.
    h.api
        .put(
            &format!("{COMPONENTS}/x1000c0s7b0n0"),
            &json!({"Component": {"State": "Ready", "NID": 77}}),
        )
        .await
        .status(204);
    assert_eq!(component(&h, "x1000c0s7b0n0").await["NID"], 77);
    // The body's ID must match the path.
    refused(
        &h,
        Method::PUT,
        &path,
        r#"{"Component":{"ID":"x1000c0s1b0n0","State":"Ready"}}"#,
        400,
    )
    .await;
    // State changes on existing rows need Force.
    h.api
        .put(&path, &json!({"Component": {"State": "Off"}}))
        .await
        .status(204);
    assert_eq!(component(&h, "x1000c0s0b0n0").await["State"], "Ready");
    h.api
        .put(
            &path,
            &json!({"Component": {"State": "Off"}, "Force": true}),
        )
        .await
        .status(204);
    assert_eq!(component(&h, "x1000c0s0b0n0").await["State"], "Off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_state_data_needs_force_for_some_transitions() {
    let h = with_nodes().await;
    let path = format!("{COMPONENTS}/x1000c0s0b0n0/StateData");
    // Ready → Empty is not allowed without Force.
    let p = refused(&h, Method::PATCH, &path, r#"{"State":"Empty"}"#, 400).await;
    assert!(p["detail"].as_str().unwrap().contains("Force"), "{p}");
    assert_eq!(component(&h, "x1000c0s0b0n0").await["State"], "Ready");
    h.api
        .patch(&path, &json!({"State": "Empty", "Force": true}))
        .await
        .status(204);
    assert_eq!(component(&h, "x1000c0s0b0n0").await["State"], "Empty");
    // Ready → Off is allowed, and Flag comes along.
    let path1 = format!("{COMPONENTS}/x1000c0s1b0n0/StateData");
    h.api
        .patch(&path1, &json!({"State": "off", "Flag": "warn"}))
        .await
        .status(204);
    let c = component(&h, "x1000c0s1b0n0").await;
    assert_eq!(
        (c["State"].as_str(), c["Flag"].as_str()),
        (Some("Off"), Some("Warning"))
    );
    // Other single-field PATCHes.
    let base = format!("{COMPONENTS}/x1000c0s1b0n0");
    h.api
        .patch(&format!("{base}/Enabled"), &json!({"Enabled": false}))
        .await
        .status(204);
    h.api
        .patch(
            &format!("{base}/Role"),
            &json!({"Role": "Storage", "SubRole": "Master"}),
        )
        .await
        .status(204);
    h.api
        .patch(
            &format!("{base}/SoftwareStatus"),
            &json!({"SoftwareStatus": "AdminDown"}),
        )
        .await
        .status(204);
    h.api
        .patch(&format!("{base}/FlagOnly"), &json!({"Flag": "Alert"}))
        .await
        .status(204);
    h.api
        .patch(&format!("{base}/NID"), &json!({"NID": 20}))
        .await
        .status(204);
    let c = component(&h, "x1000c0s1b0n0").await;
    assert_eq!(c["Enabled"], false);
    assert_eq!(c["Role"], "Storage");
    assert_eq!(c["SubRole"], "Master");
    assert_eq!(c["SoftwareStatus"], "AdminDown");
    assert_eq!(c["Flag"], "Alert");
    assert_eq!(c["NID"], 20);
    // PATCH of an absent component.
    refused(
        &h,
        Method::PATCH,
        &format!("{COMPONENTS}/x1000c0s9b0n0/Enabled"),
        r#"{"Enabled":true}"#,
        404,
    )
    .await;
    // Bulk PATCH skips refused transitions instead of failing.
    h.api
        .patch(
            &format!("{COMPONENTS}/BulkStateData"),
            &json!({"ComponentIDs": ["x1000c0s2b0n0", "x1000c0s3b0n0"], "State": "Standby"}),
        )
        .await
        .status(204);
    assert_eq!(
        component(&h, "x1000c0s2b0n0").await["State"],
        "Off",
        "Off → Standby refused"
    );
    assert_eq!(
        component(&h, "x1000c0s3b0n0").await["State"],
        "On",
        "On → Standby refused"
    );
    h.api
        .patch(
            &format!("{COMPONENTS}/BulkEnabled"),
            &json!({"ComponentIDs": ["x1000c0s2b0n0", "x1000c0s3b0n0"], "Enabled": true}),
        )
        .await
        .status(204);
    assert_eq!(component(&h, "x1000c0s3b0n0").await["Enabled"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_nid_swaps_and_by_nid() {
    let h = with_nodes().await;
    h.api
        .patch(
            &format!("{COMPONENTS}/BulkNID"),
            &json!({"Components": [{"ID": "x1000c0s0b0n0", "NID": 2}, {"ID": "x1000c0s1b0n0", "NID": 1}]}),
        )
        .await
        .status(204);
    assert_eq!(component(&h, "x1000c0s0b0n0").await["NID"], 2);
    assert_eq!(component(&h, "x1000c0s1b0n0").await["NID"], 1);
    let c = h.api.get_json(&format!("{COMPONENTS}/ByNID/2")).await;
    assert_eq!(c["ID"], "x1000c0s0b0n0");
    h.api
        .get(&format!("{COMPONENTS}/ByNID/999"))
        .await
        .problem(404);
    h.api
        .get(&format!("{COMPONENTS}/ByNID/two"))
        .await
        .problem(400);
    // A swap inside one POST succeeds too.
    h.api
        .post(
            COMPONENTS,
            &json!({"Components": [{"ID": "x1000c0s2b0n0", "State": "Off", "NID": 4},
                                   {"ID": "x1000c0s3b0n0", "State": "On", "NID": 3}]}),
        )
        .await
        .status(204);
    assert_eq!(component(&h, "x1000c0s2b0n0").await["NID"], 4);
    // Query routes.
    let v = h
        .api
        .post(
            &format!("{COMPONENTS}/ByNID/Query"),
            &json!({"NIDRanges": ["1-2", "4"]}),
        )
        .await
        .ok()
        .json();
    assert_eq!(
        sorted(ids(&v)),
        ["x1000c0s0b0n0", "x1000c0s1b0n0", "x1000c0s2b0n0"]
    );
    let v = h
        .api
        .post(
            &format!("{COMPONENTS}/Query"),
            &json!({"ComponentIDs": ["x1000c0s3b0n0", "x1000c0s9b0n0"]}),
        )
        .await
        .ok()
        .json();
    assert_eq!(ids(&v), ["x1000c0s3b0n0"]);
    let v = h
        .api
        .get_json(&format!("{COMPONENTS}/Query/x1000c0s0b0"))
        .await;
    assert_eq!(ids(&v), ["x1000c0s0b0"], "no type: the component only");
    let v = h
        .api
        .get_json(&format!("{COMPONENTS}/Query/x1000c0s0b0?type=Node"))
        .await;
    assert_eq!(ids(&v), ["x1000c0s0b0n0"], "descendants of that type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_maps_give_new_nodes_their_nid() {
    let h = Harness::start().await;
    let m = h
        .api
        .post(
            "/hsm/v2/Defaults/NodeMaps",
            &json!({"NodeMaps": [{"ID": "x1000c0s5b0n0", "NID": 50, "Role": "service"}]}),
        )
        .await
        .ok()
        .json();
    assert_eq!(m["code"], 0);
    assert_eq!(
        h.api
            .get_json("/hsm/v2/Defaults/NodeMaps/x1000c0s5b0n0")
            .await,
        json!({"ID": "x1000c0s5b0n0", "NID": 50, "Role": "Service"})
    );
    h.api
        .post(
            COMPONENTS,
            &json!({"Components": [{"ID": "x1000c0s5b0n0", "State": "Ready"}]}),
        )
        .await
        .status(204);
    let c = component(&h, "x1000c0s5b0n0").await;
    assert_eq!(
        (c["NID"].as_i64(), c["Role"].as_str()),
        (Some(50), Some("Service"))
    );
    refused(
        &h,
        Method::POST,
        "/hsm/v2/Defaults/NodeMaps",
        r#"{"NodeMaps":[{"ID":"x1000c0s6b0n0","NID":50}]}"#,
        409,
    )
    .await;
    refused(
        &h,
        Method::PUT,
        "/hsm/v2/Defaults/NodeMaps/x1000c0s6b0",
        r#"{"NID":51}"#,
        400,
    )
    .await;
    h.api
        .delete("/hsm/v2/Defaults/NodeMaps/x1000c0s5b0n0")
        .await
        .ok();
    assert_eq!(
        h.api.get_json("/hsm/v2/Defaults/NodeMaps").await,
        json!({"NodeMaps": []})
    );
}

// --------------------------------------------------------------------- groups

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_members_and_memberships() {
    let h = with_nodes().await;
    let r = h
        .api
        .post(
            "/hsm/v2/groups",
            &json!({"label": "Compute", "description": "compute nodes", "tags": ["a"],
                    "members": {"ids": ["x1000c0s1b0n0", "X1000C0S0B0N0"]}}),
        )
        .await
        .status(201);
    assert_eq!(r.header("location"), Some("/hsm/v2/groups/compute"));
    assert_eq!(r.json(), json!([{"URI": "/hsm/v2/groups/compute"}]));
    let g = json!({"label": "compute", "description": "compute nodes", "tags": ["a"],
                   "members": {"ids": ["x1000c0s0b0n0", "x1000c0s1b0n0"]}});
    assert_eq!(h.api.get_json("/hsm/v2/groups/compute").await, g);
    assert_eq!(h.api.get_json("/hsm/v2/groups/COMPUTE").await, g);
    assert_eq!(h.api.get_json("/hsm/v2/groups").await, json!([g]));
    assert_eq!(h.api.get_json("/hsm/v2/groups?tag=A").await, json!([g]));
    assert_eq!(
        h.api.get_json("/hsm/v2/groups?group=other").await,
        json!([])
    );
    assert_eq!(
        h.api.get_json("/hsm/v2/groups/labels").await,
        json!(["compute"])
    );

    // PATCH changes description and tags; members in the body are ignored.
    h.api
        .patch(
            "/hsm/v2/groups/compute",
            &json!({"description": "all compute", "tags": [], "members": {"ids": []}, "label": "renamed"}),
        )
        .await
        .status(204);
    let after = h.api.get_json("/hsm/v2/groups/compute").await;
    assert_eq!(after["description"], "all compute");
    assert_eq!(
        after["members"]["ids"],
        json!(["x1000c0s0b0n0", "x1000c0s1b0n0"])
    );
    assert!(
        after.get("tags").is_none(),
        "empty tags are omitted: {after}"
    );

    // PUT members replaces the set.
    let r = h
        .api
        .put(
            "/hsm/v2/groups/compute/members",
            &json!({"group": "compute", "ids": ["x1000c0s2b0n0", "x1000c0s3b0n0"]}),
        )
        .await
        .status(201);
    assert_eq!(r.json(), json!([{"URI": "/hsm/v2/groups/compute/members"}]));
    assert_eq!(
        h.api.get_json("/hsm/v2/groups/compute/members").await,
        json!({"ids": ["x1000c0s2b0n0", "x1000c0s3b0n0"]})
    );
    // ... but not into another group's name.
    refused(
        &h,
        Method::PUT,
        "/hsm/v2/groups/compute/members",
        r#"{"group":"other","ids":[]}"#,
        400,
    )
    .await;

    // POST and DELETE one member.
    let r = h
        .api
        .post(
            "/hsm/v2/groups/compute/members",
            &json!({"id": "x1000c0s0b0n0"}),
        )
        .await
        .status(201);
    assert_eq!(
        r.header("location"),
        Some("/hsm/v2/groups/compute/members/x1000c0s0b0n0")
    );
    h.api
        .delete("/hsm/v2/groups/compute/members/x1000c0s2b0n0")
        .await
        .ok();
    h.api
        .delete("/hsm/v2/groups/compute/members/x1000c0s2b0n0")
        .await
        .problem(404);
    assert_eq!(
        h.api.get_json("/hsm/v2/groups/compute/members").await,
        json!({"ids": ["x1000c0s0b0n0", "x1000c0s3b0n0"]})
    );

    // Memberships.
    h.api
        .post(
            "/hsm/v2/partitions",
            &json!({"name": "p1", "description": "first", "members": {"ids": ["x1000c0s0b0n0"]}}),
        )
        .await
        .status(201);
    assert_eq!(
        h.api.get_json("/hsm/v2/memberships/x1000c0s0b0n0").await,
        json!({"id": "x1000c0s0b0n0", "groupLabels": ["compute"], "partitionName": "p1"})
    );
    assert_eq!(
        h.api.get_json("/hsm/v2/memberships/x1000c0s1b0n0").await,
        json!({"id": "x1000c0s1b0n0", "groupLabels": [], "partitionName": ""})
    );
    let all = h.api.get_json("/hsm/v2/memberships").await;
    assert_eq!(all.as_array().unwrap().len(), 5, "one per component: {all}");
    h.api
        .get("/hsm/v2/memberships/x1000c0s9b0n0")
        .await
        .problem(404);

    // Deleting a component drops it from its groups and partition.
    h.api
        .delete(&format!("{COMPONENTS}/x1000c0s0b0n0"))
        .await
        .ok();
    assert_eq!(
        h.api.get_json("/hsm/v2/groups/compute/members").await,
        json!({"ids": ["x1000c0s3b0n0"]})
    );
    assert_eq!(
        h.api.get_json("/hsm/v2/partitions/p1/members").await,
        json!({"ids": []})
    );

    // Deleting the group.
    h.api.delete("/hsm/v2/groups/compute").await.ok();
    h.api.get("/hsm/v2/groups/compute").await.problem(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_groups_and_partitions_conflict() {
    let h = with_nodes().await;
    h.api
        .post(
            "/hsm/v2/groups",
            &json!({"label": "rack1", "exclusiveGroup": "racks", "members": {"ids": ["x1000c0s0b0n0"]}}),
        )
        .await
        .status(201);
    assert_eq!(
        h.api.get_json("/hsm/v2/groups/rack1").await["exclusiveGroup"],
        "racks"
    );
    let p = refused(
        &h,
        Method::POST,
        "/hsm/v2/groups",
        r#"{"label":"rack2","exclusiveGroup":"racks","members":{"ids":["x1000c0s0b0n0"]}}"#,
        409,
    )
    .await;
    assert_eq!(
        p["detail"],
        "operation would conflict with an existing member in another exclusive group."
    );
    h.api
        .post(
            "/hsm/v2/groups",
            &json!({"label": "rack2", "exclusiveGroup": "racks", "members": {"ids": ["x1000c0s1b0n0"]}}),
        )
        .await
        .status(201);
    refused(
        &h,
        Method::POST,
        "/hsm/v2/groups/rack2/members",
        r#"{"id":"x1000c0s0b0n0"}"#,
        409,
    )
    .await;
    refused(
        &h,
        Method::PUT,
        "/hsm/v2/groups/rack2/members",
        r#"{"ids":["x1000c0s0b0n0","x1000c0s1b0n0"]}"#,
        409,
    )
    .await;
    // A group outside the set may hold it.
    h.api
        .post(
            "/hsm/v2/groups",
            &json!({"label": "other", "members": {"ids": ["x1000c0s0b0n0"]}}),
        )
        .await
        .status(201);

    // One partition per component.
    h.api
        .post(
            "/hsm/v2/partitions",
            &json!({"name": "p1", "members": {"ids": ["x1000c0s0b0n0"]}}),
        )
        .await
        .status(201);
    refused(
        &h,
        Method::POST,
        "/hsm/v2/partitions",
        r#"{"name":"p2","members":{"ids":["x1000c0s0b0n0"]}}"#,
        409,
    )
    .await;
    refused(
        &h,
        Method::POST,
        "/hsm/v2/partitions",
        r#"{"name":"p1"}"#,
        409,
    )
    .await;
    refused(
        &h,
        Method::POST,
        "/hsm/v2/partitions",
        r#"{"name":"compute"}"#,
        400,
    )
    .await;
    assert_eq!(
        h.api.get_json("/hsm/v2/partitions/names").await,
        json!(["p1"])
    );
    assert_eq!(
        h.api.get_json("/hsm/v2/partitions/p1").await,
        json!({"name": "p1", "description": "", "members": {"ids": ["x1000c0s0b0n0"]}})
    );
}

// --------------------------------------------------------------------- import

fn example_cluster() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/cluster.yaml"
    ))
    .expect("examples/cluster.yaml");
    serde_yaml_ng::from_str(&text).expect("cluster.yaml is YAML")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_is_atomic_and_idempotent() {
    let h = Harness::start().await;
    let cluster = example_cluster();
    let first = h
        .api
        .post("/inventory/v1/import", &cluster)
        .await
        .ok()
        .json();
    assert_eq!(first["nodes"], 4);
    assert_eq!(
        first["created"],
        json!({"components": 8, "interfaces": 9, "endpoints": 4, "groups": 2})
    );
    assert_eq!(
        first["updated"],
        json!({"components": 0, "interfaces": 0, "endpoints": 0, "groups": 0}),
        "nothing existed before"
    );
    assert_eq!(first["changed"], 23);
    let generation = h.generation();

    let second = h
        .api
        .post("/inventory/v1/import", &cluster)
        .await
        .ok()
        .json();
    assert_eq!(second["changed"], 0, "{second}");
    assert_eq!(
        h.generation(),
        generation,
        "a repeated import writes nothing"
    );

    let nodes = h.api.get_json(&format!("{COMPONENTS}?type=Node")).await;
    assert_eq!(
        ids(&nodes),
        [
            "x1000c1s7b0n0",
            "x1000c1s7b1n0",
            "x1000c1s7b2n0",
            "x1000c1s7b3n0"
        ]
    );
    assert_eq!(
        h.api.get_json("/hsm/v2/groups/compute/members").await,
        json!({"ids": ["x1000c1s7b0n0", "x1000c1s7b1n0", "x1000c1s7b2n0"]})
    );
    assert_eq!(
        h.api.get_json(&format!("{COMPONENTS}/ByNID/4")).await["ID"],
        "x1000c1s7b3n0"
    );

    // A bad record anywhere refuses the whole file.
    let mut bad = cluster.clone();
    bad["nodes"][3]["interfaces"][0]["mac_addr"] = json!("not-a-mac");
    bad["nodes"][0]["nid"] = json!(100);
    let p = h.api.post("/inventory/v1/import", &bad).await.problem(400);
    assert!(p["detail"].as_str().unwrap().contains("not-a-mac"), "{p}");
    let mut clash = cluster.clone();
    clash["nodes"][1]["nid"] = json!(1);
    h.api
        .post("/inventory/v1/import", &clash)
        .await
        .problem(409);
    assert_eq!(h.generation(), generation);
    assert_eq!(
        h.api.get_json(&format!("{COMPONENTS}/x1000c1s7b0n0")).await["NID"],
        1
    );
}

/// One MAC belongs to one node and one address per network to one interface,
/// on every SMD write path; each refusal is a 409 naming the holder and
/// changes nothing, and the explicit move flag moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_rules_on_every_write_path() {
    let h = Harness::start().await;
    h.api
        .post("/inventory/v1/import", &example_cluster())
        .await
        .ok();
    const IFACES: &str = "/hsm/v2/Inventory/EthernetInterfaces";
    let f1 = format!("{IFACES}/deadbeeeeef1");
    // (method, path, body, status, words of the detail)
    let table: Vec<(Method, String, Value, u16, &[&str])> = vec![
        (
            Method::POST,
            IFACES.into(),
            json!({"MACAddress": "02:00:00:00:00:10", "ComponentID": "x1000c1s7b1n0",
                   "IPAddresses": [{"IPAddress": "172.16.0.1"}]}),
            409,
            &["172.16.0.1", "held by x1000c1s7b0n0"],
        ),
        (
            Method::POST,
            IFACES.into(),
            json!({"MACAddress": "DE:AD:BE:EE:EE:F1", "ComponentID": "x1000c1s7b1n0"}),
            409,
            &["already exists", "belongs to x1000c1s7b0n0"],
        ),
        (
            Method::POST,
            format!("{IFACES}/deadbeeeeef2/IPAddresses"),
            json!({"IPAddress": "172.16.0.1", "Network": "internal"}),
            409,
            &["172.16.0.1", "held by x1000c1s7b0n0"],
        ),
        (
            Method::POST,
            format!("{IFACES}/deadbeeeeef2/IPAddresses"),
            json!({"IPAddress": "172.16.0.1", "Network": "other"}),
            201,
            &[],
        ),
        (
            Method::PATCH,
            format!("{IFACES}/deadbeeeeef2"),
            json!({"IPAddresses": [{"IPAddress": "172.16.0.3"}]}),
            409,
            &["172.16.0.3", "held by x1000c1s7b2n0"],
        ),
        (
            Method::POST,
            "/inventory/v1/nodes".into(),
            json!({"xname": "x1000c2s0b0n0", "macs": ["de:ad:be:ee:ee:f1"], "groups": ["io"]}),
            409,
            &["belongs to x1000c1s7b0n0"],
        ),
        (
            Method::POST,
            "/inventory/v1/import".into(),
            json!({"nodes": [{"xname": "x1000c1s7b1n0",
                              "interfaces": [{"mac_addr": "de:ad:be:ee:ee:f1"}]}]}),
            409,
            &["belongs to x1000c1s7b0n0", "--move-macs"],
        ),
        (
            Method::POST,
            "/inventory/v1/import".into(),
            json!({"nodes": [{"xname": "x1000c1s7b1n0", "interface": []}]}),
            400,
            &["nodes[0] (x1000c1s7b1n0)", "unknown key \"interface\""],
        ),
        // A PATCH naming a ComponentID is the request to move the MAC.
        (
            Method::PATCH,
            f1.clone(),
            json!({"ComponentID": "x1000c1s7b1n0"}),
            200,
            &[],
        ),
        (
            Method::POST,
            "/inventory/v1/import?move_macs=true".into(),
            json!({"nodes": [{"xname": "x1000c1s7b2n0",
                              "interfaces": [{"mac_addr": "de:ad:be:ee:ee:f1",
                                              "ip_addrs": [{"ip_addr": "172.16.0.2"}]}]}]}),
            200,
            &[],
        ),
    ];
    for (method, path, body, status, words) in table {
        let before = h.generation();
        let r = h.api.call(method.clone(), &path, Some(&body)).await;
        if status >= 400 {
            let p = r.problem(status);
            let detail = p["detail"].as_str().unwrap();
            for w in words {
                assert!(
                    detail.contains(w),
                    "{method} {path}: {detail:?} lacks {w:?}"
                );
            }
            assert_eq!(h.generation(), before, "{method} {path}: nothing written");
        } else {
            r.status(status);
        }
    }
    let f1 = h.api.get_json(&f1).await;
    assert_eq!(f1["ComponentID"], "x1000c1s7b2n0", "{f1}");
    let holders = h
        .api
        .get_json(&format!("{IFACES}?IPAddress=172.16.0.2"))
        .await;
    let holders: Vec<&str> = holders
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ID"].as_str().unwrap())
        .collect();
    assert_eq!(holders, ["deadbeeeeef1"], "the address moved with the MAC");
    h.api
        .get(&format!("{COMPONENTS}/x1000c2s0b0n0"))
        .await
        .problem(404);
}

// ------------------------------------------------------------------ appliance

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_service_routes() {
    let h = Harness::start().await;
    for c in [&h.anon, &h.node] {
        let r = c.get("/healthz").await.ok();
        assert_eq!(r.text(), "ok");
    }
    assert_eq!(
        h.anon.get_json("/readyz").await,
        json!({"status": "ready", "checks": {"db": "ok"}})
    );
    h.node.get("/readyz").await.problem(404);
    assert_eq!(
        h.anon.get_json("/hsm/v2/service/ready").await,
        json!({"code": 0, "message": "HSM is healthy"})
    );
    h.anon.get("/hsm/v2/service/liveness").await.status(204);
    let values = h.anon.get_json("/hsm/v2/service/values").await;
    for key in [
        "Arch", "Class", "Flag", "NetType", "Role", "SubRole", "State", "Type",
    ] {
        assert!(
            values[key].as_array().is_some_and(|a| !a.is_empty()),
            "{key}: {values}"
        );
    }
    assert_eq!(
        h.anon.get_json("/hsm/v2/service/values/state").await,
        json!({"State": values["State"]})
    );
    // HEAD is answered where GET is.
    let r = h
        .anon
        .send(h.anon.request(Method::HEAD, "/healthz"))
        .await
        .ok();
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_certificate_on_both_listeners() {
    let h = Harness::start().await;
    let root = h.root_pem();
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");
    let on_disk = std::fs::read_to_string(h.state_dir().join("ca/root.crt")).unwrap();
    assert_eq!(on_disk, root);
    for (c, path) in [
        (&h.anon, "/ca/root.pem"),
        (&h.node, "/ca/root.pem"),
        (&h.anon, "/roots.pem"),
    ] {
        let r = c.get(path).await.ok();
        assert_eq!(r.content_type(), "application/x-pem-file", "{}", r.what);
        assert_eq!(r.text(), root, "{}", r.what);
    }
    h.node.get("/roots.pem").await.problem(404);
    // The certificate the API presents chains to that root (the client
    // trusts nothing else) and names 127.0.0.1.
    let r = h.anon.get("/healthz").await.ok();
    let leaf = r.peer_cert.expect("TLS peer certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let text = format!("{:?}", san.value);
    assert!(
        text.contains("127.0.0.1") || text.contains("[127, 0, 0, 1]"),
        "{text}"
    );
    // The fingerprint printed by the CLI is that of the served root.
    assert_eq!(
        openchami::ca::authority::fingerprint_pem(&root).unwrap(),
        h.app().state.root_fingerprint
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_verifies_issued_tokens() {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
    let h = Harness::start().await;
    let jwks = h.anon.get_json("/.well-known/jwks.json").await;
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(!keys.is_empty());
    let kid = decode_header(&h.token)
        .unwrap()
        .kid
        .expect("token has a kid");
    let key = keys
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("no JWK with kid {kid}: {jwks}"));
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    let dk =
        DecodingKey::from_ec_components(key["x"].as_str().unwrap(), key["y"].as_str().unwrap())
            .unwrap();
    let st = &h.app().state;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[&st.config.auth.audience]);
    v.set_issuer(&[&st.issuer]);
    let data = decode::<Value>(&h.token, &dk, &v).expect("the published key verifies our token");
    assert_eq!(data.claims["sub"], "test");
    // A token from another key does not verify with it.
    let other = tempfile::tempdir().unwrap();
    let foreign = openchami::ca::token::TokenKeys::load_or_create(other.path())
        .unwrap()
        .issue(
            "x",
            &st.issuer,
            &st.config.auth.audience,
            Duration::from_secs(60),
            &[],
            common::now(),
        )
        .unwrap();
    assert!(decode::<Value>(&foreign, &dk, &v).is_err());

    let oidc = h.anon.get_json("/.well-known/openid-configuration").await;
    assert_eq!(oidc["issuer"], st.issuer.as_str());
    assert_eq!(
        oidc["jwks_uri"],
        format!("{}/.well-known/jwks.json", st.issuer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token() {
    let h = with_nodes().await;
    h.anon.get("/metrics").await.problem(401);
    h.node.get("/metrics").await.problem(404);
    let r = h.api.get("/metrics").await.ok();
    assert!(
        r.content_type().starts_with("text/plain"),
        "{}",
        r.content_type()
    );
    let text = r.text();
    assert!(text.contains("openchami_inventory_components 5"), "{text}");
    assert!(
        text.contains("# TYPE openchami_http_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/hsm/v2/State/Components",method="POST",status="204""#),
        "{text}"
    );

    // Every request is timed, by listener and route; unknown paths too.
    for want in [
        r#"openchami_http_request_duration_seconds_bucket{listener="api",route="/hsm/v2/State/Components",method="POST",le="+Inf"}"#,
        r#"openchami_http_request_duration_seconds_count{listener="node",route="unmatched",method="GET"}"#,
        r#"openchami_http_requests_total{route="unmatched",method="GET",status="404"}"#,
        "# TYPE openchami_http_request_duration_seconds histogram",
        "openchami_log_write_failures_total ",
    ] {
        assert!(text.contains(want), "no {want} in:\n{text}");
    }
    check_exposition(&text);
    assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));

    let open = Harness::start_with(|c| c.metrics.anonymous = true).await;
    open.anon.get("/metrics").await.ok();
}

/// A strict reading of the Prometheus text format (0.0.4): each line is a
/// HELP or TYPE comment or a sample `name{labels} value` of the family
/// most recently typed; label values are quoted with escapes only for
/// backslash, quote and newline; values are numbers.
fn check_exposition(text: &str) {
    let mut family: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let parts: Vec<&str> = rest.splitn(3, ' ').collect();
            assert!(parts.len() == 3, "{line}");
            match parts[0] {
                "HELP" => {}
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram"].contains(&parts[2]),
                        "{line}"
                    );
                    family = Some((parts[1].to_string(), parts[2].to_string()));
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(value.parse::<f64>().is_ok(), "value of {line}");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').unwrap_or_else(|| panic!("{line}"))),
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let mut rest = labels;
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
            assert!(
                key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => {
                        let (_, e) = chars.next().unwrap_or_else(|| panic!("{line}"));
                        assert!(matches!(e, '\\' | '"' | 'n'), "{line}");
                    }
                    Some((i, '"')) => break i,
                    Some(_) => {}
                    None => panic!("unterminated label value: {line}"),
                }
            };
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        let (fam, kind) = family
            .as_ref()
            .unwrap_or_else(|| panic!("sample before TYPE: {line}"));
        let ok = if kind == "histogram" {
            ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name == format!("{fam}{s}"))
        } else {
            name == fam
        };
        assert!(ok, "{line} is outside its family {fam}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_is_served_anonymously() {
    let h = Harness::start().await;
    let r = h.anon.get("/openapi.json").await.ok();
    assert!(r.content_type().starts_with("application/json"));
    assert_eq!(r.text(), openchami::http::openapi::document_text());
    h.node.get("/openapi.json").await.problem(404);
}

/// Upstream SMD's answers where its clients and black-box tests look:
/// invalid filter values, partition lookups, empty collections, NodeMaps
/// messages, routes not built here, and the members `omitempty` leaves out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smd_answers_as_upstream() {
    let h = with_nodes().await;
    // A value a filter can never match is a 400 naming it, not an empty list.
    for param in [
        "id",
        "type",
        "state",
        "flag",
        "role",
        "subrole",
        "enabled",
        "arch",
        "class",
        "nid",
        "nid_start",
        "nid_end",
    ] {
        let p = h
            .api
            .get(&format!("{COMPONENTS}?{param}=FAKE"))
            .await
            .problem(400);
        let d = p["detail"].as_str().unwrap_or("");
        assert!(d.starts_with("bad query param: "), "{param}: {d}");
    }
    assert_eq!(
        h.api
            .get(&format!("{COMPONENTS}?type=Booster"))
            .await
            .problem(400)["detail"],
        "bad query param: Argument was not a valid HMS Type"
    );
    // Upstream's details where its tests compare them.
    for (m, path, status, detail) in [
        (
            Method::GET,
            format!("{COMPONENTS}/x9999c7s9b9n9"),
            404,
            "no such xname.",
        ),
        (
            Method::DELETE,
            format!("{COMPONENTS}/FAKE"),
            400,
            "invalid xname",
        ),
        (
            Method::DELETE,
            format!("{COMPONENTS}/x9999c7s9b9n9"),
            404,
            "no such xname.",
        ),
        (
            Method::PATCH,
            format!("{COMPONENTS}/FAKE/FlagOnly"),
            400,
            "invalid xname ID",
        ),
        (
            Method::GET,
            format!("{COMPONENTS}/ByNID/FAKE"),
            400,
            "a required argument was not an integer",
        ),
        (
            Method::GET,
            format!("{COMPONENTS}/ByNID/99999"),
            404,
            "no such NID.",
        ),
        (
            Method::GET,
            "/hsm/v2/Inventory/RedfishEndpoints/x9999c7s99b91".into(),
            404,
            "no such xname.",
        ),
        (
            Method::DELETE,
            "/hsm/v2/Inventory/RedfishEndpoints/foo".into(),
            400,
            "Argument was not a valid xname ID",
        ),
        (
            Method::DELETE,
            "/hsm/v2/Inventory/RedfishEndpoints/x9999c7s99b91".into(),
            404,
            "no such xname.",
        ),
        (
            Method::GET,
            "/hsm/v2/Inventory/RedfishEndpoints?id=foo".into(),
            400,
            "bad query param: Argument was not a valid xname ID",
        ),
        (
            Method::GET,
            "/hsm/v2/Inventory/RedfishEndpoints?type=foo".into(),
            400,
            "bad query param: Argument was not a valid HMS Type",
        ),
        (
            Method::GET,
            "/hsm/v2/Inventory/RedfishEndpoints/Query/FAKE".into(),
            400,
            "not yet implemented",
        ),
        (
            Method::GET,
            "/hsm/v2/Inventory/ComponentEndpoints/x9999c7s9b9n9".into(),
            404,
            "no such xname.",
        ),
        (
            Method::DELETE,
            "/hsm/v2/Inventory/ComponentEndpoints/FAKE".into(),
            400,
            "Argument was not a valid xname ID",
        ),
        (
            Method::GET,
            "/hsm/v2/Inventory/EthernetInterfaces?ComponentID=BADID".into(),
            400,
            "Invalid CompID.",
        ),
        (
            Method::GET,
            "/hsm/v2/Inventory/EthernetInterfaces/9a9999999999".into(),
            404,
            "No such component ethernet interface: 9a9999999999",
        ),
        (
            Method::DELETE,
            "/hsm/v2/Inventory/EthernetInterfaces/9a9999999999".into(),
            404,
            "no such component ethernet interface.",
        ),
        (
            Method::PATCH,
            "/hsm/v2/partitions/FAKE".into(),
            404,
            "no such partition.",
        ),
    ] {
        let p = h
            .api
            .call_raw(m.clone(), &path, b"{}".to_vec())
            .await
            .problem(status);
        assert_eq!(p["detail"], detail, "{m} {path}");
    }
    for (m, path, body, status, detail) in [
        (
            Method::POST,
            COMPONENTS,
            json!({"Components": [{"ID": "x9998c7", "State": "FAKE"}]}),
            400,
            "couldn't validate components: state 'FAKE' is invalid",
        ),
        (
            Method::POST,
            COMPONENTS,
            json!({"Components": [{"ID": "x9998c7", "State": "Off", "Class": "FAKE"}]}),
            400,
            "couldn't validate components: class 'FAKE' is invalid",
        ),
        (
            Method::PATCH,
            "/hsm/v2/State/Components/x1000c0s0b0n0/StateData",
            json!({"State": "FAKE", "Force": true}),
            400,
            "Argument was not a valid HMS State",
        ),
        (
            Method::POST,
            "/hsm/v2/Defaults/NodeMaps",
            json!({"NodeMaps": [{"NID": 5}]}),
            400,
            "couldn't validate map data at idx 0: xname ID '' is invalid or not a node",
        ),
        (
            Method::POST,
            "/hsm/v2/Inventory/RedfishEndpoints",
            json!({"ID": "foo"}),
            400,
            "couldn't validate endpoint data: foo is not a valid locational xname ID",
        ),
    ] {
        let p = h
            .api
            .call(m.clone(), path, Some(&body))
            .await
            .problem(status);
        assert_eq!(p["detail"], detail, "{m} {path} {body}");
    }
    for ok in [
        "enabled=t",
        "enabled=!false",
        "role=!Compute",
        "flag=warn",
        "type=!Node",
    ] {
        h.api.get(&format!("{COMPONENTS}?{ok}")).await.ok();
    }

    // Partitions: a name no partition can have is a 404, like an absent
    // one; `partition=` narrows a group's members.
    h.api
        .post(
            "/hsm/v2/partitions",
            &json!({"name": "p1", "members": {"ids": ["x1000c0s1b0n0"]}}),
        )
        .await
        .status(201);
    h.api
        .post(
            "/hsm/v2/groups",
            &json!({"label": "g", "members": {"ids": ["x1000c0s0b0n0", "x1000c0s1b0n0"]}}),
        )
        .await
        .status(201);
    for path in [
        "/hsm/v2/partitions/FAKE",
        "/hsm/v2/partitions/p2",
        "/hsm/v2/groups/g?partition=FAKE",
    ] {
        h.api.get(path).await.problem(404);
    }
    assert_eq!(
        h.api
            .get_json("/hsm/v2/groups/g/members?partition=p1")
            .await,
        json!({"ids": ["x1000c0s1b0n0"]})
    );
    assert_eq!(
        h.api.get_json("/hsm/v2/groups/g?partition=p1").await["members"],
        json!({"ids": ["x1000c0s1b0n0"]})
    );
    assert_eq!(
        h.api
            .delete("/hsm/v2/partitions/p1/members/FAKE")
            .await
            .problem(400)["detail"],
        "invalid xname ID"
    );
    assert_eq!(
        h.api
            .post(
                "/hsm/v2/partitions/p99/members",
                &json!({"id": "x1000c0s0b0n0"})
            )
            .await
            .problem(404)["detail"],
        "No such partition: p99"
    );

    // NodeMaps in upstream's words.
    const MAPS: &str = "/hsm/v2/Defaults/NodeMaps";
    let m = h
        .api
        .post(
            MAPS,
            &json!({"NodeMaps": [{"ID": "x1000c0s9b0n0", "NID": 90}]}),
        )
        .await
        .ok()
        .json();
    assert_eq!(
        m,
        json!({"code": 0, "message": "Created or modified 1 entries"})
    );
    for p in [
        h.api
            .get(&format!("{MAPS}/x1000c0s8b0n0"))
            .await
            .problem(404),
        h.api
            .delete(&format!("{MAPS}/x1000c0s8b0n0"))
            .await
            .problem(404),
    ] {
        assert_eq!(p["detail"], "no such xname.");
    }

    // A collection DELETE with nothing to delete is a 404.
    for path in [
        MAPS,
        COMPONENTS,
        "/hsm/v2/Inventory/RedfishEndpoints",
        "/hsm/v2/Inventory/ComponentEndpoints",
        "/hsm/v2/Inventory/EthernetInterfaces",
    ] {
        if let Some(n) = h.api.delete(path).await.json()["message"].as_str() {
            assert!(n.ends_with(" entries"), "always plural, as upstream: {n}");
        }
        let p = h.api.delete(path).await.problem(404);
        assert_eq!(p["detail"], "no entries to delete", "{path}");
    }

    // Routes not built here answer 501 whatever the method.
    for path in [
        "/hsm/v2/Inventory/Discover",
        "/hsm/v2/sysinfo/powermaps/x1000c0s0b0n0",
        "/hsm/v2/locks/lock",
        "/hsm/v2/locks/service/reservations/renew",
    ] {
        for m in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            h.api
                .call_raw(m.clone(), path, b"{}".to_vec())
                .await
                .problem(501);
        }
    }

    // omitempty: unset optional members are left out, as upstream's Go
    // structs do; V2 details and ComponentEndpoint Domain/FQDN never show.
    h.api
        .post(
            "/hsm/v2/Inventory/RedfishEndpoints",
            &json!({"ID": "x1000c0s0b0", "FQDN": "bmc0.example", "User": "root"}),
        )
        .await
        .status(201);
    let ep = h
        .api
        .get_json("/hsm/v2/Inventory/RedfishEndpoints/x1000c0s0b0")
        .await;
    let mut keys: Vec<&str> = ep.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "DiscoveryInfo",
            "Domain",
            "Enabled",
            "FQDN",
            "Hostname",
            "ID",
            "Password",
            "RediscoverOnUpdate",
            "Type",
            "User"
        ],
        "{ep}"
    );
    h.api
        .put(
            "/hsm/v2/Inventory/RedfishEndpoints/x1000c0s1b0",
            &json!({"ID": "x1000c0s1b0", "FQDN": "10.0.0.2", "SchemaVersion": 1,
                    "Systems": [{"uri": "/redfish/v1/Systems/1", "manufacturer": "QEMU",
                                 "ethernet_interfaces": [{"mac": "52:54:00:aa:00:01", "ip": "10.1.0.2"}]}],
                    "Managers": [{"uri": "/redfish/v1/Managers/bmc", "type": "BMC"}]}),
        )
        .await
        .ok();
    let ep = h
        .api
        .get_json("/hsm/v2/Inventory/RedfishEndpoints/x1000c0s1b0")
        .await;
    assert!(
        ep.get("Details").is_none() && ep.get("Name").is_none(),
        "{ep}"
    );
    assert_eq!(ep["IPAddress"], "10.0.0.2");
    let ces = h.api.get_json("/hsm/v2/Inventory/ComponentEndpoints").await;
    let ces = ces["ComponentEndpoints"].as_array().unwrap();
    assert!(!ces.is_empty());
    for c in ces {
        for gone in ["Domain", "FQDN", "Details", "MACAddr"] {
            assert!(c.get(gone).is_none(), "{gone} in {c}");
        }
    }
}

/// How a connection to the node listener behaves before the server gives
/// up on it.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// Connects and sends nothing.
    Silent,
    /// Sends a request head a few bytes at a time and never ends it.
    Dripping,
    /// Sends one complete request, reads the answer, then waits.
    KeepAliveThenSilent,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start_with(|c| {
        c.http.header_read_timeout_secs = 1;
        c.http.idle_timeout_secs = 2;
    })
    .await;
    // (client, closed within): 2 s idle, 1 s from a head's first byte.
    for (client, within) in [
        (Client::Silent, Duration::from_secs(6)),
        (Client::Dripping, Duration::from_secs(4)),
        (Client::KeepAliveThenSilent, Duration::from_secs(6)),
    ] {
        let mut s = tokio::net::TcpStream::connect(h.node_addr())
            .await
            .expect("connect");
        let mut answer = Vec::new();
        let closed = tokio::time::timeout(within, async {
            match client {
                Client::Silent => {}
                Client::Dripping => {
                    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
                    s.write_all(head).await.expect("write");
                    // One byte every 200 ms: never idle, never a whole head.
                    loop {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if s.write_all(b"a").await.is_err() {
                            return;
                        }
                        let mut b = [0u8; 512];
                        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
                            Ok(Ok(0)) | Ok(Err(_)) => return,
                            Ok(Ok(n)) => answer.extend_from_slice(&b[..n]),
                            Err(_) => {}
                        }
                    }
                }
                Client::KeepAliveThenSilent => {
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                        .await
                        .expect("write");
                }
            }
            let mut b = [0u8; 4096];
            loop {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => answer.extend_from_slice(&b[..n]),
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{client:?}: still open after {within:?}");
        let text = String::from_utf8_lossy(&answer);
        if matches!(client, Client::KeepAliveThenSilent) {
            assert!(text.starts_with("HTTP/1.1 200"), "{client:?}: {text}");
        }
    }
    let metrics = h.api.get("/metrics").await.ok().text();
    for reason in ["idle", "header_timeout"] {
        assert!(
            metrics.contains(&format!(
                "openchami_http_connections_shed_total{{listener=\"node\",reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
}

/// An identity provider made in the test: an ES256 key, published as a
/// JWKS file, whose tokens the appliance is configured to trust.
struct Idp {
    key: rcgen::KeyPair,
    kid: String,
}

impl Idp {
    fn new(kid: &str) -> Idp {
        Idp {
            key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key"),
            kid: kid.into(),
        }
    }

    fn jwk(&self) -> Value {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let raw = self.key.public_key_raw();
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
               "x": b64(&raw[1..33]), "y": b64(&raw[33..65])})
    }

    fn token(&self, iss: &str, aud: &str, scope: &str) -> String {
        let now = common::now();
        let claims = json!({"iss": iss, "sub": "ci-runner", "aud": [aud], "exp": now + 300,
                            "nbf": now, "iat": now, "scope": scope.split(' ').collect::<Vec<_>>()});
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.key.serialize_pem().as_bytes())
            .expect("encoding key");
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_a_trusted_issuer() {
    const IDP: &str = "https://idp.example/realms/hpc";
    let first = Idp::new("k1");
    let jwks_dir = tempfile::tempdir().unwrap();
    let jwks = jwks_dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [first.jwk()]}).to_string()).unwrap();
    let path = jwks.display().to_string();
    let h = Harness::start_with(move |c| {
        c.auth.trusted_issuers = vec![openchami::config::TrustedIssuer {
            issuer: IDP.into(),
            audience: "hpc-api".into(),
            jwks_file: path,
            ..Default::default()
        }];
    })
    .await;
    let group = json!({"metadata": {"name": "compute"}, "spec": {"template": "#cloud-config\n"}});
    let as_ = |t: String| h.api_with(Some(&t));

    // (token, GET status, POST status)
    let rotated = Idp::new("k2");
    let cases = [
        (first.token(IDP, "hpc-api", "read write"), 200, 201),
        (first.token(IDP, "hpc-api", "read"), 200, 403),
        (first.token(IDP, "other-api", "read write"), 401, 401),
        (
            first.token("https://unknown.example", "hpc-api", "read write"),
            401,
            401,
        ),
        (first.token(IDP, "openchami", "read write"), 401, 401),
        (Idp::new("k1").token(IDP, "hpc-api", "write"), 401, 401),
    ];
    for (i, (token, get, post)) in cases.into_iter().enumerate() {
        let c = as_(token);
        assert_eq!(
            c.get("/metadata-service/groups").await.status,
            get,
            "case {i}"
        );
        let mut g = group.clone();
        g["metadata"]["name"] = json!(format!("g{i}"));
        assert_eq!(
            c.post("/metadata-service/groups", &g).await.status,
            post,
            "case {i}"
        );
    }
    // The issuer rotates its key: an unknown kid makes the appliance read
    // the JWKS again (once; another unknown kid right after is refused
    // without a read).
    std::fs::write(
        &jwks,
        json!({"keys": [first.jwk(), rotated.jwk()]}).to_string(),
    )
    .unwrap();
    as_(rotated.token(IDP, "hpc-api", "admin"))
        .get("/metadata-service/groups")
        .await
        .ok();
    let later = Idp::new("k3");
    std::fs::write(&jwks, json!({"keys": [later.jwk()]}).to_string()).unwrap();
    as_(later.token(IDP, "hpc-api", "admin"))
        .get("/metadata-service/groups")
        .await
        .problem(401);
}

/// A one-time bootstrap token signed by the appliance.
fn bootstrap_token(h: &Harness, jti: &str, scope: &[&str]) -> String {
    let st = &h.app().state;
    let now = common::now();
    st.tokens
        .sign(&openchami::ca::token::Claims {
            sub: "boot-service".into(),
            iss: st.issuer.clone(),
            aud: vec![st.config.auth.audience.clone()],
            exp: now + 600,
            iat: now,
            nbf: Some(now),
            roles: vec![],
            scope: scope.iter().map(|s| s.to_string()).collect(),
            jti: Some(jti.into()),
            token_use: Some("bootstrap".into()),
        })
        .expect("sign a bootstrap token")
}

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const BOOTSTRAP: &str = "urn:openchami:params:oauth:token-type:bootstrap-token";

/// POSTs a form to `/oauth/token` (raw, so malformed bodies can be sent).
async fn grant_raw(c: &common::Http, body: impl Into<Vec<u8>>) -> common::Resp {
    c.send(
        c.raw
            .post(c.url("/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.into()),
    )
    .await
}

async fn grant(c: &common::Http, pairs: &[(&str, &str)]) -> common::Resp {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    grant_raw(c, body).await
}

async fn exchange(c: &common::Http, bootstrap: &str) -> common::Resp {
    grant(
        c,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", bootstrap),
            ("subject_token_type", BOOTSTRAP),
        ],
    )
    .await
}

async fn refresh(c: &common::Http, token: &str) -> common::Resp {
    grant(
        c,
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

/// An OAuth error answer: status and `error`; returns the body.
#[track_caller]
fn oauth_refused(r: common::Resp, status: u16, error: &str) -> Value {
    let r = r.status(status);
    assert_eq!(r.header("cache-control"), Some("no-store"), "{}", r.what);
    let v = r.json();
    assert_eq!(v["error"], error, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{v}"
    );
    v
}

/// The claims of a JWT, unverified.
fn jwt_claims(t: &str) -> Value {
    use base64::Engine as _;
    let payload = t.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_token_exchange_round_trip() {
    let h = Harness::start().await;
    let bootstrap = bootstrap_token(&h, "bt-1", &["read", "write"]);
    // The bootstrap token is no API token.
    h.api_with(Some(&bootstrap))
        .get("/metadata-service/groups")
        .await
        .problem(401);
    let r = exchange(&h.anon, &bootstrap).await.ok();
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = r.json();
    assert_eq!(r["token_type"], "Bearer");
    assert_eq!(r["scope"], "read write");
    assert_eq!(
        r["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access-token"
    );
    assert!(r["expires_in"].as_i64().unwrap() > 0);
    assert_eq!(r["refresh_expires_in"], 86400, "{r}");
    assert!(r["refresh_token"].as_str().is_some_and(|t| t.len() > 64));
    let access = r["access_token"].as_str().unwrap().to_string();
    // TokenSmith's claim shapes: aud and scope as arrays.
    let claims = jwt_claims(&access);
    assert_eq!(claims["aud"], json!(["openchami"]), "{claims}");
    assert_eq!(claims["scope"], json!(["read", "write"]), "{claims}");
    assert_eq!(claims["sub"], "boot-service");
    assert!(claims["jti"].as_str().unwrap().starts_with("st-"));
    let c = h.api_with(Some(&access));
    c.post(
        "/metadata-service/groups",
        &json!({"metadata": {"name": "compute"}, "spec": {"template": "#cloud-config\n"}}),
    )
    .await
    .status(201);
    // One time only; bad requests get OAuth errors.
    oauth_refused(exchange(&h.anon, &bootstrap).await, 400, "invalid_grant");
    // An access token is not a bootstrap token.
    oauth_refused(exchange(&h.anon, &access).await, 400, "invalid_grant");
    oauth_refused(exchange(&h.anon, "not.a.jwt").await, 400, "invalid_grant");
    // A read-only grant cannot write.
    let r = exchange(&h.anon, &bootstrap_token(&h, "bt-2", &["read"]))
        .await
        .ok()
        .json();
    let reader = h.api_with(r["access_token"].as_str());
    reader.get("/metadata-service/groups").await.ok();
    reader
        .post(
            "/metadata-service/groups",
            &json!({"metadata": {"name": "other"}, "spec": {"template": "#cloud-config\n"}}),
        )
        .await
        .status(403);
}

/// Refresh tokens rotate on every use; a rotated-out one coming back
/// revokes its whole family, the newest token included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_a_replay_revokes_the_family() {
    let h = Harness::start().await;
    let first = exchange(&h.anon, &bootstrap_token(&h, "bt-r", &["read", "write"]))
        .await
        .ok()
        .json();
    let mut tokens = vec![first["refresh_token"].as_str().unwrap().to_string()];
    // (refresh token presented by index, expected error or None for success)
    let steps: &[(usize, Option<&str>)] = &[
        (0, None),                  // 0 -> 1
        (1, None),                  // 1 -> 2
        (0, Some("invalid_grant")), // replay of 0: the family is revoked
        (2, Some("invalid_grant")), // so the newest dies too
        (1, Some("invalid_grant")),
    ];
    for (i, (presented, want)) in steps.iter().enumerate() {
        let r = refresh(&h.anon, &tokens[*presented]).await;
        match want {
            None => {
                let v = r.ok().json();
                let next = v["refresh_token"].as_str().unwrap().to_string();
                assert!(!tokens.contains(&next), "step {i}: rotated");
                assert_eq!(v["scope"], "read write", "step {i}");
                let left = v["refresh_expires_in"].as_i64().unwrap();
                assert!(left > 0 && left <= 86400, "step {i}: {v}");
                // The new access token is a writing one, like the first.
                let c = h.api_with(v["access_token"].as_str());
                c.post(
                    "/metadata-service/groups",
                    &json!({"metadata": {"name": format!("g{i}")}, "spec": {"template": "#cloud-config\n"}}),
                )
                .await
                .status(201);
                tokens.push(next);
            }
            Some(e) => {
                oauth_refused(r, 400, e);
            }
        }
    }
    // Another family is not affected.
    let other = exchange(&h.anon, &bootstrap_token(&h, "bt-s", &["read"]))
        .await
        .ok()
        .json();
    refresh(&h.anon, other["refresh_token"].as_str().unwrap())
        .await
        .ok();
    // Only hashes are kept.
    let snap = h.app().state.store.snapshot();
    for f in snap.refresh_families.values() {
        assert!(!tokens.iter().any(|t| t.contains(&f.current)));
        assert_eq!(f.current.len(), 64);
    }
}

/// An expired family's token is refused, and the bootstrap one-time rule
/// and live refresh tokens both survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_state_survives_a_restart_and_expiry_is_enforced() {
    let mut h = Harness::start().await;
    let bootstrap = bootstrap_token(&h, "bt-restart", &["read"]);
    let live = exchange(&h.anon, &bootstrap).await.ok().json();
    let doomed = exchange(&h.anon, &bootstrap_token(&h, "bt-exp", &["read"]))
        .await
        .ok()
        .json();
    // Age the second family past its end.
    let doomed_token = doomed["refresh_token"].as_str().unwrap().to_string();
    let id = doomed_token.split('.').next().unwrap().to_string();
    h.app()
        .state
        .store
        .write(move |t| {
            let mut f = t.model().refresh_families.get(&id).cloned().unwrap();
            f.expires_at = common::now() - 1;
            t.put_refresh_family(f);
            Ok(())
        })
        .await
        .unwrap();
    oauth_refused(refresh(&h.anon, &doomed_token).await, 400, "invalid_grant");

    h.restart().await;
    oauth_refused(exchange(&h.anon, &bootstrap).await, 400, "invalid_grant");
    let r = refresh(&h.anon, live["refresh_token"].as_str().unwrap())
        .await
        .ok()
        .json();
    assert_eq!(r["scope"], "read");
    oauth_refused(refresh(&h.anon, &doomed_token).await, 400, "invalid_grant");
}

/// Malformed token requests are refused with invalid_request (or
/// unsupported_grant_type) and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_token_requests_are_invalid_request() {
    let h = Harness::start().await;
    let bootstrap = bootstrap_token(&h, "bt-m", &["read"]);
    let gen0 = h.generation();
    let b = bootstrap.as_str();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "invalid_request"),
        (b"grant_type=".to_vec(), "invalid_request"),
        (b"grant_type=%20".to_vec(), "invalid_request"),
        (b"subject_token=x".to_vec(), "invalid_request"),
        (
            b"{\"grant_type\":\"refresh_token\"}".to_vec(),
            "invalid_request",
        ),
        (b"grant_type=refresh_token".to_vec(), "invalid_request"),
        (
            b"grant_type=refresh_token&refresh_token=".to_vec(),
            "invalid_request",
        ),
        (
            b"grant_type=refresh_token&grant_type=refresh_token&refresh_token=a".to_vec(),
            "invalid_request",
        ),
        (
            format!("grant_type={EXCHANGE}&subject_token={b}").into_bytes(),
            "invalid_request",
        ),
        (
            format!("grant_type={EXCHANGE}&subject_token={b}&subject_token_type=urn:x")
                .into_bytes(),
            "invalid_request",
        ),
        (
            format!("grant_type={EXCHANGE}&subject_token_type={BOOTSTRAP}").into_bytes(),
            "invalid_request",
        ),
        (b"grant_type=\xff\xfe".to_vec(), "invalid_request"),
        (
            b"grant_type=client_credentials".to_vec(),
            "unsupported_grant_type",
        ),
        (
            b"grant_type=password&username=a&password=b".to_vec(),
            "unsupported_grant_type",
        ),
        (
            ("grant_type=".to_string() + &"x".repeat(10_000)).into_bytes(),
            "unsupported_grant_type",
        ),
    ];
    for (body, want) in cases {
        let what = String::from_utf8_lossy(&body)
            .chars()
            .take(80)
            .collect::<String>();
        let r = grant_raw(&h.anon, body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.json()["error"], want, "{what}");
    }
    assert_eq!(h.generation(), gen0, "a refused request changed nothing");
    // None of them counted as a failed grant: the bootstrap token still works.
    exchange(&h.anon, &bootstrap).await.ok();
}

/// Five failed grants from one address within a minute turn it away
/// (429) while another address is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_grants_are_limited_per_address() {
    let h = Harness::start().await;
    let bootstrap = bootstrap_token(&h, "bt-l", &["read"]);
    let from = |last: u8| {
        let raw = reqwest::Client::builder()
            .tls_backend_preconfigured(common::tls_config(&h.root_pem()))
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .no_proxy()
            .timeout(common::TIMEOUT)
            .build()
            .unwrap();
        common::Http {
            raw,
            ..h.anon.clone()
        }
    };
    let bad = format!("{}.{}", "0".repeat(32), "0".repeat(64));
    let one = from(1);
    // (request from 127.0.0.1, expected status, error)
    for i in 0..5 {
        let r = if i % 2 == 0 {
            refresh(&one, &bad).await
        } else {
            exchange(&one, "not.a.jwt").await
        };
        oauth_refused(r, 400, "invalid_grant");
    }
    let r = exchange(&one, &bootstrap).await;
    let retry = r.header("retry-after").map(str::to_string);
    oauth_refused(r, 429, "too_many_requests");
    assert!(
        retry.is_some_and(|s| s.parse::<u64>().is_ok_and(|n| (1..=60).contains(&n))),
        "Retry-After"
    );
    // The blocked address's valid token was not spent; another address is
    // served (when the loopback network takes other sources, as on Linux).
    let two = from(2);
    let r = refresh(&two, &bad).await;
    oauth_refused(r, 400, "invalid_grant");
    exchange(&two, &bootstrap).await.ok();
}

/// Behind a trusted proxy the limit applies to the client it names in
/// X-Forwarded-For; a caller that is no trusted proxy cannot dodge it with
/// the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_grants_are_counted_per_forwarded_client() {
    let h = Harness::start_with(|c| {
        c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let bootstrap = bootstrap_token(&h, "bt-x", &["read"]);
    let via = |client: &str, form: Vec<(&'static str, String)>| {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        h.anon.send(
            h.anon
                .raw
                .post(h.anon.url("/oauth/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-forwarded-for", client)
                .body(body),
        )
    };
    let bad = || {
        vec![
            ("grant_type", "refresh_token".to_string()),
            (
                "refresh_token",
                format!("{}.{}", "1".repeat(32), "1".repeat(64)),
            ),
        ]
    };
    let good = || {
        vec![
            ("grant_type", EXCHANGE.to_string()),
            ("subject_token", bootstrap.clone()),
            ("subject_token_type", BOOTSTRAP.to_string()),
        ]
    };
    for _ in 0..5 {
        oauth_refused(via("10.0.0.1", bad()).await, 400, "invalid_grant");
    }
    // (X-Forwarded-For, expected status)
    let cases: &[(&str, u16)] = &[
        ("10.0.0.1", 429),
        ("192.0.2.7, 10.0.0.1", 429),
        ("10.0.0.2", 400),
    ];
    for (xff, want) in cases {
        let r = via(xff, bad()).await;
        assert_eq!(r.status, *want, "{xff}: {}", r.text());
    }
    via("10.0.0.3", good()).await.ok();
}

/// Without trusted proxies, X-Forwarded-For changes nothing: the peer
/// address is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_does_not_dodge_the_limit() {
    let h = Harness::start().await;
    let bad = format!("{}.{}", "2".repeat(32), "2".repeat(64));
    for i in 0..6 {
        let r = h
            .anon
            .send(
                h.anon
                    .raw
                    .post(h.anon.url("/oauth/token"))
                    .header("x-forwarded-for", format!("10.9.9.{i}"))
                    .body(format!("grant_type=refresh_token&refresh_token={bad}")),
            )
            .await;
        let want = if i < 5 { 400 } else { 429 };
        assert_eq!(r.status, want, "request {i}: {}", r.text());
    }
}
