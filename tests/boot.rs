//! The boot service (BSS, `/boot/v1`) against a whole appliance: boot
//! parameters and their binding rules, the iPXE script on both listeners,
//! unknown nodes, the kexec contract, the open BSS reads and `/artifacts/`.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::{Harness, Http, Resp, four_nodes};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BP: &str = "/boot/v1/bootparameters";
const SCRIPT: &str = "/boot/v1/bootscript";
const KEXEC: &str = "/boot/v1/bootparams";
const COMPONENTS: &str = "/hsm/v2/State/Components";
const IFACES: &str = "/hsm/v2/Inventory/EthernetInterfaces";

/// The node base the appliance advertises in these tests.
const BASE: &str = "http://172.16.0.254:27778";
const KERNEL: &str = "http://172.16.0.254:27778/artifacts/vmlinuz";
const INITRD: &str = "http://172.16.0.254:27778/artifacts/initrd.img";
const PARAMS: &str = "console=ttyS0,115200 ip=dhcp";
const TEXT_PLAIN: &str = "text/plain; charset=UTF-8";

/// The MAC of node `x1000c0s<i>b0n0`.
fn mac(i: u8) -> String {
    format!("52:54:00:00:00:0{}", i + 1)
}

fn xname(i: u8) -> String {
    format!("x1000c0s{i}b0n0")
}

/// [`four_nodes`] with one interface each (`52:54:00:00:00:0<i+1>`,
/// `172.16.0.<i+1>`; `ips` overrides an address), advertising [`BASE`].
async fn cluster_with(
    f: impl FnOnce(&mut openchami::config::Config),
    ips: &[(u8, &str)],
) -> Harness {
    let h = Harness::start_with(|c| {
        c.node.advertise = BASE.into();
        f(c);
    })
    .await;
    h.api.post(COMPONENTS, &four_nodes()).await.status(204);
    for i in 0..4u8 {
        let ip = ips
            .iter()
            .find(|(n, _)| *n == i)
            .map(|(_, ip)| ip.to_string())
            .unwrap_or_else(|| format!("172.16.0.{}", i + 1));
        h.api
            .post(
                IFACES,
                &json!({"MACAddress": mac(i), "ComponentID": xname(i), "IPAddresses": [{"IPAddress": ip}]}),
            )
            .await
            .status(201);
    }
    h
}

async fn cluster() -> Harness {
    cluster_with(|_| {}, &[]).await
}

/// Sends a body that must be refused with `status`; the store is unchanged.
async fn refused(h: &Harness, method: Method, body: &str, status: u16) -> Value {
    let before = h.generation();
    let p = h
        .api
        .call_raw(method.clone(), BP, body.as_bytes().to_vec())
        .await
        .problem(status);
    assert_eq!(
        h.generation(),
        before,
        "{method} {body}: a refused write changed the store"
    );
    p
}

/// Every configuration, sorted by its first host (or MAC, or NID) so the
/// assertions do not depend on the listing order.
async fn all_params(h: &Harness) -> Vec<Value> {
    let v = h.api.get_json(BP).await;
    let mut rows = v
        .as_array()
        .unwrap_or_else(|| panic!("not a bare array: {v}"))
        .clone();
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// The configurations a GET with `query` returns.
async fn params_for(h: &Harness, query: &str) -> Vec<Value> {
    let v = h.api.get_json(&format!("{BP}?{query}")).await;
    v.as_array()
        .unwrap_or_else(|| panic!("not a bare array: {v}"))
        .clone()
}

/// A boot script must be 200 `text/plain; charset=UTF-8`; its text.
#[track_caller]
fn script(r: Resp) -> String {
    let r = r.ok();
    assert_eq!(r.content_type(), TEXT_PLAIN, "{}", r.what);
    r.text()
}

/// The `sleep` value of a script.
#[track_caller]
fn sleep_of(s: &str) -> u64 {
    s.lines()
        .find_map(|l| l.strip_prefix("sleep "))
        .unwrap_or_else(|| panic!("no sleep line in:\n{s}"))
        .parse()
        .unwrap_or_else(|e| panic!("sleep is not a number ({e}) in:\n{s}"))
}

/// The script with its jittered `sleep` value replaced by `<DELAY>`.
fn masked(s: &str) -> String {
    s.lines()
        .map(|l| {
            if l.starts_with("sleep ") {
                "sleep <DELAY>".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The `kernel` line's URL, the first thing after `--name kernel`.
#[track_caller]
fn kernel_of(s: &str) -> String {
    s.lines()
        .find_map(|l| l.strip_prefix("kernel --name kernel "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no kernel line in:\n{s}"))
        .to_string()
}

/// The script a configured node gets, sleep masked.
fn expected_script(i: u8, kernel: &str, initrd: Option<&str>, params: &str) -> String {
    let bootif = mac(i).replace(':', "-");
    let mut cmdline = String::new();
    if initrd.is_some() {
        cmdline.push_str("initrd=initrd ");
    }
    cmdline.push_str(&format!(
        "{params} xname={} nid={} BOOTIF=01-{bootif} ds=nocloud-net;s={BASE}/cloud-init/",
        xname(i),
        i + 1
    ));
    let mut s = format!("#!ipxe\nkernel --name kernel {kernel} {cmdline} || goto boot_retry\n");
    if let Some(i) = initrd {
        s.push_str(&format!("initrd --name initrd {i} || goto boot_retry\n"));
    }
    s.push_str(&format!(
        "boot || goto boot_retry\n:boot_retry\nsleep <DELAY>\nchain {BASE}/boot/v1/bootscript?mac={}&retry=1\n",
        mac(i)
    ));
    s
}

/// GETs `path` on both listeners (anonymous API and node); both must give
/// the same status, type and body (the script's jittered sleep masked).
async fn both(h: &Harness, path: &str) -> (Resp, Resp) {
    let a = h.anon.get(path).await;
    let n = h.node.get(path).await;
    assert_eq!(a.status, n.status, "{path}: {} / {}", a.text(), n.text());
    assert_eq!(a.content_type(), n.content_type(), "{path}");
    if a.status == 200 {
        assert_eq!(masked(&a.text()), masked(&n.text()), "{path}");
    }
    (a, n)
}

/// One request written by hand, so the path reaches the server exactly as
/// given (HTTP clients resolve `..` and `%2e%2e` before sending).
async fn raw_get(addr: SocketAddr, target: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(common::TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{target}: no status line in {text:?}"));
    (status, text)
}

// ------------------------------------------------------------ bootparameters

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootparameters_bind_rebind_patch_and_unbind() {
    let h = cluster().await;
    let r = h.api.get(BP).await.ok();
    assert_eq!(r.json(), json!([]), "empty is [], never null");

    // POST binds unbound targets: an xname, a MAC (any spelling), a NID.
    let r = h
        .api
        .post(
            BP,
            &json!({"hosts": ["X1000C0S0B0N0"], "macs": ["52-54-00-00-00-02"], "nids": [3],
                    "kernel": KERNEL, "initrd": INITRD, "params": PARAMS, "cloud-init": {"meta-data": {"a": 1}}}),
        )
        .await
        .status(201);
    assert!(r.body.is_empty(), "POST answers an empty body");
    // Tags: Default, a Role in any case, Unknown-<arch>.
    for (tag, kernel) in [
        ("Default", "http://h/default"),
        ("compute", "http://h/compute"),
        ("Unknown-x86_64", "http://h/unknown"),
    ] {
        h.api
            .post(BP, &json!({"hosts": [tag], "kernel": kernel}))
            .await
            .status(201);
    }
    let all = all_params(&h).await;
    assert_eq!(all.len(), 4, "{all:?}");
    let hosts: Vec<&Value> = all.iter().map(|c| &c["hosts"]).collect();
    assert!(hosts.contains(&&json!(["Compute"])), "{all:?}");
    assert!(hosts.contains(&&json!(["Default"])), "{all:?}");
    assert!(hosts.contains(&&json!(["Unknown-x86_64"])), "{all:?}");
    let first = json!({"hosts": ["x1000c0s0b0n0"], "macs": ["52:54:00:00:00:02"], "nids": [3],
                       "kernel": KERNEL, "initrd": INITRD, "params": PARAMS,
                       "cloud-init": {"meta-data": {"a": 1}}});
    assert!(all.contains(&first), "{all:?}");

    // A bound target cannot be POSTed again, alone or with new targets.
    let p = refused(
        &h,
        Method::POST,
        r#"{"hosts":["x1000c0s0b0n0"],"kernel":"http://h/k"}"#,
        409,
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("x1000c0s0b0n0"),
        "{p}"
    );
    refused(
        &h,
        Method::POST,
        r#"{"hosts":["x1000c0s1b0n0"],"nids":[3],"kernel":"http://h/k"}"#,
        409,
    )
    .await;
    refused(
        &h,
        Method::POST,
        r#"{"hosts":["default"],"kernel":"http://h/k"}"#,
        409,
    )
    .await;

    // GET: one object per configuration holding the named targets.
    for q in [
        "name=x1000c0s0b0n0",
        "mac=52:54:00:00:00:02",
        "mac=525400000002",
        "nid=3",
        "name=x1000c0s0b0n0&nid=3",
        "name=x1000c0s0b0n0,x1000c0s0b0n0&mac=52-54-00-00-00-02",
    ] {
        assert_eq!(params_for(&h, q).await, vec![first.clone()], "{q}");
    }
    let two = |v: Vec<Value>| {
        let mut k: Vec<String> = v.iter().map(|c| c["kernel"].to_string()).collect();
        k.sort();
        k
    };
    let want = vec![format!("\"{KERNEL}\""), "\"http://h/default\"".to_string()];
    assert_eq!(
        two(params_for(&h, "name=x1000c0s0b0n0&name=Default").await),
        want
    );
    assert_eq!(
        two(params_for(&h, "name=x1000c0s0b0n0,default").await),
        want
    );
    assert_eq!(two(params_for(&h, "nid=3&name=Default").await), want);
    // A GET with a BootParams body, as upstream clients send it.
    let r = h
        .api
        .call(Method::GET, BP, Some(&json!({"hosts": ["Compute"]})))
        .await
        .ok();
    assert_eq!(
        r.json(),
        json!([{"hosts": ["Compute"], "kernel": "http://h/compute", "params": ""}])
    );
    let r = h
        .api
        .call(
            Method::GET,
            BP,
            Some(&json!({"macs": ["52:54:00:00:00:02"]})),
        )
        .await
        .ok();
    assert_eq!(r.json(), json!([first.clone()]));
    // A named target without a configuration is 404.
    h.api
        .get(&format!("{BP}?name=x1000c0s1b0n0"))
        .await
        .problem(404);
    h.api
        .get(&format!("{BP}?name=x1000c0s0b0n0&name=x1000c0s1b0n0"))
        .await
        .problem(404);
    h.api.get(&format!("{BP}?nid=2")).await.problem(404);
    h.api
        .get(&format!("{BP}?mac=52:54:00:00:00:09"))
        .await
        .problem(404);
    h.api
        .call(Method::GET, BP, Some(&json!({"hosts": ["x1000c0s2b0n0"]})))
        .await
        .problem(404);

    // PUT rebinds: x1000c0s0b0n0 moves to a new configuration shared with
    // x1000c0s1b0n0; the MAC and NID keep the old one.
    let before = h.generation();
    let r = h
        .api
        .put(
            BP,
            &json!({"hosts": ["x1000c0s0b0n0", "x1000c0s1b0n0"], "kernel": "http://h/k2", "params": "quiet"}),
        )
        .await
        .ok();
    assert!(r.body.is_empty());
    assert!(h.generation() > before);
    let shared = json!({"hosts": ["x1000c0s0b0n0", "x1000c0s1b0n0"], "kernel": "http://h/k2", "params": "quiet"});
    assert_eq!(
        params_for(&h, "name=x1000c0s1b0n0").await,
        vec![shared.clone()]
    );
    let old = params_for(&h, "nid=3").await;
    assert_eq!(old[0]["macs"], json!(["52:54:00:00:00:02"]));
    assert!(old[0].get("hosts").is_none(), "{old:?}");
    assert_eq!(all_params(&h).await.len(), 5);
    // Moving the old configuration's last targets away orphans it: it vanishes.
    h.api
        .put(
            BP,
            &json!({"macs": ["52:54:00:00:00:02"], "nids": [3], "kernel": "http://h/k3"}),
        )
        .await
        .ok();
    let all = all_params(&h).await;
    assert_eq!(all.len(), 5, "{all:?}");
    assert!(!all.iter().any(|c| c["kernel"] == KERNEL), "{all:?}");

    // PATCH one target of a shared configuration: copy-on-write.
    h.api
        .patch(
            BP,
            &json!({"hosts": ["x1000c0s1b0n0"], "params": "quiet debug", "initrd": "http://h/i2"}),
        )
        .await
        .ok();
    assert_eq!(
        params_for(&h, "name=x1000c0s0b0n0").await,
        vec![json!({"hosts": ["x1000c0s0b0n0"], "kernel": "http://h/k2", "params": "quiet"})]
    );
    assert_eq!(
        params_for(&h, "name=x1000c0s1b0n0").await,
        vec![
            json!({"hosts": ["x1000c0s1b0n0"], "kernel": "http://h/k2", "initrd": "http://h/i2", "params": "quiet debug"})
        ]
    );
    assert_eq!(all_params(&h).await.len(), 6);
    // PATCH every target of a configuration changes it in place.
    h.api
        .patch(
            BP,
            &json!({"macs": ["52:54:00:00:00:02"], "nids": [3], "kernel": "http://h/k4"}),
        )
        .await
        .ok();
    assert_eq!(all_params(&h).await.len(), 6);
    assert_eq!(
        params_for(&h, "nid=3").await,
        vec![
            json!({"macs": ["52:54:00:00:00:02"], "nids": [3], "kernel": "http://h/k4", "params": ""})
        ]
    );
    // PATCH of a target without a configuration is 404 and changes nothing.
    refused(
        &h,
        Method::PATCH,
        r#"{"hosts":["x1000c0s2b0n0"],"params":"x"}"#,
        404,
    )
    .await;
    refused(
        &h,
        Method::PATCH,
        r#"{"hosts":["x1000c0s0b0n0","x1000c0s2b0n0"],"params":"x"}"#,
        404,
    )
    .await;

    // DELETE unbinds; a configuration left without targets vanishes.
    h.api
        .call(
            Method::DELETE,
            BP,
            Some(&json!({"hosts": ["x1000c0s0b0n0"]})),
        )
        .await
        .ok();
    h.api
        .get(&format!("{BP}?name=x1000c0s0b0n0"))
        .await
        .problem(404);
    assert_eq!(all_params(&h).await.len(), 5);
    h.api
        .call(
            Method::DELETE,
            BP,
            Some(
                &json!({"hosts": ["x1000c0s1b0n0", "Default", "Compute", "unknown-x86_64"],
                         "macs": ["52:54:00:00:00:02"], "nids": [3]}),
            ),
        )
        .await
        .ok();
    assert_eq!(h.api.get_json(BP).await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bootparameters_change_nothing() {
    let h = cluster().await;
    h.api
        .post(
            BP,
            &json!({"hosts": ["x1000c0s0b0n0"], "kernel": KERNEL, "params": PARAMS}),
        )
        .await
        .status(201);
    let k = r#""kernel":"http://h/k""#;
    let bad_400 = [
        // Invalid MACs.
        format!(r#"{{"macs":["zz:zz:zz:zz:zz:zz"],{k}}}"#),
        format!(r#"{{"macs":["52:54:00:00:00"],{k}}}"#),
        // Invalid xnames and names that are neither xnames nor tags.
        format!(r#"{{"hosts":["x1000c0s0b0n0q"],{k}}}"#),
        format!(r#"{{"hosts":["notanode"],{k}}}"#),
        format!(r#"{{"hosts":["Unknown-"],{k}}}"#),
        // A BMC is not a node.
        format!(r#"{{"hosts":["x1000c0s0b0"],{k}}}"#),
        format!(r#"{{"hosts":["x1000c0"],{k}}}"#),
        // A negative NID.
        format!(r#"{{"nids":[-1],{k}}}"#),
        // Malformed JSON, an empty body.
        r#"{"hosts":["x1000c0s1b0n0"],"#.into(),
        "".into(),
        "[1,2".into(),
        // Wrong types.
        r#"{"nids":"x","kernel":"http://h/k"}"#.into(),
        r#"{"nids":["x"],"kernel":"http://h/k"}"#.into(),
        r#"{"hosts":"x1000c0s1b0n0","kernel":"http://h/k"}"#.into(),
        r#"{"hosts":["x1000c0s1b0n0"],"kernel":5}"#.into(),
        r#"{"hosts":["x1000c0s1b0n0"],"params":["a"]}"#.into(),
        "[]".into(),
        // No targets and no image.
        r#"{"params":"quiet"}"#.into(),
        r#"{"hosts":[],"macs":[],"nids":[],"params":"quiet"}"#.into(),
    ];
    for body in &bad_400 {
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            refused(&h, m, body, 400).await;
        }
    }
    // Params on more than one line; URLs with spaces (DELETE only unbinds
    // and ignores them). Bound and unbound targets alike.
    for target in ["x1000c0s0b0n0", "x1000c0s1b0n0"] {
        for fields in [
            r#""kernel":"http://h/k","params":"quiet\ninit=/bin/sh""#,
            r#""kernel":"http://h/k","params":"quiet\r""#,
            r#""kernel":"http://h/a b""#,
            r#""kernel":" http://h/a\tb""#,
            r#""kernel":"http://h/k","initrd":"http://h/i x""#,
        ] {
            let body = format!(r#"{{"hosts":["{target}"],{fields}}}"#);
            for m in [Method::POST, Method::PUT, Method::PATCH] {
                let status = if m == Method::POST && target == "x1000c0s0b0n0" {
                    409
                } else {
                    400
                };
                refused(&h, m, &body, status).await;
            }
        }
    }
    // One bad target spoils the whole body: the valid ones are not bound.
    refused(
        &h,
        Method::POST,
        r#"{"hosts":["x1000c0s1b0n0","x1000c0s0b0"],"kernel":"http://h/k"}"#,
        400,
    )
    .await;
    refused(
        &h,
        Method::PUT,
        r#"{"hosts":["x1000c0s1b0n0"],"macs":["nope"],"kernel":"http://h/k"}"#,
        400,
    )
    .await;
    // A target bound elsewhere: POST is 409, whichever way it is spelt.
    for body in [
        r#"{"hosts":["x1000c0s0b0n0"],"kernel":"http://h/k"}"#,
        r#"{"hosts":["x1000c0s1b0n0","X1000C0S0B0N0"],"kernel":"http://h/k"}"#,
    ] {
        refused(&h, Method::POST, body, 409).await;
    }
    // GET: a NID that is no number is 400; as upstream, a name or MAC that
    // cannot be a target simply has no boot parameters (404).
    h.api.get(&format!("{BP}?mac=zz")).await.problem(404);
    h.api.get(&format!("{BP}?nid=x")).await.problem(400);
    h.api
        .get(&format!("{BP}?name=x1000c0s0b0"))
        .await
        .problem(404);
    h.api
        .call_raw(Method::GET, BP, b"{nope".to_vec())
        .await
        .problem(400);
    // The one configuration is untouched.
    assert_eq!(
        h.api.get_json(BP).await,
        json!([{"hosts": ["x1000c0s0b0n0"], "kernel": KERNEL, "params": PARAMS}])
    );
}

/// Upstream BSS's rules for what `cloud-init` may hold, image parameters
/// (a body naming only a kernel or an initrd), lookups of names that cannot
/// be targets, and the referral token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootparameters_follow_upstream_bss() {
    let h = cluster().await;
    let n0 = xname(0);
    let r = h
        .api
        .post(
            BP,
            &json!({"hosts": [n0], "kernel": KERNEL, "params": PARAMS}),
        )
        .await
        .status(201);
    let token1 = r.header("bss-referral-token").unwrap_or("").to_string();
    let r = h
        .api
        .put(
            BP,
            &json!({"hosts": [n0], "kernel": KERNEL, "params": PARAMS}),
        )
        .await
        .status(200);
    let token2 = r.header("bss-referral-token").unwrap_or("").to_string();
    for t in [&token1, &token2] {
        assert!(uuid::Uuid::parse_str(t).is_ok(), "referral token {t:?}");
    }
    assert_ne!(token1, token2, "a fresh referral token per write");

    // cloud-init members typed as upstream's Go structs: anything else is a
    // 400 on every write, and changes nothing.
    for ci in [
        json!({"phone-home": {"fqdn": {}}}),
        json!({"phone-home": {"hostname": 5}}),
        json!({"phone-home": "x"}),
        json!({"meta-data": "x"}),
        json!({"user-data": ["a"]}),
        json!({"Meta-Data": 1}),
        json!("x"),
        json!([]),
    ] {
        for (m, target) in [
            (Method::POST, xname(1)),
            (Method::PUT, xname(1)),
            (Method::PATCH, n0.clone()),
        ] {
            let body = json!({"hosts": [target], "kernel": KERNEL, "cloud-init": ci});
            refused(&h, m, &body.to_string(), 400).await;
        }
    }
    // Well-typed: member names matched case-insensitively and stored in
    // upstream's spelling, undeclared ones dropped, the documents kept as
    // sent (their keys are the node's data).
    h.api
        .patch(
            BP,
            &json!({"hosts": [n0], "cloud-init": {
                "Meta-Data": {"CamelKey": {"Nested": 1}},
                "user-data": null,
                "PHONE-HOME": {"FQDN": "n0.example", "hostname": null, "extra": 1},
                "other": true}}),
        )
        .await
        .status(200);
    assert_eq!(
        params_for(&h, &format!("name={n0}")).await[0]["cloud-init"],
        json!({"meta-data": {"CamelKey": {"Nested": 1}}, "user-data": null,
               "phone-home": {"fqdn": "n0.example", "hostname": null}})
    );

    // Image parameters: a body naming no host, MAC or NID but a kernel or an
    // initrd keys parameters by that path, as upstream.
    const K: &str = "s3://boot-images/k1/kernel";
    const I: &str = "s3://boot-images/k1/initrd";
    let r = h
        .api
        .post(BP, &json!({"kernel": K, "params": "console=tty0"}))
        .await
        .status(201);
    assert_eq!(r.header("bss-referral-token"), None);
    refused(&h, Method::POST, &json!({"kernel": K}).to_string(), 409).await;
    h.api
        .put(BP, &json!({"initrd": I, "params": "rd.x"}))
        .await
        .status(200);
    h.api
        .patch(BP, &json!({"kernel": K, "params": "console=ttyS0"}))
        .await
        .status(200);
    let rows = all_params(&h).await;
    assert!(
        rows.contains(&json!({"kernel": K, "params": "console=ttyS0"})),
        "{rows:?}"
    );
    assert!(
        rows.contains(&json!({"initrd": I, "params": "rd.x"})),
        "{rows:?}"
    );
    assert_eq!(
        h.api
            .call(Method::GET, BP, Some(&json!({"kernel": K})))
            .await
            .ok()
            .json(),
        json!([{"kernel": K, "params": "console=ttyS0"}])
    );
    // Image parameters never make a node bootable.
    h.api
        .get(&format!("{SCRIPT}?mac={}", mac(2)))
        .await
        .status(404);
    for body in [
        json!({"kernel": K}),
        json!({"initrd": I}),
        json!({"kernel": K}),
    ] {
        h.api
            .call(Method::DELETE, BP, Some(&body))
            .await
            .status(200);
    }
    assert_eq!(all_params(&h).await.len(), 1);

    // Lookups as upstream: names and MACs that cannot be targets have no
    // parameters (404); a negative NID is refused (400), in the boot script
    // too; deleting what is not bound is a 400.
    for (path, status) in [
        (format!("{BP}?mac=1notAMac"), 404),
        (format!("{BP}?name=does_not_exist"), 404),
        (format!("{BP}?mac=0e:ff:ff:ff:ff:ff"), 404),
        (format!("{BP}?nid=2147483647"), 404),
        (format!("{BP}?nid=1notANid"), 400),
        (format!("{BP}?nid=-1"), 400),
        (format!("{SCRIPT}?nid=-1"), 400),
        (format!("{SCRIPT}?nid=one"), 400),
        (format!("{SCRIPT}?foo"), 400),
    ] {
        let p = h.api.get(&path).await.problem(status);
        assert_eq!(p["type"], "about:blank", "{path}");
    }
    for body in [
        json!({"hosts": ["x9999c0s2b0n0"]}),
        json!({"nids": [2147483647]}),
    ] {
        refused(&h, Method::DELETE, &body.to_string(), 400).await;
    }
}

// ---------------------------------------------------------------- bootscript

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_node_gets_the_same_script_on_both_listeners() {
    let h = cluster().await;
    h.api
        .post(
            BP,
            &json!({"hosts": ["x1000c0s0b0n0"], "kernel": KERNEL, "initrd": INITRD, "params": PARAMS}),
        )
        .await
        .status(201);
    h.api
        .post(
            BP,
            &json!({"hosts": ["x1000c0s1b0n0"], "kernel": KERNEL, "params": PARAMS}),
        )
        .await
        .status(201);
    let want = expected_script(0, KERNEL, Some(INITRD), PARAMS);
    for q in [
        "mac=52:54:00:00:00:01",
        "mac=52-54-00-00-00-01",
        "mac=525400000001",
        "name=x1000c0s0b0n0",
        "name=X1000C0S0B0N0",
        "nid=1",
        // mac wins over name and nid.
        "mac=52:54:00:00:00:01&name=x1000c0s1b0n0&nid=2",
        "mac=52:54:00:00:00:01&ts=1767225600",
    ] {
        let (a, n) = both(&h, &format!("{SCRIPT}?{q}")).await;
        assert_eq!(masked(&script(a)), want, "{q}");
        let body = script(n);
        assert_eq!(masked(&body), want, "{q}");
        assert!(body.ends_with('\n') && !body.contains('\r'), "{q}");
    }
    // Without an initrd there is no initrd line and no initrd= token.
    let (_, n) = both(&h, &format!("{SCRIPT}?name=x1000c0s1b0n0")).await;
    let body = script(n);
    assert_eq!(masked(&body), expected_script(1, KERNEL, None, PARAMS));
    assert!(!body.contains("initrd"), "{body}");
    // Upstream's gateway prefix is served too.
    let r = h
        .node
        .get("/apis/bss/boot/v1/bootscript?mac=52:54:00:00:00:01")
        .await;
    assert_eq!(masked(&script(r)), want);
    // The token does not change the answer.
    let r = h.api.get(&format!("{SCRIPT}?nid=1")).await;
    assert_eq!(masked(&script(r)), want);
}

/// Without `node.advertise` and with a wildcard node listener, a node is
/// sent the address its connection reached (never a host name): the same
/// request on two local addresses names each. The API listener sends the
/// node listener's port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_advertise_nodes_are_sent_the_address_they_reached() {
    let h = Harness::start_with(|c| c.node.listen = "0.0.0.0:0".parse().expect("addr")).await;
    h.api.post(COMPONENTS, &four_nodes()).await.status(204);
    h.api
        .post(
            IFACES,
            &json!({"MACAddress": mac(0), "ComponentID": xname(0), "IPAddresses": [{"IPAddress": "172.16.0.1"}]}),
        )
        .await
        .status(201);
    h.api
        .post(
            BP,
            &json!({"hosts": [xname(0)], "kernel": KERNEL, "params": PARAMS}),
        )
        .await
        .status(201);
    let port = h.node_addr().port();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for local in ["127.0.0.1", "127.0.0.2"] {
        let base = format!("http://{local}:{port}");
        let body = client
            .get(format!("{base}{SCRIPT}?mac={}", mac(0)))
            .send()
            .await
            .expect("bootscript")
            .text()
            .await
            .expect("body");
        assert!(
            body.contains(&format!("ds=nocloud-net;s={base}/cloud-init/"))
                && body.contains(&format!("chain {base}{SCRIPT}?")),
            "{local}: {body}"
        );
        let probe = client
            .get(format!("{base}{SCRIPT}?mac=52:54:00:99:99:99"))
            .send()
            .await
            .expect("bootscript")
            .text()
            .await
            .expect("body");
        assert!(probe.contains(&format!("chain {base}{SCRIPT}?")), "{probe}");
    }
    let via_api = script(h.api.get(&format!("{SCRIPT}?mac={}", mac(0))).await);
    assert!(
        via_api.contains(&format!("s=http://127.0.0.1:{port}/cloud-init/")),
        "{via_api}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_order_is_xname_mac_nid_role_default() {
    let h = cluster().await;
    let by_mac = format!("{SCRIPT}?mac={}", mac(0));
    let by_name = format!("{SCRIPT}?name={}", xname(0));
    let kernel = |path: String| {
        let node = h.node.clone();
        async move { kernel_of(&script(node.get(&path).await)) }
    };
    let post = |body: Value| {
        let api = h.api.clone();
        async move { api.post(BP, &body).await.status(201) }
    };
    // Nothing configured: a known node gets 404 (firmware tries the next device).
    h.node.get(&by_mac).await.problem(404);
    // A configuration without a kernel does not count.
    post(json!({"hosts": ["x1000c0s0b0n0"], "params": "quiet"})).await;
    h.node.get(&by_mac).await.problem(404);
    h.api
        .call(
            Method::DELETE,
            BP,
            Some(&json!({"hosts": ["x1000c0s0b0n0"]})),
        )
        .await
        .ok();

    post(json!({"hosts": ["Default"], "kernel": "http://h/default"})).await;
    assert_eq!(kernel(by_mac.clone()).await, "http://h/default");
    post(json!({"hosts": ["Compute"], "kernel": "http://h/role"})).await;
    assert_eq!(kernel(by_mac.clone()).await, "http://h/role");
    // x1000c0s2b0n0 is a Service node: still Default.
    assert_eq!(
        kernel(format!("{SCRIPT}?name=x1000c0s2b0n0")).await,
        "http://h/default"
    );
    post(json!({"nids": [1], "kernel": "http://h/nid"})).await;
    assert_eq!(kernel(by_mac.clone()).await, "http://h/nid");
    post(json!({"macs": [mac(0)], "kernel": "http://h/mac"})).await;
    assert_eq!(kernel(by_mac.clone()).await, "http://h/mac");
    // The MAC counts only when the node boots from it.
    assert_eq!(kernel(by_name.clone()).await, "http://h/nid");
    assert_eq!(kernel(format!("{SCRIPT}?nid=1")).await, "http://h/nid");
    post(json!({"hosts": ["x1000c0s0b0n0"], "kernel": "http://h/xname"})).await;
    assert_eq!(kernel(by_mac.clone()).await, "http://h/xname");
    assert_eq!(kernel(by_name.clone()).await, "http://h/xname");

    // Unbinding falls back down the same order.
    let del = |body: Value| {
        let api = h.api.clone();
        async move { api.call(Method::DELETE, BP, Some(&body)).await.ok() }
    };
    del(json!({"hosts": ["x1000c0s0b0n0"]})).await;
    assert_eq!(kernel(by_mac.clone()).await, "http://h/mac");
    del(json!({"macs": [mac(0)]})).await;
    assert_eq!(kernel(by_mac.clone()).await, "http://h/nid");
    del(json!({"nids": [1]})).await;
    assert_eq!(kernel(by_mac.clone()).await, "http://h/role");
    del(json!({"hosts": ["compute"]})).await;
    assert_eq!(kernel(by_mac.clone()).await, "http://h/default");
    del(json!({"hosts": ["default"]})).await;
    h.node.get(&by_mac).await.problem(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_clamped_and_back_off() {
    let h = cluster().await;
    h.api
        .post(
            BP,
            &json!({"hosts": ["Default"], "kernel": KERNEL, "params": PARAMS}),
        )
        .await
        .status(201);
    // (retry asked, retry in the chain, smallest and largest sleep):
    // 10 × 2^retry capped at 300, plus up to 20 % jitter.
    for (asked, next, lo, hi) in [
        ("", 1, 10, 12),
        ("0", 1, 10, 12),
        ("1", 2, 20, 24),
        ("2", 3, 40, 48),
        ("3", 4, 80, 96),
        ("4", 5, 160, 192),
        ("5", 6, 300, 360),
        ("17", 18, 300, 360),
        ("1000", 1001, 300, 360),
        ("5000", 1001, 300, 360),
        ("99999999999999", 1001, 300, 360),
        ("-4", 1, 10, 12),
    ] {
        let s = script(
            h.node
                .get(&format!("{SCRIPT}?mac={}&retry={asked}", mac(0)))
                .await,
        );
        let d = sleep_of(&s);
        assert!((lo..=hi).contains(&d), "retry={asked}: sleep {d}");
        assert!(
            s.ends_with(&format!(
                "chain {BASE}/boot/v1/bootscript?mac={}&retry={next}\n",
                mac(0)
            )),
            "retry={asked}:\n{s}"
        );
    }
    // A node known only by name chains back by name.
    h.api
        .post(
            COMPONENTS,
            &json!({"Components": [{"ID": "x1000c0s5b0n0", "State": "Ready", "NID": 6}]}),
        )
        .await
        .status(204);
    let s = script(
        h.node
            .get(&format!("{SCRIPT}?name=x1000c0s5b0n0&retry=2"))
            .await,
    );
    assert!(
        s.ends_with(&format!(
            "chain {BASE}/boot/v1/bootscript?name=x1000c0s5b0n0&retry=3\n"
        )),
        "{s}"
    );
    assert!(!s.contains("BOOTIF="), "{s}");
    // The retry counter must be a number.
    h.node
        .get(&format!("{SCRIPT}?mac={}&retry=x", mac(0)))
        .await
        .problem(400);
    // The unknown-MAC wait backs off the same way.
    let s = script(
        h.node
            .get(&format!(
                "{SCRIPT}?mac=52:54:00:99:99:99&arch=x86_64&retry=3"
            ))
            .await,
    );
    assert!((80..=96).contains(&sleep_of(&s)), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_form_has_upstreams_shape() {
    let h = cluster().await;
    h.api
        .post(
            BP,
            &json!({"hosts": ["x1000c0s0b0n0"], "kernel": KERNEL, "initrd": INITRD, "params": PARAMS}),
        )
        .await
        .status(201);
    h.api
        .post(
            BP,
            &json!({"hosts": ["x1000c0s1b0n0"], "kernel": KERNEL, "params": PARAMS}),
        )
        .await
        .status(201);
    let (a, n) = both(&h, &format!("{SCRIPT}?mac={}&json=1", mac(0))).await;
    let n = n.ok();
    assert!(n.content_type().starts_with("application/json"), "{n:?}");
    let want = json!({
        "params": format!("kernel initrd=initrd {PARAMS} xname=x1000c0s0b0n0 nid=1 BOOTIF=01-52-54-00-00-00-01 ds=nocloud-net;s={BASE}/cloud-init/"),
        "kernel": {"path": KERNEL},
        "initrd": {"path": INITRD},
    });
    assert_eq!(n.json(), want);
    assert_eq!(a.ok().json(), want);
    // Without an initrd, no initrd key at all.
    let v = h
        .node
        .get_json(&format!("{SCRIPT}?name=x1000c0s1b0n0&json=1"))
        .await;
    assert_eq!(
        v,
        json!({
            "params": format!("kernel {PARAMS} xname=x1000c0s1b0n0 nid=2 BOOTIF=01-52-54-00-00-00-02 ds=nocloud-net;s={BASE}/cloud-init/"),
            "kernel": {"path": KERNEL},
        })
    );
    // Unknown and unconfigured nodes are 404, not an empty kernel.
    for q in [
        "mac=52:54:00:99:99:99&json=1",
        "mac=52:54:00:99:99:99&arch=x86_64&json=1",
        "name=x1000c0s2b0n0&json=1",
        "name=x1000c7s9b0n0&json=1",
        "nid=3&json=1",
    ] {
        let (a, n) = both(&h, &format!("{SCRIPT}?{q}")).await;
        a.problem(404);
        n.problem(404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_nodes_probe_then_boot_or_wait() {
    let h = cluster().await;
    let unknown = "52:54:00:99:99:99";
    // No arch: ask again with iPXE's ${buildarch}; no sleep.
    let before = common::now();
    let (_, n) = both(&h, &format!("{SCRIPT}?mac=52-54-00-99-99-99")).await;
    let s = script(n);
    let prefix =
        format!("#!ipxe\nchain {BASE}/boot/v1/bootscript?mac={unknown}&arch=${{buildarch}}&ts=");
    let ts: i64 = s
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("not the arch probe:\n{s}"))
        .parse()
        .expect("ts is a number");
    assert!(ts >= before && ts <= common::now() + 1, "ts {ts}");
    assert!(!s.contains("sleep"), "{s}");

    // With an arch and nothing for it: say why, wait, reboot.
    let (_, n) = both(&h, &format!("{SCRIPT}?mac={unknown}&arch=x86_64")).await;
    let s = script(n);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 4, "{s}");
    assert_eq!(lines[0], "#!ipxe");
    assert!(
        lines[1].starts_with("echo ") && lines[1].contains(unknown),
        "{s}"
    );
    assert!((10..=12).contains(&sleep_of(&s)), "{s}");
    assert_eq!(lines[3], "reboot");

    // A configuration for Unknown-x86_64: the §4.2 script, no xname=/nid=.
    h.api
        .post(
            BP,
            &json!({"hosts": ["Unknown-x86_64"], "kernel": KERNEL, "initrd": INITRD, "params": PARAMS}),
        )
        .await
        .status(201);
    let (_, n) = both(&h, &format!("{SCRIPT}?mac={unknown}&arch=x86_64")).await;
    let s = script(n);
    assert_eq!(
        masked(&s),
        format!(
            "#!ipxe\nkernel --name kernel {KERNEL} initrd=initrd {PARAMS} BOOTIF=01-52-54-00-99-99-99 ds=nocloud-net;s={BASE}/cloud-init/ || goto boot_retry\n\
             initrd --name initrd {INITRD} || goto boot_retry\nboot || goto boot_retry\n:boot_retry\nsleep <DELAY>\n\
             chain {BASE}/boot/v1/bootscript?mac={unknown}&retry=1\n"
        )
    );
    assert!(!s.contains("xname=") && !s.contains("nid="), "{s}");
    // Another arch still waits; no arch still probes.
    let s = script(
        h.node
            .get(&format!("{SCRIPT}?mac={unknown}&arch=arm64"))
            .await,
    );
    assert!(s.ends_with("reboot\n"), "{s}");
    let s = script(h.node.get(&format!("{SCRIPT}?mac={unknown}")).await);
    assert!(s.contains("arch=${buildarch}"), "{s}");
    // A bad arch is refused.
    h.node
        .get(&format!("{SCRIPT}?mac={unknown}&arch=x86%2064"))
        .await
        .problem(400);

    // Known nodes never get the Unknown-<arch> configuration: configured ones
    // boot theirs, unconfigured ones 404 (even with an arch).
    h.node
        .get(&format!("{SCRIPT}?mac={}&arch=x86_64", mac(0)))
        .await
        .problem(404);
    h.node
        .get(&format!("{SCRIPT}?name={}", xname(1)))
        .await
        .problem(404);
    h.node.get(&format!("{SCRIPT}?nid=3")).await.problem(404);
    // A name or NID not in the inventory is 404 (no MAC to probe with).
    h.node
        .get(&format!("{SCRIPT}?name=x1000c7s9b0n0"))
        .await
        .problem(404);
    h.node.get(&format!("{SCRIPT}?nid=99")).await.problem(404);
    h.api
        .post(
            BP,
            &json!({"hosts": ["Default"], "kernel": "http://h/default"}),
        )
        .await
        .status(201);
    let s = script(
        h.node
            .get(&format!("{SCRIPT}?mac={}&arch=x86_64", mac(0)))
            .await,
    );
    assert_eq!(kernel_of(&s), "http://h/default");
    assert!(s.contains("xname=x1000c0s0b0n0"), "{s}");

    // A disabled node (x1000c0s3b0n0) gets 404 even with a Default config,
    // by MAC, name or NID, and even bound by xname.
    for q in [
        format!("mac={}", mac(3)),
        format!("name={}", xname(3)),
        "nid=4".to_string(),
    ] {
        let (a, n) = both(&h, &format!("{SCRIPT}?{q}")).await;
        a.problem(404);
        n.problem(404);
    }
    h.api
        .post(BP, &json!({"hosts": [xname(3)], "kernel": KERNEL}))
        .await
        .status(201);
    h.node
        .get(&format!("{SCRIPT}?mac={}", mac(3)))
        .await
        .problem(404);
    // An Empty slot is not bootable either.
    h.api
        .call(
            Method::PATCH,
            &format!("{COMPONENTS}/BulkStateData"),
            Some(&json!({"ComponentIDs": [xname(1)], "State": "Empty", "Force": true})),
        )
        .await
        .status(204);
    h.node
        .get(&format!("{SCRIPT}?mac={}", mac(1)))
        .await
        .problem(404);

    // No selector, or a bad one: 400.
    for q in [
        "",
        "?arch=x86_64",
        "?retry=1",
        "?mac=",
        "?mac=zz",
        "?name=nonsense",
        "?nid=x",
    ] {
        let (a, n) = both(&h, &format!("{SCRIPT}{q}")).await;
        a.problem(400);
        n.problem(400);
    }
    // A component that is not a node does not boot.
    h.node
        .get(&format!("{SCRIPT}?name=x1000c0s0b0"))
        .await
        .problem(404);
}

// ------------------------------------------------------------------ kexec

/// What `GET /boot/v1/bootparams` answers for node `i`.
fn kexec_for(i: u8, initrd: &[&str]) -> Value {
    json!([{
        "kernel": {"path": KERNEL},
        "initrd": initrd,
        "params": format!(
            "{PARAMS} xname={} nid={} BOOTIF=01-{} ds=nocloud-net;s={BASE}/cloud-init/",
            xname(i), i + 1, mac(i).replace(':', "-")
        ),
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kexec_params_by_query_and_by_caller_address() {
    let h = cluster().await;
    h.api
        .post(
            BP,
            &json!({"hosts": ["Compute"], "kernel": KERNEL, "initrd": INITRD, "params": PARAMS}),
        )
        .await
        .status(201);
    // No node has the test's own address yet.
    let (a, n) = both(&h, KEXEC).await;
    let p = n.problem(404);
    assert!(p["detail"].as_str().unwrap().contains("127.0.0.1"), "{p}");
    a.problem(404);

    // Explicit selection, on both listeners.
    for (q, i) in [
        (format!("mac={}", mac(1)), 1u8),
        (format!("mac={}", mac(1).replace(':', "-")), 1),
        (format!("name={}", xname(1)), 1),
        (format!("name={}", xname(0)), 0),
    ] {
        let (a, n) = both(&h, &format!("{KEXEC}?{q}")).await;
        assert_eq!(n.ok().json(), kexec_for(i, &[INITRD]), "{q}");
        assert_eq!(a.ok().json(), kexec_for(i, &[INITRD]), "{q}");
    }
    // The contract's jq paths work, and there is no initrd= token.
    let v = h.node.get_json(&format!("{KEXEC}?name={}", xname(0))).await;
    assert_eq!(v[0]["kernel"]["path"], KERNEL);
    assert_eq!(v[0]["initrd"][0], INITRD);
    assert!(!v[0]["params"].as_str().unwrap().contains("initrd="), "{v}");
    // Unknown, unconfigured, disabled: 404; a bad selector: 400.
    for q in [
        "mac=52:54:00:99:99:99",
        "name=x1000c7s9b0n0",
        "name=x1000c0s2b0n0",
        "name=x1000c0s3b0n0",
    ] {
        h.node.get(&format!("{KEXEC}?{q}")).await.problem(404);
    }
    h.node.get(&format!("{KEXEC}?mac=zz")).await.problem(400);
    h.node.get(&format!("{KEXEC}?name=zz")).await.problem(400);

    // Give x1000c0s0b0n0 the loopback address: the test's own requests are it.
    h.api
        .post(
            &format!("{IFACES}/525400000001/IPAddresses"),
            &json!({"IPAddress": "127.0.0.1"}),
        )
        .await
        .status(201);
    let (a, n) = both(&h, KEXEC).await;
    assert_eq!(n.ok().json(), kexec_for(0, &[INITRD]));
    assert_eq!(a.ok().json(), kexec_for(0, &[INITRD]));
    // X-Forwarded-For naming another node is not believed from an
    // untrusted peer.
    for c in [&h.node, &h.anon] {
        let r = c
            .send(
                c.request(Method::GET, KEXEC)
                    .header("X-Forwarded-For", "172.16.0.2"),
            )
            .await;
        assert_eq!(r.ok().json(), kexec_for(0, &[INITRD]));
    }
    // Without an initrd, `initrd` is an empty array.
    h.api
        .post(
            BP,
            &json!({"hosts": [xname(0)], "kernel": KERNEL, "params": PARAMS}),
        )
        .await
        .status(201);
    let (_, n) = both(&h, KEXEC).await;
    assert_eq!(n.ok().json(), kexec_for(0, &[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kexec_believes_forwarded_for_only_from_trusted_proxies() {
    let h = cluster_with(
        |c| c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()],
        &[(0, "127.0.0.1")],
    )
    .await;
    h.api
        .post(
            BP,
            &json!({"hosts": ["Default"], "kernel": KERNEL, "initrd": INITRD, "params": PARAMS}),
        )
        .await
        .status(201);
    let fwd = |c: &Http, xff: &'static str| {
        let c = c.clone();
        async move {
            c.send(c.request(Method::GET, KEXEC).header("X-Forwarded-For", xff))
                .await
        }
    };
    for c in [&h.node, &h.anon] {
        // The proxy itself (no header) is x1000c0s0b0n0.
        assert_eq!(c.get(KEXEC).await.ok().json(), kexec_for(0, &[INITRD]));
        // The client the trusted proxy names is believed.
        assert_eq!(
            fwd(c, "172.16.0.2").await.ok().json(),
            kexec_for(1, &[INITRD])
        );
        // The rightmost untrusted hop counts, not what the client claimed.
        assert_eq!(
            fwd(c, "172.16.0.2, 172.16.0.3").await.ok().json(),
            kexec_for(2, &[INITRD])
        );
        fwd(c, "10.9.9.9").await.problem(404);
    }
}

// ------------------------------------------------------ other BSS routes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_dumpstate_history_and_service_routes() {
    let h = cluster().await;
    // hosts: nodes only, with FQDN, MAC and EndpointEnabled.
    let all = h.anon.get_json("/boot/v1/hosts").await;
    let rows = all.as_array().expect("array");
    assert_eq!(rows.len(), 4, "{all}");
    for r in rows {
        assert!(r["ID"].as_str().unwrap().ends_with("n0"), "{r}");
        assert!(r["FQDN"].is_string(), "{r}");
        assert!(r["MAC"].is_array(), "{r}");
        assert_eq!(r["EndpointEnabled"], true, "{r}");
        assert_eq!(r["Type"], "Node", "{r}");
    }
    for q in [
        format!("name={}", xname(1)),
        format!("mac={}", mac(1)),
        format!("mac={}", mac(1).replace(':', "")),
        "nid=2".to_string(),
    ] {
        let v = h.anon.get_json(&format!("/boot/v1/hosts?{q}")).await;
        assert_eq!(v.as_array().map(Vec::len), Some(1), "{q}: {v}");
        assert_eq!(v[0]["ID"], xname(1), "{q}");
        assert_eq!(v[0]["NID"], 2, "{q}");
        assert_eq!(v[0]["MAC"], json!([mac(1)]), "{q}");
    }
    for q in ["name=x1000c7s9b0n0", "mac=52:54:00:99:99:99", "nid=99"] {
        h.anon
            .get(&format!("/boot/v1/hosts?{q}"))
            .await
            .problem(404);
    }
    h.anon.get("/boot/v1/hosts?nid=x").await.problem(400);
    // POST hosts: a no-op that needs a token.
    let before = h.generation();
    h.api.post("/boot/v1/hosts", &json!({})).await.status(204);
    h.anon.post("/boot/v1/hosts", &json!({})).await.problem(401);
    assert_eq!(h.generation(), before);

    // dumpstate: the hosts and every configuration.
    h.api
        .post(
            BP,
            &json!({"hosts": ["x1000c0s0b0n0"], "kernel": KERNEL, "initrd": INITRD, "params": PARAMS}),
        )
        .await
        .status(201);
    h.api
        .post(
            BP,
            &json!({"hosts": ["Default"], "kernel": "http://h/default"}),
        )
        .await
        .status(201);
    // Every boot configuration in one answer: a token is needed.
    h.anon.get("/boot/v1/dumpstate").await.problem(401);
    let d = h.api.get_json("/boot/v1/dumpstate").await;
    assert_eq!(d["Components"], all, "{d}");
    let mut params = d["Params"].as_array().expect("Params").clone();
    params.sort_by_key(|p| p.to_string());
    assert_eq!(params, all_params(&h).await);
    assert_eq!(params.len(), 2);

    // endpoint-history: bootscript fetches, by node (or MAC when unknown).
    assert_eq!(
        h.anon.get_json("/boot/v1/endpoint-history").await,
        json!([])
    );
    let before = common::now();
    h.node.get(&format!("{SCRIPT}?mac={}", mac(0))).await.ok();
    h.node.get(&format!("{SCRIPT}?nid=2")).await.ok();
    h.node
        .get(&format!("{SCRIPT}?mac=52:54:00:99:99:99"))
        .await
        .ok();
    let hist = h.anon.get_json("/boot/v1/endpoint-history").await;
    let names: Vec<&str> = hist
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["52:54:00:99:99:99", "x1000c0s0b0n0", "x1000c0s1b0n0"],
        "{hist}"
    );
    let one = h
        .anon
        .get_json("/boot/v1/endpoint-history?name=x1000c0s0b0n0")
        .await;
    assert_eq!(one.as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one[0]["endpoint"], "bootscript");
    let t = one[0]["last_epoch"].as_i64().expect("last_epoch");
    assert!(t >= before && t <= common::now() + 1, "{one}");
    assert_eq!(
        one[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["name", "endpoint", "last_epoch"]
    );
    assert_eq!(
        h.anon
            .get_json("/boot/v1/endpoint-history?endpoint=bootscript")
            .await
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert_eq!(
        h.anon
            .get_json("/boot/v1/endpoint-history?endpoint=user-data")
            .await,
        json!([])
    );

    // service/*.
    let version = env!("CARGO_PKG_VERSION");
    let storage = json!({"name": "sqlite", "status": "connected"});
    for (path, want) in [
        ("status", json!({"bss-status": "running"})),
        ("version", json!({"bss-version": version})),
        ("hsm", json!({"bss-status-hsm": "connected"})),
        ("storage/status", json!({"bss-storage-backend": storage})),
        (
            "status/all",
            json!({"bss-status": "running", "bss-version": version,
                   "bss-status-hsm": "connected", "bss-storage-backend": storage}),
        ),
    ] {
        let r = h.anon.get(&format!("/boot/v1/service/{path}")).await.ok();
        assert!(r.content_type().starts_with("application/json"), "{path}");
        assert_eq!(r.json(), want, "{path}");
        // API-only: the node listener does not serve them.
        h.node
            .get(&format!("/boot/v1/service/{path}"))
            .await
            .problem(404);
    }
    for path in [
        "/boot/v1/hosts",
        "/boot/v1/dumpstate",
        "/boot/v1/endpoint-history",
    ] {
        h.node.get(path).await.problem(404);
    }
}

// ----------------------------------------------------------------- access

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_routes_are_anonymous_and_bootparameters_need_a_token() {
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::write(root.path().join("vmlinuz"), b"kernel").unwrap();
    let dir = root.path().to_path_buf();
    let h = cluster_with(move |c| c.boot.artifacts_dir = dir, &[(0, "127.0.0.1")]).await;
    h.api
        .post(
            BP,
            &json!({"hosts": ["Default"], "kernel": KERNEL, "params": PARAMS}),
        )
        .await
        .status(201);
    // Node routes: no token on either listener.
    for c in [&h.node, &h.anon] {
        script(c.get(&format!("{SCRIPT}?mac={}", mac(0))).await);
        c.get(KEXEC).await.ok();
        assert_eq!(&c.get("/artifacts/vmlinuz").await.ok().body[..], b"kernel");
    }
    // bootparameters: 401 without a token on the API listener ...
    let before = h.generation();
    let body = json!({"hosts": [xname(1)], "kernel": KERNEL});
    for m in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ] {
        let r = h.anon.call(m.clone(), BP, Some(&body)).await;
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{m}");
        r.problem(401);
        let bad = h.api.with_token(Some("not-a-token"));
        bad.call(m.clone(), BP, Some(&body)).await.problem(401);
        // ... and does not exist on the node listener, token or not.
        h.node.call(m.clone(), BP, Some(&body)).await.problem(404);
        h.node
            .with_token(Some(&h.token))
            .call(m.clone(), BP, Some(&body))
            .await
            .problem(404);
    }
    assert_eq!(h.generation(), before);
    // A read-only token may read but not write.
    let viewer = h.api_with(Some(&h.token_with(
        "viewer",
        std::time::Duration::from_secs(60),
        &["viewer"],
    )));
    viewer.get(BP).await.ok();
    viewer.post(BP, &body).await.problem(403);
    assert_eq!(h.generation(), before);
}

// --------------------------------------------------------------- artifacts

/// `root/secret.txt` beside `root/artifacts/{vmlinuz, images/initrd.img}`.
fn artifacts_tree(root: &Path) -> (Vec<u8>, Vec<u8>) {
    let dir = root.join("artifacts");
    std::fs::create_dir_all(dir.join("images")).expect("write the artifacts tree");
    let kernel: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let initrd: Vec<u8> = (0..3000u32).map(|i| (i % 13) as u8 + b'a').collect();
    std::fs::write(dir.join("vmlinuz"), &kernel).expect("write the artifacts tree");
    std::fs::write(dir.join("images/initrd.img"), &initrd).expect("write the artifacts tree");
    std::fs::write(root.join("secret.txt"), b"TOP-SECRET").expect("write the artifacts tree");
    (kernel, initrd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_served_with_head_and_range_and_never_outside() {
    let root = tempfile::tempdir().expect("temp dir");
    let (kernel, initrd) = artifacts_tree(root.path());
    let dir = root.path().join("artifacts");
    let h = Harness::start_with(move |c| c.boot.artifacts_dir = dir).await;
    for c in [&h.node, &h.anon] {
        let r = c.get("/artifacts/vmlinuz").await.ok();
        assert_eq!(&r.body[..], &kernel[..]);
        assert_eq!(r.header("content-length"), Some("1000"));
        let r = c.get("/artifacts/images/initrd.img").await.ok();
        assert_eq!(&r.body[..], &initrd[..]);

        // HEAD: the length, no body.
        let r = c
            .send(c.request(Method::HEAD, "/artifacts/images/initrd.img"))
            .await
            .ok();
        assert_eq!(r.header("content-length"), Some("3000"));
        assert!(r.body.is_empty());

        // Range: 206 with Content-Range.
        let r = c
            .send(
                c.request(Method::GET, "/artifacts/vmlinuz")
                    .header("Range", "bytes=10-19"),
            )
            .await
            .status(206);
        assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"));
        assert_eq!(&r.body[..], &kernel[10..20]);
        let r = c
            .send(
                c.request(Method::GET, "/artifacts/vmlinuz")
                    .header("Range", "bytes=990-"),
            )
            .await
            .status(206);
        assert_eq!(r.header("content-range"), Some("bytes 990-999/1000"));
        assert_eq!(&r.body[..], &kernel[990..]);
        let r = c
            .send(
                c.request(Method::GET, "/artifacts/vmlinuz")
                    .header("Range", "bytes=5000-"),
            )
            .await;
        assert_eq!(r.status, 416, "{}", r.text());

        // Missing files are 404.
        c.get("/artifacts/nope").await.problem(404);
        c.get("/artifacts/images/nope.img").await.problem(404);
    }

    // Nothing outside the directory, however the path is spelt.
    let addr = h.node_addr();
    for target in [
        "/artifacts/../secret.txt",
        "/artifacts/images/../../secret.txt",
        "/artifacts/%2e%2e/secret.txt",
        "/artifacts/%2E%2E/secret.txt",
        "/artifacts/images/%2e%2e/%2e%2e/secret.txt",
        "/artifacts/..%2fsecret.txt",
        "/artifacts/%2e%2e%2fsecret.txt",
        "/artifacts/images/..%2f..%2fsecret.txt",
        "/artifacts/%2fetc%2fpasswd",
        "/artifacts//etc/passwd",
        "/artifacts/..%5csecret.txt",
        "/artifacts/%00",
    ] {
        let (status, text) = raw_get(addr, target).await;
        assert!(
            matches!(status, 400 | 404),
            "{target}: status {status}\n{text}"
        );
        assert!(!text.contains("TOP-SECRET"), "{target} leaked:\n{text}");
        assert!(!text.contains("root:"), "{target} leaked:\n{text}");
    }
    // The plain client's normalised paths stay inside too.
    h.node.get("/artifacts/../secret.txt").await.problem(404);
    // Symlinks inside the directory that lead out of it are refused; those
    // staying inside are served.
    let dir = root.path().join("artifacts");
    std::os::unix::fs::symlink(root.path().join("secret.txt"), dir.join("leak")).unwrap();
    std::os::unix::fs::symlink(root.path(), dir.join("up")).unwrap();
    std::os::unix::fs::symlink("vmlinuz", dir.join("images/kernel")).unwrap();
    std::os::unix::fs::symlink("../vmlinuz", dir.join("images/kernel2")).unwrap();
    for c in [&h.node, &h.anon] {
        for p in [
            "/artifacts/leak",
            "/artifacts/up/secret.txt",
            "/artifacts/%6ceak",
        ] {
            let v = c.get(p).await.problem(403);
            assert!(!v.to_string().contains("TOP-SECRET"), "{p}: {v}");
        }
        c.get("/artifacts/images/kernel").await.problem(404);
        let r = c.get("/artifacts/images/kernel2").await.ok();
        assert_eq!(&r.body[..], &kernel[..]);
    }
    // A directory is neither listed nor redirected (a redirect would name a
    // path without the /artifacts prefix): 404.
    for target in ["/artifacts/images", "/artifacts/images/", "/artifacts/"] {
        let (status, text) = raw_get(addr, target).await;
        assert_eq!(status, 404, "{target}:\n{text}");
        assert!(!text.contains("initrd.img"), "{target}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_404_without_a_directory() {
    let h = Harness::start().await;
    for c in [&h.node, &h.anon] {
        let p = c.get("/artifacts/vmlinuz").await.problem(404);
        assert!(
            p["detail"].as_str().unwrap().contains("artifacts_dir"),
            "{p}"
        );
        c.send(c.request(Method::HEAD, "/artifacts/vmlinuz"))
            .await
            .status(404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_steps_record_where_each_node_got_to() {
    let root = tempfile::tempdir().expect("temp dir");
    artifacts_tree(root.path());
    let dir = root.path().join("artifacts");
    // Node 0 is the caller's own address, so it is recognised by address.
    let h = cluster_with(move |c| c.boot.artifacts_dir = dir, &[(0, "127.0.0.1")]).await;
    h.api
        .post(
            "/boot/v1/bootparameters",
            &json!({"hosts": [xname(0)], "kernel": format!("{BASE}/artifacts/vmlinuz"),
                    "initrd": format!("{BASE}/artifacts/images/initrd.img"), "params": PARAMS}),
        )
        .await
        .status(201);
    assert_eq!(h.api.get_json("/boot/v1/boot-steps").await, json!([]));
    h.node
        .get(&format!("/boot/v1/bootscript?mac={}", mac(0)))
        .await
        .ok();
    h.node.get("/artifacts/vmlinuz").await.ok();
    h.node.get("/artifacts/images/initrd.img").await.ok();
    h.node.get("/cloud-init/meta-data").await.ok();
    h.node
        .call_raw(Method::POST, "/cloud-init/phone-home/i-1", "hostname=n0")
        .await
        .ok();
    // An unknown MAC asking for a script is recorded under its MAC.
    h.node
        .get("/boot/v1/bootscript?mac=02:00:00:00:00:99")
        .await
        .ok();

    let all = h.api.get_json("/boot/v1/boot-steps").await;
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all:#}");
    let rec = &h
        .api
        .get_json(&format!("/boot/v1/boot-steps?name={}", xname(0)))
        .await[0];
    assert_eq!(rec["name"], xname(0).as_str());
    assert_eq!(rec["mac"], mac(0).as_str());
    assert_eq!(rec["ip"], "127.0.0.1");
    assert_eq!(rec["last_step"], "phone-home");
    let steps = rec["steps"].as_object().expect("steps");
    let names: Vec<&str> = steps.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["script", "kernel", "initrd", "meta-data", "phone-home"],
        "{rec:#}"
    );
    assert_eq!(steps["initrd"]["detail"], "/artifacts/images/initrd.img");
    assert_eq!(steps["phone-home"]["detail"], "i-1");
    let t = |s: &str| steps[s]["first_ms"].as_i64().expect("time");
    assert!(t("script") <= t("kernel") && t("kernel") <= t("phone-home"));
    let unknown = h
        .api
        .get_json("/boot/v1/boot-steps?name=02:00:00:00:00:99")
        .await;
    assert_eq!(unknown[0]["name"], "");
    assert_eq!(unknown[0]["last_step"], "script");
    // Names, MACs and addresses of nodes: a token is needed.
    h.anon.get("/boot/v1/boot-steps").await.problem(401);
}

// ------------------------------------------------------------ boot-service

const BS: &str = "/boot-service";
const BCONF: &str = "/boot-service/bootconfigurations";

/// A BSS-route script as `/boot-service/bootscript` gives it: the same,
/// retrying through boot-service.
fn via_boot_service(s: &str) -> String {
    s.replace("/boot/v1/bootscript?", "/boot-service/bootscript?")
}

/// The shapes ochami's client (boot-service's generated Go client) decodes
/// answers into; decoding fails if a field has the wrong type, as in Go.
mod upstream {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Metadata {
        pub name: String,
        pub uid: String,
        #[serde(default)]
        pub labels: BTreeMap<String, String>,
        #[serde(default)]
        pub annotations: BTreeMap<String, String>,
        pub created_at: chrono::DateTime<chrono::FixedOffset>,
        pub updated_at: chrono::DateTime<chrono::FixedOffset>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    pub struct Spec {
        pub hosts: Vec<String>,
        pub macs: Vec<String>,
        pub nids: Vec<i32>,
        pub groups: Vec<String>,
        pub kernel: String,
        pub initrd: String,
        pub params: String,
        pub priority: i64,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, rename_all = "camelCase")]
    pub struct Status {
        pub phase: String,
        pub last_updated: String,
        pub applied_to: Vec<String>,
        pub error: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct BootConfiguration {
        pub api_version: String,
        pub kind: String,
        pub metadata: Metadata,
        pub spec: Spec,
        pub status: Status,
    }

    #[derive(Debug, Deserialize)]
    pub struct DeleteResponse {
        pub message: String,
        pub uid: String,
    }
}

/// One request as ochami v0.10 sends it (boot-service's generated client:
/// `Accept: application/json`, `Content-Type` only with a body, the
/// bearer token), the body bytes exactly as Go marshals them.
async fn ochami(h: &Harness, method: Method, path: &str, body: Option<&str>, token: bool) -> Resp {
    let mut r = h
        .anon
        .raw
        .request(method, h.anon.url(path))
        .header("Accept", "application/json");
    if token {
        r = r.header("Authorization", format!("Bearer {}", h.token));
    }
    if let Some(b) = body {
        r = r
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    h.anon.send(r).await
}

fn decoded<T: serde::de::DeserializeOwned>(r: Resp) -> T {
    assert_eq!(r.content_type(), "application/json", "{}", r.what);
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{}: ochami could not decode ({e}): {}", r.what, r.text()))
}

async fn add_group(h: &Harness, label: &str, members: &[u8]) {
    let ids: Vec<String> = members.iter().map(|i| xname(*i)).collect();
    h.api
        .post(
            "/hsm/v2/groups",
            &json!({"label": label, "members": {"ids": ids}}),
        )
        .await
        .status(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ochami_boot_config_requests_replayed_byte_for_byte() {
    let h = cluster().await;
    add_group(&h, "compute", &[0, 1]).await;
    // ochami boot service status: no token.
    let r = ochami(&h, Method::GET, &format!("{BS}/health"), None, false).await;
    let health: std::collections::BTreeMap<String, Value> = decoded(r.ok());
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "boot-service");

    // ochami boot config add -d '{"name":"compute","groups":["compute"],…}'
    // (simple API: name into metadata, Go's zero uid and times).
    let add = format!(
        r#"{{"metadata":{{"name":"compute","uid":"","createdAt":"0001-01-01T00:00:00Z","updatedAt":"0001-01-01T00:00:00Z"}},"spec":{{"groups":["compute"],"kernel":"{KERNEL}","initrd":"{INITRD}","params":"{PARAMS}","priority":43}}}}"#
    );
    let r = ochami(&h, Method::POST, BCONF, Some(&add), true)
        .await
        .status(201);
    assert!(r.header("location").is_none());
    let created: upstream::BootConfiguration = decoded(r);
    assert_eq!(created.api_version, "boot.openchami.io/v1");
    assert_eq!(created.kind, "BootConfiguration");
    assert_eq!(created.metadata.name, "compute");
    let uid = created.metadata.uid.clone();
    assert!(
        uid.len() == "bootconfiguration-".len() + 8 && uid.starts_with("bootconfiguration-"),
        "{uid}"
    );
    assert!(created.metadata.created_at.timestamp() > 0);
    assert!(created.metadata.annotations.is_empty());
    assert_eq!(created.status.phase, "");
    let want_spec = upstream::Spec {
        groups: vec!["compute".into()],
        kernel: KERNEL.into(),
        initrd: INITRD.into(),
        params: PARAMS.into(),
        priority: 43,
        ..Default::default()
    };
    assert_eq!(created.spec, want_spec);
    // The advanced API (-e): envelope with labels at both levels.
    let env = r#"{"metadata":{"name":"mac-one","uid":"","labels":{"env":"prod"},"createdAt":"0001-01-01T00:00:00Z","updatedAt":"0001-01-01T00:00:00Z"},"spec":{"macs":["52:54:00:00:00:03"],"kernel":"http://s3/vmlinuz2"},"labels":{"tier":"1"}}"#;
    let other: upstream::BootConfiguration = decoded(
        ochami(&h, Method::POST, BCONF, Some(env), true)
            .await
            .status(201),
    );
    assert_eq!(
        other.metadata.labels.iter().collect::<Vec<_>>(),
        [
            (&"env".to_string(), &"prod".to_string()),
            (&"tier".to_string(), &"1".to_string())
        ]
    );

    // boot config list / show.
    let list: Vec<upstream::BootConfiguration> =
        decoded(ochami(&h, Method::GET, BCONF, None, true).await.ok());
    assert_eq!(list.len(), 2);
    let shown: upstream::BootConfiguration = decoded(
        ochami(&h, Method::GET, &format!("{BCONF}/{uid}"), None, true)
            .await
            .ok(),
    );
    assert_eq!(shown.spec, want_spec);

    // The group's nodes boot it, through both boot APIs; others do not.
    let want = expected_script(0, KERNEL, Some(INITRD), PARAMS);
    for path in [
        format!("{SCRIPT}?mac={}", mac(0)),
        format!("{BS}/bootscript?host={}", xname(0)),
        format!("{BS}/bootscript?mac={}", mac(0)),
        format!("{BS}/bootscript?nid=1"),
    ] {
        let (a, n) = both(&h, &path).await;
        let want = if path.starts_with(BS) {
            via_boot_service(&want)
        } else {
            want.clone()
        };
        assert_eq!(masked(&script(a)), want, "{path}");
        drop(n);
    }
    let k = h.node.get_json(&format!("{KEXEC}?name={}", xname(1))).await;
    assert_eq!(k[0]["kernel"]["path"], KERNEL, "{k}");
    // x1000c0s2b0n0 is not in the group: it gets the MAC configuration.
    let s = script(
        h.node
            .get(&format!("{BS}/bootscript?host={}", xname(2)))
            .await,
    );
    assert_eq!(kernel_of(&s), "http://s3/vmlinuz2");

    // boot config set <uid> (simple: empty name, whole spec replaced).
    let set = r#"{"metadata":{"name":"","uid":"","createdAt":"0001-01-01T00:00:00Z","updatedAt":"0001-01-01T00:00:00Z"},"spec":{"groups":["compute"],"kernel":"http://s3/vmlinuz3"}}"#;
    let r = ochami(&h, Method::PUT, &format!("{BCONF}/{uid}"), Some(set), true).await;
    let after: upstream::BootConfiguration = decoded(r.ok());
    assert_eq!(
        after.metadata.name, "compute",
        "an empty name keeps the old one"
    );
    assert_eq!(after.spec.initrd, "", "PUT replaces the spec wholesale");
    assert!(after.metadata.updated_at >= created.metadata.updated_at);
    let s = script(h.node.get(&format!("{SCRIPT}?mac={}", mac(1))).await);
    assert_eq!(kernel_of(&s), "http://s3/vmlinuz3");

    // boot config patch: JSON Patch and merge patch of the spec.
    let r = h
        .api
        .request(Method::PATCH, &format!("{BCONF}/{uid}"))
        .header("Content-Type", "application/json-patch+json")
        .header("Accept", "application/json;version=v1")
        .body(r#"[{"op":"replace","path":"/params","value":"ip=dhcp"},{"op":"add","path":"/groups/-","value":"group3"}]"#);
    let p: upstream::BootConfiguration = decoded(h.api.send(r).await.ok());
    assert_eq!(p.spec.groups, ["compute", "group3"]);
    assert_eq!(p.spec.params, "ip=dhcp");
    let r = h
        .api
        .request(Method::PATCH, &format!("{BCONF}/{uid}"))
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"params":null,"priority":7}"#);
    let p: upstream::BootConfiguration = decoded(h.api.send(r).await.ok());
    assert_eq!((p.spec.params.as_str(), p.spec.priority), ("", 7));

    // boot config delete <uid> <uid>.
    for u in [&uid, &other.metadata.uid] {
        let d: upstream::DeleteResponse = decoded(
            ochami(&h, Method::DELETE, &format!("{BCONF}/{u}"), None, true)
                .await
                .ok(),
        );
        assert_eq!(d.message, "BootConfiguration deleted successfully");
        assert_eq!(&d.uid, u);
    }
    let list: Vec<upstream::BootConfiguration> =
        decoded(ochami(&h, Method::GET, BCONF, None, true).await.ok());
    assert!(list.is_empty());
    assert_eq!(h.api.get_json(BP).await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_store_behind_both_boot_apis() {
    let h = cluster().await;
    add_group(&h, "compute", &[0, 1]).await;
    // Written through BSS: listed by boot-service, served by its bootscript.
    h.api
        .post(
            BP,
            &json!({"hosts": [xname(0)], "kernel": KERNEL, "params": PARAMS}),
        )
        .await
        .status(201);
    let list = h.api.get_json(BCONF).await;
    let item = &list[0];
    assert_eq!(item["spec"]["hosts"], json!([xname(0)]), "{list}");
    assert_eq!(item["kind"], "BootConfiguration");
    let uid = item["metadata"]["uid"].as_str().unwrap().to_string();
    let s = script(
        h.node
            .get(&format!("{BS}/bootscript?host={}", xname(0)))
            .await,
    );
    assert_eq!(
        masked(&s),
        via_boot_service(&expected_script(0, KERNEL, None, PARAMS))
    );
    // Its retries chain back to it, counted and bounded as on BSS's route.
    let s = script(
        h.node
            .get(&format!("{BS}/bootscript?host={}&retry=99", xname(0)))
            .await,
    );
    assert!(
        s.contains(&format!("{BASE}{BS}/bootscript?mac={}&retry=100\n", mac(0))),
        "{s}"
    );
    h.node
        .get(&format!("{BS}/bootscript?host={}&retry=x", xname(0)))
        .await
        .problem(400);
    // A node's own BSS binding wins over a group selector; the group's
    // other member gets the group's configuration.
    h.api
        .post(
            BCONF,
            &json!({"metadata": {"name": "compute"}, "spec": {"groups": ["compute"], "kernel": "http://k/group"}}),
        )
        .await
        .status(201);
    let s = script(h.node.get(&format!("{SCRIPT}?mac={}", mac(0))).await);
    assert_eq!(kernel_of(&s), KERNEL);
    let s = script(h.node.get(&format!("{SCRIPT}?mac={}", mac(1))).await);
    assert_eq!(kernel_of(&s), "http://k/group");
    // BSS lists the boot-service configuration, its groups among its hosts.
    let rows = all_params(&h).await;
    assert!(
        rows.iter()
            .any(|r| r["hosts"] == json!(["compute"]) && r["kernel"] == "http://k/group"),
        "{rows:?}"
    );
    let bp = h
        .api
        .get_json(&format!("{BS}/bootparameters?host=compute"))
        .await;
    assert_eq!(bp["boot-parameters"][0]["kernel"], "http://k/group", "{bp}");
    // Edited through boot-service, the BSS record keeps its binding rule.
    h.api
        .put(
            &format!("{BCONF}/{uid}"),
            &json!({"spec": {"hosts": [xname(0), xname(1)], "kernel": "http://k/both"}}),
        )
        .await
        .ok();
    let got = params_for(&h, &format!("name={}", xname(1))).await;
    assert_eq!(got[0]["kernel"], "http://k/both");
    h.api
        .post(BP, &json!({"hosts": [xname(2)], "kernel": KERNEL}))
        .await
        .status(201);
    let before = h.generation();
    let p = h
        .api
        .put(
            &format!("{BCONF}/{uid}"),
            &json!({"spec": {"hosts": [xname(2)], "kernel": "http://k/x"}}),
        )
        .await
        .problem(409);
    assert!(p["error"].is_string(), "{p}");
    assert_eq!(h.generation(), before);
    // Deleted through BSS, gone from boot-service.
    h.api
        .call(
            Method::DELETE,
            BP,
            Some(&json!({"hosts": [xname(0), xname(1)]})),
        )
        .await
        .ok();
    h.api.get(&format!("{BCONF}/{uid}")).await.problem(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_service_errors_versions_and_slashes() {
    let h = cluster().await;
    let good =
        json!({"metadata": {"name": "a"}, "spec": {"hosts": ["x1000c0s0*"], "kernel": "/k"}});
    // Trailing slashes are served directly (no redirect).
    let r = h.api.post(&format!("{BCONF}/"), &good).await.status(201);
    let uid = r.json()["metadata"]["uid"].as_str().unwrap().to_string();
    h.api.get(&format!("{BCONF}/{uid}/")).await.ok();
    let before = h.generation();
    for (body, want) in [
        (
            json!({"metadata": {"name": "x"}, "spec": {"kernel": ""}}),
            400,
        ),
        (
            json!({"metadata": {"name": "x"}, "spec": {"kernel": "ftp://k"}}),
            400,
        ),
        (
            json!({"metadata": {"name": "x"}, "spec": {"kernel": "/k", "macs": ["zz"]}}),
            400,
        ),
        (
            json!({"metadata": {"name": "x"}, "spec": {"kernel": "/k", "hosts": ["x1000c0s0b0"]}}),
            400,
        ),
        (
            json!({"metadata": {"name": "x"}, "spec": {"kernel": "/k", "priority": 101}}),
            400,
        ),
        (json!({"metadata": {"name": "x"}}), 400),
        (json!([1]), 400),
    ] {
        let p = h.api.post(BCONF, &body).await.problem(want);
        assert!(
            p["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}: {p}"
        );
    }
    let p = h
        .api
        .get(&format!("{BCONF}/bootconfiguration-00000000"))
        .await
        .problem(404);
    assert_eq!(p["error"], p["detail"]);
    // A JSON Patch that cannot apply is 422; nothing changes.
    let r = h
        .api
        .request(Method::PATCH, &format!("{BCONF}/{uid}"))
        .header("Content-Type", "application/json-patch+json")
        .body(r#"[{"op":"remove","path":"/nope"}]"#);
    h.api.send(r).await.problem(422);
    assert_eq!(h.generation(), before);
    // Unknown versions are 406 with upstream's fields.
    let r = h
        .api
        .request(Method::GET, BCONF)
        .header("Accept", "application/json;version=v2");
    let r = h.api.send(r).await.status(406);
    let v = r.json();
    assert_eq!(
        (&v["error"], &v["requested"], &v["supported"]),
        (&json!("Unsupported version"), &json!("v2"), &json!(["v1"]))
    );
    // Resources need a token; health, bootscript and service routes do not.
    h.anon.get(BCONF).await.problem(401);
    h.anon.get(&format!("{BS}/nodes")).await.problem(401);
    h.anon.get(&format!("{BS}/health")).await.ok();
    h.anon.get(&format!("{BS}/service/status")).await.ok();
    h.anon.get(&format!("{BS}/service/version")).await.ok();
    // Bootscript: no identifier is 400, an unknown node gets a script.
    h.node.get(&format!("{BS}/bootscript")).await.problem(400);
    let s = script(
        h.node
            .get(&format!("{BS}/bootscript?mac=02:00:00:00:00:99"))
            .await,
    );
    assert!(s.starts_with("#!ipxe") && s.contains("reboot"), "{s}");
    // The glob selects nodes x1000c0s0*: x1000c0s0b0n0 boots /k.
    let s = script(h.node.get(&format!("{BS}/bootscript?nid=1")).await);
    assert_eq!(kernel_of(&s), "/k");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_service_nodes_and_bmcs() {
    let mut h = cluster().await;
    add_group(&h, "compute", &[0]).await;
    // Inventory nodes are listed as views, with groups and boot MAC.
    let nodes = h.api.get_json(&format!("{BS}/nodes")).await;
    let n0 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["spec"]["xname"] == xname(0))
        .unwrap_or_else(|| panic!("{nodes}"))
        .clone();
    assert_eq!(n0["spec"]["bootMac"], mac(0));
    assert_eq!(n0["spec"]["groups"], json!(["compute"]));
    assert_eq!(n0["spec"]["nid"], 1);
    let view = n0["metadata"]["uid"].as_str().unwrap();
    h.api.get(&format!("{BS}/nodes/{view}")).await.ok();
    h.api
        .delete(&format!("{BS}/nodes/{view}"))
        .await
        .problem(409);
    // A posted node outside the inventory boots by selection.
    let r = h
        .api
        .post(
            &format!("{BS}/nodes"),
            &json!({"metadata": {"name": "n9"}, "spec": {"xname": "x9c0s0b0n0", "nid": 99, "bootMAC": "AA:BB:CC:DD:EE:FF", "groups": ["compute"]}}),
        )
        .await
        .status(201);
    let node = r.json();
    assert_eq!(node["spec"]["bootMac"], "aa:bb:cc:dd:ee:ff", "{node}");
    assert_eq!(node["status"], json!({}));
    h.api
        .post(BCONF, &json!({"metadata": {"name": "g"}, "spec": {"groups": ["compute"], "kernel": "http://k/g"}}))
        .await
        .status(201);
    let s = script(
        h.node
            .get(&format!("{BS}/bootscript?mac=aa:bb:cc:dd:ee:ff"))
            .await,
    );
    assert_eq!(kernel_of(&s), "http://k/g");
    assert!(s.contains("xname=x9c0s0b0n0 nid=99"), "{s}");
    // Posted resources and selecting configurations survive a restart.
    h.restart().await;
    let s = script(
        h.node
            .get(&format!("{BS}/bootscript?host=x9c0s0b0n0"))
            .await,
    );
    assert_eq!(kernel_of(&s), "http://k/g");
    let s = script(h.node.get(&format!("{SCRIPT}?mac={}", mac(0))).await);
    assert_eq!(kernel_of(&s), "http://k/g");
    h.api
        .post(
            &format!("{BS}/nodes"),
            &json!({"metadata": {"name": "bad"}, "spec": {"xname": "x1"}}),
        )
        .await
        .problem(400);
    // BMCs: status defaults to ready=false; status PUT/PATCH leave the spec.
    let r = h
        .api
        .post(
            &format!("{BS}/bmcs"),
            &json!({"metadata": {"name": "b"}, "spec": {"xname": "x9c0s0b0", "interface": {"mac": "de:ca:fc:0f:ee:ee", "ip": "172.16.0.101"}}}),
        )
        .await
        .status(201);
    let b = r.json();
    assert_eq!(b["status"], json!({"ready": false}));
    let uid = b["metadata"]["uid"].as_str().unwrap();
    assert!(uid.starts_with("bmc-"), "{uid}");
    let r = h
        .api
        .put(
            &format!("{BS}/bmcs/{uid}/status"),
            &json!({"ready": true, "phase": "Up"}),
        )
        .await
        .ok();
    assert_eq!(r.json()["status"], json!({"ready": true, "phase": "Up"}));
    let r = h
        .api
        .patch(
            &format!("{BS}/bmcs/{uid}/status"),
            &json!({"message": "ok"}),
        )
        .await
        .ok();
    let v = r.json();
    assert_eq!(v["status"]["message"], "ok");
    assert_eq!(v["spec"]["interface"]["ip"], "172.16.0.101");
    assert_eq!(
        h.api
            .get_json(&format!("{BS}/bmcs"))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let d = h.api.delete(&format!("{BS}/bmcs/{uid}")).await.ok().json();
    assert_eq!(d["message"], "BMC deleted successfully");
    h.api.delete(&format!("{BS}/bmcs/{uid}")).await.problem(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_service_bootparameters_adapter() {
    let h = cluster().await;
    let bp = &format!("{BS}/bootparameters");
    // POST: NIDs are strings here; a number is refused and changes nothing.
    let before = h.generation();
    h.api
        .post(bp, &json!({"nids": [3], "kernel": KERNEL}))
        .await
        .problem(400);
    assert_eq!(h.generation(), before);
    // cloud-init is kept as written, but must be an object: BSS clients
    // read it back and decode one.
    h.api
        .post(
            bp,
            &json!({"nids": ["3"], "kernel": KERNEL, "cloud-init": 5}),
        )
        .await
        .problem(400);
    assert_eq!(h.generation(), before);
    let r = h
        .api
        .post(
            bp,
            &json!({"macs": [mac(2)], "nids": ["3"], "kernel": KERNEL, "params": PARAMS, "cloud-init": {"a": 1}}),
        )
        .await
        .status(201)
        .json();
    let item = &r["boot-parameters"][0];
    assert_eq!(item["nids"], json!(["3"]), "{r}");
    assert_eq!(item["cloud-init"], json!({"a": 1}));
    assert_eq!(
        item["meta"]["comment"],
        "Converted from modern BootConfiguration"
    );
    let list = h.api.get_json(BCONF).await;
    assert_eq!(
        list[0]["metadata"]["name"], "legacy-52-54-00-00-00-03",
        "{list}"
    );
    // It selects node 2 (MAC 100 + NID 75) for both boot APIs.
    let s = script(h.node.get(&format!("{SCRIPT}?nid=3")).await);
    assert_eq!(kernel_of(&s), KERNEL);
    // PUT rewrites it; GET filters; DELETE takes the query.
    h.api
        .put(bp, &json!({"nids": ["3"], "kernel": "http://k/2"}))
        .await
        .ok();
    let got = h.api.get_json(&format!("{bp}?nid=3")).await;
    assert_eq!(got["boot-parameters"][0]["kernel"], "http://k/2", "{got}");
    assert_eq!(got["boot-parameters"][0]["macs"], json!([]), "{got}");
    h.api
        .put(bp, &json!({"nids": ["9"], "kernel": "/k"}))
        .await
        .problem(404);
    h.api.delete(bp).await.problem(400);
    h.api.delete(&format!("{bp}?nid=9")).await.problem(404);
    let gone = h.api.delete(&format!("{bp}?nid=3")).await.ok().json();
    assert_eq!(gone["boot-parameters"].as_array().map(Vec::len), Some(1));
    assert_eq!(h.api.get_json(bp).await, json!({"boot-parameters": []}));
}

/// Every `/boot-service` operation of the served document, with hostile
/// bodies, path values and headers: never a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_service_routes_never_answer_a_server_error() {
    let h = cluster().await;
    add_group(&h, "compute", &[0]).await;
    let uid = h
        .api
        .post(
            BCONF,
            &json!({"metadata": {"name": "g"}, "spec": {"groups": ["compute"], "kernel": "/k"}}),
        )
        .await
        .status(201)
        .json()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = h.anon.get_json("/openapi.json").await;
    let paths = doc["paths"].as_object().expect("paths");
    let bodies: [&[u8]; 9] = [
        b"",
        b"{}",
        b"[]",
        b"null",
        b"not json",
        b"{\"metadata\":{\"name\":7},\"spec\":{}}",
        b"{\"spec\":{\"kernel\":\"/k\",\"nids\":[\"x\"],\"groups\":[1]}}",
        b"[{\"op\":\"move\",\"from\":\"/kernel\",\"path\":\"/kernel/x\"}]",
        b"{\"spec\":{\"xname\":\"x1c0s0b0n0\",\"interfaces\":[{\"mac\":1}]},\"status\":5}",
    ];
    let mut seen = 0;
    for (path, ops) in paths.iter().filter(|(p, _)| p.starts_with(BS)) {
        for method in ops.as_object().expect("operations").keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            for id in [uid.as_str(), "node-x1000c0s0b0n0", "%2e%2e", "bmc-00000000"] {
                let concrete = path.replace("{uid}", id);
                for q in [
                    "",
                    "?host=x&mac=zz&nid=-1",
                    "?nid=99999999999999999999&name=,",
                ] {
                    for body in bodies {
                        for ct in [
                            "application/json",
                            "application/json-patch+json",
                            "application/merge-patch+json;version=v1",
                        ] {
                            let r = h
                                .api
                                .request(m.clone(), &format!("{concrete}{q}"))
                                .header("Content-Type", ct)
                                .body(body.to_vec());
                            let r = h.api.send(r).await;
                            assert!(r.status < 500, "{}: {} {}", r.what, r.status, r.text());
                            seen += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(seen > 1000, "{seen}");
}
