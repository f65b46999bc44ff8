//! The API contract is the checked-in `openapi/openapi.json`: any change to
//! the served routes shows up there, in review.
//!
//! After an intended change, regenerate it with
//! `UPDATE_GOLDEN=1 cargo test --test openapi` and commit the result.
//!
//! A new route needs a line in the schema table (`io()` in
//! src/http/routes.rs) naming what it takes and returns; the tests below
//! fail until it has one. The served document is exercised end to end by
//! `tests/schemathesis.sh` (schemathesis from PyPI; `.ci/run` installs it
//! and runs the script): no 5xx, only documented status codes, replies
//! matching their schemas.

use std::path::PathBuf;

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json")
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

#[test]
fn document_matches_the_checked_in_copy() {
    let generated = openchami::http::openapi::document_text();
    let path = golden();
    if update() {
        std::fs::write(&path, &generated).expect("write openapi/openapi.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated {
        let first = checked_in
            .lines()
            .zip(generated.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {}:\n  checked in: {a}\n  generated:  {b}", i + 1))
            .unwrap_or_else(|| "one is a prefix of the other".into());
        panic!(
            "{} is out of date ({first}).\nIf the API change is intended, run \
             `UPDATE_GOLDEN=1 cargo test --test openapi` and commit the file.",
            path.display()
        );
    }
}

#[test]
fn document_is_well_formed() {
    let doc: serde_json::Value =
        serde_json::from_str(&openchami::http::openapi::document_text()).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let mut ids = std::collections::HashSet::new();
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path}"
            );
            assert!(
                op["tags"].as_array().is_some_and(|t| t.len() == 1),
                "{method} {path}"
            );
            // Every path parameter is declared.
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            for seg in path.split('/') {
                if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    assert!(
                        declared.contains(&name),
                        "{method} {path}: {name} undeclared"
                    );
                }
            }
        }
    }
}

/// Operations whose success reply carries no body (a status only): liveness
/// and readiness probes, 501 placeholders, and writes that upstream answers
/// with a bare status.
const STATUS_ONLY: &[&str] = &[
    "GET /hsm/v2/service/liveness",
    "GET /hsm/v2/Inventory/Hardware",
    "GET /hsm/v2/Inventory/Hardware/{xname}",
    "GET /hsm/v2/Inventory/HardwareByFRU",
    "GET /hsm/v2/Inventory/HardwareByFRU/{fruid}",
    "GET /hsm/v2/Inventory/Discover",
    "GET /hsm/v2/Inventory/DiscoveryStatus",
    "GET /hsm/v2/Subscriptions/SCN",
    "GET /hsm/v2/locks/status",
    "GET /hsm/v2/sysinfo/powermaps",
    "POST /hsm/v2/State/Components",
    "PATCH /hsm/v2/State/Components/BulkStateData",
    "PATCH /hsm/v2/State/Components/BulkFlagOnly",
    "PATCH /hsm/v2/State/Components/BulkEnabled",
    "PATCH /hsm/v2/State/Components/BulkSoftwareStatus",
    "PATCH /hsm/v2/State/Components/BulkRole",
    "POST /boot/v1/hosts",
    "POST /cloud-init/admin/cluster-defaults",
    "POST /cloud-init/admin/groups",
    "PUT /cloud-init/admin/groups/{name}",
    "DELETE /cloud-init/admin/groups/{name}",
    "PATCH /hsm/v2/State/Components/BulkNID",
    "PUT /hsm/v2/State/Components/{xname}",
    "PATCH /hsm/v2/groups/{label}",
    "PUT /hsm/v2/groups/{label}/members",
    "PATCH /hsm/v2/partitions/{name}",
    "POST /boot/v1/bootparameters",
    "PUT /boot/v1/bootparameters",
    "PATCH /boot/v1/bootparameters",
    "DELETE /boot/v1/bootparameters",
    "POST /cloud-init/phone-home/{id}",
    "GET /power-control/v1/liveness",
    "GET /liveness",
    "GET /power-control/v1/readiness",
    "GET /readiness",
    "GET /power-control/v1/power-cap",
    "PATCH /power-control/v1/power-cap",
    "GET /power-cap",
    "PATCH /power-cap",
    "POST /power-control/v1/power-cap/snapshot",
    "POST /power-cap/snapshot",
    "GET /power-control/v1/power-cap/{id}",
    "GET /power-cap/{id}",
    "GET /hsm/v2/Inventory/RedfishEndpoints/Query/{xname}",
    "POST /metadata-service/phone-home/{id}",
    "GET /remote-console/liveness",
    "GET /remote-console/readiness",
    "GET /remote-console/consoles/{xname}",
];

/// Operations whose body is opaque to the document: iPXE scripts,
/// cloud-init YAML, PEM certificates, Prometheus text, boot artifacts and
/// the form-encoded phone-home and OAuth token requests. Each is a
/// `type: string`.
const OPAQUE: &[&str] = &[
    "GET /healthz",
    "GET /ca/root.pem",
    "GET /roots.pem",
    "GET /metrics",
    "GET /boot/v1/bootscript",
    "GET /artifacts/{*path}",
    "GET /boot-service/bootscript",
    "GET /cloud-init/meta-data",
    "GET /cloud-init/user-data",
    "GET /cloud-init/vendor-data",
    "GET /cloud-init/{group}",
    "GET /cloud-init/admin/impersonation/{id}/meta-data",
    "GET /cloud-init/admin/impersonation/{id}/user-data",
    "GET /cloud-init/admin/impersonation/{id}/vendor-data",
    "GET /cloud-init/admin/impersonation/{id}/{group}",
    "POST /cloud-init/phone-home/{id}",
    "POST /oauth/token",
    "POST /token",
    "POST /tokensmith/oauth/token",
    "GET /metadata-service/meta-data",
    "GET /metadata-service/user-data",
    "GET /metadata-service/vendor-data",
    "GET /metadata-service/network-config",
    "GET /metadata-service/{group}",
    "POST /metadata-service/phone-home/{id}",
];

/// Writes that take no body: the 501 power-capping placeholders.
const NO_BODY: &[&str] = &[
    "PATCH /power-control/v1/power-cap",
    "PATCH /power-cap",
    "POST /power-control/v1/power-cap/snapshot",
    "POST /power-cap/snapshot",
];

/// Every operation documents its success reply (or is listed as replying
/// with a status only) and, when it is a write, its request body; opaque
/// bodies are strings; every `$ref` resolves.
#[test]
fn every_operation_has_schemas() {
    let doc: serde_json::Value =
        serde_json::from_str(&openchami::http::openapi::document_text()).expect("JSON");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut missing = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let key = format!("{} {path}", method.to_uppercase());
            seen.insert(key.clone());
            let reply = &op["responses"]["2XX"]["content"];
            let body = &op["requestBody"]["content"];
            // Upstream routes answered with 501 take and return nothing.
            let placeholder = op["summary"] == openchami::http::routes::NOT_IMPLEMENTED;
            let status_only = placeholder || STATUS_ONLY.contains(&key.as_str());
            match (reply.as_object(), status_only) {
                (None, false) => missing.push(format!("{key}: no reply schema")),
                (Some(_), true) => missing.push(format!("{key}: listed as status-only")),
                _ => {}
            }
            let write = matches!(method.as_str(), "post" | "put" | "patch");
            if write && body.is_null() && !placeholder && !NO_BODY.contains(&key.as_str()) {
                missing.push(format!("{key}: no request body schema"));
            }
            let mut has_opaque = false;
            for content in [reply, body] {
                for (media, m) in content.as_object().into_iter().flatten() {
                    let json = media.contains("json");
                    let opaque = OPAQUE.contains(&key.as_str());
                    if !json && !opaque {
                        missing.push(format!("{key}: {media} is not in the opaque list"));
                    }
                    if !json && m["schema"]["type"] != "string" {
                        missing.push(format!("{key}: opaque body is not a string"));
                    }
                    has_opaque |= !json;
                }
            }
            if OPAQUE.contains(&key.as_str()) && !has_opaque {
                missing.push(format!("{key}: listed as opaque, all bodies are JSON"));
            }
        }
    }
    for list in [STATUS_ONLY, OPAQUE, NO_BODY] {
        for key in list {
            assert!(seen.contains(*key), "allow-listed {key} is not a route");
        }
    }
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap_or_default();
        assert!(schemas.contains_key(name), "unresolved $ref {name}");
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    // Every line of the schema table names a route.
    for (key, _) in openchami::http::routes::io() {
        assert!(seen.contains(key), "schema table names no route: {key}");
    }
}

/// The JSON type a property schema allows (`null` aside), following
/// `$ref`s and `anyOf`/`oneOf` alternatives; `any` when unconstrained.
fn json_type(doc: &serde_json::Value, s: &serde_json::Value) -> String {
    if let Some(r) = s["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return json_type(doc, &doc["components"]["schemas"][name]);
    }
    for alt in ["anyOf", "oneOf"] {
        if let Some(a) = s[alt].as_array() {
            let types: Vec<String> = a
                .iter()
                .map(|x| json_type(doc, x))
                .filter(|t| t != "null")
                .collect();
            if let [t] = types.as_slice() {
                return t.clone();
            }
        }
    }
    match &s["type"] {
        serde_json::Value::String(t) => t.clone(),
        serde_json::Value::Array(a) => {
            let types: Vec<&str> = a
                .iter()
                .filter_map(|t| t.as_str())
                .filter(|t| *t != "null")
                .collect();
            types.join("|")
        }
        _ => "any".into(),
    }
}

/// Our schemas for the routes upstream also serves carry upstream's member
/// names and types. The expectations are an excerpt of upstream's swagger
/// documents, kept in tests/upstream/schemas.json with every known
/// difference listed and explained there.
#[test]
fn key_schemas_match_upstream() {
    let doc: serde_json::Value =
        serde_json::from_str(&openchami::http::openapi::document_text()).expect("JSON");
    let excerpt: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/upstream/schemas.json"),
        )
        .expect("tests/upstream/schemas.json"),
    )
    .expect("JSON");
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut wrong = Vec::new();
    for (upstream, want) in excerpt.as_object().expect("object") {
        if upstream.starts_with('_') {
            continue;
        }
        let ours_name = want["ours"].as_str().expect("ours");
        let ours = &doc["components"]["schemas"][ours_name];
        let Some(props) = ours["properties"].as_object() else {
            wrong.push(format!("{upstream}: no schema {ours_name} with properties"));
            continue;
        };
        let (extra, missing, wider) = (
            list(&want["extra"]),
            list(&want["missing"]),
            list(&want["wider"]),
        );
        for (member, ty) in want["members"].as_object().expect("members") {
            let ty = ty.as_str().expect("type");
            match props.get(member) {
                None if missing.contains(member) => {}
                None => wrong.push(format!("{upstream}.{member}: absent from {ours_name}")),
                Some(_) if missing.contains(member) => wrong.push(format!(
                    "{upstream}.{member}: now served, drop it from 'missing'"
                )),
                Some(p) => {
                    let got = json_type(&doc, p);
                    let ok =
                        got == ty || (wider.contains(member) && ty == "integer" && got == "number");
                    if !ok {
                        wrong.push(format!("{upstream}.{member}: {got}, upstream {ty}"));
                    }
                }
            }
        }
        for member in props.keys() {
            if want["members"].get(member).is_none() && !extra.contains(member) {
                wrong.push(format!(
                    "{ours_name}.{member}: not in upstream's {upstream}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
