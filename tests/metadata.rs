//! cloud-init metadata through the real HTTP stack: the documents a node
//! gets (golden files in `tests/golden/metadata/`), who is identified as
//! whom, persistence across restarts, refused input, the CLI, and cloud-init's
//! own schema checker on the served files.
//!
//! Requests of the harness come from 127.0.0.1, so the node under test has an
//! interface with that address. After an intended change of output,
//! regenerate the golden files with `UPDATE_GOLDEN=1 cargo test --test metadata`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use base64::Engine as _;
use common::{Harness, Http, Resp};
use openchami::inventory::model::Lease;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_openchami");
const N0: &str = "x1000c0s0b0n0";
const N1: &str = "x1000c0s1b0n0";
const N2: &str = "x1000c0s2b0n0";
const N2_MAC: &str = "02:00:00:00:00:03";

const COMPUTE_FILE: &str = "#cloud-config
write_files:
  - path: /etc/rsyslog.d/remote.conf
    content: |
      *.* @172.16.0.254:514
runcmd:
  - systemctl restart rsyslog
";

const GPU_TEMPLATE: &str = "## template: jinja
#cloud-config
hostname: {{ ds.meta_data.local_hostname }}
fqdn: {{ local_hostname }}.{{ ds.meta_data.cluster_name }}.cluster
write_files:
  - path: /etc/gpu-driver
    content: \"{{ ds.meta_data.instance_data.v1.vendor_data.groups.gpu.driver }}\"
{% if ds.meta_data.instance_data.v1.vendor_data.groups.compute is defined %}
runcmd:
  - echo \"compute node {{ v1.instance_id }} in {{ ds.meta_data.instance_data.v1.region }}\"
{% endif %}
";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/metadata")
}

/// Compares `actual` with `tests/golden/metadata/<name>`, or rewrites it
/// when `UPDATE_GOLDEN=1`.
#[track_caller]
fn golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).expect("create golden dir");
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `UPDATE_GOLDEN=1 cargo test --test metadata` to create it.\nactual:\n{actual}",
            path.display()
        )
    });
    assert!(
        want == actual,
        "{} differs (UPDATE_GOLDEN=1 rewrites it after an intended change)\n--- want\n{want}\n--- actual\n{actual}",
        path.display()
    );
}

/// Hides an instance ID (random by design) behind a fixed marker.
fn mask(text: &str, instance_id: &str) -> String {
    text.replace(instance_id, "i-XXXXXXXX")
}

async fn start(trusted_proxy: bool) -> Harness {
    Harness::start_with(|c| {
        c.cluster_name = "demo".into();
        c.node.advertise = "http://172.16.0.254:27778".into();
        if trusted_proxy {
            c.http.trusted_proxies = vec![std::net::IpAddr::from([127, 0, 0, 1])];
        }
    })
    .await
}

/// Three nodes: N0 (the caller's address `n0_ip`) in compute and gpu, N1 in
/// compute at 172.16.0.2, N2 in rack2 with a MAC but no address.
async fn inventory(h: &Harness, n0_ip: &str) {
    let cluster = json!({"nodes": [
        {"xname": N0, "nid": 1, "groups": ["compute", "gpu"],
         "interfaces": [{"mac_addr": "02:00:00:00:00:01", "ip_addrs": [{"name": "internal", "ip_addr": n0_ip}]}]},
        {"xname": N1, "nid": 2, "groups": ["compute"],
         "interfaces": [{"mac_addr": "02:00:00:00:00:02", "ip_addrs": [{"name": "internal", "ip_addr": "172.16.0.2"}]}]},
        {"xname": N2, "nid": 3, "groups": ["rack2"],
         "interfaces": [{"mac_addr": N2_MAC}]}
    ]});
    h.api.post("/inventory/v1/import", &cluster).await.ok();
}

/// Cluster defaults and two cloud-init groups (a plain file, a base64 Jinja template).
async fn cloud_init(h: &Harness) {
    h.api
        .post(
            "/cloud-init/admin/cluster-defaults",
            &json!({"cluster-name": "demo", "short-name": "de", "nid-length": 2,
                    "region": "r1", "availability-zone": "az1", "cloud_provider": "openchami",
                    "public-keys": ["ssh-ed25519 AAAAC3NzaC1 admin@head"]}),
        )
        .await
        .status(201);
    let r = h
        .api
        .post(
            "/cloud-init/admin/groups",
            &json!({"name": "compute", "description": "compute nodes",
                    "meta-data": {"syslog_server": "172.16.0.254", "ntp-servers": ["172.16.0.254"],
                                  "mode": "0755", "on": "yes", "window": "12:30"},
                    "file": {"content": COMPUTE_FILE, "filename": "compute.yaml", "encoding": "plain"}}),
        )
        .await
        .status(201);
    assert_eq!(r.header("location"), Some("/groups/compute"));
    h.api
        .put(
            "/cloud-init/admin/groups/gpu",
            &json!({"meta-data": {"driver": "550.54"},
                    "file": {"content": b64(GPU_TEMPLATE), "filename": "gpu.yaml", "encoding": "base64"}}),
        )
        .await
        .status(201);
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A POST with a form body, as cloud-init's phone_home module sends it.
fn form(c: &Http, path: &str, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    c.raw
        .post(c.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
}

async fn get_with_xff(c: &Http, path: &str, xff: &str) -> Resp {
    c.send(c.request(Method::GET, path).header("x-forwarded-for", xff))
        .await
}

fn instance_id_of(meta: &str) -> String {
    let v: Value = serde_yaml_ng::from_str(meta).expect("meta-data is YAML");
    v["instance-id"].as_str().expect("instance-id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_of_a_node_in_two_groups() {
    let h = start(false).await;
    inventory(&h, "127.0.0.1").await;
    cloud_init(&h).await;

    let r = h.node.get("/cloud-init/meta-data").await.ok();
    assert!(r.content_type().starts_with("text/plain"), "{r:?}");
    let meta = r.text();
    let iid = instance_id_of(&meta);
    assert!(
        iid.len() == 10 && iid.starts_with("i-"),
        "instance id {iid}"
    );
    golden("two-groups.meta-data.yaml", &mask(&meta, &iid));
    let vendor = h.node.get("/cloud-init/vendor-data").await.ok().text();
    golden("two-groups.vendor-data", &vendor);
    assert_eq!(
        h.node.get("/cloud-init/user-data").await.ok().text(),
        "#cloud-config\n{}\n"
    );
    assert_eq!(
        h.node.get("/cloud-init/compute.yaml").await.ok().text(),
        COMPUTE_FILE
    );
    assert_eq!(
        h.node.get("/cloud-init/gpu.yaml").await.ok().text(),
        GPU_TEMPLATE,
        "templates are served as stored, base64-decoded"
    );
    h.node.get("/cloud-init/rack2.yaml").await.problem(404);
    h.node.get("/cloud-init/compute").await.problem(404);

    // The same on the API listener, anonymously, and through impersonation.
    assert_eq!(h.anon.get("/cloud-init/meta-data").await.ok().text(), meta);
    assert_eq!(
        h.api
            .get(&format!("/cloud-init/admin/impersonation/{N0}/meta-data"))
            .await
            .ok()
            .text(),
        meta
    );
    assert_eq!(
        h.api
            .get(&format!("/cloud-init/admin/impersonation/{N0}/vendor-data"))
            .await
            .ok()
            .text(),
        vendor
    );
    assert_eq!(
        h.api
            .get(&format!("/cloud-init/admin/impersonation/{N0}/gpu.yaml"))
            .await
            .ok()
            .text(),
        GPU_TEMPLATE
    );
    h.anon
        .get(&format!("/cloud-init/admin/impersonation/{N0}/meta-data"))
        .await
        .problem(401);

    // With instance-info overrides; the instance ID stays.
    h.api
        .put(
            &format!("/cloud-init/admin/instance-info/{N0}"),
            &json!({"instance-id": "i-00000000", "local-hostname": "gpu01", "hostname": "gpu01.demo.cluster",
                    "region": "r2", "instance-type": "gpu.large",
                    "cloud-init-base-url": "http://10.1.0.1:8081/cloud-init/",
                    "public-keys": ["ssh-ed25519 AAAAC3NzaC2 user@laptop"]}),
        )
        .await
        .status(201);
    let info = h
        .api
        .get_json(&format!("/cloud-init/admin/instance-info/{N0}"))
        .await;
    assert_eq!(info["instance-id"], iid.as_str(), "{info}");
    assert_eq!(
        info["cloud-init-base-url"],
        "http://10.1.0.1:8081/cloud-init"
    );
    let meta2 = h.node.get("/cloud-init/meta-data").await.ok().text();
    assert_eq!(instance_id_of(&meta2), iid);
    golden("overrides.meta-data.yaml", &mask(&meta2, &iid));
    golden(
        "overrides.vendor-data",
        &h.node.get("/cloud-init/vendor-data").await.ok().text(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_a_node_is_ignored() {
    let h = start(false).await;
    inventory(&h, "127.0.0.1").await;
    cloud_init(&h).await;
    let own = h.node.get("/cloud-init/meta-data").await.ok().text();
    assert!(own.contains("local-hostname: de01"), "{own}");
    for c in [&h.node, &h.anon] {
        let r = get_with_xff(c, "/cloud-init/meta-data", "172.16.0.2")
            .await
            .ok();
        assert_eq!(r.text(), own, "a node naming another gets its own data");
        let r = get_with_xff(c, "/cloud-init/vendor-data", "172.16.0.2")
            .await
            .ok();
        assert!(r.text().contains("gpu.yaml"), "still N0's groups");
        get_with_xff(c, "/cloud-init/gpu.yaml", "172.16.0.2")
            .await
            .ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_a_trusted_proxy_names_the_node() {
    let h = start(true).await;
    // The proxy (127.0.0.1) is no node here; N0 is elsewhere.
    inventory(&h, "172.16.0.1").await;
    cloud_init(&h).await;
    let r = get_with_xff(&h.node, "/cloud-init/meta-data", "172.16.0.2")
        .await
        .ok();
    assert!(r.text().contains("local-hostname: de02"), "{}", r.text());
    let r = get_with_xff(&h.node, "/cloud-init/meta-data", "6.6.6.6, 172.16.0.1")
        .await
        .ok();
    assert!(
        r.text().contains("local-hostname: de01"),
        "read right to left: {}",
        r.text()
    );
    get_with_xff(&h.node, "/cloud-init/gpu.yaml", "172.16.0.2")
        .await
        .problem(404);
    get_with_xff(&h.node, "/cloud-init/meta-data", "172.16.0.99")
        .await
        .problem(422);
    // Without the header, the proxy itself is the caller: no node.
    h.node.get("/cloud-init/meta-data").await.problem(422);
    // A hop that is not a bare address ends the walk: what lies left of it
    // (here N0's address) is not believed, and the proxy is the caller.
    for xff in [
        "172.16.0.1, 172.16.0.50:4711",
        "172.16.0.1, [172.16.0.50]",
        "172.16.0.1, unknown",
        "172.16.0.1, 172.16.0.50 junk",
        "172.16.0.1,",
    ] {
        for p in ["/cloud-init/meta-data", "/cloud-init/gpu.yaml"] {
            let r = get_with_xff(&h.node, p, xff).await;
            assert!(
                r.status == 422 || r.status == 404,
                "{xff:?} on {p} must not identify N0: {r:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_callers_and_nodes() {
    let h = start(false).await;
    inventory(&h, "172.16.0.1").await;
    for p in [
        "/cloud-init/meta-data",
        "/cloud-init/user-data",
        "/cloud-init/vendor-data",
        "/cloud-init/compute.yaml",
    ] {
        let v = h.node.get(p).await.problem(422);
        assert!(v["detail"].as_str().unwrap().contains("127.0.0.1"), "{v}");
    }
    let form = form(
        &h.node,
        "/cloud-init/phone-home/i-12345678",
        &[("instance_id", "i-12345678")],
    );
    h.node.send(form).await.problem(422);
    for p in ["meta-data", "user-data", "vendor-data", "compute.yaml"] {
        h.api
            .get(&format!("/cloud-init/admin/impersonation/x9c0s0b0n0/{p}"))
            .await
            .problem(404);
    }
    h.api
        .get("/cloud-init/admin/impersonation/not-an-xname/meta-data")
        .await
        .problem(404);
    h.api
        .get(&format!(
            "/cloud-init/admin/impersonation/{N2}/compute.yaml"
        ))
        .await
        .problem(404);
    h.api
        .get("/cloud-init/admin/instance-info/x9c0s0b0n0")
        .await
        .problem(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identification_by_lease() {
    let h = start(false).await;
    inventory(&h, "172.16.0.1").await;
    cloud_init(&h).await;
    h.node.get("/cloud-init/meta-data").await.problem(422);
    let store = h.app().state.store.clone();
    let lease = |expires: Option<i64>| Lease {
        ip: "127.0.0.1".parse().unwrap(),
        mac: N2_MAC.into(),
        expires: expires.and_then(|s| chrono::DateTime::from_timestamp(s, 0)),
    };
    let l = lease(None);
    store
        .write(move |t| {
            t.put_lease(l);
            Ok(())
        })
        .await
        .unwrap();
    let meta = h.node.get("/cloud-init/meta-data").await.ok().text();
    assert!(meta.contains("local-hostname: de03"), "{meta}");
    assert_eq!(
        h.node.get("/cloud-init/vendor-data").await.ok().text(),
        "#include\nhttp://172.16.0.254:27778/cloud-init/rack2.yaml\n"
    );
    assert_eq!(
        h.node.get("/cloud-init/rack2.yaml").await.ok().text(),
        "#cloud-config\n{}\n",
        "a group without cloud-init data serves an empty cloud-config"
    );
    // An expired lease identifies nobody; a lookup never lags a write.
    let l = lease(Some(common::now() - 10));
    store
        .write(move |t| {
            t.put_lease(l);
            Ok(())
        })
        .await
        .unwrap();
    h.node.get("/cloud-init/meta-data").await.problem(422);
    let l = lease(Some(common::now() + 3600));
    store
        .write(move |t| {
            t.put_lease(l);
            Ok(())
        })
        .await
        .unwrap();
    h.node.get("/cloud-init/meta-data").await.ok();
    // An inventory address wins over a lease.
    h.api
        .patch(
            "/hsm/v2/Inventory/EthernetInterfaces/020000000002",
            &json!({"IPAddresses": [{"IPAddress": "127.0.0.1"}]}),
        )
        .await
        .ok();
    let meta = h.node.get("/cloud-init/meta-data").await.ok().text();
    assert!(meta.contains("local-hostname: de02"), "{meta}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_live() {
    let h = start(false).await;
    inventory(&h, "127.0.0.1").await;
    cloud_init(&h).await;
    h.node.get("/cloud-init/rack2.yaml").await.problem(404);
    h.api
        .post("/hsm/v2/groups/rack2/members", &json!({"id": N0}))
        .await
        .status(201);
    assert!(
        h.node
            .get("/cloud-init/vendor-data")
            .await
            .ok()
            .text()
            .ends_with("/rack2.yaml\n")
    );
    h.node.get("/cloud-init/rack2.yaml").await.ok();
    // Fetched twice (the second from memory), then changed: the next fetch
    // reflects the change at once.
    for _ in 0..2 {
        let meta = h.node.get("/cloud-init/meta-data").await.ok().text();
        assert!(meta.contains("local-hostname: de01"), "{meta}");
    }
    h.api
        .post(
            "/cloud-init/admin/cluster-defaults",
            &json!({"short-name": "nid", "nid-length": 3}),
        )
        .await
        .status(201);
    let meta = h.node.get("/cloud-init/meta-data").await.ok().text();
    assert!(meta.contains("local-hostname: nid001"), "{meta}");
    assert!(
        meta.contains("region: r1"),
        "a merge keeps other fields: {meta}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_ids_are_assigned_once() {
    let h = start(false).await;
    inventory(&h, "127.0.0.1").await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let c = h.node.clone();
        tasks.push(tokio::spawn(async move {
            instance_id_of(&c.get("/cloud-init/meta-data").await.ok().text())
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "concurrent first requests agree: {ids:?}");
    let before = h.generation();
    h.node.get("/cloud-init/meta-data").await.ok();
    h.api
        .get(&format!("/cloud-init/admin/impersonation/{N0}/meta-data"))
        .await
        .ok();
    assert_eq!(h.generation(), before, "no write once assigned");
    let other = instance_id_of(
        &h.api
            .get(&format!("/cloud-init/admin/impersonation/{N1}/meta-data"))
            .await
            .ok()
            .text(),
    );
    assert_ne!(other, ids[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything() {
    let mut h = start(false).await;
    inventory(&h, "127.0.0.1").await;
    cloud_init(&h).await;
    h.api
        .put(
            &format!("/cloud-init/admin/instance-info/{N1}"),
            &json!({"hostname": "login01"}),
        )
        .await
        .status(201);
    let meta = h.node.get("/cloud-init/meta-data").await.ok().text();
    let form = form(
        &h.node,
        "/cloud-init/phone-home/i-0000abcd",
        &[
            ("instance_id", "i-0000abcd"),
            ("hostname", "de01"),
            ("fqdn", "de01.demo"),
            ("pub_key_ed25519", "ssh-ed25519 AAAAhost root@de01"),
        ],
    );
    h.node.send(form).await.ok();
    let paths = [
        "/cloud-init/admin/cluster-defaults".to_string(),
        "/cloud-init/admin/groups".to_string(),
        format!("/cloud-init/admin/instance-info/{N0}"),
        format!("/cloud-init/admin/instance-info/{N1}"),
        "/cloud-init/admin/phone-home".to_string(),
    ];
    let mut before = Vec::new();
    for p in &paths {
        before.push(h.api.get_json(p).await);
    }
    h.restart().await;
    for (p, want) in paths.iter().zip(&before) {
        assert_eq!(&h.api.get_json(p).await, want, "{p}");
    }
    assert_eq!(
        h.node.get("/cloud-init/meta-data").await.ok().text(),
        meta,
        "same documents, same instance ID"
    );
    assert_eq!(
        h.node.get("/cloud-init/gpu.yaml").await.ok().text(),
        GPU_TEMPLATE
    );
}

/// A request that must be refused with `status` and change nothing.
async fn refused(h: &Harness, method: Method, path: &str, body: impl Into<Vec<u8>>, status: u16) {
    let before = h.generation();
    let r = h.api.call_raw(method.clone(), path, body).await;
    r.problem(status);
    assert_eq!(h.generation(), before, "{method} {path} changed the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let h = start(false).await;
    inventory(&h, "127.0.0.1").await;
    cloud_init(&h).await;
    let groups = "/cloud-init/admin/groups";
    let defaults = "/cloud-init/admin/cluster-defaults";
    let group = |file: Value| json!({"name": "new", "file": file}).to_string();

    refused(&h, Method::POST, defaults, "{", 400).await;
    refused(&h, Method::POST, defaults, "[]", 400).await;
    refused(
        &h,
        Method::POST,
        defaults,
        r#"{"base-url": "ftp://x"}"#,
        400,
    )
    .await;
    refused(&h, Method::POST, defaults, r#"{"nid-length": "two"}"#, 400).await;
    refused(
        &h,
        Method::POST,
        defaults,
        r#"{"boot-subnet": "10.0.0.0/99"}"#,
        400,
    )
    .await;
    refused(&h, Method::POST, groups, "{\"name\": \"new\",", 400).await;
    refused(
        &h,
        Method::POST,
        groups,
        r#"{"description": "no name"}"#,
        400,
    )
    .await;
    refused(&h, Method::POST, groups, r#"{"name": "bad name"}"#, 400).await;
    refused(
        &h,
        Method::POST,
        groups,
        r#"{"name": "new", "meta-data": "x"}"#,
        400,
    )
    .await;
    refused(
        &h,
        Method::POST,
        groups,
        group(json!({"content": "this is not base64!", "encoding": "base64"})),
        400,
    )
    .await;
    refused(
        &h,
        Method::POST,
        groups,
        group(json!({"content": "eA=", "encoding": "base64"})),
        400,
    )
    .await;
    refused(
        &h,
        Method::POST,
        groups,
        group(json!({"content": "x", "encoding": "gzip"})),
        400,
    )
    .await;
    refused(
        &h,
        Method::POST,
        groups,
        group(json!({"content": "#cloud-config\nruncmd: [ls\n"})),
        400,
    )
    .await;
    refused(
        &h,
        Method::POST,
        groups,
        group(json!({"content": b64("#cloud-config\n  - a\n b: [\n"), "encoding": "base64"})),
        400,
    )
    .await;
    let big = format!("#cloud-config\n# {}\n", "x".repeat(1024 * 1024));
    refused(
        &h,
        Method::POST,
        groups,
        group(json!({"content": big})),
        413,
    )
    .await;
    refused(
        &h,
        Method::POST,
        groups,
        group(json!({"content": b64(&big), "encoding": "base64"})),
        413,
    )
    .await;
    refused(
        &h,
        Method::POST,
        groups,
        json!({"name": "new", "meta-data": {"k": "v".repeat(70_000)}}).to_string(),
        413,
    )
    .await;
    refused(&h, Method::POST, groups, r#"{"name": "compute"}"#, 409).await;
    refused(
        &h,
        Method::PUT,
        "/cloud-init/admin/groups/compute",
        r#"{"name": "gpu"}"#,
        400,
    )
    .await;
    refused(
        &h,
        Method::DELETE,
        "/cloud-init/admin/groups/unknown",
        "",
        404,
    )
    .await;
    refused(
        &h,
        Method::PUT,
        "/cloud-init/admin/instance-info/x9c0s0b0n0",
        "{}",
        404,
    )
    .await;
    refused(
        &h,
        Method::PUT,
        &format!("/cloud-init/admin/instance-info/{N0}"),
        r#"{"hostname": "no spaces allowed"}"#,
        400,
    )
    .await;
    refused(
        &h,
        Method::PUT,
        &format!("/cloud-init/admin/instance-info/{N0}"),
        r#"{"instance-id": "not-an-id"}"#,
        400,
    )
    .await;
    h.api
        .get("/cloud-init/admin/groups/unknown")
        .await
        .problem(404);

    // The CLI refuses what it cannot read before sending anything.
    let cli = Cli::new(&h);
    let before = h.generation();
    let dir = h.state_dir();
    let bad_yaml = dir.join("bad.yaml");
    std::fs::write(&bad_yaml, "cluster-name: [demo\n").unwrap();
    let bad_json = dir.join("bad.json");
    std::fs::write(&bad_json, "{\"description\": \"x\",}").unwrap();
    let e = cli
        .fails(&[
            "metadata",
            "defaults",
            "set",
            "-f",
            bad_yaml.to_str().unwrap(),
        ])
        .await;
    assert!(e.contains("not valid YAML or JSON"), "{e}");
    let e = cli
        .fails(&[
            "metadata",
            "group",
            "add",
            "new",
            "-f",
            bad_json.to_str().unwrap(),
        ])
        .await;
    assert!(e.contains("not valid JSON"), "{e}");
    let e = cli
        .fails_with_stdin(&["metadata", "defaults", "set", "-f", "-"], "- a list\n")
        .await;
    assert!(e.contains("mapping"), "{e}");
    let e = cli
        .fails(&["metadata", "group", "set", "unknown", "--description", "x"])
        .await;
    assert!(e.contains("no cloud-init group unknown"), "{e}");
    let e = cli
        .fails(&["metadata", "group", "render", "unknown", N0])
        .await;
    assert!(e.contains("404"), "{e}");
    let e = cli.fails(&["metadata", "group", "delete", "unknown"]).await;
    assert!(e.contains("404"), "{e}");
    assert_eq!(h.generation(), before, "the CLI changed the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_home_is_recorded() {
    let h = start(false).await;
    inventory(&h, "127.0.0.1").await;
    let form = form(
        &h.node,
        "/cloud-init/phone-home/i-0000abcd",
        &[
            ("instance_id", "i-0000abcd"),
            ("hostname", "de01"),
            ("fqdn", "de01.demo.cluster"),
            ("pub_key_rsa", "ssh-rsa AAAArsa root@de01"),
            ("pub_key_ecdsa", "ecdsa-sha2-nistp256 AAAAec root@de01"),
            ("pub_key_ed25519", "ssh-ed25519 AAAAed root@de01"),
        ],
    );
    let r = h.node.send(form).await.ok();
    assert!(r.body.is_empty());
    let all = h.api.get_json("/cloud-init/admin/phone-home").await;
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    let p = &all[0];
    assert_eq!(p["node"], N0);
    assert_eq!(p["id"], "i-0000abcd");
    assert_eq!(p["address"], "127.0.0.1");
    assert_eq!(p["fqdn"], "de01.demo.cluster");
    assert_eq!(p["pub_key_ed25519"], "ssh-ed25519 AAAAed root@de01");
    assert!(p["received"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        h.api
            .get_json(&format!("/cloud-init/admin/phone-home/{N0}"))
            .await,
        *p
    );
    h.api
        .get(&format!("/cloud-init/admin/phone-home/{N1}"))
        .await
        .problem(404);
    h.anon
        .get("/cloud-init/admin/phone-home")
        .await
        .problem(401);

    let cli = Cli::new(&h);
    let out = cli.ok(&["metadata", "phone-home"]).await;
    assert!(
        out.contains(N0) && out.contains("de01.demo.cluster"),
        "{out}"
    );
    let out = cli.ok(&["metadata", "phone-home", N0, "-o", "json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, *p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_defaults_and_groups() {
    let h = start(false).await;
    inventory(&h, "127.0.0.1").await;
    let cli = Cli::new(&h);
    let dir = h.state_dir();

    let out = cli
        .ok_with_stdin(
            &["metadata", "defaults", "set", "-f", "-"],
            "cluster-name: demo\nshort-name: de\nnid-length: 2\nregion: r1\npublic-keys:\n  - ssh-ed25519 AAAAC3NzaC1 admin@head\n",
        )
        .await;
    assert_eq!(out, "cluster defaults updated\n");
    let d: Value = serde_json::from_str(
        &cli.ok(&["metadata", "defaults", "show", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(d["short-name"], "de");
    assert_eq!(d["nid-length"], 2);
    let table = cli.ok(&["metadata", "defaults", "show"]).await;
    assert!(
        table.contains("cluster-name") && table.contains("demo"),
        "{table}"
    );

    // A group from a JSON document plus a cloud-config file.
    let doc = dir.join("compute.json");
    std::fs::write(
        &doc,
        r#"{"name": "compute", "meta-data": {"syslog_server": "172.16.0.254"}}"#,
    )
    .unwrap();
    let file = dir.join("compute.yaml");
    std::fs::write(&file, COMPUTE_FILE).unwrap();
    let out = cli
        .ok(&[
            "metadata",
            "group",
            "add",
            "compute",
            "-f",
            doc.to_str().unwrap(),
            "--description",
            "compute nodes",
            "--file-content",
            file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out, "created cloud-init group compute\n");
    let g = h.api.get_json("/cloud-init/admin/groups/compute").await;
    assert_eq!(g["description"], "compute nodes");
    assert_eq!(g["file"]["content"], COMPUTE_FILE);
    assert_eq!(g["file"]["filename"], "compute.yaml");
    assert_eq!(g["meta-data"]["syslog_server"], "172.16.0.254");

    // A Jinja template from standard input, sent base64; then a change of description only.
    let tmpl_file = dir.join("gpu.j2");
    std::fs::write(&tmpl_file, GPU_TEMPLATE).unwrap();
    cli.ok_with_stdin(
        &[
            "metadata",
            "group",
            "add",
            "gpu",
            "-f",
            "-",
            "--file-content",
            tmpl_file.to_str().unwrap(),
            "--encoding",
            "base64",
        ],
        "meta-data:\n  driver: \"550.54\"\n",
    )
    .await;
    let out = cli
        .ok(&[
            "metadata",
            "group",
            "set",
            "gpu",
            "--description",
            "GPU nodes",
        ])
        .await;
    assert_eq!(out, "updated cloud-init group gpu\n");
    let g = h.api.get_json("/cloud-init/admin/groups/gpu").await;
    assert_eq!(g["description"], "GPU nodes");
    assert_eq!(g["file"]["encoding"], "base64", "kept as it was");
    assert_eq!(g["meta-data"]["driver"], "550.54", "kept as it was");
    let shown = cli.ok(&["metadata", "group", "show", "gpu"]).await;
    assert!(shown.contains("## template: jinja"), "decoded: {shown}");
    let list = cli.ok(&["metadata", "group", "list"]).await;
    assert!(list.contains("gpu.j2 (jinja"), "{list}");
    assert!(list.contains("compute.yaml (static"), "{list}");

    // What the node gets, the template rendered as cloud-init will.
    let out = cli.ok(&["metadata", "group", "render", "gpu", N0]).await;
    let iid = instance_id_of(
        &h.api
            .get(&format!("/cloud-init/admin/impersonation/{N0}/meta-data"))
            .await
            .ok()
            .text(),
    );
    golden("render-gpu.txt", &mask(&out, &iid));
    let out = cli
        .ok(&["metadata", "group", "render", "compute", N0, "-o", "json"])
        .await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["file"]["template"], false);
    assert_eq!(v["file"]["served"], COMPUTE_FILE);
    assert_eq!(v["meta-data"]["local-hostname"], "de01");

    // A template mistake shows up before a boot.
    let broken = dir.join("broken.j2");
    std::fs::write(
        &broken,
        "## template: jinja\n#cloud-config\nhostname: {{ ds.meta_data.local_hostnam }}\n",
    )
    .unwrap();
    cli.ok(&[
        "metadata",
        "group",
        "set",
        "gpu",
        "--file-content",
        broken.to_str().unwrap(),
    ])
    .await;
    let e = cli.fails(&["metadata", "group", "render", "gpu", N0]).await;
    assert!(
        e.contains("gpu.yaml does not render") && e.contains("line 3"),
        "{e}"
    );

    let instance = dir.join("instance.yaml");
    std::fs::write(&instance, "local-hostname: gpu01\ninstance-type: big\n").unwrap();
    cli.ok(&[
        "metadata",
        "instance",
        "set",
        N0,
        "-f",
        instance.to_str().unwrap(),
    ])
    .await;
    let shown: Value = serde_json::from_str(
        &cli.ok(&["metadata", "instance", "show", N0, "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(shown["local-hostname"], "gpu01");
    assert_eq!(shown["instance-id"], iid.as_str());

    assert_eq!(
        cli.ok(&["metadata", "group", "delete", "gpu"]).await,
        "deleted cloud-init group gpu\n"
    );
    h.api.get("/cloud-init/admin/groups/gpu").await.status(404);
}

/// cloud-init's own tools on what is served: `cloud-init schema` on the group
/// files (a Jinja template once rendered), and `cloud-init devel render` on
/// the template giving what `openchami metadata group render` gives. The
/// tool must be installed (`.ci/run` installs the Debian package).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_init_accepts_the_served_files() {
    let tool = std::process::Command::new("cloud-init")
        .arg("--version")
        .output();
    assert!(
        tool.is_ok_and(|o| o.status.success()),
        "cloud-init is not installed; install it (Debian: apt-get install cloud-init) or run .ci/run"
    );
    let h = start(false).await;
    inventory(&h, "127.0.0.1").await;
    cloud_init(&h).await;
    let dir = h.state_dir();
    let schema = |path: &Path| {
        let out = std::process::Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(path)
            .output()
            .expect("cloud-init schema");
        assert!(
            out.status.success(),
            "cloud-init schema refused {}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };

    let compute = dir.join("compute.yaml");
    std::fs::write(
        &compute,
        h.node.get("/cloud-init/compute.yaml").await.ok().body,
    )
    .unwrap();
    schema(&compute);

    // The empty documents (user-data, a group without a file) are an empty
    // mapping: `#cloud-config` alone is what upstream serves, but cloud-init
    // warns about it on every boot and its schema checker refuses it.
    let user = dir.join("user-data.yaml");
    std::fs::write(&user, h.node.get("/cloud-init/user-data").await.ok().body).unwrap();
    schema(&user);
    h.api
        .post("/hsm/v2/groups/rack2/members", &json!({"id": N0}))
        .await
        .status(201);
    let bare = dir.join("rack2.yaml");
    std::fs::write(&bare, h.node.get("/cloud-init/rack2.yaml").await.ok().body).unwrap();
    schema(&bare);

    // PyYAML (cloud-init's YAML 1.1 reader) reads the meta-data as meant:
    // "0755", "yes" and "12:30" stay strings.
    let meta_text = h.node.get("/cloud-init/meta-data").await.ok().text();
    let meta: Value = serde_yaml_ng::from_str(&meta_text).unwrap();
    let mut py = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (a dependency of cloud-init)");
    {
        use std::io::Write as _;
        py.stdin
            .take()
            .unwrap()
            .write_all(meta_text.as_bytes())
            .unwrap();
    }
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success());
    let py_meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(py_meta, meta, "PyYAML reads:\n{meta_text}");
    let compute = &meta["instance_data"]["v1"]["vendor_data"]["groups"]["compute"];
    assert_eq!(compute["mode"], "0755");
    assert_eq!(compute["on"], "yes");
    assert_eq!(compute["window"], "12:30");
    let template = h.node.get("/cloud-init/gpu.yaml").await.ok().text();
    let ours = openchami::metadata::template::render(&template, &meta).expect("renders");
    let rendered = dir.join("gpu.rendered.yaml");
    std::fs::write(&rendered, &ours).unwrap();
    schema(&rendered);

    let tmpl = dir.join("gpu.yaml");
    std::fs::write(&tmpl, &template).unwrap();
    let data = dir.join("instance-data.json");
    std::fs::write(
        &data,
        openchami::metadata::template::instance_data(&meta).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new("cloud-init")
        .args(["devel", "render"])
        .arg(&tmpl)
        .arg("-i")
        .arg(&data)
        .output()
        .expect("cloud-init devel render");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("WARNING"),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        ours.trim_end(),
        "cloud-init renders the template as openchami does"
    );
}

/// Runs the CLI binary as a client of `h`.
struct Cli<'a> {
    h: &'a Harness,
    config: PathBuf,
}

impl<'a> Cli<'a> {
    fn new(h: &'a Harness) -> Cli<'a> {
        let config = h.state_dir().join("client.toml");
        std::fs::write(&config, "").expect("write client config");
        Cli { h, config }
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = tokio::process::Command::new(BIN);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("OPENCHAMI_") || k.ends_with("_ACCESS_TOKEN") {
                c.env_remove(&k);
            }
        }
        c.current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("--url")
            .arg(self.h.api_base())
            .arg("--cacert")
            .arg(self.h.state_dir().join("ca/root.crt"))
            .arg("--token")
            .arg(&self.h.token)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = c.spawn().expect("spawn openchami");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).await.expect("write stdin");
            drop(pipe);
        }
        tokio::time::timeout(common::TIMEOUT * 2, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("openchami {args:?} timed out"))
            .unwrap_or_else(|e| panic!("openchami {args:?}: {e}"))
    }

    fn success(args: &[&str], out: Output) -> String {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "openchami {args:?}: {:?}\n{stderr}",
            out.status
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    fn failure(args: &[&str], out: Output) -> String {
        let stderr = String::from_utf8(out.stderr).expect("UTF-8 output");
        assert!(
            !out.status.success(),
            "openchami {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
        assert!(stderr.starts_with("openchami: "), "{stderr}");
        stderr
    }

    async fn ok(&self, args: &[&str]) -> String {
        Self::success(args, self.run(args, None).await)
    }

    async fn ok_with_stdin(&self, args: &[&str], input: &str) -> String {
        Self::success(args, self.run(args, Some(input)).await)
    }

    async fn fails(&self, args: &[&str]) -> String {
        Self::failure(args, self.run(args, None).await)
    }

    async fn fails_with_stdin(&self, args: &[&str], input: &str) -> String {
        Self::failure(args, self.run(args, Some(input)).await)
    }
}

// ---- metadata-service (OpenCHAMI v0.2) ----

/// Go's zero `time.Time`, as ochami's requests carry it in `metadata`.
const GO_ZERO: &str = "0001-01-01T00:00:00Z";

/// A request as `ochami` v0.10 sends it through metadata-service's
/// generated client: `path.Join(base, …)`, `Accept`/`Content-Type:
/// application/json`, the bearer token, and the body bytes Go's
/// `json.Marshal` makes of the request struct.
fn ochami(h: &Harness, method: Method, path: &str, body: Option<&str>) -> reqwest::RequestBuilder {
    ochami_typed(h, method, path, body, "application/json")
}

/// As [`ochami`], with the `Content-Type` its patch commands send.
fn ochami_typed(
    h: &Harness,
    method: Method,
    path: &str,
    body: Option<&str>,
    content_type: &str,
) -> reqwest::RequestBuilder {
    let mut r = h
        .api
        .raw
        .request(method, h.api.url(&format!("/metadata-service{path}")))
        .header("accept", "application/json")
        .header("authorization", format!("Bearer {}", h.token));
    if let Some(b) = body {
        r = r.header("content-type", content_type).body(b.to_string());
    }
    r
}

/// The keys fabrica's resource types decode, checked as ochami's client
/// would find them.
#[track_caller]
fn assert_resource(v: &Value, kind: &str, name: &str) -> String {
    assert_eq!(v["apiVersion"], "cloud-init.openchami.io/v1", "{v}");
    assert_eq!(v["kind"], kind, "{v}");
    let m = &v["metadata"];
    assert_eq!(m["name"], name, "{v}");
    let uid = m["uid"].as_str().expect("uid").to_string();
    assert!(
        uid.starts_with(&format!("{}-", kind.to_lowercase())),
        "{uid}"
    );
    for ts in ["createdAt", "updatedAt"] {
        let t = m[ts].as_str().expect(ts);
        chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{ts} {t}: {e}"));
    }
    assert!(v["spec"].is_object() && v["status"].is_object(), "{v}");
    uid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_records_read_through_metadata_service() {
    let h = start(false).await;
    inventory(&h, "127.0.0.1").await;
    cloud_init(&h).await;

    // Node documents: the caller by address, as the legacy routes.
    let meta = h.node.get("/cloud-init/meta-data").await.ok().text();
    let r = h.node.get("/metadata-service/meta-data").await.ok();
    assert_eq!(r.content_type(), "application/x-yaml");
    assert_eq!(r.text(), meta);
    assert_eq!(
        h.node.get("/metadata-service/user-data").await.ok().text(),
        h.node.get("/cloud-init/user-data").await.ok().text()
    );
    assert_eq!(
        h.node
            .get("/metadata-service/vendor-data")
            .await
            .ok()
            .text(),
        "#include\nhttp://172.16.0.254:27778/metadata-service/compute.yaml\n\
         http://172.16.0.254:27778/metadata-service/gpu.yaml\n"
    );
    assert_eq!(
        h.node
            .get("/metadata-service/compute.yaml")
            .await
            .ok()
            .text(),
        COMPUTE_FILE
    );
    assert_eq!(
        h.node.get("/metadata-service/gpu.yaml").await.ok().text(),
        GPU_TEMPLATE,
        "a cloud-init Jinja file is cloud-init's to render"
    );
    let r = h.node.get("/metadata-service/rack2.yaml").await.status(404);
    assert!(r.text().contains("not a member"), "{}", r.text());

    // Admin resources: the same records in upstream's envelopes.
    let groups = h.api.get_json("/metadata-service/groups").await;
    let groups = groups.as_array().expect("a bare array");
    assert_eq!(groups.len(), 2);
    assert_resource(&groups[0], "Group", "compute");
    assert_eq!(groups[0]["spec"]["template"], COMPUTE_FILE);
    assert_eq!(
        groups[0]["spec"]["metaData"]["syslog_server"],
        "172.16.0.254"
    );
    assert_eq!(groups[0]["spec"]["description"], "compute nodes");
    assert_eq!(groups[1]["spec"]["template"], GPU_TEMPLATE, "decoded");
    let d = h.api.get_json("/metadata-service/clusterdefaultss").await;
    assert_eq!(d.as_array().map(Vec::len), Some(1), "{d}");
    assert_resource(&d[0], "ClusterDefaults", "default");
    assert_eq!(d[0]["spec"]["cluster_name"], "demo");
    assert_eq!(d[0]["spec"]["short_name"], "de");
    assert_eq!(d[0]["spec"]["nid_length"], 2);
    assert_eq!(d[0]["status"], json!({"ready": false}));
    // Legacy GETs never show the envelope.
    let legacy = h.api.get_json("/cloud-init/admin/groups/compute").await;
    assert!(legacy.get("resource").is_none(), "{legacy}");

    // network-config from the inventory interface; cloud-init converts it.
    let r = h.node.get("/metadata-service/network-config").await.ok();
    assert_eq!(r.content_type(), "text/cloud-config");
    let nc = r.text();
    assert!(nc.contains("\"02:00:00:00:00:01\""), "{nc}");
    let out = net_convert(&nc);
    assert!(out.contains("MACAddress=02:00:00:00:00:01"), "{out}");
    assert!(
        out.contains("DHCP=ipv4"),
        "no configured subnet: DHCP\n{out}"
    );
}

/// Runs cloud-init's own network-config reader and networkd renderer over
/// `config`; returns the rendered `.network` files.
fn net_convert(config: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("network-config");
    std::fs::write(&input, config).expect("write network-config");
    let out_dir = dir.path().join("out");
    let out = std::process::Command::new("cloud-init")
        .args([
            "devel",
            "net-convert",
            "-k",
            "yaml",
            "-D",
            "debian",
            "-O",
            "networkd",
            "-p",
        ])
        .arg(&input)
        .arg("-d")
        .arg(&out_dir)
        .output()
        .expect("cloud-init devel net-convert");
    assert!(
        out.status.success(),
        "cloud-init refused the network-config:\n{config}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut text = String::new();
    let net = out_dir.join("etc/systemd/network");
    let mut files: Vec<_> = std::fs::read_dir(&net)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        text.push_str(&std::fs::read_to_string(f).expect("read rendered file"));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ochami_requests_replayed() {
    let h = Harness::start_with(|c| {
        c.cluster_name = "demo".into();
        c.node.advertise = "http://172.16.0.254:27778".into();
        c.http.trusted_proxies = vec![std::net::IpAddr::from([127, 0, 0, 1])];
        c.dhcp.subnets = vec![openchami::config::DhcpSubnet {
            cidr: "172.16.0.0/24".into(),
            routers: vec!["172.16.0.254".parse().unwrap()],
            dns: vec!["172.16.0.253".parse().unwrap()],
            domain: "demo.cluster".into(),
            ..Default::default()
        }];
    })
    .await;
    inventory(&h, "172.16.0.1").await;
    let send = |m: Method, p: &str, b: Option<&str>| h.api.send(ochami(&h, m, p, b));

    // `metadata defaults list` on an empty service, then `defaults add`.
    assert_eq!(
        send(Method::GET, "/clusterdefaultss", None)
            .await
            .ok()
            .json(),
        json!([])
    );
    let body = format!(
        r#"{{"metadata":{{"name":"demo","uid":"","createdAt":"{GO_ZERO}","updatedAt":"{GO_ZERO}"}},"spec":{{"base_url":"http://172.16.0.254:27778/metadata-service","cluster_name":"demo","short_name":"de","nid_length":2,"public_keys":["ssh-ed25519 AAAAC3NzaC1 admin@head"]}}}}"#
    );
    let created = send(Method::POST, "/clusterdefaultss", Some(&body))
        .await
        .status(201)
        .json();
    let duid = assert_resource(&created, "ClusterDefaults", "demo");
    send(Method::POST, "/clusterdefaultss", Some(&body))
        .await
        .status(409);
    // Read back through the legacy API.
    let legacy = h.api.get_json("/cloud-init/admin/cluster-defaults").await;
    assert_eq!(legacy["cluster-name"], "demo", "{legacy}");
    assert_eq!(legacy["short-name"], "de");
    assert_eq!(
        legacy["base-url"],
        "http://172.16.0.254:27778/metadata-service"
    );
    // `defaults set <uid>` (simple API: the name is empty).
    let body = format!(
        r#"{{"metadata":{{"name":"","uid":"","createdAt":"{GO_ZERO}","updatedAt":"{GO_ZERO}"}},"spec":{{"base_url":"http://172.16.0.254:27778/metadata-service","region":"r2","cluster_name":"demo","short_name":"nid","nid_length":3}}}}"#
    );
    let set = send(
        Method::PUT,
        &format!("/clusterdefaultss/{duid}"),
        Some(&body),
    )
    .await
    .ok()
    .json();
    assert_eq!(set["spec"]["region"], "r2");
    assert_eq!(
        set["spec"].get("public_keys"),
        None,
        "PUT replaces the spec"
    );
    assert_eq!(set["metadata"]["name"], "demo");
    assert_eq!(
        set["metadata"]["createdAt"],
        created["metadata"]["createdAt"]
    );

    // `metadata group add` (simple API) and the envelope form with labels.
    let compute_tmpl = "#cloud-config\nhostname: {{ hostname }}\nntp: {{ ntp_server }}\nrole: {{ role }}\nmissing: \"{{ no_such_var }}\"\n";
    let body = format!(
        r#"{{"metadata":{{"name":"compute","uid":"","createdAt":"{GO_ZERO}","updatedAt":"{GO_ZERO}"}},"spec":{{"description":"compute nodes","template":{},"metaData":{{"ntp_server":"172.16.0.254"}}}}}}"#,
        serde_json::to_string(compute_tmpl).unwrap()
    );
    let g = send(Method::POST, "/groups", Some(&body))
        .await
        .status(201)
        .json();
    let guid = assert_resource(&g, "Group", "compute");
    assert_eq!(g["spec"]["template"], compute_tmpl);
    let body = format!(
        r#"{{"metadata":{{"name":"gpu","uid":"","labels":{{"role":"gpu"}},"createdAt":"{GO_ZERO}","updatedAt":"{GO_ZERO}"}},"spec":{{"template":"I2Nsb3VkLWNvbmZpZwpkcml2ZXI6IHt7IGRyaXZlciB9fQo=","templateEncoding":"base64","metaData":{{"driver":"550"}},"osVersion":"rocky9"}},"labels":{{"tier":"a"}}}}"#
    );
    let gpu = send(Method::POST, "/groups", Some(&body))
        .await
        .status(201)
        .json();
    let gpu_uid = assert_resource(&gpu, "Group", "gpu");
    assert_eq!(
        gpu["metadata"]["labels"],
        json!({"role": "gpu", "tier": "a"})
    );
    assert_eq!(
        gpu["spec"]["template"],
        "#cloud-config\ndriver: {{ driver }}\n"
    );
    assert_eq!(gpu["spec"]["osVersion"], "rocky9");
    // Templates that do not render, or render to something not YAML.
    for (tmpl, says) in [
        ("#cloud-config\n{% if %}\n", "template render error"),
        ("#cloud-config\na: [{{ hostname }}\n", "YAML invalid"),
    ] {
        let body = format!(
            r#"{{"metadata":{{"name":"bad","uid":"","createdAt":"{GO_ZERO}","updatedAt":"{GO_ZERO}"}},"spec":{{"template":{}}}}}"#,
            serde_json::to_string(tmpl).unwrap()
        );
        let r = send(Method::POST, "/groups", Some(&body))
            .await
            .status(400)
            .json();
        assert!(r["error"].as_str().unwrap().contains(says), "{r}");
    }
    send(
        Method::POST,
        "/groups",
        Some(r#"{"metadata":{"name":"compute"},"spec":{"template":"x: 1"}}"#),
    )
    .await
    .status(409);
    // `group list`, `group get <uid>`; the legacy view of the same group.
    let list = send(Method::GET, "/groups", None).await.ok().json();
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    assert_eq!(
        send(Method::GET, &format!("/groups/{guid}"), None)
            .await
            .ok()
            .json(),
        g
    );
    let legacy = h.api.get_json("/cloud-init/admin/groups/compute").await;
    assert_eq!(legacy["file"]["content"], compute_tmpl, "{legacy}");
    assert_eq!(legacy["meta-data"]["ntp_server"], "172.16.0.254");

    // `group patch` with each patch method.
    let merge = h
        .api
        .send(ochami_typed(
            &h,
            Method::PATCH,
            &format!("/groups/{guid}"),
            Some(r#"{"description":"cpu nodes"}"#),
            "application/merge-patch+json",
        ))
        .await
        .ok()
        .json();
    assert_eq!(merge["spec"]["description"], "cpu nodes");
    assert_eq!(merge["spec"]["template"], compute_tmpl);
    let jp = h
        .api
        .send(ochami_typed(
            &h,
            Method::PATCH,
            &format!("/groups/{guid}"),
            Some(r#"[{"op":"replace","path":"/metaData/ntp_server","value":"172.16.0.250"}]"#),
            "application/json-patch+json",
        ))
        .await
        .ok()
        .json();
    assert_eq!(jp["spec"]["metaData"]["ntp_server"], "172.16.0.250");
    let r = h
        .api
        .send(ochami_typed(
            &h,
            Method::PATCH,
            &format!("/groups/{guid}"),
            Some(r#"[{"op":"remove","path":"/nothing"}]"#),
            "application/json-patch+json",
        ))
        .await
        .status(422)
        .json();
    assert!(r["error"].is_string(), "{r}");

    // `metadata instance add` for a node; meta-data follows.
    let body = format!(
        r#"{{"metadata":{{"name":"{N0}","uid":"","createdAt":"{GO_ZERO}","updatedAt":"{GO_ZERO}"}},"spec":{{"instance_id":"{N0}","local_hostname":"login01","hostname":"login01"}}}}"#
    );
    let i = send(Method::POST, "/instanceinfos", Some(&body))
        .await
        .status(201)
        .json();
    let iuid = assert_resource(&i, "InstanceInfo", N0);
    let iid = i["spec"]["instance_id"].as_str().unwrap().to_string();
    assert!(
        iid.starts_with("i-"),
        "the node keeps the appliance's instance ID: {i}"
    );
    let legacy = h
        .api
        .get_json(&format!("/cloud-init/admin/instance-info/{N0}"))
        .await;
    assert_eq!(legacy["local-hostname"], "login01", "{legacy}");
    let body = format!(
        r#"{{"metadata":{{"name":"x9c0s0b0n0","uid":"","createdAt":"{GO_ZERO}","updatedAt":"{GO_ZERO}"}},"spec":{{"instance_id":"a"}}}}"#
    );
    send(Method::POST, "/instanceinfos", Some(&body))
        .await
        .status(400);
    let list = send(Method::GET, "/instanceinfos", None).await.ok().json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // The node's view (its address via a trusted proxy).
    let node = |p: &'static str| get_with_xff(&h.anon, p, "172.16.0.1");
    let meta = node("/metadata-service/meta-data").await.ok().text();
    let md: Value = serde_yaml_ng::from_str(&meta).unwrap();
    assert_eq!(md["local-hostname"], "login01");
    assert_eq!(md["instance-id"], iid.as_str());
    assert_eq!(
        node("/metadata-service/vendor-data").await.ok().text(),
        "#include\nhttp://172.16.0.254:27778/metadata-service/compute.yaml\n\
         http://172.16.0.254:27778/metadata-service/gpu.yaml\n"
    );
    assert_eq!(
        node("/metadata-service/compute.yaml").await.ok().text(),
        "#cloud-config\nhostname: login01\nntp: 172.16.0.250\nrole: Compute\nmissing: \"\"\n"
    );
    assert_eq!(
        node("/metadata-service/gpu.yaml").await.ok().text(),
        "#cloud-config\ndriver: 550\n"
    );
    let nc = node("/metadata-service/network-config").await.ok().text();
    let out = net_convert(&nc);
    for want in [
        "MACAddress=02:00:00:00:00:01",
        "Address=172.16.0.1/24",
        "Gateway=172.16.0.254",
        "DNS=172.16.0.253",
        "Domains=demo.cluster",
    ] {
        assert!(out.contains(want), "{want} in\n{nc}\n{out}");
    }
    let r = node("/metadata-service/phone-home/x").await; // GET is not a route
    assert_eq!(r.status, 405);
    h.anon
        .send(
            form(
                &h.anon,
                "/metadata-service/phone-home/i-1",
                &[("hostname", "login01")],
            )
            .header("x-forwarded-for", "172.16.0.1"),
        )
        .await
        .ok();
    let ph = h
        .api
        .get_json(&format!("/cloud-init/admin/phone-home/{N0}"))
        .await;
    assert_eq!(ph["hostname"], "login01", "{ph}");
    // An unknown caller: 404, as upstream.
    let r = get_with_xff(&h.anon, "/metadata-service/meta-data", "10.9.9.9")
        .await
        .status(404)
        .json();
    assert_eq!(r["error"], "node not found");

    // Versions, tokens, unknown uids.
    let r = h
        .api
        .send(
            ochami(&h, Method::GET, "/groups", None)
                .header("accept", "application/json;version=v1"),
        )
        .await
        .ok();
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));
    let r = h
        .api
        .send(
            ochami(&h, Method::GET, "/groups", None)
                .header("accept", "application/json;version=v2"),
        )
        .await
        .status(406)
        .json();
    assert_eq!(r["error"], "Unsupported version", "{r}");
    assert_eq!(r["requested"], "v2");
    assert_eq!(r["supported"], json!(["v1"]));
    h.anon.get("/metadata-service/groups").await.problem(401);
    assert_eq!(
        h.anon.get("/metadata-service/health").await.ok().json()["status"],
        "healthy"
    );
    let r = send(Method::GET, "/groups/group-00000000", None)
        .await
        .status(404)
        .json();
    assert!(
        r["error"].as_str().unwrap().contains("Group not found"),
        "{r}"
    );

    // `… delete <uid>`.
    for (path, uid, kind) in [
        ("/groups", &gpu_uid, "Group"),
        ("/instanceinfos", &iuid, "InstanceInfo"),
        ("/clusterdefaultss", &duid, "ClusterDefaults"),
    ] {
        let r = send(Method::DELETE, &format!("{path}/{uid}"), None)
            .await
            .ok()
            .json();
        assert_eq!(
            r,
            json!({"message": format!("{kind} deleted successfully"), "uid": uid})
        );
        send(Method::GET, &format!("{path}/{uid}"), None)
            .await
            .status(404);
    }
    h.api.get("/cloud-init/admin/groups/gpu").await.status(404);
    let legacy = h
        .api
        .get_json(&format!("/cloud-init/admin/instance-info/{N0}"))
        .await;
    assert_eq!(legacy["instance-id"], iid.as_str(), "the instance ID stays");
    assert_eq!(legacy.get("local-hostname"), None, "{legacy}");
    assert_eq!(
        send(Method::GET, "/clusterdefaultss", None)
            .await
            .ok()
            .json(),
        json!([])
    );
}

// ---- WireGuardPeer and Profile (metadata-service only) ----

const KEY1: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const KEY2: &str = "Z4bcfQ4n7oqj6jAQtcdx0wTzvY4oF48a0H93lkQ8l3M=";

/// A WireGuardPeer as ochami decodes it (`api.WireGuardPeer`): spec and
/// status members of the types its Go structs declare.
#[track_caller]
fn assert_peer(v: &Value, name: &str) -> String {
    let uid = assert_resource(v, "WireGuardPeer", name);
    let spec = v["spec"].as_object().expect("spec is an object");
    assert!(
        spec["public_key"].is_string() && spec["allowed_ip"].is_string(),
        "{v}"
    );
    for k in spec.keys() {
        assert!(
            ["description", "public_key", "allowed_ip"].contains(&k.as_str()),
            "{k}"
        );
    }
    let st = &v["status"];
    assert!(st["phase"].is_string() && st["message"].is_string(), "{v}");
    assert_eq!(st["ready"], false, "no WireGuard device applies it");
    assert!(st["version"].is_string(), "{v}");
    uid
}

/// A request as ochami sends it (see [`ochami`]).
async fn v2(h: &Harness, method: Method, path: &str, body: Option<&str>) -> Resp {
    h.api.send(ochami(h, method, path, body)).await
}

/// A write that must be refused with `status` and change nothing.
async fn refused_v2(
    h: &Harness,
    method: Method,
    path: &str,
    body: &str,
    ct: &str,
    status: u16,
) -> Value {
    let before = h.generation();
    let r = h
        .api
        .send(ochami_typed(h, method.clone(), path, Some(body), ct))
        .await
        .status(status)
        .json();
    assert!(r["error"].is_string(), "{method} {path} {body}: {r}");
    assert_eq!(
        h.generation(),
        before,
        "{method} {path} {body} changed the store"
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ochami_peer_requests_replayed() {
    let mut h = start(false).await;

    // `metadata peer list` on an empty service.
    assert_eq!(
        v2(&h, Method::GET, "/wireguardpeers", None)
            .await
            .ok()
            .json(),
        json!([])
    );
    // `metadata peer add -d '{"name":…,"public_key":…,"allowed_ip":…,"description":…}'`:
    // the simple API sends metadata.name and the spec.
    let body = format!(
        r#"{{"metadata":{{"name":"peer-nid001000","uid":"","createdAt":"{GO_ZERO}","updatedAt":"{GO_ZERO}"}},"spec":{{"description":"Peer for nid001000","public_key":"{KEY1}","allowed_ip":"10.42.1.1/32"}}}}"#
    );
    let created = v2(&h, Method::POST, "/wireguardpeers", Some(&body))
        .await
        .status(201)
        .json();
    let uid = assert_peer(&created, "peer-nid001000");
    assert!(uid.starts_with("wireguardpeer-"), "{uid}");
    assert_eq!(
        created["spec"],
        json!({"description": "Peer for nid001000", "public_key": KEY1, "allowed_ip": "10.42.1.1/32"})
    );
    assert_eq!(created["status"]["version"], "1");
    // `peer add -e` with labels in metadata and at the top.
    let body = format!(
        r#"{{"metadata":{{"name":"peer-nid001001","uid":"","labels":{{"env":"prod"}},"createdAt":"{GO_ZERO}","updatedAt":"{GO_ZERO}"}},"spec":{{"public_key":"{KEY2}","allowed_ip":"10.42.1.2/32"}},"labels":{{"tier":"a"}}}}"#
    );
    let second = v2(&h, Method::POST, "/wireguardpeers", Some(&body))
        .await
        .status(201)
        .json();
    let uid2 = assert_peer(&second, "peer-nid001001");
    assert_eq!(
        second["metadata"]["labels"],
        json!({"env": "prod", "tier": "a"})
    );
    assert!(
        second["spec"].get("description").is_none(),
        "empty description omitted"
    );

    // Refused: each a 400 (or 409) that changes nothing.
    let post =
        |name: &str, spec: Value| json!({"metadata": {"name": name}, "spec": spec}).to_string();
    for (body, status, says) in [
        ("{".to_string(), 400, "invalid JSON"),
        (
            post("p", json!({"allowed_ip": "10.42.1.3/32"})),
            400,
            "public_key is required",
        ),
        (
            post(
                "p",
                json!({"public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}),
            ),
            400,
            "allowed_ip is required",
        ),
        (
            post(
                "p",
                json!({"public_key": "c2hvcnQ=", "allowed_ip": "10.42.1.3/32"}),
            ),
            400,
            "base64 of 32 bytes",
        ),
        (
            post(
                "p",
                json!({"public_key": KEY1, "allowed_ip": "10.42.1.3/32"}),
            ),
            409,
            "public key",
        ),
        (
            post(
                "p",
                json!({"public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "allowed_ip": "10.42.1.3"}),
            ),
            400,
            "valid CIDR",
        ),
        (
            post(
                "p",
                json!({"public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "allowed_ip": "10.42.1.3/40"}),
            ),
            400,
            "valid CIDR",
        ),
        (
            post(
                "bad name",
                json!({"public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "allowed_ip": "10.42.1.3/32"}),
            ),
            400,
            "metadata.name",
        ),
        (
            post(
                "peer-nid001000",
                json!({"public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "allowed_ip": "10.42.1.3/32"}),
            ),
            409,
            "exists",
        ),
        (json!({"spec": {}}).to_string(), 400, "metadata and spec"),
    ] {
        let r = refused_v2(
            &h,
            Method::POST,
            "/wireguardpeers",
            &body,
            "application/json",
            status,
        )
        .await;
        assert!(r["error"].as_str().unwrap().contains(says), "{body}: {r}");
    }

    // `peer list`, `peer get <uid>`.
    let list = v2(&h, Method::GET, "/wireguardpeers", None)
        .await
        .ok()
        .json();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(
        v2(&h, Method::GET, &format!("/wireguardpeers/{uid}"), None)
            .await
            .ok()
            .json(),
        created
    );
    // `peer set <uid>` (simple API: an empty name) replaces the spec.
    let body = format!(
        r#"{{"metadata":{{"name":"","uid":"","createdAt":"{GO_ZERO}","updatedAt":"{GO_ZERO}"}},"spec":{{"public_key":"{KEY1}","allowed_ip":"10.42.1.9/32"}}}}"#
    );
    let set = v2(
        &h,
        Method::PUT,
        &format!("/wireguardpeers/{uid}"),
        Some(&body),
    )
    .await
    .ok()
    .json();
    assert_peer(&set, "peer-nid001000");
    assert_eq!(
        set["spec"],
        json!({"public_key": KEY1, "allowed_ip": "10.42.1.9/32"}),
        "PUT replaces the spec"
    );
    assert_eq!(
        set["metadata"]["createdAt"],
        created["metadata"]["createdAt"]
    );
    assert_eq!(set["status"]["version"], "2");
    // `peer set -e`: labels merged, the spec replaced.
    let body = format!(
        r#"{{"metadata":{{"name":"","uid":"","labels":{{"env":"prod"}},"createdAt":"{GO_ZERO}","updatedAt":"{GO_ZERO}"}},"spec":{{"public_key":"{KEY1}","allowed_ip":"10.42.1.9/32"}}}}"#
    );
    let set = v2(
        &h,
        Method::PUT,
        &format!("/wireguardpeers/{uid}"),
        Some(&body),
    )
    .await
    .ok()
    .json();
    assert_eq!(set["metadata"]["labels"], json!({"env": "prod"}));
    assert_eq!(set["status"]["version"], "3");
    // `peer patch` with each patch method; refused patches change nothing.
    let merge = h
        .api
        .send(ochami_typed(
            &h,
            Method::PATCH,
            &format!("/wireguardpeers/{uid}"),
            Some(r#"{"description":"login node"}"#),
            "application/merge-patch+json",
        ))
        .await
        .ok()
        .json();
    assert_eq!(merge["spec"]["description"], "login node");
    assert_eq!(merge["spec"]["allowed_ip"], "10.42.1.9/32");
    let jp = h
        .api
        .send(ochami_typed(
            &h,
            Method::PATCH,
            &format!("/wireguardpeers/{uid}"),
            Some(r#"[{"op":"replace","path":"/allowed_ip","value":"10.42.1.10/32"}]"#),
            "application/json-patch+json",
        ))
        .await
        .ok()
        .json();
    assert_eq!(jp["spec"]["allowed_ip"], "10.42.1.10/32");
    let path = format!("/wireguardpeers/{uid}");
    for (body, ct, status) in [
        (
            r#"{"allowed_ip":"10.42.1.10"}"#,
            "application/merge-patch+json",
            400,
        ),
        (
            r#"{"public_key":null}"#,
            "application/merge-patch+json",
            400,
        ),
        (
            &format!(r#"{{"public_key":"{KEY2}"}}"#) as &str,
            "application/merge-patch+json",
            409,
        ),
        (
            r#"[{"op":"remove","path":"/nothing"}]"#,
            "application/json-patch+json",
            422,
        ),
    ] {
        refused_v2(&h, Method::PATCH, &path, body, ct, status).await;
    }
    refused_v2(
        &h,
        Method::PUT,
        &path,
        r#"{"metadata":{"name":"other"},"spec":{}}"#,
        "application/json",
        400,
    )
    .await;
    v2(
        &h,
        Method::GET,
        "/wireguardpeers/wireguardpeer-00000000",
        None,
    )
    .await
    .status(404);

    // No WireGuard device: the node-side tunnel route is not served.
    let r = h
        .node
        .send(
            h.node
                .request(Method::POST, "/metadata-service/wg-init")
                .body(format!(r#"{{"public_key":"{KEY1}"}}"#)),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());

    // Survives a restart.
    let before = v2(&h, Method::GET, "/wireguardpeers", None)
        .await
        .ok()
        .json();
    h.restart().await;
    assert_eq!(
        v2(&h, Method::GET, "/wireguardpeers", None)
            .await
            .ok()
            .json(),
        before
    );

    // `peer delete <uid>…`.
    for u in [&uid, &uid2] {
        let r = v2(&h, Method::DELETE, &format!("/wireguardpeers/{u}"), None)
            .await
            .ok()
            .json();
        assert_eq!(
            r,
            json!({"message": "WireGuardPeer deleted successfully", "uid": u})
        );
        v2(&h, Method::GET, &format!("/wireguardpeers/{u}"), None)
            .await
            .status(404);
    }
    v2(&h, Method::DELETE, &format!("/wireguardpeers/{uid}"), None)
        .await
        .status(404);
    assert_eq!(
        v2(&h, Method::GET, "/wireguardpeers", None)
            .await
            .ok()
            .json(),
        json!([])
    );
}

const PROFILE_GROUP_TMPL: &str = "#cloud-config\nntp: {{ ntp }}\nlevel: {{ level }}\n";

/// A node route as the node at `ip` (through the trusted proxy).
async fn node(h: &Harness, path: &str, ip: &str) -> Resp {
    get_with_xff(&h.anon, path, ip).await
}

/// A v0.2 request body `{"metadata":{"name"},"spec"}`.
fn envelope(name: &str, spec: Value) -> String {
    json!({"metadata": {"name": name}, "spec": spec}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_change_a_nodes_group_until_they_expire() {
    let mut h = start(true).await;
    inventory(&h, "172.16.0.1").await;
    v2(&h, Method::POST, "/groups", Some(&envelope("compute", json!({"template": PROFILE_GROUP_TMPL, "metaData": {"ntp": "172.16.0.254", "level": "info"}}))))
        .await
        .status(201);
    let plain = "#cloud-config\nntp: 172.16.0.254\nlevel: info\n";
    assert_eq!(
        node(&h, "/metadata-service/compute.yaml", "172.16.0.1")
            .await
            .ok()
            .text(),
        plain
    );

    // A profile that never expires, a child of it that expires in 2999, and
    // one that expired in 2000 (written so: no sleeps).
    let base = v2(&h, Method::POST, "/profiles", Some(&envelope("verbose", json!({
        "groupRef": "compute",
        "template": b64("#cloud-config\nntp: {{ ntp }}\nlevel: {{ level }}\ndebug: {{ debug }}\n"),
        "templateEncoding": "base64",
        "metaData": {"level": "verbose", "debug": "yes"},
    })))).await.status(201).json();
    assert_resource(&base, "Profile", "verbose");
    assert_eq!(
        base["spec"]["template"],
        "#cloud-config\nntp: {{ ntp }}\nlevel: {{ level }}\ndebug: {{ debug }}\n",
        "stored decoded"
    );
    assert!(base["spec"].get("templateEncoding").is_none(), "{base}");
    assert_eq!(base["status"], json!({"expired": false}));
    let debug = v2(
        &h,
        Method::POST,
        "/profiles",
        Some(&envelope(
            "debug",
            json!({
                "groupRef": "compute", "parentProfile": "verbose", "metaData": {"level": "debug"},
                "expires_at": "2999-01-01T00:00:00Z",
            }),
        )),
    )
    .await
    .status(201)
    .json();
    assert_eq!(
        debug["status"],
        json!({"expired": false, "expires_at": "2999-01-01T00:00:00Z"})
    );
    let old = v2(&h, Method::POST, "/profiles", Some(&envelope("old", json!({
        "groupRef": "compute", "metaData": {"level": "old"}, "expires_at": "2000-01-01T01:00:00+01:00",
    })))).await.status(201).json();
    assert_eq!(
        old["status"],
        json!({"expired": true, "expired_at": "2000-01-01T00:00:00Z", "expires_at": "2000-01-01T00:00:00Z"})
    );
    let old_uid = old["metadata"]["uid"].as_str().unwrap().to_string();

    // A node follows its InstanceInfo's default_profile; another node does not.
    let body = format!(
        r#"{{"metadata":{{"name":"{N0}"}},"spec":{{"instance_id":"x","default_profile":"debug"}}}}"#
    );
    let info = v2(&h, Method::POST, "/instanceinfos", Some(&body))
        .await
        .status(201)
        .json();
    let info_uid = info["metadata"]["uid"].as_str().unwrap().to_string();
    let debugged = "#cloud-config\nntp: 172.16.0.254\nlevel: debug\ndebug: yes\n";
    assert_eq!(
        node(&h, "/metadata-service/compute.yaml", "172.16.0.1")
            .await
            .ok()
            .text(),
        debugged
    );
    assert_eq!(
        node(&h, "/metadata-service/compute.yaml", "172.16.0.2")
            .await
            .ok()
            .text(),
        plain
    );
    let md: Value = serde_yaml_ng::from_str(
        &node(&h, "/metadata-service/meta-data", "172.16.0.1")
            .await
            .ok()
            .text(),
    )
    .unwrap();
    let vd = &md["instance_data"]["v1"]["vendor_data"]["groups"]["compute"];
    assert_eq!(
        (&vd["level"], &vd["debug"]),
        (&json!("debug"), &json!("yes")),
        "{md:?}"
    );
    // The legacy view is the group's own file.
    assert_eq!(
        node(&h, "/cloud-init/compute.yaml", "172.16.0.1")
            .await
            .ok()
            .text(),
        PROFILE_GROUP_TMPL
    );

    // Pointed at the expired profile: the group's plain template again.
    let path = format!("/instanceinfos/{info_uid}");
    h.api
        .send(ochami_typed(
            &h,
            Method::PATCH,
            &path,
            Some(r#"{"default_profile":"old"}"#),
            "application/merge-patch+json",
        ))
        .await
        .ok();
    assert_eq!(
        node(&h, "/metadata-service/compute.yaml", "172.16.0.1")
            .await
            .ok()
            .text(),
        plain
    );
    // Moved into the future, it applies; a TTL counts from the write.
    let p = h
        .api
        .send(ochami_typed(
            &h,
            Method::PATCH,
            &format!("/profiles/{old_uid}"),
            Some(r#"{"expires_at":null,"ttl_seconds":3600}"#),
            "application/merge-patch+json",
        ))
        .await
        .ok()
        .json();
    assert_eq!(p["status"]["expired"], false, "{p}");
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(
        at(&p["status"]["expires_at"]) - at(&p["metadata"]["updatedAt"]),
        chrono::Duration::seconds(3600)
    );
    assert_eq!(
        node(&h, "/metadata-service/compute.yaml", "172.16.0.1")
            .await
            .ok()
            .text(),
        "#cloud-config\nntp: 172.16.0.254\nlevel: old\n"
    );
    // Expired again by a JSON Patch: back to plain without anything else.
    let jp = r#"[{"op":"remove","path":"/ttl_seconds"},{"op":"add","path":"/expires_at","value":"2001-01-01T00:00:00Z"}]"#;
    let p = h
        .api
        .send(ochami_typed(
            &h,
            Method::PATCH,
            &format!("/profiles/{old_uid}"),
            Some(jp),
            "application/json-patch+json",
        ))
        .await
        .ok()
        .json();
    assert_eq!(p["status"]["expired"], true);
    assert_eq!(
        node(&h, "/metadata-service/compute.yaml", "172.16.0.1")
            .await
            .ok()
            .text(),
        plain
    );

    // Refused: 400 (409 for names and references), nothing changed.
    for (body, status, says) in [
        (envelope("p", json!({})), 400, "groupRef is required"),
        (
            envelope("p", json!({"groupRef": "gpu"})),
            400,
            "names no Group",
        ),
        (
            envelope("p", json!({"groupRef": "compute", "parentProfile": "nope"})),
            400,
            "names no Profile",
        ),
        (
            envelope("p", json!({"groupRef": "compute", "expires_at": "soon"})),
            400,
            "invalid expires_at",
        ),
        (
            envelope("p", json!({"groupRef": "compute", "ttl_seconds": -5})),
            400,
            "ttl_seconds",
        ),
        (
            envelope("p", json!({"groupRef": "compute", "metaData": {"n": 1}})),
            400,
            "must be a string",
        ),
        (
            envelope(
                "p",
                json!({"groupRef": "compute", "template": "#cloud-config\n{% for %}\n"}),
            ),
            400,
            "template render error",
        ),
        (
            envelope(
                "p",
                json!({"groupRef": "compute", "template": "#cloud-config\na: [{{ ntp }}\n"}),
            ),
            400,
            "YAML invalid",
        ),
        (
            envelope(
                "p",
                json!({"groupRef": "compute", "template": "x", "templateEncoding": "gzip"}),
            ),
            400,
            "plain or base64",
        ),
        (
            envelope(
                "p",
                json!({"groupRef": "compute", "template": "%%%", "templateEncoding": "base64"}),
            ),
            400,
            "base64",
        ),
        (
            envelope("debug", json!({"groupRef": "compute"})),
            409,
            "exists",
        ),
    ] {
        let r = refused_v2(
            &h,
            Method::POST,
            "/profiles",
            &body,
            "application/json",
            status,
        )
        .await;
        assert!(r["error"].as_str().unwrap().contains(says), "{body}: {r}");
    }
    let verbose_uid = base["metadata"]["uid"].as_str().unwrap().to_string();
    refused_v2(
        &h,
        Method::PATCH,
        &format!("/profiles/{verbose_uid}"),
        r#"{"parentProfile":"debug"}"#,
        "application/merge-patch+json",
        400,
    )
    .await;
    refused_v2(
        &h,
        Method::DELETE,
        &format!("/profiles/{verbose_uid}"),
        "",
        "application/json",
        409,
    )
    .await;
    refused_v2(
        &h,
        Method::DELETE,
        &format!(
            "/groups/{}",
            openchami::metadata::v2::uid(openchami::metadata::v2::Kind::Group, "compute")
        ),
        "",
        "application/json",
        409,
    )
    .await;
    let before = h.generation();
    h.api
        .delete("/cloud-init/admin/groups/compute")
        .await
        .problem(409);
    assert_eq!(h.generation(), before);

    // Everything survives a restart; the node still gets its profile.
    h.api
        .send(ochami_typed(
            &h,
            Method::PATCH,
            &path,
            Some(r#"{"default_profile":"debug"}"#),
            "application/merge-patch+json",
        ))
        .await
        .ok();
    let before = v2(&h, Method::GET, "/profiles", None).await.ok().json();
    assert_eq!(before.as_array().map(Vec::len), Some(3));
    h.restart().await;
    assert_eq!(
        v2(&h, Method::GET, "/profiles", None).await.ok().json(),
        before
    );
    assert_eq!(
        node(&h, "/metadata-service/compute.yaml", "172.16.0.1")
            .await
            .ok()
            .text(),
        debugged
    );

    // Deleting the child, then the parent; the node is back on the group.
    for name in ["debug", "verbose", "old"] {
        let u = openchami::metadata::v2::uid(openchami::metadata::v2::Kind::Profile, name);
        let r = v2(&h, Method::DELETE, &format!("/profiles/{name}"), None)
            .await
            .ok()
            .json();
        assert_eq!(
            r,
            json!({"message": "Profile deleted successfully", "uid": u})
        );
    }
    assert_eq!(
        node(&h, "/metadata-service/compute.yaml", "172.16.0.1")
            .await
            .ok()
            .text(),
        plain
    );
    v2(&h, Method::DELETE, "/groups/compute", None).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_peers_and_profiles() {
    let h = start(false).await;
    inventory(&h, "127.0.0.1").await;
    let cli = Cli::new(&h);
    let dir = h.state_dir();
    let uid = |k, n| openchami::metadata::v2::uid(k, n);
    use openchami::metadata::v2::Kind;

    // Peers: flags, a document on standard input, a table, the resource.
    let out = cli
        .ok(&[
            "metadata",
            "peer",
            "add",
            "peer-nid001000",
            "--public-key",
            KEY1,
            "--allowed-ip",
            "10.42.1.1/32",
            "--description",
            "compute peer",
        ])
        .await;
    assert_eq!(
        out,
        format!(
            "created WireGuardPeer peer-nid001000 ({})\n",
            uid(Kind::WireGuardPeer, "peer-nid001000")
        )
    );
    cli.ok_with_stdin(
        &["metadata", "peer", "add", "peer-nid001001", "-f", "-"],
        &format!("name: peer-nid001001\npublic_key: {KEY2}\nallowed_ip: 10.42.1.2/32\n"),
    )
    .await;
    golden(
        "peer-list.txt",
        &cli.ok(&["metadata", "peer", "list"]).await,
    );
    let v: Value = serde_json::from_str(
        &cli.ok(&["metadata", "peer", "show", "peer-nid001000", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_peer(&v, "peer-nid001000");
    cli.ok(&[
        "metadata",
        "peer",
        "set",
        "peer-nid001000",
        "--allowed-ip",
        "10.42.1.9/32",
    ])
    .await;
    let v: Value = serde_yaml_ng::from_str(
        &cli.ok(&[
            "metadata",
            "peer",
            "show",
            &uid(Kind::WireGuardPeer, "peer-nid001000"),
            "-o",
            "yaml",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(v["spec"]["allowed_ip"], "10.42.1.9/32");
    assert_eq!(
        v["spec"]["description"], "compute peer",
        "set changes only what is given"
    );
    let list: Value =
        serde_json::from_str(&cli.ok(&["metadata", "peer", "list", "-o", "json"]).await).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    for (args, says) in [
        (
            vec![
                "metadata",
                "peer",
                "add",
                "p",
                "--public-key",
                "c2hvcnQ=",
                "--allowed-ip",
                "10.0.0.1/32",
            ],
            "base64 of 32 bytes",
        ),
        (
            vec![
                "metadata",
                "peer",
                "add",
                "p",
                "--public-key",
                KEY1,
                "--allowed-ip",
                "10.0.0.1",
            ],
            "valid CIDR",
        ),
        (
            vec!["metadata", "peer", "set", "peer-nid001000"],
            "nothing to change",
        ),
        (vec!["metadata", "peer", "show", "nope"], "404"),
    ] {
        let e = cli.fails(&args).await;
        assert!(e.contains(says), "{args:?}: {e}");
    }

    // Profiles of a group: a template sent base64, meta-data, expiries.
    h.api
        .post("/metadata-service/groups", &json!({"metadata": {"name": "compute"}, "spec": {"template": PROFILE_GROUP_TMPL, "metaData": {"ntp": "172.16.0.254", "level": "info"}}}))
        .await
        .status(201);
    let tmpl = dir.join("debug.yaml");
    std::fs::write(&tmpl, "#cloud-config\nlevel: {{ level }}\n").unwrap();
    cli.ok(&[
        "metadata",
        "profile",
        "add",
        "debug",
        "--group",
        "compute",
        "--template",
        tmpl.to_str().unwrap(),
        "--encoding",
        "base64",
        "--meta",
        "level=debug",
        "--expires-at",
        "2999-01-01T00:00:00Z",
    ])
    .await;
    cli.ok(&[
        "metadata",
        "profile",
        "add",
        "gone",
        "--group",
        "compute",
        "--parent",
        "debug",
        "--meta",
        "level=gone",
        "--expires-at",
        "2000-01-01T00:00:00Z",
    ])
    .await;
    golden(
        "profile-list.txt",
        &cli.ok(&["metadata", "profile", "list"]).await,
    );
    let v: Value = serde_yaml_ng::from_str(
        &cli.ok(&["metadata", "profile", "show", "debug", "-o", "yaml"])
            .await,
    )
    .unwrap();
    assert_resource(&v, "Profile", "debug");
    assert_eq!(v["spec"]["template"], "#cloud-config\nlevel: {{ level }}\n");
    assert_eq!(v["spec"]["metaData"], json!({"level": "debug"}));
    cli.ok(&[
        "metadata",
        "profile",
        "set",
        "gone",
        "--no-expiry",
        "--unset-meta",
        "level",
    ])
    .await;
    let v: Value = serde_json::from_str(
        &cli.ok(&["metadata", "profile", "show", "gone", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(v["status"], json!({"expired": false}), "{v}");
    assert!(v["spec"].get("metaData").is_none(), "{v}");
    cli.ok(&["metadata", "profile", "set", "gone", "--ttl", "1h"])
        .await;
    let v: Value = serde_json::from_str(
        &cli.ok(&["metadata", "profile", "show", "gone", "-o", "json"])
            .await,
    )
    .unwrap();
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(
        at(&v["status"]["expires_at"]) - at(&v["metadata"]["updatedAt"]),
        chrono::Duration::seconds(3600)
    );
    for (args, says) in [
        (
            vec!["metadata", "profile", "add", "x", "--group", "nope"],
            "names no Group",
        ),
        (
            vec![
                "metadata",
                "profile",
                "add",
                "x",
                "--group",
                "compute",
                "--expires-at",
                "tomorrow",
            ],
            "RFC 3339",
        ),
        (
            vec![
                "metadata", "profile", "add", "x", "--group", "compute", "--meta", "novalue",
            ],
            "KEY=VALUE",
        ),
        (
            vec![
                "metadata", "profile", "add", "x", "--group", "compute", "--ttl", "soon",
            ],
            "invalid duration",
        ),
        (vec!["metadata", "profile", "delete", "debug"], "409"),
    ] {
        let e = cli.fails(&args).await;
        assert!(e.contains(says), "{args:?}: {e}");
    }

    // The v0.2 forms of the other kinds.
    assert_eq!(
        cli.ok(&["metadata", "defaults", "list", "-o", "json"])
            .await,
        "[]\n"
    );
    let e = cli
        .fails_with_stdin(
            &["metadata", "defaults", "add", "-f", "-"],
            "cluster_name: demo\n",
        )
        .await;
    assert!(e.contains("base_url"), "{e}");
    let out = cli
        .ok_with_stdin(
            &["metadata", "defaults", "add", "-f", "-"],
            "name: demo\nbase_url: http://172.16.0.254:27778/metadata-service\ncluster_name: demo\nshort_name: de\n",
        )
        .await;
    assert_eq!(
        out,
        format!(
            "created ClusterDefaults demo ({})\n",
            uid(Kind::ClusterDefaults, "demo")
        )
    );
    assert!(
        cli.ok(&["metadata", "defaults", "list"])
            .await
            .contains("demo")
    );

    // A node follows a profile: set on top of its legacy overrides, which stay.
    let legacy = dir.join("n0.yaml");
    std::fs::write(&legacy, "local-hostname: login01\n").unwrap();
    cli.ok(&[
        "metadata",
        "instance",
        "set",
        N0,
        "-f",
        legacy.to_str().unwrap(),
    ])
    .await;
    cli.ok(&["metadata", "instance", "set", N0, "--profile", "debug"])
        .await;
    let table = cli.ok(&["metadata", "instance", "list"]).await;
    assert!(
        table.contains(N0) && table.contains("debug") && table.contains("login01"),
        "{table}"
    );
    assert_eq!(
        h.node
            .get("/metadata-service/compute.yaml")
            .await
            .ok()
            .text(),
        "#cloud-config\nlevel: debug\n"
    );
    cli.ok(&["metadata", "instance", "set", N0, "--no-profile"])
        .await;
    assert_eq!(
        h.node
            .get("/metadata-service/compute.yaml")
            .await
            .ok()
            .text(),
        "#cloud-config\nntp: 172.16.0.254\nlevel: info\n"
    );
    cli.ok(&["metadata", "instance", "set", N0, "--profile", "debug"])
        .await;
    // Overrides only the legacy API has stay through a v0.2 write.
    std::fs::write(&legacy, "region: r9\n").unwrap();
    cli.ok(&[
        "metadata",
        "instance",
        "set",
        N1,
        "-f",
        legacy.to_str().unwrap(),
    ])
    .await;
    cli.ok(&["metadata", "instance", "set", N1, "--local-hostname", "n1"])
        .await;
    let n1 = h
        .api
        .get_json(&format!("/cloud-init/admin/instance-info/{N1}"))
        .await;
    assert_eq!(
        (&n1["region"], &n1["local-hostname"]),
        (&json!("r9"), &json!("n1")),
        "{n1}"
    );
    for (args, says) in [
        (vec!["metadata", "instance", "set", N1], "give -f FILE"),
        (
            vec!["metadata", "instance", "set", N1, "--profile", "dbug"],
            "no profile dbug",
        ),
    ] {
        let e = cli.fails(&args).await;
        assert!(e.contains(says), "{args:?}: {e}");
    }
    let groups: Value =
        serde_json::from_str(&cli.ok(&["metadata", "group", "list", "-o", "json"]).await).unwrap();
    assert_resource(&groups[0], "Group", "compute");
    assert_eq!(
        cli.ok(&["metadata", "instance", "delete", N0]).await,
        format!("deleted {}\n", uid(Kind::InstanceInfo, N0))
    );

    assert_eq!(
        cli.ok(&["metadata", "profile", "delete", "gone", "debug"])
            .await,
        format!(
            "deleted {}\ndeleted {}\n",
            uid(Kind::Profile, "gone"),
            uid(Kind::Profile, "debug")
        )
    );
    cli.ok(&[
        "metadata",
        "peer",
        "delete",
        "peer-nid001000",
        "peer-nid001001",
    ])
    .await;
    assert_eq!(
        cli.ok(&["metadata", "peer", "list", "-o", "json"]).await,
        "[]\n"
    );
    assert_eq!(
        cli.ok(&["metadata", "defaults", "delete"]).await,
        format!("deleted {}\n", uid(Kind::ClusterDefaults, "demo"))
    );
}
