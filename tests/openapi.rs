//! The API contract is the checked-in `openapi/openapi.json`: any change to
//! the served routes shows up there, in review.
//!
//! After an intended change, regenerate it with
//! `UPDATE_GOLDEN=1 cargo test --test openapi` and commit the result.

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
