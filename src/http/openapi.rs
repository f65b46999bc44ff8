//! The OpenAPI 3.1 document, generated from the route table.
//!
//! A checked-in copy (`openapi/openapi.json`) is compared with the generated
//! one by a test, so any change to the served API shows up in review.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::routes::{Access, Listeners, table};

/// The document as served at `/openapi.json`.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in table() {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let listeners = match r.listeners {
            Listeners::Api => json!(["api"]),
            Listeners::Both => json!(["api", "node"]),
        };
        let security = match r.access {
            Access::Anonymous => json!([]),
            Access::Token => json!([{"bearer": []}]),
        };
        let mut responses = Map::new();
        responses.insert("2XX".into(), json!({"description": "success"}));
        if r.access == Access::Token {
            responses.insert(
                "401".into(),
                json!({"$ref": "#/components/responses/Problem"}),
            );
        }
        responses.insert(
            "default".into(),
            json!({"$ref": "#/components/responses/Problem"}),
        );
        let mut op = json!({
            "tags": [r.service],
            "summary": r.summary,
            "operationId": operation_id(r.method.as_str(), r.path),
            "security": security,
            "x-listeners": listeners,
            "responses": responses,
        });
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        let entry = paths
            .entry(r.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(r.method.as_str().to_lowercase(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "openchami",
            "version": "1",
            "description": "Inventory (SMD /hsm/v2), boot (BSS /boot/v1), cloud-init, power (PCS) and appliance routes. /apis/smd/hsm/v2 and /apis/bss/boot/v1 are aliases of /hsm/v2 and /boot/v1. Routes listed with x-listeners [api, node] are also served, anonymously, on the plain-HTTP node listener."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "responses": {"Problem": {"description": "RFC 7807 problem", "content": {"application/problem+json": {"schema": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}}
            }}}}}
        },
        "paths": paths,
    })
}

/// The document as pretty-printed text, built once.
pub fn document_text() -> String {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut s = serde_json::to_string_pretty(&document()).unwrap_or_default();
        s.push('\n');
        s
    })
    .clone()
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_lowercase();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let seg = seg.trim_start_matches('{').trim_end_matches('}');
        id.push('_');
        id.extend(
            seg.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}
