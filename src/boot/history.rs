//! When each node last fetched its boot script (BSS `endpoint-history`).
//!
//! Kept in memory: it is a diagnostic, written on the hottest boot path, and
//! a restart that forgets it loses nothing a node needs.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Entries kept at most, so unknown MACs cannot grow it without bound.
const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub name: String,
    pub endpoint: String,
    pub last_epoch: i64,
}

#[derive(Default)]
pub struct History(Mutex<BTreeMap<(String, String), i64>>);

impl History {
    pub fn record(&self, name: &str, endpoint: &str, epoch: i64) {
        if let Ok(mut m) = self.0.lock() {
            let key = (name.to_string(), endpoint.to_string());
            if m.len() < MAX_ENTRIES || m.contains_key(&key) {
                m.insert(key, epoch);
            }
        }
    }

    /// Entries matching the optional name and endpoint, in name order.
    pub fn query(&self, name: Option<&str>, endpoint: Option<&str>) -> Vec<Entry> {
        let Ok(m) = self.0.lock() else {
            return Vec::new();
        };
        m.iter()
            .filter(|((n, e), _)| name.is_none_or(|x| x == n) && endpoint.is_none_or(|x| x == e))
            .map(|((n, e), t)| Entry {
                name: n.clone(),
                endpoint: e.clone(),
                last_epoch: *t,
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
    }
}
