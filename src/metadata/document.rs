//! The documents a node gets, rendered without I/O.
//!
//! Everything cloud-init reads (§5.2 meta-data, user-data, vendor-data and
//! group files) is computed here from plain inputs gathered from one
//! snapshot, so every case is a golden file and the HTTP handlers only look
//! the caller up and encode. Key names and their order are the contract:
//! Jinja templates on nodes read `ds.meta_data.instance_data.v1.*`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;

use super::yaml::{self, Node};

use crate::inventory::Model;
use crate::inventory::model::{CloudInitGroup, ClusterDefaults, Component, InstanceInfo};

/// `vendor_data.version`, as upstream.
pub const VENDOR_DATA_VERSION: &str = "1.0";
/// A group's `Description` when neither cloud-init nor SMD has one (upstream's text).
pub const NO_DESCRIPTION: &str = "No description Found";
/// What `user-data`, and a group without a file, serve: an empty mapping.
/// Upstream serves `#cloud-config` alone, which cloud-init warns about on
/// every boot and `cloud-init schema` refuses ("not a YAML dict").
pub const EMPTY_CLOUD_CONFIG: &str = "#cloud-config\n{}\n";
/// Default width of the NID in a default host name.
pub const DEFAULT_NID_LENGTH: usize = 4;

/// The §5.3 host name rule, shared with DHCP option 12: `short_name`
/// followed by the NID zero-padded to `nid_length` digits (never truncated).
///
/// `hostname("de", 1, 2)` is `de01`.
pub fn hostname(short_name: &str, nid: i64, nid_length: usize) -> String {
    format!("{short_name}{nid:0nid_length$}")
}

/// The default host name of a node with `nid` under `defaults`: `short-name`
/// (else the first two characters of `cluster-name`, else of
/// `fallback_cluster`, the configured cluster name) and `nid-length` (else 4).
pub fn default_hostname(defaults: &ClusterDefaults, fallback_cluster: &str, nid: i64) -> String {
    let short: String = if defaults.short_name.is_empty() {
        let cluster = if defaults.cluster_name.is_empty() {
            fallback_cluster
        } else {
            &defaults.cluster_name
        };
        cluster.chars().take(2).collect()
    } else {
        defaults.short_name.clone()
    };
    let len = if defaults.nid_length > 0 {
        defaults.nid_length as usize
    } else {
        DEFAULT_NID_LENGTH
    };
    hostname(&short, nid, len)
}

/// What the renderer needs from outside the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// The configured `cluster_name`, the last fallback for `cluster-name`.
    pub cluster_name: &'a str,
    /// The node listener's base URL (`http://host:27778`).
    pub node_base: &'a str,
}

/// One SMD group of the node, with its cloud-init data if any.
#[derive(Debug, Clone)]
pub struct GroupFacts<'a> {
    pub label: &'a str,
    /// The SMD group's description (used when cloud-init has none).
    pub smd_description: &'a str,
    pub cloud_init: Option<&'a CloudInitGroup>,
}

/// Everything meta-data and vendor-data are computed from.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub xname: &'a str,
    pub nid: Option<i64>,
    pub role: Option<&'a str>,
    pub sub_role: Option<&'a str>,
    /// The node's first inventory IP address.
    pub local_ipv4: Option<&'a str>,
    /// In label order.
    pub groups: Vec<GroupFacts<'a>>,
    pub defaults: &'a ClusterDefaults,
    pub info: Option<&'a InstanceInfo>,
    pub settings: Settings<'a>,
}

/// The facts about `node` in `model`.
pub fn gather<'a>(model: &'a Model, node: &'a Component, settings: Settings<'a>) -> Facts<'a> {
    gather_with(model, node, settings, None)
}

/// As [`gather`], with some of the node's groups seen as `overrides` has
/// them (its profile's, `profile::overrides`).
pub fn gather_with<'a>(
    model: &'a Model,
    node: &'a Component,
    settings: Settings<'a>,
    overrides: Option<&'a BTreeMap<String, CloudInitGroup>>,
) -> Facts<'a> {
    let local_ipv4 = model
        .interfaces_of(&node.id)
        .into_iter()
        .flat_map(|i| i.ip_addresses.iter())
        .map(|a| a.ip_address.as_str())
        .find(|a| !a.is_empty());
    let groups = model
        .group_labels_of(&node.id)
        .map(|labels| {
            labels
                .iter()
                .map(|l| GroupFacts {
                    label: l.as_str(),
                    smd_description: model
                        .groups
                        .get(l.as_str())
                        .map(|g| g.description.as_str())
                        .unwrap_or(""),
                    cloud_init: overrides
                        .and_then(|o| o.get(l.as_str()))
                        .or_else(|| model.cloud_init_groups.get(l.as_str())),
                })
                .collect()
        })
        .unwrap_or_default();
    Facts {
        xname: &node.id,
        nid: node.nid,
        role: node.role.as_deref(),
        sub_role: node.sub_role.as_deref(),
        local_ipv4,
        groups,
        defaults: &model.cloud_init_defaults,
        info: model.instance_info.get(&node.id),
        settings,
    }
}

/// The first non-empty of `values`.
fn first<'a>(values: &[&'a str]) -> &'a str {
    values.iter().copied().find(|v| !v.is_empty()).unwrap_or("")
}

impl<'a> Facts<'a> {
    fn info_field(&self, f: impl Fn(&'a InstanceInfo) -> &'a str) -> &'a str {
        self.info.map(f).unwrap_or("")
    }

    pub fn instance_id(&self) -> &'a str {
        self.info_field(|i| &i.instance_id)
    }

    /// The §5.3 default: short name + padded NID; the xname for a node
    /// without a NID (upstream would print NID 0 for every such node).
    pub fn default_hostname(&self) -> String {
        match self.nid {
            Some(nid) => default_hostname(self.defaults, self.settings.cluster_name, nid),
            None => self.xname.to_string(),
        }
    }

    pub fn local_hostname(&self) -> String {
        match self.info_field(|i| &i.local_hostname) {
            "" => self.default_hostname(),
            h => h.to_string(),
        }
    }

    pub fn hostname(&self) -> String {
        match self.info_field(|i| &i.hostname) {
            "" => self.default_hostname(),
            h => h.to_string(),
        }
    }

    /// instance-info > cluster-defaults > configured cluster name.
    pub fn cluster_name(&self) -> &'a str {
        first(&[
            self.info_field(|i| &i.cluster_name),
            &self.defaults.cluster_name,
            self.settings.cluster_name,
        ])
    }

    /// `cloud-init-base-url` > `base-url` > `<node-base>/cloud-init`.
    pub fn base_url(&self) -> String {
        let set = first(&[
            self.info_field(|i| &i.cloud_init_base_url),
            &self.defaults.base_url,
        ]);
        if set.is_empty() {
            format!("{}/cloud-init", self.settings.node_base)
        } else {
            set.trim_end_matches('/').to_string()
        }
    }

    /// Cluster keys, then the node's own.
    pub fn public_keys(&self) -> Vec<&'a str> {
        let mut keys: Vec<&str> = self
            .defaults
            .public_keys
            .iter()
            .map(String::as_str)
            .collect();
        if let Some(i) = self.info {
            keys.extend(i.public_keys.iter().map(String::as_str));
        }
        keys
    }
}

/// `Description` + the group's meta-data, as upstream merges them.
fn group_entry<'a>(g: &GroupFacts<'a>) -> Node<'a> {
    let meta = g.cloud_init.map(|c| &c.meta_data);
    let mut m: Vec<(&'a str, Node<'a>)> = Vec::with_capacity(1 + meta.map_or(0, |m| m.len()));
    // Meta-data may set its own `Description`; it wins, as upstream.
    if !meta.is_some_and(|m| m.contains_key("Description")) {
        let d = first(&[
            g.cloud_init.map(|c| c.description.as_str()).unwrap_or(""),
            g.smd_description,
            NO_DESCRIPTION,
        ]);
        m.push(("Description", Node::Str(d)));
    }
    if let Some(meta) = meta {
        for (k, v) in meta {
            m.push((k.as_str(), Node::Json(v)));
        }
    }
    Node::Map(m)
}

/// Adds `k: v` unless `v` is empty.
fn put<'a>(m: &mut Vec<(&'a str, Node<'a>)>, k: &'a str, v: &str) {
    if !v.is_empty() {
        m.push((k, Node::Owned(v.to_string())));
    }
}

/// The meta-data YAML (§5.2). Keys in this order; empty values omitted.
pub fn meta_data(f: &Facts<'_>) -> String {
    let local_hostname = f.local_hostname();
    let hostname = f.hostname();
    let cluster_name = f.cluster_name();
    let instance_id = f.instance_id();
    let mut vd: Vec<(&str, Node<'_>)> = vec![
        ("version", Node::Str(VENDOR_DATA_VERSION)),
        ("cloud_init_base_url", Node::Owned(f.base_url())),
    ];
    if let Some(n) = f.nid {
        vd.push(("nid", Node::Int(n)));
    }
    if let Some(r) = f.role.filter(|r| !r.is_empty()) {
        vd.push(("role", Node::Str(r)));
    }
    if let Some(r) = f.sub_role.filter(|r| !r.is_empty()) {
        vd.push(("sub_role", Node::Str(r)));
    }
    if !cluster_name.is_empty() {
        vd.push(("cluster_name", Node::Str(cluster_name)));
    }
    if !f.groups.is_empty() {
        vd.push((
            "groups",
            Node::Map(f.groups.iter().map(|g| (g.label, group_entry(g))).collect()),
        ));
    }

    let mut v1: Vec<(&str, Node<'_>)> = Vec::with_capacity(12);
    put(
        &mut v1,
        "availability_zone",
        first(&[
            f.info_field(|i| &i.availability_zone),
            &f.defaults.availability_zone,
        ]),
    );
    put(
        &mut v1,
        "region",
        first(&[f.info_field(|i| &i.region), &f.defaults.region]),
    );
    put(
        &mut v1,
        "cloud_provider",
        first(&[
            f.info_field(|i| &i.cloud_provider),
            &f.defaults.cloud_provider,
        ]),
    );
    put(&mut v1, "instance_id", instance_id);
    put(&mut v1, "instance_type", f.info_field(|i| &i.instance_type));
    put(&mut v1, "local_hostname", &local_hostname);
    put(&mut v1, "hostname", &hostname);
    if let Some(ip) = f.local_ipv4 {
        v1.push(("local_ipv4", Node::Str(ip)));
    }
    let keys = f.public_keys();
    if !keys.is_empty() {
        v1.push((
            "public_keys",
            Node::Seq(keys.into_iter().map(Node::Str).collect()),
        ));
    }
    v1.push(("vendor_data", Node::Map(vd)));

    let mut top: Vec<(&str, Node<'_>)> = Vec::with_capacity(5);
    put(&mut top, "instance-id", instance_id);
    put(&mut top, "local-hostname", &local_hostname);
    put(&mut top, "hostname", &hostname);
    put(&mut top, "cluster-name", cluster_name);
    top.push(("instance_data", Node::Map(vec![("v1", Node::Map(v1))])));
    yaml::document(&Node::Map(top))
}

/// vendor-data: `#include` and one `<base-url>/<group>.yaml` per SMD group
/// of the node, in label order.
pub fn vendor_data(f: &Facts<'_>) -> String {
    let base = f.base_url();
    let mut s = String::from("#include\n");
    for g in &f.groups {
        let _ = writeln!(s, "{base}/{}.yaml", g.label);
    }
    s
}

/// user-data: an empty cloud-config (the work is in the groups).
pub fn user_data() -> &'static str {
    EMPTY_CLOUD_CONFIG
}

/// The bytes `<group>.yaml` serves: the group's file, base64-decoded if it
/// was given so, or an empty cloud-config when there is none. Stored base64
/// was checked on write; should it still not decode, the empty cloud-config
/// is served rather than garbage.
pub fn group_file(group: Option<&CloudInitGroup>) -> Vec<u8> {
    match group.and_then(|g| g.file.as_ref()) {
        Some(f) if !f.content.is_empty() => {
            if f.encoding.eq_ignore_ascii_case("base64") {
                base64::engine::general_purpose::STANDARD
                    .decode(f.content.as_bytes())
                    .unwrap_or_else(|_| EMPTY_CLOUD_CONFIG.as_bytes().to_vec())
            } else {
                f.content.as_bytes().to_vec()
            }
        }
        _ => EMPTY_CLOUD_CONFIG.as_bytes().to_vec(),
    }
}

/// A node's cloud-init `hostname` from the inventory alone (its InstanceInfo
/// override, else the cluster's short name and NID). DHCP option 12 and the
/// DNS zone name nodes by this one rule, so a node is called the same
/// everywhere.
pub fn node_hostname(model: &Model, comp: &Component, cluster: &str) -> String {
    Facts {
        xname: &comp.id,
        nid: comp.nid,
        role: None,
        sub_role: None,
        local_ipv4: None,
        groups: Vec::new(),
        defaults: &model.cloud_init_defaults,
        info: model.instance_info.get(&comp.id),
        settings: Settings {
            cluster_name: cluster,
            node_base: "",
        },
    }
    .hostname()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::model::CloudInitFile;
    use serde_json::Value;

    #[test]
    fn hostname_rule() {
        assert_eq!(hostname("de", 1, 2), "de01");
        assert_eq!(hostname("nid", 7, 4), "nid0007");
        assert_eq!(hostname("de", 12345, 4), "de12345", "never truncated");
        let d = ClusterDefaults {
            cluster_name: "demo".into(),
            ..Default::default()
        };
        assert_eq!(default_hostname(&d, "other", 1), "de0001");
        assert_eq!(
            default_hostname(&ClusterDefaults::default(), "openchami", 12),
            "op0012"
        );
        let d = ClusterDefaults {
            short_name: "nid".into(),
            nid_length: 3,
            ..Default::default()
        };
        assert_eq!(default_hostname(&d, "x", 5), "nid005");
        let d = ClusterDefaults {
            cluster_name: "ÿé-cluster".into(),
            ..Default::default()
        };
        assert_eq!(
            default_hostname(&d, "x", 5),
            "ÿé0005",
            "characters, not bytes"
        );
    }

    fn settings() -> Settings<'static> {
        Settings {
            cluster_name: "demo",
            node_base: "http://172.16.0.254:27778",
        }
    }

    fn group(name: &str, desc: &str, meta: Value, file: Option<CloudInitFile>) -> CloudInitGroup {
        CloudInitGroup {
            name: name.into(),
            description: desc.into(),
            meta_data: meta.as_object().cloned().unwrap_or_default(),
            file,
            resource: None,
        }
    }

    /// Compares with `tests/golden/metadata/<name>`; `UPDATE_GOLDEN=1` rewrites.
    fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/metadata")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                path.display()
            )
        });
        assert!(
            want == actual,
            "{} differs (UPDATE_GOLDEN=1 rewrites it)\n--- want\n{want}\n--- actual\n{actual}",
            path.display()
        );
    }

    #[test]
    fn minimal_node() {
        let d = ClusterDefaults::default();
        let f = Facts {
            xname: "x1000c0s0b0n0",
            nid: Some(3),
            role: None,
            sub_role: None,
            local_ipv4: None,
            groups: Vec::new(),
            defaults: &d,
            info: None,
            settings: settings(),
        };
        golden("unit-minimal.yaml", &meta_data(&f));
        assert_eq!(vendor_data(&f), "#include\n");
    }

    #[test]
    fn full_node() {
        let d = ClusterDefaults {
            cloud_provider: "openchami".into(),
            region: "r1".into(),
            availability_zone: "az1".into(),
            cluster_name: "demo".into(),
            public_keys: vec!["ssh-ed25519 AAAA admin@head".into()],
            short_name: "de".into(),
            nid_length: 2,
            ..Default::default()
        };
        let compute = group(
            "compute",
            "compute nodes",
            serde_json::json!({"syslog_server": "172.16.0.254", "ntp": ["a", "b"], "yes": "true", "n": 1}),
            None,
        );
        let gpu = group(
            "gpu",
            "",
            serde_json::json!({"Description": "from meta-data", "driver": "550"}),
            None,
        );
        let info = InstanceInfo {
            id: "x1000c0s0b0n0".into(),
            instance_id: "i-3f2a9c1d".into(),
            instance_type: "compute".into(),
            public_keys: vec!["ssh-rsa BBBB node".into()],
            ..Default::default()
        };
        let f = Facts {
            xname: "x1000c0s0b0n0",
            nid: Some(1),
            role: Some("Compute"),
            sub_role: None,
            local_ipv4: Some("172.16.0.1"),
            groups: vec![
                GroupFacts {
                    label: "compute",
                    smd_description: "",
                    cloud_init: Some(&compute),
                },
                GroupFacts {
                    label: "gpu",
                    smd_description: "",
                    cloud_init: Some(&gpu),
                },
                GroupFacts {
                    label: "rack1",
                    smd_description: "rack one",
                    cloud_init: None,
                },
                GroupFacts {
                    label: "spare",
                    smd_description: "",
                    cloud_init: None,
                },
            ],
            defaults: &d,
            info: Some(&info),
            settings: settings(),
        };
        golden("unit-full.yaml", &meta_data(&f));
        assert_eq!(
            vendor_data(&f),
            "#include\nhttp://172.16.0.254:27778/cloud-init/compute.yaml\n\
             http://172.16.0.254:27778/cloud-init/gpu.yaml\n\
             http://172.16.0.254:27778/cloud-init/rack1.yaml\n\
             http://172.16.0.254:27778/cloud-init/spare.yaml\n"
        );
        // The YAML is what a YAML reader (cloud-init's) sees as intended.
        let v: Value = serde_yaml_ng::from_str(&meta_data(&f)).unwrap();
        assert_eq!(v["local-hostname"], "de01");
        assert_eq!(v["instance_data"]["v1"]["vendor_data"]["version"], "1.0");
        assert_eq!(
            v["instance_data"]["v1"]["vendor_data"]["groups"]["compute"]["yes"],
            "true"
        );
        assert_eq!(
            v["instance_data"]["v1"]["public_keys"],
            serde_json::json!(["ssh-ed25519 AAAA admin@head", "ssh-rsa BBBB node"])
        );
    }

    #[test]
    fn base_url_precedence() {
        let d = ClusterDefaults::default();
        let mut f = Facts {
            xname: "x0c0s0b0n0",
            nid: None,
            role: None,
            sub_role: None,
            local_ipv4: None,
            groups: Vec::new(),
            defaults: &d,
            info: None,
            settings: settings(),
        };
        assert_eq!(f.base_url(), "http://172.16.0.254:27778/cloud-init");
        assert_eq!(f.hostname(), "x0c0s0b0n0", "no NID: the xname");
        let d2 = ClusterDefaults {
            base_url: "http://head:8081/cloud-init".into(),
            ..Default::default()
        };
        f.defaults = &d2;
        assert_eq!(f.base_url(), "http://head:8081/cloud-init");
        let info = InstanceInfo {
            cloud_init_base_url: "http://other/ci/".into(),
            ..Default::default()
        };
        f.info = Some(&info);
        assert_eq!(f.base_url(), "http://other/ci");
    }

    #[test]
    fn group_files() {
        assert_eq!(group_file(None), b"#cloud-config\n{}\n");
        let plain = group(
            "g",
            "",
            Value::Null,
            Some(CloudInitFile {
                content: "#cloud-config\nruncmd: [ls]\n".into(),
                filename: "g.yaml".into(),
                encoding: "plain".into(),
            }),
        );
        assert_eq!(group_file(Some(&plain)), b"#cloud-config\nruncmd: [ls]\n");
        let b64 = group(
            "g",
            "",
            Value::Null,
            Some(CloudInitFile {
                content: "I2Nsb3VkLWNvbmZpZwo=".into(),
                filename: String::new(),
                encoding: "base64".into(),
            }),
        );
        assert_eq!(group_file(Some(&b64)), b"#cloud-config\n");
    }
}
