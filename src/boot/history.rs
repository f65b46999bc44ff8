//! When each node last fetched its boot script (BSS `endpoint-history`).
//!
//! Kept in memory: it is a diagnostic, written on the hottest boot path, and
//! a restart that forgets it loses nothing a node needs.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Entries kept at most, so unknown MACs cannot grow it without bound.
const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Entry {
    pub name: String,
    pub endpoint: String,
    pub last_epoch: i64,
}

/// Name → endpoint → last fetch, so a repeat fetch (the common case)
/// updates in place without allocating.
#[derive(Default)]
struct Inner {
    by_name: BTreeMap<String, BTreeMap<String, i64>>,
    entries: usize,
}

#[derive(Default)]
pub struct History(Mutex<Inner>);

impl History {
    pub fn record(&self, name: &str, endpoint: &str, epoch: i64) {
        let Ok(mut m) = self.0.lock() else {
            return;
        };
        if let Some(t) = m.by_name.get_mut(name).and_then(|e| e.get_mut(endpoint)) {
            *t = epoch;
            return;
        }
        if m.entries >= MAX_ENTRIES {
            return;
        }
        m.entries += 1;
        m.by_name
            .entry(name.to_string())
            .or_default()
            .insert(endpoint.to_string(), epoch);
    }

    /// Entries matching the optional name and endpoint, in name order.
    pub fn query(&self, name: Option<&str>, endpoint: Option<&str>) -> Vec<Entry> {
        let Ok(m) = self.0.lock() else {
            return Vec::new();
        };
        m.by_name
            .iter()
            .filter(|(n, _)| name.is_none_or(|x| x == n.as_str()))
            .flat_map(|(n, eps)| {
                eps.iter()
                    .filter(|(e, _)| endpoint.is_none_or(|x| x == e.as_str()))
                    .map(|(e, t)| Entry {
                        name: n.clone(),
                        endpoint: e.clone(),
                        last_epoch: *t,
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_fetch() {
        let h = History::default();
        h.record("x0c0s0b0n0", "bootscript", 1);
        h.record("x0c0s0b0n0", "bootscript", 5);
        h.record("x0c0s1b0n0", "bootscript", 3);
        assert_eq!(h.query(Some("x0c0s0b0n0"), None)[0].last_epoch, 5);
        assert_eq!(h.query(None, Some("bootscript")).len(), 2);
        assert!(h.query(None, Some("user-data")).is_empty());
        h.record("x0c0s0b0n0", "user-data", 7);
        assert_eq!(
            h.query(None, None),
            vec![
                Entry {
                    name: "x0c0s0b0n0".into(),
                    endpoint: "bootscript".into(),
                    last_epoch: 5
                },
                Entry {
                    name: "x0c0s0b0n0".into(),
                    endpoint: "user-data".into(),
                    last_epoch: 7
                },
                Entry {
                    name: "x0c0s1b0n0".into(),
                    endpoint: "bootscript".into(),
                    last_epoch: 3
                },
            ]
        );
    }
}
