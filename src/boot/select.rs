//! Which configuration a node boots with, when configurations *select*
//! nodes (boot-service) rather than being bound to them (BSS).
//!
//! Upstream boot-service adds weights rather than following a precedence
//! list: +100 per matching MAC, +75 per matching NID, +50 per matching host
//! (`*`, the xname, the host name), +25 per shared group, 1 for a
//! configuration with no selector at all; then the highest priority, then
//! the lowest name. Clients rely on those weights, so they are kept exactly;
//! the one deliberate difference is that the `x…*` host forms upstream's
//! validator admits are prefix globs here (upstream never matches them).
//!
//! The same function serves both boot APIs: `boot::params::config_for` asks
//! it between a node's own BSS bindings and the BSS tags, so one record
//! decides what `/boot/v1/bootscript`, `/boot-service/bootscript`, the
//! kexec contract and the boot-step view report. It is a pure function of
//! the snapshot and the node. The snapshot carries a selection index
//! (`Model::boot_selectors`, kept by the store on every write), so a lookup
//! scores only the configurations filed under the node's own groups, MACs,
//! NID and xname plus the wildcard ones: 100 group configurations cost a
//! node in one group one score, and BSS bindings cost nothing here.

use crate::inventory::Model;
use crate::inventory::model::{BootConfig, BootSelector, Component};

/// What selection knows about a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub xname: String,
    pub nid: Option<i64>,
    /// Lower-case, colon-separated; the boot MAC first.
    pub macs: Vec<String>,
    pub hostname: Option<String>,
    /// Inventory group labels.
    pub groups: Vec<String>,
}

impl NodeFacts {
    /// The facts of an inventory component: its interfaces' MACs (the
    /// requesting one first) and the groups it is a member of.
    pub fn of(model: &Model, c: &Component, mac: Option<&str>) -> NodeFacts {
        let mut macs: Vec<String> = mac.map(String::from).into_iter().collect();
        for i in model.interfaces_of(&c.id) {
            if !macs.contains(&i.mac_address) {
                macs.push(i.mac_address.clone());
            }
        }
        NodeFacts {
            xname: c.id.clone(),
            nid: c.nid,
            macs,
            hostname: None,
            groups: model
                .groups_by_member
                .get(c.id.as_str())
                .map(|l| l.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
        }
    }
}

pub const MAC_WEIGHT: i64 = 100;
pub const NID_WEIGHT: i64 = 75;
pub const HOST_WEIGHT: i64 = 50;
pub const GROUP_WEIGHT: i64 = 25;
/// What a configuration without any selector scores: it matches every
/// node, below any selector.
pub const CATCH_ALL: i64 = 1;

/// Whether a `hosts` entry names this node: `*`, its xname, its host name,
/// or an `x…*` prefix glob of its xname (case-insensitive).
pub fn host_matches(entry: &str, n: &NodeFacts) -> bool {
    if entry == "*" || entry.eq_ignore_ascii_case(&n.xname) {
        return true;
    }
    if n.hostname.as_deref().is_some_and(|h| h == entry) {
        return true;
    }
    match entry.strip_suffix('*') {
        Some(prefix) if !prefix.is_empty() => n
            .xname
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix)),
        _ => false,
    }
}

/// Upstream's score of a configuration for a node; 0 = not selected. A
/// bound (BSS) configuration's hosts, MACs and NIDs are bindings, resolved
/// before selection, so only its groups count here.
pub fn score(cfg: &BootConfig, n: &NodeFacts) -> i64 {
    let mut s = 0;
    if !cfg.bound {
        if cfg.hosts.is_empty()
            && cfg.macs.is_empty()
            && cfg.nids.is_empty()
            && cfg.groups.is_empty()
        {
            return CATCH_ALL;
        }
        s += HOST_WEIGHT * cfg.hosts.iter().filter(|h| host_matches(h, n)).count() as i64;
        s += MAC_WEIGHT
            * cfg
                .macs
                .iter()
                .filter(|m| n.macs.iter().any(|x| x.eq_ignore_ascii_case(m)))
                .count() as i64;
        s += NID_WEIGHT * cfg.nids.iter().filter(|x| Some(**x) == n.nid).count() as i64;
    }
    s += GROUP_WEIGHT * cfg.groups.iter().filter(|g| n.groups.contains(g)).count() as i64;
    s
}

/// The display name ties are broken on (upstream: `metadata.name`).
fn name(cfg: &BootConfig) -> &str {
    if cfg.meta.name.is_empty() {
        &cfg.id
    } else {
        &cfg.meta.name
    }
}

/// The winning configuration: highest score, then highest priority, then
/// lowest name (then lowest uid, so the answer never depends on order).
/// Only configurations with a kernel, and (when `profile` is given) of that
/// profile or of none, take part. Candidates come from the selection index,
/// so the cost is that of the node's own selectors, not of the number of
/// configurations.
pub fn best<'m>(
    model: &'m Model,
    n: &NodeFacts,
    profile: Option<&str>,
) -> Option<(&'m BootConfig, i64)> {
    let idx = &model.boot_selectors;
    let mut keys: Vec<BootSelector> = Vec::with_capacity(n.groups.len() + n.macs.len() + 3);
    keys.push(BootSelector::Wild);
    keys.push(BootSelector::Host(n.xname.to_ascii_lowercase()));
    keys.extend(n.nid.map(BootSelector::Nid));
    keys.extend(
        n.macs
            .iter()
            .map(|m| BootSelector::Mac(m.to_ascii_lowercase())),
    );
    keys.extend(n.groups.iter().cloned().map(BootSelector::Group));
    let mut seen: Vec<&str> = Vec::new();
    let mut win: Option<(&BootConfig, i64)> = None;
    for id in keys.iter().filter_map(|k| idx.get(k)).flatten() {
        if seen.contains(&id.as_str()) {
            continue;
        }
        seen.push(id.as_str());
        let Some(cfg) = model.boot_configs.get(id.as_str()) else {
            continue;
        };
        if cfg.kernel.is_empty() {
            continue;
        }
        if let Some(p) = profile
            && !cfg.profile.is_empty()
            && cfg.profile != p
        {
            continue;
        }
        let s = score(cfg, n);
        if s <= 0 {
            continue;
        }
        let rank = |c: &'m BootConfig, s: i64| {
            (
                s,
                c.priority,
                std::cmp::Reverse(name(c)),
                std::cmp::Reverse(c.id.as_str()),
            )
        };
        if win.is_none_or(|(w, ws)| rank(cfg, s) > rank(w, ws)) {
            win = Some((cfg, s));
        }
    }
    win
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::model::ResourceMeta;
    use proptest::prelude::*;

    fn cfg(name: &str, f: impl FnOnce(&mut BootConfig)) -> BootConfig {
        let mut c = BootConfig {
            id: format!("bootconfiguration-{name}"),
            hosts: vec![],
            macs: vec![],
            nids: vec![],
            kernel: format!("http://k/{name}"),
            initrd: String::new(),
            params: String::new(),
            cloud_init: serde_json::Value::Null,
            bound: false,
            groups: vec![],
            profile: String::new(),
            priority: 0,
            meta: ResourceMeta {
                name: name.into(),
                ..Default::default()
            },
            status: serde_json::Value::Null,
        };
        f(&mut c);
        c
    }

    fn model(cfgs: Vec<BootConfig>) -> Model {
        let mut m = Model::default();
        for c in cfgs {
            for k in c.selectors() {
                m.boot_selectors
                    .entry(k)
                    .or_default()
                    .push(c.id.as_str().into());
            }
            m.boot_configs.insert(c.id.clone(), c);
        }
        m
    }

    fn node() -> NodeFacts {
        NodeFacts {
            xname: "x1000c0s0b0n0".into(),
            nid: Some(1),
            macs: vec!["52:54:00:be:ef:01".into()],
            hostname: Some("nid001".into()),
            groups: vec!["compute".into(), "rack1".into()],
        }
    }

    fn winner(cfgs: Vec<BootConfig>, profile: Option<&str>) -> Option<String> {
        let m = model(cfgs);
        best(&m, &node(), profile).map(|(c, _)| c.meta.name.clone())
    }

    /// The group-selector precedence table: each row's configurations
    /// compete for node x1000c0s0b0n0 (NID 1, MAC 52:54:00:be:ef:01,
    /// groups compute and rack1, host name nid001).
    #[test]
    fn precedence_table() {
        type Row = (&'static str, Vec<BootConfig>, Option<&'static str>);
        let rows: Vec<Row> = vec![
            (
                "group",
                vec![
                    cfg("group", |c| c.groups = vec!["compute".into()]),
                    cfg("other-group", |c| c.groups = vec!["io".into()]),
                ],
                None,
            ),
            (
                "group",
                vec![
                    cfg("catch-all", |_| ()),
                    cfg("group", |c| c.groups = vec!["compute".into()]),
                ],
                None,
            ),
            (
                "two-groups",
                vec![
                    cfg("group", |c| c.groups = vec!["compute".into()]),
                    cfg("two-groups", |c| {
                        c.groups = vec!["compute".into(), "rack1".into()]
                    }),
                ],
                None,
            ),
            (
                "host",
                vec![
                    cfg("two-groups", |c| {
                        c.groups = vec!["compute".into(), "rack1".into()]
                    }),
                    cfg("host", |c| c.hosts = vec!["x1000c0s0b0n0".into()]),
                ],
                None,
            ),
            (
                "glob",
                vec![
                    cfg("group", |c| c.groups = vec!["compute".into()]),
                    cfg("glob", |c| c.hosts = vec!["x1000c0*".into()]),
                ],
                None,
            ),
            (
                "nid",
                vec![
                    cfg("host", |c| c.hosts = vec!["nid001".into()]),
                    cfg("nid", |c| c.nids = vec![1]),
                ],
                None,
            ),
            // The contract's example: a MAC beats host + group despite priority.
            (
                "mac",
                vec![
                    cfg("mac", |c| c.macs = vec!["52:54:00:BE:EF:01".into()]),
                    cfg("host-group", |c| {
                        c.hosts = vec!["x1000c0s0b0n0".into()];
                        c.groups = vec!["compute".into()];
                        c.priority = 90;
                    }),
                    cfg("catch-all", |_| ()),
                ],
                None,
            ),
            (
                "high",
                vec![
                    cfg("low", |c| c.groups = vec!["compute".into()]),
                    cfg("high", |c| {
                        c.groups = vec!["compute".into()];
                        c.priority = 10;
                    }),
                ],
                None,
            ),
            (
                "a",
                vec![
                    cfg("b", |c| c.groups = vec!["compute".into()]),
                    cfg("a", |c| c.groups = vec!["compute".into()]),
                ],
                None,
            ),
            (
                "catch-all",
                vec![
                    cfg("catch-all", |_| ()),
                    cfg("other-node", |c| c.hosts = vec!["x1000c0s1b0n0".into()]),
                ],
                None,
            ),
            (
                "-",
                vec![cfg("other", |c| c.groups = vec!["io".into()])],
                None,
            ),
            (
                "-",
                vec![cfg("no-kernel", |c| {
                    c.groups = vec!["compute".into()];
                    c.kernel.clear();
                })],
                None,
            ),
            (
                "diskless",
                vec![
                    cfg("group", |c| {
                        c.groups = vec!["compute".into()];
                        c.profile = "diskful".into();
                    }),
                    cfg("diskless", |c| {
                        c.groups = vec!["compute".into()];
                        c.profile = "diskless".into();
                    }),
                ],
                Some("diskless"),
            ),
            // A BSS-bound configuration scores through its groups only.
            (
                "group",
                vec![
                    cfg("bound", |c| {
                        c.bound = true;
                        c.macs = vec!["52:54:00:be:ef:01".into()];
                    }),
                    cfg("group", |c| c.groups = vec!["compute".into()]),
                ],
                None,
            ),
        ];
        for (i, (want, cfgs, profile)) in rows.into_iter().enumerate() {
            let got = winner(cfgs, profile).unwrap_or_else(|| "-".into());
            assert_eq!(got, want, "row {i}");
        }
    }

    #[test]
    fn host_globs() {
        let n = node();
        for (entry, want) in [
            ("*", true),
            ("X1000C0S0B0N0", true),
            ("x1000c0s0b0n*", true),
            ("x1000c0s0*", true),
            ("x1000*", true),
            ("x1001*", false),
            ("x*", true),
            ("nid001", true),
            ("x1000c0s0b0n1", false),
            ("default", false),
        ] {
            assert_eq!(host_matches(entry, &n), want, "{entry}");
        }
    }

    proptest! {
        /// The winner is a maximum of (score, priority) among eligible
        /// configurations, and the order they are stored in does not matter.
        #[test]
        fn winner_is_maximal_and_order_free(
            specs in proptest::collection::vec(
                (0u8..4, 0u8..3, 0i64..3, any::<bool>()), 1..12)
        ) {
            let groups = ["compute", "rack1", "io", "gpu"];
            let cfgs: Vec<BootConfig> = specs.iter().enumerate().map(|(i, (g, h, p, mac))| {
                cfg(&format!("c{i:02}"), |c| {
                    c.groups = groups[..*g as usize].iter().map(|s| s.to_string()).collect();
                    if *h == 1 { c.hosts = vec!["x1000c0s0b0n0".into()]; }
                    if *h == 2 { c.hosts = vec!["x2*".into()]; }
                    if *mac { c.macs = vec!["52:54:00:be:ef:01".into()]; }
                    c.priority = *p;
                })
            }).collect();
            let n = node();
            let m = model(cfgs.clone());
            let got = best(&m, &n, None).map(|(c, s)| (c.id.clone(), s, c.priority));
            let max = cfgs.iter().map(|c| (score(c, &n), c.priority)).filter(|(s, _)| *s > 0).max();
            prop_assert_eq!(got.as_ref().map(|(_, s, p)| (*s, *p)), max);
            let mut rev = cfgs.clone();
            rev.reverse();
            let m2 = model(rev);
            prop_assert_eq!(best(&m2, &n, None).map(|(c, _)| c.id.clone()), got.map(|g| g.0));
        }
    }
}
