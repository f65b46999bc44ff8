//! Every operation of the served API document, checked against an explicit
//! list of the routes that may be used without a token.
//!
//! The list below is written from the compatibility specification (§1 node
//! routes, §3.7 and §10 "Anonymous routes"), not derived from the route
//! table: making a route anonymous must be a decision recorded here, and a
//! route added to the table without a token requirement fails this test
//! until it is. Routes of services not yet served (BSS, cloud-init, PCS) are
//! listed already; an entry that matches no operation is harmless.

mod common;

use std::collections::BTreeMap;

use common::{Harness, Http, PROBLEM_JSON};
use reqwest::Method;
use serde_json::Value;

/// (method, path) pairs that are anonymous. In paths, `{}` stands for any
/// one path parameter and a trailing `/*` for any rest of the path.
const ANONYMOUS: &[(&str, &str)] = &[
    // Appliance (§1, §10).
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/.well-known/*"),
    ("GET", "/ca/root.pem"),
    ("GET", "/roots.pem"),
    // SMD (§3.7).
    ("GET", "/hsm/v2/service/*"),
    ("GET", "/hsm/v2/State/Components"),
    ("GET", "/hsm/v2/Inventory/EthernetInterfaces"),
    // BSS (§4.2, §4.5, §4.6): node routes and the open reads. `dumpstate`
    // (every boot configuration at once) needs a token: a deliberate
    // difference from upstream.
    ("GET", "/boot/v1/bootscript"),
    ("GET", "/boot/v1/bootparams"),
    ("GET", "/boot/v1/hosts"),
    ("GET", "/boot/v1/endpoint-history"),
    ("GET", "/boot/v1/service/*"),
    // boot-service (v0.2 contract §3.1): health, node route, service info.
    ("GET", "/boot-service/health"),
    ("GET", "/boot-service/bootscript"),
    ("GET", "/boot-service/service/*"),
    // cloud-init (§5.1).
    ("GET", "/cloud-init/meta-data"),
    ("GET", "/cloud-init/user-data"),
    ("GET", "/cloud-init/vendor-data"),
    ("GET", "/cloud-init/{}"),
    ("POST", "/cloud-init/phone-home/{}"),
    ("GET", "/cloud-init/version"),
    ("GET", "/cloud-init/openapi.json"),
    // TokenSmith's token exchange (v2 contract §6.2): the bootstrap token is the credential.
    ("POST", "/oauth/token"),
    ("POST", "/token"),
    ("POST", "/tokensmith/oauth/token"),
    // metadata-service (v2 contract §4.1): node routes and health.
    ("GET", "/metadata-service/health"),
    ("GET", "/metadata-service/meta-data"),
    ("GET", "/metadata-service/user-data"),
    ("GET", "/metadata-service/vendor-data"),
    ("GET", "/metadata-service/network-config"),
    ("GET", "/metadata-service/{}"),
    ("POST", "/metadata-service/phone-home/{}"),
    // Boot artifacts (§1).
    ("GET", "/artifacts/*"),
    // PCS (§6.1), under its prefix and at the root.
    ("GET", "/power-control/v1/liveness"),
    ("GET", "/power-control/v1/readiness"),
    ("GET", "/power-control/v1/health"),
    ("GET", "/liveness"),
    ("GET", "/readiness"),
    ("GET", "/health"),
    // remote-console (v2 contract §5.1): probes and health; consoles need a token.
    ("GET", "/remote-console/liveness"),
    ("GET", "/remote-console/readiness"),
    ("GET", "/remote-console/health"),
    // The status page's HTML, scripts and style sheet (no data), and its
    // sign-in, where the token in the body is the credential. Its data
    // routes (/ui/api/*) need a token or its session.
    ("GET", "/ui"),
    ("GET", "/ui/static/*"),
    ("POST", "/ui/api/session"),
];

/// Does the document path `path` (with `{name}` parameters) fall under the
/// list entry `pattern`?
fn pattern_covers(pattern: &str, path: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix("/*") {
        return path.starts_with(&format!("{prefix}/"));
    }
    let a: Vec<&str> = pattern.split('/').collect();
    let b: Vec<&str> = path.split('/').collect();
    a.len() == b.len()
        && a.iter().zip(&b).all(|(p, s)| {
            if *p == "{}" {
                s.starts_with('{') && s.ends_with('}')
            } else {
                p == s
            }
        })
}

fn expected_anonymous(method: &str, path: &str) -> bool {
    let method = if method == "HEAD" { "GET" } else { method };
    ANONYMOUS
        .iter()
        .any(|(m, p)| m.eq_ignore_ascii_case(method) && pattern_covers(p, path))
}

/// Would the document path `template` route the concrete `path`?
fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    for (i, seg) in t.iter().enumerate() {
        if seg.starts_with("{*") {
            return p.len() > i;
        }
        match p.get(i) {
            None => return false,
            Some(s) if seg.starts_with('{') && seg.ends_with('}') => {
                if s.is_empty() {
                    return false;
                }
            }
            Some(s) if s == seg => {}
            Some(_) => return false,
        }
    }
    t.len() == p.len()
}

/// A plausible value for a path parameter, by name.
fn sample(name: &str) -> &'static str {
    let n = name.trim_start_matches('*').to_ascii_lowercase();
    match n.as_str() {
        "xname" | "component" | "componentid" => "x1000c0s0b0n0",
        "label" | "group" => "compute",
        "name" | "partition" => "p1",
        "nid" => "1",
        "key" => "State",
        "field" => "StateData",
        "ip" | "ipaddr" | "ipaddress" => "172.16.0.1",
        "mac" | "macaddr" => "525400beef01",
        "path" | "file" | "rest" => "vmlinuz",
        _ => "x1000c0s0b0n0",
    }
}

fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => sample(name).to_string(),
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

struct Op {
    method: String,
    path: String,
    security: Value,
    listeners: Vec<String>,
}

fn operations(doc: &Value) -> Vec<Op> {
    let mut ops = Vec::new();
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            if !matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
            ) {
                continue;
            }
            ops.push(Op {
                method: method.to_ascii_uppercase(),
                path: path.clone(),
                security: op["security"].clone(),
                listeners: op["x-listeners"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    ops
}

async fn served_document(h: &Harness) -> Value {
    let doc = h.anon.get_json("/openapi.json").await;
    assert!(
        doc["paths"].as_object().is_some_and(|p| p.len() > 10),
        "the document lists the routes"
    );
    doc
}

/// The router's own 404 (no route matched), as opposed to a handler's 404
/// for something that does not exist.
fn unrouted(r: &common::Resp) -> bool {
    r.status == 404 && r.text().contains("no route for")
}

async fn send(c: &Http, method: &str, path: &str) -> common::Resp {
    let m = Method::from_bytes(method.as_bytes()).expect("method");
    let mut r = c.request(m.clone(), path);
    if matches!(m, Method::POST | Method::PUT | Method::PATCH) {
        r = r
            .header("content-type", "application/json")
            .body("{}".as_bytes().to_vec());
    }
    c.send(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_needs_a_token_unless_listed() {
    let h = Harness::start().await;
    let doc = served_document(&h).await;
    let ops = operations(&doc);
    let mut failures = Vec::new();
    let mut anonymous_seen = 0;
    for op in &ops {
        let url = concrete(&op.path);
        let before = h.generation();
        let r = send(&h.anon, &op.method, &url).await;
        let anonymous = expected_anonymous(&op.method, &op.path);
        if anonymous {
            anonymous_seen += 1;
            if r.status == 401 || r.status == 403 {
                failures.push(format!(
                    "{} {} is anonymous but answered {} without a token",
                    op.method, op.path, r.status
                ));
            }
        } else {
            if r.status != 401 {
                failures.push(format!(
                    "{} {} ({url}) answered {} without a token, want 401: {}",
                    op.method,
                    op.path,
                    r.status,
                    r.text()
                ));
            } else {
                if r.header("www-authenticate") != Some("Bearer") {
                    failures.push(format!(
                        "{} {}: 401 without WWW-Authenticate: Bearer",
                        op.method, op.path
                    ));
                }
                if !r.content_type().starts_with(PROBLEM_JSON) {
                    failures.push(format!(
                        "{} {}: 401 is not problem+json",
                        op.method, op.path
                    ));
                }
            }
            if h.generation() != before {
                failures.push(format!(
                    "{} {} changed the inventory without a token",
                    op.method, op.path
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization mismatches:\n{}",
        failures.join("\n")
    );
    assert!(
        anonymous_seen >= 8,
        "the anonymous routes are in the document"
    );

    // With a token, no operation answers 401 (the token itself is fine).
    for op in &ops {
        let r = send(&h.api, &op.method, &concrete(&op.path)).await;
        assert_ne!(
            r.status, 401,
            "{} {} refused a valid token",
            op.method, op.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_security_agrees_with_the_list() {
    let h = Harness::start().await;
    let doc = served_document(&h).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let mut failures = Vec::new();
    for op in operations(&doc) {
        let anonymous = expected_anonymous(&op.method, &op.path);
        let documented_anonymous = match &op.security {
            Value::Array(a) if a.is_empty() => true,
            Value::Array(a) if a.iter().any(|s| s.get("bearer").is_some()) => false,
            other => {
                failures.push(format!(
                    "{} {}: security {other} is neither [] nor bearer",
                    op.method, op.path
                ));
                continue;
            }
        };
        if anonymous != documented_anonymous {
            failures.push(format!(
                "{} {}: document says {}, the list says {}",
                op.method,
                op.path,
                if documented_anonymous {
                    "anonymous"
                } else {
                    "token"
                },
                if anonymous { "anonymous" } else { "token" },
            ));
        }
        if op.listeners.iter().any(|l| l == "node") && !anonymous {
            failures.push(format!(
                "{} {} is served on the node listener but needs a token",
                op.method, op.path
            ));
        }
        if !op.listeners.iter().any(|l| l == "api") {
            failures.push(format!(
                "{} {} is not on the API listener",
                op.method, op.path
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_listener_serves_only_node_routes() {
    let h = Harness::start().await;
    let doc = served_document(&h).await;
    let ops = operations(&doc);
    // Document paths served on the node listener, with their methods.
    let mut node_paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for op in &ops {
        if op.listeners.iter().any(|l| l == "node") {
            node_paths
                .entry(op.path.clone())
                .or_default()
                .push(op.method.clone());
        }
    }
    assert!(
        node_paths.contains_key("/healthz") && node_paths.contains_key("/ca/root.pem"),
        "{node_paths:?}"
    );
    let mut failures = Vec::new();
    for op in &ops {
        let url = concrete(&op.path);
        let r = send(&h.node, &op.method, &url).await;
        if r.status == 401 {
            failures.push(format!(
                "{} {} answered 401 on the node listener",
                op.method, op.path
            ));
        }
        if op.listeners.iter().any(|l| l == "node") {
            if unrouted(&r) {
                failures.push(format!(
                    "{} {} is marked for the node listener but is not routed there",
                    op.method, op.path
                ));
            }
            continue;
        }
        // Not a node route: unless some node route could take the URL, it
        // is not there at all.
        let shadowed = node_paths.keys().any(|t| template_matches(t, &url));
        if shadowed {
            if (200..300).contains(&r.status) && !node_paths.contains_key(&op.path) {
                failures.push(format!(
                    "{} {} ({url}) answered {} on the node listener",
                    op.method, op.path, r.status
                ));
            }
            continue;
        }
        if r.status != 404 || !r.content_type().starts_with(PROBLEM_JSON) {
            failures.push(format!(
                "{} {} ({url}) answered {} {:?} on the node listener, want a 404 problem",
                op.method,
                op.path,
                r.status,
                r.content_type()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // And node routes are served the same on the API listener, without a
    // token.
    for (path, methods) in &node_paths {
        for m in methods {
            let r = send(&h.anon, m, &concrete(path)).await;
            assert_ne!(r.status, 401, "{m} {path} on the API listener");
            assert!(
                !unrouted(&r),
                "{m} {path} is not routed on the API listener"
            );
        }
    }
}

#[test]
fn list_patterns() {
    assert!(pattern_covers(
        "/hsm/v2/service/*",
        "/hsm/v2/service/values/{key}"
    ));
    assert!(!pattern_covers("/hsm/v2/service/*", "/hsm/v2/service"));
    assert!(pattern_covers("/cloud-init/{}", "/cloud-init/{group}"));
    assert!(!pattern_covers(
        "/cloud-init/{}",
        "/cloud-init/admin/groups"
    ));
    assert!(!pattern_covers("/cloud-init/{}", "/cloud-init/meta"));
    assert!(pattern_covers("/healthz", "/healthz"));
    assert!(!pattern_covers(
        "/hsm/v2/State/Components",
        "/hsm/v2/State/Components/{xname}"
    ));
    assert!(expected_anonymous("HEAD", "/healthz"));
    assert!(!expected_anonymous("POST", "/hsm/v2/State/Components"));
    assert!(template_matches(
        "/cloud-init/{group}",
        "/cloud-init/version"
    ));
    assert!(!template_matches("/cloud-init/{group}", "/cloud-init/a/b"));
    assert!(template_matches("/artifacts/{*path}", "/artifacts/a/b"));
    assert_eq!(
        concrete("/hsm/v2/groups/{label}/members/{xname}"),
        "/hsm/v2/groups/compute/members/x1000c0s0b0n0"
    );
}
