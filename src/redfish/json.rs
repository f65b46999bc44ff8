//! Reading vendor JSON without trusting its shape.
//!
//! Every accessor returns a default when a key is missing or has the wrong
//! type, so one odd field never costs a whole crawl.

use serde_json::Value;

/// A string at `key` (any case of the key), else `""`.
pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    get(v, key).and_then(Value::as_str).unwrap_or("")
}

/// The value at `key`: exact spelling first, then any case.
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Follows a path of keys.
pub fn at<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(v, |cur, k| get(cur, k))
}

/// `{"@odata.id": path}` at `key`, else `""`.
pub fn link<'a>(v: &'a Value, key: &str) -> &'a str {
    get(v, key).map(odata_id).unwrap_or("")
}

/// The `@odata.id` of a reference object, or the string itself.
pub fn odata_id(v: &Value) -> &str {
    v.as_str()
        .or_else(|| v.get("@odata.id").and_then(Value::as_str))
        .unwrap_or("")
}

/// The member paths of a collection (`Members: [{"@odata.id": ...}]`).
pub fn members(v: &Value) -> Vec<String> {
    list(get(v, "Members"))
}

/// Paths of a list of references (`Links.Chassis`, ...).
pub fn list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .map(odata_id)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Object(_)) => {
            let one = odata_id(v.unwrap_or(&Value::Null));
            if one.is_empty() {
                Vec::new()
            } else {
                vec![one.to_string()]
            }
        }
        _ => Vec::new(),
    }
}

/// A list of strings at `key`; other entries are skipped.
pub fn strings(v: &Value, key: &str) -> Vec<String> {
    match get(v, key) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// A number at a path, as f64.
pub fn number(v: &Value, keys: &[&str]) -> Option<f64> {
    at(v, keys).and_then(Value::as_f64)
}

/// A path without a trailing slash, so `/Systems/1/` and `/Systems/1` match.
pub fn clean(path: &str) -> String {
    let t = path.trim();
    if t.len() > 1 {
        t.trim_end_matches('/').to_string()
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tolerates_missing_and_wrong_types() {
        let v = json!({"PowerState": 3, "Name": "n", "Links": null, "Members": [{"@odata.id": "/a"}, {}, "/b"]});
        assert_eq!(str_of(&v, "PowerState"), "");
        assert_eq!(str_of(&v, "name"), "n");
        assert_eq!(link(&v, "Links"), "");
        assert_eq!(members(&v), vec!["/a", "/b"]);
        assert!(at(&v, &["Links", "Chassis"]).is_none());
        assert_eq!(clean("/redfish/v1/"), "/redfish/v1");
        assert_eq!(clean("/"), "/");
    }
}
