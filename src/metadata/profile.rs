//! metadata-service `Profile` resources: a time-limited variant of a
//! group's cloud-config for the nodes that ask for it.
//!
//! Upstream defines the resource (`groupRef`, `parentProfile`, `template`,
//! `metaData`, `expires_at`, `ttl_seconds`) but nothing reads it. Here a
//! node's InstanceInfo `default_profile` names a profile; while that
//! profile has not expired, its template and metaData — and those of its
//! parents, nearest first, up to a missing, expired or already-visited one
//! — replace the template and extend the metaData of the group it names,
//! for that node only (`<group>.yaml`, vendor-data, meta-data's
//! `vendor_data.groups`). Expiry is a comparison with the clock at read
//! time, so nothing sweeps: once past `expires_at` the node gets the
//! group's own file again. `ttl_seconds` fixes `expires_at` when written
//! (again on a later write that names `ttl_seconds` or changes the expiry).
//! Pure: callers pass the model and the time.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::v2::{
    self, Kind, check_template, get_ci, invalid, spec_str, spec_template, string_map, uid,
};
use crate::inventory::groups::parse_label;
use crate::inventory::model::{CloudInitFile, CloudInitGroup, MetadataRecord};
use crate::inventory::{DomainError, Model};

/// A profile's spec as stored, and when it stops applying.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub spec: Value,
    /// RFC 3339, UTC; empty for never.
    pub expires_at: String,
}

/// The stored profile named `name`.
pub fn find<'a>(model: &'a Model, name: &str) -> Option<&'a MetadataRecord> {
    model
        .metadata_resources
        .get(&uid(Kind::Profile, name))
        .filter(|r| r.kind == Kind::Profile.name() && r.meta.name == name)
}

fn field<'a>(r: &'a MetadataRecord, key: &str) -> &'a str {
    r.spec.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The group a profile names.
pub fn group_ref(r: &MetadataRecord) -> &str {
    field(r, "groupRef")
}

/// The profile a profile inherits from, if any.
pub fn parent(r: &MetadataRecord) -> &str {
    field(r, "parentProfile")
}

fn meta_data(r: &MetadataRecord) -> Option<&Map<String, Value>> {
    r.spec.get("metaData").and_then(Value::as_object)
}

/// Has `r` expired at `now`? (An expiry that does not parse, which no write
/// stores, counts as past: such a profile stops applying.)
pub fn expired(r: &MetadataRecord, now: DateTime<Utc>) -> bool {
    if r.expires_at.is_empty() {
        return false;
    }
    DateTime::parse_from_rfc3339(&r.expires_at).map_or(true, |t| now > t)
}

/// The profile named `name` and its ancestors, nearest first; ends at a
/// missing profile or one already in the chain.
pub fn chain<'a>(model: &'a Model, name: &str) -> Vec<&'a MetadataRecord> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut next = name.to_string();
    while !next.is_empty() && seen.insert(next.clone()) {
        let Some(r) = find(model, &next) else { break };
        out.push(r);
        next = parent(r).to_string();
    }
    out
}

/// Profiles whose `groupRef` is `label`, by name.
pub fn of_group(model: &Model, label: &str) -> Vec<String> {
    profiles(model)
        .filter(|r| group_ref(r) == label)
        .map(|r| r.meta.name.clone())
        .collect()
}

/// Profiles whose `parentProfile` is `name`, by name.
pub fn children(model: &Model, name: &str) -> Vec<String> {
    profiles(model)
        .filter(|r| parent(r) == name)
        .map(|r| r.meta.name.clone())
        .collect()
}

fn profiles(model: &Model) -> impl Iterator<Item = &MetadataRecord> {
    model
        .metadata_resources
        .values()
        .filter(|r| r.kind == Kind::Profile.name())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Checks the spec of profile `name` against `model` (its group and parent
/// exist, no cycle, metaData strings, the template renders to YAML with
/// the metaData it will see) and fixes its expiry at `now`. `old` is the
/// stored profile on an update; `renews_ttl` says whether a patch named
/// `ttl_seconds` (`None`: a whole spec was sent).
pub fn check(
    model: &Model,
    name: &str,
    spec: &Map<String, Value>,
    old: Option<&MetadataRecord>,
    renews_ttl: Option<bool>,
    now: DateTime<Utc>,
) -> Result<Checked, DomainError> {
    let given = spec_str(spec, "groupRef")?;
    if given.is_empty() {
        return Err(invalid("groupRef is required"));
    }
    let group_name =
        parse_label(&given).map_err(|e| invalid(format!("groupRef must name a Group: {e}")))?;
    let group = model
        .cloud_init_groups
        .get(&group_name)
        .ok_or_else(|| invalid(format!("groupRef {given:?} names no Group")))?;
    let parent_name = spec_str(spec, "parentProfile")?;
    let ancestors = if parent_name.is_empty() {
        Vec::new()
    } else {
        if parent_name == name {
            return Err(invalid(format!(
                "parentProfile {parent_name:?} would make profile {name} its own ancestor"
            )));
        }
        if find(model, &parent_name).is_none() {
            return Err(invalid(format!(
                "parentProfile {parent_name:?} names no Profile"
            )));
        }
        let ancestors = chain(model, &parent_name);
        if ancestors.iter().any(|r| r.meta.name == name) {
            return Err(invalid(format!(
                "parentProfile {parent_name:?} would make profile {name} its own ancestor"
            )));
        }
        ancestors
    };
    let template = spec_template(spec)?;
    let own_meta = string_map(get_ci(spec, "metaData"), "metaData")?;
    let ttl = match get_ci(spec, "ttl_seconds") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| invalid("ttl_seconds must be a whole number of seconds, 0 or more"))?,
    };
    let given_expiry = spec_str(spec, "expires_at")?;
    let expires_at = if !given_expiry.is_empty() {
        let t = DateTime::parse_from_rfc3339(&given_expiry).map_err(|e| {
            invalid(format!(
                "invalid expires_at {given_expiry:?} (RFC 3339, like 2026-12-31T23:59:59Z): {e}"
            ))
        })?;
        rfc3339(t.with_timezone(&Utc))
    } else if ttl > 0 {
        let unchanged = old.is_some_and(|o| {
            !o.expires_at.is_empty()
                && field(o, "expires_at").is_empty()
                && o.spec.get("ttl_seconds").and_then(Value::as_i64) == Some(ttl)
        });
        match old {
            Some(o) if unchanged && renews_ttl == Some(false) => o.expires_at.clone(),
            _ => rfc3339(now + chrono::Duration::seconds(ttl.min(i64::from(i32::MAX)))),
        }
    } else {
        String::new()
    };

    if !template.trim().is_empty() {
        // The metaData the template will be rendered with: the group's,
        // then the ancestors' (farthest first), then its own.
        let mut merged = group.meta_data.clone();
        for r in ancestors.iter().rev() {
            if let Some(m) = meta_data(r) {
                merged.extend(m.clone());
            }
        }
        merged.extend(own_meta.iter().map(|(k, v)| (k.clone(), json!(v))));
        check_template(&template, &merged)?;
    }

    let mut s = Map::new();
    s.insert("groupRef".into(), json!(group_name));
    v2::put_nonempty(&mut s, "parentProfile", &parent_name);
    if !template.is_empty() {
        s.insert("template".into(), json!(template));
    }
    if !own_meta.is_empty() {
        s.insert("metaData".into(), json!(own_meta));
    }
    v2::put_nonempty(&mut s, "expires_at", &given_expiry);
    if ttl > 0 {
        s.insert("ttl_seconds".into(), json!(ttl));
    }
    Ok(Checked {
        spec: Value::Object(s),
        expires_at,
    })
}

/// A profile's status at `now`: `expired`, and the instants.
pub fn status(r: &MetadataRecord, now: DateTime<Utc>) -> Value {
    let mut s = Map::new();
    let gone = expired(r, now);
    s.insert("expired".into(), json!(gone));
    if gone {
        s.insert("expired_at".into(), json!(r.expires_at));
    }
    v2::put_nonempty(&mut s, "expires_at", &r.expires_at);
    Value::Object(s)
}

/// The Profile resource of a stored record, its status as of `now`.
pub fn resource(r: &MetadataRecord, now: DateTime<Utc>) -> Value {
    v2::envelope(
        Kind::Profile,
        &r.meta.name,
        Some(&r.meta),
        r.spec.clone(),
        status(r, now),
    )
}

/// The groups as node `node` sees them at `now` where its profile changes
/// them: at most one entry, the profile's group with the chain's template
/// and metaData. Empty when the node names no profile, or one that is
/// missing or expired, or whose group is gone.
pub fn overrides(
    model: &Model,
    node: &str,
    now: DateTime<Utc>,
) -> BTreeMap<String, CloudInitGroup> {
    let mut out = BTreeMap::new();
    let Some(name) = model
        .instance_info
        .get(node)
        .and_then(|i| i.resource.as_ref())
        .and_then(|m| m.extra.get("default_profile"))
        .filter(|n| !n.is_empty())
    else {
        return out;
    };
    let chain: Vec<&MetadataRecord> = chain(model, name)
        .into_iter()
        .take_while(|r| !expired(r, now))
        .collect();
    let Some(first) = chain.first() else {
        return out;
    };
    let label = group_ref(first);
    let Some(group) = model.cloud_init_groups.get(label) else {
        return out;
    };
    let mut g = group.clone();
    for r in chain.iter().rev() {
        if let Some(m) = meta_data(r) {
            g.meta_data.extend(m.clone());
        }
    }
    if let Some(t) = chain
        .iter()
        .map(|r| field(r, "template"))
        .find(|t| !t.trim().is_empty())
    {
        g.file = Some(CloudInitFile {
            content: t.to_string(),
            filename: group
                .file
                .as_ref()
                .map(|f| f.filename.clone())
                .unwrap_or_default(),
            encoding: "plain".into(),
        });
    }
    out.insert(label.to_string(), g);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::model::{CloudInitResource, InstanceInfo};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn group(name: &str, tmpl: &str) -> CloudInitGroup {
        let mut meta = Map::new();
        meta.insert("ntp".into(), json!("10.0.0.1"));
        meta.insert("site".into(), json!("a"));
        CloudInitGroup {
            name: name.into(),
            description: String::new(),
            meta_data: meta,
            file: Some(CloudInitFile {
                content: tmpl.into(),
                filename: "f.yaml".into(),
                encoding: "plain".into(),
            }),
            resource: None,
        }
    }

    fn put(model: &mut Model, name: &str, spec: Value, now: DateTime<Utc>) -> Result<(), String> {
        let old = find(model, name).cloned();
        let c = check(
            model,
            name,
            spec.as_object().unwrap(),
            old.as_ref(),
            None,
            now,
        )
        .map_err(|e| e.to_string())?;
        let r = MetadataRecord {
            uid: uid(Kind::Profile, name),
            kind: "Profile".into(),
            meta: CloudInitResource {
                name: name.into(),
                ..Default::default()
            },
            spec: c.spec,
            expires_at: c.expires_at,
            generation: 1,
        };
        model.metadata_resources.insert(r.uid.clone(), r);
        Ok(())
    }

    fn model() -> Model {
        let mut m = Model::default();
        m.cloud_init_groups.insert(
            "compute".into(),
            group("compute", "#cloud-config\nntp: {{ ntp }}\n"),
        );
        m.instance_info.insert(
            "x1".into(),
            InstanceInfo {
                id: "x1".into(),
                resource: Some(CloudInitResource {
                    extra: [("default_profile".to_string(), "debug".to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        m
    }

    #[test]
    fn specs_are_checked() {
        let now = at("2026-06-01T00:00:00Z");
        let mut m = model();
        put(&mut m, "base", json!({"groupRef": "compute"}), now).unwrap();
        for (spec, says) in [
            (json!({}), "groupRef is required"),
            (json!({"groupRef": "gpu"}), "names no Group"),
            (
                json!({"groupRef": "compute", "parentProfile": "nope"}),
                "names no Profile",
            ),
            (
                json!({"groupRef": "compute", "parentProfile": "debug"}),
                "own ancestor",
            ),
            (
                json!({"groupRef": "compute", "expires_at": "tomorrow"}),
                "invalid expires_at",
            ),
            (
                json!({"groupRef": "compute", "ttl_seconds": -1}),
                "ttl_seconds",
            ),
            (
                json!({"groupRef": "compute", "ttl_seconds": "60"}),
                "ttl_seconds",
            ),
            (
                json!({"groupRef": "compute", "metaData": {"a": 1}}),
                "metaData.a must be a string",
            ),
            (
                json!({"groupRef": "compute", "template": "#cloud-config\n{% if %}\n"}),
                "render error",
            ),
            (
                json!({"groupRef": "compute", "template": "a: [b\n"}),
                "YAML invalid",
            ),
            (
                json!({"groupRef": "compute", "template": "x", "templateEncoding": "rot13"}),
                "plain or base64",
            ),
        ] {
            let e = put(&mut m, "debug", spec.clone(), now).unwrap_err();
            assert!(e.contains(says), "{spec}: {e}");
        }
        // A cycle through a parent is refused too.
        put(
            &mut m,
            "child",
            json!({"groupRef": "compute", "parentProfile": "base"}),
            now,
        )
        .unwrap();
        let e = put(
            &mut m,
            "base",
            json!({"groupRef": "compute", "parentProfile": "child"}),
            now,
        )
        .unwrap_err();
        assert!(e.contains("own ancestor"), "{e}");
        // base64 templates are stored decoded, the encoding dropped.
        put(
            &mut m,
            "b64",
            json!({"groupRef": "COMPUTE", "template": "I2Nsb3VkLWNvbmZpZwp4OiAxCg==", "templateEncoding": "base64"}),
            now,
        )
        .unwrap();
        assert_eq!(
            find(&m, "b64").unwrap().spec,
            json!({"groupRef": "compute", "template": "#cloud-config\nx: 1\n"})
        );
    }

    #[test]
    fn expiry_from_expires_at_or_ttl() {
        let now = at("2026-06-01T00:00:00Z");
        let later = at("2026-06-01T00:10:00Z");
        let mut m = model();
        put(
            &mut m,
            "p",
            json!({"groupRef": "compute", "expires_at": "2026-06-01T02:00:00+02:00"}),
            now,
        )
        .unwrap();
        let p = find(&m, "p").unwrap();
        assert_eq!(p.expires_at, "2026-06-01T00:00:00Z");
        assert!(!expired(p, now), "not before the instant");
        assert!(expired(p, later));
        assert_eq!(
            status(p, later),
            json!({"expired": true, "expired_at": "2026-06-01T00:00:00Z", "expires_at": "2026-06-01T00:00:00Z"})
        );
        assert_eq!(
            status(p, now),
            json!({"expired": false, "expires_at": "2026-06-01T00:00:00Z"})
        );

        put(
            &mut m,
            "t",
            json!({"groupRef": "compute", "ttl_seconds": 600}),
            now,
        )
        .unwrap();
        assert_eq!(find(&m, "t").unwrap().expires_at, "2026-06-01T00:10:00Z");
        // A patch that does not name the TTL keeps the countdown…
        let old = find(&m, "t").cloned();
        let c = check(
            &m,
            "t",
            json!({"groupRef": "compute", "ttl_seconds": 600, "metaData": {"a": "b"}})
                .as_object()
                .unwrap(),
            old.as_ref(),
            Some(false),
            later,
        )
        .unwrap();
        assert_eq!(c.expires_at, "2026-06-01T00:10:00Z");
        // …one that names it, or a whole spec, restarts it.
        for renews in [Some(true), None] {
            let c = check(
                &m,
                "t",
                json!({"groupRef": "compute", "ttl_seconds": 600})
                    .as_object()
                    .unwrap(),
                old.as_ref(),
                renews,
                later,
            )
            .unwrap();
            assert_eq!(c.expires_at, "2026-06-01T00:20:00Z", "{renews:?}");
        }
        put(&mut m, "n", json!({"groupRef": "compute"}), now).unwrap();
        assert!(!expired(find(&m, "n").unwrap(), at("2999-01-01T00:00:00Z")));
    }

    #[test]
    fn a_node_sees_its_unexpired_profile_chain() {
        let now = at("2026-06-01T00:00:00Z");
        let mut m = model();
        assert!(overrides(&m, "x1", now).is_empty(), "no such profile yet");
        put(
            &mut m,
            "base",
            json!({"groupRef": "compute", "template": "#cloud-config\nbase: {{ ntp }} {{ level }}\n",
                   "metaData": {"level": "info", "site": "b"}, "expires_at": "2026-07-01T00:00:00Z"}),
            now,
        )
        .unwrap();
        put(
            &mut m,
            "debug",
            json!({"groupRef": "compute", "parentProfile": "base", "metaData": {"level": "debug"},
                   "expires_at": "2026-06-02T00:00:00Z"}),
            now,
        )
        .unwrap();
        let g = &overrides(&m, "x1", now)["compute"];
        assert_eq!(
            g.file.as_ref().unwrap().content,
            "#cloud-config\nbase: {{ ntp }} {{ level }}\n",
            "the parent's template"
        );
        assert_eq!(g.meta_data["level"], "debug", "nearest wins");
        assert_eq!(g.meta_data["site"], "b");
        assert_eq!(g.meta_data["ntp"], "10.0.0.1", "the group's stay");
        assert!(overrides(&m, "x2", now).is_empty(), "another node");
        // The child expires first: nothing applies, not even the parent.
        assert!(overrides(&m, "x1", at("2026-06-03T00:00:00Z")).is_empty());
        // The parent expires first: the child applies alone.
        put(
            &mut m,
            "base",
            json!({"groupRef": "compute", "template": "#cloud-config\nb: 1\n", "expires_at": "2026-05-01T00:00:00Z"}),
            now,
        )
        .unwrap();
        let g = &overrides(&m, "x1", now)["compute"];
        assert_eq!(
            g.file.as_ref().unwrap().content,
            "#cloud-config\nntp: {{ ntp }}\n"
        );
        assert_eq!(g.meta_data["level"], "debug");
        assert_eq!(g.meta_data["site"], "a");
    }

    #[test]
    fn chains_survive_cycles_in_stored_data() {
        let now = at("2026-06-01T00:00:00Z");
        let mut m = model();
        put(&mut m, "a", json!({"groupRef": "compute"}), now).unwrap();
        put(
            &mut m,
            "debug",
            json!({"groupRef": "compute", "parentProfile": "a"}),
            now,
        )
        .unwrap();
        // Stored data the checks would refuse: a → debug → a.
        let u = uid(Kind::Profile, "a");
        let mut r = m.metadata_resources.get(&u).unwrap().clone();
        r.spec["parentProfile"] = json!("debug");
        m.metadata_resources.insert(u, r);
        assert_eq!(chain(&m, "debug").len(), 2);
        assert_eq!(overrides(&m, "x1", now).len(), 1);
    }
}
