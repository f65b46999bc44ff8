//! The API contract is the checked-in `openapi/openapi.json`: any change to
//! the served routes shows up there, in review.
//!
//! After an intended change, regenerate it with
//! `UPDATE_GOLDEN=1 cargo test --test openapi` and commit the result.
//!
//! A new route needs a line in the schema table (`io()` in
//! src/http/routes.rs) naming what it takes, returns and which parameters
//! it reads; the tests below fail until it has one, and fail on open
//! objects that do not say they are free-form, on untyped parameters, on
//! drift from upstream's member names and types, and on JSON-built replies
//! that do not match their schemas. The served document is exercised end to end by
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
    "GET /hsm/v2/Inventory/RedfishEndpoints/Query/{xname}",
    "POST /metadata-service/phone-home/{id}",
    "PATCH /hsm/v2/State/Components/{xname}/{field}",
    "GET /remote-console/liveness",
    "GET /remote-console/readiness",
    "GET /remote-console/consoles/{xname}",
    "DELETE /ui/api/session",
];

/// Operations whose body is opaque to the document: iPXE scripts,
/// cloud-init YAML, PEM certificates, Prometheus text, boot artifacts,
/// the form-encoded phone-home, and the status page's files, event stream
/// and console text. Each is a `type: string`. (A form body
/// documented field by field, like `/oauth/token`'s, is typed.)
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
    "GET /metadata-service/meta-data",
    "GET /metadata-service/user-data",
    "GET /metadata-service/vendor-data",
    "GET /metadata-service/network-config",
    "GET /metadata-service/{group}",
    "POST /metadata-service/phone-home/{id}",
    "GET /ui",
    "GET /ui/static/{file}",
    "GET /ui/api/events",
    "GET /ui/api/nodes/{xname}/console",
];

/// Writes that take no body: BSS's `POST hosts` (upstream's "refresh from
/// HSM" trigger).
const NO_BODY: &[&str] = &["POST /boot/v1/hosts"];

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
                    let form = media == "application/x-www-form-urlencoded"
                        && m["schema"]["type"] != "string";
                    let json = media.contains("json") || form;
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

/// Whether a schema leaves its members open: an object (or anything)
/// with no `properties`, no typed `additionalProperties` and no
/// alternatives.
fn is_open(s: &serde_json::Value) -> bool {
    if s == &serde_json::Value::Bool(true) {
        return true;
    }
    let Some(o) = s.as_object() else {
        return false;
    };
    let structured = [
        "$ref",
        "properties",
        "anyOf",
        "oneOf",
        "allOf",
        "enum",
        "const",
        "items",
    ]
    .iter()
    .any(|k| o.contains_key(*k));
    let typed_values = o
        .get("additionalProperties")
        .is_some_and(|a| a.is_object() && !a.as_object().is_some_and(|m| m.is_empty()));
    let object_or_any = match o.get("type") {
        None => true,
        Some(serde_json::Value::String(t)) => t == "object",
        Some(serde_json::Value::Array(a)) => a.iter().any(|t| t == "object"),
        _ => false,
    };
    object_or_any && !structured && !typed_values
}

/// Walks every schema position under `s`, collecting open schemas that do
/// not say, in their description, that they are free-form.
fn open_schemas(s: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    if is_open(s) {
        let said = s["description"]
            .as_str()
            .is_some_and(|d| d.to_ascii_lowercase().contains("free-form"));
        if !said {
            out.push(at.to_string());
        }
        return;
    }
    let Some(o) = s.as_object() else { return };
    if let Some(props) = o.get("properties").and_then(|p| p.as_object()) {
        for (k, v) in props {
            open_schemas(v, &format!("{at}.{k}"), out);
        }
    }
    for k in ["items", "additionalProperties"] {
        if let Some(v) = o.get(k).filter(|v| v.is_object()) {
            open_schemas(v, &format!("{at}[{k}]"), out);
        }
    }
    for k in ["anyOf", "oneOf", "allOf"] {
        for (n, v) in o
            .get(k)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            // `null` alternatives of an Option are not open objects.
            if v["type"] != "null" {
                open_schemas(v, &format!("{at}.{k}[{n}]"), out);
            }
        }
    }
}

/// Every request and reply is typed member by member; the only open
/// objects are data that belongs to the caller (cloud-init documents,
/// resource status, Redfish data, the OpenAPI document's own parts), and
/// each says so in its description.
#[test]
fn open_objects_are_declared_free_form() {
    let doc: serde_json::Value =
        serde_json::from_str(&openchami::http::openapi::document_text()).expect("JSON");
    let mut open = Vec::new();
    for (name, s) in doc["components"]["schemas"].as_object().expect("schemas") {
        open_schemas(s, &format!("#/components/schemas/{name}"), &mut open);
    }
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let key = format!("{} {path}", method.to_uppercase());
            for (what, content) in [
                ("reply", &op["responses"]["2XX"]["content"]),
                ("body", &op["requestBody"]["content"]),
            ] {
                for (media, m) in content.as_object().into_iter().flatten() {
                    open_schemas(&m["schema"], &format!("{key} {what} {media}"), &mut open);
                }
            }
        }
    }
    assert!(
        open.is_empty(),
        "open objects without a free-form description:\n{}",
        open.join("\n")
    );
}

/// Every parameter is typed: path parameters declared, query parameters
/// with a schema whose enumerations are not empty, and none repeated.
#[test]
fn parameters_are_typed() {
    let doc: serde_json::Value =
        serde_json::from_str(&openchami::http::openapi::document_text()).expect("JSON");
    let mut wrong = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let key = format!("{} {path}", method.to_uppercase());
            let mut names = std::collections::HashSet::new();
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or_default();
                if !names.insert(name.to_ascii_lowercase()) {
                    wrong.push(format!("{key}: {name} twice"));
                }
                let s = &p["schema"];
                let one = if s["type"] == "array" { &s["items"] } else { s };
                if !one["type"].is_string() {
                    wrong.push(format!("{key}: {name} has no type"));
                }
                if one
                    .get("enum")
                    .is_some_and(|e| e.as_array().is_none_or(|a| a.is_empty()))
                {
                    wrong.push(format!("{key}: {name} has an empty enumeration"));
                }
                if p["in"] == "path" && s["type"] == "array" {
                    wrong.push(format!("{key}: path parameter {name} is a list"));
                }
            }
        }
    }
    // Typed where the handler parses: a table of samples.
    for (key, name, want) in [
        ("GET /hsm/v2/State/Components/ByNID/{nid}", "nid", "integer"),
        ("GET /hsm/v2/State/Components", "nid_start", "integer"),
        ("GET /hsm/v2/State/Components", "stateonly", "boolean"),
        ("GET /boot/v1/bootscript", "retry", "integer"),
        ("GET /power-status", "powerStateFilter", "string"),
        ("GET /discovery/v1/jobs/{id}", "bmcs", "boolean"),
    ] {
        let (method, path) = key.split_once(' ').expect("key");
        let p = doc["paths"][path][method.to_lowercase()]["parameters"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_default();
        if p["schema"]["type"] != want {
            wrong.push(format!("{key}: {name} is {}, want {want}", p["schema"]));
        }
    }
    let state = &doc["paths"]["/hsm/v2/State/Components"]["get"]["parameters"];
    let state = state
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "state"))
        .expect("state parameter");
    assert!(
        state["schema"]["items"]["enum"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "Ready")),
        "state lists HMS states: {state}"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
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

/// Where `value` breaks `schema` (a small JSON Schema subset: `$ref`,
/// `anyOf`/`oneOf`, `type`, `enum`, `properties`, `required`, `items`,
/// `additionalProperties`), as JSON pointers with the reason.
fn violations(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) -> Vec<String> {
    use serde_json::Value;
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return violations(doc, &doc["components"]["schemas"][name], value, at);
    }
    for alt in ["anyOf", "oneOf"] {
        if let Some(a) = schema[alt].as_array()
            && !a.iter().any(|s| violations(doc, s, value, at).is_empty())
        {
            return vec![format!("{at}: matches no alternative of {alt}")];
        }
    }
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let allowed: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(a) => a.iter().filter_map(|t| t.as_str()).collect(),
        _ => Vec::new(),
    };
    if !allowed.is_empty()
        && !allowed
            .iter()
            .any(|t| *t == kind || (*t == "number" && kind == "integer"))
    {
        return vec![format!("{at}: {kind}, schema allows {allowed:?}")];
    }
    if let Some(e) = schema["enum"].as_array()
        && !e.contains(value)
    {
        return vec![format!("{at}: {value} not in {e:?}")];
    }
    let mut out = Vec::new();
    if let Value::Object(m) = value {
        for r in schema["required"].as_array().into_iter().flatten() {
            if let Some(r) = r.as_str().filter(|r| !m.contains_key(*r)) {
                out.push(format!("{at}: required {r} is missing"));
            }
        }
        for (k, v) in m {
            match schema["properties"].get(k) {
                Some(p) => out.extend(violations(doc, p, v, &format!("{at}/{k}"))),
                None if schema["additionalProperties"].is_object() => out.extend(violations(
                    doc,
                    &schema["additionalProperties"],
                    v,
                    &format!("{at}/{k}"),
                )),
                None if schema["additionalProperties"] == false => {
                    out.push(format!("{at}: {k} is not allowed"))
                }
                None => {}
            }
        }
    }
    if let (Value::Array(a), Some(items)) = (value, schema.get("items")) {
        for (n, v) in a.iter().enumerate() {
            out.extend(violations(doc, items, v, &format!("{at}/{n}")));
        }
    }
    out
}

/// Replies built as JSON trees by the domain code (rather than serialised
/// from the documented types) match their documented schemas: a table of
/// records, fully set and empty, through the functions the handlers call.
#[test]
fn built_replies_match_their_schemas() {
    use openchami::inventory::model::{
        BootConfig, CloudInitGroup, ClusterDefaults, InstanceInfo, PowerTransition,
    };
    use serde_json::json;
    let doc: serde_json::Value =
        serde_json::from_str(&openchami::http::openapi::document_text()).expect("JSON");
    let config = |v: serde_json::Value| -> BootConfig {
        let mut base = json!({"id": "bootconfiguration-1", "hosts": [], "macs": [], "nids": [], "kernel": "/k",
            "initrd": "", "params": "", "cloud_init": null, "bound": false, "groups": [], "profile": "",
            "priority": 0, "meta": {}, "status": null});
        for (k, x) in v.as_object().expect("object") {
            base[k] = x.clone();
        }
        serde_json::from_value(base).expect("BootConfig")
    };
    let full = config(
        json!({"hosts": ["x1000c0s0b0n0"], "macs": ["02:00:00:00:00:01"], "nids": [1],
        "initrd": "/i", "params": "quiet", "cloud_init": {"meta-data": {"a": 1}}, "bound": true,
        "groups": ["compute"], "profile": "p", "priority": 5,
        "meta": {"name": "n", "labels": {"a": "b"}, "createdAt": "2026-01-01T00:00:00Z"}, "status": {"x": 1}}),
    );
    let bare = config(json!({}));
    let image = config(json!({"params": "quiet", "bound": true}));
    let transition: PowerTransition = serde_json::from_value(json!({"transitionID": "t", "operation": "On",
        "taskDeadlineMinutes": 5.0, "createTime": "c", "automaticExpirationTime": "e", "transitionStatus": "new",
        "tasks": [{"xname": "x1000c0s0b0n0", "taskStatus": "new", "taskStatusDescription": "d"}]}))
    .expect("transition");
    let group: CloudInitGroup =
        serde_json::from_value(json!({"name": "compute", "meta-data": {"a": 1}})).expect("group");
    let instance: InstanceInfo =
        serde_json::from_value(json!({"id": "x1000c0s0b0n0", "instance-id": "i-1"}))
            .expect("instance");
    let defaults: ClusterDefaults =
        serde_json::from_value(json!({"cluster-name": "demo", "public-keys": ["k"]}))
            .expect("defaults");
    use openchami::boot::service::{bootparameters_item, config_resource};
    use openchami::metadata::v2::{defaults_resource, group_resource, instance_resource};
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("BootConfigurationResource", config_resource(&full)),
        ("BootConfigurationResource", config_resource(&bare)),
        ("LegacyBootParams", bootparameters_item(&full)),
        ("LegacyBootParams", bootparameters_item(&bare)),
        ("BootParams", openchami::http::boot::wire(&full)),
        ("BootParams", openchami::http::boot::wire(&bare)),
        ("BootParams", openchami::http::boot::wire(&image)),
        (
            "Transition",
            openchami::power::transition_json(&transition, true),
        ),
        (
            "Transition",
            openchami::power::transition_json(&transition, false),
        ),
        ("ClusterDefaultsResource", defaults_resource(&defaults)),
        (
            "ClusterDefaultsResource",
            defaults_resource(&ClusterDefaults::default()),
        ),
        ("GroupResource", group_resource(&group)),
        ("InstanceInfoResource", instance_resource(&instance)),
    ];
    let mut wrong = Vec::new();
    for (name, value) in &cases {
        let schema = json!({"$ref": format!("#/components/schemas/{name}")});
        for v in violations(&doc, &schema, value, name) {
            wrong.push(format!("{v} in {value}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
